"""Does each STORM part do its job? Codebook usage and alignment quality in eval mode (issue 16).

:func:`diagnose` runs the network in eval mode over window ends ``t`` and reports, per codebook
(``cs``, ``ts``), the number of entries used by the hard assignments (``codes_used_*``), their
perplexity (``perplexity_*``) and the eval-mode regulariser values beside them (``div_*``,
``entropy_*``); for the dual model, the alignment InfoNCE (``align_loss``) and the TS↔CS top-1
retrieval accuracy (``align_top1``, mean of both directions) over random batches of ``batch_size``
windows (chance: ``align_chance`` = 1/B, loss at chance ``align_ln_b`` = ln B).

The batches are drawn with their own seeded generator, so the training RNG is untouched. Random rather
than consecutive windows, as in training: consecutive window ends share W − 1 of W days and would be
near-duplicate negatives. Random batches of a short split still hold windows that share most of their
days (16 of the 504 validation days: typically 30 days apart, W = 64), so ``align_loss_disjoint`` /
``align_top1_disjoint`` repeat the measurement on batches of windows that share no day (window ends W
apart, ``align_b_disjoint`` = min(B, len(t) // W) windows per batch, 8 offsets): chance ln B' and 1/B'.
With ``align_level="patch"`` the candidates are the B·P (window, patch) pairs, and B, B' above count
them. The day-disjoint measure is the one the alignment is judged on (< 0.8·ln B', issue 16): since version 3
training never uses a window that shares a day with the anchor as a negative either.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .quantizer import usage_stats


@torch.no_grad()
def diagnose(net, panel, t: np.ndarray, batch_size: int = 16, seed: int = 0) -> dict:
    """Eval-mode codebook usage and alignment quality of a STORM ``net`` on windows ending at ``t``."""
    from .. import train as train_mod

    t = np.asarray(t)
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    order = np.random.default_rng(seed).permutation(len(t))
    codes = {"cs": [], "ts": []}
    sums: dict[str, float] = {}
    n_batches, align_loss, align_top1, n_align = 0, 0.0, 0.0, 0
    try:
        for i in range(0, len(order), batch_size):
            tb = np.sort(t[order[i:i + batch_size]])
            x, mask, _ = train_mod.batch(panel, tb, device, with_y=False)
            r = net._represent(x, mask, decode=False)  # div/entropy/[cls]: no decoders
            n_batches += 1
            for name, br in (("cs", r.cs), ("ts", r.ts)):
                if br is None:
                    continue
                c = br.codes if name == "cs" else br.codes[mask.bool()]
                codes[name].append(c.reshape(-1).cpu())
                for term in ("div", "entropy"):
                    sums[f"{term}_{name}"] = sums.get(f"{term}_{name}", 0.0) + float(br.losses[term])
            if net.align is not None and len(tb) == batch_size:  # full batches only: a fixed chance level
                loss, top1 = _align_scores(net, r, mask)
                align_loss, align_top1, n_align = align_loss + loss, align_top1 + top1, n_align + 1
        w = panel.window
        b_dis = min(batch_size, len(t) // w)
        dis_loss, dis_top1, n_dis = 0.0, 0.0, 0
        if net.align is not None and b_dis >= 2:
            for offset in range(0, w, max(1, w // 8)):
                tb = np.sort(t)[offset::w][:b_dis]
                if len(tb) < b_dis:
                    continue
                x, mask, _ = train_mod.batch(panel, tb, device, with_y=False)
                r = net._represent(x, mask, decode=False, losses=False)  # [cls] only
                loss, top1 = _align_scores(net, r, mask)
                dis_loss, dis_top1, n_dis = dis_loss + loss, dis_top1 + top1, n_dis + 1
    finally:
        net.train(was_training)
    out: dict = {}
    k = net.cfg.codebook_size
    for name, chunks in codes.items():
        if chunks:
            s = usage_stats(torch.cat(chunks), k)
            out[f"codes_used_{name}"] = s["used"]
            out[f"perplexity_{name}"] = s["perplexity"]
            for term in ("div", "entropy"):
                out[f"{term}_{name}"] = sums[f"{term}_{name}"] / n_batches
    if net.align is not None:
        out["align_loss"] = align_loss / n_align if n_align else float("nan")
        out["align_top1"] = align_top1 / n_align if n_align else float("nan")
        k = net.align.units_per_window
        out["align_chance"] = 1.0 / (batch_size * k)
        out["align_ln_b"] = math.log(batch_size * k)
        if n_dis:
            out["align_loss_disjoint"] = dis_loss / n_dis
            out["align_top1_disjoint"] = dis_top1 / n_dis
            out["align_b_disjoint"] = b_dis * k
    return out


def _align_scores(net, r, mask) -> tuple[float, float]:
    """Symmetric InfoNCE and mean top-1 retrieval (TS→CS and CS→TS) of one batch's representation."""
    from .storm import info_nce

    logits, valid = net.align.pair_logits(r.ts.cls, mask.bool(), r.cs.cls, r.cs.h, ts_h=r.ts.h)
    logits = logits.float()
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = info_nce(logits, valid)
    hit = 0.5 * ((logits.argmax(1) == target).float() + (logits.argmax(0) == target).float())
    top1 = hit.mean() if valid is None else hit[valid].mean()
    return float(loss), float(top1)

"""A plain training loop for every torch return model (STORM and the neural baselines).

The network contract: ``net(x, mask, y=None, sample=False)`` returns an object with ``pred`` (B, N),
``losses`` (dict of raw scalar terms) and ``loss`` (the weighted total), where ``x`` is the window
tensor (B, W, N, F) from :meth:`Panel.windows`, ``mask`` (B, N) the valid stocks and ``y`` (B, N) the
training target (NaN where unknown). A network with ``takes_days = True`` is also given ``days`` (B,),
the batch's window end-day indices, in training.

:func:`fit` trains on the protocol's train split, evaluates the validation split after every epoch
(RankIC by default), keeps the best weights, stops early (not under a training budget,
:attr:`TrainConfig.budget_windows`: then exactly that many windows, :func:`budget_plan`), writes
``history.csv`` and checkpoints (``last.pt`` to resume, ``best.pt``) when given a run directory. Model selection never looks at the
test split unless the protocol itself says validation = test (``paper``, the official code's choice).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import metrics, schedule
from .panel import Panel, Protocol, get_protocol
from .profiles import TrainConfig
from .utils import atomic_write, pick_device  # noqa: F401 - pick_device re-exported


# ----------------------------------------------------------------------------------------------
# Determinism and devices
# ----------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; deterministic algorithms where torch has them (CPU is exact)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too
    cuda_determinism()
    torch.use_deterministic_algorithms(True, warn_only=True)


# --- GPU settings: CUDA determinism flags and bf16 autocast (TrainConfig.autocast) ---------------


def cuda_determinism() -> None:
    """The CUDA side of determinism (torch docs, "Reproducibility"): a fixed cuBLAS workspace
    (``CUBLAS_WORKSPACE_CONFIG=:4096:8``, read when cuBLAS starts, so set before the first CUDA op;
    an existing value is kept), deterministic cuDNN without autotuning, no TF32 matmuls. On CPU these
    flags change nothing."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


AUTOCAST = {"bf16": torch.bfloat16}


def autocast(device: torch.device, how: str | None):
    """The context of a forward pass: ``torch.autocast(device.type, dtype=torch.bfloat16)`` for
    ``how="bf16"``, nothing for None. The quantiser keeps its distances and argmin in float32
    (storm_lib.models.quantizer disables autocast there)."""
    if how is None:
        return contextlib.nullcontext()
    if how not in AUTOCAST:
        raise ValueError(f"autocast must be None or one of {list(AUTOCAST)}, got {how!r}")
    return torch.autocast(device.type, dtype=AUTOCAST[how])


_autocast = autocast  # for functions whose ``autocast`` parameter shadows the helper


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Keep freed heap memory in the process (glibc only; returns whether it applied).

    By default glibc serves every buffer above its mmap threshold (at most 32 MB) with a fresh
    mmap and unmaps it on free, so each large activation of a training step is faulted in page by
    page again on the next step (~550k minor faults per SP500 step). ``mallopt(M_MMAP_MAX, 0)`` puts
    every allocation on the heap and a large ``M_TRIM_THRESHOLD`` stops free() from returning its top
    to the OS; the numbers computed do not change, the resident size stays near the step's peak.
    Equivalent environment: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824``. Process-wide
    and irreversible (what is already mapped stays mapped). Applied by :func:`fit` when
    ``TrainConfig.keep_freed_memory`` is set (the default) and the device is a CPU."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


def normalise_labels(y: np.ndarray, mask: np.ndarray, how: str = "cs_zscore", min_stocks: int = 2) -> np.ndarray:
    """Training target per day: cross-sectional z-score of the valid returns (Qlib's CSZScoreNorm
    on the label); ``raw`` keeps returns. NaN where unknown or on days with too few stocks."""
    y = np.where(mask & np.isfinite(y), y, np.nan).astype(np.float64)
    if how == "raw":
        return y.astype(np.float32)
    if how != "cs_zscore":
        raise ValueError(f"unknown label_norm {how!r}; use 'cs_zscore' or 'raw'")
    n = np.isfinite(y).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.nanmean(np.where(n >= min_stocks, y, 0.0), axis=1, keepdims=True)
        sd = np.sqrt(np.nanmean((y - mu) ** 2, axis=1, keepdims=True))
        z = (y - mu) / np.where(sd > 1e-12, sd, np.nan)
    z[(n < min_stocks).ravel()] = np.nan
    return z.astype(np.float32)


def trainable_days(panel: Panel, t: np.ndarray, min_stocks: int = 2) -> np.ndarray:
    """Window ends with at least ``min_stocks`` valid stocks whose label is known."""
    ok = (panel.valid[t] & np.isfinite(panel.labels[t])).sum(axis=1) >= min_stocks
    return t[ok]


def batch(panel: Panel, t: np.ndarray, device: torch.device, cfg: TrainConfig | None = None, with_y: bool = True):
    """Tensors (x, mask, y) for window ends ``t``."""
    x = torch.from_numpy(panel.windows(t)).to(device)
    mask_np = panel.valid[t]
    mask = torch.from_numpy(mask_np).to(device)
    if not with_y:
        return x, mask, None
    how = cfg.label_norm if cfg else "cs_zscore"
    y = normalise_labels(panel.labels[t], mask_np, how, cfg.min_valid_stocks if cfg else 2)
    return x, mask, torch.from_numpy(y).to(device)


# ----------------------------------------------------------------------------------------------
# Prediction and evaluation
# ----------------------------------------------------------------------------------------------


def predict(net: torch.nn.Module, panel: Panel, t: np.ndarray, batch_size: int = 32,
            device: torch.device | None = None, sample: bool = False, autocast: str | None = None) -> np.ndarray:
    """Scores (len(t), N) from the network in eval mode; NaN where the stock is not valid.
    ``autocast``: :attr:`TrainConfig.autocast` (the forward under bf16 autocast).

    Runs under ``torch.inference_mode()``; a network with a ``predict(x, mask, sample=...)`` method
    (STORM: no decoders, no reconstruction or posterior terms) is called through it, otherwise
    ``net(x, mask, sample=sample).pred``."""
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    fast = getattr(net, "predict", None)
    out = []
    try:
        with torch.inference_mode():
            for i in range(0, len(t), batch_size):
                tb = t[i:i + batch_size]
                x, mask, _ = batch(panel, tb, device, with_y=False)
                with _autocast(device, autocast):
                    pred = fast(x, mask, sample=sample) if fast is not None else net(x, mask, sample=sample).pred
                out.append(pred.float().cpu().numpy())
    finally:
        net.train(was_training)
    scores = np.concatenate(out) if out else np.zeros((0, len(panel.tickers)), np.float32)
    return np.where(panel.valid[t], scores, np.nan)


def evaluate(net, panel: Panel, t: np.ndarray, batch_size: int = 32, autocast: str | None = None) -> dict:
    """RankIC summary of the network's scores on window ends ``t`` (standard convention)."""
    scores = panel.frame(predict(net, panel, t, batch_size, autocast=autocast), t)
    daily = metrics.rank_ic(scores, panel.label_frame(t))
    if daily.notna().sum() == 0:
        return {"RankIC": float("nan"), "RankICIR": float("nan")}
    s = metrics.ic_summary(daily)
    return {"RankIC": s["RankIC"], "RankICIR": s["RankICIR"]}


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def _lr_lambda(total: int, warmup: int):
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def compiled(net: torch.nn.Module):
    """``torch.compile(net)`` (inductor, static shapes) for :attr:`TrainConfig.compile`: the training
    forward and its backward as fused kernels. The first steps compile (about a minute on a CPU), and
    the codebooks' one-off data initialisation runs eagerly through a graph break."""
    return torch.compile(net, dynamic=False)


def budget_plan(cfg: TrainConfig, n_train: int) -> list[int]:
    """The batch sizes of every training step, one list per epoch.

    Without ``cfg.budget_windows``: ``max_epochs`` epochs of ``steps_per_epoch`` (None: one pass over the
    ``n_train`` training windows) full batches. With it, training sees exactly ``budget_windows``
    windows: full epochs of ``steps_per_epoch x batch_size`` windows, the last epoch cut short and its
    last batch partial where the budget does not divide (issue 18: curves against windows seen)."""
    steps = cfg.steps_per_epoch or math.ceil(n_train / cfg.batch_size)
    if cfg.budget_windows is None:
        return [[cfg.batch_size] * steps for _ in range(cfg.max_epochs)]
    budget = int(cfg.budget_windows)
    if budget < 1 or budget != cfg.budget_windows:
        raise ValueError(f"budget_windows must be a positive integer, got {cfg.budget_windows!r}")
    per_epoch = steps * cfg.batch_size
    plan = []
    for start in range(0, budget, per_epoch):
        left = min(per_epoch, budget - start)
        plan.append([cfg.batch_size] * (left // cfg.batch_size) + ([left % cfg.batch_size] if left % cfg.batch_size else []))
    return plan


def param_groups(net: torch.nn.Module, weight_decay: float):
    """AdamW parameter groups: the names in ``net.no_weight_decay()`` (if defined, e.g. STORM's
    codebooks) get no weight decay; everything else ``weight_decay``. One group when nothing is exempt."""
    exempt = set(net.no_weight_decay()) if hasattr(net, "no_weight_decay") else set()
    if not exempt:
        return list(net.parameters())
    named = list(net.named_parameters())
    return [{"params": [p for n, p in named if n not in exempt], "weight_decay": weight_decay},
            {"params": [p for n, p in named if n in exempt], "weight_decay": 0.0}]


def fit(
    net: torch.nn.Module,
    panel: Panel,
    protocol: str | Protocol = "clean",
    cfg: TrainConfig = TrainConfig(),
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Train ``net`` in place; on return it holds the best weights by validation score.

    Returns the per-epoch history (mean of every raw loss term, total loss, validation RankIC and
    RankICIR, learning rate, seconds). With ``run_dir``, writes ``history.csv``, ``last.pt``
    (everything needed to resume) and ``best.pt`` (weights) after every epoch.
    """
    proto = get_protocol(protocol)
    device = pick_device(device) if not isinstance(device, torch.device) else device
    seed_everything(seed)
    if cfg.keep_freed_memory and device.type == "cpu":
        keep_freed_memory()
    net.to(device)
    train_t = trainable_days(panel, panel.split(proto, "train"), cfg.min_valid_stocks)
    valid_t = trainable_days(panel, panel.split(proto, "valid"), cfg.min_valid_stocks)
    if len(train_t) == 0 or len(valid_t) == 0:
        raise ValueError(f"protocol {proto.name!r}: empty train or validation split on this panel")
    plan = budget_plan(cfg, len(train_t))
    max_epochs = len(plan)
    # a budget run shows the whole curve: no early stopping (selection stays on the validation score)
    patience = max_epochs if cfg.budget_windows is not None else cfg.patience
    total = sum(len(p) for p in plan)  # the LR schedule (warm-up + cosine) spans every step of the plan
    opt = torch.optim.AdamW(param_groups(net, cfg.weight_decay), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            betas=cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, max(1, int(cfg.warmup_frac * total))))
    rng = np.random.default_rng(seed)
    forward = compiled(net) if cfg.compile else net  # validation and prediction stay eager
    takes_days = getattr(net, "takes_days", False)  # e.g. STORM: the window end days, for its alignment

    run_dir = Path(run_dir) if run_dir is not None else None
    history: list[dict] = []
    best_score, best_state, best_epoch, start_epoch = -math.inf, None, -1, 0
    if resume and run_dir is not None and (run_dir / "last.pt").is_file():
        ck = torch.load(run_dir / "last.pt", map_location=device, weights_only=False)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        history, best_score, best_epoch = ck["history"], ck["best_score"], ck["best_epoch"]
        best_state = ck["best_state"]
        start_epoch = ck["epoch"] + 1

    for epoch in range(start_epoch, max_epochs):
        if best_epoch >= 0 and epoch - best_epoch > patience:
            break
        t0 = time.perf_counter()
        net.train()
        sizes = plan[epoch]
        steps, n_windows = len(sizes), sum(sizes)
        order = rng.permutation(len(train_t))
        if n_windows > len(order):  # an epoch longer than one pass: reshuffle and extend
            reps = math.ceil(n_windows / len(order))
            order = np.concatenate([order] + [rng.permutation(len(train_t)) for _ in range(reps - 1)])
        sums: dict[str, float] = {}
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{max_epochs}", disable=not progress, leave=False)
        for s in bar:
            tb = np.sort(train_t[order[s * cfg.batch_size:s * cfg.batch_size + sizes[s]]])
            x, mask, y = batch(panel, tb, device, cfg)
            with autocast(device, cfg.autocast):
                out = forward(x, mask, y, days=torch.as_tensor(tb, device=device)) if takes_days else forward(x, mask, y)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            sums["loss"] = sums.get("loss", 0.0) + out.loss.item()
            for k, v in out.losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            bar.set_postfix(loss=f"{sums['loss'] / (s + 1):.4f}")
        row = {"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()}}
        if cfg.budget_windows is not None:  # cumulative training windows seen at the end of this epoch
            row["windows"] = sum(sum(p) for p in plan[:epoch + 1])
        val = evaluate(net, panel, valid_t, cfg.eval_batch_size, cfg.autocast)
        row.update({"val_RankIC": val["RankIC"], "val_RankICIR": val["RankICIR"],
                    "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0})
        probe = getattr(net, "epoch_diagnostics", None)  # e.g. STORM: eval-mode code usage, alignment
        if probe is not None:
            row.update({f"val_{k}": v for k, v in probe(panel, valid_t, cfg.batch_size).items()})
        score = val["RankIC"] if cfg.select_metric == "rankic" else -row["loss"]
        if np.isfinite(score) and score > best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
        row["best"] = epoch == best_epoch
        history.append(row)
        if progress:
            terms = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "best", "lr", "seconds"))
            tqdm.write(f"epoch {epoch + 1}: {terms} ({row['seconds']:.1f} s){' *' if row['best'] else ''}")
        if run_dir is not None:
            _save(run_dir, net, opt, sched, rng, epoch, history, best_score, best_epoch, best_state)
            schedule.check_epoch(epoch + 1, max_epochs, row["seconds"])  # --pause-at-limit: resumable stop

    if best_state is not None:
        net.load_state_dict(best_state)
    return pd.DataFrame(history)


def _save(run_dir: Path, net, opt, sched, rng, epoch, history, best_score, best_epoch, best_state) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
             "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "epoch": epoch,
             "history": history, "best_score": best_score, "best_epoch": best_epoch, "best_state": best_state}
    atomic_write(run_dir / "last.pt", lambda tmp: torch.save(state, tmp))
    if best_state is not None and best_epoch == epoch:
        atomic_write(run_dir / "best.pt", lambda tmp: torch.save(best_state, tmp))
    atomic_write(run_dir / "history.csv", lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))

"""Vector quantiser with STORM's codebook regularisers (paper §2.2–2.3).

One codebook E ∈ R^{K×d}. Each encoder token z_e is replaced by its nearest entry z_q (Euclidean) and
gradients pass to the encoder through the straight-through estimator (van den Oord et al. 2017,
"Neural Discrete Representation Learning", eq. 3). The four loss terms are returned separately and
unweighted:

- ``codebook`` = ‖sg[z_e] − z_q‖²  (moves entries toward the encoder outputs; paper L_1, weight 1)
- ``commit``   = ‖z_e − sg[z_q]‖²  (keeps the encoder committed to its entries; paper L_1, weight 1)
- ``div``      = (1/K) Σ_k p̄_k log p̄_k, the negative entropy of the batch-averaged soft assignment
  (paper §2.2 with G = 1; wav2vec 2.0 notation). Minimising it spreads code usage.
- ``ortho``    = (1/K²) ‖ℓ2(E) ℓ2(E)ᵀ − I‖²_F  (paper §2.2).

Deviations from the released code, on purpose (reference/official-code.md §10):

- The codebook is a plain ``nn.Parameter`` trained by these gradients, with no EMA update, so the
  orthogonality loss acts on it (the EMA overwrote it every step, §10.17); unused entries are
  restarted on encoder tokens (see VectorQuantizer).
- The soft assignment is softmax(−distance/τ), not softmax(+distance) (§10.18).
- Losses are computed in eval mode as well (cheap; useful for validation logging).

The soft assignment is p_k = softmax_k(−‖z_e − e_k‖²/τ) with the summed squared distance and τ = 1 by
default (the paper states neither). At width 64 this gave a token entropy of about 1.2 nats out of
log 512 = 6.2 after the data-dependent init (random inputs), so p̄ tracks actual code usage; a
per-dimension distance (τ·d) would make p nearly uniform and the loss inert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def orthogonality_loss(codebook: torch.Tensor) -> torch.Tensor:
    """L_ortho = (1/K²)·‖ℓ2(E)ℓ2(E)ᵀ − I_K‖²_F for E of shape (K, d) (paper §2.2)."""
    e = F.normalize(codebook, dim=-1)
    k = e.shape[0]
    gram = e @ e.t()
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    return (gram - eye).pow(2).sum() / k**2


def diversity_loss(probs: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_div = (1/K)·Σ_k p̄_k log p̄_k (paper §2.2, G = 1).

    ``probs``: (T, K) soft assignments of T tokens; ``weights``: optional (T,) token weights (0 drops
    a token). p̄ is their (weighted) mean over tokens. The value is −entropy(p̄)/K, minimal (−log K / K)
    for uniform usage and 0 for a single code.
    """
    if weights is None:
        p_bar = probs.mean(0)
    else:
        p_bar = weights @ probs / weights.sum().clamp_min(1.0)
    return (p_bar * torch.log(p_bar.clamp_min(1e-12))).sum() / probs.shape[-1]


@dataclass
class VQOutput:
    z_q: torch.Tensor          # (..., d) quantised tokens carrying straight-through gradients to z_e
    indices: torch.Tensor      # (...) long: index of the nearest entry
    losses: dict               # raw terms: codebook, commit, div, ortho (scalars)
    perplexity: torch.Tensor   # exp(entropy) of the hard code usage over the valid tokens (no grad)


class VectorQuantizer(nn.Module):
    """Nearest-entry quantisation with straight-through gradients (paper §2.2; VQ-VAE eq. 3).

    n_codes: K entries; dim: their width d; tau: temperature of the soft assignment used by the
    diversity loss.

    Two guards against dead codes, both in training mode only and neither in the paper:

    - data_init: on the first training forward, set the entries to K evenly spaced valid encoder
      tokens of that batch (deterministic; jittered copies when there are fewer than K tokens), a cheap
      stand-in for k-means init.
    - restart_threshold > 0: random restarts (Dhariwal et al. 2020, Jukebox §2.2; Zeghidour et al.
      2021, SoundStream §3.2): an entry whose exponential moving average (decay ``usage_decay``) of
      assigned tokens per training batch falls below the threshold is moved onto a random valid encoder
      token of the current batch (torch's global RNG). Without it the CS codebook collapsed to a single
      entry within 20 steps on DJ30 (the encoder tokens drift together, one entry becomes nearest to all
      and only that entry receives codebook gradient); the diversity loss alone did not prevent it.
    """

    def __init__(self, n_codes: int, dim: int, tau: float = 1.0, data_init: bool = True,
                 restart_threshold: float = 0.1, usage_decay: float = 0.95):
        super().__init__()
        self.n_codes, self.dim, self.tau = n_codes, dim, tau
        self.restart_threshold, self.usage_decay = restart_threshold, usage_decay
        # VQ-VAE's usual init, replaced by the data-dependent one when data_init is set.
        self.codebook = nn.Parameter(torch.empty(n_codes, dim).uniform_(-1.0 / n_codes, 1.0 / n_codes))
        self.register_buffer("initialised", torch.tensor(not data_init))
        self.register_buffer("usage_ema", torch.ones(n_codes))  # starts at 1: a grace period
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # total restarted entries

    @torch.no_grad()
    def _init_from(self, z: torch.Tensor, w: torch.Tensor) -> None:
        pool = z[w > 0].detach()
        if pool.shape[0] == 0:
            return
        k = self.n_codes
        if pool.shape[0] >= k:
            pick = torch.linspace(0, pool.shape[0] - 1, k, device=z.device).round().long()
            codes = pool[pick]
        else:
            reps = math.ceil(k / pool.shape[0])
            codes = pool.repeat(reps, 1)[:k].clone()
            scale = pool.std().clamp_min(1e-3) if pool.shape[0] > 1 else pool.abs().mean().clamp_min(1e-3)
            codes[pool.shape[0]:] += 0.1 * scale * torch.randn_like(codes[pool.shape[0]:])
        self.codebook.copy_(codes)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _restart_dead(self, z: torch.Tensor, w: torch.Tensor) -> None:
        dead = self.usage_ema < self.restart_threshold
        pool = z[w > 0].detach()
        n_dead = int(dead.sum())
        if n_dead == 0 or pool.shape[0] == 0:
            return
        pick = torch.randint(pool.shape[0], (n_dead,), device=z.device)
        self.codebook[dead] = pool[pick].to(self.codebook.dtype)
        self.usage_ema[dead] = 1.0
        self.restarts += n_dead

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distances (T, K) between tokens z (T, d) and every entry."""
        e = self.codebook
        return torch.addmm(e.pow(2).sum(-1), z, e.t(), alpha=-2.0) + z.pow(2).sum(-1, keepdim=True)

    def forward(self, z_e: torch.Tensor, valid: torch.Tensor | None = None) -> VQOutput:
        """z_e: (..., d); valid: optional bool (...) — invalid tokens are quantised but excluded from
        the losses, the usage statistics and the data-dependent init."""
        with torch.autocast(z_e.device.type, enabled=False):  # distances and argmin in float32
            out = self._quantise(z_e.float(), valid)
        out.z_q = out.z_q.to(z_e.dtype)
        return out

    def _quantise(self, z_e: torch.Tensor, valid: torch.Tensor | None) -> VQOutput:
        shape = z_e.shape
        z = z_e.reshape(-1, self.dim)
        w = torch.ones(z.shape[0], dtype=z.dtype, device=z.device) if valid is None \
            else valid.reshape(-1).to(z.dtype)
        if self.training and not bool(self.initialised):
            self._init_from(z, w)
        if self.training and self.restart_threshold > 0:
            self._restart_dead(z, w)
        n = w.sum().clamp_min(1.0)

        d2 = self.distances(z)                                       # (T, K)
        indices = d2.detach().argmin(-1)
        z_q = F.embedding(indices, self.codebook)                    # (T, d)

        def token_mean(sq: torch.Tensor) -> torch.Tensor:            # mean over valid tokens and dims
            return (sq.mean(-1) * w).sum() / n

        probs = torch.softmax(-d2 / self.tau, dim=-1)
        losses = {
            "codebook": token_mean((z.detach() - z_q).pow(2)),
            "commit": token_mean((z - z_q.detach()).pow(2)),
            "div": diversity_loss(probs, w),
            "ortho": orthogonality_loss(self.codebook),
        }
        with torch.no_grad():
            # index_put_ with accumulate has a deterministic CUDA path (bincount has none)
            counts = z.new_zeros(self.n_codes).index_put_((indices,), w, accumulate=True)
            if self.training:
                self.usage_ema.mul_(self.usage_decay).add_((1 - self.usage_decay) * counts)
            usage = counts / n
            perplexity = torch.exp(-(usage * torch.log(usage.clamp_min(1e-12))).sum())
        z_st = z + (z_q - z).detach()                                # straight-through estimator
        return VQOutput(z_st.view(shape), indices.view(shape[:-1]), losses, perplexity)

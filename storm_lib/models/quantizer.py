"""Vector quantiser with STORM's codebook regularisers (paper §2.2–2.3).

One codebook E ∈ R^{K×d}. Each encoder token z_e is replaced by an entry z_q and gradients pass to the
encoder through the straight-through estimator (van den Oord et al. 2017, "Neural Discrete
Representation Learning", eq. 3). The loss terms are returned separately and unweighted:

- ``codebook`` = ‖sg[z] − z_q‖²  (moves entries toward the encoder outputs; paper L_1, weight 1)
- ``commit``   = ‖z − sg[z_q]‖²  (keeps the encoder committed to its entries; paper L_1, weight 1)
- ``div``      = (1/K) Σ_k p̄_k log p̄_k, the negative entropy of the batch-averaged soft assignment p̄
  (paper §2.2 with G = 1; wav2vec 2.0 notation). Minimising it spreads code usage.
- ``entropy``  = mean_t H(p_t) − H(p̄) in nats: the entropy penalty of MAGVIT-v2 (Yu et al. 2024,
  "Language Model Beats Diffusion", §3.1): low per-token entropy (each token confidently assigned, so
  p̄ is the histogram of hard assignments) and high entropy of the batch mean (those assignments spread).
- ``ortho``    = (1/K²) ‖ℓ2(E) ℓ2(E)ᵀ − I‖²_F  (paper §2.2).

``metric="cosine"`` (default): tokens and entries are ℓ2-normalised, the entry is the one of highest
cosine similarity and the soft assignment is p = softmax(cos(z, e_k)/τ), τ = 0.05: the factorised /
ℓ2-normalised codes of ViT-VQGAN (Yu et al. 2022, "Vector-quantized Image Modeling with Improved
VQGAN", §3.2). ``codebook`` and ``commit`` are measured between the unit vectors; the quantised output
is the unit entry times √d (entries of unit RMS, the scale of a LayerNormed token).

``metric="euclid"`` is the first version (model version 1, kept for comparison): nearest entry in
Euclidean distance, p = softmax(−‖z_e − e_k‖²/τ) with τ = 1. Measured on DJ30 it failed at its job: the
CS tokens' squared distances to the 512 entries spread by ~1.8, so p was uniform (entropy 6.22 nats ≈
log 512) for every token, ``div`` sat at its floor while the eval-mode hard assignment used 2–50 codes
(issue 16). Sharp, scale-free cosine logits plus the per-token entropy term make p̄ track hard usage.

Deviations from the released code, on purpose (reference/official-code.md §10): a gradient-trained
``nn.Parameter`` codebook with no EMA update, so the orthogonality loss acts on it (§10.17), and no
weight decay on it (``STORM.no_weight_decay``); the soft assignment is a softmax of similarities, not
softmax(+distance) (§10.18); losses are also computed in eval mode (for validation logging) unless the
caller asks for none (``losses=False``: prediction, which needs only the assignment).

Forward has no host synchronisation except the one-off data-dependent initialisation (a Python flag).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

METRICS = ("cosine", "euclid")
DEFAULT_TAU = {"cosine": 0.05, "euclid": 1.0}
ASSIGN_CHUNK = 256  # tokens per block of the blockwise assignment: (256, 512) float32 logits = 512 KB (L2)


def orthogonality_loss(codebook: torch.Tensor) -> torch.Tensor:
    """L_ortho = (1/K²)·‖ℓ2(E)ℓ2(E)ᵀ − I_K‖²_F for E of shape (K, d) (paper §2.2)."""
    e = F.normalize(codebook, dim=-1)
    k = e.shape[0]
    gram = e @ e.t()
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    return (gram - eye).pow(2).sum() / k**2


def mean_assignment(probs: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """p̄ (K,): the (weighted) mean over tokens of ``probs`` (T, K); ``weights`` (T,), 0 drops a token."""
    if weights is None:
        return probs.mean(0)
    return weights @ probs / weights.sum().clamp_min(1.0)


def diversity_loss(probs: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_div = (1/K)·Σ_k p̄_k log p̄_k (paper §2.2, G = 1).

    ``probs``: (T, K) soft assignments of T tokens; ``weights``: optional (T,) token weights (0 drops
    a token). p̄ is their (weighted) mean over tokens. The value is −entropy(p̄)/K, minimal (−log K / K)
    for uniform usage and 0 for a single code.
    """
    p_bar = mean_assignment(probs, weights)
    return (p_bar * torch.log(p_bar.clamp_min(1e-12))).sum() / probs.shape[-1]


def entropy_penalty(probs: torch.Tensor, log_probs: torch.Tensor, weights: torch.Tensor | None = None):
    """MAGVIT-v2's entropy penalty E_t[H(p_t)] − H(p̄) in nats (Yu et al. 2024, §3.1).

    Minimal (−log K) when every token is assigned to one entry with certainty and the entries are used
    equally; 0 when every token has the same assignment."""
    h_tok = -(probs * log_probs).sum(-1)
    h_tok = h_tok.mean() if weights is None else (h_tok * weights).sum() / weights.sum().clamp_min(1.0)
    p_bar = mean_assignment(probs, weights)
    return h_tok + (p_bar * torch.log(p_bar.clamp_min(1e-12))).sum()


class _CosineSoftAssignment(torch.autograd.Function):
    """Code indices, ``div`` and ``entropy`` of the cosine quantiser in one pass over blocks of tokens.

    Inputs: unit tokens zn (T, d), unit entries en (K, d), token weights w (T,), their clamped sum n,
    τ and the block size. The same numbers as ``logits = zn @ enᵀ / τ``, ``argmax``, ``log_softmax``
    and :func:`diversity_loss` / :func:`entropy_penalty` over the whole (T, K) matrix (the sums over
    tokens are accumulated per block, so the last digits may differ), but no (T, K) tensor is stored:
    each block's logits are computed, used and dropped while in cache, and recomputed in backward
    (one more (T, d, K) product). Backward, for a token t with p = softmax(l_t), lp = log p,
    H_t = −Σ p lp and c_k = (g_div / K + g_ent)·∂(p̄_k log p̄_k)/∂p̄_k:
    ∂/∂l_t = (w_t / n)·[p ⊙ (c − ⟨p, c⟩) − g_ent · p ⊙ (lp + H_t)] (softmax Jacobian; ∂H/∂l = −p ⊙ (lp + H)).
    """

    @staticmethod
    def forward(ctx, zn, en, w, n, tau: float, chunk: int):
        e_t = en.t()
        k = en.shape[0]
        indices, h_tok = [], []
        acc = zn.new_zeros(k)
        for zc, wc in zip(zn.split(chunk), w.split(chunk)):
            logits = zc @ e_t / tau
            indices.append(logits.argmax(-1))
            lp = torch.log_softmax(logits, dim=-1)
            p = lp.exp()
            acc += wc @ p
            h_tok.append(-(p * lp).sum(-1))
        h_tok = torch.cat(h_tok)
        p_bar = acc / n
        log_p_bar = torch.log(p_bar.clamp_min(1e-12))
        neg_h_bar = (p_bar * log_p_bar).sum()
        div = neg_h_bar / k
        entropy = (h_tok * w).sum() / n + neg_h_bar
        ctx.save_for_backward(zn, en, w, n, h_tok, p_bar, log_p_bar)
        ctx.tau, ctx.chunk = tau, chunk
        return torch.cat(indices), div, entropy

    @staticmethod
    def backward(ctx, _g_idx, g_div, g_ent):
        zn, en, w, n, h_tok, p_bar, log_p_bar = ctx.saved_tensors
        tau, chunk, k = ctx.tau, ctx.chunk, en.shape[0]
        c = (g_div / k + g_ent) * (log_p_bar + (p_bar > 1e-12).to(p_bar.dtype))   # ∂loss/∂p̄ (K,)
        e_t = en.t()
        g_zn, g_en = [], torch.zeros_like(en)
        for zc, wc, hc in zip(zn.split(chunk), w.split(chunk), h_tok.split(chunk)):
            lp = torch.log_softmax(zc @ e_t / tau, dim=-1)
            p = lp.exp()
            # in place on lp: p ⊙ (c − ⟨p, c⟩ − g_ent (lp + H)) · w / (n τ) = ∂/∂(zc @ enᵀ)
            g = lp.add_(hc[:, None]).mul_(-g_ent).add_(c).sub_((p @ c)[:, None]).mul_(p)
            g.mul_((wc / (n * tau))[:, None])
            g_zn.append(g @ en)
            g_en.addmm_(g.t(), zc)
        return torch.cat(g_zn), g_en, None, None, None, None


def usage_stats(codes, n_codes: int) -> dict:
    """Hard usage of a codebook from code indices (any shape, numpy or torch): ``used`` (entries hit at
    least once) and ``perplexity`` (exp of the entropy of the usage histogram)."""
    counts = torch.bincount(torch.as_tensor(codes).reshape(-1).long().cpu(), minlength=n_codes).double()
    if counts.sum() == 0:
        return {"used": 0, "perplexity": float("nan")}
    p = counts / counts.sum()
    h = -(p[p > 0] * p[p > 0].log()).sum()
    return {"used": int((counts > 0).sum()), "perplexity": float(h.exp())}


def _kmeans_pp(pool: torch.Tensor, k: int) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) of k centres among the unit vectors ``pool``
    (T, d), T ≥ k: each next centre drawn with probability ∝ squared distance to the nearest chosen one
    (torch's global RNG)."""
    first = torch.randint(pool.shape[0], (1,), device=pool.device)
    centres = [pool[first[0]]]
    d2 = (2 - 2 * pool @ centres[0]).clamp_min(0)
    for _ in range(1, k):
        nxt = torch.multinomial(d2 + 1e-12, 1)[0]
        centres.append(pool[nxt])
        d2 = torch.minimum(d2, (2 - 2 * pool @ pool[nxt]).clamp_min(0))
    return torch.stack(centres).clone()


@dataclass
class VQOutput:
    z_q: torch.Tensor          # (..., d) quantised tokens carrying straight-through gradients to z_e
    indices: torch.Tensor      # (...) long: index of the assigned entry
    losses: dict               # raw terms: codebook, commit, div, entropy, ortho (scalars); {} if not asked
    perplexity: torch.Tensor   # exp(entropy) of the hard code usage over the valid tokens (no grad)


class VectorQuantizer(nn.Module):
    """Quantisation with straight-through gradients (paper §2.2; VQ-VAE eq. 3).

    n_codes: K entries; dim: their width d; tau: temperature of the soft assignment (default per metric:
    cosine 0.05, euclid 1); metric: ``"cosine"`` (ℓ2-normalised, ViT-VQGAN) or ``"euclid"`` (version 1).

    Two guards against dead codes, both in training mode only and neither in the paper:

    - data_init: on the first training forward, initialise the entries from that batch's valid encoder
      tokens: cosine: ``kmeans_iters`` steps of spherical k-means (Lloyd) from a k-means++ seeding (the
      k-means init of VQ codebooks, Zeghidour et al. 2021, SoundStream §3.2); euclid: K evenly spaced
      tokens. Jittered copies when there are
      fewer than K tokens. Deterministic for a given torch seed.
    - restart_threshold > 0: random restarts (Jukebox §2.2; SoundStream §3.2): an entry whose
      exponential moving average (decay ``usage_decay``) of assigned tokens per training batch falls
      below the threshold is moved onto a random valid encoder token of the current batch (torch's
      global RNG; K draws every training step, applied with ``torch.where``: no host sync).
    """

    def __init__(self, n_codes: int, dim: int, tau: float | None = None, data_init: bool = True,
                 restart_threshold: float = 0.1, usage_decay: float = 0.95, metric: str = "cosine",
                 kmeans_iters: int = 10):
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")
        self.n_codes, self.dim, self.metric = n_codes, dim, metric
        self.tau = DEFAULT_TAU[metric] if tau is None else float(tau)
        if self.tau <= 0:
            raise ValueError("tau must be positive")
        self.restart_threshold, self.usage_decay, self.kmeans_iters = restart_threshold, usage_decay, kmeans_iters
        # VQ-VAE's usual init, replaced by the data-dependent one when data_init is set.
        self.codebook = nn.Parameter(torch.empty(n_codes, dim).uniform_(-1.0 / n_codes, 1.0 / n_codes))
        self.initialised = not data_init  # a Python flag: checking it costs no device sync
        self.fused = True  # cosine: div/entropy by _CosineSoftAssignment (False: the plain autograd graph)
        self.register_buffer("usage_ema", torch.ones(n_codes))  # starts at 1: a grace period
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # total restarted entries

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "initialised", None)   # a buffer in version 1 checkpoints
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.initialised = True                         # loaded entries are never re-initialised

    @property
    def cosine(self) -> bool:
        return self.metric == "cosine"

    @torch.no_grad()
    def _init_from(self, z: torch.Tensor, w: torch.Tensor) -> None:
        pool = z[w > 0].detach()
        if pool.shape[0] == 0:
            return
        k = self.n_codes
        if self.cosine:
            pool = F.normalize(pool, dim=-1)
        if pool.shape[0] >= k and self.cosine:
            codes = _kmeans_pp(pool, k)
        elif pool.shape[0] >= k:
            pick = torch.linspace(0, pool.shape[0] - 1, k, device=z.device).round().long()
            codes = pool[pick].clone()
        else:
            reps = math.ceil(k / pool.shape[0])
            codes = pool.repeat(reps, 1)[:k].clone()
            scale = pool.std().clamp_min(1e-3) if pool.shape[0] > 1 else pool.abs().mean().clamp_min(1e-3)
            codes[pool.shape[0]:] += 0.1 * scale * torch.randn_like(codes[pool.shape[0]:])
        if self.cosine:
            codes = F.normalize(codes, dim=-1)
            for _ in range(self.kmeans_iters):  # spherical k-means; an empty cluster keeps its centre
                assign = (pool @ codes.t()).argmax(-1)
                sums = torch.zeros_like(codes).index_add_(0, assign, pool)
                codes = torch.where(sums.norm(dim=-1, keepdim=True) > 0, F.normalize(sums, dim=-1), codes)
        self.codebook.copy_(codes)
        self.initialised = True

    @torch.no_grad()
    def _restart_dead(self, z: torch.Tensor, w: torch.Tensor) -> None:
        dead = self.usage_ema < self.restart_threshold
        pick = torch.multinomial(w + 1e-12, self.n_codes, replacement=True)   # valid tokens (w > 0)
        new = z.detach()[pick]
        if self.cosine:
            new = F.normalize(new, dim=-1)
        self.codebook.copy_(torch.where(dead[:, None], new.to(self.codebook.dtype), self.codebook))
        self.usage_ema.copy_(torch.where(dead, torch.ones_like(self.usage_ema), self.usage_ema))
        self.restarts += dead.sum()

    def entries(self) -> torch.Tensor:
        """The entries as used for assignment: unit vectors (cosine) or raw (euclid), (K, d)."""
        return F.normalize(self.codebook, dim=-1) if self.cosine else self.codebook

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Assignment logits (T, K) of tokens z (T, d), one float32 matmul: cos/τ or −‖z − e‖²/τ."""
        if self.cosine:
            return F.normalize(z, dim=-1) @ self.entries().t() / self.tau
        e = self.codebook
        d2 = torch.addmm(e.pow(2).sum(-1), z, e.t(), alpha=-2.0) + z.pow(2).sum(-1, keepdim=True)
        return -d2 / self.tau

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distances (T, K) between tokens z (T, d) and every entry (as assigned: unit
        vectors for the cosine metric)."""
        if self.cosine:
            return 2.0 - 2.0 * F.normalize(z, dim=-1) @ self.entries().t()
        return -self.logits(z) * self.tau

    def assign(self, z: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Indices (T,) of the assigned entries, ``logits(z).argmax(-1)`` computed ``chunk`` tokens
        (default :data:`ASSIGN_CHUNK`) at a time, so the (chunk, K) logits stay in cache and the (T, K) matrix is never stored. The same
        numbers as the full product: each logit is the same length-d dot product and the same
        division by τ (a test checks the indices against the unchunked ones)."""
        chunk = chunk or ASSIGN_CHUNK
        if self.cosine:
            e_t = self.entries().t()
            return torch.cat([(c @ e_t / self.tau).argmax(-1) for c in F.normalize(z, dim=-1).split(chunk)])
        return torch.cat([self.logits(c).argmax(-1) for c in z.split(chunk)])

    def forward(self, z_e: torch.Tensor, valid: torch.Tensor | None = None, losses: bool = True) -> VQOutput:
        """z_e: (..., d); valid: optional bool (...) — invalid tokens are quantised but excluded from
        the losses, the usage statistics and the data-dependent init. ``losses=False`` (prediction)
        computes the assignment only: no soft assignment over the K entries, ``losses`` is empty;
        ``z_q``, ``indices`` and ``perplexity`` are the same numbers."""
        with torch.autocast(z_e.device.type, enabled=False):  # logits and argmax in float32
            out = self._quantise(z_e.float(), valid, losses)
        out.z_q = out.z_q.to(z_e.dtype)
        return out

    def _quantise(self, z_e: torch.Tensor, valid: torch.Tensor | None, with_losses: bool = True) -> VQOutput:
        shape = z_e.shape
        z = z_e.reshape(-1, self.dim)
        w = torch.ones(z.shape[0], dtype=z.dtype, device=z.device) if valid is None \
            else valid.reshape(-1).to(z.dtype)
        if self.training and not self.initialised:
            self._init_from(z, w)
        if self.training and self.restart_threshold > 0:
            self._restart_dead(z, w)
        n = w.sum().clamp_min(1.0)

        losses = {}
        e = self.entries()
        zz = F.normalize(z, dim=-1) if self.cosine else z
        if with_losses and self.cosine and self.fused:               # blocks of tokens, no (T, K) tensor
            indices, div, entropy = _CosineSoftAssignment.apply(zz, e, w, n, self.tau, ASSIGN_CHUNK)
        elif with_losses:
            logits = self.logits(z)                                  # (T, K), one matmul
            indices = logits.detach().argmax(-1)
            log_probs = torch.log_softmax(logits, dim=-1)            # soft assignments, computed once
            probs = log_probs.exp()
            div, entropy = diversity_loss(probs, w), entropy_penalty(probs, log_probs, w)
        else:
            indices = self.assign(z)                                 # same indices, no (T, K) matrix
        z_q = F.embedding(indices, e)                                # (T, d)

        def token_mean(sq: torch.Tensor) -> torch.Tensor:            # mean over valid tokens and dims
            return (sq.mean(-1) * w).sum() / n

        if with_losses:
            losses = {
                "codebook": token_mean((zz.detach() - z_q).pow(2)),
                "commit": token_mean((zz - z_q.detach()).pow(2)),
                "div": div,
                "entropy": entropy,
                "ortho": orthogonality_loss(self.codebook),
            }
        with torch.no_grad():
            # index_put_ with accumulate has a deterministic CUDA path (bincount has none)
            counts = z.new_zeros(self.n_codes).index_put_((indices,), w, accumulate=True)
            if self.training:
                self.usage_ema.mul_(self.usage_decay).add_((1 - self.usage_decay) * counts)
            usage = counts / n
            perplexity = torch.exp(-(usage * torch.log(usage.clamp_min(1e-12))).sum())
        z_st = zz + (z_q - zz).detach()                              # straight-through estimator
        if self.cosine:
            z_st = z_st * math.sqrt(self.dim)
        return VQOutput(z_st.view(shape), indices.view(shape[:-1]), losses, perplexity)

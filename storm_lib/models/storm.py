"""STORM: a spatio-temporal factor model on dual vector-quantised VAEs (Zhao et al., WSDM 2026).

One file whose classes follow the paper's Figure 2 (equations: reference/paper.md §2):

    x (B, W, N, F) ─┬─ TSModule: per-stock patches of p days → encoder → TS codebook → decoder → x'_ts
                    └─ CSModule: one token per day (all stocks) → encoder → CS codebook → decoder → x'_cs
    Fusion      : each stock's TS tokens cross-attend to the W CS day tokens        (§2.4, fine-grained)
    Alignment   : symmetric InfoNCE between pooled TS and CS tokens, per 4-day patch (§2.4, semantic)
    FactorModule: factor tokens f_k, stock embeddings e_i →
                  Posterior φ_FE(y, f) (training) / Prior φ_FP(f) → z_k ~ N(μ, σ)   (§2.5, FactorVAE)
                  ReturnDecoder ŷ_i = α_i + Σ_k β_ik z_k + ε                         (§2.5)

Shapes: B samples, W window days, N stocks, F features, p patch length, P = W/p patches, d width,
L factor tokens. Attention never runs over the N·P stock-time tokens jointly: the TS encoder works per
stock (P + 1 tokens), the CS encoder over W + 1 day tokens, fusion is TS→CS cross-attention
(N·P queries × W keys) and the prior attends over L = W + N factor tokens of one sample.

Deliberate departures from the released code (reference/official-code.md §10): prior attention over a
sample's own factor tokens, not across the mini-batch (§10.2; ``prior_across_batch=True`` reproduces the
official layout for the protocol audit, see ``BatchAxisAttention``); the prediction is the prior mean
unless ``sample=True`` (§10.13); every VQ loss counted once (§10.16); a gradient-trained codebook (§10.17) with a
correctly signed diversity loss (§10.18); fusion on and contrastive alignment per patch on pooled tokens (§10.19);
reconstruction of all features at weight 1 in both branches (§10.20); a Gaussian likelihood of y under
the posterior-decoded distribution instead of an MSE on one sample (§10.21). Beyond FactorVAE, the same
likelihood under the prior predictive (``nll_prior``) trains the prediction path directly (FactorModule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from .base import TorchReturnModel
from .quantizer import VectorQuantizer

SIGMA_MIN = 1e-4  # floor of every predicted standard deviation


# --------------------------------------------------------------------------- configuration


@dataclass
class StormConfig:
    """Every size and loss weight. Defaults: a small CPU model (official sizes: d_model 256, 4/2 layers)."""

    n_stocks: int                    # N (fixed per universe: the CS patch spans all stocks)
    n_features: int                  # F
    window: int = 64                 # W, divisible by patch_len
    d_model: int = 64                # d: token and codebook width
    n_heads: int = 4
    ts_layers: int = 2               # TS encoder blocks
    ts_dec_layers: int = 1
    cs_layers: int = 2               # CS encoder blocks
    cs_dec_layers: int = 1
    patch_len: int = 4               # p: days per TS patch
    stem_width: int = 16             # e: per-stock feature stem of the CS patch embedding
    codebook_size: int = 512         # K entries per codebook (paper Fig. 3b best)
    mlp_ratio: int = 4
    dropout: float = 0.1
    fusion_layers: int = 1           # TS→CS cross-attention blocks
    prior_layers: int = 1            # self-attention blocks of the prior over factor tokens
    prior_across_batch: bool = False  # audit switch (e): the prior's attention runs across the mini-batch
                                      # as in the official code (official-code.md §10.2); see Prior
    codebook_metric: str = "cosine"  # "cosine": ℓ2-normalised codes (ViT-VQGAN); "euclid": version 1
    div_temperature: float | None = None  # τ of the soft assignment (None: cosine 0.05, euclid 1.0)
    codebook_data_init: bool = True  # first training batch initialises the codebooks (k-means for cosine)
    codebook_restart: float = 0.1    # restart entries used by < this many tokens per batch (EMA); 0: off
    contrastive_temperature: float = 0.1  # InfoNCE temperature (fixed; CLIP learns it from 0.07)
    learn_temperature: bool = False  # version 1: True. Learned, it grew until the validation InfoNCE
                                     # rose while retrieval improved (overconfident on new windows)
    align_pool: str = "mlp"          # TS summary: "mlp" = mean_i MLP(cls_i) (DeepSets); "mlp_id" = mean_i
                                     # MLP(cls_i + s_i), s_i a learned stock embedding; "mean": version 1
    align_level: str = "patch"       # "patch" (version 4): per p-day patch, the TS patch tokens pooled over
                                     # stocks vs the CS day tokens of those p days; "window" (version 3): one
                                     # TS summary vs the CS [cls] per window; "stock" (option, experimental):
                                     # each stock's TS [cls] vs a CS read-out for that stock
    align_negatives: str = "disjoint"  # InfoNCE negatives: "disjoint" = only windows that share no day with
                                       # the anchor (false-negative cancellation); "all": version 2
    align_stock_drop: float = 0.0    # training only: each stock leaves the TS summary's pool with this
                                     # probability (an augmentation of the TS view; 0: off)
    wo_ts_query: str = "identity"    # w/o-TS stock query: "identity" (learned per-stock vector, no
                                     # per-stock input) or "last_day" (version 1: Linear(x_i on the last day))
    kl_reduction: str = "sum"        # over valid factors: "sum" (FactorVAE, official), "mean", or
                                     # "stock" (sum / valid stocks: the per-stock ELBO scale)
    checkpoint_ts: bool = False      # recompute the TS encoder/decoder blocks in backward (activation
                                     # checkpointing: same numbers, less memory, ~one more TS forward)
    use_ts: bool = True              # False: STORM-w/o-TS (CS module only)
    use_cs: bool = True              # False: STORM-w/o-CS (TS module only)
    fusion: bool = True              # TS→CS cross-attention (dual model only)
    # loss weights (paper L_1 has weight 1 on reconstructions and both stop-gradient terms)
    w_recon_ts: float = 1.0
    w_recon_cs: float = 1.0
    w_codebook: float = 1.0
    w_commit: float = 1.0
    w_div: float = 0.1               # official
    w_entropy: float = 0.1           # MAGVIT-v2 entropy penalty (not in the paper; quantizer.py)
    w_ortho: float = 0.1             # official
    w_contrastive: float = 0.1       # official 1e-3 gave the encoders no say: InfoNCE stayed at ln(B)
    w_nll: float = 1.0
    w_kl: float = 0.1                # official
    w_nll_prior: float = 1.0         # NLL of y under the prior predictive (not in FactorVAE; see FactorModule)

    def __post_init__(self):
        if not (self.use_ts or self.use_cs):
            raise ValueError("STORM needs at least one of use_ts / use_cs")
        if self.window % self.patch_len:
            raise ValueError(f"window {self.window} is not divisible by patch_len {self.patch_len}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.kl_reduction not in ("mean", "sum", "stock"):
            raise ValueError("kl_reduction must be 'mean', 'sum' or 'stock'")
        for name, value, known in (("codebook_metric", self.codebook_metric, ("cosine", "euclid")),
                                   ("align_pool", self.align_pool, ("mlp", "mlp_id", "mean")),
                                   ("align_negatives", self.align_negatives, ("disjoint", "all")),
                                   ("align_level", self.align_level, ("window", "stock", "patch")),
                                   ("wo_ts_query", self.wo_ts_query, ("identity", "last_day"))):
            if value not in known:
                raise ValueError(f"{name} must be one of {known}, got {value!r}")
        if not 0.0 <= self.align_stock_drop < 1.0:
            raise ValueError(f"align_stock_drop must be in [0, 1), got {self.align_stock_drop}")

    @property
    def n_patches(self) -> int:
        return self.window // self.patch_len

    @property
    def dual(self) -> bool:
        return self.use_ts and self.use_cs

    def loss_weights(self) -> dict[str, float]:
        """Weight of every loss term name the model can return."""
        w = {"contrastive": self.w_contrastive, "nll": self.w_nll, "kl": self.w_kl, "nll_prior": self.w_nll_prior}
        for b in ("ts", "cs"):
            w.update({f"recon_{b}": getattr(self, f"w_recon_{b}"), f"codebook_{b}": self.w_codebook,
                      f"commit_{b}": self.w_commit, f"div_{b}": self.w_div, f"ortho_{b}": self.w_ortho,
                      f"entropy_{b}": self.w_entropy})
        return w


@dataclass
class StormOutput:
    pred: torch.Tensor               # (B, N) prior-path return score (mean, or one draw if sample=True)
    loss: torch.Tensor               # Σ weight[name] · losses[name]
    losses: dict                     # raw terms (scalars)
    pred_std: torch.Tensor | None = None  # (B, N) std of the prior predictive (detached)
    extras: dict = field(default_factory=dict)  # code indices, perplexities, restart counts (no grad)


# --------------------------------------------------------------------------- building blocks


class MLP(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.fc, self.proj, self.drop = nn.Linear(d_in, d_hidden), nn.Linear(d_hidden, d_out), nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Attention(nn.Module):
    """Multi-head attention; ``kv=None`` is self-attention. ``key_valid`` (B, S) bool masks keys."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q, self.kv, self.proj = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)

    def forward(self, x, kv=None, key_valid=None):
        b, t, d = x.shape
        kv = x if kv is None else kv
        s, h = kv.shape[1], self.n_heads
        q = self.q(x).view(b, t, h, d // h).transpose(1, 2)
        k, v = (u.view(b, s, h, d // h).transpose(1, 2) for u in self.kv(kv).split(d, dim=-1))
        mask = None
        if key_valid is not None:
            mask = key_valid[:, None, None, :]
            if t == s:  # self-attention: a token always sees itself, so no row is fully masked
                mask = mask | torch.eye(t, dtype=torch.bool, device=x.device)
        p = self.dropout if self.training else 0.0
        if p > 0 and mask is None:
            y = attention_with_dropout(q, k, v, p)
        else:  # no dropout: the fused kernel
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


def attention_with_dropout(q, k, v, p: float):
    """softmax(q kᵀ / √d_h) with dropout p, times v: the computation of scaled_dot_product_attention's
    math path (which dropout > 0 selects on a CPU), same operations and random draws, minus its guard
    for fully masked rows (``_safe_softmax``: isneginf, all, where over the whole score tensor), which
    cannot occur without a mask."""
    s = (1.0 / math.sqrt(q.shape[-1])) ** 0.5
    attn = torch.softmax((q * s) @ (k * s).transpose(-2, -1), dim=-1)
    return F.dropout(attn, p, True) @ v


class Block(nn.Module):
    """Pre-LN Transformer block: (cross- or self-)attention + MLP, each with a residual.

    ``attn``: an attention module to use instead of :class:`Attention` (same call signature)."""

    def __init__(self, d: int, n_heads: int, dropout: float, mlp_ratio: int = 4, cross: bool = False,
                 attn: nn.Module | None = None):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ln_kv = nn.LayerNorm(d) if cross else None
        self.attn = Attention(d, n_heads, dropout) if attn is None else attn
        self.mlp = MLP(d, mlp_ratio * d, d, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, kv=None, key_valid=None):
        kv = None if self.ln_kv is None else self.ln_kv(kv)
        x = x + self.drop(self.attn(self.ln1(x), kv, key_valid))
        return x + self.mlp(self.ln2(x))


class Encoder(nn.Module):
    """[cls] + learned positions → pre-LN blocks → LayerNorm → Linear (the pre-quantisation z_e)."""

    def __init__(self, n_tokens: int, d: int, n_heads: int, n_layers: int, dropout: float, mlp_ratio: int):
        super().__init__()
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, d))
        self.pos = nn.Parameter(0.02 * torch.randn(1, n_tokens + 1, d))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, n_heads, dropout, mlp_ratio) for _ in range(n_layers))
        self.ln, self.out = nn.LayerNorm(d), nn.Linear(d, d)
        self.checkpoint = False  # see run_blocks

    def forward(self, tokens):
        """tokens (S, T, d) → ([cls] output (S, d), token outputs z_e (S, T, d))."""
        x = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x = run_blocks(self.blocks, self.drop(x + self.pos), self.checkpoint)
        x = self.out(self.ln(x))
        return x[:, 0], x[:, 1:]


class Decoder(nn.Module):
    """Linear → learned positions → pre-LN blocks → LayerNorm, over the quantised tokens."""

    def __init__(self, n_tokens: int, d: int, n_heads: int, n_layers: int, dropout: float, mlp_ratio: int):
        super().__init__()
        self.inp = nn.Linear(d, d)
        self.pos = nn.Parameter(0.02 * torch.randn(1, n_tokens, d))
        self.blocks = nn.ModuleList(Block(d, n_heads, dropout, mlp_ratio) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d)
        self.checkpoint = False  # see run_blocks

    def forward(self, z_q):
        return self.ln(run_blocks(self.blocks, self.inp(z_q) + self.pos, self.checkpoint))


def run_blocks(blocks, x, checkpoint: bool = False):
    """x through ``blocks``; with ``checkpoint`` (and gradients on) each block's activations are
    recomputed in backward instead of stored (torch.utils.checkpoint, non-reentrant; the RNG state is
    restored for the recomputation, so dropout draws the same masks and the gradients are the same)."""
    for block in blocks:
        if checkpoint and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x


class _StockSSE(torch.autograd.Function):
    """Per-stock sums of squared errors Σ (pred − target)² over every axis after (B, N), fused: one
    subtraction and one norm reduction forward, one multiplication backward (no full-size square, no
    0/1 weight over the elements). target carries no gradient."""

    @staticmethod
    def forward(ctx, pred, target):
        diff = pred - target
        ctx.save_for_backward(diff)
        return torch.linalg.vector_norm(diff.flatten(2), dim=-1).square()

    @staticmethod
    def backward(ctx, grad):                                    # grad (B, N)
        (diff,) = ctx.saved_tensors
        g = (2.0 * grad).view(*grad.shape, *([1] * (diff.dim() - 2)))
        return diff * g, None


def masked_mse(pred, target, stock_valid):
    """Mean squared error over the valid stocks' elements, stock-major: pred/target (B, N, ...),
    stock_valid (B, N). The stock weight multiplies the (B, N) per-stock sums, not the elements, and
    nothing here reads a tensor's value on the host (no ``bool(...)``), so the forward can compile."""
    w = stock_valid.to(pred.dtype)
    per_elem = pred[0, 0].numel()
    n = (w.sum() * per_elem).clamp_min(1.0)
    return (_StockSSE.apply(pred, target) * w).sum() / n


@dataclass
class BranchOutput:
    h: torch.Tensor          # encoder outputs z_e (TS: (B, N, P, d); CS: (B, W, d))
    q: torch.Tensor          # quantised tokens (straight-through), same shape
    cls: torch.Tensor        # [cls] outputs (TS: (B, N, d); CS: (B, d))
    codes: torch.Tensor      # code indices (TS: (B, N, P); CS: (B, W))
    losses: dict             # recon, codebook, commit, div, entropy, ortho
    perplexity: torch.Tensor


# --------------------------------------------------------------------------- the two VQ-VAE branches


class TSModule(nn.Module):
    """Time-series VQ-VAE (paper §2.1): patches along the stock axis, one stock × p days × F features.

    Each stock's P = W/p patch tokens (+ [cls]) form one sequence, so attention is per stock.
    """

    def __init__(self, cfg: StormConfig):
        super().__init__()
        d, p, f, n_p = cfg.d_model, cfg.patch_len, cfg.n_features, cfg.n_patches
        self.p = p
        self.embed = nn.Linear(p * f, d)
        self.encoder = Encoder(n_p, d, cfg.n_heads, cfg.ts_layers, cfg.dropout, cfg.mlp_ratio)
        self.vq = VectorQuantizer(cfg.codebook_size, d, cfg.div_temperature, cfg.codebook_data_init,
                                  cfg.codebook_restart, metric=cfg.codebook_metric)
        self.decoder = Decoder(n_p, d, cfg.n_heads, cfg.ts_dec_layers, cfg.dropout, cfg.mlp_ratio)
        self.head = nn.Linear(d, p * f)
        self.encoder.checkpoint = self.decoder.checkpoint = cfg.checkpoint_ts

    def forward(self, xs, mask, decode: bool = True, losses: bool = True) -> BranchOutput:
        """xs (B, N, W, F) stock-major (invalid stocks zeroed), mask (B, N); ``decode=False`` skips the
        decoder and the reconstruction loss, ``losses=False`` the codebook terms (prediction needs
        neither)."""
        b, n, w, f = xs.shape
        n_p = w // self.p
        cls, h = self.encoder(self.embed(xs.reshape(b * n, n_p, self.p * f)))  # patches: a view
        h, cls = h.view(b, n, n_p, -1), cls.view(b, n, -1)
        vq = self.vq(h, mask[:, :, None].expand(b, n, n_p), losses)
        losses = dict(vq.losses)
        if decode:
            rec = self.head(self.decoder(vq.z_q.reshape(b * n, n_p, -1)))        # (B·N, P, p·F)
            losses = {"recon": masked_mse(rec.view(b, n, w, f), xs, mask), **losses}
        return BranchOutput(h, vq.z_q, cls, vq.indices, losses, vq.perplexity)


class CSModule(nn.Module):
    """Cross-sectional VQ-VAE (paper §2.1): patches along the time axis, one day × all N stocks × F.

    Patch embedding: a per-stock stem Linear(F → e), invalid stocks zeroed, the N stems flattened and
    mapped by Linear(N·e → d) (the official DJ30 layout; a stem keeps N·F·d weights out of the model).
    """

    def __init__(self, cfg: StormConfig):
        super().__init__()
        d, e, n, f, w = cfg.d_model, cfg.stem_width, cfg.n_stocks, cfg.n_features, cfg.window
        self.e = e
        self.stem, self.embed = nn.Linear(f, e), nn.Linear(n * e, d)
        self.encoder = Encoder(w, d, cfg.n_heads, cfg.cs_layers, cfg.dropout, cfg.mlp_ratio)
        self.vq = VectorQuantizer(cfg.codebook_size, d, cfg.div_temperature, cfg.codebook_data_init,
                                  cfg.codebook_restart, metric=cfg.codebook_metric)
        self.decoder = Decoder(w, d, cfg.n_heads, cfg.cs_dec_layers, cfg.dropout, cfg.mlp_ratio)
        self.unembed, self.unstem = nn.Linear(d, n * e), nn.Linear(e, f)

    def forward(self, xs, mask, decode: bool = True, losses: bool = True) -> BranchOutput:
        """xs (B, N, W, F) stock-major (invalid stocks zeroed), mask (B, N); ``decode`` / ``losses`` as
        in :meth:`TSModule.forward`. Only the e-wide stems are transposed to day-major, never the F-wide
        input or reconstruction."""
        b, n, w, f = xs.shape
        stems = F.gelu(self.stem(xs)) * mask[:, :, None, None].to(xs.dtype)    # (B, N, W, e)
        tokens = self.embed(stems.transpose(1, 2).reshape(b, w, n * self.e))   # (B, W, d)
        cls, h = self.encoder(tokens)                                           # (B, d), (B, W, d)
        vq = self.vq(h, mask.any(1)[:, None].expand(b, w), losses)
        losses = dict(vq.losses)
        if decode:
            u = self.unembed(self.decoder(vq.z_q)).view(b, w, n, self.e).transpose(1, 2)
            rec = self.unstem(F.gelu(u.contiguous()))                           # (B, N, W, F)
            losses = {"recon": masked_mse(rec, xs, mask), **losses}
        return BranchOutput(h, vq.z_q, cls, vq.indices, losses, vq.perplexity)


# --------------------------------------------------------------------------- fusion and alignment (§2.4)


class Fusion(nn.Module):
    """Fine-grained fusion: every TS token (query) cross-attends to the W CS day tokens, residual + MLP.

    Cost N·P·W per sample (never (N·P)²). A CrossViT-like exchange in one direction: the CS tokens
    already summarise all stocks, and they enter the factor set on their own.
    """

    def __init__(self, cfg: StormConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads, cfg.dropout, cfg.mlp_ratio, cross=True)
                                    for _ in range(cfg.fusion_layers))

    def forward(self, ts, cs):
        """ts (B, N, P, d), cs (B, W, d) → fused ts (B, N, P, d)."""
        b, n, n_p, d = ts.shape
        x = ts.reshape(b, n * n_p, d)
        for block in self.blocks:
            x = block(x, cs)
        return x.view(b, n, n_p, d)


def overlapping(days, window: int):
    """(B, B) bool: windows i ≠ j of ``window`` days ending at ``days`` share at least one day."""
    days = torch.as_tensor(days)
    gap = (days[:, None] - days[None, :]).abs()
    return (gap < window) & ~torch.eye(len(days), dtype=torch.bool, device=days.device)


class Alignment(nn.Module):
    """Semantic alignment: symmetric InfoNCE (CLIP; Radford et al. 2021, Fig. 3) between a TS summary
    and a CS summary of the same unit; the other units of the batch are the negatives. A training signal
    only: nothing here feeds ``pred``.

    Unit (``align_level``): ``"patch"`` (version 4, :meth:`patch_logits`) = one p-day patch of a window;
    ``"window"`` (versions 1–3) = the whole window, TS summary against the CS [cls]; ``"stock"`` (option).
    Per window, the map between the two summaries memorised the ~43 day-disjoint training windows and
    never carried to validation windows; per patch (~690 disjoint units) it does (issue 16, DESIGN.md).

    TS summary (``align_pool``): ``"mlp"`` = mean over valid stocks of MLP(TS token_i), a DeepSets
    pooling (Zaheer et al. 2017); ``"mean"`` (version 1) = MLP-free mean of the [cls]. Why version 1 sat
    at ln(B): the features are cross-sectionally z-scored per day, so the plain mean over stocks of
    (nearly linear) per-stock summaries is almost the same vector for every window and identifies none;
    with the official weight 1e-3 the encoders had no reason to put window identity into [cls] either.
    """

    def __init__(self, cfg: StormConfig):
        super().__init__()
        d = cfg.d_model
        self.pool = cfg.align_pool
        self.negatives, self.window, self.patch_len = cfg.align_negatives, cfg.window, cfg.patch_len
        self.stock_drop = cfg.align_stock_drop
        self.units_per_window = cfg.n_patches if cfg.align_level == "patch" else 1  # InfoNCE candidates
        self.phi_ts = MLP(d, 2 * d, d) if self.pool in ("mlp", "mlp_id") else None
        self.stock_id = nn.Parameter(0.02 * torch.randn(cfg.n_stocks, d)) if self.pool == "mlp_id" else None
        self.proj_ts, self.proj_cs = nn.Linear(d, d), nn.Linear(d, d)
        self.level = cfg.align_level
        if self.level == "stock":  # a learned query per stock reads that stock off the CS day tokens
            self.read_query = nn.Parameter(0.02 * torch.randn(cfg.n_stocks, d))
            self.read = Block(d, cfg.n_heads, cfg.dropout, cfg.mlp_ratio, cross=True)
        scale = torch.tensor(math.log(1.0 / cfg.contrastive_temperature))
        if cfg.learn_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)

    def logits(self, ts_cls, mask, cs_cls):
        """ts_cls (B, N, d), mask (B, N), cs_cls (B, d) → similarity logits (B, B), rows = TS."""
        if self.training and self.stock_drop > 0:  # a random subset of each window's stocks (≥ 1 kept)
            valid = mask.bool()
            keep = valid & (torch.rand(valid.shape, device=valid.device) >= self.stock_drop)
            mask = torch.where(keep.any(1, keepdim=True), keep, valid)
        h = ts_cls if self.stock_id is None else ts_cls + self.stock_id
        return self._similarity(self._pool(h, mask), cs_cls)

    def _pool(self, h, mask):
        """DeepSets summary over the valid stocks: h (B, N, ..., d), mask (B, N) → mean_i φ(h_i) (B, ..., d)."""
        m = mask.reshape(*mask.shape, *([1] * (h.dim() - 2))).to(h.dtype)
        h = self.phi_ts(h) if self.phi_ts is not None else h
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)

    def _similarity(self, ts, cs):
        """ts, cs (M, d) → s · normalise(proj_ts ts) normalise(proj_cs cs)ᵀ (M, M), s the inverse temperature."""
        a = F.normalize(self.proj_ts(ts), dim=-1)
        c = F.normalize(self.proj_cs(cs), dim=-1)
        return self.logit_scale.clamp(max=math.log(100.0)).exp() * a @ c.t()

    def pair_logits(self, ts_cls, mask, cs_cls, cs_h, days=None, ts_h=None):
        """(logits, valid): the similarity matrix of every (TS, CS) pair this level aligns, rows = TS,
        with the excluded negatives at −inf, and which rows/columns are real pairs (None: all).

        ``align_level="window"``: (B, B). ``"stock"``: (B·N, B·N) over (window, stock) pairs,
        TS [cls]_i against the CS read-out r_i = CrossAttn(q_i, CS tokens); invalid stocks are not pairs,
        and with ``days`` the same stock in a window sharing days is not a negative. ``"patch"``:
        (B·P, B·P) over (window, patch) pairs, see :meth:`patch_logits`."""
        if self.level == "window":
            logits = self.logits(ts_cls, mask, cs_cls)
            if days is not None and self.negatives == "disjoint":
                logits = logits.masked_fill(overlapping(days, self.window), float("-inf"))
            return logits, None
        if self.level == "patch":
            return self.patch_logits(ts_h, mask, cs_h, days), None
        b, n, d = ts_cls.shape
        read = self.read(self.read_query.expand(b, -1, -1), cs_h)
        logits = self._similarity(ts_cls.reshape(b * n, d), read.reshape(b * n, d))
        valid = mask.reshape(-1)
        drop = ~(valid[:, None] & valid[None, :])
        if days is not None and self.negatives == "disjoint":
            same = torch.eye(n, dtype=torch.bool, device=logits.device)
            drop = drop | (overlapping(days, self.window)[:, None, :, None]
                           & same[None, :, None, :]).reshape(b * n, b * n)
        drop = drop & ~torch.eye(b * n, dtype=torch.bool, device=logits.device)
        return logits.masked_fill(drop, float("-inf")), valid

    def patch_logits(self, ts_h, mask, cs_h, days=None):
        """``align_level="patch"``: ts_h (B, N, P, d) TS encoder tokens, cs_h (B, W, d) CS encoder tokens
        → (B·P, B·P) logits. The TS side of patch k is mean_i MLP(h_ik) over valid stocks (DeepSets, as
        at window level); the CS side is the mean of the p day tokens of the same days. Every other patch
        of the batch is a negative, except, with ``days`` and ``align_negatives="disjoint"``, patches that
        share a day with the anchor's (windows that overlap). Twelve years hold ~690 day-disjoint 4-day
        patches against ~43 day-disjoint 64-day windows."""
        b, n, n_p, d = ts_h.shape
        ts = self._pool(ts_h, mask)                                                 # (B, P, d)
        cs = cs_h.reshape(b, n_p, -1, d).mean(2)                                    # (B, P, d)
        logits = self._similarity(ts.reshape(b * n_p, d), cs.reshape(b * n_p, d))
        if days is not None and self.negatives == "disjoint":
            offset = torch.arange(n_p, device=logits.device) * self.patch_len
            start = (torch.as_tensor(days, device=logits.device)[:, None] + offset).reshape(-1)
            logits = logits.masked_fill(overlapping(start, self.patch_len), float("-inf"))
        return logits

    def forward(self, ts_cls, mask, cs_cls, days=None, cs_h=None, ts_h=None):
        """→ scalar loss (0 for B = 1). ``days`` (B,): the windows' end-day indices; with
        ``align_negatives="disjoint"``, a window that shares a day with the anchor (|Δt| < W) is not
        used as its negative (false-negative cancellation, Huynh et al. 2022): adjacent windows share up
        to W − 1 of W days, and pushing them apart rewards fingerprints of single days."""
        logits, valid = self.pair_logits(ts_cls, mask, cs_cls, cs_h, days, ts_h)
        return info_nce(logits, valid)


def info_nce(logits, valid=None):
    """Symmetric InfoNCE, positives on the diagonal; with ``valid``, the mean over the valid rows and
    columns only (the others must hold −inf off the diagonal, as :meth:`Alignment.pair_logits` leaves them)."""
    target = torch.arange(logits.shape[0], device=logits.device)
    if valid is None:
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    w = valid.to(logits.dtype)
    rows = F.cross_entropy(logits, target, reduction="none")
    cols = F.cross_entropy(logits.t(), target, reduction="none")
    return 0.5 * ((rows + cols) * w).sum() / w.sum().clamp_min(1.0)


# --------------------------------------------------------------------------- factor module (§2.5)


def gaussian_head(out):
    """(…, 2) → μ, σ = softplus(·) + SIGMA_MIN."""
    return out[..., 0], F.softplus(out[..., 1]) + SIGMA_MIN


class Posterior(nn.Module):
    """φ_FE (paper §2.5; FactorVAE's factor encoder): sees the realised returns, training only.

    Portfolio layer: factor token k forms a portfolio a_k = softmax over valid stocks of
    ⟨u(e_i), v(f_k)⟩/√d, whose return is y_k = Σ_i a_ki y_i; then [μ_k, σ_k] = MLP([f_k, y_k]).
    """

    def __init__(self, cfg: StormConfig):
        super().__init__()
        d = cfg.d_model
        self.u, self.v = nn.Linear(d, d), nn.Linear(d, d)
        self.mlp = MLP(d + 1, d, 2)

    def forward(self, e, f, y, y_valid):
        logits = self.v(f) @ self.u(e).transpose(1, 2) / math.sqrt(e.shape[-1])   # (B, L, N)
        logits = logits.masked_fill(~y_valid[:, None, :], torch.finfo(logits.dtype).min)
        a = torch.softmax(logits, dim=-1) * y_valid[:, None, :].to(logits.dtype)
        y_k = a @ torch.where(y_valid, y, 0.0)[..., None]                          # (B, L, 1)
        return gaussian_head(self.mlp(torch.cat([f, y_k], dim=-1)))


class BatchAxisAttention(nn.Module):
    """The official prior's attention layout (official-code.md §2 "Prior" and §10.2), audit switch (e).

    The official code permutes the factor tokens to (B, C, K) and feeds them to
    ``nn.MultiheadAttention(embed_dim=K, num_heads=K)`` in its default sequence-first layout, so the
    **mini-batch is the sequence**, the C channels are independent items (the attention's batch) and
    the K factor tokens are the embedding (K heads of size 1). This module does exactly that with our
    factor tokens f (B, L, d): ``nn.MultiheadAttention(L, L)`` on f.permute(0, 2, 1) read as
    (sequence B, batch d, embedding L). For every channel c, window b's query over the L token values
    f[b, :, c] attends to the keys and values of all B windows of the batch; the output projection
    then mixes the L heads back into L token values; the block around it (pre-LayerNorm, residual,
    MLP) is unchanged. Invalid factor tokens (TS tokens of stocks that are not valid) are zeroed
    before the layer, so their contents cannot reach the valid tokens (the official code has no
    invalid stocks). Same call signature as :class:`Attention` (``key_valid`` = the factor mask).

    Consequences (the point of the switch): a window's prior, hence its prediction, depends on the
    other windows of its mini-batch, in training (shuffled batches that mix in later windows) and at
    prediction time (``train.predict`` runs consecutive window ends in chunks of ``eval_batch_size``;
    with ``eval_batch_size=1``, the official test loader's batch size, the sequence has length 1, the
    softmax is 1 and the layer becomes a per-window linear map of the token axis).
    """

    def __init__(self, n_factors: int, dropout: float):
        super().__init__()
        self.mha = nn.MultiheadAttention(n_factors, n_factors, dropout=dropout)

    def forward(self, x, kv=None, key_valid=None):
        if kv is not None:
            raise ValueError("BatchAxisAttention is a self-attention layer")
        if key_valid is not None:
            x = x * key_valid[..., None].to(x.dtype)
        seq = x.permute(0, 2, 1)                        # (B, d, L) = (sequence, batch, embedding)
        y, _ = self.mha(seq, seq, seq, need_weights=False)
        return y.permute(0, 2, 1)                       # (B, L, d)


class Prior(nn.Module):
    """φ_FP (paper §2.5; FactorVAE's factor predictor): no labels. Self-attention over the L factor
    tokens of the same sample (never across the batch: official-code.md §10.2), then MLP → μ, σ.

    ``prior_across_batch=True`` (audit switch (e)) swaps the attention sub-layer of every prior block
    for :class:`BatchAxisAttention`, the official layout that attends across the mini-batch; the
    blocks' LayerNorms, residuals and MLPs and the μ/σ head stay as they are.
    """

    def __init__(self, cfg: StormConfig, n_factors: int | None = None):
        super().__init__()
        d = cfg.d_model
        if cfg.prior_across_batch and not n_factors:
            raise ValueError("prior_across_batch needs the number of factor tokens")

        def attn():
            return BatchAxisAttention(n_factors, cfg.dropout) if cfg.prior_across_batch else None

        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.dropout, cfg.mlp_ratio, attn=attn())
                                    for _ in range(cfg.prior_layers))
        self.ln, self.mlp = nn.LayerNorm(d), MLP(d, d, 2)

    def forward(self, f, f_valid):
        for block in self.blocks:
            f = block(f, key_valid=f_valid)
        return gaussian_head(self.mlp(self.ln(f)))


class ReturnDecoder(nn.Module):
    """ŷ_i = α_i + Σ_k β_ik z_k + ε (paper §2.5), z_k ~ N(μ_k, σ_k) independent, α_i ~ N(μ_α, σ_α):
    μ_ŷ = μ_α + Σ_k β_ik μ_k, σ_ŷ² = σ_α² + Σ_k β_ik² σ_k² (FactorVAE's decoder).

    β_ik = ⟨β_u(e_i), β_v(f_k)⟩ / √d / √L: the 1/√L keeps ŷ of order one whatever the number of
    factors. Invalid factor tokens (tokens of invalid stocks) get β = 0.
    """

    def __init__(self, cfg: StormConfig, n_factors: int):
        super().__init__()
        d = cfg.d_model
        self.alpha = MLP(d, d, 2)
        self.beta_u, self.beta_v = nn.Linear(d, d), nn.Linear(d, d)
        self.scale = 1.0 / math.sqrt(d * n_factors)

    def loadings(self, e, f, f_valid):
        beta = self.beta_u(e) @ self.beta_v(f).transpose(1, 2) * self.scale       # (B, N, L)
        return beta * f_valid[:, None, :].to(beta.dtype)

    def forward(self, e, beta, mu_z, sigma_z):
        mu_a, sigma_a = gaussian_head(self.alpha(e))
        mu = mu_a + (beta @ mu_z[..., None])[..., 0]
        var = sigma_a.pow(2) + (beta.pow(2) @ sigma_z.pow(2)[..., None])[..., 0]
        return mu, var.sqrt()


def gaussian_nll(y, mu, sigma, valid):
    """−log N(y | μ, σ²) averaged over the valid entries (y may hold NaN where not valid)."""
    z = (torch.where(valid, y, 0.0) - mu) / sigma
    nll = 0.5 * math.log(2 * math.pi) + torch.log(sigma) + 0.5 * z.pow(2)
    return (nll * valid).sum() / valid.sum().clamp_min(1)


def gaussian_kl(mu_q, sigma_q, mu_p, sigma_p):
    """KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)), elementwise."""
    return (torch.log(sigma_p / sigma_q) + (sigma_q.pow(2) + (mu_q - mu_p).pow(2)) / (2 * sigma_p.pow(2))
            - 0.5)


class FactorModule(nn.Module):
    """Posterior / Prior / ReturnDecoder (paper §2.5, FactorVAE design, reference/anchors.md §6).

    ``pred`` always comes from the prior. With y the module returns (valid stocks with finite y only):

    - ``nll``: −log N(y | μ_ŷ, σ_ŷ) under the posterior-decoded distribution (analytic in z, no
      sampling), mean over valid stocks — FactorVAE's reconstruction term;
    - ``kl``: KL(posterior ‖ prior) of diagonal Gaussians summed over the valid factors (FactorVAE and the
      official code), mean over samples; ``kl_reduction`` "mean" divides by the number of factors,
      "stock" by the number of valid stocks (the per-stock ELBO scale);
    - ``nll_prior`` (when ``w_nll_prior`` > 0): the same likelihood under the prior predictive, i.e. of
      the returned ``pred``/``pred_std``. Not in FactorVAE. STORM always has at least as many factor
      tokens as stocks in the dual model (L = W + N), so the posterior can encode y almost exactly and the
      prior, trained by the KL alone, learns slowly: on a planted-signal panel (tests/test_storm_model.py,
      8 stocks) the prior path reached RankIC ≈ 0.16 without this term and ≈ 0.35 with it, equal to
      training ``pred`` by MSE directly. Set ``w_nll_prior=0`` for the pure FactorVAE objective.
    """

    def __init__(self, cfg: StormConfig, n_factors: int):
        super().__init__()
        self.kl_reduction, self.prior_nll = cfg.kl_reduction, cfg.w_nll_prior > 0
        self.posterior, self.prior = Posterior(cfg), Prior(cfg, n_factors)
        self.decoder = ReturnDecoder(cfg, n_factors)

    def forward(self, e, f, stock_valid, f_valid, y=None, sample=False):
        beta = self.decoder.loadings(e, f, f_valid)
        mu_prior, sigma_prior = self.prior(f, f_valid)
        pred, pred_std = self.decoder(e, beta, mu_prior, sigma_prior)
        if sample:
            pred = pred + pred_std * torch.randn_like(pred)
        losses = {}
        if y is not None:
            y_valid = stock_valid & torch.isfinite(y)
            mu_post, sigma_post = self.posterior(e, f, y, y_valid)
            mu, sigma = self.decoder(e, beta, mu_post, sigma_post)
            losses["nll"] = gaussian_nll(y, mu, sigma, y_valid)
            if self.prior_nll:
                losses["nll_prior"] = gaussian_nll(y, pred, pred_std, y_valid)
            kl = (gaussian_kl(mu_post, sigma_post, mu_prior, sigma_prior) * f_valid).sum(1)
            if self.kl_reduction == "mean":
                kl = kl / f_valid.sum(1).clamp_min(1)
            elif self.kl_reduction == "stock":
                kl = kl / y_valid.sum(1).clamp_min(1)
            losses["kl"] = kl.mean()
        return pred, pred_std, losses


# --------------------------------------------------------------------------- the model


@dataclass
class Representation:
    e: torch.Tensor          # (B, N, d) stock embeddings
    f: torch.Tensor          # (B, L, d) factor tokens
    f_valid: torch.Tensor    # (B, L) bool
    ts: BranchOutput | None
    cs: BranchOutput | None
    losses: dict


class STORM(nn.Module):
    """The full model (paper Fig. 2); ``use_ts`` / ``use_cs`` give the two ablations (§8).

    Factor tokens (§2.5, each token a multi-dimensional factor; [encoder output ‖ quantised] → d):
    dual = W CS day tokens ‖ N per-stock TS summaries (L = W + N); w/o-TS: L = W; w/o-CS: L = N.
    Stock embedding e_i: with a TS branch, LayerNorm(mean over patches of stock i's (fused) TS tokens
    + Linear(its [cls])); CS only, a per-stock query cross-attends to the W CS tokens: a learned
    per-stock identity vector (``wo_ts_query="identity"``, the default: the information set of the
    paper's w/o-TS, whose only per-stock parameters are output weights) or, as in version 1,
    Linear(x_i on the last day) (``"last_day"``: a per-stock input path the paper's ablation lacks).
    Invalid stocks (mask False) are zeroed at the input, excluded from every loss, from the CS patch
    and from the factor set, so they cannot influence valid stocks' predictions.
    """

    def __init__(self, cfg: StormConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.ts = TSModule(cfg) if cfg.use_ts else None
        self.cs = CSModule(cfg) if cfg.use_cs else None
        self.ts_token = nn.Linear(2 * d, d) if cfg.use_ts else None
        self.ts_cls = nn.Linear(d, d) if cfg.use_ts else None
        self.cs_token = nn.Linear(2 * d, d) if cfg.use_cs else None
        self.fusion = Fusion(cfg) if cfg.dual and cfg.fusion else None
        self.align = Alignment(cfg) if cfg.dual else None
        if not cfg.use_ts:  # CS-only stock embedding: a per-stock query cross-attends to the CS tokens
            if cfg.wo_ts_query == "identity":
                self.stock_id = nn.Parameter(0.02 * torch.randn(cfg.n_stocks, d))
            else:
                self.stock_query = nn.Linear(cfg.n_features, d)
            self.stock_attn = Block(d, cfg.n_heads, cfg.dropout, cfg.mlp_ratio, cross=True)
        self.type_emb = nn.Parameter(0.02 * torch.randn(2, d))  # [CS token, TS stock token]
        self.ln_e, self.ln_f = nn.LayerNorm(d), nn.LayerNorm(d)
        n_factors = cfg.window * cfg.use_cs + cfg.n_stocks * cfg.use_ts
        self.factor = FactorModule(cfg, n_factors)

    def epoch_diagnostics(self, panel, t, batch_size: int = 16) -> dict:
        """Eval-mode codebook usage and alignment quality on windows ``t`` (storm_diagnostics.diagnose);
        :func:`storm_lib.train.fit` logs it on the validation windows after every epoch."""
        from .storm_diagnostics import diagnose

        return diagnose(self, panel, t, batch_size)

    def no_weight_decay(self) -> set[str]:
        """Parameter names the optimiser must not decay: the codebooks (decay pulls every entry toward
        the origin, where a Euclidean codebook collapses; VQGAN-style training excludes them)."""
        return {n for n, _ in self.named_parameters() if n.endswith("vq.codebook")}

    takes_days = True  # train.fit passes the window end days (the alignment's negatives need them)

    def _represent(self, x, mask, decode: bool = True, days=None, losses: bool = True) -> Representation:
        """Tokens, stock embeddings and the representation losses. ``decode=False``: no decoders or
        reconstruction terms; ``losses=False``: no loss term at all (no soft code assignment, no
        alignment), ``Representation.losses`` is empty. Neither changes ``e``, ``f`` or the codes.
        ``days`` (B,): the windows' end days, for the alignment's negatives."""
        cfg = self.cfg
        b, w, n, f = x.shape
        if (w, n, f) != (cfg.window, cfg.n_stocks, cfg.n_features):
            raise ValueError(f"x has (W, N, F) = {(w, n, f)}, config expects "
                             f"{(cfg.window, cfg.n_stocks, cfg.n_features)}")
        mask = mask.bool()
        # one pass: stock-major copy (B, N, W, F) with invalid stocks zeroed; both branches read it
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        if x.requires_grad or torch.compiler.is_compiling():  # out= records no gradients and compiles wrongly
            xs = torch.where(mask[:, :, None, None], x.transpose(1, 2), zero).contiguous()
        else:
            xs = torch.where(mask[:, :, None, None], x.transpose(1, 2), zero,
                             out=torch.empty(b, n, w, f, dtype=x.dtype, device=x.device))
        x = xs.transpose(1, 2)  # the zeroed input in (B, W, N, F) order: a view, no copy
        terms, tokens, valid = {}, [], []
        ts = self.ts(xs, mask, decode, losses) if self.ts is not None else None
        cs = self.cs(xs, mask, decode, losses) if self.cs is not None else None
        if cs is not None:
            c = self.cs_token(torch.cat([cs.h, cs.q], -1)) + self.type_emb[0]      # (B, W, d)
            tokens.append(c)
            valid.append(torch.ones(b, w, dtype=torch.bool, device=x.device))
            terms.update({f"{k}_cs": v for k, v in cs.losses.items()})
        if ts is not None:
            g = self.ts_token(torch.cat([ts.h, ts.q], -1))                          # (B, N, P, d)
            if self.fusion is not None:
                g = self.fusion(g, c)
            s = g.mean(2) + self.ts_cls(ts.cls)                                     # (B, N, d)
            e = self.ln_e(s)
            tokens.append(s + self.type_emb[1])
            valid.append(mask)
            terms.update({f"{k}_ts": v for k, v in ts.losses.items()})
        else:
            q = (self.stock_id.expand(b, -1, -1) if self.cfg.wo_ts_query == "identity"
                 else self.stock_query(x[:, -1]))
            e = self.ln_e(self.stock_attn(q, c))
        if self.align is not None and losses:
            terms["contrastive"] = self.align(ts.cls, mask, cs.cls, days, cs.h, ts.h)
        return Representation(e, self.ln_f(torch.cat(tokens, 1)), torch.cat(valid, 1), ts, cs, terms)

    def forward(self, x, mask, y=None, sample: bool = False, days=None) -> StormOutput:
        """x (B, W, N, F), mask (B, N) bool, y (B, N) z-scored next-day returns (NaN = unknown),
        days (B,) the windows' end-day indices (only the alignment's negatives use them)."""
        r = self._represent(x, mask, days=days)
        mask = mask.bool()
        pred, pred_std, factor_losses = self.factor(r.e, r.f, mask, r.f_valid, y, sample)
        losses = {**r.losses, **factor_losses}
        weights = self.cfg.loss_weights()
        loss = sum(weights[k] * v for k, v in losses.items())
        extras = {}
        for name, br in (("ts", r.ts), ("cs", r.cs)):
            if br is not None:
                extras[f"{name}_codes"] = br.codes.detach()
                extras[f"perplexity_{name}"] = br.perplexity
                extras[f"restarts_{name}"] = getattr(self, name).vq.restarts.clone()
        return StormOutput(pred, loss, losses, pred_std.detach(), extras)

    def predict(self, x, mask, sample: bool = False) -> torch.Tensor:
        """Scores (B, N) as ``forward(x, mask, sample=sample).pred``, without the work that only feeds
        losses: no decoders, no reconstructions, no soft code assignment or other codebook terms, no
        alignment, no posterior. Call in eval mode under ``torch.inference_mode()``."""
        r = self._represent(x, mask, decode=False, losses=False)
        return self.factor(r.e, r.f, mask.bool(), r.f_valid, None, sample)[0]

    @torch.no_grad()
    def factors(self, x, mask) -> dict:
        """Factor extraction in eval mode: cs_tokens (B, W, 2d) and ts_tokens (B, N, P, 2d) as
        [encoder output ‖ quantised], stock_embedding (B, N, d), factor_tokens (B, L, d), code indices."""
        was_training = self.training
        self.eval()
        try:
            r = self._represent(x, mask, decode=False, losses=False)
        finally:
            self.train(was_training)
        out = {"stock_embedding": r.e, "factor_tokens": r.f}
        if r.cs is not None:
            out.update(cs_tokens=torch.cat([r.cs.h, r.cs.q], -1), cs_codes=r.cs.codes)
        if r.ts is not None:
            out.update(ts_tokens=torch.cat([r.ts.h, r.ts.q], -1), ts_codes=r.ts.codes)
        return out


# --------------------------------------------------------------------------- estimator


class StormModel(TorchReturnModel):
    """STORM behind the shared fit / predict interface (``storm_lib.models.base``).

    ``variant``: ``"storm"`` (dual), ``"wo_ts"`` (STORM-w/o-TS: CS module only) or ``"wo_cs"``
    (STORM-w/o-CS: TS module only). Sizes come from the profile (``profiles.PROFILES[...].storm``),
    overridable with ``model={...}``; any other keyword overrides the training config.
    """

    VARIANTS = {"storm": {}, "wo_ts": {"use_ts": False}, "wo_cs": {"use_cs": False}}
    NAMES = {"storm": "STORM", "wo_ts": "STORM-w/o-TS", "wo_cs": "STORM-w/o-CS"}

    def __init__(self, variant: str = "storm", profile="cpu", seed: int = 0, device=None, run_dir=None,
                 progress: bool = True, model: dict | None = None, **train_overrides):
        if variant not in self.VARIANTS:
            raise ValueError(f"unknown STORM variant {variant!r}; use one of {list(self.VARIANTS)}")
        super().__init__(profile, seed, device, run_dir, progress, **train_overrides)
        bad = sorted(set(model or {}) - self.network_keys())
        if bad:
            raise TypeError(f"STORM: unknown network size(s) {bad} in model=...; valid: {', '.join(sorted(self.network_keys()))}")
        self.variant, self.model_overrides = variant, dict(model or {})
        self.name = self.NAMES[variant]

    @staticmethod
    def network_keys() -> set[str]:
        """The :class:`StormConfig` fields ``model={...}`` may set (the panel sets the shape fields)."""
        from dataclasses import fields

        return {f.name for f in fields(StormConfig)} - {"n_stocks", "n_features", "window"}

    def config(self, panel) -> StormConfig:
        _, n, f = panel.shape
        kw = {**self.profile.storm, **self.VARIANTS[self.variant], **self.model_overrides}
        return StormConfig(n_stocks=n, n_features=f, window=panel.window, **kw)

    def build_net(self, panel) -> STORM:
        return STORM(self.config(panel))

    @torch.no_grad()
    def factors(self, panel, t, keys=None, stocks=None, batch_size: int | None = None) -> dict:
        """Factor embeddings and code indices for window ends ``t`` (numpy arrays, first axis = t).

        ``keys`` selects outputs of :meth:`STORM.factors` (default all); ``stocks`` (indices into
        ``panel.tickers``) restricts the per-stock outputs, since SP500 TS tokens for every day are
        large (T x 408 x 16 x 2d floats). Also returns ``dates`` and ``tickers``.
        """
        from .. import train as train_mod

        if self.net is None:
            raise RuntimeError("call fit() or load() first")
        t = np.asarray(t)
        device = next(self.net.parameters()).device
        per_stock = {"ts_tokens", "ts_codes", "stock_embedding"}
        sel = None if stocks is None else torch.as_tensor(np.asarray(stocks), device=device)
        chunks: dict[str, list] = {}
        bs = batch_size or self.train_cfg.eval_batch_size
        for i in range(0, len(t), bs):
            x, mask, _ = train_mod.batch(panel, t[i:i + bs], device, with_y=False)
            out = self.net.factors(x, mask)
            for k, v in out.items():
                if keys is not None and k not in keys:
                    continue
                if sel is not None and k in per_stock:
                    v = v.index_select(1, sel)
                chunks.setdefault(k, []).append(v.cpu().numpy())
        res = {k: np.concatenate(v) for k, v in chunks.items()}
        res["dates"] = panel.dates[t]
        res["tickers"] = [panel.tickers[j] for j in (np.arange(len(panel.tickers)) if stocks is None else stocks)]
        return res

    def diagnostics(self, panel, t) -> dict:
        """Eval-mode codebook usage and alignment quality on windows ending at ``t``
        (:func:`storm_lib.models.storm_diagnostics.diagnose`, batches of the training batch size)."""
        from .storm_diagnostics import diagnose

        if self.net is None:
            raise RuntimeError("call fit() or load() first")
        return diagnose(self.net, panel, np.asarray(t), self.train_cfg.batch_size)

    def _meta(self) -> dict:
        return {**super()._meta(), "variant": self.variant, "model": self.model_overrides}

"""FactorVAE (Duan, Wang, Zhang, Li; AAAI 2022, 36(4):4468-4476, doi 10.1609/aaai.v36i4.20369).

A probabilistic dynamic factor model: future cross-sectional returns y (N stocks) are
y = alpha + beta z + eps, with K latent factors z whose posterior is encoded from the realised
returns during training and whose prior is predicted from the features alone. Layers, as in the
paper's Section "Methodology" (reference/anchors.md §6):

* **Feature extractor** ``phi_feat``: h_proj = LeakyReLU(W x + b) per day, then a GRU over the W days
  of each stock; e_i = last hidden state (H).
* **Factor encoder** ``phi_enc`` (posterior, training only, sees y): portfolio layer
  a_(i,m) = softmax_i(w_m . e_i + b_m) over the *valid* stocks (M portfolios), portfolio returns
  y_p = a^T y; mapping layer mu_post = W_mu y_p + b, sigma_post = Softplus(W_sigma y_p + b).
* **Factor decoder** ``phi_dec``: alpha layer h = LeakyReLU(W e + b), mu_alpha = w h + b,
  sigma_alpha = Softplus(w' h + b'); beta layer beta_i = W_beta e_i + b (linear, N x K);
  y_hat_i ~ N(mu_alpha_i + beta_i mu_z, sigma_alpha_i^2 + sum_k beta_ik^2 sigma_zk^2).
* **Factor predictor** ``phi_pred`` (prior, no labels): K heads, one per factor, each a learned
  query q_k attending over the stocks: k_i = W_k e_i, v_i = W_v e_i,
  a_ik = ReLU(cos(q_k, k_i)) / sum_j ReLU(cos(q_k, k_j)) over valid stocks of the *same* sample,
  h_k = sum_i a_ik v_i; then h = LeakyReLU(W h_k + b), mu_prior_k = w h + b,
  sigma_prior_k = Softplus(w' h + b').
* **Loss**: ``nll`` = -log N(y_i | decoder(mu_post, sigma_post)) averaged over the valid stocks of a
  day (analytic in z: the decoder's Gaussian is exact for a Gaussian z), plus
  ``gamma`` x ``kl`` = KL(N(mu_post, sigma_post) || N(mu_prior, sigma_prior)) summed over the K
  factors (the paper's objective; ``kl_reduction="mean"`` averages instead), both averaged over days.

Prediction uses the **prior only**: ``pred`` = mu_alpha + beta mu_prior (``sample=True`` draws from
the prior predictive N(mu_alpha + beta mu_prior, sigma_alpha^2 + beta^2 sigma_prior^2)). The STORM
authors' FactorVAE evaluated validation and test with the label-conditioned posterior
(reference/official-code.md §9), a look-ahead; here the posterior exists only inside the training
loss, and ``tests/test_baselines_vae.py`` checks that test predictions ignore test-period labels.

Choices the paper leaves open (ours, documented):

* Invalid stocks (``mask`` False) are zeroed at the input and excluded from the portfolio softmax,
  the prior's attention and the loss, so they cannot move a valid stock's score. Attention never
  crosses samples of a mini-batch, so a day's scores do not depend on the other days in its batch.
* ``max_train_stocks``: in training only, when a day has more stocks than this, one random subset
  of stock columns (shared by the mini-batch, drawn from torch's seeded RNG) is used for that step.
  It bounds the GRU's cost on SP500 (408 stocks) and leaves DJ30 (29 stocks) untouched; evaluation and
  prediction always use every stock.
* The training target is the per-day cross-sectional z-score of next-day returns
  (:func:`storm_lib.train.normalise_labels`), as for every model of the package.
* ``sigma`` floors of ``SIGMA_MIN`` keep the likelihood finite.
* Sizes per profile in :data:`SIZES`; ``paper`` uses the STORM authors' FactorVAE configuration
  (reference/official-code.md §9: 8 factors, 10 portfolios, width 128), the FactorVAE paper's own
  sizes not being available to us.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..panel import Panel
from ..profiles import Profile, get_profile
from .base import ModelOutput, TorchReturnModel

SIGMA_MIN = 1e-4


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class FactorVAEConfig:
    """Sizes and loss weights of :class:`FactorVAENet` (defaults = the ``cpu`` profile)."""

    n_features: int = 0               # F (set from the panel)
    hidden: int = 64                  # H: width of the feature extractor (GRU) and of every head
    n_factors: int = 16               # K latent factors (= attention heads of the prior)
    n_portfolios: int = 32            # M portfolios of the posterior's portfolio layer
    gamma: float = 1.0                # weight of KL(posterior || prior)
    kl_reduction: str = "sum"         # "sum" over factors (paper) or "mean"
    dropout: float = 0.0              # on the extractor's output (0: none, as in the paper)
    max_train_stocks: int | None = 96   # training-only random stock subset per step (None: all)

    def __post_init__(self):
        if self.kl_reduction not in ("sum", "mean"):
            raise ValueError("kl_reduction must be 'sum' or 'mean'")
        if self.hidden < 1 or self.n_factors < 1 or self.n_portfolios < 1:
            raise ValueError("hidden, n_factors and n_portfolios must be positive")


#: Sizes per profile. ``smoke``: CI. ``cpu``: with one torch thread on a shared 2-core CPU a DJ30 fit
#: took 3 min (about 26 s per epoch) and one SP500 epoch 3.1 to 3.4 min with validation, so the
#: 12-epoch cap stays within the hour. ``paper``: the STORM authors' FactorVAE configuration, for GPUs.
SIZES: dict[str, dict] = {
    "smoke": dict(hidden=16, n_factors=4, n_portfolios=8, max_train_stocks=64),
    "cpu": dict(hidden=64, n_factors=16, n_portfolios=32, max_train_stocks=96),
    "paper": dict(hidden=128, n_factors=8, n_portfolios=10, max_train_stocks=None),
}

#: Training settings per profile that differ from the profile's shared :class:`TrainConfig`.
TRAIN: dict[str, dict] = {
    "smoke": {},
    "cpu": dict(max_epochs=12, patience=4),
    "paper": {},
}


# --------------------------------------------------------------------------- building blocks
# (shared with :mod:`storm_lib.models.hirevae`)


def gaussian_head(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 2) -> mu, sigma = Softplus(.) + SIGMA_MIN."""
    return out[..., 0], F.softplus(out[..., 1]) + SIGMA_MIN


def gaussian_kl(mu_q, sigma_q, mu_p, sigma_p):
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)), elementwise."""
    return torch.log(sigma_p / sigma_q) + (sigma_q.pow(2) + (mu_q - mu_p).pow(2)) / (2 * sigma_p.pow(2)) - 0.5


def gaussian_nll(y, mu, sigma):
    """-log N(y | mu, sigma^2), elementwise."""
    return 0.5 * math.log(2 * math.pi) + torch.log(sigma) + 0.5 * ((y - mu) / sigma).pow(2)


def masked_softmax(logits: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` restricted to ``valid`` entries (all-invalid slices give zeros)."""
    logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=dim) * valid.to(logits.dtype)


def subsample_stocks(n_stocks: int, limit: int | None, device) -> torch.Tensor | None:
    """Sorted indices of a random subset of ``limit`` stock columns (torch's seeded RNG), or None."""
    if limit is None or n_stocks <= limit:
        return None
    return torch.randperm(n_stocks)[:limit].sort().values.to(device)


def scatter_stocks(values: torch.Tensor, idx: torch.Tensor | None, n_stocks: int) -> torch.Tensor:
    """(B, n) values of the subset ``idx`` back to (B, N) columns, zeros elsewhere."""
    if idx is None:
        return values
    out = values.new_zeros(values.shape[0], n_stocks)
    out[:, idx] = values
    return out


class FeatureExtractor(nn.Module):
    """phi_feat: per-day Linear + LeakyReLU, then a GRU over the window; e_i = last hidden state."""

    def __init__(self, n_features: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(n_features, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, W, N, F) -> e (B, N, H) and the per-day projections h_proj (B, W, N, H)."""
        b, w, n, f = x.shape
        h_proj = F.leaky_relu(self.proj(x))                                   # (B, W, N, H)
        seq = h_proj.permute(0, 2, 1, 3).reshape(b * n, w, -1)               # (B*N, W, H)
        _, h_last = self.gru(seq)
        return self.drop(h_last[-1].reshape(b, n, -1)), h_proj


class FactorEncoder(nn.Module):
    """phi_enc (posterior): portfolio layer over valid stocks, portfolio returns, mapping layer."""

    def __init__(self, hidden: int, n_portfolios: int, n_factors: int):
        super().__init__()
        self.portfolio = nn.Linear(hidden, n_portfolios)
        self.mapping = nn.Linear(n_portfolios, 2 * n_factors)
        self.n_factors = n_factors

    def forward(self, e, y, y_valid):
        a = masked_softmax(self.portfolio(e), y_valid[..., None], dim=1)      # (B, N, M)
        y_p = torch.einsum("bnm,bn->bm", a, torch.where(y_valid, y, 0.0))    # (B, M)
        out = self.mapping(y_p).reshape(*y_p.shape[:-1], self.n_factors, 2)
        return gaussian_head(out)                                              # (B, K) each


class AlphaBeta(nn.Module):
    """phi_dec's alpha layer (mu_alpha, sigma_alpha per stock) and beta layer (N x K loadings),
    with ``n_heads`` parallel copies for regime-switching decoders (HireVAE); one copy = FactorVAE."""

    def __init__(self, hidden: int, n_factors: int, n_heads: int = 1):
        super().__init__()
        self.alpha_h = nn.Linear(hidden, hidden)
        self.alpha_out = nn.Linear(hidden, 2 * n_heads)
        self.beta = nn.Linear(hidden, n_factors * n_heads)
        self.n_heads, self.n_factors = n_heads, n_factors

    def forward(self, e, weights: torch.Tensor | None = None):
        """e (B, N, H) -> mu_alpha, sigma_alpha (B, N), beta (B, N, K); with ``weights`` (B, R) the
        R heads' outputs are blended with those weights."""
        b, n, _ = e.shape
        a = self.alpha_out(F.leaky_relu(self.alpha_h(e))).reshape(b, n, self.n_heads, 2)
        mu_a, sigma_a = gaussian_head(a)                                       # (B, N, R)
        beta = self.beta(e).reshape(b, n, self.n_heads, self.n_factors)       # (B, N, R, K)
        if self.n_heads == 1:
            return mu_a[..., 0], sigma_a[..., 0], beta[..., 0, :]
        w = weights[:, None, :]
        return (mu_a * w).sum(-1), (sigma_a * w).sum(-1), (beta * w[..., None]).sum(2)


def decode(mu_a, sigma_a, beta, mu_z, sigma_z):
    """y_hat ~ N(mu_a + beta mu_z, sigma_a^2 + beta^2 sigma_z^2): returns mean and std (B, N)."""
    mu = mu_a + torch.einsum("bnk,bk->bn", beta, mu_z)
    var = sigma_a.pow(2) + torch.einsum("bnk,bk->bn", beta.pow(2), sigma_z.pow(2))
    return mu, var.sqrt()


class FactorPredictor(nn.Module):
    """phi_pred (prior): K single-query attention heads with ReLU-normalised cosine weights over the
    valid stocks of one sample, then a shared distribution network -> mu_prior, sigma_prior (B, K)."""

    def __init__(self, hidden: int, n_factors: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_factors, hidden) / math.sqrt(hidden))
        self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.h = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 2)

    def forward(self, e, valid):
        k = F.normalize(self.key(e), dim=-1)                                  # (B, N, H)
        q = F.normalize(self.query, dim=-1)                                   # (K, H)
        att = F.relu(torch.einsum("kh,bnh->bkn", q, k)) * valid[:, None, :].to(e.dtype)
        att = att / (att.sum(-1, keepdim=True) + 1e-6)                        # (B, K, N)
        h_multi = att @ self.value(e)                                         # (B, K, H)
        return gaussian_head(self.out(F.leaky_relu(self.h(h_multi))))        # (B, K) each


def reduce_kl(kl: torch.Tensor, how: str) -> torch.Tensor:
    """(B, K) elementwise KL -> (B,) per sample, summed or averaged over the latent dimensions."""
    return kl.sum(-1) if how == "sum" else kl.mean(-1)


def masked_day_mean(values: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean over valid stocks (B,), and which samples have any valid stock (B,)."""
    n = valid.sum(-1)
    return (values * valid).sum(-1) / n.clamp_min(1), n > 0


def batch_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of (B,) ``values`` over samples ``keep`` (0 when none)."""
    return (values * keep).sum() / keep.sum().clamp_min(1)


# --------------------------------------------------------------------------- the network


class FactorVAENet(nn.Module):
    """FactorVAE's network; ``forward(x, mask, y=None, sample=False)`` -> :class:`ModelOutput`."""

    def __init__(self, cfg: FactorVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.extractor = FeatureExtractor(cfg.n_features, cfg.hidden, cfg.dropout)
        self.encoder = FactorEncoder(cfg.hidden, cfg.n_portfolios, cfg.n_factors)
        self.decoder = AlphaBeta(cfg.hidden, cfg.n_factors)
        self.predictor = FactorPredictor(cfg.hidden, cfg.n_factors)

    def forward(self, x, mask, y=None, sample: bool = False) -> ModelOutput:
        """x (B, W, N, F), mask (B, N) valid stocks, y (B, N) z-scored next-day returns (NaN unknown)."""
        n_all = x.shape[2]
        mask = mask.bool()
        train_step = self.training and y is not None
        idx = subsample_stocks(n_all, self.cfg.max_train_stocks, x.device) if train_step else None
        if idx is not None:
            x, mask, y = x[:, :, idx], mask[:, idx], y[:, idx]
        x = torch.where(mask[:, None, :, None], torch.nan_to_num(x), 0.0)

        e, _ = self.extractor(x)
        mu_a, sigma_a, beta = self.decoder(e)
        mu_prior, sigma_prior = self.predictor(e, mask)
        pred, pred_std = decode(mu_a, sigma_a, beta, mu_prior, sigma_prior)
        if sample:
            pred = pred + pred_std * torch.randn_like(pred)

        losses = {}
        if y is not None:
            y_valid = mask & torch.isfinite(y)
            mu_post, sigma_post = self.encoder(e, y, y_valid)
            mu, sigma = decode(mu_a, sigma_a, beta, mu_post, sigma_post)
            nll, keep = masked_day_mean(gaussian_nll(torch.where(y_valid, y, 0.0), mu, sigma), y_valid)
            kl = reduce_kl(gaussian_kl(mu_post, sigma_post, mu_prior, sigma_prior), self.cfg.kl_reduction)
            losses = {"nll": batch_mean(nll, keep), "kl": batch_mean(kl, keep)}
            loss = losses["nll"] + self.cfg.gamma * losses["kl"]
        else:
            loss = None
        pred = torch.where(mask, pred, 0.0)
        return ModelOutput(scatter_stocks(pred, idx, n_all), losses, loss,
                           {"pred_std": scatter_stocks(pred_std.detach(), idx, n_all)})


# --------------------------------------------------------------------------- the model


def split_overrides(config_cls, overrides: dict) -> tuple[dict, dict]:
    """Split keyword overrides into network-config fields and training settings."""
    names = {f.name for f in fields(config_cls)}
    return ({k: v for k, v in overrides.items() if k in names},
            {k: v for k, v in overrides.items() if k not in names})


class FactorVAE(TorchReturnModel):
    """FactorVAE (Duan et al., AAAI 2022) with the package's fit / predict interface.

    ``FactorVAE(profile="cpu", seed=0, device=None, run_dir=None, progress=True, **overrides)``:
    ``overrides`` are :class:`FactorVAEConfig` fields (``hidden``, ``n_factors``, ``n_portfolios``,
    ``gamma``, ``kl_reduction``, ``dropout``, ``max_train_stocks``) or :class:`~storm_lib.profiles.TrainConfig`
    fields (``lr``, ``max_epochs``, ``patience``, ...). Sizes default to :data:`SIZES` of the profile.
    """

    name = "factorvae"
    config_cls = FactorVAEConfig
    sizes = SIZES
    train_defaults = TRAIN

    def __init__(self, profile: str | Profile = "cpu", seed: int = 0, device: str | None = None,
                 run_dir=None, progress: bool = True, **overrides):
        prof = get_profile(profile)
        net_kw, train_kw = split_overrides(self.config_cls, overrides)
        super().__init__(prof, seed=seed, device=device, run_dir=run_dir, progress=progress,
                         **{**self.train_defaults.get(prof.name, {}), **train_kw})
        self.config = self.config_cls(**{**self.sizes.get(prof.name, {}), **net_kw})

    @classmethod
    def option_keys(cls) -> set[str]:
        """Training overrides plus the fields of :attr:`config_cls` (``n_features`` comes from the panel)."""
        return super().option_keys() | ({f.name for f in fields(cls.config_cls)} - {"n_features"})

    def net_config(self, panel: Panel):
        return replace(self.config, n_features=panel.shape[2])

    def build_net(self, panel: Panel) -> nn.Module:
        return FactorVAENet(self.net_config(panel))

    def _meta(self) -> dict:
        return {**super()._meta(), "config": asdict(self.config)}

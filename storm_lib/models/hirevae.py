"""HireVAE (Wei, Rao, Dai, Lin; IJCAI 2023, pp. 4903-4911, doi 10.24963/ijcai.2023/545, arXiv 2306.02848):
an online and adaptive factor model on a hierarchical, regime-switching VAE.

What the paper specifies (abstract, introduction and its summary; reference/anchors.md §7):

* a **hierarchical latent space**: a market-level latent variable, inferred from point-in-time market
  information, on which the stock-level latent factors depend;
* a **market-level VAE**: a posterior (regime extractor, training only) and a prior (regime
  predictor) of the market latent, so that at prediction time the regime is identified from
  historical market information only ("online");
* the market latent is projected to a **one-dimensional regime score**; regime centres are kept
  consistent by a **linear stabilisation** of the centres across training, and **regime-specific
  decoders** map the stock-level factors to returns;
* the stock level is a **FactorVAE** (Duan et al. 2022): GRU feature extractor, portfolio-layer
  factor encoder (posterior), alpha/beta factor decoder, attention factor predictor (prior);
* end-to-end training on the ELBO (return likelihood + KL terms), prediction from the priors.

What we had to assume (no official code; an unofficial implementation exists, its repository was
not identified, and the STORM authors' copy is an unfinished stub, reference/official-code.md §9).
All choices are ours and configurable through :class:`HireVAEConfig`:

1. **Market features, computed inside the window from the stocks' own inputs** (no index data):
   for every day d of the W-day window, over the valid stocks, the cross-sectional mean and standard
   deviation of each input feature and the mean of the stock extractor's per-day projection
   LeakyReLU(W x + b) (a learned, DeepSets-style summary); Linear + LeakyReLU, then a GRU over the W
   days -> market state h_m. Unofficial HireVAE code uses index-level relative value, realised
   volatility and cumulative returns over 20-80-day windows; the GRU can learn such multi-horizon
   summaries, and with cross-sectionally normalised inputs the dispersion and shape statistics carry
   most of the market information that is left.
2. **Market posterior** q(m | h_m, y) (training only): the training target is the per-day
   cross-sectional z-score of returns, so the day's mean return is 0 by construction and cannot be
   shown to the encoder; instead it sees the returns of ``n_market_portfolios`` portfolios
   (softmax over the valid stocks of Linear(e_i), as FactorVAE's portfolio layer) together with h_m;
   an MLP gives mean and Softplus std of the ``market_dim``-dimensional latent m.
   **Market prior** p(m | h_m): an MLP of h_m only.
3. **Regimes**: score s = w . m (linear, no bias). ``n_regimes`` centres c_1 <= ... <= c_R are buffers:
   on the first training step they are set to the batch quantiles of s at levels (r + 1/2)/R, then
   updated after every training step by c <- rho c + (1 - rho) q (``regime_momentum`` rho, the
   "linear stabilisation"; quantiles are sorted, so a regime keeps its identity). Soft assignment
   pi_r = softmax_r(-(s - c_r)^2 / tau) (``regime_temperature`` tau), differentiable in s; the
   paper's hard switch is the limit tau -> 0. Centres never change outside training.
4. **Regime-specific decoders**: R alpha/beta heads (FactorVAE's alpha and beta layers, sharing the
   alpha layer's hidden layer) whose outputs are blended with pi (exactly one decoder when pi is
   one-hot).
5. **Hierarchy**: the stock embeddings are modulated by the market latent (FiLM,
   e'_i = e_i (1 + g(m)) + b(m), g and b linear and zero-initialised, so training starts from a plain
   FactorVAE); the stock-level posterior (portfolio layer on e'), prior (attention on e') and decoder
   all read e', so the stock factors are conditioned on the regime latent.
6. **Training** uses one reparameterised draw of m from its posterior for the whole stock level;
   loss = ``nll`` + ``gamma`` ``kl`` (stock factors, given that m) + ``gamma_market`` ``kl_market``
   (KL(q(m) || p(m)), summed over the market latent's dimensions unless ``kl_reduction="mean"``).
7. **Prediction** (eval): m = prior mean, regime weights from it, stock factors = prior mean,
   pred = mu_alpha + beta mu_prior; ``sample=True`` draws m and the return from the priors. Labels,
   when given in eval, only produce the loss terms, never the prediction.
8. Masking, per-sample independence, the training-only stock subsample (``max_train_stocks``,
   which also subsamples the stocks the market features are computed from) and the label
   normalisation are as in :mod:`storm_lib.models.factorvae`. Sizes per profile in :data:`SIZES`
   (``paper`` = the FactorVAE ``paper`` sizes plus our market sizes: the HireVAE paper's own
   hyper-parameters were not available to us).

Observed on DJ30 (``cpu`` profile, seed 0): ``kl_market`` falls to ~1e-5 within two epochs, i.e. the
market posterior collapses onto its prior. The stock-level posterior already sees the returns, so
the market posterior adds little to the likelihood; the market level then acts as a deterministic,
label-free conditioning (FiLM and regime weights from the prior mean of m).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..panel import Panel
from .base import ModelOutput
from .factorvae import (
    AlphaBeta,
    FactorEncoder,
    FactorPredictor,
    FactorVAE,
    FactorVAEConfig,
    FeatureExtractor,
    batch_mean,
    decode,
    gaussian_head,
    gaussian_kl,
    gaussian_nll,
    masked_day_mean,
    masked_softmax,
    reduce_kl,
    scatter_stocks,
    subsample_stocks,
)


@dataclass(frozen=True)
class HireVAEConfig(FactorVAEConfig):
    """FactorVAE's sizes plus the market level (defaults = the ``cpu`` profile)."""

    market_hidden: int = 32           # width of the market feature extractor (GRU) and market MLPs
    market_dim: int = 8               # dimension of the market latent m
    n_market_portfolios: int = 16     # portfolios the market posterior sees
    n_regimes: int = 3                # R regime centres / regime-specific decoders
    regime_momentum: float = 0.99     # rho of the centres' linear stabilisation
    regime_temperature: float = 1.0   # tau of the soft regime assignment
    gamma_market: float = 1.0         # weight of KL(q(m) || p(m))

    def __post_init__(self):
        super().__post_init__()
        if self.n_regimes < 1 or self.market_dim < 1 or self.market_hidden < 1 or self.n_market_portfolios < 1:
            raise ValueError("market sizes and n_regimes must be positive")
        if not 0.0 <= self.regime_momentum < 1.0:
            raise ValueError("regime_momentum must lie in [0, 1)")


SIZES: dict[str, dict] = {
    "smoke": dict(hidden=16, n_factors=4, n_portfolios=8, max_train_stocks=64,
                  market_hidden=8, market_dim=4, n_market_portfolios=4, n_regimes=3),
    "cpu": dict(hidden=64, n_factors=16, n_portfolios=32, max_train_stocks=96,
                market_hidden=32, market_dim=8, n_market_portfolios=16, n_regimes=3),
    "paper": dict(hidden=128, n_factors=8, n_portfolios=10, max_train_stocks=None,
                  market_hidden=64, market_dim=8, n_market_portfolios=10, n_regimes=3),
}

TRAIN: dict[str, dict] = {
    "smoke": {},
    "cpu": dict(max_epochs=12, patience=4),
    "paper": {},
}


class MLP2(nn.Module):
    """Linear -> LeakyReLU -> Linear."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.l1, self.l2 = nn.Linear(d_in, d_hidden), nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.l2(F.leaky_relu(self.l1(x)))


class MarketExtractor(nn.Module):
    """Market state h_m from the window: per-day cross-sectional mean and std of the inputs and mean
    of the stock projections over valid stocks, Linear + LeakyReLU, GRU over the W days."""

    def __init__(self, n_features: int, hidden: int, market_hidden: int):
        super().__init__()
        self.proj = nn.Linear(2 * n_features + hidden, market_hidden)
        self.gru = nn.GRU(market_hidden, market_hidden, batch_first=True)

    def forward(self, x, h_proj, h0, mask):
        """x (B, W, N, F) with invalid stocks already zeroed, h_proj (B, W, N, H) the stock
        extractor's projections, h0 (H,) its projection of a zero input, mask (B, N)."""
        w = mask.to(x.dtype)                                                  # (B, N)
        n = w.sum(1).clamp_min(1.0)[:, None, None]                            # (B, 1, 1)
        mean = x.sum(2) / n                                                   # (B, W, F)
        sq = torch.linalg.vector_norm(x, dim=2).pow(2) / n                    # no (B, W, N, F) temporary
        std = (sq - mean.pow(2)).clamp_min(0.0).add(1e-6).sqrt()
        # mean of h_proj over valid stocks: invalid stocks have x = 0, hence h_proj = LeakyReLU(bias)
        # (``h0``); subtracting their share from the plain sum avoids a (B, W, N, H) temporary
        n_invalid = (mask.shape[1] - w.sum(1))[:, None, None]
        hp = (h_proj.sum(2) - n_invalid * h0) / n                             # (B, W, H)
        u = F.leaky_relu(self.proj(torch.cat([mean, std, hp], -1)))
        _, h = self.gru(u)
        return h[-1]                                                           # (B, Hm)


class MarketEncoder(nn.Module):
    """q(m | h_m, y): market portfolios' returns (portfolio layer over valid stocks) and h_m -> m."""

    def __init__(self, cfg: HireVAEConfig):
        super().__init__()
        self.portfolio = nn.Linear(cfg.hidden, cfg.n_market_portfolios)
        self.mlp = MLP2(cfg.market_hidden + cfg.n_market_portfolios, cfg.market_hidden, 2 * cfg.market_dim)
        self.d = cfg.market_dim

    def forward(self, e, h_m, y, y_valid):
        a = masked_softmax(self.portfolio(e), y_valid[..., None], dim=1)      # (B, N, P)
        y_p = torch.einsum("bnp,bn->bp", a, torch.where(y_valid, y, 0.0))
        return gaussian_head(self.mlp(torch.cat([h_m, y_p], -1)).reshape(-1, self.d, 2))


class MarketPredictor(nn.Module):
    """p(m | h_m): no labels."""

    def __init__(self, cfg: HireVAEConfig):
        super().__init__()
        self.mlp = MLP2(cfg.market_hidden, cfg.market_hidden, 2 * cfg.market_dim)
        self.d = cfg.market_dim

    def forward(self, h_m):
        return gaussian_head(self.mlp(h_m).reshape(-1, self.d, 2))


class Regimes(nn.Module):
    """1-D regime score s = w . m, R sorted centres stabilised by momentum, soft assignment."""

    def __init__(self, cfg: HireVAEConfig):
        super().__init__()
        self.score = nn.Linear(cfg.market_dim, 1, bias=False)
        self.momentum, self.tau = cfg.regime_momentum, cfg.regime_temperature
        r = cfg.n_regimes
        self.register_buffer("centers", torch.linspace(-1.0, 1.0, r) if r > 1 else torch.zeros(1))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("levels", (torch.arange(r, dtype=torch.float32) + 0.5) / r, persistent=False)

    def weights(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.score(m)[..., 0]                                             # (B,)
        d2 = (s[:, None] - self.centers.clone()[None, :]).pow(2)
        return torch.softmax(-d2 / self.tau, dim=-1), s

    @torch.no_grad()
    def update(self, s: torch.Tensor) -> None:
        """Training only: move the centres towards this batch's score quantiles."""
        if s.numel() == 0:
            return
        q = torch.quantile(s.detach().float(), self.levels.to(s.device)).to(self.centers.dtype)
        if int(self.n_updates) == 0:
            self.centers.copy_(q)
        else:
            self.centers.mul_(self.momentum).add_((1.0 - self.momentum) * q)
        self.n_updates += 1


class HireVAENet(nn.Module):
    """HireVAE's network; ``forward(x, mask, y=None, sample=False)`` -> :class:`ModelOutput`."""

    def __init__(self, cfg: HireVAEConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.extractor = FeatureExtractor(cfg.n_features, h, cfg.dropout)
        self.market = MarketExtractor(cfg.n_features, h, cfg.market_hidden)
        self.market_encoder = MarketEncoder(cfg)
        self.market_predictor = MarketPredictor(cfg)
        self.regimes = Regimes(cfg)
        self.film = nn.Linear(cfg.market_dim, 2 * h)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.encoder = FactorEncoder(h, cfg.n_portfolios, cfg.n_factors)
        self.predictor = FactorPredictor(h, cfg.n_factors)
        self.decoder = AlphaBeta(h, cfg.n_factors, n_heads=cfg.n_regimes)

    def _condition(self, e, m):
        g, b = self.film(m)[:, None, :].chunk(2, dim=-1)
        return e * (1.0 + g) + b

    def _stock_prior(self, e, m, mask):
        """Prior path given the market latent m: (mu_a, sigma_a, beta, mu_z, sigma_z, e', regime weights, score)."""
        ec = self._condition(e, m)
        pi, s = self.regimes.weights(m)
        mu_a, sigma_a, beta = self.decoder(ec, pi)
        mu_z, sigma_z = self.predictor(ec, mask)
        return mu_a, sigma_a, beta, mu_z, sigma_z, ec, pi, s

    def forward(self, x, mask, y=None, sample: bool = False) -> ModelOutput:
        """x (B, W, N, F), mask (B, N) valid stocks, y (B, N) z-scored next-day returns (NaN unknown)."""
        cfg = self.cfg
        n_all = x.shape[2]
        mask = mask.bool()
        train_step = self.training and y is not None
        idx = subsample_stocks(n_all, cfg.max_train_stocks, x.device) if train_step else None
        if idx is not None:
            x, mask, y = x[:, :, idx], mask[:, idx], y[:, idx]
        x = torch.where(mask[:, None, :, None], torch.nan_to_num(x), 0.0)

        e, h_proj = self.extractor(x)
        h0 = F.leaky_relu(self.extractor.proj.bias)
        h_m = self.market(x, h_proj, h0, mask)
        mu_mp, sigma_mp = self.market_predictor(h_m)

        losses, loss, m_post = {}, None, None
        if y is not None:
            y_valid = mask & torch.isfinite(y)
            mu_mq, sigma_mq = self.market_encoder(e, h_m, y, y_valid)
            m_post = mu_mq + sigma_mq * torch.randn_like(mu_mq) if self.training else mu_mq
            if self.training and int(self.regimes.n_updates) == 0:
                self.regimes.update(self.regimes.score(m_post)[..., 0])   # initialise the centres

        # prior path: the prediction (labels never enter it)
        m_prior = mu_mp + sigma_mp * torch.randn_like(mu_mp) if sample else mu_mp
        mu_a, sigma_a, beta, mu_z, sigma_z, _, pi, s = self._stock_prior(e, m_prior, mask)
        pred, pred_std = decode(mu_a, sigma_a, beta, mu_z, sigma_z)
        if sample:
            pred = pred + pred_std * torch.randn_like(pred)

        if y is not None:
            mu_a_q, sigma_a_q, beta_q, mu_zp, sigma_zp, ec, _, s_post = self._stock_prior(e, m_post, mask)
            mu_zq, sigma_zq = self.encoder(ec, y, y_valid)
            mu, sigma = decode(mu_a_q, sigma_a_q, beta_q, mu_zq, sigma_zq)
            nll, keep = masked_day_mean(gaussian_nll(torch.where(y_valid, y, 0.0), mu, sigma), y_valid)
            kl = reduce_kl(gaussian_kl(mu_zq, sigma_zq, mu_zp, sigma_zp), cfg.kl_reduction)
            kl_m = reduce_kl(gaussian_kl(mu_mq, sigma_mq, mu_mp, sigma_mp), cfg.kl_reduction)
            losses = {"nll": batch_mean(nll, keep), "kl": batch_mean(kl, keep), "kl_market": batch_mean(kl_m, keep)}
            loss = losses["nll"] + cfg.gamma * losses["kl"] + cfg.gamma_market * losses["kl_market"]
            if self.training:
                self.regimes.update(s_post[keep])

        pred = torch.where(mask, pred, 0.0)
        extras = {"pred_std": scatter_stocks(pred_std.detach(), idx, n_all), "regime_weights": pi.detach(),
                  "regime_score": s.detach()}
        return ModelOutput(scatter_stocks(pred, idx, n_all), losses, loss, extras)


class HireVAE(FactorVAE):
    """HireVAE (Wei et al., IJCAI 2023) with the package's fit / predict interface.

    ``HireVAE(profile="cpu", seed=0, device=None, run_dir=None, progress=True, **overrides)``:
    ``overrides`` are :class:`HireVAEConfig` fields (FactorVAE's plus ``market_hidden``,
    ``market_dim``, ``n_market_portfolios``, ``n_regimes``, ``regime_momentum``,
    ``regime_temperature``, ``gamma_market``) or :class:`~storm_lib.profiles.TrainConfig` fields.
    """

    name = "hirevae"
    config_cls = HireVAEConfig
    sizes = SIZES
    train_defaults = TRAIN

    def build_net(self, panel: Panel) -> nn.Module:
        return HireVAENet(self.net_config(panel))

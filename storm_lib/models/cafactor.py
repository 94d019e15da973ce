"""CAFactor: the conditional autoencoder asset-pricing model of Gu, Kelly & Xiu (2021).

Gu, S., Kelly, B., Xiu, D. "Autoencoder asset pricing models", Journal of Econometrics 222(1), 2021.
The model (their eq. for the "CA" family) is

    r_{i,t+1} = beta(z_{i,t})' f_{t+1} + u_{i,t+1}

* **Beta network** on stock i's characteristics z_{i,t} (here the day's normalised features
  ``panel.values[t, i]``, the last row of the window): a feed-forward net (CA2: 32-16 hidden units,
  batch normalisation, ReLU) -> K loadings.
* **Factor network**: one linear layer on the P characteristic-managed portfolio returns
  x_{t+1} = (Z_t' Z_t + lambda_t I)^{-1} Z_t' r_{t+1} (Z_t: the valid stocks' characteristics, r: their
  per-day z-scored next-day returns) -> K factors f_{t+1}. GKX use the plain inverse; with 160
  characteristics and only 29 DJ30 stocks Z'Z is singular, so a small ridge
  lambda_t = ``ridge`` x trace(Z'Z) / P (default 1e-2, i.e. 1 % of the mean eigenvalue) keeps the solve
  stable (it tends to the minimum-norm solution as ridge -> 0).
* Loss: MSE of beta' f on the training labels (term ``mse``) + ``l1`` x sum |weights| (term ``l1``, raw
  sum of absolute weight-matrix entries of both networks); Adam(W) with weight decay 0, trained by
  the shared loop :func:`storm_lib.train.fit`.
* **Prediction** for day t (no future information): y_hat_{i,t+1} = beta(z_{i,t})' lambda with lambda the
  mean of the factor realisations f_s over the **training days only** (GKX's predictive model uses a
  running average of past factors; we fix it at the training-period mean). Because the factor network
  is linear, mean_s f_s = W_f xbar + b_f with xbar the mean managed-portfolio return over the training
  days, so lambda is exact for the current weights at every epoch. ``xbar`` is a buffer computed once
  in :meth:`CAFactorModel.fit` from training labels; validation labels only pick the epoch (early
  stopping on validation RankIC of the predictive score) and test labels are never read.

Inputs: GKX rank-normalise characteristics cross-sectionally to [-1, 1]; build the panel with
``normalization="cs_rank"`` for that. The default ``cs_zscore`` panel is a robust cross-sectional
z-score, a comparable day-local normalisation. Single model per seed (GKX average an ensemble of
seeds; average the score frames of several seeds for that).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import train as train_mod
from ..panel import Panel, Protocol, get_protocol
from .base import ModelOutput
from .lightgbm import day_features
from .sequence import SizedTorchModel, masked_mse

SIZES: dict[str, dict] = {
    "smoke": dict(n_factors=3, hidden=(16,), norm="batch", ridge=1e-2, l1=1e-5, dropout=0.0),
    "cpu": dict(n_factors=5, hidden=(32, 16), norm="batch", ridge=1e-2, l1=1e-5, dropout=0.0,
                train=dict(weight_decay=0.0, max_epochs=30, patience=5)),
    "paper": dict(n_factors=5, hidden=(32, 16), norm="batch", ridge=1e-2, l1=1e-5, dropout=0.0,
                  train=dict(weight_decay=0.0, lr=1e-3, max_epochs=200, patience=20)),
}


def managed_portfolios(z: torch.Tensor, r: torch.Tensor, mask: torch.Tensor, ridge: float = 1e-2) -> torch.Tensor:
    """x = (Z'Z + lambda I)^{-1} Z' r per day over the stocks with ``mask`` and a finite r.

    z (B, N, P), r (B, N), mask (B, N) -> (B, P); lambda = ridge * trace(Z'Z) / P (+1e-8)."""
    ok = mask & torch.isfinite(r)
    Z = torch.where(ok[..., None], z, torch.zeros_like(z)).double()
    rr = torch.where(ok, r, torch.zeros_like(r)).double()
    G = Z.transpose(1, 2) @ Z                                             # (B, P, P)
    P = G.shape[-1]
    lam = ridge * torch.diagonal(G, dim1=1, dim2=2).sum(-1) / P + 1e-8  # (B,)
    A = G + lam[:, None, None] * torch.eye(P, dtype=G.dtype, device=G.device)
    # A is symmetric positive definite: Cholesky (batched LU solve fails inside MKL with 2 threads in
    # this torch build: "Pivots given to lu_solve must all be >= 1")
    x = torch.cholesky_solve(Z.transpose(1, 2) @ rr[..., None], torch.linalg.cholesky(A)).squeeze(-1)
    return x.to(z.dtype)


class CAFactorNet(nn.Module):
    """Beta network x factor network; predicts with the training-mean factor in eval / without y."""

    def __init__(self, n_features: int, n_factors: int = 5, hidden=(32, 16), norm: str = "batch",
                 ridge: float = 1e-2, l1: float = 1e-5, dropout: float = 0.0):
        super().__init__()
        layers, width = [], n_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(h))
            elif norm == "layer":
                layers.append(nn.LayerNorm(h))
            elif norm != "none":
                raise ValueError(f"unknown norm {norm!r}; use 'batch', 'layer' or 'none'")
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_factors))
        self.beta = nn.Sequential(*layers)
        self.factor = nn.Linear(n_features, n_factors)
        self.ridge, self.l1 = ridge, l1
        # mean managed-portfolio return over the training days (set by CAFactorModel.fit)
        self.register_buffer("xbar", torch.zeros(n_features))

    def betas(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, K) loadings; the network runs on the valid rows only (batch norm over them)."""
        B, N, _ = z.shape
        out = z.new_zeros(B * N, self.factor.out_features)
        idx = mask.flatten().nonzero().squeeze(1)
        if len(idx):
            out = out.index_put((idx,), self.beta(z.reshape(B * N, -1)[idx]))
        return out.view(B, N, -1)

    def expected_factor(self) -> torch.Tensor:
        """lambda = mean of f_s over the training days = W_f xbar + b_f (the factor layer is linear)."""
        return self.factor(self.xbar)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor | None = None,
                sample: bool = False) -> ModelOutput:
        z = x[:, -1]                                                       # (B, N, P): day t characteristics
        beta = self.betas(z, mask)
        if y is None:
            return ModelOutput(beta @ self.expected_factor())
        f = self.factor(managed_portfolios(z, y, mask, self.ridge))        # (B, K) realised factors
        fit = torch.einsum("bnk,bk->bn", beta, f)
        mse = masked_mse(fit, y, mask & torch.isfinite(y))
        l1 = sum(m.weight.abs().sum() for m in self.modules() if isinstance(m, nn.Linear))
        pred = beta @ self.expected_factor()
        return ModelOutput(pred, {"mse": mse, "l1": l1}, mse + self.l1 * l1, {"fit": fit, "factors": f})


class CAFactorModel(SizedTorchModel):
    """Gu-Kelly-Xiu conditional autoencoder (CA2 by default) with a training-mean factor premium.

    ``CAFactorModel(profile="cpu", seed=0, device=None, run_dir=None, progress=True, **kw)``; ``kw``:
    sizes (``n_factors``, ``hidden``, ``norm``, ``ridge``, ``l1``, ``dropout``) or
    :class:`~storm_lib.profiles.TrainConfig` fields. After :meth:`fit`: ``xbar_`` (mean managed-portfolio
    return over the training days) and ``lambda_`` (the expected factor used to predict).
    """

    name = "cafactor"
    SIZES = SIZES

    def fit(self, panel: Panel, protocol: str | Protocol = "clean", resume: bool = False) -> "CAFactorModel":
        self._check_panel(panel)
        self.xbar_ = self.training_mean_portfolios(panel, protocol)
        super().fit(panel, protocol, resume)
        with torch.no_grad():
            self.lambda_ = self.net.expected_factor().cpu().numpy()
        return self

    def training_mean_portfolios(self, panel: Panel, protocol: str | Protocol) -> torch.Tensor:
        """Mean over the training days of x_{t+1} = (Z'Z + lambda I)^{-1} Z' r_{t+1} (train labels only)."""
        cfg = self.train_cfg
        days = train_mod.trainable_days(panel, panel.split(get_protocol(protocol), "train"), cfg.min_valid_stocks)
        total = torch.zeros(panel.shape[2], dtype=torch.float64)
        for i in range(0, len(days), 128):
            t = days[i:i + 128]
            y = train_mod.normalise_labels(panel.labels[t], panel.valid[t], cfg.label_norm, cfg.min_valid_stocks)
            xp = managed_portfolios(torch.from_numpy(day_features(panel, t)).double(), torch.from_numpy(y).double(),
                                    torch.from_numpy(panel.valid[t]), self.sizes["ridge"])
            total += xp.sum(0)
        return (total / max(len(days), 1)).float()

    def build_net(self, panel: Panel) -> nn.Module:
        net = CAFactorNet(panel.shape[2], **self.sizes)
        if getattr(self, "xbar_", None) is not None:
            net.xbar.copy_(self.xbar_)
        return net

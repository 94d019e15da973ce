"""Per-stock sequence baselines over the feature window: LSTM and Transformer (Qlib benchmark style).

Both read the W-day window of each stock on its own, (W, F) -> score, and are trained by the shared
loop :func:`storm_lib.train.fit` (masked MSE on the per-day z-scored label, early stopping and model
selection on validation RankIC, deterministic per seed on CPU).

* :class:`LSTMModel` follows Qlib's ``pytorch_lstm`` benchmark model: ``nn.LSTM(F, hidden, layers,
  dropout)`` over the window, the last step's hidden state -> ``Linear(hidden, 1)``.
* :class:`TransformerModel` follows Qlib's ``pytorch_transformer``: ``Linear(F, d_model)`` feature
  layer, sinusoidal positional encoding (Vaswani et al. 2017), a ``TransformerEncoder`` (post-norm,
  ReLU), the last step -> ``Linear(d_model, 1)``. Qlib: d_model 64, 2 heads, 2 layers, and torch's
  default feed-forward width 2048 (kept at ``paper``); ``cpu`` uses 128, 2 x d_model, for speed.

Network contract: ``net(x (B, W, N, F), mask (B, N), y (B, N) | None)`` -> ``ModelOutput`` with
``pred`` (B, N) and the loss term ``mse``. Only valid stocks are run (invalid ones score 0, masked
later). **Stock subsampling** (speed on SP500): in training, when a batch holds more than
``max_train_seqs`` valid (day, stock) sequences with a known label, a random subset of that size is
used for the step (drawn from torch's seeded RNG, so still deterministic). DJ30 batches (16 days x 29
stocks = 464) are never subsampled at the ``cpu`` size; SP500 (16 x 408 = 6,528) is. Evaluation
runs every valid stock, in chunks of ``eval_chunk`` sequences.

Sizes live in :data:`LSTM_SIZES` / :data:`TRANSFORMER_SIZES`, keyed by profile; each entry may carry
``train`` overrides of the profile's :class:`~storm_lib.profiles.TrainConfig` (the epoch budget that
keeps a DJ30 fit under 10 minutes on 2 cores). Constructor keywords that name a size (``hidden``,
``d_model``...) override it; every other keyword overrides the training config.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..panel import Panel
from ..profiles import Profile, get_profile
from .base import ModelOutput, TorchReturnModel

LSTM_SIZES: dict[str, dict] = {
    "smoke": dict(hidden=16, layers=1, dropout=0.0, max_train_seqs=256, eval_chunk=4096),
    "cpu": dict(hidden=64, layers=2, dropout=0.1, max_train_seqs=512, eval_chunk=4096,
                train=dict(max_epochs=12, patience=3, steps_per_epoch=60)),
    "paper": dict(hidden=64, layers=2, dropout=0.0, max_train_seqs=None, eval_chunk=8192,
                  train=dict(lr=1e-3, max_epochs=200, patience=20)),
}

TRANSFORMER_SIZES: dict[str, dict] = {
    "smoke": dict(d_model=16, n_heads=2, layers=1, ffn=32, dropout=0.0, max_train_seqs=256, eval_chunk=4096),
    "cpu": dict(d_model=64, n_heads=2, layers=2, ffn=128, dropout=0.1, max_train_seqs=512, eval_chunk=2048,
                train=dict(max_epochs=10, patience=3, steps_per_epoch=50)),
    "paper": dict(d_model=64, n_heads=2, layers=2, ffn=2048, dropout=0.0, max_train_seqs=None, eval_chunk=4096,
                  train=dict(lr=1e-4, max_epochs=200, patience=20)),
}


def split_kwargs(table: dict[str, dict], profile: str | Profile, kw: dict) -> tuple[dict, dict]:
    """(sizes, train overrides): the profile's sizes updated by keywords naming a size; the profile's
    per-model ``train`` overrides updated by every other keyword."""
    name = get_profile(profile).name
    base = dict(table.get(name, table["cpu"]))
    train = dict(base.pop("train", {}))
    sizes = {k: kw.pop(k) if k in kw else v for k, v in base.items()}
    train.update(kw)
    return sizes, train


def masked_mse(pred: torch.Tensor, y: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries where ``ok``; 0 (with a gradient path) when none."""
    if not ok.any():
        return pred.sum() * 0.0
    return ((pred - torch.nan_to_num(y)) ** 2)[ok].mean()


class PerStockNet(nn.Module):
    """Runs ``encode`` ((M, W, F) -> (M,) scores) on every valid stock's window; MSE on y."""

    def __init__(self, max_train_seqs: int | None = None, eval_chunk: int = 4096):
        super().__init__()
        self.max_train_seqs, self.eval_chunk = max_train_seqs, eval_chunk

    def encode(self, seq: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor | None = None,
                sample: bool = False) -> ModelOutput:
        B, W, N, F = x.shape
        pred = x.new_zeros(B, N)
        use = mask if y is None else mask & torch.isfinite(y)
        idx = use.flatten().nonzero().squeeze(1)                           # flat (b * N + i) positions
        if y is not None and self.training and self.max_train_seqs and len(idx) > self.max_train_seqs:
            pick = torch.randperm(len(idx), device=idx.device)[: self.max_train_seqs]
            idx = idx[pick.sort().values]
        seqs = x.permute(0, 2, 1, 3).reshape(B * N, W, F)
        if self.training or len(idx) <= self.eval_chunk:
            out = self.encode(seqs[idx]) if len(idx) else x.new_zeros(0)
        else:
            out = torch.cat([self.encode(seqs[idx[i:i + self.eval_chunk]])
                             for i in range(0, len(idx), self.eval_chunk)])
        pred = pred.flatten().index_put((idx,), out).view(B, N)
        if y is None:
            return ModelOutput(pred)
        ok = torch.zeros(B * N, dtype=torch.bool, device=x.device)
        ok[idx] = True
        mse = masked_mse(pred, y, ok.view(B, N))
        return ModelOutput(pred, {"mse": mse}, mse)


class LSTMNet(PerStockNet):
    def __init__(self, n_features: int, hidden: int = 64, layers: int = 2, dropout: float = 0.0, **kw):
        super().__init__(**kw)
        self.rnn = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True,
                           dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(hidden, 1)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(seq)
        return self.head(h[:, -1]).squeeze(-1)


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """PE[pos, 2k] = sin(pos / 10000^(2k/d)), PE[pos, 2k+1] = cos(...) (Vaswani et al. 2017)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class TransformerNet(PerStockNet):
    def __init__(self, n_features: int, window: int, d_model: int = 64, n_heads: int = 4, layers: int = 2,
                 ffn: int = 256, dropout: float = 0.0, **kw):
        super().__init__(**kw)
        self.feature = nn.Linear(n_features, d_model)
        self.register_buffer("pe", sinusoidal_encoding(window, d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=ffn, dropout=dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 1)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.feature(seq) + self.pe[: seq.shape[1]])
        return self.head(h[:, -1]).squeeze(-1)


class SizedTorchModel(TorchReturnModel):
    """A TorchReturnModel whose network sizes come from a per-profile table."""

    SIZES: dict[str, dict] = {}

    def __init__(self, profile: str | Profile = "cpu", seed: int = 0, device: str | None = None,
                 run_dir=None, progress: bool = True, **kw):
        self.sizes, train = split_kwargs(self.SIZES, profile, dict(kw))
        super().__init__(profile=profile, seed=seed, device=device, run_dir=run_dir, progress=progress, **train)

    @classmethod
    def option_keys(cls) -> set[str]:
        """Training overrides plus the network sizes of :attr:`SIZES` (any profile)."""
        sizes = {k for table in cls.SIZES.values() for k in table if k != "train"}
        return super().option_keys() | sizes

    def _meta(self) -> dict:
        return {**super()._meta(), "sizes": dict(self.sizes)}


class LSTMModel(SizedTorchModel):
    """Qlib-style LSTM over each stock's W-day window.

    ``LSTMModel(profile="cpu", seed=0, device=None, run_dir=None, progress=True, **kw)``; ``kw``:
    sizes (``hidden``, ``layers``, ``dropout``, ``max_train_seqs``, ``eval_chunk``) or
    :class:`~storm_lib.profiles.TrainConfig` fields.
    """

    name = "lstm"
    SIZES = LSTM_SIZES

    def build_net(self, panel: Panel) -> nn.Module:
        return LSTMNet(panel.shape[2], **self.sizes)


class TransformerModel(SizedTorchModel):
    """Qlib-style Transformer encoder over each stock's W-day window.

    ``TransformerModel(profile="cpu", seed=0, device=None, run_dir=None, progress=True, **kw)``; ``kw``:
    sizes (``d_model``, ``n_heads``, ``layers``, ``ffn``, ``dropout``, ``max_train_seqs``,
    ``eval_chunk``) or :class:`~storm_lib.profiles.TrainConfig` fields.
    """

    name = "transformer"
    SIZES = TRANSFORMER_SIZES

    def build_net(self, panel: Panel) -> nn.Module:
        return TransformerNet(panel.shape[2], panel.window, **self.sizes)

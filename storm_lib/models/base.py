"""The one interface every return model implements (design note: "score frame").

``fit(panel, protocol)`` trains on the protocol's train split and selects on its validation split;
``predict(panel, t=None, split=None, protocol=None)`` returns a score frame: a DataFrame indexed by
date, columns = tickers, NaN where a stock is not valid. Nothing else crosses into evaluation.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import train as train_mod
from ..panel import Panel, Protocol, get_protocol
from ..profiles import Profile, TrainConfig, get_profile
from ..utils import atomic_write


@dataclass
class ModelOutput:
    """What a torch return network returns (the contract of :func:`storm_lib.train.fit`).

    ``pred`` (B, N) scores; ``losses`` the raw (unweighted) named terms, empty without labels;
    ``loss`` the weighted total that is minimised.
    """

    pred: torch.Tensor
    losses: dict = field(default_factory=dict)
    loss: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)


class ReturnModel(ABC):
    """fit / predict over a :class:`~storm_lib.panel.Panel`."""

    name: str = "model"

    @abstractmethod
    def fit(self, panel: Panel, protocol: str | Protocol = "clean") -> "ReturnModel": ...

    @abstractmethod
    def predict_array(self, panel: Panel, t: np.ndarray) -> np.ndarray:
        """Scores (len(t), N) for window ends ``t``."""

    def predict(self, panel: Panel, t: np.ndarray | None = None, *, split: str | None = None,
                protocol: str | Protocol | None = None) -> pd.DataFrame:
        """Score frame for window ends ``t``, or for ``split`` of ``protocol`` (default the fitted one)."""
        if t is None:
            if split is None:
                raise ValueError("give window ends t or a split name")
            proto = get_protocol(protocol or getattr(self, "protocol_", "clean"))
            t = panel.split(proto, split)
        t = np.asarray(t)
        scores = np.asarray(self.predict_array(panel, t), dtype=np.float64)
        return panel.frame(np.where(panel.valid[t], scores, np.nan), t)


class TorchReturnModel(ReturnModel):
    """A torch network trained by :func:`storm_lib.train.fit`. Subclasses build the network."""

    def __init__(self, profile: str | Profile = "cpu", seed: int = 0, device: str | None = None,
                 run_dir: str | os.PathLike | None = None, progress: bool = True, **train_overrides):
        self.profile = get_profile(profile)
        self.train_overrides = dict(train_overrides)
        self.train_cfg: TrainConfig = self.profile.with_train(**train_overrides).train
        self.seed, self.device, self.progress = seed, device, progress
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.net: torch.nn.Module | None = None
        self.history_: pd.DataFrame | None = None

    @abstractmethod
    def build_net(self, panel: Panel) -> torch.nn.Module:
        """A fresh network for this panel's shape (called after seeding)."""

    def _check_panel(self, panel: Panel) -> None:
        if panel.window != self.profile.window:
            raise ValueError(f"profile {self.profile.name!r} expects window {self.profile.window}, "
                             f"the panel has {panel.window}: build it with Panel.from_prices(..., window={self.profile.window})")

    def _prepare(self, panel: Panel, protocol) -> None:
        """Check the panel; resolve the training settings (large-universe overrides) and the protocol."""
        self._check_panel(panel)
        large = self.profile.large if panel.shape[1] > self.profile.large_n else {}
        self.train_cfg = self.profile.with_train(**{**large, **self.train_overrides}).train
        self.protocol_ = get_protocol(protocol)

    def fit(self, panel: Panel, protocol: str | Protocol = "clean", resume: bool = False) -> "TorchReturnModel":
        self._prepare(panel, protocol)
        train_mod.seed_everything(self.seed)
        self.net = self.build_net(panel)
        self.history_ = train_mod.fit(self.net, panel, self.protocol_, self.train_cfg, seed=self.seed,
                                      device=self.device, run_dir=self.run_dir, resume=resume,
                                      progress=self.progress)
        return self

    def predict_array(self, panel: Panel, t: np.ndarray, sample: bool = False) -> np.ndarray:
        if self.net is None:
            raise RuntimeError(f"{self.name}: call fit() or load() first")
        return train_mod.predict(self.net, panel, t, self.train_cfg.eval_batch_size, sample=sample,
                                 autocast=self.train_cfg.autocast)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Weights and the settings needed to rebuild the network."""
        if self.net is None:
            raise RuntimeError("nothing to save: fit() first")
        atomic_write(path, lambda tmp: torch.save({"state": self.net.state_dict(), "meta": self._meta()}, tmp))

    def load(self, path: str | os.PathLike, panel: Panel) -> "TorchReturnModel":
        ck = torch.load(path, map_location="cpu", weights_only=False)
        self.net = self.build_net(panel)
        self.net.load_state_dict(ck["state"])
        self.net.to(train_mod.pick_device(self.device))
        return self

    def restore(self, path: str | os.PathLike, panel: Panel, protocol: str | Protocol = "clean",
                history: pd.DataFrame | None = None) -> "TorchReturnModel":
        """The state :meth:`fit` on ``panel`` / ``protocol`` would leave, from the weights that :meth:`save`
        wrote after such a fit (and its ``history``): to evaluate one fit several ways without refitting."""
        self._prepare(panel, protocol)
        self.load(path, panel)
        self.history_ = history
        return self

    def _meta(self) -> dict:
        return {"name": self.name, "profile": self.profile.name, "seed": self.seed,
                "train": json.loads(json.dumps(self.train_cfg.__dict__, default=list))}

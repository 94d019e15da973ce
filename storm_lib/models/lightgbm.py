"""LightGBM on the day's features: the Qlib ``LightGBM (Alpha158)`` benchmark recipe.

One training row per (day t in the train split, valid stock i with a known label): features
``panel.values[t, i]`` (the day's normalised features, no window), target the per-day
cross-sectional z-score of the next-day return (Qlib's ``CSZScoreNorm`` on the label, via
:func:`storm_lib.train.normalise_labels`). Validation rows are built the same way from the
protocol's validation split; :func:`lightgbm.train` stops early on the validation l2 and the model
keeps the **best validation iteration** (model selection = ``best_iteration_``). Test labels are
never read.

Parameters: Qlib's benchmark config (``examples/benchmarks/LightGBM/workflow_config_lightgbm_Alpha158.yaml``:
loss mse, learning_rate 0.2, num_leaves 210, max_depth 8, colsample 0.888, subsample 0.879,
lambda_l1 205.7, lambda_l2 581.0, early stopping 50 rounds) was tuned for ~1.3 M CSI300 rows; the
``cpu`` profile scales it to DJ30's ~80 k rows (lower learning rate, fewer leaves, weaker L1/L2,
larger leaves). ``paper`` keeps Qlib's values. Every setting can be overridden through ``**params``
(any LightGBM parameter) or ``num_boost_round`` / ``early_stopping_rounds``.

Determinism: ``deterministic=True``, ``force_row_wise=True``, fixed ``num_threads`` and every
LightGBM seed derived from ``seed`` -> identical models for the same seed, data and thread count
(``num_threads`` = $STORM_NUM_THREADS, default 2).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import train as train_mod
from ..panel import Panel, Protocol, get_protocol
from ..utils import atomic_write
from ..profiles import Profile, get_profile
from .base import ReturnModel

_COMMON = dict(
    objective="regression", metric="l2", boosting_type="gbdt", feature_fraction=0.8, bagging_fraction=0.8,
    bagging_freq=1, deterministic=True, force_row_wise=True, num_threads=2, verbosity=-1,
)

#: per-profile LightGBM parameters; ``rounds`` / ``early_stop`` are the boosting budget.
SIZES: dict[str, dict] = {
    "smoke": dict(params=dict(learning_rate=0.2, num_leaves=15, max_depth=4, min_data_in_leaf=20,
                              lambda_l1=0.0, lambda_l2=1.0), rounds=30, early_stop=10),
    "cpu": dict(params=dict(learning_rate=0.05, num_leaves=64, max_depth=8, min_data_in_leaf=200,
                            lambda_l1=10.0, lambda_l2=100.0), rounds=1000, early_stop=50),
    "paper": dict(params=dict(learning_rate=0.2, num_leaves=210, max_depth=8, min_data_in_leaf=20,
                              feature_fraction=0.8879, bagging_fraction=0.8789,
                              lambda_l1=205.6999, lambda_l2=580.9768), rounds=1000, early_stop=50),
}


def day_features(panel: Panel, t: np.ndarray) -> np.ndarray:
    """(len(t), N, F) features of days t: ``panel.values[t]``, or the last row of each window for a
    ``window_zscore`` panel (the same input a window model sees on its last day)."""
    t = np.atleast_1d(np.asarray(t))
    if panel.normalization != "window_zscore":
        return panel.values[t]
    return np.concatenate([panel.windows(t[i:i + 16])[:, -1] for i in range(0, len(t), 16)])


def _rows(panel: Panel, t: np.ndarray, label_norm: str = "cs_zscore", min_stocks: int = 2, chunk: int = 128):
    """Feature rows (n, F) and targets (n,) of the valid stocks with a known (normalised) label on days
    t, rows ordered by day then stock (built in chunks of days to bound memory)."""
    y = train_mod.normalise_labels(panel.labels[t], panel.valid[t], label_norm, min_stocks)  # (B, N)
    ok = np.isfinite(y)
    x = np.concatenate([day_features(panel, t[i:i + chunk])[ok[i:i + chunk]] for i in range(0, len(t), chunk)])
    return np.ascontiguousarray(x, dtype=np.float32), y[ok].astype(np.float32)


class LightGBMModel(ReturnModel):
    """Gradient-boosted trees on the day's features (one row per stock-day).

    ``LightGBMModel(profile="cpu", seed=0, progress=True, num_boost_round=None,
    early_stopping_rounds=None, label_norm=None, run_dir=None, **params)``; ``params`` override the
    profile's LightGBM parameters and must be LightGBM parameters or aliases (anything else is a
    ``TypeError`` naming the valid keys); ``label_norm`` the profile's training target (``"cs_zscore"`` or
    ``"raw"`` returns, used by the trading task's sign rule); ``run_dir``: where :meth:`fit` writes
    ``history.csv`` and the selected booster ``model.txt`` (as the torch models write their history).
    After :meth:`fit`: ``booster_``, ``best_iteration_`` (the selected model), ``history_``
    (per-round train / valid l2), ``protocol_``, ``fit_seconds_``.
    """

    name = "lightgbm"

    @classmethod
    def option_keys(cls) -> set[str]:
        """Named parameters plus every LightGBM parameter and alias (LightGBM's own list)."""
        return super().option_keys() | lightgbm_params()

    @classmethod
    def option_help(cls) -> str:
        own = ", ".join(sorted(super().option_keys() - {"self"}))
        return f"{own}, or any LightGBM parameter (e.g. learning_rate, num_leaves, lambda_l2)"

    def __init__(self, profile: str | Profile = "cpu", seed: int = 0, progress: bool = True,
                 num_boost_round: int | None = None, early_stopping_rounds: int | None = None,
                 label_norm: str | None = None, run_dir: str | os.PathLike | None = None, **params):
        bad = sorted(set(params) - lightgbm_params())
        if bad:
            raise TypeError(f"lightgbm: unknown option(s) {bad}; valid: {self.option_help()}")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.profile = get_profile(profile)
        if label_norm is not None:
            self.profile = self.profile.with_train(label_norm=label_norm)
        size = SIZES.get(self.profile.name, SIZES["cpu"])
        self.seed, self.progress = int(seed), progress
        self.num_boost_round = int(num_boost_round or size["rounds"])
        self.early_stopping_rounds = int(early_stopping_rounds or size["early_stop"])
        threads = int(os.environ.get("STORM_NUM_THREADS", _COMMON["num_threads"]))
        self.params = {**_COMMON, "num_threads": threads, **size["params"], **params, "seed": self.seed,
                       "bagging_seed": self.seed + 1, "feature_fraction_seed": self.seed + 2,
                       "data_random_seed": self.seed + 3, "drop_seed": self.seed + 4}
        self.booster_: lgb.Booster | None = None
        self.best_iteration_: int | None = None
        self.history_: pd.DataFrame | None = None

    def fit(self, panel: Panel, protocol: str | Protocol = "clean") -> "LightGBMModel":
        self.protocol_ = get_protocol(protocol)
        cfg = self.profile.train
        t0 = time.perf_counter()
        train_t = train_mod.trainable_days(panel, panel.split(self.protocol_, "train"), cfg.min_valid_stocks)
        valid_t = train_mod.trainable_days(panel, panel.split(self.protocol_, "valid"), cfg.min_valid_stocks)
        if len(train_t) == 0 or len(valid_t) == 0:
            raise ValueError(f"protocol {self.protocol_.name!r}: empty train or validation split on this panel")
        xt, yt = _rows(panel, train_t, cfg.label_norm, cfg.min_valid_stocks)
        xv, yv = _rows(panel, valid_t, cfg.label_norm, cfg.min_valid_stocks)
        dtrain = lgb.Dataset(xt, yt, feature_name=_names(panel), free_raw_data=True)
        dvalid = lgb.Dataset(xv, yv, reference=dtrain, free_raw_data=True)
        evals: dict = {}
        bar = tqdm(total=self.num_boost_round, desc=f"lightgbm ({len(yt):,} rows)", disable=not self.progress,
                   leave=False, mininterval=1.0)

        def _progress(env):
            bar.update(1)
            if env.evaluation_result_list:
                bar.set_postfix({f"{d}_{m}": f"{v:.4f}" for d, m, v, _ in env.evaluation_result_list}, refresh=False)

        try:
            self.booster_ = lgb.train(
                self.params, dtrain, num_boost_round=self.num_boost_round,
                valid_sets=[dtrain, dvalid], valid_names=["train", "valid"],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, first_metric_only=True, verbose=False),
                           lgb.record_evaluation(evals), _progress],
            )
        finally:
            bar.close()
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        n = len(evals["valid"]["l2"])
        self.history_ = pd.DataFrame({"round": np.arange(1, n + 1), "train_l2": evals["train"]["l2"],
                                      "valid_l2": evals["valid"]["l2"]})
        self.history_["best"] = self.history_["round"] == self.best_iteration_
        self.n_rows_ = {"train": int(len(yt)), "valid": int(len(yv))}
        self.fit_seconds_ = time.perf_counter() - t0
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            hist = self.history_
            atomic_write(self.run_dir / "history.csv", lambda tmp: hist.to_csv(tmp, index=False))
            self.save(self.run_dir / "model.txt")
        if self.progress:
            tqdm.write(f"lightgbm: best iteration {self.best_iteration_} of {n}, valid l2 "
                       f"{self.history_['valid_l2'].iloc[self.best_iteration_ - 1]:.4f} ({self.fit_seconds_:.1f} s)")
        return self

    def predict_array(self, panel: Panel, t: np.ndarray) -> np.ndarray:
        if self.booster_ is None:
            raise RuntimeError(f"{self.name}: call fit() or load() first")
        t = np.atleast_1d(np.asarray(t))
        B, N, F = len(t), panel.shape[1], panel.shape[2]
        x = day_features(panel, t).reshape(B * N, F)
        s = self.booster_.predict(x, num_iteration=self.best_iteration_, num_threads=self.params["num_threads"])
        return np.where(panel.valid[t], s.reshape(B, N), np.nan)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        if self.booster_ is None:
            raise RuntimeError("nothing to save: fit() first")
        atomic_write(path, lambda tmp: self.booster_.save_model(str(tmp), num_iteration=self.best_iteration_))

    def load(self, path: str | os.PathLike, panel: Panel | None = None) -> "LightGBMModel":
        self.booster_ = lgb.Booster(model_file=str(path))
        self.best_iteration_ = self.booster_.current_iteration()
        return self


def lightgbm_params() -> set[str]:
    """Every LightGBM parameter name and alias (from LightGBM itself), cached."""
    global _LGB_PARAMS
    if _LGB_PARAMS is None:
        from lightgbm.basic import _ConfigAliases

        aliases = _ConfigAliases._get_all_param_aliases()
        _LGB_PARAMS = set(aliases) | {a for names in aliases.values() for a in names}
    return _LGB_PARAMS


_LGB_PARAMS: set[str] | None = None


def _names(panel: Panel) -> list[str]:
    """LightGBM-safe feature names (it rejects some JSON special characters)."""
    return [f"f{j}_{''.join(c if c.isalnum() else '_' for c in n)}" for j, n in enumerate(panel.names)]

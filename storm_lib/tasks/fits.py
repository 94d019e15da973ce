"""Fitting a run's return model, and sharing fitted torch models between runs.

:func:`fit_model` is the one place where a task fits a return model (the portfolio task for Tables 2
and 4, the trading task for its signal baselines and STORM's factors). A torch fit checkpoints into the
run's scratch directory (an interrupted run resumes mid-fit) and, when the run context names a store
(``ctx.fits``, ``$STORM_CACHE_DIR/fits`` by default; :func:`storm_lib.run.fits_dir`), is kept there
under its :func:`fit_key`. A later run whose fit has the same key restores it instead of refitting:
an audit run that only changes the TopK-Drop variant or samples its predictions, or the trading task's
STORM, which is the portfolio task's clean STORM fit. On a CPU a fit is deterministic for its key, so
the restored model is the model the run would have fitted (``tests/test_run.py`` checks the outputs
byte for byte).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..profiles import budget_options, profile_identity

#: the package modules whose source decides a fit (hashed into :func:`fit_key`)
TRAINING_SOURCES = ("models", "train.py", "panel.py", "features.py", "profiles.py", "data.py")
_SOURCE_HASH: str | None = None


def training_source_hash() -> str:
    """sha256 of the package source that decides a fit (:data:`TRAINING_SOURCES`), read once per process."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for name in TRAINING_SOURCES:
            path = root / name
            files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
            for f in files:
                h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
        _SOURCE_HASH = h.hexdigest()
    return _SOURCE_HASH


def fit_key(ctx, universe: str, model: str, kwargs: dict, protocol, profile: str, seed: int,
            feature_set: str = "auto", normalization: str = "cs_zscore") -> str:
    """Identity of a model fit: everything that can change the fitted weights (the universe's data, the
    model and its keyword arguments, protocol, profile, seed, the features and their normalisation, the
    training code, torch version, device type and CPU thread count). Evaluation settings are not in it."""
    import torch

    from ..features import FEATURE_VERSION
    from ..utils import pick_device

    from ..panel import get_protocol

    device = pick_device(None)   # applies $STORM_NUM_THREADS as the fit will
    prof = profile_identity(profile)
    ident = {"universe": universe, "prices": ctx.prices_hash(universe), "model": model, "kwargs": kwargs,
             "protocol": _jsonable(get_protocol(protocol)), "profile": prof, "seed": int(seed), "feature_set": feature_set,
             "normalization": normalization, "feature_version": FEATURE_VERSION,
             "source": training_source_hash(), "torch": torch.__version__, "device": device.type,
             "threads": torch.get_num_threads()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def _jsonable(x):
    if is_dataclass(x) and not isinstance(x, type):
        return {k: _jsonable(v) for k, v in asdict(x).items()}
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def describe_model(model, panel) -> dict:
    """The model's resolved settings (for ``run.json``; the identity hash does not read them)."""
    out = {"class": type(model).__name__}
    for attr in ("variant", "params", "num_boost_round", "early_stopping_rounds", "sizes", "train_cfg",
                 "model_overrides"):
        if hasattr(model, attr):
            out[attr] = _jsonable(getattr(model, attr))
    cfg = getattr(model, "config", None)
    if callable(cfg):
        cfg = cfg(panel)  # StormModel.config(panel) -> StormConfig
    if cfg is not None:
        out["config"] = _jsonable(cfg)
    return out


def fit_model(ctx, universe: str, name: str, kwargs: dict, panel, protocol, profile: str, seed: int,
              command: str = "", feature_set: str = "auto", normalization: str = "cs_zscore"):
    """``make_model(name, **kwargs)`` fitted on ``panel`` / ``protocol``, and facts about the fit
    (``fit_seconds``, ``model``, ``best_epoch`` / ``best_iteration``; ``windows_seen`` with a training budget;
    ``resumed_from_epoch`` after an interruption; ``fit_reused`` when restored from ``ctx.fits``). ``feature_set`` / ``normalization``
    name how ``panel`` was built (they are part of the fit key); ``command`` is recorded with a stored fit."""
    from ..models import TorchReturnModel, make_model

    budget = budget_options(profile, universe, name, kwargs)  # the profile's chosen budget, unless kwargs set one
    if budget is not None:
        kwargs = {**budget, **kwargs}
    model = make_model(name, profile=profile, seed=seed, progress=ctx.progress, **kwargs)
    torch_model = isinstance(model, TorchReturnModel)
    store = getattr(ctx, "fits", None) if torch_model else None
    key = (fit_key(ctx, universe, name, kwargs, protocol, profile, seed, feature_set, normalization)
           if store is not None else None)
    if store is not None and (store / f"{key}.json").is_file():
        meta = json.loads((store / f"{key}.json").read_text())
        hist = pd.read_parquet(store / f"{key}.history.parquet") if meta.get("history") else None
        model.restore(store / f"{key}.pt", panel, protocol, history=hist)
        return model, {**meta["info"], "fit_reused": {"key": key[:16], "first_fitted_by": meta["command"]}}

    info: dict = {}
    fit_kw = {}
    if torch_model and getattr(ctx, "scratch", None) is not None:
        model.run_dir = ctx.scratch / "checkpoints"  # last.pt after every epoch: an interrupted fit resumes
        last = model.run_dir / "last.pt"
        if last.is_file():
            import torch

            info["resumed_from_epoch"] = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"]) + 1
        fit_kw["resume"] = True
    t0 = time.perf_counter()
    model.fit(panel, protocol, **fit_kw)
    info["fit_seconds"] = round(time.perf_counter() - t0, 3)
    info["model"] = describe_model(model, panel)
    if getattr(model, "best_iteration_", None) is not None:
        info["best_iteration"] = int(model.best_iteration_)
    hist = getattr(model, "history_", None)
    if isinstance(hist, pd.DataFrame) and "best" in hist and hist["best"].any():
        info["best_epoch"] = int(np.flatnonzero(hist["best"].to_numpy())[-1]) + 1
    if isinstance(hist, pd.DataFrame) and "windows" in hist and len(hist):  # a budget run (TrainConfig.budget_windows)
        from ..train import trainable_days

        info["windows_seen"] = int(hist["windows"].iloc[-1])
        train_t = trainable_days(panel, panel.split(model.protocol_, "train"), model.train_cfg.min_valid_stocks)
        info["train_windows"] = int(len(train_t))  # one pass; passes = windows_seen / train_windows
    if store is not None:
        _store_fit(store, key, model, info, command)
    return model, info


def store_entries(store: Path) -> list[tuple[str, list[Path]]]:
    """The complete entries of a fit store: (key, its files), sorted by key; an entry is complete once
    its ``<key>.json`` exists (written last by :func:`_store_fit`)."""
    return [(j.stem, sorted(store.glob(f"{j.stem}.*"))) for j in sorted(store.glob("*.json"))]


def _store_fit(store: Path, key: str, model, info: dict, command: str) -> None:
    """Weights, history and fit facts under ``key``; the .json, written last, marks the entry complete."""
    from ..utils import atomic_write

    model.save(store / f"{key}.pt")
    hist = getattr(model, "history_", None)
    has_hist = isinstance(hist, pd.DataFrame)
    if has_hist:
        atomic_write(store / f"{key}.history.parquet", lambda tmp: hist.to_parquet(tmp))
    meta = {"info": {k: v for k, v in info.items() if k != "resumed_from_epoch"}, "history": has_hist,
            "command": command, "source": training_source_hash()}   # lets park carry only usable fits
    atomic_write(store / f"{key}.json", lambda tmp: tmp.write_text(json.dumps(meta, default=str)))

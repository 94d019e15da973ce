"""The portfolio task: paper Tables 2 (DJ30, SP500) and 4 (ablations), and the codebook figures.

One run fits one return model on the protocol's train split (selection on its validation split),
predicts the validation and test splits and evaluates each: RankIC / RankICIR (both IC conventions)
and a TopK-Drop portfolio (k = 5, d = 3, cost 1e-4, ``variant="paper"``) with the six portfolio
metrics APY CW CR ASR MDD AVO in every convention of :data:`storm_lib.metrics.CONVENTIONS`. The
pseudo-model ``"market"`` is the universe's market index (the tables' "Market Index" row): no fit,
its buy-and-hold returns take the place of the portfolio's.

``metrics`` columns: ``split`` (valid, test), ``convention`` (standard, paper, official; ``-`` where
none applies), ``metric`` (RankIC, RankICIR, ic_days; APY, CW, CR, ASR, MDD, AVO, n_days; turnover), ``value``.
Tables: ``scores`` (test score frame, float32 parquet), ``daily`` (per test day: rank_ic, return,
turnover, benchmark), ``history`` (training history) and, for STORM variants, ``codes`` (usage counts
of every CS / TS codebook entry over the test windows, for the codebook-usage figure).
"""

from __future__ import annotations

import time
from dataclasses import asdict, is_dataclass

import numpy as np
import pandas as pd

from .. import metrics, portfolio
from ..features import resolve_feature_set
from ..panel import get_protocol
from ..profiles import get_profile
from . import RunContext, RunOutput

MARKET = "market"
SPLITS = ("valid", "test")
#: fixed settings of the task, hashed into every run's identity
CONFIG = {"k": 5, "d": 3, "cost": 1e-4, "variant": "paper", "splits": list(SPLITS),
          "normalization": "cs_zscore", "feature_set": "auto"}
#: run options that are not model options
RESERVED = ("profile", "seed", "progress", "device", "run_dir")


def model_kwargs(name: str, options: dict) -> dict:
    """Keyword arguments of :func:`storm_lib.models.make_model` for run ``options``.

    STORM variants take network sizes (``StormConfig`` fields, e.g. ``codebook_size``) through
    ``model={...}`` and everything else as training overrides; other models take ``options`` as is.
    """
    bad = [k for k in options if k in RESERVED]
    if bad:
        raise ValueError(f"option(s) {bad} are fields of the run spec, not model options")
    if not name.startswith("storm"):
        return dict(options)
    from dataclasses import fields

    from ..models.storm import StormConfig

    net = {f.name for f in fields(StormConfig)} - {"n_stocks", "n_features", "window"}
    kw = {k: v for k, v in options.items() if k not in net}
    sizes = {k: v for k, v in options.items() if k in net}
    if sizes:
        kw["model"] = sizes
    return kw


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


def _fit(spec, ctx: RunContext, panel, proto) -> tuple[object, dict]:
    from ..models import TorchReturnModel, make_model

    model = make_model(spec.model, profile=spec.profile, seed=spec.seed, progress=ctx.progress,
                       **model_kwargs(spec.model, dict(spec.options)))
    info: dict = {}
    fit_kw = {}
    if isinstance(model, TorchReturnModel) and ctx.scratch is not None:
        model.run_dir = ctx.scratch / "checkpoints"  # last.pt after every epoch: an interrupted fit resumes
        last = model.run_dir / "last.pt"
        if last.is_file():
            import torch

            info["resumed_from_epoch"] = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"]) + 1
        fit_kw["resume"] = True
    t0 = time.perf_counter()
    model.fit(panel, proto, **fit_kw)
    info["fit_seconds"] = round(time.perf_counter() - t0, 3)
    info["model"] = describe_model(model, panel)
    for attr in ("best_iteration_",):
        if getattr(model, attr, None) is not None:
            info[attr.rstrip("_")] = int(getattr(model, attr))
    hist = getattr(model, "history_", None)
    if isinstance(hist, pd.DataFrame) and "best" in hist and hist["best"].any():
        info["best_epoch"] = int(np.flatnonzero(hist["best"].to_numpy())[-1]) + 1
    return model, info


def code_usage(model, panel, t: np.ndarray) -> pd.DataFrame:
    """Usage counts of every codebook entry over the windows ending at ``t``: columns ``branch``
    (cs, ts), ``code`` (0..K-1, unused entries included), ``count``. Feeds the codebook-usage figure."""
    res = model.factors(panel, t, keys=["cs_codes", "ts_codes"])
    size = model.config(panel).codebook_size
    frames = []
    for branch in ("cs", "ts"):
        codes = res.get(f"{branch}_codes")
        if codes is None:
            continue
        if branch == "ts":  # tokens of stocks that are not valid on the window's last day are not factors
            codes = codes[panel.valid[np.asarray(t)]]
        counts = np.bincount(np.asarray(codes, dtype=np.int64).ravel(), minlength=size)
        frames.append(pd.DataFrame({"branch": branch, "code": np.arange(size), "count": counts}))
    return pd.concat(frames, ignore_index=True)


def _rows(split: str, convention: str, values: dict) -> list[dict]:
    return [{"split": split, "convention": convention, "metric": k, "value": float(v)} for k, v in values.items()]


def run(spec, ctx: RunContext) -> RunOutput:
    """Fit ``spec.model`` (or take the market index), evaluate the validation and test splits."""
    profile = get_profile(spec.profile)
    proto = get_protocol(spec.protocol)
    panel = ctx.panel(spec.universe, window=profile.window, normalization=CONFIG["normalization"],
                      feature_set=CONFIG["feature_set"])
    index = ctx.market_index(spec.universe)
    info: dict = {"panel": repr(panel),
                  "feature_set": resolve_feature_set(ctx.prices(spec.universe), CONFIG["feature_set"], warn=False),
                  "n_features": len(panel.names), "n_stocks": len(panel.tickers),
                  "index": str(index.name)}

    model = None
    if spec.model != MARKET:
        model, fit_info = _fit(spec, ctx, panel, proto)
        info.update(fit_info)

    rows: list[dict] = []
    tables: dict[str, pd.DataFrame] = {}
    predict_seconds = 0.0
    for split in SPLITS:
        t = panel.split(proto, split)
        labels = panel.label_frame(t)
        bench = portfolio.benchmark_returns(index, labels.index)
        info[f"{split}_days"] = [str(labels.index[0].date()), str(labels.index[-1].date()), int(len(t))]
        if model is None:
            returns, turnover, ic_daily, scores = bench, None, None, None
        else:
            t0 = time.perf_counter()
            scores = model.predict(panel, split=split, protocol=proto)
            predict_seconds += time.perf_counter() - t0
            ic_daily = metrics.rank_ic(scores, labels)
            for conv in metrics.IC_CONVENTIONS:
                ic = metrics.rank_ic(scores, labels, conv) if conv != "standard" else ic_daily
                summary = metrics.ic_summary(ic, conv)
                summary["ic_days"] = summary.pop("n_days")
                rows += _rows(split, conv, summary)
            bt = portfolio.topk_drop(scores, labels, k=CONFIG["k"], d=CONFIG["d"], cost=CONFIG["cost"],
                                     variant=CONFIG["variant"])
            returns, turnover = bt.returns, bt.turnover
            rows += _rows(split, "-", {"turnover": turnover.mean()})
        for conv in metrics.CONVENTIONS:
            rows += _rows(split, conv, metrics.portfolio_metrics(returns, conv))
        if split == "test":
            daily = pd.DataFrame({
                "rank_ic": ic_daily if ic_daily is not None else np.nan,
                "return": returns,
                "turnover": turnover if turnover is not None else np.nan,
                "benchmark": bench,
            }, index=labels.index).rename_axis("date")
            tables["daily"] = daily
            if scores is not None:
                tables["scores.parquet"] = scores.astype(np.float32).rename_axis("date")
                if hasattr(model, "factors"):
                    tables["codes"] = code_usage(model, panel, t)
    if model is not None:
        info["predict_seconds"] = round(predict_seconds, 3)
        hist = getattr(model, "history_", None)
        if isinstance(hist, pd.DataFrame) and len(hist):
            tables["history"] = hist
    return RunOutput(pd.DataFrame(rows, columns=["split", "convention", "metric", "value"]), tables, info)


run.config = CONFIG


def _models() -> tuple[str, ...]:
    from ..models import MODEL_NAMES

    return MODEL_NAMES + (MARKET,)


run.models = _models()

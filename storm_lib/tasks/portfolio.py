"""The portfolio task: paper Tables 2 (DJ30, SP500) and 4 (ablations), and the codebook figures.

One run fits one return model on the protocol's train split (selection on its validation split),
predicts the validation and test splits and evaluates each: RankIC / RankICIR (both IC conventions)
and a TopK-Drop portfolio (k = 5, d = 3, cost 1e-4, ``variant="paper"``) with the six portfolio
metrics APY CW CR ASR MDD AVO in every convention of :data:`storm_lib.metrics.CONVENTIONS`. The
pseudo-model ``"market"`` is the universe's market index (the tables' "Market Index" row; ^DJI is a
price index without dividends, SPY's adjusted close includes them): no fit, its buy-and-hold returns
take the place of the portfolio's. The pseudo-model ``"ew_buy_hold"`` is the total-return market of
either universe: its stocks bought in equal weights on a split's first day and held (adjusted closes).
The floors (:data:`storm_lib.floors.FLOORS`: 1- and 5-day reversal, 20- and 60-day momentum, 20-day low
volatility) are deterministic pseudo-models scored each day from prices up to that day, evaluated by
the same RankIC and TopK-Drop code as the models.

``metrics`` columns: ``split`` (valid, test), ``convention`` (standard, paper, official; ``-`` where
none applies), ``metric`` (RankIC, RankICIR, ic_days; APY, CW, CR, ASR, MDD, AVO, n_days; turnover), ``value``.
STORM variants add, on the train (every 4th window end), valid and test windows in eval mode (convention ``-``,
:func:`storm_lib.models.storm_diagnostics.diagnose`): ``codes_used_cs/ts``, ``perplexity_cs/ts``,
``div_cs/ts``, ``entropy_cs/ts`` and, for the dual model, ``align_loss``, ``align_top1``,
``align_chance``, ``align_ln_b``.
Tables: ``scores`` (test score frame, float32 parquet), ``daily`` (per test day: rank_ic, return,
turnover, benchmark), ``history`` (training history) and, for STORM variants, ``codes`` (usage counts
of every CS / TS codebook entry over the test windows, for the codebook-usage figure).

Run options. The protocol-audit switches (:mod:`storm_lib.audit`) that act on the task are **task
options** (:data:`TASK_OPTIONS`), split off before the rest goes to the model (:func:`model_kwargs`):
``topk_variant`` (``"official"``: TopK-Drop's daily return is the sum of the k returns),
``sample_predictions`` (``true``: one seeded draw of the predictive distribution instead of its mean),
``feature_set`` (e.g. ``"official152"``) and ``normalization`` (e.g. ``"prev_block"``); see
:func:`task_settings`. ``benchmark`` (``equal_weight``, an index ticker or a price file) replaces the
universe's market index; a universe without one (a user's price file) uses the equal-weight buy-and-hold of
its stocks by default (:func:`benchmark_of`), recorded in ``run.json`` under ``info.benchmark``. Every other option is a model option (for STORM, ``StormConfig`` fields such as
``prior_across_batch`` go to ``model={...}``). :data:`CONFIG`, hashed into every run's identity, is the
same with or without options: the runner hashes the options themselves, so a run with options gets its
own directory and a run without any keeps its identity and outputs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import data, metrics, portfolio
from ..floors import EW_MARKET, FLOORS, floor_scores
from ..features import resolve_feature_set
from ..panel import get_protocol
from ..profiles import get_profile
from .base import RunContext, RunOutput
from .fits import fit_model

MARKET = "market"
#: pseudo-models without a fit: no options, no seed dependence
PSEUDO_MODELS = (MARKET, EW_MARKET) + tuple(FLOORS)
SPLITS = ("valid", "test")
#: splits on which STORM variants record eval-mode codebook usage and alignment quality
DIAGNOSTIC_SPLITS = ("train", "valid", "test")
TRAIN_DIAGNOSTIC_STRIDE = 4  # train windows: every 4th window end (about 700 on DJ30), to save time
#: fixed settings of the task, hashed into every run's identity
CONFIG = {"k": 5, "d": 3, "cost": 1e-4, "variant": "paper", "splits": list(SPLITS),
          "normalization": "cs_zscore", "feature_set": "auto"}
#: run options that are not model options
RESERVED = ("profile", "seed", "progress", "device", "run_dir")
#: run options read by the task itself (the protocol-audit switches, :mod:`storm_lib.audit`), never passed
#: to the model: option name -> the CONFIG key it overrides (None: no CONFIG counterpart, default False)
TASK_OPTIONS = {"topk_variant": "variant", "sample_predictions": None, "feature_set": "feature_set",
                "normalization": "normalization", "benchmark": None}
#: models whose network has a predictive distribution to draw from (``sample_predictions=True``)
SAMPLING_MODELS = ("storm", "storm_wo_ts", "storm_wo_cs", "factorvae", "hirevae")


def split_options(options: dict) -> tuple[dict, dict]:
    """(task options, model options) of run ``options``; task options are the keys of :data:`TASK_OPTIONS`."""
    task = {k: v for k, v in options.items() if k in TASK_OPTIONS}
    return task, {k: v for k, v in options.items() if k not in TASK_OPTIONS}


def task_settings(model: str, options: dict) -> dict:
    """The effective task settings of a run: :data:`CONFIG` overridden by the task options in
    ``options`` (validated, with errors naming the valid values), plus ``sample_predictions``.

    Options: ``topk_variant`` (``"paper"``: equal weights, our default; ``"official"``: the day's return is
    the SUM of the k returns, official-code.md §10.8), ``sample_predictions`` (bool: score with one seeded
    draw of the model's predictive distribution instead of its mean, §10.13; models in
    :data:`SAMPLING_MODELS` only), ``feature_set`` (``auto``, ``alpha158``, ``alpha158_close``,
    ``official152``: the official features, §1), ``normalization`` (a :data:`storm_lib.panel.NORMALIZATIONS`
    entry; ``prev_block`` is the official scaler) and ``benchmark`` (:func:`check_benchmark`; the key is
    present only when given).
    """
    from ..features import FEATURE_SETS
    from ..panel import NORMALIZATIONS

    task, _ = split_options(options)
    out = {**CONFIG, "sample_predictions": False}
    if "benchmark" in task:  # only when given: other runs' settings stay as they were
        out["benchmark"] = check_benchmark(task.pop("benchmark"))
    if task and model in (MARKET, EW_MARKET):
        raise ValueError(f"the market rows take no task options but benchmark, got {sorted(task)}")
    if "topk_variant" in task:
        v = task["topk_variant"]
        if v not in portfolio.VARIANTS:
            raise ValueError(f"topk_variant must be one of {list(portfolio.VARIANTS)}, got {v!r}")
        out["variant"] = v
    if "sample_predictions" in task:
        v = task["sample_predictions"]
        if not isinstance(v, bool):
            raise ValueError(f"sample_predictions must be true or false, got {v!r}")
        if v and model not in SAMPLING_MODELS:
            raise ValueError(f"sample_predictions=true needs a model with a predictive distribution "
                             f"({', '.join(SAMPLING_MODELS)}); {model!r} has none")
        out["sample_predictions"] = v
    if "feature_set" in task:
        v = task["feature_set"]
        if v not in FEATURE_SETS + ("auto",):
            raise ValueError(f"feature_set must be one of {list(FEATURE_SETS) + ['auto']}, got {v!r}")
        out["feature_set"] = v
    if "normalization" in task:
        v = task["normalization"]
        if v not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {v!r}")
        out["normalization"] = v
    return out


def check_benchmark(value) -> str:
    """A valid ``benchmark`` option: ``equal_weight``, an index ticker of ``indices.parquet`` or an
    existing parquet/CSV file (made absolute, so the run does not depend on the working directory)."""
    from pathlib import Path

    from ..data import INDEX_TICKERS

    text = str(value)
    if text == "equal_weight" or text in INDEX_TICKERS:
        return text
    path = Path(text).expanduser()
    if path.is_file():
        return str(path.resolve())
    raise ValueError(f"benchmark must be equal_weight, one of {', '.join(INDEX_TICKERS)} or a parquet/CSV file "
                     f"with date and adj_close (or close) columns; got {text!r}")


def benchmark_of(spec, ctx: RunContext, settings: dict) -> tuple[pd.Series | None, str]:
    """(price series or None for the equal-weight buy-and-hold, its name) of a run: the ``benchmark``
    option, else the universe's market index, else (a universe without one) the equal weight."""
    value = settings.get("benchmark")
    if value is None:
        value = "index" if ctx.has_index(spec.universe) else "equal_weight"
    if value == "equal_weight":
        return None, "equal_weight"
    series = ctx.market_index(spec.universe) if value == "index" else ctx.benchmark_series(value)
    return series, str(series.name)


def equal_weight_benchmark(labels: pd.DataFrame) -> tuple[pd.Series, int]:
    """The equal-weight buy-and-hold of the stocks with a label on every day of ``labels`` (a stock
    listed or delisted inside the span cannot be held throughout), total return from ``adj_close``
    (:func:`storm_lib.portfolio.equal_weight_buy_and_hold`); returns (daily returns, number of stocks)."""
    held = labels.loc[:, labels.notna().all()]
    if held.shape[1] == 0:
        raise ValueError("no stock has a label on every day of the span: no equal-weight benchmark")
    return portfolio.equal_weight_buy_and_hold(held).rename("equal_weight"), int(held.shape[1])


def model_kwargs(name: str, options: dict) -> dict:
    """Keyword arguments of :func:`storm_lib.models.make_model` for the model options of a run.

    STORM variants take network sizes (``StormConfig`` fields, e.g. ``codebook_size``,
    ``prior_across_batch``) through ``model={...}`` and everything else as training overrides; other
    models take ``options`` as is. Task options (:data:`TASK_OPTIONS`) must be split off first
    (:func:`split_options`); here they are an error, so no task silently ignores them.
    """
    bad = [k for k in options if k in RESERVED]
    if bad:
        raise ValueError(f"option(s) {bad} are fields of the run spec, not model options")
    task = [k for k in options if k in TASK_OPTIONS]
    if task:
        raise ValueError(f"option(s) {task} are options of the portfolio task, not model options")
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


def _fit(spec, ctx: RunContext, panel, proto, settings: dict) -> tuple[object, dict]:
    """The run's fitted model (:func:`storm_lib.tasks.fits.fit_model`: restored from the shared store
    when an earlier run made the same fit)."""
    _, model_options = split_options(dict(spec.options))
    return fit_model(ctx, spec.universe, spec.model, model_kwargs(spec.model, model_options), panel, proto,
                     spec.profile, spec.seed, spec.command(), settings["feature_set"], settings["normalization"])


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


def sample_seed(seed: int, split: str) -> int:
    """The torch seed of the sampled predictions of ``split`` in a run with ``seed``."""
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split) if split in SPLITS else len(SPLITS)])
               .generate_state(1)[0])


def predict_scores(model, panel, proto, split: str, sample: bool = False, seed: int = 0) -> pd.DataFrame:
    """The score frame of ``split``: ``model.predict`` (the mean prediction), or with ``sample=True``
    one draw of the model's predictive distribution (official-code.md §10.13), seeded by
    :func:`sample_seed` so a run is deterministic on CPU (torch's global RNG state is restored)."""
    if not sample:
        return model.predict(panel, split=split, protocol=proto)
    import torch

    t = panel.split(proto, split)
    with torch.random.fork_rng():
        torch.manual_seed(sample_seed(seed, split))
        scores = np.asarray(model.predict_array(panel, t, sample=True), dtype=np.float64)
    return panel.frame(np.where(panel.valid[t], scores, np.nan), t)


END_SPLITS = ("valid", "test")


def end_of_training_rows(model, panel, proto, selected_rows: list[dict] | None = None) -> list[dict]:
    """RankIC and RankICIR (standard convention) of the weights after the last epoch, on the validation
    and test splits: metrics ``RankIC_end`` / ``RankICIR_end``, convention ``-``. Every other number of a
    run is the selected epoch's; these are the model the whole schedule trained, which no selection has
    touched (the budget study's curves read them, :mod:`storm_lib.budget`). The weights are the fit's
    last checkpoint (``last.pt`` in the run's scratch directory); the selected epoch's are put back
    afterwards. Empty when the fit left no checkpoint here (a fit restored from the shared store).
    When the last epoch is the selected one the weights are the same, so the values are copied from
    ``selected_rows`` (the run's standard-convention rows) instead of predicting both splits again."""
    import torch

    folder = getattr(model, "run_dir", None)
    if folder is None or not (Path(folder) / "last.pt").is_file():
        return []
    ck = torch.load(Path(folder) / "last.pt", map_location="cpu", weights_only=False)
    if selected_rows is not None and ck["best_epoch"] == ck["epoch"]:
        same = {(r["split"], r["metric"]): r["value"] for r in selected_rows if r["convention"] == "standard"}
        return [row for split in END_SPLITS for row in _rows(split, "-", {
            "RankIC_end": same[(split, "RankIC")], "RankICIR_end": same[(split, "RankICIR")]})]
    last = ck["net"]
    selected = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    rows: list[dict] = []
    try:
        model.net.load_state_dict(last)
        for split in END_SPLITS:
            t = panel.split(proto, split)
            s = metrics.ic_summary(metrics.rank_ic(model.predict(panel, split=split, protocol=proto),
                                                   panel.label_frame(t)))
            rows += _rows(split, "-", {"RankIC_end": s["RankIC"], "RankICIR_end": s["RankICIR"]})
    finally:
        model.net.load_state_dict(selected)
    return rows


def _rows(split: str, convention: str, values: dict) -> list[dict]:
    return [{"split": split, "convention": convention, "metric": k, "value": float(v)} for k, v in values.items()]


def run(spec, ctx: RunContext) -> RunOutput:
    """Fit ``spec.model`` (or take the market index), evaluate the validation and test splits."""
    profile = get_profile(spec.profile)
    proto = get_protocol(spec.protocol)
    cfg = task_settings(spec.model, dict(spec.options))
    panel = ctx.panel(spec.universe, window=profile.window, normalization=cfg["normalization"],
                      feature_set=cfg["feature_set"])
    index, index_name = benchmark_of(spec, ctx, cfg)
    info: dict = {"panel": repr(panel),
                  "feature_set": resolve_feature_set(ctx.prices(spec.universe), cfg["feature_set"], warn=False),
                  "n_features": len(panel.names), "n_stocks": len(panel.tickers),
                  "index": index_name}
    if index is None or cfg.get("benchmark") is not None:
        info["benchmark"] = {"kind": "equal_weight" if index is None else "index", "name": index_name,
                             "source": cfg.get("benchmark") or "default for a universe without a market index"}
    task_options, _ = split_options(dict(spec.options))
    if task_options:
        info["task_settings"] = {k: cfg[k] for k in ("variant", "sample_predictions", "feature_set",
                                                      "normalization", "benchmark") if k in cfg}

    model = None
    if spec.model in PSEUDO_MODELS:
        if dict(spec.options) and spec.model != MARKET:
            _, model_options = split_options(dict(spec.options))
            if model_options:
                raise ValueError(f"{spec.model!r} is a fixed rule and takes no model options, got {sorted(model_options)}")
        if spec.model in FLOORS:
            info["floor"] = spec.model
    else:
        model, fit_info = _fit(spec, ctx, panel, proto, cfg)
        info.update(fit_info)

    rows: list[dict] = []
    tables: dict[str, pd.DataFrame] = {}
    predict_seconds = 0.0
    for split in SPLITS:
        t = panel.split(proto, split)
        labels = panel.label_frame(t)
        if index is None:  # from the float64 prices, not the panel's float32 labels
            returns_all = data.next_day_returns(ctx.prices(spec.universe))
            bench, n_held = equal_weight_benchmark(returns_all.reindex(index=labels.index, columns=labels.columns))
            info["benchmark"][f"{split}_stocks"] = n_held
        else:
            bench = portfolio.benchmark_returns(index, labels.index)
        info[f"{split}_days"] = [str(labels.index[0].date()), str(labels.index[-1].date()), int(len(t))]
        if spec.model == MARKET:
            returns, turnover, ic_daily, scores = bench, None, None, None
        elif spec.model == EW_MARKET:
            held = labels.dropna(axis=1, how="any")   # stocks with a label on every day of the split
            info[f"{split}_ew_stocks"] = [int(held.shape[1]), int(labels.shape[1])]
            returns, turnover, ic_daily, scores = portfolio.equal_weight_buy_and_hold(held), None, None, None
        else:
            t0 = time.perf_counter()
            if spec.model in FLOORS:
                scores = floor_scores(ctx.prices(spec.universe), spec.model, labels.index, labels.columns,
                                      panel.valid[t])
            else:
                scores = predict_scores(model, panel, proto, split, cfg["sample_predictions"], spec.seed)
            predict_seconds += time.perf_counter() - t0
            ic_daily = metrics.rank_ic(scores, labels)
            for conv in metrics.IC_CONVENTIONS:
                ic = metrics.rank_ic(scores, labels, conv) if conv != "standard" else ic_daily
                summary = metrics.ic_summary(ic, conv)
                summary["ic_days"] = summary.pop("n_days")
                rows += _rows(split, conv, summary)
            bt = portfolio.topk_drop(scores, labels, k=cfg["k"], d=cfg["d"], cost=cfg["cost"],
                                     variant=cfg["variant"])
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
                if model is not None and hasattr(model, "factors"):
                    tables["codes"] = code_usage(model, panel, t)
    if model is not None and hasattr(model, "diagnostics"):  # STORM: do the codebooks and alignment work?
        t0 = time.perf_counter()
        for split in DIAGNOSTIC_SPLITS:
            t = panel.split(proto, split)
            rows += _rows(split, "-", model.diagnostics(panel, t[::TRAIN_DIAGNOSTIC_STRIDE] if split == "train" else t))
        info["diagnostics_seconds"] = round(time.perf_counter() - t0, 3)
    if model is not None and "windows_seen" in info:  # a budget run: the model its whole schedule trained
        t0 = time.perf_counter()
        rows += end_of_training_rows(model, panel, proto, None if cfg["sample_predictions"] else rows)
        info["end_of_training_seconds"] = round(time.perf_counter() - t0, 3)
    if model is not None:
        info["predict_seconds"] = round(predict_seconds, 3)
        hist = getattr(model, "history_", None)
        if isinstance(hist, pd.DataFrame) and len(hist):
            tables["history"] = hist
    return RunOutput(pd.DataFrame(rows, columns=["split", "convention", "metric", "value"]), tables, info)


run.config = CONFIG


def _models() -> tuple[str, ...]:
    from ..models import MODEL_NAMES

    return MODEL_NAMES + PSEUDO_MODELS


run.models = _models()

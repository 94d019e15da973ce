"""Score anatomy: what kind of signal does a model's score frame carry? (issue 16)

For a score frame S (date x ticker, NaN where a stock is not valid) and the universe's prices:

- ``stock_share``: share of the cross-sectional variance of the scores explained by a per-stock
  constant. Scores are z-scored across stocks per day (z_ti), c_i = mean_t z_ti, and the share is
  Σ c_i² / Σ z_ti² over the valid cells: the R² of a stock fixed effect. 1 = a fixed stock ranking,
  about 1/T for scores without persistence.
- ``rank_autocorr``: mean over days of the Spearman correlation of the scores of day t and day t-1
  (stocks valid on both): how much the ranking changes from one day to the next.
- ``corr_low_vol`` / ``corr_momentum``: mean over days of the Spearman correlation of the scores with
  minus the 20-day volatility of daily log returns (a low-volatility ranking) and with the 20-day
  return (a momentum ranking), both computed from adjusted closes up to and including day t.

:func:`anatomy_table` does this for every finished run of a universe (score frames committed as
``scores.parquet``), one row per model (and model version), mean and std over seeds;
``python -m storm_lib.anatomy --universe dj30 --out results/anatomy_dj30.md`` writes the markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ("stock_share", "rank_autocorr", "corr_low_vol", "corr_momentum")
LOOKBACK = 20


def trailing_signals(prices: pd.DataFrame, lookback: int = LOOKBACK) -> dict[str, pd.DataFrame]:
    """``low_vol`` (−std of daily log returns) and ``momentum`` (return) over the last ``lookback``
    days up to and including each date, from long prices (date, ticker, adj_close): date x ticker."""
    close = prices.pivot(index="date", columns="ticker", values="adj_close").sort_index()
    logret = np.log(close).diff()
    return {"low_vol": -logret.rolling(lookback, min_periods=lookback).std(),
            "momentum": close / close.shift(lookback) - 1.0}


def _zscore_rows(frame: pd.DataFrame) -> pd.DataFrame:
    sd = frame.std(axis=1, ddof=0).replace(0.0, np.nan)
    return frame.sub(frame.mean(axis=1), axis=0).div(sd, axis=0)


def _row_spearman(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """Spearman correlation per row of two aligned frames over the cells finite in both."""
    ok = a.notna() & b.notna()
    ra, rb = a.where(ok).rank(axis=1), b.where(ok).rank(axis=1)
    ra, rb = ra.sub(ra.mean(axis=1), axis=0), rb.sub(rb.mean(axis=1), axis=0)
    den = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    return ((ra * rb).sum(axis=1) / den.replace(0.0, np.nan)).where(ok.sum(axis=1) >= 3)


def stock_share(scores: pd.DataFrame) -> float:
    """R² of a per-stock constant in the per-day z-scored scores (see the module docstring)."""
    z = _zscore_rows(scores)
    c = z.mean(axis=0)
    fitted = z.notna().mul(c, axis=1).where(z.notna())
    total = (z ** 2).sum().sum()
    return float((fitted ** 2).sum().sum() / total) if total > 0 else float("nan")


def score_anatomy(scores: pd.DataFrame, signals: dict[str, pd.DataFrame] | None = None) -> dict:
    """The four anatomy figures of one score frame (``signals`` from :func:`trailing_signals`)."""
    scores = scores.sort_index()
    out = {"stock_share": stock_share(scores),
           "rank_autocorr": float(_row_spearman(scores, scores.shift(1)).mean())}
    for name in ("low_vol", "momentum"):
        if signals is None:
            out[f"corr_{name}"] = float("nan")
            continue
        sig = signals[name].reindex(index=scores.index, columns=scores.columns)
        out[f"corr_{name}"] = float(_row_spearman(scores, sig).mean())
    out["n_days"] = int(len(scores))
    return out


def anatomy_runs(universe: str = "dj30", protocol: str = "clean", profile: str = "cpu", seeds=None,
                 results_dir=None, data_dir=None, models=None) -> pd.DataFrame:
    """One row per finished portfolio run without options (spec columns, model_version, superseded, the
    anatomy figures), including superseded model versions; ``seeds=None`` takes every seed."""
    from . import data as data_mod
    from .run import finished_runs, record_model_version, superseded_runs

    runs = finished_runs(results_dir)
    old = superseded_runs(runs)
    signals = trailing_signals(data_mod.load_prices(universe, data_dir=data_dir))
    rows = []
    for path, rec in runs:
        spec = rec["spec"]
        if (spec["task"], spec["universe"], spec["protocol"], spec["profile"]) != \
                ("portfolio", universe, protocol, profile) or spec.get("options") or (seeds is not None and spec["seed"] not in seeds):
            continue
        if models is not None and spec["model"] not in models or not (path / "scores.parquet").is_file():
            continue
        a = score_anatomy(pd.read_parquet(path / "scores.parquet"), signals)
        rows.append({"model": spec["model"], "seed": spec["seed"], "model_version": record_model_version(rec),
                     "superseded": path in old, **a, "run_dir": str(path)})
    return pd.DataFrame(rows)


def anatomy_plan(plan: pd.DataFrame, universe: str, data_dir=None, prices: bool = True) -> pd.DataFrame:
    """:func:`anatomy_runs` for the finished runs of a notebook plan (columns model, seed, universe,
    finished, run_dir) on ``universe``; the market row and runs without a score frame are skipped.
    ``prices=False`` (no data at hand): the two correlations with price signals are NaN."""
    from . import data as data_mod
    from .run import record_model_version

    sel = plan[(plan["universe"] == universe) & plan["finished"]]
    if sel.empty:
        return pd.DataFrame()
    signals = trailing_signals(data_mod.load_prices(universe, data_dir=data_dir)) if prices else None
    rows = []
    for r in sel.itertuples():
        path = Path(r.run_dir)
        if not (path / "scores.parquet").is_file():
            continue
        import json

        rec = json.loads((path / "run.json").read_text())
        a = score_anatomy(pd.read_parquet(path / "scores.parquet"), signals)
        rows.append({"model": r.model, "seed": r.seed, "model_version": record_model_version(rec),
                     "superseded": False, **a, "run_dir": str(path)})
    return pd.DataFrame(rows)


def anatomy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (model, model_version) of :func:`anatomy_runs`' output."""
    if runs.empty:
        return pd.DataFrame()
    g = runs.groupby(["model", "model_version"])
    out = g[list(METRICS)].mean().round(3)
    sd = g[list(METRICS)].std().round(3).add_suffix("_sd")
    out = out.join(sd).join(g.size().rename("seeds"))
    return out[[c for m in METRICS for c in (m, f"{m}_sd")] + ["seeds"]]


LABELS = {"stock_share": "stock share", "rank_autocorr": "rank autocorr", "corr_low_vol": "corr low vol",
          "corr_momentum": "corr momentum"}


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`anatomy_table` as text cells "mean ± sd" (the mean alone for one seed), one column per
    measure plus ``seeds``; index (model, version)."""
    out = pd.DataFrame(index=table.index)
    out["seeds"] = table["seeds"].astype(int)
    for m in METRICS:
        out[LABELS[m]] = [f"{a:.2f} ± {b:.2f}" if b == b else f"{a:.2f}" for a, b in zip(table[m], table[f"{m}_sd"])]
    return out


def markdown(table: pd.DataFrame, universe: str) -> str:
    lines = [f"Score anatomy, {universe}, clean protocol, cpu profile, test windows (mean ± sd over seeds; "
             "`python -m storm_lib.anatomy`). stock share: R² of a per-stock constant in the per-day "
             "z-scored scores; rank autocorr: day-to-day Spearman; low vol / momentum: mean daily Spearman "
             f"with −{LOOKBACK}-day volatility and {LOOKBACK}-day return. Older model versions and runs of "
             "an earlier training budget (\"(earlier budget)\": early stopping, before the budget study) "
             "are superseded and kept as history.", "",
             "| model | version | seeds | " + " | ".join(LABELS[m] for m in METRICS) + " |",
             "|---|---|---|---|---|---|---|"]
    for (model, version), r in formatted(table).iterrows():
        lines.append(f"| {model} | {version} | " + " | ".join(str(v) for v in r) + " |")
    return "\n".join(lines) + "\n"


def history_labels(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``model_version`` as a text label that keeps apart the runs of the current version
    trained at an earlier training budget ("4 (earlier budget)"; :func:`storm_lib.run.superseded_runs`)
    from the current ones ("4"), for the history table the CLI writes."""
    from .models import model_version

    if runs.empty:
        return runs
    out = runs.copy()
    out["model_version"] = [f"{v} (earlier budget)" if s and v >= model_version(m) else str(v)
                            for m, v, s in zip(runs["model"], runs["model_version"], runs["superseded"])]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storm_lib.anatomy", description=__doc__.splitlines()[0])
    ap.add_argument("--universe", default="dj30")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: every seed")
    ap.add_argument("--results-dir", default=None)
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args(argv)
    seeds = tuple(args.seeds) if args.seeds else None
    table = anatomy_table(history_labels(anatomy_runs(args.universe, seeds=seeds, results_dir=args.results_dir)))
    text = markdown(table, args.universe)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

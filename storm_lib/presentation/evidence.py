"""Evidence for the verdict at two levels, and Hansen's Model Confidence Set.

* Seed level (:func:`seed_test`): STORM's margin over a comparator, Welch t over independent seeds
  (Welch 1947, Biometrika 34); a deterministic comparator (a market row, a floor) counts as exact.
* Day level (:func:`day_test`): the paired daily differences on the same test days, every finished
  seed of each side pooled day by day (:func:`storm_lib.stats.load_daily`). RankIC and APY: the mean
  daily difference (of RankIC; of net return, × 252) with a Newey–West (1987) HAC standard error and a
  t_{n−1} interval (:func:`storm_lib.stats.paired_test`, Diebold–Mariano style); ASR and MDD (functions
  of the whole path): a stationary block bootstrap of the metric difference resampling the same days for
  both sides (:func:`storm_lib.stats.paired_metric_test`, Ledoit–Wolf style percentile interval).
* :func:`holm`: Holm's (1979, Scand. J. Statist. 6(2)) step-down adjustment of a family of p-values.
* :func:`mcs`: Hansen, Lunde & Nason (2011, Econometrica 79(2)) Model Confidence Set through
  ``arch.bootstrap.MCS`` on daily losses (−RankIC, −net return), stationary bootstrap.

Daily series come from the ``daily.csv`` of the runs named in the results frame's ``run_dir`` column
(``storm_lib.run.load_results``): everything is read from ``results/``, no data directory needed.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd

from .paper import LOWER_IS_BETTER, model_label

LEVEL = 0.95
ANNUAL = 252      # trading days a year (the APY day-level margin is annualised arithmetically)
MCS_SIZE = 0.10          # Hansen's MCS at 90 %
MCS_REPS = 1000
DAY_REPS = 1000          # bootstrap replicates of the ASR / MDD day-level tests
#: the daily column each metric is tested on at the day level
DAILY_COLUMN = {"RankIC": "rank_ic", "RankICIR": "rank_ic", "APY": "return", "ASR": "return", "MDD": "return",
                "CW": "return", "CR": "return", "AVO": "return"}


def _sign(metric: str) -> float:
    return -1.0 if metric in LOWER_IS_BETTER else 1.0


def seed_test(a: np.ndarray, b: np.ndarray, metric: str, level: float = LEVEL) -> dict:
    """Margin of ``a`` over ``b`` (positive = ``a`` better), Welch t over seeds. ``b`` with one value
    (or a constant) is exact: a one-sample t of ``a`` against it. Returns margin, low, high, p, n_a, n_b;
    NaN interval and p when ``a`` has fewer than 2 values."""
    from scipy import stats as sps

    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    d = _sign(metric) * (a.mean() - b.mean()) if a.size and b.size else np.nan
    out = {"margin": float(d), "low": np.nan, "high": np.nan, "p": np.nan, "n_a": int(a.size), "n_b": int(b.size)}
    if a.size < 2 or b.size < 1:
        return out
    va = a.var(ddof=1) / a.size
    vb = b.var(ddof=1) / b.size if b.size >= 2 else 0.0
    se = math.sqrt(va + vb)
    if se == 0:
        out.update(low=d, high=d, p=0.0 if d != 0 else 1.0)
        return out
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + (vb ** 2 / (b.size - 1) if vb > 0 else 0.0))
    h = sps.t.ppf(0.5 + level / 2, df) * se
    out.update(low=d - h, high=d + h, p=float(2 * sps.t.sf(abs(d / se), df)))
    return out


@lru_cache(maxsize=256)
def _daily(run_dirs: tuple[str, ...]) -> pd.DataFrame:
    from ..stats import load_daily

    return load_daily(list(run_dirs))


def run_dirs(results: pd.DataFrame, universe: str, model: str, profile: str | None = None) -> tuple[str, ...]:
    """The finished portfolio runs (one per seed) of ``model`` (a paper label or registry name) on
    ``universe`` in a results frame that carries ``run_dir`` (profile ``profile`` if given)."""
    if results is None or "run_dir" not in results.columns or results.empty:
        return ()
    r = results
    keep = (r["universe"].astype(str).str.lower() == universe.lower()) & (r["model"].map(model_label)
                                                                          == model_label(model))
    if "task" in r.columns:
        keep &= r["task"].astype(str) == "portfolio"
    if profile and "profile" in r.columns:
        keep &= r["profile"].astype(str).isin([profile, "", "nan"])
    sel = r.loc[keep, [c for c in ("seed", "run_dir") if c in r.columns]].dropna(subset=["run_dir"])
    sel = sel.drop_duplicates("run_dir")
    if "seed" in sel.columns:
        sel = sel.sort_values("seed", kind="stable").drop_duplicates("seed")
    return tuple(str(x) for x in sel["run_dir"])


def pooled_daily(results: pd.DataFrame, universe: str, model: str, column: str,
                 profile: str | None = None) -> pd.Series | None:
    """One model's daily ``column`` (rank_ic, return), its seeds averaged day by day; None without runs
    (or when a run has no readable ``daily.csv``: the day level then has no evidence, never other data)."""
    dirs = run_dirs(results, universe, model, profile)
    if not dirs:
        return None
    try:
        s = _daily(dirs)[column]
    except (FileNotFoundError, KeyError, ValueError):   # a run without daily.csv: no day-level evidence
        return None
    return None if s.notna().sum() < 2 else s


def day_test(a: pd.Series, b: pd.Series, metric: str, level: float = LEVEL, n: int = DAY_REPS) -> dict:
    """Paired day-level test of ``a`` against ``b`` (daily series of the same days) for ``metric``:
    margin, low, high, p (positive = ``a`` better), method, n_days."""
    from scipy import stats as sps

    from .. import stats

    if metric in ("RankIC", "APY") or DAILY_COLUMN.get(metric) == "rank_ic":
        r = stats.paired_test(a, b, n=10, level=level, align="inner")   # HAC part only; few bootstrap reps
        k = 1.0 if metric.startswith("RankIC") else ANNUAL   # APY: the mean daily return difference × 252
        h = sps.t.ppf(0.5 + level / 2, r["n_days"] - 1) * r["se_hac"] * k
        d = r["mean_diff"] * k
        return {"margin": d, "low": d - h, "high": d + h, "p": r["p_hac"],
                "method": f"HAC t (Newey–West, lag {r['lag']})", "n_days": r["n_days"],
                "unit": "mean daily RankIC" if k == 1.0 else "mean daily net return × 252"}
    r = stats.paired_metric_test(a, b, metrics=(metric,), n=n, level=level, align="inner").loc[metric]
    s = _sign(metric)
    lo, hi = sorted((s * r["low"], s * r["high"]))
    return {"margin": s * r["diff"], "low": lo, "high": hi, "p": float(r["p_bootstrap"]),
            "method": f"stationary block bootstrap (block {r['block']:.0f}, {n} reps)", "n_days": int(r["n_days"]),
            "unit": f"{metric} of the daily returns (standard convention)"}


def holm(p: pd.Series | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN kept as NaN): p_(i) × (m − i + 1), running max, capped at 1."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def _losses(results: pd.DataFrame, universe: str, column: str, models, profiles) -> pd.DataFrame:
    cols = {}
    for model in models:
        for prof in profiles:
            s = pooled_daily(results, universe, model, column, prof)
            if s is not None:
                cols[model_label(model)] = -s
                break
    if not cols:
        return pd.DataFrame()
    return pd.DataFrame(cols).dropna()


def mcs(results: pd.DataFrame, universe: str, column: str, models, profiles=("paper", "cpu", "smoke"),
        size: float = MCS_SIZE, reps: int = MCS_REPS, seed: int = 0) -> pd.DataFrame:
    """Hansen's Model Confidence Set of ``models`` on ``universe`` with loss −``column`` (daily RankIC or
    daily net return, seeds pooled day by day), ``arch.bootstrap.MCS`` (range statistic ``R``, stationary
    bootstrap, block √n, ``reps`` replicates, ``seed``). Rows: models; columns mean (of ``column``),
    pvalue (the MCS p-value), in_set (p ≥ size), rank (by mean, 1 = best), n_days."""
    from arch.bootstrap import MCS

    loss = _losses(results, universe, column, models, profiles)
    cols = ["mean", "pvalue", "in_set", "rank", "n_days"]
    if loss.shape[1] < 2:
        return pd.DataFrame(columns=cols)
    m = MCS(loss, size=size, reps=reps, method="R", bootstrap="stationary", seed=seed)
    m.compute()
    pv = m.pvalues["Pvalue"].reindex(loss.columns)
    out = pd.DataFrame({"mean": -loss.mean(), "pvalue": pv, "in_set": pv >= size})
    out["rank"] = out["mean"].rank(ascending=False, method="min").astype(int)
    out["n_days"] = len(loss)
    out.index.name = "model"
    out.attrs.update(size=size, reps=reps, block=int(math.sqrt(len(loss))), column=column)
    return out.sort_values("mean", ascending=False)[cols]

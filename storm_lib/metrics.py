"""Factor-quality and portfolio metrics under three explicit conventions.

Factor quality (RankIC, IC) follows Qlib's ``calc_ic`` (``qlib/contrib/eva/alpha.py``): one
cross-sectional correlation per date, summarised by mean and mean/std (not annualised).

Portfolio metrics come in three conventions (``CONVENTIONS``):

- ``standard``: textbook / empyrical-reloaded (``empyrical/stats.py``): geometric APY, ddof-1 vol and
  Sharpe annualised with sqrt(periods), drawdown measured from an initial wealth of 1, Calmar = APY/MDD.
- ``paper``: what STORM's published tables appear to use (reference/paper.md §10.2): as ``standard``
  but ASR = APY/AVO.
- ``official``: the authors' released code (``storm/metrics/metrics.py``; reference/official-code.md §7):
  simple APY, Sharpe × sqrt(n) with ddof 0, daily vol, drawdown peak starting at day 1, CR from the
  arithmetic mean, CW as a return.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import rankdata

CONVENTIONS = ("standard", "paper", "official")
IC_CONVENTIONS = ("standard", "official")
METRIC_COLUMNS = ("APY", "CW", "CR", "ASR", "MDD", "AVO")


def _check_convention(convention: str, allowed: tuple[str, ...]) -> None:
    if convention not in allowed:
        raise ValueError(f"unknown convention {convention!r}; expected one of {allowed}")


def _div(num: float, den: float) -> float:
    """num/den, NaN when the denominator is 0 or NaN."""
    return float(num / den) if den != 0 and np.isfinite(den) else float("nan")


# --------------------------------------------------------------------------- frames


def align_labels(scores: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """``labels`` restricted to the dates and tickers of ``scores`` (same order).

    Raises ValueError if a score date or ticker is missing from ``labels``.
    """
    if not isinstance(scores, pd.DataFrame) or not isinstance(labels, pd.DataFrame):
        raise ValueError("scores and labels must be pandas DataFrames (date × ticker)")
    if scores.index.has_duplicates or labels.index.has_duplicates:
        raise ValueError("scores and labels must not have duplicate dates")
    missing_dates = scores.index.difference(labels.index)
    if len(missing_dates):
        raise ValueError(
            f"misaligned frames: {len(missing_dates)} score date(s) not in labels, "
            f"first {missing_dates[0]!r}"
        )
    missing_cols = scores.columns.difference(labels.columns)
    if len(missing_cols):
        raise ValueError(
            f"misaligned frames: ticker(s) {list(missing_cols[:5])} of scores not in labels"
        )
    return labels.loc[scores.index, scores.columns]


def _masked(scores: pd.DataFrame, labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float arrays of scores and labels with NaN wherever either side is not finite, plus the mask."""
    y = align_labels(scores, labels).to_numpy(dtype=float)
    x = scores.to_numpy(dtype=float)
    mask = np.isfinite(x) & np.isfinite(y)
    return np.where(mask, x, np.nan), np.where(mask, y, np.nan), mask


def _rowwise_corr(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row over its masked entries (no NaN rule applied)."""
    n = mask.sum(axis=1)
    x, y = np.where(mask, x, 0.0), np.where(mask, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        xc = np.where(mask, x - x.sum(axis=1, keepdims=True) / n[:, None], 0.0)
        yc = np.where(mask, y - y.sum(axis=1, keepdims=True) / n[:, None], 0.0)
        return (xc * yc).sum(axis=1) / np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))


def _degenerate(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows with fewer than 2 usable stocks or a constant side (tested exactly on the raw values)."""

    def constant(a: np.ndarray) -> np.ndarray:
        return np.where(mask, a, -np.inf).max(axis=1) == np.where(mask, a, np.inf).min(axis=1)

    return (mask.sum(axis=1) < 2) | constant(x) | constant(y)


def rank_ic(scores: pd.DataFrame, labels: pd.DataFrame, convention: str = "standard") -> pd.Series:
    """Daily cross-sectional RankIC (Spearman) over stocks with a finite score and label.

    - ``standard``: Qlib ``calc_ic`` — Spearman with average ranks for ties.
    - ``official``: the authors' code (official-code.md §7) — ranks by double argsort (ties broken by
      column position), covariance /n over ddof-1 stds, i.e. (n−1)/n × Spearman when there are no ties.

    NaN on a date with fewer than 2 usable stocks or a constant side, in both conventions (the authors'
    code would rank a constant side by position instead).
    """
    _check_convention(convention, IC_CONVENTIONS)
    x, y, mask = _masked(scores, labels)
    if convention == "standard":
        rx, ry = (rankdata(a, axis=1, nan_policy="omit") for a in (x, y))  # NaN stays NaN
        corr = _rowwise_corr(rx, ry, mask)
    else:
        # Unusable entries sort last (+inf), so usable ones get ranks 0..n−1, ties by column position.
        def position_rank(a: np.ndarray) -> np.ndarray:
            order = np.argsort(np.where(mask, a, np.inf), axis=1, kind="stable")
            return np.argsort(order, axis=1, kind="stable").astype(float)

        n = mask.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = _rowwise_corr(position_rank(x), position_rank(y), mask) * (n - 1) / n
    corr[_degenerate(x, y, mask)] = np.nan
    return pd.Series(corr, index=scores.index, name="RankIC")


def ic(scores: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """Daily cross-sectional Pearson IC (Qlib ``calc_ic``), same masking and NaN rules as ``rank_ic``."""
    x, y, mask = _masked(scores, labels)
    corr = _rowwise_corr(x, y, mask)
    corr[_degenerate(x, y, mask)] = np.nan
    return pd.Series(corr, index=scores.index, name="IC")


def ic_summary(daily: pd.Series, convention: str = "standard") -> dict:
    """Mean and information ratio of a daily (Rank)IC series, not annualised.

    ``standard`` (Qlib): RankICIR = mean / std(ddof 1); ``official``: mean / (std(ddof 1) + 1e-6).
    NaN days are skipped.
    """
    _check_convention(convention, IC_CONVENTIONS)
    values = pd.Series(daily, dtype=float).dropna()
    if values.empty:
        raise ValueError("ic_summary: the daily series has no non-NaN value")
    mean, std = values.mean(), values.std(ddof=1)
    ir = _div(mean, std) if convention == "standard" else float(mean / (std + 1e-6))
    return {"RankIC": float(mean), "RankICIR": ir, "n_days": int(len(values))}


# --------------------------------------------------------------------------- portfolio


def _returns_array(returns) -> np.ndarray:
    r = np.asarray(returns, dtype=float).ravel()
    if r.size == 0:
        raise ValueError("returns is empty")
    bad = ~np.isfinite(r)
    if bad.all():
        raise ValueError("returns has no finite value (NaN-only input)")
    if bad.any():
        where = returns.index[bad.argmax()] if isinstance(returns, pd.Series) else int(bad.argmax())
        raise ValueError(f"returns has a non-finite value at {where!r}; pass complete daily returns")
    return r


def _max_drawdown(wealth: np.ndarray) -> float:
    """max_t (1 − V_t / max_{s≤t} V_s), positive."""
    return float(np.max(1.0 - wealth / np.maximum.accumulate(wealth)))


def drawdown(returns: pd.Series) -> pd.Series:
    """Standard drawdown curve 1 − V_t / max_{s≤t} V_s (positive), peak including V_0 = 1."""
    r = _returns_array(returns)
    wealth = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.maximum(wealth, 1.0))
    index = returns.index if isinstance(returns, pd.Series) else None
    return pd.Series(1.0 - wealth / peak, index=index, name="drawdown")


def portfolio_metrics(returns: pd.Series, convention: str = "standard", periods: int = 252) -> dict:
    """APY, CW, CR, ASR, MDD, AVO (+ n_days) of daily net returns under ``convention``.

    See the module docstring; formulas: ``standard`` = empyrical-reloaded, ``paper`` = reference/paper.md
    §10.2, ``official`` = reference/official-code.md §7.
    """
    _check_convention(convention, CONVENTIONS)
    if periods <= 0:
        raise ValueError(f"periods must be positive, got {periods}")
    r = _returns_array(returns)
    n = r.size
    wealth = np.cumprod(1.0 + r)
    growth = float(wealth[-1])
    mean = float(r.mean())
    std1 = float(r.std(ddof=1)) if n > 1 else float("nan")

    if convention == "official":
        std0 = float(r.std(ddof=0))
        mdd = _max_drawdown(wealth)  # peak starts at day 1's value
        out = {
            "APY": (growth - 1.0) / n * periods,
            "CW": growth - 1.0,
            "CR": _div(mean * periods, mdd),
            "ASR": _div(mean * np.sqrt(n), std0),
            "MDD": mdd,
            "AVO": std0,
        }
    else:
        apy = growth ** (periods / n) - 1.0 if growth > 0 else float("nan")
        avo = std1 * np.sqrt(periods)
        mdd = _max_drawdown(np.concatenate([[1.0], wealth]))
        asr = _div(mean, std1) * np.sqrt(periods) if convention == "standard" else _div(apy, avo)
        out = {"APY": apy, "CW": growth, "CR": _div(apy, mdd), "ASR": asr, "MDD": mdd, "AVO": avo}
    out = {key: float(value) for key, value in out.items()}
    out["n_days"] = n
    return out


def metrics_table(
    returns_by_name: Mapping[str, pd.Series], convention: str = "standard", periods: int = 252
) -> pd.DataFrame:
    """One row of ``portfolio_metrics`` per named return series, columns APY CW CR ASR MDD AVO."""
    rows = {name: portfolio_metrics(r, convention, periods) for name, r in returns_by_name.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(METRIC_COLUMNS))

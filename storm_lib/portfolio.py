"""TopK-Drop backtest and simple benchmarks, all indexed by the decision date t.

A return at date t is earned from close t to close t+1 (the label convention of the package).
The selection rule is the paper's TopK-Drop (reference/paper.md §4.1), which the authors' code
(``storm/downstream/portfolio.py``; reference/official-code.md §6) implements identically; the two
``variant``s differ only in how a day's return and cost are computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import metrics
from .metrics import align_labels

VARIANTS = ("paper", "official")


@dataclass
class BacktestResult:
    """Daily output of a backtest; every Series is indexed by decision date."""

    returns: pd.Series  # net return, close t → t+1
    gross: pd.Series  # return before cost
    turnover: pd.Series
    cost: pd.Series  # fraction of value paid (paper) / the code's cost ratio (official)
    holdings: pd.DataFrame  # bool, date × ticker

    @property
    def wealth(self) -> pd.Series:
        """Π(1 + r) up to and including each date (value at close t+1, starting from 1)."""
        return (1.0 + self.returns).cumprod().rename("wealth")

    def summary(self, convention: str = "standard", periods: int = 252) -> dict:
        """``metrics.portfolio_metrics`` of the net returns."""
        return metrics.portfolio_metrics(self.returns, convention, periods)


def _select(score: np.ndarray, prev: np.ndarray, k: int, d: int) -> np.ndarray:
    """One TopK-Drop step: boolean holdings for today given today's scores and yesterday's holdings."""
    eligible = np.isfinite(score)
    held = np.zeros(score.size, dtype=bool)
    if eligible.sum() <= k:
        held[eligible] = True
        return held
    # Descending score, ties by column order (stable sort); ineligible stocks last.
    order = np.argsort(-np.where(eligible, score, -np.inf), kind="stable")
    in_top = np.zeros(score.size, dtype=bool)
    in_top[order[:k]] = True
    held[:] = prev & in_top
    short = (k - d) - held.sum()
    if short > 0:  # keep the best-scored previous holdings until k − d stay
        candidates = order[(prev & eligible & ~held)[order]]
        held[candidates[:short]] = True
    fill = k - held.sum()
    held[order[~held[order]][:fill]] = True  # best-scored stocks not yet held
    return held


def topk_drop(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    k: int = 5,
    d: int = 3,
    cost: float = 1e-4,
    variant: str = "paper",
) -> BacktestResult:
    """TopK-Drop backtest: hold k stocks, replace at most d a day (reference/paper.md §4.1).

    Day 0 holds the k best-scored stocks. Day t keeps the previous holdings still in today's top k; if
    fewer than k − d remain, the best-scored previous holdings (by today's score) are kept until k − d;
    the rest is filled with the best-scored stocks not kept. Ties break by column order.

    Stocks with a non-finite (NaN) score are not eligible: a held stock whose score is NaN is sold, so
    more than d stocks may be replaced that day. With at most k eligible stocks, all eligible ones are
    held (none on a day without any: cash). A held stock with a NaN label is an error.

    ``variant="paper"``: equal weights 1/(number held), rebalanced daily; turnover = Σ|w_t − w̃_{t−1}|
    with w̃ yesterday's weights drifted by yesterday's returns (day 0: 1, from cash); the cost
    fraction cost × turnover is paid before investing: r = (1 − c)(1 + g) − 1.

    ``variant="official"`` (the authors' code, official-code.md §6, for the audit only): gross = the
    SUM of the holdings' labels; cost ratio = cost × 2 × (k − kept)/k (day 0: cost);
    r = gross × (1 − ratio); turnover = 2 × (k − kept)/k (day 0: 1).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if int(k) != k or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    if int(d) != d or not 0 <= d <= k:
        raise ValueError(f"d must be an integer with 0 <= d <= k (k={k}), got {d}")
    if not np.isfinite(cost) or not 0 <= cost < 1:
        raise ValueError(f"cost must be in [0, 1), got {cost}")
    if scores.empty:
        raise ValueError("scores is empty")
    if not scores.index.is_monotonic_increasing:
        raise ValueError("scores must be indexed by increasing dates")
    y_frame = align_labels(scores, labels)
    if not np.isfinite(scores.to_numpy(dtype=float)).any():
        raise ValueError("scores has no finite value (NaN-only input)")

    S = scores.to_numpy(dtype=float)
    Y = y_frame.to_numpy(dtype=float)
    T, N = S.shape
    H = np.zeros((T, N), dtype=bool)
    for t in range(T):
        H[t] = _select(S[t], H[t - 1] if t else np.zeros(N, dtype=bool), k, d)
        bad = H[t] & ~np.isfinite(Y[t])
        if bad.any():
            raise ValueError(
                f"label of held stock {scores.columns[bad.argmax()]!r} is NaN on {scores.index[t]}; "
                "pass only dates whose labels are known"
            )

    R = np.where(H, Y, 0.0)  # held stocks' labels, 0 elsewhere
    n_held = H.sum(axis=1)
    if variant == "paper":
        with np.errstate(invalid="ignore", divide="ignore"):
            W = np.where(n_held[:, None] > 0, H / n_held[:, None], 0.0)
        gross = (W * R).sum(axis=1)
        drifted = W * (1.0 + R) / (1.0 + gross)[:, None]
        drifted = np.vstack([np.zeros((1, N)), drifted[:-1]])  # yesterday's drifted weights, cash on day 0
        turnover = np.abs(W - drifted).sum(axis=1)
        fee = cost * turnover
        net = (1.0 - fee) * (1.0 + gross) - 1.0
    else:
        gross = R.sum(axis=1)
        kept = np.concatenate([[0], (H[1:] & H[:-1]).sum(axis=1)])
        turnover = 2.0 * (k - kept) / k
        turnover[0] = 1.0
        fee = cost * turnover
        net = gross * (1.0 - fee)

    idx = scores.index
    return BacktestResult(
        returns=pd.Series(net, index=idx, name="return"),
        gross=pd.Series(gross, index=idx, name="gross"),
        turnover=pd.Series(turnover, index=idx, name="turnover"),
        cost=pd.Series(fee, index=idx, name="cost"),
        holdings=pd.DataFrame(H, index=idx, columns=scores.columns),
    )


def benchmark_returns(prices: pd.Series, dates) -> pd.Series:
    """Buy-and-hold of one price series as next-day returns: r_t = P_{t+1}/P_t − 1 for t in ``dates``.

    t+1 is the next date of ``prices`` with a price (NaN prices are dropped as non-sessions).
    """
    p = pd.Series(prices, dtype=float).dropna().sort_index()
    if p.index.has_duplicates:
        raise ValueError("prices has duplicate dates")
    dates = pd.Index(dates)
    pos = p.index.get_indexer(dates)
    missing = dates[pos < 0]
    if len(missing):
        raise ValueError(f"prices has no value on {len(missing)} decision date(s), first {missing[0]!r}")
    last = dates[pos == len(p) - 1]
    if len(last):
        raise ValueError(f"prices do not cover the session after {last[0]!r}")
    values = p.to_numpy()
    return pd.Series(values[pos + 1] / values[pos] - 1.0, index=dates, name=prices.name or "benchmark")


def equal_weight_buy_and_hold(labels: pd.DataFrame) -> pd.Series:
    """Equal weights across all columns on the first date, then drift with returns (no rebalancing, no cost).

    The return on date t is Σ_i w̃_{t,i} y_{t,i}, i.e. V_{t+1}/V_t − 1 with V_t the mean of the
    stocks' growth Π_{s<t}(1 + y_s).
    """
    Y = labels.to_numpy(dtype=float)
    if Y.size == 0:
        raise ValueError("labels is empty")
    bad = ~np.isfinite(Y)
    if bad.any():
        t, i = np.argwhere(bad)[0]
        raise ValueError(f"label of {labels.columns[i]!r} is NaN on {labels.index[t]}; buy-and-hold needs all")
    value = np.concatenate([[1.0], np.cumprod(1.0 + Y, axis=0).mean(axis=1)])
    return pd.Series(value[1:] / value[:-1] - 1.0, index=labels.index, name="equal_weight")

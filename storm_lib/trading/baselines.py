"""Rule baselines for the trading task: Buy&Hold and a trade-on-the-sign-of-a-forecast policy.

Both use the accounting of :class:`storm_lib.trading.env.TradingEnv` (trade at the close, cost ``c`` of the
traded value per side, whole shares by default), so ``buy_and_hold`` equals running the env with "buy on
the first day, then hold", and ``signal_policy`` runs in the env through ``run_policy``.

Which price: the env and these helpers take any price series. The official trading code uses
``adj_close``; the paper's published Buy&Hold rows are reproduced by the split-adjusted, not
dividend-adjusted, ``close`` from 2021-04-01 (reference/paper.md §10.5), i.e.
``buy_and_hold(to_wide(prices, "close")[ticker], "2021-04-01", "2024-04-01")``. Those rows use annualised
metrics (``metrics.portfolio_metrics(..., "paper")``), while the published model rows follow the code's
``"official"`` convention (paper.md §10.6).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .env import BUY, HOLD, SELL, TradingEnv


def buy_and_hold(
    prices: pd.Series,
    start=None,
    end=None,
    cash: float = 1e5,
    cost: float = 1e-4,
    integer_shares: bool = True,
) -> pd.Series:
    """Equity of buying at the first close of [start, end] and holding to the last close.

    n = floor(cash / (P_0·(1 + c))) shares (fractional: cash / (P_0·(1 + c))), cost c·n·P_0, the rest stays
    in cash. Returns the value by date, the initial ``cash`` on the first date (before buying, as
    ``TradingEnv.equity``), then cash_left + n·P_k; ``daily_returns`` turns it into returns. Final value:
    cash/(1 + c)·P_end/P_0 plus the integer remainder r·(1 − P_end/(P_0(1 + c))), r the cash left over.
    """
    env = TradingEnv(prices, np.zeros((len(prices), 1), np.float32), start, end, mode="eval",
                     cash=cash, cost=cost, integer_shares=integer_shares)  # validates the span
    p = prices.loc[env.span].to_numpy(dtype=float)
    p0 = p[0]
    if integer_shares:
        n = math.floor(cash / (p0 * (1.0 + cost)))
        while n > 0 and n * p0 * (1.0 + cost) > cash:
            n -= 1
        left = cash - n * p0 - cost * n * p0
    else:
        n = cash / (p0 * (1.0 + cost))
        left = 0.0
    values = left + n * p
    values[0] = cash
    return pd.Series(values, index=pd.Index(env.span, name="date"), name="buy_and_hold")


def daily_returns(equity: pd.Series) -> pd.Series:
    """r_t = E_{t+1}/E_t − 1, indexed by the decision date t (the last date drops out).

    This is the package's convention (returns earned close t → close t+1, indexed by t) and equals the
    env's per-step ``reward`` column; feed it to ``metrics.portfolio_metrics``.
    """
    e = pd.Series(equity, dtype=float)
    r = (e.shift(-1) / e - 1.0).iloc[:-1]
    return r.rename("returns")


class SignalPolicy:
    """Trade on the sign of a forecast of the next-day return (see :func:`signal_policy`)."""

    needs_info = True  # run_policy calls it as policy(obs, info) and it reads info["date"]

    def __init__(self, scores: pd.Series):
        if isinstance(scores, pd.DataFrame):
            if scores.shape[1] != 1:
                raise ValueError("scores must be one stock's Series (or a one-column frame)")
            scores = scores.iloc[:, 0]
        if scores.index.has_duplicates:
            raise ValueError("scores has duplicate dates")
        self.scores = pd.Series(scores, dtype=float)

    @staticmethod
    def rule(score: float) -> int:
        """2 (buy all) if score > 0, 0 (sell all) if score < 0, 1 (hold) if 0 or NaN."""
        if score is None or not np.isfinite(score) or score == 0:
            return HOLD
        return BUY if score > 0 else SELL

    def actions(self, dates) -> np.ndarray:
        """The action for each date (a date without a score holds)."""
        s = self.scores.reindex(pd.Index(dates)).to_numpy(dtype=float)
        return np.array([self.rule(x) for x in s], dtype=np.int64)

    def __call__(self, obs, info) -> int:
        return self.rule(float(self.scores.get(info["date"], np.nan)))


def signal_policy(scores: pd.Series) -> SignalPolicy:
    """A policy from one stock's forecasts: ``scores[t]`` predicts the return close t → close t+1.

    Rule (all-in/all-out like the env): buy all when the forecast is > 0, sell all when < 0, hold when it
    is 0, NaN or missing for that date; a buy while long and a sell while flat are holds in the env. The
    forecast for day t must use information up to close t only (e.g. a LightGBM/LSTM/Transformer ŷ_t of
    the package's label). Use with ``run_policy(eval_env, signal_policy(scores))``.
    """
    return SignalPolicy(scores)

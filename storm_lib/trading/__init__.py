"""Algorithmic trading task (paper Table 3): a single-stock gymnasium environment and rule baselines.

See :mod:`storm_lib.trading.env` for the rules, the timing and the differences from the authors' code.
"""

from .baselines import SignalPolicy, buy_and_hold, daily_returns, signal_policy
from .env import ACTIONS, BUY, HOLD, SELL, ContinuousActionWrapper, TradingEnv, run_policy

__all__ = [
    "ACTIONS", "BUY", "HOLD", "SELL", "ContinuousActionWrapper", "SignalPolicy", "TradingEnv",
    "buy_and_hold", "daily_returns", "run_policy", "signal_policy",
]

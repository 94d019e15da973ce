"""Single-stock, long-only, all-in/all-out trading environment (paper Table 3).

The paper (reference/paper.md §4.2) states only "an MDP with actions {buy, hold, sell}, optimised with PPO";
the rules below follow the authors' released environment (``tools/trading_dynamic_dual_vqvae.py``;
reference/official-code.md §8) except where noted.

Rules
-----
- Actions ``Discrete(3)``: ``0`` = sell all, ``1`` = hold, ``2`` = buy all. Buying puts all cash into
  ``floor(cash / (P·(1 + c)))`` shares (``integer_shares=True``, as the official code) or into
  ``cash / (P·(1 + c))`` fractional shares; a buy that affords no share, and a sell while flat, execute as
  hold. The position is therefore flat or fully long (plus at most one share's worth of cash left over);
  no shorting, no leverage. A buy while already long spends the leftover cash if it now buys a share.
- Cost ``c`` (default 1e-4) of the traded value, per side, paid from cash. Initial cash 1e5.
- Trade price: the ``prices`` series given, ``adj_close`` by default as the official code (a
  dividend-back-adjusted price embeds a small look-ahead, official-code.md §10.7; pass the raw ``close``
  to avoid it). Trades execute at the decision day's close.

Timing (row ``t`` of ``observations`` must hold only what is known at close ``t``)::

    close t    V_t = cash + shares·P_t                     (value before trading)
               agent sees obs[t] (+ position flag), chooses a_t
               a_t executes at P_t; cost c·|n·P_t| is taken from cash
    close t+1  V_{t+1} = cash' + shares'·P_{t+1}
               step returns obs[t+1], reward_t = V_{t+1}/V_t − 1, info of day t+1;
               terminated when t+1 is the span's last date

So the cost of today's trade and the move t → t+1 are both in today's reward, and an action's payoff
arrives in the same step. The official environment values the portfolio at today's price right after
today's trade, r_t = V_t^after / V_{t−1}^after − 1 with V^after = V − cost, so the price move earned by
action a_t arrives one step later, in the same reward as the cost of a_{t+1}. Without costs the official
stream is ours shifted by one step; with costs only the step that books each cost differs, and
compounded both give the wealth V/V_0, theirs valued after the day's trade and ours before it. Our
rewards are the package's daily returns, indexed by decision date t as everywhere else in ``storm_lib``
(earned close t → close t+1).

Episodes
--------
``mode="eval"``: every ``reset`` starts at the span's first date and the episode runs to its last date
(``len(span) − 1`` steps, ``terminated`` on the step whose next date is the last one); nothing is random.
``mode="train"``: ``reset`` draws the start date with ``self.np_random`` (so ``reset(seed=s)`` fixes it)
uniformly among the admissible starts — every date that leaves ``episode_length`` steps (1 if None)
before the span's end, restricted to the first ``start_fraction`` of them (the official code draws from the
first 3/4 of its training span and runs to the end: ``start_fraction=0.75``). The episode ends with
``terminated`` at the span's end, or with ``truncated`` after ``episode_length`` steps. ``episode_length``
is ignored in eval mode.

Observation
-----------
``observations[t]`` (float32), as built by the caller: a feature window, STORM factor tokens, …
With ``include_position=True`` (default) the row is flattened and one entry is appended: the position flag
(1.0 when holding shares, else 0.0). All-in/all-out makes this flag the whole portfolio state (the cash
share is 1 − flag up to the integer-share remainder). The official observation has no position: the
agent cannot tell whether "buy" will trade; pass ``include_position=False`` to reproduce that (the row then
keeps its shape, e.g. (80, 512) tokens). With the flag, ``obs[:-1].reshape(env.row_shape)`` recovers the row.

Differences from the official code, in one place: gymnasium 5-tuple API instead of gym 0.26; the reward
is aligned with the action (above); optional position flag; the official ``reset`` crash
(official-code.md §10.28) does not exist here; the observation space is Box(−inf, inf) (the official
Box(−5, 5) is declared but not enforced); the evaluation span is whatever the caller passes (the official
code evaluates indices [64, len − 32) of its test span because of its windows).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

SELL, HOLD, BUY = 0, 1, 2
ACTIONS = {SELL: "sell", HOLD: "hold", BUY: "buy"}
HISTORY_COLUMNS = [
    "date", "action", "executed", "price", "trade", "shares", "cash", "value", "cost",
    "next_date", "next_value", "reward",
]


def _as_timestamp_or_none(x, index: pd.Index):
    if x is None:
        return None
    return pd.Timestamp(x) if isinstance(index, pd.DatetimeIndex) else x


class TradingEnv(gym.Env):
    """One stock, actions sell-all / hold / buy-all, reward = the day's relative change of value.

    Parameters
    ----------
    prices : pd.Series
        Trade price indexed by date (sorted, unique); ``adj_close`` by default in the package
        (``data.to_wide(prices, "adj_close")[ticker]``). Must be positive and finite inside the span.
    observations : array (T, ...)
        Row ``t`` aligned with ``prices.index[t]``, holding only information available at close t.
        Cast to float32; must be finite inside the span (rows outside it are never read).
    start, end : dates, inclusive
        The span to trade (None: the first / last date of ``prices``). Needs at least 2 dates.
    mode : "train" | "eval"
    episode_length : int or None
        Train mode only: steps per episode (``truncated`` when reached); None runs to the span's end.
    cash, cost : initial cash (1e5) and proportional cost per side (1e-4).
    include_position : append the position flag to the (flattened) observation (see module docstring).
    integer_shares : buy whole shares (official) or fractional ones.
    start_fraction : train mode: draw starts from the first fraction of the admissible ones (official 0.75).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        prices: pd.Series,
        observations,
        start=None,
        end=None,
        mode: str = "train",
        episode_length: int | None = None,
        cash: float = 1e5,
        cost: float = 1e-4,
        include_position: bool = True,
        integer_shares: bool = True,
        start_fraction: float = 1.0,
    ):
        super().__init__()
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        if not isinstance(prices, pd.Series):
            raise ValueError("prices must be a date-indexed pandas Series")
        if prices.index.has_duplicates or not prices.index.is_monotonic_increasing:
            raise ValueError("prices index must be sorted and unique")
        obs = np.asarray(observations, dtype=np.float32)
        if obs.ndim < 1 or obs.shape[0] != len(prices):
            raise ValueError(
                f"observations must have one row per price date: {obs.shape} vs {len(prices)} prices"
            )
        if not (cash > 0 and math.isfinite(cash)):
            raise ValueError(f"cash must be positive, got {cash}")
        if not (0 <= cost < 1):
            raise ValueError(f"cost must be in [0, 1), got {cost}")
        if episode_length is not None and episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        if not (0 < start_fraction <= 1):
            raise ValueError(f"start_fraction must be in (0, 1], got {start_fraction}")

        index = prices.index
        lo = _as_timestamp_or_none(start, index)
        hi = _as_timestamp_or_none(end, index)
        mask = np.ones(len(index), bool)
        if lo is not None:
            mask &= np.asarray(index >= lo)
        if hi is not None:
            mask &= np.asarray(index <= hi)
        pos = np.flatnonzero(mask)
        if len(pos) < 2:
            raise ValueError(f"the span {start}..{end} holds {len(pos)} price date(s); at least 2 needed")
        self._i0, self._i1 = int(pos[0]), int(pos[-1])

        p = prices.to_numpy(dtype=float)
        span_p = p[self._i0 : self._i1 + 1]
        bad = ~(np.isfinite(span_p) & (span_p > 0))
        if bad.any():
            raise ValueError(f"price is missing or not positive on {index[self._i0 + bad.argmax()]!r}")
        span_o = obs[self._i0 : self._i1 + 1]
        bad_rows = ~np.isfinite(span_o.reshape(len(span_o), -1)).all(axis=1)
        if bad_rows.any():
            raise ValueError(f"observation is not finite on {index[self._i0 + bad_rows.argmax()]!r}")

        self.prices = prices
        self.dates = index
        self._p = p
        self._obs = obs
        self.mode = mode
        self.episode_length = episode_length
        self.initial_cash = float(cash)
        self.cost = float(cost)
        self.include_position = bool(include_position)
        self.integer_shares = bool(integer_shares)
        self.start_fraction = float(start_fraction)
        self.row_shape = tuple(obs.shape[1:])

        shape = (int(np.prod(self.row_shape)) + 1,) if self.include_position else self.row_shape
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)
        self.action_space = spaces.Discrete(3)

        self._t: int | None = None
        self._start: int | None = None
        self._steps = 0
        self._done = True
        self._cash = self.initial_cash
        self._shares = 0.0
        self._records: list[dict] = []

    # ------------------------------------------------------------------ properties

    @property
    def span(self) -> pd.Index:
        """The dates of the span (inclusive)."""
        return self.dates[self._i0 : self._i1 + 1]

    @property
    def admissible_starts(self) -> pd.Index:
        """Train mode: the dates ``reset`` may start from (eval mode: the first date only)."""
        if self.mode == "eval":
            return self.dates[self._i0 : self._i0 + 1]
        need = self.episode_length or 1
        last = max(self._i0, self._i1 - need)
        n = last - self._i0 + 1
        n = max(1, int(math.floor(self.start_fraction * n)))
        return self.dates[self._i0 : self._i0 + n]

    def _value(self, t: int) -> float:
        return self._cash + self._shares * self._p[t]

    def _observation(self, t: int) -> np.ndarray:
        row = self._obs[t]
        if not self.include_position:
            return np.array(row, dtype=np.float32, copy=True)
        flag = np.float32(1.0 if self._shares > 0 else 0.0)
        return np.concatenate([row.reshape(-1), [flag]]).astype(np.float32, copy=False)

    def _info(self, t: int, trade: float = 0.0, cost: float = 0.0) -> dict:
        return {
            "date": self.dates[t],
            "price": float(self._p[t]),
            "cash": float(self._cash),
            "shares": float(self._shares),
            "value": float(self._value(t)),
            "trade": float(trade),
            "cost": float(cost),
        }

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.mode == "eval":
            start = self._i0
        else:
            n = len(self.admissible_starts)
            start = self._i0 + int(self.np_random.integers(n))
        self._start = self._t = start
        self._steps = 0
        self._done = False
        self._cash = self.initial_cash
        self._shares = 0.0
        self._records = []
        return self._observation(start), self._info(start)

    def _execute(self, action: int, price: float) -> tuple[int, float, float]:
        """Trade at ``price``; returns (executed action, signed shares traded, cost paid)."""
        c = self.cost
        if action == BUY and self._cash > 0:
            if self.integer_shares:
                n = math.floor(self._cash / (price * (1.0 + c)))
                while n > 0 and n * price * (1.0 + c) > self._cash:  # guard against rounding up
                    n -= 1
            else:
                n = self._cash / (price * (1.0 + c))
            if n > 0:
                fee = c * n * price
                self._cash = 0.0 if not self.integer_shares else self._cash - n * price - fee
                self._shares += n
                return BUY, float(n), float(fee)
        elif action == SELL and self._shares > 0:
            n = self._shares
            fee = c * n * price
            self._cash += n * price - fee
            self._shares = 0.0
            return SELL, -float(n), float(fee)
        return HOLD, 0.0, 0.0

    def step(self, action):
        if self._done or self._t is None:
            raise RuntimeError("the episode is over: call reset()")
        a = np.asarray(action)
        if a.size != 1:
            raise ValueError(f"expected one discrete action, got {action!r}")
        a = int(a.reshape(-1)[0])
        if a not in ACTIONS:
            raise ValueError(f"action must be 0 (sell), 1 (hold) or 2 (buy), got {action!r}")

        t = self._t
        price = float(self._p[t])
        value = self._value(t)
        executed, trade, fee = self._execute(a, price)
        t1 = t + 1
        next_value = self._value(t1)
        reward = next_value / value - 1.0
        self._records.append({
            "date": self.dates[t], "action": a, "executed": executed, "price": price, "trade": trade,
            "shares": float(self._shares), "cash": float(self._cash), "value": float(value),
            "cost": fee, "next_date": self.dates[t1], "next_value": float(next_value),
            "reward": float(reward),
        })
        self._t = t1
        self._steps += 1
        terminated = t1 >= self._i1
        truncated = (
            not terminated
            and self.mode == "train"
            and self.episode_length is not None
            and self._steps >= self.episode_length
        )
        self._done = terminated or truncated
        info = self._info(t1, trade, fee)
        info.update(trade_date=self.dates[t], trade_price=price, action=a, executed=executed)
        return self._observation(t1), float(reward), bool(terminated), bool(truncated), info

    # ------------------------------------------------------------------ records

    def history(self) -> pd.DataFrame:
        """One row per step of the current episode, indexed 0..n−1.

        ``date``/``price``: decision date t and its close P_t (the execution price); ``action``: requested,
        ``executed``: what happened (an unaffordable buy or a sell while flat is 1 = hold); ``trade``: shares
        bought (+) or sold (−); ``shares``/``cash``: after the trade, held over t → t+1; ``value``: V_t at
        close t before trading; ``cost``: paid at t; ``next_value``: V_{t+1};
        ``reward`` = next_value/value − 1.
        """
        return pd.DataFrame(self._records, columns=HISTORY_COLUMNS)

    def equity(self) -> pd.Series:
        """Portfolio value by date: the initial cash at the start date, then V at each following close."""
        if self._start is None:
            raise RuntimeError("call reset() first")
        h = self.history()
        dates = [self.dates[self._start], *h["next_date"]]
        values = [self.initial_cash, *h["next_value"]]
        return pd.Series(values, index=pd.Index(dates, name="date"), name="equity", dtype=float)


class ContinuousActionWrapper(gym.ActionWrapper):
    """Box(−1, 1, (1,)) → the 3 discrete actions, for continuous-action agents (SAC) on ``TradingEnv``.

    a < −1/3 → 0 (sell all), a > 1/3 → 2 (buy all), otherwise 1 (hold); the interval is cut into equal
    thirds, and values outside [−1, 1] are clipped first. Stable-baselines3's SAC only supports Box actions
    (anchors.md §10), so the "SAC" baseline is SAC on this wrapper, not a discrete SAC.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def action(self, action) -> int:
        a = float(np.clip(np.asarray(action, dtype=float).reshape(-1)[0], -1.0, 1.0))
        if a < -1.0 / 3.0:
            return SELL
        if a > 1.0 / 3.0:
            return BUY
        return HOLD


def _act(policy, obs, info, deterministic: bool):
    if hasattr(policy, "predict"):  # a stable-baselines3 model
        action, _ = policy.predict(obs, deterministic=deterministic)
        return action
    if getattr(policy, "needs_info", False):  # e.g. baselines.SignalPolicy, which reads info["date"]
        return policy(obs, info)
    return policy(obs)


def run_policy(
    env: gym.Env,
    policy: Callable | object,
    deterministic: bool = True,
    seed: int | None = None,
) -> pd.DataFrame:
    """Roll ``env`` from ``reset(seed=seed)`` until the episode ends; return ``env.unwrapped.history()``.

    ``policy`` is a stable-baselines3 model (its ``predict(obs, deterministic=...)`` is used), a callable
    ``policy(obs) -> action``, or an object with ``needs_info = True`` called as ``policy(obs, info)``
    (``info["date"]`` is the decision date). Meant for an eval-mode env, which always covers the whole
    span from its first date; ``env`` may be wrapped (e.g. ``ContinuousActionWrapper`` for SAC).
    """
    base = env.unwrapped
    if not isinstance(base, TradingEnv):
        raise ValueError("run_policy needs a TradingEnv (possibly wrapped)")
    obs, info = env.reset(seed=seed)
    while True:
        action = _act(policy, obs, info, deterministic)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return base.history()

"""Trivial floors: one-line price signals a learned model has to beat, scored each day from prices up to
that day, and the equal-weight buy-and-hold total-return market.

Floors (score of stock i on day t from adjusted closes P up to and including close t; higher = buy):

* ``reversal_1d``, ``reversal_5d``: −(P_t / P_{t−n} − 1), short-term reversal (Jegadeesh 1990, Lehmann 1990);
* ``momentum_20d``, ``momentum_60d``: P_t / P_{t−n} − 1, price momentum over n trading days (Jegadeesh &
  Titman 1993; here without the usual skip month, as a floor);
* ``low_vol_20d``: −std(r_{t−19..t}) of daily returns r_s = P_s / P_{s−1} − 1 (the low-volatility anomaly,
  Ang et al. 2006; Baker, Bradley & Wurgler 2011).

They are deterministic (no fit, no seed) and evaluated by the same RankIC and TopK-Drop code as the
models (:mod:`storm_lib.tasks.portfolio`). ``ew_buy_hold`` is the universe's stocks bought in equal
weights on the first day of a split and held (adjusted closes: dividends reinvested;
:func:`storm_lib.portfolio.equal_weight_buy_and_hold`), the total-return market of both universes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import to_wide

#: floor name -> (kind, lookback in trading days)
FLOORS = {"reversal_1d": ("reversal", 1), "reversal_5d": ("reversal", 5), "momentum_20d": ("momentum", 20),
          "momentum_60d": ("momentum", 60), "low_vol_20d": ("low_vol", 20)}
#: the equal-weight buy-and-hold total-return market (a pseudo-model of the portfolio task)
EW_MARKET = "ew_buy_hold"
#: the paper-style row labels of the floors and of the total-return market
LABELS = {"reversal_1d": "Floor: 1d reversal", "reversal_5d": "Floor: 5d reversal",
          "momentum_20d": "Floor: 20d momentum", "momentum_60d": "Floor: 60d momentum",
          "low_vol_20d": "Floor: 20d low vol", EW_MARKET: "Market (EW, total return)"}


def floor_signal(close: pd.DataFrame, name: str) -> pd.DataFrame:
    """The floor ``name`` on a wide frame of adjusted closes (date × ticker): row t uses rows ≤ t only.

    Missing closes stay missing (no fill across a gap); the first ``lookback`` rows of a ticker are NaN.
    """
    if name not in FLOORS:
        raise ValueError(f"unknown floor {name!r}; use one of {list(FLOORS)}")
    kind, n = FLOORS[name]
    close = close.sort_index()
    if kind in ("reversal", "momentum"):
        ret = close / close.shift(n) - 1.0
        return -ret if kind == "reversal" else ret
    daily = close / close.shift(1) - 1.0
    return -daily.rolling(n, min_periods=n).std(ddof=1)


def floor_scores(prices: pd.DataFrame, name: str, dates, tickers, valid: np.ndarray | None = None) -> pd.DataFrame:
    """Score frame (``dates`` × ``tickers``) of floor ``name`` from a long price frame (``adj_close``),
    NaN where ``valid`` (a boolean array of that shape, e.g. ``panel.valid[t]``) is False."""
    sig = floor_signal(to_wide(prices, "adj_close"), name)
    out = sig.reindex(index=pd.DatetimeIndex(dates), columns=list(tickers))
    if valid is not None:
        out = out.where(np.asarray(valid, dtype=bool))
    out.index.name = "date"
    return out.astype(np.float64)

"""Observations for the trading agents: row ``t`` holds only what is known at close ``t``.

Two builders, both returning one array per stock with one row per panel date (rows outside the
requested days are zeros and never read by :class:`~storm_lib.trading.env.TradingEnv`):

* :func:`feature_windows`: the stock's own normalised feature rows over the last ``window`` days,
  (T, window, F), the input of the DQN / SAC / PPO baselines "on raw features" (paper Table 3).
* :func:`factor_tokens`: the STORM factor embedding of the window ending at t, as the official
  trading code feeds PPO (reference/official-code.md §8): the 64 CS tokens plus the stock's 16 TS tokens,
  (T, W + P, 2d) for STORM; CS tokens only for STORM-w/o-TS, TS tokens only for STORM-w/o-CS. A token is
  [encoder output ‖ quantised code] (:meth:`storm_lib.models.storm.STORM.factors`).

Causality follows from the panel's: its values at t are built from prices up to t and normalised across
stocks on day t only (tested in tests/test_panel.py), and a STORM model sees only the window ending at t.
"""

from __future__ import annotations

import numpy as np

from ..panel import Panel


def _stock_index(panel: Panel, tickers) -> list[int]:
    if isinstance(tickers, str):
        tickers = [tickers]
    missing = [s for s in tickers if s not in panel.tickers]
    if missing:
        raise ValueError(f"tickers not in the panel: {missing}; it holds {len(panel.tickers)} tickers")
    return [panel.tickers.index(s) for s in tickers]


def feature_windows(panel: Panel, ticker: str, window: int = 16) -> np.ndarray:
    """The stock's feature window ending at each date: array (T, window, F), float32.

    Row t holds ``panel.values[t − window + 1 .. t, i]`` (normalised as the panel is: cross-sectional
    z-scores by default; ``window_zscore`` panels are z-scored within each window here as in
    ``Panel.windows``). Days where the stock is not yet valid, and the first ``window − 1`` rows, are 0.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    (i,) = _stock_index(panel, ticker)
    x = np.where(panel.valid[:, i, None], panel.values[:, i, :], 0.0).astype(np.float32)  # (T, F)
    T, F = x.shape
    out = np.zeros((T, window, F), np.float32)
    if T >= window:
        view = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)  # (T − w + 1, F, w)
        out[window - 1:] = np.moveaxis(view, -1, 1)
    if panel.normalization == "window_zscore":
        out = panel._window_zscore(out[:, :, None, :])[:, :, 0, :]
    out[~panel.valid[:, i]] = 0.0
    return out


def factor_tokens(model, panel: Panel, tickers, t: np.ndarray | None = None,
                  batch_size: int | None = None) -> dict[str, np.ndarray]:
    """STORM factor tokens per stock: {ticker: array (T, L, 2d)} aligned with ``panel.dates``.

    ``model`` is a fitted :class:`~storm_lib.models.storm.StormModel` (any variant); ``t`` the window ends
    to compute (default every date with a full window); other rows are 0. L = W CS tokens + P TS tokens
    for STORM (CS first, as the official state), W for STORM-w/o-TS, P for STORM-w/o-CS.
    One pass of the model over ``t`` serves every stock in ``tickers``.
    """
    idx = _stock_index(panel, tickers)
    names = [panel.tickers[i] for i in idx]
    T = len(panel.dates)
    t = np.arange(panel.window - 1, T) if t is None else np.asarray(t, dtype=np.int64)
    if len(t) == 0:
        raise ValueError("no window ends given")
    if (t < panel.window - 1).any() or (t >= T).any():
        raise IndexError(f"window ends must lie in [{panel.window - 1}, {T - 1}]")
    f = model.factors(panel, t, keys=["cs_tokens", "ts_tokens"], stocks=idx, batch_size=batch_size)
    cs = f.get("cs_tokens")            # (B, W, D)
    ts = f.get("ts_tokens")            # (B, n_stocks, P, D)
    out = {}
    for k, name in enumerate(names):
        parts = ([cs] if cs is not None else []) + ([ts[:, k]] if ts is not None else [])
        tok = np.concatenate(parts, axis=1).astype(np.float32)
        full = np.zeros((T, *tok.shape[1:]), np.float32)
        full[t] = tok
        out[name] = full
    return out

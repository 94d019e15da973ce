"""Panels: the date x ticker x feature tensor every model reads, its labels, protocols and windows.

A :class:`Panel` holds one base array ``values`` of shape (T, N, F) (float32), the labels
``labels[t, i]`` = return of stock i from close t to close t+1 (see :func:`storm_lib.data.next_day_returns`),
and a ``valid`` mask. A model sample is the window of the W days ending at day t; windows are drawn
by index from the base array (:meth:`Panel.windows`), so the (T, W, N, F) tensor of all overlapping
windows, tens of GB for SP500, is never built.

Time-series hygiene (tested by perturbing the future, ``tests/test_panel.py``):

* features at t use prices up to close t (``storm_lib.features``);
* every normalisation here is causal: a day's input depends on data up to that day only;
* a day t belongs to a split when t is inside the split **and** its label is realised inside it
  (date of t+1 <= split end), so no label crosses a split boundary (the official code lets the
  last training label use the first test close, official-code.md §10.6).

Normalisations (``normalization=``):

* ``cs_zscore`` (default): per day and feature, a robust cross-sectional z-score
  (median, 1.4826 x MAD; std when MAD = 0), clipped to +-``clip``. Uses only day t's cross-section.
* ``cs_rank``: per day and feature, cross-sectional rank mapped to [-1, 1] (Gu, Kelly & Xiu 2021).
* ``window_zscore``: per window, stock and feature, z-score over the W days of the window, applied
  when the window is drawn.
* ``prev_block``: the official code's ``WindowedScaler`` (official-code.md §1): per stock, rows cut
  into consecutive blocks of W; block k is z-scored with the mean/std (ddof 0) of block k-1, block 0
  with its own. Blocks are anchored at each stock's first row (not at each split's start, as in
  the official code), and a stock counts as valid only once its block 0 is complete, so block 0's
  own statistics never reach a window that ends before them.
* ``none``: raw features.

Calendar features (DAY, WEEKDAY, MONTH) come pre-scaled by fixed constants and are never
renormalised. Missing inputs (before listing, warm-up) are 0 after normalisation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import data as data_mod

CALENDAR = ("DAY", "WEEKDAY", "MONTH")
NORMALIZATIONS = ("cs_zscore", "cs_rank", "window_zscore", "prev_block", "none")
SPLITS = ("train", "valid", "test")


# ----------------------------------------------------------------------------------------------
# Protocols
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """Date ranges (inclusive) of the train, validation and test splits."""

    name: str
    train: tuple[pd.Timestamp, pd.Timestamp]
    valid: tuple[pd.Timestamp, pd.Timestamp]
    test: tuple[pd.Timestamp, pd.Timestamp]
    note: str = ""

    def __post_init__(self):
        for s in SPLITS:
            lo, hi = (pd.Timestamp(x) for x in getattr(self, s))
            if lo > hi:
                raise ValueError(f"protocol {self.name!r}: {s} starts after it ends")
            object.__setattr__(self, s, (lo, hi))

    @property
    def valid_is_test(self) -> bool:
        """True for the official protocol, where model selection looks at the test period."""
        return self.valid == self.test

    def span(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        lo = min(getattr(self, s)[0] for s in SPLITS)
        hi = max(getattr(self, s)[1] for s in SPLITS)
        return lo, hi


def _p(name, train, valid, test, note):
    return Protocol(name, tuple(map(pd.Timestamp, train)), tuple(map(pd.Timestamp, valid)),
                    tuple(map(pd.Timestamp, test)), note)


PROTOCOLS: dict[str, Protocol] = {
    "clean": _p(
        "clean", ("2008-04-01", "2019-03-31"), ("2019-04-01", "2021-03-31"), ("2021-04-01", "2024-03-31"),
        "our default: a real validation split for early stopping and model selection",
    ),
    "paper": _p(
        "paper", ("2008-04-01", "2021-03-31"), ("2021-04-01", "2024-03-31"), ("2021-04-01", "2024-03-31"),
        "as the official code: train to 2021-03-31, validation = test (official-code.md §10.1)",
    ),
    "sample": _p(
        "sample", ("2008-04-01", "2016-12-31"), ("2017-01-01", "2019-12-31"), ("2020-01-01", "2022-12-28"),
        "for the embedded sample (skfolio, ends 2022-12-28): same shape, earlier dates",
    ),
}


def get_protocol(protocol: str | Protocol) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    try:
        return PROTOCOLS[protocol]
    except KeyError:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}") from None


# ----------------------------------------------------------------------------------------------
# Causal normalisations of the base array
# ----------------------------------------------------------------------------------------------


def _nanmedian_axis1(x: np.ndarray) -> np.ndarray:
    """Median over axis 1 ignoring NaN, via one sort (much faster than np.nanmedian here)."""
    s = np.sort(x, axis=1)  # NaN sort last
    n = (~np.isnan(x)).sum(axis=1, keepdims=True)
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0), axis=1)
    hi = np.take_along_axis(s, np.maximum(n // 2, 0), axis=1)
    med = 0.5 * (lo + hi)
    return np.where(n > 0, med, np.nan)


def cs_zscore(x: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """Robust cross-sectional z-score over axis 1 (stocks) of a (T, N, F) array. Day-local."""
    med = _nanmedian_axis1(x)
    mad = _nanmedian_axis1(np.abs(x - med)) * 1.4826
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # days where a feature is all NaN
        std = np.nanstd(x, axis=1, keepdims=True)
        scale = np.where(mad > 1e-12, mad, std)
        z = (x - med) / scale
    z = np.where(np.isfinite(z), z, 0.0)
    return np.clip(z, -clip, clip).astype(np.float32)


def cs_rank(x: np.ndarray) -> np.ndarray:
    """Cross-sectional rank over axis 1 mapped to [-1, 1] (ties averaged). Day-local."""
    ranks = pd.DataFrame(x.transpose(0, 2, 1).reshape(-1, x.shape[1])).rank(axis=1, method="average")
    n = ranks.notna().sum(axis=1).to_numpy()[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(n > 1, 2.0 * (ranks.to_numpy() - 1.0) / (n - 1.0) - 1.0, 0.0)
    r = np.nan_to_num(r, nan=0.0).reshape(x.shape[0], x.shape[2], x.shape[1]).transpose(0, 2, 1)
    return r.astype(np.float32)


def prev_block(x: np.ndarray, first_row: np.ndarray, block: int) -> np.ndarray:
    """The official previous-block scaler (official-code.md §1), per stock from its first row."""
    out = np.zeros_like(x, dtype=np.float32)
    T = x.shape[0]
    for i, start in enumerate(first_row):
        if start >= T:
            continue
        xs = x[start:, i, :].astype(np.float64)
        n_blocks = -(-len(xs) // block)
        for b in range(n_blocks):
            ref = xs[max(b - 1, 0) * block:(max(b - 1, 0) + 1) * block]
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mu, sd = np.nanmean(ref, axis=0), np.nanstd(ref, axis=0)
            seg = (xs[b * block:(b + 1) * block] - mu) / (sd + 1e-12)
            out[start + b * block:start + (b + 1) * block, i, :] = np.nan_to_num(seg, nan=0.0)
    return out


# ----------------------------------------------------------------------------------------------
# Panel
# ----------------------------------------------------------------------------------------------


@dataclass
class Panel:
    """Features, labels and validity on a (date, ticker) grid; windows drawn by index.

    Build with :meth:`from_prices`. ``values`` is normalised (except for ``window_zscore``, which
    normalises each drawn window); ``labels`` hold NaN where unknown; ``valid[t, i]`` is True when
    stock i is listed at t with at least ``min_history`` sessions of history.
    """

    values: np.ndarray            # (T, N, F) float32
    labels: np.ndarray            # (T, N) float32, NaN where unknown
    valid: np.ndarray             # (T, N) bool
    dates: pd.DatetimeIndex
    tickers: list[str]
    names: list[str]
    window: int = 64
    normalization: str = "cs_zscore"
    clip: float = 3.0
    info: dict = field(default_factory=dict)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_prices(
        cls,
        prices: pd.DataFrame,
        *,
        feature_set: str = "auto",
        window: int = 64,
        normalization: str = "cs_zscore",
        clip: float = 3.0,
        min_history: int | None = None,
        cache: bool = True,
        verbose: bool = True,
    ) -> "Panel":
        """Features (cached), labels and causal normalisation from a validated long price frame."""
        from .features import build_features

        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; known: {', '.join(NORMALIZATIONS)}")
        if window < 1:
            raise ValueError("window must be >= 1")
        feats = build_features(prices, feature_set=feature_set, cache=cache, verbose=verbose)
        labels = data_mod.next_day_returns(prices).reindex(index=feats.dates, columns=feats.tickers)
        return cls.from_arrays(
            feats.values, labels.to_numpy(np.float32), feats.observed, feats.dates, list(feats.tickers),
            list(feats.names), window=window, normalization=normalization, clip=clip,
            min_history=min_history, info={"feature_set": feature_set, "n_raw_features": len(feats.names)},
        )

    @classmethod
    def from_arrays(
        cls, raw, labels, listed, dates, tickers, names, *, window=64, normalization="cs_zscore",
        clip=3.0, min_history=None, info=None,
    ) -> "Panel":
        """Normalise a raw (T, N, F) feature array; ``listed[t, i]`` marks stocks with a price at t."""
        raw = np.asarray(raw, dtype=np.float32)
        T, N, F = raw.shape
        if labels.shape != (T, N) or listed.shape != (T, N) or len(dates) != T or len(tickers) != N or len(names) != F:
            raise ValueError("raw, labels, listed, dates, tickers and names disagree in shape")
        listed = np.asarray(listed, dtype=bool)
        # sessions since listing, counted from each stock's first listed day (causal)
        age = np.cumsum(listed, axis=0)
        first_row = np.where(listed.any(axis=0), listed.argmax(axis=0), T)
        min_history = window if min_history is None else int(min_history)
        valid = listed & (age >= max(min_history, 1))
        raw = np.where(listed[:, :, None], raw, np.nan)   # nothing before listing

        cal = np.array([n in CALENDAR for n in names])
        values = np.empty_like(raw)
        values[:, :, cal] = np.nan_to_num(raw[:, :, cal], nan=0.0)
        idx = np.flatnonzero(~cal)
        for chunk in np.array_split(idx, max(1, len(idx) // 16)):  # bounded temporaries
            x = raw[:, :, chunk]
            if normalization == "cs_zscore":
                values[:, :, chunk] = cs_zscore(x, clip)
            elif normalization == "cs_rank":
                values[:, :, chunk] = cs_rank(x)
            elif normalization == "prev_block":
                values[:, :, chunk] = prev_block(x, first_row, window)
            else:  # window_zscore (done per window) and none keep raw values
                values[:, :, chunk] = np.nan_to_num(x, nan=0.0) if normalization == "none" else x
        if normalization == "prev_block":
            valid &= age >= window  # block 0 complete
        if normalization in ("cs_zscore", "cs_rank"):
            values[~listed] = 0.0
        labels = np.where(listed & np.isfinite(labels), labels, np.nan).astype(np.float32)
        return cls(values, labels, valid, pd.DatetimeIndex(dates), list(tickers), list(names),
                   window, normalization, clip, dict(info or {}))

    # -- shape ---------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self.values.shape

    def __repr__(self) -> str:
        T, N, F = self.shape
        return (f"Panel({T} days {self.dates[0]:%Y-%m-%d}..{self.dates[-1]:%Y-%m-%d} x {N} tickers x "
                f"{F} features, window={self.window}, normalization={self.normalization!r})")

    # -- splits --------------------------------------------------------------------------------
    def split(self, protocol: str | Protocol, name: str) -> np.ndarray:
        """Indices t of the days in split ``name`` of ``protocol``: start <= date_t <= end, the label
        realised by the split end (date_{t+1} <= end), and a full window of W days in the panel."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {SPLITS}")
        proto = get_protocol(protocol)
        lo, hi = getattr(proto, name)
        first_ok = self.dates[self.window - 1] if len(self.dates) >= self.window else None
        if first_ok is None or lo < first_ok or lo > self.dates[-1]:
            raise data_mod.DataError(
                f"{proto.name}/{name} starts {lo:%Y-%m-%d}, but the panel's first full {self.window}-day "
                f"window ends {first_ok:%Y-%m-%d} and its data end {self.dates[-1]:%Y-%m-%d}"
                if first_ok is not None else f"panel shorter than one window ({self.window} days)"
            )
        d = self.dates
        nxt = np.append(d[1:].to_numpy(), np.datetime64("NaT"))
        in_split = (d >= lo) & (d <= hi) & (pd.DatetimeIndex(nxt) <= hi)
        in_split &= np.arange(len(d)) >= self.window - 1
        return np.flatnonzero(in_split)

    def splits(self, protocol: str | Protocol) -> dict[str, np.ndarray]:
        return {s: self.split(protocol, s) for s in SPLITS}

    # -- windows -------------------------------------------------------------------------------
    def windows(self, t: np.ndarray | int) -> np.ndarray:
        """Inputs for window ends ``t``: array (B, W, N, F), days ascending, drawn by index."""
        t = np.atleast_1d(np.asarray(t, dtype=np.int64))
        if (t < self.window - 1).any() or (t >= len(self.dates)).any():
            raise IndexError(f"window ends must lie in [{self.window - 1}, {len(self.dates) - 1}]")
        rows = t[:, None] + np.arange(-self.window + 1, 1)[None, :]
        x = self.values[rows]
        if self.normalization == "window_zscore":
            x = self._window_zscore(x)
        return x

    def _window_zscore(self, x: np.ndarray) -> np.ndarray:
        cal = np.array([n in CALENDAR for n in self.names])
        out = x.copy()
        sub = x[..., ~cal]
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (before listing)
            mu = np.nanmean(sub, axis=1, keepdims=True)
            sd = np.nanstd(sub, axis=1, keepdims=True)
            z = np.where(sd > 1e-12, (sub - mu) / sd, 0.0)
        out[..., ~cal] = np.clip(np.nan_to_num(z, nan=0.0), -self.clip, self.clip)
        return out.astype(np.float32)

    # -- labels and frames ---------------------------------------------------------------------
    def frame(self, array: np.ndarray, t: np.ndarray) -> pd.DataFrame:
        """A date x ticker frame (a score frame when ``array`` holds scores) for days ``t``."""
        return pd.DataFrame(np.asarray(array), index=self.dates[np.asarray(t)], columns=self.tickers)

    def label_frame(self, t: np.ndarray | None = None) -> pd.DataFrame:
        t = np.arange(len(self.dates)) if t is None else np.asarray(t)
        return self.frame(self.labels[t], t)

    def feature_frame(self, name: str) -> pd.DataFrame:
        """One (normalised) feature as a date x ticker frame, NaN where not valid."""
        try:
            j = self.names.index(name)
        except ValueError:
            raise KeyError(f"no feature {name!r}") from None
        return pd.DataFrame(np.where(self.valid, self.values[:, :, j], np.nan), index=self.dates, columns=self.tickers)

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

import json
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import data as data_mod

CALENDAR = ("DAY", "WEEKDAY", "MONTH")
NORMALIZATIONS = ("cs_zscore", "cs_rank", "window_zscore", "prev_block", "none")
SPLITS = ("train", "valid", "test")


# ----------------------------------------------------------------------------------------------
# Protocols
# ----------------------------------------------------------------------------------------------


#: A split may end up to this many weekdays after the data's last session without counting as cut
#: short by the data (holidays such as Good Friday; ``clean`` ends on Sunday 2024-03-31, the data on
#: Thursday 2024-03-28).
SHORT_TOLERANCE_DAYS = 3
_SPLIT_RE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})\s*:\s*(\d{4}-\d{2}-\d{2})\s*$")


class ProtocolNote(UserWarning):
    """A protocol was adapted to the data (a train start clipped to the warm-up, a span cut short by the
    data that the protocol accepts). Shown once per message."""


@dataclass(frozen=True)
class Protocol:
    """Date ranges (inclusive) of the train, validation and test splits.

    ``Protocol(name, train=(start, end), valid=(start, end), test=(start, end), note="", allow_short=False)``.
    Checked on construction: every split starts before it ends, the splits do not overlap and come in
    the order train, valid, test (``valid == test`` is allowed: the official ``paper`` protocol). On a
    panel (:meth:`Panel.split`): a day belongs to a split only if its label is realised inside it; a train
    start inside the warm-up (before the first full window) is clipped with a printed note; a split that
    the data cut short (it ends more than :data:`SHORT_TOLERANCE_DAYS` weekdays after the last session) is
    an error unless ``allow_short`` (then a note says so). Build one from text with :meth:`parse`
    (``train=2000-04-03:2005-12-30,valid=2006-01-03:2006-12-29,test=2007-01-03:2008-03-28``).
    """

    name: str
    train: tuple[pd.Timestamp, pd.Timestamp]
    valid: tuple[pd.Timestamp, pd.Timestamp]
    test: tuple[pd.Timestamp, pd.Timestamp]
    note: str = ""
    allow_short: bool = False

    def __post_init__(self):
        for s in SPLITS:
            try:
                lo, hi = (pd.Timestamp(x) for x in getattr(self, s))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"protocol {self.name!r}: {s} must be two dates (start, end): {exc}") from None
            if lo > hi:
                raise ValueError(f"protocol {self.name!r}: {s} starts {lo:%Y-%m-%d}, after it ends {hi:%Y-%m-%d}")
            object.__setattr__(self, s, (lo, hi))
        object.__setattr__(self, "allow_short", bool(self.allow_short))
        if self.train[1] >= self.valid[0]:
            raise ValueError(f"protocol {self.name!r}: train (to {self.train[1]:%Y-%m-%d}) must end before "
                             f"valid starts ({self.valid[0]:%Y-%m-%d})")
        if self.valid != self.test and self.valid[1] >= self.test[0]:
            raise ValueError(f"protocol {self.name!r}: valid (to {self.valid[1]:%Y-%m-%d}) must end before "
                             f"test starts ({self.test[0]:%Y-%m-%d}), or equal test (the official protocol)")

    @property
    def valid_is_test(self) -> bool:
        """True for the official protocol, where model selection looks at the test period."""
        return self.valid == self.test

    def span(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        lo = min(getattr(self, s)[0] for s in SPLITS)
        hi = max(getattr(self, s)[1] for s in SPLITS)
        return lo, hi

    def text(self) -> str:
        """The canonical one-line form :meth:`parse` reads back (the protocol of a run spec)."""
        parts = [f"{s}={getattr(self, s)[0]:%Y-%m-%d}:{getattr(self, s)[1]:%Y-%m-%d}" for s in SPLITS]
        return ",".join(parts + (["allow_short=true"] if self.allow_short else []))

    @classmethod
    def parse(cls, text: str, allow_short: bool | None = None, name: str | None = None) -> "Protocol":
        """A protocol from ``train=START:END,valid=START:END,test=START:END[,allow_short=true]`` (dates
        ``YYYY-MM-DD``, inclusive; commas or newlines between items), or from a file holding that text or
        a JSON object ``{"train": [start, end], "valid": [...], "test": [...], "allow_short": false}``.
        ``allow_short`` given here overrides the text's. The name is the canonical text (:meth:`text`)."""
        source = str(text)
        path = Path(source).expanduser()
        if "=" not in source and path.is_file():
            source = path.read_text()
        fields_: dict = {}
        body = source.strip()
        if body.startswith("{"):
            try:
                obj = json.loads(body)
            except ValueError as exc:
                raise ValueError(f"split file {text!r}: not valid JSON ({exc})") from None
            for key, value in obj.items():
                if key in SPLITS:
                    if not isinstance(value, (list, tuple)) or len(value) != 2:
                        raise ValueError(f"split {key!r} must be [start, end], got {value!r}")
                    fields_[key] = tuple(value)
                elif key == "allow_short":
                    fields_[key] = bool(value)
                else:
                    raise ValueError(f"unknown split key {key!r}; use train, valid, test, allow_short")
        else:
            for item in filter(None, (x.strip() for x in re.split(r"[,\n;]", body))):
                key, sep, value = item.partition("=")
                key = key.strip()
                if not sep:
                    raise ValueError(f"split item {item!r} is not KEY=VALUE; expected e.g. "
                                     "train=2000-04-03:2005-12-30,valid=2006-01-03:2006-12-29,test=2007-01-03:2008-03-28")
                if key in SPLITS:
                    m = _SPLIT_RE.match(value)
                    if not m:
                        raise ValueError(f"split {key!r}: expected START:END as YYYY-MM-DD:YYYY-MM-DD, got {value!r}")
                    fields_[key] = (m.group(1), m.group(2))
                elif key == "allow_short":
                    if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(f"allow_short must be true or false, got {value!r}")
                    fields_[key] = value.strip().lower() in ("true", "1", "yes")
                else:
                    raise ValueError(f"unknown split key {key!r}; use train, valid, test, allow_short")
        missing = [s for s in SPLITS if s not in fields_]
        if missing:
            raise ValueError(f"split {text!r} lacks {', '.join(missing)}; give train=START:END,valid=...,test=...")
        if allow_short is not None:
            fields_["allow_short"] = bool(allow_short)
        proto = cls("custom", fields_["train"], fields_["valid"], fields_["test"], "given by the user",
                    fields_.get("allow_short", False))
        return replace(proto, name=name or proto.text())


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


def is_split_text(protocol) -> bool:
    """Whether ``protocol`` is split dates (text with ``=`` or a file) rather than a protocol name."""
    return isinstance(protocol, str) and protocol not in PROTOCOLS and (
        "=" in protocol or Path(protocol).expanduser().is_file())


def get_protocol(protocol: str | Protocol) -> Protocol:
    """A :class:`Protocol` from itself, a name of :data:`PROTOCOLS`, or split dates (:meth:`Protocol.parse`:
    ``train=START:END,valid=START:END,test=START:END`` or a file holding them)."""
    if isinstance(protocol, Protocol):
        return protocol
    if protocol in PROTOCOLS:
        return PROTOCOLS[protocol]
    if is_split_text(protocol):
        return Protocol.parse(protocol)
    raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}, or split dates "
                     "train=START:END,valid=START:END,test=START:END (or a file holding them)")


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
# Splits
# ----------------------------------------------------------------------------------------------


def split_indices(dates: pd.DatetimeIndex, window: int, protocol: str | Protocol, name: str) -> np.ndarray:
    """Indices t into ``dates`` of the days in split ``name`` of ``protocol`` (:meth:`Panel.split`; the
    runner calls it on the price calendar to check a protocol before anything runs): start <= date_t <= end, the label
    realised by the split end (date_{t+1} <= end), and a full window of W days in the panel.

    A train start inside the warm-up (before the first full window) is clipped to it with a
    :class:`ProtocolNote`; a validation or test start there is an error. A split that ends more than
    :data:`SHORT_TOLERANCE_DAYS` weekdays after the data's last session is cut short by the data: an
    error unless ``protocol.allow_short`` (then a note says where it ends)."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; use one of {SPLITS}")
    proto = get_protocol(protocol)
    lo, hi = getattr(proto, name)
    dates = pd.DatetimeIndex(dates)
    if len(dates) < window:
        raise data_mod.DataError(f"panel shorter than one window ({window} days)")
    first_ok, last = dates[window - 1], dates[-1]
    if lo > last:
        raise data_mod.DataError(
            f"{proto.name}/{name} starts {lo:%Y-%m-%d}, after the data end ({last:%Y-%m-%d}); "
            "give split dates inside the data (--split train=START:END,valid=...,test=...)")
    if lo < first_ok:
        if name != "train":
            raise data_mod.DataError(
                f"{proto.name}/{name} starts {lo:%Y-%m-%d}, but the panel's first full {window}-day "
                f"window ends {first_ok:%Y-%m-%d} (data from {dates[0]:%Y-%m-%d})")
        if hi < first_ok:
            raise data_mod.DataError(
                f"{proto.name}/train ends {hi:%Y-%m-%d}, before the panel's first full {window}-day "
                f"window ({first_ok:%Y-%m-%d}; data from {dates[0]:%Y-%m-%d})")
        warnings.warn(f"protocol {proto.name}: train start {lo:%Y-%m-%d} lies in the {window}-day "
                      f"warm-up of data from {dates[0]:%Y-%m-%d}; clipped to {first_ok:%Y-%m-%d}",
                      ProtocolNote, stacklevel=3)
    missing = int(np.busday_count((last + pd.Timedelta(days=1)).date(), (hi + pd.Timedelta(days=1)).date())) \
        if hi > last else 0
    if missing > SHORT_TOLERANCE_DAYS:
        msg = (f"{proto.name}/{name} ends {hi:%Y-%m-%d}, but the data end {last:%Y-%m-%d} "
               f"({missing} weekdays short)")
        if not proto.allow_short:
            raise data_mod.DataError(msg + ": the split would be cut short by the data. Give an end inside "
                                     "the data, or accept the shorter span (--allow-short / allow_short=true)")
        warnings.warn(msg + f"; accepted (allow_short): the {name} span is cut short", ProtocolNote, stacklevel=3)
    d = dates
    nxt = np.append(d[1:].to_numpy(), np.datetime64("NaT"))
    in_split = (d >= lo) & (d <= hi) & (pd.DatetimeIndex(nxt) <= hi)
    in_split &= np.arange(len(d)) >= window - 1
    return np.flatnonzero(in_split)



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
            min_history=min_history, info={"feature_set": feats.feature_set, "feature_set_requested": feature_set,
                                            "n_raw_features": len(feats.names)},
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
        realised by the split end (date_{t+1} <= end), and a full window of W days in the panel
        (:func:`split_indices`: a train start in the warm-up is clipped with a note, a split cut short
        by the data is an error unless the protocol allows it)."""
        return split_indices(self.dates, self.window, protocol, name)

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

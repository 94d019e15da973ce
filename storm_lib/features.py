"""Alpha158 features (Qlib's definitions, without VWAP0) plus three calendar features.

What is computed
----------------
``alpha158`` (160 features, in this order):

* 9 K-bar features ``KMID KLEN KMID2 KUP KUP2 KLOW KLOW2 KSFT KSFT2``;
* 3 price ratios ``OPEN0 HIGH0 LOW0`` (Qlib's ``VWAP0`` is left out: daily Yahoo bars carry no VWAP);
* 29 rolling operators x windows 5, 10, 20, 30, 60, operator-major (``ROC5 ROC10 ... ROC60 MA5 ...``):
  ``ROC MA STD BETA RSQR RESI MAX MIN QTLU QTLD RANK RSV IMAX IMIN IMXD CORR CORD CNTP CNTN CNTD
  SUMP SUMN SUMD VMA VSTD WVMA VSUMP VSUMN VSUMD``;
* 3 calendar features ``DAY WEEKDAY MONTH`` scaled to [-0.5, 0.5] by fixed constants:
  ``(day-1)/30 - 0.5``, ``weekday/4 - 0.5`` (Monday = -0.5, Friday = +0.5), ``(month-1)/11 - 0.5``.
  No data-dependent normalisation.

``alpha158_close`` (78 features): the 15 operators that need nothing but the close
(``ROC MA STD BETA RSQR RESI QTLU QTLD RANK CNTP CNTN CNTD SUMP SUMN SUMD``) x 5 windows, plus calendar.
``auto`` picks ``alpha158`` when open, high, low and volume are all present and not all-NaN, otherwise
``alpha158_close``, with a ``UserWarning`` naming the missing columns and the dropped operator groups.

``official152`` (152 features): the authors' released variant, reproduced for the protocol audit only
(section "official152" below); ``auto`` never selects it.

The formulas are Qlib's, as facts (``microsoft/qlib``: ``qlib/contrib/data/loader.py: Alpha158DL``,
operators in ``qlib/data/ops.py`` and ``qlib/data/_libs/rolling.pyx``); the code here is our own,
vectorised over all tickers. With C, O, H, L the adjusted prices, V the volume, eps = 1e-12 and
dC = C - Ref(C,1), dV = V - Ref(V,1):

=========================  ====================================================================
KMID, KLEN                 (C-O)/O; (H-L)/O
KMID2                      (C-O)/(H-L+eps)
KUP, KUP2                  (H-max(O,C))/O; (H-max(O,C))/(H-L+eps)
KLOW, KLOW2                (min(O,C)-L)/O; (min(O,C)-L)/(H-L+eps)
KSFT, KSFT2                (2C-H-L)/O; (2C-H-L)/(H-L+eps)
OPEN0, HIGH0, LOW0         O/C, H/C, L/C
ROCd                       Ref(C,d)/C
MAd, STDd                  Mean(C,d)/C; Std(C,d)/C
BETAd, RSQRd, RESId        Slope(C,d)/C; Rsquare(C,d); Resi(C,d)/C
MAXd, MINd                 Max(H,d)/C; Min(L,d)/C
QTLUd, QTLDd               Quantile(C,d,0.8)/C; Quantile(C,d,0.2)/C
RANKd                      Rank(C,d)
RSVd                       (C-Min(L,d))/(Max(H,d)-Min(L,d)+eps)
IMAXd, IMINd, IMXDd        IdxMax(H,d)/d; IdxMin(L,d)/d; (IdxMax(H,d)-IdxMin(L,d))/d
CORRd                      Corr(C, Log(V+1), d)
CORDd                      Corr(C/Ref(C,1), Log(V/Ref(V,1)+1), d)
CNTPd, CNTNd, CNTDd        Mean(C>Ref(C,1),d); Mean(C<Ref(C,1),d); CNTP-CNTN
SUMPd, SUMNd, SUMDd        Sum(max(dC,0),d)/(Sum(|dC|,d)+eps); Sum(max(-dC,0),d)/(...); (SUMP-SUMN numerators)/(...)
VMAd, VSTDd                Mean(V,d)/(V+eps); Std(V,d)/(V+eps)
WVMAd                      Std(|C/Ref(C,1)-1|*V,d)/(Mean(|C/Ref(C,1)-1|*V,d)+eps)
VSUMPd, VSUMNd, VSUMDd     as SUMP/SUMN/SUMD with dV in place of dC
=========================  ====================================================================

(The authors' released code computes a deviating variant, see ``official-code.md`` section 1; we compute
the definitions above by default, and that variant as ``official152``, below.)

``official152``: the official code's features (audit switch (f), never the default)
-----------------------------------------------------------------------------------
The 152 columns of the authors' processor (``storm/processor/processor.py: cal_factor``), as
``official-code.md`` §1 describes them, quirks included, for the protocol audit only
(:mod:`storm_lib.audit`). ``auto`` never picks it; it needs open, high, low and volume. With C, O, H, L
the **raw** ``close``/``open``/``high``/``low`` columns (not dividend-adjusted, unlike ``alpha158``),
A = ``adj_close``, V = volume, r_t = C_t/C_{t-1} - 1, w in 5, 10, 20, 30, 60:

* 5 price levels ``open high low close adj_close`` (raw levels; the normalisation scales them);
* 9 K-bar ``kmid`` (C-O)/**C**, ``kmid2``, ``klen``, ``kup``, ``kup2``, ``klow``, ``klow2``, ``ksft``,
  ``ksft2`` (Qlib's other formulas, in the processor's order);
* 27 operators x 5 windows, operator-major (``roc_5 ... roc_60 ma_5 ...``): ``roc`` C_{t-w}/C_t;
  ``ma``, ``std`` (ddof 1), ``max``, ``min`` (of **C**, not H/L), ``qtlu``/``qtld`` (0.8/0.2 linear
  quantiles) of C over the window, each / C_t; ``beta`` (C_{t-w} - C_t)/(w C_t) (a reversed end-point
  difference, no regression); ``rank`` = percentile rank of C_t in its window (average ties, in (0, 1])
  **/ w**; ``imax``/``imin`` = 0-based position of the first max of H / min of L from the window's oldest
  row, / w; ``imxd`` = (imax - imin position) / w; ``rsv`` = (C - m)/(M - m + 1e-12) with
  m = min(L_t, C_{t-w}), M = max(H_t, C_{t-w}) element-wise (not rolling); ``cntp``/``cntn`` = share of
  r > 0 / r < 0 in the window (r_0 is NaN and counts as neither), ``cntd`` = cntp - cntn; ``corr`` and
  ``cord`` **constant** (official-code.md §10.22: the second series is passed as pandas' ``pairwise``
  argument, so C, resp. C_t/C_{t-1}, is correlated with itself): 1 on every complete window whose values
  are not all equal, 0 on a flat window (0/0) and in the warm-up; ``sump`` = sum max(r, 0) /
  (sum |r| + 1e-12) (the clipping as pandas < 3 executed it; under copy-on-write the official line is a
  no-op, §10.23), ``sumn`` = 1 - sump, ``sumd`` = 2 sump - 1; ``vma``, ``vstd`` = mean/std of V over the
  window / (V_t + 1e-12); ``wvma`` = std/(mean + 1e-12) of |r| V; ``vsump``/``vsumn``/``vsumd`` as
  sump/sumn/sumd on dV = V_t - V_{t-1};
* 3 calendar fields ``day`` (1-31), ``weekday`` (Monday = 0 ... 6), ``month`` (1-12), raw integers. They
  are lower-case on purpose: :mod:`storm_lib.panel` leaves only the upper-case Alpha158 calendar columns
  unnormalised, and the official scaler z-scores these like every other column.

Semantics: pandas' ``rolling(w)`` defaults, so a value needs w non-NaN observations (``shift(w)``: w
earlier rows); each ticker is computed on its own rows (its sessions in date order, no calendar
reindexing, as the official processor does per asset file); then ``+-inf -> NaN -> 0`` on every cell
that has an input row, warm-up rows included (so warm-up values are 0, not NaN). Cells without an
input row are NaN, as for every set. Every value at row t reads rows <= t of its ticker only (tested
by perturbing and deleting the future). The ``adj_close`` level at t is an input column taken as given:
a back-adjusted series embeds later dividends in its level (official-code.md §10.7); nothing here reads
a later row.

Operator semantics (decided from Qlib's source; all windows end at, and include, day t)
---------------------------------------------------------------------------------------
* Calendar: the sorted union of the input dates. Each field is pivoted once to a T x N matrix; a
  (date, ticker) without an input row is NaN. ``Ref(x, k)`` is x k rows earlier on that calendar.
* Partial windows: every rolling operator uses ``min_periods = 1`` (Qlib) and skips NaN, so the
  first days after a ticker's listing give values from the shorter window. A late-starting ticker is
  therefore treated exactly like Qlib's per-instrument series that begins on its listing day.
* ``±inf`` inside a rolling window is treated as missing (pandas' rolling machinery, which Qlib uses,
  converts inf to NaN before aggregating). This only matters for ``CORD`` after a zero-volume day,
  where ``Log(V/Ref(V,1)+1)`` is +inf.
* ``Std``: sample std (ddof = 1), so a one-observation window gives NaN. ``Mean``/``Sum``: NaN only
  when the window has no valid value. ``Quantile``: linear interpolation (pandas rolling quantile).
  Mean/Sum/Std/Max/Min/Quantile/Rank/Corr are pandas' rolling kernels, the very code Qlib calls, so
  their rounding is Qlib's too; e.g. pandas' online variance leaves a residue of about
  sqrt(machine eps) x price level on an exactly constant window (``STD5`` ~ 2e-8 instead of 0).
* ``Rank(x,d)``: percentile of today's value among the valid values of its window, ties averaged, in
  (0, 1] (= ``scipy.stats.percentileofscore(kind="rank")/100`` = pandas ``rolling.rank(pct=True)``,
  which current Qlib calls); NaN when today's value is NaN.
* ``IdxMax/IdxMin(x,d)``: 1-based position of the first maximum/minimum, counted from the oldest day
  of the window; the window is truncated at the ticker's first row (Qlib's per-instrument series
  starts there). NaN values are skipped (Qlib's ``np.argmax`` would return a NaN's position instead;
  this can only differ for a ticker with a hole in its rows, which validated data do not have).
* ``Slope/Rsquare/Resi(x,d)``: ordinary least squares of x on its calendar position within the
  window, over the valid points (Qlib's Cython ``rolling_slope``/``rsquare``/``resi``): slope, R^2, and
  the residual of day t. One valid point gives 0/0 = NaN (as in Qlib). Sums are exact integer
  cumulative sums for the positions and pandas' compensated rolling sums for the values, centred on
  day t, so no per-day or per-ticker loop is needed. ``Rsquare`` is set to NaN where the rolling std
  of x is ~0 (``np.isclose(std, 0, atol=2e-5)``, Qlib's rule).
* ``Corr(x,y,d)``: rolling Pearson correlation over pairwise-complete observations (pandas), set to
  NaN where the rolling std of x or of y is ~0 (same ``atol = 2e-5`` rule; each std on its own series).
* ``x > Ref(x,1)``: a comparison with a missing yesterday is False, exactly as in Qlib (so ``CNTP``
  on a ticker's first day is 0); where today's row is missing the indicator is missing.
* ``Greater`` / ``Less`` are ``np.maximum`` / ``np.minimum`` (NaN propagates), ``Log`` is natural log.
  The constants eps = 1e-12 and the std tolerance are absolute, as in Qlib.

NaN rules of the output
-----------------------
* Every feature of a (date, ticker) without an input row is NaN: before a ticker's first date, after
  its last, and in any hole. ``FeatureArray.observed`` tells which cells had a row.
* ``±inf`` results (a zero denominator) become NaN. Other NaN are warm-up NaN (e.g. ``ROC60`` in the
  first 60 rows of a ticker, ``STD``/``CORR`` on a ticker's first day) and are kept: this module does not
  fill anything; the panel module decides fills and normalisation. (Exception: ``official152`` fills
  them with 0, as the official code does.)
* Large finite values are kept as Qlib computes them: on a zero-volume day ``VMA``/``VSTD`` divide by
  ``0 + 1e-12`` and reach ~1e19 (12 such bars in the S&P 500 data). Normalisation must be robust to them.

Prices and causality
--------------------
Features use dividend- and split-adjusted OHLC: open, high, low and close are each multiplied by the
factor ``adj_close/close`` of their row (what Qlib's adjusted ``$open``/``$high``/``$low``/``$close`` are);
volume is used as given (Yahoo volume is already split-adjusted). A back-adjustment factor depends on
dividends paid *after* its date, which looks like a leak. It is not one here: the factor of day s is
``a(s) * K`` where ``a(s)`` only involves dividends in (s, t] for any later t, and ``K`` collects all
dividends after t, common to every day of a window ending at t. Every feature is a ratio of prices
within one window ending at t (homogeneous of degree 0 in prices: ``Mean(C)/C``, ``Slope(C)/C``, ranks,
R^2, correlations, ...), so ``K`` cancels and each feature at t depends on information up to t only.
(The only departures from exact scale invariance are the absolute eps = 1e-12 and std tolerance
2e-5, negligible at real price scales.) In code terms: each row's factor is computed from that row
alone, and every operator reads only rows at or before t, so changing or deleting rows after t leaves
every feature at dates <= t bit-identical (tested).

Layout, ordering and caching
----------------------------
``FeatureArray.values`` is float32 of shape (T, N, F) (computed in float64), dates are the sorted union
of the input dates (``datetime64[ns]``), tickers are **sorted** (lexicographic; independent of the
input's row order and of future rows), names follow :func:`alpha158_names`. :func:`build_features`
caches ``values`` as ``.npy`` and the metadata as ``.npz`` under ``cache_dir("features")``, keyed by
(``FEATURE_VERSION``, resolved feature set, :func:`data_hash` of the prices); files are written to a
temporary name and renamed, values first and metadata last, so a reader never sees a half-written
entry. ``FEATURE_VERSION`` must be bumped whenever outputs change.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import config
from .utils import atomic_write

__all__ = [
    "FEATURE_VERSION",
    "FEATURE_SETS",
    "WINDOWS",
    "FeatureArray",
    "alpha158_names",
    "official152_names",
    "resolve_feature_set",
    "compute_features",
    "build_features",
    "data_hash",
    "cache_paths",
]

FEATURE_VERSION = 1

EPS = 1e-12  # Qlib's 1e-12 in denominators
STD_ATOL = 2e-5  # Qlib: np.isclose(rolling std, 0, atol=2e-5) -> NaN for Rsquare and Corr
WINDOWS = (5, 10, 20, 30, 60)

KBAR = ("KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2")
PRICE = ("OPEN0", "HIGH0", "LOW0")
ROLLING_OPS = (
    "ROC", "MA", "STD", "BETA", "RSQR", "RESI", "MAX", "MIN", "QTLU", "QTLD", "RANK", "RSV",
    "IMAX", "IMIN", "IMXD", "CORR", "CORD", "CNTP", "CNTN", "CNTD", "SUMP", "SUMN", "SUMD",
    "VMA", "VSTD", "WVMA", "VSUMP", "VSUMN", "VSUMD",
)  # fmt: skip
CLOSE_ONLY_OPS = (
    "ROC", "MA", "STD", "BETA", "RSQR", "RESI", "QTLU", "QTLD", "RANK",
    "CNTP", "CNTN", "CNTD", "SUMP", "SUMN", "SUMD",
)  # fmt: skip
CALENDAR = ("DAY", "WEEKDAY", "MONTH")

#: the official code's 152 features (official-code.md §1), names as in its processor
OFFICIAL_PRICES = ("open", "high", "low", "close", "adj_close")
OFFICIAL_KBAR = ("kmid", "kmid2", "klen", "kup", "kup2", "klow", "klow2", "ksft", "ksft2")
OFFICIAL_OPS = (
    "roc", "ma", "std", "beta", "max", "min", "qtlu", "qtld", "rank", "imax", "imin", "imxd", "rsv",
    "cntp", "cntn", "cntd", "corr", "cord", "sump", "sumn", "sumd", "vma", "vstd", "wvma",
    "vsump", "vsumn", "vsumd",
)  # fmt: skip
OFFICIAL_CALENDAR = ("day", "weekday", "month")

#: the concrete feature sets; ``"auto"`` resolves to ``alpha158`` or ``alpha158_close`` from the data
#: (never to ``official152``, the audit switch (f): ask for it by name)
FEATURE_SETS = ("alpha158", "alpha158_close", "official152")
_ALL_SET_NAMES = FEATURE_SETS + ("auto",)
#: the columns that ``alpha158`` (and ``official152``) need beyond close and adj_close
OHLV = ("open", "high", "low", "volume")
SCHEMA = ("date", "ticker", "open", "high", "low", "close", "adj_close", "volume")


def _rolling_names(ops) -> list[str]:
    return [f"{op}{d}" for op in ops for d in WINDOWS]


def official152_names() -> list[str]:
    """The 152 names of ``official152``, in the official processor's column order: 5 prices, 9 K-bar,
    27 operators x 5 windows (operator-major, ``roc_5 roc_10 ... vsumd_60``), 3 calendar fields."""
    ops = [f"{op}_{d}" for op in OFFICIAL_OPS for d in WINDOWS]
    return list(OFFICIAL_PRICES) + list(OFFICIAL_KBAR) + ops + list(OFFICIAL_CALENDAR)


def alpha158_names(feature_set: str = "alpha158") -> list[str]:
    """The ordered feature names of ``feature_set`` (``"alpha158"``: 160, ``"alpha158_close"``: 78,
    ``"official152"``: 152, see :func:`official152_names`)."""
    if feature_set == "alpha158":
        return list(KBAR) + list(PRICE) + _rolling_names(ROLLING_OPS) + list(CALENDAR)
    if feature_set == "alpha158_close":
        return _rolling_names(CLOSE_ONLY_OPS) + list(CALENDAR)
    if feature_set == "official152":
        return official152_names()
    if feature_set == "auto":
        raise ValueError(
            "feature_set 'auto' depends on the data; call resolve_feature_set(prices) first, "
            f"or pass one of {list(FEATURE_SETS)}"
        )
    raise ValueError(f"unknown feature_set {feature_set!r}; valid: {list(_ALL_SET_NAMES)}")


# --------------------------------------------------------------------------------------------
# Result container
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class FeatureArray:
    """Features on a dense (date, ticker) grid.

    ``values[t, i, k]`` is feature ``names[k]`` of ``tickers[i]`` on ``dates[t]`` (float32, NaN where
    undefined). ``observed[t, i]`` is True where the input had a row. ``from_cache`` and
    ``cache_path`` say where :func:`build_features` got it from.
    """

    values: np.ndarray
    dates: pd.DatetimeIndex
    tickers: list[str]
    names: list[str]
    feature_set: str = "alpha158"
    observed: np.ndarray | None = None
    from_cache: bool = False
    cache_path: Path | None = field(default=None, repr=False)

    def __post_init__(self):
        t, n, f = self.values.shape
        if (len(self.dates), len(self.tickers), len(self.names)) != (t, n, f):
            raise ValueError(
                f"values shape {self.values.shape} does not match "
                f"{len(self.dates)} dates x {len(self.tickers)} tickers x {len(self.names)} names"
            )
        self._name_index = {name: k for k, name in enumerate(self.names)}

    def __repr__(self) -> str:
        t, n, f = self.values.shape
        span = f"{self.dates[0].date()}..{self.dates[-1].date()}" if t else "empty"
        return (
            f"FeatureArray({self.feature_set!r}: {t} dates x {n} tickers x {f} features, {span}, "
            f"from_cache={self.from_cache})"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.values.shape

    def feature_index(self, name: str) -> int:
        try:
            return self._name_index[name]
        except KeyError:
            raise KeyError(f"no feature {name!r} in feature set {self.feature_set!r}") from None

    def frame(self, name: str) -> pd.DataFrame:
        """One feature as a date x ticker DataFrame."""
        k = self.feature_index(name)
        return pd.DataFrame(np.asarray(self.values[:, :, k]), index=self.dates, columns=self.tickers)

    def day(self, date) -> pd.DataFrame:
        """All features of one date as a ticker x feature DataFrame."""
        t = self.dates.get_loc(pd.Timestamp(date))
        return pd.DataFrame(np.asarray(self.values[t]), index=self.tickers, columns=self.names)


# --------------------------------------------------------------------------------------------
# Hashing, feature-set resolution
# --------------------------------------------------------------------------------------------


def data_hash(prices: pd.DataFrame) -> str:
    """sha256 hex digest of the schema columns of ``prices`` (names, row order and exact values).

    Dates are hashed as int64 nanoseconds, tickers through their factorisation (the distinct strings
    in order of appearance plus one int64 code per row), numeric columns as float64 bytes, so the
    digest does not depend on the datetime unit, the string dtype or an int/float volume dtype.
    Schema columns that are absent are recorded as absent; other columns are ignored.
    """
    h = hashlib.sha256()
    h.update(f"storm-prices-v1|rows={len(prices)}".encode())
    for col in SCHEMA:
        if col not in prices.columns:
            h.update(f"|{col}:absent".encode())
            continue
        h.update(f"|{col}:".encode())
        s = prices[col]
        if col == "date":
            arr = pd.to_datetime(s).to_numpy().astype("datetime64[ns]").view(np.int64)
            h.update(np.ascontiguousarray(arr).tobytes())
        elif col == "ticker":
            codes, uniques = pd.factorize(s.astype(str), sort=False)
            h.update("\x1f".join(map(str, uniques)).encode())
            h.update(np.ascontiguousarray(codes.astype(np.int64)).tobytes())
        else:
            arr = s.to_numpy(dtype=np.float64, na_value=np.nan)
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _unusable_ohlv(prices: pd.DataFrame) -> list[str]:
    """The columns of open/high/low/volume that are absent or entirely NaN."""
    bad = []
    for col in OHLV:
        if col not in prices.columns or prices[col].isna().all():
            bad.append(col)
    return bad


def _dropped_description() -> str:
    groups = ["KBAR (9: " + " ".join(KBAR) + ")", "price ratios (3: " + " ".join(PRICE) + ")"]
    rolled = [op for op in ROLLING_OPS if op not in CLOSE_ONLY_OPS]
    groups.append(f"{len(rolled)} rolling operators x {len(WINDOWS)} windows ({' '.join(rolled)})")
    return "; ".join(groups)


def resolve_feature_set(prices: pd.DataFrame, feature_set: str = "auto", *, warn: bool = True) -> str:
    """Turn ``feature_set`` into a concrete set for ``prices``, or raise ``ValueError``.

    ``"auto"`` gives ``"alpha158"`` when open/high/low/volume are usable, else ``"alpha158_close"``
    (with a ``UserWarning`` saying what is dropped and why). ``"alpha158"`` on close-only data raises.
    """
    if feature_set not in _ALL_SET_NAMES:
        raise ValueError(f"unknown feature_set {feature_set!r}; valid: {list(_ALL_SET_NAMES)}")
    bad = _unusable_ohlv(prices)
    if feature_set == "official152" and bad:
        raise ValueError(
            f"feature_set 'official152' needs open, high, low and volume, but {', '.join(bad)} "
            f"{'is' if len(bad) == 1 else 'are'} missing or entirely NaN in these prices"
        )
    if feature_set == "alpha158" and bad:
        raise ValueError(
            f"feature_set 'alpha158' needs open, high, low and volume, but {', '.join(bad)} "
            f"{'is' if len(bad) == 1 else 'are'} missing or entirely NaN in these prices; "
            "use feature_set='alpha158_close' (close-only features) or 'auto'"
        )
    if feature_set != "auto":
        return feature_set
    if not bad:
        return "alpha158"
    n_full, n_close = len(alpha158_names("alpha158")), len(alpha158_names("alpha158_close"))
    msg = (
        f"features: {', '.join(bad)} missing or entirely NaN (close-only data), so feature_set "
        f"'auto' falls back to 'alpha158_close' ({n_close} features instead of {n_full}); dropped "
        f"{n_full - n_close} features that need open/high/low/volume: {_dropped_description()}"
    )
    if warn:
        warnings.warn(msg, UserWarning, stacklevel=3)
    return "alpha158_close"


# --------------------------------------------------------------------------------------------
# Wide-matrix helpers (T x N float64; rows = dates, columns = tickers)
# --------------------------------------------------------------------------------------------


def _roll(a: np.ndarray, d: int):
    return pd.DataFrame(a, copy=False).rolling(d, min_periods=1)


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    out = np.full_like(a, np.nan)
    if k < a.shape[0]:
        out[k:] = a[: a.shape[0] - k]
    return out


def _finite_or_nan(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), a, np.nan)


def _int_window_sum(a: np.ndarray, d: int) -> np.ndarray:
    """Exact rolling sum (window d, partial at the start) of an int64 matrix along axis 0."""
    c = np.cumsum(a, axis=0)
    out = c.copy()
    out[d:] -= c[:-d]
    return out


def _near_zero(std: np.ndarray) -> np.ndarray:
    return np.isclose(std, 0.0, atol=STD_ATOL)  # NaN std -> False, as in Qlib


class _Panel:
    """Adjusted fields on the wide grid plus derived series shared by several operators."""

    def __init__(self, close, open_, high, low, volume, first):
        self.C, self.O, self.H, self.L, self.V = close, open_, high, low, volume
        self.first = first  # int index of each ticker's first row
        self._cache: dict = {}

    def cached(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    # derived, window-free series -------------------------------------------------------------
    @property
    def dC(self):
        return self.cached("dC", lambda: self.C - _shift(self.C, 1))

    @property
    def dV(self):
        return self.cached("dV", lambda: self.V - _shift(self.V, 1))

    @property
    def up(self):  # Qlib: $close > Ref($close, 1); False when yesterday is missing; NaN if today is
        def f():
            ind = (self.C > _shift(self.C, 1)).astype(np.float64)
            ind[np.isnan(self.C)] = np.nan
            return ind

        return self.cached("up", f)

    @property
    def down(self):
        def f():
            ind = (self.C < _shift(self.C, 1)).astype(np.float64)
            ind[np.isnan(self.C)] = np.nan
            return ind

        return self.cached("down", f)

    @property
    def ratio(self):  # C / Ref(C, 1)
        return self.cached("ratio", lambda: self.C / _shift(self.C, 1))

    @property
    def logv1(self):
        return self.cached("logv1", lambda: _finite_or_nan(np.log(self.V + 1.0)))

    @property
    def logvratio(self):  # Log(V / Ref(V,1) + 1); +inf after a zero-volume day -> missing
        return self.cached(
            "logvratio", lambda: _finite_or_nan(np.log(self.V / _shift(self.V, 1) + 1.0))
        )

    @property
    def wv(self):  # |C/Ref(C,1) - 1| * V
        return self.cached("wv", lambda: _finite_or_nan(np.abs(self.ratio - 1.0) * self.V))


def _sum_ratio(pos, neg, absd, d):
    """(Sum(pos), Sum(neg), Sum(abs) + eps) over window d, pandas semantics (all-NaN -> NaN)."""
    sp = _roll(pos, d).sum().to_numpy()
    sn = _roll(neg, d).sum().to_numpy()
    sa = _roll(absd, d).sum().to_numpy() + EPS
    return sp, sn, sa


def _rolling_corr(x, y, d):
    x = _finite_or_nan(x)
    y = _finite_or_nan(y)
    res = _roll(x, d).corr(pd.DataFrame(y, copy=False)).to_numpy().copy()
    bad = _near_zero(_roll(x, d).std().to_numpy()) | _near_zero(_roll(y, d).std().to_numpy())
    res[bad] = np.nan
    return res


def _rolling_arg_extreme(x, d, first, largest: bool):
    """Qlib IdxMax/IdxMin: 1-based position of the first extreme from the window's oldest day.

    The window is truncated at the ticker's first row; NaN are skipped; an all-NaN window gives NaN.
    Loops over the d offsets of the window (not over days or tickers).
    """
    T, N = x.shape
    fill = -np.inf if largest else np.inf
    valid = ~np.isnan(x)
    pad = np.full((T + d - 1, N), fill)
    pad[d - 1 :] = np.where(valid, x, fill)
    best = pad[:T].copy()
    idx = np.zeros((T, N), dtype=np.int16)  # window offsets < 2**15
    for k in range(1, d):
        v = pad[k : k + T]
        upd = (v > best) if largest else (v < best)
        np.copyto(best, v, where=upd)
        np.copyto(idx, k, where=upd)
    t = np.arange(T, dtype=np.int64)[:, None]
    win_start = t - (d - 1)
    start = np.maximum(win_start, first[None, :])
    pos = (win_start + idx - start + 1).astype(np.float64)
    count = _int_window_sum(valid.astype(np.int64), d)
    pos[count == 0] = np.nan
    return pos


def _rolling_ols(y, d):
    """Qlib Slope/Rsquare/Resi of y on the calendar position, over the valid points of each window.

    Positions are centred on the window's last day (u = s - t <= 0); their moments are exact int64
    cumulative sums, the value moments are pandas' compensated rolling sums.
    Returns (slope, r2, resi) where resi is y_t minus the fitted value at day t.
    """
    T, _ = y.shape
    valid = np.isfinite(y)
    vi = valid.astype(np.int64)
    yz = np.where(valid, y, 0.0)
    s = np.arange(T, dtype=np.int64)[:, None]
    n = _int_window_sum(vi, d)
    ss = _int_window_sum(vi * s, d)
    sss = _int_window_sum(vi * s * s, d)
    su = ss - s * n  # sum of u
    suu = sss - 2 * s * ss + s * s * n  # sum of u^2
    dxx = (n * suu - su * su).astype(np.float64)  # exact: n^2 var(u); 0 when n <= 1
    sy = _roll(yz, d).sum().to_numpy()
    syy = _roll(yz * yz, d).sum().to_numpy()
    ssy = _roll(yz * s.astype(np.float64), d).sum().to_numpy()
    nf = n.astype(np.float64)
    suf = su.astype(np.float64)
    suy = ssy - s.astype(np.float64) * sy
    sxy = nf * suy - suf * sy
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = sxy / dxx
        resi = y - (sy / nf - slope * suf / nf)  # fitted value at u = 0 is mean(y) - slope*mean(u)
        dyy = nf * syy - sy * sy
        r2 = (sxy * sxy) / (dxx * dyy)
    return slope, r2, resi


# --------------------------------------------------------------------------------------------
# Feature computation
# --------------------------------------------------------------------------------------------


def _window_features(p: _Panel, d: int, wanted: set[str]):
    """Yield (name, float64 T x N array) for the rolling features of window d that are wanted."""
    C, H, L, V = p.C, p.H, p.L, p.V
    cache: dict = {}

    def get(key, fn):
        if key not in cache:
            cache[key] = fn()
        return cache[key]

    maxh = lambda: get("maxh", lambda: _roll(H, d).max().to_numpy())  # noqa: E731
    minl = lambda: get("minl", lambda: _roll(L, d).min().to_numpy())  # noqa: E731
    ols = lambda: get("ols", lambda: _rolling_ols(C, d))  # noqa: E731
    imax = lambda: get("imax", lambda: _rolling_arg_extreme(H, d, p.first, True))  # noqa: E731
    imin = lambda: get("imin", lambda: _rolling_arg_extreme(L, d, p.first, False))  # noqa: E731
    cnt = lambda: get(  # noqa: E731
        "cnt", lambda: (_roll(p.up, d).mean().to_numpy(), _roll(p.down, d).mean().to_numpy())
    )
    csum = lambda: get(  # noqa: E731
        "csum", lambda: _sum_ratio(np.maximum(p.dC, 0.0), np.maximum(-p.dC, 0.0), np.abs(p.dC), d)
    )
    vsum = lambda: get(  # noqa: E731
        "vsum", lambda: _sum_ratio(np.maximum(p.dV, 0.0), np.maximum(-p.dV, 0.0), np.abs(p.dV), d)
    )

    def rsqr():
        r2 = ols()[1].copy()
        r2[_near_zero(_roll(C, d).std().to_numpy())] = np.nan
        return r2

    def wvma():
        r = _roll(p.wv, d)
        return r.std().to_numpy() / (r.mean().to_numpy() + EPS)

    ops = {
        "ROC": lambda: _shift(C, d) / C,
        "MA": lambda: _roll(C, d).mean().to_numpy() / C,
        "STD": lambda: _roll(C, d).std().to_numpy() / C,
        "BETA": lambda: ols()[0] / C,
        "RSQR": rsqr,
        "RESI": lambda: ols()[2] / C,
        "MAX": lambda: maxh() / C,
        "MIN": lambda: minl() / C,
        "QTLU": lambda: _roll(C, d).quantile(0.8, interpolation="linear").to_numpy() / C,
        "QTLD": lambda: _roll(C, d).quantile(0.2, interpolation="linear").to_numpy() / C,
        "RANK": lambda: _roll(C, d).rank(method="average", ascending=True, pct=True).to_numpy(),
        "RSV": lambda: (C - minl()) / (maxh() - minl() + EPS),
        "IMAX": lambda: imax() / d,
        "IMIN": lambda: imin() / d,
        "IMXD": lambda: (imax() - imin()) / d,
        "CORR": lambda: _rolling_corr(C, p.logv1, d),
        "CORD": lambda: _rolling_corr(p.ratio, p.logvratio, d),
        "CNTP": lambda: cnt()[0],
        "CNTN": lambda: cnt()[1],
        "CNTD": lambda: cnt()[0] - cnt()[1],
        "SUMP": lambda: csum()[0] / csum()[2],
        "SUMN": lambda: csum()[1] / csum()[2],
        "SUMD": lambda: (csum()[0] - csum()[1]) / csum()[2],
        "VMA": lambda: _roll(V, d).mean().to_numpy() / (V + EPS),
        "VSTD": lambda: _roll(V, d).std().to_numpy() / (V + EPS),
        "WVMA": wvma,
        "VSUMP": lambda: vsum()[0] / vsum()[2],
        "VSUMN": lambda: vsum()[1] / vsum()[2],
        "VSUMD": lambda: (vsum()[0] - vsum()[1]) / vsum()[2],
    }
    for op in ROLLING_OPS:
        name = f"{op}{d}"
        if name in wanted:
            yield name, ops[op]()


def _static_features(p: _Panel, dates: pd.DatetimeIndex, wanted: set[str]):
    C, O, H, L = p.C, p.O, p.H, p.L
    hl = lambda: H - L + EPS  # noqa: E731
    kbar = {
        "KMID": lambda: (C - O) / O,
        "KLEN": lambda: (H - L) / O,
        "KMID2": lambda: (C - O) / hl(),
        "KUP": lambda: (H - np.maximum(O, C)) / O,
        "KUP2": lambda: (H - np.maximum(O, C)) / hl(),
        "KLOW": lambda: (np.minimum(O, C) - L) / O,
        "KLOW2": lambda: (np.minimum(O, C) - L) / hl(),
        "KSFT": lambda: (2 * C - H - L) / O,
        "KSFT2": lambda: (2 * C - H - L) / hl(),
        "OPEN0": lambda: O / C,
        "HIGH0": lambda: H / C,
        "LOW0": lambda: L / C,
    }
    for name in KBAR + PRICE:
        if name in wanted:
            yield name, kbar[name]()
    shape = C.shape
    cal = {
        "DAY": (dates.day.to_numpy() - 1) / 30.0 - 0.5,
        "WEEKDAY": dates.day_of_week.to_numpy() / 4.0 - 0.5,
        "MONTH": (dates.month.to_numpy() - 1) / 11.0 - 0.5,
    }
    for name in CALENDAR:
        if name in wanted:
            yield name, np.broadcast_to(cal[name].astype(np.float64)[:, None], shape)


# --------------------------------------------------------------------------------------------
# The official code's 152 features (audit switch (f); official-code.md §1, §10.22-23)
# --------------------------------------------------------------------------------------------


def _own_rows(observed: np.ndarray):
    """Per ticker, the permutation that lists its observed rows first, in date order, and the mask of
    rows inside that prefix. The official processor computes every ticker on its own rows (no calendar
    reindexing); on this layout ``shift``/``rolling`` run along each ticker's own sessions."""
    order = np.argsort(~observed, axis=0, kind="stable")
    inside = np.arange(observed.shape[0])[:, None] < observed.sum(axis=0)[None, :]
    return order, inside


def _full_roll(a: np.ndarray, d: int):
    """pandas ``rolling(d)``: a result needs d non-NaN observations (the official code's default)."""
    return pd.DataFrame(a, copy=False).rolling(d)


def _argext0_full(x: np.ndarray, d: int, largest: bool) -> np.ndarray:
    """``rolling(d).apply(np.argmax/np.argmin)``: 0-based position of the first extreme counted from
    the window's oldest row; NaN unless the window holds d non-NaN values."""
    T, N = x.shape
    out = np.full((T, N), np.nan)
    if T < d:
        return out
    view = np.lib.stride_tricks.sliding_window_view(x, d, axis=0)  # (T-d+1, N, d), oldest first
    pos = (view.argmax(axis=-1) if largest else view.argmin(axis=-1)).astype(np.float64)
    full = _full_roll(x, d).count().to_numpy()[d - 1:] == d
    out[d - 1:] = np.where(full, pos, np.nan)
    return out


def _self_corr(x: np.ndarray, d: int) -> np.ndarray:
    """What the official ``x.rolling(d).corr(pairwise=y.rolling(d))`` returns: ``pairwise`` is not the
    second series, so x is correlated with itself (official-code.md §10.22). That is 1 on every window
    of d non-NaN values that are not all equal (pandas' own value differs from 1 by rounding only,
    ~1e-12); a flat window gives 0/0 and the warm-up NaN, both 0 after the final fill."""
    r = _full_roll(x, d)
    hi, lo = r.max().to_numpy(), r.min().to_numpy()
    return np.where(np.isfinite(hi) & (hi != lo), 1.0, np.nan)


def _official_window_features(O, H, L, C, V, d: int):
    """Yield (name, T x N float64) of the 27 rolling operators of window d, on own-row arrays."""
    C_d = _shift(C, d)
    prev = _shift(C, 1)
    ret1 = C / prev - 1.0                                  # pandas pct_change: NaN on the first row
    roll_c = _full_roll(C, d)
    cntp = _full_roll((ret1 > 0).astype(np.float64), d).sum().to_numpy() / d  # NaN > 0 is False
    cntn = _full_roll((ret1 < 0).astype(np.float64), d).sum().to_numpy() / d
    sump = (_full_roll(np.where(ret1 < 0, 0.0, ret1), d).sum().to_numpy()
            / (_full_roll(np.abs(ret1), d).sum().to_numpy() + EPS))
    vchg = V - _shift(V, 1)
    vsump = (_full_roll(np.where(vchg < 0, 0.0, vchg), d).sum().to_numpy()
             / (_full_roll(np.abs(vchg), d).sum().to_numpy() + EPS))
    wv = _full_roll(np.abs(C / prev - 1.0) * V, d)
    imax, imin = _argext0_full(H, d, True), _argext0_full(L, d, False)
    low = np.where(L < C_d, L, C_d)                        # pandas low.where(low < C_{t-d}, C_{t-d})
    high = np.where(H > C_d, H, C_d)
    ops = {
        "roc": lambda: C_d / C,
        "ma": lambda: roll_c.mean().to_numpy() / C,
        "std": lambda: roll_c.std().to_numpy() / C,
        "beta": lambda: (C_d - C) / (d * C),
        "max": lambda: roll_c.max().to_numpy() / C,
        "min": lambda: roll_c.min().to_numpy() / C,
        "qtlu": lambda: roll_c.quantile(0.8).to_numpy() / C,
        "qtld": lambda: roll_c.quantile(0.2).to_numpy() / C,
        "rank": lambda: roll_c.rank(method="average", ascending=True, pct=True).to_numpy() / d,
        "imax": lambda: imax / d,
        "imin": lambda: imin / d,
        "imxd": lambda: (imax - imin) / d,
        "rsv": lambda: (C - low) / (high - low + EPS),
        "cntp": lambda: cntp,
        "cntn": lambda: cntn,
        "cntd": lambda: cntp - cntn,
        "corr": lambda: _self_corr(C, d),
        "cord": lambda: _self_corr(C / prev, d),
        "sump": lambda: sump,
        "sumn": lambda: 1.0 - sump,
        "sumd": lambda: 2.0 * sump - 1.0,
        "vma": lambda: _full_roll(V, d).mean().to_numpy() / (V + EPS),
        "vstd": lambda: _full_roll(V, d).std().to_numpy() / (V + EPS),
        "wvma": lambda: wv.std().to_numpy() / (wv.mean().to_numpy() + EPS),
        "vsump": lambda: vsump,
        "vsumn": lambda: 1.0 - vsump,
        "vsumd": lambda: 2.0 * vsump - 1.0,
    }
    for op in OFFICIAL_OPS:
        yield f"{op}_{d}", ops[op]()


def _compute_official152(prices, dates, tickers, dcodes, tcodes) -> FeatureArray:
    """``official152`` (see the module docstring): raw (not adjusted) prices, every ticker on its own
    rows, ``+-inf -> NaN -> 0`` on observed cells, NaN where the input has no row."""
    names = official152_names()
    T, N, F = len(dates), len(tickers), len(names)
    observed = np.zeros((T, N), dtype=bool)
    observed[dcodes, tcodes] = True
    order, inside = _own_rows(observed)

    def own(col):  # raw field on the (own row, ticker) layout; NaN beyond a ticker's last row
        grid = np.full((T, N), np.nan)
        grid[dcodes, tcodes] = prices[col].to_numpy(dtype=np.float64, na_value=np.nan)
        out = np.take_along_axis(grid, order, axis=0)
        out[~inside] = np.nan
        return out

    O, H, L, C, A, V = (own(c) for c in ("open", "high", "low", "close", "adj_close", "volume"))
    values = np.empty((T, N, F), dtype=np.float32)
    index = {name: k for k, name in enumerate(names)}
    done = np.zeros(F, dtype=bool)
    back = np.empty((T, N))

    def emit(name, arr):
        back.fill(np.nan)
        np.put_along_axis(back, order, np.broadcast_to(arr, (T, N)), axis=0)  # own rows -> calendar
        k = index[name]
        dst = values[:, :, k]
        dst[...] = back
        dst[~np.isfinite(dst)] = 0.0  # +-inf -> NaN -> 0, warm-up included
        dst[~observed] = np.nan
        done[k] = True

    hl = lambda: H - L + EPS  # noqa: E731
    static = {
        "open": lambda: O, "high": lambda: H, "low": lambda: L, "close": lambda: C, "adj_close": lambda: A,
        "kmid": lambda: (C - O) / C,
        "kmid2": lambda: (C - O) / hl(),
        "klen": lambda: (H - L) / O,
        "kup": lambda: (H - np.maximum(O, C)) / O,
        "kup2": lambda: (H - np.maximum(O, C)) / hl(),
        "klow": lambda: (np.minimum(O, C) - L) / O,
        "klow2": lambda: (np.minimum(O, C) - L) / hl(),
        "ksft": lambda: (2 * C - H - L) / O,
        "ksft2": lambda: (2 * C - H - L) / hl(),
    }
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for name in OFFICIAL_PRICES + OFFICIAL_KBAR:
            emit(name, static[name]())
        for d in WINDOWS:
            for name, arr in _official_window_features(O, H, L, C, V, d):
                emit(name, arr)
    cal = {"day": dates.day, "weekday": dates.day_of_week, "month": dates.month}
    for name in OFFICIAL_CALENDAR:  # raw integers (day 1-31, Monday = 0, month 1-12), on the calendar
        k = index[name]
        values[:, :, k] = np.asarray(cal[name], dtype=np.float32)[:, None]
        values[~observed, k] = np.nan
        done[k] = True
    if not done.all():  # pragma: no cover - internal consistency
        raise RuntimeError(f"features not computed: {[n for n, ok in zip(names, done) if not ok]}")
    return FeatureArray(values, dates, tickers, names, feature_set="official152", observed=observed)


def _layout(prices: pd.DataFrame):
    """Sorted dates, sorted tickers, and the (row -> date index, ticker index) codes."""
    if len(prices) == 0:
        raise ValueError("prices is empty")
    missing = [c for c in ("date", "ticker", "close", "adj_close") if c not in prices.columns]
    if missing:
        raise ValueError(f"prices lacks required column(s) {missing}; schema: {list(SCHEMA)}")
    date_values = pd.to_datetime(prices["date"]).to_numpy().astype("datetime64[ns]")
    dcodes, dates = pd.factorize(date_values, sort=True)
    tcodes, tickers = pd.factorize(prices["ticker"].astype(str).to_numpy(dtype=object), sort=True)
    if (dcodes < 0).any() or (tcodes < 0).any():
        raise ValueError("prices has missing dates or tickers")
    T, N = len(dates), len(tickers)
    flat = dcodes.astype(np.int64) * N + tcodes
    if np.bincount(flat, minlength=T * N).max() > 1:
        raise ValueError("prices has duplicated (date, ticker) rows")
    dates = pd.DatetimeIndex(dates, name="date").as_unit("ns")
    return dates, [str(t) for t in tickers], dcodes, tcodes


def compute_features(prices: pd.DataFrame, feature_set: str = "alpha158") -> FeatureArray:
    """Compute ``feature_set`` for a long price frame (no cache). See the module docstring."""
    feature_set = resolve_feature_set(prices, feature_set)
    names = alpha158_names(feature_set)
    dates, tickers, dcodes, tcodes = _layout(prices)
    if feature_set == "official152":
        return _compute_official152(prices, dates, tickers, dcodes, tcodes)
    T, N, F = len(dates), len(tickers), len(names)

    def wide(col, factor=None):
        out = np.full((T, N), np.nan)
        if col in prices.columns:
            v = prices[col].to_numpy(dtype=np.float64, na_value=np.nan)
            out[dcodes, tcodes] = v if factor is None else v * factor
        return out

    observed = np.zeros((T, N), dtype=bool)
    observed[dcodes, tcodes] = True
    first = observed.argmax(axis=0).astype(np.int64)
    close_raw = prices["close"].to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = prices["adj_close"].to_numpy(dtype=np.float64, na_value=np.nan) / close_raw
    need_ohlv = feature_set == "alpha158"
    nan_grid = None if need_ohlv else np.full((T, N), np.nan)
    panel = _Panel(
        close=wide("close", factor),
        open_=wide("open", factor) if need_ohlv else nan_grid,
        high=wide("high", factor) if need_ohlv else nan_grid,
        low=wide("low", factor) if need_ohlv else nan_grid,
        volume=wide("volume") if need_ohlv else nan_grid,
        first=first,
    )

    values = np.empty((T, N, F), dtype=np.float32)
    index = {name: k for k, name in enumerate(names)}
    done = np.zeros(F, dtype=bool)
    wanted = set(names)
    all_observed = bool(observed.all())

    def emit(name, arr):
        k = index[name]
        dst = values[:, :, k]
        dst[...] = arr  # float64 -> float32
        bad = ~np.isfinite(dst)
        if not all_observed:
            bad |= ~observed
        dst[bad] = np.nan
        done[k] = True

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for name, arr in _static_features(panel, dates, wanted):
            emit(name, arr)
        for d in WINDOWS:
            for name, arr in _window_features(panel, d, wanted):
                emit(name, arr)
    if not done.all():  # pragma: no cover - internal consistency
        raise RuntimeError(f"features not computed: {[n for n, ok in zip(names, done) if not ok]}")
    return FeatureArray(values, dates, tickers, names, feature_set=feature_set, observed=observed)


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def cache_paths(
    prices: pd.DataFrame, feature_set: str, cache_dir: str | os.PathLike | None = None, *,
    digest: str | None = None,
) -> tuple[Path, Path]:  # fmt: skip
    """(values ``.npy``, metadata ``.npz``) cache paths for a *resolved* feature set."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"cache_paths needs a concrete feature set, one of {list(FEATURE_SETS)}")
    digest = digest or data_hash(prices)
    key = hashlib.sha256(f"{FEATURE_VERSION}|{feature_set}|{digest}".encode()).hexdigest()[:24]
    root = config.cache_dir("features", explicit=cache_dir)
    stem = f"{feature_set}-v{FEATURE_VERSION}-{key}"
    return root / f"{stem}.values.npy", root / f"{stem}.meta.npz"


def _atomic_write(path: Path, write) -> None:
    """``write(file handle)`` into ``path`` atomically (see :func:`storm_lib.utils.atomic_write`)."""
    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, to_file)


def _save(fa: FeatureArray, values_path: Path, meta_path: Path, digest: str) -> None:
    _atomic_write(values_path, lambda fh: np.save(fh, fa.values, allow_pickle=False))
    meta = dict(
        dates=fa.dates.as_unit("ns").asi8,
        tickers=np.array(fa.tickers, dtype=str),
        names=np.array(fa.names, dtype=str),
        observed=fa.observed if fa.observed is not None else np.ones(fa.values.shape[:2], bool),
        feature_set=np.array(fa.feature_set),
        feature_version=np.array(str(FEATURE_VERSION)),
        data_hash=np.array(digest),
    )
    _atomic_write(meta_path, lambda fh: np.savez(fh, **meta))


def _load(values_path: Path, meta_path: Path, digest: str, feature_set: str, mmap: bool):
    with np.load(meta_path, allow_pickle=False) as z:
        if (
            str(z["data_hash"]) != digest
            or str(z["feature_version"]) != str(FEATURE_VERSION)
            or str(z["feature_set"]) != feature_set
        ):
            raise ValueError("cache metadata does not match")
        dates = pd.DatetimeIndex(z["dates"].astype("datetime64[ns]"), name="date")
        tickers = [str(t) for t in z["tickers"]]
        names = [str(n) for n in z["names"]]
        observed = z["observed"]
    values = np.load(values_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if names != alpha158_names(feature_set) or values.dtype != np.float32:
        raise ValueError("cached features do not match the current definition")
    return FeatureArray(
        values, dates, tickers, names, feature_set=feature_set, observed=observed,
        from_cache=True, cache_path=values_path,
    )  # fmt: skip


def build_features(
    prices: pd.DataFrame,
    feature_set: str = "auto",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    verbose: bool = True,
    mmap: bool = False,
) -> FeatureArray:
    """:func:`compute_features` with an on-disk cache keyed by (version, feature set, data hash).

    ``cache_dir`` is the cache root (default ``$STORM_CACHE_DIR`` or ``~/.cache/storm_lib``); files go to
    its ``features/`` subdirectory. ``mmap=True`` memory-maps the cached values read-only.
    The result's ``from_cache`` says whether the cache was hit.
    """
    say = print if verbose else (lambda *a, **k: None)
    bad = _unusable_ohlv(prices)
    resolved = resolve_feature_set(prices, feature_set)
    if feature_set == "auto" and resolved != feature_set and bad:
        say(
            f"[features] close-only data ({', '.join(bad)} missing or all NaN): using "
            f"'alpha158_close' ({len(alpha158_names('alpha158_close'))} features); dropped "
            f"{_dropped_description()}"
        )
    if not cache:
        t0 = time.perf_counter()
        fa = compute_features(prices, resolved)
        say(f"[features] computed {fa!r} in {time.perf_counter() - t0:.1f} s (no cache)")
        return fa
    digest = data_hash(prices)
    values_path, meta_path = cache_paths(prices, resolved, cache_dir, digest=digest)
    if values_path.exists() and meta_path.exists():
        t0 = time.perf_counter()
        try:
            fa = _load(values_path, meta_path, digest, resolved, mmap)
        except Exception as exc:  # a damaged or foreign file: recompute
            warnings.warn(f"features: ignoring unreadable cache {values_path} ({exc})", stacklevel=2)
        else:
            say(f"[features] cache hit {values_path} ({time.perf_counter() - t0:.2f} s)")
            return fa
    t0 = time.perf_counter()
    fa = compute_features(prices, resolved)
    elapsed = time.perf_counter() - t0
    _save(fa, values_path, meta_path, digest)
    fa.cache_path = values_path
    say(f"[features] computed {fa!r} in {elapsed:.1f} s; cached to {values_path}")
    if mmap:  # hand back the same read-only memory map a cache hit would give
        fa = FeatureArray(
            np.load(values_path, mmap_mode="r"), fa.dates, fa.tickers, fa.names,
            feature_set=resolved, observed=fa.observed, cache_path=values_path,
        )  # fmt: skip
    return fa

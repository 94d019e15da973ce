"""Prices: load, validate, download. The first layer of the pipeline.

Everything downstream reads one long schema, one row per (date, ticker)::

    date  ticker  open  high  low  close  adj_close  volume

``open/high/low/close`` are split-adjusted, ``adj_close`` is split- and dividend-adjusted (use it for
returns), ``volume`` is split-adjusted shares. A close-only dataset (the embedded sample) has
``open/high/low/volume`` entirely NaN for every ticker.

Where prices come from (:func:`load_prices`), in this order and never silently mixed:

1. a directory: the ``data_dir`` argument, else ``$STORM_DATA_DIR`` (files ``dj30.parquet``,
   ``sp500.parquet``, ``indices.parquet``);
2. the local cache ``$STORM_CACHE_DIR/prices`` (default ``~/.cache/storm_lib/prices``), filled by
   ``storm download`` (yfinance, the optional ``download`` extra);
3. otherwise a :class:`DataError` that names every way to get data.

``load_prices("sample")`` is the embedded real sample, fully offline: 20 large S&P 500 stocks,
daily adjusted close 1990-01-02..2022-12-28, shipped inside the ``skfolio`` wheel (close only).
Any parquet or CSV file in the schema above works too: ``load_prices("my_prices.parquet")``, and so
does a name found in the data directory (``load_prices("nasdaq")`` reads ``$STORM_DATA_DIR/nasdaq.parquet``
or ``nasdaq.csv``; such a universe is the file's tickers, no list is imposed). :func:`find_universe` says
which of these a universe string is, without loading it.

Data quality (:func:`quality_report`, run by :func:`load_prices`): stale placeholder bars (volume 0 and
open = high = low = close = the previous close) and extreme daily returns of ``adj_close`` (|r| >
:data:`EXTREME_RETURN`) are reported with a :class:`DataQualityWarning` naming tickers and dates; the
data are never altered.

The universes ``dj30`` (29 tickers) and ``sp500`` (408 tickers) are the authors' lists
(DVampire/Storm ``configs/_asset_list_``, MIT), copied in ``storm_lib/universes.json``. They are
present-day lists applied back to 2008: survivorship bias, exactly as in the paper.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from . import config
from .utils import atomic_write

log = logging.getLogger(__name__)

SCHEMA = ["date", "ticker", "open", "high", "low", "close", "adj_close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close"]
#: Columns a close-only dataset may leave entirely NaN for a ticker.
OPTIONAL_COLUMNS = ["open", "high", "low", "volume"]
UNIVERSES = ("dj30", "sp500")
SAMPLE = "sample"
#: Benchmark for each universe (see :func:`load_index`). ^DJI is the price index the paper's DJ30
#: "Market Index" row matches; for SP500 we use SPY (complete to 2024-03-28, dividends included in
#: adj_close) because ^GSPC in the shared data ends 2023-12-28.
MARKET_INDEX = {"dj30": "^DJI", "sp500": "SPY", SAMPLE: "SP500"}
INDEX_TICKERS = ("^DJI", "^GSPC", "SPY")


#: |daily adj_close return| above which :func:`quality_report` flags a day (a 25 % move in one session is
#: rare for a large-cap stock and often a data artefact: a spin-off or split not in the adjustment).
EXTREME_RETURN = 0.25


class DataError(ValueError):
    """Bad or missing price data. The message names the problem and the rows or tickers involved."""


class DataQualityWarning(UserWarning):
    """Suspicious but valid price data (stale placeholder bars, extreme returns); the data are unchanged."""


def _how_to_get_data(what: str) -> str:
    return (
        f"No price data found for {what!r}. Ways to get data:\n"
        f"  1. point ${config.DATA_ENV} (or the data_dir= argument) to a directory holding "
        f"dj30.parquet / sp500.parquet / indices.parquet;\n"
        f"  2. download into the local cache with `storm download {what}` "
        f"(needs `pip install -e '.[download]'` and access to Yahoo Finance);\n"
        f"  3. pass your own parquet/CSV file in the schema {SCHEMA};\n"
        f"  4. use the embedded offline sample: load_prices('sample') / `storm demo --source sample`."
    )


# ----------------------------------------------------------------------------------------------
# Universes
# ----------------------------------------------------------------------------------------------


def universe_tickers(universe: str) -> list[str]:
    """The authors' ticker list of ``universe`` (``dj30`` or ``sp500``), in their order."""
    if universe not in UNIVERSES:
        raise DataError(f"unknown universe {universe!r}; known universes: {', '.join(UNIVERSES)}")
    text = resources.files("storm_lib").joinpath("universes.json").read_text()
    return list(json.loads(text)[universe])


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _rows(df: pd.DataFrame, mask, limit: int = 5) -> str:
    bad = df.loc[mask, ["date", "ticker"]].head(limit)
    listed = ", ".join(f"({d:%Y-%m-%d}, {t})" for d, t in zip(bad["date"], bad["ticker"]))
    n = int(np.asarray(mask).sum())
    return f"{n} row(s), e.g. {listed}"


def validate_prices(df: pd.DataFrame, name: str = "prices") -> pd.DataFrame:
    """Check a long price frame and return it cleaned: typed, sorted by (date, ticker), index reset.

    Raises :class:`DataError` for missing columns, NaN or non-positive prices, negative volume,
    duplicated (date, ticker), partially missing OHLCV of a ticker, and a ticker with missing
    sessions between its own first and last date (the calendar is the union of all dates).
    Unsorted input is sorted. A ticker whose open/high/low/volume are *all* NaN is close-only.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in SCHEMA if c not in df.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}; the schema is {SCHEMA}")
    if df.empty:
        raise DataError(f"{name}: no rows")
    out = df[SCHEMA].copy()
    try:
        out["date"] = pd.to_datetime(out["date"]).astype("datetime64[ns]")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{name}: column 'date' is not parseable as dates ({exc})") from exc
    if out["date"].dt.tz is not None:
        raise DataError(f"{name}: dates must be timezone-naive session dates")
    out["ticker"] = out["ticker"].astype(str)
    for col in PRICE_COLUMNS + ["volume"]:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")

    for col in ("close", "adj_close"):
        bad = out[col].isna().to_numpy()
        if bad.any():
            raise DataError(f"{name}: NaN in {col!r}: {_rows(out, bad)}")
    for col in PRICE_COLUMNS:
        bad = (out[col] <= 0).to_numpy()
        if bad.any():
            raise DataError(f"{name}: non-positive {col!r}: {_rows(out, bad)}")
    bad = (out["volume"] < 0).to_numpy()
    if bad.any():
        raise DataError(f"{name}: negative volume: {_rows(out, bad)}")
    # Optional columns are all-or-nothing per ticker (close-only data leaves them all NaN).
    nan_share = out[OPTIONAL_COLUMNS].isna().groupby(out["ticker"]).mean()
    partial = nan_share[((nan_share > 0) & (nan_share < 1)).any(axis=1)]
    if len(partial):
        bad = out["ticker"].isin(partial.index) & out[OPTIONAL_COLUMNS].isna().any(axis=1)
        raise DataError(
            f"{name}: NaN in open/high/low/volume for ticker(s) {sorted(partial.index)[:10]} "
            f"(a ticker must have all of them or none): {_rows(out, bad.to_numpy())}"
        )

    dup = out.duplicated(["date", "ticker"], keep=False).to_numpy()
    if dup.any():
        raise DataError(f"{name}: duplicated (date, ticker): {_rows(out, dup)}")

    out = out.sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)
    _check_gaps(out, name)
    return out


def _check_gaps(df: pd.DataFrame, name: str) -> None:
    """Every ticker must have every session of the union calendar between its first and last date."""
    calendar = pd.DatetimeIndex(df["date"].unique())
    pos = calendar.get_indexer(df["date"])
    g = pd.DataFrame({"ticker": df["ticker"].to_numpy(), "pos": pos}).groupby("ticker")["pos"]
    span = g.max() - g.min() + 1
    count = g.count()
    gaps = (span - count)[span > count]
    if len(gaps):
        examples = []
        for ticker in gaps.index[:5]:
            have = set(df.loc[df["ticker"] == ticker, "date"])
            first, last = df.loc[df["ticker"] == ticker, "date"].agg(["min", "max"])
            lost = [d for d in calendar[(calendar >= first) & (calendar <= last)] if d not in have]
            examples.append(f"{ticker}: {len(lost)} missing, first {lost[0]:%Y-%m-%d}")
        raise DataError(
            f"{name}: {len(gaps)} ticker(s) with missing sessions inside their date range "
            f"({'; '.join(examples)}). Fill or drop them before use."
        )


def is_close_only(prices: pd.DataFrame) -> bool:
    """True when open/high/low/volume are entirely NaN (e.g. the embedded sample)."""
    return bool(prices[OPTIONAL_COLUMNS].isna().all().all())


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def read_price_file(path: str | os.PathLike) -> pd.DataFrame:
    """Read a parquet or CSV file in the long schema (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {str(path)!r}")
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith(".parquet") or suffixes.endswith(".pq"):
        return pd.read_parquet(path)
    if ".csv" in suffixes:
        return pd.read_csv(path, parse_dates=["date"])
    raise DataError(f"{str(path)!r}: unsupported file type; use .parquet or .csv")


def _locate(filename: str, what: str, data_dir) -> Path:
    """Find ``filename`` in the data directory, else in the cache; raise naming all the ways."""
    directory = config.data_dir(data_dir)
    if directory is not None:
        path = directory / filename
        if not path.is_file():
            raise DataError(
                f"{filename} is not in the data directory {str(directory)!r} "
                f"(set by {'data_dir=' if data_dir is not None else '$' + config.DATA_ENV}).\n"
                + _how_to_get_data(what)
            )
        return path
    cached = config.cache_dir("prices") / filename
    if cached.is_file():
        return cached
    raise DataError(_how_to_get_data(what))


def _named_file(name: str, data_dir) -> Path | None:
    """``<name>.parquet`` / ``<name>.csv`` in the data directory (else the cache), or None."""
    try:
        directory = config.data_dir(data_dir)
    except FileNotFoundError:
        directory = None
    for folder in ([directory] if directory is not None else []) + [config.cache_dir("prices")]:
        for ext in (".parquet", ".csv"):
            if (folder / f"{name}{ext}").is_file():
                return folder / f"{name}{ext}"
    return None


def find_universe(universe: str | os.PathLike, data_dir=None) -> tuple[str, Path | None]:
    """What a universe string is, without loading it: ``("paper", None)`` for ``dj30`` / ``sp500`` (the
    authors' lists), ``("sample", None)``, ``("file", path)`` for a parquet/CSV path, ``("named", path)``
    for a name with ``<name>.parquet`` or ``.csv`` in the data directory or the cache. Raises
    :class:`DataError` naming every way to give a universe otherwise."""
    text = str(universe)
    if text in UNIVERSES:
        return "paper", None
    if text == SAMPLE:
        return "sample", None
    path = Path(text).expanduser()
    if path.suffix.lower() in (".parquet", ".pq", ".csv") or path.exists() or "/" in text:
        path = config.user_path(text)
        if not path.is_file():
            raise DataError(f"universe file {text!r} does not exist (resolved {str(path)!r})")
        return "file", path
    found = _named_file(text, data_dir)
    if found is not None:
        return "named", found
    raise DataError(
        f"unknown universe {text!r}: use {', '.join(UNIVERSES)} (the paper's), {SAMPLE!r} (embedded), a path "
        f"to a .parquet/.csv price file in the schema {SCHEMA}, or a name with <name>.parquet / <name>.csv "
        f"in the data directory (${config.DATA_ENV} or data_dir=)")


def universe_label(universe: str | os.PathLike) -> str:
    """A short name for tables and directories: the file's stem for a path, else the universe itself."""
    text = str(universe)
    if text in UNIVERSES or text == SAMPLE:
        return text
    path = Path(text)
    return path.stem if path.suffix else path.name


def has_paper_numbers(universe: str) -> bool:
    """Whether the paper printed numbers for ``universe`` (only ``dj30`` and ``sp500``)."""
    return str(universe) in UNIVERSES


def load_sample() -> pd.DataFrame:
    """The embedded real sample: skfolio's 20 S&P 500 stocks, adjusted close, 1990-01-02..2022-12-28.

    Close only: ``close`` = ``adj_close`` = skfolio's adjusted price; open/high/low/volume are NaN,
    so features that need them are dropped downstream (and the feature module says so).
    """
    from skfolio.datasets import load_sp500_dataset

    wide = load_sp500_dataset()
    long = wide.rename_axis(index="date", columns="ticker").stack().rename("close").reset_index()
    long["adj_close"] = long["close"]
    for col in OPTIONAL_COLUMNS:
        long[col] = np.nan
    return long[SCHEMA]


def load_prices(
    source: str | os.PathLike | pd.DataFrame = "dj30",
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    *,
    tickers: list[str] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Load and validate prices in the long schema.

    ``source``: a universe name (``dj30``, ``sp500``), ``"sample"`` (embedded, offline), a path to
    a parquet/CSV file, or a DataFrame. ``start``/``end`` clip the dates (inclusive); both must lie
    inside the data. ``tickers`` keeps a subset. The result is sorted by (date, ticker).
    """
    if isinstance(source, pd.DataFrame):
        name, raw = "prices", source
    elif str(source) == SAMPLE:
        name, raw = SAMPLE, load_sample()
    elif str(source) in UNIVERSES:
        name = str(source)
        path = _locate(f"{name}.parquet", name, data_dir)
        raw = read_price_file(path)
        log.info("loaded %s from %s", name, path)
        expected = universe_tickers(name)
        present = set(raw["ticker"].astype(str).unique())
        absent = [t for t in expected if t not in present]
        if absent:
            raise DataError(f"{path}: {len(absent)} ticker(s) of universe {name!r} missing: {absent[:20]}")
        raw = raw[raw["ticker"].astype(str).isin(expected)]
    else:
        _, path = find_universe(source, data_dir)
        name, raw = str(source), read_price_file(path)

    if tickers is not None:
        tickers = [str(t) for t in tickers]
        known = set(raw["ticker"].astype(str))
        unknown = [t for t in tickers if t not in known]
        if unknown:
            raise DataError(f"{name}: unknown ticker(s) {unknown}")
        raw = raw[raw["ticker"].astype(str).isin(tickers)]

    df = validate_prices(raw, name)
    df = clip_dates(df, start, end, name)
    warn_quality(df, name)
    return df


def quality_report(df: pd.DataFrame, extreme: float = EXTREME_RETURN) -> pd.DataFrame:
    """Suspicious rows of a validated long price frame, one row per (date, ticker, issue): columns
    ``date, ticker, issue, value``. Issues: ``stale_bar`` (volume 0 and open = high = low = close = the
    previous close: a placeholder, not a trading day; value = close) and ``extreme_return`` (|adj_close
    return from the previous session| > ``extreme``; value = the return). Nothing is altered."""
    df = df.sort_values(["ticker", "date"], kind="stable")
    prev_close = df.groupby("ticker", sort=False)["close"].shift(1)
    prev_adj = df.groupby("ticker", sort=False)["adj_close"].shift(1)
    flat = (df["open"] == df["close"]) & (df["high"] == df["close"]) & (df["low"] == df["close"])
    stale = (df["volume"] == 0) & flat & (df["close"] == prev_close)
    ret = df["adj_close"] / prev_adj - 1.0
    wild = ret.abs() > extreme
    cols = ["date", "ticker", "issue", "value"]
    parts = [df.loc[stale, ["date", "ticker"]].assign(issue="stale_bar", value=df.loc[stale, "close"]),
             df.loc[wild, ["date", "ticker"]].assign(issue="extreme_return", value=ret[wild])]
    out = pd.concat([p[cols] for p in parts], ignore_index=True)
    return out.sort_values(["issue", "date", "ticker"], kind="stable").reset_index(drop=True)


def warn_quality(df: pd.DataFrame, name: str = "prices", extreme: float = EXTREME_RETURN) -> pd.DataFrame:
    """:func:`quality_report` of ``df``, and a :class:`DataQualityWarning` per kind of issue found
    (count, tickers, first dates). Returns the report."""
    import warnings

    rep = quality_report(df, extreme)
    for issue, rows in rep.groupby("issue", sort=True):
        what = ("stale placeholder bar(s) (volume 0, open = high = low = close = previous close)"
                if issue == "stale_bar" else f"daily adj_close return(s) beyond +-{extreme:.0%}")
        listed = ", ".join(f"{t} {d:%Y-%m-%d}" + (f" ({v:+.1%})" if issue == "extreme_return" else "")
                           for d, t, v in zip(rows["date"], rows["ticker"], rows["value"]))
        shown = listed if len(rows) <= 8 else ", ".join(listed.split(", ")[:8]) + ", ..."
        warnings.warn(f"{name}: {len(rows)} {what} in {rows['ticker'].nunique()} ticker(s): {shown}. "
                      "Kept as is (storm_lib.data.quality_report lists them all).", DataQualityWarning, stacklevel=3)
    return rep


def clip_dates(df: pd.DataFrame, start=None, end=None, name: str = "prices") -> pd.DataFrame:
    """Keep rows with start <= date <= end; raise if the range lies outside the data."""
    first, last = df["date"].iloc[0], df["date"].iloc[-1]
    lo = pd.Timestamp(start) if start is not None else first
    hi = pd.Timestamp(end) if end is not None else last
    if lo > hi:
        raise DataError(f"{name}: start {lo:%Y-%m-%d} is after end {hi:%Y-%m-%d}")
    if lo < first or hi > last:
        raise DataError(
            f"{name}: requested {lo:%Y-%m-%d}..{hi:%Y-%m-%d} lies outside the data "
            f"({first:%Y-%m-%d}..{last:%Y-%m-%d})"
        )
    return df[(df["date"] >= lo) & (df["date"] <= hi)].reset_index(drop=True)


def load_index(
    ticker: str = "^DJI", *, field: str = "adj_close", data_dir: str | os.PathLike | None = None
) -> pd.Series:
    """A market index or ETF price series indexed by date: ``^DJI``, ``^GSPC``, ``SPY`` from
    ``indices.parquet``, or ``SP500`` (skfolio's embedded S&P 500 index, pairs with the sample).
    ``^GSPC`` in the shared data ends 2023-12-28."""
    if ticker == MARKET_INDEX[SAMPLE]:
        from skfolio.datasets import load_sp500_index

        s = load_sp500_index().iloc[:, 0]
    else:
        if ticker not in INDEX_TICKERS:
            raise DataError(f"unknown index {ticker!r}; known: {', '.join(INDEX_TICKERS)}, SP500")
        path = _locate("indices.parquet", "indices", data_dir)
        df = read_price_file(path)
        df = df[df["ticker"].astype(str) == ticker]
        if df.empty:
            raise DataError(f"{path}: no rows for index {ticker!r}")
        if field not in df.columns:
            raise DataError(f"{path}: no column {field!r}")
        s = df.set_index("date")[field]
    s.index = pd.DatetimeIndex(pd.to_datetime(s.index)).astype("datetime64[ns]").rename("date")
    s = s.sort_index().astype("float64").rename(ticker)
    if s.isna().any() or (s <= 0).any():
        raise DataError(f"index {ticker!r}: NaN or non-positive values")
    return s


def market_index(universe: str, data_dir=None) -> pd.Series:
    """The benchmark price series of a universe (see :data:`MARKET_INDEX`). Other universes have none:
    their runs use the equal-weight buy-and-hold of their stocks (``storm_lib.portfolio.equal_weight_buy_and_hold``)
    unless an index is given (:func:`load_index_file`, the run option ``benchmark=``)."""
    if universe not in MARKET_INDEX:
        raise DataError(f"no market index defined for {universe!r}; pass load_index(ticker) or an index file")
    return load_index(MARKET_INDEX[universe], data_dir=data_dir)


def load_index_file(path: str | os.PathLike, field: str = "adj_close") -> pd.Series:
    """A benchmark price series from a parquet/CSV file: columns ``date`` and ``field`` (default
    ``adj_close``; else ``close``, else the file's only other column). One series per file: a ``ticker``
    column, if present, must hold one value. Named after the file's stem."""
    df = read_price_file(path)
    if "date" not in df.columns:
        raise DataError(f"index file {str(path)!r}: no 'date' column (columns: {list(df.columns)})")
    if "ticker" in df.columns and df["ticker"].nunique() > 1:
        raise DataError(f"index file {str(path)!r}: {df['ticker'].nunique()} tickers; give one series")
    others = [c for c in df.columns if c not in ("date", "ticker")]
    col = next((c for c in (field, "close") if c in df.columns), others[0] if len(others) == 1 else None)
    if col is None:
        raise DataError(f"index file {str(path)!r}: no {field!r} or 'close' column among {others}")
    s = pd.Series(pd.to_numeric(df[col], errors="coerce").to_numpy(), name=Path(path).stem,
                  index=pd.DatetimeIndex(pd.to_datetime(df["date"])).astype("datetime64[ns]").rename("date"))
    s = s.sort_index()
    if s.index.has_duplicates:
        raise DataError(f"index file {str(path)!r}: duplicated dates")
    if s.isna().any() or (s <= 0).any():
        raise DataError(f"index file {str(path)!r}: NaN or non-positive values in {col!r}")
    return s


# ----------------------------------------------------------------------------------------------
# Wide views and labels
# ----------------------------------------------------------------------------------------------


def to_wide(prices: pd.DataFrame, field: str = "adj_close") -> pd.DataFrame:
    """Date x ticker frame of one column (NaN where a ticker has no row, e.g. before listing)."""
    return prices.pivot(index="date", columns="ticker", values=field).sort_index()


def next_day_returns(prices: pd.DataFrame) -> pd.DataFrame:
    """The label: ``y[t] = adj_close[t+1] / adj_close[t] - 1``, close-to-close, indexed by t.

    The label of day t is known only after close t+1; it is NaN on the last date and wherever
    either price is missing. (official-code.md §1 uses the raw close, which ignores dividends.)
    """
    wide = to_wide(prices, "adj_close")
    return wide.shift(-1) / wide - 1.0


# ----------------------------------------------------------------------------------------------
# Download (optional extra)
# ----------------------------------------------------------------------------------------------


def download(
    universe: str,
    start: str = "2007-01-01",
    end: str = "2024-04-01",
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Download a universe (or ``indices``) with yfinance into the cache, in the long schema.

    yfinance does not raise when Yahoo is unreachable: it prints an error and returns an empty
    frame. We check every ticker and raise :class:`DataError` if any came back empty.
    """
    try:
        import yfinance as yf
    except ImportError as exc:
        raise DataError("downloading needs yfinance: pip install -e '.[download]'") from exc
    names = list(INDEX_TICKERS) if universe == "indices" else universe_tickers(universe)
    raw = yf.download(
        names, start=start, end=end, auto_adjust=False, actions=False,
        group_by="ticker", progress=True, threads=True,
    )
    frames, empty = [], []
    for t in names:
        try:
            sub = raw[t] if isinstance(raw.columns, pd.MultiIndex) else raw
        except KeyError:
            sub = pd.DataFrame()
        sub = sub.dropna(how="all") if len(sub) else sub
        if sub is None or sub.empty:
            empty.append(t)
            continue
        sub = sub.rename(columns=str.lower).rename(columns={"adj close": "adj_close"})
        sub = sub.reset_index().rename(columns={"Date": "date", "index": "date"})
        sub["ticker"] = t
        frames.append(sub[SCHEMA])
    if empty:
        raise DataError(
            f"yfinance returned no data for {len(empty)} of {len(names)} ticker(s) "
            f"(e.g. {empty[:5]}); Yahoo Finance is probably unreachable.\n" + _how_to_get_data(universe)
        )
    df = pd.concat(frames, ignore_index=True)
    target = config.cache_dir("prices", cache_dir) / f"{universe}.parquet"
    if universe != "indices":
        df = validate_prices(df, universe)
    atomic_write(target, lambda tmp: df.to_parquet(tmp, index=False))
    return target

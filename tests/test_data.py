import numpy as np
import pandas as pd
import pytest

from storm_lib import data
from storm_lib.data import DataError

from conftest import make_prices


def test_validate_sorts_and_types(prices):
    shuffled = prices.sample(frac=1.0, random_state=1)
    out = data.validate_prices(shuffled)
    assert list(out.columns) == data.SCHEMA
    assert out["date"].is_monotonic_increasing
    assert out.equals(data.validate_prices(prices))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda df: df.drop(columns=["adj_close"]), "missing column"),
        (lambda df: df.assign(close=df["close"].where(df.index != 7)), "NaN in 'close'"),
        (lambda df: df.assign(adj_close=df["adj_close"].where(df.index != 3, -1.0)), "non-positive 'adj_close'"),
        (lambda df: df.assign(open=df["open"].where(df.index != 3, 0.0)), "non-positive 'open'"),
        (lambda df: df.assign(volume=df["volume"].where(df.index != 3, -5.0)), "negative volume"),
        (lambda df: pd.concat([df, df.iloc[[10]]]), "duplicated"),
        (lambda df: df.assign(high=df["high"].where(df.index != 4)), "a ticker must have all of them"),
    ],
)
def test_bad_input_is_named(prices, mutate, message):
    with pytest.raises(DataError, match=message):
        data.validate_prices(mutate(prices))


def test_error_names_rows_and_tickers(prices):
    bad = prices.copy()
    bad.loc[5, "close"] = np.nan
    with pytest.raises(DataError) as err:
        data.validate_prices(bad)
    row = prices.loc[5]
    assert row["ticker"] in str(err.value) and f"{row['date']:%Y-%m-%d}" in str(err.value)


def test_gap_inside_a_ticker_is_an_error_but_late_start_is_not(prices):
    mid = prices[(prices["ticker"] == "BBB")].index[50]
    with pytest.raises(DataError, match=r"BBB: 1 missing"):
        data.validate_prices(prices.drop(index=mid))
    late = prices.drop(index=prices[(prices["ticker"] == "CCC")].index[:30])
    out = data.validate_prices(late)
    assert out.groupby("ticker")["date"].min()["CCC"] > out["date"].min()


def test_dates_outside_data_and_reversed_range(prices):
    df = data.validate_prices(prices)
    with pytest.raises(DataError, match="outside the data"):
        data.clip_dates(df, "1999-01-01")
    with pytest.raises(DataError, match="after end"):
        data.clip_dates(df, "2020-03-01", "2020-02-01")
    clipped = data.clip_dates(df, "2020-02-03", "2020-03-02")
    assert clipped["date"].min() == pd.Timestamp("2020-02-03")
    assert clipped["date"].max() == pd.Timestamp("2020-03-02")


def test_unknown_universe_and_source():
    with pytest.raises(DataError, match="unknown universe"):
        data.universe_tickers("nasdaq")
    with pytest.raises(DataError, match="unknown universe .nasdaq.*data directory"):
        data.load_prices("nasdaq")


def test_missing_data_names_every_way(tmp_path, monkeypatch):
    monkeypatch.delenv("STORM_DATA_DIR", raising=False)
    monkeypatch.setenv("STORM_CACHE_DIR", str(tmp_path))
    with pytest.raises(DataError) as err:
        data.load_prices("dj30")
    msg = str(err.value)
    for way in ("STORM_DATA_DIR", "storm download", "parquet/CSV", "sample"):
        assert way in msg
    # an explicit directory without the file is an error, not a fallback to the cache
    with pytest.raises(DataError, match="not in the data directory"):
        data.load_prices("dj30", data_dir=tmp_path)


def test_csv_and_parquet_files_round_trip(tmp_path, prices):
    p, c = tmp_path / "mine.parquet", tmp_path / "mine.csv"
    prices.to_parquet(p)
    prices.to_csv(c, index=False)
    a, b = data.load_prices(p), data.load_prices(c)
    pd.testing.assert_frame_equal(a, b)
    assert data.load_prices(p, tickers=["AAA"])["ticker"].unique().tolist() == ["AAA"]
    with pytest.raises(DataError, match="unknown ticker"):
        data.load_prices(p, tickers=["ZZZ"])


def test_label_is_next_day_adj_close_return(prices):
    df = data.validate_prices(prices)
    y = data.next_day_returns(df)
    a = df[df["ticker"] == "AAA"].set_index("date")["adj_close"]
    assert y["AAA"].iloc[0] == pytest.approx(a.iloc[1] / a.iloc[0] - 1)
    assert np.isnan(y["AAA"].iloc[-1])
    # the label of day t changes when the price of t+1 changes, and never with prices up to t
    bumped = df.copy()
    t1 = df["date"].unique()[11]
    bumped.loc[(bumped["date"] == t1) & (bumped["ticker"] == "AAA"), "adj_close"] *= 1.1
    y2 = data.next_day_returns(bumped)
    changed = ~np.isclose(y["AAA"].to_numpy(), y2["AAA"].to_numpy(), equal_nan=True)
    assert list(np.flatnonzero(changed)) == [10, 11]


def test_embedded_sample_is_offline_and_close_only(monkeypatch):
    monkeypatch.delenv("STORM_DATA_DIR", raising=False)
    s = data.load_prices("sample")
    assert s["ticker"].nunique() == 20
    assert data.is_close_only(s)
    assert s["date"].max() == pd.Timestamp("2022-12-28")
    idx = data.load_index("SP500")
    assert idx.index.max() == pd.Timestamp("2022-12-28")


def test_download_without_yahoo_raises(monkeypatch, tmp_path):
    """yfinance returns an empty frame offline without raising: we must raise."""
    yf = pytest.importorskip("yfinance")
    monkeypatch.setattr(yf, "download", lambda *a, **k: pd.DataFrame())
    with pytest.raises(DataError, match="no data for 29 of 29"):
        data.download("dj30", cache_dir=tmp_path)
    assert not (tmp_path / "prices" / "dj30.parquet").exists()


def test_real_universes(data_dir):
    dj = data.load_prices("dj30", data_dir=data_dir)
    assert dj["ticker"].nunique() == 29 and set(dj["ticker"]) == set(data.universe_tickers("dj30"))
    assert not data.is_close_only(dj)
    idx = data.market_index("dj30", data_dir=data_dir)
    assert idx.index.max() == pd.Timestamp("2024-03-28")
    with pytest.raises(DataError, match="unknown index"):
        data.load_index("^FOO", data_dir=data_dir)
    spx = data.load_index("^GSPC", data_dir=data_dir)
    assert spx.index.max() == pd.Timestamp("2023-12-28")

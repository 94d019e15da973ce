import numpy as np
import pandas as pd
import pytest

from storm_lib import data
from storm_lib.panel import PROTOCOLS, Panel, Protocol, ProtocolNote, cs_rank, cs_zscore, get_protocol

NAMES = ["F1", "F2", "DAY"]


def synthetic(T=200, N=6, F=3, seed=0, normalization="cs_zscore", window=10, late=None):
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(T, N, F)).astype(np.float32)
    raw[:, :, 2] = 0.25  # a calendar feature: constant across stocks
    labels = rng.normal(0, 0.01, size=(T, N)).astype(np.float32)
    labels[-1] = np.nan
    listed = np.ones((T, N), bool)
    if late is not None:
        listed[:late, 0] = False
    dates = pd.bdate_range("2015-01-01", periods=T)
    tickers = [f"S{i}" for i in range(N)]
    return Panel.from_arrays(raw, labels, listed, dates, tickers, NAMES[:F], window=window,
                             normalization=normalization)


def test_protocols():
    clean, paper = get_protocol("clean"), get_protocol("paper")
    assert clean.train == (pd.Timestamp("2008-04-01"), pd.Timestamp("2019-03-31"))
    assert clean.valid == (pd.Timestamp("2019-04-01"), pd.Timestamp("2021-03-31"))
    assert clean.test == paper.test == (pd.Timestamp("2021-04-01"), pd.Timestamp("2024-03-31"))
    assert paper.train[1] == pd.Timestamp("2021-03-31") and paper.valid_is_test and not clean.valid_is_test
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("bogus")
    assert set(PROTOCOLS) >= {"clean", "paper", "sample"}


def test_windows_are_index_views_of_the_base_array():
    p = synthetic(normalization="none")
    x = p.windows(np.array([9, 50]))
    assert x.shape == (2, 10, 6, 3)
    np.testing.assert_array_equal(x[1], p.values[41:51])
    with pytest.raises(IndexError):
        p.windows(8)


def test_split_membership_embargoes_labels_at_the_boundary():
    dates = pd.bdate_range("2019-03-01", "2019-05-31")
    T = len(dates)
    p = Panel.from_arrays(np.zeros((T, 2, 1)), np.zeros((T, 2)), np.ones((T, 2), bool), dates,
                          ["A", "B"], ["F1"], window=5, normalization="none")
    proto = Protocol("t", ("2019-03-08", "2019-03-29"), ("2019-04-01", "2019-04-30"), ("2019-05-01", "2019-05-31"))
    s = p.splits(proto)
    # 2019-03-29 (Fri) is in train's dates but its label is realised 2019-04-01 (valid): excluded
    assert p.dates[s["train"][-1]] == pd.Timestamp("2019-03-28")
    assert p.dates[s["valid"][0]] == pd.Timestamp("2019-04-01")
    # the last day has no next session, hence no label: never in a split
    assert p.dates[s["test"][-1]] == pd.Timestamp("2019-05-30")
    assert not set(s["train"]) & set(s["valid"]) and not set(s["valid"]) & set(s["test"])
    # a train start inside the warm-up is clipped to the first full window, with a note
    early = Protocol("t", ("2019-03-01", "2019-03-29"), ("2019-04-01", "2019-04-30"), ("2019-05-01", "2019-05-31"))
    with pytest.warns(ProtocolNote, match="clipped to 2019-03-07"):
        np.testing.assert_array_equal(p.split(early, "train"), np.r_[4, s["train"]])
    assert p.dates[p.split(early, "train")[0]] == pd.Timestamp("2019-03-07")
    # ... a validation or test start there is an error
    bad = Protocol("t", ("2019-01-01", "2019-02-27"), ("2019-03-01", "2019-04-30"), ("2019-05-01", "2019-05-31"))
    with pytest.raises(data.DataError, match="first full 5-day window"):
        p.split(bad, "valid")


def test_cs_zscore_is_robust_and_day_local():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 30, 2))
    x[0, 0, 0] = 1e6  # an outlier
    x[1, :5, 1] = np.nan
    z = cs_zscore(x, clip=3.0)
    assert np.abs(z).max() <= 3.0 and z[0, 0, 0] == 3.0
    med = np.median(x[2, :, 0])
    mad = np.median(np.abs(x[2, :, 0] - med)) * 1.4826
    np.testing.assert_allclose(z[2, :, 0], np.clip((x[2, :, 0] - med) / mad, -3, 3), rtol=1e-5)
    assert (z[1, :5, 1] == 0).all()
    v = x[1, 5:, 1]
    m = np.median(v)
    np.testing.assert_allclose(z[1, 5:, 1], np.clip((v - m) / (np.median(np.abs(v - m)) * 1.4826), -3, 3), rtol=1e-5)
    # day-local: changing day 3 leaves days 0..2 unchanged
    y = x.copy()
    y[3] += 100
    np.testing.assert_array_equal(cs_zscore(y)[:3], z[:3])


def test_cs_rank_maps_to_minus_one_one():
    x = np.array([[[3.0], [1.0], [2.0], [np.nan]]])
    r = cs_rank(x)
    np.testing.assert_allclose(r[0, :, 0], [1.0, -1.0, 0.0, 0.0])


def test_calendar_features_are_not_renormalised_and_unlisted_are_zero():
    p = synthetic(late=40)
    assert np.all(p.values[40:, :, 2] == 0.25) and np.all(p.values[:40, 1:, 2] == 0.25)
    assert np.all(p.values[:40, 0, :2] == 0)
    # listed from day 40, valid once it has window = 10 sessions of history (day 49)
    assert not p.valid[:49, 0].any() and p.valid[49:, 0].all()
    assert np.isnan(p.labels[:40, 0]).all()


@pytest.mark.parametrize("normalization", ["cs_zscore", "cs_rank", "window_zscore", "prev_block", "none"])
def test_normalised_inputs_of_day_t_ignore_the_future(normalization):
    """Perturbing every raw value after day t leaves the inputs of windows ending <= t unchanged."""
    T, N, t = 200, 6, 120
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(T, N, 3)).astype(np.float32)
    labels = rng.normal(size=(T, N)).astype(np.float32)
    listed = np.ones((T, N), bool)
    listed[:30, 1] = False
    dates = pd.bdate_range("2015-01-01", periods=T)
    kw = dict(window=16, normalization=normalization)
    a = Panel.from_arrays(raw, labels, listed, dates, list("ABCDEF"), NAMES, **kw)
    raw2 = raw.copy()
    raw2[t + 1:] = rng.normal(size=raw2[t + 1:].shape) * 50
    b = Panel.from_arrays(raw2, labels, listed, dates, list("ABCDEF"), NAMES, **kw)
    ends = np.arange(a.window - 1, t + 1)
    ends = ends[ends >= 63] if normalization == "prev_block" else ends
    np.testing.assert_array_equal(a.windows(ends), b.windows(ends))
    np.testing.assert_array_equal(a.valid[: t + 1], b.valid[: t + 1])


def test_frames():
    p = synthetic()
    t = np.array([20, 21])
    f = p.frame(np.ones((2, 6)), t)
    assert list(f.index) == list(p.dates[t]) and list(f.columns) == p.tickers
    assert p.label_frame(t).shape == (2, 6)
    with pytest.raises(KeyError):
        p.feature_frame("NOPE")


# ---------------------------------------------------------------------------------------------
# Real data: causality end to end (prices -> features -> normalisation -> windows, splits)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalization", ["cs_zscore", "prev_block", "window_zscore"])
def test_real_panel_inputs_of_day_t_ignore_prices_after_t(data_dir, normalization):
    tickers = ["AAPL", "IBM", "JPM", "MSFT", "V"]  # V lists 2008-03-19, inside the span
    prices = data.load_prices("dj30", end="2009-12-31", tickers=tickers, data_dir=data_dir)
    cut = pd.Timestamp("2009-06-30")
    future = prices["date"] > cut
    noisy = prices.copy()
    rng = np.random.default_rng(0)
    for col in ["open", "high", "low", "close", "adj_close"]:
        noisy.loc[future, col] *= np.exp(rng.normal(0, 0.3, future.sum()))
    noisy["high"] = noisy[["open", "high", "low", "close"]].max(axis=1)
    noisy["low"] = noisy[["open", "high", "low", "close"]].min(axis=1)
    noisy.loc[future, "volume"] *= 7
    kw = dict(normalization=normalization, cache=False, verbose=False)
    a, b = Panel.from_prices(prices, **kw), Panel.from_prices(noisy, **kw)
    t = int(np.flatnonzero(a.dates == cut)[0])
    ends = np.arange(a.window - 1, t + 1)
    np.testing.assert_array_equal(a.windows(ends), b.windows(ends))
    np.testing.assert_array_equal(a.valid[: t + 1], b.valid[: t + 1])
    # labels up to t-1 are realised by t; the label of t itself uses the close of t+1
    np.testing.assert_array_equal(a.labels[:t], b.labels[:t])
    assert not np.array_equal(a.labels[t], b.labels[t])
    proto = Protocol("cut", ("2008-04-01", "2008-12-31"), ("2009-01-01", "2009-06-30"), ("2009-07-01", "2009-12-31"))
    for split in ("train", "valid"):
        np.testing.assert_array_equal(a.split(proto, split), b.split(proto, split))


def test_real_panel_under_both_protocols(data_dir):
    prices = data.load_prices("dj30", data_dir=data_dir)
    p = Panel.from_prices(prices, verbose=False)
    assert p.shape == (4339, 29, 160)
    clean, paper = p.splits("clean"), p.splits("paper")
    assert p.dates[clean["test"][0]] == pd.Timestamp("2021-04-01")
    assert p.dates[clean["test"][-1]] == pd.Timestamp("2024-03-27")  # 03-28 has no next close
    assert p.dates[clean["train"][-1]] == pd.Timestamp("2019-03-28")
    np.testing.assert_array_equal(paper["valid"], paper["test"])
    assert p.dates[paper["train"][-1]] == pd.Timestamp("2021-03-30")
    # every stock is valid over the whole evaluation span of the paper
    assert p.valid[clean["train"][0] + 64:].all()
    assert np.isfinite(p.values).all()


def test_dj30_market_index_matches_the_paper(data_dir):
    """paper.md §10.3: the paper's DJ30 Market Index row is a buy-and-hold of ^DJI over the test
    (CW 1.201, APY 0.063, MDD 0.219, ASR 0.429 = APY/AVO); this checks our data, label alignment,
    test span and 'paper' convention together against published numbers."""
    from storm_lib import metrics, portfolio

    dates = data.to_wide(data.load_prices("dj30", "2021-04-01", data_dir=data_dir)).index[:-1]
    r = portfolio.benchmark_returns(data.market_index("dj30", data_dir=data_dir), dates)
    m = metrics.portfolio_metrics(r, "paper")
    assert round(m["CW"], 3) == 1.201 and round(m["APY"], 3) == 0.063
    assert round(m["MDD"], 3) == 0.219 and round(m["ASR"], 3) == 0.429

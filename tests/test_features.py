"""Tests of storm_lib.features: every feature against a slow per-ticker, per-day reference,
causality, feature sets, caching."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import percentileofscore

from storm_lib import features as F

WINDOWS = (5, 10, 20, 30, 60)
EPS = 1e-12
ATOL_STD = 2e-5
REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    path = Path(os.environ.get("STORM_DATA_DIR", "../shared/data"))
    return path if path.is_absolute() else (REPO / path).resolve()


# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------


def synthetic_prices(n_days=120, seed=0, late_start=30, extra_ticker_from=None) -> pd.DataFrame:
    """3 tickers on business days. BBB lists late; CCC has ties, a flat stretch and a zero volume;
    adj_close/close is a step function (dividends). Optionally a 4th ticker DDD listing later."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=n_days)
    frames = []
    specs = [("AAA", 0), ("BBB", late_start), ("CCC", 0)]
    if extra_ticker_from is not None:
        specs.append(("DDD", extra_ticker_from))
    for ticker, start in specs:
        n = n_days - start
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        if ticker == "CCC":
            close = np.round(close * 2) / 2  # many exact ties
            close[40:52] = close[40]  # a flat stretch: Rsquare/Corr NaN, Std 0
        open_ = close * np.exp(rng.normal(0, 0.01, n))
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.01, n)))
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
        if ticker == "CCC":
            open_[40:52] = high[40:52] = low[40:52] = close[40]  # H == L on flat days
            high = np.round(high * 2) / 2
            high = np.maximum(high, np.maximum(open_, close))
        volume = rng.integers(1_000, 50_000, n).astype(float)
        if ticker == "CCC":
            volume[70] = 0.0  # zero volume: Log(V/Ref(V,1)+1) = +inf the day after
            volume[40:52] = 20_000.0  # constant volume: Corr std rule
        factor = np.where(np.arange(n) < n // 2, 0.97, 1.0)  # one dividend step
        frames.append(
            pd.DataFrame(
                {
                    "date": dates[start:],
                    "ticker": ticker,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "adj_close": close * factor,
                    "volume": volume,
                }
            )
        )
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(["date", "ticker"], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# The slow, obviously-correct reference: one ticker's own rows, one day at a time
# ---------------------------------------------------------------------------------------------


def _std1(x):
    return np.std(x, ddof=1) if len(x) >= 2 else np.nan


def _corr(x, y):
    """Qlib Corr: Pearson over pairwise-finite points, NaN when either window std is ~0."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    x[~np.isfinite(x)] = np.nan
    y[~np.isfinite(y)] = np.nan
    sx = _std1(x[~np.isnan(x)])
    sy = _std1(y[~np.isnan(y)])
    if np.isclose(sx, 0, atol=ATOL_STD) or np.isclose(sy, 0, atol=ATOL_STD):
        return np.nan
    ok = ~np.isnan(x) & ~np.isnan(y)
    if ok.sum() < 2:
        return np.nan
    return np.corrcoef(x[ok], y[ok])[0, 1]


def _sum_ratios(delta):
    """(SUMP, SUMN, SUMD) of a window of differences (NaN entries skipped)."""
    d = delta[~np.isnan(delta)]
    if len(d) == 0:
        return np.nan, np.nan, np.nan
    pos, neg, tot = np.maximum(d, 0).sum(), np.maximum(-d, 0).sum(), np.abs(d).sum() + EPS
    return pos / tot, neg / tot, (pos - neg) / tot


def reference_ticker(g: pd.DataFrame) -> pd.DataFrame:
    """All 160 features of one ticker (rows = its own dates, in order), by explicit loops."""
    g = g.sort_values("date")
    fac = g["adj_close"].to_numpy() / g["close"].to_numpy()
    C = g["close"].to_numpy() * fac
    O = g["open"].to_numpy() * fac
    H = g["high"].to_numpy() * fac
    L = g["low"].to_numpy() * fac
    V = g["volume"].to_numpy(dtype=float)
    n = len(C)
    prevC = np.r_[np.nan, C[:-1]]
    prevV = np.r_[np.nan, V[:-1]]
    dC = C - prevC
    dV = V - prevV
    with np.errstate(divide="ignore", invalid="ignore"):
        cord_y = np.log(V / prevV + 1)
        wv = np.abs(C / prevC - 1) * V
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["KMID"] = (C - O) / O
        out["KLEN"] = (H - L) / O
        out["KMID2"] = (C - O) / (H - L + EPS)
        out["KUP"] = (H - np.maximum(O, C)) / O
        out["KUP2"] = (H - np.maximum(O, C)) / (H - L + EPS)
        out["KLOW"] = (np.minimum(O, C) - L) / O
        out["KLOW2"] = (np.minimum(O, C) - L) / (H - L + EPS)
        out["KSFT"] = (2 * C - H - L) / O
        out["KSFT2"] = (2 * C - H - L) / (H - L + EPS)
        out["OPEN0"] = O / C
        out["HIGH0"] = H / C
        out["LOW0"] = L / C
    cols = {name: np.full(n, np.nan) for name in F.alpha158_names("alpha158")}
    cols.update(out)
    for d in WINDOWS:
        for i in range(n):
            lo = max(0, i - d + 1)
            w = C[lo : i + 1]
            k = len(w)
            c = C[i]
            cols[f"ROC{d}"][i] = C[i - d] / c if i - d >= 0 else np.nan
            cols[f"MA{d}"][i] = w.mean() / c
            cols[f"STD{d}"][i] = _std1(w) / c
            if k >= 2:
                x = np.arange(k, dtype=float)
                slope, intercept = np.polyfit(x, w, 1)
                cols[f"BETA{d}"][i] = slope / c
                cols[f"RESI{d}"][i] = (w[-1] - (intercept + slope * x[-1])) / c
                if not np.isclose(_std1(w), 0, atol=ATOL_STD):
                    cols[f"RSQR{d}"][i] = np.corrcoef(x, w)[0, 1] ** 2
            hw, lw = H[lo : i + 1], L[lo : i + 1]
            cols[f"MAX{d}"][i] = hw.max() / c
            cols[f"MIN{d}"][i] = lw.min() / c
            cols[f"QTLU{d}"][i] = np.quantile(w, 0.8, method="linear") / c
            cols[f"QTLD{d}"][i] = np.quantile(w, 0.2, method="linear") / c
            cols[f"RANK{d}"][i] = percentileofscore(w, w[-1], kind="rank") / 100
            cols[f"RSV{d}"][i] = (c - lw.min()) / (hw.max() - lw.min() + EPS)
            imax = int(np.argmax(hw)) + 1  # first maximum, 1-based from the oldest day
            imin = int(np.argmin(lw)) + 1
            cols[f"IMAX{d}"][i] = imax / d
            cols[f"IMIN{d}"][i] = imin / d
            cols[f"IMXD{d}"][i] = (imax - imin) / d
            cols[f"CORR{d}"][i] = _corr(w, np.log(V[lo : i + 1] + 1))
            cols[f"CORD{d}"][i] = _corr(C[lo : i + 1] / prevC[lo : i + 1], cord_y[lo : i + 1])
            up = [j >= 1 and C[j] > C[j - 1] for j in range(lo, i + 1)]
            dn = [j >= 1 and C[j] < C[j - 1] for j in range(lo, i + 1)]
            cols[f"CNTP{d}"][i] = np.mean(up)
            cols[f"CNTN{d}"][i] = np.mean(dn)
            cols[f"CNTD{d}"][i] = np.mean(up) - np.mean(dn)
            sp, sn, sd = _sum_ratios(dC[lo : i + 1])
            cols[f"SUMP{d}"][i], cols[f"SUMN{d}"][i], cols[f"SUMD{d}"][i] = sp, sn, sd
            vw = V[lo : i + 1]
            cols[f"VMA{d}"][i] = vw.mean() / (V[i] + EPS)
            cols[f"VSTD{d}"][i] = _std1(vw) / (V[i] + EPS)
            z = wv[lo : i + 1]
            z = z[~np.isnan(z)]
            cols[f"WVMA{d}"][i] = _std1(z) / (z.mean() + EPS) if len(z) else np.nan
            sp, sn, sd = _sum_ratios(dV[lo : i + 1])
            cols[f"VSUMP{d}"][i], cols[f"VSUMN{d}"][i], cols[f"VSUMD{d}"][i] = sp, sn, sd
    dates = pd.DatetimeIndex(g["date"])
    cols["DAY"] = (dates.day.to_numpy() - 1) / 30 - 0.5
    cols["WEEKDAY"] = dates.day_of_week.to_numpy() / 4 - 0.5
    cols["MONTH"] = (dates.month.to_numpy() - 1) / 11 - 0.5
    res = pd.DataFrame(cols, index=dates)
    return res.replace([np.inf, -np.inf], np.nan)


def assert_matches_reference(fa: F.FeatureArray, prices: pd.DataFrame, tickers=None):
    tickers = tickers or sorted(prices["ticker"].unique())
    checked = 0
    for ticker in tickers:
        g = prices[prices["ticker"] == ticker]
        ref = reference_ticker(g)[fa.names]
        j = fa.tickers.index(ticker)
        got = pd.DataFrame(np.asarray(fa.values[:, j, :], dtype=np.float64), index=fa.dates,
                           columns=fa.names)  # fmt: skip
        before = got.index < ref.index[0]
        assert got[before].isna().all().all(), f"{ticker}: features before its first date"
        got = got.loc[ref.index]
        for name in fa.names:
            a, b = got[name].to_numpy(), ref[name].to_numpy()
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{ticker} {name}: NaN")
            ok = ~np.isnan(b)
            # atol: pandas' online rolling variance (which Qlib's Std uses, and so do we) leaves a
            # residue of ~sqrt(machine eps) x price level on an exactly constant window (2e-8 here)
            np.testing.assert_allclose(a[ok], b[ok], rtol=1e-6, atol=1e-7, err_msg=f"{ticker} {name}")
            checked += int(ok.sum())
    return checked


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prices():
    return synthetic_prices()


@pytest.fixture(scope="module")
def fa(prices):
    return F.compute_features(prices, "alpha158")


def test_layout(fa, prices):
    assert fa.values.dtype == np.float32
    assert fa.values.shape == (prices["date"].nunique(), 3, 160)
    assert fa.tickers == ["AAA", "BBB", "CCC"]
    assert fa.dates.is_monotonic_increasing and fa.dates.equals(
        pd.DatetimeIndex(sorted(prices["date"].unique()))
    )
    assert fa.names == F.alpha158_names("alpha158")
    assert fa.frame("MA5").shape == (len(fa.dates), 3)
    assert list(fa.frame("MA5").columns) == fa.tickers
    day = fa.day(fa.dates[50])
    assert day.shape == (3, 160) and day.loc["AAA", "MA5"] == fa.values[50, 0, fa.names.index("MA5")]
    obs = fa.observed
    assert obs[:30, 1].sum() == 0 and obs[30:, 1].all() and obs[:, [0, 2]].all()
    with pytest.raises(KeyError):
        fa.frame("VWAP0")


def test_every_feature_matches_reference(fa, prices):
    checked = assert_matches_reference(fa, prices)
    assert checked > 40_000  # 160 features x ~330 ticker-days, minus warm-up NaN


def test_reference_edge_cases_are_exercised(fa):
    """The synthetic frame really hits the edge cases the reference is meant to check."""
    ccc = fa.tickers.index("CCC")
    v = lambda name: fa.values[:, ccc, fa.names.index(name)]  # noqa: E731
    assert np.isnan(v("RSQR5")[48]) and np.isnan(v("CORR5")[48])  # flat stretch -> NaN
    assert abs(v("STD5")[48]) < 1e-7  # 0 up to pandas rolling-variance residue
    assert np.isfinite(v("CORD10")[71]) and np.isfinite(v("CORD10")[75])  # inf skipped, not NaN
    assert v("VMA5")[70] > 1e10  # zero volume: Qlib's +eps denominator, kept
    bbb = fa.tickers.index("BBB")
    assert np.isnan(fa.values[:30, bbb]).all()
    first = fa.values[30, bbb]
    name = fa.names.index
    assert first[name("CNTP5")] == 0 and np.isnan(first[name("STD5")]) and np.isnan(first[name("BETA5")])
    assert first[name("MA60")] == 1 and first[name("RANK60")] == 1 and first[name("IMAX60")] == 1 / 60
    assert np.isnan(fa.values[30 + 59, bbb, name("ROC60")])
    assert np.isfinite(fa.values[30 + 60, bbb, name("ROC60")])


def test_real_dj30_tickers_match_reference():
    path = _data_dir() / "dj30.parquet"
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set STORM_DATA_DIR)")
    df = pd.read_parquet(path)
    sel = df[df["ticker"].isin(["AAPL", "KO", "V"])
             & df["date"].between("2007-12-01", "2008-06-30")]  # fmt: skip
    sel = sel.reset_index(drop=True)
    assert sel.groupby("ticker")["date"].min()["V"] > sel["date"].min()  # V lists 2008-03-19
    fa = F.compute_features(sel, "alpha158")
    assert assert_matches_reference(fa, sel) > 30_000


def test_float64_internal_precision_against_reference(prices):
    """float32 storage should be the only loss: values agree with the reference to ~1e-7 rel."""
    fa = F.compute_features(prices, "alpha158")
    g = prices[prices["ticker"] == "AAA"]
    ref = reference_ticker(g)
    got = np.asarray(fa.values[:, 0, :], dtype=np.float64)
    r = ref[fa.names].to_numpy()
    ok = ~np.isnan(r) & (np.abs(r) > 1e-3)
    rel = np.abs(got[ok] - r[ok]) / np.abs(r[ok])
    assert rel.max() < 2e-7


# --- causality -------------------------------------------------------------------------------


def _same(a, b):
    return np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("feature_set", ["alpha158", "alpha158_close"])
def test_causal_perturb_and_delete_future_rows(feature_set):
    prices = synthetic_prices(n_days=160, seed=3, late_start=20, extra_ticker_from=130)
    base = F.compute_features(prices, feature_set)
    cut = base.dates[110]
    rng = np.random.default_rng(7)
    pert = prices.copy()
    after = pert["date"] > cut
    for col in ["open", "high", "low", "close", "adj_close", "volume"]:
        pert.loc[after, col] = pert.loc[after, col] * rng.uniform(0.2, 5.0, after.sum())
    fa_pert = F.compute_features(pert, feature_set)
    fa_cut = F.compute_features(prices[~after].reset_index(drop=True), feature_set)
    k = base.dates.get_loc(cut) + 1
    assert not _same(base.values[k:], fa_pert.values[k:])  # the perturbation does something
    assert _same(base.values[:k], fa_pert.values[:k])
    assert fa_cut.dates.equals(base.dates[:k])
    assert "DDD" in base.tickers and "DDD" not in fa_cut.tickers  # lists after the cut
    cols = [base.tickers.index(t) for t in fa_cut.tickers]
    assert _same(base.values[:k][:, cols], fa_cut.values)
    assert np.isnan(base.values[:k, base.tickers.index("DDD")]).all()


# --- feature sets ----------------------------------------------------------------------------


def test_names_and_counts():
    full = F.alpha158_names("alpha158")
    close = F.alpha158_names("alpha158_close")
    assert len(full) == 160 and len(set(full)) == 160
    assert len(close) == 78 and len(set(close)) == 78
    assert full[:12] == ["KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2",
                         "OPEN0", "HIGH0", "LOW0"]  # fmt: skip
    assert full[12:17] == ["ROC5", "ROC10", "ROC20", "ROC30", "ROC60"]
    assert full[-3:] == ["DAY", "WEEKDAY", "MONTH"] and close[-3:] == ["DAY", "WEEKDAY", "MONTH"]
    assert "VWAP0" not in full and "MIN60" in full and "VSUMD60" in full
    assert set(close) <= set(full)
    assert [n for n in full if n in set(close)] == close  # same relative order
    ops = {n.rstrip("0123456789") for n in close[:-3]}
    assert ops == {"ROC", "MA", "STD", "BETA", "RSQR", "RESI", "QTLU", "QTLD", "RANK",
                   "CNTP", "CNTN", "CNTD", "SUMP", "SUMN", "SUMD"}  # fmt: skip
    with pytest.raises(ValueError, match="alpha158_close"):
        F.alpha158_names("alpha360")


def _close_only(prices):
    out = prices.copy()
    out[["open", "high", "low", "volume"]] = np.nan
    return out


def test_auto_on_close_only_warns_and_drops_the_right_groups(prices, fa):
    co = _close_only(prices)
    with pytest.warns(UserWarning, match="alpha158_close") as rec:
        got = F.compute_features(co, "auto")
    msg = str(rec[0].message)
    for word in ["open", "high", "low", "volume", "82", "KBAR", "OPEN0", "CORD", "VSUMD", "IMXD"]:
        assert word in msg
    assert got.names == F.alpha158_names("alpha158_close") and got.feature_set == "alpha158_close"
    # the close-only features equal those computed from the full data, bit for bit
    idx = [fa.names.index(n) for n in got.names]
    assert _same(got.values, fa.values[:, :, idx])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert F.compute_features(prices, "auto").names == fa.names  # full data: no warning


def test_alpha158_on_close_only_raises(prices):
    with pytest.raises(ValueError, match="open, high, low and volume"):
        F.compute_features(_close_only(prices), "alpha158")
    only_vol_missing = prices.drop(columns=["volume"])
    with pytest.raises(ValueError, match="volume"):
        F.compute_features(only_vol_missing, "alpha158")


def test_unknown_feature_set(prices):
    with pytest.raises(ValueError, match="alpha158_close"):
        F.compute_features(prices, "alpha360")
    with pytest.raises(ValueError, match="auto"):
        F.build_features(prices, "nope", cache=False, verbose=False)


def test_bad_input(prices):
    with pytest.raises(ValueError, match="duplicated"):
        F.compute_features(pd.concat([prices, prices.iloc[:1]]), "alpha158")
    with pytest.raises(ValueError, match="adj_close"):
        F.compute_features(prices.drop(columns=["adj_close"]), "alpha158")


def test_row_order_and_dtypes_do_not_matter(prices, fa):
    shuffled = prices.sample(frac=1.0, random_state=1).reset_index(drop=True)
    shuffled["volume"] = shuffled["volume"].astype(np.int64)
    shuffled["date"] = shuffled["date"].astype("datetime64[us]")
    got = F.compute_features(shuffled, "alpha158")
    assert got.tickers == fa.tickers and got.dates.equals(fa.dates)
    assert _same(got.values, fa.values)


# --- hash and cache --------------------------------------------------------------------------


def test_data_hash(prices):
    h = F.data_hash(prices)
    assert len(h) == 64 and h == F.data_hash(prices.copy())
    same = prices.copy()
    same["volume"] = same["volume"].astype(np.int64)
    same["date"] = same["date"].astype("datetime64[s]")
    same["ticker"] = same["ticker"].astype(object)
    assert F.data_hash(same) == h
    changed = prices.copy()
    changed.loc[5, "close"] += 1e-9
    assert F.data_hash(changed) != h
    assert F.data_hash(prices.iloc[:-1]) != h
    assert F.data_hash(prices.assign(extra=1)) == h  # non-schema columns are ignored


def test_cache_hit_miss_and_version(prices, tmp_path, monkeypatch):
    calls = []
    real = F.compute_features

    def counting(p, fs="alpha158"):
        calls.append(fs)
        return real(p, fs)

    monkeypatch.setattr(F, "compute_features", counting)
    first = F.build_features(prices, "auto", cache_dir=tmp_path, verbose=False)
    assert calls == ["alpha158"] and not first.from_cache
    values_path, meta_path = F.cache_paths(prices, "alpha158", tmp_path)
    assert values_path.exists() and meta_path.exists() and first.cache_path == values_path
    assert not [p for p in values_path.parent.iterdir() if p.name.endswith(".tmp")]

    def boom(*a, **k):
        raise AssertionError("compute_features called on a cache hit")

    monkeypatch.setattr(F, "compute_features", boom)
    second = F.build_features(prices, "auto", cache_dir=tmp_path, verbose=False)
    assert second.from_cache
    assert _same(second.values, first.values) and second.values.dtype == np.float32
    assert second.dates.equals(first.dates) and second.tickers == first.tickers
    assert second.names == first.names and np.array_equal(second.observed, first.observed)
    mm = F.build_features(prices, "auto", cache_dir=tmp_path, verbose=False, mmap=True)
    assert isinstance(mm.values, np.memmap) and _same(np.asarray(mm.values), first.values)

    monkeypatch.setattr(F, "compute_features", counting)
    changed = prices.copy()
    changed.loc[10, "close"] *= 1.01
    third = F.build_features(changed, "auto", cache_dir=tmp_path, verbose=False)
    assert len(calls) == 2 and not third.from_cache
    assert not _same(third.values, first.values)

    monkeypatch.setattr(F, "FEATURE_VERSION", F.FEATURE_VERSION + 1000)
    fourth = F.build_features(prices, "auto", cache_dir=tmp_path, verbose=False)
    assert len(calls) == 3 and not fourth.from_cache
    assert _same(fourth.values, first.values)
    assert F.cache_paths(prices, "alpha158", tmp_path)[0] != values_path


def test_cache_keyed_by_feature_set_and_bypass(prices, tmp_path, monkeypatch):
    a = F.build_features(prices, "alpha158", cache_dir=tmp_path, verbose=False)
    b = F.build_features(prices, "alpha158_close", cache_dir=tmp_path, verbose=False)
    assert not a.from_cache and not b.from_cache and b.values.shape[2] == 78
    co = _close_only(prices)
    with pytest.warns(UserWarning, match="alpha158_close"):
        c = F.build_features(co, "auto", cache_dir=tmp_path, verbose=False)
    assert c.feature_set == "alpha158_close" and not c.from_cache  # different data hash
    d = F.build_features(prices, "alpha158", cache=False, cache_dir=tmp_path, verbose=False)
    assert not d.from_cache and _same(d.values, a.values)


def test_damaged_cache_is_recomputed(prices, tmp_path):
    F.build_features(prices, "alpha158", cache_dir=tmp_path, verbose=False)
    values_path, meta_path = F.cache_paths(prices, "alpha158", tmp_path)
    meta_path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = F.build_features(prices, "alpha158", cache_dir=tmp_path, verbose=False)
    assert not again.from_cache
    assert F.build_features(prices, "alpha158", cache_dir=tmp_path, verbose=False).from_cache


def test_verbose_output(prices, tmp_path, capsys):
    F.build_features(prices, "alpha158", cache_dir=tmp_path, verbose=True)
    F.build_features(prices, "alpha158", cache_dir=tmp_path, verbose=True)
    out = capsys.readouterr().out
    assert "computed" in out and "cache hit" in out
    with pytest.warns(UserWarning):
        F.build_features(_close_only(prices), "auto", cache_dir=tmp_path, verbose=True)
    assert "close-only" in capsys.readouterr().out

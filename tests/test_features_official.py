"""The official code's 152 features (``feature_set="official152"``, audit switch (f)): every family
against a slow per-ticker, per-row reference written from official-code.md §1 and §10.22, causality,
own-row semantics, caching and the panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import percentileofscore
from test_features import synthetic_prices

from storm_lib import features as F

WINDOWS = (5, 10, 20, 30, 60)
EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# The slow reference: one ticker's own rows (raw prices), one row and one window at a time
# ---------------------------------------------------------------------------------------------


def reference_ticker(g: pd.DataFrame) -> pd.DataFrame:
    """All 152 official features of one ticker by explicit loops (official-code.md §1)."""
    g = g.sort_values("date")
    C, O, H, L, A = (g[c].to_numpy(dtype=float) for c in ("close", "open", "high", "low", "adj_close"))
    V = g["volume"].to_numpy(dtype=float)
    n = len(C)
    r = np.r_[np.nan, C[1:] / C[:-1] - 1]            # r_t = C_t / C_{t-1} - 1
    dv = np.r_[np.nan, V[1:] - V[:-1]]
    cols = {name: np.full(n, np.nan) for name in F.official152_names()}
    with np.errstate(divide="ignore", invalid="ignore"):
        cols.update({"open": O, "high": H, "low": L, "close": C, "adj_close": A})
        hl = H - L + EPS
        cols["kmid"] = (C - O) / C
        cols["kmid2"] = (C - O) / hl
        cols["klen"] = (H - L) / O
        cols["kup"] = (H - np.maximum(O, C)) / O
        cols["kup2"] = (H - np.maximum(O, C)) / hl
        cols["klow"] = (np.minimum(O, C) - L) / O
        cols["klow2"] = (np.minimum(O, C) - L) / hl
        cols["ksft"] = (2 * C - H - L) / O
        cols["ksft2"] = (2 * C - H - L) / hl
        for w in WINDOWS:
            for i in range(n):
                c = C[i]
                if i >= w:  # operators that need C_{t-w} or w values of a first difference
                    cw = C[i - w]
                    cols[f"roc_{w}"][i] = cw / c
                    cols[f"beta_{w}"][i] = (cw - c) / (w * c)
                    m, M = min(L[i], cw), max(H[i], cw)
                    cols[f"rsv_{w}"][i] = (c - m) / (M - m + EPS)
                    rr = r[i - w + 1 : i + 1]
                    sp = np.maximum(rr, 0).sum() / (np.abs(rr).sum() + EPS)
                    cols[f"sump_{w}"][i], cols[f"sumn_{w}"][i], cols[f"sumd_{w}"][i] = sp, 1 - sp, 2 * sp - 1
                    z = np.abs(rr) * V[i - w + 1 : i + 1]
                    cols[f"wvma_{w}"][i] = np.std(z, ddof=1) / (z.mean() + EPS)
                    d = dv[i - w + 1 : i + 1]
                    vp = np.maximum(d, 0).sum() / (np.abs(d).sum() + EPS)
                    cols[f"vsump_{w}"][i], cols[f"vsumn_{w}"][i], cols[f"vsumd_{w}"][i] = vp, 1 - vp, 2 * vp - 1
                    ratio = C[i - w + 1 : i + 1] / C[i - w : i]
                    cols[f"cord_{w}"][i] = 1.0 if ratio.max() > ratio.min() else 0.0  # constant (§10.22)
                if i < w - 1:
                    continue
                win = C[i - w + 1 : i + 1]
                cols[f"ma_{w}"][i] = win.mean() / c
                cols[f"std_{w}"][i] = np.std(win, ddof=1) / c
                cols[f"max_{w}"][i] = win.max() / c
                cols[f"min_{w}"][i] = win.min() / c
                cols[f"qtlu_{w}"][i] = np.quantile(win, 0.8, method="linear") / c
                cols[f"qtld_{w}"][i] = np.quantile(win, 0.2, method="linear") / c
                cols[f"rank_{w}"][i] = percentileofscore(win, c, kind="rank") / 100 / w
                imax = int(np.argmax(H[i - w + 1 : i + 1]))  # 0-based, first maximum, oldest row first
                imin = int(np.argmin(L[i - w + 1 : i + 1]))
                cols[f"imax_{w}"][i], cols[f"imin_{w}"][i] = imax / w, imin / w
                cols[f"imxd_{w}"][i] = (imax - imin) / w
                rw = r[i - w + 1 : i + 1]
                cols[f"cntp_{w}"][i] = np.mean([x > 0 for x in rw])  # r_0 = NaN counts as neither
                cols[f"cntn_{w}"][i] = np.mean([x < 0 for x in rw])
                cols[f"cntd_{w}"][i] = cols[f"cntp_{w}"][i] - cols[f"cntn_{w}"][i]
                cols[f"corr_{w}"][i] = 1.0 if win.max() > win.min() else 0.0  # constant (§10.22)
                vw = V[i - w + 1 : i + 1]
                cols[f"vma_{w}"][i] = vw.mean() / (V[i] + EPS)
                cols[f"vstd_{w}"][i] = np.std(vw, ddof=1) / (V[i] + EPS)
    dates = pd.DatetimeIndex(g["date"])
    cols["day"], cols["weekday"], cols["month"] = dates.day, dates.day_of_week, dates.month
    res = pd.DataFrame(cols, index=dates)[F.official152_names()].astype(float)
    return res.replace([np.inf, -np.inf], np.nan).fillna(0.0)  # +-inf -> NaN -> 0, warm-up included


def assert_matches_reference(fa: F.FeatureArray, prices: pd.DataFrame) -> int:
    checked = 0
    for ticker in sorted(prices["ticker"].unique()):
        g = prices[prices["ticker"] == ticker]
        ref = reference_ticker(g)
        j = fa.tickers.index(ticker)
        got = pd.DataFrame(np.asarray(fa.values[:, j, :], dtype=np.float64), index=fa.dates, columns=fa.names)
        assert got.drop(index=ref.index).isna().all().all(), f"{ticker}: values on dates without a row"
        got = got.loc[ref.index]
        assert not got.isna().any().any(), f"{ticker}: NaN on an observed row"
        for name in fa.names:
            # float32 storage; pandas' online rolling variance leaves ~1e-8 residues on flat windows
            np.testing.assert_allclose(got[name], ref[name], rtol=2e-6, atol=1e-7, err_msg=f"{ticker} {name}")
            checked += len(ref)
    return checked


@pytest.fixture(scope="module")
def prices():
    return synthetic_prices()


@pytest.fixture(scope="module")
def fa(prices):
    return F.compute_features(prices, "official152")


# ---------------------------------------------------------------------------------------------
# Layout and names
# ---------------------------------------------------------------------------------------------


def test_names_and_layout(fa, prices):
    names = F.official152_names()
    assert len(names) == 152 == len(set(names)) and F.alpha158_names("official152") == names
    assert names[:14] == ["open", "high", "low", "close", "adj_close", "kmid", "kmid2", "klen", "kup",
                          "kup2", "klow", "klow2", "ksft", "ksft2"]
    assert names[14:19] == ["roc_5", "roc_10", "roc_20", "roc_30", "roc_60"] and names[-3:] == ["day", "weekday", "month"]
    assert {n.rsplit("_", 1)[0] for n in names[14:-3]} == set(F.OFFICIAL_OPS) and len(F.OFFICIAL_OPS) == 27
    assert "official152" in F.FEATURE_SETS
    assert fa.values.shape == (prices["date"].nunique(), 3, 152) and fa.values.dtype == np.float32
    assert fa.names == names and fa.feature_set == "official152" and fa.tickers == ["AAA", "BBB", "CCC"]
    assert np.isnan(fa.values[:30, 1]).all() and not np.isnan(fa.values[30:]).any()  # BBB lists on day 30


# ---------------------------------------------------------------------------------------------
# Every family against the reference
# ---------------------------------------------------------------------------------------------


FAMILIES = {
    "prices": list(F.OFFICIAL_PRICES),
    "kbar": list(F.OFFICIAL_KBAR),
    "calendar": list(F.OFFICIAL_CALENDAR),
    **{op: [f"{op}_{w}" for w in WINDOWS] for op in F.OFFICIAL_OPS},
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_matches_reference(fa, prices, family):
    sub = F.FeatureArray(fa.values[:, :, [fa.names.index(n) for n in FAMILIES[family]]], fa.dates, fa.tickers,
                         FAMILIES[family], feature_set="official152", observed=fa.observed)
    ref_names = FAMILIES[family]
    checked = 0
    for ticker in fa.tickers:
        g = prices[prices["ticker"] == ticker]
        ref = reference_ticker(g)[ref_names]
        j = sub.tickers.index(ticker)
        got = pd.DataFrame(np.asarray(sub.values[:, j, :], np.float64), index=sub.dates, columns=ref_names).loc[ref.index]
        for name in ref_names:
            np.testing.assert_allclose(got[name], ref[name], rtol=2e-6, atol=1e-7, err_msg=f"{ticker} {name}")
            checked += len(ref)
    assert checked >= len(ref_names) * 300


def test_all_features_match_reference(fa, prices):
    assert assert_matches_reference(fa, prices) == 152 * (120 + 90 + 120)


def test_official_quirks_are_what_the_reference_says(fa):
    """Spot values that pin the quirks (warm-up 0, constant corr/cord, rank / w, 0-based imax)."""
    aaa = lambda name: fa.values[:, 0, fa.names.index(name)]  # noqa: E731
    for w in WINDOWS:
        assert (aaa(f"corr_{w}")[: w - 1] == 0).all() and (aaa(f"corr_{w}")[w - 1:] == 1).all()
        assert (aaa(f"cord_{w}")[:w] == 0).all() and (aaa(f"cord_{w}")[w:] == 1).all()
        assert (aaa(f"roc_{w}")[:w] == 0).all() and (aaa(f"ma_{w}")[: w - 1] == 0).all()
        assert aaa(f"ma_{w}")[w - 1] != 0
        assert 0 < aaa(f"rank_{w}")[w:].max() <= 1 / w + 1e-7  # percentile rank / w
        assert aaa(f"imax_{w}")[w:].max() <= (w - 1) / w + 1e-7  # 0-based
        assert aaa(f"cntp_{w}")[w - 1] != 0 or aaa(f"cntn_{w}")[w - 1] != 0  # boolean window complete at w-1
        np.testing.assert_allclose(aaa(f"sumn_{w}")[w:], 1 - aaa(f"sump_{w}")[w:], atol=1e-6)
    ccc = fa.tickers.index("CCC")
    flat = fa.values[:, ccc, fa.names.index("corr_5")]
    assert flat[48] == 0 and flat[60] == 1  # CCC is flat on days 40-51: 0/0 -> NaN -> 0
    assert fa.values[70, ccc, fa.names.index("vma_5")] > 1e10  # zero volume / (0 + 1e-12), kept
    day = fa.dates.day.to_numpy()
    np.testing.assert_array_equal(fa.values[:, 0, fa.names.index("day")], day)
    np.testing.assert_array_equal(fa.values[:, 0, fa.names.index("weekday")], fa.dates.day_of_week)


def test_constant_corr_equals_the_official_pandas_call(prices):
    """corr/cord as the released processor computes them (``rolling.corr(pairwise=...)``), warm-up
    and flat windows filled with 0: equal to our constant to float32 precision."""
    fa = F.compute_features(prices, "official152")
    for ticker in fa.tickers:
        g = prices[prices["ticker"] == ticker].sort_values("date")
        close, vol = g["close"].reset_index(drop=True), g["volume"].reset_index(drop=True)
        j = fa.tickers.index(ticker)
        rows = fa.dates.get_indexer(pd.DatetimeIndex(g["date"]))
        for w in WINDOWS:
            corr = close.rolling(w).corr(pairwise=np.log(vol + 1).rolling(w))
            ratio, lv = close / close.shift(1), np.log(vol / vol.shift(1) + 1)
            cord = ratio.rolling(w).corr(pairwise=lv.rolling(w))
            for name, official in ((f"corr_{w}", corr), (f"cord_{w}", cord)):
                official = official.replace([np.inf, -np.inf], np.nan).fillna(0).to_numpy()
                got = fa.values[rows, j, fa.names.index(name)]
                np.testing.assert_allclose(got, official, atol=1e-6, err_msg=f"{ticker} {name}")


def test_real_dj30_tickers_match_reference(data_dir):
    path = data_dir / "dj30.parquet"
    df = pd.read_parquet(path)
    sel = df[df["ticker"].isin(["AAPL", "KO", "V"]) & df["date"].between("2007-12-01", "2008-06-30")]
    sel = sel.reset_index(drop=True)
    assert sel.groupby("ticker")["date"].min()["V"] > sel["date"].min()  # V lists 2008-03-19
    fa = F.compute_features(sel, "official152")
    assert assert_matches_reference(fa, sel) > 152 * 300


# ---------------------------------------------------------------------------------------------
# Causality, own rows, sets, cache, panel
# ---------------------------------------------------------------------------------------------


def _same(a, b):
    return np.array_equal(a, b, equal_nan=True)


def test_causal_perturb_and_delete_future_rows():
    prices = synthetic_prices(n_days=160, seed=3, late_start=20, extra_ticker_from=130)
    base = F.compute_features(prices, "official152")
    cut = base.dates[110]
    rng = np.random.default_rng(7)
    pert = prices.copy()
    after = pert["date"] > cut
    for col in ["open", "high", "low", "close", "adj_close", "volume"]:
        pert.loc[after, col] = pert.loc[after, col] * rng.uniform(0.2, 5.0, after.sum())
    fa_pert = F.compute_features(pert, "official152")
    fa_cut = F.compute_features(prices[~after].reset_index(drop=True), "official152")
    k = base.dates.get_loc(cut) + 1
    assert not _same(base.values[k:], fa_pert.values[k:])  # the perturbation does something
    assert _same(base.values[:k], fa_pert.values[:k])
    assert fa_cut.dates.equals(base.dates[:k]) and "DDD" not in fa_cut.tickers
    cols = [base.tickers.index(t) for t in fa_cut.tickers]
    assert _same(base.values[:k][:, cols], fa_cut.values)


def test_a_ticker_is_computed_on_its_own_rows(prices):
    """A session missing for one ticker is skipped, as the official per-asset processor does (no
    calendar reindexing): the other rows equal the reference on that ticker's own rows."""
    holed = prices.drop(index=prices.index[(prices["ticker"] == "AAA")][[70, 71]]).reset_index(drop=True)
    fa = F.compute_features(holed, "official152")
    assert np.isnan(fa.values[70:72, 0]).all() and not np.isnan(fa.values[72, 0]).any()
    assert assert_matches_reference(fa, holed) > 0


def test_row_order_does_not_matter(prices, fa):
    shuffled = prices.sample(frac=1.0, random_state=1).reset_index(drop=True)
    got = F.compute_features(shuffled, "official152")
    assert got.tickers == fa.tickers and _same(got.values, fa.values)


def test_needs_ohlv_and_is_never_auto(prices):
    close_only = prices.copy()
    close_only[["open", "high", "low", "volume"]] = np.nan
    with pytest.raises(ValueError, match="official152"):
        F.compute_features(close_only, "official152")
    assert F.resolve_feature_set(prices, "auto") == "alpha158"


def test_other_sets_are_unchanged_by_the_new_one(prices):
    """Adding the set leaves Alpha158's names, cache key and values alone (FEATURE_VERSION unchanged)."""
    a = F.compute_features(prices, "alpha158")
    assert a.names == F.alpha158_names("alpha158") and len(a.names) == 160
    p1, _ = F.cache_paths(prices, "alpha158")
    p2, _ = F.cache_paths(prices, "official152")
    assert p1 != p2 and p1.name.startswith(f"alpha158-v{F.FEATURE_VERSION}-")
    assert p2.name.startswith(f"official152-v{F.FEATURE_VERSION}-")


def test_cache_round_trip(prices, tmp_path):
    first = F.build_features(prices, "official152", cache_dir=tmp_path, verbose=False)
    second = F.build_features(prices, "official152", cache_dir=tmp_path, verbose=False)
    assert not first.from_cache and second.from_cache
    assert second.names == F.official152_names() and _same(first.values, second.values)


def test_panel_with_the_official_scaler(prices):
    from storm_lib.panel import Panel

    panel = Panel.from_prices(prices, feature_set="official152", normalization="prev_block", window=16,
                              verbose=False, cache=False)
    assert panel.names == F.official152_names() and panel.shape[2] == 152
    day = panel.names.index("day")
    # lower-case calendar columns are scaled like every other column (the official scaler includes them)
    assert not np.isin(panel.values[panel.valid][:, day], np.arange(1, 32)).all()
    assert np.isfinite(panel.values).all()

import math

import empyrical
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from storm_lib import metrics
from storm_lib.metrics import (
    CONVENTIONS, drawdown, ic, ic_summary, metrics_table, portfolio_metrics, rank_ic,
)

# ----------------------------------------------------------------------------- portfolio metrics

# Wealth path 1 → 0.9 → 1.08 → 1.026 → 1.1286: a first-day loss, then a 5 % drawdown from the day-2 peak.
R = pd.Series([-0.10, 0.20, -0.05, 0.10], index=pd.bdate_range("2024-01-01", periods=4))
P = 8  # periods per year: 4 days = half a year
CW = 0.9 * 1.2 * 0.95 * 1.1
MEAN = (-0.10 + 0.20 - 0.05 + 0.10) / 4  # 0.0375
SS = 0.1375**2 + 0.1625**2 + 0.0875**2 + 0.0625**2  # squared deviations from the mean
STD1, STD0 = math.sqrt(SS / 3), math.sqrt(SS / 4)


def test_hand_standard():
    m = portfolio_metrics(R, "standard", periods=P)
    apy = CW**2 - 1
    assert m["CW"] == pytest.approx(1.1286)
    assert m["APY"] == pytest.approx(apy)
    assert m["MDD"] == pytest.approx(0.10)  # 1 − 0.9/1: V_0 = 1 counts
    assert m["AVO"] == pytest.approx(STD1 * math.sqrt(8))
    assert m["ASR"] == pytest.approx(MEAN / STD1 * math.sqrt(8))
    assert m["CR"] == pytest.approx(apy / 0.10)
    assert m["n_days"] == 4


def test_hand_paper():
    m = portfolio_metrics(R, "paper", periods=P)
    s = portfolio_metrics(R, "standard", periods=P)
    for key in ("APY", "CW", "MDD", "AVO", "CR"):
        assert m[key] == pytest.approx(s[key])
    assert m["ASR"] == pytest.approx((CW**2 - 1) / (STD1 * math.sqrt(8)))


def test_hand_official():
    m = portfolio_metrics(R, "official", periods=P)
    assert m["CW"] == pytest.approx(0.1286)  # a return, not a multiple
    assert m["APY"] == pytest.approx(0.1286 / 4 * 8)  # simple annualisation
    assert m["MDD"] == pytest.approx(1 - 1.026 / 1.08)  # peak starts at day 1: the first-day loss is ignored
    assert m["AVO"] == pytest.approx(STD0)  # daily, ddof 0
    assert m["ASR"] == pytest.approx(MEAN * math.sqrt(4) / STD0)
    assert m["CR"] == pytest.approx(MEAN * 8 / (1 - 1.026 / 1.08))


def _random_returns(seed=0, n=500):
    rng = np.random.default_rng(seed)
    return pd.Series(rng.normal(4e-4, 0.012, n), index=pd.bdate_range("2021-04-01", periods=n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standard_matches_empyrical(seed):
    r = _random_returns(seed)
    m = portfolio_metrics(r, "standard")
    assert m["APY"] == pytest.approx(empyrical.annual_return(r), rel=1e-10)
    assert m["CW"] == pytest.approx(empyrical.cum_returns_final(r) + 1, rel=1e-10)
    assert m["AVO"] == pytest.approx(empyrical.annual_volatility(r), rel=1e-10)
    assert m["ASR"] == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-10)
    assert m["MDD"] == pytest.approx(-empyrical.max_drawdown(r), rel=1e-10)
    assert m["CR"] == pytest.approx(empyrical.calmar_ratio(r), rel=1e-10)


def test_empyrical_first_day_loss():
    r = pd.Series([-0.05, 0.01, 0.02, 0.03], index=pd.bdate_range("2024-01-01", periods=4))
    assert portfolio_metrics(r)["MDD"] == pytest.approx(-empyrical.max_drawdown(r))
    assert portfolio_metrics(r)["MDD"] == pytest.approx(0.05)
    assert portfolio_metrics(r, "official")["MDD"] == 0.0
    assert math.isnan(portfolio_metrics(r, "official")["CR"])


def test_official_relations():
    r = _random_returns(3, n=300)
    n = len(r)
    std, pap, off = (portfolio_metrics(r, c) for c in CONVENTIONS)
    # ASR_off = mean/std0·sqrt(n) = (mean/std1·sqrt(252))·(std1/std0)·sqrt(n/252),
    # with std1/std0 = sqrt(n/(n−1)).
    assert off["ASR"] == pytest.approx(std["ASR"] * math.sqrt(n / (n - 1)) * math.sqrt(n / 252))
    assert off["AVO"] == pytest.approx(std["AVO"] / math.sqrt(252) * math.sqrt((n - 1) / n))
    assert off["CW"] == pytest.approx(std["CW"] - 1)
    assert off["APY"] == pytest.approx((std["CW"] - 1) * 252 / n)
    assert off["MDD"] <= std["MDD"]
    assert pap["ASR"] == pytest.approx(pap["APY"] / pap["AVO"])
    assert pap["CR"] == pytest.approx(pap["APY"] / pap["MDD"])


def test_no_drawdown_gives_nan_calmar():
    r = pd.Series([0.01, 0.02, 0.0])
    for c in CONVENTIONS:
        m = portfolio_metrics(r, c)
        assert m["MDD"] == 0.0 and math.isnan(m["CR"])


def test_drawdown_curve():
    dd = drawdown(R)
    np.testing.assert_allclose(dd.to_numpy(), [0.10, 0.0, 1 - 1.026 / 1.08, 0.0])
    assert dd.index.equals(R.index)
    assert dd.max() == pytest.approx(portfolio_metrics(R)["MDD"])


def test_metrics_table():
    table = metrics_table({"a": R, "b": _random_returns()}, "paper")
    assert list(table.columns) == ["APY", "CW", "CR", "ASR", "MDD", "AVO"]
    assert list(table.index) == ["a", "b"]
    assert table.loc["a", "ASR"] == pytest.approx(portfolio_metrics(R, "paper")["ASR"])


def test_portfolio_metrics_errors():
    with pytest.raises(ValueError, match="unknown convention"):
        portfolio_metrics(R, "qlib")
    with pytest.raises(ValueError, match="empty"):
        portfolio_metrics(pd.Series([], dtype=float))
    with pytest.raises(ValueError, match="NaN-only"):
        portfolio_metrics(pd.Series([np.nan, np.nan]))
    with pytest.raises(ValueError, match="non-finite value at"):
        portfolio_metrics(pd.Series([0.01, np.nan, 0.02]))
    with pytest.raises(ValueError, match="periods"):
        portfolio_metrics(R, periods=0)


# ----------------------------------------------------------------------------- RankIC / IC


def _panel(seed=0, T=40, N=30, nan_frac=0.15, ties=False):
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2022-01-03", periods=T)
    cols = [f"S{i:02d}" for i in range(N)]
    s = rng.normal(size=(T, N))
    y = rng.normal(size=(T, N)) * 0.02 + 0.3 * 0.02 * s
    if ties:
        s, y = np.round(s * 2), np.round(y * 100)
    s[rng.random((T, N)) < nan_frac] = np.nan
    y[rng.random((T, N)) < nan_frac] = np.nan
    return pd.DataFrame(s, idx, cols), pd.DataFrame(y, idx, cols)


def _per_date(scores, labels, fn):
    out = []
    for t in scores.index:
        a, b = scores.loc[t].to_numpy(), labels.loc[t].to_numpy()
        m = np.isfinite(a) & np.isfinite(b)
        out.append(fn(a[m], b[m])[0])
    return np.array(out)


def test_rank_ic_matches_spearmanr_with_nans_and_ties():
    scores, labels = _panel(ties=True)
    got = rank_ic(scores, labels)
    assert got.name == "RankIC" and got.index.equals(scores.index)
    np.testing.assert_allclose(got.to_numpy(), _per_date(scores, labels, stats.spearmanr), atol=1e-12)


def test_ic_matches_pearsonr():
    scores, labels = _panel(1)
    got = ic(scores, labels)
    assert got.name == "IC"
    np.testing.assert_allclose(got.to_numpy(), _per_date(scores, labels, stats.pearsonr), atol=1e-12)


def test_official_rank_ic_is_scaled_without_ties():
    scores, labels = _panel(2)
    n = (scores.notna() & labels.notna()).sum(axis=1)
    np.testing.assert_allclose(
        rank_ic(scores, labels, "official").to_numpy(),
        ((n - 1) / n * rank_ic(scores, labels)).to_numpy(),
        atol=1e-12,
    )


def test_official_rank_ic_breaks_ties_by_position():
    # Authors' formula on one day: double-argsort ranks, cov /n over ddof-1 stds.
    s = np.array([1.0, 1.0, 2.0, 0.0, 1.0])
    y = np.array([0.5, 0.1, 0.3, 0.2, 0.4])
    rs = np.argsort(np.argsort(s, kind="stable"), kind="stable")  # ties by position: [1, 2, 4, 0, 3]
    ry = np.argsort(np.argsort(y, kind="stable"), kind="stable")
    expected = np.mean((rs - rs.mean()) * (ry - ry.mean())) / (rs.std(ddof=1) * ry.std(ddof=1))
    frame = lambda a: pd.DataFrame([a], index=pd.to_datetime(["2024-01-02"]))  # noqa: E731
    got = rank_ic(frame(s), frame(y), "official").iloc[0]
    assert got == pytest.approx(expected)
    assert got != pytest.approx(rank_ic(frame(s), frame(y)).iloc[0])


def test_rank_ic_degenerate_days():
    idx = pd.bdate_range("2024-01-01", periods=4)
    scores = pd.DataFrame(
        [[1, 2, 3], [5, 5, 5], [1, np.nan, np.nan], [1, 2, 3]], idx, list("abc"), dtype=float
    )
    labels = pd.DataFrame(
        [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [np.nan] * 3], idx, list("abc")
    )
    for conv in ("standard", "official"):
        got = rank_ic(scores, labels, conv)
        assert got.iloc[0] == pytest.approx(1.0 if conv == "standard" else 2 / 3)
        assert got.iloc[1:].isna().all()  # constant side, 1 stock, no labels
    assert ic(scores, labels).iloc[1:].isna().all()
    # A constant float side (0.1 × 3: the mean is inexact) is still NaN, not a rounding artefact.
    assert np.isnan(ic(scores.iloc[[0]], pd.DataFrame([[0.1] * 3], idx[:1], list("abc"))).iloc[0])


def test_rank_ic_aligns_labels_by_name_and_date():
    scores, labels = _panel(3)
    bigger = labels.copy()
    bigger["EXTRA"] = 1.0
    bigger = bigger[bigger.columns[::-1]]
    pd.testing.assert_series_equal(rank_ic(scores.iloc[5:], bigger), rank_ic(scores, labels).iloc[5:])


def test_rank_ic_errors():
    scores, labels = _panel(4)
    with pytest.raises(ValueError, match="unknown convention"):
        rank_ic(scores, labels, "paper")
    with pytest.raises(ValueError, match="not in labels"):
        rank_ic(scores, labels.iloc[1:])
    with pytest.raises(ValueError, match="not in labels"):
        rank_ic(scores, labels.drop(columns="S03"))
    with pytest.raises(ValueError, match="DataFrame"):
        rank_ic(scores.to_numpy(), labels)


def test_rank_ic_on_a_paper_sized_panel():
    scores, labels = _panel(5, T=750, N=408)
    for convention in ("standard", "official"):
        daily = rank_ic(scores, labels, convention)
        assert len(daily) == 750 and daily.notna().all()


def test_ic_summary():
    daily = pd.Series([0.1, 0.2, np.nan, 0.3])
    s = ic_summary(daily)
    assert s == {"RankIC": pytest.approx(0.2), "RankICIR": pytest.approx(2.0), "n_days": 3}  # std = 0.1
    assert ic_summary(daily, "official")["RankICIR"] == pytest.approx(0.2 / (0.1 + 1e-6))
    assert ic_summary(daily, "official")["RankICIR"] != pytest.approx(2.0, rel=1e-7)
    with pytest.raises(ValueError, match="no non-NaN"):
        ic_summary(pd.Series([np.nan, np.nan]))
    with pytest.raises(ValueError, match="unknown convention"):
        ic_summary(daily, "paper")


def test_conventions_exported():
    assert metrics.CONVENTIONS == ("standard", "paper", "official")

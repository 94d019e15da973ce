"""storm_lib.stats: block-bootstrap CIs, HAC variance, paired tests and cost curves (synthetic, fast)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from storm_lib import stats
from storm_lib.metrics import ic_summary, portfolio_metrics
from storm_lib.portfolio import topk_drop


def dated(values, start="2021-01-04"):
    return pd.Series(np.asarray(values, dtype=float), index=pd.bdate_range(start, periods=len(values)))


def ar1(n, phi, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    e = rng.normal(scale=scale, size=n + 200)
    x = np.empty_like(e)
    x[0] = e[0]
    for t in range(1, e.size):
        x[t] = phi * x[t - 1] + e[t]
    return x[200:]


# ------------------------------------------------------------------------------ bootstrap CIs


def test_iid_mean_ci_matches_the_normal_interval():
    x = np.random.default_rng(1).normal(0.001, 0.01, 600)
    half = sps.norm.ppf(0.975) * x.std(ddof=1) / np.sqrt(x.size)
    for method in ("iid", "stationary"):
        ci = stats.bootstrap_ci(x, "mean", n=4000, seed=3, method=method)
        assert ci["estimate"] == pytest.approx(x.mean())
        assert ci["low"] == pytest.approx(x.mean() - half, abs=0.12 * half)
        assert ci["high"] == pytest.approx(x.mean() + half, abs=0.12 * half)
        assert ci["se"] == pytest.approx(half / 1.96, rel=0.1)
        assert ci["n"] == 4000 and ci["n_days"] == 600
    assert stats.optimal_block(x) < 3  # Politis–White sees (almost) no dependence in iid data


def test_coverage_of_the_mean_on_iid_data():
    rng = np.random.default_rng(7)
    hits = 0
    reps = 200
    for i in range(reps):
        x = rng.normal(0.5, 1.0, 80)
        ci = stats.bootstrap_ci(x, "mean", n=300, level=0.9, seed=i)
        hits += ci["low"] <= 0.5 <= ci["high"]
    assert 0.82 <= hits / reps <= 0.96  # nominal 0.90 (the percentile interval is slightly narrow at n = 80)


def test_block_bootstrap_is_wider_than_iid_on_ar1_data():
    x = ar1(1500, 0.7, seed=2)
    iid = stats.bootstrap_ci(x, "mean", n=1500, seed=0, method="iid")
    blk = stats.bootstrap_ci(x, "mean", n=1500, seed=0)  # stationary, Politis–White block
    assert blk["block"] > 5
    ratio = (blk["high"] - blk["low"]) / (iid["high"] - iid["low"])
    # true long-run / iid sd ratio: sqrt((1 + phi) / (1 - phi)) = 2.38; block bootstraps under-cover a bit
    assert 1.7 < ratio < 2.8
    for method in ("circular", "moving"):
        other = stats.bootstrap_ci(x, "mean", n=1500, seed=0, method=method)
        assert other["block"] == int(other["block"]) and other["block"] > 5
        assert (other["high"] - other["low"]) / (iid["high"] - iid["low"]) > 1.6


def test_seed_determinism():
    r = dated(np.random.default_rng(0).normal(0.0005, 0.01, 300))
    a = stats.metric_cis(r, n=300, seed=11)
    b = stats.metric_cis(r, n=300, seed=11)
    c = stats.metric_cis(r, n=300, seed=12)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["low"], c["low"])
    g1 = stats.bootstrap_ci(r, "ASR", n=200, seed=np.random.default_rng(5))
    g2 = stats.bootstrap_ci(r, "ASR", n=200, seed=np.random.default_rng(5))
    assert g1 == g2


def test_metric_cis_estimates_and_consistency_with_bootstrap_ci():
    r = dated(np.random.default_rng(4).normal(0.0008, 0.012, 400))
    table = stats.metric_cis(r, n=400, seed=1)
    assert list(table.index) == ["APY", "ASR", "CW", "MDD"]
    assert list(table.columns) == list(stats.CI_COLUMNS)
    ref = portfolio_metrics(r, "standard")
    for m in table.index:
        assert table.loc[m, "estimate"] == pytest.approx(ref[m])
        assert table.loc[m, "low"] < table.loc[m, "high"]
    for m in ("APY", "ASR", "CW"):
        assert table.loc[m, "low"] <= table.loc[m, "estimate"] <= table.loc[m, "high"]
    # same seed and block -> the same resampled days: one metric's interval equals bootstrap_ci's
    one = stats.bootstrap_ci(r, "ASR", block=table.loc["ASR", "block"], n=400, seed=1)
    assert one["low"] == pytest.approx(table.loc["ASR", "low"])
    assert one["high"] == pytest.approx(table.loc["ASR", "high"])
    paper = stats.metric_cis(r, "paper", metrics=("ASR",), n=50, seed=0)
    assert paper.loc["ASR", "estimate"] == pytest.approx(portfolio_metrics(r, "paper")["ASR"])
    basic = stats.bootstrap_ci(r, "APY", n=400, seed=1, interval="basic")
    pct = stats.bootstrap_ci(r, "APY", n=400, seed=1)
    assert basic["low"] == pytest.approx(2 * pct["estimate"] - pct["high"])


def test_rank_ic_ci_drops_nan_days_and_matches_ic_summary():
    ic = dated(np.random.default_rng(3).normal(0.03, 0.15, 500))
    ic.iloc[[10, 200]] = np.nan
    table = stats.rank_ic_ci(ic, n=500, seed=0)
    summary = ic_summary(ic)
    assert table.loc["RankIC", "estimate"] == pytest.approx(summary["RankIC"])
    assert table.loc["RankICIR", "estimate"] == pytest.approx(summary["RankICIR"])
    assert table.loc["RankIC", "n_days"] == 498
    half = 1.96 * ic.std() / np.sqrt(498)
    assert table.loc["RankIC", "high"] - table.loc["RankIC", "low"] == pytest.approx(2 * half, rel=0.2)
    official = stats.rank_ic_ci(ic, "official", n=50, seed=0)
    assert official.loc["RankICIR", "estimate"] == pytest.approx(ic_summary(ic, "official")["RankICIR"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        stats.bootstrap_ci([], "mean")
    with pytest.raises(ValueError, match="non-finite"):
        stats.bootstrap_ci(dated([0.1, np.nan, 0.2]), "mean")
    with pytest.raises(ValueError, match="empty"):
        stats.rank_ic_ci(dated([np.nan, np.nan]))
    with pytest.raises(ValueError, match="method"):
        stats.bootstrap_ci([1.0, 2.0, 3.0], "mean", method="wild")
    with pytest.raises(ValueError, match="metric"):
        stats.metric_cis(dated([0.01, 0.02, -0.01]), metrics=("Sortino",))
    with pytest.raises(ValueError, match="block"):
        stats.bootstrap_ci([1.0, 2.0, 3.0], "mean", block=0.5)
    with pytest.raises(ValueError, match="integer block"):
        stats.bootstrap_ci([1.0, 2.0, 3.0], "mean", block=1.5, method="circular")
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci([1.0, 2.0, 3.0], "mean", level=95)


def test_block_length_rules():
    assert stats.cube_root_block(1000) == pytest.approx(10.0)
    const = np.ones(50)  # Politis–White undefined -> n^(1/3)
    assert stats.optimal_block(const) == pytest.approx(50 ** (1 / 3))
    assert stats.optimal_block(const, "circular") == 4
    assert stats.optimal_block(ar1(800, 0.8, 0)) > stats.optimal_block(ar1(800, 0.2, 0))
    ci = stats.bootstrap_ci(np.arange(27.0), "mean", block="cuberoot", n=10)
    assert ci["block"] == pytest.approx(3.0)


# ------------------------------------------------------------------------------ HAC and paired tests


def test_hac_variance_lag0_and_hand_value():
    x = np.random.default_rng(0).normal(size=40)
    assert stats.hac_variance(x, lag=0) == pytest.approx(x.var(ddof=0) / x.size)
    # x = 1 2 3 4 6: mean 3.2, e = -2.2 -1.2 -0.2 0.8 2.8; gamma0 = 14.8/5 = 2.96,
    # gamma1 = (2.64 + 0.24 - 0.16 + 2.24)/5 = 0.992; lag 1 Bartlett weight 1/2:
    # LRV = 2.96 + 2 * 0.5 * 0.992 = 3.952; Var(mean) = 3.952 / 5
    assert stats.hac_variance([1, 2, 3, 4, 6], lag=1) == pytest.approx(3.952 / 5)
    # lag 2 adds gamma2 = (-0.2*-2.2 + 0.8*-1.2 + 2.8*-0.2)/5 = -0.216 with weight 1/3
    assert stats.hac_variance([1, 2, 3, 4, 6], lag=2) == pytest.approx(
        (2.96 + 2 * (2 / 3) * 0.992 + 2 * (1 / 3) * -0.216) / 5)
    assert stats.newey_west_lag(100) == 4 and stats.newey_west_lag(752) == 6
    # positive autocorrelation inflates the variance of the mean
    y = ar1(2000, 0.6, 1)
    assert stats.hac_variance(y) > 2 * stats.hac_variance(y, lag=0)


def test_paired_identical_series():
    a = dated(np.random.default_rng(0).normal(0.02, 0.1, 250))
    out = stats.paired_test(a, a.copy(), n=300)
    assert out["mean_diff"] == 0 and out["ci_low"] == 0 and out["ci_high"] == 0
    assert out["p_bootstrap"] == pytest.approx(1.0) and out["p_hac"] == pytest.approx(1.0)
    assert out["t_hac"] == 0 and out["n_days"] == 250 and out["lag"] == stats.newey_west_lag(250)
    m = stats.paired_metric_test(a, a.copy(), n=100)
    assert (m["diff"] == 0).all() and np.allclose(m["p_bootstrap"], 1.0)


def test_paired_planted_difference_is_detected():
    rng = np.random.default_rng(5)
    common = rng.normal(0, 0.1, 500)  # shared market component: pairing removes it
    a = dated(common + 0.02 + rng.normal(0, 0.05, 500))
    b = dated(common + rng.normal(0, 0.05, 500))
    out = stats.paired_test(a, b, n=1000, seed=1)
    assert out["mean_diff"] == pytest.approx((a - b).mean())
    assert out["ci_low"] > 0 and out["ci_low"] < 0.02 < out["ci_high"]
    assert out["p_bootstrap"] < 0.01 and out["p_hac"] < 1e-6 and out["t_hac"] > 4
    # no difference: not rejected (fixed seed)
    null = stats.paired_test(dated(common + rng.normal(0, 0.05, 500)), b, n=1000, seed=1)
    assert null["p_bootstrap"] > 0.05 and null["p_hac"] > 0.05


def test_paired_alignment_and_errors():
    a = dated(np.arange(10.0))
    b = dated(np.arange(10.0) + 1, start="2021-01-11")  # overlaps a's last 5 days
    with pytest.warns(UserWarning, match="common dates"):
        out = stats.paired_test(a, b, n=50)
    assert out["n_days"] == 5 and out["n_only_a"] == 5 and out["n_only_b"] == 5
    with pytest.raises(ValueError, match="misaligned"):
        stats.paired_test(a, b, align="exact")
    with pytest.raises(ValueError, match="no common date"):
        stats.paired_test(a, dated([1.0, 2.0], start="2030-01-01"))
    with pytest.raises(ValueError, match="empty"):
        stats.paired_test(a, pd.Series(dtype=float))
    with pytest.raises(TypeError, match="Series"):
        stats.paired_test(np.arange(5.0), np.arange(5.0))
    with pytest.raises(ValueError, match="duplicate"):
        stats.paired_test(pd.concat([a, a]), a)
    c = a.copy()
    c.iloc[3] = np.nan  # a NaN RankIC day is dropped from both
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = stats.paired_test(c, a + 1, n=50)
    assert out["n_days"] == 9 and out["n_nan"] == 1 and out["mean_diff"] == pytest.approx(-1)


# ------------------------------------------------------------------------------ cost curve


def synthetic_scores(T=160, N=12, seed=0):
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2022-01-03", periods=T)
    cols = [f"S{i}" for i in range(N)]
    labels = pd.DataFrame(rng.normal(0.0005, 0.015, (T, N)), idx, cols)
    scores = pd.DataFrame(labels.to_numpy() * 0.5 + rng.normal(0, 0.02, (T, N)), idx, cols)
    return scores, labels


def test_cost_curve_zero_cost_turnover_and_monotone():
    scores, labels = synthetic_scores()
    costs = (0, 1, 2, 5, 10, 20)
    curve = stats.cost_curve(scores, labels, costs_bps=costs)
    assert list(curve.index) == [float(c) for c in costs]
    assert list(curve.columns[:4]) == ["APY", "ASR", "CW", "MDD"]
    gross = topk_drop(scores, labels, k=5, d=3, cost=0.0)
    pd.testing.assert_series_equal(gross.returns, gross.gross, check_names=False)
    ref = portfolio_metrics(gross.gross, "standard")
    for m in ("APY", "ASR", "CW", "MDD"):
        assert curve.loc[0.0, m] == pytest.approx(ref[m])
    assert np.all(np.diff(curve["APY"]) < 0) and np.all(np.diff(curve["CW"]) < 0)
    assert np.all(np.diff(curve["ASR"]) < 0)
    assert curve["turnover"].nunique() == 1  # holdings do not depend on the cost
    for c in costs:  # net = (1 − c·turnover)(1 + gross) − 1, topk_drop's paper variant
        fee = c / 1e4 * gross.turnover
        net = (1 - fee) * (1 + gross.gross) - 1
        assert curve.loc[float(c), "CW"] == pytest.approx(np.prod(1 + net))
        assert curve.loc[float(c), "fee"] == pytest.approx(fee.mean())
        assert curve.loc[float(c), "APY"] == pytest.approx(portfolio_metrics(net)["APY"])
    official = stats.cost_curve(scores, labels, costs_bps=(0, 10), variant="official", convention="official")
    assert official.loc[10.0, "APY"] < official.loc[0.0, "APY"]
    with pytest.raises(ValueError, match="costs_bps"):
        stats.cost_curve(scores, labels, costs_bps=(-1,))


def test_cost_curve_from_run_directory(tmp_path):
    scores, labels = synthetic_scores(T=60, N=8, seed=3)
    run = tmp_path / "run"
    run.mkdir()
    scores.astype(np.float32).rename_axis("date").to_parquet(run / "scores.parquet")
    (run / "run.json").write_text(json.dumps({"spec": {"universe": "dj30"}}))
    from_run = stats.cost_curve_from_run(run, labels, costs_bps=(0, 5))
    direct = stats.cost_curve(scores.astype(np.float32).astype(float), labels, costs_bps=(0, 5))
    pd.testing.assert_frame_equal(from_run, direct)

    class FakePanel:  # anything with dates and label_frame(t)
        dates = labels.index

        @staticmethod
        def label_frame(t):
            return labels.iloc[t]

    pd.testing.assert_frame_equal(stats.cost_curve_from_run(run, panel=FakePanel(), costs_bps=(0, 5)), direct)
    with pytest.raises(FileNotFoundError):
        stats.cost_curve_from_run(tmp_path / "missing", labels)


def test_load_daily_pools_seeds_date_by_date(tmp_path):
    dates = pd.bdate_range("2021-04-01", periods=30, name="date")
    rng = np.random.default_rng(0)
    runs = []
    for k in range(3):
        run = tmp_path / f"seed{k}"
        run.mkdir()
        pd.DataFrame({"rank_ic": rng.normal(0, 0.1, 30), "return": rng.normal(0, 0.01, 30),
                      "turnover": rng.uniform(0, 1, 30), "benchmark": rng.normal(0, 0.01, 30)},
                     index=dates).to_csv(run / "daily.csv")
        (run / "run.json").write_text("{}")
        runs.append(run)
    one = stats.load_daily(runs[0])
    assert one.attrs["n_runs"] == 1
    pooled = stats.load_daily(runs)
    assert pooled.attrs["n_runs"] == 3
    each = [stats.load_daily(r) for r in runs]
    for col in ("rank_ic", "return"):
        np.testing.assert_allclose(pooled[col], (each[0][col] + each[1][col] + each[2][col]) / 3)
    ci = stats.run_cis(runs, n=200)
    assert ci.loc["RankIC", "estimate"] == pytest.approx(pooled["rank_ic"].mean())
    short = tmp_path / "short"
    short.mkdir()
    each[0].iloc[:-1].to_csv(short / "daily.csv")
    (short / "run.json").write_text("{}")
    with pytest.raises(ValueError, match="other dates"):
        stats.load_daily([runs[0], short])
    with pytest.raises(ValueError, match="no run"):
        stats.load_daily([])

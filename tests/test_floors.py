"""Trivial floors and the total-return market (storm_lib.floors, the portfolio task's pseudo-models)."""

import numpy as np
import pandas as pd
import pytest

from storm_lib import floors, metrics, portfolio
from storm_lib.run import RunSpec, load_table, run_grid


def _prices(n_days=150, n_stocks=6, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=n_days)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_days, n_stocks)), axis=0))
    wide = pd.DataFrame(close, index=dates, columns=[f"S{i}" for i in range(n_stocks)])
    wide.iloc[:10, 0] = np.nan   # a stock listed later
    long = wide.stack().rename("adj_close").reset_index()
    long.columns = ["date", "ticker", "adj_close"]
    return long


@pytest.mark.parametrize("name", list(floors.FLOORS))
def test_floors_do_not_look_ahead(name):
    """Perturbing every price after day t leaves every score up to day t unchanged."""
    prices = _prices()
    dates = pd.DatetimeIndex(sorted(prices["date"].unique()))
    base = floors.floor_scores(prices, name, dates, [f"S{i}" for i in range(6)])
    for t in (70, 100, 149):
        future = prices["date"] > dates[t]
        moved = prices.copy()
        moved.loc[future, "adj_close"] *= np.random.default_rng(t).uniform(0.5, 2.0, future.sum())
        again = floors.floor_scores(moved, name, dates, [f"S{i}" for i in range(6)])
        pd.testing.assert_frame_equal(base.iloc[:t + 1], again.iloc[:t + 1])
        if t < 149:
            assert not base.iloc[t + 1:].equals(again.iloc[t + 1:])   # the test can fail


def test_floor_values_follow_their_formulas():
    prices = _prices()
    wide = prices.pivot(index="date", columns="ticker", values="adj_close")
    s = floors.floor_signal(wide, "momentum_20d")
    assert s.iloc[80, 2] == pytest.approx(wide.iloc[80, 2] / wide.iloc[60, 2] - 1)
    assert floors.floor_signal(wide, "reversal_5d").iloc[80, 2] == pytest.approx(-(wide.iloc[80, 2] / wide.iloc[75, 2] - 1))
    r = wide.iloc[61:81, 3] / wide.iloc[60:80, 3].to_numpy() - 1
    assert floors.floor_signal(wide, "low_vol_20d").iloc[80, 3] == pytest.approx(-r.std(ddof=1))
    assert floors.floor_signal(wide, "momentum_60d").iloc[:60].isna().all().all()   # not enough history
    assert floors.floor_signal(wide, "reversal_1d").iloc[:11, 0].isna().all()      # listed on day 10
    valid = np.ones((3, 6), bool)
    valid[:, 1] = False
    out = floors.floor_scores(prices, "reversal_1d", wide.index[100:103], list(wide.columns), valid)
    assert out["S1"].isna().all() and out["S2"].notna().all()
    with pytest.raises(ValueError, match="unknown floor"):
        floors.floor_signal(wide, "momentum_7d")


def test_floors_and_the_total_return_market_run_as_deterministic_pseudo_models(tmp_path):
    """On the embedded sample: each floor is scored by the task's RankIC / TopK-Drop code, one run per
    seed gives the same numbers (no seed dependence), and ew_buy_hold is the equal-weight buy-and-hold
    of the split's labels (no scores, no RankIC)."""
    specs = [RunSpec("portfolio", "sample", m, "sample", "smoke", s) for m in ("momentum_20d", "ew_buy_hold")
             for s in (0, 1)]
    res = run_grid(specs, tmp_path, progress=False)
    assert (res["status"] == "done").all(), res["error"].tolist()
    runs = dict(zip([(s.model, s.seed) for s in specs], res["run_dir"]))
    m0 = pd.read_csv(f"{runs[('momentum_20d', 0)]}/metrics.csv")
    m1 = pd.read_csv(f"{runs[('momentum_20d', 1)]}/metrics.csv")
    pd.testing.assert_frame_equal(m0, m1)
    scores = load_table(runs[("momentum_20d", 0)], "scores")
    daily = load_table(runs[("momentum_20d", 0)], "daily")
    from storm_lib import data
    labels = data.next_day_returns(data.load_prices("sample")).reindex(index=scores.index, columns=scores.columns)
    ic = metrics.rank_ic(scores, labels.where(scores.notna()))
    np.testing.assert_allclose(daily["rank_ic"].to_numpy(), ic.reindex(daily.index).to_numpy(), atol=1e-5)
    ew = load_table(runs[("ew_buy_hold", 0)], "daily")
    assert ew["rank_ic"].isna().all()
    held = labels.reindex(index=ew.index).dropna(axis=1, how="any")
    np.testing.assert_allclose(ew["return"].to_numpy(), portfolio.equal_weight_buy_and_hold(held).to_numpy(),
                               atol=1e-6)


def test_pseudo_models_take_no_model_options(tmp_path):
    spec = RunSpec.make("portfolio", "sample", "reversal_1d", "sample", "smoke", 0, options=(("lr", 0.1),))
    res = run_grid([spec], tmp_path, progress=False)
    assert res.iloc[0]["status"] == "failed" and "fixed rule" in res.iloc[0]["error"]


import numpy as np
import pandas as pd
import pytest

from storm_lib.metrics import portfolio_metrics
from storm_lib.portfolio import BacktestResult, benchmark_returns, equal_weight_buy_and_hold, topk_drop

NAN = np.nan
DATES = pd.bdate_range("2024-01-02", periods=4)
COLS = list("ABCDEF")

# Hand example, k = 3, d = 1 (so k − d = 2 holdings must stay).
SCORES = pd.DataFrame(
    [
        [6, 5, 4, 3, 2, 1],  # day 0: top 3 = A B C
        [2, 1, 3, 6, 5, 4],  # day 1: top 3 = D E F, none held → keep C, A (best old), add D → A C D
        [1, 2, 6, 5, 4, 3],  # day 2: top 3 = C D E, keep C D (= k − d), add E → C D E
        [1, 2, 6, 5, 4, 3],  # day 3: unchanged → C D E
    ],
    DATES,
    COLS,
    dtype=float,
)
LABELS = pd.DataFrame(
    [
        [0.10, 0.00, -0.10, 0.05, 0.00, 0.00],
        [0.02, 0.50, 0.04, -0.03, 0.10, 0.10],
        [0.00, 0.00, 0.00, 0.03, 0.06, NAN],  # F is not held: its NaN label is fine
        [NAN, NAN, 0.01, 0.01, 0.01, NAN],
    ],
    DATES,
    COLS,
)
COST = 1e-3


def held(result):
    return [set(result.holdings.columns[row]) for row in result.holdings.to_numpy()]


def test_hand_example_paper():
    # Labels may cover more dates (the last one unknown); only the score dates are evaluated.
    labels = pd.concat([LABELS, pd.DataFrame(NAN, [DATES[-1] + pd.offsets.BDay()], COLS)])
    res = topk_drop(SCORES, labels, k=3, d=1, cost=COST)
    assert held(res) == [set("ABC"), set("ACD"), set("CDE"), set("CDE")]

    gross = [0.0, (0.02 + 0.04 - 0.03) / 3, (0.0 + 0.03 + 0.06) / 3, 0.01]
    # Day 0 from cash: turnover 1. Day 1: yesterday's weights drifted by (1 + y)/(1 + g0), g0 = 0:
    # A 1.1/3, B 1/3, C 0.9/3 → target A C D at 1/3 each.
    t1 = abs(1 / 3 - 1.1 / 3) + abs(0 - 1 / 3) + abs(1 / 3 - 0.9 / 3) + abs(1 / 3 - 0)
    # Day 2: drift by (1 + y)/1.01: A 1.02/3.03, C 1.04/3.03, D 0.97/3.03 → target C D E.
    t2 = 1.02 / 3.03 + (1.04 / 3.03 - 1 / 3) + (1 / 3 - 0.97 / 3.03) + 1 / 3
    # Day 3: same holdings, drift by (1 + y)/1.03: C 1/3.09, D 1/3, E 1.06/3.09.
    t3 = (1 / 3 - 1 / 3.09) + 0 + (1.06 / 3.09 - 1 / 3)
    turnover = [1.0, t1, t2, t3]
    assert t1 == pytest.approx(11 / 15)

    np.testing.assert_allclose(res.gross, gross, atol=1e-15)
    np.testing.assert_allclose(res.turnover, turnover, atol=1e-15)
    np.testing.assert_allclose(res.cost, [COST * x for x in turnover], atol=1e-15)
    net = [(1 - COST * x) * (1 + g) - 1 for x, g in zip(turnover, gross)]
    np.testing.assert_allclose(res.returns, net, atol=1e-15)
    assert res.returns.index.equals(DATES)
    np.testing.assert_allclose(res.wealth, np.cumprod([1 + x for x in net]))
    assert res.summary("paper") == portfolio_metrics(res.returns, "paper")


def test_hand_example_official():
    res = topk_drop(SCORES, LABELS, k=3, d=1, cost=COST, variant="official")
    assert held(res) == [set("ABC"), set("ACD"), set("CDE"), set("CDE")]
    gross = [0.0, 0.02 + 0.04 - 0.03, 0.0 + 0.03 + 0.06, 0.03]  # sums, not means
    ratio = [COST, COST * 2 * 1 / 3, COST * 2 * 1 / 3, 0.0]  # kept 2, 2, 3 of k = 3
    np.testing.assert_allclose(res.gross, gross, atol=1e-15)
    np.testing.assert_allclose(res.cost, ratio, atol=1e-15)
    np.testing.assert_allclose(res.turnover, [1, 2 / 3, 2 / 3, 0], atol=1e-15)
    np.testing.assert_allclose(res.returns, [g * (1 - c) for g, c in zip(gross, ratio)], atol=1e-15)


def _random(seed, T=60, N=12, nan_frac=0.0, ties=False):
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2022-01-03", periods=T)
    cols = [f"S{i:02d}" for i in range(N)]
    s = rng.normal(size=(T, N))
    if ties:
        s = np.round(s)
    s[rng.random((T, N)) < nan_frac] = NAN
    return pd.DataFrame(s, idx, cols), pd.DataFrame(rng.normal(0, 0.02, (T, N)), idx, cols)


def reference_holdings(scores, k, d):
    """Plain-Python TopK-Drop with sets, written from the rule in the docstring."""
    cols, held, out = list(scores.columns), set(), []
    for _, row in scores.iterrows():
        ranked = sorted((c for c in cols if np.isfinite(row[c])), key=lambda c: (-row[c], cols.index(c)))
        keep = held & set(ranked[:k])
        for c in ranked:
            if len(keep) >= k - d:
                break
            if c in held:
                keep.add(c)
        for c in ranked:
            if len(keep) >= k:
                break
            keep.add(c)
        out.append(keep)
        held = keep
    return out


@pytest.mark.parametrize(("seed", "k", "d", "nan_frac", "ties"), [
    (0, 5, 3, 0.0, False), (1, 5, 3, 0.2, True), (2, 4, 1, 0.1, False), (3, 3, 0, 0.0, True),
    (4, 3, 3, 0.3, False), (5, 5, 2, 0.6, True),
])
def test_matches_reference_rule(seed, k, d, nan_frac, ties):
    scores, labels = _random(seed, nan_frac=nan_frac, ties=ties)
    res = topk_drop(scores, labels, k=k, d=d)
    assert held(res) == reference_holdings(scores, k, d)


def test_at_most_d_replacements_and_k_held():
    scores, labels = _random(7, T=100, N=20)
    res = topk_drop(scores, labels, k=5, d=2)
    h = res.holdings.to_numpy()
    assert (h.sum(axis=1) == 5).all()
    new = (h[1:] & ~h[:-1]).sum(axis=1)
    assert new.max() <= 2 and (new == 2).any()  # the cap binds on random scores


def test_official_sum_is_k_times_equal_weight_gross():
    scores, labels = _random(8, nan_frac=0.1)
    paper = topk_drop(scores, labels, k=5, d=3)
    official = topk_drop(scores, labels, k=5, d=3, variant="official")
    pd.testing.assert_frame_equal(paper.holdings, official.holdings)
    np.testing.assert_allclose(official.gross, 5 * paper.gross, atol=1e-14)
    assert paper.cost.iloc[0] == official.cost.iloc[0] == 1e-4  # day 0: a full buy-in
    assert paper.turnover.iloc[0] == official.turnover.iloc[0] == 1.0


def test_nan_score_sells_even_beyond_d():
    scores = SCORES.copy()
    scores.loc[DATES[1]] = [NAN, 1, 3, 6, 5, 4]  # A held but unscored; d = 0 would keep everything
    res = topk_drop(scores.iloc[:2], LABELS, k=3, d=0, cost=0.0)
    assert held(res) == [set("ABC"), set("BCD")]  # A sold for D, the best non-held
    # Fewer than k eligible: hold all eligible, equal-weighted.
    scores.loc[DATES[2]] = [NAN, NAN, 1, NAN, 2, NAN]
    res = topk_drop(scores, LABELS, k=3, d=1, cost=0.0)
    assert held(res)[2] == set("CE")
    assert res.gross.iloc[2] == pytest.approx((0.0 + 0.06) / 2)


def test_ties_break_by_column_order():
    scores = pd.DataFrame([[1.0] * 6], DATES[:1], COLS)
    assert held(topk_drop(scores, LABELS, k=2, d=1)) == [{"A", "B"}]


def test_nan_label_of_held_stock_is_an_error():
    labels = LABELS.copy()
    labels.loc[DATES[2], "E"] = NAN
    with pytest.raises(ValueError, match=r"'E'.*2024-01-04"):
        topk_drop(SCORES, labels, k=3, d=1)


def test_validation_errors():
    bad = [
        (dict(k=0), "k must be"),
        (dict(k=3, d=4), "d must be"),
        (dict(k=3, d=-1), "d must be"),
        (dict(variant="qlib"), "unknown variant"),
        (dict(cost=-0.1), "cost"),
    ]
    for kwargs, msg in bad:
        with pytest.raises(ValueError, match=msg):
            topk_drop(SCORES, LABELS, **kwargs)
    with pytest.raises(ValueError, match="not in labels"):
        topk_drop(SCORES, LABELS.iloc[:-1])
    with pytest.raises(ValueError, match="not in labels"):
        topk_drop(SCORES, LABELS.drop(columns="C"))
    with pytest.raises(ValueError, match="increasing"):
        topk_drop(SCORES.iloc[::-1], LABELS)
    with pytest.raises(ValueError, match="NaN-only"):
        topk_drop(SCORES * NAN, LABELS)


def test_columns_aligned_by_name():
    shuffled = LABELS[COLS[::-1]]
    a = topk_drop(SCORES, LABELS, k=3, d=1)
    b = topk_drop(SCORES, shuffled, k=3, d=1)
    pd.testing.assert_series_equal(a.returns, b.returns)


def test_backtest_on_a_paper_sized_panel():
    scores, labels = _random(9, T=750, N=408)
    res = topk_drop(scores, labels)
    assert isinstance(res, BacktestResult) and res.holdings.shape == (750, 408)


def test_benchmark_returns_use_next_session():
    idx = pd.bdate_range("2024-01-01", periods=5)
    prices = pd.Series([100.0, 110.0, NAN, 99.0, 108.9], idx, name="^DJI")
    r = benchmark_returns(prices, idx[:2].append(idx[3:4]))
    # NaN price = not a session: the next session after day 1 is day 3.
    np.testing.assert_allclose(r, [0.10, 99 / 110 - 1, 0.10])
    assert r.name == "^DJI" and list(r.index) == [idx[0], idx[1], idx[3]]
    with pytest.raises(ValueError, match="session after"):
        benchmark_returns(prices, idx[3:])
    with pytest.raises(ValueError, match="no value"):
        benchmark_returns(prices, idx[2:3])
    with pytest.raises(ValueError, match="no value"):
        benchmark_returns(prices, [pd.Timestamp("2023-12-29")])


def test_equal_weight_buy_and_hold_is_average_normalised_path():
    rng = np.random.default_rng(10)
    idx = pd.bdate_range("2024-01-01", periods=31)
    prices = pd.DataFrame(np.exp(np.cumsum(rng.normal(0, 0.02, (31, 4)), axis=0)) * [10, 50, 3, 200], idx)
    labels = (prices.shift(-1) / prices - 1).iloc[:-1]
    r = equal_weight_buy_and_hold(labels)
    path = (prices / prices.iloc[0]).mean(axis=1)
    np.testing.assert_allclose((1 + r).cumprod(), path.iloc[1:], rtol=1e-12)
    assert r.iloc[0] == pytest.approx(labels.iloc[0].mean())
    assert r.iloc[5] != pytest.approx(labels.iloc[5].mean())  # drifted weights, not rebalanced
    with pytest.raises(ValueError, match="NaN"):
        equal_weight_buy_and_hold(LABELS)

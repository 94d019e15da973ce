"""Single-stock trading environment and its rule baselines (tiny synthetic price paths only)."""

import numpy as np
import pandas as pd
import pytest

from storm_lib.trading import (
    BUY,
    HOLD,
    SELL,
    ContinuousActionWrapper,
    TradingEnv,
    buy_and_hold,
    daily_returns,
    run_policy,
    signal_policy,
)


def path(values, start="2024-01-01"):
    return pd.Series(values, index=pd.bdate_range(start, periods=len(values)), dtype=float)


def walk(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return path(100 * np.exp(np.cumsum(rng.normal(0, 0.02, n))))


def causal_features(prices):
    """Row t: the last 3 log returns up to close t (0 before), known at close t."""
    lr = np.log(prices).diff().fillna(0.0).to_numpy()
    cols = [np.concatenate([np.zeros(k), lr[: len(lr) - k]]) for k in range(3)]
    return np.stack(cols, axis=1).astype(np.float32)


def fixed(actions):
    """A policy playing ``actions`` in order (then hold)."""
    it = iter(actions)
    return lambda obs: next(it, HOLD)


# --------------------------------------------------------------------------- exact accounting


def test_hand_computed_accounting():
    # cash 1000, cost 1 %, whole shares. Day: price, action → what happens.
    prices = path([100, 110, 99, 120, 125, 80])
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    env = TradingEnv(prices, obs, mode="eval", cash=1000, cost=0.01)
    o, info = env.reset()
    assert o.tolist() == [0, 1, 0] and info["value"] == 1000 and info["date"] == prices.index[0]

    # (action, executed, trade, cost, cash after, shares after, V_t, V_{t+1})
    expected = [
        # d0 P=100 buy: floor(1000/101) = 9 shares, 900 + 9 cost → cash 91; V1 = 91 + 9·110
        (BUY, BUY, 9, 9.0, 91.0, 9, 1000.0, 1081.0),
        # d1 P=110 buy: floor(91/111.1) = 0 → unaffordable, hold; V2 = 91 + 9·99
        (BUY, HOLD, 0, 0.0, 91.0, 9, 1081.0, 982.0),
        # d2 P=99 sell 9: 891 − 8.91 → cash 973.09; V3 = 973.09
        (SELL, SELL, -9, 8.91, 973.09, 0, 982.0, 973.09),
        # d3 P=120 buy: floor(973.09/121.2) = 8 shares, 960 + 9.6 cost → cash 3.49; V4 = 3.49 + 8·125
        (BUY, BUY, 8, 9.6, 3.49, 8, 973.09, 1003.49),
        # d4 P=125 sell 8: 1000 − 10 → cash 993.49; V5 = 993.49 (at P=80, flat)
        (SELL, SELL, -8, 10.0, 993.49, 0, 1003.49, 993.49),
    ]
    for k, (a, ex, trade, cost, cash, shares, v, v1) in enumerate(expected):
        o, r, term, trunc, info = env.step(a)
        assert r == pytest.approx(v1 / v - 1, rel=1e-12, abs=1e-15)
        assert info["trade"] == trade and info["shares"] == shares and info["executed"] == ex
        assert info["cost"] == pytest.approx(cost, abs=1e-9)
        assert info["cash"] == pytest.approx(cash, abs=1e-9)
        assert info["value"] == pytest.approx(v1, abs=1e-9)
        assert info["date"] == prices.index[k + 1] and info["price"] == prices.iloc[k + 1]
        assert info["trade_price"] == prices.iloc[k]
        assert o[:2].tolist() == obs[k + 1].tolist() and o[2] == (1.0 if shares else 0.0)
        assert term == (k == 4) and not trunc
    with pytest.raises(RuntimeError):
        env.step(HOLD)

    h = env.history()
    assert h["date"].tolist() == list(prices.index[:5])
    assert h["price"].tolist() == [100, 110, 99, 120, 125]
    assert h["executed"].tolist() == [e[1] for e in expected]
    np.testing.assert_allclose(h["cash"], [e[4] for e in expected], atol=1e-9)
    np.testing.assert_allclose(h["value"], [e[6] for e in expected], atol=1e-9)
    np.testing.assert_allclose(h["cost"], [e[3] for e in expected], atol=1e-9)
    eq = env.equity()
    assert list(eq.index) == list(prices.index)
    np.testing.assert_allclose(eq, [1000, 1081, 982, 973.09, 1003.49, 993.49], atol=1e-9)
    pd.testing.assert_series_equal(daily_returns(eq), h.set_index("date")["reward"],
                                   check_names=False, check_freq=False, check_index_type=False)


def test_sell_when_flat_and_fractional_buy():
    prices = path([50, 40, 60])
    obs = np.zeros((3, 1), np.float32)
    env = TradingEnv(prices, obs, mode="eval", cash=1000, cost=0.01, integer_shares=False)
    env.reset()
    _, r, *_, info = env.step(SELL)  # flat: a sell is a hold
    assert info["executed"] == HOLD and info["cost"] == 0 and r == 0 and info["cash"] == 1000
    _, r, *_, info = env.step(BUY)  # all cash: 1000/(40·1.01) shares, cash 0
    n = 1000 / (40 * 1.01)
    assert info["cash"] == 0 and info["shares"] == pytest.approx(n, rel=1e-12)
    assert info["cost"] == pytest.approx(0.01 * n * 40, rel=1e-12)
    assert r == pytest.approx(60 / (40 * 1.01) - 1, rel=1e-12)


def test_invalid_inputs():
    prices = path([1.0, 2.0, 3.0])
    obs = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="one row per price date"):
        TradingEnv(prices, obs[:2])
    with pytest.raises(ValueError, match="at least 2"):
        TradingEnv(prices, obs, start=prices.index[2])
    with pytest.raises(ValueError, match="not positive"):
        TradingEnv(path([1.0, np.nan, 3.0]), obs)
    bad = obs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        TradingEnv(prices, bad)
    TradingEnv(prices, bad, start=prices.index[1])  # rows outside the span are never read
    env = TradingEnv(prices, obs, mode="eval")
    env.reset()
    with pytest.raises(ValueError, match="action"):
        env.step(3)


# --------------------------------------------------------------------------- Buy&Hold


@pytest.mark.parametrize("integer_shares", [True, False])
def test_buy_and_hold_matches_formula_and_env(integer_shares):
    prices = walk(30, seed=1)
    start, end = prices.index[3], prices.index[25]
    cash, c = 1e5, 1e-4
    eq = buy_and_hold(prices, start, end, cash=cash, cost=c, integer_shares=integer_shares)
    span = prices.loc[start:end]
    assert list(eq.index) == list(span.index) and eq.iloc[0] == cash
    p0, pend = span.iloc[0], span.iloc[-1]
    ideal = cash / (1 + c) * pend / p0  # all cash after the cost, scaled by the price ratio
    if integer_shares:
        n = np.floor(cash / (p0 * (1 + c)))
        left = cash - n * p0 * (1 + c)
        assert 0 <= left < p0 * (1 + c)
        assert eq.iloc[-1] == pytest.approx(ideal + left * (1 - pend / (p0 * (1 + c))), rel=1e-12)
        assert abs(eq.iloc[-1] - ideal) <= abs(p0 * (1 + c) - pend)
    else:
        assert eq.iloc[-1] == pytest.approx(ideal, rel=1e-12)

    obs = causal_features(prices)
    env = TradingEnv(prices, obs, start, end, mode="eval", cash=cash, cost=c, integer_shares=integer_shares)
    h = run_policy(env, fixed([BUY]))
    assert h["executed"].tolist() == [BUY] + [HOLD] * (len(span) - 2)
    np.testing.assert_allclose(env.equity().to_numpy(), eq.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(h["reward"].to_numpy(), daily_returns(eq).to_numpy(), rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- no look-ahead


def test_no_future_data_in_observations():
    prices = walk(20, seed=2)
    obs = causal_features(prices)
    k = 9  # everything after day k is perturbed
    p2 = prices.copy()
    p2.iloc[k + 1 :] *= np.exp(np.random.default_rng(5).normal(0, 0.3, len(prices) - k - 1))
    o2 = obs.copy()
    o2[k + 1 :] = np.random.default_rng(6).normal(size=o2[k + 1 :].shape)

    def policy(o):  # depends on the observation, so identical observations ⇒ identical actions
        return BUY if o[0] > 0 else SELL

    seen = []
    for pr, ob in ((prices, obs), (p2, o2)):
        env = TradingEnv(pr, ob, mode="eval", cash=1e4, cost=1e-3)
        o, _ = env.reset()
        got = [o]
        for _ in range(k):
            o, *_ = env.step(policy(o))
            got.append(o)
        env.step(policy(o))  # the action at day k still executes at P_k
        seen.append((np.stack(got), env.history()))
    (a_obs, a_h), (b_obs, b_h) = seen
    np.testing.assert_array_equal(a_obs, b_obs)  # observations of days 0..k
    np.testing.assert_array_equal(a_obs[:, :3], obs[: k + 1])
    cols = ["date", "action", "executed", "price", "trade", "shares", "cash", "value", "cost"]
    pd.testing.assert_frame_equal(a_h[cols], b_h[cols])
    assert a_h["price"].tolist() == prices.iloc[: k + 1].tolist()
    assert a_h["reward"].iloc[-1] != b_h["reward"].iloc[-1] or a_h["shares"].iloc[-1] == 0


# --------------------------------------------------------------------------- gymnasium / SB3


def test_env_checker():
    from stable_baselines3.common.env_checker import check_env

    prices = walk(30)
    obs = causal_features(prices)
    check_env(TradingEnv(prices, obs, mode="train", episode_length=5))
    check_env(TradingEnv(prices, obs, mode="eval"))
    check_env(ContinuousActionWrapper(TradingEnv(prices, obs)))
    tokens = np.random.default_rng(0).normal(size=(30, 4, 3)).astype(np.float32)
    env = TradingEnv(prices, tokens, include_position=False)
    assert env.observation_space.shape == (4, 3)
    with pytest.warns(UserWarning, match="unconventional shape"):  # tokens need a custom policy net
        check_env(env)
    env = TradingEnv(prices, tokens)
    assert env.observation_space.shape == (13,) and env.row_shape == (4, 3)
    check_env(env)


def test_continuous_wrapper_thresholds():
    prices = walk(10)
    w = ContinuousActionWrapper(TradingEnv(prices, causal_features(prices), mode="eval"))
    assert [w.action(np.array([a])) for a in (-1, -0.34, -0.33, 0, 0.33, 0.34, 1, 5)] == [
        SELL, SELL, HOLD, HOLD, HOLD, BUY, BUY, BUY]
    h = run_policy(w, fixed([np.array([x], np.float32) for x in (0.9, -0.9, 0.0, 0.5)]))
    assert h["executed"].tolist()[:4] == [BUY, SELL, HOLD, BUY]


def test_train_start_is_seeded_and_eval_is_whole_span():
    prices = walk(40)
    obs = causal_features(prices)
    start, end = prices.index[5], prices.index[34]
    env = TradingEnv(prices, obs, start, end, mode="train", episode_length=4)
    first = [env.reset(seed=s)[1]["date"] for s in range(15)]
    assert first == [env.reset(seed=s)[1]["date"] for s in range(15)]
    assert len(set(first)) > 3 and all(start <= d <= prices.index[30] for d in first)
    for s in range(15):
        env.reset(seed=s)
        steps, term, trunc = 0, False, False
        while not (term or trunc):
            _, _, term, trunc, info = env.step(HOLD)
            steps += 1
        assert steps == 4 and trunc == (info["date"] < end) and term == (info["date"] == end)

    half = TradingEnv(prices, obs, start, end, mode="train", start_fraction=0.5)
    assert half.admissible_starts[-1] == prices.index[5 + 13]  # 29 admissible starts → first 14
    assert all(half.reset(seed=s)[1]["date"] <= prices.index[18] for s in range(20))

    ev = TradingEnv(prices, obs, start, end, mode="eval", episode_length=4)  # ignored in eval
    assert {ev.reset(seed=s)[1]["date"] for s in range(5)} == {start}
    h = run_policy(ev, lambda o: HOLD)
    assert h["date"].tolist() == list(prices.index[5:34])
    assert list(ev.equity().index) == list(prices.index[5:35]) and (ev.equity() == 1e5).all()


def test_ppo_seed_fixes_test_trajectory(one_torch_thread):
    from stable_baselines3 import PPO

    prices = walk(60, seed=3)
    obs = causal_features(prices)
    split = prices.index[39]

    def train_and_test():
        env = TradingEnv(prices, obs, end=split, mode="train", episode_length=16)
        model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=7, device="cpu",
                    policy_kwargs=dict(net_arch=[16]), verbose=0)
        model.learn(128)
        test = TradingEnv(prices, obs, start=split, mode="eval")
        return run_policy(test, model, deterministic=True)

    a, b = train_and_test(), train_and_test()
    assert len(a) == 20 and a["date"].iloc[0] == split
    pd.testing.assert_frame_equal(a, b)


def test_signal_policy():
    prices = path([10, 11, 12, 11, 10, 12])
    scores = pd.Series([0.5, np.nan, -0.1, 0.0, 0.2], index=prices.index[:5])
    pol = signal_policy(scores)
    assert pol.actions(prices.index).tolist() == [BUY, HOLD, SELL, HOLD, BUY, HOLD]
    env = TradingEnv(prices, np.zeros((6, 1), np.float32), mode="eval", cash=100, cost=0.0)
    h = run_policy(env, pol)
    assert h["executed"].tolist() == [BUY, HOLD, SELL, HOLD, BUY]
    assert h["trade"].tolist() == [10, 0, -10, 0, 12]  # 120 cash after the sell at 12

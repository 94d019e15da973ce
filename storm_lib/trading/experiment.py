"""The trading task of paper Table 3: every method on the five stocks, train / validation / test.

``run_method(method, setup, seed, profile)`` trains one method (a rule, a return model or an RL agent)
and trades each stock over the protocol's validation and test spans in :class:`TradingEnv`; it returns
the equity curves and the Table 3 metrics (APY CW CR ASR MDD AVO) in every convention of
:mod:`storm_lib.metrics`.

Methods (paper §5, reference/paper.md "Trading"):

=================  ===========================================================================
``buy_and_hold``   buy all at the first close of the span, hold (the same env, no training)
``lightgbm``       signal baselines: a return model fitted on the whole universe (train split,
``lstm``           selection on validation RankIC) with *raw* next-day returns as target, so its
``transformer``    forecast has a sign; trade each stock with :func:`~.baselines.signal_policy`
                   (buy all when ŷ_t > 0, sell all when ŷ_t < 0)
``dqn`` ``sac``    SB3 agents on the stock's feature window (16 days x F), checkpoint chosen on
``ppo``            the validation span (:mod:`~.agents`)
``storm``          PPO on STORM's factor tokens (CS tokens + the stock's TS tokens), the STORM model
``storm_wo_ts``    fitted on the universe first (portfolio-task fit), one PPO per stock; the
``storm_wo_cs``    ablations use their own model's tokens
=================  ===========================================================================

Stocks: AAPL, JPM, IBM, INTC, MSFT — the paper's tables, slides and code have these five; its abstract
says "six specific stocks" (reference/paper.md §12.1). Prices: ``adj_close`` as the official code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import data as data_mod
from ..metrics import CONVENTIONS, portfolio_metrics
from ..panel import Panel, Protocol, get_protocol
from ..profiles import get_profile
from .agents import ALGOS, budget, train_agent
from .baselines import signal_policy
from .env import ACTIONS, BUY, TradingEnv, run_policy
from .observations import factor_tokens, feature_windows

STOCKS = ("AAPL", "JPM", "IBM", "INTC", "MSFT")
#: method key -> row label in the paper's Table 3
METHODS = {
    "buy_and_hold": "Buy&Hold", "lightgbm": "LightGBM", "lstm": "LSTM", "transformer": "Transformer",
    "dqn": "DQN", "sac": "SAC", "ppo": "PPO",
    "storm": "STORM", "storm_wo_ts": "STORM-w/o-TS", "storm_wo_cs": "STORM-w/o-CS",
}
SIGNAL_MODELS = ("lightgbm", "lstm", "transformer")
STORM_METHODS = ("storm", "storm_wo_ts", "storm_wo_cs")   # also their storm_lib.models registry names
EVAL_SPLITS = ("valid", "test")
FEATURE_WINDOW = 16   # days of features in the raw-feature agents' observation


@dataclass
class TradingSetup:
    """Prices, panel and protocol shared by every method of one trading grid."""

    panel: Panel
    prices: pd.DataFrame          # adj_close, date x ticker, on panel.dates
    protocol: Protocol
    stocks: tuple[str, ...] = STOCKS
    universe: str = "dj30"
    cost: float = 1e-4
    cash: float = 1e5

    @classmethod
    def from_universe(cls, universe: str = "dj30", profile="cpu", protocol="clean", stocks=STOCKS,
                      data_dir=None, prices: pd.DataFrame | None = None, panel: Panel | None = None,
                      verbose: bool = False) -> "TradingSetup":
        """Load ``universe`` (unless ``prices`` / ``panel`` are given) and build its panel at the profile's window."""
        prof = get_profile(profile)
        if prices is None:
            prices = data_mod.load_prices(universe, data_dir=data_dir)
        if panel is None:
            panel = Panel.from_prices(prices, window=prof.window, verbose=verbose)
        wide = data_mod.to_wide(prices, "adj_close").reindex(index=panel.dates)
        missing = [s for s in stocks if s not in wide.columns or s not in panel.tickers]
        if missing:
            raise ValueError(f"stocks not in universe {universe!r}: {missing}")
        return cls(panel, wide[list(stocks)], get_protocol(protocol), tuple(stocks), universe)

    def span(self, split: str) -> tuple[pd.Timestamp, pd.Timestamp]:
        return getattr(self.protocol, split)

    def env(self, stock: str, observations: np.ndarray, split: str, **kw) -> TradingEnv:
        """A TradingEnv over ``split``: train mode (random one-year episodes) for ``train``, else eval."""
        start, end = self.span(split)
        if split == "train":
            kw = {"mode": "train", "episode_length": 252, **kw}
        else:
            kw = {"mode": "eval", **kw}
        return TradingEnv(self.prices[stock], observations, start, end, cash=self.cash, cost=self.cost, **kw)

    def days(self, first: str = "train", last: str = "test") -> np.ndarray:
        """Panel indices of every date from the start of split ``first`` to the end of split ``last``."""
        lo, hi = self.span(first)[0], self.span(last)[1]
        d = self.panel.dates
        t = np.flatnonzero((d >= lo) & (d <= hi))
        return t[t >= self.panel.window - 1]


@dataclass
class TradingResult:
    """Equity curves, per-step actions and Table 3 metrics of one method on the setup's stocks."""

    method: str
    equity: pd.DataFrame          # stock, split, date, equity, action, executed, position
    metrics: pd.DataFrame         # stock, split, convention, metric, value
    info: dict = field(default_factory=dict)

    def table(self, split: str = "test", convention: str = "standard") -> pd.DataFrame:
        m = self.metrics[(self.metrics["split"] == split) & (self.metrics["convention"] == convention)]
        return m.pivot(index="stock", columns="metric", values="value")


def episode_frame(env: TradingEnv, history: pd.DataFrame) -> pd.DataFrame:
    """Equity by date with the action taken that day (NaN on the last date, which has no decision)."""
    eq = env.equity()
    h = history.set_index("date")
    out = pd.DataFrame({"date": eq.index, "equity": eq.to_numpy()})
    out["action"] = h["action"].reindex(eq.index).to_numpy()
    out["executed"] = h["executed"].reindex(eq.index).to_numpy()
    out["position"] = (h["shares"].reindex(eq.index) > 0).astype(float).to_numpy()
    out.loc[out.index[-1], "position"] = out["position"].iloc[-2] if len(out) > 1 else 0.0
    return out


ACTIVITY_COLUMNS = ["stock", "days", "long share", "trades", "holds", "never long", "sell", "hold", "buy"]


def activity(equity: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Does a run trade? Per stock of a run's ``equity`` table (``position`` 1 = long, 0 = flat) on
    ``split``: days, share of days long, trades (position changes, the first buy included), ``holds``
    (long on every day after at most one trade: Buy&Hold's book), ``never long`` (flat throughout) and
    the action distribution: the share of decision days on which the policy chose sell, hold and buy
    (whether or not the env executed it: a buy while long is a hold)."""
    rows = []
    for stock, g in equity[equity["split"] == split].groupby("stock", sort=False):
        g = g.sort_values("date")
        pos = g["position"].to_numpy()
        trades = int(np.count_nonzero(np.diff(np.concatenate([[0.0], pos]))))
        act = g["action"].dropna().to_numpy() if "action" in g else np.array([])
        share = {name: float(np.mean(act == a)) if len(act) else np.nan for a, name in ACTIONS.items()}
        rows.append({"stock": stock, "days": len(pos), "long share": float(np.mean(pos > 0)) if len(pos) else np.nan,
                     "trades": trades, "holds": bool(trades <= 1 and len(pos) and pos[-1] > 0),
                     "never long": bool(trades == 0), **share})
    return pd.DataFrame(rows, columns=ACTIVITY_COLUMNS)


def history_metrics(history: pd.DataFrame) -> list[dict]:
    """Table 3 metrics of an env history (its reward column is the daily return) in every convention."""
    r = pd.Series(history["reward"].to_numpy(), index=history["date"])
    rows = []
    for conv in CONVENTIONS:
        for k, v in portfolio_metrics(r, conv).items():
            rows.append({"convention": conv, "metric": k, "value": float(v)})
    return rows


def _evaluate(setup: TradingSetup, stock: str, obs: np.ndarray, policy_run) -> tuple[list, list]:
    """Trade the validation and test spans with ``policy_run(env) -> history``."""
    curves, rows = [], []
    for split in EVAL_SPLITS:
        env = setup.env(stock, obs, split)
        hist = policy_run(env)
        curves.append(episode_frame(env, hist).assign(stock=stock, split=split))
        rows += [{"stock": stock, "split": split, **r} for r in history_metrics(hist)]
    return curves, rows


def _fit_return_model(name: str, setup: TradingSetup, seed: int, profile, progress: bool, fit=None, **kw):
    """(fitted return model, fit seconds, fit facts). With ``fit`` (a callable ``fit(name, options, setup,
    profile, seed) -> (model, info)``, e.g. the run's shared fit store, ``storm_lib.tasks.trading``) the fit
    goes through it (shared with other runs that make the same fit, e.g. the portfolio task's clean STORM);
    without, it is fitted here."""
    if fit is not None:
        model, info = fit(name, kw, setup, profile, seed)
        return model, float(info["fit_seconds"]), info
    from ..models import make_model

    model = make_model(name, profile=profile, seed=seed, progress=progress, **kw)
    t0 = time.perf_counter()
    model.fit(setup.panel, setup.protocol)
    return model, time.perf_counter() - t0, {}


def run_method(method: str, setup: TradingSetup, seed: int = 0, profile="cpu", progress: bool = True,
               agent_overrides: dict | None = None, model_options: dict | None = None,
               fit=None) -> TradingResult:
    """Train ``method`` (a key of :data:`METHODS`) and trade every stock of ``setup``; see the module doc.

    ``agent_overrides`` replace the RL budget of the profile (``timesteps``, ``eval_every``, SB3 keywords);
    ``model_options`` go to the return model (signal baselines, STORM) as in ``make_model``. ``fit``: how
    return models are fitted (:func:`_fit_return_model`; the runner's task passes its shared fit store).
    """
    if method not in METHODS:
        raise ValueError(f"unknown trading method {method!r}; use one of {list(METHODS)}")
    prof = get_profile(profile)
    agent_overrides, model_options = dict(agent_overrides or {}), dict(model_options or {})
    curves, rows, info = [], [], {"method": method, "profile": prof.name, "seed": seed,
                                  "train_seconds": {}, "fit_seconds": 0.0}
    stocks = tqdm(setup.stocks, desc=METHODS[method], disable=not progress, leave=False)
    dummy = np.zeros((len(setup.panel.dates), 1), np.float32)

    def trade_each(policy_for):
        """policy_for(stock) -> (observations, trade(env), training seconds); evaluates every stock."""
        for s in stocks:
            obs, trade, seconds = policy_for(s)
            c, r = _evaluate(setup, s, obs, trade)
            curves.extend(c)
            rows.extend(r)
            info["train_seconds"][s] = seconds

    if method == "buy_and_hold":
        trade_each(lambda s: (dummy, lambda env: run_policy(env, lambda obs: BUY), 0.0))

    elif method in SIGNAL_MODELS:
        model, secs, fit_info = _fit_return_model(method, setup, seed, prof, progress, fit,
                                                   **{"label_norm": "raw", **model_options})
        info["fit_seconds"] = secs
        if "fit_reused" in fit_info:
            info["fit_reused"] = fit_info["fit_reused"]
        scores = {split: model.predict(setup.panel, split=split, protocol=setup.protocol) for split in EVAL_SPLITS}
        allscores = pd.concat(scores.values()).sort_index()
        allscores = allscores[~allscores.index.duplicated()]    # paper protocol: valid = test
        trade_each(lambda s: (dummy, lambda env, pol=signal_policy(allscores[s]): run_policy(env, pol), 0.0))
        info["buy_share_test"] = {s: float((scores["test"][s] > 0).mean()) for s in setup.stocks}

    else:
        days = setup.days()
        if method in ALGOS:
            algo, token_shape = method, None
            obs_by_stock = {s: feature_windows(setup.panel, s, FEATURE_WINDOW) for s in setup.stocks}
        else:
            algo = "ppo"
            model, secs, fit_info = _fit_return_model(method, setup, seed, prof, progress, fit,
                                                       **model_options)
            info["fit_seconds"] = secs
            if "fit_reused" in fit_info:
                info["fit_reused"] = fit_info["fit_reused"]
            obs_by_stock = factor_tokens(model, setup.panel, list(setup.stocks), days)
            token_shape = next(iter(obs_by_stock.values())).shape[1:]
        info.update(algo=algo, best_step={}, timesteps=None, logs={})

        def train(s):
            obs = obs_by_stock.pop(s)   # one stock's observations in memory at a time
            agent = train_agent(
                algo, lambda i: setup.env(s, obs, "train"), setup.env(s, obs, "valid"),
                seed=seed, profile=prof.name, token_shape=token_shape, progress=progress, **agent_overrides,
            )
            info["best_step"][s] = agent.best_step
            info["timesteps"] = agent.timesteps
            info["logs"][s] = agent.log.to_dict("records")
            return obs, agent.trade, agent.seconds

        trade_each(train)

    equity = pd.concat(curves, ignore_index=True)[
        ["stock", "split", "date", "equity", "action", "executed", "position"]]
    metrics = pd.DataFrame(rows)[["stock", "split", "convention", "metric", "value"]]
    return TradingResult(method, equity, metrics, info)


# --------------------------------------------------------------------------- experiment runner task

#: fixed settings of the trading task, hashed into each run's identity by :mod:`storm_lib.run`
CONFIG = {"stocks": list(STOCKS), "cost": 1e-4, "cash": 1e5, "price": "adj_close", "feature_window": FEATURE_WINDOW,
          "train_episode_length": 252, "select": "asr", "signal_label": "raw"}
AGENT_PREFIX = "agent_"   # run options starting with this go to the RL budget, e.g. agent_timesteps=2048


#: validation checkpoints per agent run (``eval_every`` = steps / this), as the ``cpu`` profile's budgets
AGENT_EVALS = 10


def chosen_agent_budgets() -> dict:
    """The environment steps chosen per profile by the agents' budget study (the ``agents`` entry of
    ``storm_lib/budgets.json``, written by ``python -m storm_lib.budget agents-apply``): profile ->
    trading method -> steps. Kept out of :mod:`storm_lib.profiles`, whose source is part of every
    return-model fit's key (:data:`storm_lib.tasks.fits.TRAINING_SOURCES`): an agent's budget never
    changes a fit."""
    import json
    from importlib import resources

    text = resources.files("storm_lib").joinpath("budgets.json").read_text()
    return {p: {m: int(b) for m, b in d.items()} for p, d in json.loads(text).get("agents", {}).items()}


#: profile name -> trading method -> environment steps, as chosen (:func:`chosen_agent_budgets`)
CHOSEN_AGENT_BUDGETS: dict[str, dict[str, int]] = chosen_agent_budgets()


def agent_budget(method: str, profile) -> dict | None:
    """The RL budget of trading ``method`` at ``profile``: its algorithm's :func:`~.agents.budget` (the
    STORM methods are PPO), with ``algo``; where the agents' budget study chose other environment steps
    for the method at this profile (:data:`CHOSEN_AGENT_BUDGETS`), those steps and ``eval_every`` =
    steps / :data:`AGENT_EVALS`. None for a method without an RL agent."""
    algo = method if method in ALGOS else ("ppo" if method in STORM_METHODS else None)
    if algo is None:
        return None
    name = get_profile(profile).name
    out = {"algo": algo, **budget(algo, name)}
    steps = CHOSEN_AGENT_BUDGETS.get(name, {}).get(method)
    if steps is not None and int(steps) != out["timesteps"]:
        out.update(timesteps=int(steps), eval_every=int(steps) // AGENT_EVALS)
    return out


def task_config(spec) -> dict:
    """:data:`CONFIG` plus, for an RL method, its agent budget at the run's profile (:func:`agent_budget`; so
    changing one method's budget changes only that method's runs)."""
    return {**CONFIG, "agent": agent_budget(spec.model, spec.profile)}

"""The runner's task ``"trading"`` (paper Table 3): :func:`storm_lib.trading.experiment.run_method` over
the five stocks, its metrics and tables in the runner's :class:`~storm_lib.tasks.RunOutput` form.

It lives here, not in :mod:`storm_lib.trading`, so that the trading package does not import the task
registry (which imports it): no import circle.
"""

from __future__ import annotations

import pandas as pd

from ..profiles import get_profile
from ..trading.experiment import AGENT_PREFIX, METHODS, SIGNAL_MODELS, STOCKS, STORM_METHODS, TradingSetup, run_method
from ..trading.experiment import agent_budget, task_config
from .base import RunOutput
from .fits import fit_model
from .portfolio import model_kwargs


def _fitter(ctx, command: str):
    """The return-model fit of a trading run through the shared fit store (:func:`storm_lib.tasks.fits.fit_model`)."""
    def fit(name, options, setup, profile, seed):
        return fit_model(ctx, setup.universe, name, options, setup.panel, setup.protocol, profile.name, seed, command)
    return fit


def run_task(spec, ctx):
    """``storm_lib.run`` task ``"trading"`` (paper Table 3): one method on the five stocks.

    ``spec.model`` is a key of :data:`METHODS`; ``spec.options`` starting with ``agent_`` override the RL
    budget (``agent_timesteps=2048``; without, the profile's: :func:`~storm_lib.trading.experiment.agent_budget`),
    the others go to the return model (signal baselines, STORM).
    Metrics: ``stock, split, convention, metric, value`` (+ ``train_seconds`` / ``fit_seconds`` rows with
    split ``train``); tables ``equity`` (per stock and split: date, equity, action, executed, position)
    and ``agent_log`` (validation evaluations of the RL agents).
    """
    prof = get_profile(spec.profile)
    opts = dict(spec.options)
    agent = {k[len(AGENT_PREFIX):]: v for k, v in opts.items() if k.startswith(AGENT_PREFIX)}
    steps = agent_budget(spec.model, prof)   # the profile's (chosen) budget; the run's options win
    if steps is not None:
        agent = {"timesteps": steps["timesteps"], "eval_every": steps["eval_every"], **agent}
    model_opts = {k: v for k, v in opts.items() if not k.startswith(AGENT_PREFIX)}
    if model_opts and spec.model not in SIGNAL_MODELS + STORM_METHODS:
        raise ValueError(f"trading method {spec.model!r} takes no model options, got {sorted(model_opts)}")
    if spec.model in STORM_METHODS:
        model_opts = model_kwargs(spec.model, model_opts)
    panel = ctx.panel(spec.universe, window=prof.window)
    setup = TradingSetup.from_universe(spec.universe, prof, spec.protocol, stocks=STOCKS,
                                       prices=ctx.prices(spec.universe), panel=panel)
    res = run_method(spec.model, setup, seed=spec.seed, profile=prof, progress=ctx.progress,
                     agent_overrides=agent, model_options=model_opts, fit=_fitter(ctx, spec.command()))
    timing = [{"stock": s, "split": "train", "convention": "-", "metric": "train_seconds", "value": v}
              for s, v in res.info["train_seconds"].items()]
    timing += [{"stock": s, "split": "train", "convention": "-", "metric": "fit_seconds",
                "value": res.info["fit_seconds"]} for s in setup.stocks]
    metrics = pd.concat([res.metrics, pd.DataFrame(timing)], ignore_index=True)
    tables = {"equity.parquet": res.equity}
    logs = res.info.pop("logs", None)
    if logs:
        tables["agent_log"] = pd.concat([pd.DataFrame(v).assign(stock=s) for s, v in logs.items()],
                                        ignore_index=True)
    info = {k: v for k, v in res.info.items() if k not in ("method", "seed")}
    info["paper_row"] = METHODS[spec.model]
    return RunOutput(metrics=metrics, tables=tables, info=info)


run_task.config = task_config
run_task.models = tuple(METHODS)

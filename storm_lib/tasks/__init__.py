"""Experiment tasks: what one run of :mod:`storm_lib.run` computes.

A task is a callable ``run(spec, ctx) -> RunOutput``: ``spec`` is a :class:`storm_lib.run.RunSpec`
(task, universe, model, protocol, profile, seed, options), ``ctx`` a :class:`RunContext` (data
directory, the shared :class:`RunCache` of prices and panels, progress flag, a scratch directory for
checkpoints). The runner writes ``output.metrics`` to ``metrics.csv``, every table of
``output.tables`` to its own file and ``output.info`` into ``run.json``.

A task may carry two attributes: ``config`` (a JSON-able dict of its fixed settings, e.g. TopK-Drop's
k, d and cost), which the runner hashes into the run's identity, so changing it gives new run
directories; and ``models`` (the model names it accepts; default: the return-model registry plus
``"market"``).

The shared types live in :mod:`storm_lib.tasks.base` (a task module imports them from there);
this module re-exports them and holds the registry.
"""

from __future__ import annotations

from typing import Callable

from .base import RunCache, RunContext, RunOutput

# --- the registry: one line per task -----------------------------------------------------------
from .portfolio import run as _portfolio
from .trading import run_task as _trading

TASKS: dict[str, Callable[..., RunOutput]] = {
    "portfolio": _portfolio,  # paper Tables 2 and 4: RankIC and TopK-Drop portfolios
    "trading": _trading,      # paper Table 3: single-stock trading on five stocks
}

__all__ = ["RunCache", "RunContext", "RunOutput", "TASKS"]

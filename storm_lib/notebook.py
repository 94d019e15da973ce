"""Glue for the replication notebooks (``notebooks/*.ipynb``): parameters, data check, runs, tables, footer.

Every notebook is a short script over this module::

    ctx = nb.setup("table2_portfolio", universes=universes, models=models, seeds=seeds, ...)  # stops without data
    plan = ctx.ensure(ctx.specs("portfolio"))     # cached runs are read, missing ones run (run_missing=True)
    m = ctx.metrics(plan)                         # every metrics.csv row + spec columns + paper row label
    nb.comparison(m, "portfolio", "dj30", convention="paper")   # ours vs the paper (storm_lib.report)
    nb.footer(ctx)                                # versions, hardware, wall time, data hashes, runs, command

:func:`setup` normalises the papermill parameters (a list or a comma string for ``universes`` /
``models`` / ``stocks``, an int, a list or a comma string for ``seeds``), checks them and calls
:func:`require_data`, which stops the notebook with a message naming every way to get data when a
universe cannot be loaded (never falling back to other data). :func:`ensure_runs` prints its plan
(cached / to run / missing) and runs what is missing through :func:`storm_lib.run.run_grid`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# tqdm.auto (imported by the runner) warns in a kernel without ipywidgets; the notebooks use no bars
warnings.filterwarnings("ignore", message="IProgress not found")

from . import data as data_mod  # noqa: E402
from . import report  # noqa: E402
from .metrics import CONVENTIONS  # noqa: E402
from .panel import PROTOCOLS  # noqa: E402
from .profiles import PROFILES, get_profile  # noqa: E402
from .run import (SPEC_COLUMNS, RunSpec, grid, is_finished, known_models, list_runs,  # noqa: E402
                  load_table, results_root, run_dir, run_grid)
from .tasks import RunCache, RunContext  # noqa: E402

#: the rows of paper Tables 1/2 (portfolio) in the paper's order, as registry names
PORTFOLIO_MODELS = ("market", "lightgbm", "lstm", "transformer", "cafactor", "factorvae", "hirevae",
                    "storm", "storm_wo_ts", "storm_wo_cs")
#: the rows of Table 4 (RankIC): no Market Index (it has no scores)
RANKIC_MODELS = PORTFOLIO_MODELS[1:]
STORM_MODELS = ("storm", "storm_wo_ts", "storm_wo_cs")
TRADING_STOCKS = ("AAPL", "JPM", "IBM", "INTC", "MSFT")
PORTFOLIO_METRICS = ("APY", "CW", "CR", "ASR", "MDD", "AVO")
IC_METRICS = ("RankIC", "RankICIR")
CODEBOOK_SIZES = (128, 256, 512, 1024, 2048)

#: Figure 3b of the paper: RankIC / RankICIR of STORM against the codebook size K. Read by eye from the
#: figure (about ±0.001 RankIC, ±0.005 RankICIR); dataset not stated. Source: reference/paper.md §9
#: (shared/reference/paper.md). The K = 512 bar matches neither Table 4 STORM row exactly.
PAPER_FIG3B = pd.DataFrame(
    {"RankIC": [0.051, 0.053, 0.063, 0.056, 0.050], "RankICIR": [0.537, 0.542, 0.621, 0.573, 0.551]},
    index=pd.Index(CODEBOOK_SIZES, name="codebook_size"),
)

GET_DATA = (
    "Ways to get data (nothing else is tried; the notebook never falls back to other data):\n"
    "  1. point $STORM_DATA_DIR at a directory holding dj30.parquet, sp500.parquet and indices.parquet\n"
    "     (e.g. export STORM_DATA_DIR=../shared/data), or pass it as the notebook parameter:\n"
    "     papermill ... -p data_dir /path/to/data\n"
    "  2. download into the local cache: storm download dj30 sp500 indices\n"
    "     (needs pip install -e '.[download]' and access to Yahoo Finance)\n"
    "  3. use the embedded offline sample (20 S&P 500 stocks, close only, no paper numbers to compare):\n"
    "     papermill ... -p universes sample -p protocol sample"
)


class NotebookStop(RuntimeError):
    """Stops a notebook with a plain message: IPython shows the message instead of a traceback."""

    def _render_traceback_(self):  # IPython hook: the lines shown for this exception
        return [f"{type(self).__name__}:", *str(self).splitlines()]


class MissingData(NotebookStop):
    """A universe's prices or market index cannot be found."""


class RunsFailed(NotebookStop):
    """Some runs of the notebook's plan failed."""


# --------------------------------------------------------------------------- parameters


def as_list(value, upper: bool = False) -> list[str]:
    """A list of strings from a list/tuple, a comma (or space) separated string, or None (-> [])."""
    if value is None:
        return []
    if isinstance(value, str):
        items = [v for v in value.replace(",", " ").split() if v]
    elif isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value]
    else:
        items = [str(value)]
    items = [v.upper() if upper else v for v in items if v]
    return list(dict.fromkeys(items))


def as_ints(value) -> list[int]:
    """Seeds or sizes: an int, a list, a comma string ``"0,1,2"`` or a range ``"0-9"`` -> list of ints."""
    if value is None:
        return []
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return [int(value)]
    out: list[int] = []
    for item in as_list(value):
        lo, sep, hi = item.partition("-")
        try:
            out += list(range(int(lo), int(hi) + 1)) if sep and lo else [int(item)]
        except ValueError:
            raise NotebookStop(f"expected integers (e.g. 0 or 0,1,2 or 0-9), got {value!r}") from None
    return list(dict.fromkeys(out))


def is_all(value) -> bool:
    """Whether a ``seeds`` parameter is ``"all"`` (every seed already in the results directory)."""
    return isinstance(value, str) and value.strip().lower() == "all"


def as_bool(value) -> bool:
    if isinstance(value, str):
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if value.strip().lower() in ("0", "false", "no", "off", "none", ""):
            return False
        raise NotebookStop(f"expected True or False, got {value!r}")
    return bool(value)


def _none(value):
    return None if value is None or (isinstance(value, str) and value.strip() in ("", "None")) else value


def _check_choice(what: str, value, known) -> None:
    if value not in known:
        raise NotebookStop(f"unknown {what} {value!r}; use one of: {', '.join(map(str, known))}")


# --------------------------------------------------------------------------- data


def require_data(universes, data_dir=None, cache: RunCache | None = None) -> dict[str, str]:
    """Load every universe's prices and market index once (kept in ``cache``); raise :class:`MissingData`
    naming the ways to get data when one cannot be loaded. Returns universe -> a short description."""
    ctx = RunContext(data_dir=_none(data_dir), cache=cache if cache is not None else RunCache(), progress=False)
    found = {}
    for u in as_list(universes):
        if u not in data_mod.UNIVERSES and u != data_mod.SAMPLE:
            raise NotebookStop(f"unknown universe {u!r}; use dj30, sp500 or sample")
        try:
            prices = ctx.prices(u)
            index = ctx.market_index(u)
        except (data_mod.DataError, FileNotFoundError) as exc:
            reason = str(exc).splitlines()[0].split(" Ways to get data")[0]
            reason = "" if reason.startswith("No price data found") else f"\n  {reason}"
            where = (f"data_dir={data_dir!r}" if _none(data_dir) is not None else
                     f"$STORM_DATA_DIR={os.environ['STORM_DATA_DIR']!r}" if os.environ.get("STORM_DATA_DIR")
                     else "$STORM_DATA_DIR is not set and the download cache has no copy")
            raise MissingData(f"No data for universe {u!r} ({where}).{reason}\n{GET_DATA}") from None
        except ImportError as exc:  # the sample needs skfolio
            raise MissingData(f"The embedded sample cannot be loaded ({exc}); install storm-lib's dependencies."
                              ) from None
        first, last = prices["date"].iloc[[0, -1]]
        found[u] = (f"{prices['ticker'].nunique()} stocks, {first:%Y-%m-%d}..{last:%Y-%m-%d}, "
                    f"index {index.name}")
    return found


def data_hashes(universes, data_dir=None, cache: RunCache | None = None) -> pd.DataFrame:
    """sha256 of each universe's prices (:func:`storm_lib.features.data_hash`) and market index series."""
    ctx = RunContext(data_dir=_none(data_dir), cache=cache if cache is not None else RunCache(), progress=False)
    rows = [{"universe": u, "prices": ctx.prices_hash(u), "index": f"{ctx.market_index(u).name} "
             f"{ctx.index_hash(u)}"} for u in as_list(universes)]
    return pd.DataFrame(rows, columns=["universe", "prices", "index"])


# --------------------------------------------------------------------------- runs


def _spec_text(spec: RunSpec) -> str:
    opts = f" {spec.options_str}" if spec.options else ""
    return f"{spec.task} {spec.universe} {spec.model}{opts} ({spec.protocol}, {spec.profile}, seed {spec.seed})"


def ensure_runs(specs, run_missing: bool = True, results_dir=None, data_dir=None,
                cache: RunCache | None = None, echo=print) -> pd.DataFrame:
    """Make sure every spec has a finished run; print the plan first.

    Finished runs are read as they are ("cached"). Missing ones are executed one by one through
    :func:`storm_lib.run.run_grid` when ``run_missing`` (status "done", or "failed" / "busy"), else
    listed with the command that runs them (status "missing"). Raises :class:`RunsFailed` after the
    whole plan when a run failed. Returns one row per spec: spec columns, ``status``, ``run_dir``,
    ``finished``, ``spec`` (the :class:`RunSpec`).
    """
    specs = list(dict.fromkeys(specs))
    cache = cache if cache is not None else RunCache()
    ctx = RunContext(data_dir=_none(data_dir), cache=cache, progress=False)
    rows = []
    for spec in specs:
        path = run_dir(spec, results_dir, ctx)
        rows.append({**spec.as_row(), "status": "cached" if is_finished(path) else "missing",
                     "run_dir": str(path), "spec": spec})
    plan = pd.DataFrame(rows, columns=list(SPEC_COLUMNS) + ["status", "run_dir", "spec"])
    todo = plan.index[plan["status"] == "missing"]
    root = results_root(results_dir)
    echo(f"{len(plan)} run(s) needed under {root}: {len(plan) - len(todo)} cached, {len(todo)} "
         + ("to run now" if run_missing else "missing (run_missing=False)") + (":" if len(todo) else "."))
    for i in todo:
        echo(f"  {_spec_text(plan.at[i, 'spec'])}")
    failures = []
    if run_missing:
        for k, i in enumerate(todo, 1):
            spec = plan.at[i, "spec"]
            t0 = time.perf_counter()
            res = run_grid([spec], results_dir, _none(data_dir), progress=False, cache=cache).iloc[0]
            plan.at[i, "status"] = res["status"]
            if res["run_dir"]:
                plan.at[i, "run_dir"] = res["run_dir"]
            note = f"done in {time.perf_counter() - t0:.1f} s" if res["status"] == "done" else res["status"]
            echo(f"[{k}/{len(todo)}] {_spec_text(spec)}: {note}")
            if res["status"] == "failed":
                last = (res["error"] or "").strip().splitlines()
                failures.append(f"{_spec_text(spec)}: {last[-1] if last else 'failed'}")
            elif res["status"] == "busy":
                echo(f"    {res['error']}; left out of the tables until it finishes")
    elif len(todo):
        echo("Left out of the tables. To run them: rerun with -p run_missing True, or")
        for i in todo:
            echo(f"  {plan.at[i, 'spec'].command()}")
    plan["finished"] = [is_finished(p) for p in plan["run_dir"]]
    if failures:
        raise RunsFailed(f"{len(failures)} run(s) failed:\n  " + "\n  ".join(failures))
    return plan


def load_metrics(plan: pd.DataFrame) -> pd.DataFrame:
    """The ``metrics.csv`` rows of the plan's finished runs with the spec columns, ``run_dir`` and ``row``
    (the paper's row label: ``storm_wo_ts`` -> ``STORM-w/o-TS``, ``market`` -> ``Market Index``)."""
    frames = []
    for r in plan[plan["finished"]].itertuples():
        m = pd.read_csv(Path(r.run_dir) / "metrics.csv", keep_default_na=False, na_values=[""])
        for i, col in enumerate(SPEC_COLUMNS):
            m.insert(i, col, getattr(r, col))
        m["run_dir"] = r.run_dir
        frames.append(m)
    if not frames:
        return pd.DataFrame(columns=list(SPEC_COLUMNS) + ["split", "convention", "metric", "value", "run_dir",
                                                          "row"])
    out = pd.concat(frames, ignore_index=True)
    out["row"] = out["model"].map(report.model_label)
    return out


def select(m: pd.DataFrame, split: str | None = "test", convention: str | None = None, metrics=None,
           options: str | None = "", **where) -> pd.DataFrame:
    """Rows of a :func:`load_metrics` frame: one split, one convention, some metrics, default options
    (``options=None``: any) and column filters (``universe="dj30"``, ``stock="AAPL"``, ``model=[...]``)."""
    keep = pd.Series(True, index=m.index)
    if split is not None:
        keep &= m["split"] == split
    if convention is not None:
        keep &= m["convention"] == convention
    if metrics is not None:
        keep &= m["metric"].isin(as_list(metrics))
    if options is not None and "options" in m:
        keep &= m["options"].fillna("") == options
    for col, val in where.items():
        keep &= m[col].isin(val if isinstance(val, (list, tuple, set)) else [val])
    return m[keep]


# --------------------------------------------------------------------------- the notebook context


@dataclass
class Context:
    """What :func:`setup` returns: the notebook's normalised parameters (``ctx.universes``, ``ctx.seeds``
    ...), the shared price cache, the runs it used and its start time (for :func:`footer`)."""

    notebook: str
    params: dict
    raw: dict
    cache: RunCache = field(default_factory=RunCache)
    started: float = field(default_factory=time.perf_counter)
    plans: list = field(default_factory=list)
    data: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def __getattr__(self, name):
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    def has_paper(self, universe: str) -> bool:
        """Whether the paper has numbers to compare with: the real universes under a real protocol."""
        return universe in data_mod.UNIVERSES and self.params.get("protocol") in ("clean", "paper")

    def seeds_for(self, task: str, universe: str, model: str, options: dict | None = None,
                  protocol: str | None = None) -> list[int]:
        """The seeds to use for one (task, universe, model, options): the ``seeds`` parameter, or with
        ``seeds="all"`` every seed of a finished run in the results directory (the notebook's protocol
        unless ``protocol``, its profile, exactly these options), and seed 0 when there is none."""
        seeds = self.params.get("seeds")
        if not is_all(seeds):
            return as_ints(seeds)
        if "_finished" not in self.__dict__:
            self.__dict__["_finished"] = list_runs(self.params.get("results_dir"))
        runs = self.__dict__["_finished"]
        opt = RunSpec.make(task, universe, model, options=tuple(sorted((options or {}).items()))).options_str
        sel = runs[(runs["task"] == task) & (runs["universe"] == universe) & (runs["model"] == model)
                   & (runs["protocol"] == (protocol or self.params.get("protocol")))
                   & (runs["profile"] == self.params.get("profile")) & (runs["options"].fillna("") == opt)]
        return sorted({int(x) for x in sel["seed"]}) or [0]

    def specs(self, task: str, models=None, universes=None, seeds=None, options=None) -> list[RunSpec]:
        """The grid of runs for ``task`` with the notebook's protocol and profile (``seeds="all"``:
        per model and options, the seeds of :meth:`seeds_for`)."""
        if task == "trading":
            if not self.params.get("stocks"):
                print("no trading runs: " + (" ".join(self.notes) if self.notes else "no stocks selected"))
                return []
            if universes is None:
                universes = self.params.get("universe") or self.params.get("trading_universe")
        models = as_list(models if models is not None else self.params.get("models"))
        known = known_models(task)
        bad = [x for x in models if x not in known]
        if bad:
            raise NotebookStop(f"unknown model(s) {bad} for task {task!r}; known: {', '.join(known)}")
        universes = as_list(universes if universes is not None else self.params.get("universes"))
        seeds = seeds if seeds is not None else self.params.get("seeds")
        if is_all(seeds):
            opt_list = options if isinstance(options, list) else [options or {}]
            return [spec for u in universes for m in models for o in opt_list
                    for spec in grid(task, u, m, [self.protocol], [self.profile], self.seeds_for(task, u, m, o), o)]
        seeds = as_ints(seeds)
        if not (models and universes and seeds):
            return []
        return grid(task, universes, models, [self.protocol], [self.profile], seeds, options)

    def ensure(self, specs) -> pd.DataFrame:
        """:func:`ensure_runs` with the notebook's results directory, data directory and cache."""
        plan = ensure_runs(specs, self.run_missing, self.results_dir, self.data_dir, self.cache)
        self.plans.append(plan)
        return plan

    def metrics(self, plan: pd.DataFrame) -> pd.DataFrame:
        return load_metrics(plan)


TRADING_SAMPLE_NOTE = (
    "Trading (Table 3) is not run on the embedded sample: the trading task trades the five DJ30 stocks "
    "AAPL, JPM, IBM, INTC and MSFT, and the sample has only AAPL, JPM and MSFT (and the sample protocol's "
    "dates). Get the DJ30 data (set STORM_DATA_DIR / -p data_dir, or `storm download dj30 indices`) and use "
    "-p protocol clean.")


def setup(notebook: str, *, conventions=CONVENTIONS, **params) -> Context:
    """Normalise and check the notebook's parameters, then check its data (:func:`require_data`).

    Known keys: ``universes`` / ``universe``, ``models``, ``stocks``, ``seeds``, ``sizes`` (lists from a
    list or a comma string), ``protocol``, ``profile``, ``convention``, ``data_dir``, ``results_dir``
    (None -> $STORM_DATA_DIR / the runner default), ``run_missing``; any other key is kept as given.
    Prints what will be used.
    """
    raw = dict(params)
    p = dict(params)
    for key in ("universes", "models"):
        if key in p:
            p[key] = as_list(p[key])
    if "universe" in p:
        p["universe"] = str(p["universe"]).strip()
    if "stocks" in p:
        p["stocks"] = as_list(p["stocks"], upper=True)
    for key in ("seeds", "sizes"):
        if key in p and not (key == "seeds" and is_all(p[key])):
            p[key] = as_ints(p[key])
    if is_all(p.get("seeds")):
        p["seeds"] = "all"
    p.setdefault("protocol", "clean")
    p.setdefault("profile", "cpu")
    _check_choice("protocol", p["protocol"], tuple(PROTOCOLS))
    _check_choice("profile", p["profile"], tuple(PROFILES))
    if "convention" in p:
        _check_choice("convention", p["convention"], tuple(conventions))
    p["data_dir"] = _none(p.get("data_dir"))
    p["results_dir"] = _none(p.get("results_dir"))
    if p["results_dir"] is not None:
        p["results_dir"] = str(Path(p["results_dir"]).expanduser().resolve())
    if p["data_dir"] is not None:
        p["data_dir"] = str(Path(p["data_dir"]).expanduser().resolve())
    p["run_missing"] = as_bool(p.get("run_missing", True))
    notes = []
    if "stocks" in p:
        bad = [x for x in p["stocks"] if x not in TRADING_STOCKS]
        if bad:
            raise NotebookStop(f"unknown stock(s) {bad}: the trading task trades {', '.join(TRADING_STOCKS)}")
    trading = p.get("universe", p.get("trading_universe"))   # table3: universe; ablation: trading_universe
    if trading is not None and (p["protocol"] == "sample" or trading == data_mod.SAMPLE):
        p["stocks"] = []
        notes.append(TRADING_SAMPLE_NOTE)
        trading = None
    universes = list(p.get("universes") or [])
    if trading is not None and p.get("stocks", True) and trading not in universes:
        universes.append(trading)
    if "universes" in p and not p["universes"]:
        raise NotebookStop("no universe given: use e.g. -p universes dj30,sp500 (or sample with -p protocol sample)")
    for u in universes:
        if u not in data_mod.UNIVERSES and u != data_mod.SAMPLE:
            raise NotebookStop(f"unknown universe {u!r}; use dj30, sp500 or sample")
        if u == data_mod.SAMPLE and p["protocol"] != "sample":
            raise NotebookStop("the embedded sample ends 2022-12-28, before the clean/paper test period: "
                               "run it with -p protocol sample (e.g. -p universes sample -p protocol sample)")
    if "seeds" in p and not p["seeds"]:
        raise NotebookStop("no seed given: use e.g. -p seeds 0 or -p seeds 0,1,2")
    ctx = Context(notebook, p, raw, notes=notes)
    ctx.data = require_data(universes, p["data_dir"], ctx.cache)
    shown = {k: v for k, v in p.items() if k not in ("data_dir", "results_dir")}
    print(f"{notebook}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    print(f"results: {results_root(p['results_dir'])}")
    for u, desc in ctx.data.items():
        print(f"data {u}: {desc}")
    if p["protocol"] == "sample":
        print("embedded sample / sample protocol: OUR NUMBERS ONLY, the paper has none to compare with")
    for note in notes:
        print(note)
    return ctx


# --------------------------------------------------------------------------- tables

#: compact comparison tables in notebooks and the book (six stacked-cell columns on one screen)
TABLE_CSS = [{"selector": "", "props": [("font-size", "0.75rem")]},
             {"selector": "td, th", "props": [("padding", "0.15rem 0.3rem")]},
             {"selector": "caption", "props": [("caption-side", "top"), ("text-align", "left")]}]


def _fmt(x: float, digits: int = 3) -> str:
    return report._num(x, digits)


def summary_table(long: pd.DataFrame, metrics=None, models=None, digits: int = 3) -> pd.DataFrame:
    """Ours only, one string per (model, metric): ``mean ± std (n=k)`` over seeds (rows: paper labels)."""
    if long.empty:
        return pd.DataFrame()
    s = report.summarise(long[["model", "metric", "value"] + (["seed"] if "seed" in long else [])])
    metrics = list(metrics) if metrics is not None else list(dict.fromkeys(s.index.get_level_values(1)))
    labels = [report.model_label(x) for x in (models if models is not None else s.index.get_level_values(0))]
    labels = [x for x in dict.fromkeys(labels) if x in s.index.get_level_values(0)]
    out = pd.DataFrame(index=pd.Index(labels, name="model"), columns=metrics, dtype=object)
    for model in labels:
        for metric in metrics:
            if (model, metric) not in s.index:
                out.loc[model, metric] = "–"
                continue
            r = s.loc[(model, metric)]
            sd = f" ± {_fmt(r['std'], digits)}" if np.isfinite(r["std"]) else ""
            out.loc[model, metric] = f"{_fmt(r['mean'], digits)}{sd} (n={int(r['n'])})"
    return out


def comparison(m: pd.DataFrame, table: str, dataset: str, convention: str | None, split: str = "test",
               models=None, metrics=None, paper: bool = True, **where):
    """The comparison table of one paper table and dataset, styled for a notebook.

    With ``paper`` (the real universes): :func:`storm_lib.report.compare` + ``style_compare`` (ours mean ±
    std over seeds, the paper's mean ± range over 10 runs, Δ). Without: ours only, captioned as such.
    ``dataset``: the universe, or the ticker for ``table="trading"`` (then rows are filtered by ``stock``).
    """
    metrics, ours = _table_rows(m, table, dataset, split, convention, metrics, where)
    labels = [report.model_label(x) for x in as_list(models)] if models is not None else None
    if ours.empty and not paper:
        return pd.DataFrame({"note": ["no finished runs"]})
    if paper:
        cmp = report.compare(ours[["model", "metric", "value", "seed"]], table, dataset, models=labels,
                             metrics=metrics)
        sty = report.style_compare(cmp).set_table_styles(TABLE_CSS, overwrite=False)
        conv = f", convention {convention}" if convention else ""
        return sty.set_caption(f"{dataset}, {split} split{conv}: ours = mean ± std over seeds (n); "
                               "paper = mean ± range over 10 runs; Δ = ours − paper; green: ours within the "
                               "paper's range")
    table_ = summary_table(ours, metrics, labels)
    return table_.style.set_table_styles(TABLE_CSS, overwrite=False).set_caption(f"{dataset}, {split} split{', convention ' + convention if convention else ''}"
                                    ": OURS ONLY (mean ± std over seeds) — the paper has no numbers for "
                                    "this data / protocol")


def _table_rows(m: pd.DataFrame, table: str, dataset: str, split: str, convention, metrics, where: dict):
    """(metrics, rows of ``m``) of one paper table cell block: a universe, or a stock for trading."""
    where = {("stock" if table == "trading" else "universe"): dataset, **where}
    metrics = list(metrics) if metrics is not None else list(IC_METRICS if table == "rankic" else PORTFOLIO_METRICS)
    return metrics, select(m, split, convention, metrics, **where)


def improvement_table(m: pd.DataFrame, table: str, dataset: str, convention: str | None, split: str = "test",
                      paper: bool = True, metrics=None, **where) -> pd.DataFrame:
    """The paper's Improvement(%) row computed the paper's way on our means (:func:`report.improvement`),
    with the paper's printed row beside it when ``paper``."""
    metrics, ours = _table_rows(m, table, dataset, split, convention, metrics, where)
    if ours.empty:
        return pd.DataFrame(columns=["ours (%)", "best variant", "best baseline"])
    imp = report.improvement(ours[["model", "metric", "value", "seed"]], table, metrics=metrics)
    out = pd.DataFrame({
        "ours (%)": imp["improvement"].round(1),
        "best variant": [f"{n} {_fmt(v)}" if n else "–" for n, v in zip(imp["best_variant"], imp["variant_value"])],
        "best baseline": [f"{n} {_fmt(v)}" if n else "–"
                          for n, v in zip(imp["best_baseline"], imp["baseline_value"])],
    }, index=imp.index)
    if paper:
        rep = report.reported(table, dataset)
        printed = rep[rep["model"] == report.IMPROVEMENT_ROW].set_index("metric")["value_text"]
        out["paper (%)"] = [printed.get(k, "") or "-" for k in out.index]
    return out


def training_time(m: pd.DataFrame, plan: pd.DataFrame | None = None) -> pd.DataFrame:
    """Training time per trading method (mean over seeds): the return model's fit (seconds, once per
    method), the RL agents' training summed over the stocks, and the run's wall time from run.json."""
    t = m[(m["split"] == "train") & m["metric"].isin(["fit_seconds", "train_seconds"])]
    if t.empty:
        return pd.DataFrame(columns=["fit (s)", "agents (s)", "run wall (s)", "seeds"])
    agents = t[t["metric"] == "train_seconds"].groupby(["model", "seed"])["value"].sum()
    fit = t[t["metric"] == "fit_seconds"].groupby(["model", "seed"])["value"].first()  # same on every stock
    out = pd.DataFrame({"fit (s)": fit, "agents (s)": agents}).groupby(level="model").mean()
    out["seeds"] = t.groupby("model")["seed"].nunique()
    if plan is not None:
        wall = {}
        for r in plan[plan["finished"]].itertuples():
            wall.setdefault(r.model, []).append(_run_record(r.run_dir).get("wall_seconds", np.nan))
        out["run wall (s)"] = pd.Series({k: float(np.nanmean(v)) for k, v in wall.items()})
    order = [x for x in m["model"].drop_duplicates() if x in out.index]
    out = out.loc[order].round(1)
    out.index = pd.Index([report.model_label(x) for x in out.index], name="method")
    return out


def trading_config(config: dict, profile: str):
    """The trading task's fixed settings (``storm_lib.trading.experiment.run_task.config``) as a styled
    table (no truncated cells); of the RL budgets only the profile's. ``.data`` is the frame. ``config``
    may also be the task's per-spec config function: then its fixed settings and every RL budget of the
    profile are shown."""
    if callable(config):
        from .trading import experiment
        from .trading.agents import ALGOS, budget

        config = {**experiment.CONFIG, "budgets": {profile: {a: budget(a, profile) for a in ALGOS}}}
    rows = {}
    for k, v in config.items():
        if k == "budgets" and isinstance(v, dict):
            for algo, b in (v.get(profile) or {}).items():
                rows[f"budget {algo} ({profile})"] = ", ".join(f"{a}={x}" for a, x in b.items())
        else:
            rows[k] = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    out = pd.DataFrame({"value": pd.Series(rows)}).rename_axis("trading task setting")
    return out.style.set_properties(**{"text-align": "left"}).set_table_styles(TABLE_CSS, overwrite=False)


def profile_table(profile: str, trading: bool = False):
    """STORM's settings in ``profile`` beside the official code's (:func:`storm_lib.profiles.compare_to_paper`),
    rows that differ in bold; ``.data`` is the frame."""
    from .profiles import compare_to_paper

    t = compare_to_paper(profile, trading=trading)
    bold = lambda row: ["font-weight: bold" if not row["same"] else ""] * len(row)  # noqa: E731
    return (t.style.apply(bold, axis=1).set_properties(**{"text-align": "left"})
            .set_table_styles(TABLE_CSS, overwrite=False))


# --------------------------------------------------------------------------- run tables


def _tables(plan: pd.DataFrame, name: str, **where) -> list[tuple[pd.Series, pd.DataFrame]]:
    sel = plan[plan["finished"]]
    for col, val in where.items():
        sel = sel[sel[col].isin(val if isinstance(val, (list, tuple, set)) else [val])]
    return [(r, load_table(r["run_dir"], name)) for _, r in sel.iterrows()]


def daily(plan: pd.DataFrame, column: str = "return", options: str | None = "", **where) -> pd.DataFrame:
    """One column of the runs' ``daily`` tables (portfolio task, test split): index date, columns
    (paper row label, seed). ``column``: return, rank_ic, turnover, benchmark."""
    if options is not None:
        where["options"] = options
    cols = {}
    for r, d in _tables(plan, "daily", **where):
        cols[(report.model_label(r["model"]), int(r["seed"]))] = d[column]
    if not cols:
        return pd.DataFrame()
    out = pd.DataFrame(cols).sort_index()
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["model", "seed"])
    return out


def equity(plan: pd.DataFrame, split: str = "test", **where) -> pd.DataFrame:
    """The trading runs' equity curves of one split, long: method (paper label), seed, stock, date, equity."""
    frames = []
    for r, e in _tables(plan, "equity", **where):
        e = e[e["split"] == split]
        frames.append(e[["stock", "date", "equity"]].assign(method=report.model_label(r["model"]),
                                                             seed=int(r["seed"])))
    if not frames:
        return pd.DataFrame(columns=["method", "seed", "stock", "date", "equity"])
    return pd.concat(frames, ignore_index=True)[["method", "seed", "stock", "date", "equity"]]


def codebook_size_of(options: str, profile: str) -> int:
    """The codebook size K of a STORM run: its ``codebook_size`` option, else the profile's default."""
    for part in (options or "").split(","):
        k, _, v = part.partition("=")
        if k.strip() == "codebook_size":
            return int(v)
    return int(get_profile(profile).storm.get("codebook_size", 512))


def codebook_specs(ctx: Context, universes=None, sizes=None, models=None) -> list[RunSpec]:
    """Portfolio runs of STORM (or its ablations: ``models``, default ``ctx.models`` else storm) over codebook
    sizes. The profile's default K is the run without options and is always included (panel (a) reads
    its codebook usage), also when ``sizes`` does not list it."""
    models = as_list(models if models is not None else ctx.params.get("models") or ["storm"])
    bad = [x for x in models if x not in STORM_MODELS]
    if bad:
        raise NotebookStop(f"{bad}: only {', '.join(STORM_MODELS)} have a codebook")
    default = codebook_size_of("", ctx.profile)
    opts = [{}] + [{"codebook_size": int(k)} for k in as_ints(sizes or ctx.sizes) if k != default]
    return [s for o in opts for s in ctx.specs("portfolio", models, universes, options=[o])]


def codebook_sweep(m: pd.DataFrame, universe: str, model: str = "storm", split: str = "test",
                   convention: str = "standard") -> pd.DataFrame:
    """RankIC and RankICIR against the codebook size: index K; columns RankIC, RankIC_std, RankICIR,
    RankICIR_std, n (seeds), paper_RankIC, paper_RankICIR (Figure 3b, :data:`PAPER_FIG3B`)."""
    sel = select(m, split, convention, IC_METRICS, options=None, universe=universe, model=model)
    cols = ["RankIC", "RankIC_std", "RankICIR", "RankICIR_std", "n", "paper_RankIC", "paper_RankICIR"]
    if sel.empty:
        return pd.DataFrame(columns=cols)
    sel = sel.assign(K=[codebook_size_of(o, p) for o, p in zip(sel["options"], sel["profile"])])
    g = sel.groupby(["K", "metric"])["value"]
    s = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).unstack("metric")
    out = pd.DataFrame({"RankIC": s[("mean", "RankIC")], "RankIC_std": s[("std", "RankIC")],
                        "RankICIR": s[("mean", "RankICIR")], "RankICIR_std": s[("std", "RankICIR")],
                        "n": s[("n", "RankIC")].astype(int)})
    out.index.name = "codebook_size"
    out["paper_RankIC"] = PAPER_FIG3B["RankIC"].reindex(out.index)
    out["paper_RankICIR"] = PAPER_FIG3B["RankICIR"].reindex(out.index)
    return out.sort_index()[cols]


def codebook_stats(codes: pd.DataFrame) -> pd.DataFrame:
    """Per branch of a ``codes`` table (branch, code, count): K, codes used, share used, perplexity
    exp(H) of the usage distribution (K = perfectly even), perplexity / K and the top code's share."""
    rows = {}
    for branch, g in codes.groupby("branch", sort=False):
        c = g["count"].to_numpy(dtype=float)
        total = c.sum()
        p = c[c > 0] / total if total > 0 else np.array([])
        ppl = float(np.exp(-(p * np.log(p)).sum())) if p.size else float("nan")
        rows[{"cs": "CS", "ts": "TS"}.get(branch, branch)] = {
            "K": len(c), "tokens": int(total), "used": int((c > 0).sum()),
            "share used": float((c > 0).mean()), "perplexity": ppl, "perplexity / K": ppl / len(c),
            "top code share": float(c.max() / total) if total > 0 else float("nan"),
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "branch"
    return out


def codes(plan: pd.DataFrame, universe: str, model: str = "storm", options: str = "") -> pd.DataFrame:
    """The codebook usage table of the first finished run of ``model`` on ``universe`` (default options)."""
    found = _tables(plan, "codes", universe=universe, model=model, options=options)
    if not found:
        return pd.DataFrame(columns=["branch", "code", "count"])
    return found[0][1]


# --------------------------------------------------------------------------- ablation


def ablation_frame(m_portfolio: pd.DataFrame | None, m_trading: pd.DataFrame | None, universes, stocks,
                   convention: str = "paper", trading_convention: str | None = None,
                   split: str = "test", paper: bool = True) -> pd.DataFrame:
    """STORM and its two ablations across the three tasks, long: task, dataset, metric, variant, ours
    (mean over seeds), n, paper. Tasks: portfolio (TopK-Drop metrics in ``convention``), rankic
    (RankIC, RankICIR, standard convention), trading (per stock, ``trading_convention``)."""
    parts = []
    variants = list(report.STORM_ROWS)

    def add(task, table, dataset, m, conv, metrics, **where):
        if m is None or m.empty:
            return
        sel = select(m, split, conv, metrics, **where)
        sel = sel[sel["row"].isin(variants)]
        if sel.empty:
            return
        g = sel.groupby(["row", "metric"])["value"]
        s = pd.DataFrame({"ours": g.mean(), "n": g.count()}).reset_index()
        try:
            rep = report.reported(table, dataset).set_index(["model", "metric"])["value"]
        except ValueError:  # no paper numbers for this dataset (the sample)
            rep = pd.Series(dtype=float)
        if not paper:
            rep = pd.Series(dtype=float)
        s["paper"] = [rep.get((v, k), np.nan) for v, k in zip(s["row"], s["metric"])]
        parts.append(s.rename(columns={"row": "variant"}).assign(task=task, dataset=dataset))

    for u in as_list(universes):
        add("portfolio", "portfolio", u, m_portfolio, convention, PORTFOLIO_METRICS, universe=u)
        add("rankic", "rankic", u, m_portfolio, "standard", IC_METRICS, universe=u)
    for s in as_list(stocks, upper=True):
        add("trading", "trading", s, m_trading, trading_convention or convention, PORTFOLIO_METRICS, stock=s)
    cols = ["task", "dataset", "metric", "variant", "ours", "n", "paper"]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)[cols]
    order = {t: i for i, t in enumerate(["portfolio", "rankic", "trading"])}
    metric_order = {k: i for i, k in enumerate(PORTFOLIO_METRICS + IC_METRICS)}
    ds_order = {d: i for i, d in enumerate(dict.fromkeys(out["dataset"]))}
    return out.sort_values(["task", "dataset", "metric", "variant"],
                           key=lambda c: c.map(order) if c.name == "task" else
                           c.map(ds_order) if c.name == "dataset" else
                           c.map(metric_order) if c.name == "metric" else
                           c.map({v: i for i, v in enumerate(variants)}) if c.name == "variant" else c,
                           kind="stable").reset_index(drop=True)


def ablation_table(ab: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`ablation_frame` wide: rows (task, dataset, metric), columns (variant, ours / paper); ▲ marks
    the best variant of each row in our runs (lowest for MDD and AVO, highest otherwise)."""
    if ab.empty:
        return pd.DataFrame()
    rows = {}
    for (task, ds, metric), g in ab.groupby(["task", "dataset", "metric"], sort=False):
        vals = g.set_index("variant")
        best = _best(vals["ours"], metric)
        cells = {}
        for v in report.STORM_ROWS:
            r = vals.loc[v] if v in vals.index else None
            ours = "–" if r is None else f"{'▲ ' if v == best else ''}{_fmt(r['ours'], digits)}"
            cells[(v, "ours")] = ours
            cells[(v, "paper")] = _fmt(r["paper"], digits) if r is not None else "–"
        rows[(task, ds, metric)] = cells
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["task", "dataset", "metric"])
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["variant", ""])
    if ab["paper"].isna().all():
        out = out.drop(columns="paper", level=1)
    return out


def _best(values: pd.Series, metric: str):
    v = values.dropna()
    if v.empty:
        return None
    return v.idxmin() if metric in report.LOWER_IS_BETTER else v.idxmax()


def ablation_text(ab: pd.DataFrame) -> str:
    """A paragraph (markdown) reading :func:`ablation_frame`: per task, on how many (dataset, metric)
    cells full STORM is the best of the three variants in our runs and in the paper, where each ablation
    wins, and how often our ranking of the three agrees with the paper's best. Computed, not written."""
    if ab.empty:
        return "No finished runs of STORM or its ablations yet: nothing to read."
    names = {"portfolio": "Portfolio (TopK-Drop)", "rankic": "RankIC / RankICIR", "trading": "Trading"}
    lines = []
    for task, g in ab.groupby("task", sort=False):
        cells = list(g.groupby(["dataset", "metric"], sort=False))
        ours_best, paper_best, agree, comparable = [], [], 0, 0
        complete = 0
        for (ds, metric), c in cells:
            c = c.set_index("variant")
            if len(c["ours"].dropna()) < 3:
                continue
            complete += 1
            ob = _best(c["ours"], metric)
            ours_best.append(ob)
            pb = _best(c["paper"], metric) if c["paper"].notna().sum() == 3 else None
            if pb is not None:
                comparable += 1
                paper_best.append(pb)
                agree += ob == pb
        datasets = ", ".join(dict.fromkeys(g["dataset"]))
        if not complete:
            lines.append(f"- **{names.get(task, task)}** ({datasets}): no dataset × metric cell has a value for "
                         "all three variants yet.")
            continue
        n_storm = sum(b == "STORM" for b in ours_best)
        wins = {v: sum(b == v for b in ours_best) for v in report.STORM_ROWS[1:]}
        cover = (f"{complete} dataset × metric cells" if complete == len(cells) else
                 f"{complete} of {len(cells)} dataset × metric cells have a value for all three variants")
        text = (f"- **{names.get(task, task)}** ({datasets}; {cover}): full STORM is the "
                f"best of the three variants in {n_storm} of {complete} cells of our runs")
        if paper_best:
            text += f" and in {sum(b == 'STORM' for b in paper_best)} of {comparable} in the paper"
        text += "; " + ", ".join(f"{v} is best in {k}" for v, k in wins.items()) + "."
        if paper_best:
            text += f" Our best variant is the paper's best in {agree} of {comparable} cells."
        lines.append(text)
    n = ab.groupby(["task", "dataset", "variant"])["n"].max()
    seeds = f"{int(n.min())}" if n.min() == n.max() else f"{int(n.min())}–{int(n.max())}"
    lines.append(f"\nOur numbers are means over {seeds} seed(s) per variant; the paper's over 10 runs. With few "
                 "seeds a ranking of three close variants is fragile: read the seed spread in the tables above "
                 "before reading a ranking.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- footer


def _run_record(path) -> dict:
    try:
        return json.loads((Path(path) / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _compute_seconds(path) -> float:
    """A run's recorded compute (:func:`storm_lib.run.compute_seconds`), 0 when unreadable."""
    from .run import compute_seconds

    rec = _run_record(path)
    return (compute_seconds(path, rec) or 0.0) if rec else 0.0


def _versions() -> dict:
    from importlib import metadata

    from . import __version__

    out = {"python": platform.python_version()}
    for name, dist in (("numpy", "numpy"), ("pandas", "pandas"), ("torch", "torch"), ("lightgbm", "lightgbm"),
                       ("stable-baselines3", "stable-baselines3"), ("matplotlib", "matplotlib")):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["storm_lib"] = __version__
    try:
        repo = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            out["storm_lib"] += f" (git {rev.stdout.strip()}{', modified' if dirty.stdout.strip() else ''})"
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _hardware() -> dict:
    out = {"platform": platform.platform(), "CPU count": os.cpu_count(),
           "STORM_NUM_THREADS": os.environ.get("STORM_NUM_THREADS", "unset")}
    try:
        import torch

        out["GPU"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # noqa: BLE001 - provenance only
        out["GPU"] = "unknown"
    return out


def _param_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "None" if value is None else str(value)


def rerun_command(notebook: str, params: dict, data_dir=None) -> str:
    """The papermill command (from the repository root) that reruns the notebook with ``params``."""
    env = []
    if _none(data_dir) is None and os.environ.get("STORM_DATA_DIR"):
        env.append(f"STORM_DATA_DIR={shlex.quote(os.environ['STORM_DATA_DIR'])}")
    if os.environ.get("STORM_NUM_THREADS"):
        env.append(f"STORM_NUM_THREADS={shlex.quote(os.environ['STORM_NUM_THREADS'])}")
    parts = ["papermill", "--cwd", "notebooks", f"notebooks/{notebook}.ipynb", f"{notebook}.out.ipynb"]
    for k, v in params.items():
        parts += ["-p", k, _param_text(v)]
    return " ".join(env + [shlex.quote(x) for x in parts])


def footer_info(ctx: Context) -> dict:
    """What :func:`footer` shows, as a dict (for tests and the book)."""
    runs = pd.concat(ctx.plans, ignore_index=True) if ctx.plans else pd.DataFrame(columns=["run_dir", "finished",
                                                                                          "status"])
    runs = runs.drop_duplicates("run_dir")
    used = runs[runs["finished"].astype(bool)] if len(runs) else runs
    secs = [_compute_seconds(p) for p in used["run_dir"]]
    universes = list(ctx.data)
    return {
        "versions": _versions(),
        "hardware": _hardware(),
        "wall_seconds": time.perf_counter() - ctx.started,
        "data": data_hashes(universes, ctx.params.get("data_dir"), ctx.cache) if universes else pd.DataFrame(),
        "runs": {"used": len(used), "run now": int((runs["status"] == "done").sum()) if len(runs) else 0,
                 "not finished": int(len(runs) - len(used)), "compute_seconds": float(sum(secs))},
        "command": rerun_command(ctx.notebook, ctx.raw, ctx.params.get("data_dir")),
    }


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "–"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def footer(ctx: Context, display: bool = True):
    """The environment-and-cost cell: versions, hardware, the notebook's wall time (from :func:`setup`),
    the data hashes of its universes, the runs it used (count, total compute recorded in their run.json)
    and the exact papermill command to rerun it. Displays markdown; returns the :func:`footer_info` dict
    when ``display`` is False."""
    info = footer_info(ctx)
    r = info["runs"]
    rows = {**{f"version: {k}": v for k, v in info["versions"].items()},
            **{f"hardware: {k}": v for k, v in info["hardware"].items()},
            "notebook wall time": f"{_duration(info['wall_seconds'])} (from the setup cell; runs executed here "
                                  "included)",
            "runs used": f"{r['used']} finished run(s), {r['run now']} of them run by this execution"
                         + (f"; {r['not finished']} not finished (left out)" if r["not finished"] else ""),
            "recorded compute": f"{_duration(r['compute_seconds'])} (the runs' wall_seconds in run.json, plus "
                                "the fits of interrupted attempts)"}
    for row in info["data"].itertuples():
        rows[f"data {row.universe}: prices sha256"] = row.prices
        rows[f"data {row.universe}: index sha256"] = row.index
    if not display:
        return info
    from IPython.display import Markdown, display as _display

    table = pd.DataFrame({"value": pd.Series(rows, dtype=object)}).rename_axis("environment and cost")
    _display(table.style.set_properties(**{"text-align": "left"}).set_table_styles(TABLE_CSS, overwrite=False),
             Markdown("Rerun (from the repository root):\n\n```bash\n" + info["command"] + "\n```"))
    return None


# --------------------------------------------------------------------------- uncertainty (Tables 2 and 4)

#: the models that are not baselines when picking the best baseline of a paired test
NOT_BASELINES = ("market",) + STORM_MODELS
CI_METRICS = ("APY", "ASR", "RankIC")
COSTS_BPS = (0, 1, 2, 5, 10, 15, 20)


def _pooled_runs(plan: pd.DataFrame, universe: str, models=None, seed: int | None = None,
                 options: str = "") -> list[tuple[str, list[str], list[int]]]:
    """(model, run_dirs, seeds) per model, in ``models`` order: every finished seed of the model
    (default options) when ``seed`` is None, else the run of ``seed``."""
    if plan is None or plan.empty:
        return []
    sel = plan[plan["finished"].astype(bool) & (plan["universe"] == universe)
               & (plan["options"].fillna("") == options)]
    if seed is not None:
        sel = sel[sel["seed"] == int(seed)]
    order = as_list(models) if models is not None else list(dict.fromkeys(plan["model"]))
    out = []
    for model in order:
        runs = sel[sel["model"] == model].sort_values("seed", kind="stable").drop_duplicates("seed")
        if len(runs):
            out.append((model, list(runs["run_dir"]), [int(x) for x in runs["seed"]]))
    return out


def _seeds_text(seeds) -> str:
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ",".join(map(str, seeds))


def ci_frame(plan: pd.DataFrame, universe: str, models=None, seed: int | None = None, n: int = 2000,
             level: float = 0.95, metrics=CI_METRICS) -> pd.DataFrame:
    """Block-bootstrap CIs (:func:`storm_lib.stats.run_cis`: stationary bootstrap of the test days,
    Politis–White block, standard convention) of each model's test ``metrics`` from its runs'
    ``daily.csv``. Per model, every finished seed pooled day by day (the mean daily return and RankIC
    over seeds; :func:`storm_lib.stats.load_daily`), or only ``seed``. The CI is the sampling uncertainty
    over test days of that seed-averaged run; the seed spread is in the comparison tables. Long: model
    (paper label), seeds (text, e.g. ``0–4``), metric, estimate, low, high, block, n_days."""
    from . import stats

    cols = ["model", "seeds", "metric", "estimate", "low", "high", "block", "n_days"]
    rows = []
    for model, dirs, seeds in _pooled_runs(plan, universe, models, seed):
        ci = stats.run_cis(dirs, "standard", n=n, level=level)
        for metric in metrics:
            if metric in ci.index:
                c = ci.loc[metric]
                rows.append({"model": report.model_label(model), "seeds": _seeds_text(seeds), "metric": metric,
                             "estimate": c["estimate"], "low": c["low"], "high": c["high"], "block": c["block"],
                             "n_days": int(c["n_days"])})
    return pd.DataFrame(rows, columns=cols)


def ci_table(cis: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`ci_frame` wide: rows model, columns metric, cells ``estimate [low, high]``; ``seeds`` column."""
    if cis.empty:
        return pd.DataFrame()
    cells = cis.assign(cell=[f"{_fmt(e, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"
                             for e, lo, hi in zip(cis["estimate"], cis["low"], cis["high"])])
    out = cells.pivot(index="model", columns="metric", values="cell").fillna("–")
    out = out.loc[list(dict.fromkeys(cis["model"])), [k for k in CI_METRICS if k in out.columns]
                  + [k for k in out.columns if k not in CI_METRICS]]
    out.insert(0, "seeds", cis.drop_duplicates("model").set_index("model")["seeds"])
    out.columns.name = None
    return out


def best_baseline(m: pd.DataFrame, universe: str, metric: str, models=None, split: str = "test",
                  convention: str = "standard") -> str | None:
    """The registry name of the non-STORM model (never the market index) with the highest mean ``metric``
    over seeds (default options, standard convention), or None when no baseline has that metric."""
    sel = select(m, split, convention, [metric], universe=universe)
    sel = sel[~sel["model"].isin(NOT_BASELINES)]
    if models is not None:
        sel = sel[sel["model"].isin(as_list(models))]
    means = sel.groupby("model")["value"].mean().dropna()
    return None if means.empty else str(means.idxmax())


def paired_tests(plan: pd.DataFrame, m: pd.DataFrame, universe: str, model: str = "storm", models=None,
                 seed: int | None = None, n: int = 2000) -> pd.DataFrame:
    """:func:`storm_lib.stats.paired_test` of ``model`` against the best baseline on the test days: daily
    RankIC against the baseline with the highest mean test RankIC, daily net portfolio return against
    the one with the highest mean test APY (standard convention; :func:`best_baseline`). Each side pools
    all its finished seeds day by day (:func:`storm_lib.stats.load_daily`), or uses only ``seed``. Rows:
    ``daily RankIC``, ``daily return``; a comparison whose runs are missing is left out."""
    from . import stats

    cols = ["baseline", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "p_bootstrap", "t_hac", "p_hac",
            "n_days", "seeds", "baseline_seeds"]
    own = _pooled_runs(plan, universe, [model], seed)
    if not own:
        return pd.DataFrame(columns=cols)
    _, own_dirs, own_seeds = own[0]
    rows = {}
    for label, column, metric in (("daily RankIC", "rank_ic", "RankIC"), ("daily return", "return", "APY")):
        base = best_baseline(m, universe, metric, models)
        other = _pooled_runs(plan, universe, [base], seed) if base else []
        if not other:
            continue
        _, dirs, seeds = other[0]
        a = stats.load_daily(own_dirs)[column]
        b = stats.load_daily(dirs)[column]
        res = stats.paired_test(a, b, n=n, align="exact")
        rows[label] = {"baseline": report.model_label(base), **{k: res[k] for k in cols[1:-2]},
                       "seeds": _seeds_text(own_seeds), "baseline_seeds": _seeds_text(seeds)}
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols)


def paired_text(tests: pd.DataFrame, model: str = "STORM", level: float = 0.05) -> str:
    """One line per paired test: the mean daily difference, its CI and both p-values, read at ``level``."""
    if tests.empty:
        return "No paired test: the runs of STORM or of a baseline are missing."
    lines = []
    for what, r in tests.iterrows():
        sig = max(r["p_bootstrap"], r["p_hac"]) < level
        lines.append(f"- **{what}**, {model} − {r['baseline']} (seeds {r['seeds']} against {r['baseline_seeds']}, "
                     f"pooled day by day; {int(r['n_days'])} days): "
                     f"mean difference {_fmt(r['mean_diff'], 5)} [{_fmt(r['ci_low'], 5)}, {_fmt(r['ci_high'], 5)}], "
                     f"p = {r['p_bootstrap']:.3f} (block bootstrap), {r['p_hac']:.3f} (Newey–West t): "
                     + (f"significant at {level:.0%}" if sig else f"not significant at {level:.0%}")
                     + (" in the direction of " + (model if r["mean_diff"] > 0 else r["baseline"]) if sig else "")
                     + ".")
    return "\n".join(lines)


def cost_curves(plan: pd.DataFrame, universe: str, models=None, seed: int | None = None, panel=None,
                cache: RunCache | None = None, data_dir=None, costs_bps=COSTS_BPS) -> pd.DataFrame:
    """TopK-Drop metrics of every model's saved test scores at each cost in ``costs_bps`` (basis points
    of turnover; :func:`storm_lib.stats.cost_curve_from_run`, standard convention, the paper's variant),
    one run per model (``seed`` or the lowest finished one). Labels from the universe's panel
    (``panel``, else built once through the shared ``cache``; only when a run has scores). Long: model
    (paper label), seed, cost_bps, APY, ASR, CW, MDD, CR, AVO, turnover, fee."""
    from . import stats

    # one run per model: ``seed``, or its lowest finished seed (_pooled_runs sorts the seeds)
    runs = [(model, dirs[0], seeds[0]) for model, dirs, seeds in _pooled_runs(plan, universe, models, seed)
            if (Path(dirs[0]) / "scores.parquet").is_file()]
    frames = []
    for model, run_dir_, run_seed in runs:
        if panel is None:
            panel = RunContext(data_dir=_none(data_dir), cache=cache or RunCache(), progress=False).panel(universe)
        c = stats.cost_curve_from_run(run_dir_, panel=panel, costs_bps=costs_bps).reset_index()
        frames.append(c.assign(model=report.model_label(model), seed=int(run_seed)))
    cols = ["model", "seed", "cost_bps", "APY", "ASR", "CW", "MDD", "CR", "AVO", "turnover", "fee"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def uncertainty(ctx: Context, plan: pd.DataFrame, m: pd.DataFrame, costs: bool = False, n: int = 2000) -> None:
    """The statistics cells of Tables 2 and 4, per universe: CIs (:func:`ci_frame`), the paired tests of
    STORM against the best baseline (:func:`paired_tests`) and, with ``costs``, the transaction-cost
    curves (:func:`cost_curves`, :func:`storm_lib.plots.cost_curves`). Missing runs are skipped with a
    message."""
    from IPython.display import Markdown, display

    from . import plots

    models = ctx.models
    for u in ctx.universes:
        display(Markdown(f"### {u.upper()}"))
        cis = ci_frame(plan, u, models, n=n)
        if cis.empty:
            display(Markdown(f"No finished run of {u.upper()}: no confidence intervals."))
            continue
        display(ci_table(cis).style.set_table_styles(TABLE_CSS, overwrite=False).set_caption(
            f"{u.upper()}, test split, standard convention: estimate [95% CI], stationary block bootstrap of the "
            "days (Politis–White block); per model its seeds (column seeds) averaged day by day"))
        if "storm" in models:
            display(Markdown("**Paired tests, STORM − best baseline**\n\n"
                             + paired_text(paired_tests(plan, m, u, "storm", models, n=n))))
        if costs:
            curves = cost_curves(plan, u, [x for x in models if x != "market"], cache=ctx.cache,
                                 data_dir=ctx.data_dir)
            if curves.empty:
                display(Markdown(f"No finished {u.upper()} run with saved scores: no cost curve."))
            else:
                display(plots.cost_curves(curves, title=f"{u.upper()}: TopK-Drop metrics against the "
                                                        "transaction cost (test split, standard convention)"))


# --------------------------------------------------------------------------- protocol audit

AUDIT_METRICS = ("APY", "CW", "ASR", "MDD", "RankIC")
WATERFALL_METRICS = ("APY", "ASR", "RankIC")


def audit_specs(ctx: Context) -> list[RunSpec]:
    """The audit runs of every (universe, model) of the notebook (:func:`storm_lib.audit.audit_specs`)."""
    from . import audit

    out = []
    for u in ctx.universes:
        for model in ctx.models:
            # seeds="all": the seeds audited so far, read from the runs of switch (a) (protocol paper)
            seeds = ctx.seeds_for("portfolio", u, model, protocol="paper") if is_all(ctx.seeds) else ctx.seeds
            try:
                out += audit.audit_specs(model, u, seeds, ctx.profile)
            except ValueError as exc:
                raise NotebookStop(f"audit of {model} on {u}: {exc}") from None
    return list(dict.fromkeys(out))


def audit_frame(plan: pd.DataFrame, metrics=AUDIT_METRICS) -> pd.DataFrame:
    """:func:`storm_lib.audit.audit_table` of the plan's finished runs (test split)."""
    from . import audit

    return audit.audit_table(load_metrics(plan), metrics=list(metrics))


def _step_label(step: str, letters: dict) -> str:
    name = step.lstrip("+")
    if step == "clean":
        return "clean"
    return f"+ ({letters[name]}) {name}" if step.startswith("+") else f"({letters[name]}) {name}"


def audit_steps(model: str, universe: str, seeds, profile: str) -> pd.DataFrame:
    """The audit's steps of ``model`` (one row per step): step, kind, label (``(a) test_selection`` alone,
    ``+ (a) test_selection`` cumulative), convention."""
    from . import audit

    plan = audit.audit_plan(model, universe, [0], profile)   # the steps do not depend on the seeds
    steps = plan.drop_duplicates("step")[["step", "kind", "convention"]].reset_index(drop=True)
    letters = {k: s.letter for k, s in audit.SWITCHES.items()}
    steps["label"] = [_step_label(s, letters) for s in steps["step"]]
    return steps


def audit_summary(at: pd.DataFrame, universe: str, model: str, seeds, profile: str,
                  metrics=AUDIT_METRICS, digits: int = 3, paper: bool = True) -> pd.DataFrame:
    """One model's audit as a table: rows every step (clean, each switch alone, the cumulative steps),
    columns (metric, ``value`` / ``Δ clean``): mean ± std over seeds (n) of the value and of the change
    against the clean baseline of the same seed; ``not run`` where the step's run is missing. With
    ``paper``, the published rows (paper STORM, and the model's own row) follow: mean ± range over 10 runs."""
    steps = audit_steps(model, universe, seeds, profile)
    sel = at[(at["universe"] == universe) & (at["model"] == model)] if len(at) else at
    rows = {}
    for s in steps.itertuples():
        cells = {}
        for metric in metrics:
            g = sel[(sel["step"] == s.step) & (sel["metric"] == metric)] if len(sel) else sel
            for col, name in (("value", "value"), ("delta", "Δ clean")):
                v = g[col].dropna() if len(g) else pd.Series(dtype=float)
                if v.empty:
                    cells[(metric, name)] = "not run" if g.empty else "–"
                    continue
                sd = f" ± {_fmt(v.std(ddof=1), digits)}" if len(v) > 1 else ""
                cells[(metric, name)] = (f"{_fmt(v.mean(), digits)}{sd} (n={len(v)})" if name == "value"
                                         else f"{report._num(v.mean(), digits, signed=True)}{sd}")
        rows[(s.kind, s.label, s.convention)] = cells
    if paper:
        for name in dict.fromkeys(["storm", model]):
            pv = paper_values(universe, name)
            if pv:
                rows[("published", f"paper {report.model_label(name)}", "paper")] = {
                    **{(k, "value"): (f"{_fmt(pv[k][0], digits)} ± {_fmt(pv[k][1], digits)}" if k in pv else "–")
                       for k in metrics}, **{(k, "Δ clean"): "" for k in metrics}}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["kind", "step", "convention"])
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["metric", ""])
    return out


def audit_means(at: pd.DataFrame, universe: str, model: str, metric: str, kind: str = "cumulative") -> pd.Series:
    """Mean over seeds of ``metric`` per step: clean first, then the steps of ``kind`` in audit order."""
    if at.empty:
        return pd.Series(dtype=float)
    sel = at[(at["universe"] == universe) & (at["model"] == model) & (at["metric"] == metric)
             & at["kind"].isin(["baseline", kind])]
    if sel.empty:
        return pd.Series(dtype=float)
    g = sel.groupby(["step_order", "step"])["value"].mean().sort_index()
    return pd.Series(g.to_numpy(), index=g.index.get_level_values("step"), name=metric)


def paper_values(universe: str, model: str) -> dict:
    """The paper's published (mean, ± range) of ``model`` for APY, CW, ASR, MDD (Tables 1/2) and RankIC
    (Table 4) on ``universe``; {} without published numbers."""
    out = {}
    label = report.model_label(model)
    for table in ("portfolio", "rankic"):
        try:
            rep = report.reported(table, universe)
        except ValueError:
            continue
        for r in rep[rep["model"] == label].itertuples():
            out[r.metric] = (r.value, r.pm)
    return out


def _reached(value: float, paper: tuple, metric: str) -> str:
    """``exceeded`` (beyond the paper's ± range in the metric's good direction), ``reached`` (inside the
    range) or ``not reached``."""
    mean, pm = paper
    pm = 0.0 if not np.isfinite(pm) else pm
    sign = -1.0 if metric in report.LOWER_IS_BETTER else 1.0
    if sign * (value - mean) > pm:
        return "exceeded"
    return "reached" if sign * (value - mean) >= -pm else "not reached"


def _delta_ci(row) -> str:
    """A change over seeds as text: mean, and with 2+ seeds its 95% t-interval (:func:`report.mean_interval`)."""
    text = report._num(row["mean"], 3, signed=True)
    lo, hi = report.mean_interval(row["mean"], row["std"], int(row["n"]))
    if np.isfinite(lo):
        text += f", 95% CI [{report._num(lo, 3, signed=True)}, {report._num(hi, 3, signed=True)}]"
    return text


def audit_text(at: pd.DataFrame, universe: str, model: str, metrics=WATERFALL_METRICS) -> str:
    """A generated paragraph for one model: with every switch on (the last cumulative step that ran),
    does it reach the paper's published STORM numbers (within or beyond the paper's ± range, in the
    metric's direction), and which switches move each metric most (alone, and along the cumulative
    path; with 2+ seeds a switch's change carries its 95% t-interval over seeds, each seed's change
    measured against its own clean run). Computed from ``at`` (:func:`audit_frame`), not written by hand."""
    label = report.model_label(model)
    sel = at[(at["universe"] == universe) & (at["model"] == model)] if len(at) else at
    if sel.empty:
        return f"**{label}, {universe.upper()}**: no finished audit run yet: nothing to read."
    paper = paper_values(universe, "storm")
    parts, reach = [], []
    for metric in metrics:
        cum = audit_means(sel, universe, model, metric)
        if cum.empty or "clean" not in cum.index:
            continue
        last = cum.index[-1]
        text = f"{metric} {_fmt(cum['clean'])} clean → {_fmt(cum.iloc[-1])} at `{last}`"
        if metric in paper:
            verdict = _reached(cum.iloc[-1], paper[metric], metric)
            reach.append(verdict != "not reached")
            text += f" (paper STORM {_fmt(paper[metric][0])} ± {_fmt(paper[metric][1])}: {verdict})"
        g = sel[(sel["metric"] == metric) & (sel["kind"] == "alone")].groupby("step")["delta"]
        alone = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).dropna(subset=["mean"])
        if len(alone):
            top = alone["mean"].abs().sort_values(ascending=False).index[:2]
            text += "; alone, the largest moves are " + ", ".join(
                f"`{s}` ({_delta_ci(alone.loc[s])})" for s in top)
        steps = cum.diff().dropna()
        if len(steps):
            s = steps.abs().idxmax()
            text += f"; along the cumulative path, `{s}` ({report._num(steps[s], 3, signed=True)})"
        parts.append(f"- {text}.")
    if not parts:
        return f"**{label}, {universe.upper()}**: the clean baseline run is missing: no deltas to read."
    final = audit_steps(model, universe, [0], "cpu")["step"].iloc[-1]   # the steps do not depend on seeds/profile
    full = (sel["step"] == final).any()
    head = (f"**{label}, {universe.upper()}**: with " + ("every switch on" if full else
            "the switches that ran so far (some cumulative steps are missing)") + ", ")
    if reach:
        head += (f"the paper's published STORM values are reached (within the paper's ± range or beyond it) for "
                 f"{sum(reach)} of {len(reach)} metrics "
                 f"({', '.join(k for k, ok in zip([k for k in metrics if k in paper], reach) if ok) or 'none'}); "
                 "from (c) on the steps are read in the official convention, the paper's ASR is APY/AVO. ")
    n = sel.groupby("step")["seed"].nunique().max()
    return head + f"Means over {int(n)} seed(s):\n\n" + "\n".join(parts)


def missing_text(plan: pd.DataFrame) -> str:
    """Markdown naming the plan's runs that are not finished (with the command that runs each)."""
    todo = plan[~plan["finished"].astype(bool)] if len(plan) else plan
    if todo.empty:
        return f"All {len(plan)} audit runs are finished."
    lines = [f"**{len(todo)} of {len(plan)} audit runs are missing** (left out of the tables and charts; "
             "rerun with `-p run_missing True`, or run them with):", "", "```bash"]
    lines += [s.command() for s in todo["spec"]]
    return "\n".join(lines + ["```"])


def audit_styled(at: pd.DataFrame, universe: str, model: str, seeds, profile: str):
    """:func:`audit_summary` styled for a notebook, with a caption naming what the cells are."""
    table = audit_summary(at, universe, model, seeds, profile)
    return table.style.set_table_styles(TABLE_CSS, overwrite=False).set_caption(
        f"{universe.upper()}, {report.model_label(model)}, test split: mean ± std over seeds (n); "
        "Δ clean = value − "
        "the clean run of the same seed; column convention = the metric convention the step is read with "
        "(official from (c) on); published = the paper's mean ± range over 10 runs (its ASR is APY/AVO)")


def audit_waterfall(at: pd.DataFrame, universe: str, model: str, metrics=WATERFALL_METRICS) -> dict:
    """metric -> :func:`audit_means` of the cumulative path (the input of :func:`storm_lib.plots.waterfall`)."""
    return {k: audit_means(at, universe, model, k) for k in metrics}


def audit_paper_lines(universe: str, model: str, metrics=WATERFALL_METRICS) -> dict:
    """metric -> [(label, published mean, ± range)]: paper STORM first, then the model's own row."""
    out: dict = {}
    for name in dict.fromkeys(["storm", model]):
        for k, (v, pm) in paper_values(universe, name).items():
            if k in metrics:
                out.setdefault(k, []).append((f"paper {report.model_label(name)}", v, pm))
    return out


def switch_table(styled: bool = False):
    """The audit switches (:data:`storm_lib.audit.SWITCHES`): what the official code does, what changes
    in a run, how it is turned on, the models it applies to and the official-code sections."""
    from . import audit

    rows = {}
    for name, sw in audit.SWITCHES.items():
        how = ([f"protocol {sw.protocol}"] if sw.protocol else []) + [f"{k}={v}" for k, v in sw.options]
        how += [f"read with convention {sw.convention}"] if sw.convention else []
        rows[f"({sw.letter}) {name}"] = {"official code": sw.description, "what changes": sw.changes,
                                         "switch": ", ".join(how), "models": ", ".join(sw.models or ["all"]),
                                         "OC": ", ".join(sw.refs)}
    out = pd.DataFrame.from_dict(rows, orient="index").rename_axis("switch")
    if not styled:
        return out
    return out.style.set_properties(**{"text-align": "left"}).set_table_styles(TABLE_CSS, overwrite=False)

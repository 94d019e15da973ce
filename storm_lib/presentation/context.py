"""The notebooks' context: parameters, data requirements and runs (one module: how a notebook finds its
data directory, universes and results lives here).

:func:`setup` normalises the papermill parameters (a list or a comma string for ``universes`` /
``models`` / ``stocks``, an int, a list or a comma string for ``seeds``), checks them and calls
:func:`require_data`, which stops the notebook with a message naming every way to get data when a
universe cannot be loaded (never falling back to other data). :func:`ensure_runs` prints its plan
(cached / to run / missing) and runs what is missing through :func:`storm_lib.run.run_grid`.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# tqdm.auto (imported by the runner) warns in a kernel without ipywidgets; the notebooks use no bars
warnings.filterwarnings("ignore", message="IProgress not found")

from .. import data as data_mod  # noqa: E402
from ..executors import EXECUTORS  # noqa: E402
from ..floors import FLOORS  # noqa: E402
from ..metrics import CONVENTIONS  # noqa: E402
from ..models import model_version  # noqa: E402
from .. import config  # noqa: E402
from ..panel import PROTOCOLS, Protocol, get_protocol  # noqa: E402
from ..profiles import PROFILES  # noqa: E402
from .. import schedule  # noqa: E402
from ..run import (SPEC_COLUMNS, RunSpec, cpu_model, grid, is_finished, known_models, list_runs,  # noqa: E402
                   find_finished, has_data, results_root, run_dir, run_grid, run_timings)
from ..tasks import RunCache, RunContext  # noqa: E402
from ..utils import REPO_ROOT, shown_path  # noqa: E402  (re-exported for the pages)
from .fmt import _fmt_duration  # noqa: E402
from .paper import model_label  # noqa: E402

#: the rows of paper Tables 1/2 (portfolio) in the paper's order, as registry names
PORTFOLIO_MODELS = ("market", "lightgbm", "lstm", "transformer", "cafactor", "factorvae", "hirevae",
                    "storm", "storm_wo_ts", "storm_wo_cs")
#: the rows of Table 4 (RankIC): no Market Index (it has no scores)
RANKIC_MODELS = PORTFOLIO_MODELS[1:]
#: the trivial floors (storm_lib.floors), deterministic pseudo-models of the portfolio task (seed 0)
FLOOR_MODELS = tuple(FLOORS)
STORM_MODELS = ("storm", "storm_wo_ts", "storm_wo_cs")
TRADING_STOCKS = ("AAPL", "JPM", "IBM", "INTC", "MSFT")
PORTFOLIO_METRICS = ("APY", "CW", "CR", "ASR", "MDD", "AVO")
IC_METRICS = ("RankIC", "RankICIR")
CODEBOOK_SIZES = (128, 256, 512, 1024, 2048)

GET_DATA = (
    "Ways to get data (nothing else is tried; the notebook never falls back to other data):\n"
    "  1. point $STORM_DATA_DIR at a directory holding dj30.parquet, sp500.parquet and indices.parquet\n"
    "     (e.g. export STORM_DATA_DIR=../shared/data: a relative path is read from the working directory,\n"
    "     else from the repository root), or pass it as the notebook parameter:\n"
    "     papermill ... -p data_dir /path/to/data\n"
    "  2. download into the local cache: storm download dj30 sp500 indices\n"
    "     (needs pip install -e '.[download]' and access to Yahoo Finance)\n"
    "  3. use the embedded offline sample (20 S&P 500 stocks, close only, no paper numbers to compare):\n"
    "     papermill ... -p universes sample -p protocol sample\n"
    "  4. your own price file (parquet/CSV in the schema of storm_lib.data): -p universes /path/to/file.parquet\n"
    "     with split dates -p split train=START:END,valid=START:END,test=START:END\n"
    "Pages of committed runs need no data: -p run_missing False (what `make book` does)."
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


def require_data(universes, data_dir=None, cache: RunCache | None = None, required: bool = True) -> dict[str, str]:
    """Load every universe's prices and market index once (kept in ``cache``); raise :class:`MissingData`
    naming the ways to get data when one cannot be loaded. Returns universe -> a short description.

    A universe is a name (``dj30``, ``sp500``, ``sample``, ``<name>.parquet`` in the data directory) or a
    price file. With ``required=False`` (pages of finished runs only) a universe without data is left
    out of the result instead: its runs are then found from their run records
    (:func:`storm_lib.run.find_finished`)."""
    ctx = RunContext(data_dir=_none(data_dir), cache=cache if cache is not None else RunCache(), progress=False)
    found = {}
    for u in as_list(universes):
        try:
            data_mod.find_universe(u, _none(data_dir))
        except data_mod.DataError as exc:
            raise NotebookStop(str(exc)) from None
        except FileNotFoundError:
            pass  # a data directory that does not exist: reported below
        if not required and not has_data(u, _none(data_dir)):
            continue
        try:
            prices = ctx.prices(u)
            index = ctx.market_index(u) if ctx.has_index(u) else None
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
        bench = (f"index {index.name}" if index is not None else
                 "benchmark: equal-weight buy-and-hold of its stocks (no market index)")
        found[u] = f"{prices['ticker'].nunique()} stocks, {first:%Y-%m-%d}..{last:%Y-%m-%d}, {bench}"
    return found


def data_hashes(universes, data_dir=None, cache: RunCache | None = None) -> pd.DataFrame:
    """sha256 of each universe's prices (:func:`storm_lib.features.data_hash`) and market index series."""
    ctx = RunContext(data_dir=_none(data_dir), cache=cache if cache is not None else RunCache(), progress=False)
    rows = [{"universe": data_mod.universe_label(u), "prices": ctx.prices_hash(u),
             "index": f"{ctx.market_index(u).name} {ctx.index_hash(u)}" if ctx.has_index(u) else "equal_weight"}
            for u in as_list(universes)]
    return pd.DataFrame(rows, columns=["universe", "prices", "index"])


# --------------------------------------------------------------------------- runs


def _spec_text(spec: RunSpec) -> str:
    opts = f" {spec.options_str}" if spec.options else ""
    return f"{spec.task} {spec.universe} {spec.model}{opts} ({spec.protocol}, {spec.profile}, seed {spec.seed})"


def ensure_runs(specs, run_missing: bool = True, results_dir=None, data_dir=None,
                cache: RunCache | None = None, echo=print, executor: str = "local", no_data=()) -> pd.DataFrame:
    """Make sure every spec has a finished run; print the plan first.

    Finished runs are read as they are ("cached"). Missing ones are executed one by one through
    :func:`storm_lib.run.run_grid` when ``run_missing`` (with ``executor="ray"``: all together, one Ray
    task each, :mod:`storm_lib.executors`) (status "done", or "failed" / "busy"), else
    listed with the command that runs them (status "missing"). Raises :class:`RunsFailed` after the
    whole plan when a run failed. Returns one row per spec: spec columns, ``status``, ``run_dir``,
    ``finished``, ``spec`` (the :class:`RunSpec`). Runs of the universes in ``no_data`` (no data at
    hand) are found from their ``run.json`` records (:func:`storm_lib.run.find_finished`; the data hash is
    not checked) and never run.
    """
    specs = list(dict.fromkeys(specs))
    cache = cache if cache is not None else RunCache()
    ctx = RunContext(data_dir=_none(data_dir), cache=cache, progress=False)
    rows = []
    for spec in specs:
        path = find_finished(spec, results_dir) if spec.universe in no_data else run_dir(spec, results_dir, ctx)
        rows.append({**spec.as_row(), "status": "cached" if path is not None and is_finished(path) else "missing",
                     "run_dir": str(path) if path is not None else "", "spec": spec})
    plan = pd.DataFrame(rows, columns=list(SPEC_COLUMNS) + ["status", "run_dir", "spec"])
    todo = plan.index[plan["status"] == "missing"]
    root = results_root(results_dir)
    echo(f"{len(plan)} run(s) needed under {shown_path(root)}: {len(plan) - len(todo)} cached, {len(todo)} "
         + ("to run now" if run_missing else "missing (run_missing=False)") + (":" if len(todo) else "."))
    est = {}  # what the missing runs should cost, from the finished runs (storm_lib.schedule)
    if len(todo):
        timings, cpu = run_timings(results_dir), cpu_model()
        est = {i: schedule.estimate_seconds(plan.at[i, "spec"], timings, cpu=cpu) for i in todo}
    for i in todo:
        echo(f"  {_spec_text(plan.at[i, 'spec'])}" + (f" (≈ {_fmt_duration(est[i])})" if est[i] is not None else ""))
    if est:
        known = [e for e in est.values() if e is not None]
        echo(f"  estimated compute of the missing runs: about {sum(known) / 3600:,.1f} one-core hours"
             + (f" for the {len(known)} with an estimate (from finished runs of the same model; "
                f"{len(todo) - len(known)} without one)" if len(known) < len(todo) else "") + ".")
    failures = []
    if run_missing:
        batch = None
        if executor != "local" and len(todo):  # one grid: the runs spread over the executor's workers
            batch = run_grid([plan.at[i, "spec"] for i in todo], results_dir, _none(data_dir), progress=False,
                             cache=cache, executor=executor)
        for k, i in enumerate(todo, 1):
            spec = plan.at[i, "spec"]
            t0 = time.perf_counter()
            res = (run_grid([spec], results_dir, _none(data_dir), progress=False, cache=cache).iloc[0]
                   if batch is None else batch.iloc[k - 1])
            plan.at[i, "status"] = res["status"]
            if res["run_dir"]:
                plan.at[i, "run_dir"] = res["run_dir"]
            took = f"{time.perf_counter() - t0:.1f} s" if batch is None else f"{res['seconds']:.1f} s on {executor}"
            note = f"done in {took}" if res["status"] == "done" else res["status"]
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
    plan["finished"] = [bool(p) and is_finished(p) for p in plan["run_dir"]]
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
    out["row"] = out["model"].map(model_label)
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
    no_data: list = field(default_factory=list)

    def __getattr__(self, name):
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    def label(self, universe: str) -> str:
        """A universe as tables and titles show it: ``DJ30``, or a price file's stem."""
        text = data_mod.universe_label(universe)
        return text.upper() if text == universe else text

    def has_paper(self, universe: str) -> bool:
        """Whether the paper has numbers to compare with: the real universes under a real protocol."""
        return universe in data_mod.UNIVERSES and self.params.get("protocol") in ("clean", "paper")

    def seeds_for(self, task: str, universe: str, model: str, options: dict | None = None,
                  protocol: str | None = None) -> list[int]:
        """The seeds to use for one (task, universe, model, options): the ``seeds`` parameter, or with
        ``seeds="all"`` every seed of a finished run of the model's current version in the results
        directory (the notebook's protocol unless ``protocol``, its profile, exactly these options), and seed 0
        when there is none."""
        seeds = self.params.get("seeds")
        if not is_all(seeds):
            return as_ints(seeds)
        if "_finished" not in self.__dict__:
            self.__dict__["_finished"] = list_runs(self.params.get("results_dir"))
        runs = self.__dict__["_finished"]
        opt = RunSpec.make(task, universe, model, options=tuple(sorted((options or {}).items()))).options_str
        sel = runs[(runs["task"] == task) & (runs["universe"] == universe) & (runs["model"] == model)
                   & (runs["protocol"] == (protocol or self.params.get("protocol")))
                   & (runs["profile"] == self.params.get("profile")) & (runs["options"].fillna("") == opt)
                   & (runs["model_version"] == model_version(model))    # runs of the model's current method
                   & ~runs["superseded"].astype(bool)]                   # ... and of its current budget
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

    def ensure(self, specs, echo=print) -> pd.DataFrame:
        """:func:`ensure_runs` with the notebook's results directory, data directory and cache."""
        plan = ensure_runs(specs, self.run_missing, self.results_dir, self.data_dir, self.cache, echo=echo,
                           executor=self.params.get("executor", "local"), no_data=tuple(self.no_data))
        self.plans.append(plan)
        return plan

    def metrics(self, plan: pd.DataFrame) -> pd.DataFrame:
        return load_metrics(plan)


TRADING_SAMPLE_NOTE = (
    "Trading (Table 3) is not run on the embedded sample: the trading task trades the five DJ30 stocks "
    "AAPL, JPM, IBM, INTC and MSFT, and the sample has only AAPL, JPM and MSFT (and the sample protocol's "
    "dates). Get the DJ30 data (set STORM_DATA_DIR / -p data_dir, or `storm download dj30 indices`) and use "
    "-p protocol clean.")


_SHOW_WARNING = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Data-quality warnings as one plain line on the page (the default shows the source file's path on
    the machine that built it); every other warning as usual."""
    if issubclass(category, data_mod.DataQualityWarning):
        print(f"data quality: {message}")
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


def setup(notebook: str, *, conventions=CONVENTIONS, **params) -> Context:
    """Normalise and check the notebook's parameters, then check its data (:func:`require_data`).

    Known keys: ``universes`` / ``universe``, ``models``, ``stocks``, ``seeds``, ``sizes`` (lists from a
    list or a comma string), ``protocol``, ``profile``, ``convention``, ``data_dir``, ``results_dir``
    (None -> $STORM_DATA_DIR / the runner default), ``run_missing``, ``executor`` (``local`` or ``ray``: how
    missing runs are computed, :mod:`storm_lib.executors`; a Ray cluster's address from ``$RAY_ADDRESS``);
    any other key is kept as given.
    Prints what will be used.
    """
    warnings.showwarning = _show_warning
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
    split, allow_short = _none(p.get("split")), as_bool(p.get("allow_short", False))
    if split is not None:  # split dates given by the user: the protocol of every run
        text = str(split) if "=" in str(split) else str(config.user_path(split))
        try:
            p["protocol"] = Protocol.parse(text, allow_short=True if allow_short else None).text()
        except ValueError as exc:
            raise NotebookStop(f"split: {exc}") from None
    elif p["protocol"] not in PROTOCOLS:
        try:
            p["protocol"] = get_protocol(p["protocol"]).text()
        except ValueError:
            _check_choice("protocol", p["protocol"], tuple(PROTOCOLS) + ("split dates via -p split",))
    _check_choice("profile", p["profile"], tuple(PROFILES))
    if "convention" in p:
        _check_choice("convention", p["convention"], tuple(conventions))
    p["data_dir"] = _none(p.get("data_dir"))
    p["results_dir"] = _none(p.get("results_dir"))
    if p["results_dir"] is not None:  # relative: as typed where papermill ran (config.user_path)
        p["results_dir"] = str(config.user_path(p["results_dir"]))
    if p["data_dir"] is not None:
        p["data_dir"] = str(config.user_path(p["data_dir"]))
    p["run_missing"] = as_bool(p.get("run_missing", True))
    p["executor"] = str(_none(p.get("executor")) or "local").strip()
    _check_choice("executor", p["executor"], EXECUTORS)
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
    for k, u in enumerate(universes):
        try:
            kind, path = data_mod.find_universe(u, p["data_dir"])
        except data_mod.DataError as exc:
            raise NotebookStop(str(exc)) from None
        except FileNotFoundError:
            kind, path = "paper", None
        if kind == "file":  # absolute: the run spec must not depend on the working directory
            universes[k] = str(path)
            if u in (p.get("universes") or []):
                p["universes"] = [str(path) if x == u else x for x in p["universes"]]
        if u == data_mod.SAMPLE and p["protocol"] in ("clean", "paper"):
            raise NotebookStop("the embedded sample ends 2022-12-28, before the clean/paper test period: "
                               "run it with -p protocol sample (e.g. -p universes sample -p protocol sample)")
    if "seeds" in p and not p["seeds"]:
        raise NotebookStop("no seed given: use e.g. -p seeds 0 or -p seeds 0,1,2")
    ctx = Context(notebook, p, raw, notes=notes)
    ctx.data = require_data(universes, p["data_dir"], ctx.cache, required=p["run_missing"])
    ctx.no_data = [u for u in universes if u not in ctx.data]
    shown = {k: v for k, v in p.items() if k not in ("data_dir", "results_dir")}
    print(f"{notebook}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    print(f"results: {shown_path(results_root(p['results_dir']))}")
    for u, desc in ctx.data.items():
        print(f"data {ctx.label(u)}: {desc}")
    for u in ctx.no_data:
        print(f"data {ctx.label(u)}: none at hand; its finished runs are found from their run.json records "
              "(data hashes as recorded, not checked)")
    if p["protocol"] not in PROTOCOLS:
        print(f"split dates: {p['protocol']}")
    else:  # the dates this notebook evaluates, whatever its text says about the paper's
        proto = get_protocol(p["protocol"])
        print(f"protocol {proto.name}: " + ", ".join(
            f"{s} {getattr(proto, s)[0]:%Y-%m-%d}..{getattr(proto, s)[1]:%Y-%m-%d}" for s in ("train", "valid", "test")))
    if p["protocol"] == "sample":
        print("embedded sample / sample protocol: OUR NUMBERS ONLY, the paper has none to compare with")
    for note in notes:
        print(note)
    return ctx


# --------------------------------------------------------------------------- tables

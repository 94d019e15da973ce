"""Resumable experiment runner: one directory of small files per run, feeding every table of the paper.

A run is a :class:`RunSpec` (task, universe, model, protocol, profile, seed, model options). Its
directory is ``results/<task>/<universe>/<model>[-k=v...]/<protocol>-<profile>-seed<k>-<hash8>/`` and
holds ``run.json`` (spec, resolved configuration, identity, versions, hardware, timings, the command
to rerun it), ``metrics.csv`` (long: key columns, ``metric``, ``value``) and the task's tables. The
directory is built as ``.<name>.partial`` beside it and renamed when complete, so **a run directory
that exists is a finished run**: :func:`run_grid` skips it, and an interrupted grid reruns only what
is missing. ``hash8`` covers everything that can change the result: the spec, the resolved profile,
the task's fixed settings, the data (prices and market index), ``FEATURE_VERSION`` and
:data:`RESULTS_VERSION` (bump it by hand when outputs change meaning). A changed configuration is a new
directory, never a stale hit. Not hashed: package versions, hardware, device (recorded in run.json).

    python -m storm_lib.run --task portfolio --universe dj30 --model storm --seed 3 [--profile cpu]
    python -m storm_lib.run --task portfolio --universe dj30 --model lightgbm lstm --seed 0 1 2
    python -m storm_lib.run ... --option codebook_size=1024 [--option codebook_size=256]  # a sweep
    python -m storm_lib.run --list | --dry-run ...

Results root: ``--results-dir`` / ``results_dir=``, else ``$STORM_RESULTS_DIR``, else ``results/`` at
the repository root. Notebooks read :func:`load_results` (every finished run's metrics with the spec
columns) and :func:`load_table`.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

if __name__ == "__main__":  # the command line: refuse a misspelled --option before the heavy imports
    from .option_table import precheck

    precheck(sys.argv[1:])

import pandas as pd

from . import data as data_mod
from . import executors, schedule
from .features import FEATURE_VERSION
from .models import model_version
from .panel import PROTOCOLS, get_protocol, split_indices
from .profiles import PROFILES, budget_options, get_profile, profile_identity
from .tasks import TASKS, RunCache, RunContext, RunOutput
from .utils import atomic_write, shown_path

#: bump by hand whenever a task's outputs change meaning (old run directories then stop matching)
RESULTS_VERSION = 1
RESULTS_ENV = "STORM_RESULTS_DIR"
UNIVERSES = ("dj30", "sp500", "sample")
MARKET = "market"
SPEC_COLUMNS = ("task", "universe", "model", "options", "protocol", "profile", "seed")
PARTIAL_SUFFIX = ".partial"


def _freeze(value):
    if isinstance(value, dict):
        raise ValueError(f"option values must be scalars or lists, got a dict {value!r}")
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class RunSpec:
    """One run. ``options`` are model overrides as sorted (key, value) pairs; a dict is accepted."""

    task: str          # "portfolio" | "trading" (see storm_lib.tasks.TASKS)
    universe: str      # "dj30" | "sp500" | "sample" | a price file (absolute path) | a name in the data dir
    model: str         # portfolio: a storm_lib.models name (MODEL_NAMES) or "market"; see known_models(task)
    protocol: str = "clean"  # a name of storm_lib.panel.PROTOCOLS or split dates (Protocol.text())
    profile: str = "cpu"
    seed: int = 0
    options: tuple = ()

    def __post_init__(self):
        opts = self.options.items() if isinstance(self.options, dict) else (self.options or ())
        opts = tuple(sorted((str(k), _freeze(v)) for k, v in opts))
        if len({k for k, _ in opts}) != len(opts):
            raise ValueError(f"duplicated option keys in {opts}")
        object.__setattr__(self, "options", opts)
        object.__setattr__(self, "seed", int(self.seed))

    @classmethod
    def make(cls, task: str, universe: str, model: str, protocol: str = "clean", profile: str = "cpu",
             seed: int = 0, options: dict | tuple | None = None) -> "RunSpec":
        return cls(task, universe, model, protocol, profile, seed, options or ())

    @property
    def options_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.options}

    @property
    def options_str(self) -> str:
        """``k=v,k2=v2`` (empty without options): the ``options`` column of summaries and results."""
        return ",".join(f"{k}={_fmt(v)}" for k, v in self.options)

    def as_row(self) -> dict:
        return {"task": self.task, "universe": self.universe, "model": self.model, "options": self.options_str,
                "protocol": self.protocol, "profile": self.profile, "seed": self.seed}

    def command(self) -> str:
        """The command line that reruns this spec."""
        parts = ["python", "-m", "storm_lib.run", "--task", self.task, "--universe", self.universe,
                 "--model", self.model, "--protocol", self.protocol, "--profile", self.profile,
                 "--seed", str(self.seed)]
        for k, v in self.options:
            parts += ["--option", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
        return " ".join(shlex.quote(p) for p in parts)


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return json.dumps(v) if isinstance(v, bool) or v is None else str(v)


def grid(task: str, universes, models, protocols=("clean",), profiles=("cpu",), seeds=(0,),
         options: dict | list | None = None) -> list[RunSpec]:
    """The cartesian product as a list of specs (seeds vary fastest). ``options``: one dict for every
    run, or a list of dicts (one sweep point each)."""
    def as_list(x):
        return [x] if isinstance(x, (str, int)) else list(x)

    opt_list = [options or {}] if not isinstance(options, list) else (options or [{}])
    return [RunSpec(task, u, m, p, pr, s, o) for u, m, o, p, pr, s in itertools.product(
        as_list(universes), as_list(models), opt_list, as_list(protocols), as_list(profiles), as_list(seeds))]


def known_models(task: str) -> tuple[str, ...]:
    """The model names a task accepts: its callable's ``models`` attribute, else the return-model
    registry (:data:`storm_lib.models.MODEL_NAMES`) plus ``"market"``."""
    models = getattr(TASKS.get(task), "models", None)
    if models is None:
        from .models import MODEL_NAMES

        models = MODEL_NAMES + (MARKET,)
    return tuple(models)


def check_spec(spec: RunSpec, data_dir=None) -> None:
    """Raise ``ValueError`` naming the valid choices when a spec field is unknown, before anything runs:
    task, universe (a name, the sample, a price file or a name in the data directory), model, protocol
    (a name or split dates), profile, and every option key of the portfolio task (per model: its
    :func:`storm_lib.models.option_keys` plus the task options)."""
    if spec.task not in TASKS:
        raise ValueError(f"unknown task {spec.task!r}; known: {', '.join(TASKS)}")
    try:
        data_mod.find_universe(spec.universe, data_dir)
    except data_mod.DataError as exc:
        raise ValueError(str(exc)) from None
    checks = [("model", spec.model, known_models(spec.task)), ("profile", spec.profile, tuple(PROFILES))]
    for what, value, known in checks:
        if value not in known:
            raise ValueError(f"unknown {what} {value!r} for task {spec.task!r}; known: {', '.join(known)}")
    get_protocol(spec.protocol)  # a name or split dates; raises naming both
    if spec.task == "portfolio":  # audit and model options fail here, not mid-grid
        from .tasks.portfolio import RESERVED, TASK_OPTIONS, split_options, task_settings

        if spec.model == MARKET and set(spec.options_dict) - {"benchmark"}:
            raise ValueError("the market index row takes no options but benchmark=")
        task_settings(spec.model, spec.options_dict)
        from .models import MODEL_NAMES

        model_options = split_options(spec.options_dict)[1]
        if spec.model in MODEL_NAMES and model_options:  # return models; pseudo-models check their own
            _check_model_options(spec.model, model_options, RESERVED, TASK_OPTIONS)
    elif spec.model == MARKET and spec.options:
        raise ValueError("the market index row takes no model options")


def valid_model_options(model: str, reserved, task_options) -> tuple[set[str], str]:
    """The option keys a portfolio run of registry model ``model`` accepts (its keywords, minus the reserved
    ones) and how an error message lists them (LightGBM: its own keys, then "any LightGBM parameter")."""
    from .models import model_class, option_keys

    valid = option_keys(model) - set(reserved)
    if model.startswith("storm"):  # network sizes go through model={...} (tasks.portfolio.model_kwargs)
        valid = (valid - {"model"}) | model_class(model).network_keys()
    if model == "lightgbm":
        listed = (", ".join(sorted(k for k in valid if k in ("num_boost_round", "early_stopping_rounds",
                                                              "label_norm")))
                  + ", or any LightGBM parameter (learning_rate, num_leaves, ...)")
    else:
        listed = ", ".join(sorted(valid))
    return valid, listed


def unknown_options_message(model: str, bad, listed: str, task_options) -> str:
    return (f"unknown option(s) {sorted(bad)} for model {model!r}. Valid model options: {listed}; "
            f"task options: {', '.join(task_options)}")


def _check_model_options(model: str, options: dict, reserved, task_options) -> None:
    """Unknown option keys of ``model`` are an error naming the valid ones (the model's keywords and the
    portfolio task's options)."""
    valid, listed = valid_model_options(model, reserved, task_options)
    bad = sorted(k for k in options if k not in valid)
    if bad:
        raise ValueError(unknown_options_message(model, bad, listed, task_options))


def check_dates(spec: RunSpec, ctx: RunContext) -> None:
    """Check the protocol against the universe's price calendar (loads the prices): a split that the
    data cut short, or that starts before the data allow, fails here, before the run starts."""
    dates = pd.DatetimeIndex(ctx.prices(spec.universe)["date"].unique())
    window = get_profile(spec.profile).window
    for split in ("train", "valid", "test"):
        split_indices(dates, window, spec.protocol, split)


# ----------------------------------------------------------------------------------------------
# Identity and layout
# ----------------------------------------------------------------------------------------------


def results_root(results_dir: str | os.PathLike | None = None) -> Path:
    """``results_dir``, else ``$STORM_RESULTS_DIR``, else ``results/`` at the repository root (in the
    working directory for a non-editable install)."""
    value = results_dir if results_dir is not None else os.environ.get(RESULTS_ENV)
    if value:
        return Path(value).expanduser()
    repo = Path(__file__).resolve().parent.parent
    return (repo if (repo / "pyproject.toml").is_file() else Path.cwd()) / "results"


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _task_config(spec: RunSpec) -> dict:
    """The task's fixed settings for this run: ``task.config``, a dict, or a callable of the spec (so a
    setting that only one model uses, e.g. an RL agent's budget, is hashed into that model's runs only)."""
    cfg = getattr(TASKS[spec.task], "config", None)
    if callable(cfg):
        cfg = cfg(spec)
    return dict(cfg or {})


def identity(spec: RunSpec, ctx: RunContext) -> dict:
    """Everything the identity hash covers (loads the universe's prices to hash them)."""
    out = code_identity(spec)
    out["data"] = _data_identity(spec, ctx)
    keys = ("spec", "profile", "budget", "task_config", "data", "feature_version", "results_version",
            "model_version")
    return {k: out[k] for k in keys if k in out}


def code_identity(spec: RunSpec) -> dict:
    """The identity without the data hashes: what can be checked with no data at hand."""
    out = {
        "spec": {**asdict(spec), "options": spec.options_dict},
        "profile": profile_identity(spec.profile),  # no note; new training fields only when set
        "task_config": _task_config(spec),
        "feature_version": FEATURE_VERSION,
        "results_version": RESULTS_VERSION,
    }
    version = model_version(spec.model)
    if version > 1:  # absent at version 1, so the directories of unchanged models keep their hashes
        out["model_version"] = version
    budget = budget_options(spec.profile, spec.universe, spec.model, spec.options_dict)
    if budget is not None:  # the profile's chosen budget (absent without one: older runs keep their hashes)
        out["budget"] = budget
    return out


def budget_twin(spec: RunSpec) -> RunSpec | None:
    """The same run with the profile's training budget as explicit options (``budget_windows`` and the
    universe's ``budget_options``: a run of the budget study, :mod:`storm_lib.budget`), or None when the
    profile sets no budget for ``spec``. Both train the same model with the same settings and seed, so
    their outputs are the same. A trading run of an RL method: :func:`_agent_twin`."""
    if spec.task == "trading":
        twin = _agent_twin(spec)
        if twin is not None:
            return twin
    budget = budget_options(spec.profile, spec.universe, spec.model, spec.options_dict)
    if budget is None:
        return None
    return RunSpec.make(spec.task, spec.universe, spec.model, spec.protocol, spec.profile, spec.seed,
                        {**budget, **spec.options_dict})


def _agent_twin(spec: RunSpec) -> RunSpec | None:
    """Trading, RL methods: the plain run (no options) and the agents' budget-study run whose options
    ``agent_timesteps`` / ``agent_eval_every`` are the profile's budget for the method
    (:func:`storm_lib.trading.experiment.agent_budget`) train the same agents: each is the other's twin,
    so whichever finishes first serves both. None for any other spec."""
    from .trading.experiment import agent_budget

    steps = agent_budget(spec.model, spec.profile)
    if steps is None:
        return None
    explicit = RunSpec.make(spec.task, spec.universe, spec.model, spec.protocol, spec.profile, spec.seed,
                            {"agent_timesteps": steps["timesteps"], "agent_eval_every": steps["eval_every"]})
    if not spec.options:
        return explicit
    if spec.options == explicit.options:
        return replace(explicit, options=())
    return None


def _adopt(spec: RunSpec, ctx: RunContext, twin_dir: Path, partial: Path, started: str, t0: float,
           argv: list[str] | None) -> None:
    """Fill ``partial`` with the finished run ``twin_dir`` of :func:`budget_twin` (its tables and facts)
    under this spec's identity, recording where they came from (``adopted_from``: the twin's directory
    relative to the results root, its hash and compute). ``compute_seconds`` of the adopted run is the
    copy's own time: the training is counted once, in the twin."""
    twin_record = json.loads((twin_dir / "run.json").read_text())
    for f in twin_dir.iterdir():
        if f.is_file() and f.name != "run.json":
            shutil.copy2(f, partial / f.name)
    root = twin_dir.parents[3]  # <root>/<task>/<universe>/<model>/<run>
    record = {
        **twin_record,
        "spec": {**asdict(spec), "options": spec.options_dict},
        "hash": run_hash(spec, ctx),
        "identity": identity(spec, ctx),
        "config": {**(twin_record.get("config") or {}), "options": spec.options_dict},
        "adopted_from": {"run": twin_dir.relative_to(root).as_posix(), "hash": twin_record.get("hash"),
                         "compute_seconds": compute_seconds(twin_dir, twin_record)},
        "started": started,
        "finished": _now(),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "command": spec.command(),
        "argv": None if argv is None else [shown_path(a) if os.path.isabs(a) else a for a in argv],
    }
    (partial / "owner.json").unlink(missing_ok=True)
    atomic_write(partial / "run.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=str) + "\n"))


def _data_identity(spec: RunSpec, ctx: RunContext) -> dict:
    """Hashes of the data a run reads: the prices, the market index (``equal_weight`` for a universe
    without one) and, with a ``benchmark`` option, the series it names."""
    out = {"prices": ctx.prices_hash(spec.universe), "index": ctx.index_hash(spec.universe)}
    bench = spec.options_dict.get("benchmark")
    if bench is not None:
        out["benchmark"] = ctx.benchmark_hash(str(bench))
    return out


def run_hash(spec: RunSpec, ctx: RunContext) -> str:
    return hashlib.sha256(_canonical(identity(spec, ctx)).encode()).hexdigest()


def _slug(text: str, limit: int = 80) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)[:limit]


def protocol_slug(protocol: str) -> str:
    """The protocol's part of a run directory name: its name, or ``split-<sha8>`` for split dates."""
    if protocol in PROTOCOLS:
        return protocol
    return "split-" + hashlib.sha256(str(protocol).encode()).hexdigest()[:8]


def universe_slug(universe: str) -> str:
    """The universe's folder: its name, or a price file's stem (the run hash holds the data hash, so two
    files of the same stem never share a run directory)."""
    return _slug(data_mod.universe_label(universe))


def run_dir(spec: RunSpec, results_dir=None, ctx: RunContext | None = None, *, data_dir=None) -> Path:
    """Where ``spec``'s run lives (whether or not it is finished)."""
    ctx = ctx or RunContext(data_dir=data_dir, progress=False)
    model = spec.model + "".join(f"-{_slug(k)}={_slug(_fmt(v))}" for k, v in spec.options)
    name = f"{protocol_slug(spec.protocol)}-{spec.profile}-seed{spec.seed}-{run_hash(spec, ctx)[:8]}"
    return results_root(results_dir) / spec.task / universe_slug(spec.universe) / _slug(model, 120) / name


def find_finished(spec: RunSpec, results_dir=None) -> Path | None:
    """The finished run of ``spec`` found from the run records alone, with no data at hand: the run
    directory whose ``run.json`` has this spec and the identity of the current code (profile, task
    settings, feature and results versions), whatever data it was run on; None when there is none.

    Without data the data hash cannot be checked, so several matching runs (the same spec on different
    data) are an error naming them: give the data then (:func:`run_dir` checks the hash)."""
    folder = results_root(results_dir) / spec.task / universe_slug(spec.universe)
    model = spec.model + "".join(f"-{_slug(k)}={_slug(_fmt(v))}" for k, v in spec.options)
    folder = folder / _slug(model, 120)
    if not folder.is_dir():
        return None
    want = _canonical(code_identity(spec))
    found = []
    for path in sorted(folder.glob(f"{protocol_slug(spec.protocol)}-{spec.profile}-seed{spec.seed}-*/run.json")):
        try:
            ident = json.loads(path.read_text()).get("identity") or {}
        except (OSError, ValueError):
            continue
        ident = {k: v for k, v in ident.items() if k != "data"}
        if _canonical(ident) == want:
            found.append(path.parent)
    if len(found) > 1:
        raise ValueError(f"{len(found)} finished runs of {spec} on different data ({', '.join(p.name for p in found)}); "
                         "give the data directory to pick the one whose data hash matches")
    return found[0] if found else None


def has_data(universe: str, data_dir=None) -> bool:
    """Whether ``universe``'s prices can be read here (the data directory, the cache, a file, the sample)."""
    try:
        kind, _ = data_mod.find_universe(universe, data_dir)
        if kind == "paper":
            data_mod._locate(f"{universe}.parquet", universe, data_dir)
        return True
    except (data_mod.DataError, FileNotFoundError):
        return False


def locate_run(spec: RunSpec, results_dir=None, ctx: RunContext | None = None, with_data: bool = True) -> Path | None:
    """The run directory of ``spec``: :func:`run_dir` (hash checked against the data) ``with_data``, else
    :func:`find_finished` from the run records (None when no finished run matches)."""
    if with_data:
        return run_dir(spec, results_dir, ctx)
    return find_finished(spec, results_dir)


def is_finished(path: str | os.PathLike) -> bool:
    return (Path(path) / "run.json").is_file()


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


# ----------------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------------


def versions() -> dict:
    from importlib import metadata

    from . import __version__

    out = {"python": platform.python_version(), "storm_lib": __version__}
    for dist in ("numpy", "pandas", "torch", "lightgbm"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


#: instruction-set extensions that change CPU speed (and the kernels torch picks): recorded with each run
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def cpu_model() -> dict:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has (Linux ``/proc/cpuinfo``; the
    platform's processor string elsewhere): timings are comparable between runs on the same CPU only."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu": platform.processor() or None, "cpu_flags": None}
    name = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    have = set(flags.group(1).split()) if flags else set()
    return {"cpu": name.group(1).strip() if name else None, "cpu_flags": [f for f in CPU_FLAGS if f in have]}


def hardware() -> dict:
    out = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
           **cpu_model(), "STORM_NUM_THREADS": os.environ.get("STORM_NUM_THREADS")}
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["torch_device"] = "cuda" if torch.cuda.is_available() else "cpu"  # what a fit picks by default
        out["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - provenance only
        pass
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claimed_by(partial: Path) -> dict | None:
    """The owner (``host``, ``pid``, ``started``) of a partial run directory when it is another live
    process on this host; None when no such process holds it."""
    try:
        owner = json.loads((partial / "owner.json").read_text())
    except (OSError, ValueError):
        return None
    if (owner.get("host") == socket.gethostname() and owner.get("pid") != os.getpid()
            and _pid_alive(int(owner.get("pid", -1)))):
        return owner
    return None


def _claim(partial: Path) -> str | None:
    """Take the partial directory for this process, or say who holds it.

    A partial left by a dead process is cleaned except ``scratch/`` (checkpoints to resume from).
    """
    owner_file = partial / "owner.json"
    owner = claimed_by(partial)
    if owner:
        return f"being run by process {owner['pid']} (since {owner.get('started')})"
    if partial.is_dir():
        for child in partial.iterdir():
            if child.name != "scratch":
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    partial.mkdir(parents=True, exist_ok=True)
    owner_file.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": _now()}))
    return None


def _prune_empty(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while they are empty."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _write_table(folder: Path, name: str, frame: pd.DataFrame) -> None:
    if name.endswith(".parquet"):
        atomic_write(folder / name, lambda tmp: frame.to_parquet(tmp, compression="zstd"))
        return
    out = frame if isinstance(frame.index, pd.RangeIndex) else frame.reset_index()
    atomic_write(folder / f"{name}.csv", lambda tmp: out.to_csv(tmp, index=False, float_format="%.10g"))


REUSE_FITS_ENV = "STORM_REUSE_FITS"


def fits_dir() -> Path | None:
    """Where runs share fitted models (``$STORM_CACHE_DIR/fits``), or None when ``$STORM_REUSE_FITS`` is
    0 / false / no. A run whose fit equals an earlier run's (same data, model, options that act on the
    fit, protocol, profile, seed, training code and thread count; e.g. an audit run that only changes
    the TopK-Drop variant) loads that fit instead of refitting: the same numbers, less compute."""
    if os.environ.get(REUSE_FITS_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    from .config import cache_dir

    return cache_dir("fits")


def run_one(spec: RunSpec, results_dir=None, data_dir=None, progress: bool = True,
            cache: RunCache | None = None, argv: list[str] | None = None, raise_errors: bool = False) -> dict:
    """Run ``spec`` unless finished; returns a summary row (spec columns, status, seconds, run_dir, error).

    Status: ``done``, ``skipped`` (already finished), ``adopted`` (the profile gives this run a training
    budget and the budget study's run of it, :func:`budget_twin`, is finished: its outputs are copied),
    ``busy`` (another live process is running it), ``paused`` (its fit stopped at the time limit of
    :func:`storm_lib.schedule.time_limit`, checkpoints kept; the rerun resumes it) or
    ``failed`` (``error`` holds the traceback; the partial directory is removed; ``raise_errors``
    re-raises the exception after the cleanup). An interruption
    (``KeyboardInterrupt``, a killed process) leaves ``.<name>.partial/scratch`` so the rerun resumes
    the model fit from its last checkpoint.
    """
    row = {**spec.as_row(), "status": None, "seconds": 0.0, "run_dir": None, "error": ""}
    t0 = time.perf_counter()
    ctx = RunContext(data_dir=data_dir, cache=cache if cache is not None else RunCache(), progress=progress)
    try:
        check_spec(spec, data_dir)
        check_dates(spec, ctx)
        final = run_dir(spec, results_dir, ctx)
    except Exception:  # noqa: BLE001 - reported in the summary
        if raise_errors:
            raise
        row.update(status="failed", error=traceback.format_exc(), seconds=round(time.perf_counter() - t0, 3))
        return row
    row["run_dir"] = str(final)
    if is_finished(final):
        row["status"] = "skipped"
        return row
    if final.exists():
        row.update(status="failed", error=f"{final} exists but has no run.json: not a finished run; delete it")
        return row
    partial = _partial(final)
    busy = _claim(partial)
    if busy:
        row.update(status="busy", error=busy)
        return row
    ctx.scratch = partial / "scratch"
    ctx.fits = fits_dir()
    started = _now()
    twin = budget_twin(spec)
    twin_dir = run_dir(twin, results_dir, ctx) if twin is not None else None
    try:
        if twin_dir is not None and is_finished(twin_dir):  # the budget study already ran this training
            _adopt(spec, ctx, twin_dir, partial, started, t0, argv)
            os.rename(partial, final)
            row.update(status="adopted", seconds=round(time.perf_counter() - t0, 3))
            return row
        out: RunOutput = TASKS[spec.task](spec, ctx)
        for name, frame in out.tables.items():
            _write_table(partial, name, frame)
        atomic_write(partial / "metrics.csv", lambda tmp: out.metrics.to_csv(tmp, index=False))
        wall = time.perf_counter() - t0
        record = {
            "spec": {**asdict(spec), "options": spec.options_dict},
            "hash": run_hash(spec, ctx),
            "model_version": model_version(spec.model),
            "identity": identity(spec, ctx),
            "config": {"profile": asdict(get_profile(spec.profile)), "options": spec.options_dict,
                       "task": _task_config(spec)},
            "info": out.info,
            "tables": sorted(p.name for p in partial.iterdir() if p.is_file() and p.name not in ("owner.json",)),
            "versions": versions(),
            "hardware": hardware(),
            "started": started,
            "finished": _now(),
            "wall_seconds": round(wall, 3),
            "command": spec.command(),
            "argv": None if argv is None else [shown_path(a) if os.path.isabs(a) else a for a in argv],
        }
        shutil.rmtree(ctx.scratch, ignore_errors=True)
        (partial / "owner.json").unlink(missing_ok=True)
        atomic_write(partial / "run.json",
                     lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=str) + "\n"))
        try:
            os.rename(partial, final)
        except OSError:
            if not is_finished(final):
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another process finished it first
        row.update(status="done", seconds=round(wall, 3))
    except Exception:  # noqa: BLE001 - reported in the summary
        shutil.rmtree(partial, ignore_errors=True)
        _prune_empty(partial.parent, results_root(results_dir))
        if raise_errors:
            raise
        row.update(status="failed", error=traceback.format_exc(), seconds=round(time.perf_counter() - t0, 3))
    except schedule.TimeLimitReached as stop:  # --pause-at-limit: like an interruption, but reported
        (partial / "owner.json").unlink(missing_ok=True)
        row.update(status="paused", error=str(stop), seconds=round(time.perf_counter() - t0, 3))
    except BaseException:  # interrupted: keep scratch/ (checkpoints) for the rerun, release the claim
        (partial / "owner.json").unlink(missing_ok=True)
        raise
    return row


def summary_line(row) -> str:
    """One printed line for a row of :func:`run_grid`'s summary: its status, its run directory ("not
    started" for a deferred run, whose ``run_dir`` is empty) and its seconds."""
    where = row.run_dir if isinstance(row.run_dir, (str, Path)) and str(row.run_dir) else "not started"
    return f"{row.status}: {where} ({row.seconds:.1f} s)"


def run_grid(specs, results_dir=None, data_dir=None, progress: bool = True, stop_on_error: bool = False,
             cache: RunCache | None = None, argv: list[str] | None = None, executor=None,
             time_limit: str | float | None = None, pause_at_limit: bool = False) -> pd.DataFrame:
    """Run ``specs`` in order, skipping finished ones; prices and panels are shared through ``cache``.

    Returns one row per spec: spec columns, ``status`` (done / skipped / adopted / busy / failed /
    deferred / paused), ``seconds``,
    ``run_dir``, ``error`` (the traceback of a failed run). ``stop_on_error``: re-raise the first
    failure's exception (its partial directory removed; finished runs stay finished).
    ``executor``: None / ``"local"`` (this process), ``"ray"`` (one Ray task per run, the same run
    directories) or an executor object (:mod:`storm_lib.executors`).
    ``time_limit`` (seconds or ``"2h30m"``, local executor): a run that would need to compute is started
    only when its estimate (:func:`storm_lib.schedule.estimate_seconds`, times
    :data:`~storm_lib.schedule.MARGIN`) fits in the time left; otherwise it is ``deferred`` (``error``
    says why) and the next spec is tried. ``pause_at_limit``: a run that does not fit starts anyway and its
    torch fit pauses at the last epoch boundary before the limit (``paused``, checkpoints kept:
    :mod:`storm_lib.schedule`); the specs after it are deferred.
    """
    from tqdm.auto import tqdm

    specs = list(specs)
    executor = executors.get_executor(executor)   # a name, None or an executor object (the CLI's)
    if getattr(executor, "name", None) != "local":
        if time_limit is not None:
            raise ValueError("a time limit works with the local executor only (Ray: set the cluster job's own limit)")
        rows = executor.run(specs, results_dir, data_dir, progress, stop_on_error, cache, argv)
        return pd.DataFrame(rows, columns=list(SPEC_COLUMNS) + ["status", "seconds", "run_dir", "error"])
    cache = cache if cache is not None else RunCache()
    deadline = None if time_limit is None else time.monotonic() + schedule.parse_duration(time_limit)
    timings = run_timings(results_dir) if deadline is not None else []
    cpu = cpu_model() if deadline is not None else None
    if pause_at_limit and deadline is None:
        raise ValueError("pause_at_limit needs a time_limit")
    rows, paused = [], False
    bar = tqdm(specs, desc="runs", disable=not progress, unit="run")
    for spec in bar:
        bar.set_postfix_str(f"{spec.universe}/{spec.model} {spec.options_str} seed {spec.seed}".replace("  ", " "))
        if paused or (pause_at_limit and time.monotonic() >= deadline):
            late = "the time limit is reached; rerun the command to run it"
        elif pause_at_limit:
            late = ""
        else:
            late = _too_long(spec, timings, deadline, results_dir,
                             RunContext(data_dir=data_dir, cache=cache, progress=False), cpu)
        if late:
            rows.append({**spec.as_row(), "status": "deferred", "seconds": 0.0, "run_dir": None, "error": late})
            if progress:
                tqdm.write(f"deferred: {spec.command()}: {late}")
            continue
        with schedule.time_limit(deadline if pause_at_limit else None):
            row = run_one(spec, results_dir, data_dir, progress, cache, argv, raise_errors=stop_on_error)
        rows.append(row)
        if row["status"] == "paused":
            paused = True
            if progress:
                tqdm.write(f"paused: {spec.command()}: {row['error']}")
        if deadline is not None and row["status"] == "done":  # its timing informs the next estimates
            timings += run_timings(runs=[(Path(row["run_dir"]), json.loads((Path(row["run_dir"]) / "run.json").read_text()))])
        if row["status"] == "failed" and progress:
            tqdm.write(f"run failed: {spec}\n{row['error']}")
    bar.close()
    return pd.DataFrame(rows, columns=list(SPEC_COLUMNS) + ["status", "seconds", "run_dir", "error"])


def _windows_done(final: Path) -> int:
    """Training windows an interrupted attempt of the run ``final`` has checkpointed (its partial's
    ``history.csv``, column ``windows``); 0 when there is none."""
    hist = _partial(final) / "scratch" / "checkpoints" / "history.csv"
    try:
        windows = pd.read_csv(hist)["windows"]
    except (OSError, KeyError, ValueError):
        return 0
    return int(windows.iloc[-1]) if len(windows) else 0


def _too_long(spec: RunSpec, timings, deadline: float | None, results_dir, ctx: RunContext,
              cpu: dict | None = None) -> str:
    """Why ``spec`` should not start before ``deadline`` (a ``time.monotonic()`` value), or ``""``: a run
    that needs no compute (finished, or adopted from its finished budget twin) always starts, and so does
    one with no estimate."""
    if deadline is None:
        return ""
    left = max(0.0, deadline - time.monotonic())
    try:
        final = run_dir(spec, results_dir, ctx)
        if is_finished(final):
            return ""
        twin = budget_twin(spec)
        if twin is not None and is_finished(run_dir(twin, results_dir, ctx)):
            return ""
    except Exception:  # noqa: BLE001 - run_one reports a bad spec
        return ""
    est = schedule.estimate_seconds(spec, timings, cpu=cpu, done_windows=_windows_done(final))
    if est is None or est * schedule.MARGIN <= left:
        return ""
    return (f"estimated {schedule.fmt_duration(est)} (x{schedule.MARGIN} margin) but "
            f"{schedule.fmt_duration(left)} of the time limit left; rerun the command to run it")


# ----------------------------------------------------------------------------------------------
# Reading results
# ----------------------------------------------------------------------------------------------


def finished_runs(results_dir=None) -> list[tuple[Path, dict]]:
    """(run directory, run.json) of every finished run under the results root, sorted by path."""
    root = results_root(results_dir)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.glob("*/*/*/*/run.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts[:-1]):
            continue
        try:
            out.append((path.parent, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    return out


def _matches(value, wanted) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, (str, int)):
        wanted = [wanted]
    return value in {type(value)(w) for w in wanted}


def _spec_of(record: dict) -> RunSpec:
    s = dict(record["spec"])
    return RunSpec(s["task"], s["universe"], s["model"], s["protocol"], s["profile"], s["seed"], s.get("options") or {})


def record_model_version(record: dict) -> int:
    """The model version a run.json records (runs written before versions were recorded: 1)."""
    return int(record.get("model_version") or (record.get("identity") or {}).get("model_version") or 1)


def _stale(record: dict) -> bool:
    """Whether a run's recorded identity (without the data hashes) is not the one the current code gives
    its spec: e.g. a profile that has since chosen a training budget for it (``Profile.budgets``). A
    record without an identity (not written by :func:`run_one`) cannot be judged: False."""
    if not record.get("identity"):
        return False
    ident = {k: v for k, v in record["identity"].items() if k != "data"}
    try:
        return _canonical(ident) != _canonical(code_identity(_spec_of(record)))
    except (ValueError, KeyError):  # a task, profile or model the code no longer has
        return True


def superseded_runs(runs: list[tuple[Path, dict]]) -> set[Path]:
    """Run directories whose model version is older than the model's current one
    (:data:`storm_lib.models.MODEL_VERSIONS`) or than the newest one present in their group (same task,
    universe, model, protocol, profile and options; seeds pooled), and runs whose recorded identity the
    current code no longer gives their spec (:func:`_stale`: the runs of an earlier training budget). A
    group with only older-version runs is thus superseded whole: its numbers are those of a method the
    code no longer runs."""
    newest: dict[tuple, int] = {}
    keyed = []
    for path, record in runs:
        row = _spec_of(record).as_row()
        key = tuple(row[k] for k in SPEC_COLUMNS if k != "seed")
        version = record_model_version(record)
        newest[key] = max(newest.get(key, version), version)
        keyed.append((path, key, version, record))
    return {path for path, key, version, record in keyed
            if version < max(newest[key], model_version(key[SPEC_COLUMNS.index("model")])) or _stale(record)}


def load_results(results_dir=None, task=None, universe=None, model=None, protocol=None, profile=None,
                 seed=None, options=None, include_superseded: bool = False) -> pd.DataFrame:
    """Every finished run's ``metrics.csv`` with the spec columns added, for mean ± std tables over seeds.

    Filters take a value or a list; ``options`` matches the ``k=v,k2=v2`` string ("" = no options).
    Per group of runs that differ only in the seed, only the runs of the newest model version present
    are returned (:data:`storm_lib.models.MODEL_VERSIONS`); older ones stay on disk and come back with
    ``include_superseded=True``, marked in the ``superseded`` column.
    Columns: task, universe, model, options, protocol, profile, seed, the task's metric columns
    (portfolio: split, convention, metric, value), model_version, superseded, run_dir.
    """
    frames = []
    filters = dict(task=task, universe=universe, model=model, protocol=protocol, profile=profile, seed=seed,
                   options=options)
    runs = finished_runs(results_dir)
    old = superseded_runs(runs)
    for path, record in runs:
        row = _spec_of(record).as_row()
        if not all(_matches(row[k], v) for k, v in filters.items()):
            continue
        if path in old and not include_superseded:
            continue
        m = pd.read_csv(path / "metrics.csv", keep_default_na=False, na_values=[""])
        for i, (k, v) in enumerate(row.items()):
            m.insert(i, k, v)
        m["model_version"] = record_model_version(record)
        m["superseded"] = path in old
        m["run_dir"] = str(path)
        frames.append(m)
    if not frames:
        return pd.DataFrame(columns=list(SPEC_COLUMNS) + ["metric", "value", "model_version", "superseded",
                                                          "run_dir"])
    return pd.concat(frames, ignore_index=True)


def compute_seconds(path: str | os.PathLike, record: dict | None = None) -> float | None:
    """The compute a finished run cost: its ``wall_seconds`` (the attempt that finished) plus the model-fit
    time of earlier, interrupted attempts, which ``wall_seconds`` does not see.

    An interrupted fit leaves either checkpoints (the run resumes: ``info.resumed_from_epoch``) or, when
    the fit had finished, a stored fit that the rerun restores (``info.fit_reused`` naming this run's own
    command). Then the per-epoch ``seconds`` of ``history.csv`` (every epoch, whichever attempt ran it)
    minus the fit time counted in ``wall_seconds`` is added. A lower bound: what an interrupted attempt
    spent after its last checkpoint (e.g. in prediction) is not recorded. A fit restored from another
    run's (e.g. an audit switch that only changes the evaluation) is that run's compute, not this one's.
    None when the record has no ``wall_seconds``."""
    path = Path(path)
    record = record if record is not None else json.loads((path / "run.json").read_text())
    wall = record.get("wall_seconds")
    if wall is None:
        return None
    info = record.get("info") or {}
    reused = info.get("fit_reused") or {}
    own_reuse = bool(reused) and reused.get("first_fitted_by") == record.get("command")
    if not (own_reuse or "resumed_from_epoch" in info) or not (path / "history.csv").is_file():
        return float(wall)
    hist = pd.read_csv(path / "history.csv")
    if "seconds" not in hist:
        return float(wall)
    counted = 0.0 if reused else float(info.get("fit_seconds") or 0.0)
    return float(wall) + max(0.0, float(hist["seconds"].sum()) - counted)


def run_timings(results_dir=None, runs=None) -> list[tuple[dict, float | None]]:
    """``(run.json record, compute_seconds)`` of every finished run (or of ``runs``: (directory, record)
    pairs): what :func:`storm_lib.schedule.estimate_seconds` reads."""
    return [(record, compute_seconds(path, record)) for path, record in (runs if runs is not None
                                                                        else finished_runs(results_dir))]


def list_runs(results_dir=None) -> pd.DataFrame:
    """One row per finished run: spec columns, finished timestamp, wall seconds (the finishing attempt),
    compute seconds (:func:`compute_seconds`: with earlier, interrupted attempts' fits), model version,
    superseded (an older model version than the newest in its group, see :func:`load_results`), adopted
    (the run is a copy of the budget-study run it names, whose compute counts there: :func:`run_one`), run_dir."""
    runs = finished_runs(results_dir)
    old = superseded_runs(runs)
    rows = [{**_spec_of(r).as_row(), "finished": r.get("finished"), "wall_seconds": r.get("wall_seconds"),
             "compute_seconds": compute_seconds(p, r), "model_version": record_model_version(r),
             "superseded": p in old, "adopted_from": (r.get("adopted_from") or {}).get("run"),
             "run_dir": str(p)} for p, r in runs]
    return pd.DataFrame(rows, columns=list(SPEC_COLUMNS) + ["finished", "wall_seconds", "compute_seconds",
                                                            "model_version", "superseded", "adopted_from",
                                                            "run_dir"])


def load_table(run: str | os.PathLike | RunSpec, name: str, results_dir=None, data_dir=None) -> pd.DataFrame:
    """Table ``name`` (``daily``, ``scores``, ``history``, ``codes`` ...) of a run directory or a finished spec."""
    path = run_dir(run, results_dir, data_dir=data_dir) if isinstance(run, RunSpec) else Path(run)
    if not is_finished(path):
        raise FileNotFoundError(f"no finished run at {path}")
    stem = name.removesuffix(".csv").removesuffix(".parquet")
    if (path / f"{stem}.parquet").is_file():
        return pd.read_parquet(path / f"{stem}.parquet")
    if (path / f"{stem}.csv").is_file():
        frame = pd.read_csv(path / f"{stem}.csv")
        if "date" in frame.columns:
            frame["date"] = pd.to_datetime(frame["date"])
            frame = frame.set_index("date")
        return frame
    have = sorted(p.stem for p in path.iterdir() if p.suffix in (".csv", ".parquet"))
    raise FileNotFoundError(f"run {path} has no table {name!r}; it has {have}")


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` -> (key, value); the value is read as JSON, else a Python literal, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option expects KEY=VALUE, got {text!r}")
    for parse in (json.loads, ast.literal_eval):
        try:
            return key.strip(), parse(raw)
        except (ValueError, SyntaxError):
            continue
    return key.strip(), raw


def option_grid(items: list[str]) -> list[dict]:
    """Options from ``--option`` items; a key given several times is a sweep (cartesian product)."""
    values: dict[str, list] = {}
    for item in items:
        k, v = parse_option(item)
        values.setdefault(k, []).append(v)
    keys = list(values)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values[k] for k in keys))] or [{}]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m storm_lib.run", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", help=f"one of {', '.join(TASKS)}")
    ap.add_argument("--universe", nargs="+", metavar="NAME|PATH",
                    help=f"one or more of {', '.join(UNIVERSES)}, a price file (.parquet/.csv in the schema of "
                         "storm_lib.data) or a name with <name>.parquet in the data directory")
    ap.add_argument("--model", nargs="+", help="one or more model names (storm, lightgbm, ...) or 'market'")
    ap.add_argument("--protocol", nargs="+", default=None,
                    help="clean (default) | paper | sample (default for --universe sample)")
    ap.add_argument("--split", default=None, metavar="DATES|FILE",
                    help="split dates instead of a named protocol: train=START:END,valid=START:END,test=START:END "
                         "(YYYY-MM-DD, inclusive) or a file holding them (text or JSON)")
    ap.add_argument("--allow-short", action="store_true",
                    help="accept a split that the data cut short (printed); otherwise it is an error")
    ap.add_argument("--profile", nargs="+", default=None, help=f"one or more of {', '.join(PROFILES)} (default cpu)")
    ap.add_argument("--seed", nargs="+", type=int, default=None, help="one or more seeds (default 0)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="model option; repeat a key to sweep it")
    ap.add_argument("--results-dir", default=None, help=f"default ${RESULTS_ENV} or results/ at the repo root")
    ap.add_argument("--data-dir", default=None, help="default $STORM_DATA_DIR")
    ap.add_argument("--list", action="store_true", help="show finished runs (filtered by the given fields)")
    ap.add_argument("--dry-run", action="store_true", help="print each run directory and whether it is finished")
    ap.add_argument("--stop-on-error", action="store_true")
    schedule.add_arguments(ap)  # --time-limit, --pause-at-limit
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    executors.add_arguments(ap)  # --executor local|ray, --address, per-run resources
    return ap


def _specs_from_args(args) -> list[RunSpec]:
    missing = [f"--{k}" for k in ("task", "universe", "model") if not getattr(args, k)]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required (or use --list)")
    if args.split and args.protocol:
        raise ValueError("give --protocol or --split, not both")
    split = None
    if args.split:
        from .panel import Protocol

        split = Protocol.parse(args.split, allow_short=True if args.allow_short else None).text()
    elif args.allow_short:
        raise ValueError("--allow-short applies to --split dates")
    options = option_grid(args.option)
    for opts in options:
        if "benchmark" in opts:
            from .tasks.portfolio import check_benchmark

            opts["benchmark"] = check_benchmark(opts["benchmark"])
    specs = []
    for universe in args.universe:
        kind, path = data_mod.find_universe(universe, args.data_dir)
        if kind == "file":  # absolute, so the run does not depend on the working directory
            universe = str(path.resolve())
        protocols = [split] if split else args.protocol or (["sample"] if universe == data_mod.SAMPLE else ["clean"])
        specs += grid(args.task, [universe], args.model, protocols, args.profile or ["cpu"], args.seed or [0],
                      options)
    for spec in specs:
        check_spec(spec, args.data_dir)
    return specs


def print_metrics(path: str | os.PathLike, split: str = "test") -> None:
    """Print a run's metrics of one split: RankIC / RankICIR, turnover, then the six portfolio metrics per
    convention (per stock and convention for the trading task)."""
    m = pd.read_csv(Path(path) / "metrics.csv", keep_default_na=False, na_values=[""])
    if not {"split", "convention", "metric", "value"} <= set(m.columns):
        return
    m = m[m["split"] == split]
    get = {(c, k): v for c, k, v in zip(m["convention"], m["metric"], m["value"])}
    head = [f"{k} {get[('standard', k)]:.4f}" for k in ("RankIC", "RankICIR") if ("standard", k) in get]
    if ("-", "turnover") in get:
        head.append(f"turnover {get[('-', 'turnover')]:.3f}")
    n = get.get(("standard", "n_days"))
    print(f"{split} split{f' ({n:.0f} days)' if n == n and n is not None else ''}: {', '.join(head)}")
    table = m[m["metric"].isin(["APY", "CW", "CR", "ASR", "MDD", "AVO"])]
    index = ["stock", "convention"] if "stock" in table.columns else "convention"  # trading: one row per stock
    table = table.pivot_table(index=index, columns="metric", values="value", aggfunc="first", sort=False)
    print(table[[c for c in ("APY", "CW", "CR", "ASR", "MDD", "AVO") if c in table.columns]]
          .to_string(float_format=lambda v: f"{v:.4f}"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 100):
        if args.list:
            runs = list_runs(args.results_dir)
            for k in ("task", "universe", "model", "protocol", "profile", "seed"):
                wanted = getattr(args, k)
                if wanted is not None:
                    runs = runs[runs[k].isin(wanted if isinstance(wanted, list) else [wanted])]
            root = results_root(args.results_dir)
            print(runs.to_string(index=False) if len(runs) else f"no finished runs under {root}")
            return 0
        try:
            specs = _specs_from_args(args)
            executor = executors.from_args(args)
            schedule.check_arguments(args.time_limit, args.pause_at_limit)
            if args.time_limit is not None and args.executor != "local":
                raise ValueError("--time-limit works with the local executor only (Ray: set the cluster job's own limit)")
            ctx = RunContext(data_dir=args.data_dir, progress=False)
            for spec in specs:  # the protocol against the data: before anything runs
                check_dates(spec, ctx)
            if args.dry_run:
                print(f"checked: {len(specs)} run(s): universes, models, options and split dates are valid")
                for spec in specs:
                    path = run_dir(spec, args.results_dir, ctx)
                    print(f"{'finished' if is_finished(path) else 'todo    '}  {path}")
                return 0
        except (ValueError, data_mod.DataError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        summary = run_grid(specs, args.results_dir, args.data_dir, progress=not args.quiet,
                           stop_on_error=args.stop_on_error, cache=ctx.cache,
                           argv=["python", "-m", "storm_lib.run", *argv], executor=executor,
                           time_limit=args.time_limit, pause_at_limit=args.pause_at_limit)
        for row in summary.itertuples():
            print("\n" + summary_line(row))
            if row.status in ("done", "skipped", "adopted"):
                print_metrics(row.run_dir)
            elif row.error:
                print(row.error.rstrip().splitlines()[-1])
        print("\n" + summary[list(SPEC_COLUMNS) + ["status", "seconds"]].to_string(index=False))
        return 1 if (summary["status"] == "failed").any() else 0


if __name__ == "__main__":
    sys.exit(main())

"""Executors: where the runs of a grid are computed (:func:`storm_lib.run.run_grid`, ``--executor``).

* ``local`` (the default): this process, one run after another, sharing prices and panels.
* ``ray``: every run is a Ray task with declared resources (:func:`run_resources`: CPUs, GPUs,
  memory per model, universe and profile), on a new local Ray instance or an existing cluster
  (``address``). Each task calls :func:`storm_lib.run.run_one`, the local executor's own code, so a
  run directory written by Ray is the one a local run writes: built as ``.<name>.partial`` and
  renamed when complete; finished runs are skipped (by the driver, before anything is submitted);
  a run that raises is reported with its traceback, leaves no directory and is retried next call.
  torch's CPU threads (``$STORM_NUM_THREADS``) are set from the task's declared CPUs.

Results reach the driver's results directory in one of two ways (``results=``):
``shared`` (every node sees the same path, e.g. NFS: tasks write there directly), ``return`` (tasks run
into a temporary directory on their node and send the finished run's files back; the driver writes
them with the same partial-then-rename step) or ``auto`` (shared when the task can see a marker file the
driver put in the results root, else return).

Ray is an optional dependency (``pip install -e ".[cluster]"``); it is imported only when the Ray
executor runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

EXECUTORS = ("local", "ray")
CPU_ONLY_MODELS = ("market", "lightgbm", "buy_and_hold", "dqn", "sac", "ppo")
#: host memory (GiB) one run needs, by universe and profile: peak RSS measured in benchmarks/RESULTS.md
#: (DJ30 cpu STORM 1.2 GB, SP500 cpu STORM 8.1 GB, SP500 panel build 4.2 GB, DJ30 paper STORM 4.5 GB), rounded up
MEMORY_GB = {("sp500", "smoke"): 6, ("sp500", "cpu"): 10, ("sp500", "paper"): 12,
             ("dj30", "smoke"): 1, ("dj30", "cpu"): 2, ("dj30", "paper"): 6,
             ("sample", "smoke"): 1, ("sample", "cpu"): 2, ("sample", "paper"): 6}
RESULTS_MODES = ("auto", "shared", "return")


def run_resources(spec, cpus: float | None = None, gpus: float | None = None,
                  memory_gb: float | None = None) -> dict:
    """The Ray resources of one run: ``{"num_cpus", "num_gpus", "memory"}`` (memory in bytes).

    Defaults: 1 CPU (on a small shared machine one torch thread is often the fastest), 2 CPUs beside
    1 GPU for a torch model at the ``paper`` profile (CPU-only models: ``market``, ``lightgbm`` and the
    RL baselines, 0 GPUs), memory from :data:`MEMORY_GB`. ``cpus`` / ``gpus`` / ``memory_gb`` override."""
    gpu = spec.profile == "paper" and spec.model not in CPU_ONLY_MODELS
    num_gpus = float(gpus) if gpus is not None else (1.0 if gpu else 0.0)
    num_cpus = float(cpus) if cpus is not None else (2.0 if num_gpus else 1.0)
    mem = memory_gb if memory_gb is not None else MEMORY_GB.get((spec.universe, spec.profile), 4)
    if num_cpus < 1 or num_gpus < 0 or mem <= 0:
        raise ValueError(f"a run needs at least 1 CPU, >= 0 GPUs and some memory; got cpus={num_cpus}, "
                         f"gpus={num_gpus}, memory_gb={mem}")
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "memory": int(mem * 2**30)}


# ----------------------------------------------------------------------------------------------
# Local
# ----------------------------------------------------------------------------------------------


class LocalExecutor:
    """This process, in order (what :func:`storm_lib.run.run_grid` does without an executor)."""

    name = "local"

    def run(self, specs, results_dir=None, data_dir=None, progress=True, stop_on_error=False, cache=None,
            argv=None) -> list[dict]:
        from .run import run_grid

        return run_grid(specs, results_dir, data_dir, progress, stop_on_error, cache, argv).to_dict("records")


# ----------------------------------------------------------------------------------------------
# Ray
# ----------------------------------------------------------------------------------------------

_WORKER_CACHE = None  # one RunCache per Ray worker process: later tasks reuse its prices and panels


def _worker_cache():
    global _WORKER_CACHE
    if _WORKER_CACHE is None:
        from .tasks import RunCache

        _WORKER_CACHE = RunCache(max_panels=1)
    return _WORKER_CACHE


def execute_run(spec, results_dir: str, data_dir: str | None, argv, env: dict, threads: int, use_gpu: bool,
                mode: str, marker: str | None) -> dict:
    """One run inside a Ray task (or any worker process): :func:`storm_lib.run.run_one` with torch's
    threads set to ``threads``; ``mode`` ``return`` (or ``auto`` without the driver's ``marker`` in
    sight) runs into a temporary results root and adds the finished run's files to the row
    (``shipped``: relative run path, {file: bytes})."""
    os.environ.update(env)
    os.environ["STORM_NUM_THREADS"] = str(max(1, int(threads)))
    if not use_gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run stays on the CPU on a GPU node
    import torch

    torch.set_num_threads(max(1, int(threads)))
    from .run import run_one

    shared = mode == "shared" or (mode == "auto" and marker is not None and (Path(results_dir) / marker).is_file())
    if shared:
        return run_one(spec, results_dir, data_dir, progress=False, cache=_worker_cache(), argv=argv)
    tmp = Path(tempfile.mkdtemp(prefix="storm-run-"))
    try:
        row = run_one(spec, tmp, data_dir, progress=False, cache=_worker_cache(), argv=argv)
        if row["status"] == "done":
            path = Path(row["run_dir"])
            files = {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
            row["shipped"] = (str(path.relative_to(tmp)), files)
        return row
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def receive(row: dict, results_dir) -> dict:
    """Write a shipped run (``row["shipped"]``) under ``results_dir`` as a local run would: into the
    partial directory, then one rename; a run finished there meanwhile is kept."""
    from .run import _partial, is_finished, results_root

    rel, files = row.pop("shipped")
    final = results_root(results_dir) / rel
    row["run_dir"] = str(final)
    if is_finished(final):
        return row
    partial = _partial(final)
    shutil.rmtree(partial, ignore_errors=True)
    for name, blob in files.items():
        (partial / name).parent.mkdir(parents=True, exist_ok=True)
        (partial / name).write_bytes(blob)
    try:
        os.rename(partial, final)
    except OSError:
        if not is_finished(final):
            raise
        shutil.rmtree(partial, ignore_errors=True)
    return row


class RayExecutor:
    """Each run a Ray task (module docstring). ``address``: an existing cluster (``"auto"``, ``ray://host:10001``,
    ``host:6379``); None: ``$RAY_ADDRESS`` or a new local instance with ``num_cpus`` CPUs (default all).
    When Ray is already initialised in this process, that instance is used and left running.
    ``cpus`` / ``gpus`` / ``memory_gb``: per-run overrides of :func:`run_resources`. ``results``: one of
    :data:`RESULTS_MODES`. ``env``: environment for the tasks (default every ``STORM_*`` variable of
    this process except ``STORM_NUM_THREADS``, which the declared CPUs set)."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus: float | None = None,
                 gpus: float | None = None, memory_gb: float | None = None, results: str = "auto",
                 env: dict | None = None):
        if results not in RESULTS_MODES:
            raise ValueError(f"results must be one of {', '.join(RESULTS_MODES)}, got {results!r}")
        self.address, self.num_cpus, self.results = address, num_cpus, results
        self.cpus, self.gpus, self.memory_gb = cpus, gpus, memory_gb
        self.env = env

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise ImportError('the Ray executor needs Ray: pip install -e ".[cluster]"') from None
        if ray.is_initialized():
            return ray, False
        kw = {"include_dashboard": False}
        if self.address is None and not os.environ.get("RAY_ADDRESS"):
            kw.update(num_cpus=self.num_cpus, object_store_memory=256 * 2**20)  # run files are small
        ray.init(address=self.address, **kw)
        return ray, True

    @staticmethod
    def _infeasible(ray, need: dict) -> str | None:
        """Why no alive node can ever run a task needing ``need`` (None when one can)."""
        keys = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if any(all(res.get(keys[k], 0) >= v for k, v in need.items() if v) for res in nodes):
            return None
        have = "; ".join(f"CPU {r.get('CPU', 0):g}, GPU {r.get('GPU', 0):g}, memory {r.get('memory', 0) / 2**30:.1f} GiB"
                         for r in nodes)
        return (f"no node of the Ray cluster offers CPU {need['num_cpus']:g}, GPU {need['num_gpus']:g}, memory "
                f"{need['memory'] / 2**30:.1f} GiB (nodes: {have or 'none'}); lower --cpus-per-run / "
                f"--memory-per-run or add such a node")

    def run(self, specs, results_dir=None, data_dir=None, progress=True, stop_on_error=False, cache=None,
            argv=None) -> list[dict]:
        """Rows as :func:`storm_lib.run.run_grid` returns them, in the order of ``specs``."""
        from tqdm.auto import tqdm

        from .run import RunContext, budget_twin, check_spec, is_finished, results_root, run_dir, run_one
        from .tasks import RunCache

        specs = list(specs)
        root = results_root(results_dir).resolve()
        data_dir = str(Path(data_dir).resolve()) if data_dir is not None else None
        env = self.env if self.env is not None else {k: v for k, v in os.environ.items()
                                                     if k.startswith("STORM_") and k != "STORM_NUM_THREADS"}
        ctx = RunContext(data_dir=data_dir, cache=cache if cache is not None else RunCache(), progress=False)
        rows: list[dict | None] = [None] * len(specs)
        todo = []
        for i, spec in enumerate(specs):  # invalid and finished runs are settled here, nothing submitted
            base = {**spec.as_row(), "status": None, "seconds": 0.0, "run_dir": None, "error": ""}
            try:
                check_spec(spec)
                path = run_dir(spec, root, ctx)
            except Exception as exc:  # noqa: BLE001 - reported like run_one reports it
                if stop_on_error:
                    raise
                rows[i] = {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                continue
            rows[i] = {**base, "status": "skipped", "run_dir": str(path)} if is_finished(path) else None
            twin = budget_twin(spec) if rows[i] is None else None
            if twin is not None and is_finished(run_dir(twin, root, ctx)):  # adopted here: a copy, no training
                rows[i] = run_one(spec, root, data_dir, progress=False, cache=ctx.cache, argv=argv)
            if rows[i] is None:
                todo.append(i)
        bar = tqdm(total=len(specs), desc="runs (ray)", disable=not progress, unit="run")
        bar.update(len(specs) - len(todo))
        if not todo:
            bar.close()
            return rows
        ray, started = self._connect()
        marker = None
        if self.results == "auto":
            root.mkdir(parents=True, exist_ok=True)
            marker = f".ray-driver-{uuid.uuid4().hex}"
            (root / marker).write_text("results directory of a storm_lib Ray driver\n")
        try:
            task = ray.remote(execute_run)
            pending, feasible = {}, {}
            t0 = time.perf_counter()
            for i in todo:
                need = run_resources(specs[i], self.cpus, self.gpus, self.memory_gb)
                key = tuple(sorted(need.items()))
                if key not in feasible:
                    feasible[key] = self._infeasible(ray, need)
                why = feasible[key]
                if why:
                    rows[i] = {**specs[i].as_row(), "status": "failed", "seconds": 0.0, "run_dir": None, "error": why}
                    bar.update(1)
                    if stop_on_error:
                        raise RuntimeError(why)
                    continue
                ref = task.options(**need, max_retries=0).remote(
                    specs[i], str(root), data_dir, argv, env, int(need["num_cpus"]), bool(need["num_gpus"]),
                    self.results, marker)
                pending[ref] = (i, time.perf_counter())
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                i, t_submit = pending.pop(done[0])
                try:
                    row = ray.get(done[0])
                    if "shipped" in row:
                        row = receive(row, root)
                except Exception as exc:  # noqa: BLE001 - a crashed or killed task: reported, retried next call
                    row = {**specs[i].as_row(), "status": "failed", "run_dir": None,
                           "seconds": round(time.perf_counter() - t_submit, 3), "error": f"{type(exc).__name__}: {exc}"}
                rows[i] = row
                bar.update(1)
                if progress:
                    s = specs[i]
                    tqdm.write(f"{row['status']}: {s.universe}/{s.model} {s.options_str} seed {s.seed} "
                               f"({row['seconds']:.1f} s; {time.perf_counter() - t0:.0f} s since submission)"
                               .replace("  ", " "))
                if row["status"] == "failed":
                    if progress:
                        tqdm.write(row["error"].rstrip())
                    if stop_on_error:
                        for ref in pending:
                            ray.cancel(ref, force=True)
                        raise RuntimeError(f"run failed: {specs[i]}\n{row['error']}")
        finally:
            bar.close()
            if marker:
                (root / marker).unlink(missing_ok=True)
            if started:
                ray.shutdown()
        return rows


def get_executor(executor=None, **kw):
    """An executor object from a name (``local``, ``ray``: :data:`EXECUTORS`; ``kw`` go to its class),
    None (local) or an object with a ``run`` method (returned as is)."""
    if executor is None or executor == "local":
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor(**kw)
    if hasattr(executor, "run"):
        return executor
    raise ValueError(f"unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")


def add_arguments(ap) -> None:
    """The executor flags of ``python -m storm_lib.run``."""
    g = ap.add_argument_group("executor")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local (default: this process, in order) or ray (one Ray task per run)")
    g.add_argument("--address", default=None,
                   help="Ray cluster address (auto, host:6379, ray://host:10001); default $RAY_ADDRESS or a "
                        "new local Ray instance")
    g.add_argument("--cpus-per-run", type=float, default=None, help="Ray: CPUs (= torch threads) per run")
    g.add_argument("--gpus-per-run", type=float, default=None, help="Ray: GPUs per run (default 1 at the paper profile)")
    g.add_argument("--memory-per-run", type=float, default=None, metavar="GB", help="Ray: memory per run")
    g.add_argument("--ray-results", choices=RESULTS_MODES, default="auto",
                   help="shared: every node writes the results directory; return: runs come back to this "
                        "process; auto: shared when the nodes see it")


def from_args(args):
    """The executor that ``args`` (parsed with :func:`add_arguments`) ask for."""
    if args.executor == "local":
        for flag in ("address", "cpus_per_run", "gpus_per_run", "memory_per_run"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} needs --executor ray")
        return LocalExecutor()
    return RayExecutor(address=args.address, cpus=args.cpus_per_run, gpus=args.gpus_per_run,
                       memory_gb=args.memory_per_run, results=args.ray_results)

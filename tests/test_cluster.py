"""The Ray executor (storm_lib.executors): a smoke grid through a real local Ray instance (2 CPUs).

Checked against the local executor: the same run directories with the same metrics and tables, a
second call runs nothing, a run that raises is reported without stopping the others and is retried
on the next call, and results shipped back from the tasks (no shared filesystem) are the same files.
"""

import json
from pathlib import Path

import pandas as pd
import pytest

from storm_lib import executors
from storm_lib.run import RunSpec, build_parser, grid, run_grid

ray = pytest.importorskip("ray", reason='the Ray executor needs the cluster extra: pip install -e ".[cluster]"')

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: a smoke grid of four real runs on the embedded sample (seconds each)
SPECS = grid("portfolio", "sample", ["market", "lightgbm", "lstm", "storm"], "sample", "smoke", [0])
#: a run that raises inside its Ray task: a valid option key whose value fails when STORM is built
#: (width 3 is not divisible by the smoke profile's 2 heads); an unknown key would be refused by the driver
BAD = RunSpec("portfolio", "sample", "storm", "sample", "smoke", 0, {"d_model": 3})
#: run.json fields that differ between any two executions of the same run (times, process, machine)
VOLATILE = ("started", "finished", "wall_seconds", "hardware", "argv")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("STORM_CACHE_DIR", str(cache))
    mp.setenv("STORM_REUSE_FITS", "0")  # every run fits: Ray must not read the local executor's fits
    mp.setenv("STORM_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()
    mp.undo()


@pytest.fixture(scope="module")
def local_runs(local_ray, tmp_path_factory):
    """The smoke grid through the local executor (the reference)."""
    root = tmp_path_factory.mktemp("local")
    out = run_grid(SPECS, root, progress=False)
    assert list(out["status"]) == ["done"] * 4
    return root, out


def comparable(run_dir) -> dict:
    """A run directory's content without what legitimately differs between executions: wall times."""
    path = Path(run_dir)
    out = {}
    for f in sorted(path.iterdir()):
        if f.name == "run.json":
            rec = json.loads(f.read_text())
            for k in VOLATILE:
                rec.pop(k)
            rec["info"] = {k: v for k, v in rec["info"].items() if not k.endswith("_seconds")}  # fit, predict
            out[f.name] = rec
        elif f.suffix == ".parquet":
            out[f.name] = pd.read_parquet(f)
        elif f.name == "history.csv":
            out[f.name] = pd.read_csv(f).drop(columns="seconds", errors="ignore")  # per-epoch wall time
        else:
            out[f.name] = f.read_bytes()
    return out


def assert_same_run(a, b):
    ca, cb = comparable(a), comparable(b)
    assert sorted(ca) == sorted(cb)
    for name in ca:
        if isinstance(ca[name], pd.DataFrame):
            pd.testing.assert_frame_equal(ca[name], cb[name], check_exact=True)
        else:
            if isinstance(ca[name], dict):
                for k in set(ca[name]) | set(cb[name]):
                    assert ca[name].get(k) == cb[name].get(k), f"{name}: {k}"
            assert ca[name] == cb[name], name


def leftovers(root: Path):
    return [p for p in root.rglob("*") if p.name.startswith(".")]


def test_ray_grid_matches_local_resumes_and_reports_failures(local_runs, tmp_path):
    local_root, local = local_runs

    specs = SPECS[:2] + [BAD] + SPECS[2:]
    first = run_grid(specs, tmp_path / "ray", progress=False, executor="ray")
    assert list(first["status"]) == ["done", "done", "failed", "done", "done"]
    assert "divisible" in first["error"][2] and not Path(first["run_dir"][2]).exists()
    for a, b in zip(local["run_dir"], first["run_dir"].drop(index=2)):
        assert Path(b).relative_to(tmp_path / "ray") == Path(a).relative_to(local_root)
        assert_same_run(a, b)
    rec = json.loads((Path(first["run_dir"][4]) / "run.json").read_text())
    assert rec["hardware"]["STORM_NUM_THREADS"] == "1"  # torch threads from the declared CPUs
    assert not leftovers(tmp_path / "ray")  # no partial directory, no driver marker

    again = run_grid(specs, tmp_path / "ray", progress=False, executor="ray")
    assert list(again["status"]) == ["skipped", "skipped", "failed", "skipped", "skipped"]  # the failure is retried
    assert list(again["run_dir"].drop(index=2)) == list(first["run_dir"].drop(index=2))
    mtimes = [(Path(p) / "run.json").stat().st_mtime_ns for p in first["run_dir"].drop(index=2)]
    third = run_grid(SPECS, tmp_path / "ray", progress=False, executor="ray")
    assert list(third["status"]) == ["skipped"] * 4
    assert [(Path(p) / "run.json").stat().st_mtime_ns for p in first["run_dir"].drop(index=2)] == mtimes


def test_ray_results_shipped_back_are_the_local_files(local_runs, tmp_path):
    local_root, local = local_runs
    shipped = run_grid(SPECS[2:3], tmp_path / "ray", progress=False, executor=executors.RayExecutor(results="return"))
    assert list(shipped["status"]) == ["done"]
    assert Path(shipped["run_dir"][0]).relative_to(tmp_path / "ray") == Path(local["run_dir"][2]).relative_to(local_root)
    assert_same_run(local["run_dir"][2], shipped["run_dir"][0])
    assert not leftovers(tmp_path / "ray")
    # two declared CPUs: two torch threads in the task (recorded in run.json)
    two = run_grid(SPECS[:1], tmp_path / "two", progress=False, executor=executors.RayExecutor(cpus=2))
    hw = json.loads((Path(two["run_dir"][0]) / "run.json").read_text())["hardware"]
    assert two["status"][0] == "done" and hw["STORM_NUM_THREADS"] == "2" and hw["torch_threads"] == 2


def test_notebook_run_step_takes_the_executor(local_runs, tmp_path):
    from storm_lib import presentation as nb

    local_root, local = local_runs
    lines = []
    plan = nb.ensure_runs(SPECS[:2], results_dir=tmp_path, echo=lines.append, executor="ray")
    assert list(plan["status"]) == ["done", "done"] and plan["finished"].all()
    assert any("on ray" in line for line in lines)
    for a, b in zip(local["run_dir"][:2], plan["run_dir"]):
        assert_same_run(a, b)
    again = nb.ensure_runs(SPECS[:2], results_dir=tmp_path, echo=lines.append, executor="ray")
    assert list(again["status"]) == ["cached", "cached"]


def test_infeasible_run_fails_fast(local_ray, tmp_path):
    out = run_grid(SPECS[:1], tmp_path, progress=False, executor=executors.RayExecutor(gpus=1))
    assert out["status"][0] == "failed" and "no node of the Ray cluster offers" in out["error"][0]


def test_resources_and_flags():
    paper = RunSpec("portfolio", "dj30", "storm", profile="paper")
    assert executors.run_resources(paper) == {"num_cpus": 2.0, "num_gpus": 1.0, "memory": 6 * 2**30}
    cpu = RunSpec("portfolio", "sp500", "lightgbm", profile="paper")
    assert executors.run_resources(cpu)["num_gpus"] == 0 and executors.run_resources(cpu)["num_cpus"] == 1
    assert executors.run_resources(cpu, cpus=4)["num_cpus"] == 4
    with pytest.raises(ValueError, match="at least 1 CPU"):
        executors.run_resources(cpu, cpus=0)
    args = build_parser().parse_args(["--executor", "ray", "--address", "auto", "--cpus-per-run", "2"])
    ex = executors.from_args(args)
    assert isinstance(ex, executors.RayExecutor) and ex.address == "auto" and ex.cpus == 2
    with pytest.raises(ValueError, match="needs --executor ray"):
        executors.from_args(build_parser().parse_args(["--address", "auto"]))
    with pytest.raises(ValueError, match="unknown executor"):
        executors.get_executor("dask")

"""Parking interrupted runs (storm_lib.park): a run interrupted on one machine, parked, restored into
another results directory and rerun there equals the uninterrupted run."""

import json
import os
import socket
from pathlib import Path

import pandas as pd
import pytest

from storm_lib import park
from storm_lib.run import RunSpec, load_table, run_grid
from storm_lib.tasks import RunCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = RunSpec("portfolio", "sample", "lstm", "sample", "smoke", seed=2)


def test_a_parked_run_resumes_elsewhere_to_the_uninterrupted_result(tmp_path, monkeypatch,
                                                                   interrupt_after_first_epoch):
    monkeypatch.setenv("STORM_REUSE_FITS", "0")
    cache = RunCache()
    ref = run_grid([SPEC], tmp_path / "ref", progress=False, cache=cache)
    assert ref["status"][0] == "done", ref["error"][0]

    undo = interrupt_after_first_epoch()
    with pytest.raises(KeyboardInterrupt):
        run_grid([SPEC], tmp_path / "a", progress=False, cache=cache)
    undo()
    assert [p.name.endswith(".partial") for p in park.partials(tmp_path / "a")] == [True]

    rows = park.save(tmp_path / "a", tmp_path / "parked")
    assert [r["status"] for r in rows] == ["parked"] and rows[0]["bytes"] > 0
    back = park.restore(tmp_path / "b", tmp_path / "parked")          # another machine's results directory
    assert [r["status"] for r in back] == ["restored"]
    assert not any((tmp_path / "parked").iterdir())                   # the parking directory is emptied

    out = run_grid([SPEC], tmp_path / "b", progress=False, cache=cache)
    assert out["status"][0] == "done", out["error"][0]
    rec = json.loads((Path(out["run_dir"][0]) / "run.json").read_text())
    assert rec["info"]["resumed_from_epoch"] == 1
    a, b = Path(ref["run_dir"][0]), Path(out["run_dir"][0])
    pd.testing.assert_frame_equal(pd.read_csv(a / "metrics.csv", keep_default_na=False),
                                  pd.read_csv(b / "metrics.csv", keep_default_na=False), check_exact=True)
    pd.testing.assert_frame_equal(load_table(a, "scores"), load_table(b, "scores"))


def test_live_runs_are_not_parked_and_finished_runs_drop_their_parked_copy(tmp_path):
    part = tmp_path / "r" / "portfolio" / "x" / "m" / ".clean-cpu-seed0-abc.partial"
    (part / "scratch" / "checkpoints").mkdir(parents=True)
    (part / "scratch" / "checkpoints" / "last.pt").write_bytes(b"x" * 10)
    (part / "owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    assert [r["status"] for r in park.save(tmp_path / "r", tmp_path / "p")] == ["running"]
    (part / "owner.json").unlink()
    assert [r["status"] for r in park.save(tmp_path / "r", tmp_path / "p")] == ["parked"]
    assert [r["status"] for r in park.restore(tmp_path / "r", tmp_path / "p")] == ["kept"]  # checkpoints here win

    (part.parent / "clean-cpu-seed0-abc").mkdir()
    (part.parent / "clean-cpu-seed0-abc" / "run.json").write_text("{}")                   # it finished
    assert [r["status"] for r in park.restore(tmp_path / "r", tmp_path / "p")] == ["stale"]
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())


def test_parked_fits_of_the_current_code_are_reused_on_the_next_machine(tmp_path, monkeypatch):
    from storm_lib.tasks.fits import training_source_hash

    monkeypatch.setenv("STORM_CACHE_DIR", str(tmp_path / "cache_a"))
    monkeypatch.setenv("STORM_REUSE_FITS", "1")
    cache = RunCache()
    first = run_grid([SPEC], tmp_path / "a", progress=False, cache=cache)
    assert first["status"][0] == "done", first["error"][0]
    store = tmp_path / "cache_a" / "fits"
    (store / ("0" * 64 + ".json")).write_text(json.dumps({"source": "older code"}))
    (store / ("1" * 64 + ".pt")).write_bytes(b"incomplete: no .json")
    rows = park.save_fits(tmp_path / "parked", store)
    assert sorted(r["status"] for r in rows) == ["other code", "parked"]           # the incomplete entry is no entry
    assert json.loads(next((tmp_path / "parked" / "fits").glob("*.json")).read_text())["source"] == training_source_hash()
    assert [r["status"] for r in park.save_fits(tmp_path / "parked", store)] == ["other code", "already parked"]

    monkeypatch.setenv("STORM_CACHE_DIR", str(tmp_path / "cache_b"))               # the next machine
    assert [r["status"] for r in park.restore_fits(tmp_path / "parked")] == ["restored"]
    assert not (tmp_path / "parked" / "fits").exists()
    again = run_grid([SPEC], tmp_path / "b", progress=False, cache=cache)
    assert again["status"][0] == "done", again["error"][0]
    rec = json.loads((Path(again["run_dir"][0]) / "run.json").read_text())
    assert "fit_reused" in rec["info"]                                              # restored, not refitted
    a, b = Path(first["run_dir"][0]), Path(again["run_dir"][0])
    pd.testing.assert_frame_equal(load_table(a, "scores"), load_table(b, "scores"))

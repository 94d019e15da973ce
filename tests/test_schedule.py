"""Time limits for a queue of runs (storm_lib.schedule, run_grid(time_limit=...), --time-limit)."""

import pandas as pd
import pytest

from storm_lib import schedule
from storm_lib.run import RunSpec, main, run_grid, summary_line


@pytest.mark.parametrize("text, seconds", [("5400", 5400), ("90m", 5400), ("2h", 7200), ("1h30m", 5400),
                                           ("1h 30m 15s", 5415), ("0.5h", 1800), (120, 120)])
def test_durations_parse(text, seconds):
    assert schedule.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "90x", "1h1h", "-5", "0", "m", "1h30"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        schedule.parse_duration(text)


def test_a_longer_budget_scales_the_fit_and_keeps_the_fixed_cost():
    # 100 s of data and prediction, 900 s of fit over 3,000 windows -> 100 + 0.3 s per window
    assert schedule.scaled_seconds(1000.0, 900.0, 3000, 12000) == pytest.approx(100 + 3600)
    assert schedule.scaled_seconds(1000.0, None, 3000, 6000) == pytest.approx(2000)   # no fit time: all scales


def _record(model="storm", universe="dj30", options=None, windows=None, fit=None, finished="2026-12-01", **extra):
    info = {"windows_seen": windows, "fit_seconds": fit} if windows else {}
    return {"spec": {"task": "portfolio", "universe": universe, "model": model, "profile": "cpu",
                     "options": options or {}}, "info": info, "finished": finished, **extra}


def test_the_estimate_scales_matching_runs_and_ignores_the_others():
    spec = RunSpec.make("portfolio", "dj30", "storm", options={"budget_windows": 8000})
    timings = [(_record(options={"budget_windows": 1000}, windows=1000, fit=80.0), 100.0),
               (_record(options={"budget_windows": 4000}, windows=4000, fit=380.0, finished="2026-12-02"), 400.0),
               (_record(model="lstm", windows=4000, fit=10.0), 20.0),                 # another model
               (_record(universe="sp500", windows=4000, fit=10.0), 20.0),             # another universe
               (_record(windows=4000, fit=1.0, adopted_from={"run": "x"}), 2.0),      # a copy, not a timing
               (_record(windows=4000, fit=380.0), None)]                              # no compute recorded
    # 20 + 80 * 8 = 660 and 20 + 380 * 2 = 780: the median of the two
    assert schedule.estimate_seconds(spec, timings) == pytest.approx((660 + 780) / 2)
    assert schedule.estimate_seconds(RunSpec.make("portfolio", "dj30", "hirevae",
                                                  options={"budget_windows": 8000}), timings) is None


def test_runs_on_the_same_cpu_are_preferred():
    spec = RunSpec.make("portfolio", "dj30", "lightgbm")
    epyc = {"cpu": "AMD EPYC", "cpu_flags": ["avx2"]}
    xeon = {"cpu": "Intel Xeon", "cpu_flags": ["avx2", "avx512f", "amx_tile"]}
    timings = [(_record(model="lightgbm", hardware=xeon, finished="2026-12-05"), 10.0),
               (_record(model="lightgbm", hardware=epyc, finished="2026-12-01"), 17.0)]
    assert schedule.estimate_seconds(spec, timings, cpu=epyc) == 17.0
    assert schedule.estimate_seconds(spec, timings, cpu=xeon) == 10.0
    assert schedule.estimate_seconds(spec, timings, cpu={"cpu": "other", "cpu_flags": []}) == 13.5  # none: all
    assert schedule.estimate_seconds(spec, timings) == 13.5


def test_a_resumed_run_is_estimated_for_the_windows_it_has_left(tmp_path):
    from storm_lib.run import _windows_done

    spec = RunSpec.make("portfolio", "dj30", "storm", options={"budget_windows": 8000})
    timings = [(_record(options={"budget_windows": 4000}, windows=4000, fit=380.0), 400.0)]  # 20 s + 0.095 s/window
    assert schedule.estimate_seconds(spec, timings, done_windows=6000) == pytest.approx(20 + 0.095 * 2000)
    final = tmp_path / "clean-cpu-seed0-abc"
    assert _windows_done(final) == 0                                           # no partial
    hist = tmp_path / ".clean-cpu-seed0-abc.partial" / "scratch" / "checkpoints"
    hist.mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2, 3], "windows": [960, 1920, 2880]}).to_csv(hist / "history.csv", index=False)
    assert _windows_done(final) == 2880


def test_a_run_without_a_fixed_budget_is_estimated_from_runs_with_its_options():
    spec = RunSpec.make("portfolio", "dj30", "lightgbm", options={"lr": 0.1})
    timings = [(_record(model="lightgbm", options={"lr": 0.1}), 30.0),
               (_record(model="lightgbm", options={"lr": 0.2}), 300.0)]
    assert schedule.estimate_seconds(spec, timings) == 30.0


def test_only_the_most_recent_runs_count():
    spec = RunSpec.make("portfolio", "dj30", "lightgbm")
    timings = [(_record(model="lightgbm", finished=f"2026-12-0{d}"), float(s))
               for d, s in [(1, 1000), (2, 10), (3, 20), (4, 30)]]
    assert schedule.estimate_seconds(spec, timings) == 20.0


SPEC = RunSpec.make("portfolio", "sample", "market", "sample", "smoke", 0)


@pytest.mark.usefixtures("one_torch_thread")
def test_a_run_that_cannot_finish_in_time_is_deferred_and_runs_later(data_dir, tmp_path):
    first = run_grid([SPEC], tmp_path, data_dir=data_dir, progress=False)
    assert list(first["status"]) == ["done"]
    other = RunSpec.make("portfolio", "sample", "market", "sample", "smoke", 1)   # the same run, seed 1
    unknown = RunSpec.make("portfolio", "sample", "reversal_1d", "sample", "smoke", 0)  # no timing yet
    out = run_grid([SPEC, other, unknown], tmp_path, data_dir=data_dir, progress=False, time_limit=0.001)
    assert list(out["status"]) == ["skipped", "deferred", "done"]    # finished: nothing to compute; unknown: runs
    assert "estimated" in out.loc[1, "error"] and pd.isna(out.loc[1, "run_dir"])
    again = run_grid([other], tmp_path, data_dir=data_dir, progress=False, time_limit="1h")
    assert list(again["status"]) == ["done"]


def test_the_command_line_refuses_a_bad_limit_and_a_limit_for_ray(data_dir, tmp_path, capsys):
    args = ["--task", "portfolio", "--universe", "sample", "--model", "market", "--protocol", "sample",
            "--profile", "smoke", "--results-dir", str(tmp_path), "--data-dir", str(data_dir)]
    assert main(args + ["--time-limit", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err
    assert main(args + ["--time-limit", "1h", "--executor", "ray"]) == 2
    assert "local executor" in capsys.readouterr().err
    with pytest.raises(ValueError, match="local executor"):
        run_grid([SPEC], tmp_path, data_dir=data_dir, progress=False, executor="ray", time_limit="1h")
    assert not any(tmp_path.rglob("run.json"))


def test_the_command_line_runs_a_queue_under_a_time_limit(data_dir, tmp_path, capsys):
    # the CLI hands run_grid a LocalExecutor object, not the name "local": it must run, not refuse
    args = ["--task", "portfolio", "--universe", "sample", "--model", "market", "--protocol", "sample",
            "--profile", "smoke", "--results-dir", str(tmp_path), "--data-dir", str(data_dir), "--quiet"]
    assert main(args + ["--time-limit", "1h", "--pause-at-limit"]) == 0
    assert "done:" in capsys.readouterr().out
    assert len(list(tmp_path.rglob("run.json"))) == 1


def test_an_epoch_that_would_end_past_the_deadline_raises_only_inside_a_limit():
    import time

    schedule.check_epoch(1, 3, 1e9)                                   # no limit set: nothing happens
    with schedule.time_limit(time.monotonic() + 60):
        schedule.check_epoch(1, 3, 1.0)                               # another epoch fits
        schedule.check_epoch(3, 3, 1e9)                               # the last epoch is done: nothing to pause
        with pytest.raises(schedule.TimeLimitReached, match="paused after epoch 1 of 3"):
            schedule.check_epoch(1, 3, 120.0)
    schedule.check_epoch(1, 3, 1e9)                                   # the limit ends with the block


@pytest.mark.usefixtures("one_torch_thread")
def test_a_run_longer_than_the_limit_pauses_at_an_epoch_and_resumes_to_the_same_result(data_dir, tmp_path,
                                                                                       monkeypatch):
    import json
    from pathlib import Path

    from storm_lib.run import load_table
    from storm_lib.tasks import RunCache

    monkeypatch.setenv("STORM_REUSE_FITS", "0")
    lstm, cache = RunSpec.make("portfolio", "sample", "lstm", "sample", "smoke", 2), RunCache()
    ref = run_grid([lstm], tmp_path / "ref", data_dir=data_dir, progress=False, cache=cache)
    assert ref["status"][0] == "done", ref["error"][0]

    check = schedule.check_epoch           # every epoch looks a day long: the fit pauses after its first
    monkeypatch.setattr(schedule, "check_epoch", lambda done, total, seconds: check(done, total, 86400.0))
    out = run_grid([lstm, SPEC], tmp_path / "a", data_dir=data_dir, progress=False, cache=cache,
                   time_limit="1h", pause_at_limit=True)
    assert list(out["status"]) == ["paused", "deferred"], out["error"].tolist()
    assert "paused after epoch 1" in out.loc[0, "error"] and "time limit is reached" in out.loc[1, "error"]
    lines = [summary_line(row) for row in out.itertuples()]     # what the CLIs print per run
    assert lines[0].startswith("paused: ") and str(tmp_path / "a") in lines[0]
    assert lines[1] == "deferred: not started (0.0 s)", lines[1]
    assert not any((tmp_path / "a").rglob("run.json"))
    assert any((tmp_path / "a").rglob("last.pt"))                   # the checkpoint is kept for the rerun
    monkeypatch.setattr(schedule, "check_epoch", check)

    again = run_grid([lstm], tmp_path / "a", data_dir=data_dir, progress=False, cache=cache)
    assert again["status"][0] == "done", again["error"][0]
    assert json.loads((Path(again["run_dir"][0]) / "run.json").read_text())["info"]["resumed_from_epoch"] == 1
    a, b = Path(ref["run_dir"][0]), Path(again["run_dir"][0])
    pd.testing.assert_frame_equal(pd.read_csv(a / "metrics.csv", keep_default_na=False),
                                  pd.read_csv(b / "metrics.csv", keep_default_na=False), check_exact=True)
    pd.testing.assert_frame_equal(load_table(a, "scores"), load_table(b, "scores"))
    with pytest.raises(ValueError, match="needs a time_limit"):
        run_grid([lstm], tmp_path / "a", data_dir=data_dir, progress=False, pause_at_limit=True)


def test_pause_at_limit_needs_a_time_limit_on_the_command_line(data_dir, tmp_path, capsys):
    from storm_lib import budget

    args = ["--task", "portfolio", "--universe", "sample", "--model", "market", "--protocol", "sample",
            "--profile", "smoke", "--results-dir", str(tmp_path), "--data-dir", str(data_dir)]
    assert main(args + ["--pause-at-limit"]) == 2
    assert "needs --time-limit" in capsys.readouterr().err
    assert budget.main(["run", "--universe", "dj30", "--model", "lstm", "--pause-at-limit", "--dry-run",
                        "--results-dir", str(tmp_path)]) == 2
    assert "needs --time-limit" in capsys.readouterr().err

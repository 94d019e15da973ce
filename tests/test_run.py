"""The experiment runner (storm_lib.run) and the portfolio task (storm_lib.tasks.portfolio).

Runner mechanics (identity, skip, resume, atomic directories, load_results) use a fast dummy task on
the embedded sample; the portfolio task runs for real on DJ30 with the smoke profile.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from storm_lib import run as runner
from storm_lib.run import RunSpec, load_results, load_table, run_dir, run_grid
from storm_lib.tasks import TASKS, RunCache, RunOutput
from storm_lib.models import model_version

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache():
    """Prices and panels shared by the tests of this module, as run_grid shares them across runs."""
    return RunCache()


# --------------------------------------------------------------------------- a fast dummy task


def dummy(spec, ctx):
    """Metrics from the spec alone; options ``boom`` (raise) and ``interrupt`` (Ctrl-C once, after
    writing a checkpoint to the scratch directory) simulate failures."""
    opts = spec.options_dict
    ckpt = ctx.scratch / "checkpoints" / "last.txt"
    resumed = ckpt.is_file()
    if opts.get("boom"):
        raise RuntimeError("boom")
    if opts.get("interrupt") and not resumed:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text("epoch 1")
        raise KeyboardInterrupt
    dummy.calls.append(spec)
    metrics = pd.DataFrame({"split": ["test"] * 3, "convention": ["standard", "paper", "-"],
                            "metric": ["APY", "APY", "turnover"], "value": [spec.seed + 0.5, spec.seed + 0.25, 0.1]})
    daily = pd.DataFrame({"return": [0.01, -0.02]}, index=pd.DatetimeIndex(["2021-04-01", "2021-04-05"], name="date"))
    return RunOutput(metrics, {"daily": daily, "scores.parquet": daily.astype(np.float32)}, {"resumed": resumed})


dummy.calls = []


@pytest.fixture
def with_dummy(monkeypatch):
    monkeypatch.setitem(TASKS, "dummy", dummy)
    dummy.calls.clear()
    return dummy


def spec(**kw):
    base = dict(task="dummy", universe="sample", model="lstm", protocol="sample", profile="smoke", seed=0)
    return RunSpec(**{**base, **kw})


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".")]


# --------------------------------------------------------------------------- identity and layout


def test_spec_normalises_options_and_checks_names():
    a = RunSpec("portfolio", "dj30", "storm", options={"w_div": 0.0, "codebook_size": 1024})
    b = RunSpec.make("portfolio", "dj30", "storm", options=(("codebook_size", 1024), ("w_div", 0.0)))
    assert a == b and hash(a) == hash(b) and a.options == (("codebook_size", 1024), ("w_div", 0.0))
    assert a.options_str == "codebook_size=1024,w_div=0.0"
    assert "--option codebook_size=1024" in a.command()
    for bad, match in [(dict(task="nope"), "unknown task 'nope'"), (dict(universe="ftse"), "unknown universe"),
                       (dict(model="xgb"), "unknown model 'xgb'.*storm"), (dict(profile="big"), "unknown profile"),
                       (dict(protocol="x"), "unknown protocol")]:
        with pytest.raises(ValueError, match=match):
            runner.check_spec(RunSpec(**{**dict(task="portfolio", universe="dj30", model="storm"), **bad}))


def test_a_task_may_name_its_own_models(with_dummy, monkeypatch):
    runner.check_spec(spec(model="market"))  # default: the return models plus the market row
    monkeypatch.setattr(dummy, "models", ("lstm", "buy_and_hold"), raising=False)
    runner.check_spec(spec(model="buy_and_hold"))
    with pytest.raises(ValueError, match="unknown model 'storm' for task 'dummy'; known: lstm, buy_and_hold"):
        runner.check_spec(spec(model="storm"))


def test_run_dir_changes_with_everything_that_changes_the_result(with_dummy, tmp_path, cache, monkeypatch):
    ctx = runner.RunContext(cache=cache, progress=False)
    base = run_dir(spec(), tmp_path, ctx)
    assert base.parent == tmp_path / "dummy" / "sample" / "lstm" and base.name.startswith("sample-smoke-seed0-")
    assert run_dir(spec(), tmp_path, ctx) == base  # deterministic
    variants = [spec(seed=1), spec(profile="cpu"), spec(protocol="clean"), spec(options={"hidden": 32}),
                spec(options={"hidden": 64}), spec(model="transformer")]
    dirs = [run_dir(s, tmp_path, ctx) for s in variants]
    assert len({base, *dirs}) == len(dirs) + 1
    assert dirs[3].parent.name == "lstm-hidden=32"
    for name, value in [("RESULTS_VERSION", runner.RESULTS_VERSION + 1), ("FEATURE_VERSION", -1)]:
        with monkeypatch.context() as m:
            m.setattr(runner, name, value)
            assert run_dir(spec(), tmp_path, ctx) != base
    monkeypatch.setenv(runner.RESULTS_ENV, str(tmp_path / "env"))
    assert run_dir(spec(), None, ctx).is_relative_to(tmp_path / "env")


# --------------------------------------------------------------------------- skip, resume, failures


def test_finished_runs_are_skipped(with_dummy, tmp_path, cache):
    specs = [spec(seed=0), spec(seed=1)]
    first = run_grid(specs, tmp_path, progress=False, cache=cache)
    assert list(first["status"]) == ["done", "done"] and len(with_dummy.calls) == 2
    rec = json.loads((Path(first["run_dir"][0]) / "run.json").read_text())
    assert rec["spec"]["seed"] == 0 and rec["hash"].startswith(Path(first["run_dir"][0]).name[-8:])
    assert set(rec["versions"]) >= {"python", "numpy", "pandas", "torch", "lightgbm", "storm_lib"}
    assert rec["identity"]["data"]["prices"] and rec["command"].startswith("python -m storm_lib.run --task dummy")
    assert rec["config"]["profile"]["window"] == 16 and rec["wall_seconds"] >= 0 and rec["finished"]
    mtime = (Path(first["run_dir"][0]) / "run.json").stat().st_mtime_ns
    second = run_grid(specs + [spec(seed=2)], tmp_path, progress=False, cache=cache)
    assert list(second["status"]) == ["skipped", "skipped", "done"] and len(with_dummy.calls) == 3
    assert (Path(first["run_dir"][0]) / "run.json").stat().st_mtime_ns == mtime
    assert not leftovers(tmp_path)


def test_failure_leaves_no_partial_dir_and_is_reported(with_dummy, tmp_path, cache):
    specs = [spec(seed=0), spec(seed=1, options={"boom": True}), spec(seed=2)]
    with pytest.raises(RuntimeError, match="boom"):
        run_grid(specs, tmp_path, progress=False, stop_on_error=True, cache=cache)
    assert [s.seed for s in with_dummy.calls] == [0]  # the grid stopped at the failure
    assert not run_dir(specs[1], tmp_path, runner.RunContext(cache=cache)).parent.exists()
    assert not leftovers(tmp_path)
    # the rerun skips the finished run, reports the failure with its traceback, runs the rest
    summary = run_grid(specs, tmp_path, progress=False, cache=cache)
    assert list(summary["status"]) == ["skipped", "failed", "done"]
    assert "Traceback" in summary["error"][1] and "RuntimeError: boom" in summary["error"][1]
    assert summary["error"][0] == "" and not leftovers(tmp_path)


def test_interrupted_grid_resumes_with_its_scratch_dir(with_dummy, tmp_path, cache):
    specs = [spec(seed=0), spec(seed=1, options={"interrupt": True}), spec(seed=2)]
    with pytest.raises(KeyboardInterrupt):
        run_grid(specs, tmp_path, progress=False, cache=cache)
    final = run_dir(specs[1], tmp_path, runner.RunContext(cache=cache))
    partial = final.with_name(f".{final.name}.partial")
    assert not final.exists() and (partial / "scratch" / "checkpoints" / "last.txt").is_file()
    (partial / "junk.csv").write_text("half written")
    summary = run_grid(specs, tmp_path, progress=False, cache=cache)
    assert list(summary["status"]) == ["skipped", "done", "done"]
    assert [s.seed for s in with_dummy.calls] == [0, 1, 2]
    assert json.loads((final / "run.json").read_text())["info"]["resumed"] is True
    assert sorted(p.name for p in final.iterdir()) == ["daily.csv", "metrics.csv", "run.json", "scores.parquet"]
    assert not leftovers(tmp_path)


def test_a_run_held_by_a_live_process_is_not_touched(with_dummy, tmp_path, cache):
    import socket

    final = run_dir(spec(), tmp_path, runner.RunContext(cache=cache))
    partial = final.with_name(f".{final.name}.partial")
    partial.mkdir(parents=True)
    (partial / "owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    summary = run_grid([spec()], tmp_path, progress=False, cache=cache)
    assert summary["status"][0] == "busy" and "process" in summary["error"][0] and not with_dummy.calls


# --------------------------------------------------------------------------- reading results


def test_load_results_and_tables(with_dummy, tmp_path, cache):
    specs = [spec(seed=0), spec(seed=1), spec(seed=0, options={"hidden": 8})]
    summary = run_grid(specs, tmp_path, progress=False, cache=cache)
    res = load_results(tmp_path)
    assert len(res) == 9 and list(res.columns[:7]) == list(runner.SPEC_COLUMNS)
    assert {"split", "convention", "metric", "value", "run_dir"} <= set(res.columns)
    assert (res["convention"] == "-").sum() == 3  # "-" is a key, not a missing value
    plain = load_results(tmp_path, task="dummy", seed=[0, 1], options="")
    assert len(plain) == 6 and set(plain["seed"]) == {0, 1}
    table = plain[plain["metric"] == "APY"].groupby(["model", "convention"])["value"].agg(["mean", "std"])
    assert table.loc[("lstm", "standard"), "mean"] == pytest.approx(1.0)
    assert len(load_results(tmp_path, options="hidden=8")) == 3 and load_results(tmp_path, model="storm").empty
    daily = load_table(summary["run_dir"][0], "daily")
    assert isinstance(daily.index, pd.DatetimeIndex) and list(daily.columns) == ["return"]
    assert load_table(specs[1], "scores", tmp_path)["return"].dtype == np.float32
    with pytest.raises(FileNotFoundError, match="no table 'codes'"):
        load_table(summary["run_dir"][0], "codes")
    assert len(runner.list_runs(tmp_path)) == 3


def _record(tmp_path, name, info, history_seconds=None, wall=100.0, command="python -m storm_lib.run --seed 0"):
    path = tmp_path / name
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"wall_seconds": wall, "command": command, "info": info}))
    if history_seconds is not None:
        pd.DataFrame({"epoch": range(1, len(history_seconds) + 1), "seconds": history_seconds}).to_csv(
            path / "history.csv", index=False)
    return path


def test_compute_seconds_counts_the_fits_of_interrupted_attempts(tmp_path):
    cmd = "python -m storm_lib.run --seed 0"
    # an uninterrupted fit: its epochs are inside wall_seconds already
    plain = _record(tmp_path, "plain", {"fit_seconds": 80.0}, [40.0, 39.0])
    assert runner.compute_seconds(plain) == pytest.approx(100.0)
    # resumed at epoch 3: epochs 1-2 ran in an earlier attempt (30 + 30 s), this attempt fitted 45 s
    resumed = _record(tmp_path, "resumed", {"fit_seconds": 45.0, "resumed_from_epoch": 3}, [30.0, 30.0, 40.0])
    assert runner.compute_seconds(resumed) == pytest.approx(100.0 + 100.0 - 45.0)
    # the fit finished in an earlier attempt and this one restored it: the whole fit is extra
    own = _record(tmp_path, "own", {"fit_seconds": 70.0, "fit_reused": {"first_fitted_by": cmd}}, [35.0, 35.0])
    assert runner.compute_seconds(own) == pytest.approx(170.0)
    # restored from another run's fit (an audit switch): that run paid for it
    other = _record(tmp_path, "other", {"fit_seconds": 70.0, "fit_reused": {"first_fitted_by": cmd + "1"}},
                    [35.0, 35.0])
    assert runner.compute_seconds(other) == pytest.approx(100.0)
    assert runner.compute_seconds(_record(tmp_path, "none", {}, wall=None)) is None


# --------------------------------------------------------------------------- the portfolio task, for real


@pytest.fixture(scope="module")
def dj30_storm(data_dir, tmp_path_factory, cache):
    root = tmp_path_factory.mktemp("storm_runs")
    s = RunSpec("portfolio", "dj30", "storm", profile="smoke", seed=0)
    summary = run_grid([s, s], root, data_dir=data_dir, progress=False, cache=cache)
    return s, root, summary


def test_portfolio_storm_run_tables(dj30_storm, data_dir):
    s, root, summary = dj30_storm
    assert list(summary["status"]) == ["done", "skipped"], summary["error"].tolist()
    path = Path(summary["run_dir"][0])
    rec = json.loads((path / "run.json").read_text())
    assert rec["info"]["fit_seconds"] > 0 and rec["info"]["model"]["config"]["codebook_size"] == 32
    assert rec["identity"]["task_config"] == {**TASKS["portfolio"].config, "splits": ["valid", "test"]}
    m = pd.read_csv(path / "metrics.csv", keep_default_na=False)
    assert not m.duplicated(["split", "convention", "metric"]).any()
    test = m[m["split"] == "test"].set_index(["convention", "metric"])["value"]
    for conv in ("standard", "paper", "official"):
        assert {(conv, k) for k in ("APY", "CW", "CR", "ASR", "MDD", "AVO", "n_days")} <= set(test.index)
    assert test[("standard", "n_days")] == 752 and -1 < test[("standard", "RankIC")] < 1
    scores = load_table(path, "scores")
    assert scores.shape == (752, 29) and (scores.dtypes == np.float32).all()
    daily = load_table(path, "daily")
    assert list(daily.columns) == ["rank_ic", "return", "turnover", "benchmark"] and len(daily) == 752
    assert np.prod(1 + daily["return"]) == pytest.approx(test[("standard", "CW")])
    codes = load_table(path, "codes")
    assert set(codes["branch"]) == {"cs", "ts"} and len(codes) == 2 * 32
    per = codes.groupby("branch")["count"].sum()
    assert per["cs"] == 752 * 16 and per["ts"] == 752 * 29 * 4  # W day tokens; N stocks x W/p patches
    assert len(load_table(path, "history")) >= 1
    assert {"val_codes_used_cs", "val_align_loss", "val_align_top1"} <= set(load_table(path, "history").columns)
    # eval-mode codebook usage and alignment quality on every split (issue 16)
    diag = m[m["convention"] == "-"].set_index(["split", "metric"])["value"]
    for split in ("train", "valid", "test"):
        for k in ("codes_used_cs", "perplexity_cs", "div_cs", "codes_used_ts", "perplexity_ts", "align_loss",
                  "align_top1", "align_loss_disjoint", "align_top1_disjoint"):
            assert (split, k) in diag.index, (split, k)
        assert 1 <= diag[(split, "codes_used_cs")] <= 32 and 1 <= diag[(split, "perplexity_ts")] <= 32
    assert diag[("test", "codes_used_cs")] == (codes.query("branch == 'cs'")["count"] > 0).sum()
    assert rec["model_version"] == rec["identity"]["model_version"] == model_version("storm") == 4


def test_portfolio_market_row(dj30_storm, data_dir, cache):
    _, root, _ = dj30_storm
    summary = run_grid([RunSpec("portfolio", "dj30", "market", profile="smoke")], root, data_dir=data_dir,
                       progress=False, cache=cache)
    assert summary["status"][0] == "done", summary["error"][0]
    res = load_results(root, model="market")
    assert set(res["metric"]) == {"APY", "CW", "CR", "ASR", "MDD", "AVO", "n_days"}
    daily = load_table(summary["run_dir"][0], "daily")
    assert np.allclose(daily["return"], daily["benchmark"]) and daily["rank_ic"].isna().all()


def test_portfolio_is_deterministic_and_resumes_an_interrupted_fit(data_dir, tmp_path, cache,
                                                                   interrupt_after_first_epoch):
    """Same spec -> identical metrics; a fit interrupted after epoch 1 resumes from its checkpoint."""
    s = RunSpec("portfolio", "dj30", "lstm", profile="smoke", seed=1)
    a = run_grid([s], tmp_path / "a", data_dir=data_dir, progress=False, cache=cache)
    assert a["status"][0] == "done", a["error"][0]

    undo = interrupt_after_first_epoch()
    with pytest.raises(KeyboardInterrupt):
        run_grid([s], tmp_path / "b", data_dir=data_dir, progress=False, cache=cache)
    undo()
    b = run_grid([s], tmp_path / "b", data_dir=data_dir, progress=False, cache=cache)
    c = run_grid([s], tmp_path / "c", data_dir=data_dir, progress=False, cache=RunCache())  # fresh panel too
    assert b["status"][0] == c["status"][0] == "done", (b["error"][0], c["error"][0])
    assert json.loads((Path(b["run_dir"][0]) / "run.json").read_text())["info"]["resumed_from_epoch"] == 1
    ma, mb, mc = (pd.read_csv(Path(r["run_dir"][0]) / "metrics.csv", keep_default_na=False) for r in (a, b, c))
    pd.testing.assert_frame_equal(ma, mc, check_exact=True)
    pd.testing.assert_frame_equal(ma, mb, check_exact=True)
    pd.testing.assert_frame_equal(load_table(a["run_dir"][0], "scores"), load_table(b["run_dir"][0], "scores"))


def test_an_evaluation_only_option_reuses_the_fit_with_identical_results(data_dir, tmp_path, cache, monkeypatch):
    """topk_variant / sample_predictions do not change the fit: such a run restores the fit of the run
    before it (from $STORM_CACHE_DIR/fits) and writes exactly what a fresh fit would have written."""
    from storm_lib import run as run_mod
    from storm_lib.tasks.fits import fit_key

    monkeypatch.setenv("STORM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STORM_REUSE_FITS", "1")
    clean = RunSpec("portfolio", "dj30", "storm", profile="smoke", seed=3)
    official = RunSpec.make("portfolio", "dj30", "storm", profile="smoke", seed=3,
                            options={"topk_variant": "official", "sample_predictions": True})
    other_seed = RunSpec("portfolio", "dj30", "storm", profile="smoke", seed=4)
    shared = run_grid([clean, official, other_seed], tmp_path / "shared", data_dir=data_dir, progress=False,
                      cache=cache)
    assert (shared["status"] == "done").all(), shared["error"].tolist()
    monkeypatch.setenv("STORM_REUSE_FITS", "0")
    assert run_mod.fits_dir() is None
    fresh = run_grid([official], tmp_path / "fresh", data_dir=data_dir, progress=False, cache=cache)
    assert fresh["status"][0] == "done", fresh["error"][0]

    rec = {r["model"] + str(i): json.loads((Path(r["run_dir"]) / "run.json").read_text())["info"]
           for i, r in shared.iterrows()}
    assert "fit_reused" not in rec["storm0"] and "fit_reused" not in rec["storm2"]
    assert rec["storm1"]["fit_reused"]["first_fitted_by"] == clean.command()
    assert rec["storm1"]["best_epoch"] == rec["storm0"]["best_epoch"]
    assert len(list((tmp_path / "cache" / "fits").glob("*.json"))) == 2   # seeds 3 and 4
    a, b = Path(shared["run_dir"][1]), Path(fresh["run_dir"][0])
    for name in ("metrics.csv", "daily.csv", "codes.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ha, hb = (pd.read_csv(x / "history.csv").drop(columns="seconds") for x in (a, b))  # wall time differs
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)
    pd.testing.assert_frame_equal(load_table(a, "scores"), load_table(b, "scores"), check_exact=True)
    # the key ignores the evaluation options and sees the ones that act on the fit
    ctx = run_mod.RunContext(data_dir=data_dir, cache=cache)
    from storm_lib.tasks.portfolio import model_kwargs, split_options, task_settings

    def key(s):
        cfg = task_settings(s.model, s.options_dict)
        kw = model_kwargs(s.model, split_options(s.options_dict)[1])
        return fit_key(ctx, s.universe, s.model, kw, s.protocol, s.profile, s.seed, cfg["feature_set"],
                       cfg["normalization"])

    assert key(clean) == key(official) != key(other_seed)
    assert key(RunSpec.make("portfolio", "dj30", "storm", profile="smoke", seed=3,
                            options={"prior_across_batch": True})) != key(clean)
    assert key(RunSpec.make("portfolio", "dj30", "storm", profile="smoke", seed=3,
                            options={"feature_set": "official152"})) != key(clean)


def test_the_trading_task_reuses_the_portfolio_storm_fit(data_dir, tmp_path, cache, monkeypatch):
    """Trading's STORM-PPO reads the factors of the same STORM fit as the portfolio task's clean run."""
    monkeypatch.setenv("STORM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STORM_REUSE_FITS", "1")
    port = RunSpec("portfolio", "dj30", "storm_wo_ts", profile="smoke", seed=5)
    trade = RunSpec("trading", "dj30", "storm_wo_ts", profile="smoke", seed=5)
    shared = run_grid([port, trade], tmp_path / "shared", data_dir=data_dir, progress=False, cache=cache)
    assert (shared["status"] == "done").all(), shared["error"].tolist()
    monkeypatch.setenv("STORM_REUSE_FITS", "0")
    fresh = run_grid([trade], tmp_path / "fresh", data_dir=data_dir, progress=False, cache=cache)
    assert fresh["status"][0] == "done", fresh["error"][0]
    info = json.loads((Path(shared["run_dir"][1]) / "run.json").read_text())["info"]
    assert info["fit_reused"]["first_fitted_by"] == port.command()
    assert "fit_reused" not in json.loads((Path(fresh["run_dir"][0]) / "run.json").read_text())["info"]
    ma, mb = (pd.read_csv(Path(r) / "metrics.csv", keep_default_na=False) for r in (shared["run_dir"][1],
                                                                                     fresh["run_dir"][0]))
    timing = ["train_seconds", "fit_seconds"]
    pd.testing.assert_frame_equal(ma[~ma["metric"].isin(timing)].reset_index(drop=True),
                                  mb[~mb["metric"].isin(timing)].reset_index(drop=True), check_exact=True)


# --------------------------------------------------------------------------- command line


def test_cli_end_to_end_on_dj30(data_dir, tmp_path, capsys):
    out_dir = str(tmp_path / "res")
    args = ["--task", "portfolio", "--universe", "dj30", "--model", "lightgbm", "market", "--profile", "smoke",
            "--seed", "2", "--results-dir", out_dir, "--data-dir", str(data_dir), "--quiet"]
    assert runner.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("done:") == 2 and "test split (752 days): RankIC" in out and "official" in out
    assert runner.main(args) == 0
    assert capsys.readouterr().out.count("skipped:") == 2
    assert runner.main(args[:-1] + ["--dry-run"]) == 0
    assert capsys.readouterr().out.count("finished") == 2
    assert runner.main(["--list", "--results-dir", out_dir, "--model", "lightgbm"]) == 0
    listed = capsys.readouterr().out
    assert "lightgbm" in listed and "market" not in listed
    res = load_results(out_dir)
    assert set(res["model"]) == {"lightgbm", "market"} and set(res["seed"]) == {2}
    rec = json.loads((Path(res["run_dir"][0]) / "run.json").read_text())
    assert rec["argv"][:3] == ["python", "-m", "storm_lib.run"] and "--seed 2" in rec["command"]
    assert not any(os.path.isabs(a) for a in rec["argv"]), rec["argv"]   # no machine-local paths in records


@pytest.mark.parametrize("bad, message", [
    (["--model", "xgboost"], "unknown model 'xgboost'"),
    (["--universe", "ftse"], "unknown universe 'ftse'"),
    (["--task", "trade"], "unknown task 'trade'"),
    (["--option", "nonsense"], "KEY=VALUE"),
])
def test_cli_clear_errors(bad, message, tmp_path, capsys):
    args = {"--task": "portfolio", "--universe": "sample", "--model": "lstm"}
    extra = []
    for i in range(0, len(bad), 2):
        if bad[i] in args:
            args[bad[i]] = bad[i + 1]
        else:
            extra += bad[i:i + 2]
    argv = [x for kv in args.items() for x in kv] + extra + ["--results-dir", str(tmp_path), "--dry-run"]
    assert runner.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_missing_fields(capsys):
    assert runner.main(["--universe", "dj30"]) == 2
    assert "--task and --model required" in capsys.readouterr().err


def test_option_parsing_and_sweeps():
    assert runner.parse_option("codebook_size=1024") == ("codebook_size", 1024)
    assert runner.parse_option("lr=1e-3") == ("lr", 1e-3)
    assert runner.parse_option("use_ts=false") == ("use_ts", False)
    assert runner.parse_option("hidden=[32, 16]") == ("hidden", [32, 16])
    assert runner.parse_option("kl_reduction=sum") == ("kl_reduction", "sum")
    sweep = runner.option_grid(["codebook_size=256", "codebook_size=1024", "w_div=0"])
    assert sweep == [{"codebook_size": 256, "w_div": 0}, {"codebook_size": 1024, "w_div": 0}]
    assert RunSpec("portfolio", "dj30", "cafactor", options={"hidden": [32, 16]}).options == (("hidden", (32, 16)),)


def test_storm_options_route_to_the_network():
    from storm_lib.tasks.portfolio import model_kwargs

    assert model_kwargs("storm", {"codebook_size": 1024, "lr": 1e-4}) == {"lr": 1e-4, "model": {"codebook_size": 1024}}
    assert model_kwargs("lstm", {"hidden": 8}) == {"hidden": 8}
    with pytest.raises(ValueError, match="fields of the run spec"):
        model_kwargs("lstm", {"seed": 3})


def test_python_dash_m_dry_run_on_the_sample(tmp_path):
    env = {**os.environ, "STORM_NUM_THREADS": "1"}
    env.pop("STORM_DATA_DIR", None)
    cmd = [sys.executable, "-m", "storm_lib.run", "--task", "portfolio", "--universe", "sample", "--model", "market",
           "--profile", "smoke", "--results-dir", str(tmp_path), "--dry-run"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "todo" in proc.stdout and "portfolio/sample/market/sample-smoke-seed0-" in proc.stdout


def test_a_profile_budget_trains_with_it_and_adopts_the_budget_study_run(data_dir, tmp_path, cache, monkeypatch):
    """A profile's chosen budget (Profile.budgets) enters the plain run's identity and its fit; when the
    budget study already ran that training (the same spec with the option budget_windows), the plain
    run is a copy of it, and the copy is byte for byte what a fresh run writes."""
    from dataclasses import replace

    from storm_lib import profiles

    monkeypatch.setenv("STORM_REUSE_FITS", "0")
    plain = RunSpec("portfolio", "dj30", "lstm", profile="smoke", seed=2)
    other = RunSpec("portfolio", "dj30", "transformer", profile="smoke", seed=2)
    before = runner.code_identity(plain), runner.code_identity(other)
    early = run_grid([plain], tmp_path / "early", data_dir=data_dir, progress=False, cache=cache)
    assert early["status"][0] == "done" and not runner.superseded_runs(runner.finished_runs(tmp_path / "early"))
    monkeypatch.setitem(profiles.PROFILES, "smoke",
                        replace(profiles.PROFILES["smoke"], budgets={"dj30": {"lstm": 80}},
                                budget_options={"dj30": {"steps_per_epoch": 5}}))
    budget = {"budget_windows": 80, "steps_per_epoch": 5}
    assert "budget" not in before[0] and runner.code_identity(plain)["budget"] == budget
    assert runner.code_identity(other) == before[1]          # no budget for it: its hash is unchanged
    # the early-stopping run of before the choice is superseded: it leaves the tables and the verdict
    assert runner.superseded_runs(runner.finished_runs(tmp_path / "early")) == {Path(early["run_dir"][0])}
    assert load_results(tmp_path / "early").empty and not load_results(tmp_path / "early", include_superseded=True).empty
    twin = runner.budget_twin(plain)
    assert twin.options_dict == budget and runner.budget_twin(twin) is None  # an option wins
    assert runner.budget_twin(other) is None

    study = run_grid([twin, plain], tmp_path / "a", data_dir=data_dir, progress=False, cache=cache)
    assert list(study["status"]) == ["done", "adopted"], study["error"].tolist()
    fresh = run_grid([plain], tmp_path / "b", data_dir=data_dir, progress=False, cache=cache)
    assert fresh["status"][0] == "done", fresh["error"][0]
    a, b, t = Path(study["run_dir"][1]), Path(fresh["run_dir"][0]), Path(study["run_dir"][0])
    assert a.relative_to(tmp_path / "a") == b.relative_to(tmp_path / "b")   # the same hash, same place
    rec_a, rec_b = (json.loads((x / "run.json").read_text()) for x in (a, b))
    assert rec_b["info"]["windows_seen"] == 80 and rec_b["identity"]["budget"] == budget
    assert len(pd.read_csv(b / "history.csv")) == 2      # 80 windows in epochs of 5 steps x 8
    assert rec_a["identity"] == rec_b["identity"] and rec_a["spec"]["options"] == {}
    assert rec_a["adopted_from"]["run"] == t.relative_to(tmp_path / "a").as_posix()
    for name in ("metrics.csv", "daily.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ha, hb = (pd.read_csv(x / "history.csv").drop(columns="seconds") for x in (a, b))
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)
    pd.testing.assert_frame_equal(load_table(a, "scores"), load_table(b, "scores"), check_exact=True)
    runs = runner.list_runs(tmp_path / "a").set_index("options")
    assert runs.loc["", "adopted_from"] == rec_a["adopted_from"]["run"]
    assert pd.isna(runs.loc["budget_windows=80,steps_per_epoch=5", "adopted_from"])

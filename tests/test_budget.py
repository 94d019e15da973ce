"""The training-budget study (storm_lib.budget): the grid, the loader, the summary and the profile rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from storm_lib import budget


def _runs(points: dict, model="transformer", universe="dj30") -> pd.DataFrame:
    """A tidy table as :func:`budget.load` returns: ``points`` maps budget -> validation RankIC per seed."""
    rows = []
    for b, vals in points.items():
        for seed, v in enumerate(vals):
            rows.append({"model": model, "universe": universe, "budget": b, "seed": seed, "windows_seen": b,
                         "train_windows": 2768, "passes": b / 2768, "epochs": 3, "best_epoch": 2,
                         "val_RankIC": v + 0.01, "val_final": v, "test_RankIC": -v, "test_final": np.nan,
                         "fit_seconds": b / 100,
                         "compute_seconds": b / 90,
                         "model_version": 1, "run_dir": f"/x/{model}/{b}/{seed}"})
    return pd.DataFrame(rows, columns=budget.COLUMNS)


def test_summary_is_mean_and_standard_error_over_seeds():
    s = budget.summarise(_runs({1000: [0.01, 0.03], 4000: [0.02, 0.02, 0.05]}))
    r = s.set_index("budget")
    assert r.loc[1000, "seeds"] == 2 and r.loc[1000, "val_mean"] == pytest.approx(0.02)
    assert r.loc[1000, "val_se"] == pytest.approx(np.std([0.01, 0.03], ddof=1) / math.sqrt(2))
    assert r.loc[4000, "val_se"] == pytest.approx(np.std([0.02, 0.02, 0.05], ddof=1) / math.sqrt(3))
    assert r.loc[1000, "test_mean"] == pytest.approx(-0.02)
    assert r.loc[1000, "val_best_mean"] == pytest.approx(0.03)   # the selected epoch's (here final + 0.01)
    assert r.loc[4000, "compute_total_s"] == pytest.approx(3 * 4000 / 90)
    assert math.isnan(budget.summarise(_runs({1000: [0.01]})).loc[0, "val_se"])  # one seed: no SE


def test_the_rule_picks_the_smallest_budget_within_one_se_of_the_best():
    # best at 16k (0.040 ± 0.005); 4k (0.036) is within one SE, 1k (0.010) is not; 64k is below the best
    s = budget.summarise(_runs({1000: [0.009, 0.011], 4000: [0.035, 0.037], 16000: [0.035, 0.045],
                                64000: [0.030, 0.034]}))
    c = budget.choose(s).iloc[0]
    assert c["best_budget"] == 16000 and c["chosen_budget"] == 4000
    assert c["status"] == "plateau" and c["missing"] == []


def test_a_curve_still_rising_at_the_largest_budget_is_inconclusive():
    s = budget.summarise(_runs({1000: [0.00, 0.01], 4000: [0.01, 0.02], 16000: [0.02, 0.03],
                                64000: [0.050, 0.052]}))
    c = budget.choose(s).iloc[0]
    assert c["best_budget"] == 64000 and c["chosen_budget"] == 64000
    assert c["status"] == "inconclusive: needs >= 256,000 windows"


def test_best_at_the_largest_budget_but_within_one_se_of_a_smaller_one_is_not_inconclusive():
    s = budget.summarise(_runs({1000: [0.00, 0.01], 4000: [0.02, 0.03], 16000: [0.026, 0.028],
                                64000: [0.02, 0.04]}))
    c = budget.choose(s).iloc[0]
    assert c["best_budget"] == 64000 and c["chosen_budget"] == 4000 and c["status"] == "plateau"


def test_points_with_one_seed_do_not_count_and_missing_budgets_are_listed():
    s = budget.summarise(_runs({1000: [0.01, 0.02], 4000: [0.03]}))
    c = budget.choose(s).iloc[0]
    assert c["status"] == "not run yet" and c["missing"] == [4000, 16000, 64000]
    s = budget.summarise(_runs({1000: [0.01, 0.02], 4000: [0.03, 0.031]}))
    c = budget.choose(s).iloc[0]
    assert c["status"] == "still rising at 4,000 windows; larger budgets not run yet"
    assert c["missing"] == [16000, 64000] and c["chosen_budget"] == 4000
    s = budget.summarise(_runs({1000: [0.03, 0.031], 4000: [0.01, 0.02]}))
    assert budget.choose(s).iloc[0]["status"] == "plateau (some budgets still running)"


def test_a_step_beyond_the_grid_counts_only_once_it_has_two_seeds():
    """A curve extended past the grid (e.g. 256,000 windows) keeps its choice while the new step has one
    seed, and the step enters the rule when the second seed is in."""
    points = {1000: [0.00, 0.01], 4000: [0.01, 0.02], 16000: [0.02, 0.03], 64000: [0.050, 0.052]}
    c = budget.choose(budget.summarise(_runs({**points, 256000: [0.09]}))).iloc[0]
    assert c["chosen_budget"] == 64000 and c["missing"] == [] and c["status"].startswith("inconclusive")
    c = budget.choose(budget.summarise(_runs({**points, 256000: [0.050, 0.053]}))).iloc[0]
    assert c["chosen_budget"] == 64000 and c["largest_budget"] == 256000 and c["status"] == "plateau"


def test_the_grid_runs_the_smallest_budget_first_and_spans_the_issue_range(monkeypatch):
    specs = budget.specs(["dj30"], ["transformer", "factorvae"], seeds=(0, 1))
    assert [s.options_dict[budget.OPTION] for s in specs] == [b for b in budget.BUDGETS["dj30"] for _ in range(4)]
    assert [(s.model, s.seed) for s in specs[:4]] == [("transformer", 0), ("transformer", 1), ("factorvae", 0),
                                                     ("factorvae", 1)]
    assert "--option budget_windows=1000" in specs[0].command()
    for grid in budget.BUDGETS.values():  # issue 18: at least 4 budgets spanning at least 30x
        assert len(grid) >= 4 and max(grid) / min(grid) >= 30
    # an extension adds a step to one curve only
    monkeypatch.setattr(budget, "EXTENSIONS", {("dj30", "storm_wo_ts"): (256_000,)})
    ext = budget.specs(["dj30"], ["storm_wo_ts", "factorvae"], seeds=(0,))
    assert [(s.model, s.options_dict[budget.OPTION]) for s in ext][-2:] == [("factorvae", 64000),
                                                                             ("storm_wo_ts", 256000)]
    assert budget.grid_for("dj30", "storm_wo_ts") == (1000, 4000, 16000, 64000, 256000)
    assert budget.grids()[("dj30", "factorvae")] == budget.BUDGETS["dj30"]


@pytest.mark.filterwarnings("ignore::storm_lib.data.DataQualityWarning")
def test_the_largest_sp500_budget_is_at_least_five_passes(data_dir):
    from storm_lib.data import load_prices
    from storm_lib.panel import split_indices

    dates = pd.DatetimeIndex(load_prices("sp500", data_dir=data_dir)["date"].unique())
    n_train = len(split_indices(dates, 64, "clean", "train"))
    assert max(budget.BUDGETS["sp500"]) >= 5 * n_train


def _fake_run(root, model="transformer", seed=0, b=1000, val=0.02, test=0.01, options=None):
    from storm_lib.run import RunSpec, code_identity

    options = {budget.OPTION: b} if options is None else options
    name = model + "".join(f"-{k}={v}" for k, v in sorted(options.items()))
    path = root / "portfolio" / "dj30" / name / f"clean-cpu-seed{seed}-0000000{seed}"
    path.mkdir(parents=True)
    spec = {"task": "portfolio", "universe": "dj30", "model": model, "protocol": "clean", "profile": "cpu",
            "seed": seed, "options": options}
    record = {"spec": spec, "identity": code_identity(RunSpec(**spec)), "wall_seconds": 50.0,
              "info": {"windows_seen": b, "train_windows": 2768, "fit_seconds": 40.0, "best_epoch": 1}}
    (path / "run.json").write_text(json.dumps(record))
    pd.DataFrame({"split": ["valid", "test", "test"], "convention": ["standard", "standard", "official"],
                  "metric": ["RankIC"] * 3, "value": [val, test, 9.0]}).to_csv(path / "metrics.csv", index=False)
    pd.DataFrame({"epoch": [1, 2], "val_RankIC": [val, val - 0.01], "windows": [800, b]}).to_csv(
        path / "history.csv", index=False)
    return path


def test_load_reads_budget_runs_only(tmp_path):
    _fake_run(tmp_path, seed=0, val=0.02, test=0.01)
    _fake_run(tmp_path, seed=1, b=4000, val=0.03, test=-0.01)
    _fake_run(tmp_path, seed=0, options={})                              # a plain run: not a budget point
    _fake_run(tmp_path, seed=0, options={budget.OPTION: 1000, "lr": 0.1})  # another option too: not either
    runs = budget.load(tmp_path)
    assert list(runs["budget"]) == [1000, 4000] and list(runs["seed"]) == [0, 1]
    r = runs.iloc[0]
    assert r["val_RankIC"] == 0.02 and r["test_RankIC"] == 0.01 and r["windows_seen"] == 1000
    assert r["val_final"] == pytest.approx(0.01)        # the last epoch of history.csv, not the selected one
    assert r["passes"] == pytest.approx(1000 / 2768) and r["epochs"] == 2 and r["compute_seconds"] == 50.0
    assert budget.load(tmp_path / "nothing").empty


def test_budget_runs_are_their_own_part_of_the_compute_record():
    from storm_lib.presentation.compute import run_purpose

    assert run_purpose("portfolio", "clean", "budget_windows=4000") == "Training budget"
    assert run_purpose("portfolio", "clean", "") == "Tables 2, 4, ablations"


def test_page_tables_and_text_say_what_is_not_run_yet():
    from storm_lib import presentation as nb

    runs = _runs({1000: [0.009, 0.011], 4000: [0.035, 0.037], 16000: [0.035, 0.045], 64000: [0.030, 0.034]})
    s = budget.summarise(runs)
    c = budget.choose(s)
    t = nb.budget_table(s, "dj30", ["transformer", "storm"])
    assert t.loc[("Transformer", "4,000"), "val RankIC, end of training"] == "0.0360 ± 0.0010"
    assert t.loc[("Transformer", "4,000"), "val RankIC, selected epoch"] == "0.0460 ± 0.0010"
    assert t.loc[("STORM", "64,000"), "val RankIC, end of training"] == "not run yet"
    ct = nb.budget_choice_table(c, "dj30", ["transformer", "storm"])
    assert ct.loc["Transformer", "chosen budget"] == "4,000" and ct.loc["STORM", "status"] == "not run yet"
    text = nb.budget_text(c, "dj30", "DJ30", ["transformer", "storm"])
    assert "**4,000 windows**" in text and "STORM**: not run yet on DJ30" in text
    rising = budget.choose(budget.summarise(_runs({1000: [0.01, 0.011], 4000: [0.02, 0.021], 16000: [0.03, 0.031],
                                                   64000: [0.04, 0.041]})))
    assert rising["needs_windows"].tolist() == [256_000]
    rec = {"spec": {"task": "portfolio", "universe": "dj30", "model": "transformer", "profile": "cpu",
                    "options": {budget.OPTION: 1000}}, "info": {"windows_seen": 1000, "fit_seconds": 100.0}}
    text = nb.budget_text(rising, "dj30", "DJ30", ["transformer"], [(rec, 460.0)])  # 360 s + 0.1 s per window
    assert "**inconclusive: needs >= 256,000 windows**. One run of 256,000 windows would take about 7.2" in text
    assert "14.4 for the study's 2 seeds" in text
    from storm_lib import plots

    fig = plots.budget_curves(runs, s, title="t")
    assert len(fig.axes) == 3 and fig.axes[0].get_xscale() == "log"
    empty = plots.budget_curves(runs.iloc[:0], s.iloc[:0])
    assert "not run yet" in [t.get_text() for t in empty.axes[0].texts]


@pytest.mark.filterwarnings("ignore::storm_lib.data.DataQualityWarning")
def test_a_smoke_budget_run_records_windows_seen_and_fit_seconds(data_dir, tmp_path):
    from storm_lib.run import RunSpec, run_grid

    spec = RunSpec.make("portfolio", "dj30", "transformer", profile="smoke", seed=0, options={budget.OPTION: 100})
    out = run_grid([spec], tmp_path, data_dir=data_dir, progress=False)
    assert out["status"][0] == "done", out["error"][0]
    info = json.loads((Path(out["run_dir"][0]) / "run.json").read_text())["info"]
    assert info["windows_seen"] == 100 and info["train_windows"] > 2000 and info["fit_seconds"] > 0
    hist = pd.read_csv(f"{out['run_dir'][0]}/history.csv")
    assert list(hist["windows"]) == [64, 100] and hist["lr"].iloc[-1] == 0  # smoke: 8 steps x 8 windows an epoch
    r = budget.load(tmp_path, profile="smoke").iloc[0]
    assert r["budget"] == 100 and r["windows_seen"] == 100 and r["epochs"] == 2


def test_missing_text_lists_budgets_and_seeds_per_model():
    from storm_lib import presentation as nb

    specs = budget.specs(["dj30"], ["transformer", "storm"], seeds=(0, 1))
    plan = pd.DataFrame({"universe": [s.universe for s in specs], "model": [s.model for s in specs],
                         "seed": [s.seed for s in specs], "spec": specs,
                         "finished": [s.model == "transformer" and s.options_dict[budget.OPTION] == 1000
                                      for s in specs]})
    text = nb.budget_missing_text(plan)
    assert text.startswith("2 of 16 runs of the grid are finished.")
    assert "- DJ30 Transformer: 4,000: 0, 1; 16,000: 0, 1; 64,000: 0, 1" in text
    assert "- DJ30 STORM: 1,000: 0, 1;" in text and "--model storm transformer`" in text
    assert nb.budget_missing_text(plan.assign(finished=True)) == "16 of 16 runs of the grid are finished."
    # with timings: a transformer run of 1,000 windows that cost 110 s (fit 100 s) -> 10 s + 0.1 s per window
    rec = {"spec": {"task": "portfolio", "universe": "dj30", "model": "transformer", "profile": "cpu",
                    "options": {budget.OPTION: 1000}}, "info": {"windows_seen": 1000, "fit_seconds": 100.0}}
    timed = nb.budget_missing_text(plan, [(rec, 110.0)])
    assert "- DJ30 Transformer: 4,000: 0, 1 (≈ 13.7 min); 16,000: 0, 1 (≈ 53.7 min)" in timed
    assert "In all about 4.7 one-core hours for the budgets with an estimate" in timed   # STORM: no estimate


def test_cli_dry_run_prints_the_runner_commands_and_table_reads_runs(tmp_path, capsys):
    assert budget.main(["run", "--universe", "dj30", "--model", "factorvae", "--seed", "0", "--budget", "4000",
                        "1000", "--dry-run", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 run(s), smallest budget first")
    assert out[1].strip().endswith("--seed 0 --option budget_windows=1000") and "budget_windows=4000" in out[2]
    assert not (tmp_path / "portfolio").exists()
    _fake_run(tmp_path, model="factorvae", seed=0)
    _fake_run(tmp_path, model="factorvae", seed=1, val=0.04)
    assert budget.main(["table", "--results-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "factorvae" in text and "0.03" in text and "not run yet" in text


def test_profile_budgets_give_the_families_their_choice_and_other_torch_models_the_largest():
    runs = pd.concat([_runs({1000: [0.01, 0.012], 4000: [0.03, 0.031], 16000: [0.03, 0.032]}, model=m)
                      for m in ("transformer", "factorvae", "storm_wo_ts", "storm_wo_cs")]
                     + [_runs({1000: [0.00, 0.01], 4000: [0.01, 0.02], 16000: [0.05, 0.052]}, model="storm")])
    chosen = budget.choose(budget.summarise(runs), grid={"dj30": (1000, 4000, 16000)})
    got = budget.profile_budgets(chosen)
    assert set(got) == {"dj30"}
    b = got["dj30"]
    assert b["transformer"] == b["factorvae"] == 4000 and b["storm"] == 16000   # storm: still rising
    assert b["lstm"] == b["hirevae"] == b["cafactor"] == 16000                     # equal windows seen
    assert "lightgbm" not in b                                                      # not a torch model
    # a universe with a family not run yet, or a curve that misses a budget of the grid, gets no budgets
    assert budget.profile_budgets(budget.choose(budget.summarise(runs[runs["model"] != "storm"]),
                                                grid={"dj30": (1000, 4000, 16000)})) == {}
    assert budget.profile_budgets(budget.choose(budget.summarise(runs),
                                                grid={"dj30": (1000, 4000, 16000, 64000)})) == {}


def test_agent_summary_averages_stocks_per_seed_then_seeds_and_counts_activity():
    rows = []
    for b, vals in {51_200: [0.2, 0.4], 204_800: [0.5, 0.7]}.items():
        for seed, v in enumerate(vals):
            for k, stock in enumerate(["AAPL", "JPM"]):
                rows.append({"model": "ppo", "budget": b, "seed": seed, "stock": stock, "val_ASR": v + 0.1 * k,
                             "test_ASR": -v, "trades": 1 if b == 51_200 else 6, "long share": 1.0,
                             "holds": b == 51_200, "never long": False, "compute_seconds": b / 1000,
                             "model_version": 1, "run_dir": f"/x/{b}/{seed}"})
    s = budget.summarise_agents(pd.DataFrame(rows, columns=budget.AGENT_COLUMNS)).set_index("budget")
    assert s.loc[51_200, "val_mean"] == pytest.approx(0.35)        # seeds' stock means 0.25 and 0.45
    assert s.loc[51_200, "val_se"] == pytest.approx(np.std([0.25, 0.45], ddof=1) / math.sqrt(2))
    assert s.loc[51_200, "holds"] == 4 and s.loc[204_800, "holds"] == 0 and s.loc[204_800, "trades"] == 6
    assert s.loc[204_800, "stock runs"] == 4 and s.loc[204_800, "compute_mean_s"] == pytest.approx(204.8)
    c = budget.choose(s.reset_index(), grid=budget.agent_grid()).iloc[0]
    assert c["chosen_budget"] == 204_800 and c["missing"] == [819_200]
    assert c["status"].startswith("still rising at 204,800")


def test_agent_budget_runs_end_to_end_on_the_smoke_profile(data_dir, tmp_path):
    from storm_lib.run import run_grid

    specs = budget.agent_specs(["ppo"], seeds=[0], budgets=[256, 512], profile="smoke")
    assert [s.options_dict for s in specs] == [{"agent_eval_every": 25, "agent_timesteps": 256},
                                               {"agent_eval_every": 51, "agent_timesteps": 512}]
    res = run_grid(specs, tmp_path, data_dir=data_dir, progress=False)
    assert (res["status"] == "done").all(), res["error"].tolist()
    runs = budget.load_agents(tmp_path, profile="smoke")
    assert len(runs) == 10 and set(runs["budget"]) == {256, 512}           # 2 budgets x 5 stocks
    assert runs["trades"].between(0, 300).all() and runs["val_ASR"].notna().all()
    s = budget.summarise_agents(runs)
    assert list(s["budget"]) == [256, 512] and (s["stock runs"] == 5).all()


def test_remaining_lists_unfinished_points_with_a_compute_estimate():
    runs = _runs({1000: [0.01, 0.02], 4000: [0.03]})  # compute = budget / 90 of which fit = budget / 100
    left = budget.remaining(runs, ["dj30"], models=["transformer", "storm"]).set_index(["model", "budget"])
    assert left.loc[("transformer", 4000), "seeds"] == [1]
    assert left.loc[("transformer", 64000), "seeds"] == [0, 1]
    # per run: the median fixed cost (1000 / 900 s: two of the three runs) + 0.01 s per window
    assert left.loc[("transformer", 64000), "est_hours"] == pytest.approx(2 * (1000 / 900 + 640) / 3600)
    assert ("transformer", 1000) not in left.index
    assert np.isnan(left.loc[("storm", 1000), "est_hours"])   # no finished run to estimate from


def test_the_committed_profile_budgets_follow_the_committed_curves():
    """storm_lib/budgets.json (Profile.budgets of the cpu profile) holds exactly what the rule gives on the
    committed budget runs: a finished curve cannot be left unapplied, nor a choice outlive its curve."""
    from storm_lib.profiles import PROFILES, chosen_budgets
    from storm_lib.utils import REPO_ROOT

    runs = budget.load(REPO_ROOT / "results")
    assert chosen_budgets("cpu") == budget.profile_budgets(budget.choose(budget.summarise(runs)))
    assert PROFILES["cpu"].budgets == chosen_budgets("cpu")


def test_a_budget_run_records_the_end_of_training_model_beside_the_selected_one(data_dir, tmp_path, monkeypatch):
    """RankIC_end is the model after the last epoch: its validation value is the last line of history.csv
    (the same computation), while every other number is the selected epoch's, restored afterwards."""
    from storm_lib.run import RunSpec, run_grid

    monkeypatch.setenv("STORM_REUSE_FITS", "0")
    # seed 1: the best epoch is the first of three, so the selected and the end-of-training models differ
    spec = RunSpec.make("portfolio", "dj30", "lstm", profile="smoke", seed=1, options={budget.OPTION: 160})
    res = run_grid([spec], tmp_path, data_dir=data_dir, progress=False)
    assert res["status"][0] == "done", res["error"][0]
    path = Path(res["run_dir"][0])
    m = pd.read_csv(path / "metrics.csv", keep_default_na=False, na_values=[""])
    end = m[m["metric"] == "RankIC_end"].set_index("split")["value"]
    hist = pd.read_csv(path / "history.csv")
    assert len(hist) == 3 and set(end.index) == {"valid", "test"}
    assert end["valid"] == pytest.approx(hist["val_RankIC"].iloc[-1], abs=1e-9)
    selected = m[(m["metric"] == "RankIC") & (m["convention"] == "standard")].set_index("split")["value"]
    assert selected["valid"] == pytest.approx(hist["val_RankIC"].max(), abs=1e-9)
    assert hist["best"].tolist() == [True, False, False] and end["valid"] != selected["valid"]
    row = budget.load(tmp_path, profile="smoke").iloc[0]
    assert row["test_final"] == end["test"] and row["val_final"] == hist["val_RankIC"].iloc[-1]


def test_end_of_training_rows_are_the_selected_ones_when_the_last_epoch_was_selected(tmp_path):
    """Same weights, same numbers: copied from the selected rows, nothing predicted (the model here has no
    network, so a prediction would raise)."""
    from types import SimpleNamespace

    import torch

    from storm_lib.tasks.portfolio import end_of_training_rows

    torch.save({"net": {}, "epoch": 4, "best_epoch": 4}, tmp_path / "last.pt")
    selected = [{"split": s, "convention": c, "metric": m, "value": v}
                for s, base in (("valid", 0.01), ("test", 0.02)) for c, shift in (("standard", 0.0), ("official", 1.0))
                for m, v in (("RankIC", base + shift), ("RankICIR", 10 * base + shift))]
    rows = end_of_training_rows(SimpleNamespace(run_dir=tmp_path), None, None, selected)
    got = {(r["split"], r["metric"]): r["value"] for r in rows}
    assert got == {("valid", "RankIC_end"): 0.01, ("valid", "RankICIR_end"): 0.1,
                   ("test", "RankIC_end"): 0.02, ("test", "RankICIR_end"): 0.2}
    assert {r["convention"] for r in rows} == {"-"}
    torch.save({"net": {}, "epoch": 4, "best_epoch": 1}, tmp_path / "last.pt")
    with pytest.raises(AttributeError):  # another epoch was selected: the last weights must be evaluated
        end_of_training_rows(SimpleNamespace(run_dir=tmp_path), None, None, selected)


def test_no_end_of_training_rows_without_the_fit_s_last_checkpoint(tmp_path):
    """A fit restored from the shared store left no last.pt in this run: nothing is reported, rather than
    the selected weights under the end-of-training name."""
    from types import SimpleNamespace

    from storm_lib.tasks.portfolio import end_of_training_rows

    assert end_of_training_rows(SimpleNamespace(run_dir=None), None, None) == []
    assert end_of_training_rows(SimpleNamespace(run_dir=tmp_path), None, None) == []


def test_chosen_agent_steps_enter_only_that_methods_runs_and_pair_plain_and_study_runs(monkeypatch):
    """A chosen step count (`agents-apply`, trading.experiment.CHOSEN_AGENT_BUDGETS) changes the budget,
    hence the identity, of the listed methods only; a plain trading run and the study run at the method's
    profile budget are each other's twin (storm_lib.run.budget_twin), any other budget has none; the
    profile's hash does not move."""
    from storm_lib.run import RunSpec, budget_twin, code_identity
    from storm_lib.trading import experiment
    from storm_lib.trading.experiment import agent_budget

    def spec(model, **opts):
        return RunSpec.make("trading", "dj30", model, "clean", "cpu", 1, opts)

    assert agent_budget("lightgbm", "cpu") is None and agent_budget("storm", "cpu")["algo"] == "ppo"
    assert budget_twin(spec("ppo")).options_dict == {"agent_timesteps": 51_200, "agent_eval_every": 5_120}
    assert budget_twin(spec("ppo", agent_timesteps=51_200, agent_eval_every=5_120)) == spec("ppo")
    assert budget_twin(spec("ppo", agent_timesteps=204_800, agent_eval_every=20_480)) is None
    assert budget_twin(spec("buy_and_hold")) is None
    before = {m: code_identity(spec(m)) for m in ("ppo", "dqn", "storm")}

    monkeypatch.setitem(experiment.CHOSEN_AGENT_BUDGETS, "cpu", {"ppo": 204_800, "dqn": 50_000})
    assert agent_budget("ppo", "cpu")["timesteps"] == 204_800 and agent_budget("ppo", "cpu")["eval_every"] == 20_480
    assert code_identity(spec("ppo"))["task_config"]["agent"]["timesteps"] == 204_800
    assert code_identity(spec("dqn")) == before["dqn"]        # chosen = the default: the same runs
    assert code_identity(spec("storm")) == before["storm"]    # STORM-PPO is its own method
    assert code_identity(spec("ppo"))["profile"] == before["ppo"]["profile"]
    assert budget_twin(spec("ppo")).options_dict == {"agent_timesteps": 204_800, "agent_eval_every": 20_480}
    assert budget_twin(spec("ppo", agent_timesteps=204_800, agent_eval_every=20_480)) == spec("ppo")
    assert budget_twin(spec("ppo", agent_timesteps=51_200, agent_eval_every=5_120)) is None


def test_a_plain_trading_run_adopts_the_agent_study_run_of_its_budget(data_dir, tmp_path, monkeypatch):
    """With a chosen step count the plain PPO run trains with it; the study's run of that budget already did,
    so the plain run is a copy (status "adopted"), equal to a fresh run of its own; in the other order the
    study's point is the copy, and the study's table counts the twin's compute, not the copy's."""
    from storm_lib.run import RunSpec, run_grid
    from storm_lib.trading import experiment

    monkeypatch.setitem(experiment.CHOSEN_AGENT_BUDGETS, "smoke", {"ppo": 300})
    (study,) = budget.agent_specs(["ppo"], seeds=[0], budgets=[300], profile="smoke")
    plain = RunSpec.make("trading", "dj30", "ppo", "clean", "smoke", 0)
    a = run_grid([study, plain], tmp_path / "a", data_dir=data_dir, progress=False)
    assert list(a["status"]) == ["done", "adopted"], a["error"].tolist()
    # the other order in a fresh results dir: the plain run trains, the study's point is its copy
    b = run_grid([plain, study], tmp_path / "b", data_dir=data_dir, progress=False)
    assert list(b["status"]) == ["done", "adopted"], b["error"].tolist()
    pa, pb = Path(a["run_dir"][1]), Path(b["run_dir"][0])   # the plain run: adopted, and trained
    assert pa.relative_to(tmp_path / "a") == pb.relative_to(tmp_path / "b")
    rec = json.loads((pb / "run.json").read_text())
    assert rec["info"]["timesteps"] == 300 and rec["identity"]["task_config"]["agent"]["eval_every"] == 30
    m = [pd.read_csv(p / "metrics.csv") for p in (pa, pb)]
    keep = [~x["metric"].isin(["train_seconds", "fit_seconds"]) for x in m]
    pd.testing.assert_frame_equal(m[0][keep[0]].reset_index(drop=True), m[1][keep[1]].reset_index(drop=True),
                                  check_exact=True)
    runs = budget.load_agents(tmp_path / "b", profile="smoke")
    assert len(runs) == 5 and (runs["compute_seconds"] == rec["wall_seconds"]).all()   # the twin's, not the copy's


def test_agent_profile_budgets_take_only_complete_curves():
    rows = []
    for model, points in {"dqn": {50_000: [0.1, 0.3], 200_000: [0.15, 0.15]},
                          "ppo": {51_200: [0.1, 0.2], 204_800: [0.9, 1.0]}}.items():
        for b, vals in points.items():
            for seed, v in enumerate(vals):
                rows.append({"model": model, "budget": b, "seed": seed, "stock": "IBM", "val_ASR": v, "test_ASR": v,
                             "trades": 3, "long share": 0.5, "holds": False, "never long": False,
                             "compute_seconds": 1.0, "model_version": 1, "run_dir": f"/x/{model}/{b}/{seed}"})
    choice = budget.choose(budget.summarise_agents(pd.DataFrame(rows, columns=budget.AGENT_COLUMNS)),
                           grid=budget.agent_grid())
    # DQN: both budgets run, the best is 50,000 (0.2 +- 0.1), the smallest within one SE of it;
    # PPO still misses 819,200 steps -> no choice yet
    assert budget.agent_profile_budgets(choice) == {"dqn": 50_000}


def test_the_committed_agent_budgets_follow_the_committed_agent_curves():
    from storm_lib.trading.experiment import CHOSEN_AGENT_BUDGETS, chosen_agent_budgets
    from storm_lib.utils import REPO_ROOT

    summary = budget.summarise_agents(budget.load_agents(REPO_ROOT / "results"))
    expected = budget.agent_profile_budgets(budget.choose(summary, grid=budget.agent_grid())) if len(summary) else {}
    assert chosen_agent_budgets().get("cpu", {}) == expected and CHOSEN_AGENT_BUDGETS.get("cpu", {}) == expected


def test_writing_a_choice_keeps_other_entries_and_honours_dry_run(tmp_path, capsys):
    path = tmp_path / "budgets.json"
    path.write_text(json.dumps({"cpu": {"dj30": {"storm": 64000}}}))
    budget._write_choice(("agents", "cpu"), {"ppo": 204800}, dry_run=True, path=path)
    assert "dry run" in capsys.readouterr().out
    assert json.loads(path.read_text()) == {"cpu": {"dj30": {"storm": 64000}}}
    budget._write_choice(("agents", "cpu"), {"ppo": 204800}, dry_run=False, path=path)
    assert json.loads(path.read_text()) == {"cpu": {"dj30": {"storm": 64000}}, "agents": {"cpu": {"ppo": 204800}}}
    budget._write_choice(("cpu",), {"dj30": {"storm": 16000}}, dry_run=False, path=path)
    assert json.loads(path.read_text())["cpu"] == {"dj30": {"storm": 16000}}
    assert json.loads(path.read_text())["agents"] == {"cpu": {"ppo": 204800}}
    capsys.readouterr()
    budget._write_choice(("cpu",), {"dj30": {"storm": 16000}}, dry_run=False, path=path)
    assert "no change" in capsys.readouterr().out

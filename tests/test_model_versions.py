"""Model versions in the run identity and in load_results (issue 16), and the score anatomy."""

import json

import numpy as np
import pandas as pd
import pytest

from storm_lib import anatomy
from storm_lib import run as runner
from storm_lib.models import MODEL_VERSIONS, model_version


class FakeCtx:
    def prices_hash(self, universe):
        return "p"

    def index_hash(self, universe):
        return "i"


def test_version_enters_identity_only_above_one(monkeypatch):
    spec = runner.RunSpec("portfolio", "dj30", "lstm", "clean", "cpu", 0)
    ident = runner.identity(spec, FakeCtx())
    assert "model_version" not in ident and MODEL_VERSIONS["lstm"] == 1  # version-1 hashes unchanged
    storm = runner.RunSpec("portfolio", "dj30", "storm", "clean", "cpu", 0)
    assert runner.identity(storm, FakeCtx())["model_version"] == model_version("storm") == 4
    h2 = runner.run_hash(storm, FakeCtx())
    monkeypatch.setitem(MODEL_VERSIONS, "storm", 5)
    assert runner.run_hash(storm, FakeCtx()) != h2  # a new version is a new run directory


def _fake_run(root, model, seed, version, value, options=None):
    name = f"clean-cpu-seed{seed}-v{version}"
    folder = model + "".join(f"-{k}={v}" for k, v in (options or {}).items())
    path = root / "portfolio" / "dj30" / folder / name
    path.mkdir(parents=True)
    rec = {"spec": {"task": "portfolio", "universe": "dj30", "model": model, "protocol": "clean",
                    "profile": "cpu", "seed": seed, "options": options or {}}}
    if version is not None:
        rec["model_version"] = version
    (path / "run.json").write_text(json.dumps(rec))
    pd.DataFrame({"split": ["test"], "convention": ["standard"], "metric": ["RankIC"],
                  "value": [value]}).to_csv(path / "metrics.csv", index=False)
    return path


def test_load_results_keeps_only_the_current_version(tmp_path):
    _fake_run(tmp_path, "storm", 0, None, 0.01)      # written before versions were recorded: version 1
    _fake_run(tmp_path, "storm", 1, 1, 0.02)
    cur = model_version("storm")
    _fake_run(tmp_path, "storm", 0, cur, 0.03)
    _fake_run(tmp_path, "lstm", 0, None, 0.04)        # another group: untouched
    # other options: its own group, but only version-1 runs of a model now at version 2: superseded too
    _fake_run(tmp_path, "storm", 0, None, 0.05, {"codebook_size": 128})
    res = runner.load_results(tmp_path)
    assert sorted(res["value"]) == [0.03, 0.04]
    assert not res["superseded"].any()
    assert set(res.loc[res["model"] == "storm", "model_version"]) == {cur}
    full = runner.load_results(tmp_path, include_superseded=True)
    assert len(full) == 5 and sorted(full.loc[full["superseded"], "value"]) == [0.01, 0.02, 0.05]
    runs = runner.list_runs(tmp_path)
    assert runs["superseded"].sum() == 3


def test_score_anatomy_separates_a_static_tilt_from_a_moving_signal():
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2020-01-01", periods=300)
    tickers = [f"S{i}" for i in range(20)]
    tilt = rng.standard_normal(20)
    static = pd.DataFrame(tilt + 0.1 * rng.standard_normal((300, 20)), dates, tickers)
    moving = pd.DataFrame(rng.standard_normal((300, 20)), dates, tickers)
    a, b = anatomy.score_anatomy(static), anatomy.score_anatomy(moving)
    assert a["stock_share"] > 0.95 and a["rank_autocorr"] > 0.9
    assert b["stock_share"] < 0.05 and abs(b["rank_autocorr"]) < 0.1
    # signals: a score equal to the low-volatility ranking correlates 1 with it
    close = pd.DataFrame(np.exp(np.cumsum(0.01 * rng.standard_normal((300, 20)) * (1 + np.arange(20)), 0)),
                         dates, tickers)
    prices = close.stack().rename("adj_close").rename_axis(["date", "ticker"]).reset_index()
    sig = anatomy.trailing_signals(prices)
    c = anatomy.score_anatomy(sig["low_vol"].iloc[25:], sig)
    assert c["corr_low_vol"] == pytest.approx(1.0)


def test_history_labels_keep_an_earlier_budget_apart_from_the_current_runs():
    v = model_version("storm")
    runs = pd.DataFrame({"model": ["storm", "storm", "storm", "lstm"], "model_version": [v - 1, v, v, 1],
                         "superseded": [True, True, False, False], "seed": [0, 0, 0, 0],
                         **{m: [0.1, 0.2, 0.3, 0.4] for m in anatomy.METRICS}})
    labels = anatomy.history_labels(runs)["model_version"].tolist()
    assert labels == [str(v - 1), f"{v} (earlier budget)", str(v), "1"]
    table = anatomy.anatomy_table(anatomy.history_labels(runs))
    assert table.loc[("storm", str(v)), "stock_share"] == 0.3      # the current run is not averaged with the old
    assert "(earlier budget)" in anatomy.markdown(table, "dj30")


def test_usage_table_means_over_seeds_per_split():
    from storm_lib.presentation import usage_table

    rows = []
    for seed, used in ((0, 100), (1, 200)):
        for split in ("test", "train", "valid"):
            for metric, value in (("codes_used_cs", used), ("align_loss", 2.0), ("align_top1", 0.3),
                                  ("RankIC", 0.1)):
                rows.append({"task": "portfolio", "universe": "dj30", "model": "storm", "options": "",
                             "protocol": "clean", "profile": "cpu", "seed": seed, "split": split,
                             "convention": "standard" if metric == "RankIC" else "-", "metric": metric,
                             "value": value})
    t = usage_table(pd.DataFrame(rows), "dj30")
    assert list(t.columns.get_level_values("split")) == ["train", "valid", "test"]   # a column per split
    assert (t.loc["codes_used_cs"] == 150).all() and (t.loc["seeds"] == 2).all() and "RankIC" not in t.index
    assert usage_table(pd.DataFrame(rows), "sp500").empty

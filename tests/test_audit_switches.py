"""The protocol-audit switches (storm_lib.audit): each off by default, each changing exactly what it
names, reachable as run options without disturbing the identity of runs without options.

(f)'s features are tested against a per-ticker reference in tests/test_features_official.py.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import planted_panel

from storm_lib import audit, portfolio
from storm_lib.models.storm import STORM, BatchAxisAttention, StormConfig
from storm_lib.panel import Protocol
from storm_lib.run import RunSpec, load_results, load_table, run_dir, run_grid
from storm_lib.tasks import TASKS, RunCache, RunContext
from storm_lib.tasks import portfolio as task

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
#: the commit before the audit switches: the old code path for the identity check
BEFORE = "2a928a9"


# --------------------------------------------------------------------------- the registry


def test_registry_order_letters_and_how_each_switch_applies():
    assert list(audit.SWITCHES) == ["test_selection", "sum_topk", "official_metrics", "sampled_predictions",
                                    "prior_across_batch", "official_features"]
    assert [s.letter for s in audit.SWITCHES.values()] == list("abcdef")
    for sw in audit.SWITCHES.values():
        assert any(r.startswith("§10") for r in sw.refs), sw.name  # each cites its defect
        assert sw.description and sw.changes
        if sw.options:  # every option is a valid task option or a STORM network option
            _, model_opts = task.split_options(dict(sw.options))
            task.task_settings("storm", dict(sw.options))
            assert set(task.model_kwargs("storm", model_opts)) <= {"model"}
    s = audit.SWITCHES
    assert s["test_selection"].protocol == "paper" and not s["test_selection"].options
    assert s["official_metrics"].convention == "official" and not s["official_metrics"].needs_run
    assert not audit.applicable("prior_across_batch", "lightgbm") and audit.applicable("prior_across_batch", "storm_wo_cs")
    assert not audit.applicable("sampled_predictions", "lstm") and audit.applicable("sampled_predictions", "factorvae")
    assert "survivorship" in audit.__doc__.lower() and "not switchable" in audit.__doc__.lower()


def test_audit_specs_clean_alone_and_cumulative():
    specs = audit.audit_specs("storm", "dj30", seeds=[0, 1], profile="smoke")
    assert len(specs) == 2 * 10 and len(set(specs)) == len(specs)
    s0 = [s for s in specs if s.seed == 0]
    clean = s0[0]
    assert clean == RunSpec("portfolio", "dj30", "storm", "clean", "smoke", 0)
    assert s0[1].protocol == "paper" and not s0[1].options                          # (a) alone
    assert s0[2].options == (("topk_variant", "official"),) and s0[2].protocol == "clean"  # (b) alone
    assert s0[3].options == (("sample_predictions", True),)                         # (d) alone
    assert s0[4].options == (("prior_across_batch", True),)                         # (e) alone
    assert dict(s0[5].options) == {"feature_set": "official152", "normalization": "prev_block"}  # (f) alone
    last = s0[-1]
    assert last.protocol == "paper" and dict(last.options) == {
        "topk_variant": "official", "sample_predictions": True, "prior_across_batch": True,
        "feature_set": "official152", "normalization": "prev_block"}
    plan = audit.audit_plan("storm", "dj30", seeds=0, profile="smoke")
    assert list(plan["kind"]).count("alone") == 6 and list(plan["kind"]).count("cumulative") == 6
    assert plan.loc[plan["step"] == "official_metrics", "convention"].item() == "official"
    assert plan.loc[plan["step"] == "official_metrics", "spec"].item() == clean  # (c): the same run, read differently
    # switches that do not apply to a model are left out
    lgb = audit.audit_specs("lightgbm", "dj30", seeds=[0], profile="smoke", cumulative=False)
    assert len(lgb) == 4 and not any(k in ("sample_predictions", "prior_across_batch") for s in lgb for k, _ in s.options)
    with pytest.raises(ValueError, match="market"):
        audit.audit_specs("market", "dj30")


def test_switches_of_inverts_the_specs():
    for _, row in audit.audit_plan("storm", "dj30", seeds=0, profile="smoke").iterrows():
        spec = row["spec"]
        on = audit.switches_of(spec.protocol, spec.options_str)
        expected = set(row["switches"].split("+")) - {"", "official_metrics"}
        assert on == expected, row["step"]
    assert audit.switches_of("clean", "codebook_size=1024") is None        # not an audit run
    assert audit.switches_of("clean", "feature_set=official152") is None   # (f) half applied
    assert audit.switches_of("sample", "") is None


def test_audit_table_deltas_and_waterfall():
    """A synthetic load_results frame: each run's value encodes its switches; (c) reads 'official'."""
    bump = {"test_selection": 0.01, "sum_topk": 0.02, "sampled_predictions": -0.04,
            "prior_across_batch": 0.08, "official_features": 0.16}
    rows = []
    for seed in (0, 1):
        for spec in audit.audit_specs("storm", "dj30", seeds=[seed], profile="smoke"):
            on = audit.switches_of(spec.protocol, spec.options_str)
            base = seed + sum(bump[n] for n in on)
            for conv, extra in (("standard", 0.0), ("paper", 5.0), ("official", 0.32)):
                for metric in ("RankIC", "APY"):
                    rows.append({**spec.as_row(), "split": "test", "convention": conv, "metric": metric,
                                 "value": base + extra})
            rows.append({**spec.as_row(), "split": "test", "convention": "-", "metric": "turnover", "value": 1.0})
            rows.append({**spec.as_row(), "split": "valid", "convention": "standard", "metric": "APY", "value": 99.0})
    other = RunSpec("portfolio", "dj30", "storm", profile="smoke", options={"codebook_size": 8})
    rows.append({**other.as_row(), "split": "test", "convention": "standard", "metric": "APY", "value": 42.0})
    table = audit.audit_table(pd.DataFrame(rows))
    assert set(table["seed"]) == {0, 1} and set(table["metric"]) == {"RankIC", "APY"}
    assert 42.0 not in set(table["value"]) and 99.0 not in set(table["value"])
    t0 = table[(table["seed"] == 0) & (table["metric"] == "APY")].set_index("step")
    assert t0.loc["clean", "value"] == 0 and t0.loc["clean", "delta"] == 0
    for name, b in bump.items():
        assert t0.loc[name, "delta"] == pytest.approx(b) and t0.loc[name, "kind"] == "alone"
    assert t0.loc["official_metrics", "delta"] == pytest.approx(0.32)
    cum = t0[t0["kind"] == "cumulative"].sort_values("step_order")
    assert list(cum.index) == ["+" + n for n in audit.SWITCHES]
    assert cum["delta"].iloc[-1] == pytest.approx(sum(bump.values()) + 0.32)
    assert np.allclose(np.diff(np.r_[0, cum["delta"]]), [0.01, 0.02, 0.32, -0.04, 0.08, 0.16])
    assert table[table["seed"] == 1].set_index(["step", "metric"]).loc[("clean", "APY"), "value"] == 1
    assert audit.audit_table(pd.DataFrame()).empty


# --------------------------------------------------------------------------- (b) the sum of the top k


def test_sum_variant_is_k_times_the_equal_weight_return():
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2021-01-01", periods=120)
    cols = [f"S{i}" for i in range(12)]
    scores = pd.DataFrame(rng.normal(size=(120, 12)), index=dates, columns=cols)
    labels = pd.DataFrame(rng.normal(0, 0.02, size=(120, 12)), index=dates, columns=cols)
    k = 5
    paper = portfolio.topk_drop(scores, labels, k=k, d=3, cost=1e-4, variant="paper")
    off = portfolio.topk_drop(scores, labels, k=k, d=3, cost=1e-4, variant="official")
    pd.testing.assert_frame_equal(paper.holdings, off.holdings)       # same selection
    np.testing.assert_allclose(off.gross, k * paper.gross, rtol=1e-12, atol=1e-15)  # before costs
    free_p = portfolio.topk_drop(scores, labels, k=k, d=3, cost=0.0, variant="paper")
    free_o = portfolio.topk_drop(scores, labels, k=k, d=3, cost=0.0, variant="official")
    np.testing.assert_allclose(free_o.returns, k * free_p.returns, rtol=1e-12, atol=1e-15)
    assert task.task_settings("storm", {"topk_variant": "official"})["variant"] == "official"
    assert task.task_settings("storm", {})["variant"] == "paper"
    with pytest.raises(ValueError, match="topk_variant must be one of"):
        task.task_settings("storm", {"topk_variant": "sum"})


# --------------------------------------------------------------------------- (d) sampled predictions

PROTO = Protocol("tiny", ("2015-03-02", "2015-12-31"), ("2016-01-01", "2016-03-31"), ("2016-04-01", "2016-06-30"))


@pytest.fixture(scope="module")
def tiny_storm():
    from storm_lib.models import make_model

    panel = planted_panel(N=8, F=5, window=16)
    model = make_model("storm", profile="smoke", seed=0, progress=False)
    torch.manual_seed(0)
    model.net = model.build_net(panel)  # untrained weights: the draws, not the fit, are under test
    return model, panel


def test_sampled_predictions_differ_are_seeded_and_centred_on_the_mean(tiny_storm):
    from storm_lib import train

    model, panel = tiny_storm
    mean = task.predict_scores(model, panel, PROTO, "test")
    a = task.predict_scores(model, panel, PROTO, "test", sample=True, seed=0)
    state = torch.get_rng_state()
    b = task.predict_scores(model, panel, PROTO, "test", sample=True, seed=0)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    c = task.predict_scores(model, panel, PROTO, "test", sample=True, seed=1)
    v = task.predict_scores(model, panel, PROTO, "valid", sample=True, seed=0)
    pd.testing.assert_frame_equal(a, b)                           # deterministic per seed
    assert a.index.equals(mean.index) and a.columns.equals(mean.columns)
    assert a.isna().equals(mean.isna())
    assert not np.allclose(a, mean) and not np.allclose(a, c)     # a draw, not the mean; seeds differ
    assert len(v) and not v.index.equals(a.index)
    # the draws are centred on the mean prediction: average of 48 draws vs mean, in units of std/sqrt(48)
    t = panel.split(PROTO, "test")
    x, mask, _ = train.batch(panel, t, torch.device("cpu"), with_y=False)
    model.net.eval()
    with torch.no_grad():
        std = model.net(x, mask).pred_std.numpy()
    draws = np.stack([task.predict_scores(model, panel, PROTO, "test", sample=True, seed=s).to_numpy()
                      for s in range(48)])
    z = (draws.mean(0) - mean.to_numpy()) / (std / np.sqrt(len(draws)))
    z = z[np.isfinite(z)]
    assert abs(z.mean()) < 0.2 and 0.6 < z.std() < 1.4               # standard normal, loosely


def test_sample_predictions_needs_a_predictive_distribution():
    assert task.task_settings("factorvae", {"sample_predictions": True})["sample_predictions"] is True
    for model in ("lightgbm", "lstm", "cafactor"):
        with pytest.raises(ValueError, match="predictive distribution"):
            task.task_settings(model, {"sample_predictions": True})
    with pytest.raises(ValueError, match="true or false"):
        task.task_settings("storm", {"sample_predictions": "yes"})


# --------------------------------------------------------------------------- (e) the prior across the batch

B, W, N, F, D = 4, 16, 6, 6, 16


def _tiny_storm(**kw) -> STORM:
    torch.manual_seed(0)
    # dropout 0 and no codebook restarts: a training-mode forward is then a function of the batch only
    return STORM(StormConfig(n_stocks=N, n_features=F, window=W, d_model=D, n_heads=2, codebook_size=16,
                             dropout=0.0, codebook_restart=0.0, **kw))


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, W, N, F, generator=g)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, 1] = False
    return x, mask


@pytest.mark.parametrize("across", [False, True])
def test_prior_across_batch_mixes_windows_only_when_on(across):
    model = _tiny_storm(prior_across_batch=across)
    x, mask = _batch()
    model(x, mask)  # first training forward: codebook data init
    x2 = x.clone()
    x2[1:] = torch.randn_like(x2[1:])  # change the other windows of the batch
    with torch.no_grad():
        for mode in ("train", "eval"):
            model.train(mode == "train")
            full = model(x, mask).pred
            other = model(x2, mask).pred
            alone = model(x[:1], mask[:1]).pred
            if across:
                assert not torch.allclose(other[0], full[0], atol=1e-4), mode
                assert not torch.allclose(alone[0], full[0], atol=1e-4), mode
            else:
                torch.testing.assert_close(other[0], full[0], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(alone[0], full[0], atol=1e-5, rtol=1e-5)
    n_mha = sum(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    assert n_mha == (model.cfg.prior_layers if across else 0)  # only the prior's attention changes


def test_prior_across_batch_changes_only_the_prior_attention():
    off, on = _tiny_storm(), _tiny_storm(prior_across_batch=True)
    a, b = off.state_dict(), on.state_dict()
    only_on = {k for k in b if k not in a}
    only_off = {k for k in a if k not in b}
    assert only_on and all(k.startswith("factor.prior.blocks.") and ".attn.mha." in k for k in only_on)
    assert only_off and all(k.startswith("factor.prior.blocks.") and ".attn." in k for k in only_off)
    # the encoders, codebooks and decoders are built identically (same seed, same order)
    for k in a:
        if not k.startswith("factor."):
            assert torch.equal(a[k], b[k]), k


def test_batch_axis_attention_is_the_official_layout():
    """nn.MultiheadAttention(L, L) on (sequence = batch, items = channels, embedding = L tokens),
    checked against the formula: per channel c and token k, a softmax over the batch's windows."""
    torch.manual_seed(1)
    b, L, d = 5, 7, 3
    layer = BatchAxisAttention(L, dropout=0.0).eval()
    f = torch.randn(b, L, d)
    valid = torch.ones(b, L, dtype=torch.bool)
    valid[2, 3] = False
    got = layer(f, key_valid=valid)
    x = (f * valid[..., None]).permute(0, 2, 1)                  # (b, d, L)
    w_q, w_k, w_v = layer.mha.in_proj_weight.split(L)
    b_q, b_k, b_v = layer.mha.in_proj_bias.split(L)
    q, k, v = x @ w_q.T + b_q, x @ w_k.T + b_k, x @ w_v.T + b_v   # (b, d, L): head k = token k, size 1
    att = torch.softmax(q[:, None] * k[None, :], dim=1)          # [i, j, c, k]: window i attends to window j
    heads = (att * v[None, :]).sum(1)                            # (b, d, L)
    want = (heads @ layer.mha.out_proj.weight.T + layer.mha.out_proj.bias).permute(0, 2, 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    one = layer(f[:1], key_valid=valid[:1])                      # batch of one: a per-window linear map
    lin = ((x[:1] @ w_v.T + b_v) @ layer.mha.out_proj.weight.T + layer.mha.out_proj.bias).permute(0, 2, 1)
    torch.testing.assert_close(one, lin, atol=1e-5, rtol=1e-5)


def test_prior_across_batch_is_a_storm_option():
    kw = task.model_kwargs("storm", {"prior_across_batch": True, "lr": 1e-3})
    assert kw == {"lr": 1e-3, "model": {"prior_across_batch": True}}
    assert StormConfig(n_stocks=2, n_features=2, window=8, patch_len=4).prior_across_batch is False


# --------------------------------------------------------------------------- task options and run identity


def _old_config():
    """The portfolio task's CONFIG before the audit switches, read from git (the old code path)."""
    try:
        src = subprocess.run(["git", "show", f"{BEFORE}:storm_lib/tasks/portfolio.py"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with commit {BEFORE} not available")
    names = {"list": list}  # CONFIG reads the module constant SPLITS through list(...)
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("SPLITS", "CONFIG"):
                names[name] = eval(compile(ast.Expression(node.value), "old", "eval"), {"__builtins__": {}}, names)
    assert "CONFIG" in names, "no CONFIG in the old portfolio task"
    return names["CONFIG"]


def test_options_split_validate_and_leave_the_config_alone():
    assert task.CONFIG == _old_config() and TASKS["portfolio"].config is task.CONFIG
    opts = {"topk_variant": "official", "sample_predictions": True, "feature_set": "official152",
            "normalization": "prev_block", "prior_across_batch": True, "lr": 1e-3}
    t, m = task.split_options(opts)
    assert set(t) == {"topk_variant", "sample_predictions", "feature_set", "normalization"}
    assert m == {"prior_across_batch": True, "lr": 1e-3}
    settings = task.task_settings("storm", opts)
    assert settings == {**task.CONFIG, "variant": "official", "sample_predictions": True,
                        "feature_set": "official152", "normalization": "prev_block"}
    assert task.task_settings("storm", {"lr": 1e-3}) == {**task.CONFIG, "sample_predictions": False}
    with pytest.raises(ValueError, match="options of the portfolio task"):
        task.model_kwargs("storm", {"feature_set": "official152"})  # e.g. the trading task: never silently dropped
    with pytest.raises(ValueError, match="feature_set must be one of"):
        task.task_settings("storm", {"feature_set": "alpha360"})
    with pytest.raises(ValueError, match="normalization must be one of"):
        task.task_settings("storm", {"normalization": "zscore"})
    with pytest.raises(ValueError, match="market"):
        task.task_settings("market", {"topk_variant": "official"})


def test_option_runs_get_new_dirs_and_plain_runs_keep_theirs(data_dir, tmp_path, monkeypatch):
    ctx = RunContext(data_dir=data_dir, progress=False)
    plain = RunSpec("portfolio", "dj30", "storm", profile="smoke", seed=0)
    now = run_dir(plain, tmp_path, ctx)
    monkeypatch.setattr(TASKS["portfolio"], "config", _old_config())  # the old code path's identity
    assert run_dir(plain, tmp_path, ctx) == now
    monkeypatch.undo()
    dirs = {now}
    for spec in audit.audit_specs("storm", "dj30", seeds=[0], profile="smoke"):
        if spec != plain:
            path = run_dir(spec, tmp_path, ctx)
            assert path not in dirs
            dirs.add(path)
    assert len(dirs) == 10


# --------------------------------------------------------------------------- every run switch at once, for real


def test_all_run_switches_in_one_smoke_run(data_dir, tmp_path):
    opts = {"topk_variant": "official", "sample_predictions": True, "prior_across_batch": True,
            "feature_set": "official152", "normalization": "prev_block"}
    spec = RunSpec("portfolio", "dj30", "storm", "paper", "smoke", 0, opts)
    summary = run_grid([spec], tmp_path, data_dir=data_dir, progress=False, cache=RunCache())
    assert summary["status"][0] == "done", summary["error"][0]
    path = Path(summary["run_dir"][0])
    rec = json.loads((path / "run.json").read_text())
    info = rec["info"]
    assert info["n_features"] == 152 and info["feature_set"] == "official152"
    assert "normalization='prev_block'" in info["panel"]
    assert info["task_settings"] == {"variant": "official", "sample_predictions": True,
                                     "feature_set": "official152", "normalization": "prev_block"}
    assert info["model"]["config"]["prior_across_batch"] is True
    assert rec["identity"]["task_config"] == task.CONFIG  # the options are hashed through the spec
    # (b): the stored returns are the official sum variant of the stored scores
    scores = load_table(path, "scores").astype(float)
    daily = load_table(path, "daily")
    from storm_lib import data

    prices = data.load_prices("dj30", data_dir=data_dir)
    labels = data.next_day_returns(prices).reindex(index=scores.index, columns=scores.columns)
    bt = portfolio.topk_drop(scores, labels, k=5, d=3, cost=1e-4, variant="official")
    np.testing.assert_allclose(daily["return"].to_numpy(), bt.returns.to_numpy(), rtol=1e-5, atol=1e-7)
    res = load_results(tmp_path)
    table = audit.audit_table(res)
    assert set(table["step"]) == {"+official_features"}  # all switches on: the last cumulative step


def test_waterfall_keeps_every_level_and_the_published_range_in_view():
    from storm_lib import plots

    steps = {"APY": pd.Series([0.08, 0.05, 2.2, 1.9, 1.5], index=["clean", "+a", "+b", "+c", "+d"]),
             "RankIC": pd.Series([0.007, -0.004], index=["clean", "+a"])}
    fig = plots.waterfall(steps, {"APY": [("paper STORM", 0.148, 0.046)], "RankIC": ("paper", 0.065, 0.038)})
    apy, ric = fig.axes[:2]
    assert apy.get_ylim()[1] > 2.2 and apy.get_ylim()[0] <= 0.0
    assert ric.get_ylim()[1] > 0.065 + 0.038 and ric.get_ylim()[0] < -0.004

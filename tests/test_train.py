"""The shared training loop, with a tiny linear network standing in for STORM."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from storm_lib import train
from storm_lib.models.base import TorchReturnModel
from storm_lib.panel import Panel, Protocol
from storm_lib.profiles import PROFILES, TrainConfig, get_profile

from conftest import planted_panel as _planted

PROTO = Protocol("tiny", ("2015-03-02", "2015-12-31"), ("2016-01-01", "2016-06-30"), ("2016-07-01", "2016-12-30"))


@dataclass
class Out:
    pred: torch.Tensor
    losses: dict
    loss: torch.Tensor


class LinearNet(torch.nn.Module):
    """Score = linear map of the last day's features, with dropout so the RNG matters."""

    def __init__(self, F):
        super().__init__()
        self.lin = torch.nn.Linear(F, 1)
        self.drop = torch.nn.Dropout(0.2)

    def forward(self, x, mask, y=None, sample=False):
        pred = self.lin(self.drop(x[:, -1])).squeeze(-1)
        losses = {}
        if y is not None:
            ok = mask & torch.isfinite(y)
            losses["mse"] = ((pred - torch.nan_to_num(y)) ** 2)[ok].mean()
        loss = sum(losses.values()) if losses else pred.sum() * 0
        return Out(pred, losses, loss)


class LinearModel(TorchReturnModel):
    name = "linear"

    def build_net(self, panel):
        return LinearNet(panel.shape[2])


def planted_panel(**kw):
    return _planted(**{"N": 8, "F": 3, **kw})


CFG = dict(batch_size=8, max_epochs=4, patience=2, lr=5e-2, steps_per_epoch=10, eval_batch_size=64)


def model(run_dir=None, seed=0, **kw):
    return LinearModel(profile=get_profile("smoke"), seed=seed, run_dir=run_dir, progress=False, **{**CFG, **kw})


def test_profiles():
    assert set(PROFILES) == {"smoke", "cpu", "paper"}
    assert PROFILES["paper"].storm["d_model"] == 256 and PROFILES["paper"].window == 64
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("huge")


def test_label_normalisation_is_per_day_over_valid_stocks():
    y = np.array([[1.0, 2.0, 3.0, np.nan], [5.0, 5.0, 5.0, 5.0], [1.0, np.nan, np.nan, np.nan]])
    mask = np.array([[True, True, True, True], [True, True, True, True], [True, True, True, True]])
    z = train.normalise_labels(y, mask)
    np.testing.assert_allclose(z[0, :3], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    assert np.isnan(z[0, 3]) and np.isnan(z[1]).all() and np.isnan(z[2]).all()
    mask[0, 2] = False
    np.testing.assert_allclose(train.normalise_labels(y, mask)[0, :2], [-1.0, 1.0])


def test_fit_learns_and_is_deterministic():
    panel = planted_panel()
    a = model().fit(panel, PROTO)
    b = model().fit(panel, PROTO)
    sa, sb = a.predict(panel, split="test"), b.predict(panel, split="test")
    pd.testing.assert_frame_equal(sa, sb)
    assert list(a.history_.columns[:3]) == ["epoch", "loss", "mse"] and "val_RankIC" in a.history_
    assert a.history_["val_RankIC"].max() > 0.3
    c = model(seed=1).fit(panel, PROTO)
    assert not np.allclose(sa.to_numpy(), c.predict(panel, split="test").to_numpy())


def test_selection_never_looks_at_test_labels():
    panel = planted_panel()
    test_t = panel.split(PROTO, "test")
    noisy = planted_panel()
    noisy.labels[test_t[0]:] = np.random.default_rng(5).normal(size=noisy.labels[test_t[0]:].shape)
    a, b = model().fit(panel, PROTO), model().fit(noisy, PROTO)
    pd.testing.assert_frame_equal(a.history_, b.history_.assign(seconds=a.history_["seconds"]))
    pd.testing.assert_frame_equal(a.predict(panel, split="test"), b.predict(noisy, split="test"))


def test_best_weights_are_restored_and_early_stopping(tmp_path):
    panel = planted_panel()
    m = model(run_dir=tmp_path, max_epochs=8, patience=1, lr=0.5)
    m.fit(panel, PROTO)
    h = m.history_
    best = h.loc[h["val_RankIC"].idxmax()]
    assert bool(best["best"]) and len(h) <= 8
    assert train.evaluate(m.net, panel, train.trainable_days(panel, panel.split(PROTO, "valid")))["RankIC"] == pytest.approx(best["val_RankIC"])
    assert (tmp_path / "history.csv").is_file() and (tmp_path / "best.pt").is_file()


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    panel = planted_panel()
    full = model(run_dir=tmp_path / "full", max_epochs=4, patience=10).fit(panel, PROTO)

    real_save = train._save

    def crash_after_epoch_2(run_dir, *args):
        real_save(run_dir, *args)
        if args[4] == 1:  # epoch index 1 = second epoch, checkpoint written
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save", crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        model(run_dir=tmp_path / "cut", max_epochs=4, patience=10).fit(panel, PROTO)
    monkeypatch.setattr(train, "_save", real_save)
    resumed = model(run_dir=tmp_path / "cut", max_epochs=4, patience=10).fit(panel, PROTO, resume=True)
    cols = [c for c in full.history_.columns if c != "seconds"]
    pd.testing.assert_frame_equal(full.history_[cols], resumed.history_[cols])
    pd.testing.assert_frame_equal(full.predict(panel, split="test"), resumed.predict(panel, split="test"))


def test_checkpoint_round_trip(tmp_path):
    panel = planted_panel()
    m = model().fit(panel, PROTO)
    m.save(tmp_path / "m.pt")
    m2 = model().load(tmp_path / "m.pt", panel)
    pd.testing.assert_frame_equal(m.predict(panel, split="test"), m2.predict(panel, split="test", protocol=PROTO))


def test_window_mismatch_is_explained():
    panel = planted_panel(window=8)
    with pytest.raises(ValueError, match="expects window 16"):
        model().fit(panel, PROTO)


def test_compare_to_paper_reads_the_profiles_not_a_copy():
    from storm_lib.profiles import OFFICIAL, PROFILES, compare_to_paper
    from storm_lib.trading.agents import budget

    cpu = compare_to_paper("cpu", trading=True)
    assert list(cpu.index) == list(OFFICIAL)
    assert cpu.loc["width (d_model)", "this profile"] == PROFILES["cpu"].storm["d_model"]
    assert not cpu.loc["width (d_model)", "same"] and cpu.loc["window (days)", "same"]
    assert cpu.loc["PPO environment steps", "this profile"] == f"{budget('ppo', 'cpu')['timesteps']:,}"
    paper = compare_to_paper("paper")
    assert "PPO environment steps" not in paper.index
    assert paper.loc[["width (d_model)", "TS / CS encoder layers", "codebook (codes)", "learning rate"], "same"].all()


def test_profile_table_bolds_the_rows_that_differ():
    pytest.importorskip("jinja2")
    from storm_lib import presentation as nb

    html = nb.profile_table("cpu").to_html()
    assert html.count("font-weight: bold") >= 1 and "official code" in html


# --- training budget (TrainConfig.budget_windows, issue 18) ---------------------------------------------


def test_budget_plan_sees_exactly_the_budget():
    cfg = TrainConfig(batch_size=8, steps_per_epoch=10, max_epochs=99, patience=0, budget_windows=100)
    plan = train.budget_plan(cfg, n_train=500)
    assert plan == [[8] * 10, [8, 8, 4]] and sum(map(sum, plan)) == 100
    assert train.budget_plan(cfg.__class__(batch_size=8, steps_per_epoch=10, budget_windows=160), 500) == [[8] * 10] * 2
    assert train.budget_plan(TrainConfig(batch_size=8, steps_per_epoch=10, max_epochs=3), 500) == [[8] * 10] * 3
    with pytest.raises(ValueError, match="positive integer"):
        train.budget_plan(TrainConfig(budget_windows=0), 500)


def test_a_budget_fixes_windows_seen_and_the_schedule_and_turns_off_early_stopping(monkeypatch):
    panel = planted_panel()
    totals = []
    real = train._lr_lambda
    monkeypatch.setattr(train, "_lr_lambda", lambda total, warmup: totals.append(total) or real(total, warmup))
    # patience 0 and max_epochs 1 would stop a plain run after one epoch; the budget overrides both
    m = model(max_epochs=1, patience=0, lr=0.5, budget_windows=8 * 10 * 5 + 12).fit(panel, PROTO)
    h = m.history_
    assert len(h) == 6 and list(h["windows"]) == [80, 160, 240, 320, 400, 412]
    assert totals == [52]  # 5 x 10 full steps + one step of 8 + one of 4: the cosine ends with the budget
    assert h["lr"].iloc[-1] == pytest.approx(0.0, abs=1e-12) and h["lr"].iloc[-2] > 0
    best = h.loc[h["val_RankIC"].idxmax()]
    assert bool(best["best"])  # selection stays on the validation score


def test_a_budget_leaves_identities_of_runs_without_it_unchanged():
    from storm_lib.profiles import profile_identity

    assert "budget_windows" not in profile_identity("cpu")["train"]
    with_budget = get_profile("cpu").with_train(budget_windows=4000)
    assert profile_identity(with_budget)["train"]["budget_windows"] == 4000
    plain = model().fit(planted_panel(), PROTO).history_
    assert "windows" not in plain and len(plain) <= CFG["max_epochs"]


def test_an_interrupted_budget_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    panel = planted_panel()
    kw = dict(budget_windows=8 * 10 * 3 + 4, patience=0)
    full = model(run_dir=tmp_path / "full", **kw).fit(panel, PROTO)
    real_save = train._save

    def crash_after_epoch_2(run_dir, *args):
        real_save(run_dir, *args)
        if args[4] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save", crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        model(run_dir=tmp_path / "cut", **kw).fit(panel, PROTO)
    monkeypatch.setattr(train, "_save", real_save)
    resumed = model(run_dir=tmp_path / "cut", **kw).fit(panel, PROTO, resume=True)
    cols = [c for c in full.history_.columns if c != "seconds"]
    assert list(full.history_["windows"]) == [80, 160, 240, 244]
    pd.testing.assert_frame_equal(full.history_[cols], resumed.history_[cols])
    pd.testing.assert_frame_equal(full.predict(panel, split="test"), resumed.predict(panel, split="test"))

"""The return-prediction baselines (LightGBM, LSTM, Transformer, CAFactor) on a planted-signal panel:
they learn, they are deterministic per seed, and LightGBM / CAFactor never read test labels."""

import numpy as np
import pandas as pd
import pytest
import torch

from storm_lib import metrics
from storm_lib.models.cafactor import CAFactorModel, managed_portfolios
from storm_lib.models.lightgbm import LightGBMModel
from storm_lib.models.sequence import LSTM_SIZES, LSTMModel, TransformerModel, split_kwargs
from storm_lib.panel import Panel, Protocol

from conftest import planted_panel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROTO = Protocol("tiny", ("2015-03-02", "2015-12-31"), ("2016-01-01", "2016-06-30"), ("2016-07-01", "2016-12-30"))
NAMES = [f"F{j}" for j in range(5)]


TORCH = dict(batch_size=8, steps_per_epoch=12, max_epochs=4, patience=2, eval_batch_size=64, progress=False,
             device="cpu")  # an explicit device keeps the thread count set below
MODELS = {
    "lightgbm": lambda seed=0: LightGBMModel("smoke", seed=seed, progress=False, num_threads=1),
    "lstm": lambda seed=0: LSTMModel("smoke", seed=seed, lr=1e-2, **TORCH),
    "transformer": lambda seed=0: TransformerModel("smoke", seed=seed, lr=5e-3, **TORCH),
    "cafactor": lambda seed=0: CAFactorModel("smoke", seed=seed, lr=1e-2, **TORCH),
}


def rank_ic_of(scores, panel):
    daily = metrics.rank_ic(scores, panel.label_frame(panel.split(PROTO, "test")))
    return metrics.ic_summary(daily)["RankIC"]


@pytest.fixture(scope="module")
def panel():
    return planted_panel()


@pytest.fixture(scope="module")
def fitted(panel):
    return {k: make().fit(panel, PROTO) for k, make in MODELS.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_learns_planted_signal(fitted, panel, name):
    m = fitted[name]
    scores = m.predict(panel, split="test")
    assert scores.shape == (len(panel.split(PROTO, "test")), 10)
    assert rank_ic_of(scores, panel) > 0.3
    assert m.history_ is not None and len(m.history_) > 0


@pytest.mark.parametrize("name", list(MODELS))
def test_same_seed_same_scores(fitted, panel, name):
    again = MODELS[name]().fit(panel, PROTO)
    pd.testing.assert_frame_equal(fitted[name].predict(panel, split="test"), again.predict(panel, split="test"))


@pytest.mark.parametrize("name", ["cafactor", "lightgbm"])
def test_test_labels_never_used(fitted, panel, name):
    noisy = planted_panel()
    start = panel.split(PROTO, "test")[0]
    noisy.labels[start:] = np.random.default_rng(7).normal(size=noisy.labels[start:].shape)
    other = MODELS[name]().fit(noisy, PROTO)
    pd.testing.assert_frame_equal(fitted[name].predict(panel, split="test"), other.predict(noisy, split="test"))


def test_histories_and_selection(fitted):
    h = fitted["lightgbm"].history_
    assert list(h.columns) == ["round", "train_l2", "valid_l2", "best"]
    best = fitted["lightgbm"].best_iteration_
    assert h.loc[h["best"], "round"].item() == best and h["valid_l2"].idxmin() + 1 == best
    for name in ("lstm", "transformer"):
        assert {"mse", "val_RankIC", "best"} <= set(fitted[name].history_.columns)
    assert {"mse", "l1", "val_RankIC"} <= set(fitted["cafactor"].history_.columns)
    lam = fitted["cafactor"].lambda_
    assert lam.shape == (3,) and np.isfinite(lam).all()


def test_managed_portfolios_are_the_ridge_regression():
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.normal(size=(2, 7, 3)))
    r = torch.from_numpy(rng.normal(size=(2, 7)))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    x = managed_portfolios(z, r, mask, ridge=0.0)
    for b, n in ((0, 7), (1, 4)):
        Z, y = z[b, :n].numpy(), r[b, :n].numpy()
        np.testing.assert_allclose(x[b].numpy(), np.linalg.lstsq(Z, y, rcond=None)[0], rtol=1e-6, atol=1e-8)


def test_sizes_and_overrides():
    sizes, train = split_kwargs(LSTM_SIZES, "cpu", {"hidden": 8, "lr": 0.1})
    assert sizes["hidden"] == 8 and train["lr"] == 0.1
    assert train["max_epochs"] == LSTM_SIZES["cpu"]["train"]["max_epochs"]
    m = LSTMModel("cpu", hidden=8, lr=0.1)
    assert m.sizes["hidden"] == 8 and m.train_cfg.lr == 0.1 and m.train_cfg.batch_size == 16
    assert LightGBMModel("cpu", num_leaves=7).params["num_leaves"] == 7


def test_cafactor_checkpoint_keeps_the_factor_premium(fitted, panel, tmp_path):
    m = fitted["cafactor"]
    m.save(tmp_path / "ca.pt")
    again = MODELS["cafactor"]().load(tmp_path / "ca.pt", panel)
    pd.testing.assert_frame_equal(m.predict(panel, split="test"), again.predict(panel, split="test", protocol=PROTO))

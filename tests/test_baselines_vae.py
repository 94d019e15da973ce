"""FactorVAE and HireVAE: learning on a planted signal, determinism, no look-ahead, prior-only
prediction, per-sample independence (small synthetic panel, a few seconds per fit)."""

import numpy as np
import pandas as pd
import pytest
import torch

from storm_lib import metrics, train
from storm_lib.models.factorvae import SIZES as FV_SIZES, FactorVAE, FactorVAEConfig
from storm_lib.models.hirevae import SIZES as HV_SIZES, HireVAE, HireVAEConfig
from storm_lib.panel import Panel, Protocol
from storm_lib.profiles import PROFILES

from conftest import planted_panel as _planted

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROTO = Protocol("tiny", ("2015-01-23", "2015-12-31"), ("2016-01-01", "2016-04-29"), ("2016-05-02", "2016-11-30"))
MODELS = {"factorvae": FactorVAE, "hirevae": HireVAE}
FIT = dict(max_epochs=4, patience=3, steps_per_epoch=25, batch_size=8, lr=5e-3, eval_batch_size=64)


def planted_panel(**kw):
    return _planted(**{"T": 500, "late": 500 // 3, **kw})


def make(name, seed=0, **kw):
    return MODELS[name]("smoke", seed=seed, device="cpu", progress=False, **{**FIT, **kw})


@pytest.fixture(scope="module")
def panel():
    return planted_panel()


@pytest.fixture(scope="module")
def noisy_panel():
    """The same panel with every label from the first test day on replaced by noise."""
    p = planted_panel()
    t0 = p.split(PROTO, "test")[0]
    p.labels[t0:] = np.random.default_rng(7).normal(0, 0.02, size=p.labels[t0:].shape).astype(np.float32)
    p.labels[-1] = np.nan
    return p


@pytest.fixture(scope="module")
def fitted(panel, noisy_panel):
    """Per model: two fits with seed 0 on the panel, one on the panel with noisy test labels."""
    return {name: (make(name).fit(panel, PROTO), make(name).fit(panel, PROTO), make(name).fit(noisy_panel, PROTO))
            for name in MODELS}


def test_configs_and_profiles():
    assert set(FV_SIZES) == set(PROFILES) == set(HV_SIZES)
    m = FactorVAE("cpu", hidden=32, lr=3e-4, progress=False)
    assert m.config.hidden == 32 and m.config.n_factors == FV_SIZES["cpu"]["n_factors"]
    assert m.train_cfg.lr == 3e-4
    h = HireVAE("smoke", n_regimes=2, progress=False)
    assert isinstance(h.config, HireVAEConfig) and h.config.n_regimes == 2
    with pytest.raises(TypeError):
        FactorVAE("smoke", no_such_setting=1)
    with pytest.raises(ValueError):
        FactorVAEConfig(kl_reduction="max")


@pytest.mark.parametrize("name", MODELS)
def test_learns_planted_signal(fitted, panel, name):
    m = fitted[name][0]
    assert {"nll", "kl", "val_RankIC"} <= set(m.history_.columns)
    if name == "hirevae":
        assert "kl_market" in m.history_
    scores = m.predict(panel, split="test")
    test_t = panel.split(PROTO, "test")
    assert scores.shape == (len(test_t), 10)
    assert scores["S9"].notna().all() and np.isfinite(scores.to_numpy()).all()
    ic = metrics.ic_summary(metrics.rank_ic(scores, panel.label_frame(test_t)))
    assert ic["RankIC"] > 0.2, ic


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_for_a_seed(fitted, panel, name):
    a, b, _ = fitted[name]
    pd.testing.assert_frame_equal(a.predict(panel, split="test"), b.predict(panel, split="test"))
    cols = [c for c in a.history_.columns if c != "seconds"]
    pd.testing.assert_frame_equal(a.history_[cols], b.history_[cols])


@pytest.mark.parametrize("name", MODELS)
def test_no_look_ahead(fitted, panel, noisy_panel, name):
    """Test predictions do not move when every label from the test start onward is randomised."""
    a, _, c = fitted[name]
    assert not np.allclose(panel.labels[-50:-1], noisy_panel.labels[-50:-1])
    pd.testing.assert_frame_equal(a.predict(panel, split="test"), c.predict(noisy_panel, split="test"))


@pytest.mark.parametrize("name", MODELS)
def test_prediction_is_prior_only_and_per_sample(fitted, panel, name):
    net = fitted[name][0].net
    net.eval()
    t = panel.split(PROTO, "test")[:6]
    x, mask, y = train.batch(panel, t, torch.device("cpu"))
    with torch.no_grad():
        without = net(x, mask).pred
        with_y = net(x, mask, y)
        assert with_y.loss is not None and set(with_y.losses) >= {"nll", "kl"}
        torch.testing.assert_close(with_y.pred, without, rtol=0, atol=0)
        shuffled_y = net(x, mask, y[torch.randperm(len(t))]).pred
        torch.testing.assert_close(shuffled_y, without, rtol=0, atol=0)
        # a sample's prediction does not depend on the other samples of its batch
        alone = torch.cat([net(x[i:i + 1], mask[i:i + 1]).pred for i in range(len(t))])
        torch.testing.assert_close(alone, without, rtol=1e-5, atol=1e-6)
        x2 = x.clone()
        x2[1:] = torch.randn_like(x2[1:])
        torch.testing.assert_close(net(x2, mask).pred[0], without[0], rtol=1e-5, atol=1e-6)
        # an invalid stock's inputs do not move the valid stocks' scores
        m2 = mask.clone()
        m2[:, 3] = False
        base = net(x, m2).pred
        x3 = x.clone()
        x3[:, :, 3] = 100.0
        torch.testing.assert_close(net(x3, m2).pred, base, rtol=1e-5, atol=1e-6)
        # the prior predictive can be sampled
        draw = net(x, mask, sample=True).pred
        assert draw.shape == without.shape and not torch.allclose(draw, without)


def test_regime_centres_move_in_training_only(fitted, panel):
    net = fitted["hirevae"][0].net
    reg = net.regimes
    assert int(reg.n_updates) > 0 and torch.all(reg.centers[1:] >= reg.centers[:-1])
    before = reg.centers.clone()
    net.eval()
    t = panel.split(PROTO, "valid")[:8]
    x, mask, y = train.batch(panel, t, torch.device("cpu"))
    with torch.no_grad():
        out = net(x, mask, y)
    torch.testing.assert_close(reg.centers, before, rtol=0, atol=0)
    w = out.extras["regime_weights"]
    assert w.shape == (8, HV_SIZES["smoke"]["n_regimes"])
    torch.testing.assert_close(w.sum(-1), torch.ones(8))


def test_training_subsample_of_stocks(panel):
    """max_train_stocks bounds the stocks a training step sees; evaluation still scores all."""
    torch.manual_seed(0)
    net = make("factorvae", max_train_stocks=4).build_net(panel)
    t = panel.split(PROTO, "train")[:4]
    x, mask, y = train.batch(panel, t, torch.device("cpu"))
    net.train()
    out = net(x, mask, y)
    assert out.pred.shape == (4, 10) and int((out.pred != 0).any(0).sum()) <= 4
    out.loss.backward()
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x, mask).pred != 0, mask)


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(fitted, panel, tmp_path, name):
    m = fitted[name][0]
    m.save(tmp_path / "m.pt")
    m2 = make(name).load(tmp_path / "m.pt", panel)
    pd.testing.assert_frame_equal(m.predict(panel, split="test"), m2.predict(panel, split="test", protocol=PROTO))

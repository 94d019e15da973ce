"""The STORM network (storm_lib/models/storm.py): shapes, losses, ablations, leakage and learning."""

import numpy as np
import pytest
import torch

from storm_lib.models.storm import STORM, StormConfig

torch.set_num_threads(1)

B, W, N, F, D, K = 4, 16, 6, 6, 16, 16
VARIANTS = {"dual": {}, "wo_ts": {"use_ts": False}, "wo_cs": {"use_cs": False}}
VQ_TERMS = ("recon", "codebook", "commit", "div", "entropy", "ortho")


def tiny(**kw) -> StormConfig:
    base = dict(n_stocks=N, n_features=F, window=W, d_model=D, n_heads=2, codebook_size=K)
    return StormConfig(**{**base, **kw})


def build(seed=0, **kw) -> STORM:
    torch.manual_seed(seed)
    return STORM(tiny(**kw))


def batch(seed=0, b=B):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, W, N, F, generator=g)
    mask = torch.ones(b, N, dtype=torch.bool)
    mask[0, 1] = False
    mask[2, 4] = False
    y = torch.randn(b, N, generator=g)
    y[~mask] = float("nan")
    y[1, 3] = float("nan")  # unknown label of a valid stock
    return x, mask, y


def expected_terms(name):
    terms = {"nll", "kl", "nll_prior"}
    if name != "wo_ts":
        terms |= {f"{t}_ts" for t in VQ_TERMS}
    if name != "wo_cs":
        terms |= {f"{t}_cs" for t in VQ_TERMS}
    if name == "dual":
        terms.add("contrastive")
    return terms


@pytest.mark.parametrize("name", VARIANTS)
def test_output_and_factor_shapes(name):
    model = build(**VARIANTS[name])
    x, mask, y = batch()
    out = model(x, mask, y)
    assert out.pred.shape == (B, N) and torch.isfinite(out.pred).all()
    assert out.pred_std.shape == (B, N) and (out.pred_std > 0).all()
    assert set(out.losses) == expected_terms(name)
    weights = model.cfg.loss_weights()
    total = sum(weights[k] * v for k, v in out.losses.items())
    torch.testing.assert_close(out.loss, total)
    # no labels: no nll/kl
    assert set(model(x, mask).losses) == expected_terms(name) - {"nll", "kl", "nll_prior"}
    assert "nll_prior" not in build(w_nll_prior=0.0, **VARIANTS[name])(x, mask, y).losses

    fac = model.factors(x, mask)
    assert model.training  # factors() restores the mode
    P = W // model.cfg.patch_len
    assert fac["stock_embedding"].shape == (B, N, D)
    L = {"dual": W + N, "wo_ts": W, "wo_cs": N}[name]
    assert fac["factor_tokens"].shape == (B, L, D)
    has_ts, has_cs = name != "wo_ts", name != "wo_cs"
    assert ("ts_tokens" in fac) == has_ts and ("ts_codes" in fac) == has_ts
    assert ("cs_tokens" in fac) == has_cs and ("cs_codes" in fac) == has_cs
    if has_ts:
        assert fac["ts_tokens"].shape == (B, N, P, 2 * D)
        assert fac["ts_codes"].shape == (B, N, P) and fac["ts_codes"].dtype == torch.long
        assert fac["ts_codes"].max() < K
        # the second half of every token is a codebook entry (cosine codes: the unit entry times √d)
        torch.testing.assert_close(fac["ts_tokens"][..., D:], D**0.5 * model.ts.vq.entries()[fac["ts_codes"]])
    if has_cs:
        assert fac["cs_tokens"].shape == (B, W, 2 * D)
        assert fac["cs_codes"].shape == (B, W) and fac["cs_codes"].dtype == torch.long
        torch.testing.assert_close(fac["cs_tokens"][..., D:], D**0.5 * model.cs.vq.entries()[fac["cs_codes"]])


@pytest.mark.parametrize("name", VARIANTS)
def test_ablations_drop_modules(name):
    model = build(**VARIANTS[name])
    assert (model.ts is None) == (name == "wo_ts")
    assert (model.cs is None) == (name == "wo_cs")
    assert (model.fusion is None) == (name != "dual")
    assert (model.align is None) == (name != "dual")
    assert build(fusion=False).fusion is None
    with pytest.raises(ValueError):
        tiny(use_ts=False, use_cs=False)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_loss_term_is_finite_and_active(name):
    model = build(**VARIANTS[name])
    x, mask, y = batch()
    out = model(x, mask, y)
    params = [p for p in model.parameters() if p.requires_grad]
    for term, value in out.losses.items():
        assert torch.isfinite(value), term
        assert value.item() != 0.0, term
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{term} reaches no parameter"
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)


def test_gradients_reach_both_encoders():
    model = build()
    x, mask, y = batch()
    model(x, mask, y).loss.backward()
    for enc in (model.ts.encoder, model.cs.encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    # and the prediction alone depends on both branches (fusion + factor tokens)
    model.zero_grad()
    model(x, mask).pred[mask].sum().backward()
    for enc in (model.ts.encoder, model.cs.encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


@pytest.mark.parametrize("name", VARIANTS)
def test_prior_never_sees_labels(name):
    model = build(**VARIANTS[name])
    x, mask, y = batch()
    model(x, mask, y)  # one training forward (codebook init)
    model.eval()
    with torch.no_grad():
        a = model(x, mask, y).pred
        b = model(x, mask, torch.randn_like(y)).pred
        c = model(x, mask).pred
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("name", VARIANTS)
def test_prediction_independent_of_other_samples(name):
    model = build(**VARIANTS[name])
    x, mask, y = batch()
    model(x, mask, y)
    model.eval()
    with torch.no_grad():
        full = model(x, mask).pred
        alone = model(x[:1], mask[:1]).pred
        x2 = x.clone()
        x2[1:] = torch.randn_like(x2[1:])
        other = model(x2, mask).pred
    torch.testing.assert_close(alone[0], full[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(other[0], full[0], atol=1e-5, rtol=1e-5)


def test_same_seed_same_outputs():
    x, mask, y = batch()
    outs = []
    for _ in range(2):
        model = build(seed=3)
        torch.manual_seed(11)
        out = model(x, mask, y)  # training mode: dropout and codebook init from the seeded RNG
        out.loss.backward()
        outs.append((out, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (a, ga), (b, gb) = outs
    assert torch.equal(a.pred, b.pred) and torch.equal(a.loss, b.loss)
    assert all(torch.equal(u, v) for u, v in zip(ga, gb))
    # sampling draws from torch's global RNG
    model = build(seed=3).eval()
    torch.manual_seed(5)
    s1 = model(x, mask, sample=True).pred
    torch.manual_seed(5)
    s2 = model(x, mask, sample=True).pred
    assert torch.equal(s1, s2) and not torch.allclose(s1, model(x, mask).pred)


@pytest.mark.parametrize("name", VARIANTS)
def test_last_day_features_change_predictions(name):
    model = build(**VARIANTS[name])
    x, mask, y = batch()
    model(x, mask, y)
    model.eval()
    x2 = x.clone()
    x2[0, -1, 2] += 1.0
    with torch.no_grad():
        a, b = model(x, mask).pred, model(x2, mask).pred
    assert (a[0, 2] - b[0, 2]).abs() > 1e-6
    torch.testing.assert_close(a[1:], b[1:])


@pytest.mark.parametrize("name", VARIANTS)
def test_invalid_stocks_do_not_affect_valid_predictions(name):
    model = build(**VARIANTS[name])
    x, mask, y = batch()
    model(x, mask, y)
    model.eval()
    x2 = x.clone()
    x2[0, :, 1] = 100.0 * torch.randn(W, F)  # stock 1 is invalid in sample 0
    x2[2, :, 4] = float("nan")               # even NaN features of an invalid stock are ignored
    with torch.no_grad():
        a, b = model(x, mask), model(x2, mask)
    torch.testing.assert_close(a.pred[mask], b.pred[mask])
    assert torch.isfinite(b.pred).all()
    # ... and neither do their labels
    model.train()
    y2 = y.clone()
    y2[~mask] = 5.0
    torch.manual_seed(0)
    la = model(x, mask, y).losses
    torch.manual_seed(0)
    lb = model(x, mask, y2).losses
    for k in la:
        torch.testing.assert_close(la[k], lb[k])


def rank_ic(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean daily Spearman correlation (no ties in continuous data)."""
    a = pred.argsort(1).argsort(1).astype(float)
    b = y.argsort(1).argsort(1).astype(float)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    return float(((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).mean())


@pytest.mark.parametrize("name", VARIANTS)
def test_learns_planted_signal(name):
    """y_t(i) = 0.5·x_t(i, feature 0) + noise; trained on early days, RankIC on later days > 0.2."""
    T, n, f, w = PLANTED["T"], 8, 6, 16
    rng = np.random.default_rng(0)
    X = rng.standard_normal((T, n, f)).astype(np.float32)
    Y = 0.5 * X[:, :, 0] + PLANTED["noise"] * rng.standard_normal((T, n)).astype(np.float32)
    Y = (Y - Y.mean(1, keepdims=True)) / Y.std(1, keepdims=True)

    def windows(ts):
        return torch.from_numpy(np.stack([X[t - w + 1:t + 1] for t in ts])), torch.from_numpy(Y[ts])

    train_days = np.arange(w - 1, PLANTED["train_end"])
    test_days = np.arange(T - 80, T)
    torch.manual_seed(0)
    # w/o-TS: the version-1 query (the stock's own last-day features). The default identity query has no
    # per-stock input path, so stock i's feature 0 reaches it only through the CS day tokens, which mix all
    # stocks; it did not learn this per-stock signal in these steps (RankIC -0.01), as expected of a
    # CS-only model, and is not asserted here.
    extra = {"wo_ts_query": "last_day"} if name == "wo_ts" else {}
    model = STORM(StormConfig(n_stocks=n, n_features=f, window=w, d_model=16, n_heads=2, codebook_size=16,
                              **VARIANTS[name], **extra))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = np.random.default_rng(0)
    mask = torch.ones(32, n, dtype=torch.bool)
    for _ in range(PLANTED["steps"][name]):
        xb, yb = windows(g.choice(train_days, 32))
        loss = model(xb, mask, yb).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = windows(test_days)
    with torch.no_grad():
        pred = model(xt, torch.ones(len(test_days), n, dtype=torch.bool)).pred.numpy()
    ic = rank_ic(pred, yt.numpy())
    print(f"planted-signal RankIC {name}: {ic:.3f}")
    assert ic > 0.2, ic


# noise 1.0: the ideal RankIC is about 0.43; fewer steps where a variant learns faster (test time)
PLANTED = {"T": 800, "train_end": 600, "noise": 1.0, "steps": {"dual": 300, "wo_ts": 150, "wo_cs": 250}}

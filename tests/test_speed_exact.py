"""Exactness of the speed changes (issue 17): the stock-major STORM step gives the same losses and
gradients as the plain layout it replaced, and the prediction path the same scores as ``forward``.

The references below are the previous implementation (main 757ada5), kept here on purpose: the input
zeroed by a full-size ``where`` in (B, W, N, F), the TS patches made by a permute + copy, the
reconstructions compared in (B, W, N, F) through a permuted view, the MSE with an elementwise 0/1 weight.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from storm_lib.models.storm import STORM, BranchOutput, Representation, StormConfig, masked_mse

torch.set_num_threads(1)

B, W, N, NF, D, K = 4, 16, 6, 5, 16, 16
VARIANTS = {"dual": {}, "wo_ts": {"use_ts": False}, "wo_cs": {"use_cs": False},
            "wo_ts_last_day": {"use_ts": False, "wo_ts_query": "last_day"}}


def reference_mse(pred, target, stock_valid):
    """(B, W, N, F) layout, elementwise weight (757ada5 without its all-valid shortcut)."""
    w = stock_valid[:, None, :, None].to(pred.dtype)
    n = (w.sum() * pred.shape[1] * pred.shape[3]).clamp_min(1.0)
    return ((pred - target).pow(2) * w).sum() / n


def reference_ts(m, x, mask):
    b, w, n, f = x.shape
    n_p = w // m.p
    patches = x.permute(0, 2, 1, 3).reshape(b * n, n_p, m.p * f)
    cls, h = m.encoder(m.embed(patches))
    h, cls = h.view(b, n, n_p, -1), cls.view(b, n, -1)
    vq = m.vq(h, mask[:, :, None].expand(b, n, n_p))
    rec = m.head(m.decoder(vq.z_q.reshape(b * n, n_p, -1))).view(b, n, w, f).permute(0, 2, 1, 3)
    return BranchOutput(h, vq.z_q, cls, vq.indices, {"recon": reference_mse(rec, x, mask), **vq.losses},
                        vq.perplexity)


def reference_cs(m, x, mask):
    b, w, n, f = x.shape
    stems = F.gelu(m.stem(x)) * mask[:, None, :, None].to(x.dtype)
    cls, h = m.encoder(m.embed(stems.reshape(b, w, n * m.e)))
    vq = m.vq(h, mask.any(1)[:, None].expand(b, w))
    rec = m.unstem(F.gelu(m.unembed(m.decoder(vq.z_q)).view(b, w, n, m.e)))
    return BranchOutput(h, vq.z_q, cls, vq.indices, {"recon": reference_mse(rec, x, mask), **vq.losses},
                        vq.perplexity)


def reference_forward(net, x, mask, y):
    """STORM._represent + forward of 757ada5, returning (pred, loss, losses)."""
    b, w, n, f = x.shape
    mask = mask.bool()
    x = torch.where(mask[:, None, :, None], x, torch.zeros(()))
    losses, tokens, valid = {}, [], []
    ts = reference_ts(net.ts, x, mask) if net.ts is not None else None
    cs = reference_cs(net.cs, x, mask) if net.cs is not None else None
    if cs is not None:
        c = net.cs_token(torch.cat([cs.h, cs.q], -1)) + net.type_emb[0]
        tokens.append(c)
        valid.append(torch.ones(b, w, dtype=torch.bool))
        losses.update({f"{k}_cs": v for k, v in cs.losses.items()})
    if ts is not None:
        g = net.ts_token(torch.cat([ts.h, ts.q], -1))
        if net.fusion is not None:
            g = net.fusion(g, c)
        s = g.mean(2) + net.ts_cls(ts.cls)
        e = net.ln_e(s)
        tokens.append(s + net.type_emb[1])
        valid.append(mask)
        losses.update({f"{k}_ts": v for k, v in ts.losses.items()})
    else:
        q = (net.stock_id.expand(b, -1, -1) if net.cfg.wo_ts_query == "identity"  # version 2 default
             else net.stock_query(x[:, -1]))                                        # 757ada5's query
        e = net.ln_e(net.stock_attn(q, c))
    if net.align is not None:
        losses["contrastive"] = net.align(ts.cls, mask, cs.cls, None, cs.h, ts.h)
    r = Representation(e, net.ln_f(torch.cat(tokens, 1)), torch.cat(valid, 1), ts, cs, losses)
    pred, _, factor_losses = net.factor(r.e, r.f, mask, r.f_valid, y, False)
    losses = {**r.losses, **factor_losses}
    weights = net.cfg.loss_weights()
    return pred, sum(weights[k] * v for k, v in losses.items()), losses


def make(variant, seed=0):
    torch.manual_seed(seed)
    cfg = StormConfig(n_stocks=N, n_features=NF, window=W, d_model=D, n_heads=2, codebook_size=K, dropout=0.0,
                      **VARIANTS[variant])
    return STORM(cfg)


def data(all_valid: bool, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, W, N, NF, generator=g)
    mask = torch.ones(B, N, dtype=torch.bool)
    if not all_valid:
        mask[0, 1] = mask[2, 4] = mask[3, 0] = False
        x[0, :, 1] = float("nan")  # an invalid stock's input must not reach anything
    y = torch.randn(B, N, generator=g)
    y[~mask] = float("nan")
    return x, mask, y


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("all_valid", [True, False])
def test_masked_mse_matches_the_elementwise_reference(all_valid):
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 7, 10, 4, generator=g), torch.randn(3, 7, 10, 4, generator=g)  # (B, N, W, F)
    valid = torch.ones(3, 7, dtype=torch.bool)
    if not all_valid:
        valid[0, 2] = valid[2, 5] = False
    a, b = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    la = masked_mse(a, target, valid)
    lb = reference_mse(b.transpose(1, 2), target.transpose(1, 2), valid)
    la.backward(), lb.backward()
    close(la, lb)
    close(a.grad, b.grad)
    assert (a.grad[~valid] == 0).all() and (a.grad[valid] != 0).all()


@pytest.mark.parametrize("all_valid", [True, False])
@pytest.mark.parametrize("variant", VARIANTS)
def test_training_step_losses_and_gradients_match_the_reference(variant, all_valid):
    new = make(variant)
    ref = copy.deepcopy(new)
    x, mask, y = data(all_valid)
    for step in range(2):  # step 0 runs the codebook data init, step 1 the restart path
        torch.manual_seed(10 + step)
        out = new(x, mask, y)
        torch.manual_seed(10 + step)
        pred_r, loss_r, losses_r = reference_forward(ref, x, mask, y)
        assert set(out.losses) == set(losses_r)
        for k in losses_r:
            close(out.losses[k], losses_r[k])
        close(out.loss, loss_r)
        close(out.pred, pred_r)
        new.zero_grad(), ref.zero_grad()
        out.loss.backward(), loss_r.backward()
        for (name, p), q in zip(new.named_parameters(), ref.parameters()):
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
        assert torch.isfinite(out.loss)
        with torch.no_grad():  # same update on both, so step 1 starts from identical weights
            for p, q in zip(new.parameters(), ref.parameters()):
                if p.grad is not None:
                    p -= 1e-2 * p.grad
                    q.copy_(p)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prediction_path_gives_the_forward_scores(variant):
    net = make(variant)
    x, mask, y = data(False)
    net(x, mask, y)  # codebook init
    net.eval()
    with torch.inference_mode():
        full = net(x, mask)
        fast = net.predict(x, mask)
        torch.manual_seed(3)
        sampled = net(x, mask, sample=True).pred
        torch.manual_seed(3)
        sampled_fast = net.predict(x, mask, sample=True)
    close(fast, full.pred)
    close(sampled_fast, sampled)
    assert not torch.equal(sampled_fast, fast)


def test_train_predict_uses_the_fast_path_and_restores_the_mode(monkeypatch):
    import numpy as np

    from storm_lib import train

    class P:  # a minimal panel: windows, valid, tickers
        valid = np.ones((40, N), bool)
        tickers = [str(i) for i in range(N)]

        def windows(self, t):
            return np.random.default_rng(0).standard_normal((len(t), W, N, NF)).astype(np.float32)

    net = make("dual")
    calls = []
    orig = net.predict
    monkeypatch.setattr(net, "predict", lambda *a, **k: calls.append(1) or orig(*a, **k))
    scores = train.predict(net, P(), np.arange(20, 30), batch_size=4)
    assert scores.shape == (10, N) and np.isfinite(scores).all()
    assert len(calls) == 3 and net.training


def test_checkpointing_the_ts_blocks_keeps_losses_and_gradients():
    """Activation checkpointing (``checkpoint_ts``) recomputes, with dropout on: same numbers."""
    torch.manual_seed(0)
    # no data-dependent init: a loaded state marks the codebooks initialised, so both nets keep the same codes
    cfg = StormConfig(n_stocks=N, n_features=NF, window=W, d_model=D, n_heads=2, codebook_size=K, dropout=0.1,
                      codebook_data_init=False)
    plain = STORM(cfg)
    ckpt = STORM(StormConfig(**{**cfg.__dict__, "checkpoint_ts": True}))
    ckpt.load_state_dict(plain.state_dict())
    x, mask, y = data(False)
    grads = []
    for net in (plain, ckpt):
        torch.manual_seed(5)
        out = net(x, mask, y)
        out.loss.backward()
        grads.append((out.loss.detach(), [p.grad for p in net.parameters()]))
    close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        if a is not None:
            close(a, b)


def test_attention_with_dropout_matches_scaled_dot_product_attention():
    from storm_lib.models.storm import attention_with_dropout

    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, 4, 9, 8, generator=g, requires_grad=True) for _ in range(3))
    outs = []
    for fn in (lambda: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1),
               lambda: attention_with_dropout(q, k, v, 0.1)):
        torch.manual_seed(7)
        y = fn()
        y.pow(2).sum().backward()
        outs.append((y.detach(), q.grad.clone(), k.grad.clone(), v.grad.clone()))
        q.grad = k.grad = v.grad = None
    for a, b in zip(*outs):
        close(a, b)
    torch.manual_seed(8)  # a different draw gives a different output: the masks matter
    assert not torch.allclose(attention_with_dropout(q, k, v, 0.1), outs[1][0])


SMOKE_VARIANTS = {"storm": {}, "wo_ts": {"use_ts": False}, "wo_cs": {"use_cs": False}}


def reference_predict(net, x, mask):
    """The prediction path before the loss-free quantiser: decoders off, every codebook term and the
    alignment still computed, the code assignment from the full (T, K) logits."""
    r = net._represent(x, mask, decode=False)
    assert r.losses  # the loss terms are there: this is the old path
    return net.factor(r.e, r.f, mask.bool(), r.f_valid, None, False)[0], r


@pytest.mark.parametrize("variant", SMOKE_VARIANTS)
def test_loss_free_prediction_gives_the_same_scores_at_smoke_size(variant, monkeypatch):
    """``predict`` (no soft assignment, no codebook/alignment terms, chunked code assignment) gives
    the scores and codes of the path that computes them, at the smoke profile's sizes, with invalid
    stocks; a small chunk makes the assignment run over several blocks."""
    from storm_lib.models import quantizer
    from storm_lib.profiles import get_profile

    prof = get_profile("smoke")
    n, nf, b = 12, 7, 6
    torch.manual_seed(0)
    net = STORM(StormConfig(n_stocks=n, n_features=nf, window=prof.window,
                            **{**prof.storm, **SMOKE_VARIANTS[variant]}))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, prof.window, n, nf, generator=g)
    mask = torch.rand(b, n, generator=g) > 0.25
    x[~mask[:, None, :].expand(b, prof.window, n)] = float("nan")
    y = torch.where(mask, torch.randn(b, n, generator=g), torch.full((b, n), float("nan")))
    net(x, mask, y)  # training forward: codebook init
    net.eval()
    monkeypatch.setattr(quantizer, "ASSIGN_CHUNK", 37)
    with torch.inference_mode():
        ref, r = reference_predict(net, x, mask)
        fast = net.predict(x, mask)
        r_fast = net._represent(x, mask, decode=False, losses=False)
    assert r_fast.losses == {}
    assert torch.isfinite(fast[mask]).all()
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-6)
    for br, br_fast in ((r.ts, r_fast.ts), (r.cs, r_fast.cs)):
        if br is not None:
            assert br_fast.losses == {} and torch.equal(br.codes, br_fast.codes)
            assert torch.equal(br.perplexity, br_fast.perplexity)


@pytest.mark.parametrize("metric", ["cosine", "euclid"])
def test_chunked_assignment_equals_the_argmax_of_the_logits(metric):
    from storm_lib.models.quantizer import VectorQuantizer

    torch.manual_seed(0)
    vq = VectorQuantizer(64, 8, metric=metric, data_init=False)
    z = torch.randn(1000, 8)
    full = vq.logits(z).argmax(-1)
    for chunk in (1, 7, 256, 4096):
        assert torch.equal(vq.assign(z, chunk), full)
    out, out_free = vq.eval()(z), vq(z, losses=False)
    assert out_free.losses == {} and set(out.losses) == {"codebook", "commit", "div", "entropy", "ortho"}
    assert torch.equal(out.z_q, out_free.z_q) and torch.equal(out.indices, out_free.indices)


@pytest.mark.parametrize("all_valid", [True, False])
def test_fused_soft_assignment_matches_the_autograd_graph(all_valid, monkeypatch):
    """The cosine quantiser's blockwise div/entropy (``_CosineSoftAssignment``) against the plain
    (T, K) autograd graph: same codes, losses and gradients of a whole STORM step, blocks smaller than T."""
    from storm_lib.models import quantizer

    monkeypatch.setattr(quantizer, "ASSIGN_CHUNK", 29)
    fused = make("dual")
    plain = copy.deepcopy(fused)
    for m in plain.modules():
        if isinstance(m, quantizer.VectorQuantizer):
            m.fused = False
    x, mask, y = data(all_valid)
    for step in range(2):
        outs = []
        for net in (fused, plain):
            torch.manual_seed(20 + step)
            out = net(x, mask, y)
            net.zero_grad()
            (out.loss + 3.0 * out.losses["entropy_ts"] - 2.0 * out.losses["div_cs"]).backward()  # each term's grad
            outs.append(out)
        for k in outs[1].losses:
            close(outs[0].losses[k], outs[1].losses[k])
        assert torch.equal(outs[0].extras["ts_codes"], outs[1].extras["ts_codes"])
        for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
        with torch.no_grad():
            for p, q in zip(fused.parameters(), plain.parameters()):
                if p.grad is not None:
                    p -= 1e-2 * p.grad
                    q.copy_(p)


def test_fused_soft_assignment_gradients_of_each_term():
    """div and entropy separately (gradcheck-style, float64), with zero-weight tokens."""
    from storm_lib.models.quantizer import _CosineSoftAssignment, diversity_loss, entropy_penalty

    g = torch.Generator().manual_seed(3)
    zn = F.normalize(torch.randn(50, 6, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    en = F.normalize(torch.randn(9, 6, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    w = (torch.rand(50, generator=g, dtype=torch.float64) > 0.3).double()
    n = w.sum().clamp_min(1.0)
    for which in (1, 2):
        idx, div, ent = _CosineSoftAssignment.apply(zn, en, w, n, 0.3, 8)
        ga = torch.autograd.grad(div if which == 1 else ent, (zn, en))
        logits = zn @ en.t() / 0.3
        lp = torch.log_softmax(logits, -1)
        ref = diversity_loss(lp.exp(), w) if which == 1 else entropy_penalty(lp.exp(), lp, w)
        gb = torch.autograd.grad(ref, (zn, en))
        torch.testing.assert_close(div if which == 1 else ent, ref)
        assert torch.equal(idx, logits.argmax(-1))
        for a, b in zip(ga, gb):
            torch.testing.assert_close(a, b)


def test_compile_switch_is_identity_neutral_and_wraps_the_training_forward(monkeypatch):
    """``TrainConfig.compile`` (off by default, out of run identities at False) sends the training
    forward through ``train.compiled``; validation/prediction stay on the eager network."""
    import numpy as np

    from storm_lib import train
    from storm_lib.profiles import PROFILES, profile_identity

    assert "compile" not in profile_identity("cpu")["train"]
    assert profile_identity(PROFILES["cpu"].with_train(compile=True))["train"]["compile"] is True

    class P:  # a minimal panel for fit: splits, windows, labels
        dates = np.arange(60)
        valid = np.ones((60, N), bool)
        tickers = [str(i) for i in range(N)]
        window = W

        def split(self, proto, name):
            return np.arange(W, 45) if name == "train" else np.arange(45, 59)

        def windows(self, t):
            return np.random.default_rng(int(t[0])).standard_normal((len(t), W, N, NF)).astype(np.float32)

    calls = []

    def fake_compiled(net):
        def fwd(*a, **k):
            calls.append(net.training)
            return net(*a, **k)
        return fwd

    monkeypatch.setattr(train, "compiled", fake_compiled)
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: {"RankIC": 0.0, "RankICIR": 0.0})
    monkeypatch.setattr(train, "batch", lambda panel, t, device, cfg=None, with_y=True: (
        torch.as_tensor(panel.windows(t)), torch.ones(len(t), N, dtype=torch.bool), torch.randn(len(t), N)))
    monkeypatch.setattr(train, "trainable_days", lambda panel, t, *a: t)
    net = make("dual")
    net.epoch_diagnostics = lambda *a, **k: {}
    from storm_lib.profiles import TrainConfig
    for flag, expected in ((False, 0), (True, 3)):
        calls.clear()
        train.fit(net, P(), "clean", TrainConfig(batch_size=4, max_epochs=1, steps_per_epoch=3, compile=flag),
                  progress=False)
        assert len(calls) == expected and all(calls)

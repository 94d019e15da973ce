"""Do STORM's codebooks and alignment do their job (issue 16)? Small planted panels, a few seconds each.

- Planted clusters: every day's cross-section is one of C regime patterns plus noise. A CS codebook that
  works uses many entries on held-out windows in eval mode, and the diversity loss (computed from the
  soft assignment) agrees with the hard usage. Version 1 (Euclidean codes, τ = 1) fails: its soft
  assignment is nearly uniform, so the loss reports full diversity whatever the hard usage.
- Planted signal: features driven by a slow market state, cross-sectionally z-scored. The TS and CS
  summaries of the same window must find each other among B random windows: InfoNCE < 0.8·ln B and
  top-1 retrieval above 3/B on held-out windows. Version 1 (mean-pooled [cls], weight 1e-3) stays at
  ln B (held-out 2.74 vs ln 16 = 2.77, top-1 0.08).
"""

import math

import numpy as np
import torch

from storm_lib.models.quantizer import usage_stats
from storm_lib.models.storm import STORM, StormConfig

torch.set_num_threads(1)

N, F, W = 8, 4, 16


def zscore(x):
    """Cross-sectional z-score per day and feature (the panel's cs_zscore): x (T, N, F)."""
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)


def windows(X, Y, ts):
    return torch.from_numpy(np.stack([X[t - W + 1:t + 1] for t in ts])), torch.from_numpy(Y[ts])


def train(model, X, Y, days, steps, batch=16, lr=3e-3, seed=0):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    g = np.random.default_rng(seed)
    mask = torch.ones(batch, N, dtype=torch.bool)
    model.train()
    for _ in range(steps):
        xb, yb = windows(X, Y, np.sort(g.choice(days, batch, replace=False)))
        loss = model(xb, mask, yb).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()


def planted_clusters(T=700, C=16, seed=0):
    """Days in runs of 1–6 days per regime; each regime a fixed (N, F) pattern; noise 0.3."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((C, N, F))
    regime = np.repeat(rng.integers(0, C, T), rng.integers(1, 7, T))[:T]
    X = zscore(patterns[regime] + 0.3 * rng.standard_normal((T, N, F))).astype(np.float32)
    Y = rng.standard_normal((T, N)).astype(np.float32)
    return X, Y, C


def test_cs_codebook_is_used_in_eval_mode_and_the_loss_agrees():
    X, Y, C = planted_clusters()
    K = 64
    torch.manual_seed(0)
    model = STORM(StormConfig(n_stocks=N, n_features=F, window=W, d_model=32, n_heads=2, codebook_size=K))
    train(model, X, Y, np.arange(W - 1, 500), steps=150)
    xt, _ = windows(X, Y, np.arange(520, 700))
    with torch.no_grad():
        out = model.cs(xt.transpose(1, 2), torch.ones(len(xt), N, dtype=torch.bool))  # branches take (B, N, W, F)
    hard = usage_stats(out.codes, K)
    soft_perplexity = math.exp(-K * float(out.losses["div"]))  # exp(H(p̄)): the usage the loss reports
    print(f"eval CS usage: {hard}, soft perplexity {soft_perplexity:.1f}")
    assert hard["used"] >= C and hard["perplexity"] >= C / 2, hard
    assert soft_perplexity < 2 * hard["perplexity"], (soft_perplexity, hard)


def planted_state(T=900, seed=1):
    """Features driven by a slow 3-dimensional market state s_t (AR(1), φ = 0.9) through per-stock
    loadings, plus noise, then cross-sectionally z-scored: a window is identified by its state path,
    which both branches can see; returns y = 0.5·x(feature 0) + noise."""
    rng = np.random.default_rng(seed)
    s = np.zeros((T, 3))
    for t in range(1, T):
        s[t] = 0.9 * s[t - 1] + math.sqrt(1 - 0.81) * rng.standard_normal(3)
    loadings = rng.standard_normal((N, F, 3))
    X = zscore(np.einsum("nfk,tk->tnf", loadings, s) + 0.5 * rng.standard_normal((T, N, F))).astype(np.float32)
    Y = (0.5 * X[:, :, 0] + rng.standard_normal((T, N))).astype(np.float32)
    return X, Y


def test_alignment_retrieves_the_window_on_held_out_data():
    X, Y = planted_state()
    T = len(X)
    torch.manual_seed(0)
    model = STORM(StormConfig(n_stocks=N, n_features=F, window=W, d_model=32, n_heads=2, codebook_size=32,
                              align_level="window"))
    train(model, X, Y, np.arange(W - 1, 600), steps=200)
    B = 16
    order = np.random.default_rng(2).permutation(np.arange(620, T))
    mask = torch.ones(B, N, dtype=torch.bool)
    with torch.no_grad():
        summaries = []
        for i in range(0, len(order) - B + 1, B):
            xb, _ = windows(X, Y, np.sort(order[i:i + B]))
            xs = xb.transpose(1, 2)  # the branches take stock-major (B, N, W, F)
            summaries.append((model.ts(xs, mask).cls, model.cs(xs, mask).cls))
        loss = float(np.mean([float(model.align(ts, mask, cs)) for ts, cs in summaries]))
        print(f"held-out alignment loss {loss:.3f} (ln B = {math.log(B):.3f})")
        assert loss < 0.8 * math.log(B), loss
        target, top1 = torch.arange(B), []
        for ts, cs in summaries:
            logits = model.align.logits(ts, mask, cs)
            top1.append(0.5 * float((logits.argmax(1) == target).float().mean()
                                    + (logits.argmax(0) == target).float().mean()))
    acc = float(np.mean(top1))
    print(f"held-out top-1 retrieval {acc:.3f} (chance {1 / B:.3f})")
    assert acc > 3 / B, acc


def test_windows_that_share_a_day_are_not_negatives():
    """align_negatives="disjoint": a window sharing a day with the anchor leaves its row/column of the
    InfoNCE; the loss equals the loss over the remaining candidates; "all" (version 2) keeps them."""
    from storm_lib.models.storm import overlapping

    days = torch.tensor([100, 110, 200, 400])               # W = 16: 100 and 110 share 6 days
    ov = overlapping(days, W)
    assert ov.tolist() == [[False, True, False, False], [True, False, False, False],
                           [False, False, False, False], [False, False, False, False]]
    torch.manual_seed(0)
    cfg = StormConfig(n_stocks=N, n_features=F, window=W, d_model=32, n_heads=2, codebook_size=32,
                      align_level="window")
    align = STORM(cfg).align
    ts, cs, mask = torch.randn(4, N, 32), torch.randn(4, 32), torch.ones(4, N, dtype=torch.bool)
    logits = align.logits(ts, mask, cs)
    expect = []
    for i in range(4):
        keep = [j for j in range(4) if j == i or not ov[i, j]]
        row, col = logits[i, keep], logits[keep, i]
        pos = keep.index(i)
        expect.append(0.5 * (torch.logsumexp(row, 0) - row[pos] + torch.logsumexp(col, 0) - col[pos]))
    assert torch.allclose(align(ts, mask, cs, days), torch.stack(expect).mean(), atol=1e-6)
    align.negatives = "all"
    assert torch.allclose(align(ts, mask, cs, days), align(ts, mask, cs), atol=0)
    assert not torch.allclose(align(ts, mask, cs, days), torch.stack(expect).mean(), atol=1e-4)


def test_fit_gives_storm_the_window_days(monkeypatch):
    """train.fit passes each batch's window end days to a net with ``takes_days``; they reach the
    alignment loss, and they are the days of that batch's windows."""
    from conftest import planted_panel
    from storm_lib import train as train_mod
    from storm_lib.models import storm as storm_mod
    from storm_lib.panel import Protocol
    from storm_lib.profiles import TrainConfig

    seen, batches = [], []
    real_align, real_batch = storm_mod.Alignment.forward, train_mod.batch

    def spy_align(self, ts_cls, mask, cs_cls, days=None, cs_h=None, ts_h=None):
        seen.append(None if days is None else days.clone())
        return real_align(self, ts_cls, mask, cs_cls, days, cs_h, ts_h)

    def spy_batch(panel, t, *a, **k):
        batches.append(np.asarray(t).copy())
        return real_batch(panel, t, *a, **k)

    monkeypatch.setattr(storm_mod.Alignment, "forward", spy_align)
    monkeypatch.setattr(train_mod, "batch", spy_batch)
    panel = planted_panel(T=300, N=N, F=F, window=W)
    proto = Protocol("tiny", ("2015-02-02", "2015-08-31"), ("2015-09-01", "2015-12-31"), ("2016-01-01", "2016-02-29"))
    model = STORM(StormConfig(n_stocks=N, n_features=F, window=W, d_model=16, n_heads=2, codebook_size=16))
    cfg = TrainConfig(batch_size=4, max_epochs=1, steps_per_epoch=2, eval_batch_size=64)
    train_mod.fit(model, panel, proto, cfg, progress=False)
    train_days = [d for d in seen if d is not None]
    assert len(train_days) == 2 and np.array_equal(train_days[0].numpy(), batches[0])
    assert storm_mod.STORM.takes_days


def test_stock_level_alignment_drops_invalid_stocks_and_same_stock_false_negatives():
    """align_level="stock" (option): (B·N) pairs; an invalid stock is neither anchor nor negative, and
    the same stock in a window sharing days with the anchor's is not a negative; gradients are finite."""
    torch.manual_seed(0)
    cfg = StormConfig(n_stocks=3, n_features=F, window=W, d_model=16, n_heads=2, codebook_size=16,
                      align_level="stock")
    model = STORM(cfg)
    ts, cs_cls, cs_h = torch.randn(2, 3, 16), torch.randn(2, 16), torch.randn(2, W, 16)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    logits, valid = model.align.pair_logits(ts, mask, cs_cls, cs_h, days=torch.tensor([100, 105]))
    assert valid.tolist() == [True, True, False, True, True, True]
    inf = torch.isinf(logits)
    assert inf[0, 2] and inf[2, 0] and inf[0, 3] and inf[1, 4] and not inf[0, 4] and not inf.diagonal().any()
    logits, _ = model.align.pair_logits(ts, mask, cs_cls, cs_h, days=torch.tensor([100, 300]))
    assert not torch.isinf(logits[0, 3])                       # windows share no day: a real negative
    loss = model.align(ts.requires_grad_(), mask, cs_cls, torch.tensor([100, 105]), cs_h)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(ts.grad).all() and ts.grad[0, 2].abs().sum() == 0


def test_align_stock_drop_pools_a_random_subset_in_training_only():
    """align_stock_drop (option, off): in training the TS summary pools a random subset of the valid
    stocks (never an invalid one, never none); in eval mode, and with 0, it pools every valid stock."""
    torch.manual_seed(0)
    cfg = StormConfig(n_stocks=6, n_features=F, window=W, d_model=16, n_heads=2, codebook_size=16,
                      align_level="window", align_stock_drop=0.5)
    align = STORM(cfg).align
    ts, cs = torch.randn(3, 6, 16), torch.randn(3, 16)
    mask = torch.tensor([[True] * 6, [True, True, False, False, False, False], [True] + [False] * 5])
    align.eval()
    full = align.logits(ts, mask, cs)
    align.stock_drop = 0.0
    align.train()
    assert torch.allclose(align.logits(ts, mask, cs), full)
    align.stock_drop = 0.5
    seen = [align.logits(ts, mask, cs) for _ in range(20)]
    assert all(torch.isfinite(s).all() for s in seen)
    assert any(not torch.allclose(s[0], full[0]) for s in seen)   # window 0: a subset of its six stocks
    assert all(torch.allclose(s[2], full[2]) for s in seen)       # window 2: its only stock always stays
    ts_bad = ts.clone()
    ts_bad[1, 2:] = 1e3                                            # invalid stocks never enter the pool
    for seed in range(10):
        torch.manual_seed(seed)
        a = align.logits(ts, mask, cs)
        torch.manual_seed(seed)
        assert torch.allclose(align.logits(ts_bad, mask, cs), a)
    with np.testing.assert_raises(ValueError):
        StormConfig(n_stocks=6, n_features=F, window=W, align_stock_drop=1.0)


def test_patch_level_alignment_pairs_patches_and_masks_overlapping_ones():
    """align_level="patch" (version 4): (B·P) pairs, TS patch tokens pooled over valid stocks against the
    mean of the same p days' CS tokens; a patch that shares a day with the anchor's is not a negative;
    the diagnostics count B·P candidates."""
    torch.manual_seed(0)
    cfg = StormConfig(n_stocks=3, n_features=F, window=W, d_model=16, n_heads=2, codebook_size=16,
                      patch_len=4)
    model = STORM(cfg)
    P = W // 4
    ts_h, cs_h = torch.randn(2, 3, P, 16), torch.randn(2, W, 16)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    logits, valid = model.align.pair_logits(None, mask, None, cs_h, ts_h=ts_h)
    assert valid is None and logits.shape == (2 * P, 2 * P) and not torch.isinf(logits).any()
    # window 1 ends 6 days after window 0, so its patch 0 starts 2 days after window 0's patch 1 and
    # 2 days before its patch 2 (shared days), 6 days from its patches 0 and 3 (none shared)
    logits, _ = model.align.pair_logits(None, mask, None, cs_h, days=torch.tensor([100, 106]), ts_h=ts_h)
    inf = torch.isinf(logits)
    assert inf[1, P + 0] and inf[2, P + 0] and not inf[3, P + 0] and not inf[0, P + 0]
    assert not inf.diagonal().any() and not inf[:P, :P].any()        # patches of one window never overlap
    a = model.align.pair_logits(None, mask, None, cs_h, ts_h=ts_h)[0]
    ts_h2 = ts_h.clone()
    ts_h2[0, 2] = 1e3                                                 # an invalid stock is not pooled
    assert torch.allclose(model.align.pair_logits(None, mask, None, cs_h, ts_h=ts_h2)[0], a)
    loss = model.align(None, mask, None, torch.tensor([100, 106]), cs_h, ts_h.requires_grad_())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(ts_h.grad).all()

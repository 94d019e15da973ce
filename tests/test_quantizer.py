"""Vector quantiser and codebook regularisers (paper §2.2–2.3; storm_lib/models/quantizer.py)."""

import math

import pytest
import torch

from storm_lib.models.quantizer import (VectorQuantizer, diversity_loss, entropy_penalty, orthogonality_loss,
                                        usage_stats)

torch.set_num_threads(1)


def make_vq(k=16, d=8, seed=0, **kw):
    """A Euclidean (version 1) quantiser with N(0, 1) entries and neither data init nor restarts (so
    tests see the losses alone). The cosine quantiser (the default) has its own tests below."""
    torch.manual_seed(seed)
    vq = VectorQuantizer(k, d, data_init=False, restart_threshold=0.0, **{"metric": "euclid", **kw})
    with torch.no_grad():
        vq.codebook.normal_()
    return vq


def test_shapes_and_straight_through_gradient():
    vq = make_vq()
    z = torch.randn(3, 5, 8, requires_grad=True)
    out = vq(z)
    assert out.z_q.shape == z.shape and out.indices.shape == (3, 5) and out.indices.dtype == torch.long
    assert set(out.losses) == {"codebook", "commit", "div", "entropy", "ortho"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.losses.values())
    assert 1.0 <= out.perplexity.item() <= 16.0
    # forward value is the code, backward is the identity (straight-through)
    torch.testing.assert_close(out.z_q, vq.codebook[out.indices])
    g = torch.randn_like(z)
    (out.z_q * g).sum().backward()
    torch.testing.assert_close(z.grad, g)


def test_nearest_code_matches_brute_force():
    vq = make_vq(k=32, d=6, seed=1)
    z = torch.randn(200, 6)
    out = vq(z)
    dist = torch.cdist(z, vq.codebook.detach())  # (200, 32)
    chosen = dist.gather(1, out.indices[:, None])[:, 0]
    torch.testing.assert_close(chosen, dist.min(1).values, atol=1e-5, rtol=0)
    assert (out.indices == dist.argmin(1)).float().mean() > 0.99


def test_codebook_and_commit_values_and_gradients():
    vq = make_vq(k=4, d=2, seed=2)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    z = torch.tensor([[0.1, 0.2], [0.9, -0.1], [0.2, 1.3]], requires_grad=True)
    out = vq(z)
    assert out.indices.tolist() == [0, 1, 2]
    expected = ((0.1**2 + 0.2**2) + (0.1**2 + 0.1**2) + (0.2**2 + 0.3**2)) / 6  # mean over tokens and dims
    assert out.losses["codebook"].item() == pytest.approx(expected, rel=1e-5)
    assert out.losses["commit"].item() == pytest.approx(expected, rel=1e-5)
    # sg placement: the codebook term moves only the codebook, the commitment term only the encoder
    gc = torch.autograd.grad(out.losses["codebook"], [z, vq.codebook], retain_graph=True, allow_unused=True)
    assert gc[0] is None or gc[0].abs().sum() == 0
    assert gc[1].abs().sum() > 0 and gc[1][3].abs().sum() == 0  # unused code 3 untouched
    gm = torch.autograd.grad(out.losses["commit"], [z, vq.codebook], allow_unused=True)
    assert gm[0].abs().sum() > 0
    assert gm[1] is None or gm[1].abs().sum() == 0


def test_valid_mask_excludes_tokens():
    vq = make_vq(seed=3)
    z = torch.randn(10, 8)
    valid = torch.zeros(10, dtype=torch.bool)
    valid[:4] = True
    z_bad = z.clone()
    z_bad[4:] = 100.0  # far from every code: would dominate the losses if counted
    a, b = vq(z, valid), vq(z_bad, valid)
    for k in ("codebook", "commit", "div"):
        torch.testing.assert_close(a.losses[k], b.losses[k])
    torch.testing.assert_close(a.losses["codebook"], vq(z[:4]).losses["codebook"])


def test_diversity_lower_for_even_usage():
    k = 16
    even = torch.eye(k).repeat(4, 1) * 0.9 + 0.1 / k
    collapsed = torch.zeros(4 * k, k)
    collapsed[:, 0] = 1.0
    collapsed = collapsed * 0.9 + 0.1 / k
    assert diversity_loss(even) < diversity_loss(collapsed)
    assert diversity_loss(even).item() == pytest.approx(-math.log(k) / k, abs=1e-6)
    # the quantiser's term, too: tokens on distinct codes vs all tokens on one code
    vq = make_vq(k=k, d=16, seed=4)
    with torch.no_grad():
        vq.codebook.copy_(3 * torch.eye(k))
    spread = vq(3 * torch.eye(k)).losses["div"]
    one = vq(3 * torch.eye(k)[[0] * k]).losses["div"]
    assert spread < one
    # and minimising it moves the encoder outputs apart
    z = (3 * torch.eye(k)[[0] * k] + 0.01 * torch.randn(k, k)).requires_grad_()
    opt = torch.optim.Adam([z], lr=0.05)
    before = vq(z).perplexity.item()
    for _ in range(200):
        opt.zero_grad()
        vq(z).losses["div"].backward()
        opt.step()
    assert vq(z).perplexity.item() > before + 1.0


def test_orthogonality_loss_formula_and_optimisation():
    torch.manual_seed(5)
    e = torch.randn(16, 16)
    cos = torch.nn.functional.normalize(e, dim=1) @ torch.nn.functional.normalize(e, dim=1).T
    assert orthogonality_loss(e).item() == pytest.approx(((cos**2).sum() / 16**2 - 1 / 16).item(), abs=1e-6)
    assert orthogonality_loss(torch.eye(16)).item() == pytest.approx(0.0, abs=1e-7)

    vq = make_vq(k=16, d=16, seed=5)
    start = vq.codebook.detach().clone()

    def off_diag_cos(w):
        w = torch.nn.functional.normalize(w.detach(), dim=1)
        c = (w @ w.T).abs()
        return (c.sum() - c.diag().sum()) / (16 * 15)

    before = off_diag_cos(vq.codebook)
    opt = torch.optim.Adam(vq.parameters(), lr=0.01)
    z = torch.randn(32, 16)
    for _ in range(300):
        opt.zero_grad()
        vq(z).losses["ortho"].backward()
        opt.step()
    after = off_diag_cos(vq.codebook)
    assert after < before / 5, (before, after)
    assert not torch.allclose(vq.codebook.detach(), start)  # the parameter itself moved (no EMA overwrite)


def test_data_init_and_eval_mode():
    torch.manual_seed(6)
    vq = VectorQuantizer(16, 4, metric="euclid")  # data_init=True
    assert not vq.initialised
    z = torch.randn(100, 4)
    vq.eval()
    vq(z)
    assert not vq.initialised  # eval never initialises
    vq.train()
    out = vq(z)
    assert vq.initialised
    # entries are data tokens, and every entry is used by at least its own token
    d = (vq.codebook.detach()[:, None] - z[None]).norm(dim=-1).min(1).values
    assert d.max() < 1e-5
    assert out.perplexity > 8
    # losses are available in eval mode too, and quantisation is unchanged
    vq.eval()
    out_eval = vq(z)
    assert torch.equal(out_eval.indices, out.indices) and torch.isfinite(out_eval.losses["commit"])
    # fewer tokens than codes: jittered copies, still finite and deterministic given the seed
    torch.manual_seed(7)
    a = VectorQuantizer(16, 4, metric="euclid")
    a(torch.randn(5, 4))
    torch.manual_seed(7)
    b = VectorQuantizer(16, 4, metric="euclid")
    b(torch.randn(5, 4))
    assert torch.equal(a.codebook, b.codebook) and torch.isfinite(a.codebook).all()


def test_dead_codes_are_restarted_in_training_only():
    vq = make_vq(k=16, d=4, seed=8)
    vq.restart_threshold = 0.1
    with torch.no_grad():
        vq.codebook.copy_(torch.randn(16, 4) + 50.0)  # every entry far away ...
        vq.codebook[0] = 0.0                            # ... but one: all tokens collapse onto entry 0
    torch.manual_seed(9)
    z = torch.randn(64, 4)
    vq.eval()
    for _ in range(100):
        out = vq(z)
    assert out.perplexity.item() == pytest.approx(1.0) and vq.restarts.item() == 0
    vq.train()
    for _ in range(60):  # usage EMA of unused entries: 0.95^n < 0.1 after 45 steps
        out = vq(z)
    assert vq.restarts.item() == 15
    assert out.perplexity.item() > 8.0
    # restarted entries sit on encoder tokens
    d = (vq.codebook.detach()[1:, None] - z[None]).norm(dim=-1).min(1).values
    assert d.max() < 1e-5


# --------------------------------------------------------------------------- cosine codes (the default)


def test_cosine_assignment_output_and_straight_through():
    torch.manual_seed(10)
    vq = VectorQuantizer(32, 8, data_init=False, restart_threshold=0.0)
    assert vq.metric == "cosine" and vq.tau == 0.05
    z = torch.randn(6, 7, 8, requires_grad=True)
    out = vq(z)
    unit = torch.nn.functional.normalize(vq.codebook.detach(), dim=-1)
    cos = torch.nn.functional.normalize(z.detach(), dim=-1) @ unit.T
    assert torch.equal(out.indices, cos.argmax(-1))
    torch.testing.assert_close(out.z_q, math.sqrt(8) * unit[out.indices])  # unit entries of RMS 1
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.losses.values())
    # codebook / commit: squared distance of the unit vectors, 2 − 2·cos, averaged over dims
    expected = (2 - 2 * cos.max(-1).values).mean() / 8
    assert out.losses["commit"].item() == pytest.approx(expected.item(), rel=1e-4)
    (out.z_q.sum()).backward()  # gradients reach the encoder through the normalisation
    assert z.grad.abs().sum() > 0


def test_cosine_kmeans_init_covers_planted_clusters():
    torch.manual_seed(11)
    centres = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    z = 3 * centres.repeat(40, 1) + 0.05 * torch.randn(320, 16)
    vq = VectorQuantizer(8, 16, restart_threshold=0.0)
    vq.train()
    out = vq(z)
    assert vq.initialised
    assert torch.unique(out.indices).numel() == 8 and out.perplexity.item() > 7.9
    # the entries sit on the cluster directions
    cos = torch.nn.functional.normalize(vq.codebook.detach(), dim=-1) @ centres.T
    assert cos.max(0).values.min() > 0.99
    # a loaded quantiser is never re-initialised, and version 1 checkpoints (an "initialised" buffer) load
    fresh = VectorQuantizer(8, 16)
    state = {**vq.state_dict(), "initialised": torch.tensor(True)}
    fresh.load_state_dict(state)
    assert fresh.initialised and torch.equal(fresh.codebook, vq.codebook)


def test_entropy_penalty_rewards_sharp_and_spread_assignments():
    k = 16
    sharp_spread = torch.eye(k).repeat(2, 1) * 0.999 + 0.001 / k
    flat = torch.full((2 * k, k), 1.0 / k)
    one = torch.zeros(2 * k, k)
    one[:, 0] = 1.0
    one = one * 0.999 + 0.001 / k
    h = [entropy_penalty(p, p.log()).item() for p in (sharp_spread, flat, one)]
    assert h[0] == pytest.approx(-math.log(k), abs=0.05)
    assert h[1] == pytest.approx(0.0, abs=1e-6) and h[2] == pytest.approx(0.0, abs=0.05)
    # the paper's L_div cannot tell the first two apart; the entropy penalty can
    assert diversity_loss(sharp_spread).item() == pytest.approx(diversity_loss(flat).item(), abs=1e-6)


def test_restart_has_no_host_sync_and_moves_dead_entries_only():
    torch.manual_seed(12)
    vq = VectorQuantizer(16, 4, data_init=False, restart_threshold=0.5)
    with torch.no_grad():
        vq.usage_ema[:8] = 0.0          # entries 0-7 dead, 8-15 alive
    before = vq.codebook.detach().clone()
    vq.train()
    vq(torch.randn(64, 4))
    assert vq.restarts.item() == 8
    assert not torch.equal(vq.codebook[:8], before[:8]) and torch.equal(vq.codebook[8:], before[8:])
    assert torch.allclose(vq.codebook[:8].norm(dim=-1), torch.ones(8))  # restarted on unit tokens


def test_usage_stats():
    s = usage_stats(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 8)
    assert s["used"] == 4 and s["perplexity"] == pytest.approx(4.0)

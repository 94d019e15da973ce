"""GPU settings, tested on the CPU (no test needs a GPU): bf16 autocast (TrainConfig.autocast) with
the VQ distances in float32, the CUDA determinism flags, run identities unchanged by the new setting,
and benchmarks/gpu_paper.py's code path at the smoke profile on the CPU."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from storm_lib import train
from storm_lib.models import make_model
from storm_lib.models.quantizer import VectorQuantizer
from storm_lib.panel import Protocol
from storm_lib.profiles import PROFILES, profile_identity

from conftest import planted_panel

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROTO = Protocol("tiny", ("2015-03-02", "2015-12-31"), ("2016-01-01", "2016-06-30"), ("2016-07-01", "2016-12-30"))
ROOT = Path(__file__).resolve().parent.parent


def test_autocast_context():
    cpu = torch.device("cpu")
    a = torch.randn(4, 8)
    with train.autocast(cpu, "bf16"):
        assert (a @ a.T).dtype == torch.bfloat16
    with train.autocast(cpu, None):
        assert (a @ a.T).dtype == torch.float32
    with pytest.raises(ValueError, match="autocast must be"):
        train.autocast(cpu, "fp8")


def test_seed_everything_sets_cuda_determinism(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    train.seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.backends.cuda.matmul.allow_tf32 and torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("metric", ["euclid", "cosine"])
def test_vq_distances_stay_float32_under_autocast(metric):
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 8, data_init=False, restart_threshold=0.0, metric=metric).eval()
    with torch.no_grad():
        vq.codebook.normal_()
    z = torch.randn(500, 8).bfloat16()  # the tokens as a bf16 encoder would hand them over
    zd, ed = z.double(), vq.codebook.double()
    if metric == "euclid":   # exact nearest entry
        ref = ((zd[:, None, :] - ed[None]) ** 2).sum(-1).argmin(-1)
    else:                    # exact most similar entry (cosine)
        ref = (torch.nn.functional.normalize(zd, dim=-1) @ torch.nn.functional.normalize(ed, dim=-1).T).argmax(-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z)
    assert torch.equal(out.indices, ref)
    if metric == "euclid":  # a bf16 distance matrix would pick other entries for some of these tokens
        d16 = (z @ vq.codebook.bfloat16().T * -2 + (vq.codebook.bfloat16() ** 2).sum(-1))
        assert (d16.float().argmin(-1) != ref).any()


def fit_storm(autocast):
    panel = planted_panel(N=8, F=4)
    kw = {"autocast": autocast} if autocast else {}
    m = make_model("storm", profile="smoke", seed=0, progress=False, max_epochs=1, steps_per_epoch=3, **kw)
    m.fit(panel, PROTO)
    return m, m.predict(panel, split="test")


def test_bf16_autocast_trains_deterministically_on_cpu():
    m1, s1 = fit_storm("bf16")
    _, s2 = fit_storm("bf16")
    _, s32 = fit_storm(None)
    assert m1.train_cfg.autocast == "bf16" and np.isfinite(m1.history_["loss"]).all()
    assert np.isfinite(s1.to_numpy()).all()
    np.testing.assert_array_equal(s1.to_numpy(), s2.to_numpy())  # deterministic for a seed on CPU
    assert not np.array_equal(s1.to_numpy(), s32.to_numpy())       # autocast really ran


def test_new_training_field_keeps_run_identities():
    cpu = profile_identity("cpu")
    assert "autocast" not in cpu["train"] and "note" not in cpu
    assert profile_identity(PROFILES["cpu"].with_train(autocast="bf16"))["train"]["autocast"] == "bf16"


@pytest.mark.slow
def test_committed_runs_keep_their_directories(data_dir):
    """Adding TrainConfig.autocast must not move any committed run (they would all count as missing)."""
    from storm_lib.run import _spec_of, finished_runs, run_dir, superseded_runs
    from storm_lib.tasks import RunContext

    runs = finished_runs(ROOT / "results")
    old = superseded_runs(runs)   # runs of an earlier budget have moved on purpose
    runs = [(p, r) for p, r in runs if r["spec"]["universe"] == "dj30" and p not in old][:20]
    if not runs:
        pytest.skip("no committed DJ30 runs")
    ctx = RunContext(data_dir=data_dir, progress=False)
    for path, rec in runs:
        assert run_dir(_spec_of(rec), ROOT / "results", ctx) == path


@pytest.mark.slow
def test_gpu_script_runs_on_cpu(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_paper
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored after the test (the script sets it)
    monkeypatch.setenv("STORM_REUSE_FITS", "0")
    out = tmp_path / "fig.json"
    rc = gpu_paper.main(["--device", "cpu", "--profile", "smoke", "--universe", "sample", "--max-epochs", "1",
                         "--probe", "1", "--results-dir", str(tmp_path / "results"), "--out", str(out)])
    assert rc == 0
    fig = json.loads(out.read_text())
    assert fig["status"] == "done" and fig["recorded_device"] == "cpu" and fig["epochs"] == 1
    assert fig["probe_s_per_step"] > 0 and fig["params"] > 0
    run = Path(fig["run_dir"])
    assert run.parent.name == 'storm-autocast=bf16-max_epochs=1' and (run / "run.json").is_file()
    rec = json.loads((run / "run.json").read_text())
    assert rec["config"]["options"] == {"autocast": "bf16", "max_epochs": 1}
    assert rec["info"]["model"]["train_cfg"]["autocast"] == "bf16"

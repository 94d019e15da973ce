"""STORM at paper size on one GPU: one DJ30 run, written into results/, with timings (prints figures).

    python benchmarks/gpu_paper.py                                  # CUDA, paper profile, DJ30, seed 0
    python benchmarks/gpu_paper.py --device cpu --profile smoke     # the same code path on a CPU (seconds)

One portfolio-task run of STORM (clean protocol) through :func:`storm_lib.run.run_one`, so the run lands
in the results directory exactly as ``python -m storm_lib.run`` would write it; ``run.json`` records the
device (``hardware.torch_device``, ``hardware.cuda``). Settings for the GPU (storm_lib.train): CUDA determinism
flags (cuBLAS workspace, deterministic cuDNN, no TF32; ``torch.use_deterministic_algorithms(True,
warn_only=True)``), bf16 autocast around the forward with the VQ distances in float32
(``--autocast bf16``, the run option ``autocast=bf16``; ``--autocast none`` for float32). The paper
profile trains for at most 200 epochs with early stopping (patience 20); ``--max-epochs`` caps it (run
option ``max_epochs``, so a capped run has its own directory): the default 40 sizes the run to a few
minutes on one H100-class GPU. Before the run, ``--probe`` timed training steps print the step time.

Prints: device, parameters, probe step time and windows/s, fit seconds, epochs (best epoch), seconds per
epoch, peak GPU memory, wall seconds, and the run's test metrics; ``--out F.json`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--universe", default="dj30")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--autocast", choices=("bf16", "none"), default="bf16")
    ap.add_argument("--max-epochs", type=int, default=40, help="cap on epochs (0: the profile's own)")
    ap.add_argument("--probe", type=int, default=5, help="timed training steps before the run (0: none)")
    ap.add_argument("--results-dir", default=None, help="default $STORM_RESULTS_DIR or results/")
    ap.add_argument("--data-dir", default=None, help="default $STORM_DATA_DIR")
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file")
    return ap.parse_args(argv)


def options(a) -> dict:
    opts = {}
    if a.autocast != "none":
        opts["autocast"] = a.autocast
    if a.max_epochs:
        opts["max_epochs"] = a.max_epochs
    return opts


def probe(spec, ctx, steps: int) -> dict:
    """Median seconds of ``steps`` training steps (after one warm-up step) of the run's network."""
    import numpy as np
    import torch

    from storm_lib import train
    from storm_lib.models import make_model
    from storm_lib.tasks.portfolio import model_kwargs

    model = make_model(spec.model, profile=spec.profile, seed=spec.seed, progress=False,
                       **model_kwargs(spec.model, spec.options_dict))
    panel = ctx.panel(spec.universe, window=model.profile.window)
    model._prepare(panel, spec.protocol)
    cfg, device = model.train_cfg, train.pick_device(None)
    train.seed_everything(spec.seed)
    net = model.build_net(panel).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    days = train.trainable_days(panel, panel.split(spec.protocol, "train"))
    rng = np.random.default_rng(0)
    times = []
    for i in range(steps + 1):
        x, mask, y = train.batch(panel, np.sort(rng.choice(days, cfg.batch_size, replace=False)), device, cfg)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with train.autocast(device, cfg.autocast):
            out = net(x, mask, y)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    return {"params": int(sum(p.numel() for p in net.parameters())), "batch": cfg.batch_size,
            "probe_s_per_step": round(s, 4), "probe_windows_per_s": round(cfg.batch_size / s, 1)}


def main(argv=None) -> int:
    a = parse(argv)
    if a.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch initialises CUDA: every fit stays on the CPU
    import pandas as pd
    import torch

    from storm_lib.run import RunSpec, print_metrics, run_one
    from storm_lib.tasks import RunCache, RunContext

    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False); use --device cpu", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu"
    protocol = "sample" if a.universe == "sample" else "clean"  # the sample's data end in 2022
    spec = RunSpec("portfolio", a.universe, "storm", protocol, a.profile, a.seed, options(a))
    print(f"device: {device}; torch {torch.__version__}; run: {spec.command()}", flush=True)
    cache = RunCache()
    fig = {"device": device, "torch": torch.__version__, "command": spec.command()}
    if a.probe:
        fig.update(probe(spec, RunContext(data_dir=a.data_dir, cache=cache, progress=False), a.probe))
        print(f"probe: {fig['params']:,} parameters, batch {fig['batch']}: {fig['probe_s_per_step']:.4f} s/step, "
              f"{fig['probe_windows_per_s']:.1f} windows/s", flush=True)
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    row = run_one(spec, a.results_dir, a.data_dir, progress=True, cache=cache,
                  argv=["python", "benchmarks/gpu_paper.py", *(sys.argv[1:] if argv is None else argv)])
    fig["wall_s"] = round(time.perf_counter() - t0, 1)
    fig["status"], fig["run_dir"] = row["status"], row["run_dir"]
    if row["status"] == "failed":
        print(row["error"], file=sys.stderr)
        return 1
    path = Path(row["run_dir"])
    rec = json.loads((path / "run.json").read_text())
    info = rec.get("info", {})
    hist = pd.read_csv(path / "history.csv") if (path / "history.csv").is_file() else pd.DataFrame()
    fig.update({"recorded_device": rec["hardware"].get("torch_device"), "fit_s": info.get("fit_seconds"),
                "fit_reused": bool(info.get("fit_reused")), "epochs": len(hist), "best_epoch": info.get("best_epoch"),
                "s_per_epoch": round(float(hist["seconds"].mean()), 2) if "seconds" in hist else None})
    if a.device == "cuda":
        fig["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(f"{row['status']}: {path}")
    print("figures: " + ", ".join(f"{k} {v}" for k, v in fig.items() if k not in ("command", "run_dir")))
    print_metrics(path)
    if a.out:
        Path(a.out).write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""STORM speed and one real run (a script that prints figures, not a test).

    python benchmarks/storm.py speed [--universe dj30 sp500] [--profile cpu paper] [--steps 5]
    python benchmarks/storm.py run --universe dj30 --profile cpu --seed 0 [--variant storm] [--out F.json]
    python benchmarks/storm.py compare --rev 757ada5 --universe dj30 sp500 --threads 1 2 [--steps 3]
    python benchmarks/storm.py profile --universe dj30 sp500 [--steps 3]

``speed`` times training steps (windows per second) and peak memory for each (universe, profile,
variant), each in a fresh subprocess so peak RSS is its own. ``run`` trains to early stopping under
the clean protocol and prints validation/test RankIC and the TopK-Drop test metrics. ``compare`` runs the
training step and the prediction of git revision ``--rev`` (imported from a ``git archive`` copy under
another package name) and of this working tree side by side in ONE process, on identical weights and
batches, and prints FLOPs per step, GFLOP/s, the same-process sgemm peak, efficiency, the step's peak
memory and page faults, windows/s and the old/new ratios (see :mod:`benchmarks.storm_compare`).
``profile`` prints the self CPU time of a training step by operator and the ceiling of exact speedups
(the step over its matrix-multiply and dropout time).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _panel(universe: str, window: int):
    from storm_lib import data
    from storm_lib.panel import Panel

    return Panel.from_prices(data.load_prices(universe), window=window, verbose=False)


def _training_step(universe: str, profile: str, variant: str, batch: int | None = None):
    """(step, net, batch size, device): ``step()`` runs one training step of a fresh net on a random batch of
    training windows (seeded), with the window days for nets that take them, as ``train.fit`` does: the
    allocator setting ``fit`` applies on a CPU (``TrainConfig.keep_freed_memory``) and gradient clipping."""
    import torch

    from storm_lib import train
    from storm_lib.models.storm import StormModel
    from storm_lib.profiles import get_profile

    prof = get_profile(profile)
    panel = _panel(universe, prof.window)
    m = StormModel(variant, profile=profile, seed=0, progress=False)
    train.seed_everything(0)
    device = train.pick_device(None)
    if device.type == "cpu" and prof.train.keep_freed_memory:
        train.keep_freed_memory()  # as fit does: without it every large buffer is faulted in each step
    net = m.build_net(panel).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    t_all = panel.split("clean", "train")
    bs = batch or prof.train.batch_size
    rng = np.random.default_rng(0)

    def step():
        tb = np.sort(rng.choice(t_all, bs, replace=False))
        x, mask, y = train.batch(panel, tb, device, prof.train)
        days = {"days": torch.as_tensor(tb, device=device)} if getattr(net, "takes_days", False) else {}
        out = net(x, mask, y, **days)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), prof.train.grad_clip)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step, net, bs, device


def speed_one(universe: str, profile: str, variant: str, steps: int, batch: int | None = None) -> dict:
    import torch

    step, net, bs, device = _training_step(universe, profile, variant, batch)
    times = []
    for s in range(steps + 1):  # the first step (codebook init, allocator warm-up) is not timed
        t0 = time.perf_counter()
        step()
        if s:
            times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    return {"universe": universe, "profile": profile, "variant": variant, "device": str(device),
            "threads": torch.get_num_threads(), "params": sum(p.numel() for p in net.parameters()),
            "batch": bs, "sec_per_step": sec, "windows_per_sec": bs / sec,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_cuda_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


# self-time categories of the profile mode: which share of a step an exact change could still remove
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::addmm_", "aten::baddbmm", "aten::addbmm"}
DROPOUT_OPS = {"aten::bernoulli_", "aten::native_dropout", "aten::native_dropout_backward"}


def profile_one(universe: str, profile: str, variant: str, steps: int, batch: int | None = None) -> int:
    """Self CPU time of ``steps`` training steps by operator (torch.profiler), grouped into matrix
    multiplies, dropout's mask draws and the rest, and the ceiling of exact speedups: the step's time over
    its matmul + dropout time (what is left if every other operator took no time, dropout kept)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step, _, bs, _ = _training_step(universe, profile, variant, batch)
    for _ in range(2):  # codebook init and allocator warm-up
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    ops = [(e.key, e.self_cpu_time_total / 1e3 / steps, e.count // steps) for e in prof.key_averages()]
    total = sum(t for _, t, _ in ops)
    mm = sum(t for k, t, _ in ops if k in MATMUL_OPS)
    drop = sum(t for k, t, _ in ops if k in DROPOUT_OPS)
    print(f"{universe} {profile} {variant}, batch {bs}, {torch.get_num_threads()} thread(s), {steps} steps: "
          f"self CPU {total:.0f} ms/step")
    for k, t, n in sorted(ops, key=lambda r: -r[1])[:15]:
        print(f"  {k:40s} {t:8.1f} ms/step {100 * t / total:5.1f} %  {n:5d} calls/step")
    print(f"matmul {100 * mm / total:.1f} %, dropout mask draws {100 * drop / total:.1f} %, "
          f"other {100 * (total - mm - drop) / total:.1f} %; ceiling of exact speedups "
          f"{total / (mm + drop):.2f}x (matmul + dropout kept), {total / mm:.2f}x without dropout")
    return 0


def run_one(universe: str, profile: str, variant: str, seed: int) -> dict:
    from storm_lib import data, metrics, portfolio
    from storm_lib.models.storm import StormModel
    from storm_lib.profiles import get_profile

    prof = get_profile(profile)
    panel = _panel(universe, prof.window)
    t0 = time.perf_counter()
    m = StormModel(variant, profile=profile, seed=seed).fit(panel, "clean")
    fit_s = time.perf_counter() - t0
    res = {"universe": universe, "profile": profile, "variant": variant, "seed": seed,
           "fit_seconds": fit_s, "epochs": int(len(m.history_)),
           "best_epoch": int(m.history_.loc[m.history_["best"], "epoch"].iloc[-1])}
    for split in ("valid", "test"):
        t = panel.split("clean", split)
        s = metrics.ic_summary(metrics.rank_ic(m.predict(panel, t), panel.label_frame(t)))
        res[f"{split}_RankIC"], res[f"{split}_RankICIR"] = s["RankIC"], s["RankICIR"]
    t = panel.split("clean", "test")
    bt = portfolio.topk_drop(m.predict(panel, t), panel.label_frame(t))
    res.update({f"test_{k}": v for k, v in bt.summary("standard").items() if k != "n_days"})
    idx = portfolio.benchmark_returns(data.market_index(universe), panel.dates[t])
    res.update({f"index_{k}": v for k, v in metrics.portfolio_metrics(idx, "standard").items() if k != "n_days"})
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["speed", "run", "compare", "profile", "_one"])
    ap.add_argument("--universe", nargs="+", default=["dj30"])
    ap.add_argument("--profile", nargs="+", default=["cpu"])
    ap.add_argument("--variant", nargs="+", default=["storm"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=None, help="speed: override the profile's batch size")
    ap.add_argument("--out", default=None)
    ap.add_argument("--rev", default="757ada5", help="compare: the git revision to measure against")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="compare: torch thread counts")
    ap.add_argument("--configs", nargs="+", default=None, help="compare: configurations (default: all)")
    ap.add_argument("--predict-days", type=int, default=128,
                    help="compare: validation window ends to predict (0: the whole validation span)")
    a = ap.parse_args()
    if a.mode == "compare":
        from storm_compare import compare

        return compare(a.universe, a.profile[0], a.rev, a.threads, a.steps, a.configs, a.predict_days, a.out)
    if a.mode == "profile":
        for u in a.universe:
            profile_one(u, a.profile[0], a.variant[0], a.steps, a.batch)
        return 0
    rows = []
    for u in a.universe:
        for p in a.profile:
            for v in a.variant:
                if a.mode == "_one":
                    print(json.dumps(speed_one(u, p, v, a.steps, a.batch)))
                    return 0
                if a.mode == "speed":
                    cmd = [sys.executable, __file__, "_one", "--universe", u, "--profile", p, "--variant", v,
                           "--steps", str(a.steps)] + (["--batch", str(a.batch)] if a.batch else [])
                    out = subprocess.run(cmd, capture_output=True, text=True)
                    if out.returncode:
                        print(out.stderr[-2000:], file=sys.stderr)
                        continue
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    print(f"{u:6s} {p:6s} {v:6s} {r['device']:5s} threads {r['threads']} params {r['params']:>10,} "
                          f"batch {r['batch']:3d}  {r['sec_per_step']:.3f} s/step  {r['windows_per_sec']:.1f} windows/s  "
                          f"peak RSS {r['peak_rss_gb']:.2f} GB"
                          + (f"  peak CUDA {r['peak_cuda_gb']:.2f} GB" if r["peak_cuda_gb"] else ""), flush=True)
                else:
                    r = run_one(u, p, v, a.seed)
                    print(json.dumps(r, indent=1), flush=True)
                rows.append(r)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

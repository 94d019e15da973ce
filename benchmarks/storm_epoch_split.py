"""How one cpu-profile STORM epoch splits between training steps and validation (a script that prints figures).

    STORM_NUM_THREADS=1 python benchmarks/storm_epoch_split.py sp500 [dj30]

Builds a fresh cpu-profile STORM on the universe (the profile's batch size for it), times 3 training
steps (forward, backward, AdamW; median after one warm-up step), the validation prediction
(``train.evaluate``) and STORM's per-epoch diagnostics probe over the first 64 validation days, and scales
them to one epoch of ``steps_per_epoch`` steps and the whole validation span. It justified the SP500 budget
runs' validation interval (``Profile.budget_options``, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch


def split(universe: str, days: int = 64) -> str:
    from storm_lib import data, train
    from storm_lib.models.storm import StormModel
    from storm_lib.panel import Panel
    from storm_lib.profiles import get_profile

    panel = Panel.from_prices(data.load_prices(universe), window=get_profile("cpu").window, verbose=False)
    m = StormModel(profile="cpu", seed=0)
    m._prepare(panel, "clean")
    torch.manual_seed(0)
    net, cfg = m.build_net(panel), m.train_cfg
    tr = train.trainable_days(panel, panel.split(m.protocol_, "train"), cfg.min_valid_stocks)
    va = train.trainable_days(panel, panel.split(m.protocol_, "valid"), cfg.min_valid_stocks)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    net.train()
    times = []
    for _ in range(4):
        tb = np.sort(rng.choice(tr, cfg.batch_size, replace=False))
        x, mask, y = train.batch(panel, tb, torch.device("cpu"), cfg)
        t0 = time.perf_counter()
        out = net(x, mask, y, days=torch.as_tensor(tb))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step = float(np.median(times[1:]))
    sub = va[:days]
    t0 = time.perf_counter()
    train.evaluate(net, panel, sub, cfg.eval_batch_size)
    pred = (time.perf_counter() - t0) * len(va) / len(sub)
    t0 = time.perf_counter()
    net.epoch_diagnostics(panel, sub, cfg.batch_size)
    probe = (time.perf_counter() - t0) * len(va) / len(sub)
    steps = cfg.steps_per_epoch
    return (f"{universe}: batch {cfg.batch_size}, {steps} steps per epoch, {torch.get_num_threads()} thread(s); "
            f"step {step:.2f} s -> {steps * step:.0f} s of training per epoch; validation over {len(va)} days: "
            f"prediction {pred:.0f} s + diagnostics {probe:.0f} s (from {len(sub)} days)")


if __name__ == "__main__":
    import os

    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    for u in sys.argv[1:] or ["sp500"]:
        print(split(u))

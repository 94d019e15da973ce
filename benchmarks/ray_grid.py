"""The smoke grid through the local executor and through Ray, side by side (prints figures).

    python benchmarks/ray_grid.py [--universe dj30] [--models lightgbm lstm transformer storm] [--seeds 0 1]
                                  [--ray-cpus 2] [--order local,ray,ray,local]

Each executor runs the same grid into its own fresh results directory (fits not shared:
``STORM_REUSE_FITS=0``; the feature cache is warmed first so neither pays for it), in the given order
(repeat both, e.g. ``local,ray,ray,local``, to see the noise of a shared machine). Ray's time includes
starting a local instance with ``--ray-cpus`` CPUs (printed separately) and its workers importing
torch. Prints wall seconds per pass, the ratio, the load average before and after, and whether the two
executors' metrics are identical.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--universe", default="dj30")
    ap.add_argument("--models", nargs="+", default=["lightgbm", "lstm", "transformer", "storm"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--ray-cpus", type=int, default=2)
    ap.add_argument("--order", default="local,ray")
    a = ap.parse_args(argv)
    os.environ["STORM_REUSE_FITS"] = "0"
    os.environ.setdefault("STORM_NUM_THREADS", "1")
    import pandas as pd
    import ray

    from storm_lib.run import grid, load_results, run_grid
    from storm_lib.tasks import RunContext

    protocol = "sample" if a.universe == "sample" else "clean"
    specs = grid("portfolio", a.universe, a.models, protocol, "smoke", a.seeds)
    RunContext(progress=False).panel(a.universe, window=16)  # warm the feature cache on disk
    print(f"grid: {len(specs)} runs ({a.universe}, smoke, models {' '.join(a.models)}, seeds {a.seeds}); "
          f"{os.cpu_count()} CPUs; load before {os.getloadavg()}", flush=True)
    walls, roots = {}, {}
    for i, name in enumerate(a.order.split(",")):
        root = Path(tempfile.mkdtemp(prefix=f"raygrid-{name}-"))
        t0 = time.perf_counter()
        if name == "ray":
            ray.init(num_cpus=a.ray_cpus, include_dashboard=False, object_store_memory=100 * 2**20,
                     log_to_driver=False)
            t_init = time.perf_counter() - t0
            out = run_grid(specs, root, progress=False, executor="ray")
            ray.shutdown()
        else:
            t_init = 0.0
            out = run_grid(specs, root, progress=False)
        wall = time.perf_counter() - t0
        assert (out["status"] == "done").all(), out[["model", "seed", "status", "error"]]
        walls.setdefault(name, []).append(wall)
        roots.setdefault(name, root)
        print(f"pass {i + 1} {name:5s}: {wall:6.1f} s wall (ray start {t_init:.1f} s), sum of run seconds "
              f"{out['seconds'].sum():.1f}; load {os.getloadavg()}", flush=True)
    if {"local", "ray"} <= set(walls):
        loc, ray_ = min(walls["local"]), min(walls["ray"])
        print(f"best local {loc:.1f} s, best ray {ray_:.1f} s: ray/local {ray_ / loc:.2f}")
        cols = ["model", "seed", "split", "convention", "metric", "value"]
        m = [load_results(roots[k])[cols].sort_values(cols[:5]).reset_index(drop=True) for k in ("local", "ray")]
        same = m[0].equals(m[1])
        print(f"metrics identical between executors: {same} ({len(m[0])} rows)")
        if not same:
            print(pd.concat(m, axis=1).head())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

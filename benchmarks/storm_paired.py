"""Paired validation check of a numerics-changing STORM setting (a script that prints figures).

    python benchmarks/storm_paired.py --universe dj30 --seeds 0 1 --set dropout=0.0 [--set ...]

For every seed, fits STORM twice under the clean protocol with the same seed and the cpu profile:
once as configured by the profile, once with the given model overrides (``--set key=value``, StormConfig
fields) and prints the best and mean validation RankIC of each fit, its epochs and fit seconds. A
setting is kept on only when the difference lies within the seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import json
import time


def _value(s: str):
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(s.lower(), s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--universe", default="dj30")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--set", action="append", default=[], help="StormConfig override key=value")
    a = ap.parse_args()
    from storm_lib import data
    from storm_lib.models.storm import StormModel
    from storm_lib.panel import Panel
    from storm_lib.profiles import get_profile

    over = {k: _value(v) for k, v in (s.split("=", 1) for s in a.set)}
    panel = Panel.from_prices(data.load_prices(a.universe), window=get_profile(a.profile).window, verbose=False)
    for seed in a.seeds:
        for name, model in (("profile", {}), ("+" + ",".join(a.set), over)):
            t0 = time.perf_counter()
            m = StormModel("storm", profile=a.profile, seed=seed, progress=False, model=model).fit(panel, "clean")
            h = m.history_
            print(json.dumps({"universe": a.universe, "seed": seed, "setting": name,
                              "best_val_RankIC": round(float(h["val_RankIC"].max()), 4),
                              "mean_val_RankIC": round(float(h["val_RankIC"].mean()), 4),
                              "epochs": int(len(h)), "fit_seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

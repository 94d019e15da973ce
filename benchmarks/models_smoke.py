"""Every model of the paper's tables, end to end on a real universe at the smoke profile.

    python benchmarks/models_smoke.py sp500 --protocols clean paper

Builds the panel (window 16), fits each model (train split, selection on the protocol's validation
split), predicts the test split and prints fit+predict time, coverage and test RankIC. It proves the
path runs on a universe of that size; the smoke profile is far too small for meaningful accuracy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from storm_lib import data, metrics
from storm_lib.models import MODEL_NAMES, make_model
from storm_lib.panel import Panel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("universe")
    ap.add_argument("--protocols", nargs="+", default=["clean", "paper"])
    ap.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    a = ap.parse_args()
    t0 = time.perf_counter()
    panel = Panel.from_prices(data.load_prices(a.universe), window=16, verbose=False)
    print(f"{panel} built in {time.perf_counter() - t0:.1f} s", flush=True)
    for proto in a.protocols:
        for name in a.models:
            t = time.perf_counter()
            model = make_model(name, profile="smoke", seed=0, progress=False).fit(panel, proto)
            scores = model.predict(panel, split="test")
            ic = metrics.ic_summary(metrics.rank_ic(scores, panel.label_frame(panel.split(proto, "test"))))
            print(f"{a.universe} {proto:5s} {name:12s} fit+predict {time.perf_counter() - t:6.1f} s  "
                  f"test days {len(scores)}  finite {np.isfinite(scores.to_numpy()).mean():.3f}  "
                  f"RankIC {ic['RankIC']:+.4f}", flush=True)


if __name__ == "__main__":
    main()

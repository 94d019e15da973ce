"""Benchmark storm_lib.features: cold compute and cached reload on a real universe.

    python benchmarks/features.py [--universe sp500] [--data-dir DIR] [--feature-set auto]

The data directory defaults to $STORM_DATA_DIR. The cache is a fresh temporary directory, so the
first build is really cold; the second build must hit the cache. Prints rows, tickers, dates,
features, cold seconds, reload seconds and the peak RSS of the process (resource.getrusage).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storm_lib import features  # noqa: E402


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if platform.system() != "Darwin" else kb / 2**20  # macOS reports bytes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--universe", default="sp500", help="dj30 or sp500 (a <universe>.parquet file)")
    ap.add_argument("--data-dir", default=os.environ.get("STORM_DATA_DIR"),
                    help="directory holding <universe>.parquet (default: $STORM_DATA_DIR)")  # fmt: skip
    ap.add_argument("--feature-set", default="auto", choices=["auto", *features.FEATURE_SETS])
    args = ap.parse_args(argv)
    if not args.data_dir:
        ap.error("no data directory: pass --data-dir or set STORM_DATA_DIR")
    path = Path(args.data_dir).expanduser() / f"{args.universe}.parquet"
    if not path.exists():
        ap.error(f"{path} does not exist")

    t0 = time.perf_counter()
    prices = pd.read_parquet(path)
    t_read = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="storm-feature-bench-") as tmp:
        t0 = time.perf_counter()
        cold = features.build_features(prices, args.feature_set, cache_dir=tmp, verbose=False)
        t_cold = time.perf_counter() - t0
        assert not cold.from_cache
        shape = cold.values.shape
        tail = np.array(cold.values[-5:])  # keep a slice to check the reload, free the rest
        rss_after_cold = peak_rss_mb()
        del cold
        t0 = time.perf_counter()
        warm = features.build_features(prices, args.feature_set, cache_dir=tmp, verbose=False)
        t_warm = time.perf_counter() - t0
        assert warm.from_cache, "second build did not hit the cache"
        assert warm.values.shape == shape and np.array_equal(warm.values[-5:], tail, equal_nan=True)
        size_mb = warm.values.nbytes / 2**20
        nan_share = float(np.isnan(warm.values[-1000:]).mean())

    print(f"universe          {args.universe} ({path})")
    print(f"feature set       {warm.feature_set} (FEATURE_VERSION {features.FEATURE_VERSION})")
    print(f"rows              {len(prices):,}")
    print(f"tickers           {shape[1]}")
    print(f"dates             {shape[0]}")
    print(f"features          {shape[2]}")
    print(f"values            {size_mb:,.0f} MiB float32; NaN share in the last 1000 dates {nan_share:.4f}")
    print(f"read parquet      {t_read:.2f} s")
    print(f"cold compute      {t_cold:.2f} s (build_features, empty cache: compute + hash + save)")
    print(f"cached reload     {t_warm:.2f} s (build_features, cache hit: hash + load)")
    print(f"peak RSS          {peak_rss_mb():,.0f} MiB (after cold build {rss_after_cold:,.0f} MiB)")
    print(f"machine           {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__}, pandas {pd.__version__}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

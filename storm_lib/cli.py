"""Command line: ``storm demo | download | features | info``.

``storm demo`` is the project's first run: load prices, build Alpha158 features and a causal panel,
score simple signals on the test split with RankIC and a TopK-Drop backtest against the market
index, in the three metric conventions. Offline by default (``--source sample``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import pandas as pd

from . import config, data, metrics, panel as panel_mod, portfolio


SIGNALS = ("momentum20", "reversal5")


def _signals(p: panel_mod.Panel, names: list[str]) -> dict[str, pd.DataFrame]:
    """Simple, causal score frames built from the panel's (normalised) features.

    ``momentum20``: 20-day return, the negated ROC20 feature (ROC20 = C[t-20]/C[t]).
    ``reversal5``: minus the 5-day return (short-term reversal).
    """
    out = {}
    for name in names:
        if name == "momentum20":
            out[name] = -p.feature_frame("ROC20")
        elif name == "reversal5":
            out[name] = p.feature_frame("ROC5")
    return out


def demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    unknown = [s for s in args.signals if s not in SIGNALS]
    if unknown:
        raise SystemExit(f"unknown signal(s) {unknown}; choose from {', '.join(SIGNALS)}")
    protocol = args.protocol or ("sample" if args.source == data.SAMPLE else "clean")
    proto = panel_mod.get_protocol(protocol)
    print(f"STORM replication demo: source={args.source!r}, protocol={proto.name!r} ({proto.note})")

    prices = data.load_prices(args.source, data_dir=args.data_dir)
    n_t = prices["ticker"].nunique()
    print(f"prices: {len(prices):,} rows, {n_t} tickers, {prices['date'].min():%Y-%m-%d}..{prices['date'].max():%Y-%m-%d}"
          f"{' (close only)' if data.is_close_only(prices) else ''}")

    p = panel_mod.Panel.from_prices(prices, feature_set="auto", window=args.window, normalization=args.normalization)
    print(f"panel: {p}")
    for split, idx in p.splits(proto).items():
        print(f"  {split:5s}: {len(idx):5d} days {p.dates[idx[0]]:%Y-%m-%d}..{p.dates[idx[-1]]:%Y-%m-%d}")
    if proto.valid_is_test:
        print("  note: validation = test in this protocol (the official code's choice)")

    test = p.split(proto, "test")
    labels = p.label_frame(test)
    if args.source in data.MARKET_INDEX:
        index = data.market_index(args.source, data_dir=args.data_dir)
        index_name = data.MARKET_INDEX[args.source]
    else:
        index, index_name = None, None

    returns = {}
    if index is not None:
        returns[f"Market Index ({index_name})"] = portfolio.benchmark_returns(index, labels.index)
    returns["Equal-weight buy & hold"] = portfolio.equal_weight_buy_and_hold(labels)

    print(f"\nTest split, k={args.k}, d={args.d}, cost={args.cost:g}:")
    ic_rows = {}
    for name, scores in _signals(p, args.signals).items():
        scores = scores.loc[labels.index]
        ic_rows[name] = metrics.ic_summary(metrics.rank_ic(scores, labels))
        bt = portfolio.topk_drop(scores, labels, k=args.k, d=args.d, cost=args.cost)
        returns[f"TopK-Drop on {name}"] = bt.returns
        print(f"  {name}: mean daily turnover {bt.turnover.mean():.3f}")
    print("\nRankIC of the signals (daily cross-sectional Spearman, mean and mean/std):")
    print(pd.DataFrame(ic_rows).T.to_string(float_format=lambda v: f"{v:.4f}"))
    for convention in args.conventions:
        print(f"\nPortfolio metrics, convention {convention!r}:")
        print(metrics.metrics_table(returns, convention).to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\ndone in {time.perf_counter() - t0:.1f} s")
    return 0


def download_cmd(args: argparse.Namespace) -> int:
    for name in args.universes:
        path = data.download(name, start=args.start, end=args.end)
        print(f"{name}: written to {path}")
    return 0


def features_cmd(args: argparse.Namespace) -> int:
    from .features import build_features

    prices = data.load_prices(args.source, data_dir=args.data_dir)
    t0 = time.perf_counter()
    f = build_features(prices, feature_set=args.feature_set)
    print(f"{args.source}: features {f.values.shape} (dates x tickers x features) in {time.perf_counter() - t0:.1f} s")
    return 0


def info_cmd(args: argparse.Namespace) -> int:
    try:
        d = config.data_dir(args.data_dir)
    except FileNotFoundError as exc:
        d = f"invalid ({exc})"
    print(f"data directory (${config.DATA_ENV}): {d}")
    print(f"cache directory (${config.CACHE_ENV}): {config.cache_dir()}")
    print(f"universes: {', '.join(data.UNIVERSES)}; embedded sample: {data.SAMPLE!r}")
    print(f"protocols: {', '.join(panel_mod.PROTOCOLS)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="storm", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="load, featurise, score simple signals, backtest (offline by default)")
    d.add_argument("--source", default=data.SAMPLE, help="sample (default, offline), dj30, sp500 or a file")
    d.add_argument("--protocol", default=None, help="sample | clean | paper (default: sample for the sample, else clean)")
    d.add_argument("--data-dir", default=None, help=f"directory with the parquet files (default ${config.DATA_ENV})")
    d.add_argument("--signals", nargs="+", default=["momentum20", "reversal5"])
    d.add_argument("--k", type=int, default=5)
    d.add_argument("--d", type=int, default=3)
    d.add_argument("--cost", type=float, default=1e-4)
    d.add_argument("--window", type=int, default=64)
    d.add_argument("--normalization", default="cs_zscore", choices=panel_mod.NORMALIZATIONS)
    d.add_argument("--conventions", nargs="+", default=list(metrics.CONVENTIONS), choices=metrics.CONVENTIONS)
    d.set_defaults(func=demo)

    g = sub.add_parser("download", help="download universes with yfinance into the cache")
    g.add_argument("universes", nargs="+", choices=list(data.UNIVERSES) + ["indices"])
    g.add_argument("--start", default="2007-01-01")
    g.add_argument("--end", default="2024-04-01")
    g.set_defaults(func=download_cmd)

    f = sub.add_parser("features", help="compute and cache the features of a source")
    f.add_argument("source")
    f.add_argument("--feature-set", default="auto")
    f.add_argument("--data-dir", default=None)
    f.set_defaults(func=features_cmd)

    i = sub.add_parser("info", help="where data and caches are looked for")
    i.add_argument("--data-dir", default=None)
    i.set_defaults(func=info_cmd)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except data.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Uncertainty for the main tables: block-bootstrap CIs, paired tests, transaction-cost curves.

All inputs are daily series indexed by the decision date (``daily.csv`` of a portfolio run: ``rank_ic``,
``return``, ``benchmark``) or a saved score frame (``scores.parquet``).

* :func:`bootstrap_ci`, :func:`metric_cis`, :func:`rank_ic_ci`: percentile confidence intervals from a
  block bootstrap of the days, via ``arch.bootstrap`` (K. Sheppard's ``arch``): ``stationary``
  (Politis & Romano 1994, geometric blocks; the default), ``circular`` (Politis & Romano 1992),
  ``moving`` (Künsch 1989) or ``iid`` (Efron 1979; for comparison only: it ignores serial dependence).
* :func:`paired_test`: STORM vs a baseline on the same days: the mean daily difference with a
  block-bootstrap CI and p-value, and a Diebold–Mariano (1995) t statistic with a Newey–West (1987)
  HAC variance (:func:`hac_variance`). :func:`paired_metric_test`: the same bootstrap on the difference
  of two portfolio metrics (e.g. ASR), resampling the same days for both strategies.
* :func:`cost_curve`: TopK-Drop metrics at several costs (basis points of turnover) from one score
  frame; :func:`cost_curve_from_run` reads it from a run directory.

Block length (``block=None``): the automatic choice of Politis & White (2004), "Automatic Block-Length
Selection for the Dependent Bootstrap", Econometric Reviews 23(1), with the correction of Patton,
Politis & White (2009), Econometric Reviews 28(4) (``arch.bootstrap.optimal_block_length``): the
``stationary`` column for the stationary bootstrap, the ``circular`` one for the circular and moving
block bootstraps (which share the optimal length), rounded up to an integer for those two and never
below 1. Where it is not finite (too short or constant series) the fallback is n^(1/3), the optimal
rate for block-bootstrap variance estimation (Hall, Horowitz & Jing 1995, Biometrika 82(3)).
For portfolio metrics, which depend on the second moment (volatility, Sharpe), the block is the larger
of the choices for r_t and (r_t − r̄)², so volatility clustering is kept inside the blocks.

Caveats: CW and MDD depend on the whole path; resampled paths reorder blocks of days, so their
intervals describe "another path with the same local dynamics", not sampling error in the usual sense,
and the MDD interval is typically shifted above the estimate. APY, ASR, AVO and mean RankIC are
smooth functions of means, for which the block bootstrap is consistent.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import metrics as _m
from . import portfolio

METHODS = ("stationary", "circular", "moving", "iid")
INTERVALS = ("percentile", "basic")
DEFAULT_METRICS = ("APY", "ASR", "CW", "MDD")
DEFAULT_COSTS_BPS = (0, 1, 2, 5, 10, 15, 20)
CI_COLUMNS = ("estimate", "low", "high", "se", "block", "n", "n_days")


# ----------------------------------------------------------------------------------------------
# Inputs and block length
# ----------------------------------------------------------------------------------------------


def _values(series, name: str = "series", dropna: bool = False) -> np.ndarray:
    """A finite 1-D float array; NaNs are dropped when ``dropna``, else an error naming the first."""
    x = np.asarray(series, dtype=float)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {x.shape}")
    if dropna:
        x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError(f"{name} is empty" + (" (after dropping NaN days)" if dropna else ""))
    bad = ~np.isfinite(x)
    if bad.any():
        where = series.index[bad.argmax()] if isinstance(series, pd.Series) and not dropna else int(bad.argmax())
        raise ValueError(f"{name} has a non-finite value at {where!r}")
    if x.size < 2:
        raise ValueError(f"{name} needs at least 2 days, got {x.size}")
    return x


def cube_root_block(n: int) -> float:
    """n^(1/3): the rate-optimal block length for variance estimation (Hall, Horowitz & Jing 1995)."""
    return float(max(1.0, n ** (1.0 / 3.0)))


def optimal_block(x, method: str = "stationary") -> float:
    """Politis–White (2004) / Patton–Politis–White (2009) automatic block length of ``x`` for ``method``.

    Falls back to n^(1/3) when the estimate is not finite; 1 for ``iid``. Integer for circular/moving.
    """
    _check_method(method)
    x = _values(x, "x")
    if method == "iid":
        return 1.0
    value = float("nan")
    if np.ptp(x) > 0 and x.size >= 10:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = _arch_bootstrap().optimal_block_length(x)
        value = float(table["stationary" if method == "stationary" else "circular"].iloc[0])
    if not np.isfinite(value) or value <= 0:
        value = cube_root_block(x.size)
    value = min(max(value, 1.0), float(x.size))
    return value if method == "stationary" else float(math.ceil(value))


def _arch_bootstrap():
    """``arch.bootstrap``, imported on first use (about 1 s: it pulls in statsmodels)."""
    try:
        import arch.bootstrap
    except ImportError as exc:  # pragma: no cover - arch is a dependency
        raise ImportError("storm_lib.stats needs the 'arch' package: pip install 'arch>=7.0'") from exc
    return arch.bootstrap


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown bootstrap method {method!r}; expected one of {METHODS}")


def _resolve_block(block, method: str, *series: np.ndarray) -> float:
    """``block`` as given (validated), or the largest automatic choice over ``series``."""
    n = series[0].size
    if method == "iid":
        return 1.0
    if block is None:
        return max(optimal_block(s, method) for s in series)
    if isinstance(block, str):
        if block != "cuberoot":
            raise ValueError(f"block must be None, 'cuberoot' or a positive number, got {block!r}")
        value = cube_root_block(n)
        return value if method == "stationary" else float(math.ceil(value))
    value = float(block)
    if not np.isfinite(value) or value < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if method != "stationary" and value != int(value):
        raise ValueError(f"the {method} bootstrap needs an integer block, got {block}")
    return min(value, float(n))


def _bootstrap_object(method: str, block: float, data: tuple[np.ndarray, ...], seed):
    ab = _arch_bootstrap()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if method == "iid":
        return ab.IIDBootstrap(*data, seed=rng)
    cls = {"stationary": ab.StationaryBootstrap, "circular": ab.CircularBlockBootstrap,
           "moving": ab.MovingBlockBootstrap}[method]
    return cls(block if method == "stationary" else int(block), *data, seed=rng)


def _replicates(func: Callable, data: tuple[np.ndarray, ...], block: float, n: int, seed,
                method: str) -> np.ndarray:
    """(n, k) array of ``func(*resampled data)`` (the same resampled days for every array in ``data``)."""
    if int(n) != n or n < 1:
        raise ValueError(f"n (bootstrap replications) must be a positive integer, got {n}")
    bs = _bootstrap_object(method, block, data, seed)
    with np.errstate(all="ignore"):
        out = bs.apply(lambda *arrays: np.atleast_1d(np.asarray(func(*arrays), dtype=float)), int(n))
    return np.asarray(out, dtype=float).reshape(int(n), -1)


def _check_args(method: str, level: float, interval: str = "percentile") -> None:
    """Validate before bootstrapping (a bad argument should not cost a full bootstrap first)."""
    _check_method(method)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; expected one of {INTERVALS}")


def _interval(estimate: np.ndarray, reps: np.ndarray, level: float, interval: str) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> NaN bounds
        lo_q, hi_q = np.nanquantile(reps, [alpha, 1.0 - alpha], axis=0)
    if interval == "percentile":
        return lo_q, hi_q
    return 2.0 * estimate - hi_q, 2.0 * estimate - lo_q  # basic (reverse percentile)


# ----------------------------------------------------------------------------------------------
# Statistics by name
# ----------------------------------------------------------------------------------------------


def _metric_func(names: Sequence[str], convention: str, periods: int) -> Callable[[np.ndarray], np.ndarray]:
    unknown = [m for m in names if m not in _m.METRIC_COLUMNS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected some of {_m.METRIC_COLUMNS}")
    _m._check_convention(convention, _m.CONVENTIONS)

    def func(r: np.ndarray) -> np.ndarray:
        m = _m.portfolio_metrics(r, convention, periods)
        return np.array([m[k] for k in names])

    return func


def _ic_func(convention: str) -> Callable[[np.ndarray], np.ndarray]:
    _m._check_convention(convention, _m.IC_CONVENTIONS)

    def func(x: np.ndarray) -> np.ndarray:
        mean, std = x.mean(), x.std(ddof=1)
        ir = (mean / std if std > 0 else np.nan) if convention == "standard" else mean / (std + 1e-6)
        return np.array([mean, ir])

    return func


def _stat_callable(stat, convention: str, periods: int) -> Callable[[np.ndarray], float]:
    if callable(stat):
        return stat
    if stat == "mean":
        return np.mean
    if stat in ("RankIC", "RankICIR"):
        ic = _ic_func("standard" if convention not in _m.IC_CONVENTIONS else convention)
        return lambda x: ic(x)[0 if stat == "RankIC" else 1]
    if stat in _m.METRIC_COLUMNS:
        f = _metric_func([stat], convention, periods)
        return lambda r: f(r)[0]
    raise ValueError(f"stat must be a callable, 'mean', 'RankIC', 'RankICIR' or one of {_m.METRIC_COLUMNS}; "
                     f"got {stat!r}")


# ----------------------------------------------------------------------------------------------
# Confidence intervals
# ----------------------------------------------------------------------------------------------


def bootstrap_ci(series, stat: Callable | str = "mean", block=None, n: int = 2000, level: float = 0.95,
                 seed=0, method: str = "stationary", interval: str = "percentile",
                 convention: str = "standard", periods: int = 252) -> dict:
    """Block-bootstrap confidence interval of ``stat(series)`` over days.

    ``stat``: a callable on a 1-D float array returning a number, or a name: ``"mean"``, a metric of
    ``metrics.portfolio_metrics`` (``"APY"``, ``"ASR"``, ...; under ``convention``), ``"RankIC"`` or
    ``"RankICIR"``. ``series`` must be finite (drop NaN days first; :func:`rank_ic_ci` does).
    ``block``: None (Politis–White automatic, see the module docstring), ``"cuberoot"`` (n^(1/3)) or a
    number (mean block length for ``stationary``, integer block for ``circular`` / ``moving``).
    ``seed``: int, None or a ``numpy.random.Generator``; the same int gives the same interval.
    ``interval``: ``percentile`` (default) or ``basic`` (2·estimate − the percentile bounds).

    Returns ``dict(estimate, low, high, se, block, n, n_days, level, method)``: ``estimate`` is the
    statistic of the observed series, ``se`` the standard deviation of the replicates, ``n`` the
    number of bootstrap replications.
    """
    _check_args(method, level, interval)
    x = _values(series, "series")
    func = _stat_callable(stat, convention, periods)
    b = _resolve_block(block, method, x)
    with np.errstate(all="ignore"):
        estimate = np.atleast_1d(np.asarray(func(x), dtype=float))
    if estimate.size != 1:
        raise ValueError("stat must return a single number")
    reps = _replicates(func, (x,), b, n, seed, method)
    low, high = _interval(estimate, reps, level, interval)
    return {"estimate": float(estimate[0]), "low": float(low[0]), "high": float(high[0]),
            "se": float(np.nanstd(reps[:, 0], ddof=1)), "block": float(b), "n": int(n), "n_days": int(x.size),
            "level": float(level), "method": method}


def _ci_frame(names, estimate, reps, level, interval, block, n, n_days) -> pd.DataFrame:
    low, high = _interval(estimate, reps, level, interval)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(reps, axis=0, ddof=1)
    frame = pd.DataFrame({"estimate": estimate, "low": low, "high": high, "se": se, "block": float(block),
                          "n": int(n), "n_days": int(n_days)}, index=pd.Index(list(names), name="metric"))
    frame.attrs.update(level=level, interval=interval)
    return frame


def metric_cis(returns, convention: str = "standard", metrics: Sequence[str] = DEFAULT_METRICS, block=None,
               n: int = 2000, level: float = 0.95, seed=0, method: str = "stationary",
               interval: str = "percentile", periods: int = 252) -> pd.DataFrame:
    """Block-bootstrap CIs of portfolio metrics of daily net ``returns`` (one resample for all metrics).

    Rows: ``metrics`` (default APY, ASR, CW, MDD; any of ``metrics.METRIC_COLUMNS``) computed with
    ``metrics.portfolio_metrics(·, convention)``; columns ``estimate, low, high, se, block, n, n_days``.
    ``block=None``: the larger automatic block of r_t and (r_t − r̄)² (see the module docstring).
    CW and MDD are path-dependent: read their intervals with the module docstring's caveat.
    """
    _check_args(method, level, interval)
    r = _values(returns, "returns")
    func = _metric_func(list(metrics), convention, periods)
    b = _resolve_block(block, method, r, (r - r.mean()) ** 2)
    estimate = func(r)
    reps = _replicates(func, (r,), b, n, seed, method)
    return _ci_frame(metrics, estimate, reps, level, interval, b, n, r.size)


def rank_ic_ci(daily_rank_ic, convention: str = "standard", block=None, n: int = 2000, level: float = 0.95,
               seed=0, method: str = "stationary", interval: str = "percentile") -> pd.DataFrame:
    """Block-bootstrap CIs of the mean daily RankIC and of RankICIR (mean / std, not annualised).

    NaN days (fewer than 2 usable stocks, a constant side) are dropped first, as in
    ``metrics.ic_summary``; ``convention`` is that of ``ic_summary`` (``standard``: mean/std(ddof 1),
    ``official``: mean/(std + 1e-6)). Rows ``RankIC``, ``RankICIR``; the block is chosen on the series.
    """
    _check_args(method, level, interval)
    x = _values(daily_rank_ic, "daily RankIC", dropna=True)
    func = _ic_func(convention)
    b = _resolve_block(block, method, x)
    reps = _replicates(func, (x,), b, n, seed, method)
    return _ci_frame(("RankIC", "RankICIR"), func(x), reps, level, interval, b, n, x.size)


# ----------------------------------------------------------------------------------------------
# HAC variance and paired tests
# ----------------------------------------------------------------------------------------------


def newey_west_lag(n: int) -> int:
    """floor(4 (n/100)^(2/9)): the Newey & West (1994, Rev. Econ. Stud. 61(4)) plug-in lag rule."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    return math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0))


def hac_variance(x, lag: int | None = None) -> float:
    """Newey–West (1987, Econometrica 55(3)) HAC estimate of Var(mean of ``x``).

    (γ₀ + 2 Σ_{j=1..L} (1 − j/(L+1)) γ_j) / n with Bartlett weights and γ_j = (1/n) Σ_t (x_t − x̄)(x_{t−j} − x̄);
    never negative. ``lag`` L defaults to :func:`newey_west_lag`. At L = 0 it is var(x, ddof=0) / n.
    """
    x = _values(x, "x")
    n = x.size
    lag = newey_west_lag(n) if lag is None else int(lag)
    if lag < 0:
        raise ValueError(f"lag must be >= 0, got {lag}")
    lag = min(lag, n - 1)
    e = x - x.mean()
    lrv = e @ e / n
    for j in range(1, lag + 1):
        lrv += 2.0 * (1.0 - j / (lag + 1.0)) * (e[j:] @ e[:-j]) / n
    return float(lrv / n)


def align_pair(a: pd.Series, b: pd.Series, align: str = "inner", name_a: str = "a",
               name_b: str = "b") -> tuple[pd.Series, pd.Series, dict]:
    """``a`` and ``b`` on their common dates, dropping days where either is NaN.

    ``align="inner"``: keep the common dates (a warning names how many were dropped); ``"exact"``: the
    two indexes must hold the same dates. Errors: TypeError if not Series; ValueError on empty input, duplicate dates, no common date.
    Returns (a, b, info) with info = n_only_a, n_only_b, n_nan (days dropped for NaN).
    """
    if not isinstance(a, pd.Series) or not isinstance(b, pd.Series):
        raise TypeError("paired inputs must be pandas Series indexed by date (align them on dates)")
    if align not in ("inner", "exact"):
        raise ValueError(f"align must be 'inner' or 'exact', got {align!r}")
    for s, nm in ((a, name_a), (b, name_b)):
        if s.empty:
            raise ValueError(f"series {nm} is empty")
        if s.index.has_duplicates:
            raise ValueError(f"series {nm} has duplicate dates, first {s.index[s.index.duplicated()][0]!r}")
    only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
    if align == "exact" and (len(only_a) or len(only_b)):
        first = (only_a if len(only_a) else only_b)[0]
        raise ValueError(f"misaligned series: {len(only_a)} date(s) only in {name_a}, {len(only_b)} only in "
                         f"{name_b}, first {first!r}")
    common = a.index.intersection(b.index, sort=False)
    if not len(common):
        raise ValueError(f"series {name_a} and {name_b} have no common date "
                         f"({name_a}: {a.index[0]!r}..{a.index[-1]!r}, {name_b}: {b.index[0]!r}..{b.index[-1]!r})")
    if len(only_a) or len(only_b):
        warnings.warn(f"paired test on {len(common)} common dates: dropped {len(only_a)} date(s) only in {name_a} "
                      f"and {len(only_b)} only in {name_b}", stacklevel=3)
    common = common.sort_values()
    x, y = a.loc[common].astype(float), b.loc[common].astype(float)
    keep = x.notna() & y.notna()
    if keep.sum() < 2:
        raise ValueError(f"fewer than 2 common dates where both {name_a} and {name_b} are not NaN")
    return x[keep], y[keep], {"n_only_a": len(only_a), "n_only_b": len(only_b),
                              "n_nan": int((~keep).sum())}


def _t_test(mean: float, var_mean: float, n: int) -> tuple[float, float]:
    """t = mean / sqrt(var_mean), two-sided p from Student t with n − 1 d.o.f.
    (Harvey, Leybourne & Newbold 1997, Int. J. Forecasting 13(2), recommend t_{n−1} over the normal)."""
    if var_mean > 0:
        t = mean / math.sqrt(var_mean)
    else:  # a constant difference
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return float(t), float(2.0 * sps.t.sf(abs(t), df=n - 1))


def _p_bootstrap(estimate: np.ndarray, reps: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p-value of H0: statistic = 0, from the replicates centred at the estimate
    (null imposed by centring; Hall & Wilson 1991, Biometrics 47(2)), with the (1 + #)/(1 + B)
    correction of Davison & Hinkley (1997, eq. 4.11)."""
    centred = np.abs(reps - estimate)
    valid = np.isfinite(centred)
    count = ((centred >= np.abs(estimate) - 1e-15 * np.maximum(1.0, np.abs(estimate))) & valid).sum(axis=0)
    return (1.0 + count) / (1.0 + valid.sum(axis=0))


def paired_test(a: pd.Series, b: pd.Series, block=None, n: int = 2000, level: float = 0.95, seed=0,
                method: str = "stationary", lag: int | None = None, align: str = "inner") -> dict:
    """Paired test of the mean daily difference d_t = a_t − b_t (e.g. STORM − best baseline).

    ``a``, ``b``: daily series indexed by date (daily RankIC or daily net returns); they are aligned on
    common dates and days where either is NaN are dropped (:func:`align_pair`).

    - bootstrap: ``method`` block bootstrap of d_t (block chosen on d_t when None): percentile CI of
      the mean and the two-sided p-value of H0: E[d] = 0 (:func:`_p_bootstrap`);
    - Diebold–Mariano (1995, J. Bus. Econ. Stat. 13(3)) style: t = d̄ / sqrt(HAC Var(d̄)) with the
      Newey–West variance (:func:`hac_variance`, lag ``lag`` or floor(4 (n/100)^(2/9))), p from t_{n−1}.

    Returns ``dict(mean_diff, ci_low, ci_high, p_bootstrap, t_hac, p_hac, n_days, lag, block, se_hac,
    mean_a, mean_b, n_only_a, n_only_b, n_nan)``.
    """
    _check_args(method, level)
    x, y, info = align_pair(a, b, align)
    d = (x - y).to_numpy()
    nd = d.size
    lag = newey_west_lag(nd) if lag is None else int(lag)
    var_mean = hac_variance(d, lag)
    t, p = _t_test(float(d.mean()), var_mean, nd)
    blk = 1.0 if np.ptp(d) == 0 else _resolve_block(block, method, d)
    estimate = np.array([d.mean()])
    reps = _replicates(np.mean, (d,), blk, n, seed, method)
    low, high = _interval(estimate, reps, level, "percentile")
    return {"mean_diff": float(estimate[0]), "ci_low": float(low[0]), "ci_high": float(high[0]),
            "p_bootstrap": float(_p_bootstrap(estimate, reps)[0]), "t_hac": t, "p_hac": p, "n_days": int(nd),
            "lag": int(min(lag, nd - 1)), "block": float(blk), "se_hac": float(math.sqrt(var_mean)),
            "mean_a": float(x.mean()), "mean_b": float(y.mean()), **info}


def paired_metric_test(a: pd.Series, b: pd.Series, convention: str = "standard",
                       metrics: Sequence[str] = ("APY", "ASR"), block=None, n: int = 2000, level: float = 0.95,
                       seed=0, method: str = "stationary", align: str = "inner", periods: int = 252) -> pd.DataFrame:
    """Bootstrap of the difference of portfolio metrics of two daily return series on the same days.

    Both series are resampled with the same day indices (the pairing keeps their correlation), in the
    spirit of Ledoit & Wolf (2008, J. Empirical Finance 15(5)) for Sharpe-ratio differences (percentile
    interval here, not their studentised one). ``block=None``: the largest automatic block over
    a, b, a − b and their squared deviations. Rows: metrics; columns a, b, diff, low, high, p_bootstrap,
    block, n, n_days.
    """
    _check_args(method, level)
    x, y, _ = align_pair(a, b, align)
    x, y = x.to_numpy(), y.to_numpy()
    f = _metric_func(list(metrics), convention, periods)
    sq = [(s - s.mean()) ** 2 for s in (x, y, x - y)]
    blk = _resolve_block(block, method, x, y, x - y, *sq) if np.ptp(x - y) > 0 or block is not None else 1.0

    def diff(u, v):
        return f(u) - f(v)

    est = diff(x, y)
    reps = _replicates(diff, (x, y), blk, n, seed, method)
    low, high = _interval(est, reps, level, "percentile")
    frame = pd.DataFrame({"a": f(x), "b": f(y), "diff": est, "low": low, "high": high,
                          "p_bootstrap": _p_bootstrap(est, reps), "block": float(blk), "n": int(n),
                          "n_days": int(x.size)}, index=pd.Index(list(metrics), name="metric"))
    frame.attrs.update(level=level, convention=convention)
    return frame


# ----------------------------------------------------------------------------------------------
# Transaction-cost sensitivity
# ----------------------------------------------------------------------------------------------


def cost_curve(scores: pd.DataFrame, labels: pd.DataFrame, costs_bps: Sequence[float] = DEFAULT_COSTS_BPS,
               k: int = 5, d: int = 3, convention: str = "standard", variant: str = "paper",
               periods: int = 252) -> pd.DataFrame:
    """TopK-Drop metrics at each cost in ``costs_bps`` (basis points: cost = bps / 1e4 of turnover).

    Each row is ``portfolio.topk_drop(scores, labels, k, d, cost, variant)`` summarised with
    ``metrics.portfolio_metrics(·, convention)``. Holdings do not depend on the cost, so the curve only
    reflects the fee: with ``variant="paper"`` the net return is (1 − cost·turnover)(1 + gross) − 1.
    Index ``cost_bps``; columns APY, ASR, CW, MDD, CR, AVO, turnover (mean daily), fee (mean daily
    fraction paid).
    """
    costs = [float(c) for c in costs_bps]
    if not costs:
        raise ValueError("costs_bps is empty")
    bad = [c for c in costs if not np.isfinite(c) or c < 0 or c >= 1e4]
    if bad:
        raise ValueError(f"costs_bps must be finite and in [0, 10000), got {bad}")
    rows = {}
    for c in costs:
        bt = portfolio.topk_drop(scores, labels, k=k, d=d, cost=c / 1e4, variant=variant)
        m = _m.portfolio_metrics(bt.returns, convention, periods)
        rows[c] = {**{key: m[key] for key in ("APY", "ASR", "CW", "MDD", "CR", "AVO")},
                   "turnover": float(bt.turnover.mean()), "fee": float(bt.cost.mean())}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.Index(costs, name="cost_bps")
    frame.attrs.update(k=k, d=d, convention=convention, variant=variant)
    return frame


def _run_path(run, results_dir=None, data_dir=None) -> Path:
    from . import run as run_mod

    return run_mod.run_dir(run, results_dir, data_dir=data_dir) if isinstance(run, run_mod.RunSpec) else Path(run)


def run_labels(run, labels: pd.DataFrame | None = None, *, panel=None, prices: pd.DataFrame | None = None,
               data_dir: str | os.PathLike | None = None, dates=None) -> pd.DataFrame:
    """The label frame of a portfolio run's test days, from (first given) ``labels``, a ``panel``
    (``panel.label_frame`` on the score dates), long ``prices``, or the run's universe loaded with
    ``data.load_prices(universe, data_dir=...)``. Labels from prices are cast to float32, as the panel
    stores them, so a backtest reproduces the run's own."""
    from . import data as data_mod
    from . import run as run_mod

    if labels is not None:
        return labels
    path = _run_path(run, data_dir=data_dir)
    if dates is None:
        dates = run_mod.load_table(path, "scores").index
    dates = pd.DatetimeIndex(dates)
    if panel is not None:
        pos = pd.DatetimeIndex(panel.dates).get_indexer(dates)
        if (pos < 0).any():
            raise ValueError(f"panel has no date {dates[pos < 0][0]!r} of the run's scores")
        return panel.label_frame(pos)
    if prices is None:
        import json

        record = json.loads((path / "run.json").read_text())
        prices = data_mod.load_prices(record["spec"]["universe"], data_dir=data_dir)
    y = data_mod.next_day_returns(prices).astype(np.float32).astype(float)
    missing = dates.difference(y.index)
    if len(missing):
        raise ValueError(f"prices have no date {missing[0]!r} of the run's scores")
    return y.loc[dates]


def cost_curve_from_run(run, labels: pd.DataFrame | None = None, *, panel=None, prices=None, data_dir=None,
                        results_dir=None, **kwargs) -> pd.DataFrame:
    """:func:`cost_curve` of a finished portfolio run's saved test scores (``scores.parquet``).

    ``run``: a run directory or a ``run.RunSpec``. Labels as in :func:`run_labels`. ``kwargs`` go to
    :func:`cost_curve` (``costs_bps``, ``k``, ``d``, ``convention``, ``variant``).
    """
    from . import run as run_mod

    path = _run_path(run, results_dir, data_dir)
    scores = run_mod.load_table(path, "scores").astype(float)
    scores.index = pd.DatetimeIndex(scores.index)
    y = run_labels(path, labels, panel=panel, prices=prices, data_dir=data_dir, dates=scores.index)
    return cost_curve(scores, y, **kwargs)


# ----------------------------------------------------------------------------------------------
# Run-level conveniences (read-only on results/)
# ----------------------------------------------------------------------------------------------


def load_daily(run, results_dir=None, data_dir=None) -> pd.DataFrame:
    """``daily.csv`` of a finished portfolio run (date index; rank_ic, return, turnover, benchmark).

    ``run`` may also be a list of runs (e.g. the seeds of one model): their daily series are averaged
    date by date (the daily return of equal capital split across the runs' portfolios, the mean daily
    RankIC); the runs must cover the same dates. ``attrs["n_runs"]`` says how many were pooled."""
    from . import run as run_mod

    runs = list(run) if isinstance(run, (list, tuple)) else [run]
    if not runs:
        raise ValueError("load_daily: no run given")
    frames = [run_mod.load_table(_run_path(r, results_dir, data_dir), "daily") for r in runs]
    first = frames[0]
    for r, f in zip(runs[1:], frames[1:]):
        if not f.index.equals(first.index):
            raise ValueError(f"load_daily: run {r} covers other dates than {runs[0]}; cannot pool them")
    out = first if len(frames) == 1 else sum(f.astype(float) for f in frames) / len(frames)
    out.attrs["n_runs"] = len(frames)
    return out


def run_cis(run, convention: str = "standard", n: int = 2000, level: float = 0.95, seed=0,
            method: str = "stationary", results_dir=None, **kwargs) -> pd.DataFrame:
    """CIs of one run's test metrics: ``metric_cis`` of its daily returns and, for a model (not the
    market index), ``rank_ic_ci`` of its daily RankIC, stacked (rows APY, ASR, CW, MDD, RankIC, RankICIR).
    ``run`` may be a list of runs (seeds), pooled by :func:`load_daily`."""
    daily = load_daily(run, results_dir)
    parts = [metric_cis(daily["return"], convention, n=n, level=level, seed=seed, method=method, **kwargs)]
    if daily["rank_ic"].notna().any():
        ic_conv = convention if convention in _m.IC_CONVENTIONS else "standard"
        parts.append(rank_ic_ci(daily["rank_ic"], ic_conv, n=n, level=level, seed=seed, method=method))
    return pd.concat(parts)


def compare_runs(run_a, run_b, n: int = 2000, level: float = 0.95, seed=0, method: str = "stationary",
                 results_dir=None) -> pd.DataFrame:
    """:func:`paired_test` of two runs on daily RankIC and daily net return (rows), e.g. STORM vs LightGBM.
    Either side may be a list of runs (seeds), pooled by :func:`load_daily`."""
    da, db = load_daily(run_a, results_dir), load_daily(run_b, results_dir)
    rows = {}
    for col in ("rank_ic", "return"):
        if da[col].notna().any() and db[col].notna().any():
            rows[col] = paired_test(da[col], db[col], n=n, level=level, seed=seed, method=method, align="exact")
    return pd.DataFrame.from_dict(rows, orient="index")

"""Uncertainty of Tables 2 and 4: day-level bootstrap intervals, paired tests, cost curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..tasks import RunCache, RunContext
from . import paper as report
from .context import STORM_MODELS, Context, _none, as_list, select
from .fmt import TABLE_CSS, _fmt

# --------------------------------------------------------------------------- uncertainty (Tables 2 and 4)

#: the models that are not baselines when picking the best baseline of a paired test
NOT_BASELINES = ("market",) + STORM_MODELS
CI_METRICS = ("APY", "ASR", "RankIC")
COSTS_BPS = (0, 1, 2, 5, 10, 15, 20)


def _pooled_runs(plan: pd.DataFrame, universe: str, models=None, seed: int | None = None,
                 options: str = "") -> list[tuple[str, list[str], list[int]]]:
    """(model, run_dirs, seeds) per model, in ``models`` order: every finished seed of the model
    (default options) when ``seed`` is None, else the run of ``seed``."""
    if plan is None or plan.empty:
        return []
    sel = plan[plan["finished"].astype(bool) & (plan["universe"] == universe)
               & (plan["options"].fillna("") == options)]
    if seed is not None:
        sel = sel[sel["seed"] == int(seed)]
    order = as_list(models) if models is not None else list(dict.fromkeys(plan["model"]))
    out = []
    for model in order:
        runs = sel[sel["model"] == model].sort_values("seed", kind="stable").drop_duplicates("seed")
        if len(runs):
            out.append((model, list(runs["run_dir"]), [int(x) for x in runs["seed"]]))
    return out


def _seeds_text(seeds) -> str:
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ",".join(map(str, seeds))


def ci_frame(plan: pd.DataFrame, universe: str, models=None, seed: int | None = None, n: int = 2000,
             level: float = 0.95, metrics=CI_METRICS) -> pd.DataFrame:
    """Block-bootstrap CIs (:func:`storm_lib.stats.run_cis`: stationary bootstrap of the test days,
    Politis–White block, standard convention) of each model's test ``metrics`` from its runs'
    ``daily.csv``. Per model, every finished seed pooled day by day (the mean daily return and RankIC
    over seeds; :func:`storm_lib.stats.load_daily`), or only ``seed``. The CI is the sampling uncertainty
    over test days of that seed-averaged run; the seed spread is in the comparison tables. Long: model
    (paper label), seeds (text, e.g. ``0–4``), metric, estimate, low, high, block, n_days."""
    from .. import stats

    cols = ["model", "seeds", "metric", "estimate", "low", "high", "block", "n_days"]
    rows = []
    for model, dirs, seeds in _pooled_runs(plan, universe, models, seed):
        ci = stats.run_cis(dirs, "standard", n=n, level=level)
        for metric in metrics:
            if metric in ci.index:
                c = ci.loc[metric]
                rows.append({"model": report.model_label(model), "seeds": _seeds_text(seeds), "metric": metric,
                             "estimate": c["estimate"], "low": c["low"], "high": c["high"], "block": c["block"],
                             "n_days": int(c["n_days"])})
    return pd.DataFrame(rows, columns=cols)


def ci_table(cis: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`ci_frame` wide: rows model, columns metric, cells ``estimate [low, high]``; ``seeds`` column."""
    if cis.empty:
        return pd.DataFrame()
    cells = cis.assign(cell=[f"{_fmt(e, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"
                             for e, lo, hi in zip(cis["estimate"], cis["low"], cis["high"])])
    out = cells.pivot(index="model", columns="metric", values="cell").fillna("–")
    out = out.loc[list(dict.fromkeys(cis["model"])), [k for k in CI_METRICS if k in out.columns]
                  + [k for k in out.columns if k not in CI_METRICS]]
    out.insert(0, "seeds", cis.drop_duplicates("model").set_index("model")["seeds"])
    out.columns.name = None
    return out


def best_baseline(m: pd.DataFrame, universe: str, metric: str, models=None, split: str = "test",
                  convention: str = "standard") -> str | None:
    """The registry name of the non-STORM model (never the market index) with the highest mean ``metric``
    over seeds (default options, standard convention), or None when no baseline has that metric."""
    sel = select(m, split, convention, [metric], universe=universe)
    sel = sel[~sel["model"].isin(NOT_BASELINES)]
    if models is not None:
        sel = sel[sel["model"].isin(as_list(models))]
    means = sel.groupby("model")["value"].mean().dropna()
    return None if means.empty else str(means.idxmax())


def paired_tests(plan: pd.DataFrame, m: pd.DataFrame, universe: str, model: str = "storm", models=None,
                 seed: int | None = None, n: int = 2000) -> pd.DataFrame:
    """:func:`storm_lib.stats.paired_test` of ``model`` against the best baseline on the test days: daily
    RankIC against the baseline with the highest mean test RankIC, daily net portfolio return against
    the one with the highest mean test APY (standard convention; :func:`best_baseline`). Each side pools
    all its finished seeds day by day (:func:`storm_lib.stats.load_daily`), or uses only ``seed``. Rows:
    ``daily RankIC``, ``daily return``; a comparison whose runs are missing is left out."""
    from .. import stats

    cols = ["baseline", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "p_bootstrap", "t_hac", "p_hac",
            "n_days", "seeds", "baseline_seeds"]
    own = _pooled_runs(plan, universe, [model], seed)
    if not own:
        return pd.DataFrame(columns=cols)
    _, own_dirs, own_seeds = own[0]
    rows = {}
    for label, column, metric in (("daily RankIC", "rank_ic", "RankIC"), ("daily return", "return", "APY")):
        base = best_baseline(m, universe, metric, models)
        other = _pooled_runs(plan, universe, [base], seed) if base else []
        if not other:
            continue
        _, dirs, seeds = other[0]
        a = stats.load_daily(own_dirs)[column]
        b = stats.load_daily(dirs)[column]
        res = stats.paired_test(a, b, n=n, align="exact")
        rows[label] = {"baseline": report.model_label(base), **{k: res[k] for k in cols[1:-2]},
                       "seeds": _seeds_text(own_seeds), "baseline_seeds": _seeds_text(seeds)}
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols)


def paired_text(tests: pd.DataFrame, model: str = "STORM", level: float = 0.05) -> str:
    """One line per paired test: the mean daily difference, its CI and both p-values, read at ``level``."""
    if tests.empty:
        return "No paired test: the runs of STORM or of a baseline are missing."
    lines = []
    for what, r in tests.iterrows():
        sig = max(r["p_bootstrap"], r["p_hac"]) < level
        lines.append(f"- **{what}**, {model} − {r['baseline']} (seeds {r['seeds']} against {r['baseline_seeds']}, "
                     f"pooled day by day; {int(r['n_days'])} days): "
                     f"mean difference {_fmt(r['mean_diff'], 5)} [{_fmt(r['ci_low'], 5)}, {_fmt(r['ci_high'], 5)}], "
                     f"p = {r['p_bootstrap']:.3f} (block bootstrap), {r['p_hac']:.3f} (Newey–West t): "
                     + (f"significant at {level:.0%}" if sig else f"not significant at {level:.0%}")
                     + (" in the direction of " + (model if r["mean_diff"] > 0 else r["baseline"]) if sig else "")
                     + ".")
    return "\n".join(lines)


def cost_curves(plan: pd.DataFrame, universe: str, models=None, seed: int | None = None, panel=None,
                cache: RunCache | None = None, data_dir=None, costs_bps=COSTS_BPS) -> pd.DataFrame:
    """TopK-Drop metrics of every model's saved test scores at each cost in ``costs_bps`` (basis points
    of turnover; :func:`storm_lib.stats.cost_curve_from_run`, standard convention, the paper's variant),
    one run per model (``seed`` or the lowest finished one). Labels from the universe's panel
    (``panel``, else built once through the shared ``cache``; only when a run has scores). Long: model
    (paper label), seed, cost_bps, APY, ASR, CW, MDD, CR, AVO, turnover, fee."""
    from .. import stats

    # one run per model: ``seed``, or its lowest finished seed (_pooled_runs sorts the seeds)
    runs = [(model, dirs[0], seeds[0]) for model, dirs, seeds in _pooled_runs(plan, universe, models, seed)
            if (Path(dirs[0]) / "scores.parquet").is_file()]
    frames = []
    for model, run_dir_, run_seed in runs:
        if panel is None:
            panel = RunContext(data_dir=_none(data_dir), cache=cache or RunCache(), progress=False).panel(universe)
        c = stats.cost_curve_from_run(run_dir_, panel=panel, costs_bps=costs_bps).reset_index()
        frames.append(c.assign(model=report.model_label(model), seed=int(run_seed)))
    cols = ["model", "seed", "cost_bps", "APY", "ASR", "CW", "MDD", "CR", "AVO", "turnover", "fee"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def uncertainty(ctx: Context, plan: pd.DataFrame, m: pd.DataFrame, costs: bool = False, n: int = 2000) -> None:
    """The statistics cells of Tables 2 and 4, per universe: CIs (:func:`ci_frame`), the paired tests of
    STORM against the best baseline (:func:`paired_tests`) and, with ``costs``, the transaction-cost
    curves (:func:`cost_curves`, :func:`storm_lib.plots.cost_curves`). Missing runs are skipped with a
    message."""
    from IPython.display import Markdown, display

    from .. import plots

    models = ctx.models
    for u in ctx.universes:
        display(Markdown(f"### {u.upper()}"))
        cis = ci_frame(plan, u, models, n=n)
        if cis.empty:
            display(Markdown(f"No finished run of {u.upper()}: no confidence intervals."))
            continue
        display(ci_table(cis).style.set_table_styles(TABLE_CSS, overwrite=False).set_caption(
            f"{u.upper()}, test split, standard convention: estimate [95% CI], stationary block bootstrap of the "
            "days (Politis–White block); per model its seeds (column seeds) averaged day by day"))
        if "storm" in models:
            display(Markdown("**Paired tests, STORM − best baseline**\n\n"
                             + paired_text(paired_tests(plan, m, u, "storm", models, n=n))))
        if costs:
            curves = cost_curves(plan, u, [x for x in models if x != "market"], cache=ctx.cache,
                                 data_dir=ctx.data_dir)
            if curves.empty:
                display(Markdown(f"No finished {u.upper()} run with saved scores: no cost curve."))
            else:
                display(plots.cost_curves(curves, title=f"{u.upper()}: TopK-Drop metrics against the "
                                                        "transaction cost (test split, standard convention)"))



"""The site's first screen: a compact claim matrix, a forest plot of STORM's margins, and the Model
Confidence Set tables, all from the verdict (:func:`storm_lib.presentation.verdict.verdict`) and the
runs' daily series in ``results/`` (no data directory needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import evidence
from .fmt import _num, markdown_table
from .paper import DETERMINISTIC_ROWS, FLOOR_ROWS, STORM_ROWS, TR_MARKET_ROW, _paper_rows, model_label
from .verdict import PROFILE_ORDER, _select_results

#: marks in plain Unicode (DejaVu has them; emoji fonts are not everywhere)
MARKS = {"yes": "✔ replicated", "no": "✘ not replicated", "inconclusive": "◐ inconclusive",
         "incomplete": "○ incomplete", "not run yet": "○ not run yet"}
UNIVERSES = {"dj30": "DJ30", "sp500": "SP500"}


def _mark(status: str) -> str:
    head = str(status).split(" (")[0]
    if head.startswith("partly"):
        return "◐ " + status
    return MARKS.get(head, status)


def claim_matrix(v: pd.DataFrame, mcs_frames: dict | None = None) -> pd.DataFrame:
    """One short line per claim (rows) and universe (columns) with a mark: ✔ replicated, ✘ not,
    ◐ inconclusive, ○ not run. With ``mcs_frames`` ({(universe, column): :func:`mcs_table` frame}) two
    rows say whether STORM is in the 90 % Model Confidence Set."""
    claims, datasets, statuses = v.attrs["claims"], v.attrs["datasets"], v.attrs["statuses"]
    rows: dict = {}
    for c, ds, st in zip(claims, datasets, statuses):
        short = c.short or c.text
        row = rows.setdefault(short, {UNIVERSES[u]: "" for u in UNIVERSES})
        if len(ds) == 1 and ds[0] in UNIVERSES:
            row[UNIVERSES[ds[0]]] = _mark(st[0])
        else:   # the trading claim: five DJ30 stocks
            verdict_row = v[v["claim"] == c.text].iloc[0]
            row["DJ30"] = f"{_mark(verdict_row['replicated'])}"
            row["SP500"] = "(DJ30 stocks only)"
    for column, what in (("rank_ic", "daily RankIC"), ("return", "daily net return")):
        key = f"STORM in the 90 % MCS ({what})"
        for u, name in UNIVERSES.items():
            f = (mcs_frames or {}).get((u, column))
            if f is None or f.empty or "STORM" not in f.index:
                rows.setdefault(key, {})[name] = "○ not run yet"
            else:
                inside = bool(f.loc["STORM", "in_set"])
                rows.setdefault(key, {})[name] = (f"{'✔ yes' if inside else '✘ no'}, {int(f['in_set'].sum())} of "
                                                  f"{len(f)} models in the set")
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "claim (STORM …)"
    return out


def claim_matrix_markdown(v: pd.DataFrame, mcs_frames: dict | None = None) -> str:
    return markdown_table(claim_matrix(v, mcs_frames))


def _paper_margin(metric: str, table: str, universe: str, comparator: str) -> float:
    """The paper's printed STORM − comparator margin (positive = STORM better), NaN without a paper row."""
    try:
        p = _paper_rows(table, universe)
    except ValueError:
        return np.nan
    comp = "Market Index" if comparator == TR_MARKET_ROW else comparator
    if comp not in p.index or metric not in p.columns:
        return np.nan
    sign = -1.0 if metric in ("MDD", "AVO") else 1.0
    return float(sign * (p.loc["STORM", metric] - p.loc[comp, metric]))


def forest_frame(v: pd.DataFrame, metrics=("RankIC", "APY")) -> pd.DataFrame:
    """STORM's margin against each comparator (one row per universe, metric and comparator, the
    comparators of every "beats" claim on that metric): seed- and day-level margins and 95 % intervals,
    and the paper's printed margin."""
    t = v.attrs.get("tests")
    if t is None or t.empty:
        return pd.DataFrame()
    t = t[t["metric"].isin(metrics) & t["dataset"].isin(list(UNIVERSES))]
    t = t.drop_duplicates(["dataset", "metric", "comparator"])
    table = {"RankIC": "rankic"}
    t = t.assign(paper=[_paper_margin(m, table.get(m, "portfolio"), d, c)
                        for m, d, c in zip(t["metric"], t["dataset"], t["comparator"])])
    return t.reset_index(drop=True)


def _group(c: str) -> int:
    return 0 if c in FLOOR_ROWS else 1 if c in STORM_ROWS else 2 if c in DETERMINISTIC_ROWS else 3


def forest_plot(v: pd.DataFrame, metrics=("RankIC", "APY")):
    """The forest plot of :func:`forest_frame`: one panel per (metric, universe), one line per comparator;
    thick: seed-level 95 % interval (Welch over seeds), thin: day-level 95 % interval (paired daily
    differences, seeds pooled; APY as mean daily return × 252), ✕: the paper's printed margin."""
    from ..plots import NotebookFigure

    f = forest_frame(v, metrics)
    unis = [u for u in UNIVERSES if f.empty or (f["dataset"] == u).any()] or list(UNIVERSES)
    fig = NotebookFigure(figsize=(12.5, 3.2 + 0.22 * max(1, f.groupby(["metric", "dataset"]).size().max()
                                                          if len(f) else 1) * len(metrics)),
                         layout="constrained")
    axes = fig.subplots(len(metrics), len(unis), squeeze=False)
    for i, metric in enumerate(metrics):
        for j, u in enumerate(unis):
            ax = axes[i, j]
            g = f[(f["metric"] == metric) & (f["dataset"] == u)] if len(f) else f
            if g.empty:
                ax.text(0.5, 0.5, "not run yet", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            g = g.assign(order=[_group(c) for c in g["comparator"]]).sort_values(["order", "comparator"],
                                                                                  ascending=[False, False])
            y = np.arange(len(g))
            ax.axvline(0, color="black", lw=0.8)
            ax.hlines(y + 0.15, g["seed_low"], g["seed_high"], color="#c0392b", lw=3.0,
                      label="seeds: 95 % Welch interval")
            ax.plot(g["seed_margin"], y + 0.15, "o", color="#c0392b", ms=4)
            ax.hlines(y - 0.15, g["day_low"], g["day_high"], color="#1f77b4", lw=1.4,
                      label="days: 95 % HAC interval (seeds pooled)")
            ax.plot(g["day_margin"], y - 0.15, "s", color="#1f77b4", ms=3)
            ax.plot(g["paper"], y, "x", color="black", ms=7, mew=1.8, label="paper's printed margin")
            ax.set_yticks(y, [str(c).replace("Floor: ", "floor: ") for c in g["comparator"]], fontsize=8)
            unit = "RankIC" if metric == "RankIC" else f"{metric} (days: mean daily return × 252)"
            ax.set_xlabel(f"STORM − comparator, {unit}; > 0: STORM better", fontsize=8)
            ax.set_title(f"{UNIVERSES[u]}: {metric}", fontsize=10, loc="left")
            ax.tick_params(axis="x", labelsize=8)
            ax.grid(axis="x", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


def mcs_frames(results: pd.DataFrame | None, protocol: str = "clean", split: str = "test") -> dict:
    """{(universe, column): :func:`storm_lib.presentation.evidence.mcs` frame} for daily RankIC (models and
    floors) and daily net return (models, floors and both market rows), per universe."""
    r = _select_results(results, protocol, split, None)
    out = {}
    if r.empty or "run_dir" not in r.columns:
        return out
    r = r[r["task"].astype(str) == "portfolio"] if "task" in r.columns else r
    for u in UNIVERSES:
        here = r[r["universe"].astype(str).str.lower() == u]
        models = list(dict.fromkeys(here["model"].map(model_label)))
        for column in ("rank_ic", "return"):
            ms = [m for m in models if column == "return" or m not in DETERMINISTIC_ROWS or m in FLOOR_ROWS]
            ms = [m for m in ms if not (column == "rank_ic" and m in ("Market Index", TR_MARKET_ROW))]
            if len(ms) >= 2:
                out[(u, column)] = evidence.mcs(here, u, column, ms, PROFILE_ORDER)
    return out


def mcs_markdown(frames: dict) -> str:
    """The MCS tables, one per universe: rows models (best mean first), columns per loss (daily RankIC,
    daily return): mean, MCS p-value, in the 90 % set."""
    if not frames:
        return "No finished runs with daily series: no Model Confidence Set."
    parts = []
    for u, name in UNIVERSES.items():
        cols = {}
        for column, what in (("rank_ic", "daily RankIC"), ("return", "daily net return")):
            f = frames.get((u, column))
            if f is None or f.empty:
                continue
            scale = 1.0 if column == "rank_ic" else 252.0
            cols[f"{what}: mean" + (" × 252" if scale != 1 else "")] = {m: _num(x * scale, 4)
                                                                         for m, x in f["mean"].items()}
            cols[f"{what}: MCS p"] = {m: f"{p:.3f}" for m, p in f["pvalue"].items()}
            cols[f"{what}: in set"] = {m: "✔" if s else "" for m, s in f["in_set"].items()}
        if not cols:
            continue
        t = pd.DataFrame(cols)
        first = frames.get((u, "rank_ic"), frames.get((u, "return")))
        t = t.reindex(list(dict.fromkeys(list(first.index) + list(t.index)))).fillna("–")
        t.index.name = "model"
        n = int(first["n_days"].iloc[0])
        parts.append(f"**{name}** ({n} test days; loss = − the daily series; 90 % set, range statistic, stationary "
                     f"bootstrap, block {first.attrs.get('block')}, {first.attrs.get('reps')} replicates)\n\n"
                     + markdown_table(t))
    return "\n\n".join(parts)


def mcs_text(frames: dict) -> str:
    """One line per universe and loss: STORM is / is not in the 90 % set of best models."""
    lines = []
    for (u, column), f in frames.items():
        if "STORM" not in f.index:
            continue
        inside = bool(f.loc["STORM", "in_set"])
        best = ", ".join(f.index[f["in_set"]])
        lines.append(f"- {UNIVERSES.get(u, u)}, daily {'RankIC' if column == 'rank_ic' else 'net return'}: STORM "
                     f"**is {'' if inside else 'not '}in** the 90 % set of best models (MCS p = "
                     f"{f.loc['STORM', 'pvalue']:.3f}); the set: {best}.")
    return "\n".join(lines) or "No Model Confidence Set: no STORM run with daily series."


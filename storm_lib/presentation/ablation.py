"""STORM against its two ablations across the three tasks (the ablation page)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import paper as report
from .context import IC_METRICS, PORTFOLIO_METRICS, as_list, select
from .fmt import _fmt

# --------------------------------------------------------------------------- ablation


def ablation_frame(m_portfolio: pd.DataFrame | None, m_trading: pd.DataFrame | None, universes, stocks,
                   convention: str = "paper", trading_convention: str | None = None,
                   split: str = "test", paper: bool = True, m_floors: pd.DataFrame | None = None) -> pd.DataFrame:
    """STORM and its two ablations across the three tasks, long: task, dataset, metric, variant, ours
    (mean over seeds), n, paper. Tasks: portfolio (TopK-Drop metrics in ``convention``), rankic
    (RankIC, RankICIR, standard convention), trading (per stock, ``trading_convention``). ``m_floors``:
    the metrics of the floor runs (:mod:`storm_lib.floors`), added as variants ``Floor: ...`` of the
    portfolio and RankIC tasks."""
    parts = []
    variants = list(report.STORM_ROWS) + list(report.FLOOR_ROWS)

    def add(task, table, dataset, m, conv, metrics, **where):
        if m is None or m.empty:
            return
        sel = select(m, split, conv, metrics, **where)
        sel = sel[sel["row"].isin(variants)]
        if sel.empty:
            return
        g = sel.groupby(["row", "metric"])["value"]
        s = pd.DataFrame({"ours": g.mean(), "n": g.count()}).reset_index()
        try:
            rep = report.reported(table, dataset).set_index(["model", "metric"])["value"]
        except ValueError:  # no paper numbers for this dataset (the sample)
            rep = pd.Series(dtype=float)
        if not paper:
            rep = pd.Series(dtype=float)
        s["paper"] = [rep.get((v, k), np.nan) for v, k in zip(s["row"], s["metric"])]
        parts.append(s.rename(columns={"row": "variant"}).assign(task=task, dataset=dataset))

    for u in as_list(universes):
        add("portfolio", "portfolio", u, m_portfolio, convention, PORTFOLIO_METRICS, universe=u)
        add("rankic", "rankic", u, m_portfolio, "standard", IC_METRICS, universe=u)
        add("portfolio", "portfolio", u, m_floors, convention, PORTFOLIO_METRICS, universe=u)
        add("rankic", "rankic", u, m_floors, "standard", IC_METRICS, universe=u)
    for s in as_list(stocks, upper=True):
        add("trading", "trading", s, m_trading, trading_convention or convention, PORTFOLIO_METRICS, stock=s)
    cols = ["task", "dataset", "metric", "variant", "ours", "n", "paper"]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)[cols]
    order = {t: i for i, t in enumerate(["portfolio", "rankic", "trading"])}
    metric_order = {k: i for i, k in enumerate(PORTFOLIO_METRICS + IC_METRICS)}
    ds_order = {d: i for i, d in enumerate(dict.fromkeys(out["dataset"]))}
    return out.sort_values(["task", "dataset", "metric", "variant"],
                           key=lambda c: c.map(order) if c.name == "task" else
                           c.map(ds_order) if c.name == "dataset" else
                           c.map(metric_order) if c.name == "metric" else
                           c.map({v: i for i, v in enumerate(variants)}) if c.name == "variant" else c,
                           kind="stable").reset_index(drop=True)


def ablation_table(ab: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`ablation_frame` wide: rows (task, dataset, metric), columns (variant, ours / paper); ▲ marks
    the best variant of each row in our runs (lowest for MDD and AVO, highest otherwise). With floor rows,
    a column ``best floor`` holds the best floor's value and name (the level a variant has to beat)."""
    if ab.empty:
        return pd.DataFrame()
    rows = {}
    floors = ab["variant"].isin(report.FLOOR_ROWS)
    for (task, ds, metric), g in ab.groupby(["task", "dataset", "metric"], sort=False):
        vals = g[~g["variant"].isin(report.FLOOR_ROWS)].set_index("variant")
        best = _best(vals["ours"], metric)
        cells = {}
        for v in report.STORM_ROWS:
            r = vals.loc[v] if v in vals.index else None
            ours = "–" if r is None else f"{'▲ ' if v == best else ''}{_fmt(r['ours'], digits)}"
            cells[(v, "ours")] = ours
            cells[(v, "paper")] = _fmt(r["paper"], digits) if r is not None else "–"
        if floors.any():
            fl = g[g["variant"].isin(report.FLOOR_ROWS)].set_index("variant")["ours"]
            fb = _best(fl, metric)
            cells[("best floor", "ours")] = (f"{_fmt(fl[fb], digits)} ({fb.replace('Floor: ', '')})"
                                             if fb is not None else "–")
        rows[(task, ds, metric)] = cells
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["task", "dataset", "metric"])
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["variant", ""])
    if ab["paper"].isna().all():
        out = out.drop(columns="paper", level=1)
    return out.fillna("–")


def _best(values: pd.Series, metric: str):
    v = values.dropna()
    if v.empty:
        return None
    return v.idxmin() if metric in report.LOWER_IS_BETTER else v.idxmax()


def ablation_text(ab: pd.DataFrame) -> str:
    """A paragraph (markdown) reading :func:`ablation_frame`: per task, on how many (dataset, metric)
    cells full STORM is the best of the three variants in our runs and in the paper, where each ablation
    wins, and how often our ranking of the three agrees with the paper's best. Computed, not written."""
    ab = ab[ab["variant"].isin(report.STORM_ROWS)] if len(ab) else ab
    if ab.empty:
        return "No finished runs of STORM or its ablations yet: nothing to read."
    names = {"portfolio": "Portfolio (TopK-Drop)", "rankic": "RankIC / RankICIR", "trading": "Trading"}
    lines = []
    for task, g in ab.groupby("task", sort=False):
        cells = list(g.groupby(["dataset", "metric"], sort=False))
        ours_best, paper_best, agree, comparable = [], [], 0, 0
        complete = 0
        for (ds, metric), c in cells:
            c = c.set_index("variant")
            if len(c["ours"].dropna()) < 3:
                continue
            complete += 1
            ob = _best(c["ours"], metric)
            ours_best.append(ob)
            pb = _best(c["paper"], metric) if c["paper"].notna().sum() == 3 else None
            if pb is not None:
                comparable += 1
                paper_best.append(pb)
                agree += ob == pb
        datasets = ", ".join(dict.fromkeys(g["dataset"]))
        if not complete:
            lines.append(f"- **{names.get(task, task)}** ({datasets}): no dataset × metric cell has a value for "
                         "all three variants yet.")
            continue
        n_storm = sum(b == "STORM" for b in ours_best)
        wins = {v: sum(b == v for b in ours_best) for v in report.STORM_ROWS[1:]}
        cover = (f"{complete} dataset × metric cells" if complete == len(cells) else
                 f"{complete} of {len(cells)} dataset × metric cells have a value for all three variants")
        text = (f"- **{names.get(task, task)}** ({datasets}; {cover}): full STORM is the "
                f"best of the three variants in {n_storm} of {complete} cells of our runs")
        if paper_best:
            text += f" and in {sum(b == 'STORM' for b in paper_best)} of {comparable} in the paper"
        text += "; " + ", ".join(f"{v} is best in {k}" for v, k in wins.items()) + "."
        if paper_best:
            text += f" Our best variant is the paper's best in {agree} of {comparable} cells."
        lines.append(text)
    n = ab.groupby(["task", "dataset", "variant"])["n"].max()
    seeds = f"{int(n.min())}" if n.min() == n.max() else f"{int(n.min())}–{int(n.max())}"
    lines.append(f"\nOur numbers are means over {seeds} seed(s) per variant; the paper's over 10 runs. With few "
                 "seeds a ranking of three close variants is fragile: read the seed spread in the tables above "
                 "before reading a ranking.")
    return "\n".join(lines)




# --------------------------------------------------------------------------- the two w/o-TS variants (issue 16)

#: w/o-TS rows: (label, model version, options string)
WO_TS_VARIANTS = (
    ("w/o-TS, identity query (default, version 2)", 2, ""),
    ("w/o-TS, last-day query (option wo_ts_query=last_day, version 2)", 2, "wo_ts_query=last_day"),
    ("w/o-TS, last-day query (version 1, superseded)", 1, ""),
)


def wo_ts_variants(universe: str, protocol: str = "clean", profile: str = "cpu", results_dir=None,
                   split_metrics=(("valid", "RankIC"), ("test", "RankIC"), ("test", "RankICIR"))) -> pd.DataFrame:
    """RankIC of the w/o-TS ablation with and without a per-stock input path, mean ± std over seeds: the
    default (a learned per-stock identity query: the paper's information set), the version-1 query
    Linear(x_i on the last day) as a version-2 option, and the superseded version-1 runs."""
    from ..run import load_results

    m = load_results(results_dir, task="portfolio", universe=universe, model="storm_wo_ts", protocol=protocol,
                     profile=profile, include_superseded=True)
    rows = []
    for label, version, options in WO_TS_VARIANTS:
        sel = m[(m["model_version"] == version) & (m["options"].fillna("") == options)
                & (m["convention"] == "standard")] if len(m) else m
        row = {"variant": label}
        for split, metric in split_metrics:
            v = sel.loc[(sel["split"] == split) & (sel["metric"] == metric), "value"] if len(sel) else pd.Series([], dtype=float)
            row[f"{split} {metric}"] = f"{v.mean():.4f} ± {v.std():.4f}" if len(v) > 1 else (f"{v.mean():.4f}" if len(v) else "–")
            row["seeds"] = int(len(v))
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")

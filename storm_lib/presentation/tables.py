"""Comparison tables of the notebooks (ours vs the paper), Improvement(%), training time, settings,
and the runs' daily / equity tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import data as data_mod
from ..run import load_table
from . import paper as report
from .context import IC_METRICS, PORTFOLIO_METRICS, as_list, select
from .fmt import TABLE_CSS, _fmt
from .footer import _run_record
from .verdict import mean_interval


def summary_table(long: pd.DataFrame, metrics=None, models=None, digits: int = 3) -> pd.DataFrame:
    """Ours only, one string per (model, metric): ``mean ± std (n=k)`` over seeds (rows: paper labels)."""
    if long.empty:
        return pd.DataFrame()
    s = report.summarise(long[["model", "metric", "value"] + (["seed"] if "seed" in long else [])])
    metrics = list(metrics) if metrics is not None else list(dict.fromkeys(s.index.get_level_values(1)))
    labels = [report.model_label(x) for x in (models if models is not None else s.index.get_level_values(0))]
    labels = [x for x in dict.fromkeys(labels) if x in s.index.get_level_values(0)]
    out = pd.DataFrame(index=pd.Index(labels, name="model"), columns=metrics, dtype=object)
    for model in labels:
        for metric in metrics:
            if (model, metric) not in s.index:
                out.loc[model, metric] = "–"
                continue
            r = s.loc[(model, metric)]
            out.loc[model, metric] = report.ours_cell(model, r["mean"], r["std"], int(r["n"]), digits,
                                                      (r["q1"], r["median"], r["q3"]), sep=" · ")
    return out


def comparison(m: pd.DataFrame, table: str, dataset: str, convention: str | None, split: str = "test",
               models=None, metrics=None, paper: bool = True, **where):
    """The comparison table of one paper table and dataset, styled for a notebook.

    With ``paper`` (the real universes): :func:`storm_lib.report.compare` + ``style_compare`` (ours mean ±
    std over seeds, the paper's mean ± range over 10 runs, Δ). Without: ours only, captioned as such.
    ``dataset``: the universe, or the ticker for ``table="trading"`` (then rows are filtered by ``stock``).
    """
    metrics, ours = _table_rows(m, table, dataset, split, convention, metrics, where)
    labels = [report.model_label(x) for x in as_list(models)] if models is not None else None
    if ours.empty and not paper:
        return pd.DataFrame({"note": ["no finished runs"]})
    if paper:
        cmp = report.compare(ours[["model", "metric", "value", "seed"]], table, dataset, models=labels,
                             metrics=metrics)
        sty = report.style_compare(cmp).set_table_styles(TABLE_CSS, overwrite=False)
        note = report.MARKET_INDEX_NOTE.get(str(dataset).lower()) if table == "portfolio" else None
        if note:   # say what the paper's Market Index row is (^DJI: a price index, no dividends)
            sty = sty.relabel_index([f"Market Index ({note})" if x == "Market Index" else x
                                     for x in sty.data.index], axis=0)
        conv = f", convention {convention}" if convention else ""
        return sty.set_caption(f"{dataset}, {split} split{conv}: ours = mean ± std over seeds (n); "
                               "paper = mean ± range over 10 runs; Δ = ours − paper; green: ours within the "
                               "paper's range")
    table_ = summary_table(ours, metrics, labels)
    name = data_mod.universe_label(dataset) if table != "trading" else dataset  # a price file: its stem
    return table_.style.set_table_styles(TABLE_CSS, overwrite=False).set_caption(f"{name}, {split} split{', convention ' + convention if convention else ''}"
                                    ": OURS ONLY (mean ± std over seeds) — no paper number: the paper has none for "
                                    "this data / protocol" + ("; Market Index row: the equal-weight buy-and-hold of "
                                    "its stocks (no index)" if table != "trading" and dataset not in data_mod.MARKET_INDEX else ""))


def _table_rows(m: pd.DataFrame, table: str, dataset: str, split: str, convention, metrics, where: dict):
    """(metrics, rows of ``m``) of one paper table cell block: a universe, or a stock for trading."""
    where = {("stock" if table == "trading" else "universe"): dataset, **where}
    metrics = list(metrics) if metrics is not None else list(IC_METRICS if table == "rankic" else PORTFOLIO_METRICS)
    return metrics, select(m, split, convention, metrics, **where)


def near_zero(values) -> bool:
    """Whether a comparator's mean is within its own 95 % t-interval over seeds of zero (then a
    percentage of it is not meaningful). One value: never (no interval)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return False
    lo, hi = mean_interval(float(v.mean()), float(v.std(ddof=1)), int(v.size))
    return bool(lo <= 0 <= hi)


def _improvement_text(ours: pd.DataFrame, r) -> str:
    """One Improvement(%) cell: the per cent, or ``n/m`` (not meaningful) where the best baseline's mean
    is within its own interval over seeds of zero."""
    if not np.isfinite(r["improvement"]):
        return "–"
    base = ours[(ours["model"].map(report.model_label) == r["best_baseline"]) & (ours["metric"] == r.name)]
    if near_zero(base["value"]):
        return "n/m"
    return f"{r['improvement']:.1f}"


def improvement_table(m: pd.DataFrame, table: str, dataset: str, convention: str | None, split: str = "test",
                      paper: bool = True, metrics=None, **where) -> pd.DataFrame:
    """The paper's Improvement(%) row computed the paper's way on our means (:func:`report.improvement`),
    with the paper's printed row beside it when ``paper``. ``n/m`` (not meaningful): the best baseline's
    mean is within its own 95 % interval over seeds of zero (:func:`near_zero`)."""
    metrics, ours = _table_rows(m, table, dataset, split, convention, metrics, where)
    if ours.empty:
        return pd.DataFrame(columns=["ours (%)", "best variant", "best baseline"])
    imp = report.improvement(ours[["model", "metric", "value", "seed"]], table, metrics=metrics)
    out = pd.DataFrame({
        "ours (%)": [_improvement_text(ours, r) for _, r in imp.iterrows()],
        "best variant": [f"{n} {_fmt(v)}" if n else "–" for n, v in zip(imp["best_variant"], imp["variant_value"])],
        "best baseline": [f"{n} {_fmt(v)}" if n else "–"
                          for n, v in zip(imp["best_baseline"], imp["baseline_value"])],
    }, index=imp.index)
    if paper:
        rep = report.reported(table, dataset)
        printed = rep[rep["model"] == report.IMPROVEMENT_ROW].set_index("metric")["value_text"]
        out["paper (%)"] = [printed.get(k, "") or "-" for k in out.index]
    return out


def training_time(m: pd.DataFrame, plan: pd.DataFrame | None = None) -> pd.DataFrame:
    """Training time per trading method (mean over seeds): the return model's fit (seconds, once per
    method), the RL agents' training summed over the stocks, and the run's wall time from run.json."""
    t = m[(m["split"] == "train") & m["metric"].isin(["fit_seconds", "train_seconds"])]
    if t.empty:
        return pd.DataFrame(columns=["fit (s)", "agents (s)", "run wall (s)", "seeds"])
    agents = t[t["metric"] == "train_seconds"].groupby(["model", "seed"])["value"].sum()
    fit = t[t["metric"] == "fit_seconds"].groupby(["model", "seed"])["value"].first()  # same on every stock
    out = pd.DataFrame({"fit (s)": fit, "agents (s)": agents}).groupby(level="model").mean()
    out["seeds"] = t.groupby("model")["seed"].nunique()
    if plan is not None:
        wall = {}
        for r in plan[plan["finished"]].itertuples():
            wall.setdefault(r.model, []).append(_run_record(r.run_dir).get("wall_seconds", np.nan))
        out["run wall (s)"] = pd.Series({k: float(np.nanmean(v)) for k, v in wall.items()})
    order = [x for x in m["model"].drop_duplicates() if x in out.index]
    out = out.loc[order].round(1)
    out.index = pd.Index([report.model_label(x) for x in out.index], name="method")
    return out


def trading_config(config: dict, profile: str):
    """The trading task's fixed settings (``storm_lib.trading.experiment.run_task.config``) as a styled
    table (no truncated cells); of the RL budgets only the profile's. ``.data`` is the frame. ``config``
    may also be the task's per-spec config function: then its fixed settings and every RL budget of the
    profile are shown."""
    if callable(config):
        from ..trading import experiment
        from ..trading.agents import ALGOS, budget

        config = {**experiment.CONFIG, "budgets": {profile: {a: budget(a, profile) for a in ALGOS}}}
    rows = {}
    for k, v in config.items():
        if k == "budgets" and isinstance(v, dict):
            for algo, b in (v.get(profile) or {}).items():
                rows[f"budget {algo} ({profile})"] = ", ".join(f"{a}={x}" for a, x in b.items())
        else:
            rows[k] = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    out = pd.DataFrame({"value": pd.Series(rows)}).rename_axis("trading task setting")
    return out.style.set_properties(**{"text-align": "left"}).set_table_styles(TABLE_CSS, overwrite=False)


def profile_table(profile: str, trading: bool = False):
    """STORM's settings in ``profile`` beside the official code's (:func:`storm_lib.profiles.compare_to_paper`),
    rows that differ in bold; ``.data`` is the frame."""
    from ..profiles import compare_to_paper

    t = compare_to_paper(profile, trading=trading)
    bold = lambda row: ["font-weight: bold" if not row["same"] else ""] * len(row)  # noqa: E731
    return (t.style.apply(bold, axis=1).set_properties(**{"text-align": "left"})
            .set_table_styles(TABLE_CSS, overwrite=False))


# --------------------------------------------------------------------------- run tables


def _tables(plan: pd.DataFrame, name: str, **where) -> list[tuple[pd.Series, pd.DataFrame]]:
    sel = plan[plan["finished"]]
    for col, val in where.items():
        sel = sel[sel[col].isin(val if isinstance(val, (list, tuple, set)) else [val])]
    return [(r, load_table(r["run_dir"], name)) for _, r in sel.iterrows()]


def daily(plan: pd.DataFrame, column: str = "return", options: str | None = "", **where) -> pd.DataFrame:
    """One column of the runs' ``daily`` tables (portfolio task, test split): index date, columns
    (paper row label, seed). ``column``: return, rank_ic, turnover, benchmark."""
    if options is not None:
        where["options"] = options
    cols = {}
    for r, d in _tables(plan, "daily", **where):
        cols[(report.model_label(r["model"]), int(r["seed"]))] = d[column]
    if not cols:
        return pd.DataFrame()
    out = pd.DataFrame(cols).sort_index()
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["model", "seed"])
    return out


def equity(plan: pd.DataFrame, split: str = "test", **where) -> pd.DataFrame:
    """The trading runs' equity curves of one split, long: method (paper label), seed, stock, date, equity."""
    frames = []
    for r, e in _tables(plan, "equity", **where):
        e = e[e["split"] == split]
        frames.append(e[["stock", "date", "equity"]].assign(method=report.model_label(r["model"]),
                                                             seed=int(r["seed"])))
    if not frames:
        return pd.DataFrame(columns=["method", "seed", "stock", "date", "equity"])
    return pd.concat(frames, ignore_index=True)[["method", "seed", "stock", "date", "equity"]]


def trading_activity(plan: pd.DataFrame, split: str = "test", **where) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Does each trading run trade? From the runs' equity tables (``position`` 1 = long, 0 = flat):

    * per run and stock: days, share of days long, trades (position changes, the first buy included)
      and ``holds`` (long on every day after at most one trade: the same book as Buy&Hold);
    * per method: runs (stock × seed), mean long share, mean and median trades per run, and how many
      runs only hold.

    Returns ``(per_run, per_method)``."""
    from ..trading.experiment import activity

    frames = [activity(e, split).drop(columns="never long").assign(method=report.model_label(r["model"]),
                                                                     seed=int(r["seed"]))
              for r, e in _tables(plan, "equity", **where)]
    cols = ["method", "seed", "stock", "days", "long share", "trades", "holds", "sell", "hold", "buy"]
    per_run = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
    if per_run.empty:
        return per_run, pd.DataFrame(columns=["runs", "long share", "trades (mean)", "trades (median)",
                                              "runs that only hold", "sell / hold / buy chosen"])
    g = per_run.groupby("method", sort=False)
    per_method = pd.DataFrame({"runs": g.size(), "long share": g["long share"].mean(),
                               "trades (mean)": g["trades"].mean(), "trades (median)": g["trades"].median(),
                               "runs that only hold": g["holds"].sum().astype(int),
                               "sell / hold / buy chosen": [f"{a:.2f} / {b:.2f} / {c:.2f}" for a, b, c in
                                                            zip(g["sell"].mean(), g["hold"].mean(), g["buy"].mean())]})
    return per_run, per_method

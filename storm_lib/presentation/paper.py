"""The paper's numbers (``storm_lib/reported.csv``) and ours beside them: row labels, comparison
tables, the Improvement(%) row and its check against the paper's own rows (see ``storm_lib.report``'s
docstring for the source of the numbers)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from io import StringIO

import numpy as np
import pandas as pd

from ..floors import EW_MARKET, FLOORS
from ..floors import LABELS as _PSEUDO_LABELS
from .fmt import _fmt_pct, _num, markdown_table

TABLES = ("portfolio", "trading", "rankic")
STORM_ROWS = ("STORM", "STORM-w/o-TS", "STORM-w/o-CS")
#: the equal-weight buy-and-hold total-return market of a universe (storm_lib.floors.EW_MARKET)
TR_MARKET_ROW = _PSEUDO_LABELS[EW_MARKET]
#: the trivial floors (storm_lib.floors.FLOORS), deterministic rows marked "Floor:"
FLOOR_ROWS = tuple(_PSEUDO_LABELS[k] for k in FLOORS)
REFERENCE_ROWS = ("Market Index", "Buy&Hold", TR_MARKET_ROW)  # deterministic reference rows, never "baselines"
#: rows without a seed-dependent part: one number, no ± (a market row, a floor, Buy&Hold)
DETERMINISTIC_ROWS = REFERENCE_ROWS + FLOOR_ROWS
#: what each universe's Market Index row is (the paper's row; ^DJI has no dividends, SPY's adjusted close has)
MARKET_INDEX_NOTE = {"dj30": "^DJI, price index, no dividends", "sp500": "SPY, adjusted close, with dividends"}
IMPROVEMENT_ROW = "Improvement(%)"
LOWER_IS_BETTER = frozenset({"MDD", "AVO"})
TRADING_STOCKS = ("AAPL", "JPM", "IBM", "INTC", "MSFT")

# Printed Improvement(%) cells that the paper's own rows do not reproduce (reference/paper.md §10.8):
# (table, dataset, metric) -> (printed, what the formula gives from the printed rows, explanation).
PAPER_IMPROVEMENT_ERRATA = {
    ("trading", "IBM", "CR"): (20.408, 25.641, "printed = (1.470 − 1.170)/1.470, i.e. divided by STORM's "
                                                "value instead of the best baseline's (SAC 1.170)"),
    ("trading", "INTC", "CW"): (26.969, 25.969, "off by exactly one percentage point: (1.625 − 1.290)/1.290"),
    ("trading", "INTC", "CR"): (66.594, 68.777, "no pair of printed INTC CR numbers gives it; "
                                                "the formula: (0.773 − 0.458)/0.458 = 68.78"),
}

# Registry names, class names and spellings of the results frame -> the row label printed in the paper.
_ALIASES = {
    "storm": "STORM", "storm_wo_ts": "STORM-w/o-TS", "storm_wo_cs": "STORM-w/o-CS",
    "wo_ts": "STORM-w/o-TS", "wo_cs": "STORM-w/o-CS",
    "lightgbm": "LightGBM", "lgbm": "LightGBM", "lstm": "LSTM", "transformer": "Transformer",
    "cafactor": "CAFactor", "factorvae": "FactorVAE", "hirevae": "HireVAE",
    "market_index": "Market Index", "market": "Market Index", "index": "Market Index",
    "buy_and_hold": "Buy&Hold", "buy_hold": "Buy&Hold", "buyhold": "Buy&Hold", "bah": "Buy&Hold",
    "dqn": "DQN", "sac": "SAC", "ppo": "PPO", "storm_ppo": "STORM",
    **_PSEUDO_LABELS,
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


def model_label(name) -> str:
    """The paper's row label for a model name (``"storm_wo_ts"`` -> ``"STORM-w/o-TS"``); unknown
    names are returned unchanged."""
    if not isinstance(name, str):
        return name
    printed = {_key(m): m for m in (*STORM_ROWS, *DETERMINISTIC_ROWS, "LightGBM", "LSTM", "Transformer",
                                    "CAFactor", "FactorVAE", "HireVAE", "DQN", "SAC", "PPO")}
    k = _key(name)
    return printed.get(k) or _ALIASES.get(k) or name


def _better(metric: str) -> str:
    return "down" if metric in LOWER_IS_BETTER else "up"


# --------------------------------------------------------------------------- the paper's numbers


def _read_reported() -> pd.DataFrame:
    text = resources.files("storm_lib").joinpath("reported.csv").read_text(encoding="utf-8")
    raw = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    out = raw.rename(columns={"value": "value_text", "pm": "pm_text"})
    out["value"] = pd.to_numeric(out["value_text"].replace("", np.nan))
    out["pm"] = pd.to_numeric(out["pm_text"].replace("", np.nan))
    cols = ["table", "dataset", "model", "metric", "value", "pm", "direction", "value_text", "pm_text"]
    return out[cols]


_REPORTED: pd.DataFrame | None = None


def reported(table: str | None = None, dataset: str | None = None) -> pd.DataFrame:
    """The paper's numbers in long form: table, dataset, model, metric, value, pm (floats; NaN where
    nothing is printed), direction, and the printed text in value_text / pm_text.

    ``pm`` is the paper's ± (a range over 10 runs, not a standard deviation). ``dataset`` is
    case-insensitive (``"DJ30"``, ``"dj30"``, ``"aapl"``).
    """
    global _REPORTED
    if _REPORTED is None:
        _REPORTED = _read_reported()
    df = _REPORTED
    if table is not None:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; use one of {TABLES}")
        df = df[df["table"] == table]
    if dataset is not None:
        df = df[df["dataset"].str.lower() == str(dataset).lower()]
        if df.empty:
            known = sorted(_REPORTED.loc[_REPORTED["table"] == table, "dataset"].unique()) if table else None
            raise ValueError(f"no reported numbers for dataset {dataset!r}" + (f" in table {table!r}; "
                             f"known: {known}" if known else ""))
    return df.reset_index(drop=True).copy()


def _paper_rows(table: str, dataset: str) -> pd.DataFrame:
    """Wide frame of the paper's means: index model (printed order, Improvement row dropped)."""
    rep = reported(table, dataset)
    rep = rep[rep["model"] != IMPROVEMENT_ROW]
    order = list(dict.fromkeys(rep["model"]))
    metrics = list(dict.fromkeys(rep["metric"]))
    return rep.pivot(index="model", columns="metric", values="value").loc[order, metrics]


def paper_baselines(table: str) -> list[str]:
    """The baseline rows of a paper table (not STORM or its variants, not a reference row)."""
    rep = reported(table)
    rows = dict.fromkeys(rep["model"])
    return [m for m in rows if m not in STORM_ROWS and m not in REFERENCE_ROWS and m != IMPROVEMENT_ROW]


# --------------------------------------------------------------------------- ours vs the paper


def _check_long(ours: pd.DataFrame, need=("model", "metric", "value")) -> pd.DataFrame:
    missing = [c for c in need if c not in ours.columns]
    if missing:
        raise ValueError(f"ours needs columns {list(need)}; missing {missing}")
    out = ours.copy()
    out["model"] = out["model"].map(model_label)
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    return out


def summarise(ours: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof 1) and n of ``value`` per (model, metric) over the rows (seeds) of ``ours``.

    With a ``seed`` column, two rows for one (model, metric, seed) are an error: the frame still mixes
    splits, conventions, protocols or options (filter ``load_results`` output first)."""
    ours = _check_long(ours)
    if "seed" in ours.columns:
        dup = ours[ours.duplicated(["model", "metric", "seed"], keep=False)]
        if not dup.empty:
            first = dup.iloc[0]
            raise ValueError(f"{len(dup)} rows share (model, metric, seed), e.g. {first['model']!r} "
                             f"{first['metric']!r} seed {first['seed']!r}: filter one split, convention, "
                             "protocol, profile and options first")
    g = ours.dropna(subset=["value"]).groupby(["model", "metric"], sort=False)["value"]
    runs = ours.groupby(["model", "metric"], sort=False)["value"].size()  # NaN values included
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count(), "median": g.median(),
                        "q1": g.quantile(0.25), "q3": g.quantile(0.75)}).reindex(runs.index)
    out["n"] = out["n"].fillna(0).astype(int)
    out["runs"] = runs
    return out


def compare(ours: pd.DataFrame, table: str, dataset: str, models: Sequence[str] | None = None,
            metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Our numbers against the paper's, one row per model.

    ``ours``: long frame with columns model, metric, value and (usually) seed, one row per seed;
    model names as printed in the paper (``Market Index``, ``LightGBM``, ``STORM-w/o-TS``) or the
    registry names (``storm_wo_ts``), which are mapped to the printed ones.

    Returns a frame indexed by model (the paper's row order, then models only we have) with
    two-level columns (metric, field), fields:

    ``ours`` mean over seeds, ``ours_std`` standard deviation over seeds (ddof 1; NaN for one seed),
    ``n`` number of seeds with a defined value, ``runs`` number of runs (a metric can be undefined in
    a run, e.g. the Sharpe ratio of an agent that never traded), ``paper`` the paper's mean, ``paper_pm`` the paper's ± — **a range over
    10 runs, not a standard deviation** — and ``delta`` = ours − paper.
    Render it with :func:`compare_cells`, :func:`style_compare` or :func:`compare_markdown`.
    """
    paper = _paper_rows(table, dataset)
    rep = reported(table, dataset).set_index(["model", "metric"])
    summ = summarise(ours)
    metrics = list(metrics) if metrics is not None else list(paper.columns)
    if models is None:
        ours_models = [m for m in dict.fromkeys(summ.index.get_level_values(0)) if m not in paper.index]
        models = list(paper.index) + ours_models
    else:
        models = [model_label(m) for m in models]
    fields = ("ours", "ours_std", "n", "runs", "paper", "paper_pm", "delta", "ours_median", "ours_q1", "ours_q3")
    data = {}
    for metric in metrics:
        cols = {f: [] for f in fields}
        for model in models:
            s = summ.loc[(model, metric)] if (model, metric) in summ.index else None
            p = rep.loc[(model, metric)] if (model, metric) in rep.index else None
            o = float(s["mean"]) if s is not None else np.nan
            pv = float(p["value"]) if p is not None else np.nan
            cols["ours"].append(o)
            cols["ours_std"].append(float(s["std"]) if s is not None else np.nan)
            cols["n"].append(int(s["n"]) if s is not None else 0)
            cols["runs"].append(int(s["runs"]) if s is not None else 0)
            cols["paper"].append(pv)
            cols["paper_pm"].append(float(p["pm"]) if p is not None else np.nan)
            cols["delta"].append(o - pv)
            for f, k in (("ours_median", "median"), ("ours_q1", "q1"), ("ours_q3", "q3")):
                cols[f].append(float(s[k]) if s is not None else np.nan)
        for f in fields:
            data[(metric, f)] = cols[f]
    out = pd.DataFrame(data, index=pd.Index(models, name="model"))
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["metric", "field"])
    out.attrs.update(table=table, dataset=dataset)
    return out



def is_deterministic(model: str, std: float = np.nan, n: int = 0) -> bool:
    """A row without a seed-dependent part: a market row, a floor, Buy&Hold, or seeds that all agree."""
    return model_label(model) in DETERMINISTIC_ROWS or (n > 1 and np.isfinite(std) and std == 0)


def spread_dominates(mean: float, std: float, n: int) -> bool:
    """Whether the seed spread dominates the mean (3+ seeds, std > |mean|): then a median and an
    interquartile range say more than mean ± std."""
    return n >= 3 and np.isfinite(std) and np.isfinite(mean) and std > abs(mean)


def ours_cell(model: str, mean: float, std: float, n: int, digits: int = 3, quartiles=None,
              sep: str = "<br>") -> str:
    """``mean ± std (n=k)`` over seeds; a deterministic row (:func:`is_deterministic`) is one number; where
    the spread dominates (:func:`spread_dominates`) and ``quartiles`` = (q1, median, q3) are given, a
    second line ``median m [IQR q1, q3]``."""
    if is_deterministic(model, std, n):
        return _num(mean, digits)
    sd = f" ± {_num(std, digits)}" if np.isfinite(std) else ""
    text = f"{_num(mean, digits)}{sd} (n={int(n)})"
    if quartiles is not None and spread_dominates(mean, std, n):
        q1, med, q3 = quartiles
        text += f"{sep}median {_num(med, digits)} [IQR {_num(q1, digits)}, {_num(q3, digits)}]"
    return text


def compare_cells(cmp: pd.DataFrame, digits: int = 3, sep: str = "<br>") -> pd.DataFrame:
    """One string per (model, metric): ``0.086 ± 0.010 (n=3)``, ``paper 0.179 ± 0.020``, ``Δ −0.093``
    joined by ``sep`` (``"<br>"`` stacks them in HTML and MyST tables, ``" | "`` keeps one line).
    Our ± is a std over seeds, the paper's a range over 10 runs. A deterministic row (:data:`DETERMINISTIC_ROWS`,
    or one whose seeds all agree) shows one number, no ± and no n (:func:`ours_cell`)."""
    metrics = list(dict.fromkeys(cmp.columns.get_level_values(0)))
    out = pd.DataFrame(index=cmp.index, columns=metrics, dtype=object)
    for model in cmp.index:
        for m in metrics:
            c = cmp.loc[model, m]
            parts = []
            if c["n"] > 0:
                parts.append(ours_cell(model, c["ours"], c["ours_std"], c["n"], digits,
                                       (c.get("ours_q1"), c.get("ours_median"), c.get("ours_q3")), sep))
            elif c.get("runs", 0) > 0:
                parts.append(f"undefined in our run(s) (n={int(c['runs'])})")
            else:
                parts.append("not run")
            if np.isfinite(c["paper"]):
                pm = f" ± {_num(c['paper_pm'], digits)}" if np.isfinite(c["paper_pm"]) else ""
                parts.append(f"paper {_num(c['paper'], digits)}{pm}")
                if c["n"] > 0:
                    parts.append(f"Δ {_num(c['delta'], digits, signed=True)}")
            out.loc[model, m] = sep.join(parts)
    out.index.name = cmp.index.name
    return out


def _cell_status(c) -> str:
    if c["n"] == 0:
        return "missing"
    if not np.isfinite(c["paper"]):
        return "none"
    pm = c["paper_pm"] if np.isfinite(c["paper_pm"]) else 5e-4  # no ±: the printed rounding
    return "within" if abs(c["delta"]) <= pm + 1e-12 else "outside"


_STATUS_CSS = {"within": "background-color: #e6f4ea", "outside": "background-color: #fdecea",
               "missing": "color: #888888", "none": ""}


def style_compare(cmp: pd.DataFrame, digits: int = 3):
    """A pandas Styler of :func:`compare_cells` for notebooks: green where our mean lies within the
    paper's ± (its 10-run range) of the paper's mean — within its printed rounding (±0.0005) for
    rows printed without ± — red where it does not, grey where not run."""
    cells = compare_cells(cmp, digits)
    css = pd.DataFrame("", index=cells.index, columns=cells.columns)
    for model in cells.index:
        for m in cells.columns:
            css.loc[model, m] = (_STATUS_CSS[_cell_status(cmp.loc[model, m])]
                                 + "; text-align: left")
    caption = (f"{cmp.attrs.get('table', '')} {cmp.attrs.get('dataset', '')}: ours = mean ± std over seeds; "
               "paper = mean ± range over 10 runs; green: ours within the paper's range")
    return cells.style.apply(lambda _: css, axis=None).set_caption(caption.strip())


def compare_markdown(cmp: pd.DataFrame, digits: int = 3) -> str:
    """:func:`compare_cells` as a pipe table (cells stacked with ``<br>``)."""
    return markdown_table(compare_cells(cmp, digits))


# --------------------------------------------------------------------------- Improvement(%)


def _means_wide(ours_means: pd.DataFrame) -> pd.DataFrame:
    """Accept a wide frame (index model, columns metric) or a long one (model, metric, value[, seed])."""
    if {"model", "metric", "value"} <= set(ours_means.columns):
        s = summarise(ours_means)["mean"]
        return s.unstack("metric")
    wide = ours_means.copy()
    wide.index = [model_label(m) for m in wide.index]
    return wide


def improvement(ours_means: pd.DataFrame, table: str, metrics: Sequence[str] | None = None,
                baselines: Sequence[str] | None = None, variants: Sequence[str] = STORM_ROWS) -> pd.DataFrame:
    """The paper's Improvement(%) row computed the paper's way (reference/paper.md §10.8), on any means.

    Per metric: best of ``variants`` (STORM and its two ablations) against the best of ``baselines``
    (default: the paper's baseline rows of ``table``; never Market Index or Buy&Hold), in the column's
    direction: higher is better except MDD and AVO, where lower is better, so the percentage is always
    "better by":

        up:   (best variant − best baseline) / |best baseline| × 100
        down: (best baseline − best variant) / |best baseline| × 100

    (The paper never divides by a negative best baseline; |·| keeps the sign meaning "better".) A
    negative value means no variant beat the best baseline; the paper prints "-" there.

    ``ours_means``: wide (index model, columns metric) or long (model, metric, value, seed: averaged).
    Returns one row per metric: best_baseline, baseline_value, best_variant, variant_value,
    improvement (%), direction.
    """
    wide = _means_wide(ours_means)
    if baselines is None:
        baselines = paper_baselines(table)
    baselines = [model_label(b) for b in baselines]
    variants = [model_label(v) for v in variants]
    if metrics is None:
        metrics = [m for m in dict.fromkeys(reported(table)["metric"]) if m in wide.columns]
    rows = {}
    for metric in metrics:
        direction = _better(metric)
        col = wide[metric] if metric in wide.columns else pd.Series(dtype=float)

        def best(names):
            vals = col.reindex([n for n in names if n in col.index]).dropna()
            if vals.empty:
                return None, np.nan
            name = vals.idxmin() if direction == "down" else vals.idxmax()
            return name, float(vals[name])

        bname, bval = best(baselines)
        vname, vval = best(variants)
        imp = np.nan if bname is None or vname is None else _gain(vval, bval, metric)
        rows[metric] = {"best_baseline": bname, "baseline_value": bval, "best_variant": vname,
                        "variant_value": vval, "improvement": imp, "direction": direction}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "metric"
    return out


def improvement_check(table: str | None = None, dataset: str | None = None) -> pd.DataFrame:
    """The paper's printed Improvement(%) row against :func:`improvement` applied to the paper's own
    printed rows, for every (table, dataset, metric). Columns: printed, recomputed, best_variant,
    best_baseline, status: ``ok`` (agrees to the printed rounding), ``dash`` (printed "-" and no variant
    beats the best baseline), ``erratum`` (listed in :data:`PAPER_IMPROVEMENT_ERRATA`) or ``mismatch``."""
    rep = reported(table)
    rows = []
    for (tbl, ds), _ in rep.groupby(["table", "dataset"], sort=False):
        if dataset is not None and ds.lower() != str(dataset).lower():
            continue
        paper = _paper_rows(tbl, ds)
        imp = improvement(paper, tbl)
        printed = reported(tbl, ds)
        printed = printed[printed["model"] == IMPROVEMENT_ROW].set_index("metric")
        for metric, r in imp.iterrows():
            p = printed.loc[metric]
            val = float(p["value"])
            text = p["value_text"]
            decimals = len(text.split(".")[1]) if "." in text else 0
            if not np.isfinite(val):
                status = "dash" if not (r["improvement"] > 0) else "mismatch"
            elif (tbl, ds, metric) in PAPER_IMPROVEMENT_ERRATA:
                status = "erratum"
            else:
                # the printed rows are rounded to 3 decimals; allow that rounding to propagate
                status = "ok" if abs(val - r["improvement"]) <= max(0.5 * 10 ** -decimals, 0.006) else "mismatch"
            rows.append({"table": tbl, "dataset": ds, "metric": metric, "printed": text or "-",
                         "recomputed": round(float(r["improvement"]), 3), "best_variant": r["best_variant"],
                         "best_baseline": r["best_baseline"], "status": status})
    return pd.DataFrame(rows)



def _better_than(a: float, b: float, metric: str) -> bool:
    return a < b if _better(metric) == "down" else a > b


def _diff(a: float, b: float, metric: str) -> float:
    """``a`` minus ``b`` in the metric's units, signed so that positive means ``a`` is better."""
    return (a - b) if _better(metric) == "up" else (b - a)


def _fmt_margin(a: float, b: float, metric: str) -> str:
    """A margin as the difference in metric units and the paper's relative Improvement, e.g.
    ``Δ +0.008 (+839.1 %)``: the per cent alone misleads when the comparator is near zero."""
    return f"Δ {_num(_diff(a, b, metric), 3, True)} ({_fmt_gain(_rel_gain(a, b, metric))})"


def _rel_gain(a: float, b: float, metric: str) -> float:
    """:func:`_gain` where it means something: NaN when the comparator ``b`` is not positive on a
    higher-is-better metric (a per cent of a negative RankIC or APY has neither a useful size nor sign)."""
    if _better(metric) == "up" and np.isfinite(b) and b <= 0:
        return np.nan
    return _gain(a, b, metric)


def _fmt_gain(x: float) -> str:
    """A relative margin, ``n/m`` (not meaningful) where :func:`_rel_gain` gives none."""
    return "n/m" if not np.isfinite(x) else _fmt_pct(x)


def _gain(a: float, b: float, metric: str) -> float:
    if not (np.isfinite(a) and np.isfinite(b)) or b == 0:
        return np.nan
    return _diff(a, b, metric) / abs(b) * 100.0



def improvement_check_markdown() -> str:
    """:func:`improvement_check` as text and two narrow tables, for the book."""
    chk = improvement_check()
    chk["cell"] = chk["table"] + " " + chk["dataset"] + " " + chk["metric"]
    bad = chk[chk["status"].isin(["erratum", "mismatch"])].copy()
    bad["explanation"] = [PAPER_IMPROVEMENT_ERRATA.get((t, d, m), (None, None, "not explained"))[2]
                          for t, d, m in zip(bad["table"], bad["dataset"], bad["metric"])]
    bad = bad.rename(columns={"recomputed": "formula gives"})
    counts = chk["status"].value_counts()
    other = chk[(chk["best_variant"] != "STORM") & chk["status"].isin(["ok", "erratum"])]
    other = other.rename(columns={"best_variant": "best variant", "best_baseline": "best baseline"})
    lines = [f"Of the paper's {len(chk)} Improvement(%) cells, {counts.get('ok', 0)} agree with the formula "
             f"applied to the paper's own rows (to the printed rounding), {counts.get('dash', 0)} are printed "
             f"as \"-\" where no STORM variant beats the best baseline, and {len(bad)} do not agree:", "",
             markdown_table(bad[["cell", "printed", "formula gives", "explanation"]], index=False), "",
             f"In {len(other)} cells the best variant is an ablation, not STORM itself:", "",
             markdown_table(other[["cell", "printed", "best variant", "best baseline"]], index=False)]
    return "\n".join(lines)



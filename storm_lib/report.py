"""The paper's numbers next to ours: comparison tables, the Improvement(%) row, a one-screen verdict.

Source of the paper's numbers
-----------------------------
``reported.csv`` (shipped inside this package, byte-identical to ``shared/paper/reported.csv``) holds
every number of the paper's four result tables in long form, 502 rows: ``table`` (``portfolio``,
``trading``, ``rankic``), ``dataset`` (``dj30``/``sp500``, or a ticker for ``trading``), ``model``
(row label as printed), ``metric``, ``value`` and ``pm`` (the printed text), ``direction`` (``up``:
higher is better, ``down``: lower is better, i.e. MDD and AVO). It was transcribed from the table
images of the authors' oral slides (WSDM 2026; ``assets/STORM oral.pdf`` in the public repository
``ElaineZhao92/STORM-webpage``, slides 15-16) and cross-checked against the project page's HTML
tables. The file carries no comment line so that any CSV reader can load it.

Read before comparing (details: reference/paper.md §7 and §10):

* The paper's **± is a range over 10 runs** ("mean ± range, computed across 10 runs"; half or full
  range not stated), **not a standard deviation**. Our ± is the sample standard deviation (ddof 1) over
  our seeds. The two are shown side by side, never merged into one test.
* ``Improvement(%)`` is (best of STORM and its two variants − best baseline) / best baseline × 100,
  in the column's direction (:func:`improvement`); three printed trading cells do not follow it
  (:data:`PAPER_IMPROVEMENT_ERRATA`) and six are printed as "-" (no variant beat the best baseline).
* The trading table mixes units (the model rows' AVO is a daily standard deviation, Buy&Hold's is
  annualised; reference/paper.md §10.6).

Functions
---------
:func:`reported` the paper's numbers as floats (printed text kept); :func:`compare` ours (one row per
seed) against them, one row per model; :func:`compare_cells` / :func:`style_compare` /
:func:`compare_markdown` render it; :func:`improvement` the paper's Improvement row on any means;
:func:`improvement_check` the paper's printed row against its own numbers; :func:`verdict` a one-screen
claim-by-claim table from the long results frame (``storm_lib.run.load_results``).

Command line (used by ``make book``)::

    python -m storm_lib.report verdict --results results --out book/_generated/verdict.md
    python -m storm_lib.report book --results results --out-dir book/_generated
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

TABLES = ("portfolio", "trading", "rankic")
STORM_ROWS = ("STORM", "STORM-w/o-TS", "STORM-w/o-CS")
REFERENCE_ROWS = ("Market Index", "Buy&Hold")  # deterministic reference rows, never "baselines"
IMPROVEMENT_ROW = "Improvement(%)"
MIN_SEEDS = 3   # fewer seeds: a verdict is a point estimate and is labelled as such
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
}
_MINUS = "\u2212"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


def model_label(name) -> str:
    """The paper's row label for a model name (``"storm_wo_ts"`` -> ``"STORM-w/o-TS"``); unknown
    names are returned unchanged."""
    if not isinstance(name, str):
        return name
    printed = {_key(m): m for m in (*STORM_ROWS, *REFERENCE_ROWS, "LightGBM", "LSTM", "Transformer",
                                    "CAFactor", "FactorVAE", "HireVAE", "DQN", "SAC", "PPO")}
    k = _key(name)
    return printed.get(k) or _ALIASES.get(k) or name


def _better(metric: str) -> str:
    return "down" if metric in LOWER_IS_BETTER else "up"


# --------------------------------------------------------------------------- the paper's numbers


def _read_reported() -> pd.DataFrame:
    text = resources.files(__package__).joinpath("reported.csv").read_text(encoding="utf-8")
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
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reindex(runs.index)
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
    fields = ("ours", "ours_std", "n", "runs", "paper", "paper_pm", "delta")
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
        for f in fields:
            data[(metric, f)] = cols[f]
    out = pd.DataFrame(data, index=pd.Index(models, name="model"))
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["metric", "field"])
    out.attrs.update(table=table, dataset=dataset)
    return out


def _num(x: float, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if round(x, digits) == 0:
        x = 0.0  # no "−0.000"
    s = f"{x:+.{digits}f}" if signed and x != 0 else f"{x:.{digits}f}"
    return s.replace("-", _MINUS)


def compare_cells(cmp: pd.DataFrame, digits: int = 3, sep: str = "<br>") -> pd.DataFrame:
    """One string per (model, metric): ``0.086 ± 0.010 (n=3)``, ``paper 0.179 ± 0.020``, ``Δ −0.093``
    joined by ``sep`` (``"<br>"`` stacks them in HTML and MyST tables, ``" | "`` keeps one line).
    Our ± is a std over seeds, the paper's a range over 10 runs."""
    metrics = list(dict.fromkeys(cmp.columns.get_level_values(0)))
    out = pd.DataFrame(index=cmp.index, columns=metrics, dtype=object)
    for model in cmp.index:
        for m in metrics:
            c = cmp.loc[model, m]
            parts = []
            if c["n"] > 0:
                sd = f" ± {_num(c['ours_std'], digits)}" if np.isfinite(c["ours_std"]) else ""
                parts.append(f"{_num(c['ours'], digits)}{sd} (n={int(c['n'])})")
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
                                 + "; text-align: left; white-space: nowrap")
    caption = (f"{cmp.attrs.get('table', '')} {cmp.attrs.get('dataset', '')}: ours = mean ± std over seeds; "
               "paper = mean ± range over 10 runs; green: ours within the paper's range")
    return cells.style.apply(lambda _: css, axis=None).set_caption(caption.strip())


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def markdown_table(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub/MyST pipe table (no tabulate dependency); cells are written as they are."""
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(_md_escape(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = ([str(idx)] if index else []) + ["" if pd.isna(v) else str(v) for v in row]
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


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


# --------------------------------------------------------------------------- verdict

RESULT_COLUMNS = ("task", "universe", "model", "protocol", "profile", "seed", "options", "split",
                  "convention", "metric", "value")

# Which `task` of the results frame holds a paper table's numbers: the portfolio run
# (storm_lib.tasks.portfolio) writes both RankIC and the TopK-Drop metrics.
DEFAULT_TASKS = {"portfolio": ("portfolio",), "rankic": ("portfolio",), "trading": ("trading",)}
# Metric convention compared with the paper: its tables satisfy ASR = APY/AVO ("paper" convention,
# storm_lib.metrics); RankIC is the standard per-day Spearman mean.
DEFAULT_CONVENTIONS = {"portfolio": ("paper",), "rankic": ("standard",), "trading": ("paper",)}
PROFILE_ORDER = ("paper", "cpu", "smoke")
_EMPTY_OPTIONS = {"", "{}", "none", "null", "default", "nan"}


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, checked by :func:`verdict`.

    kind ``value``: ``model``'s ``metric`` ≈ the paper's (replicated when |ours − paper| ≤ the paper's
    ±); ``beats``: ``model`` better than every paper baseline (``against=None``) or than the models in
    ``against``, on every dataset in ``datasets`` (replicated: all; partly: some).
    """

    text: str
    kind: str
    table: str
    datasets: tuple[str, ...]
    metric: str
    model: str = "STORM"
    against: tuple[str, ...] | None = None


def default_claims() -> list[Claim]:
    """The headline claims of the paper's tables (about one screen)."""
    claims = []
    for u, name in (("dj30", "DJ30"), ("sp500", "SP500")):
        p = _paper_rows("rankic", u).loc["STORM", "RankIC"]
        claims += [
            Claim(f"STORM RankIC on {name} ≈ {p:.3f}", "value", "rankic", (u,), "RankIC"),
            Claim(f"STORM has a higher RankIC than every baseline on {name}", "beats", "rankic", (u,), "RankIC"),
            Claim(f"Full STORM beats both ablations on {name} RankIC", "beats", "rankic", (u,), "RankIC",
                  against=("STORM-w/o-TS", "STORM-w/o-CS")),
            Claim(f"STORM beats every baseline on {name} APY (TopK-Drop)", "beats", "portfolio", (u,), "APY"),
            Claim(f"STORM beats every baseline on {name} ASR", "beats", "portfolio", (u,), "ASR"),
            Claim(f"STORM has a lower MDD than every baseline on {name}", "beats", "portfolio", (u,), "MDD"),
            Claim(f"STORM beats the Market Index on {name} APY", "beats", "portfolio", (u,), "APY",
                  against=("Market Index",)),
        ]
    claims.append(Claim("STORM (PPO on its factors) has the best APY of all trading models on the 5 stocks",
                        "beats", "trading", TRADING_STOCKS, "APY"))
    return claims


def _matches(col: pd.Series, accepted) -> pd.Series:
    """Row filter: value in ``accepted``; missing values (NaN, "") match anything."""
    if accepted is None:
        return pd.Series(True, index=col.index)
    acc = {str(a).lower() for a in (accepted if isinstance(accepted, (list, tuple, set)) else [accepted])}
    text = col.astype("string").str.lower()
    return text.isna() | (text == "") | text.isin(acc)


def _select_results(results: pd.DataFrame | None, protocol: str, split: str,
                    options: str | None) -> pd.DataFrame:
    if results is None or len(results) == 0:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    missing = [c for c in ("model", "metric", "value") if c not in results.columns]
    if missing:
        raise ValueError(f"results need columns {list(RESULT_COLUMNS)}; missing {missing}")
    r = results.copy()
    for c in RESULT_COLUMNS:
        if c not in r.columns:
            r[c] = np.nan
    r["model"] = r["model"].map(model_label)
    r["value"] = pd.to_numeric(r["value"], errors="coerce")
    keep = _matches(r["protocol"], protocol) & _matches(r["split"], split)
    opt = r["options"].astype("string").str.strip().str.lower()
    keep &= (opt.isna() | opt.isin(_EMPTY_OPTIONS)) if options is None else (opt == str(options).lower())
    return r[keep & r["value"].notna()]


def _means(r: pd.DataFrame, table: str, dataset: str, metric: str, tasks, conventions) -> pd.DataFrame:
    """Per model and profile: mean, std, n over seeds of one (dataset, metric)."""
    # trading rows may name the stock in a column of their own (the universe being its index)
    where = next((c for c in ("stock", "ticker") if table == "trading" and c in r.columns), "universe")
    sel = r[(r["metric"] == metric) & (r[where].astype("string").str.lower() == dataset.lower())
            & _matches(r["task"], tasks[table]) & _matches(r["convention"], conventions[table])]
    if sel.empty:
        return pd.DataFrame(columns=["model", "profile", "mean", "std", "n"])
    sel = sel.assign(profile=sel["profile"].astype("string").fillna(""))
    # one value per seed (a deterministic row may come without a seed)
    g = sel.groupby(["model", "profile"], dropna=False)["value"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()


def _pick_profile(m: pd.DataFrame, model: str, profiles) -> str | None:
    have = set(m.loc[m["model"] == model, "profile"])
    for p in profiles:
        if p in have:
            return p
    return sorted(have)[0] if have else None


def _better_than(a: float, b: float, metric: str) -> bool:
    return a < b if _better(metric) == "down" else a > b


def _diff(a: float, b: float, metric: str) -> float:
    """``a`` minus ``b`` in the metric's units, signed so that positive means ``a`` is better."""
    return (a - b) if _better(metric) == "up" else (b - a)


def _fmt_margin(a: float, b: float, metric: str) -> str:
    """A margin as the difference in metric units and the paper's relative Improvement, e.g.
    ``Δ +0.008 (+839.1 %)``: the per cent alone misleads when the comparator is near zero."""
    return f"Δ {_num(_diff(a, b, metric), 3, True)} ({_fmt_pct(_gain(a, b, metric))})"


def _gain(a: float, b: float, metric: str) -> float:
    if not (np.isfinite(a) and np.isfinite(b)) or b == 0:
        return np.nan
    return _diff(a, b, metric) / abs(b) * 100.0


def _fmt_pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x:+.1f} %".replace("-", _MINUS)


LEVEL = 0.95  # the verdict's intervals


def mean_interval(mean: float, std: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Student-t interval of a mean over ``n`` seeds (NaN, NaN for n < 2)."""
    from scipy import stats as sps
    if n < 2 or not np.isfinite(std):
        return (np.nan, np.nan)
    h = sps.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return (mean - h, mean + h)


def margin_interval(a: tuple[float, float, int], b: tuple[float, float, int], metric: str,
                    level: float = LEVEL, b_exact: bool = True) -> tuple[float, float, float]:
    """Margin of ``a`` over ``b`` in the metric's units, signed so that positive = ``a`` better, with
    a Welch t-interval over independent seeds: ``a``, ``b`` are (mean, std, n). ``b_exact``: a comparator
    without a seed-dependent part (the Market Index) counts as exact when run once; a model run with one
    seed does not (``b_exact=False``: no interval). Returns (margin, low, high); low/high NaN when there
    is no interval (``a`` with fewer than 2 seeds, or an inexact ``b`` with fewer than 2)."""
    from scipy import stats as sps
    sign = -1.0 if _better(metric) == "down" else 1.0
    (ma, sa, na), (mb, sb, nb) = a, b
    d = sign * (ma - mb)
    if na < 2 or not np.isfinite(sa) or (not b_exact and (nb < 2 or not np.isfinite(sb))):
        return (d, np.nan, np.nan)
    va = sa ** 2 / na
    vb = sb ** 2 / nb if (nb >= 2 and np.isfinite(sb)) else 0.0
    se = math.sqrt(va + vb)
    if se == 0:
        return (d, d, d)
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + (vb ** 2 / (nb - 1) if vb > 0 else 0.0))
    h = sps.t.ppf(0.5 + level / 2, df) * se
    return (d, d - h, d + h)


def _fmt_interval(lo: float, hi: float) -> str:
    return "–" if not (np.isfinite(lo) and np.isfinite(hi)) else f"[{_num(lo, 3, True)}, {_num(hi, 3, True)}]"


def _check_dataset(claim: Claim, ds: str, r: pd.DataFrame, tasks, conventions, profiles) -> dict:
    """One claim on one dataset: the paper's side always, ours when the claim's model was run."""
    paper = _paper_rows(claim.table, ds)
    pv = float(paper.loc[claim.model, claim.metric])
    m = _means(r, claim.table, ds, claim.metric, tasks, conventions)
    prof = _pick_profile(m, claim.model, profiles)
    here = m[(m["profile"] == prof) | (m["profile"] == "")] if prof is not None else m.iloc[0:0]
    ours = here.groupby("model")["mean"].mean()
    out = {"dataset": ds, "paper_value": pv, "run": claim.model in ours.index}
    if out["run"]:
        row = here[here["model"] == claim.model].iloc[0]
        out.update(ours_value=float(ours[claim.model]), ours_std=float(row["std"]), n=int(row["n"]),
                   profile=prof)
        out["ours_ci"] = mean_interval(out["ours_value"], out["ours_std"], out["n"])
    if claim.kind == "value":
        out["paper_pm"] = float(reported(claim.table, ds).set_index(["model", "metric"])
                                .loc[(claim.model, claim.metric), "pm"])
        if out["run"]:
            out["status"] = "yes" if abs(out["ours_value"] - pv) <= out["paper_pm"] else "no"
        return out
    against = list(claim.against) if claim.against else paper_baselines(claim.table)
    pa = paper.reindex(against)[claim.metric].dropna()
    p_best = pa.idxmin() if _better(claim.metric) == "down" else pa.idxmax()
    out.update(paper_best=p_best, paper_best_value=float(pa[p_best]),
               paper_gain=_gain(pv, float(pa[p_best]), claim.metric), n_against=len(against))
    if not out["run"]:
        return out
    oa = ours.reindex(against).dropna()
    out["n_run"] = len(oa)
    if oa.empty:
        out["status"] = "not run yet"
        return out
    o_best = oa.idxmin() if _better(claim.metric) == "down" else oa.idxmax()
    beats = all(_better_than(out["ours_value"], float(v), claim.metric) for v in oa)
    b = here[here["model"] == o_best].iloc[0]
    margin = margin_interval((out["ours_value"], out["ours_std"], out["n"]),
                             (float(b["mean"]), float(b["std"]), int(b["n"])), claim.metric,
                             b_exact=o_best in REFERENCE_ROWS)
    status = "yes" if beats and len(oa) == len(against) else "incomplete" if beats else "no"
    # with enough seeds, "yes" needs the margin over the best comparator to exclude zero
    if status == "yes" and out["n"] >= MIN_SEEDS:
        if not np.isfinite(margin[1]):
            status = f"yes ({o_best}: {int(b['n'])} seed, untested)"
        elif margin[1] <= 0:
            status = "ahead, not significant"
    out.update(ours_best=o_best, ours_best_value=float(oa[o_best]),
               ours_gain=_gain(out["ours_value"], float(oa[o_best]), claim.metric),
               margin=margin, status=status)
    return out


def _check_claim(claim: Claim, r: pd.DataFrame, tasks, conventions, profiles) -> dict:
    recs = [_check_dataset(claim, ds, r, tasks, conventions, profiles) for ds in claim.datasets]
    run = [x for x in recs if x["run"] and x.get("status", "not run yet") != "not run yet"]
    runs = "; ".join(dict.fromkeys(f"{x['profile'] or '?'}, {x['n']} seed(s)" for x in run)) or "–"
    row = {"claim": claim.text}
    if len(recs) == 1:
        x = recs[0]
        if claim.kind == "value":
            row["paper"] = f"{_num(x['paper_value'])} ± {_num(x['paper_pm'])}"
            if run:
                sd = f" ± {_num(x['ours_std'])}" if np.isfinite(x["ours_std"]) else ""
                ratio = (f", {x['ours_value'] / x['paper_value']:.0%} of the paper's"
                         if x["paper_value"] > 0 and x["ours_value"] > 0 else "")
                row.update(ours=f"{_num(x['ours_value'])}{sd}",
                           how=f"Δ {_num(x['ours_value'] - x['paper_value'], 3, True)}{ratio}",
                           ci=_fmt_interval(*x["ours_ci"]))
        else:
            row["paper"] = (f"{_num(x['paper_value'])} vs {x['paper_best']} {_num(x['paper_best_value'])} "
                            f"({_fmt_pct(x['paper_gain'])})")
            if run:
                part = f"; {x['n_run']}/{x['n_against']} run" if x["n_run"] < x["n_against"] else ""
                row.update(ours=f"{_num(x['ours_value'])} vs {x['ours_best']} {_num(x['ours_best_value'])}"
                                f" ({_fmt_pct(x['ours_gain'])}){part}",
                           how=(f"{_fmt_margin(x['ours_value'], x['ours_best_value'], claim.metric)}; paper "
                                f"{_fmt_margin(x['paper_value'], x['paper_best_value'], claim.metric)}"),
                           ci=_fmt_interval(*x["margin"][1:]))
        row["replicated"] = run[0]["status"] if run else "not run yet"
        if x["run"] and not run:
            row["ours"] = f"{_num(x['ours_value'])}, no comparator run yet"
    else:  # several datasets: count where the claim holds
        n = len(recs)
        if claim.kind == "value":
            row["paper"] = "; ".join(f"{x['dataset']} {_num(x['paper_value'])}" for x in recs)
            holds_paper = n
        else:
            holds_paper = sum(x["paper_gain"] > 0 for x in recs)
            gains = [x["paper_gain"] for x in recs]
            row["paper"] = f"{holds_paper}/{n} (margins {_fmt_pct(min(gains))} to {_fmt_pct(max(gains))})"
        if run:
            yes = [x["dataset"] for x in run if x["status"] == "yes"]
            row["ours"] = f"{len(yes)}/{n}" + (f": {', '.join(yes)}" if yes else "")
            if claim.kind != "value":
                row["how"] = "; ".join(f"{x['dataset']} {_fmt_pct(x['ours_gain'])}" for x in run)
                if any(np.isfinite(x["margin"][1]) for x in run):
                    row["ci"] = "; ".join(f"{x['dataset']} {_fmt_interval(*x['margin'][1:])}" for x in run)
            if len(run) < n:
                row["ours"] += f" ({n - len(run)} not run)"
            row["replicated"] = ("yes" if len(yes) == n else
                                 "no" if not yes and all(x["status"] == "no" for x in run) else
                                 f"partly ({len(yes)}/{n})")
        else:
            row["replicated"] = "not run yet"
    return {"claim": row["claim"], "paper": row["paper"], "ours": row.get("ours", "–"),
            "replicated": row["replicated"], "by how much": row.get("how", "–"),
            "95% interval": row.get("ci", "–"), "runs": runs}


def verdict(results: pd.DataFrame | None, claims: Sequence[Claim] | None = None, protocol: str = "clean",
            split: str = "test", options: str | None = None, profiles: Sequence[str] = PROFILE_ORDER,
            tasks: dict | None = None, conventions: dict | None = None) -> pd.DataFrame:
    """One row per paper claim: what the paper printed, what we measured, replicated or not, by how much.

    ``results``: the long results frame of ``storm_lib.run.load_results`` (columns task, universe, model,
    protocol, profile, seed, options, split, convention, metric, value), or None / empty: then every
    claim reads "not run yet". Rows are filtered to ``protocol``, ``split`` and default ``options``
    (empty, ``{}`` or ``default``; pass a string to select other options); a missing value in a filter
    column matches anything (deterministic rows such as the Market Index may carry no profile).
    Per claim, the profile is the first of ``profiles`` in which the claim's model was run, and every
    comparator comes from that profile. Our numbers are means over seeds; ``runs`` says which
    profile and how many seeds.

    ``replicated``: ``yes``; ``no``; ``incomplete`` (STORM ahead of the comparators run so far, but not
    all were run); ``partly (k/n)`` for multi-dataset claims; ``not run yet``. For ``value`` claims
    "yes" means our mean lies within the paper's ± — a range over 10 runs, not a confidence interval.
    With fewer than :data:`MIN_SEEDS` seeds, ``yes`` / ``no`` carry "(k seeds, untested)": a point
    estimate, no statement of significance (the notebooks give bootstrap intervals and paired tests).
    ``by how much``: for ``beats`` claims, STORM's margin over the best comparator in the metric's units
    and in the paper's Improvement formula (per cent; positive = better), then the paper's own margin.
    ``95% interval``: for ``value`` claims the Student-t interval of our mean over seeds; for ``beats``
    claims the Welch t-interval of STORM's margin over the best comparator in the metric's units
    (positive = STORM better; :func:`margin_interval`). With at least :data:`MIN_SEEDS` seeds a
    ``beats`` claim reads ``yes`` only when that interval excludes zero, else ``ahead, not significant``.
    These intervals cover training randomness (seeds) on the one fixed test period; the notebooks add
    day-level block-bootstrap intervals and paired tests (``storm_lib.stats``).
    """
    claims = default_claims() if claims is None else list(claims)
    tasks = {**DEFAULT_TASKS, **(tasks or {})}
    conventions = {**DEFAULT_CONVENTIONS, **(conventions or {})}
    r = _select_results(results, protocol, split, options)
    rows = [_check_claim(c, r, tasks, conventions, tuple(profiles)) for c in claims]
    for row in rows:  # a "beats" or "value" verdict on one or two seeds is a point estimate, say so
        seeds = [int(k) for k in re.findall(r"(\d+) seed", str(row["runs"]))]
        if seeds and min(seeds) < MIN_SEEDS and row["replicated"] in ("yes", "no"):
            row["replicated"] += f" ({min(seeds)} seed{'s' if min(seeds) > 1 else ''}, untested)"
    out = pd.DataFrame(rows)
    out.attrs.update(protocol=protocol, split=split, n_rows=len(r))
    return out


def verdict_markdown(v: pd.DataFrame, note: str = "") -> str:
    """The verdict as a MyST/GitHub pipe table with a one-line header."""
    head = (f"Protocol `{v.attrs.get('protocol', '?')}`, split `{v.attrs.get('split', '?')}`; "
            f"{v.attrs.get('n_rows', 0):,} result rows used.")
    return (head + (" " + note if note else "") + "\n\n" + markdown_table(v, index=False))


# --------------------------------------------------------------------------- command line


def load_results_frame(path: str | Path | None) -> tuple[pd.DataFrame, str]:
    """The long results frame from a .csv/.parquet file, or from a results directory through
    ``storm_lib.run.load_results``. Never raises for a missing runner or directory: returns an empty
    frame and a note saying why."""
    if path is not None and Path(path).is_file():
        p = Path(path)
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
        return df, f"Results read from `{p.name}`."
    try:
        from .run import load_results  # written by the runner issue
    except ImportError:
        return pd.DataFrame(columns=list(RESULT_COLUMNS)), "No results yet: `storm_lib.run` is not available."
    if path is not None and not Path(path).exists():
        return pd.DataFrame(columns=list(RESULT_COLUMNS)), f"No results yet: `{Path(path).name}/` does not exist."
    df = load_results(path) if path is not None else load_results()
    if df is None or len(df) == 0:
        return pd.DataFrame(columns=list(RESULT_COLUMNS)), "No results yet: the results directory holds no run."
    return df, f"Results loaded by `storm_lib.run.load_results` ({len(df):,} rows)."


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


# --------------------------------------------------------------------------- compute record

_SWEEP_OPTIONS = frozenset({"codebook_size"})


def run_purpose(task: str, protocol: str, options: str) -> str:
    """Which part of the book a finished run feeds: the main tables, the Figure 3 codebook sweep or the
    protocol audit (any other protocol or option: the audit switches of ``storm_lib.audit``)."""
    text = "" if options is None or (isinstance(options, float) and options != options) else str(options)
    opts = {part.partition("=")[0].strip() for part in text.split(",") if part.strip()}
    if task == "trading":
        return "Table 3 (trading)" if protocol == "clean" and not opts else "other"
    if protocol == "clean" and not opts:
        return "Tables 2, 4, ablations"
    if protocol == "clean" and set(opts) <= _SWEEP_OPTIONS:
        return "Figure 3 (codebook sweep)"
    return "audit"


def compute_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Compute spent per book part, universe and model from :func:`storm_lib.run.list_runs`: runs,
    seeds, total and median seconds per run: ``compute_seconds`` (wall time including the fits of
    interrupted attempts, :func:`storm_lib.run.compute_seconds`) where the frame has it, else ``wall_seconds``."""
    cols = ["part", "universe", "model", "runs", "seeds", "total_s", "median_s"]
    if runs is None or runs.empty:
        return pd.DataFrame(columns=cols)
    secs = runs["compute_seconds"] if "compute_seconds" in runs else runs["wall_seconds"]
    r = runs.assign(part=[run_purpose(t, p, o) for t, p, o in
                          zip(runs["task"], runs["protocol"], runs["options"].fillna(""))],
                    seconds=pd.to_numeric(secs, errors="coerce"))
    g = r.groupby(["part", "universe", "model"])
    out = pd.DataFrame({"runs": g.size(), "seeds": g["seed"].nunique(), "total_s": g["seconds"].sum(),
                        "median_s": g["seconds"].median()}).reset_index()
    return out[cols]


def _fmt_duration(sec: float) -> str:
    if not np.isfinite(sec):
        return "–"
    return f"{sec:,.0f} s" if sec < 120 else f"{sec / 60:,.1f} min" if sec < 7200 else f"{sec / 3600:,.1f} h"


def compute_markdown(runs: pd.DataFrame) -> str:
    """The reproducibility page's compute record: one line per book part and universe, the models in
    it, then the total."""
    c = compute_summary(runs)
    if c.empty:
        return "No finished runs in the results directory yet."
    rows = []
    for (part, uni), g in c.groupby(["part", "universe"], sort=True):
        per_model = ", ".join(f"{model_label(m)} {_fmt_duration(t)}" for m, t in
                              zip(g["model"], g["total_s"]))
        rows.append({"part": part, "universe": uni, "runs": int(g["runs"].sum()),
                     "seeds": f"{int(g['seeds'].min())}–{int(g['seeds'].max())}"
                     if g["seeds"].min() != g["seeds"].max() else str(int(g["seeds"].min())),
                     "wall time": _fmt_duration(float(g["total_s"].sum())), "by model": per_model})
    rows.append({"part": "**total**", "universe": "", "runs": int(c["runs"].sum()), "seeds": "",
                 "wall time": _fmt_duration(float(c["total_s"].sum())), "by model": ""})
    return markdown_table(pd.DataFrame(rows), index=False)


def _list_runs(path) -> pd.DataFrame:
    """Finished runs of a results directory (empty for a file or a missing directory)."""
    if path is None or not Path(path).is_dir():
        return pd.DataFrame()
    from storm_lib import run
    return run.list_runs(path)


def _stamp(cmd: str) -> str:
    return f"<!-- generated by `{cmd}` on {_dt.date.today().isoformat()}; do not edit -->\n"


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storm_lib.report", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pv = sub.add_parser("verdict", help="write the verdict table (markdown)")
    pv.add_argument("--out", help="file to write (default: stdout)")
    pb = sub.add_parser("book", help="write every generated include of the book into a directory")
    pb.add_argument("--out-dir", required=True)
    for p in (pv, pb):
        p.add_argument("--results", default="results", help="results directory or a .csv/.parquet file")
        p.add_argument("--protocol", default="clean")
        p.add_argument("--split", default="test")
    sub.add_parser("improvement-check", help="print the paper's Improvement row against its own rows")
    args = ap.parse_args(list(argv) if argv is not None else None)

    if args.cmd == "improvement-check":
        print(improvement_check().to_string(index=False))
        return 0
    results, note = load_results_frame(args.results)
    v = verdict(results, protocol=args.protocol, split=args.split)
    cmd = f"python -m storm_lib.report {args.cmd} --protocol {args.protocol} --split {args.split}"
    verdict_md = _stamp(cmd) + verdict_markdown(v, note)
    if args.cmd == "verdict":
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(verdict_md, encoding="utf-8")
        else:
            sys.stdout.write(verdict_md)
        return 0
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verdict.md").write_text(verdict_md, encoding="utf-8")
    (out / "improvement_check.md").write_text(_stamp(cmd) + improvement_check_markdown(), encoding="utf-8")
    (out / "compute.md").write_text(_stamp(cmd) + compute_markdown(_list_runs(args.results)), encoding="utf-8")
    print(f"wrote verdict.md, improvement_check.md and compute.md to {out} ({note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

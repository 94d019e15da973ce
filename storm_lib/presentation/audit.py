"""The protocol-audit page: the switches, their runs, tables, waterfalls and generated text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..run import RunSpec
from . import paper as report
from .context import Context, NotebookStop, is_all, load_metrics
from .fmt import TABLE_CSS, _fmt, _num
from .verdict import mean_interval

# --------------------------------------------------------------------------- protocol audit

AUDIT_METRICS = ("APY", "CW", "ASR", "MDD", "RankIC")
WATERFALL_METRICS = ("APY", "ASR", "RankIC")


def audit_specs(ctx: Context) -> list[RunSpec]:
    """The audit runs of every (universe, model) of the notebook (:func:`storm_lib.audit.audit_specs`)."""
    from .. import audit

    out = []
    for u in ctx.universes:
        for model in ctx.models:
            # seeds="all": the seeds audited so far, read from the runs of switch (a) (protocol paper)
            seeds = ctx.seeds_for("portfolio", u, model, protocol="paper") if is_all(ctx.seeds) else ctx.seeds
            try:
                out += audit.audit_specs(model, u, seeds, ctx.profile)
            except ValueError as exc:
                raise NotebookStop(f"audit of {model} on {u}: {exc}") from None
    return list(dict.fromkeys(out))


def audit_frame(plan: pd.DataFrame, metrics=AUDIT_METRICS) -> pd.DataFrame:
    """:func:`storm_lib.audit.audit_table` of the plan's finished runs (test split)."""
    from .. import audit

    return audit.audit_table(load_metrics(plan), metrics=list(metrics))


def _step_label(step: str, letters: dict) -> str:
    name = step.lstrip("+")
    if step == "clean":
        return "clean"
    return f"+ ({letters[name]}) {name}" if step.startswith("+") else f"({letters[name]}) {name}"


def audit_steps(model: str, universe: str, seeds, profile: str) -> pd.DataFrame:
    """The audit's steps of ``model`` (one row per step): step, kind, label (``(a) test_selection`` alone,
    ``+ (a) test_selection`` cumulative), convention."""
    from .. import audit

    plan = audit.audit_plan(model, universe, [0], profile)   # the steps do not depend on the seeds
    steps = plan.drop_duplicates("step")[["step", "kind", "convention"]].reset_index(drop=True)
    letters = {k: s.letter for k, s in audit.SWITCHES.items()}
    steps["label"] = [_step_label(s, letters) for s in steps["step"]]
    return steps


def audit_summary(at: pd.DataFrame, universe: str, model: str, seeds, profile: str,
                  metrics=AUDIT_METRICS, digits: int = 3, paper: bool = True) -> pd.DataFrame:
    """One model's audit as a table: rows every step (clean, each switch alone, the cumulative steps),
    columns (metric, ``value`` / ``Δ clean``): mean ± std over seeds (n) of the value and of the change
    against the clean baseline of the same seed; ``not run`` where the step's run is missing. With
    ``paper``, the published rows (paper STORM, and the model's own row) follow: mean ± range over 10 runs."""
    steps = audit_steps(model, universe, seeds, profile)
    sel = at[(at["universe"] == universe) & (at["model"] == model)] if len(at) else at
    rows = {}
    for s in steps.itertuples():
        cells = {}
        for metric in metrics:
            g = sel[(sel["step"] == s.step) & (sel["metric"] == metric)] if len(sel) else sel
            for col, name in (("value", "value"), ("delta", "Δ clean")):
                v = g[col].dropna() if len(g) else pd.Series(dtype=float)
                if v.empty:
                    cells[(metric, name)] = "not run" if g.empty else "–"
                    continue
                sd = f" ± {_fmt(v.std(ddof=1), digits)}" if len(v) > 1 else ""
                cells[(metric, name)] = (f"{_fmt(v.mean(), digits)}{sd} (n={len(v)})" if name == "value"
                                         else f"{_num(v.mean(), digits, signed=True)}{sd}")
        rows[(s.kind, s.label, s.convention)] = cells
    if paper:
        for name in dict.fromkeys(["storm", model]):
            pv = paper_values(universe, name)
            if pv:
                rows[("published", f"paper {report.model_label(name)}", "paper")] = {
                    **{(k, "value"): (f"{_fmt(pv[k][0], digits)} ± {_fmt(pv[k][1], digits)}" if k in pv else "–")
                       for k in metrics}, **{(k, "Δ clean"): "" for k in metrics}}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["kind", "step", "convention"])
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["metric", ""])
    return out


def audit_means(at: pd.DataFrame, universe: str, model: str, metric: str, kind: str = "cumulative") -> pd.Series:
    """Mean over seeds of ``metric`` per step: clean first, then the steps of ``kind`` in audit order."""
    if at.empty:
        return pd.Series(dtype=float)
    sel = at[(at["universe"] == universe) & (at["model"] == model) & (at["metric"] == metric)
             & at["kind"].isin(["baseline", kind])]
    if sel.empty:
        return pd.Series(dtype=float)
    g = sel.groupby(["step_order", "step"])["value"].mean().sort_index()
    return pd.Series(g.to_numpy(), index=g.index.get_level_values("step"), name=metric)


def paper_values(universe: str, model: str) -> dict:
    """The paper's published (mean, ± range) of ``model`` for APY, CW, ASR, MDD (Tables 1/2) and RankIC
    (Table 4) on ``universe``; {} without published numbers."""
    out = {}
    label = report.model_label(model)
    for table in ("portfolio", "rankic"):
        try:
            rep = report.reported(table, universe)
        except ValueError:
            continue
        for r in rep[rep["model"] == label].itertuples():
            out[r.metric] = (r.value, r.pm)
    return out


def _reached(value: float, paper: tuple, metric: str) -> str:
    """``exceeded`` (beyond the paper's ± range in the metric's good direction), ``reached`` (inside the
    range) or ``not reached``."""
    mean, pm = paper
    pm = 0.0 if not np.isfinite(pm) else pm
    sign = -1.0 if metric in report.LOWER_IS_BETTER else 1.0
    if sign * (value - mean) > pm:
        return "exceeded"
    return "reached" if sign * (value - mean) >= -pm else "not reached"


def _delta_ci(row) -> str:
    """A change over seeds as text: mean, and with 2+ seeds its 95% t-interval (:func:`report.mean_interval`)."""
    text = _num(row["mean"], 3, signed=True)
    lo, hi = mean_interval(row["mean"], row["std"], int(row["n"]))
    if np.isfinite(lo):
        text += f", 95% CI [{_num(lo, 3, signed=True)}, {_num(hi, 3, signed=True)}]"
    return text


def audit_text(at: pd.DataFrame, universe: str, model: str, metrics=WATERFALL_METRICS) -> str:
    """A generated paragraph for one model: with every switch on (the last cumulative step that ran),
    does it reach the paper's published STORM numbers (within or beyond the paper's ± range, in the
    metric's direction), and which switches move each metric most (alone, and along the cumulative
    path; with 2+ seeds a switch's change carries its 95% t-interval over seeds, each seed's change
    measured against its own clean run). Computed from ``at`` (:func:`audit_frame`), not written by hand."""
    label = report.model_label(model)
    sel = at[(at["universe"] == universe) & (at["model"] == model)] if len(at) else at
    if sel.empty:
        return f"**{label}, {universe.upper()}**: no finished audit run yet: nothing to read."
    paper = paper_values(universe, "storm")
    parts, reach = [], []
    for metric in metrics:
        cum = audit_means(sel, universe, model, metric)
        if cum.empty or "clean" not in cum.index:
            continue
        last = cum.index[-1]
        text = f"{metric} {_fmt(cum['clean'])} clean → {_fmt(cum.iloc[-1])} at `{last}`"
        if metric in paper:
            verdict = _reached(cum.iloc[-1], paper[metric], metric)
            reach.append(verdict != "not reached")
            text += f" (paper STORM {_fmt(paper[metric][0])} ± {_fmt(paper[metric][1])}: {verdict})"
        g = sel[(sel["metric"] == metric) & (sel["kind"] == "alone")].groupby("step")["delta"]
        alone = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).dropna(subset=["mean"])
        if len(alone):
            top = alone["mean"].abs().sort_values(ascending=False).index[:2]
            text += "; alone, the largest moves are " + ", ".join(
                f"`{s}` ({_delta_ci(alone.loc[s])})" for s in top)
        steps = cum.diff().dropna()
        if len(steps):
            s = steps.abs().idxmax()
            text += f"; along the cumulative path, `{s}` ({_num(steps[s], 3, signed=True)})"
        parts.append(f"- {text}.")
    if not parts:
        return f"**{label}, {universe.upper()}**: the clean baseline run is missing: no deltas to read."
    final = audit_steps(model, universe, [0], "cpu")["step"].iloc[-1]   # the steps do not depend on seeds/profile
    full = (sel["step"] == final).any()
    head = (f"**{label}, {universe.upper()}**: with " + ("every switch on" if full else
            "the switches that ran so far (some cumulative steps are missing)") + ", ")
    if reach:
        head += (f"the paper's published STORM values are reached (within the paper's ± range or beyond it) for "
                 f"{sum(reach)} of {len(reach)} metrics "
                 f"({', '.join(k for k, ok in zip([k for k in metrics if k in paper], reach) if ok) or 'none'}); "
                 "from (c) on the steps are read in the official convention, the paper's ASR is APY/AVO. ")
    n = sel.groupby("step")["seed"].nunique().max()
    return head + f"Means over {int(n)} seed(s):\n\n" + "\n".join(parts)


def missing_text(plan: pd.DataFrame) -> str:
    """Markdown naming the plan's runs that are not finished (with the command that runs each)."""
    todo = plan[~plan["finished"].astype(bool)] if len(plan) else plan
    if todo.empty:
        return f"All {len(plan)} audit runs are finished."
    lines = [f"**{len(todo)} of {len(plan)} audit runs are missing** (left out of the tables and charts; "
             "rerun with `-p run_missing True`, or run them with):", "", "```bash"]
    lines += [s.command() for s in todo["spec"]]
    return "\n".join(lines + ["```"])


def audit_styled(at: pd.DataFrame, universe: str, model: str, seeds, profile: str):
    """:func:`audit_summary` styled for a notebook, with a caption naming what the cells are."""
    table = audit_summary(at, universe, model, seeds, profile)
    return table.style.set_table_styles(TABLE_CSS, overwrite=False).set_caption(
        f"{universe.upper()}, {report.model_label(model)}, test split: mean ± std over seeds (n); "
        "Δ clean = value − "
        "the clean run of the same seed; column convention = the metric convention the step is read with "
        "(official from (c) on); published = the paper's mean ± range over 10 runs (its ASR is APY/AVO)")


def audit_waterfall(at: pd.DataFrame, universe: str, model: str, metrics=WATERFALL_METRICS) -> dict:
    """metric -> :func:`audit_means` of the cumulative path (the input of :func:`storm_lib.plots.waterfall`)."""
    return {k: audit_means(at, universe, model, k) for k in metrics}


def audit_paper_lines(universe: str, model: str, metrics=WATERFALL_METRICS) -> dict:
    """metric -> [(label, published mean, ± range)]: paper STORM first, then the model's own row."""
    out: dict = {}
    for name in dict.fromkeys(["storm", model]):
        for k, (v, pm) in paper_values(universe, name).items():
            if k in metrics:
                out.setdefault(k, []).append((f"paper {report.model_label(name)}", v, pm))
    return out


def switch_table(styled: bool = False):
    """The audit switches (:data:`storm_lib.audit.SWITCHES`): what the official code does, what changes
    in a run, how it is turned on, the models it applies to and the official-code sections."""
    from .. import audit

    rows = {}
    for name, sw in audit.SWITCHES.items():
        how = ([f"protocol {sw.protocol}"] if sw.protocol else []) + [f"{k}={v}" for k, v in sw.options]
        how += [f"read with convention {sw.convention}"] if sw.convention else []
        rows[f"({sw.letter}) {name}"] = {"official code": sw.description, "what changes": sw.changes,
                                         "switch": ", ".join(how), "models": ", ".join(sw.models or ["all"]),
                                         "OC": ", ".join(sw.refs)}
    out = pd.DataFrame.from_dict(rows, orient="index").rename_axis("switch")
    if not styled:
        return out
    return out.style.set_properties(**{"text-align": "left"}).set_table_styles(TABLE_CSS, overwrite=False)

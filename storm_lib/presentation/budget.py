"""The "Training budget" page (issue 18): the study of :mod:`storm_lib.budget` as tables and text."""

from __future__ import annotations

import math

import pandas as pd

from .. import budget as budget_mod
from .. import schedule
from .context import Context, as_ints, is_all
from .fmt import _fmt_duration
from .paper import model_label


def budget_specs(ctx: Context) -> list:
    """The study's runs for the page's universes and models (:func:`storm_lib.budget.specs`), at the
    page's profile and protocol. ``seeds="all"``: :data:`storm_lib.budget.SEEDS` plus any other seed with a
    finished budget run."""
    seeds = ctx.params.get("seeds")
    if is_all(seeds):
        found = budget_mod.load(ctx.params.get("results_dir"), protocol=ctx.protocol, profile=ctx.profile)
        seeds = sorted(set(budget_mod.SEEDS) | {int(s) for s in found["seed"]})
    else:
        seeds = as_ints(seeds)
    return budget_mod.specs(ctx.universes, ctx.models, seeds, profile=ctx.profile, protocol=ctx.protocol)


def budget_plan(ctx: Context) -> pd.DataFrame:
    """:meth:`Context.ensure` of :func:`budget_specs` without the run-by-run listing (80 runs would fill
    the page); :func:`budget_missing_text` says what is missing, compactly."""
    return ctx.ensure(budget_specs(ctx), echo=lambda *a, **k: None)


def budget_extensions_text(ctx: Context) -> str:
    """One line naming the grid's extra budgets (:data:`storm_lib.budget.EXTENSIONS`), or "none"."""
    items = [f"{ctx.label(u)} {model_label(m)}: {', '.join(f'{b:,}' for b in bs)} windows"
             for (u, m), bs in budget_mod.EXTENSIONS.items()]
    return f"Extensions of the grid (`budget.EXTENSIONS`): {'; '.join(items) or 'none'}."


def budget_missing_text(plan: pd.DataFrame, timings=None) -> str:
    """How many runs of the grid are finished, the budgets not finished per universe and model, and the
    command that runs them (the resumable grid, smallest budget first). With ``timings``
    (:func:`storm_lib.run.run_timings`), each budget also gets the compute it is expected to need, one
    core (:func:`storm_lib.schedule.estimate_seconds`: from the finished runs of the same model, those on
    this machine's CPU when there are any)."""
    from ..run import cpu_model

    cpu = cpu_model()
    done = int(plan["finished"].sum())
    head = f"{done} of {len(plan)} runs of the grid are finished."
    todo = plan[~plan["finished"]]
    if todo.empty:
        return head
    lines = [head, "", "Not run yet (budget in windows: seeds" + ("; estimated one-core compute" if timings is not None
                                                              else "") + "):", ""]
    total, unknown = 0.0, False
    for (u, m), g in todo.groupby(["universe", "model"], sort=False):
        g = g.assign(budget=[s.options_dict.get(budget_mod.OPTION) for s in g["spec"]])
        parts = []
        for b, gb in g.groupby("budget"):
            part = f"{int(b):,}: {', '.join(str(x) for x in sorted(gb['seed']))}"
            if timings is not None:
                est = [schedule.estimate_seconds(spec, timings, cpu=cpu) for spec in gb["spec"]]
                if any(e is None for e in est):
                    unknown = True
                else:
                    total += sum(est)
                    part += f" (≈ {_fmt_duration(sum(est))})"
            parts.append(part)
        lines.append(f"- {u.upper()} {model_label(m)}: " + "; ".join(parts))
    if timings is not None:
        lines += ["", f"In all about {total / 3600:,.1f} one-core hours"
                      + (" for the budgets with an estimate (a model with no finished run on a universe has none)"
                         if unknown else "") + "."]
    models = " ".join(dict.fromkeys(todo["model"]))
    unis = " ".join(dict.fromkeys(todo["universe"]))
    lines += ["", f"To run them: `python -m storm_lib.budget run --universe {unis} --model {models}` "
                  "(finished runs are skipped; `--dry-run` prints one `storm_lib.run` command per run; "
                  "`--time-limit 2h` starts only what fits; with `--pause-at-limit` a longer run starts too and "
                  "pauses at the limit, checkpointed, for `python -m storm_lib.park save`)."]
    return "\n".join(lines)


def budget_frame(plan: pd.DataFrame, ctx: Context) -> pd.DataFrame:
    """The tidy table of :func:`storm_lib.budget.load`, restricted to the plan's finished runs."""
    runs = budget_mod.load(ctx.params.get("results_dir"), protocol=ctx.protocol, profile=ctx.profile)
    done = set(plan.loc[plan["finished"], "run_dir"].astype(str))
    return runs[runs["run_dir"].isin(done)].reset_index(drop=True)


def _pm(mean, se) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.4f}" + ("" if se is None or math.isnan(se) else f" ± {se:.4f}")


def _duration(s) -> str:
    return "–" if s is None else _fmt_duration(float(s))


def budget_table(summary: pd.DataFrame, universe: str, models=None) -> pd.DataFrame:
    """One row per (model, budget) of ``universe``, every point of the grid (``not run yet`` where no
    seed finished): seeds, windows seen and passes over the training days, validation RankIC at the end
    of training (what the rule reads) and at the selected epoch (biased upward by the selection), test
    RankIC of the selected epoch (mean ± SE over seeds) and at the end of training (runs that recorded it),
    compute per run (mean) and in all."""
    models = list(models) if models is not None else budget_mod.MODELS
    s = summary[summary["universe"] == universe].set_index(["model", "budget"])
    rows = []
    for model in models:
        grid = budget_mod.grid_for(universe, model) if universe in budget_mod.BUDGETS else ()
        budgets = sorted(set(grid) | set(s.loc[model].index if model in s.index.get_level_values(0) else ()))
        for b in budgets:
            key = (model, b)
            if key not in s.index:
                rows.append({"model": model_label(model), "budget (windows)": f"{b:,}", "seeds": 0,
                             "passes": "–", "val RankIC, end of training": "not run yet",
                             "val RankIC, selected epoch": "–", "test RankIC": "not run yet",
                             "test RankIC, end of training": "–",
                             "compute / run": "–", "compute, all seeds": "–"})
                continue
            r = s.loc[key]
            rows.append({"model": model_label(model), "budget (windows)": f"{b:,}", "seeds": int(r["seeds"]),
                         "passes": "–" if math.isnan(r["passes"]) else f"{r['passes']:.2f}",
                         "val RankIC, end of training": _pm(r["val_mean"], r["val_se"]),
                         "val RankIC, selected epoch": _pm(r["val_best_mean"], r["val_best_se"]),
                         "test RankIC": _pm(r["test_mean"], r["test_se"]),
                         "test RankIC, end of training": ("not recorded" if not r["test_end_seeds"] else
                                                          f"{r['test_end_mean']:.4f} ({int(r['test_end_seeds'])} "
                                                          f"seed{'s' if r['test_end_seeds'] > 1 else ''})"),
                         "compute / run": _duration(r["compute_mean_s"]),
                         "compute, all seeds": _duration(r["compute_total_s"])})
    return pd.DataFrame(rows).set_index(["model", "budget (windows)"]) if rows else pd.DataFrame()


def budget_choice_table(choice: pd.DataFrame, universe: str, models=None) -> pd.DataFrame:
    """The profile rule's outcome per model of ``universe`` (:func:`storm_lib.budget.choose`), ``not run
    yet`` for a model without two budgets of at least two seeds."""
    models = list(models) if models is not None else budget_mod.MODELS
    c = choice[choice["universe"] == universe].set_index("model")
    rows = []
    for model in models:
        if model not in c.index:
            rows.append({"model": model_label(model), "chosen budget": "–", "best budget": "–",
                         "best val RankIC": "–", "status": "not run yet", "budgets still missing": "all"})
            continue
        r = c.loc[model]
        fmt = (lambda v: "–" if isinstance(v, float) and math.isnan(v) else f"{int(v):,}")
        rows.append({"model": model_label(model), "chosen budget": fmt(r["chosen_budget"]),
                     "best budget": fmt(r["best_budget"]), "best val RankIC": _pm(r["best_val_mean"], r["best_val_se"]),
                     "status": r["status"],
                     "budgets still missing": ", ".join(f"{b:,}" for b in r["missing"]) or "none"})
    return pd.DataFrame(rows).set_index("model")


def budget_text(choice: pd.DataFrame, universe: str, label: str, models=None, timings=None,
                profile: str = "cpu") -> str:
    """One generated sentence per model: the chosen budget and why, or what is missing. With ``timings``
    (:func:`storm_lib.run.run_timings`), an inconclusive model's sentence adds what its next budget would
    cost (:func:`storm_lib.schedule.estimate_seconds`, one core, this machine's CPU where it has runs)."""
    from ..run import RunSpec, cpu_model

    models = list(models) if models is not None else budget_mod.MODELS
    c = choice[choice["universe"] == universe].set_index("model")
    lines = []
    for model in models:
        name = model_label(model)
        if model not in c.index or c.loc[model, "status"] == "not run yet":
            lines.append(f"- **{name}**: not run yet on {label} (needs at least two budgets with two seeds each).")
            continue
        r = c.loc[model]
        where = (f"the best mean validation RankIC at the end of training is at {int(r['best_budget']):,} windows "
                 f"({_pm(r['best_val_mean'], r['best_val_se'])}, mean ± SE over seeds)")
        if str(r["status"]).startswith("still rising"):
            lines.append(f"- **{name}**: {where}, and every smaller budget is more than one SE below it; "
                         f"larger budgets are not run yet, so no budget is chosen.")
        elif str(r["status"]).startswith("inconclusive"):
            cost = ""
            if timings is not None and not math.isnan(r.get("needs_windows", math.nan)):
                spec = RunSpec.make("portfolio", universe, model, profile=profile,
                                    options={budget_mod.OPTION: int(r["needs_windows"])})
                est = schedule.estimate_seconds(spec, timings, cpu=cpu_model())
                if est is not None:
                    cost = (f" One run of {int(r['needs_windows']):,} windows would take about "
                            f"{est / 3600:,.1f} one-core hours per seed (estimated from its finished runs), "
                            f"{est * len(budget_mod.SEEDS) / 3600:,.1f} for the study's {len(budget_mod.SEEDS)} seeds.")
            lines.append(f"- **{name}**: {where}, and every smaller budget is more than one SE below it: the "
                         f"curve is still rising at the largest budget run. **{r['status']}**.{cost}")
        else:
            extra = (f" Budgets not yet run with two seeds: {', '.join(f'{b:,}' for b in r['missing'])}."
                     if r["missing"] else "")
            lines.append(f"- **{name}**: {where}; the smallest budget within one SE of it is "
                         f"**{int(r['chosen_budget']):,} windows**.{extra}")
    return "\n".join(lines)


def agent_budget_table(summary: pd.DataFrame, choice: pd.DataFrame | None = None) -> pd.DataFrame:
    """The RL agents' study (:func:`storm_lib.budget.summarise_agents`), one row per (agent, steps), every
    planned point (``not run yet`` where none finished): seeds, validation and test Sharpe ratio (mean
    over the five stocks per seed, then mean ± SE over seeds), mean trades per stock on the test span,
    the stock runs that only hold or are never long, compute per run, and the rule's status per agent."""
    s = summary.set_index(["model", "budget"]) if len(summary) else summary
    status = ({} if choice is None or choice.empty else dict(zip(choice["model"], choice["status"])))
    rows = []
    grid = budget_mod.agent_grid()
    for model in budget_mod.AGENT_METHODS:
        for b in grid[(budget_mod.AGENT_UNIVERSE, model)]:
            row = {"agent": model_label(model) + (" (PPO)" if model.startswith("storm") else ""),
                   "env steps": f"{b:,}"}
            if len(s) and (model, b) in s.index:
                r = s.loc[(model, b)]
                row.update({"seeds": int(r["seeds"]), "val ASR": _pm(r["val_mean"], r["val_se"]),
                            "test ASR": _pm(r["test_mean"], r["test_se"]), "trades / stock": f"{r['trades']:.1f}",
                            "only hold": f"{int(r['holds'])}/{int(r['stock runs'])}",
                            "never long": f"{int(r['never long'])}/{int(r['stock runs'])}",
                            "compute / run": _duration(r["compute_mean_s"])})
            else:
                row.update({"seeds": 0, "val ASR": "not run yet", "test ASR": "–", "trades / stock": "–",
                            "only hold": "–", "never long": "–", "compute / run": "–"})
            row["rule"] = status.get(model, "not run yet")
            rows.append(row)
    return pd.DataFrame(rows).set_index(["agent", "env steps"])

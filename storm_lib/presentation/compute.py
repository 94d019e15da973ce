"""The compute record of the reproducibility page: what each book part cost, from the runs' run.json."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..profiles import BUDGET_OPTION
from .fmt import _fmt_duration, markdown_table
from .paper import model_label

# --------------------------------------------------------------------------- compute record

_SWEEP_OPTIONS = frozenset({"codebook_size"})
_BUDGET_OPTIONS = frozenset({BUDGET_OPTION})
_BUDGET_EXTRA = frozenset({"steps_per_epoch"})  # Profile.budget_options (SP500's validation interval)


def run_purpose(task: str, protocol: str, options: str) -> str:
    """Which part of the book a finished run feeds: the main tables, the Figure 3 codebook sweep, the
    training-budget study or the protocol audit (any other protocol or option: the audit switches of
    ``storm_lib.audit``)."""
    text = "" if options is None or (isinstance(options, float) and options != options) else str(options)
    opts = {part.partition("=")[0].strip() for part in text.split(",") if part.strip()}
    if task == "trading":
        return "Table 3 (trading)" if protocol == "clean" and not opts else "other"
    if protocol == "clean" and not opts:
        return "Tables 2, 4, ablations"
    if protocol == "clean" and set(opts) <= _SWEEP_OPTIONS:
        return "Figure 3 (codebook sweep)"
    if protocol == "clean" and _BUDGET_OPTIONS <= set(opts) <= _BUDGET_OPTIONS | _BUDGET_EXTRA:
        return "Training budget"
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



def compute_markdown(runs: pd.DataFrame) -> str:
    """The reproducibility page's compute record: one line per book part and universe, the models in
    it, then one line for the superseded runs (earlier model versions or training budgets, on disk but on
    no page; :func:`storm_lib.run.superseded_runs`) and the total spent."""
    if runs is not None and not runs.empty and "superseded" in runs:
        old = runs["superseded"].fillna(False).astype(bool)
        runs, superseded = runs[~old], runs[old]
    else:
        superseded = pd.DataFrame()
    c = compute_summary(runs)
    old_c = compute_summary(superseded)
    if c.empty and old_c.empty:
        return "No finished runs in the results directory yet."
    rows = []
    for (part, uni), g in c.groupby(["part", "universe"], sort=True):
        per_model = ", ".join(f"{model_label(m)} {_fmt_duration(t)}" for m, t in
                              zip(g["model"], g["total_s"]))
        rows.append({"part": part, "universe": uni, "runs": int(g["runs"].sum()),
                     "seeds": f"{int(g['seeds'].min())}–{int(g['seeds'].max())}"
                     if g["seeds"].min() != g["seeds"].max() else str(int(g["seeds"].min())),
                     "wall time": _fmt_duration(float(g["total_s"].sum())), "by model": per_model})
    if not old_c.empty:
        rows.append({"part": "superseded runs (earlier model versions or budgets; on no page)", "universe": "",
                     "runs": int(old_c["runs"].sum()), "seeds": "",
                     "wall time": _fmt_duration(float(old_c["total_s"].sum())), "by model": ""})
    rows.append({"part": "**total**", "universe": "", "runs": int(c["runs"].sum() + old_c["runs"].sum()),
                 "seeds": "", "wall time": _fmt_duration(float(c["total_s"].sum() + old_c["total_s"].sum())),
                 "by model": ""})
    text = markdown_table(pd.DataFrame(rows), index=False)
    adopted = int(runs["adopted_from"].notna().sum()) if "adopted_from" in runs else 0
    if adopted:
        text += (f"\n\n{adopted} of these runs are copies of budget-study runs with the same training (the "
                 "profile's chosen budget): their training is counted once, under Training budget.")
    return text


def _list_runs(path) -> pd.DataFrame:
    """Finished runs of a results directory (empty for a file or a missing directory)."""
    if path is None or not Path(path).is_dir():
        return pd.DataFrame()
    from .. import run
    return run.list_runs(path)



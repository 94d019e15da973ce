"""Figure 3: STORM's codebook usage and the codebook-size sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..profiles import get_profile
from ..run import RunSpec
from .context import CODEBOOK_SIZES, IC_METRICS, STORM_MODELS, Context, NotebookStop, as_ints, as_list, select
from .paper import model_label
from .tables import _tables

#: Figure 3b of the paper: RankIC / RankICIR of STORM against the codebook size K. Read by eye from the
#: figure (about ±0.001 RankIC, ±0.005 RankICIR); dataset not stated. Source: reference/paper.md §9
#: (shared/reference/paper.md). The K = 512 bar matches neither Table 4 STORM row exactly.
PAPER_FIG3B = pd.DataFrame(
    {"RankIC": [0.051, 0.053, 0.063, 0.056, 0.050], "RankICIR": [0.537, 0.542, 0.621, 0.573, 0.551]},
    index=pd.Index(CODEBOOK_SIZES, name="codebook_size"),
)


def codebook_size_of(options: str, profile: str) -> int:
    """The codebook size K of a STORM run: its ``codebook_size`` option, else the profile's default."""
    for part in (options or "").split(","):
        k, _, v = part.partition("=")
        if k.strip() == "codebook_size":
            return int(v)
    return int(get_profile(profile).storm.get("codebook_size", 512))


def codebook_specs(ctx: Context, universes=None, sizes=None, models=None) -> list[RunSpec]:
    """Portfolio runs of STORM (or its ablations: ``models``, default ``ctx.models`` else storm) over codebook
    sizes. The profile's default K is the run without options and is always included (panel (a) reads
    its codebook usage), also when ``sizes`` does not list it."""
    models = as_list(models if models is not None else ctx.params.get("models") or ["storm"])
    bad = [x for x in models if x not in STORM_MODELS]
    if bad:
        raise NotebookStop(f"{bad}: only {', '.join(STORM_MODELS)} have a codebook")
    default = codebook_size_of("", ctx.profile)
    opts = [{}] + [{"codebook_size": int(k)} for k in as_ints(sizes or ctx.sizes) if k != default]
    return [s for o in opts for s in ctx.specs("portfolio", models, universes, options=[o])]


def codebook_sweep(m: pd.DataFrame, universe: str, model: str = "storm", split: str = "test",
                   convention: str = "standard") -> pd.DataFrame:
    """RankIC and RankICIR against the codebook size: index K; columns RankIC, RankIC_std, RankICIR,
    RankICIR_std, n (seeds), paper_RankIC, paper_RankICIR (Figure 3b, :data:`PAPER_FIG3B`)."""
    sel = select(m, split, convention, IC_METRICS, options=None, universe=universe, model=model)
    cols = ["RankIC", "RankIC_std", "RankICIR", "RankICIR_std", "n", "paper_RankIC", "paper_RankICIR"]
    if sel.empty:
        return pd.DataFrame(columns=cols)
    sel = sel.assign(K=[codebook_size_of(o, p) for o, p in zip(sel["options"], sel["profile"])])
    g = sel.groupby(["K", "metric"])["value"]
    s = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).unstack("metric")
    out = pd.DataFrame({"RankIC": s[("mean", "RankIC")], "RankIC_std": s[("std", "RankIC")],
                        "RankICIR": s[("mean", "RankICIR")], "RankICIR_std": s[("std", "RankICIR")],
                        "n": s[("n", "RankIC")].astype(int)})
    out.index.name = "codebook_size"
    out["paper_RankIC"] = PAPER_FIG3B["RankIC"].reindex(out.index)
    out["paper_RankICIR"] = PAPER_FIG3B["RankICIR"].reindex(out.index)
    return out.sort_index()[cols]


def codebook_stats(codes: pd.DataFrame) -> pd.DataFrame:
    """Per branch of a ``codes`` table (branch, code, count): K, codes used, share used, perplexity
    exp(H) of the usage distribution (K = perfectly even), perplexity / K and the top code's share."""
    rows = {}
    for branch, g in codes.groupby("branch", sort=False):
        c = g["count"].to_numpy(dtype=float)
        total = c.sum()
        p = c[c > 0] / total if total > 0 else np.array([])
        ppl = float(np.exp(-(p * np.log(p)).sum())) if p.size else float("nan")
        rows[{"cs": "CS", "ts": "TS"}.get(branch, branch)] = {
            "K": len(c), "tokens": int(total), "used": int((c > 0).sum()),
            "share used": float((c > 0).mean()), "perplexity": ppl, "perplexity / K": ppl / len(c),
            "top code share": float(c.max() / total) if total > 0 else float("nan"),
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "branch"
    return out


def codes(plan: pd.DataFrame, universe: str, model: str = "storm", options: str = "") -> pd.DataFrame:
    """The codebook usage table of the first finished run of ``model`` on ``universe`` (default options)."""
    found = _tables(plan, "codes", universe=universe, model=model, options=options)
    if not found:
        return pd.DataFrame(columns=["branch", "code", "count"])
    return found[0][1]




#: eval-mode codebook usage and alignment quality that every STORM run records (issue 16)
USAGE_METRICS = ("codes_used_cs", "perplexity_cs", "div_cs", "entropy_cs", "codes_used_ts", "perplexity_ts",
                 "div_ts", "entropy_ts", "align_loss", "align_ln_b", "align_top1", "align_chance",
                 "align_loss_disjoint", "align_top1_disjoint", "align_b_disjoint")


def usage_table(m: pd.DataFrame, universe: str, models=None, options: str = "") -> pd.DataFrame:
    """Per model and split (train, valid, test windows, eval mode): codes used and perplexity of the hard
    assignments of each codebook, the diversity / entropy loss values beside them, the alignment InfoNCE
    (with ln B, its chance level) and TS<->CS top-1 retrieval (with 1/B): mean over seeds, ``seeds`` the
    count; one row per measure, one column per (model, split), so the page does not scroll sideways.
    Empty for runs written before STORM version 2 (they did not record these)."""
    sel = select(m, None, "-", USAGE_METRICS, options=options, universe=universe)
    if models is not None:
        sel = sel[sel["model"].isin(as_list(models))]
    if sel.empty:
        return pd.DataFrame()
    t = sel.pivot_table(index=["model", "split"], columns="metric", values="value", aggfunc="mean")
    t["seeds"] = sel.groupby(["model", "split"])["seed"].nunique()
    order = {"train": 0, "valid": 1, "test": 2}
    t = t.reindex(sorted(t.index, key=lambda i: (i[0], order.get(i[1], 9))))
    t = t[[c for c in USAGE_METRICS if c in t.columns] + ["seeds"]]
    t.index = pd.MultiIndex.from_tuples([(model_label(a), b) for a, b in t.index], names=["model", "split"])
    return t.T.rename_axis("measure")


def score_anatomy(ctx: Context, plan: pd.DataFrame, universe: str) -> pd.DataFrame:
    """The score anatomy (:mod:`storm_lib.anatomy`) of the plan's runs on ``universe``: per model, mean and
    sd over seeds of the per-stock share, day-to-day rank autocorrelation and the correlations with the
    20-day low-volatility and momentum rankings."""
    from .. import anatomy

    has_prices = universe not in ctx.no_data
    if not has_prices:
        print(f"{ctx.label(universe)}: no price data at hand, so the correlations with the low-volatility and "
              "momentum rankings are left out (nan); set STORM_DATA_DIR to compute them")
    table = anatomy.anatomy_table(anatomy.anatomy_plan(plan, universe, ctx.data_dir, prices=has_prices))
    if table.empty:
        return table
    out = anatomy.formatted(table)   # "mean ± sd" cells: four narrow columns, no sideways scrolling
    out.index = [f"{model_label(m)}" + (f" (v{v})" if v > 1 else "") for m, v in out.index]
    return out.rename_axis("model")

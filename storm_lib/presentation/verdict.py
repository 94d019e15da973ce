"""The verdict: one row per headline claim of the paper, ours against the paper's, with intervals."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .fmt import _fmt_interval, _fmt_pct, _num, markdown_table
from .paper import (REFERENCE_ROWS, TRADING_STOCKS, _better, _better_than, _fmt_margin, _gain, _paper_rows,
                    model_label, paper_baselines, reported)

MIN_SEEDS = 3   # fewer seeds: a verdict is a point estimate and is labelled as such

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
        from ..run import load_results  # written by the runner issue
    except ImportError:
        return pd.DataFrame(columns=list(RESULT_COLUMNS)), "No results yet: `storm_lib.run` is not available."
    if path is not None and not Path(path).exists():
        return pd.DataFrame(columns=list(RESULT_COLUMNS)), f"No results yet: `{Path(path).name}/` does not exist."
    df = load_results(path) if path is not None else load_results()
    if df is None or len(df) == 0:
        return pd.DataFrame(columns=list(RESULT_COLUMNS)), "No results yet: the results directory holds no run."
    return df, f"Results loaded by `storm_lib.run.load_results` ({len(df):,} rows)."



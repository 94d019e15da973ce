"""The verdict: one row per headline claim of the paper, tested at the level of seeds and of days.

A "beats" claim (STORM better than a set of comparators on a metric) is tested against **every**
comparator, at two levels (:mod:`storm_lib.presentation.evidence`): over seeds (Welch t of the
margin of the means over independent seeds) and over test days (paired daily differences, every seed
of each side pooled day by day: a Newey–West HAC t for RankIC and APY, a stationary block bootstrap
of the metric difference for ASR and MDD). "Better than every comparator" is an intersection–union
hypothesis (Berger 1982, Technometrics 24(4)): with one-sided p-values (H0: STORM not better), its
p-value at a level is the largest p over the comparators. The claims' p-values form one family per
level (every "beats" claim on every dataset), adjusted with Holm's step-down method. A claim reads
**yes** only when STORM is ahead of every comparator, every margin is positive at both levels and both
Holm-adjusted one-sided p-values are below 0.025 (unadjusted, that is a 95 % interval excluding zero);
**no** when STORM's mean is behind at least one comparator; **inconclusive** otherwise (ahead, but a
test is not significant, or a level has no data).

Comparators: the paper's baselines, the two ablations, the trivial floors (:mod:`storm_lib.floors`)
and the total-return market (equal-weight buy-and-hold of the universe's stocks, with dividends); the
paper's Market Index row (^DJI: a price index without dividends) is kept in the tables but "beats the
market" is tested against the total-return row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..budget import MODELS as STUDIED  # the budget study's five model families
from . import evidence
from .fmt import _fmt_interval, _fmt_pct, _num, markdown_table
from .paper import (DETERMINISTIC_ROWS, FLOOR_ROWS, TR_MARKET_ROW, TRADING_STOCKS, _better, _fmt_gain, _fmt_margin,
                    _gain, _paper_rows, _rel_gain, is_deterministic, model_label, paper_baselines, reported)

MIN_SEEDS = 3   # fewer seeds: a verdict is a point estimate and is labelled as such
ALPHA = 0.025   # the verdict's one-sided level, after Holm's correction (two-sided 95 % intervals)
CORRECTION = ("intersection–union over the comparators (a claim's p = the largest p), then Holm over "
              "the \"beats\" claims (each dataset counted), per level")

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
VERDICT_COLUMNS = ["claim", "paper", "ours", "replicated", "by how much", "comparators", "seed level 95% CI",
                   "day level 95% CI", "Holm p, one-sided (seed / day)", "runs"]


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, checked by :func:`verdict`.

    kind ``value``: ``model``'s ``metric`` ≈ the paper's (replicated when |ours − paper| ≤ the paper's
    ±); ``beats``: ``model`` better than every paper baseline (``against=None``) or than the models in
    ``against``, on every dataset in ``datasets`` (replicated: all; partly: some). ``paper_against``:
    the paper rows the paper's own margin is read against when they differ from ``against`` (the
    total-return market has no paper row: the paper compares with its Market Index); ``()``: the paper
    makes no such comparison (the floors). ``short``: the claim in a few words, for the claim matrix.
    """

    text: str
    kind: str
    table: str
    datasets: tuple[str, ...]
    metric: str
    model: str = "STORM"
    against: tuple[str, ...] | None = None
    paper_against: tuple[str, ...] | None = None
    short: str = ""


def default_claims() -> list[Claim]:
    """The headline claims of the paper's tables, the floors and the total-return market (one screen)."""
    claims = []
    floors = tuple(FLOOR_ROWS)
    for u, name in (("dj30", "DJ30"), ("sp500", "SP500")):
        p = _paper_rows("rankic", u).loc["STORM", "RankIC"]
        claims += [
            Claim(f"STORM RankIC on {name} ≈ {p:.3f}", "value", "rankic", (u,), "RankIC",
                  short="RankIC ≈ the paper's"),
            Claim(f"STORM has a higher RankIC than every baseline on {name}", "beats", "rankic", (u,), "RankIC",
                  short="RankIC > every baseline"),
            Claim(f"Full STORM beats both ablations on {name} RankIC", "beats", "rankic", (u,), "RankIC",
                  against=("STORM-w/o-TS", "STORM-w/o-CS"), short="RankIC > both ablations"),
            Claim(f"STORM beats every baseline on {name} APY (TopK-Drop)", "beats", "portfolio", (u,), "APY",
                  short="APY > every baseline"),
            Claim(f"STORM beats every baseline on {name} ASR", "beats", "portfolio", (u,), "ASR",
                  short="ASR > every baseline"),
            Claim(f"STORM has a lower MDD than every baseline on {name}", "beats", "portfolio", (u,), "MDD",
                  short="MDD < every baseline"),
            Claim(f"STORM beats the market (total return) on {name} APY", "beats", "portfolio", (u,), "APY",
                  against=(TR_MARKET_ROW,), paper_against=("Market Index",), short="APY > the market (total return)"),
            Claim(f"STORM beats the best floor on {name} RankIC", "beats", "rankic", (u,), "RankIC",
                  against=floors, paper_against=(), short="RankIC > every floor"),
            Claim(f"STORM beats the best floor on {name} APY", "beats", "portfolio", (u,), "APY",
                  against=floors, paper_against=(), short="APY > every floor"),
        ]
    claims.append(Claim("STORM (PPO on its factors) has the best APY of all trading models on the 5 stocks",
                        "beats", "trading", TRADING_STOCKS, "APY", short="trading: best APY on 5 stocks"))
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



def _seed_values(r: pd.DataFrame, table: str, dataset: str, metric: str, model: str, profile, tasks,
                 conventions) -> np.ndarray:
    """One value per seed of ``model`` (profile ``profile``; a deterministic row from any profile)."""
    where = next((c for c in ("stock", "ticker") if table == "trading" and c in r.columns), "universe")
    sel = r[(r["model"] == model) & (r["metric"] == metric)
            & (r[where].astype("string").str.lower() == dataset.lower())
            & _matches(r["task"], tasks[table]) & _matches(r["convention"], conventions[table])]
    prof = sel["profile"].astype("string").fillna("")
    if model in DETERMINISTIC_ROWS:
        first = next((p for p in [profile, ""] + sorted(set(prof)) if (prof == p).any()), None)
        sel = sel[prof == first] if first is not None else sel
    else:
        sel = sel[(prof == (profile or "")) | (prof == "")]
    return sel["value"].to_numpy(dtype=float)


def _profile_of(r: pd.DataFrame, model: str, profile) -> str | None:
    """The profile whose runs stand for ``model``: ``profile``, or any for a deterministic row."""
    if model not in DETERMINISTIC_ROWS:
        return profile
    have = set(r.loc[r["model"] == model, "profile"].astype("string").fillna(""))
    return profile if profile in have else (sorted(have)[0] if have else profile)


def _compare_one(claim: Claim, ds: str, r, comp: str, a_vals, prof, tasks, conventions, daily_a) -> dict:
    """STORM against one comparator on one dataset: the seed-level and the day-level test."""
    b_vals = _seed_values(r, claim.table, ds, claim.metric, comp, prof, tasks, conventions)
    rec = {"claim": claim.text, "dataset": ds, "metric": claim.metric, "comparator": comp,
           "ours": float(np.nanmean(a_vals)), "theirs": float(np.nanmean(b_vals)), "n_a": int(len(a_vals)),
           "n_b": int(len(b_vals))}
    exact = comp in DETERMINISTIC_ROWS or is_deterministic(comp, float(np.std(b_vals)) if len(b_vals) > 1
                                                           else np.nan, len(b_vals))
    seed = evidence.seed_test(a_vals, b_vals if (exact or len(b_vals) > 1) else b_vals[:0], claim.metric)
    if not exact and len(b_vals) < 2:  # a model run with one seed: its spread is unknown
        seed.update(margin=claim_sign(claim.metric) * (rec["ours"] - rec["theirs"]), low=np.nan, high=np.nan,
                    p=np.nan)
        rec["note"] = f"{comp}: {len(b_vals)} seed, untested"
    if len(a_vals) < MIN_SEEDS:
        seed["p"] = np.nan
        rec["note"] = f"{len(a_vals)} seed{'s' if len(a_vals) > 1 else ''}, untested"
    rec.update(seed_margin=seed["margin"], seed_low=seed["low"], seed_high=seed["high"], seed_p=seed["p"])
    rec.update(day_margin=np.nan, day_low=np.nan, day_high=np.nan, day_p=np.nan, day_method="", n_days=0)
    col = evidence.DAILY_COLUMN.get(claim.metric)
    if daily_a is not None and col is not None and claim.table != "trading":
        b = evidence.pooled_daily(r, ds, comp, col, _profile_of(r, comp, prof))
        if b is not None:
            d = evidence.day_test(daily_a, b, claim.metric)
            rec.update(day_margin=d["margin"], day_low=d["low"], day_high=d["high"], day_p=d["p"],
                       day_method=d["method"], n_days=d["n_days"], day_unit=d["unit"])
    return rec


def claim_sign(metric: str) -> float:
    return -1.0 if _better(metric) == "down" else 1.0


def _check_dataset(claim: Claim, ds: str, r: pd.DataFrame, tasks, conventions, profiles) -> dict:
    """One claim on one dataset: the paper's side always, ours when the claim's model was run; for a
    "beats" claim the per-comparator tests in ``tests`` (Holm-adjusted later, in :func:`verdict`)."""
    paper = _paper_rows(claim.table, ds)
    pv = float(paper.loc[claim.model, claim.metric])
    m = _means(r, claim.table, ds, claim.metric, tasks, conventions)
    prof = _pick_profile(m, claim.model, profiles)
    here = (m[(m["profile"] == prof) | (m["profile"] == "") | m["model"].isin(DETERMINISTIC_ROWS)]
            if prof is not None else m.iloc[0:0])
    here = here.sort_values("profile", key=lambda c: c != (prof or ""), kind="stable").drop_duplicates("model")
    ours = here.set_index("model")["mean"]
    out = {"dataset": ds, "paper_value": pv, "run": claim.model in ours.index, "tests": []}
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
    p_against = against if claim.paper_against is None else list(claim.paper_against)
    pa = paper.reindex(p_against)[claim.metric].dropna() if p_against else pd.Series(dtype=float)
    if len(pa):
        p_best = pa.idxmin() if _better(claim.metric) == "down" else pa.idxmax()
        out.update(paper_best=p_best, paper_best_value=float(pa[p_best]),
                   paper_gain=_gain(pv, float(pa[p_best]), claim.metric))
    else:
        out.update(paper_best=None, paper_best_value=np.nan, paper_gain=np.nan)
    out["n_against"] = len(against)
    if not out["run"]:
        return out
    oa = ours.reindex(against).dropna()
    out["n_run"] = len(oa)
    if oa.empty:
        out["status"] = "not run yet"
        return out
    o_best = oa.idxmin() if _better(claim.metric) == "down" else oa.idxmax()
    out.update(ours_best=o_best, ours_best_value=float(oa[o_best]),
               ours_gain=_rel_gain(out["ours_value"], float(oa[o_best]), claim.metric),
               ahead=all(_better_than(out["ours_value"], float(v), claim.metric) for v in oa))
    a_vals = _seed_values(r, claim.table, ds, claim.metric, claim.model, prof, tasks, conventions)
    col = evidence.DAILY_COLUMN.get(claim.metric)
    daily_a = evidence.pooled_daily(r, ds, claim.model, col, prof) if claim.table != "trading" else None
    out["tests"] = [_compare_one(claim, ds, r, c, a_vals, prof, tasks, conventions, daily_a) for c in oa.index]
    return out


def _better_than(a: float, b: float, metric: str) -> bool:
    return a < b if _better(metric) == "down" else a > b


def _status(x: dict, alpha: float = ALPHA) -> str:
    """yes / no / inconclusive / incomplete for one dataset of a "beats" claim (tests Holm-adjusted)."""
    if not x["ahead"]:
        return "no"
    if x["n_run"] < x["n_against"]:
        return "incomplete"
    ok = (x["seed_holm"] < alpha and x["day_holm"] < alpha
          and all(t["seed_margin"] > 0 and t["day_margin"] > 0 for t in x["tests"]))
    return "yes" if ok else "inconclusive"


def _weakest(tests: list[dict]) -> dict:
    """The comparison with the weakest evidence: the largest one-sided p over both levels."""
    def key(t):
        ps = [t["seed_p1"], t["day_p1"]]
        return max((p if np.isfinite(p) else 2.0) for p in ps)
    return max(tests, key=key)


def _fmt_ci(margin: float, lo: float, hi: float, digits: int = 4) -> str:
    if not np.isfinite(margin):
        return "–"
    ci = (f" [{_num(lo, digits, True)}, {_num(hi, digits, True)}]" if np.isfinite(lo) and np.isfinite(hi)
          else " (no interval)")
    return f"{_num(margin, digits, True)}{ci}"


def _fmt_p(p: float) -> str:
    return "–" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _check_claim(claim: Claim, recs: list[dict]) -> dict:
    run = [x for x in recs if x["run"] and x.get("status", "not run yet") != "not run yet"]
    runs = "; ".join(dict.fromkeys(f"{x['profile'] or '?'}, {x['n']} seed(s)" for x in run)) or "–"
    row = {"claim": claim.text, "ours": "–", "how": "–", "comparators": "–", "seed": "–", "day": "–", "p": "–"}
    if claim.kind == "beats":
        against = list(claim.against) if claim.against else paper_baselines(claim.table)
        names = [a.replace("Floor: ", "") for a in against]
        kind = ("floors" if claim.against and set(claim.against) <= set(FLOOR_ROWS) else
                "baselines" if claim.against is None else "")
        row["comparators"] = f"{len(against)} {kind}: {', '.join(names)}" if kind else ", ".join(names)
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
                           seed=f"mean {_fmt_interval(*x['ours_ci'])}")
        else:
            row["paper"] = ("not in the paper" if x["paper_best"] is None else
                            f"{_num(x['paper_value'])} vs {x['paper_best']} {_num(x['paper_best_value'])} "
                            f"({_fmt_gain(x['paper_gain'])})")
            if run:
                part = f"; {x['n_run']}/{x['n_against']} run" if x["n_run"] < x["n_against"] else ""
                row["ours"] = (f"{_num(x['ours_value'])} vs {x['ours_best']} {_num(x['ours_best_value'])}"
                               f" ({_fmt_gain(x['ours_gain'])}){part}")
                paper_m = ("" if x["paper_best"] is None else
                           f"; paper {_fmt_margin(x['paper_value'], x['paper_best_value'], claim.metric)}")
                row["how"] = f"{_fmt_margin(x['ours_value'], x['ours_best_value'], claim.metric)}{paper_m}"
                if x["tests"]:
                    w = _weakest(x["tests"])
                    row["seed"] = f"{_fmt_ci(w['seed_margin'], w['seed_low'], w['seed_high'])} vs {w['comparator']}"
                    row["day"] = (f"{_fmt_ci(w['day_margin'], w['day_low'], w['day_high'])} vs {w['comparator']}"
                                  if np.isfinite(w["day_margin"]) else "no daily series")
                    row["p"] = f"{_fmt_p(x['seed_holm'])} / {_fmt_p(x['day_holm'])}"
                    notes = sorted({t["note"] for t in x["tests"] if t.get("note")})
                    if notes and x["status"] == "inconclusive":
                        x["status"] += f" ({'; '.join(notes)})"
        row["replicated"] = run[0]["status"] if run else "not run yet"
        if x["run"] and not run:
            row["ours"] = f"{_num(x['ours_value'])}, no comparator run yet"
    else:  # several datasets: count where the claim holds
        n = len(recs)
        if claim.kind == "value":
            row["paper"] = "; ".join(f"{x['dataset']} {_num(x['paper_value'])}" for x in recs)
        else:
            holds_paper = sum(x["paper_gain"] > 0 for x in recs)
            gains = [x["paper_gain"] for x in recs]
            row["paper"] = f"{holds_paper}/{n} (margins {_fmt_pct(min(gains))} to {_fmt_pct(max(gains))})"
        if run:
            yes = [x["dataset"] for x in run if x["status"] == "yes"]
            ahead = [x["dataset"] for x in run if x.get("ahead")]
            row["ours"] = f"{len(ahead)}/{n} ahead" + (f": {', '.join(ahead)}" if ahead else "")
            if claim.kind != "value":
                row["how"] = "; ".join(f"{x['dataset']} {_fmt_gain(x['ours_gain'])}" for x in run)
            if len(run) < n:
                row["ours"] += f" ({n - len(run)} not run)"
            row["replicated"] = ("yes" if len(yes) == n else
                                 "no" if not ahead and all(x["status"] == "no" for x in run) else
                                 f"partly ({len(ahead)}/{n} ahead, {len(yes)} significant)")
            if any(x["tests"] for x in run):
                row["day"] = "no daily series (trading)"
        else:
            row["replicated"] = "not run yet"
    return {"claim": row["claim"], "paper": row["paper"], "ours": row["ours"], "replicated": row["replicated"],
            "by how much": row["how"], "comparators": row["comparators"], "seed level 95% CI": row["seed"],
            "day level 95% CI": row["day"], "Holm p, one-sided (seed / day)": row["p"], "runs": runs}


def verdict(results: pd.DataFrame | None, claims: Sequence[Claim] | None = None, protocol: str = "clean",
            split: str = "test", options: str | None = None, profiles: Sequence[str] = PROFILE_ORDER,
            tasks: dict | None = None, conventions: dict | None = None, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per claim: what the paper printed, what we measured, the evidence and the verdict.

    ``results``: the long results frame of ``storm_lib.run.load_results`` (columns task, universe, model,
    protocol, profile, seed, options, split, convention, metric, value and ``run_dir``, from which the
    day-level series are read), or None / empty: then every claim reads "not run yet". Rows are filtered
    to ``protocol``, ``split`` and default ``options``; a missing value in a filter column matches anything.
    Per claim, the profile is the first of ``profiles`` in which the claim's model was run; every
    comparator comes from that profile (a deterministic row from any).

    ``replicated`` for a "beats" claim: ``yes`` when STORM is ahead of every comparator and, against
    every comparator, both the seed-level and the day-level tests are significant at ``alpha`` after
    Holm's correction (:data:`CORRECTION`) with positive margins; ``no`` when STORM's mean is behind a
    comparator; ``inconclusive`` otherwise; ``incomplete`` when comparators are missing; ``partly`` for
    multi-dataset claims. For a value claim ``yes`` means our mean lies within the paper's ± (a range over
    10 runs). Intervals (95 %, unadjusted) are shown against the comparator with the weakest evidence;
    ``Holm p``: the claim's one-sided p (the largest over its comparators) after Holm's correction across
    the claims, at each level. ``attrs["tests"]`` holds every comparison (one row per claim, dataset and comparator).
    """
    claims = default_claims() if claims is None else list(claims)
    tasks = {**DEFAULT_TASKS, **(tasks or {})}
    conventions = {**DEFAULT_CONVENTIONS, **(conventions or {})}
    r = _select_results(results, protocol, split, options)
    recs = [[_check_dataset(c, ds, r, tasks, conventions, tuple(profiles)) for ds in c.datasets] for c in claims]
    family = [x for per in recs for x in per if x["tests"]]
    for level in ("seed", "day"):
        for x in family:   # intersection-union: the claim holds on this dataset only if it holds for all
            for t in x["tests"]:   # one-sided p of H0 "STORM not better" from the two-sided p and the sign
                p2, d = t[f"{level}_p"], t[f"{level}_margin"]
                t[f"{level}_p1"] = (p2 / 2 if d > 0 else 1 - p2 / 2) if np.isfinite(p2) else np.nan
            ps = [t[f"{level}_p1"] for t in x["tests"]]
            x[f"{level}_p"] = max(ps) if all(np.isfinite(ps)) else np.nan
        adj = evidence.holm([x[f"{level}_p"] for x in family]) if family else []
        for x, a in zip(family, adj):
            x[f"{level}_holm"] = float(a)
            for t in x["tests"]:
                t[f"claim_{level}_holm"] = float(a)
    tests = [t for x in family for t in x["tests"]]
    for c, per in zip(claims, recs):
        for x in per:
            if c.kind == "beats" and x["run"] and x.get("status") != "not run yet" and "ahead" in x:
                x["status"] = _status(x, alpha)
    rows = [_check_claim(c, per) for c, per in zip(claims, recs)]
    for row, c in zip(rows, claims):  # a value verdict on one or two seeds is a point estimate, say so
        seeds = [int(k) for k in re.findall(r"(\d+) seed", str(row["runs"]))]
        if c.kind == "value" and seeds and min(seeds) < MIN_SEEDS and row["replicated"] in ("yes", "no"):
            row["replicated"] += f" ({min(seeds)} seed{'s' if min(seeds) > 1 else ''}, untested)"
    out = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    out.attrs.update(protocol=protocol, split=split, n_rows=len(r), alpha=alpha, correction=CORRECTION,
                     tests=pd.DataFrame(tests), claims=claims,
                     datasets=[[x["dataset"] for x in per] for per in recs],
                     statuses=[[x.get("status", "not run yet") if x["run"] else "not run yet" for x in per]
                               for per in recs])
    return out


def _torch_models() -> dict[str, str]:
    """Paper row label -> registry name of every torch return model (the models a training budget applies to)."""
    from ..models import MODEL_NAMES, TorchReturnModel, model_class

    return {model_label(m): m for m in MODEL_NAMES if issubclass(model_class(m), TorchReturnModel)}


def _unstudied() -> str:
    """The torch models outside the budget study, as "A, B and C" (they take the equal-windows budget)."""
    labels = [label for label, name in _torch_models().items() if name not in STUDIED]
    return ", ".join(labels[:-1]) + " and " + labels[-1] if len(labels) > 1 else "".join(labels)


def budget_gate(v: pd.DataFrame, choices: pd.DataFrame | None, profile: str = "cpu") -> pd.DataFrame:
    """The verdict with the training budget of every learned model it rests on (issue 18): a column
    ``training budget`` and, where a budget is not shown to be enough, the verdict downgraded.

    For each claim on a universe, its learned models (STORM and the torch comparators; LightGBM, the
    floors and the market rows need no budget) are checked against the profile's chosen budgets
    (``Profile.budgets``) and the budget study's curves (``choices``: :func:`storm_lib.budget.choose`):
    a model without a chosen budget was trained with early stopping, and a chosen budget whose curve is
    not on its plateau ("still rising", "inconclusive: needs >= X windows", "not run yet") is not shown to
    be enough. A "no" or "inconclusive" then cannot be read as a refutation while STORM is such a model,
    nor a "yes" as a replication while a comparator is: both read ``inconclusive (budget: ...)``. A torch
    model outside the study's five families (``STUDIED``: LSTM, CAFactor, HireVAE) trains with the largest
    budget chosen in its universe (equal windows seen, :func:`storm_lib.budget.profile_budgets`): the
    column names that budget and the claim is not downgraded for it.
    Returns a copy; ``attrs["statuses"]`` follows."""
    from ..profiles import get_profile

    budgets = get_profile(profile).budgets
    status = {} if choices is None or choices.empty else {
        (u, m): str(s) for u, m, s in zip(choices["universe"], choices["model"], choices["status"])}
    torch_models = _torch_models()
    out = v.copy()
    out.attrs = dict(v.attrs)
    statuses = [list(st) for st in v.attrs.get("statuses", [[] for _ in range(len(v))])]
    column = []
    for i, (claim, datasets) in enumerate(zip(v.attrs.get("claims", []), v.attrs.get("datasets", []))):
        notes, storm_short, other_short = {}, False, False   # reason -> labels
        if not any(u in ("dj30", "sp500") for u in datasets):
            column.append("RL agents: their budget study is on the Training budget page")
            continue
        for u in datasets:
            against = ([] if claim.kind == "value" else
                       list(claim.against) if claim.against else paper_baselines(claim.table))
            for label in dict.fromkeys([claim.model, *against]):
                name = torch_models.get(label)
                if name is None:
                    continue
                chosen = budgets.get(u, {}).get(name)
                st = status.get((u, name), "not run yet")
                if chosen is None:
                    why = "early stopping, no chosen budget"
                elif name not in STUDIED:  # the rule's equal windows: a stated budget, no curve to be off
                    notes.setdefault(f"{int(chosen):,} windows (equal windows; no curve of its own)",
                                     []).append(label)
                    continue
                elif st.startswith("plateau"):
                    continue
                else:
                    why = f"{int(chosen):,} windows, {st}"
                notes.setdefault(why, []).append(label)
                storm_short |= label == claim.model
                other_short |= label != claim.model
        column.append("; ".join(f"{', '.join(labels)}: {why}" for why, labels in notes.items())
                      if notes else "every learned model on its plateau")
        rep = str(out.at[out.index[i], "replicated"])
        head = rep.split(" (")[0]
        if (storm_short and head in ("no", "inconclusive")) or (other_short and head == "yes" and claim.kind == "beats"):
            who = claim.model if storm_short and head != "yes" else "a comparator"
            new = f"inconclusive (budget: {who} not shown on its plateau)"
            out.at[out.index[i], "replicated"] = new
            statuses[i] = [new if str(st).split(" (")[0] in ("no", "inconclusive", "yes") else st
                           for st in statuses[i]]
    out["training budget"] = column
    out.attrs["statuses"] = statuses
    return out


def verdict_markdown(v: pd.DataFrame, note: str = "") -> str:
    """The verdict as a MyST/GitHub pipe table with a header naming the tests and the correction."""
    head = (f"Protocol `{v.attrs.get('protocol', '?')}`, split `{v.attrs.get('split', '?')}`; "
            f"{v.attrs.get('n_rows', 0):,} result rows used. A \"beats\" claim reads yes only when both the "
            "seed-level test (Welch t over seeds) and the day-level test (paired daily differences, seeds "
            "pooled day by day: Newey–West HAC t for RankIC and APY, stationary block bootstrap for ASR and MDD) "
            f"exclude zero against every comparator after the correction ({v.attrs.get('correction', CORRECTION)}) "
            f"at {v.attrs.get('alpha', ALPHA):.1%} one-sided. Intervals are unadjusted 95 % intervals against the "
            "comparator with the weakest evidence; day-level margins: RankIC in daily RankIC, APY as the mean "
            "daily net-return difference × 252, ASR and MDD of the pooled daily returns."
            + (" Training budget: the learned models a claim rests on that are not shown on the plateau of "
               "their training-budget curve (trained with early stopping, or at a chosen budget whose curve "
               "still rises); a \"no\" while STORM is one of them, or a \"yes\" while a comparator is, reads "
               f"inconclusive (budget). {_unstudied()} have no curve of their own: they train with the "
               "largest budget chosen in their universe (equal windows seen)." if "training budget" in v.columns else ""))
    return head + (" " + note if note else "") + "\n\n" + markdown_table(v, index=False)


def tests_markdown(v: pd.DataFrame) -> str:
    """Every comparison behind the verdict: claim, comparator, both levels' margins, 95 % intervals and
    one-sided p-values (unadjusted; the claim's Holm-adjusted p is in the verdict table)."""
    t = v.attrs.get("tests")
    if t is None or t.empty:
        return "No comparison run yet."
    rows = pd.DataFrame({
        "claim": [f"{c} ({d})" if d.upper() not in c.upper() else c for c, d in zip(t["claim"], t["dataset"])],
        "comparator": t["comparator"],
        "seeds (STORM / comp.)": [f"{a} / {b}" for a, b in zip(t["n_a"], t["n_b"])],
        "seed level: margin [95% CI]": [_fmt_ci(m, lo, hi) for m, lo, hi in zip(t["seed_margin"], t["seed_low"],
                                                                                   t["seed_high"])],
        "p₁ seed": [_fmt_p(p) for p in t["seed_p1"]],
        "day level: margin [95% CI]": [_fmt_ci(m, lo, hi) for m, lo, hi in zip(t["day_margin"], t["day_low"],
                                                                                 t["day_high"])],
        "p₁ day": [_fmt_p(p) for p in t["day_p1"]],
    })
    return ("One row per comparison (positive margin = STORM better; p₁: one-sided p of \"STORM not better\", "
            "unadjusted). Day level: " + "; ".join(sorted({m for m in t["day_method"] if m})) + ".\n\n"
            + markdown_table(rows, index=False))


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



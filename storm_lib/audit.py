"""The protocol audit: the official code's deviations, one named switch each, all off by default.

``storm_lib`` implements the paper's method and protocol; the authors' released code
(``reference/official-code.md``, "OC" below) deviates from them in ways that can move the reported
numbers (OC §10). Each deviation we can reproduce is a **switch** here: off in every default run, on
only when asked for, and changing exactly the behaviour it names. A switch is applied through the
experiment runner's existing knobs, so a switched run is an ordinary run with its own directory:

* a **protocol** (``"paper"`` instead of ``"clean"``),
* **run options** (task options of :mod:`storm_lib.tasks.portfolio`, or STORM network options), or
* a **metric convention** to read the same run with (``"official"`` instead of ``"standard"``): no new run.

:data:`SWITCHES` (ordered; the order of the cumulative waterfall):

(a) ``test_selection``: protocol ``paper``. Validation = test (OC §10.1): early stopping and the
    best-epoch choice look at the test period. Because the official code has no separate validation
    period, the ``paper`` protocol also trains on 2008-04-01..2021-03-31 (the clean protocol's
    validation years become training years): the switch is the official split, both parts together.
(b) ``sum_topk``: option ``topk_variant="official"``. TopK-Drop's daily return is the SUM of the k held
    stocks' returns (5x gross exposure, OC §10.8), with the official cost rule (the cost ratio
    c x 2 x (k - kept)/k multiplies the day's return, day 0 pays c; OC §6, §10.12); the selection rule
    is unchanged. RankIC is unaffected.
(c) ``official_metrics``: convention ``official``, nothing to run: every run already stores its metrics
    in every convention (:data:`storm_lib.metrics.CONVENTIONS`). Simple annualisation (§10.11),
    Sharpe x sqrt(n) (§10.9), daily volatility (§10.10), CR = 252 mean/MDD, peak from day 1, CW as a
    return (§10.12), RankIC with (n-1)/n and positional ties (§10.14).
(d) ``sampled_predictions``: option ``sample_predictions=true``. Test (and validation) scores are one
    draw of the model's predictive distribution instead of its mean (OC §10.13), seeded per run and
    split, so a run stays deterministic. Models with a predictive distribution only (STORM variants,
    FactorVAE, HireVAE); early stopping during training still scores the mean.
(e) ``prior_across_batch``: STORM option ``prior_across_batch=true``. The prior's attention runs across
    the mini-batch in the official layout (OC §2 "Prior", §10.2): for each of the d channels, the B
    windows of a batch are the sequence and the L factor-token values the embedding (L heads of size 1),
    see :class:`storm_lib.models.storm.BatchAxisAttention`. A window's prediction then depends on the
    other windows of its batch, in training and at prediction time (chunks of ``eval_batch_size``
    consecutive days; add ``eval_batch_size=1`` for the official batch-1 test loader). STORM variants only.
(f) ``official_features``: options ``feature_set="official152"`` and ``normalization="prev_block"``. The
    official 152 features on raw close-based prices with their quirks (OC §1, §10.22 constant
    CORR/CORD, §10.23 rank/w, reversed-endpoint beta, non-rolling rsv, max/min on close, sums of
    returns, raw price levels and calendar; :mod:`storm_lib.features`), scaled by the official
    previous-block scaler (OC §1; ours anchored per stock, :mod:`storm_lib.panel`) — the official input
    pipeline as a whole (either option can also be used on its own).

Not switchable: **survivorship bias** (OC §10.5). Both the official lists and ours are present-day index
members applied back to 2008, and our data hold no delisted or former members, so there is no
survivorship-free universe to switch to; every run, clean or switched, carries it. Also not
reproduced: multi-GPU test sharding (§10.3), the ablation gather bug (§10.4), the ~64-day later start
of the official backtest (§10.15) and the official model/loss defects (§10.16-21); the loss weights
are ordinary STORM options (``w_*``) for anyone who wants to approximate those.

Use::

    specs = audit_specs("storm", "dj30", seeds=[0, 1, 2], profile="cpu")   # clean, each alone, cumulative
    run_grid(specs)
    table = audit_table(load_results(task="portfolio", universe="dj30", model="storm"))

``audit_table`` returns one row per (universe, model, profile, seed, step, metric): the clean baseline,
each switch alone, and the cumulative steps (``+name`` = every switch up to and including it, in
:data:`SWITCHES` order), with ``delta`` = value - clean value of the same seed: a waterfall's input.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass

import pandas as pd

from .run import RunSpec

__all__ = ["Switch", "SWITCHES", "DEFAULT_METRICS", "applicable", "audit_plan", "audit_specs",
           "switches_of", "audit_table"]


@dataclass(frozen=True)
class Switch:
    """One deviation of the official code, and how to turn it on."""

    name: str
    letter: str                       # the label, (a)..(f)
    description: str                  # what the official code does
    changes: str                      # what exactly changes in a run when the switch is on
    refs: tuple[str, ...]             # official-code.md sections
    protocol: str | None = None       # the protocol the switch selects (None: the baseline's)
    options: tuple = ()               # run options (key, value) the switch adds
    convention: str | None = None     # the metric convention the runs are read with (None: standard)
    models: tuple[str, ...] | None = None  # the models it applies to (None: every model)

    @property
    def needs_run(self) -> bool:
        """False for a switch that only changes how existing runs are read (a metric convention)."""
        return self.protocol is not None or bool(self.options)


_STORM = ("storm", "storm_wo_ts", "storm_wo_cs")

SWITCHES: dict[str, Switch] = {s.name: s for s in (
    Switch("test_selection", "a",
           "model selection on the test period: validation = test (best epoch and early stopping on the "
           "test span); training runs to 2021-03-31",
           "protocol clean -> paper (train 2008-04-01..2021-03-31, validation = test 2021-04-01..2024-03-31)",
           ("§10.1", "§1 Splits"), protocol="paper"),
    Switch("sum_topk", "b",
           "TopK-Drop's daily return is the sum of the k holdings' returns (5x exposure), the cost ratio "
           "multiplying the return",
           "portfolio returns only (topk_drop variant='official'); scores, selection and RankIC unchanged",
           ("§6", "§10.8", "§10.12"), options=(("topk_variant", "official"),)),
    Switch("official_metrics", "c",
           "the released metric formulas: simple annualisation, Sharpe x sqrt(n), daily AVO, CR from the mean "
           "return, CW as a return, RankIC x (n-1)/n",
           "no new run: the same runs read with metric convention 'official'",
           ("§7", "§10.9", "§10.10", "§10.11", "§10.12", "§10.14"), convention="official"),
    Switch("sampled_predictions", "d",
           "test predictions are one random draw of the predictive distribution, not its mean",
           "validation and test scores = one seeded draw (predict_array(sample=True)); training unchanged",
           ("§2 Factor module", "§10.13"), options=(("sample_predictions", True),),
           models=_STORM + ("factorvae", "hirevae")),
    Switch("prior_across_batch", "e",
           "the prior's multi-head attention attends across the mini-batch (sequence-first layout), "
           "channels as items, the K factor tokens as the embedding",
           "STORM's prior attention sub-layers only (BatchAxisAttention); everything else unchanged",
           ("§2 Factor module", "§10.2"), options=(("prior_across_batch", True),), models=_STORM),
    Switch("official_features", "f",
           "the official 152 raw-close features (constant CORR/CORD, rank/w, reversed beta, non-rolling rsv, "
           "price levels) scaled by the previous-block scaler",
           "model inputs only: feature_set official152 and normalization prev_block; labels unchanged",
           ("§1 Features", "§1 Normalisation", "§10.22", "§10.23"),
           options=(("feature_set", "official152"), ("normalization", "prev_block"))),
)}

#: the metrics :func:`audit_table` keeps by default
DEFAULT_METRICS = ("RankIC", "RankICIR", "APY", "CW", "CR", "ASR", "MDD", "AVO")
BASELINE_PROTOCOL = "clean"
BASELINE_CONVENTION = "standard"


def applicable(switch: str | Switch, model: str) -> bool:
    """Whether ``switch`` applies to ``model`` (e.g. ``prior_across_batch`` is STORM's only)."""
    sw = SWITCHES[switch] if isinstance(switch, str) else switch
    return sw.models is None or model in sw.models


def _check(model: str, universe: str) -> None:
    if model == "market":
        raise ValueError("the market index has no model to audit")
    if universe == "sample":
        raise ValueError("the audit needs the clean and paper protocols, i.e. universe dj30 or sp500")


def _combine(names, model, universe, seed, profile) -> tuple[RunSpec, str]:
    """The run and the metric convention that turn on the switches ``names`` (on the clean baseline)."""
    protocol, options, convention = BASELINE_PROTOCOL, {}, BASELINE_CONVENTION
    for name in names:
        sw = SWITCHES[name]
        protocol = sw.protocol or protocol
        options.update(dict(sw.options))
        convention = sw.convention or convention
    return RunSpec("portfolio", universe, model, protocol, profile, seed, options), convention


def _steps(model: str, cumulative: bool) -> list[tuple[str, str, tuple[str, ...]]]:
    """(label, kind, switches) of the audit: clean, each switch alone, then the cumulative steps."""
    names = [n for n in SWITCHES if applicable(n, model)]
    steps = [("clean", "baseline", ())]
    steps += [(n, "alone", (n,)) for n in names]
    if cumulative:
        steps += [(f"+{n}", "cumulative", tuple(names[:i + 1])) for i, n in enumerate(names)]
    return steps


def audit_plan(model: str, universe: str, seeds=(0,), profile: str = "cpu", cumulative: bool = True) -> pd.DataFrame:
    """Every audit step of ``model`` on ``universe``: columns ``step`` (``clean``, a switch name, or
    ``+name`` for the cumulative step ending with it), ``kind`` (baseline / alone / cumulative),
    ``switches`` (``a+b+...`` names joined by ``+``; empty for clean), ``seed``, ``convention`` (the
    metric convention to read) and ``spec`` (the :class:`~storm_lib.run.RunSpec` to run). Switches that
    do not apply to the model are left out."""
    _check(model, universe)
    rows = []
    for seed in ([seeds] if isinstance(seeds, int) else list(seeds)):
        for label, kind, names in _steps(model, cumulative):
            spec, convention = _combine(names, model, universe, seed, profile)
            rows.append({"step": label, "kind": kind, "switches": "+".join(names), "seed": int(seed),
                         "convention": convention, "spec": spec})
    return pd.DataFrame(rows, columns=["step", "kind", "switches", "seed", "convention", "spec"])


def audit_specs(model: str, universe: str, seeds=(0,), profile: str = "cpu", cumulative: bool = True) -> list[RunSpec]:
    """The runs of the audit (clean baseline, each switch alone, all switches cumulatively), without
    duplicates, in plan order; ``official_metrics`` needs no run of its own (it reads the others)."""
    out: list[RunSpec] = []
    for spec in audit_plan(model, universe, seeds, profile, cumulative)["spec"]:
        if spec not in out:
            out.append(spec)
    return out


# --------------------------------------------------------------------------- reading results


def _parse_value(text: str):
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return text


def _parse_options(text) -> dict | None:
    """The ``options`` column of :func:`storm_lib.run.load_results` (``k=v,k2=v2``) as a dict, or None
    when it cannot be read unambiguously (list values)."""
    if text is None or (isinstance(text, float) and text != text) or text == "":
        return {}
    out = {}
    for part in str(text).split(","):
        key, sep, value = part.partition("=")
        if not sep or not key or "[" in value or "]" in value:
            return None
        out[key] = _parse_value(value)
    return out


def switches_of(protocol: str, options: dict | str | None) -> frozenset | None:
    """The run switches that a run with ``protocol`` and ``options`` has on, or None when the run is
    not an audit run (another protocol, an option that belongs to no switch, a switch half applied)."""
    opts = _parse_options(options) if isinstance(options, str) or options is None else dict(options)
    if opts is None:
        return None
    on = set()
    if protocol == SWITCHES["test_selection"].protocol:
        on.add("test_selection")
    elif protocol != BASELINE_PROTOCOL:
        return None
    for name, sw in SWITCHES.items():
        if not sw.options:
            continue
        hits = [k in opts and opts[k] == v and type(opts[k]) is type(v) for k, v in sw.options]
        if all(hits):
            on.add(name)
            for k, _ in sw.options:
                opts.pop(k)
        elif any(k in opts for k, _ in sw.options):
            return None
    return frozenset(on) if not opts else None


def audit_table(results: pd.DataFrame, split: str = "test", metrics=DEFAULT_METRICS,
                cumulative: bool = True) -> pd.DataFrame:
    """A tidy audit frame from :func:`storm_lib.run.load_results` output (portfolio runs).

    Each finished audit run is matched to its switches (:func:`switches_of`); read with the standard
    convention it is that switch set, read with the official convention it is that set plus
    ``official_metrics``. Rows: ``universe, model, profile, seed, step, kind, switches, metric, value,
    clean, delta`` with ``clean`` the clean baseline's value of the same (universe, model, profile,
    seed, metric) and ``delta = value - clean``; steps in audit order (``step_order``), steps whose run
    is missing are left out. Plot ``kind == "cumulative"`` steps (after ``clean``) as a waterfall.
    """
    cols = ["universe", "model", "profile", "seed", "step", "kind", "step_order", "switches", "metric",
            "value", "clean", "delta"]
    if results is None or len(results) == 0:
        return pd.DataFrame(columns=cols)
    res = results
    if "task" in res.columns:
        res = res[res["task"] == "portfolio"]
    res = res[(res["split"] == split) & res["metric"].isin(list(metrics))]
    runs: dict[tuple, dict[str, float]] = {}
    group_keys = ["universe", "model", "profile", "seed", "protocol", "options"]
    for key, g in res.groupby(group_keys, dropna=False, sort=False):
        universe, model, profile, seed, protocol, options = key
        on = switches_of(protocol, options if isinstance(options, str) else "")
        if on is None:
            continue
        for convention, extra in ((BASELINE_CONVENTION, set()), ("official", {"official_metrics"})):
            rows = g[g["convention"].isin([convention, "-"])]
            values = dict(zip(rows["metric"], rows["value"].astype(float)))
            if values:
                runs[(universe, model, profile, int(seed), frozenset(on | extra))] = values
    out = []
    models = {(u, m, p, s) for u, m, p, s, _ in runs}
    for universe, model, profile, seed in sorted(models):
        clean = runs.get((universe, model, profile, seed, frozenset()))
        for order, (label, kind, names) in enumerate(_steps(model, cumulative)):
            values = runs.get((universe, model, profile, seed, frozenset(names)))
            if values is None:
                continue
            for metric in metrics:
                if metric not in values:
                    continue
                base = clean.get(metric, float("nan")) if clean else float("nan")
                out.append({"universe": universe, "model": model, "profile": profile, "seed": seed,
                            "step": label, "kind": kind, "step_order": order, "switches": "+".join(names),
                            "metric": metric, "value": values[metric], "clean": base,
                            "delta": values[metric] - base})
    return pd.DataFrame(out, columns=cols)

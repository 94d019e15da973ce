"""Time limits for a queue of runs: how long a run will take, estimated from the finished runs.

``python -m storm_lib.run ... --time-limit 2h30m`` (and ``python -m storm_lib.budget run``) start a run
only when its estimate fits in the time left, so a session or a cluster job with a wall-clock limit
does not end in the middle of a run whose partial it cannot keep. A run that does not fit is
``deferred``: not started, listed in the summary; rerunning the command later runs it.

The estimate (:func:`estimate_seconds`) reads the records of finished runs of the same task, universe,
model and profile. A run of a known number of training windows (the ``budget_windows`` option, or the
budget the profile chose for the model) is scaled from each record by :func:`scaled_seconds`: the
record's fixed cost (data, features, prediction: compute minus fit time) plus its fit time per window
times the windows asked for (less the windows a resumed run has already trained). Other runs take the
compute of records with the same options. Records made on the same CPU are used when there are any
(``run.json`` ``hardware.cpu``); the median of the three most recent estimates is taken. A run with no
record to estimate from is started: the limit defers only what is known not to fit.

With ``--pause-at-limit`` a run longer than the time left starts anyway: inside :func:`time_limit` a torch
fit (:func:`storm_lib.train.fit`) stops at the first epoch boundary after which the next epoch (as long as
the last one) would end past the limit, with that epoch's checkpoint written, and raises
:class:`TimeLimitReached`; the runner reports the run ``paused`` and keeps its checkpoints, so the same
command resumes it (on another machine after ``python -m storm_lib.park save`` / ``restore``). The limit
can be overrun by at most one epoch plus the work outside the fit (data, prediction).
"""

from __future__ import annotations

import contextlib
import math
import re
import statistics
import time

from .profiles import BUDGET_OPTION, budget_options

#: an estimate is multiplied by this before it is compared with the time left (load, noise)
MARGIN = 1.1

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}

_DEADLINE: float | None = None   # a time.monotonic() value, set by time_limit()


class TimeLimitReached(BaseException):
    """A fit stopped at an epoch boundary before the deadline of :func:`time_limit`, its checkpoint
    written. A BaseException, like KeyboardInterrupt, so that the runner keeps the run's checkpoints
    and no model code that catches ``Exception`` swallows it."""


@contextlib.contextmanager
def time_limit(deadline: float | None):
    """Within this block, torch fits pause before an epoch that would end after ``deadline`` (a
    ``time.monotonic()`` value; None: no limit)."""
    global _DEADLINE
    old, _DEADLINE = _DEADLINE, deadline
    try:
        yield
    finally:
        _DEADLINE = old


def check_epoch(done: int, total: int, epoch_seconds: float) -> None:
    """Called by a fit after epoch ``done`` of ``total`` is checkpointed: raise
    :class:`TimeLimitReached` when another epoch of ``epoch_seconds`` would end past the deadline."""
    if _DEADLINE is not None and done < total and time.monotonic() + epoch_seconds > _DEADLINE:
        raise TimeLimitReached(f"paused after epoch {done} of {total}: another epoch ({fmt_duration(epoch_seconds)}) "
                               f"would end past the time limit; the same command resumes it")


def add_arguments(parser) -> None:
    """``--time-limit`` and ``--pause-at-limit``, the same on every command that runs a grid
    (``storm_lib.run``, ``storm_lib.budget run`` / ``agents-run``); checked by :func:`check_arguments`."""
    parser.add_argument("--time-limit", default=None, metavar="DURATION",
                        help="start a run only if its estimate from finished runs fits in the time left "
                             "(5400, 90m, 2h30m); the others are deferred: rerun to continue (local executor)")
    parser.add_argument("--pause-at-limit", action="store_true",
                        help="with --time-limit: start a run that does not fit anyway and pause its fit at the "
                             "last epoch boundary before the limit, checkpoints kept (rerun, or park, to continue)")


def check_arguments(time_limit, pause_at_limit: bool) -> None:
    """ValueError for a malformed ``--time-limit`` or ``--pause-at-limit`` without one."""
    if time_limit is not None:
        parse_duration(time_limit)
    elif pause_at_limit:
        raise ValueError("--pause-at-limit needs --time-limit")


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"5400"``, ``"90m"``, ``"2h"``, ``"1h30m"`` or ``"1h 30m 15s"``; ValueError otherwise."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", s):
            seconds = float(s)
        else:
            parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", s)
            if not parts or "".join(n + u for n, u in parts) != s or len({u for _, u in parts}) != len(parts):
                raise ValueError(f"not a duration: {text!r} (examples: 5400, 90m, 2h, 1h30m)")
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a time limit must be positive; got {text!r}")
    return seconds


def fmt_duration(sec: float) -> str:
    """``40 s`` / ``12.5 min`` / ``3.2 h`` (``–`` when not finite): the one duration format of the
    package (run summaries, the book's compute figures)."""
    if not math.isfinite(sec):
        return "–"
    return f"{sec:,.0f} s" if sec < 120 else f"{sec / 60:,.1f} min" if sec < 7200 else f"{sec / 3600:,.1f} h"


def scaled_seconds(compute: float, fit: float | None, seen: float, windows: float) -> float:
    """The compute of a run of ``windows`` training windows, from a run that cost ``compute`` seconds of
    which ``fit`` were the model fit over ``seen`` windows: the fixed part stays, the fit scales with the
    windows. Without a fit time the whole compute scales."""
    fit = compute if fit is None or not math.isfinite(fit) or fit <= 0 else min(float(fit), compute)
    return (compute - fit) + fit * float(windows) / float(seen)


def target_windows(spec) -> int | None:
    """The training windows ``spec`` will see when that is fixed in advance: its ``budget_windows``
    option or the budget its profile chose for the model on its universe (None: early stopping)."""
    opts = spec.options_dict
    if BUDGET_OPTION in opts:
        return int(opts[BUDGET_OPTION])
    chosen = budget_options(spec.profile, spec.universe, spec.model, opts)
    return int(chosen[BUDGET_OPTION]) if chosen else None


def estimate_seconds(spec, timings, recent: int = 3, cpu: dict | None = None, done_windows: int = 0) -> float | None:
    """Compute seconds ``spec`` is expected to take (one process), from ``timings``: ``(run.json record,
    compute seconds)`` pairs of finished runs (:func:`storm_lib.run.run_timings`). With ``cpu`` (the
    ``cpu`` / ``cpu_flags`` of :func:`storm_lib.run.cpu_model`), runs recorded on that CPU are used when
    there are any (the same code runs 1.5-2x slower on an AVX2-only CPU than on one with AVX-512/AMX).
    ``done_windows``: training windows an interrupted attempt already trained (a resumed fit trains only
    the rest; counted for runs of a known number of windows). None when no record matches. Runs adopted from the budget study (copies) are not timings and are
    skipped."""
    windows = target_windows(spec)
    key = (spec.task, spec.universe, spec.model, spec.profile)
    found = []
    for record, compute in timings:
        s = record.get("spec") or {}
        if (compute is None or record.get("adopted_from")
                or (s.get("task"), s.get("universe"), s.get("model"), s.get("profile")) != key):
            continue
        info = record.get("info") or {}
        seen = info.get("windows_seen")
        if windows is not None and seen:
            est = scaled_seconds(compute, info.get("fit_seconds"), seen, max(0, windows - done_windows))
        elif windows is None and (s.get("options") or {}) == spec.options_dict:
            est = compute
        else:
            continue
        hw = record.get("hardware") or {}
        same = cpu is not None and (hw.get("cpu"), hw.get("cpu_flags")) == (cpu.get("cpu"), cpu.get("cpu_flags"))
        found.append((same, str(record.get("finished") or ""), est))
    if not found:
        return None
    if any(same for same, _, _ in found):
        found = [f for f in found if f[0]]
    return statistics.median(e for _, _, e in sorted(found, key=lambda f: f[1])[-recent:])

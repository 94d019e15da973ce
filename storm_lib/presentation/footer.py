"""The footer of every notebook: versions, hardware, wall time, data hashes, runs used, rerun command."""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import time
from pathlib import Path

import pandas as pd

from .context import Context, _none, data_hashes
from .fmt import TABLE_CSS

# --------------------------------------------------------------------------- footer


def _run_record(path) -> dict:
    try:
        return json.loads((Path(path) / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _compute_seconds(path) -> float:
    """A run's recorded compute (:func:`storm_lib.run.compute_seconds`), 0 when unreadable."""
    from ..run import compute_seconds

    rec = _run_record(path)
    return (compute_seconds(path, rec) or 0.0) if rec else 0.0


def _versions() -> dict:
    from importlib import metadata

    from .. import __version__

    out = {"python": platform.python_version()}
    for name, dist in (("numpy", "numpy"), ("pandas", "pandas"), ("torch", "torch"), ("lightgbm", "lightgbm"),
                       ("stable-baselines3", "stable-baselines3"), ("matplotlib", "matplotlib")):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["storm_lib"] = __version__
    try:
        repo = Path(__file__).resolve().parents[2]
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            out["storm_lib"] += f" (git {rev.stdout.strip()}{', modified' if dirty.stdout.strip() else ''})"
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _hardware() -> dict:
    out = {"platform": platform.platform(), "CPU count": os.cpu_count(),
           "STORM_NUM_THREADS": os.environ.get("STORM_NUM_THREADS", "unset")}
    try:
        import torch

        out["GPU"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # noqa: BLE001 - provenance only
        out["GPU"] = "unknown"
    return out


def _param_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "None" if value is None else str(value)


def rerun_command(notebook: str, params: dict, data_dir=None) -> str:
    """The papermill command (from the repository root) that reruns the notebook with ``params``."""
    env = []
    if _none(data_dir) is None and os.environ.get("STORM_DATA_DIR"):
        env.append(f"STORM_DATA_DIR={shlex.quote(os.environ['STORM_DATA_DIR'])}")
    if os.environ.get("STORM_NUM_THREADS"):
        env.append(f"STORM_NUM_THREADS={shlex.quote(os.environ['STORM_NUM_THREADS'])}")
    parts = ["papermill", "--cwd", "notebooks", f"notebooks/{notebook}.ipynb", f"{notebook}.out.ipynb"]
    for k, v in params.items():
        parts += ["-p", k, _param_text(v)]
    return " ".join(env + [shlex.quote(x) for x in parts])


def footer_info(ctx: Context) -> dict:
    """What :func:`footer` shows, as a dict (for tests and the book)."""
    runs = pd.concat(ctx.plans, ignore_index=True) if ctx.plans else pd.DataFrame(columns=["run_dir", "finished",
                                                                                          "status"])
    runs = runs.drop_duplicates("run_dir")
    used = runs[runs["finished"].astype(bool)] if len(runs) else runs
    secs = [_compute_seconds(p) for p in used["run_dir"]]
    universes = list(ctx.data)
    return {
        "versions": _versions(),
        "hardware": _hardware(),
        "wall_seconds": time.perf_counter() - ctx.started,
        "data": data_hashes(universes, ctx.params.get("data_dir"), ctx.cache) if universes else pd.DataFrame(),
        "runs": {"used": len(used), "run now": int((runs["status"] == "done").sum()) if len(runs) else 0,
                 "not finished": int(len(runs) - len(used)), "compute_seconds": float(sum(secs))},
        "command": rerun_command(ctx.notebook, ctx.raw, ctx.params.get("data_dir")),
    }


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "–"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def footer(ctx: Context, display: bool = True):
    """The environment-and-cost cell: versions, hardware, the notebook's wall time (from :func:`setup`),
    the data hashes of its universes, the runs it used (count, total compute recorded in their run.json)
    and the exact papermill command to rerun it. Displays markdown; returns the :func:`footer_info` dict
    when ``display`` is False."""
    info = footer_info(ctx)
    r = info["runs"]
    rows = {**{f"version: {k}": v for k, v in info["versions"].items()},
            **{f"hardware: {k}": v for k, v in info["hardware"].items()},
            "notebook wall time": f"{_duration(info['wall_seconds'])} (from the setup cell; runs executed here "
                                  "included)",
            "runs used": f"{r['used']} finished run(s), {r['run now']} of them run by this execution"
                         + (f"; {r['not finished']} not finished (left out)" if r["not finished"] else ""),
            "recorded compute": f"{_duration(r['compute_seconds'])} (the runs' wall_seconds in run.json, plus "
                                "the fits of interrupted attempts)"}
    for row in info["data"].itertuples():
        rows[f"data {row.universe}: prices sha256"] = row.prices
        rows[f"data {row.universe}: index sha256"] = row.index
    if not display:
        return info
    from IPython.display import Markdown, display as _display

    table = pd.DataFrame({"value": pd.Series(rows, dtype=object)}).rename_axis("environment and cost")
    _display(table.style.set_properties(**{"text-align": "left"}).set_table_styles(TABLE_CSS, overwrite=False),
             Markdown("Rerun (from the repository root):\n\n```bash\n" + info["command"] + "\n```"))
    return None



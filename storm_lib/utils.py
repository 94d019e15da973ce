"""Small shared helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch


REPO_ROOT = Path(__file__).resolve().parents[1]


def shown_path(path) -> str:
    """A path as a page or a run record may show it: relative to the repository root when inside it,
    ``$STORM_DATA_DIR`` when it is that directory, else only its last part (no machine-local absolute path)."""
    if path is None:
        return "None"
    p = Path(path).expanduser().resolve()
    try:
        return str(p.relative_to(REPO_ROOT)) or "."
    except ValueError:
        pass
    env = os.environ.get("STORM_DATA_DIR")
    if env and Path(env).expanduser().resolve() == p:
        return "$STORM_DATA_DIR"
    return f"…/{p.name}"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place, so readers
    never see a half-written file (an interrupted run leaves the old file or none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given; else CUDA when present, else CPU.

    CPU threads: ``$STORM_NUM_THREADS`` when set, else torch's default (one per physical core).
    On a machine shared with other jobs, 1 thread is often faster than 2.
    """
    import torch

    threads = os.environ.get("STORM_NUM_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

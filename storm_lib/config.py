"""Where data and caches live.

Every function takes an explicit argument first; environment variables are the fallback:

- ``STORM_DATA_DIR``: a directory holding ``dj30.parquet``, ``sp500.parquet``, ``indices.parquet``
  and ``universes.json`` (the schema of ``storm_lib.data``).
- ``STORM_CACHE_DIR``: where downloads and computed features are cached
  (default ``~/.cache/storm_lib``).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "STORM_DATA_DIR"
CACHE_ENV = "STORM_CACHE_DIR"


def user_path(value: str | os.PathLike) -> Path:
    """A path the user gave, made absolute. A relative path is read from the working directory; when
    that is the repository's ``notebooks/`` (papermill ``--cwd notebooks``, as ``make book`` runs) and the
    path does not exist there, from the repository root, where the user typed it."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    here = Path.cwd() / path
    repo = Path(__file__).resolve().parent.parent
    if not here.exists() and Path.cwd().resolve() == repo / "notebooks" and (repo / path).exists():
        return (repo / path).resolve()
    return here.resolve()


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data directory: ``explicit`` if given, else ``$STORM_DATA_DIR``, else None (a relative path:
    :func:`user_path`)."""
    value = explicit if explicit is not None else os.environ.get(DATA_ENV)
    if value in (None, ""):
        return None
    path = user_path(value)
    if path.is_dir():
        return path
    path = Path(value).expanduser()
    if not path.is_dir():
        source = "argument data_dir" if explicit is not None else f"${DATA_ENV}"
        where = "" if path.is_absolute() else (
            f" (a relative path is read from the working directory {os.getcwd()!r}, e.g. notebooks/ under "
            f"papermill --cwd notebooks: give an absolute path, e.g. {str(path.resolve())!r} is "
            f"{'' if path.resolve().is_dir() else 'not '}a directory)")
        raise FileNotFoundError(f"{source} points to {str(path)!r}, which is not a directory{where}")
    return path


def cache_dir(sub: str | None = None, explicit: str | os.PathLike | None = None) -> Path:
    """The cache directory (created if missing), or its subdirectory ``sub``."""
    value = explicit if explicit is not None else os.environ.get(CACHE_ENV)
    root = Path(value).expanduser() if value else Path.home() / ".cache" / "storm_lib"
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path

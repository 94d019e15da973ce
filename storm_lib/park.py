"""Park interrupted runs: carry their checkpoints to another machine, job or session.

An interrupted run (a killed process, the end of a cluster job or of a session on a machine that is
not kept) leaves its checkpoints in ``<results>/<task>/<universe>/<model>/.<run>.partial/scratch/``:
ignored by git and local to the machine, so a run longer than one job could never finish.
``python -m storm_lib.park save`` copies the ``scratch/`` of every partial run whose process is gone
into a parking directory (default ``parked/`` at the repository root), under the same relative path;
``python -m storm_lib.park restore`` (on the next machine, results directory and code at the same
version) puts each one back, and the next ``python -m storm_lib.run`` of that spec resumes its fit from
the last checkpoint (``info.resumed_from_epoch``; :func:`storm_lib.run.compute_seconds` counts the
epochs of both attempts). A resumed fit equals the uninterrupted one: the checkpoint holds the model,
optimiser, schedule and random-number states (tests/test_park.py).

Moving the parking directory between machines is the user's part (a shared disk, rsync, a commit).
Partials still owned by a live process are not saved: stop the run first.

``save --fits`` also carries the shared fit store (``$STORM_CACHE_DIR/fits``,
:mod:`storm_lib.tasks.fits`) to ``<parking directory>/fits/``: its entries that the current training
code can still use (the fit key hashes that code, so an entry of other code could never be restored).
A run on the next machine whose fit is one of them (an audit run that only changes the evaluation,
the trading task's STORM) then restores it instead of refitting. ``restore`` puts parked fits back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .run import PARTIAL_SUFFIX, claimed_by, fits_dir, is_finished, results_root
from .utils import REPO_ROOT

DEFAULT_DIR = REPO_ROOT / "parked"


def partials(results_dir=None) -> list[Path]:
    """The partial run directories under the results root (relative to it), sorted."""
    root = results_root(results_dir)
    return sorted(p.relative_to(root) for p in root.glob(f"*/*/*/.*{PARTIAL_SUFFIX}") if p.is_dir())


def final_of(partial: Path) -> Path:
    """The finished run directory a partial becomes: ``.<name>.partial`` -> ``<name>``."""
    return partial.with_name(partial.name[1:-len(PARTIAL_SUFFIX)])


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def save(results_dir=None, dest=None) -> list[dict]:
    """Copy the ``scratch/`` of every partial run with checkpoints and no live process to ``dest``
    (replacing an older parked copy of the same run). Returns one row per partial: ``run`` (relative
    path), ``status`` (parked / running / empty) and ``bytes``."""
    root, dest = results_root(results_dir), Path(dest or DEFAULT_DIR)
    rows = []
    for rel in partials(results_dir):
        scratch = root / rel / "scratch"
        if claimed_by(root / rel):
            rows.append({"run": rel.as_posix(), "status": "running", "bytes": 0})
            continue
        if not scratch.is_dir() or not any(f.is_file() for f in scratch.rglob("*")):
            rows.append({"run": rel.as_posix(), "status": "empty", "bytes": 0})
            continue
        target = dest / rel / "scratch"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(scratch, target)
        rows.append({"run": rel.as_posix(), "status": "parked", "bytes": _size(target)})
    return rows


def _copy_entry(files: list[Path], folder: Path) -> None:
    """Copy one fit-store entry into ``folder``, its ``.json`` last: that file marks the entry complete."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted(files, key=lambda f: f.suffix == ".json"):
        shutil.copy2(f, folder / f.name)


def save_fits(dest=None, store=None) -> list[dict]:
    """Copy the fit store's entries made by the current training code to ``dest/fits/`` (entries of
    other code, and entries parked already, are skipped). One row per entry: ``run``
    (``fits/<key prefix>``), ``status`` (parked / already parked / other code) and ``bytes``."""
    from .tasks.fits import store_entries, training_source_hash

    store = Path(store) if store is not None else fits_dir()
    if store is None or not store.is_dir():
        return []
    target, source, rows = Path(dest or DEFAULT_DIR) / "fits", training_source_hash(), []
    for key, files in store_entries(store):
        row = {"run": f"fits/{key[:16]}", "bytes": sum(f.stat().st_size for f in files)}
        meta = json.loads((store / f"{key}.json").read_text())
        if meta.get("source") != source:
            rows.append({**row, "status": "other code", "bytes": 0})
            continue
        if (target / f"{key}.json").is_file():
            rows.append({**row, "status": "already parked"})
            continue
        _copy_entry(files, target)
        rows.append({**row, "status": "parked"})
    return rows


def restore_fits(src=None, store=None) -> list[dict]:
    """Move the parked fits back into the fit store (``restored``; an entry the store has already is
    ``kept`` there and its parked copy dropped)."""
    from .tasks.fits import store_entries

    parked = Path(src or DEFAULT_DIR) / "fits"
    store = Path(store) if store is not None else fits_dir()
    if store is None or not parked.is_dir():
        return []
    rows = []
    for key, files in store_entries(parked):
        have = (store / f"{key}.json").is_file()
        if not have:
            _copy_entry(files, store)
        for f in files:
            f.unlink()
        rows.append({"run": f"fits/{key[:16]}", "status": "kept" if have else "restored"})
    if not any(parked.iterdir()):
        parked.rmdir()
    return rows


def restore(results_dir=None, src=None) -> list[dict]:
    """Put every parked run back under the results root and remove it from ``src``. A run that has
    finished meanwhile drops its parked copy (``stale``); a run that already has checkpoints here keeps
    them and the parked copy stays (``kept``). Returns one row per parked run: ``run``, ``status``
    (restored / stale / kept)."""
    root, src = results_root(results_dir), Path(src or DEFAULT_DIR)
    rows = []
    for scratch in sorted(src.glob(f"*/*/*/.*{PARTIAL_SUFFIX}/scratch")):
        rel = scratch.parent.relative_to(src)
        here = root / rel / "scratch"
        if is_finished(root / final_of(rel)):
            status = "stale"
        elif here.is_dir() and any(f.is_file() for f in here.rglob("*")):
            rows.append({"run": rel.as_posix(), "status": "kept"})
            continue
        else:
            shutil.rmtree(here, ignore_errors=True)
            shutil.copytree(scratch, here)
            status = "restored"
        shutil.rmtree(scratch.parent)
        for folder in [scratch.parent.parent, *scratch.parent.parent.parents]:  # prune emptied folders
            if folder == src or src not in folder.parents or any(folder.iterdir()):
                break
            folder.rmdir()
        rows.append({"run": rel.as_posix(), "status": status})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storm_lib.park", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["save", "restore", "list"],
                    help="save: copy interrupted runs' checkpoints out; restore: put them back; list: partial runs")
    ap.add_argument("--results-dir", default=None)
    ap.add_argument("--dir", default=None, help=f"the parking directory (default {DEFAULT_DIR.name}/ at the repository root)")
    ap.add_argument("--fits", action="store_true",
                    help="save: also carry the shared fit store's entries of the current training code "
                         "(restore always puts parked fits back)")
    args = ap.parse_args(argv)
    if args.action == "list":
        root = results_root(args.results_dir)
        for rel in partials(args.results_dir):
            state = "running" if claimed_by(root / rel) else "stopped"
            print(f"{state:8s} {_size(root / rel) / 2**20:7.1f} MB  {rel.as_posix()}")
        return 0
    if args.action == "save":
        rows = save(args.results_dir, args.dir) + (save_fits(args.dir) if args.fits else [])
        for r in rows:
            print(f"{r['status']:8s} {r['bytes'] / 2**20:7.1f} MB  {r['run']}")
        if any(r["status"] == "running" for r in rows):
            print("runs still owned by a live process were not saved: stop them and save again", file=sys.stderr)
        return 0
    for r in restore(args.results_dir, args.dir) + restore_fits(args.dir):
        print(f"{r['status']:8s} {r['run']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

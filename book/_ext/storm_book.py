"""Sphinx guard for the STORM book: no page may silently be missing.

The Results part of ``_toc.yml`` globs ``notebooks/*``: the executed copies that ``make book`` writes
into ``book/notebooks/`` from the repository's ``notebooks/*.ipynb``. A glob cannot tell a notebook
that was never executed from one that does not exist, so this extension emits a warning (the build runs
with ``-W``, so the build fails) when

* a source notebook ``notebooks/<name>.ipynb`` has no executed copy ``book/notebooks/<name>.ipynb``,
  or the copy is older than the source;
* an executed copy has no source notebook any more (a stale page);
* an executed copy records a papermill exception or holds an error output;
* a generated include of ``_generated/`` is missing (``make book`` writes them).

Its only configuration: ``storm_generated`` (file names expected under ``_generated/``).

It also drops sphinx-thebe's scripts from every page: thebe is off (``launch_buttons.thebe: false``),
yet jupyter-book registers the extension, whose inline ``const THEBE_JS_URL = ...`` configuration was
added twice per page ("Identifier 'THEBE_JS_URL' has already been declared" in the browser console) and
whose loader points at a CDN the offline site never uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)
HINT = "run `make book` (it executes notebooks/*.ipynb into book/notebooks/ and writes book/_generated/)"


def _warn(msg: str) -> None:
    logger.warning(f"{msg}; {HINT}", type="storm", subtype="book")


def _notebook_errors(path: Path) -> list[str]:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"unreadable ({exc})"]
    errors = []
    pm = nb.get("metadata", {}).get("papermill", {})
    if pm.get("exception"):
        errors.append("papermill recorded an exception")
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []) or []:
            if out.get("output_type") == "error":
                errors.append(f"cell {i} raised {out.get('ename', 'an error')}")
    return errors


def hide_injected_parameters(built_dir: Path) -> None:
    """papermill's injected "# Parameters" cell (tag ``injected-parameters``) gets ``remove-input``: the page
    shows the parameters through the setup cell's printout, not as code (the other cells carry their
    ``hide-input`` / ``remove-input`` tags from tools/make_notebooks.py)."""
    for path in sorted(built_dir.glob("*.ipynb")):
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        changed = False
        for cell in nb.get("cells", []):
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags and "remove-input" not in tags:
                cell["metadata"]["tags"] = tags + ["remove-input"]
                changed = True
        if changed:
            stat = path.stat()
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            os.utime(path, (stat.st_atime, stat.st_mtime))   # keep make's view of the executed copy


def check_book(app) -> None:
    book = Path(app.srcdir)
    source_dir = book.parent / "notebooks"
    built_dir = book / "notebooks"
    sources = {p.stem: p for p in sorted(source_dir.glob("*.ipynb"))}
    built = {p.stem: p for p in sorted(built_dir.glob("*.ipynb"))}
    hide_injected_parameters(built_dir)
    for name, src in sources.items():
        out = built.get(name)
        if out is None:
            _warn(f"notebooks/{name}.ipynb has no executed copy book/notebooks/{name}.ipynb")
        elif out.stat().st_mtime < src.stat().st_mtime:
            _warn(f"book/notebooks/{name}.ipynb is older than notebooks/{name}.ipynb")
    for name, out in built.items():
        if name not in sources:
            _warn(f"book/notebooks/{name}.ipynb has no source notebook notebooks/{name}.ipynb (stale page)")
            continue
        for err in _notebook_errors(out):
            _warn(f"book/notebooks/{name}.ipynb: {err}")
    for name in app.config.storm_generated:
        if not (book / "_generated" / name).is_file():
            _warn(f"book/_generated/{name} is missing")


def _is_thebe(script) -> bool:
    name = str(getattr(script, "filename", "") or "")
    body = str(getattr(script, "attributes", {}).get("body", "") or "")
    return name.endswith("sphinx-thebe.js") or "thebe" in name.lower() or "THEBE_JS_URL" in body


def drop_thebe(app, pagename, templatename, context, doctree) -> None:
    """Remove the (unused, duplicated) thebe scripts of a page; keep every other script once."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for sc in scripts:
        key = (str(getattr(sc, "filename", sc)), str(getattr(sc, "attributes", {}).get("body", "")))
        if _is_thebe(sc) or key in seen:
            continue
        seen.add(key)
        kept.append(sc)
    context["script_files"] = kept


def setup(app):
    app.add_config_value("storm_generated", ["verdict.md", "verdict_tests.md", "claims.md", "mcs.md", "forest.png",
                                             "improvement_check.md"], "env")
    app.connect("builder-inited", check_book)
    app.connect("html-page-context", drop_thebe)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

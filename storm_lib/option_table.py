"""The option keys each model's portfolio runs accept, as a static table (``option_keys.json``), so that
``python -m storm_lib.run`` refuses a misspelled ``--option`` in well under a second, before it imports
torch and pandas. The table is computed from the models' own keywords (:func:`storm_lib.run.valid_model_options`)
by ``python -m storm_lib.option_table --write``; ``tests/test_cli_options.py`` fails when it drifts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TABLE = Path(__file__).with_name("option_keys.json")


def compute() -> dict:
    """{"task_options": [...], "models": {name: {"valid": [...], "listed": text}}} (imports every model)."""
    from .models import MODEL_NAMES
    from .run import valid_model_options
    from .tasks.portfolio import RESERVED, TASK_OPTIONS

    models = {}
    for name in MODEL_NAMES:
        valid, listed = valid_model_options(name, RESERVED, TASK_OPTIONS)
        models[name] = {"valid": sorted(valid), "listed": listed}
    return {"task_options": list(TASK_OPTIONS), "models": models}


def precheck(argv: list[str]) -> None:
    """Exit with status 2 when a portfolio run names an option key none of its registry models accepts
    (the same message as :func:`storm_lib.run.check_spec`); anything else is left to the full checks."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--task")
    ap.add_argument("--model", nargs="+", default=[])
    ap.add_argument("--option", action="append", default=[])
    try:
        args, _ = ap.parse_known_args(argv)
    except SystemExit:          # malformed: the real parser says why
        return
    if args.task != "portfolio" or not args.option or not TABLE.is_file():
        return
    table = json.loads(TABLE.read_text())
    task_options = table["task_options"]
    keys = {item.partition("=")[0].strip() for item in args.option if "=" in item}
    for model in args.model:
        entry = table["models"].get(model)
        if entry is None:       # pseudo-models (market, floors) check their own options later
            continue
        bad = sorted(keys - set(entry["valid"]) - set(task_options))
        if bad:
            print(f"error: unknown option(s) {bad} for model {model!r}. Valid model options: "
                  f"{entry['listed']}; task options: {', '.join(task_options)}", file=sys.stderr)
            raise SystemExit(2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help=f"write {TABLE.name}")
    a = ap.parse_args(argv)
    text = json.dumps(compute(), indent=1, sort_keys=True) + "\n"
    if a.write:
        TABLE.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

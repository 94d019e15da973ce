# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Everything runs from a local virtualenv built from pyproject.toml (torch pinned ==2.13.0).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

## The project's main job on the embedded real sample, fully offline.
demo: setup
	$(BIN)/storm demo --source sample

## The test suite (tests that need the real data read $$STORM_DATA_DIR).
test: setup
	$(BIN)/python -m pytest -q

## Speed figures (needs $$STORM_DATA_DIR; prints, asserts nothing).
bench: setup
	$(BIN)/python benchmarks/features.py --universe sp500
	$(BIN)/python benchmarks/features.py --universe dj30
	$(BIN)/python benchmarks/storm.py speed --universe dj30 sp500 --profile cpu --variant storm wo_ts wo_cs

clean:
	rm -rf $(VENV) .pytest_cache book/_build

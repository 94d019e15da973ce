# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Everything runs from a local virtualenv built from pyproject.toml (torch pinned ==2.13.0).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean book book-smoke book-pages book-clean FORCE

## papermill runs the notebooks with --cwd notebooks: a relative data directory is made absolute here
## (relative to where make runs, the repository root), so `STORM_DATA_DIR=../shared/data make book` works.
ifneq ($(strip $(STORM_DATA_DIR)),)
export STORM_DATA_DIR := $(abspath $(STORM_DATA_DIR))
endif

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

## The project's main job, fully offline: paper Tables 1/2 (portfolio management, every model) run
## through papermill on the embedded real sample at the smoke profile -> out/table2_portfolio.ipynb.
DEMO_PARAMS ?= -p universes sample -p protocol sample -p profile smoke -p results_dir $(CURDIR)/out/results
demo: setup
	@mkdir -p out
	JUPYTER_PREFER_ENV_PATH=1 $(BIN)/papermill --kernel python3 --cwd notebooks --no-progress-bar \
	  notebooks/table2_portfolio.ipynb out/table2_portfolio.ipynb $(DEMO_PARAMS)
	@echo "demo: the executed notebook is out/table2_portfolio.ipynb (open it in Jupyter)"

## The test suite (tests that need the real data read $$STORM_DATA_DIR), on TEST_WORKERS processes
## (pytest-xdist; 0 = in this process). The tests keep to one thread each (STORM_NUM_THREADS in CI).
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=10

## Speed figures (needs $$STORM_DATA_DIR; prints, asserts nothing).
bench: setup
	$(BIN)/python benchmarks/features.py --universe sp500
	$(BIN)/python benchmarks/features.py --universe dj30
	$(BIN)/python benchmarks/storm.py speed --universe dj30 sp500 --profile cpu --variant storm wo_ts wo_cs

clean:
	rm -rf $(VENV) .pytest_cache out book/_build book/_generated book/notebooks

## The Jupyter Book (book/): execute every notebooks/*.ipynb with papermill into book/notebooks/
## (parameters: BOOK_PARAMS; the default builds the site from the committed results/ and runs nothing,
## with or without a data directory; `make book-smoke` runs every notebook at the smoke profile on DJ30
## with its runs in out/book-results, never in the committed results/), write the generated
## includes (verdict table from results/), then build offline with any warning failing the build.
## A notebook is re-executed when it, storm_lib, results/ or BOOK_PARAMS changed.
BOOK_PARAMS ?= -p run_missing False
RESULTS     ?= results
BOOK_NBS    := $(patsubst notebooks/%,book/notebooks/%,$(wildcard notebooks/*.ipynb))
BOOK_DEPS   := $(shell find storm_lib $(RESULTS) -type f ! -name '*.pyc' ! -path '*/.*' 2>/dev/null)
export BOOK_PARAMS
.DELETE_ON_ERROR:

book: book-pages
	$(BIN)/python -m storm_lib.report book --out-dir book/_generated --results $(RESULTS)
	$(BIN)/jupyter-book build book -W --keep-going --all
	@echo "book: open book/_build/html/index.html (screenshots: book/screenshots.sh)"

## Executed notebooks only; executed copies whose source notebook is gone are removed.
book-pages: setup $(BOOK_NBS)
	@for f in book/notebooks/*.ipynb; do [ -e "$$f" ] || continue; \
	  [ -e "notebooks/$$(basename "$$f")" ] || { echo "removing stale $$f"; rm -f "$$f"; }; done

book/_generated/params: FORCE
	@mkdir -p $(@D)
	@printf '%s\n' "$$BOOK_PARAMS" | cmp -s - $@ || printf '%s\n' "$$BOOK_PARAMS" > $@

book/notebooks/%.ipynb: notebooks/%.ipynb book/_generated/params $(BOOK_DEPS) | setup
	@mkdir -p $(@D)
	JUPYTER_PREFER_ENV_PATH=1 $(BIN)/papermill --kernel python3 --cwd notebooks --no-progress-bar \
	  $< $@ $(BOOK_PARAMS)

SMOKE_PARAMS ?= -p profile smoke -p universes dj30 -p seeds 0 -p results_dir $(CURDIR)/out/book-results
book-smoke: BOOK_PARAMS = $(SMOKE_PARAMS)
book-smoke: book

book-clean:
	rm -rf book/_build book/_generated book/notebooks

FORCE:

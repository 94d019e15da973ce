"""Paper Table 2's notebook through papermill on a universe the project names nowhere (8 of the embedded
sample's stocks, 1996-2003, a CSV file) with its own split dates, at the smoke profile: the runs, the
tables with the equal-weight benchmark and "ours only" (no paper numbers), and the footer."""

import json
import os
from pathlib import Path

import pytest

from storm_lib import data

ROOT = Path(__file__).resolve().parent.parent
TICKERS = ["AAPL", "AMD", "BAC", "CVX", "HD", "KO", "MSFT", "PG"]
SPLIT = "train=1997-01-02:2000-12-29,valid=2001-01-02:2001-12-31,test=2002-01-02:2003-06-30"


def _text(book: dict) -> str:
    out = []
    for cell in book["cells"]:
        for o in cell.get("outputs", []):
            out.append("".join(o.get("text", "")))
            for v in (o.get("data") or {}).values():
                out.append(v if isinstance(v, str) else "".join(v) if isinstance(v, list) else "")
    return "\n".join(out)


def test_table2_notebook_on_a_price_file_with_its_own_split(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    prices = data.load_prices("sample", "1996-01-02", "2003-06-30", tickers=TICKERS)
    universe = tmp_path / "eight.csv"
    prices.to_csv(universe, index=False)
    monkeypatch.delenv("STORM_DATA_DIR", raising=False)  # no data directory needed for a file
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "table2.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "table2_portfolio.ipynb"), str(out), cwd=str(ROOT / "notebooks"),
        kernel_name="python3", progress_bar=False,
        parameters=dict(universes=str(universe), split=SPLIT, models="market,lightgbm", seeds="0",
                        profile="smoke", results_dir=str(tmp_path / "results")))
    book = json.loads(out.read_text())
    text = _text(book)
    assert "benchmark: equal-weight buy-and-hold of its stocks" in text and "Market Index row: the equal-weight" in text
    assert f"split dates: {SPLIT}" in text
    assert "OURS ONLY" in text and "no paper number" in text
    assert "**eight**" in text or "eight, test split" in text
    runs = sorted((tmp_path / "results" / "portfolio" / "eight").glob("*/split-*-smoke-seed0-*/run.json"))
    assert [p.parts[-3] for p in runs] == ["lightgbm", "market"]
    rec = json.loads(runs[1].read_text())
    assert rec["info"]["index"] == "equal_weight" and rec["spec"]["protocol"] == SPLIT


def test_pages_of_finished_runs_need_no_data(tmp_path, monkeypatch, capsys):
    """run_missing=False without any data: the committed runs are found from their run.json records."""
    from storm_lib import presentation as nb

    monkeypatch.delenv("STORM_DATA_DIR", raising=False)
    monkeypatch.setenv("STORM_CACHE_DIR", str(tmp_path / "cache"))
    ctx = nb.setup("t", universes="dj30", models="storm,lightgbm", seeds="all", protocol="clean", profile="cpu",
                   data_dir=None, results_dir=None, run_missing=False)
    assert ctx.no_data == ["dj30"] and ctx.data == {}
    assert "none at hand" in capsys.readouterr().out
    plan = ctx.ensure(ctx.specs("portfolio"))
    if not plan["finished"].any():
        pytest.skip("no committed DJ30 runs")
    assert plan["finished"].all() and len(plan) >= 2
    assert not nb.load_metrics(plan).empty

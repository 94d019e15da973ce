"""The runner's command line on a universe the project names nowhere (built here from the embedded
sample: 6 of its 20 stocks, 1995-2001, with its own split dates), and its checks that fail before
anything runs: misspelled options, split dates the data cut short."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from storm_lib import data, portfolio
from storm_lib import run as runner

TICKERS = ["AAPL", "JPM", "KO", "PG", "XOM", "BAC"]
SPLIT = "train=1996-01-02:1998-12-31,valid=1999-01-04:1999-12-31,test=2000-01-03:2000-12-29"


@pytest.fixture(scope="module")
def universe(tmp_path_factory) -> Path:
    """A price file of another universe and period: 6 sample stocks, 1995-01-03..2001-06-29, CSV."""
    prices = data.load_prices("sample", "1995-01-03", "2001-06-29", tickers=TICKERS)
    path = tmp_path_factory.mktemp("universe") / "mystocks.csv"
    prices.to_csv(path, index=False)
    return path


def _args(universe, tmp_path, *extra):
    return ["--task", "portfolio", "--universe", str(universe), "--profile", "smoke", "--results-dir",
            str(tmp_path), "--quiet", *extra]


def test_a_misspelled_option_fails_before_anything_runs(tmp_path, capsys):
    for model, hint in [("storm", "codebook_size"), ("lightgbm", "any LightGBM parameter"), ("lstm", "hidden")]:
        rc = runner.main(["--task", "portfolio", "--universe", "sample", "--model", model, "--option",
                          "codebok_size=8", "--results-dir", str(tmp_path), "--dry-run"])
        err = capsys.readouterr().err
        assert rc == 2 and f"unknown option(s) ['codebok_size'] for model {model!r}" in err and hint in err
    assert not any(tmp_path.iterdir())                      # nothing was run or written
    rc = runner.main(["--task", "portfolio", "--universe", "sample", "--model", "market", "--option", "hidden=3",
                      "--results-dir", str(tmp_path), "--dry-run"])
    assert rc == 2 and "market index row takes no options" in capsys.readouterr().err


def test_split_dates_the_data_cut_short_are_an_error_unless_accepted(universe, tmp_path, capsys):
    short = SPLIT.replace("2000-12-29", "2001-12-31")          # the file ends 2001-06-29
    rc = runner.main(_args(universe, tmp_path, "--model", "market", "--split", short, "--dry-run"))
    assert rc == 2 and "cut short by the data" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="accepted .allow_short.: the test span is cut short"):
        rc = runner.main(_args(universe, tmp_path, "--model", "market", "--split", short, "--allow-short", "--dry-run"))
    assert rc == 0 and "todo" in capsys.readouterr().out
    rc = runner.main(_args(universe, tmp_path, "--model", "market", "--dry-run"))  # clean: 2008-2024
    assert rc == 2 and "after the data end" in capsys.readouterr().err


def test_the_cli_runs_another_universe_with_its_own_split_and_the_equal_weight_benchmark(universe, tmp_path, capsys):
    rc = runner.main(_args(universe, tmp_path, "--model", "lightgbm", "market", "--split", SPLIT))
    out = capsys.readouterr().out
    assert rc == 0, out
    res = runner.load_results(tmp_path)
    assert set(res["model"]) == {"lightgbm", "market"} and set(res["universe"]) == {str(universe)}
    runs = {rec["spec"]["model"]: (path, rec) for path, rec in runner.finished_runs(tmp_path)}
    path, rec = runs["lightgbm"]
    assert path.parts[-3:-1] == ("mystocks", "lightgbm") and path.name.startswith("split-")
    assert rec["spec"]["protocol"] == SPLIT and rec["info"]["index"] == "equal_weight"
    assert rec["info"]["benchmark"]["kind"] == "equal_weight" and rec["info"]["benchmark"]["test_stocks"] == 6
    assert rec["identity"]["data"]["index"] == "equal_weight"
    assert rec["info"]["test_days"][0] == "2000-01-03" and rec["info"]["test_days"][1] == "2000-12-28"
    assert "--universe" in rec["command"] and str(universe) in rec["command"]
    # the benchmark is the equal-weight buy-and-hold of the six stocks over the test span, total return
    daily = runner.load_table(path, "daily")
    wide = data.to_wide(data.load_prices(str(universe)))
    labels = (wide.shift(-1) / wide - 1).loc[daily.index]
    np.testing.assert_allclose(daily["benchmark"], portfolio.equal_weight_buy_and_hold(labels), rtol=1e-9)
    market = runner.load_table(runs["market"][0], "daily")
    np.testing.assert_allclose(market["return"], daily["benchmark"], rtol=1e-12)
    # the rerun skips both; the same split given as a file is the same run
    split_file = tmp_path / "split.txt"
    split_file.write_text(SPLIT.replace(",", "\n") + "\n")
    assert runner.main(_args(universe, tmp_path, "--model", "lightgbm", "market", "--split", str(split_file))) == 0
    assert capsys.readouterr().out.count("skipped:") == 2


def test_the_data_hash_keeps_runs_of_different_files_apart(universe, tmp_path):
    other = tmp_path / "elsewhere" / "mystocks.csv"                 # same stem, other prices
    other.parent.mkdir()
    prices = pd.read_csv(universe)
    prices.loc[prices["ticker"] == "KO", "adj_close"] *= 1.01
    prices.to_csv(other, index=False)
    ctx = runner.RunContext(progress=False)
    a = runner.run_dir(runner.RunSpec("portfolio", str(universe), "market", SPLIT, "smoke"), tmp_path, ctx)
    b = runner.run_dir(runner.RunSpec("portfolio", str(other), "market", SPLIT, "smoke"), tmp_path, ctx)
    assert a.parent == b.parent and a != b
    ia = runner.identity(runner.RunSpec("portfolio", str(universe), "market", SPLIT, "smoke"), ctx)
    ib = runner.identity(runner.RunSpec("portfolio", str(other), "market", SPLIT, "smoke"), ctx)
    assert ia["data"]["prices"] != ib["data"]["prices"]


def test_an_index_file_can_be_the_benchmark(universe, tmp_path, capsys):
    idx = data.load_index("SP500")
    index_file = tmp_path / "myindex.csv"
    pd.DataFrame({"date": idx.index, "close": idx.to_numpy()}).to_csv(index_file, index=False)
    rc = runner.main(_args(universe, tmp_path / "res", "--model", "market", "--split", SPLIT,
                           "--option", f"benchmark={index_file}"))
    assert rc == 0, capsys.readouterr().err
    (path, rec), = runner.finished_runs(tmp_path / "res")
    assert rec["info"]["index"] == "myindex" and rec["info"]["benchmark"]["kind"] == "index"
    assert rec["identity"]["data"]["benchmark"] != "equal_weight"
    daily = runner.load_table(path, "daily")
    np.testing.assert_allclose(daily["benchmark"], portfolio.benchmark_returns(idx, daily.index), rtol=1e-9)
    rc = runner.main(_args(universe, tmp_path, "--model", "market", "--split", SPLIT, "--option",
                           "benchmark=nowhere.csv", "--dry-run"))
    assert rc == 2 and "benchmark must be equal_weight" in capsys.readouterr().err


def test_finished_runs_are_found_from_their_records_without_data(universe, tmp_path, capsys):
    assert runner.main(_args(universe, tmp_path, "--model", "market", "--split", SPLIT)) == 0
    capsys.readouterr()
    spec = runner.RunSpec("portfolio", str(universe), "market", SPLIT, "smoke")
    (path, _), = runner.finished_runs(tmp_path)
    moved = universe.with_name("moved.csv")
    universe.rename(moved)                                   # no data at hand now
    try:
        assert runner.find_finished(spec, tmp_path) == path
        assert runner.find_finished(runner.RunSpec("portfolio", str(universe), "market", SPLIT, "smoke", 1),
                                    tmp_path) is None    # another seed: not run
        assert runner.find_finished(runner.RunSpec("portfolio", str(universe), "market", "clean", "smoke"),
                                    tmp_path) is None
    finally:
        moved.rename(universe)


def test_every_committed_run_is_found_without_data():
    """`make book` with no data directory finds the committed runs from their run.json records."""
    runs = runner.finished_runs(runner.results_root())
    if not runs:
        pytest.skip("no committed results")
    old = runner.superseded_runs(runs)   # superseded runs (an older model version or budget) are not looked for
    current = [(p, rec) for p, rec in runs if p not in old]
    missing = [str(p) for p, rec in current if runner.find_finished(runner._spec_of(rec)) != p]
    assert not missing, missing[:5]


def test_the_static_option_table_matches_the_models():
    """storm_lib/option_keys.json (read by the command line before torch is imported) is what the models
    accept today; regenerate it with `python -m storm_lib.option_table --write` when this fails."""
    from storm_lib import option_table

    assert json.loads(option_table.TABLE.read_text()) == json.loads(json.dumps(option_table.compute()))


def test_a_misspelled_option_is_refused_before_torch_is_imported():
    code = ("import sys, runpy\n"
            "sys.argv = ['storm_lib.run', '--task', 'portfolio', '--universe', 'dj30', '--model', 'storm', 'lstm',\n"
            "            '--option', 'codebok_size=8', '--dry-run']\n"
            "try:\n"
            "    runpy.run_module('storm_lib.run', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    print('exit', e.code, 'torch' in sys.modules, 'pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "exit 2 False False", out.stdout + out.stderr
    assert "unknown option(s) ['codebok_size'] for model 'storm'" in out.stderr and "codebook_size" in out.stderr

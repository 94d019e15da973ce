"""The replication notebooks: structure (fast, no execution) and the glue they call.

Structural checks read ``notebooks/*.ipynb`` as JSON: a ``parameters``-tagged first code cell, kernel
``python3``, no stored outputs, imports only from storm_lib and standard or scientific libraries, every
parameter handed to ``nb.setup`` and a footer cell at the end. The unit tests exercise
``storm_lib.presentation`` and ``storm_lib.plots`` on tiny synthetic run directories (no model is fitted).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from storm_lib import plots
from storm_lib import presentation as nb
from storm_lib.presentation import paper as report
from storm_lib.models import model_version
from storm_lib.run import RunSpec, run_grid

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = {"table2_portfolio", "table3_trading", "table4_rankic", "ablation", "fig3_codebook", "audit", "budget"}
AUDIT_PARAMS = {"universes": ["dj30"], "models": ["storm", "lightgbm"], "seeds": "all", "profile": "cpu",
                "data_dir": None, "results_dir": None, "run_missing": True, "executor": "local"}
BUDGET_PARAMS = {"universes": ["dj30", "sp500"], "models": ["storm", "storm_wo_ts", "storm_wo_cs", "factorvae", "transformer"],
                 "seeds": "all", "protocol": "clean", "profile": "cpu", "data_dir": None, "results_dir": None,
                 "run_missing": False, "executor": "local"}  # False: the grid is hours; CI's smoke book must not run it
ALLOWED_IMPORTS = {"storm_lib", "IPython", "numpy", "pandas", "matplotlib", "scipy"} | set(sys.stdlib_module_names)
COMMON_PARAMS = {"seeds", "protocol", "profile", "convention", "data_dir", "results_dir", "run_missing", "models",
                 "executor"}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def _code_cells(book):
    return [c for c in book["cells"] if c["cell_type"] == "code"]


def _params(book) -> dict:
    tree = ast.parse(_source(_code_cells(book)[0]))
    out = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign), f"parameters cell: only plain assignments, got {ast.dump(node)[:60]}"
        out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def _setup_call(book) -> ast.Call:
    for cell in _code_cells(book):
        for node in ast.walk(ast.parse(_source(cell))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "setup":
                return node
    raise AssertionError("no nb.setup(...) call")


def _notebooks():
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_notebooks_exist():
    assert {p.stem for p in _notebooks()} == EXPECTED


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
class TestStructure:
    def test_kernel_and_parameters_cell(self, path):
        book = _load(path)
        assert book["metadata"]["kernelspec"]["name"] == "python3"
        first = _code_cells(book)[0]
        assert "parameters" in first["metadata"].get("tags", [])
        assert book["cells"].index(first) <= 1  # at most one markdown cell (the title) before it

    def test_no_stored_outputs(self, path):
        for cell in _code_cells(_load(path)):
            assert cell.get("outputs") == [] and cell.get("execution_count") is None
        assert "papermill" not in _load(path)["metadata"]

    def test_imports_only_storm_lib_and_standard_libraries(self, path):
        for cell in _code_cells(_load(path)):
            for node in ast.walk(ast.parse(_source(cell))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    assert name.split(".")[0] in ALLOWED_IMPORTS, f"{path.name} imports {name}"

    def test_parameters_and_defaults(self, path):
        p = _params(_load(path))
        if path.stem == "audit":  # its own parameters: no protocol (it sets them) nor convention (it reads both)
            assert p == AUDIT_PARAMS
            return
        if path.stem == "budget":  # no convention (it reads RankIC only)
            assert p == BUDGET_PARAMS
            return
        assert COMMON_PARAMS <= set(p), f"missing {COMMON_PARAMS - set(p)}"
        assert p["seeds"] == "all" and p["protocol"] == "clean" and p["profile"] == "cpu"
        assert p["data_dir"] is None and p["results_dir"] is None and p["run_missing"] is True
        assert p["executor"] == "local"
        assert "universes" in p or "universe" in p
        if path.stem in ("table2_portfolio", "table4_rankic", "ablation"):
            assert p["universes"] == ["dj30", "sp500"]
        if path.stem in ("table2_portfolio", "ablation", "table3_trading"):
            assert p["convention"] == "paper"

    def test_every_parameter_goes_to_setup_under_its_name(self, path):
        book = _load(path)
        call = _setup_call(book)
        assert isinstance(call.args[0], ast.Constant) and call.args[0].value == path.stem
        kwargs = {k.arg: k.value for k in call.keywords if k.arg != "conventions"}
        assert set(kwargs) == set(_params(book))
        assert all(isinstance(v, ast.Name) and v.id == k for k, v in kwargs.items())

    def test_ends_with_the_footer(self, path):
        assert _source(_code_cells(_load(path))[-1]).strip() == "nb.footer(ctx)"

    def test_papermill_reads_every_parameter(self, path):
        inspect = pytest.importorskip("papermill").inspect_notebook
        assert set(inspect(str(path))) == set(_params(_load(path)))


# --------------------------------------------------------------------------- parameters and data


def test_as_list_as_ints_as_bool():
    assert nb.as_list("dj30, sp500") == ["dj30", "sp500"]
    assert nb.as_list(["dj30", "dj30"]) == ["dj30"]
    assert nb.as_list(None) == []
    assert nb.as_list("aapl,msft", upper=True) == ["AAPL", "MSFT"]
    assert nb.as_ints(3) == [3]
    assert nb.as_ints("0,1,2") == [0, 1, 2]
    assert nb.as_ints("0-3") == [0, 1, 2, 3]
    assert nb.as_ints([128, "256"]) == [128, 256]
    with pytest.raises(nb.NotebookStop):
        nb.as_ints("zero")
    assert nb.as_bool("False") is False and nb.as_bool(True) is True
    with pytest.raises(nb.NotebookStop):
        nb.as_bool("maybe")


def test_setup_rejects_bad_parameters():
    common = dict(models="storm", seeds=0, data_dir=None, results_dir=None, run_missing=False)
    with pytest.raises(nb.NotebookStop, match="protocol sample"):
        nb.setup("t", universes="sample", protocol="clean", profile="smoke", **common)
    with pytest.raises(nb.NotebookStop, match="unknown profile"):
        nb.setup("t", universes="sample", protocol="sample", profile="laptop", **common)
    with pytest.raises(nb.NotebookStop, match="unknown universe"):
        nb.setup("t", universes="nasdaq", protocol="clean", profile="smoke", **common)
    with pytest.raises(nb.NotebookStop, match="unknown convention"):
        nb.setup("t", universes="sample", protocol="sample", profile="smoke", convention="paper",
                 conventions=("standard", "official"), **common)
    with pytest.raises(nb.NotebookStop, match="unknown stock"):
        nb.setup("t", universe="dj30", stocks="AAPL,TSLA", protocol="clean", profile="smoke", **common)
    with pytest.raises(nb.NotebookStop, match="unknown executor"):
        nb.setup("t", universes="sample", protocol="sample", profile="smoke", executor="dask", **common)


@pytest.mark.parametrize("how", ["empty_dir", "unset"])
def test_require_data_stops_with_every_way_to_get_data(how, tmp_path, monkeypatch):
    if how == "unset":
        monkeypatch.delenv("STORM_DATA_DIR", raising=False)
        data_dir = None
    else:
        data_dir = tmp_path
    with pytest.raises(nb.MissingData) as exc:
        nb.require_data(["dj30"], data_dir)
    msg = str(exc.value)
    for needle in ("'dj30'", "STORM_DATA_DIR", "-p data_dir", "storm download", "-p universes sample -p protocol sample"):
        assert needle in msg
    lines = exc.value._render_traceback_()  # IPython shows these lines, not a traceback
    assert lines[0] == "MissingData:" and any("storm download" in x for x in lines)


def test_setup_stops_at_missing_data(tmp_path):
    with pytest.raises(nb.MissingData):  # runs may have to be run: the data are required
        nb.setup("t", universes="dj30", models="storm", seeds=0, protocol="clean", profile="smoke",
                 data_dir=str(tmp_path), results_dir=None, run_missing=True)


def test_trading_on_the_sample_is_skipped_with_a_note(capsys):
    ctx = nb.setup("table3_trading", universe="dj30", stocks="AAPL", models="buy_and_hold", seeds=0,
                   protocol="sample", profile="smoke", convention="paper", data_dir=None, results_dir=None,
                   run_missing=False)
    assert ctx.stocks == [] and ctx.data == {}
    assert ctx.specs("trading") == []
    assert "not run on the embedded sample" in capsys.readouterr().out
    assert not ctx.has_paper("dj30")


def test_ensure_runs_without_running_lists_the_commands(tmp_path):
    lines = []
    spec = RunSpec("portfolio", "sample", "market", "sample", "smoke", 0)
    plan = nb.ensure_runs([spec, spec], run_missing=False, results_dir=tmp_path, echo=lines.append)
    assert len(plan) == 1 and plan["status"].tolist() == ["missing"] and not plan["finished"].any()
    text = "\n".join(lines)
    assert "1 run(s) needed" in text and "0 cached" in text and spec.command() in text
    assert "about 0.0 one-core hours for the 0 with an estimate" in text   # nothing finished to estimate from
    assert nb.load_metrics(plan).empty


def test_ensure_runs_estimates_missing_runs_from_finished_ones(tmp_path):
    done = RunSpec("portfolio", "sample", "market", "sample", "smoke", 0)
    assert run_grid([done], tmp_path, progress=False)["status"][0] == "done"
    lines = []
    other = RunSpec("portfolio", "sample", "market", "sample", "smoke", 1)
    nb.ensure_runs([done, other], run_missing=False, results_dir=tmp_path, echo=lines.append)
    text = "\n".join(lines)
    assert "seed 1) (≈ " in text and "estimated compute of the missing runs: about 0.0 one-core hours." in text


# --------------------------------------------------------------------------- synthetic runs


def _write_run(root: Path, spec: RunSpec, metrics: pd.DataFrame, tables: dict, seconds: float = 10.0) -> Path:
    path = root / spec.task / spec.universe / f"{spec.model}{'-' + spec.options_str if spec.options else ''}" / \
        f"{spec.protocol}-{spec.profile}-seed{spec.seed}-00000000"
    path.mkdir(parents=True)
    metrics.to_csv(path / "metrics.csv", index=False)
    for name, frame in tables.items():
        if name.endswith(".parquet"):
            frame.to_parquet(path / name)
        else:
            frame.to_csv(path / f"{name}.csv", index=not isinstance(frame.index, pd.RangeIndex))
    (path / "run.json").write_text(json.dumps({"spec": {**spec.as_row(), "options": spec.options_dict},
                                               "wall_seconds": seconds,   # as written by today's code:
                                               "model_version": model_version(spec.model)}))
    return path


def _plan(rows) -> pd.DataFrame:
    out = pd.DataFrame([{**spec.as_row(), "status": "cached", "run_dir": str(path), "spec": spec}
                        for spec, path in rows])
    out["finished"] = True
    return out


DATES = pd.bdate_range("2021-04-01", periods=40, name="date")


def _portfolio_runs(root: Path, models=nb.PORTFOLIO_MODELS, seeds=(0, 1), universe="dj30", options=None,
                    profile="cpu"):
    paper = report.reported("portfolio", universe).set_index(["model", "metric"])["value"]
    ic = report.reported("rankic", universe).set_index(["model", "metric"])["value"]
    rng = np.random.default_rng(0)
    rows = []
    for model in models:
        label = report.model_label(model)
        for seed in seeds:
            recs = []
            for conv in ("paper", "standard"):
                for metric in nb.PORTFOLIO_METRICS:
                    recs.append(("test", conv, metric, paper[(label, metric)] + rng.normal(0, 0.01)))
            if model != "market":
                for metric in nb.IC_METRICS:
                    recs.append(("test", "standard", metric, ic[(label, metric)] + rng.normal(0, 0.005)))
            m = pd.DataFrame(recs, columns=["split", "convention", "metric", "value"])
            daily = pd.DataFrame({"rank_ic": np.nan if model == "market" else rng.normal(0.05, 0.1, len(DATES)),
                                  "return": rng.normal(0.0005, 0.01, len(DATES)), "turnover": 0.1,
                                  "benchmark": 0.0}, index=DATES)
            tables = {"daily": daily}
            if model == "storm":
                k = nb.codebook_size_of(",".join(f"{a}={b}" for a, b in (options or {}).items()), profile)
                tables["codes"] = pd.DataFrame({"branch": ["cs"] * k + ["ts"] * k, "code": list(range(k)) * 2,
                                                "count": np.r_[np.arange(k)[::-1], np.ones(k)].astype(int)})
            spec = RunSpec.make("portfolio", universe, model, "clean", profile, seed, options)
            rows.append((spec, _write_run(root, spec, m, tables)))
    return _plan(rows)


def _trading_runs(root: Path, models=("buy_and_hold", "ppo", "storm", "storm_wo_ts", "storm_wo_cs"), seeds=(0,)):
    rng = np.random.default_rng(1)
    rows = []
    for model in models:
        for seed in seeds:
            recs, eq = [], []
            for stock in nb.TRADING_STOCKS:
                for metric in nb.PORTFOLIO_METRICS:
                    value = np.nan if (model == "storm_wo_ts" and metric == "ASR") else rng.uniform(0.1, 1.5)
                    recs.append((stock, "test", "paper", metric, value))
                recs += [(stock, "train", "-", "train_seconds", 2.0), (stock, "train", "-", "fit_seconds", 5.0)]
                eq.append(pd.DataFrame({"stock": stock, "split": "test", "date": DATES,
                                        "equity": 1e5 * np.cumprod(1 + rng.normal(0, 0.01, len(DATES)))}))
            m = pd.DataFrame(recs, columns=["stock", "split", "convention", "metric", "value"])
            spec = RunSpec.make("trading", "dj30", model, "clean", "cpu", seed)
            rows.append((spec, _write_run(root, spec, m, {"equity.parquet": pd.concat(eq, ignore_index=True)})))
    return _plan(rows)


@pytest.fixture
def portfolio(tmp_path):
    plan = _portfolio_runs(tmp_path / "results")
    return plan, nb.load_metrics(plan)


def test_load_metrics_maps_paper_rows(portfolio):
    plan, m = portfolio
    assert {"task", "universe", "model", "seed", "split", "convention", "metric", "value", "row"} <= set(m.columns)
    assert set(m["row"]) == {report.model_label(x) for x in nb.PORTFOLIO_MODELS}
    assert "STORM-w/o-TS" in set(m["row"]) and "Market Index" in set(m["row"])
    sel = nb.select(m, "test", "paper", ["APY"], universe="dj30", model=["storm", "lstm"])
    assert set(sel["model"]) == {"storm", "lstm"} and len(sel) == 4


def test_comparison_against_the_paper_and_ours_only(portfolio):
    _, m = portfolio
    sty = nb.comparison(m, "portfolio", "dj30", "paper", models=nb.PORTFOLIO_MODELS)
    cells = sty.data
    assert list(cells.columns) == list(nb.PORTFOLIO_METRICS)
    assert cells.index[0] == "Market Index" and cells.index[-1] == "STORM-w/o-CS"
    assert "Market Index (^DJI, price index, no dividends)" in sty.to_html()
    assert "paper 0.148 ± 0.046" in cells.loc["STORM", "APY"] and "(n=2)" in cells.loc["STORM", "APY"]
    assert "<table" in sty.to_html()
    ours = nb.comparison(m, "portfolio", "dj30", "paper", paper=False)
    assert "OURS ONLY" in ours.caption and "paper" not in ours.data.loc["STORM", "APY"]
    ic = nb.comparison(m, "rankic", "dj30", "standard", models=nb.RANKIC_MODELS)
    assert list(ic.data.columns) == ["RankIC", "RankICIR"] and "Market Index" not in ic.data.index


def test_improvement_table_follows_report(portfolio):
    _, m = portfolio
    imp = nb.improvement_table(m, "portfolio", "dj30", "paper")
    assert list(imp.index) == list(nb.PORTFOLIO_METRICS)
    assert imp.loc["APY", "paper (%)"] == "94.74"
    ours = nb.select(m, "test", "paper", nb.PORTFOLIO_METRICS, universe="dj30")
    ref = report.improvement(ours[["model", "metric", "value", "seed"]], "portfolio")
    assert imp.loc["CR", "ours (%)"] == f"{ref.loc['CR', 'improvement']:.1f}"
    assert "paper (%)" not in nb.improvement_table(m, "portfolio", "dj30", "paper", paper=False)
    # a best baseline whose mean is within its own interval over seeds of zero: not meaningful
    from storm_lib.presentation.tables import near_zero
    assert near_zero([0.01, -0.02, 0.015]) and not near_zero([0.10, 0.11, 0.12]) and not near_zero([0.0])
    noisy = m.copy()
    base = ref.loc["APY", "best_baseline"]
    sel = (noisy["row"] == base) & (noisy["metric"] == "APY") & (noisy["split"] == "test")
    noisy.loc[sel, "value"] = [0.01 * (-1) ** i for i in range(sel.sum())]
    assert nb.improvement_table(noisy, "portfolio", "dj30", "paper").loc["APY", "ours (%)"] == "n/m"


def test_daily_and_plots(portfolio):
    plan, _ = portfolio
    r = nb.daily(plan, "return", universe="dj30")
    assert r.shape == (len(DATES), len(nb.PORTFOLIO_MODELS) * 2)
    assert r.columns.names == ["model", "seed"]
    fig = plots.wealth(r)
    assert len(fig.axes[0].lines) == len(nb.PORTFOLIO_MODELS) + 1  # + the line at 1
    assert fig._repr_png_().startswith(b"\x89PNG")
    assert len(plots.drawdown(r).axes[0].lines) == len(nb.PORTFOLIO_MODELS)
    ic = nb.daily(plan, "rank_ic", universe="dj30", model=list(nb.RANKIC_MODELS))
    assert "Market Index" not in ic.columns.get_level_values(0)
    assert len(plots.rolling_rankic(ic, window=10).axes[0].lines) == len(nb.RANKIC_MODELS) + 1


def test_wealth_and_drawdown_arithmetic():
    r = pd.DataFrame({("A", 0): [0.1, -0.1], ("A", 1): [0.0, 0.0]}, index=DATES[:2])
    r.columns = pd.MultiIndex.from_tuples(r.columns, names=["model", "seed"])
    w = plots.wealth_curves(r)
    assert w["A"].tolist() == pytest.approx([(1.1 + 1.0) / 2, (0.99 + 1.0) / 2])
    dd = plots.drawdowns(pd.DataFrame({"B": [-0.1, 0.2, -0.5]}, index=DATES[:3]))
    assert dd["B"].tolist() == pytest.approx([-0.1, 0.0, -0.5])


def test_empty_inputs_give_a_labelled_figure():
    for fig in (plots.wealth(pd.DataFrame()), plots.rolling_rankic(pd.DataFrame()),
                plots.code_usage(pd.DataFrame(columns=["branch", "code", "count"])),
                plots.codebook_curve(pd.DataFrame()),
                plots.equity_curves(pd.DataFrame(columns=["method", "seed", "stock", "date", "equity"]), ["AAPL"])):
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert any("no " in t for t in texts)


def test_codebook_stats_and_usage_plot():
    codes = pd.DataFrame({"branch": ["cs"] * 4 + ["ts"] * 4, "code": [0, 1, 2, 3] * 2,
                          "count": [10, 10, 0, 0, 5, 5, 5, 5]})
    st = nb.codebook_stats(codes)
    assert st.loc["CS", "used"] == 2 and st.loc["CS", "share used"] == 0.5
    assert st.loc["CS", "perplexity"] == pytest.approx(2.0) and st.loc["TS", "perplexity"] == pytest.approx(4.0)
    assert st.loc["TS", "perplexity / K"] == pytest.approx(1.0) and st.loc["CS", "top code share"] == 0.5
    fig = plots.code_usage(codes)
    assert len(fig.axes) == 2 and "2/4 codes used" in fig.axes[1].get_title()


def test_codebook_sweep_and_specs(tmp_path):
    root = tmp_path / "results"
    plans = [_portfolio_runs(root, models=("storm",), seeds=(0,), options=o)
             for o in (None, {"codebook_size": 128}, {"codebook_size": 2048})]
    plan = pd.concat(plans, ignore_index=True)
    m = nb.load_metrics(plan)
    sweep = nb.codebook_sweep(m, "dj30")
    assert list(sweep.index) == [128, 512, 2048]  # the run without options is the cpu profile's K = 512
    assert sweep.loc[512, "paper_RankIC"] == nb.PAPER_FIG3B.loc[512, "RankIC"] == 0.063
    assert sweep.loc[128, "n"] == 1 and np.isnan(sweep.loc[128, "RankIC_std"])
    assert len(plots.codebook_curve(sweep).axes[0].lines) >= 2
    codes = nb.codes(plan, "dj30")
    assert len(codes) == 2 * 512  # the default-K run
    ctx = nb.Context("fig3_codebook", {"universes": ["dj30"], "sizes": [128, 512], "seeds": [0],
                                       "protocol": "clean", "profile": "smoke"}, {})
    specs = nb.codebook_specs(ctx)
    assert [s.options_dict for s in specs] == [{}, {"codebook_size": 128}, {"codebook_size": 512}]
    assert {s.model for s in specs} == {"storm"}
    with pytest.raises(nb.NotebookStop, match="codebook"):
        nb.codebook_specs(ctx, models=["lstm"])
    assert nb.codebook_size_of("", "smoke") == 32 and nb.codebook_size_of("codebook_size=1024", "cpu") == 1024


def test_trading_tables_and_equity_plot(tmp_path):
    plan = _trading_runs(tmp_path / "results")
    m = nb.load_metrics(plan)
    sty = nb.comparison(m, "trading", "AAPL", "paper")
    assert "Buy&Hold" in sty.data.index and "paper 0.120" in sty.data.loc["Buy&Hold", "APY"]
    assert sty.data.loc["STORM-w/o-TS", "ASR"].startswith("undefined")   # run, but the metric is NaN
    assert sty.data.loc["LSTM", "APY"].startswith("not run")
    t = nb.training_time(m, plan)
    assert t.loc["PPO", "agents (s)"] == 10.0 and t.loc["PPO", "fit (s)"] == 5.0
    assert t.loc["PPO", "run wall (s)"] == 10.0 and list(t.index)[0] == "Buy&Hold"
    eq = nb.equity(plan, "test")
    assert set(eq["method"]) == {"Buy&Hold", "PPO", "STORM", "STORM-w/o-TS", "STORM-w/o-CS"}
    fig = plots.equity_curves(eq, nb.TRADING_STOCKS)
    assert sum(ax.get_visible() for ax in fig.axes) == 5
    cfg = nb.trading_config({"stocks": ["AAPL"], "cost": 1e-4, "budgets": {"cpu": {"ppo": {"timesteps": 5}}}}, "cpu")
    assert cfg.data.loc["budget ppo (cpu)", "value"] == "timesteps=5"
    from storm_lib.tasks import trading as trading_task   # the task's config is a per-spec function: fixed settings + budgets

    cfg = nb.trading_config(trading_task.run_task.config, "smoke").data
    assert cfg.loc["cost", "value"] == "0.0001" and {f"budget {a} (smoke)" for a in ("dqn", "sac", "ppo")} <= set(cfg.index)


def test_ablation_frame_table_and_text(tmp_path, portfolio):
    _, m = portfolio
    mt = nb.load_metrics(_trading_runs(tmp_path / "trading"))
    ab = nb.ablation_frame(m, mt, ["dj30"], ["AAPL", "JPM"], convention="paper")
    assert set(ab["variant"]) == set(report.STORM_ROWS)
    assert list(dict.fromkeys(ab["task"])) == ["portfolio", "rankic", "trading"]
    assert list(dict.fromkeys(ab.loc[ab["task"] == "trading", "dataset"])) == ["AAPL", "JPM"]
    storm = ab[(ab["task"] == "portfolio") & (ab["variant"] == "STORM") & (ab["metric"] == "APY")].iloc[0]
    assert storm["paper"] == 0.148 and storm["n"] == 2
    table = nb.ablation_table(ab)
    assert table.columns.nlevels == 2 and ("STORM", "paper") in table.columns
    assert sum(str(v).startswith("▲") for v in table.loc[("portfolio", "dj30", "APY")]) == 1
    text = nb.ablation_text(ab)
    for task in ("Portfolio", "RankIC", "Trading"):
        assert task in text
    assert "in the paper" in text and "seed" in text
    # the numbers, not a fixed sentence: STORM best in every portfolio cell when it is made so
    ab2 = ab.copy()
    up = ~ab2["metric"].isin(["MDD", "AVO"])
    ab2.loc[ab2["variant"] == "STORM", "ours"] = np.where(up[ab2["variant"] == "STORM"], 9.0, -9.0)
    assert "best of the three variants in 6 of 6 cells of our runs" in nb.ablation_text(ab2)
    assert nb.ablation_text(ab.iloc[0:0]).startswith("No finished runs")


def test_footer_info_and_rerun_command(portfolio, monkeypatch):
    plan, _ = portfolio
    monkeypatch.setenv("STORM_DATA_DIR", "/data/storm")
    ctx = nb.Context("table2_portfolio", {"data_dir": None}, {"universes": ["dj30", "sp500"], "seeds": [0, 1],
                                                              "data_dir": None, "run_missing": True})
    ctx.plans.append(plan)
    info = nb.footer_info(ctx)
    assert info["runs"]["used"] == len(plan) and info["runs"]["compute_seconds"] == pytest.approx(10.0 * len(plan))
    for key in ("python", "numpy", "pandas", "torch", "lightgbm", "stable-baselines3", "storm_lib"):
        assert key in info["versions"]
    assert {"platform", "CPU count", "GPU"} <= set(info["hardware"])
    cmd = info["command"]
    assert cmd.startswith("STORM_DATA_DIR=/path/to/data ")   # no machine-local path on a page
    assert "/data/storm" not in cmd
    ctx.raw["results_dir"] = str(nb.REPO_ROOT / "results")
    assert "-p results_dir results" in nb.footer_info(ctx)["command"]
    ctx.raw.pop("results_dir")
    assert "papermill --cwd notebooks notebooks/table2_portfolio.ipynb" in cmd
    assert "-p universes dj30,sp500 -p seeds 0,1 -p data_dir None -p run_missing True" in cmd
    assert info["wall_seconds"] >= 0


def test_footer_displays_a_table_and_the_command(portfolio, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs: shown.extend(objs))
    plan, _ = portfolio
    ctx = nb.Context("table4_rankic", {"data_dir": None}, {"universes": "dj30"})
    ctx.plans.append(plan)
    assert nb.footer(ctx) is None
    table, command = shown
    assert "runs used" in table.data.index and "<table" in table.to_html()
    assert "papermill --cwd notebooks notebooks/table4_rankic.ipynb" in command.data


def test_notebooks_are_generated_by_tools_make_notebooks(tmp_path):
    """notebooks/*.ipynb are exactly what tools/make_notebooks.py writes (stable cell ids)."""
    import subprocess

    script = NOTEBOOKS.parent / "tools" / "make_notebooks.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    made = sorted(p.name for p in (tmp_path / "notebooks").glob("*.ipynb"))
    assert made == sorted(p.name for p in _notebooks())
    for name in made:
        assert (tmp_path / "notebooks" / name).read_text() == (NOTEBOOKS / name).read_text(), name


def test_stats_cells_in_table2_and_table4():
    for name, call in (("table2_portfolio", "nb.uncertainty(ctx, plan, m, costs=True)"),
                       ("table4_rankic", "nb.uncertainty(ctx, plan, m)")):
        sources = [_source(c).strip() for c in _code_cells(_load(NOTEBOOKS / f"{name}.ipynb"))]
        assert call in sources and sources.index(call) == len(sources) - 2  # just before the footer


def test_audit_notebook_cells():
    book = _load(NOTEBOOKS / "audit.ipynb")
    text = "\n".join(_source(c) for c in book["cells"])
    for needle in ("nb.audit_specs(ctx)", "nb.missing_text(plan)", "nb.audit_frame(plan)", "nb.audit_styled(",
                   "plots.waterfall(", "nb.audit_paper_lines(", "nb.audit_text(", "survivorship bias"):
        assert needle in text, needle
    assert "cannot be switched off with our data" in text


# --------------------------------------------------------------------------- uncertainty helpers


class _FakePanel:
    """What stats.run_labels needs of a Panel: dates and label_frame(positions)."""

    def __init__(self, labels: pd.DataFrame):
        self.labels = labels
        self.dates = labels.index

    def label_frame(self, pos):
        return self.labels.iloc[pos]


def _with_scores(plan: pd.DataFrame, seed=0):
    rng = np.random.default_rng(3)
    tickers = [f"T{i}" for i in range(8)]
    labels = pd.DataFrame(rng.normal(0.0005, 0.01, (len(DATES), len(tickers))), index=DATES, columns=tickers)
    for r in plan.itertuples():
        if r.model != "market":
            pd.DataFrame(rng.normal(size=labels.shape), index=DATES, columns=tickers).to_parquet(
                Path(r.run_dir) / "scores.parquet")
    return _FakePanel(labels)


def test_ci_frame_and_table(portfolio):
    plan, _ = portfolio
    cis = nb.ci_frame(plan, "dj30", ["market", "lightgbm", "storm"], n=50)
    assert list(dict.fromkeys(cis["model"])) == ["Market Index", "LightGBM", "STORM"]
    assert set(cis["seeds"]) == {"0,1"}                  # every finished seed, pooled
    assert set(cis.loc[cis["model"] == "STORM", "metric"]) == {"APY", "ASR", "RankIC"}
    assert "RankIC" not in set(cis.loc[cis["model"] == "Market Index", "metric"])  # no scores, no RankIC
    assert (cis["low"] <= cis["estimate"]).all() and (cis["estimate"] <= cis["high"]).all()
    ic = cis[(cis["model"] == "STORM") & (cis["metric"] == "RankIC")].iloc[0]
    storm = plan.loc[(plan["model"] == "storm"), "run_dir"]
    daily = sum(pd.read_csv(Path(d) / "daily.csv")["rank_ic"] for d in storm) / len(storm)
    assert ic["estimate"] == pytest.approx(daily.mean()) and ic["n_days"] == len(DATES)
    one = nb.ci_frame(plan, "dj30", ["storm"], seed=1, n=20)
    assert set(one["seeds"]) == {"1"}
    storm1 = plan.loc[(plan["model"] == "storm") & (plan["seed"] == 1), "run_dir"].iloc[0]
    assert one.set_index("metric").loc["RankIC", "estimate"] == pytest.approx(
        pd.read_csv(Path(storm1) / "daily.csv")["rank_ic"].mean())
    table = nb.ci_table(cis)
    assert list(table.columns) == ["seeds", "APY", "ASR", "RankIC"] and table.loc["Market Index", "RankIC"] == "–"
    assert table.loc["STORM", "APY"].count("[") == 1
    assert nb.ci_frame(plan, "sp500", n=20).empty and nb.ci_table(nb.ci_frame(plan, "sp500")).empty


def test_best_baseline_and_paired_tests(portfolio):
    plan, m = portfolio
    means = nb.select(m, "test", "standard", ["APY"], universe="dj30").groupby("model")["value"].mean()
    baselines = means.drop(["market", "storm", "storm_wo_ts", "storm_wo_cs"])
    assert nb.best_baseline(m, "dj30", "APY") == baselines.idxmax()
    assert nb.best_baseline(m, "dj30", "RankIC", models=["lstm", "storm"]) == "lstm"
    assert nb.best_baseline(m, "dj30", "APY", models=["storm", "market"]) is None
    tests = nb.paired_tests(plan, m, "dj30", n=50)
    assert list(tests.index) == ["daily RankIC", "daily return"]
    assert tests.loc["daily return", "baseline"] == report.model_label(baselines.idxmax())
    assert (tests["n_days"] == len(DATES)).all() and (tests["seeds"] == "0,1").all()
    assert ((tests["p_bootstrap"] > 0) & (tests["p_bootstrap"] <= 1)).all()
    text = nb.paired_text(tests)
    assert "STORM − " in text and "significant at 5%" in text and text.count("\n") == 1
    assert nb.paired_tests(plan, m, "dj30", models=["storm"], n=20).empty   # no baseline: skipped
    assert nb.paired_text(nb.paired_tests(plan[plan["model"] != "storm"], m, "dj30")).startswith("No paired test")


def test_cost_curves_from_saved_scores(portfolio):
    plan, _ = portfolio
    panel = _with_scores(plan)
    curves = nb.cost_curves(plan, "dj30", ["market", "lightgbm", "storm"], panel=panel, costs_bps=(0, 10, 20))
    assert list(dict.fromkeys(curves["model"])) == ["LightGBM", "STORM"]       # the market has no scores
    storm = curves[curves["model"] == "STORM"].set_index("cost_bps")
    assert storm["APY"].is_monotonic_decreasing and storm.loc[0, "fee"] == 0
    assert storm.loc[20, "fee"] == pytest.approx(2 * storm.loc[10, "fee"])
    fig = plots.cost_curves(curves)
    assert len(fig.axes[0].lines) == 2 + 2 and fig._repr_png_().startswith(b"\x89PNG")  # + the 1 bp and 0 lines
    assert nb.cost_curves(plan, "sp500", panel=panel).empty                     # no runs: no panel needed
    assert any("no " in t.get_text() for t in plots.cost_curves(curves.iloc[0:0]).axes[0].texts)


def test_uncertainty_skips_missing_universes(portfolio, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs: shown.extend(objs))
    plan, m = portfolio
    panel = _with_scores(plan)
    monkeypatch.setattr(nb.RunContext, "panel", lambda self, universe: panel)
    ctx = nb.Context("table2_portfolio", {"universes": ["dj30", "sp500"], "models": list(nb.PORTFOLIO_MODELS),
                                          "data_dir": None}, {})
    nb.uncertainty(ctx, plan, m, costs=True, n=20)
    texts = [getattr(o, "data", "") for o in shown if isinstance(o, IPython.display.Markdown)]
    assert any("Paired tests" in t for t in texts)
    assert any("No finished run of SP500" in t for t in texts)
    assert sum(isinstance(o, plots.Figure) for o in shown) == 1              # dj30's cost curves only


# --------------------------------------------------------------------------- protocol audit


def _audit_runs(root: Path, model="storm", seeds=(0, 1), skip=()):
    """Synthetic finished runs of every audit step of ``model`` (a run per spec; ``skip``: specs left out).
    Values: clean APY 0.05 + 0.01 seed; each switch adds a known amount; official reading adds 0.1."""
    from storm_lib import audit

    bump = {"test_selection": 0.02, "sum_topk": 0.2, "sampled_predictions": -0.01, "prior_across_batch": 0.0,
            "official_features": 0.03}
    rows = []
    for spec in audit.audit_specs(model, "dj30", seeds, "smoke"):
        on = audit.switches_of(spec.protocol, spec.options_dict)
        if any(s in on for s in skip):
            continue
        base = 0.05 + 0.01 * spec.seed + sum(bump[s] for s in on)
        recs = []
        for conv, extra in (("standard", 0.0), ("official", 0.1)):
            for metric in ("APY", "CW", "ASR", "MDD"):
                recs.append(("test", conv, metric, base + extra))
            recs.append(("test", conv, "RankIC", 0.01 + (0.02 if "test_selection" in on else 0.0) + extra / 10))
        m = pd.DataFrame(recs, columns=["split", "convention", "metric", "value"])
        rows.append((spec, _write_run(root, spec, m, {})))
    return _plan(rows)


def test_audit_specs_from_the_context():
    ctx = nb.Context("audit", {"universes": ["dj30"], "models": ["storm", "lightgbm"], "seeds": [0, 1],
                               "profile": "smoke"}, {})
    specs = nb.audit_specs(ctx)
    assert len(specs) == len(set(specs)) == 2 * (10 + 6)
    assert {s.protocol for s in specs} == {"clean", "paper"} and {s.profile for s in specs} == {"smoke"}
    with pytest.raises(nb.NotebookStop, match="market"):
        nb.audit_specs(nb.Context("audit", {"universes": ["dj30"], "models": ["market"], "seeds": [0],
                                            "profile": "smoke"}, {}))


def test_audit_frame_summary_waterfall_and_text(tmp_path):
    plan = _audit_runs(tmp_path / "results")
    at = nb.audit_frame(plan)
    assert set(at["metric"]) == set(nb.AUDIT_METRICS) and set(at["seed"]) == {0, 1}
    table = nb.audit_summary(at, "dj30", "storm", [0, 1], "smoke")
    assert table.index.get_level_values("kind").tolist()[:2] == ["baseline", "alone"]
    assert ("alone", "(b) sum_topk", "standard") in table.index
    assert ("cumulative", "+ (f) official_features", "official") in table.index
    assert table.loc[("alone", "(b) sum_topk", "standard"), ("APY", "Δ clean")] == "+0.200 ± 0.000"
    assert table.loc[("alone", "(c) official_metrics", "official"), ("APY", "Δ clean")].startswith("+0.100")
    assert table.loc[("baseline", "clean", "standard"), ("APY", "value")] == "0.055 ± 0.007 (n=2)"
    assert table.loc[("published", "paper STORM", "paper"), ("APY", "value")] == "0.148 ± 0.046"
    means = nb.audit_means(at, "dj30", "storm", "APY")
    assert means.index[0] == "clean" and means.index[-1] == "+official_features"
    assert means.iloc[-1] == pytest.approx(0.055 + 0.02 + 0.2 + 0.1 - 0.01 + 0.0 + 0.03)
    fig = plots.waterfall(nb.audit_waterfall(at, "dj30", "storm"), nb.audit_paper_lines("dj30", "storm"))
    assert [ax.get_title() for ax in fig.axes] == list(nb.WATERFALL_METRICS)
    assert len(fig.axes[0].patches) >= len(means) + 1 and fig._repr_png_().startswith(b"\x89PNG")
    text = nb.audit_text(at, "dj30", "storm")
    assert "every switch on" in text and "Means over 2 seed(s)" in text
    assert "APY 0.055 clean → 0.395 at `+official_features` (paper STORM 0.148 ± 0.046: exceeded)" in text
    assert "ASR 0.055 clean → 0.395 at `+official_features` (paper STORM 1.052 ± 0.297: not reached)" in text
    assert "for 2 of 3 metrics (APY, RankIC)" in text and "RankIC 0.010 clean → 0.040" in text
    assert "0.065 ± 0.038: reached)" in text       # RankIC 0.04 >= 0.065 - 0.038
    assert "alone, the largest moves are `sum_topk` (+0.200, 95% CI [+0.200, +0.200])" in text   # computed
    lines = nb.audit_paper_lines("dj30", "lightgbm")
    assert [x[0] for x in lines["APY"]] == ["paper STORM", "paper LightGBM"]


def test_audit_with_missing_runs(tmp_path, data_dir):  # run dirs are hashed with the real data
    plan = _audit_runs(tmp_path / "results", skip=("official_features",))
    from storm_lib import audit

    full = nb.ensure_runs(audit.audit_specs("storm", "dj30", [0, 1], "smoke"), run_missing=False,
                          results_dir=tmp_path / "empty", echo=lambda *_: None)
    assert "All" in nb.missing_text(plan) and "20 of 20 audit runs are missing" in nb.missing_text(full)
    assert "python -m storm_lib.run" in nb.missing_text(full)
    at = nb.audit_frame(plan)
    table = nb.audit_summary(at, "dj30", "storm", [0, 1], "smoke")
    assert table.loc[("alone", "(f) official_features", "standard"), ("APY", "value")] == "not run"
    text = nb.audit_text(at, "dj30", "storm")
    assert "some cumulative steps are missing" in text and "+prior_across_batch" in text
    empty = nb.audit_frame(full)
    assert empty.empty and "no finished audit run" in nb.audit_text(empty, "dj30", "storm")
    assert nb.audit_summary(empty, "dj30", "storm", [0], "smoke").iloc[0, 0] == "not run"
    fig = plots.waterfall(nb.audit_waterfall(empty, "dj30", "storm"))
    assert any("no " in t.get_text() for ax in fig.axes for t in ax.texts)


def test_switch_table_lists_every_switch():
    from storm_lib import audit

    table = nb.switch_table()
    assert len(table) == len(audit.SWITCHES) and table.index[0] == "(a) test_selection"
    assert table.loc["(c) official_metrics", "switch"] == "read with convention official"
    assert table.loc["(e) prior_across_batch", "models"] == "storm, storm_wo_ts, storm_wo_cs"
    assert "<table" in nb.switch_table(styled=True).to_html()


def test_seeds_all_reads_the_finished_seeds_of_each_run(tmp_path):
    root = tmp_path / "results"
    _portfolio_runs(root, models=("storm",), seeds=(0, 2))
    _portfolio_runs(root, models=("lightgbm",), seeds=(1,))
    _portfolio_runs(root, models=("storm",), seeds=(3,), options={"codebook_size": 128})
    ctx = nb.Context("t", {"universes": ["dj30"], "models": ["storm", "lightgbm", "lstm"], "seeds": "all",
                           "protocol": "clean", "profile": "cpu", "results_dir": str(root)}, {})
    specs = ctx.specs("portfolio")
    assert [(s.model, s.seed) for s in specs] == [("storm", 0), ("storm", 2), ("lightgbm", 1), ("lstm", 0)]
    swept = ctx.specs("portfolio", models=["storm"], options=[{}, {"codebook_size": 128}, {"codebook_size": 256}])
    assert [(s.options_str, s.seed) for s in swept] == [("", 0), ("", 2), ("codebook_size=128", 3),
                                                        ("codebook_size=256", 0)]
    assert ctx.seeds_for("portfolio", "dj30", "storm", protocol="paper") == [0]   # none under that protocol
    fixed = nb.Context("t", {**ctx.params, "seeds": [5]}, {})
    assert [s.seed for s in fixed.specs("portfolio", models=["storm"])] == [5]
    assert nb.is_all(" ALL ") and not nb.is_all([0])


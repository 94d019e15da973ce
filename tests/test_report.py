"""storm_lib.presentation (paper, verdict, compute) and the storm_lib.report command: the paper's numbers, comparison tables, Improvement(%), the verdict (no data needed)."""

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from storm_lib import report
from storm_lib.presentation import compute as C
from storm_lib.presentation import paper as P
from storm_lib.presentation import verdict as V

SHARED_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "paper" / "reported.csv"


def paper_as_results(tables=("portfolio", "rankic", "trading"), seeds=(0,), **fixed) -> pd.DataFrame:
    """The paper's own rows as a long results frame (what a perfect replication would produce)."""
    rows = []
    for table in tables:
        rep = P.reported(table)
        rep = rep[rep["model"] != P.IMPROVEMENT_ROW]
        for _, r in rep.iterrows():
            for s in seeds:
                rows.append({"task": "trading" if table == "trading" else "portfolio", "universe": r["dataset"],
                             "model": r["model"], "protocol": "clean", "profile": "cpu", "seed": s,
                             "options": "", "split": "test", "convention": None, "metric": r["metric"],
                             "value": r["value"], **fixed})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- reported


def test_reported_csv_ships_with_the_package():
    assert resources.files("storm_lib").joinpath("reported.csv").is_file()


@pytest.mark.skipif(not SHARED_CSV.is_file(), reason="shared/paper/reported.csv not next to the checkout")
def test_packaged_csv_is_the_shared_transcription():
    packaged = resources.files("storm_lib").joinpath("reported.csv").read_bytes()
    assert packaged == SHARED_CSV.read_bytes()


def test_reported_shape_and_types():
    rep = P.reported()
    assert len(rep) == 502
    assert rep.groupby("table").size().to_dict() == {"portfolio": 132, "rankic": 40, "trading": 330}
    assert rep["value"].dtype == float and rep["pm"].dtype == float
    # the printed text is kept with its digits
    cw = rep[(rep["table"] == "portfolio") & (rep["dataset"] == "sp500") & (rep["model"] == P.IMPROVEMENT_ROW)
             & (rep["metric"] == "CW")].iloc[0]
    assert cw["value_text"] == "34.00" and cw["value"] == 34.0
    ibm = P.reported("trading", "ibm")
    assert ibm.set_index(["model", "metric"]).loc[(P.IMPROVEMENT_ROW, "CW"), "value"] == pytest.approx(14.4501)
    # six trading Improvement cells are printed as "-"; reference rows carry no ±
    assert P.reported("trading")["value"].isna().sum() == 6
    assert P.reported("portfolio", "DJ30").set_index(["model", "metric"])["pm"].loc["Market Index"].isna().all()
    storm = P.reported("rankic", "dj30").set_index(["model", "metric"]).loc[("STORM", "RankIC")]
    assert (storm["value"], storm["pm"]) == (0.065, 0.038)


def test_reported_rejects_unknown_table_and_dataset():
    with pytest.raises(ValueError, match="unknown table"):
        P.reported("table4")
    with pytest.raises(ValueError, match="no reported numbers"):
        P.reported("portfolio", "nasdaq")


def test_model_label_maps_registry_names_to_printed_rows():
    assert P.model_label("storm_wo_ts") == "STORM-w/o-TS"
    assert P.model_label("STORM-w/o-CS") == "STORM-w/o-CS"
    assert P.model_label("factorvae") == "FactorVAE"
    assert P.model_label("market_index") == "Market Index"
    assert P.model_label("buy&hold") == "Buy&Hold"
    assert P.model_label("my model") == "my model"


# --------------------------------------------------------------------------- improvement


def test_improvement_reproduces_the_dj30_portfolio_row():
    paper = P._paper_rows("portfolio", "dj30")
    imp = P.improvement(paper, "portfolio")
    printed = {"APY": 94.74, "CW": 21.75, "CR": 296.59, "ASR": 119.17, "MDD": 52.00, "AVO": 8.50}
    for metric, value in printed.items():
        assert imp.loc[metric, "improvement"] == pytest.approx(value, abs=0.006), metric
    assert imp.loc["APY", "best_baseline"] == "FactorVAE"
    assert imp.loc["AVO", "best_baseline"] == "CAFactor"  # lowest AVO: lower is better
    assert imp.loc["MDD", "direction"] == "down"


def test_improvement_uses_the_best_variant_and_the_column_direction():
    sp = P.improvement(P._paper_rows("portfolio", "sp500"), "portfolio")
    # SP500 MDD and AVO: STORM-w/o-CS is the best variant (0.146 vs Transformer 0.198)
    assert sp.loc["MDD", "best_variant"] == "STORM-w/o-CS"
    assert sp.loc["MDD", "improvement"] == pytest.approx(26.26, abs=0.006)
    assert sp.loc["AVO", "improvement"] == pytest.approx(2.91, abs=0.006)
    ric = P.improvement(P._paper_rows("rankic", "sp500"), "rankic")
    assert ric.loc["RankIC", "improvement"] == pytest.approx(8.772, abs=5e-4)
    assert ric.loc["RankICIR", "improvement"] == pytest.approx(20.609, abs=5e-4)
    aapl = P.improvement(P._paper_rows("trading", "AAPL"), "trading")
    assert aapl.loc["CR", "best_variant"] == "STORM-w/o-TS"
    assert aapl.loc["CR", "improvement"] == pytest.approx(45.076, abs=5e-4)
    assert aapl.loc["AVO", "improvement"] < 0  # printed "-": no variant beats the best baseline


def test_improvement_check_flags_exactly_the_known_errata():
    chk = P.improvement_check()
    assert len(chk) == 46
    assert set(chk["status"]) <= {"ok", "dash", "erratum"}  # no unexplained mismatch
    errata = chk[chk["status"] == "erratum"]
    assert set(zip(errata["table"], errata["dataset"], errata["metric"])) == set(P.PAPER_IMPROVEMENT_ERRATA)
    assert (chk["status"] == "dash").sum() == 6
    ibm_cr = errata.set_index(["dataset", "metric"]).loc[("IBM", "CR")]
    assert ibm_cr["recomputed"] == pytest.approx(25.641, abs=1e-3)
    # the erratum's explanation: divided by STORM's value instead of the best baseline's
    assert (1.470 - 1.170) / 1.470 * 100 == pytest.approx(20.408, abs=1e-3)


def test_improvement_accepts_a_long_frame_and_averages_seeds():
    long = pd.DataFrame({
        "model": ["storm", "storm", "lightgbm", "lightgbm", "storm", "lightgbm"],
        "metric": ["APY", "APY", "APY", "APY", "MDD", "MDD"],
        "value": [0.10, 0.14, 0.10, 0.10, 0.20, 0.10],
        "seed": [0, 1, 0, 1, 0, 0],
    })
    imp = P.improvement(long, "portfolio")
    assert imp.loc["APY", "improvement"] == pytest.approx(20.0)
    assert imp.loc["MDD", "improvement"] == pytest.approx(-100.0)  # STORM's drawdown is twice as deep
    assert list(imp.index) == ["APY", "MDD"]


# --------------------------------------------------------------------------- compare


@pytest.fixture
def ours():
    return pd.DataFrame({
        "model": ["storm"] * 3 + ["LightGBM"] * 3 + ["equal weight"],
        "metric": ["APY"] * 7,
        "value": [0.08, 0.09, 0.10, 0.05, 0.06, 0.07, 0.04],
        "seed": [0, 1, 2, 0, 1, 2, 0],
    })


def test_a_margin_over_a_non_positive_comparator_has_no_per_cent():
    """Δ over a comparator at or below zero on a higher-is-better metric is printed without a per cent
    (+1,198 % over a RankIC of -0.001 would mislead); lower-is-better metrics keep it."""
    assert P._fmt_margin(0.011, -0.001, "RankIC") == "Δ +0.012 (n/m)"
    assert P._fmt_margin(0.011, 0.0, "RankIC") == "Δ +0.011 (n/m)"
    assert P._fmt_margin(0.012, 0.010, "RankIC") == "Δ +0.002 (+20.0 %)"
    assert P._fmt_margin(0.10, 0.20, "MDD") == "Δ +0.100 (+50.0 %)"


def test_compare_means_stds_and_paper_columns(ours):
    cmp = P.compare(ours, "portfolio", "dj30")
    assert cmp.index[0] == "Market Index" and cmp.index[-1] == "equal weight"  # paper order, then ours
    storm = cmp.loc["STORM", "APY"]
    assert storm["ours"] == pytest.approx(0.09)
    assert storm["ours_std"] == pytest.approx(0.01)
    assert storm["n"] == 3
    assert (storm["paper"], storm["paper_pm"]) == (0.148, 0.046)
    assert storm["delta"] == pytest.approx(0.09 - 0.148)
    assert cmp.loc["HireVAE", ("APY", "n")] == 0 and np.isnan(cmp.loc["HireVAE", ("APY", "ours")])
    assert list(cmp.columns.get_level_values(0).unique()) == ["APY", "CW", "CR", "ASR", "MDD", "AVO"]
    sub = P.compare(ours, "portfolio", "dj30", models=["storm", "lightgbm"], metrics=["APY"])
    assert list(sub.index) == ["STORM", "LightGBM"] and sub.shape[1] == 10   # 7 fields + median, quartiles


def test_compare_cells_read_as_one_string(ours):
    cmp = P.compare(ours, "portfolio", "dj30", metrics=["APY"])
    cells = P.compare_cells(cmp, sep=" | ")
    assert cells.loc["STORM", "APY"] == "0.090 ± 0.010 (n=3) | paper 0.148 ± 0.046 | Δ −0.058"
    assert cells.loc["HireVAE", "APY"] == "not run | paper 0.072 ± 0.037"
    assert cells.loc["equal weight", "APY"] == "0.040 (n=1)"
    md = P.compare_markdown(cmp)
    assert md.splitlines()[0] == "| model | APY |"
    assert "0.090 ± 0.010 (n=3)<br>paper 0.148 ± 0.046<br>Δ −0.058" in md


def test_style_compare_colours_by_the_paper_range(ours):
    pytest.importorskip("jinja2")
    cmp = P.compare(ours, "portfolio", "dj30", metrics=["APY"])
    html = P.style_compare(cmp).to_html()
    assert "range over 10 runs" in html
    assert P._cell_status(cmp.loc["LightGBM", "APY"]) == "within"   # 0.060 vs 0.069 ± 0.040
    assert P._cell_status(cmp.loc["STORM", "APY"]) == "outside"     # 0.090 vs 0.148 ± 0.046
    assert P._cell_status(cmp.loc["HireVAE", "APY"]) == "missing"


# --------------------------------------------------------------------------- verdict


def test_verdict_without_results_says_not_run_yet():
    for results in (None, pd.DataFrame(columns=list(V.RESULT_COLUMNS))):
        v = V.verdict(results)
        assert len(v) == len(V.default_claims())
        assert (v["replicated"] == "not run yet").all()
        assert v.loc[0, "paper"] == "0.065 ± 0.038"
        assert list(v.columns) == V.VERDICT_COLUMNS
        assert any("floor" in c.text for c in V.default_claims())
        assert any("total return" in c.text for c in V.default_claims())


def test_verdict_of_the_papers_own_numbers_without_daily_series_is_never_a_yes():
    """The paper's rows as results (2 seeds, no run_dir): value claims replicate; a "beats" claim needs
    the day level, which needs daily series, so it is at most inconclusive."""
    v = V.verdict(paper_as_results(seeds=(0, 1)))
    paper_claims = v[~v["claim"].str.contains("floor|total return")]
    value = paper_claims["claim"].str.contains("≈")
    assert paper_claims[value]["replicated"].str.startswith("yes").all()
    assert not paper_claims[~value]["replicated"].str.startswith("yes").any(), v[["claim", "replicated"]]
    assert v.loc[0, "ours"] == "0.065 ± 0.000"
    apy = v[v["claim"].str.contains("every baseline on DJ30 APY")].iloc[0]
    assert apy["by how much"] == "Δ +0.072 (+94.7 %); paper Δ +0.072 (+94.7 %)"
    assert apy["day level 95% CI"] == "no daily series"
    assert v.iloc[-1]["ours"].startswith("5/5")
    assert set(v.loc[paper_claims.index, "runs"]) == {"cpu, 2 seed(s)"}


def test_verdict_filters_protocol_options_and_prefers_profiles():
    base = paper_as_results(tables=("rankic",))
    other = base.assign(protocol="paper")
    audit = base.assign(options="features=official")
    assert (V.verdict(pd.concat([other, audit]))["replicated"] == "not run yet").all()
    smoke = base.assign(profile="smoke", value=0.0)
    v = V.verdict(pd.concat([smoke, base]))
    assert v.loc[0, "runs"] == "cpu, 1 seed(s)" and v.loc[0, "replicated"].split(" (")[0] == "yes"
    v = V.verdict(smoke)  # only smoke runs: used, and the table says so
    assert v.loc[0, "runs"] == "smoke, 1 seed(s)" and v.loc[0, "replicated"].split(" (")[0] == "no"


def test_verdict_incomplete_and_failed_claims():
    res = paper_as_results(tables=("rankic",))
    dj = res[res["universe"] == "dj30"]
    no_hire = dj[dj["model"] != "HireVAE"]
    v = V.verdict(no_hire).set_index("claim")
    row = v.loc["STORM has a higher RankIC than every baseline on DJ30"]
    assert row["replicated"] == "incomplete"
    assert "5/6 run" in row["ours"]
    worse = dj.copy()
    worse.loc[(worse["model"] == "STORM") & (worse["metric"] == "RankIC"), "value"] = 0.01
    v = V.verdict(worse).set_index("claim")
    assert v.loc["STORM has a higher RankIC than every baseline on DJ30", "replicated"].split(" (")[0] == "no"
    assert v.loc["STORM RankIC on DJ30 ≈ 0.065", "replicated"].split(" (")[0] == "no"
    assert v.loc["STORM RankIC on DJ30 ≈ 0.065", "by how much"] == "Δ −0.055, 15% of the paper's"
    assert v.loc["STORM RankIC on SP500 ≈ 0.062", "replicated"] == "not run yet"


def test_verdict_trading_claim_counts_stocks():
    res = paper_as_results(tables=("trading",))
    res = res[res["universe"].isin(["AAPL", "IBM"])]
    row = V.verdict(res).iloc[-1]
    assert row["ours"] == "2/5 ahead: AAPL, IBM (3 not run)"
    assert row["replicated"] == "partly (2/5 ahead, 0 significant)"


def test_cli_writes_the_book_includes(tmp_path):
    out = tmp_path / "gen"
    assert report.main(["book", "--out-dir", str(out), "--results", str(tmp_path / "no-results")]) == 0
    verdict = (out / "verdict.md").read_text()
    assert "not run yet" in verdict and verdict.startswith("<!-- generated by")
    assert "| " + " | ".join(V.VERDICT_COLUMNS) + " |" in verdict and "Holm" in verdict
    check = (out / "improvement_check.md").read_text()
    assert "IBM" in check and "20.408" in check
    csv = tmp_path / "results.csv"
    paper_as_results(tables=("rankic",)).to_csv(csv, index=False)
    assert report.main(["verdict", "--results", str(csv), "--out", str(out / "v.md")]) == 0
    assert "| STORM RankIC on DJ30 ≈ 0.065 | 0.065 ± 0.038 | 0.065 | yes (1 seed, untested) |" in (out / "v.md").read_text()
    for name in ("claims.md", "mcs.md", "forest.png", "verdict_tests.md"):   # the book's first screen and details
        assert (out / name).is_file()
    assert "○ not run yet" in (out / "claims.md").read_text()


def test_verdict_reads_the_runner_frame_shape():
    """load_results' columns: market pseudo-model, options "" , convention "-" rows, run_dir."""
    rows = []
    for model, apy, ric in (("market", 0.063, None), ("storm", 0.10, 0.02), ("lightgbm", 0.05, 0.03)):
        for seed in ((0,) if model == "market" else (0, 1)):
            spec = dict(task="portfolio", universe="dj30", model=model, options="", protocol="clean",
                        profile="cpu", seed=seed, run_dir=f"results/x/{model}-{seed}")
            for split in ("valid", "test"):
                rows.append({**spec, "split": split, "convention": "-", "metric": "turnover", "value": 0.3})
                for conv in ("standard", "paper", "official"):
                    rows.append({**spec, "split": split, "convention": conv, "metric": "APY",
                                 "value": apy if conv == "paper" else -1.0})
                if ric is not None:
                    for conv in ("standard", "official"):
                        rows.append({**spec, "split": split, "convention": conv, "metric": "RankIC",
                                     "value": ric if conv == "standard" and split == "test" else -1.0})
    rows += [{**r, "model": "ew_buy_hold", "run_dir": "results/x/ew"} for r in rows if r["model"] == "market"]
    v = V.verdict(pd.DataFrame(rows)).set_index("claim")
    mkt = "STORM beats the market (total return) on DJ30 APY"
    assert v.loc[mkt, "ours"] == "0.100 vs Market (EW, total return) 0.063 (+58.7 %)"
    assert v.loc[mkt, "paper"] == "0.148 vs Market Index 0.063 (+134.9 %)"
    assert v.loc[mkt, "replicated"].startswith("inconclusive")   # 2 seeds: untested
    assert v.loc["STORM RankIC on DJ30 ≈ 0.065", "ours"] == "0.020 ± 0.000"
    row = v.loc["STORM has a higher RankIC than every baseline on DJ30"]
    assert row["replicated"].split(" (")[0] == "no" and row["ours"] == "0.020 vs LightGBM 0.030 (−33.3 %); 1/6 run"


def test_verdict_trading_rows_may_name_the_stock_in_a_column():
    res = paper_as_results(tables=("trading",))
    res = res.assign(stock=res["universe"], universe="dj30")
    assert V.verdict(res).iloc[-1]["ours"] == "5/5 ahead: AAPL, JPM, IBM, INTC, MSFT"


def test_compare_refuses_a_frame_that_mixes_conventions(ours):
    mixed = pd.concat([ours.assign(convention="paper"), ours.assign(convention="standard")])
    with pytest.raises(ValueError, match="filter one split, convention"):
        P.compare(mixed, "portfolio", "dj30")
    empty = P.compare(ours.iloc[0:0], "portfolio", "dj30")
    assert (empty.xs("n", axis=1, level="field") == 0).all().all()


def test_a_run_with_an_undefined_metric_is_not_reported_as_missing():
    ours = pd.DataFrame({"model": ["ppo", "ppo", "dqn"], "metric": ["ASR", "APY", "APY"],
                         "value": [np.nan, 0.0, 0.1], "seed": [0, 0, 0]})
    cmp = P.compare(ours, "trading", "AAPL", models=["ppo", "dqn", "sac"], metrics=["ASR", "APY"])
    assert cmp.loc["PPO", ("ASR", "n")] == 0 and cmp.loc["PPO", ("ASR", "runs")] == 1
    cells = P.compare_cells(cmp, sep=" | ")
    assert cells.loc["PPO", "ASR"].startswith("undefined in our run(s) (n=1)")
    assert cells.loc["SAC", "ASR"].startswith("not run")
    assert cells.loc["PPO", "APY"].startswith("0.000 (n=1)")


def test_verdicts_on_fewer_than_three_seeds_are_labelled_untested():
    rows = []
    for seed in (0,):
        for model, v in (("storm", 0.065), ("lightgbm", 0.01)):
            rows.append(dict(task="portfolio", universe="dj30", model=model, protocol="clean", profile="cpu",
                             seed=seed, options="", split="test", convention="standard", metric="RankIC", value=v))
    v = V.verdict(pd.DataFrame(rows)).set_index("claim")
    assert v.loc["STORM RankIC on DJ30 ≈ 0.065", "replicated"] == "yes (1 seed, untested)"
    three = pd.DataFrame([{**r, "seed": s} for r in rows for s in (0, 1, 2)])
    assert V.verdict(three).set_index("claim").loc["STORM RankIC on DJ30 ≈ 0.065", "replicated"] == "yes"


def test_margin_interval_is_welch_and_signed_by_direction():
    from scipy import stats as sps
    a, b = (0.10, 0.02, 5), (0.05, 0.03, 4)
    d, lo, hi = V.margin_interval(a, b, "APY")
    va, vb = 0.02 ** 2 / 5, 0.03 ** 2 / 4
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 3)
    h = sps.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert d == pytest.approx(0.05) and (lo, hi) == pytest.approx((0.05 - h, 0.05 + h))
    # lower is better for MDD: a smaller drawdown is a positive margin
    assert V.margin_interval((0.10, 0.01, 3), (0.20, 0.01, 3), "MDD")[0] == pytest.approx(0.10)
    # an exact comparator (Market Index: one run, no std) leaves the one-sample t-interval
    d, lo, hi = V.margin_interval((0.10, 0.02, 5), (0.06, np.nan, 1), "APY")
    assert (lo, hi) == pytest.approx(V.mean_interval(0.04, 0.02, 5))
    assert np.isnan(V.margin_interval((0.1, np.nan, 1), b, "APY")[1])


def _runs_with_daily(tmp_path, storm_ic, base_ic, storm_daily, base_daily):
    """A results frame of STORM and LightGBM (one row per seed, RankIC) whose run_dir holds a daily.csv."""
    dates = pd.bdate_range("2021-04-01", periods=len(storm_daily))
    rows = []
    for model, values, daily in (("storm", storm_ic, storm_daily), ("lightgbm", base_ic, base_daily)):
        for seed, v in enumerate(values):
            d = tmp_path / f"{model}-{seed}"
            d.mkdir(parents=True)
            pd.DataFrame({"date": dates, "rank_ic": daily, "return": daily / 10, "turnover": 0.1,
                          "benchmark": 0.0}).to_csv(d / "daily.csv", index=False)
            (d / "run.json").write_text('{"finished": "x"}')
            rows.append(dict(task="portfolio", universe="dj30", model=model, protocol="clean", profile="cpu",
                             seed=seed, options="", split="test", convention="standard", metric="RankIC",
                             value=v, run_dir=str(d)))
    return pd.DataFrame(rows)


def test_beats_verdict_needs_both_levels_against_every_comparator(tmp_path, monkeypatch):
    from storm_lib import run as run_mod
    monkeypatch.setattr(run_mod, "is_finished", lambda path: True)
    rng = np.random.default_rng(0)
    claim = [V.Claim("x", "beats", "rankic", ("dj30",), "RankIC", against=("LightGBM",))]
    strong = rng.normal(0.05, 0.05, 500)
    base = rng.normal(0.0, 0.05, 500)
    # clear at both levels: yes
    res = _runs_with_daily(tmp_path / "a", [0.030, 0.031, 0.032], [0.010, 0.011, 0.012], strong, base)
    row = V.verdict(res, claims=claim).iloc[0]
    assert row["replicated"] == "yes", row.to_dict()
    assert row["seed level 95% CI"].startswith("+0.02") and row["day level 95% CI"].startswith("+0.0")
    assert "Holm" in V.verdict_markdown(V.verdict(res, claims=claim))
    # clear over seeds, noise over days (the DJ30 case): inconclusive
    noise = rng.normal(0.0, 0.05, 500)
    res = _runs_with_daily(tmp_path / "b", [0.030, 0.031, 0.032], [0.010, 0.011, 0.012], noise, base)
    row = V.verdict(res, claims=claim).iloc[0]
    assert row["replicated"] == "inconclusive"
    lo, hi = (float(t.replace("−", "-")) for t in row["day level 95% CI"].split(" vs ")[0].split(" ", 1)[1]
              .strip("[]").split(", "))
    assert lo < 0 < hi
    # behind in the mean: no
    res = _runs_with_daily(tmp_path / "c", [0.0, 0.001, 0.002], [0.010, 0.011, 0.012], base, strong)
    assert V.verdict(res, claims=claim).iloc[0]["replicated"] == "no"
    # a comparator model with one seed has no known spread: the seed level is untested
    res = _runs_with_daily(tmp_path / "d", [0.030, 0.031, 0.032], [0.010], strong, base)
    row = V.verdict(res, claims=claim).iloc[0]
    assert row["replicated"] == "inconclusive (LightGBM: 1 seed, untested)"


def test_holm_and_the_seed_test():
    from storm_lib.presentation import evidence as E
    adj = E.holm([0.01, 0.04, 0.03, np.nan])
    assert adj[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adj[3])
    t = E.seed_test([0.10, 0.12, 0.08, 0.11, 0.09], [0.05, 0.07, 0.03, 0.06], "APY")
    d, lo, hi = V.margin_interval((0.10, np.std([0.10, 0.12, 0.08, 0.11, 0.09], ddof=1), 5),
                                  (0.0525, np.std([0.05, 0.07, 0.03, 0.06], ddof=1), 4), "APY")
    assert (t["margin"], t["low"], t["high"]) == pytest.approx((d, lo, hi))
    assert E.seed_test([0.1, 0.2, 0.3], [0.5], "MDD")["margin"] == pytest.approx(0.3)   # lower MDD is better


def test_mcs_keeps_the_best_and_drops_a_clearly_worse_model(tmp_path, monkeypatch):
    from storm_lib import run as run_mod
    from storm_lib.presentation import evidence as E
    monkeypatch.setattr(run_mod, "is_finished", lambda path: True)
    rng = np.random.default_rng(1)
    dates = pd.bdate_range("2021-04-01", periods=600)
    rows = []
    for model, mu in (("storm", 0.05), ("lightgbm", 0.048), ("lstm", -0.05)):
        d = tmp_path / model
        d.mkdir()
        pd.DataFrame({"date": dates, "rank_ic": rng.normal(mu, 0.1, len(dates)), "return": 0.0, "turnover": 0.0,
                      "benchmark": 0.0}).to_csv(d / "daily.csv", index=False)
        rows.append(dict(task="portfolio", universe="dj30", model=model, profile="cpu", seed=0, run_dir=str(d)))
    out = E.mcs(pd.DataFrame(rows), "dj30", "rank_ic", ["storm", "lightgbm", "lstm"], reps=300)
    assert bool(out.loc["STORM", "in_set"]) and not bool(out.loc["LSTM", "in_set"])
    assert out.attrs["size"] == 0.10 and out["n_days"].iloc[0] == 600


def test_compute_record_sums_wall_time_per_book_part():
    runs = pd.DataFrame([
        dict(task="portfolio", universe="dj30", model="storm", protocol="clean", options="", seed=0, wall_seconds=300.0),
        dict(task="portfolio", universe="dj30", model="storm", protocol="clean", options="", seed=1, wall_seconds=100.0),
        dict(task="portfolio", universe="dj30", model="storm", protocol="clean", options="codebook_size=128",
             seed=0, wall_seconds=50.0),
        dict(task="portfolio", universe="dj30", model="storm", protocol="paper", options="", seed=0, wall_seconds=60.0),
        dict(task="portfolio", universe="dj30", model="lightgbm", protocol="clean",
             options="topk_variant=official", seed=0, wall_seconds=6.0),
        dict(task="trading", universe="dj30", model="ppo", protocol="clean", options=None, seed=0, wall_seconds=7200.0),
    ])
    c = C.compute_summary(runs).set_index(["part", "model"])
    assert c.loc[("Tables 2, 4, ablations", "storm"), ["runs", "seeds", "total_s", "median_s"]].tolist() == [2, 2, 400.0, 200.0]
    assert c.loc[("Figure 3 (codebook sweep)", "storm"), "total_s"] == 50.0
    assert c.loc[("audit", "storm"), "total_s"] == 60.0 and c.loc[("audit", "lightgbm"), "total_s"] == 6.0
    assert c.loc[("Table 3 (trading)", "ppo"), "total_s"] == 7200.0
    md = C.compute_markdown(runs)
    assert "| **total** |  | 6 |  | 2.1 h |  |" in md and "STORM 6.7 min" in md
    assert C.compute_markdown(pd.DataFrame()).startswith("No finished runs")
    # superseded runs (an earlier version or budget) leave their parts and get a line of their own
    md = C.compute_markdown(runs.assign(superseded=[False, True, False, False, False, False]))
    assert "STORM 5.0 min" in md and "| superseded runs" in md and "| **total** |  | 6 |  | 2.1 h |  |" in md


def test_trading_activity_counts_trades_and_holders(monkeypatch):
    """Table 3's activity table: trades are position changes (first buy included); a run long every day
    after one trade 'only holds'; other splits are ignored."""
    import storm_lib.presentation.tables as tables
    from storm_lib.presentation import trading_activity

    dates = pd.bdate_range("2022-01-03", periods=6)

    def eq(stock, pos, split="test", action=None):
        return pd.DataFrame({"stock": stock, "split": split, "date": dates, "equity": 1.0, "position": pos,
                             "action": action if action is not None else [np.nan] * 6})

    holder = pd.concat([eq("AAPL", [1, 1, 1, 1, 1, 1], action=[2, 2, 1, 2, 2, np.nan]),
                        eq("AAPL", [0, 1, 0, 1, 0, 1], "valid")])
    trader = eq("AAPL", [0, 1, 1, 0, 1, 0], action=[1, 2, 1, 0, 2, np.nan])
    runs = [(pd.Series({"model": "ppo", "seed": 0}), holder), (pd.Series({"model": "storm", "seed": 0}), trader)]
    monkeypatch.setattr(tables, "_tables", lambda plan, name, **w: runs)
    per_run, per_method = trading_activity(None, "test")
    assert per_run["trades"].tolist() == [1, 4] and per_run["holds"].tolist() == [True, False]
    assert per_run["long share"].tolist() == [1.0, 0.5]
    assert per_method["runs that only hold"].tolist() == [1, 0]
    assert per_run[["sell", "hold", "buy"]].values.tolist() == [[0.0, 0.2, 0.8], [0.2, 0.4, 0.4]]
    assert per_method["sell / hold / buy chosen"].tolist() == ["0.00 / 0.20 / 0.80", "0.20 / 0.40 / 0.40"]


def test_budget_gate_downgrades_claims_resting_on_models_not_shown_on_their_plateau(monkeypatch):
    from dataclasses import replace

    from storm_lib import profiles

    claims = [V.Claim("STORM beats the Transformer on DJ30 RankIC", "beats", "rankic", ("dj30",), "RankIC",
                      against=("Transformer",)),
              V.Claim("STORM beats LightGBM on DJ30 RankIC", "beats", "rankic", ("dj30",), "RankIC",
                      against=("LightGBM",)),
              V.Claim("STORM RankIC on DJ30 ≈ 0.065", "value", "rankic", ("dj30",), "RankIC")]

    def frame(replicated):
        v = pd.DataFrame({"claim": [c.text for c in claims], "replicated": replicated})
        v.attrs.update(claims=claims, datasets=[["dj30"]] * 3, statuses=[[r] for r in replicated])
        return v

    choices = pd.DataFrame({"universe": ["dj30", "dj30"], "model": ["storm", "transformer"],
                            "status": ["plateau", "still rising at 16,000 windows; larger budgets not run yet"]})
    # no chosen budgets: every learned model trained with early stopping
    monkeypatch.setitem(profiles.PROFILES, "cpu", replace(profiles.PROFILES["cpu"], budgets={}))
    g = V.budget_gate(frame(["yes", "no", "no"]), choices)
    assert g["replicated"].tolist() == ["inconclusive (budget: a comparator not shown on its plateau)",
                                        "inconclusive (budget: STORM not shown on its plateau)",
                                        "inconclusive (budget: STORM not shown on its plateau)"]
    assert g["training budget"][0] == "STORM, Transformer: early stopping, no chosen budget"
    assert g["training budget"][1] == "STORM: early stopping, no chosen budget"   # LightGBM needs none
    assert g.attrs["statuses"][1] == ["inconclusive (budget: STORM not shown on its plateau)"]
    # chosen budgets: STORM on its plateau, the Transformer still rising
    monkeypatch.setitem(profiles.PROFILES, "cpu", replace(profiles.PROFILES["cpu"],
                                                          budgets={"dj30": {"storm": 16000, "transformer": 16000}}))
    g = V.budget_gate(frame(["yes", "no", "no"]), choices)
    assert g["replicated"][0].startswith("inconclusive (budget: a comparator")     # a yes against it
    assert g["replicated"][1] == "no" and g["replicated"][2] == "no"               # STORM's budget is enough
    assert g["training budget"][1] == "every learned model on its plateau"
    assert g["training budget"][0] == "Transformer: 16,000 windows, still rising at 16,000 windows; larger budgets not run yet"
    g = V.budget_gate(frame(["no", "yes", "yes"]), choices)
    assert g["replicated"].tolist() == ["no", "yes", "yes"]   # STORM behind an undertrained comparator: still no
    # a torch model outside the study (LSTM) takes the equal-windows budget: named, never a downgrade
    lstm = replace(claims[0], text="STORM beats the LSTM on DJ30 RankIC", against=("LSTM",))
    v = pd.DataFrame({"claim": [lstm.text], "replicated": ["yes"]})
    v.attrs.update(claims=[lstm], datasets=[["dj30"]], statuses=[["yes"]])
    g = V.budget_gate(v, choices)
    assert g["replicated"][0] == "inconclusive (budget: a comparator not shown on its plateau)"  # no budget yet
    monkeypatch.setitem(profiles.PROFILES, "cpu", replace(profiles.PROFILES["cpu"],
                                                          budgets={"dj30": {"storm": 16000, "lstm": 16000}}))
    g = V.budget_gate(v, choices)
    assert g["replicated"][0] == "yes"
    assert g["training budget"][0] == "LSTM: 16,000 windows (equal windows; no curve of its own)"

"""Generate notebooks/*.ipynb (outputs empty, papermill parameters cell, kernel python3) for the STORM replication.

Run from anywhere: ``python tools/make_notebooks.py [REPO_ROOT]`` (default: this file's repository). The
notebooks are generated, never edited by hand: change this script and rerun it."""

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent

COMMON_TAIL = '''seeds = "all"        # all: every seed already in the results directory (seed 0 where none); or 0, "0-4", [0, 1, 2]
protocol = "clean"   # clean (train, valid, test) | paper (test used as validation, as the official code) | sample
split = None         # None, or split dates (train, valid, test: START:END each, see the README) instead of protocol, or a file
profile = "cpu"      # smoke (seconds, proves the code runs) | cpu (default) | paper (official sizes, GPU)
{convention}
data_dir = None      # None: $STORM_DATA_DIR
results_dir = None   # None: $STORM_RESULTS_DIR, else results/ at the repository root
run_missing = True   # run missing runs now (cached runs are never rerun); False: show only finished runs
executor = "local"   # local (this process) | ray (one Ray task per missing run; cluster: $RAY_ADDRESS)'''

SETUP_IMPORTS = '''from IPython.display import Markdown, display

import storm_lib.presentation as nb
from storm_lib import plots
'''

FOOTER_MD = """## Environment and cost

Versions, hardware, this notebook's wall time, the data hashes, the runs it read (with the compute they
recorded) and the exact command that reruns it."""

PROFILE_MD = """
## Settings: this profile against the official code

The numbers above come from the profile named in the parameters (`profile`, default `cpu`). Where its
settings differ from the authors' released code (bold rows), our numbers answer a smaller question than the
paper's: the same method at a CPU budget. The baselines' own sizes are on the Method page."""


def profile_cells(trading: bool = False):
    return [md(PROFILE_MD), code(f"nb.profile_table(ctx.profile, trading={trading})")]


READING = """How to read a cell: the first line is **our mean ± standard deviation over our seeds** (n = number of seeds;
no ± with one seed), the second **the paper's mean ± its printed range over 10 runs** (a range, not a
standard deviation), the third **Δ = ours − paper**. Green: our mean lies within the paper's range; red: it
does not; grey: not run. The colour is a reading aid, not a test. For MDD and AVO lower is better, for every
other column higher is better."""


STATS_MD = """
## Uncertainty

**95% confidence intervals** of APY, ASR (test split, `standard` convention: ASR is the Sharpe ratio
x √252) and RankIC of every model: a stationary block bootstrap of the test days (`storm_lib.stats`,
Politis–White block length, 2,000 resamples) of each run's `daily.csv`. With several seeds the interval is
that of **one run per model, its lowest seed** (column `seed`): it measures the sampling uncertainty over
days of that run; the spread over seeds is the ± in the tables above. A CI that contains 0 means the sign
of the metric is not established on this test period.

**Paired tests, STORM − best baseline**, on the same days (same seed): daily RankIC against the baseline
with the highest mean test RankIC, daily net portfolio return against the baseline with the highest mean
test APY (baselines: every model but the Market Index and the STORM variants). Mean daily difference with
its block-bootstrap CI and p-value, and a Diebold–Mariano t with a Newey–West variance.
{extra}
Runs that are missing are skipped with a message."""

COSTS_MD = """
**Transaction costs**: each model's TopK-Drop portfolio rebuilt from its saved test scores at costs of 0 to
20 basis points of turnover (the runs use 1 bp, dotted line), labels from the universe's panel. The
holdings do not depend on the cost, so a curve's slope is the model's turnover.
"""


def nb_(cells):
    nb = new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        # the book: no right-hand "Contents" column on these pages, so the wide tables get the width
        "html_theme.sidebar_secondary.remove": True,
    }
    return nb


def params(text):
    c = new_code_cell(text)
    c.metadata["tags"] = ["parameters", "hide-input"]   # the book shows outputs; the code is one click away
    return c


def md(text):
    return new_markdown_cell(text.strip())


def code(text, tag: str = "hide-input"):
    """A code cell; in the book its input is hidden (``hide-input``: one click shows it) or removed
    (``remove-input``: plumbing whose output is all that matters)."""
    c = new_code_cell(text.strip())
    c.metadata["tags"] = [tag]
    return c


# ---------------------------------------------------------------- table 2
table2 = nb_([
    md("""
# Tables 1 and 2: portfolio management on SP500 and DJ30

Every return model scores the stocks of a universe each day of the test period of the protocol in the
parameters (the paper's: DJ30 and SP500 under the clean protocol, test 2021-04-01 to 2024-03-31 with
selection on the validation period 2019-04-01 to 2021-03-31; the setup cell below prints the universes and
dates this run uses, e.g. the embedded sample's 2020-2022 test period in `make demo`). A **TopK-Drop**
portfolio holds the k = 5 best-scored stocks in equal weights, replaces at most d = 3 of them a day and
pays 1e-4 on turnover. The six columns: APY (annualised yield), CW (cumulative wealth), CR (Calmar ratio),
ASR (annualised Sharpe ratio), MDD (maximum drawdown), AVO (annualised volatility). The rows are the
paper's: the Market Index (^DJI for DJ30: a **price index without dividends**; SPY's adjusted close for
SP500: with dividends; for a universe without an index, the equal-weight buy-and-hold of its stocks), six
baselines, STORM and its two ablations; then rows the paper does not have: the
**total-return market** (`Market (EW, total return)`: the universe's stocks bought in equal weights on the
first test day and held, dividends included; every portfolio here earns dividends, so this is the fair
market) and five **floors** (`Floor: ...`: 1- and 5-day reversal, 20- and 60-day momentum, 20-day low
volatility, one-line signals scored each day from prices up to that day, through the same TopK-Drop code).
Deterministic rows show one number. Convention `paper` (the default) is the one the published tables
satisfy: ASR = APY/AVO, AVO annualised (see the Method page).

Parameters (papermill `-p`): `universes`, `models`, `seeds`, `protocol`, `split`, `profile`, `convention`,
`data_dir`, `results_dir`, `run_missing`, `executor`. Runs are read from the results directory; missing ones
are run first. With `-p universes sample -p protocol sample` it runs on the embedded offline sample, and with
`-p universes /path/prices.parquet -p split train=A:B,valid=C:D,test=E:F` on any price file and period;
there it shows our numbers only (the paper has none).
"""),
    params('''universes = ["dj30", "sp500"]   # or "dj30,sp500"; sample: the offline sample, with protocol sample (no paper numbers)
models = ["market", "lightgbm", "lstm", "transformer", "cafactor", "factorvae", "hirevae",
          "storm", "storm_wo_ts", "storm_wo_cs",   # registry names; the rows of the paper's tables
          "ew_buy_hold", "reversal_1d", "reversal_5d", "momentum_20d", "momentum_60d", "low_vol_20d"]   # ours
''' + COMMON_TAIL.format(convention='convention = "paper"  # portfolio metrics: paper (ASR is APY/AVO, as published) | standard | official')),
    code(SETUP_IMPORTS + '''
ctx = nb.setup("table2_portfolio", universes=universes, models=models, seeds=seeds, protocol=protocol, split=split,
               profile=profile, convention=convention, data_dir=data_dir, results_dir=results_dir,
               run_missing=run_missing, executor=executor)'''),
    md("""
## Runs

One run per (universe, model, seed) of `storm_lib.run` (task `portfolio`). A finished run is never rerun;
the plan below says which runs were read and which were run now."""),
    code('''plan = ctx.ensure(ctx.specs("portfolio"))
m = ctx.metrics(plan)'''),
    md("## Ours against the paper\n\n" + READING),
    code('''for u in ctx.universes:
    display(Markdown(f"**{ctx.label(u)}**, test split, convention `{ctx.convention}`"),
            nb.comparison(m, "portfolio", u, ctx.convention, models=ctx.models, paper=ctx.has_paper(u)))'''),
    *profile_cells(False),
    md("""
## The Improvement(%) row

The paper's last row, computed the paper's way on **our** means: the best of STORM and its two ablations
against the best of the six baselines (never the Market Index), relative, in the column's direction
(positive = the best variant is better by that much; negative = a baseline is better, printed "-" in the
paper). The paper's printed row is beside it."""),
    code('''for u in ctx.universes:
    display(Markdown(f"**{ctx.label(u)}**"), nb.improvement_table(m, "portfolio", u, ctx.convention, paper=ctx.has_paper(u)))'''),
    md("""
## Cumulative wealth

Each model's TopK-Drop portfolio over the test period (from each run's `daily.csv`; with several seeds, the
mean of the seeds' wealth curves), against the market index (dashed black)."""),
    code('''for u in ctx.universes:
    display(plots.wealth(nb.daily(plan, "return", universe=u), title=f"{ctx.label(u)}: cumulative wealth, test period"))'''),
    md("## Drawdown\n\nThe fall of each wealth curve below its running peak (MDD is the deepest point)."),
    code('''for u in ctx.universes:
    display(plots.drawdown(nb.daily(plan, "return", universe=u), title=f"{ctx.label(u)}: drawdown"))'''),
    md("""
## Score anatomy

What kind of signal each model's test scores carry (`storm_lib.anatomy`, mean ± sd over seeds):
**stock share**, the share of the cross-sectional variance of the (per-day z-scored) scores explained by
a per-stock constant (1 = a fixed stock ranking); **rank autocorr**, the day-to-day Spearman correlation
of the scores; **low vol** / **momentum**, the mean daily Spearman correlation with minus the 20-day
volatility and with the 20-day return. A high stock share with a rank autocorrelation near 1 is a static
tilt, not a time-varying forecast."""),
    code('''for u in ctx.universes:
    display(Markdown(f"**{ctx.label(u)}**"), nb.score_anatomy(ctx, plan, u))'''),
    md(STATS_MD.format(extra=COSTS_MD)),
    code("nb.uncertainty(ctx, plan, m, costs=True)"),
    md(FOOTER_MD),
    code("nb.footer(ctx)", "remove-input"),
])

# ---------------------------------------------------------------- table 3
table3 = nb_([
    md("""
# Table 3: single-stock trading

Each method trades one stock at a time (AAPL, JPM, IBM, INTC, MSFT) in the same environment: all-in long or
flat, whole shares, trades at the close, cost 1e-4 of the traded value, 100,000 of cash. Rows: Buy&Hold
(buy on the first day), three signal baselines (LightGBM, LSTM, Transformer fitted on DJ30 with the raw
next-day return as target: buy when the forecast is positive, sell when negative), three RL agents on the
stock's recent features (DQN, SAC, PPO), and PPO on the factor tokens of STORM and of its two ablations.
RL agents keep the checkpoint with the best validation Sharpe; every number below is on the test period.

**Units in the paper's Table 3 are mixed.** Its Buy&Hold rows use annualised metrics (geometric APY,
annualised AVO, ASR = APY/AVO, CR = APY/MDD; the `paper` convention), while its model rows follow the
released code's convention: AVO is a daily standard deviation (0.008 to 0.023), ASR ≈ mean·√N/std over
N ≈ 700 days, CR = 252·mean/MDD (reference/paper.md §10.5–10.6). Our rows are all in one convention
(parameter `convention`, default `paper`), so our model rows sit on the scale of the paper's Buy&Hold
row: their AVO and ASR are not comparable with the paper's model rows (`-p convention official` puts all
of ours on the code's scale instead). The task's fixed settings are printed below.

Parameters: `universe`, `stocks`, `models`, `seeds`, `protocol`, `profile`, `convention`, `data_dir`,
`results_dir`, `run_missing`, `executor`. The embedded sample lacks IBM and INTC: with `-p protocol sample` this page
runs nothing and says so.
"""),
    params('''universe = "dj30"   # the trading task's universe (the paper's: DJ30)
stocks = ["AAPL", "JPM", "IBM", "INTC", "MSFT"]   # shown here; every run trades all five
models = ["buy_and_hold", "lightgbm", "lstm", "transformer", "dqn", "sac", "ppo",
          "storm", "storm_wo_ts", "storm_wo_cs"]   # keys of storm_lib.trading.experiment.METHODS
''' + COMMON_TAIL.format(convention='convention = "paper"  # paper (annualised, as the paper\'s Buy&Hold rows) | standard | official (the code\'s)')),
    code(SETUP_IMPORTS + '''from storm_lib.tasks import trading as trading_task

ctx = nb.setup("table3_trading", universe=universe, stocks=stocks, models=models, seeds=seeds,
               protocol=protocol, split=split, profile=profile, convention=convention, data_dir=data_dir,
               results_dir=results_dir, run_missing=run_missing, executor=executor)'''),
    md("## Runs\n\nOne run per (method, seed) of `storm_lib.run` (task `trading`), each trading the five stocks."),
    code('''plan = ctx.ensure(ctx.specs("trading"))
m = ctx.metrics(plan)
nb.trading_config(trading_task.run_task.config, ctx.profile)'''),
    md("## Ours against the paper, per stock\n\n" + READING),
    code('''for s in ctx.stocks:
    display(Markdown(f"**{s}**, test split, convention `{ctx.convention}`"),
            nb.comparison(m, "trading", s, ctx.convention, models=ctx.models, paper=ctx.has_paper(ctx.universe)))'''),
    *profile_cells(True),
    md("""
## Equity curves

Value of the trading account of each method over the test period (start = 1; with several seeds, their
mean), one panel per stock; Buy&Hold dashed black."""),
    code('''plots.equity_curves(nb.equity(plan, "test"), ctx.stocks, title="Trading equity, test period")'''),
    md("""
## Does each method trade?

An RL agent or a signal policy that holds the stock all the time is Buy&Hold under another name. From
each run's test-period positions: the share of days long, the number of trades (position changes, the
first buy included), the runs (stock × seed) that only hold (long every day after at most one trade) and the
action distribution: the share of days the policy chose sell, hold and buy (a buy while long is executed as a
hold). The RL agents' activity at 1x to 16x their environment steps is on the Training budget page."""),
    code('''activity, activity_summary = nb.trading_activity(plan, "test")
display(activity_summary.style.format({"long share": "{:.2f}", "trades (mean)": "{:.1f}", "trades (median)": "{:.0f}"}))
display(activity.pivot_table(index=["method", "stock"], columns="seed", values="trades", aggfunc="first")
        .rename_axis(columns="trades per seed"))'''),
    md("""
## Training time

Seconds per method (mean over seeds): `fit` is the return model fitted once on the universe (signal
baselines, STORM and its ablations), `agents` the RL training summed over the five stocks, `run wall` the
whole run (fit, agents and evaluation) as recorded in its `run.json`."""),
    code("nb.training_time(m, plan)"),
    md(FOOTER_MD),
    code("nb.footer(ctx)", "remove-input"),
])

# ---------------------------------------------------------------- table 4
table4 = nb_([
    md("""
# Table 4: RankIC and RankICIR

How well each model's scores rank the next day's returns: RankIC is the Spearman correlation between the
scores and the realised next-day returns across the stocks of a day, averaged over the days of the test
period; RankICIR is that mean divided by the standard deviation of the daily values (not annualised).
Convention `standard` (the per-day Spearman mean, as Qlib computes it); `official` is the released code's
variant. The numbers come from the same runs as Tables 1 and 2 (task `portfolio`). The `Floor: ...` rows
(not in the paper) are one-line price signals scored each day from prices up to that day: 1- and 5-day
reversal, 20- and 60-day momentum, 20-day low volatility; they are deterministic (one number, no ±).

Parameters: `universes`, `models`, `seeds`, `protocol`, `profile`, `convention`, `window` (days of the
rolling mean), `data_dir`, `results_dir`, `run_missing`, `executor`.
"""),
    params('''universes = ["dj30", "sp500"]   # or "dj30,sp500"; sample: the offline sample, with protocol sample (no paper numbers)
models = ["lightgbm", "lstm", "transformer", "cafactor", "factorvae", "hirevae",
          "storm", "storm_wo_ts", "storm_wo_cs",   # the rows of Table 4 (the Market Index has no scores)
          "reversal_1d", "reversal_5d", "momentum_20d", "momentum_60d", "low_vol_20d"]   # floors (ours)
window = 63          # trading days of the rolling mean in the daily RankIC figure
''' + COMMON_TAIL.format(convention='convention = "standard"  # IC convention: standard (per-day Spearman mean) | official')),
    code(SETUP_IMPORTS + '''from storm_lib.metrics import IC_CONVENTIONS

ctx = nb.setup("table4_rankic", conventions=IC_CONVENTIONS, universes=universes, models=models, seeds=seeds,
               protocol=protocol, split=split, profile=profile, convention=convention, window=window, data_dir=data_dir,
               results_dir=results_dir, run_missing=run_missing, executor=executor)'''),
    md("## Runs"),
    code('''plan = ctx.ensure(ctx.specs("portfolio"))
m = ctx.metrics(plan)'''),
    md("## Ours against the paper\n\n" + READING),
    code('''for u in ctx.universes:
    display(Markdown(f"**{ctx.label(u)}**, test split, convention `{ctx.convention}`"),
            nb.comparison(m, "rankic", u, ctx.convention, models=ctx.models, paper=ctx.has_paper(u)))'''),
    *profile_cells(False),
    md("""
## The Improvement(%) row

Best of STORM and its ablations against the best baseline, relative, computed on our means; the paper's
printed row beside it."""),
    code('''for u in ctx.universes:
    display(Markdown(f"**{ctx.label(u)}**"), nb.improvement_table(m, "rankic", u, ctx.convention, paper=ctx.has_paper(u)))'''),
    md("""
## Daily RankIC over time

The daily cross-sectional RankIC of each model (from each run's `daily.csv`, standard convention; seeds
averaged), as a rolling mean: where in the test period a model ranks well, and how stable it is."""),
    code('''for u in ctx.universes:
    ic = nb.daily(plan, "rank_ic", universe=u, model=ctx.models)
    display(plots.rolling_rankic(ic, ctx.window, title=f"{ctx.label(u)}: daily RankIC, {ctx.window}-day rolling mean"))'''),
    md(STATS_MD.format(extra="")),
    code("nb.uncertainty(ctx, plan, m)"),
    md(FOOTER_MD),
    code("nb.footer(ctx)", "remove-input"),
])

# ---------------------------------------------------------------- ablation
ablation = nb_([
    md("""
# Ablations: STORM without its TS or CS module

STORM-w/o-TS keeps only the cross-sectional VQ-VAE (one token per day over all stocks); STORM-w/o-CS keeps
only the time-series VQ-VAE (one token per patch of each stock). The table sets the three variants side by
side on the three tasks: the TopK-Drop portfolio (Tables 1/2, convention `convention`), RankIC and
RankICIR (Table 4, standard convention) and single-stock trading (Table 3, convention `convention`; the
paper's trading rows mix units, see the Table 3 page). Per variant, `ours` is our mean over seeds and
`paper` the paper's mean over 10 runs; ▲ marks the best of the three variants in our runs (lowest for
MDD and AVO, highest otherwise). Column `best floor`: the best of the five trivial floors (one-line price
signals, deterministic; portfolio and RankIC only), the level a variant has to beat to show learning.

Parameters: `universes` (portfolio and RankIC), `stocks` and `trading_universe` (trading; `stocks=[]`
skips it), `models`, `seeds`, `protocol`, `profile`, `convention`, `data_dir`, `results_dir`, `run_missing`, `executor`.
"""),
    params('''universes = ["dj30", "sp500"]   # portfolio and RankIC; sample: the offline sample, with protocol sample
stocks = ["AAPL", "JPM", "IBM", "INTC", "MSFT"]   # trading; [] skips the trading task
trading_universe = "dj30"
models = ["storm", "storm_wo_ts", "storm_wo_cs"]
''' + COMMON_TAIL.format(convention='convention = "paper"  # portfolio and trading metrics: paper | standard | official')),
    code(SETUP_IMPORTS + '''
ctx = nb.setup("ablation", universes=universes, stocks=stocks, trading_universe=trading_universe, models=models,
               seeds=seeds, protocol=protocol, split=split, profile=profile, convention=convention, data_dir=data_dir,
               results_dir=results_dir, run_missing=run_missing, executor=executor)'''),
    md("## Runs\n\nThe same runs as the three table pages (cached when those pages ran first)."),
    code('''plan = ctx.ensure(ctx.specs("portfolio"))
floor_plan = ctx.ensure(ctx.specs("portfolio", models=nb.FLOOR_MODELS))
trading_plan = ctx.ensure(ctx.specs("trading"))'''),
    md("## The three variants on the three tasks"),
    code('''ab = nb.ablation_frame(ctx.metrics(plan), ctx.metrics(trading_plan), ctx.universes, ctx.stocks,
                      convention=ctx.convention, paper=ctx.protocol != "sample", m_floors=ctx.metrics(floor_plan))
nb.ablation_table(ab)'''),
    md("""
## Reading the table

Generated from the numbers above (not written by hand): per task, how often full STORM is the best of the
three variants in our runs and in the paper, and how often our best variant is the paper's."""),
    code("display(Markdown(nb.ablation_text(ab)))"),
    md("""
## Two w/o-TS variants

Without the TS module, what does a stock's embedding see? By default (STORM version 2) a learned per-stock
identity vector attends to the CS day tokens: no per-stock input beyond what a CS-only model has, the
information set of the paper's ablation (whose only per-stock parameters are output weights). The
version-1 variant queried the CS tokens with Linear(the stock's own last-day features), an input the
paper's ablation lacks; it is kept as the option `wo_ts_query=last_day`. RankIC (standard convention),
mean ± std over seeds; "–" where no run exists
(`python -m storm_lib.run --task portfolio --universe dj30 --model storm_wo_ts --option wo_ts_query=last_day --seed 0 1 2`)."""),
    code('''for u in ctx.universes:
    display(Markdown(f"**{u.upper()}**"), nb.wo_ts_variants(u, ctx.protocol, ctx.profile, ctx.results_dir))'''),
    *profile_cells(True),
    md(FOOTER_MD),
    code("nb.footer(ctx)", "remove-input"),
])

# ---------------------------------------------------------------- fig 3
fig3 = nb_([
    md("""
# Figure 3: codebook usage and codebook size

STORM quantises its TS and CS tokens with two codebooks of K entries. The paper's Figure 3 shows (a) how
the tokens spread over the 512 entries (usage over the whole index range, no dead region) and (b) RankIC
and RankICIR for K = 128 to 2048, best at 512; the paper does not say which dataset.

(a) Ours: the usage counts of every entry over the test windows (each run's `codes.csv`), sorted by
frequency, with the share of entries used and the perplexity exp(H) of the usage distribution (K for a
perfectly even use, 1 for a single entry). (b) Ours: one STORM portfolio run per K (the profile's default K,
512 in the `cpu` profile, is the run without options), RankIC and RankICIR on the test period, next to the
paper's values read by eye from Figure 3b (`storm_lib.presentation.codebook.PAPER_FIG3B`, transcribed in
reference/paper.md §9, about ±0.001 RankIC and ±0.005 RankICIR).

Parameters: `universes` (default DJ30: the paper does not say, and an SP500 STORM run costs about half an
hour per K on the CPU), `models` (default STORM), `sizes`, `seeds`, `protocol`, `profile`, `convention` (IC), `data_dir`,
`results_dir`, `run_missing`, `executor`.
"""),
    params('''universes = ["dj30"]   # the paper does not state Figure 3's dataset; "dj30,sp500" for both
models = ["storm"]     # STORM; the ablations storm_wo_ts (CS codebook only) and storm_wo_cs (TS only) work too
sizes = [128, 256, 512, 1024, 2048]   # codebook sizes K of panel (b)
''' + COMMON_TAIL.format(convention='convention = "standard"  # IC convention: standard | official')),
    code(SETUP_IMPORTS + '''from storm_lib.metrics import IC_CONVENTIONS

ctx = nb.setup("fig3_codebook", conventions=IC_CONVENTIONS, universes=universes, models=models, sizes=sizes,
               seeds=seeds, protocol=protocol, split=split, profile=profile, convention=convention, data_dir=data_dir,
               results_dir=results_dir, run_missing=run_missing, executor=executor)'''),
    md("## Runs\n\nSTORM portfolio runs, one per codebook size (option `codebook_size=K`) and seed."),
    code('''plan = ctx.ensure(nb.codebook_specs(ctx))
m = ctx.metrics(plan)'''),
    md("""
## (a) Codebook usage

Share of the test windows' tokens that each codebook entry receives, entries sorted from most to least
used (the dashed line is a perfectly even use), for the default-K run (first seed)."""),
    code('''for u, model in [(u, x) for u in ctx.universes for x in ctx.models]:
    codes = nb.codes(plan, u, model)
    display(Markdown(f"**{ctx.label(u)}, {nb.model_label(model)}**"), nb.codebook_stats(codes).round(3),
            plots.code_usage(codes, title=f"{ctx.label(u)}: codebook usage over the test windows"))'''),
    md("""
### Usage where it matters, and the alignment

Per split (train windows: every 4th; valid; test), in eval mode, mean over seeds: entries used and
perplexity of the hard assignments of each codebook beside the value of the diversity loss (the paper's
L_div, −H(p̄)/K: exp(−K·div) is the usage the loss reports) and of the entropy penalty; the TS↔CS
alignment InfoNCE and top-1 retrieval of the matching unit among the units of B random windows
(`align_ln_b`, `align_chance`) and of B' windows that share no day (`align_b_disjoint` units, chance
ln of it). Since STORM version 4 a unit is a 4-day patch, 16 per window; before, a window
(DESIGN.md). Version-1 runs did not record these."""),
    code('''for u in ctx.universes:
    display(Markdown(f"**{ctx.label(u)}**"), nb.usage_table(m, u, ctx.models).round(3))'''),
    md("""
## (b) Codebook size

RankIC and RankICIR on the test period against K (ours: mean ± std over seeds), the paper's Figure 3b
beside them (dataset not stated, values read by eye)."""),
    code('''for u, model in [(u, x) for u in ctx.universes for x in ctx.models]:
    sweep = nb.codebook_sweep(m, u, model, convention=ctx.convention)
    display(Markdown(f"**{ctx.label(u)}, {nb.model_label(model)}**"), sweep.round(3),
            plots.codebook_curve(sweep, title=f"{ctx.label(u)}: {nb.model_label(model)} against the codebook size"))'''),
    *profile_cells(False),
    md(FOOTER_MD),
    code("nb.footer(ctx)", "remove-input"),
])

# ---------------------------------------------------------------- protocol audit
audit_nb = nb_([
    md("""
# Protocol audit: how far do the official code's deviations move the numbers?

The released code of the paper (DVampire/Storm) deviates from the paper's method and from a clean
protocol in several places (reference/official-code.md §10). `storm_lib` implements the clean version by
default and reproduces each deviation only as a named **switch** (`storm_lib.audit`), all off by default:

- (a) `test_selection`: validation = test (the `paper` protocol: best epoch and early stopping on the test
  period; training runs to 2021-03-31);
- (b) `sum_topk`: the TopK-Drop daily return is the **sum** of the k holdings' returns (5x exposure);
- (c) `official_metrics`: the released metric formulas (no new run: the same runs read with convention
  `official`);
- (d) `sampled_predictions`: test scores are one random draw instead of the predictive mean (models with
  a predictive distribution only);
- (e) `prior_across_batch`: STORM's prior attends across the mini-batch (STORM only);
- (f) `official_features`: the official 152 raw-close features and previous-block scaler.

For each model this page shows the clean baseline, **each switch alone** and **all switches
cumulatively** (in the order above), as mean ± std over seeds, the change against the clean run of the
same seed, a waterfall of the cumulative path for APY, ASR and RankIC, and the paper's published STORM
numbers beside them, with a generated reading. Default models: STORM and LightGBM (the strongest
baseline of our runs).

Parameters: `universes`, `models`, `seeds`, `profile`, `data_dir`, `results_dir`, `run_missing`, `executor`.
"""),
    params('''universes = ["dj30"]   # dj30 and/or sp500 (the audit needs the clean and paper protocols: no sample)
models = ["storm", "lightgbm"]   # STORM and the strongest baseline; any portfolio model but the market index
seeds = "all"          # all: the seeds audited so far (seed 0 where none), or e.g. "0-2"; deltas are taken seed by seed
profile = "cpu"        # smoke (seconds, proves the code runs) | cpu (default) | paper (official sizes, GPU)
data_dir = None        # None: $STORM_DATA_DIR
results_dir = None     # None: $STORM_RESULTS_DIR, else results/ at the repository root
run_missing = True     # run missing runs now (cached runs are never rerun); False: show only finished runs
executor = "local"     # local (this process) | ray (one Ray task per missing run; cluster: $RAY_ADDRESS)'''),
    code(SETUP_IMPORTS + '''
ctx = nb.setup("audit", universes=universes, models=models, seeds=seeds, profile=profile, data_dir=data_dir,
               results_dir=results_dir, run_missing=run_missing, executor=executor)
nb.switch_table(styled=True)'''),
    md("""
## Runs

Per model and seed: the clean run, one run per applicable switch alone and one per cumulative step
(`storm_lib.audit.audit_specs`); switch (c) adds no run. Missing runs are listed (with the command that
runs each) and left out of the tables and charts."""),
    code('''plan = ctx.ensure(nb.audit_specs(ctx))
display(Markdown(nb.missing_text(plan)))
at = nb.audit_frame(plan)'''),
    md("""
## Not switchable: survivorship bias

Both the official universe lists and ours are **present-day** index members applied back to 2008, and our
data hold no delisted or former members (OC §10.5). There is no survivorship-free universe to switch to, so
survivorship bias **cannot be switched off with our data**: every run on this page, clean or switched,
carries it, and none of the deltas below measures it."""),
    md("""
## The audit, per model

Table: rows are the steps (`baseline` = clean, `alone` = one switch on the clean run, `cumulative` = every
switch up to and including that one), cells mean ± std over seeds (n); `Δ clean` is the change against
the clean run of the same seed. From (c) on, the cumulative steps are read with the official metric
convention (CW as a return, Sharpe x √n, simple annualisation), so their levels are on the code's scale.
The paper's published rows (its ASR is APY/AVO) close the table. Waterfall: the clean level (grey), each
cumulative step as a green (up) or red (down) bar, every switch on (dark grey), the paper's STORM mean
dashed with its ± range shaded. The text below each chart is generated from the numbers."""),
    code('''for u in ctx.universes:
    for model in ctx.models:
        label = nb.model_label(model)
        display(Markdown(f"### {ctx.label(u)}: {label}"), nb.audit_styled(at, u, model, ctx.seeds, ctx.profile),
                plots.waterfall(nb.audit_waterfall(at, u, model), nb.audit_paper_lines(u, model),
                                title=f"{ctx.label(u)}, {label}: clean → every switch on (mean over seeds)"),
                Markdown(nb.audit_text(at, u, model)))'''),
    md(FOOTER_MD),
    code("nb.footer(ctx)", "remove-input"),
])

# ---------------------------------------------------------------- training budget (issue 18)
budget_nb = nb_([
    md("""
# Training budget: validation RankIC against training windows seen

Is a model's number a property of the method, or of how long we trained it? Every point of this page is a
portfolio run with the option `budget_windows=N`: training sees **exactly N windows** (random batches of
the profile's size, in epochs of the profile's `steps_per_epoch`, the last epoch cut short), the
learning-rate schedule (linear warm-up, then cosine to zero) spans those N windows, and **early stopping is
off**, so a curve is never cut short; the reported model is still the epoch with the best **validation**
RankIC. Test RankIC is read at that same epoch and is shown separately: it never chooses anything.

The grid (`storm_lib.budget.BUDGETS`): DJ30 1,000 / 4,000 / 16,000 / 64,000 windows (64x); SP500 450 /
2,800 / 5,600 / 14,000 windows (31x), about 0.16 / 1 / 2 / 5 passes over its training days; two seeds per point.
A curve still rising at the largest budget may get one more step where that step is affordable
(`storm_lib.budget.EXTENSIONS`, listed under Runs below; DJ30 has none: a STORM or Transformer run of 256,000
DJ30 windows would take 4 to 5 hours per seed on this machine, and neither has SP500 STORM: 35,000 SP500
windows would take about 5 hours per seed). The SP500 Transformer still rises at its 35,000-window step; a
further step of 87,500 windows (about 4 hours per seed) is not run either.
An SP500 epoch of a budget run is 100 batches of 8 (800 windows, option `steps_per_epoch=100`,
`Profile.budget_options`), near DJ30's 960: a validation pass over SP500's 504 validation days costs about as
much as 25 training steps, so validating every 200 windows would spend half the compute on validation.
For comparison, the `cpu` profile's plain runs with early stopping, before any budget was chosen, saw 3,200
to 11,500 windows on DJ30 and 1,000 to 5,300 on SP500 (epochs run x steps per epoch x batch size, from
their `history.csv`). Once a universe's budgets are chosen (`python -m storm_lib.budget apply`, section
"Chosen budgets" below), its plain runs train with them and the early-stopping runs are superseded.

**Which validation RankIC.** A run's selected epoch is the one with the best validation RankIC, so its
validation RankIC is the largest of one noisy value per epoch: biased upward, and the more so the more
epochs a budget has (2 epochs at 1,000 DJ30 windows, 67 at 64,000). Measured here: DJ30 STORM-w/o-TS at
64,000 windows, 0.023 at the selected epoch and 0.004 after the last epoch; STORM-w/o-CS, 0.011 to 0.020 at
the selected epoch and below zero after the last epoch at every budget. The curves and the rule therefore
read the validation RankIC **at the end of training** (after the last epoch, where the schedule has
decayed to zero), which no selection has touched; the selected epoch's value is drawn dotted beside it.
The table runs still use the selected epoch (every torch model here is selected by validation RankIC).
Runs made since the end-of-training model is recorded (`RankIC_end` in `metrics.csv`) also give its test
RankIC, in the tables' last column: whether what the schedule learns on 2019–2021 carries to 2021–2024.

**The profile rule** (`storm_lib.budget.choose`): per model and universe, the smallest budget whose mean
end-of-training validation RankIC is within one standard error (over seeds) of the best budget's. When that is the largest
budget run, every smaller budget is more than one SE below it: the curve is still rising and the verdict
for that model is **inconclusive: needs >= X windows** (X the grid's next step); while larger budgets of
the grid have not finished, it reads "still rising ..., larger budgets not run yet" and nothing is chosen.
A point counts once two seeds have finished.

Parameters: `universes`, `models`, `seeds`, `protocol`, `profile`, `data_dir`, `results_dir`,
`run_missing` (False by default on this page only), `executor`. Runs are long (hours): launch the grid with
`python -m storm_lib.budget run --universe dj30 --model transformer factorvae`, not from this page.
"""),
    params('''universes = ["dj30", "sp500"]
models = ["storm", "storm_wo_ts", "storm_wo_cs", "factorvae", "transformer"]   # the study's model families
seeds = "all"        # all: seeds 0 and 1 plus any other seed with a finished budget run; or e.g. "0-2"
protocol = "clean"   # clean (train, valid, test); selection is on the validation split
profile = "cpu"      # the profile whose sizes are trained at each budget
data_dir = None      # None: $STORM_DATA_DIR
results_dir = None   # None: $STORM_RESULTS_DIR, else results/ at the repository root
run_missing = False  # this page's default: finished runs only; True runs the missing grid now (hours)
executor = "local"   # local (this process) | ray (one Ray task per missing run; cluster: $RAY_ADDRESS)'''),
    code(SETUP_IMPORTS + '''from storm_lib import budget
from storm_lib.run import run_timings

ctx = nb.setup("budget", universes=universes, models=models, seeds=seeds, protocol=protocol, profile=profile,
               data_dir=data_dir, results_dir=results_dir, run_missing=run_missing, executor=executor)'''),
    md("## Runs\n\nOne run per model, universe, budget and seed, smallest budget first. Runs not finished yet are listed."),
    code('''plan = nb.budget_plan(ctx)
timings = run_timings(ctx.params.get("results_dir"))   # finished runs' compute: the estimates of what is left
display(Markdown(nb.budget_extensions_text(ctx)), Markdown(nb.budget_missing_text(plan, timings)))
runs = nb.budget_frame(plan, ctx)
summary = budget.summarise(runs)
choice = budget.choose(summary)'''),
    md("""
## Curves

Per universe: validation RankIC at the end of training (left, the score that chooses the budget; dotted:
at the selected epoch), test RankIC of the selected epoch (middle, never used to choose) and the compute each run cost (right, seconds of one run on this machine's CPU, from
its `run.json`, interrupted attempts included), against the training windows each run saw. Lines: mean over
seeds ± one standard error; dots: single seeds. Below each chart, every point of the grid with its seeds,
passes over the training days, mean ± SE and compute; `not run yet` where no seed has finished."""),
    code('''for u in ctx.universes:
    s, r = summary[summary["universe"] == u], runs[runs["universe"] == u]
    display(Markdown(f"### {ctx.label(u)}"),
            plots.budget_curves(r, s, title=f"{ctx.label(u)}: RankIC against training windows seen", order=ctx.models)
            if len(s) else Markdown(f"No budget run has finished on {ctx.label(u)}: not run yet."),
            nb.budget_table(summary, u, ctx.models))'''),
    md("""
## Chosen budgets

The profile rule applied to the curves above, per universe and model, with a generated reading. A model
whose curve is still rising at the largest budget run is **inconclusive** at this profile: its verdict
elsewhere in the book must say so. The chosen budgets become the profile's `budgets`
(`storm_lib.budget.profile_budgets`; torch models without a curve of their own get the universe's largest
chosen budget: equal windows seen). A table run of the profile then trains with its budget, and where this
study already ran that training it is a copy of the study's run (`adopted_from` in its `run.json`)."""),
    code('''for u in ctx.universes:
    display(Markdown(f"### {ctx.label(u)}"), nb.budget_choice_table(choice, u, ctx.models),
            Markdown(nb.budget_text(choice, u, ctx.label(u), ctx.models, timings, ctx.profile)))'''),
    md("""
## The RL agents of Table 3

An agent that never leaves its first position is Buy&Hold (or cash) under another name, so Table 3's agents
get the same study in environment steps per stock (`storm_lib.budget.AGENT_BUDGETS`): PPO and the
STORM-PPO methods at 1x / 4x / 16x the `cpu` profile's 51,200 steps, DQN and SAC at 1x / 4x (50,000 and
20,000 steps), each run with ten validation checkpoints, two seeds, the five stocks. The rule is the one
above with the **validation Sharpe ratio** (mean over the five stocks) in place of RankIC; beside it, each
point's trading on the test span: trades per stock and the stock runs that only hold or are never long.
Run with `python -m storm_lib.budget agents-run`; the STORM-PPO points use the STORM fit of the profile's
chosen budget, so they run after it is chosen. The 1x points of DQN, SAC and PPO are Table 3's runs of seeds
0 and 1 (the same training, copied); `python -m storm_lib.budget agents-apply` writes the chosen steps of the
agents whose curves are complete into the profile, and Table 3's runs of those seeds are then copies of the
study's runs at that budget."""),
    code('''agents = budget.summarise_agents(budget.load_agents(ctx.params.get("results_dir"), protocol=ctx.protocol,
                                                  profile=ctx.profile))
agent_choice = budget.choose(agents, grid=budget.agent_grid()) if len(agents) else None
nb.agent_budget_table(agents, agent_choice)'''),
    *profile_cells(False),
    md(FOOTER_MD),
    code("nb.footer(ctx)", "remove-input"),
])

out = ROOT / "notebooks"
out.mkdir(exist_ok=True)
for name, book in [("table2_portfolio", table2), ("table3_trading", table3), ("table4_rankic", table4),
                   ("ablation", ablation), ("fig3_codebook", fig3), ("audit", audit_nb),
                   ("budget", budget_nb)]:
    for i, cell in enumerate(book.cells):   # stable cell ids: regenerating gives the same files
        cell.id = f"{name.replace('_', '-')}-{i:02d}"
    nbformat.validate(book)
    nbformat.write(book, out / f"{name}.ipynb")
    print(out / f"{name}.ipynb")

"""What the book shows, by page concern; the notebooks (``notebooks/*.ipynb``) are short scripts over it.

Every notebook reads::

    import storm_lib.presentation as nb
    ctx = nb.setup("table2_portfolio", universes=universes, models=models, seeds=seeds, ...)  # stops without data
    plan = ctx.ensure(ctx.specs("portfolio"))     # cached runs are read, missing ones run (run_missing=True)
    m = ctx.metrics(plan)                         # every metrics.csv row + spec columns + paper row label
    nb.comparison(m, "portfolio", "dj30", convention="paper")   # ours vs the paper
    nb.footer(ctx)                                # versions, hardware, wall time, data hashes, runs, command

Modules (one concern each): :mod:`.context` parameters, data requirements and runs; :mod:`.paper` the
paper's numbers, comparison cells and Improvement(%); :mod:`.tables` notebook tables; :mod:`.verdict`
the claim-by-claim verdict; :mod:`.uncertainty` intervals and paired tests; :mod:`.codebook` Figure 3;
:mod:`.ablation`; :mod:`.budget` the training-budget study; :mod:`.audit` the protocol audit; :mod:`.footer`
provenance; :mod:`.compute` the compute record; :mod:`.fmt` number formatting. ``python -m storm_lib.report`` writes the book's includes.
"""

from .ablation import WO_TS_VARIANTS, ablation_frame, ablation_table, ablation_text, wo_ts_variants
from .audit import (AUDIT_METRICS, WATERFALL_METRICS, audit_frame, audit_means, audit_paper_lines, audit_specs,
                    audit_steps, audit_styled, audit_summary, audit_text, audit_waterfall, missing_text, paper_values,
                    switch_table)
from .budget import (agent_budget_table, budget_choice_table, budget_extensions_text, budget_frame,
                     budget_missing_text, budget_plan, budget_specs, budget_table, budget_text)
from .codebook import (PAPER_FIG3B, USAGE_METRICS, codebook_size_of, codebook_specs, codebook_stats, codebook_sweep,
                       codes, score_anatomy, usage_table)
from .context import (CODEBOOK_SIZES, GET_DATA, IC_METRICS, PORTFOLIO_METRICS, PORTFOLIO_MODELS, RANKIC_MODELS,
                      STORM_MODELS, TRADING_SAMPLE_NOTE, TRADING_STOCKS, Context, MissingData, NotebookStop,
                      RunContext, RunsFailed, as_bool, as_ints, as_list, data_hashes, ensure_runs, is_all,
                      load_metrics, require_data, select, setup)
from .fmt import TABLE_CSS, markdown_table
from .context import FLOOR_MODELS, REPO_ROOT, shown_path
from .footer import footer, footer_info, rerun_command
from .paper import model_label
from .tables import (comparison, daily, equity, improvement_table, profile_table, summary_table, trading_activity,
                     trading_config, training_time)
from .uncertainty import (CI_METRICS, COSTS_BPS, NOT_BASELINES, best_baseline, ci_frame, ci_table, cost_curves,
                          paired_tests, paired_text, uncertainty)

__all__ = [name for name in dir() if not name.startswith("_")]

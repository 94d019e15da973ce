"""Figures of the replication notebooks (matplotlib, object-oriented: no pyplot state).

Every function returns a :class:`matplotlib.figure.Figure`; in a notebook the returned figure is shown
once (IPython's inline formatter). Inputs are the frames of :mod:`storm_lib.presentation`:

* :func:`wealth`, :func:`drawdown`: daily returns, index date, columns model or (model, seed); several
  seeds are drawn as the mean of their wealth curves. The reference row (``Market Index``) is dashed black.
* :func:`rolling_rankic`: daily RankIC, same layout; the seeds' daily values are averaged, then rolled.
* :func:`code_usage`: a ``codes`` table (branch, code, count), usage sorted by frequency per branch.
* :func:`codebook_curve`: :func:`storm_lib.presentation.codebook_sweep` against the codebook size, the paper's
  Figure 3b beside it.
* :func:`equity_curves`: trading equity (method, seed, stock, date, equity), one panel per stock.
* :func:`budget_curves`: the training-budget study (:mod:`storm_lib.budget`) against windows seen.
"""

from __future__ import annotations

import io
import math

import matplotlib.dates as mdates
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

REFERENCE = ("Market Index", "Buy&Hold", "Market (EW, total return)")
STORM_STYLE = {"STORM": dict(color="#c0392b", lw=2.2), "STORM-w/o-TS": dict(color="#e67e22", lw=1.4, ls="-."),
               "STORM-w/o-CS": dict(color="#8e44ad", lw=1.4, ls="-.")}
_CYCLE = ["#1f77b4", "#2ca02c", "#17becf", "#7f7f7f", "#bcbd22", "#8c564b", "#e377c2", "#393b79", "#006d77"]


def _style(label: str, i: int) -> dict:
    """Line style of a row: reference rows black and on top of everything (a model line that coincides
    with Buy&Hold, e.g. an agent that stays invested, must not hide it), floors thin grey dotted."""
    if label == "Market (EW, total return)":
        return dict(color="black", lw=1.8, ls=":", zorder=6)
    if label in REFERENCE:
        return dict(color="black", lw=1.8, ls="--", zorder=6)
    if str(label).startswith("Floor: "):
        return dict(color="#999999", lw=0.9, ls=":", zorder=1)
    if label in STORM_STYLE:
        return dict(STORM_STYLE[label])
    return dict(color=_CYCLE[i % len(_CYCLE)], lw=1.0, alpha=0.9)


class NotebookFigure(Figure):
    """A Figure that shows itself as a PNG in IPython without pyplot (one output, no global state)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100)
        return buf.getvalue()


def _figure(n: int = 1, ncols: int | None = None, width: float = 9.0, height: float = 4.0, sharex=False):
    ncols = ncols or n
    nrows = math.ceil(n / ncols)
    fig = NotebookFigure(figsize=(width, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _by_model(frame: pd.DataFrame, transform) -> pd.DataFrame:
    """Apply ``transform`` (Series -> Series) to each column, then average over the ``seed`` level."""
    if frame.empty:
        return frame
    out = frame.apply(transform)
    if isinstance(out.columns, pd.MultiIndex):
        out = out.T.groupby(level=0, sort=False).mean().T
    return out


def wealth_curves(returns: pd.DataFrame) -> pd.DataFrame:
    """Cumulative wealth (start 1) per model, the mean over seeds of each seed's wealth curve."""
    return _by_model(returns, lambda r: (1.0 + r.fillna(0.0)).cumprod())


def drawdowns(returns: pd.DataFrame) -> pd.DataFrame:
    """Drawdown (≤ 0) of each model's mean wealth curve, measured from an initial wealth of 1."""
    w = wealth_curves(returns)
    peak = np.maximum(w.cummax(), 1.0)
    return w / peak - 1.0


def _dates(ax) -> None:
    loc = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def _lines(ax, frame: pd.DataFrame, order=None):
    cols = [c for c in (order or []) if c in frame.columns] + [c for c in frame.columns if c not in (order or [])]
    others = 0
    for c in cols:
        st = _style(c, others)
        if c not in REFERENCE and c not in STORM_STYLE and not str(c).startswith("Floor: "):
            others += 1
        ax.plot(frame.index, frame[c], label=c, **st)
    if isinstance(frame.index, pd.DatetimeIndex):
        _dates(ax)


def _legend(fig, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=8, frameon=False)


def _empty(ax, text="no finished runs"):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888888")


def wealth(returns: pd.DataFrame, title: str = "", order=None) -> Figure:
    """Cumulative wealth of each model's portfolio against the market index (dashed black)."""
    fig, (ax,) = _figure(1, height=4.5)
    w = wealth_curves(returns)
    if w.empty:
        _empty(ax)
    else:
        _lines(ax, w, order)
        ax.axhline(1.0, color="#cccccc", lw=0.8, zorder=0)
        _legend(fig, ax)
    ax.set_ylabel("wealth (start = 1)")
    ax.set_title(title or "Cumulative wealth, TopK-Drop portfolios vs market index")
    ax.grid(alpha=0.3)
    return fig


def drawdown(returns: pd.DataFrame, title: str = "", order=None) -> Figure:
    """Drawdown of each model's wealth curve (0 at a new high)."""
    fig, (ax,) = _figure(1, height=3.5)
    d = drawdowns(returns)
    if d.empty:
        _empty(ax)
    else:
        _lines(ax, d, order)
        _legend(fig, ax)
    ax.set_ylabel("drawdown")
    ax.set_title(title or "Drawdown")
    ax.grid(alpha=0.3)
    return fig


def rolling_rankic(ic: pd.DataFrame, window: int = 63, title: str = "", order=None) -> Figure:
    """Rolling mean (``window`` trading days) of the daily cross-sectional RankIC of each model."""
    fig, (ax,) = _figure(1, height=4.0)
    daily = _by_model(ic, lambda s: s)
    if daily.empty:
        _empty(ax)
    else:
        roll = daily.rolling(window, min_periods=max(5, window // 3)).mean()
        _lines(ax, roll, order)
        ax.axhline(0.0, color="black", lw=0.8)
        _legend(fig, ax)
    ax.set_ylabel(f"RankIC, {window}-day rolling mean")
    ax.set_title(title or "Daily RankIC over the test period")
    ax.grid(alpha=0.3)
    return fig


def code_usage(codes: pd.DataFrame, title: str = "") -> Figure:
    """Codebook usage: share of the test windows' tokens per code, codes sorted by frequency, one panel
    per branch (TS, CS), with the share of codes used and the perplexity of the usage distribution."""
    branches = [b for b in ("ts", "cs") if b in set(codes.get("branch", []))]
    fig, axes = _figure(max(len(branches), 1), height=3.6, width=10)
    if not branches:
        _empty(axes[0], "no codebook usage table")
        return fig
    for ax, b in zip(axes, branches):
        c = codes.loc[codes["branch"] == b, "count"].to_numpy(dtype=float)
        total = c.sum()
        share = np.sort(c)[::-1] / total * 100 if total > 0 else np.zeros_like(c)
        ax.bar(np.arange(len(share)), share, width=1.0, color="#1f77b4" if b == "ts" else "#c0392b")
        p = c[c > 0] / total if total > 0 else np.array([])
        ppl = float(np.exp(-(p * np.log(p)).sum())) if p.size else float("nan")
        ax.set_title(f"{b.upper()} codebook: {int((c > 0).sum())}/{len(c)} codes used, perplexity {ppl:.0f}")
        ax.set_xlabel("code rank (most used first)")
        ax.set_ylabel("usage (% of tokens)")
        ax.axhline(100.0 / len(c), color="black", lw=0.8, ls="--", label="uniform")
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title)
    return fig


def codebook_curve(sweep: pd.DataFrame, title: str = "") -> Figure:
    """RankIC and RankICIR against the codebook size (log2 axis): ours (mean ± std over seeds) and the
    paper's Figure 3b (read by eye)."""
    fig, axes = _figure(2, height=3.6, width=10)
    for ax, metric in zip(axes, ("RankIC", "RankICIR")):
        if sweep.empty:
            _empty(ax)
        else:
            k = sweep.index.to_numpy(dtype=float)
            err = sweep[f"{metric}_std"].fillna(0.0).to_numpy()
            ax.errorbar(k, sweep[metric], yerr=err, marker="o", color="#c0392b", capsize=3, label="ours")
            paper = sweep[f"paper_{metric}"]
            if paper.notna().any():
                ax.plot(k, paper, marker="s", ls="--", color="#555555", label="paper Fig. 3b (read by eye)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(k, [str(int(x)) for x in k])
            ax.legend(fontsize=8, frameon=False)
        ax.set_xlabel("codebook size K")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def equity_curves(eq: pd.DataFrame, stocks=None, title: str = "", order=None, ncols: int = 2) -> Figure:
    """Trading equity (start = 1) of every method per stock; seeds averaged; Buy&Hold dashed black."""
    stocks = list(stocks) if stocks is not None else list(dict.fromkeys(eq["stock"]))
    fig, axes = _figure(max(len(stocks), 1), ncols=min(ncols, max(len(stocks), 1)), height=3.4, width=11)
    if eq.empty or not stocks:
        _empty(axes[0])
        return fig
    for ax, stock in zip(axes, stocks):
        e = eq[eq["stock"] == stock]
        if e.empty:
            _empty(ax)
            ax.set_title(stock)
            continue
        e = e.assign(norm=e["equity"] / e.groupby(["method", "seed"])["equity"].transform("first"))
        w = e.pivot_table(index="date", columns="method", values="norm", aggfunc="mean", sort=False)
        _lines(ax, w, order)
        ax.axhline(1.0, color="#cccccc", lw=0.8, zorder=0)
        ax.set_title(stock)
        ax.set_ylabel("equity (start = 1)")
        ax.grid(alpha=0.3)
    _legend(fig, axes[0])
    if title:
        fig.suptitle(title)
    return fig


def waterfall(steps: dict, paper: dict | None = None, title: str = "", ncols: int = 3) -> Figure:
    """Waterfall charts of the audit's cumulative steps, one panel per metric.

    ``steps``: metric -> Series of seed-mean values, index the steps in order (``clean`` first, then the
    cumulative steps ``+name``; :func:`storm_lib.presentation.audit_means`). The first and last bars are
    levels (grey), the bars between float from the previous level to the next (green up, red down).
    ``paper``: metric -> a published value or a list of (label, value, ± range) lines, drawn dashed with a
    shaded range."""
    metrics = list(steps)
    fig, axes = _figure(max(len(metrics), 1), ncols=min(ncols, max(len(metrics), 1)), width=12, height=4.0)
    if not metrics:
        _empty(axes[0])
        return fig
    for ax, metric in zip(axes, metrics):
        s = pd.Series(steps[metric], dtype=float).dropna()
        if s.empty:
            _empty(ax)
            ax.set_title(metric)
            continue
        labels = list(s.index) + (["all on"] if len(s) > 1 else [])
        x = np.arange(len(labels))
        prev = s.to_numpy()[:-1]
        cur = s.to_numpy()[1:]
        ax.bar(x[0], s.iloc[0], color="#7f7f7f", width=0.6)
        if len(s) > 1:
            diff = cur - prev
            ax.bar(x[1:-1], diff, bottom=prev, width=0.6, color=np.where(diff >= 0, "#2ca02c", "#c0392b"))
            ax.bar(x[-1], s.iloc[-1], color="#555555", width=0.6)
            for i in range(len(s) - 1):
                ax.plot([x[i] - 0.3, x[i + 1] + 0.3], [s.iloc[i], s.iloc[i]], color="#999999", lw=0.6)
        lines = (paper or {}).get(metric)
        if lines is not None:
            if not isinstance(lines, (list, tuple)) or (lines and not isinstance(lines[0], (list, tuple))):
                lines = [("paper", lines, float("nan"))] if not isinstance(lines, (list, tuple)) else [lines]
            for i, (name, value, pm) in enumerate(lines):
                color = "#c0392b" if i == 0 else "#1f77b4"
                ax.axhline(value, color=color, ls="--", lw=1.2, label=f"{name} {value:.3f}")
                if pm == pm and pm:
                    ax.axhspan(value - pm, value + pm, color=color, alpha=0.08)
            ax.legend(fontsize=7, frameon=False, loc="best")
        ax.axhline(0.0, color="black", lw=0.6)
        # every level and published range in view (autoscaling clipped the tallest floating bar)
        ends = list(s.to_numpy()) + [0.0] + [v + k * (pm if pm == pm else 0.0)
                                            for _, v, pm in (lines or []) for k in (-1, 1)]
        lo, hi = min(ends), max(ends)
        pad = 0.08 * (hi - lo or 1.0)
        ax.set_ylim(lo - (pad if lo < 0 else 0.0), hi + pad)
        ax.set_xticks(x, labels, rotation=40, ha="right", fontsize=7)
        ax.set_title(metric)
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title)
    return fig


def cost_curves(curves: pd.DataFrame, metrics=("APY", "ASR"), title: str = "", order=None) -> Figure:
    """TopK-Drop metrics against the transaction cost (basis points of turnover), one panel per metric,
    one line per model. ``curves``: long (model, cost_bps, metric columns), e.g.
    :func:`storm_lib.presentation.cost_curves`. The runs' own cost (1 bp) is marked."""
    fig, axes = _figure(len(metrics), width=11, height=3.8)
    if curves.empty:
        _empty(axes[0])
        return fig
    for ax, metric in zip(axes, metrics):
        wide = curves.pivot_table(index="cost_bps", columns="model", values=metric, sort=False)
        _lines(ax, wide, order)
        for line in ax.lines:
            line.set_marker("o")
            line.set_markersize(3)
        ax.axvline(1.0, color="#888888", lw=0.8, ls=":")
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xlabel("cost (bp of turnover)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    _legend(fig, axes[0])
    if title:
        fig.suptitle(title)
    return fig


def budget_curves(runs: pd.DataFrame, summary: pd.DataFrame, title: str = "", order=None) -> Figure:
    """The training-budget study of one universe (:mod:`storm_lib.budget`): validation RankIC at the end of
    training (the curve the rule reads; dotted: at the selected epoch, biased upward by the selection),
    test RankIC of the selected epoch and compute per run against the training windows seen (log axis).
    Lines: the mean over seeds per model with ± one standard error; dots: the seeds."""
    from .presentation.paper import model_label

    fig, axes = _figure(3, height=3.8, width=13)
    panels = (("val_final", "val_mean", "val_se", "validation RankIC, end of training"),
              ("test_RankIC", "test_mean", "test_se", "test RankIC (never selects)"),
              ("compute_seconds", "compute_mean_s", None, "compute per run (s)"))
    models = [m for m in (order or []) if m in set(summary["model"])]
    models += [m for m in dict.fromkeys(summary["model"]) if m not in models]
    for ax, (col, mean, se, label) in zip(axes, panels):
        if summary.empty:
            _empty(ax, "not run yet")
        others = 0
        for m in models:
            name = model_label(m)
            st = _style(name, others)
            if name not in STORM_STYLE:
                others += 1
            s = summary[summary["model"] == m].sort_values("budget")
            x = s["windows_seen"].fillna(s["budget"]).to_numpy(dtype=float)
            err = s[se].fillna(0.0).to_numpy() if se else None
            ax.errorbar(x, s[mean], yerr=err, marker="o", ms=4, capsize=3, label=name,
                        **{k: v for k, v in st.items() if k in ("color", "ls", "lw")})
            if col == "val_final" and "val_best_mean" in s:   # the selected epoch's, for comparison
                ax.plot(x, s["val_best_mean"], ls=":", lw=1, color=st.get("color"))
            r = runs[runs["model"] == m]
            ax.scatter(r["windows_seen"].fillna(r["budget"]), r[col], s=10, alpha=0.5, color=st.get("color"))
        ax.set_xscale("log")
        ticks = sorted(set(summary["budget"].astype(int)))
        if ticks:  # the grid's budgets as plain labels (1k, 4k, ...), not powers of ten
            ax.set_xticks(ticks, [f"{t / 1000:g}k" if t >= 1000 else str(t) for t in ticks])
            ax.xaxis.set_minor_locator(mticker.NullLocator())
        ax.set_xlabel("training windows seen")
        ax.set_ylabel(label)
        if col == "compute_seconds":
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(mticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(mticker.FuncFormatter(
                lambda v, _: f"{v:.0f} s" if v < 120 else f"{v / 60:.0f} min" if v < 7200 else f"{v / 3600:.1f} h"))
            ax.yaxis.set_minor_formatter(mticker.NullFormatter())
        else:
            ax.axhline(0.0, color="#999999", lw=0.8)
        ax.grid(alpha=0.3)
    if models:
        _legend(fig, axes[0])
    if title:
        fig.suptitle(title)
    return fig

"""Number and table formatting shared by every page: signed numbers with a true minus, intervals,
percentages, durations, pipe tables for MyST, the compact table CSS of the notebooks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..schedule import fmt_duration as _fmt_duration  # noqa: F401  (re-exported for the pages)

_MINUS = "\u2212"


def _num(x: float, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if round(x, digits) == 0:
        x = 0.0  # no "−0.000"
    s = f"{x:+.{digits}f}" if signed and x != 0 else f"{x:.{digits}f}"
    return s.replace("-", _MINUS)




def _fmt(x: float, digits: int = 3) -> str:
    return _num(x, digits)


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def markdown_table(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub/MyST pipe table (no tabulate dependency); cells are written as they are."""
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(_md_escape(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = ([str(idx)] if index else []) + ["" if pd.isna(v) else str(v) for v in row]
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"




def _fmt_pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x:+.1f} %".replace("-", _MINUS)



def _fmt_interval(lo: float, hi: float) -> str:
    return "–" if not (np.isfinite(lo) and np.isfinite(hi)) else f"[{_num(lo, 3, True)}, {_num(hi, 3, True)}]"







#: compact comparison tables in notebooks and the book (six stacked-cell columns on one screen)
TABLE_CSS = [{"selector": "", "props": [("font-size", "0.75rem")]},
             {"selector": "td, th", "props": [("padding", "0.15rem 0.3rem")]},
             {"selector": "caption", "props": [("caption-side", "top"), ("text-align", "left")]}]



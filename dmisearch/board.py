"""The terminal leaderboard: a table that fits the terminal, its JSON form, and the failures.

:func:`render` draws a leaderboard (:meth:`dmisearch.analysis.Results.leaderboard`) with rich:
only the hyperparameters wrap (at spaces), less important columns are left out where the
terminal (``COLUMNS``, else 120 when not a terminal) is narrow, every score of a column
has the same decimals (three significant digits for the column's largest magnitude), the
curve shows its first and last point, and hyperparameters go by short names.
:func:`records` is the same board as JSON records (full names, full precision).
:func:`failures` counts a study's failed trials by kind (the exception's type) with the
first message and trial of each.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

#: Significant digits shown for the largest magnitude of a column.
SIGNIFICANT = 3
#: Short names for the built-ins' common hyperparameters (others keep their own name).
SHORT = {"batch_size": "bs", "weight_decay": "wd", "filter_size": "k", "width": "w",
         "depth": "d", "momentum": "mom", "activation": "act", "padding": "pad",
         "parameterization": "param", "epochs": "ep", "center": "ctr"}
#: Width when the output is not a terminal and ``COLUMNS`` is unset.
PIPE_WIDTH = 120


def missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def decimals(values: Iterable[Any]) -> int:
    """Decimals that give the largest finite magnitude :data:`SIGNIFICANT` digits."""
    finite = [abs(float(v)) for v in values if not missing(v) and math.isfinite(float(v))]
    top = max(finite, default=0.0)
    if top == 0:
        return SIGNIFICANT - 1
    return max(0, SIGNIFICANT - 1 - math.floor(math.log10(top)))


def fixed(v: Any, places: int) -> str:
    return "-" if missing(v) else f"{float(v):.{places}f}"


def short_value(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    return f"{v:.2g}"


def short_params(params: dict[str, Any]) -> str:
    """``lr=0.0075 bs=64 wd=0``: each parameter's last name part, shortened."""
    out = []
    for key, v in params.items():
        name = key.split(".")[-1]
        out.append(f"{SHORT.get(name, name)}={short_value(v)}")
    return " ".join(out) or "-"


def curve_ends(curve: dict[int, float]) -> str:
    """The curve's first and last point's error: ``1.29→0.0044``."""
    if not curve:
        return "-"
    points = list(curve.values())
    return f"{points[0]:.3g}→{points[-1]:.3g}"


def curve_header(df: pd.DataFrame) -> str:
    """``test error n=16→256`` from the sizes the rows' curves share (else the widest)."""
    sizes = max((list(c) for c in df["curve"] if c), key=len, default=[])
    return f"test error n={sizes[0]}→{sizes[-1]}" if sizes else "test error"


def interval(lo: Any, hi: Any, note: Any, places: int) -> str:
    if missing(lo) or missing(hi):
        return str(note) if note and not missing(note) else "-"
    return f"[{lo:.{places}f}, {hi:.{places}f}]"


def columns(df: pd.DataFrame, objective: str) -> dict[str, list[str]]:
    """The board's columns as text, most important first (the hyperparameters last)."""
    places = decimals(list(df["score"]) + list(df.get("confirmed_score", [])))
    cols: dict[str, list[str]] = {
        "#": ["-" if missing(r) else str(int(r)) for r in df["rank"]],
        "triplet": [f"{d} | {m} | {a}" for d, m, a in
                    zip(df["data"], df["model"], df["algorithm"], strict=True)],
        objective: [fixed(v, places) for v in df["score"]],
        "95% CI": [interval(lo, hi, n, places) if not missing(s) else "-" for lo, hi, n, s
                   in zip(df["ci_low"], df["ci_high"], df["ci_note"], df["score"],
                          strict=True)],
    }
    if df["confirmed_trial"].notna().any():
        cols["confirmed"] = [fixed(v, places) for v in df["confirmed_score"]]
        cols["confirmed 95% CI"] = [
            interval(lo, hi, n, places) if not missing(s) else "-" for lo, hi, n, s in zip(
                df["confirmed_low"], df["confirmed_high"], df["confirmed_note"],
                df["confirmed_score"], strict=True)]
    cols[curve_header(df)] = [curve_ends(c) for c in df["curve"]]
    cols["done/pruned/failed"] = [f"{c}/{p}/{f}" for c, p, f in
                                  zip(df["complete"], df["pruned"], df["failed"], strict=True)]
    cols["beats next"] = ["-" if missing(p) else f"{'yes' if b else 'no'} p={p:.2g}"
                          for p, b in zip(df["p_vs_next"], df["beats_next"], strict=True)]
    cols["trial"] = ["-" if missing(t) else str(int(t)) for t in df["trial"]]
    cols["hyperparameters"] = [short_params(p) for p in df["params"]]
    return cols


#: Columns left out, in this order (then the curve), until the rest fits the width.
DROPPABLE = ("trial", "beats next", "done/pruned/failed", "confirmed 95% CI", "95% CI")
#: The least width the hyperparameters column keeps before columns are left out.
MIN_PARAMS_WIDTH = 24
GAP = 1  # rich's padding between columns


def fit(cols: dict[str, list[str]], width: int) -> dict[str, list[str]]:
    """Leave out :data:`DROPPABLE` columns until the others, unwrapped, leave the
    hyperparameters at least :data:`MIN_PARAMS_WIDTH` characters."""
    cols = dict(cols)

    def need() -> int:
        fixed_cols = [k for k in cols if k != "hyperparameters"]
        return sum(max(len(k), *(len(v) for v in cols[k])) + 2 * GAP for k in fixed_cols)

    curve = [k for k in cols if k.startswith("test error")]
    for name in (*DROPPABLE, *curve):
        if need() + MIN_PARAMS_WIDTH <= width:
            break
        cols.pop(name, None)
    return cols


def terminal_width() -> int:
    return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns


def render(df: pd.DataFrame, objective: str, width: int | None = None) -> str:
    """The board as text no wider than ``width`` (default: the terminal's); only the
    hyperparameters wrap, and less important columns are left out where it is narrow."""
    if df.empty:
        return "no complete trials yet"
    from rich.console import Console
    from rich.table import Table

    width = width or terminal_width()
    cols = fit(columns(df, objective), width)
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False,
                  padding=(0, GAP))
    for name in cols:
        numeric = name in ("#", objective, "confirmed", "trial")
        wraps = name == "hyperparameters"
        table.add_column(name, justify="right" if numeric else "left", no_wrap=not wraps,
                         overflow="fold" if wraps else "ellipsis")
    for row in zip(*cols.values(), strict=True):
        table.add_row(*row)
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=False,
            soft_wrap=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The board as JSON-ready records: every leaderboard column, missing values as None."""
    out = []
    for row in df.to_dict(orient="records"):
        rec = {}
        for k, v in row.items():
            if isinstance(v, dict):
                v = {str(key): val for key, val in v.items()}
            rec[k] = None if not isinstance(v, (dict, list, tuple)) and missing(v) else v
        out.append(rec)
    return out


def failures(trials: Sequence[Any]) -> list[dict[str, Any]]:
    """Failed trials by kind (the error's type), most frequent first: count, the first
    trial and its message. Repeats dropped unrun (``duplicate_of``) are not failures."""
    from dmisearch.trialinfo import is_duplicate

    kinds: dict[str, dict[str, Any]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.state.name != "FAIL" or is_duplicate(t):  # a dropped repeat trained nothing
            continue
        error = str(t.user_attrs.get("error", "unknown error"))
        kind = error.split(":", 1)[0] if ":" in error else error
        entry = kinds.setdefault(kind, {"kind": kind, "count": 0, "first_trial": t.number,
                                        "message": error})
        entry["count"] += 1
    return sorted(kinds.values(), key=lambda e: (-e["count"], e["first_trial"]))


def format_failures(found: Sequence[dict[str, Any]]) -> str:
    """``failed trials: 3 RuntimeError (first: trial 4, RuntimeError: ...)``, one per line."""
    if not found:
        return ""
    total = sum(f["count"] for f in found)
    lines = [f"{total} failed trial{'s' if total != 1 else ''}, by kind "
             "(`dmisearch rerun --trial N` shows the traceback):"]
    for f in found:
        lines.append(f"  {f['count']} x {f['kind']}: first trial {f['first_trial']}: "
                     f"{f['message'][:200]}")
    return "\n".join(lines)

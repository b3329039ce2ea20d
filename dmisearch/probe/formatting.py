"""The probe's text output: a table of cells (:func:`format_table`, :data:`LEGEND`), one
cell with every number behind its verdict (:func:`format_cell`), and the findings of
``--verify`` (:func:`format_findings`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dmisearch.probe.statistics import (
    EQUIVARIANT,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    NOT_EQUIVARIANT,
    Cell,
)
from dmisearch.probe.verification import Finding

SHORT = {EQUIVARIANT: "EQ", NOT_EQUIVARIANT: "NO", INCONCLUSIVE: "?", NOT_APPLICABLE: "-"}


def short(cell: Cell) -> str:
    """A table entry: ``EQ* 3e-15`` (verdict, declared mark, the number behind it)."""
    mark = ""
    if cell.declared:
        mark = "*" if cell.verdict == EQUIVARIANT else "!"
    if cell.verdict == NOT_APPLICABLE:
        return "-"
    nums = []
    if cell.diverged:
        nums.append("diverged")
    elif cell.gap is not None:
        nums.append(f"gap {cell.gap:.0e}")
    if cell.p_value is not None:
        nums.append(f"p {_p(cell.p_value)}")
    w = cell.witness or {}
    if w.get("p_value") is not None:
        nums.append(f"w {_p(w['p_value'])}")
    return " ".join([f"{SHORT[cell.verdict]}{mark}", *nums])


def _p(p: float) -> str:
    return f"{p:.0e}" if p < 0.01 else f"{p:.2f}"


def format_table(cells: Sequence[Cell]) -> str:
    """Rows (model / algorithm) by columns (transforms)."""
    groups = list(dict.fromkeys(c.group for c in cells))
    rows: dict[str, dict[str, Cell]] = {}
    for c in cells:
        rows.setdefault(f"{c.model} / {c.algorithm}", {})[c.group] = c
    first = max([len("model / algorithm"), *(len(r) for r in rows)])
    entries = {(r, g): short(c) for r, row in rows.items() for g, c in row.items()}
    width = {g: max([len(g), *(len(entries.get((r, g), "")) for r in rows)]) for g in groups}
    lines = ["  ".join([f"{'model / algorithm':<{first}}", *(f"{g:<{width[g]}}"
                                                               for g in groups)]).rstrip()]
    for r in rows:
        lines.append("  ".join([f"{r:<{first}}", *(f"{entries.get((r, g), ''):<{width[g]}}"
                                                    for g in groups)]).rstrip())
    return "\n".join(lines)


LEGEND = """\
EQ equivariant, NO not equivariant, ? inconclusive, - not applicable (n/a: see --json);
* declared by the components and confirmed, ! declared but not confirmed (see --verify).
gap: largest per-seed relative gap of an exact comparison (coupled runs, or a deterministic
algorithm); p: p-value of the permutation test over seeds (run where no exact comparison
holds); w: p-value of the same test on witness data, run where p did not reject (each at
alpha/2 then; the witness is named in the cell's output and in --json)."""


def format_cell(cell: Cell) -> str:
    """Several lines: the verdict and every number behind it."""
    lines = [f"{cell.model} / {cell.algorithm} under {cell.group} on {cell.data}"]
    if cell.verdict == NOT_APPLICABLE:
        lines.append(f"  verdict: n/a ({cell.reason})")
        return "\n".join(lines)
    coupling = {"identity": "identity (invariant architecture)", "map": "coupled network",
                None: "none"}[cell.coupling]
    lines.append(f"  declared equivariant: {'yes' if cell.declared else 'no'}; "
                 f"coupling: {coupling}")
    lines.append(f"  method: {cell.method}, {cell.seeds} seeds")
    if cell.gaps:
        finite = [g for g in cell.gaps if not math.isnan(g)]
        med = float(np.median(finite)) if finite else math.nan
        lines.append(f"  per-seed relative gap: max {cell.gap:.2e}, median {med:.2e} "
                     f"(tolerance {cell.tolerance:.0e})")
    if cell.p_value is not None:
        lines.append(f"  energy test on D (fresh seeds on g.D): p = {cell.p_value:.3g}, energy "
                     f"distance {cell.energy:.3g}, mean-prediction gap {cell.mean_gap:.3g} "
                     f"({_level(cell.level, cell.alpha, 'the witness test')})")
    if cell.witness:
        lines += _witness_lines(cell.witness, cell.alpha)
    if cell.error and cell.error_g:
        lines.append(f"  test error: on D {cell.error[0]:.4g} +- {cell.error[1]:.2g}, "
                     f"on g.D {cell.error_g[0]:.4g} +- {cell.error_g[1]:.2g}")
    lines.append(f"  verdict: {cell.verdict} ({cell.reason}) [{cell.seconds:.1f} s]")
    return "\n".join(lines)


def _level(level: float | None, alpha: float | None, other: str) -> str:
    if level is not None and alpha is not None and level < alpha:
        return f"level {level:g} = alpha/2, the other half for {other}"
    return f"alpha {level if level is not None else alpha:g}"


def _witness_lines(w: Mapping[str, Any], alpha: float | None) -> list[str]:
    """The witness search (``Cell.witness``): the pilot, the choice, and its test."""
    pilot = ", ".join(f"{name} {e['power']:.2f}" if isinstance(e, dict) else f"{name} {e}"
                      for name, e in w["pilot"].items())
    lines = [f"  witness search (the test on D did not reject): pilot of {w['pilot_seeds']} "
             f"seeds per side and candidate; predicted power: {pilot}"]
    if w["witness"] is None:
        return [*lines, f"  witness: none ({w['why']})"]
    lines.append(f"  witness: {w['witness']} ({w['why']}): {w['description']}")
    if w["p_value"] is None:
        return [*lines, "  energy test on the witness: not run (a run diverged)"]
    lines.append(f"  energy test on the witness ({w['seeds']} fresh seeds per side): p = "
                 f"{w['p_value']:.3g}, energy distance {w['energy']:.3g} "
                 f"({_level(w['level'], alpha, 'the test on D')}); predicted power "
                 f"{w['power']:.2f}, smallest possible p {w['min_p']:.1e}")
    return lines


def format_findings(findings: Sequence[Finding]) -> str:
    """The findings of ``--verify``, one a line, then how many of each status."""
    tags = {"ok": "ok", "false": "FALSE", "unconfirmed": "unconfirmed", "skipped": "skipped"}
    lines = [f"{tags[f.status]:<11} {f.subject} under {f.group}: {f.detail}" for f in findings]
    n_false = sum(f.status == "false" for f in findings)
    counts = {s: sum(f.status == s for f in findings) for s in tags}
    lines.append(f"\n{counts['ok']} confirmed, {n_false} false, {counts['unconfirmed']} "
                 f"unconfirmed, {counts['skipped']} skipped")
    return "\n".join(lines)

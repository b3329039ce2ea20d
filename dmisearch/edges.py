"""Best configurations at the edge of their search range: a better value may lie beyond it.

When the best trial of a triplet took a numeric hyperparameter at an end of its range (the
low or high bound, or within :data:`EDGE_SHARE` of the range from it, on the log scale
where the range is log), the range, not the data, may have decided the triplet's score and
so its rank: a ridge at the lower bound may want a smaller one, a learning rate at the top
a larger one. ``dmisearch run`` says so under its board, with the study-file line that
widens the range; :func:`board_edges` gives them for any leaderboard.

Only numeric ranges count (choices have no beyond), and of integers only ranges of at
least :data:`MIN_INT_VALUES` values: in a short one such as a depth of 1 or 2 every value is
at an end, and saying so says nothing. What is "the range" is what the trial was asked
from (its Optuna distribution), so a range the study file narrowed or widened is judged as
it was searched.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import FloatDistribution, IntDistribution

#: A value within this share of its range from an end (on the log scale for a log range)
#: is at that end: a sampler pushing against a bound proposes values near it, rarely on it
#: (the MNIST-1D study's best ridge was 1.02e-6 in [1e-6, 0.1], 0.2% of the range from it).
EDGE_SHARE = 0.01
#: Integer ranges of fewer values are never at an edge (see the module docstring).
MIN_INT_VALUES = 5


@dataclasses.dataclass(frozen=True)
class Edge:
    """One hyperparameter of a triplet's best trial at an end of its range."""

    model: str
    algorithm: str
    trial: int
    param: str
    value: float
    low: float
    high: float
    log: bool

    @property
    def end(self) -> str:
        return "low" if _position(self.value, self.low, self.high, self.log) < 0.5 else "high"

    def section_and_key(self) -> tuple[str, str]:
        """The study file's ``[search.space...]`` table and key of the parameter."""
        section, _, key = self.param.rpartition(".")
        return f"search.space.{section}" if section else "search.space", key

    def widened(self) -> tuple[float, float]:
        """A suggestion of the range one step further at this end: ten times on a log
        scale (twice for integers), the range's width again on a linear one (not across
        zero from a non-negative range, nor to zero from a positive integer one)."""
        ints = isinstance(self.value, int)
        factor = 2 if ints else 10
        if self.log:
            low, high = ((self.low / factor, self.high) if self.end == "low"
                         else (self.low, self.high * factor))
            return (max(1, int(low)) if ints else low), (int(high) if ints else high)
        width = self.high - self.low
        if self.end == "high":
            return self.low, self.high + width
        low = self.low - width
        floor = 1 if ints and self.low >= 1 else 0  # not across zero (counts: not to zero)
        return (max(low, floor) if self.low >= 0 else low), self.high

    def advice(self) -> str:
        section, key = self.section_and_key()
        low, high = self.widened()
        log = ", log = true" if self.log else ""
        return (f"{self.model}/{self.algorithm}: the best trial ({self.trial}) has "
                f"{key} = {_fmt(self.value)}, at the {self.end} end of its range "
                f"[{_fmt(self.low)}, {_fmt(self.high)}]; a better value may lie beyond. "
                f"To search further, widen it, e.g. [{section}] {key} = "
                f"{{ low = {_fmt(low)}, high = {_fmt(high)}{log} }}")


def _fmt(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _position(value: float, low: float, high: float, log: bool) -> float:
    """Where ``value`` lies in ``[low, high]``, from 0 to 1 (log scale where ``log``)."""
    if log:
        value, low, high = math.log(value), math.log(low), math.log(high)
    return (value - low) / (high - low)


def trial_edges(trial: optuna.trial.FrozenTrial, model: str, algorithm: str) -> list[Edge]:
    """The numeric hyperparameters of ``trial`` at an end of their ranges."""
    out = []
    for name, dist in trial.distributions.items():
        if not isinstance(dist, FloatDistribution | IntDistribution) or name not in trial.params:
            continue
        ints = isinstance(dist, IntDistribution)
        if dist.high <= dist.low or (
                ints and (dist.high - dist.low) // dist.step + 1 < MIN_INT_VALUES):
            continue
        value = trial.params[name]
        pos = _position(value, dist.low, dist.high, dist.log)
        at_edge = value in (dist.low, dist.high) if ints else (
            pos <= EDGE_SHARE or pos >= 1 - EDGE_SHARE)
        if at_edge:
            out.append(Edge(model, algorithm, trial.number, name, value, dist.low, dist.high,
                            dist.log))
    return out


def board_edges(studies: optuna.Study | Sequence[optuna.Study],
                board: pd.DataFrame) -> list[Edge]:
    """The edges of the best trial of every row of ``board`` (a leaderboard of ``studies``:
    rows are matched to their study by its ``study`` column), in the board's order."""
    if isinstance(studies, optuna.Study):
        studies = [studies]
    trials = {(s.study_name, t.number): t for s in studies
              for t in s.get_trials(deepcopy=False)}
    out: list[Edge] = []
    for row in board.itertuples():
        key = (row.study, None if pd.isna(row.trial) else int(row.trial))
        if key in trials:
            out += trial_edges(trials[key], row.model, row.algorithm)
    return out


def format_edges(edges: Sequence[Edge]) -> str:
    """The edges as the lines under a board ("" when none)."""
    if not edges:
        return ""
    return "\n".join(["At the edge of the search range:"] +
                     [f"  {e.advice()}" for e in edges])


def records(edges: Sequence[Edge]) -> list[dict[str, Any]]:
    """The edges as JSON records (the board's ``--json``)."""
    return [{**dataclasses.asdict(e), "end": e.end, "advice": e.advice()} for e in edges]

"""The evidence a study holds for each triplet: its trials, grouped, scored with intervals.

For each (study, triplet) the search trials are reduced to distinct configurations (a
configuration tried twice, e.g. retried after a lost worker, counts once); the triplet is
represented by its best complete configuration, and by that configuration's confirmation
on fresh seeds when the study has one (``[confirm]``). Scores and intervals are recomputed
from the stored per-seed errors (:mod:`dmisearch.stats`).

Why a selected trial's own interval is withheld: when a triplet's best configuration was
picked among several on the same seeds that score it, its score is biased low (the
winner's curse) and an interval computed from those seeds does not cover its true score.
Only the confirmation, on seeds the selection never saw, gets an interval then.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from dmisearch import stats
from dmisearch.metrics import Objective, floor_for
from dmisearch.trialinfo import IDENTITY_ATTR, is_confirmation, is_search, trial_config

Triplet = tuple[str, str, str]  # (data label, model, algorithm)


def curve_matrix(attrs: dict[str, Any]) -> tuple[np.ndarray, list[int], np.ndarray]:
    """(sizes, seeds, errors[size, seed]) of a trial's stored curve; NaN where missing."""
    curve = attrs.get("curve") or {}
    sizes = sorted(set(curve.get("size", [])))
    seeds = sorted(set(curve.get("seed", [])))
    err = np.full((len(sizes), len(seeds)), np.nan)
    si = {n: i for i, n in enumerate(sizes)}
    ri = {s: j for j, s in enumerate(seeds)}
    for n, s, e in zip(curve.get("size", []), curve.get("seed", []),
                       curve.get("test_error", []), strict=False):
        err[si[n], ri[s]] = e
    return np.array(sizes, dtype=float), seeds, err


@dataclasses.dataclass(frozen=True)
class Scorer:
    """Recomputes a study's scores from stored errors (objective, metric, floor)."""

    objective: Objective
    metric: str
    test_size: int

    @classmethod
    def of(cls, study: optuna.Study) -> Scorer:
        ident = study.user_attrs.get(IDENTITY_ATTR, {})
        obj = ident.get("objective", {})
        return cls(Objective(obj.get("name", "aulc"), obj.get("target")),
                   obj.get("metric", "mse"), int(ident.get("curve", {}).get("test_size", 1)))

    def floor(self, baseline: float) -> float:
        return floor_for(self.metric, self.test_size, baseline)  # type: ignore[arg-type]

    def score(self, sizes: np.ndarray, mean: np.ndarray, baseline: float) -> float:
        return self.objective.score(sizes, mean, baseline, self.floor(baseline))

    def statistic(self, t: FrozenTrial) -> tuple[np.ndarray, list[int], stats.Statistic]:
        """(errors[size, seed], seeds, errors -> score) of a stored trial; seeds with a
        missing size are left out."""
        sizes, seeds, err = curve_matrix(t.user_attrs)
        full = np.all(np.isfinite(err), axis=0)
        base = float(t.user_attrs.get("baseline_error", 1.0))
        return (err[:, full], [s for s, ok in zip(seeds, full, strict=True) if ok],
                lambda e: self.score(sizes, e.mean(axis=1), base))

    def interval(self, t: FrozenTrial, confidence: float = 0.95) -> stats.Interval:
        """The trial's score with its interval over seeds (see :mod:`dmisearch.stats`)."""
        err, seeds, fn = self.statistic(t)
        name = self.objective.name
        if name == "n_to_target":
            return stats.no_interval(float(t.value), len(seeds),  # type: ignore[arg-type]
                                     "n/a: no calibrated interval for n_to_target")
        if err.shape[1] == 0:
            return stats.no_interval(float(t.value), 0)  # type: ignore[arg-type]
        got = stats.interval(err, fn, confidence=confidence, log=name == "final_error")
        return dataclasses.replace(got, estimate=float(t.value))  # type: ignore[arg-type]


def trial_difference(sa: Scorer, ta: FrozenTrial, sb: Scorer, tb: FrozenTrial,
                     confidence: float = 0.95) -> stats.Difference:
    """Score of ``ta`` minus score of ``tb``, paired over seeds when both trials were
    measured on the same seeds (common random numbers), else unpaired."""
    ea, seeds_a, fa = sa.statistic(ta)
    eb, seeds_b, fb = sb.statistic(tb)
    if sa.objective.name == "n_to_target" or sb.objective.name == "n_to_target":
        nan = math.nan
        return stats.Difference(float(ta.value - tb.value), nan, nan, nan, nan,  # type: ignore
                                nan, False, "n/a: no calibrated interval for n_to_target")
    return stats.difference(ea, fa, eb, fb, paired=seeds_a == seeds_b, confidence=confidence)


@dataclasses.dataclass
class TripletEvidence:
    """Every trial of one triplet in one study, reduced to what ranking needs."""

    study: str
    triplet: Triplet
    states: dict[str, str] = dataclasses.field(default_factory=dict)  # config -> best state
    best: FrozenTrial | None = None  # best complete search trial
    confirmations: dict[str, FrozenTrial] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)  # their error messages

    @property
    def confirmed(self) -> FrozenTrial | None:
        """The complete confirmation of the best configuration, if the study ran one."""
        if self.best is None:
            return None
        return self.confirmations.get(trial_config(self.best) or "")

    def count(self, state: str) -> int:
        return sum(s == state for s in self.states.values())

    @property
    def configs(self) -> int:
        """Distinct configurations with a complete search trial."""
        return self.count("complete")


_RANK = {"complete": 3, "pruned": 2, "failed": 1, "running": 0}
_STATE = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
          TrialState.FAIL: "failed", TrialState.RUNNING: "running",
          TrialState.WAITING: "running"}


def triplet_of(t: FrozenTrial) -> Triplet:
    a = t.user_attrs
    return ((a.get("data") or {}).get("label", "?"), a.get("model", "?"), a.get("algorithm", "?"))


def gather(trials: Iterable[tuple[optuna.Study, FrozenTrial]]
           ) -> dict[tuple[str, Triplet], TripletEvidence]:
    """Group the trials of one or several studies by (study, triplet)."""
    out: dict[tuple[str, Triplet], TripletEvidence] = {}
    for study, t in trials:
        if t.user_attrs.get("model") is None:
            continue
        key = (study.study_name, triplet_of(t))
        ev = out.setdefault(key, TripletEvidence(*key))
        config = trial_config(t) or f"trial {t.number}"
        if is_confirmation(t):
            if t.state == TrialState.COMPLETE and t.value is not None:
                ev.confirmations.setdefault(config, t)
            continue
        if not is_search(t):
            continue
        state = _STATE.get(t.state)
        if state is None:
            continue
        previous = ev.states.get(config)
        if previous is None or _RANK[state] > _RANK[previous]:
            ev.states[config] = state
        if t.state == TrialState.FAIL:
            ev.failures.append(str(t.user_attrs.get("error", "unknown error")))
        if t.state == TrialState.COMPLETE and t.value is not None and (
                ev.best is None or t.value < ev.best.value):  # type: ignore[operator]
            ev.best = t
    return out


"""The confirmation stage: the search's winners retrained on seeds the search never saw.

A triplet's best configuration was picked as the lowest of several scores measured on the
study's curve seeds, so that score is optimistic (the winner's curse), the more so the more
configurations were tried. Retraining the picked configuration on fresh seeds gives a score
the pick did not see: its interval covers, and triplets are ranked on it.

Once the search has spent its budget, each claim (``claims.claim``) asks
:func:`pending_confirmations` (under the study lock) which confirmation trials the study
still needs: one per best configuration of the ``top`` best triplets, marked with
``confirms`` (the search trial) and ``confirm_seeds``. They are ordinary trials: queued in
the storage, claimed by any worker, resumed after an interrupt (a failed one is queued
again, up to ``MAX_RETRY`` times).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from dmisearch.coordination import MAX_RETRY
from dmisearch.evidence import gather
from dmisearch.trialinfo import CONFIRM_SEEDS_ATTR, CONFIRMS_ATTR, is_confirmation, trial_config

if TYPE_CHECKING:
    from dmisearch.study_file import StudySpec


def to_confirm(study: optuna.Study, spec: StudySpec, trials: Sequence[FrozenTrial]
               ) -> list[FrozenTrial]:
    """The best search trial of each of the ``top`` best triplets, best first."""
    if spec.confirm is None:
        return []
    best = [ev.best for ev in gather((study, t) for t in trials).values()
            if ev.best is not None]
    best.sort(key=lambda t: t.value)  # type: ignore[arg-type, return-value]
    return best[: spec.confirm.top]


def pending_confirmations(study: optuna.Study, spec: StudySpec,
                          trials: Sequence[FrozenTrial]) -> int:
    """Queue the confirmation trials the study lacks; returns how many are waiting."""
    waiting, missing = confirmation_needs(study, spec, trials)
    for t in missing:
        study.enqueue_trial(t.params, user_attrs={CONFIRMS_ATTR: t.number,
                                                  CONFIRM_SEEDS_ATTR: list(spec.confirm.seeds)})
    return waiting + len(missing)


def confirmation_needs(study: optuna.Study, spec: StudySpec, trials: Sequence[FrozenTrial]
                       ) -> tuple[int, list[FrozenTrial]]:
    """The confirmation trials waiting in the queue, and the search trials whose
    confirmation the study lacks (none queued, running or done, and not failed
    ``MAX_RETRY`` times). Changes nothing."""
    if spec.confirm is None:
        return 0, []
    seeds = list(spec.confirm.seeds)
    by_number = {t.number: t for t in trials}
    states: dict[str, list[TrialState]] = {}
    for t in trials:
        if is_confirmation(t) and list(t.user_attrs.get(CONFIRM_SEEDS_ATTR, [])) == seeds:
            confirmed = by_number.get(int(t.user_attrs[CONFIRMS_ATTR]))
            key = trial_config(t) or (trial_config(confirmed) if confirmed else None)
            states.setdefault(key or "", []).append(t.state)
    waiting = sum(s.count(TrialState.WAITING) for s in states.values())
    missing = []
    for t in to_confirm(study, spec, trials):
        seen = states.get(trial_config(t) or "", [])
        if any(s in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
               for s in seen) or seen.count(TrialState.FAIL) >= MAX_RETRY:
            continue
        missing.append(t)
    return waiting, missing

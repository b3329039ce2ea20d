"""Telling trials' outcomes to the storage, shared by the claim (``claims``) and the run loop
(``runner``).

* A trial that another worker reaped meanwhile (no heartbeat for a grace period, e.g. a
  suspended process) is already finished in storage: telling it again raises Optuna's
  ``UpdateFinishedTrialError``, so it is read back as the reaper recorded it instead.
* A trial that raises is recorded as FAIL with the error and a traceback tail in its user
  attributes (``error``, ``traceback``).
* On Ctrl-C (or SIGTERM) every trial still running is recorded as FAIL, "interrupted",
  best effort (``fail_interrupted``).
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from dmisearch.coordination import stored_trial, trial_handle


def tell(study: optuna.Study, trial: optuna.Trial, value: float | None = None,
         state: TrialState | None = None) -> optuna.trial.FrozenTrial:
    """Tell ``trial``'s value or state; the stored trial as it now stands."""
    try:
        return study.tell(trial, value, state=state)
    except UpdateFinishedTrialError:  # reaped by another worker while this one was silent
        return stored_trial(study, trial.number)


def tell_failed(study: optuna.Study, trial: optuna.Trial, exc: BaseException | None
                ) -> optuna.trial.FrozenTrial:
    """Tell ``trial`` as FAIL, with ``exc`` and its traceback tail as user attributes."""
    try:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        tb = "".join(traceback.format_exception(exc, limit=-8)) if exc is not None else ""
        trial.set_user_attr("traceback", tb[-4000:])
    except UpdateFinishedTrialError:
        return stored_trial(study, trial.number)
    return tell(study, trial, state=TrialState.FAIL)


def fail_interrupted(study: optuna.Study,
                     trials: Sequence[optuna.Trial | optuna.trial.FrozenTrial]) -> None:
    """Record each of ``trials`` still running as failed, "interrupted" (finished ones, told
    before the interrupt, stay as they are). Best effort: a storage the interrupt left
    unusable raises nothing here (the interrupt goes on), and the trials it could not
    record stay RUNNING until another worker's reaper fails and retries them."""
    for trial in trials:
        with contextlib.suppress(Exception):
            storage, trial_id = trial_handle(study, trial)
            storage.set_trial_user_attr(
                trial_id, "error", "interrupted (Ctrl-C or SIGTERM) while running")
            study.tell(trial.number, state=TrialState.FAIL)


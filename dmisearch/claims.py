"""Claiming trials without replay: under the study lock, ask for the trials the budget
leaves and check each proposal against the configurations already finished or running.

* Each process samples from its own stream (a session of the study:
  ``coordination.claim_sessions``), and every proposal is checked, under the study lock
  (``coordination.study_lock``), against the configurations already finished or running
  (``Census``): a repeat of a finished one is answered from it (``duplicate_of``; not
  counted in ``n_trials``), a repeat of a running one is dropped and another asked. After
  ``DUPLICATE_PATIENCE`` repeats in one claim a random sampler is asked instead, and after
  that the claim gives up for now.
* A claim asks for no more trials than ``n_trials`` leaves, counting those running (across
  every worker), nor than the configurations of a finite space left; in a finite space the
  study ends when every configuration has finished, even short of ``n_trials``.
* Once the search has spent its budget, retries of lost search trials it no longer needs are
  failed (``drop_unneeded_retries``) and the confirmation trials it calls for are claimed
  (``confirmation.pending_confirmations``).

``runner.run_study`` claims, trains the plans with ``runner.run_batch``, and claims again.
"""

from __future__ import annotations

import contextlib
import dataclasses

import optuna
from optuna.trial import TrialState

from dmisearch.confirmation import pending_confirmations
from dmisearch.coordination import (
    count_states,
    reap_lost_trials,
    study_lock,
    trial_handle,
)
from dmisearch.objective import TrialObjective, TrialPlan
from dmisearch.seeding import derive_seed
from dmisearch.study_file import StudySpec
from dmisearch.telling import fail_interrupted, tell, tell_failed
from dmisearch.trialinfo import (
    DUPLICATE_ATTR,
    FINISHED,
    is_confirmation,
    is_search,
    trial_config,
)

#: Repeated proposals one claim answers before it asks a random sampler instead.
DUPLICATE_PATIENCE = 8


@dataclasses.dataclass
class Claimed:
    """What one claim hands a worker: plans to train, and trials it answered itself (a
    reused duplicate, a plan that failed, a repeat of a running configuration)."""

    plans: list[TrialPlan]
    answered: list[optuna.trial.FrozenTrial]


def claim(study: optuna.Study, spec: StudySpec, batch: int, asked: list[optuna.Trial],
          objective: TrialObjective) -> Claimed | None:
    """Under the study lock: reap lost trials, then ask for as many trials as the budget
    leaves (at most ``batch``), each planned (its configuration chosen) and checked against
    the configurations already finished or running. Once the search is done, the
    confirmation trials it calls for. None: the study is done; no plans: wait for running
    trials. Each trial also goes into ``asked`` as soon as it exists, so that an interrupt
    before the list is returned still finds it (``fail_interrupted``)."""
    with study_lock(spec.storage, spec.name):
        reap_lost_trials(study, grace=spec.grace_period)
        snapshot = study.get_trials(deepcopy=False)
        census = Census.of(study, snapshot)
        left = configurations_left(spec, census)
        exhausted = left is not None and left <= 0
        if exhausted or (spec.n_trials is not None and census.done >= spec.n_trials):
            drop_unneeded_retries(study)
            waiting = pending_confirmations(study, spec, snapshot)
            if not waiting:
                return Claimed([], []) if census.running_confirmations else None
            want = min(batch, waiting)
        else:
            want = batch if spec.n_trials is None else (
                spec.n_trials - census.done - census.running)
            if left is not None:  # no more than the configurations left
                want = min(want, left - len(census.busy))
            want = min(batch, want)
        if want <= 0:
            return Claimed([], [])
        before = {t.number for t in snapshot if t.state == TrialState.RUNNING}
        try:
            return _ask(study, spec, objective, want, asked, census)
        except KeyboardInterrupt:  # perhaps inside an ask that had created its trial:
            # under the lock only this worker asks, so every newly running trial is its own
            with contextlib.suppress(Exception):  # else the reaper clears them later
                fail_interrupted(study, [t for t in _running(study)
                                         if t.number not in before])
            raise


@dataclasses.dataclass
class Census:
    """The study's search trials as one claim sees them."""

    done: int  # finished search trials (what n_trials counts)
    running: int  # running search trials
    finished: dict[str, optuna.trial.FrozenTrial]  # configuration -> a finished trial of it
    busy: dict[str, int]  # configuration -> a running or waiting trial of it
    running_confirmations: int

    @classmethod
    def of(cls, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> Census:
        done, running, _ = count_states(study, trials)
        finished: dict[str, optuna.trial.FrozenTrial] = {}
        busy: dict[str, int] = {}
        confirming = 0
        for t in trials:
            if is_confirmation(t):
                confirming += t.state in (TrialState.RUNNING, TrialState.WAITING)
                continue
            key = trial_config(t)
            if key is None or not is_search(t):
                continue
            if t.state in FINISHED:
                finished.setdefault(key, t)
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                busy[key] = t.number
        busy = {k: v for k, v in busy.items() if k not in finished}
        return cls(done, running, finished, busy, confirming)


def _ask(study: optuna.Study, spec: StudySpec, objective: TrialObjective, want: int,
         asked: list[optuna.Trial], census: Census) -> Claimed:
    """Ask until ``want`` trials have a configuration no other trial has (or the sampler
    keeps repeating itself: then a random sampler is asked, and after that, give up for
    now). Called under the study lock."""
    out = Claimed([], [])
    repeats = 0
    sampler = study.sampler
    try:
        while len(out.plans) < want and len(asked) < 4 * (want + DUPLICATE_PATIENCE):
            if repeats >= DUPLICATE_PATIENCE:  # the sampler is stuck on known points
                study.sampler = optuna.samplers.RandomSampler(
                    seed=derive_seed("repeat", spec.seed or 0, spec.session, len(asked)) % 2**32)
            trial = study.ask()
            asked.append(trial)
            try:
                plan = objective.plan(trial)
            except Exception as exc:  # the run's failure streak decides whether to go on
                out.answered.append(tell_failed(study, trial, exc))
                break
            if plan.confirmation:
                out.plans.append(plan)
                continue
            key = plan.config
            if key in census.finished:
                repeats += 1
                out.answered.append(_reuse(study, trial, census.finished[key]))
            elif key in census.busy:
                repeats += 1
                out.answered.append(_drop(study, trial, census.busy[key]))
            else:
                census.busy[key] = trial.number
                out.plans.append(plan)
    finally:
        study.sampler = sampler
    return out


def _reuse(study: optuna.Study, trial: optuna.Trial, original: optuna.trial.FrozenTrial
           ) -> optuna.trial.FrozenTrial:
    """Answer a repeated proposal with the finished trial's result (so that the sampler
    learns it) without training it again."""
    trial.set_user_attr(DUPLICATE_ATTR, original.number)
    if original.state == TrialState.COMPLETE:
        return tell(study, trial, original.value)
    why = original.user_attrs.get("pruned_reason", "pruned")
    trial.set_user_attr("pruned_reason", f"as trial {original.number}, the same "
                                         f"configuration: {why}")
    return tell(study, trial, state=TrialState.PRUNED)


def _drop(study: optuna.Study, trial: optuna.Trial, running: int) -> optuna.trial.FrozenTrial:
    """A proposal of a configuration another trial is training: not trained twice."""
    trial.set_user_attr(DUPLICATE_ATTR, running)
    trial.set_user_attr("error", f"the configuration of trial {running}, still running: "
                                 "not trained twice; another configuration was asked")
    return tell(study, trial, state=TrialState.FAIL)


def drop_unneeded_retries(study: optuna.Study) -> None:
    """Queued retries of lost search trials that the finished search no longer needs:
    FAIL, with the reason (they would otherwise wait forever)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if "retry_of" in t.user_attrs and is_search(t):
            with contextlib.suppress(Exception):
                storage, trial_id = trial_handle(study, t)
                storage.set_trial_user_attr(
                    trial_id, "error", "retry not needed: the study reached n_trials")
                storage.set_trial_state_values(trial_id, TrialState.FAIL)


def configurations_left(spec: StudySpec, census: Census) -> int | None:
    """Configurations of the current space no trial has finished (None: unbounded)."""
    size = spec.space_size()
    if size is None:
        return None
    return size - sum(spec.reaches(t.params) for t in census.finished.values())


def _running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

"""Running a study: open (or resume) it in storage, then ask, evaluate and tell until done.

* ``n_trials`` counts *finished* trials of the whole study (complete or pruned), across
  every worker: the study ends with exactly that many (``coordination``), rerunning the
  same command resumes where it stopped, and an interrupted study is completed, not
  restarted. ``timeout`` bounds this run's wall time; a trial that is running when it
  expires finishes.
* Several workers (``dmisearch run --workers N``, ``dmisearch worker``) share the study
  through its storage; a worker that dies mid-trial is noticed by the others through its
  missing heartbeat, and its trials are retried with the same parameters.
* Trials are asked for ``trials_per_batch`` at a time (ask-and-tell) and trained together,
  so that the engine fuses the jobs of trials that share an architecture shape and the
  sampler and storage are visited once per batch rather than once per network.
* No configuration trains twice: trials are claimed under the study lock, each proposal
  checked against the configurations already finished or running (``claims``). In a finite
  space the study ends when every configuration has finished, even short of ``n_trials``.
* With ``[confirm]``, once the search has spent its budget the best configuration of each
  of the ``top`` best triplets is retrained on fresh seeds (confirmation trials: ordinary
  trials marked ``confirms``, never pruned, resumed like any other).
* A trial that raises is recorded as FAIL with the error and a traceback tail in its user
  attributes (``telling``), and the study goes on; after ``MAX_FAIL_STREAK`` failures in a
  row the run stops with a summary of why, since every further trial would fail the same
  way.
* Ctrl-C (or SIGTERM) marks the running trial FAIL with the reason "interrupted", keeps the
  storage consistent, and re-raises ``KeyboardInterrupt``.
* The stored study carries the study file's identity (data, curve grid, objective, dtype,
  pairs); resuming with a file that disagrees is refused (``StudyMismatchError``).
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

import dmisearch
from dmisearch import kernel_budget, prior
from dmisearch.claims import Census, claim, configurations_left
from dmisearch.claims import drop_unneeded_retries as drop_unneeded_retries  # re-exported
from dmisearch.components import Split
from dmisearch.confirmation import confirmation_needs
from dmisearch.coordination import (
    Heartbeat,
    claim_sessions,
    count_states,
    stored_trial,
    study_lock,
    worker_id,
)
from dmisearch.errors import DmisearchError, StudyMismatchError, StudyNotFoundError
from dmisearch.objective import StudyData, TrialObjective, TrialPlan, make_context
from dmisearch.preflight import check_architectures
from dmisearch.progress import StageProgress, Throttled, reporting_to
from dmisearch.storage import describe, open_storage, silence_optuna
from dmisearch.study_file import StudySpec
from dmisearch.telling import fail_interrupted, tell, tell_failed
from dmisearch.trialinfo import (
    CONFIRM_SEEDS_ATTR,
    CONFIRMS_ATTR,
    FINISHED,
    IDENTITY_ATTR,
    is_search,
)

MAX_FAIL_STREAK = 10
#: Seconds a worker with nothing to ask for waits before looking again.
POLL_INTERVAL = 2.0
#: Trials asked for and trained together on a CUDA device when the study does not say.
AUTO_BATCH_CUDA = 16
SEARCH_ATTR = "dmisearch_search"


def stored_identity(spec: StudySpec) -> dict[str, Any]:
    """What must agree between every run and worker of one study."""
    ident = spec.identity()
    ident["pairs"] = spec.search_record()["pairs"]  # the `pair` parameter's choices
    return json.loads(json.dumps(ident))  # exactly as it reads back from storage


def open_study(spec: StudySpec, create: bool = True) -> optuna.Study:
    """Create the study, or load it and check that the study file still agrees with it."""
    silence_optuna()
    storage = open_storage(spec.storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if create:
            study = optuna.create_study(
                storage=storage, study_name=spec.name, direction="minimize",
                sampler=spec.make_sampler(), pruner=spec.make_pruner(), load_if_exists=True,
            )
        else:
            try:
                study = optuna.load_study(study_name=spec.name, storage=storage,
                                          sampler=spec.make_sampler(),
                                          pruner=spec.make_pruner())
            except KeyError:
                known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
                raise StudyNotFoundError(spec.name, describe(spec.storage), known) from None
    ident = stored_identity(spec)
    stored = study.user_attrs.get(IDENTITY_ATTR)
    if stored is None and not create:
        raise DmisearchError(f"study '{spec.name}' in {describe(spec.storage)} was not "
                             "written by dmisearch")
    if stored is None:
        study.set_user_attr(IDENTITY_ATTR, ident)
        study.set_user_attr("dmisearch_version", dmisearch.__version__)
        study.set_user_attr("source", spec.source)
    elif stored != ident:
        diff = sorted(k for k in set(stored) | set(ident) if stored.get(k) != ident.get(k))
        raise StudyMismatchError(
            f"study '{spec.name}' in {describe(spec.storage)} was created with a different "
            f"{', '.join(diff)} than {spec.source} now says, so its trials would not be "
            "comparable. Restore the study file, or give this variant its own name "
            "([study] name = ...)."
        )
    if create:
        study.set_user_attr(SEARCH_ATTR, spec.search_record())
        if study.metric_names is None:  # optuna-dashboard and `optuna` name the objective
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([spec.objective.name])
    if spec.sampler.cls_name == "BruteForceSampler":
        _check_brute_force_history(study, spec)
    return study


def _check_brute_force_history(study: optuna.Study, spec: StudySpec) -> None:
    """Optuna's BruteForceSampler walks a tree of every stored trial's parameters and fails
    on trials from another space: refuse such a study up front, saying which trial."""
    for t in study.get_trials(deepcopy=False):
        if t.params and is_search(t) and not spec.reaches(t.params):
            shown = ", ".join(f"{k}={v!r}" for k, v in t.params.items())
            raise DmisearchError(
                f"study '{spec.name}' holds trial {t.number} ({shown}) from a search space "
                f"other than {spec.source}'s, which sampler \"brute_force\" cannot walk "
                "around. Give this design its own study ([study] name = ...), restore the "
                "space, or use sampler \"grid\" (which skips configurations finished "
                "before).")


def prepare(spec: StudySpec) -> TrialObjective:
    """What every trial of ``spec`` needs, built once: the device context, each searched
    architecture checked on two samples (a model that cannot train fails here, not in
    trial 0), the data drawn, and the objective. Shared by :func:`run_study` and
    :func:`rerun_trial`, so that a rerun sets up exactly as the run did."""
    ctx = make_context(spec)
    check_architectures(spec, ctx)
    return TrialObjective(spec, StudyData.prepare(spec, ctx), ctx)


def rerun_trial(spec: StudySpec, number: int) -> tuple[optuna.trial.FrozenTrial, Any]:
    """Train trial ``number`` of the stored study again, alone, from its stored parameters
    (the seeds follow from the study file): returns the stored trial and the new plan, whose
    ``curve`` equals the stored one to rounding on the same device."""
    study = open_study(spec, create=False)
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise DmisearchError(f"study '{spec.name}' has no trial {number} (it has "
                             f"{len(trials)})")
    stored = trials[number]
    if "pair" not in stored.params:
        raise DmisearchError(f"trial {number} has no parameters to rerun (state "
                             f"{stored.state.name}: it failed before choosing a pair)")
    objective = prepare(spec)
    trial = optuna.trial.FixedTrial(stored.params, number=number)
    for key in (CONFIRMS_ATTR, CONFIRM_SEEDS_ATTR):  # a confirmation: its own seeds
        if key in stored.user_attrs:
            trial.set_user_attr(key, stored.user_attrs[key])
    plan = objective.plan(trial)
    objective.execute([plan])
    return stored, plan


def study_complete(study: optuna.Study, spec: StudySpec) -> bool:
    """Whether the study has its ``n_trials`` finished search trials (or every
    configuration of a finite space) and nothing left running or queued."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
        return False
    census = Census.of(study, trials)
    left = configurations_left(spec, census)
    return (left is not None and left <= 0) or (
        spec.n_trials is not None and census.done >= spec.n_trials)


def finished_count(study: optuna.Study) -> int:
    """Finished search trials (what ``n_trials`` counts)."""
    return count_states(study)[0]


TrialCallback = Callable[[optuna.trial.FrozenTrial], None]


def run_study(
    spec: StudySpec,
    *,
    on_trial: TrialCallback | None = None,
    progress: bool = False,
    poll: float = POLL_INTERVAL,
    session: int | None = None,
    create: bool = True,
    note: Callable[[str], None] | None = None,
) -> optuna.Study:
    """Run ``spec`` as one worker until the study has ``n_trials`` finished search trials
    (across every worker) and its confirmations, or this run's ``timeout`` passes; returns
    the Optuna study. ``session``: this worker's sampler session (by default a new one is
    taken from the study). ``create=False``: join the study only if it exists (a worker).
    ``note``: where to say what the run does besides trials (the theory prior's start)."""
    study = open_study(spec, create=create)
    if session is None:
        session = claim_sessions(study, spec.storage)
    spec = dataclasses.replace(spec, session=session)
    study.sampler = spec.make_sampler()
    objective = prepare(spec)
    if not study_complete(study, spec) or confirmation_needs(
            study, spec, study.get_trials(deepcopy=False))[1]:  # else nothing will train
        kernel_budget.check(spec, objective.ctx.device, lambda: study_draws(objective), note)
    if spec.prior is not None:
        start_with_prior(study, spec, progress, note or (lambda _: None))
    batch = spec.trials_per_batch or (
        AUTO_BATCH_CUDA if objective.ctx.device.type == "cuda" else 1)
    start = time.monotonic()
    bar = _progress(spec, finished_count(study)) if progress else None
    if bar is not None or note is not None:  # else nobody listens: no storage reads
        objective.on_stage = StageProgress(study, spec.n_trials, len(objective.stages), bar,
                                           note)
    streak: list[str] = []
    asked: list[optuna.Trial] = []  # this batch's trials, from their ask on
    try:
        while spec.timeout is None or time.monotonic() - start < spec.timeout:
            asked = []
            claimed = claim(study, spec, batch, asked, objective)
            if claimed is None:
                break
            told = list(claimed.answered)  # reused results and failed plans
            if claimed.plans:
                with reporting_to(kernel_progress(bar, note)):
                    told += run_batch(study, objective, claimed.plans)
            elif not claimed.answered:  # the rest is running elsewhere and may yet fail
                time.sleep(poll)
            for frozen in told:
                _note(frozen, streak, bar, on_trial, spec, study)
            if len(streak) >= MAX_FAIL_STREAK:
                raise DmisearchError(_fail_summary(spec, streak))
    except KeyboardInterrupt:  # also between an ask and run_batch: no trial left RUNNING
        fail_interrupted(study, asked)
        raise
    finally:
        if bar is not None:
            bar.close()
    return study


def study_draws(objective: TrialObjective) -> list[Split]:
    """The data of every curve seed and confirmation seed (the latter drawn now, once)."""
    spec = objective.spec
    splits = list(objective.data.splits.values())
    if spec.confirm is not None:
        splits += objective.confirmation_data(tuple(spec.confirm.seeds)).splits.values()
    return splits


def kernel_progress(bar: Any, note: Callable[[str], None] | None
                    ) -> Callable[[int, int], None] | None:
    """Where a long computation inside a trial (kernel blocks, training steps) reports:
    the bar's postfix in a terminal, else the run's notes; None when neither."""
    if bar is not None:
        return Throttled(lambda text: bar.set_postfix_str(text, refresh=True), "this batch",
                         every=2.0)
    return None if note is None else Throttled(note, "this batch")


def start_with_prior(study: optuna.Study, spec: StudySpec, progress: bool,
                     note: Callable[[str], None]) -> None:
    """The theory prior's start (:mod:`dmisearch.prior`): under the study lock, so one
    worker predicts and queues, and the others find it done."""
    from dmisearch.predict import predict, stderr_progress, stored_form

    def predicted() -> dict[str, Any]:
        assert spec.prior is not None
        note("theory prior: predicting the kernel learners' learning curves before trial 0")
        return stored_form(spec, predict(spec, pool=spec.prior.pool,
                                         progress=stderr_progress(progress)))

    with study_lock(spec.storage, spec.name):
        prior.start(study, spec, predicted, note)


def _note(frozen: optuna.trial.FrozenTrial, streak: list[str], bar: Any,
          on_trial: TrialCallback | None, spec: StudySpec, study: optuna.Study) -> None:
    """Count a finished trial into the failure streak and the progress bar; report it."""
    if is_search(frozen):
        if frozen.state == TrialState.FAIL:
            streak.append(str(frozen.user_attrs.get("error", "unknown error")))
        else:
            streak.clear()
    if bar is not None:
        bar.update(1 if is_search(frozen) and frozen.state in FINISHED else 0)
        if frozen.state == TrialState.COMPLETE:
            bar.set_postfix_str(f"best {spec.objective.name} {study.best_value:.4g}")
    if on_trial is not None:
        on_trial(frozen)


def run_batch(study: optuna.Study, objective: TrialObjective, plans: list[TrialPlan]
              ) -> list[optuna.trial.FrozenTrial]:
    """Train ``plans`` together, tell each outcome (in trial order), while a heartbeat
    keeps them from being reaped.

    Failures are recorded on their trial, never raised; ``KeyboardInterrupt`` marks every
    trial of the batch not yet told as failed ("interrupted"), then propagates. A trial that
    another worker reaped meanwhile (no heartbeat long enough, e.g. a suspended process)
    stays as the reaper recorded it.
    """
    trials = [p.trial for p in plans]
    told: dict[int, optuna.trial.FrozenTrial] = {}
    try:
        with Heartbeat(trials, interval=objective.spec.heartbeat_interval):
            for trial in trials:
                trial.set_user_attr("worker", worker_id())
            objective.execute(plans)
        for p in plans:
            if p.outcome == "complete":
                told[p.trial.number] = tell(study, p.trial, p.value)
            elif p.outcome == "pruned":
                told[p.trial.number] = tell(study, p.trial, state=TrialState.PRUNED)
            elif p.outcome == "reaped":  # as the reaper recorded it; its retry trains it
                told[p.trial.number] = stored_trial(study, p.trial.number)
            else:
                told[p.trial.number] = tell_failed(study, p.trial, p.error)
    except KeyboardInterrupt:
        fail_interrupted(study, [t for t in trials if t.number not in told])
        raise
    return [told[t.number] for t in trials]


def _fail_summary(spec: StudySpec, errors: list[str]) -> str:
    common = Counter(errors).most_common(3)
    reasons = "; ".join(f"{n}x {msg}" for msg, n in common)
    return (
        f"the last {len(errors)} trials of study '{spec.name}' all failed, so the run stopped. "
        f"Most common errors: {reasons}. Each failed trial keeps its traceback in the user "
        f"attribute 'traceback' (optuna-dashboard, or study.trials_dataframe())."
    )


def _progress(spec: StudySpec, done: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=spec.n_trials, initial=min(done, spec.n_trials or done),
                desc=f"study {spec.name}", unit="trial", dynamic_ncols=True, leave=True)

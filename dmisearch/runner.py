"""Running a study: open (or resume) it in storage, then ask, evaluate and tell until done.

* ``n_trials`` counts *finished* trials of the whole study (complete or pruned), so
  rerunning the same command resumes where it stopped and an interrupted study is
  completed, not restarted. ``timeout`` bounds this run's wall time; a trial that is
  running when it expires finishes.
* Trials are asked for ``trials_per_batch`` at a time (ask-and-tell) and trained together,
  so that the engine fuses the jobs of trials that share an architecture shape and the
  sampler and storage are visited once per batch rather than once per network.
* A trial that raises is recorded as FAIL with the error and a traceback tail in its user
  attributes, and the study goes on; after ``MAX_FAIL_STREAK`` failures in a row the run
  stops with a summary of why, since every further trial would fail the same way.
* Ctrl-C (or SIGTERM) marks the running trial FAIL with the reason "interrupted", keeps the
  storage consistent, and re-raises ``KeyboardInterrupt``.
* The stored study carries the study file's identity (data, curve grid, objective, dtype,
  pairs); resuming with a file that disagrees is refused (``StudyMismatchError``).
"""

from __future__ import annotations

import json
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

import dmisearch
from dmisearch.errors import DmisearchError, StudyMismatchError
from dmisearch.objective import StudyData, TrialObjective, make_context
from dmisearch.storage import describe, open_storage, silence_optuna
from dmisearch.study_file import StudySpec

MAX_FAIL_STREAK = 10
#: Trials asked for and trained together on a CUDA device when the study does not say.
AUTO_BATCH_CUDA = 16
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
IDENTITY_ATTR = "dmisearch_identity"
SEARCH_ATTR = "dmisearch_search"


def stored_identity(spec: StudySpec) -> dict[str, Any]:
    """What must agree between every run and worker of one study."""
    ident = spec.identity()
    ident["pairs"] = spec.search_record()["pairs"]  # the `pair` parameter's choices
    return json.loads(json.dumps(ident))  # exactly as it reads back from storage


def open_study(spec: StudySpec) -> optuna.Study:
    """Create the study, or load it and check that the study file still agrees with it."""
    silence_optuna()
    storage = open_storage(spec.storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            storage=storage, study_name=spec.name, direction="minimize",
            sampler=spec.make_sampler(), pruner=spec.make_pruner(), load_if_exists=True,
        )
    ident = stored_identity(spec)
    stored = study.user_attrs.get(IDENTITY_ATTR)
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
    study.set_user_attr(SEARCH_ATTR, spec.search_record())
    return study


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


TrialCallback = Callable[[optuna.trial.FrozenTrial], None]


def run_study(
    spec: StudySpec,
    *,
    on_trial: TrialCallback | None = None,
    progress: bool = False,
) -> optuna.Study:
    """Run ``spec`` to completion (or its timeout); returns the Optuna study."""
    study = open_study(spec)
    ctx = make_context(spec)
    objective = TrialObjective(spec, StudyData.prepare(spec, ctx), ctx)
    batch = spec.trials_per_batch or (AUTO_BATCH_CUDA if ctx.device.type == "cuda" else 1)
    start = time.monotonic()
    done = finished_count(study)
    bar = _progress(spec, done) if progress else None
    streak: list[str] = []
    try:
        while spec.n_trials is None or done < spec.n_trials:
            if spec.timeout is not None and time.monotonic() - start >= spec.timeout:
                break
            want = batch if spec.n_trials is None else min(batch, spec.n_trials - done)
            for frozen in run_batch(study, objective, want):
                if frozen.state == TrialState.FAIL:
                    streak.append(str(frozen.user_attrs.get("error", "unknown error")))
                else:
                    streak.clear()
                if bar is not None:
                    bar.update(1 if frozen.state in FINISHED else 0)
                    if frozen.state == TrialState.COMPLETE:
                        bar.set_postfix_str(f"best {spec.objective.name} {study.best_value:.4g}")
                if on_trial is not None:
                    on_trial(frozen)
            if len(streak) >= MAX_FAIL_STREAK:
                raise DmisearchError(_fail_summary(spec, streak))
            done = finished_count(study)
    finally:
        if bar is not None:
            bar.close()
    return study


def run_batch(study: optuna.Study, objective: TrialObjective, n: int
              ) -> list[optuna.trial.FrozenTrial]:
    """Ask for ``n`` trials, evaluate them together, tell each outcome (in trial order).

    Failures are recorded on their trial, never raised; ``KeyboardInterrupt`` marks every
    trial of the batch not yet told as failed ("interrupted"), then propagates.
    """
    trials = [study.ask() for _ in range(n)]
    told: dict[int, optuna.trial.FrozenTrial] = {}
    try:
        plans = []
        for trial in trials:
            try:
                plans.append(objective.plan(trial))
            except Exception as exc:
                told[trial.number] = _tell_failed(study, trial, exc)
        objective.execute(plans)
        for p in plans:
            if p.outcome == "complete":
                told[p.trial.number] = study.tell(p.trial, p.value)
            elif p.outcome == "pruned":
                told[p.trial.number] = study.tell(p.trial, state=TrialState.PRUNED)
            else:
                told[p.trial.number] = _tell_failed(study, p.trial, p.error)
    except KeyboardInterrupt:
        for trial in trials:
            if trial.number not in told:
                trial.set_user_attr("error", "interrupted (Ctrl-C or SIGTERM) while running")
                study.tell(trial, state=TrialState.FAIL)
        raise
    return [told[t.number] for t in trials]


def _tell_failed(study: optuna.Study, trial: optuna.Trial, exc: BaseException | None
                 ) -> optuna.trial.FrozenTrial:
    trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
    tb = "".join(traceback.format_exception(exc, limit=-8)) if exc is not None else ""
    trial.set_user_attr("traceback", tb[-4000:])
    return study.tell(trial, state=TrialState.FAIL)


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

"""What a run says while it works: one line per stage of each batch, and the blocks of long
kernel computations.

A batch of trials trains its curve in stages (every size up to a prune point together), so a
batch can take minutes before any trial finishes. After each stage :class:`StageProgress`
says which trials, which stage and sizes are done, the time since the run started, the
study's trials done / pruned / failed, and an estimate of the time left: the seconds per
trial finished since the run's first stage line, times the trials the budget leaves (from
that line, so that the first stage's one-time work, such as kernels computed once and then
cached, does not count as the cost of every trial). In a terminal it goes into
the progress bar's postfix; otherwise it is printed as a plain line (``note``).

Long computations inside a trial report ``(done, total[, what])`` to the callback of
:data:`WORK_PROGRESS` when a caller set one (:func:`reporting_to`): the built-in analytic
kernels their blocks (a Gram matrix of thousands of inputs takes minutes), the engine its
training steps (every few steps, counted over all the networks a batch trains, whichever
chunk of them is training: :class:`Cumulative`). ``dmisearch
run`` and ``dmisearch predict`` set a :class:`Throttled` one that says how far it is, the
time so far and the time left at most every few seconds.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from dmisearch.trialinfo import is_search

#: Where a long computation inside a trial reports ``(done, total[, what])`` (None:
#: nowhere); ``what`` names the units, "blocks" when left out.
WORK_PROGRESS: contextvars.ContextVar[Callable[..., None] | None] = (
    contextvars.ContextVar("dmisearch_work_progress", default=None))


@contextlib.contextmanager
def reporting_to(callback: Callable[..., None] | None) -> Iterator[None]:
    """Within the block, :data:`WORK_PROGRESS` is ``callback``."""
    token = WORK_PROGRESS.set(callback)
    try:
        yield
    finally:
        WORK_PROGRESS.reset(token)


class Throttled:
    """A ``(done, total[, what])`` callback that says ``label: 12/40 blocks, 35 s so far,
    ~1 min 30 s left`` through ``say`` at most every ``every`` seconds (the first after
    ``every`` seconds: short computations say nothing). A new computation (``done`` back to
    0 or 1) starts the clock again."""

    def __init__(self, say: Callable[[str], None], label: str = "kernel",
                 every: float = 10.0):
        self.say, self.label, self.every = say, label, every
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int, what: str = "blocks") -> None:
        now = time.monotonic()
        if done <= 1:
            self.start = self.last = now
        if done <= 0 or total <= 0 or now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        left = elapsed / done * (total - done)
        self.say(f"{self.label}: {done}/{total} {what}, {clock(elapsed)} so far, "
                 f"~{clock(left)} left")


class Cumulative:
    """A ``(done, total[, what])`` callback that passes on consecutive computations (each
    counting from 0) as one: ``(done before it + done, grand total, what)``. The engine
    trains a batch's networks in several chunks one after another; through this, the run's
    progress counts the network training steps of the whole batch and its time left covers
    every chunk, not the current one."""

    def __init__(self, report: Callable[..., None], total: int):
        self.report, self.total = report, total
        self.base = self.current = 0

    def __call__(self, done: int, total: int, what: str = "blocks") -> None:
        if done == 0:  # the next computation starts
            self.base += self.current
        self.current = total
        self.report(min(self.base + done, self.total), self.total, what)


@contextlib.contextmanager
def cumulative(total: int) -> Iterator[None]:
    """Within the block, consecutive computations report to the caller's callback (if one
    is set) as one of ``total`` units (:class:`Cumulative`)."""
    report = WORK_PROGRESS.get()
    with reporting_to(None if report is None else Cumulative(report, total)):
        yield


class StageProgress:
    """The ``on_stage`` callback of a run's objective."""

    def __init__(self, study: optuna.Study, n_trials: int | None, n_stages: int,
                 bar: Any = None, note: Callable[[str], None] | None = None):
        self.study, self.n_trials, self.n_stages = study, n_trials, n_stages
        self.bar, self.note = bar, note
        self.start = time.monotonic()
        #: (time, trials done) at the run's first stage line: the time left is measured
        #: from there, not from the start, whose first stage's one-time work (kernels
        #: computed once, then cached) later trials do not repeat
        self.ref: tuple[float, int] | None = None

    def counts(self) -> tuple[int, int, int]:
        """The study's search trials: (finished, pruned, failed)."""
        trials = [t for t in self.study.get_trials(deepcopy=False) if is_search(t)]
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        return done, pruned, failed

    def line(self, numbers: Sequence[int], sizes: Sequence[int], index: int) -> str:
        now = time.monotonic()
        elapsed = now - self.start
        done, pruned, failed = self.counts()
        which = (f"trial {numbers[0]}" if len(numbers) == 1 else
                 f"batch of {len(numbers)} (trials {numbers[0]}-{numbers[-1]})")
        text = (f"{which}: stage {index + 1}/{self.n_stages} (n={sizes[0]}..{sizes[-1]}) "
                f"trained; {clock(elapsed)} elapsed; study {done}"
                f"{f'/{self.n_trials}' if self.n_trials else ''} done, {pruned} pruned, "
                f"{failed} failed")
        if self.ref is None:
            self.ref = (now, done)
        elif self.n_trials and self.ref[1] < done < self.n_trials:
            left = (now - self.ref[0]) / (done - self.ref[1]) * (self.n_trials - done)
            text += f"; ~{clock(left)} left"
        return text

    def __call__(self, plans: Sequence[Any], sizes: Sequence[int], index: int) -> None:
        text = self.line(sorted(p.trial.number for p in plans), sizes, index)
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
        elif self.note is not None:
            self.note(text)


def clock(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"

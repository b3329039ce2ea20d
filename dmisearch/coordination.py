"""Many workers, one study: a storage-wide lock, heartbeats, and retries of lost trials.

Optuna's storage is the only thing workers share (a journal file, PostgreSQL, MySQL,
SQLite or Redis), so every rule below works through it:

* **Heartbeats.** While a worker trains, a thread stamps each of its running trials with the
  user attribute ``dmisearch_heartbeat`` (Unix time) every ``HEARTBEAT_INTERVAL`` seconds.
* **Lost trials.** A RUNNING trial whose newest stamp (or start, before the first stamp) is
  older than ``GRACE_PERIOD`` belongs to a worker that died (SIGKILL, power, network). It is
  marked FAIL with the reason, and a copy with the same parameters is enqueued (user
  attribute ``retry_of``; system attributes ``failed_trial`` / ``retry_history`` as Optuna's
  ``RetryFailedTrialCallback`` writes them), up to ``MAX_RETRY`` times; the next worker to
  ask for a trial picks it up.
* **Exactly n_trials.** Asking for trials happens under a lock held in the storage itself
  (``study_lock``): a worker reaps lost trials, counts finished and running ones, and asks
  for at most ``n_trials - finished - running`` new ones, all before anyone else may. So
  the study ends with exactly ``n_trials`` finished search trials whatever the number of
  workers; a worker with nothing to ask for waits while others' trials may still fail.
  Reused duplicates and confirmation trials are not search trials (``trialinfo``).
* **Sessions.** Every run or worker process takes a session number from the study
  (``claim_sessions``, under the lock); samplers are seeded from it, so no two processes,
  however many and whenever they start, draw the same proposals.

The lock: ``fcntl.flock`` on a file beside a journal or SQLite file, a PostgreSQL advisory
lock, MySQL's ``GET_LOCK``, a Redis lock, or a thread lock for in-memory studies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from dmisearch.storage import default_storage, journal_path, with_driver
from dmisearch.trialinfo import CONFIRM_SEEDS_ATTR, CONFIRMS_ATTR, FINISHED, is_search

HEARTBEAT_ATTR = "dmisearch_heartbeat"
HEARTBEAT_INTERVAL = 10.0  # seconds between stamps
GRACE_PERIOD = 60.0  # seconds without a stamp before a running trial counts as lost
MAX_RETRY = 3  # copies of one lost trial, at most
LOST = "worker lost"  # how the error of a reaped trial begins
SESSIONS_ATTR = "dmisearch_sessions"  # study attribute: sessions handed out so far
#: Seconds after which Redis frees a study lock whose holder died inside it (a claim holds
#: it for well under a second; others wait for it meanwhile).
REDIS_LOCK_EXPIRY = 60

_MEMORY_LOCKS: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def study_lock(storage_url: str | None, study_name: str) -> Iterator[None]:
    """Exclusive across every worker of ``study_name`` on this storage while held."""
    url = storage_url or default_storage()
    path = journal_path(url)
    if path is None and url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
    if path is not None:
        lock_path = Path(path).expanduser().with_name(Path(path).name + ".dmisearch-lock")
        with open(lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    key = zlib.crc32(f"dmisearch:{study_name}".encode())
    if url.startswith("postgres"):
        with _rdb_lock(url, "SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)",
                       {"k": key}):
            yield
        return
    if url.startswith(("mysql", "mariadb")):
        with _rdb_lock(url, "SELECT GET_LOCK(:k, 86400)", "SELECT RELEASE_LOCK(:k)",
                       {"k": f"dmisearch:{key}"}):
            yield
        return
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        with redis.Redis.from_url(url).lock(f"dmisearch:lock:{study_name}",
                                            timeout=REDIS_LOCK_EXPIRY, blocking_timeout=None):
            yield
        return
    lock = _MEMORY_LOCKS.setdefault(f"{url}:{study_name}", threading.Lock())
    with lock:
        yield


_ENGINES: dict[str, Any] = {}


@contextlib.contextmanager
def _rdb_lock(url: str, acquire: str, release: str, params: dict) -> Iterator[None]:
    import sqlalchemy as sa

    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = sa.create_engine(with_driver(url), pool_pre_ping=True)
    with engine.connect() as conn:
        got = conn.execute(sa.text(acquire), params).scalar()
        if got is not None and got != 1 and got != "":  # MySQL: 1 = locked; pg: void
            raise RuntimeError(f"could not take the study lock ({acquire} returned {got!r})")
        try:
            yield
        finally:
            conn.execute(sa.text(release), params)
            conn.commit()


class Heartbeat:
    """Stamps the given trials every ``interval`` seconds from a background thread."""

    def __init__(self, trials: list[optuna.Trial], interval: float = HEARTBEAT_INTERVAL):
        self.trials, self.interval = trials, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dmisearch-heartbeat",
                                        daemon=True)

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def _beat(self) -> None:
        now = time.time()
        for trial in self.trials:
            with contextlib.suppress(Exception):  # a reaped or finished trial: nothing to do
                trial.set_user_attr(HEARTBEAT_ATTR, now)


def last_sign_of_life(trial: optuna.trial.FrozenTrial) -> float:
    stamp = trial.user_attrs.get(HEARTBEAT_ATTR)
    if stamp is not None:
        return float(stamp)
    start = trial.datetime_start
    return start.timestamp() if start is not None else time.time()


def trial_handle(study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial
                 ) -> tuple[BaseStorage, int]:
    """The storage of ``study`` and the storage's id of ``trial``, to write to a trial that
    Optuna's public API cannot write to (another worker's running trial, a waiting one, a
    trial known only as a ``FrozenTrial``). Optuna keeps both private (``Study._storage``,
    ``_trial_id``): this is the project's only use of its private API, and pyproject
    bounds optuna to the versions tested with it."""
    return study._storage, trial._trial_id


def stored_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """Trial ``number`` of ``study`` as the storage now holds it (e.g. as a reaper left it)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def reap_lost_trials(study: optuna.Study, grace: float = GRACE_PERIOD,
                     max_retry: int = MAX_RETRY) -> list[int]:
    """Fail the running trials whose worker stopped beating, and enqueue their retries.

    Call under ``study_lock`` so that one trial is reaped, and retried, once. Returns the
    numbers of the reaped trials.
    """
    now = time.time()
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        silent = now - last_sign_of_life(t)
        if silent <= grace:
            continue
        storage, trial_id = trial_handle(study, t)
        with contextlib.suppress(Exception):
            storage.set_trial_user_attr(
                trial_id, "error",
                f"{LOST}: no heartbeat for {silent:.0f} s (more than {grace:g} s); "
                "retried with the same parameters")
        try:
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except Exception:  # finished meanwhile by its own worker: not lost after all
            continue
        reaped.append(t.number)
        history = [*t.system_attrs.get("retry_history", []), t.number]
        if len(history) <= max_retry:
            kept = {k: t.user_attrs[k] for k in (CONFIRMS_ATTR, CONFIRM_SEEDS_ATTR)
                    if k in t.user_attrs}  # a confirmation's retry confirms too
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.WAITING, params=t.params, distributions=t.distributions,
                user_attrs={"retry_of": t.number, **kept},
                system_attrs={"failed_trial": history[0], "retry_history": history}))
    return reaped


def count_states(study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial] | None = None
                 ) -> tuple[int, int, int]:
    """(finished, running, waiting) search trials of the study (of ``trials``, its trials
    as already read, when given): reused duplicates and confirmations do not count."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    trials = [t for t in trials if is_search(t)]
    finished = sum(t.state in FINISHED for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return finished, running, waiting


def claim_sessions(study: optuna.Study, storage_url: str | None, count: int = 1) -> int:
    """Take ``count`` consecutive session numbers from the study; returns the first."""
    with study_lock(storage_url, study.study_name):
        first = int(study.user_attrs.get(SESSIONS_ATTR, 0))
        study.set_user_attr(SESSIONS_ATTR, first + count)
    return first


def worker_id() -> str:
    """Where a trial ran: host and process (stored on every trial)."""
    return f"{os.uname().nodename}:{os.getpid()}"

"""Faults a long study meets, on the embedded journal, SQLite and a real PostgreSQL: a worker
killed mid-trial (SIGKILL), a worker suspended past the grace period (SIGSTOP, then SIGCONT),
and Ctrl-C then the same command again. Each must end with exactly n finished trials, none
left running, exit code 0 where the study completed, and no crash.

Marked slow (about 4 minutes on 2 cores): `python -m pytest -m slow tests/test_faults.py`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from conftest import configs, trained
from optuna.trial import TrialState
from test_distributed import dmisearch, load, study_file
from test_storage import POSTGRES, _reachable_postgres

from dmisearch.storage import open_storage

pytestmark = pytest.mark.slow
N = 4
BACKENDS = ["journal", "sqlite", "postgresql"]


def storage_of(backend: str, tmp_path: Path) -> str:
    if backend == "postgresql":
        if why := _reachable_postgres():
            pytest.skip(why)
        return POSTGRES
    return {"journal": f"journal:{tmp_path / 'journal.log'}",
            "sqlite": f"sqlite:///{tmp_path / 'study.db'}"}[backend]


def long_trials(tmp_path: Path) -> Path:
    """Trials of about two seconds: a signal lands inside one."""
    return study_file(tmp_path, n_trials=N, models=["fcn"], sampler="random", space={
        "model": {"fcn": {"width": 16, "depth": 1}},
        "algorithm": {"sgd": {"steps": 6000, "batch_size": 8,
                              "lr": {"low": 0.001, "high": 0.1, "log": True}}}})


def running_worker(path: Path, storage: str, timeout: float = 90) -> tuple[int, int]:
    """(trial number, worker pid) of a running trial."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            for t in load(path, storage).trials:
                if t.state == TrialState.RUNNING and "worker" in t.user_attrs:
                    return t.number, int(t.user_attrs["worker"].rsplit(":", 1)[1])
        except KeyError:  # not created yet
            pass
        time.sleep(0.1)
    raise AssertionError("no trial started")


def assert_complete(path: Path, storage: str, out: str) -> None:
    study = load(path, storage)
    runs = [t for t in trained(study) if t.state == TrialState.COMPLETE]
    assert len(runs) == N and len(set(configs(runs))) == N, out
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING,
                                                       TrialState.WAITING)], out
    assert "Leaderboard of study" in out and "internal error" not in out, out
    if storage == POSTGRES:
        optuna.delete_study(study_name=study.study_name, storage=open_storage(storage))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_worker_is_reaped_and_the_run_completes(tmp_path, backend):
    storage = storage_of(backend, tmp_path)
    path = long_trials(tmp_path)
    run = dmisearch("run", str(path), "--storage", storage, "--workers", "2")
    lost, pid = running_worker(path, storage)
    os.kill(pid, signal.SIGKILL)
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert "stopped along the way" in out and "the others completed the study" in out
    assert load(path, storage).trials[lost].user_attrs["error"].startswith("worker lost")
    assert_complete(path, storage, out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_suspended_past_the_grace_period_drops_its_result(tmp_path, backend):
    storage = storage_of(backend, tmp_path)
    path = long_trials(tmp_path)
    run = dmisearch("run", str(path), "--storage", storage, "--workers", "2")
    lost, pid = running_worker(path, storage)
    os.kill(pid, signal.SIGSTOP)  # a VM pause, a laptop lid, heavy swapping
    end = time.monotonic() + 120
    while load(path, storage).trials[lost].state == TrialState.RUNNING:  # until reaped
        assert time.monotonic() < end, "the suspended worker's trial was never reaped"
        time.sleep(0.2)
    os.kill(pid, signal.SIGCONT)
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert f"trial {lost:>4}" in out and "its result is dropped" in out
    assert_complete(path, storage, out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_then_the_same_command_completes_the_study(tmp_path, backend):
    storage = storage_of(backend, tmp_path)
    path = long_trials(tmp_path)
    cmd = ("run", str(path), "--storage", storage, "--workers", "2")
    run = dmisearch(*cmd)
    running_worker(path, storage)
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 130, out
    assert not [t for t in load(path, storage).trials if t.state == TrialState.RUNNING]
    again = dmisearch(*cmd)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert_complete(path, storage, out)


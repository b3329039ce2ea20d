"""Many workers on one study (real PostgreSQL and the embedded journal), lost workers,
interrupts, in-trial failures, time limits and reruns."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import TINY_STUDY, configs, dump_toml, trained
from optuna.trial import TrialState
from test_storage import (
    MYSQL,
    POSTGRES,
    REDIS,
    _reachable_postgres,
    _reachable_rdb,
    _reachable_redis,
)

from dmisearch.coordination import HEARTBEAT_ATTR, count_states, reap_lost_trials
from dmisearch.runner import run_study
from dmisearch.storage import open_storage
from dmisearch.study_file import build_spec

ROOT = Path(__file__).resolve().parents[1]


def study_file(tmp_path: Path, **search) -> Path:
    doc = copy.deepcopy(TINY_STUDY)
    doc["study"]["name"] = f"dist-{uuid.uuid4().hex[:8]}"
    doc["study"].update(heartbeat_interval=0.5, grace_period=6.0)  # journal lock break + 2 beats
    doc["search"].update(search)
    path = tmp_path / "study.toml"
    path.write_text(dump_toml(doc))
    return path


def dmisearch(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dmisearch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def load(path: Path, storage: str) -> optuna.Study:
    import tomllib

    name = tomllib.loads(path.read_text())["study"]["name"]
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def assert_exactly(study: optuna.Study, n: int) -> None:
    """``n`` complete trained trials, each a different configuration, every curve intact,
    nothing left running; repeated proposals (if any) were answered, not trained."""
    runs = trained(study)
    states = [t.state for t in runs]
    assert states.count(TrialState.COMPLETE) == n, states
    every = [t.state for t in study.trials]
    assert TrialState.RUNNING not in every and TrialState.WAITING not in every
    done = [t for t in runs if t.state == TrialState.COMPLETE]
    assert len(set(configs(done))) == n, configs(done)
    for t in done:  # every curve intact
        assert t.user_attrs["curve"]["size"] == [8, 8, 16, 16]
        assert len(t.user_attrs["curve"]["test_error"]) == 4
    for t in study.trials:
        if "duplicate_of" in t.user_attrs:  # answered from another trial: nothing trained
            assert "curve" not in t.user_attrs


@pytest.mark.parametrize("backend", ["postgresql", "journal", "mysql", "redis"])
def test_four_workers_finish_exactly_n_trials(tmp_path, backend):
    storage = {"postgresql": POSTGRES, "mysql": MYSQL, "redis": REDIS,
               "journal": f"journal:{tmp_path / 'journal.log'}"}[backend]
    why = {"postgresql": _reachable_postgres, "redis": _reachable_redis,
           "mysql": lambda: _reachable_rdb(MYSQL), "journal": lambda: None}[backend]()
    if why:
        pytest.skip(why)
    # trials of about a second: one worker must not finish all of them while the others
    # are still importing torch
    path = study_file(tmp_path, n_trials=12, space={
        "model": {"fcn": {"width": 16, "depth": 1}, "cnn_gap": {"width": 4, "depth": 1}},
        "algorithm": {"sgd": {"steps": 1500, "batch_size": 8, "lr": 0.05}}})
    run = dmisearch("run", str(path), "--storage", storage, "--workers", "4")
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert "started 4 workers" in out and "[worker 3]" in out
    study = load(path, storage)
    assert_exactly(study, 12)
    workers = {t.user_attrs["worker"] for t in trained(study)}
    assert len(workers) > 1, f"one worker ran every trial: {workers}"  # really shared
    if backend != "journal":
        optuna.delete_study(study_name=study.study_name, storage=open_storage(storage))


def _wait_for_running(path: Path, storage: str, timeout: float = 60) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            running = [t.number for t in load(path, storage).trials
                       if t.state == TrialState.RUNNING]
        except KeyError:
            running = []
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError("no trial started")


def test_a_killed_worker_trial_is_failed_and_retried_with_its_parameters(tmp_path):
    storage = f"journal:{tmp_path / 'journal.log'}"
    # long trials, so that the kill lands inside one
    path = study_file(tmp_path, n_trials=3, models=["fcn"], space={
        "model": {"fcn": {"width": 16, "depth": 1}},
        "algorithm": {"sgd": {"steps": 20000, "batch_size": 8, "lr": 0.01}}})
    victim = dmisearch("run", str(path), "--storage", storage)  # creates the study
    lost = _wait_for_running(path, storage)
    time.sleep(1.0)  # at least one heartbeat stamped
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = dmisearch("worker", str(path), "--storage", storage)
    out, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, out
    study = load(path, storage)
    assert_exactly(study, 3)
    dead = study.trials[lost]
    assert dead.state == TrialState.FAIL and dead.user_attrs["error"].startswith("worker lost")
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == lost]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert retry.system_attrs["failed_trial"] == lost


def test_ctrl_c_then_rerun_completes_the_study(tmp_path):
    storage = f"journal:{tmp_path / 'journal.log'}"
    # trials of about 3 s on a 2-core machine, so that Ctrl-C lands inside one: with 1 s
    # trials, a loaded CI machine once saw the running trial finish before the signal
    path = study_file(tmp_path, n_trials=4, models=["fcn"], space={
        "model": {"fcn": {"width": 16, "depth": 1}},
        "algorithm": {"sgd": {"steps": 12000, "batch_size": 8, "lr": 0.01}}})
    run = dmisearch("run", str(path), "--storage", storage, "--workers", "2")
    _wait_for_running(path, storage)
    run.send_signal(signal.SIGINT)  # what Ctrl-C sends to the parent
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 130, out
    assert "interrupted" in out
    study = load(path, storage)
    interrupted = [t for t in trained(study) if t.state == TrialState.FAIL]
    assert interrupted and all("interrupted" in t.user_attrs["error"] for t in interrupted)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    again = dmisearch("run", str(path), "--storage", storage, "--workers", "2")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    study = load(path, storage)
    assert_exactly(study, 4)
    assert len(trained(study)) == 4 + len(interrupted)  # the count adds up


def test_reaping_is_exact_and_idempotent(tiny_doc, registry):
    tiny_doc["study"].update(heartbeat_interval=0.5, grace_period=2.0)
    spec = build_spec(tiny_doc, registry, storage="memory", n_trials=1)
    study = optuna.create_study(storage=open_storage("memory"))
    fresh, stale = study.ask(), study.ask()
    for t in (fresh, stale):
        t.suggest_float("x", 0, 1)
    fresh.set_user_attr(HEARTBEAT_ATTR, time.time())
    stale.set_user_attr(HEARTBEAT_ATTR, time.time() - 10)
    assert reap_lost_trials(study, grace=spec.grace_period) == [stale.number]
    assert reap_lost_trials(study, grace=spec.grace_period) == []  # once only
    assert count_states(study) == (0, 1, 1)  # the fresh one runs; one retry waits
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.params == study.trials[stale.number].params
    assert waiting.user_attrs == {"retry_of": stale.number}
    from dmisearch.claims import drop_unneeded_retries

    drop_unneeded_retries(study)  # the study reached n_trials before the retry ran
    assert study.trials[waiting.number].state == TrialState.FAIL
    assert study.trials[waiting.number].user_attrs["error"].startswith("retry not needed")


@pytest.mark.parametrize("algorithm,search,expected", [
    ("oom_test", {}, "OutOfMemoryError: CUDA out of memory"),
    ("slow_test", {"trial_timeout": 0.3}, "TrialTimeout: trial time limit of 0.3 s exceeded"),
])
def test_in_trial_failures_are_recorded_and_the_study_goes_on(tiny_doc, test_registry,
                                                               algorithm, search, expected):
    tiny_doc["search"] = {"models": ["fcn"], "algorithms": ["mean_test", algorithm],
                          "n_trials": 4, "sampler": "random", "seed": 1, "pruner": "none",
                          **search}
    study = run_study(build_spec(tiny_doc, test_registry, storage="memory"))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["error"].startswith(expected) for t in failed)
    assert all(t.params["pair"] == f"fcn/{algorithm}" for t in failed)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 4


def test_an_exhaustive_design_with_workers_trains_each_configuration_once(tmp_path):
    """Each (model, algorithm, momentum) once, with two workers racing for them; a rerun
    finds the design done."""
    storage = f"journal:{tmp_path / 'journal.log'}"
    path = study_file(tmp_path, sampler="brute_force", space={
        "model": {"fcn": {"width": 16, "depth": 1},
                  "cnn_gap": {"width": 4, "depth": 1, "filter_size": 3}},
        "algorithm": {"sgd": {"steps": 1500, "batch_size": 8, "lr": 0.05,
                              "momentum": [0.0, 0.9], "weight_decay": 0.0}}})
    text = path.read_text().replace("n_trials = 3\n", "")
    path.write_text(text)
    for _ in range(2):  # run, then rerun: nothing more to do
        run = dmisearch("run", str(path), "--storage", storage, "--workers", "2")
        out, _ = run.communicate(timeout=300)
        assert run.returncode == 0, out
        study = load(path, storage)
        runs = trained(study)
        assert [t.state for t in runs] == [TrialState.COMPLETE] * 4
        assert len(set(configs(runs))) == 4


def test_resume_extend_and_workers_never_train_a_configuration_twice(tmp_path):
    """On PostgreSQL, a seeded study run, interrupted, resumed, extended, then run by one
    `run` and two `dmisearch worker` processes at once: every trained configuration is
    distinct. The learning rate is continuous, so a repeat can only be a replay of the
    sampler's stream (each process samples its own session of it)."""
    if why := _reachable_postgres():
        pytest.skip(why)
    path = study_file(tmp_path, n_trials=3, models=["fcn"], sampler="random", space={
        "model": {"fcn": {"width": 16, "depth": 1}},
        "algorithm": {"sgd": {"steps": 2500, "batch_size": 8,
                              "lr": {"low": 0.001, "high": 0.1, "log": True}}}})
    storage = POSTGRES
    flags = ["--storage", storage]

    def run(*extra: str, wait: bool = True) -> subprocess.Popen:
        proc = dmisearch("run", str(path), *flags, "--no-progress", *extra, cwd=tmp_path.parent)
        if wait:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
        return proc

    run()  # 3 trials
    interrupted = run("--n-trials", "6", wait=False)
    _wait_for_running(path, storage)
    interrupted.send_signal(signal.SIGINT)
    assert interrupted.wait(timeout=120) == 130
    run("--n-trials", "6")  # resume
    run("--n-trials", "8")  # extend
    procs = [run("--n-trials", "14", wait=False)] + [
        dmisearch("worker", str(path), *flags, "--n-trials", "14", "--no-progress",
                  cwd=tmp_path.parent) for _ in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    study = load(path, storage)
    runs = [t for t in trained(study) if t.state == TrialState.COMPLETE]
    assert len(runs) == 14 and len(set(configs(runs))) == 14, configs(runs)
    assert study.user_attrs["dmisearch_sessions"] == 7  # 5 runs and 2 workers, one each
    optuna.delete_study(study_name=study.study_name, storage=open_storage(storage))


def test_rerun_reproduces_a_stored_trial(tmp_path):
    storage = f"journal:{tmp_path / 'journal.log'}"
    path = study_file(tmp_path, n_trials=2)
    first = dmisearch("run", str(path), "--storage", storage)
    assert first.wait(timeout=300) == 0
    rerun = dmisearch("rerun", str(path), "--storage", storage, "--trial", "1")
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    assert "largest relative difference of the test errors: 0.00e+00" in out
    missing = dmisearch("rerun", str(path), "--storage", storage, "--trial", "7")
    out, _ = missing.communicate(timeout=300)
    assert missing.returncode == 1 and "has no trial 7 (it has 2)" in out


def test_passwords_never_reach_the_output(tmp_path):
    why = _reachable_postgres()
    if why:
        pytest.skip(why)
    # trust authentication ignores the password, so the run succeeds with one in the URL
    url = POSTGRES.replace("://postgres@", "://postgres:s3cr3t-pw@")
    path = study_file(tmp_path, n_trials=1)
    run = dmisearch("run", str(path), "--storage", url, "--workers", "2")
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert "s3cr3t-pw" not in out and "postgres:***@" in out
    study = load(path, url)
    optuna.delete_study(study_name=study.study_name, storage=open_storage(url))

"""Storage strings, real servers (PostgreSQL, Redis) and several local worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import optuna
import pytest
from conftest import configs, dump_toml, trained
from optuna.storages import InMemoryStorage, JournalStorage, RDBStorage
from optuna.trial import TrialState

from dmisearch.errors import DmisearchError
from dmisearch.runner import run_study
from dmisearch.storage import describe, mask, open_storage, with_driver
from dmisearch.study_file import build_spec

# The URLs as the README and docs/distributed.md write them: no "+driver", so the drivers
# of the extras (dmisearch[postgresql], [mysql]) are the ones used.
POSTGRES = os.environ.get("DMISEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("DMISEARCH_TEST_REDIS", "redis://127.0.0.1:6379/0")
MYSQL = os.environ.get("DMISEARCH_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")


def _reachable_rdb(url: str) -> str | None:
    try:
        import sqlalchemy as sa

        with sa.create_engine(with_driver(url)).connect() as conn:
            conn.execute(sa.text("select 1"))
        return None
    except Exception as exc:
        return f"no database server at {mask(url)}: {type(exc).__name__}"


def _reachable_postgres() -> str | None:
    return _reachable_rdb(POSTGRES)


def _reachable_redis() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
        return None
    except Exception as exc:
        return f"no Redis server at {REDIS}: {type(exc).__name__}"


def test_storage_strings(tmp_path):
    assert isinstance(open_storage("memory"), InMemoryStorage)
    assert isinstance(open_storage(f"journal:{tmp_path}/a/b.log"), JournalStorage)
    assert (tmp_path / "a").is_dir()
    assert isinstance(open_storage(str(tmp_path / "c.journal")), JournalStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path}/s.db"), RDBStorage)
    with pytest.raises(DmisearchError, match="not understood"):
        open_storage("ftp://nowhere")
    assert describe(f"journal:{tmp_path}/x.log") == f"journal file {tmp_path}/x.log"


def test_mask_hides_passwords_only():
    assert mask("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert mask("see redis://:pw@h:1/0 and sqlite:///a.db") == (
        "see redis://:***@h:1/0 and sqlite:///a.db")
    assert mask("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask("postgresql://u@h/db?sslmode=require&password=s3cr3t&x=1") == (
        "postgresql://u@h/db?sslmode=require&password=***&x=1")


def test_a_password_with_quotes_or_spaces_is_masked_once_its_storage_was_opened(tmp_path):
    url = "postgresql://bob:it's a \"secret\"@127.0.0.1:1/nodb"
    with pytest.raises(DmisearchError) as info:
        open_storage(url)
    text = str(info.value)
    assert "secret" not in text and "it's a" not in text and "bob:***@127.0.0.1:1" in text
    assert mask(f"an error quoting {url!r} and the bare it's a \"secret\"") == (
        "an error quoting 'postgresql://bob:***@127.0.0.1:1/nodb' and the bare ***")


def test_urls_without_a_driver_get_the_installed_one_or_the_pip_line(monkeypatch):
    from dmisearch import storage

    assert with_driver("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert with_driver("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert with_driver("mysql://root@h/test") == "mysql+pymysql://root@h/test"
    assert with_driver("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    monkeypatch.setattr(storage.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DmisearchError, match=r'pip install "dmisearch\[postgresql\]"'):
        open_storage("postgresql://u:pw@h/db")
    with pytest.raises(DmisearchError, match=r'pip install "dmisearch\[mysql\]"'):
        open_storage("mysql://root@h/test")


def test_a_driver_the_url_names_but_lacks_says_which_install():
    with pytest.raises(DmisearchError, match=r"driver its URL names.*dmisearch\[postgresql\]"):
        open_storage("postgresql+pg8000://u@127.0.0.1:1/db")  # a driver not installed
    with pytest.raises(DmisearchError, match=r"knows no driver 'postgresql\+nosuch'"):
        open_storage("postgresql+nosuch://u@127.0.0.1:1/db")


@pytest.mark.parametrize("url,words", [
    ("postgresql://postgres@127.0.0.1:1/test", "database server does not answer"),
    ("redis://127.0.0.1:1/0", "Redis server does not answer"),
])
def test_a_server_that_does_not_answer_is_not_a_missing_driver(url, words):
    with pytest.raises(DmisearchError, match=words) as info:
        open_storage(url)
    assert "driver" not in str(info.value) and "Is it running" in str(info.value)


def test_an_empty_storage_is_refused_not_replaced_by_the_default(tmp_path, tiny_doc, registry):
    from dmisearch.errors import StudyFileError

    with pytest.raises(DmisearchError, match="storage is empty"):
        open_storage("")
    with pytest.raises(StudyFileError, match="storage: is empty"):
        build_spec(tiny_doc, registry, storage="  ")
    tiny_doc["study"]["storage"] = ["postgresql://u:hunter2@h/db"]  # a list: never echoed
    with pytest.raises(StudyFileError, match="got a list") as info:
        build_spec(tiny_doc, registry)
    assert "hunter2" not in str(info.value)


def _run_on(url: str, tiny_doc, registry) -> None:
    tiny_doc["study"]["name"] = f"test-{uuid.uuid4().hex[:10]}"
    spec = build_spec(tiny_doc, registry, storage=url, n_trials=2)
    try:
        run_study(spec)
        study = optuna.load_study(study_name=spec.name, storage=open_storage(url))
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
        assert all(len(t.user_attrs["curve"]["test_error"]) == 4 for t in study.trials)
        run_study(build_spec(tiny_doc, registry, storage=url, n_trials=3))  # resumes
        study = optuna.load_study(study_name=spec.name, storage=open_storage(url))
        assert [t.state for t in trained(study)] == [TrialState.COMPLETE] * 3
        assert len(set(configs(trained(study)))) == 3  # nothing replayed
    finally:
        optuna.delete_study(study_name=spec.name, storage=open_storage(url))


def test_sqlite(tmp_path, tiny_doc, registry):
    _run_on(f"sqlite:///{tmp_path}/s.db", tiny_doc, registry)


def test_postgresql(tiny_doc, registry):
    why = _reachable_postgres()
    if why:
        pytest.skip(why)
    _run_on(POSTGRES, tiny_doc, registry)


def test_mysql(tiny_doc, registry):
    why = _reachable_rdb(MYSQL)
    if why:
        pytest.skip(why)
    _run_on(MYSQL, tiny_doc, registry)


def test_redis_journal(tiny_doc, registry):
    why = _reachable_redis()
    if why:
        pytest.skip(why)
    _run_on(REDIS, tiny_doc, registry)


def test_several_local_processes_share_the_embedded_journal(tmp_path, tiny_doc):
    tiny_doc["search"]["n_trials"] = 6
    study_file = tmp_path / "tiny.toml"
    study_file.write_text(dump_toml(tiny_doc))
    storage = f"journal:{tmp_path / 'shared.log'}"
    cmd = [sys.executable, "-m", "dmisearch", "run", str(study_file), "--storage", storage,
           "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err
    study = optuna.load_study(study_name="tiny", storage=open_storage(storage))
    states = [t.state for t in trained(study)]
    # the processes claim trials under a lock in the storage: exactly 6, none failed, and
    # no configuration trained twice (each process samples its own stream)
    assert states == [TrialState.COMPLETE] * 6
    assert len(set(configs(trained(study)))) == 6
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))
    assert all(len(t.user_attrs["curve"]["test_error"]) == 4 for t in trained(study))


def test_a_journal_lock_left_by_a_killed_process_is_broken_within_seconds(tmp_path, tiny_doc,
                                                                           registry):
    """A process SIGKILLed inside the journal file's lock leaves it behind: the next writer
    breaks it after JOURNAL_LOCK_BREAK seconds (not Optuna's 30), well inside any grace
    period a study file may set, so no live trial is taken for lost meanwhile."""
    import time

    from dmisearch.storage import JOURNAL_LOCK_BREAK

    journal = tmp_path / "j.log"
    spec = build_spec(tiny_doc, registry, storage=f"journal:{journal}", n_trials=1)
    run_study(spec)
    os.symlink(journal, f"{journal}.lock")  # what Optuna's symlink lock holds while writing
    start = time.monotonic()
    study = run_study(build_spec(tiny_doc, registry, storage=f"journal:{journal}",
                                 n_trials=2))
    took = time.monotonic() - start
    assert JOURNAL_LOCK_BREAK - 1 < took < 20, took
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert not os.path.lexists(f"{journal}.lock")


def test_postgresql_connections_the_server_drops_are_replaced(tiny_doc, registry):
    """The server terminates every connection of the run mid-study (a restart, a failover,
    an idle timeout): the run reconnects and completes."""
    why = _reachable_postgres()
    if why:
        pytest.skip(why)
    import sqlalchemy as sa

    tiny_doc["study"]["name"] = f"test-{uuid.uuid4().hex[:10]}"
    spec = build_spec(tiny_doc, registry, storage=POSTGRES, n_trials=3)
    admin = sa.create_engine(with_driver(POSTGRES))
    dropped = []

    def drop_everyone_else(trial) -> None:
        with admin.connect() as conn:
            dropped.append(conn.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar())

    try:
        study = run_study(spec, on_trial=drop_everyone_else)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
        assert dropped and dropped[0] >= 1  # the run's connections were really cut
    finally:
        admin.dispose()
        optuna.delete_study(study_name=spec.name, storage=open_storage(POSTGRES))


def test_the_default_journal_opens_with_optuna_and_names_the_metric(registry, tiny_doc,
                                                                    tmp_path):
    """What docs/analysis.md shows: the journal file read by Optuna's own storage class,
    the objective named for optuna-dashboard and the `optuna` CLI."""
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "journal.log"
    run_study(build_spec(tiny_doc, registry, storage=str(path), n_trials=2))
    study = optuna.load_study(study_name=tiny_doc["study"]["name"],
                              storage=JournalStorage(JournalFileBackend(str(path))))
    assert study.metric_names == ["aulc"]
    assert len(study.trials) == 2

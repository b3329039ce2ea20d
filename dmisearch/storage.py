"""Where studies live: one function turns a storage string into an Optuna storage.

============================================ ===============================================
storage string                               storage
============================================ ===============================================
(none)                                       the embedded default: ``$DMISEARCH_STORAGE``,
                                             else the journal file ``.dmisearch/journal.log``
                                             beside the study file
``journal:PATH`` or a path ending in         Optuna ``JournalStorage`` on a file (no server;
``.log`` / ``.journal`` / ``.jsonl``         safe for several local processes)
``redis://HOST:PORT/DB``                     ``JournalStorage`` on Redis
``sqlite:///f.db``, ``postgresql://...``,    Optuna ``RDBStorage`` (SQLAlchemy URL)
``mysql+pymysql://...``
``memory``                                   in-process only (lost on exit; for tests)
============================================ ===============================================

A study's storage follows its study file, not the folder a command runs in: the default
journal lives in ``.dmisearch/`` beside the study file, and a relative journal or SQLite path
written *in* a study file is read from the study file's folder (:func:`study_storage`), so
``dmisearch run path/to/study.toml`` from any folder reaches the same study. A path given on
the command line (``--storage``) or in Python (``storage=``) is relative to the current
folder, as paths typed there are.

The embedded default is Optuna's journal file backend rather than SQLite: several worker
processes on one machine append to it under a file lock, without "database is locked".
``optuna-dashboard PATH`` and ``optuna ... --storage PATH --storage-class JournalFileBackend``
read it directly.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

from dmisearch.errors import DmisearchError

ENV_STORAGE = "DMISEARCH_STORAGE"
DEFAULT_JOURNAL = ".dmisearch/journal.log"
_RDB = re.compile(r"^(sqlite|postgresql|postgres|mysql|mariadb|oracle|mssql)(\+\w+)?://")


def default_storage(study_file: str | Path | None = None) -> str:
    """``$DMISEARCH_STORAGE``, else the journal beside ``study_file`` (else in the current
    folder)."""
    env = os.environ.get(ENV_STORAGE)
    if env:
        return env
    if study_file is None:
        return f"journal:{DEFAULT_JOURNAL}"
    return f"journal:{Path(study_file).resolve().parent / DEFAULT_JOURNAL}"


def study_storage(written: str | None, study_file: str | Path | None) -> str:
    """The storage of a study file: what it says (relative paths read from its folder), or
    the default beside it."""
    if not written:
        return default_storage(study_file)
    if study_file is None:
        return written
    base = Path(study_file).resolve().parent
    path = _journal_path(written)
    if path is not None:
        p = Path(path).expanduser()
        return written if p.is_absolute() else f"journal:{base / p}"
    if written.startswith("sqlite:///") and not written.startswith("sqlite:////"):
        rel = written[len("sqlite:///"):]
        if rel and rel != ":memory:" and not Path(rel).expanduser().is_absolute():
            return f"sqlite:///{base / rel}"
    return written


def _journal_path(url: str) -> str | None:
    if url.startswith("journal:"):
        path = url[len("journal:"):]
        return path[2:] if path.startswith("///") else path
    if url.endswith((".log", ".journal", ".jsonl")) and "://" not in url:
        return url
    return None


def open_storage(url: str | None) -> BaseStorage:
    """The Optuna storage for ``url`` (see the module docstring); clear errors otherwise."""
    url = url or default_storage()
    if url == "memory":
        return InMemoryStorage()
    path = _journal_path(url)
    if path is not None:
        p = Path(path).expanduser()
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DmisearchError(
                f"cannot create the folder for journal {str(p)!r}: {exc}") from None
        return JournalStorage(JournalFileBackend(str(p)))
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            with warnings.catch_warnings():  # "experimental" since Optuna 3.1
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return JournalStorage(JournalRedisBackend(url))
        except ImportError:
            raise DmisearchError("a redis:// storage needs the 'redis' package: "
                                 "pip install redis") from None
    if _RDB.match(url):
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        try:
            return RDBStorage(url, engine_kwargs=kwargs)
        except ImportError as exc:
            raise DmisearchError(f"storage {mask(url)} needs a database driver: {exc}") from None
        except Exception as exc:  # sqlalchemy.exc.OperationalError and kin
            raise DmisearchError(
                f"cannot open storage {mask(url)}: {type(exc).__name__}: "
                f"{mask(str(exc).splitlines()[0])}. Is the server running and the URL right?"
            ) from None
    raise DmisearchError(
        f"storage {mask(url)!r} is not understood; use journal:PATH, a .log file path, "
        "redis://..., sqlite:///file.db, postgresql://user@host/db or mysql+pymysql://..."
    )


def mask(text: str) -> str:
    """``text`` with any password in a URL replaced by ``***`` (safe to print or log)."""

    def one(m: re.Match[str]) -> str:
        parts = urlsplit(m.group(0))
        if parts.password is None:
            return m.group(0)
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))

    return re.sub(r"[a-zA-Z][\w+.-]*://[^\s'\"]+", one, text)


def describe(url: str | None) -> str:
    """Where a study is stored, for people: absolute journal paths, masked URLs."""
    url = url or default_storage()
    path = _journal_path(url)
    if path is not None:
        return f"journal file {Path(path).expanduser().resolve()}"
    if url == "memory":
        return "memory (not persisted)"
    return mask(url)


def silence_optuna() -> None:
    """Optuna's per-trial INFO lines would duplicate dmisearch's own progress output."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)

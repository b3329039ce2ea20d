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
``sqlite:///f.db``, ``postgresql://...``,    Optuna ``RDBStorage`` (SQLAlchemy URL; a URL
``mysql://...``                              without ``+driver`` gets an installed driver:
                                             ``pip install "dmisearch[postgresql]"``,
                                             ``"dmisearch[mysql]"``)
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

import importlib.util
import os
import re
import warnings
from pathlib import Path
from urllib.parse import unquote

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import (
    JournalFileBackend,
    JournalFileSymlinkLock,
    JournalRedisBackend,
)
from sqlalchemy.exc import NoSuchModuleError

from dmisearch.errors import DmisearchError

ENV_STORAGE = "DMISEARCH_STORAGE"
DEFAULT_JOURNAL = ".dmisearch/journal.log"
_RDB = re.compile(r"^(sqlite|postgresql|postgres|mysql|mariadb|oracle|mssql)(\+\w+)?://")
#: Seconds after which a journal file's lock, held by a process that died inside it (e.g.
#: SIGKILL), is broken: a live holder keeps it for milliseconds (one append). Optuna's
#: default is 30 s, long enough to stall every worker and get live trials reaped.
JOURNAL_LOCK_BREAK = 5
#: Drivers tried, in order, for a database URL without ``+driver`` (SQLAlchemy name, module),
#: and the extra that installs the first.
DRIVERS = {
    "postgresql": (("psycopg", "psycopg"), ("psycopg2", "psycopg2")),
    "mysql": (("mysqldb", "MySQLdb"), ("pymysql", "pymysql")),
}
EXTRAS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql", "redis": "redis"}
#: Passwords of the storages this process opened: never printed (``mask``).
_SECRETS: set[str] = set()
MIN_SECRET = 4


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
    path = journal_path(written)
    if path is not None:
        p = Path(path).expanduser()
        return written if p.is_absolute() else f"journal:{base / p}"
    if written.startswith("sqlite:///") and not written.startswith("sqlite:////"):
        rel = written[len("sqlite:///"):]
        if rel and rel != ":memory:" and not Path(rel).expanduser().is_absolute():
            return f"sqlite:///{base / rel}"
    return written


def journal_path(url: str) -> str | None:
    if url.startswith("journal:"):
        path = url[len("journal:"):]
        return path[2:] if path.startswith("///") else path
    if url.endswith((".log", ".journal", ".jsonl")) and "://" not in url:
        return url
    return None


def open_storage(url: str | None) -> BaseStorage:
    """The Optuna storage for ``url`` (see the module docstring); clear errors otherwise:
    a missing driver names the ``pip install`` that brings it, a server that does not
    answer says so."""
    url = default_storage() if url is None else url
    if not url.strip():
        raise DmisearchError(
            "the storage is empty (an unset environment variable, as in --storage "
            "\"$DB_URL\"?): give a storage URL, or leave it out for the journal beside the "
            "study file")
    remember_secrets(url)
    if url == "memory":
        return InMemoryStorage()
    path = journal_path(url)
    if path is not None:
        p = Path(path).expanduser()
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DmisearchError(
                f"cannot create the folder for journal {str(p)!r}: {exc}") from None
        lock = JournalFileSymlinkLock(str(p), grace_period=JOURNAL_LOCK_BREAK)
        return JournalStorage(JournalFileBackend(str(p), lock_obj=lock))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _redis(url)
    if _RDB.match(url):
        return _rdb(with_driver(url))
    raise DmisearchError(
        f"storage {mask(url)!r} is not understood; use journal:PATH, a .log file path, "
        "redis://..., sqlite:///file.db, postgresql://user@host/db or mysql+pymysql://..."
    )


def with_driver(url: str) -> str:
    """A database URL with an installed driver: ``postgres://`` read as ``postgresql://``,
    and a URL without ``+driver`` given the first installed one (``DRIVERS``)."""
    scheme, sep, rest = url.partition("://")
    if scheme == "postgres":
        scheme = "postgresql"
    dialect, plus, driver = scheme.partition("+")
    family = "mysql" if dialect in ("mysql", "mariadb") else dialect
    if plus or family not in DRIVERS:
        return f"{scheme}{sep}{rest}"
    for name, module in DRIVERS[family]:
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}+{name}{sep}{rest}"
    raise DmisearchError(
        f"storage {mask(url)} needs a {family} database driver and none is installed: "
        f"pip install \"dmisearch[{EXTRAS[family]}]\"")


def _rdb(url: str) -> BaseStorage:
    kwargs: dict = {"pool_pre_ping": True}  # a connection the server dropped is replaced
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    try:
        return RDBStorage(url, engine_kwargs=kwargs)
    except NoSuchModuleError:
        raise DmisearchError(
            f"storage {mask(url)}: SQLAlchemy knows no driver '{url.split('://')[0]}'; drop "
            "the '+driver' part to use the installed one") from None
    except ImportError as exc:
        dialect = url.split("://")[0].split("+")[0]
        extra = EXTRAS.get(dialect)
        how = f"pip install \"dmisearch[{extra}]\"" if extra else "install it"
        raise DmisearchError(
            f"storage {mask(url)} needs the database driver its URL names, which is not "
            f"installed ({exc}): {how} and drop the '+driver' part of the URL, or install "
            "that driver") from None
    except Exception as exc:  # sqlalchemy.exc.OperationalError and kin
        raise DmisearchError(
            f"cannot open storage {mask(url)}: the database server does not answer or "
            f"refuses the connection ({mask(_first_line(exc))}). Is it running, and are the "
            "host, port, database and user in the URL right?") from None


def _redis(url: str) -> BaseStorage:
    try:
        import redis
    except ImportError:
        raise DmisearchError("a redis:// storage needs the redis client: pip install "
                             "\"dmisearch[redis]\"") from None
    try:
        redis.Redis.from_url(url, socket_connect_timeout=10).ping()
    except Exception as exc:  # redis.exceptions.ConnectionError and kin
        raise DmisearchError(
            f"cannot open storage {mask(url)}: the Redis server does not answer "
            f"({mask(_first_line(exc))}). Is it running, and is the URL right?") from None
    with warnings.catch_warnings():  # "experimental" since Optuna 3.1
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return JournalStorage(JournalRedisBackend(url))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def remember_secrets(url: str) -> None:
    """Note the password of a storage URL (in its user part or a ``password=`` query), so
    that ``mask`` hides it wherever it appears, quoted or not."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return
    authority = rest.rsplit("@", 1)[0] if "@" in rest else ""
    found = [authority.split(":", 1)[1]] if ":" in authority else []
    found += [m.group(2) for m in _PASSWORD_QUERY.finditer(rest)]
    for secret in found:  # short ones only inside URLs: masking every "ab" garbles text
        forms = {secret, unquote(secret)}
        forms |= {repr(f)[1:-1] for f in forms}  # as a quoted repr shows it
        _SECRETS.update(x for x in forms if len(x) >= MIN_SECRET)


_PASSWORD_QUERY = re.compile(r"([?&](?:password|passwd|pwd)=)([^&#\s]*)", re.I)


def mask(text: str) -> str:
    """``text`` with every password of a URL (user part or ``password=`` query) and of
    every storage this process opened replaced by ``***`` (safe to print or log)."""

    def one(m: re.Match[str]) -> str:
        scheme, sep, rest = m.group(0).partition("://")
        if "@" in rest:
            authority, at, tail = rest.rpartition("@")
            if ":" in authority:
                rest = f"{authority.split(':', 1)[0]}:***{at}{tail}"
        return scheme + sep + _PASSWORD_QUERY.sub(r"\1***", rest)

    text = re.sub(r"[a-zA-Z][\w+.-]*://[^\s'\"]+", one, text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def describe(url: str | None) -> str:
    """Where a study is stored, for people: absolute journal paths, masked URLs."""
    url = url or default_storage()
    path = journal_path(url)
    if path is not None:
        return f"journal file {Path(path).expanduser().resolve()}"
    if url == "memory":
        return "memory (not persisted)"
    return mask(url)


def silence_optuna() -> None:
    """Optuna's per-trial INFO lines would duplicate dmisearch's own progress output."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)

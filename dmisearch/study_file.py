"""Study files: TOML in, a validated :class:`StudySpec` out.

This is the one place where strings become objects: plugin names become component classes,
sampler and pruner names become Optuna objects, ranges become distributions. Everything is
checked before the first trial runs and every problem found is reported at once, each
naming its key, the value and the fix. The format is documented in docs/study-files.md.

The work is shared out: :mod:`dmisearch.schema` declares every section and key (type,
default, allowed values), :mod:`dmisearch.study_curve` builds ``[data]``, ``[curve]`` and
``[objective]``, :mod:`dmisearch.study_search` the searched pairs and spaces,
:mod:`dmisearch.study_pluggables` the sampler, pruner and ``[confirm]``, and
:mod:`dmisearch.spec` holds the result. This module reads the file, builds ``[study]`` and
the budget, and puts the pieces together.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dmisearch.errors import DmisearchError, StudyFileError
from dmisearch.factory import Problems
from dmisearch.registry import Registry
from dmisearch.schema import DTYPES, ENGINES, SEARCH, SECTIONS, STUDY, tables
from dmisearch.spec import Candidate, Confirm, Grid, Pluggable, StudySpec
from dmisearch.storage import JOURNAL_LOCK_BREAK, journal_path, study_storage
from dmisearch.study_curve import build_data_section, build_grid, build_objective
from dmisearch.study_pluggables import build_confirm, build_sampling
from dmisearch.study_prior import build_prior
from dmisearch.study_search import build_search

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DTYPES", "ENGINES", "SECTIONS", "Candidate", "Confirm", "Grid", "Pluggable",
           "StudySpec", "build_spec", "load_study", "plugin_files", "read_toml"]


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DmisearchError(f"study file {str(p)!r} does not exist") from None
    except OSError as exc:
        raise DmisearchError(f"cannot read study file {str(p)!r}: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyFileError(str(p), [f"not valid TOML: {exc}"]) from None


def plugin_files(doc: Mapping[str, Any], source: str | Path) -> list[Path]:
    """The local plugin files a study document names (``[study] plugins``), resolved
    against the study file's folder; a clear error if one is missing or not a .py file."""
    study = doc.get("study", {})
    raw = study.get("plugins", []) if isinstance(study, Mapping) else []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise StudyFileError(str(source), [f"study.plugins: {STUDY['plugins'].wrong(raw)}"])
    base = Path(source).parent
    out, problems = [], []
    for item in raw:
        path = Path(item).expanduser()
        path = path if path.is_absolute() else base / path
        if path.suffix != ".py":
            problems.append(f"study.plugins: {item!r} is not a Python file (.py)")
        elif not path.is_file():
            problems.append(f"study.plugins: {item!r} does not exist (looked for {path}; "
                            "relative paths start at the study file's folder)")
        else:
            out.append(path)
    if problems:
        raise StudyFileError(str(source), problems)
    return out


def load_study(
    path: str | Path,
    registry: Registry | None = None,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    device: str | None = None,
    seed: int | None = None,
) -> StudySpec:
    """Read, validate and build the study in ``path``; keyword arguments override the file.

    Without ``registry``, the installed plugins plus the file's ``[study] plugins`` are
    loaded.
    """
    doc = read_toml(path)
    if registry is None:
        from dmisearch.plugins import load_registry

        registry = load_registry(files=plugin_files(doc, path))
    return build_spec(doc, registry, source=str(path), default_name=Path(path).stem,
                      n_trials=n_trials, timeout=timeout, storage=storage, device=device,
                      seed=seed)


def build_spec(
    doc: Mapping[str, Any],
    registry: Registry,
    *,
    source: str = "<study>",
    default_name: str = "study",
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    device: str | None = None,
    seed: int | None = None,
) -> StudySpec:
    """Validate a parsed study document (see :func:`load_study`)."""
    pb = Problems()
    sec = tables(doc, pb)
    try:
        plugin_files(doc, source)
    except StudyFileError as exc:
        for problem in exc.problems:
            pb.add("", problem)
    study = _study_settings(sec["study"], source, default_name, storage, device, pb)
    data, data_entries, info = build_data_section(sec["data"], registry, pb)
    grid = build_grid(sec["curve"], info, pb)
    objective, metric = build_objective(sec["objective"], info, grid, pb)
    se = sec["search"]
    budget = _budget(se, n_trials, timeout, seed, pb)
    models, algorithms, pairs, excluded = build_search(se, registry, info, pb)
    sampler, pruner, prune_after = build_sampling(
        se, models, algorithms, pairs, grid, budget["n_trials"], budget["timeout"],
        budget["seed"], pb)
    confirm = build_confirm(sec["confirm"], grid, budget["n_trials"], sampler, pb)
    prior = build_prior(se, models, sampler, info, pb)
    if pb.items:
        raise StudyFileError(source, pb.items)
    assert data is not None and info is not None and grid is not None and objective
    return StudySpec(
        source=source, **study, data=data, data_entries=data_entries, info=info, grid=grid,
        objective=objective, metric=metric, models=models, algorithms=algorithms, pairs=pairs,
        excluded=excluded, **budget, sampler=sampler, pruner=pruner, prune_after=prune_after,
        confirm=confirm, prior=prior,
    )


def _study_settings(st: Mapping[str, Any], source: str, default_name: str,
                    storage: str | None, device: str | None, pb: Problems) -> dict[str, Any]:
    """``[study]`` (``storage`` and ``device`` given on the command line win), as the
    :class:`StudySpec` fields of the same names."""
    name = STUDY.read(st, "name", pb)
    name = default_name if name is None else name
    if not name.strip():
        pb.add("study.name", "is empty: name the study (the file name is the default), or "
                             "remove the key")
    if storage is None:  # the file's storage is read from the file's folder
        written = STUDY.read(st, "storage", pb)
        storage = study_storage(written, source if Path(source).is_file() else None)
    if not storage.strip():
        pb.add("storage", "is empty (an unset environment variable, as in --storage "
                          "\"$DB_URL\"?): give a storage URL, or leave it out for the journal "
                          "beside the study file")
    out = {"name": name, "storage": storage,
           "device": _check_device(STUDY.read(st, "device", pb, given=device), pb)}
    for key in ("dtype", "engine", "tf32", "cuda_graphs"):
        out[key] = STUDY.read(st, key, pb)
    heartbeat = STUDY.read(st, "heartbeat_interval", pb)
    grace = STUDY.read(st, "grace_period", pb)
    _check_liveness(heartbeat, grace, storage, pb)
    return {**out, "heartbeat_interval": float(heartbeat), "grace_period": float(grace)}


def _budget(se: Mapping[str, Any], n_trials: int | None, timeout: float | None,
            seed: int | None, pb: Problems) -> dict[str, Any]:
    """``[search]``'s budget and batching (``n_trials``, ``timeout`` and ``seed`` given on
    the command line win), as the :class:`StudySpec` fields of the same names."""
    n_trials = SEARCH.read(se, "n_trials", pb, given=n_trials, check=False)
    timeout = SEARCH.read(se, "timeout", pb, given=timeout, check=False)
    seed = SEARCH.read(se, "seed", pb, given=seed, check=False)
    for key, value in (("n_trials", n_trials), ("timeout", timeout), ("seed", seed)):
        SEARCH.check(key, value, pb)
    trial_timeout = SEARCH.read(se, "trial_timeout", pb)
    per_batch = SEARCH.get(se, "trials_per_batch")
    if per_batch == "auto":
        per_batch = None
    elif isinstance(per_batch, bool) or not isinstance(per_batch, int) or per_batch < 1:
        pb.add("search.trials_per_batch", SEARCH["trials_per_batch"].wrong(per_batch))
        per_batch = None
    return {"n_trials": n_trials, "timeout": None if timeout is None else float(timeout),
            "seed": seed, "trials_per_batch": per_batch,
            "trial_timeout": None if trial_timeout is None else float(trial_timeout)}


def _check_liveness(heartbeat: float, grace: float, storage: str, pb: Problems) -> None:
    """Heartbeats and the grace period after which a silent trial counts as lost: finite,
    and long enough that a live worker is never taken for dead, even while it waits for
    a journal file's lock that a killed process left behind (broken after
    ``JOURNAL_LOCK_BREAK`` seconds)."""
    if not (heartbeat > 0 and math.isfinite(heartbeat)):
        pb.add("study.heartbeat_interval", f"must be a finite number of seconds > 0, got "
                                           f"{heartbeat}")
        return
    least = 3 * heartbeat
    why = "3 heartbeat intervals"
    if journal_path(storage) is not None:
        least = max(least, JOURNAL_LOCK_BREAK + 2 * heartbeat)
        why = (f"the journal lock's break time ({JOURNAL_LOCK_BREAK} s, after a process died "
               "holding it) plus 2 heartbeat intervals")
    if not math.isfinite(grace):
        pb.add("study.grace_period", f"must be a finite number of seconds, got {grace}: "
                                     "trials of a worker that died would never be retried")
    elif not grace >= least:
        pb.add("study.grace_period", f"must be at least {why} ({least:g} s), got {grace:g}: "
                                     "a live worker would be taken for dead")


def _check_device(device: str, pb: Problems) -> str:
    import torch

    if device in ("auto", "cpu"):
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            pb.add("study.device", f"{device!r} asked for but no CUDA device is visible "
                                   "(torch.cuda.is_available() is False); use 'cpu' or 'auto'")
            return device
        if device.startswith("cuda:"):
            idx = device.split(":", 1)[1]
            if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                pb.add("study.device", f"{device!r}: visible CUDA devices are 0.."
                                       f"{torch.cuda.device_count() - 1}")
        return device
    pb.add("study.device", f"must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device

"""What a study searches (``[search]``): the candidate models and algorithms, the pairs that
can run on the data, and each candidate's search space with its overrides
(``[search.space.model.<name>]``, ...), every corner of which is built and checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dmisearch.components import Algorithm, Architecture, DataInfo, pair_problem
from dmisearch.errors import did_you_mean
from dmisearch.factory import Problems, lookup
from dmisearch.registry import Entry, Registry
from dmisearch.schema import SEARCH
from dmisearch.space import Dim, corners, distribution_values, parse_override
from dmisearch.spec import Candidate

Pairs = tuple[tuple[str, str], ...]
Excluded = tuple[tuple[str, str, str], ...]


def build_search(
    se: Mapping[str, Any], registry: Registry, info: DataInfo | None, pb: Problems
) -> tuple[dict[str, Candidate], dict[str, Candidate], Pairs, Excluded]:
    """The searched models and algorithms (with their spaces), the pairs that run on the
    data and the ones skipped, with why."""
    if "pairs" in se and ("models" in se or "algorithms" in se):
        pb.add("search.pairs", "give either pairs or models/algorithms, not both")
    before = len(pb.items)
    models, algos, wanted = _wanted(se, registry, pb)
    pairs, excluded = _runnable(wanted, models, algos, info, pb)
    used_m = {m for m, _ in pairs}
    used_a = {a for _, a in pairs}
    names_ok = len(pb.items) == before  # else "not searched" would repeat a lookup error

    space = SEARCH.read(se, "space", pb)
    for key in space:
        if key not in ("model", "algorithm"):
            pb.add(f"search.space.{key}", "unknown; use [search.space.model.<name>] or "
                                          "[search.space.algorithm.<name>]")
    m_cands = _spaces(space.get("model", {}), "model", models, used_m, info, pb, names_ok)
    a_cands = _spaces(space.get("algorithm", {}), "algorithm", algos, used_a, info, pb,
                      names_ok)
    if len(pb.items) == before:
        for m, a in pairs:
            _check_pair(m_cands[m], a_cands[a], pb)
    return m_cands, a_cands, pairs, excluded


def _wanted(se: Mapping[str, Any], registry: Registry, pb: Problems
            ) -> tuple[dict[str, Entry], dict[str, Entry], list[tuple[str, str, str]]]:
    """The models, the algorithms and the (model, algorithm, key) pairs asked for: the
    explicit ``pairs`` (key: where each was listed), or ``models`` x ``algorithms`` (key
    '')."""
    if "pairs" not in se:
        models = _candidates(se, "models", "architecture", registry, pb)
        algos = _candidates(se, "algorithms", "algorithm", registry, pb)
        return models, algos, [(m, a, "") for m in models for a in algos]
    models: dict[str, Entry] = {}
    algos: dict[str, Entry] = {}
    wanted: list[tuple[str, str, str]] = []
    raw = se["pairs"]
    if not isinstance(raw, list) or not raw:
        pb.add("search.pairs", SEARCH["pairs"].wrong(raw))
        raw = []
    for i, pair in enumerate(raw):
        key = f"search.pairs[{i}]"
        if not (isinstance(pair, list) and len(pair) == 2):
            pb.add(key, f"must be [model, algorithm], got {pair!r}")
            continue
        m = lookup(registry, "architecture", pair[0], key, pb)
        a = lookup(registry, "algorithm", pair[1], key, pb)
        if m and a:
            models[m.name], algos[a.name] = m, a
            wanted.append((m.name, a.name, key))
    return models, algos, wanted


def _candidates(
    table: Mapping[str, Any], key: str, kind: str, registry: Registry, pb: Problems
) -> dict[str, Entry]:
    if key not in table:
        return {n: registry.entry(kind, n) for n in registry.names(kind)}
    names = table[key]
    if not isinstance(names, list):
        pb.add(f"search.{key}", SEARCH[key].wrong(names))
        return {}
    if not names:
        pb.add(f"search.{key}", f"empty search: list at least one {kind} (known: "
                                f"{', '.join(registry.names(kind))})")
    out: dict[str, Entry] = {}
    for i, n in enumerate(names):
        entry = lookup(registry, kind, n, f"search.{key}[{i}]", pb)
        if entry is not None:
            if entry.name in out:
                pb.add(f"search.{key}", f"lists '{entry.name}' twice")
            out[entry.name] = entry
    return out


def _runnable(wanted: list[tuple[str, str, str]], models: Mapping[str, Entry],
              algos: Mapping[str, Entry], info: DataInfo | None, pb: Problems
              ) -> tuple[Pairs, Excluded]:
    """The wanted pairs that can run on the data, and the skipped ones with why; a pair
    listed explicitly that cannot run is an error, and so is a product none of whose pairs
    can."""
    pairs: list[tuple[str, str]] = []
    excluded: list[tuple[str, str, str]] = []
    if info is None:
        return (), ()
    for m, a, key in wanted:
        why = pair_problem(models[m].cls, algos[a].cls, info)  # type: ignore[arg-type]
        if why is None:
            pairs.append((m, a))
        elif key:  # the user asked for exactly this pair
            pb.add(key, f"impossible pair [{m!r}, {a!r}]: {why}")
        else:
            excluded.append((m, a, why))
    if wanted and not pairs and not any(k for *_, k in wanted):
        reasons = "; ".join(f"{m}/{a}: {w}" for m, a, w in excluded)
        pb.add("search", f"empty search: no (model, algorithm) pair can run on this data "
                         f"({reasons})")
    return tuple(pairs), tuple(excluded)


def _check_pair(model: Candidate, algo: Candidate, pb: Problems) -> None:
    """Every model the space can reach must suit the algorithm (e.g. have a kernel)."""
    algo_obj = algo.cls(**next(corners(algo.space)))
    assert isinstance(algo_obj, Algorithm)
    for params in corners(model.space):
        why = algo_obj.model_problem(model.cls(**params))  # type: ignore[arg-type]
        if why:
            changed = ", ".join(f"{k}={v!r}" for k, v in params.items()
                                if not _is_first(model.space, k, v))
            pb.add(f"search.space.model.{model.entry.name}",
                   f"{why}{f' (at {changed})' if changed else ''}, which algorithm "
                   f"'{algo.entry.name}' needs; restrict the space or drop the pair")
            return


def _spaces(
    overrides: Any, prefix: str, entries: Mapping[str, Entry], used: set[str],
    info: DataInfo | None, pb: Problems, names_ok: bool,
) -> dict[str, Candidate]:
    """Each used component's space: its default with the file's overrides."""
    if not isinstance(overrides, dict):
        pb.add(f"search.space.{prefix}", f"must be a table of {prefix} names, got {overrides!r}")
        overrides = {}
    for name in overrides:
        if name not in entries and names_ok:
            pb.add(f"search.space.{prefix}.{name}",
                   f"'{name}' is not searched{did_you_mean(name, entries)}; searched: "
                   f"{', '.join(entries) or '(none)'}")
    out: dict[str, Candidate] = {}
    for name, entry in entries.items():
        if name not in used:
            continue
        table = overrides.get(name, {})
        key = f"search.space.{prefix}.{name}"
        if not isinstance(table, dict):
            pb.add(key, f"must be a table of hyperparameters, got {table!r}")
            continue
        space: dict[str, Dim] = dict(entry.cls.space)
        ok = True
        for param, value in table.items():
            try:
                space[param] = parse_override(entry.cls, param, value)
            except ValueError as exc:
                pb.add(f"{key}.{param}", str(exc))
                ok = False
        if ok:
            _check_corners(entry, space, key, info, pb)
        out[name] = Candidate(entry, space)
    return out


def _check_corners(entry: Entry, space: Mapping[str, Dim], key: str, info: DataInfo | None,
                   pb: Problems) -> None:
    """Build the component at every extreme of its space; report what fails."""
    seen: set[str] = set()
    for params in corners(space):
        try:
            obj = entry.cls(**params)
            obj.check()
            why = obj.check_input(info.input_shape) if (
                info is not None and isinstance(obj, Architecture)) else None
            if why:
                raise ValueError(why)
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            if msg not in seen:
                seen.add(msg)
                changed = ", ".join(f"{k}={v!r}" for k, v in params.items()
                                    if k in space and not _is_first(space, k, v))
                at = f" (at {changed})" if changed else ""
                pb.add(key, f"{entry.name}: {msg}{at}; narrow the range so every value is valid")


def _is_first(space: Mapping[str, Dim], key: str, value: Any) -> bool:
    return distribution_values(space[key])[0] == value

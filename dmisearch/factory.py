"""The one component factory: names and parameters in, checked component objects out.

Study files, ``dmisearch probe``, ``dmisearch rerun`` and the conformance kit all build
components here. What differs between them is only what happens to a problem, and that is
the :class:`Problems` sink's choice: a study file collects every problem and reports them
all at once; the probe raises the first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from dmisearch.components import Component, DataGenerator, DataInfo, Transform, augmented
from dmisearch.data import Composed, check_split
from dmisearch.errors import DmisearchError, did_you_mean
from dmisearch.registry import Entry, Registry
from dmisearch.space import coerce


class Problems:
    """Where problems go: collected in :attr:`items` (``raising=False``, one report of
    everything wrong) or raised at once as a :class:`DmisearchError` (``raising=True``)."""

    def __init__(self, *, raising: bool = False) -> None:
        self.raising = raising
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        text = f"{key}: {message}" if key else message
        if self.raising:
            raise DmisearchError(text)
        self.items.append(text)

    def __len__(self) -> int:
        return len(self.items)


def lookup(registry: Registry, kind: str, name: Any, key: str, pb: Problems) -> Entry | None:
    """The registry entry of ``kind`` called ``name``; ``algorithm+transform`` names build
    the augmented algorithm (its training sets' orbits under the transform)."""
    if not isinstance(name, str):
        pb.add(key, f"must be a {kind} name (a string), got {name!r}")
        return None
    if kind == "algorithm" and "+" in name:
        return _augmented(registry, name, key, pb)
    try:
        return registry.entry(kind, name)
    except DmisearchError as exc:
        pb.add(key, str(exc))
        return None


def _augmented(registry: Registry, name: str, key: str, pb: Problems) -> Entry | None:
    base_name, _, t_name = name.partition("+")
    base = lookup(registry, "algorithm", base_name, key, pb)
    t_entry = lookup(registry, "transform", t_name, key, pb)
    if base is None or t_entry is None:
        return None
    transform = t_entry.cls()
    why = base.cls.augmentation_problem(transform)  # type: ignore[attr-defined]
    if why:
        pb.add(key, f"'{name}': {why}")
        return None
    return dataclasses.replace(base, name=name, cls=augmented(base.cls, transform))


def instantiate(cls: type[Component], params: Mapping[str, Any], key: str, pb: Problems,
                fallbacks: Mapping[str, Any] | None = None) -> Component | None:
    """``cls(**params)``, each parameter checked against the class's own and coerced to its
    default's type, then ``check()``-ed. ``fallbacks``: values used where ``cls`` has the
    parameter, is not given it, and accepts the value (the probe's small defaults)."""
    defaults = cls.param_defaults()
    kwargs: dict[str, Any] = {}
    ok = True
    for p, v in params.items():
        if p not in defaults:
            pb.add(f"{key}.{p}", f"'{cls.name}' has no parameter '{p}'"
                                 f"{did_you_mean(p, defaults)}; its parameters are "
                                 f"{', '.join(defaults) or '(none)'}")
            ok = False
            continue
        try:
            kwargs[p] = coerce(p, defaults[p], v)
        except ValueError as exc:
            pb.add(f"{key}.{p}", str(exc))
            ok = False
    if not ok:
        return None
    for p, v in (fallbacks or {}).items():
        if p in defaults and p not in kwargs:
            try:
                cls(**kwargs, **{p: v}).check()
            except (ValueError, TypeError):
                continue
            kwargs[p] = v
    try:
        obj = cls(**kwargs)
        obj.check()
    except (ValueError, TypeError) as exc:
        pb.add(key, f"{cls.name}: {exc}")
        return None
    return obj


def build(registry: Registry, kind: str, name: Any, params: Mapping[str, Any], key: str,
          pb: Problems, fallbacks: Mapping[str, Any] | None = None) -> Component | None:
    """:func:`lookup` then :func:`instantiate`."""
    entry = lookup(registry, kind, name, key, pb)
    return None if entry is None else instantiate(entry.cls, params, key, pb, fallbacks)


@dataclasses.dataclass(frozen=True)
class BuiltData:
    """A data generator with its transforms, the registry entries behind them, and what the
    generator describes (None where something was wrong)."""

    data: Composed | None
    entries: tuple[Entry, ...]
    info: DataInfo | None


def build_data(registry: Registry, name: Any, params: Mapping[str, Any],
               transforms: Sequence[tuple[Any, Mapping[str, Any]]], pb: Problems,
               key: str = "data") -> BuiltData:
    """The generator ``name`` with ``params``, composed with ``transforms`` (``(name,
    params)`` pairs; a None name is skipped), checked: the generator describes itself,
    every transform takes its input shape, and a tiny draw passes the split checks, so
    that a broken generator fails here rather than at trial 1."""
    before = len(pb)
    entry = lookup(registry, "data", name, f"{key}.name", pb)
    base = instantiate(entry.cls, params, key, pb) if entry else None
    built: list[Transform] = []
    entries: list[Entry] = [entry] if entry else []
    for i, (t_name, t_params) in enumerate(transforms):
        if t_name is None:  # reported by the caller; kept so later indices stay right
            continue
        t_key = f"{key}.transforms[{i}]"
        t_entry = lookup(registry, "transform", t_name, f"{t_key}.name", pb)
        if t_entry is None:
            continue
        t = instantiate(t_entry.cls, t_params, t_key, pb)
        if t is not None:
            built.append(t)  # type: ignore[arg-type]
            entries.append(t_entry)
    if base is None:
        return BuiltData(None, (), None)
    assert isinstance(base, DataGenerator)
    try:
        info = base.describe()
    except Exception as exc:
        pb.add(key, f"{base.name}.describe() failed: {type(exc).__name__}: {exc}")
        return BuiltData(None, (), None)
    for i, t in enumerate(built):
        why = t.check_input(info.input_shape)
        if why:
            pb.add(f"{key}.transforms[{i}]", f"{t.name}: {why}")
    data = Composed(base=base, transforms=tuple(built))
    if len(pb) > before:  # the draw below would only repeat what is reported
        return BuiltData(data, tuple(entries), info)
    try:
        n = 2 if info.n_available is None else min(2, info.n_available // 2)
        why = check_split(data.sample(n, n, 0), info, n, n)
    except Exception as exc:
        why = f"sample() failed: {type(exc).__name__}: {exc}"
    if why:
        pb.add(key, f"{data.label}: {why}")
    return BuiltData(data, tuple(entries), info)

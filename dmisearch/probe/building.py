"""Probe components from names: ``-p`` overrides (:func:`parse_overrides`), components built
through :mod:`dmisearch.factory` with the probe's defaults (:func:`make_model`,
:func:`make_algorithm`, :func:`make_group`, :func:`make_data`; the defaults are in
:mod:`dmisearch.probe.settings`), the data a model can take (:func:`data_for`), and a
component's label (:func:`label`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from dmisearch import factory
from dmisearch.components import (
    Algorithm,
    Architecture,
    DataGenerator,
    Transform,
    pair_problem,
)
from dmisearch.errors import DmisearchError
from dmisearch.probe.settings import DEFAULT_DATA, FALLBACK_SHAPES, PROBE_DEFAULTS, show_param

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def label(component: Any) -> str:
    """``name(param=value, ...)`` with the parameters that differ from the defaults."""
    if hasattr(component, "label") and not isinstance(component, type):  # composed data
        base = getattr(component, "base", None)
        if base is not None:
            rest = component.label[len(base.name):]
            return label(base) + rest
    defaults = type(component).param_defaults()
    changed = [f"{k}={show_param(v)}" for k, v in component.get_params().items()
               if k in defaults and v != defaults[k] and show_param(v) != show_param(defaults[k])]
    return f"{component.name}({', '.join(changed)})" if changed else component.name


def parse_overrides(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``-p model.width=64`` -> ``{"model": {"width": 64}}``; values are TOML values
    (``64``, ``0.1``, ``true``, ``[1, 8]``, ``"relu"``), or else plain strings."""
    out: dict[str, dict[str, Any]] = {k: {} for k in ("model", "algorithm", "data", "group")}
    for item in items:
        key, eq, raw = item.partition("=")
        kind, dot, param = key.strip().partition(".")
        if not eq or not dot or not param or kind not in out:
            raise DmisearchError(
                f"-p {item!r}: expected KIND.PARAM=VALUE with KIND one of model, algorithm, "
                f"data, group (e.g. -p model.width=64)")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[kind][param] = value
    return out


def instantiate(cls: type, params: Mapping[str, Any], kind: str,
                fallbacks: Mapping[str, Any] | None = None) -> Any:
    """``cls(**params)`` checked (the first problem raised); ``fallbacks`` (the probe's
    defaults) added where ``cls`` has the parameter, is not given it, and accepts it."""
    return factory.instantiate(cls, params, kind, factory.Problems(raising=True), fallbacks)


def make_model(registry: Any, name: str, params: Mapping[str, Any] = {}  # noqa: B006
               ) -> Architecture:
    return factory.build(registry, "architecture", name, params, "architecture",
                         factory.Problems(raising=True), PROBE_DEFAULTS["model"])


def make_algorithm(registry: Any, name: str, params: Mapping[str, Any] = {}  # noqa: B006
                   ) -> Algorithm:
    """An algorithm by name; ``sgd+shift`` is ``sgd`` augmented by ``shift``."""
    return factory.build(registry, "algorithm", name, params, "algorithm",
                         factory.Problems(raising=True), PROBE_DEFAULTS["algorithm"])


def make_group(registry: Any, name: str, params: Mapping[str, Any] = {}  # noqa: B006
               ) -> Transform:
    return factory.build(registry, "transform", name, params, "transform",
                         factory.Problems(raising=True))


def make_data(registry: Any, spec: str | None, params: Mapping[str, Any] = {}  # noqa: B006
              ) -> DataGenerator:
    """``NAME[+TRANSFORM...]`` (e.g. ``digits+permute``); None: :data:`DEFAULT_DATA`.

    ``params`` go to the generator; the probe's defaults apply only to the default data.
    """
    if spec is None:
        name, base_params = DEFAULT_DATA[0], {**DEFAULT_DATA[1], **params}
        parts: list[str] = []
    else:
        name, *parts = [p.strip() for p in spec.split("+")]
        base_params = dict(params)
    built = factory.build_data(registry, name, base_params, [(t, {}) for t in parts],
                               factory.Problems(raising=True))
    assert built.data is not None  # a raising sink raised otherwise
    return built.data if parts else built.data.base


def data_for(registry: Any, model: Architecture, algo: Algorithm | None = None
             ) -> DataGenerator | None:
    """The default data, or the first fallback shape (then ``digits``) that the model (and
    algorithm) can take: for plugins that do not take 1-D inputs or regression."""
    candidates: list[DataGenerator] = [
        make_data(registry, None, {"shape": shape} if shape != DEFAULT_DATA[1]["shape"] else {})
        for shape in FALLBACK_SHAPES]
    with contextlib.suppress(DmisearchError):
        candidates.append(make_data(registry, "digits"))
    for data in candidates:
        info = data.describe()
        if model.check_input(tuple(info.input_shape)) is not None:
            continue
        if algo is not None and pair_problem(type(model), type(algo), info) is not None:
            continue
        return data
    return None

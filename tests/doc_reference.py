"""What docs/plugins.md must document: every hook and every public member of the base
classes a plugin author uses, with its signature rendered as the docs show it."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import dmisearch
from dmisearch import components, hookspecs, training

#: Classes of the plugin authors' reference, in the order the docs present them.
CLASSES: list[type] = [
    components.Component, components.DataGenerator, components.Transform,
    components.Architecture, components.Algorithm, training.MinibatchAlgorithm,
    components.DataInfo, components.Split, components.Job, components.Predictions,
    components.RunContext, components.Run,
]
#: Attributes that exist for the implementation, not for plugin authors.
SKIP = {"__init__", "__post_init__"}


def _params(fn: Any) -> str:
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", "cls"):
            continue
        text = p.name
        if p.annotation is not p.empty:
            text += f": {_ann(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        out.append(("*" if p.kind is p.VAR_POSITIONAL else "") + text)
    return ", ".join(out)


def _ann(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else repr(annotation)


def _returns(fn: Any) -> str:
    ret = inspect.signature(fn).return_annotation
    return "" if ret is inspect.Signature.empty else f" -> {ret}"


def hook_entries() -> list[str]:
    """``register_architectures(register: Register) -> None`` for every hook."""
    return [f"{name}({_params(getattr(hookspecs, name))}){_returns(getattr(hookspecs, name))}"
            for name in hookspecs.REGISTER_HOOKS.values()]


def member_entries(cls: type) -> list[str]:
    """``Class.method(args) -> ret`` / ``Class.attribute: annotation`` for each public
    member defined on ``cls`` itself (overrides of a documented base's members excluded)."""
    inherited = {n for base in cls.__mro__[1:] if base in CLASSES for n in vars(base)}
    inherited |= {n for base in cls.__mro__[1:] if base in CLASSES
                  for n in vars(base).get("__annotations__", {})}
    out = []
    annotations = cls.__dict__.get("__annotations__", {})
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    for name, ann in annotations.items():
        if not name.startswith("_") and name not in inherited:
            out.append(f"{cls.__name__}.{name}: {ann}")
    for name, value in cls.__dict__.items():
        if (name.startswith("_") or name in SKIP or name in annotations or name in fields
                or name in inherited):
            continue
        if isinstance(value, (classmethod, staticmethod)):
            value = value.__func__
        if isinstance(value, property):
            out.append(f"{cls.__name__}.{name}: {_returns(value.fget)[4:]}")
        elif inspect.isfunction(value):
            out.append(f"{cls.__name__}.{name}({_params(value)}){_returns(value)}")
    return out


def all_entries() -> list[str]:
    return hook_entries() + [e for cls in CLASSES for e in member_entries(cls)]


assert dmisearch  # the public names live there

"""Plugins for a test: plugin objects made from classes, registries with them, and the
fixtures ``register_plugin`` and ``plugin_registry``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from dmisearch.components import Component
from dmisearch.hookspecs import REGISTER_HOOKS, hookimpl
from dmisearch.plugins import Registry, load_registry, registered


def make_plugin(*classes: type[Component], name: str = "test_plugin") -> object:
    """A plugin object registering ``classes`` (each under the hook of its kind)."""

    def hook(kind: str) -> Any:
        def register_kind(register: Any) -> None:
            for cls in classes:
                if cls.kind == kind:
                    register(cls)

        return hookimpl(register_kind)

    attrs: dict[str, Any] = {"__name__": name}
    for kind, hook_name in REGISTER_HOOKS.items():
        if any(getattr(c, "kind", None) == kind for c in classes):
            attrs[hook_name] = staticmethod(hook(kind))
    return type(name, (), attrs)()


def registry_with(*classes: type[Component]) -> Registry:
    """The installed plugins plus ``classes`` (those not already registered as themselves)."""
    base = load_registry()
    extra = []
    for cls in classes:
        try:
            if base.get(cls.kind, cls.name) is cls:
                continue
        except Exception:  # unknown, or claimed twice: registering it says which
            pass
        extra.append(cls)
    if not extra:
        return base
    return load_registry(plugins=[make_plugin(*extra, name="dmisearch_testing_plugin")])


@pytest.fixture
def register_plugin() -> Iterator[Any]:
    """``register_plugin(obj, ...)``: every registry built until the test ends (including
    by commands run in-process with ``dmisearch.cli.main``) also loads these plugins."""
    with contextlib.ExitStack() as stack:
        yield lambda *plugins: stack.enter_context(registered(*plugins))


@pytest.fixture
def plugin_registry() -> Registry:
    """A registry of the installed plugins (plus any registered with ``register_plugin``
    earlier in the test)."""
    return load_registry()

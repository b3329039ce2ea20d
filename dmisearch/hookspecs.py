"""The map of dmisearch's extension points.

A plugin is any module or object with functions marked ``@dmisearch.hookimpl`` whose names
match the hooks below. Installed packages expose plugins through the ``dmisearch``
entry-point group (the built-in components use exactly that mechanism)::

    [project.entry-points.dmisearch]
    my_plugin = "my_package.plugin"

Hooks are always called with keyword arguments, and an implementation may accept only the
arguments it needs, so hooks can grow new arguments without breaking plugins. Hooks only
*register* things: the contract of a component lives in its base class in
``dmisearch.components``.

Phase 1, registration
    Called once per plugin when a command builds its registry (never at import time). Each
    hook receives ``register``, a callable taking one component class; a plugin calls it
    once per class it provides. The class is checked against its base class when
    registered; a second class claiming a name already taken is reported naming both.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "dmisearch"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type], None]


# --------------------------------------------------------------------------------------------
# Phase 1: registration
# --------------------------------------------------------------------------------------------


@hookspec
def register_data_generators(register: Register) -> None:
    """Register data generators: subclasses of ``dmisearch.DataGenerator``.

    Called once per plugin when the registry is built. Call ``register(cls)`` for each class.
    """


@hookspec
def register_transforms(register: Register) -> None:
    """Register input transforms: subclasses of ``dmisearch.Transform``.

    Called once per plugin when the registry is built. Call ``register(cls)`` for each class.
    """


@hookspec
def register_architectures(register: Register) -> None:
    """Register architectures: subclasses of ``dmisearch.Architecture``.

    Called once per plugin when the registry is built. Call ``register(cls)`` for each class.
    """


@hookspec
def register_algorithms(register: Register) -> None:
    """Register inference algorithms: subclasses of ``dmisearch.Algorithm``.

    Called once per plugin when the registry is built. Call ``register(cls)`` for each class.
    """


#: Registration hook for each kind of component, in the order they are listed to users.
REGISTER_HOOKS: dict[str, str] = {
    "data": "register_data_generators",
    "transform": "register_transforms",
    "architecture": "register_architectures",
    "algorithm": "register_algorithms",
}

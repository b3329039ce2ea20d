"""The registry of components: the classes plugins registered, by kind and name, with the
record of each plugin (``PluginInfo``) and of each class it registered that was turned away
(``Refusal``), and the rules a class must follow to be registered (``class_problem``).

``plugins.load_registry`` builds a :class:`Registry`; everything after plugin loading (study
files, the factory, the probe) only reads one.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Iterable, Iterator
from typing import Any

from optuna.distributions import BaseDistribution

from dmisearch.components import BASES, RESERVED_PARAMS, Architecture, Component
from dmisearch.errors import PluginError, UnknownComponentError, did_you_mean

#: The environment variable naming plugins never to load (read by ``plugins.load_registry``;
#: named here by the error for a component two plugins register).
ENV_BLOCK = "DMISEARCH_BLOCK_PLUGINS"
#: Capabilities an architecture provides through its ``kernel`` method.
KERNEL_CAPABILITIES = ("nngp", "ntk")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A class a plugin registered and the registry turned away."""

    kind: str
    name: str | None  # its ``name`` attribute, if a string
    reason: str


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """One plugin: where it came from, and the error that broke it, if any."""

    name: str
    package: str | None = None
    version: str | None = None
    origin: str = ""
    status: str = "loaded"  # loaded | blocked | broken
    error: str | None = None
    refusals: tuple[Refusal, ...] = ()  # classes it registered that were turned away

    @property
    def refused(self) -> tuple[str, ...]:
        """Why each refused class was turned away."""
        return tuple(r.reason for r in self.refusals)


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered component class and the plugin that provided it."""

    kind: str
    name: str
    cls: type[Component]
    plugin: PluginInfo

    @property
    def package(self) -> str | None:
        return self.plugin.package

    @property
    def version(self) -> str | None:
        return self.plugin.version

    def provenance(self) -> dict[str, Any]:
        """JSON-ready record of who provided this component (stored on every trial)."""
        return {
            "name": self.name,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
            "plugin": self.plugin.name,
            "package": self.package,
            "version": self.version,
        }


class Registry:
    """Component classes by kind and name, plus the problems met while loading plugins."""

    def __init__(
        self,
        entries: Iterable[Entry],
        plugins: Iterable[PluginInfo],
        problems: Iterable[str] = (),
        conflicts: dict[tuple[str, str], list[Entry]] | None = None,
    ):
        self._entries: dict[tuple[str, str], Entry] = {}
        for e in entries:
            self._entries[(e.kind, e.name)] = e
        self.plugins = list(plugins)
        self.problems = list(problems)
        self._conflicts = dict(conflicts or {})

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def names(self, kind: str) -> list[str]:
        """Sorted names of the registered components of ``kind``."""
        return sorted(n for k, n in self._entries if k == kind)

    def entry(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; a clear error if it is unknown or claimed twice."""
        if (kind, name) in self._conflicts:
            claims = " and ".join(
                f"{e.cls.__module__}.{e.cls.__qualname__} (plugin '{e.plugin.name}')"
                for e in self._conflicts[(kind, name)]
            )
            raise PluginError(
                f"{kind} name '{name}' is registered twice: by {claims}. Uninstall or block "
                f"one of the plugins (environment variable {ENV_BLOCK}=<plugin name>)."
            )
        try:
            return self._entries[(kind, name)]
        except KeyError:
            refused = self._refused(kind, name)
            if refused:
                raise UnknownComponentError(refused) from None
            known = self.names(kind)
            broken = [p for p in self.plugins if p.status == "broken"]
            hint = did_you_mean(name, known)
            msg = (
                f"unknown {kind} '{name}'{hint}. Known {kind} names: "
                f"{', '.join(known) if known else '(none)'}."
            )
            if broken:
                msg += " Plugins that failed to load and may have provided it: " + ", ".join(
                    f"'{p.name}'" for p in broken
                ) + " (see `dmisearch plugins`)."
            else:
                msg += " Install the plugin that provides it, or fix the spelling."
            raise UnknownComponentError(msg) from None

    def _refused(self, kind: str, name: str) -> str | None:
        """Why a class registered as ``name`` was turned away (None: none was)."""
        for p in self.plugins:
            for r in p.refusals:
                if (r.kind, r.name) == (kind, name):
                    return (f"{kind} '{name}' was refused when plugin '{p.name}' loaded: "
                            f"{r.reason}; fix that class ({p.origin}) and the name becomes "
                            "usable (`dmisearch plugins` lists refused classes)")
        return None

    def get(self, kind: str, name: str) -> type[Component]:
        """The component class registered as ``name``."""
        return self.entry(kind, name).cls


def class_problem(kind: str, cls: Any) -> str | None:
    """Why ``cls`` cannot be registered as a component of ``kind`` (None: it can)."""
    base = BASES[kind]
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        return f"{cls!r} is not a subclass of dmisearch.{base.__name__}"
    label = f"{cls.__module__}.{cls.__qualname__}"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return (
            f"{label} needs a class attribute `name`: lowercase letters, digits and '_', "
            f"starting with a letter (got {name!r})"
        )
    if inspect.isabstract(cls):
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        return f"{label} ('{name}') does not implement {', '.join(missing)}"
    if issubclass(cls, Architecture):
        kernels = [k for k in KERNEL_CAPABILITIES if k in cls.provides]
        if kernels and cls.kernel is Architecture.kernel:
            return (
                f"{label} ('{name}') provides {', '.join(kernels)} but does not implement "
                f"kernel(x1, x2, kind); implement it, or take {', '.join(kernels)} out of "
                "`provides`"
            )
    params = inspect.signature(cls.__init__).parameters
    for p in list(params.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            return f"{label} ('{name}'): __init__ may not take *{p.name}; list each keyword"
        if p.kind is p.POSITIONAL_ONLY:
            return f"{label} ('{name}'): hyperparameter '{p.name}' must be a keyword"
        if p.default is p.empty:
            return f"{label} ('{name}'): hyperparameter '{p.name}' needs a default value"
        if p.name in RESERVED_PARAMS:
            return f"{label} ('{name}'): '{p.name}' is reserved by study files; rename it"
    space = getattr(cls, "space", {})
    for key, dist in space.items():
        if key not in params:
            return (
                f"{label} ('{name}'): search space names '{key}' which is not a constructor "
                f"keyword (keywords: {', '.join(list(params)[1:]) or 'none'})"
            )
        if not isinstance(dist, BaseDistribution):
            return (
                f"{label} ('{name}'): space['{key}'] must be an Optuna distribution "
                f"(dmisearch.space.Float/Int/Categorical), not {dist!r}"
            )
    return None

"""Loading plugins: installed entry points, local plugin files and objects passed in are
imported, registered with pluggy, and their register hooks called; the classes they register
are collected into a :class:`~dmisearch.registry.Registry` (the registry, its records and
the rules a class must follow are in ``registry``; their names are importable from here too).

Nothing here runs at import time: a command calls :func:`load_registry` and passes the
registry along. A plugin that fails to load, or registers a malformed class, is recorded as
a problem (shown by ``dmisearch plugins``) while the other plugins keep working; asking for a
component whose name two plugins claim is an error naming both.

Environment variables (comma-separated entry-point names):

``DMISEARCH_PLUGINS``
    Load only these plugins. Set but empty: load no installed plugin at all.
``DMISEARCH_BLOCK_PLUGINS``
    Never load these plugins.
``DMISEARCH_TRACE``
    Set (to anything but empty or ``0``): write each plugin load and hook call, with what it
    registered and how long it took, to stderr (``dmisearch --trace``).

Besides installed packages, a plugin can be a local Python file of hook implementations
(``dmisearch run --plugin my_plugin.py``, or ``plugins = ["my_plugin.py"]`` in a study
file's ``[study]`` table), and tests can register plugin objects for a while
(:func:`registered`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pluggy

from dmisearch import hookspecs
from dmisearch.errors import PluginError, did_you_mean
from dmisearch.registry import (
    ENV_BLOCK,
    Entry,
    PluginInfo,
    Refusal,
    Registry,
    class_problem,
)

ENTRY_POINT_GROUP = "dmisearch"
ENV_ONLY = "DMISEARCH_PLUGINS"
ENV_TRACE = "DMISEARCH_TRACE"

#: Plugin objects registered for a while by :func:`registered` (tests, notebooks).
_TEMPORARY: list[object] = []


def _env_names(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {n.strip() for n in raw.split(",") if n.strip()}


def _dist_of(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _trace_writer(trace: bool | Callable[[str], None] | None) -> Callable[[str], None] | None:
    if callable(trace):
        return trace
    if trace is None:
        trace = os.environ.get(ENV_TRACE, "") not in ("", "0")
    if not trace:
        return None
    return lambda line: print(f"[dmisearch trace] {line}", file=sys.stderr, flush=True)


def plugin_name_for_file(path: str | Path) -> str:
    """The plugin name of a local plugin file: its file name without ``.py``."""
    return Path(path).stem


def load_plugin_file(path: str | Path) -> Any:
    """Import a local Python file of hook implementations as a module.

    Raises ``PluginError`` if the file does not exist; errors raised by the file's own code
    propagate (``load_registry`` records them as a broken plugin).
    """
    p = Path(path).expanduser()
    if p.suffix != ".py":
        raise PluginError(f"plugin file {str(path)!r} must be a Python file ending in .py")
    if not p.is_file():
        raise PluginError(f"plugin file {str(path)!r} does not exist (resolved from "
                          f"{os.getcwd()!r}); give a path to a .py file of hook functions")
    p = p.resolve()
    digest = hashlib.sha1(str(p).encode()).hexdigest()[:8]
    module_name = f"dmisearch_local_plugin_{p.stem}_{digest}"  # top level: importable by name
    spec = importlib.util.spec_from_file_location(module_name, p)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look classes up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


@contextlib.contextmanager
def registered(*plugins: object) -> Iterator[None]:
    """Make every :func:`load_registry` call inside the block also load ``plugins``.

    For tests and notebooks: the plugin objects (modules, classes or instances with
    ``@hookimpl`` functions) behave like installed plugins until the block ends, including
    for commands run in-process (``dmisearch.cli.main``).
    """
    _TEMPORARY.extend(plugins)
    try:
        yield
    finally:
        for obj in plugins:
            _TEMPORARY.remove(obj)


def load_registry(
    *,
    entry_points: bool = True,
    plugins: Sequence[object] = (),
    files: Sequence[str | Path] = (),
    block: Iterable[str] = (),
    only: Iterable[str] | None = None,
    trace: bool | Callable[[str], None] | None = None,
) -> Registry:
    """Load plugins and collect the components they register.

    Args:
        entry_points: load installed plugins from the ``dmisearch`` entry-point group.
        plugins: extra plugin objects (modules or instances with hookimpls), registered
            under their ``__name__`` (or class name): for tests and notebooks.
        files: local plugin files (``.py``), each loaded as a plugin named after the file.
        block: entry-point names never to load, in addition to ``$DMISEARCH_BLOCK_PLUGINS``.
        only: if given, load only these entry points (``$DMISEARCH_PLUGINS`` likewise).
        trace: report each plugin load and hook call: True writes to stderr, a callable
            receives each line; None (default) follows ``$DMISEARCH_TRACE``.
    """
    load = _Loading(_trace_writer(trace))
    if entry_points:
        blocked = set(block) | (_env_names(ENV_BLOCK) or set())
        allowed = set(only) if only is not None else _env_names(ENV_ONLY)
        _import_entry_points(load, blocked, allowed)
    _import_files(load, files)
    for obj in [*_TEMPORARY, *plugins]:
        name = getattr(obj, "__name__", type(obj).__name__)
        load.candidates.append((PluginInfo(name, origin=f"passed in ({name})"), obj))
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    _register_candidates(pm, load)
    _break_unknown_hooks(pm, load.infos)
    collected = _Collected()
    live = [(n, p) for n, p in pm.list_name_plugin() if load.infos[n].status == "loaded"]
    for kind, hook_name in hookspecs.REGISTER_HOOKS.items():
        for pname, _plugin in live:
            if load.infos[pname].status != "loaded":
                continue
            got = _call_register_hook(pm, load, pname, hook_name)
            for cls in got or ():
                collected.add(kind, cls, pname, hook_name, load.infos)
    return _registry(collected, load)


@dataclasses.dataclass
class _Loading:
    """What one :func:`load_registry` call has learnt so far: each plugin's record by name
    (in the order first met), the imported plugins not yet registered, the trace writer."""

    say: Callable[[str], None] | None
    infos: dict[str, PluginInfo] = dataclasses.field(default_factory=dict)
    candidates: list[tuple[PluginInfo, Any]] = dataclasses.field(default_factory=list)

    def note(self, info: PluginInfo, started: float) -> None:
        """Trace one plugin's load (import), with its outcome and time."""
        if self.say:
            ms = (time.perf_counter() - started) * 1e3
            what = info.status + (f": {info.error}" if info.error else "")
            self.say(f"plugin '{info.name}' ({info.origin}): {what} [{ms:.1f} ms]")

    def settle(self, info: PluginInfo, started: float) -> None:
        """Record a plugin that will not be registered (blocked or broken)."""
        self.infos[info.name] = info
        self.note(info, started)


def _import_entry_points(load: _Loading, blocked: set[str], allowed: set[str] | None
                         ) -> None:
    """Import the installed plugins that are neither blocked nor left out."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        started = time.perf_counter()
        package, version = _dist_of(ep)
        info = PluginInfo(ep.name, package, version, origin=f"entry point {ep.value}")
        if ep.name in blocked:
            load.settle(dataclasses.replace(info, status="blocked",
                                            error=f"listed in {ENV_BLOCK}"), started)
            continue
        if allowed is not None and ep.name not in allowed:
            load.settle(dataclasses.replace(info, status="blocked",
                                            error=f"not listed in {ENV_ONLY}"), started)
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            load.settle(_broken(info, f"failed to import {ep.value}", exc), started)
            continue
        load.candidates.append((info, obj))
        load.note(info, started)


def _import_files(load: _Loading, files: Sequence[str | Path]) -> None:
    """Import the local plugin files; one that does not exist raises ``PluginError``."""
    for path in files:
        started = time.perf_counter()
        name = plugin_name_for_file(path)
        info = PluginInfo(name, origin=f"file {Path(path).expanduser().resolve()}")
        try:
            obj = load_plugin_file(path)
        except PluginError:
            raise
        except Exception as exc:  # the file's own code failed: report it like any plugin
            load.settle(_broken(info, f"failed to import {path}", exc), started)
            continue
        load.candidates.append((info, obj))
        load.note(info, started)


def _register_candidates(pm: pluggy.PluginManager, load: _Loading) -> None:
    """Register each imported plugin with the plugin manager; a second plugin of a loaded
    one's name breaks the first, one pluggy rejects is broken."""
    infos = load.infos
    for info, obj in load.candidates:
        if info.name in infos and infos[info.name].status == "loaded":
            first = infos[info.name].origin
            infos[info.name] = _broken(
                infos[info.name], f"two plugins are named '{info.name}': {first} and "
                f"{info.origin}; rename one", None)
            continue
        try:
            pm.register(obj, name=info.name)
        except Exception as exc:  # e.g. pluggy.PluginValidationError: hook signature mismatch
            infos[info.name] = _broken(info, "rejected by the plugin manager", exc)
            continue
        infos[info.name] = info


def _break_unknown_hooks(pm: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
    """Break every plugin implementing a hook that no hookspec declares (a typo)."""
    for hookcaller in pm.hook.__dict__.values():  # hookimpls whose name matches no hook
        if isinstance(hookcaller, pluggy.HookCaller) and not hookcaller.has_spec():
            for impl in hookcaller.get_hookimpls():
                pname = pm.get_name(impl.plugin)
                known = ", ".join(hookspecs.REGISTER_HOOKS.values())
                infos[pname] = _broken(
                    infos[pname],
                    f"implements unknown hook '{hookcaller.name}'"
                    f"{did_you_mean(hookcaller.name, hookspecs.REGISTER_HOOKS.values())}"
                    f" (known hooks: {known})",
                    None,
                )


def _call_register_hook(pm: pluggy.PluginManager, load: _Loading, pname: str,
                        hook_name: str) -> list[Any] | None:
    """The classes plugin ``pname`` registers through ``hook_name`` (None: it raised, and
    is now broken)."""
    others = [p for n, p in pm.list_name_plugin() if n != pname]
    caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
    if not caller.get_hookimpls():
        return []
    got: list[Any] = []
    started = time.perf_counter()
    try:
        caller(register=got.append)
    except Exception as exc:
        load.infos[pname] = _broken(load.infos[pname], f"raised in {hook_name}", exc)
        if load.say:
            load.say(f"{hook_name}(register) by plugin '{pname}': raised "
                     f"{type(exc).__name__}: {exc}")
        return None
    if load.say:
        names = ", ".join(str(getattr(c, "name", c)) for c in got) or "nothing"
        load.say(f"{hook_name}(register) by plugin '{pname}': registered {names} "
                 f"[{(time.perf_counter() - started) * 1e3:.1f} ms]")
    return got


@dataclasses.dataclass
class _Collected:
    """The classes registered so far: accepted ones by (kind, name), names claimed more than
    once, and the problems met."""

    entries: dict[tuple[str, str], Entry] = dataclasses.field(default_factory=dict)
    conflicts: dict[tuple[str, str], list[Entry]] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)

    def add(self, kind: str, cls: Any, pname: str, hook_name: str,
            infos: dict[str, PluginInfo]) -> None:
        """Accept ``cls`` from plugin ``pname``, or record it on the plugin as refused."""
        why = class_problem(kind, cls)
        if why is not None:
            self.problems.append(f"plugin '{pname}' ({hook_name}): {why}")
            name = getattr(cls, "name", None)
            refusal = Refusal(kind, name if isinstance(name, str) else None, why)
            infos[pname] = dataclasses.replace(
                infos[pname], refusals=(*infos[pname].refusals, refusal))
            return
        entry = Entry(kind, cls.name, cls, infos[pname])
        key = (kind, cls.name)
        if key in self.conflicts:
            self.conflicts[key].append(entry)
        elif key in self.entries:
            self.conflicts[key] = [self.entries.pop(key), entry]
        else:
            self.entries[key] = entry


def _registry(collected: _Collected, load: _Loading) -> Registry:
    """The registry of the accepted classes of plugins still loaded, with every problem."""
    infos, problems = load.infos, collected.problems
    for (kind, name), claims in collected.conflicts.items():
        problems.append(
            f"{kind} '{name}' is registered by "
            + " and by ".join(f"plugin '{e.plugin.name}' ({e.cls.__qualname__})" for e in claims)
        )
    for info in infos.values():
        if info.status == "broken":
            problems.append(f"plugin '{info.name}' is broken: {info.error}")
    if load.say:
        for problem in problems:
            load.say(f"problem: {problem}")
    # Entries must point at the final PluginInfo (a plugin can break after registering).
    final = [dataclasses.replace(e, plugin=infos[e.plugin.name])
             for e in collected.entries.values()]
    final_conflicts = {
        k: [dataclasses.replace(e, plugin=infos[e.plugin.name]) for e in v]
        for k, v in collected.conflicts.items()
    }
    return Registry(
        [e for e in final if e.plugin.status == "loaded"],
        infos.values(),
        problems,
        final_conflicts,
    )


def _broken(info: PluginInfo, what: str, exc: BaseException | None) -> PluginInfo:
    detail = what
    if exc is not None:
        detail += f": {type(exc).__name__}: {exc}"
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            last = tb[-1]
            detail += f" (at {last.filename}:{last.lineno})"
    return dataclasses.replace(info, status="broken", error=detail)

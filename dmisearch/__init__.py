"""dmisearch: which model and which training algorithm learn this data from the fewest samples?

The public API for plugin authors and users. Importing it loads no plugin, picks no device
and touches no file: commands build those when they run. Nor does it import torch or Optuna
(``tests/test_structure.py``): the names that need them (``MinibatchAlgorithm``, the
registry) are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from dmisearch.components import (
    Algorithm,
    Architecture,
    Component,
    DataGenerator,
    DataInfo,
    Job,
    Predictions,
    RunContext,
    Split,
    Transform,
)
from dmisearch.errors import DmisearchError, PluginError, StudyFileError, UnknownComponentError
from dmisearch.hookspecs import hookimpl

if TYPE_CHECKING:
    from dmisearch.plugins import load_registry
    from dmisearch.registry import Registry
    from dmisearch.training import MinibatchAlgorithm

#: Exports whose modules import torch (training) or Optuna (registry, plugins): name -> module,
#: imported on first access (PEP 562), so that ``import dmisearch`` stays light.
_LAZY = {
    "MinibatchAlgorithm": "dmisearch.training",
    "Registry": "dmisearch.registry",
    "load_registry": "dmisearch.plugins",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dmisearch' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


try:
    __version__ = version("dmisearch")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "Algorithm",
    "Architecture",
    "Component",
    "DataGenerator",
    "DataInfo",
    "DmisearchError",
    "Job",
    "MinibatchAlgorithm",
    "PluginError",
    "Predictions",
    "Registry",
    "RunContext",
    "Split",
    "StudyFileError",
    "Transform",
    "UnknownComponentError",
    "__version__",
    "hookimpl",
    "load_registry",
]

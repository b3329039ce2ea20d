"""dmisearch: which model and which training algorithm learn this data from the fewest samples?

The public API for plugin authors and users. Importing it loads no plugin, picks no device
and touches no file: commands build those when they run.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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
from dmisearch.plugins import Registry, load_registry
from dmisearch.training import MinibatchAlgorithm

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

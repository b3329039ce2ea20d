"""Shared fixtures: a registry from the installed entry points and tiny study documents."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dmisearch.plugins import load_registry

#: A study small enough to run a trial in a fraction of a second on a CPU.
TINY_STUDY: dict[str, Any] = {
    "study": {"name": "tiny", "device": "cpu"},
    "data": {"name": "teacher", "family": "cnn_gap", "shape": [1, 8], "width": 8},
    "curve": {"sizes": [8, 16], "seeds": 2, "test_size": 32},
    "search": {
        "models": ["fcn", "cnn_gap"],
        "algorithms": ["sgd"],
        "n_trials": 3,
        "seed": 0,
        "pruner": "none",
        "space": {
            "model": {"fcn": {"width": 16, "depth": 1}, "cnn_gap": {"width": 4, "depth": 1}},
            "algorithm": {"sgd": {"steps": 5, "batch_size": 8, "lr": 0.05}},
        },
    },
}


def trained(study) -> list:
    """The study's trials that trained a configuration: not a repeated proposal answered
    from an earlier trial (``duplicate_of``)."""
    return [t for t in study.trials if "duplicate_of" not in t.user_attrs]


def configs(trials) -> list:
    """Each trial's configuration (its parameters), for checks that none repeats."""
    return [tuple(sorted(t.params.items())) for t in trials]


@pytest.fixture(scope="session", autouse=True)
def subprocesses_use_one_thread():
    """Every process a test starts (`dmisearch run`, workers, pip) computes on one thread,
    as the tests themselves do: on a busy 2-core machine more threads only spin."""
    import os

    old = {k: os.environ.get(k) for k in ("DMISEARCH_THREADS", "OMP_NUM_THREADS")}
    os.environ.update(DMISEARCH_THREADS="1", OMP_NUM_THREADS="1")
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead, and spin badly on a busy machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def registry():
    return load_registry()


@pytest.fixture
def tiny_doc() -> dict[str, Any]:
    return copy.deepcopy(TINY_STUDY)


def dump_toml(doc: dict[str, Any]) -> str:
    """Minimal TOML writer for test documents (tables, scalars, lists, inline tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return repr(v)

    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        # Top-level sections and dicts holding dicts become [tables]; others stay inline.
        def is_table(v: Any) -> bool:
            return isinstance(v, dict) and (not prefix or any(isinstance(x, dict)
                                                              for x in v.values()))

        if prefix:
            lines.append(f"[{prefix}]")
        for k, v in d.items():
            if not is_table(v):
                lines.append(f"{k} = {value(v)}")
        for k, v in d.items():
            if is_table(v):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", doc)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def test_registry():
    """Installed plugins plus the test plugin of ``testplugins.py``."""
    from testplugins import TestPlugin

    return load_registry(plugins=[TestPlugin()])

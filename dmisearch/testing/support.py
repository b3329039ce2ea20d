"""What the contracts run on: small random problems, run contexts, default partners and the
one-trial smoke study."""

from __future__ import annotations

from typing import Any

import torch

from dmisearch.components import (
    Algorithm,
    Architecture,
    Component,
    DataGenerator,
    RunContext,
    Transform,
)
from dmisearch.data import jsonable


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _ctx(task: str, out_dim: int, input_shape: tuple[int, ...],
         dtype: torch.dtype = torch.float64) -> RunContext:
    return RunContext(torch.device("cpu"), dtype, task, out_dim, tuple(input_shape))


def _problem(task: str, shape: tuple[int, ...], out_dim: int, n: int, n_test: int,
             seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=dtype)
    y = (torch.randn(n, out_dim, generator=g, dtype=dtype) if task == "regression"
         else torch.randint(0, out_dim, (n,), generator=g))
    return x, y, torch.randn(n_test, *shape, generator=g, dtype=dtype)


def _default_model() -> Architecture:
    from dmisearch_builtins.architectures import FCN

    return FCN(width=16, depth=1)


def _default_algorithm(model: type[Architecture]) -> Algorithm:
    from dmisearch_builtins.algorithms import SGD
    from dmisearch_builtins.kernel_algorithms import NTK

    if "module" in model.provides:
        return SGD(lr=0.05, steps=5, batch_size=8)
    if "ntk" in model.provides:
        return NTK()
    raise AssertionError(
        f"architecture '{model.name}' provides {sorted(model.provides)}; override the "
        "`study_doc` fixture to pair it with an algorithm that can use it")


def _entry(component: Component) -> dict[str, Any]:
    return jsonable(component.get_params())


def _study_doc(
    under_test: Component | None,
    *,
    data: DataGenerator | None,
    model: Architecture | None,
    algorithm: Algorithm | None,
    input_shape: tuple[int, ...] = (1, 8),
) -> dict[str, Any]:
    """A one-trial study with tiny curves using ``under_test`` (or the given parts)."""
    transforms: list[Any] = []
    if isinstance(under_test, Transform):
        transforms = [{"name": under_test.name, **_entry(under_test)}]
    elif isinstance(under_test, Architecture):
        model = under_test
    elif isinstance(under_test, Algorithm):
        algorithm = under_test
    if data is not None:
        data_doc = {"name": data.name, **_entry(data)}
    else:
        data_doc = {"name": "teacher", "family": "fcn", "shape": list(input_shape),
                    "width": 8, "depth": 1}
    if transforms:
        data_doc["transforms"] = transforms
    model = model if model is not None else _default_model()
    algorithm = algorithm if algorithm is not None else _default_algorithm(type(model))
    return {
        "study": {"name": "conformance", "storage": "memory", "device": "cpu",
                  "dtype": "float64"},
        "data": data_doc,
        "curve": {"sizes": [8, 16], "seeds": 2, "test_size": 16},
        "search": {
            "models": [model.name], "algorithms": [algorithm.name], "n_trials": 1,
            "seed": 0, "sampler": "random", "pruner": "none",
            "space": {"model": {model.name: _entry(model)},
                      "algorithm": {algorithm.name: _entry(algorithm)}},
        },
    }

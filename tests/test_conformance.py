"""Every built-in component passes the plugin authors' conformance kit (dmisearch.testing)."""

from __future__ import annotations

import numpy as np
import pytest

from dmisearch.plugins import load_registry
from dmisearch.testing import (
    AlgorithmContract,
    ArchitectureContract,
    DataGeneratorContract,
    TransformContract,
)

pytestmark = pytest.mark.usefixtures("one_thread")

BUILTIN = [e for e in load_registry(only=[
    "builtin-data", "builtin-transforms", "builtin-architectures", "builtin-algorithms"])]

#: Small hyperparameters so that each check takes a fraction of a second.
SMALL = {
    ("data", "teacher"): {"shape": (1, 8), "width": 8, "depth": 1},
    ("data", "patches"): {"shape": (1, 8)},
    ("architecture", "fcn"): {"width": 16, "depth": 1},
    ("architecture", "lcn"): {"width": 4, "depth": 1, "filter_size": 3},
    ("architecture", "cnn_vec"): {"width": 4, "depth": 1, "filter_size": 3},
    ("architecture", "cnn_gap"): {"width": 4, "depth": 1, "filter_size": 3},
    # momentum and weight decay: the fused-versus-loop check covers every update term
    ("algorithm", "sgd"): {"steps": 8, "batch_size": 4, "momentum": 0.9, "weight_decay": 1e-3},
    ("algorithm", "adam"): {"steps": 8, "batch_size": 4, "weight_decay": 1e-3},
    ("algorithm", "gd"): {"steps": 8, "lr": 0.1},
}


def instances(kind: str, tmp_path_factory=None):
    names = sorted(e.name for e in BUILTIN if e.kind == kind)
    assert names, kind
    return [pytest.param((kind, n), id=n) for n in names]


def build(kind: str, name: str, tmp_path_factory) -> object:
    cls = next(e.cls for e in BUILTIN if (e.kind, e.name) == (kind, name))
    params = dict(SMALL.get((kind, name), {}))
    if (kind, name) == ("data", "mnist1d"):  # its data come from the optional package
        pytest.importorskip("mnist1d", reason='needs pip install "dmisearch[mnist1d]"')
    if (kind, name) == ("data", "file"):  # a real file: 60 samples of a 2-class problem
        path = tmp_path_factory.mktemp("filedata") / "data.npz"
        rng = np.random.default_rng(0)
        x = rng.normal(size=(60, 6))
        np.savez(path, X=x, y=(x[:, 0] > 0).astype(np.int64))
        params["path"] = str(path)
    return cls(**params)


class TestBuiltinData(DataGeneratorContract):
    @pytest.fixture(params=instances("data"))
    def component(self, request, tmp_path_factory):
        return build(*request.param, tmp_path_factory)


class TestBuiltinTransforms(TransformContract):
    @pytest.fixture(params=instances("transform"))
    def component(self, request, tmp_path_factory):
        return build(*request.param, tmp_path_factory)

    @pytest.fixture
    def input_shape(self):
        return (1, 4, 4)  # 2-D: exercises every spatial axis of shift and flip


class TestBuiltinArchitectures(ArchitectureContract):
    @pytest.fixture(params=instances("architecture"))
    def component(self, request, tmp_path_factory):
        return build(*request.param, tmp_path_factory)


class TestBuiltinAlgorithms(AlgorithmContract):
    @pytest.fixture(params=instances("algorithm"))
    def component(self, request, tmp_path_factory):
        return build(*request.param, tmp_path_factory)


def test_every_builtin_is_checked():
    kinds = {e.kind for e in BUILTIN}
    assert kinds == {"data", "transform", "architecture", "algorithm"}
    assert len(BUILTIN) >= 17

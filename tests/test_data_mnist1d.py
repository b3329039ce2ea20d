"""The mnist1d data generator: MNIST-1D made offline by the mnist1d package, drawn per seed."""

from __future__ import annotations

import copy
import importlib.util
import random
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dmisearch.components import DataInfo
from dmisearch.data import check_split
from dmisearch.errors import StudyFileError
from dmisearch.plugins import load_registry
from dmisearch.study_file import build_spec, load_study
from dmisearch_builtins import data_mnist1d
from dmisearch_builtins.data_mnist1d import MNIST1D

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = importlib.util.find_spec("mnist1d") is not None
needs_package = pytest.mark.skipif(not INSTALLED, reason='needs pip install "dmisearch[mnist1d]"')

STUDY = {
    "study": {"name": "mnist1d-tiny", "device": "cpu"},
    "data": {"name": "mnist1d"},
    "curve": {"sizes": [10, 20], "seeds": 1, "test_size": 50},
    "search": {
        "models": ["fcn"],
        "algorithms": ["sgd"],
        "n_trials": 1,
        "seed": 0,
        "pruner": "none",
        "space": {
            "model": {"fcn": {"width": 16, "depth": 1}},
            "algorithm": {"sgd": {"steps": 5, "batch_size": 8, "lr": 0.05}},
        },
    },
}


def rows(t: torch.Tensor) -> set[bytes]:
    return {r.tobytes() for r in t.reshape(len(t), -1).numpy()}


@needs_package
def test_describe():
    assert MNIST1D().describe() == DataInfo(
        input_shape=(1, 40), task="classification", out_dim=10, n_available=4000,
        n_test_available=1000)


@needs_package
def test_generation_is_offline_writes_nothing_and_leaves_the_global_rngs(
        monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d generation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.chdir(tmp_path)  # mnist1d.get_dataset would write mnist1d_data.pkl here
    random.seed(7)
    np.random.seed(7)
    before = random.getstate(), np.random.get_state()
    data_mnist1d._dataset.cache_clear()
    s = MNIST1D().sample(5, 5, seed=0)
    assert s.x_train.shape == (5, 1, 40)
    assert list(tmp_path.iterdir()) == []
    assert random.getstate() == before[0]
    after = np.random.get_state()
    assert after[0] == before[1][0] and np.array_equal(after[1], before[1][1])
    assert after[2:] == before[1][2:]


@needs_package
def test_full_draw_is_the_packages_default_dataset():
    from mnist1d.data import make_dataset

    ref = make_dataset()  # the package's defaults: 4000 + 1000 signals of 40 points, seed 42
    s = MNIST1D().sample(4000, 1000, seed=3)
    assert check_split(s, MNIST1D().describe(), 4000, 1000) is None
    for x, y, x_ref, y_ref in ((s.x_train, s.y_train, ref["x"], ref["y"]),
                               (s.x_test, s.y_test, ref["x_test"], ref["y_test"])):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        x_ref = np.asarray(x_ref, dtype=np.float32)
        # Every drawn signal is one of the package's, each once, its label carried along.
        order, order_ref = np.lexsort(x.reshape(len(x), -1).numpy().T), np.lexsort(x_ref.T)
        np.testing.assert_array_equal(x.reshape(len(x), -1).numpy()[order], x_ref[order_ref])
        np.testing.assert_array_equal(y.numpy()[order], np.asarray(y_ref)[order_ref])
    # Standardised as the package does: mean 0, std 1 over all 5000 signals.
    everything = torch.cat([s.x_train, s.x_test]).double()
    assert abs(float(everything.mean())) < 1e-6 and abs(float(everything.std()) - 1) < 1e-3
    assert set(s.y_train.tolist()) == set(s.y_test.tolist()) == set(range(10))
    # the same data for everyone: the package's seed fixes it (labels are exact)
    assert np.bincount(s.y_train.numpy()).tolist() == [
        398, 396, 411, 394, 394, 402, 401, 404, 402, 398]


@needs_package
def test_split_shapes_disjoint_and_nested():
    d = MNIST1D()
    s = d.sample(300, 200, seed=0)
    assert check_split(s, d.describe(), 300, 200) is None
    assert s.x_train.shape == (300, 1, 40) and s.x_test.shape == (200, 1, 40)
    assert s.y_train.shape == (300,) and s.y_test.shape == (200,)
    assert len(rows(s.x_train)) == 300 and len(rows(s.x_test)) == 200
    assert not rows(s.x_train) & rows(s.x_test)
    # Larger training sets contain smaller ones; the test set does not depend on n_train.
    big = d.sample(1000, 200, seed=0)
    assert torch.equal(big.x_train[:300], s.x_train)
    assert torch.equal(big.x_test, s.x_test) and torch.equal(big.y_test, s.y_test)
    # The whole training set and the whole test set are disjoint too.
    full = d.sample(4000, 1000, seed=1)
    assert not rows(full.x_train) & rows(full.x_test)


@needs_package
def test_deterministic_in_seed():
    d = MNIST1D()
    torch.manual_seed(0)
    a = d.sample(100, 50, seed=1)
    torch.manual_seed(1)
    b = d.sample(100, 50, seed=1)
    c = d.sample(100, 50, seed=2)
    for t in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, t), getattr(b, t))
    assert not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.x_test, c.x_test)
    a.x_train.zero_()  # mutating a returned tensor does not leak into later draws
    assert torch.equal(d.sample(100, 50, seed=1).x_train, b.x_train)


@needs_package
def test_too_many_samples():
    MNIST1D().sample(4000, 1000, seed=0)
    with pytest.raises(ValueError, match="4000 training"):
        MNIST1D().sample(4001, 10, seed=0)
    with pytest.raises(ValueError, match="1000 test"):
        MNIST1D().sample(10, 1001, seed=0)
    with pytest.raises(ValueError, match="n_test"):
        MNIST1D().sample(10, -1, seed=0)


@needs_package
@pytest.mark.usefixtures("one_thread")
def test_a_study_of_shuffled_mnist1d_runs(registry):
    from dmisearch.runner import run_study

    doc = copy.deepcopy(STUDY)
    doc["data"]["transforms"] = ["permute"]
    spec = build_spec(doc, registry, storage="memory")
    assert spec.data.label == "mnist1d+permute"
    assert spec.info.input_shape == (1, 40) and spec.metric == "error_rate"
    trials = run_study(spec).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"]


@needs_package
def test_the_paper_study_loads(registry):
    spec = load_study(ROOT / "studies" / "paper" / "mnist1d.toml", registry, storage="memory")
    assert spec.data.label == "mnist1d" and len(spec.pairs) == 8
    assert spec.grid.sizes[-1] == 4000 and spec.grid.test_size == 1000


@needs_package
def test_a_study_asking_for_too_much_is_refused(registry):
    doc = copy.deepcopy(STUDY)
    doc["curve"] = {"sizes": [10, 4001], "seeds": 1, "test_size": 1001}
    with pytest.raises(StudyFileError) as info:
        build_spec(doc, registry, storage="memory")
    text = str(info.value)
    assert "4000 training samples" in text and "fixed test set has only 1000" in text


def test_without_the_package_it_registers_and_says_what_to_install(monkeypatch):
    # Last in the file: it empties the cache, so a later test would make the data again.
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    data_mnist1d._dataset.cache_clear()
    try:
        install = 'pip install "dmisearch[mnist1d]"'
        reg = load_registry()
        assert not reg.problems, reg.problems
        assert reg.get("data", "mnist1d") is MNIST1D
        for call in (MNIST1D().describe, lambda: MNIST1D().sample(5, 5, seed=0)):
            with pytest.raises(ValueError, match="mnist1d package") as info:
                call()
            assert install in str(info.value)
        # A study naming it fails before any trial, with the same advice.
        with pytest.raises(StudyFileError) as info:
            build_spec(copy.deepcopy(STUDY), reg, storage="memory")
        assert install in str(info.value) and "nothing was run" in str(info.value)
    finally:
        data_mnist1d._dataset.cache_clear()

"""nngp / ntk kernel regression, gd, and augmentation modifiers, against oracles."""

from __future__ import annotations

import math

import pytest
import torch
from optuna.trial import TrialState

from dmisearch import engine
from dmisearch.components import Job, RunContext, augmented
from dmisearch.errors import StudyFileError
from dmisearch.runner import run_study
from dmisearch.study_file import build_spec
from dmisearch_builtins import kernel_algorithms
from dmisearch_builtins.algorithms import GD
from dmisearch_builtins.architectures import FAMILIES
from dmisearch_builtins.kernel_algorithms import NNGP, NTK
from dmisearch_builtins.kernels import kernel
from dmisearch_builtins.transforms import Shift

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


@pytest.fixture
def cnn_gap_calls(monkeypatch):
    """The first argument's length of every cnn_gap kernel computed."""
    calls = []
    real = FAMILIES["cnn_gap"].kernel
    monkeypatch.setattr(FAMILIES["cnn_gap"], "kernel",
                        lambda self, a, b, kind: calls.append(len(a)) or real(self, a, b, kind))
    return calls


@pytest.fixture(autouse=True)
def fresh_cache():
    """Every test starts with no cached kernels (their inputs repeat across tests)."""
    kernel_algorithms._CACHE.entries.clear()
    yield
    kernel_algorithms._CACHE.entries.clear()


def data(n=12, shape=(1, 6), n_test=7, task="regression", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=F64)
    xt = torch.randn(n_test, *shape, generator=g, dtype=F64)
    y = (torch.randn(n, 1, generator=g, dtype=F64) if task == "regression"
         else torch.randint(0, 3, (n,), generator=g))
    out = 1 if task == "regression" else 3
    return x, y, xt, RunContext(torch.device("cpu"), F64, task, out, shape)


@pytest.mark.parametrize("cls", [NNGP, NTK])
@pytest.mark.parametrize("arch", ["fcn", "cnn_gap"])
def test_predictions_are_the_kernel_ridge_formula(cls, arch):
    x, y, xt, ctx = data()
    model = FAMILIES[arch](depth=2, sigma_b=0.2)
    ridge = 0.05
    (pred,) = cls(ridge=ridge).fit_predict(model, [Job(x, y, xt, 0)], ctx)
    k, kt = kernel(model, x, None, cls.kernel_kind), kernel(model, xt, x, cls.kernel_kind)
    lam = ridge * k.diagonal().mean()
    expected = kt @ torch.linalg.solve(k + lam * torch.eye(len(x), dtype=F64), y)
    assert torch.allclose(pred.test, expected, rtol=1e-10, atol=1e-12)


def test_zero_ridge_interpolates_and_nested_sizes_slice_one_kernel(monkeypatch):
    x, y, xt, ctx = data(n=16)
    model = FAMILIES["cnn_vec"](depth=1)
    calls = []
    real = FAMILIES["cnn_vec"].kernel
    monkeypatch.setattr(FAMILIES["cnn_vec"], "kernel",
                        lambda self, a, b, kind: calls.append(len(a)) or real(self, a, b, kind))
    jobs = [Job(x[:n], y[:n], xt, 0) for n in (4, 8, 16)]
    preds = NTK(ridge=0.0).fit_predict(model, jobs, ctx)
    for job, p in zip(jobs, preds, strict=True):
        assert torch.allclose(p.train, job.y_train, atol=1e-8)
    assert calls == [16, 7]  # K(pool, pool) and K(test, pool) once, for the largest size
    # trials differing only in ridge (and width) reuse them
    NTK(ridge=0.1).fit_predict(FAMILIES["cnn_vec"](depth=1, width=99), jobs, ctx)
    assert calls == [16, 7]
    NTK(ridge=0.1).fit_predict(FAMILIES["cnn_vec"](depth=2), jobs, ctx)  # another kernel
    assert calls == [16, 7, 16, 7]


def test_classification_regresses_one_hot_targets():
    x, y, xt, ctx = data(task="classification")
    (pred,) = NNGP(ridge=0.0).fit_predict(FAMILIES["fcn"](), [Job(x, y, xt, 0)], ctx)
    assert pred.test.shape == (7, 3)
    assert torch.allclose(pred.train, torch.nn.functional.one_hot(y, 3).to(F64), atol=1e-8)


def test_shift_augmented_kernel_regression_equals_regression_on_the_orbit():
    """With a jointly shift-invariant kernel (circular padding), averaging the kernel over
    the group is kernel regression on every shifted copy of the training set."""
    x, y, xt, ctx = data(n=5, shape=(1, 4))
    model = FAMILIES["cnn_vec"](depth=2, sigma_b=0.1)
    ridge = 0.3
    cls = augmented(NTK, Shift())
    (pred,) = cls(ridge=ridge).fit_predict(model, [Job(x, y, xt, 0)], ctx)
    orbit = Shift().orbit(x)  # (4, 5, 1, 4)
    xo, yo = orbit.reshape(20, 1, 4), y.repeat(4, 1)
    k, kt = kernel(model, xo, None, "ntk"), kernel(model, xt, xo, "ntk")
    # lambda is set by the averaged kernel's diagonal; the orbit holds |G| = 4 copies
    k_bar = kernel(model, x, xo, "ntk").reshape(5, 4, 5).mean(1)
    lam = ridge * k_bar.diagonal().mean() * 4
    expected = kt @ torch.linalg.solve(k + lam * torch.eye(20, dtype=F64), yo)
    assert torch.allclose(pred.test, expected, rtol=1e-8, atol=1e-10)


def test_gd_on_wide_networks_approaches_the_ntk_prediction():
    """Centred full-batch gd in the ntk parameterisation vs the linearised (NTK) dynamics
    after the same number of steps: the gap shrinks like 1/sqrt(width)."""
    n = 8
    x, y, xt, ctx = data(n=n)
    for family in ("fcn", "cnn_gap"):
        arch = FAMILIES[family](depth=1, parameterization="ntk", sigma_b=0.1)
        k, kt = kernel(arch, x, None, "ntk"), kernel(arch, xt, x, "ntk")
        lr, steps = 0.4 * n / float(torch.linalg.eigvalsh(k).max()), 30
        step = torch.eye(n, dtype=F64) - (2 * lr / n) * k  # MSE mean: gradient 2/n
        ntk_pred = kt @ torch.linalg.solve(
            k, (torch.eye(n, dtype=F64) - torch.linalg.matrix_power(step, steps)) @ y)
        gaps = {}
        for width in (64, 256, 1024, 4096):
            wide = FAMILIES[family](depth=1, width=width, parameterization="ntk", sigma_b=0.1)
            algo = GD(lr=lr, steps=steps, center=True)
            preds = engine.train([engine.Member(wide, algo, Job(x, y, xt, s))
                                  for s in range(4)], ctx)
            gaps[width] = sum(float((p.test - ntk_pred).norm() / ntk_pred.norm())
                              for p in preds) / len(preds)
            assert gaps[width] < 6 / math.sqrt(width), (family, gaps)
        assert gaps[4096] < gaps[64] / 3, (family, gaps)


def test_validation_of_kernel_pairs(tiny_doc, registry):
    tiny_doc["search"]["algorithms"] = ["nngp"]
    tiny_doc["search"]["space"]["algorithm"] = {}
    tiny_doc["search"]["space"]["model"]["fcn"]["activation"] = ["relu", "tanh"]
    with pytest.raises(StudyFileError) as info:
        build_spec(tiny_doc, registry)
    (msg,) = info.value.problems
    assert msg.startswith("search.space.model.fcn:") and "tanh" in msg and "'nngp'" in msg
    tiny_doc["search"]["space"]["model"]["fcn"]["activation"] = ["relu", "erf"]
    build_spec(tiny_doc, registry)  # both have kernels
    tiny_doc["search"]["algorithms"] = ["nngp+rotate"]
    with pytest.raises(StudyFileError, match="no finite group"):
        build_spec(tiny_doc, registry)
    tiny_doc["search"]["algorithms"] = ["sgd+shfit"]
    with pytest.raises(StudyFileError, match="did you mean 'shift'"):
        build_spec(tiny_doc, registry)


def test_a_study_mixing_finite_width_and_kernel_algorithms(tiny_doc, registry):
    tiny_doc["search"].update(algorithms=["sgd", "gd", "nngp", "ntk", "sgd+shift",
                                          "ntk+shift"], n_trials=12, sampler="random")
    tiny_doc["search"]["space"]["algorithm"].update(gd={"steps": 10}, **{
        "sgd+shift": {"steps": 5, "batch_size": 8}})
    spec = build_spec(tiny_doc, registry, storage="memory")
    assert len(spec.pairs) == 12
    study = run_study(spec)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    algos = {t.user_attrs["algorithm"] for t in study.trials}
    assert {"nngp", "ntk"} & algos and {"sgd", "gd", "sgd+shift"} & algos
    for t in study.trials:  # every trial measured on the same grid
        assert t.user_attrs["curve"]["size"] == [8, 8, 16, 16]


def test_cache_is_bounded_in_bytes():
    cache = kernel_algorithms._Cache(max_bytes=2 * 800)  # two 10x10 float64 matrices
    for i in range(3):
        cache.put((i,), (torch.zeros(10, 10, dtype=F64), torch.zeros(0, dtype=F64)))
    assert cache.get((0,)) is None and cache.get((1,)) is not None
    assert cache.nbytes() == 1600


def test_a_permuted_pool_reuses_the_cached_kernels_exactly(cnn_gap_calls):
    """Every seed's draw of fixed splits holds the same inputs in another order: its kernels
    are the cached ones, rows and columns gathered, equal to computing them."""
    x, y, xt, ctx = data(n=16)
    model = FAMILIES["cnn_gap"](depth=1)
    calls = cnn_gap_calls
    algo = NTK(ridge=1e-3)
    algo.fit_predict(model, [Job(x, y, xt, 0)], ctx)
    assert calls == [16, 7]
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    xp, yp = x[perm].clone(), y[perm].clone()  # new tensors: only their content matches
    xtp = xt[torch.randperm(7, generator=torch.Generator().manual_seed(2))].clone()
    jobs = [Job(xp[:n], yp[:n], xtp, 0) for n in (5, 16)]
    reused = algo.fit_predict(model, jobs, ctx)
    assert calls == [16, 7]  # nothing computed
    kernel_algorithms._CACHE.entries.clear()
    fresh = algo.fit_predict(model, jobs, ctx)
    assert calls == [16, 7, 16, 7]
    for a, b in zip(reused, fresh, strict=True):
        assert torch.allclose(a.test, b.test, rtol=1e-12, atol=1e-14)
        assert torch.allclose(a.train, b.train, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("change", ["new input", "other test set", "other kernel"])
def test_a_pool_that_is_not_a_permutation_computes_its_kernels(cnn_gap_calls, change):
    x, y, xt, ctx = data(n=16)
    model = FAMILIES["cnn_gap"](depth=1)
    calls = cnn_gap_calls
    NTK(ridge=1e-3).fit_predict(model, [Job(x, y, xt, 0)], ctx)
    x2, xt2, model2 = x.flip(0).clone(), xt.clone(), model
    if change == "new input":
        x2[3] += 1e-3
    elif change == "other test set":
        xt2[0] += 1e-3
    else:
        model2 = FAMILIES["cnn_gap"](depth=2)
    NTK(ridge=1e-3).fit_predict(model2, [Job(x2, y, xt2, 0)], ctx)
    assert calls == [16, 7, 16, 7]

"""The Nystrom approximation of nngp / ntk (``approximation``, ``landmarks``) against oracles:
exact kernel regression where every training input is a landmark, the Nystrom formula
solved directly, the choice ``auto`` makes, the values ``check`` refuses, and a study."""

from __future__ import annotations

import pytest
import torch
from optuna.trial import TrialState

from dmisearch.components import Job, RunContext, augmented
from dmisearch.errors import StudyFileError
from dmisearch.runner import run_study
from dmisearch.study_file import build_spec
from dmisearch_builtins import kernel_algorithms
from dmisearch_builtins.architectures import FAMILIES
from dmisearch_builtins.data import Teacher
from dmisearch_builtins.kernel_algorithms import NNGP, NTK
from dmisearch_builtins.kernels import kernel
from dmisearch_builtins.transforms import Shift

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def teacher(n: int, n_test: int, shape=(1, 8)):
    """A cnn_gap teacher's regression problem: (x, y, x_test, y_test, ctx)."""
    split = Teacher(family="cnn_gap", shape=list(shape), width=8, depth=1).sample(n, n_test, 0)
    ctx = RunContext(torch.device("cpu"), F64, "regression", 1, shape)
    return (split.x_train.double(), split.y_train.double(), split.x_test.double(),
            split.y_test.double(), ctx)


def exact_krr(model, kind, x, y, xt, ridge):
    """The oracle: ``K(xt, x) (K + ridge mean(diag K) I)^-1 y`` by a plain solve."""
    k, kt = kernel(model, x, None, kind), kernel(model, xt, x, kind)
    lam = ridge * k.diagonal().mean()
    return kt @ torch.linalg.solve(k + lam * torch.eye(len(x), dtype=F64), y)


@pytest.mark.parametrize("arch", ["fcn", "cnn_gap"])
def test_every_training_input_a_landmark_is_exact_kernel_regression(arch):
    x, y, xt, _, ctx = teacher(24, 9)
    model = FAMILIES[arch](depth=2, sigma_b=0.2)
    ridge = 0.01
    expected = exact_krr(model, "ntk", x, y, xt, ridge)
    # the Nystrom solution with all n inputs as landmarks, through its own formula
    k = kernel(model, x, None, "ntk")
    lam = ridge * float(k.diagonal().mean())
    alpha = kernel_algorithms._nystrom_solve(k, kernel_algorithms.landmark_features(k), y, lam)
    nystrom = kernel(model, xt, x, "ntk") @ alpha
    assert torch.allclose(nystrom, expected, rtol=1e-8, atol=1e-10)
    # the algorithm: sizes up to `landmarks` are exact, even where the pool is larger
    jobs = [Job(x[:n], y[:n], xt, 0) for n in (8, 16, 24)]
    preds = NTK(ridge=ridge, approximation="nystrom", landmarks=16).fit_predict(model, jobs, ctx)
    for job, p in zip(jobs[:2], preds[:2], strict=True):
        exact = exact_krr(model, "ntk", job.x_train, job.y_train, xt, ridge)
        assert torch.allclose(p.test, exact, rtol=1e-8, atol=1e-10), job.size
    assert not torch.allclose(preds[2].test, expected, rtol=1e-4)  # 24 > 16: approximated
    (p,) = NTK(ridge=ridge, approximation="nystrom", landmarks=24).fit_predict(
        model, jobs[2:], ctx)
    assert torch.allclose(p.test, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("singular", [False, True])
@pytest.mark.parametrize("path", ["cholesky", "eigen"])
def test_landmark_features_reproduce_the_landmarks_kernel(path, singular, monkeypatch):
    """``W W^T = K_mm^+``: the Nystrom kernel of the landmarks themselves is ``K_mm``, also
    where repeated landmarks make ``K_mm`` singular, by either way of computing ``W``."""
    x = teacher(20, 1)[0]
    if singular:
        x[10:] = x[:10]
    k = kernel(FAMILIES["cnn_gap"](depth=1), x, None, "ntk")
    if path == "eigen":  # as where the Cholesky factorisation fails
        monkeypatch.setattr(torch.linalg, "cholesky_ex",
                            lambda a: (a, torch.ones((), dtype=torch.int32)))
    w = kernel_algorithms.landmark_features(k)
    assert torch.allclose(k @ w @ w.T @ k, k, rtol=1e-8, atol=1e-8 * float(k.max()))
    assert w.shape[1] == (10 if singular and path == "eigen" else 20)


@pytest.mark.parametrize("cls", [NNGP, NTK])
def test_nystrom_predictions_are_the_nystrom_formula_and_near_exact(cls):
    """m < n: the prediction is ``K_xm (K_mn K_nm + lam K_mm)^-1 K_mn y`` with the pool's
    first m inputs as landmarks and ``lam`` from ``K_mm``'s mean diagonal. On a cnn_gap
    teacher with 3/4 of the inputs as landmarks and a ridge of 0.1 its test error is within
    5% of exact kernel regression's (measured: +1.0% nngp, +2.9% ntk), and well below that
    of exact kernel regression on the landmarks alone (the other inputs count)."""
    n, m, ridge = 200, 150, 0.1
    x, y, xt, yt, ctx = teacher(n, 200)
    model = FAMILIES["cnn_gap"](depth=1)
    kind = cls.kernel_kind
    (pred,) = cls(ridge=ridge, approximation="nystrom", landmarks=m).fit_predict(
        model, [Job(x, y, xt, 0)], ctx)
    k_nm, k_xm = kernel(model, x, x[:m], kind), kernel(model, xt, x[:m], kind)
    k_mm = k_nm[:m]
    lam = ridge * k_mm.diagonal().mean()
    alpha = torch.linalg.solve(k_nm.T @ k_nm + lam * k_mm, k_nm.T @ y)
    assert torch.allclose(pred.test, k_xm @ alpha, rtol=1e-7, atol=1e-9)
    assert torch.allclose(pred.train, k_nm @ alpha, rtol=1e-7, atol=1e-9)

    def mse(p):
        return float(((p - yt) ** 2).mean())

    exact = mse(exact_krr(model, kind, x, y, xt, ridge))
    nystrom = mse(pred.test)
    on_landmarks = mse(exact_krr(model, kind, x[:m], y[:m], xt, ridge))
    assert abs(nystrom / exact - 1) < 0.05, (nystrom, exact)
    assert nystrom < exact + 0.5 * (on_landmarks - exact), (nystrom, exact, on_landmarks)


def test_augmented_nystrom_approximates_the_group_averaged_kernel():
    """``ntk+shift`` with landmarks: the Nystrom formula with ``mean_g K(x, g l)``."""
    x, y, xt, _, ctx = teacher(12, 5, shape=(1, 4))
    model = FAMILIES["cnn_vec"](depth=1, sigma_b=0.1)
    m, ridge = 6, 0.05
    (pred,) = augmented(NTK, Shift())(ridge=ridge, approximation="nystrom",
                                      landmarks=m).fit_predict(model, [Job(x, y, xt, 0)], ctx)
    orbit = Shift().orbit(x[:m])  # (4, m, 1, 4)

    def k_bar(a):
        return kernel(model, a, orbit.reshape(4 * m, 1, 4), "ntk").reshape(len(a), 4, m).mean(1)

    k_nm, k_xm = k_bar(x), k_bar(xt)
    lam = ridge * k_nm[:m].diagonal().mean()
    alpha = torch.linalg.solve(k_nm.T @ k_nm + lam * k_nm[:m], k_nm.T @ y)
    assert torch.allclose(pred.test, k_xm @ alpha, rtol=1e-7, atol=1e-9)


def test_auto_is_exact_up_to_the_threshold_and_nystrom_beyond(monkeypatch):
    x, y, xt, _, ctx = teacher(32, 7)
    model = FAMILIES["fcn"](depth=1)
    calls = []
    real = FAMILIES["fcn"].kernel
    monkeypatch.setattr(FAMILIES["fcn"], "kernel", lambda self, a, b, kind: calls.append(
        (len(a), None if b is None else len(b))) or real(self, a, b, kind))
    monkeypatch.setattr(kernel_algorithms, "AUTO_EXACT_MAX", 16)
    algo = NTK(ridge=0.01, landmarks=8)  # approximation "auto"
    assert algo.approximation == "auto"
    assert [algo.landmark_count(p) for p in (8, 16, 17, 32)] == [None, None, 8, 8]
    assert NTK(approximation="exact", landmarks=8).landmark_count(32) is None
    assert NTK(approximation="nystrom", landmarks=8).landmark_count(9) == 8
    below = algo.fit_predict(model, [Job(x[:16], y[:16], xt, 0)], ctx)
    assert calls == [(16, None), (7, 16)]  # K(pool, pool), K(test, pool)
    assert torch.allclose(below[0].test, exact_krr(model, "ntk", x[:16], y[:16], xt, 0.01),
                          rtol=1e-8)
    calls.clear()
    above = algo.fit_predict(model, [Job(x[:n], y[:n], xt, 0) for n in (8, 24)], ctx)
    assert calls == [(8, None), (16, 8), (7, 8)]  # K_mm, K(rest of pool, marks), K(test, marks)
    assert torch.allclose(above[0].test, exact_krr(model, "ntk", x[:8], y[:8], xt, 0.01),
                          rtol=1e-8)
    assert not torch.allclose(above[1].test, exact_krr(model, "ntk", x[:24], y[:24], xt, 0.01),
                              rtol=1e-4)


@pytest.mark.parametrize(("params", "words"), [
    ({"approximation": "nystrm"}, ["approximation", "'nystrm'", "'auto', 'exact', 'nystrom'"]),
    ({"approximation": "Nystrom"}, ["approximation", "'Nystrom'"]),
    ({"landmarks": 0}, ["landmarks", ">= 1", "got 0"]),
    ({"landmarks": -5}, ["landmarks", "got -5"]),
    ({"landmarks": 2.5}, ["landmarks", "integer", "got 2.5"]),
    ({"landmarks": True}, ["landmarks", "got True"]),
])
def test_check_refuses_bad_approximation_and_landmarks(params, words):
    with pytest.raises(ValueError) as info:
        NTK(**params).check()
    assert all(w in str(info.value) for w in words), str(info.value)
    NTK(approximation="exact", landmarks=1).check()
    NNGP(approximation="nystrom", landmarks=10_000).check()


def test_a_study_file_refuses_bad_landmarks_before_trial_0(tiny_doc, registry):
    tiny_doc["search"].update(models=["fcn"], algorithms=["ntk"])
    del tiny_doc["search"]["space"]["model"]["cnn_gap"]
    tiny_doc["search"]["space"]["algorithm"] = {"ntk": {"landmarks": 0}}
    with pytest.raises(StudyFileError) as info:
        build_spec(tiny_doc, registry)
    (msg,) = info.value.problems
    assert msg.startswith("search.space.algorithm.ntk") and "landmarks" in msg, msg
    assert "got 0" in msg, msg


def test_a_study_with_nystrom_runs_and_records_its_params(tiny_doc, registry):
    """``[search.space.algorithm.ntk] approximation = "nystrom"``, ``landmarks = 8``: the
    trial records both, and its curve is the exact one at size 8 and not at 16."""
    tiny_doc["search"].update(models=["fcn"], algorithms=["ntk"], n_trials=1)
    del tiny_doc["search"]["space"]["model"]["cnn_gap"]
    curves = {}
    for approximation in ("nystrom", "exact"):
        tiny_doc["search"]["space"]["algorithm"] = {"ntk": {
            "approximation": approximation, "landmarks": 8, "ridge": 0.01}}
        (trial,) = run_study(build_spec(tiny_doc, registry, storage="memory")).trials
        assert trial.state == TrialState.COMPLETE
        params = trial.user_attrs["algorithm_params"]
        assert (params["approximation"], params["landmarks"]) == (approximation, 8), params
        curves[approximation] = trial.user_attrs["curve"]
    nystrom, exact = curves["nystrom"], curves["exact"]
    assert nystrom["size"] == exact["size"] == [8, 8, 16, 16]
    for n, a, b in zip(nystrom["size"], nystrom["test_error"], exact["test_error"],
                       strict=True):
        assert (a == pytest.approx(b, rel=1e-5)) == (n <= 8), (n, a, b)
    tiny_doc["search"]["space"]["algorithm"] = {}  # the defaults are recorded too
    (trial,) = run_study(build_spec(tiny_doc, registry, storage="memory")).trials
    params = trial.user_attrs["algorithm_params"]
    assert (params["approximation"], params["landmarks"]) == (
        "auto", NTK.param_defaults()["landmarks"])

"""The minibatch training loop, checked against exact symmetries and simple invariants.

The main oracle is the exact, per-seed O(d) symmetry of docs/science.md: an FCN trained by SGD on
inputs ``x R^T`` from first-layer weights ``W0 R^T`` predicts at ``x_test R^T`` what the run on
``x`` from ``W0`` predicts at ``x_test``, to rounding. Adam keeps only (signed) permutations.
Everything runs through ``train_one``, so the real loop (batches, loss, steps) is under test.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest
import torch

from dmisearch.components import Job, RunContext
from dmisearch.training import MinibatchAlgorithm, batch_schedule, build_module, train_one
from dmisearch_builtins.algorithms import SGD, Adam
from dmisearch_builtins.architectures import FCN
from dmisearch_builtins.layers import Dense

SHAPE = (1, 8)  # one sample: (channels, length); the FCN sees d = 8
D = math.prod(SHAPE)


pytestmark = pytest.mark.usefixtures("one_thread")


@dataclasses.dataclass(kw_only=True)
class CoupledFCN(FCN):
    """FCN built in float64 whose first Dense weight is right-multiplied by ``rot.T``.

    Registered nowhere: a test-only wrapper so that ``train_one`` trains from ``W0 R^T``.
    """

    name = "coupled_fcn_test"
    rot: torch.Tensor | None = None  # (d, d) float64; None: the plain FCN (in float64)

    def build(self, input_shape, out_dim):
        module = super().build(input_shape, out_dim).double()
        if self.rot is not None:
            first = next(m for m in module.modules() if isinstance(m, Dense))
            with torch.no_grad():
                first.weight.copy_(first.weight @ self.rot.T)
        return module


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_orthogonal(d: int, seed: int) -> torch.Tensor:
    """Haar-random orthogonal matrix (QR of a Gaussian with the sign fix)."""
    a = torch.randn(d, d, generator=gen(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r))


def signed_permutation(d: int, seed: int, signs: bool) -> torch.Tensor:
    g = gen(seed)
    p = torch.eye(d, dtype=torch.float64)[torch.randperm(d, generator=g)]
    if signs:
        s = torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
        assert (s < 0).any() and (s > 0).any()
        p = s[:, None] * p
    assert not torch.equal(p, torch.eye(d, dtype=torch.float64))
    return p


def rotate(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``x R^T`` on the flattened sample."""
    return (x.reshape(len(x), -1) @ r.T).reshape(x.shape)


def ctx(task: str, out_dim: int) -> RunContext:
    return RunContext(device=torch.device("cpu"), dtype=torch.float64, task=task,
                      out_dim=out_dim, input_shape=SHAPE)


def problem(task: str, n=16, n_test=10, seed=0):
    """A small data set: inputs N(0, I); a nonlinear target (regression) or 3 classes."""
    g = gen(seed)
    x = torch.randn(n + n_test, *SHAPE, generator=g, dtype=torch.float64)
    w = torch.randn(D, 2, generator=g, dtype=torch.float64) / math.sqrt(D)
    z = x.reshape(len(x), -1) @ w
    if task == "regression":
        y, out_dim = torch.sin(2 * z) + 0.5 * z**2, 2
    else:
        y, out_dim = (z[:, 0] > 0).long() + (z[:, 1] > 0.5).long(), 3
    return x[:n], y[:n], x[n:], out_dim


def rel_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def coupled_runs(algo, task, r, seed=3, parameterization="standard"):
    """(run on x from W0, run on x R^T from W0 R^T, run on x R^T from W0), predictions."""
    x, y, xt, out_dim = problem(task)
    c = ctx(task, out_dim)
    kw = dict(depth=2, width=16, sigma_b=0.3, parameterization=parameterization)
    base = train_one(algo, CoupledFCN(**kw), Job(x, y, xt, seed), c)
    job_r = Job(rotate(x, r), y, rotate(xt, r), seed)
    coupled = train_one(algo, CoupledFCN(rot=r, **kw), job_r, c)
    uncoupled = train_one(algo, CoupledFCN(**kw), job_r, c)
    init = build_module(CoupledFCN(**kw), seed, c)
    with torch.no_grad():
        moved = rel_gap(base.test, init(xt))
    assert moved > 1e-2  # training really changed the predictions
    for p in (base, coupled, uncoupled):
        assert not p.diverged
    return base, coupled, uncoupled


# --------------------------------------------------------------------------------------------
# the O(d) symmetry of SGD on an FCN, and its breaking by Adam
# --------------------------------------------------------------------------------------------

SGD_VARIANTS = {
    "plain": SGD(lr=0.05, steps=30, batch_size=4),
    "momentum_wd": SGD(lr=0.05, steps=30, batch_size=4, momentum=0.9, weight_decay=1e-2),
    "nesterov": SGD(lr=0.05, steps=30, batch_size=4, momentum=0.5, nesterov=True),
}


@pytest.mark.parametrize("task", ("regression", "classification"))
@pytest.mark.parametrize("variant", list(SGD_VARIANTS))
def test_sgd_fcn_is_exactly_rotation_equivariant(task, variant):
    algo = SGD_VARIANTS[variant]
    algo.check()
    r = random_orthogonal(D, seed=1)
    torch.testing.assert_close(r @ r.T, torch.eye(D, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (r.abs() > 1e-3).sum() > 2 * D  # a genuine rotation, not a (signed) permutation
    base, coupled, uncoupled = coupled_runs(algo, task, r)
    assert rel_gap(coupled.test, base.test) < 1e-9
    assert rel_gap(coupled.train, base.train) < 1e-9
    torch.testing.assert_close(coupled.losses, base.losses, rtol=1e-9, atol=0)
    # Control: rotating the data without rotating W0 is a different (random) run.
    assert rel_gap(uncoupled.test, base.test) > 1e-2


def test_sgd_equivariance_holds_in_ntk_parameterization():
    r = random_orthogonal(D, seed=2)
    base, coupled, _ = coupled_runs(SGD(lr=0.5, steps=30, batch_size=4), "regression", r,
                                    parameterization="ntk")
    assert rel_gap(coupled.test, base.test) < 1e-9


ADAM = Adam(lr=0.01, steps=30, batch_size=4, weight_decay=1e-3)


@pytest.mark.parametrize("task", ("regression", "classification"))
def test_adam_breaks_rotation_equivariance(task):
    base, coupled, _ = coupled_runs(ADAM, task, random_orthogonal(D, seed=1))
    assert rel_gap(coupled.test, base.test) > 1e-3


@pytest.mark.parametrize("task", ("regression", "classification"))
@pytest.mark.parametrize("signs", (False, True), ids=("permutation", "signed_permutation"))
def test_adam_is_signed_permutation_equivariant(task, signs):
    # Adam's update m / (sqrt(v) + eps) is coordinate-wise: permuting the first layer's
    # input coordinates permutes its gradients, moments and updates; a sign flip of a
    # coordinate flips g and m but not v, so it flips the update too (weight decay as well).
    r = signed_permutation(D, seed=4, signs=signs)
    base, coupled, uncoupled = coupled_runs(ADAM, task, r)
    assert rel_gap(coupled.test, base.test) < 1e-9
    assert rel_gap(coupled.train, base.train) < 1e-9
    assert rel_gap(uncoupled.test, base.test) > 1e-2


# --------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ("regression", "classification"))
def test_same_seed_bit_identical_different_seed_differs(task):
    x, y, xt, out_dim = problem(task)
    c = ctx(task, out_dim)
    model = FCN(depth=1, width=16)
    algo = SGD(lr=0.05, steps=20, batch_size=4, momentum=0.9)
    a = train_one(algo, model, Job(x, y, xt, 7), c)
    b = train_one(algo, model, Job(x, y, xt, 7), c)
    other = train_one(algo, model, Job(x, y, xt, 8), c)
    assert a.test.dtype == torch.float64 and a.test.shape == (len(xt), out_dim)
    assert a.train.shape == (len(x), out_dim)
    assert torch.equal(a.test, b.test) and torch.equal(a.train, b.train)
    assert torch.equal(a.losses, b.losses)
    assert rel_gap(other.test, a.test) > 1e-3
    # the module of a job is built from its seed alone: same seed, same weights
    m1, m2, m3 = (build_module(model, s, c) for s in (7, 7, 8))
    for (k, v1), v2, v3 in zip(m1.state_dict().items(), m2.state_dict().values(),
                               m3.state_dict().values(), strict=True):
        assert v1.dtype == torch.float64
        assert torch.equal(v1, v2), k
        if v1.abs().sum() > 0:  # biases are zero with sigma_b = 0
            assert not torch.equal(v1, v3), k


def test_build_module_does_not_disturb_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_module(FCN(depth=1, width=8), 5, ctx("regression", 1))
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------------------------
# batch schedule and step counts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,b,steps", [(10, 3, 7), (12, 4, 9), (5, 5, 4), (7, 1, 15), (9, 2, 1)])
def test_batch_schedule_epochs_are_permutation_prefixes(n, b, steps):
    order = batch_schedule(n, b, steps, seed=11)
    assert order.shape == (steps, b) and order.dtype == torch.int64
    assert torch.equal(order, batch_schedule(n, b, steps, seed=11))
    per_epoch = n // b
    for start in range(0, steps, per_epoch):
        block = order[start:start + per_epoch].flatten()
        assert len(set(block.tolist())) == len(block), (start, block)
        assert block.min() >= 0 and block.max() < n
        if start + per_epoch <= steps and n % b == 0:
            assert torch.equal(block.sort().values, torch.arange(n))  # every sample once
    if steps >= 2 * per_epoch and n > 2:  # each epoch reshuffles
        assert not torch.equal(order[:per_epoch], order[per_epoch:2 * per_epoch])


def test_batch_schedule_depends_on_seed_and_is_a_prefix_in_steps():
    a = batch_schedule(20, 4, 12, seed=1)
    assert not torch.equal(a, batch_schedule(20, 4, 12, seed=2))
    # drawing fewer steps gives the first rows of the same schedule
    assert torch.equal(batch_schedule(20, 4, 7, seed=1), a[:7])


@pytest.mark.parametrize("epochs", (0.5, 1, 1.25, 2.5, 3, 0.01))
@pytest.mark.parametrize("n,batch_size", [(10, 3), (64, 8), (10, 64), (37, 5)])
def test_n_steps_with_epochs(epochs, n, batch_size):
    algo = SGD(epochs=epochs, batch_size=batch_size, steps=999)
    algo.check()
    batch = min(batch_size, n)
    expected = max(1, math.ceil(Fraction(epochs) * (n // batch)))  # exact arithmetic
    assert expected == max(1, math.ceil(epochs * (n // batch)))
    assert algo.n_steps(n) == expected
    assert SGD(batch_size=batch_size, steps=17).n_steps(n) == 17  # epochs unset: steps


@pytest.mark.parametrize("n,batch_size,epochs,expected", [(10, 3, 2.5, 8), (10, 64, 2.5, 3),
                                                          (12, 4, 1, 3), (16, 4, 0.3, 2)])
def test_train_one_with_epochs_runs_that_many_steps(n, batch_size, epochs, expected):
    x, y, xt, out_dim = problem("regression", n=n)
    algo = SGD(lr=0.01, epochs=epochs, batch_size=batch_size, steps=999)
    assert isinstance(algo, MinibatchAlgorithm)
    p = train_one(algo, FCN(depth=1, width=8), Job(x, y, xt, 0), ctx("regression", out_dim))
    assert p.losses is not None and len(p.losses) == expected
    assert torch.isfinite(p.losses).all()


# --------------------------------------------------------------------------------------------
# training works; divergence is reported, not raised
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", [SGD(lr=0.01, steps=300, batch_size=8),
                                  Adam(lr=0.01, steps=300, batch_size=8)], ids=("sgd", "adam"))
def test_training_fits_a_small_regression_problem(algo):
    x, y, xt, out_dim = problem("regression", n=16)
    p = train_one(algo, FCN(depth=1, width=256), Job(x, y, xt, 0), ctx("regression", out_dim))
    assert not p.diverged
    assert p.losses.shape == (300,)
    assert p.losses[-1] < p.losses[0] / 10
    # the reported training predictions are the trained module's: their MSE is small too
    assert torch.nn.functional.mse_loss(p.train, y) < p.losses[0] / 10


@pytest.mark.parametrize("task", ("regression", "classification"))
def test_huge_learning_rate_is_reported_as_diverged(task):
    # MSE blows up geometrically; cross-entropy's gradients are bounded, so its blow-up comes
    # from the product of layers: a deeper, wider ReLU net makes every seed overflow (a
    # shallow one sometimes kills all its units first and stays finite).
    x, y, xt, out_dim = problem(task)
    algo = SGD(lr=1e30, steps=30, batch_size=4)
    for seed in range(3):
        p = train_one(algo, FCN(depth=3, width=64, sigma_b=0.5), Job(x, y, xt, seed),
                      ctx(task, out_dim))
        assert p.diverged is True
        assert len(p.losses) == 30
        assert not (torch.isfinite(p.losses).all() and torch.isfinite(p.test).all()
                    and torch.isfinite(p.train).all())
    ok = train_one(SGD(lr=0.01, steps=30, batch_size=4), FCN(depth=2, width=32),
                   Job(x, y, xt, 0), ctx(task, out_dim))
    assert ok.diverged is False

"""The patches generator: shapes, determinism, scale, symmetries and locality of its targets."""

from __future__ import annotations

import math

import pytest
import torch

from dmisearch.components import DataInfo
from dmisearch.data import check_split
from dmisearch_builtins import data_patches
from dmisearch_builtins.data_patches import NONLINEARITIES, TARGETS, Patches

SHAPES = [(1, 16), (2, 6, 6)]


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def make(**kw) -> Patches:
    p = Patches(**kw)
    p.check()
    return p


def gaussian(n: int, shape, seed: int = 123) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def f(p: Patches, x: torch.Tensor) -> torch.Tensor:
    return p.target_fn(x)[:, 0].double()


# --------------------------------------------------------------------------------------------
# contract
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_split_shapes_determinism_and_target_fn(shape, target, nonlinearity):
    p = make(shape=shape, target=target, nonlinearity=nonlinearity, q=2, features=4)
    info = p.describe()
    assert info == DataInfo(input_shape=shape, task="regression", out_dim=1, n_available=None)
    s = p.sample(40, 20, seed=7)
    assert check_split(s, info, 40, 20) is None
    assert s.x_train.dtype == s.y_train.dtype == torch.float32
    # Same arguments, same tensors, also after the cache is dropped (rebuilt from the seed).
    data_patches._model.cache_clear()
    s2 = Patches(shape=list(shape), target=target, nonlinearity=nonlinearity, q=2,
                 features=4).sample(40, 20, seed=7)
    for a, b in zip((s.x_train, s.y_train, s.x_test, s.y_test),
                    (s2.x_train, s2.y_train, s2.x_test, s2.y_test), strict=True):
        assert torch.equal(a, b)
    # Another sample seed: other inputs, the same target function.
    s3 = p.sample(40, 20, seed=8)
    assert not torch.equal(s.x_train, s3.x_train)
    x = torch.cat([s.x_train, s.x_test, s3.x_train])
    y = torch.cat([s.y_train, s.y_test, s3.y_train])
    torch.testing.assert_close(p.target_fn(x), y, rtol=0, atol=0)
    assert not {r.tobytes() for r in s.x_train.reshape(40, -1).numpy()} & {
        r.tobytes() for r in s.x_test.reshape(20, -1).numpy()}


def test_empty_sample_and_test_set_independent_of_n_train():
    p = make(shape=(1, 8))
    s = p.sample(0, 0, seed=1)
    assert s.x_train.shape == (0, 1, 8) and s.y_test.shape == (0, 1)
    a, b = p.sample(5, 10, seed=2), p.sample(50, 10, seed=2)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    with pytest.raises(ValueError, match="n_train"):
        p.sample(-1, 3, seed=0)


def test_does_not_touch_global_rng():
    state = torch.get_rng_state()
    data_patches._model.cache_clear()
    make(shape=(1, 8), target="local", nonlinearity="relu", seed=5).sample(10, 10, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_seed_changes_function_not_inputs():
    a = make(shape=(1, 12), seed=0).sample(30, 5, seed=3)
    b = make(shape=(1, 12), seed=1).sample(30, 5, seed=3)
    assert torch.equal(a.x_train, b.x_train)
    assert (a.y_train - b.y_train).abs().max() > 1e-2


# --------------------------------------------------------------------------------------------
# scale and noise
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_unit_variance_and_zero_mean(target, nonlinearity):
    p = make(shape=(1, 10), target=target, nonlinearity=nonlinearity, q=3, features=8)
    n = 8000
    y = p.sample(0, n, seed=11).y_test[:, 0].double()
    var = float(y.var())
    # The scale was estimated from SCALE_SAMPLES other inputs and the variance here from n:
    # a sample variance has relative standard error sqrt((kurtosis - 1) / n), so their ratio
    # has sqrt((kurtosis - 1) (1/n + 1/SCALE_SAMPLES)). Allow 4 of those (kurtosis estimated).
    kurt = float(((y - y.mean()) ** 4).mean() / var ** 2)
    tol = 4 * math.sqrt((kurt - 1) * (1 / n + 1 / data_patches.SCALE_SAMPLES))
    assert abs(var - 1) < tol, (var, tol)
    # Every target has mean exactly 0 (Wick products; centred units): 4 standard errors.
    assert abs(float(y.mean())) < 4 / math.sqrt(n)


def test_noise_adds_its_variance_to_train_and_test():
    p = make(shape=(1, 10), noise=0.5)
    s = p.sample(4000, 4000, seed=1)
    for x, y in ((s.x_train, s.y_train), (s.x_test, s.y_test)):
        resid = (y - p.target_fn(x)).double()
        # std of n Gaussian draws: relative error about 1/sqrt(2n) = 1.1%; allow 5%.
        assert abs(float(resid.std()) - 0.5) < 0.025
        assert abs(float(resid.mean())) < 4 * 0.5 / math.sqrt(4000)
    # The training and test noise are independent draws.
    assert not torch.equal(s.y_train - p.target_fn(s.x_train), s.y_test - p.target_fn(s.x_test))


# --------------------------------------------------------------------------------------------
# symmetries and locality
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_shift_invariance_only_for_local_invariant(shape, nonlinearity):
    x = gaussian(16, shape)
    dims = tuple(range(2, len(shape) + 1))
    shifts = [(1,), (5,)] if len(shape) == 2 else [(1, 0), (0, 2), (3, 5)]
    for target in TARGETS:
        p = make(shape=shape, target=target, nonlinearity=nonlinearity, q=2, features=4)
        y = f(p, x)
        for s in shifts:
            diff = float((f(p, torch.roll(x, shifts=s, dims=dims)) - y).abs().max())
            if target == "local_invariant":
                assert diff < 1e-5, (target, s, diff)
            else:
                assert diff > 1e-2, (target, s, diff)


def mixed_difference(p: Patches, x: torch.Tensor, i: tuple, j: tuple, h: float = 1.0):
    """f(x + h e_i + h e_j) - f(x + h e_i) - f(x + h e_j) + f(x), per row."""

    def bump(x, *idx):
        x = x.clone()
        for k in idx:
            x[(slice(None), *k)] += h
        return x

    return f(p, bump(x, i, j)) - f(p, bump(x, i)) - f(p, bump(x, j)) + f(p, x)


@pytest.mark.parametrize("shape,q,near,far", [
    ((1, 16), 3, ((0, 0), (0, 2)), ((0, 0), (0, 8))),  # 0 and 2 share the patch at 0
    ((2, 6, 6), 2, ((0, 0, 0), (1, 1, 1)), ((0, 0, 0), (1, 3, 3))),
])
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_local_targets_depend_on_coordinates_only_through_their_patches(
        shape, q, near, far, nonlinearity):
    # A sum of patch functions has zero mixed difference between two coordinates that no
    # patch holds together, whatever the patch functions are; a global target does not.
    x = gaussian(32, shape, seed=4)
    for target in TARGETS:
        p = make(shape=shape, target=target, nonlinearity=nonlinearity, q=q, features=8)
        d_far = float(mixed_difference(p, x, *far).abs().max())
        d_near = float(mixed_difference(p, x, *near).abs().max())
        if target == "global":
            assert d_far > 1e-3, d_far
        else:
            assert d_far < 1e-5, (target, d_far)
            assert d_near > 1e-3, (target, d_near)


def test_global_target_is_a_function_of_one_direction():
    p = make(shape=(2, 5, 5), target="global", degree=3)
    w = p._model().w.reshape(1, 2, 5, 5).float()
    x = gaussian(20, (2, 5, 5))
    delta = gaussian(20, (2, 5, 5), seed=9)
    coef = (delta * w).sum(dim=(1, 2, 3), keepdim=True) / (w * w).sum()
    delta = delta - coef * w  # orthogonal to w
    torch.testing.assert_close(f(p, x + delta), f(p, x), rtol=1e-4, atol=1e-4)
    assert float((f(p, x + w / w.norm()) - f(p, x)).abs().max()) > 1e-2


@pytest.mark.parametrize("target", TARGETS)
def test_polynomial_degree(target):
    shape = (1, 9)
    x = gaussian(16, shape, seed=2)
    for degree in (1, 2, 3):
        p = make(shape=shape, target=target, degree=degree)
        # A degree-k Wick product has parity (-1)^k: no lower-degree part of the other parity.
        torch.testing.assert_close(f(p, -x), (-1) ** degree * f(p, x), rtol=1e-5, atol=1e-5)
    # Degree 1 is linear (scaling only multiplies it by the normalisation constant).
    p1 = make(shape=shape, target=target, degree=1)
    y = gaussian(16, shape, seed=3)
    torch.testing.assert_close(f(p1, 2.5 * x - y), 2.5 * f(p1, x) - f(p1, y),
                               rtol=1e-5, atol=1e-5)
    # Degree 2 is a quadratic form minus its mean: f(x) = x'Mx - tr M, so
    # f(t x) = t^2 f(x) + (1 - t^2) f(0) and E f = tr M + f(0) = 0 exactly, with
    # tr M = sum_i (f(e_i) + f(-e_i) - 2 f(0)) / 2 (no constant shortcut).
    p2 = make(shape=shape, target=target, degree=2)
    zero = torch.zeros((1, *shape))
    f0 = f(p2, zero)
    torch.testing.assert_close(f(p2, 3 * x), 9 * f(p2, x) - 8 * f0, rtol=1e-5, atol=1e-4)
    eye = torch.eye(math.prod(shape)).reshape(-1, *shape)
    trace = float((f(p2, eye) + f(p2, -eye) - 2 * f0).sum() / 2)
    assert abs(trace + float(f0)) < 1e-5
    assert abs(float(f0)) > 1e-3  # the constant really is needed to centre it


# --------------------------------------------------------------------------------------------
# check()
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,text", [
    ({"shape": (16,)}, "shape must be 2 or 3"),
    ({"shape": (1, 0)}, "shape must be 2 or 3"),
    ({"shape": (1, 4, 4, 4)}, "shape must be 2 or 3"),
    ({"shape": (1, 2.0)}, "shape must be 2 or 3"),
    ({"target": "locl"}, "target must be one of"),
    ({"q": 0}, "q (patch size) must be"),
    ({"shape": (1, 8, 4), "q": 5}, "smallest spatial extent 4"),
    ({"degree": 0}, "degree must be"),
    ({"degree": 9}, "degree must be"),
    ({"nonlinearity": "gelu"}, "nonlinearity must be one of"),
    ({"features": 0}, "features must be"),
    ({"noise": -0.1}, "noise must be"),
    ({"noise": float("nan")}, "noise must be"),
    ({"seed": -1}, "seed must be"),
    ({"seed": True}, "seed must be"),
])
def test_check_names_the_parameter(kw, text):
    with pytest.raises(ValueError) as info:
        Patches(**kw).check()
    assert text in str(info.value)


def test_q_may_span_the_whole_input():
    p = make(shape=(1, 4, 4), q=4, target="local")
    assert check_split(p.sample(3, 3, seed=0), p.describe(), 3, 3) is None


def test_single_target_depends_on_the_first_patch_only():
    p = make(shape=(1, 12), target="single", q=3, degree=2)
    x = gaussian(16, (1, 12), seed=5)
    outside = x.clone()
    outside[:, :, 3:] = gaussian(16, (1, 9), seed=6)  # every coordinate but the first patch
    torch.testing.assert_close(f(p, outside), f(p, x), rtol=1e-6, atol=1e-6)
    inside = x.clone()
    inside[:, :, 1] += 1.0
    assert float((f(p, inside) - f(p, x)).abs().max()) > 1e-2

"""Built-in data generators: teacher and digits, checked against oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmisearch.components import DataInfo
from dmisearch.data import check_split
from dmisearch_builtins import data as builtin_data
from dmisearch_builtins.architectures import FAMILIES
from dmisearch_builtins.data import Digits, Teacher

SHAPES = [(1, 16), (1, 6, 6)]


def small_teacher(family: str, shape, **kw) -> Teacher:
    t = Teacher(family=family, shape=shape, width=8, **kw)
    t.check()
    return t


# --------------------------------------------------------------------------------------------
# teacher
# --------------------------------------------------------------------------------------------


def test_teacher_uses_every_architecture_family():
    assert set(FAMILIES) == {"fcn", "lcn", "cnn_vec", "cnn_gap"}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_teacher_split_shapes_determinism_and_target(family, shape):
    t = small_teacher(family, shape)
    info = t.describe()
    assert info == DataInfo(input_shape=shape, task="regression", out_dim=1, n_available=None)
    s = t.sample(50, 30, seed=7)
    assert check_split(s, info, 50, 30) is None
    assert s.x_train.dtype == s.y_train.dtype == torch.float32
    # Same arguments, same tensors, also after the teacher cache is dropped (rebuilt from seed).
    builtin_data._teacher.cache_clear()
    s2 = Teacher(family=family, shape=list(shape), width=8).sample(50, 30, seed=7)
    for a, b in zip((s.x_train, s.y_train, s.x_test, s.y_test),
                    (s2.x_train, s2.y_train, s2.x_test, s2.y_test), strict=True):
        assert torch.equal(a, b)
    # Another sample seed: other inputs, but the same target function.
    s3 = t.sample(50, 30, seed=8)
    assert not torch.equal(s.x_train, s3.x_train)
    x = torch.cat([s.x_train, s.x_test, s3.x_train])
    y = torch.cat([s.y_train, s.y_test, s3.y_train])
    torch.testing.assert_close(t.target(x), y, rtol=1e-5, atol=1e-6)
    # Train and test are distinct draws.
    assert not {r.tobytes() for r in s.x_train.reshape(50, -1).numpy()} & {
        r.tobytes() for r in s.x_test.reshape(30, -1).numpy()}


def test_teacher_does_not_touch_global_rng():
    state = torch.get_rng_state()
    builtin_data._teacher.cache_clear()
    small_teacher("cnn_gap", (1, 16), seed=123).sample(10, 10, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_teacher_seed_changes_weights_not_inputs():
    a = small_teacher("fcn", (1, 16), seed=0).sample(20, 10, seed=3)
    b = small_teacher("fcn", (1, 16), seed=1).sample(20, 10, seed=3)
    assert torch.equal(a.x_train, b.x_train)  # inputs depend on the sample seed only
    assert (a.y_train - b.y_train).abs().max() > 1e-2


def test_teacher_test_set_does_not_depend_on_n_train():
    t = small_teacher("cnn_vec", (1, 16))
    a, b = t.sample(10, 20, seed=5), t.sample(100, 20, seed=5)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_teacher_target_has_unit_variance(family, shape):
    # The scale is estimated from 4096 fixed inputs, and we check on n fresh ones: the
    # relative error of each variance estimate is sqrt((kurtosis - 1) / samples), so the
    # two together deviate from 1 by sigma = sqrt((k - 1) * (1/4096 + 1/n)); allow 5 sigma.
    n = 20000
    y = small_teacher(family, shape).sample(n, 0, seed=11).y_train.double().squeeze(1)
    var = float(y.var())
    kurt = float(((y - y.mean()) ** 4).mean() / var**2)
    sigma = math.sqrt((kurt - 1) * (1 / 4096 + 1 / n))
    assert abs(var - 1) < 5 * sigma, (var, kurt, sigma)
    assert 5 * sigma < 0.25  # the check is sharp enough to mean something


def test_teacher_noise_adds_variance_noise_squared_to_train_and_test():
    n, noise = 20000, 0.5
    clean = small_teacher("cnn_gap", (1, 16)).sample(n, n, seed=2)
    noisy = small_teacher("cnn_gap", (1, 16), noise=noise).sample(n, n, seed=2)
    assert torch.equal(clean.x_train, noisy.x_train) and torch.equal(clean.x_test, noisy.x_test)
    # The difference is the noise alone: N(0, noise^2). Var estimate SE: sqrt(2/n) relative.
    tol = 5 * math.sqrt(2 / n) * noise**2
    for c, z in ((clean.y_train, noisy.y_train), (clean.y_test, noisy.y_test)):
        e = (z - c).double()
        assert abs(float(e.var()) - noise**2) < tol
        assert abs(float(e.mean())) < 5 * noise / math.sqrt(n)
    # Train and test noises are independent draws.
    assert not torch.allclose(noisy.y_train - clean.y_train, noisy.y_test - clean.y_test)


@pytest.mark.parametrize("shape,dims,shift", [((1, 16), (-1,), (5,)),
                                              ((1, 6, 6), (-2, -1), (2, 3))])
def test_cnn_gap_teacher_is_shift_invariant_and_fcn_is_not(shape, dims, shift):
    x = torch.randn((64, *shape), generator=torch.Generator().manual_seed(0))
    xr = torch.roll(x, shift, dims=dims)
    gap = small_teacher("cnn_gap", shape)
    torch.testing.assert_close(gap.target(xr), gap.target(x), rtol=0, atol=1e-5)
    for family in ("fcn", "lcn", "cnn_vec"):
        t = small_teacher(family, shape)
        assert (t.target(xr) - t.target(x)).abs().max() > 1e-2, family


@pytest.mark.parametrize("shape", SHAPES)
def test_sphere_inputs_have_norm_sqrt_d(shape):
    s = small_teacher("fcn", shape, inputs="sphere").sample(100, 50, seed=0)
    d = math.prod(shape)
    for x in (s.x_train, s.x_test):
        norms = x.reshape(len(x), -1).double().norm(dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, math.sqrt(d)), rtol=1e-5,
                                   atol=0)
    # Still isotropic-looking: not all the same direction.
    assert s.x_train.reshape(100, -1).std(dim=0).min() > 0.5


@pytest.mark.parametrize(
    "kw,param",
    [
        (dict(family="resnet"), "family"),
        (dict(shape=(16,)), "shape"),
        (dict(shape=(1, 2, 3, 4)), "shape"),
        (dict(shape=(1, 0)), "shape"),
        (dict(noise=-0.1), "noise"),
        (dict(noise=float("nan")), "noise"),
        (dict(inputs="uniform"), "inputs"),
        (dict(seed=-1), "seed"),
        (dict(family="cnn_gap", depth=0), "depth"),
        (dict(family="lcn", shape=(1, 3), filter_size=5), "filter_size"),
        (dict(activation="swish"), "activation"),
    ],
)
def test_teacher_check_names_the_parameter(kw, param):
    with pytest.raises(ValueError, match=param):
        Teacher(**kw).check()


def test_teacher_default_and_list_shapes_are_valid():
    Teacher().check()
    t = Teacher(family="fcn", shape=[2, 3, 3], width=4)
    t.check()
    assert t.describe().input_shape == (2, 3, 3)
    assert t.sample(3, 2, seed=0).x_train.shape == (3, 2, 3, 3)


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


def reference_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    b = load_digits()
    x = b.images.astype(np.float64) / 16.0
    x = (x - x.mean()) / x.std()
    return x.reshape(1797, 64), b.target


def rows(t: torch.Tensor) -> set[bytes]:
    return {r.tobytes() for r in t.reshape(len(t), -1).numpy()}


def test_digits_describe():
    assert Digits().describe() == DataInfo(
        input_shape=(1, 8, 8), task="classification", out_dim=10, n_available=1797
    )


def test_digits_split_shapes_dtypes_and_disjoint():
    d = Digits()
    d.check()
    s = d.sample(300, 200, seed=0)
    assert check_split(s, d.describe(), 300, 200) is None
    assert s.x_train.shape == (300, 1, 8, 8) and s.x_test.shape == (200, 1, 8, 8)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert s.y_train.shape == (300,) and s.y_test.shape == (200,)
    # The 1797 images are all distinct, so disjoint samples have disjoint rows.
    assert len(rows(s.x_train)) == 300 and len(rows(s.x_test)) == 200
    assert not rows(s.x_train) & rows(s.x_test)
    assert set(s.y_train.tolist()) == set(range(10))


def test_digits_full_draw_is_the_normalised_dataset_with_its_labels():
    x_ref, y_ref = reference_digits()
    s = Digits().sample(1000, 797, seed=4)
    x = torch.cat([s.x_train, s.x_test]).reshape(1797, 64).double().numpy()
    y = torch.cat([s.y_train, s.y_test]).numpy()
    assert abs(x.mean()) < 1e-6 and abs(x.std() - 1) < 1e-6
    # Match every drawn row to its reference image: a bijection, labels carried along.
    order_drawn = np.lexsort(x.T[::-1])
    order_ref = np.lexsort(x_ref.T[::-1])
    np.testing.assert_allclose(x[order_drawn], x_ref[order_ref], atol=1e-6)
    np.testing.assert_array_equal(y[order_drawn], y_ref[order_ref])


def test_digits_without_normalisation_are_raw_pixels():
    s = Digits(normalize=False).sample(100, 0, seed=0)
    v = s.x_train.unique()
    assert float(v.min()) == 0 and float(v.max()) == 16
    assert torch.equal(v, v.round())


def test_digits_deterministic_in_seed():
    d = Digits()
    a, b, c = d.sample(100, 50, seed=1), d.sample(100, 50, seed=1), d.sample(100, 50, seed=2)
    for t in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, t), getattr(b, t))
    assert not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.x_test, c.x_test)
    # Mutating a returned tensor does not leak into later draws.
    a.x_train.zero_()
    assert torch.equal(d.sample(100, 50, seed=1).x_train, b.x_train)


def test_digits_too_many_samples():
    Digits().sample(1797, 0, seed=0)
    with pytest.raises(ValueError, match="1797"):
        Digits().sample(1500, 298, seed=0)
    with pytest.raises(ValueError, match="n_test"):
        Digits().sample(10, -1, seed=0)


def test_digits_check_names_the_parameter():
    with pytest.raises(ValueError, match="normalize"):
        Digits(normalize="yes").check()


def test_plugin_manager_accepts_the_module():
    from dmisearch.plugins import load_registry

    reg = load_registry(entry_points=False, plugins=[builtin_data])
    assert not reg.problems, reg.problems
    assert reg.get("data", "teacher") is Teacher and reg.get("data", "digits") is Digits


def test_register_hook_registers_all_five():
    got = []
    builtin_data.register_data_generators(register=got.append)
    assert got[:2] == [Teacher, Digits]
    assert [c.name for c in got] == ["teacher", "digits", "patches", "file", "mnist1d"]
    assert all(c.summary() for c in got)

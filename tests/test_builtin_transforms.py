"""Built-in transforms: rotate, permute, shift, checked against oracles."""

from __future__ import annotations

import importlib.util
import itertools
import math

import pytest
import torch

from dmisearch.data import Composed, check_split
from dmisearch_builtins import transforms as builtin_transforms
from dmisearch_builtins.data import Digits
from dmisearch_builtins.transforms import Permute, Rotate, Shift


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(shape, seed=0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=dtype)


# --------------------------------------------------------------------------------------------
# rotate
# --------------------------------------------------------------------------------------------


def test_rotate_is_orthogonal_and_preserves_norms():
    d = 48
    q = Rotate(seed=0).matrix(d)
    assert q.dtype == torch.float64 and q.shape == (d, d)
    torch.testing.assert_close(q @ q.T, torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-10)
    x = batch((20, 3, 4, 4))
    y = Rotate(seed=0).apply(x, gen(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.reshape(20, -1), x.reshape(20, -1) @ q.T)
    torch.testing.assert_close(y.reshape(20, -1).norm(dim=1), x.reshape(20, -1).norm(dim=1),
                               rtol=1e-10, atol=0)
    assert not torch.allclose(y, x)


def test_rotate_is_fixed_and_depends_on_its_seed():
    x = batch((10, 1, 16))
    r = Rotate(seed=3)
    a, b = r.apply(x, gen(0)), r.apply(x, gen(1))
    assert torch.equal(a, b)  # ignores the generator
    builtin_transforms._haar_orthogonal.cache_clear()
    assert torch.equal(Rotate(seed=3).apply(x, gen(2)), a)  # rebuilt from the seed
    assert not torch.allclose(Rotate(seed=4).apply(x, gen(0)), a)
    # Float32 in, float32 out, same map to float32 rounding.
    y32 = r.apply(x.float(), gen(0))
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), a, rtol=1e-5, atol=1e-5)


def test_rotate_is_haar_distributed_on_average():
    # Haar measure is invariant under Q -> -Q column by column, so E[Q] = 0; QR of a Gaussian
    # without the sign correction gives a biased diagonal. Each entry has variance 1/d: over
    # 300 seeds the mean's standard error is sqrt(1 / (3 * 300)) = 0.033; allow 5 of them.
    qs = torch.stack([Rotate(seed=s).matrix(3) for s in range(300)])
    assert qs.mean(0).abs().max() < 0.17
    # Determinants +1 and -1 both occur (O(d), not SO(d)).
    dets = torch.linalg.det(qs)
    assert (dets > 0).sum() > 100 and (dets < 0).sum() > 100


# --------------------------------------------------------------------------------------------
# permute
# --------------------------------------------------------------------------------------------


def test_permute_is_a_fixed_permutation():
    x = batch((12, 2, 5, 3))
    p = Permute(seed=1)
    y = p.apply(x, gen(0))
    assert y.shape == x.shape
    flat_x, flat_y = x.reshape(12, -1), y.reshape(12, -1)
    assert torch.equal(flat_x.sort(dim=1).values, flat_y.sort(dim=1).values)
    perm = p.permutation(30)
    assert torch.equal(perm.sort().values, torch.arange(30))
    assert not torch.equal(perm, torch.arange(30))
    assert torch.equal(flat_y[:, torch.argsort(perm)], flat_x)  # the inverse recovers x
    assert torch.equal(p.apply(x, gen(5)), y)  # ignores the generator
    builtin_transforms._permutation.cache_clear()
    assert torch.equal(Permute(seed=1).apply(x, gen(6)), y)
    assert not torch.equal(Permute(seed=2).apply(x, gen(0)), y)


# --------------------------------------------------------------------------------------------
# shift
# --------------------------------------------------------------------------------------------


def find_offsets(x: torch.Tensor, y: torch.Tensor) -> list[tuple[int, ...]]:
    """For each sample, the unique spatial offsets with roll(x[i]) == y[i] (asserts one)."""
    spatial = x.shape[2:]
    dims = tuple(range(1, x.ndim - 1))
    found = []
    for i in range(len(x)):
        hits = [o for o in itertools.product(*(range(L) for L in spatial))
                if torch.equal(torch.roll(x[i], o, dims=dims), y[i])]
        assert len(hits) == 1, (i, hits)
        found.append(hits[0])
    return found


def distinct(shape) -> torch.Tensor:
    # Distinct values everywhere, so a roll is identified uniquely.
    n = 1
    for s in shape:
        n *= s
    return torch.randperm(n, generator=gen(0)).reshape(shape).double()


@pytest.mark.parametrize("shape", [(40, 2, 5, 7), (40, 3, 9)])
def test_shift_is_a_random_cyclic_roll_per_sample(shape):
    x = distinct(shape)
    y = Shift().apply(x, gen(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    offsets = find_offsets(x, y)
    for axis, length in enumerate(shape[2:]):  # offsets vary across samples, on every axis
        assert len({o[axis] for o in offsets}) > length // 2
    # Uniform over all positions: the mean offset is about (L - 1) / 2 (40 samples: SE < 0.5).
    for axis, length in enumerate(shape[2:]):
        mean = sum(o[axis] for o in offsets) / len(offsets)
        assert abs(mean - (length - 1) / 2) < 2.5
    assert torch.equal(Shift().apply(x, gen(0)), y)
    assert not torch.equal(Shift().apply(x, gen(1)), y)


def test_shift_respects_max_shift():
    shape = (60, 1, 9, 8)
    x = distinct(shape)
    offsets = find_offsets(x, Shift(max_shift=1).apply(x, gen(3)))
    for axis, length in enumerate(shape[2:]):
        seen = {o[axis] for o in offsets}
        assert seen == {0, 1, length - 1}, seen  # -1 shows up as L - 1


def test_shift_rejects_inputs_without_space():
    s = Shift()
    assert s.check_input((1, 16)) is None and s.check_input((1, 4, 4)) is None
    assert "spatial" in s.check_input((16,))
    with pytest.raises(ValueError, match="spatial"):
        s.apply(torch.zeros(3, 16), gen(0))
    with pytest.raises(ValueError, match="max_shift"):
        Shift(max_shift=-1).check()
    Shift(max_shift=0).check()


def test_seed_checks_name_the_parameter():
    for cls in (Rotate, Permute):
        with pytest.raises(ValueError, match="seed"):
            cls(seed=-1).check()
        cls().check()


# --------------------------------------------------------------------------------------------
# composition and registration
# --------------------------------------------------------------------------------------------


def _mnist1d():
    from dmisearch_builtins.data_mnist1d import MNIST1D

    return MNIST1D()


@pytest.mark.parametrize("make", [Digits, pytest.param(_mnist1d, marks=pytest.mark.skipif(
    importlib.util.find_spec("mnist1d") is None, reason='needs pip install "dmisearch[mnist1d]"'
))], ids=["digits", "mnist1d"])
def test_composed_fixed_data_permute_keeps_pixel_multisets(make):
    plain = make().sample(200, 100, seed=9)
    comp = Composed(base=make(), transforms=(Permute(),))
    s = comp.sample(200, 100, seed=9)
    assert check_split(s, comp.describe(), 200, 100) is None
    for a, b in ((plain.x_train, s.x_train), (plain.x_test, s.x_test)):
        assert not torch.equal(a, b)
        assert torch.equal(a.reshape(len(a), -1).sort(dim=1).values,
                           b.reshape(len(b), -1).sort(dim=1).values)
    assert torch.equal(plain.y_train, s.y_train)


def test_composed_with_every_transform_is_valid():
    comp = Composed(base=Digits(), transforms=(Shift(max_shift=2), Rotate(), Permute()))
    s = comp.sample(50, 20, seed=1)
    assert check_split(s, comp.describe(), 50, 20) is None
    assert s.x_train.dtype == torch.float32


def test_plugin_manager_accepts_the_module():
    from dmisearch.plugins import load_registry

    reg = load_registry(entry_points=False, plugins=[builtin_transforms])
    assert not reg.problems, reg.problems
    assert set(reg.names("transform")) == {"rotate", "permute", "shift", "flip", "sign_flip"}


def test_register_hook_registers_all_five():
    got = []
    builtin_transforms.register_transforms(register=got.append)
    assert [c.name for c in got] == ["rotate", "permute", "shift", "flip", "sign_flip"]
    assert all(c.summary() for c in got)


# ---- augmentation: random group elements per sample, and finite orbits -------------------


def _distinct(shape, n=5):
    return torch.arange(n * math.prod(shape), dtype=torch.float64).reshape(n, *shape)


def test_rotate_augment_draws_an_orthogonal_matrix_per_sample():
    x = torch.randn(6, 1, 5, dtype=torch.float64)
    t = builtin_transforms.Rotate()
    a = t.augment(x, torch.Generator().manual_seed(1))
    b = t.augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.allclose(a.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), atol=1e-12)
    same = x[:1].expand(6, 1, 5)
    c = t.augment(same, torch.Generator().manual_seed(2))
    assert (c[1:] - c[:1]).abs().max() > 1e-3  # a different rotation per sample


def test_permute_augment_draws_a_permutation_per_sample():
    x = _distinct((1, 7), n=1).expand(50, 1, 7)
    y = builtin_transforms.Permute().augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(y.sort(dim=-1).values, x)
    assert len({tuple(r.flatten().tolist()) for r in y}) > 40


@pytest.mark.parametrize("shape,max_shift,size", [
    ((1, 6), None, 6), ((2, 3, 4), None, 12), ((1, 6), 1, 3), ((1, 4, 5), 1, 9),
])
def test_shift_orbit_enumerates_each_shift_once(shape, max_shift, size):
    x = _distinct(shape, n=2)
    orb = builtin_transforms.Shift(max_shift=max_shift).orbit(x)
    assert orb.shape == (size, 2, *shape) and torch.equal(orb[0], x)
    assert len({tuple(o[0].flatten().tolist()) for o in orb}) == size
    # every element is a cyclic shift of the input
    for o in orb:
        dims = tuple(range(1, len(shape)))
        assert any(torch.equal(o[0], torch.roll(x[0], s, dims=dims))
                   for s in itertools.product(*(range(n) for n in shape[1:])))


@pytest.mark.parametrize("shape,size", [((1, 5), 2), ((2, 3, 4), 4)])
def test_flip_orbit_and_apply(shape, size):
    x = _distinct(shape, n=40)
    t = builtin_transforms.Flip()
    orb = t.orbit(x)
    assert orb.shape == (size, 40, *shape) and torch.equal(orb[0], x)
    y = t.apply(x, torch.Generator().manual_seed(3))
    hits = [[torch.equal(y[i], orb[g, i]) for g in range(size)] for i in range(40)]
    assert all(sum(h) == 1 for h in hits)  # each sample is exactly one group element
    assert len({h.index(True) for h in hits}) == size  # and all elements occur
    assert t.check_input((6,)) is not None

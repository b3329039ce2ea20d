"""Built-in architectures and layers, checked against oracles.

Oracles: torch's own convolutions and an explicit-loop convolution (for ``Conv``), ``Conv``
itself (for ``LocalConv`` with tied filters), the exact chain rule between the two
parameterisations, exact cyclic-shift invariance of CNN-GAP with circular padding, and the
closed-form output variance of random ReLU networks (estimated by Monte Carlo).
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from torch import nn

from dmisearch_builtins.architectures import FAMILIES
from dmisearch_builtins.layers import (
    FOURIER_MIN_SAVING,
    PADDINGS,
    Conv,
    Dense,
    LocalConv,
    bmm_pays,
    circular_conv_fourier,
    conv_bmm,
    fourier_saving,
    oriented_baddbmm,
    same_pad,
)

CONV_FAMILIES = ("lcn", "cnn_vec", "cnn_gap")
SHAPES = {1: (2, 7), 2: (2, 5, 6)}  # (C, L) and (C, H, W); H != W catches transposed axes


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def f64():
    """Build in float64 so that exactness claims are tested to float64 rounding."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=torch.get_default_dtype())


def make(name: str, **kw):
    arch = FAMILIES[name](**kw)
    arch.check()
    return arch


def build(arch, input_shape, out_dim, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return arch.build(tuple(input_shape), out_dim)


def configs():
    """(family, nd, padding, depth) for every family, spatial dimensionality and padding."""
    out = []
    for name in FAMILIES:
        for nd in (1, 2):
            for padding in (("circular", "zeros") if name in CONV_FAMILIES else (None,)):
                for depth in (1, 2):
                    out.append((name, nd, padding, depth))
    return out


def arch_kw(name, padding, depth, **extra):
    kw = dict(depth=depth, width=4, **extra)
    if padding is not None:
        kw.update(padding=padding, filter_size=3)
    return kw


# --------------------------------------------------------------------------------------------
# shapes and determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,nd,padding,depth", configs())
def test_output_shape_and_deterministic_build(name, nd, padding, depth):
    arch = make(name, **arch_kw(name, padding, depth, sigma_b=0.3))
    shape = SHAPES[nd]
    assert arch.check_input(shape) is None
    m1, m2, m3 = (build(arch, shape, 3, seed=s) for s in (5, 5, 6))
    x = randn(4, *shape, seed=1)
    y1 = m1(x)
    assert y1.shape == (4, 3)
    assert torch.isfinite(y1).all()
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert list(s1) == list(s2) and len(s1) > 0
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    assert torch.equal(y1, m2(x))
    # A different seed gives different weights (every weight tensor, with sigma_b > 0 biases).
    for k in s1:
        assert not torch.equal(s1[k], s3[k]), k
    assert not torch.allclose(y1, m3(x))


# --------------------------------------------------------------------------------------------
# standard vs ntk parameterisation
# --------------------------------------------------------------------------------------------


def _fan_in(layer: nn.Module) -> int:
    """Fan-in computed from the stored weight's shape, independently of the layer's scales."""
    w = layer.weight
    if isinstance(layer, Dense):  # (out, in)
        return w.shape[1]
    if isinstance(layer, LocalConv):  # (positions, out, in * k**nd)
        return w.shape[-1]
    if isinstance(layer, Conv):  # (out, in, k, ...)
        return math.prod(w.shape[1:])
    raise AssertionError(type(layer))


@pytest.mark.parametrize("name,nd,padding,depth", [c for c in configs() if c[3] == 2])
def test_ntk_and_standard_same_function_scaled_gradients(f64, name, nd, padding, depth):
    sigma_w, sigma_b = 1.7, 0.6
    shape = SHAPES[nd]
    kw = arch_kw(name, padding, depth, sigma_w=sigma_w, sigma_b=sigma_b)
    std = build(make(name, parameterization="standard", **kw), shape, 2, seed=3)
    ntk = build(make(name, parameterization="ntk", **kw), shape, 2, seed=3)
    x = randn(5, *shape, seed=4)
    y_std, y_ntk = std(x), ntk(x)
    torch.testing.assert_close(y_ntk, y_std, rtol=1e-13, atol=1e-13)
    assert y_std.abs().max() > 1e-3  # not trivially zero

    # Same function of the *effective* weights W_eff = s * W_ntk, so by the chain rule
    # dL/dW_ntk = s * dL/dW_eff = s * dL/dW_std, s = sigma_w / sqrt(fan_in) (sigma_b: bias).
    target = randn(5, 2, seed=5)
    for m in (std, ntk):
        ((m(x) - target) ** 2).sum().backward()
    layers_std = [m for m in std.modules() if hasattr(m, "weight")]
    layers_ntk = [m for m in ntk.modules() if hasattr(m, "weight")]
    assert len(layers_std) == len(layers_ntk) == depth + 1
    for ls, ln in zip(layers_std, layers_ntk, strict=True):
        assert type(ls) is type(ln)
        s_w = sigma_w / math.sqrt(_fan_in(ls))
        # the stored standard weight is the NTK one times the same factor
        torch.testing.assert_close(ls.weight, s_w * ln.weight, rtol=1e-14, atol=0)
        torch.testing.assert_close(ln.weight.grad, s_w * ls.weight.grad, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(ln.bias.grad, sigma_b * ls.bias.grad, rtol=1e-10, atol=1e-14)
        # and the factor is a real one: the gradients are not equal
        assert not torch.allclose(ln.weight.grad, ls.weight.grad, rtol=1e-3, atol=0)


# --------------------------------------------------------------------------------------------
# Conv against references; LocalConv against Conv
# --------------------------------------------------------------------------------------------


def loop_conv(x, w, b, padding):
    """Explicit "same" convolution: left pad (k-1)//2, extra tap right/bottom (cross-corr.)."""
    n, c_in = x.shape[:2]
    c_out, k = w.shape[0], w.shape[2]
    nd = x.dim() - 2
    left = (k - 1) // 2
    spatial = x.shape[2:]
    y = torch.zeros(n, c_out, *spatial, dtype=x.dtype)

    def tap(pos):
        idx = []
        for p, size in zip(pos, spatial, strict=True):
            if padding == "circular":
                p %= size
            elif not 0 <= p < size:
                return None
            idx.append(p)
        return x[(slice(None), slice(None), *idx)]  # (n, c_in)

    for out_pos in itertools.product(*(range(s) for s in spatial)):
        acc = b.expand(n, c_out).clone()
        for offs in itertools.product(range(k), repeat=nd):
            v = tap([o + j - left for o, j in zip(out_pos, offs, strict=True)])
            if v is not None:
                acc = acc + v @ w[(slice(None), slice(None), *offs)].T
        y[(slice(None), slice(None), *out_pos)] = acc
    return y


CONV_CASES = [(nd, padding, k) for nd in (1, 2) for padding in ("circular", "zeros")
              for k in (1, 2, 3, 4)]


@pytest.mark.parametrize("nd,padding,k", CONV_CASES)
def test_conv_matches_reference(f64, nd, padding, k):
    torch.manual_seed(0)
    c_in, c_out = 3, 2
    spatial = (7,) if nd == 1 else (5, 6)
    conv = Conv(c_in, c_out, k, nd, padding, "ntk", 1.3, 0.5)
    x = randn(2, c_in, *spatial, seed=1)
    y = conv(x)
    assert y.shape == (2, c_out, *spatial)
    w, b = conv.scaled()
    torch.testing.assert_close(y, loop_conv(x, w, b, padding), rtol=1e-12, atol=1e-12)
    # torch's own "same" convolution (its even-filter split also puts the extra tap right).
    ref_cls = nn.Conv1d if nd == 1 else nn.Conv2d
    ref = ref_cls(c_in, c_out, k, padding="same", padding_mode=padding)
    with torch.no_grad():
        ref.weight.copy_(w)
        ref.bias.copy_(b)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch notes that even "same" filters copy the input
        y_ref = ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)


FOURIER_CASES = [((7,), 3), ((8,), 4), ((10,), 1), ((5, 6), 3), ((8, 8), 5), ((6, 5), 2),
                 ((3, 3), 3)]


def assert_is_the_grouped_convolution(form, spatial, k, padding, dtype):
    """``form(x, w, b)`` against K grouped direct convolutions of the padded input:
    outputs and every gradient."""
    nd, jobs, c_in, c_out = len(spatial), 3, 4, 5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, jobs * c_in, *spatial, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(jobs, c_out, c_in, *[k] * nd, generator=g, dtype=dtype,
                    requires_grad=True)
    b = torch.randn(jobs, c_out, generator=g, dtype=dtype, requires_grad=True)
    conv = torch.nn.functional.conv1d if nd == 1 else torch.nn.functional.conv2d
    direct = conv(same_pad(x, k, nd, padding), w.flatten(0, 1), b.flatten(), groups=jobs)
    out = form(x, w, b)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert out.shape == direct.shape
    assert float((out - direct).detach().abs().max() / direct.detach().abs().max()) < tol
    grad_out = torch.randn(direct.shape, generator=g, dtype=dtype)
    for a, c in zip(torch.autograd.grad(direct, (x, w, b), grad_out),
                    torch.autograd.grad(out, (x, w, b), grad_out), strict=True):
        assert float((a - c).abs().max() / a.abs().max()) < tol


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("spatial,k", FOURIER_CASES)
def test_fourier_form_is_the_circular_convolution(spatial, k, dtype):
    """``circular_conv_fourier``: odd and even maps (the Nyquist frequency) and filters (the
    extra right tap)."""
    assert_is_the_grouped_convolution(lambda x, w, b: circular_conv_fourier(x, w, b, k),
                                      spatial, k, "circular", dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("spatial,k", [((7,), 3), ((8,), 4), ((10,), 1), ((5, 6), 3),
                                       ((6, 5), 2)])
def test_batched_matmul_form_is_the_grouped_convolution(spatial, k, padding, dtype):
    """``conv_bmm`` on the padded input, 1-D and 2-D, both paddings."""
    nd = len(spatial)
    assert_is_the_grouped_convolution(
        lambda x, w, b: conv_bmm(same_pad(x, k, nd, padding), w, b, k), spatial, k, padding,
        dtype)


def test_batched_matmul_form_is_for_wide_1d_cuda_without_tf32_and_1d_cpu_first_layers(
        monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert bmm_pays(cuda, 1, 16, 64) and bmm_pays(cuda, 1, 256, 64)
    assert not bmm_pays(cuda, 1, 256, 1) and not bmm_pays(cuda, 1, 10, 32)
    assert not bmm_pays(cuda, 2, 256, 64) and not bmm_pays(cpu, 1, 256, 64)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert not bmm_pays(cuda, 1, 256, 64)
    # the CPU: 1-D with one input channel per job, any number of jobs; not 2-D, not wider
    assert bmm_pays(cpu, 1, 1, 1) and bmm_pays(cpu, 1, 64, 1)
    assert not bmm_pays(cpu, 2, 16, 1) and not bmm_pays(cpu, 1, 16, 2)


def test_batched_conv_takes_the_fourier_form_where_it_saves_work(monkeypatch, f64):
    import dmisearch_builtins.layers as layers

    calls = []
    real = layers.circular_conv_fourier
    monkeypatch.setattr(layers, "circular_conv_fourier",
                        lambda *a: calls.append(a[1].shape) or real(*a))
    assert fourier_saving(32, 32, 5, (8, 8)) > 3 > fourier_saving(32, 32, 3, (8, 8)) > 1
    assert fourier_saving(32, 32, 5, (28, 28)) < 1  # dense DFTs grow with the map squared
    x = randn(4, 2 * 16, 8, 8, seed=3)
    assert fourier_saving(16, 16, 5, (8, 8)) >= FOURIER_MIN_SAVING > fourier_saving(
        16, 16, 3, (8, 8))
    for padding, k, fourier in (("circular", 5, True), ("circular", 3, False),
                                ("zeros", 5, False)):
        calls.clear()
        conv = Conv(16, 16, k, 2, padding, "standard", 1.3, 0.5)
        w = torch.stack([conv.weight, 2 * conv.weight])
        b = torch.stack([conv.bias, -conv.bias])
        y = conv.batched(w, b, x)
        assert bool(calls) == fourier, (padding, k)
        assert fourier == (padding == "circular" and fourier_saving(16, 16, k, (8, 8))
                           >= FOURIER_MIN_SAVING)
        with torch.no_grad():  # job 1 is the same layer with doubled weights, negated bias
            conv.weight.mul_(2)
            conv.bias.neg_()
        torch.testing.assert_close(y[:, 16:], conv(x[:, 16:]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("rows,inner,cols", [(40, 7, 3), (40, 7, 1), (3, 7, 5), (6, 5, 20),
                                             (17, 4, 15)])
def test_oriented_product_is_baddbmm(monkeypatch, rows, inner, cols, dtype):
    """``oriented_baddbmm`` against ``torch.baddbmm``: value and every gradient, for narrow
    results (computed transposed), wide ones and the boundary; and the narrow case really
    takes the transposed form."""
    import dmisearch_builtins.layers as layers

    g = torch.Generator().manual_seed(1)
    leaves = [torch.randn(*s, generator=g, dtype=dtype, requires_grad=True)
              for s in ((4, 1, cols), (4, rows, inner), (4, cols, inner))]
    bias, a, bt = leaves
    b = bt.mT  # a transposed weight, as Dense passes it
    calls = []
    real = torch.baddbmm
    monkeypatch.setattr(layers.torch, "baddbmm", lambda *x: calls.append(
        tuple(x[0].shape)) or real(*x))
    monkeypatch.setattr(layers, "ORIENT_MIN_MACS", 0)
    out = oriented_baddbmm(bias, a, b)
    narrow = cols < layers.NARROW and rows > cols
    assert calls == [(4, cols, 1) if narrow else (4, 1, cols)]
    monkeypatch.setattr(layers.torch, "baddbmm", real)
    ref = torch.baddbmm(bias, a, b)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    grad_out = torch.randn(ref.shape, generator=g, dtype=dtype)
    for got, want in zip(torch.autograd.grad(out, leaves, grad_out),
                         torch.autograd.grad(ref, leaves, grad_out), strict=True):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("nd,padding,k", CONV_CASES)
def test_localconv_with_tied_filters_is_conv(f64, nd, padding, k):
    torch.manual_seed(0)
    c_in, c_out = 3, 2
    spatial = (7,) if nd == 1 else (5, 6)
    for param in ("standard", "ntk"):
        conv = Conv(c_in, c_out, k, nd, padding, param, 1.3, 0.5)
        lc = LocalConv(c_in, c_out, k, spatial, padding, param, 1.3, 0.5)
        P = math.prod(spatial)
        assert lc.weight.shape == (P, c_out, c_in * k**nd) and lc.bias.shape == (P, c_out)
        with torch.no_grad():
            lc.weight.copy_(conv.weight.reshape(c_out, -1).expand(P, -1, -1))
            lc.bias.copy_(conv.bias.expand(P, -1))
        x = randn(3, c_in, *spatial, seed=2)
        y = lc(x)
        assert y.shape == (3, c_out, *spatial)
        torch.testing.assert_close(y, conv(x), rtol=1e-12, atol=1e-12)
    # Untied filters compute something else (the layer is really local, not shared).
    with torch.no_grad():
        lc.weight[0].mul_(-1.0)
    assert not torch.allclose(lc(x), conv(x))


def test_localconv_position_p_uses_its_own_filter(f64):
    """Only position p's output changes when W[p] changes (positions in row-major order)."""
    torch.manual_seed(0)
    spatial = (4, 5)
    lc = LocalConv(2, 3, 3, spatial, "circular", "standard", 1.0, 0.5)
    x = randn(2, 2, *spatial, seed=3)
    y0 = lc(x)
    p = 7  # row 1, column 2
    with torch.no_grad():
        lc.weight[p].mul_(2.0)
        lc.bias[p].add_(1.0)
    diff = (lc(x) - y0).abs().sum(dim=(0, 1))
    assert diff[1, 2] > 1e-3
    diff[1, 2] = 0
    assert diff.max() == 0


# --------------------------------------------------------------------------------------------
# cyclic-shift invariance
# --------------------------------------------------------------------------------------------


def _max_shift_gap(model, x, nd):
    y = model(x)
    gaps = []
    for axis in range(2, 2 + nd):
        for s in (1, 2, -1):
            gaps.append(((model(torch.roll(x, s, dims=axis)) - y).abs().max() /
                         y.abs().max()).item())
    return gaps


@pytest.mark.parametrize("nd", (1, 2))
def test_cnn_gap_circular_is_shift_invariant_others_not(f64, nd):
    shape = SHAPES[nd]
    x = randn(4, *shape, seed=7)
    kw = dict(depth=2, width=5, filter_size=3, sigma_b=0.4, activation="relu")
    gap = build(make("cnn_gap", padding="circular", **kw), shape, 3, seed=1)
    assert max(_max_shift_gap(gap, x, nd)) < 1e-12
    for name, pad in (("cnn_vec", "circular"), ("lcn", "circular"), ("cnn_gap", "zeros"),
                      ("fcn", None)):
        kwn = dict(kw) if pad else dict(depth=2, width=5, sigma_b=0.4)
        if pad:
            kwn["padding"] = pad
        m = build(make(name, **kwn), shape, 3, seed=1)
        assert min(_max_shift_gap(m, x, nd)) > 1e-3, name


# --------------------------------------------------------------------------------------------
# initialisation variance (Monte Carlo against closed forms)
# --------------------------------------------------------------------------------------------


def _mc_second_moment(arch, x, out_dim, models):
    """Per-model mean over outputs of f_k(x)^2; i.i.d. across models, mean Var f(x)."""
    q = []
    for s in range(models):
        m = build(arch, x.shape[1:], out_dim, seed=1000 + s).double()
        with torch.no_grad():
            q.append((m(x) ** 2).mean().item())
    q = torch.tensor(q, dtype=torch.float64)
    return q.mean().item(), q.std().item() / math.sqrt(models)


@pytest.mark.parametrize("sigma_b", (0.0, 0.7))
def test_fcn_one_hidden_relu_output_variance(sigma_b):
    # f(x) = sum_j v_j relu(h_j) + b, h_j ~ N(0, q1), q1 = sigma_w^2 |x|^2/d + sigma_b^2,
    # v_j ~ N(0, sigma_w^2/width): Var f = sigma_w^2 E[relu(h)^2] + sigma_b^2
    # = sigma_w^2 q1 / 2 + sigma_b^2, exactly, at any width (the output mean is 0).
    # The out_dim outputs share one hidden layer, so the i.i.d. unit is the model: the
    # per-model mean of f_k^2; tolerance 5 standard errors of its mean over models.
    sigma_w, d = 1.3, 6
    x = (1.7 * randn(1, 2, 3, seed=11)).double()  # |x|^2/d far from 1
    sq = (x**2).sum().item()
    arch = make("fcn", depth=1, width=256, sigma_w=sigma_w, sigma_b=sigma_b,
                parameterization="standard")
    mean, se = _mc_second_moment(arch, x, out_dim=256, models=400)
    q1 = sigma_w**2 * sq / d + sigma_b**2
    expected = sigma_w**2 * q1 / 2 + sigma_b**2
    assert se < 0.012 * expected  # the test has the power to see a wrong factor
    assert abs(mean - expected) < 5 * se, (mean, expected, se)


def test_fcn_depth0_output_variance_adds_sigma_b_squared():
    # f(x) = W x + b: each output is exactly N(0, sigma_w^2 |x|^2 / d + sigma_b^2), and
    # outputs are independent (independent rows of W and entries of b).
    sigma_w, sigma_b, d = 1.3, 0.8, 8
    x = (0.6 * randn(1, 8, seed=12)).double()
    sq = (x**2).sum().item()
    expected = sigma_w**2 * sq / d + sigma_b**2
    arch = make("fcn", depth=0, sigma_w=sigma_w, sigma_b=sigma_b)
    mean, se = _mc_second_moment(arch, x, out_dim=500, models=200)
    # Gaussian: se of the mean of f^2 over N = 1e5 outputs is expected * sqrt(2 / N).
    assert se < 3 * expected * math.sqrt(2 / 1e5)
    assert abs(mean - expected) < 5 * se, (mean, expected, se)


# --------------------------------------------------------------------------------------------
# check() and check_input()
# --------------------------------------------------------------------------------------------

BAD_VALUES = [
    ("width", 0),
    ("activation", "sigmoid"),
    ("parameterization", "mup"),
    ("sigma_w", 0.0),
    ("sigma_w", -1.0),
    ("sigma_b", -0.1),
]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_check_rejects_bad_values_naming_the_parameter(name):
    cls = FAMILIES[name]
    cls().check()  # defaults are valid
    bad = list(BAD_VALUES)
    bad.append(("depth", cls.min_depth - 1))
    if name in CONV_FAMILIES:
        bad += [("padding", "reflect"), ("filter_size", 0)]
    for param, value in bad:
        with pytest.raises(ValueError, match=param):
            cls(**{param: value}).check()
    cls(depth=cls.min_depth).check()
    assert name == "fcn" or cls.min_depth == 1


@pytest.mark.parametrize("name", CONV_FAMILIES)
def test_check_input_of_conv_nets(name):
    arch = make(name, filter_size=5)
    assert arch.check_input((1, 5)) is None
    assert arch.check_input((2, 5, 9)) is None
    assert "filter_size" in arch.check_input((1, 4))
    assert "filter_size" in arch.check_input((1, 9, 4))  # either spatial axis too small
    assert "filter_size" in arch.check_input((1, 4, 9))
    assert arch.check_input((1, 6, 6, 6)) is not None  # 3-D spatial
    assert arch.check_input((8,)) is not None  # no spatial axis


def test_fcn_accepts_any_shape():
    arch = make("fcn", depth=1, width=4)
    for shape in ((7,), (1, 3), (2, 3, 4), (1, 2, 2, 2)):
        assert arch.check_input(shape) is None
        y = build(arch, shape, 2)(randn(3, *shape))
        assert y.shape == (3, 2)

"""The fused engine against the one-model-at-a-time loop (``training.train_one``), its oracle.

Tolerances (relative, max over a job's whole loss curve and test predictions): float64
1e-10, float32 1e-5.

The tests built on :func:`problem` run on ``DMISEARCH_TEST_DEVICE`` (default ``cpu``):
``DMISEARCH_TEST_DEVICE=cuda pytest tests/test_engine.py`` checks the CUDA code paths
(CUDA graphs included) against the loop on the same device; ``benchmarks/gpu_check.sh``
does this on a GPU machine.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings

import pytest
import torch
from testplugins import NesterovSGD, RaisingSGD

from dmisearch import Architecture, engine, optim
from dmisearch.components import Job, RunContext
from dmisearch.training import MinibatchAlgorithm, train_one
from dmisearch_builtins.algorithms import GD, SGD, Adam
from dmisearch_builtins.architectures import FAMILIES

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICE = torch.device(os.environ.get("DMISEARCH_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda":  # the float32 tolerance is for float32 arithmetic, not TF32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
SHAPES = {1: (2, 6), 2: (1, 5, 4)}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def problem(task: str, shape: tuple[int, ...], dtype: torch.dtype, n: int = 24, seed: int = 0):
    out_dim = 1 if task == "regression" else 3
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=dtype)
    y = (torch.randn(n, out_dim, generator=g, dtype=dtype) if task == "regression"
         else torch.randint(0, out_dim, (n,), generator=g))
    x_test = torch.randn(11, *shape, generator=g, dtype=dtype)
    return (RunContext(DEVICE, dtype, task, out_dim, shape), x.to(DEVICE), y.to(DEVICE),
            x_test.to(DEVICE))


def assert_matches_loop(members, ctx, **kw):
    fused = engine.train(members, ctx, **kw)
    tol = TOL[ctx.dtype]
    for m, f in zip(members, fused, strict=True):
        ref = train_one(m.algo, m.model, m.job, ctx)
        assert f.losses.shape == ref.losses.shape
        assert rel(f.losses, ref.losses) < tol, (m, rel(f.losses, ref.losses))
        assert rel(f.test, ref.test) < tol, (m, rel(f.test, ref.test))
        assert rel(f.train, ref.train) < tol
        assert f.diverged == ref.diverged is False
    return fused


ALGOS = [
    SGD(lr=0.05, momentum=0.9, weight_decay=1e-3, steps=12, batch_size=8),
    Adam(lr=0.01, weight_decay=1e-3, steps=12, batch_size=8),
]


@pytest.fixture(params=["kernels", "foreach"])
def optimizer_path(request, monkeypatch):
    """Both update paths of ``dmisearch.optim``: torch's fused kernels (the default) and
    the per-job ``_foreach`` arithmetic (forced by hiding the kernels)."""
    if request.param == "foreach":
        for cls in (optim.FusedSGD, optim.FusedAdam):
            monkeypatch.setattr(cls, "kernel", "no_such_kernel")
    return request.param


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("arch", sorted(FAMILIES))
@pytest.mark.parametrize("algo", ALGOS, ids=["sgd", "adam"])
def test_every_builtin_matches_the_loop(arch, nd, dtype, algo, optimizer_path):
    task = "classification" if nd == 2 else "regression"
    ctx, x, y, x_test = problem(task, SHAPES[nd], dtype)
    model = FAMILIES[arch](width=4, depth=2, filter_size=3) if arch != "fcn" else (
        FAMILIES[arch](width=16, depth=2))
    # the curve's nested sizes (prefixes of one pool) and two seeds, in one call
    jobs = [Job(x[:n], y[:n], x_test, seed) for n in (8, 16, 24) for seed in (0, 1)]
    assert_matches_loop([engine.Member(model, algo, j) for j in jobs], ctx)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("arch", ["cnn_vec", "cnn_gap"])
@pytest.mark.parametrize("algo", ALGOS, ids=["sgd", "adam"])
def test_fourier_convolutions_match_the_loop(arch, dtype, algo, monkeypatch):
    """16 -> 16 channels, 5 x 5 filters on 8 x 8 maps: the batched form convolves in the
    Fourier domain (``layers.circular_conv_fourier``), the loop directly."""
    import dmisearch_builtins.layers as layers

    used = []
    real = layers.circular_conv_fourier
    monkeypatch.setattr(layers, "circular_conv_fourier", lambda *a: used.append(1) or real(*a))
    ctx, x, y, x_test = problem("classification", (1, 8, 8), dtype)
    model = FAMILIES[arch](width=16, depth=2, filter_size=5)
    jobs = [Job(x[:n], y[:n], x_test, seed) for n in (8, 24) for seed in (0, 1)]
    assert_matches_loop([engine.Member(model, algo, j) for j in jobs], ctx)
    assert bool(used) == (DEVICE.type == "cpu")  # the Fourier form is for the CPU


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("arch", ["cnn_vec", "cnn_gap"])
@pytest.mark.parametrize("algo", ALGOS, ids=["sgd", "adam"])
def test_batched_matmul_convolutions_match_the_loop(arch, nd, dtype, algo, monkeypatch):
    """The form CUDA uses for 1-D convolutions (``layers.conv_bmm``), forced anywhere."""
    import dmisearch_builtins.layers as layers

    used = []
    real = layers.conv_bmm
    monkeypatch.setattr(layers, "bmm_pays", lambda *a: True)
    monkeypatch.setattr(layers, "conv_bmm", lambda *a: used.append(1) or real(*a))
    ctx, x, y, x_test = problem("regression", SHAPES[nd], dtype)
    model = FAMILIES[arch](width=4, depth=2, filter_size=3, padding="zeros")
    jobs = [Job(x[:n], y[:n], x_test, seed) for n in (8, 24) for seed in (0, 1)]
    assert_matches_loop([engine.Member(model, algo, j) for j in jobs], ctx)
    assert used


def test_ntk_parameterization_and_nesterov_match_the_loop(optimizer_path):
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    model = FAMILIES["cnn_vec"](width=3, parameterization="ntk", sigma_b=0.3)
    algo = SGD(lr=0.5, momentum=0.9, nesterov=True, steps=10, batch_size=8)
    assert_matches_loop([engine.Member(model, algo, Job(x, y, x_test, s)) for s in (3, 4)],
                        ctx)


@pytest.mark.parametrize("cls,varied", [
    (SGD, [{"lr": 0.01, "momentum": 0.0}, {"lr": 0.2, "momentum": 0.9, "weight_decay": 0.01},
           {"lr": 0.05, "momentum": 0.5}]),
    (Adam, [{"lr": 1e-3}, {"lr": 3e-2, "beta1": 0.5, "beta2": 0.9, "eps": 1e-6},
            {"lr": 1e-2, "weight_decay": 1e-2}]),
])
def test_jobs_of_different_trials_fuse_with_their_own_hyperparameters(cls, varied,
                                                                     optimizer_path):
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    model = FAMILIES["fcn"](width=8)
    members = [engine.Member(model, cls(steps=15, batch_size=8, **hp), Job(x, y, x_test, i))
               for i, hp in enumerate(varied)]
    assert len(engine.group_members(members)) == 1  # one program
    assert_matches_loop(members, ctx)


def test_grouping_rules():
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    sgd = SGD(steps=5, batch_size=8)
    members = [
        engine.Member(FAMILIES["fcn"](width=8), sgd, Job(x[:16], y[:16], x_test, 0)),
        engine.Member(FAMILIES["fcn"](width=8), sgd, Job(x[:24], y[:24], x_test, 0)),
        engine.Member(FAMILIES["fcn"](width=8), sgd, Job(x[:4], y[:4], x_test, 0)),  # batch 4
        engine.Member(FAMILIES["fcn"](width=9), sgd, Job(x, y, x_test, 0)),  # other shape
        engine.Member(FAMILIES["fcn"](width=8), SGD(steps=6, batch_size=8),
                      Job(x, y, x_test, 0)),  # other step count
        engine.Member(FAMILIES["fcn"](width=8), SGD(steps=5, batch_size=8, nesterov=True,
                                                    momentum=0.9), Job(x, y, x_test, 0)),
    ]
    assert engine.group_members(members) == [[0, 1], [2], [3], [4], [5]]
    assert_matches_loop(members, ctx)


def test_epochs_mode_groups_by_step_count():
    ctx, x, y, x_test = problem("classification", (1, 6), torch.float64)
    algo = Adam(epochs=2, batch_size=4, lr=0.01)
    members = [engine.Member(FAMILIES["fcn"](width=8), algo, Job(x[:n], y[:n], x_test, 0))
               for n in (8, 16, 8)]
    assert engine.group_members(members) == [[0, 2], [1]]
    fused = assert_matches_loop(members, ctx)
    assert [len(f.losses) for f in fused] == [4, 8, 4]


def assert_chunk_invariant(a: torch.Tensor, b: torch.Tensor) -> None:
    """A job's results do not depend on the other jobs of its chunk: bit for bit on the
    CPU; on CUDA to rounding, since cuBLAS picks its kernels by the number of matrices in
    a batch (seen on an H200: float64 results differed in the last bits)."""
    if a.device.type == "cpu":
        assert torch.equal(a, b)
    else:
        assert rel(a, b) < TOL[a.dtype]


def test_chunks_give_the_same_results(monkeypatch):
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    monkeypatch.setattr(engine, "_chunk_limit", lambda m, ctx: 1000)  # no CUDA probe
    members = [engine.Member(FAMILIES["cnn_gap"](width=3), ALGOS[0], Job(x, y, x_test, s))
               for s in range(5)]
    whole = engine.train(members, ctx)
    chunks: list[int] = []
    real = engine._train_chunk
    monkeypatch.setattr(engine, "_train_chunk",
                        lambda c, ctx: chunks.append(len(c)) or real(c, ctx))
    parts = engine.train(members, ctx, max_chunk=2)
    assert chunks == [2, 2, 1]
    for a, b in zip(whole, parts, strict=True):
        assert_chunk_invariant(a.test, b.test)
        assert_chunk_invariant(a.losses, b.losses)


def test_out_of_memory_splits_the_chunk_and_retries(monkeypatch):
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    members = [engine.Member(FAMILIES["fcn"](width=8), ALGOS[1], Job(x, y, x_test, s))
               for s in range(5)]
    expected = engine.train(members, ctx)
    monkeypatch.setattr(engine, "_chunk_limit", lambda m, ctx: 1000)  # no CUDA probe
    sizes: list[int] = []
    real = engine._train_chunk

    def tight_memory(chunk, ctx):
        sizes.append(len(chunk))
        if len(chunk) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(chunk, ctx)

    monkeypatch.setattr(engine, "_train_chunk", tight_memory)
    got = engine.train(members, ctx)
    assert sizes == [5, 2, 3, 1, 2]
    for a, b in zip(expected, got, strict=True):
        assert_chunk_invariant(a.test, b.test)


def test_out_of_memory_for_a_single_job_reaches_the_trial(monkeypatch):
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)

    def no_memory(chunk, ctx):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to ...")

    monkeypatch.setattr(engine, "_train_chunk", no_memory)
    with pytest.raises(RuntimeError, match="can't allocate"):
        engine.train([engine.Member(FAMILIES["fcn"](width=8), ALGOS[0], Job(x, y, x_test, 0))],
                     ctx)


def test_divergence_is_per_job():
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    model = FAMILIES["fcn"](width=32, depth=3)
    members = [engine.Member(model, SGD(lr=lr, steps=30, batch_size=8), Job(x, y, x_test, 0))
               for lr in (0.01, 1e30)]
    calm, wild = engine.train(members, ctx)
    assert not calm.diverged and wild.diverged


@dataclasses.dataclass(kw_only=True)
class PlainMLP(Architecture):
    """A third-party architecture written as a plain nn.Module (no batched form)."""

    name = "plain_mlp_test"
    hidden: int = 7

    def build(self, input_shape, out_dim):
        return torch.nn.Sequential(torch.nn.Flatten(),
                                   torch.nn.Linear(math.prod(input_shape), self.hidden),
                                   torch.nn.Tanh(), torch.nn.Linear(self.hidden, out_dim))


@dataclasses.dataclass(kw_only=True)
class RMSprop(MinibatchAlgorithm):
    """A third-party optimiser with only make_optimizer: fused through torch.optim itself."""

    name = "rmsprop_test"
    lr: float = 0.01

    def make_optimizer(self, params):
        return torch.optim.RMSprop(params, lr=self.lr, weight_decay=self.weight_decay)


def test_plain_modules_and_torch_optim_optimisers_are_fused_with_no_extra_code():
    ctx, x, y, x_test = problem("classification", (2, 3), torch.float64)
    algo = RMSprop(steps=10, batch_size=8)
    members = [engine.Member(PlainMLP(), algo, Job(x[:n], y[:n], x_test, s))
               for n in (8, 24) for s in (0, 1)]
    assert len(engine.group_members(members)) == 1
    assert_matches_loop(members, ctx)
    other = engine.Member(PlainMLP(), RMSprop(steps=10, batch_size=8, lr=0.02), members[0].job)
    assert len(engine.group_members([*members, other])) == 2  # lr is not per_job here


class TiedScaled(torch.nn.Module):
    """A tied weight (one parameter under two names) and a buffer drawn at build time."""

    def __init__(self, d: int, out_dim: int):
        super().__init__()
        self.enc = torch.nn.Linear(d, d, bias=False)
        self.dec = torch.nn.Linear(d, out_dim)
        self.mix = self.enc  # tied: the same module (and weight) under a second name
        self.register_buffer("scale", torch.rand(d) + 0.5)

    def forward(self, x):
        return self.dec(self.mix(x.flatten(1) * self.scale))


@dataclasses.dataclass(kw_only=True)
class TiedArch(Architecture):
    name = "tied_test"
    seed_dependent_shape: bool = False

    def build(self, input_shape, out_dim):
        d = math.prod(input_shape)
        if self.seed_dependent_shape:  # a plugin bug: shapes must follow the hyperparameters
            d += int(torch.randint(0, 2, ()))
        return TiedScaled(d, out_dim)


@pytest.mark.parametrize("staged", [False, True], ids=["direct", "through-host-buffer"])
def test_stacked_build_equals_stack_module_state(staged, monkeypatch):
    """Streaming the builds into place gives torch.func.stack_module_state's stacks bit for
    bit, keyed alike (tied tensors once), through a host buffer that fills 3 times over 8
    jobs (the last time part-way) when staged."""
    from dmisearch.training import build_module

    ctx, x, y, x_test = problem("regression", (2, 3), torch.float64)
    members = [engine.Member(TiedArch(), GD(steps=3), Job(x, y, x_test, s)) for s in range(8)]
    per_job = 8 * (6 * 6 + 6 + 1 + 6)
    monkeypatch.setattr(engine, "STAGE_BYTES", 3 * per_job + 5)
    monkeypatch.setattr(engine, "_staged", lambda device: staged)
    template, params, buffers = engine.build_stacked(members, ctx)
    mods = [build_module(m.model, m.job.seed, ctx) for m in members]
    want_p, want_b = torch.func.stack_module_state(mods)
    assert list(params) == list(want_p) == ["enc.weight", "dec.weight", "dec.bias"]
    assert list(buffers) == list(want_b) == ["scale"]
    for got, want in [*zip(params.values(), want_p.values(), strict=True),
                      *zip(buffers.values(), want_b.values(), strict=True)]:
        assert got.device == want.device and torch.equal(got, want)
    assert len({float(b[0]) for b in buffers["scale"]}) == 8  # each job its own draws
    assert torch.equal(template.enc.weight, mods[0].enc.weight)
    if staged:  # the same jobs trained through the buffer match the loop
        assert_matches_loop(members, ctx)


def test_shapes_that_depend_on_the_seed_are_refused_with_the_fix():
    ctx, x, y, x_test = problem("regression", (2, 3), torch.float64)
    model = TiedArch(seed_dependent_shape=True)
    members = [engine.Member(model, GD(steps=3), Job(x, y, x_test, s)) for s in range(8)]
    with pytest.raises(ValueError, match=r"tied_test.*differ between seeds: .*'enc.weight': "
                       r"\(\([67], [67]\), torch.float64\) vs \(\([67], [67]\), torch.float64\)"
                       r".*engine = \"loop\""):
        engine.build_stacked(members, ctx)


def test_builtin_batched_forward_equals_vmap_forward():
    ctx, x, _, _ = problem("regression", (2, 5, 4), torch.float64)
    for name, cls in FAMILIES.items():
        model = cls(width=3, depth=2, parameterization="ntk", sigma_b=0.2)
        mods = [model.build(ctx.input_shape, 2).to(DEVICE, torch.float64) for _ in range(3)]
        params, buffers = torch.func.stack_module_state(mods)
        xs = torch.stack([x[:7]] * 3)
        fast = model.forward_batched(mods[0])(params, buffers, xs)
        generic = Architecture.forward_batched(model, mods[0])(params, buffers, xs)
        assert rel(fast, generic) < 1e-12, name
        assert rel(fast[1], mods[1](x[:7])) < 1e-12, name


@dataclasses.dataclass(kw_only=True)
class DropoutMLP(PlainMLP):
    """Dropout while training; off (eval mode) when predicting."""

    name = "dropout_mlp_test"
    p: float = 0.5

    def build(self, input_shape, out_dim):
        net = super().build(input_shape, out_dim)
        return torch.nn.Sequential(*net[:3], torch.nn.Dropout(self.p), net[3])


def test_random_layers_train_fused():
    ctx, x, y, x_test = problem("regression", (2, 3), torch.float64)
    algo = SGD(steps=5, batch_size=8, lr=0.01)
    # p = 0: the generic path with vmap's per-job randomness still equals the loop
    assert_matches_loop([engine.Member(DropoutMLP(p=0.0), algo, Job(x, y, x_test, 0))], ctx)
    # p = 0.5: draws differ from the loop's, but it trains (vmap would refuse by default)
    (fused,) = engine.train([engine.Member(DropoutMLP(), algo, Job(x, y, x_test, 0))], ctx)
    assert torch.isfinite(fused.test).all() and not fused.diverged


@pytest.mark.parametrize("transform", ["shift", "flip", "permute", "rotate"])
def test_augmented_training_matches_the_loop(transform):
    from dmisearch.components import augmented
    from dmisearch_builtins import transforms

    t = {"shift": transforms.Shift(), "flip": transforms.Flip(),
         "permute": transforms.Permute(), "rotate": transforms.Rotate()}[transform]
    ctx, x, y, x_test = problem("classification", SHAPES[2], torch.float64)
    algo = augmented(Adam, t)(lr=0.01, steps=8, batch_size=8)
    # cnn_vec: cnn_gap with circular padding would be exactly invariant to shifts
    members = [engine.Member(FAMILIES["cnn_vec"](width=3), algo, Job(x[:n], y[:n], x_test, s))
               for n in (8, 24) for s in (0, 1)]
    fused = assert_matches_loop(members, ctx)
    plain = engine.train([engine.Member(m.model, Adam(lr=0.01, steps=8, batch_size=8), m.job)
                          for m in members], ctx)
    assert rel(fused[0].losses, plain[0].losses) > 1e-6  # the augmentation did something


def test_centred_training_matches_the_loop_and_starts_from_zero():
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    model = FAMILIES["fcn"](width=16, parameterization="ntk")
    members = [engine.Member(model, GD(lr=0.1, steps=10, center=True), Job(x, y, x_test, s))
               for s in (0, 1)]
    assert_matches_loop(members, ctx)
    (untrained,) = engine.train([engine.Member(model, GD(lr=1e-12, steps=1, center=True),
                                               Job(x, y, x_test, 0))], ctx)
    assert untrained.test.abs().max() < 1e-9  # f - f0 is zero at initialisation


class ReplayedStep:
    """Stands in for ``engine.StepGraph`` where there is no CUDA: eager warm-up steps, then
    every later step replays the "captured" call, host arguments frozen at their capture
    values, as a real graph would freeze them. A step that still depends on the host's
    step number then trains on the wrong minibatches and fails the comparison."""

    calls: list[str] = []

    def __init__(self, step, device, capturable):
        self.step, self.capturable, self.captured = step, capturable, None

    def __call__(self, t):
        if t < engine.GRAPH_WARMUP or (self.captured is None and not self.capturable()):
            self.calls.append("eager")
            self.step(t)
            return
        if self.captured is None:
            self.captured = t
            self.calls.append("capture")
        self.calls.append("replay")
        self.step(self.captured)


@pytest.mark.parametrize("algo", ALGOS, ids=["sgd", "adam"])
@pytest.mark.parametrize("arch", ["fcn", "cnn_gap"])
def test_a_replayed_step_matches_the_loop(arch, algo, optimizer_path, monkeypatch):
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    monkeypatch.setattr(engine, "_graphs_supported", lambda device: True)
    monkeypatch.setattr(engine, "StepGraph", ReplayedStep)
    ReplayedStep.calls = []
    model = FAMILIES[arch](width=4)
    members = [engine.Member(model, algo, Job(x[:n], y[:n], x_test, s))
               for n in (8, 24) for s in (0, 1)]
    assert_matches_loop(members, ctx)
    if algo.name == "adam" and optimizer_path == "foreach":
        # its bias corrections are read by the host's step count: never captured
        assert ReplayedStep.calls == ["eager"] * algo.steps
    else:
        assert ReplayedStep.calls == (["eager"] * engine.GRAPH_WARMUP + ["capture"]
                                      + ["replay"] * (algo.steps - engine.GRAPH_WARMUP))


def test_no_graph_for_augmentation_short_runs_or_when_switched_off(monkeypatch):
    from dmisearch.components import augmented
    from dmisearch_builtins import transforms

    monkeypatch.setattr(engine, "_graphs_supported", lambda device: True)
    monkeypatch.setattr(engine, "StepGraph", ReplayedStep)
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    job = Job(x, y, x_test, 0)
    short = SGD(steps=engine.GRAPH_WARMUP + engine.GRAPH_MIN_REPLAYS - 1, batch_size=8)
    cases = [(ctx, short), (dataclasses.replace(ctx, cuda_graphs=False), ALGOS[0]),
             (ctx, augmented(SGD, transforms.Shift())(steps=12, batch_size=8))]
    for c, algo in cases:
        ReplayedStep.calls = []
        engine.train([engine.Member(FAMILIES["fcn"](width=4), algo, job)], c)
        assert ReplayedStep.calls == [], algo


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("algo", ALGOS, ids=["sgd", "adam"])
@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_cuda_graphs_repeat_the_eager_engine_bit_for_bit(arch, nd, algo, dtype, monkeypatch):
    """The captured step replays the eager step's kernels on the same memory: identical
    results, and the graph really ran. (cuDNN's deterministic algorithms: some of the
    others sum in a different order on every run, graph or not.)"""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    ctx, x, y, x_test = problem("classification", SHAPES[nd], dtype)
    ctx = dataclasses.replace(ctx, device=torch.device("cuda"))
    x, y, x_test = x.cuda(), y.cuda(), x_test.cuda()
    model = FAMILIES[arch](width=4, depth=2, filter_size=3) if arch != "fcn" else (
        FAMILIES[arch](width=16, depth=2))
    members = [engine.Member(model, algo, Job(x[:n], y[:n], x_test, s))
               for n in (8, 24) for s in (0, 1)]
    replays = []
    real = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay",
                        lambda self: replays.append(1) or real(self))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture warns
        graphed = engine.train(members, ctx)
    assert len(replays) == algo.steps - engine.GRAPH_WARMUP
    eager = engine.train(members, dataclasses.replace(ctx, cuda_graphs=False))
    for a, b in zip(graphed, eager, strict=True):
        assert torch.equal(a.losses, b.losses) and torch.equal(a.test, b.test)


def test_step_loops_are_timed_for_benchmarks_only_when_asked(monkeypatch):
    from dmisearch import loop

    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    members = [engine.Member(FAMILIES["fcn"](width=8), SGD(steps=s, batch_size=8),
                             Job(x, y, x_test, 0)) for s in (5, 5, 9)]
    engine.train(members, ctx)  # STEP_TIMES is None: nothing recorded, nothing breaks
    monkeypatch.setattr(loop, "STEP_TIMES", [])
    engine.train(members, ctx)
    train_one(members[0].algo, members[0].model, members[0].job, ctx)
    assert [(m, s) for m, s, _ in loop.STEP_TIMES] == [(2, 5), (1, 9), (1, 5)]
    assert all(t > 0 for _, _, t in loop.STEP_TIMES)


@pytest.mark.parametrize("algo", ALGOS, ids=["sgd", "adam"])
def test_a_parameter_without_a_gradient_trains_like_the_loop(algo, optimizer_path):
    """A parameter forward() never uses gets no gradient (grad None): the fused optimisers
    skip it as torch.optim does (tests/test_optim.py checks the skipped state)."""
    from testplugins import UnusedParameter

    ctx, x, y, x_test = problem("classification", (2, 3), torch.float64)
    members = [engine.Member(UnusedParameter(), algo, Job(x[:n], y[:n], x_test, s))
               for n in (8, 24) for s in (0, 1)]
    assert_matches_loop(members, ctx)


@dataclasses.dataclass(kw_only=True)
class FusedNesterovSGD(NesterovSGD):
    """NesterovSGD with its own fused equivalent declared."""

    name = "fused_nesterov_sgd_test"

    @classmethod
    def fused_optimizer(cls, params, algos, steps):
        from dmisearch_builtins.algorithms import _hyper

        return optim.FusedSGD(params, _hyper(algos, cls.per_job), nesterov=True)


def test_a_subclass_overriding_make_optimizer_alone_is_not_fused():
    from dmisearch.components import augmented
    from dmisearch.training import unfused_reason
    from dmisearch_builtins import transforms

    why = unfused_reason(NesterovSGD)
    assert "'nesterov_sgd_test'" in why and "inherits fused_optimizer from SGD" in why
    assert "override fused_optimizer as well" in why
    assert unfused_reason(RaisingSGD) is not None
    for cls in (SGD, Adam, GD, FusedNesterovSGD, RMSprop, augmented(SGD, transforms.Shift())):
        assert unfused_reason(cls) is None, cls  # declared, inherited whole, or the default


def test_a_make_optimizer_the_fused_path_would_skip_is_called(monkeypatch):
    monkeypatch.setattr(engine, "_UNFUSED_WARNED", set())
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    members = [engine.Member(FAMILIES["fcn"](width=8), RaisingSGD(steps=4, batch_size=8),
                             Job(x, y, x_test, s)) for s in (0, 1)]
    with pytest.warns(RuntimeWarning, match="raising_sgd_test"), pytest.raises(
            RuntimeError, match="RaisingSGD.make_optimizer was called"):
        engine.train(members, ctx)


def test_an_unfused_subclass_trains_like_the_loop_and_says_why_once(monkeypatch):
    monkeypatch.setattr(engine, "_UNFUSED_WARNED", set())
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    members = [engine.Member(FAMILIES["fcn"](width=8), NesterovSGD(steps=10, batch_size=8),
                             Job(x[:n], y[:n], x_test, s)) for n in (8, 24) for s in (0, 1)]
    with pytest.warns(RuntimeWarning) as caught:
        fused = assert_matches_loop(members, ctx)
        engine.train(members, ctx)  # the same class again: no second warning
    assert len(caught) == 1 and "nesterov_sgd_test" in str(caught[0].message)
    plain = engine.train([engine.Member(m.model, SGD(steps=10, batch_size=8, momentum=0.9),
                                        m.job) for m in members], ctx)
    assert rel(fused[0].test, plain[0].test) > 1e-6  # Nesterov's steps, not SGD's


def test_a_subclass_declaring_its_fused_equivalent_is_fused(monkeypatch):
    ctx, x, y, x_test = problem("regression", (1, 6), torch.float64)
    chunks: list[int] = []
    real = engine._train_chunk
    monkeypatch.setattr(engine, "_train_chunk",
                        lambda c, ctx: chunks.append(len(c)) or real(c, ctx))
    members = [engine.Member(FAMILIES["fcn"](width=8),
                             FusedNesterovSGD(steps=10, batch_size=8, lr=lr),
                             Job(x, y, x_test, 0)) for lr in (0.01, 0.05)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_matches_loop(members, ctx)
    assert chunks == [2]

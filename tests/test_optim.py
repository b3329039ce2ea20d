"""``dmisearch.optim`` against ``torch.optim`` run on each job's slice on its own.

Stacks of K jobs with a different hyperparameter set per job (and some jobs sharing one,
as the jobs of one trial do), in float64: every path must agree with torch.optim's
default single-tensor update to 1e-12 relative after 30 steps.
"""

from __future__ import annotations

import pytest
import torch

from dmisearch import optim
from dmisearch.optim import FusedAdam, FusedSGD

pytestmark = pytest.mark.usefixtures("one_thread")

K = 4
SGD_HYPER = {"lr": [0.05, 0.05, 0.2, 0.01], "momentum": [0.9, 0.9, 0.0, 0.5],
             "weight_decay": [0.0, 0.0, 1e-2, 1e-3]}
ADAM_HYPER = {"lr": [1e-2, 1e-2, 3e-2, 1e-3], "beta1": [0.9, 0.9, 0.5, 0.8],
              "beta2": [0.999, 0.999, 0.9, 0.99], "eps": [1e-8, 1e-8, 1e-6, 1e-8],
              "weight_decay": [0.0, 0.0, 1e-2, 0.0]}


def _stacks(layout: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(K, 6, 5, generator=g, dtype=torch.float64)
    b = torch.randn(K, 5, generator=g, dtype=torch.float64)
    if layout == "job-inner":  # the job axis is not outermost: no dense per-job slices
        a = a.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    elif layout == "transposed":  # job axis outermost, each slice transposed (bmm grads)
        a = a.transpose(1, 2).contiguous().transpose(1, 2)
    return [a, b]


def _grads(step: int, like: list[torch.Tensor]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.empty_like(p).copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
            for p in like]


def _reference(make, stacks: list[torch.Tensor], steps: int) -> list[torch.Tensor]:
    out = []
    for j in range(K):
        ps = [p[j].clone().requires_grad_() for p in stacks]
        opt = make(j, ps)
        for t in range(steps):
            for p, g in zip(ps, _grads(t, stacks), strict=True):
                p.grad = g[j].clone()
            opt.step()
        out.append([p.detach() for p in ps])
    return [torch.stack([o[i] for o in out]) for i in range(len(stacks))]


def _fused(opt, stacks: list[torch.Tensor], steps: int) -> None:
    for t in range(steps):
        for p, g in zip(stacks, _grads(t, stacks), strict=True):
            p.grad = g
        opt.step()
        opt.zero_grad()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _hyper(table: dict[str, list[float]], shared: bool) -> dict[str, torch.Tensor]:
    """Per-job values, or job 0's for every job (one kernel group)."""
    return {k: torch.tensor([v[0]] * K if shared else v, dtype=torch.float64)
            for k, v in table.items()}


def _expect_kernels(fused: bool, layout: str) -> bool:
    # the kernels take per-job slices, which need the job axis outermost
    return fused and layout != "job-inner"


@pytest.mark.parametrize("shared", [False, True], ids=["per-job", "shared"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "job-inner"])
@pytest.mark.parametrize("fused", [True, False], ids=["kernels", "foreach"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_torch_optim_per_job(layout, fused, nesterov, shared):
    hyper = _hyper(SGD_HYPER, shared)
    if nesterov:
        hyper["momentum"] = torch.full((K,), 0.9, dtype=torch.float64)
    stacks = _stacks(layout)
    ref = _reference(lambda j, ps: torch.optim.SGD(
        ps, lr=float(hyper["lr"][j]), momentum=float(hyper["momentum"][j]),
        weight_decay=float(hyper["weight_decay"][j]), nesterov=nesterov), stacks, 30)
    opt = FusedSGD(stacks, hyper, nesterov=nesterov, fused=fused)
    assert opt.fused == _expect_kernels(fused, layout)
    _fused(opt, stacks, 30)
    for p, r in zip(stacks, ref, strict=True):
        assert _rel(p, r) < 1e-12


@pytest.mark.parametrize("shared", [False, True], ids=["per-job", "shared"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "job-inner"])
@pytest.mark.parametrize("fused", [True, False], ids=["kernels", "foreach"])
def test_adam_matches_torch_optim_per_job(layout, fused, shared):
    hyper = _hyper(ADAM_HYPER, shared)
    stacks = _stacks(layout)
    ref = _reference(lambda j, ps: torch.optim.Adam(
        ps, lr=float(hyper["lr"][j]), betas=(float(hyper["beta1"][j]),
                                             float(hyper["beta2"][j])),
        eps=float(hyper["eps"][j]), weight_decay=float(hyper["weight_decay"][j])),
        stacks, 30)
    opt = FusedAdam(stacks, hyper, steps=30, fused=fused)
    assert opt.fused == _expect_kernels(fused, layout)
    _fused(opt, stacks, 30)
    for p, r in zip(stacks, ref, strict=True):
        assert _rel(p, r) < 1e-12


def test_jobs_sharing_hyperparameters_form_one_kernel_group():
    hyper = {k: torch.tensor(v, dtype=torch.float64) for k, v in ADAM_HYPER.items()}
    opt = FusedAdam(_stacks("contiguous"), hyper, steps=3)
    assert [idx for _, idx in opt.groups] == [[0, 1], [2], [3]]
    assert opt.groups[1][0]["beta1"] == 0.5


def test_gradients_in_another_layout_take_the_foreach_path_for_that_step():
    """Kernels walk memory in order, so a gradient laid out unlike its parameter must not
    reach them: the step falls back to the per-job arithmetic and stays exact."""
    hyper = {k: torch.tensor(v, dtype=torch.float64) for k, v in ADAM_HYPER.items()}
    stacks = _stacks("contiguous")
    ref = _reference(lambda j, ps: torch.optim.Adam(
        ps, lr=float(hyper["lr"][j]), betas=(float(hyper["beta1"][j]),
                                             float(hyper["beta2"][j])),
        eps=float(hyper["eps"][j]), weight_decay=float(hyper["weight_decay"][j])),
        stacks, 4)
    opt = FusedAdam(stacks, hyper, steps=4)
    for t in range(4):
        for p, g in zip(stacks, _grads(t, stacks), strict=True):
            # odd steps: the matrix's gradient transposed in memory, same values
            p.grad = g.transpose(1, 2).contiguous().transpose(1, 2) if t % 2 and g.ndim == 3 \
                else g
        live = tuple(range(len(stacks)))
        assert opt._fusable(live, [p.grad for p in stacks]) == (t % 2 == 0)
        opt.step()
    for p, r in zip(stacks, ref, strict=True):
        assert _rel(p, r) < 1e-12


@pytest.mark.parametrize("cls", [FusedSGD, FusedAdam])
def test_a_device_without_the_kernels_takes_the_foreach_path(cls, monkeypatch):
    """Where torch has no implementation of the kernel for the parameters' device
    (``kernel_available``, asked when the optimiser is made), every step runs the foreach
    path, and the kernel is never called."""
    asked = []

    def available(name, device):
        asked.append((name, device.type))
        return False

    def kernel(*args, **kwargs):
        raise AssertionError("the kernel was called")

    monkeypatch.setattr(optim, "kernel_available", available)
    monkeypatch.setattr(torch, cls.kernel, kernel)
    if cls is FusedSGD:
        hyper = _hyper(SGD_HYPER, shared=False)
        make = lambda j, ps: torch.optim.SGD(  # noqa: E731
            ps, lr=float(hyper["lr"][j]), momentum=float(hyper["momentum"][j]),
            weight_decay=float(hyper["weight_decay"][j]))
        opt = cls(_stacks("contiguous"), hyper)
    else:
        hyper = _hyper(ADAM_HYPER, shared=False)
        make = lambda j, ps: torch.optim.Adam(  # noqa: E731
            ps, lr=float(hyper["lr"][j]), betas=(float(hyper["beta1"][j]),
                                                 float(hyper["beta2"][j])),
            eps=float(hyper["eps"][j]), weight_decay=float(hyper["weight_decay"][j]))
        opt = cls(_stacks("contiguous"), hyper, steps=10)
    assert asked == [(cls.kernel, "cpu")] and not opt.fused
    stacks = opt.params
    ref = _reference(make, _stacks("contiguous"), 10)
    _fused(opt, stacks, 10)
    assert not opt.kernel_path
    for p, r in zip(stacks, ref, strict=True):
        assert _rel(p, r) < 1e-12


def test_kernel_available_asks_torch_for_the_device():
    assert optim.kernel_available("_fused_sgd_", torch.device("cpu"))
    assert optim.kernel_available("_fused_adam_", torch.device("cpu"))
    assert not optim.kernel_available("", torch.device("cpu"))  # no kernel named
    assert not optim.kernel_available("_no_such_kernel_", torch.device("cpu"))


@pytest.mark.parametrize("cls", [FusedSGD, FusedAdam])
def test_an_error_from_a_kernel_is_raised_not_taken_for_a_missing_kernel(cls, monkeypatch):
    """A kernel that exists for the device but fails (even with NotImplementedError) is an
    error: no silent switch to the slow path."""
    def failing(*args, **kwargs):
        raise NotImplementedError("a kernel that fails")

    monkeypatch.setattr(torch, cls.kernel, failing)
    table, extra = (SGD_HYPER, {}) if cls is FusedSGD else (ADAM_HYPER, {"steps": 2})
    opt = cls(_stacks("contiguous"), _hyper(table, shared=False), **extra)
    assert opt.fused
    with pytest.raises(NotImplementedError, match="a kernel that fails"):
        _fused(opt, opt.params, 1)


def test_an_optimiser_naming_a_kernel_must_implement_its_step():
    with pytest.raises(TypeError, match="names the fused kernel '_fused_sgd_' but does not "
                                        "implement _fused_step"):
        class NoFusedStep(optim.FusedOptimizer):
            kernel = "_fused_sgd_"

            def _foreach_step(self, live, grads):
                pass

    class NoForeachStep(optim.FusedOptimizer):  # the foreach path is every optimiser's
        pass

    with pytest.raises(TypeError, match="abstract method _foreach_step"):
        NoForeachStep([], {})


@pytest.mark.parametrize("cls", [FusedSGD, FusedAdam])
def test_whole_vector_slices_go_to_the_kernel_as_runs_with_each_jobs_own_bits(cls, monkeypatch):
    """Where a job's slice is whole vectors (64 float32 here), each run of consecutive jobs
    of a group goes to the kernel as one slice of the stack; other stacks (20 elements a
    job, a vector tail each) go per job. Either way a job's bits are those it gets trained
    alone, in float32."""
    table = SGD_HYPER if cls is FusedSGD else ADAM_HYPER
    hyper = {k: torch.tensor(v, dtype=torch.float64) for k, v in table.items()}  # [0, 1] share
    g = torch.Generator().manual_seed(1)
    stacks = [torch.randn(K, 8, 8, generator=g), torch.randn(K, 20, generator=g)]
    extra = {"steps": 6} if cls is FusedAdam else {}
    kernel, calls = getattr(torch, cls.kernel), []
    monkeypatch.setattr(torch, cls.kernel, lambda params, *a, **kw: (
        calls.append([tuple(p.shape) for p in params]), kernel(params, *a, **kw)))

    alone = []
    for j in range(K):
        one = [p[j:j + 1].clone() for p in stacks]
        opt = cls(one, {k: v[j:j + 1] for k, v in hyper.items()}, **extra)
        for t in range(6):  # job j's slice of the stack's gradients
            for p, grad in zip(one, _grads(t, stacks), strict=True):
                p.grad = grad[j:j + 1]
            opt.step()
        alone.append(one)
    calls.clear()
    opt = cls(stacks, hyper, **extra)
    _fused(opt, stacks, 6)
    assert opt.kernel_path
    # per step: group [0, 1] gets the 64-element stack as one run and the 20-element one
    # per job; groups [2] and [3] one slice of each
    assert calls[:3] == [[(2, 8, 8), (20,), (20,)], [(1, 8, 8), (20,)], [(1, 8, 8), (20,)]]
    for j in range(K):
        for p, a in zip(stacks, alone[j], strict=True):
            assert torch.equal(p[j:j + 1], a)


#: Steps at which each stack of :func:`_sparse_stacks` gets no gradient: the first always
#: has one, the second not before step 2 nor at step 4, the third never.
NO_GRAD = [set(), {0, 1, 4}, set(range(100))]


def _sparse_stacks(layout: str) -> list[torch.Tensor]:
    """A matrix (30 elements a job), a whole-vector stack (64, so runs of jobs go to the
    kernel as one slice) and a vector, each in ``layout``."""
    g = torch.Generator().manual_seed(2)
    out = [*_stacks(layout)[:1], torch.randn(K, 8, 8, generator=g, dtype=torch.float64),
           torch.randn(K, 5, generator=g, dtype=torch.float64)]
    if layout == "transposed":
        out[1] = out[1].transpose(1, 2).contiguous().transpose(1, 2)
    return out


def _sparse_grads(step: int, like: list[torch.Tensor]) -> list[torch.Tensor | None]:
    return [None if step in NO_GRAD[i] else g for i, g in enumerate(_grads(step, like))]


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("fused", [True, False], ids=["kernels", "foreach"])
@pytest.mark.parametrize("cls", [FusedSGD, FusedAdam])
def test_parameters_without_a_gradient_are_skipped_as_torch_optim_skips_them(cls, fused,
                                                                            layout):
    """torch.optim neither updates nor decays a parameter whose grad is None, and starts
    its state (momentum buffer, Adam's step count) at its first gradient: a parameter that
    misses steps gets other bias corrections than one that does not."""
    if cls is FusedSGD:
        hyper = _hyper(SGD_HYPER, shared=False)
        make = lambda j, ps: torch.optim.SGD(  # noqa: E731
            ps, lr=float(hyper["lr"][j]), momentum=float(hyper["momentum"][j]),
            weight_decay=float(hyper["weight_decay"][j]))
        opt = cls(_sparse_stacks(layout), hyper, fused=fused)
    else:
        hyper = _hyper(ADAM_HYPER, shared=False)
        make = lambda j, ps: torch.optim.Adam(  # noqa: E731
            ps, lr=float(hyper["lr"][j]), betas=(float(hyper["beta1"][j]),
                                                 float(hyper["beta2"][j])),
            eps=float(hyper["eps"][j]), weight_decay=float(hyper["weight_decay"][j]))
        opt = cls(_sparse_stacks(layout), hyper, steps=8, fused=fused)
    stacks, start = opt.params, [p.clone() for p in opt.params]
    ref = []
    for j in range(K):  # torch.optim on each job's slices, skipping the same gradients
        ps = [p[j].clone().requires_grad_() for p in start]
        one = make(j, ps)
        for t in range(8):
            for p, g in zip(ps, _sparse_grads(t, start), strict=True):
                p.grad = None if g is None else g[j].clone()
            one.step()
        ref.append(ps)
    for t in range(8):
        for p, g in zip(stacks, _sparse_grads(t, stacks), strict=True):
            p.grad = g
        opt.step()
        assert opt.kernel_path == fused
        opt.zero_grad()
    for i, p in enumerate(stacks):
        assert _rel(p, torch.stack([r[i].detach() for r in ref])) < 1e-12, i
    assert torch.equal(stacks[2], start[2])  # never a gradient: never touched
    if cls is FusedSGD:
        assert opt.bufs[2] is None and opt.bufs[1] is not None
    else:
        assert opt.t == [8, 5, 0] and opt.state_steps.tolist() == [8.0, 5.0, 0.0]
        assert not opt.exp_avg[2].any() and not opt.exp_avg_sq[2].any()


@pytest.mark.parametrize("cls", [FusedSGD, FusedAdam])
def test_a_step_without_any_gradient_changes_nothing(cls):
    table = SGD_HYPER if cls is FusedSGD else ADAM_HYPER
    extra = {"steps": 2} if cls is FusedAdam else {}
    opt = cls(_stacks("contiguous"), _hyper(table, shared=False), **extra)
    before = [p.clone() for p in opt.params]
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(opt.params, before, strict=True))

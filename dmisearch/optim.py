"""Optimisers over stacked parameters, with hyperparameters that may differ per job.

The fused engine stacks the parameters of K jobs along a leading axis. ``torch.optim``
applied to such a stack is already exact per job for element-wise optimisers, but it can
only use one learning rate for the whole stack. These classes apply ``torch.optim.SGD`` and
``torch.optim.Adam``'s update rules (PyTorch 2.x, not ``maximize``, not ``amsgrad``) with a
value per job for every hyperparameter, so jobs of different trials (different ``lr``,
``momentum``, ...) train in one program.

Two paths, both checked against the plain per-model loop by ``tests/test_engine.py``:

* **fused kernels** (the default): jobs sharing their hyperparameters (the jobs of one
  trial) form a group, and each step calls torch's own single-pass kernels,
  ``torch._fused_sgd_`` / ``torch._fused_adam_`` (what ``torch.optim`` runs with
  ``fused=True``), once per group on the jobs' slices of the stacks: one pass over memory
  per tensor instead of one per arithmetic operation (``python benchmarks/bench_engine.py
  --archs fcn``). SGD's kernel gives torch.optim's default (single-tensor) results bit for
  bit; Adam's agrees to rounding. A run of consecutive jobs goes to the kernel as one slice
  of the stack where each job's part is a whole number of ``WHOLE_VECTORS`` elements (see
  :class:`FusedOptimizer`).
* **foreach**: ``torch._foreach_*`` operations with per-job hyperparameters broadcast
  along the stacked axis, in the same order of floating-point operations as torch.optim's
  single-tensor code; used where a stack cannot be cut into dense per-job slices, where
  torch has no such kernel for the device (``kernel_available``, asked once, before any
  step), or with ``fused=False``.

Hyperparameters are passed as float64 tensors of shape ``(K,)``; per-step scalars (Adam's
bias corrections) are computed up front or on the device, so a step never waits on the
host.

A parameter without a gradient (``grad`` None: unused by the forward pass) is skipped as
torch.optim skips it: not updated, not decayed, and its state (SGD's momentum buffer, Adam's
step count) left as it was, so a parameter's state starts at its first gradient.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import torch

T = TypeVar("T")

#: A job's slice of this many elements (or a multiple) is a whole number of the CPU
#: kernels' vectors (AVX-512 holds 16 float32), so a stack of such slices goes to a kernel
#: in one call with every element computed as in a per-job call. Measured with ``python
#: benchmarks/profile_engine.py --arch fcn --k 16`` (benchmarks/RESULTS.md, "Thresholds").
WHOLE_VECTORS = 64


def _per_job(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(K,)`` float64 -> ``(K, 1, ..., 1)`` in ``like``'s dtype and device."""
    shape = (-1,) + (1,) * (like.ndim - 1)
    return value.to(device=like.device, dtype=like.dtype).reshape(shape)


def _sliceable(p: torch.Tensor) -> bool:
    """Whether each ``p[j]`` is one dense block of memory (the job axis is outermost)."""
    if p.ndim == 0 or not is_dense(p):
        return False
    return p.shape[0] == 1 or p.stride(0) == p[0].numel()


def _runs(jobs: Sequence[int]) -> list[tuple[int, int]]:
    """Increasing job indices as ``(start, stop)`` runs of consecutive ones."""
    out: list[tuple[int, int]] = []
    for j in jobs:
        if out and out[-1][1] == j:
            out[-1] = (out[-1][0], j + 1)
        else:
            out.append((j, j + 1))
    return out


def _pick(items: Sequence[T], live: tuple[int, ...]) -> Sequence[T]:
    """``items`` at the increasing indices ``live``; ``items`` itself when that is all."""
    return items if len(live) == len(items) else [items[i] for i in live]


def is_dense(t: torch.Tensor) -> bool:
    """Whether ``t`` fills its memory exactly, in some order of its dimensions."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride(), strict=True), key=lambda d: d[1]):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def kernel_available(name: str, device: torch.device) -> bool:
    """Whether torch implements ``aten::name`` for tensors on ``device`` (its dispatcher has
    a kernel for the device's dispatch key): asked before calling, so a device without one
    takes the foreach path and an error from a kernel that exists is never mistaken for it."""
    if not name or not hasattr(torch.ops.aten, name):
        return False
    key = torch._C._dispatch_key_for_device(device.type)
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{name}", key)


def _memory_order(t: torch.Tensor) -> list[int]:
    """Dimensions by decreasing stride: ``t.permute(order)`` is contiguous if ``t`` is dense."""
    return sorted(range(t.ndim), key=lambda d: -t.stride(d))


class FusedOptimizer(ABC):
    """Base: the ``zero_grad()`` / ``step()`` interface the engine drives.

    A subclass implements ``_foreach_step``; one that names torch's fused kernel in
    ``kernel`` also implements ``_fused_step`` (checked when the class is defined), which
    runs where ``kernel_available`` says the parameters' device has that kernel.

    ``hyper`` holds each job's hyperparameters; jobs with equal values form one group of
    the fused-kernel path (``groups``: the job indices of each, with its values). The
    kernels walk memory in order, so they receive each job's slice as a contiguous view of
    the same memory (dimensions permuted into memory order, identically for a parameter,
    its gradient and its state). Always per job, even when all jobs share their values:
    the kernels round a vector's tail differently from its body, so a whole stack would
    make a job's bits depend on which jobs it was trained with. The exception: where each
    job's slice is a whole number of vectors (``WHOLE_VECTORS`` elements), no job has a
    tail, and each run of consecutive jobs of a group goes to the kernel as one slice of
    the stack, with the same bits as per-job calls (``tests/test_optim.py``) and without
    their per-tensor cost.
    """

    #: Name of torch's fused kernel in ``torch.ops.aten`` that ``_fused_step`` calls; ""
    #: for an optimiser with the foreach path only.
    kernel: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kernel and cls._fused_step is FusedOptimizer._fused_step:
            raise TypeError(f"{cls.__qualname__} names the fused kernel {cls.kernel!r} but "
                            "does not implement _fused_step, the step that calls it")

    def __init__(self, params: Sequence[torch.Tensor], hyper: Mapping[str, torch.Tensor],
                 fused: bool = True):
        self.params = list(params)
        names = sorted(hyper)
        rows = zip(*(hyper[n].tolist() for n in names), strict=True)
        groups: dict[tuple[float, ...], list[int]] = {}
        for j, row in enumerate(rows):
            groups.setdefault(tuple(row), []).append(j)
        self.groups = [(dict(zip(names, key, strict=True)), idx) for key, idx in groups.items()]
        self.fused = (fused and bool(self.params)
                      and kernel_available(self.kernel, self.params[0].device)
                      and all(_sliceable(p) for p in self.params))
        # each stack's dimensions after the job axis in memory order: every job's slice of
        # the permuted stack is contiguous (one permute per tensor, not one per job)
        self._perms = [(0, *(d + 1 for d in _memory_order(p[0]))) for p in self.params
                       ] if self.fused else []
        self._whole = [p[0].numel() % WHOLE_VECTORS == 0 for p in self.params
                       ] if self.fused else []
        self._runs = [_runs(idx) for _, idx in self.groups]
        self._every = tuple(range(len(self.params)))  # ``live`` when every parameter is
        self._views: dict[tuple[str, int, tuple[int, ...]], list[torch.Tensor]] = {}
        self.kernel_path = False  # whether the last step ran the fused kernels

    @property
    def capturable(self) -> bool:
        """Whether a step may be captured in a CUDA graph and replayed: its work the same
        every step, no host state read (``step_graph.StepGraph``)."""
        return True

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """The fused kernels where the device has them (``fused``) and the gradients line
        up with the parameters; else the foreach arithmetic. Either way only over the parameters
        that have a gradient (``live``, their indices in ``params``)."""
        grads = [p.grad for p in self.params]
        live = self._every
        if any(g is None for g in grads):
            live = tuple(i for i, g in enumerate(grads) if g is not None)
            grads = [grads[i] for i in live]
            if not live:
                return
        self.kernel_path = self._fusable(live, grads)
        if self.kernel_path:
            self._fused_step(live, grads)
        else:
            self._foreach_step(live, grads)
        self._stepped(live)

    def _fused_step(self, live: tuple[int, ...], grads: list[torch.Tensor]) -> None:
        """One step of the parameters ``live`` through the fused ``kernel``; only called
        where the device has it. Required of (and only of) a class naming a ``kernel``."""
        raise TypeError(f"{type(self).__qualname__} has no fused kernel")  # unreachable

    @abstractmethod
    def _foreach_step(self, live: tuple[int, ...], grads: list[torch.Tensor]) -> None:
        """One step of the parameters ``live`` with ``torch._foreach_*`` arithmetic."""

    def _stepped(self, live: tuple[int, ...]) -> None:  # noqa: B027 (an optional hook)
        """After a step of the parameters ``live``, on either path: host-side counts."""

    def _fusable(self, live: tuple[int, ...], grads: Sequence[torch.Tensor]) -> bool:
        """Gradients laid out like their parameters (autograd's layout contract), so the
        kernels' views line up element for element."""
        return self.fused and all(g.stride() == p.stride() for g, p in
                                  zip(grads, _pick(self.params, live), strict=True))

    def _group_views(self, tensors: Sequence[torch.Tensor], group: int,
                     live: tuple[int, ...]) -> list[torch.Tensor]:
        """Contiguous views of group ``group``'s jobs in the stacked tensors of the
        parameters ``live``, in the memory order of the parameters (the tensors have the
        parameters' strides): one per run of consecutive jobs where a job's slice is whole
        vectors, else one per job."""
        out = []
        jobs = self.groups[group][1]
        for t, perm, whole in zip(tensors, _pick(self._perms, live), _pick(self._whole, live),
                                  strict=True):
            t = t.permute(perm)
            if whole:
                out += [t[a:b] for a, b in self._runs[group]]
            else:
                rows = t.unbind(0)
                out += [rows[j] for j in jobs]
        return out

    def _state_views(self, name: str, tensors: Sequence[torch.Tensor | None], group: int,
                     live: tuple[int, ...]) -> list[torch.Tensor]:
        """:meth:`_group_views` of tensors that live as long as the optimiser (one per
        parameter, all of them; those of ``live`` exist), made once."""
        key = (name, group, live)
        if key not in self._views:
            present: Sequence[torch.Tensor] = _pick(tensors, live)  # type: ignore[assignment]
            self._views[key] = self._group_views(present, group, live)
        return self._views[key]

    def _views_per_tensor(self, group: int, live: tuple[int, ...]) -> list[int]:
        """How many views :meth:`_group_views` makes of each tensor of ``live``."""
        return [len(self._runs[group]) if whole else len(self.groups[group][1])
                for whole in _pick(self._whole, live)]


class FusedSGD(FusedOptimizer):
    """``torch.optim.SGD`` (dampening 0) with per-job ``lr``, ``momentum``, ``weight_decay``."""

    kernel = "_fused_sgd_"

    def __init__(self, params: Sequence[torch.Tensor], hyper: Mapping[str, torch.Tensor],
                 nesterov: bool = False, fused: bool = True):
        super().__init__(params, hyper, fused)
        self.nesterov = nesterov
        self.lr = [_per_job(-hyper["lr"], p) for p in self.params]  # negated, as torch does
        self.momentum = [_per_job(hyper["momentum"], p) for p in self.params]
        self.wd = [_per_job(hyper["weight_decay"], p) for p in self.params]
        self.use_wd = bool((hyper["weight_decay"] != 0).any())
        self.use_momentum = bool((hyper["momentum"] != 0).any())
        # one per parameter, made at its first gradient (as torch.optim makes it), laid out
        # like the parameter so that either path can take over from the other
        self.bufs: list[torch.Tensor | None] = [None] * len(self.params)

    def _fused_step(self, live: tuple[int, ...], grads: list[torch.Tensor]) -> None:
        # the kernel's first step sets buf = d_p, as torch.optim does: one call for the
        # parameters at their first gradient, one for the others (each step but the
        # first, or where some parameter got no gradient before, only one of the two)
        new = {i for i in live if self.bufs[i] is None} if self.use_momentum else set()
        if not new:
            self._kernel_calls(live, grads, first=False)
            return
        for i in new:
            self.bufs[i] = torch.zeros_like(self.params[i])
        by_param = dict(zip(live, grads, strict=True))
        for first in (True, False):
            part = tuple(i for i in live if (i in new) == first)
            if part:
                self._kernel_calls(part, [by_param[i] for i in part], first)

    def _kernel_calls(self, live: tuple[int, ...], grads: list[torch.Tensor],
                      first: bool) -> None:
        for g, (h, _) in enumerate(self.groups):
            momentum = h["momentum"] != 0
            torch._fused_sgd_(
                self._state_views("params", self.params, g, live),
                self._group_views(grads, g, live),
                self._state_views("bufs", self.bufs, g, live) if momentum else [],
                weight_decay=h["weight_decay"], momentum=h["momentum"], lr=h["lr"],
                dampening=0.0, nesterov=self.nesterov, maximize=False,
                is_first_step=first and momentum)

    def _foreach_step(self, live: tuple[int, ...], grads: list[torch.Tensor]) -> None:
        # the same arithmetic in the same order as the per-tensor code torch.optim runs
        params = _pick(self.params, live)
        if self.use_wd:  # grad.add(param, alpha=wd)
            grads = torch._foreach_add(grads, torch._foreach_mul(params, _pick(self.wd, live)))
        if self.use_momentum:
            grads = self._momentum_step(live, grads)
        torch._foreach_addcmul_(params, _pick(self.lr, live), grads)  # add_(d_p, alpha=-lr)

    def _momentum_step(self, live: tuple[int, ...], grads: list[torch.Tensor]
                       ) -> list[torch.Tensor]:
        """Update the momentum buffers of ``live``; the directions their parameters take."""
        old = [k for k, i in enumerate(live) if self.bufs[i] is not None]
        if old:  # buf.mul_(momentum).add_(d_p, alpha=1)
            bufs = [self.bufs[live[k]] for k in old]
            torch._foreach_mul_(bufs, [self.momentum[live[k]] for k in old])
            torch._foreach_add_(bufs, [grads[k] for k in old])
        for k, i in enumerate(live):
            if self.bufs[i] is None:  # torch: buf = clone(d_p) at the first gradient
                self.bufs[i] = torch.empty_like(self.params[i]).copy_(grads[k])
        bufs = [b for b in _pick(self.bufs, live) if b is not None]
        # momentum 0 leaves buf == d_p exactly, as torch's no-momentum path would
        if self.nesterov:
            return torch._foreach_add(grads, torch._foreach_mul(bufs, _pick(self.momentum,
                                                                            live)))
        return bufs


class FusedAdam(FusedOptimizer):
    """``torch.optim.Adam`` (L2 weight decay) with per-job ``lr``, ``beta1``, ``beta2``,
    ``eps`` and ``weight_decay``, for a known number of steps."""

    kernel = "_fused_adam_"

    def __init__(self, params: Sequence[torch.Tensor], hyper: Mapping[str, torch.Tensor],
                 steps: int, fused: bool = True):
        super().__init__(params, hyper, fused)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        dev = self.params[0].device if self.params else "cpu"
        # each parameter's step count (torch.optim counts only the steps in which a
        # parameter had a gradient), read by the kernels from float32 tensors on the
        # device, as torch.optim keeps them for fused=True: one tensor holds them all
        self.state_steps = torch.zeros(len(self.params), dtype=torch.float32, device=dev)
        self._step_of = list(self.state_steps.unbind(0))
        self.t = [0] * len(self.params)  # the same counts on the host (the foreach path's)
        self.hyper = hyper
        self.steps = steps
        self.use_wd = bool((hyper["weight_decay"] != 0).any())
        self._scalars: dict[str, list[torch.Tensor]] | None = None

    @property
    def capturable(self) -> bool:
        # the foreach path reads this step's bias corrections by the host's step count
        return self.kernel_path

    def _stepped(self, live: tuple[int, ...]) -> None:  # noqa: B027 (an optional hook)
        for i in live:
            self.t[i] += 1

    def _count(self, live: tuple[int, ...]) -> None:
        """One more step for each parameter of ``live``, on the device."""
        if len(live) == len(self.params):
            self.state_steps.add_(1)
        else:
            torch._foreach_add_([self._step_of[i] for i in live], 1.0)

    def _step_views(self, group: int, live: tuple[int, ...]) -> list[torch.Tensor]:
        """The step count of each view of :meth:`_group_views` (its parameter's)."""
        key = ("state_steps", group, live)
        if key not in self._views:
            self._views[key] = [self._step_of[i] for i, n in
                                zip(live, self._views_per_tensor(group, live), strict=True)
                                for _ in range(n)]
        return self._views[key]

    def _fused_step(self, live: tuple[int, ...], grads: list[torch.Tensor]) -> None:
        self._count(live)
        for g, (h, _) in enumerate(self.groups):
            torch._fused_adam_(
                self._state_views("params", self.params, g, live),
                self._group_views(grads, g, live),
                self._state_views("exp_avg", self.exp_avg, g, live),
                self._state_views("exp_avg_sq", self.exp_avg_sq, g, live), [],
                self._step_views(g, live), lr=h["lr"], beta1=h["beta1"],
                beta2=h["beta2"], weight_decay=h["weight_decay"], eps=h["eps"],
                amsgrad=False, maximize=False)

    def _foreach_scalars(self) -> dict[str, list[torch.Tensor]]:
        """Per-job (and per-step) scalars of the foreach path, shaped for each parameter."""
        hyper, steps = self.hyper, self.steps
        lr, b1, b2 = hyper["lr"].double(), hyper["beta1"].double(), hyper["beta2"].double()
        t = torch.arange(1, steps + 1, dtype=torch.float64)[:, None]
        # torch computes these as Python floats each step: 1 - beta ** step, then
        # step_size = lr / bc1 and sqrt(bc2) (math.sqrt); here for every step at once.
        bc1 = torch.tensor([[1 - b ** s for b in b1.tolist()] for s in t[:, 0].tolist()],
                           dtype=torch.float64)
        bc2_sqrt = torch.tensor([[math.sqrt(1 - b ** s) for b in b2.tolist()]
                                 for s in t[:, 0].tolist()], dtype=torch.float64)
        neg_step_size = -(lr[None, :] / bc1)  # (steps, K)

        def per_step(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return v.to(p.device, p.dtype).reshape(steps, -1, *([1] * (p.ndim - 1)))

        ps = self.params
        return {
            "one_minus_b1": [_per_job(1 - b1, p) for p in ps],
            "b2": [_per_job(b2, p) for p in ps],
            "one_minus_b2": [_per_job(1 - b2, p) for p in ps],
            "eps": [_per_job(hyper["eps"], p) for p in ps],
            "wd": [_per_job(hyper["weight_decay"], p) for p in ps],
            "step_size": [per_step(neg_step_size, p) for p in ps],
            "bc2": [per_step(bc2_sqrt, p) for p in ps],
        }

    def _foreach_step(self, live: tuple[int, ...], grads: list[torch.Tensor]) -> None:
        # the same arithmetic in the same order as the per-tensor code torch.optim runs
        if self._scalars is None:
            self._scalars = self._foreach_scalars()
        c = {k: _pick(v, live) for k, v in self._scalars.items()}
        t = _pick(self.t, live)  # each parameter's step, counted from 0
        params, exp_avg, exp_avg_sq = (_pick(x, live) for x in
                                       (self.params, self.exp_avg, self.exp_avg_sq))
        self._count(live)  # kept in step with the fused path's counts
        if self.use_wd:  # grad.add(param, alpha=wd)
            grads = torch._foreach_add(grads, torch._foreach_mul(c["wd"], params))
        torch._foreach_lerp_(exp_avg, grads, c["one_minus_b1"])
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        torch._foreach_mul_(exp_avg_sq, c["b2"])
        torch._foreach_add_(exp_avg_sq, torch._foreach_mul(
            torch._foreach_mul(c["one_minus_b2"], grads), grads))
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, [b[s] for b, s in zip(c["bc2"], t, strict=True)])
        torch._foreach_add_(denom, c["eps"])
        update = torch._foreach_mul([z[s] for z, s in zip(c["step_size"], t, strict=True)],
                                    exp_avg)
        torch._foreach_div_(update, denom)
        torch._foreach_add_(params, update)  # param.addcdiv_(exp_avg, denom, -step_size)

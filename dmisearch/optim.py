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
  ``fused=True``), once per group on the jobs' slices of the stacks. One pass over memory
  per tensor instead of one per arithmetic operation: training 10 jobs of fcn 2 x 256 with
  Adam went from 0.88 s to 0.60-0.65 s per 100 steps (``benchmarks/RESULTS.md``). SGD's
  kernel gives torch.optim's default (single-tensor) results bit for bit; Adam's agrees to
  rounding. A run of consecutive jobs goes to the kernel as one slice of the stack where
  each job's part is a whole number of ``WHOLE_VECTORS`` elements (see
  :class:`FusedOptimizer`): fcn 2 x 128's SGD step for 16 jobs, 290 -> 90 us.
* **foreach**: ``torch._foreach_*`` operations with per-job hyperparameters broadcast
  along the stacked axis, in the same order of floating-point operations as torch.optim's
  single-tensor code; used where a stack cannot be cut into dense per-job slices, where
  the kernels are missing or not implemented for the device, or with ``fused=False``.

Hyperparameters are passed as float64 tensors of shape ``(K,)``; per-step scalars (Adam's
bias corrections) are computed up front or on the device, so a step never waits on the
host.

A parameter without a gradient (``grad`` None: unused by the forward pass) is skipped as
torch.optim skips it: not updated, not decayed, and its state (SGD's momentum buffer, Adam's
step count) left as it was, so a parameter's state starts at its first gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")

#: A job's slice of this many elements (or a multiple) is a whole number of the CPU
#: kernels' vectors (AVX-512 holds 16 float32), so a stack of such slices goes to a kernel
#: in one call with every element computed as in a per-job call.
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


def _memory_order(t: torch.Tensor) -> list[int]:
    """Dimensions by decreasing stride: ``t.permute(order)`` is contiguous if ``t`` is dense."""
    return sorted(range(t.ndim), key=lambda d: -t.stride(d))


class FusedOptimizer:
    """Base: the ``zero_grad()`` / ``step()`` interface the engine drives.

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
    their per-tensor cost (on the CPU, 16 small calls cost 3x one call on their stack).
    """

    kernel: str = ""  # name of torch's fused kernel in torch.ops.aten, if any

    def __init__(self, params: Sequence[torch.Tensor], hyper: Mapping[str, torch.Tensor],
                 fused: bool = True):
        self.params = list(params)
        names = sorted(hyper)
        rows = zip(*(hyper[n].tolist() for n in names), strict=True)
        groups: dict[tuple[float, ...], list[int]] = {}
        for j, row in enumerate(rows):
            groups.setdefault(tuple(row), []).append(j)
        self.groups = [(dict(zip(names, key, strict=True)), idx) for key, idx in groups.items()]
        self.fused = (fused and bool(self.params) and hasattr(torch.ops.aten, self.kernel)
                      and all(_sliceable(p) for p in self.params))
        # each stack's dimensions after the job axis in memory order: every job's slice of
        # the permuted stack is contiguous (one permute per tensor, not one per job)
        self._perms = [(0, *(d + 1 for d in _memory_order(p[0]))) for p in self.params
                       ] if self.fused else []
        self._whole = [p[0].numel() % WHOLE_VECTORS == 0 for p in self.params
                       ] if self.fused else []
        self._runs = [_runs(idx) for _, idx in self.groups]
        self._views: dict[tuple[str, int, tuple[int, ...]], list[torch.Tensor]] = {}
        self.kernel_path = False  # whether the last step ran the fused kernels

    @property
    def capturable(self) -> bool:
        """Whether a step may be captured in a CUDA graph and replayed: its work the same
        every step, no host state read (``engine._StepGraph``)."""
        return True

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """The fused kernels where the gradients line up with the parameters and the
        device has them; else the foreach arithmetic. Either way only over the parameters
        that have a gradient (``live``, their indices in ``params``)."""
        live = tuple(i for i, p in enumerate(self.params) if p.grad is not None)
        if not live:
            return
        grads: list[torch.Tensor] = [self.params[i].grad for i in live]  # type: ignore[misc]
        self.kernel_path = self._fusable(live, grads) and self._try_kernel(live, grads)
        if not self.kernel_path:
            self._foreach_step(live, grads)
        self._stepped(live)

    def _fused_step(self, live: tuple[int, ...], grads: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _foreach_step(self, live: tuple[int, ...], grads: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _stepped(self, live: tuple[int, ...]) -> None:
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

    def _try_kernel(self, live: tuple[int, ...], grads: list[torch.Tensor]) -> bool:
        """Run the kernel path; False (and never again) where the device has no kernel.
        Dispatch fails before anything is written, so the foreach path can take over."""
        try:
            self._fused_step(live, grads)
        except NotImplementedError:
            self.fused = False
            return False
        return True

    def _state_views(self, name: str, tensors: Sequence[torch.Tensor | None], group: int,
                     live: tuple[int, ...]) -> list[torch.Tensor]:
        """:meth:`_group_views` of tensors that live as long as the optimiser (one per
        parameter, all of them; those of ``live`` exist), made once."""
        key = (name, group, live)
        if key not in self._views:
            self._views[key] = self._group_views(_pick(tensors, live), group, live)  # type: ignore[arg-type]
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
        self.bufs: list[torch.Tensor] | None = None

    def _fused_step(self, grads: list[torch.Tensor]) -> None:
        first = self.bufs is None
        if first:  # the kernel's first step sets buf = d_p, as torch.optim does
            self.bufs = [torch.zeros_like(p) for p in self.params]
        for g, (h, _) in enumerate(self.groups):
            torch._fused_sgd_(
                self._state_views("params", self.params, g), self._group_views(grads, g),
                self._state_views("bufs", self.bufs, g) if h["momentum"] != 0 else [],
                weight_decay=h["weight_decay"], momentum=h["momentum"], lr=h["lr"],
                dampening=0.0, nesterov=self.nesterov, maximize=False,
                is_first_step=first and h["momentum"] != 0)

    def _foreach_step(self, grads: list[torch.Tensor]) -> None:
        # the same arithmetic in the same order as the per-tensor code torch.optim runs
        if self.use_wd:  # grad.add(param, alpha=wd)
            grads = torch._foreach_add(grads, torch._foreach_mul(self.params, self.wd))
        if self.use_momentum:
            if self.bufs is None:  # torch: buf = clone(d_p) on the first step
                self.bufs = [g.clone() for g in grads]
            else:  # buf.mul_(momentum).add_(d_p, alpha=1)
                torch._foreach_mul_(self.bufs, self.momentum)
                torch._foreach_add_(self.bufs, grads)
            # momentum 0 leaves buf == d_p exactly, as torch's no-momentum path would
            if self.nesterov:
                grads = torch._foreach_add(grads, torch._foreach_mul(self.bufs, self.momentum))
            else:
                grads = self.bufs
        torch._foreach_addcmul_(self.params, self.lr, grads)  # param.add_(d_p, alpha=-lr)


class FusedAdam(FusedOptimizer):
    """``torch.optim.Adam`` (L2 weight decay) with per-job ``lr``, ``beta1``, ``beta2``,
    ``eps`` and ``weight_decay``, for a known number of steps."""

    kernel = "_fused_adam_"

    def __init__(self, params: Sequence[torch.Tensor], hyper: Mapping[str, torch.Tensor],
                 steps: int, fused: bool = True):
        super().__init__(params, hyper, fused)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.t = 0
        dev = self.params[0].device if self.params else "cpu"
        # the kernels read the step count from a float32 tensor on the device, as
        # torch.optim keeps it for fused=True; one counter serves every tensor
        self.state_step = torch.zeros((), dtype=torch.float32, device=dev)
        self.hyper = hyper
        self.steps = steps
        self.use_wd = bool((hyper["weight_decay"] != 0).any())
        self._scalars: dict[str, list[torch.Tensor]] | None = None

    @property
    def capturable(self) -> bool:
        # the foreach path reads this step's bias corrections by the host's step count
        return self.kernel_path

    def step(self) -> None:
        super().step()
        self.t += 1

    def _fused_step(self, grads: list[torch.Tensor]) -> None:
        self.state_step.add_(1)
        for g, (h, _) in enumerate(self.groups):
            params = self._state_views("params", self.params, g)
            torch._fused_adam_(
                params, self._group_views(grads, g),
                self._state_views("exp_avg", self.exp_avg, g),
                self._state_views("exp_avg_sq", self.exp_avg_sq, g), [],
                [self.state_step] * len(params), lr=h["lr"], beta1=h["beta1"],
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

    def _foreach_step(self, grads: list[torch.Tensor]) -> None:
        # the same arithmetic in the same order as the per-tensor code torch.optim runs
        if self._scalars is None:
            self._scalars = self._foreach_scalars()
        c, t = self._scalars, self.t
        self.state_step.add_(1)  # kept in step with the fused path's counter
        if self.use_wd:  # grad.add(param, alpha=wd)
            grads = torch._foreach_add(grads, torch._foreach_mul(c["wd"], self.params))
        torch._foreach_lerp_(self.exp_avg, grads, c["one_minus_b1"])
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        torch._foreach_mul_(self.exp_avg_sq, c["b2"])
        torch._foreach_add_(self.exp_avg_sq, torch._foreach_mul(
            torch._foreach_mul(c["one_minus_b2"], grads), grads))
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, [b[t] for b in c["bc2"]])
        torch._foreach_add_(denom, c["eps"])
        update = torch._foreach_mul([s[t] for s in c["step_size"]], self.exp_avg)
        torch._foreach_div_(update, denom)
        torch._foreach_add_(self.params, update)  # param.addcdiv_(exp_avg, denom, -step)

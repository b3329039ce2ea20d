"""Optimisers over stacked parameters, with hyperparameters that may differ per job.

The fused engine stacks the parameters of K jobs along a leading axis. ``torch.optim``
applied to such a stack is already exact per job for element-wise optimisers, but it can
only use one learning rate for the whole stack. These classes apply ``torch.optim.SGD`` and
``torch.optim.Adam``'s update rules (PyTorch 2.x, single-tensor path, not ``maximize``,
not ``amsgrad``) with a value per job for every hyperparameter, so jobs of different trials
(different ``lr``, ``momentum``, ...) train in one program. They follow torch's order of
floating-point operations; results agree with ``torch.optim`` to rounding, which
``tests/test_engine.py`` checks against the plain per-model loop.

Hyperparameters are passed as float64 tensors of shape ``(K,)``; per-step scalars (Adam's
bias corrections) are precomputed for every step up front, so a step never waits on the
host.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch


def _per_job(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(K,)`` float64 -> ``(K, 1, ..., 1)`` in ``like``'s dtype and device."""
    shape = (-1,) + (1,) * (like.ndim - 1)
    return value.to(device=like.device, dtype=like.dtype).reshape(shape)


class FusedOptimizer:
    """Base: the ``zero_grad()`` / ``step()`` interface the engine drives."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self.params = list(params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class FusedSGD(FusedOptimizer):
    """``torch.optim.SGD`` (dampening 0) with per-job ``lr``, ``momentum``, ``weight_decay``."""

    def __init__(self, params: Sequence[torch.Tensor], hyper: Mapping[str, torch.Tensor],
                 nesterov: bool = False):
        super().__init__(params)
        self.nesterov = nesterov
        self.lr = [_per_job(-hyper["lr"], p) for p in self.params]  # negated, as torch does
        self.momentum = [_per_job(hyper["momentum"], p) for p in self.params]
        self.wd = [_per_job(hyper["weight_decay"], p) for p in self.params]
        self.use_wd = bool((hyper["weight_decay"] != 0).any())
        self.use_momentum = bool((hyper["momentum"] != 0).any())
        self.bufs: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        # torch._foreach_* ops: the same arithmetic in the same order as the per-tensor
        # code torch.optim runs, one C++ loop over the parameters instead of a Python one.
        grads = [p.grad for p in self.params]
        if self.use_wd:  # grad.add(param, alpha=wd)
            grads = torch._foreach_add(grads, torch._foreach_mul(self.params, self.wd))
        if self.use_momentum:
            if self.bufs[0] is None:  # torch: buf = clone(d_p) on the first step
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

    def __init__(self, params: Sequence[torch.Tensor], hyper: Mapping[str, torch.Tensor],
                 steps: int):
        super().__init__(params)
        lr, b1, b2 = hyper["lr"].double(), hyper["beta1"].double(), hyper["beta2"].double()
        t = torch.arange(1, steps + 1, dtype=torch.float64)[:, None]
        # torch computes these as Python floats each step: 1 - beta ** step, then
        # step_size = lr / bc1 and sqrt(bc2) (math.sqrt); here for every step at once.
        bc1 = torch.tensor([[1 - b ** s for b in b1.tolist()] for s in t[:, 0].tolist()],
                           dtype=torch.float64)
        bc2_sqrt = torch.tensor([[math.sqrt(1 - b ** s) for b in b2.tolist()]
                                 for s in t[:, 0].tolist()], dtype=torch.float64)
        self.neg_step_size = -(lr[None, :] / bc1)  # (steps, K)
        self.bc2_sqrt = bc2_sqrt
        self.one_minus_b1 = [_per_job(1 - b1, p) for p in self.params]
        self.b2 = [_per_job(b2, p) for p in self.params]
        self.one_minus_b2 = [_per_job(1 - b2, p) for p in self.params]
        self.eps = [_per_job(hyper["eps"], p) for p in self.params]
        self.wd = [_per_job(hyper["weight_decay"], p) for p in self.params]
        self.use_wd = bool((hyper["weight_decay"] != 0).any())
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        dev = self.params[0].device if self.params else "cpu"
        # per-step scalars, placed once: (steps, K, 1, ...) shaped for each parameter
        self._step_size = [self.neg_step_size.to(dev, p.dtype).reshape(
            steps, -1, *([1] * (p.ndim - 1))) for p in self.params]
        self._bc2 = [self.bc2_sqrt.to(dev, p.dtype).reshape(
            steps, -1, *([1] * (p.ndim - 1))) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        # torch._foreach_* ops: the same arithmetic in the same order as the per-tensor
        # code torch.optim runs, one C++ loop over the parameters instead of a Python one.
        t = self.t
        self.t += 1
        grads = [p.grad for p in self.params]
        if self.use_wd:  # grad.add(param, alpha=wd)
            grads = torch._foreach_add(grads, torch._foreach_mul(self.wd, self.params))
        torch._foreach_lerp_(self.exp_avg, grads, self.one_minus_b1)
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        torch._foreach_mul_(self.exp_avg_sq, self.b2)
        torch._foreach_add_(self.exp_avg_sq, torch._foreach_mul(
            torch._foreach_mul(self.one_minus_b2, grads), grads))
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, [b[t] for b in self._bc2])
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_mul([s[t] for s in self._step_size], self.exp_avg)
        torch._foreach_div_(update, denom)
        torch._foreach_add_(self.params, update)  # param.addcdiv_(exp_avg, denom, -step)

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
        for i, p in enumerate(self.params):
            d_p = p.grad
            if self.use_wd:  # grad.add(param, alpha=wd)
                d_p = d_p + self.wd[i] * p
            if self.use_momentum:
                buf = self.bufs[i]
                if buf is None:  # torch: buf = clone(d_p) on the first step
                    buf = self.bufs[i] = d_p.clone()
                else:  # buf.mul_(momentum).add_(d_p, alpha=1)
                    buf.mul_(self.momentum[i]).add_(d_p)
                # momentum 0 leaves buf == d_p exactly, as torch's no-momentum path would
                d_p = d_p + self.momentum[i] * buf if self.nesterov else buf
            p.addcmul_(self.lr[i], d_p)  # param.add_(d_p, alpha=-lr)


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
        # per-step scalars, placed once: (steps, K) in each parameter's dtype
        self._step_size = {p.dtype: self.neg_step_size.to(dev, p.dtype) for p in self.params}
        self._bc2 = {p.dtype: self.bc2_sqrt.to(dev, p.dtype) for p in self.params}
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        t = self.t
        self.t += 1
        for i, p in enumerate(self.params):
            grad = p.grad
            if self.use_wd:  # grad.add(param, alpha=wd)
                grad = grad + self.wd[i] * p
            self.exp_avg[i].lerp_(grad, self.one_minus_b1[i])
            # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            self.exp_avg_sq[i].mul_(self.b2[i]).add_(self.one_minus_b2[i] * grad * grad)
            shape = (-1,) + (1,) * (p.ndim - 1)
            bc2 = self._bc2[p.dtype][t].reshape(shape)
            step = self._step_size[p.dtype][t].reshape(shape)
            denom = (self.exp_avg_sq[i].sqrt() / bc2).add_(self.eps[i])
            p.add_(step * self.exp_avg[i] / denom)  # param.addcdiv_(exp_avg, denom, -step)

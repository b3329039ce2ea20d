"""Infinite-width inference: kernel (ridge) regression with the NNGP or NTK kernel.

``nngp`` and ``ntk`` predict ``K(x, X) (K(X, X) + lambda I)^-1 Y`` with the analytic kernel
of the chosen architecture (``Architecture.kernel``; the built-ins' are in ``kernels.py``),
in float64. ``lambda = ridge * mean(diag K(X, X))``, so ``ridge`` is relative to the kernel's
scale. Classification regresses one-hot targets; the class is the largest output.

For ``ntk`` this is the infinite-width network trained to convergence by gradient flow on
the mean squared error (from a centred initialisation, i.e. ``gd`` with ``center = true``
as the width grows); for ``nngp``, the posterior mean of the corresponding Gaussian process
with noise variance ``lambda``.

Kernels are computed once per (architecture hyperparameters that enter the kernel, training
pool, test set) and reused: the curve's nested sizes slice one ``K(pool, pool)`` and one
``K(test, pool)``, and trials that differ only in ``ridge`` (or in width) share them.

Augmentation (``nngp+shift``, ``ntk+flip``) averages the kernel over the transform's
(finite) group: ``K(x, x') -> mean_g K(x, g x')``. For a kernel invariant to acting on both
arguments (the built-ins under shifts with circular padding, and under flips unless an even
filter meets zeros padding), kernel
regression with the averaged kernel equals kernel regression on the whole orbit of the
training set (with the ridge scaled by the group's size).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dmisearch.components import (
    Algorithm,
    Architecture,
    Job,
    Predictions,
    Run,
    RunContext,
    Transform,
)
from dmisearch.loop import check_deadline
from dmisearch.space import Float

#: Bytes of kernel matrices kept for reuse across sizes, seeds' stages and trials (LRU).
CACHE_BYTES = 2 * 2**30


@dataclasses.dataclass(kw_only=True)
class KernelRegression(Algorithm):
    """Kernel ridge regression with an architecture's infinite-width kernel."""

    kernel_kind: ClassVar[str]
    ridge: float = 1e-4  # lambda / mean(diag K(X, X))
    #: Predictions depend on the data only through the kernel, which inherits every
    #: orthogonal coupling of the architecture: K(gx, gx') = K(x, x').
    symmetries = frozenset({"rotate", "permute", "sign_flip"})

    space = {"ridge": Float(1e-6, 1.0, log=True)}

    def check(self) -> None:
        if not self.ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {self.ridge}")

    @classmethod
    def augmentation_problem(cls, transform: Transform) -> str | None:
        if type(transform).orbit is Transform.orbit:
            return (f"kernel regression averages its kernel over the transform's group, and "
                    f"'{transform.name}' has no finite group to enumerate (use shift or flip)")
        return None

    def fit_predict(self, model: Architecture, jobs: Sequence[Job], ctx: RunContext
                    ) -> list[Predictions]:
        return self.fit_predict_runs([Run(model, self, jobs)], ctx)[0]

    @classmethod
    def fit_predict_runs(cls, runs: Sequence[Run], ctx: RunContext) -> list[list[Predictions]]:
        out = []
        for run in runs:
            algo = run.algorithm
            assert isinstance(algo, KernelRegression)
            largest: dict[tuple, int] = {}  # the largest prefix of each pool asked for
            for job in run.jobs:
                key = _tensor_key(job.x_train)
                largest[key] = max(largest.get(key, 0), job.size)
            out.append([algo._one(run.model, job, largest[_tensor_key(job.x_train)], ctx)
                        for job in run.jobs])
        return out

    def _one(self, model: Architecture, job: Job, pool_size: int, ctx: RunContext
             ) -> Predictions:
        check_deadline()
        n = job.size
        k_pool, k_test = _kernels(model, self.kernel_kind, self.augmentation, job, pool_size)
        k_train = k_pool[:n, :n]
        if ctx.task == "classification":
            y = F.one_hot(job.y_train, ctx.out_dim).to(torch.float64)
        else:
            y = job.y_train.to(torch.float64)
        alpha = _solve(k_train, y, self.ridge)
        test = k_test[:, :n] @ alpha
        train = k_train @ alpha
        ok = bool(torch.isfinite(test).all() & torch.isfinite(train).all())
        return Predictions(test=test.to(ctx.dtype), train=train.to(ctx.dtype), diverged=not ok)


@dataclasses.dataclass(kw_only=True)
class NNGP(KernelRegression):
    """Kernel regression with the NNGP kernel (infinite width, readout trained, Bayesian).

    The posterior mean of the Gaussian process the infinitely wide network is at
    initialisation, with noise variance ``lambda``.
    """

    name = "nngp"
    kernel_kind = "nngp"
    requires = frozenset({"nngp"})


@dataclasses.dataclass(kw_only=True)
class NTK(KernelRegression):
    """Kernel regression with the NTK (infinite width, trained by gradient descent to the end).

    What the infinitely wide network converges to when trained by gradient flow on the
    mean squared error from a centred initialisation.
    """

    name = "ntk"
    kernel_kind = "ntk"
    requires = frozenset({"ntk"})


def _solve(k: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """``(k + ridge * mean(diag k) I)^-1 y`` in float64; eigen-solve if not positive definite."""
    n = k.shape[0]
    lam = ridge * float(k.diagonal().mean()) if n else 0.0
    a = k + lam * torch.eye(n, dtype=k.dtype, device=k.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(y, chol)
    w, v = torch.linalg.eigh(a)  # singular or indefinite by rounding: drop tiny modes
    keep = w > w.abs().max() * n * torch.finfo(w.dtype).eps
    return v[:, keep] @ ((v[:, keep].T @ y) / w[keep, None])


def _tensor_key(t: torch.Tensor) -> tuple:
    """Identity of a tensor's data: prefixes of one pool share it (with the pool's start)."""
    return (t.data_ptr(), t.stride(), t.dtype, t.device, tuple(t.shape[1:]))


class _Cache:
    """LRU of kernel matrices, bounded in bytes; entries hold their input tensors, so memory
    is not reused under a cached key while the entry lives."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def get(self, key: tuple) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        return None

    def put(self, key: tuple, value: tuple[torch.Tensor, ...]) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > 1 and self.nbytes() > self.max_bytes:
            self.entries.popitem(last=False)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for v in self.entries.values() for t in v[:2])


_CACHE = _Cache(CACHE_BYTES)


def _kernels(model: Architecture, kind: str, augmentation: Transform | None, job: Job,
             pool_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``K(pool, pool)`` and ``K(test, pool)`` for the pool that ``job.x_train`` starts,
    at least ``pool_size`` rows of it, from the cache when possible."""
    aug = None if augmentation is None else (augmentation.name,
                                             repr(augmentation.get_params()))
    key = (model.kernel_key(), kind, aug, _tensor_key(job.x_train), _tensor_key(job.x_test),
           len(job.x_test))
    hit = _CACHE.get(key)
    if hit is not None and hit[0].shape[0] >= pool_size:
        return hit[0], hit[1]
    base = job.x_train.as_strided((pool_size, *job.x_train.shape[1:]),
                                  job.x_train.stride())  # the pool's first pool_size rows
    k_pool = _averaged(model, kind, augmentation, base, base)
    k_test = _averaged(model, kind, augmentation, job.x_test, base)
    _CACHE.put(key, (k_pool, k_test, base, job.x_test))
    return k_pool, k_test


def _averaged(model: Architecture, kind: str, augmentation: Transform | None,
              x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    if augmentation is None:
        return model.kernel(x1, x2 if x2 is not x1 else None, kind)
    orbit = augmentation.orbit(x2)  # (|G|, n2, *shape)
    assert orbit is not None
    g, n2 = orbit.shape[:2]
    k = model.kernel(x1, orbit.reshape(g * n2, *x2.shape[1:]), kind)
    return k.reshape(len(x1), g, n2).mean(1)

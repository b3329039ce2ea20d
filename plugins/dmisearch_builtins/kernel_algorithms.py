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
``K(test, pool)``, and trials that differ only in ``ridge`` (or in width) share them. A pool
and test set whose inputs a cached pool and test set hold, in any order (every seed's draw
of a dataset with fixed splits, such as MNIST-1D's 4000 and 1000 signals at the largest
size), take their kernels from the cached ones, rows and columns gathered.

Exact kernels of a pool of ``N`` inputs cost ``N (N + n_test)`` kernel entries in time and
memory (minutes for the convolutional kernels at ``N = 4000`` on a CPU). With the Nystrom
approximation, a pool whose largest size ``N`` exceeds ``landmarks = m`` computes only
``K(pool, L)`` and ``K(test, L)``, the landmarks ``L`` being the pool's first ``m`` inputs
(the pool is a random draw, so its prefix is a uniform sample of it). A size ``n > m``
predicts ``K(x, L) alpha`` with ``alpha = (K_Ln K_nL + lambda K_LL)^+ K_Ln y``: kernel
regression with the Nystrom kernel ``K_nL K_LL^+ K_Ln``, solved in float64 in the features
``K_nL W`` (``W W^T = K_LL^+``: an inverse Cholesky factor, or eigenvectors where ``K_LL``
is singular to rounding). Here ``lambda = ridge * mean(diag K_LL)``: the landmarks'
self-kernels, a uniform sample of the pool's, stand in for the ``n`` inputs' (computing
those would take ``n`` one-input kernel calls). A size ``n <= m`` has every training input
as a landmark, where the Nystrom solution is exact kernel regression; it is solved exactly
from the same matrices. ``approximation`` picks: ``exact`` never approximates, ``nystrom``
does whenever ``N > m``, and ``auto`` (the default) is exact while ``N <= AUTO_EXACT_MAX``
(4000) and Nystrom beyond. With the default ``landmarks`` (4000, the same) every size up to
4000 is exact whatever the curve's largest size, and beyond it time and memory grow as
``N m`` instead of ``N^2``. The approximation is not exact kernel regression: it flattens
the learning curve beyond ``m`` where exact kernel regression still learns from the extra
inputs, and regularises it where exact kernel regression overfits a small ridge
(``benchmarks/bench_nystrom.py``; measurements in benchmarks/RESULTS.md, "Nystrom").

Augmentation (``nngp+shift``, ``ntk+flip``) averages the kernel over the transform's
(finite) group: ``K(x, x') -> mean_g K(x, g x')``. For a kernel invariant to acting on both
arguments (the built-ins under shifts with circular padding, and under flips unless an even
filter meets zeros padding), kernel
regression with the averaged kernel equals kernel regression on the whole orbit of the
training set (with the ridge scaled by the group's size). With Nystrom, the landmarks'
kernels are averaged the same way: the approximation is of the averaged kernel.
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
#: The values of the ``approximation`` hyperparameter.
APPROXIMATIONS = ("auto", "exact", "nystrom")
#: ``approximation = "auto"`` is exact while a pool's largest training size is at most this:
#: digits and MNIST-1D whole, where Nystrom moved test errors by several percent
#: (``python benchmarks/bench_nystrom.py``; benchmarks/RESULTS.md, "Nystrom").
AUTO_EXACT_MAX = 4000


@dataclasses.dataclass(kw_only=True)
class KernelRegression(Algorithm):
    """Kernel ridge regression with an architecture's infinite-width kernel."""

    kernel_kind: ClassVar[str]
    ridge: float = 1e-4  # lambda / mean(diag K(X, X))
    approximation: str = "auto"  # "exact", "nystrom" (with `landmarks`), or "auto"
    landmarks: int = 4000  # Nystrom landmarks: the first `landmarks` inputs of the pool
    #: Predictions depend on the data only through the kernel, which inherits every
    #: orthogonal coupling of the architecture: K(gx, gx') = K(x, x').
    symmetries = frozenset({"rotate", "permute", "sign_flip"})

    space = {"ridge": Float(1e-6, 1.0, log=True)}

    def check(self) -> None:
        if not self.ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {self.ridge}")
        if self.approximation not in APPROXIMATIONS:
            raise ValueError(
                f"approximation must be one of {', '.join(map(repr, APPROXIMATIONS))} (auto: "
                f"exact up to {AUTO_EXACT_MAX} training inputs, Nystrom beyond), got "
                f"{self.approximation!r}")
        if (isinstance(self.landmarks, bool) or not isinstance(self.landmarks, int)
                or self.landmarks < 1):
            raise ValueError(f"landmarks must be an integer >= 1 (how many training inputs "
                             f"the Nystrom approximation keeps), got {self.landmarks!r}")

    def landmark_count(self, pool_size: int) -> int | None:
        """The landmarks for a pool whose largest training size is ``pool_size``; None where
        its kernels are exact (every training input a landmark, or not approximated)."""
        if self.approximation == "exact" or pool_size <= self.landmarks:
            return None
        if self.approximation == "auto" and pool_size <= AUTO_EXACT_MAX:
            return None
        return self.landmarks

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
        k_pool, k_test, feats = _kernels(model, self.kernel_kind, self.augmentation, job,
                                         pool_size, self.landmark_count(pool_size))
        if ctx.task == "classification":
            y = F.one_hot(job.y_train, ctx.out_dim).to(torch.float64)
        else:
            y = job.y_train.to(torch.float64)
        if n <= k_pool.shape[1]:  # exact: K(pool, pool), or every training input a landmark
            k_train = k_pool[:n, :n]
            alpha = _solve(k_train, y, self.ridge)
            test, train = k_test[:, :n] @ alpha, k_train @ alpha
        else:
            assert feats is not None
            lam = self.ridge * float(k_pool.diagonal().mean())  # mean diag K_mm
            alpha = _nystrom_solve(k_pool[:n], feats, y, lam)
            test, train = k_test @ alpha, k_pool[:n] @ alpha
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
    return _spd_solve(k + lam * torch.eye(n, dtype=k.dtype, device=k.device), y)


def landmark_features(k_mm: torch.Tensor) -> torch.Tensor:
    """``W`` with ``W W^T = K_mm^+`` (``m x r``): the Nystrom features of inputs ``x`` are
    ``K(x, landmarks) W``, and their Gram matrix is ``K_nm K_mm^+ K_mn``. ``W = L^-T`` from a
    Cholesky factor ``L`` (a jitter of ``m eps mean(diag K_mm)``); where that fails (``K_mm``
    singular to rounding), eigenvectors with the modes below rounding dropped."""
    m = len(k_mm)
    k_mm = (k_mm + k_mm.T) / 2
    eps = m * torch.finfo(k_mm.dtype).eps
    jitter = eps * float(k_mm.diagonal().mean()) if m else 0.0
    eye = torch.eye(m, dtype=k_mm.dtype, device=k_mm.device)
    chol, info = torch.linalg.cholesky_ex(k_mm + jitter * eye)
    if int(info) == 0:
        return torch.linalg.solve_triangular(chol, eye, upper=False).T
    w, v = torch.linalg.eigh(k_mm)
    keep = w > w.abs().max() * eps
    return v[:, keep] / w[keep].sqrt()


def _nystrom_solve(k_nm: torch.Tensor, feats: torch.Tensor, y: torch.Tensor, lam: float
                   ) -> torch.Tensor:
    """``alpha_m`` with ``K(x, landmarks) alpha_m`` the Nystrom kernel ridge prediction:
    ``alpha_m = (K_mn K_nm + lam K_mm)^+ K_mn y``, solved in the features ``B = K_nm W``
    (``feats = W``) as ``W (B^T B + lam I)^-1 B^T y``."""
    b = k_nm @ feats
    a = b.T @ b + lam * torch.eye(b.shape[1], dtype=b.dtype, device=b.device)
    return feats @ _spd_solve(a, b.T @ y)


def _spd_solve(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``a^-1 y`` for a symmetric ``a`` meant to be positive definite."""
    n = a.shape[0]
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
    """LRU of kernel matrices, bounded in bytes. An entry is a tuple whose leading tensors
    (up to three; None skipped) are counted, the rest its input tensors: it holds them, so
    memory is not reused under a cached key while the entry lives."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def get(self, key: tuple) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        return None

    def put(self, key: tuple, value: tuple[torch.Tensor | None, ...]) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > 1 and self.nbytes() > self.max_bytes:
            self.entries.popitem(last=False)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for v in self.entries.values()
                   for t in v[:3] if t is not None)

    def permuted(self, config: tuple, pool: torch.Tensor, x_test: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Exact ``K(pool, pool)`` and ``K(test, pool)`` gathered from an entry of the same
        ``config`` whose pool holds every input of ``pool`` and whose test set every input
        of ``x_test`` (each in any order); None if there is none."""
        for key, entry in reversed(self.entries.items()):
            if key[0] != config or key[-1] is not None:
                continue
            k_pool, k_test, _, base, test = entry
            if (test.dtype != x_test.dtype or test.device != x_test.device
                    or base.shape[1:] != pool.shape[1:]):
                continue
            rows, cols = _positions(base, pool), _positions(test, x_test)
            if rows is None or cols is None:
                continue
            self.entries.move_to_end(key)
            return k_pool[rows][:, rows], k_test[cols][:, rows]
        return None


def _positions(cached: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor | None:
    """Where each input of ``wanted`` is in ``cached`` (None: one of them is not)."""
    index = {r: i for i, r in enumerate(_row_bytes(cached))}
    rows = [index.get(r) for r in _row_bytes(wanted)]
    return None if None in rows else torch.tensor(rows, device=cached.device)


def _row_bytes(x: torch.Tensor) -> list[bytes]:
    """Each input's bytes: equal bytes, equal inputs (so equal kernel rows)."""
    return [r.tobytes() for r in x.detach().reshape(len(x), -1).cpu().numpy()]


_CACHE = _Cache(CACHE_BYTES)


def _kernels(model: Architecture, kind: str, augmentation: Transform | None, job: Job,
             pool_size: int, landmarks: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``K(pool, pool)`` and ``K(test, pool)`` for the pool that ``job.x_train`` starts, at
    least ``pool_size`` rows of it; or, with ``landmarks``, ``K(pool, landmarks)`` and
    ``K(test, landmarks)`` (the pool's first ``landmarks`` inputs) and the landmarks'
    features (:func:`landmark_features`). From the cache when possible."""
    aug = None if augmentation is None else (augmentation.name,
                                             repr(augmentation.get_params()))
    config = (model.kernel_key(), kind, aug)
    key = (config, _tensor_key(job.x_train), _tensor_key(job.x_test), len(job.x_test),
           landmarks)
    hit = _CACHE.get(key)
    if hit is not None and hit[0].shape[0] >= pool_size:
        return hit[0], hit[1], hit[2]
    base = job.x_train.as_strided((pool_size, *job.x_train.shape[1:]),
                                  job.x_train.stride())  # the pool's first pool_size rows
    feats = None
    if landmarks is None and (found := _CACHE.permuted(config, base, job.x_test)) is not None:
        return found[0], found[1], None  # not cached again: a gather is cheap, memory is not
    if landmarks is None:
        k_pool = _averaged(model, kind, augmentation, base, base)
        k_test = _averaged(model, kind, augmentation, job.x_test, base)
    else:
        marks = base[:landmarks]
        k_mm = _averaged(model, kind, augmentation, marks, marks)
        k_pool = torch.cat([k_mm, _averaged(model, kind, augmentation, base[landmarks:], marks)])
        k_test = _averaged(model, kind, augmentation, job.x_test, marks)
        feats = landmark_features(k_mm)
    _CACHE.put(key, (k_pool, k_test, feats, base, job.x_test))
    return k_pool, k_test, feats


def _averaged(model: Architecture, kind: str, augmentation: Transform | None,
              x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    if augmentation is None:
        return model.kernel(x1, x2 if x2 is not x1 else None, kind)
    orbit = augmentation.orbit(x2)  # (|G|, n2, *shape)
    assert orbit is not None
    g, n2 = orbit.shape[:2]
    k = model.kernel(x1, orbit.reshape(g * n2, *x2.shape[1:]), kind)
    return k.reshape(len(x1), g, n2).mean(1)

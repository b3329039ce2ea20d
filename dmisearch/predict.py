"""``dmisearch predict``: the kernel learners' learning curves, predicted before training.

For every architecture of a study that has an analytic kernel, the kernel's Gram matrix on a
pool of the study's own training data gives its spectrum and the target's power along it
(:mod:`dmisearch.theory`); the theory then gives the expected test error of kernel
regression at every size of the study's curve, and from it the study's aulc. Regression
targets are predicted directly; classification through one-hot targets (the mean squared
error of one-hot kernel regression, not the error rate). docs/theory.md has the equations
and where they fail.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from optuna.distributions import FloatDistribution

from dmisearch.errors import DmisearchError
from dmisearch.factory import Problems, instantiate
from dmisearch.kernel_budget import available_memory
from dmisearch.metrics import aulc as aulc_of
from dmisearch.metrics import floor_for
from dmisearch.objective import resolve_device
from dmisearch.progress import Throttled, reporting_to
from dmisearch.seeding import derive_seed
from dmisearch.space import Fixed
from dmisearch.spec import Candidate, StudySpec
from dmisearch.theory import PoolSpectra, Spectrum, SpectrumError

KINDS = ("nngp", "ntk")
#: The smallest default pool, and how many times the largest curve size it covers: the
#: estimate drifts low as the size nears the pool (docs/theory.md, "Where it fails").
MIN_POOL, POOL_PER_SIZE = 1000, 4
#: Ridges tried across a searched ``ridge`` range (log-spaced); the best is reported, as the
#: search would find it.
RIDGE_POINTS = 13
#: Copies of the pool's Gram matrix alive at once (the kernel, its eigenvectors, the solve).
GRAM_COPIES = 4
#: Pools from this size on get an up-front time estimate (a probe of about a second per
#: kernel); past LONG_SECONDS a warning with the options.
ESTIMATE_FROM, LONG_SECONDS = 1000, 30 * 60
#: Log-spaced modes at which a stored spectrum keeps its eigenvalue and C(k).
SPECTRUM_POINTS = 64


@dataclasses.dataclass(frozen=True)
class KernelPrediction:
    """The predicted learning curve of one (architecture, kernel algorithm) pair."""

    model: str
    algorithm: str
    params: dict[str, Any]
    ridge: float
    sizes: tuple[int, ...]
    errors: tuple[float, ...]
    aulc: float
    baseline: float
    pool: int
    spectrum: Spectrum

    @property
    def modes_90(self) -> int:
        """How many of the kernel's modes hold 90% of the target's power."""
        return self.spectrum.modes_for(0.9)

    def records(self, rank: int, target: str) -> list[dict[str, Any]]:
        return [{"model": self.model, "algorithm": self.algorithm, "size": n,
                 "predicted_error": None if math.isnan(e) else e,  # null: beyond the pool's
                 "predicted_aulc": self.aulc, "rank": rank,
                 "ridge": self.ridge, "pool": self.pool, "modes_90": self.modes_90,
                 "baseline_error": self.baseline, "target": target, "params": self.params}
                for n, e in zip(self.sizes, self.errors, strict=True)]


def kernel_pairs(spec: StudySpec, kinds: Sequence[str] | None = None
                 ) -> list[tuple[Candidate, str, Candidate | None]]:
    """(architecture, kernel kind, the study's algorithm of that kind or None) for every
    architecture providing the kind. Kinds: those of the study's kernel algorithms, else
    ``ntk`` (the limit of the gradient-trained networks it searches)."""
    by_kind = {getattr(c.cls, "kernel_kind", None): c for c in spec.algorithms.values()
               if getattr(c.cls, "augmentation", None) is None}
    if kinds is None:
        kinds = [k for k in KINDS if k in by_kind] or ["ntk"]
    return [(m, k, by_kind.get(k)) for m in spec.models.values() for k in kinds
            if k in m.cls.provides]  # type: ignore[attr-defined]


def default_pool(spec: StudySpec) -> int:
    """``max(MIN_POOL, POOL_PER_SIZE x the largest size)``, within the data available."""
    want = max(MIN_POOL, POOL_PER_SIZE * spec.grid.sizes[-1])
    n = pool_limit(spec)
    return want if n is None else min(want, n)


def pool_limit(spec: StudySpec) -> int | None:
    """The largest pool the data can give (None: unbounded): the draw's one test sample
    comes from the same data unless the data has a fixed test split."""
    n = spec.info.n_available
    return n - 1 if n is not None and spec.info.n_test_available is None else n


def predicted_sizes(sizes: Sequence[int], pool: int) -> list[int]:
    """The sizes a pool of ``pool`` inputs predicts: up to ``1 / POOL_PER_SIZE`` of it."""
    return [n for n in sizes if n <= pool // POOL_PER_SIZE]


def check_pool(spec: StudySpec, pool: int, device: torch.device) -> None:
    """Refuse, before any kernel, a pool the data cannot give or the memory cannot hold."""
    n = pool_limit(spec)
    if pool < 2:
        raise DmisearchError(f"--pool {pool}: the pool needs at least 2 inputs")
    if n is not None and pool > n:
        raise DmisearchError(f"--pool {pool}: the data has only {n} training samples; "
                             f"use --pool {n} or less")
    free = available_memory(device)
    need = GRAM_COPIES * 8 * pool * pool
    inside = predicted_sizes(spec.grid.sizes, pool)
    if len(inside) < 2:
        need_pool = POOL_PER_SIZE * spec.grid.sizes[min(1, len(spec.grid.sizes) - 1)]
        raise DmisearchError(
            f"--pool {pool}: a pool predicts sizes up to a quarter of itself "
            f"({pool // POOL_PER_SIZE}), "
            f"which leaves {len(inside)} of the study's sizes {list(spec.grid.sizes)}; "
            f"a curve needs 2: use --pool {need_pool} or more"
            + ("" if n is None or need_pool <= n else
               f" (the data has {n}: lower the study's sizes)"))
    if free is not None and need > free:
        largest = int(math.sqrt(free / (GRAM_COPIES * 8)))
        raise DmisearchError(
            f"--pool {pool}: its Gram matrices need about {need / 2**30:.1f} GiB and "
            f"{device} has {free / 2**30:.1f} GiB free; the largest pool that fits is "
            f"about {largest} (--pool {largest})")


def pool_targets(spec: StudySpec, pool: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """The pool's inputs (float64) and targets: regression as is, classes one-hot."""
    split = spec.data.sample(pool, 1, derive_seed("data", seed))
    y = split.y_train
    if spec.info.task == "classification":
        y = F.one_hot(y, spec.info.out_dim)
    return split.x_train.to(torch.float64), y.to(torch.float64).reshape(pool, -1).numpy()


def _component(cand: Candidate) -> Any:
    """The candidate built with its fixed hyperparameters (searched ones at their defaults)."""
    fixed = {k: d.value for k, d in cand.space.items() if isinstance(d, Fixed)}
    return instantiate(cand.cls, fixed, cand.cls.name, Problems(raising=True))


def ridges(algo: Candidate | None) -> list[float]:
    """The ridges to try: a fixed one, a grid over a searched range, or the default."""
    if algo is None:
        from dmisearch_builtins.kernel_algorithms import KernelRegression

        return [KernelRegression.ridge]
    dim = algo.space.get("ridge")
    if isinstance(dim, FloatDistribution):
        return list(np.geomspace(max(dim.low, 1e-12), dim.high, RIDGE_POINTS))
    return [float(dim.value if isinstance(dim, Fixed) else _component(algo).ridge)]


def predict_pair(model: Candidate, kind: str, algo: Candidate | None, x: torch.Tensor,
                 y: np.ndarray, sizes: Sequence[int], device: torch.device) -> KernelPrediction:
    """One pair's prediction at the ridge (among :func:`ridges`) with the lowest aulc."""
    arch = _component(model)
    gram = arch.kernel(x.to(device), None, kind).double().cpu().numpy()
    spectra = PoolSpectra.from_gram(gram, y)
    baseline = float(((y - y.mean(0)) ** 2).sum(1).mean())
    inside = predicted_sizes(sizes, len(gram))  # check_pool: 2 or more
    best = None
    for r in ridges(algo):
        errors = tuple(spectra.error(n, r) for n in inside)
        score = aulc_of(np.asarray(inside), np.asarray(errors), baseline,
                        floor_for("mse", 1, baseline))
        if best is None or score < best[0]:
            best = (score, r, errors)
    assert best is not None
    errors = best[2] + (math.nan,) * (len(sizes) - len(inside))  # beyond: not predicted
    return KernelPrediction(
        model=model.cls.name, algorithm=algo.cls.name if algo else kind,
        params=arch.get_params(), ridge=best[1], sizes=tuple(sizes), errors=errors,
        aulc=best[0], baseline=baseline, pool=len(gram), spectrum=spectra.full,
    )


def estimated_seconds(pairs: Sequence[tuple[Candidate, str, Candidate | None]],
                      shape: tuple[int, ...], pool: int, dev: torch.device) -> float | None:
    """The Gram matrices' estimated seconds (None: an architecture cannot estimate its
    kernel's time: ``kernel_seconds`` is the built-ins' own method)."""
    total = 0.0
    for model, kind, _ in pairs:
        estimate = getattr(_component(model), "kernel_seconds", None)
        if estimate is None:
            return None
        total += estimate(shape, pool, kind, dev)
    return total


def time_warning(pairs: Sequence[tuple[Candidate, str, Candidate | None]],
                 shape: tuple[int, ...], pool: int, dev: torch.device) -> str:
    """What the Gram matrices will cost, and past :data:`LONG_SECONDS` the options."""
    from dmisearch.progress import clock

    total = estimated_seconds(pairs, shape, pool, dev)
    if total is None:
        return f"{len(pairs)} Gram matrices of {pool} inputs on {dev} (no time estimate)"
    text = (f"{len(pairs)} Gram matrices of {pool} inputs on {dev}: about {clock(total)} "
            "(estimated from a short probe)")
    if total > LONG_SECONDS:
        smaller = max(2, int(pool * math.sqrt(LONG_SECONDS / total)))
        text += (f"; warning: that is long. Options: a smaller pool (--pool {smaller}, about "
                 f"{clock(LONG_SECONDS)}), a GPU (--device cuda), or fewer kernels "
                 "(--kind ntk)")
    return text


def predict(spec: StudySpec, *, pool: int | None = None, kinds: Sequence[str] | None = None,
            seed: int = 0, device: str | None = None,
            progress: Callable[[str], None] | None = None) -> list[KernelPrediction]:
    """Every kernel pair's predicted curve on ``spec``'s sizes, best (lowest aulc) first.

    Pairs whose Gram matrix is not positive semi-definite beyond rounding are reported
    through ``progress`` and left out (never clipped)."""
    pairs = kernel_pairs(spec, kinds)
    if not pairs:
        raise DmisearchError(
            f"{spec.source}: none of the study's architectures "
            f"({', '.join(spec.models)}) provides an analytic kernel (nngp or ntk), so "
            "there is nothing to predict; add one that does (fcn, lcn, cnn_vec, cnn_gap)")
    dev = resolve_device(device or spec.device)
    pool = default_pool(spec) if pool is None else pool
    check_pool(spec, pool, dev)
    x, y = pool_targets(spec, pool, seed)
    say = progress or (lambda _: None)
    if pool >= ESTIMATE_FROM:
        say(time_warning(pairs, tuple(x.shape[1:]), pool, dev))
    out = []
    for i, (model, kind, algo) in enumerate(pairs, 1):
        say(f"[{i}/{len(pairs)}] {model.cls.name} {kind}: Gram matrix of {pool} inputs "
            f"on {dev}")
        try:
            with reporting_to(Throttled(say, f"{model.cls.name} {kind}")):
                out.append(predict_pair(model, kind, algo, x, y, spec.grid.sizes, dev))
        except SpectrumError as exc:
            say(f"{model.cls.name} {kind}: left out: {exc}")
    return sorted(out, key=lambda p: p.aulc)


def spectrum_summary(s: Spectrum) -> dict[str, list[float]]:
    """The spectrum at up to :data:`SPECTRUM_POINTS` log-spaced modes (1-based ``k``): the
    eigenvalue and the cumulative power ``C(k)`` there."""
    n = len(s.eigenvalues)
    ks = np.unique(np.geomspace(1, n, min(SPECTRUM_POINTS, n)).round().astype(int))
    c = s.cumulative_power()
    return {"k": [int(k) for k in ks], "eigenvalue": [float(s.eigenvalues[k - 1]) for k in ks],
            "cumulative_power": [float(c[k - 1]) for k in ks]}


def stored_form(spec: StudySpec, preds: Sequence[KernelPrediction]) -> dict[str, Any]:
    """The predictions as a study stores them (JSON): what was predicted, one record per
    (model, algorithm, size) as ``--json`` prints them, and each pair's spectrum summary."""
    target = target_name(spec)
    return {
        "target": target, "task": spec.info.task,
        "records": [r for rank, p in enumerate(preds, 1) for r in p.records(rank, target)],
        "spectra": [{"model": p.model, "algorithm": p.algorithm, "modes_90": p.modes_90,
                     **spectrum_summary(p.spectrum)} for p in preds],
    }


def target_name(spec: StudySpec) -> str:
    return "one-hot mse" if spec.info.task == "classification" else "mse"


def format_table(spec: StudySpec, preds: Sequence[KernelPrediction]) -> str:
    """The ranked table, then what the numbers are."""
    sizes = spec.grid.sizes
    head = ["rank", "model", "algorithm", "ridge", *[f"n={n}" for n in sizes], "aulc",
            "modes 90%"]
    rows = [[str(i), p.model, p.algorithm, f"{p.ridge:.2g}",
             *["-" if math.isnan(e) else f"{e:.3g}" for e in p.errors],
             f"{p.aulc:.3f}", str(p.modes_90)] for i, p in enumerate(preds, 1)]
    widths = [max(len(r[j]) for r in [head, *rows]) for j in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
             for r in [head, *rows]]
    what = ("test MSE of kernel ridge regression" if spec.info.task == "regression" else
            "test MSE of kernel ridge regression on one-hot targets (the error rate is not "
            "predicted)")
    pool = preds[0].pool if preds else 0
    lines += ["", f"predicted {what}, from the spectrum of each "
                  f"kernel on {pool} of the study's training inputs; aulc as the study scores "
                  "it (log error over log n, relative to the trivial predictor); modes 90%: "
                  "how many of the kernel's modes hold 90% of the target's power (fewer: "
                  "better aligned)"]
    if any(math.isnan(e) for p in preds for e in p.errors):
        lines.append(f"-: not predicted. A pool of {pool} predicts sizes up to a quarter of "
                     f"itself ({pool // POOL_PER_SIZE}; beyond, its own sampling shows, and "
                     "at its own size every mode of the pool is learned); the aulc is over "
                     "the sizes predicted. A larger --pool, where the data has one, predicts "
                     "further")
    return "\n".join(lines)


def stderr_progress(enabled: bool) -> Callable[[str], None]:
    """Progress lines on stderr, with the time since the start."""
    start = time.monotonic()

    def say(text: str) -> None:
        if enabled:
            print(f"[{time.monotonic() - start:6.1f}s] {text}", file=sys.stderr, flush=True)

    return say

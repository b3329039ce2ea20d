"""Symmetry probes: is a (model, algorithm) pair equivariant under a group acting on the data?

"Equivariant under g": training on ``g.D`` and predicting at ``g.x`` gives the same
distribution of predictions (over the random initialisation and minibatch order) as training
on ``D`` and predicting at ``x``. The probe draws one data set ``D`` (the training pool and
the test inputs), acts on it with the transform ``g`` (train and test inputs alike; targets
unchanged), trains the pair on both through the algorithm's own ``fit_predict`` (the fused
engine for minibatch algorithms) and compares the test predictions:

* **deterministic** algorithms (their predictions on ``D`` do not depend on the seed, e.g.
  kernel regression): the prediction at ``g.x`` must equal the prediction at ``x``;
* **coupled** runs, where the architecture couples to ``g`` (``Architecture.couple``): the
  run on ``g.D`` starts from the coupled network (e.g. first layer ``W0 M^T`` for an
  orthogonal ``M``) with the same seed as the run on ``D`` from ``W0``. Because the coupled
  initialisation has the distribution of the original, equal predictions per seed prove
  equivariance in distribution. The identity coupling (an invariant architecture) is the
  special case ``invariant``;
* otherwise, or when the coupling breaks during training, a **statistical** test: the test
  predictions of ``S`` seeds on ``D`` and of ``S`` other seeds on ``g.D`` are compared with
  a permutation test on the energy distance between the two samples of prediction vectors.
  When it does not reject and the data is the probe's own (``Settings.witness``), a
  **witness search** follows (:mod:`dmisearch.probe_witness`): a pilot picks the candidate
  data on which the difference shows most (e.g. strongly anisotropic inputs, for Adam under
  a rotation) and a second test runs there on fresh seeds. Each test then gets ``alpha / 2``
  (Bonferroni), so the procedure's false-positive rate stays within ``alpha``.

Verdicts: ``equivariant`` only from an exact comparison (relative gap within the tolerance
of the dtype); ``not equivariant`` from an exact comparison of a deterministic algorithm
beyond the tolerance, or when a statistical test rejects at its level; ``inconclusive``
otherwise (a test that does not reject proves nothing: the cell says about how many seeds
would settle it), and when a run diverged. Declared symmetries (``Architecture.symmetries``,
``Algorithm.symmetries``) are checked by :func:`verify`. The user guide is docs/probes.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dmisearch import factory
from dmisearch.components import (
    Algorithm,
    Architecture,
    DataGenerator,
    DataInfo,
    Job,
    Predictions,
    RunContext,
    Split,
    Transform,
    pair_problem,
)
from dmisearch.errors import DmisearchError, did_you_mean
from dmisearch.probe_witness import Witness, effect, min_p_value, search, seeds_hint
from dmisearch.seeding import derive_seed

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EQUIVARIANT = "equivariant"
NOT_EQUIVARIANT = "not equivariant"
INCONCLUSIVE = "inconclusive"
NOT_APPLICABLE = "n/a"
VERDICTS = (EQUIVARIANT, NOT_EQUIVARIANT, INCONCLUSIVE, NOT_APPLICABLE)

#: Hyperparameters the probe uses unless told otherwise (``-p``): small networks and short
#: training, so that a cell takes about a second on a CPU. Each is applied only to a
#: component that has the parameter and accepts the value (``gd`` keeps its full batch).
PROBE_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"width": 16, "depth": 1, "parameterization": "ntk"},
    "algorithm": {"steps": 200, "batch_size": 16, "lr": 0.5},
}
#: The default data: a local, not translation-invariant teacher (an LCN) on Gaussian inputs,
#: so that rotations, permutations and shifts change what there is to learn.
DEFAULT_DATA: tuple[str, dict[str, Any]] = (
    "teacher", {"family": "lcn", "shape": (1, 16), "width": 16, "depth": 1})
#: Shapes tried, in order, for an architecture that does not take the default data's shape.
FALLBACK_SHAPES: tuple[tuple[int, ...], ...] = ((1, 16), (1, 4, 4))
#: Relative gap below which two predictions count as equal, per dtype: exact comparisons
#: agree to ~1e-14 in float64 (~1e-6 in float32) on the probe's short runs, while a broken
#: coupling (Adam on rotated data) or a missing symmetry leaves gaps above 1e-3.
TOLERANCES = {"float64": 1e-8, "float32": 1e-3}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
#: At least this many initial networks per side test that a coupling keeps the distribution.
LAW_SEEDS = 32
#: At least this many seeds per side and candidate in a witness search's pilot (else half
#: of ``--seeds``): the pilot only ranks the candidates, and a strong witness stands out
#: of a few seeds (Adam under rotate: docs/probes.md); its runs do not enter the test.
PILOT_SEEDS = 4


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much each probe trains and how it decides."""

    n_train: int = 64  # training samples in D
    n_test: int = 64  # test inputs at which predictions are compared
    seeds: int = 8  # seeds per side (runs on D, and on g.D)
    dtype: str = "float64"  # the runs' dtype (modules are built in it, see docs/probes.md)
    device: str = "cpu"
    alpha: float = 0.01  # level of the statistical test
    tolerance: float | None = None  # relative gap counted as equal; None: TOLERANCES[dtype]
    resamples: int = 9999  # random permutations of the statistical test
    data_seed: int = 0  # which D is drawn
    witness: bool = True  # search witness data when the test on D does not reject

    @property
    def searches(self) -> bool:
        """Whether a witness search may follow the test on ``D`` (then each test gets
        ``alpha / 2``): asked for, and able to reject at that level with this many
        seeds."""
        return self.witness and min_p_value(self.seeds) < self.alpha / 2

    @property
    def level(self) -> float:
        """The level of the test on ``D``: ``alpha``, or half of it when a witness search
        may spend the other half."""
        return self.alpha / 2 if self.searches else self.alpha

    @property
    def pilot_seeds(self) -> int:
        """Seeds per side and candidate in a witness search's pilot."""
        return max(PILOT_SEEDS, self.seeds // 2)

    @property
    def tol(self) -> float:
        return self.tolerance if self.tolerance is not None else TOLERANCES[self.dtype]


@dataclasses.dataclass
class Cell:
    """The outcome of probing one (model, algorithm) pair under one transform."""

    model: str
    algorithm: str
    group: str
    data: str
    verdict: str  # one of VERDICTS
    reason: str  # one sentence: why this verdict
    method: str | None = None  # deterministic | coupled | invariant | statistical
    declared: bool | None = None  # the components' declarations say it is equivariant
    coupling: str | None = None  # the architecture's coupling: identity | map | None
    gap: float | None = None  # exact comparisons: largest per-seed relative gap
    gaps: list[float] | None = None  # per seed
    tolerance: float | None = None
    p_value: float | None = None  # statistical test (also run when a coupling broke)
    energy: float | None = None  # its statistic: energy distance of the two samples
    mean_gap: float | None = None  # |mean pred on g.D - mean pred on D| / |mean pred on D|
    alpha: float | None = None
    level: float | None = None  # the level the test on D ran at (alpha, or alpha/2)
    witness: dict[str, Any] | None = None  # the witness search and its test, if one ran
    seeds_needed: int | None = None  # inconclusive: seeds per side for 80% power (rough)
    error: list[float] | None = None  # test error on D: mean and sd over seeds
    error_g: list[float] | None = None  # test error on g.D (same targets): mean and sd
    diverged: bool = False  # a run's loss or predictions became NaN or infinite
    seeds: int = 0
    seconds: float = 0.0

    @property
    def coupling_broke(self) -> bool:
        """A coupling existed and the coupled runs drifted apart beyond the tolerance."""
        return (self.method != "deterministic" and self.gap is not None
                and self.tolerance is not None and not self.gap <= self.tolerance)

    def to_json(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in dataclasses.asdict(self).items()}


def _finite(v: Any) -> Any:
    """JSON has no NaN: None instead."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v


# --------------------------------------------------------------------------------------------
# the verdict
# --------------------------------------------------------------------------------------------


def decide(*, deterministic: bool, gap: float | None, tolerance: float,
           p_value: float | None, alpha: float, diverged: bool = False) -> tuple[str, str]:
    """The verdict and its reason from the numbers behind it.

    ``gap`` is the largest per-seed relative gap of an exact comparison (a deterministic
    algorithm, or coupled runs), None when there is none; ``p_value`` that of the
    statistical test, None when it was not run.
    """
    if diverged:
        return INCONCLUSIVE, "a run diverged (NaN or infinite predictions)"
    if gap is not None and not math.isnan(gap) and gap <= tolerance:
        what = ("the deterministic predictions" if deterministic else "the coupled runs")
        return EQUIVARIANT, f"{what} agree: max relative gap {gap:.1e} <= {tolerance:.0e}"
    if deterministic:
        if gap is None or math.isnan(gap):
            return INCONCLUSIVE, "no comparison was possible"
        return NOT_EQUIVARIANT, (f"the deterministic predictions differ: relative gap "
                                 f"{gap:.1e} > {tolerance:.0e}")
    broke = "" if gap is None else f"the coupling broke (gap {gap:.1e} > {tolerance:.0e}); "
    if p_value is None or math.isnan(p_value):
        return INCONCLUSIVE, broke + "no statistical test was run"
    if p_value < alpha:
        return NOT_EQUIVARIANT, (f"{broke}the predictions' distributions over seeds differ: "
                                 f"p = {p_value:.1e} < {alpha:g}")
    return INCONCLUSIVE, (f"{broke}the test does not reject equal distributions "
                          f"(p = {p_value:.2g} >= {alpha:g}), which proves nothing")


def energy_test(a: np.ndarray, b: np.ndarray, *, resamples: int = 9999, seed: int = 0
                ) -> tuple[float, float]:
    """Two-sample permutation test of equal distributions: ``(energy distance, p-value)``.

    ``a`` and ``b`` hold one sample per row (any trailing shape, flattened). The statistic
    is the energy distance ``2 E|A-B| - E|A-A'| - E|B-B'|`` (Szekely & Rizzo), which is
    zero exactly when the distributions are equal; the p-value is that of ``resamples``
    random relabellings (exact when there are fewer distinct ones), one-sided.
    """
    from scipy.spatial.distance import cdist
    from scipy.stats import permutation_test

    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        raise ValueError(f"the test needs at least 2 samples per side, got {na} and {nb}")
    z = np.concatenate([np.asarray(a, np.float64).reshape(na, -1),
                        np.asarray(b, np.float64).reshape(nb, -1)])
    dist = cdist(z, z)

    def statistic(i: np.ndarray, j: np.ndarray, axis: int = -1) -> np.ndarray:
        i, j = i.astype(np.intp), j.astype(np.intp)

        def mean(u: np.ndarray, v: np.ndarray) -> np.ndarray:
            return dist[u[..., :, None], v[..., None, :]].mean(axis=(-2, -1))

        return 2 * mean(i, j) - mean(i, i) - mean(j, j)

    res = permutation_test((np.arange(na), np.arange(na, na + nb)), statistic,
                           permutation_type="independent", vectorized=True,
                           n_resamples=resamples, alternative="greater",
                           random_state=np.random.default_rng(seed))
    return float(res.statistic), float(res.pvalue)


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / max(|a|, |b|)`` (Frobenius), 0 when both vanish; NaN if either is not
    finite."""
    a, b = a.detach().double(), b.detach().double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.nan
    scale = max(float(a.norm()), float(b.norm()))
    return float((a - b).norm()) / scale if scale > 0 else 0.0


# --------------------------------------------------------------------------------------------
# couplings and declarations
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build modules in ``dtype``: a float64 coupling is then exact, not float32-rounded."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def coupling_kind(model: Architecture, transform: Transform, info: DataInfo,
                  dtype: torch.dtype = torch.float64) -> str | None:
    """``identity`` (the model is invariant), ``map`` (a coupled network), or None (no
    coupling known), from one network built for ``info``'s input shape."""
    shape = tuple(info.input_shape)
    with torch.random.fork_rng(devices=[]), default_dtype(dtype):
        torch.manual_seed(derive_seed("probe", "coupling"))
        module = model.build(shape, info.out_dim)
        out = model.couple(module, transform, shape)
    if out is None:
        return None
    return "identity" if out is module else "map"


def coupled(model: Architecture, transform: Transform) -> Architecture:
    """``model`` whose ``build()`` returns the network coupled under ``transform``: the
    module built as usual (from the RNG the engine seeded per job), then ``couple``d.
    Same name and hyperparameters, so the engine trains it like ``model``."""
    base = type(model)

    def build(self: Architecture, input_shape: tuple[int, ...], out_dim: int
              ) -> torch.nn.Module:
        module = base.build(self, input_shape, out_dim)
        out = self.couple(module, transform, tuple(input_shape))
        if out is None:
            raise RuntimeError(f"architecture '{base.name}' gave no coupling under "
                               f"'{transform.name}'")
        return out

    cls = type(f"{base.__name__}Coupled", (base,), {
        "build": build,
        "__module__": base.__module__,
        "__qualname__": f"{base.__qualname__}Coupled",
        "__doc__": f"{base.summary()} Coupled under '{transform.name}'.",
    })
    return cls(**model.get_params())


def declares(model: Architecture, algo: Algorithm, transform: Transform,
             kind: str | None) -> bool:
    """Whether the components' declarations make the pair equivariant under ``transform``.

    The rule: the architecture lists the transform (it couples to it) and either its
    coupling is the identity (kept by every algorithm) or the algorithm lists the transform
    too (it keeps that coupling). ``kind`` is :func:`coupling_kind`'s answer.
    """
    name = transform.name
    return name in type(model).symmetries and (
        kind == "identity" or name in type(algo).symmetries)


# --------------------------------------------------------------------------------------------
# the prober
# --------------------------------------------------------------------------------------------


def label(component: Any) -> str:
    """``name(param=value, ...)`` with the parameters that differ from the defaults."""
    if hasattr(component, "label") and not isinstance(component, type):  # composed data
        base = getattr(component, "base", None)
        if base is not None:
            rest = component.label[len(base.name):]
            return label(base) + rest
    defaults = type(component).param_defaults()
    changed = [f"{k}={_show(v)}" for k, v in component.get_params().items()
               if k in defaults and v != defaults[k] and _show(v) != _show(defaults[k])]
    return f"{component.name}({', '.join(changed)})" if changed else component.name


def _show(v: Any) -> str:
    return str(list(v)) if isinstance(v, tuple) else str(v)


class Prober:
    """Probes pairs on one data set ``D``: draws it once, caches the runs on ``D`` per pair
    and ``g.D`` per transform, so that a table of cells trains each run once."""

    def __init__(self, data: DataGenerator, settings: Settings | None = None):
        self.data = data
        self.settings = s = settings or Settings()
        if s.dtype not in DTYPES:
            raise DmisearchError(f"dtype must be one of {sorted(DTYPES)}, got {s.dtype!r}")
        if s.seeds < 2:
            raise DmisearchError(f"seeds must be >= 2 (two samples to compare), got {s.seeds}")
        self.dtype = DTYPES[s.dtype]
        self.device = torch.device(s.device)
        self.info = data.describe()
        self.label = label(data)
        split = data.sample(s.n_train, s.n_test, derive_seed("probe", s.data_seed))
        # Cast before the group acts: a float64 rotation of float32-rounded inputs is exact.
        self.split = split.to(device=self.device, dtype=self.dtype)
        self.ctx = RunContext(self.device, self.dtype, self.info.task, self.info.out_dim,
                              tuple(self.info.input_shape), fused=True)
        self._base: dict[Any, list[Predictions]] = {}
        self._moved: dict[Any, Split] = {}

    # ---- data and runs ------------------------------------------------------------------

    def transformed(self, g: Transform, witness: Witness | None = None) -> Split:
        """``g.D`` (or ``g`` of the witness data): the transform applied to the training and
        test inputs (targets kept); random parts drawn from generators seeded by the data
        seed and the transform."""
        key = (type(g), repr(sorted(g.get_params().items())), witness)
        if key not in self._moved:
            s = self.settings
            split = self.split if witness is None else self.witness_split(witness)
            gens = [torch.Generator().manual_seed(derive_seed("probe", s.data_seed, g.name, part))
                    for part in ("train", "test")]
            self._moved[key] = dataclasses.replace(
                split, x_train=g.apply(split.x_train, gens[0]),
                x_test=g.apply(split.x_test, gens[1]))
        return self._moved[key]

    def witness_split(self, witness: Witness) -> Split:
        """The witness data: ``D`` with the witness's per-coordinate profile applied to its
        inputs (before any ``g`` acts; targets kept)."""
        key = (None, None, witness)
        if key not in self._moved:
            s = self.settings
            gens = [torch.Generator().manual_seed(
                derive_seed("probe", s.data_seed, "witness", witness.name, part))
                for part in ("train", "test")]
            self._moved[key] = dataclasses.replace(
                self.split, x_train=witness.apply(self.split.x_train, gens[0]),
                x_test=witness.apply(self.split.x_test, gens[1]))
        return self._moved[key]

    def run(self, model: Architecture, algo: Algorithm, split: Split, seeds: Sequence[int]
            ) -> list[Predictions]:
        """The algorithm's own ``fit_predict`` on ``split``, one job per seed."""
        return self._fit(model, algo, [Job(split.x_train, split.y_train, split.x_test,
                                           int(sd)) for sd in seeds])

    def _fit(self, model: Architecture, algo: Algorithm, jobs: list[Job]
             ) -> list[Predictions]:
        with default_dtype(self.dtype):
            return list(algo.fit_predict(model, jobs, self.ctx))

    def base_runs(self, model: Architecture, algo: Algorithm) -> list[Predictions]:
        """Runs on ``D`` with seeds ``0..S-1`` (cached per pair)."""
        key = (type(model), repr(model.get_params()), type(algo), repr(algo.get_params()))
        if key not in self._base:
            self._base[key] = self.run(model, algo, self.split, range(self.settings.seeds))
        return self._base[key]

    def problem(self, model: Architecture, algo: Algorithm, g: Transform) -> str | None:
        """Why the cell cannot be probed on this data (None: it can)."""
        why = pair_problem(type(model), type(algo), self.info)
        if why is None:
            why = algo.model_problem(model) or model.check_input(tuple(self.info.input_shape))
        if why is None:
            why = g.check_input(tuple(self.info.input_shape))
            if why:
                why = f"transform '{g.name}': {why}"
        return why

    # ---- one cell -----------------------------------------------------------------------

    def probe(self, model: Architecture, algo: Algorithm, g: Transform) -> Cell:
        """Probe ``(model, algo)`` under ``g`` on this prober's data."""
        t0 = time.perf_counter()
        s = self.settings
        cell = Cell(model.name, algo.name, g.name, self.label, NOT_APPLICABLE, "",
                    tolerance=s.tol, alpha=s.alpha, seeds=s.seeds)
        why = self.problem(model, algo, g)
        if why is None:
            try:
                cell.coupling = coupling_kind(model, g, self.info, self.dtype)
            except Exception as exc:  # a plugin's couple() failing must not stop a table
                why = f"couple() raised {type(exc).__name__}: {exc}"
        if why is not None:
            cell.reason = why
            return cell
        cell.declared = declares(model, algo, g, cell.coupling)
        self._measure(cell, model, algo, g)
        cell.seconds = time.perf_counter() - t0
        return cell

    def try_probe(self, model: Architecture, algo: Algorithm, g: Transform) -> Cell:
        """:meth:`probe`, with a run that raises reported as an ``n/a`` cell (for tables:
        one broken plugin must not stop the others)."""
        try:
            return self.probe(model, algo, g)
        except Exception as exc:
            return Cell(model.name, algo.name, g.name, self.label, NOT_APPLICABLE,
                        f"the run failed: {type(exc).__name__}: {exc}")

    def _measure(self, cell: Cell, model: Architecture, algo: Algorithm, g: Transform
                 ) -> None:
        s = self.settings
        tol = s.tol
        base = self.base_runs(model, algo)
        moved = self.transformed(g)
        cell.error = _error(base, self.split.y_test, self.info.task)
        a = torch.stack([p.test for p in base])  # (S, n_test, out)
        if any(p.diverged for p in base):
            cell.diverged = True
            cell.verdict, cell.reason = decide(deterministic=False, gap=None, tolerance=tol,
                                               p_value=None, alpha=s.alpha, diverged=True)
            return
        deterministic = max(relative_gap(a[0], a[i]) for i in range(1, len(a))) <= tol
        gap = b = None
        diverged = False
        if deterministic:
            (run,) = self.run(model, algo, moved, [0])
            cell.method = "deterministic"
            gap = relative_gap(a[0], run.test)
            cell.gaps, diverged = [gap], run.diverged
            cell.error_g = _error([run], moved.y_test, self.info.task)
        else:
            if cell.coupling is not None:
                runs = self.run(coupled(model, g), algo, moved, range(s.seeds))
                cell.gaps = [relative_gap(a[i], p.test) for i, p in enumerate(runs)]
                gap = max(cell.gaps)
                diverged = any(p.diverged for p in runs)
                cell.method = "invariant" if cell.coupling == "identity" else "coupled"
                cell.error_g = _error(runs, moved.y_test, self.info.task)
            if not diverged and not (gap is not None and gap <= tol):
                b = self._test_on_data(cell, model, algo, moved, a)
                diverged = b is None
        cell.gap, cell.diverged = gap, diverged
        if cell.p_value is not None:
            cell.level = s.level
        cell.verdict, cell.reason = decide(deterministic=deterministic, gap=gap, tolerance=tol,
                                           p_value=cell.p_value, alpha=s.level,
                                           diverged=diverged)
        if cell.verdict != INCONCLUSIVE or b is None:
            return
        if s.searches:
            self._witness_test(cell, model, algo, g)
        elif min_p_value(s.seeds) >= s.level:
            cell.reason += (f"; with {s.seeds} seeds per side no p-value can fall below "
                            f"{s.level:g} (use more --seeds)")
        else:
            cell.seeds_needed, hint = seeds_hint(
                effect(a.cpu().numpy(), b.cpu().numpy(), seed=s.data_seed), s.level)
            cell.reason += f"; {hint}"

    def _test_on_data(self, cell: Cell, model: Architecture, algo: Algorithm, moved: Split,
                      a: torch.Tensor) -> torch.Tensor | None:
        """The energy test of the runs on ``D`` (``a``) against fresh seeds on ``g.D`` (the
        two samples must be independent); returns the sample on ``g.D``, None when a run
        diverged. The verdict is then the test's (a broken coupling's gap is kept)."""
        s = self.settings
        runs = self.run(model, algo, moved, range(s.seeds, 2 * s.seeds))
        cell.method = "statistical"
        cell.error_g = _error(runs, moved.y_test, self.info.task)
        if any(p.diverged for p in runs):
            return None
        b = torch.stack([p.test for p in runs])
        cell.energy, cell.p_value = energy_test(a.cpu().numpy(), b.cpu().numpy(),
                                                resamples=s.resamples,
                                                seed=derive_seed("probe", "test", s.data_seed))
        mean_a, mean_b = a.mean(0), b.mean(0)
        cell.mean_gap = float((mean_b - mean_a).norm() / mean_a.norm().clamp_min(
            torch.finfo(mean_a.dtype).tiny))
        return b

    # ---- the witness search ---------------------------------------------------------------

    def _witness_test(self, cell: Cell, model: Architecture, algo: Algorithm, g: Transform
                      ) -> None:
        """The test on ``D`` did not reject: search a witness, test it on fresh seeds at the
        other half of ``alpha``, and let that test decide (:mod:`dmisearch.probe_witness`).
        Seeds ``0..2S-1`` are the test on ``D``'s; the search's come after them."""
        s = self.settings

        def test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
            return energy_test(x, y, resamples=s.resamples,
                               seed=derive_seed("probe", "witness", s.data_seed))

        found = search(lambda requests: self._sample_witnesses(model, algo, g, requests),
                       test, seeds=s.seeds, pilot_seeds=s.pilot_seeds, level=s.level,
                       first_seed=2 * s.seeds, seed=s.data_seed)
        cell.witness = found.to_json()
        if found.witness is None or found.diverged:
            what = ("every pilot run diverged" if found.witness is None
                    else f"a run on it ({found.witness}) diverged")
            cell.reason += f"; no witness test: {what}"
            return
        on = f"on the witness data {found.witness} ({s.seeds} fresh seeds per side)"
        if found.rejects:
            broke = (f"the coupling broke (gap {cell.gap:.1e} > {cell.tolerance:.0e}); "
                     if cell.gap is not None else "")
            cell.verdict = NOT_EQUIVARIANT
            cell.reason = (f"{broke}{on} the predictions' distributions differ: p = "
                           f"{found.p_value:.1e} < {s.level:g} (alpha/2; on D p = "
                           f"{cell.p_value:.2g})")
            return
        cell.seeds_needed = found.seeds_needed
        cell.reason += f"; nor {on}: p = {found.p_value:.2g}; {found.hint}"

    def _sample_witnesses(self, model: Architecture, algo: Algorithm, g: Transform,
                          requests: Sequence[tuple[Witness, Sequence[int], Sequence[int]]]
                          ) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Test predictions on each request's witness data and on ``g`` of it (None where a
        run diverged): every request's runs trained in one call, side by side."""
        jobs, sizes = [], []
        for w, on_data, on_moved in requests:
            for split, seeds in ((self.witness_split(w), on_data),
                                 (self.transformed(g, w), on_moved)):
                jobs += [Job(split.x_train, split.y_train, split.x_test, int(sd))
                         for sd in seeds]
            sizes.append((len(on_data), len(on_moved)))
        preds = iter(self._fit(model, algo, jobs))
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        for sizes_ in sizes:
            sides = [[next(preds) for _ in range(n)] for n in sizes_]
            if any(p.diverged for side in sides for p in side):
                out.append(None)
                continue
            x, y = (torch.stack([p.test for p in side]).cpu().numpy() for side in sides)
            out.append((x, y))
        return out


def _error(preds: Sequence[Predictions], y: torch.Tensor, task: str) -> list[float]:
    """Test error (MSE, or error rate for classification): mean and sd over the runs."""
    errs = []
    for p in preds:
        if task == "classification":
            errs.append(float((p.test.argmax(-1) != y).double().mean()))
        else:
            errs.append(float(((p.test.double() - y.double()) ** 2).mean()))
    arr = np.asarray(errs)
    return [float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0]


# --------------------------------------------------------------------------------------------
# building components from names
# --------------------------------------------------------------------------------------------


def parse_overrides(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``-p model.width=64`` -> ``{"model": {"width": 64}}``; values are TOML values
    (``64``, ``0.1``, ``true``, ``[1, 8]``, ``"relu"``), or else plain strings."""
    out: dict[str, dict[str, Any]] = {k: {} for k in ("model", "algorithm", "data", "group")}
    for item in items:
        key, eq, raw = item.partition("=")
        kind, dot, param = key.strip().partition(".")
        if not eq or not dot or not param or kind not in out:
            raise DmisearchError(
                f"-p {item!r}: expected KIND.PARAM=VALUE with KIND one of model, algorithm, "
                f"data, group (e.g. -p model.width=64)")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[kind][param] = value
    return out


def instantiate(cls: type, params: Mapping[str, Any], kind: str,
                fallbacks: Mapping[str, Any] | None = None) -> Any:
    """``cls(**params)`` checked (the first problem raised); ``fallbacks`` (the probe's
    defaults) added where ``cls`` has the parameter, is not given it, and accepts it."""
    return factory.instantiate(cls, params, kind, factory.Problems(raising=True), fallbacks)


def make_model(registry: Any, name: str, params: Mapping[str, Any] = {}  # noqa: B006
               ) -> Architecture:
    return factory.build(registry, "architecture", name, params, "architecture",
                         factory.Problems(raising=True), PROBE_DEFAULTS["model"])


def make_algorithm(registry: Any, name: str, params: Mapping[str, Any] = {}  # noqa: B006
                   ) -> Algorithm:
    """An algorithm by name; ``sgd+shift`` is ``sgd`` augmented by ``shift``."""
    return factory.build(registry, "algorithm", name, params, "algorithm",
                         factory.Problems(raising=True), PROBE_DEFAULTS["algorithm"])


def make_group(registry: Any, name: str, params: Mapping[str, Any] = {}  # noqa: B006
               ) -> Transform:
    return factory.build(registry, "transform", name, params, "transform",
                         factory.Problems(raising=True))


def make_data(registry: Any, spec: str | None, params: Mapping[str, Any] = {}  # noqa: B006
              ) -> DataGenerator:
    """``NAME[+TRANSFORM...]`` (e.g. ``digits+permute``); None: :data:`DEFAULT_DATA`.

    ``params`` go to the generator; the probe's defaults apply only to the default data.
    """
    if spec is None:
        name, base_params = DEFAULT_DATA[0], {**DEFAULT_DATA[1], **params}
        parts: list[str] = []
    else:
        name, *parts = [p.strip() for p in spec.split("+")]
        base_params = dict(params)
    built = factory.build_data(registry, name, base_params, [(t, {}) for t in parts],
                               factory.Problems(raising=True))
    assert built.data is not None  # a raising sink raised otherwise
    return built.data if parts else built.data.base


def data_for(registry: Any, model: Architecture, algo: Algorithm | None = None
             ) -> DataGenerator | None:
    """The default data, or the first fallback shape (then ``digits``) that the model (and
    algorithm) can take: for plugins that do not take 1-D inputs or regression."""
    candidates: list[DataGenerator] = [
        make_data(registry, None, {"shape": shape} if shape != DEFAULT_DATA[1]["shape"] else {})
        for shape in FALLBACK_SHAPES]
    with contextlib.suppress(DmisearchError):
        candidates.append(make_data(registry, "digits"))
    for data in candidates:
        info = data.describe()
        if model.check_input(tuple(info.input_shape)) is not None:
            continue
        if algo is not None and pair_problem(type(model), type(algo), info) is not None:
            continue
        return data
    return None


# --------------------------------------------------------------------------------------------
# tables and verification
# --------------------------------------------------------------------------------------------


def probe_all(registry: Any, prober: Prober, *, models: Sequence[str] | None = None,
              algorithms: Sequence[str] | None = None, groups: Sequence[str] | None = None,
              params: Mapping[str, Mapping[str, Any]] | None = None,
              progress: Any = None) -> list[Cell]:
    """Every registered (model, algorithm) pair (or those named) under every registered
    transform (or those named), on ``prober``'s data; ``n/a`` cells say why."""
    params = params or {}
    cells = []
    models = list(models or registry.names("architecture"))
    algorithms = list(algorithms or registry.names("algorithm"))
    groups = list(groups or registry.names("transform"))
    for m_name in models:
        for a_name in algorithms:
            try:
                model = make_model(registry, m_name, params.get("model", {}))
                algo = make_algorithm(registry, a_name, params.get("algorithm", {}))
            except DmisearchError as exc:
                cells += [Cell(m_name, a_name, g, prober.label, NOT_APPLICABLE, str(exc))
                          for g in groups]
                continue
            for g_name in groups:
                g = make_group(registry, g_name, params.get("group", {}))
                cells.append(prober.try_probe(model, algo, g))
                if progress is not None:
                    progress(cells[-1])
    return cells


@dataclasses.dataclass
class Finding:
    """One checked declaration."""

    status: str  # ok | false | unconfirmed | skipped
    subject: str  # "architecture 'fcn'", "algorithm 'adam'", "fcn / sgd"
    group: str
    detail: str
    cell: Cell | None = None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["cell"] = self.cell.to_json() if self.cell else None
        return out


def verify(registry: Any, settings: Settings | None = None, *,
           models: Sequence[str] | None = None, algorithms: Sequence[str] | None = None,
           groups: Sequence[str] | None = None, progress: Any = None) -> list[Finding]:
    """Check every declared symmetry of the registered architectures and algorithms (or
    those named); a ``false`` finding is a declaration the measurements refute.

    1. Every name in a ``symmetries`` must be a registered transform.
    2. An architecture's declaration of ``g``: ``couple()`` gives a coupling; the coupled
       initial network at ``g.x`` equals the original at ``x`` (per seed, to the tolerance);
       and its outputs at ``x`` are distributed like the original's (statistical test).
    3. Each pair the declarations make equivariant (:func:`declares`) is probed: ``false``
       when it is not equivariant, or when its coupling breaks in training (the algorithm
       does not keep it, or the invariance does not hold); ``unconfirmed`` when
       inconclusive. Algorithm declarations that no architecture couples to are reported
       as ``skipped``.
    """
    settings = settings or Settings()
    findings: list[Finding] = []
    known = set(registry.names("transform"))
    model_names = list(models or registry.names("architecture"))
    algo_names = list(algorithms or registry.names("algorithm"))
    group_names = [g for g in (groups or sorted(known)) if g in known]
    probers: dict[str, Prober] = {}

    def prober_for(model: Architecture, algo: Algorithm | None) -> Prober | None:
        data = data_for(registry, model, algo)
        if data is None:
            return None
        key = label(data)
        if key not in probers:
            probers[key] = Prober(data, settings)
        return probers[key]

    def note(f: Finding) -> None:
        findings.append(f)
        if progress is not None:
            progress(f)

    # 1. names
    for kind, names in (("architecture", model_names), ("algorithm", algo_names)):
        for name in names:
            cls = registry.get(kind, name.partition("+")[0])
            for g in sorted(set(cls.symmetries) - known):
                note(Finding("false", f"{kind} '{name}'", g,
                             f"names no registered transform{did_you_mean(g, known)}"))

    # 2. architectures
    for m_name in model_names:
        model = make_model(registry, m_name)
        for g_name in sorted(set(type(model).symmetries) & set(group_names)):
            g = make_group(registry, g_name)
            prober = prober_for(model, None)
            if prober is None or g.check_input(tuple(prober.info.input_shape)):
                note(Finding("skipped", f"architecture '{m_name}'", g_name,
                             "no probe data fits both the architecture and the transform"))
                continue
            note(_check_architecture(model, g, prober))

    # 3. pairs
    exercised: set[tuple[str, str]] = set()
    for m_name in model_names:
        model = make_model(registry, m_name)
        for a_name in algo_names:
            algo = make_algorithm(registry, a_name)
            for g_name in group_names:
                g = make_group(registry, g_name)
                if g_name not in type(model).symmetries:
                    continue
                prober = prober_for(model, algo)
                if prober is None or prober.problem(model, algo, g):
                    continue
                kind = coupling_kind(model, g, prober.info, prober.dtype)
                if not declares(model, algo, g, kind):
                    continue
                exercised.add((a_name, g_name))
                cell = prober.try_probe(model, algo, g)
                note(_pair_finding(cell, kind))
    for a_name in algo_names:
        cls = registry.get("algorithm", a_name.partition("+")[0])
        for g_name in sorted(set(cls.symmetries) & set(group_names)):
            if (a_name, g_name) not in exercised:
                note(Finding("skipped", f"algorithm '{a_name}'", g_name,
                             "no registered architecture couples to it: nothing to check"))
    return findings


def _check_architecture(model: Architecture, g: Transform, prober: Prober) -> Finding:
    subject = f"architecture '{model.name}'"
    s = prober.settings
    shape, out_dim = tuple(prober.info.input_shape), prober.info.out_dim
    x = prober.split.x_test
    gx = prober.transformed(g).x_test
    try:
        kind = coupling_kind(model, g, prober.info, prober.dtype)
    except Exception as exc:
        return Finding("false", subject, g.name,
                       f"couple() raised {type(exc).__name__}: {exc}")
    if kind is None:
        return Finding("false", subject, g.name,
                       "declared, but couple() gives no coupling for it")
    cm = coupled(model, g)
    gaps, orig, moved = [], [], []
    n_law = max(4 * s.seeds, LAW_SEEDS)  # networks per side: building them is cheap
    with torch.no_grad(), default_dtype(prober.dtype):
        for seed in range(2 * n_law):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "init"))
                net = model.build(shape, out_dim).to(prober.device).eval()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "init"))
                cnet = cm.build(shape, out_dim).to(prober.device).eval()
            if seed < n_law:
                gaps.append(relative_gap(net(x), cnet(gx)))
                orig.append(net(x))
            else:  # other seeds: the two samples must be independent
                moved.append(cnet(x))
    gap = max(gaps)
    if not gap <= s.tol:
        return Finding("false", subject, g.name,
                       f"the coupled initial network at g.x differs from the original at x: "
                       f"relative gap {gap:.1e} > {s.tol:.0e}")
    if kind == "identity":
        return Finding("ok", subject, g.name,
                       f"invariant: the network at g.x equals it at x (gap {gap:.1e})")
    _, p = energy_test(torch.stack(orig).cpu().numpy(), torch.stack(moved).cpu().numpy(),
                       resamples=s.resamples, seed=derive_seed("probe", "law", s.data_seed))
    if p < s.alpha:
        return Finding("false", subject, g.name,
                       f"the coupled initial network computes the original exactly (gap "
                       f"{gap:.1e}) but is distributed differently (p = {p:.1e} < {s.alpha:g})")
    return Finding("ok", subject, g.name,
                   f"coupled initial network at g.x equals the original at x (gap {gap:.1e}); "
                   f"same distribution not rejected (p = {p:.2g})")


def _pair_finding(cell: Cell, kind: str | None) -> Finding:
    subject = f"{cell.model} / {cell.algorithm}"
    summary = f"{cell.verdict} ({cell.method}): {cell.reason}"
    if cell.verdict == EQUIVARIANT:
        return Finding("ok", subject, cell.group, summary, cell)
    if cell.verdict == NOT_APPLICABLE:
        return Finding("unconfirmed", subject, cell.group, cell.reason, cell)
    if cell.verdict == NOT_EQUIVARIANT or cell.coupling_broke:
        if kind == "identity":
            blame = f"architecture '{cell.model}' is not invariant under it"
        else:
            blame = (f"algorithm '{cell.algorithm}' does not keep the coupling of "
                     f"'{cell.model}'")
        return Finding("false", subject, cell.group, f"{blame}; {summary}", cell)
    return Finding("unconfirmed", subject, cell.group, summary, cell)


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------

SHORT = {EQUIVARIANT: "EQ", NOT_EQUIVARIANT: "NO", INCONCLUSIVE: "?", NOT_APPLICABLE: "-"}


def short(cell: Cell) -> str:
    """A table entry: ``EQ* 3e-15`` (verdict, declared mark, the number behind it)."""
    mark = ""
    if cell.declared:
        mark = "*" if cell.verdict == EQUIVARIANT else "!"
    if cell.verdict == NOT_APPLICABLE:
        return "-"
    nums = []
    if cell.diverged:
        nums.append("diverged")
    elif cell.gap is not None:
        nums.append(f"gap {cell.gap:.0e}")
    if cell.p_value is not None:
        nums.append(f"p {_p(cell.p_value)}")
    w = cell.witness or {}
    if w.get("p_value") is not None:
        nums.append(f"w {_p(w['p_value'])}")
    return " ".join([f"{SHORT[cell.verdict]}{mark}", *nums])


def _p(p: float) -> str:
    return f"{p:.0e}" if p < 0.01 else f"{p:.2f}"


def format_table(cells: Sequence[Cell]) -> str:
    """Rows (model / algorithm) by columns (transforms)."""
    groups = list(dict.fromkeys(c.group for c in cells))
    rows: dict[str, dict[str, Cell]] = {}
    for c in cells:
        rows.setdefault(f"{c.model} / {c.algorithm}", {})[c.group] = c
    first = max([len("model / algorithm"), *(len(r) for r in rows)])
    entries = {(r, g): short(c) for r, row in rows.items() for g, c in row.items()}
    width = {g: max([len(g), *(len(entries.get((r, g), "")) for r in rows)]) for g in groups}
    lines = ["  ".join([f"{'model / algorithm':<{first}}", *(f"{g:<{width[g]}}"
                                                               for g in groups)]).rstrip()]
    for r in rows:
        lines.append("  ".join([f"{r:<{first}}", *(f"{entries.get((r, g), ''):<{width[g]}}"
                                                    for g in groups)]).rstrip())
    return "\n".join(lines)


LEGEND = """\
EQ equivariant, NO not equivariant, ? inconclusive, - not applicable (n/a: see --json);
* declared by the components and confirmed, ! declared but not confirmed (see --verify).
gap: largest per-seed relative gap of an exact comparison (coupled runs, or a deterministic
algorithm); p: p-value of the permutation test over seeds (run where no exact comparison
holds); w: p-value of the same test on witness data, run where p did not reject (each at
alpha/2 then; the witness is named in the cell's output and in --json)."""


def format_cell(cell: Cell) -> str:
    """Several lines: the verdict and every number behind it."""
    lines = [f"{cell.model} / {cell.algorithm} under {cell.group} on {cell.data}"]
    if cell.verdict == NOT_APPLICABLE:
        lines.append(f"  verdict: n/a ({cell.reason})")
        return "\n".join(lines)
    coupling = {"identity": "identity (invariant architecture)", "map": "coupled network",
                None: "none"}[cell.coupling]
    lines.append(f"  declared equivariant: {'yes' if cell.declared else 'no'}; "
                 f"coupling: {coupling}")
    lines.append(f"  method: {cell.method}, {cell.seeds} seeds")
    if cell.gaps:
        finite = [g for g in cell.gaps if not math.isnan(g)]
        med = float(np.median(finite)) if finite else math.nan
        lines.append(f"  per-seed relative gap: max {cell.gap:.2e}, median {med:.2e} "
                     f"(tolerance {cell.tolerance:.0e})")
    if cell.p_value is not None:
        lines.append(f"  energy test on D (fresh seeds on g.D): p = {cell.p_value:.3g}, energy "
                     f"distance {cell.energy:.3g}, mean-prediction gap {cell.mean_gap:.3g} "
                     f"({_level(cell.level, cell.alpha, 'the witness test')})")
    if cell.witness:
        lines += _witness_lines(cell.witness, cell.alpha)
    if cell.error and cell.error_g:
        lines.append(f"  test error: on D {cell.error[0]:.4g} +- {cell.error[1]:.2g}, "
                     f"on g.D {cell.error_g[0]:.4g} +- {cell.error_g[1]:.2g}")
    lines.append(f"  verdict: {cell.verdict} ({cell.reason}) [{cell.seconds:.1f} s]")
    return "\n".join(lines)


def _level(level: float | None, alpha: float | None, other: str) -> str:
    if level is not None and alpha is not None and level < alpha:
        return f"level {level:g} = alpha/2, the other half for {other}"
    return f"alpha {level if level is not None else alpha:g}"


def _witness_lines(w: Mapping[str, Any], alpha: float | None) -> list[str]:
    """The witness search (``Cell.witness``): the pilot, the choice, and its test."""
    pilot = ", ".join(f"{name} {e['power']:.2f}" if isinstance(e, dict) else f"{name} {e}"
                      for name, e in w["pilot"].items())
    lines = [f"  witness search (the test on D did not reject): pilot of {w['pilot_seeds']} "
             f"seeds per side and candidate; predicted power: {pilot}"]
    if w["witness"] is None:
        return [*lines, f"  witness: none ({w['why']})"]
    lines.append(f"  witness: {w['witness']} ({w['why']}): {w['description']}")
    if w["p_value"] is None:
        return [*lines, "  energy test on the witness: not run (a run diverged)"]
    lines.append(f"  energy test on the witness ({w['seeds']} fresh seeds per side): p = "
                 f"{w['p_value']:.3g}, energy distance {w['energy']:.3g} "
                 f"({_level(w['level'], alpha, 'the test on D')}); predicted power "
                 f"{w['power']:.2f}, smallest possible p {w['min_p']:.1e}")
    return lines


def format_findings(findings: Sequence[Finding]) -> str:
    tags = {"ok": "ok", "false": "FALSE", "unconfirmed": "unconfirmed", "skipped": "skipped"}
    lines = [f"{tags[f.status]:<11} {f.subject} under {f.group}: {f.detail}" for f in findings]
    n_false = sum(f.status == "false" for f in findings)
    counts = {s: sum(f.status == s for f in findings) for s in tags}
    lines.append(f"\n{counts['ok']} confirmed, {n_false} false, {counts['unconfirmed']} "
                 f"unconfirmed, {counts['skipped']} skipped")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

EPILOG = """exit codes: 0 success, 1 error or (--verify) a false declaration, 2 usage error.
See docs/probes.md for what is measured and how verdicts are reached."""


def add_parser(subparsers: Any, common_parent: argparse.ArgumentParser
               ) -> argparse.ArgumentParser:
    """Add the ``probe`` command to the ``dmisearch`` command's subparsers."""
    p = subparsers.add_parser(
        "probe", parents=[common_parent],
        help="measure the symmetries of (model, algorithm) pairs",
        description="Train a (model, algorithm) pair on data D and on g.D (g: a transform "
                    "acting on the inputs) and compare its predictions at g.x with those at "
                    "x: exactly, seed by seed, where the architecture couples to g or the "
                    "algorithm is deterministic, else with a permutation test over seeds. "
                    "Prints a verdict (equivariant / not equivariant / inconclusive) with "
                    "the numbers behind it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--all", action="store_true",
                      help="the table of every registered pair under every transform "
                           "(--model/--algorithm/--group narrow it)")
    what.add_argument("--verify", action="store_true",
                      help="check every declared symmetry of the registered components "
                           "(exit code 1 if one is false)")
    p.add_argument("--model", action="append", metavar="M",
                   help="architecture (repeatable with --all/--verify)")
    p.add_argument("--algorithm", action="append", metavar="I",
                   help="algorithm, e.g. sgd or sgd+shift (repeatable with --all/--verify)")
    p.add_argument("--group", action="append", metavar="G",
                   help="transform acting on the inputs (repeatable with --all/--verify)")
    p.add_argument("--data", metavar="D",
                   help="data generator, optionally with transforms (digits+permute); "
                        f"default: {DEFAULT_DATA[0]} with "
                        + ", ".join(f"{k}={_show(v)}" for k, v in DEFAULT_DATA[1].items()))
    p.add_argument("-p", "--param", action="append", default=[], metavar="KIND.KEY=VALUE",
                   help="a hyperparameter: KIND is model, algorithm, data or group, VALUE a "
                        "TOML value (-p model.width=64 -p algorithm.lr=0.1). Defaults: "
                        + "; ".join(f"{k}: " + ", ".join(f"{q}={v}" for q, v in d.items())
                                    for k, d in PROBE_DEFAULTS.items()))
    d = Settings()
    p.add_argument("--seeds", type=int, default=d.seeds, metavar="S",
                   help=f"seeds per side (default {d.seeds})")
    p.add_argument("--n-train", type=int, default=d.n_train, metavar="N",
                   help=f"training samples (default {d.n_train})")
    p.add_argument("--n-test", type=int, default=d.n_test, metavar="N",
                   help=f"test inputs compared (default {d.n_test})")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=d.dtype,
                   help=f"dtype of the runs (default {d.dtype})")
    p.add_argument("--device", default=d.device, help=f"cpu, cuda or cuda:N (default "
                                                       f"{d.device})")
    p.add_argument("--alpha", type=float, default=d.alpha,
                   help=f"level of the statistical test (default {d.alpha})")
    p.add_argument("--tolerance", type=float, metavar="GAP",
                   help="relative gap counted as equal (default: "
                        + ", ".join(f"{k} {v:g}" for k, v in TOLERANCES.items()) + ")")
    p.add_argument("--data-seed", type=int, default=d.data_seed, metavar="N",
                   help="which data set D is drawn (default 0)")
    p.add_argument("--witness", action=argparse.BooleanOptionalAction, default=None,
                   help="when the test on D does not reject, search witness data (D with "
                        "anisotropic or sparse inputs) on a pilot and test it on fresh seeds, "
                        "each test at alpha/2 (default: on, unless --data fixes the data)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_probe)
    return p


def _registry(args: argparse.Namespace | None = None) -> Any:
    from dmisearch.plugins import load_registry

    return load_registry(files=getattr(args, "plugin", None) or [])


def cmd_probe(args: argparse.Namespace) -> int:
    """``dmisearch probe``: one cell, the table (``--all``) or the declarations
    (``--verify``)."""
    if not (args.all or args.verify) and not (args.model and args.algorithm and args.group):
        raise DmisearchError("probe needs --model, --algorithm and --group (or --all, or "
                             "--verify); see dmisearch probe --help")
    if not (args.all or args.verify) and max(map(len, (args.model, args.algorithm,
                                                       args.group))) > 1:
        raise DmisearchError("name one --model, --algorithm and --group, or use --all")
    for name, value, low in (("--seeds", args.seeds, 2), ("--n-train", args.n_train, 1),
                             ("--n-test", args.n_test, 1)):
        if value < low:
            raise DmisearchError(f"{name} must be >= {low}, got {value}")
    if not 0 < args.alpha < 1:
        raise DmisearchError(f"--alpha must be in (0, 1), got {args.alpha}")
    threads = torch.get_num_threads()
    if getattr(args, "threads", None) is None and not os.environ.get("DMISEARCH_THREADS"):
        torch.set_num_threads(1)  # the probe's networks are tiny: more threads mostly spin
    try:
        return _cmd_probe(args)
    finally:
        torch.set_num_threads(threads)


def _cmd_probe(args: argparse.Namespace) -> int:
    # The witness search replaces the data by another: only where the user left it to us.
    witness = args.witness if args.witness is not None else args.data is None
    settings = Settings(n_train=args.n_train, n_test=args.n_test, seeds=args.seeds,
                        dtype=args.dtype, device=args.device, alpha=args.alpha,
                        tolerance=args.tolerance, data_seed=args.data_seed, witness=witness)
    registry = _registry(args)
    for problem in registry.problems:
        print(f"dmisearch: warning: {problem}", file=sys.stderr)
    params = parse_overrides(args.param)
    tick = _ticker(not args.json and sys.stderr.isatty())

    if args.verify:
        findings = verify(registry, settings, models=args.model, algorithms=args.algorithm,
                          groups=args.group, progress=tick)
        n_false = sum(f.status == "false" for f in findings)
        if args.json:
            print(json.dumps({"settings": _settings_json(settings),
                              "findings": [f.to_json() for f in findings],
                              "false": n_false}, indent=2))
        else:
            print(format_findings(findings))
        return 1 if n_false else 0

    data = make_data(registry, args.data, params["data"])
    prober = Prober(data, settings)
    if args.all:
        cells = probe_all(registry, prober, models=args.model, algorithms=args.algorithm,
                          groups=args.group, params=params, progress=tick)
    else:
        model = make_model(registry, args.model[0], params["model"])
        algo = make_algorithm(registry, args.algorithm[0], params["algorithm"])
        group = make_group(registry, args.group[0], params["group"])
        cells = [prober.probe(model, algo, group)]
    if args.json:
        print(json.dumps({"data": prober.label, "settings": _settings_json(settings),
                          "cells": [c.to_json() for c in cells]}, indent=2))
    elif args.all:
        s = settings
        print(f"symmetry probe on {prober.label}: {s.n_train} training / {s.n_test} test "
              f"samples, {s.seeds} seeds per side, {s.dtype} on {s.device}, alpha {s.alpha:g}, "
              f"tolerance {s.tol:g}, witness search {'on' if s.searches else 'off'}\n")
        print(format_table(cells))
        print("\n" + LEGEND)
    else:
        print(format_cell(cells[0]))
    return 0


def _settings_json(settings: Settings) -> dict[str, Any]:
    return {**dataclasses.asdict(settings), "tolerance": settings.tol}


def _ticker(enabled: bool) -> Any:
    """A progress line on stderr per cell or finding, when stderr is a terminal."""
    if not enabled:
        return None

    def tick(item: Any) -> None:
        what = (f"{item.model} / {item.algorithm} under {item.group}: {item.verdict}"
                if isinstance(item, Cell) else f"{item.subject} under {item.group}: "
                                               f"{item.status}")
        print(f"  {what}", file=sys.stderr, flush=True)

    return tick


__all__ = [
    "Cell", "Finding", "Prober", "Settings", "add_parser", "cmd_probe", "coupled",
    "coupling_kind", "decide", "declares", "energy_test", "probe_all", "verify",
]

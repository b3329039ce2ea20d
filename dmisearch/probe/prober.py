"""The prober: trains a (model, algorithm) pair on one data set ``D`` and on ``g.D`` and
reaches a verdict (:class:`Prober`), from the exact comparison where there is one, else the
energy test, then a witness search (:mod:`dmisearch.probe.witness`); and the table of every
pair under every transform on one data set (:func:`probe_all`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dmisearch.components import (
    Algorithm,
    Architecture,
    DataGenerator,
    Job,
    Predictions,
    RunContext,
    Split,
    Transform,
    pair_problem,
)
from dmisearch.errors import DmisearchError
from dmisearch.probe.building import label, make_algorithm, make_group, make_model
from dmisearch.probe.couplings import coupled, coupling_kind, declares, default_dtype
from dmisearch.probe.settings import Settings, min_p_value
from dmisearch.probe.statistics import (
    DTYPES,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    NOT_EQUIVARIANT,
    Cell,
    decide,
    energy_test,
    relative_gap,
)
from dmisearch.probe.witness import Witness, effect, search, seeds_hint
from dmisearch.seeding import derive_seed


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
        """Fill in ``cell``: the runs on ``D``, then an exact comparison with the runs on
        ``g.D`` where there is one, else (or when it fails) the statistical test."""
        s = self.settings
        base = self.base_runs(model, algo)
        moved = self.transformed(g)
        cell.error = _error(base, self.split.y_test, self.info.task)
        a = torch.stack([p.test for p in base])  # (S, n_test, out)
        if any(p.diverged for p in base):
            cell.diverged = True
            cell.verdict, cell.reason = decide(deterministic=False, gap=None, tolerance=s.tol,
                                               p_value=None, alpha=s.alpha, diverged=True)
            return
        deterministic = max(relative_gap(a[0], a[i]) for i in range(1, len(a))) <= s.tol
        if deterministic:
            gap, diverged, b = self._deterministic(cell, model, algo, moved, a)
        else:
            gap, diverged, b = self._compare_seeds(cell, model, algo, g, moved, a)
        cell.gap, cell.diverged = gap, diverged
        if cell.p_value is not None:
            cell.level = s.level
        cell.verdict, cell.reason = decide(deterministic=deterministic, gap=gap, tolerance=s.tol,
                                           p_value=cell.p_value, alpha=s.level,
                                           diverged=diverged)
        if cell.verdict == INCONCLUSIVE and b is not None:
            self._not_rejected(cell, model, algo, g, a, b)

    def _deterministic(self, cell: Cell, model: Architecture, algo: Algorithm, moved: Split,
                       a: torch.Tensor) -> tuple[float, bool, None]:
        """A deterministic algorithm: one run on ``g.D`` against the first run on ``D``.
        Returns ``(gap, diverged, None)``: there is no sample on ``g.D`` to test."""
        (run,) = self.run(model, algo, moved, [0])
        cell.method = "deterministic"
        gap = relative_gap(a[0], run.test)
        cell.gaps = [gap]
        cell.error_g = _error([run], moved.y_test, self.info.task)
        return gap, run.diverged, None

    def _compare_seeds(self, cell: Cell, model: Architecture, algo: Algorithm, g: Transform,
                       moved: Split, a: torch.Tensor
                       ) -> tuple[float | None, bool, torch.Tensor | None]:
        """A seed-dependent algorithm: the coupled runs on ``g.D`` seed by seed (where the
        architecture couples to ``g``), then the statistical test unless they agree.
        Returns ``(gap, diverged, sample on g.D)``: no gap without a coupling, no sample
        without a test."""
        s = self.settings
        gap, diverged, b = None, False, None
        if cell.coupling is not None:
            runs = self.run(coupled(model, g), algo, moved, range(s.seeds))
            cell.gaps = [relative_gap(a[i], p.test) for i, p in enumerate(runs)]
            gap = max(cell.gaps)
            diverged = any(p.diverged for p in runs)
            cell.method = "invariant" if cell.coupling == "identity" else "coupled"
            cell.error_g = _error(runs, moved.y_test, self.info.task)
        if not diverged and not (gap is not None and gap <= s.tol):
            b = self._test_on_data(cell, model, algo, moved, a)
            diverged = b is None
        return gap, diverged, b

    def _not_rejected(self, cell: Cell, model: Architecture, algo: Algorithm, g: Transform,
                      a: torch.Tensor, b: torch.Tensor) -> None:
        """The test on ``D`` (samples ``a`` and ``b``) did not reject: search a witness, or
        say why no test could reject, or how many seeds would settle it."""
        s = self.settings
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
        other half of ``alpha``, and let that test decide (:mod:`dmisearch.probe.witness`).
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

"""One trial, top to bottom: pick a pair and its hyperparameters, train every point of the
learning curve, score it, and store the whole curve on the trial.

Flow of ``TrialObjective.__call__``:

1. ``pair``: a categorical over the study's valid (model, algorithm) pairs, so an
   impossible pair never costs a trial.
2. The model's and the algorithm's hyperparameters, suggested under namespaced names
   (``model.cnn_gap.width``, ``algorithm.sgd.lr``) from their effective spaces.
3. For each training size, smallest first: one job per curve seed (the first ``n`` samples
   of that seed's training pool, evaluated on that seed's test set), handed to the
   algorithm together; test and train errors per job.
4. After each size, the running score is reported at ``step = n`` so a pruner can stop a
   poor candidate early; a diverged job (NaN/inf) prunes the trial with the reason.
5. The curve, scores, components with their packages and versions, device and timings are
   stored as trial user attributes (``TRIAL_ATTRS`` lists them).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
import torch

import dmisearch
from dmisearch.components import Algorithm, Architecture, Job, RunContext, Split
from dmisearch.data import draw_splits, jsonable
from dmisearch.metrics import aulc, baseline_error, beta, error, floor_for, n_to_target
from dmisearch.seeding import derive_seed
from dmisearch.space import namespace, suggest
from dmisearch.study_file import StudySpec

SCHEMA = 1
PAIR_PARAM = "pair"

#: User attributes every finished trial carries (pruned and failed ones carry what they got).
TRIAL_ATTRS = (
    "dmisearch_version", "schema", "model", "algorithm", "data", "model_params",
    "algorithm_params", "packages", "curve", "baseline_error", "metric", "scores", "device",
    "wall_time_s",
)


@dataclasses.dataclass(frozen=True)
class StudyData:
    """The study's samples, drawn once per process and shared by every trial."""

    splits: Mapping[int, Split]  # curve seed -> training pool and test set, on the device
    baselines: Mapping[int, float]  # curve seed -> trivial predictor's test error

    @classmethod
    def prepare(cls, spec: StudySpec, ctx: RunContext) -> StudyData:
        splits = draw_splits(spec.data, spec.grid.sizes[-1], spec.grid.test_size,
                             spec.grid.seeds)
        base = {s: baseline_error(spec.metric, sp.y_test, sp.y_train)  # type: ignore[arg-type]
                for s, sp in splits.items()}
        return cls({s: sp.to(ctx.device, ctx.dtype) for s, sp in splits.items()}, base)

    @property
    def baseline(self) -> float:
        return float(np.mean(list(self.baselines.values())))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    return device.type


def make_context(spec: StudySpec) -> RunContext:
    return RunContext(
        device=resolve_device(spec.device),
        dtype=getattr(torch, spec.dtype),
        task=spec.info.task,
        out_dim=spec.info.out_dim,
        input_shape=tuple(spec.info.input_shape),
    )


class TrialPrunedWithReason(optuna.TrialPruned):
    """Pruned by the pruner or by divergence; the reason is stored on the trial."""


class TrialObjective:
    """Callable objective: ``value = objective(trial)`` (works with ask-and-tell too)."""

    def __init__(self, spec: StudySpec, data: StudyData, ctx: RunContext):
        self.spec, self.data, self.ctx = spec, data, ctx
        self.labels = [spec.pair_label(m, a) for m, a in spec.pairs]

    def __call__(self, trial: optuna.Trial) -> float:
        spec, ctx = self.spec, self.ctx
        started = time.perf_counter()
        m_name, a_name = trial.suggest_categorical(PAIR_PARAM, self.labels).split("/")
        m_cand, a_cand = spec.models[m_name], spec.algorithms[a_name]
        model = m_cand.cls(**suggest(trial, namespace(m_cand.cls), m_cand.space))
        algo = a_cand.cls(**suggest(trial, namespace(a_cand.cls), a_cand.space))
        assert isinstance(model, Architecture) and isinstance(algo, Algorithm)
        for key, value in self._identity(model, algo).items():
            trial.set_user_attr(key, value)

        floor = floor_for(spec.metric, spec.grid.test_size, self.data.baseline)  # type: ignore
        curve: dict[str, list[Any]] = {"size": [], "seed": [], "test_error": [],
                                       "train_error": [], "seconds": []}
        means: list[float] = []
        try:
            for n in spec.grid.sizes:
                t0 = time.perf_counter()
                jobs = [Job(sp.x_train[:n], sp.y_train[:n], sp.x_test, derive_seed("job", s))
                        for s, sp in self.data.splits.items()]
                preds = algo.fit_predict(model, jobs, ctx)
                if len(preds) != len(jobs):
                    raise RuntimeError(f"algorithm '{algo.name}' returned {len(preds)} "
                                       f"predictions for {len(jobs)} jobs")
                seconds = time.perf_counter() - t0
                test_errs = []
                for (s, sp), job, p in zip(self.data.splits.items(), jobs, preds, strict=True):
                    test_err = error(spec.metric, p.test, sp.y_test)  # type: ignore[arg-type]
                    train_err = error(spec.metric, p.train, job.y_train)  # type: ignore
                    curve["size"].append(n)
                    curve["seed"].append(s)
                    curve["test_error"].append(test_err)
                    curve["train_error"].append(train_err)
                    curve["seconds"].append(seconds)
                    test_errs.append(test_err)
                    if p.diverged or not math.isfinite(test_err):
                        trial.set_user_attr("pruned_reason", f"diverged: non-finite loss or "
                                            f"predictions at n={n}, seed={s}")
                        raise TrialPrunedWithReason()
                means.append(float(np.mean(test_errs)))
                sizes = np.array(spec.grid.sizes[: len(means)])
                trial.report(spec.objective.intermediate(
                    sizes, np.array(means), self.data.baseline, floor), step=n)
                if trial.should_prune():
                    trial.set_user_attr("pruned_reason", f"pruner stopped it after n={n}")
                    raise TrialPrunedWithReason()
        finally:
            trial.set_user_attr("curve", curve)
            trial.set_user_attr("wall_time_s", time.perf_counter() - started)

        sizes, mean = np.array(spec.grid.sizes), np.array(means)
        scores = self.scores(sizes, mean, floor)
        trial.set_user_attr("scores", scores)
        return spec.objective.score(sizes, mean, self.data.baseline, floor)

    def scores(self, sizes: np.ndarray, mean: np.ndarray, floor: float) -> dict[str, Any]:
        """Every summary of a complete curve, whichever one the study optimises."""
        out: dict[str, Any] = {
            "aulc": aulc(sizes, mean, self.data.baseline, floor),
            "final_error": float(mean[-1]),
            "beta": beta(sizes, mean, floor),
            "mean_test_error": [float(v) for v in mean],
        }
        target = self.spec.objective.target
        if target is not None:
            n, status = n_to_target(sizes, mean, target, floor)
            out["n_to_target"], out["n_to_target_status"] = n, status
        return out

    def _identity(self, model: Architecture, algo: Algorithm) -> dict[str, Any]:
        spec = self.spec
        data = spec.data.record()
        return {
            "dmisearch_version": dmisearch.__version__,
            "schema": SCHEMA,
            "model": model.name,
            "algorithm": algo.name,
            "data": data,
            "model_params": jsonable(model.get_params()),
            "algorithm_params": jsonable(algo.get_params()),
            "packages": {
                "model": spec.models[model.name].entry.provenance(),
                "algorithm": spec.algorithms[algo.name].entry.provenance(),
                "data": spec.data_entries[0].provenance(),
                "transforms": [e.provenance() for e in spec.data_entries[1:]],
            },
            "baseline_error": self.data.baseline,
            "metric": spec.metric,
            "device": device_label(self.ctx.device),
            "torch": torch.__version__,
        }

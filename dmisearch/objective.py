"""One trial, top to bottom: pick a pair and its hyperparameters, train every point of the
learning curve, score it, and store the whole curve on the trial.

Flow of ``TrialObjective.__call__``:

1. ``pair``: a categorical over the study's valid (model, algorithm) pairs, so an
   impossible pair never costs a trial.
2. The model's and the algorithm's hyperparameters, suggested under namespaced names
   (``model.cnn_gap.width``, ``algorithm.sgd.lr``) from their effective spaces.
3. One job per (training size, curve seed): the first ``n`` samples of that seed's
   training pool, evaluated on that seed's test set. With a pruner, sizes run in stages,
   smallest first, each ending at a size of ``search.prune_after``; without one, all in
   one stage. The jobs of a stage go to the
   algorithm together (and, in a batch of trials, together with the other trials' jobs of
   the same algorithm class, so the engine can fuse them); test and train errors per job.
4. After each size, the running score is reported at ``step = n``; at the end of a stage
   the partial curve is stored on the trial for the curve pruner (``curve``, which it fits) and
   the pruner may stop a poor candidate; a diverged job (NaN/inf) prunes the trial with
   the reason.
5. The curve, scores, components with their packages and versions, device and timings are
   stored as trial user attributes (``TRIAL_ATTRS`` lists them).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError

import dmisearch
from dmisearch.components import (
    Algorithm,
    Architecture,
    Job,
    Predictions,
    Run,
    RunContext,
    Split,
)
from dmisearch.data import draw_splits, jsonable
from dmisearch.metrics import aulc, baseline_error, beta, error, floor_for, n_to_target
from dmisearch.seeding import derive_seed
from dmisearch.space import namespace, suggest
from dmisearch.study_file import StudySpec
from dmisearch.training import deadline
from dmisearch.trialinfo import CONFIRM_SEEDS_ATTR, CONFIRMS_ATTR, PAIR_PARAM, config_key

SCHEMA = 1

#: User attributes every finished trial carries (pruned and failed ones carry what they got).
TRIAL_ATTRS = (
    "dmisearch_version", "schema", "model", "algorithm", "data", "model_params",
    "algorithm_params", "packages", "curve", "baseline_error", "metric", "scores", "device",
    "wall_time_s", "batch_trials",
)


@dataclasses.dataclass(frozen=True)
class StudyData:
    """The study's samples, drawn once per process and shared by every trial."""

    splits: Mapping[int, Split]  # curve seed -> training pool and test set, on the device
    baselines: Mapping[int, float]  # curve seed -> trivial predictor's test error

    @classmethod
    def prepare(cls, spec: StudySpec, ctx: RunContext,
                seeds: tuple[int, ...] | None = None) -> StudyData:
        """The samples of ``seeds`` (default: the curve's seeds)."""
        splits = draw_splits(spec.data, spec.grid.sizes[-1], spec.grid.test_size,
                             spec.grid.seeds if seeds is None else seeds)
        base = {s: baseline_error(spec.metric, sp.y_test, sp.y_train)  # type: ignore[arg-type]
                for s, sp in splits.items()}
        return cls({s: sp.to(ctx.device, ctx.dtype) for s, sp in splits.items()}, base)

    @property
    def baseline(self) -> float:
        return float(np.mean(list(self.baselines.values())))

    def floor(self, spec: StudySpec) -> float:
        """Smallest error taken at face value before logs (metrics.floor_for)."""
        return floor_for(spec.metric, spec.grid.test_size, self.baseline)  # type: ignore


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
    """The run context of a study; also sets torch's process-wide TF32 switches."""
    torch.backends.cuda.matmul.allow_tf32 = spec.tf32
    torch.backends.cudnn.allow_tf32 = spec.tf32
    return RunContext(
        device=resolve_device(spec.device),
        dtype=getattr(torch, spec.dtype),
        task=spec.info.task,
        out_dim=spec.info.out_dim,
        input_shape=tuple(spec.info.input_shape),
        fused=spec.engine == "fused",
        cuda_graphs=spec.cuda_graphs,
    )


class TrialPrunedWithReason(optuna.TrialPruned):
    """Pruned by the pruner or by divergence; the reason is stored on the trial."""


@dataclasses.dataclass(eq=False)
class TrialPlan:
    """One trial in flight: its components, the curve so far, and how it ended."""

    trial: optuna.Trial
    model: Architecture
    algo: Algorithm
    data: StudyData  # the curve seeds' samples, or the confirmation seeds'
    confirmation: bool = False  # a retrain on fresh seeds: never reported nor pruned
    started: float = dataclasses.field(default_factory=time.perf_counter)
    curve: dict[str, list[Any]] = dataclasses.field(default_factory=lambda: {
        "size": [], "seed": [], "test_error": [], "train_error": [], "seconds": []})
    means: list[float] = dataclasses.field(default_factory=list)
    outcome: str = "running"  # running | pruned | failed | complete | reaped
    error: BaseException | None = None
    value: float | None = None

    @property
    def config(self) -> str:
        """The configuration's key (as ``trialinfo.trial_config`` reads it back)."""
        return config_key(self.model.name, self.algo.name, jsonable(self.model.get_params()),
                          jsonable(self.algo.get_params()))


class TrialObjective:
    """The objective: ``value = objective(trial)`` for one trial, or :meth:`execute` for a
    batch of trials whose training is fused where their shapes allow.

    Sizes are trained in *stages*, smallest first: with a pruner, a stage ends at each size
    of ``search.prune_after`` (every size but the last by default), where the pruner may
    stop a poor candidate; without one, one stage holds every size (one program for the
    whole curve). Within a stage, the jobs of every trial in the batch that use the same
    algorithm class go to that class's ``fit_predict_runs`` together.
    """

    def __init__(self, spec: StudySpec, data: StudyData, ctx: RunContext):
        self.spec, self.data, self.ctx = spec, data, ctx
        self.labels = [spec.pair_label(m, a) for m, a in spec.pairs]
        self._confirm_data: dict[tuple[int, ...], StudyData] = {}
        self.stages = stages(spec.grid.sizes, spec.prune_after)
        #: sizes after which the pruner is asked: the ends of every stage but the last
        self.prune_points = frozenset(s[-1] for s in self.stages[:-1])
        #: the curve pruner fits the partial curve, so it is stored before each question
        self.store_partial = spec.pruner.cls_name == "CurvePruner"
        #: Called after each stage of a batch with the batch's plans, the stage's sizes and
        #: the stage's index (the runner's progress); None: nothing.
        self.on_stage: Callable[[list[TrialPlan], tuple[int, ...], int], None] | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        plan = self.plan(trial)
        self.execute([plan])
        if plan.outcome == "failed":
            raise plan.error  # type: ignore[misc]
        if plan.outcome == "pruned":
            raise TrialPrunedWithReason()
        return plan.value  # type: ignore[return-value]

    def plan(self, trial: optuna.Trial) -> TrialPlan:
        """Suggest the pair and its hyperparameters; record the triplet on the trial. A
        confirmation trial (user attribute ``confirms``) trains on its confirmation seeds."""
        spec = self.spec
        m_name, a_name = trial.suggest_categorical(PAIR_PARAM, self.labels).split("/")
        m_cand, a_cand = spec.models[m_name], spec.algorithms[a_name]
        model = m_cand.cls(**suggest(trial, namespace(m_cand.cls), m_cand.space))
        algo = a_cand.cls(**suggest(trial, namespace(a_cand.cls), a_cand.space))
        assert isinstance(model, Architecture) and isinstance(algo, Algorithm)
        seeds = confirmation_seeds(trial.user_attrs)
        data = self.data if seeds is None else self.confirmation_data(seeds)
        for key, value in self._identity(model, algo, data).items():
            trial.set_user_attr(key, value)
        return TrialPlan(trial, model, algo, data, confirmation=seeds is not None)

    def confirmation_data(self, seeds: tuple[int, ...]) -> StudyData:
        """The samples of confirmation ``seeds``, drawn once per process."""
        if seeds not in self._confirm_data:
            self._confirm_data[seeds] = StudyData.prepare(self.spec, self.ctx, seeds)
        return self._confirm_data[seeds]

    def execute(self, plans: list[TrialPlan]) -> None:
        """Train and score ``plans`` stage by stage; sets each plan's ``outcome``.

        A failure inside one trial's training fails that trial only: a fused call that
        raises is retried trial by trial to find the culprit. A trial another worker's
        reaper finished meanwhile (this process was silent past the grace period: suspended,
        swapping) ends ``reaped``: nothing more is written to it. ``KeyboardInterrupt``
        propagates.
        """
        with deadline(self.spec.trial_timeout):
            for index, stage in enumerate(self.stages):
                alive = [p for p in plans if p.outcome == "running"]
                if not alive:
                    break
                for group in _by_algorithm(alive):
                    self._run_stage(group, stage)
                if self.on_stage is not None:
                    self.on_stage(plans, stage, index)
        for p in plans:
            try:
                if p.outcome == "running":
                    try:
                        self._finish(p)
                    except UpdateFinishedTrialError:
                        raise
                    except Exception as exc:
                        p.outcome, p.error = "failed", exc
                p.trial.set_user_attr("curve", p.curve)
                p.trial.set_user_attr("wall_time_s", time.perf_counter() - p.started)
                p.trial.set_user_attr("batch_trials", len(plans))  # sharing that time
            except UpdateFinishedTrialError:
                p.outcome = "reaped"

    @staticmethod
    def _jobs(data: StudyData, sizes: tuple[int, ...]) -> list[tuple[int, int, Job]]:
        return [(n, s, Job(sp.x_train[:n], sp.y_train[:n], sp.x_test, derive_seed("job", s)))
                for n in sizes for s, sp in data.splits.items()]

    def _run_stage(self, plans: list[TrialPlan], sizes: tuple[int, ...]) -> None:
        jobs = self._jobs(plans[0].data, sizes)
        cls = type(plans[0].algo)
        t0 = time.perf_counter()
        try:
            preds = cls.fit_predict_runs(
                [Run(p.model, p.algo, [j for _, _, j in jobs]) for p in plans], self.ctx)
        except Exception as exc:
            if len(plans) == 1:
                plans[0].outcome, plans[0].error = "failed", exc
                return
            for p in plans:  # find the trial that failed; the others run alone
                self._run_stage([p], sizes)
            return
        seconds = time.perf_counter() - t0
        for plan, got in zip(plans, preds, strict=True):
            try:
                if len(got) != len(jobs):
                    raise RuntimeError(f"algorithm '{plan.algo.name}' returned {len(got)} "
                                       f"predictions for {len(jobs)} jobs")
                self._record(plan, jobs, got, seconds)
            except UpdateFinishedTrialError:  # reaped by another worker meanwhile
                plan.outcome = "reaped"
            except Exception as exc:  # e.g. predictions of the wrong shape from a plugin
                plan.outcome, plan.error = "failed", exc

    def _record(self, plan: TrialPlan, jobs: list[tuple[int, int, Job]],
                preds: list[Predictions], seconds: float) -> None:
        spec, trial = self.spec, plan.trial
        by_size: dict[int, list[float]] = {}
        out = self.ctx.out_dim
        for (n, s, job), p in zip(jobs, preds, strict=True):
            for what, got, rows in (("test", p.test, len(job.x_test)), ("train", p.train, n)):
                if tuple(got.shape) != (rows, out):
                    raise RuntimeError(
                        f"algorithm '{plan.algo.name}' returned {what} predictions of shape "
                        f"{tuple(got.shape)} for n={n}, seed={s}; expected ({rows}, {out})")
            test_err = error(spec.metric, p.test, plan.data.splits[s].y_test)  # type: ignore
            train_err = error(spec.metric, p.train, job.y_train)  # type: ignore[arg-type]
            for key, v in (("size", n), ("seed", s), ("test_error", test_err),
                           ("train_error", train_err), ("seconds", seconds)):
                plan.curve[key].append(v)
            by_size.setdefault(n, []).append(test_err)
            if (p.diverged or not math.isfinite(test_err)) and plan.outcome == "running":
                trial.set_user_attr("pruned_reason", f"diverged: non-finite loss or "
                                                     f"predictions at n={n}, seed={s}")
                plan.outcome = "pruned"
        for n, errs in by_size.items():
            if plan.outcome != "running":
                return
            plan.means.append(float(np.mean(errs)))
            if plan.confirmation:  # other seeds: kept out of the pruner's statistics
                continue
            sizes = np.array(spec.grid.sizes[: len(plan.means)])
            trial.report(spec.objective.intermediate(
                sizes, np.array(plan.means), plan.data.baseline, plan.data.floor(spec)), step=n)
            if n not in self.prune_points:
                continue
            if self.store_partial:
                trial.set_user_attr("curve", {k: list(v) for k, v in plan.curve.items()})
            if trial.should_prune():
                trial.set_user_attr("pruned_reason", f"pruner stopped it after n={n}")
                plan.outcome = "pruned"

    def _finish(self, plan: TrialPlan) -> None:
        sizes, mean = np.array(self.spec.grid.sizes), np.array(plan.means)
        base, floor = plan.data.baseline, plan.data.floor(self.spec)
        plan.trial.set_user_attr("scores", self.scores(sizes, mean, base, floor))
        plan.value = self.spec.objective.score(sizes, mean, base, floor)
        plan.outcome = "complete"

    def scores(self, sizes: np.ndarray, mean: np.ndarray, baseline: float, floor: float
               ) -> dict[str, Any]:
        """Every summary of a complete curve, whichever one the study optimises."""
        out: dict[str, Any] = {
            "aulc": aulc(sizes, mean, baseline, floor),
            "final_error": float(mean[-1]),
            "beta": beta(sizes, mean, floor),
            "mean_test_error": [float(v) for v in mean],
        }
        target = self.spec.objective.target
        if target is not None:
            n, status = n_to_target(sizes, mean, target, floor)
            out["n_to_target"], out["n_to_target_status"] = n, status
        return out

    def _identity(self, model: Architecture, algo: Algorithm, samples: StudyData
                  ) -> dict[str, Any]:
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
            "baseline_error": samples.baseline,
            "metric": spec.metric,
            "device": device_label(self.ctx.device),
            "torch": torch.__version__,
        }


def stages(sizes: tuple[int, ...], prune_after: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The curve's sizes cut after each size in ``prune_after``: what trains together
    between two questions to the pruner. ``stages((25, 50, 100, 200), (50,))`` is
    ``[(25, 50), (100, 200)]``."""
    out: list[tuple[int, ...]] = [()]
    for n in sizes:
        out[-1] += (n,)
        if n in prune_after and n != sizes[-1]:
            out.append(())
    return out


def _by_algorithm(plans: list[TrialPlan]) -> list[list[TrialPlan]]:
    """Plans grouped by algorithm class and data (curve or confirmation seeds), in
    first-seen order: what one call of ``fit_predict_runs`` can train."""
    groups: dict[tuple[type, int], list[TrialPlan]] = {}
    for p in plans:
        groups.setdefault((type(p.algo), id(p.data)), []).append(p)
    return list(groups.values())


def confirmation_seeds(attrs: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The seeds a confirmation trial trains on (None for a search trial)."""
    if CONFIRMS_ATTR not in attrs:
        return None
    return tuple(int(s) for s in attrs[CONFIRM_SEEDS_ATTR])

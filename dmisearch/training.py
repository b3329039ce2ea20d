"""Training networks with minibatch optimisers: the base class of ``sgd``, ``adam`` and kin.

An optimiser plugin subclasses :class:`MinibatchAlgorithm` and implements one method,
``make_optimizer(params)``, returning a ``torch.optim.Optimizer``. The loop itself belongs
to dmisearch, so every optimiser gets the same, documented training protocol:

* the module is built by the architecture with torch's RNG seeded from the job's seed, on
  the CPU in torch's default dtype, then moved to the run's device and dtype;
* training length is ``steps`` optimiser steps, or ``ceil(epochs * (n // batch))`` when
  ``epochs`` is set; the batch is ``min(batch_size, n)``;
* minibatches walk through a fresh random permutation of the training set each epoch,
  dropping the incomplete last batch (the next epoch reshuffles, so every sample is used);
  the whole index schedule is drawn up front from the job's seed, so the loop itself never
  syncs with the host;
* loss: mean squared error (regression) or cross-entropy (classification), mean over the
  batch;
* ``center``: the trained function is ``f - f0``, the network minus its initial function
  (targets and predictions are those of the difference), as in neural-tangents;
* augmentation (``sgd+shift``): each minibatch sample is acted on by a random element of
  the transform's group, drawn per job and step from ``augment_generator``;
* a job whose loss or predictions become NaN/infinite is reported as diverged.

The protocol's pieces and the reference loop that follows it one model at a time
(``train_one``) live in ``dmisearch.loop``, which the fused engine (``dmisearch.engine``)
shares; they are importable from here too.
"""

from __future__ import annotations

import dataclasses
import math
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch

from dmisearch import engine
from dmisearch.components import (
    Algorithm,
    Architecture,
    Job,
    Predictions,
    Run,
    RunContext,
    Transform,
)
from dmisearch.loop import (  # the protocol's pieces, importable from here as before
    DEADLINE_EVERY,
    EVAL_CHUNK,
    TrialTimeout,
    augment_generator,
    batch_schedule,
    build_module,
    check_deadline,
    deadline,
    loss_fn,
    predict,
    step_clock,
    train_one,
)

__all__ = [
    "DEADLINE_EVERY", "EVAL_CHUNK", "MinibatchAlgorithm", "TrialTimeout", "augment_generator",
    "batch_schedule", "build_module", "check_deadline", "deadline", "loss_fn", "predict",
    "step_clock", "train_one", "unfused_reason",
]


@dataclasses.dataclass(kw_only=True)
class MinibatchAlgorithm(Algorithm):
    """Base for algorithms that train a fresh network per job with a torch optimiser."""

    requires: ClassVar[frozenset[str]] = frozenset({"module"})

    lr: float = 0.01  # learning rate
    steps: int = 500  # optimiser steps per job (unless epochs is set)
    epochs: float | None = None  # if set: ceil(epochs * (n // batch)) steps instead of steps
    batch_size: int = 64  # minibatch size (capped at the training-set size)
    weight_decay: float = 0.0  # L2 penalty, as torch.optim applies it
    center: bool = False  # train f - f0 (the network minus its initial function)

    #: Hyperparameters that may differ between jobs trained in one fused program; they
    #: reach ``fused_optimizer`` per job. Jobs differing in any other one never fuse.
    per_job: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def make_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """A torch optimiser over ``params`` configured from this algorithm's hyperparameters."""

    @classmethod
    def fused_optimizer(cls, params: Sequence[torch.Tensor], algos: Sequence[MinibatchAlgorithm],
                        steps: int) -> Any:
        """An optimiser over stacked parameters ``(K, ...)``, one job per leading index.

        ``algos[k]`` is job k's algorithm; they differ only in ``per_job`` hyperparameters.
        ``steps`` is the number of steps every job of the program takes. Returns an object
        with ``zero_grad()`` and ``step()`` (a ``torch.optim.Optimizer`` or a
        ``dmisearch.optim.FusedOptimizer``) that updates each job exactly as
        ``make_optimizer`` would on its own. The default applies ``make_optimizer`` to the
        stack, which is exact for element-wise optimisers (SGD, Adam, RMSprop, ...) since
        ``per_job`` is empty; override it for per-job hyperparameters. An override is the
        fused equivalent of the ``make_optimizer`` its class sees: a subclass that
        overrides ``make_optimizer`` again must override this too, or its jobs train one
        model at a time (:func:`unfused_reason`).
        """
        return algos[0].make_optimizer(params)

    def check(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0 when set, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.center and self.augmentation is not None:
            raise ValueError("center=true cannot be combined with augmentation")

    @classmethod
    def augmentation_problem(cls, transform: Transform) -> str | None:
        return None  # any transform: each minibatch sample gets a random group element

    def n_steps(self, n: int) -> int:
        """Optimiser steps for a training set of ``n`` samples."""
        if self.epochs is None:
            return self.steps
        per_epoch = n // min(self.batch_size, n)
        # round() first: 1.1 * 50 is 55.000000000000007 in floating point, not 56 steps
        return max(1, math.ceil(round(self.epochs * per_epoch, 9)))

    def fit_predict(
        self, model: Architecture, jobs: Sequence[Job], ctx: RunContext
    ) -> list[Predictions]:
        return self.fit_predict_runs([Run(model, self, jobs)], ctx)[0]

    @classmethod
    def _unfused_reason(cls) -> str | None:
        """:func:`unfused_reason` of this class: what the engine asks of a member's class."""
        return unfused_reason(cls)

    @classmethod
    def fit_predict_runs(cls, runs: Sequence[Run], ctx: RunContext) -> list[list[Predictions]]:
        """Every job of every run through the fused engine (``dmisearch.engine``), or one
        model at a time with ``train_one`` when ``ctx.fused`` is off."""
        if not ctx.fused:
            return [[train_one(r.algorithm, r.model, j, ctx) for j in r.jobs]  # type: ignore
                    for r in runs]
        members = [engine.Member(r.model, r.algorithm, j)  # type: ignore[arg-type]
                   for r in runs for j in r.jobs]
        preds = iter(engine.train(members, ctx))
        return [[next(preds) for _ in r.jobs] for r in runs]


def _definer(cls: type, name: str) -> type:
    """The class of ``cls``'s method resolution order whose body defines ``name``."""
    return next(c for c in cls.__mro__ if name in vars(c))


def unfused_reason(cls: type[MinibatchAlgorithm]) -> str | None:
    """Why the fused engine must not train ``cls`` (None: it may).

    The fused optimiser a class declares (its ``fused_optimizer``) stands for one
    ``make_optimizer``: the one its class sees. A subclass overriding ``make_optimizer``
    without declaring its own fused equivalent would be trained by its parent's, and its
    own ``make_optimizer`` never called. The default ``fused_optimizer`` calls
    ``make_optimizer`` itself, so it suits every class.
    """
    maker = _definer(cls, "make_optimizer")
    fused = _definer(cls, "fused_optimizer")
    if fused is MinibatchAlgorithm or issubclass(fused, maker):
        return None
    return (f"algorithm '{cls.name}' ({cls.__module__}.{cls.__qualname__}) overrides "
            f"make_optimizer (in {maker.__qualname__}) but inherits fused_optimizer from "
            f"{fused.__qualname__}, which stands for {fused.__qualname__}'s optimiser and "
            "never calls this make_optimizer: its jobs train one model at a time with the "
            "loop. To train them fused, override fused_optimizer as well (the conformance "
            "kit checks that it matches make_optimizer)")



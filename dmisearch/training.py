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
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import time
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
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
from dmisearch.seeding import derive_seed

EVAL_CHUNK = 4096  # samples per forward pass at evaluation: bounds memory on large test sets
DEADLINE_EVERY = 16  # steps between checks of the trial time limit (a host clock read)

_DEADLINE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar(
    "dmisearch_deadline", default=None)


class TrialTimeout(RuntimeError):
    """A trial (or the batch of trials trained with it) ran past ``search.trial_timeout``."""


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Training inside this block raises ``TrialTimeout`` once ``seconds`` have passed."""
    token = _DEADLINE.set(None if seconds is None else (time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


#: Benchmarks: while a list, every step loop (``train_one``'s and each of the engine's
#: chunks) appends ``(models, steps, seconds)``, timed alone between device syncs, so
#: per-step rates exclude building models and predicting.
STEP_TIMES: list[tuple[int, int, float]] | None = None


@contextlib.contextmanager
def step_clock(models: int, steps: int, device: torch.device) -> Iterator[None]:
    """Times the enclosed step loop into ``STEP_TIMES`` when that is a list; else free."""
    if STEP_TIMES is None:
        yield
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    STEP_TIMES.append((models, steps, time.perf_counter() - start))


def check_deadline() -> None:
    """Raise ``TrialTimeout`` if the enclosing ``deadline`` has passed (cheap: no sync)."""
    limit = _DEADLINE.get()
    if limit is not None and time.monotonic() > limit[0]:
        raise TrialTimeout(f"trial time limit of {limit[1]:g} s exceeded "
                           "(search.trial_timeout; trials trained together share the clock)")


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
    def fit_predict_runs(cls, runs: Sequence[Run], ctx: RunContext) -> list[list[Predictions]]:
        """Every job of every run through the fused engine (``dmisearch.engine``), or one
        model at a time with ``train_one`` when ``ctx.fused`` is off."""
        from dmisearch import engine

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


def build_module(model: Architecture, seed: int, ctx: RunContext) -> torch.nn.Module:
    """The job's freshly initialised module on ``ctx.device`` in ``ctx.dtype``."""
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed would also reseed (or, before CUDA
        # starts, queue a reseed of) every CUDA generator, which fork_rng does not restore
        torch.default_generator.manual_seed(derive_seed(seed, "init"))
        module = model.build(ctx.input_shape, ctx.out_dim)
    return module.to(device=ctx.device, dtype=ctx.dtype)


def batch_schedule(n: int, batch: int, steps: int, seed: int) -> torch.Tensor:
    """Indices ``(steps, batch)``: per-epoch reshuffles, incomplete last batch dropped."""
    g = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    per_epoch = n // batch
    epochs = math.ceil(steps / per_epoch)
    perms = torch.stack([torch.randperm(n, generator=g) for _ in range(epochs)])
    return perms[:, : per_epoch * batch].reshape(-1, batch)[:steps]


def loss_fn(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, y) if task == "regression" else F.cross_entropy(out, y)


@torch.no_grad()
def predict(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    module.eval()
    out = torch.cat([module(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)])
    module.train()
    return out


def train_one(
    algo: MinibatchAlgorithm, model: Architecture, job: Job, ctx: RunContext
) -> Predictions:
    """Train one module for one job: the plain PyTorch loop.

    The reference the fused engine (``dmisearch.engine``) is tested against, and the
    one-model-at-a-time baseline of the benchmarks.
    """
    module = build_module(model, job.seed, ctx)
    f0_train = f0_test = None
    if algo.center:
        f0_train, f0_test = predict(module, job.x_train), predict(module, job.x_test)
    opt = algo.make_optimizer(module.parameters())
    n = job.size
    batch = min(algo.batch_size, n)
    steps = algo.n_steps(n)
    order = batch_schedule(n, batch, steps, job.seed).to(ctx.device)
    losses = torch.empty(steps, device=ctx.device, dtype=ctx.dtype)
    with step_clock(1, steps, ctx.device):
        for t in range(steps):
            if t % DEADLINE_EVERY == 0:
                check_deadline()
            idx = order[t]
            xb = job.x_train[idx]
            if algo.augmentation is not None:
                xb = algo.augmentation.augment(xb, augment_generator(job.seed, t))
            out = module(xb)
            if f0_train is not None:
                out = out - f0_train[idx]
            loss = loss_fn(ctx.task, out, job.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[t] = loss.detach()
    test, train = predict(module, job.x_test), predict(module, job.x_train)
    if f0_train is not None:
        test, train = test - f0_test, train - f0_train
    diverged = not bool(
        torch.isfinite(losses).all() & torch.isfinite(test).all() & torch.isfinite(train).all()
    )
    return Predictions(test=test, train=train, diverged=diverged, losses=losses)


def augment_generator(seed: int, step: int) -> torch.Generator:
    """The (CPU) generator of a job's augmentation draws at one step: the same in the loop
    and in the engine, whatever else is drawn around it."""
    return torch.Generator().manual_seed(derive_seed(seed, "augment", step))

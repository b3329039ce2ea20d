"""The training protocol of ``MinibatchAlgorithm`` (``dmisearch.training``), in the pieces the
reference loop and the fused engine (``dmisearch.engine``) share: how a job's module is
built, its minibatch order and augmentation draws, the loss, predictions, the trial time
limit and the benchmarks' step clock; and the reference loop itself, ``train_one``, which
trains one model at a time and which the engine is tested against.

The protocol itself is described in ``dmisearch.training``'s docstring.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from dmisearch.components import Architecture, Job, Predictions, RunContext
from dmisearch.seeding import derive_seed

if TYPE_CHECKING:
    from dmisearch.training import MinibatchAlgorithm

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

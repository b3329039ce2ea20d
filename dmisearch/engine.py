"""The fused training engine: many small networks trained side by side in one program.

A trial trains one network per (training size, seed) of its learning curve, and a batch of
trials many more. Run one after another, each tiny network leaves the device idle between
kernel launches. The engine instead trains K jobs as one program:

* **Parameters** of the K jobs' modules (each built by ``loop.build_module`` from its
  own seed, exactly as the reference loop builds it) are stacked along a leading model axis
  (as ``torch.func.stack_module_state`` stacks them; ``build_stacked`` streams the builds
  into place).
* **Forward**: ``Architecture.forward_batched`` maps stacked parameters and inputs
  ``(K, B, *shape)`` to outputs ``(K, B, out)``. The default is ``torch.func.vmap`` over
  ``functional_call``, so any architecture written as a plain ``nn.Module`` is fused with
  no extra code; the built-in architectures override it with batched matrix products and
  grouped convolutions.
* **Loss**: each job's mean loss over its own minibatch; the sum over jobs is
  differentiated, so every job gets exactly its own gradient.
* **Optimiser**: ``MinibatchAlgorithm.fused_optimizer`` over the stacked parameters:
  ``torch.optim`` itself for element-wise optimisers that share hyperparameters, or a
  per-job version (``dmisearch.optim``) for ``sgd`` and ``adam``, whose hyperparameters may
  differ between jobs (jobs of different trials). Only where it is the fused equivalent of
  the algorithm's own ``make_optimizer``: a subclass of ``sgd`` overriding
  ``make_optimizer`` alone trains with the reference loop (a warning says why).
* **Data**: each job keeps its own training subset and minibatch order (the reference
  loop's ``batch_schedule``, drawn up front and placed on the device once). Training sets
  that are prefixes of one pool (the curve's nested sizes) are gathered from that pool, not
  copied per job.

**Jobs of different sizes** train together when they share the number of steps and the
batch size (``steps`` mode, sizes at least the batch size): jobs are *grouped* by
``(architecture and its hyperparameters, algorithm class and its shared hyperparameters,
steps, batch)`` (``dmisearch.fusing``), and each group is one program. Nothing is padded or
masked, so every job's arithmetic is that of the reference loop.

**Memory**: a group is split into chunks that fit the device (on CUDA, sized from a
one-job probe of peak memory; on the CPU, so that a chunk's saved activations stay near
the caches, ``CPU_CHUNK_BYTES``), and a chunk that still runs out of memory is split in two
and retried, down to single jobs, before the error reaches the trial.

**Host syncs**: none in the step loop. The step number lives on the device (minibatch
indices are gathered with it, losses written at it), so one step is the same sequence of
kernels every time; divergence is checked once at the end.

**CUDA graphs** (``RunContext.cuda_graphs``, the study's ``cuda_graphs``, on by default):
on CUDA, after ``GRAPH_WARMUP`` eager steps on a side stream, one training step is
captured and replayed for the remaining steps (``dmisearch.step_graph``): the same kernels
on the same memory, so results equal the eager engine's, without the per-step Python and
launch costs that dominate small networks. Used where the optimiser declares itself
capturable (``dmisearch.optim``'s, on their fused-kernel path) and no augmentation draws on
the host; a capture that fails (an architecture that syncs with the host, say) warns once
and the chunk goes on eagerly.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from dmisearch.components import Predictions, RunContext
from dmisearch.fusing import Member, group_members  # re-exported: engine.Member
from dmisearch.loop import (
    DEADLINE_EVERY,
    EVAL_CHUNK,
    augment_generator,
    batch_schedule,
    build_module,
    check_deadline,
    step_clock,
    train_one,
)
from dmisearch.optim import is_dense
from dmisearch.progress import WORK_PROGRESS, cumulative
from dmisearch.step_graph import GRAPH_MIN_REPLAYS, GRAPH_WARMUP, StepGraph

#: Fraction of free CUDA memory a chunk may plan to use.
MEMORY_FRACTION = 0.7
#: CPU: activations a chunk may save for backward; past the caches a fused step becomes
#: memory-bound and slower than the loop. Measured with ``python benchmarks/bench_chunks.py
#: --k 64 --mib 8,16,32`` (history: benchmarks/RESULTS.md, "Thresholds in the code").
CPU_CHUNK_BYTES = 16 * 2**20
CPU_MAX_CHUNK = 256
#: Host buffer through which built modules are copied to a device (``build_stacked``).
STAGE_BYTES = 32 * 2**20


#: Algorithm classes already warned about training one model at a time.
_UNFUSED_WARNED: set[type] = set()


def train(members: Sequence[Member], ctx: RunContext,
          max_chunk: int | None = None) -> list[Predictions]:
    """Train every member; predictions in the order of ``members``. The run's progress
    hears the network training steps of all of them together."""
    out: list[Predictions | None] = [None] * len(members)
    indices = group_members(members)
    groups = [[members[i] for i in idx] for idx in indices]
    fused = sum(m.steps for g in groups if type(g[0].algo)._unfused_reason() is None
                for m in g)  # the networks trained one at a time do not report their steps
    with cumulative(fused):
        for idx, group in zip(indices, groups, strict=True):
            for i, pred in zip(idx, _train_fused_or_not(group, ctx, max_chunk), strict=True):
                out[i] = pred
    return out  # type: ignore[return-value]


def _train_fused_or_not(group: list[Member], ctx: RunContext, max_chunk: int | None
                        ) -> list[Predictions]:
    """The group in fused programs; one model at a time with the loop where the fused
    optimiser would not be the algorithm's own (``training.unfused_reason``), which a
    warning says once per class."""
    cls = type(group[0].algo)
    why = cls._unfused_reason()
    if why is None:
        return _train_group(group, ctx, max_chunk)
    if cls not in _UNFUSED_WARNED:
        _UNFUSED_WARNED.add(cls)
        warnings.warn(why, RuntimeWarning, stacklevel=3)
    return [train_one(m.algo, m.model, m.job, ctx) for m in group]


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or
                                              "can't allocate memory" in text)


def _train_group(group: list[Member], ctx: RunContext, max_chunk: int | None
                 ) -> list[Predictions]:
    size = min(len(group), max_chunk or len(group), _chunk_limit(group[0], ctx))
    preds: list[Predictions] = []
    for start in range(0, len(group), size):
        preds += _train_splitting(group[start:start + size], ctx)
    return preds


def _train_splitting(chunk: list[Member], ctx: RunContext) -> list[Predictions]:
    """Train ``chunk``; on out-of-memory, halve it and retry each half."""
    try:
        return _train_chunk(chunk, ctx)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
        if not _is_oom(exc) or len(chunk) == 1:
            raise
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    half = len(chunk) // 2
    return _train_splitting(chunk[:half], ctx) + _train_splitting(chunk[half:], ctx)


def _chunk_limit(m: Member, ctx: RunContext) -> int:
    """How many jobs like ``m`` fit in one program on ``ctx.device``."""
    if ctx.device.type != "cuda":
        per_job = _saved_bytes(m, ctx)
        return max(1, min(CPU_MAX_CHUNK, CPU_CHUNK_BYTES // max(per_job, 1)))
    torch.cuda.synchronize(ctx.device)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    before = torch.cuda.memory_allocated(ctx.device)
    probe = dataclasses.replace(m.algo, steps=1, epochs=None)
    _train_chunk([dataclasses.replace(m, algo=probe)], ctx)
    per_job = max(torch.cuda.max_memory_allocated(ctx.device) - before, 1)
    free, _ = torch.cuda.mem_get_info(ctx.device)
    return max(1, int(MEMORY_FRACTION * free // per_job))


def _saved_bytes(m: Member, ctx: RunContext) -> int:
    """Bytes one job's forward pass on one minibatch saves for its backward pass."""
    module = build_module(m.model, m.job.seed, ctx)
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(m.job.x_train[: m.batch])
    return total


def build_stacked(chunk: Sequence[Member], ctx: RunContext
                  ) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The chunk's modules, built from their jobs' seeds on the CPU exactly as the loop's
    ``build_module`` builds them, as stacked parameters and buffers on ``ctx.device``
    (leading job axis, keyed like ``named_parameters`` / ``named_buffers``: what
    ``torch.func.stack_module_state`` gives), and the first module, moved to the device,
    as the template of the batched forward.

    Modules are built one at a time and copied into place (on a device other than the CPU,
    through a host buffer of ``STAGE_BYTES`` copied over as it fills), so the host holds
    one module and that buffer rather than K modules and their stack: fresh host memory
    costs a page fault per page (``python benchmarks/bench_build.py --staged``).
    """
    cpu = dataclasses.replace(ctx, device=torch.device("cpu"))
    template = build_module(chunk[0].model, chunk[0].job.seed, cpu)
    layout = _state(template)
    k, per_job = len(chunk), sum(t.numel() * t.element_size() for t in layout.values())
    out = {n: torch.empty((k, *t.shape), dtype=t.dtype, device=ctx.device)
           for n, t in layout.items()}
    stage_jobs = max(1, min(k, STAGE_BYTES // max(per_job, 1)))
    stage = out if not _staged(ctx.device) else {
        n: torch.empty((stage_jobs, *t.shape), dtype=t.dtype) for n, t in layout.items()}
    signature = _signature(layout)
    for j, m in enumerate(chunk):
        module = template if j == 0 else build_module(m.model, m.job.seed, cpu)
        state = _state(module)
        if _signature(state) != signature:
            raise ValueError(
                f"architecture {m.model.name!r} built modules whose tensors differ between "
                f"seeds: {_differences(layout, state)} for seed {chunk[0].job.seed} against "
                f"seed {m.job.seed}; the fused engine stacks the jobs' tensors, so their "
                "names, shapes and dtypes may depend only on the hyperparameters: train "
                "this architecture with engine = \"loop\"")
        for n, t in state.items():
            stage[n][j if stage is out else j % stage_jobs].copy_(t.detach())
        if stage is not out and (j % stage_jobs == stage_jobs - 1 or j == k - 1):
            start = j - j % stage_jobs
            for n, o in out.items():
                o[start:j + 1].copy_(stage[n][: j + 1 - start])
    template.to(ctx.device)
    params = {n: out[n] for n, _ in template.named_parameters()}
    return template, params, {n: out[n] for n, _ in template.named_buffers()}


def _staged(device: torch.device) -> bool:
    """Whether modules reach ``device`` through a host buffer (every device but the CPU)."""
    return device.type != "cpu"


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name (a tied tensor once, under its first name)."""
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def _signature(state: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {n: (tuple(t.shape), t.dtype) for n, t in state.items()}


def _differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str:
    sa, sb = _signature(a), _signature(b)
    return "; ".join(f"{n!r}: {sa.get(n, 'absent')} vs {sb.get(n, 'absent')}"
                     for n in sorted(sa.keys() | sb.keys()) if sa.get(n) != sb.get(n))


class _Pools:
    """Stacked data sources: training sets that are prefixes of one tensor share it."""

    def __init__(self, tensors: Sequence[torch.Tensor]):
        self.pools: list[torch.Tensor] = []
        self.index: list[int] = []
        seen: dict[tuple, int] = {}
        for t in tensors:
            key = (t.data_ptr(), t.stride(), t.dtype, t.device)
            i = seen.get(key)
            if i is None:
                seen[key] = i = len(self.pools)
                self.pools.append(t)
            elif len(t) > len(self.pools[i]):
                self.pools[i] = t
            self.index.append(i)

    def stacked(self) -> torch.Tensor:
        """``(n_pools, max_len, ...)``, shorter pools padded with zeros (never indexed)."""
        n = max(len(p) for p in self.pools)
        return torch.stack([F.pad(p, (0, 0) * (p.ndim - 1) + (0, n - len(p)))
                            if len(p) < n else p for p in self.pools])


@dataclasses.dataclass(frozen=True)
class _ChunkData:
    """A chunk's data on the device: stacked pools, each job's rows and minibatch order."""

    x_pool: torch.Tensor  # (P, N, *shape) training inputs
    x_index: torch.Tensor  # (K,) each job's pool
    x_flat: torch.Tensor  # (P * N, *shape): minibatches are gathered from these rows
    x_base: torch.Tensor  # (K, 1) each job's first row in x_flat
    y_flat: torch.Tensor  # the same for the targets
    y_base: torch.Tensor
    order: torch.Tensor  # (K, steps, batch) each job's minibatches, as rows of its pool
    tests: _Pools  # test inputs
    test_index: torch.Tensor  # (K,) each job's test pool


def _chunk_data(chunk: list[Member], ctx: RunContext, steps: int, batch: int) -> _ChunkData:
    """The chunk's training and test data on ``ctx.device`` (placed there once)."""
    xs = _Pools([m.job.x_train for m in chunk])
    ys = _Pools([m.job.y_train for m in chunk])
    x_pool, y_pool = xs.stacked(), ys.stacked()  # (P, N, *shape), (P, N, ...)
    # minibatches are gathered with one index_select from the flattened pools: row
    # ``pool * N + i`` (cheaper than advanced indexing by (pool, i) pairs)
    xi = torch.tensor(xs.index, device=ctx.device)
    x_flat, y_flat = x_pool.flatten(0, 1), y_pool.flatten(0, 1)
    x_base = xi[:, None] * x_pool.shape[1]
    y_base = torch.tensor(ys.index, device=ctx.device)[:, None] * y_pool.shape[1]
    order = torch.stack([batch_schedule(m.job.size, batch, steps, m.job.seed)
                         for m in chunk]).to(ctx.device)  # (K, steps, batch)
    tests = _Pools([m.job.x_test for m in chunk])
    test_index = torch.tensor(tests.index, device=ctx.device)
    return _ChunkData(x_pool, xi, x_flat, x_base, y_flat, y_base, order, tests, test_index)


def _train_chunk(chunk: list[Member], ctx: RunContext) -> list[Predictions]:
    k = len(chunk)
    first = chunk[0]
    steps, batch = first.steps, first.batch
    template, params, buffers = build_stacked(chunk, ctx)
    params = {n: p.requires_grad_() for n, p in params.items()}
    forward = first.model.forward_batched(template)
    data = _chunk_data(chunk, ctx, steps, batch)
    # what the step reads, as locals (no attribute look-ups per step)
    x_flat, x_base, order = data.x_flat, data.x_base, data.order
    y_flat, y_base = data.y_flat, data.y_base
    losses = torch.empty(steps, k, device=ctx.device, dtype=ctx.dtype)
    f0 = None
    if first.algo.center:  # the initial functions, subtracted throughout (see training.py)
        f0 = _initial_functions(template, forward, params, buffers, data)  # (train, test)
        f0_flat = f0[0].flatten(0, 1)
        f0_base = torch.arange(k, device=ctx.device)[:, None] * f0[0].shape[1]
    aug = first.algo.augmentation

    step_t = torch.zeros(1, dtype=torch.long, device=ctx.device)  # the step, on the device

    def job_losses(t: int) -> torch.Tensor:
        idx = order.index_select(1, step_t).squeeze(1)  # (K, batch)
        xb = _gather(x_flat, x_base, idx)  # (K, batch, *shape)
        if aug is not None:  # each job's draws from its own generator, as in the loop
            xb = torch.stack([aug.augment(xb[j], augment_generator(m.job.seed, t))
                              for j, m in enumerate(chunk)])
        out = forward(params, buffers, xb)  # (K, batch, out)
        if f0 is not None:
            out = out - _gather(f0_flat, f0_base, idx)
        return _job_losses(ctx.task, out, _gather(y_flat, y_base, idx))  # (K,)

    params = _match_grad_layout(params, job_losses)
    opt = type(first.algo).fused_optimizer(list(params.values()), [m.algo for m in chunk],
                                           steps)

    def step(t: int) -> None:
        """Step ``step_t`` (== ``t``); on the host, only ``t`` for augmentation draws."""
        loss = job_losses(t)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        losses.index_copy_(0, step_t, loss.detach()[None])
        step_t.add_(1)

    _run_steps(step, opt, k, steps, ctx, graphable=aug is None)
    return _final_predictions(chunk, template, forward, params, buffers, data, f0, losses)


def _initial_functions(template: torch.nn.Module, forward: Callable, params: dict,
                       buffers: dict, data: _ChunkData) -> tuple[torch.Tensor, torch.Tensor]:
    """Each job's function at initialisation on its training and test pools, in evaluation
    mode: ``(K, N, out)``, ``(K, N_test, out)``."""
    template.eval()
    with torch.no_grad():
        f0_train = _predict(forward, params, buffers, data.x_pool, data.x_index)
        f0_test = _predict(forward, params, buffers, data.tests.stacked(), data.test_index)
    template.train()
    return f0_train, f0_test


def _run_steps(step: Callable[[int], None], opt: Any, k: int, steps: int, ctx: RunContext,
               graphable: bool) -> None:
    """``step(t)`` for each ``t`` in ``range(steps)``, checking the deadline; replayed from a
    captured CUDA graph where possible (``graphable``: no augmentation draws on the host)."""
    run = step
    if (ctx.cuda_graphs and _graphs_supported(ctx.device) and graphable
            and steps >= GRAPH_WARMUP + GRAPH_MIN_REPLAYS):
        run = StepGraph(step, ctx.device, lambda: getattr(opt, "capturable", False))
    report = WORK_PROGRESS.get()  # the run's progress, if any
    with step_clock(k, steps, ctx.device):
        for t in range(steps):
            if t % DEADLINE_EVERY == 0:
                check_deadline()
                if report is not None:  # network steps: k networks take a step each
                    report(t * k, steps * k, "network training steps")
            run(t)
    del run  # a graph's memory pool goes with it


def _final_predictions(chunk: list[Member], template: torch.nn.Module, forward: Callable,
                       params: dict, buffers: dict, data: _ChunkData,
                       f0: tuple[torch.Tensor, torch.Tensor] | None,
                       losses: torch.Tensor) -> list[Predictions]:
    """Each job's trained predictions (less its initial function ``f0``, if centred) and
    losses; diverged if a loss or prediction is not finite."""
    template.eval()  # evaluation mode for predictions, as the loop does
    with torch.no_grad():
        test_pred = _predict(forward, params, buffers, data.tests.stacked(), data.test_index)
        train_pred = _predict(forward, params, buffers, data.x_pool, data.x_index)
        if f0 is not None:
            f0_train, f0_test = f0
            test_pred, train_pred = test_pred - f0_test, train_pred - f0_train
    tests_ = [test_pred[j, : len(m.job.x_test)] for j, m in enumerate(chunk)]
    trains = [train_pred[j, : m.job.size] for j, m in enumerate(chunk)]
    finite = torch.isfinite(losses).all(0) & torch.stack(
        [torch.isfinite(a).all() & torch.isfinite(b).all()
         for a, b in zip(tests_, trains, strict=True)])
    return [Predictions(test=a, train=b, diverged=not ok, losses=losses[:, j])
            for j, (a, b, ok) in enumerate(zip(tests_, trains, finite.tolist(), strict=True))]


def _graphs_supported(device: torch.device) -> bool:
    return device.type == "cuda"


def _match_grad_layout(params: dict[str, torch.Tensor],
                       job_losses: Callable[[int], torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same parameters, each laid out in memory like its gradient.

    A batched form may produce gradients in another memory layout than the stacked
    parameters (a transposed weight in a batched matrix product); autograd then copies
    every gradient, every step. One probe backward finds the layouts; values are unchanged.
    """
    seen: dict[str, torch.Tensor] = {}
    handles = [p.register_hook(lambda g, n=n: seen.setdefault(n, g)) for n, p in params.items()]
    job_losses(0).sum().backward()  # the hooks see each gradient before it is copied
    for h in handles:
        h.remove()
    out = {}
    for name, p in params.items():
        g = seen.get(name)
        if g is None or g.stride() == p.stride() or not is_dense(g):
            out[name] = p.detach().requires_grad_()
        else:
            q = torch.empty_strided(p.shape, g.stride(), dtype=p.dtype, device=p.device)
            out[name] = q.copy_(p.detach()).requires_grad_()
    return out


def _gather(flat: torch.Tensor, base: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``base + idx`` of ``flat``, shaped ``(*idx.shape, *flat.shape[1:])``."""
    return flat.index_select(0, (base + idx).flatten()).view(*idx.shape, *flat.shape[1:])


def _job_losses(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each job's mean loss over its minibatch, as ``loop.loss_fn`` computes it."""
    if task == "regression":
        return ((out - y) ** 2).flatten(1).mean(1)
    k, b = y.shape
    return F.cross_entropy(out.reshape(k * b, -1), y.reshape(k * b),
                           reduction="none").reshape(k, b).mean(1)


def _predict(forward: Callable, params: dict, buffers: dict, pool: torch.Tensor,
             index: torch.Tensor) -> torch.Tensor:
    """Outputs of every job on all rows of its pool: ``(K, rows, out)``, in chunks."""
    rows = pool.shape[1]
    step = max(1, EVAL_CHUNK // max(1, math.ceil(len(index) / 8)))
    parts = [forward(params, buffers, pool[index, i:i + step]) for i in range(0, rows, step)]
    return torch.cat(parts, dim=1)

"""Which jobs train as one program of the fused engine (``dmisearch.engine``).

A job is one network of a trial's curve (one training size and seed), a :class:`Member`
with its trial's model and algorithm. Jobs of different sizes, and of different trials,
train together when they share the architecture and its hyperparameters, the algorithm
class and its shared hyperparameters (those not in its ``per_job``), the number of steps
and the batch size: nothing is padded or masked, so every job's arithmetic stays that of the
reference loop. :func:`group_members` groups a batch's jobs by that key (:func:`fuse_key`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dmisearch.components import Architecture, Job

if TYPE_CHECKING:  # the algorithms' module imports the engine, which imports this one
    from dmisearch.training import MinibatchAlgorithm


@dataclasses.dataclass(frozen=True)
class Member:
    """One job of a fused program, with the model and algorithm of its trial."""

    model: Architecture
    algo: MinibatchAlgorithm
    job: Job

    @property
    def steps(self) -> int:
        return self.algo.n_steps(self.job.size)

    @property
    def batch(self) -> int:
        return min(self.algo.batch_size, self.job.size)


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def fuse_key(m: Member) -> tuple:
    """Jobs with equal keys can train in one program (see the module docstring)."""
    shared = {k: v for k, v in m.algo.get_params().items() if k not in m.algo.per_job}
    return (type(m.model), _freeze(m.model.get_params()), type(m.algo), _freeze(shared),
            m.steps, m.batch)


def group_members(members: Sequence[Member]) -> list[list[int]]:
    """Indices of ``members`` grouped by :func:`fuse_key`, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(members):
        groups.setdefault(fuse_key(m), []).append(i)
    return list(groups.values())

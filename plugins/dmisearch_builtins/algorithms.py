"""Gradient-based training: ``sgd`` (with momentum), ``adam`` and full-batch ``gd``.

The training protocol (initialisation, batches, losses, divergence) is
``dmisearch.training.MinibatchAlgorithm``'s; each class here only configures its
``torch.optim`` optimiser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import torch

from dmisearch.hookspecs import hookimpl
from dmisearch.optim import FusedAdam, FusedSGD
from dmisearch.space import Categorical, Float, Int
from dmisearch.training import MinibatchAlgorithm

#: Transforms acting on inputs by a fixed orthogonal matrix. Gradient steps (with momentum
#: and weight decay, all linear in the gradient) commute with every orthogonal map of the
#: weights, so SGD and GD keep the couplings of all three.
ORTHOGONAL = frozenset({"rotate", "permute", "sign_flip"})

_SHARED_SPACE = {
    "steps": Int(200, 3000, log=True),
    "batch_size": Categorical((32, 64, 128)),
    "weight_decay": Categorical((0.0, 1e-5, 1e-4, 1e-3)),
}


@dataclasses.dataclass(kw_only=True)
class SGD(MinibatchAlgorithm):
    """Stochastic gradient descent, optionally with (Nesterov) momentum."""

    name = "sgd"
    lr: float = 0.05  # learning rate
    momentum: float = 0.0  # heavy-ball momentum in [0, 1)
    nesterov: bool = False  # Nesterov momentum (needs momentum > 0)

    space = {"lr": Float(1e-3, 1.0, log=True), "momentum": Categorical((0.0, 0.9)),
             **_SHARED_SPACE}
    per_job = frozenset({"lr", "momentum", "weight_decay"})
    symmetries = ORTHOGONAL

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=true needs momentum > 0")

    def make_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                               nesterov=self.nesterov, weight_decay=self.weight_decay)

    @classmethod
    def fused_optimizer(cls, params: Sequence[torch.Tensor], algos: Sequence[SGD],
                        steps: int) -> FusedSGD:
        return FusedSGD(params, _hyper(algos, cls.per_job), nesterov=algos[0].nesterov)


@dataclasses.dataclass(kw_only=True)
class Adam(MinibatchAlgorithm):
    """Adam: coordinate-wise adaptive steps (breaks the O(d) symmetry of SGD on an FCN)."""

    name = "adam"
    lr: float = 1e-3  # learning rate
    beta1: float = 0.9  # first-moment decay
    beta2: float = 0.999  # second-moment decay
    eps: float = 1e-8  # denominator offset

    space = {"lr": Float(1e-4, 3e-2, log=True), **_SHARED_SPACE}
    per_job = frozenset({"lr", "beta1", "beta2", "eps", "weight_decay"})
    #: Coordinate-wise steps commute only with signed permutations of the weights.
    symmetries = frozenset({"permute", "sign_flip"})

    def check(self) -> None:
        super().check()
        for k in ("beta1", "beta2"):
            v = getattr(self, k)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{k} must be in [0, 1), got {v}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    def make_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr, betas=(self.beta1, self.beta2),
                                eps=self.eps, weight_decay=self.weight_decay)

    @classmethod
    def fused_optimizer(cls, params: Sequence[torch.Tensor], algos: Sequence[Adam],
                        steps: int) -> FusedAdam:
        return FusedAdam(params, _hyper(algos, cls.per_job), steps)


def _hyper(algos: Sequence[object], names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Per-job hyperparameters as float64 tensors of shape (K,)."""
    return {n: torch.tensor([float(getattr(a, n)) for a in algos], dtype=torch.float64)
            for n in names}


FULL_BATCH = 2**31 - 1


@dataclasses.dataclass(kw_only=True)
class GD(MinibatchAlgorithm):
    """Full-batch gradient descent: the finite-width counterpart of ntk kernel regression.

    Every step uses the whole training set. With ``center = true`` and a wide network in
    the ntk parameterisation, its predictions approach those of ``ntk`` kernel regression
    trained for the same time (Jacot et al. 2018; Lee et al. 2019).
    """

    name = "gd"
    lr: float = 0.5  # learning rate
    batch_size: int = FULL_BATCH  # fixed: the whole training set at every step
    space = {"lr": Float(1e-2, 4.0, log=True), "steps": Int(100, 5000, log=True)}
    per_job = frozenset({"lr", "momentum", "weight_decay"})
    symmetries = ORTHOGONAL
    momentum: float = 0.0  # heavy-ball momentum in [0, 1)

    def check(self) -> None:
        super().check()
        if self.batch_size != FULL_BATCH:
            raise ValueError("gd always trains on the whole training set; use sgd for "
                             f"minibatches (got batch_size={self.batch_size})")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def make_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)

    @classmethod
    def fused_optimizer(cls, params: Sequence[torch.Tensor], algos: Sequence[GD],
                        steps: int) -> FusedSGD:
        return FusedSGD(params, _hyper(algos, cls.per_job))


@hookimpl
def register_algorithms(register):
    from dmisearch_builtins.kernel_algorithms import NNGP, NTK

    for cls in (SGD, Adam, GD, NNGP, NTK):
        register(cls)

"""RMSprop as a dmisearch algorithm: the training protocol and the fused engine come free."""

import dataclasses

import torch

from dmisearch import MinibatchAlgorithm
from dmisearch.space import Categorical, Float, Int


@dataclasses.dataclass(kw_only=True)
class RMSprop(MinibatchAlgorithm):
    """RMSprop: steps divided by a running root-mean-square of the gradients."""

    name = "rmsprop"
    lr: float = 1e-3  # learning rate
    alpha: float = 0.99  # smoothing constant of the squared-gradient average
    momentum: float = 0.0  # heavy-ball momentum in [0, 1)

    space = {"lr": Float(1e-4, 3e-2, log=True), "steps": Int(100, 2000, log=True),
             "momentum": Categorical((0.0, 0.9))}

    def check(self):
        super().check()  # lr, steps, batch_size, weight_decay
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def make_optimizer(self, params):
        return torch.optim.RMSprop(params, lr=self.lr, alpha=self.alpha,
                                   momentum=self.momentum, weight_decay=self.weight_decay)

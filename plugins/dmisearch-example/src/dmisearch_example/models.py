"""A residual fully-connected network: a plain nn.Module, trained fused with no extra code."""

import dataclasses
import math

from torch import nn

import dmisearch
from dmisearch.space import Categorical, Int


class ResidualMLP(nn.Module):
    def __init__(self, d_in, width, depth, out_dim, activation):
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.readout = nn.Linear(width, out_dim)
        self.act = nn.ReLU() if activation == "relu" else nn.Tanh()
        self.scale = 1.0 / math.sqrt(max(depth, 1))  # keeps the residual stream's variance

    def forward(self, x):
        h = self.embed(x.flatten(1))
        for block in self.blocks:
            h = h + self.scale * block(self.act(h))
        return self.readout(self.act(h))


@dataclasses.dataclass(kw_only=True)
class ResMLP(dmisearch.Architecture):
    """Residual fully-connected network on the flattened input."""

    name = "resmlp"
    width: int = 64  # units of the residual stream
    depth: int = 2  # residual blocks
    activation: str = "relu"  # relu or tanh

    space = {"width": Categorical((32, 64, 128)), "depth": Int(1, 4)}

    def check(self):
        if self.width < 1 or self.depth < 0:
            raise ValueError(f"width must be >= 1 and depth >= 0, got {self.width}, "
                             f"{self.depth}")
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be relu or tanh, got {self.activation!r}")

    def build(self, input_shape, out_dim):
        return ResidualMLP(math.prod(input_shape), self.width, self.depth, out_dim,
                           self.activation)

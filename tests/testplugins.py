"""Components used by the tests as a third-party plugin would provide them."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from dmisearch import Algorithm, Architecture, DataGenerator, DataInfo, Predictions, Split, hookimpl
from dmisearch.seeding import derive_seed
from dmisearch.space import Float
from dmisearch_builtins.algorithms import SGD


@dataclasses.dataclass(kw_only=True)
class FlatData(DataGenerator):
    """Linear regression on flat inputs of shape (d,): no spatial axis."""

    name = "flat_test"
    d: int = 6

    def describe(self) -> DataInfo:
        return DataInfo((self.d,), "regression", 1)

    def sample(self, n_train: int, n_test: int, seed: int) -> Split:
        g = torch.Generator().manual_seed(derive_seed(seed, "flat"))
        x = torch.randn(n_train + n_test, self.d, generator=g)
        y = x.sum(-1, keepdim=True)
        return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


@dataclasses.dataclass(kw_only=True)
class KernelOnly(Algorithm):
    """Needs a capability no built-in architecture provides."""

    name = "kernel_test"
    requires = frozenset({"kernel"})

    def fit_predict(self, model, jobs, ctx):
        raise AssertionError("never called: the pair is impossible")


@dataclasses.dataclass(kw_only=True)
class MeanPredictor(Algorithm):
    """Predicts the mean training target (or class frequencies), shrunk by ``shrink``."""

    name = "mean_test"
    requires = frozenset()
    shrink: float = 1.0
    space = {"shrink": Float(0.0, 1.0)}

    def fit_predict(self, model, jobs, ctx):
        out = []
        for job in jobs:
            if ctx.task == "regression":
                mean = job.y_train.mean(0, keepdim=True) * self.shrink
            else:
                mean = torch.bincount(job.y_train, minlength=ctx.out_dim).to(ctx.dtype)[None]
            out.append(Predictions(test=mean.expand(len(job.x_test), -1),
                                   train=mean.expand(job.size, -1)))
        return out


@dataclasses.dataclass(kw_only=True)
class Failing(MeanPredictor):
    """Raises inside fit_predict."""

    name = "fail_test"

    def fit_predict(self, model, jobs, ctx):
        raise RuntimeError("plugin exploded")


@dataclasses.dataclass(kw_only=True)
class Diverging(MeanPredictor):
    """Returns NaN predictions, flagged as diverged."""

    name = "nan_test"

    def fit_predict(self, model, jobs, ctx):
        preds = super().fit_predict(model, jobs, ctx)
        return [Predictions(p.test * float("nan"), p.train, diverged=True) for p in preds]


@dataclasses.dataclass(kw_only=True)
class Interrupting(MeanPredictor):
    """Behaves like Ctrl-C arriving while a trial runs, while ``armed``."""

    name = "interrupt_test"
    armed: ClassVar[bool] = True

    def fit_predict(self, model, jobs, ctx):
        if Interrupting.armed:
            raise KeyboardInterrupt
        return super().fit_predict(model, jobs, ctx)


ALGORITHMS = (KernelOnly, MeanPredictor, Failing, Diverging, Interrupting)


class TestPlugin:
    __name__ = "test-plugin"

    @hookimpl
    def register_data_generators(self, register):
        register(FlatData)

    @hookimpl
    def register_algorithms(self, register):
        for cls in ALGORITHMS:
            register(cls)


@dataclasses.dataclass(kw_only=True)
class BadShape(MeanPredictor):
    """Returns predictions of the wrong shape: the framework must catch it per trial."""

    name = "bad_shape_test"

    def fit_predict(self, model, jobs, ctx):
        return [Predictions(p.test[:, :0], p.train) for p in super().fit_predict(model, jobs,
                                                                                ctx)]


ALGORITHMS = (*ALGORITHMS, BadShape)


@dataclasses.dataclass(kw_only=True)
class PlainMLP(Architecture):
    """A plain nn.Module architecture: trainable, but no analytic kernel."""

    name = "plain_mlp_test"
    hidden: int = 8

    def build(self, input_shape, out_dim):
        import math

        return torch.nn.Sequential(torch.nn.Flatten(),
                                   torch.nn.Linear(math.prod(input_shape), self.hidden),
                                   torch.nn.Tanh(), torch.nn.Linear(self.hidden, out_dim))


class _Forgetful(torch.nn.Module):
    """An MLP whose ``readout`` layer forward() forgets to use."""

    def __init__(self, d: int, hidden: int, out_dim: int):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, hidden),
                                        torch.nn.Tanh(), torch.nn.Linear(hidden, out_dim))
        self.readout = torch.nn.Linear(hidden, out_dim)

    def forward(self, x):
        return self.body(x)


@dataclasses.dataclass(kw_only=True)
class UnusedParameter(PlainMLP):
    """Has parameters (readout.weight, readout.bias) that get no gradient."""

    name = "unused_param_test"

    def build(self, input_shape, out_dim):
        import math

        return _Forgetful(math.prod(input_shape), self.hidden, out_dim)


@dataclasses.dataclass(kw_only=True)
class WrongShape(PlainMLP):
    """Returns ``hidden`` outputs per sample instead of ``out_dim``."""

    name = "wrong_shape_test"

    def build(self, input_shape, out_dim):
        return super().build(input_shape, self.hidden)


ARCHITECTURES = (PlainMLP, UnusedParameter, WrongShape)


def _register_architectures(self, register):
    for cls in ARCHITECTURES:
        register(cls)


TestPlugin.register_architectures = hookimpl(_register_architectures)


@dataclasses.dataclass(kw_only=True)
class OutOfMemory(MeanPredictor):
    """Runs out of CUDA memory even after the engine's own splitting."""

    name = "oom_test"

    def fit_predict(self, model, jobs, ctx):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


@dataclasses.dataclass(kw_only=True)
class Slow(MeanPredictor):
    """Trains for ``seconds`` (checking the trial time limit like the engine does)."""

    name = "slow_test"
    seconds: float = 5.0

    def fit_predict(self, model, jobs, ctx):
        import time

        from dmisearch.training import check_deadline

        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            check_deadline()
            time.sleep(0.01)
        return super().fit_predict(model, jobs, ctx)


ALGORITHMS = (*ALGORITHMS, OutOfMemory, Slow)


# Subclasses of the built-in sgd that replace its optimiser (used unregistered, or with
# dmisearch.testing.make_plugin).


@dataclasses.dataclass(kw_only=True)
class RaisingSGD(SGD):
    """A make_optimizer that refuses: trained by SGD's fused optimiser, it never ran."""

    name = "raising_sgd_test"

    def make_optimizer(self, params):
        raise RuntimeError("RaisingSGD.make_optimizer was called")


@dataclasses.dataclass(kw_only=True)
class NesterovSGD(SGD):
    """Always Nesterov momentum: not the optimiser SGD's fused one stands for."""

    name = "nesterov_sgd_test"
    momentum: float = 0.9

    def make_optimizer(self, params):
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=True,
                               weight_decay=self.weight_decay)

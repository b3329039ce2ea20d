"""Components used by the tests as a third-party plugin would provide them."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from dmisearch import Algorithm, Architecture, DataGenerator, DataInfo, Predictions, Split, hookimpl
from dmisearch.seeding import derive_seed
from dmisearch.space import Float


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


def _register_architectures(self, register):
    register(PlainMLP)


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

"""The contracts of architectures and algorithms: building, batching, kernels, predictions,
and fused training equal to the one-model-at-a-time loop."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from dmisearch.components import Algorithm, Architecture, Component, Job
from dmisearch.testing.contracts import ComponentContract
from dmisearch.testing.support import _ctx, _default_model, _problem, _rel, _study_doc


class ArchitectureContract(ComponentContract):
    """Contract of an ``Architecture``."""

    kind = "architecture"
    #: Relative tolerance of fused training against the loop, float64. Raise it (and say
    #: why in your docs) only for modules with random layers such as dropout.
    fused_tolerance: ClassVar[float] = 1e-10

    @pytest.fixture
    def input_shape(self, component: Architecture) -> tuple[int, ...]:
        """A small input shape the architecture accepts (override for other shapes)."""
        for shape in ((2, 8), (1, 6, 6), (1, 4, 4, 4)):
            if component.check_input(shape) is None:
                return shape
        pytest.fail(f"override `input_shape`: '{component.name}' takes none of the "
                    "default shapes")

    @pytest.fixture
    def out_dim(self) -> int:
        return 3

    @pytest.fixture
    def study_doc(self, component: Architecture, input_shape: tuple[int, ...]
                  ) -> dict[str, Any]:
        return _study_doc(component, data=None, model=None, algorithm=None,
                          input_shape=input_shape)

    def _build(self, component: Architecture, shape: tuple[int, ...], out_dim: int,
               seed: int) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return component.build(tuple(shape), out_dim)

    def test_build_maps_inputs_to_outputs(self, component: Architecture,
                                          input_shape: tuple[int, ...], out_dim: int) -> None:
        if "module" not in component.provides:
            pytest.skip(f"'{component.name}' provides no trainable module")
        module = self._build(component, input_shape, out_dim, 0)
        assert isinstance(module, torch.nn.Module)
        for p in module.parameters():
            assert p.device.type == "cpu" and p.dtype == torch.get_default_dtype(), (
                "build() must leave the module on the CPU in the default dtype: "
                "the engine places it")
        out = module(torch.randn(5, *input_shape))
        assert out.shape == (5, out_dim), f"expected (5, {out_dim}), got {tuple(out.shape)}"

    def test_build_is_determined_by_torch_seed(self, component: Architecture,
                                               input_shape: tuple[int, ...],
                                               out_dim: int) -> None:
        if "module" not in component.provides:
            pytest.skip(f"'{component.name}' provides no trainable module")
        a = self._build(component, input_shape, out_dim, 0).state_dict()
        b = self._build(component, input_shape, out_dim, 0).state_dict()
        c = self._build(component, input_shape, out_dim, 1).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), "same seed, different weights"
        assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point()), (
            "seeds 0 and 1 gave the same weights: draw them from torch's global RNG")

    def test_forward_batched_equals_the_module(self, component: Architecture,
                                               input_shape: tuple[int, ...],
                                               out_dim: int) -> None:
        if "module" not in component.provides:
            pytest.skip(f"'{component.name}' provides no trainable module")
        from torch.func import stack_module_state

        mods = [self._build(component, input_shape, out_dim, s).double() for s in range(3)]
        params, buffers = stack_module_state(mods)
        x = torch.randn(3, 4, *input_shape, dtype=torch.float64)
        out = component.forward_batched(mods[0])(params, buffers, x)
        assert out.shape == (3, 4, out_dim)
        for k, m in enumerate(mods):
            assert _rel(out[k], m(x[k])) < 1e-12, f"job {k} differs from its module"

    @pytest.mark.parametrize("task", ["regression", "classification"])
    def test_fused_training_equals_the_loop(self, component: Architecture,
                                            input_shape: tuple[int, ...], out_dim: int,
                                            task: str) -> None:
        if "module" not in component.provides:
            pytest.skip(f"'{component.name}' provides no trainable module")
        from dmisearch import engine
        from dmisearch.training import train_one
        from dmisearch_builtins.algorithms import SGD, Adam

        ctx = _ctx(task, out_dim, input_shape)
        members = []
        for algo in (SGD(lr=0.05, momentum=0.9, weight_decay=1e-3, steps=6, batch_size=4),
                     Adam(lr=0.01, weight_decay=1e-3, steps=6, batch_size=4)):
            for seed, n in ((0, 8), (1, 12)):
                x, y, xt = _problem(task, input_shape, out_dim, n, 5, seed)
                members.append(engine.Member(component, algo, Job(x, y, xt, seed)))
        fused = engine.train(members, ctx)
        for m, f in zip(members, fused, strict=True):
            ref = train_one(m.algo, m.model, m.job, ctx)
            for what, a, b in (("losses", f.losses, ref.losses), ("test", f.test, ref.test),
                               ("train", f.train, ref.train)):
                gap = _rel(a, b)
                assert gap < self.fused_tolerance, (
                    f"{type(m.algo).__name__}, job of size {m.job.size}: fused {what} differ "
                    f"from the loop by {gap:.2e} (relative)")

    @pytest.mark.parametrize("kernel", ["nngp", "ntk"])
    def test_kernels_are_symmetric_psd_and_consistent(
        self, component: Architecture, input_shape: tuple[int, ...], kernel: str
    ) -> None:
        if kernel not in component.provides or component.capability_problem(kernel):
            pytest.skip(f"'{component.name}' provides no {kernel} kernel with these "
                        "hyperparameters")
        g = torch.Generator().manual_seed(0)
        x1 = torch.randn(6, *input_shape, generator=g, dtype=torch.float64)
        x2 = torch.randn(4, *input_shape, generator=g, dtype=torch.float64)
        k11 = component.kernel(x1, None, kernel)
        k12 = component.kernel(x1, x2, kernel)
        assert k11.dtype == torch.float64 and k11.shape == (6, 6) and k12.shape == (6, 4)
        assert _rel(k11, k11.T) < 1e-12, "k(x, x) is not symmetric"
        eig = torch.linalg.eigvalsh(k11)
        assert float(eig.min()) > -1e-9 * float(eig.abs().max()), "k(x, x) is not PSD"
        both = component.kernel(torch.cat([x1, x2]), None, kernel)
        assert _rel(both[:6, 6:], k12) < 1e-10, "k(x1, x2) disagrees with k([x1, x2])"


class AlgorithmContract(ComponentContract):
    """Contract of an ``Algorithm``."""

    kind = "algorithm"
    #: Relative tolerance of fused training against the loop, float64 (a
    #: ``MinibatchAlgorithm``'s): as ``ArchitectureContract.fused_tolerance``.
    fused_tolerance: ClassVar[float] = 1e-10

    @pytest.fixture
    def model(self) -> Architecture:
        """The architecture the algorithm is checked with (default: a small fcn)."""
        return _default_model()

    @pytest.fixture
    def classes_under_test(self, component: Algorithm, model: Architecture
                           ) -> list[type[Component]]:
        return [type(component), type(model)]

    @pytest.fixture
    def task(self, component: Algorithm) -> str:
        return "regression" if "regression" in component.tasks else "classification"

    @pytest.fixture
    def study_doc(self, component: Algorithm, model: Architecture, task: str
                  ) -> dict[str, Any]:
        data = None
        if task == "classification":
            from dmisearch_builtins.data import Digits

            data = Digits()
        return _study_doc(component, data=data, model=model, algorithm=None)

    def _run(self, component: Algorithm, model: Architecture, task: str,
             specs: list[tuple[int, int]]) -> list[Any]:
        shape, out_dim = (1, 8), (1 if task == "regression" else 3)
        ctx = _ctx(task, out_dim, shape)
        jobs = []
        for seed, n in specs:
            x, y, xt = _problem(task, shape, out_dim, n, 7, 100 + seed)
            jobs.append(Job(x, y, xt, seed))
        return component.fit_predict(model, jobs, ctx)

    def test_can_use_the_model(self, component: Algorithm, model: Architecture) -> None:
        why = component.model_problem(model)
        assert why is None, f"override the `model` fixture: {why}"

    def test_predictions_have_the_right_shapes(self, component: Algorithm,
                                               model: Architecture, task: str) -> None:
        specs = [(0, 8), (1, 8), (0, 16)]
        preds = self._run(component, model, task, specs)
        assert len(preds) == len(specs), "one Predictions per job, in order"
        out_dim = 1 if task == "regression" else 3
        for (_, n), p in zip(specs, preds, strict=True):
            assert p.test.shape == (7, out_dim) and p.train.shape == (n, out_dim)
            assert p.test.dtype == torch.float64, "predictions must keep ctx.dtype"
            assert not p.diverged and torch.isfinite(p.test).all()

    def test_is_deterministic_and_jobs_are_independent(
        self, component: Algorithm, model: Architecture, task: str
    ) -> None:
        together = self._run(component, model, task, [(0, 8), (1, 16), (2, 12)])
        again = self._run(component, model, task, [(0, 8), (1, 16), (2, 12)])
        alone = self._run(component, model, task, [(1, 16)])
        for a, b in zip(together, again, strict=True):
            assert _rel(a.test, b.test) < 1e-12, "two identical calls predicted differently"
        assert _rel(together[1].test, alone[0].test) < 1e-10, (
            "a job's predictions changed when other jobs ran beside it")

    def test_fused_training_equals_the_loop(self, component: Algorithm, model: Architecture,
                                            task: str) -> None:
        from dmisearch import engine
        from dmisearch.training import MinibatchAlgorithm, train_one

        if not isinstance(component, MinibatchAlgorithm):
            pytest.skip(f"'{component.name}' is no MinibatchAlgorithm: the engine never "
                        "trains it")
        shape, out_dim = (1, 8), (1 if task == "regression" else 3)
        ctx = _ctx(task, out_dim, shape)
        other = _per_job_variant(component)
        members = []  # the variant beside the component's first job: one fused program
        for algo, seed, n in ((component, 0, 8), (component, 1, 12), (other, 2, 8)):
            x, y, xt = _problem(task, shape, out_dim, n, 5, 100 + seed)
            members.append(engine.Member(model, algo, Job(x, y, xt, seed)))
        fused = engine.train(members, ctx)
        for m, f in zip(members, fused, strict=True):
            ref = train_one(m.algo, m.model, m.job, ctx)
            for what, a, b in (("losses", f.losses, ref.losses), ("test", f.test, ref.test)):
                gap = _rel(a, b)
                assert gap < self.fused_tolerance, (
                    f"{component.name} ({_changed(component, m.algo)}), job of size "
                    f"{m.job.size}: fused {what} differ from make_optimizer's loop by "
                    f"{gap:.2e} (relative): fused_optimizer must update each job as "
                    "make_optimizer would, with that job's own per_job hyperparameters")


def _per_job_variant(algo: Algorithm) -> Algorithm:
    """``algo`` with each nonzero float ``per_job`` hyperparameter halved, where ``check()``
    accepts it: a job of another trial that the engine fuses with ``algo``'s jobs."""
    params = algo.get_params()
    for name in sorted(getattr(algo, "per_job", ())):
        value = params.get(name)
        if not isinstance(value, float) or value == 0:
            continue
        try:
            type(algo)(**{**params, name: value / 2}).check()
        except ValueError:
            continue
        params[name] = value / 2
    return type(algo)(**params)


def _changed(base: Algorithm, algo: Algorithm) -> str:
    """The hyperparameters of ``algo`` that differ from ``base``'s, as text."""
    a, b = base.get_params(), algo.get_params()
    return ", ".join(f"{k}={v!r}" for k, v in b.items() if a.get(k) != v) or (
        "hyperparameters as given")

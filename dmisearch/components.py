"""The four kinds of components and the small contracts they carry.

A component is a class with a stable ``name`` whose hyperparameters are constructor keywords
with defaults, stored as attributes of the same name (scikit-learn's convention; a
``@dataclass(kw_only=True)`` gives exactly that). ``__init__`` does nothing else, so a
component can be introspected, recorded on a trial, and rebuilt from its parameters.

Each kind adds as few abstract methods as its job allows:

=============== ===================================== ===========================================
kind            must implement                         may declare
=============== ===================================== ===========================================
DataGenerator   ``describe()``, ``sample()``           ``space`` (unused: data is fixed per study)
Transform       ``apply()``                            ``check_input()``, ``matrix()``
Architecture    ``build()``                            ``spatial_dims``, ``provides``,
                                                       ``check_input()``, ``symmetries``,
                                                       ``couple()``
Algorithm       ``fit_predict()``                      ``requires``, ``tasks``,
                                                       ``symmetries``
=============== ===================================== ===========================================

Every kind may declare ``space`` (the default search space of its hyperparameters, as Optuna
distributions keyed by parameter name) and override ``check()`` (raise ``ValueError`` naming
the parameter when a value is invalid). Capabilities are plain class attributes.
"""

from __future__ import annotations

import dataclasses
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:  # torch and Optuna are imported by the components, not at dmisearch import
    import torch
    from optuna.distributions import BaseDistribution

Task = Literal["regression", "classification"]
TASKS: tuple[Task, ...] = ("regression", "classification")

#: Constructor keywords no component may use: the study file reserves them.
RESERVED_PARAMS = frozenset({"name", "transforms"})


class Component(ABC):
    """Base of every component: a stable name, keyword hyperparameters and a search space."""

    #: Stable name used in study files, on trials and in ``dmisearch plugins``.
    name: ClassVar[str]
    #: One of ``data``, ``transform``, ``architecture``, ``algorithm``; set by each base class.
    kind: ClassVar[str]
    #: Default search space: hyperparameter name -> Optuna distribution. Parameters not in it
    #: keep their default value unless a study file searches or fixes them.
    space: ClassVar[Mapping[str, BaseDistribution]] = {}

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        """Hyperparameters (constructor keywords) and their default values, in order."""
        out: dict[str, Any] = {}
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[p.name] = p.default
        return out

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters of this instance: what rebuilds it with ``type(self)(**params)``."""
        return {k: getattr(self, k) for k in self.param_defaults()}

    def check(self) -> None:  # noqa: B027 (an optional hook, deliberately not abstract)
        """Raise ``ValueError`` (message naming the parameter and its value) if invalid.

        Called on every value a study can reach before the first trial runs, so a bad range
        fails in the first second. The default accepts everything.
        """

    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring, for ``dmisearch plugins``."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a data generator produces, known before any sample is drawn."""

    input_shape: tuple[int, ...]  # one sample, e.g. (1, 32) or (1, 8, 8): (channels, *spatial)
    task: Task
    out_dim: int  # number of classes (classification) or target dimension (regression)
    n_available: int | None = None  # finite datasets: samples in all; None: unlimited
    n_test_available: int | None = None  # a fixed test set apart from the n_available ones


@dataclasses.dataclass(frozen=True)
class Split:
    """Training pool and test set drawn for one seed.

    ``x_*`` have shape ``(n, *input_shape)`` and a floating dtype; ``y_*`` are ``(n, out_dim)``
    floats for regression and ``(n,)`` int64 class indices for classification.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device: Any = None, dtype: Any = None) -> Split:
        """Move to a device; cast the inputs (and regression targets) to a floating dtype."""

        def conv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return Split(*(conv(t) for t in dataclasses.astuple(self)))


class DataGenerator(Component):
    """Draws training and test samples of a requested size for a seed.

    The data set a study is about is fixed: the generator's own parameters (a teacher's
    weights, a dataset's preprocessing) do not change between seeds; the seed changes
    which samples are drawn. Finite datasets draw disjoint train and test samples.
    """

    kind = "data"

    @abstractmethod
    def describe(self) -> DataInfo:
        """Input shape, task, output size and (for finite data) how many samples exist."""

    @abstractmethod
    def sample(self, n_train: int, n_test: int, seed: int) -> Split:
        """Draw ``n_train`` training and ``n_test`` test samples, deterministically in ``seed``.

        Must return the same tensors for the same arguments on every call and machine.
        """


class Transform(Component):
    """A group action on inputs: on a generator's data (``digits + permute`` is a data
    generator) or as training-time augmentation (``sgd+shift``).

    As a data transform (``apply``), its fixed parts (a rotation matrix, a permutation)
    depend only on its own parameters (typically ``seed``) and the input shape; random
    parts (a shift drawn per sample) come from the ``generator`` passed in, so results are
    reproducible. As an augmentation (``augment``), it acts on each sample with a random
    element of its group. A transform whose group is finite may enumerate it (``orbit``),
    which kernel algorithms use to average their kernel over the group.
    """

    kind = "transform"

    def check_input(self, input_shape: tuple[int, ...]) -> str | None:
        """Why this transform cannot act on ``input_shape`` (None: it can)."""
        return None

    @abstractmethod
    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Transform a batch ``x`` of shape ``(n, *input_shape)``; returns the same shape."""

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each sample of ``x`` acted on by an independent random element of the group.

        The default is ``apply``, right for transforms that already draw per sample.
        """
        return self.apply(x, generator)

    def orbit(self, x: torch.Tensor) -> torch.Tensor | None:
        """Every group element applied to ``x``: ``(|G|, n, *input_shape)``, identity
        first; None when the group is not finite (the default)."""
        return None

    def matrix(self, d: int, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        """The ``d x d`` matrix ``M`` (float64 unless ``dtype``) when ``apply`` is one fixed
        linear map of inputs flattened to size ``d``: ``apply(x)`` flattened is
        ``x_flat @ M.T`` for every ``x``. None (the default) when it is not: a transform
        drawing per sample (``shift``) or a nonlinear one.

        Architectures use it to couple their first layer to the transform
        (``Architecture.couple``), which the symmetry probe (``dmisearch probe``) relies on.
        """
        return None


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

#: ``f(params, buffers, x) -> out`` over K stacked modules: see ``Architecture.forward_batched``.
BatchedForward = Callable[[Mapping[str, "torch.Tensor"], Mapping[str, "torch.Tensor"],
                           "torch.Tensor"], "torch.Tensor"]


class Architecture(Component):
    """Builds a ``torch.nn.Module`` mapping ``(n, *input_shape)`` to ``(n, out_dim)``."""

    kind = "architecture"

    #: Capabilities algorithms may require: "module" means ``build()`` returns a trainable
    #: ``nn.Module``.
    provides: ClassVar[frozenset[str]] = frozenset({"module"})
    #: Spatial dimensionalities accepted: inputs are ``(C, *spatial)``. None: any shape.
    spatial_dims: ClassVar[frozenset[int] | None] = None
    #: Names of transforms the architecture's random initial network is symmetric under:
    #: ``couple()`` gives, for each, a coupled network that computes at ``g.x`` what the
    #: original computes at ``x``, with parameters distributed as the original's (either
    #: the same network, an invariance, or a map of the first layer's weights). Whether a
    #: trained (model, algorithm) pair keeps the symmetry also depends on the algorithm's
    #: ``Algorithm.symmetries``; ``dmisearch probe --verify`` checks both (docs/probes.md).
    symmetries: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def shape_problem(cls, input_shape: tuple[int, ...]) -> str | None:
        """Why no instance of this class can take ``input_shape`` (None: some can)."""
        if cls.spatial_dims is not None and len(input_shape) - 1 not in cls.spatial_dims:
            dims = " or ".join(f"{d}-D" for d in sorted(cls.spatial_dims))
            return (
                f"architecture '{cls.name}' takes {dims} inputs shaped (channels, *spatial), "
                f"not {tuple(input_shape)}"
            )
        return None

    def check_input(self, input_shape: tuple[int, ...]) -> str | None:
        """Why this architecture, with these hyperparameters, cannot take ``input_shape``."""
        return self.shape_problem(input_shape)

    def capability_problem(self, capability: str) -> str | None:
        """Why this instance lacks a capability its class ``provides`` (e.g. no analytic
        kernel for this activation); None when it has it."""
        return None

    def kernel(self, x1: torch.Tensor, x2: torch.Tensor | None, kind: str) -> torch.Tensor:
        """The infinite-width kernel ``kind`` ("nngp" or "ntk") between ``x1`` (n1, *shape)
        and ``x2`` (n2, *shape; None: x1), as float64 ``(n1, n2)`` on ``x1``'s device.

        Only for classes whose ``provides`` includes ``kind``.
        """
        raise NotImplementedError(f"architecture '{self.name}' has no analytic {kind} kernel")

    def kernel_key(self) -> Any:
        """What the kernel depends on: equal keys, equal kernels (used to cache them)."""
        return (type(self), repr(sorted(self.get_params().items())))

    def couple(self, module: torch.nn.Module, transform: Transform,
               input_shape: tuple[int, ...]) -> torch.nn.Module | None:
        """The module coupled to ``module`` (as ``build`` returned it) under ``transform``.

        A coupling is a module ``c`` with ``c(transform.apply(x)) == module(x)`` for every
        ``x`` (to rounding), whose parameters have, over the random initialisation, the
        same distribution as ``module``'s. Return ``module`` itself when the architecture
        is invariant under the transform (the identity coupling: every algorithm keeps
        it); otherwise a new module (do not modify ``module``), typically with the first
        layer's weights ``W`` replaced by ``W @ M.T`` for an orthogonal ``M`` =
        ``transform.matrix(d)`` (then ``W M^T (M x) = W x``, and i.i.d. Gaussian weights
        keep their distribution); or None (the default) when no coupling is known. Every
        transform named in ``symmetries`` must get a coupling here.
        """
        return None

    @abstractmethod
    def build(self, input_shape: tuple[int, ...], out_dim: int) -> torch.nn.Module:
        """A freshly initialised module, drawing its weights from torch's global RNG.

        The engine seeds that RNG per job; build on the CPU in the default dtype and do not
        move the module: the engine places it.
        """

    def forward_batched(self, module: torch.nn.Module) -> BatchedForward:
        """A function computing K modules shaped like ``module`` at once.

        It is called as ``f(params, buffers, x)`` with ``params`` and ``buffers`` the K
        modules' tensors stacked along a leading axis (``torch.func.stack_module_state``,
        keyed like ``module.named_parameters()``) and ``x`` of shape ``(K, B, *input_shape)``,
        and returns ``(K, B, out_dim)``. Job ``k``'s output must equal ``module`` run with
        the ``k``-th slices, to rounding; ``module.training`` says whether it is training.
        The default vectorises ``functional_call`` with ``torch.func.vmap``, which serves
        any plain ``nn.Module`` (random layers such as dropout draw independently per job,
        so they do not reproduce the loop's draws; buffers must not change in forward);
        override it with a faster batched form where one exists.
        """
        from torch.func import functional_call, vmap

        def one(params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(module, (params, buffers), (x,))

        return vmap(one, randomness="different")


# --------------------------------------------------------------------------------------------
# Algorithms
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """One point of a learning curve: train on ``(x_train, y_train)``, predict ``x_test``.

    ``seed`` drives the job's initialisation and minibatch order.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    seed: int

    @property
    def size(self) -> int:
        return int(self.x_train.shape[0])


@dataclasses.dataclass(frozen=True)
class Predictions:
    """What an algorithm returns per job: raw outputs (logits for classification)."""

    test: torch.Tensor  # (n_test, out_dim)
    train: torch.Tensor  # (n_train, out_dim)
    diverged: bool = False  # the training loss or the predictions became NaN or infinite
    losses: torch.Tensor | None = None  # (steps,) training loss per step, if trained


@dataclasses.dataclass(frozen=True)
class RunContext:
    """Where and how an algorithm runs, fixed for a whole study (or worker)."""

    device: torch.device
    dtype: torch.dtype
    task: Task
    out_dim: int
    input_shape: tuple[int, ...]
    fused: bool = True  # False: algorithms train one model at a time (study engine = "loop")
    cuda_graphs: bool = True  # fused engine on CUDA: replay captured steps (engine.py)


@dataclasses.dataclass(frozen=True)
class Run:
    """One trial's share of a call: its model and algorithm, and its jobs."""

    model: Architecture
    algorithm: Algorithm
    jobs: Sequence[Job]


class Algorithm(Component):
    """Turns an architecture and training sets into predictions on the test sets."""

    kind = "algorithm"

    #: Capabilities the architecture must provide (see ``Architecture.provides``).
    requires: ClassVar[frozenset[str]] = frozenset({"module"})
    #: Tasks this algorithm can learn.
    tasks: ClassVar[frozenset[str]] = frozenset(TASKS)
    #: Set on the classes the study loader composes for ``name+transform`` (e.g.
    #: ``sgd+shift``): train on the orbit of the training set under this transform.
    augmentation: ClassVar[Transform | None] = None
    #: Names of transforms whose couplings (``Architecture.couple``) the algorithm keeps:
    #: trained on ``g.D`` from the coupled initial network, its predictions at ``g.x``
    #: equal those of the run on ``D`` at ``x``, step by step (SGD keeps every orthogonal
    #: map of the first layer, Adam only signed permutations). Identity couplings
    #: (invariant architectures) are kept by every algorithm and need not be listed. A
    #: (model, algorithm) pair is declared equivariant under ``g`` when the model lists
    #: ``g`` and either its coupling is the identity or the algorithm lists ``g``.
    symmetries: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def augmentation_problem(cls, transform: Transform) -> str | None:
        """Why this algorithm cannot be trained with ``transform`` as augmentation."""
        return f"algorithm '{cls.name}' does not support augmentation"

    def model_problem(self, model: Architecture) -> str | None:
        """Why this algorithm, with these hyperparameters, cannot use ``model`` (None: it
        can). Checked before the study runs at every extreme of both search spaces. The
        default asks the model about each required capability."""
        for capability in sorted(self.requires):
            why = model.capability_problem(capability)
            if why:
                return why
        return None

    @abstractmethod
    def fit_predict(
        self, model: Architecture, jobs: Sequence[Job], ctx: RunContext
    ) -> list[Predictions]:
        """Train (or solve) one model per job; return predictions in the order of ``jobs``.

        Receives every job of one curve stage at once so that it can run them side by
        side. Tensors arrive on ``ctx.device`` in ``ctx.dtype``.
        """

    @classmethod
    def fit_predict_runs(cls, runs: Sequence[Run], ctx: RunContext) -> list[list[Predictions]]:
        """Several trials' runs at once (all with algorithms of this class).

        Returns each run's predictions, in order. The default calls each run's
        ``fit_predict`` in turn; an algorithm that can train different trials' jobs
        together (``MinibatchAlgorithm``) overrides it.
        """
        return [r.algorithm.fit_predict(r.model, r.jobs, ctx) for r in runs]


def augmented(base: type[Algorithm], transform: Transform) -> type[Algorithm]:
    """``base`` trained on the orbit of its training sets under ``transform``: the class
    behind a study file's ``sgd+shift``. Same hyperparameters, name ``base+transform``."""
    name = f"{base.name}+{transform.name}"
    return type(f"{base.__name__}Augmented", (base,), {
        "name": name,
        "augmentation": transform,
        "__module__": base.__module__,
        "__qualname__": f"{base.__qualname__}Augmented",
        "__doc__": f"{base.summary()} Augmented by '{transform.name}': {transform.summary()}",
    })


BASES: dict[str, type[Component]] = {
    "data": DataGenerator,
    "transform": Transform,
    "architecture": Architecture,
    "algorithm": Algorithm,
}


def capability_problem(arch: type[Architecture], algo: type[Algorithm]) -> str | None:
    """Why ``algo`` can never use ``arch``: a required capability the class lacks."""
    missing = algo.requires - arch.provides
    if missing:
        return (
            f"algorithm '{algo.name}' needs {sorted(missing)} which architecture "
            f"'{arch.name}' does not provide (it provides {sorted(arch.provides)})"
        )
    return None


def pair_problem(
    arch: type[Architecture], algo: type[Algorithm], info: DataInfo
) -> str | None:
    """Why (architecture, algorithm) cannot run on data described by ``info`` (None: it can)."""
    missing = capability_problem(arch, algo)
    if missing:
        return missing
    if info.task not in algo.tasks:
        return f"algorithm '{algo.name}' cannot learn {info.task} (only {sorted(algo.tasks)})"
    if algo.augmentation is not None:
        why = algo.augmentation.check_input(info.input_shape)
        if why:
            return f"augmentation '{algo.augmentation.name}': {why}"
    return arch.shape_problem(info.input_shape)

"""A conformance kit for plugin authors: pytest contract classes and fixtures.

Subclass the contract of your component's kind and override one fixture, ``component``,
returning an instance (with small hyperparameters, so the checks take seconds)::

    from dmisearch.testing import ArchitectureContract

    class TestMyNet(ArchitectureContract):
        @pytest.fixture
        def component(self):
            return MyNet(width=8)

Every ``test_*`` method of the contract then runs against it. What each contract checks:

``ComponentContract`` (every kind)
    the class registers cleanly (name, keyword hyperparameters with defaults, search space
    naming constructor keywords); it has a one-line summary; ``get_params`` rebuilds an
    equal component; every corner of the search space and a few random points round-trip
    through Optuna (suggested, constructed, read back, ``check()`` passes); a one-trial
    study using the component completes on the CPU.
``DataGeneratorContract``
    ``describe()`` is well-formed; ``sample()`` matches it (shapes, dtypes, label range,
    finite values); the same seed gives the same samples whatever torch's global RNG holds,
    another seed other samples.
``TransformContract``
    accepts ``input_shape``; ``apply`` and ``augment`` keep shape and dtype, do not modify
    their input and are deterministic in the generator; a finite ``orbit`` starts with the
    identity and contains every augmented sample.
``ArchitectureContract``
    ``build`` maps ``(n, *input_shape)`` to ``(n, out_dim)``, on the CPU in the default
    dtype, deterministically in torch's seed; ``forward_batched`` equals the module run job
    by job; the fused engine trains it exactly like the one-model-at-a-time loop with SGD
    (momentum, weight decay) and Adam (float64, relative ``fused_tolerance``); analytic
    kernels it provides are symmetric, positive semi-definite and consistent by blocks.
``AlgorithmContract``
    ``fit_predict`` returns one finite prediction of the right shape per job, the same on a
    second call, and the same for a job whether it runs alone or with others; for a
    ``MinibatchAlgorithm``, the fused engine trains it exactly like the loop with its
    ``make_optimizer``, jobs with other values of its ``per_job`` hyperparameters in the
    same program (float64, relative ``fused_tolerance``).

Fixtures you may override besides ``component``: ``input_shape`` and ``out_dim``
(architectures, transforms), ``model`` and ``task`` (algorithms), ``study_doc`` (the
one-trial study, as a dict shaped like a study file).

Module-level fixtures, for ``pytest_plugins = ["dmisearch.testing"]`` in a ``conftest.py``:
``register_plugin`` (register plugin objects until the test ends) and ``plugin_registry``.
:func:`make_plugin` turns component classes into a plugin object.

The kit is a package: ``registration`` (plugins for a test, the fixtures), ``contracts``
(every kind, data generators, transforms), ``learners`` (architectures, algorithms) and
``support`` (the problems and the one-trial study the contracts use). Import its names
from ``dmisearch.testing``.
"""

from __future__ import annotations

try:
    import pytest  # noqa: F401 (the contracts are pytest classes)
except ImportError as exc:  # pytest is in the [test] extras, not a dependency of dmisearch
    raise ImportError(
        "dmisearch.testing (the conformance kit) runs under pytest, which is not installed: "
        "pip install pytest (a plugin package lists it in its [test] extra: "
        "pip install -e \".[test]\"; dmisearch's own tests: pip install \"dmisearch[test]\")"
    ) from exc

from dmisearch.testing.contracts import (
    SPACE_SAMPLES,  # noqa: F401 (importable from here, as before the split)
    ComponentContract,
    DataGeneratorContract,
    TransformContract,
)
from dmisearch.testing.learners import AlgorithmContract, ArchitectureContract
from dmisearch.testing.registration import (
    make_plugin,
    plugin_registry,
    register_plugin,
    registry_with,
)
from dmisearch.testing.support import _study_doc  # noqa: F401 (the smoke study, for tests)

__all__ = [
    "AlgorithmContract",
    "ArchitectureContract",
    "ComponentContract",
    "DataGeneratorContract",
    "TransformContract",
    "make_plugin",
    "plugin_registry",
    "register_plugin",
    "registry_with",
]

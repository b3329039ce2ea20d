"""Symmetry probes: is a (model, algorithm) pair equivariant under a group acting on the data?

"Equivariant under g": training on ``g.D`` and predicting at ``g.x`` gives the same
distribution of predictions (over the random initialisation and minibatch order) as training
on ``D`` and predicting at ``x``. The probe draws one data set ``D`` (the training pool and
the test inputs), acts on it with the transform ``g`` (train and test inputs alike; targets
unchanged), trains the pair on both through the algorithm's own ``fit_predict`` (the fused
engine for minibatch algorithms) and compares the test predictions:

* **deterministic** algorithms (their predictions on ``D`` do not depend on the seed, e.g.
  kernel regression): the prediction at ``g.x`` must equal the prediction at ``x``;
* **coupled** runs, where the architecture couples to ``g`` (``Architecture.couple``): the
  run on ``g.D`` starts from the coupled network (e.g. first layer ``W0 M^T`` for an
  orthogonal ``M``) with the same seed as the run on ``D`` from ``W0``. Because the coupled
  initialisation has the distribution of the original, equal predictions per seed prove
  equivariance in distribution. The identity coupling (an invariant architecture) is the
  special case ``invariant``;
* otherwise, or when the coupling breaks during training, a **statistical** test: the test
  predictions of ``S`` seeds on ``D`` and of ``S`` other seeds on ``g.D`` are compared with
  a permutation test on the energy distance between the two samples of prediction vectors.
  When it does not reject and the data is the probe's own (``Settings.witness``), a
  **witness search** follows (:mod:`dmisearch.probe.witness`): a pilot picks the candidate
  data on which the difference shows most (e.g. strongly anisotropic inputs, for Adam under
  a rotation) and a second test runs there on fresh seeds. Each test then gets ``alpha / 2``
  (Bonferroni), so the procedure's false-positive rate stays within ``alpha``.

Verdicts: ``equivariant`` only from an exact comparison (relative gap within the tolerance
of the dtype); ``not equivariant`` from an exact comparison of a deterministic algorithm
beyond the tolerance, or when a statistical test rejects at its level; ``inconclusive``
otherwise (a test that does not reject proves nothing: the cell says about how many seeds
would settle it), and when a run diverged. Declared symmetries (``Architecture.symmetries``,
``Algorithm.symmetries``) are checked by :func:`verify`. The user guide is docs/probes.md.

The modules: :mod:`~dmisearch.probe.settings` (settings and defaults, without torch),
:mod:`~dmisearch.probe.statistics` (cells, verdicts, the energy test),
:mod:`~dmisearch.probe.couplings` (couplings and declarations),
:mod:`~dmisearch.probe.witness` (witness data and the test's power),
:mod:`~dmisearch.probe.prober` (:class:`Prober`, :func:`probe_all`),
:mod:`~dmisearch.probe.building` (components from names),
:mod:`~dmisearch.probe.verification` (:func:`verify`), :mod:`~dmisearch.probe.formatting`
(text output) and :mod:`~dmisearch.probe.command` (``dmisearch probe``; its parser is in
:mod:`dmisearch.cli.parser`). This package exports their public names, each imported on
first use: importing :mod:`~dmisearch.probe.settings` (as ``dmisearch --help`` does)
imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: The names this package exports, by the module that defines them.
EXPORTS: dict[str, tuple[str, ...]] = {
    "settings": ("DEFAULT_DATA", "FALLBACK_SHAPES", "PILOT_SEEDS", "PROBE_DEFAULTS",
                 "TOLERANCES", "Settings", "min_p_value"),
    "statistics": ("DTYPES", "EQUIVARIANT", "INCONCLUSIVE", "NOT_APPLICABLE",
                   "NOT_EQUIVARIANT", "VERDICTS", "Cell", "decide", "energy_test",
                   "relative_gap"),
    "couplings": ("coupled", "coupling_kind", "declares", "default_dtype"),
    "building": ("data_for", "instantiate", "label", "make_algorithm", "make_data",
                 "make_group", "make_model", "parse_overrides"),
    "prober": ("Prober", "probe_all"),
    "verification": ("LAW_SEEDS", "Finding", "verify"),
    "formatting": ("LEGEND", "SHORT", "format_cell", "format_findings", "format_table",
                   "short"),
    "command": ("cmd_probe",),
}
_HOME = {name: module for module, names in EXPORTS.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    """An exported name, imported from its module on first use."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})

"""``probe --verify``: check the symmetries the registered components declare
(``Architecture.symmetries``, ``Algorithm.symmetries``) against measurements
(:func:`verify`), one :class:`Finding` per declaration checked."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from dmisearch.components import Algorithm, Architecture, Transform
from dmisearch.errors import did_you_mean
from dmisearch.probe.building import data_for, label, make_algorithm, make_group, make_model
from dmisearch.probe.couplings import coupled, coupling_kind, declares, default_dtype
from dmisearch.probe.prober import Prober
from dmisearch.probe.settings import Settings
from dmisearch.probe.statistics import (
    EQUIVARIANT,
    NOT_APPLICABLE,
    NOT_EQUIVARIANT,
    Cell,
    energy_test,
    relative_gap,
)
from dmisearch.seeding import derive_seed

#: At least this many initial networks per side test that a coupling keeps the distribution.
LAW_SEEDS = 32


@dataclasses.dataclass
class Finding:
    """One checked declaration."""

    status: str  # ok | false | unconfirmed | skipped
    subject: str  # "architecture 'fcn'", "algorithm 'adam'", "fcn / sgd"
    group: str
    detail: str
    cell: Cell | None = None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["cell"] = self.cell.to_json() if self.cell else None
        return out


def verify(registry: Any, settings: Settings | None = None, *,
           models: Sequence[str] | None = None, algorithms: Sequence[str] | None = None,
           groups: Sequence[str] | None = None, progress: Any = None) -> list[Finding]:
    """Check every declared symmetry of the registered architectures and algorithms (or
    those named); a ``false`` finding is a declaration the measurements refute.

    1. Every name in a ``symmetries`` must be a registered transform.
    2. An architecture's declaration of ``g``: ``couple()`` gives a coupling; the coupled
       initial network at ``g.x`` equals the original at ``x`` (per seed, to the tolerance);
       and its outputs at ``x`` are distributed like the original's (statistical test).
    3. Each pair the declarations make equivariant (:func:`declares`) is probed: ``false``
       when it is not equivariant, or when its coupling breaks in training (the algorithm
       does not keep it, or the invariance does not hold); ``unconfirmed`` when
       inconclusive. Algorithm declarations that no architecture couples to are reported
       as ``skipped``.
    """
    check = _Verification(registry, settings or Settings(), models, algorithms, groups,
                          progress)
    check.names()
    check.architectures()
    check.pairs()
    check.unexercised()
    return check.findings


class _Verification:
    """One run of :func:`verify`: the names to check, a prober per probe data set, and the
    findings so far (each reported to ``progress`` as it comes)."""

    def __init__(self, registry: Any, settings: Settings, models: Sequence[str] | None,
                 algorithms: Sequence[str] | None, groups: Sequence[str] | None,
                 progress: Any):
        self.registry, self.settings, self.progress = registry, settings, progress
        self.findings: list[Finding] = []
        self.known = set(registry.names("transform"))
        self.model_names = list(models or registry.names("architecture"))
        self.algo_names = list(algorithms or registry.names("algorithm"))
        self.group_names = [g for g in (groups or sorted(self.known)) if g in self.known]
        self.probers: dict[str, Prober] = {}
        self.exercised: set[tuple[str, str]] = set()  # (algorithm, transform) probed

    def note(self, f: Finding) -> None:
        self.findings.append(f)
        if self.progress is not None:
            self.progress(f)

    def prober_for(self, model: Architecture, algo: Algorithm | None) -> Prober | None:
        """A prober on the first probe data the model (and algorithm) can take."""
        data = data_for(self.registry, model, algo)
        if data is None:
            return None
        key = label(data)
        if key not in self.probers:
            self.probers[key] = Prober(data, self.settings)
        return self.probers[key]

    def names(self) -> None:
        """1. Every declared symmetry names a registered transform."""
        for kind, names in (("architecture", self.model_names),
                            ("algorithm", self.algo_names)):
            for name in names:
                cls = self.registry.get(kind, name.partition("+")[0])
                for g in sorted(set(cls.symmetries) - self.known):
                    self.note(Finding("false", f"{kind} '{name}'", g,
                                      "names no registered transform"
                                      + did_you_mean(g, self.known)))

    def architectures(self) -> None:
        """2. Each architecture's declared couplings, on its initial networks."""
        for m_name in self.model_names:
            model = make_model(self.registry, m_name)
            for g_name in sorted(set(type(model).symmetries) & set(self.group_names)):
                g = make_group(self.registry, g_name)
                prober = self.prober_for(model, None)
                if prober is None or g.check_input(tuple(prober.info.input_shape)):
                    self.note(Finding("skipped", f"architecture '{m_name}'", g_name,
                                      "no probe data fits both the architecture and the "
                                      "transform"))
                    continue
                self.note(_check_architecture(model, g, prober))

    def pairs(self) -> None:
        """3. Each pair the declarations make equivariant, probed."""
        for m_name in self.model_names:
            model = make_model(self.registry, m_name)
            for a_name in self.algo_names:
                algo = make_algorithm(self.registry, a_name)
                for g_name in self.group_names:
                    g = make_group(self.registry, g_name)
                    if g_name in type(model).symmetries:
                        self.pair(model, algo, g, a_name, g_name)

    def pair(self, model: Architecture, algo: Algorithm, g: Transform, a_name: str,
             g_name: str) -> None:
        prober = self.prober_for(model, algo)
        if prober is None or prober.problem(model, algo, g):
            return
        kind = coupling_kind(model, g, prober.info, prober.dtype)
        if not declares(model, algo, g, kind):
            return
        self.exercised.add((a_name, g_name))
        cell = prober.try_probe(model, algo, g)
        self.note(_pair_finding(cell, kind))

    def unexercised(self) -> None:
        """Algorithm declarations that no probed pair exercised: skipped."""
        for a_name in self.algo_names:
            cls = self.registry.get("algorithm", a_name.partition("+")[0])
            for g_name in sorted(set(cls.symmetries) & set(self.group_names)):
                if (a_name, g_name) not in self.exercised:
                    self.note(Finding("skipped", f"algorithm '{a_name}'", g_name,
                                      "no registered architecture couples to it: nothing to "
                                      "check"))


def _check_architecture(model: Architecture, g: Transform, prober: Prober) -> Finding:
    """An architecture's declaration of ``g``: a coupling exists, its initial network at
    ``g.x`` computes the original's at ``x``, and is distributed like the original."""
    subject = f"architecture '{model.name}'"
    s = prober.settings
    x = prober.split.x_test
    gx = prober.transformed(g).x_test
    try:
        kind = coupling_kind(model, g, prober.info, prober.dtype)
    except Exception as exc:
        return Finding("false", subject, g.name,
                       f"couple() raised {type(exc).__name__}: {exc}")
    if kind is None:
        return Finding("false", subject, g.name,
                       "declared, but couple() gives no coupling for it")
    gaps, orig, moved = _initial_networks(model, g, prober, x, gx)
    gap = max(gaps)
    if not gap <= s.tol:
        return Finding("false", subject, g.name,
                       f"the coupled initial network at g.x differs from the original at x: "
                       f"relative gap {gap:.1e} > {s.tol:.0e}")
    if kind == "identity":
        return Finding("ok", subject, g.name,
                       f"invariant: the network at g.x equals it at x (gap {gap:.1e})")
    _, p = energy_test(torch.stack(orig).cpu().numpy(), torch.stack(moved).cpu().numpy(),
                       resamples=s.resamples, seed=derive_seed("probe", "law", s.data_seed))
    if p < s.alpha:
        return Finding("false", subject, g.name,
                       f"the coupled initial network computes the original exactly (gap "
                       f"{gap:.1e}) but is distributed differently (p = {p:.1e} < {s.alpha:g})")
    return Finding("ok", subject, g.name,
                   f"coupled initial network at g.x equals the original at x (gap {gap:.1e}); "
                   f"same distribution not rejected (p = {p:.2g})")


def _initial_networks(model: Architecture, g: Transform, prober: Prober, x: torch.Tensor,
                      gx: torch.Tensor
                      ) -> tuple[list[float], list[torch.Tensor], list[torch.Tensor]]:
    """Initial networks, original and coupled, built from the same seeds: the per-seed gaps
    between the coupled one at ``g.x`` and the original at ``x``, the original's outputs at
    ``x``, and the coupled one's at ``x`` on other seeds (independent samples)."""
    shape, out_dim = tuple(prober.info.input_shape), prober.info.out_dim
    cm = coupled(model, g)
    gaps, orig, moved = [], [], []
    n_law = max(4 * prober.settings.seeds, LAW_SEEDS)  # networks per side: cheap to build
    with torch.no_grad(), default_dtype(prober.dtype):
        for seed in range(2 * n_law):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "init"))
                net = model.build(shape, out_dim).to(prober.device).eval()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "init"))
                cnet = cm.build(shape, out_dim).to(prober.device).eval()
            if seed < n_law:
                gaps.append(relative_gap(net(x), cnet(gx)))
                orig.append(net(x))
            else:  # other seeds: the two samples must be independent
                moved.append(cnet(x))
    return gaps, orig, moved


def _pair_finding(cell: Cell, kind: str | None) -> Finding:
    """The finding of a probed pair its declarations make equivariant."""
    subject = f"{cell.model} / {cell.algorithm}"
    summary = f"{cell.verdict} ({cell.method}): {cell.reason}"
    if cell.verdict == EQUIVARIANT:
        return Finding("ok", subject, cell.group, summary, cell)
    if cell.verdict == NOT_APPLICABLE:
        return Finding("unconfirmed", subject, cell.group, cell.reason, cell)
    if cell.verdict == NOT_EQUIVARIANT or cell.coupling_broke:
        if kind == "identity":
            blame = f"architecture '{cell.model}' is not invariant under it"
        else:
            blame = (f"algorithm '{cell.algorithm}' does not keep the coupling of "
                     f"'{cell.model}'")
        return Finding("false", subject, cell.group, f"{blame}; {summary}", cell)
    return Finding("unconfirmed", subject, cell.group, summary, cell)

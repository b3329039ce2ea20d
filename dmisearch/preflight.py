"""Checks run before the first trial: a study fails in its first second, not at trial 37.

:func:`check_architectures` runs each searched architecture once on two samples of the
study's data, forward and backward, on the study's device and in its dtype, so that a
module returning the wrong shape, or one with a parameter that no gradient reaches, is
named before any trial instead of failing every trial with a message from deep inside
torch. It costs a module build and a forward and backward pass on two samples per
architecture: milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dmisearch.components import Architecture, RunContext
from dmisearch.errors import PreflightError
from dmisearch.space import corners
from dmisearch.study_file import Candidate, StudySpec
from dmisearch.training import MinibatchAlgorithm, build_module

#: Samples each architecture runs on.
SAMPLES = 2


def check_architectures(spec: StudySpec, ctx: RunContext) -> None:
    """Raise :class:`PreflightError` listing every searched architecture that, built at the
    first value of each dimension of its space, does not map ``SAMPLES`` inputs to
    ``(SAMPLES, out_dim)``, or (where an algorithm it is paired with trains every
    parameter, as a ``MinibatchAlgorithm`` does) has a parameter the output's gradient
    does not reach. Architectures whose algorithms never build their module (kernel
    regression) are not run."""
    x = spec.data.sample(SAMPLES, SAMPLES, 0).to(ctx.device, ctx.dtype).x_train
    problems = []
    for name, candidate in spec.models.items():
        algorithms = [spec.algorithms[a].cls for m, a in spec.pairs if m == name]
        if not any("module" in a.requires for a in algorithms):
            continue
        trained = any(issubclass(a, MinibatchAlgorithm) for a in algorithms)
        why = _problem(candidate, x, ctx, trained)
        if why:
            problems.append(why)
    if problems:
        raise PreflightError(spec.source, problems)


def _problem(candidate: Candidate, x: torch.Tensor, ctx: RunContext,
             trained: bool) -> str | None:
    """What goes wrong running ``candidate``'s first configuration on ``x`` (None: nothing)."""
    params = next(corners(candidate.space))
    model = candidate.cls(**params)
    assert isinstance(model, Architecture)
    shown = params or model.get_params()  # what the study sets, else every default
    label = f"architecture '{candidate.entry.name}' ({_text(shown)})"
    expected = (len(x), ctx.out_dim)
    # torch's RNGs as they were: dropout in this forward must not shift the trials' draws
    with torch.random.fork_rng(devices=_cuda_devices(ctx.device)):
        try:
            module = build_module(model, 0, ctx)
            out = module(x)
            if trained and _shape(out) == expected and out.requires_grad:
                out.sum().backward()
        except Exception as exc:  # noqa: BLE001 - any failure of the plugin's code is the finding
            first = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return (f"{label}: built and run forward and backward on {len(x)} samples of "
                    f"shape {tuple(ctx.input_shape)}, it raised {first}; fix build() or the "
                    "module's forward()")
    if _shape(out) != expected:
        return (f"{label}: build() returned a module whose output is {_shape(out)}, expected "
                f"{expected} ({len(x)} samples, out_dim {ctx.out_dim} of the data); make its "
                "last layer output out_dim values per sample")
    return _gradient_problem(label, module) if trained else None


def _gradient_problem(label: str, module: torch.nn.Module) -> str | None:
    """Why training cannot reach every parameter of ``module`` after one backward pass."""
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not trainable:
        return (f"{label}: the module has no parameters to train; give it some, or pair the "
                "architecture only with algorithms that do not train (kernel regression)")
    missing = [n for n, p in trainable if p.grad is None]
    if not missing:
        return None
    noun, verb = ("parameter", "gets") if len(missing) == 1 else ("parameters", "get")
    return (f"{label}: {noun} {', '.join(missing)} {verb} no gradient from the output, so "
            "training never changes them; use them in forward() or remove them")


def _shape(out: Any) -> tuple[int, ...] | str:
    return tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__


def _text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "no hyperparameters"


def _cuda_devices(device: torch.device) -> list[int]:
    """The CUDA device whose generator a forward on ``device`` may draw from."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]

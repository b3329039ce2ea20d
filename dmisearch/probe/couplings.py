"""Couplings and declarations: how an architecture couples to a transform
(:func:`coupling_kind`, :func:`coupled`), and whether the components' declared symmetries
make a pair equivariant (:func:`declares`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from dmisearch.components import Algorithm, Architecture, DataInfo, Transform
from dmisearch.seeding import derive_seed


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build modules in ``dtype``: a float64 coupling is then exact, not float32-rounded."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def coupling_kind(model: Architecture, transform: Transform, info: DataInfo,
                  dtype: torch.dtype = torch.float64) -> str | None:
    """``identity`` (the model is invariant), ``map`` (a coupled network), or None (no
    coupling known), from one network built for ``info``'s input shape."""
    shape = tuple(info.input_shape)
    with torch.random.fork_rng(devices=[]), default_dtype(dtype):
        torch.manual_seed(derive_seed("probe", "coupling"))
        module = model.build(shape, info.out_dim)
        out = model.couple(module, transform, shape)
    if out is None:
        return None
    return "identity" if out is module else "map"


def coupled(model: Architecture, transform: Transform) -> Architecture:
    """``model`` whose ``build()`` returns the network coupled under ``transform``: the
    module built as usual (from the RNG the engine seeded per job), then ``couple``d.
    Same name and hyperparameters, so the engine trains it like ``model``."""
    base = type(model)

    def build(self: Architecture, input_shape: tuple[int, ...], out_dim: int
              ) -> torch.nn.Module:
        module = base.build(self, input_shape, out_dim)
        out = self.couple(module, transform, tuple(input_shape))
        if out is None:
            raise RuntimeError(f"architecture '{base.name}' gave no coupling under "
                               f"'{transform.name}'")
        return out

    cls = type(f"{base.__name__}Coupled", (base,), {
        "build": build,
        "__module__": base.__module__,
        "__qualname__": f"{base.__qualname__}Coupled",
        "__doc__": f"{base.summary()} Coupled under '{transform.name}'.",
    })
    return cls(**model.get_params())


def declares(model: Architecture, algo: Algorithm, transform: Transform,
             kind: str | None) -> bool:
    """Whether the components' declarations make the pair equivariant under ``transform``.

    The rule: the architecture lists the transform (it couples to it) and either its
    coupling is the identity (kept by every algorithm) or the algorithm lists the transform
    too (it keeps that coupling). ``kind`` is :func:`coupling_kind`'s answer.
    """
    name = transform.name
    return name in type(model).symmetries and (
        kind == "identity" or name in type(algo).symmetries)

"""Data as a study sees it: a generator composed with transforms, drawn once per seed.

Learning-curve design (documented in docs/study-files.md):

* For each curve seed ``s`` the generator draws one training pool of ``max(sizes)`` samples
  and one test set of ``test_size`` samples, seeded by ``derive_seed("data", s)``.
* The training set of size ``n`` is the first ``n`` samples of that pool: sizes are nested,
  so a curve's shape is not blurred by resampling, and every trial of a study sees the same
  samples for a given seed (triplets are compared on identical data).
* Transforms act on train and test inputs alike, after drawing; their fixed parts (a
  rotation, a permutation) depend on their own parameters, their random parts on the seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from dmisearch.components import DataGenerator, DataInfo, Split, Transform
from dmisearch.seeding import derive_seed


@dataclasses.dataclass(kw_only=True)
class Composed(DataGenerator):
    """A data generator followed by transforms of its inputs: ``digits + permute``.

    Built by the study loader; not registered under a name of its own.
    """

    name = "composed"
    base: DataGenerator | None = None
    transforms: tuple[Transform, ...] = ()

    @property
    def label(self) -> str:
        assert self.base is not None
        return "+".join([self.base.name, *(t.name for t in self.transforms)])

    def describe(self) -> DataInfo:
        assert self.base is not None
        return self.base.describe()

    def sample(self, n_train: int, n_test: int, seed: int) -> Split:
        assert self.base is not None
        split = self.base.sample(n_train, n_test, seed)
        x_train, x_test = split.x_train, split.x_test
        for i, t in enumerate(self.transforms):
            g_train = torch.Generator().manual_seed(derive_seed(seed, i, t.name, "train"))
            g_test = torch.Generator().manual_seed(derive_seed(seed, i, t.name, "test"))
            x_train = t.apply(x_train, g_train)
            x_test = t.apply(x_test, g_test)
        return dataclasses.replace(split, x_train=x_train, x_test=x_test)

    def record(self) -> dict[str, Any]:
        """JSON-ready description: what a trial stores about its data."""
        assert self.base is not None
        return {
            "name": self.base.name,
            "params": jsonable(self.base.get_params()),
            "transforms": [{"name": t.name, "params": jsonable(t.get_params())}
                           for t in self.transforms],
            "label": self.label,
        }


def jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def draw_splits(
    data: DataGenerator, max_size: int, test_size: int, seeds: Sequence[int]
) -> dict[int, Split]:
    """One training pool and test set per curve seed (see module docstring)."""
    return {s: data.sample(max_size, test_size, derive_seed("data", s)) for s in seeds}


def check_split(split: Split, info: DataInfo, n_train: int, n_test: int) -> str | None:
    """Why a generator's output does not match what it described (None: it does)."""
    want_x = (n_train, *info.input_shape)
    if tuple(split.x_train.shape) != want_x or tuple(split.x_test.shape) != (
        n_test, *info.input_shape
    ):
        return (
            f"sample() returned inputs of shape {tuple(split.x_train.shape)} / "
            f"{tuple(split.x_test.shape)}, but describe() promised (n, *{info.input_shape})"
        )
    if not split.x_train.is_floating_point():
        return f"sample() returned inputs of dtype {split.x_train.dtype}; expected a float dtype"
    if info.task == "classification":
        for y in (split.y_train, split.y_test):
            if y.dtype != torch.int64 or y.ndim != 1:
                return (
                    f"classification targets must be int64 of shape (n,), got {y.dtype} "
                    f"{tuple(y.shape)}"
                )
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.out_dim):
                return f"class labels must lie in [0, {info.out_dim}), got {int(y.max())}"
    else:
        for y, n in ((split.y_train, n_train), (split.y_test, n_test)):
            if tuple(y.shape) != (n, info.out_dim) or not y.is_floating_point():
                return (
                    f"regression targets must be floats of shape (n, {info.out_dim}), "
                    f"got {y.dtype} {tuple(y.shape)}"
                )
    for t in (split.x_train, split.x_test, split.y_train, split.y_test):
        if t.is_floating_point() and not torch.isfinite(t).all():
            return "sample() returned NaN or infinite values"
    return None

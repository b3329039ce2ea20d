"""A user's data set from a file: ``.npz`` arrays or a ``.csv`` / ``.parquet`` table.

Reading rules (also in ``FileData``'s docstring, which ``dmisearch plugins`` shows):

* ``.npz``: the inputs are the array named ``x_key`` (default ``X``), one row per sample,
  shaped ``(n, d)`` or ``(n, C, L)`` / ``(n, C, H, W)``; the targets the array ``y_key``
  (default ``y``), shaped ``(n,)`` or ``(n, k)``. Arrays are loaded without pickle, so
  Python-object arrays are refused.
* ``.csv`` / ``.parquet`` (read with pandas; parquet needs ``pyarrow``): one row per sample;
  the column ``target`` holds the targets and the columns ``features`` (default: all other
  columns, in file order) the inputs, which must be numeric (booleans count as 0/1).

Files are read lazily, on the first ``check()``, ``describe()`` or ``sample()``, and kept in
memory per (absolute path, modification time, size) of both files and the parameters, so an
edited file is read again. Every problem with a file is a ``ValueError`` naming the file,
what is wrong and how to fix it, raised by ``check()``: the study loader reports it before
any trial runs. Reading one file is ``file_reading``'s; this module makes the data set.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import numpy as np
import torch

from dmisearch.components import DataGenerator, DataInfo, Split
from dmisearch.seeding import derive_seed
from dmisearch_builtins.checks import check_count
from dmisearch_builtins.file_reading import Raw, file_stamp, read

TASK_CHOICES = ("auto", "regression", "classification")
#: ``task = "auto"`` treats integer-valued numeric targets with at most this many distinct
#: values as class labels.
MAX_AUTO_CLASSES = 50


# --------------------------------------------------------------------------------------------
# the data set: train file (+ test file), task, classes, standardisation
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Dataset:
    x: np.ndarray  # (N, *input_shape) float32, read-only
    y: np.ndarray  # (N,) int64 or (N, out_dim) float32, read-only
    x_test: np.ndarray | None  # the fixed test file, in file order
    y_test: np.ndarray | None
    info: DataInfo
    classes: tuple | None  # classification: the label of each class index


def _examples(values: np.ndarray, limit: int = 3) -> str:
    return ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in values[:limit])


def _task(fd: FileData, raws: list[Raw], where: str) -> str:
    """The task: ``fd.task``, or for ``auto`` inferred from the targets of all files."""
    train = raws[0]
    if fd.task == "regression":
        if train.text:
            raise ValueError(
                f"{where}: task = \"regression\" needs numeric targets, but {train.y_name!r} "
                f"holds text labels such as {_examples(np.unique(train.y))}; use task = "
                f"\"classification\" (or \"auto\")"
            )
        return "regression"
    if train.text:
        return "classification"
    multi = any(r.y.ndim == 2 and r.y.shape[1] > 1 for r in raws)
    values = np.concatenate([r.y.ravel() for r in raws])
    fractional = values != np.round(values)
    if fd.task == "classification":
        if multi:
            raise ValueError(
                f"{where}: task = \"classification\" needs one label per row, but "
                f"{train.y_name!r} has shape {train.y.shape}; use task = \"regression\""
            )
        if fractional.any():
            raise ValueError(
                f"{where}: task = \"classification\" needs integer (or text) labels, but "
                f"{int(fractional.sum())} targets are not integers, such as "
                f"{_examples(values[fractional])}; use task = \"regression\" or round them"
            )
        return "classification"
    if multi or fractional.any() or len(np.unique(values)) > MAX_AUTO_CLASSES:
        return "regression"
    return "classification"


@functools.lru_cache(maxsize=4)
def _load(key: tuple, stamp: tuple, test_stamp: tuple | None) -> _Dataset:
    """Read, validate and prepare the files; cached per parameters and file stamps."""
    fd = FileData(**dict(key))
    where = f"file {fd.path!r}"
    raws = _read_files(fd, stamp, test_stamp, where)
    train = raws[0]
    test = raws[1] if len(raws) > 1 else None
    shape = _input_shape(fd, train, where)
    task = _task(fd, raws, where)
    classes = None
    if task == "classification":
        ys, out_dim, classes = _class_targets(raws, where)
    else:
        ys = _regression_targets(fd, raws, where)
        out_dim = ys[0].shape[1]
    xs = _inputs(fd, raws, shape)
    for a in (*xs, *ys):
        a.setflags(write=False)
    info = DataInfo(input_shape=tuple(int(s) for s in shape), task=task,  # type: ignore[arg-type]
                    out_dim=int(out_dim), n_available=len(train.x),
                    n_test_available=None if test is None else len(test.x))
    return _Dataset(
        x=xs[0], y=ys[0],
        x_test=xs[1] if test is not None else None,
        y_test=ys[1] if test is not None else None,
        info=info, classes=classes,
    )


def _read_files(fd: FileData, stamp: tuple, test_stamp: tuple | None, where: str) -> list[Raw]:
    """The train file, then the test file if any, checked to hold the same kind of data."""
    keys = {"x_key": fd.x_key, "y_key": fd.y_key, "target": fd.target}
    train = read(stamp[0], where, tuple(fd.features), **keys)
    if test_stamp is None:
        return [train]
    twhere = f"test file {fd.test_path!r}"
    table = os.path.splitext(test_stamp[0])[1].lower() != ".npz"
    test = read(test_stamp[0], twhere,
                tuple(train.columns) if table and train.columns else (),
                origin=f"{where} uses it as a feature", **keys)
    if test.x.shape[1] != train.x.shape[1]:
        raise ValueError(
            f"{twhere} has {test.x.shape[1]} features per sample but {where} has "
            f"{train.x.shape[1]}; both files must hold the same features"
        )
    if test.text != train.text:
        kinds = {True: "text", False: "numeric"}
        raise ValueError(
            f"{twhere} has {kinds[test.text]} targets but {where} has "
            f"{kinds[train.text]} targets; use the same kind of labels in both files"
        )
    return [train, test]


def _input_shape(fd: FileData, train: Raw, where: str) -> tuple[int, ...]:
    """One sample's shape: ``input_shape``, else the file's (``.npz``), else ``(1, d)``."""
    d = train.x.shape[1]
    if fd.input_shape:
        shape = tuple(int(s) for s in fd.input_shape)
        if math.prod(shape) != d:
            raise ValueError(
                f"{where}: input_shape {list(shape)} holds {math.prod(shape)} numbers, but "
                f"each sample has {d} features; choose a shape whose product is {d} (or "
                f"leave input_shape out to infer it)"
            )
        return shape
    if len(train.sample_shape) >= 2:
        return train.sample_shape
    return (1, d)


def _class_targets(raws: list[Raw], where: str) -> tuple[list[np.ndarray], int, tuple]:
    """Class indices per file (into the sorted labels of all files), the number of
    classes and each class's label."""
    labels = [r.y.reshape(len(r.y)) for r in raws]
    uniq = np.unique(np.concatenate(labels))
    if len(uniq) < 2:
        raise ValueError(
            f"{where}: classification needs at least 2 classes, but every target is "
            f"{_examples(uniq)}"
        )
    ys = [np.searchsorted(uniq, lab).astype(np.int64) for lab in labels]
    classes = tuple(v.item() if hasattr(v, "item") else v for v in uniq)
    if not raws[0].text and all(float(c).is_integer() for c in classes):
        classes = tuple(int(c) for c in classes)
    return ys, len(uniq), classes


def _regression_targets(fd: FileData, raws: list[Raw], where: str) -> list[np.ndarray]:
    """Targets per file as ``(n, out_dim)`` float32, the same ``out_dim`` in both files."""
    ys = [r.y.reshape(len(r.y), -1).astype(np.float32) for r in raws]
    out_dim = ys[0].shape[1]
    if len(ys) > 1 and ys[1].shape[1] != out_dim:
        raise ValueError(
            f"test file {fd.test_path!r} has {ys[1].shape[1]} targets per sample but "
            f"{where} has {out_dim}; both files must hold the same targets"
        )
    return ys


def _inputs(fd: FileData, raws: list[Raw], shape: tuple[int, ...]) -> list[np.ndarray]:
    """Inputs per file as float32 samples of ``shape``, standardised with the train file's
    mean and deviation if ``fd.standardize``."""
    xs = [r.x for r in raws]
    if fd.standardize:
        train = raws[0]
        mean, std = train.x.mean(axis=0), train.x.std(axis=0)
        std = np.where(std > 0, std, 1.0)  # a constant feature is only centred
        xs = [(x - mean) / std for x in xs]
    return [x.astype(np.float32).reshape(len(x), *shape) for x in xs]


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class FileData(DataGenerator):
    """A data set from a file: .npz arrays (X, y) or a .csv / .parquet table.

    **Files.** ``.npz``: inputs ``X`` (``x_key``) with one row per sample, ``(n, d)`` or
    ``(n, C, L)`` / ``(n, C, H, W)``, targets ``y`` (``y_key``), ``(n,)`` or ``(n, k)``.
    ``.csv`` / ``.parquet`` (parquet needs ``pip install pyarrow``): the column ``target``
    holds the targets, the columns ``features`` (default: every other column, in file order)
    the inputs, which must be numeric. Relative paths are taken from the current directory.

    **Input shape.** ``input_shape`` if given (its product must equal the number of
    features; rows are reshaped in C order); otherwise ``X.shape[1:]`` for an ``.npz`` whose
    ``X`` has 3 or more axes (channels first: save images as ``(n, 1, H, W)``, or set
    ``input_shape``), and ``(1, d)`` for ``(n, d)`` arrays and tables.

    **Task.** ``auto``: classification if the targets are text (or categories), booleans, or
    numbers that are all integers (whatever the dtype: 1.0 counts) with at most 50
    distinct values in one column; regression otherwise (fractional values, more than 50
    values, or several target columns). Class labels are mapped to indices 0..k-1 in sorted
    order of their values (text sorted as strings), over the training and test files
    together; ``out_dim`` is k. Regression targets are kept as they are (not rescaled),
    ``(n, k)`` float32 with ``out_dim = k`` (1 for a single column).

    **Standardisation.** With ``standardize`` each input feature is centred and divided by
    its standard deviation (numpy's, ddof=0), computed over all rows of ``path`` (never the
    test file) and applied to both files; constant features are only centred.

    **Sampling.** ``describe().n_available`` is the number of rows of ``path``. Each seed
    draws a random permutation of them. Without ``test_path`` the test set is the first
    ``n_test`` rows of the permutation and the training pool the next ``n_train`` (disjoint;
    ``n_train + n_test`` may not exceed the rows). With ``test_path`` the training pool is
    the first ``n_train`` permuted rows of ``path`` and the test set the first ``n_test``
    rows of ``test_path`` in file order, the same for every seed (an error if the test file
    has fewer rows).
    """

    name = "file"
    path: str = ""  # the data file (.npz, .csv or .parquet): required
    test_path: str = ""  # optional fixed test set, a file with the same features and targets
    x_key: str = "X"  # .npz: name of the inputs array
    y_key: str = "y"  # .npz: name of the targets array
    target: str = "y"  # .csv / .parquet: name of the target column
    features: tuple[str, ...] = ()  # .csv / .parquet: input columns; () = all but target
    task: str = "auto"  # "auto", "regression" or "classification" (see above)
    input_shape: tuple[int, ...] = ()  # one sample's (C, *spatial); () = inferred
    standardize: bool = True  # centre and scale each feature by the training file's stats

    def _key(self) -> tuple:
        """The parameters as a hashable cache key."""
        return tuple((k, tuple(v) if isinstance(v, list) else v)
                     for k, v in self.get_params().items())

    def _check_params(self) -> None:
        for p in ("path", "test_path", "x_key", "y_key", "target", "task"):
            if not isinstance(getattr(self, p), str):
                raise ValueError(f"{p} must be a string, got {getattr(self, p)!r}")
        if not self.path:
            raise ValueError(
                "path is required: the .npz, .csv or .parquet file holding the data set "
                "(e.g. path = \"data/train.csv\")"
            )
        for p in ("x_key", "y_key", "target"):
            if not getattr(self, p):
                raise ValueError(f"{p} must be a non-empty name, got {getattr(self, p)!r}")
        if not isinstance(self.features, (tuple, list)) or not all(
                isinstance(c, str) for c in self.features):
            raise ValueError(f"features must be a list of column names, got {self.features!r}")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features lists a column twice: {list(self.features)}")
        if self.task not in TASK_CHOICES:
            raise ValueError(f"task must be one of {list(TASK_CHOICES)}, got {self.task!r}")
        if not isinstance(self.input_shape, (tuple, list)) or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
                for s in self.input_shape):
            raise ValueError(
                f"input_shape must be a list of positive integers such as [1, 8, 8], or "
                f"empty to infer it, got {self.input_shape!r}"
            )
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ValueError(f"standardize must be true or false, got {self.standardize!r}")

    def _data(self) -> _Dataset:
        self._check_params()
        stamp = file_stamp(self.path, f"file {self.path!r}")
        test_stamp = (file_stamp(self.test_path, f"test file {self.test_path!r}")
                      if self.test_path else None)
        return _load(self._key(), stamp, test_stamp)

    # ---- contract -----------------------------------------------------------------------

    def check(self) -> None:
        self._data()  # reads and validates the files

    def describe(self) -> DataInfo:
        return self._data().info

    @property
    def classes(self) -> tuple | None:
        """Classification: the label behind each class index (None for regression)."""
        return self._data().classes

    def sample(self, n_train: int, n_test: int, seed: int) -> Split:
        check_count(n_train, "n_train")
        check_count(n_test, "n_test")
        d = self._data()
        n = len(d.x)
        if d.x_test is None:
            if n_train + n_test > n:
                raise ValueError(
                    f"file {self.path!r} has {n} rows, but n_train + n_test = {n_train} + "
                    f"{n_test} = {n_train + n_test}; lower the largest training size or the "
                    f"test size"
                )
        else:
            if n_train > n:
                raise ValueError(
                    f"file {self.path!r} has {n} rows, but n_train = {n_train}; lower the "
                    f"largest training size"
                )
            assert d.y_test is not None
            if n_test > len(d.x_test):
                raise ValueError(
                    f"test file {self.test_path!r} has {len(d.x_test)} rows, but n_test = "
                    f"{n_test}; lower the test size"
                )
        g = torch.Generator().manual_seed(derive_seed(seed, "file"))
        perm = torch.randperm(n, generator=g).numpy()
        if d.x_test is None:
            test, train = perm[:n_test], perm[n_test:n_test + n_train]
            x_test, y_test = d.x[test], d.y[test]
        else:
            assert d.y_test is not None
            train = perm[:n_train]
            first = np.arange(n_test)
            x_test, y_test = d.x_test[first], d.y_test[first]
        # Fancy indexing copies, so callers may modify the tensors without touching the cache.
        return Split(
            x_train=torch.from_numpy(d.x[train]),
            y_train=torch.from_numpy(d.y[train]),
            x_test=torch.from_numpy(x_test),
            y_test=torch.from_numpy(y_test),
        )

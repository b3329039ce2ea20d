"""Reading one data file of ``FileData`` (``data_files``): an ``.npz`` file's arrays or a
``.csv`` / ``.parquet`` table's columns, validated, as ``Raw`` features and targets. The
reading rules are in ``data_files``' docstring; every problem is a ``ValueError`` naming the
file, what is wrong and how to fix it."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported when a table is read
    import pandas as pd

EXTENSIONS = (".npz", ".csv", ".parquet")


@dataclasses.dataclass(frozen=True)
class Raw:
    """One file as read: features flattened to ``(n, d)`` float64, targets as found."""

    x: np.ndarray  # (n, d) float64
    sample_shape: tuple[int, ...]  # one row's shape in the file: X.shape[1:] or (d,)
    y: np.ndarray  # numeric: (n,) or (n, k) float64; text: (n,) str
    text: bool  # y holds text labels
    y_name: str  # the array or column holding y, for messages
    columns: tuple[str, ...] | None  # feature column names (tables only)


def _rows(mask: np.ndarray) -> str:
    """'3 of 100 rows (the first is row 7, counting from 0)' for a boolean row mask."""
    bad = np.flatnonzero(mask)
    return f"{len(bad)} of {len(mask)} rows (the first is row {bad[0]}, counting from 0)"


def file_stamp(path: str, where: str) -> tuple[str, int, int]:
    """(absolute path, mtime_ns, size) of an existing file; ValueError otherwise."""
    full = os.path.abspath(os.path.expanduser(path))
    try:
        st = os.stat(full)
    except FileNotFoundError:
        raise ValueError(
            f"{where} does not exist (looked for {full}); check the path (a relative path "
            f"is taken from the current directory, {os.getcwd()})"
        ) from None
    except OSError as exc:
        raise ValueError(f"{where} cannot be read: {exc}") from None
    if not os.path.isfile(full):
        raise ValueError(f"{where} is not a file ({full}); give the path of a data file")
    ext = os.path.splitext(full)[1].lower()
    if ext not in EXTENSIONS:
        raise ValueError(
            f"{where} has an unknown extension {ext or '(none)'!r}; use .npz (arrays X and y),"
            " .csv or .parquet (a table with a target column)"
        )
    return full, st.st_mtime_ns, st.st_size


def _read_npz(full: str, where: str, x_key: str, y_key: str) -> Raw:
    x, y = _npz_arrays(full, where, x_key, y_key)
    if x.ndim < 2:
        raise ValueError(
            f"{where}: array {x_key!r} has shape {x.shape}; it needs one row per sample, "
            f"(n, d) or (n, C, L) or (n, C, H, W) (for one feature, save X.reshape(-1, 1))"
        )
    if x.dtype.kind not in "biuf":
        raise ValueError(
            f"{where}: array {x_key!r} has dtype {x.dtype}; the inputs must be numeric"
        )
    if y.ndim not in (1, 2):
        raise ValueError(
            f"{where}: array {y_key!r} has shape {y.shape}; targets are (n,) or (n, k)"
        )
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{where}: {x_key!r} has {x.shape[0]} rows but {y_key!r} has {y.shape[0]}; "
            f"they need one target per sample"
        )
    y, text = _npz_targets(y, where, y_key)
    return Raw(x.reshape(len(x), -1).astype(np.float64), tuple(x.shape[1:]), y, text, y_key,
                None)


def _npz_arrays(full: str, where: str, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The arrays ``x_key`` and ``y_key`` of an ``.npz`` file, loaded without pickle."""
    try:
        npz = np.load(full, allow_pickle=False)
    except Exception as exc:  # not a zip, truncated, pickled...
        raise ValueError(
            f"{where} cannot be read as .npz ({type(exc).__name__}: {exc}); save it with "
            f"numpy.savez(path, X=..., y=...)"
        ) from None
    with npz:
        names = list(npz.files)
        for key, param in ((x_key, "x_key"), (y_key, "y_key")):
            if key not in names:
                raise ValueError(
                    f"{where} has no array {key!r} ({param}); its arrays are {names}; save "
                    f"the inputs as X and the targets as y (numpy.savez(path, X=..., y=...)) "
                    f"or set {param} to the right name"
                )
        arrays = {}
        for key in (x_key, y_key):
            try:
                arrays[key] = npz[key]
            except ValueError as exc:  # object arrays need pickle
                raise ValueError(
                    f"{where}: array {key!r} cannot be loaded without pickle ({exc}); save "
                    f"it as numbers (or, for labels, strings: y.astype(str))"
                ) from None
    return arrays[x_key], arrays[y_key]


def _npz_targets(y: np.ndarray, where: str, y_key: str) -> tuple[np.ndarray, bool]:
    """An ``.npz`` file's targets as text labels (decoded from bytes) or float64 numbers,
    and whether they are text."""
    if y.dtype.kind == "S":
        y = np.char.decode(y, "utf-8")
    if y.dtype.kind == "U":
        if y.ndim != 1:
            raise ValueError(
                f"{where}: text labels {y_key!r} must be one per row, shape (n,), got {y.shape}"
            )
        return y, True
    if y.dtype.kind in "biuf":
        return y.astype(np.float64), False
    raise ValueError(
        f"{where}: array {y_key!r} has dtype {y.dtype}; targets must be numbers or text"
    )


def _read_table(full: str, ext: str, where: str, target: str,
                features: tuple[str, ...], origin: str) -> Raw:
    import pandas as pd

    df = _read_frame(full, ext, where)
    chosen = _feature_columns(list(df.columns), where, target, features, origin)
    bad = [f"{c} ({df[c].dtype})" for c in chosen
           if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]
    if bad:
        raise ValueError(
            f"{where}: feature columns must be numeric; not numeric: {', '.join(bad)}; encode "
            f"them as numbers (e.g. one-hot columns) or choose the inputs with "
            f"features = [...]"
        )
    x = df[chosen].to_numpy(dtype=np.float64, na_value=np.nan)
    y, text = _table_targets(df[target], where, target)
    return Raw(x, (len(chosen),), y, text, target, tuple(chosen))


def _read_frame(full: str, ext: str, where: str) -> pd.DataFrame:
    """A ``.csv`` or ``.parquet`` file as a data frame with at least one row and its column
    names as strings."""
    import pandas as pd

    if ext == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            try:
                import fastparquet  # noqa: F401
            except ImportError:
                raise ValueError(
                    f"{where}: reading .parquet files needs the pyarrow package, which is "
                    f"not installed: pip install pyarrow (or save the data as .csv or .npz)"
                ) from None
    try:
        df = pd.read_parquet(full) if ext == ".parquet" else pd.read_csv(full)
    except Exception as exc:
        kind = "Parquet" if ext == ".parquet" else "CSV"
        raise ValueError(
            f"{where} cannot be read as {kind} ({type(exc).__name__}: {exc})"
        ) from None
    if len(df) == 0:
        raise ValueError(f"{where} holds no samples (0 rows)")
    df.columns = [str(c) for c in df.columns]
    return df


def _feature_columns(columns: list[str], where: str, target: str,
                     features: tuple[str, ...], origin: str) -> list[str]:
    """The input columns: ``features`` if given (``origin``: why), else all but the target."""
    if target not in columns:
        raise ValueError(
            f"{where} has no target column {target!r}; its columns are {columns}; set "
            f"target to the column holding the targets"
        )
    if features:
        missing = [c for c in features if c not in columns]
        if missing:
            raise ValueError(
                f"{where} has no column {missing} ({origin}); its columns are "
                f"{columns}"
            )
        if target in features:
            raise ValueError(
                f"{where}: the target column {target!r} is also listed in features; "
                f"remove it from features"
            )
        return list(features)
    chosen = [c for c in columns if c != target]
    if not chosen:
        raise ValueError(
            f"{where} has no feature columns: its only column is the target {target!r}"
        )
    return chosen


def _table_targets(col: pd.Series, where: str, target: str) -> tuple[np.ndarray, bool]:
    """A table's target column as float64 numbers (booleans 0/1) or text labels, and
    whether they are text."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan), False
    # strings, categories or mixed objects: text labels
    missing_y = col.isna().to_numpy()
    if missing_y.any():
        raise ValueError(
            f"{where}: {_rows(missing_y)} have no value in the target column {target!r}; "
            f"remove those rows"
        )
    return np.asarray(col.astype(str).to_numpy(), dtype=str), True


def read(full: str, where: str, features: tuple[str, ...],
         origin: str = "listed in features", *, x_key: str, y_key: str, target: str) -> Raw:
    """Read and validate one file (rows, finiteness); ``origin``: why ``features``; the
    ``FileData`` parameters naming its arrays (``.npz``) or target column (tables)."""
    ext = os.path.splitext(full)[1].lower()
    if ext == ".npz":
        if features:
            raise ValueError(
                f"{where} is an .npz file, but features (a list of table columns) is set; "
                f"features applies to .csv and .parquet files only"
            )
        raw = _read_npz(full, where, x_key, y_key)
    else:
        raw = _read_table(full, ext, where, target, features, origin)
    n = len(raw.x)
    if n == 0:
        raise ValueError(f"{where} holds no samples (0 rows)")
    if raw.x.shape[1] == 0:
        raise ValueError(f"{where} has no features (each sample has 0 numbers)")
    bad_x = ~np.isfinite(raw.x).all(axis=1)
    if bad_x.any():
        raise ValueError(
            f"{where}: {_rows(bad_x)} have NaN or infinite inputs; remove or impute them"
        )
    if not raw.text:
        bad_y = ~np.isfinite(raw.y.reshape(n, -1)).all(axis=1)
        if bad_y.any():
            raise ValueError(
                f"{where}: {_rows(bad_y)} have a NaN or infinite target {raw.y_name!r}; "
                f"remove those rows"
            )
    return raw

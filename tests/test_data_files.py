"""The file data generator: reading, inference, sampling and a clear error for every bad file."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest
import torch

import dmisearch
from dmisearch.components import DataInfo
from dmisearch.data import check_split
from dmisearch.errors import StudyFileError
from dmisearch.plugins import load_registry
from dmisearch.study_file import build_spec
from dmisearch_builtins.data_files import MAX_AUTO_CLASSES, FileData

RNG = np.random.default_rng(0)


def load(**kw) -> FileData:
    fd = FileData(**kw)
    fd.check()
    return fd


def standardized(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)


def write_csv(path, **columns) -> str:
    pd.DataFrame(columns).to_csv(path, index=False)
    return str(path)


def row_index(y: torch.Tensor, y_all: np.ndarray) -> np.ndarray:
    """Where each (unique) target of ``y`` sits in ``y_all``."""
    pos = {float(v): i for i, v in enumerate(np.asarray(y_all, dtype=np.float32))}
    return np.array([pos[float(v)] for v in y.reshape(-1)])


# --------------------------------------------------------------------------------------------
# reading and inference
# --------------------------------------------------------------------------------------------


def test_npz_regression_round_trip(tmp_path):
    x = RNG.normal(3.0, 2.0, size=(50, 4))
    y = RNG.normal(size=50)  # distinct, so rows can be told apart by their target
    np.savez(tmp_path / "reg.npz", X=x, y=y)
    fd = load(path=str(tmp_path / "reg.npz"))
    info = fd.describe()
    assert info == DataInfo(input_shape=(1, 4), task="regression", out_dim=1, n_available=50)
    assert fd.classes is None
    s = fd.sample(30, 20, seed=3)
    assert check_split(s, info, 30, 20) is None
    assert s.x_train.dtype == s.y_train.dtype == torch.float32
    for xs, ys in ((s.x_train, s.y_train), (s.x_test, s.y_test)):
        idx = row_index(ys, y)
        np.testing.assert_allclose(xs[:, 0].numpy(), standardized(x)[idx], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(ys[:, 0].numpy(), y[idx].astype(np.float32))
    # Disjoint and together all rows.
    assert sorted([*row_index(s.y_train, y), *row_index(s.y_test, y)]) == list(range(50))
    # Without standardisation the values are the file's.
    raw = load(path=str(tmp_path / "reg.npz"), standardize=False).sample(5, 0, seed=0)
    np.testing.assert_array_equal(raw.x_train[:, 0].numpy(),
                                  x[row_index(raw.y_train, y)].astype(np.float32))


def test_sampling_is_deterministic_disjoint_and_bounded(tmp_path):
    np.savez(tmp_path / "d.npz", X=RNG.normal(size=(40, 3)), y=np.arange(40.0) + 0.5)
    fd = load(path=str(tmp_path / "d.npz"))
    a, b, c = fd.sample(10, 5, seed=1), fd.sample(10, 5, seed=1), fd.sample(10, 5, seed=2)
    for u, v in zip((a.x_train, a.y_train, a.x_test, a.y_test),
                    (b.x_train, b.y_train, b.x_test, b.y_test), strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a.y_train, c.y_train)
    assert not set(a.y_train[:, 0].tolist()) & set(a.y_test[:, 0].tolist())
    # Nested: a larger pool starts with the smaller one, the test set stays.
    big = fd.sample(30, 5, seed=1)
    assert torch.equal(big.y_train[:10], a.y_train) and torch.equal(big.y_test, a.y_test)
    a.x_train.add_(1)  # the returned tensors are copies
    assert torch.equal(fd.sample(10, 5, seed=1).x_train, b.x_train)
    with pytest.raises(ValueError, match=r"'.*d\.npz' has 40 rows, but n_train \+ n_test"):
        fd.sample(36, 5, seed=0)


@pytest.mark.parametrize("x_shape,input_shape,want", [
    ((20, 1, 4, 4), (), (1, 4, 4)),
    ((20, 2, 5), (), (2, 5)),
    ((20, 6), (), (1, 6)),
    ((20, 6), (1, 2, 3), (1, 2, 3)),
    ((20, 1, 2, 3), (2, 3), (2, 3)),
])
def test_input_shape_inferred_or_declared(tmp_path, x_shape, input_shape, want):
    x = RNG.normal(size=x_shape)
    np.savez(tmp_path / "s.npz", X=x, y=np.arange(20.0) / 3)
    fd = load(path=str(tmp_path / "s.npz"), input_shape=input_shape, standardize=False)
    assert fd.describe().input_shape == want
    s = fd.sample(20, 0, seed=0)
    idx = row_index(s.y_train, np.arange(20.0) / 3)
    np.testing.assert_array_equal(s.x_train.numpy(),  # C-order reshape of each row
                                  x.reshape(20, -1)[idx].reshape(20, *want).astype(np.float32))


@pytest.mark.parametrize("y,task,want_task,want_out", [
    (np.arange(30) % 3, "auto", "classification", 3),
    ((np.arange(30) % 4).astype(float), "auto", "classification", 4),  # 1.0 counts as 1
    (np.arange(30) % 2 == 0, "auto", "classification", 2),
    (np.arange(30) * 0.5, "auto", "regression", 1),  # fractional values
    (np.arange(60) % (MAX_AUTO_CLASSES + 1), "auto", "regression", 1),  # too many values
    (np.arange(60) % (MAX_AUTO_CLASSES + 1), "classification", "classification", 51),
    (np.arange(30) % 3, "regression", "regression", 1),
    (RNG.normal(size=(30, 2)), "auto", "regression", 2),
    (np.stack([np.arange(30) % 3] * 2, axis=1), "auto", "regression", 2),  # several columns
])
def test_task_inference(tmp_path, y, task, want_task, want_out):
    np.savez(tmp_path / "t.npz", X=RNG.normal(size=(len(y), 2)), y=y)
    fd = load(path=str(tmp_path / "t.npz"), task=task)
    info = fd.describe()
    assert (info.task, info.out_dim) == (want_task, want_out)
    s = fd.sample(10, 10, seed=0)
    assert check_split(s, info, 10, 10) is None
    if want_task == "classification":
        assert s.y_train.dtype == torch.int64
    else:
        assert s.y_train.dtype == torch.float32 and s.y_train.shape == (10, want_out)


def test_labels_become_indices_in_sorted_order(tmp_path):
    labels = np.array([7, -1, 5] * 10)
    np.savez(tmp_path / "c.npz", X=labels[:, None] * np.ones((1, 2)), y=labels)
    fd = load(path=str(tmp_path / "c.npz"), standardize=False)
    assert fd.classes == (-1, 5, 7)
    s = fd.sample(15, 15, seed=0)
    for x, y in ((s.x_train, s.y_train), (s.x_test, s.y_test)):
        assert torch.equal(torch.tensor([-1.0, 5.0, 7.0])[y], x[:, 0, 0])
    # Text labels (npz strings and csv columns) sort as strings.
    words = np.array(["dog", "cat", "emu"] * 10)
    np.savez(tmp_path / "w.npz", X=np.arange(30.0)[:, None], y=words)
    write_csv(tmp_path / "w.csv", a=np.arange(30.0), label=words)
    for fd in (load(path=str(tmp_path / "w.npz"), standardize=False),
               load(path=str(tmp_path / "w.csv"), target="label", standardize=False)):
        info = fd.describe()
        assert (info.task, info.out_dim, fd.classes) == ("classification", 3,
                                                         ("cat", "dog", "emu"))
        s = fd.sample(30, 0, seed=4)
        got = np.array(fd.classes)[s.y_train.numpy()]
        np.testing.assert_array_equal(got, words[s.x_train[:, 0, 0].numpy().astype(int)])


def test_csv_columns_standardisation_and_order(tmp_path):
    n = 40
    a, b = RNG.normal(5, 3, n), RNG.normal(-2, 0.1, n)
    flag = np.arange(n) % 2 == 0
    y = RNG.normal(size=n)
    path = write_csv(tmp_path / "t.csv", a=a, y=y, flag=flag, const=np.full(n, 4.0), b=b)
    fd = load(path=path)
    assert fd.describe() == DataInfo((1, 4), "regression", 1, n)
    s = fd.sample(n, 0, seed=0)
    idx = row_index(s.y_train, y)
    x = np.stack([a, flag.astype(float), np.full(n, 4.0), b], axis=1)  # file order, no y
    want = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)  # constant: centred only
    np.testing.assert_allclose(s.x_train[:, 0].numpy(), want[idx], rtol=0, atol=1e-5)
    assert np.all(s.x_train[:, 0, 2].numpy() == 0)
    # A chosen subset, in the listed order, with another target column.
    fd = load(path=path, features=["b", "a"], input_shape=[2, 1])
    s = fd.sample(n, 0, seed=0)
    idx = row_index(s.y_train, y)
    np.testing.assert_allclose(s.x_train[:, :, 0].numpy(), standardized(np.stack([b, a], 1))[idx],
                               rtol=0, atol=1e-5)


def test_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow")
    y = np.array(["x", "y"] * 10)
    pd.DataFrame({"u": np.arange(20.0), "v": np.ones(20), "label": y}).to_parquet(
        tmp_path / "d.parquet")
    fd = load(path=str(tmp_path / "d.parquet"), target="label", standardize=False)
    assert fd.describe() == DataInfo((1, 2), "classification", 2, 20)
    s = fd.sample(10, 10, seed=0)
    assert torch.equal(s.y_train, (s.x_train[:, 0, 0] % 2).long())


def test_parquet_without_pyarrow_says_what_to_install(tmp_path):
    if importlib.util.find_spec("pyarrow") or importlib.util.find_spec("fastparquet"):
        pytest.skip("a parquet engine is installed")
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError) as info:
        FileData(path=str(tmp_path / "d.parquet")).check()
    assert "d.parquet" in str(info.value) and "pip install pyarrow" in str(info.value)


# --------------------------------------------------------------------------------------------
# a fixed test file
# --------------------------------------------------------------------------------------------


def test_test_file_is_fixed_and_standardised_with_training_stats(tmp_path):
    x, xt = RNG.normal(2, 3, size=(30, 3)), RNG.normal(size=(12, 3))
    np.savez(tmp_path / "train.npz", X=x, y=np.arange(30) % 2)
    np.savez(tmp_path / "test.npz", X=xt, y=np.arange(12) % 3)  # a class only the test has
    fd = load(path=str(tmp_path / "train.npz"), test_path=str(tmp_path / "test.npz"))
    info = fd.describe()
    assert info == DataInfo((1, 3), "classification", 3, 30, n_test_available=12)
    a, b = fd.sample(30, 5, seed=0), fd.sample(20, 5, seed=1)
    assert check_split(a, info, 30, 5) is None
    want = ((xt - x.mean(0)) / x.std(0)).astype(np.float32)[:5]
    np.testing.assert_allclose(a.x_test[:, 0].numpy(), want, rtol=0, atol=1e-6)
    assert a.y_test.tolist() == [0, 1, 2, 0, 1]
    assert torch.equal(a.x_test, b.x_test)  # same rows for every seed
    assert not torch.equal(a.x_train[:20], b.x_train)  # the training pool is permuted
    with pytest.raises(ValueError, match=r"test file '.*test\.npz' has 12 rows, but n_test"):
        fd.sample(5, 13, seed=0)
    with pytest.raises(ValueError, match=r"'.*train\.npz' has 30 rows, but n_train = 31"):
        fd.sample(31, 5, seed=0)


def test_csv_test_file_uses_the_training_columns(tmp_path):
    train = write_csv(tmp_path / "train.csv", a=np.arange(10.0), b=np.ones(10),
                      y=["p", "q"] * 5)
    test = write_csv(tmp_path / "test.csv", b=np.zeros(4), extra=np.ones(4), a=np.arange(4.0),
                     y=["r", "p", "q", "r"])
    fd = load(path=train, test_path=test, standardize=False)
    assert fd.classes == ("p", "q", "r") and fd.describe().out_dim == 3
    s = fd.sample(10, 4, seed=0)
    np.testing.assert_array_equal(s.x_test[:, 0].numpy(),
                                  np.stack([np.arange(4.0), np.zeros(4)], 1))
    assert s.y_test.tolist() == [2, 0, 1, 2]


def test_an_edited_file_is_read_again(tmp_path):
    path = tmp_path / "e.npz"
    np.savez(path, X=np.ones((10, 2)), y=np.arange(10.0) / 7)
    assert load(path=str(path)).describe().input_shape == (1, 2)
    np.savez(path, X=np.ones((12, 3)), y=np.arange(12.0) / 7)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clocks
    info = load(path=str(path)).describe()
    assert (info.input_shape, info.n_available) == ((1, 3), 12)


# --------------------------------------------------------------------------------------------
# bad files
# --------------------------------------------------------------------------------------------


def _npz(p, **arrays):
    np.savez(p, **arrays)


X10 = np.arange(20.0).reshape(10, 2)
Y10 = np.arange(10) % 2


def _bad_cases():
    nan_x = X10.copy()
    nan_x[[3, 7], 1] = np.nan
    inf_y = np.arange(10.0)
    inf_y[4] = np.inf
    obj = np.empty(10, dtype=object)
    obj[:] = [{"a": 1}] * 10
    return [
        ("missing.csv", None, {}, "does not exist"),
        ("data.txt", lambda p: p.write_text("1,2\n"), {}, "unknown extension '.txt'"),
        ("noX.npz", lambda p: _npz(p, inputs=X10, y=Y10), {},
         "no array 'X' (x_key); its arrays are ['inputs', 'y']"),
        ("noy.npz", lambda p: _npz(p, X=X10, label=Y10), {},
         "no array 'y' (y_key); its arrays are ['X', 'label']"),
        ("garbage.npz", lambda p: p.write_bytes(b"not a zip"), {}, "cannot be read as .npz"),
        ("object.npz", lambda p: _npz(p, X=X10, y=obj), {}, "cannot be loaded without pickle"),
        ("flat.npz", lambda p: _npz(p, X=np.arange(10.0), y=Y10), {}, "one row per sample"),
        ("rows.npz", lambda p: _npz(p, X=X10, y=Y10[:9]), {}, "'X' has 10 rows but 'y' has 9"),
        ("nanx.npz", lambda p: _npz(p, X=nan_x, y=Y10), {},
         "2 of 10 rows (the first is row 3, counting from 0) have NaN or infinite inputs"),
        ("infy.npz", lambda p: _npz(p, X=X10, y=inf_y), {},
         "1 of 10 rows (the first is row 4, counting from 0) have a NaN or infinite target"),
        ("feat.npz", lambda p: _npz(p, X=X10, y=Y10), {"features": ("a",)},
         "features applies to .csv and .parquet files only"),
        ("notarget.csv", lambda p: write_csv(p, a=Y10, b=Y10, label=Y10), {},
         "no target column 'y'; its columns are ['a', 'b', 'label']"),
        ("nofeat.csv", lambda p: write_csv(p, a=Y10, y=Y10), {"features": ("a", "zz")},
         "no column ['zz'] (listed in features); its columns are ['a', 'y']"),
        ("onlytarget.csv", lambda p: write_csv(p, y=Y10), {}, "no feature columns"),
        ("text.csv", lambda p: write_csv(p, a=Y10, color=["red"] * 10, y=Y10), {},
         "feature columns must be numeric; not numeric: color ("),
        ("nancsv.csv", lambda p: write_csv(p, a=nan_x[:, 1], y=Y10), {},
         "2 of 10 rows (the first is row 3, counting from 0) have NaN or infinite inputs"),
        ("nolabel.csv", lambda p: write_csv(p, a=Y10, y=["u", None] * 5), {},
         "5 of 10 rows (the first is row 1, counting from 0) have no value in the target"),
        ("empty.csv", lambda p: p.write_text("a,y\n"), {}, "holds no samples"),
        ("blank.csv", lambda p: p.write_text(""), {}, "cannot be read as CSV"),
        ("shape.npz", lambda p: _npz(p, X=X10, y=Y10), {"input_shape": (1, 3)},
         "input_shape [1, 3] holds 3 numbers, but each sample has 2 features"),
        ("words.csv", lambda p: write_csv(p, a=Y10, y=["u", "v"] * 5), {"task": "regression"},
         "task = \"regression\" needs numeric targets, but 'y' holds text labels such as 'u'"),
        ("frac.npz", lambda p: _npz(p, X=X10, y=Y10 + 0.5), {"task": "classification"},
         "needs integer (or text) labels, but 10 targets are not integers, such as 0.5"),
        ("multi.npz", lambda p: _npz(p, X=X10, y=np.ones((10, 2))), {"task": "classification"},
         "needs one label per row"),
        ("oneclass.npz", lambda p: _npz(p, X=X10, y=np.zeros(10, int)), {},
         "at least 2 classes, but every target is 0"),
    ]


@pytest.mark.parametrize("name,make,kw,text", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_file_is_a_clear_error(tmp_path, name, make, kw, text):
    path = tmp_path / name
    if make:
        make(path)
    with pytest.raises(ValueError) as info:
        FileData(path=str(path), **kw).check()
    msg = str(info.value)
    assert name in msg and text in msg, msg


@pytest.mark.parametrize("make_test,text", [
    (lambda p: _npz(p, X=np.ones((5, 3)), y=np.arange(5) % 2),
     "has 3 features per sample but file"),
    (lambda p: _npz(p, X=np.ones((5, 2)), y=np.array(["a", "b", "a", "b", "a"])),
     "has text targets but file"),
    (lambda p: _npz(p, X=np.ones((5, 2)), y=np.ones((5, 2))), "has 2 targets per sample"),
    (lambda p: _npz(p, X=np.ones((5, 2)), x=np.arange(5)), "no array 'y'"),
    (None, "does not exist"),
])
def test_bad_test_file_is_a_clear_error(tmp_path, make_test, text):
    np.savez(tmp_path / "train.npz", X=X10, y=X10[:, 0] + 0.5)
    if make_test:
        make_test(tmp_path / "held.npz")
    with pytest.raises(ValueError) as info:
        FileData(path=str(tmp_path / "train.npz"), test_path=str(tmp_path / "held.npz")).check()
    msg = str(info.value)
    assert msg.startswith("test file") and "held.npz" in msg and text in msg, msg


def test_csv_test_file_missing_a_training_column(tmp_path):
    train = write_csv(tmp_path / "train.csv", a=X10[:, 0], b=X10[:, 1], y=Y10)
    test = write_csv(tmp_path / "held.csv", a=X10[:, 0], c=X10[:, 1], y=Y10)
    with pytest.raises(ValueError) as info:
        FileData(path=train, test_path=test).check()
    msg = str(info.value)
    assert "test file" in msg and "held.csv" in msg and "no column ['b']" in msg
    assert "train.csv' uses it as a feature" in msg


@pytest.mark.parametrize("kw,text", [
    ({"path": ""}, "path is required"),
    ({"task": "clf"}, "task must be one of"),
    ({"input_shape": (1, 0)}, "input_shape must be a list of positive integers"),
    ({"features": ("a", "a")}, "features lists a column twice"),
    ({"standardize": "yes"}, "standardize must be true or false"),
    ({"target": ""}, "target must be a non-empty name"),
])
def test_bad_parameters(tmp_path, kw, text):
    np.savez(tmp_path / "ok.npz", X=X10, y=Y10)
    with pytest.raises(ValueError) as info:
        FileData(**{"path": str(tmp_path / "ok.npz"), **kw}).check()
    assert text in str(info.value)


# --------------------------------------------------------------------------------------------
# through the study loader
# --------------------------------------------------------------------------------------------


class FileDataTestPlugin:
    """Registers FileData for these tests (the built-in registration may not exist yet)."""

    @dmisearch.hookimpl
    def register_data_generators(self, register):
        register(FileData)


@pytest.fixture(scope="module")
def file_registry():
    import dmisearch_builtins.algorithms as algorithms
    import dmisearch_builtins.architectures as architectures

    return load_registry(entry_points=False,
                         plugins=[architectures, algorithms, FileDataTestPlugin()])


def study(path) -> dict:
    return {
        "data": {"name": "file", "path": str(path), "input_shape": [1, 2, 2]},
        "curve": {"sizes": [4, 8], "seeds": 2, "test_size": 10},
        "search": {"models": ["fcn"], "algorithms": ["sgd"], "n_trials": 1},
    }


def test_study_loader_builds_file_data(tmp_path, file_registry):
    np.savez(tmp_path / "good.npz", X=RNG.normal(size=(20, 4)), y=np.arange(20) % 3)
    spec = build_spec(study(tmp_path / "good.npz"), file_registry)
    assert spec.info == DataInfo((1, 2, 2), "classification", 3, 20)
    assert spec.data.record()["params"]["input_shape"] == [1, 2, 2]


@pytest.mark.parametrize("name,make,text", [
    ("bad.npz", lambda p: _npz(p, X=np.ones((20, 4)), labels=np.arange(20)), "no array 'y'"),
    ("gone.npz", None, "does not exist"),
])
def test_study_loader_reports_a_bad_file(tmp_path, file_registry, name, make, text):
    if make:
        make(tmp_path / name)
    with pytest.raises(StudyFileError) as info:
        build_spec(study(tmp_path / name), file_registry)
    (problem,) = info.value.problems
    assert problem.startswith("data:") and name in problem and text in problem, problem


def test_study_with_a_fixed_test_file_checks_the_test_file_size(tmp_path, registry):
    """The curve's test set comes from the test file, the training sizes from the other."""
    from dmisearch.study_file import build_spec

    rng = np.random.default_rng(0)
    for name, n in (("train.npz", 20), ("test.npz", 50)):
        np.savez(tmp_path / name, X=rng.normal(size=(n, 4)), y=rng.normal(size=n))
    doc = {"data": {"name": "file", "path": str(tmp_path / "train.npz"),
                    "test_path": str(tmp_path / "test.npz")},
           "curve": {"sizes": [8, 16], "test_size": 40},
           "search": {"models": ["fcn"], "algorithms": ["sgd"], "n_trials": 1}}
    assert build_spec(doc, registry).info.n_test_available == 50
    doc["curve"] = {"sizes": [8, 32], "test_size": 60}
    with pytest.raises(StudyFileError) as info:
        build_spec(doc, registry)
    assert [p.split(":")[0] for p in info.value.problems] == ["curve.test_size", "curve.sizes"]

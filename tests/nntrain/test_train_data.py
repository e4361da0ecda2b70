"""nntrain.data: IDX reading (good, gzipped, corrupt, truncated), digits, Fashion-MNIST."""

import gzip
import os
import struct
import sys

import numpy as np
import pytest

from nntrain import data
from nntrain.data import load_digits, load_idx_dir, load_mnist, read_idx


def idx_bytes(array, type_code=0x08):
    array = np.asarray(array)
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_dataset(directory, n_train=5, n_test=3, h=4, w=3, gz=False, seed=0):
    """A tiny MNIST-format dataset; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    os.makedirs(directory, exist_ok=True)
    for key, array in arrays.items():
        raw = idx_bytes(array)
        name = data.IDX_FILES[key] + (".gz" if gz else "")
        with open(os.path.join(directory, name), "wb") as f:
            f.write(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_load_idx_dir_formats(tmp_path, gz):
    arrays = write_dataset(tmp_path, gz=gz)
    (x, t), (xt, tt) = load_idx_dir(tmp_path, normalize=False, flatten=False)
    assert x.dtype == np.uint8 and x.shape == (5, 1, 4, 3)
    np.testing.assert_array_equal(x[:, 0], arrays["train_images"])
    np.testing.assert_array_equal(t, arrays["train_labels"])
    np.testing.assert_array_equal(tt, arrays["test_labels"])

    (x, t), (xt, tt) = load_idx_dir(tmp_path, one_hot_label=True)
    assert x.dtype == np.float32 and x.shape == (5, 12)
    np.testing.assert_allclose(x, arrays["train_images"].reshape(5, -1) / np.float32(255))
    assert x.max() <= 1.0
    assert t.shape == (5, 10) and t.dtype == np.float64
    np.testing.assert_array_equal(t.argmax(axis=1), arrays["train_labels"])
    np.testing.assert_array_equal(t.sum(axis=1), 1)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_reading_only_the_first_training_images(tmp_path, gz):
    arrays = write_dataset(tmp_path, n_train=7, gz=gz)
    (x, t), (xt, tt) = load_idx_dir(tmp_path, normalize=False, flatten=False, train_count=3)
    np.testing.assert_array_equal(x[:, 0], arrays["train_images"][:3])
    np.testing.assert_array_equal(t, arrays["train_labels"][:3])
    np.testing.assert_array_equal(xt[:, 0], arrays["test_images"])  # the test set whole
    np.testing.assert_array_equal(tt, arrays["test_labels"])
    name = data.IDX_FILES["train_images"] + (".gz" if gz else "")
    whole = read_idx(tmp_path / name)
    np.testing.assert_array_equal(read_idx(tmp_path / name, count=100), whole)  # all 7
    assert read_idx(tmp_path / name, count=1, ndim=3).shape == (1, 4, 3)
    with pytest.raises(ValueError, match="count: expected a positive int"):
        read_idx(tmp_path / name, count=0)


def test_reading_the_first_records_of_a_truncated_file(tmp_path):
    path = tmp_path / "cut.idx"
    path.write_bytes(idx_bytes(np.arange(12, dtype=np.uint8).reshape(4, 3))[:-4])
    np.testing.assert_array_equal(read_idx(path, count=2), [[0, 1, 2], [3, 4, 5]])
    with pytest.raises(ValueError, match="truncated IDX data"):
        read_idx(path, count=4)
    with pytest.raises(ValueError, match="bad IDX magic"):
        (tmp_path / "bad.idx").write_bytes(b"\x01\x00\x08\x01" + bytes(8))
        read_idx(tmp_path / "bad.idx", count=1)


def test_dotted_file_names_and_load_mnist_env(tmp_path, monkeypatch):
    write_dataset(tmp_path)
    for name in os.listdir(tmp_path):
        os.rename(tmp_path / name, tmp_path / name.replace("-idx", ".idx"))
    monkeypatch.setenv("NNTRAIN_MNIST_DIR", str(tmp_path))
    (x, _), _ = load_mnist()
    assert x.shape == (5, 12)
    monkeypatch.delenv("NNTRAIN_MNIST_DIR")
    with pytest.raises(FileNotFoundError, match="NNTRAIN_MNIST_DIR"):
        load_mnist()


def test_read_idx_other_types(tmp_path):
    path = tmp_path / "floats.idx"
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    path.write_bytes(idx_bytes(array, type_code=0x0D))
    out = read_idx(path)
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def _corrupt(tmp_path, raw, name="train-images-idx3-ubyte"):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


GOOD = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)


@pytest.mark.parametrize(
    "raw, message",
    [
        (idx_bytes(GOOD)[:-1], "truncated IDX data"),
        (idx_bytes(GOOD) + b"\0", "trailing bytes"),
        (idx_bytes(GOOD)[:10], "truncated IDX header"),
        (b"\0\0", "too short"),
        (b"\x12\x34" + idx_bytes(GOOD)[2:], "magic number"),
        (b"\0\0\x07\x03" + idx_bytes(GOOD)[4:], "magic number"),
        (b"\0\0\x08\x00", "0 dimensions"),
        (idx_bytes(np.zeros((0, 2), np.uint8)), "empty dimension"),
        (gzip.compress(idx_bytes(GOOD))[:-12], "gzip"),
        (b"\x1f\x8b" + b"garbage" * 5, "gzip"),
        (gzip.compress(idx_bytes(GOOD)[:-3]), "truncated IDX data"),
    ],
    ids=[
        "short-data",
        "extra-data",
        "short-header",
        "tiny",
        "bad-zeros",
        "bad-type",
        "no-dims",
        "zero-dim",
        "truncated-gz",
        "corrupt-gz",
        "gz-short-data",
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, raw, message):
    path = _corrupt(tmp_path, raw)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_checks_dimensions(tmp_path):
    path = _corrupt(tmp_path, idx_bytes(GOOD))
    with pytest.raises(ValueError, match="expected 1 dimension"):
        read_idx(path, ndim=1)


def test_load_idx_dir_consistency_checks(tmp_path):
    write_dataset(tmp_path)
    labels = tmp_path / data.IDX_FILES["train_labels"]
    labels.write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="4 labels for 5 images"):
        load_idx_dir(tmp_path)
    labels.write_bytes(idx_bytes(np.full(5, 12, np.uint8)))
    with pytest.raises(ValueError, match="label 12 out of range"):
        load_idx_dir(tmp_path)
    labels.write_bytes(idx_bytes(np.zeros((5, 1), np.uint8)))
    with pytest.raises(ValueError, match="dimension"):
        load_idx_dir(tmp_path)
    labels.unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        load_idx_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_idx_dir(tmp_path / "missing")


def test_load_digits_options():
    (x, t), (xt, tt) = load_digits()
    assert x.shape == (1438, 64) and xt.shape == (359, 64)
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() == 1.0
    assert t.dtype == np.uint8 and set(np.unique(t)) == set(range(10))
    (x2, t2), _ = load_digits(normalize=False, flatten=False, one_hot_label=True)
    assert x2.shape == (1438, 1, 8, 8) and x2.dtype == np.uint8 and x2.max() == 16
    np.testing.assert_array_equal(x2.reshape(1438, -1) / np.float32(16), x)
    np.testing.assert_array_equal(t2.argmax(axis=1), t)
    (x3, _), _ = load_digits(seed=1)
    assert not np.array_equal(x3, x)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.5)


@pytest.mark.skipif(
    data.find_fashion_mnist() is None, reason="Debian's dataset-fashion-mnist is not installed"
)
def test_debian_fashion_mnist_test_split():
    directory = data.find_fashion_mnist()
    images = read_idx(data._find_file(directory, data.IDX_FILES["test_images"]), ndim=3)
    labels = read_idx(data._find_file(directory, data.IDX_FILES["test_labels"]), ndim=1)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10


def test_fashion_mnist_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", (str(tmp_path),))
    assert data.find_fashion_mnist() is None
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load_fashion_mnist()
    write_dataset(tmp_path, gz=True)
    assert data.find_fashion_mnist() == str(tmp_path)
    (x, _), _ = data.load_fashion_mnist(flatten=False)
    assert x.shape == (5, 1, 4, 3)


def test_missing_sklearn_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'nnkernels\[train\]'"):
        load_digits()


def test_load_digits_mnist_sized_frames():
    (x8, t8), (xt8, _) = load_digits(flatten=False)
    (x28, t28), (xt28, _) = load_digits(flatten=False, image_size=28)
    assert x28.shape == (x8.shape[0], 1, 28, 28) and xt28.shape[0] == xt8.shape[0]
    np.testing.assert_array_equal(t28, t8)
    inner = x28[:, :, 2:26, 2:26]
    np.testing.assert_array_equal(inner[:, :, ::3, ::3], x8)
    np.testing.assert_array_equal(inner[:, :, 2::3, 1::3], x8)
    assert not x28[:, :, :2].any() and not x28[:, :, 26:].any()
    assert not x28[:, :, :, :2].any() and not x28[:, :, :, 26:].any()
    with pytest.raises(ValueError, match="image_size"):
        load_digits(image_size=16)

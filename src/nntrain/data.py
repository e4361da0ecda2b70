"""Datasets in the book's ``load_mnist`` format, without downloading anything.

Every loader returns ``((x_train, t_train), (x_test, t_test))`` and takes the book's
options:

* ``normalize``: images as float32 in [0, 1] (else the raw uint8 values);
* ``flatten``: images as ``(N, H*W)`` (else ``(N, 1, H, W)``);
* ``one_hot_label``: labels as float64 one-hot ``(N, 10)`` (else uint8 class ids ``(N,)``).

Sources: a directory of MNIST-format IDX files (``load_idx_dir``; MNIST, Fashion-MNIST,
KMNIST ...), Debian's ``dataset-fashion-mnist`` package (``load_fashion_mnist``), and
scikit-learn's bundled 8x8 digits (``load_digits``, the small default needing no download).
"""

import gzip
import os
import zlib

import numpy as np

__all__ = [
    "read_idx",
    "load_idx_dir",
    "load_mnist",
    "load_fashion_mnist",
    "load_digits",
    "find_fashion_mnist",
    "FASHION_MNIST_DIRS",
    "IDX_FILES",
]

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type byte -> big-endian dtype
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path, limit=None):
    """The file's bytes (gunzipped if gzipped), only the first ``limit`` if given."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        try:
            if not gzipped:
                return f.read() if limit is None else f.read(limit)
            if limit is None:
                return gzip.decompress(f.read())
            with gzip.GzipFile(fileobj=f) as stream:
                return stream.read(limit)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def _idx_header(raw, path, ndim):
    """``(shape, dtype, header size)`` from the first bytes ``raw`` of an IDX file."""
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero1, zero2, type_code, dims = raw[0], raw[1], raw[2], raw[3]
    if zero1 != 0 or zero2 != 0 or type_code not in _IDX_TYPES:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} "
            "(expected 0x0000 then a type code 08/09/0B/0C/0D/0E and the number of dimensions)"
        )
    if dims == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    if ndim is not None and dims != ndim:
        raise ValueError(f"{path}: expected {ndim} dimension(s), the IDX header declares {dims}")
    header_size = 4 + 4 * dims
    if len(raw) < header_size:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} of {header_size} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
    if any(d == 0 for d in shape):
        raise ValueError(f"{path}: IDX header declares an empty dimension, shape {shape}")
    return shape, _IDX_TYPES[type_code], header_size


def read_idx(path, *, ndim=None, count=None):
    """Read one IDX file (optionally gzipped) into an ndarray of its native shape.

    Checks the magic number (two zero bytes, a known type code, the number of dimensions),
    that every dimension is positive, and that the payload size matches the header exactly.
    ``ndim`` (if given) is the number of dimensions required. ``count`` (if given) reads
    only the first ``count`` records along the first axis (all if the file has fewer):
    the file is not read past them, so only their presence is checked. Problems raise
    ``ValueError`` naming the file.
    """
    path = os.fspath(path)
    if count is None:
        raw = _read_bytes(path)
        shape, dtype, header_size = _idx_header(raw, path, ndim)
    else:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count: expected a positive int, got {count!r}")
        # the longest header (255 dimensions) is 1024 bytes
        shape, dtype, header_size = _idx_header(_read_bytes(path, 1024), path, ndim)
        shape = (min(count, shape[0]),) + shape[1:]
        record = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        raw = _read_bytes(path, header_size + shape[0] * record)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header_size
    if payload < expected:
        raise ValueError(
            f"{path}: truncated IDX data: header shape {shape} needs {expected} bytes, "
            f"file has {payload}"
        )
    if payload > expected:
        raise ValueError(
            f"{path}: {payload - expected} unexpected trailing bytes after IDX data of "
            f"shape {shape}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _find_file(data_dir, base):
    """``base`` or a gzipped / dotted variant (``train-images.idx3-ubyte``) in ``data_dir``."""
    dotted = base.replace("-idx", ".idx")
    candidates = [base, base + ".gz", dotted, dotted + ".gz"]
    for name in candidates:
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"data_dir: {data_dir!r} has none of {', '.join(candidates)}")


def _check_pair(images, labels, image_path, label_path, num_classes=10):
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{label_path}: {labels.shape[0]} labels for {images.shape[0]} images in {image_path}"
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise ValueError(
            f"{label_path}: label {int(labels.max())} out of range 0..{num_classes - 1}"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"{image_path}: expected unsigned-byte images, got {images.dtype}")
    if labels.dtype != np.uint8:
        raise ValueError(f"{label_path}: expected unsigned-byte labels, got {labels.dtype}")


def load_idx_dir(data_dir, normalize=True, flatten=True, one_hot_label=False, *, train_count=None):
    """Load the four MNIST-format IDX files in ``data_dir`` (plain or ``.gz``).

    ``train_count`` (if given) reads only the first ``train_count`` training images and
    labels (see :func:`read_idx`'s ``count``)."""
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data_dir: {data_dir!r} is not a directory")
    out = []
    for split in ("train", "test"):
        image_path = _find_file(data_dir, IDX_FILES[f"{split}_images"])
        label_path = _find_file(data_dir, IDX_FILES[f"{split}_labels"])
        count = train_count if split == "train" else None
        images = read_idx(image_path, ndim=3, count=count)
        labels = read_idx(label_path, ndim=1, count=count)
        _check_pair(images, labels, image_path, label_path)
        out.append(_format_uint8(images, labels, normalize, flatten, one_hot_label))
    return tuple(out)


def _format_uint8(images, labels, normalize, flatten, one_hot_label, scale=255.0):
    """Apply the book's options to uint8 images ``(N, H, W)`` and uint8 labels ``(N,)``."""
    if normalize:
        images = images.astype(np.float32)
        images /= np.float32(scale)
    images = (
        images.reshape(images.shape[0], -1)
        if flatten
        else images.reshape(images.shape[0], 1, *images.shape[1:])
    )
    if one_hot_label:
        one_hot = np.zeros((labels.size, 10))
        one_hot[np.arange(labels.size), labels] = 1
        labels = one_hot
    return images, labels


def load_mnist(
    normalize=True, flatten=True, one_hot_label=False, *, data_dir=None, train_count=None
):
    """The book's ``load_mnist`` reading IDX files instead of downloading them.

    ``data_dir`` defaults to the ``NNTRAIN_MNIST_DIR`` environment variable;
    ``train_count`` as in :func:`load_idx_dir`.
    """
    if data_dir is None:
        data_dir = os.environ.get("NNTRAIN_MNIST_DIR")
    if data_dir is None:
        raise FileNotFoundError(
            "load_mnist: no data_dir given and NNTRAIN_MNIST_DIR is not set; point it at a "
            "directory holding train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"
        )
    return load_idx_dir(data_dir, normalize, flatten, one_hot_label, train_count=train_count)


def find_fashion_mnist():
    """The directory of an installed Fashion-MNIST (Debian ``dataset-fashion-mnist``), or None."""
    for directory in FASHION_MNIST_DIRS:
        try:
            _find_file(directory, IDX_FILES["train_images"])
        except FileNotFoundError:
            continue
        return directory
    return None


def load_fashion_mnist(
    normalize=True, flatten=True, one_hot_label=False, *, data_dir=None, train_count=None
):
    """Fashion-MNIST (28x28 clothing images, 10 classes) from ``data_dir`` or the Debian
    package; ``train_count`` as in :func:`load_idx_dir`."""
    if data_dir is None:
        data_dir = find_fashion_mnist()
        if data_dir is None:
            raise FileNotFoundError(
                "Fashion-MNIST not found in "
                + ", ".join(FASHION_MNIST_DIRS)
                + "; install it (Debian/Ubuntu: apt-get install dataset-fashion-mnist) "
                "or pass data_dir"
            )
    return load_idx_dir(data_dir, normalize, flatten, one_hot_label, train_count=train_count)


def load_digits(
    normalize=True, flatten=True, one_hot_label=False, *, test_fraction=0.2, seed=0, image_size=8
):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, values 0..16).

    A fixed-seed random split puts ``test_fraction`` of the images in the test set
    (360 of 1797 by default). ``normalize`` divides by 16; unflattened images are
    ``(N, 1, image_size, image_size)``; unnormalised images are uint8.

    ``image_size=28`` lays the digits out like MNIST: each pixel becomes a 3x3 block
    (24x24) centred in a 28x28 frame, so the book's MNIST networks run on them unchanged.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    if image_size not in (8, 28):
        raise ValueError(f"image_size: expected 8 or 28, got {image_size!r}")
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits dataset needs scikit-learn: pip install 'nnkernels[train]'"
        ) from None
    bunch = sklearn_load_digits()
    images = bunch.images.astype(np.uint8)  # (1797, 8, 8), values 0..16
    if image_size == 28:
        images = np.pad(images.repeat(3, axis=1).repeat(3, axis=2), ((0, 0), (2, 2), (2, 2)))
    labels = bunch.target.astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(test_fraction * len(labels)))
    test_idx, train_idx = order[:n_test], order[n_test:]
    return (
        _format_uint8(
            images[train_idx], labels[train_idx], normalize, flatten, one_hot_label, scale=16.0
        ),
        _format_uint8(
            images[test_idx], labels[test_idx], normalize, flatten, one_hot_label, scale=16.0
        ),
    )

"""Reader for the IDX files MNIST and Fashion-MNIST ship in (raw or gzip-compressed).

An IDX file is: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
big-endian uint32 per dimension, then the data. Everything is checked; a bad file raises
DatasetError naming the file.
"""

import gzip
import math
import os
import zlib

import numpy as np

from fastgan._files import atomic_write


class DatasetError(ValueError):
    """A dataset that cannot be used: missing, truncated, corrupt or of the wrong kind."""


IMAGES_MAGIC = 0x00000803  # uint8, 3 dims (N, rows, cols)
LABELS_MAGIC = 0x00000801  # uint8, 1 dim (N,)


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt or truncated gzip file ({exc})") from None
    return data


def read_idx(path, ndim=None):
    """The uint8 array stored in an IDX file (raw or .gz), shape from its header.

    ndim: the number of dimensions the file must have (3 for images, 1 for labels).
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DatasetError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number 0x{data[:4].hex()})")
    if data[2] != 0x08:
        raise DatasetError(f"{path}: unsupported IDX element type 0x{data[2]:02x} (expected 0x08, uint8)")
    dims = data[3]
    if ndim is not None and dims != ndim:
        kind = {3: "an image file (magic 0x00000803)", 1: "a label file (magic 0x00000801)"}.get(ndim, f"{ndim}-D")
        raise DatasetError(
            f"{path}: expected {kind}, got an IDX file with {dims} dimensions (magic 0x{data[:4].hex()})"
        )
    header = 4 + 4 * dims
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=dims, offset=4))
    size = math.prod(shape)  # Python ints: np.prod in int64 wraps for huge (corrupt) headers
    if len(data) - header < size:
        raise DatasetError(
            f"{path}: truncated IDX file: header says {shape} = {size} bytes of data, found {len(data) - header}"
        )
    if len(data) - header > size:
        raise DatasetError(
            f"{path}: corrupt IDX file: {len(data) - header - size} bytes after the {shape} data the header declares"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path, array):
    """Writes an array of integers 0-255 as a uint8 IDX file (gzip-compressed when path ends in
    .gz), atomically."""
    a = np.asarray(array)
    if a.dtype != np.uint8 and (
        a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer) or (a.size and (a.min() < 0 or a.max() > 255))
    ):
        raise ValueError(
            f"write_idx: array must hold integers 0-255 (IDX type uint8), got {a.dtype}"
            + (f" values {a.min()}..{a.max()}" if a.size and np.issubdtype(a.dtype, np.number) else "")
        )
    a = np.ascontiguousarray(a, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    payload = header + a.tobytes()
    path = os.fspath(path)
    with atomic_write(path) as f:
        f.write(gzip.compress(payload) if path.endswith(".gz") else payload)


def read_images_labels(images_path, labels_path):
    """(images (N, rows, cols) uint8, labels (N,) uint8) from a pair of IDX files, checked."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise DatasetError(f"{images_path}: no images")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{labels_path}: labels must be 0-9, found {int(labels.max())}")
    return images, labels

"""IDX files (the format of MNIST and Fashion-MNIST), raw or gzip-compressed, and folders of them.

Headers are read and their declared sizes checked (see :mod:`subnet.data.arrays`) before any
array is allocated; a gzip stream is decompressed in bounded blocks, only as far as the rows read.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from subnet.data.archive import MAX_DEFLATE_RATIO, open_regular, read_rows
from subnet.data.arrays import (
    _DEFAULT_LIMITS,
    _check_declared,
    _first,
    _Limits,
    _make_dataset,
    _positive_or_none,
    _to_images,
    _to_labels,
)
from subnet.data.dataset import Dataset
from subnet.errors import DataError

__all__ = ["IDX_FILES", "read_idx"]

IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The four standard IDX file names of MNIST and Fashion-MNIST (each may also end in ``.gz``)."""

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike, *, rows: int | None = None,
             max_bytes: int | None = None) -> np.ndarray:
    """Reads an IDX file (the format of MNIST and Fashion-MNIST), raw or gzip-compressed.

    Compression is detected from the file's first bytes (``1f 8b``), not from its name. The
    header must declare an element type of uint8 (``0x08``), int8 (``0x09``), int16 (``0x0B``),
    int32 (``0x0C``), float32 (``0x0D``) or float64 (``0x0E``) and 1 to 4 dimensions, and the
    data that follows must have exactly the declared size.

    The declared size is checked before anything is allocated: at most :data:`MAX_EXAMPLES`
    along the first axis, at most ``max_bytes`` in all, and no more than the file can hold
    (its size; for gzip, the most that deflate can expand it to). A gzip stream is decompressed
    in bounded blocks, never more than the bytes of the rows read plus one byte.

    Args:
        path: The file to read.
        rows: Read only the first ``rows`` entries along the first axis (all when None, or
            when the file holds fewer): memory and decompression follow what is read, not what
            the file holds. The rest of a file read in part is not checked.
        max_bytes: The most bytes the file may declare (decompressed); None for
            :data:`MAX_BYTES`.

    Returns:
        An array with the shape declared in the header (its first axis cut to ``rows``) and the
        native-endian dtype of its type code, e.g. uint8 ``(60000, 28, 28)`` for MNIST's
        training images.

    Raises:
        DataError: If the file is missing, unreadable or not a regular file, is a corrupt gzip
            stream, is not an IDX file, declares a size above the limits, or is truncated or has
            trailing bytes. The message names the file.
        ValueError: If ``rows`` or ``max_bytes`` is not a positive int or None.
    """
    rows = _positive_or_none(rows, "rows")
    limits = _Limits(max_bytes=_positive_or_none(max_bytes, "max_bytes"))
    path = Path(os.fspath(path))
    with contextlib.ExitStack() as stack:
        stream, info = _open_idx(path, stack, limits)
        n = info.dims[0] if rows is None else min(rows, info.dims[0])
        whole = n == info.dims[0]
        try:
            arr, got, extra = read_rows(stream, info.dtype, (n, *info.dims[1:]), check_end=whole)
        except (OSError, EOFError, zlib.error) as err:
            raise _corrupt_gzip(path, err) from None
        if arr is None:
            expected = info.header_len + info.nbytes
            got_text = f"{info.header_len + got:,}" if not extra else "more"
            problem = "it is truncated" if not extra else "it has trailing bytes"
            raise DataError(
                f"{info.what} has the wrong size for shape {info.dims} of {info.dtype.name}: "
                f"expected {expected:,} bytes, got {got_text} ({problem}). Download or copy it "
                "again."
            )
    return arr.astype(info.dtype.newbyteorder("="), copy=False)


class _IdxHeader(NamedTuple):
    dims: tuple[int, ...]
    dtype: np.dtype
    header_len: int
    what: str

    @property
    def nbytes(self) -> int:
        return math.prod(self.dims) * self.dtype.itemsize


def _open_idx(path: Path, stack: contextlib.ExitStack, limits: _Limits):
    """Opens an IDX file and reads and checks its header; returns (stream, _IdxHeader).

    The stream is positioned at the data; it is closed by ``stack``.
    """
    try:
        raw, st = open_regular(path, stack)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except OSError as err:
        raise DataError(f"Could not read IDX file {path}: {err}") from None
    if raw is None:
        raise DataError(
            f"IDX file {path} is not a regular file (a FIFO, device or socket); pass the file."
        )
    try:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
    except OSError as err:
        raise DataError(f"Could not read IDX file {path}: {err}") from None
    stream = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")) if compressed else raw
    what = f"IDX file {path}" + (" (after gzip decompression)" if compressed else "")
    try:
        head = stream.read(4)
        ndim = head[3] if len(head) == 4 else 0
        dims_bytes = stream.read(4 * ndim) if 1 <= ndim <= 4 else b""
    except (OSError, EOFError, zlib.error) as err:
        raise _corrupt_gzip(path, err) from None
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DataError(
            f"{path} is not an IDX file: expected a magic number starting with two zero bytes, "
            f"got {head[:4].hex(' ') or 'an empty file'}. Pass one of the IDX files "
            f"{', '.join(IDX_FILES)} (raw or .gz)."
        )
    code = head[2]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} ({np.dtype(d).name})" for c, d in _IDX_DTYPES.items())
        raise DataError(
            f"{what} has unknown element type code 0x{code:02X}; expected one of {known}."
        )
    if not 1 <= ndim <= 4:
        raise DataError(f"{what} declares {ndim} dimensions; expected 1 to 4.")
    header_len = 4 + 4 * ndim
    if len(dims_bytes) < 4 * ndim:
        raise DataError(
            f"{what} is truncated: expected at least {header_len} bytes of header, got "
            f"{4 + len(dims_bytes)}."
        )
    info = _IdxHeader(struct.unpack(f">{ndim}I", dims_bytes), np.dtype(_IDX_DTYPES[code]),
                      header_len, what)
    _check_declared(f"{what} declares shape {info.dims} of {info.dtype.name}", info.dims[0],
                    info.nbytes, limits)
    expected = header_len + info.nbytes
    if not compressed and expected != st.st_size:
        problem = (
            "it is truncated"
            if st.st_size < expected
            else f"it has {st.st_size - expected:,} trailing bytes"
        )
        raise DataError(
            f"{what} has the wrong size for shape {info.dims} of {info.dtype.name}: expected "
            f"{expected:,} bytes, got {st.st_size:,} ({problem}). Download or copy it again."
        )
    if compressed and expected > st.st_size * MAX_DEFLATE_RATIO:
        raise DataError(
            f"{what} declares shape {info.dims} of {info.dtype.name} ({expected:,} bytes), more "
            f"than a gzip file of {st.st_size:,} bytes can hold. It is truncated or corrupt: "
            "download or copy it again."
        )
    return stream, info


def _idx_header(path: Path, limits: _Limits) -> _IdxHeader:
    """Reads and checks only the header of an IDX file (see :func:`read_idx`)."""
    with contextlib.ExitStack() as stack:
        return _open_idx(path, stack, limits)[1]


def _corrupt_gzip(path: Path, err: BaseException) -> DataError:
    return DataError(
        f"IDX file {path} starts like a gzip file but is not a valid gzip stream ({err}). It "
        "is corrupt or truncated: download or copy it again."
    )


def _find_idx_file(directory: Path, base: str) -> Path | None:
    for candidate in (directory / base, directory / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_idx_files(directory: Path) -> bool:
    return directory.is_dir() and any(_find_idx_file(directory, b) for b in IDX_FILES)


def _load_idx_dir(
    directory: Path,
    name: str,
    source: str,
    num_classes: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
    limits: _Limits = _DEFAULT_LIMITS,
) -> Dataset:
    """Loads the four IDX files in ``directory`` (raw or .gz) as a Dataset: the training split
    whole, the test split's first ``limits.n_test`` examples (see :func:`load_dataset`)."""
    found_or_none = {base: _find_idx_file(directory, base) for base in IDX_FILES}
    missing = [f"{base}[.gz]" for base, p in found_or_none.items() if p is None]
    if missing:
        raise DataError(f"Folder {directory} lacks the IDX file(s) {', '.join(missing)}.")
    found = {base: p for base, p in found_or_none.items() if p is not None}
    # Shapes, pairing and sizes come from the headers alone: a folder that cannot be the data
    # set is refused before anything is decompressed or allocated.
    headers = {base: _idx_header(p, limits) for base, p in found.items()}
    _check_declared(f"The IDX files in {directory} declare together", 0,
                    sum(h.nbytes for h in headers.values()), limits)
    for prefix in ("train", "t10k"):
        images_base, labels_base = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        images, labels = headers[images_base].dims, headers[labels_base].dims
        if len(images) != 3:
            raise DataError(
                f"{found[images_base]} must hold images of shape (N, H, W); got shape {images}."
            )
        if len(labels) != 1:
            raise DataError(f"{found[labels_base]} must hold labels of shape (N,); got {labels}.")
        if images[0] != labels[0]:
            raise DataError(
                f"{found[images_base].name} and {found[labels_base].name} in {directory} do not "
                f"pair up: {images[0]} images but {labels[0]} labels. Use files from the same "
                "release."
            )
        if image_shape is not None and (*images[1:], 1) != image_shape:
            raise DataError(
                f"{directory}: {found[images_base].name} declares images of shape "
                f"{(*images[1:], 1)} (H, W, C), but {name} images are {image_shape}. These are "
                f"not {name} files."
            )
    arrays = {}
    n_test = headers["t10k-labels-idx1-ubyte"].dims[0]
    for split, prefix, rows in (("train", "train", None), ("test", "t10k", limits.n_test)):
        images_path = found[f"{prefix}-images-idx3-ubyte"]
        labels_path = found[f"{prefix}-labels-idx1-ubyte"]
        arrays[f"x_{split}"] = _to_images(
            read_idx(images_path, rows=rows, max_bytes=limits.max_bytes), str(images_path))
        arrays[f"y_{split}"], _ = _to_labels(
            read_idx(labels_path, rows=rows, max_bytes=limits.max_bytes), str(labels_path))
    return _make_dataset(name, arrays, _first(source, limits.n_test, n_test), num_classes,
                         image_shape, where=str(directory))

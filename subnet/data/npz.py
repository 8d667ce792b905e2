"""``.npz`` data files: a zip of ``.npy`` arrays, read without unpickling.

Every member's ``.npy`` header is read (:func:`subnet.data.archive.read_npy_header`) and its
declared size checked before any example is read; only the rows asked for are decompressed.
"""

from __future__ import annotations

import contextlib
import math
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from subnet.data.archive import (
    ZIP_READ_ERRORS,
    implausible_member,
    open_regular,
    read_npy_header,
    read_rows,
)
from subnet.data.arrays import (
    _DEFAULT_LIMITS,
    _check_declared,
    _convert,
    _first,
    _layout_of_header,
    _Limits,
    _make_dataset,
    _Names,
)
from subnet.data.dataset import LAYOUTS, Dataset
from subnet.errors import DataError

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "num_classes", "layout")
_NPY_MAGIC = b"\x93NUMPY"
_MAX_LAYOUT_BYTES = 256  # a layout name is a short string: its member is read only below this


class _NpyMember(NamedTuple):
    """A ``.npz`` member whose ``.npy`` header was read and checked (see _npz_members)."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    header_len: int


def _open_npz(path: Path, stack: contextlib.ExitStack) -> zipfile.ZipFile:
    """Opens a .npz file as a zip archive (closed by ``stack``), reading no array yet."""
    save = ("Save data sets with numpy.savez(path, x_test=..., y_test=..., x_train=..., "
            "y_train=...).")
    try:
        f, _ = open_regular(path, stack)
        if f is None:
            raise DataError(
                f"Data file {path} is not a regular file (a FIFO, device or socket). {save}"
            )
        start = f.read(len(_NPY_MAGIC))
        f.seek(0)
    except FileNotFoundError:
        raise DataError(f"Data file not found: {path}") from None
    except OSError as err:
        raise DataError(f"Could not read {path} as a .npz archive ({err}). {save}") from None
    if start == _NPY_MAGIC:
        raise DataError(
            f"{path} holds a single array, not a .npz archive with keys x_test, y_test (and "
            "optionally x_train, y_train). Save it with numpy.savez(path, x_test=..., y_test=...)."
        )
    try:
        return stack.enter_context(zipfile.ZipFile(f))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
        raise DataError(f"Could not read {path} as a .npz archive ({err}). {save}") from None


def _npz_members(path: Path, archive: zipfile.ZipFile, keys: Sequence[str],
                 limits: _Limits) -> dict[str, _NpyMember]:
    """Checks the ``.npy`` header of each key's member; returns key -> :class:`_NpyMember`.

    Reads only the headers (:func:`~subnet.data.archive.read_npy_header`): an array may declare
    at most :data:`MAX_EXAMPLES` along its first axis, the arrays together at most
    ``limits``' bytes (decompressed; :data:`MAX_BYTES` by default); the zip entry
    must hold exactly the declared size, and no more than deflate can make of its compressed
    bytes (:func:`~subnet.data.archive.implausible_member`). Object arrays (which would need
    unpickling) are refused.
    """
    fp = archive.fp
    assert fp is not None, "the archive is open"
    archive_size = os.fstat(fp.fileno()).st_size
    present = set(archive.namelist())
    members, total = {}, 0
    for key in keys:
        names = [n for n in (f"{key}.npy", key) if n in present]
        info = archive.getinfo(names[0])
        where = f"{path}: key {key!r}"
        try:
            with archive.open(info) as member:
                shape, fortran, dtype, header_len = read_npy_header(member)
        except ZIP_READ_ERRORS as err:
            raise DataError(f"{path}: could not read key {key!r} ({err}).") from None
        if dtype.hasobject:
            raise DataError(
                f"{path}: could not read key {key!r}: it holds Python objects (dtype {dtype}), "
                "which subnet never unpickles. Store numeric arrays (uint8 images, int labels)."
            )
        if any(d < 0 for d in shape) or dtype.itemsize == 0:
            raise DataError(f"{where} declares the impossible shape {tuple(shape)} of {dtype}. "
                            "The file is corrupt: save it again.")
        nbytes = math.prod(shape) * dtype.itemsize
        _check_declared(f"{where} declares shape {tuple(shape)} of {dtype}",
                        shape[0] if shape else 1, nbytes, limits)
        total += nbytes
        stored = info.compress_size
        if info.file_size != header_len + nbytes or implausible_member(info, archive_size):
            raise DataError(
                f"{where} declares shape {tuple(shape)} of {dtype} ({header_len + nbytes:,} "
                f"bytes), but its zip entry holds {info.file_size:,} bytes from {stored:,} "
                f"compressed in a file of {archive_size:,}. The file is truncated or corrupt: "
                "save it again."
            )
        members[key] = _NpyMember(info, tuple(int(d) for d in shape), dtype, bool(fortran),
                                  header_len)
    _check_declared(f"The arrays of {path} declare together", 0, total, limits)
    return members


def _read_member(path: Path, archive: zipfile.ZipFile, key: str, member: _NpyMember,
                 rows: int | None = None) -> np.ndarray:
    """Reads a checked member's array, only its first ``rows`` along the first axis when given.

    The member is decompressed as a stream, in bounded blocks, and only as far as the rows
    asked for: memory follows what is read, not what the file holds. (A Fortran-ordered array,
    which numpy writes only when asked, is read whole; its size was checked.)
    """
    shape, whole = member.shape, True
    if rows is not None and shape and rows < shape[0] and not member.fortran_order:
        shape, whole = (rows, *shape[1:]), False
    stored = member.shape[::-1] if member.fortran_order else shape
    try:
        with archive.open(member.info) as stream:
            stream.read(member.header_len)
            arr, _, _ = read_rows(stream, member.dtype, stored, check_end=whole)
    except ZIP_READ_ERRORS as err:
        raise DataError(f"{path}: could not read key {key!r} ({err}).") from None
    if arr is None:
        raise DataError(f"{path}: could not read key {key!r} (its zip entry ends before or after "
                        "the declared size). The file is truncated or corrupt: save it again.")
    if member.fortran_order:
        arr = arr.T if rows is None or not shape else np.ascontiguousarray(arr.T[:rows])
    return arr


def _load_npz(
    path: Path,
    name: str | None = None,
    source: str | None = None,
    num_classes: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
    layout_3d: str = "images",
    limits: _Limits = _DEFAULT_LIMITS,
) -> Dataset:
    """Loads a .npz file: x_test, y_test, optionally x_train, y_train, num_classes and layout.

    The layout of the examples is the file's ``layout`` key, else follows from the rank and
    dtype of ``x_test``, with ``layout_3d`` for 3-D arrays (see :func:`load_dataset`). Every
    array's ``.npy`` header is read and its declared size checked (see :func:`_npz_members`),
    and the shapes of the x and y arrays checked against the layout and each other, before any
    example is read. Of the test split, only the first ``limits.n_test`` examples are read.
    """
    with contextlib.ExitStack() as stack:
        archive = _open_npz(path, stack)
        keys = {n[:-4] if n.endswith(".npy") else n for n in archive.namelist()}
        missing = [k for k in ("x_test", "y_test") if k not in keys]
        if missing:
            raise DataError(
                f"{path} lacks the key(s) {', '.join(missing)}; it has {sorted(keys)}. A data "
                "file needs x_test and y_test, and optionally both x_train and y_train."
            )
        if ("x_train" in keys) != ("y_train" in keys):
            given, absent = ("x_train", "y_train") if "x_train" in keys else ("y_train", "x_train")
            raise DataError(
                f"{path} has the key {given} but not {absent}. Store both training arrays, or "
                "neither for a test-only data set."
            )
        members = _npz_members(path, archive, [k for k in _NPZ_KEYS if k in keys], limits)

        def get(key: str) -> np.ndarray:
            rows = limits.n_test if key.endswith("_test") else None
            return _read_member(path, archive, key, members[key], rows)

        layout, why = _npz_layout(path, members, get, layout_3d)
        if image_shape is not None and layout != "images":
            raise DataError(f"{path}: its key 'layout' says {layout!r}, but {name} holds images. "
                            f"These are not {name} files.")
        hint = ("" if "layout" in members or len(members["x_test"].shape) != 3 else
                ", or, if they are (N, L, C) sequences, save the file with layout='sequences' "
                "(numpy.savez(..., layout='sequences'))")
        arrays, needed = _convert(_Names(str(path), file=True), members, get, layout, why, hint)
        if num_classes is None:
            num_classes = needed
            if "num_classes" in keys:
                max_label = max(int(arrays[k].max()) for k in ("y_train", "y_test") if k in arrays)
                stored = get("num_classes")
                if (
                    stored.shape != ()
                    or stored.dtype.kind not in "iu"
                    or int(stored) < max_label + 1
                ):
                    raise DataError(
                        f"{path}: key 'num_classes' must be a scalar integer of at least "
                        f"{max_label + 1} (largest label + 1), got {stored!r}."
                    )
                num_classes = max(num_classes, int(stored))
    n_test = members["x_test"].shape[0] if members["x_test"].shape else 0
    return _make_dataset(
        name or path.stem, arrays, _first(source or str(path), limits.n_test, n_test),
        num_classes, image_shape, str(path), layout,
    )


def _npz_layout(path: Path, members: dict[str, _NpyMember],
                get: Callable[[str], np.ndarray], layout_3d: str) -> tuple[str, str]:
    """The layout of a .npz file's examples, and where it came from (for messages).

    Decided from the ``layout`` key and the headers alone; only the ``layout`` member (a few
    bytes) is read.
    """
    names = ", ".join(repr(n) for n in LAYOUTS)
    if "layout" in members:
        member = members["layout"]
        if (member.shape != () or member.dtype.kind not in "US"
                or member.info.file_size > _MAX_LAYOUT_BYTES):
            raise DataError(
                f"{path}: key 'layout' must be one string, one of {names}; got an array of shape "
                f"{member.shape} and dtype {member.dtype}. Save it with numpy.savez(..., "
                "layout='tokens')."
            )
        stored: object = get("layout")[()]
        if isinstance(stored, bytes):
            stored = stored.decode("ascii", "backslashreplace")
        value = str(stored)
        if value not in LAYOUTS:
            raise DataError(f"{path}: key 'layout' must be one of {names}; got {value[:40]!r}.")
        return value, "from the file's key 'layout'"
    x_test = members["x_test"]
    return _layout_of_header(_Names(str(path), file=True), x_test.shape, x_test.dtype,
                             layout_3d)

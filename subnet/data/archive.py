"""One reader for untrusted files: zip archives, ``.npy`` headers, bounded reads.

Data files (:mod:`subnet.data`), model files (:mod:`subnet.models`) and mask records are read
from files nobody vouched for. What such a file *declares* (a zip member's size, an array's shape
and dtype, the members an archive lists) is read and checked before anything is allocated or
decompressed, and only then is the data read, in bounded blocks. This module holds the parts
those readers share; each caller keeps its own limits and its own messages:

- :func:`open_regular` opens a path only if it is a regular file, without blocking on a FIFO;
- :func:`zip_member_count` reads how many members an archive lists from its end record, before
  ``zipfile`` builds an object per member;
- :func:`expands_beyond` and :func:`implausible_member` tell a decompression bomb or a lying zip
  entry from its declared and stored sizes;
- :func:`read_npy_header` reads a ``.npy`` header (never the data, never unpickling) into a
  :class:`NpyHeader` whose :attr:`~NpyHeader.nbytes` can be checked before allocation;
- :func:`read_rows` reads a declared array from a stream in bounded blocks, only as far as the
  rows asked for.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import zipfile
import zlib
from typing import IO, BinaryIO, NamedTuple

import numpy as np

__all__ = [
    "MAX_DEFLATE_RATIO",
    "NPY_VERSIONS",
    "ZIP_READ_ERRORS",
    "NpyHeader",
    "expands_beyond",
    "implausible_member",
    "open_regular",
    "read_npy_header",
    "read_rows",
    "zip_member_count",
]

MAX_DEFLATE_RATIO = 1032
"""Deflate (gzip, zip) expands at most this many times: a larger declared size is a lie."""

READ_BLOCK = 1 << 20
"""Bytes :func:`read_rows` reads (and decompresses) at a time."""

NPY_VERSIONS: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (3, 0))
"""The ``.npy`` format versions :func:`read_npy_header` reads by default."""

ZIP_READ_ERRORS = (OSError, ValueError, EOFError, RuntimeError, NotImplementedError,
                   zipfile.BadZipFile, zlib.error)
"""What reading a damaged or hostile zip member can raise (RuntimeError: encrypted;
NotImplementedError: an unknown compression method; zlib.error: a corrupt deflate stream)."""


def open_regular(path: os.PathLike | str,
                 stack: contextlib.ExitStack) -> tuple[BinaryIO | None, os.stat_result]:
    """Opens ``path`` for binary reading if it is a regular file: (file, stat), or (None, stat).

    Opened without blocking, so that a FIFO is refused rather than waited on.

    Args:
        path: The file to open.
        stack: Closes the file on the way out.

    Returns:
        ``(file, stat)`` for a regular file, ``(None, stat)`` for anything else (a FIFO, a
        device, a socket, a folder).

    Raises:
        OSError: If ``path`` cannot be opened (FileNotFoundError if it does not exist).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None, st
        f = os.fdopen(fd, "rb")
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return stack.enter_context(f), st


def zip_member_count(file: BinaryIO) -> int:
    """How many members a zip archive lists, read from its (zip64) end record alone.

    Args:
        file: The archive, open for binary reading and seekable.

    Returns:
        The number of members the end of central directory record declares.

    Raises:
        zipfile.BadZipFile: If the file has no end of central directory record.
        OSError: If the file cannot be read.
    """
    # The stdlib's reader of the (zip64) end record; private, so typeshed does not declare it.
    end = zipfile._EndRecData(file)  # type: ignore[attr-defined]
    if end is None:
        raise zipfile.BadZipFile("no end of central directory record")
    return end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]  # private, as above


def expands_beyond(declared: int, stored: int, ratio: float, floor: int = 0) -> bool:
    """Whether ``declared`` bytes are above ``floor`` and more than ``ratio`` times ``stored``.

    Args:
        declared: The bytes a zip member or dataset declares once decompressed.
        stored: The bytes it takes in the file (a stored size of 0 counts as 1).
        ratio: The largest expansion accepted, e.g. :data:`MAX_DEFLATE_RATIO`.
        floor: Declared sizes up to this many bytes are accepted whatever their ratio.

    Returns:
        True for a decompression bomb or a lying header, False otherwise.
    """
    return declared > floor and declared > ratio * max(stored, 1)


def implausible_member(info: zipfile.ZipInfo, archive_size: int) -> bool:
    """Whether a zip entry claims more than its archive can hold.

    Args:
        info: The entry, from the archive's central directory.
        archive_size: The size of the archive file in bytes.

    Returns:
        True if its stored bytes exceed the archive, or its declared size is more than deflate
        can make of them (:data:`MAX_DEFLATE_RATIO`).
    """
    return (info.compress_size > archive_size
            or expands_beyond(info.file_size, info.compress_size, MAX_DEFLATE_RATIO))


class NpyHeader(NamedTuple):
    """What a ``.npy`` header declares.

    Attributes:
        shape: The array's shape, as the header writes it (not yet checked).
        fortran_order: Whether the data is stored in Fortran (column-major) order.
        dtype: The array's dtype (it may hold objects: check ``dtype.hasobject``).
        header_len: Bytes from the start of the ``.npy`` data to the array's first byte.
    """

    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    header_len: int

    @property
    def nbytes(self) -> int:
        """The bytes the declared array takes (its data, without the header)."""
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(stream: IO[bytes],
                    versions: tuple[tuple[int, int], ...] = NPY_VERSIONS) -> NpyHeader:
    """Reads a ``.npy`` header from the start of ``stream``, leaving it at the array's data.

    Only the magic string and the header are read; nothing is allocated from what they declare
    and nothing is unpickled, so the caller can check the shape, the dtype and
    :attr:`NpyHeader.nbytes` against its limits before reading the data (with
    :func:`read_rows`).

    Args:
        stream: A binary stream at the start of a ``.npy`` file or zip member; it must support
            ``tell()``.
        versions: The ``.npy`` format versions accepted.

    Returns:
        The :class:`NpyHeader`.

    Raises:
        ValueError: If the stream is not a ``.npy`` file, its version is not in ``versions``
            ("unsupported .npy format version (4, 0)"), or its header is malformed.
        OSError, EOFError: If the stream cannot be read (a zip member can also raise
            the other :data:`ZIP_READ_ERRORS`).
    """
    version = np.lib.format.read_magic(stream)
    if version not in versions:
        raise ValueError(f"unsupported .npy format version {version}")
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    return NpyHeader(tuple(shape), bool(fortran), dtype, stream.tell())


def read_rows(stream, dtype: np.dtype, shape: tuple[int, ...], *, check_end: bool):
    """Reads a C-ordered array of ``shape`` from ``stream`` in bounded blocks.

    Only the bytes of ``shape`` are read (and, with ``check_end``, one more to find trailing
    bytes), so memory and decompression follow the rows asked for. Returns ``(array, got,
    extra)``: the array, or None when the stream held fewer bytes (``got``) or, with
    ``check_end``, more (``extra`` is 1).
    """
    arr = np.empty(shape, dtype=dtype)
    # .data is memoryview(...); numpy's stubs give ndarray __buffer__ only for Python 3.12+
    buf = arr.reshape(-1).view(np.uint8).data
    got, extra = 0, 0
    while got < len(buf):
        n = stream.readinto(buf[got:got + READ_BLOCK])
        if not n:
            break
        got += n
    if got == len(buf) and check_end:
        extra = len(stream.read(1))
    return (arr if got == len(buf) and not extra else None), got, extra

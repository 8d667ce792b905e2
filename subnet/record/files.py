"""A record folder's files: their names, how chunk files are written, and how the untrusted files
of a folder are read (sizes and headers checked before any data), and the folder's claim.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so an
interrupted run loses at most the chunk in flight. Chunk files are byte-deterministic: the same
arrays always give the same bytes, so shards and resumed records can be compared file by file.
A folder's ``meta.json``, ``labels.npy`` and chunk files are checked against the limits
(:data:`MAX_CHUNK_BYTES`, :data:`subnet.record.meta.MAX_EXAMPLES`, :data:`subnet.masks.MAX_MASKS`)
and against the files' real sizes before anything is read, and only regular files are opened
(the readers of untrusted files are :mod:`subnet.data.archive`'s).

Pure Python and numpy: no Keras, no TensorFlow.
"""

from __future__ import annotations

import contextlib
import filecmp
import io
import json
import os
import re
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from subnet import _outdir
from subnet._io import atomic_path
from subnet.data.archive import (
    ZIP_READ_ERRORS,
    implausible_member,
    open_regular,
    read_npy_header,
)
from subnet.errors import InputError, RecordError
from subnet.masks import MAX_MASKS
from subnet.record.meta import FORMAT, MAX_EXAMPLES, _check_meta, _check_num_classes

_META = "meta.json"
_LABELS = "labels.npy"
_EXAMPLES = "example_indices.npy"
_CHUNK_RE = re.compile(r"^chunk_(\d{10,})_(\d{10,})\.npz$")
# Temporary files left by subnet._io.atomic_path: ".<name>.<random>.tmp<suffix>".
_TEMP_RE = re.compile(r"^\.(chunk_\d+_\d+\.npz|meta\.json|labels\.npy|example_indices\.npy)\..*"
                      r"\.tmp(\.npz|\.json|\.npy)?$")

MAX_CHUNK_BYTES = 512 << 20
"""The most bytes one chunk file's arrays may hold (512 MiB; 1,000 masks of 10,000 examples take
30 MB). ``write_chunk`` refuses a larger chunk; loading refuses a chunk file that declares more."""

_MAX_META_BYTES = 64 << 20  # meta.json
_NPY_VERSIONS = ((1, 0), (2, 0))  # the .npy versions numpy writes a record's arrays in
# What reading a damaged chunk file can raise (KeyError: a member it lacks).
_READ_ERRORS = (*ZIP_READ_ERRORS, KeyError)
_ARRAYS = ("masks", "predicted", "true_prob")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _chunk_name(start: int, stop: int) -> str:
    return f"chunk_{start:010d}_{stop:010d}.npz"


def _predicted_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if num_classes <= 256 else np.dtype(np.uint16)


def _chunk_bytes(k: int, n_units: int, n_examples: int, pred_dtype: np.dtype) -> int:
    """Bytes of the arrays of a chunk of ``k`` masks (packed masks, predicted, true_prob)."""
    return k * (-(-n_units // 8) + n_examples * (pred_dtype.itemsize + 2))


def _check_chunk_bytes(k: int, n_units: int, n_examples: int, pred_dtype: np.dtype,
                       name: str) -> None:
    size = _chunk_bytes(k, n_units, n_examples, pred_dtype)
    if size > MAX_CHUNK_BYTES:
        most = max(1, MAX_CHUNK_BYTES // _chunk_bytes(1, n_units, n_examples, pred_dtype))
        raise InputError(f"A chunk of {k:,} masks of {n_units:,} units and {n_examples:,} "
                         f"examples takes {size:,} bytes, above the limit of "
                         f"{MAX_CHUNK_BYTES:,} (subnet.record.files.MAX_CHUNK_BYTES). Received: "
                         f"{name}={k}; use at most {most:,} masks per chunk.")


def _write_npz(dest: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes an uncompressed .npz atomically, with fixed zip metadata (byte-deterministic)."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, arr in arrays.items():
                    info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                    info.compress_type = zipfile.ZIP_STORED
                    info.create_system = 3
                    info.external_attr = 0o644 << 16
                    with zf.open(info, "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.ascontiguousarray(arr),
                                                  allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _corrupt(path: Path, why: str) -> RecordError:
    return RecordError(f"Chunk file {path} is corrupt or incomplete ({why}). Delete it and resume "
                       "the record (resume=True; command line: --resume) to recompute those "
                       "masks.")


def _inspect_chunk(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Reads a chunk's zip directory and array headers (not its data): name → (shape, dtype)."""
    try:
        archive_size = _regular_size(path)
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            expected = {f"{n}.npy" for n in _ARRAYS}
            if set(infos) != expected:
                raise _corrupt(path, f"holds {sorted(infos)}, expected {sorted(expected)}")
            out = {}
            for name in _ARRAYS:
                info = infos[f"{name}.npy"]
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)  # named in the message
                    if version not in _NPY_VERSIONS:
                        raise _corrupt(path, f"{name} has .npy format version {version}")
                    member.seek(0)
                    header = read_npy_header(member, _NPY_VERSIONS)
                if implausible_member(info, archive_size):
                    raise _corrupt(path, f"{name} declares {info.file_size:,} bytes from "
                                         f"{info.compress_size:,} in a file of {archive_size:,}")
                if header.fortran_order:
                    raise _corrupt(path, f"{name} is Fortran-ordered")
                size = header.header_len + header.nbytes
                if size != info.file_size:
                    raise _corrupt(path, f"{name} holds {info.file_size} bytes, its header "
                                         f"says {size}")
                out[name] = (header.shape, header.dtype)
            return out
    except RecordError:
        raise
    except _READ_ERRORS as err:
        raise _corrupt(path, f"{type(err).__name__}: {err}") from None


def _regular_size(path: Path) -> int:
    """The size of ``path``; OSError if it is not a regular file (a FIFO would block a read)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path} is not a regular file")
    return st.st_size


def _check_chunk_header(path: Path, k: int, n_units: int, n_examples: int,
                        pred_dtype: np.dtype) -> None:
    """Checks a chunk file's arrays have the shapes and dtypes a record with these sizes needs."""
    size = _chunk_bytes(k, n_units, n_examples, pred_dtype)
    if size > MAX_CHUNK_BYTES:
        raise _corrupt(path, f"its {k:,} masks of {n_units:,} units and {n_examples:,} examples "
                             f"would take {size:,} bytes, above the limit of {MAX_CHUNK_BYTES:,} "
                             f"(subnet.record.files.MAX_CHUNK_BYTES)")
    expected = {"masks": ((k, -(-n_units // 8)), np.dtype(np.uint8)),
                "predicted": ((k, n_examples), pred_dtype),
                "true_prob": ((k, n_examples), np.dtype(np.float16))}
    found = _inspect_chunk(path)
    for name, (shape, dtype) in expected.items():
        if found[name] != (shape, dtype):
            raise _corrupt(path, f"{name} has shape {found[name][0]} and dtype "
                                 f"{found[name][1]}, expected {shape} and {dtype}")


class _ChunkFile(NamedTuple):
    start: int
    stop: int
    path: Path


def _scan_chunks(folder: Path) -> list[_ChunkFile]:
    """Chunk files of a folder, sorted by start; refuses bad names and overlaps."""
    chunks = []
    for entry in os.scandir(folder):
        m = _CHUNK_RE.match(entry.name)
        if not m:
            continue
        start, stop = int(m.group(1)), int(m.group(2))
        if stop > MAX_MASKS:
            raise RecordError(f"Chunk file {entry.path} names masks [{start}, {stop}), beyond "
                              f"the limit of {MAX_MASKS:,} masks (subnet.masks.MAX_MASKS). It is "
                              f"not subnet's; delete it and resume the record.")
        if stop <= start:
            raise RecordError(f"Chunk file {entry.path} names an empty mask range "
                              f"[{start}, {stop}). Delete it and resume the record.")
        chunks.append(_ChunkFile(start, stop, Path(entry.path)))
    chunks.sort()
    for prev, cur in zip(chunks, chunks[1:], strict=False):
        if cur.start < prev.stop:
            raise RecordError(f"Chunk files {prev.path.name} and {cur.path.name} in {folder} "
                              f"overlap (masks [{cur.start}, {min(prev.stop, cur.stop)})). "
                              f"Delete one of them.")
    return chunks


def _read_meta(folder: Path) -> dict:
    path = folder / _META
    try:
        size = _regular_size(path)
        if size > _MAX_META_BYTES:
            raise RecordError(f"{path} holds {size:,} bytes, more than a record's metadata may "
                              f"({_MAX_META_BYTES:,}). It is not subnet's; start the record again "
                              f"in another folder.")
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{folder} is not a mask record: it has no {_META}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise RecordError(f"Could not read {path}: {err}. The record's metadata is damaged; "
                          f"start the record again in another folder.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise RecordError(f"{path} is not a mask record's metadata: expected format "
                          f"'{FORMAT}', found {found!r}.")
    try:
        _check_meta(meta)
        _check_num_classes(meta.get("num_classes"))
    except (TypeError, ValueError) as err:
        raise RecordError(f"{path} holds invalid metadata: {err}") from None
    return meta


def _read_vector(path: Path, n: int | None) -> np.ndarray:
    """Reads an int64 vector of ``n`` entries (at most MAX_EXAMPLES), checking its header first."""
    want = f"an int64 vector of {n if n else 'n_examples'} entries"
    try:
        with contextlib.ExitStack() as stack:
            f, st = open_regular(path, stack)  # a FIFO must not block
            if f is None:
                raise RecordError(f"{path} is not a regular file; the record is damaged. Start "
                                  f"it again in another folder.")
            header = read_npy_header(f, _NPY_VERSIONS)
            shape, dtype = header.shape, header.dtype
            declared = header.header_len + header.nbytes
            size = st.st_size
            if dtype != np.int64 or len(shape) != 1 or (n is not None and shape[0] != n) \
                    or shape[0] > MAX_EXAMPLES:
                raise RecordError(f"{path} must hold {want} (at most {MAX_EXAMPLES:,}, "
                                  f"subnet.record.meta.MAX_EXAMPLES). Found dtype {dtype}, shape "
                                  f"{shape}.")
            if declared != size:
                raise ValueError(f"its header declares {declared:,} bytes, the file has "
                                 f"{size:,}")
            f.seek(0)
            arr = np.lib.format.read_array(f, allow_pickle=False)
    except FileNotFoundError:
        raise RecordError(f"The mask record in {path.parent} has no {path.name}; it is "
                          f"incomplete. Start it again in another folder.") from None
    except (OSError, ValueError, EOFError) as err:
        if isinstance(err, RecordError):
            raise
        raise RecordError(f"Could not read {path}: {err}.") from None
    return arr


def _remove_temp_files(folder: Path) -> None:
    for entry in os.scandir(folder):
        if _TEMP_RE.match(entry.name) and entry.is_file():
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass


def _is_empty_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    with os.scandir(path) as entries:
        return next(entries, None) is None


def _holds_chunk_files(path: Path) -> bool:
    with os.scandir(path) as entries:
        return any(_CHUNK_RE.match(e.name) for e in entries)


def _same_chunk(a: Path, b: Path) -> bool:
    """Whether two chunk files hold the same arrays (bytes first, then contents)."""
    if filecmp.cmp(a, b, shallow=False):
        return True
    try:
        with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
            return all(np.array_equal(x[n], y[n]) and x[n].dtype == y[n].dtype for n in _ARRAYS)
    except _READ_ERRORS:
        return False


# ------------------------------------------------------------------------- the record folder

RECORD_TOOL = "subnet.record"
"""The owner a record folder's marker names (:mod:`subnet._outdir`)."""


def holds_record(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a record's files (``meta.json`` or chunk files)."""
    path = Path(path)
    return path.is_dir() and ((path / _META).exists() or _holds_chunk_files(path))


def _is_unmarked_record(path: Path) -> bool:
    """Whether an unmarked folder is a record subnet made before record folders were marked:
    it holds a readable record ``meta.json`` and nothing but a record's files (and the
    temporary files of their atomic writes). Such a folder is adopted as subnet's."""
    with os.scandir(path) as entries:
        names = [e.name for e in entries]
    if _META not in names or not all(n in (_META, _LABELS, _EXAMPLES) or _CHUNK_RE.match(n)
                                     or _TEMP_RE.match(n) for n in names):
        return False
    try:
        _read_meta(path)
    except RecordError:
        return False
    return True


def check_record_folder(path: str | os.PathLike, *, resume: bool = False,
                        name: str = "`out`") -> None:
    """Refuses a folder a record may not be written into, writing nothing.

    A record goes into a new or empty folder, or a record folder subnet made: one marked by
    ``subnet.record``, or one that holds only a record's files with a valid ``meta.json`` (made
    before record folders were marked; adopted). Anything else is someone else's.

    Args:
        path: The record folder.
        resume: Word the refusal for a record to continue ("no record to resume at ...").
        name: What the message calls the folder (``--out``, ``out``).

    Raises:
        InputError: If ``path`` is a file, another tool's folder, or a non-empty folder that is
            not a record subnet made.
    """
    _outdir.check(path, RECORD_TOOL, name=name, adopt=_is_unmarked_record, resuming=resume)


def claim_record_folder(path: str | os.PathLike, *, resume: bool = False, name: str = "`out`"):
    """Claims a record folder for writing (:func:`check_record_folder` says which): created or
    adopted, marked ``subnet.record``, and locked, so that a second writer is refused at once
    ("... is in use by another record").

    Returns:
        A context manager yielding the :class:`subnet._outdir.Claim`.
    """
    return _outdir.claim(path, RECORD_TOOL, None, name=name, adopt=_is_unmarked_record,
                         resuming=resume)

"""The record of masks × examples → (predicted class, probability of the true class), and its
writing.

:class:`MaskRecord` reads a record folder (:class:`~subnet.record.reader._RecordReader`), starts
one (:meth:`MaskRecord.create`), continues one (:meth:`MaskRecord.resume`) and joins shards
(:meth:`MaskRecord.merge`); :class:`RecordWriter` writes the chunks, and :class:`MissingRanges`
says which are still to do. The folder's layout is described in :mod:`subnet.record`.

Pure Python and numpy: no Keras, no TensorFlow.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import itertools
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from subnet._io import atomic_path, atomic_write_bytes, atomic_write_text
from subnet.errors import InputError, InputTypeError, RecordError
from subnet.masks import MAX_MASKS
from subnet.record.files import (
    _EXAMPLES,
    _LABELS,
    _META,
    _check_chunk_bytes,
    _check_chunk_header,
    _chunk_name,
    _ChunkFile,
    _holds_chunk_files,
    _is_empty_dir,
    _npy_bytes,
    _predicted_dtype,
    _remove_temp_files,
    _same_chunk,
    _scan_chunks,
    _write_npz,
    check_record_folder,
    claim_record_folder,
)
from subnet.record.meta import (
    _RESERVED,
    FORMAT,
    RecordMeta,
    _check_count,
    _check_examples,
    _check_meta,
    _check_num_classes,
    _how_to_continue,
    _identity_difference,
    _is_int,
)
from subnet.record.reader import _RecordReader


class MissingRanges(Sequence):
    """The mask ranges still to do, as :meth:`RecordWriter.missing` returns them: gaps cut at
    multiples of ``chunk_size``, computed on demand (memory proportional to the gaps, not to the
    number of ranges).

    Attributes:
        n_masks: Number of masks in all the ranges.
        chunk_size: The chunk size the ranges are cut at.
    """

    def __init__(self, gaps: Sequence[tuple[int, int]], chunk_size: int):
        self._gaps = [(int(a), int(b)) for a, b in gaps if a < b]
        self.chunk_size = int(chunk_size)
        counts = [(b - 1) // chunk_size - a // chunk_size + 1 for a, b in self._gaps]
        self._ends = list(itertools.accumulate(counts))
        self.n_masks = sum(b - a for a, b in self._gaps)

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not _is_int(i):
            raise InputTypeError(f"MissingRanges indices must be ints. Received: {i!r}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"MissingRanges index out of range: {i} (of {n})")
        g = bisect.bisect_right(self._ends, i)
        a, b = self._gaps[g]
        k = i - (self._ends[g - 1] if g else 0)  # the k-th piece of gap g
        cs = self.chunk_size
        lo = a if k == 0 else (a // cs + k) * cs
        return range(lo, min(b, (a // cs + k + 1) * cs))

    def __iter__(self) -> Iterator[range]:
        cs = self.chunk_size
        for a, b in self._gaps:
            while a < b:
                cut = min(b, (a // cs + 1) * cs)
                yield range(a, cut)
                a = cut

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == len(self) and all(x == y for x, y in zip(self, other, strict=True))

    def __repr__(self) -> str:
        head = ", ".join(repr(r) for r in itertools.islice(self, 4))
        more = f", ... ({len(self)} ranges)" if len(self) > 4 else ""
        return f"MissingRanges([{head}{more}], n_masks={self.n_masks})"


class RecordWriter:
    """Writes chunks into a mask record folder. Get one from :meth:`MaskRecord.create` or
    :meth:`MaskRecord.resume`; do not construct it directly.

    One writer per folder at a time; different shards of one record go into different folders and
    are joined with :meth:`MaskRecord.merge`.

    Attributes:
        path: The record folder.
        meta: The record's metadata (a copy).
        seed: Sampling seed.
        antithetic: Whether masks are drawn in antithetic pairs.
        keep: Keep probability per unit, float64 (n_units,).
        n_units: Number of units over all sites.
        n_examples: Number of examples.
        num_classes: Number of classes.
    """

    def __init__(self, path: Path, meta: dict, labels: np.ndarray, example_indices: np.ndarray):
        self.path = path
        self._meta = meta
        self.labels = labels
        self.example_indices = example_indices
        info = RecordMeta.from_dict(meta)
        self.seed = int(info.seed)
        self.antithetic = bool(info.antithetic)
        self.keep = info.keep()
        self.keep.flags.writeable = False
        self.n_units = int(self.keep.size)
        self.n_examples = int(labels.size)
        if info.num_classes is None:
            raise RecordError(f"{path / 'meta.json'} names no num_classes; the record is damaged.")
        self.num_classes = int(info.num_classes)
        self._pred_dtype = _predicted_dtype(self.num_classes)
        chunks = _scan_chunks(path)
        for c in chunks:
            _check_chunk_header(c.path, c.stop - c.start, self.n_units, self.n_examples,
                                self._pred_dtype)
        self._covered = [(c.start, c.stop) for c in chunks]

    @property
    def meta(self) -> dict:
        return copy.deepcopy(self._meta)

    def __repr__(self) -> str:
        done = sum(b - a for a, b in self._covered)
        return (f"RecordWriter('{self.path}', masks present={done}, planned="
                f"{self._meta['n_masks']}, units={self.n_units}, examples={self.n_examples})")

    def missing(self, n_masks: int, chunk_size: int) -> MissingRanges:
        """The mask ranges in [0, n_masks) that no chunk covers yet.

        Ranges are cut at multiples of ``chunk_size``, so that a resumed run writes the same chunk
        boundaries (and the same chunk files) as an uninterrupted one. They are computed lazily:
        the answer holds one entry per gap between chunks already written, not one per range.

        Args:
            n_masks: Number of masks wanted, an int in [0, MAX_MASKS].
            chunk_size: Largest chunk, an int in [1, MAX_MASKS], whose chunk file holds at most
                :data:`MAX_CHUNK_BYTES` for this record's units and examples.

        Returns:
            A :class:`MissingRanges`: a sequence (``len``, indexing, iteration, ``==`` with a
            list) of sorted, disjoint ranges, each of at most ``chunk_size`` masks and within one
            aligned block ``[k * chunk_size, (k + 1) * chunk_size)``; its ``n_masks`` is the
            number of masks they hold.

        Raises:
            TypeError: If a count is not an int.
            ValueError: If ``n_masks`` or ``chunk_size`` is out of range, or a chunk of
                ``chunk_size`` masks would exceed :data:`MAX_CHUNK_BYTES`.
        """
        n_masks = _check_count(n_masks, "n_masks", MAX_MASKS, "subnet.masks.MAX_MASKS",
                               "the number of masks wanted", low=0)
        chunk_size = _check_count(chunk_size, "chunk_size", MAX_MASKS, "subnet.masks.MAX_MASKS",
                                  "the most masks per chunk")
        _check_chunk_bytes(min(chunk_size, max(n_masks, 1)), self.n_units, self.n_examples,
                           self._pred_dtype, "chunk_size")
        # Gaps of [0, n_masks) between covered intervals; cut at aligned boundaries lazily.
        gaps, pos = [], 0
        for a, b in self._covered:
            if a >= n_masks:
                break
            if a > pos:
                gaps.append((pos, a))
            pos = max(pos, b)
        if pos < n_masks:
            gaps.append((pos, n_masks))
        return MissingRanges(gaps, chunk_size)

    def write_chunk(self, start: int, masks: np.ndarray, predicted: np.ndarray,
                    true_prob: np.ndarray) -> Path:
        """Validates and atomically writes the outcomes of masks [start, start + k).

        Args:
            start: Index of the first mask, a non-negative int.
            masks: Bool (k, n_units), True where a unit is kept; k >= 1.
            predicted: Int (k, n_examples), predicted classes in [0, num_classes).
            true_prob: Float (k, n_examples), probability of the true class in [0, 1]; stored as
                float16.

        Returns:
            The path of the chunk file written.

        Raises:
            TypeError: If an array has the wrong dtype.
            ValueError: If a shape or value is out of range, or the masks overlap masks already in
                the record.
        """
        if not _is_int(start) or start < 0:
            raise InputError(f"`start` must be a non-negative int. Received: start={start!r}")
        start = int(start)
        if start >= MAX_MASKS:
            raise InputError(f"`start` must be below {MAX_MASKS:,} (subnet.masks.MAX_MASKS). "
                             f"Received: start={start}")
        masks = np.asarray(masks)
        predicted = np.asarray(predicted)
        true_prob = np.asarray(true_prob)
        if masks.dtype != np.bool_:
            raise InputTypeError(f"`masks` must be a bool array. Received: masks with dtype "
                            f"{masks.dtype}")
        if masks.ndim != 2 or masks.shape[0] < 1 or masks.shape[1] != self.n_units:
            raise InputError(f"`masks` must have shape (k, n_units={self.n_units}) with k >= 1. "
                             f"Received: masks with shape {masks.shape}")
        k = masks.shape[0]
        if start + k > MAX_MASKS:
            raise InputError(f"`masks` must end at most at mask {MAX_MASKS:,} "
                             f"(subnet.masks.MAX_MASKS). Received: {k} masks from start={start}")
        _check_chunk_bytes(k, self.n_units, self.n_examples, self._pred_dtype, "len(masks)")
        self._check_per_example("predicted", predicted, "an int", k,
                                predicted.dtype != np.bool_
                                and np.issubdtype(predicted.dtype, np.integer))
        if predicted.size and (predicted.min() < 0 or predicted.max() >= self.num_classes):
            bad = predicted.min() if predicted.min() < 0 else predicted.max()
            raise InputError(f"`predicted` must hold classes in [0, num_classes="
                             f"{self.num_classes}). Received: a value {int(bad)}")
        self._check_per_example("true_prob", true_prob, "a float", k,
                                np.issubdtype(true_prob.dtype, np.floating))
        bad = ~((true_prob >= 0.0) & (true_prob <= 1.0))  # also catches NaN
        if bad.any():
            j = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
            raise InputError(f"`true_prob` must hold probabilities in [0, 1]. Received: "
                             f"true_prob[{j[0]}, {j[1]}]={float(true_prob[j])!r}")
        stop = start + k
        for a, b in self._covered:
            if a < stop and start < b:
                raise InputError(f"Masks [{start}, {stop}) overlap masks [{a}, {b}) already in "
                                 f"the record at {self.path} ({_chunk_name(a, b)}). Use "
                                 f"`missing()` to find the masks still to do.")
        dest = self.path / _chunk_name(start, stop)
        _write_npz(dest, {"masks": np.packbits(masks, axis=1),
                          "predicted": predicted.astype(self._pred_dtype),
                          "true_prob": true_prob.astype(np.float16)})
        self._covered.append((start, stop))
        self._covered.sort()
        return dest

    def _check_per_example(self, name: str, array: np.ndarray, kind: str, k: int,
                           kind_ok: bool) -> None:
        """A chunk's per-mask, per-example array: of its kind (``kind_ok``), shape (k, examples)."""
        if not kind_ok:
            raise InputTypeError(f"`{name}` must be {kind} array. Received: {name} with dtype "
                                 f"{array.dtype}")
        if array.shape != (k, self.n_examples):
            raise InputError(f"`{name}` must have shape (k={k}, n_examples={self.n_examples}). "
                             f"Received: {name} with shape {array.shape}")

    def annotate(self, key: str, value: Any) -> None:
        """Adds or replaces one descriptive entry of ``meta.json`` (atomically).

        Args:
            key: The entry's name; not one that defines the record's identity (seed,
                antithetic, sites, fingerprints) or one of the record's own.
            value: A JSON-serialisable value.

        Raises:
            ValueError: If ``key`` is protected or ``value`` is not JSON-serialisable.
        """
        protected = {"seed", "antithetic", "sites", "model_fingerprint", "data_fingerprint",
                     *_RESERVED}
        if not isinstance(key, str) or key in protected:
            raise InputError(f"Cannot annotate the record with key {key!r}: it is not a string "
                             f"or it defines the record ({sorted(protected)}).")
        meta = dict(self._meta)
        meta[key] = value
        meta = _check_meta(meta)
        atomic_write_text(self.path / _META, json.dumps(meta, indent=2, sort_keys=True))
        self._meta = meta

    def close(self) -> MaskRecord:
        """Finishes writing and returns the record, loaded and validated from disk."""
        return MaskRecord.load(self.path)


class MaskRecord(_RecordReader):
    """The record of masks × examples → (predicted class, probability of the true class).

    Loading reads only the metadata, the labels and each chunk file's headers. The big arrays
    (:attr:`masks`, :attr:`predicted`, :attr:`true_prob`, :attr:`correct`) are read on first use
    and cached (read-only); :meth:`iter_chunks`, :meth:`mask_accuracy` and
    :meth:`example_accuracy` stream over chunks with memory bounded by one chunk.

    Masks present need not be contiguous (a shard holds any set of ranges); arrays are in
    mask-index order and :attr:`mask_ids` gives each row's mask index.

    Attributes:
        path: The record folder.
        seed: Sampling seed.
        antithetic: Whether masks were drawn in antithetic pairs.
        num_classes: Number of classes.
        n_units: Number of units over all sites.
        n_examples: Number of examples.
        n_masks: Number of masks present.
        labels: True classes, int64 (n_examples,).
        example_indices: Index of each example in its data set, int64 (n_examples,).
    """

    # ------------------------------------------------------------------ construction

    @staticmethod
    def create(path: str | os.PathLike, meta: Mapping[str, Any], labels: Any,
               example_indices: Any, num_classes: int, exist_ok: bool = False) -> RecordWriter:
        """Starts a new record in folder ``path`` and returns its writer.

        Args:
            path: The record folder; created with its parents.
            meta: JSON-serialisable dict with at least ``seed`` (int >= 0), ``antithetic``
                (bool), ``n_masks`` (planned number of masks, int >= 0), ``sites`` (non-empty list
                of dicts with ``name`` (str, unique), ``units`` (int >= 1) and ``keep`` (float in
                (0, 1])), ``model_fingerprint`` (str), ``data_fingerprint`` (str), ``versions``
                (dict), plus anything else. The keys ``format`` and ``num_classes`` are the
                record's own; ``meta`` may hold ``num_classes`` only if it equals the argument.
            labels: True class of each example, 1-D ints in [0, num_classes), shape (n_examples,).
            example_indices: Index of each example in its data set, 1-D non-negative ints, shape
                (n_examples,).
            num_classes: Number of classes, 2 to 65536.
            exist_ok: If True, ``path`` may be an existing folder holding unrelated files. A folder
                that already holds a record (``meta.json`` or chunk files) is always refused.

        Returns:
            A :class:`RecordWriter`.

        Raises:
            TypeError, ValueError: If an argument is invalid.
            RecordError: If ``path`` is a non-empty folder (and ``exist_ok`` is False), holds a
                record, or is a file.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RecordError(f"Record path {path} is a file, not a folder; choose another path.")
        if path.is_dir() and not _is_empty_dir(path):
            has_record = (path / _META).exists() or _holds_chunk_files(path)
            if has_record or not exist_ok:
                what = "a mask record" if has_record else "files"
                raise RecordError(f"Folder {path} already holds {what}: use resume=True (command "
                                  "line: --resume) to continue it, or choose another folder.")
        return MaskRecord._start(path, meta, labels, example_indices, num_classes)

    @staticmethod
    def resume(path: str | os.PathLike, meta: Mapping[str, Any], labels: Any,
               example_indices: Any, num_classes: int | None = None) -> RecordWriter:
        """Opens a record to continue it, or starts it when ``path`` holds no record yet.

        The stored identity must equal the given one: ``model_fingerprint``,
        ``data_fingerprint``, ``seed``, ``antithetic``, ``sites`` (name, units, keep of each),
        ``num_classes`` (when given), ``labels`` and ``example_indices``. Other metadata keys keep
        their stored values, except ``n_masks``, which is set to the given plan (a record can be
        extended). Temporary files left by an interrupted write are removed.

        Args:
            path: The record folder.
            meta: As for :meth:`create`.
            labels: As for :meth:`create`.
            example_indices: As for :meth:`create`.
            num_classes: As for :meth:`create`; may be None when the record exists.

        Returns:
            A :class:`RecordWriter`; its :meth:`~RecordWriter.missing` tells what is left to do.

        Raises:
            TypeError, ValueError: If an argument is invalid.
            RecordError: If the stored identity differs (the message names the field), or the
                stored record is damaged.
        """
        path = Path(path)
        if not (path / _META).is_file():
            if path.is_dir() and _holds_chunk_files(path):
                raise RecordError(f"Folder {path} holds chunk files but no {_META}: it is not a "
                                  f"complete mask record. Choose another folder.")
            if num_classes is None:
                raise InputError(f"`num_classes` is needed to start a new record at {path}. "
                                 f"Received: num_classes=None")
            return MaskRecord._start(path, meta, labels, example_indices, num_classes)
        new = _check_meta(meta)
        if num_classes is not None:
            num_classes = _check_num_classes(num_classes)
        labels, example_indices = _check_examples(labels, example_indices, num_classes)
        stored = MaskRecord.load(path)
        new_cmp = dict(new) if num_classes is None else dict(new, num_classes=num_classes)
        diff = _identity_difference(stored._meta, stored.labels, stored.example_indices,
                                    new_cmp, labels, example_indices)
        if diff is not None:
            field, detail = diff
            raise RecordError(f"Cannot resume the record at {path} with this `{field}`: the "
                              f"record was made from {detail}; "
                              f"{_how_to_continue(field, stored._info)}use another folder.")
        meta_out = stored._meta
        if meta_out["n_masks"] != new["n_masks"]:
            meta_out["n_masks"] = new["n_masks"]
            atomic_write_text(path / _META, json.dumps(meta_out, indent=2, sort_keys=True))
        _remove_temp_files(path)
        return RecordWriter(path, meta_out, stored.labels, stored.example_indices)

    @staticmethod
    def _start(path: Path, meta: Any, labels: Any, example_indices: Any,
               num_classes: Any) -> RecordWriter:
        meta = _check_meta(meta)
        num_classes = _check_num_classes(num_classes)
        for key in _RESERVED:
            if key in meta and key != "num_classes":
                raise InputError(f"`meta` must not have the key '{key}' (the record's own). "
                                 f"Received: meta['{key}']={meta[key]!r}")
        if "num_classes" in meta and meta["num_classes"] != num_classes:
            raise InputError(f"`meta['num_classes']` must equal `num_classes`. Received: "
                             f"{meta['num_classes']!r} and {num_classes}")
        labels, example_indices = _check_examples(labels, example_indices, num_classes)
        meta["format"] = FORMAT
        meta["num_classes"] = num_classes
        path.mkdir(parents=True, exist_ok=True)
        _remove_temp_files(path)
        atomic_write_bytes(path / _LABELS, _npy_bytes(labels))
        atomic_write_bytes(path / _EXAMPLES, _npy_bytes(example_indices))
        # meta.json last: its presence means the record folder is fully initialised.
        atomic_write_text(path / _META, json.dumps(meta, indent=2, sort_keys=True))
        return RecordWriter(path, meta, labels, example_indices)

    @staticmethod
    def merge(records_or_paths: Iterable[MaskRecord | str | os.PathLike],
              out: str | os.PathLike) -> MaskRecord:
        """Joins shards of one record into a new record folder ``out``.

        Shards must have the same identity (model and data fingerprints, seed, antithetic, sites,
        num_classes, labels, example indices) and disjoint mask ranges; a chunk present in
        several shards is allowed only when its files hold identical arrays, and is kept once.
        The merged metadata is the first shard's, with ``n_masks`` the largest planned total.
        ``out`` is claimed as a record folder (:func:`claim_record_folder`: marked, and locked
        while the merge writes, so that a second writer is refused) and the chunk files are
        copied into it, ``meta.json`` last: a folder with ``meta.json`` is complete. A merge that
        fails removes what it wrote; one that was killed leaves a folder without ``meta.json``,
        which the next merge into it replaces.

        Args:
            records_or_paths: Records or record folders, at least one.
            out: The new record folder: new, empty, or a record folder subnet made that holds no
                record (``meta.json``).

        Returns:
            The merged record.

        Raises:
            RecordError: If shards differ in identity (the message names the field), overlap
                with different contents, or ``out`` holds a record.
            InputError: If ``out`` is not a folder a record may be written into, or in use by
                another record.
        """
        records = [r if isinstance(r, MaskRecord) else MaskRecord.load(r)
                   for r in records_or_paths]
        if not records:
            raise InputError("`records_or_paths` must name at least one record. Received: none")
        out = Path(out)
        check_record_folder(out)
        if (out / _META).exists():
            raise RecordError(f"Merge output {out} already holds a record; choose a new folder.")
        first = records[0]
        for other in records[1:]:
            diff = _identity_difference(first._meta, first.labels, first.example_indices,
                                        other._meta, other.labels, other.example_indices)
            if diff is not None:
                field, detail = diff
                raise RecordError(f"Cannot merge {first.path} and {other.path}: they differ in "
                                  f"`{field}`: {detail}.")
        chunks = sorted((c for r in records for c in r._chunks),
                        key=lambda c: (c.start, c.stop))
        kept: list[_ChunkFile] = []
        for c in chunks:
            if kept and c.start < kept[-1].stop:
                prev = kept[-1]
                if (c.start, c.stop) == (prev.start, prev.stop) and _same_chunk(prev.path, c.path):
                    continue
                raise RecordError(f"Cannot merge: chunk files {prev.path} and {c.path} overlap "
                                  f"(masks [{max(prev.start, c.start)}, "
                                  f"{min(prev.stop, c.stop)})) and differ.")
            kept.append(c)
        meta = copy.deepcopy(first._meta)
        meta["n_masks"] = max(r._info.n_masks for r in records)
        with claim_record_folder(out) as held:
            if (out / _META).exists():  # written since the check above
                raise RecordError(f"Merge output {out} already holds a record; choose a new "
                                  f"folder.")
            held.discard()  # what a killed merge left: subnet's files, never anyone else's
            written: list[Path] = []
            try:
                for name, arr in ((_LABELS, first.labels), (_EXAMPLES, first.example_indices)):
                    written.append(out / name)
                    atomic_write_bytes(out / name, _npy_bytes(arr))
                for c in kept:
                    written.append(out / c.path.name)
                    with atomic_path(out / c.path.name) as tmp:
                        shutil.copyfile(c.path, tmp)
                written.append(out / _META)
                atomic_write_text(out / _META, json.dumps(meta, indent=2, sort_keys=True))
            except BaseException:
                for path in written:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                raise
        return MaskRecord.load(out)

"""Reading a record folder: the part of :class:`~subnet.record.MaskRecord` that loads, checks
and reads a record (its metadata, its chunks, the accuracies they give).

:class:`~subnet.record.MaskRecord` (:mod:`subnet.record.storage`) adds what starts, continues and
merges records. Loading reads only the metadata, the labels and each chunk file's headers; the
folder is untrusted (:mod:`subnet.record.files`).

Pure Python and numpy: no Keras, no TensorFlow.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Self

import numpy as np

from subnet.errors import InputError, RecordError
from subnet.record.files import (
    _ARRAYS,
    _EXAMPLES,
    _LABELS,
    _READ_ERRORS,
    _check_chunk_header,
    _ChunkFile,
    _corrupt,
    _predicted_dtype,
    _read_meta,
    _read_vector,
    _scan_chunks,
)
from subnet.record.meta import RecordMeta


class Chunk(NamedTuple):
    """One chunk of a record: masks [start, stop), read from one chunk file.

    Attributes:
        start: First mask index.
        stop: One past the last mask index.
        masks: Bool (stop - start, n_units), True where a unit is kept.
        predicted: Predicted class, (stop - start, n_examples), uint8 (uint16 above 256 classes).
        true_prob: Probability of the true class, (stop - start, n_examples), float32 (stored as
            float16).
    """

    start: int
    stop: int
    masks: np.ndarray
    predicted: np.ndarray
    true_prob: np.ndarray


class _RecordReader:
    """A record folder, loaded and checked: the reading half of :class:`~subnet.record.MaskRecord`
    (whose docstring describes it); not used on its own.
    """

    def __init__(self, path: str | os.PathLike):
        """Loads and validates a record folder (same as :meth:`load`).

        Raises:
            RecordError: If the folder is missing, is not a record, or a file is damaged.
        """
        path = Path(path)
        if not path.is_dir():
            raise RecordError(f"Mask record folder not found: {path}")
        self.path = path
        self._meta = _read_meta(path)
        self._info = RecordMeta.from_dict(self._meta)
        self.labels = _read_vector(path / _LABELS, None)
        self.example_indices = _read_vector(path / _EXAMPLES, self.labels.size)
        self.labels.flags.writeable = False
        self.example_indices.flags.writeable = False
        if self._info.num_classes is None:
            raise RecordError(f"{path / 'meta.json'} names no num_classes; the record is damaged.")
        self.num_classes = int(self._info.num_classes)
        if self.labels.min() < 0 or self.labels.max() >= self.num_classes:
            raise RecordError(f"{path / _LABELS} holds labels outside [0, {self.num_classes}).")
        self.seed = int(self._info.seed)
        self.antithetic = bool(self._info.antithetic)
        keep = self._info.keep()
        keep.flags.writeable = False
        self._keep = keep
        self.n_units = int(keep.size)
        self.n_examples = int(self.labels.size)
        self._pred_dtype = _predicted_dtype(self.num_classes)
        self._chunks = _scan_chunks(path)
        for c in self._chunks:
            _check_chunk_header(c.path, c.stop - c.start, self.n_units, self.n_examples,
                                self._pred_dtype)
        self.n_masks = sum(c.stop - c.start for c in self._chunks)
        self._mask_accuracy: np.ndarray | None = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: str | os.PathLike) -> Self:
        """Loads and validates a record folder.

        Checks that ``meta.json`` parses and has the record format, that the labels and example
        indices are present, and that every chunk file's zip directory and array headers are
        intact, with shapes and dtypes that fit the record, and that chunks do not overlap.
        Chunk data is read (and its CRC checked) only when used.

        Args:
            path: The record folder.

        Returns:
            The record.

        Raises:
            RecordError: (a ValueError) If the folder is missing, is not a record, a file is
                damaged (the message names it and says to delete it and resume), or chunks
                overlap.
        """
        return cls(path)

    # ------------------------------------------------------------------ metadata

    @property
    def meta(self) -> dict:
        """The record's metadata (a copy): the caller's keys plus ``format`` and ``num_classes``."""
        return copy.deepcopy(self._meta)

    @property
    def sites(self) -> list[dict]:
        """The site table as stored: dicts with at least ``name``, ``units``, ``keep`` (a copy)."""
        return copy.deepcopy(self._meta["sites"])

    @property
    def keep(self) -> np.ndarray:
        """Keep probability of each unit, float64 (n_units,), expanded from the sites."""
        return self._keep

    @property
    def chunk_ranges(self) -> list[range]:
        """The mask range of each chunk, in order."""
        return [range(c.start, c.stop) for c in self._chunks]

    @functools.cached_property
    def mask_ids(self) -> np.ndarray:
        """Indices of the masks present, sorted, int64 (n_masks,)."""
        ids = [np.arange(c.start, c.stop, dtype=np.int64) for c in self._chunks]
        out = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        out.flags.writeable = False
        return out

    @property
    def is_complete(self) -> bool:
        """Whether every mask in range(meta['n_masks']) is present."""
        n, pos = int(self._info.n_masks), 0
        for c in self._chunks:
            if c.start > pos or pos >= n:
                break
            pos = c.stop
        return pos >= n

    def __repr__(self) -> str:
        state = "complete" if self.is_complete else "incomplete"
        return (f"MaskRecord('{self.path}', masks={self.n_masks}/{self._info.n_masks} "
                f"{state}, units={self.n_units}, examples={self.n_examples}, "
                f"classes={self.num_classes}, seed={self.seed}, antithetic={self.antithetic})")

    # ------------------------------------------------------------------ data

    def _read_chunk(self, c: _ChunkFile) -> Chunk:
        try:
            with np.load(c.path, allow_pickle=False) as npz:
                packed, predicted, true_prob = (npz[name] for name in _ARRAYS)
        except _READ_ERRORS as err:
            raise _corrupt(c.path, f"{type(err).__name__}: {err}") from None
        k = c.stop - c.start
        if (packed.shape != (k, -(-self.n_units // 8)) or predicted.shape != (k, self.n_examples)
                or true_prob.shape != (k, self.n_examples) or predicted.dtype != self._pred_dtype
                or true_prob.dtype != np.float16):
            raise _corrupt(c.path, "arrays do not fit the record")
        masks = np.unpackbits(packed, axis=1, count=self.n_units).view(bool)
        return Chunk(c.start, c.stop, masks, predicted, true_prob.astype(np.float32))

    def _iter_predicted(self) -> Iterator[np.ndarray]:
        """Each chunk's ``predicted`` only (what accuracy needs), in mask-index order."""
        for c in self._chunks:
            try:
                with np.load(c.path, allow_pickle=False) as npz:
                    predicted = npz["predicted"]
            except _READ_ERRORS as err:
                raise _corrupt(c.path, f"{type(err).__name__}: {err}") from None
            if predicted.shape != (c.stop - c.start, self.n_examples):
                raise _corrupt(c.path, "arrays do not fit the record")
            yield predicted

    def iter_chunks(self) -> Iterator[Chunk]:
        """Yields the record chunk by chunk, in mask-index order.

        Yields:
            :class:`Chunk` tuples ``(start, stop, masks, predicted, true_prob)``: masks bool
            (k, n_units); predicted uint8/uint16 (k, n_examples); true_prob float32
            (k, n_examples).

        Raises:
            RecordError: If a chunk file is damaged (named in the message).
        """
        for c in self._chunks:
            yield self._read_chunk(c)

    def _concat(self, field: int, width: int, dtype: Any) -> np.ndarray:
        out = np.empty((self.n_masks, width), dtype=dtype)
        row = 0
        for chunk in self.iter_chunks():
            k = chunk.stop - chunk.start
            out[row:row + k] = chunk[field]
            row += k
        out.flags.writeable = False
        return out

    @functools.cached_property
    def masks(self) -> np.ndarray:
        """Masks present, bool (n_masks, n_units), True where a unit is kept; read-only."""
        return self._concat(2, self.n_units, bool)

    @functools.cached_property
    def predicted(self) -> np.ndarray:
        """Predicted classes, (n_masks, n_examples), in the stored dtype: uint8 (uint16 above
        256 classes); read-only. Cast before arithmetic that could overflow."""
        return self._concat(3, self.n_examples, self._pred_dtype)

    @functools.cached_property
    def true_prob(self) -> np.ndarray:
        """Probability of the true class, float32 (n_masks, n_examples) from the stored float16;
        read-only."""
        return self._concat(4, self.n_examples, np.float32)

    @functools.cached_property
    def correct(self) -> np.ndarray:
        """Whether each mask predicts each example's label, bool (n_masks, n_examples)."""
        out = self.predicted == self.labels
        out.flags.writeable = False
        return out

    # ------------------------------------------------------------------ derived views

    def mask_accuracy(self) -> np.ndarray:
        """Accuracy of each mask over the examples, streamed over chunks.

        Returns:
            Float64 (n_masks,), fractions in [0, 1], in the order of :attr:`mask_ids`.
        """
        if self._mask_accuracy is None:
            parts = [(p == self.labels).mean(axis=1) for p in self._iter_predicted()]
            acc = np.concatenate(parts) if parts else np.zeros(0)
            acc.flags.writeable = False
            self._mask_accuracy = acc
        return self._mask_accuracy

    def example_accuracy(self) -> np.ndarray:
        """Fraction of masks that predict each example correctly, streamed over chunks.

        Returns:
            Float64 (n_examples,), fractions in [0, 1].

        Raises:
            ValueError: If the record has no masks.
        """
        if self.n_masks == 0:
            raise InputError(f"The record at {self.path} has no masks yet; example accuracy is "
                             f"undefined.")
        hits = np.zeros(self.n_examples, dtype=np.int64)
        for predicted in self._iter_predicted():
            hits += (predicted == self.labels).sum(axis=0)
        return hits / self.n_masks

    def accuracy_summary(self) -> dict[str, float]:
        """Summary of the distribution of per-mask accuracy.

        Returns:
            Dict with ``n_masks`` and, as fractions in [0, 1]: ``mean``, ``std`` (population,
            ddof=0), ``min``, ``p1``, ``p5``, ``p25``, ``p50``, ``p75``, ``p95``, ``p99``
            (percentiles, linear interpolation) and ``max``.

        Raises:
            ValueError: If the record has no masks.
        """
        acc = self.mask_accuracy()
        if acc.size == 0:
            raise InputError(f"The record at {self.path} has no masks yet; there is no accuracy "
                             f"to summarise.")
        pcts = (1, 5, 25, 50, 75, 95, 99)
        q = np.percentile(acc, pcts)
        out: dict[str, float] = {"n_masks": int(acc.size), "mean": float(acc.mean()),
                                 "std": float(acc.std()), "min": float(acc.min())}
        out.update({f"p{p}": float(v) for p, v in zip(pcts, q, strict=True)})
        out["max"] = float(acc.max())
        return out

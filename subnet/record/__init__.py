"""Recording which random subnetworks (masks) predict which examples correctly, and the record.

:func:`record_masks` draws masks over a model's sites (:func:`subnet.masks.sample_masks`),
evaluates every example under every mask with one of the engine's backends, and streams the
outcomes into a :class:`MaskRecord` folder, chunk by chunk, so that memory stays bounded and an
interrupted run resumes where it stopped. ``python -m subnet.record`` does the same from the
command line, for a whole record or one shard of it, and merges shards
(:mod:`subnet.record.__main__`).

:class:`MaskRecord` is the record of masks × examples → (predicted class, probability of the true
class), stored in a folder::

    meta.json                   the caller's metadata (seed, sites, fingerprints, versions, ...)
                                plus ``format`` and ``num_classes``
    labels.npy                  int64 (n_examples,), the true class of each example
    example_indices.npy         int64 (n_examples,), each example's index in its data set
    chunk_0000000000_0000001000.npz
                                masks [0, 1000): ``masks`` (packbits along units, uint8),
                                ``predicted`` (uint8, or uint16 above 256 classes) and
                                ``true_prob`` (float16), rows = masks, columns = examples
    .subnet-output, .subnet-output.lock, .subnet-output.files
                                the folder's marker (``subnet.record`` made it), lock and list
                                of the files subnet wrote (:mod:`subnet._outdir`), in a folder
                                :func:`subnet.record_masks` or :meth:`MaskRecord.merge` wrote

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so an
interrupted run loses at most the chunk in flight. Chunk files are byte-deterministic: the same
arrays always give the same bytes, so shards and resumed records can be compared file by file.

Typical use of the storage alone (:func:`record_masks` computes the outcomes with an engine)::

    writer = MaskRecord.resume(folder, meta, labels, example_indices, num_classes=10)
    for r in writer.missing(meta["n_masks"], chunk_size=1000):
        masks = sample_masks(writer.keep, writer.seed, r, antithetic=writer.antithetic)
        predicted, true_prob = evaluate(masks)          # (len(r), n_examples) each
        writer.write_chunk(r.start, masks, predicted, true_prob)
    record = writer.close()
    record.accuracy_summary()

Counts are bounded by module constants, checked before any work or allocation: :data:`MAX_MASKS`
masks, :data:`MAX_EXAMPLES` examples, :data:`MAX_UNITS` units and :data:`MAX_CHUNK_BYTES` per
chunk file. A record folder is untrusted: the sizes its ``meta.json``, ``labels.npy`` and chunk
files declare are checked against these limits and against the files' real sizes before anything
is read, and only regular files are opened.

The parts, by concern (all but ``rates``, ``run`` and ``__main__`` are pure numpy):

- :mod:`~subnet.record.meta`: the metadata's validation, limits and identity (:class:`RecordMeta`);
- :mod:`~subnet.record.files`: file names, chunk files, reading untrusted files, the folder's
  claim (:func:`check_record_folder`, :func:`claim_record_folder`);
- :mod:`~subnet.record.reader`: reading a record folder (:class:`Chunk`, the loading and reading
  half of :class:`MaskRecord`);
- :mod:`~subnet.record.storage`: :class:`MaskRecord` (load, create, resume, merge),
  :class:`RecordWriter`, :class:`MissingRanges`;
- :mod:`~subnet.record.rates`: which keep probabilities a record is drawn with
  (:func:`choose_keep`);
- :mod:`~subnet.record.run`: :func:`record_masks` with a backend, :func:`record_chunk` in a worker;
- :mod:`~subnet.record.__main__`: the command (:func:`main`, :func:`shard_range`), imported on
  first use of its names.
"""

from __future__ import annotations

import importlib
from typing import Any

from subnet.errors import RecordError
from subnet.keep import (  # noqa: F401 (importable from here, as from the module before)
    CALIBRATION_MASKS,
    CALIBRATION_STEPS,
    KeepProbabilities,
)
from subnet.masks import MAX_MASKS, sample_masks
from subnet.record.files import (
    MAX_CHUNK_BYTES,
    RECORD_TOOL,
    check_record_folder,
    claim_record_folder,
    holds_record,
)
from subnet.record.meta import FORMAT, MAX_EXAMPLES, MAX_UNITS, RecordMeta
from subnet.record.rates import NEAR_CHANCE, choose_keep, keep_of_record, parse_rate, site_rates
from subnet.record.reader import Chunk
from subnet.record.storage import MaskRecord, MissingRanges, RecordWriter

__all__ = ["FORMAT", "MAX_CHUNK_BYTES", "MAX_EXAMPLES", "MAX_MASKS", "MAX_UNITS", "NEAR_CHANCE",
           "RECORD_TOOL", "AdaptiveStop", "Chunk", "MaskRecord", "MissingRanges", "RecordError",
           "RecordMeta", "RecordWriter", "check_record_folder", "choose_keep",
           "claim_record_folder", "data_fingerprint", "holds_record", "keep_of_record",
           "model_fingerprint", "parse_rate", "record_chunk", "record_masks", "sample_masks",
           "shard_range", "site_rates", "temporary_record"]

# Names imported on first use. The command's: importing subnet.record.__main__ here would run it
# twice under ``python -m subnet.record``. Running a record's: adaptive stopping (AdaptiveStop)
# reads the record with an importance estimator, and the estimators read the record's storage,
# so the storage (what this package holds) sits below the estimators and running a record above
# them; importing subnet.record (for MaskRecord, say) loads no estimator.
_LAZY = {name: "subnet.record.__main__" for name in ("CALIBRATION_EXAMPLES", "main",
                                                     "shard_range")}
_LAZY.update({name: "subnet.record.run" for name in (
    "AdaptiveStop", "data_fingerprint", "model_fingerprint", "record_chunk", "record_masks",
    "temporary_record")})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'subnet.record' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

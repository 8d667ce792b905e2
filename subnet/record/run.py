"""Recording which random subnetworks (masks) predict which examples correctly.

:func:`record_masks` draws masks over a model's sites, evaluates every example under every mask
with one of the engine's backends, and streams the outcomes into a
:class:`~subnet.record.MaskRecord` folder, chunk by chunk, so that memory stays bounded and an
interrupted run resumes where it stopped. :func:`record_chunk` evaluates one chunk in a worker of
an executor (:mod:`subnet.distributed`). TensorFlow is imported where it is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

import subnet
from subnet.cli import progress_bar
from subnet.errors import InputError, InputTypeError, clean
from subnet.keep import KeepProbabilities
from subnet.masks import sample_masks
from subnet.record.files import check_record_folder, claim_record_folder
from subnet.record.storage import MaskRecord
from subnet.validation import check_choice, check_int, check_number


@dataclasses.dataclass(frozen=True)
class AdaptiveStop:
    """Stops :func:`record_masks` once a unit budget's keep/drop boundary is resolved.

    After each chunk (from ``min_masks`` on), the units' Banzhaf values are estimated from the
    record so far and ranked; the threshold is midway between the ``keep_units``-th and the next
    score. The boundary is resolved when no unit's 95 % interval straddles it: every unit in the
    top ``keep_units`` has its lower bound at or above ``threshold - tolerance``, and every other
    unit its upper bound at or below ``threshold + tolerance``. ``tolerance`` is an indifference
    zone: units closer than that to the boundary are equally good choices.

    Args:
        keep_units: The budget: how many units (over all sites) a subnetwork keeps, >= 1 and
            below the number of units.
        metric: ``"accuracy"`` or ``"log_prob"``.
        tolerance: Indifference zone in units of the metric (>= 0).
        min_masks: Masks recorded before the first check (>= 2).
    """

    keep_units: int
    metric: str = "accuracy"
    tolerance: float = 0.0
    min_masks: int = 256

    def __post_init__(self):
        check_int("keep_units", self.keep_units, low=1)
        check_choice("metric", self.metric, ("accuracy", "log_prob"))
        check_number("tolerance", self.tolerance, low=0.0)
        check_int("min_masks", self.min_masks, low=2)

    def check(self, record) -> dict:
        """Whether the boundary is resolved in ``record``; a JSON-ready summary."""
        if self.keep_units >= record.n_units:
            raise InputError(f"`keep_units`={self.keep_units} must be below the number of units "
                             f"({record.n_units}).")
        from subnet.importance.from_record import BanzhafEstimator

        importance = BanzhafEstimator(metric=self.metric).score(record)
        order = importance.rank()
        scores = importance.scores
        k = self.keep_units
        threshold = float((scores[order[k - 1]] + scores[order[k]]) / 2)
        if importance.ci_low is None or importance.ci_high is None:
            raise RuntimeError("The Banzhaf estimator gave no intervals to stop on.")
        low = np.nan_to_num(importance.ci_low, nan=-np.inf)
        high = np.nan_to_num(importance.ci_high, nan=np.inf)
        unresolved = int(np.sum(low[order[:k]] < threshold - self.tolerance) +
                         np.sum(high[order[k:]] > threshold + self.tolerance))
        return {"keep_units": k, "masks": int(record.n_masks), "threshold": threshold,
                "tolerance": float(self.tolerance), "unresolved_units": unresolved,
                "resolved": unresolved == 0}


def model_fingerprint(model) -> str:
    """SHA-256 (hex) of a model's weights: their names' order, shapes, dtypes and bytes."""
    from subnet.runtime import keras

    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{value.shape}{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def data_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 (hex) of examples (as float32) and labels (as int64), with their shapes: the
    record's ``data_fingerprint``."""
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int64)):
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def temporary_record(model, x, y, n_masks: int, **options) -> Iterator[MaskRecord]:
    """:func:`record_masks` into a temporary folder that is removed on exit, for a record needed
    only while its statistics are estimated (``out=None`` keeps the folder, for the caller).

    Args:
        model, x, y, n_masks: As for :func:`record_masks`.
        **options: Any other argument of :func:`record_masks` but ``out`` and ``resume``.

    Yields:
        The :class:`~subnet.record.MaskRecord`.
    """
    with tempfile.TemporaryDirectory(prefix="subnet-record-") as folder:
        yield record_masks(model, x, y, n_masks, out=folder, **options)


def record_masks(model, x, y, n_masks: int, seed: int = 0,
                 rate: float | Mapping[str, float] | KeepProbabilities | None = None,
                 backend: str = "auto",
                 out: str | os.PathLike | None = None, resume: bool = False, *,
                 masks: range | None = None, antithetic: bool = False, rescale: bool = True,
                 chunk_size: int = 64, example_indices=None, stop: AdaptiveStop | None = None,
                 progress: bool = True, executor=None) -> MaskRecord:
    """Evaluates every example under ``n_masks`` random masks and records the outcomes.

    Mask i keeps each unit of each site independently with the site's keep probability (1 - its
    dropout rate) and is a pure function of (seed, i), so records can be sharded, resumed and
    merged bit-identically. For every mask and example the record holds the predicted class and
    the probability of the true class, plus the masks, labels, site table, seed, fingerprints of
    the weights and data, and library versions. ``record.meta["backend"]`` says which backend
    ran (``"fast"``, ``"graph"`` or ``"reference"``), ``"backend_requested"`` which was asked
    for, and ``"backend_fallback"`` why the fast one could not (None if it did not have to); a
    fallback is also warned about (:func:`subnet.engine.make_backend`).

    Args:
        model: A ``keras.Model`` classifier (see :func:`subnet.sites` for what can be masked).
        x: Examples, float array of shape (n_examples, *model input shape); or a
            ``tf.data.Dataset`` of ``(examples, labels)`` with ``y`` None, as ``Model.fit``
            takes it (read into memory).
        y: True classes, int array of shape (n_examples,).
        n_masks: Number of masks, >= 1.
        seed: Seeds the masks.
        rate: Dropout rate(s) to mask with (see :func:`subnet.sites`), or a
            :class:`~subnet.KeepProbabilities` (its keep probabilities and its ``rescale``
            are used, overriding ``rescale``, and ``record.meta["keep"]`` stores its
            ``to_dict()``); None uses the model's own rates, and is refused for a model with a
            site that no Dropout follows (choose them with :func:`subnet.calibrate_keep`).
        backend: ``"auto"``, ``"fast"``, ``"graph"`` or ``"reference"``
            (:func:`subnet.engine.make_backend`).
        out: Record folder: new, empty, or a record folder subnet made (it is marked
            ``subnet.record``; an unmarked folder holding only a record, from before folders
            were marked, is adopted); any other folder is refused and nothing is written. It is
            locked while the record is written: a second writer is refused. None writes to a
            new temporary folder (its path is ``record.path``).
        resume: Continue the record in ``out``: masks already there are not recomputed; a new
            or empty folder starts the record. A record made from other weights, data, seed,
            sites or thread count is refused, and so is a folder that is not a record ("no
            record to resume").
        masks: The mask indices to compute, a ``range`` within [0, n_masks): one shard of the
            record, for sharding across processes or machines (join shards with
            :meth:`MaskRecord.merge`). None computes all of them.
        antithetic: Draw masks in antithetic pairs (mask 2j+1 mirrors mask 2j).
        rescale: Multiply kept units by 1 / keep, as inverted dropout does (the model was
            trained that way); False zeroes dropped units only.
        chunk_size: Masks per chunk file (and per unit of resumption).
        example_indices: Index of each example in its data set, for the record (default
            0..n-1).
        stop: An :class:`AdaptiveStop`: stop before ``n_masks`` once the keep/drop boundary of
            its unit budget is resolved. The outcome (masks used, whether it was resolved) is
            stored in ``record.meta["adaptive"]``.
        progress: Show a progress bar on stderr.
        executor: Where the chunks are evaluated (:mod:`subnet.distributed`): None or a
            :class:`~subnet.distributed.LocalExecutor` evaluates them here; a
            :class:`~subnet.distributed.RayExecutor` evaluates each chunk as a Ray
            task (the model travels as ``.keras`` bytes written from ``model``, the examples
            once through Ray's object store) while this process writes the chunks as they
            arrive. The record is the same, chunk file for chunk file: the workers compute
            with the executor's TensorFlow thread count (``threads``; by default this
            process's), which the record stores as ``meta["intra_op_threads"]``, because
            TensorFlow's CPU matrix products sum in an order that depends on it. Not with
            ``stop``, which needs the chunks in order.

    Returns:
        The :class:`MaskRecord`, loaded from ``out``.

    Raises:
        ValueError: If an argument is invalid, the model cannot be masked, ``out`` is not a
            folder a record may be written into or is in use by another record, or ``out``
            holds a record that does not match (or any record, without ``resume``).
    """
    check_int("n_masks", n_masks, low=1)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or \
            chunk_size < 1:
        raise InputError(f"Invalid value received for argument `chunk_size`. Expected an int "
                         f">= 1. Received: chunk_size={chunk_size!r}")
    if masks is None:
        masks = range(int(n_masks))
    if not isinstance(masks, range) or masks.step != 1 or masks.start < 0 or \
            masks.stop > n_masks or len(masks) == 0:
        raise InputError(f"Invalid value received for argument `masks`. Expected a non-empty "
                         f"range(a, b) with 0 <= a < b <= n_masks={n_masks}. Received: "
                         f"masks={masks!r}")
    if stop is not None and not isinstance(stop, AdaptiveStop):
        raise InputTypeError(f"`stop` must be an AdaptiveStop or None. Received: {type(stop)!r}")
    if executor is not None and not callable(getattr(executor, "map_unordered", None)):
        raise InputTypeError(f"`executor` must be None or an executor of subnet.distributed "
                             f"(LocalExecutor, RayExecutor). Received: {type(executor)!r}")
    if executor is not None and stop is not None:
        raise InputError("Adaptive stopping (`stop`) needs the chunks in order; record without "
                         "an executor, or give a fixed number of masks.")
    if out is not None:
        check_record_folder(out, resume=resume)  # before any work
    from subnet.engine import make_backend
    from subnet.engine.chain import analyse_chain
    from subnet.models import check_examples
    from subnet.runtime import intra_op_threads

    x, y, n_classes = check_examples(model, x, y)
    keep_given = None
    if isinstance(rate, KeepProbabilities):
        keep_given = rate
        rate, rescale = keep_given.rates, keep_given.rescale
    try:
        chain = analyse_chain(model, rate)
    except InputError as err:
        if rate is not None or "has no Dropout after it" not in str(err):
            raise
        site = str(err).split(" has no Dropout", 1)[0].removeprefix("Site ")
        raise InputError(
            f"Site {site} of model {clean(model.name)!r} has no Dropout layer after it, so "
            "there is no rate to draw masks with. Choose keep probabilities where random "
            "subnetworks are informative with subnet.calibrate_keep(model, x_held_out, "
            "y_held_out) (held-out training examples) and pass them as rate=, or give a rate "
            "(rate=R, a float in (0, 1)).") from None
    if stop is not None and stop.keep_units >= chain.table.n_units:
        raise InputError(f"AdaptiveStop.keep_units={stop.keep_units} must be below the number of "
                         f"units ({chain.table.n_units}).")
    engine = make_backend(chain, backend, rescale=rescale)
    if example_indices is None:
        example_indices = np.arange(len(x), dtype=np.int64)
    remote = executor is not None and executor.name != "local"
    # Every chunk is computed with one thread count: the workers' or this process's.
    threads = executor.threads if remote and hasattr(executor, "threads") else \
        intra_op_threads()
    meta = {
        "seed": int(seed),
        "antithetic": bool(antithetic),
        "n_masks": int(n_masks),
        "rescale": bool(rescale),
        "sites": chain.table.to_list(),
        **({"keep": keep_given.to_dict()} if keep_given is not None else {}),
        "model_name": model.name,
        "model_fingerprint": model_fingerprint(model),
        "data_fingerprint": data_fingerprint(x, y),
        "backend": engine.name,
        "backend_requested": backend,
        "backend_fallback": engine.fallback_reason,
        "intra_op_threads": threads,
        "versions": subnet.versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if out is None:
        out = tempfile.mkdtemp(prefix="subnet-record-")
    out = Path(out)
    with claim_record_folder(out, resume=resume):  # locked while it writes
        if resume:
            writer = MaskRecord.resume(out, meta, y, example_indices, num_classes=n_classes)
        else:
            writer = MaskRecord.create(out, meta, y, example_indices, num_classes=n_classes,
                                       exist_ok=True)  # new or empty but for the folder's marker
        todo = [range(max(r.start, masks.start), min(r.stop, masks.stop))
                for r in writer.missing(int(n_masks), int(chunk_size))]
        todo = [r for r in todo if len(r)]
        keep = chain.table.unit_keep()
        remaining = sum(len(r) for r in todo)
        if remote:
            job = executor.put(_chunk_job(model, x, y, rate, engine.name, rescale, seed,
                                          antithetic, meta, threads))
            calls = [(job, r.start, r.stop) for r in todo]
            outcomes = ((todo[i], done) for i, done in
                        executor.map_unordered(record_chunk, calls))
        else:
            outcomes = ((chunk, _outcomes(engine, x, y, keep, seed, chunk, antithetic))
                        for chunk in todo)
        with progress_bar(len(masks), f"recording {len(y)} examples", "mask", progress,
                          initial=len(masks) - remaining) as bar:
            for chunk, (bits, predicted, true_prob) in outcomes:
                writer.write_chunk(chunk.start, bits, predicted, true_prob)
                bar.update(len(chunk))
                if stop is not None and chunk.stop >= stop.min_masks:
                    outcome = stop.check(writer.close())
                    bar.set_postfix(unresolved=outcome["unresolved_units"], refresh=False)
                    if outcome["resolved"]:
                        break
        if stop is not None:
            record = writer.close()
            outcome = stop.check(record) if record.n_masks >= 2 else {"resolved": False}
            writer.annotate("adaptive", {**outcome, "stopped_early": record.n_masks < len(masks)})
        return writer.close()


def _outcomes(engine, x, y, keep, seed, chunk: range, antithetic: bool):
    """The masks of ``chunk``, each example's predicted class and true-class probability."""
    bits = sample_masks(keep, int(seed), chunk, antithetic=antithetic)
    probabilities = engine.probabilities(x, bits)
    return (bits, probabilities.argmax(axis=-1),
            np.clip(probabilities[:, np.arange(len(y)), y], 0.0, 1.0))


def _chunk_job(model, x, y, rate, backend: str, rescale: bool, seed: int, antithetic: bool,
               meta: Mapping, threads: int) -> dict:
    """What a worker needs to evaluate any chunk of this record (see :func:`record_chunk`)."""
    from subnet.models import model_bytes

    data = model_bytes(model)
    return {"key": hashlib.sha256(data).hexdigest() + repr((rate, backend, rescale)),
            "model": data, "x": x, "y": y, "rate": rate, "backend": backend,
            "rescale": bool(rescale), "seed": int(seed), "antithetic": bool(antithetic),
            "model_fingerprint": meta["model_fingerprint"], "sites": meta["sites"],
            "threads": int(threads)}


_WORKER_ENGINE: dict = {}  # a worker's engine for the job it last ran: {job key: (engine, keep)}


def record_chunk(job: Mapping, start: int, stop: int):
    """Evaluates masks [start, stop) of a record in a worker (an executor's task).

    The model is loaded from the job's ``.keras`` bytes (:func:`subnet.models.model_from_bytes`)
    and checked against the record's weight fingerprint and site table, and the worker's
    TensorFlow thread count against the record's; the engine is kept for the worker's next chunk
    of the same job.

    Returns:
        ``(masks, predicted, true_prob)`` of the chunk, as the record stores them.
    """
    from subnet.runtime import intra_op_threads

    if intra_op_threads() != job["threads"]:
        raise RuntimeError(f"A worker computes with {intra_op_threads()} TensorFlow intra-op "
                           f"threads, the record with {job['threads']}; its chunks would differ "
                           "in the last bits. Start the workers with TF_NUM_INTRAOP_THREADS="
                           f"{job['threads']} (RayExecutor sets it from its `threads`).")
    if job["key"] not in _WORKER_ENGINE:
        from subnet.engine import make_backend
        from subnet.engine.chain import analyse_chain
        from subnet.models import model_from_bytes

        model = model_from_bytes(job["model"])
        chain = analyse_chain(model, job["rate"])
        if model_fingerprint(model) != job["model_fingerprint"] or \
                chain.table.to_list() != job["sites"]:
            raise RuntimeError("The model a worker loaded differs from the driver's (weights or "
                               "sites); the record would not be the same.")
        engine = make_backend(chain, job["backend"], rescale=job["rescale"])
        _WORKER_ENGINE.clear()
        _WORKER_ENGINE[job["key"]] = engine, chain.table.unit_keep()
    engine, keep = _WORKER_ENGINE[job["key"]]
    return _outcomes(engine, job["x"], job["y"], keep, job["seed"], range(start, stop),
                     job["antithetic"])

"""Recording which random subnetworks (masks) predict which examples correctly.

:func:`record_masks` draws masks over a model's sites, evaluates every example under every mask
with one of the engine's backends, and streams the outcomes into a :class:`MaskRecord` folder,
chunk by chunk, so that memory stays bounded and an interrupted run resumes where it stopped.

From the command line, a record (or one shard of it) and the merge of shards::

    python -m subnet.record MODEL --dataset D --out DIR [--masks N] [--examples N] [--seed S]
        [--rate R] [--shard I/K] [--resume] [--ray ADDRESS]
    python -m subnet.record merge OUT SHARD_DIR [SHARD_DIR ...]

Shard I of K (0 <= I < K) records masks floor(I N / K) .. floor((I + 1) N / K) - 1 of the N,
so K shards, on one machine or a Slurm array
(``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``), merge into exactly the record one
process makes. The record is of the model with its dropout
off, on the first ``--examples`` test examples, as ``python -m subnet.analyze`` records it.
``--ray ADDRESS`` evaluates the chunks (of the whole record or of a shard) as Ray tasks on a
local instance (``local``) or a running cluster (``auto``, ``ray://HOST:PORT``) while this
process writes them: the same record, chunk file for chunk file (:mod:`subnet.distributed`).

``--out`` (and the merge's ``OUT``) must be new, empty, or a record folder subnet made (marked
``subnet.record``; a folder holding nothing but a record with a valid ``meta.json``, from before
record folders were marked, is adopted). Any other folder is refused in one line, exit 2, before
anything is written; ``--resume`` refuses it as "no record to resume". While a record or a merge
writes, the folder is locked: a second writer is refused at once (:mod:`subnet._outdir`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

import subnet
from subnet._cli import progress_bar
from subnet.errors import InputError, InputTypeError, clean
from subnet.keep import CALIBRATION_MASKS, CALIBRATION_STEPS, KeepProbabilities
from subnet.masks import (
    MaskRecord,
    check_record_folder,
    claim_record_folder,
    holds_record,
    sample_masks,
)

# TensorFlow is imported where it is used, so that `python -m subnet.record --help` and argument
# errors answer at once.

__all__ = ["AdaptiveStop", "NEAR_CHANCE", "choose_keep", "data_fingerprint", "keep_of_record",
           "model_fingerprint", "parse_rate", "record_chunk", "record_masks", "shard_range",
           "site_rates"]

#: How close to chance (a fraction of accuracy: 5 points) random subnetworks' mean accuracy may
#: sit before the masks are called uninformative: the model's own rates are then replaced by
#: calibrated keep probabilities (``rate="auto"``), and the analysis' answer says so.
NEAR_CHANCE = 0.05

#: Training examples (the last ones of the training split) python -m subnet.record calibrates
#: the keep probabilities on, as python -m subnet.analyze's default ``selection_examples``.
CALIBRATION_EXAMPLES = 1000


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
        if isinstance(self.keep_units, bool) or not isinstance(self.keep_units, int) or \
                self.keep_units < 1:
            raise InputError(f"Invalid value received for argument `keep_units`. Expected an "
                             f"int >= 1. Received: keep_units={self.keep_units!r}")
        if self.metric not in ("accuracy", "log_prob"):
            raise InputError(f"Invalid value received for argument `metric`. Expected "
                             f"'accuracy' or 'log_prob'. Received: metric={self.metric!r}")
        if not self.tolerance >= 0:
            raise InputError(f"Invalid value received for argument `tolerance`. Expected a "
                             f"float >= 0. Received: tolerance={self.tolerance!r}")
        if isinstance(self.min_masks, bool) or not isinstance(self.min_masks, int) or \
                self.min_masks < 2:
            raise InputError(f"Invalid value received for argument `min_masks`. Expected an "
                             f"int >= 2. Received: min_masks={self.min_masks!r}")

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
        low = np.nan_to_num(importance.ci_low, nan=-np.inf)
        high = np.nan_to_num(importance.ci_high, nan=np.inf)
        unresolved = int(np.sum(low[order[:k]] < threshold - self.tolerance) +
                         np.sum(high[order[k:]] > threshold + self.tolerance))
        return {"keep_units": k, "masks": int(record.n_masks), "threshold": threshold,
                "tolerance": float(self.tolerance), "unresolved_units": unresolved,
                "resolved": unresolved == 0}


def model_fingerprint(model) -> str:
    """SHA-256 (hex) of a model's weights: their names' order, shapes, dtypes and bytes."""
    from subnet._tf import keras

    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{value.shape}{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def site_rates(model, rate: float | None) -> dict:
    """{site: dropout rate to draw masks with}: the model's own, and ``rate`` for sites with none.

    Raises:
        ValueError: If the model cannot be masked, or a site has no rate and ``rate`` is None.
    """
    from subnet.engine.chain import analyse_chain

    rates = {}
    for site in analyse_chain(model, rate=0.5).table:  # the model's own rate is dropout_rate
        if site.dropout_rate > 0:
            rates[site.name] = float(site.dropout_rate)
        elif rate is None:
            raise InputError(f"Site {site.name!r} has no Dropout layer after it, so there is no "
                             "rate to draw masks with; give --rate R (e.g. --rate 0.5).")
        else:
            rates[site.name] = float(rate)
    return rates


def parse_rate(text) -> str | float:
    """``--rate``'s value: ``"auto"`` or a dropout rate in (0, 1) (a float).

    Raises:
        InputError: For anything else.
    """
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise InputError(f"Invalid value for --rate: expected auto (keep probabilities calibrated "
                         f"on held-out training examples) or a dropout rate in (0, 1). "
                         f"Received: {clean(str(text), limit=100)!r}")
    return value


def _mean_masked_accuracy(model, rates: Mapping[str, float], x, y, *, rescale: bool,
                          n_masks: int, seed: int, backend: str) -> dict:
    """Chance, the whole model's accuracy and random subnetworks' mean accuracy on (x, y)."""
    from subnet.engine import make_backend
    from subnet.engine.chain import analyse_chain
    from subnet.models import check_examples

    x, y, _ = check_examples(model, x, y)
    chain = analyse_chain(model, dict(rates))
    engine = make_backend(chain, backend, rescale=rescale)
    whole = float(np.mean(engine.probabilities(x, np.ones((1, chain.table.n_units), bool))[0]
                          .argmax(-1) == y))
    masks = sample_masks(chain.table.unit_keep(), int(seed), range(int(n_masks)))
    accuracy = float(np.mean(engine.probabilities(x, masks).argmax(-1) == y))
    return {"chance": float(np.bincount(y).max() / len(y)), "whole": whole,
            "mean_accuracy": accuracy, "examples": int(len(y)), "masks": int(n_masks),
            "seed": int(seed), "rescale": bool(rescale)}


def choose_keep(model, rate: str | float | None = "auto", x=None, y=None, *, seed: int = 0,
                n_masks: int = CALIBRATION_MASKS, steps: int = CALIBRATION_STEPS,
                near_chance: float = NEAR_CHANCE,
                backend: str = "auto", held_out: str | None = None, rates_from=None
                ) -> tuple[KeepProbabilities, dict | None]:
    """The keep probabilities a record of ``model`` is drawn with, and where they came from.

    - ``rate=R`` (a float in (0, 1)): sites with no Dropout after them drop units at rate R,
      the others at the model's own rate; kept units scaled by 1 / q (source ``"given"``, or
      ``"model"`` when every site has its own Dropout).
    - ``rate="auto"`` (or None): a model whose every site has a Dropout uses its own rates
      (source ``"model"``, 1 / q scaling), unless random subnetworks at those rates sit within
      ``near_chance`` of chance on (x, y); then, and for any model with a site without
      Dropout, :func:`subnet.calibrate_keep` chooses one keep probability for every site (and
      whether to rescale) on (x, y) (source ``"auto"``).

    Args:
        model: A ``keras.Model`` classifier, dropout off (:func:`subnet.models.with_dropout`).
        rate: ``"auto"``, None (the same) or a dropout rate in (0, 1).
        x: Held-out *training* examples (never the test set): needed unless ``rate`` is
            given.
        y: Their integer labels.
        seed: Seed of the masks of the check and of the calibration.
        n_masks: Masks per evaluated keep probability.
        steps: Bisection steps of the calibration.
        near_chance: The margin above chance (a fraction) below which masks count as at
            chance.
        backend: The masked-evaluation backend.
        held_out: Which examples (x, y) are, in words, stored in the calibration dict.
        rates_from: The model whose Dropout layers give the sites' own rates, when ``model``
            is its copy with dropout off (which has none); default ``model``.

    Returns:
        ``(keep, check)``: the :class:`~subnet.KeepProbabilities`, and for the model's own
        rates, what the check measured (chance, whole, mean accuracy; None when not checked).

    Raises:
        InputError: If ``rate`` is invalid, the model cannot be masked, or examples are needed
            and not given.
    """
    from subnet.engine.chain import analyse_chain
    from subnet.keep import calibrate_keep

    # structure (and the model's own rates) only
    table = analyse_chain(model if rates_from is None else rates_from, 0.5).table
    own = {site.name: float(site.dropout_rate) for site in table if site.dropout_rate > 0}
    if rate is not None and rate != "auto":
        rate = parse_rate(rate)
        rates = {site.name: own.get(site.name, rate) for site in table}
        source = "model" if len(own) == len(table) else "given"
        return KeepProbabilities(keep={n: 1.0 - r for n, r in rates.items()}, source=source,
                                 rescale=True), None
    def model_keep():
        return KeepProbabilities(keep={n: 1.0 - r for n, r in own.items()}, source="model",
                                 rescale=True)

    if x is None or y is None:
        if len(own) == len(table):  # nothing to check the model's rates on
            return model_keep(), {"checked": False, "why": "no held-out training examples"}
        missing = [s.name for s in table if s.name not in own]
        raise InputError(f"Site {clean(missing[0])!r} has no Dropout layer after it, so its keep "
                         "probability is calibrated (rate='auto', subnet.calibrate_keep) on "
                         "held-out training examples, and none were given (the data set needs "
                         "a training split; never the test set): give them, or a rate "
                         "(rate=R, --rate R).")
    check = None
    if len(own) == len(table):
        check = _mean_masked_accuracy(model, own, x, y, rescale=True, n_masks=n_masks,
                                      seed=seed, backend=backend)
        check["checked"] = True
        check["near_chance"] = check["mean_accuracy"] - check["chance"] < near_chance
        if held_out:
            check["held_out"] = held_out
        if not check["near_chance"] or check["whole"] - check["chance"] < near_chance:
            # informative, or the whole model is itself near chance: no keep would help
            return model_keep(), check
    keep = calibrate_keep(model, x, y, n_masks=n_masks, seed=seed, steps=steps,
                          backend=backend)
    calibration = dict(keep.calibration)
    calibration["why"] = ("the model's own rates leave random subnetworks within "
                          f"{near_chance:.0%} of chance" if check is not None else
                          "sites without a Dropout layer after them: "
                          + ", ".join(s.name for s in table if s.name not in own))
    if held_out:
        calibration["held_out"] = held_out
    return dataclasses.replace(keep, calibration=calibration), check


def keep_of_record(meta: Mapping) -> KeepProbabilities:
    """The keep probabilities a record was drawn with: its ``meta["keep"]``, or for a record
    made before records stored them, its sites' keep and ``rescale`` (source ``"given"``
    unless every keep is 1 - the site's own dropout rate, then ``"model"``)."""
    if meta.get("keep") is not None:
        return KeepProbabilities.from_dict(meta["keep"])
    sites = meta["sites"]
    own = all(float(s.get("dropout_rate", 0.0)) > 0 and
              abs(float(s["keep"]) - (1.0 - float(s["dropout_rate"]))) < 1e-9 for s in sites)
    return KeepProbabilities(keep={s["name"]: float(s["keep"]) for s in sites},
                             source="model" if own else "given",
                             rescale=bool(meta.get("rescale", True)))


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
        The :class:`~subnet.masks.MaskRecord`.
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
        x: Examples, float array of shape (n_examples, *model input shape).
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
    if isinstance(n_masks, bool) or not isinstance(n_masks, (int, np.integer)) or n_masks < 1:
        raise InputError(f"Invalid value received for argument `n_masks`. Expected an int >= 1. "
                         f"Received: n_masks={n_masks!r}")
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
    from subnet._tf import intra_op_threads
    from subnet.engine import make_backend
    from subnet.engine.chain import analyse_chain
    from subnet.models import check_examples

    x, y, n_classes = check_examples(model, x, y)
    keep_given = None
    if isinstance(rate, KeepProbabilities):
        keep_given, rate, rescale = rate, rate.rates, rate.rescale
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
    from subnet._tf import intra_op_threads

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


# ---------------------------------------------------------------------------------- command line

def shard_range(n_masks: int, shard: str) -> range:
    """Masks of shard ``"I/K"`` of ``n_masks``: floor(I n / K) .. floor((I + 1) n / K) - 1.

    Raises:
        InputError: If ``shard`` is not ``I/K`` with 0 <= I < K <= n_masks.
    """
    try:
        index, count = (int(part) for part in str(shard).split("/"))
    except ValueError:
        raise InputError(f"--shard must be I/K, e.g. 0/4 (shard I of K, counted from 0). "
                         f"Received: {shard!r}") from None
    if not 0 <= index < count <= n_masks:
        raise InputError(f"--shard {index}/{count}: expected 0 <= I < K <= --masks ({n_masks}).")
    return range(index * n_masks // count, (index + 1) * n_masks // count)


def _parse(argv):
    from subnet._cli import ArgumentParser, HelpFormatter

    parser = ArgumentParser(
        prog="python -m subnet.record", formatter_class=HelpFormatter,
        description="Records which random subnetworks (unit masks) predict which test examples, "
                    "or one shard of that record; 'python -m subnet.record merge OUT SHARD...' "
                    "joins shards.",
        epilog="Exit codes: 0 done, 2 bad input (one line), 1 internal error, 130 interrupted.")
    parser.add_argument("model", help="the trained classifier, a .keras or .h5 file")
    parser.add_argument("--out", required=True,
                        help="the record folder: new, empty, or a record subnet made (with "
                             "--resume, the record to continue); any other folder is refused")
    parser.add_argument("--dataset", required=True, help="mnist, fashion_mnist or PATH.npz")
    parser.add_argument("--data-dir", default=None, help="folder with the dataset's IDX files")
    parser.add_argument("--masks", type=int, default=1500, help="masks in the whole record")
    parser.add_argument("--examples", type=int, default=1000,
                        help="test examples (the first N) each mask is evaluated on")
    parser.add_argument("--seed", type=int, default=0, help="seed of the masks")
    parser.add_argument("--rate", default="auto",
                        help="auto (default): the model's own dropout rates where every site "
                             "has a Dropout and masks at them are not near chance, else one "
                             "keep probability calibrated on the last "
                             f"{CALIBRATION_EXAMPLES} training examples (never the test set) "
                             "so that random subnetworks sit halfway between chance and the "
                             "whole model; or R, a dropout rate in (0, 1) for sites with no "
                             "Dropout layer after them")
    parser.add_argument("--shard", default=None, help="I/K: record shard I of K only")
    parser.add_argument("--backend", choices=("auto", "fast", "graph", "reference"), default="auto")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted record")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="evaluate the chunks as Ray tasks: 'local' starts Ray on this "
                             "machine, 'auto' joins the cluster this machine belongs to, or a "
                             "ray://HOST:PORT address (needs pip install 'subnet[ray]')")
    parser.add_argument("--chunk-size", type=int, default=64,
                        help="masks per chunk file (and per Ray task)")
    parser.add_argument("--trust-model", action="store_true",
                        help="allow code inside the model file (Lambda layers) to run")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def _record_command(args) -> int:
    import json

    # Everything that needs no model is checked first, before TensorFlow loads.
    for name, value, low in (("masks", args.masks, 1), ("examples", args.examples, 1),
                             ("seed", args.seed, 0), ("chunk-size", args.chunk_size, 1)):
        if value < low:
            raise InputError(f"--{name} must be at least {low}. Received: {value}")
    rate = parse_rate(args.rate)
    masks = shard_range(args.masks, args.shard) if args.shard else range(args.masks)
    out = Path(args.out)
    check_record_folder(out, resume=args.resume, name="--out")
    if not args.resume and holds_record(out):
        raise InputError(f"--out {clean(str(out))!r} already holds a record; add --resume to "
                         "continue it, or choose another --out.")

    from subnet._quiet import quiet_tensorflow_warnings

    quiet_tensorflow_warnings()  # imports TensorFlow
    from subnet.data import load_dataset
    from subnet.distributed import executor_from_address
    from subnet.models import load_model, with_dropout

    model = load_model(args.model, trust=args.trust_model)
    deterministic = with_dropout(model, on=False)
    choose_keep(deterministic, 0.5 if rate == "auto" else rate,  # model problems first
                rates_from=model)
    shape = tuple(model.inputs[0].shape[1:])
    # Only the test examples recorded are read (memory follows --examples, not the file).
    data = load_dataset(args.dataset, data_dir=args.data_dir, n_test=args.examples,
                        layout_3d="sequences" if len(shape) == 2 else "images")
    n = min(args.examples, len(data.x_test))
    keep = _cli_keep(deterministic, model, rate, data, out, args)
    # The folder is claimed here, so that its refusals name --out; record_masks claims it again.
    with claim_record_folder(out, resume=args.resume, name="--out"), \
            executor_from_address(args.ray) as executor:
        # The same record python -m subnet.analyze makes: dropout off, the first n test examples.
        record = record_masks(deterministic, data.x_test[:n], data.y_test[:n],
                              args.masks, seed=args.seed, rate=keep, out=out,
                              resume=args.resume, masks=masks, backend=args.backend,
                              chunk_size=args.chunk_size, progress=not args.quiet,
                              executor=executor)
    print(json.dumps({"out": str(out), "masks": [masks.start, masks.stop],
                      "n_masks": int(record.n_masks), "n_examples": int(record.n_examples),
                      "complete": bool(record.is_complete), "backend": record.meta["backend"],
                      "keep": keep.keep, "keep_source": keep.source, "rescale": keep.rescale,
                      "executor": executor.name}))
    return 0


def _cli_keep(model, parent, rate, data, out: Path, args) -> KeepProbabilities:
    """The keep probabilities of the command's record: those of the record being continued
    (--resume with --rate auto), else :func:`choose_keep` on the last
    :data:`CALIBRATION_EXAMPLES` training examples, with the masks' seed."""
    if args.resume and rate == "auto" and holds_record(out) and (out / "meta.json").is_file():
        return keep_of_record(MaskRecord.load(out).meta)
    x = y = held_out = None
    if rate == "auto" and data.x_train is not None and len(data.x_train) >= 10:
        k = min(CALIBRATION_EXAMPLES, len(data.x_train))
        x, y = data.x_train[-k:], data.y_train[-k:]
        held_out = f"the last {k} training examples (never the test set)"
    keep, _ = choose_keep(model, rate, x, y, seed=args.seed, held_out=held_out,
                          rates_from=parent)
    return keep


def _merge_command(argv) -> int:
    import json

    if len(argv) < 2:
        raise InputError("usage: python -m subnet.record merge OUT SHARD_DIR [SHARD_DIR ...]")
    out, shards = argv[0], argv[1:]
    check_record_folder(out, name="OUT")
    # Claimed here so that its refusals name OUT; MaskRecord.merge claims it again, and a merge
    # refused there (shards that differ) leaves no folder behind.
    with claim_record_folder(out, name="OUT"):
        merged = MaskRecord.merge(shards, out)
    print(json.dumps({"out": str(out), "shards": len(shards), "n_masks": int(merged.n_masks),
                      "complete": bool(merged.is_complete)}))
    return 0


def main(argv=None) -> int:
    """Entry point of ``python -m subnet.record``; returns the exit code."""
    from subnet._cli import run_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        return run_main(lambda: _merge_command(argv[1:]), "subnet.record")
    try:
        args = _parse(argv)
    except SystemExit as exit_:  # --help or a usage error (already printed)
        return int(exit_.code or 0)
    return run_main(lambda: _record_command(args), "subnet.record")


if __name__ == "__main__":
    sys.exit(main())

"""Measuring a (sub)network: its size, speed and accuracy, the same way for every model.

:func:`model_cost` counts its parameters and FLOPs (a :class:`~subnet.structure.cost.Cost`),
:func:`accuracy` its top-1 accuracy, :func:`measure` the size of its saved file and its latency
(a :class:`Measurement`), on the bare copy :func:`copy_model` makes (no optimizer, not
compiled).
"""

from __future__ import annotations

import dataclasses
import gzip
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from subnet.engine.chain import layer_flops
from subnet.errors import InputError
from subnet.models import check_examples, deserialization_scope
from subnet.runtime import keras
from subnet.sections import MappingResult
from subnet.structure.cost import Cost
from subnet.validation import check_int

__all__ = ["Measurement", "accuracy", "copy_model", "measure", "model_cost"]


def model_cost(model) -> Cost:
    """Parameters and FLOPs per example (2 per multiply-accumulate of Conv, Dense, depthwise
    and separable layers; see :meth:`subnet.structure.Structure.cost`).

    Args:
        model: A ``keras.Model``.

    Returns:
        A :class:`~subnet.structure.cost.Cost` with ``params``, ``flops`` and
        ``nonzero_params`` (reads as the dict ``{"params", "flops", "nonzero_params"}``).
    """
    from subnet.structure import channel_groups

    weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
    try:
        flops = channel_groups(model).cost().flops
    except InputError:  # a model subnet cannot mask is still counted, Conv/Dense layers only
        flops = sum(layer_flops(layer) for layer in model.layers)
    return Cost(params=int(model.count_params()), flops=int(flops),
                nonzero_params=int(sum(np.count_nonzero(w) for w in weights)))


def accuracy(model, x, y, *, batch_size: int = 1000) -> float:
    """Top-1 accuracy of a classifier (dropout off, as ``predict`` runs it).

    Args:
        model: A ``keras.Model`` classifier.
        x: Examples, float array of shape (n, *model input shape).
        y: True classes, int array of shape (n,).
        batch_size: Examples per forward call.

    Returns:
        The fraction of examples whose highest output is the true class, in [0, 1].

    Raises:
        InputError: If ``x`` or ``y`` do not fit the model.
    """
    x, y, _ = check_examples(model, x, y)
    prediction = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(prediction.argmax(axis=-1) == y))


def copy_model(model):
    """A bare copy of ``model``: the same architecture and weights, not compiled.

    What a model file should hold and a latency measurement should run: no optimizer (whose
    state, for Adam, is two more copies of the weights in a saved file), no loss or metrics.
    (``keras.models.clone_model`` compiles its copy like the original, and a compiled model saves
    its optimizer's variables, even unused ones.)

    Args:
        model: A functional or Sequential ``keras.Model``.

    Returns:
        A new, uncompiled ``keras.Model``.
    """
    with deserialization_scope(model):
        copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


@dataclasses.dataclass(frozen=True, eq=False)
class Measurement(MappingResult):
    """What :func:`measure` reports: a frozen result that also reads as the dict it used to be
    (``m["file_bytes"]``, ``dict(m)``, ``{**m}``, ``row.update(m)``; equal to a dict of the
    same keys and values). ``json.dumps`` takes :meth:`to_dict`'s dict, not the result (see
    :class:`~subnet.sections.MappingResult`).

    Attributes:
        params: Parameters (``model.count_params()``).
        flops: FLOPs per example (:func:`model_cost`).
        nonzero_params: Weights that are not zero.
        file_bytes: Size of the bare copy's saved ``.keras`` file.
        gzip_bytes: Size of that file gzipped (level 9).
        latency_ms_per_example: Median over repeats of ``predict_on_batch``'s time, divided by
            ``batch_size`` (milliseconds).
        batch_size: Examples per timed call.
        reference_latency_ms_per_example: The same for the reference model timed in
            alternation; None (and not a key) without one.
        latency_ratio: Median over repeats of this model's time / the reference's time in the
            same repeat; None (and not a key) without a reference.
    """

    params: int
    flops: int
    nonzero_params: int
    file_bytes: int
    gzip_bytes: int
    latency_ms_per_example: float
    batch_size: int
    reference_latency_ms_per_example: float | None = None
    latency_ratio: float | None = None

    _WHERE: ClassVar[str] = "measurement"
    _DECODE: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "params": int, "flops": int, "nonzero_params": int, "file_bytes": int,
        "gzip_bytes": int, "latency_ms_per_example": float, "batch_size": int,
        "reference_latency_ms_per_example": float, "latency_ratio": float}


def measure(model, *, batch_size: int = 256, repeats: int = 20, reference=None) -> Measurement:
    """Size and speed of a model, measured the same way for every model.

    Both are measured on the model's bare copy (:func:`copy_model`): the saved file holds the
    architecture and weights only (a trained model's optimizer state is left out, so that
    trained and untrained models are measured alike), and every model runs the same
    uncompiled inference path. Latency on a shared machine drifts with the load; give
    ``reference`` (e.g. the dense model) to time the two models in alternation and report
    their ratio, which the drift mostly cancels out of.

    Args:
        model: A ``keras.Model``.
        batch_size: Examples per timed call (the same for all models compared).
        repeats: Timed calls (per model); medians are reported.
        reference: Optional ``keras.Model`` with the same input shape, timed in alternation.

    Returns:
        A :class:`Measurement`, which reads as the dict {"params", "flops", "nonzero_params",
        "file_bytes", "gzip_bytes", "latency_ms_per_example", "batch_size"}: sizes of the
        saved ``.keras`` file raw and gzipped (level 9), and the median time per example of
        ``predict_on_batch``. With ``reference``, also "reference_latency_ms_per_example" and
        "latency_ratio" (the median over repeats of this model's time / the reference's time
        in the same repeat). ``to_dict()`` gives that dict for JSON.

    Raises:
        InputError: If ``repeats`` or ``batch_size`` is not a positive int.
    """
    for name, value in (("batch_size", batch_size), ("repeats", repeats)):
        check_int(name, value, low=1)
    cost = model_cost(model)
    bare = copy_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        bare.save(path)
        raw = path.read_bytes()
    file_bytes, gzip_bytes = len(raw), len(gzip.compress(raw, compresslevel=9))
    x = np.random.default_rng(0).random((batch_size,) + tuple(model.inputs[0].shape[1:]),
                                        dtype=np.float32)
    timed = [bare] if reference is None else [bare, copy_model(reference)]
    for m in timed:
        m.predict_on_batch(x)  # traces the inference function
    times = np.zeros((repeats, len(timed)))
    for r in range(repeats):
        order = range(len(timed)) if r % 2 == 0 else reversed(range(len(timed)))
        for i in order:
            start = time.perf_counter()
            timed[i].predict_on_batch(x)
            times[r, i] = time.perf_counter() - start
    return Measurement(
        **cost, file_bytes=file_bytes, gzip_bytes=gzip_bytes,
        latency_ms_per_example=float(np.median(times[:, 0]) / batch_size * 1000),
        batch_size=int(batch_size),
        reference_latency_ms_per_example=None if reference is None else
        float(np.median(times[:, 1]) / batch_size * 1000),
        latency_ratio=None if reference is None else float(np.median(times[:, 0] / times[:, 1])))

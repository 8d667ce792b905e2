"""Training a (sub)network further, and re-estimating its BatchNormalization statistics.

:func:`finetune` trains it and reports its test accuracy before and after;
:func:`recalibrate_batchnorm` sets every BatchNormalization layer's statistics to those of its
inputs, which removing units or a short fine-tuning leaves out of date.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from subnet.data import as_dataset
from subnet.errors import InputError
from subnet.measuring import accuracy
from subnet.runtime import keras
from subnet.sections import MappingResult

__all__ = ["RECALIBRATION_EXAMPLES", "FinetuneResult", "finetune", "recalibrate_batchnorm"]

#: Examples BatchNormalization statistics are re-estimated on after training. A channel's mean
#: and variance average over every example and position, so 1,000 examples pin them down (the
#: standard error of a mean is under 0.5 % of the channel's SD even for a Dense layer), and
#: every BatchNormalization layer costs one pass of the model up to it
#: (:func:`recalibrate_batchnorm`): on the ResNet-20 layout 5,000 examples took a minute.
RECALIBRATION_EXAMPLES = 1000


@dataclasses.dataclass(frozen=True, eq=False)
class FinetuneResult(MappingResult):
    """What :func:`finetune` reports: a frozen result that also reads as the dict it used to
    be (``result["accuracy_after"]``, ``dict(result)``, ``**result``; equal to a dict of the
    same keys and values; :meth:`to_dict` and :meth:`from_dict` for JSON, see
    :class:`~subnet.sections.MappingResult`).

    Attributes:
        accuracy_before: Test accuracy before the fine-tuning, a fraction in [0, 1].
        accuracy_after: Test accuracy after it (and after the BatchNormalization
            recalibration), a fraction in [0, 1].
        examples_seen: Training examples the fine-tuning went through.
        seconds: Wall-clock seconds of the training.
        loss: The training loss at the end of each epoch (or of the one partial pass).
    """

    accuracy_before: float
    accuracy_after: float
    examples_seen: int
    seconds: float
    loss: list[float]

    _WHERE: ClassVar[str] = "finetune result"
    _DECODE: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "accuracy_before": float, "accuracy_after": float, "examples_seen": int,
        "seconds": float, "loss": lambda values: [float(value) for value in values]}


def finetune(model, dataset, *, epochs: int | None = None, examples: int | None = None,
             batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0,
             recalibrate: bool = True, accuracy_before: float | None = None,
             progress: bool = True, callbacks: Sequence | None = None) -> FinetuneResult:
    """Trains a (sub)network further and reports its test accuracy before and after.

    Args:
        model: The ``keras.Model`` to train (in place).
        dataset: A :class:`~subnet.data.Dataset` with training and test data, or
            ``((x_train, y_train), (x_test, y_test))`` as ``keras.datasets``' ``load_data()``
            returns it, or ``(train, test)`` as ``tf.data.Dataset`` objects of (examples, labels)
            (:func:`~subnet.data.as_dataset`).
        epochs: Budget in passes over the training data; or
        examples: Budget in training examples (exactly one of the two).
        batch_size: Examples per step.
        learning_rate: Adam's initial learning rate, decayed along a cosine to 0.
        seed: Seeds the shuffling.
        recalibrate: Afterwards, re-estimate BatchNormalization statistics on (up to)
            :data:`RECALIBRATION_EXAMPLES` training examples (:func:`recalibrate_batchnorm`);
            short fine-tunings leave them lagging behind the weights.
        accuracy_before: The model's test accuracy, if already measured (saves a pass over the
            test set); None measures it.
        progress: Show a progress bar.
        callbacks: Keras callbacks, called as ``Model.fit`` calls them (e.g.
            ``keras.callbacks.CSVLogger``, ``TensorBoard``); they see the fine-tuning steps.

    Returns:
        A :class:`FinetuneResult`, which reads as the dict ``{"accuracy_before",
        "accuracy_after", "examples_seen", "seconds", "loss"}`` (accuracies are fractions of
        the test set; ``to_dict()`` gives that dict for JSON). The model is left compiled,
        with its optimizer's state: save it as ``copy_model(model).save(path)`` to leave that
        state (for Adam, two more copies of the weights) out of the file.

    Raises:
        ValueError: If the budget is invalid or the dataset has no training data.
    """
    from subnet.train import fit

    dataset = as_dataset(dataset)
    if dataset.x_train is None:
        raise InputError(f"Dataset {dataset.name!r} has no training examples to fine-tune on.")
    before = accuracy(model, dataset.x_test, dataset.y_test) if accuracy_before is None else \
        float(accuracy_before)
    history = fit(model, dataset.x_train, dataset.y_train, epochs=epochs, examples=examples,
                  batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                  progress=progress, callbacks=callbacks)
    if recalibrate:
        recalibrate_batchnorm(model, dataset.x_train[:RECALIBRATION_EXAMPLES])
    return FinetuneResult(accuracy_before=before,
                          accuracy_after=accuracy(model, dataset.x_test, dataset.y_test),
                          examples_seen=history["examples_seen"], seconds=history["seconds"],
                          loss=history["loss"])


#: Largest activation memory (bytes, estimated) for which the statistics are computed in one
#: pass over all examples at once.
_ONE_PASS_BYTES = 1 << 30


def recalibrate_batchnorm(model, x, *, batch_size: int = 500) -> int:
    """Re-estimates every BatchNormalization layer's moving mean and variance on ``x``, in place.

    After units are removed (or after a short fine-tuning, whose momentum updates lag behind),
    the statistics a BatchNormalization layer stored no longer describe its inputs. Each layer's
    statistics are set to the exact mean and (biased) variance of its inputs over ``x`` and every
    position, those inputs computed with the layers before it already recalibrated. Nothing is
    trained.

    Where the activations of all of ``x`` fit in memory (about 1 GiB), this is one forward pass
    over ``x`` as a single batch in which each BatchNormalization layer, as it is reached, first
    sets its statistics from its inputs (accumulated in float64: TensorFlow's own float32
    moments over a million values were off by 1 % here) and then normalises with them.
    Otherwise it runs the model up to each BatchNormalization layer in turn, in batches of
    ``batch_size`` (a pass of the model per layer).

    Args:
        model: A functional or Sequential ``keras.Model``.
        x: Examples, float32 (n, *input shape); a few thousand suffice.
        batch_size: Examples per forward call where the layers are done one at a time.

    Returns:
        The number of layers recalibrated (0 if the model has no BatchNormalization).
    """
    layers = [layer for layer in model.layers
              if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    if _one_pass_possible(model, len(x)):
        _recalibrate_in_one_pass(model, x, layers)
    else:
        _recalibrate_layer_by_layer(model, x, layers, batch_size)
    return len(layers)


def _one_pass_possible(model, n: int) -> bool:
    largest = 0
    for layer in model.layers:
        for tensor in keras.tree.flatten(layer.output):
            largest = max(largest, int(np.prod([d or 1 for d in tensor.shape[1:]])))
    return 4 * largest * n * 4 <= _ONE_PASS_BYTES  # a few float32 tensors of n examples alive


def _reduced_axes(layer, ndim: int) -> tuple[int, ...]:
    """The axes a BatchNormalization layer's statistics average over: all but its own."""
    return tuple(i for i in range(ndim) if i != layer.axis % ndim)


def _set_statistics(layer, h) -> None:
    """Sets a BatchNormalization layer's moving statistics to those of its inputs ``h``."""
    h = np.asarray(keras.ops.convert_to_numpy(h), np.float64)
    axes = _reduced_axes(layer, h.ndim)
    mean = h.mean(axis=axes)
    variance = h.var(axis=axes)
    layer.moving_mean.assign(mean.astype(np.float32))
    layer.moving_variance.assign(variance.astype(np.float32))


def _recalibrate_in_one_pass(model, x, layers) -> None:
    originals = {}

    def calibrating(layer, call):
        def wrapped(inputs, *args, **kwargs):
            _set_statistics(layer, inputs)
            return call(inputs, *args, **kwargs)
        return wrapped

    try:
        for layer in layers:
            originals[layer] = layer.call
            layer.call = calibrating(layer, layer.call)
        model(x, training=False)
    finally:
        for layer, call in originals.items():
            layer.call = call


def _recalibrate_layer_by_layer(model, x, layers, batch_size: int) -> None:
    for layer in layers:
        probe = keras.Model(model.inputs[0], layer.input)
        axes = _reduced_axes(layer, len(layer.input.shape))
        total: np.ndarray | float = 0.0
        total_sq: np.ndarray | float = 0.0
        count = 0
        for start in range(0, len(x), batch_size):
            h = keras.ops.convert_to_numpy(probe(x[start:start + batch_size], training=False))
            h = h.astype(np.float64)
            total = total + h.sum(axis=axes)
            total_sq = total_sq + (h * h).sum(axis=axes)
            count += h.size // h.shape[layer.axis]
        mean = np.asarray(total) / count
        variance = np.maximum(np.asarray(total_sq) / count - mean * mean, 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))

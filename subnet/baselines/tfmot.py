"""Unstructured magnitude pruning with the TensorFlow Model Optimization Toolkit, in a child.

TFMOT works only with tf_keras models and needs ``TF_USE_LEGACY_KERAS`` for the whole process,
so it never runs in subnet's process: :func:`start_magnitude_prune` writes the model's layers and
weights to a temporary folder and starts ``_tfmot_worker.py`` in a child Python that, for each
target, rebuilds the model in tf_keras, applies ``prune_low_magnitude`` with a
``PolynomialDecay`` schedule while fine-tuning, calls ``strip_pruning``, and hands the weights
back; :func:`magnitude_prune` does that for one target and waits. This is the only module that
knows TFMOT exists.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from subnet.data import as_dataset
from subnet.errors import InputError, clean
from subnet.extraction import copy_model
from subnet.models import outputs_probabilities
from subnet.runtime import keras
from subnet.validation import check_fraction

__all__ = ["PendingPrune", "kernel_sparsity", "magnitude_oneshot", "magnitude_prune",
           "start_magnitude_prune", "tfmot_available"]

_WORKER = Path(__file__).with_name("_tfmot_worker.py")


def tfmot_available() -> bool:
    """Whether tensorflow-model-optimization and tf-keras are installed."""
    return all(importlib.util.find_spec(name) is not None
               for name in ("tensorflow_model_optimization", "tf_keras"))


def _has_kernel(layer) -> bool:
    """Conv and Dense layers: what TFMOT prunes here (their ``kernel``)."""
    return isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
                              keras.layers.Conv3D)) and \
        not isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
                               keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D))


def _prunable_kernels(model) -> int:
    return int(sum(np.prod(layer.kernel.shape) for layer in model.layers if _has_kernel(layer)))


def kernel_sparsity(model, nonzero: int) -> float:
    """The fraction of Conv/Dense kernel weights to zero so that ``model`` keeps ``nonzero``
    nonzero parameters (biases and other weights, depthwise and separable kernels included,
    are not pruned)."""
    kernels = _prunable_kernels(model)
    return 1.0 - (int(nonzero) - (model.count_params() - kernels)) / kernels


def magnitude_oneshot(model, sparsity: float):
    """Sets the smallest-magnitude fraction of every Conv/Dense kernel to zero, without training:
    the one-shot counterpart of TFMOT's schedule, and a model of TFMOT's shape (dense kernels
    holding zeros) for size and latency comparisons.

    Args:
        model: A ``keras.Model``; it is not changed.
        sparsity: Fraction of each kernel's weights to zero, in [0, 1] (ties at the threshold
            are zeroed too).

    Returns:
        A pruned, uncompiled copy (:func:`subnet.extraction.copy_model`).

    Raises:
        InputError: If ``sparsity`` is not in [0, 1].
    """
    check_fraction("sparsity", sparsity)
    pruned = copy_model(model)
    for layer in pruned.layers:
        if _has_kernel(layer):
            weights = layer.get_weights()
            kernel = weights[0]
            k = int(round(float(sparsity) * kernel.size))
            if k:
                threshold = np.partition(np.abs(kernel).ravel(), k - 1)[k - 1]
                kernel = np.where(np.abs(kernel) <= threshold, 0.0, kernel).astype(kernel.dtype)
            layer.set_weights([kernel, *weights[1:]])
    return pruned


def magnitude_prune(model, dataset, *, nonzero: int | None = None,
                    sparsity: float | None = None, epochs: int | None = None,
                    examples: int | None = None, batch_size: int = 128,
                    learning_rate: float = 1e-3, prune_fraction: float = 0.7, seed: int = 0,
                    timeout: float | None = None) -> tuple[keras.Model, dict]:
    """Prunes a model's Conv/Dense kernels by magnitude with TFMOT while fine-tuning it.

    The model keeps its shape (pruned weights are stored as zeros). Every kernel is pruned to the
    same sparsity, reached along a polynomial schedule over the first ``prune_fraction`` of the
    fine-tuning steps; biases and other weights are not pruned (TFMOT's default).

    Args:
        model: A flat ``keras.Model`` of built-in layers (any graph: the child rebuilds it as
            a tf_keras functional model).
        dataset: A :class:`~subnet.data.Dataset` with training data, or
            ``((x_train, y_train), (x_test, y_test))`` as ``keras.datasets``' ``load_data()``
            returns it, or ``(train, test)`` as ``tf.data.Dataset`` objects of (examples, labels)
            (:func:`~subnet.data.as_dataset`).
        nonzero: Target number of nonzero parameters in the whole model (e.g. an extracted
            subnetwork's parameter count; TFMOT rounds each layer's pruned count on its own, so
            small models can land a few weights off); or
        sparsity: Target fraction of kernel weights set to zero, in [0, 1) (one of the two).
        epochs: Fine-tuning budget in passes over the training data; or
        examples: Fine-tuning budget in examples (one of the two).
        batch_size: Examples per step.
        learning_rate: Adam's initial learning rate (cosine decay to 0, as :func:`finetune`).
        prune_fraction: Fraction of the steps over which sparsity ramps up, in (0, 1].
        seed: Seeds the shuffling.
        timeout: Seconds the child may run (None: no limit).

    Returns:
        ``(pruned model, info)``: a Keras 3 copy of ``model`` with the pruned weights, and a dict
        with the target and achieved sparsity, nonzero parameters and seconds.

    Raises:
        ValueError: If TFMOT is not installed or the targets or budgets are invalid.
        RuntimeError: If the child process fails or runs past ``timeout``.
    """
    with start_magnitude_prune(model, dataset, nonzero=None if nonzero is None else [nonzero],
                               sparsity=None if sparsity is None else [sparsity],
                               epochs=epochs, examples=examples,
                               batch_size=batch_size, learning_rate=learning_rate,
                               prune_fraction=prune_fraction, seed=seed) as pending:
        return pending.result(timeout=timeout)[0]


def start_magnitude_prune(model, dataset, *, nonzero: Sequence[int] | None = None,
                          sparsity: Sequence[float] | None = None, epochs: int | None = None,
                          examples: int | None = None, batch_size: int = 128,
                          learning_rate: float = 1e-3, prune_fraction: float = 0.7,
                          seed: int = 0) -> PendingPrune:
    """Starts :func:`magnitude_prune` for several targets in one child process, and returns at once.

    The child prunes a fresh copy of ``model`` for each target in turn, with the same settings
    and seed, while this process goes on with other work: on a machine with more than one core
    the two overlap (the comparison fine-tunes its subnetworks meanwhile). One child for all
    targets pays TensorFlow's start-up and the copy of the training data once.

    Args:
        model, dataset, epochs, examples, batch_size, learning_rate, prune_fraction, seed: As
            for :func:`magnitude_prune`.
        nonzero: Target numbers of nonzero parameters, one pruned model each; or
        sparsity: Target kernel sparsities (one of the two).

    Returns:
        A :class:`PendingPrune`; its :meth:`~PendingPrune.result` waits for the child. Use it as
        a context manager (or call :meth:`~PendingPrune.cancel`) so that an error in between
        does not leave the child running.

    Raises:
        ValueError: As :func:`magnitude_prune`, for any of the targets.
    """
    dataset = as_dataset(dataset)
    if not tfmot_available():
        raise InputError("The magnitude-pruning baseline needs tensorflow-model-optimization and "
                         "tf-keras; install them with: pip install 'subnet[tfmot]'.")
    if (nonzero is None) == (sparsity is None):
        raise InputError("Give exactly one pruning target: `nonzero` or `sparsity`.")
    if (epochs is None) == (examples is None):
        raise InputError("Give exactly one fine-tuning budget: `epochs` or `examples`.")
    if dataset.x_train is None:
        raise InputError(f"Dataset {dataset.name!r} has no training data to fine-tune on.")
    check_fraction("prune_fraction", prune_fraction, low_open=True)
    targets = list(nonzero if sparsity is None else sparsity)
    if not targets:
        raise InputError("Give at least one pruning target.")
    sparsities = [_sparsity(model, value) for value in targets] if sparsity is None else \
        [_checked_sparsity(value) for value in targets]
    n = len(dataset.x_train)
    total = int(epochs) * n if epochs is not None else int(examples)
    if total < 1:
        raise InputError(f"The fine-tuning budget must be at least one example. Received "
                         f"epochs={epochs!r}, examples={examples!r}.")
    graph = _graph_spec(model)
    spec = {"input_shape": list(model.inputs[0].shape[1:]),
            "input_dtype": str(model.inputs[0].dtype), **graph,
            "sparsities": sparsities, "examples": total, "batch_size": int(batch_size),
            "learning_rate": float(learning_rate), "prune_fraction": float(prune_fraction),
            "seed": int(seed), "probabilities": outputs_probabilities(model)}
    job = tempfile.TemporaryDirectory(prefix="subnet-tfmot-")
    try:
        folder = Path(job.name)
        (folder / "spec.json").write_text(json.dumps(spec, default=_json_default))
        np.savez(folder / "weights.npz", **_layer_weights(model, graph["calls"]))
        np.savez(folder / "data.npz", x=dataset.x_train, y=dataset.y_train)
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        with open(folder / "child.log", "wb") as log:
            child = subprocess.Popen([sys.executable, str(_WORKER), str(folder)], env=env,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    except BaseException:
        job.cleanup()
        raise
    return PendingPrune(model, job, child, len(sparsities),
                        {"examples": total, "prune_fraction": float(prune_fraction)},
                        [call["name"] for call in graph["calls"]])


class PendingPrune:
    """TFMOT pruning running in a child process (from :func:`start_magnitude_prune`)."""

    def __init__(self, model, job: tempfile.TemporaryDirectory, child: subprocess.Popen,
                 count: int, settings: dict, layers: list[str]):
        self._model, self._job, self._child = model, job, child
        self._count, self._settings, self._layers = count, settings, layers

    def result(self, timeout: float | None = None) -> list[tuple[keras.Model, dict]]:
        """Waits for the child and returns ``(pruned model, info)`` per target, in order.

        Raises:
            RuntimeError: If the child failed or ran past ``timeout`` seconds (it is stopped).
        """
        folder = Path(self._job.name)
        try:
            code = self._child.wait(timeout=timeout)
        except subprocess.TimeoutExpired as err:
            self.cancel()
            raise RuntimeError(f"The TFMOT child process ran past its {timeout} s limit.") from err
        try:
            missing = [i for i in range(self._count) if not (folder / f"result{i}.json").exists()]
            if code != 0 or missing:
                log = (folder / "child.log").read_text(errors="replace").strip().splitlines()
                tail = "\n".join(log[-5:])
                raise RuntimeError(f"The TFMOT child process failed (exit {code}): {tail}")
            out = []
            for i in range(self._count):
                pruned = copy_model(self._model)
                with np.load(folder / f"pruned{i}.npz") as data:
                    _set_layer_weights(pruned, self._layers, data)
                info = json.loads((folder / f"result{i}.json").read_text())
                info.update(params=int(pruned.count_params()), **self._settings)
                out.append((pruned, info))
            return out
        finally:
            self._job.cleanup()

    def cancel(self) -> None:
        """Stops the child, if it still runs, and removes its files."""
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        self._job.cleanup()

    def __enter__(self) -> PendingPrune:
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


def _graph_spec(model) -> dict:
    """The model's layer calls, for the child to rebuild it as a tf_keras functional model."""
    from subnet.structure import graph_calls

    calls, input_name, output_name = graph_calls(model)
    out = []
    for call in calls:
        layer = call.layer
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Lambda) or \
                type(layer).__module__.split(".")[0] != "keras":
            # tf_keras would have to rebuild its code from the config, in another process
            raise InputError(f"The TFMOT baseline rebuilds the model in tf_keras, which cannot "
                             f"carry layer {clean(layer.name)!r} ({type(layer).__name__}); "
                             "leave tfmot out of --methods for this model.")
        first = call.node.arguments.args[0] if call.node.arguments.args else None
        out.append({"name": layer.name, "class_name": type(layer).__name__,
                    "config": layer.get_config(), "inputs": list(call.inputs),
                    "list_input": isinstance(first, (list, tuple))})
    return {"calls": out, "input": input_name, "output": output_name}


def _layer_weights(model, calls) -> dict:
    """Each layer's weights under ``{call index}_{weight index}``."""
    return {f"{i}_{k}": w for i, call in enumerate(calls)
            for k, w in enumerate(model.get_layer(call["name"]).get_weights())}


def _set_layer_weights(model, layers: list[str], data) -> None:
    """Sets the weights the child wrote (``{call index}_{weight index}``, ``layers`` naming the
    spec's calls in order)."""
    for i, name in enumerate(layers):
        layer = model.get_layer(name)
        count = len(layer.get_weights())
        if count:
            layer.set_weights([data[f"{i}_{k}"] for k in range(count)])


def _sparsity(model, nonzero) -> float:
    kernels = _prunable_kernels(model)
    others = model.count_params() - kernels
    if isinstance(nonzero, bool) or not isinstance(nonzero, (int, np.integer)) or \
            not others < nonzero <= model.count_params():
        raise InputError(f"Invalid value received for argument `nonzero`. Expected an int "
                         f"in ({others}, {model.count_params()}] (the weights TFMOT does not "
                         f"prune, up to the whole model). Received: nonzero={nonzero!r}")
    return _checked_sparsity(kernel_sparsity(model, nonzero))


def _checked_sparsity(sparsity) -> float:
    return check_fraction("sparsity", sparsity, high_open=True)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return None  # Keras 3 objects in configs (dtype policies, initializers): not needed

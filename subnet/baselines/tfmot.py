"""Unstructured magnitude pruning with the TensorFlow Model Optimization Toolkit, in a child.

TFMOT works only with tf_keras models and needs ``TF_USE_LEGACY_KERAS`` for the whole process,
so it never runs in subnet's process: :func:`magnitude_prune` writes the model's layers and
weights to a temporary folder, runs ``_tfmot_worker.py`` in a child Python that rebuilds the model
in tf_keras, applies ``prune_low_magnitude`` with a ``PolynomialDecay`` schedule while
fine-tuning, calls ``strip_pruning``, and hands the weights back. This is the only module that
knows TFMOT exists.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from subnet.engine.chain import _MIXING, _chain_from_output
from subnet.extraction import _layers_before
from subnet.models import outputs_probabilities

__all__ = ["kernel_sparsity", "magnitude_prune", "tfmot_available"]

_WORKER = Path(__file__).with_name("_tfmot_worker.py")


def tfmot_available() -> bool:
    """Whether tensorflow-model-optimization and tf-keras are installed."""
    return all(importlib.util.find_spec(name) is not None
               for name in ("tensorflow_model_optimization", "tf_keras"))


def _prunable_kernels(model) -> int:
    return int(sum(np.prod(layer.kernel.shape) for layer in model.layers
                   if isinstance(layer, _MIXING)))


def kernel_sparsity(model, nonzero: int) -> float:
    """The fraction of Conv/Dense kernel weights to zero so that ``model`` keeps ``nonzero``
    nonzero parameters (biases and other weights are not pruned)."""
    kernels = _prunable_kernels(model)
    return 1.0 - (int(nonzero) - (model.count_params() - kernels)) / kernels


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
        model: A ``keras.Model`` whose layers form a chain of built-in layers.
        dataset: A :class:`~subnet.data.Dataset` with training data.
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
    if not tfmot_available():
        raise ValueError("The magnitude-pruning baseline needs tensorflow-model-optimization and "
                         "tf-keras; install them with: pip install 'subnet[tfmot]'.")
    if (nonzero is None) == (sparsity is None):
        raise ValueError("Give exactly one pruning target: `nonzero` or `sparsity`.")
    if (epochs is None) == (examples is None):
        raise ValueError("Give exactly one fine-tuning budget: `epochs` or `examples`.")
    if dataset.x_train is None:
        raise ValueError(f"Dataset {dataset.name!r} has no training data to fine-tune on.")
    if not 0 < prune_fraction <= 1:
        raise ValueError(f"Invalid value received for argument `prune_fraction`. Expected a "
                         f"float in (0, 1]. Received: prune_fraction={prune_fraction!r}")
    kernels = _prunable_kernels(model)
    others = model.count_params() - kernels
    if sparsity is None:
        if isinstance(nonzero, bool) or not isinstance(nonzero, (int, np.integer)) or \
                not others < nonzero <= model.count_params():
            raise ValueError(f"Invalid value received for argument `nonzero`. Expected an int "
                             f"in ({others}, {model.count_params()}] (the weights TFMOT does not "
                             f"prune, up to the whole model). Received: nonzero={nonzero!r}")
        sparsity = kernel_sparsity(model, nonzero)
    if not 0 <= sparsity < 1:
        raise ValueError(f"Invalid value received for argument `sparsity`. Expected a float in "
                         f"[0, 1). Received: sparsity={sparsity!r}")
    n = len(dataset.x_train)
    total = int(epochs) * n if epochs is not None else int(examples)
    if total < 1:
        raise ValueError(f"The fine-tuning budget must be at least one example. Received "
                         f"epochs={epochs!r}, examples={examples!r}.")
    layers = _layers_before(model, _chain_from_output(model)[0]) + _chain_from_output(model)
    spec_layers = []
    for layer in layers:
        spec_layers.append({"class_name": type(layer).__name__, "config": layer.get_config()})
    spec = {"input_shape": list(model.inputs[0].shape[1:]), "layers": spec_layers,
            "sparsity": float(sparsity), "examples": total, "batch_size": int(batch_size),
            "learning_rate": float(learning_rate), "prune_fraction": float(prune_fraction),
            "seed": int(seed), "probabilities": outputs_probabilities(model)}
    with tempfile.TemporaryDirectory(prefix="subnet-tfmot-") as tmp:
        job = Path(tmp)
        (job / "spec.json").write_text(json.dumps(spec, default=_json_default))
        np.savez(job / "weights.npz", **{f"w{i}": w for i, w in enumerate(model.get_weights())})
        np.savez(job / "data.npz", x=dataset.x_train, y=dataset.y_train)
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        try:
            done = subprocess.run([sys.executable, str(_WORKER), str(job)], env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"The TFMOT child process ran past its {timeout} s limit.") from err
        if done.returncode != 0 or not (job / "pruned.npz").exists():
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"The TFMOT child process failed (exit {done.returncode}): {tail}")
        with np.load(job / "pruned.npz") as data:
            weights = [data[f"w{i}"] for i in range(len(data.files))]
        info = json.loads((job / "result.json").read_text())
    pruned = keras.models.clone_model(model)
    pruned.set_weights(weights)
    info.update(params=int(pruned.count_params()),
                examples=total, prune_fraction=float(prune_fraction))
    return pruned, info


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return None  # Keras 3 objects in configs (dtype policies, initializers): not needed

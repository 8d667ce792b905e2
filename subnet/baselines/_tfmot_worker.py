"""Child process of the TFMOT baseline: rebuild in tf_keras, prune, fine-tune, strip.

Run as ``python _tfmot_worker.py JOB_DIR`` by :mod:`subnet.baselines.tfmot`, as a script so that
the child imports nothing from subnet (TFMOT needs tf_keras and ``TF_USE_LEGACY_KERAS`` for the
whole process). JOB_DIR holds ``spec.json`` (the model's layer calls in graph order, training
settings, target sparsities), ``weights.npz`` (each layer's weights as ``{call index}_{weight
index}``) and ``data.npz`` (x_train, y_train). For the i-th target sparsity the worker prunes a
fresh copy of the model and writes ``pruned{i}.npz`` (the stripped weights, same keys), then
``result{i}.json`` (renamed into place last, so its presence means target i is complete).
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _clean_config(cls, config: dict) -> dict:
    """Keeps the constructor arguments tf_keras understands; drops Keras 3 serialized objects
    (dtype policies, initializers), which the copied weights make irrelevant."""
    accepted = set(inspect.signature(cls.__init__).parameters)
    out = {}
    for key, value in config.items():
        if key not in accepted and key != "name":
            continue
        if isinstance(value, dict) and ("class_name" in value or "module" in value):
            continue
        out[key] = value
    return out


def build(spec: dict):
    """The model as a tf_keras functional model: each call of the spec, in graph order."""
    import tf_keras

    inputs = tf_keras.Input(shape=tuple(spec["input_shape"]), dtype=spec["input_dtype"])
    tensors = {spec["input"]: inputs}
    for call in spec["calls"]:
        cls = getattr(tf_keras.layers, call["class_name"])
        layer = cls(**_clean_config(cls, call["config"]))
        args = [tensors[name] for name in call["inputs"]]
        tensors[call["name"]] = layer(args if call["list_input"] else args[0])
    return tf_keras.Model(inputs, tensors[spec["output"]], name="rebuilt")


def set_weights(model, spec: dict, data) -> None:
    for i, call in enumerate(spec["calls"]):
        layer = model.get_layer(call["name"])
        count = len(layer.get_weights())
        if count:
            layer.set_weights([data[f"{i}_{k}"] for k in range(count)])


def get_weights(model, spec: dict) -> dict:
    return {f"{i}_{k}": w for i, call in enumerate(spec["calls"])
            for k, w in enumerate(model.get_layer(call["name"]).get_weights())}


def prune_kernels(model, tfmot, tf_keras, schedule):
    """A copy of ``model`` whose Conv/Dense layers (those with a kernel) are wrapped in
    ``prune_low_magnitude``, with the model's weights. The other layers (pooling, Flatten,
    Identity, ...) stay as they are: TFMOT refuses to wrap layers it has no pruning rule for."""
    def wrap(layer):
        clone = layer.__class__.from_config(layer.get_config())
        if hasattr(layer, "kernel"):
            return tfmot.sparsity.keras.prune_low_magnitude(clone, pruning_schedule=schedule)
        return clone

    pruned = tf_keras.models.clone_model(model, clone_function=wrap)
    for source, target in zip(model.layers, pruned.layers, strict=True):
        getattr(target, "layer", target).set_weights(source.get_weights())
    return pruned


def main(job: Path) -> int:
    import numpy as np

    spec = json.loads((job / "spec.json").read_text())
    with np.load(job / "weights.npz") as data:
        weights = {key: data[key] for key in data.files}
    with np.load(job / "data.npz") as data:
        x, y = data["x"], data["y"]
    for i, sparsity in enumerate(spec["sparsities"]):
        result, out = prune_one(spec, float(sparsity), weights, x, y)
        np.savez(job / f"pruned{i}.npz", **out)
        (job / f"result{i}.json.tmp").write_text(json.dumps(result))
        os.replace(job / f"result{i}.json.tmp", job / f"result{i}.json")
    return 0


def prune_one(spec: dict, sparsity: float, weights, x, y):
    """Prunes a fresh copy of the model to ``sparsity`` while fine-tuning it; returns the result
    dict and the stripped weights."""
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras

    model = build(spec)
    set_weights(model, spec, weights)
    examples = int(spec["examples"])
    batch = int(spec["batch_size"])
    n = len(x)
    sizes = [min(n, examples - e * n) for e in range(-(-examples // n))]
    steps = sum(-(-s // batch) for s in sizes)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
        end_step=max(1, int(steps * spec["prune_fraction"])), frequency=max(1, steps // 50))
    pruned = prune_kernels(model, tfmot, tf_keras, schedule)
    rate = tf_keras.optimizers.schedules.CosineDecay(float(spec["learning_rate"]), steps)
    pruned.compile(optimizer=tf_keras.optimizers.Adam(rate),
                   loss=tf_keras.losses.SparseCategoricalCrossentropy(
                       from_logits=not spec["probabilities"]),
                   metrics=["accuracy"])
    rng = np.random.default_rng(int(spec["seed"]))
    start = time.perf_counter()
    for size in sizes:
        order = rng.permutation(n)[:size]
        pruned.fit(x[order], y[order], batch_size=batch, epochs=1, shuffle=False, verbose=0,
                   callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    out = get_weights(stripped, spec)
    kernels = [w for layer in stripped.layers for w in layer.get_weights()[:1]
               if hasattr(layer, "kernel")]
    result = {"seconds": time.perf_counter() - start, "steps": steps,
              "target_sparsity": sparsity,
              "kernel_sparsity": float(1 - sum(np.count_nonzero(k) for k in kernels) /
                                       sum(k.size for k in kernels)),
              "nonzero_params": int(sum(np.count_nonzero(w) for w in out.values()))}
    return result, out


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

"""The blog's network, safe model loading, and what a model says about its own dropout.

This is the one module that decides how model files become Keras 3 models. Model files are
untrusted input: :func:`load_model` reads the architecture before anything is deserialized and
refuses any layer that would run code stored in the file (``Lambda``) unless the caller passes
``trust=True``. With trust, a ``Lambda`` that only applies dropout (the blog's
``PermaDropout = Lambda(lambda x: K.dropout(x, level=rate))``) is recognised and rebuilt as a
Keras ``Dropout`` layer that is always on, so the rest of subnet sees an ordinary dropout rate.

Keras 2 models built the blog's other way, ``Dropout(0.5)(x, training=True)``, load in Keras 3
with that dropout *baked on*: ``model(x)`` is random on every call, while ``model.predict`` and
``model(x, training=False)`` are deterministic. :func:`dropout_layers` reports which dropout
layers are baked on, and :func:`with_dropout` returns a copy whose dropout is on or off in every
call, whatever the original said.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import marshal
import os
import shutil
import tempfile
import types
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from subnet._tf import keras
from subnet.errors import InputError, InputTypeError, ModelFileError, UntrustedModelError

__all__ = [
    "AlwaysOnDropout",
    "check_examples",
    "DropoutInfo",
    "dropout_layers",
    "load_model",
    "outputs_probabilities",
    "seed_cnn",
    "with_dropout",
]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"

# Layer classes whose deserialization runs code stored in the file.
_CODE_LAYERS = frozenset({"Lambda"})


def seed_cnn(
    dense_units: int = 500,
    rates: Sequence[float] = (0.5, 0.5, 0.5),
    *,
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    conv_filters: Sequence[int] = (20, 50),
    always_on_dropout: bool = False,
    seed: int = 0,
    name: str = "seed_cnn",
):
    """Builds the blog's LeNet-style CNN (LeNet-5-Caffe with dropout).

    Conv2D 20@5x5 → Dropout → MaxPool 2 → Conv2D 50@5x5 → Dropout → MaxPool 2 → Flatten →
    Dense(dense_units, relu) → Dropout → Dense(num_classes, softmax). As in the blog, the
    convolutions have no activation. With the defaults the model has 431,080 parameters.

    Args:
        dense_units: Width of the hidden dense layer; a positive int.
        rates: Dropout rates (fractions in [0, 1)) after conv1, conv2 and the dense layer.
        input_shape: (height, width, channels) of the images; both sides at least 16.
        num_classes: Number of classes of the softmax classifier; at least 2.
        conv_filters: Filters of the two convolutions.
        always_on_dropout: If True, dropout is applied at inference too, the blog's
            ``Dropout(rate)(x, training=True)``; a saved copy keeps that behaviour.
        seed: Seeds the weight initializers and the dropout layers, so that building and
            training twice with the same seed gives the same model.
        name: The Keras model's name.

    Returns:
        An uncompiled ``keras.Model``.

    Raises:
        ValueError: If an argument is out of range.
    """
    dense_units = _positive_int(dense_units, "dense_units")
    num_classes = _positive_int(num_classes, "num_classes")
    if num_classes < 2:
        raise InputError(f"Invalid value for argument `num_classes`: expected an int >= 2. "
                         f"Received: num_classes={num_classes}")
    rates = tuple(rates)
    if len(rates) != 3:
        raise InputError("Invalid value for argument `rates`: expected three dropout rates "
                         f"(conv1, conv2, dense). Received: rates={rates!r}")
    for r in rates:
        if not isinstance(r, (int, float)) or not 0.0 <= float(r) < 1.0:
            raise InputError("Invalid value for argument `rates`: each rate must be a float in "
                             f"[0, 1). Received: rates={rates!r}")
    filters = tuple(_positive_int(f, "conv_filters") for f in conv_filters)
    if len(filters) != 2:
        raise InputError("Invalid value for argument `conv_filters`: expected two ints. "
                         f"Received: conv_filters={tuple(conv_filters)!r}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape[:2]) < 16 or shape[2] < 1:
        raise InputError("Invalid value for argument `input_shape`: expected (height, width, "
                         f"channels) with both sides >= 16. Received: input_shape={shape!r}")

    def init(i: int):
        return keras.initializers.GlorotUniform(seed=seed * 1000 + i)

    def dropout(x, rate: float, i: int, layer_name: str):
        layer = keras.layers.Dropout(rate, seed=seed * 1000 + 100 + i, name=layer_name)
        return layer(x, training=True) if always_on_dropout else layer(x)

    inputs = keras.Input(shape=shape, name="image")
    x = keras.layers.Conv2D(filters[0], 5, kernel_initializer=init(0), name="conv1")(inputs)
    x = dropout(x, rates[0], 0, "drop1")
    x = keras.layers.MaxPooling2D(2, 2, name="pool1")(x)
    x = keras.layers.Conv2D(filters[1], 5, kernel_initializer=init(1), name="conv2")(x)
    x = dropout(x, rates[1], 1, "drop2")
    x = keras.layers.MaxPooling2D(2, 2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", kernel_initializer=init(2),
                           name="dense")(x)
    x = dropout(x, rates[2], 2, "drop3")
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=init(3),
                                 name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


@dataclasses.dataclass(frozen=True)
class DropoutInfo:
    """One dropout layer of a model.

    Attributes:
        name: The layer's name.
        rate: Its dropout rate, a fraction in [0, 1).
        always_on: True if the model applies it at inference too (the blog's
            ``training=True`` call, or a recognised dropout ``Lambda``).
    """

    name: str
    rate: float
    always_on: bool


def dropout_layers(model) -> list[DropoutInfo]:
    """Lists a model's dropout layers in model order.

    Args:
        model: A ``keras.Model``.

    Returns:
        One :class:`DropoutInfo` per ``keras.layers.Dropout`` layer (``SpatialDropout`` included),
        with ``always_on`` read from how the model calls the layer.

    Raises:
        TypeError: If ``model`` is not a Keras model.
    """
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"Expected a keras.Model for argument `model`. "
                             f"Received: {type(model)!r}")
    baked = _layers_called_with_training_true(model)
    return [
        DropoutInfo(layer.name, float(layer.rate), layer.name in baked)
        for layer in _flat_layers(model)
        if isinstance(layer, keras.layers.Dropout)
    ]


def with_dropout(model, on: bool, *, seed: int | None = 0, rates: dict | None = None):
    """Returns a copy of ``model`` whose dropout is on, or off, in every call.

    Only the dropout layers change: called without ``training=True``, other layers
    (BatchNormalization among them) run in inference mode, so ``with_dropout(model, True)(x)``
    is the blog's test-time dropout and nothing else.

    Args:
        model: A ``keras.Model`` whose layers are built-in Keras layers.
        on: If True, every Dropout layer drops at its own rate in every call; if False none does.
        seed: With ``on=True``, seeds the dropout layers: the copy's sequence of calls is then
            reproducible. ``None`` draws fresh randomness.
        rates: With ``on=True``, {dropout layer name: rate} to use instead of the layers' own.

    Returns:
        A new ``keras.Model`` sharing no state with ``model``; weights are copied.

    Raises:
        TypeError: If ``model`` is not a Keras model.
    """
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"Expected a keras.Model for argument `model`. "
                             f"Received: {type(model)!r}")
    counter = iter(range(1_000_000))

    def clone(layer):
        if isinstance(layer, keras.layers.Dropout):
            if not on:
                return keras.layers.Identity(name=layer.name)
            layer_seed = None if seed is None else seed * 1000 + next(counter)
            rate = (rates or {}).get(layer.name, layer.rate)
            return AlwaysOnDropout(rate, seed=layer_seed, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


@keras.saving.register_keras_serializable(package="subnet")
class AlwaysOnDropout(keras.layers.Layer):
    """Dropout applied whatever the ``training`` flag says.

    Keras semantics: each element is dropped independently with probability ``rate`` and the
    survivors are scaled by 1 / (1 - rate).

    Args:
        rate: Fraction of elements dropped, in [0, 1).
        seed: Seeds the layer's random stream; None draws fresh randomness.
        **kwargs: Passed to ``keras.layers.Layer``.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise InputError("Invalid value received for argument `rate`. Expected a float in "
                             f"[0, 1). Received: rate={rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if self.rate == 0.0:
            return inputs
        return keras.random.dropout(inputs, self.rate, seed=self.seed_generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def outputs_probabilities(model) -> bool:
    """Whether a classifier's output is a softmax (probabilities) rather than logits.

    Reads the output layer's activation; a model ending in a ``Softmax`` layer counts too.

    Args:
        model: A ``keras.Model`` classifier.

    Returns:
        True for probabilities, False for logits.
    """
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return activation is not None and getattr(activation, "__name__", "") == "softmax"


def check_examples(model, x, y) -> tuple[np.ndarray, np.ndarray, int]:
    """Validates examples and labels against a classifier.

    Args:
        model: A ``keras.Model`` classifier with one input and one output.
        x: Examples, float array of shape (n, *model input shape).
        y: True classes, int array of shape (n,), in [0, number of classes).

    Returns:
        ``(x as float32, y as int64, number of classes)``.

    Raises:
        ValueError: If shapes, dtypes, lengths or label values do not fit the model.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    expected = tuple(model.inputs[0].shape[1:])
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise InputError(f"Input `x` has shape {x.shape}, but the model expects examples of "
                         f"shape {expected} (x of shape (n, {', '.join(map(str, expected))})).")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"Input `x` must be floating point (images scaled to [0, 1]). "
                         f"Received dtype {x.dtype}.")
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"Labels `y` must be a 1-D array with one label per example. Received "
                         f"shape {y.shape} for {len(x)} examples.")
    if len(x) == 0:
        raise InputError("Received no examples: `x` and `y` are empty.")
    n_classes = int(model.outputs[0].shape[-1])
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise InputError(f"Labels `y` must be integers in [0, {n_classes}) for this model's "
                         f"{n_classes} classes. Received values in [{y.min()}, {y.max()}] "
                         f"(dtype {y.dtype}).")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False), n_classes


# --------------------------------------------------------------------------------------------
# Loading


def load_model(path: str | os.PathLike, *, trust: bool = False):
    """Loads a Keras classifier from a ``.keras`` or ``.h5`` file without running its code.

    Reads Keras 3 ``.keras`` archives, Keras 3 ``.h5`` files and ``.h5`` files written by Keras 2
    (tf.keras, tf_keras), the blog's functional models included. The architecture is read and
    checked before anything is deserialized.

    Args:
        path: The model file.
        trust: Allow layers whose deserialization runs code stored in the file (``Lambda``).
            Only pass True for files whose source you trust. With True, a ``Lambda`` that applies
            dropout at a readable rate is rebuilt as an always-on Keras ``Dropout`` at that rate;
            other ``Lambda`` layers are deserialized by Keras with its safe mode off.

    Returns:
        The uncompiled ``keras.Model``.

    Raises:
        ModelFileError: If the file is missing, empty, truncated, not a Keras model, or holds
            layers Keras cannot build.
        UntrustedModelError: If the file holds ``Lambda`` layers and ``trust`` is False.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"Model file not found: '{path}'. Check the path.")
    if path.is_dir():
        raise ModelFileError(
            f"'{path}' is a directory; subnet loads a single .keras or .h5 file. A TensorFlow "
            "SavedModel can be converted by loading it in TensorFlow and saving with "
            "model.save('model.keras').")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise ModelFileError(f"Model file '{path}' is empty.")
    if head.startswith(_HDF5_MAGIC):
        fmt = "h5"
    elif head.startswith(_ZIP_MAGIC):
        fmt = "keras"
    else:
        raise ModelFileError(
            f"'{path}' is not a Keras model file: expected a .keras archive (zip) or an .h5 "
            f"(HDF5) file, but its first bytes are {head!r}.")

    config = _read_config(path, fmt)
    code_layers = [(cls, name) for cls, name, _ in _walk_layer_configs(config)
                   if cls in _CODE_LAYERS]
    if code_layers and not trust:
        listed = ", ".join(f"{name!r} ({cls})" for cls, name in code_layers)
        raise UntrustedModelError(
            f"Model file '{path}' contains layers that run code stored in the file: {listed}. "
            "Loading them could execute arbitrary code. If you trust the file's source, pass "
            "trust=True (command line: --trust-model).")

    with contextlib.ExitStack() as stack:
        load_path = path
        if code_layers:
            rewritten = _rewrite_dropout_lambdas(config)
            if rewritten:
                load_path = stack.enter_context(_with_config(path, fmt, config))
        model = _keras_load(load_path, display=path, safe_mode=not trust)
    _check_classifier(model, path)
    return model


def _keras_load(path: Path, *, display: Path, safe_mode: bool):
    try:
        return keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as err:  # Keras raises many types for broken files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(
            f"Could not load model file '{display}': {reason[:300]}. The file may be truncated or "
            "hold layers this Keras version cannot build; re-save it with model.save() from the "
            "code that made it.") from err


def _check_classifier(model, path: Path) -> None:
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"'{path}' does not hold a Keras model (got {type(model).__name__}).")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelFileError(
            f"Model in '{path}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "subnet analyses classifiers with one image input and one class output.")


def _read_config(path: Path, fmt: str) -> dict:
    """Reads the architecture JSON of a model file without deserializing anything."""
    try:
        if fmt == "h5":
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
            if raw is None:
                raise ModelFileError(
                    f"'{path}' is an HDF5 file without a model architecture (a weights-only "
                    "file?). Save the whole model with model.save('model.h5') or '.keras'.")
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8")
        else:
            with zipfile.ZipFile(path) as z:
                if "config.json" not in z.namelist():
                    raise ModelFileError(
                        f"'{path}' is a zip archive but not a Keras model (no config.json).")
                raw = z.read("config.json").decode("utf-8")
        config = json.loads(raw)
    except ModelFileError:
        raise
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(
            f"Could not read model file '{path}': {err}. The file may be truncated or corrupt."
        ) from err
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(f"'{path}' has no readable model architecture.")
    return config


def _walk_layer_configs(config: dict) -> Iterator[tuple[str, str, dict]]:
    """Yields (class_name, layer name, layer config dict) for every layer, nested ones too."""
    inner = config.get("config", {})
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        return
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        cls = str(layer.get("class_name", ""))
        lcfg = layer.get("config", {}) if isinstance(layer.get("config"), dict) else {}
        name = str(layer.get("name") or lcfg.get("name") or "?")
        yield cls, name, layer
        yield from _walk_layer_configs(layer)


def _rewrite_dropout_lambdas(config: dict) -> bool:
    """Replaces dropout ``Lambda`` layers by always-on ``Dropout`` layers, in place.

    Only called once the user trusts the file: it unmarshals the stored bytecode to read it
    (never runs it). Returns True if anything was rewritten.
    """
    changed = False
    for cls, name, layer in _walk_layer_configs(config):
        if cls != "Lambda":
            continue
        rate = _dropout_lambda_rate(layer.get("config", {}))
        if rate is None:
            continue
        old = layer["config"]
        layer["class_name"] = "Dropout"
        layer.pop("registered_name", None)
        new = {"name": old.get("name", name), "trainable": old.get("trainable", True),
               "rate": rate, "seed": None, "noise_shape": None}
        if "dtype" in old:
            new["dtype"] = old["dtype"]
        layer["config"] = new
        if "module" in old or "module" in layer:
            layer["module"] = "keras.layers"
        _set_training_true(layer)
        changed = True
    return changed


def _set_training_true(layer: dict) -> None:
    """Makes every call of a (rewritten) layer ``layer(x, training=True)``, with no other kwargs
    (a Lambda's ``mask`` argument is not Dropout's)."""
    for node in layer.get("inbound_nodes") or []:
        if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            node["kwargs"] = {"training": True}
        elif isinstance(node, list):  # Keras 2: [[inbound, node_index, tensor_index, kwargs]]
            for call in node:
                if isinstance(call, list) and len(call) >= 3:
                    call[3:] = [{"training": True}]


def _dropout_lambda_rate(lcfg: dict) -> float | None:
    """Reads the rate of a Lambda that calls a ``dropout`` function, or None if it is not one."""
    fn = lcfg.get("function")
    if isinstance(fn, dict) and fn.get("class_name") == "__lambda__":  # Keras 3
        inner = fn.get("config", {})
        code_b64, defaults, closure = inner.get("code"), inner.get("defaults"), inner.get("closure")
    elif isinstance(fn, list) and len(fn) == 3:  # Keras 2: [code, defaults, closure]
        code_b64, defaults, closure = fn
    else:
        return None
    if not isinstance(code_b64, str):
        return None
    try:
        code = marshal.loads(base64.b64decode(code_b64.encode("ascii")))
    except (ValueError, EOFError, TypeError, binascii.Error):
        return None  # bytecode from another Python version: cannot be read
    if not isinstance(code, types.CodeType) or not _calls_dropout(code):
        return None
    args = lcfg.get("arguments") or {}
    candidates: list[Any] = []
    if isinstance(args, dict):
        candidates += [args.get("level"), args.get("rate")]
    candidates += list(closure or []) + list(defaults or []) + list(_float_consts(code))
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
            return float(value)
    return None


def _calls_dropout(code: types.CodeType) -> bool:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType) and _calls_dropout(const):
            return True
    return "dropout" in names


def _float_consts(code: types.CodeType) -> Iterator[float]:
    for const in code.co_consts:
        if isinstance(const, float):
            yield const
        elif isinstance(const, types.CodeType):
            yield from _float_consts(const)


@contextlib.contextmanager
def _with_config(path: Path, fmt: str, config: dict) -> Iterator[Path]:
    """Yields a temporary copy of the model file whose architecture is ``config``."""
    tmpdir = tempfile.mkdtemp(prefix="subnet-model-")
    try:
        copy = Path(tmpdir) / ("model.h5" if fmt == "h5" else "model.keras")
        raw = json.dumps(config)
        if fmt == "h5":
            import h5py

            shutil.copyfile(path, copy)
            with h5py.File(copy, "r+") as f:
                f.attrs["model_config"] = raw
        else:
            with zipfile.ZipFile(path) as src, zipfile.ZipFile(copy, "w") as dst:
                for item in src.infolist():
                    data = raw.encode() if item.filename == "config.json" else src.read(item)
                    dst.writestr(item, data)
        yield copy
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _layers_called_with_training_true(model) -> set[str]:
    """Names of layers that the model's graph calls with ``training=True``."""
    try:
        config = model.get_config()
    except Exception:  # subclassed models may not serialize; then nothing is baked in
        return set()
    found: set[str] = set()
    for _, name, layer in _walk_layer_configs({"config": config}):
        for node in layer.get("inbound_nodes") or []:
            kwargs_list = []
            if isinstance(node, dict):
                kwargs_list.append(node.get("kwargs") or {})
            elif isinstance(node, list):
                kwargs_list += [c[3] for c in node if isinstance(c, list) and len(c) > 3]
            if any(isinstance(k, dict) and k.get("training") is True for k in kwargs_list):
                found.add(name)
    return found


def _flat_layers(model) -> list:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += _flat_layers(layer)
        else:
            out.append(layer)
    return out


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InputError(f"Invalid value for argument `{name}`: expected a positive int. "
                         f"Received: {name}={value!r}")
    return int(value)

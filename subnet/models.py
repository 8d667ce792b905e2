"""The blog's network, safe model loading, and what a model says about its own dropout.

This is the one module that decides how model files become Keras 3 models. Model files are
untrusted input: :func:`load_model` reads the architecture before anything is deserialized and
refuses code stored anywhere in it (``Lambda`` layers, wrapped or nested ones too, and Python
functions serialized as activations or initializers) unless the caller passes ``trust=True``; it
refuses, in one line and before Keras reads them, files that are not regular files, that are both
a zip and an HDF5 file, that nest too deeply, declare too much (bytes, layers, parameters) or are
decompression bombs. Names TensorFlow cannot run are replaced, and :func:`original_names` keeps
the file's own. :func:`deserialization_scope` lets other modules copy a model whose code was
trusted. With trust, a ``Lambda`` that only applies dropout (the blog's
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
import copy
import dataclasses
import importlib
import json
import marshal
import os
import re
import shutil
import stat
import tempfile
import threading
import types
import warnings
import weakref
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from subnet._tf import keras
from subnet.errors import InputError, InputTypeError, ModelFileError, UntrustedModelError, clean

__all__ = [
    "AlwaysOnDropout",
    "check_examples",
    "clone_layers",
    "deserialization_scope",
    "DropoutInfo",
    "dropout_layers",
    "load_model",
    "model_bytes",
    "model_from_bytes",
    "original_names",
    "outputs_probabilities",
    "seed_cnn",
    "with_dropout",
]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


def _keras_internal(module: str, name: str):
    """A Keras internal that ``keras`` does not export (Keras is imported by then, through
    :mod:`subnet._tf`); looked up when this module is imported, so that a Keras version without
    it fails here and not inside a check."""
    return getattr(importlib.import_module(module), name)


# Keras's scope for deserializing code (``safe_mode``), as its loaders use it.
_SafeModeScope = _keras_internal("keras.src.saving.serialization_lib", "SafeModeScope")
_ObjectSharingScope = _keras_internal("keras.src.saving.serialization_lib", "ObjectSharingScope")
# How Keras's .h5 loader builds a model from its (Keras 2 or 3) architecture.
_legacy_config_scope = _keras_internal("keras.src.legacy.saving.saving_options",
                                       "keras_option_scope")
_legacy_model_from_config = _keras_internal("keras.src.legacy.saving.saving_utils",
                                            "model_from_config")
# Where Keras keeps the variables whose initialization a StatelessScope deferred.
_global_state = importlib.import_module("keras.src.backend.common.global_state")
# Keras's loader of .keras archives, whose get_temp_dir() makes the folders it extracts into.
_saving_lib = importlib.import_module("keras.src.saving.saving_lib")
_KERAS_TEMP_LOCK = threading.RLock()


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
        A new ``keras.Model`` sharing no state with ``model``; weights are copied. Its
        :func:`original_names` are ``model``'s.

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

    return clone_layers(model, clone)


def clone_layers(model, clone_function):
    """A copy of ``model`` whose layers ``clone_function(layer)`` builds anew, with ``model``'s
    weights and :func:`original_names`.

    Args:
        model: A ``keras.Model`` (a trusted model's Lambda layers are rebuilt too).
        clone_function: Takes each layer, returns the layer to put in its place (a layer with
            the same weights, in the same order).

    Returns:
        A new ``keras.Model`` sharing no state with ``model``.
    """
    with deserialization_scope(model):
        copied = keras.models.clone_model(model, clone_function=clone_function)
    copied.set_weights(model.get_weights())
    if model in _ORIGINAL_NAMES:
        _ORIGINAL_NAMES[copied] = dict(_ORIGINAL_NAMES[model])
    return copied


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

    Reads the output layer's activation; a model ending in a ``Softmax`` layer counts too, and
    Dropout layers after the classifier are looked through (at inference they pass it on).

    Args:
        model: A ``keras.Model`` classifier.

    Returns:
        True for probabilities, False for logits.
    """
    dropout = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
               keras.layers.SpatialDropout3D, keras.layers.GaussianDropout,
               keras.layers.AlphaDropout, AlwaysOnDropout)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    while layers and isinstance(layers[-1], dropout):
        layers.pop()
    if not layers:
        return False
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return activation is not None and getattr(activation, "__name__", "") == "softmax"


def check_examples(model, x, y) -> tuple[np.ndarray, np.ndarray, int]:
    """Validates examples and labels against a classifier.

    Args:
        model: A ``keras.Model`` classifier with one input and one output.
        x: Examples of shape (n, *model input shape): floats, or integer token ids for a model
            whose input is an integer tensor (an Embedding model's).
        y: True classes, int array of shape (n,), in [0, number of classes).

    Returns:
        ``(x as float32, or as int32/int64 token ids, y as int64, number of classes)``.

    Raises:
        ValueError: If shapes, dtypes, lengths or label values do not fit the model.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    expected = tuple(model.inputs[0].shape[1:])
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise InputError(f"Input `x` has shape {x.shape}, but the model expects examples of "
                         f"shape {expected} (x of shape (n, {', '.join(map(str, expected))})).")
    takes_ids = np.issubdtype(np.dtype(model.inputs[0].dtype), np.integer)
    if takes_ids:
        if not np.issubdtype(x.dtype, np.integer):
            raise InputError(f"Input `x` must hold integer token ids: the model's input is "
                             f"{model.inputs[0].dtype}. Received dtype {x.dtype}.")
        if x.size and x.min() < 0:
            raise InputError(f"Input `x` holds negative token ids (smallest {x.min()}); ids "
                             "index an Embedding and must be >= 0.")
    elif not np.issubdtype(x.dtype, np.floating):
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
                         f"(dtype {y.dtype}): give the model one output per class, or check "
                         "the labels.")
    x = x if takes_ids else x.astype(np.float32, copy=False)
    return x, y.astype(np.int64, copy=False), n_classes


# --------------------------------------------------------------------------------------------
# Loading

#: Largest architecture JSON read from a model file (``config.json`` in a ``.keras`` archive, the
#: ``model_config`` attribute of an ``.h5`` file), in bytes. Real architectures are kilobytes to a
#: few megabytes; parsing this many bytes of JSON stays well under 1 GB of memory.
MAX_CONFIG_BYTES = 64 * 2**20
#: Deepest nesting of JSON lists and objects accepted in an architecture (a Keras model nested in
#: models ten times deep is about 60 levels).
MAX_CONFIG_DEPTH = 100
#: A zip member or HDF5 dataset that declares more than this many bytes must not expand more than
#: :data:`MAX_EXPANSION` times its stored size (Keras stores both uncompressed).
EXPANSION_FLOOR_BYTES = 64 * 2**20
#: Largest ratio of declared (uncompressed) to stored bytes above :data:`EXPANSION_FLOOR_BYTES`.
MAX_EXPANSION = 100
#: Most layers a model may declare (nested models and wrapped layers included); the largest
#: image classifiers have about a thousand.
MAX_LAYERS = 10_000
#: Most parameters (weights) a model may declare, counted from its architecture before Keras
#: allocates them; the weights an ``.h5`` file stores are bounded by 8 bytes per parameter.
MAX_PARAMETERS = 2**31
#: Most members a ``.keras`` archive may list (Keras writes three, plus assets).
MAX_ZIP_MEMBERS = 10_000
#: Most objects (groups, datasets, attributes) examined in an HDF5 file.
MAX_H5_OBJECTS = 100_000
#: Most code objects examined when reading a trusted dropout ``Lambda``.
_MAX_CODE_OBJECTS = 10_000

# Layer classes whose deserialization runs code stored in, or named by, the file.
_CODE_LAYERS = frozenset({"Lambda", "TFSMLayer"})
# Class names of serialized Python code (a lambda used as a function, activation, initializer...).
_CODE_CLASS_NAMES = frozenset({"__lambda__"})
# Keys under which a wrapper layer (TimeDistributed, Bidirectional) stores the layer it wraps.
_WRAPPED_LAYER_KEYS = ("layer", "forward_layer", "backward_layer")
# Keys whose values refer to layers by name: [name, node index, tensor index].
_REFERENCE_KEYS = frozenset({"inbound_nodes", "input_layers", "output_layers"})
# Marshalled code objects start with the byte 0x63 or 0xE3; base64 turns those into these.
_CODE_B64_PREFIXES = frozenset({"Yw", "Yx", "Yy", "Yz", "4w", "4x", "4y", "4z"})
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+\Z")
# Names TensorFlow accepts as a name scope (a root scope, the stricter of the two rules).
_VALID_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.-]*\Z")

# {model: {internal name: original name}} for models whose names load_model changed.
_ORIGINAL_NAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def load_model(path: str | os.PathLike, *, trust: bool = False):
    """Loads a Keras classifier from a ``.keras`` or ``.h5`` file without running its code.

    Reads Keras 3 ``.keras`` archives, Keras 3 ``.h5`` files and ``.h5`` files written by Keras 2
    (tf.keras, tf_keras), the blog's functional models included. Before anything is deserialized,
    the file is checked: it must be a regular file of one format (a file that is both a zip and an
    HDF5 file is refused), the sizes it declares must fit :data:`MAX_CONFIG_BYTES`,
    :data:`MAX_EXPANSION`, :data:`MAX_LAYERS` and :data:`MAX_PARAMETERS` (counted by building
    the architecture without allocating its weights), and its architecture must not nest deeper
    than :data:`MAX_CONFIG_DEPTH` nor hold code unless ``trust`` is True. A model used as a
    layer (a nested model) is flattened: its layers are called inline in an equivalent copy
    (:func:`subnet.flatten.flatten_nested`).

    Model and layer names that TensorFlow cannot use as name scopes (spaces, non-ASCII letters,
    ``<``, quotes, ``$``...) are renamed (``my layer`` becomes ``my_layer``, with a ``_2``-style
    suffix where that name is taken); :func:`original_names` maps the new names back.

    Args:
        path: The model file.
        trust: Allow code stored in the file: ``Lambda`` layers and Python functions serialized
            as activations, initializers or other settings. Only pass True for files whose source
            you trust. With True, a ``Lambda`` that applies dropout at a readable rate is rebuilt
            as an always-on Keras ``Dropout`` at that rate; other code is deserialized by Keras
            with its safe mode off (and runs once more when the parameters are counted), and
            :func:`deserialization_scope` lets copies of the model be made.

    Returns:
        The uncompiled ``keras.Model``.

    Raises:
        ModelFileError: If the file is missing, not a regular file, empty, truncated, not a
            Keras model, of ambiguous format, too large or too deeply nested for the limits
            above, or holds layers Keras cannot build.
        UntrustedModelError: If the file holds code and ``trust`` is False.
        InputTypeError: If ``path`` is not a str or path.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError("Invalid type for argument `path`: expected the model file's path "
                             f"(a str or os.PathLike). Received: {type(path).__name__}")
    path = Path(path)
    fmt = _model_format(path)
    config = _read_config(path, fmt)
    _check_depth(config, path)
    code = _code_in_config(config)
    if code and not trust:
        raise UntrustedModelError(
            f"Model file '{clean(path)}' contains code that Keras would run when loading it, in "
            f"{', '.join(code)}. Loading it could execute arbitrary code. If you trust the file's "
            "source, pass trust=True (command line: --trust-model).")
    changed = bool(code) and _rewrite_dropout_lambdas(config)
    renamed = _rename_invalid(config)
    changed = changed or bool(renamed)
    _check_parameter_count(config, fmt, path, trust=bool(code))

    with contextlib.ExitStack() as stack:
        if changed:
            load_path = stack.enter_context(_with_config(path, fmt, config))
        else:
            load_path = stack.enter_context(_with_suffix(path, fmt))
        model = _keras_load(load_path, display=path, safe_mode=not code)
    _check_classifier(model, path)
    from subnet.flatten import flatten_nested, has_nested

    if has_nested(model):  # a model used as a layer: its layers called inline, in a copy
        with deserialization_scope(model) if code else contextlib.nullcontext():
            model = flatten_nested(model)
    if renamed:
        _ORIGINAL_NAMES[model] = renamed
    return model


def model_bytes(model) -> bytes:
    """``model`` as the bytes of a ``.keras`` file (architecture and weights, no optimizer):
    how a model travels to the workers of an executor (:mod:`subnet.distributed`)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="subnet-model-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


_FROM_BYTES: dict = {}  # {SHA-256 of the bytes: model}: the last model a worker loaded


def model_from_bytes(data: bytes):
    """The model :func:`model_bytes` wrote, loaded once per process (the last one is kept).

    The bytes are subnet's own, written from a model object a subnet process runs, so code in
    them (a ``Lambda`` layer) runs nowhere it did not already run: they are loaded with
    ``trust=True``. Never pass bytes read from a file of unknown origin; use :func:`load_model`.
    """
    import hashlib
    import tempfile

    key = hashlib.sha256(data).hexdigest()
    if key not in _FROM_BYTES:
        with tempfile.TemporaryDirectory(prefix="subnet-model-") as folder:
            path = Path(folder) / "model.keras"
            path.write_bytes(data)
            model = load_model(path, trust=True)
        _FROM_BYTES.clear()
        _FROM_BYTES[key] = model
    return _FROM_BYTES[key]


def original_names(model) -> dict[str, str]:
    """The names :func:`load_model` changed, so that reports can show the file's own names.

    Args:
        model: A ``keras.Model``, as returned by :func:`load_model` or :func:`with_dropout`.

    Returns:
        {name in ``model``: name in the file} for the model and each layer that was renamed;
        empty if nothing was renamed. The original names are as the file has them: pass them
        through :func:`subnet.errors.clean` (or HTML escaping) before showing them.

    Raises:
        TypeError: If ``model`` is not a Keras model.
    """
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"Expected a keras.Model for argument `model`. "
                             f"Received: {type(model)!r}")
    return dict(_ORIGINAL_NAMES.get(model, {}))


@contextlib.contextmanager
def deserialization_scope(model) -> Iterator[None]:
    """Lets Keras rebuild ``model``'s own code while copies of it are made.

    Copying a model (``keras.models.clone_model``, ``layer.__class__.from_config``,
    ``keras.models.model_from_json``) rebuilds each ``Lambda`` layer, and each Python function
    used as an activation or initializer, from its serialized bytecode, which Keras refuses
    outside an unsafe scope. Inside this scope Keras allows it if, and only if, ``model`` holds
    such code; that code is the model's own, already loaded in this process (by
    :func:`load_model` with ``trust=True``, or built in Python), so nothing from a file runs that
    was not already trusted. Anything else deserialized inside the scope is treated the same way:
    keep the scope around the copy only. The scope is per thread.

    Args:
        model: The ``keras.Model`` about to be copied.

    Yields:
        Nothing; copy the model inside the ``with`` block.

    Raises:
        TypeError: If ``model`` is not a Keras model.
    """
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"Expected a keras.Model for argument `model`. "
                             f"Received: {type(model)!r}")
    with _SafeModeScope(not _holds_code(model)):
        yield


def _holds_code(model) -> bool:
    if any(isinstance(layer, keras.layers.Lambda) for layer in _all_layers(model)):
        return True
    try:
        with warnings.catch_warnings():  # Keras warns on every Python lambda it serializes
            warnings.simplefilter("ignore")
            config = model.get_config()
    except Exception:  # subclassed models may not serialize: nothing to rebuild from a config
        return False
    return bool(_code_in_config({"config": config}))


def _all_layers(model) -> Iterator:
    """Every layer of ``model``, those of nested models and wrappers included (iteratively)."""
    stack = list(reversed(model.layers))
    seen: set[int] = set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        if isinstance(layer, keras.Model):
            stack.extend(reversed(layer.layers))
        for key in _WRAPPED_LAYER_KEYS:
            inner = getattr(layer, key, None)
            if isinstance(inner, keras.layers.Layer):
                stack.append(inner)


def _model_format(path: Path) -> str:
    """Checks that ``path`` is a regular, non-empty file of one model format; returns the format
    ("keras" or "h5"). Nothing is opened that could block (a FIFO, a device)."""
    shown = clean(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ModelFileError(f"Model file not found: '{shown}'. Check the path.") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL character in the path
        reason = getattr(err, "strerror", None) or err
        raise ModelFileError(f"Cannot read model file '{shown}': {clean(reason)}. Check the "
                             "path and its permissions.") from err
    if stat.S_ISDIR(info.st_mode):
        raise ModelFileError(
            f"'{shown}' is a directory; subnet loads a single .keras or .h5 file. A TensorFlow "
            "SavedModel can be converted by loading it in TensorFlow and saving with "
            "model.save('model.keras').")
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(
            f"'{shown}' is not a regular file (it is a {_file_kind(info.st_mode)}); subnet loads "
            "a .keras or .h5 file from disk. Save the model to a file and pass its path.")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the check, do not wait on it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ModelFileError(f"'{shown}' is not a regular file; pass a .keras or .h5 "
                                     "file.")
            head = f.read(8)
    except OSError as err:
        raise ModelFileError(f"Cannot read model file '{shown}': {clean(err.strerror)}. Check "
                             "the path and its permissions.") from err
    if not head:
        raise ModelFileError(f"Model file '{shown}' is empty.")
    import h5py

    if head.startswith(_HDF5_MAGIC):
        fmt, other = "h5", zipfile.is_zipfile(path)
    elif head.startswith(_ZIP_MAGIC):
        fmt, other = "keras", h5py.is_hdf5(path)
    else:
        raise ModelFileError(
            f"'{shown}' is not a Keras model file: expected a .keras archive (zip) or an .h5 "
            f"(HDF5) file, but its first bytes are {head!r}.")
    if other:
        raise ModelFileError(
            f"'{shown}' is both a zip archive and an HDF5 file, so which model it holds depends "
            "on the program reading it; subnet refuses such files. Re-save the model with "
            "model.save('model.keras') from the code that made it.")
    return fmt


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")]
    return next((name for test, name in kinds if test(mode)), "special file")


def _keras_load(path: Path, *, display: Path, safe_mode: bool):
    try:
        with _keras_temp_dirs():
            return keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as err:  # Keras raises many types for broken files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(
            f"Could not load model file '{clean(display)}': {clean(reason, 300)}. The file may "
            "be truncated or hold layers this Keras version cannot build; re-save it with "
            "model.save() from the code that made it.") from err


@contextlib.contextmanager
def _keras_temp_dirs() -> Iterator[None]:
    """Keras extracts the files of a ``.keras`` archive into a new folder of the temporary
    directory (``saving_lib.get_temp_dir``) and, when the archive is refused or malformed,
    leaves it there. Within this block those folders are made inside one folder of subnet's,
    which is removed on the way out, whatever happened."""
    folder = tempfile.mkdtemp(prefix="subnet-keras-load-")
    with _KERAS_TEMP_LOCK:  # the patched function is Keras's module-level one
        original = _saving_lib.get_temp_dir
        _saving_lib.get_temp_dir = lambda: tempfile.mkdtemp(dir=folder)
        try:
            yield
        finally:
            _saving_lib.get_temp_dir = original
            shutil.rmtree(folder, ignore_errors=True)


def _check_classifier(model, path: Path) -> None:
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"'{clean(path)}' does not hold a Keras model "
                             f"(got {type(model).__name__}).")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelFileError(
            f"Model in '{clean(path)}' has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; subnet analyses classifiers with one image input and one class output.")


# Errors the zip, HDF5 and JSON readers raise for broken or hostile files.
_READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
                UnicodeDecodeError, ValueError, KeyError, RuntimeError)


def _read_config(path: Path, fmt: str) -> dict:
    """Reads the architecture JSON of a model file without deserializing anything, after
    checking the sizes the file declares."""
    shown = clean(path)
    try:
        if fmt == "h5":
            import h5py

            with h5py.File(path, "r") as f:
                _check_h5(f, path)
                raw = _read_h5_config(f, path)
        else:
            _check_zip_members(path)
            with zipfile.ZipFile(path) as z:
                raw = _read_zip_config(z, path)
        if len(raw) > MAX_CONFIG_BYTES:
            raise _too_large(path, "an architecture", len(raw))
        config = json.loads(raw)
    except ModelFileError:
        raise
    except RecursionError as err:
        raise _too_deep(path) from err
    except _READ_ERRORS as err:
        raise ModelFileError(
            f"Could not read model file '{shown}': {clean(err, 300)}. The file may be truncated "
            "or corrupt.") from err
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(f"'{shown}' has no readable model architecture.")
    return config


def _too_large(path: Path, what: str, size: int) -> ModelFileError:
    return ModelFileError(
        f"Model file '{clean(path)}' declares {clean(what)} of {size:,} bytes, more than subnet "
        f"reads ({MAX_CONFIG_BYTES:,} bytes; subnet.models.MAX_CONFIG_BYTES). The file is corrupt "
        "or hostile; re-save the model with model.save() from the code that made it.")


def _too_deep(path: Path) -> ModelFileError:
    return ModelFileError(
        f"Model file '{clean(path)}' has an architecture nested more than {MAX_CONFIG_DEPTH} "
        "levels deep (subnet.models.MAX_CONFIG_DEPTH); no real Keras model is. The file is "
        "corrupt or hostile.")


def _bomb(path: Path, what: str, declared: int, stored: int) -> ModelFileError:
    return ModelFileError(
        f"Model file '{clean(path)}' is a decompression bomb: {clean(what)} declares "
        f"{declared:,} bytes but stores {stored:,} (more than {MAX_EXPANSION}x; "
        "subnet.models.MAX_EXPANSION). Refusing to read it.")


def _check_zip_members(path: Path) -> None:
    """Refuses an archive listing more than :data:`MAX_ZIP_MEMBERS` members, from its end
    record, before ``zipfile`` builds an object per member."""
    with open(path, "rb") as f:
        end = zipfile._EndRecData(f)  # the stdlib's reader of the (zip64) end record
    if end is None:
        raise zipfile.BadZipFile("no end of central directory record")
    members = end[zipfile._ECD_ENTRIES_TOTAL]
    if members > MAX_ZIP_MEMBERS:
        raise ModelFileError(
            f"Model file '{clean(path)}' lists {members:,} archive members, more than subnet "
            f"reads ({MAX_ZIP_MEMBERS:,}; subnet.models.MAX_ZIP_MEMBERS); a Keras model has a "
            "few. The file is corrupt or hostile.")


def _read_zip_config(z: zipfile.ZipFile, path: Path) -> str:
    members = z.infolist()
    names = {info.filename: info for info in members}
    if "config.json" not in names:
        raise ModelFileError(
            f"'{clean(path)}' is a zip archive but not a Keras model (no config.json).")
    if names["config.json"].file_size > MAX_CONFIG_BYTES:
        raise _too_large(path, "a config.json", names["config.json"].file_size)
    for info in members:
        if (info.file_size > EXPANSION_FLOOR_BYTES
                and info.file_size > MAX_EXPANSION * max(info.compress_size, 1)):
            raise _bomb(path, f"zip member '{info.filename}'", info.file_size, info.compress_size)
    info = names["config.json"]
    with z.open(info) as f:  # read no more than the limit, whatever the header says
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise _too_large(path, "a config.json", len(data))
    weights = names.get("model.weights.h5")
    if weights is not None:
        import h5py

        with z.open(weights) as fobj, h5py.File(fobj, "r") as f:
            _check_h5(f, path, where="model.weights.h5: ")
    return data.decode("utf-8")


def _read_h5_config(f, path: Path) -> str:
    if "model_config" not in f.attrs:
        raise ModelFileError(
            f"'{clean(path)}' is an HDF5 file without a model architecture (a weights-only "
            "file?). Save the whole model with model.save('model.h5') or '.keras'.")
    raw = f.attrs["model_config"]  # bounded: _check_h5 checked its size
    if isinstance(raw, np.ndarray) and raw.size == 1:
        raw = raw.reshape(-1)[0]
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if not isinstance(raw, str):
        raise ModelFileError(f"'{clean(path)}' has a model_config attribute that is not text "
                             f"(got {type(raw).__name__}).")
    return raw


def _check_h5(f, path: Path, where: str = "") -> None:
    """Checks what an HDF5 file declares before Keras reads it: no links to other files or
    objects, no external or virtual datasets, attributes within :data:`MAX_CONFIG_BYTES`, no
    dataset expanding more than :data:`MAX_EXPANSION` times, at most 8 bytes per
    :data:`MAX_PARAMETERS` in all, and at most :data:`MAX_H5_OBJECTS` objects."""
    import h5py

    def count_up(n: int) -> None:
        nonlocal count
        count += n
        if count > MAX_H5_OBJECTS:
            raise ModelFileError(
                f"Model file '{clean(path)}' holds more than {MAX_H5_OBJECTS:,} HDF5 objects "
                "(subnet.models.MAX_H5_OBJECTS); no real Keras model does.")

    count = 0
    total = 0
    seen = {f["/"].id}  # an object reached by two hard links (or a cycle) is visited once
    stack = [("/", f["/"])]
    while stack:
        name, obj = stack.pop()
        count_up(1 + len(obj.attrs))
        for attr in obj.attrs:
            # Attributes are stored uncompressed, so no attribute expands beyond the file's
            # size; variable-length strings (Keras's model_config) are checked once read.
            attr_id = h5py.h5a.open(obj.id, attr.encode("utf-8"))
            numel = int(np.prod(attr_id.shape, dtype=object)) if attr_id.shape else 1
            size = numel * attr_id.get_type().get_size()
            if size > MAX_CONFIG_BYTES or numel > 10**6:
                raise _too_large(path, f"an HDF5 attribute '{where}{name}@{attr}'", size)
        if isinstance(obj, h5py.Dataset):
            if obj.external or obj.is_virtual:
                raise ModelFileError(
                    f"Model file '{clean(path)}' has an HDF5 dataset '{clean(where + name)}' "
                    "stored in other files; subnet reads only self-contained model files.")
            declared = int(np.prod(obj.shape, dtype=object)) * obj.dtype.itemsize
            stored = obj.id.get_storage_size()
            if declared > EXPANSION_FLOOR_BYTES and declared > MAX_EXPANSION * max(stored, 1):
                raise _bomb(path, f"HDF5 dataset '{where}{name}'", declared, stored)
            total += declared
            if total > 8 * MAX_PARAMETERS:
                raise ModelFileError(
                    f"Model file '{clean(path)}' declares more than {8 * MAX_PARAMETERS:,} bytes "
                    f"of weights (8 bytes per subnet.models.MAX_PARAMETERS={MAX_PARAMETERS:,}).")
        elif isinstance(obj, h5py.Group):
            for key in obj:
                link = obj.get(key, getlink=True)
                if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
                    raise ModelFileError(
                        f"Model file '{clean(path)}' has an HDF5 link '{clean(where + name)}/"
                        f"{clean(key)}' to another object or file; subnet reads only "
                        "self-contained model files.")
                count_up(1)
                child = obj[key]
                if child.id not in seen:
                    seen.add(child.id)
                    stack.append((f"{name.rstrip('/')}/{key}", child))


def _check_depth(config: dict, path: Path) -> None:
    """Refuses JSON nested deeper than :data:`MAX_CONFIG_DEPTH` and models with more than
    :data:`MAX_LAYERS` layers (iteratively)."""
    stack = [(config, 1)]
    layers = 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise _too_deep(path)
        if isinstance(node, dict) and isinstance(node.get("class_name"), str):
            layers += 1  # an upper bound: every Keras object counts
        if isinstance(node, dict):
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
    if layers > MAX_LAYERS and sum(1 for _ in _walk_layer_configs(config)) > MAX_LAYERS:
        raise ModelFileError(
            f"Model file '{clean(path)}' declares more than {MAX_LAYERS:,} layers "
            "(subnet.models.MAX_LAYERS); no image classifier has that many. The file is "
            "corrupt or hostile.")


def _layer_label(layer: dict) -> str:
    cls = layer.get("class_name")
    lcfg = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    name = layer.get("name") or lcfg.get("name") or "?"
    return f"'{clean(name, 200)}' ({clean(cls, 100)})"


def _code_in_config(config: dict) -> list[str]:
    """Labels ("'name' (Class)") of the layers whose configuration holds code, at any depth:
    code layers (``Lambda``, ``TFSMLayer``), serialized Python lambdas (``__lambda__``) and any
    string that is a base64 marshalled code object. The model itself is labelled if code sits
    outside every layer."""
    found: dict[str, None] = {}
    stack: list[tuple[Any, str, bool]] = [(config, _layer_label(config), True)]
    while stack:
        node, label, is_layer = stack.pop()
        if isinstance(node, dict):
            cls = node.get("class_name")
            if is_layer or cls in _CODE_LAYERS:  # a code layer counts wherever it sits
                label = _layer_label(node)
            if cls in _CODE_LAYERS or cls in _CODE_CLASS_NAMES:
                found[label] = None
            for key, value in node.items():
                if key == "layers" and isinstance(value, list):
                    stack.extend((item, label, True) for item in value)
                else:
                    stack.append((value, label, key in _WRAPPED_LAYER_KEYS))
        elif isinstance(node, list):
            stack.extend((item, label, False) for item in node)
        elif isinstance(node, str) and _looks_like_code(node):
            found[label] = None
    return list(found)


def _looks_like_code(text: str) -> bool:
    """Whether ``text`` is base64 of a marshalled Python code object (how Keras stores a lambda);
    decided from its first bytes, without unmarshalling anything."""
    return len(text) >= 40 and text[:2] in _CODE_B64_PREFIXES and bool(_BASE64.match(text))


def _walk_layer_configs(config: dict) -> Iterator[tuple[str, str, dict]]:
    """Yields (class_name, layer name, layer config dict) for every layer, nested ones too, in
    model order; iterative, so that no nesting depth exhausts the stack."""
    stack: list[Iterator] = [iter(_sublayers(config))]
    while stack:
        layer = next(stack[-1], None)
        if layer is None:
            stack.pop()
            continue
        cls = str(layer.get("class_name", ""))
        lcfg = layer.get("config", {}) if isinstance(layer.get("config"), dict) else {}
        name = str(layer.get("name") or lcfg.get("name") or "?")
        yield cls, name, layer
        stack.append(iter(_sublayers(layer)))


def _sublayers(config: dict) -> list[dict]:
    inner = config.get("config", {})
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        return []
    return [layer for layer in layers if isinstance(layer, dict)]


def _rename_invalid(config: dict) -> dict[str, str]:
    """Renames, in place, the model and layers whose names TensorFlow refuses as name scopes.

    Each invalid name becomes its valid characters with ``_`` for the others (prefixed with
    ``n`` if it would not start with a letter, digit or dot), plus ``_2``, ``_3``... if that name
    is taken; the same original name gets the same new name everywhere. References to layers
    (inbound nodes, input and output layers) follow. Returns {new name: original name}.
    """
    holders: list[dict] = []  # dicts whose "name" and config "name" are layer or model names
    stack: list[tuple[Any, bool]] = [(config, True)]
    while stack:
        node, is_layer = stack.pop()
        if isinstance(node, dict):
            if is_layer:
                holders.append(node)
            for key, value in node.items():
                if key == "layers" and isinstance(value, list):
                    stack.extend((item, True) for item in reversed(value))
                elif key not in _REFERENCE_KEYS:
                    stack.append((value, key in _WRAPPED_LAYER_KEYS))
        elif isinstance(node, list):
            stack.extend((item, False) for item in reversed(node))

    def names_of(holder: dict) -> list[str]:
        inner = holder.get("config") if isinstance(holder.get("config"), dict) else {}
        return [n for n in (holder.get("name"), inner.get("name")) if isinstance(n, str)]

    all_names = [n for holder in holders for n in names_of(holder)]
    used = {n for n in all_names if _VALID_NAME.match(n)}
    new_of: dict[str, str] = {}
    for name in all_names:
        if name in used or name in new_of:
            continue
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "layer"
        if not _VALID_NAME.match(base):
            base = "n" + base
        new, k = base, 1
        while new in used:
            k += 1
            new = f"{base}_{k}"
        used.add(new)
        new_of[name] = new
    if not new_of:
        return {}
    for holder in holders:
        if holder.get("name") in new_of:
            holder["name"] = new_of[holder["name"]]
        inner = holder.get("config")
        if isinstance(inner, dict) and inner.get("name") in new_of:
            inner["name"] = new_of[inner["name"]]
    _rename_references(config, new_of)
    return {new: old for old, new in new_of.items()}


def _rename_references(config: dict, new_of: dict[str, str]) -> None:
    """Renames [layer name, node index, tensor index] references under the reference keys."""
    stack: list[tuple[Any, bool]] = [(config, False)]
    while stack:
        node, in_refs = stack.pop()
        if isinstance(node, dict):
            stack.extend((value, in_refs or key in _REFERENCE_KEYS) for key, value in node.items())
        elif isinstance(node, list):
            if (in_refs and len(node) >= 3 and isinstance(node[0], str) and node[0] in new_of
                    and all(isinstance(i, int) for i in node[1:3])):
                node[0] = new_of[node[0]]
            stack.extend((item, in_refs) for item in node)


def _check_parameter_count(config: dict, fmt: str, path: Path, *, trust: bool) -> None:
    """Builds the architecture without allocating its weights (a Keras ``StatelessScope`` that
    defers initialization) and refuses it if it has more than :data:`MAX_PARAMETERS`
    parameters. The weights created before a build fails count too; why a config cannot be
    built is left for the real load to report."""
    pending = _uninitialized_variables()
    n_pending = len(pending)
    try:
        with _SafeModeScope(not trust), keras.StatelessScope(initialize_variables=False):
            if fmt == "h5":
                with _legacy_config_scope(use_legacy_config=True):
                    _legacy_model_from_config(copy.deepcopy(config))
            else:
                with _ObjectSharingScope():
                    keras.saving.deserialize_keras_object(copy.deepcopy(config))
    except Exception:  # noqa: BLE001, S110 - the real load reports why the file cannot be built
        pass
    finally:
        created = pending[n_pending:]
        del pending[n_pending:]  # never initialize the dry run's variables
    sizes = [(int(np.prod(v.shape, dtype=object)), str(v.path)) for v in created]
    total = sum(size for size, _ in sizes)
    if total > MAX_PARAMETERS:
        size, where = max(sizes)
        raise ModelFileError(
            f"Model file '{clean(path)}' declares {total:,} parameters, more than subnet loads "
            f"({MAX_PARAMETERS:,}; subnet.models.MAX_PARAMETERS); the largest weight is "
            f"'{clean(where, 200)}' with {size:,}. The file is corrupt or hostile.")


def _uninitialized_variables() -> list:
    """Keras's list of variables whose initialization a ``StatelessScope`` deferred."""
    return _global_state.get_global_attribute("uninitialized_variables", [],
                                              set_to_default=True)


def _rewrite_dropout_lambdas(config: dict) -> bool:
    """Replaces dropout ``Lambda`` layers by always-on ``Dropout`` layers, in place.

    Only called once the user trusts the file: it unmarshals the stored bytecode to read it
    (never runs it). Returns True if anything was rewritten.
    """
    changed = False
    for cls, name, layer in list(_walk_layer_configs(config)):
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
    if not isinstance(lcfg, dict):
        return None
    fn = lcfg.get("function")
    if isinstance(fn, dict) and fn.get("class_name") == "__lambda__":  # Keras 3
        inner = fn.get("config", {})
        inner = inner if isinstance(inner, dict) else {}
        code_b64, defaults, closure = inner.get("code"), inner.get("defaults"), inner.get("closure")
    elif isinstance(fn, list) and len(fn) == 3:  # Keras 2: [code, defaults, closure]
        code_b64, defaults, closure = fn
    else:
        return None
    if not isinstance(code_b64, str):
        return None
    try:
        code = marshal.loads(base64.b64decode(code_b64.encode("ascii")))
    except (ValueError, EOFError, TypeError, binascii.Error, RecursionError):
        return None  # bytecode from another Python version, or nested too deeply: not read
    if not isinstance(code, types.CodeType):
        return None
    codes = _code_objects(code)
    if not any("dropout" in c.co_names for c in codes):
        return None
    args = lcfg.get("arguments") or {}
    candidates: list[Any] = []
    if isinstance(args, dict):
        candidates += [args.get("level"), args.get("rate")]
    for extra in (closure, defaults):
        candidates += list(extra) if isinstance(extra, (list, tuple)) else []
    candidates += [const for c in codes for const in c.co_consts if isinstance(const, float)]
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
            return float(value)
    return None


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    """``code`` and the code objects nested in its constants, in pre-order, iteratively; at
    most ``_MAX_CODE_OBJECTS`` of them."""
    out: list[types.CodeType] = []
    stack = [code]
    while stack and len(out) < _MAX_CODE_OBJECTS:
        current = stack.pop()
        out.append(current)
        stack.extend(reversed([c for c in current.co_consts if isinstance(c, types.CodeType)]))
    return out


@contextlib.contextmanager
def _with_suffix(path: Path, fmt: str) -> Iterator[Path]:
    """Yields ``path``, or a link to it whose suffix makes Keras read the format subnet checked
    (Keras chooses the format from the file name)."""
    suffixes = (".keras",) if fmt == "keras" else (".h5", ".hdf5")
    if path.name.endswith(suffixes):
        yield path
        return
    tmpdir = tempfile.mkdtemp(prefix="subnet-model-")
    try:
        link = Path(tmpdir) / ("model.keras" if fmt == "keras" else "model.h5")
        os.symlink(path.resolve(), link)
        yield link
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


@contextlib.contextmanager
def _with_config(path: Path, fmt: str, config: dict) -> Iterator[Path]:
    """Yields a temporary copy of the model file whose architecture is ``config``."""
    tmpdir = tempfile.mkdtemp(prefix="subnet-model-")
    try:
        copy_path = Path(tmpdir) / ("model.h5" if fmt == "h5" else "model.keras")
        raw = json.dumps(config)
        if fmt == "h5":
            import h5py

            shutil.copyfile(path, copy_path)
            with h5py.File(copy_path, "r+") as f:
                f.attrs["model_config"] = raw
        else:
            with zipfile.ZipFile(path) as src, zipfile.ZipFile(copy_path, "w") as dst:
                for item in src.infolist():
                    if item.filename == "config.json":
                        dst.writestr(item, raw.encode())
                        continue
                    with src.open(item) as fin, dst.open(item, "w", force_zip64=True) as fout:
                        shutil.copyfileobj(fin, fout, 2**20)  # streamed: weights may be large
        yield copy_path
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

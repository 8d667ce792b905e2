"""The blog's network, and what a model says about its own dropout.

:func:`seed_cnn` builds the blog's LeNet-style CNN. With trust, :func:`subnet.models.load_model`
rebuilds a ``Lambda`` that only applies dropout (the blog's
``PermaDropout = Lambda(lambda x: K.dropout(x, level=rate))``) as a Keras ``Dropout`` layer that
is always on, so the functions here see an ordinary dropout rate. :class:`AlwaysOnDropout` is
the layer :func:`with_dropout` puts in place of each dropout layer to turn it on.

Keras 2 models built the blog's other way, ``Dropout(0.5)(x, training=True)``, load in Keras 3
with that dropout *baked on*: ``model(x)`` is random on every call, while ``model.predict`` and
``model(x, training=False)`` are deterministic. :func:`dropout_layers` reports which dropout
layers are baked on, and :func:`with_dropout` returns a copy whose dropout is on or off in every
call, whatever the original said. :func:`outputs_probabilities` and :func:`check_examples` read
a classifier's output and check examples against its input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from subnet.data.inmemory import read_pairs
from subnet.errors import InputError, InputTypeError
from subnet.models.architecture import _walk_layer_configs
from subnet.models.loading import _ORIGINAL_NAMES, deserialization_scope
from subnet.runtime import keras
from subnet.validation import check_fraction, check_int

__all__ = [
    "AlwaysOnDropout",
    "check_examples",
    "clone_layers",
    "DropoutInfo",
    "dropout_layers",
    "examples_of",
    "outputs_probabilities",
    "seed_cnn",
    "with_dropout",
]


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
    check_int("num_classes", num_classes, low=2)
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
        self.rate = check_fraction("rate", rate, high_open=True)
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


#: The most bytes of examples a ``tf.data.Dataset`` given for ``x`` may hold (read into memory).
MAX_DATASET_BYTES = 4 << 30


def examples_of(model, x, y) -> tuple:
    """``(x, y)`` as arrays: as given, or, where ``x`` is a ``tf.data.Dataset`` of
    ``(examples, labels)`` and ``y`` is None (as ``Model.fit`` takes it), the dataset read into
    memory, batched or not (up to :data:`MAX_DATASET_BYTES`).

    Raises:
        InputError: If ``y`` is given with a dataset, an element is not an (examples, labels)
            pair of the model's input shape, or the dataset is larger than the limit.
    """
    if not hasattr(x, "as_numpy_iterator") or not hasattr(x, "element_spec"):
        return x, y
    if y is not None:
        raise InputError("`x` is a tf.data.Dataset of (examples, labels): give y=None, as "
                         "Model.fit takes it.")
    x, y = read_pairs(x, "`x`", limit=MAX_DATASET_BYTES,
                      limit_name="subnet.models.network.MAX_DATASET_BYTES",
                      example_rank=len(model.inputs[0].shape) - 1)
    return x, y.reshape(-1)


def check_examples(model, x, y) -> tuple[np.ndarray, np.ndarray, int]:
    """Validates examples and labels against a classifier.

    Args:
        model: A ``keras.Model`` classifier with one input and one output.
        x: Examples of shape (n, *model input shape): floats, or integer token ids for a model
            whose input is an integer tensor (an Embedding model's); or a ``tf.data.Dataset``
            of ``(examples, labels)`` with ``y`` None, as ``Model.fit`` takes it
            (:func:`examples_of`).
        y: True classes, int array of shape (n,), in [0, number of classes).

    Returns:
        ``(x as float32, or as int32/int64 token ids, y as int64, number of classes)``.

    Raises:
        ValueError: If shapes, dtypes, lengths or label values do not fit the model.
    """
    x, y = examples_of(model, x, y)
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
    return check_int(name, value, low=1)

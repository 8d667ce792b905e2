"""The table of layer rules every view of a model looks up (channel groups, cost, extraction,
criteria and the backends): for each kind of Keras layer, how its output channels follow from
its input's (produced anew, passed through, repeated, merged, concatenated, spread over
positions, or refused with the reason), how its weights are cut to the kept channels, how an
extracted copy is resized, and what it costs as a function of the channels it reads and
writes. Teaching subnet a layer type means adding one :class:`Rule` to :data:`TABLE`.

The class tuples below name the layer families the rules are made of; the fast backend's own
lists (``FAST_*``) say which of them its sliced chain program runs."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from subnet.errors import InputError, clean
from subnet.models import AlwaysOnDropout
from subnet.runtime import keras

L = keras.layers

#: Channel-mixing layers: they consume their input's channels and produce new ones.
PRODUCERS = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.SeparableConv1D, L.SeparableConv2D)
#: Layers that act on each channel separately, without weights to slice.
PASS = (
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
    L.GaussianDropout, L.AlphaDropout, L.Activation, L.ReLU, L.LeakyReLU, L.ELU,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
    L.AveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D, L.Identity, L.ActivityRegularization,
    L.RepeatVector, AlwaysOnDropout,
)
#: Per-channel layers whose weights have one entry per channel (sliced on extraction).
PER_CHANNEL_WEIGHTS = (L.BatchNormalization, L.PReLU)
#: Depthwise convolutions: output channel c*m + j reads input channel c only.
DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
LAYOUT = (L.Flatten, L.Reshape)
#: Layers refused because zeroing a channel is not deleting it across them.
MIXING_NORMALISERS = (L.LayerNormalization, L.UnitNormalization, L.GroupNormalization,
                       L.Softmax)
#: Keras operations called on a tensor in a functional model (``x + 3.0``, ``keras.ops.relu(x)``:
#: the hard sigmoid of MobileNetV3's squeeze-and-excite blocks) that act on each element alone.
#: With one tensor argument and numbers for the rest they pass channels through.
ELEMENTWISE_OPS = {
    "keras.src.ops.numpy": {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Power",
                            "Maximum", "Minimum", "Negative", "Absolute", "Abs", "Square",
                            "Sqrt", "Exp", "Log", "Tanh", "Clip", "Sign", "Round", "Floor",
                            "Ceil", "Sin", "Cos"},
    "keras.src.ops.nn": {"Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "Gelu",
                         "Elu", "Selu", "LeakyRelu", "Softplus", "Softsign"},
}
#: Keras operations that combine two tensors element by element: merges.
BINARY_OPS = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum"}
DROPOUT = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D)
#: Layers that are the identity at inference: left out of an extracted subnetwork.
NOISE = DROPOUT + (L.GaussianNoise, L.GaussianDropout, L.AlphaDropout)


def layer_error(layer, reason: str) -> InputError:
    return InputError(f"Layer {clean(layer.name)!r} ({type(layer).__name__}) {reason}")


def layer_weights(layer) -> list:
    """A layer's weights as ``get_weights`` gives them; none for a Keras operation."""
    return layer.get_weights() if isinstance(layer, keras.layers.Layer) else []


def check_layout(layer) -> None:
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format not in (None, "channels_last"):
        raise layer_error(layer, f"uses data_format={data_format!r}; subnet supports "
                                  "channels_last models.")


def softmax_activation(layer) -> bool:
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    return name in ("softmax", "log_softmax")


# ------------------------------------------------------------------------------- the rules

#: A layer's cost as coefficients ``(a, b, c, d)`` of ``a * n_in * n_out + b * n_in + c * n_out
#: + d`` (``n_in``, ``n_out``: the kept channels it reads and writes), for parameters and for
#: FLOPs per example (see :class:`subnet.structure.CostModel`).
Coefficients = tuple[tuple[float, float, float, float], tuple[float, float, float, float]]


class Flow(Protocol):
    """What :func:`subnet.structure.channel_groups` lends a rule while it follows channels:
    channel ids are integer arrays, one id per channel of a tensor."""

    def new(self, width: int, fixed: bool = False) -> np.ndarray:
        """``width`` fresh channel ids (``fixed``: never a unit)."""

    def merge(self, layer, inputs: list[np.ndarray]) -> np.ndarray:
        """Ties channel c of every input together (broadcast inputs of one channel fixed)."""

    def all_fixed(self, ids: np.ndarray) -> bool:
        """Whether none of ``ids`` can be dropped (so far)."""

    def consumer(self) -> None:
        """Marks the layer as reading its input's channels (a mask point before it)."""

    def across(self) -> None:
        """Marks the layer as mixing channels without weights: allowed only where none of its
        channels can be dropped (checked once the whole graph is read)."""


class Rule:
    """What one kind of layer does to channels. The base rule is a per-channel layer without
    weights to cut: its output's channels are its input's."""

    #: Kind of layer, for the backends (each implements the kinds it runs).
    name = "pass"
    #: Whether :func:`channel_groups` knows the layer (an unknown layer may stand only where no
    #: channel can be dropped yet: its output's channels are then fixed too).
    known = True
    #: Channel-mixing: reads its input's channels and writes new ones (its channels are units).
    produces = False
    #: Reads kept input channels by index (producers and depthwise convolutions).
    reads = False
    #: The identity at inference: left out of an extracted subnetwork and skipped by backends.
    noise = False
    #: Only re-arranges values (a mask point is looked for before it).
    layout = False

    def flow(self, layer, inputs: list[np.ndarray], width: int, f: Flow) -> np.ndarray:
        """The channel ids of the layer's output, from its inputs' (``width`` channels).

        Raises:
            InputError: If channels cannot be followed through the layer (with the reason).
        """
        if softmax_activation(layer):
            f.across()
        return inputs[0]

    def cost(self, layer, positions: int) -> Coefficients | None:
        """The layer's cost coefficients (``positions``: its output's positions per channel);
        None where it has no weights and does no multiply-adds worth counting."""
        total = sum(int(np.prod(w.shape)) for w in getattr(layer, "weights", None) or [])
        return ((0, 0, 0, total), (0, 0, 0, 0)) if total else None

    def slice(self, layer, weights: list, rows: np.ndarray | None, out: np.ndarray,
              factor: np.ndarray | None) -> list:
        """The layer's weights (as ``get_weights`` gives them) cut to input channels ``rows``
        (each scaled by ``factor``; only for layers that read by index) and output channels
        ``out``."""
        return weights

    def resized(self, layer, width: int) -> dict:
        """Config changes of the layer's copy that writes ``width`` channels."""
        return {}


class Noise(Rule):
    name = "noise"
    noise = True


class Dropout(Noise):
    """The model's own dropout: its rate is a site's dropout rate."""

    name = "dropout"


class PerChannel(Rule):
    """BatchNormalization and PReLU: one weight entry per channel."""

    def flow(self, layer, inputs, width, f):
        if isinstance(layer, L.PReLU) and layer.shared_axes and \
                (len(layer.input.shape) - 1) in [a % len(layer.input.shape)
                                                 for a in layer.shared_axes]:
            raise layer_error(layer, "shares its slope across channels; subnet needs "
                                      "one slope per channel.")
        return super().flow(layer, inputs, width, f)

    def cost(self, layer, positions):
        total = sum(int(np.prod(w.shape)) for w in layer.weights)
        return (0, 0, total // int(layer.output.shape[-1]), 0), (0, 0, 0, 0)

    def slice(self, layer, weights, rows, out, factor):
        return [w[..., out] for w in weights]


class BatchNorm(PerChannel):
    name = "batch_norm"

    def flow(self, layer, inputs, width, f):
        axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
        rank = len(layer.input.shape)
        if axis not in (-1, [-1], rank - 1, [rank - 1]):
            raise layer_error(layer, f"normalises axis {layer.axis}; subnet supports "
                                      "channels-last normalisation (axis=-1).")
        return super().flow(layer, inputs, width, f)


class PReLU(PerChannel):
    name = "prelu"


class Producer(Rule):
    """Conv and Dense layers: new channels, each a unit unless it reaches the output."""

    name = "conv"
    produces = True
    reads = True

    def flow(self, layer, inputs, width, f):
        if getattr(layer, "groups", 1) != 1:
            raise layer_error(layer, f"is a grouped convolution (groups={layer.groups}); "
                                      "subnet supports ungrouped convolutions.")
        f.consumer()
        if softmax_activation(layer):
            f.across()
        return f.new(width)

    def cost(self, layer, positions):
        window = int(np.prod(layer.kernel_size))
        bias = 1 if layer.use_bias else 0
        return (window, 0, bias, 0), (2 * positions * window, 0, 0, 0)

    def slice(self, layer, weights, rows, out, factor):
        kernel = weights[0][..., rows, :][..., out] * factor[:, None]
        return [kernel] + [w[out] for w in weights[1:]]

    def resized(self, layer, width):
        return {"filters": width}


class Dense(Producer):
    name = "dense"

    def cost(self, layer, positions):
        return (1, 0, 1 if layer.use_bias else 0, 0), (2 * positions, 0, 0, 0)

    def slice(self, layer, weights, rows, out, factor):
        return [weights[0][rows][:, out] * factor[:, None]] + [w[out] for w in weights[1:]]

    def resized(self, layer, width):
        return {"units": width}


class Separable(Producer):
    """A depthwise then a pointwise convolution: its input channels are read by the depthwise
    half (scaled there), its output channels written by the pointwise half."""

    name = "separable"

    def cost(self, layer, positions):
        window, m = int(np.prod(layer.kernel_size)), int(layer.depth_multiplier)
        bias = 1 if layer.use_bias else 0
        return (m, window * m, bias, 0), (2 * positions * m, 2 * positions * window * m, 0, 0)

    def slice(self, layer, weights, rows, out, factor):
        m = int(layer.depth_multiplier)
        depthwise = weights[0][..., rows, :] * factor[:, None]
        expanded = (rows[:, None] * m + np.arange(m)[None, :]).ravel()
        pointwise = weights[1][..., expanded, :][..., out]
        return [depthwise, pointwise] + [w[out] for w in weights[2:]]


class Depthwise(Rule):
    """Output channels c*m .. c*m+m-1 read input channel c only: they follow it."""

    name = "depthwise"
    reads = True

    def flow(self, layer, inputs, width, f):
        return np.repeat(inputs[0], int(layer.depth_multiplier))

    def cost(self, layer, positions):
        window = int(np.prod(layer.kernel_size))
        bias = 1 if layer.use_bias else 0
        return (0, 0, window + bias, 0), (0, 0, 2 * positions * window, 0)

    def slice(self, layer, weights, rows, out, factor):
        return [weights[0][..., rows, :]] + [w[out] for w in weights[1:]]


class Merge(Rule):
    """Add, Multiply, ...: channel c of every input is channel c of the output."""

    name = "merge"

    def flow(self, layer, inputs, width, f):
        return f.merge(layer, inputs)


class Concatenate(Merge):
    name = "concatenate"

    def flow(self, layer, inputs, width, f):
        if layer.axis in (-1, len(layer.output.shape) - 1):
            return np.concatenate(inputs)
        return f.merge(layer, inputs)


class Flatten(Rule):
    """Each channel spread over the positions before it."""

    name = "flatten"
    layout = True

    def flow(self, layer, inputs, width, f):
        return np.tile(inputs[0], width // max(1, len(inputs[0])))


class Reshape(Flatten):
    name = "reshape"

    def flow(self, layer, inputs, width, f):
        if width % len(inputs[0]):
            raise layer_error(layer, f"reshapes {len(inputs[0])} channels into a last axis of "
                                      f"{width}; subnet supports reshapes that keep a channel's "
                                      "values on the last axis (Flatten-like, or the last axis "
                                      "unchanged).")
        return np.tile(inputs[0], width // len(inputs[0]))

    def resized(self, layer, width):
        return {"target_shape": tuple(layer.target_shape[:-1]) + (width,)}


class Rescaling(Rule):
    def flow(self, layer, inputs, width, f):
        if np.ndim(layer.scale) or np.ndim(layer.offset):
            raise layer_error(layer, "rescales channels by different factors; subnet supports "
                                      "a scalar scale and offset.")
        return inputs[0]


class Permute(Rule):
    def flow(self, layer, inputs, width, f):
        if layer.dims[-1] != len(layer.dims):
            raise layer_error(layer, "moves the channel axis; subnet supports channels-last "
                                      "models whose channels stay last.")
        return inputs[0]


class AcrossChannels(Rule):
    """LayerNormalization, a Softmax layer: allowed only where no channel can be dropped."""

    def flow(self, layer, inputs, width, f):
        f.across()
        return inputs[0]


class InputOnly(Rule):
    """Allowed before the first unit only (the model's input side)."""

    known = False

    def __init__(self, reason: str):
        self.reason = reason

    def flow(self, layer, inputs, width, f):
        if not all(f.all_fixed(value) for value in inputs):
            raise layer_error(layer, self.reason)
        return inputs[0]


class Fixed(Rule):
    """New channels that are never units (an Embedding's features)."""

    known = False

    def flow(self, layer, inputs, width, f):
        return f.new(width, fixed=True)


class Refused(Rule):
    """A layer subnet cannot follow channels through (anywhere after the first unit)."""

    known = False

    def __init__(self, reason: str):
        self.reason = reason

    def flow(self, layer, inputs, width, f):
        raise layer_error(layer, self.reason)


class ElementwiseOp(Rule):
    """A Keras operation on one tensor and numbers (``x + 3.0``): channels pass through."""

    known = False


class BinaryOp(Merge):
    """A Keras operation on two tensors element by element (``x * y``): a merge."""

    known = False


#: The table: the first entry whose classes the layer is an instance of gives its rule.
TABLE: tuple[tuple[tuple[type, ...], Rule], ...] = (
    ((L.Embedding,), Fixed()),
    ((L.Dense,), Dense()),
    ((L.SeparableConv1D, L.SeparableConv2D), Separable()),
    ((L.Conv1D, L.Conv2D, L.Conv3D), Producer()),
    (DEPTHWISE, Depthwise()),
    (DROPOUT, Dropout()),
    ((L.GaussianNoise, L.GaussianDropout, L.AlphaDropout), Noise()),
    ((L.BatchNormalization,), BatchNorm()),
    ((L.PReLU,), PReLU()),
    (PASS, Rule()),
    (MERGES, Merge()),
    ((L.Concatenate,), Concatenate()),
    ((L.Flatten,), Flatten()),
    ((L.Reshape,), Reshape()),
    ((L.Rescaling,), Rescaling()),
    ((L.Normalization,), InputOnly("normalises channels that can be dropped; subnet supports "
                                   "Normalization on the model's input only.")),
    (MIXING_NORMALISERS, AcrossChannels()),
    ((L.Permute,), Permute()),
    ((L.Lambda,), Refused("runs code subnet cannot see into, so it cannot tell which channels "
                          "it mixes; rebuild the model with Keras layers in its place.")),
)
_OPAQUE_OP = Refused(
    "is a Keras operation on tensors that subnet cannot see through; subnet supports "
    "element-wise operations of one tensor and numbers (x + 3.0, keras.ops.relu(x)) or of two "
    "tensors (x * y). Rebuild the model with a Keras layer in its place.")
_UNKNOWN = Refused(
    "is not a layer subnet knows how channels flow through (it knows Conv, Dense, separable "
    "and depthwise convolutions, normalisation, activations, pooling, dropout, padding, "
    "merges, Concatenate, Flatten and Reshape); rebuild the model without it.")
_ELEMENTWISE, _BINARY, _INPUT = ElementwiseOp(), BinaryOp(), Fixed()


def rule_for(layer, arguments: list | None = None) -> Rule:
    """The rule of ``layer`` (a Keras layer, or a Keras operation called in a functional model
    with ``arguments``, its positional then keyword arguments).

    Unknown layers get a rule that refuses them with the reason, which applies only where a
    channel could be dropped (see :attr:`Rule.known`)."""
    if isinstance(layer, keras.layers.InputLayer):
        return _INPUT
    if not isinstance(layer, keras.layers.Layer):
        if is_elementwise_op(layer, arguments or []):
            return _ELEMENTWISE
        if is_binary_op(layer, arguments or []):
            return _BINARY
        return _OPAQUE_OP
    for classes, rule in TABLE:
        if isinstance(layer, classes):
            return rule
    return _UNKNOWN


def is_elementwise_op(op, arguments: list) -> bool:
    """Whether ``op`` is a Keras operation (not a layer) that acts on each element of its one
    tensor argument alone, with numbers for its other arguments (see :data:`ELEMENTWISE_OPS`)."""
    if isinstance(op, keras.layers.Layer) or \
            type(op).__name__ not in ELEMENTWISE_OPS.get(type(op).__module__, ()):
        return False
    tensors = [v for v in arguments if isinstance(v, keras.KerasTensor)]
    numbers = [v for v in arguments if isinstance(v, (int, float, np.number))]
    return len(tensors) == 1 and len(tensors) + len(numbers) == len(arguments)


def is_binary_op(op, arguments: list) -> bool:
    """Whether ``op`` is a Keras operation that combines two tensors element by element
    (``x * s``, ``x + y``): a merge, like the Multiply or Add layer."""
    if isinstance(op, keras.layers.Layer) or type(op).__module__ != "keras.src.ops.numpy" or \
            type(op).__name__ not in BINARY_OPS:
        return False
    return len(arguments) == 2 and all(isinstance(v, keras.KerasTensor) for v in arguments)


#: The chains the fast backend runs (:mod:`subnet.engine.fast`, segments from
#: :func:`subnet.engine.chain.analyse_chain`): the channel-mixing layers of its segments...
FAST_MIXING = (L.Conv1D, L.Conv2D, L.Dense)
#: ... the per-channel layers it applies to the kept channels after a site (each maps an
#: all-zero channel to zero, or is the identity at inference) ...
FAST_PER_CHANNEL = (
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.GaussianNoise, L.GaussianDropout,
    L.AlphaDropout, L.BatchNormalization, L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.PReLU,
    L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D, L.ZeroPadding1D, L.ZeroPadding2D, L.Identity,
    L.ActivityRegularization,
)
#: ... and the layers that only re-arrange values between a mask point and the next site.
FAST_LAYOUT = (L.Flatten,)

"""The table of layer rules every part of the structure looks up: which Keras layers produce
channels, pass them through (with or without per-channel weights), merge, concatenate,
re-arrange or mix them across channels (refused), which are noise at inference, and the checks
of the layers whose settings matter (layout, activations). Teaching subnet a layer type starts
here."""

from __future__ import annotations

from subnet._tf import keras
from subnet.errors import InputError, clean
from subnet.models import AlwaysOnDropout

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
#: Layers whose channel flow :func:`channel_groups` knows (any other may stand before the first
#: unit, where no channel can be dropped).
KNOWN = PRODUCERS + DEPTHWISE + PASS + PER_CHANNEL_WEIGHTS + MERGES + LAYOUT + (
    L.Concatenate, L.Rescaling, L.Permute) + MIXING_NORMALISERS
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


def check_pass(layer) -> None:
    if isinstance(layer, L.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
        rank = len(layer.input.shape)
        if axis not in (-1, [-1], rank - 1, [rank - 1]):
            raise layer_error(layer, f"normalises axis {layer.axis}; subnet supports "
                                      "channels-last normalisation (axis=-1).")


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


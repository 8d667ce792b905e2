"""Exact expected pooling after dropout: the deterministic network that dropout training implies.

Turning dropout off at test time relies on the weight-scaling rule: kept values are scaled by
1 / (1 - rate), so a layer's input equals its dropout-on input *in expectation*. That carries
through linear layers (and average pooling), not through a max. With dropout on, a max pooling
after a Dropout returns the largest of its window's kept, scaled-up inputs, and of zero where an
input was dropped (a dropped input is 0 and still takes part in the max); the layers after it
were trained on that, whose expectation is not the plain maximum. :func:`expected_pooling`
returns the model with dropout off and every such max pooling replaced by the exact expectation
of its dropout-on value over the pooling window. Nothing is fitted.

The expectation (:func:`expected_max`, element-wise dropout at rate r): sort the window's n
inputs v_(1) >= ... >= v_(n). The largest kept input is v_(k) with chance (1 - r) r^(k-1); for
k >= 2 a larger input was dropped (a zero in the window), so the pooled value is
max(v_(k), 0) / (1 - r); for k = 1 it is v_(1) / (1 - r), except when v_(1) < 0, where it is 0
unless every input was kept (chance (1 - r)^(n-1) more); all dropped gives 0. Hence

    E[max] = sum_k r^(k-1) max(v_(k), 0) + (1 - r)^(n-1) min(v_(1), 0).

For inputs >= 0 (a ReLU before the pooling) the second term vanishes and this is the
probabilistic weighted pooling of Wu & Gu: "Max-pooling dropout for regularization of
convolutional neural networks" (ICONIP 2015; arXiv:1512.01400) and "Towards dropout training for
convolutional neural networks" (Neural Networks 71, 2015; arXiv:1512.00242), written here with
Keras's inverted scaling and for signed inputs (the blog's convolutions have no activation).

What is exact: each pooled value's expectation over its own window, overlapping windows included
(expectation is per output). What is not: the network after it, which is not linear; the
expected pooling is the deterministic pass through those expectations, as dropout off is for
linear layers.
"""

from __future__ import annotations

import itertools

import numpy as np

from subnet.errors import InputError, InputTypeError, clean
from subnet.runtime import keras
from subnet.validation import check_choice, check_fraction, check_int

__all__ = ["ExpectedMaxPooling", "expected_max", "expected_pooling", "expected_pooling_cost"]

_MAX_POOLINGS = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
                 keras.layers.MaxPooling3D)
_GLOBAL_MAX_POOLINGS = (keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
                        keras.layers.GlobalMaxPooling3D)
_NETWORK_SORT_MAX = 16  # windows up to this size are sorted by a compare-exchange network
_SPATIAL_DROPOUTS = (keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                     keras.layers.SpatialDropout3D)


def _check_rate(rate) -> float:
    return check_fraction("rate", rate, high_open=True)


def expected_max(values, rate: float, *, axis: int = -1) -> np.ndarray:
    """E[max(dropout(values))] along ``axis``, exactly: the pure numerical core.

    Each entry is kept independently with probability 1 - ``rate`` and scaled by
    1 / (1 - ``rate``), or dropped to 0 (Keras's ``Dropout``); the max is over the kept, scaled
    entries and the zeros. Entries equal to -inf are padding: absent from the window, never
    dropped (as a "same"-padded max pooling ignores its padding).

    Args:
        values: Float array; the window runs along ``axis``. Each window needs one finite
            entry.
        rate: The dropout rate, in [0, 1).
        axis: The window's axis.

    Returns:
        Float64 array, ``values``' shape without ``axis``.

    Raises:
        InputError: If ``rate`` is out of range, or a window holds no finite entry or a NaN or
            +inf.
    """
    r = _check_rate(rate)
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    if v.shape[-1] == 0 or np.isnan(v).any() or np.isposinf(v).any():
        raise InputError("`values` must hold finite numbers (or -inf for padding) along a "
                         f"non-empty axis {axis}. Received shape {np.shape(values)}.")
    present = np.isfinite(v)
    if not present.any(axis=-1).all():
        raise InputError("Every window of `values` needs at least one finite entry; one is all "
                         "-inf (padding).")
    ordered = -np.sort(-v, axis=-1)  # descending; padding last
    weights = r ** np.arange(v.shape[-1], dtype=np.float64)
    counts = present.sum(axis=-1)
    return (np.sum(weights * np.maximum(ordered, 0.0), axis=-1) +
            (1.0 - r) ** (counts - 1) * np.minimum(ordered[..., 0], 0.0))


@keras.saving.register_keras_serializable(package="subnet")
class ExpectedMaxPooling(keras.layers.Layer):
    """A max pooling replaced by the exact expectation of its value after element-wise dropout.

    Computes :func:`expected_max` over each pooling window, with the window, strides, padding
    and layout of the max pooling it stands for (1, 2 or 3 spatial dimensions), or over the
    whole spatial extent for a global max pooling (``pool_size=None``). Its input is the
    dropout's input (dropout off).

    Args:
        rate: The rate of the element-wise dropout before the pooling, in [0, 1).
        rank: Spatial dimensions: 1, 2 or 3.
        pool_size: Window per spatial dimension (a tuple of ``rank`` ints), or None for global
            pooling.
        strides: Strides per spatial dimension (defaults to ``pool_size``).
        padding: ``"valid"`` or ``"same"`` (padding takes no part in the max, as in Keras).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        keepdims: Global pooling only: keep the spatial dimensions (as size 1).
        **kwargs: Passed to ``keras.layers.Layer`` (``name``).

    Raises:
        InputError: If a setting is invalid (named).
    """

    def __init__(self, rate: float, rank: int, pool_size=None, strides=None,
                 padding: str = "valid", data_format: str = "channels_last",
                 keepdims: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate(rate)
        self.rank = check_int("rank", rank, low=1, high=3)
        if pool_size is not None:
            pool_size = tuple(int(p) for p in np.broadcast_to(pool_size, (rank,)))
            strides = pool_size if strides is None else \
                tuple(int(s) for s in np.broadcast_to(strides, (rank,)))
            if min(pool_size) < 1 or min(strides) < 1:
                raise InputError("`pool_size` and `strides` must be positive ints. Received: "
                                 f"pool_size={pool_size}, strides={strides}")
        self.pool_size, self.strides = pool_size, strides
        check_choice("padding", padding, ("valid", "same"))
        check_choice("data_format", data_format, ("channels_last", "channels_first"))
        self.padding, self.data_format, self.keepdims = padding, data_format, bool(keepdims)

    @classmethod
    def replacing(cls, layer, rate: float) -> ExpectedMaxPooling:
        """The expected pooling standing for the Keras max pooling ``layer`` (its name kept)."""
        if isinstance(layer, _GLOBAL_MAX_POOLINGS):
            rank = _GLOBAL_MAX_POOLINGS.index(type(layer)) + 1
            return cls(rate, rank, None, data_format=layer.data_format,
                       keepdims=layer.keepdims, name=layer.name)
        rank = _MAX_POOLINGS.index(type(layer)) + 1
        return cls(rate, rank, layer.pool_size, layer.strides, layer.padding,
                   layer.data_format, name=layer.name)

    def _spatial_axes(self) -> list[int]:
        first = 1 if self.data_format == "channels_last" else 2
        return list(range(first, first + self.rank))

    def _geometry(self, input_shape) -> tuple[list[int], list[tuple[int, int]], np.ndarray]:
        """Output size, (before, after) padding per spatial axis, and the count of real
        (unpadded) inputs of every window, (out sizes...)."""
        sizes = [input_shape[a] for a in self._spatial_axes()]
        if any(s is None for s in sizes):
            raise InputError(f"Layer {clean(self.name)!r} needs the spatial dimensions known; "
                             f"received input shape {tuple(input_shape)}.")
        outs, pads = [], []
        for size, p, s in zip(sizes, self.pool_size, self.strides, strict=True):
            if self.padding == "valid":
                out = (size - p) // s + 1
                pads.append((0, 0))
            else:  # as TensorFlow pads: the odd one after
                out = -(-size // s)
                total = max((out - 1) * s + p - size, 0)
                pads.append((total // 2, total - total // 2))
            if out < 1:
                raise InputError(f"Layer {clean(self.name)!r}: a {p}-wide window does not fit "
                                 f"a dimension of size {size}.")
            outs.append(out)
        ones = np.pad(np.ones(sizes), pads)
        counts = sum(ones[self._window_index(offset, outs, range(self.rank))]
                     for offset in itertools.product(*map(range, self.pool_size)))
        return outs, pads, counts

    def _window_index(self, offset, outs, axes) -> tuple:
        index = [slice(None)] * (max(axes) + 1)
        for axis, o, s, out in zip(axes, offset, self.strides, outs, strict=True):
            index[axis] = slice(o, o + s * (out - 1) + 1, s)
        return tuple(index)

    def _expect(self, windows: list, counts):
        """E[max] over ``windows`` (n tensors of one shape: the window's inputs), ``counts``
        real inputs in each window. Up to 16 inputs they are sorted by an odd-even transposition
        network (n(n - 1) / 2 compare-exchanges of whole tensors, what
        :func:`expected_pooling_cost` counts); beyond that by a sort along a stacked axis."""
        ops = keras.ops
        n = len(windows)
        if n <= _NETWORK_SORT_MAX:
            ordered = list(windows)
            for step in range(n):
                for i in range(step % 2, n - 1, 2):
                    a, b = ordered[i], ordered[i + 1]
                    ordered[i], ordered[i + 1] = ops.maximum(a, b), ops.minimum(a, b)
        else:
            stacked = ops.flip(ops.sort(ops.stack(windows, axis=-1), axis=-1), axis=-1)
            ordered = [stacked[..., k] for k in range(n)]
        tail = ops.convert_to_tensor((1.0 - self.rate) ** (np.asarray(counts) - 1.0),
                                     dtype=windows[0].dtype)
        out = tail * ops.minimum(ordered[0], 0.0)
        for k, value in enumerate(ordered):
            if self.rate ** k > 0:  # rate 0: only the largest counts
                out = out + ops.relu(value) * (self.rate ** k)
        return out

    def call(self, inputs):
        ops = keras.ops
        axes = self._spatial_axes()
        if self.pool_size is None:  # global: the window is every position
            first = self.data_format == "channels_first"
            moved = inputs if first else ops.moveaxis(inputs, -1, 1)  # (batch, C, spatial...)
            n = int(np.prod([inputs.shape[a] for a in axes]))
            flat = ops.reshape(moved, (-1, moved.shape[1], n))
            out = self._expect([flat[..., k] for k in range(n)], n)
            if self.keepdims:
                ones = [1] * self.rank
                shape = (-1, out.shape[-1], *ones) if first else (-1, *ones, out.shape[-1])
                out = ops.reshape(out, shape)
            return out
        outs, pads, counts = self._geometry(inputs.shape)
        if self.padding == "same" and any(sum(p) for p in pads):
            width = [(0, 0)] * len(inputs.shape)
            for axis, p in zip(axes, pads, strict=True):
                width[axis] = p
            inputs = ops.pad(inputs, width, constant_values=-np.inf)
        windows = [inputs[self._window_index(offset, outs, axes)]
                   for offset in itertools.product(*map(range, self.pool_size))]
        shape = [1] * (len(inputs.shape))
        for axis, out in zip(axes, outs, strict=True):
            shape[axis] = out
        return self._expect(windows, counts.reshape(shape))

    def compute_output_shape(self, input_shape):
        axes = self._spatial_axes()
        if self.pool_size is None:
            channels = input_shape[1 if self.data_format == "channels_first" else -1]
            if not self.keepdims:
                return (input_shape[0], channels)
            shape = list(input_shape)
            for axis in axes:
                shape[axis] = 1
            return tuple(shape)
        outs, _, _ = self._geometry(input_shape)
        shape = list(input_shape)
        for axis, out in zip(axes, outs, strict=True):
            shape[axis] = out
        return tuple(shape)

    def window_sizes(self, input_shape) -> np.ndarray:
        """Real inputs per output window (per output position, int array)."""
        if self.pool_size is None:
            return np.array([int(np.prod([input_shape[a] for a in self._spatial_axes()]))])
        return self._geometry(input_shape)[2].astype(np.int64)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "rank": self.rank,
                "pool_size": self.pool_size, "strides": self.strides, "padding": self.padding,
                "data_format": self.data_format, "keepdims": self.keepdims}


def _is_dropout(layer) -> bool:
    from subnet.models import AlwaysOnDropout

    return isinstance(layer, (keras.layers.Dropout, AlwaysOnDropout))


def _window_axes(pooling) -> list[int]:
    rank = (_MAX_POOLINGS.index(type(pooling)) if isinstance(pooling, _MAX_POOLINGS) else
            _GLOBAL_MAX_POOLINGS.index(type(pooling))) + 1
    first = 1 if pooling.data_format == "channels_last" else 2
    return list(range(first, first + rank))


def _dropout_over_window(dropout, pooling) -> str:
    """'independent' (each input of a window dropped on its own) or 'shared' (a window kept or
    dropped whole, as spatial dropout does)."""
    if isinstance(dropout, _SPATIAL_DROPOUTS):
        return "shared"
    noise = getattr(dropout, "noise_shape", None)
    if noise is None:
        return "independent"
    axes = _window_axes(pooling)
    shared = [noise[a] == 1 for a in axes]
    if all(shared):
        return "shared"
    if not any(shared):
        return "independent"
    raise InputError(f"Dropout {clean(dropout.name)!r} before {clean(pooling.name)!r} shares "
                     f"its mask over some of the window's axes only (noise_shape={noise}); "
                     "expected_pooling handles element-wise dropout (noise_shape=None) and "
                     "dropout shared over the whole window (spatial dropout).")


def _replacements(model) -> dict[str, float]:
    """{max pooling layer name: the rate of the element-wise dropout that feeds it}."""
    from subnet.structure import graph_calls

    calls, _, _ = graph_calls(model)
    layers = {c.name: c.layer for c in calls}
    out = {}
    for call in calls:
        pooling = call.layer
        if not isinstance(pooling, _MAX_POOLINGS + _GLOBAL_MAX_POOLINGS) or \
                len(call.inputs) != 1 or not _is_dropout(layers[call.inputs[0]]):
            continue
        dropout = layers[call.inputs[0]]
        if _dropout_over_window(dropout, pooling) == "independent" and dropout.rate > 0:
            out[pooling.name] = float(dropout.rate)
    return out


def expected_pooling(model):
    """The model with dropout off and each max pooling after a dropout made exact in expectation.

    Every ``Dropout`` becomes an identity (as :func:`subnet.with_dropout` with ``on=False``), and
    every ``MaxPooling1D/2D/3D`` or ``GlobalMaxPooling1D/2D/3D`` whose input is the output of an
    element-wise ``Dropout`` (``noise_shape=None``) becomes an :class:`ExpectedMaxPooling`: the
    exact expectation of its dropout-on value over each window (see the module's docstring for
    the formula and its prior art, Wu & Gu 2015). Average pooling after a dropout needs nothing:
    its expectation is the dropout-off average, as is a max pooling after a spatial dropout (a
    window kept or dropped whole). Parameter-free; the weights are copied.

    Args:
        model: A functional or Sequential ``keras.Model`` with one input and one output, no
            nested models (as :func:`subnet.channel_groups` reads them).

    Returns:
        A new ``keras.Model``; its replaced layers keep their names (list them with
        :func:`expected_pooling_cost`). With no max pooling after a dropout it computes what
        ``with_dropout(model, on=False)`` computes.

    Raises:
        TypeError: If ``model`` is not a Keras model.
        InputError: If the model's graph cannot be read, or a dropout before a max pooling
            shares its mask over part of the window only.
    """
    from subnet.models import clone_layers

    if not isinstance(model, keras.Model):
        raise InputTypeError(f"Expected a keras.Model for argument `model`. "
                             f"Received: {type(model)!r}")
    replace = _replacements(model)

    def clone(layer):
        if _is_dropout(layer):
            return keras.layers.Identity(name=layer.name)
        if layer.name in replace:
            return ExpectedMaxPooling.replacing(layer, replace[layer.name])
        return layer.__class__.from_config(layer.get_config())

    return clone_layers(model, clone)


def expected_pooling_cost(model) -> dict:
    """What the expected poolings of a model (one made by :func:`expected_pooling`) cost per
    example, beside the Conv/Dense FLOPs that :func:`subnet.extraction.model_cost` counts.

    Counted per output value of a window of n real inputs, each comparison, multiplication,
    addition and max/min with zero as one FLOP: a sort by n(n - 1) / 2 compare-exchanges (a min
    and a max each, n(n - 1); an upper bound, a sorting network for n = 4 needs 5, not 6),
    n max(., 0), n multiplications by r^(k-1), n - 1 additions, and min(v_(1), 0), its
    multiplication and addition: n(n - 1) + 3n + 2 (26 for a 2x2 window). The plain max pooling
    it replaces costs n - 1 comparisons, which ``model_cost`` does not count either.

    Args:
        model: A ``keras.Model``.

    Returns:
        ``{"layers": [{"name", "rate", "window", "outputs", "flops"}], "flops": total,
        "max_pooling_flops": the n - 1 comparisons per output of the poolings replaced}``,
        per example.
    """
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"Expected a keras.Model for argument `model`. "
                             f"Received: {type(model)!r}")
    rows, total, plain = [], 0, 0
    for layer in model.layers:
        if not isinstance(layer, ExpectedMaxPooling):
            continue
        input_shape = tuple(layer.input.shape)
        sizes = layer.window_sizes(input_shape)
        channels = input_shape[1 if layer.data_format == "channels_first" else -1]
        per_position = sizes * (sizes - 1) + 3 * sizes + 2
        flops = int(per_position.sum()) * int(channels)
        outputs = int(sizes.size) * int(channels)
        rows.append({"name": layer.name, "rate": layer.rate,
                     "window": int(sizes.max()), "outputs": outputs, "flops": flops})
        total += flops
        plain += int((sizes - 1).sum()) * int(channels)
    return {"layers": rows, "flops": total, "max_pooling_flops": plain}


"""The graph backend: each mask's subnetwork, with kernels sliced to its kept channels, on any
graph :mod:`subnet.structure` accepts (residual, concatenating, depthwise and separable models).

For each mask the model's layers run in graph order on the kept channels only, as the extracted
subnetwork would (:meth:`subnet.structure.Structure.extract`, without building a Keras model):
producers (Conv, Dense, separable) read kernels with the rows of kept input channels (each scaled
by its unit's factor, 1 / keep with ``rescale``) and the columns of kept output channels;
depthwise kernels, BatchNormalization and PReLU their kept channels' entries; layers without
weights (activations, pooling, merges, concatenation, flattening) run as they are on the smaller
tensors. The slicing follows :meth:`subnet.structure.Structure.slice_weights` exactly.

What makes it fast is what makes the chain backend (:mod:`subnet.engine.fast`) fast:

1. Layers whose output no mask can change (everything before the first unit, the *prefix*) run
   once per batch of examples, and their outputs are kept for the next call with the same
   examples (a record's next chunk of masks).
2. The masks of a call run as one compiled TensorFlow program, traced once with the channel
   counts unknown: a loop over the masks of a block, each computing its kept channels from its
   keep bits inside the graph (one gather per distinct channel layout: a residual stream's
   layers share one) and slicing the kernels by them, so that no Python runs between operations.

The program is a function of one mask's keep bits and factors, so a mask's probabilities do not
depend on which other masks share its block: records shard and resume bit-identically. They
equal the reference backend's (tested to 1e-5).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from typing import TYPE_CHECKING

import numpy as np

from subnet.engine.chain import Chain, SiteScaled
from subnet.errors import InputError
from subnet.runtime import keras, tf
from subnet.structure import layer_weights

if TYPE_CHECKING:
    from subnet.engine.reference import ReferenceBackend

__all__ = ["GraphBackend", "PREFIX_CACHE_BYTES"]

L = keras.layers
_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
#: The most memory the backend keeps the prefix's outputs in between calls (bytes).
PREFIX_CACHE_BYTES = 1 << 30
#: Masks of a block the compiled program may run at the same time (as the chain backend).
PARALLEL_MASKS = 2
#: Floats of the largest intermediate tensor an example batch may hold (sets the batch size).
_BATCH_FLOATS = 8_000_000


class GraphBackend(SiteScaled):
    """Masked evaluation of any supported graph, each mask running its own sliced subnetwork.

    Args:
        chain: The model split at its sites (:func:`subnet.engine.chain.analyse_chain`).
        rescale: Multiply kept units by 1 / keep, as inverted dropout does.
        batch_size: Examples per forward pass; None picks one that keeps the largest
            intermediate tensor under 32 MB (64 to 1024 examples).

    Raises:
        InputError: If a layer is of a kind this backend cannot slice (the reference backend
            runs it), or the Keras backend is not TensorFlow.
    """

    name = "graph"
    fallback_reason: str | None = None

    def __init__(self, chain: Chain, *, rescale: bool = True, batch_size: int | None = None):
        if keras.backend.backend() != "tensorflow":
            raise InputError("The graph backend needs Keras's TensorFlow backend (KERAS_BACKEND="
                             f"tensorflow); this process uses {keras.backend.backend()!r}. Use "
                             "backend='reference'.")
        s = chain.structure
        for call in s.calls:
            _check_supported(call.layer)
        self.chain, self.structure = chain, s
        self._calls = {c.name: c for c in s.calls}
        self._rescale = rescale
        self._reference: ReferenceBackend | None = None
        table = chain.table
        self._n_units = table.n_units
        self.set_site_scale([1.0 / site.keep if rescale else 1.0 for site in table])
        # Calls whose output no mask changes: every channel they read and write is fixed.
        fixed = {s.input_name}
        for call in s.calls:
            if all(name in fixed for name in call.inputs) and (s.units_of[call.name] < 0).all():
                fixed.add(call.name)
        self._fixed = fixed
        masked = [c for c in s.calls if c.name not in fixed]
        # The prefix's outputs that masked calls read, in a fixed order.
        self._frontier = sorted({name for c in masked for name in c.inputs if name in fixed},
                                key=[c.name for c in s.calls].index)
        # Each distinct channel layout (unit per channel, a fixed channel as n_units), once.
        layouts: dict[bytes, int] = {}
        self._layouts: list[np.ndarray] = []

        def layout(units: np.ndarray) -> int:
            units = np.where(units < 0, self._n_units, units).astype(np.int32)
            key = units.tobytes()
            if key not in layouts:
                layouts[key] = len(self._layouts)
                self._layouts.append(units)
            return layouts[key]

        self._ops = []
        for call in masked:
            if isinstance(call.layer, (L.InputLayer,)):
                continue
            reads = layout(s.units_of[call.inputs[0]]) if call.inputs else None
            self._ops.append(_Op(call, layout(s.units_of[call.name]), reads,
                                 [np.asarray(w, np.float32) if np.asarray(w).dtype.kind == "f"
                                  else np.asarray(w) for w in layer_weights(call.layer)]))
        _fold_batch_norms(self._ops, s.calls)
        # A mask is sliceable when every layout keeps a channel: fixed channels always are;
        # the others need one of their units kept.
        unit_layouts = [u for u in self._layouts if (u < self._n_units).all()]
        self._needs = np.zeros((len(unit_layouts), self._n_units), bool)
        for row, units in zip(self._needs, unit_layouts, strict=True):
            row[units] = True
        self._offsets = table.offsets
        x_spec = s.model.inputs[0]
        self._input_dtype = x_spec.dtype
        largest = max(int(np.prod([d or 1 for d in c.node.outputs[0].shape[1:]]))
                      for c in s.calls if c.node is not None and c.node.outputs)
        self.batch_size = int(batch_size) if batch_size else \
            int(np.clip(_BATCH_FLOATS // max(1, largest), 64, 1024))
        self.n_classes = int(s.model.outputs[0].shape[-1])
        self._prefix_cache: tuple | None = None
        frontier_specs = tuple(tf.TensorSpec(self._shape_of(name), tf.float32)
                               for name in self._frontier)
        # Partials (not bound methods), so that TensorFlow counts traces per backend.
        self._prefix_program = tf.function(
            functools.partial(GraphBackend._run_prefix, self),
            input_signature=[tf.TensorSpec((None, *x_spec.shape[1:]), x_spec.dtype)])
        self._program = tf.function(functools.partial(GraphBackend._block, self), input_signature=[
            frontier_specs,
            tf.TensorSpec((None, self._n_units + 1), tf.bool),
            tf.TensorSpec((None, self._n_units + 1), tf.float32)])

    def _shape_of(self, name: str) -> tuple:
        call = self._calls.get(name)
        if call is None or isinstance(call.layer, L.InputLayer):
            return (None, *self.structure.model.inputs[0].shape[1:])
        return (None, *call.node.outputs[0].shape[1:])

    def _apply_unit_scale(self, scales: np.ndarray) -> None:
        # Each unit's factor where it is read; the last entry is a fixed channel's (1).
        self._factors = np.append(np.asarray(scales, np.float32), 1.0).astype(np.float32)
        self._reference = None  # built with the old factors

    def probabilities(self, x: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Class probabilities of every example under every mask.

        Args:
            x: Examples, shape (n_examples, *input_shape).
            masks: Keep bits, bool, shape (n_masks, n_units).

        Returns:
            float32 array of shape (n_masks, n_examples, n_classes).
        """
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 2 or masks.shape[1] != self._n_units:
            raise InputError(f"Expected masks of shape (n_masks, {self._n_units}). Received "
                             f"shape {masks.shape}.")
        out = np.empty((len(masks), len(x), self.n_classes), np.float32)
        bits, factors, sliceable = self._plans(masks)
        rows = np.flatnonzero(sliceable)
        if len(rows):
            for (a, b), prefix in zip(self._batches(len(x)), self._prefix_outputs(x),
                                      strict=True):
                out[rows, a:b] = self._program(prefix, bits[rows], factors[rows]).numpy()
        # A mask that leaves some layer no channel even with every emptied site keeping its
        # first unit at factor 0 (none is known): the masked model evaluates it.
        empty = np.flatnonzero(~sliceable)
        if len(empty):
            if self._reference is None:
                from subnet.engine.reference import ReferenceBackend

                self._reference = ReferenceBackend(self.chain, rescale=self._rescale)
                self._reference.set_unit_scale(self._factors[:-1])
            out[empty] = self._reference.probabilities(x, masks[empty])
        return out

    # ---------------------------------------------------------------------------- internals

    def _plans(self, masks: np.ndarray):
        """Per mask: keep bits and factors over the units and a last, fixed entry (kept, 1),
        and whether the program can slice it.

        Where a mask drops every unit of a site (common on narrow networks: a quarter of the
        masks of a 2-unit site at keep 0.5), the site's first unit is kept with factor 0
        instead: every reader of that channel gets zero rows, so it computes what the masked
        model computes (zeros where the site's channels were) without empty tensors."""
        n = len(masks)
        bits = np.ones((n, self._n_units + 1), bool)
        bits[:, :-1] = masks
        factors = np.broadcast_to(self._factors, bits.shape).copy()
        for i, j in zip(self._offsets[:-1], self._offsets[1:], strict=True):
            if j > i:
                emptied = ~masks[:, i:j].any(axis=1)
                bits[emptied, i], factors[emptied, i] = True, 0.0
        sliceable = (bits[:, :-1].astype(np.int32) @ self._needs.T.astype(np.int32) > 0).all(1)
        return bits, factors, sliceable

    def _batches(self, n: int) -> list[tuple[int, int]]:
        return [(a, min(n, a + self.batch_size)) for a in range(0, n, self.batch_size)]

    def _prefix_outputs(self, x: np.ndarray):
        """The prefix's outputs for each example batch of ``x``, kept (up to
        :data:`PREFIX_CACHE_BYTES`) for the next call with equal examples, recognised by a
        digest of their bytes (an array changed in place is a new input)."""
        x = np.ascontiguousarray(x, dtype=self._input_dtype)
        per_example = sum(int(np.prod(self._shape_of(n)[1:])) for n in self._frontier)
        if len(x) * per_example * 4 > PREFIX_CACHE_BYTES:
            return (self._prefix_program(x[a:b]) for a, b in self._batches(len(x)))
        key = (x.shape, x.dtype.str, hashlib.blake2b(x.data, digest_size=16).digest())
        if self._prefix_cache is None or self._prefix_cache[0] != key:
            self._prefix_cache = None  # free the old outputs before computing the new ones
            self._prefix_cache = key, [self._prefix_program(x[a:b])
                                       for a, b in self._batches(len(x))]
        return self._prefix_cache[1]

    def _run_prefix(self, x):
        s = self.structure
        tensors = {s.input_name: x}
        for call in s.calls:
            if call.name in self._fixed and call.name != s.input_name and \
                    not isinstance(call.layer, L.InputLayer):
                tensors[call.name] = _run_as_is(call, tensors)
        return tuple(tf.cast(tensors[name], tf.float32) for name in self._frontier)

    def _block(self, prefix, bits, factors):
        """Runs :meth:`_masked` for each mask of a block in one call of the compiled program.

        Args:
            prefix: The prefix's outputs for a batch of examples (in ``_frontier`` order).
            bits: Keep bits per mask, with a last, fixed entry (bool, masks x (units + 1)).
            factors: Each unit's factor per mask, likewise (float32).

        Returns:
            The class probabilities, (masks, examples, classes).
        """
        n_masks = tf.shape(bits)[0]

        def one_mask(m, out):
            return m + 1, out.write(m, self._masked(prefix, bits[m], factors[m]))

        _, out = tf.while_loop(lambda m, _: m < n_masks, one_mask,
                               (0, tf.TensorArray(tf.float32, size=n_masks)),
                               parallel_iterations=PARALLEL_MASKS)
        return out.stack()

    def _masked(self, prefix, bits, factors):
        """One mask's subnetwork on a batch of examples (traced once, channel counts unknown)."""
        kept = [tf.reshape(tf.cast(tf.where(tf.gather(bits, units)), tf.int32), [-1])
                for units in self._layouts]
        tensors = dict(zip(self._frontier, prefix, strict=True))
        for op in self._ops:
            tensors[op.name] = op.run(tensors, kept, factors, self._layouts)
        result = tensors[self.structure.output_name]
        if not self.structure.probabilities:
            result = tf.nn.softmax(result, axis=-1)
        return result


class _Op:
    """One masked call, ready to run on its kept channels inside the compiled program: its
    weights are constants there, sliced by index tensors whose lengths vary from mask to
    mask (as :meth:`subnet.structure.Structure.slice_weights` slices them)."""

    def __init__(self, call, writes: int, reads: int | None, weights: list[np.ndarray]):
        self.call, self.name, self.layer = call, call.name, call.layer
        self.writes, self.reads, self.weights = writes, reads, weights
        #: Whether the last weight is a bias (the layer's own, or a folded BatchNormalization's).
        self.has_bias = bool(getattr(call.layer, "use_bias", False))
        #: True for a BatchNormalization folded into the producer before it.
        self.folded = False

    def run(self, tensors, kept, factors, layouts):
        layer = self.layer
        x = tensors[self.call.inputs[0]] if self.call.inputs else None
        rule = self.call.rule
        if rule.noise or self.folded:
            return x
        out = kept[self.writes]
        if rule.reads:
            rows = kept[self.reads]
            factor = tf.gather(factors, tf.gather(layouts[self.reads], rows))
            bias = self.weights[-1] if self.has_bias else None
            if rule.name == "depthwise":
                return _depthwise(layer, x, self.weights, rows, out, bias)
            return _producer(rule.name, layer, x, self.weights, rows, out, factor, bias)
        if rule.name == "batch_norm":
            return _batch_norm(layer, x, [tf.gather(w, out, axis=-1) for w in self.weights])
        if rule.name == "prelu":
            alpha = tf.gather(self.weights[0], out, axis=-1)
            return tf.nn.relu(x) - alpha * tf.nn.relu(tf.negative(x))
        if rule.name == "flatten":
            return tf.reshape(x, (tf.shape(x)[0], -1))
        if rule.name == "reshape":
            return tf.reshape(x, tf.concat([[tf.shape(x)[0]], list(layer.target_shape[:-1]),
                                            [tf.size(out)]], axis=0))
        return _run_as_is(self.call, tensors)


def _fold_batch_norms(ops: list[_Op], calls) -> None:
    """Folds each BatchNormalization that alone reads a Conv/Dense without activation into
    that layer's kernel and bias (``k * g / sqrt(v + eps)``, ``(b - m) * g / sqrt(v + eps) +
    beta``), so that it costs nothing per mask: the same function, to float32 rounding (the
    kernel's columns and bias are scaled once, not every output). Per output channel, so it
    commutes with slicing."""
    readers: dict[str, int] = {}
    for call in calls:
        for name in call.inputs:
            readers[name] = readers.get(name, 0) + 1
    by_name = {op.name: op for op in ops}
    for op in ops:
        layer = op.layer
        if op.call.rule.name != "batch_norm" or len(op.call.inputs) != 1:
            continue
        source = by_name.get(op.call.inputs[0])
        if source is None or readers.get(source.name) != 1 or source.folded or \
                not source.call.rule.reads or \
                source.layer.activation not in (None, keras.activations.linear) or \
                _axis(layer) not in (-1, len(op.call.node.outputs[0].shape) - 1):
            continue
        values = iter(op.weights)
        gamma = next(values) if layer.scale else 1.0
        beta = next(values) if layer.center else 0.0
        mean, variance = next(values), next(values)
        inv = (gamma / np.sqrt(variance + layer.epsilon)).astype(np.float32)
        kernel_at = 1 if source.call.rule.name == "separable" else 0
        weights = list(source.weights)
        kernel = weights[kernel_at]
        # A depthwise kernel is (..., in, multiplier): output channel c * m + j at [..., c, j].
        weights[kernel_at] = (kernel * inv.reshape(kernel.shape[-2:]) if
                              source.call.rule.name == "depthwise" else kernel * inv
                              ).astype(np.float32)
        bias = weights[-1] if source.layer.use_bias else 0.0
        shift = ((bias - mean) * inv + beta).astype(np.float32)
        source.weights = weights[:-1] + [shift] if source.layer.use_bias else weights + [shift]
        source.has_bias = True
        op.folded = True


def _axis(layer) -> int:
    axis = layer.axis
    return int(axis if isinstance(axis, int) else axis[0]) if not isinstance(axis, int) and \
        len(axis) == 1 or isinstance(axis, int) else -2


def _check_supported(layer) -> None:
    if isinstance(layer, _CONV) and getattr(layer, "groups", 1) != 1:
        raise InputError(f"Layer {layer.name!r} ({type(layer).__name__}) is a grouped "
                         "convolution, which the graph backend does not slice; use "
                         "backend='reference'.")


def _finish(layer, y, bias, out):
    if bias is not None:
        y = tf.nn.bias_add(y, tf.gather(bias, out))
    return layer.activation(y) if layer.activation is not None else y


def _producer(kind, layer, x, weights, rows, out, factor, bias):
    """A Conv/Dense/separable layer (``kind``, its rule's name) on kept input ``rows`` (each
    scaled by ``factor``), computing output channels ``out`` (plus ``bias``, all channels', if
    given)."""
    if kind == "dense":
        kernel = tf.gather(tf.gather(weights[0], rows, axis=0), out, axis=1) * factor[:, None]
        return _finish(layer, tf.matmul(x, kernel), bias, out)
    padding = layer.padding
    if padding == "causal":  # Conv1D: pad the past, as the layer does
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        x = tf.pad(x, [[0, 0], [left, 0], [0, 0]])
        padding = "valid"
    if kind == "separable":
        m = int(layer.depth_multiplier)
        depthwise = tf.gather(weights[0], rows, axis=-2) * factor[:, None]
        expanded = tf.reshape(rows[:, None] * m + tf.range(m)[None, :], [-1])
        pointwise = tf.gather(tf.gather(weights[1], expanded, axis=-2), out, axis=-1)
        one_d = isinstance(layer, L.SeparableConv1D)
        if one_d:  # as Keras does: a 2D convolution over a height of 1
            x, depthwise, pointwise = x[:, None], depthwise[None], pointwise[None]
        strides = [1] + ([1] if one_d else []) + list(layer.strides) + [1]
        dilations = ([1] if one_d else []) + list(layer.dilation_rate)
        y = tf.nn.depthwise_conv2d(x, depthwise, strides=strides, padding=padding.upper(),
                                   dilations=dilations)
        y = tf.nn.conv2d(y, pointwise, strides=1, padding="VALID")
        if one_d:
            y = y[:, 0]
        return _finish(layer, y, bias, out)
    kernel = tf.gather(tf.gather(weights[0], rows, axis=-2), out, axis=-1) * factor[:, None]
    y = tf.nn.convolution(x, kernel, strides=list(layer.strides), padding=padding.upper(),
                          dilations=list(layer.dilation_rate))
    return _finish(layer, y, bias, out)


def _depthwise(layer, x, weights, rows, out, bias):
    kernel = tf.gather(weights[0], rows, axis=-2)
    one_d = isinstance(layer, L.DepthwiseConv1D)
    if one_d:
        x, kernel = x[:, None], kernel[None]
    strides = [1] + ([1] if one_d else []) + list(layer.strides) + [1]
    dilations = ([1] if one_d else []) + list(layer.dilation_rate)
    y = tf.nn.depthwise_conv2d(x, kernel, strides=strides, padding=layer.padding.upper(),
                               dilations=dilations)
    if one_d:
        y = y[:, 0]
    return _finish(layer, y, bias, out)


def _batch_norm(layer, x, weights):
    values = iter(weights)
    gamma = next(values) if layer.scale else None
    beta = next(values) if layer.center else None
    mean, variance = next(values), next(values)
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, layer.epsilon)


def _run_as_is(call, tensors):
    """Calls the layer itself (no weights, or none that a mask changes) on the tensors."""
    feed = iter([tensors[name] for name in call.inputs])
    mapping = {id(t): next(feed) for t in call.node.arguments.keras_tensors}
    args, kwargs = call.node.arguments.fill_in(mapping)
    if "training" in inspect.signature(call.layer.call).parameters:
        kwargs = {**kwargs, "training": False}
    return call.layer(*args, **kwargs)

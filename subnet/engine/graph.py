"""The graph backend: each mask's subnetwork, with kernels sliced to its kept channels, on any
graph :mod:`subnet.structure` accepts (residual, concatenating, depthwise and separable models).

For each mask the model's layers run in graph order on the kept channels only, as the extracted
subnetwork would (:meth:`subnet.structure.Structure.extract`, without building a Keras model):
producers (Conv, Dense, separable) get kernels with the rows of kept input channels (each scaled
by its unit's factor, 1 / keep with ``rescale``) and the columns of kept output channels;
depthwise kernels, BatchNormalization and PReLU their kept channels' entries; layers without
weights (activations, pooling, merges, concatenation, flattening) run as they are on the smaller
tensors. Layers whose output no mask can change (before the first unit) run once per batch of
examples. The cost of a mask follows its subnetwork's size; the probabilities equal the
reference backend's (tested to 1e-5).
"""

from __future__ import annotations

import inspect

import numpy as np

from subnet._tf import keras
from subnet.engine.chain import Chain, SiteScaled
from subnet.errors import InputError
from subnet.structure import DEPTHWISE, NOISE, PRODUCERS, layer_weights

__all__ = ["GraphBackend"]

L = keras.layers
_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)


class GraphBackend(SiteScaled):
    """Masked evaluation of any supported graph, each mask running its own sliced subnetwork.

    Args:
        chain: The model split at its sites (:func:`subnet.engine.chain.analyse_chain`).
        rescale: Multiply kept units by 1 / keep, as inverted dropout does.
        batch_size: Examples per forward pass.

    Raises:
        InputError: If a layer is of a kind this backend cannot slice (the reference backend
            runs it).
    """

    name = "graph"
    fallback_reason: str | None = None

    def __init__(self, chain: Chain, *, rescale: bool = True, batch_size: int = 512):
        s = chain.structure
        for call in s.calls:
            _check_supported(call.layer)
        self.chain, self.structure = chain, s
        self._rescale, self._reference = rescale, None
        self.batch_size = int(batch_size)
        table = chain.table
        scales = [1.0 / site.keep if rescale else 1.0 for site in table]
        # Each unit's factor where it is read; the last entry is a fixed channel's (1).
        self._factors = np.append(np.repeat(scales, table.units), 1.0).astype(np.float32)
        self._weights = {c.name: layer_weights(c.layer) for c in s.calls}
        # Calls whose output no mask changes: every channel they read and write is fixed.
        fixed = {s.input_name}
        for call in s.calls:
            if all(name in fixed for name in call.inputs) and (s.units_of[call.name] < 0).all():
                fixed.add(call.name)
        self._fixed = fixed

    def _apply_site_scale(self, scales: np.ndarray) -> None:
        self._factors = np.append(np.repeat(scales, self.chain.table.units),
                                  1.0).astype(np.float32)
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
        n_units = self.chain.table.n_units
        if masks.ndim != 2 or masks.shape[1] != n_units:
            raise InputError(f"Expected masks of shape (n_masks, {n_units}). Received shape "
                             f"{masks.shape}.")
        n_classes = int(self.chain.model.outputs[0].shape[-1])
        out = np.empty((len(masks), len(x), n_classes), np.float32)
        plans = [self._plan_or_zeros(bits) for bits in masks]
        for start in range(0, len(x), self.batch_size):
            stop = min(len(x), start + self.batch_size)
            prefix = self._prefix(x[start:stop])
            for i, plan in enumerate(plans):
                if plan is not None:
                    out[i, start:stop] = self._forward(prefix, plan)
        # A mask :meth:`_plan_or_zeros` cannot slice (none is known): the masked model
        # evaluates it. Without XLA: compiling it would cost more than a few rows.
        empty = [i for i, plan in enumerate(plans) if plan is None]
        if empty:
            if self._reference is None:
                from subnet.engine.reference import ReferenceBackend

                self._reference = ReferenceBackend(self.chain, rescale=self._rescale)
            out[empty] = self._reference.probabilities(x, masks[empty])
        return out

    # ---------------------------------------------------------------------------- internals

    def _plan_or_zeros(self, bits: np.ndarray) -> dict | None:
        """The mask's plan; where it drops every unit of a site (common on narrow networks:
        a quarter of the masks of a 2-unit site at keep 0.5), the plan that keeps each such
        site's first unit with factor 0 instead. Every reader of that channel gets zero rows,
        so it computes what the masked model computes (zeros where the site's channels were)
        without empty tensors. None if even that leaves a layer no channel."""
        offsets = self.chain.table.offsets
        empty = [i for i, j in zip(offsets[:-1], offsets[1:], strict=True)
                 if j > i and not bits[i:j].any()]
        factors = self._factors
        if empty:
            bits, factors = bits.copy(), factors.copy()
            bits[empty], factors[empty] = True, 0.0
        return self._plan(bits, factors)

    def _plan(self, bits: np.ndarray, factors: np.ndarray) -> dict | None:
        """Each call's kept output channels and, for layers with weights, its sliced weights
        (input rows scaled by ``factors``); None if the mask leaves some layer no channel to
        produce or read."""
        plan = {}
        for call in self.structure.calls:
            name, layer = call.name, call.layer
            if name in self._fixed or isinstance(layer, (L.InputLayer,) + NOISE):
                continue
            out, weights = self.structure.slice_weights(name, self._weights[name], bits,
                                                        factors)
            if len(out) == 0:
                return None
            plan[name] = (out, [keras.ops.convert_to_tensor(w) for w in weights])
        return plan

    def _prefix(self, x: np.ndarray) -> dict:
        """The tensors no mask changes, for one batch of examples."""
        s = self.structure
        tensors = {s.input_name: keras.ops.convert_to_tensor(x)}
        for call in s.calls:
            if call.name in self._fixed and call.name != s.input_name and \
                    not isinstance(call.layer, L.InputLayer):
                tensors[call.name] = _run_as_is(call, tensors)
        return tensors

    def _forward(self, prefix: dict, plan: dict) -> np.ndarray:
        s = self.structure
        tensors = dict(prefix)
        for call in s.calls:
            name, layer = call.name, call.layer
            if name in tensors or isinstance(layer, L.InputLayer):
                continue
            if isinstance(layer, NOISE):
                tensors[name] = tensors[call.inputs[0]]
                continue
            out, weights = plan[name]
            x = tensors[call.inputs[0]] if call.inputs else None
            if isinstance(layer, PRODUCERS):
                tensors[name] = _producer(layer, x, weights)
            elif isinstance(layer, DEPTHWISE):
                y = keras.ops.depthwise_conv(x, weights[0], strides=layer.strides,
                                             padding=layer.padding,
                                             data_format=layer.data_format,
                                             dilation_rate=layer.dilation_rate)
                tensors[name] = _finish(layer, y, weights[1] if layer.use_bias else None)
            elif isinstance(layer, L.BatchNormalization):
                tensors[name] = _batch_norm(layer, x, weights)
            elif isinstance(layer, L.PReLU):
                alpha = weights[0]
                tensors[name] = keras.ops.relu(x) - alpha * keras.ops.relu(-x)
            elif isinstance(layer, L.Reshape):
                tensors[name] = keras.ops.reshape(
                    x, (-1,) + tuple(layer.target_shape[:-1]) + (len(out),))
            else:
                tensors[name] = _run_as_is(call, tensors)
        result = tensors[s.output_name]
        if not s.probabilities:
            result = keras.ops.softmax(result, axis=-1)
        return keras.ops.convert_to_numpy(result)


def _check_supported(layer) -> None:
    if isinstance(layer, _CONV) and getattr(layer, "groups", 1) != 1:
        raise InputError(f"Layer {layer.name!r} ({type(layer).__name__}) is a grouped "
                         "convolution, which the graph backend does not slice; use "
                         "backend='reference'.")


def _producer(layer, x, weights):
    if isinstance(layer, L.Dense):
        y = keras.ops.matmul(x, weights[0])
        return _finish(layer, y, weights[1] if layer.use_bias else None)
    padding = layer.padding
    if padding == "causal":  # Conv1D: pad the past, as the layer does
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        x = keras.ops.pad(x, [[0, 0], [left, 0], [0, 0]])
        padding = "valid"
    if isinstance(layer, _SEPARABLE):
        y = keras.ops.separable_conv(x, weights[0], weights[1], strides=layer.strides,
                                     padding=padding, data_format=layer.data_format,
                                     dilation_rate=layer.dilation_rate)
        return _finish(layer, y, weights[2] if layer.use_bias else None)
    y = keras.ops.conv(x, weights[0], strides=layer.strides, padding=padding,
                       data_format=layer.data_format, dilation_rate=layer.dilation_rate)
    return _finish(layer, y, weights[1] if layer.use_bias else None)


def _finish(layer, y, bias):
    if bias is not None:
        y = y + bias
    return layer.activation(y) if layer.activation is not None else y


def _batch_norm(layer, x, weights):
    values = iter(weights)
    gamma = next(values) if layer.scale else None
    beta = next(values) if layer.center else None
    mean, variance = next(values), next(values)
    return keras.ops.batch_normalization(x, mean, variance, axis=-1, offset=beta, scale=gamma,
                                         epsilon=layer.epsilon)


def _run_as_is(call, tensors):
    """Calls the layer itself (no weights, or none that a mask changes) on the tensors."""
    feed = iter([tensors[name] for name in call.inputs])
    mapping = {id(t): next(feed) for t in call.node.arguments.keras_tensors}
    args, kwargs = call.node.arguments.fill_in(mapping)
    if "training" in inspect.signature(call.layer.call).parameters:
        kwargs = {**kwargs, "training": False}
    return call.layer(*args, **kwargs)

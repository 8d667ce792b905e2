"""The fast backend: masked evaluation whose cost follows the subnetwork, not the model.

Three facts make it cheaper than running the Keras model once per mask (DESIGN.md, "the engine"):

1. Everything up to the first site's mask point (the *prefix*) is the same for every mask; it is
   computed once per batch of examples, and kept for the next call with the same examples (a
   record's next chunk of masks).
2. A channel mask commutes with per-channel layers (pooling, BatchNormalization, activations),
   and dropping the input channels of a Conv/Dense layer is the same as slicing its kernel.
3. So each mask runs a physically smaller network: only kept channels are gathered and only kept
   kernel slices are multiplied; at keep 0.5 on both sides a layer costs about a quarter.

The masks of a call run as one compiled TensorFlow program (:func:`tf.function`, traced once
with the channel counts unknown): a loop over the masks of the block, each slicing the kernels
by its kept channels' indices inside the graph, so that no Python runs between operations,
TensorFlow fuses products with their biases and activations, and on a GPU the weights stay on the
device and one call carries a whole block. Where a Conv/Dense with a ReLU or no activation is
followed by max pooling, its bias and activation run after the pooling, on a quarter of the
values (exactly: see :func:`_defer_past_max_pooling`). On the blog's network (2 cores) this
program and the kept prefix record 1.5x as fast as running the same operations one by one from
Python (README, "Speed").

(A fourth idea, precomputing each input channel's share of the first convolution after the prefix
by a depthwise convolution and mixing the shares per mask with one matrix product, was measured
here and lost: on 2 CPU cores TensorFlow's depthwise convolution with a channel multiplier of 50
took 5x the full convolution, and the mixing product is memory-bound, so the direct convolution
of the kept channels was as fast per mask.)

Supported between sites: Conv1D/Conv2D/Dense, BatchNormalization, activations, dropout, pooling,
padding and Flatten, channels-last (what :func:`subnet.engine.chain.analyse_chain` accepts); after
the classifier, a softmax activation or ``Softmax`` layer over the classes.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from subnet.engine.chain import Chain, SiteScaled, layer_flops
from subnet.errors import InputError
from subnet.runtime import keras, tf

__all__ = ["FastBackend", "PREFIX_CACHE_BYTES"]

#: The most memory the fast backend keeps the prefix's outputs in between calls (bytes).
PREFIX_CACHE_BYTES = 1 << 30
#: Masks of a block the compiled program may run at the same time. Measured on the blog's
#: network (2 cores, 64 masks x 10,000 examples): 1 and 2 ran 12.4-13.0 us per evaluation and
#: 10 ran 14.6; in a later sweep 2, 4 and 8 (with 2,048 or 4,096 examples per batch, oneDNN on
#: or off) were within the run-to-run noise of each other (7.8-8.5 us on, 11.3-12.1 off). Each
#: running mask holds its own intermediate tensors.
PARALLEL_MASKS = 2

_IDENTITY = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
             keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout,
             keras.layers.Identity, keras.layers.ActivityRegularization)
_STATELESS = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU,
              keras.layers.ELU, keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
              keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
              keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D)

_MAX_POOLING = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
                keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D)
# Activations that are non-decreasing functions applied element by element.
_MONOTONE = (keras.activations.linear, keras.activations.relu)


def _np(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


class _Op:
    """One layer of a segment, ready to run on a subset of its channels inside the compiled
    per-mask program (:meth:`FastBackend._masked`): its weights are constants there, sliced to
    the kept channels by index tensors whose lengths vary from mask to mask."""

    def __init__(self, layer):
        self.layer = layer
        self.kind = "identity"
        #: Whether this Conv/Dense's bias and activation run after the max pooling that follows
        #: it (set by :func:`_defer_past_max_pooling`).
        self.deferred = False
        if isinstance(layer, keras.layers.Flatten):
            self.kind = "flatten"
        elif isinstance(layer, keras.layers.Dense):
            self.kind = "dense"
            self.kernel = _np(layer.kernel)
            self.bias = _np(layer.bias) if layer.use_bias else None
            self.activation = layer.activation
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
            self.kind = "conv"
            self.kernel = _np(layer.kernel)
            self.bias = _np(layer.bias) if layer.use_bias else None
            self.activation = layer.activation
            self.rank = 2 if isinstance(layer, keras.layers.Conv2D) else 1
            self.strides = tuple(layer.strides)
            self.dilation = tuple(layer.dilation_rate)
            self.padding = layer.padding.upper()
            if self.padding == "CAUSAL":
                raise InputError(f"Layer {layer.name!r} uses causal padding, which the fast "
                                 "backend does not support; use backend='reference'.")
        elif isinstance(layer, keras.layers.BatchNormalization):
            self.kind = "affine"
            gamma = _np(layer.gamma) if layer.scale else 1.0
            beta = _np(layer.beta) if layer.center else 0.0
            inv = gamma / np.sqrt(_np(layer.moving_variance) + layer.epsilon)
            self.scale = np.broadcast_to(inv, layer.moving_mean.shape).astype(np.float32)
            self.shift = np.broadcast_to(beta - _np(layer.moving_mean) * inv,
                                         layer.moving_mean.shape).astype(np.float32)
        elif isinstance(layer, keras.layers.Softmax):
            # analyse_chain allows a Softmax layer only after the classifier, where every class
            # is computed: it runs as it is, over the last axis.
            last = len(layer.output.shape) - 1
            axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
            if axis not in (-1, (-1,), last, (last,)):
                raise InputError(f"Softmax layer {layer.name!r} normalises axis {layer.axis}; "
                                 "the fast backend supports the class axis (-1).")
            self.kind = "stateless"
        elif isinstance(layer, keras.layers.PReLU):
            self.kind = "prelu"
            self.alpha = _np(layer.alpha)
        elif isinstance(layer, _MAX_POOLING):
            self.kind = "max_pooling"
        elif isinstance(layer, _STATELESS):
            self.kind = "stateless"
        elif not isinstance(layer, _IDENTITY):
            raise InputError(f"The fast backend cannot run layer {layer.name!r} "
                             f"({type(layer).__name__}); use backend='reference'.")

    def run(self, h, kept_in, kept_out, layout):
        """Runs the layer on kept channels (traced into the compiled program).

        Args:
            h: The kept channels of the layer's input (channels last).
            kept_in: Indices of the kept input channels (int32 tensor).
            kept_out: Indices of the output channels to compute (None for all).
            layout: After a Flatten, the number of spatial positions flattened, else None.
        """
        if self.kind == "conv":
            kernel = tf.gather(self.kernel, kept_in, axis=self.rank)
            if kept_out is not None:
                kernel = tf.gather(kernel, kept_out, axis=self.rank + 1)
            h = tf.nn.convolution(h, kernel, strides=self.strides, padding=self.padding,
                                  dilations=self.dilation)
            return h if self.deferred else self.finish(h, kept_out)
        if self.kind == "dense":
            rows = kept_in if layout is None else tf.reshape(
                tf.range(layout)[:, None] * (self.kernel.shape[0] // layout) + kept_in[None, :],
                [-1])
            kernel = tf.gather(self.kernel, rows, axis=0)
            if kept_out is not None:
                kernel = tf.gather(kernel, kept_out, axis=1)
            h = tf.matmul(h, kernel)
            return h if self.deferred else self.finish(h, kept_out)
        if self.kind == "affine":
            return h * tf.gather(self.scale, kept_in, axis=-1) + \
                tf.gather(self.shift, kept_in, axis=-1)
        if self.kind == "prelu":
            alpha = tf.gather(self.alpha, kept_in, axis=-1)
            return tf.maximum(h, 0.0) + alpha * tf.minimum(h, 0.0)
        if self.kind in ("stateless", "max_pooling"):
            return self.layer(h)
        return h

    def finish(self, h, kept_out):
        """The layer's bias and activation on its (kept) outputs."""
        if self.bias is not None:
            h = tf.nn.bias_add(h, self.bias if kept_out is None
                               else tf.gather(self.bias, kept_out))
        return self.activation(h)


def _defer_past_max_pooling(segment: list[_Op]) -> None:
    """Marks each Conv/Dense whose bias and activation can run after the max pooling that
    follows it (with only identity layers between): the pooling then reads the bare product
    and the bias and activation touch a quarter of the values (2x2 pooling). This is exact,
    not an approximation: adding a per-channel constant and rounding, and ReLU, are
    non-decreasing, so they commute with taking a maximum, bit for bit."""
    for i, op in enumerate(segment):
        if op.kind not in ("conv", "dense") or op.activation not in _MONOTONE:
            continue
        following = next((o for o in segment[i + 1:] if o.kind != "identity"), None)
        op.deferred = following is not None and following.kind == "max_pooling"


class FastBackend(SiteScaled):
    """Masked evaluation that runs only each mask's subnetwork (see the module docstring).

    Args:
        chain: The model split at its sites (:func:`subnet.engine.chain.analyse_chain`).
        rescale: Multiply kept units by 1 / keep, as inverted dropout does.
        example_batch: Examples per prefix computation; None picks one that keeps the prefix
            output under 100 MB, at most 2048.

    Raises:
        ValueError: If the Keras backend is not TensorFlow or a layer is unsupported.
    """

    name = "fast"
    #: Why :func:`subnet.engine.make_backend` chose this backend over the one asked for (None:
    #: it was the one asked for, or the best for ``"auto"``).
    fallback_reason: str | None = None

    def __init__(self, chain: Chain, *, rescale: bool = True, example_batch: int | None = None):
        if keras.backend.backend() != "tensorflow":
            raise InputError("The fast backend needs Keras's TensorFlow backend (KERAS_BACKEND="
                             f"tensorflow); this process uses {keras.backend.backend()!r}. Use "
                             "backend='reference'.")
        if chain.segments is None or chain.prefix_output is None:  # not a chain
            raise InputError(f"The fast backend runs chains of layers, and model "
                             f"{chain.model.name!r} is not one: {chain.not_chain}; use "
                             "backend='reference'.")
        self._prefix_output = chain.prefix_output
        self.chain = chain
        self.table = chain.table
        self.rescale = rescale
        self._prefix = chain.prefix_model()
        self._segments = [[_Op(layer) for layer in segment] for segment in chain.segments]
        for segment in self._segments:
            _defer_past_max_pooling(segment)
        self._unit_scale = np.repeat(np.array([1.0 / s.keep if rescale else 1.0
                                               for s in self.table], np.float32),
                                     self.table.units)
        self._offsets = self.table.offsets
        prefix_shape = tuple(int(d) for d in self._prefix_output.output.shape[1:])
        self._prefix_channels = prefix_shape[-1]
        if example_batch is None:
            # Measured on the blog's model (2 cores): 2048 examples per batch runs at 94 % of
            # the speed of 4096 with 350 MB less peak memory.
            example_batch = int(np.clip(25_000_000 // max(1, int(np.prod(prefix_shape))),
                                        64, 2048))
        self.example_batch = int(example_batch)
        self.n_classes = int(chain.model.outputs[0].shape[-1])
        self._prefix_shape = prefix_shape
        self._prefix_cache: tuple | None = None
        # One compiled program per backend, traced once: a partial (not the bound method) so that
        # TensorFlow counts its traces per backend. Keyed by the method's code, the backends of
        # a loop over models (iterative pruning, one record per step) would add up to its
        # "excessive retracing" warning, though none of them retraces.
        self._program = tf.function(functools.partial(FastBackend._block, self), input_signature=[
            tf.TensorSpec((None, *prefix_shape), tf.float32),
            tuple(tf.TensorSpec((None,), tf.int32) for _ in self.table),
            tuple(tf.TensorSpec((None,), tf.int32) for _ in self.table),
            tuple(tf.TensorSpec((None,), tf.float32) for _ in self.table)])

    def _apply_unit_scale(self, scales: np.ndarray) -> None:
        self._unit_scale = np.asarray(scales, np.float32)

    def probabilities(self, x: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Class probabilities of every example under every mask.

        Args:
            x: Images, float32, shape (n_examples, *input_shape).
            masks: Keep bits, bool, shape (n_masks, n_units).

        Returns:
            float32 array of shape (n_masks, n_examples, n_classes).
        """
        masks = np.asarray(masks, dtype=bool)
        out = np.empty((len(masks), len(x), self.n_classes), np.float32)
        if not len(masks):
            return out
        kept = [self._kept(mask) for mask in masks]
        units = tuple(np.concatenate([k[site] for k, _ in kept])
                      for site in range(len(self.table)))
        splits = tuple(np.cumsum([0] + [len(k[site]) for k, _ in kept], dtype=np.int32)
                       for site in range(len(self.table)))
        factors = tuple(np.concatenate([f[site] for _, f in kept])
                        for site in range(len(self.table)))
        for (a, b), h0 in zip(self._batches(len(x)), self._prefix_outputs(x), strict=True):
            out[:, a:b] = self._program(h0, units, splits, factors).numpy()
        return out

    def _batches(self, n: int) -> list[tuple[int, int]]:
        return [(a, min(n, a + self.example_batch)) for a in range(0, n, self.example_batch)]

    def _prefix_outputs(self, x: np.ndarray):
        """The prefix's output for each example batch of ``x``.

        A record calls :meth:`probabilities` once per chunk of masks with the same examples, so
        the outputs are kept (up to :data:`PREFIX_CACHE_BYTES`) for the next call with equal
        examples, recognised by a digest of their bytes, not by identity: an array changed in
        place is a new input.
        """
        x = np.ascontiguousarray(x)
        size = len(x) * int(np.prod(self._prefix_shape)) * 4
        if size > PREFIX_CACHE_BYTES:
            return (self._prefix([x[a:b]], training=False) for a, b in self._batches(len(x)))
        key = (x.shape, x.dtype.str, hashlib.blake2b(x.data, digest_size=16).digest())
        if self._prefix_cache is None or self._prefix_cache[0] != key:
            self._prefix_cache = None  # free the old outputs before computing the new ones
            self._prefix_cache = key, [self._prefix([x[a:b]], training=False)
                                       for a, b in self._batches(len(x))]
        return self._prefix_cache[1]

    def flops(self, masks: np.ndarray, n_examples: int, *, prefix: bool = True) -> int:
        """FLOPs (2 per multiply-accumulate) of the Conv/Dense work one call of
        :meth:`probabilities` does: the prefix once per example (unless its outputs were kept
        from the call before), then for each mask the channel selection and the kept-channel
        layers. Element-wise work is not counted.

        Args:
            masks: Keep bits, bool (n_masks, n_units).
            n_examples: Number of examples evaluated.
            prefix: Count the prefix (False: its outputs were kept from an earlier call).

        Returns:
            The FLOP count, an int.
        """
        n_sites = len(self.table)
        positions = int(np.prod(self._prefix_output.output.shape[1:-1]))
        per_example = sum(layer_flops(layer) for layer in self._prefix.layers) if prefix else 0
        for mask in np.asarray(masks, bool):
            kept, _ = self._kept(mask)
            per_example += 2 * positions * self._prefix_channels * len(kept[0])
            for k, segment in enumerate(self._segments):
                k_in = len(kept[k])
                k_out = len(kept[k + 1]) if k + 1 < n_sites else self.n_classes
                flattened = 1
                for op in segment:
                    if op.kind == "flatten":
                        flattened = int(np.prod(op.layer.input.shape[1:-1]))
                    elif op.kind == "conv":
                        window = int(np.prod(op.kernel.shape[:-2]))
                        per_example += 2 * int(np.prod(op.layer.output.shape[1:-1])) * \
                            window * k_in * k_out
                        k_in = k_out
                    elif op.kind == "dense":
                        per_example += 2 * flattened * k_in * k_out
                        k_in, flattened = k_out, 1
        return int(n_examples) * per_example

    def _kept(self, mask: np.ndarray) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """Kept channels per site (int32), and the factor each kept channel is multiplied by
        at its mask point (float32, its unit's).

        A site with no kept unit keeps channel 0 with factor 0, which computes the same zeros
        without empty tensors.
        """
        kept, factors = [], []
        for i, j in zip(self._offsets[:-1], self._offsets[1:], strict=True):
            units = np.flatnonzero(mask[i:j]).astype(np.int32)
            if len(units):
                factors.append(self._unit_scale[i + units])
            else:
                units = np.zeros(1, np.int32)
                factors.append(np.zeros(1, np.float32))
            kept.append(units)
        return tuple(kept), tuple(factors)

    def _block(self, h0, units, splits, factors):
        """Runs :meth:`_masked` for a block of masks in one call of the compiled program.

        Args:
            h0: The prefix's output for a batch of examples.
            units: Per site, the kept channels of every mask, one after the other (int32).
            splits: Per site, where each mask's channels start in ``units`` and where the last
                ends (int32, masks + 1).
            factors: Per site, the kept channels' factors, laid out as ``units`` (float32).

        Returns:
            The class probabilities, (masks, examples, classes).
        """
        n_masks = tf.shape(splits[0])[0] - 1

        def one_mask(m, out):
            kept = tuple(u[s[m]:s[m + 1]] for u, s in zip(units, splits, strict=True))
            scale = tuple(f[s[m]:s[m + 1]] for f, s in zip(factors, splits, strict=True))
            return m + 1, out.write(m, self._masked(h0, kept, scale))

        _, out = tf.while_loop(lambda m, _: m < n_masks, one_mask,
                               (0, tf.TensorArray(tf.float32, size=n_masks)),
                               parallel_iterations=PARALLEL_MASKS)
        return out.stack()

    def _masked(self, h0, kept, scales):
        """The per-mask program, traced once by :func:`tf.function` with the channel counts
        left unknown, so that every mask runs the same compiled graph (TensorFlow fuses its
        products with their biases and activations) and no Python runs between its ops.

        Args:
            h0: The prefix's output for a batch of examples.
            kept: Per site, the indices of its kept channels (int32 vectors).
            scales: Per site, the factors its kept channels are multiplied by (float32, one
                per kept channel).

        Returns:
            The class probabilities, (examples, classes).
        """
        n_sites = len(self.table)
        # Gathering channels as a product with a scaled selection matrix is much faster than
        # a gather along the last axis.
        select = tf.transpose(tf.one_hot(kept[0], self._prefix_channels)) * scales[0][None, :]
        h = tf.reshape(tf.matmul(tf.reshape(h0, (-1, self._prefix_channels)), select),
                       (-1, *self._prefix_shape[:-1], tf.size(kept[0])))
        for k, segment in enumerate(self._segments):
            kept_in = kept[k]
            kept_out = kept[k + 1] if k + 1 < n_sites else None
            layout, deferred = None, None
            for op in segment:
                if op.kind == "flatten":
                    layout = int(np.prod(h.shape[1:-1]))
                    h = tf.reshape(h, (tf.shape(h)[0], -1))
                elif op.kind in ("conv", "dense"):
                    h = op.run(h, kept_in, kept_out, layout)
                    kept_in, layout = kept_out, None
                    deferred = op if op.deferred else None
                else:
                    h = op.run(h, kept_in, kept_out, layout)
                    if op.kind == "max_pooling" and deferred is not None:
                        h, deferred = deferred.finish(h, kept_out), None
            if k + 1 < n_sites:
                h = h * scales[k + 1]
        if not self.chain.probabilities:
            h = tf.nn.softmax(h, axis=-1)
        return h

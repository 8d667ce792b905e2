"""The fast backend: masked evaluation whose cost follows the subnetwork, not the model.

Three facts make it cheaper than running the Keras model once per mask (DESIGN.md, "the engine"):

1. Everything up to the first site's mask point (the *prefix*) is the same for every mask; it is
   computed once per batch of examples.
2. A channel mask commutes with per-channel layers (pooling, BatchNormalization, activations),
   and dropping the input channels of a Conv/Dense layer is the same as slicing its kernel.
3. So each mask runs a physically smaller network: only kept channels are gathered and only kept
   kernel slices are multiplied; at keep 0.5 on both sides a layer costs about a quarter.

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

import numpy as np

from subnet._tf import keras, tf
from subnet.engine.chain import Chain, layer_flops
from subnet.errors import InputError

__all__ = ["FastBackend"]

_IDENTITY = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
             keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout,
             keras.layers.Identity, keras.layers.ActivityRegularization)
_STATELESS = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU,
              keras.layers.ELU, keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
              keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
              keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
              keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
              keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D)


def _np(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


class _Op:
    """One layer of a segment, ready to run on a subset of its channels."""

    def __init__(self, layer):
        self.layer = layer
        self.kind = "identity"
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
        elif isinstance(layer, _STATELESS):
            self.kind = "stateless"
        elif not isinstance(layer, _IDENTITY):
            raise InputError(f"The fast backend cannot run layer {layer.name!r} "
                             f"({type(layer).__name__}); use backend='reference'.")

    def run(self, h, kept_in, kept_out, layout):
        """Runs the layer on kept channels.

        Args:
            h: The kept channels of the layer's input (channels last).
            kept_in: Indices of the kept input channels.
            kept_out: Indices of the output channels to compute (a slice for all).
            layout: After a Flatten, the number of spatial positions flattened, else None.
        """
        if self.kind == "conv":
            kernel = self.kernel[..., kept_in, :][..., kept_out]
            h = tf.nn.convolution(h, kernel, strides=self.strides, padding=self.padding,
                                  dilations=self.dilation)
            return self._finish(h, kept_out)
        if self.kind == "dense":
            rows = kept_in if layout is None else (
                np.arange(layout)[:, None] * self.kernel.shape[0] // layout
                + kept_in[None, :]).ravel()
            h = tf.matmul(h, self.kernel[rows][:, kept_out])
            return self._finish(h, kept_out)
        if self.kind == "affine":
            return h * self.scale[..., kept_in] + self.shift[..., kept_in]
        if self.kind == "prelu":
            alpha = self.alpha[..., kept_in]
            return tf.maximum(h, 0.0) + alpha * tf.minimum(h, 0.0)
        if self.kind == "stateless":
            return self.layer(h)
        return h

    def _finish(self, h, kept_out):
        if self.bias is not None:
            h = h + self.bias[kept_out]
        return self.activation(h)


class FastBackend:
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
        if not chain.is_chain:
            raise InputError(f"The fast backend runs chains of layers, and model "
                             f"{chain.model.name!r} is not one: {chain.not_chain}; use "
                             "backend='reference'.")
        self.chain = chain
        self.table = chain.table
        self.rescale = rescale
        self._prefix = chain.prefix_model()
        self._segments = [[_Op(layer) for layer in segment] for segment in chain.segments]
        self._scales = np.array([1.0 / s.keep if rescale else 1.0 for s in self.table],
                                dtype=np.float32)
        self._offsets = self.table.offsets
        prefix_shape = tuple(int(d) for d in chain.prefix_output.output.shape[1:])
        self._prefix_channels = prefix_shape[-1]
        if example_batch is None:
            # Measured on the blog's model (2 cores): 2048 examples per batch runs at 94 % of
            # the speed of 4096 with 350 MB less peak memory.
            example_batch = int(np.clip(25_000_000 // max(1, int(np.prod(prefix_shape))),
                                        64, 2048))
        self.example_batch = int(example_batch)
        self.n_classes = int(chain.model.outputs[0].shape[-1])

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
        for a in range(0, len(x), self.example_batch):
            b = min(len(x), a + self.example_batch)
            h0 = self._prefix([x[a:b]], training=False)
            flat = tf.reshape(h0, (-1, self._prefix_channels))
            for m, mask in enumerate(masks):
                kept, scales = self._kept(mask)
                # Gathering channels as a product with a scaled selection matrix is much
                # faster than a gather along the last axis.
                select = np.zeros((self._prefix_channels, len(kept[0])), np.float32)
                select[kept[0], np.arange(len(kept[0]))] = scales[0]
                h = tf.reshape(tf.matmul(flat, select), h0.shape[:-1] + (len(kept[0]),))
                out[m, a:b] = self._run(h, kept, scales)
        return out

    def flops(self, masks: np.ndarray, n_examples: int) -> int:
        """FLOPs (2 per multiply-accumulate) of the Conv/Dense work one call of
        :meth:`probabilities` does: the prefix once per example, then for each mask the channel
        selection and the kept-channel layers. Element-wise work is not counted.

        Args:
            masks: Keep bits, bool (n_masks, n_units).
            n_examples: Number of examples evaluated.

        Returns:
            The FLOP count, an int.
        """
        n_sites = len(self.table)
        positions = int(np.prod(self.chain.prefix_output.output.shape[1:-1]))
        per_example = sum(layer_flops(layer) for layer in self._prefix.layers)
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

    def _kept(self, mask: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Kept channels per site, and the factor each is multiplied by at its mask point.

        A site with no kept unit keeps channel 0 with factor 0, which computes the same zeros
        without empty tensors.
        """
        kept, scales = [], []
        for k, (i, j) in enumerate(zip(self._offsets[:-1], self._offsets[1:], strict=True)):
            units = np.flatnonzero(mask[i:j])
            if len(units):
                kept.append(units)
                scales.append(np.full(len(units), self._scales[k], np.float32))
            else:
                kept.append(np.zeros(1, np.int64))
                scales.append(np.zeros(1, np.float32))
        return kept, scales

    def _run(self, h, kept: list[np.ndarray], scales: list[np.ndarray]) -> np.ndarray:
        n_sites = len(self.table)
        for k, segment in enumerate(self._segments):
            kept_in = kept[k]
            kept_out = kept[k + 1] if k + 1 < n_sites else slice(None)
            layout = None
            for op in segment:
                if op.kind == "flatten":
                    layout = int(np.prod(h.shape[1:-1]))
                    h = tf.reshape(h, (h.shape[0], -1))
                elif op.kind in ("conv", "dense"):
                    h = op.run(h, kept_in, kept_out, layout)
                    kept_in, layout = kept_out, None
                else:
                    h = op.run(h, kept_in, kept_out, layout)
            if k + 1 < n_sites:
                h = h * scales[k + 1]
        if not self.chain.probabilities:
            h = tf.nn.softmax(h, axis=-1)
        return h.numpy()

"""The reference backend: the Keras model itself, with each unit's channels multiplied by its
mask bit wherever a Conv/Dense layer reads them (:meth:`subnet.structure.Structure.masked_model`),
for any graph subnet accepts.

Slow and obviously correct: every (mask, example) pair runs the whole model once. The fast
backend is tested against it.

With ``jit=True`` (what :func:`subnet.engine.make_backend` asks for) the masked model runs as one
XLA-compiled function over blocks of (mask, example) rows of one fixed size, the last block
padded, so it compiles once per record and every row is computed the same way wherever its block
starts (records stay bit-identical across shards and resumes). Measured on a quiet machine
(``benchmarks/bench_graph.py``), a record on the ResNet-20 layout ran at 1.13x the naive loop (the
masked model, ``predict`` once per mask) at width 4 and at 0.84x at width 16, where the graph
backend is faster.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from subnet.engine.chain import Chain, SiteScaled
from subnet.errors import InputError
from subnet.runtime import keras, tf

__all__ = ["ReferenceBackend"]


class ReferenceBackend(SiteScaled):
    """Masked evaluation by running the Keras model with channel masks multiplied in.

    Args:
        chain: The model split at its sites (:func:`subnet.engine.chain.analyse_chain`).
        rescale: Multiply kept units by 1 / keep, as inverted dropout does.
        batch_size: (mask, example) rows per Keras call.
        jit: Run the masked model as an XLA-compiled function over fixed-size blocks (needs
            Keras's TensorFlow backend; otherwise eager calls of the masked model).
    """

    name = "reference"
    #: Why :func:`subnet.engine.make_backend` chose this backend over the one asked for (None:
    #: it was the one asked for, or the best for ``"auto"``).
    fallback_reason: str | None = None

    def __init__(self, chain: Chain, *, rescale: bool = True, batch_size: int = 4096,
                 jit: bool = False):
        from subnet.models import deserialization_scope

        with deserialization_scope(chain.model):  # a trusted model's Lambdas are copied too
            self._build(chain, rescale=rescale, batch_size=batch_size)
        self._compiled: Callable | None = None
        if jit and keras.backend.backend() == "tensorflow":
            # A partial, so that TensorFlow counts the traces of each backend's function on
            # their own (see FastBackend): one per record is no "excessive retracing".
            self._compiled = tf.function(functools.partial(_call, self._model),
                                         jit_compile=True, reduce_retracing=True)

    def _build(self, chain: Chain, *, rescale: bool, batch_size: int) -> None:
        self.chain = chain
        self.rescale = rescale
        self.batch_size = int(batch_size)
        self.n_classes = int(chain.model.outputs[0].shape[-1])
        table = chain.table
        # The structure multiplies each unit's value into every consumer's input channels.
        self._model = chain.structure.masked_model()
        scales = [1.0 / site.keep if rescale else 1.0 for site in table]
        self._unit_scale = np.repeat(scales, table.units).astype(np.float32)

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
        return self.probabilities_from_values(x, masks.astype(np.float32) * self._unit_scale)

    def probabilities_from_values(self, x: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Like :meth:`probabilities`, with any float multiplier per unit instead of keep bits.

        Args:
            x: Images, float32, shape (n_examples, *input_shape).
            values: Multiplier of each unit's output, float32 (n_masks, n_units); no rescaling
                is applied on top.

        Returns:
            float32 array of shape (n_masks, n_examples, n_classes).
        """
        n_masks, n_examples = len(values), len(x)
        values = np.asarray(values, np.float32)
        if values.ndim != 2 or values.shape[1] != self.chain.table.n_units:
            raise InputError(f"Expected unit values of shape (n_masks, "
                             f"{self.chain.table.n_units}). Received shape {values.shape}.")
        if self._compiled is not None and n_masks and n_examples:
            return self._jit_probabilities(self._compiled, x, values)
        rows_per_mask = max(1, self.batch_size // max(1, n_examples))
        out = []
        for start in range(0, n_masks, rows_per_mask):
            stop = min(n_masks, start + rows_per_mask)
            tiled_x = np.tile(x, (stop - start,) + (1,) * (x.ndim - 1))
            tiled_values = np.repeat(values[start:stop], n_examples, axis=0)
            # Called eagerly: predict_on_batch would trace a function for each new masked
            # model (one per extraction check), for a few calls; the numbers are the same.
            prob = keras.ops.convert_to_numpy(self._model([tiled_x, tiled_values],
                                                          training=False))
            out.append(np.asarray(prob, dtype=np.float32).reshape(stop - start, n_examples, -1))
        return np.concatenate(out) if out else np.zeros((0, n_examples, 0), np.float32)

    def _jit_probabilities(self, compiled: Callable, x: np.ndarray,
                           values: np.ndarray) -> np.ndarray:
        """Rows are (mask, example) pairs in mask-major order, evaluated in blocks of exactly
        ``batch_size`` rows (the last one padded with copies of row 0), so one compiled shape
        serves every call with this many examples."""
        n_masks, n_examples = len(values), len(x)
        n_rows = n_masks * n_examples
        block = self.batch_size
        out = np.empty((n_rows, self.n_classes), np.float32)
        for start in range(0, n_rows, block):
            rows = np.arange(start, start + block)
            rows[rows >= n_rows] = 0
            prob = compiled(x[rows % n_examples], values[rows // n_examples])
            stop = min(n_rows, start + block)
            out[start:stop] = np.asarray(prob)[:stop - start]
        return out.reshape(n_masks, n_examples, self.n_classes)


def _call(model, x, v):
    """The masked model on examples ``x`` and unit values ``v``, in inference mode."""
    return model([x, v], training=False)

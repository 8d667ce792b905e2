"""Classical pruning criteria: importance read from a model's weights, activations or gradients.

Each criterion is an :class:`~subnet.importance.core.Estimator` with ``source = "model"``: its
``score`` takes ``(model, x, y)`` and returns an :class:`~subnet.importance.core.Importance` whose
scores run over all units (the output channels of the model's sites) in site order, larger
meaning more important. Activations are always read at each site's *mask point* (the output of
``site.mask_layer``: after bias, BatchNormalization, activation, dropout and pooling) with the
model in inference mode (dropout off, even dropout the model bakes on at test time).

==============  ==========================================================  ===========
name            score of a unit                                             reads
==============  ==========================================================  ===========
``magnitude``   L1 (or L2) norm of its incoming kernel weights              weights
``activation``  mean |activation| over examples and positions               x
``apoz``        1 - fraction of its activations that are zero               x
``taylor``      mean over examples of |mean over positions of a·∂loss/∂a|   x, y
``random``      i.i.d. uniform in [0, 1): a control                         nothing
==============  ==========================================================  ===========

Every criterion still validates the whole ``(model, x, y)`` source, so all estimators share one
call. Every constructor takes an optional ``rate``, the dropout rate(s) the site table of the
returned importance describes, as in :func:`subnet.engine.chain.analyse_chain`; no criterion
uses it, and without it a site with no Dropout after it is described at keep 1 (a criterion
never asks for a rate it does not use).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np

from subnet.engine.chain import Chain, analyse_chain
from subnet.errors import InputTypeError
from subnet.importance.core import Estimator, Importance, check_model_source, register
from subnet.runtime import keras, tf
from subnet.validation import check_bool, check_choice, check_fraction, check_int, check_number

__all__ = ["Activation", "APoZ", "Magnitude", "RandomScores", "Taylor"]


# --------------------------------------------------------------------------------------------
# Option checks


def _chain(model, rate) -> Chain:
    """The model's sites for a criterion's importance: at ``rate`` where given, else at the
    model's own dropout rates, keep 1 where a site has none (criteria never use it)."""
    if rate is None:
        from subnet.structure import channel_groups

        rate = {site.name: site.dropout_rate if site.dropout_layers else 0.0
                for site in channel_groups(model).sites}
    return analyse_chain(model, rate)


def _check_rate(rate):
    """Validates the ``rate`` option; returns it JSON-ready (None, a float or a dict)."""
    def one(value, label):
        return check_fraction(f"rate{label}", value, high_open=True)

    if rate is None:
        return None
    if isinstance(rate, Mapping):
        for key in rate:
            if not isinstance(key, str):
                raise InputTypeError("Invalid key received in argument `rate`. Expected site names "
                                f"(str). Received: {key!r}")
        return {key: one(value, f"[{key!r}]") for key, value in rate.items()}
    return one(rate, "")


# --------------------------------------------------------------------------------------------
# Running the model to its mask points


def _entries(chain: Chain) -> np.ndarray:
    """Per unit: its (position, channel) entries per example over all its read points (in a
    chain, the positions of its site's mask point)."""
    s = chain.structure
    counts = np.zeros(s.n_units)
    for name, units in s.read_points():
        positions = int(math.prod(int(d) for d in
                                  chain.model.get_layer(name).output.shape[1:-1]))
        counts += positions * np.bincount(units[units >= 0], minlength=s.n_units)
    return counts


def _positions(chain: Chain, entries: np.ndarray) -> dict[str, int]:
    """Entries per example of each site's first unit (for a chain: the mask point's positions)."""
    offsets = chain.table.offsets
    return {site.name: int(entries[offsets[k]]) for k, site in enumerate(chain.table)}


def _read_point_batches(chain: Chain, x: np.ndarray, batch_size: int
                        ) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    """Activations at every read point of the model's units, batch by batch, in inference mode.

    A unit's activation is its channels' values where channel-mixing layers read them
    (:meth:`subnet.structure.Structure.read_points`): in a chain, its site's mask point (after
    bias, BatchNormalization, activation, dropout and pooling).

    Args:
        chain: The analysed model.
        x: Examples, shape (n, *input shape).
        batch_size: Examples per model call.

    Yields:
        For each batch of b examples, one ``(values, units)`` pair per read point: float32
        values of shape (b, positions, channels) and the unit index of each channel (-1: fixed).
    """
    model = chain.model
    points = chain.structure.read_points()
    sub = keras.Model(model.inputs, [model.get_layer(name).output for name, _ in points])
    for a in range(0, len(x), batch_size):
        values = sub([x[a:a + batch_size]], training=False)
        if not isinstance(values, (list, tuple)):
            values = [values]
        yield [(_flat(np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float32),
                      len(units)), units) for v, (_, units) in zip(values, points, strict=True)]


def _per_unit(per_channel: np.ndarray, units: np.ndarray, n_units: int) -> np.ndarray:
    """Sums a per-channel quantity into its units (fixed channels dropped)."""
    kept = units >= 0
    return np.bincount(units[kept], weights=per_channel[kept], minlength=n_units)


def _flat(values: np.ndarray, units: int) -> np.ndarray:
    """(b, *positions, units) → (b, prod(positions), units)."""
    return values.reshape(values.shape[0], -1, units)


# --------------------------------------------------------------------------------------------
# Estimators


@register
class Magnitude(Estimator):
    """Norm of each unit's incoming kernel weights (Li et al. 2017, "Pruning filters").

    For a Conv2D kernel of shape (kh, kw, c_in, c_out) (Conv1D: (k, c_in, c_out)) the norm is
    taken over all axes but the last; for a Dense kernel (n_in, n_out) over axis 0. Biases are
    not counted. Needs no data (``x``, ``y`` are validated only) and is deterministic.

    Args:
        norm: ``"l1"`` (sum of |w|, the paper's choice) or ``"l2"`` (sqrt of the sum of w²).
        normalize: Make layers comparable by their fan-in (the number of incoming weights per
            unit, prod of the kernel shape but the last axis): L1 becomes the mean |w|, L2 the
            root-mean-square sqrt(Σw² / fan-in).
        rate: Dropout rate(s) for the site table, as for
            :func:`~subnet.engine.chain.analyse_chain`.

    Raises:
        ValueError: If ``norm`` is not ``"l1"`` or ``"l2"``, or ``rate`` is invalid.
        TypeError: If ``normalize`` is not a bool.
    """

    name = "magnitude"
    source = "model"

    def __init__(self, *, norm: str = "l1", normalize: bool = False, rate=None):
        self.norm = check_choice("norm", norm, ("l1", "l2"))
        self.normalize = check_bool("normalize", normalize)
        self.rate = _check_rate(rate)

    def score(self, source) -> Importance:
        """Scores each unit by the norm of its incoming weights.

        Args:
            source: ``(model, x, y)``: a Keras classifier, float examples (n, *input shape)
                and int labels (n,).

        Returns:
            An :class:`Importance` with float64 scores (n_units,), all >= 0; ``details`` holds
            ``norm``, ``normalize``, ``rate`` and ``fan_in`` ({site name: incoming weights per
            unit}).

        Raises:
            TypeError, ValueError: If the source is not a valid ``(model, x, y)``, or the model
                cannot be split into sites.
        """
        model, _, _ = check_model_source(source, self.name)
        chain = _chain(model, self.rate)
        s = chain.structure
        total, fan = np.zeros(s.n_units), np.zeros(s.n_units)
        for call in s.calls:
            units = s.channels(call.name)
            if not call.rule.produces or not (units >= 0).any():
                continue
            kernel = getattr(call.layer, "pointwise_kernel", None)
            kernel = call.layer.kernel if kernel is None else kernel
            flat = np.asarray(keras.ops.convert_to_numpy(kernel), np.float64)
            flat = flat.reshape(-1, flat.shape[-1])
            values = np.abs(flat).sum(axis=0) if self.norm == "l1" else \
                np.square(flat).sum(axis=0)
            total += _per_unit(values, units, s.n_units)
            fan += _per_unit(np.full(flat.shape[1], float(flat.shape[0])), units, s.n_units)
        if self.normalize:
            total = total / fan
        scores = total if self.norm == "l1" else np.sqrt(total)
        offsets = chain.table.offsets
        fan_in = {site.name: int(fan[offsets[k]]) for k, site in enumerate(chain.table)}
        return Importance(method=self.name, scores=scores, sites=chain.table,
                          details={"norm": self.norm, "normalize": self.normalize,
                                   "rate": self.rate, "fan_in": fan_in})


@register
class Activation(Estimator):
    """Mean absolute activation of each unit at its mask point.

    score(unit) = mean over examples n and positions m of |a[n, m, unit]|, with the model in
    inference mode.

    Args:
        batch_size: Examples per model call; a positive int. Does not change the result beyond
            float rounding.
        rate: Dropout rate(s) for the site table, as for
            :func:`~subnet.engine.chain.analyse_chain`.

    Raises:
        ValueError: If ``batch_size`` or ``rate`` is invalid.
    """

    name = "activation"
    source = "model"

    def __init__(self, *, batch_size: int = 256, rate=None):
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.rate = _check_rate(rate)

    def score(self, source) -> Importance:
        """Scores each unit by its mean absolute activation on ``x``.

        Args:
            source: ``(model, x, y)``: a Keras classifier, float examples (n, *input shape)
                and int labels (n,); ``y`` is validated but not used.

        Returns:
            An :class:`Importance` with float64 scores (n_units,), all >= 0; ``details`` holds
            ``n_examples``, ``batch_size``, ``rate`` and ``positions`` ({site name: positions
            averaged over per example}).

        Raises:
            TypeError, ValueError: If the source is not a valid ``(model, x, y)``, or the model
                cannot be split into sites.
        """
        model, x, _ = check_model_source(source, self.name)
        chain = _chain(model, self.rate)
        entries = _entries(chain)
        n_units = chain.table.n_units
        sums = np.zeros(n_units)
        for batch in _read_point_batches(chain, x, self.batch_size):
            for values, units in batch:
                sums += _per_unit(np.abs(values, dtype=np.float64).sum(axis=(0, 1)), units,
                                  n_units)
        scores = sums / (len(x) * entries)
        positions = _positions(chain, entries)
        return Importance(method=self.name, scores=scores, sites=chain.table,
                          details={"n_examples": len(x), "batch_size": self.batch_size,
                                   "rate": self.rate, "positions": positions})


@register
class APoZ(Estimator):
    """One minus the Average Percentage of Zeros of each unit (Hu et al. 2016, "Network
    trimming").

    APoZ(unit) = fraction of (example, position) entries of the unit's activation at its mask
    point with |a| <= ``tol``; the score is 1 - APoZ, a fraction in [0, 1], so that larger means
    more important. APoZ is meaningful where the mask point follows a ReLU-like activation, whose
    zeros say the unit is off; a unit whose activation can be negative (a linear convolution, a
    tanh) is rarely exactly zero and scores near 1 whatever its role. ``details["nonnegative"]``
    says, per site, whether every activation observed on ``x`` was >= 0.

    Args:
        tol: Activations with absolute value <= ``tol`` count as zero; a finite float >= 0.
        batch_size: Examples per model call; a positive int.
        rate: Dropout rate(s) for the site table, as for
            :func:`~subnet.engine.chain.analyse_chain`.

    Raises:
        ValueError: If ``tol``, ``batch_size`` or ``rate`` is invalid.
    """

    name = "apoz"
    source = "model"

    def __init__(self, *, tol: float = 0.0, batch_size: int = 256, rate=None):
        self.tol = check_number("tol", tol, low=0.0)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.rate = _check_rate(rate)

    def score(self, source) -> Importance:
        """Scores each unit by the fraction of its activations on ``x`` that are not zero.

        Args:
            source: ``(model, x, y)``: a Keras classifier, float examples (n, *input shape)
                and int labels (n,); ``y`` is validated but not used.

        Returns:
            An :class:`Importance` with float64 scores (n_units,) in [0, 1]; ``details`` holds
            ``n_examples``, ``batch_size``, ``tol``, ``rate``, ``positions`` and
            ``nonnegative`` ({site name: bool}).

        Raises:
            TypeError, ValueError: If the source is not a valid ``(model, x, y)``, or the model
                cannot be split into sites.
        """
        model, x, _ = check_model_source(source, self.name)
        chain = _chain(model, self.rate)
        entries = _entries(chain)
        n_units = chain.table.n_units
        zeros = np.zeros(n_units)
        lowest = np.full(n_units, np.inf)
        for batch in _read_point_batches(chain, x, self.batch_size):
            for values, units in batch:
                zeros += _per_unit((np.abs(values) <= self.tol).sum(axis=(0, 1)), units, n_units)
                kept = units >= 0
                np.minimum.at(lowest, units[kept], values.min(axis=(0, 1))[kept])
        scores = 1.0 - zeros / (len(x) * entries)
        positions = _positions(chain, entries)
        nonnegative = {site.name: bool(lowest[a:b].min() >= 0.0) for site, a, b in zip(
            chain.table, chain.table.offsets[:-1], chain.table.offsets[1:], strict=True)}
        return Importance(method=self.name, scores=scores, sites=chain.table,
                          details={"n_examples": len(x), "batch_size": self.batch_size,
                                   "tol": self.tol, "rate": self.rate, "positions": positions,
                                   "nonnegative": nonnegative})


@register
class Taylor(Estimator):
    """First-order Taylor criterion (Molchanov et al. 2017, "Pruning convolutional neural
    networks for resource efficient inference").

    For example n with activation a[n, m, unit] at the unit's mask point (M positions m) and
    loss ℓ_n, the sparse categorical cross-entropy of the model's output for label y_n::

        Θ_n(unit) = | (1/M) Σ_m a[n, m, unit] · ∂ℓ_n/∂a[n, m, unit] |
        score(unit) = (1/N) Σ_n Θ_n(unit)

    The absolute value is taken per example, of the spatial mean, before the mean over
    examples, as in the paper. Each example's gradient is that of its own loss (not of a batch
    mean), so the scores do not depend on ``batch_size``. (M Θ_n is the magnitude of the
    first-order change of ℓ_n when the unit is removed.) The model runs in inference mode;
    ``from_logits`` follows whether the model outputs a softmax.

    Args:
        batch_size: Examples per gradient computation; a positive int.
        normalize: Divide each site's scores by their L2 norm over the site's units, the
            paper's layer-wise normalisation for ranking across layers (a site whose scores
            are all 0 stays 0).
        rate: Dropout rate(s) for the site table, as for
            :func:`~subnet.engine.chain.analyse_chain`.

    Raises:
        ValueError: If ``batch_size`` or ``rate`` is invalid.
        TypeError: If ``normalize`` is not a bool.
    """

    name = "taylor"
    source = "model"

    def __init__(self, *, batch_size: int = 256, normalize: bool = False, rate=None):
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.normalize = check_bool("normalize", normalize)
        self.rate = _check_rate(rate)

    def score(self, source) -> Importance:
        """Scores each unit by the first-order Taylor estimate of its effect on the loss.

        Args:
            source: ``(model, x, y)``: a Keras classifier, float examples (n, *input shape)
                and int labels (n,).

        Returns:
            An :class:`Importance` with float64 scores (n_units,), all >= 0; ``details`` holds
            ``n_examples``, ``batch_size``, ``normalize``, ``rate``, ``positions``, ``loss`` and
            ``from_logits``.

        Raises:
            TypeError, ValueError: If the source is not a valid ``(model, x, y)``, or the model
                cannot be split into sites.
        """
        model, x, y = check_model_source(source, self.name)
        chain = _chain(model, self.rate)
        table = chain.table
        # The model with a multiplier v_u on each unit's channels where they are read: at v = 1
        # it is the model, and dℓ/dv_u = Σ over the unit's read entries of a · dℓ/da.
        masked = chain.structure.masked_model()
        entries = _entries(chain)
        sums = np.zeros(table.n_units)
        for a in range(0, len(x), self.batch_size):
            xb, yb = x[a:a + self.batch_size], y[a:a + self.batch_size]
            values = tf.ones((len(xb), table.n_units))
            with tf.GradientTape() as tape:
                tape.watch(values)
                probabilities = masked([tf.convert_to_tensor(xb), values], training=False)
                # Summed per-example losses: each example's gradient is that of its own loss.
                loss = tf.reduce_sum(keras.ops.sparse_categorical_crossentropy(
                    tf.constant(yb), probabilities))
            grad = tape.gradient(loss, values).numpy().astype(np.float64)
            sums += np.abs(grad / entries).sum(axis=0)
        parts = table.split(sums / len(x))
        parts = [parts[name] for name in table.names]
        if self.normalize:
            parts = [p / np.linalg.norm(p) if np.linalg.norm(p) > 0 else p for p in parts]
        return Importance(method=self.name, scores=np.concatenate(parts), sites=table,
                          details={"n_examples": len(x), "batch_size": self.batch_size,
                                   "normalize": self.normalize, "rate": self.rate,
                                   "positions": _positions(chain, entries),
                                   "loss": "sparse_categorical_crossentropy",
                                   "from_logits": not chain.probabilities})


@register
class RandomScores(Estimator):
    """A control: i.i.d. uniform scores in [0, 1), one per unit.

    Reproducible: the scores are ``numpy.random.default_rng(seed).random(n_units)``.

    Args:
        seed: A non-negative int.
        rate: Dropout rate(s) for the site table, as for
            :func:`~subnet.engine.chain.analyse_chain`.

    Raises:
        ValueError: If ``seed`` is not a non-negative int, or ``rate`` is invalid.
    """

    name = "random"
    source = "model"

    def __init__(self, *, seed: int = 0, rate=None):
        self.seed = check_int("seed", seed, low=0)
        self.rate = _check_rate(rate)

    def score(self, source) -> Importance:
        """Draws one uniform score per unit of the model's sites.

        Args:
            source: ``(model, x, y)``; only the model's site table is used.

        Returns:
            An :class:`Importance` with float64 scores (n_units,) in [0, 1); ``details`` holds
            ``seed``, ``rate`` and ``distribution``.

        Raises:
            TypeError, ValueError: If the source is not a valid ``(model, x, y)``, or the model
                cannot be split into sites.
        """
        model, _, _ = check_model_source(source, self.name)
        table = _chain(model, self.rate).table
        scores = np.random.default_rng(self.seed).random(table.n_units)
        return Importance(method=self.name, scores=scores, sites=table,
                          details={"seed": self.seed, "rate": self.rate,
                                   "distribution": "uniform[0, 1)"})

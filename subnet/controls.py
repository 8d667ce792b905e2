"""Controls that ask whether a pruned subnetwork was already there.

A subnetwork cut from a trained parent and fine-tuned is compared with the same shape trained
without the parent's weights (Liu et al. 2019, "Rethinking the value of network pruning"):

- **Scratch-E**: fresh initialisation, trained for as many epochs as the parent was;
- **Scratch-B**: fresh initialisation, trained for as many FLOPs as the parent's training
  (epochs scaled by the parent's FLOPs over the subnetwork's), capped at ``cap`` times the
  epochs;
- **rewinding** (Frankle & Carbin 2019; Frankle et al. 2020): the subnetwork's units with the
  parent's own weights from initialisation or an early epoch, retrained: if that matches the
  pruned subnetwork, the subnetwork "was already there" in the parent's early weights;
- **a shape**: any widths of the parent's architecture (e.g. a published one), freshly
  initialised.

Each returns an untrained (or rewound) model and the epochs to train it; training uses the same
recipe as everything else (:func:`subnet.train.fit`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from subnet.errors import InputError
from subnet.extraction import as_keep_set, copy_model, extract
from subnet.validation import check_choice

__all__ = ["reinitialized", "rewound", "scratch", "scratch_epochs", "shaped"]


def scratch_epochs(kind: str, parent_epochs: float, parent_flops: int, flops: int, *,
                   cap: float = 4.0) -> float:
    """Epochs of a Scratch-E or Scratch-B control.

    Args:
        kind: ``"E"`` (the parent's epochs) or ``"B"`` (the parent's training FLOPs: epochs
            times ``parent_flops / flops``, at most ``cap`` times the parent's epochs).
        parent_epochs: Epochs the parent was trained for (> 0).
        parent_flops: FLOPs per example of the parent.
        flops: FLOPs per example of the subnetwork (> 0, at most ``parent_flops``).
        cap: Largest multiple of the parent's epochs for Scratch-B (>= 1).

    Returns:
        Epochs (a float; pass ``examples=round(epochs * n_train)`` to :func:`subnet.train.fit`).

    Raises:
        InputError: If ``kind`` is unknown or a number is out of range.
    """
    check_choice("kind", kind, ("E", "B"))
    if not parent_epochs > 0 or not 0 < flops <= parent_flops or not cap >= 1:
        raise InputError(f"Scratch epochs need parent_epochs > 0, 0 < flops <= parent_flops and "
                         f"cap >= 1. Received: parent_epochs={parent_epochs!r}, flops={flops!r}, "
                         f"parent_flops={parent_flops!r}, cap={cap!r}")
    if kind == "E":
        return float(parent_epochs)
    return float(parent_epochs * min(cap, parent_flops / flops))


def _first_units(model, widths: Mapping[str, int]) -> dict:
    table = as_keep_set(model, {}).sites
    unknown = sorted(set(widths) - set(table.names))
    if unknown:
        raise InputError(f"Unknown sites {unknown} in `widths`; the model's sites are "
                         f"{table.names}.")
    bits = {}
    for site in table:
        width = int(widths.get(site.name, site.units))
        if not 1 <= width <= site.units:
            raise InputError(f"Width {width} of site {site.name!r} is outside [1, {site.units}].")
        bits[site.name] = np.arange(site.units) < width
    return bits


def shaped(model, widths: Mapping[str, int], *, seed: int = 0):
    """The parent's architecture at other widths, freshly initialised (Glorot-uniform kernels,
    zero biases), e.g. a published shape.

    Args:
        model: The parent (its architecture is kept, its weights are not).
        widths: {site name: units}; sites not named keep their width.
        seed: Seed of the initialisation.

    Returns:
        A new, untrained ``keras.Model``.

    Raises:
        InputError: If a site is unknown or a width is outside [1, the site's units].
    """
    small, _ = extract(model, _first_units(model, widths))
    return reinitialized(small, seed)


def scratch(subnetwork, *, seed: int = 0):
    """A Scratch-E/B control of ``subnetwork``: the same shape, freshly initialised.

    Args:
        subnetwork: An extracted subnetwork (any ``keras.Model`` subnet can analyse).
        seed: Seed of the initialisation.

    Returns:
        A new, untrained ``keras.Model`` of the same shape.
    """
    return reinitialized(subnetwork, seed)


def reinitialized(model, seed: int):
    """A copy of ``model`` with fresh weights: Glorot-uniform kernels, zero biases,
    BatchNormalization reset (gamma and moving variance 1, beta and moving mean 0), drawn from
    ``numpy.random.default_rng(seed)``. The initialisation of every control here and of the
    quick comparison's ``reinit`` rows."""
    rng = np.random.default_rng(seed)
    fresh = copy_model(model)
    for layer in fresh.layers:
        values = []
        for weight in layer.weights:
            shape, name = tuple(weight.shape), weight.name.split("/")[-1]
            if name in ("kernel", "depthwise_kernel") and len(shape) >= 2:
                receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
                limit = np.sqrt(6.0 / (receptive * (shape[-2] + shape[-1])))
                values.append(rng.uniform(-limit, limit, shape))
            elif name in ("gamma", "moving_variance"):
                values.append(np.ones(shape))
            else:
                values.append(np.zeros(shape))
        if values:
            layer.set_weights([v.astype(w.dtype) for v, w in zip(values, layer.weights,
                                                                  strict=True)])
    return fresh


def rewound(model, early_weights, kept: Mapping[str, list]):
    """The subnetwork ``kept`` (units by their index in ``model``) with ``model``'s early
    weights: what rewinding retrains.

    Args:
        model: The parent (architecture), trained or not.
        early_weights: The parent's weights at initialisation or an early epoch, as
            ``model.get_weights()`` gave them (e.g. ``fit(..., snapshots=[0])["snapshots"][0]``
            or a model file saved then, loaded and ``get_weights()``).
        kept: {site name: indices of the kept units in the parent}, as a gradual pruning
            checkpoint (``Trajectory.checkpoints[b]["kept"]``) gives them.

    Returns:
        The rewound subnetwork, a new ``keras.Model`` with the early weights of the kept units.

    Raises:
        InputError: If the weights do not fit the model, or ``kept`` names unknown sites or
            indices.
    """
    from subnet.extraction import copy_model

    early = copy_model(model)
    shapes = [tuple(w.shape) for w in early.get_weights()]
    if len(early_weights) != len(shapes) or any(
            tuple(np.shape(w)) != s for w, s in zip(early_weights, shapes, strict=False)):
        raise InputError("`early_weights` do not fit the model: give model.get_weights() of the "
                         "same architecture at an early epoch.")
    early.set_weights([np.asarray(w) for w in early_weights])
    table = as_keep_set(model, {}).sites
    bits = {}
    for site in table:
        indices = np.asarray(kept.get(site.name, range(site.units)), dtype=np.int64)
        if indices.size == 0 or indices.min() < 0 or indices.max() >= site.units:
            raise InputError(f"`kept` for site {site.name!r} must be unit indices in "
                             f"[0, {site.units}).")
        bits[site.name] = np.isin(np.arange(site.units), indices)
    unknown = sorted(set(kept) - set(table.names))
    if unknown:
        raise InputError(f"Unknown sites {unknown} in `kept`; the model's sites are "
                         f"{table.names}.")
    small, _ = extract(early, bits)
    return small


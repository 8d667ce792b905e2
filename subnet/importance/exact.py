"""Ground truth: exact q-weighted Banzhaf values by enumerating every mask, and leave-one-out
ablation."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from subnet.engine import make_backend
from subnet.engine.chain import analyse_chain
from subnet.errors import InputError
from subnet.importance.core import Estimator, Importance, check_model_source, register
from subnet.importance.from_record import LOG_FLOOR, METRICS
from subnet.models import check_examples
from subnet.validation import check_choice, invalid

__all__ = ["AblationEstimator", "ablation", "exact_banzhaf", "metric_from_probabilities"]

MAX_EXACT_UNITS = 16


def metric_from_probabilities(probabilities: np.ndarray, y: np.ndarray,
                              metric: str = "accuracy") -> np.ndarray:
    """Per-mask metric from class probabilities.

    Args:
        probabilities: float (n_masks, n_examples, n_classes).
        y: True classes, int (n_examples,).
        metric: ``"accuracy"`` or ``"log_prob"`` (mean log probability of the true class,
            floored at 2**-24 like mask records).

    Returns:
        float64 (n_masks,).
    """
    if metric == "accuracy":
        return np.mean(probabilities.argmax(axis=-1) == y, axis=1)
    if metric == "log_prob":
        true = probabilities[:, np.arange(len(y)), y].astype(np.float16).astype(np.float64)
        return np.mean(np.log(np.maximum(true, LOG_FLOOR)), axis=1)
    raise invalid("metric", f"one of {', '.join(map(repr, METRICS))}", metric)


def _backend(model, rate, backend: str, rescale: bool):
    chain = analyse_chain(model, rate)
    return chain, make_backend(chain, backend, rescale=rescale)


def exact_banzhaf(model, x, y, metric: str = "accuracy",
                  rate: float | Mapping[str, float] | None = None, *, backend: str = "auto",
                  rescale: bool = True, chunk: int = 256) -> Importance:
    """Exact q-weighted Banzhaf values by evaluating all 2^n masks (n <= 16 units).

    The value of unit i is E[f | i kept] − E[f | i dropped] under masks that keep each unit
    independently with its site's keep probability q, computed by weighting every mask by its
    probability. With one q for every site this is the q-weighted Banzhaf value (a binomial
    semivalue: a coalition S of the other units weighs q^|S| (1 − q)^(n−1−|S|)), the classic
    Banzhaf value at q = 0.5; with keep probabilities that differ by site, the partial
    derivative of the game's multilinear extension at q. This is the limit that the record
    estimators converge to, with the same masking (and rescaling) as :func:`~subnet.record_masks`.

    Args:
        model: A ``keras.Model`` classifier with at most 16 units over all sites.
        x: Examples, float32 (n_examples, *input shape).
        y: True classes, int (n_examples,).
        metric: ``"accuracy"`` or ``"log_prob"``.
        rate: Dropout rate(s) defining the keep probabilities (see :func:`subnet.sites`).
        backend: Engine backend: ``"auto"``, ``"fast"``, ``"graph"`` or ``"reference"``.
        rescale: Scale kept units by 1 / keep, as :func:`~subnet.record_masks` does.
        chunk: Masks evaluated per engine call.

    Returns:
        An :class:`~subnet.importance.core.Importance` (``method="exact_banzhaf"``) without
        standard errors; units kept with probability 1 get NaN.

    Raises:
        ValueError: If the model has more than 16 units, or the inputs are invalid.
    """
    x, y, _ = check_examples(model, x, y)
    chain, engine = _backend(model, rate, backend, rescale)
    n = chain.table.n_units
    if n > MAX_EXACT_UNITS:
        raise InputError(f"exact_banzhaf enumerates all 2^n masks and allows n <= "
                         f"{MAX_EXACT_UNITS} units; this model has {n}. Use a smaller model, or "
                         "estimate(record, 'banzhaf') from sampled masks.")
    masks = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(bool)
    values = np.concatenate([
        metric_from_probabilities(engine.probabilities(x, masks[a:a + chunk]), y, metric)
        for a in range(0, len(masks), chunk)])
    keep = chain.table.unit_keep()
    weight = np.prod(np.where(masks, keep, 1.0 - keep), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = (weight * values) @ masks / keep
        dropped = (weight * values) @ ~masks / (1.0 - keep)
    scores = np.where(keep < 1.0, kept - dropped, np.nan)
    if np.isnan(scores).any():
        warnings.warn("exact_banzhaf: units kept with probability 1 have no effect to measure; "
                      "their scores are NaN.", RuntimeWarning, stacklevel=2)
    return Importance(method="exact_banzhaf", scores=scores, sites=chain.table, details={
        "metric": metric, "n_masks": int(len(masks)), "n_examples": int(len(y)),
        "rescale": bool(rescale), "full_metric": float(values[-1]), "backend": engine.name,
        "backend_fallback": engine.fallback_reason})


def ablation(model, x, y, metric: str = "accuracy",
             rate: float | Mapping[str, float] | None = None, *, backend: str = "auto",
             chunk: int = 256) -> Importance:
    """Leave-one-unit-out ablation: how much the metric falls when one unit is removed.

    The full network (no dropout, no rescaling) is compared with the network missing one unit,
    for every unit; exact for any model.

    Args:
        model: A ``keras.Model`` classifier.
        x: Examples, float32 (n_examples, *input shape).
        y: True classes, int (n_examples,).
        metric: ``"accuracy"`` or ``"log_prob"``.
        rate: Only needed where a site has no Dropout after it (any value works: ablation does
            not use keep probabilities).
        backend: Engine backend: ``"auto"``, ``"fast"``, ``"graph"`` or ``"reference"``.
        chunk: Masks evaluated per engine call.

    Returns:
        An :class:`~subnet.importance.core.Importance` (``method="ablation"``): metric of the
        full network minus metric without the unit.
    """
    x, y, _ = check_examples(model, x, y)
    chain, engine = _backend(model, rate, backend, rescale=False)
    n = chain.table.n_units
    masks = ~np.eye(n + 1, n, k=-1, dtype=bool)  # row 0: everything kept; row i+1: i dropped
    values = np.concatenate([
        metric_from_probabilities(engine.probabilities(x, masks[a:a + chunk]), y, metric)
        for a in range(0, len(masks), chunk)])
    return Importance(method="ablation", scores=values[0] - values[1:], sites=chain.table,
                      details={"metric": metric, "n_examples": int(len(y)),
                               "full_metric": float(values[0]), "backend": engine.name,
                               "backend_fallback": engine.fallback_reason})


@register
class AblationEstimator(Estimator):
    """Leave-one-unit-out ablation as an estimator (see :func:`ablation`).

    Args:
        metric: ``"accuracy"`` or ``"log_prob"``.
        rate: As for :func:`ablation`.
        backend: Engine backend.
    """

    name = "ablation"
    source = "model"

    def __init__(self, metric: str = "accuracy", rate=None, backend: str = "auto"):
        check_choice("metric", metric, METRICS)
        self.metric, self.rate, self.backend = metric, rate, backend

    def score(self, source) -> Importance:
        """Ablates every unit of ``(model, x, y)``."""
        model, x, y = check_model_source(source, self.name)
        return ablation(model, x, y, self.metric, self.rate, backend=self.backend)

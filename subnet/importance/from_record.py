"""Importance from a mask record, without evaluating the model again.

With masks drawn i.i.d. (unit i kept with probability q_i), a unit's *main effect* on a
per-mask metric f is E[f | i kept] − E[f | i dropped]. With one keep probability q for every
unit this is the unit's **q-weighted Banzhaf value** in the game "set of kept units → metric"
(the p-weighted Banzhaf value with p = q): the binomial semivalue (Dubey, Neyman & Weber 1981)
that weighs a coalition S of the other units by q^|S| (1 − q)^(n−1−|S|). At q = 0.5 it is the
classic Banzhaf value; q near 1 asks about removing a unit from an almost whole network. With
keep probabilities that differ by site it is the partial derivative of the game's multilinear
extension (Owen 1972) at the point q. With 1/q rescaling of kept units the game itself depends
on q. Where q comes from is :mod:`subnet.keep`'s business; ``analyses/validate_calibrated.py``
checks these estimates against exact enumeration (:func:`~subnet.importance.exact_banzhaf`) at
a calibrated q on networks trained without dropout (``reports/validate_importance``). The
intervals need masks that drop every unit often: there, 2,000 masks covered the exact values
92-95 % of the time at q <= 0.95 (at least 100 drops per unit), but 68-74 % at q = 0.99 (about
20). Two unbiased estimators are provided:

- the *difference of means* over masks that keep and drop the unit;
- *least squares* of f on all mask bits at once. Because the bits are independent, the
  population regression coefficient of bit i equals its main effect exactly (Hammer & Holzman
  1992), and fitting all bits together removes the noise that the other units' random imbalance
  adds to the difference of means. Standard errors are heteroscedasticity-robust (HC1 sandwich),
  valid although f is not linear in the bits.

Least squares needs comfortably more masks than units; ``banzhaf`` uses it when the record has at
least twice as many masks as units (plus one) and the difference of means otherwise, and says
which in ``details``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import networkx as nx
import numpy as np

from subnet._io import atomic_path
from subnet.engine.chain import SiteTable
from subnet.errors import InputError
from subnet.importance.core import (
    Estimator,
    Importance,
    benjamini_hochberg,
    check_record,
    normal_intervals,
    register,
    warn_nan,
)
from subnet.validation import check_choice, check_fraction, check_int, check_number, invalid

__all__ = ["LOG_FLOOR", "METRICS", "BanzhafEstimator", "ClassConditionalEstimator",
           "LogisticEstimator", "RegressionEstimator", "class_importance", "interactions",
           "mask_metric", "save_graphml"]

METRICS = ("accuracy", "log_prob")
#: Floor of the true-class probability before its log (``log_prob`` metric): the smallest positive
#: float16, as records store ``true_prob`` in float16.
LOG_FLOOR = 2.0 ** -24


def mask_metric(record, metric: str = "accuracy", classes=None) -> np.ndarray:
    """Per-mask metric over the record's examples, streamed chunk by chunk.

    Args:
        record: A :class:`~subnet.record.MaskRecord`.
        metric: ``"accuracy"`` (fraction correct) or ``"log_prob"`` (mean natural log of the
            probability of the true class, floored at 2**-24 because it is stored as float16).
        classes: If given, a sequence of class labels: the metric is computed over the examples
            of each class separately.

    Returns:
        float64 (n_masks,), or (n_masks, len(classes)) with ``classes``.

    Raises:
        ValueError: If ``metric`` is unknown or a class has no example.
    """
    check_choice("metric", metric, METRICS)
    labels = record.labels
    groups = None
    if classes is not None:
        groups = [labels == c for c in classes]
        empty = [c for c, g in zip(classes, groups, strict=True) if not g.any()]
        if empty:
            raise InputError(f"Classes {empty} have no example in the record.")
    parts = []
    for chunk in record.iter_chunks():
        if metric == "accuracy":
            values = (chunk.predicted == labels).astype(np.float64)
        else:
            values = np.log(np.maximum(chunk.true_prob.astype(np.float64), LOG_FLOOR))
        if groups is None:
            parts.append(values.mean(axis=1))
        else:
            parts.append(np.stack([values[:, g].mean(axis=1) for g in groups], axis=1))
    return np.concatenate(parts)


def _centered(masks: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return masks.astype(np.float64) - keep


def least_squares(masks: np.ndarray, values: np.ndarray, alpha: float = 0.0):
    """Main effects by (ridge) least squares of ``values`` on the mask bits (with an
    intercept), with HC1 heteroscedasticity-robust standard errors.

    Args:
        masks: bool (n_masks, n_units), or any float design matrix (n_masks, n_columns), such
            as mask bits with product terms.
        values: Per-mask metric, (n_masks,) or (n_masks, k) for k metrics at once.
        alpha: Ridge penalty on the unit coefficients (0 for ordinary least squares).

    Returns:
        (coefficients, standard errors, residual degrees of freedom), arrays shaped like
        ``values`` transposed: (n_units,) or (k, n_units).
    """
    x = masks.astype(np.float64)
    x -= x.mean(axis=0)  # centering on the sample means is fitting an intercept
    t, p = x.shape
    y = np.asarray(values, dtype=np.float64)
    y2 = y.reshape(t, -1)
    y_centered = y2 - y2.mean(axis=0)
    gram = x.T @ x + alpha * np.eye(p)
    inverse = np.linalg.pinv(gram, hermitian=True)
    beta = inverse @ (x.T @ y_centered)                      # (p, k)
    residuals = y_centered - x @ beta
    dof = t - p - 1 if alpha == 0 else t - 1
    scale = t / max(dof, 1)
    stderr = np.empty_like(beta)
    for j in range(y2.shape[1]):
        meat = (x * residuals[:, j:j + 1] ** 2).T @ x
        cov = inverse @ meat @ inverse * scale
        stderr[:, j] = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    if y.ndim == 1:
        return beta[:, 0], stderr[:, 0], dof
    return beta.T, stderr.T, dof


def difference_of_means(masks: np.ndarray, values: np.ndarray):
    """Main effects as E[f | kept] − E[f | dropped], with Welch standard errors.

    Units never (or always) kept in the record get NaN.

    Returns:
        (effects, standard errors), each (n_units,) or (k, n_units) for 2-D ``values``.
    """
    y = np.asarray(values, dtype=np.float64).reshape(len(masks), -1)
    kept = masks.astype(np.float64)
    n1 = kept.sum(axis=0)
    n0 = len(masks) - n1
    with np.errstate(divide="ignore", invalid="ignore"):
        s1 = kept.T @ y
        s0 = (1 - kept).T @ y
        m1, m0 = s1 / n1[:, None], s0 / n0[:, None]
        q1 = kept.T @ y ** 2
        q0 = (1 - kept).T @ y ** 2
        v1 = (q1 - n1[:, None] * m1 ** 2) / (n1[:, None] - 1)
        v0 = (q0 - n0[:, None] * m0 ** 2) / (n0[:, None] - 1)
        effect = m1 - m0
        stderr = np.sqrt(np.clip(v1, 0, None) / n1[:, None] + np.clip(v0, 0, None) / n0[:, None])
    bad = (n1 < 2) | (n0 < 2)
    effect[bad] = np.nan
    stderr[bad] = np.nan
    if np.ndim(values) == 1:
        return effect[:, 0], stderr[:, 0]
    return effect.T, stderr.T


def _estimate_effects(record, values: np.ndarray, estimator: str, name: str):
    """Shared core of banzhaf and class_conditional: returns (scores, stderr, dof, used)."""
    masks = record.masks
    n_masks, n_units = masks.shape
    varies = masks.any(axis=0) & ~masks.all(axis=0)
    if not varies.any():
        raise InputError(f"Estimator {name!r}: every unit is kept in every mask (or dropped in "
                         "every mask), so no effect can be estimated. Record masks with a "
                         "keep probability below 1 (rate > 0).")
    if estimator == "auto":
        estimator = "least_squares" if n_masks >= 2 * (n_units + 1) else "difference"
    if estimator == "difference":
        scores, stderr = difference_of_means(masks, values)
        dof = None
    elif estimator == "least_squares":
        if n_masks <= n_units + 1:
            raise InputError(f"Estimator {name!r}: least squares needs more masks than units + 1 "
                             f"({n_units + 1}); the record has {n_masks}. Record more masks or "
                             "use estimator='difference'.")
        scores, stderr, dof = least_squares(masks[:, varies], values)
        scores, stderr = _expand(scores, varies), _expand(stderr, varies)
    else:
        raise invalid("estimator", "one of 'auto', 'least_squares', 'difference'", estimator)
    if not varies.all():
        warn_nan(np.where(varies, 0.0, np.nan), "these units are kept (or dropped) in every mask "
                 "of the record, so their effect is not identified")
    return scores, stderr, dof, estimator


def _expand(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    out = np.full(values.shape[:-1] + (len(where),), np.nan)
    out[..., where] = values
    return out


def _sites(record) -> SiteTable:
    return SiteTable.from_list(record.sites)


def _importance(method, record, scores, stderr, dof, details) -> Importance:
    ci_low, ci_high, pvalue = normal_intervals(scores, stderr, dof)
    return Importance(method=method, scores=scores, sites=_sites(record), stderr=stderr,
                      ci_low=ci_low, ci_high=ci_high, pvalue=pvalue,
                      qvalue=benjamini_hochberg(pvalue), details=details)


@register
class BanzhafEstimator(Estimator):
    """The q-weighted Banzhaf value of each unit (its main effect at the record's keep
    probability q, a binomial semivalue; Banzhaf at q = 0.5), from a record.

    Args:
        metric: ``"accuracy"`` or ``"log_prob"`` (see :func:`mask_metric`).
        estimator: ``"auto"`` (least squares with at least 2 × (units + 1) masks, else the
            difference of means), ``"least_squares"`` or ``"difference"``.
    """

    name = "banzhaf"

    def __init__(self, metric: str = "accuracy", estimator: str = "auto"):
        self.metric = check_choice("metric", metric, METRICS)
        self.estimator = check_choice("estimator", estimator,
                                       ("auto", "least_squares", "difference"))

    def score(self, source) -> Importance:
        """Estimates from a :class:`~subnet.record.MaskRecord`; see the class docstring."""
        record = check_record(source, self.name)
        values = mask_metric(record, self.metric)
        scores, stderr, dof, used = _estimate_effects(record, values, self.estimator, self.name)
        return _importance(self.name, record, scores, stderr, dof, {
            "metric": self.metric, "estimator": used, "n_masks": record.n_masks,
            "n_examples": record.n_examples, "mean_metric": float(values.mean())})


@register
class RegressionEstimator(Estimator):
    """Least squares (optionally ridge) of the per-mask metric on all mask bits.

    Args:
        metric: ``"accuracy"`` or ``"log_prob"``.
        alpha: Ridge penalty (>= 0); 0 is ordinary least squares, which needs more masks than
            units + 1. A penalty shrinks the coefficients towards 0 (biased, steadier).
    """

    name = "regression"

    def __init__(self, metric: str = "accuracy", alpha: float = 0.0):
        self.metric = check_choice("metric", metric, METRICS)
        self.alpha = check_number("alpha", alpha, low=0.0)

    def score(self, source) -> Importance:
        """Estimates from a :class:`~subnet.record.MaskRecord`; see the class docstring."""
        record = check_record(source, self.name)
        values = mask_metric(record, self.metric)
        if self.alpha == 0:
            scores, stderr, dof, _ = _estimate_effects(record, values, "least_squares",
                                                       self.name)
        else:
            masks = record.masks
            varies = masks.any(axis=0) & ~masks.all(axis=0)
            scores, stderr, dof = least_squares(masks[:, varies], values, self.alpha)
            scores, stderr = _expand(scores, varies), _expand(stderr, varies)
        return _importance(self.name, record, scores, stderr, dof, {
            "metric": self.metric, "alpha": self.alpha, "n_masks": record.n_masks})


@register
class LogisticEstimator(Estimator):
    """Logistic regression of per-(mask, example) correctness on the mask bits.

    With the mask bits as the only covariates this is a binomial model of each mask's count of
    correct examples, fitted by iteratively reweighted least squares. Scores are log-odds
    effects of keeping each unit; standard errors are scaled by the Pearson dispersion
    (quasi-binomial), since examples differ in difficulty.

    Args:
        max_iter: Iterations of IRLS (>= 1).
        tol: Convergence tolerance on the coefficients.
    """

    name = "logistic"

    def __init__(self, max_iter: int = 50, tol: float = 1e-8):
        check_int("max_iter", max_iter, low=1)
        self.max_iter = max_iter
        self.tol = float(tol)

    def score(self, source) -> Importance:
        """Estimates from a :class:`~subnet.record.MaskRecord`; see the class docstring."""
        record = check_record(source, self.name)
        masks = record.masks
        varies = masks.any(axis=0) & ~masks.all(axis=0)
        n = record.n_examples
        successes = mask_metric(record, "accuracy") * n
        x = np.hstack([np.ones((len(masks), 1)), _centered(masks[:, varies],
                                                            record.keep[varies])])
        if len(masks) <= x.shape[1]:
            raise InputError(f"Estimator 'logistic' needs more masks than units + 1 "
                             f"({x.shape[1]}); the record has {len(masks)}.")
        p_hat = np.clip(successes / n, 0.5 / n, 1 - 0.5 / n)
        beta = np.zeros(x.shape[1])
        beta[0] = np.log(p_hat.mean() / (1 - p_hat.mean()))
        converged = False
        for _ in range(self.max_iter):
            eta = x @ beta
            mu = 1.0 / (1.0 + np.exp(-eta))
            weight = n * mu * (1 - mu) + 1e-12
            z = eta + (successes - n * mu) / weight
            xtw = x.T * weight
            new = np.linalg.solve(xtw @ x + 1e-10 * np.eye(x.shape[1]), xtw @ z)
            if np.max(np.abs(new - beta)) < self.tol:
                beta, converged = new, True
                break
            beta = new
        if not converged:
            warnings.warn(f"logistic: IRLS did not converge in {self.max_iter} iterations",
                          RuntimeWarning, stacklevel=2)
        mu = 1.0 / (1.0 + np.exp(-(x @ beta)))
        weight = n * mu * (1 - mu)
        dof = len(masks) - x.shape[1]
        dispersion = max(1.0, float(np.sum((successes - n * mu) ** 2 / (weight + 1e-12)) /
                                    max(dof, 1)))
        cov = np.linalg.pinv((x.T * weight) @ x) * dispersion
        scores = _expand(beta[1:], varies)
        stderr = _expand(np.sqrt(np.clip(np.diag(cov)[1:], 0, None)), varies)
        return _importance(self.name, record, scores, stderr, dof, {
            "scale": "log-odds", "dispersion": dispersion, "converged": converged,
            "n_masks": record.n_masks, "n_examples": n})


@register
class ClassConditionalEstimator(Estimator):
    """Main effects computed separately over the examples of each true class.

    Args:
        metric: ``"accuracy"`` or ``"log_prob"``.
        estimator: As for ``banzhaf``.
        classes: The classes to estimate (default: every class with an example in the record).

    The result's arrays have shape (n_classes, n_units); ``details["classes"]`` lists the
    classes, and ``Importance.for_class(c)`` extracts one.
    """

    name = "class_conditional"

    def __init__(self, metric: str = "accuracy", estimator: str = "auto", classes=None):
        self.metric = check_choice("metric", metric, METRICS)
        self.estimator = check_choice("estimator", estimator,
                                       ("auto", "least_squares", "difference"))
        self.classes = None if classes is None else [int(c) for c in classes]

    def score(self, source) -> Importance:
        """Estimates from a :class:`~subnet.record.MaskRecord`; see the class docstring."""
        record = check_record(source, self.name)
        classes = self.classes or sorted(int(c) for c in np.unique(record.labels))
        values = mask_metric(record, self.metric, classes=classes)
        scores, stderr, dof, used = _estimate_effects(record, values, self.estimator, self.name)
        counts = [int(np.sum(record.labels == c)) for c in classes]
        return _importance(self.name, record, scores, stderr, dof, {
            "metric": self.metric, "estimator": used, "classes": classes,
            "examples_per_class": counts, "n_masks": record.n_masks})


def class_importance(record, metric: str = "accuracy") -> Importance:
    """Class-conditional main effects of every unit (a heatmap's worth): a shortcut for
    ``estimate(record, "class_conditional", metric=metric)``.

    Args:
        record: A :class:`~subnet.record.MaskRecord`.
        metric: ``"accuracy"`` or ``"log_prob"``.

    Returns:
        An :class:`~subnet.importance.core.Importance` with arrays of shape
        (n_classes, n_units).
    """
    return ClassConditionalEstimator(metric=metric).score(record)


def interactions(record, k: int = 20, *, importance: Importance | None = None,
                 metric: str = "accuracy", alpha: float = 0.05) -> nx.Graph:
    """Pairwise interactions among the ``k`` most important units, as a graph.

    Fits the per-mask metric on every unit's (centered) bit plus the products of the centered
    bits of each pair among the top ``k``. Under independent masks a product term is the pair's
    interaction: positive when the two units do more together than their separate effects add up
    to (synergy), negative when either one can stand in for the other (redundancy). Edges are the
    pairs whose Benjamini–Hochberg q-value is below ``alpha``.

    Args:
        record: A :class:`~subnet.record.MaskRecord`.
        k: Number of top units to test pairwise (>= 2).
        importance: Ranking that picks the top units (default: ``banzhaf`` on ``metric``).
        metric: ``"accuracy"`` or ``"log_prob"``.
        alpha: False discovery rate for edges, in (0, 1).

    Returns:
        A ``networkx.Graph``: nodes are global unit indices with attributes ``site``, ``unit``
        (index within the site) and ``score``; edges carry ``weight`` (the interaction),
        ``stderr``, ``pvalue``, ``qvalue`` and ``kind`` (``"synergy"`` or ``"redundancy"``).
        ``graph.graph`` holds the fit's details. Write it with :func:`save_graphml`.

    Raises:
        ValueError: If ``k`` is out of range or the record has too few masks for the fit.
    """
    record = check_record(record, "interactions")
    n_units = record.n_units
    check_int("k", k, low=2, high=n_units, note="the number of units")
    check_fraction("alpha", alpha, low_open=True, high_open=True)
    if importance is None:
        importance = BanzhafEstimator(metric=metric).score(record)
    top = importance.top(int(k))
    masks = record.masks
    keep = record.keep
    values = mask_metric(record, metric)
    centered = _centered(masks, keep)
    pairs = [(a, b) for i, a in enumerate(top) for b in top[i + 1:]]
    products = np.stack([centered[:, a] * centered[:, b] for a, b in pairs], axis=1)
    varies = masks.any(axis=0) & ~masks.all(axis=0)
    main = np.flatnonzero(varies)
    if len(masks) <= len(main) + len(pairs) + 1:
        main = np.array(sorted(set(top.tolist()) & set(main.tolist())))
    if len(masks) <= len(main) + len(pairs) + 1:
        raise InputError(f"interactions: {len(pairs)} pairs and {len(main)} main effects need "
                         f"more than {len(main) + len(pairs) + 1} masks; the record has "
                         f"{len(masks)}. Record more masks or lower k.")
    x = np.hstack([_centered(masks[:, main], keep[main]), products])
    beta, stderr, dof = least_squares(x, values)
    coef, se = beta[len(main):], stderr[len(main):]
    _, _, pvalue = normal_intervals(coef, se, dof)
    qvalue = benjamini_hochberg(pvalue)
    sites = _sites(record)
    site_of = sites.unit_site()
    offsets = sites.offsets
    graph = nx.Graph(metric=metric, k=int(k), alpha=float(alpha), n_masks=int(len(masks)),
                     main_effects=int(len(main)))
    for unit in top:
        s = int(site_of[unit])
        graph.add_node(int(unit), site=sites.names[s], unit=int(unit - offsets[s]),
                       score=float(importance.scores[unit]))
    for (a, b), w, e, p, q in zip(pairs, coef, se, pvalue, qvalue, strict=True):
        if q < alpha:
            graph.add_edge(int(a), int(b), weight=float(w), stderr=float(e), pvalue=float(p),
                           qvalue=float(q), kind="synergy" if w > 0 else "redundancy")
    return graph


def save_graphml(graph: nx.Graph, path: str | os.PathLike) -> Path:
    """Writes an interaction graph as GraphML, atomically.

    Args:
        graph: What :func:`interactions` returned.
        path: The destination file.

    Returns:
        The path written.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        nx.write_graphml(graph, tmp)
    return path

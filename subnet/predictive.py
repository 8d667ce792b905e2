"""How good is a predictor's uncertainty? Metrics of a set of predictive distributions.

The blog's subject is Gal's test-time dropout: several stochastic passes per input, whose spread
is meant to say which predictions to trust. :func:`uncertainty` measures that from the passes'
class probabilities (one pass for a deterministic network):

- **scores** per example, larger = less sure: predictive entropy H[p̄] of the averaged
  prediction p̄; expected entropy E_t H[p_t] (the aleatoric part); mutual information
  H[p̄] − E_t H[p_t] (BALD, the epistemic part, 0 for one pass); and 1 − max_k p̄_k (the softmax
  response);
- **quality of p̄**: accuracy, negative log-likelihood (natural log, probabilities floored at
  1e-12), the multi-class Brier score Σ_k (p̄_k − [y = k])², and the expected calibration error
  over equal-width confidence bins, with the reliability diagram's data;
- **use of the scores**: AUROC of telling wrong predictions from right ones by each score; the
  accuracy among the most certain c of the examples for every coverage c, and its area (the mean
  over coverages); and, given the predictor's probabilities on a second data set (MNIST models on
  Fashion-MNIST, say), the AUROC of telling those out-of-distribution inputs from the test set.

Every metric comes with a percentile bootstrap interval over the examples (the
out-of-distribution set resampled on its own); two predictors measured with the same seed on the
same examples are resampled alike, so :func:`paired_difference` gives their difference a paired
interval. Entropies are in nats.

The predictive distributions of every predictor subnet makes come from one function each, seeded:
:func:`deterministic` (dropout off), :func:`dropout_passes` (the blog's test-time dropout, any
number of passes; its first pass is "one stochastic pass") and :func:`unit_subnetworks` (random
unit masks drawn as a record draws them: an ensemble of subnetworks). An extracted subnetwork is
a model like any other: pass it to the first two. So is the deterministic network with exact
expected pooling after its dropouts, :func:`subnet.expected_pooling` (``deterministic(
expected_pooling(model), x)``), the cheap comparator test-time dropout must beat.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from subnet.errors import InputError, InputTypeError
from subnet.validation import check_fraction, check_int

__all__ = ["SCORES", "Estimate", "Uncertainty", "auroc", "deterministic", "dropout_passes",
           "paired_difference", "uncertainty", "unit_subnetworks"]

#: The per-example uncertainty scores, larger meaning less sure.
SCORES = ("predictive_entropy", "expected_entropy", "mutual_information", "softmax_response")
_FLOOR = 1e-12
_SUM_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A metric with its bootstrap interval (``confidence`` level, percentile method)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict:
        """JSON-ready; an undefined metric (an AUROC without errors to detect) is None."""
        def finite(v):
            return v if math.isfinite(v) else None

        return {"value": finite(self.value), "low": finite(self.low), "high": finite(self.high)}


@dataclasses.dataclass(frozen=True)
class Uncertainty:
    """What :func:`uncertainty` measured.

    Attributes:
        n_examples: Examples (in distribution).
        n_passes: Predictive distributions per example (1: a deterministic predictor).
        n_classes: Classes.
        metrics: {name: :class:`Estimate`}: ``accuracy``, ``nll``, ``brier``, ``ece``, the mean
            of each score (``mean_<score>``), ``error_auroc_<score>`` and
            ``coverage_area_<score>`` for each score, and ``ood_auroc_<score>`` when an
            out-of-distribution set was given.
        reliability: The reliability diagram: ``edges`` (bins + 1), and per bin ``count``,
            ``confidence`` (mean max probability) and ``accuracy`` (None for an empty bin).
        coverage: {score: accuracy among the most certain k examples, for k = 1 .. n,
            subsampled to at most 101 points} with ``fractions`` (k / n).
        scores: {score: float64 (n_examples,)}; ``ood_scores`` likewise for the second set.
        correct: bool (n_examples,), whether the averaged prediction is right.
        confidence: Bootstrap interval level.
        resamples: Bootstrap resamples.
        draws: With ``keep_draws``, {metric: float64 (resamples,)}, every resample's value.
            The resamples are a function of the seed and the numbers of examples only, so two
            predictors measured with the same seed on the same examples are resampled alike:
            the difference of their draws is a paired bootstrap (:func:`paired_difference`).
    """

    n_examples: int
    n_passes: int
    n_classes: int
    metrics: dict
    reliability: dict
    coverage: dict
    scores: dict
    ood_scores: dict | None
    correct: np.ndarray
    confidence: float
    resamples: int
    draws: dict | None = None

    def to_dict(self, per_example: bool = False) -> dict:
        """JSON-ready summary; with ``per_example``, the scores and outcomes too."""
        out = {"n_examples": self.n_examples, "n_passes": self.n_passes,
               "n_classes": self.n_classes, "confidence": self.confidence,
               "resamples": self.resamples,
               "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
               "reliability": self.reliability, "coverage": self.coverage}
        if per_example:
            out["scores"] = {k: v.tolist() for k, v in self.scores.items()}
            out["correct"] = self.correct.tolist()
            if self.ood_scores is not None:
                out["ood_scores"] = {k: v.tolist() for k, v in self.ood_scores.items()}
        return out


def _check_probabilities(value, name: str, classes: int | None = None) -> np.ndarray:
    if isinstance(value, (str, bytes)) or value is None:
        raise InputTypeError(f"`{name}` must be an array of class probabilities. Received: "
                             f"{type(value).__name__}")
    p = np.asarray(value, dtype=np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or 0 in p.shape:
        raise InputError(f"`{name}` must have shape (passes, examples, classes) or (examples, "
                         f"classes), none empty. Received shape {np.shape(value)}.")
    if classes is not None and p.shape[-1] != classes:
        raise InputError(f"`{name}` has {p.shape[-1]} classes, the test set's predictions "
                         f"{classes}.")
    if not np.isfinite(p).all() or (p < 0).any():
        raise InputError(f"`{name}` must hold finite, non-negative probabilities.")
    sums = p.sum(axis=-1)
    worst = float(np.max(np.abs(sums - 1.0)))
    if worst > _SUM_TOLERANCE:
        raise InputError(f"`{name}` must hold probabilities summing to 1 over the classes; a "
                         f"row sums to {1.0 + worst:.4g} (or {1.0 - worst:.4g}). Pass softmax "
                         "outputs, not logits.")
    return p


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of telling ``positive`` scores from ``negative`` ones (larger
    scores meaning positive): the probability that a random positive outscores a random
    negative, ties counting half (the Mann-Whitney statistic). NaN if either set is empty."""
    from scipy.stats import rankdata

    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if not len(positive) or not len(negative):
        return math.nan
    ranks = rankdata(np.concatenate([positive, negative]))
    u = ranks[:len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def _entropy(p: np.ndarray) -> np.ndarray:
    return -np.sum(p * np.log(np.maximum(p, _FLOOR)), axis=-1)


def _scores(p: np.ndarray) -> dict[str, np.ndarray]:
    mean = p.mean(axis=0)
    predictive = _entropy(mean)
    expected = _entropy(p).mean(axis=0)
    return {"predictive_entropy": predictive, "expected_entropy": expected,
            "mutual_information": np.maximum(predictive - expected, 0.0),
            "softmax_response": 1.0 - mean.max(axis=-1)}


def _bin(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: [b / bins, (b + 1) / bins), the last one closed."""
    return np.clip(np.floor(confidence * bins).astype(np.int64), 0, bins - 1)


def _ece(confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray) -> float:
    which = _bin(confidence, len(edges) - 1)
    conf = np.bincount(which, weights=confidence, minlength=len(edges) - 1)
    acc = np.bincount(which, weights=correct.astype(float), minlength=len(edges) - 1)
    return float(np.sum(np.abs(acc - conf)) / len(confidence))


def _coverage_curve(score: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Accuracy among the k most certain examples (smallest scores), k = 1 .. n; ties in the
    score are broken by averaging over them (order-free)."""
    n = len(score)
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    cumulative = np.cumsum(correct[order].astype(float))
    # Within a run of tied scores every order is equally likely: use the run's mean accuracy.
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    ends = np.r_[starts[1:], n]
    before = np.r_[0.0, cumulative[ends[:-1] - 1]]
    rate = (cumulative[ends - 1] - before) / (ends - starts)
    run = np.repeat(np.arange(len(starts)), ends - starts)
    expected = before[run] + rate[run] * (np.arange(n) - starts[run] + 1)
    return expected / np.arange(1, n + 1)


def _point_metrics(mean, scores, labels, edges, ood_scores=None) -> dict[str, float]:
    predicted = mean.argmax(axis=-1)
    correct = predicted == labels
    n = len(labels)
    onehot = np.zeros_like(mean)
    onehot[np.arange(n), labels] = 1.0
    out = {"accuracy": float(correct.mean()),
           "nll": float(-np.mean(np.log(np.maximum(mean[np.arange(n), labels], _FLOOR)))),
           "brier": float(np.mean(np.sum((mean - onehot) ** 2, axis=-1))),
           "ece": _ece(mean.max(axis=-1), correct, edges)}
    for name, score in scores.items():
        out[f"mean_{name}"] = float(score.mean())
        out[f"error_auroc_{name}"] = auroc(score[~correct], score[correct])
        out[f"coverage_area_{name}"] = float(_coverage_curve(score, correct).mean())
        if ood_scores is not None:
            out[f"ood_auroc_{name}"] = auroc(ood_scores[name], score)
    return out


def _weighted_auroc(positive_groups, positive_weights, negative_groups, negative_weights,
                    groups: int) -> float:
    """:func:`auroc` of a weighted sample: each score given as its tie group (the rank of its
    value among the distinct values of both sets) with a weight (how often a resample drew it).
    The Mann-Whitney count with ties counting half, in O(n) once the groups are known."""
    pos = np.bincount(positive_groups, weights=positive_weights, minlength=groups)
    neg = np.bincount(negative_groups, weights=negative_weights, minlength=groups)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos == 0 or total_neg == 0:
        return math.nan
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)) / (total_pos * total_neg))


def _weighted_coverage_area(groups, weights, correct_weights, count: int, harmonic) -> float:
    """The mean of :func:`_coverage_curve` for a weighted sample (scores as tie groups in
    increasing order): within a run of tied scores the accuracy is the run's mean, so the sum
    of expected-correct / k over the run's positions has a closed form in harmonic numbers."""
    size = np.bincount(groups, weights=weights, minlength=count)
    right = np.bincount(groups, weights=correct_weights, minlength=count)
    ends = np.cumsum(size)
    starts = ends - size
    before = np.cumsum(right) - right
    drawn = size > 0
    rate = right[drawn] / size[drawn]
    starts, ends, before = starts[drawn].astype(np.int64), ends[drawn].astype(np.int64), \
        before[drawn]
    total = np.sum((before - rate * starts) * (harmonic[ends] - harmonic[starts]) +
                   rate * size[drawn])
    return float(total / ends[-1])


class _Resampled:
    """:func:`_point_metrics` of bootstrap resamples given as counts per example.

    The sorts (tie groups of every score, in distribution and with the out-of-distribution
    set) are done once; each resample then costs a few weighted counts, O(n), instead of the
    sorts of every AUROC and coverage curve. Equal to :func:`_point_metrics` on the resample
    drawn out (tested), up to float rounding."""

    def __init__(self, mean, scores, labels, edges, ood_scores=None):
        n = len(labels)
        self.n, self.bins = n, len(edges) - 1
        correct = mean.argmax(axis=-1) == labels
        self.correct = correct.astype(float)
        onehot = np.zeros_like(mean)
        onehot[np.arange(n), labels] = 1.0
        self.nll = -np.log(np.maximum(mean[np.arange(n), labels], _FLOOR))
        self.brier = np.sum((mean - onehot) ** 2, axis=-1)
        self.confidence = mean.max(axis=-1)
        self.which = _bin(self.confidence, self.bins)
        self.harmonic = np.r_[0.0, np.cumsum(1.0 / np.arange(1, n + 1))]
        self.scores = {}
        for name, score in scores.items():
            values, groups = np.unique(score, return_inverse=True)
            entry = {"score": score, "groups": groups, "count": len(values)}
            if ood_scores is not None:
                values, both = np.unique(np.concatenate([score, ood_scores[name]]),
                                         return_inverse=True)
                entry.update(inside=both[:n], outside=both[n:], both=len(values))
            self.scores[name] = entry
        self.ood = ood_scores is not None

    def __call__(self, weights, ood_weights=None) -> dict[str, float]:
        n = self.n
        right = weights * self.correct
        wrong = weights - right
        conf = np.bincount(self.which, weights=weights * self.confidence, minlength=self.bins)
        acc = np.bincount(self.which, weights=right, minlength=self.bins)
        out = {"accuracy": float(right.sum() / n), "nll": float(np.sum(weights * self.nll) / n),
               "brier": float(np.sum(weights * self.brier) / n),
               "ece": float(np.sum(np.abs(acc - conf)) / n)}
        for name, e in self.scores.items():
            out[f"mean_{name}"] = float(np.sum(weights * e["score"]) / n)
            out[f"error_auroc_{name}"] = _weighted_auroc(e["groups"], wrong, e["groups"], right,
                                                         e["count"])
            out[f"coverage_area_{name}"] = _weighted_coverage_area(
                e["groups"], weights, right, e["count"], self.harmonic)
            if self.ood:
                out[f"ood_auroc_{name}"] = _weighted_auroc(e["outside"], ood_weights,
                                                           e["inside"], weights, e["both"])
        return out


def uncertainty(probabilities, labels, *, ood=None, bins: int = 15, resamples: int = 1000,
                confidence: float = 0.95, seed: int = 0,
                keep_draws: bool = False) -> Uncertainty:
    """Measures the uncertainty of a predictor from its predictive distributions.

    Args:
        probabilities: Class probabilities, float (passes, examples, classes) (the passes of a
            test-time-dropout ensemble, members of any ensemble) or (examples, classes) for one
            deterministic prediction per example. Each row must sum to 1 (within 1e-3).
        labels: True classes, int (examples,).
        ood: Optional probabilities of the same predictor on out-of-distribution inputs, shaped
            like ``probabilities`` (the same passes and classes; any number of examples).
        bins: Equal-width confidence bins for the calibration error and reliability diagram.
        resamples: Bootstrap resamples for the intervals (0: intervals equal the value).
        confidence: Interval level in (0, 1).
        seed: Seeds the bootstrap.
        keep_draws: Keep every resample's metrics (``Uncertainty.draws``), for paired
            comparisons between predictors.

    Returns:
        An :class:`Uncertainty`.

    Raises:
        InputError: If the probabilities are not probabilities, shapes disagree, labels are out
            of range, or a setting is invalid (each named).
    """
    p = _check_probabilities(probabilities, "probabilities")
    passes, n, classes = p.shape
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"`labels` must be ints of shape ({n},), one per example. Received "
                         f"shape {y.shape}, dtype {y.dtype}.")
    if y.min() < 0 or y.max() >= classes:
        raise InputError(f"`labels` must lie in [0, {classes}). Received values in "
                         f"[{y.min()}, {y.max()}].")
    q = None
    if ood is not None:
        q = _check_probabilities(ood, "ood", classes)
        if q.shape[0] != passes:
            raise InputError(f"`ood` has {q.shape[0]} passes, `probabilities` {passes}: give the "
                             "same predictor's passes on both.")
    check_int("bins", bins, low=1)
    check_int("resamples", resamples, low=0)
    check_fraction("confidence", confidence, low_open=True, high_open=True)
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    mean = p.mean(axis=0)
    scores = _scores(p)
    ood_scores = _scores(q) if q is not None else None
    point = _point_metrics(mean, scores, y, edges, ood_scores)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in point}
    resampled = _Resampled(mean, scores, y, edges, ood_scores) if resamples else None
    for _ in range(int(resamples)):
        weights = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        ood_weights = None
        if q is not None:
            m = q.shape[1]
            ood_weights = np.bincount(rng.integers(0, m, m), minlength=m).astype(float)
        for k, v in resampled(weights, ood_weights).items():
            draws[k].append(v)
    alpha = (1.0 - float(confidence)) / 2.0
    metrics = {}
    for k, value in point.items():
        values = np.asarray(draws[k], float)
        values = values[np.isfinite(values)]
        low, high = (np.quantile(values, [alpha, 1 - alpha]) if len(values) else
                     (value, value))
        metrics[k] = Estimate(value, float(low), float(high))
    correct = mean.argmax(axis=-1) == y
    top = mean.max(axis=-1)
    which = _bin(top, int(bins))
    counts = np.bincount(which, minlength=int(bins))
    reliability = {
        "edges": edges.tolist(), "count": counts.tolist(),
        "confidence": [float(top[which == b].mean()) if counts[b] else None
                       for b in range(int(bins))],
        "accuracy": [float(correct[which == b].mean()) if counts[b] else None
                     for b in range(int(bins))]}
    points = np.unique(np.linspace(0, n - 1, min(n, 101)).round().astype(int))
    coverage = {"fractions": ((points + 1) / n).tolist()}
    for name, score in scores.items():
        coverage[name] = _coverage_curve(score, correct)[points].tolist()
    return Uncertainty(n_examples=n, n_passes=passes, n_classes=classes, metrics=metrics,
                       reliability=reliability, coverage=coverage, scores=scores,
                       ood_scores=ood_scores, correct=correct, confidence=float(confidence),
                       resamples=int(resamples),
                       draws={k: np.asarray(v, float) for k, v in draws.items()}
                       if keep_draws else None)


def paired_difference(a: Uncertainty, b: Uncertainty, metric: str) -> Estimate:
    """``metric`` of ``a`` minus that of ``b``, with a paired percentile bootstrap interval.

    Both must come from :func:`uncertainty` with ``keep_draws=True``, the same seed, resamples
    and numbers of examples (in and out of distribution): then resample i drew the same
    examples for both, and the interval is over the differences of their draws.

    Args:
        a: The first predictor's :class:`Uncertainty`.
        b: The second's.
        metric: A name in both ``metrics`` (``"nll"``, ``"error_auroc_predictive_entropy"``).

    Returns:
        An :class:`Estimate` of a - b at ``a``'s confidence level (NaN where undefined).

    Raises:
        InputError: If draws are missing, or the two were not resampled alike.
    """
    for name, u in (("a", a), ("b", b)):
        if not isinstance(u, Uncertainty) or u.draws is None:
            raise InputError(f"`{name}` must be an Uncertainty measured with keep_draws=True.")
    if metric not in a.metrics or metric not in b.metrics:
        raise InputError(f"Unknown metric {metric!r}; both have: "
                         f"{sorted(set(a.metrics) & set(b.metrics))}.")
    same = (a.resamples == b.resamples and a.n_examples == b.n_examples and
            (a.ood_scores is None) == (b.ood_scores is None) and
            (a.ood_scores is None or len(next(iter(a.ood_scores.values()))) ==
             len(next(iter(b.ood_scores.values())))))
    if not same:
        raise InputError("`a` and `b` were not resampled alike: measure both with the same "
                         "seed, resamples and examples (and out-of-distribution examples).")
    value = a.metrics[metric].value - b.metrics[metric].value
    diff = a.draws[metric] - b.draws[metric]
    diff = diff[np.isfinite(diff)]
    if not len(diff):
        return Estimate(value, value, value)
    alpha = (1.0 - a.confidence) / 2.0
    low, high = np.quantile(diff, [alpha, 1 - alpha])
    return Estimate(value, float(low), float(high))


# ------------------------------------------------------------------------------------ predictors

def deterministic(model, x, *, batch_size: int = 1000) -> np.ndarray:
    """The model's class probabilities with every dropout off, float32 (1, n, classes)."""
    from subnet.models import check_examples, outputs_probabilities, with_dropout
    from subnet.runtime import keras

    x, _, _ = check_examples(model, x, np.zeros(len(x), np.int64))
    off = with_dropout(model, on=False)
    out = np.concatenate([np.asarray(off(x[a:a + batch_size], training=False), np.float32)
                          for a in range(0, len(x), batch_size)])
    if not outputs_probabilities(model):
        out = keras.ops.convert_to_numpy(keras.ops.softmax(out)).astype(np.float32)
    return out[None]


def dropout_passes(model, x, passes: int, *, seed: int = 0, rates=None,
                   batch_size: int = 1000) -> np.ndarray:
    """``passes`` passes with the model's own dropout on at test time, as the blog ran it
    (:func:`subnet.mc_dropout`), float32 (passes, n, classes). The same seed gives the same
    passes, and the first k passes of a run are those of a run with ``passes=k``."""
    from subnet.engine.mc import mc_dropout

    result = mc_dropout(model, x, np.zeros(len(x), np.int64), samples=passes, rates=rates,
                        seed=seed, batch_size=batch_size)
    return np.asarray(result.probabilities, np.float32)


def unit_subnetworks(model, x, n: int, *, rate=None, seed: int = 0,
                     backend: str = "auto", rescale: bool = True) -> np.ndarray:
    """An ensemble of ``n`` random unit subnetworks: masks drawn as :func:`subnet.record_masks`
    draws them (mask i a function of (seed, i), at ``rate``: None the model's own dropout
    rates, as there; kept units rescaled by 1 / keep unless ``rescale`` is False, as a
    calibrated :class:`~subnet.keep.KeepProbabilities` may say), float32
    (n, examples, classes)."""
    from subnet.engine import make_backend
    from subnet.engine.chain import analyse_chain
    from subnet.masks import sample_masks
    from subnet.models import check_examples

    check_int("n", n, low=1)
    x, _, _ = check_examples(model, x, np.zeros(len(x), np.int64))
    chain = analyse_chain(model, rate)
    masks = sample_masks(chain.table.unit_keep(), int(seed), range(int(n)))
    return make_backend(chain, backend, rescale=rescale).probabilities(x, masks).astype(
        np.float32)

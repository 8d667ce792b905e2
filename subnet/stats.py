"""Paired comparisons of two classifiers on the same test examples.

Two subnetworks measured on one test set are not independent samples: most examples are right
(or wrong) for both. A paired test looks only at the examples on which they differ, which is why
it can resolve a 0.1-point gap that two unpaired confidence intervals cannot. Two tests are here:

- :func:`mcnemar`: the exact McNemar test (a two-sided binomial test on the discordant pairs),
  the standard for "are these two classifiers equally accurate on this test set?"
  (Dietterich 1998);
- :func:`paired_bootstrap`: a bootstrap over examples of the accuracy difference, with a
  percentile confidence interval; it extends to any per-example metric and to outcomes averaged
  over several seeds of one method (pass the per-example share of seeds that got it right).

Both take per-example outcomes as numpy arrays and return a :class:`PairedTest`.

Where each method was run on several parents (training seeds), the parent is the unit that
varies between repetitions of the experiment, and a test on images alone (outcomes averaged over
parents) takes a difference that one parent carries for one that all share.
:func:`paired_over_parents` tests the per-parent differences (a paired t-test whose unit is the
parent) with an interval from a bootstrap over parents and, within each, images; :func:`holm`
corrects a family of such tests for multiplicity (Holm 1979).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from subnet.errors import InputError, InputTypeError
from subnet.validation import check_fraction, check_int

__all__ = ["PairedTest", "holm", "mcnemar", "paired_bootstrap", "paired_over_parents"]


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """The result of a paired comparison of A and B on the same examples.

    Attributes:
        test: ``"mcnemar"`` or ``"paired_bootstrap"``.
        n: Examples compared.
        accuracy_a: Mean outcome of A (a fraction).
        accuracy_b: Mean outcome of B (a fraction).
        difference: ``accuracy_a - accuracy_b`` (a fraction; positive when A is better).
        pvalue: Two-sided p-value of "A and B are equally accurate".
        ci_low: Lower end of the 95 % interval of the difference (bootstrap only, else None).
        ci_high: Upper end of it (bootstrap only, else None).
        only_a: Examples A gets right and B wrong (McNemar only, else None).
        only_b: Examples B gets right and A wrong (McNemar only, else None).
        differences: Per-parent differences of accuracy (:func:`paired_over_parents` only,
            else None).
    """

    test: str
    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    pvalue: float
    ci_low: float | None = None
    ci_high: float | None = None
    only_a: int | None = None
    only_b: int | None = None
    differences: tuple[float, ...] | None = None

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        data = dataclasses.asdict(self)
        if self.differences is None:
            del data["differences"]  # the fields every test had before
        else:
            data["differences"] = list(self.differences)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PairedTest:
        """The inverse of :meth:`to_dict`."""
        data = dict(data)
        if data.get("differences") is not None:
            data["differences"] = tuple(data["differences"])
        return cls(**data)


def _outcomes(a, b, *, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, value in (("a", a), ("b", b)):
        array = np.asarray(value)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or
                                         array.dtype == bool):
            raise InputTypeError(f"`{name}` must be per-example outcomes (bool, 0/1 or "
                                 f"fractions). Received dtype {array.dtype}")
        array = array.astype(np.float64)
        if array.ndim != 1 or array.size == 0:
            raise InputError(f"`{name}` must be a non-empty 1-D array of per-example outcomes. "
                             f"Received shape {array.shape}")
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
            raise InputError(f"`{name}` must hold outcomes in [0, 1] (1 = right).")
        if binary and not np.all((array == 0) | (array == 1)):
            raise InputError(f"`{name}` must hold 0/1 outcomes for McNemar's test; for "
                             "outcomes averaged over seeds use paired_bootstrap.")
        arrays.append(array)
    if arrays[0].shape != arrays[1].shape:
        raise InputError(f"`a` and `b` must cover the same examples. Received {arrays[0].size} "
                         f"and {arrays[1].size} outcomes")
    return arrays[0], arrays[1]


def _check_resampling(resamples, confidence, most: int) -> None:
    check_int("resamples", resamples, low=100, high=most)
    check_fraction("confidence", confidence, low_open=True, high_open=True)


def mcnemar(a, b) -> PairedTest:
    """The exact McNemar test of two classifiers on the same examples.

    Under "equally accurate", each example that exactly one of them gets right is A's with
    probability 1/2; the p-value is the two-sided binomial probability of a split at least as
    uneven as the one observed (1.0 when they never differ).

    Args:
        a: A's outcomes, shape (n,), bool or 0/1: whether A got each example right.
        b: B's outcomes on the same examples, same shape.

    Returns:
        A :class:`PairedTest` with ``only_a``, ``only_b`` and the p-value.

    Raises:
        InputError: If the outcomes are not 0/1, not 1-D, empty, or of different lengths.
    """
    from scipy.stats import binomtest

    a, b = _outcomes(a, b, binary=True)
    only_a = int(np.sum((a == 1) & (b == 0)))
    only_b = int(np.sum((a == 0) & (b == 1)))
    discordant = only_a + only_b
    pvalue = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return PairedTest(test="mcnemar", n=int(a.size), accuracy_a=float(a.mean()),
                      accuracy_b=float(b.mean()), difference=float(a.mean() - b.mean()),
                      pvalue=pvalue, only_a=only_a, only_b=only_b)


def paired_bootstrap(a, b, *, resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> PairedTest:
    """A bootstrap over examples of the difference in mean outcome between A and B.

    Examples are resampled with replacement, the same indices for A and B, so the pairing is
    kept. The interval is the percentile interval of the resampled differences; the two-sided
    p-value is twice the smaller share of resampled differences on either side of zero (the
    smallest it can report is ``1 / resamples``).

    Args:
        a: A's outcomes, shape (n,), in [0, 1]: 0/1, or the share of A's seeds that got each
            example right.
        b: B's outcomes on the same examples, same shape.
        resamples: Bootstrap resamples (>= 100).
        seed: Seed of the resampling.
        confidence: Coverage of the interval, in (0, 1).

    Returns:
        A :class:`PairedTest` with ``ci_low``, ``ci_high`` and the p-value.

    Raises:
        InputError: If the outcomes are not in [0, 1], not 1-D, empty or of different lengths,
            or a setting is out of range.
    """
    a, b = _outcomes(a, b, binary=False)
    _check_resampling(resamples, confidence, 10_000_000)
    rng = np.random.default_rng(seed)
    difference = a - b
    n = difference.size
    means = np.empty(int(resamples))
    block = max(1, 2_000_000 // n)  # bounded memory: at most ~2M indices at once
    for start in range(0, int(resamples), block):
        stop = min(int(resamples), start + block)
        index = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = difference[index].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    below, above = np.mean(means <= 0), np.mean(means >= 0)
    pvalue = float(min(1.0, max(2 * min(below, above), 1 / resamples)))
    return PairedTest(test="paired_bootstrap", n=int(n), accuracy_a=float(a.mean()),
                      accuracy_b=float(b.mean()), difference=float(difference.mean()),
                      pvalue=pvalue, ci_low=float(low), ci_high=float(high))


def paired_over_parents(a, b, *, resamples: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> PairedTest:
    """A paired test of A against B whose unit is the parent (training seed).

    Each parent gives one paired difference of accuracy (A's and B's subnetworks of that parent,
    on the same examples); the p-value is the two-sided paired t-test on those differences
    (``parents - 1`` degrees of freedom: with three parents only a difference that every parent
    shows, and that varies little between them, can be significant). The interval is a
    percentile interval from a two-level bootstrap: parents resampled with replacement, then
    examples, the same indices for A and B.

    Args:
        a: A's outcomes, shape (parents, n), 0/1 (or fractions in [0, 1]), row i from parent i.
        b: B's outcomes, same shape, the same parents in the same order.
        resamples: Bootstrap resamples of the interval (>= 100).
        seed: Seed of the resampling.
        confidence: Coverage of the interval, in (0, 1).

    Returns:
        A :class:`PairedTest` with ``test="paired_t_over_parents"``, ``n`` the number of
        parents, the per-parent ``differences``, the interval and the p-value (1.0 with one
        parent, or when every difference is zero; 0.0 when they are equal and not zero).

    Raises:
        InputError: If the outcomes are not 2-D of one shape, not in [0, 1], or a setting is out
            of range.
    """
    from scipy.stats import ttest_1samp

    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise InputError(f"`a` and `b` must be outcomes of shape (parents, examples), the same "
                         f"for both. Received shapes {a.shape} and {b.shape}")
    rows = [_outcomes(row_a, row_b, binary=False) for row_a, row_b in zip(a, b, strict=True)]
    a = np.stack([r[0] for r in rows])
    b = np.stack([r[1] for r in rows])
    _check_resampling(resamples, confidence, 1_000_000)
    parents, n = a.shape
    differences = a.mean(axis=1) - b.mean(axis=1)
    if parents < 2 or np.all(differences == 0):
        pvalue = 1.0
    elif np.all(differences == differences[0]):
        pvalue = 0.0  # no spread between parents: the t statistic is infinite
    else:
        pvalue = float(ttest_1samp(differences, 0.0).pvalue)
    rng = np.random.default_rng(seed)
    per_example = a - b
    means = np.empty(int(resamples))
    for i in range(int(resamples)):
        chosen = rng.integers(0, parents, size=parents)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=parents)  # examples, per parent
        means[i] = float(np.mean(np.sum(per_example[chosen] * counts, axis=1) / n))
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedTest(test="paired_t_over_parents", n=int(parents),
                      accuracy_a=float(a.mean()), accuracy_b=float(b.mean()),
                      difference=float(differences.mean()), pvalue=pvalue, ci_low=float(low),
                      ci_high=float(high), differences=tuple(float(d) for d in differences))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values for a family of tests (Holm 1979).

    The k-th smallest of m p-values is multiplied by ``m - k + 1``, made non-decreasing in that
    order and capped at 1; rejecting where the adjusted value is at most alpha controls the
    family-wise error rate at alpha.

    Args:
        pvalues: The family's p-values, 1-D, in [0, 1].

    Returns:
        The adjusted p-values, float64, in the input's order.

    Raises:
        InputError: If a p-value is outside [0, 1] or not finite.
    """
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(p)) or (p.size and (p.min() < 0 or p.max() > 1)):
        raise InputError("`pvalues` must be finite and in [0, 1].")
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out

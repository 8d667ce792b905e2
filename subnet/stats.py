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
"""

from __future__ import annotations

import dataclasses

import numpy as np

from subnet.errors import InputError, InputTypeError

__all__ = ["PairedTest", "mcnemar", "paired_bootstrap"]


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

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PairedTest:
        """The inverse of :meth:`to_dict`."""
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
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or \
            not 100 <= resamples <= 10_000_000:
        raise InputError(f"Invalid value for argument `resamples`: expected an int in "
                         f"[100, 10,000,000]. Received: resamples={resamples!r}")
    if not 0 < confidence < 1:
        raise InputError(f"Invalid value for argument `confidence`: expected a fraction in "
                         f"(0, 1). Received: confidence={confidence!r}")
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

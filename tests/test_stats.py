"""Paired tests of two classifiers on the same examples, on hand-made outcomes."""

import numpy as np
import pytest

from subnet.errors import InputError
from subnet.stats import PairedTest, mcnemar, paired_bootstrap


def test_mcnemar_counts_only_the_examples_on_which_they_differ():
    agree = np.ones(990, bool)
    a = np.concatenate([agree, np.ones(10, bool)])
    b = np.concatenate([agree, np.zeros(10, bool)])
    result = mcnemar(a, b)
    assert (result.only_a, result.only_b, result.n) == (10, 0, 1000)
    assert result.pvalue == pytest.approx(2 * 0.5 ** 10)  # exact two-sided binomial
    assert result.difference == pytest.approx(0.01)
    assert mcnemar(b, a).pvalue == pytest.approx(result.pvalue)


def test_mcnemar_of_an_even_split_or_no_difference_is_one():
    a = np.array([1, 0] * 5 + [1] * 20)
    b = np.array([0, 1] * 5 + [1] * 20)
    assert mcnemar(a, b).pvalue == pytest.approx(1.0)
    assert mcnemar(a, a).pvalue == 1.0 and mcnemar(a, a).only_a == 0


def test_mcnemar_matches_a_hand_computed_binomial_tail():
    # 7 against 2 discordant pairs: P(X <= 2) + P(X >= 7), X ~ Bin(9, 1/2) = 2 * 46 / 512.
    a = np.array([1] * 7 + [0] * 2 + [1] * 50)
    b = np.array([0] * 7 + [1] * 2 + [1] * 50)
    assert mcnemar(a, b).pvalue == pytest.approx(2 * (1 + 9 + 36) / 512)


def test_paired_bootstrap_finds_a_clear_difference_and_none_where_there_is_none():
    a = np.ones(400)
    b = np.tile([1.0, 0.0], 200)
    clear = paired_bootstrap(a, b, resamples=2000, seed=1)
    assert clear.difference == pytest.approx(0.5)
    assert clear.ci_low < 0.5 < clear.ci_high and clear.ci_low > 0.4
    assert clear.pvalue == pytest.approx(1 / 2000)
    same = paired_bootstrap(b, b, resamples=500)
    assert same.pvalue == 1.0 and same.ci_low == same.ci_high == 0.0


def test_paired_bootstrap_takes_outcomes_averaged_over_seeds_and_is_seeded():
    rng = np.random.default_rng(0)
    a, b = rng.random(300), rng.random(300)
    first = paired_bootstrap(a, b, resamples=500, seed=3)
    assert first == paired_bootstrap(a, b, resamples=500, seed=3)
    assert PairedTest.from_dict(first.to_dict()) == first


@pytest.mark.parametrize("a, b, match", [
    ([1, 0], [1], "same examples"),
    ([1, 2], [1, 0], r"\[0, 1\]"),
    ([], [], "non-empty"),
    ([[1]], [[1]], "1-D"),
    ([0.5, 1], [1, 1], "0/1 outcomes"),
])
def test_bad_outcomes_are_one_line_errors(a, b, match):
    with pytest.raises(InputError, match=match):
        mcnemar(a, b)


def test_bad_bootstrap_settings_are_refused():
    with pytest.raises(InputError, match="resamples"):
        paired_bootstrap([1, 0], [0, 1], resamples=5)
    with pytest.raises(InputError, match="confidence"):
        paired_bootstrap([1, 0], [0, 1], confidence=1.5)


def test_holm_by_hand():
    from subnet.stats import holm

    # sorted 0.01, 0.02, 0.04, 0.30 times 4, 3, 2, 1 -> 0.04, 0.06, 0.08, 0.30 (monotone)
    np.testing.assert_allclose(holm([0.04, 0.01, 0.30, 0.02]), [0.08, 0.04, 0.30, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.4]), [0.8, 0.8])  # made non-decreasing
    assert holm([0.9, 0.9, 0.9]).max() == 1.0
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        holm([0.1, 1.5])


def test_paired_over_parents_takes_the_parent_as_the_unit():
    """Three parents whose differences are +0.28, +0.12 and -0.02 points (the issue's example
    that an image bootstrap over averaged outcomes called p 0.0044) are not a significant
    difference over parents; the same differences with no spread in sign and size are."""
    from scipy.stats import ttest_1samp

    from subnet.stats import paired_over_parents

    n = 10_000
    rng = np.random.default_rng(0)
    b = (rng.random((3, n)) < 0.99).astype(np.int8)
    a = b.copy()
    for parent, gained in enumerate((28, 12, -2)):  # images gained by A, per parent
        wrong = np.flatnonzero(b[parent] == 0) if gained > 0 else np.flatnonzero(b[parent] == 1)
        a[parent, wrong[:abs(gained)]] = 1 if gained > 0 else 0
    test = paired_over_parents(a, b, resamples=500)
    assert test.test == "paired_t_over_parents" and test.n == 3
    np.testing.assert_allclose(test.differences, [0.0028, 0.0012, -0.0002])
    assert test.pvalue == pytest.approx(ttest_1samp([0.0028, 0.0012, -0.0002], 0).pvalue)
    assert test.pvalue > 0.05
    assert test.ci_low < 0 < test.ci_high or test.ci_low < test.difference < test.ci_high
    again = paired_over_parents(a, b, resamples=500)
    assert again == test  # seeded
    same = paired_over_parents(b, b, resamples=100)
    assert same.pvalue == 1.0 and same.difference == 0.0
    with pytest.raises(ValueError, match="shape \\(parents, examples\\)"):
        paired_over_parents(a[0], b[0])
    from subnet.stats import PairedTest

    assert PairedTest.from_dict(test.to_dict()) == test

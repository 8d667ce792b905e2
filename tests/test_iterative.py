"""Iterative mask-statistics pruning: nested keep-sets within budget, exact extraction."""

import numpy as np
import pytest

from subnet.extraction import Budget, accuracy, extract
from subnet.iterative import iterative_keep_sets
from tests.helpers import RATES

FAST = dict(steps_per_halving=1, n_masks=40, progress=False)


@pytest.mark.parametrize("name", ["conv", "conv_bn"])
def test_keep_sets_are_nested_within_budget_and_extract(trained, mnist, name):
    model = trained[name]
    x, y = mnist.x_train[-300:], mnist.y_train[-300:]
    found = iterative_keep_sets(model, x, y, [0.5, 0.25], seed=3, **FAST)
    assert list(found) == [0.5, 0.25]
    half, quarter = found[0.5], found[0.25]
    for budget, keep in found.items():
        assert keep.flops <= budget * keep.dense_flops
        assert keep.budget == Budget.flops(budget)
        assert all(bits.any() for bits in keep.keep.values())
    for site in half.sites.names:  # each budget's subnetwork lies inside the larger one
        assert not (quarter[site] & ~half[site]).any()
    # One extraction from the full model, with the cumulative rescaling, is the subnetwork the
    # steps built (extract() verifies it against the masked model).
    small, _ = extract(model, quarter, scale=quarter.compensation, check_x=mnist.x_test[:16])
    assert 0.0 <= accuracy(small, mnist.x_test, mnist.y_test) <= 1.0
    assert small.count_params() == quarter.params
    # Same seed, same answer.
    again = iterative_keep_sets(model, x, y, [0.25], seed=3, **FAST)[0.25]
    for site in quarter.sites.names:
        np.testing.assert_array_equal(again[site], quarter[site])


def test_parameter_budgets_and_bad_input(trained, mnist):
    model = trained["dense"]
    x, y = mnist.x_train[-200:], mnist.y_train[-200:]
    keep = iterative_keep_sets(model, x, y, [Budget.params(0.3)], **FAST)[0.3]
    assert keep.params <= 0.3 * keep.dense_params
    assert RATES["dense"] is None  # the dense test model has Dropout after every site
    with pytest.raises(ValueError, match="one kind"):
        iterative_keep_sets(model, x, y, [Budget.params(0.5), Budget.flops(0.5)], **FAST)
    with pytest.raises(ValueError, match="steps_per_halving"):
        iterative_keep_sets(model, x, y, [0.5], **{**FAST, "steps_per_halving": 0})
    with pytest.raises(ValueError, match="n_masks"):
        iterative_keep_sets(model, x, y, [0.5], **{**FAST, "n_masks": 5})
    with pytest.raises(ValueError, match="fraction"):
        iterative_keep_sets(model, x, y, [1.5], **FAST)
    with pytest.raises(ValueError, match="estimator"):
        iterative_keep_sets(model, x, y, [0.5], estimator="magnitude", **FAST)

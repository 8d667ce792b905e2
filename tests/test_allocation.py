"""Cost-aware allocation across sites: units ranked by score per FLOP they cost."""

import keras
import numpy as np
import pytest

from subnet.extraction import Budget, as_keep_set, keep_sets
from subnet.importance import Importance


def _model():
    init = keras.initializers.GlorotUniform
    inputs = keras.Input((10, 10, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", kernel_initializer=init(1), name="a")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", kernel_initializer=init(2), name="b")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="relu", kernel_initializer=init(3), name="c")(x)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=init(4))(x)
    return keras.Model(inputs, outputs)


def _importance(model, scores):
    table = as_keep_set(model, {}).sites
    return Importance(method="hand", scores=np.asarray(scores, np.float64), sites=table)


@pytest.mark.parametrize("fraction", [0.6, 0.3, 0.2])
def test_cost_allocation_meets_the_budget_and_the_minimum(fraction):
    model = _model()
    scores = np.random.default_rng(0).random(20)
    keep = keep_sets(_importance(model, scores), Budget.flops(fraction), model,
                     allocation="cost", min_units=2)
    assert keep.flops <= fraction * keep.dense_flops
    assert min(keep.widths.values()) >= 2


def test_with_equal_scores_cost_allocation_keeps_more_units_than_score_order():
    model = _model()
    importance = _importance(model, np.ones(20))
    by_cost = keep_sets(importance, Budget.flops(0.3), model, allocation="cost")
    by_score = keep_sets(importance, Budget.flops(0.3), model, allocation="global")
    assert sum(by_cost.widths.values()) > sum(by_score.widths.values())


def test_a_costly_unit_loses_to_cheaper_units_worth_more_together():
    model = _model()
    scores = np.full(20, 0.1)
    scores[6] = 1.0  # the best unit of site b (each b unit feeds 36 inputs of each c unit)
    importance = _importance(model, scores)
    budget = Budget.flops(0.15)
    by_cost = keep_sets(importance, budget, model, allocation="cost")
    by_score = keep_sets(importance, budget, model, allocation="global")
    assert by_score["b"][0]  # score order takes the costly unit first
    assert by_cost.flops <= by_cost.dense_flops * 0.15

    def kept_score(keep):
        return float(np.sum(scores[keep.mask]))

    assert sum(by_cost.widths.values()) > sum(by_score.widths.values())
    assert kept_score(by_cost) > kept_score(by_score)


@pytest.mark.parametrize("fraction", [0.6, 0.3])
def test_joint_allocation_prices_parameters_as_well_as_flops(fraction):
    # Equal scores: the cost allocation keeps the units cheapest in FLOPs; the joint one also
    # counts parameters, so within the same FLOP budget it keeps a subnetwork with fewer of
    # them (site b's units each feed 36 weights of every unit of c).
    model = _model()
    importance = _importance(model, np.ones(20))
    by_flops = keep_sets(importance, Budget.flops(fraction), model, allocation="cost")
    joint = keep_sets(importance, Budget.flops(fraction), model, allocation="joint")
    assert joint.flops <= fraction * joint.dense_flops
    assert joint.params < by_flops.params
    assert joint.params / joint.dense_params + joint.flops / joint.dense_flops < \
        by_flops.params / by_flops.dense_params + by_flops.flops / by_flops.dense_flops


def test_an_unknown_allocation_names_the_known_ones():
    model = _model()
    with pytest.raises(ValueError, match=r"'joint'.*Received: allocation='params'"):
        keep_sets(_importance(model, np.ones(20)), Budget.flops(0.5), model, allocation="params")

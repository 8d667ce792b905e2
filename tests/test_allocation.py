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


def _reference_greedy(cost, scores, table, orders, kind, limit, allocation, start_counts):
    """The allocations as first written: every candidate priced by evaluating the whole cost
    model on its widths (slow, plainly right); the incremental cost state must choose alike."""
    counts = list(start_counts)
    dense_params, dense_flops = cost(np.ones(table.n_units, bool))

    def bits_of(counts):
        bits = np.zeros(table.n_units, bool)
        for k, (name, start) in enumerate(zip(table.names, table.offsets[:-1], strict=True)):
            bits[start + orders[name][:counts[k]]] = True
        return bits

    def spend(counts):
        if kind == "units":
            return sum(counts)
        params, flops = cost(bits_of(counts))
        return params if kind == "params" else flops

    def price(counts):
        if allocation == "joint":
            params, flops = cost(bits_of(counts))
            return params / dense_params + flops / dense_flops
        return spend(counts)

    per_site = table.split(scores)
    if allocation == "global":
        bits = bits_of(counts)
        for unit in np.argsort(-scores, kind="stable"):
            if bits[unit]:
                continue
            trial = bits.copy()
            trial[unit] = True
            params, flops = cost(trial)
            if {"units": trial.sum(), "params": params, "flops": flops}[kind] <= limit:
                bits = trial
        return bits
    open_sites = [k for k, site in enumerate(table) if counts[k] < site.units]
    while open_sites:
        best, best_key = None, None
        for k in open_sites:
            trial = list(counts)
            trial[k] += 1
            marginal = max(price(trial) - price(counts), 1e-12)
            score = float(per_site[table.names[k]][orders[table.names[k]][counts[k]]])
            key = (score > 0, score / marginal if score > 0 else score * marginal)
            if best_key is None or key > best_key:
                best, best_key = k, key
        trial = list(counts)
        trial[best] += 1
        if spend(trial) > limit:
            open_sites.remove(best)
            continue
        counts = trial
        if counts[best] == table[best].units:
            open_sites.remove(best)
    return bits_of(counts)


@pytest.mark.parametrize("builder", ["resnet20_layout", "inception_block", "mobilenet_style"])
@pytest.mark.parametrize("allocation", ["global", "cost", "joint"])
def test_the_incremental_allocation_chooses_what_pricing_every_candidate_would(builder,
                                                                                allocation):
    from subnet.engine.chain import analyse_chain
    from tests import zoo

    model = getattr(zoo, builder)()
    table = as_keep_set(model, {}).sites
    rng = np.random.default_rng(3)
    scores = rng.normal(size=table.n_units)  # negative scores too: the least harmful come last
    scores[rng.random(table.n_units) < 0.1] = 0.25  # ties
    importance = _importance(model, scores)
    cost = analyse_chain(model, rate=dict.fromkeys(table.names, 0.0)).structure.cost_model()
    orders = {n: np.argsort(-s, kind="stable") for n, s in table.split(scores).items()}
    for budget in (Budget.flops(0.3), Budget.params(0.4), Budget.units(0.5)):
        keep = keep_sets(importance, budget, model, allocation=allocation)
        dense = {"units": table.n_units, "params": keep.dense_params, "flops": keep.dense_flops}
        expected = _reference_greedy(cost, scores, table, orders, budget.kind,
                                     budget.target(dense[budget.kind]), allocation,
                                     [1] * len(table))
        assert np.array_equal(keep.mask, expected), (budget, allocation)


def test_the_cost_state_adds_exactly_what_the_cost_model_counts():
    from subnet.structure import channel_groups
    from tests import zoo

    s = channel_groups(zoo.resnet20_layout())
    model = s.cost_model()
    rng = np.random.default_rng(0)
    bits = rng.random(s.n_units) < 0.3
    state = model.grow(bits)
    for unit in rng.permutation(np.flatnonzero(~bits))[:25]:
        params, flops = state.delta([unit])
        after = bits.copy()
        after[unit] = True
        assert (state.params + params[0], state.flops + flops[0]) == model(after)
        state.add(int(unit))
        bits = after
        assert (state.params, state.flops) == model(bits)

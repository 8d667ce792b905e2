"""Keep probabilities as their own value: the calibration rule, and backends' site scales."""

import keras
import numpy as np
import pytest

from subnet.engine import make_backend
from subnet.engine.chain import analyse_chain
from subnet.engine.reference import ReferenceBackend
from subnet.keep import KeepProbabilities, calibrate_keep
from subnet.masks import sample_masks
from subnet.train import fit


@pytest.fixture(scope="module")
def no_dropout(mnist):
    """A small CNN trained without dropout (as most classifiers are)."""
    init = keras.initializers.GlorotUniform
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", kernel_initializer=init(1), name="c1")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(12, 3, activation="relu", kernel_initializer=init(2), name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation="relu", kernel_initializer=init(3), name="d1")(x)
    outputs = keras.layers.Dense(10, activation="softmax", kernel_initializer=init(4))(x)
    model = keras.Model(inputs, outputs, name="no_dropout")
    fit(model, mnist.x_train, mnist.y_train, epochs=6, learning_rate=3e-3, progress=False)
    return model


def test_calibration_follows_its_documented_rule(no_dropout, mnist):
    x, y = mnist.x_train[-200:], mnist.y_train[-200:]
    keep = calibrate_keep(no_dropout, x, y, n_masks=8, steps=5)
    c = keep.calibration
    assert keep.source == "auto" and set(keep.keep) == {"c1", "c2", "d1"}
    assert len(set(keep.keep.values())) == 1  # one keep probability for every site
    q = keep.keep["c1"]
    assert c["chance"] == pytest.approx(np.bincount(y).max() / len(y))
    assert c["target_accuracy"] == pytest.approx(c["chance"] + 0.5 * (c["whole"] - c["chance"]))
    # For each treatment of kept units, the keep found is the smallest evaluated one that reaches
    # the target, and the largest evaluated one below it misses it (a bisection bracket).
    for scaled in (False, True):
        points = [e for e in c["evaluated"] if e["rescale"] == scaled]
        reach = [e["keep"] for e in points if e["mean_accuracy"] >= c["target_accuracy"]]
        found = c["keep_by_rescale"][str(scaled)]
        assert found == min(reach + [1.0])
        below = [e["keep"] for e in points if e["keep"] < found]
        assert all(e["mean_accuracy"] < c["target_accuracy"] for e in points
                   if e["keep"] == max(below, default=-1))
    # Of the two, the one that keeps fewer units (ties: unscaled).
    chosen = c["keep_by_rescale"][str(keep.rescale)]
    other = c["keep_by_rescale"][str(not keep.rescale)]
    assert q == chosen and (chosen < other or (chosen == other and not keep.rescale))
    assert c["mean_accuracy"] >= c["target_accuracy"]
    assert KeepProbabilities.from_dict(keep.to_dict()) == keep
    assert keep.rates == {name: pytest.approx(1 - q) for name in keep.keep}


def test_a_higher_target_keeps_more_units(no_dropout, mnist):
    x, y = mnist.x_train[-200:], mnist.y_train[-200:]
    low = calibrate_keep(no_dropout, x, y, target=0.3, n_masks=8, steps=5, rescale=False)
    high = calibrate_keep(no_dropout, x, y, target=0.8, n_masks=8, steps=5, rescale=False)
    assert low.keep["c1"] < high.keep["c1"]
    assert list(low.calibration["keep_by_rescale"]) == ["False"]


def test_calibration_refuses_a_model_at_chance_and_bad_settings(no_dropout, mnist):
    x = mnist.x_train[:50]
    with pytest.raises(ValueError, match="no better than chance"):
        calibrate_keep(no_dropout, x, np.zeros(50, np.int64) + 3)  # one class: chance is 100 %
    with pytest.raises(ValueError, match="`target`"):
        calibrate_keep(no_dropout, x, mnist.y_train[:50], target=1.0)
    with pytest.raises(ValueError, match="`n_masks`"):
        calibrate_keep(no_dropout, x, mnist.y_train[:50], n_masks=1)
    with pytest.raises(ValueError, match="`source`"):
        KeepProbabilities(keep={"c1": 0.5}, source="guess", rescale=False)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        KeepProbabilities(keep={"c1": 0.0}, source="given", rescale=False)


@pytest.mark.parametrize("backend", ["fast", "graph", "reference"])
def test_a_site_scale_equals_rescaling_built_in(trained, mnist, backend):
    """set_site_scale(1 / q) gives what a backend built with rescale=True gives, and 1 what one
    built with rescale=False gives: the scale is a value of its own, not of the site table."""
    model = trained["conv"]
    chain = analyse_chain(model, 0.5)
    masks = sample_masks(chain.table.unit_keep(), 3, range(6))
    x = mnist.x_test[:20]
    scaled = make_backend(chain, backend, rescale=True).probabilities(x, masks)
    plain = make_backend(chain, backend, rescale=False).probabilities(x, masks)
    engine = make_backend(chain, backend, rescale=False)
    engine.set_site_scale([2.0] * len(chain.table))
    np.testing.assert_allclose(engine.probabilities(x, masks), scaled, atol=1e-6)
    engine.set_site_scale([1.0] * len(chain.table))
    np.testing.assert_allclose(engine.probabilities(x, masks), plain, atol=1e-6)
    with pytest.raises(ValueError, match="one per site"):
        engine.set_site_scale([1.0])


@pytest.mark.parametrize("backend", ["fast", "graph", "reference"])
def test_a_unit_scale_is_a_factor_per_unit_on_every_backend(trained, mnist, backend):
    """set_unit_scale gives each unit a factor of its own (keep probabilities per unit); the
    same factor for every unit of a site is exactly set_site_scale; every backend agrees."""
    model = trained["conv"]
    chain = analyse_chain(model, 0.5)
    masks = sample_masks(chain.table.unit_keep(), 4, range(6))
    x = mnist.x_test[:20]
    factors = np.random.default_rng(0).uniform(0.5, 2.0, chain.table.n_units)
    engine = make_backend(chain, backend, rescale=False)
    engine.set_unit_scale(factors)
    reference = ReferenceBackend(chain, rescale=False).probabilities_from_values(
        x, (masks * factors).astype(np.float32))
    np.testing.assert_allclose(engine.probabilities(x, masks), reference, atol=1e-5)
    engine.set_unit_scale(np.repeat([2.0] * len(chain.table), chain.table.units))
    by_unit = engine.probabilities(x, masks)
    engine.set_site_scale([2.0] * len(chain.table))
    np.testing.assert_array_equal(engine.probabilities(x, masks), by_unit)
    with pytest.raises(ValueError, match="one per unit"):
        engine.set_unit_scale([1.0] * len(chain.table))

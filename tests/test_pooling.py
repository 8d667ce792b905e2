"""Expected pooling after dropout: exact against enumeration, unbiased against Monte Carlo."""

import itertools
import math

import numpy as np
import pytest

import subnet
from subnet.errors import InputError
from subnet.pooling import ExpectedMaxPooling, expected_max, expected_pooling, expected_pooling_cost
from subnet.runtime import keras


def _enumerated(window, rate):
    """E[max(dropout(window))] by summing over every keep pattern (Keras's convention: kept
    values scaled by 1 / (1 - rate), dropped ones 0 and still in the max)."""
    window = np.asarray(window, float)
    total = 0.0
    for kept in itertools.product((False, True), repeat=len(window)):
        kept = np.array(kept)
        chance = math.prod((1 - rate) if k else rate for k in kept)
        total += chance * np.where(kept, window / (1 - rate), 0.0).max()
    return total


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.9])
def test_expected_max_equals_enumeration_of_every_keep_pattern(rate):
    rng = np.random.default_rng(0)
    windows = np.concatenate([
        rng.normal(size=(200, 4)),                   # signed, as after a linear convolution
        -np.abs(rng.normal(size=(20, 4))),           # every input negative
        np.abs(rng.normal(size=(20, 4))),            # after a ReLU (Wu & Gu's case)
        np.array([[1.0, 1.0, -2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-1.0, -1.0, -1.0, -1.0]])])
    got = expected_max(windows, rate)
    want = np.array([_enumerated(w, rate) for w in windows])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    three = rng.normal(size=(30, 3))                 # any window size, any axis
    np.testing.assert_allclose(expected_max(three.T, rate, axis=0),
                               [_enumerated(w, rate) for w in three], atol=1e-12)


def test_expected_max_by_hand_and_padding():
    # [3, -1] at rate 0.5: keep 3 (1/2) -> 6; drop 3, keep -1 (1/4) -> max(-2, 0) = 0; else 0.
    assert expected_max([3.0, -1.0], 0.5) == pytest.approx(3.0)
    # all negative [-1, -2]: only all kept (1/4) gives max(-2, -4) = -2, so -0.5
    assert expected_max([-1.0, -2.0], 0.5) == pytest.approx(-0.5)
    # -inf is padding: the window [-1, pad] is a window of one input
    assert expected_max([-1.0, -np.inf], 0.5) == pytest.approx(_enumerated([-1.0], 0.5))
    assert expected_max([2.0], 0.0) == 2.0


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 1.0}, "rate"), ({"rate": -0.1}, "rate"), ({"rate": True}, "rate"),
    ({"values": [-np.inf, -np.inf]}, "finite entry"), ({"values": [np.nan, 1.0]}, "finite"),
])
def test_expected_max_rejects_bad_input_naming_it(kwargs, message):
    args = {"values": [1.0, 2.0], "rate": 0.5, **kwargs}
    with pytest.raises(InputError, match=message):
        expected_max(args.pop("values"), args.pop("rate"))


def test_the_layer_on_2x2_windows_equals_enumeration_window_by_window():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 6, 5, 2)).astype(np.float32)  # odd width: valid drops a column
    layer = ExpectedMaxPooling(0.5, 2, (2, 2))
    got = np.asarray(layer(x))
    assert got.shape == (3, 3, 2, 2)
    for b, i, j, c in itertools.product(range(3), range(3), range(2), range(2)):
        window = x[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c].ravel()
        assert got[b, i, j, c] == pytest.approx(_enumerated(window, 0.5), abs=1e-5)


@pytest.mark.parametrize("pool, strides", [((2, 2), (2, 2)), ((5, 4), (3, 2))])
def test_the_layer_equals_the_numpy_core_with_either_sort(pool, strides):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 9, 8, 3)).astype(np.float32)
    got = np.asarray(ExpectedMaxPooling(0.3, 2, pool, strides)(x))
    rows, cols = got.shape[1:3]
    for i, j in itertools.product(range(rows), range(cols)):
        window = x[:, i * strides[0]:i * strides[0] + pool[0],
                   j * strides[1]:j * strides[1] + pool[1]].reshape(2, -1, 3)
        np.testing.assert_allclose(got[:, i, j], expected_max(window, 0.3, axis=1),
                                   rtol=1e-5, atol=1e-5)


def _tiny(pooling, dropout=None, shape=(7, 7, 1), seed=0):
    """Input -> linear Conv -> Dropout -> pooling -> Flatten -> linear Dense: everything after
    the pooling is linear, so the model's dropout-on mean IS the expected pooling's output."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    conv = keras.layers.Conv2D if len(shape) == 3 else keras.layers.Conv1D
    h = conv(3, 2, name="conv")(inputs)
    h = (dropout or keras.layers.Dropout(0.5, name="drop"))(h)
    h = pooling(h)
    h = keras.layers.Flatten()(h) if len(h.shape) > 2 else h
    outputs = keras.layers.Dense(4, name="head")(h)
    return keras.Model(inputs, outputs)


def _monte_carlo(model, x, passes):
    """Mean and standard error of the model's output over ``passes`` dropout-on passes (one
    batch of copies: every row draws its own masks)."""
    out = np.asarray(model(np.repeat(x, passes, axis=0), training=True), np.float64)
    out = out.reshape(len(x), passes, -1)
    return out.mean(1), out.std(1, ddof=1) / math.sqrt(passes)


@pytest.mark.parametrize("pooling, shape", [
    (keras.layers.MaxPooling2D(2), (7, 7, 1)),
    (keras.layers.MaxPooling2D(3, strides=2, padding="same"), (8, 7, 1)),  # overlapping, padded
    (keras.layers.MaxPooling1D(3, strides=2), (11, 1)),
    (keras.layers.GlobalMaxPooling2D(), (5, 5, 1)),  # 16 inputs: sorted by the network
    (keras.layers.GlobalMaxPooling2D(), (7, 7, 1)),  # 36 inputs: sorted along an axis
])
def test_expected_pooling_matches_monte_carlo_within_sampling_error(pooling, shape):
    model = _tiny(pooling, shape=shape)
    x = np.random.default_rng(2).normal(size=(2, *shape)).astype(np.float32)
    mean, se = _monte_carlo(model, x, 20_000)
    exact = np.asarray(expected_pooling(model)(x), np.float64)
    assert np.all(np.abs(exact - mean) <= 5 * se + 1e-6), np.max(np.abs(exact - mean) / se)
    # ... and the test can fail: dropout off (plain max) is off by many standard errors
    plain = np.asarray(subnet.with_dropout(model, on=False)(x), np.float64)
    assert np.max(np.abs(plain - mean) / se) > 10


def test_average_pooling_and_spatial_dropout_need_only_dropout_off():
    for pooling, dropout in ((keras.layers.AveragePooling2D(2), None),
                             (keras.layers.MaxPooling2D(2), keras.layers.SpatialDropout2D(0.5))):
        model = _tiny(pooling, dropout)
        expected = expected_pooling(model)
        assert not any(isinstance(layer, ExpectedMaxPooling) for layer in expected.layers)
        x = np.random.default_rng(3).normal(size=(2, 7, 7, 1)).astype(np.float32)
        off = np.asarray(subnet.with_dropout(model, on=False)(x), np.float64)
        np.testing.assert_allclose(np.asarray(expected(x)), off, rtol=1e-6, atol=1e-6)
        mean, se = _monte_carlo(model, x, 20_000)
        assert np.all(np.abs(off - mean) <= 5 * se + 1e-6)


def test_only_max_poolings_after_a_dropout_are_replaced_and_every_dropout_is_off():
    model = subnet.seed_cnn(16, conv_filters=(4, 6), seed=0)
    names = [layer.name for layer in model.layers]
    expected = expected_pooling(model)
    assert [layer.name for layer in expected.layers] == names  # names kept
    replaced = [layer.name for layer in expected.layers if isinstance(layer, ExpectedMaxPooling)]
    assert replaced == [layer.name for layer in model.layers
                        if isinstance(layer, keras.layers.MaxPooling2D)] == ["pool1", "pool2"]
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in expected.layers)
    x = np.random.default_rng(4).normal(size=(5, 28, 28, 1)).astype(np.float32)
    first, second = expected(x), expected(x, training=True)  # deterministic either way
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    # the copy is a model like any other: dropout off again, a config round trip
    again = subnet.with_dropout(expected, on=False)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(first), atol=1e-7)
    # the layer's config round-trips
    layer = expected.get_layer("pool1")
    copy = ExpectedMaxPooling.from_config(layer.get_config())
    assert (copy.rate, copy.pool_size, copy.strides) == (0.5, (2, 2), (2, 2))
    # no max pooling after a dropout: the same as dropout off
    plain = _tiny(keras.layers.MaxPooling2D(2), keras.layers.Identity())
    np.testing.assert_allclose(np.asarray(expected_pooling(plain)(x[:, :7, :7])),
                               np.asarray(plain(x[:, :7, :7])), atol=1e-6)


def test_cost_counts_every_operation_per_output():
    model = subnet.seed_cnn(16, conv_filters=(4, 6), seed=0)
    cost = expected_pooling_cost(expected_pooling(model))
    # pool1: 12x12x4 outputs, pool2: 4x4x6; a 2x2 window costs 4*3 + 3*4 + 2 = 26
    assert [(r["name"], r["outputs"], r["window"]) for r in cost["layers"]] == [
        ("pool1", 12 * 12 * 4, 4), ("pool2", 4 * 4 * 6, 4)]
    assert cost["flops"] == 26 * (12 * 12 * 4 + 4 * 4 * 6)
    assert cost["max_pooling_flops"] == 3 * (12 * 12 * 4 + 4 * 4 * 6)
    assert expected_pooling_cost(model)["flops"] == 0  # nothing replaced
    same = ExpectedMaxPooling(0.5, 1, (3,), (2,), "same")
    # 5 inputs, windows of 3 with stride 2, padded one each side: 2, 3, 2 real inputs
    np.testing.assert_array_equal(same.window_sizes((None, 5, 1)), [2, 3, 2])


@pytest.mark.parametrize("make, error, message", [
    (lambda: expected_pooling("model.keras"), TypeError, "keras.Model"),
    (lambda: ExpectedMaxPooling(1.5, 2, (2, 2)), InputError, "rate"),
    (lambda: ExpectedMaxPooling(0.5, 4, (2, 2)), InputError, "rank"),
    (lambda: ExpectedMaxPooling(0.5, 2, (2, 2), padding="full"), InputError, "padding"),
    (lambda: expected_pooling(_tiny(keras.layers.MaxPooling2D(2),
                                    keras.layers.Dropout(0.5, noise_shape=(None, 1, None, 3)))),
     InputError, "noise_shape"),
])
def test_bad_input_is_an_error_naming_it(make, error, message):
    with pytest.raises(error, match=message):
        make()


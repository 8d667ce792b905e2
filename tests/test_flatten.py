"""Nested models (a model used as a layer) flattened into an equivalent flat model."""

import keras
import numpy as np
import pytest

import subnet
from subnet.errors import InputError
from subnet.flatten import flatten_nested, has_nested
from tests import zoo


def _stem_and_block(input_shape=(28, 28, 1)):
    """A functional stem and a Sequential block used as layers, one name clashing with an outer
    layer (as ConvNeXt's stem is a Sequential model inside the functional one)."""
    init = keras.initializers.GlorotUniform
    inner = keras.Input(input_shape)
    h = keras.layers.Conv2D(4, 3, kernel_initializer=init(1), name="conv1")(inner)
    h = keras.layers.BatchNormalization(name="bn")(h)
    stem = keras.Model(inner, keras.layers.ReLU(name="relu")(h), name="stem")
    block = keras.Sequential([keras.layers.Conv2D(5, 3, kernel_initializer=init(2), name="conv1"),
                              keras.layers.ReLU(name="block_relu")], name="block")
    inputs = keras.Input(input_shape)
    x = block(stem(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=init(3),
                                 name="classifier")(x)
    return keras.Model(inputs, outputs, name="stem_and_block")


@pytest.mark.parametrize("build", [zoo.nested_model, _stem_and_block])
def test_the_flat_model_computes_the_same_and_can_be_masked(build):
    model = build()
    x, y = zoo.data_for(model, 16)
    flat = flatten_nested(model)
    assert has_nested(model) and not has_nested(flat)
    np.testing.assert_array_equal(model.predict(x, verbose=0), flat.predict(x, verbose=0))
    names = [layer.name for layer in flat.layers]
    assert len(names) == len(set(names))
    record = subnet.record_masks(flat, x, y, n_masks=4, rate=0.5, progress=False)
    assert record.n_masks == 4
    assert flatten_nested(flat) is flat  # nothing to do


def test_a_clashing_name_is_prefixed_by_its_nested_model():
    names = [layer.name for layer in flatten_nested(_stem_and_block()).layers]
    assert "conv1" in names and "block_conv1" in names and "bn" in names


def test_the_original_is_untouched():
    model = _stem_and_block()
    before = [w.copy() for w in model.get_weights()]
    flat = flatten_nested(model)
    for weight in flat.weights:
        weight.assign(np.zeros(weight.shape, weight.dtype))
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_nested_model_called_twice_is_refused_by_name():
    block = keras.Sequential([keras.layers.Dense(6, activation="relu", name="d")], name="shared")
    inputs = keras.Input((6,))
    x = block(keras.layers.Dense(6, name="first")(inputs))
    x = block(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    with pytest.raises(InputError, match=r"'shared' is a nested model called 2 times"):
        flatten_nested(model)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_load_model_flattens_and_the_command_line_analyses_it(tmp_path, suffix):
    from subnet.analyze import main

    model = zoo.nested_model()
    x, y = zoo.data_for(model, n=60)
    path = tmp_path / f"model{suffix}"
    model.save(path)
    loaded = subnet.load_model(path)
    assert not has_nested(loaded)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    if suffix == ".keras":
        np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_test=x, y_test=y)
        code = main([str(path), "--dataset", str(tmp_path / "data.npz"), "--rate", "0.5",
                     "--quick", "--masks", "20", "--examples", "10", "--methods",
                     "magnitude,random", "--formats", "json", "--out", str(tmp_path / "out")])
        assert code == 0 and (tmp_path / "out" / "results.json").exists()

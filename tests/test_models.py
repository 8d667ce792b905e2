"""The blog's network, safe loading of every supported format, and dropout bookkeeping."""

import gzip
import zipfile

import h5py
import keras
import numpy as np
import pytest

from subnet.errors import ModelFileError, UntrustedModelError
from subnet.models import DropoutInfo, dropout_layers, load_model, seed_cnn, with_dropout


@pytest.fixture(scope="module")
def x8():
    return np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)


# ---------------------------------------------------------------------------- the seed model

def test_seed_cnn_has_the_blogs_431080_parameters():
    model = seed_cnn()
    assert model.count_params() == 431_080
    assert [layer.name for layer in model.layers] == [
        "image", "conv1", "drop1", "pool1", "conv2", "drop2", "pool2", "flatten", "dense",
        "drop3", "classifier"]
    # No activation after the convolutions, as in the blog.
    assert model.get_layer("conv1").activation.__name__ == "linear"
    assert model.get_layer("dense").activation.__name__ == "relu"


def test_seed_cnn_width_and_rates():
    model = seed_cnn(128, (0.1, 0.2, 0.9))
    assert model.count_params() == 520 + 25_050 + (800 * 128 + 128) + (128 * 10 + 10)
    assert dropout_layers(model) == [DropoutInfo("drop1", 0.1, False),
                                     DropoutInfo("drop2", 0.2, False),
                                     DropoutInfo("drop3", 0.9, False)]


def test_seed_cnn_is_reproducible_from_its_seed(x8):
    a, b, c = seed_cnn(seed=3), seed_cnn(seed=3), seed_cnn(seed=4)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


@pytest.mark.parametrize("kwargs, match", [
    ({"dense_units": 0}, "dense_units"),
    ({"dense_units": 2.5}, "dense_units"),
    ({"rates": (0.5, 0.5)}, "three dropout rates"),
    ({"rates": (0.5, 1.0, 0.5)}, r"\[0, 1\)"),
    ({"num_classes": 1}, "num_classes"),
    ({"input_shape": (8, 8, 1)}, "input_shape"),
])
def test_seed_cnn_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        seed_cnn(**kwargs)


def test_always_on_dropout_is_baked_in_and_detected(x8):
    model = seed_cnn(16, always_on_dropout=True)
    assert all(info.always_on for info in dropout_layers(model))
    assert not np.array_equal(np.asarray(model(x8)), np.asarray(model(x8)))
    # predict() is deterministic: Keras passes training=False explicitly.
    np.testing.assert_array_equal(model.predict(x8, verbose=0), model.predict(x8, verbose=0))


# ---------------------------------------------------------------------------- with_dropout

def test_with_dropout_off_is_deterministic_and_equals_inference(x8):
    model = seed_cnn(16, always_on_dropout=True)
    off = with_dropout(model, False)
    np.testing.assert_array_equal(np.asarray(off(x8)), np.asarray(off(x8)))
    np.testing.assert_allclose(np.asarray(off(x8)), model.predict(x8, verbose=0), atol=1e-6)


def test_with_dropout_on_is_seeded(x8):
    model = seed_cnn(16)
    a, b = with_dropout(model, True, seed=5), with_dropout(model, True, seed=5)
    first = np.asarray(a(x8))
    np.testing.assert_array_equal(first, np.asarray(b(x8)))
    assert not np.array_equal(first, np.asarray(a(x8)))  # a new draw on every call


def test_with_dropout_drops_at_the_layers_rate():
    inputs = keras.Input((1000,))
    outputs = keras.layers.Dropout(0.3)(inputs)
    noisy = with_dropout(keras.Model(inputs, outputs), True, seed=0)
    out = np.asarray(noisy(np.ones((20, 1000), np.float32)))
    assert abs(np.mean(out == 0) - 0.3) < 0.01
    np.testing.assert_allclose(out[out != 0], 1 / 0.7, rtol=1e-6)


def test_with_dropout_rejects_non_models():
    with pytest.raises(TypeError, match="keras.Model"):
        with_dropout("model.h5", True)


# ---------------------------------------------------------------------------- Keras 3 formats

@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_round_trip(tmp_path, suffix, x8):
    model = seed_cnn(16, always_on_dropout=True)
    path = tmp_path / f"m{suffix}"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_allclose(loaded.predict(x8, verbose=0), model.predict(x8, verbose=0),
                               atol=1e-6)
    assert [i.always_on for i in dropout_layers(loaded)] == [True, True, True]


def test_keras3_lambda_is_refused_then_trusted(tmp_path, x8):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(UntrustedModelError, match=r"'doubler'.*trust=True"):
        load_model(path)
    trusted = load_model(path, trust=True)
    np.testing.assert_allclose(trusted.predict(x8, verbose=0), model.predict(x8, verbose=0),
                               atol=1e-6)
    # The trust the user gave covers the copies subnet makes (Keras rebuilds the Lambda).
    np.testing.assert_allclose(np.asarray(with_dropout(trusted, False)(x8)),
                               model.predict(x8, verbose=0), atol=1e-6)
    assert with_dropout(trusted, True).get_layer("doubler").__class__.__name__ == "Lambda"


def test_keras3_dropout_lambda_is_recognised(tmp_path):
    rate = 0.3

    inputs = keras.Input((100,))
    x = keras.layers.Lambda(lambda t: keras.random.dropout(t, rate), name="perma")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    path = tmp_path / "perma.keras"
    keras.Model(inputs, outputs).save(path)
    loaded = load_model(path, trust=True)
    assert dropout_layers(loaded) == [DropoutInfo("perma", 0.3, True)]


# ---------------------------------------------------------------------------- Keras 2 formats

def test_keras2_training_true_dropout_is_detected(keras2_dir, x8):
    model = load_model(keras2_dir / "blog_training_true.h5")
    infos = dropout_layers(model)
    assert [(i.rate, i.always_on) for i in infos] == [(0.5, True)] * 3
    # Keras 3 keeps the blog's training=True: plain calls are random ...
    assert not np.array_equal(np.asarray(model(x8)), np.asarray(model(x8)))
    # ... and subnet can run the model deterministically, equal to tf_keras's inference.
    expected = np.load(keras2_dir / "expected.npz")
    off = with_dropout(model, False)
    np.testing.assert_allclose(np.asarray(off(expected["x"])), expected["blog_training_true"],
                               atol=1e-5)


def test_keras2_lambda_model_is_refused_without_trust(keras2_dir):
    with pytest.raises(UntrustedModelError) as info:
        load_model(keras2_dir / "blog_lambda.h5")
    message = str(info.value)
    assert "'lambda'" in message and "'lambda_1'" in message
    assert "blog_lambda.h5" in message and "trust=True" in message and "--trust-model" in message


def test_keras2_lambda_model_loads_when_trusted(keras2_dir):
    model = load_model(keras2_dir / "blog_lambda.h5", trust=True)
    # The blog's PermaDropout(rate) keeps its rate in a closure: 0.5 and 0.25 are read back.
    assert [(i.rate, i.always_on) for i in dropout_layers(model)] == [
        (0.5, True), (0.25, True), (0.5, True)]
    expected = np.load(keras2_dir / "expected.npz")
    off = with_dropout(model, False)
    np.testing.assert_allclose(np.asarray(off(expected["x"])), expected["blog_lambda"],
                               atol=1e-5)
    noisy = with_dropout(model, True, seed=0)
    assert not np.array_equal(np.asarray(noisy(expected["x"])), np.asarray(off(expected["x"])))


def test_keras2_sequential(keras2_dir):
    model = load_model(keras2_dir / "sequential.h5")
    assert dropout_layers(model)[0].rate == pytest.approx(0.3)
    assert not dropout_layers(model)[0].always_on
    expected = np.load(keras2_dir / "expected.npz")
    np.testing.assert_allclose(model.predict(expected["x"], verbose=0), expected["sequential"],
                               atol=1e-5)


# ---------------------------------------------------------------------------- bad files

def test_missing_file():
    with pytest.raises(ModelFileError, match="not found: 'nowhere.h5'"):
        load_model("nowhere.h5")


def test_directory(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory"):
        load_model(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty.h5' is empty"):
        load_model(tmp_path / "empty.h5")


@pytest.mark.parametrize("content", [b"hello, I am not a model",
                                     gzip.compress(b"x" * 100, mtime=0),
                                     b"\x89PNG\r\n\x1a\n" + b"\0" * 64],
                         ids=["text", "gzip", "png"])
def test_foreign_file(tmp_path, content):
    path = tmp_path / "foreign.h5"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="foreign.h5' is not a Keras model file"):
        load_model(path)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_truncated_file(tmp_path, suffix):
    full = tmp_path / f"full{suffix}"
    seed_cnn(16).save(full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ModelFileError, match=f"cut{suffix}"):
        load_model(cut)


def test_weights_only_h5(tmp_path):
    path = tmp_path / "weights.weights.h5"
    seed_cnn(16).save_weights(path)
    with pytest.raises(ModelFileError, match="without a model architecture"):
        load_model(path)


def test_zip_that_is_not_a_model(tmp_path):
    path = tmp_path / "archive.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ModelFileError, match="not a Keras model"):
        load_model(path)


def test_unknown_layer_class(tmp_path):
    path = tmp_path / "custom.h5"
    seed_cnn(16).save(path)
    with h5py.File(path, "r+") as f:
        config = f.attrs["model_config"]
        config = config if isinstance(config, str) else config.decode()
        f.attrs["model_config"] = config.replace('"Conv2D"', '"MysteryConv"', 1)
    with pytest.raises(ModelFileError, match="custom.h5"):
        load_model(path)


def test_two_output_model_is_refused(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(3)(inputs)])
    path = tmp_path / "two.keras"
    model.save(path)
    with pytest.raises(ModelFileError, match="1 inputs and 2 outputs"):
        load_model(path)


def test_a_softmax_classifier_followed_by_dropout_outputs_probabilities():
    from subnet.models import outputs_probabilities

    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, activation="softmax")(inputs)
    with_dropout_after = keras.Model(inputs, keras.layers.Dropout(0.2)(x))
    logits = keras.Model(inputs, keras.layers.Dropout(0.2)(keras.layers.Dense(3)(inputs)))
    assert outputs_probabilities(with_dropout_after)
    assert not outputs_probabilities(logits)


def test_a_tf_data_dataset_is_taken_where_x_and_y_are_as_keras_fit_takes_it(tmp_path):
    """Every entry point that checks (x, y) against the model takes a tf.data.Dataset of
    (examples, labels) with y=None, batched or not, and gives what the arrays give."""
    import tensorflow as tf

    import subnet
    from subnet.models import examples_of
    from subnet.train import fit

    model = subnet.seed_cnn(8, conv_filters=(4, 4), seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((40, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 40)
    for dataset in (tf.data.Dataset.from_tensor_slices((x, y)),
                    tf.data.Dataset.from_tensor_slices((x, y)).batch(16)):
        got_x, got_y = examples_of(model, dataset, None)
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)
        masks = subnet.record_masks(model, dataset, None, 20, rate=0.5, progress=False)
        arrays = subnet.record_masks(model, x, y, 20, rate=0.5, progress=False)
        np.testing.assert_array_equal(masks.mask_accuracy(), arrays.mask_accuracy())
        assert masks.meta["data_fingerprint"] == arrays.meta["data_fingerprint"]
    fit(subnet.seed_cnn(8, conv_filters=(4, 4), seed=0), tf.data.Dataset.from_tensor_slices(
        (x, y)).batch(8), None, examples=16, progress=False)
    with pytest.raises(ValueError, match="give y=None"):
        examples_of(model, tf.data.Dataset.from_tensor_slices((x, y)), y)
    with pytest.raises(ValueError, match=r"not \(examples, labels\) pairs"):
        examples_of(model, tf.data.Dataset.from_tensor_slices(x), None)
    with pytest.raises(ValueError, match="is empty"):
        examples_of(model, tf.data.Dataset.from_tensor_slices((x, y)).take(0), None)
    assert examples_of(model, x, y) == (x, y)  # arrays pass as they are

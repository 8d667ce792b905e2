"""The test zoo (tests/zoo.py) and analyses/make_rgb32.py.

Every zoo model builds the same weights from the same seed, predicts probabilities that depend on
its input, and comes back from a ``.keras`` file through ``subnet.load_model`` unchanged.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import subnet
from subnet.runtime import keras
from tests.zoo import (
    ZOO,
    calibrate_batch_norm,
    chain_cnn,
    data_for,
    quick_train,
    resnet_identity,
    text_conv1d,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analyses"))

import make_rgb32  # noqa: E402

# The zoo's shapes, pinned: tests of subnet's structure stage count channels in these models.
PARAMS = {
    "chain_cnn": 7_098, "merge_before_first_site": 2_570, "text_conv1d": 1_924,
    "resnet_identity": 6_506, "resnet20_layout": 17_926, "inception_block": 2_026,
    "mobilenet_style": 3_026, "mobilenetv2": 423_018, "squeeze_excite": 2_798,
    "nested_model": 978, "layer_norm_model": 770,
}


def _weights_equal(a, b) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))


def test_every_zoo_model_is_pinned():
    assert sorted(ZOO) == sorted(PARAMS)


# mobilenetv2 is the slow one: 1-2 s per build here, about 8 s for its three tests.
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_predicts_probabilities_and_reloads_identically(name, tmp_path):
    model = ZOO[name]()
    assert model.count_params() == PARAMS[name]
    assert isinstance(model.layers[-1], keras.layers.Dense)
    assert model.layers[-1].get_config()["activation"] == "softmax"
    x, _ = data_for(model, n=16)
    p = np.asarray(model(x, training=False))
    assert p.shape == (16, model.outputs[0].shape[-1])
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.ptp(p, axis=0).max() > 0, "the outputs do not depend on the input"

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = subnet.load_model(path)
    assert loaded.name == model.name
    expected = subnet.flatten_nested(model)  # a nested model is loaded flattened
    assert [(type(a), a.name) for a in loaded.layers] == \
        [(type(a), a.name) for a in expected.layers]
    assert _weights_equal(loaded, expected)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), p)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_weights_are_a_function_of_the_seed(name):
    build = ZOO[name]
    first = build(seed=3)
    assert _weights_equal(build(seed=3), first)
    assert not _weights_equal(build(seed=4), first)


def test_data_for_images_and_tokens():
    x, y = data_for(resnet_identity(), n=10, seed=1)
    assert x.shape == (10, 28, 28, 1) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() < 1
    assert y.shape == (10,) and y.dtype == np.int64 and 0 <= y.min() and y.max() < 10

    tokens, labels = data_for(text_conv1d(vocab=7, length=12, classes=3), n=200)
    assert tokens.shape == (200, 12) and tokens.dtype == np.int32
    assert set(np.unique(tokens)) == set(range(7))
    assert set(np.unique(labels)) == {0, 1, 2}


def test_data_for_is_a_function_of_the_seed():
    model = chain_cnn()
    x, y = data_for(model, seed=5)
    again = data_for(model, seed=5)
    np.testing.assert_array_equal(again[0], x)
    np.testing.assert_array_equal(again[1], y)
    assert not np.array_equal(data_for(model, seed=6)[0], x)


def test_data_for_refuses_what_it_cannot_fill():
    a, b = keras.Input((4,)), keras.Input((4,))
    two = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Add()([a, b])))
    with pytest.raises(ValueError, match="one input and one output"):
        data_for(two)
    ids = keras.Input((4,), dtype="int32")
    no_embedding = keras.Model(ids, keras.layers.Dense(2)(keras.layers.Rescaling(1.0)(ids)))
    with pytest.raises(ValueError, match="no Embedding layer"):
        data_for(no_embedding)
    seq = keras.Input((None, 3))
    ragged = keras.Model(seq, keras.layers.Dense(2)(keras.layers.GlobalMaxPooling1D()(seq)))
    with pytest.raises(ValueError, match="fixed shape"):
        data_for(ragged)


def test_batch_norm_starts_with_per_channel_parameters_and_statistics():
    bn = resnet_identity().get_layer("stem_bn")
    for weight in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance):
        assert len(np.unique(weight.numpy())) == 8


def test_quick_train_moves_weights_and_batch_norm_statistics():
    model = resnet_identity()
    before = model.get_weights()
    history = quick_train(model, *data_for(model, n=32), epochs=2)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    changed = [not np.array_equal(w, v)
               for w, v in zip(before, model.get_weights(), strict=True)]
    assert all(changed), "some weights or statistics did not move"


def test_calibrated_batch_norm_infers_as_it_trains():
    model = resnet_identity()
    x, _ = data_for(model, n=32)
    trained = np.asarray(model(x, training=True))
    assert not np.allclose(np.asarray(model(x, training=False)), trained, atol=1e-4)
    momenta = [layer.momentum for layer in model.layers
               if isinstance(layer, keras.layers.BatchNormalization)]
    calibrate_batch_norm(model, x)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), trained, atol=1e-5)
    assert momenta == [layer.momentum for layer in model.layers
                       if isinstance(layer, keras.layers.BatchNormalization)]


def test_mobilenetv2_is_calibrated_because_it_is_blind_freshly_initialized():
    blind = ZOO["mobilenetv2"](calibrate=False)
    p = np.asarray(blind(data_for(blind, n=8)[0], training=False))
    assert np.ptp(p, axis=0).max() < 1e-6


def test_quick_train_is_deterministic_dropout_included():
    models = [chain_cnn(), chain_cnn()]
    for model in models:
        quick_train(model, *data_for(model, n=32))
    assert _weights_equal(*models)


# analyses/make_rgb32.py


def _source(path, x_train, x_test, num_classes=10):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=x_train, y_train=rng.integers(0, num_classes, len(x_train)),
             x_test=x_test, y_test=rng.integers(0, num_classes, len(x_test)),
             num_classes=num_classes)
    return path


def test_make_rgb32_pads_tiles_and_writes_a_file_load_dataset_reads(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    src = _source(tmp_path / "src.npz", x_train, x_test)
    out = tmp_path / "rgb" / "fixture.npz"

    assert make_rgb32.main(["--source", str(src), "--out", str(out),
                            "--train", "4", "--test", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip())
    assert report["shapes"] == {"x_train": [4, 32, 32, 3], "y_train": [4],
                                "x_test": [2, 32, 32, 3], "y_test": [2], "num_classes": []}
    assert sorted(p.name for p in out.parent.iterdir()) == ["fixture.npz"]  # no temporary left

    with np.load(out) as stored:
        arrays = {key: stored[key] for key in stored.files}
        source = np.load(src)
    assert sorted(arrays) == sorted(make_rgb32.KEYS)
    assert report["sha256"] == make_rgb32.fingerprint(arrays)
    for split, n in (("train", 4), ("test", 2)):
        x = arrays[f"x_{split}"]
        assert x.dtype == np.float32
        expected = np.zeros((n, 32, 32), np.float32)
        expected[:, 2:30, 2:30] = source[f"x_{split}"][:n] / np.float32(255)
        for channel in range(3):
            np.testing.assert_array_equal(x[..., channel], expected)
        np.testing.assert_array_equal(arrays[f"y_{split}"], source[f"y_{split}"][:n])
    assert arrays["num_classes"] == 10

    changed = dict(arrays, x_test=arrays["x_test"].copy())
    changed["x_test"][1, 16, 16, 2] += 0.5
    assert make_rgb32.fingerprint(changed) != report["sha256"]

    data = subnet.load_dataset(out)
    assert data.x_train.shape == (4, 32, 32, 3) and data.num_classes == 10


def test_make_rgb32_on_mnist(mnist, tmp_path, capsys):
    out = tmp_path / "mnist_rgb32.npz"
    assert make_rgb32.main(["--out", str(out), "--train", "8", "--test", "4"]) == 0
    report = json.loads(capsys.readouterr().out.strip())
    assert report["shapes"]["x_train"] == [8, 32, 32, 3]
    data = subnet.load_dataset(out)
    np.testing.assert_array_equal(data.y_train, mnist.y_train[:8])
    np.testing.assert_array_equal(data.x_test[:, 2:30, 2:30, 1], mnist.x_test[:4, ..., 0])


def test_make_rgb32_refuses_bad_counts_and_images(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_rgb32.main(["--train", "0"])
    assert exit_info.value.code == 2
    assert "positive number of examples" in capsys.readouterr().err

    rgb = np.zeros((2, 28, 28, 3), np.uint8)
    src = _source(tmp_path / "rgb.npz", rgb, rgb)
    out = tmp_path / "out.npz"
    assert make_rgb32.main(["--source", str(src), "--out", str(out)]) == 2
    assert "single-channel" in capsys.readouterr().err
    assert not out.exists()

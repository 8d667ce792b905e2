"""Training, test-time dropout accuracy, and the ``python -m subnet.train`` command."""

import json

import keras
import numpy as np
import pytest

import subnet
from subnet.data import load_dataset
from subnet.engine.mc import mc_dropout
from subnet.models import load_model, outputs_probabilities, seed_cnn
from subnet.train import fit, main
from tests.helpers import skip_or_fail


@pytest.fixture(scope="module")
def mnist_slice():
    try:
        data = load_dataset("mnist")
    except ValueError as err:
        skip_or_fail(f"MNIST is not available here: {err}")
    return data.subset(n_train=2000, n_test=500)


def _tiny_dense(seed=0, softmax=True):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    x = keras.layers.Dropout(0.5, seed=seed)(x)
    outputs = keras.layers.Dense(10, activation="softmax" if softmax else None,
                                 kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
    return keras.Model(inputs, outputs)


def test_outputs_probabilities():
    assert outputs_probabilities(_tiny_dense(softmax=True))
    assert not outputs_probabilities(_tiny_dense(softmax=False))


def test_fit_is_reproducible(mnist_slice):
    x, y = mnist_slice.x_train[:512], mnist_slice.y_train[:512]
    a, b = _tiny_dense(), _tiny_dense()
    fit(a, x, y, epochs=2, seed=3, progress=False)
    fit(b, x, y, epochs=2, seed=3, progress=False)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_fit_example_budget_counts_examples(mnist_slice):
    x, y = mnist_slice.x_train[:300], mnist_slice.y_train[:300]
    history = fit(_tiny_dense(softmax=False), x, y, examples=700, batch_size=100, progress=False)
    assert history["examples_seen"] == 700
    assert len(history["loss"]) == 3  # 300 + 300 + 100


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one training budget"),
    ({"epochs": 1, "examples": 10}, "exactly one training budget"),
    ({"epochs": 0}, "epochs"),
    ({"examples": -5}, "examples"),
    ({"epochs": 1, "batch_size": 0}, "batch_size"),
    ({"epochs": 1, "optimizer": "sgd"}, "optimizer"),
    ({"epochs": 1, "schedule": "step"}, "schedule"),
    ({"epochs": 1, "learning_rate": -1.0}, "learning_rate"),
])
def test_fit_rejects_bad_budgets(kwargs, match):
    x = np.zeros((4, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match=match):
        fit(_tiny_dense(), x, np.zeros(4, int), progress=False, **kwargs)


@pytest.mark.parametrize("labels, received", [
    (np.array([0, 1, 19, 3]), r"\[0, 19\]"), (np.array([0, -1, 2, 3]), r"\[-1, 3\]"),
    (np.array([0.0, 1.5, 2.0, 3.0]), r"\[0.0, 3.0\] \(dtype float64\)")])
def test_fit_refuses_labels_outside_the_models_classes(labels, received):
    """A 20-class task on a 10-output model is the user's mistake, named before training, not
    TensorFlow's error from inside the loss."""
    x = np.zeros((4, 28, 28, 1), np.float32)
    with pytest.raises(subnet.InputError, match=r"integers in \[0, 10\) for this model's 10 "
                       rf"classes\. Received values in {received}.*one output per class"):
        fit(_tiny_dense(), x, labels, epochs=1, progress=False)

def test_mc_dropout_is_seeded_and_consistent(mnist_slice):
    model = _tiny_dense()
    fit(model, mnist_slice.x_train, mnist_slice.y_train, epochs=1, progress=False)
    x, y = mnist_slice.x_test, mnist_slice.y_test
    a = mc_dropout(model, x, y, samples=4, seed=1).summary()
    b = mc_dropout(model, x, y, samples=4, seed=1).summary()
    assert a == b
    assert len(a["pass_accuracy"]) == 4
    assert a["accuracy"] == pytest.approx(np.mean(a["pass_accuracy"]))
    assert len(set(a["pass_accuracy"])) > 1  # every pass draws new dropout
    with pytest.raises(ValueError, match="samples"):
        mc_dropout(model, x, y, samples=0)


@pytest.mark.slow
def test_train_cli_on_an_mnist_slice(tmp_path, capsys):
    """A short real training run of the blog's network through the command line."""
    out = tmp_path / "seed.h5"
    code = main(["--dataset", "mnist", "--epochs", "2", "--train-examples", "3000",
                 "--test-examples", "1000", "--mc-samples", "3", "--seed", "0",
                 "--out", str(out), "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["params"] == 431_080
    assert result["train_examples"] == 3000 and result["test_examples"] == 1000
    assert 0.8 < result["mc_test_accuracy"] <= 1.0  # chance is 0.1
    assert 0.0 < result["test_accuracy"] <= 1.0
    model = load_model(out)
    test = load_dataset("mnist").subset(n_test=1000)
    accuracy = np.mean(model.predict(test.x_test, verbose=0).argmax(axis=1) == test.y_test)
    assert accuracy == pytest.approx(result["test_accuracy"], abs=1e-6)
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_train_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "model.txt")]) == 2
    err = capsys.readouterr().err
    assert "must end in .keras or .h5" in err and "Traceback" not in err
    assert main(["--dataset", "no_such_data", "--out", str(tmp_path / "m.keras")]) == 2
    assert "no_such_data" in capsys.readouterr().err


def test_seed_cnn_trains_on_other_shapes():
    model = seed_cnn(8, input_shape=(32, 32, 3), num_classes=4)
    x = np.random.default_rng(0).random((16, 32, 32, 3), dtype=np.float32)
    y = np.arange(16) % 4
    fit(model, x, y, epochs=1, batch_size=8, progress=False)
    assert model.predict(x, verbose=0).shape == (16, 4)

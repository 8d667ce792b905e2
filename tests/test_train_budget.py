"""Training to saturation: validation, early stopping, Keras callbacks and distillation, on
hand-made problems that train in a second."""

import csv

import keras
import numpy as np
import pytest

from subnet.errors import InputError
from subnet.train import _DistillationLoss, fit, teacher_probabilities


def _problem(n=200, seed=0):
    """Two Gaussian blobs in 4 dimensions: class = which blob."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = (rng.normal(size=(n, 4)) + 2.0 * (2 * y[:, None] - 1)).astype(np.float32)
    return x, y


def _model(seed=0, dropout=False):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(inputs)
    if dropout:
        x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(2, activation="softmax",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
    return keras.Model(inputs, outputs)


def test_early_stopping_stops_when_validation_stops_improving_and_restores_the_best():
    x, y = _problem()
    flipped = (1 - y)  # a validation set that gets worse the better the model fits x
    model = _model()
    history = fit(model, x, y, epochs=12, batch_size=16, learning_rate=3e-2,
                  validation=(x, flipped), patience=2, progress=False)
    best = history["best_epoch"]
    assert history["stopped_early"] and history["epochs_run"] == best + 3 < 12
    assert history["val_accuracy"][best] == max(history["val_accuracy"])
    restored = float(np.mean(np.asarray(model(x)).argmax(-1) == flipped))
    assert restored == pytest.approx(history["val_accuracy"][best])
    assert history["examples_seen"] == history["epochs_run"] * len(x)


def test_without_patience_the_whole_budget_runs_and_validation_is_recorded():
    x, y = _problem()
    history = fit(_model(), x, y, epochs=3, batch_size=32, learning_rate=3e-2,
                  validation=(x[:50], y[:50]),
                  progress=False)
    assert history["epochs_run"] == 3 and not history["stopped_early"]
    assert len(history["val_accuracy"]) == 3 and history["val_accuracy"][-1] > 0.9


def test_keras_callbacks_see_one_run_with_numbered_epochs(tmp_path):
    x, y = _problem()
    events = []

    class Spy(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            events.append("begin")

        def on_epoch_end(self, epoch, logs=None):
            events.append(("epoch", epoch, sorted(logs)))

        def on_train_batch_end(self, batch, logs=None):
            events.append("batch")

        def on_train_end(self, logs=None):
            events.append("end")

    log = tmp_path / "log.csv"
    fit(_model(), x, y, epochs=3, batch_size=100, validation=(x, y), progress=False,
        callbacks=[Spy(), keras.callbacks.CSVLogger(str(log))])
    assert events[0] == "begin" and events[-1] == "end" and events.count("begin") == 1
    assert [e[1] for e in events if isinstance(e, tuple)] == [0, 1, 2]
    assert events.count("batch") == 6
    assert all(e[2] == ["accuracy", "loss", "val_accuracy"] for e in events if isinstance(e, tuple))
    rows = list(csv.DictReader(log.open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]


def test_a_callback_can_stop_training():
    x, y = _problem()

    class StopAfterOne(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    history = fit(_model(), x, y, epochs=5, progress=False, callbacks=[StopAfterOne()])
    assert history["epochs_run"] == 1 and history["stopped_early"]


def test_the_distillation_loss_matches_a_hand_computation():
    student = np.array([[0.7, 0.3], [0.2, 0.8]], np.float32)
    teacher = np.array([[0.9, 0.1], [0.5, 0.5]], np.float32)
    labels = np.array([0.0, 1.0], np.float32)
    y_true = np.concatenate([labels[:, None], teacher], axis=1)
    t, w = 2.0, 0.6

    def soften(p):
        z = np.exp(np.log(p) / t)
        return z / z.sum(axis=1, keepdims=True)

    hard = -np.log(student[[0, 1], [0, 1]])
    kl = np.sum(soften(teacher) * (np.log(soften(teacher)) - np.log(soften(student))), axis=1)
    expected = np.mean((1 - w) * hard + w * t * t * kl)
    loss = _DistillationLoss(t, w, from_logits=False)
    assert float(loss(y_true, student)) == pytest.approx(expected, rel=1e-5)
    same = np.concatenate([labels[:, None], student], axis=1)
    assert float(_DistillationLoss(t, 1.0, from_logits=False)(same, student)) == \
        pytest.approx(0.0, abs=1e-6)


def test_a_student_follows_its_teacher_over_the_labels():
    x, y = _problem()
    teacher = np.tile([[0.0, 1.0]], (len(x), 1)).astype(np.float32)  # "always class 1"
    model = _model()
    history = fit(model, x, y, epochs=10, batch_size=16, learning_rate=3e-2, teacher=teacher,
                  distill_weight=1.0, temperature=1.0, progress=False)
    assert np.mean(np.asarray(model(x)).argmax(-1) == 1) > 0.95
    assert len(history["accuracy"]) == 10  # label accuracy is still reported


def test_teacher_probabilities_of_the_network_and_of_its_dropout_ensemble():
    x, y = _problem(n=40)
    model = _model(dropout=True)
    fit(model, x, y, epochs=2, progress=False)
    plain = teacher_probabilities(model, x)
    ensemble = teacher_probabilities(model, x, passes=8, seed=1)
    for probs in (plain, ensemble):
        assert probs.shape == (40, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(plain, np.asarray(model(x, training=False)), atol=1e-6)
    assert not np.allclose(plain, ensemble)
    assert np.array_equal(ensemble, teacher_probabilities(model, x, passes=8, seed=1))


@pytest.mark.parametrize("changes, match", [
    ({"patience": 2}, "validation"),
    ({"patience": 0, "validation": "v"}, "patience"),
    ({"teacher": np.ones((3, 2))}, "teacher"),
    ({"teacher": "t", "temperature": 0}, "temperature"),
    ({"teacher": "t", "distill_weight": 1.5}, "distill_weight"),
    ({"validation": (np.zeros((0, 4)), np.zeros(0))}, "validation"),
])
def test_bad_training_settings_are_one_line_errors(changes, match):
    x, y = _problem(n=20)
    if changes.get("validation") == "v":
        changes["validation"] = (x, y)
    if isinstance(changes.get("teacher"), str):
        changes["teacher"] = np.full((20, 2), 0.5, np.float32)
    with pytest.raises(InputError, match=match):
        fit(_model(), x, y, epochs=1, progress=False, **changes)

"""Classical criteria (magnitude, activation, APoZ, Taylor, random) against hand computations.

Tiny models with weights set by hand are checked against numpy forward and backward passes
written here; a small CNN against numpy kernel sums and an independent TensorFlow forward pass.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import subnet.importance.criteria  # noqa: F401  (registers the estimators)
from subnet.engine.chain import analyse_chain
from subnet.importance.core import ESTIMATORS, Importance, estimate
from subnet.models import seed_cnn

CRITERIA = ("magnitude", "activation", "apoz", "taylor", "random")
DATA_CRITERIA = ("activation", "apoz", "taylor")

# The dense model's weights: input 4 -> hidden 3 (relu) -> output 2 (softmax).
W1 = np.array([[0.5, -1.0, 0.2],
               [-0.3, 0.8, 0.0],
               [1.2, 0.1, -0.7],
               [0.0, -0.4, 0.9]], np.float32)
B1 = np.array([0.1, -0.2, 0.05], np.float32)
W2 = np.array([[1.0, -0.5],
               [-0.8, 0.6],
               [0.3, 0.9]], np.float32)
B2 = np.array([0.2, -0.1], np.float32)
X = np.array([[1.0, 0.5, -0.2, 0.3],
              [-0.4, 1.1, 0.6, -0.9],
              [0.2, -0.3, 0.8, 0.5],
              [0.9, 0.9, -1.0, 0.1],
              [-1.2, 0.0, 0.3, 0.7],
              [0.0, 0.0, 0.0, 0.0]], np.float32)
Y = np.array([0, 1, 1, 0, 1, 0])


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _dense_model(w1=W1, b1=B1, w2=W2, b2=B2):
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, activation="relu", name="hidden")(inputs)
    h = keras.layers.Dropout(0.5, name="drop")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(h)
    model = keras.Model(inputs, outputs)
    model.get_layer("hidden").set_weights([w1, b1])
    model.get_layer("out").set_weights([w2, b2])
    return model


def _dense_reference():
    """Hidden activations z (n, 3) and ∂loss_n/∂z (n, 3) by a numpy backward pass."""
    z = np.maximum(X.astype(np.float64) @ W1 + B1, 0.0)
    p = _softmax(z @ W2 + B2)
    grad = (p - np.eye(2)[Y]) @ W2.T
    return z, grad


@pytest.fixture(scope="module")
def dense():
    return _dense_model()


@pytest.fixture(scope="module")
def cnn():
    rng = np.random.default_rng(0)
    model = seed_cnn(8, conv_filters=(3, 4), seed=3)
    x = rng.random((20, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 20)
    return model, x, y


def test_registered_as_model_estimators():
    for name in CRITERIA:
        assert ESTIMATORS[name].name == name
        assert ESTIMATORS[name].source == "model"


# --------------------------------------------------------------------------------------------
# Hand-computable dense model


def test_magnitude_dense_by_hand(dense):
    l1 = estimate((dense, X, Y), "magnitude")
    np.testing.assert_allclose(l1.scores, [2.0, 2.3, 1.8], rtol=1e-6)
    l2 = estimate((dense, X, Y), "magnitude", norm="l2")
    np.testing.assert_allclose(l2.scores, np.sqrt([1.78, 1.81, 1.34]), rtol=1e-6)
    mean = estimate((dense, X, Y), "magnitude", normalize=True)
    np.testing.assert_allclose(mean.scores, np.array([2.0, 2.3, 1.8]) / 4, rtol=1e-6)
    rms = estimate((dense, X, Y), "magnitude", norm="l2", normalize=True)
    np.testing.assert_allclose(rms.scores, np.sqrt(np.array([1.78, 1.81, 1.34]) / 4), rtol=1e-6)
    assert l1.method == "magnitude" and l1.sites == analyse_chain(dense).table
    assert l1.details == {"norm": "l1", "normalize": False, "rate": None,
                          "fan_in": {"hidden": 4}}


def test_activation_and_apoz_dense_by_hand(dense):
    z, _ = _dense_reference()
    assert (z == 0).any() and (z > 0).any()  # the hand weights give the ReLU work to do
    act = estimate((dense, X, Y), "activation", batch_size=4)
    np.testing.assert_allclose(act.scores, np.abs(z).mean(axis=0), rtol=1e-6)
    assert act.details["n_examples"] == 6 and act.details["batch_size"] == 4
    apoz = estimate((dense, X, Y), "apoz")
    np.testing.assert_allclose(apoz.scores, 1.0 - (z == 0).mean(axis=0))
    assert apoz.details["nonnegative"] == {"hidden": True}
    tol = 0.2
    loose = estimate((dense, X, Y), "apoz", tol=tol)
    np.testing.assert_allclose(loose.scores, 1.0 - (np.abs(z) <= tol).mean(axis=0))
    assert not np.array_equal(loose.scores, apoz.scores)


def test_taylor_dense_by_hand(dense):
    z, grad = _dense_reference()
    taylor = estimate((dense, X, Y), "taylor", batch_size=4)
    np.testing.assert_allclose(taylor.scores, np.abs(z * grad).mean(axis=0), rtol=1e-5,
                               atol=1e-8)
    assert taylor.details["from_logits"] is False
    normalized = estimate((dense, X, Y), "taylor", normalize=True)
    np.testing.assert_allclose(normalized.scores, taylor.scores / np.linalg.norm(taylor.scores),
                               rtol=1e-5)


def test_two_sites_logits_by_hand():
    """Two hidden sites (relu, then tanh) and a logits output: checks the chain of segments."""
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(size=(4, 3)), rng.normal(size=3) * 0.1
    w2, b2 = rng.normal(size=(3, 3)), rng.normal(size=3) * 0.1
    w3, b3 = rng.normal(size=(3, 2)), rng.normal(size=2) * 0.1
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, activation="relu", name="h1")(inputs)
    h = keras.layers.Dropout(0.5, name="p1")(h)
    h = keras.layers.Dense(3, activation="tanh", name="h2")(h)
    h = keras.layers.Dropout(0.25, name="p2")(h)
    outputs = keras.layers.Dense(2, name="logits")(h)
    model = keras.Model(inputs, outputs)
    for name, w, b in (("h1", w1, b1), ("h2", w2, b2), ("logits", w3, b3)):
        model.get_layer(name).set_weights([w.astype(np.float32), b.astype(np.float32)])
    x = X.astype(np.float64)
    z1 = np.maximum(x @ w1 + b1, 0.0)
    z2 = np.tanh(z1 @ w2 + b2)
    g_logits = _softmax(z2 @ w3 + b3) - np.eye(2)[Y]
    g2 = g_logits @ w3.T
    g1 = (g2 * (1.0 - z2 ** 2)) @ w2.T

    taylor = estimate((model, X, Y), "taylor", batch_size=5)
    expected = np.concatenate([np.abs(z1 * g1).mean(axis=0), np.abs(z2 * g2).mean(axis=0)])
    np.testing.assert_allclose(taylor.scores, expected, rtol=1e-4, atol=1e-7)
    assert taylor.details["from_logits"] is True
    act = estimate((model, X, Y), "activation")
    np.testing.assert_allclose(act.scores, np.concatenate([z1.mean(0), np.abs(z2).mean(0)]),
                               rtol=1e-5)
    apoz = estimate((model, X, Y), "apoz")
    assert apoz.details["nonnegative"] == {"h1": True, "h2": False}
    np.testing.assert_allclose(apoz.scores[:3], 1.0 - (z1 == 0).mean(axis=0))


def test_conv1d_spatial_mean_by_hand():
    """Positions are averaged per example before the absolute value (Molchanov's Θ)."""
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(2, 1, 2))
    bias = np.array([0.1, -0.2])
    w_out, b_out = rng.normal(size=(8, 2)), np.array([0.0, 0.1])
    inputs = keras.Input((5, 1))
    h = keras.layers.Conv1D(2, 2, name="conv")(inputs)
    h = keras.layers.Flatten(name="flat")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(h)
    model = keras.Model(inputs, outputs)
    model.get_layer("conv").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    model.get_layer("out").set_weights([w_out.astype(np.float32), b_out.astype(np.float32)])
    x = rng.normal(size=(7, 5, 1)).astype(np.float32)
    y = rng.integers(0, 2, 7)

    xs = x[:, :, 0].astype(np.float64)
    z = np.stack([xs[:, m:m + 2] @ kernel[:, 0, :] for m in range(4)], axis=1) + bias  # (7,4,2)
    p = _softmax(z.reshape(7, 8) @ w_out + b_out)
    grad = ((p - np.eye(2)[y]) @ w_out.T).reshape(7, 4, 2)
    expected = np.abs((z * grad).mean(axis=1)).mean(axis=0)

    # No criterion uses a keep probability, so none asks for one: without a rate the site
    # table says keep 1 where the model has no Dropout; the scores are the same either way.
    unasked = estimate((model, x, y), "taylor")
    assert unasked.sites[0].keep == 1.0
    taylor = estimate((model, x, y), "taylor", rate=0.5)
    np.testing.assert_allclose(taylor.scores, expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(unasked.scores, taylor.scores)
    assert not np.allclose(taylor.scores, np.abs(z * grad).mean(axis=(0, 1)))
    assert taylor.sites[0].keep == 0.5 and taylor.details["rate"] == 0.5
    assert taylor.details["positions"] == {"conv": 4}
    act = estimate((model, x, y), "activation", rate=0.5)
    np.testing.assert_allclose(act.scores, np.abs(z).mean(axis=(0, 1)), rtol=1e-5)
    mag = estimate((model, x, y), "magnitude", rate={"conv": 0.25})
    np.testing.assert_allclose(mag.scores, np.abs(kernel).sum(axis=(0, 1)), rtol=1e-6)
    assert mag.sites[0].keep == 0.75 and mag.details["rate"] == {"conv": 0.25}


@pytest.mark.parametrize("name", ("magnitude",) + DATA_CRITERIA)
def test_scores_follow_a_permutation_of_units(dense, name):
    perm = np.array([2, 0, 1])
    permuted = _dense_model(W1[:, perm], B1[perm], W2[perm], B2)
    np.testing.assert_allclose(permuted.predict(X, verbose=0), dense.predict(X, verbose=0),
                               rtol=1e-6)
    base = estimate((dense, X, Y), name)
    moved = estimate((permuted, X, Y), name)
    np.testing.assert_allclose(moved.scores, base.scores[perm], rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------------
# A small CNN


@pytest.mark.parametrize("name", CRITERIA)
def test_contract_on_cnn(cnn, name):
    model, x, y = cnn
    imp = estimate(cnn, name)
    table = analyse_chain(model).table
    assert isinstance(imp, Importance) and imp.method == name
    assert imp.sites == table and imp.scores.shape == (table.n_units,) == (15,)
    assert np.isfinite(imp.scores).all() and (imp.scores >= 0).all()
    json.dumps(imp.details)  # JSON-ready
    again = estimate((model, x, y), name)
    assert again == imp


def test_magnitude_cnn_is_kernel_sums(cnn):
    model = cnn[0]
    kernels = [np.asarray(model.get_layer(n).kernel, np.float64) for n in ("conv1", "conv2",
                                                                           "dense")]
    imp = estimate(cnn, "magnitude")
    np.testing.assert_allclose(imp.scores, np.concatenate(
        [np.abs(kernels[0]).sum(axis=(0, 1, 2)), np.abs(kernels[1]).sum(axis=(0, 1, 2)),
         np.abs(kernels[2]).sum(axis=0)]), rtol=1e-6)
    assert imp.details["fan_in"] == {"conv1": 25, "conv2": 75, "dense": 64}


def test_cnn_against_independent_forward(cnn):
    """Activation and Taylor on the CNN equal a forward pass written with tf.nn ops."""
    model, x, y = cnn
    weights = {n: [tf.constant(w) for w in model.get_layer(n).get_weights()]
               for n in ("conv1", "conv2", "dense", "classifier")}
    with tf.GradientTape(persistent=True) as tape:
        a1 = tf.nn.max_pool2d(tf.nn.conv2d(x, weights["conv1"][0], 1, "VALID")
                              + weights["conv1"][1], 2, 2, "VALID")
        tape.watch(a1)
        a2 = tf.nn.max_pool2d(tf.nn.conv2d(a1, weights["conv2"][0], 1, "VALID")
                              + weights["conv2"][1], 2, 2, "VALID")
        tape.watch(a2)
        a3 = tf.nn.relu(tf.reshape(a2, (len(x), -1)) @ weights["dense"][0] + weights["dense"][1])
        tape.watch(a3)
        logits = a3 @ weights["classifier"][0] + weights["classifier"][1]
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    points = [a1, a2, a3]
    grads = tape.gradient(loss, points)
    taylor_ref, act_ref = [], []
    for a, g in zip(points, grads, strict=True):
        a, g = a.numpy().astype(np.float64), g.numpy().astype(np.float64)
        a, g = a.reshape(len(x), -1, a.shape[-1]), g.reshape(len(x), -1, g.shape[-1])
        taylor_ref.append(np.abs((a * g).mean(axis=1)).mean(axis=0))
        act_ref.append(np.abs(a).mean(axis=(0, 1)))
    taylor = estimate(cnn, "taylor", batch_size=8)
    np.testing.assert_allclose(taylor.scores, np.concatenate(taylor_ref), rtol=1e-3, atol=1e-7)
    act = estimate(cnn, "activation", batch_size=8)
    np.testing.assert_allclose(act.scores, np.concatenate(act_ref), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", DATA_CRITERIA)
def test_batch_size_does_not_change_scores(cnn, name):
    small = estimate(cnn, name, batch_size=3)
    large = estimate(cnn, name, batch_size=256)
    np.testing.assert_allclose(small.scores, large.scores, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", DATA_CRITERIA)
def test_dropout_baked_on_is_off_for_criteria(cnn, name):
    """The same weights with dropout applied at test time give the same (inference) scores."""
    model, x, y = cnn
    baked = seed_cnn(8, conv_filters=(3, 4), seed=3, always_on_dropout=True)
    baked.set_weights(model.get_weights())
    np.testing.assert_allclose(estimate((baked, x, y), name).scores,
                               estimate(cnn, name).scores, rtol=1e-6)


def test_random_is_seeded(cnn):
    a = estimate(cnn, "random", seed=1)
    assert a == estimate(cnn, "random", seed=1)
    assert not np.array_equal(a.scores, estimate(cnn, "random", seed=2).scores)
    np.testing.assert_array_equal(a.scores, np.random.default_rng(1).random(15))
    assert ((a.scores >= 0) & (a.scores < 1)).all()


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(("name", "options", "error", "match"), [
    ("magnitude", {"norm": "l3"}, ValueError, r"`norm`.*'l1', 'l2'.*norm='l3'"),
    ("magnitude", {"normalize": "yes"}, TypeError, r"`normalize`.*bool"),
    ("activation", {"batch_size": 0}, ValueError, r"`batch_size`.*an int >= 1.*batch_size=0"),
    ("taylor", {"batch_size": 2.5}, ValueError, r"`batch_size`"),
    ("apoz", {"tol": -0.1}, ValueError, r"`tol`.*>= 0"),
    ("apoz", {"tol": float("nan")}, ValueError, r"`tol`"),
    ("random", {"seed": -1}, ValueError, r"`seed`.*an int >= 0"),
    ("taylor", {"rate": 1.5}, ValueError, r"`rate`.*\[0, 1\)"),
    ("activation", {"rate": {"dense": "half"}}, ValueError, r"`rate\['dense'\]`"),
    ("apoz", {"threshold": 0.1}, TypeError, r"threshold"),
])
def test_bad_options(dense, name, options, error, match):
    with pytest.raises(error, match=match):
        estimate((dense, X, Y), name, **options)


@pytest.mark.parametrize("name", CRITERIA)
def test_bad_sources(dense, name):
    with pytest.raises(TypeError, match=r"pass \(model, x, y\)"):
        estimate("model.keras", name)
    with pytest.raises(TypeError, match=r"pass \(model, x, y\)"):
        estimate((dense, X), name)
    with pytest.raises(ValueError, match="one label per example"):
        estimate((dense, X, Y[:-1]), name)
    with pytest.raises(ValueError, match=r"expects examples of shape \(4,\)"):
        estimate((dense, X[:, :3], Y), name)


def test_unknown_site_in_rate(dense):
    with pytest.raises(ValueError, match="are not sites"):
        estimate((dense, X, Y), "activation", rate={"nope": 0.5})

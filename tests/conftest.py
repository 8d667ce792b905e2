"""Fixtures shared by several test modules."""

import subprocess
import sys
from pathlib import Path

import keras
import pytest

import subnet
from subnet.models import seed_cnn
from subnet.train import fit

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def keras2_dir(tmp_path_factory):
    """Keras 2 (tf_keras) .h5 files built the blog's ways, made in a child process."""
    pytest.importorskip("tf_keras", reason="tf_keras is installed with subnet's [tfmot] extra")
    out = tmp_path_factory.mktemp("keras2")
    subprocess.run([sys.executable, str(FIXTURES / "make_keras2_models.py"), str(out)],
                   check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def mnist():
    try:
        data = subnet.load_dataset("mnist")
    except ValueError as err:
        pytest.skip(f"MNIST is not available here: {err}")
    return data.subset(n_train=3000, n_test=96)


def _init(i):
    return keras.initializers.GlorotUniform(seed=i)


def _dense_only(logits=False):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(32, activation="relu", kernel_initializer=_init(1), name="d1")(x)
    x = keras.layers.Dropout(0.5, name="p1")(x)
    x = keras.layers.Dense(16, activation="relu", kernel_initializer=_init(2), name="d2")(x)
    x = keras.layers.Dropout(0.25, name="p2")(x)
    outputs = keras.layers.Dense(10, activation=None if logits else "softmax",
                                 kernel_initializer=_init(3), name="out")(x)
    return keras.Model(inputs, outputs, name="dense_only")


def conv_bn_model():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(6, 3, kernel_initializer=_init(4), name="c1")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.8, name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, kernel_initializer=_init(5),
                            name="c2")(x)
    x = keras.layers.BatchNormalization(momentum=0.8, name="bn2")(x)
    x = keras.layers.Activation("elu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(10, kernel_initializer=_init(6), name="logits")(x)
    return keras.Model(inputs, x, name="conv_bn")


def _conv1d():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Reshape((28, 28))(inputs)  # prefix: any layers before the first site
    x = keras.layers.Conv1D(5, 3, strides=2, activation="relu", kernel_initializer=_init(7),
                            name="k1")(x)
    x = keras.layers.SpatialDropout1D(0.3)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(7, activation="tanh", kernel_initializer=_init(8), name="k2")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(10, activation="softmax", kernel_initializer=_init(9))(x)
    return keras.Model(inputs, outputs, name="conv1d")


@pytest.fixture(scope="session")
def trained(mnist):
    """Small real networks of every supported shape, trained briefly on an MNIST slice."""
    models = {
        "dense": _dense_only(),
        "dense_logits": _dense_only(logits=True),
        "conv": seed_cnn(16, conv_filters=(4, 6), seed=1),
        "conv_bn": conv_bn_model(),
        "conv1d": _conv1d(),
    }
    for model in models.values():
        fit(model, mnist.x_train, mnist.y_train, epochs=8,
            learning_rate=3e-3, progress=False, seed=0)
    return models


# Dropout rate to mask with, for the models whose sites have no Dropout after them.
RATES = {"dense": None, "dense_logits": None, "conv": None, "conv_bn": 0.5, "conv1d": None}

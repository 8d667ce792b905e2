"""Small real networks of every architecture the engine supports, and test utilities."""

import os
import shutil

import keras
import pytest

# Dropout rate to mask with, for the models whose sites have no Dropout after them.
RATES = {"dense": None, "dense_logits": None, "conv": None, "conv_bn": 0.5, "conv1d": None}


def skip_or_fail(reason: str):
    """Skips the calling test, or fails it under CI, where nothing may be silently missing.

    CI sets the environment variable ``CI`` (to ``true``); there a missing data set or tool is a
    broken set-up, not a reason to run fewer tests. Call it where ``pytest.skip`` would be.

    Args:
        reason: Why the test cannot run, e.g. "MNIST is not available here: ...".

    Raises:
        pytest.fail.Exception: Under CI.
        pytest.skip.Exception: Elsewhere.
    """
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def poppler(tool: str) -> str:
    """The path of one of poppler's tools (pdfinfo, pdftotext, pdffonts), or skip_or_fail."""
    path = shutil.which(tool)
    if path is None:
        skip_or_fail(f"poppler's `{tool}` is not installed (Debian package poppler-utils; "
                     "`make test` installs it as root)")
    return path


def _init(i):
    return keras.initializers.GlorotUniform(seed=i)


def tiny_dense_task():
    """A 6-8-3 softmax classifier (its hidden layer named ``hidden``) and a random 3-class
    Dataset for it: 120 training and 30 test examples."""
    import numpy as np

    from subnet.data import Dataset

    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    rng = np.random.default_rng(0)
    data = Dataset(name="tiny", x_train=rng.random((120, 6), dtype=np.float32),
                   y_train=np.arange(120) % 3, x_test=rng.random((30, 6), dtype=np.float32),
                   y_test=np.arange(30) % 3, num_classes=3)
    return model, data


def dense_only_model(logits=False):
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


def conv1d_model():
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

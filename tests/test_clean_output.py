"""A normal run prints progress and results only: no TensorFlow retracing notices, no Python
warning lines for what is not a problem, and a real warning as one line of the command."""

import logging
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import subnet
from subnet.engine import make_backend
from subnet.engine.chain import analyse_chain

NOISE = ("retracing", "Warning:", "warnings.warn", "WARNING:", "Traceback")


def _chain_model(seed):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, activation="relu", name="hidden",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))


def _branching_model(path=None):
    inputs = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(a)
    x = keras.layers.Flatten()(keras.layers.Add(name="merge")([a, b]))
    x = keras.layers.Dense(6, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(0.5)(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x),
                        name="branching")
    if path is not None:
        model.save(path)
    return model


@pytest.mark.parametrize("backend", ["fast", "reference", "graph"])
def test_backends_made_in_a_loop_do_not_trip_the_retracing_warning(backend, caplog):
    """One backend per model, as iterative pruning makes them: each traces its own program
    once, which TensorFlow counted against the method's code and called excessive."""
    caplog.set_level(logging.WARNING, logger="tensorflow")
    x = np.random.default_rng(0).random((6, 8, 8, 1), dtype=np.float32)
    for seed in range(7):
        chain = analyse_chain(_chain_model(seed), 0.5)
        masks = subnet.sample_masks(chain.table.unit_keep(), seed, range(4))
        probabilities = make_backend(chain, backend).probabilities(x, masks)
        assert probabilities.shape == (4, 6, 3)
    assert "retracing" not in caplog.text


def test_the_graph_backend_for_a_branching_model_is_no_warning(tmp_path):
    model = _branching_model()
    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # subnet's (Keras has DeprecationWarnings)
        record = subnet.record_masks(model, x, np.arange(5) % 3, 4, rate=0.5,
                                     out=tmp_path / "r", progress=False)
    assert record.meta["backend"] == "graph"  # the reason is still recorded
    assert "branches, merges or coupled channels" in record.meta["backend_fallback"]


def test_a_record_and_an_analysis_print_only_progress_and_results(tmp_path):
    """python -m subnet.record and subnet.analyze on a branching model (the graph backend,
    several chunks, subnetworks fine-tuned and evaluated one after another): stderr holds no
    warning of TensorFlow's or Python's."""
    _branching_model(tmp_path / "branching.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_test=rng.random((40, 8, 8), dtype=np.float32),
             y_test=np.arange(40) % 3, x_train=rng.random((300, 8, 8), dtype=np.float32),
             y_train=np.arange(300) % 3)
    common = [str(tmp_path / "branching.keras"), "--dataset", str(tmp_path / "data.npz"),
              "--rate", "0.5", "--examples", "10", "--quiet"]
    runs = {
        "record": ["-m", "subnet.record", *common, "--masks", "96", "--chunk-size", "16",
                   "--out", str(tmp_path / "record")],
        "analyze": ["-m", "subnet.analyze", *common, "--masks", "20", "--passes", "1",
                    "--methods", "magnitude,random", "--budgets", "0.5,0.25",
                    "--finetune-epochs", "0.1", "--formats", "json",
                    "--out", str(tmp_path / "analysis")],
    }
    for name, argv in runs.items():
        result = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                                timeout=600, cwd=tmp_path)
        assert result.returncode == 0, (name, result.stderr[-3000:])
        noise = [line for line in result.stderr.splitlines()
                 if any(word in line for word in NOISE)]
        assert noise == [], (name, noise)
        assert result.stderr.strip() == "", (name, result.stderr[-3000:])  # --quiet: nothing


def test_a_warning_is_one_line_of_the_command():
    """A real warning still shows, as one line naming the command, without Python's file, line
    and source (and with control characters escaped)."""
    code = ("import warnings\n"
            "from subnet.cli import run_main\n"
            "run_main(lambda: warnings.warn('3 scores are NaN\\x1b[2J', RuntimeWarning), 'prog')\n"
            "warnings.warn('outside the command', UserWarning)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    lines = result.stderr.splitlines()
    assert lines[0] == "prog: warning: 3 scores are NaN\\x1b[2J"
    assert "UserWarning: outside the command" in lines[1]  # Python's own format is restored

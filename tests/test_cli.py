"""The smaller command-line tools (subnet.train, subnet.report): bad input in one line, before any
work, and no file that subnet did not write is replaced."""

import json
import subprocess
import sys

import pytest

from subnet.report.__main__ import main as report_main
from subnet.train import main as train_main


@pytest.mark.parametrize("argv, words", [
    (["--epochs", "0"], ["--epochs"]),
    (["--seed", "-1"], ["--seed"]),
    (["--mc-samples", "1000000000"], ["--mc-samples"]),
    (["--rates", "0.5", "1.5", "0.5"], ["--rates"]),
    (["--out", "model.txt"], ["--out", ".keras"]),
])
def test_train_checks_options_before_loading_data(argv, words, capsys, monkeypatch, tmp_path):
    import subnet.data

    def never(*args, **kwargs):
        raise AssertionError("data was loaded")

    monkeypatch.setattr(subnet.data, "load_dataset", never)
    monkeypatch.chdir(tmp_path)
    assert train_main([*argv, "--quiet"]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and line.startswith("subnet.train: error:")
    for word in words:
        assert word in line


def test_train_does_not_replace_an_existing_file(tmp_path, capsys):
    mine = tmp_path / "mine.keras"
    mine.write_bytes(b"precious")
    assert train_main(["--out", str(mine), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert mine.read_bytes() == b"precious"


def test_train_usage_errors_are_one_line():
    result = subprocess.run([sys.executable, "-m", "subnet.train", "--epochs", "two"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--help" in result.stderr


def test_report_does_not_replace_a_report_it_did_not_write(tmp_path, capsys):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"not": "checked yet"}))
    foreign = tmp_path / "site"
    foreign.mkdir()
    (foreign / "report.html").write_text("<p>my own page</p>")
    assert report_main([str(results), "--out", str(foreign), "--formats", "html"]) == 2
    assert "was not written by subnet" in capsys.readouterr().err
    assert (foreign / "report.html").read_text() == "<p>my own page</p>"


def test_report_cli_has_a_version():
    result = subprocess.run([sys.executable, "-m", "subnet.report", "--version"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("subnet ")


def _environment_without_onednn_setting(**extra: str) -> dict:
    """This process's environment for a child, less TF_ENABLE_ONEDNN_OPTS, plus ``extra``."""
    import os

    return {**{k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}, **extra}


@pytest.mark.parametrize("setting, expected", [(None, "0"), ("1", "1")])
def test_onednn_is_off_unless_the_environment_says_otherwise_and_is_recorded(setting, expected):
    """The command-line tools import TensorFlow through subnet._quiet before anything else; the
    kernels' setting must reach TensorFlow there, and subnet.versions() must say which it was."""
    env = _environment_without_onednn_setting()
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    code = ("from subnet._quiet import quiet_tensorflow_warnings; quiet_tensorflow_warnings(); "
            "import os, subnet; print(os.environ['TF_ENABLE_ONEDNN_OPTS'], "
            "subnet.versions()['onednn'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [expected, expected]


def test_training_a_strided_1x1_convolution_on_one_thread_does_not_crash():
    """With TensorFlow 2.21's oneDNN kernels on and one intra-op thread (a Ray worker's or a
    ``make analyses`` job's setting), training a 1x1 stride-2 convolution (a ResNet's projection
    shortcut) corrupts the heap and kills the process; subnet's default keeps them off."""
    env = _environment_without_onednn_setting(TF_NUM_INTRAOP_THREADS="1",
                                              TF_NUM_INTEROP_THREADS="1")
    code = """
import numpy as np
from subnet.runtime import keras
inputs = keras.Input((32, 32, 3))
x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
x = keras.layers.Conv2D(8, 1, strides=2, use_bias=False)(x)
x = keras.layers.Conv2D(16, 1, strides=2, use_bias=False)(x)
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
model.compile("adam", "sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x, y = rng.random((512, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 512)
for _ in range(3):
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
print("trained")
"""
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.split() == ["trained"], result.stderr[-2000:]

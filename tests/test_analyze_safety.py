"""subnet.analyze on bad input and in hostile folders: nothing lost, nothing misreported.

Tiny untrained models on tiny synthetic data sets, so every case runs in seconds and without
MNIST.
"""

import errno
import fcntl
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from subnet import analyze as analyze_module
from subnet._outdir import LOCK, MARKER
from subnet.analyze import main, runner

FAST = ["--masks", "20", "--examples", "10", "--passes", "1", "--methods", "banzhaf,random",
        "--budgets", "0.5", "--finetune-epochs", "0", "--formats", "json", "--quiet"]


def _tiny_model(path, dropout=True):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(6, activation="relu", name="hidden",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=1))(x)
    if dropout:
        x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=2))(x)
    keras.Model(inputs, outputs, name="tiny").save(path)
    return path


def _tiny_data(path, train=True):
    rng = np.random.default_rng(0)
    arrays = {"x_test": rng.random((40, 8, 8), dtype=np.float32),
              "y_test": np.arange(40) % 3}
    if train:
        arrays.update(x_train=rng.random((300, 8, 8), dtype=np.float32),
                      y_train=np.arange(300) % 3)
    np.savez(path, **arrays)
    return path


@pytest.fixture()
def case(tmp_path):
    return {"model": str(_tiny_model(tmp_path / "tiny.keras")),
            "data": str(_tiny_data(tmp_path / "tiny.npz")), "dir": tmp_path}


def _run(case, out, *extra):
    return main([case["model"], "--dataset", case["data"], "--out", str(out), *FAST, *extra])


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("subnet.analyze: error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


def test_a_folder_subnet_did_not_make_is_refused_and_left_untouched(case, capsys):
    project = case["dir"] / "project"
    for name in ("models", "record", "state"):
        (project / name).mkdir(parents=True)
        (project / name / "mine.txt").write_text("user data")
    (project / "comparison.json").write_text("{}")
    (project / "results.json").write_text("{}")
    assert _run(case, project) == 2
    _one_line_error(capsys, "not empty", "was not made by subnet")
    assert sorted(p.name for p in project.iterdir()) == [
        "comparison.json", "models", "record", "results.json", "state"]
    assert (project / "models" / "mine.txt").read_text() == "user data"


def test_a_new_run_deletes_only_what_subnet_wrote(case):
    out = case["dir"] / "run"
    assert _run(case, out) == 0
    assert (out / MARKER).is_file() and (out / "results.json").is_file()
    (out / "notes.txt").write_text("mine")
    assert _run(case, out, "--seed", "3") == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "results.json").read_text())["config"]["seed"] == 3


def test_a_folder_in_use_by_another_analysis_is_refused(case, capsys):
    out = case["dir"] / "busy"
    assert _run(case, out) == 0
    before = (out / "results.json").read_bytes()
    with open(out / LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert _run(case, out, "--seed", "4") == 2
    _one_line_error(capsys, "in use by another analysis")
    assert (out / "results.json").read_bytes() == before


def test_a_failed_rerun_leaves_no_results_of_the_previous_run(case, monkeypatch, capsys):
    out = case["dir"] / "rerun"
    assert _run(case, out) == 0

    def broken(*args, **kwargs):
        raise RuntimeError("stage broke")

    monkeypatch.setattr(runner, "_record", broken)
    assert _run(case, out, "--seed", "5") == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "stage broke" in err
    assert not (out / "results.json").exists() and not (out / "subnetwork.keras").exists()
    assert "stage broke" in (out / "analyze-error.log").read_text()


def test_subnet_bugs_are_internal_errors_not_bad_input(case, monkeypatch, capsys):
    def bug(*args, **kwargs):
        raise ValueError("an internal invariant failed")  # not subnet's validation

    monkeypatch.setattr(runner, "_importance", bug)
    out = case["dir"] / "bug"
    assert _run(case, out) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and str(out / "analyze-error.log") in err


def test_an_internal_error_before_the_folder_is_claimed_logs_elsewhere(case, monkeypatch,
                                                                     capsys, tmp_path):
    def bug(*args, **kwargs):
        raise KeyError("early")

    monkeypatch.setattr(runner, "_check_outputs", bug)  # the last check before the claim
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    assert _run(case, foreign) == 1
    assert sorted(p.name for p in foreign.iterdir()) == ["keep.txt"]
    assert "subnet-analyze-error-" in capsys.readouterr().err


def test_a_model_without_dropout_is_analysed_with_rate(case, tmp_path):
    model = _tiny_model(tmp_path / "plain.keras", dropout=False)
    out = tmp_path / "plain"
    assert main([str(model), "--dataset", case["data"], "--out", str(out), "--rate", "0.5",
                 *FAST]) == 0
    blog = json.loads((out / "results.json").read_text())["blog"]
    assert blog["dropout"].startswith("unit masks")
    assert len(blog["examples"][0]["prob_mean"]) == 3


def test_a_dataset_without_a_training_split_is_analysed_without_comparison(case, tmp_path):
    data = _tiny_data(tmp_path / "test_only.npz", train=False)
    out = tmp_path / "test_only"
    assert main([case["model"], "--dataset", str(data), "--out", str(out), *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["comparison"] is None and results["answer"]["subnetwork"] is None
    assert results["inputs"]["dataset"]["n_train"] == 0


@pytest.mark.parametrize("option, value, words", [
    ("--budgets", "1e-9", ["--budgets", "one unit per site"]),
    ("--seed", str(2**32), ["--seed"]),
    ("--masks", "1000000000000", ["--masks"]),
    ("--passes", "100000000", ["--passes"]),
    ("--repeats", "1000000", ["--repeats"]),
    ("--tolerance", "nan", ["--tolerance"]),
    ("--budgets", "0.5,x", ["--budgets", "comma-separated"]),
])
def test_option_errors_come_before_any_work(case, option, value, words, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(runner, "_blog", never)
    out = case["dir"] / "never"
    code = _run(case, out, option, value)
    assert code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    for word in words:
        assert word in lines[0]
    assert not out.exists()


def test_examples_beyond_the_test_set_are_recorded_as_used(case):
    out = case["dir"] / "examples"
    assert _run(case, out, "--examples", "100000") == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["examples"] == 40
    assert results["blog"]["record"]["n_examples"] == 40


def test_too_few_training_examples_fail_before_work(case, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "few.npz", x_train=rng.random((30, 8, 8), dtype=np.float32),
             y_train=np.arange(30) % 3, x_test=rng.random((20, 8, 8), dtype=np.float32),
             y_test=np.arange(20) % 3)
    out = tmp_path / "few"
    assert main([case["model"], "--dataset", str(tmp_path / "few.npz"), "--out", str(out),
                 *FAST]) == 2
    _one_line_error(capsys, "training examples")
    assert not out.exists()


def test_an_out_folder_that_cannot_be_made_is_one_line(case, capsys):
    blocker = case["dir"] / "a_file"
    blocker.write_text("x")
    assert _run(case, blocker / "sub") == 2
    _one_line_error(capsys, str(blocker))


def test_a_full_disk_is_one_line_naming_the_file(case, monkeypatch, capsys):
    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runner, "atomic_write_text", full)
    out = case["dir"] / "full"
    assert _run(case, out) == 2
    _one_line_error(capsys, "No space left on device", str(out))


def test_list_options_are_comma_separated_and_leave_the_model_alone():
    args = analyze_module._parse_args(["--budgets", "0.5,0.25", "m.keras", "--methods",
                                       "banzhaf,random"])
    assert args.model == "m.keras" and args.budgets == [0.5, 0.25]
    assert args.methods == ["banzhaf", "random"]


def test_help_states_each_default_once():
    text = subprocess.run([sys.executable, "-m", "subnet.analyze", "--help"],
                          capture_output=True, text=True, timeout=60).stdout
    assert "(default: None)" not in text and "--version" in text
    flat = " ".join(text.split())
    assert "(default: 1500)" in flat and "(default: 0.5,0.125,0.03125)" in flat


def test_help_and_usage_errors_do_not_import_tensorflow():
    for argv in (["--help"], ["--version"], ["model.keras", "--bogus"]):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "subnet.analyze",
                                 *argv], capture_output=True, text=True, timeout=60)
        assert " tensorflow" not in result.stderr.replace("|", " "), argv
    result = subprocess.run([sys.executable, "-m", "subnet.analyze", "m.keras", "--bogus"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_control_characters_never_reach_the_terminal(tmp_path, capsys):
    name = tmp_path / "evil\x1b]0;owned\x07\x1b[2J.keras"
    assert main([str(name), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b" in err


def test_names_tensorflow_refuses_are_analysed_and_reported_as_in_the_file(case, tmp_path):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(6, activation="relu", name="hidden <b>layer<b> $1")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
    path = tmp_path / "odd.keras"
    keras.Model(inputs, outputs, name="modèle 'quoted'").save(path)
    out = tmp_path / "odd"
    assert main([str(path), "--dataset", case["data"], "--out", str(out), *FAST[:-3],
                 "--formats", "json,html", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert "hidden <b>layer<b> $1" in results["model"]["original_names"].values()
    page = (out / "report.html").read_text()
    assert "hidden &lt;b&gt;layer&lt;b&gt; $1" in page and "<b>layer<b>" not in page


def test_a_trusted_model_with_a_lambda_is_analysed(case, tmp_path, capsys):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    out = tmp_path / "lambda"
    assert main([str(path), "--dataset", case["data"], "--out", str(out), *FAST]) == 2
    assert "--trust-model" in capsys.readouterr().err
    assert main([str(path), "--dataset", case["data"], "--out", str(out), "--trust-model",
                 *FAST]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["trust_model"] and results["comparison"]["rows"]


def test_the_thorough_protocol_answers_from_gradual_trajectories(case, tmp_path):
    out = tmp_path / "thorough"
    argv = [case["model"], "--dataset", case["data"], "--out", str(out), "--protocol",
            "thorough", "--methods", "magnitude,random", "--budgets", "0.5", "--masks", "20",
            "--examples", "10", "--passes", "1", "--formats", "json", "--quiet"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["protocol"] == "thorough"
    rows = results["comparison"]["rows"]
    assert {r["method"] for r in rows} == {"magnitude", "random"}
    for row in rows:
        assert row["flops"] <= 0.5 * results["model"]["flops"]
        assert 0 <= row["scratch_accuracy"] <= 1 and 0 <= row["val_accuracy"] <= 1
    assert results["comparison"]["config"]["protocol"]["name"] == "thorough+custom"
    assert "thorough protocol" in " ".join(results["answer"]["sentences"])


def test_the_thorough_protocol_refuses_methods_it_cannot_run(case, capsys):
    assert _run(case, case["dir"] / "t", "--protocol", "thorough", "--methods", "tfmot") == 2
    _one_line_error(capsys, "--methods", "thorough")

"""python -m subnet.analyze's command line: values are checked before TensorFlow starts, and every
message names what the user gave (an option, a file) and the fix, never Python's spelling.

Tiny untrained models on tiny synthetic data sets, as in test_analyze_safety.py.
"""

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import subnet
from subnet.analyze import inputs, main
from subnet.models import load_model, with_dropout
from tests.test_analyze_safety import FAST, _tiny_data, _tiny_model

# Python's spellings that must not reach a command-line message: `argument`, name=True,
# meta['key'], and the record's internal field names.
INTERNAL = re.compile(r"`\w+`|\b\w+=(True|False|None)\b|\bmeta\[|true_prob|\bn_test=")


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("subnet.analyze: error:"), err
    assert "Traceback" not in err
    assert not INTERNAL.search(lines[0]), lines[0]
    return lines[0]


@pytest.fixture()
def case(tmp_path):
    return {"model": str(_tiny_model(tmp_path / "tiny.keras")),
            "data": str(_tiny_data(tmp_path / "tiny.npz")), "dir": tmp_path}


@pytest.mark.parametrize("argv, words", [
    (["{model}", "--budgets", "0.5,2"], ["--budgets", "(0, 1)", "Received: 0.5,2"]),
    (["{dir}/missing.keras"], ["Model file not found", "missing.keras"]),
    (["{model}", "--dataset", "{dir}/nowhere.npz"], ["--dataset", "nowhere.npz", "unknown"]),
    (["{model}", "--ood", "nowhere"], ["--ood", "nowhere", "none"]),
    (["{model}", "--dataset", "mnist", "--data-dir", "{dir}/nowhere"], ["--data-dir"]),
    (["{model}", "--record", "{dir}/nowhere"], ["--record", "python -m subnet.record"]),
    (["{model}", "--ray", "bogus"], ["--ray", "bogus", "local"]),
    (["{model}", "--ray", "processes:0"], ["--ray", "processes:0", "processes:N"]),
    (["{model}", "--formats", "html,docx"], ["--formats", "docx"]),
    (["{model}", "--out", "{model}"], ["--out", "not a folder"]),
    (["{model}", "--max-data-bytes", "0"], ["--max-data-bytes", "512M"]),
    (["{model}", "--examples", "5"], ["--examples", "[10,"]),
])
def test_value_errors_come_before_tensorflow_starts(tmp_path, argv, words):
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read: the values are wrong before the model is needed")
    argv = [a.format(model=model, dir=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    # The command as python -m runs it, then which of the heavy modules it imported.
    script = ("import runpy, sys\n"
              f"sys.argv = ['subnet.analyze', *{argv!r}]\n"
              "try:\n"
              "    runpy.run_module('subnet.analyze', run_name='__main__', alter_sys=True)\n"
              "except SystemExit as exit_:\n"
              "    code = exit_.code\n"
              "print(sorted(m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules))\n"
              "sys.exit(code)\n")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    seconds = time.perf_counter() - started
    message = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(message) == 1 and "error:" in message[0], message
    for word in words:
        assert word in message[0], message[0]
    assert not INTERNAL.search(message[0]), message[0]
    assert result.stdout.strip() == "[]"  # neither TensorFlow, Keras nor Ray was imported
    assert seconds < 60  # about 0.3 s on an idle machine; TensorFlow alone takes 5-10 s
    assert not (tmp_path / "out").exists()


def test_a_data_set_too_small_is_named_not_an_option_the_user_did_not_give(case, capsys):
    rng = np.random.default_rng(0)
    for n in (1, 5):
        path = case["dir"] / f"few{n}.npz"
        np.savez(path, x_test=rng.random((n, 8, 8), dtype=np.float32), y_test=np.arange(n) % 3,
                 x_train=rng.random((300, 8, 8), dtype=np.float32), y_train=np.arange(300) % 3)
        code = main([case["model"], "--dataset", str(path), "--out", str(case["dir"] / "o"),
                     "--budgets", "0.5", "--quiet"])
        assert code == 2
        line = _error_line(capsys)
        assert f"few{n}.npz" in line and f"has {n} test example" in line
        assert "--examples" not in line
    assert not (case["dir"] / "o").exists()


def test_a_model_with_nan_outputs_is_named_before_any_work(case, capsys):
    model = load_model(case["model"])
    model.get_layer("hidden").set_weights([np.full(w.shape, np.nan, np.float32)
                                           for w in model.get_layer("hidden").get_weights()])
    path = case["dir"] / "diverged.keras"
    model.save(path)
    assert main([str(path), "--dataset", case["data"], "--out", str(case["dir"] / "o"),
                 *FAST]) == 2
    line = _error_line(capsys)
    assert "diverged.keras" in line and "NaN or infinite outputs" in line
    assert not (case["dir"] / "o").exists()


def _record(case, folder, n_masks, backend="auto"):
    """The record subnet.analyze would make (dropout off, the model's rates), as
    python -m subnet.record makes it."""
    from subnet.record import site_rates

    model = load_model(case["model"])
    data = subnet.load_dataset(case["data"])
    return subnet.record_masks(with_dropout(model, on=False), data.x_test[:10], data.y_test[:10],
                               n_masks, rate=site_rates(model, None), out=case["dir"] / folder,
                               progress=False, backend=backend)


def test_record_messages_name_the_option_and_the_file_keys(case, capsys):
    run = [case["model"], "--dataset", case["data"], "--out", str(case["dir"] / "o"), *FAST]
    _record(case, "small", 10)
    assert main([*run, "--record", str(case["dir"] / "small")]) == 2
    line = _error_line(capsys)
    assert "--record" in line and "10 masks" in line and "--masks N" in line
    bad = case["dir"] / "bad"
    _record(case, "bad", 20)
    meta = json.loads((bad / "meta.json").read_text())
    meta["n_masks"] = "twenty"
    (bad / "meta.json").write_text(json.dumps(meta))
    assert main([*run, "--record", str(bad)]) == 2
    line = _error_line(capsys)
    assert "--record" in line and "n_masks must be of type int" in line
    assert "n_masks='twenty'" in line and "python -m subnet.record" in line
    assert not (case["dir"] / "o").exists()


def test_a_record_made_with_another_backend_is_used_as_it_is(case):
    """It was refused naming `backend` and --backend, an option subnet.analyze does not have."""
    _record(case, "by_reference", 20, backend="reference")
    out = case["dir"] / "o"
    assert main([case["model"], "--dataset", case["data"], "--out", str(out), *FAST,
                 "--methods", "random", "--record", str(case["dir"] / "by_reference")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["importance"]["record_backend"] == "reference"
    assert results["blog"]["record"]["n_masks"] == 20


def test_data_dir_with_a_path_names_the_option(case, capsys):
    assert main([case["model"], "--dataset", case["data"], "--data-dir", str(case["dir"]),
                 "--out", str(case["dir"] / "o"), *FAST]) == 2
    line = _error_line(capsys)
    assert "--data-dir" in line and "tiny.npz" in line


def test_test_examples_read_follow_examples_and_max_data_bytes_is_an_option(case, capsys,
                                                                             monkeypatch):
    monkeypatch.setattr(inputs, "TEST_EXAMPLES", 25)  # the file has 40
    out = case["dir"] / "o"
    assert main([case["model"], "--dataset", case["data"], "--out", str(out), *FAST]) == 0
    dataset = json.loads((out / "results.json").read_text())["inputs"]["dataset"]
    assert dataset["n_test"] == 25 and "[first 25 of 40 test examples]" in dataset["source"]
    assert main([case["model"], "--dataset", case["data"], "--out", str(case["dir"] / "p"),
                 *FAST, "--max-data-bytes", "1K"]) == 2
    line = _error_line(capsys)
    assert "tiny.npz" in line and "above the limit of 1,024" in line
    assert "--max-data-bytes" in line

"""subnet.load_results: every results.json written so far read into typed, frozen Results that
give back what they read; hostile and foreign files refused in one line."""

import copy
import dataclasses
import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import subnet
import subnet.report.schema
import subnet.results
from subnet.errors import InputError, InputTypeError
from subnet.results import (
    ROW_COLUMNS,
    SCHEMA_VERSION,
    Answer,
    ComparisonRow,
    Config,
    Dense,
    Plan,
    Results,
    load_results,
    upgrade_results,
    validate_results,
)
from tests.report_example import example_results

ROOT = Path(__file__).parents[1]
COMMITTED = sorted((ROOT / "reports").glob("**/results.json"))
NOT_RESULTS = "This is not a results.json of python -m subnet.analyze"
HOW = "give the results.json that python -m subnet.analyze wrote"


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def _one_line(path, match: str) -> str:
    with pytest.raises(InputError, match=match) as caught:
        load_results(path)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith("Could not read results from '")
    return message


def _check_round_trip(results: Results, data: dict) -> None:
    """``results`` gives back ``data`` (upgraded), in the same key order, and reads back equal."""
    expected = upgrade_results(data)
    assert results.to_dict() == expected
    assert json.dumps(results.to_dict()) == json.dumps(expected)  # the key order too
    assert Results.from_dict(results.to_dict()) == results
    assert results.schema_version == SCHEMA_VERSION


# ---- every version written so far ----

def test_the_committed_results_files_load_or_are_refused_as_other_files():
    assert len(COMMITTED) >= 10
    loaded = []
    for path in COMMITTED:
        data = json.loads(path.read_text())
        if "answer" in data and "importance" in data:  # what subnet.analyze writes
            results = load_results(path)
            _check_round_trip(results, data)
            assert results.source_version == data.get("schema_version", 1)
            assert len(results.to_frame()) == len(data["comparison"]["rows"])
            loaded.append(path)
        else:  # the analyses' own results files
            message = _one_line(path, NOT_RESULTS)
            assert HOW in message and str(path.relative_to(ROOT)) in message or str(path) in \
                message
    assert len(loaded) >= 2  # reports/subnetworks/{mnist,fashion_mnist}: schema version 1


def _version_2(data: dict) -> dict:
    """A version-1 results dict as version 2 wrote it: no ``raw_bytes``, methods unrenamed."""
    def without(value):
        if isinstance(value, dict):
            out = {k: without(v) for k, v in value.items() if k != "raw_bytes"}
            if "raw_bytes" in value and "file_bytes" not in value:
                out["file_bytes"] = value["raw_bytes"]
            return out
        return [without(v) for v in value] if isinstance(value, list) else value
    return {**without(data), "schema_version": 2}


@pytest.mark.parametrize("optional", [True, False])
@pytest.mark.parametrize("version", [1, 2, 3])
def test_the_example_results_of_every_version_round_trip(tmp_path, optional, version):
    data = example_results(optional=optional)  # version 1: no schema_version, raw_bytes
    if version == 2:
        data = _version_2(data)
    elif version == 3:
        data = validate_results(data)
    before = copy.deepcopy(data)
    results = load_results(_write(tmp_path / "results.json", data))
    _check_round_trip(results, data)
    assert results.source_version == version
    assert data == before
    assert isinstance(results.answer, Answer) and isinstance(results.config, Config)
    assert results.config.budgets == tuple(data["config"]["budgets"])
    assert results.answer.sentences == tuple(data["answer"]["sentences"])
    if not optional:  # the optional sections are missing or null
        assert results.comparison is None and len(results.to_frame()) == 0
        return
    rows = data["comparison"]["rows"]
    assert all(isinstance(row, ComparisonRow) for row in results.comparison.rows)
    assert len(results.comparison.rows) == len(rows) == len(results.to_frame())
    assert [row.accuracy_oneshot for row in results.comparison.rows] == \
        [row["accuracy_oneshot"] for row in rows]
    assert isinstance(results.comparison.dense, Dense)
    assert results.answer.smallest.method == "banzhaf_iterative"  # "banzhaf" before version 3
    assert {row.method for row in results.comparison.rows} == {
        "banzhaf_iterative", "magnitude", "random", "tfmot"}
    measure = data["comparison"]["dense"]["measure"]
    assert results.comparison.dense.measure["file_bytes"] == measure.get(
        "file_bytes", measure.get("raw_bytes"))  # version 1 is upgraded


def test_results_of_a_tiny_analyze_run_round_trip(tmp_path):
    from subnet.analyze import main

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(6, activation="relu", name="hidden",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=1))(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=2))(x)
    keras.Model(inputs, outputs).save(tmp_path / "tiny.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", x_test=rng.random((40, 8, 8), dtype=np.float32),
             y_test=np.arange(40) % 3, x_train=rng.random((300, 8, 8), dtype=np.float32),
             y_train=np.arange(300) % 3)
    out = tmp_path / "run"
    assert main([str(tmp_path / "tiny.keras"), "--dataset", str(tmp_path / "tiny.npz"),
                 "--out", str(out), "--masks", "20", "--examples", "10", "--passes", "1",
                 "--methods", "banzhaf,random", "--budgets", "0.5", "--finetune-epochs", "0",
                 "--formats", "json", "--quiet"]) == 0
    data = json.loads((out / "results.json").read_text())
    results = load_results(out / "results.json")
    _check_round_trip(results, data)
    assert results.source_version == SCHEMA_VERSION
    assert results.keep is not None and results.keep.keep == data["keep"]["keep"]
    # --methods banzhaf: the old key of iterative mask statistics reads as it
    assert {row.method for row in results.comparison.rows} == {"banzhaf_iterative", "random"}
    assert len(results.to_frame()) == len(data["comparison"]["rows"])


# ---- typed sections ----

def test_unknown_keys_are_kept_in_extra_and_written_back(tmp_path):
    data = validate_results(example_results())
    data["made_later"] = {"anything": [1, "x", None]}
    data["comparison"]["rows"][0]["new_metric"] = 0.5
    data["answer"]["why"] = "because"
    data["config"]["passes"] = 5
    results = load_results(_write(tmp_path / "r.json", data))
    assert results.extra == {"made_later": {"anything": [1, "x", None]}}
    assert results.comparison.rows[0].extra["new_metric"] == 0.5
    assert results.answer.extra == {"why": "because"}
    assert results.config.extra["passes"] == 5
    _check_round_trip(results, data)


def test_gradual_rows_are_typed_and_optional_fields_stay_absent():
    gradual = {"method": "magnitude", "budget_flops_fraction": 0.25, "seed": 1,
               "allocation": "uniform", "widths": {"a": 2}, "flops": 10, "params": 20,
               "accuracy_oneshot": 0.5, "accuracy_finetuned": 0.9, "val_accuracy": 0.88,
               "finetune_epochs_run": 7, "scratch_accuracy": 0.8, "scratch_val_accuracy": 0.79,
               "scratch_epochs_run": 12, "model_file": None}
    row = ComparisonRow.from_dict(gradual)
    assert (row.val_accuracy, row.scratch_epochs_run, row.model_file) == (0.88, 12, None)
    assert row.to_dict() == gradual and list(row.to_dict()) == list(gradual)
    plain = {k: gradual[k] for k in ROW_COLUMNS[:-1]}
    row = ComparisonRow.from_dict(plain)
    assert row.accuracy_finetuned is None and row.val_accuracy is None
    assert row.to_dict() == plain  # absent optional fields are not written as null
    built = ComparisonRow(method="random", budget_flops_fraction=0.5, seed=0, params=1,
                          flops=2, accuracy_oneshot=0.3)
    assert built.to_dict() == {"method": "random", "budget_flops_fraction": 0.5, "seed": 0,
                               "params": 1, "flops": 2, "accuracy_oneshot": 0.3}
    assert ComparisonRow.from_dict(built.to_dict()) == built


def test_results_are_frozen_and_to_dict_is_a_copy(tmp_path):
    data = validate_results(example_results())
    results = load_results(_write(tmp_path / "r.json", data))
    with pytest.raises(dataclasses.FrozenInstanceError):
        results.answer = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        results.comparison.rows[0].accuracy_oneshot = 1.0
    out = results.to_dict()
    out["comparison"]["rows"][0]["widths"]["x"] = 1
    out["model"]["name"] = "changed"
    assert results.to_dict() == data


@pytest.mark.parametrize(("make", "data", "message"), [
    (ComparisonRow.from_dict, {"method": "m"}, r"^row\['budget_flops_fraction'\] is required"),
    (ComparisonRow.from_dict, {**{k: 1 for k in ROW_COLUMNS}, "method": "m",
                               "accuracy_oneshot": 2.0},
     r"^row\['accuracy_oneshot'\] must be a number in \[0, 1\]"),
    (Plan.from_dict, {"seconds": 1}, r"^plan\['costs'\] is required but missing"),
    (Answer.from_dict, [], r"`answer` must be a dict"),
])
def test_sections_built_from_dicts_are_checked(make, data, message):
    with pytest.raises(InputError, match=message):
        make(data)


def test_to_frame_has_one_row_per_comparison_row(tmp_path):
    data = validate_results(example_results())
    results = load_results(_write(tmp_path / "r.json", data))
    frame = results.to_frame()
    assert len(frame) == len(data["comparison"]["rows"])
    assert list(frame.columns[:len(ROW_COLUMNS)]) == list(ROW_COLUMNS)
    assert "measure.file_bytes" in frame.columns
    assert frame["method"].tolist() == [row["method"] for row in data["comparison"]["rows"]]
    data["comparison"] = None
    empty = load_results(_write(tmp_path / "none.json", data)).to_frame()
    assert len(empty) == 0 and list(empty.columns) == list(ROW_COLUMNS)


def test_to_frame_without_pandas_is_an_input_error(tmp_path, monkeypatch):
    results = load_results(_write(tmp_path / "r.json", example_results()))
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(InputError, match=r"to_frame\(\) needs pandas: pip install pandas"):
        results.to_frame()


# ---- untrusted files ----

def _deep(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    return path


@pytest.mark.parametrize(("make", "match"), [
    (lambda d: d / "missing.json", r"no such file; give the results\.json"),
    (lambda d: d, r"not a regular file"),
    (lambda d: _write(d / "list.json", [1, 2]), r"holds a JSON list, not an object of results"),
    (lambda d: _write(d / "other.json", {"rows": [], "settings": {}}), NOT_RESULTS),
    (lambda d: (d / "bad.json").write_bytes(b"\xff\xfe{}") and d / "bad.json", r"not UTF-8"),
    (lambda d: (d / "bad.json").write_text('{"model": ') and d / "bad.json",
     r"not valid JSON \(Expecting value: line 1"),
    (_deep, r"not valid JSON"),
    (lambda d: _write(d / "new.json",
                      {**example_results(), "schema_version": SCHEMA_VERSION + 1}),
     rf"results has schema_version {SCHEMA_VERSION + 1}: it was written by a newer subnet; "
     r"upgrade subnet"),
    (lambda d: _write(d / "edited.json", {**example_results(), "answer": {"tolerance": "x"}}),
     r"results\['answer'\]\['dense_accuracy'\] is required but missing; give the results"),
])
def test_hostile_and_foreign_files_are_refused_in_one_line(tmp_path, make, match):
    _one_line(make(tmp_path), match)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    _one_line(fifo, "not a regular file")


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    path = _write(tmp_path / "r.json", example_results())
    monkeypatch.setattr(subnet.results, "MAX_RESULTS_BYTES", 1000)
    _one_line(path, r"larger than a results\.json may be \(1,000 bytes; "
                    r"subnet\.results\.MAX_RESULTS_BYTES\)")


def test_a_path_with_control_characters_stays_one_line(tmp_path):
    _one_line(tmp_path / "a\nb\x1b[31m.json", r"a\\\\nb\\\\x1b\[31m\.json")


def test_results_from_dict_needs_a_dict():
    with pytest.raises(InputTypeError, match="`results` must be a dict"):
        Results.from_dict([])


# ---- the API ----

def test_load_results_is_public_and_the_report_schema_a_re_export():
    assert subnet.load_results is load_results and "load_results" in subnet.__all__
    assert subnet.report.schema.validate_results is validate_results
    assert subnet.report.schema.upgrade_results is upgrade_results

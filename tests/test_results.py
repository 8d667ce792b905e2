"""Typed results and the versioned results.json schema: round trips, tables, version errors,
and the schema against what ``subnet.analyze`` writes."""

import ast
import copy
import dataclasses
import json
import math
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from subnet.comparison import ROW_COLUMNS, SUMMARY_COLUMNS, Comparison
from subnet.engine.chain import Site, SiteTable
from subnet.errors import InputError, InputTypeError
from subnet.importance.core import Importance
from subnet.methods import resolve
from subnet.report.schema import upgrade_results, validate_results
from subnet.results import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    ComparisonRow,
    Dense,
    check_schema,
    schema,
)
from tests.report_example import example_results

SITES = SiteTable([Site("a", "dense", 3, 0.5, "a"), Site("b", "conv2d", 2, 0.5, "b")])
NEWER = "written by a newer subnet; upgrade"


def _importance() -> Importance:
    scores = np.array([0.3, np.nan, -0.1, 0.0, 2.5])
    stderr = np.array([0.1, np.nan, 0.05, 0.2, 0.5])
    return Importance("banzhaf", scores, SITES, stderr=stderr, ci_low=scores - 2 * stderr,
                      ci_high=scores + 2 * stderr, pvalue=np.array([0.01, np.nan, 0.04, 1, 0]),
                      details={"metric": "accuracy", "n_masks": 12})


def _class_importance() -> Importance:
    scores = np.arange(15, dtype=float).reshape(3, 5) / 10
    return Importance("class_conditional", scores, SITES, details={"classes": [0, 4, 7]})


def _comparison() -> Comparison:
    def row(method, budget, seed, oneshot, tuned, **extra):
        return {"method": method, "budget_flops_fraction": budget, "seed": seed,
                "params": int(1000 * budget), "flops": int(5000 * budget),
                "accuracy_oneshot": oneshot, "accuracy_finetuned": tuned, **extra}

    rows = [row("banzhaf", 0.5, 0, 0.9, 0.95, widths={"a": 2, "b": 1},
                measure={"file_bytes": 900, "gzip_bytes": 800, "latency_ms_per_example": 0.1}),
            row("banzhaf", 0.5, 1, 0.8, 0.93, widths={"a": 1, "b": 2}),
            row("random", 0.5, 0, 0.5, None, widths={"a": 2, "b": 1}),
            row("tfmot", 0.25, 0, 0.7, 0.9, sparsity=0.75)]
    dense = {"accuracy": 0.97, "params": 1000, "flops": 5000,
             "measure": {"file_bytes": 2000, "gzip_bytes": 1800, "latency_ms_per_example": 0.2}}
    return Comparison(rows=rows, dense=dense, config={"methods": ["banzhaf", "random", "tfmot"],
                                                      "budgets": [0.5, 0.25], "seeds": [0, 1]})


# ---- Importance ----

@pytest.mark.parametrize("make", [_importance, _class_importance])
def test_importance_round_trips_through_json(make):
    importance = make()
    data = importance.to_dict()
    assert data["schema_version"] == SCHEMA_VERSION
    again = Importance.from_dict(json.loads(json.dumps(data)))
    assert again == importance
    assert again.details == importance.details
    assert (again.qvalue is None) == (importance.pvalue is None)


def test_importance_without_schema_version_is_version_1():
    data = _importance().to_dict()
    del data["schema_version"]
    assert Importance.from_dict(data) == _importance()


def test_importance_to_frame_one_row_per_unit():
    frame = _importance().to_frame()
    assert list(frame.columns) == ["site", "unit", "score", "stderr", "ci_low", "ci_high",
                                   "pvalue", "qvalue"]
    assert len(frame) == 5
    assert frame["site"].tolist() == ["a", "a", "a", "b", "b"]
    assert frame["unit"].tolist() == [0, 1, 2, 0, 1]
    assert frame["score"].iloc[4] == 2.5 and math.isnan(frame["score"].iloc[1])
    assert frame.sort_values("score", ascending=False).index[0] == 4  # index: global unit


def test_importance_to_frame_missing_statistics_are_nan_and_classes_a_column():
    frame = _class_importance().to_frame()
    assert list(frame.columns)[:3] == ["class", "site", "unit"]
    assert len(frame) == 3 * 5
    assert frame["class"].tolist() == [0] * 5 + [4] * 5 + [7] * 5
    assert frame.loc[(frame["class"] == 4) & (frame["site"] == "b") & (frame["unit"] == 1),
                     "score"].item() == pytest.approx(0.9)
    assert frame["stderr"].isna().all() and frame["qvalue"].isna().all()


def test_to_frame_without_pandas_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    for call in (_importance().to_frame, _comparison().to_frame):
        with pytest.raises(ImportError, match=r"to_frame\(\) needs pandas: pip install pandas"):
            call()


@pytest.mark.parametrize(("change", "error", "message"), [
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), InputError, NEWER),
    (lambda d: d.update(schema_version="2"), InputError,
     r"importance\['schema_version'\] must be an integer >= 1\. Received: str '2'"),
    (lambda d: d.pop("scores"), InputError, r"importance\['scores'\] is required but missing"),
    (lambda d: d.update(stderr=["x"] * 5), InputError,
     r"importance\['stderr'\] must be a list .* of numbers and nulls"),
    (lambda d: d.update(scores=[[1.0], [1.0, 2.0]]), InputError, r"importance\['scores'\]"),
    (lambda d: d.update(scores=[1.0, 2.0]), InputError, r"`scores` must have shape"),
    (lambda d: d.update(method=3), InputTypeError, r"importance\['method'\] must be a string"),
    (lambda d: d["sites"][0].pop("units"), InputError, r"importance\['sites'\] must be a list"),
])
def test_importance_from_dict_errors(change, error, message):
    data = _importance().to_dict()
    change(data)
    with pytest.raises(error, match=message):
        Importance.from_dict(data)


def test_importance_from_dict_needs_a_dict():
    with pytest.raises(InputTypeError, match="`importance` must be a dict"):
        Importance.from_dict([1, 2])


def test_importance_files_carry_the_version(tmp_path):
    path = _importance().save(tmp_path / "imp")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["schema_version"] == SCHEMA_VERSION
    assert Importance.load(path) == _importance()
    meta["schema_version"] = SCHEMA_VERSION + 1
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=NEWER):
        Importance.load(path)


# ---- Comparison ----

def test_comparison_round_trips_through_json_and_files(tmp_path):
    comparison = _comparison()
    data = comparison.to_dict()
    assert data["schema_version"] == SCHEMA_VERSION
    assert Comparison.from_dict(json.loads(json.dumps(data))) == comparison
    assert Comparison.load(comparison.save(tmp_path / "c.json")) == comparison


def test_comparison_is_frozen_and_its_rows_are_typed_rows_that_read_as_dicts():
    comparison = _comparison()
    with pytest.raises(dataclasses.FrozenInstanceError):
        comparison.rows = ()
    with pytest.raises(AttributeError):
        comparison.rows.append(comparison.rows[0])  # a tuple
    row = comparison.rows[0]
    assert isinstance(row, ComparisonRow) and isinstance(comparison.dense, Dense)
    assert row.method == row["method"] == "banzhaf" and row.widths == {"a": 2, "b": 1}
    assert row.get("sparsity") is None and "sparsity" not in row and "measure" in row
    assert dict(comparison.rows[3]) == {
        "method": "tfmot", "budget_flops_fraction": 0.25, "seed": 0, "params": 250,
        "flops": 1250, "accuracy_oneshot": 0.7, "accuracy_finetuned": 0.9, "sparsity": 0.75}
    assert comparison.dense["flops"] == comparison.dense.flops == 5000
    with pytest.raises(KeyError):
        row["nothing"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.method = "random"
    bad = dict(comparison.rows[1])
    del bad["params"]
    with pytest.raises(InputError, match=r"row\['params'\] is required but missing"):
        Comparison(rows=[bad], dense=comparison.dense, config={})


def test_comparison_to_frame_rows_and_summary():
    comparison = _comparison()
    frame = comparison.to_frame()
    assert len(frame) == 4
    assert tuple(frame.columns[:len(ROW_COLUMNS)]) == ROW_COLUMNS
    assert {"widths.a", "widths.b", "measure.file_bytes", "sparsity"} <= set(frame.columns)
    assert frame["measure.file_bytes"].iloc[0] == 900
    assert frame["measure.file_bytes"].isna().tolist() == [False, True, True, True]
    assert frame["accuracy_finetuned"].isna().tolist() == [False, False, True, False]
    summary = comparison.to_frame(summary=True)
    assert tuple(summary.columns) == SUMMARY_COLUMNS
    assert len(summary) == 3  # (banzhaf, 0.5), (random, 0.5), (tfmot, 0.25)
    banzhaf = summary[summary["method"] == "banzhaf"].iloc[0]
    assert banzhaf["seeds"] == 2 and banzhaf["accuracy_oneshot_mean"] == pytest.approx(0.85)
    assert banzhaf["accuracy_oneshot_std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))


def test_an_empty_comparison_has_the_columns():
    dense = {"accuracy": 0.9, "params": 10, "flops": 20}
    frame = Comparison(rows=[], dense=dense, config={}).to_frame()
    assert len(frame) == 0 and tuple(frame.columns) == ROW_COLUMNS


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["rows"][1].update(accuracy_oneshot=93.0),
     r"^comparison\['rows'\]\[1\]\['accuracy_oneshot'\] must be a number in \[0, 1\]\. "
     r"Received: float 93\.0$"),
    (lambda d: d["rows"][2].pop("seed"), r"comparison\['rows'\]\[2\]\['seed'\] is required"),
    (lambda d: d["dense"].update(params=-1), r"comparison\['dense'\]\['params'\] must be an "
                                             r"integer >= 0"),
    (lambda d: d.pop("config"), r"comparison\['config'\] is required but missing"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), NEWER),
])
def test_comparison_from_dict_errors_name_the_key_path(change, message):
    data = copy.deepcopy(_comparison().to_dict())
    change(data)
    with pytest.raises(InputError, match=message):
        Comparison.from_dict(data)


def test_comparison_of_a_version_1_results_file_and_its_summary():
    section = example_results()["comparison"]  # no schema_version: version 1
    comparison = Comparison.from_dict(section)
    assert len(comparison.rows) == len(section["rows"])
    # iterative mask statistics was "banzhaf" before version 3
    assert {r["method"] for r in section["rows"]} == {"banzhaf", "magnitude", "random", "tfmot"}
    assert {r["method"] for r in comparison.rows} == {"banzhaf_iterative", "magnitude", "random",
                                                      "tfmot"}
    assert comparison.config["methods"][0] == "banzhaf_iterative"
    assert comparison.to_dict()["schema_version"] == SCHEMA_VERSION
    key = lambda e: (resolve(e["method"]), e["budget_flops_fraction"])  # noqa: E731
    written = {key(e): e for e in section["summary"]}
    for entry in comparison.summary():
        for name in ("seeds", "accuracy_oneshot_mean", "accuracy_finetuned_std"):
            assert entry[name] == pytest.approx(written[key(entry)][name])


# ---- results.json ----

def test_the_schema_file_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema()["properties"]["schema_version"] == {"const": SCHEMA_VERSION}


def test_a_version_1_file_is_upgraded_without_changing_it():
    old = example_results()
    assert "schema_version" not in old
    before = copy.deepcopy(old)
    new = validate_results(old)
    assert old == before  # the input is not changed
    assert new["schema_version"] == SCHEMA_VERSION
    measure = new["comparison"]["dense"]["measure"]
    assert "raw_bytes" not in json.dumps(new)
    assert measure["file_bytes"] == old["comparison"]["dense"]["measure"]["raw_bytes"]
    assert validate_results(new) is new  # the current version: itself


def test_upgrade_keeps_file_bytes_where_both_are_there():
    old = example_results()
    old["comparison"]["dense"]["measure"]["file_bytes"] = 7
    assert upgrade_results(old)["comparison"]["dense"]["measure"] == {
        "latency_ms_per_example": 0.021, "gzip_bytes": 13_100_000, "batch_size": 256,
        "file_bytes": 7}


@pytest.mark.parametrize(("version", "message"), [
    (SCHEMA_VERSION + 1, rf"^results has schema_version {SCHEMA_VERSION + 1}: it was written "
                         r"by a newer subnet; upgrade subnet"),
    (0, r"results\['schema_version'\] must be an integer >= 1\. Received: int 0"),
    (2.0, r"results\['schema_version'\] must be an integer >= 1\. Received: float 2\.0"),
])
def test_versions_this_subnet_cannot_read_are_refused_in_one_line(version, message):
    results = example_results()
    results["schema_version"] = version
    with pytest.raises(InputError, match=message) as caught:
        validate_results(results)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["comparison"]["rows"][3].update(accuracy_oneshot=1.5),
     r"^results\['comparison'\]\['rows'\]\[3\]\['accuracy_oneshot'\] must be a number in "
     r"\[0, 1\]\. Received: float 1\.5$"),
    (lambda r: r["blog"].update(accuracy_dropout_on_std=float("nan")),
     r"results\['blog'\]\['accuracy_dropout_on_std'\] must be a number >= 0\. Received: "
     r"float nan"),
    (lambda r: r["importance"]["interactions"]["edges"][0].update(weight=float("inf")),
     r"\['edges'\]\[0\]\['weight'\] must be a number\. Received: float inf"),
    (lambda r: r["inputs"]["dataset"].update(n_test=-1),
     r"results\['inputs'\]\['dataset'\]\['n_test'\] must be an integer >= 0"),
    (lambda r: r["model"].update(classes=10.0), r"\['classes'\] must be an integer >= 2"),
    (lambda r: r["comparison"]["rows"][0]["measure"].update(file_bytes=-5),
     r"\['rows'\]\[0\]\['measure'\]\['file_bytes'\] must be an integer >= 0 or null"),
    (lambda r: r["answer"].update(smallest=[]), r"\['smallest'\] must be an object or null"),
    (lambda r: r.update(reused_stages="blog"), r"\['reused_stages'\] must be a list of strings"),
])
def test_more_schema_errors_are_one_line_with_the_key_path(change, message):
    results = validate_results(example_results())
    change(results)
    with pytest.raises(InputError, match=message):
        validate_results(results)


def test_unknown_keys_are_accepted_at_every_level():
    results = validate_results(example_results())
    results["made_by_a_later_minor_change"] = {"anything": [1, "x"]}
    results["comparison"]["rows"][0]["extra"] = {"x": None}
    assert validate_results(results) is results


def _analyze_results_keys() -> set[str]:
    """The top-level keys of the ``results = {...}`` literal in subnet/analyze/runner.py (the one
    with ``created``, wherever it is)."""
    source = (Path(__file__).parents[1] / "subnet" / "analyze" / "runner.py").read_text()
    literals = [node.value for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "results" for t in node.targets)
                and any(isinstance(k, ast.Constant) and k.value == "created"
                        for k in node.value.keys)]
    assert len(literals) == 1, "analyze/runner.py builds results.json in one dict literal"
    keys = {key.value for key in literals[0].keys if isinstance(key, ast.Constant)}
    assert len(keys) == len(literals[0].keys), "every key of results is a string literal"
    return keys


def test_every_key_analyze_writes_is_in_the_schema_and_every_required_one_is_written():
    written = _analyze_results_keys()
    assert written >= {"created", "model", "importance", "comparison", "answer"}
    described = set(schema()["properties"])
    assert written <= described, f"not in {SCHEMA_PATH.name}: {sorted(written - described)}"
    missing = set(schema()["required"]) - written
    assert not missing, f"required by the schema but not written by analyze: {sorted(missing)}"


def test_check_schema_of_one_definition():
    check_schema(_comparison().to_dict(), "comparison", "comparison")
    with pytest.raises(InputError, match=r"^comparison must be an object\. Received: list"):
        check_schema([], "comparison", "comparison")


def _finite(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or (
        isinstance(value, float) and math.isfinite(value))


VALUES = [0, 1, 0.5, -0.0, 1.0000001, -1e-12, float("nan"), float("inf"), True, None, "0.5",
          10**400, [0.5]]


@pytest.mark.parametrize("value", VALUES, ids=[str(i) for i in range(len(VALUES))])
def test_lists_of_numbers_accept_exactly_finite_numbers_in_range(value):
    ok = _finite(value) and 0 <= value <= 1
    results = validate_results(example_results())
    results["blog"]["mask_accuracy"] = [0.5, value]  # fractions
    results["importance"]["sites"]["dense"]["scores"][:2] = [value, None]  # numbers or nulls
    ok_score = value is None or _finite(value)
    for fits, key in ((ok, "mask_accuracy"), (ok_score, "scores")):
        trial = copy.deepcopy(results)
        if key == "mask_accuracy":
            trial["importance"]["sites"]["dense"]["scores"][0] = 0.0
        else:
            trial["blog"]["mask_accuracy"] = [0.5]
        if fits:
            validate_results(trial)
        else:
            with pytest.raises(InputError, match=f"\\['{key}'\\]"):
                validate_results(trial)


@pytest.mark.parametrize("change", [
    lambda d: d["sites"][0].update(keep="most"),
    lambda d: d["sites"][1].update(units=0),
    lambda d: d.update(scores=[[[0.1]]] * 5),
])
def test_importance_from_dict_refuses_bad_sites_and_deep_lists(change):
    data = _importance().to_dict()
    change(data)
    with pytest.raises(InputError, match=r"importance\['(sites|scores)'\]"):
        Importance.from_dict(data)

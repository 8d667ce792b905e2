"""The one method registry: every list of methods reads it, so none drifts."""

import pytest

from subnet import analyze, comparison, frontier, gradual
from subnet.errors import InputError
from subnet.methods import (
    KINDS,
    METHODS,
    RENAMED,
    accepted,
    cache_name,
    display_names,
    method,
    method_name,
    resolve,
)
from subnet.results_schema import SCHEMA_VERSION, upgrade_comparison, upgrade_results


def test_each_key_and_each_display_name_is_unique():
    keys = [m.key for m in METHODS]
    names = [m.name for m in METHODS]
    assert len(set(keys)) == len(keys) and len(set(names)) == len(names)
    assert all(m.kind in KINDS for m in METHODS)
    assert display_names()["banzhaf_iterative"] == method_name("banzhaf_iterative") == \
        "mask statistics"
    assert method_name("not_a_method") == "not_a_method"
    with pytest.raises(KeyError):
        method("not_a_method")


def test_what_each_entry_point_accepts_is_the_registry():
    assert set(analyze.METHODS) == set(accepted("quick"))
    assert set(comparison.STRUCTURED) | set(comparison.REFERENCED) == set(accepted("quick"))
    assert set(comparison.REFERENCED) == {m.key for m in METHODS if m.referenced}
    # the thorough protocol runs what gradual pruning accepts, and its defaults among them
    assert set(frontier.METHODS) == set(gradual.MODEL_CRITERIA + gradual.RECORD_CRITERIA)
    assert set(analyze.THOROUGH_METHODS) <= set(frontier.METHODS)
    for key in accepted("quick", referenced=False):
        assert comparison.ALLOCATION[key] == method(key).allocation
    # the defaults of the quick protocol are accepted by it
    assert set(analyze.Settings().methods) <= set(accepted("quick"))


# ---- the iterative method's own key; the old one still reads ----

def test_the_old_key_names_the_method_it_was():
    assert RENAMED == {"banzhaf": "banzhaf_iterative"}
    assert resolve("banzhaf") == "banzhaf_iterative" and resolve("magnitude") == "magnitude"
    assert method("banzhaf") is method("banzhaf_iterative")
    assert method_name("banzhaf") == display_names()["banzhaf"] == "mask statistics"
    assert "banzhaf" not in {m.key for m in METHODS}  # no method has two keys
    for protocol in ("quick", "thorough"):
        assert "banzhaf_iterative" in accepted(protocol, default=True)
        assert "banzhaf" not in accepted(protocol)


def test_caches_made_before_the_rename_keep_their_keys():
    assert cache_name("banzhaf_iterative") == "banzhaf" and cache_name("magnitude") == "magnitude"
    old = analyze.Settings(methods=("banzhaf", "magnitude"))
    new = analyze.Settings(methods=("banzhaf_iterative", "magnitude"))
    assert old == new and old.cache_key() == new.cache_key()
    assert new.cache_key()["methods"] == ["banzhaf", "magnitude"]  # as --resume folders have it
    assert {k: v for k, v in new.cache_key().items() if k != "methods"} == \
        {k: v for k, v in new.to_dict().items() if k != "methods"}


def test_every_entry_point_reads_the_old_key():
    old = analyze.Settings(methods=("banzhaf", "magnitude", "banzhaf_iterative"))
    assert old.methods == ("banzhaf_iterative", "magnitude")  # resolved, once
    assert analyze.Settings(methods=["banzhaf", "tfmot"]).methods == ("banzhaf_iterative",
                                                                      "tfmot")
    with pytest.raises(InputError, match=r"--methods: expected names among banzhaf_iterative, .*"
                                         r"Received: banzhaf,lottery$"):  # as it was typed
        analyze.Settings(methods=("banzhaf", "lottery"))
    with pytest.raises(InputError, match="tfmot is built on the banzhaf_iterative subnetwork"):
        analyze.Settings(methods=("magnitude", "tfmot"))
    assert gradual.Trajectory.from_dict({"method": "banzhaf", "allocation": "cost", "seed": 0,
                                         "dense_flops": 1, "rounds": [],
                                         "checkpoints": {}}).method == "banzhaf_iterative"


def test_results_of_version_2_are_renamed_where_a_method_is_named_and_only_there():
    rows = [{"method": "banzhaf", "budget_flops_fraction": 0.5, "seed": 0},
            {"method": "magnitude", "budget_flops_fraction": 0.5, "seed": 0}]
    comparison = {"schema_version": 2, "rows": rows, "summary": [dict(rows[0])],
                  "config": {"methods": ["banzhaf", "magnitude", "tfmot"],
                             "reference_method": "banzhaf",
                             "allocation": {"banzhaf": "iterative", "magnitude": "uniform"}}}
    results = {"schema_version": 2, "config": {"methods": ["banzhaf", "magnitude"]},
               "importance": {"method": "banzhaf"}, "comparison": comparison,
               "answer": {"smallest": {"method": "banzhaf",
                                       "model_file": "models/banzhaf_0.5_0.keras"},
                          "subnetwork": {"method": "banzhaf"},
                          "smallest_by_method": {"banzhaf": {"method": "banzhaf"},
                                                 "magnitude": None}},
               "uncertainty": {"predictors": {"deterministic": 1, "subnetwork_banzhaf@0.5": 2},
                               "entropy_histograms": {"subnetwork_banzhaf@0.5": 3}}}
    new = upgrade_results(results)
    assert new["schema_version"] == new["comparison"]["schema_version"] == SCHEMA_VERSION
    assert new["config"]["methods"] == ["banzhaf_iterative", "magnitude"]
    assert new["importance"]["method"] == "banzhaf"  # an estimator, not a comparison method
    config = new["comparison"]["config"]
    assert config["methods"] == ["banzhaf_iterative", "magnitude", "tfmot"]
    assert config["reference_method"] == "banzhaf_iterative"
    assert config["allocation"] == {"banzhaf_iterative": "iterative", "magnitude": "uniform"}
    assert [r["method"] for r in new["comparison"]["rows"]] == ["banzhaf_iterative", "magnitude"]
    assert new["comparison"]["summary"][0]["method"] == "banzhaf_iterative"
    answer = new["answer"]
    assert answer["smallest"] == {"method": "banzhaf_iterative",
                                  "model_file": "models/banzhaf_0.5_0.keras"}  # a file's name
    assert answer["subnetwork"]["method"] == "banzhaf_iterative"
    assert answer["smallest_by_method"] == {"banzhaf_iterative": {"method": "banzhaf_iterative"},
                                            "magnitude": None}
    assert list(new["uncertainty"]["predictors"]) == ["deterministic",
                                                      "subnetwork_banzhaf_iterative@0.5"]
    assert list(new["uncertainty"]["entropy_histograms"]) == ["subnetwork_banzhaf_iterative@0.5"]
    assert results["comparison"]["rows"][0]["method"] == "banzhaf"  # the input is not changed
    # a key the file lacks stays missing (a damaged file stays refused)
    partial = upgrade_results({"schema_version": 2, "answer": {"tolerance": 0.01}})
    assert partial["answer"] == {"tolerance": 0.01}
    assert upgrade_results(new) is new and upgrade_comparison(new["comparison"]) == \
        new["comparison"]

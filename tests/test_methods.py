"""The one method registry: every list of methods reads it, so none drifts."""

import pytest

from subnet import analyze, comparison, frontier, gradual
from subnet.methods import KINDS, METHODS, accepted, display_names, method, method_name


def test_each_key_and_each_display_name_is_unique():
    keys = [m.key for m in METHODS]
    names = [m.name for m in METHODS]
    assert len(set(keys)) == len(keys) and len(set(names)) == len(names)
    assert all(m.kind in KINDS for m in METHODS)
    assert display_names()["banzhaf"] == method_name("banzhaf") == "mask statistics"
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

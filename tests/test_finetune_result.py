"""subnet.finetune's typed result: a frozen FinetuneResult that still reads as the dict it was."""

import dataclasses
import json

import pytest

import subnet
from subnet.errors import InputError
from subnet.finetuning import FinetuneResult
from tests.helpers import tiny_dense_task

KEYS = ["accuracy_before", "accuracy_after", "examples_seen", "seconds", "loss"]


def _result() -> FinetuneResult:
    return FinetuneResult(accuracy_before=0.5, accuracy_after=0.75, examples_seen=64,
                          seconds=1.5, loss=[1.2, 0.9])


def test_it_reads_as_the_dict_finetune_returned():
    result = _result()
    as_dict = {"accuracy_before": 0.5, "accuracy_after": 0.75, "examples_seen": 64,
               "seconds": 1.5, "loss": [1.2, 0.9]}
    assert result["accuracy_after"] == result.accuracy_after == 0.75
    assert list(result) == KEYS and len(result) == 5 and "seconds" in result
    assert dict(result) == {**result} == result.to_dict() == as_dict
    assert result == as_dict and result.get("missing") is None
    with pytest.raises(KeyError):
        result["model"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.accuracy_after = 1.0


def test_to_dict_round_trips_through_json():
    result = _result()
    again = FinetuneResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result and again.to_dict() == result.to_dict()
    assert result.to_dict()["loss"] is not result.loss  # a copy
    with pytest.raises(InputError, match=r"finetune result\['loss'\] is required but missing"):
        FinetuneResult.from_dict({k: 1 for k in KEYS[:-1]})


def test_finetune_returns_it():
    model, data = tiny_dense_task()
    result = subnet.finetune(model, data, examples=64, seed=0, progress=False,
                             accuracy_before=0.25)
    assert isinstance(result, FinetuneResult) and subnet.FinetuneResult is FinetuneResult
    assert result["accuracy_before"] == 0.25 and result["examples_seen"] == 64
    assert 0 <= result["accuracy_after"] <= 1 and result["seconds"] >= 0
    assert json.loads(json.dumps(result.to_dict())) == dict(result)

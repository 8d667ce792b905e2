"""The frontier protocol's settings and validation split."""

import numpy as np
import pytest

from subnet.data import Dataset
from subnet.errors import InputError
from subnet.protocol import PROTOCOLS, Protocol, validation_split


def _data(n_train=100, n_test=30):
    rng = np.random.default_rng(0)
    # Every image is unique (its first pixel is its index), so overlaps can be checked exactly.
    x_train = rng.random((n_train, 4, 4, 1), dtype=np.float32) * 0.5
    x_train[:, 0, 0, 0] = np.arange(n_train) / 1000
    x_test = rng.random((n_test, 4, 4, 1), dtype=np.float32) * 0.5 + 0.5
    return Dataset(name="toy", x_test=x_test, y_test=np.arange(n_test) % 3, num_classes=3,
                   x_train=x_train, y_train=np.arange(n_train) % 3)


def _rows(x):
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_the_validation_split_is_disjoint_from_training_and_test_and_reproducible():
    data = _data()
    train, (x_val, y_val), info = validation_split(data, 20, seed=3)
    assert len(x_val) == len(y_val) == 20 and len(train.x_train) == 80
    assert not _rows(x_val) & _rows(train.x_train)
    assert not _rows(x_val) & _rows(data.x_test)
    assert _rows(x_val) | _rows(train.x_train) == _rows(data.x_train)
    assert np.array_equal(train.x_test, data.x_test)
    again = validation_split(data, 20, seed=3)
    assert np.array_equal(again[1][0], x_val) and again[2] == info
    assert validation_split(data, 20, seed=4)[2]["indices_sha256"] != info["indices_sha256"]
    assert validation_split(data, 0.25)[2]["size"] == 25


@pytest.mark.parametrize("size", [0, 100, 1.0, 0.0, -3])
def test_a_validation_split_that_leaves_nothing_is_refused(size):
    with pytest.raises(InputError, match="validation size"):
        validation_split(_data(), size)


def test_a_test_only_dataset_has_no_validation_split():
    data = _data()
    test_only = Dataset(name="t", x_test=data.x_test, y_test=data.y_test, num_classes=3)
    with pytest.raises(InputError, match="no training split"):
        validation_split(test_only, 5)


def test_presets_round_trip_and_changes_are_named():
    thorough = Protocol.preset("thorough")
    assert thorough == PROTOCOLS["thorough"] and thorough.patience and thorough.validation
    assert Protocol.from_dict(thorough.to_dict()) == thorough
    changed = Protocol.preset("thorough", seeds=(0,))
    assert changed.name == "thorough+custom" and changed.seeds == (0,)
    with pytest.raises(InputError, match="Known protocols: quick, thorough"):
        Protocol.preset("fancy")


@pytest.mark.parametrize("changes, name", [
    ({"budgets": (0.5, 0)}, "budgets"),
    ({"budgets": (1.5,)}, "budgets"),
    ({"finetune_epochs": -1}, "finetune_epochs"),
    ({"temperature": 0}, "temperature"),
    ({"distill_weight": 2}, "distill_weight"),
    ({"validation": 1.0}, "validation"),
    ({"patience": 2}, "patience"),
    ({"allocation": "fair"}, "allocation"),
    ({"step": 0}, "step"),
    ({"seeds": ()}, "seeds"),
])
def test_bad_protocol_settings_are_one_line_errors(changes, name):
    with pytest.raises(InputError, match=f"`{name}`"):
        Protocol(**changes)


def test_the_protocols_seeds_are_settings_recorded_with_it():
    """The validation split's seed and the Scratch-E control's seed offset are the protocol's
    (recorded in its dict), not constants hidden in the code; a protocol saved before they
    were settings loads with the values it ran with."""
    from subnet.protocol import VALIDATION_SEED

    made = Protocol.preset("thorough", validation_seed=7, scratch_seed_offset=3)
    assert Protocol.from_dict(made.to_dict()) == made
    saved = {k: v for k, v in Protocol.preset("thorough").to_dict().items()
             if k not in ("validation_seed", "scratch_seed_offset")}
    old = Protocol.from_dict(saved)
    assert (old.validation_seed, old.scratch_seed_offset) == (VALIDATION_SEED, 1000)
    for name in ("validation_seed", "scratch_seed_offset"):
        with pytest.raises(ValueError, match=f"protocol setting `{name}`"):
            Protocol(**{name: -1})

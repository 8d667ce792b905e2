"""subnet.validation: one wording for every bad argument (Keras's)."""

import numpy as np
import pytest

from subnet.errors import InputError, InputTypeError
from subnet.validation import check_bool, check_choice, check_fraction, check_int, check_number


def test_checks_return_the_value_as_the_type_computed_with():
    assert check_int("n", np.int64(3), low=1) == 3 and type(check_int("n", 3)) is int
    assert check_number("tol", 2) == 2.0 and type(check_number("tol", 2)) is float
    assert check_fraction("rate", 0.0, high_open=True) == 0.0
    assert check_choice("norm", "l2", ("l1", "l2")) == "l2"
    assert check_bool("flag", np.bool_(True)) is True


@pytest.mark.parametrize("call, message", [
    (lambda: check_int("n", 0, low=1),
     "Invalid value received for argument `n`. Expected an int >= 1. Received: n=0"),
    (lambda: check_int("n", True, low=0), "Expected an int >= 0. Received: n=True"),
    (lambda: check_int("k", 9, low=2, high=8, note="the number of units"),
     "Expected an int in [2, 8] (the number of units). Received: k=9"),
    (lambda: check_int("n", 2.0), "Expected an int. Received: n=2.0"),
    (lambda: check_number("tol", -1, low=0.0), "Expected a float >= 0. Received: tol=-1"),
    (lambda: check_number("tol", float("nan")), "Expected a finite float. Received: tol=nan"),
    (lambda: check_number("lr", 0, low=0.0, low_open=True), "Expected a float > 0."),
    (lambda: check_fraction("rate", 1.0, high_open=True),
     "Expected a float in [0, 1). Received: rate=1.0"),
    (lambda: check_fraction("alpha", 0, low_open=True, high_open=True),
     "Expected a float in (0, 1). Received: alpha=0"),
    (lambda: check_fraction("rate", "0.5"), "Received: rate='0.5'"),
    (lambda: check_choice("norm", "l3", ("l1", "l2")),
     "Expected one of 'l1', 'l2'. Received: norm='l3'"),
    (lambda: check_choice("norm", ["l1"], ("l1", "l2")), "Received: norm=['l1']"),
])
def test_a_bad_value_is_named_with_what_was_expected_and_received(call, message):
    with pytest.raises(InputError) as caught:
        call()
    assert message in str(caught.value)
    assert str(caught.value).startswith("Invalid value received for argument `")


def test_a_non_bool_is_a_type_error():
    with pytest.raises(InputTypeError, match=r"Expected a bool\. Received: flag=1"):
        check_bool("flag", 1)
    assert issubclass(InputTypeError, TypeError)

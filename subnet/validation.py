"""Checks of the values a caller gives, each raising one error in Keras's wording.

Every public entry point checks its arguments before it spends time or memory on them, and says
what was wrong in one line: the argument, what was expected and what was received, as Keras
does ("Invalid value received for argument `rate`. Expected a float in [0, 1). Received:
rate=1.5"). The library's messages name its arguments (or a settings object's fields); the
command lines name their flags (:mod:`subnet.cli`). Each check returns the value as the type
the caller computes with.

Booleans are never numbers here: ``True`` is not a count of 1.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np

from subnet.errors import InputError, InputTypeError

__all__ = ["check_bool", "check_choice", "check_fraction", "check_int", "check_number",
           "invalid"]


def invalid(name: str, expected: str, value, *, type_error: bool = False,
            received: str | None = None) -> InputError:
    """The error for argument ``name``: ``expected`` (e.g. "an int >= 1") and the value
    received. ``type_error`` makes it an :class:`~subnet.errors.InputTypeError` (a TypeError
    too); ``received`` describes the value in its place (for one whose repr is long)."""
    kind = InputTypeError if type_error else InputError
    shown = repr(value) if received is None else received
    return kind(f"Invalid value received for argument `{name}`. Expected {expected}. "
                f"Received: {name}={shown}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and \
        not isinstance(value, (bool, np.bool_))


def _bounded(noun: str, low, high, low_open: bool = False, high_open: bool = False,
             show: str = "g") -> str | None:
    """``noun`` with its bounds in words (``"an int in [1, 5]"``, ``"a float > 0"``), numbers
    formatted with ``show``; None without bounds."""
    if low is not None and high is not None:
        return (f"{noun} in {'(' if low_open else '['}{low:{show}}, {high:{show}}"
                f"{')' if high_open else ']'}")
    if low is not None:
        return f"{noun} {'>' if low_open else '>='} {low:{show}}"
    if high is not None:
        return f"{noun} {'<' if high_open else '<='} {high:{show}}"
    return None


def check_int(name: str, value, *, low: int | None = None, high: int | None = None,
              note: str = "") -> int:
    """``value`` as an int in [``low``, ``high``] (None: unbounded on that side).

    Args:
        note: Said after the range, in parentheses (what the bounds are).

    Raises:
        InputError: If ``value`` is not an int (bools are not) or out of range.
    """
    expected = _bounded("an int", low, high, show="") or "an int"
    if note:
        expected += f" ({note})"
    if not _is_int(value) or (low is not None and value < low) or \
            (high is not None and value > high):
        raise invalid(name, expected, value)
    return int(value)


def check_number(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, expected: str | None = None
                 ) -> float:
    """``value`` as a finite float between ``low`` and ``high`` (each included unless
    ``*_open``; None: unbounded on that side).

    Args:
        expected: What the message says was expected (default: the interval).

    Raises:
        InputError: If ``value`` is not a finite number (bools are not) or out of range.
    """
    if expected is None:
        expected = _bounded("a float", low, high, low_open, high_open) or "a finite float"
    ok = _is_number(value) and math.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if high_open else float(value) <= high
    if not ok:
        raise invalid(name, expected, value)
    return float(value)


def check_fraction(name: str, value, *, low_open: bool = False, high_open: bool = False
                   ) -> float:
    """``value`` as a float in [0, 1] (each end excluded if ``*_open``).

    Raises:
        InputError: If it is not such a number.
    """
    return check_number(name, value, low=0.0, high=1.0, low_open=low_open, high_open=high_open)


def check_choice(name: str, value, choices: Collection):
    """``value`` if it is one of ``choices`` (the message lists them).

    Raises:
        InputError: If it is not.
    """
    try:
        known = value in choices
    except TypeError:  # an unhashable value is not a choice
        known = False
    if not known:
        listed = ", ".join(repr(c) for c in choices)
        raise invalid(name, f"one of {listed}", value)
    return value


def check_bool(name: str, value) -> bool:
    """``value`` as a bool (numpy's too).

    Raises:
        InputTypeError: If it is not a bool.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise invalid(name, "a bool", value, type_error=True)
    return bool(value)

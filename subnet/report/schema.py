"""The results.json schema the reports read, checked with messages that name the key path.

:func:`validate_results` checks every key the reports use; keys it does not know are ignored.
Sections that may be missing or ``null`` (the report then says "not computed") are
``comparison``, ``importance.class_conditional``, ``importance.interactions``, ``blog.examples``
and every ``image``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from datetime import datetime

import numpy as np

from subnet.errors import InputError, InputTypeError

__all__ = ["validate_results"]


def _where(path: tuple) -> str:
    return "results" + "".join(f"[{part!r}]" for part in path)


def _describe(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _fail(path: tuple, expected: str, value) -> ValueError:
    return ValueError(f"{_where(path)} must be {expected}. Received: {_describe(value)}")


class _Spec(abc.ABC):
    """One expected shape of a JSON value; ``check`` raises ValueError naming the path.

    ``expected`` describes one value ("an integer >= 1"), ``plural`` several ("integers >= 1").
    """

    expected = "a value"
    plural = "values"

    @abc.abstractmethod
    def check(self, value, path: tuple) -> None:
        """Raises ValueError naming ``path`` if ``value`` does not fit."""


class _Str(_Spec):
    expected, plural = "a string", "strings"

    def check(self, value, path):
        if not isinstance(value, str):
            raise _fail(path, self.expected, value)


class _Bool(_Spec):
    expected, plural = "a bool", "bools"

    def check(self, value, path):
        if not isinstance(value, bool):
            raise _fail(path, self.expected, value)


class _Int(_Spec):
    def __init__(self, low: int | None = None):
        self.low = low
        bound = "" if low is None else f" >= {low}"
        self.expected, self.plural = f"an integer{bound}", f"integers{bound}"

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int) or (
                self.low is not None and value < self.low):
            raise _fail(path, self.expected, value)


class _Num(_Spec):
    """A real number (not a bool); with bounds, a finite number between them."""

    def __init__(self, low: float | None = None, high: float | None = None,
                 positive: bool = False):
        self.low, self.high, self.positive = low, high, positive
        if positive:
            bound = " > 0"
        elif low is not None and high is not None:
            bound = f" in [{low:g}, {high:g}]"
        elif low is not None:
            bound = f" >= {low:g}"
        else:
            bound = ""
        self.expected, self.plural = f"a number{bound}", f"numbers{bound}"

    def ok(self, value) -> bool:
        """Whether ``value`` fits (the check without the error)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.low is None and self.high is None and not self.positive:
            return True
        return (math.isfinite(value) and (self.low is None or value >= self.low)
                and (self.high is None or value <= self.high)
                and (not self.positive or value > 0))

    def check(self, value, path):
        if not self.ok(value):
            raise _fail(path, self.expected, value)


class _Nullable(_Spec):
    def __init__(self, spec: _Spec):
        self.spec = spec
        self.expected, self.plural = f"{spec.expected} or null", f"{spec.plural} or nulls"

    def check(self, value, path):
        if value is None:
            return
        if isinstance(self.spec, (_Str, _Bool, _Int, _Num)):  # say "... or null"
            try:
                self.spec.check(value, path)
            except ValueError:
                raise _fail(path, self.expected, value) from None
        else:  # a structure: its own message names the deeper key
            self.spec.check(value, path)


class _List(_Spec):
    """A list; of numbers checked in one pass, of anything else item by item."""

    def __init__(self, item: _Spec, min_len: int = 0):
        self.item, self.min_len = item, min_len
        self.expected = f"a list of {item.plural}" + (
            f" with at least {min_len} item{'s' if min_len > 1 else ''}" if min_len else "")
        self.plural = f"lists of {item.plural}"

    def check(self, value, path):
        if not isinstance(value, list) or len(value) < self.min_len:
            raise _fail(path, self.expected, value)
        if isinstance(self.item, _Num):
            for i, item in enumerate(value):
                if not self.item.ok(item):
                    raise InputError(f"{_where(path)} must be {self.expected}. Received: "
                                     f"{_describe(item)} at index {i}")
            return
        for i, item in enumerate(value):
            self.item.check(item, path + (i,))


class _Dict(_Spec):
    """An object with string keys and, if ``value`` is given, values of one spec."""

    def __init__(self, value: _Spec | None = None):
        self.value = value
        self.expected = "an object" if value is None else f"an object of {value.plural}"
        self.plural = "objects"

    def check(self, value, path):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _fail(path, "an object with string keys", value)
        if self.value is not None:
            for key, item in value.items():
                self.value.check(item, path + (key,))


class _Record(_Spec):
    """An object with named fields; ``optional`` fields may be missing or null."""

    expected, plural = "an object", "objects"

    def __init__(self, fields: dict, optional: dict | None = None):
        self.fields, self.optional = fields, optional or {}

    def check(self, value, path):
        if not isinstance(value, Mapping):
            raise _fail(path, self.expected, value)
        for key, spec in self.fields.items():
            if key not in value:
                raise InputError(f"{_where(path + (key,))} is required but missing.")
            spec.check(value[key], path + (key,))
        for key, spec in self.optional.items():
            if value.get(key) is not None:
                spec.check(value[key], path + (key,))


class _Image(_Spec):
    expected = "an image: a nested list H x W or H x W x C (C in 1, 3, 4) of numbers in [0, 1]"
    plural = "images"

    def check(self, value, path):
        try:
            array = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise _fail(path, self.expected, value) from None
        if not isinstance(value, list) or array.ndim not in (2, 3) or min(array.shape) < 1 or (
                array.ndim == 3 and array.shape[2] not in (1, 3, 4)) or not (
                np.all(np.isfinite(array)) and array.min() >= 0 and array.max() <= 1):
            raise _fail(path, self.expected, value)


_STR, _INT, _COUNT, _NUM = _Str(), _Int(), _Int(0), _Num()
_FRACTION, _NONNEG, _POSITIVE = _Num(0.0, 1.0), _Num(0.0), _Num(positive=True)

_MEASURE = _Record({}, {"latency_ms_per_example": _NONNEG, "raw_bytes": _COUNT,
                        "file_bytes": _COUNT, "gzip_bytes": _COUNT})
_SMALLEST = _Record(
    {"method": _STR, "budget_flops_fraction": _FRACTION, "params": _COUNT, "flops": _COUNT,
     "accuracy_mean": _FRACTION, "accuracy_std": _NONNEG, "flops_reduction": _POSITIVE,
     "params_reduction": _POSITIVE},
    {"widths": _Dict(_COUNT)})

_SCHEMA = _Record({
    "subnet_version": _STR,
    "created": _STR,
    "command": _List(_STR),
    "config": _Dict(),
    "versions": _Dict(_Nullable(_STR)),
    "inputs": _Record({
        "model": _Record({"path": _STR, "sha256": _STR, "bytes": _COUNT}),
        "dataset": _Record({"name": _STR, "source": _STR, "fingerprint": _STR,
                            "n_train": _COUNT, "n_test": _COUNT}),
    }),
    "timings": _Dict(_NONNEG),
    "model": _Record({
        "name": _STR, "params": _COUNT, "flops": _COUNT, "input_shape": _List(_COUNT, 1),
        "classes": _Int(2),
        "sites": _List(_Record({"name": _STR, "kind": _STR, "units": _Int(1),
                                "keep": _FRACTION, "dropout_rate": _FRACTION},
                               {"mask_layer": _STR}), 1),
    }),
    "blog": _Record({
        "accuracy_dropout_off": _FRACTION, "accuracy_dropout_on_mean": _FRACTION,
        "accuracy_dropout_on_std": _NONNEG, "passes": _Int(1), "ensemble_accuracy": _FRACTION,
        "n_test": _Int(1), "mask_accuracy": _List(_FRACTION, 1),
        "record": _Record({"n_masks": _Int(1), "n_examples": _Int(1), "seed": _INT}),
    }, {
        "examples": _List(_Record({"index": _COUNT, "label": _COUNT,
                                   "prob_mean": _List(_FRACTION, 2),
                                   "prob_std": _List(_NONNEG, 2)},
                                  {"image": _Image()})),
    }),
    "robustness": _Record({
        "share_correct": _List(_FRACTION, 1),
        "hardest": _List(_Record({"index": _COUNT, "label": _COUNT, "share_correct": _FRACTION,
                                  "predicted_mode": _COUNT}, {"image": _Image()})),
    }),
    "importance": _Record({
        "method": _STR, "metric": _STR, "n_masks": _COUNT, "alpha": _FRACTION,
        "sites": _Dict(_Record({"scores": _List(_Nullable(_NUM), 1),
                                "low": _List(_Nullable(_NUM)),
                                "high": _List(_Nullable(_NUM)), "significant": _List(_Bool())})),
    }, {
        "class_conditional": _Record({"classes": _List(_COUNT, 1), "units": _List(_STR, 1),
                                      "matrix": _List(_List(_Nullable(_NUM), 1), 1)}),
        "interactions": _Record({
            "nodes": _List(_Record({"id": _STR, "site": _STR, "unit": _COUNT, "score": _NUM})),
            "edges": _List(_Record({"source": _STR, "target": _STR, "weight": _NUM})),
        }),
    }),
    "answer": _Record({
        "tolerance": _NONNEG, "dense_accuracy": _FRACTION,
        "smallest": _Nullable(_SMALLEST),
        "smallest_by_method": _Dict(_Nullable(_SMALLEST)),
        "sentences": _List(_STR),
    }),
}, {})

_COMPARISON = _Record({
    "dense": _Record({"accuracy": _FRACTION, "params": _COUNT, "flops": _COUNT},
                     {"measure": _MEASURE}),
    "rows": _List(_Record({"method": _STR, "budget_flops_fraction": _FRACTION, "seed": _INT,
                           "params": _COUNT, "flops": _COUNT, "accuracy_oneshot": _FRACTION},
                          {"accuracy_finetuned": _FRACTION, "widths": _Dict(_COUNT),
                           "measure": _MEASURE})),
    "summary": _List(_Record({"method": _STR, "budget_flops_fraction": _FRACTION,
                              "seeds": _Int(1), "params": _COUNT, "flops": _COUNT,
                              "accuracy_oneshot_mean": _FRACTION,
                              "accuracy_oneshot_std": _NONNEG},
                             {"accuracy_finetuned_mean": _FRACTION,
                              "accuracy_finetuned_std": _NONNEG})),
}, {"config": _Dict()})


def validate_results(results) -> None:
    """Checks that a results dict has every key the reports read, with the right types.

    Args:
        results: The dict that ``python -m subnet.analyze`` writes as results.json (see the
            package docstring of :mod:`subnet.report` for the schema).

    Raises:
        TypeError: If ``results`` is not a mapping.
        ValueError: If a required key is missing or a value has the wrong type, range or length;
            the message names the key path, e.g. ``results['blog']['mask_accuracy']``.
    """
    if not isinstance(results, Mapping):
        raise InputTypeError(f"`results` must be a dict (the contents of results.json). Received: "
                        f"{type(results).__name__}")
    _SCHEMA.check(results, ())
    created = results["created"]
    try:
        datetime.fromisoformat(created[:-1] + "+00:00" if created.endswith("Z") else created)
    except ValueError:
        raise _fail(("created",), "an ISO-8601 date and time", created) from None

    classes = results["model"]["classes"]
    for i, example in enumerate(results["blog"].get("examples") or []):
        path = ("blog", "examples", i)
        if len(example["prob_mean"]) != classes or len(example["prob_std"]) != classes:
            raise InputError(f"{_where(path)}: 'prob_mean' and 'prob_std' must have one value per "
                             f"class ({classes}). Received lengths {len(example['prob_mean'])} and "
                             f"{len(example['prob_std'])}")
        if example["label"] >= classes:
            raise _fail(path + ("label",), f"a class index < {classes}", example["label"])
    for i, example in enumerate(results["robustness"]["hardest"]):
        for key in ("label", "predicted_mode"):
            if example[key] >= classes:
                raise _fail(("robustness", "hardest", i, key), f"a class index < {classes}",
                            example[key])

    for name, site in results["importance"]["sites"].items():
        n = len(site["scores"])
        for key in ("low", "high", "significant"):
            if len(site[key]) != n:
                raise InputError(f"{_where(('importance', 'sites', name, key))} must have one "
                                 f"value per unit ({n}, as 'scores'). Received {len(site[key])}")
    table = results["importance"].get("class_conditional")
    if table is not None:
        shape = (len(table["classes"]), len(table["units"]))
        matrix = table["matrix"]
        if len(matrix) != shape[0] or any(len(row) != shape[1] for row in matrix):
            raise InputError(f"{_where(('importance', 'class_conditional', 'matrix'))} must have "
                             f"one row per class and one column per unit, {shape[0]} x "
                             f"{shape[1]}. Received {len(matrix)} rows of lengths "
                             f"{sorted({len(row) for row in matrix})}")
    graph = results["importance"].get("interactions")
    if graph is not None:
        ids = {node["id"] for node in graph["nodes"]}
        for i, edge in enumerate(graph["edges"]):
            for key in ("source", "target"):
                if edge[key] not in ids:
                    raise _fail(("importance", "interactions", "edges", i, key),
                                "the id of a node in results['importance']['interactions']"
                                "['nodes']", edge[key])

    if results.get("comparison") is not None:
        _COMPARISON.check(results["comparison"], ("comparison",))

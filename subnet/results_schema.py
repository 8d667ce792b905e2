"""The schema of subnet's result formats: the version, the JSON Schema of results.json and its
checks, with one-line errors; the upgrade of older results; the optional pandas import of
``to_frame()``.

One version number covers every result format subnet writes (``results.json``,
:meth:`subnet.Importance.to_dict`, :meth:`subnet.Comparison.to_dict` and the files saved from
them): :data:`SCHEMA_VERSION`. Data without ``schema_version`` is version 1, what subnet wrote
before the formats were versioned; readers upgrade older versions (:func:`upgrade_results`,
:func:`upgrade_comparison`). Data of a newer version is refused with a message that says to
upgrade subnet.

The schema is the declarative file ``subnet/results.schema.json`` beside this module (JSON
Schema, draft 2020-12; package data), checked with the ``jsonschema``
package. Two things are stricter than plain JSON Schema: a ``number`` must be finite (NaN and
infinities are refused; results write them as null), and an ``integer`` must be an integer, not
a float such as ``3.0``. Keys the schema does not name are allowed and ignored, at the top level
as everywhere. Sections that may be missing or ``null`` (the report then says "not computed")
are ``comparison``, ``importance.class_conditional``, ``importance.interactions``,
``blog.examples`` and every ``image``. What JSON Schema cannot say is checked after it
(:func:`validate_results`): lengths that must agree, class indices below the number of classes,
edges between existing nodes.

:mod:`subnet.results` re-exports these names and reads whole results files
(:func:`subnet.results.load_results`); :mod:`subnet.report.schema` re-exports
:func:`upgrade_results` and :func:`validate_results`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from subnet.errors import InputError, InputTypeError
from subnet.methods import RENAMED, resolve

__all__ = ["SCHEMA_PATH", "SCHEMA_VERSION", "check_schema", "describe_value", "import_pandas",
           "schema", "schema_version", "upgrade_comparison", "upgrade_results", "validate_results",
           "where_text"]

SCHEMA_VERSION = 3
"""The version of the result formats this subnet writes; it reads this one and every older one."""

SCHEMA_PATH = Path(__file__).parent / "results.schema.json"
"""The JSON Schema of results.json; its ``$defs`` also describe a comparison."""


def schema_version(data: Mapping, where: str) -> int:
    """The schema version of ``data``, a dict read from a result file.

    Args:
        data: The dict; its ``schema_version`` is missing (version 1) or an int.
        where: How messages name ``data``, e.g. ``"results"`` or ``"comparison"``.

    Returns:
        The version, 1 to :data:`SCHEMA_VERSION`.

    Raises:
        InputTypeError: If ``data`` is not a dict.
        InputError: If ``schema_version`` is not an integer >= 1, or is newer than this subnet
            knows (the message says to upgrade subnet).
    """
    if not isinstance(data, Mapping):
        raise InputTypeError(f"`{where}` must be a dict. Received: {type(data).__name__}")
    version = data.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(f"{where}['schema_version'] must be an integer >= 1. Received: "
                         f"{describe_value(version)}")
    if version > SCHEMA_VERSION:
        raise InputError(f"{where} has schema_version {version}: it was written by a newer "
                         f"subnet; upgrade subnet to read it (this one reads versions 1 to "
                         f"{SCHEMA_VERSION}).")
    return version


@functools.cache
def schema() -> dict:
    """The JSON Schema of results.json (parsed once; do not modify it)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def check_schema(value, where: str, definition: str | None = None) -> None:
    """Checks ``value`` against the results.json schema or one of its definitions.

    Args:
        value: Data as JSON gives it (dicts, lists, str, int, float, bool, None).
        where: How the message names ``value``; the key path follows, e.g. ``results['model']``.
        definition: A name under ``$defs`` (e.g. ``"comparison"``, which is checked as an
            object), or None for the whole results.json schema.

    Raises:
        InputError: At the first place ``value`` does not fit, one line naming the key path,
            what was expected and what was received.
    """
    error = next(iter(_validator(definition).iter_errors(value)), None)
    if error is not None:
        raise InputError(_message(error, where))


def import_pandas():
    """The ``pandas`` module, which only ``to_frame()`` needs.

    Raises:
        ImportError: If pandas is not installed, saying how to install it.
    """
    try:
        import pandas
    except ImportError as err:
        raise ImportError("to_frame() needs pandas: pip install pandas") from err
    return pandas


def where_text(where: str, path) -> str:
    """``where`` followed by a key path: ``results['comparison']['rows'][3]``."""
    return where + "".join(f"[{part!r}]" for part in path)


def describe_value(value) -> str:
    """A received value for a message: its type and a short repr."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


# ----------------------------------------------------------------------------- results.json

_WHERE = "results"


def upgrade_results(results: Mapping) -> dict:
    """Brings a results dict of an older schema version to the current one.

    - Version 1 (files without ``schema_version``, written before it existed) -> 2: size
      measurements carried ``raw_bytes``, an alias of ``file_bytes``. The upgrade keeps
      ``file_bytes`` (taking ``raw_bytes``' value where only it is there) and drops
      ``raw_bytes`` everywhere.
    - Version 2 -> 3: iterative mask statistics, the comparison method, was ``banzhaf``; it is
      ``banzhaf_iterative`` (:data:`subnet.methods.RENAMED`). The upgrade renames it wherever a
      key or value names a comparison method: ``config.methods``, the comparison
      (:func:`upgrade_comparison`), the answer's methods and the uncertainty section's
      subnetwork predictors. ``importance.method`` names an estimator and stays ``banzhaf``.

    Args:
        results: The contents of a results.json.

    Returns:
        ``results`` itself if it is a dict of the current version; otherwise a new dict
        (``results`` is not changed).

    Raises:
        InputTypeError: If ``results`` is not a dict.
        InputError: If ``schema_version`` is not an integer >= 1, or is newer than this subnet
            reads (the message says to upgrade subnet).
    """
    version = schema_version(results, _WHERE)
    if version == SCHEMA_VERSION:
        return results if isinstance(results, dict) else dict(results)
    upgraded = _without_raw_bytes(results) if version < 2 else dict(results)
    if isinstance(upgraded.get("config"), Mapping):
        upgraded["config"] = _renamed(upgraded["config"], values=("methods",))
    if isinstance(upgraded.get("comparison"), Mapping):
        # a comparison section without its own version has the file's
        comparison = upgrade_comparison({"schema_version": version, **upgraded["comparison"]})
        if "schema_version" not in upgraded["comparison"]:
            comparison.pop("schema_version")
        upgraded["comparison"] = comparison
    answer = upgraded.get("answer")
    if isinstance(answer, Mapping):
        answer = dict(answer)
        for key in ("smallest", "subnetwork"):
            if key in answer:  # a missing key stays missing (and refused where required)
                answer[key] = _renamed(answer[key], values=("method",))
        if isinstance(answer.get("smallest_by_method"), Mapping):
            answer["smallest_by_method"] = {
                resolve(m): _renamed(entry, values=("method",))
                for m, entry in answer["smallest_by_method"].items()}
        upgraded["answer"] = answer
    uncertainty = upgraded.get("uncertainty")
    if isinstance(uncertainty, Mapping):
        uncertainty = dict(uncertainty)
        for key in ("predictors", "entropy_histograms"):
            if isinstance(uncertainty.get(key), Mapping):
                uncertainty[key] = {_renamed_predictor(name): value
                                    for name, value in uncertainty[key].items()}
        upgraded["uncertainty"] = uncertainty
    upgraded["schema_version"] = SCHEMA_VERSION
    return upgraded


def upgrade_comparison(comparison: Mapping) -> dict:
    """Brings a comparison dict (:meth:`subnet.Comparison.to_dict`, results.json's
    ``comparison``) of an older schema version to the current one: ``banzhaf`` ->
    ``banzhaf_iterative`` in ``config.methods``, ``config.allocation``'s keys,
    ``config.reference_method`` and each row's and summary entry's ``method`` (version 2 -> 3;
    version 1 differs from 2 only in results.json). Returns a new dict.

    Raises:
        InputError: If ``schema_version`` is not an integer >= 1, or is newer than this subnet
            reads.
    """
    version = schema_version(comparison, "comparison")
    upgraded = dict(comparison)
    if version >= 3:
        return upgraded
    config = upgraded.get("config")
    if isinstance(config, Mapping):
        config = _renamed(config, values=("methods", "reference_method"))
        if isinstance(config.get("allocation"), Mapping):
            config["allocation"] = {resolve(m): a for m, a in config["allocation"].items()}
        upgraded["config"] = config
    for key in ("rows", "summary"):
        if isinstance(upgraded.get(key), list):
            upgraded[key] = [_renamed(row, values=("method",)) for row in upgraded[key]]
    upgraded["schema_version"] = SCHEMA_VERSION
    return upgraded


def _renamed(section, values: tuple[str, ...]):
    """A copy of a dict with the method keys in ``values`` (a key each, or a list of them)
    renamed (:func:`subnet.methods.resolve`); anything that is not a dict as it is."""
    if not isinstance(section, Mapping):
        return section
    out = dict(section)
    for key in values:
        value = out.get(key)
        if isinstance(value, str):
            out[key] = resolve(value)
        elif isinstance(value, list):
            out[key] = [resolve(v) if isinstance(v, str) else v for v in value]
    return out


def _renamed_predictor(name: str) -> str:
    """``subnetwork_banzhaf@0.25`` -> ``subnetwork_banzhaf_iterative@0.25``."""
    for old, new in RENAMED.items():
        if name.startswith(f"subnetwork_{old}@"):
            return f"subnetwork_{new}@{name.partition('@')[2]}"
    return name


def _without_raw_bytes(value):
    if isinstance(value, Mapping):
        out = {key: _without_raw_bytes(item) for key, item in value.items()
               if key != "raw_bytes"}
        if "raw_bytes" in value and "file_bytes" not in value:
            out["file_bytes"] = value["raw_bytes"]
        return out
    if isinstance(value, list):
        return [_without_raw_bytes(item) for item in value]
    return value


def validate_results(results) -> dict:
    """Checks that a results dict has every key the reports read, with the right types.

    Args:
        results: The dict that ``python -m subnet.analyze`` writes as results.json (the schema:
            ``subnet/results.schema.json``). A version-1 dict (without
            ``schema_version``) is upgraded first (:func:`upgrade_results`).

    Returns:
        The results in the current schema version: ``results`` itself, or for an older version
        an upgraded copy.

    Raises:
        InputTypeError: If ``results`` is not a mapping.
        InputError: If the version is newer than this subnet reads, a required key is missing
            or a value has the wrong type, range or length; one line naming the key path, e.g.
            ``results['blog']['mask_accuracy']``, what was expected and what was received.
    """
    if not isinstance(results, Mapping):
        raise InputTypeError(f"`results` must be a dict (the contents of results.json). "
                             f"Received: {type(results).__name__}")
    results = upgrade_results(results if isinstance(results, dict) else dict(results))
    check_schema(results, _WHERE)
    _check_consistency(results)
    return results


def _fail(path: tuple, expected: str, value) -> InputError:
    return InputError(f"{where_text(_WHERE, path)} must be {expected}. Received: "
                      f"{describe_value(value)}")


def _check_consistency(results: dict) -> None:
    """What the schema cannot say: lengths that agree, class indices, edges between nodes."""
    classes = results["model"]["classes"]
    for i, example in enumerate(results["blog"].get("examples") or []):
        path = ("blog", "examples", i)
        if len(example["prob_mean"]) != classes or len(example["prob_std"]) != classes:
            raise InputError(f"{where_text(_WHERE, path)}: 'prob_mean' and 'prob_std' must have "
                             f"one value per class ({classes}). Received lengths "
                             f"{len(example['prob_mean'])} and {len(example['prob_std'])}")
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
                raise InputError(f"{where_text(_WHERE, ('importance', 'sites', name, key))} "
                                 f"must have one value per unit ({n}, as 'scores'). Received "
                                 f"{len(site[key])}")
    table = results["importance"].get("class_conditional")
    if table is not None:
        shape = (len(table["classes"]), len(table["units"]))
        matrix = table["matrix"]
        if len(matrix) != shape[0] or any(len(row) != shape[1] for row in matrix):
            raise InputError(f"{where_text(_WHERE, ('importance', 'class_conditional', 'matrix'))}"
                             f" must have one row per class and one column per unit, {shape[0]} x "
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


# ----------------------------------------------------------------------------- the validator

def _is_number(checker, value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _is_integer(checker, value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_datetime(value) -> bool:
    if not isinstance(value, str):
        return True
    try:
        datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return False
    return True


def _is_image(value) -> bool:
    """A nested list H x W or H x W x C (C in 1, 3, 4) of finite numbers in [0, 1], or null."""
    import numpy as np

    if value is None:
        return True
    if not isinstance(value, list):
        return False
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return False
    return bool(array.ndim in (2, 3) and min(array.shape) >= 1 and (
        array.ndim == 2 or array.shape[2] in (1, 3, 4)) and np.all(np.isfinite(array))
        and array.min() >= 0 and array.max() <= 1)


@functools.cache
def _validator(definition: str | None):
    import jsonschema

    base = jsonschema.Draft202012Validator
    types = base.TYPE_CHECKER.redefine_many({"number": _is_number, "integer": _is_integer})
    default_items = base.VALIDATORS["items"]

    def items(validator, schema_items, instance, node):
        """``items``, with a fast pass over lists of plain numbers, strings or bools: only an
        item that fails it goes through the full check (which makes the error)."""
        fits = _leaf_check(schema_items)
        if fits is None or "prefixItems" in node or not isinstance(instance, list):
            yield from default_items(validator, schema_items, instance, node)
            return
        for index, item in enumerate(instance):
            if not fits(item):
                yield from validator.descend(item, schema_items, path=index)

    cls = jsonschema.validators.extend(base, {"items": items}, type_checker=types)
    formats = jsonschema.FormatChecker(formats=())
    formats.checks("date-time")(_is_datetime)
    formats.checks("image")(_is_image)
    full = schema()
    if definition is None:
        root = {k: v for k, v in full.items() if k != "$defs"}
    else:
        if definition not in full["$defs"]:
            raise KeyError(f"no definition {definition!r} in {SCHEMA_PATH}")
        root = {"$schema": full["$schema"], "type": "object", "$ref": f"#/$defs/{definition}"}
    # Local references resolved once here (the schema has no recursion): following a $ref
    # at every item of a long list would make checking ten times slower.
    return cls(_inline(root), format_checker=formats)


def _inline(node):
    if isinstance(node, dict):
        return {k: _inline(v) for k, v in _resolve(node).items()}
    if isinstance(node, list):
        return [_inline(v) for v in node]
    return node


_LEAF_TYPES = {"number": lambda v: _is_number(None, v), "integer": lambda v: _is_integer(None, v),
               "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
               "null": lambda v: v is None}


def _leaf_check(node) -> Callable | None:
    """A quick test of one value against a schema of only ``type`` and numeric bounds (what
    the full check accepts), or None for any other schema."""
    if not isinstance(node, dict) or "type" not in node or not set(node) <= {
            "type", "minimum", "maximum", "exclusiveMinimum"}:
        return None
    kinds = [node["type"]] if isinstance(node["type"], str) else node["type"]
    if not all(kind in _LEAF_TYPES for kind in kinds):
        return None
    tests = [_LEAF_TYPES[kind] for kind in kinds]
    low, high = node.get("minimum"), node.get("maximum")
    above = node.get("exclusiveMinimum")

    def fits(value) -> bool:
        if not any(test(value) for test in tests):
            return False
        if value is None or isinstance(value, (str, bool)):
            return True
        return ((low is None or value >= low) and (high is None or value <= high)
                and (above is None or value > above))

    return fits


_IMAGE = "an image: a nested list H x W or H x W x C (C in 1, 3, 4) of numbers in [0, 1]"


def _resolve(node: dict) -> dict:
    """``node`` with a local ``$ref`` merged in: ``required`` and ``properties`` of both, the
    node's own other keywords over the definition's (how this schema uses ``$ref``)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target = _resolve(schema()["$defs"][ref.rsplit("/", 1)[-1]])
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "required" in target and "required" in node:
        merged["required"] = list(dict.fromkeys(target["required"] + node["required"]))
    if "properties" in target and "properties" in node:
        merged["properties"] = {**target["properties"], **node["properties"]}
    return merged


def _describe(node: dict, plural: bool = False) -> str:
    """What a schema node expects, in words: "an integer >= 1", or plural "integers >= 1"."""
    node = _resolve(node)
    kinds = node.get("type", "object" if "properties" in node or "required" in node else None)
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    nullable = "null" in kinds and len(kinds) > 1
    kinds = [k for k in kinds if k != "null"] or kinds
    kind = kinds[0] if kinds else None
    if node.get("format") == "image":
        text = "images" if plural else _IMAGE
    elif node.get("format") == "date-time":
        text = "ISO-8601 dates and times" if plural else "an ISO-8601 date and time"
    elif kind in ("integer", "number"):
        low, high = node.get("minimum"), node.get("maximum")
        if "exclusiveMinimum" in node:
            bound = f" > {node['exclusiveMinimum']:g}"
        elif low is not None and high is not None:
            bound = f" in [{low:g}, {high:g}]"
        elif low is not None:
            bound = f" >= {low:g}"
        else:
            bound = ""
        word = {"integer": ("an integer", "integers"), "number": ("a number", "numbers")}[kind]
        text = word[plural] + bound
    elif kind == "array":
        items = node.get("items")
        text = ("lists" if plural else "a list") + (
            f" of {_describe(items, plural=True)}" if items else "")
        least = node.get("minItems", 0)
        if least and not plural:
            text += f" with at least {least} item{'s' if least > 1 else ''}"
    elif kind == "object":
        values = node.get("additionalProperties")
        text = ("objects" if plural else "an object") + (
            f" of {_describe(values, plural=True)}" if isinstance(values, dict) else "")
    elif kind in ("string", "boolean"):
        word = {"string": ("a string", "strings"), "boolean": ("a bool", "bools")}[kind]
        text = word[plural]
    elif "const" in node:
        text = repr(node["const"])
    else:
        text = "values" if plural else "a value"
    if nullable:
        text += " or nulls" if plural else " or null"
    return text


def _message(error, where: str) -> str:
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = next(key for key in error.validator_value if key not in error.instance)
        return f"{where_text(where, path + [missing])} is required but missing."
    node = _resolve(error.schema)
    kinds = node.get("type")
    if path and isinstance(path[-1], int) and kinds == "number":
        # An item of a list of numbers: the message names the list, as for a long list the
        # index is easier to read after the value than inside the key path.
        index = path.pop()
        return (f"{where_text(where, path)} must be a list of {_describe(node, plural=True)}. "
                f"Received: {describe_value(error.instance)} at index {index}")
    return (f"{where_text(where, path)} must be {_describe(node)}. Received: "
            f"{describe_value(error.instance)}")

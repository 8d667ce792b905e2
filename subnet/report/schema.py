"""The results.json schema the reports read, checked with messages that name the key path.

The schema is declarative: ``subnet/report/results.schema.json`` (JSON Schema, draft 2020-12,
checked with ``jsonschema``; see :mod:`subnet.results`). Keys it does not name are allowed and
ignored, at the top level as everywhere. Sections that may be missing or ``null`` (the report
then says "not computed") are ``comparison``, ``importance.class_conditional``,
``importance.interactions``, ``blog.examples`` and every ``image``. What JSON Schema cannot say
is checked here after it: lengths that must agree, class indices below the number of classes,
edges between existing nodes.

Versions: results.json carries ``schema_version`` (:data:`subnet.results.SCHEMA_VERSION`, 2).
A file without it is version 1 and is read through :func:`upgrade_results`; a newer version is
refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from subnet.errors import InputError, InputTypeError
from subnet.results import (
    SCHEMA_VERSION,
    check_schema,
    describe_value,
    schema_version,
    where_text,
)

__all__ = ["upgrade_results", "validate_results"]

_WHERE = "results"


def upgrade_results(results: Mapping) -> dict:
    """Brings a results dict of an older schema version to the current one.

    Version 1 (files without ``schema_version``, written before it existed) differs from
    version 2 in one thing: size measurements carried ``raw_bytes``, an alias of
    ``file_bytes``. The upgrade keeps ``file_bytes`` (taking ``raw_bytes``' value where only it
    is there), drops ``raw_bytes`` everywhere and sets ``schema_version`` to 2.

    Args:
        results: The contents of a results.json.

    Returns:
        ``results`` itself if it is of the current version; otherwise a new dict (``results``
        is not changed).

    Raises:
        InputTypeError: If ``results`` is not a dict.
        InputError: If ``schema_version`` is not an integer >= 1, or is newer than this subnet
            reads (the message says to upgrade subnet).
    """
    version = schema_version(results, _WHERE)
    if version == SCHEMA_VERSION:
        return results
    upgraded = _without_raw_bytes(results)  # version 1 -> 2
    upgraded["schema_version"] = 2
    return upgraded


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
            ``subnet/report/results.schema.json``). A version-1 dict (without
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

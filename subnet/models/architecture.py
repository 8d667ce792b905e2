"""A model file's architecture JSON, read as data: code in it, names, dropout ``Lambda`` layers.

Nothing here deserializes anything or runs code: the architecture is walked as nested dicts and
lists (iteratively, so that no nesting depth exhausts the stack). :mod:`subnet.models.loading`
uses these walks to refuse code, to rename layers TensorFlow cannot run, and, once the user
trusts the file, to rebuild dropout ``Lambda`` layers as ``Dropout`` layers.
"""

from __future__ import annotations

import base64
import binascii
import marshal
import re
import types
from collections.abc import Iterator
from typing import Any

from subnet.errors import clean

#: Most code objects examined when reading a trusted dropout ``Lambda``.
_MAX_CODE_OBJECTS = 10_000

# Layer classes whose deserialization runs code stored in, or named by, the file.
_CODE_LAYERS = frozenset({"Lambda", "TFSMLayer"})
# Class names of serialized Python code (a lambda used as a function, activation, initializer...).
_CODE_CLASS_NAMES = frozenset({"__lambda__"})
# Keys under which a wrapper layer (TimeDistributed, Bidirectional) stores the layer it wraps.
_WRAPPED_LAYER_KEYS = ("layer", "forward_layer", "backward_layer")
# Keys whose values refer to layers by name: [name, node index, tensor index].
_REFERENCE_KEYS = frozenset({"inbound_nodes", "input_layers", "output_layers"})
# Marshalled code objects start with the byte 0x63 or 0xE3; base64 turns those into these.
_CODE_B64_PREFIXES = frozenset({"Yw", "Yx", "Yy", "Yz", "4w", "4x", "4y", "4z"})
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+\Z")
# Names TensorFlow accepts as a name scope (a root scope, the stricter of the two rules).
_VALID_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.-]*\Z")


def _layer_label(layer: dict) -> str:
    cls = layer.get("class_name")
    config = layer.get("config")
    lcfg = config if isinstance(config, dict) else {}
    name = layer.get("name") or lcfg.get("name") or "?"
    return f"'{clean(name, 200)}' ({clean(cls, 100)})"


def _code_in_config(config: dict) -> list[str]:
    """Labels ("'name' (Class)") of the layers whose configuration holds code, at any depth:
    code layers (``Lambda``, ``TFSMLayer``), serialized Python lambdas (``__lambda__``) and any
    string that is a base64 marshalled code object. The model itself is labelled if code sits
    outside every layer."""
    found: dict[str, None] = {}
    stack: list[tuple[Any, str, bool]] = [(config, _layer_label(config), True)]
    while stack:
        node, label, is_layer = stack.pop()
        if isinstance(node, dict):
            cls = node.get("class_name")
            if is_layer or cls in _CODE_LAYERS:  # a code layer counts wherever it sits
                label = _layer_label(node)
            if cls in _CODE_LAYERS or cls in _CODE_CLASS_NAMES:
                found[label] = None
            for key, value in node.items():
                if key == "layers" and isinstance(value, list):
                    stack.extend((item, label, True) for item in value)
                else:
                    stack.append((value, label, key in _WRAPPED_LAYER_KEYS))
        elif isinstance(node, list):
            stack.extend((item, label, False) for item in node)
        elif isinstance(node, str) and _looks_like_code(node):
            found[label] = None
    return list(found)


def _looks_like_code(text: str) -> bool:
    """Whether ``text`` is base64 of a marshalled Python code object (how Keras stores a lambda);
    decided from its first bytes, without unmarshalling anything."""
    return len(text) >= 40 and text[:2] in _CODE_B64_PREFIXES and bool(_BASE64.match(text))


def _walk_layer_configs(config: dict) -> Iterator[tuple[str, str, dict]]:
    """Yields (class_name, layer name, layer config dict) for every layer, nested ones too, in
    model order; iterative, so that no nesting depth exhausts the stack."""
    stack: list[Iterator] = [iter(_sublayers(config))]
    while stack:
        layer = next(stack[-1], None)
        if layer is None:
            stack.pop()
            continue
        cls = str(layer.get("class_name", ""))
        lcfg = layer.get("config", {}) if isinstance(layer.get("config"), dict) else {}
        name = str(layer.get("name") or lcfg.get("name") or "?")
        yield cls, name, layer
        stack.append(iter(_sublayers(layer)))


def _sublayers(config: dict) -> list[dict]:
    inner = config.get("config", {})
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        return []
    return [layer for layer in layers if isinstance(layer, dict)]


def _rename_invalid(config: dict) -> dict[str, str]:
    """Renames, in place, the model and layers whose names TensorFlow refuses as name scopes.

    Each invalid name becomes its valid characters with ``_`` for the others (prefixed with
    ``n`` if it would not start with a letter, digit or dot), plus ``_2``, ``_3``... if that name
    is taken; the same original name gets the same new name everywhere. References to layers
    (inbound nodes, input and output layers) follow. Returns {new name: original name}.
    """
    holders: list[dict] = []  # dicts whose "name" and config "name" are layer or model names
    stack: list[tuple[Any, bool]] = [(config, True)]
    while stack:
        node, is_layer = stack.pop()
        if isinstance(node, dict):
            if is_layer:
                holders.append(node)
            for key, value in node.items():
                if key == "layers" and isinstance(value, list):
                    stack.extend((item, True) for item in reversed(value))
                elif key not in _REFERENCE_KEYS:
                    stack.append((value, key in _WRAPPED_LAYER_KEYS))
        elif isinstance(node, list):
            stack.extend((item, False) for item in reversed(node))

    def names_of(holder: dict) -> list[str]:
        holder_config = holder.get("config")
        inner = holder_config if isinstance(holder_config, dict) else {}
        return [n for n in (holder.get("name"), inner.get("name")) if isinstance(n, str)]

    all_names = [n for holder in holders for n in names_of(holder)]
    used = {n for n in all_names if _VALID_NAME.match(n)}
    new_of: dict[str, str] = {}
    for name in all_names:
        if name in used or name in new_of:
            continue
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "layer"
        if not _VALID_NAME.match(base):
            base = "n" + base
        new, k = base, 1
        while new in used:
            k += 1
            new = f"{base}_{k}"
        used.add(new)
        new_of[name] = new
    if not new_of:
        return {}
    for holder in holders:
        if holder.get("name") in new_of:
            holder["name"] = new_of[holder["name"]]
        inner = holder.get("config")
        if isinstance(inner, dict) and inner.get("name") in new_of:
            inner["name"] = new_of[inner["name"]]
    _rename_references(config, new_of)
    return {new: old for old, new in new_of.items()}


def _rename_references(config: dict, new_of: dict[str, str]) -> None:
    """Renames [layer name, node index, tensor index] references under the reference keys."""
    stack: list[tuple[Any, bool]] = [(config, False)]
    while stack:
        node, in_refs = stack.pop()
        if isinstance(node, dict):
            stack.extend((value, in_refs or key in _REFERENCE_KEYS) for key, value in node.items())
        elif isinstance(node, list):
            if (in_refs and len(node) >= 3 and isinstance(node[0], str) and node[0] in new_of
                    and all(isinstance(i, int) for i in node[1:3])):
                node[0] = new_of[node[0]]
            stack.extend((item, in_refs) for item in node)


def _rewrite_dropout_lambdas(config: dict) -> bool:
    """Replaces dropout ``Lambda`` layers by always-on ``Dropout`` layers, in place.

    Only called once the user trusts the file: it unmarshals the stored bytecode to read it
    (never runs it). Returns True if anything was rewritten.
    """
    changed = False
    for cls, name, layer in list(_walk_layer_configs(config)):
        if cls != "Lambda":
            continue
        rate = _dropout_lambda_rate(layer.get("config", {}))
        if rate is None:
            continue
        old = layer["config"]
        layer["class_name"] = "Dropout"
        layer.pop("registered_name", None)
        new = {"name": old.get("name", name), "trainable": old.get("trainable", True),
               "rate": rate, "seed": None, "noise_shape": None}
        if "dtype" in old:
            new["dtype"] = old["dtype"]
        layer["config"] = new
        if "module" in old or "module" in layer:
            layer["module"] = "keras.layers"
        _set_training_true(layer)
        changed = True
    return changed


def _set_training_true(layer: dict) -> None:
    """Makes every call of a (rewritten) layer ``layer(x, training=True)``, with no other kwargs
    (a Lambda's ``mask`` argument is not Dropout's)."""
    for node in layer.get("inbound_nodes") or []:
        if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            node["kwargs"] = {"training": True}
        elif isinstance(node, list):  # Keras 2: [[inbound, node_index, tensor_index, kwargs]]
            for call in node:
                if isinstance(call, list) and len(call) >= 3:
                    call[3:] = [{"training": True}]


def _dropout_lambda_rate(lcfg: dict) -> float | None:
    """Reads the rate of a Lambda that calls a ``dropout`` function, or None if it is not one."""
    if not isinstance(lcfg, dict):
        return None
    fn = lcfg.get("function")
    if isinstance(fn, dict) and fn.get("class_name") == "__lambda__":  # Keras 3
        inner = fn.get("config", {})
        inner = inner if isinstance(inner, dict) else {}
        code_b64, defaults, closure = inner.get("code"), inner.get("defaults"), inner.get("closure")
    elif isinstance(fn, list) and len(fn) == 3:  # Keras 2: [code, defaults, closure]
        code_b64, defaults, closure = fn
    else:
        return None
    if not isinstance(code_b64, str):
        return None
    try:
        code = marshal.loads(base64.b64decode(code_b64.encode("ascii")))
    except (ValueError, EOFError, TypeError, binascii.Error, RecursionError):
        return None  # bytecode from another Python version, or nested too deeply: not read
    if not isinstance(code, types.CodeType):
        return None
    codes = _code_objects(code)
    if not any("dropout" in c.co_names for c in codes):
        return None
    args = lcfg.get("arguments") or {}
    candidates: list[Any] = []
    if isinstance(args, dict):
        candidates += [args.get("level"), args.get("rate")]
    for extra in (closure, defaults):
        candidates += list(extra) if isinstance(extra, (list, tuple)) else []
    candidates += [const for c in codes for const in c.co_consts if isinstance(const, float)]
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
            return float(value)
    return None


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    """``code`` and the code objects nested in its constants, in pre-order, iteratively; at
    most ``_MAX_CODE_OBJECTS`` of them."""
    out: list[types.CodeType] = []
    stack = [code]
    while stack and len(out) < _MAX_CODE_OBJECTS:
        current = stack.pop()
        out.append(current)
        stack.extend(reversed([c for c in current.co_consts if isinstance(c, types.CodeType)]))
    return out

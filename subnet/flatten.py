"""Nested models inlined: a model used as a layer (a Sequential block, a functional stem as in
ConvNeXt) becomes its own layers, called where it was called.

subnet reads a model's graph layer by layer (:func:`subnet.channel_groups`), and a nested model
is a layer it cannot see into. :func:`flatten_nested` returns an equivalent flat functional
model: every layer of every nested model (at any depth) copied from its config with its weights
and called inline, the outer layers copied alike, so the original model is left untouched and
the two compute the same function. :func:`subnet.load_model` flattens the models it loads.
"""

from __future__ import annotations

from subnet.errors import InputError, InputTypeError
from subnet.runtime import keras

__all__ = ["flatten_nested", "has_nested"]


def has_nested(model) -> bool:
    """Whether ``model`` has a model among its layers."""
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def flatten_nested(model):
    """An equivalent flat functional model: nested models' layers called inline.

    Layers keep their names; a nested layer whose name is taken already is named
    ``{nested model}_{layer}``. The weights are copied (the original model is not changed).

    Args:
        model: A built functional or Sequential ``keras.Model``.

    Returns:
        ``model`` itself if it has no nested model, else a new functional ``keras.Model`` of the
        same name, inputs and outputs.

    Raises:
        InputError: If a nested model is called more than once (its weights are shared between
            the calls, which a flat copy would untie).
    """
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"Expected a keras.Model for argument `model`. "
                             f"Received: {type(model)!r}")
    if not has_nested(model):
        return model
    for layer in model.layers:
        if isinstance(layer, keras.Model) and len(layer._inbound_nodes) > 1:
            raise InputError(f"Layer {layer.name!r} is a nested model called "
                             f"{len(layer._inbound_nodes)} times (its weights are shared "
                             "between the calls); subnet needs each layer called once.")
    taken: set[str] = set()
    names = [layer.name for layer in model.layers
             if isinstance(layer, keras.layers.InputLayer)]
    if len(names) != len(model.inputs):
        names = [None] * len(model.inputs)
    inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=name)
              for t, name in zip(model.inputs, names, strict=True)]
    taken.update(name for name in names if name)
    outputs = _inline(model, inputs if len(inputs) > 1 else inputs[0], taken, prefix="")
    return keras.Model(inputs, outputs, name=model.name)


def _inline(model, tensors, taken: set[str], prefix: str):
    """``model``'s layers called on ``tensors``, nested models expanded; its output tensors."""
    if isinstance(model, keras.Sequential):
        x = tensors
        for layer in model.layers:
            x = _call(layer, (x,), {}, taken, prefix)
        return x
    originals: dict[int, keras.layers.Layer] = {}

    def clone(layer):
        if isinstance(layer, keras.Model):
            return layer  # expanded by call() below
        copy = _copy(layer, taken, prefix)
        originals[id(copy)] = layer
        return copy

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.Model):
            return _inline(layer, args[0] if len(args) == 1 else list(args), taken,
                           f"{layer.name}_")
        return _run(layer, originals.get(id(layer)), args, kwargs)

    if isinstance(model.input, (list, tuple)) and not isinstance(tensors, (list, tuple)):
        tensors = [tensors]
    replayed = keras.models.clone_model(model, input_tensors=tensors, clone_function=clone,
                                        call_function=call)
    outputs = replayed.outputs
    return outputs[0] if len(outputs) == 1 else outputs


def _call(layer, args, kwargs, taken: set[str], prefix: str):
    if isinstance(layer, keras.Model):
        return _inline(layer, args[0], taken, f"{layer.name}_")
    if isinstance(layer, keras.layers.InputLayer):
        return args[0]
    return _run(_copy(layer, taken, prefix), layer, args, kwargs)


def _copy(layer, taken: set[str], prefix: str):
    """A new layer from ``layer``'s config, under a name not yet taken (built when called)."""
    return layer.__class__.from_config({**layer.get_config(),
                                        "name": _unique(layer.name, taken, prefix)})


def _run(copy, original, args, kwargs):
    """``copy`` called on ``args``, then given ``original``'s weights (now that it is built)."""
    out = copy(*args, **kwargs)
    if original is not None and original.weights:
        copy.set_weights(original.get_weights())
    return out


def _unique(name: str, taken: set[str], prefix: str) -> str:
    """``name``, else ``prefix + name``, else with a numbered suffix; then taken."""
    candidate = name if name not in taken else f"{prefix}{name}"
    base, k = candidate, 2
    while candidate in taken:
        candidate, k = f"{base}_{k}", k + 1
    taken.add(candidate)
    return candidate

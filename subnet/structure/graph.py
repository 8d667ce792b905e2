"""A model's layer calls in topological order: the one walk of a Keras graph that every view
of the model (channel groups, cost, extraction, the backends' segments) reads."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from subnet.errors import InputError, InputTypeError, clean
from subnet.runtime import keras
from subnet.structure.rules import Rule, layer_error, rule_for


@dataclasses.dataclass(frozen=True)
class Call:
    """One layer call in the graph, in topological order.

    Attributes:
        layer: The Keras layer.
        node: Its Keras node (holds the call's arguments).
        inputs: Names of the tensors it reads (the producing layers' names), in argument order.
    """

    layer: keras.layers.Layer
    node: Any
    inputs: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.layer.name

    @functools.cached_property
    def rule(self) -> Rule:
        """The layer's rule in the table (:func:`subnet.structure.rules.rule_for`)."""
        return rule_for(self.layer, op_arguments(self))


def graph_calls(model) -> tuple[list[Call], str, str]:
    """The model's layer calls in topological order, with its input and output tensor names.

    Args:
        model: A flat functional or Sequential ``keras.Model`` with one input and one output.

    Returns:
        ``(calls, input name, output name)``.

    Raises:
        InputError: If the model has several inputs or outputs, a nested model, a layer used
            more than once or a layer with several outputs.
    """
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"Expected a keras.Model for argument `model`. "
                             f"Received: {type(model)!r}")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise InputError(f"Model {clean(model.name)!r} has no defined input; subnet needs a "
                         "built functional or Sequential model (give the first layer an Input).")
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError("subnet analyses classifiers with one input and one output; the model "
                         f"has {len(inputs)} inputs and {len(outputs)} outputs.")
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise InputError(
                f"Layer {clean(layer.name)!r} is a nested model ({type(layer).__name__}); "
                "subnet needs a flat model: model = subnet.flatten_nested(model) calls its "
                "layers inline (subnet.load_model does this).")
    calls: dict[str, Call] = {}
    order: list[str] = []
    seen: dict[str, int] = {}

    def visit(tensor) -> str:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            raise InputError(f"Model {clean(model.name)!r}: a tensor without Keras history; "
                             "subnet needs a functional or Sequential model.")
        layer, node_index = history[0], history[1]
        name = layer.name
        if history[2] != 0 or seen.setdefault(name, node_index) != node_index:
            raise layer_error(layer, "is used more than once or has several outputs (shared "
                                      "weights); subnet needs each layer called once.")
        if name in calls:
            return name
        node = layer._inbound_nodes[node_index]
        parents = tuple(visit(t) for t in node.arguments.keras_tensors)
        calls[name] = Call(layer=layer, node=node, inputs=parents)
        order.append(name)
        return name

    stack_limit = 10_000
    if len(model.layers) > stack_limit:
        raise InputError(f"Model {clean(model.name)!r} has {len(model.layers)} layers; subnet "
                         f"supports at most {stack_limit}.")
    import sys
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * len(model.layers) + 1000))
    try:
        output = visit(outputs[0])
    finally:
        sys.setrecursionlimit(limit)
    input_name = inputs[0]._keras_history[0].name
    return [calls[name] for name in order], input_name, output


def op_arguments(call: Call) -> list:
    """The arguments of the call, positional then keyword."""
    arguments = call.node.arguments
    return list(arguments.args) + list(arguments.kwargs.values())

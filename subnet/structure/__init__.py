"""Channel groups: what a unit is in any Keras graph, and what deleting one removes.

In a chain of layers a unit is one output channel of a Conv or Dense layer. In a general graph
channels are *coupled* (Torch-Pruning's DepGraph does the same analysis for PyTorch):

- ``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum`` and ``Minimum`` tie channel c of
  every input to channel c of their output, so a residual stream's channel c is one unit across
  every block that writes or reads it;
- ``Concatenate`` places its inputs' channels side by side;
- per-channel layers (BatchNormalization, activations, dropout, pooling, padding, cropping,
  up-sampling, and ``DepthwiseConv2D``, whose output channels c*m .. c*m+m-1 read only input
  channel c) pass channels through;
- ``Flatten`` and channel-preserving ``Reshape`` spread a channel over positions;
- channel-mixing layers (Conv, Dense, the pointwise half of ``SeparableConv2D``) *produce* new
  channels and *consume* their input's.

A **group** is a set of channels that must be kept or dropped together; it is a *unit*. Groups
produced by the same layers form a **site** (in a chain: one Conv/Dense layer). Channels that
reach the model's input or output (the classes) are fixed: they are never units.

Dropping a unit zeroes its channels where channel-mixing layers *read* them (its *mask
points*), with every value in between left alone. Deleting the unit removes its channels from
every producer's output, every per-channel layer between, and every consumer's input, so the
two are the same function, which is what makes masking and physical extraction agree. Layers
across which zeroing a channel is not deleting it (LayerNormalization, a softmax over channels)
and layers subnet cannot see into (Lambda, nested models) are refused by name, with the reason.

The structure says nothing about keep probabilities: those belong to the record.

:func:`channel_groups` derives it from a live Keras model; :class:`Structure` answers which channels
of which tensors and weights each unit owns, and builds the masked model
(:meth:`Structure.masked_model`), the exact cost of any keep-set (:meth:`Structure.cost`) and the
physically smaller model (:meth:`Structure.extract`).

The package is the one reader of a model's graph: :mod:`~subnet.structure.rules` (the table of
layer rules, one :class:`Rule` per kind of layer: how channels flow through it, how its weights
are cut to the kept channels, how its copy is resized and what it costs; channel groups, cost,
extraction, criteria and the backends all look a layer up there, and teaching subnet a layer
type means adding one rule),
:mod:`~subnet.structure.graph` (the layer calls in topological order),
:mod:`~subnet.structure.groups` (channel groups, sites, masking and extraction) and
:mod:`~subnet.structure.cost` (exact cost of any keep-set as a :class:`Cost`, and its
incremental form). The backends' segments (:func:`subnet.engine.chain.analyse_chain`) are read
from the structure.
"""

from subnet.structure.cost import Cost, CostModel, CostState
from subnet.structure.graph import Call, graph_calls
from subnet.structure.groups import Group, Structure, StructureSite, channel_groups
from subnet.structure.rules import TABLE, Rule, layer_weights, rule_for

__all__ = ["TABLE", "Call", "Cost", "CostModel", "CostState", "Group", "Rule", "Structure",
           "StructureSite", "channel_groups", "graph_calls", "layer_weights", "rule_for"]

"""Channel groups: the structure of a model, its sites and what any keep-set keeps (see
:mod:`subnet.structure`)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence

import numpy as np

from subnet.errors import InputError, clean
from subnet.runtime import keras
from subnet.structure.cost import Cost, CostModel
from subnet.structure.graph import Call, graph_calls
from subnet.structure.rules import (
    Dropout,
    L,
    Merge,
    check_layout,
    layer_error,
    layer_weights,
    softmax_activation,
)


@dataclasses.dataclass(frozen=True)
class Group:
    """One unit: a set of channels kept or dropped together.

    Attributes:
        index: Position among all groups (the global unit order).
        site: Index of its site.
        producers: {layer name: output channel indices} of the layers that produce it.
    """

    index: int
    site: int
    producers: Mapping[str, tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class StructureSite:
    """Groups produced together by the same layers (in a chain: one Conv/Dense layer).

    Attributes:
        name: The first producing layer's name.
        kind: ``"conv1d"``, ``"conv2d"``, ``"conv3d"``, ``"dense"`` or ``"separable"`` for one
            producer, ``"coupled"`` for several (a residual stream, coupled branches).
        layers: Names of the producing layers, in model order.
        groups: Indices of its groups, in unit order.
        mask_layer: The layer whose output the first consumer reads (before layout layers).
        dropout_rate: Rate of the model's own dropout on the way to that consumer (0.0 if none).
        dropout_layers: Names of those dropout layers.
    """

    name: str
    kind: str
    layers: tuple[str, ...]
    groups: tuple[int, ...]
    mask_layer: str
    dropout_rate: float
    dropout_layers: tuple[str, ...] = ()

    @property
    def units(self) -> int:
        return len(self.groups)


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []
        self.fixed: list[bool] = []

    def new(self, n: int, fixed: bool = False) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.fixed.extend([fixed] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)
            self.fixed[min(a, b)] = self.fixed[a] or self.fixed[b]

    def fix(self, i: int) -> None:
        self.fixed[self.find(i)] = True


class Structure:
    """The channel groups of a classifier, its sites, and what any keep-set keeps.

    Build it with :func:`channel_groups`. Units are numbered site by site, in model order, and
    within a site by (first producing layer, its output channel), so for a chain the order is
    each Conv/Dense layer's channels in turn.

    Attributes:
        model: The Keras model.
        calls: Its layer calls in topological order.
        sites: The :class:`StructureSite` objects, in model order.
        groups: The :class:`Group` objects, in unit order.
        probabilities: True if the model outputs probabilities (ends in a softmax).
    """

    def __init__(self, model, calls, input_name, output_name, ids, fixed, consumers):
        self.model = model
        self.calls = calls
        self.input_name = input_name
        self.output_name = output_name
        self._consumers = consumers  # names of the layers that read channels as inputs
        self._by_name = {c.name: c for c in calls}
        self._positions = {c.name: i for i, c in enumerate(calls)}
        # Producers of each root id, in model order.
        producers: dict[int, dict[str, list[int]]] = {}
        for call in calls:
            if call.rule.produces:
                for channel, root in enumerate(ids[call.name]):
                    if not fixed[root]:
                        producers.setdefault(int(root), {}).setdefault(call.name, []).append(
                            channel)
        # Sites: roots sharing a producing layer.
        site_of_layer: dict[str, int] = {}
        site_roots: list[list[int]] = []
        site_layers: list[list[str]] = []
        merged: dict[int, int] = {}

        def site_find(k):
            while k in merged:
                k = merged[k]
            return k

        for root in sorted(producers, key=lambda r: min(
                (self._positions[name], ch[0]) for name, ch in producers[r].items())):
            linked = sorted({site_find(site_of_layer[n]) for n in producers[root]
                             if n in site_of_layer})
            if linked:
                k = linked[0]
                for other in linked[1:]:
                    merged[other] = k
                    site_roots[k] += site_roots[other]
                    site_layers[k] += site_layers[other]
                    site_roots[other], site_layers[other] = [], []
            else:
                k = len(site_roots)
                site_roots.append([])
                site_layers.append([])
            site_roots[k].append(root)
            for name in producers[root]:
                if name not in site_layers[k]:
                    site_layers[k].append(name)
                site_of_layer[name] = k
        order = sorted((k for k in range(len(site_roots)) if site_roots[k]),
                       key=lambda k: min(self._positions[n] for n in site_layers[k]))
        self.groups: list[Group] = []
        self.sites: list[StructureSite] = []
        self._unit_of_root: dict[int, int] = {}
        for s, k in enumerate(order):
            layers = sorted(site_layers[k], key=self._positions.__getitem__)
            roots = sorted(site_roots[k], key=lambda r: min(
                (self._positions[n], ch[0]) for n, ch in producers[r].items()))
            indices = []
            for root in roots:
                unit = len(self.groups)
                self._unit_of_root[root] = unit
                self.groups.append(Group(unit, s, {n: tuple(ch) for n, ch in
                                                   producers[root].items()}))
                indices.append(unit)
            mask_layer, dropouts = self._first_read(roots[0], ids)
            rate = 1.0 - float(np.prod([1.0 - float(self._by_name[d].layer.rate)
                                        for d in dropouts]))
            self.sites.append(StructureSite(
                name=layers[0], kind=self._kind(layers), layers=tuple(layers),
                groups=tuple(indices), mask_layer=mask_layer, dropout_rate=rate,
                dropout_layers=tuple(dropouts)))
        # Each tensor's channels as global unit indices (-1: fixed).
        self.units_of: dict[str, np.ndarray] = {
            name: np.array([-1 if fixed[r] else self._unit_of_root.get(int(r), -1)
                            for r in roots], dtype=np.int64)
            for name, roots in ids.items()}
        self.probabilities = _ends_in_softmax(self)
        self._cost: CostModel | None = None

    # --------------------------------------------------------------------------- reading

    def _kind(self, layers) -> str:
        if len(layers) > 1:
            return "coupled"
        call = self._by_name[layers[0]]
        if call.rule.name == "conv":
            return f"conv{len(call.layer.kernel_size)}d"
        return call.rule.name

    def _read_source(self, call: Call) -> str:
        """The layer whose output consumer ``call`` reads, looking through Flatten/Reshape."""
        source = call.inputs[0]
        while self._by_name[source].rule.layout:
            source = self._by_name[source].inputs[0]
        return source

    def _first_read(self, root: int, ids) -> tuple[str, list[str]]:
        """The layer whose output the first consumer of ``root`` reads (before layout layers),
        and the model's dropout layers on the way there from the last producer or merge."""
        for call in self.calls:
            if call.name not in self._consumers or root not in ids[call.inputs[0]]:
                continue
            source = self._read_source(call)
            mask_layer, dropouts = source, []
            while source in self._by_name and not (self._by_name[source].rule.produces or
                                                   isinstance(self._by_name[source].rule, Merge)):
                if isinstance(self._by_name[source].rule, Dropout):
                    dropouts.append(source)
                if len(self._by_name[source].inputs) != 1:
                    break
                source = self._by_name[source].inputs[0]
            return mask_layer, dropouts[::-1]
        return self.calls[-1].name, []

    @property
    def n_units(self) -> int:
        return len(self.groups)

    @property
    def is_chain(self) -> bool:
        """Whether every site is one layer and no layer after the first site has two inputs."""
        first = min((self._positions[s.name] for s in self.sites), default=0)
        return all(len(s.layers) == 1 for s in self.sites) and \
            all(len(c.inputs) <= 1 for c in self.calls[first:])

    def channels(self, name: str) -> np.ndarray:
        """Unit index of each channel of layer ``name``'s output (-1: fixed, never dropped)."""
        return self.units_of[name].copy()

    def input_channels(self, name: str) -> np.ndarray:
        """Unit index of each channel that layer ``name`` reads (its first input)."""
        return self.units_of[self._by_name[name].inputs[0]].copy()

    def read_points(self) -> list[tuple[str, np.ndarray]]:
        """Where channel-mixing layers read units: each distinct tensor (the layer before any
        Flatten/Reshape) a consumer reads, with the unit index of each of its channels (-1:
        fixed), in model order. A unit's activation is its channels' values there; in a chain,
        each site's one read point is its mask layer."""
        points: dict[str, np.ndarray] = {}
        for call in self.calls:
            if call.name not in self._consumers or not call.inputs:
                continue
            source = self._read_source(call)
            if source not in points and (self.units_of[source] >= 0).any():
                points[source] = self.units_of[source].copy()
        return sorted(points.items(), key=lambda item: self._positions[item[0]])

    def describe(self) -> list[dict]:
        """The sites as JSON-ready dicts (name, kind, units, layers, mask layer, dropout)."""
        return [{"name": s.name, "kind": s.kind, "units": s.units, "layers": list(s.layers),
                 "mask_layer": s.mask_layer, "dropout_rate": s.dropout_rate}
                for s in self.sites]

    # ----------------------------------------------------------------------- keep-sets

    def unit_bits(self, keep: Mapping[str, np.ndarray] | np.ndarray | None) -> np.ndarray:
        """A keep-set as one bool per unit (global order).

        Args:
            keep: {site name: bool array (units,)} (sites not named keep everything), a bool
                array over all units, or None (keep everything).

        Raises:
            InputError: If a site is unknown, an array has the wrong shape or dtype, or a site
                keeps no unit.
        """
        if keep is None:
            return np.ones(self.n_units, bool)
        if not isinstance(keep, Mapping):
            bits = np.asarray(keep)
            if bits.dtype != bool or bits.shape != (self.n_units,):
                raise InputError(f"A keep-set over all units must be a bool array of shape "
                                 f"({self.n_units},). Received dtype {bits.dtype}, shape "
                                 f"{bits.shape}.")
            keep = {s.name: bits[list(s.groups)] for s in self.sites}
        names = [s.name for s in self.sites]
        unknown = sorted(set(keep) - set(names))
        if unknown:
            raise InputError(f"`keep` names {[clean(n) for n in unknown]}, which are not sites; "
                             f"the sites are {names}.")
        bits = np.ones(self.n_units, bool)
        for site in self.sites:
            if site.name not in keep:
                continue
            value = np.asarray(keep[site.name])
            if value.dtype != bool or value.shape != (site.units,):
                raise InputError(f"keep[{site.name!r}] must be a bool array of shape "
                                 f"({site.units},). Received dtype {value.dtype}, shape "
                                 f"{value.shape}.")
            if not value.any():
                raise InputError(f"keep[{site.name!r}] keeps no unit: a site cannot be emptied "
                                 "(the network would be cut in two). Keep at least one unit "
                                 "per site.")
            bits[list(site.groups)] = value
        return bits

    def kept_channels(self, name: str, bits: np.ndarray, *, reads: bool = False) -> np.ndarray:
        """Indices of the channels of layer ``name``'s output (or, with ``reads``, of its first
        input) that a keep-set keeps."""
        units = self.input_channels(name) if reads else self.channels(name)
        return np.flatnonzero((units < 0) | bits[np.maximum(units, 0)])

    # ------------------------------------------------------------------------------ cost

    def cost(self, keep=None) -> Cost:
        """Exact parameters and FLOPs per example of the subnetwork that keeps ``keep``.

        FLOPs count 2 per multiply-accumulate of Conv, Dense, depthwise and separable layers
        (biases, activations, normalisation and merges are not counted, as in the literature
        this is compared with); parameters count every weight that remains, BatchNormalization's
        moving statistics included (as ``model.count_params()`` does).

        Args:
            keep: As for :meth:`unit_bits`.

        Returns:
            A :class:`Cost`: ``params`` and ``flops`` (reads as ``{"params", "flops"}``).
        """
        params, flops = self.cost_model()(self.unit_bits(keep))
        return Cost(params=params, flops=flops)

    def cost_model(self) -> CostModel:
        """The cost as a fast function of the keep bits (see :class:`CostModel`)."""
        if self._cost is None:
            self._cost = CostModel(self)
        return self._cost

    # --------------------------------------------------------------------------- models

    def masked_model(self, *, rescale: Sequence[float] | np.ndarray | None = None):
        """A Keras model ``[x, unit values] -> probabilities``: this model with every consumer's
        input channels multiplied by their unit's value (0 drops a unit, 1 keeps it).

        Layers are copies (same config and weights) called in inference mode, so the model's
        own graph is untouched. Fixed channels are multiplied by 1.

        Args:
            rescale: Optional factor per unit applied on top of the values (e.g. 1 / keep).

        Returns:
            The ``keras.Model``; its second input has shape (n_units,).
        """
        from subnet.models import deserialization_scope

        with deserialization_scope(self.model):
            return self._masked_model(rescale)

    def _masked_model(self, rescale):
        image = keras.Input(shape=self.model.inputs[0].shape[1:], name="inputs",
                            dtype=self.model.inputs[0].dtype)
        values = keras.Input(shape=(self.n_units,), name="unit_values")
        scale = np.ones(self.n_units + 1, np.float32)
        if rescale is not None:
            scale[:-1] = np.asarray(rescale, np.float32)
        tensors = {self.input_name: image}
        masked: dict[str, object] = {}
        for call in self.calls:
            if isinstance(call.layer, keras.layers.InputLayer):
                continue
            feed = {}
            for source in call.inputs:
                if call.name in self._consumers and (self.units_of[source] >= 0).any():
                    if source not in masked:
                        index = np.where(self.units_of[source] >= 0, self.units_of[source],
                                         self.n_units)
                        masked[source] = _ChannelGather(index, scale)(tensors[source], values)
                    feed[source] = masked[source]
                else:
                    feed[source] = tensors[source]
            tensors[call.name] = _call_copy(call, feed)
        out = tensors[self.output_name]
        if not self.probabilities:
            out = keras.layers.Softmax()(out)
        return keras.Model([image, values], out)

    def extract(self, keep, *, scale: np.ndarray | None = None, name: str | None = None):
        """The physically smaller model that keeps only ``keep``'s units.

        Producers lose the output channels of dropped units, per-channel layers (normalisation,
        PReLU, depthwise kernels) their entries, consumers the rows that read them (a Flatten's
        positions included); dropout layers are left out, so the result is deterministic.

        Args:
            keep: As for :meth:`unit_bits`.
            scale: Optional factor per unit (n_units,) multiplying its kept channels where they
                are read, folded into the reading layers' kernels.
            name: The new model's name (default: the model's name + ``_subnetwork``).

        Returns:
            The new ``keras.Model`` (not yet verified; :func:`subnet.extraction.extract` checks
            it against :meth:`masked_model`).
        """
        from subnet.models import deserialization_scope

        bits = self.unit_bits(keep)
        factors = np.ones(self.n_units + 1, np.float32)
        if scale is not None:
            factors[:-1] = np.asarray(scale, np.float32)
        with deserialization_scope(self.model):
            return self._extract(bits, factors, name or f"{self.model.name}_subnetwork")

    def slice_weights(self, name: str, weights: list, bits: np.ndarray,
                      factors: np.ndarray) -> tuple[np.ndarray, list]:
        """Layer ``name``'s kept output channels under keep bits ``bits``, and its weights (as
        ``get_weights`` gives them) cut to them: producers keep the rows of kept input channels,
        each scaled by its unit's factor (``factors[unit]``; the last entry is a fixed
        channel's), and the columns of kept output channels; depthwise kernels,
        BatchNormalization and PReLU keep their kept channels' entries; other weights are
        returned as they are."""
        call = self._by_name[name]
        out = self.kept_channels(name, bits)
        rows = factor = None
        if call.rule.reads:
            rows = self.kept_channels(name, bits, reads=True)
            read = self.input_channels(name)[rows]
            factor = factors[np.where(read >= 0, read, self.n_units)]
        return out, call.rule.slice(call.layer, weights, rows, out, factor)

    def _extract(self, bits, factors, name):
        original = self.model.inputs[0]
        image = keras.Input(shape=original.shape[1:], dtype=original.dtype,
                            name=original.name if isinstance(original.name, str) else None)
        tensors = {self.input_name: image}
        pending = []
        for call in self.calls:
            layer = call.layer
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if call.rule.noise:
                tensors[call.name] = tensors[call.inputs[0]]
                continue
            out, weights = self.slice_weights(call.name, layer_weights(layer), bits, factors)
            copy = _copy_layer(layer, **call.rule.resized(layer, len(out)))
            feed = {source: tensors[source] for source in call.inputs}
            tensors[call.name] = _call_copy(call, feed, layer=copy, weights=False)
            pending.append((copy, weights))
        for copy, weights in pending:
            if weights:
                copy.set_weights(weights)
        return keras.Model(image, tensors[self.output_name], name=name)


class _ChannelGather(keras.layers.Layer):
    """``x * (values * scale)[:, index]`` broadcast over positions: each channel's unit value
    (index ``n_units`` stands for a fixed channel, multiplied by 1)."""

    def __init__(self, index, scale, **kwargs):
        super().__init__(**kwargs)
        self.index = np.asarray(index, np.int32)
        self.scale = np.asarray(scale, np.float32)

    def call(self, x, values):
        padded = keras.ops.concatenate([values, keras.ops.ones_like(values[:, :1])], axis=1)
        factors = keras.ops.take(padded * self.scale[None], self.index, axis=1)
        extra = len(x.shape) - 2
        shape = (-1,) + (1,) * extra + (len(self.index),)
        return x * keras.ops.reshape(factors, shape)

    def compute_output_shape(self, x_shape, values_shape):
        return x_shape


def _copy_layer(layer, **changes):
    config = layer.get_config()
    config.update(changes)
    return layer.__class__.from_config(config)


def _call_copy(call: Call, feed: Mapping[str, object], *, layer=None, weights: bool = True):
    """Calls a copy of ``call.layer`` (or ``layer``) on the tensors in ``feed`` with the call's
    own arguments, in inference mode."""
    copy = layer if layer is not None else _copy_layer(call.layer)
    tensors = iter([feed[name] for name in call.inputs])
    mapping = {id(t): next(tensors) for t in call.node.arguments.keras_tensors}
    args, kwargs = call.node.arguments.fill_in(mapping)
    if "training" in inspect.signature(copy.call).parameters:
        kwargs = {**kwargs, "training": False}
    result = copy(*args, **kwargs)
    values = layer_weights(call.layer) if weights else []
    if values:
        copy.set_weights(values)
    return result


def _ends_in_softmax(s: Structure) -> bool:
    """Whether the model's output is a softmax (of its last Dense layer or a Softmax layer)."""
    name = s.output_name
    while True:
        layer = s._by_name[name].layer
        if isinstance(layer, L.Softmax):
            return True
        activation = getattr(getattr(layer, "activation", None), "__name__", "")
        if activation in ("softmax",):
            return True
        if (isinstance(s._by_name[name].rule, Dropout) or isinstance(layer, L.Identity)) \
                and s._by_name[name].inputs:
            name = s._by_name[name].inputs[0]
            continue
        return False


def channel_groups(model) -> Structure:
    """The channel groups, sites and slice plan of a Keras classifier (see the module docs).

    Args:
        model: A flat functional or Sequential ``keras.Model`` with one input and one output,
            channels-last, ending in its classifier.

    Returns:
        A :class:`Structure`.

    Raises:
        InputError: If a layer cannot be masked (named, with its type and the reason), the
            model has no unit, or is not a flat single-input, single-output model.
    """
    calls, input_name, output_name = graph_calls(model)
    uf = _UnionFind()
    ids: dict[str, np.ndarray] = {}
    consumers: set[str] = set()
    across: list[str] = []  # layers that mix channels without weights (softmax, normalisation)
    for call in calls:
        layer, rule = call.layer, call.rule
        if not isinstance(layer, keras.layers.InputLayer):
            check_layout(layer)
        inputs = [ids[name] for name in call.inputs]
        width = int(layer.output.shape[-1]) if len(layer.output.shape) > 1 else 1
        flow = _Flow(uf, call.name, consumers, across)
        if not rule.known and all(flow.all_fixed(value) for value in inputs):
            # Before the first unit (the prefix) any layer may stand: no channel it touches
            # can be dropped, so its output's channels are fixed too.
            ids[call.name] = uf.new(width, fixed=True)
        else:
            ids[call.name] = rule.flow(layer, inputs, width, flow)
    for i in ids[output_name]:
        uf.fix(int(i))
    roots = {name: np.array([uf.find(int(i)) for i in value], np.int64)
             for name, value in ids.items()}
    fixed = {int(r): uf.fixed[int(r)] for value in roots.values() for r in value}
    for name in across:
        if not all(fixed[int(r)] for r in roots[name]):
            layer = next(c.layer for c in calls if c.name == name)
            what = "applies a softmax across channels" if softmax_activation(layer) else \
                "normalises across channels"
            raise layer_error(layer, f"{what}, so zeroing one channel changes the others and "
                                      "masking it is not deleting it; subnet supports it only "
                                      "where no channel can be dropped (at the classifier's "
                                      "output or on the model's input).")
    built = Structure(model, calls, input_name, output_name, roots, fixed, consumers)
    if not built.sites:
        producers = [c.name for c in calls if c.rule.produces]
        raise InputError(
            f"Model {clean(model.name)!r} has no maskable site: subnet drops output channels of "
            "hidden Conv, Dense and separable layers, and this model has "
            f"{len(producers)} such layer(s), whose channels all reach its output or input.")
    return built


class _Flow:
    """What a rule may do while :func:`channel_groups` follows channels through layer
    ``name`` (see :class:`subnet.structure.rules.Flow`)."""

    def __init__(self, uf: _UnionFind, name: str, consumers: set, across: list):
        self._uf, self._name, self._consumers, self._across = uf, name, consumers, across

    def new(self, width: int, fixed: bool = False) -> np.ndarray:
        return self._uf.new(width, fixed=fixed)

    def all_fixed(self, ids: np.ndarray) -> bool:
        return all(self._uf.fixed[self._uf.find(int(i))] for i in ids)

    def consumer(self) -> None:
        self._consumers.add(self._name)

    def across(self) -> None:
        self._across.append(self._name)

    def merge(self, layer, inputs: list[np.ndarray]) -> np.ndarray:
        uf = self._uf
        widths = {len(v) for v in inputs}
        wide = max(widths)
        for value in inputs:
            if len(value) == 1 and wide > 1:  # broadcast over channels: it can never be dropped
                uf.fix(int(value[0]))
            elif len(value) != wide:
                raise layer_error(layer, f"merges inputs of {sorted(widths)} channels; subnet "
                                          "needs equal channel counts (or one channel, "
                                          "broadcast).")
        full = [v for v in inputs if len(v) == wide]
        for value in full[1:]:
            for a, b in zip(full[0], value, strict=True):
                uf.union(int(a), int(b))
        return full[0]

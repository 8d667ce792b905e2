"""How a Keras classifier decomposes into maskable sites: the site table.

A *site* is a hidden Conv or Dense layer (every one but the classifier); a *unit* is one of its
output channels. Dropping a unit zeroes that channel after the layer's own per-channel
operations (bias, BatchNormalization, activation, dropout, pooling, padding), at every position,
for every example. Where exactly that happens is the site's *mask point*: the output of the last
per-channel layer before the next layer that mixes channels (a Conv or Dense) or flattens them.
Zeroing there is the same function as deleting the unit, which is what makes masking and
physical extraction agree.

Every model is first analysed by :mod:`subnet.structure` (channel groups: what a unit is in any
graph, residual, concatenating and depthwise models included). Where the layers from the first
site on form a chain (one input, one output per layer), :func:`analyse_chain` also splits the
model into the segments the fast backend runs; anything before the first site (the *prefix*) may
be any Keras graph: it is the same for every mask and is run as a sub-model. For other graphs the
:class:`Chain` has no segments, and the reference backend evaluates it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from subnet._tf import keras
from subnet.errors import InputError, InputTypeError
from subnet.models import dropout_layers

__all__ = ["MIXING_LAYERS", "Chain", "Site", "SiteScaled", "SiteTable", "analyse_chain",
           "call_inference", "chain_layers", "check_site_scale", "layer_flops", "layers_before",
           "sites"]

#: What a site can be (see :attr:`Site.kind`).
SITE_KINDS = ("conv1d", "conv2d", "conv3d", "dense", "separable", "coupled")
#: Layer classes that mix channels in a chain the fast backend runs: the sites, the classifier.
MIXING_LAYERS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Dense)
# Layers that act on each channel separately and map an all-zero channel to zero (or are the
# identity at inference): allowed between a site and its mask point.
_PER_CHANNEL = (
    keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout,
    keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU,
    keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU,
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
    keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
    keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
    keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.Identity,
    keras.layers.ActivityRegularization,
)
# Layers that only re-arrange values (between a mask point and the next mixing layer).
_LAYOUT = (keras.layers.Flatten,)
_DROPOUT = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D)


@dataclasses.dataclass(frozen=True)
class Site:
    """One maskable hidden layer.

    Attributes:
        name: The Conv/Dense layer's name.
        kind: ``"conv1d"``, ``"conv2d"``, ``"conv3d"``, ``"dense"``, ``"separable"`` (one
            SeparableConv layer) or ``"coupled"`` (channels several layers produce together, as
            a residual stream's).
        units: Number of output channels (units), > 0.
        keep: Keep probability q in (0, 1] used when masks are drawn (1 - dropout rate).
        mask_layer: Name of the layer whose output is masked (the mask point).
        dropout_rate: Rate of the model's own dropout after this site (0.0 if none).
        always_on: True if that dropout is applied at inference too (baked on).
    """

    name: str
    kind: str
    units: int
    keep: float
    mask_layer: str
    dropout_rate: float = 0.0
    always_on: bool = False

    def __post_init__(self):
        if self.kind not in SITE_KINDS:
            raise InputError(f"Invalid site kind {self.kind!r} for site {self.name!r}: expected "
                             f"one of {list(SITE_KINDS)}.")
        if isinstance(self.units, bool) or not isinstance(self.units, (int, np.integer)) \
                or self.units < 1:
            raise InputError(f"Site {self.name!r} must have at least one unit. "
                             f"Received: units={self.units!r}")
        if not 0.0 < float(self.keep) <= 1.0:
            raise InputError(f"Keep probability of site {self.name!r} must be in (0, 1]. "
                             f"Received: keep={self.keep!r}")

    def to_dict(self) -> dict:
        """The site as a JSON-ready dict."""
        return dataclasses.asdict(self)


class SiteTable(Sequence):
    """The maskable sites of a model, in model order; units are numbered site by site.

    Args:
        sites: The :class:`Site` objects, in model order; names must be unique.

    Raises:
        ValueError: If there are no sites or names repeat.
    """

    def __init__(self, sites: Iterable[Site]):
        self._sites = tuple(sites)
        if not self._sites:
            raise InputError("A site table needs at least one site.")
        names = [s.name for s in self._sites]
        if len(set(names)) != len(names):
            raise InputError(f"Site names must be unique. Received: {names}")
        self._offsets = np.concatenate([[0], np.cumsum([s.units for s in self._sites])])

    def __getitem__(self, index):
        if isinstance(index, str):
            for site in self._sites:
                if site.name == index:
                    return site
            raise KeyError(f"No site named {index!r}; the sites are {self.names}.")
        return self._sites[index]

    def __len__(self) -> int:
        return len(self._sites)

    def __eq__(self, other) -> bool:
        return isinstance(other, SiteTable) and self._sites == other._sites

    def __hash__(self) -> int:
        return hash(self._sites)

    def __repr__(self) -> str:
        body = ", ".join(f"{s.name}: {s.units} units, keep {s.keep:g}" for s in self._sites)
        return f"SiteTable({body})"

    @property
    def names(self) -> list[str]:
        """Site names in order."""
        return [s.name for s in self._sites]

    @property
    def units(self) -> np.ndarray:
        """Units per site, int64 array of shape (n_sites,)."""
        return np.array([s.units for s in self._sites], dtype=np.int64)

    @property
    def n_units(self) -> int:
        """Total number of units over all sites."""
        return int(self._offsets[-1])

    @property
    def offsets(self) -> np.ndarray:
        """Start of each site's units in the global unit order, plus the total at the end."""
        return self._offsets.copy()

    def unit_keep(self) -> np.ndarray:
        """Each unit's keep probability, float64 array of shape (n_units,)."""
        return np.repeat([s.keep for s in self._sites], self.units).astype(np.float64)

    def unit_site(self) -> np.ndarray:
        """Index of each unit's site, int64 array of shape (n_units,)."""
        return np.repeat(np.arange(len(self._sites)), self.units)

    def split(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Splits an array over all units (last axis) into one array per site name."""
        values = np.asarray(values)
        if values.shape[-1] != self.n_units:
            raise InputError(f"Expected a last axis of {self.n_units} units (all sites). "
                             f"Received shape {values.shape}.")
        return {s.name: values[..., a:b]
                for s, a, b in zip(self._sites, self._offsets[:-1], self._offsets[1:],
                                   strict=True)}

    def to_list(self) -> list[dict]:
        """The table as a list of JSON-ready dicts."""
        return [s.to_dict() for s in self._sites]

    @classmethod
    def from_list(cls, items: Iterable[Mapping]) -> SiteTable:
        """Rebuilds a table written by :meth:`to_list`."""
        fields = {f.name for f in dataclasses.fields(Site)}
        return cls(Site(**{k: v for k, v in dict(item).items() if k in fields}) for item in items)


@dataclasses.dataclass
class Chain:
    """A classifier split at its sites, for the masked-evaluation backends.

    Attributes:
        model: The Keras model.
        table: Its :class:`SiteTable`.
        prefix_output: The first site's mask-point layer; everything up to it is the prefix
            (None when the model is not a chain).
        segments: For each site after the first, then the classifier: the layers from the
            previous mask point (exclusive) to this site's mask point (inclusive), or to the
            output for the classifier. Each starts with layout layers (Flatten), then the
            mixing layer, then per-channel layers. None when the model is not a chain.
        probabilities: True if the model outputs probabilities (softmax), False for logits.
        structure: The model's :class:`~subnet.structure.Structure` (channel groups), which
            every stage reads for masking, cost and extraction.
        not_chain: Why the model is not a chain (None if it is).
    """

    model: keras.Model
    table: SiteTable
    prefix_output: keras.layers.Layer | None
    segments: list[list[keras.layers.Layer]] | None
    probabilities: bool
    structure: object = None
    not_chain: str | None = None

    @property
    def is_chain(self) -> bool:
        """Whether the model was split into segments (the fast backend can run it)."""
        return self.segments is not None

    def prefix_model(self) -> keras.Model:
        """A sub-model from the model's input to the first site's mask point."""
        if self.prefix_output is None:
            raise InputError(f"Model {self.model.name!r} is not a chain of layers ({self.not_chain}"
                             "); it has no prefix model.")
        return keras.Model(self.model.inputs, self.prefix_output.output)


def call_inference(layer, tensor):
    """Calls ``layer`` on ``tensor`` in inference mode: ``training=False`` where the layer takes
    it (dropout off, BatchNormalization on its moving statistics)."""
    if "training" in inspect.signature(layer.call).parameters:
        return layer(tensor, training=False)
    return layer(tensor)


def layer_flops(layer) -> int:
    """FLOPs per example of a whole Conv/Dense layer, 2 per multiply-accumulate (0 for others).

    Args:
        layer: A built Keras layer.

    Returns:
        The FLOP count, an int.
    """
    if isinstance(layer, keras.layers.Dense):
        return 2 * int(np.prod(layer.kernel.shape)) * int(np.prod(layer.output.shape[1:-1]))
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        return 2 * int(np.prod(layer.output.shape[1:-1])) * int(np.prod(layer.kernel.shape))
    return 0


def check_site_scale(scales, n_sites: int) -> np.ndarray:
    """One finite positive float32 factor per site (what a backend multiplies a site's kept
    units by), or an InputError naming what was received."""
    array = np.asarray(scales, dtype=np.float64).reshape(-1)
    if array.shape != (n_sites,) or not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise InputError(f"Invalid value for argument `scales`: expected {n_sites} finite "
                         f"positive factors, one per site. Received: {np.asarray(scales)!r}")
    return array.astype(np.float32)


class SiteScaled:
    """What every backend shares: a factor per site that its kept units are multiplied by,
    set at construction from ``rescale`` and replaceable (:meth:`set_site_scale`). A backend
    has ``chain`` and implements ``_apply_site_scale(scales)``."""

    def set_site_scale(self, scales) -> None:
        """Sets the factor each site's kept units are multiplied by (``1 / keep`` under
        inverted-dropout rescaling, 1 without), replacing what ``rescale`` chose.

        Args:
            scales: One positive float per site, in the site table's order.

        Raises:
            InputError: If there is not one finite positive factor per site.
        """
        self._apply_site_scale(check_site_scale(scales, len(self.chain.table)))


def sites(model, rate: float | Mapping[str, float] | None = None) -> SiteTable:
    """The maskable sites of a classifier, in model order.

    Every hidden Conv1D/Conv2D/Dense layer is a site; the last one (the classifier) is not. A
    site's keep probability is 1 - the rate of the Dropout that follows it in the model
    (including dropout baked on at test time), unless ``rate`` says otherwise.

    Args:
        model: A ``keras.Model`` classifier.
        rate: Dropout rate(s) to mask with: a float in [0, 1) for every site, or a mapping
            {site name: rate}; sites it does not name keep the model's own rate. Needed for sites
            that are not followed by a Dropout layer.

    Returns:
        A :class:`SiteTable`.

    Raises:
        ValueError: If the model has no maskable site, a layer between sites cannot be masked
            correctly, a site has no dropout rate, or ``rate`` is invalid.
    """
    return analyse_chain(model, rate).table


def analyse_chain(model, rate: float | Mapping[str, float] | None = None) -> Chain:
    """Splits a classifier at its sites (see :func:`sites`); the backends' view of a model.

    Any graph :mod:`subnet.structure` accepts is analysed; a chain is also split into the
    segments the fast backend runs.

    Args:
        model: A ``keras.Model`` classifier.
        rate: As for :func:`sites`.

    Returns:
        A :class:`Chain` (``segments`` None if the model is not a chain).

    Raises:
        ValueError: As for :func:`sites`.
    """
    from subnet.structure import channel_groups

    if not isinstance(model, keras.Model):
        raise InputTypeError(f"Expected a keras.Model for argument `model`. "
                             f"Received: {type(model)!r}")
    graph = channel_groups(model)
    depthwise = [c.name for c in graph.calls if isinstance(
        c.layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
                  keras.layers.SeparableConv1D, keras.layers.SeparableConv2D))]
    if depthwise:
        reason = f"it has depthwise or separable convolutions ({depthwise[0]!r})"
    elif graph.is_chain:
        try:
            chain = _analyse_chain(model, rate)
        except _NotAChain as err:
            reason = str(err)
        else:
            if chain.table.names == [s.name for s in graph.sites] and \
                    list(chain.table.units) == [s.units for s in graph.sites]:
                chain.structure = graph
                return chain
            reason = "its chain and its channel groups disagree on the sites"
    else:
        reason = "it has branches, merges or coupled channels"
    return _graph_chain(model, graph, rate, reason)


def _graph_chain(model, graph, rate, reason: str) -> Chain:
    """The :class:`Chain` of a model that is not a chain: its table read from the structure."""
    always_on = {info.name: info.always_on for info in dropout_layers(model)}
    rates = _normalise_rate(rate, [s.name for s in graph.sites])
    site_list = []
    for site in graph.sites:
        chosen = rates.get(site.name, site.dropout_rate if site.dropout_layers else None)
        if chosen is None:
            raise InputError(
                f"Site {site.name!r} has no Dropout after it, so subnet does not know at what "
                "rate to drop its units. Pass rate=R (command line: --rate R), a float in [0, 1), "
                "or a mapping {site name: rate}.")
        site_list.append(Site(name=site.name, kind=site.kind, units=site.units,
                              keep=1.0 - float(chosen), mask_layer=site.mask_layer,
                              dropout_rate=site.dropout_rate,
                              always_on=any(always_on.get(d, False)
                                            for d in site.dropout_layers)))
    return Chain(model=model, table=SiteTable(site_list), prefix_output=None, segments=None,
                 probabilities=graph.probabilities, structure=graph, not_chain=reason)


class _NotAChain(InputError):
    """The strict chain analysis does not apply (the structure's analysis does)."""


def _analyse_chain(model, rate) -> Chain:
    """The strict chain analysis (the fast backend's view); see :func:`analyse_chain`."""
    # channel_groups has checked the model: one input, one output, flat, known layers.
    order = chain_layers(model)
    mixing = [i for i, layer in enumerate(order) if isinstance(layer, MIXING_LAYERS)]
    if len(mixing) < 2:
        raise _NotAChain(
            f"Model {model.name!r} has no maskable site: subnet masks the output channels of "
            "hidden Conv1D, Conv2D or Dense layers, and this model has "
            f"{len(mixing)} such layer(s) in all (the last one is the classifier).")
    _check_classifier_tail(order, mixing[-1])

    always_on = {info.name: info.always_on for info in dropout_layers(model)}
    rates = _normalise_rate(rate, [order[i].name for i in mixing[:-1]])
    site_list, mask_points = [], []
    for k, index in enumerate(mixing[:-1]):
        layer = order[index]
        stop = mixing[k + 1]
        mask_at = index
        dropout = []
        for j in range(index + 1, stop):
            between = order[j]
            if isinstance(between, _PER_CHANNEL) and mask_at == j - 1:
                mask_at = j
            elif not isinstance(between, _LAYOUT + _DROPOUT):
                raise _NotAChain(
                    f"Layer {between.name!r} ({type(between).__name__}) between sites "
                    f"{layer.name!r} and {order[stop].name!r} cannot be masked correctly: subnet "
                    "supports per-channel layers (BatchNormalization, activations, dropout, "
                    "pooling, padding) and Flatten between Conv/Dense layers.")
            if isinstance(between, _DROPOUT):
                dropout.append(between)
            _check_per_channel_layer(between)
        model_rate = 1.0 - float(np.prod([1.0 - d.rate for d in dropout])) if dropout else 0.0
        chosen = rates.get(layer.name, model_rate if dropout else None)
        if chosen is None:
            raise InputError(
                f"Site {layer.name!r} has no Dropout after it, so subnet does not know at what "
                "rate to drop its units. Pass rate=R (command line: --rate R), a float in [0, 1), "
                "or a mapping {site name: rate}.")
        site_list.append(Site(
            name=layer.name,
            kind=_kind(layer),
            units=_units(layer),
            keep=1.0 - float(chosen),
            mask_layer=order[mask_at].name,
            dropout_rate=model_rate,
            always_on=any(always_on.get(d.name, False) for d in dropout),
        ))
        mask_points.append(mask_at)

    segments = []
    bounds = mask_points + [len(order) - 1]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        segments.append(order[a + 1:b + 1])
    return Chain(model=model, table=SiteTable(site_list), prefix_output=order[mask_points[0]],
                 segments=segments, probabilities=_ends_in_softmax(order[mixing[-1]:]))


def chain_layers(model) -> list:
    """The layers from the first Conv/Dense layer to the output, checked to form a chain.

    Args:
        model: A functional or Sequential ``keras.Model``.

    Returns:
        The layers in order (empty if the model has no Conv/Dense layer).

    Raises:
        InputError: If a layer after the first Conv/Dense one has several inputs, or a layer is
            used more than once.
    """
    if isinstance(model, keras.Sequential):
        chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    else:
        graph = _inbound_graph(model)
        # Layers, and Keras operations on tensors (x / 255.0): allowed before the first site
        # (the prefix runs as a sub-model), not between sites (checked below).
        operations = {op.name: op for op in model.operations}
        current = _output_layer_name(model)
        chain = [operations[current]]
        while True:
            parents = graph.get(current, [])
            if len(parents) > 1:
                if any(isinstance(layer, MIXING_LAYERS) for layer in chain):
                    raise _NotAChain(
                        f"Layer {current!r} ({type(chain[-1]).__name__}) has {len(parents)} "
                        "inputs; subnet masks models whose layers from the first Conv/Dense on "
                        "form a chain (no branches or residual connections between sites).")
                break
            if not parents:
                break
            parent = operations[parents[0]]
            if isinstance(parent, keras.layers.InputLayer):
                break
            chain.append(parent)
            current = parent.name
        chain.reverse()
    first = next((i for i, layer in enumerate(chain) if isinstance(layer, MIXING_LAYERS)), None)
    if first is None:
        return []
    op = next((op for op in chain[first:] if not isinstance(op, keras.layers.Layer)), None)
    if op is not None:
        raise _NotAChain(f"{op.name!r} ({type(op).__name__}) is a Keras operation, not a layer")
    return chain[first:]


def layers_before(model, first) -> list:
    """The layers (and Keras operations on tensors, such as ``x / 255.0``) between the model's
    input and ``first``, in order (the *prefix* of a chain).

    Args:
        model: A functional or Sequential ``keras.Model``.
        first: One of its layers, reached from the input by a chain (usually
            ``chain_layers(model)[0]``).

    Returns:
        The layers from the input (exclusive) to ``first`` (exclusive).

    Raises:
        InputError: If a layer before ``first`` has more than one input.
    """
    if isinstance(model, keras.Sequential):
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        return layers[:layers.index(first)]
    graph = _inbound_graph(model)
    operations = {op.name: op for op in model.operations}
    layers, current = [], first.name
    while True:
        parents = graph.get(current, [])
        if len(parents) != 1:
            raise _NotAChain(f"subnet supports models whose layers before the first site form "
                             f"a chain; layer {current!r} has {len(parents)} inputs.")
        parent = operations[parents[0]]
        if isinstance(parent, keras.layers.InputLayer):
            return layers[::-1]
        layers.append(parent)
        current = parent.name


def _output_layer_name(model) -> str:
    outputs = model.get_config().get("output_layers")
    while isinstance(outputs, (list, tuple)) and outputs and isinstance(outputs[0], (list, tuple)):
        outputs = outputs[0]
    if not isinstance(outputs, (list, tuple)) or not outputs or not isinstance(outputs[0], str):
        raise _NotAChain(f"Could not read the output layer of model {model.name!r}.")
    return outputs[0]


def _history_names(value) -> list[str]:
    """Names of the layers whose tensors appear in a serialized call argument."""
    if isinstance(value, dict):
        history = value.get("config", {}).get("keras_history") \
            if value.get("class_name") == "__keras_tensor__" else None
        if history:
            return [history[0]]
        return [name for item in value.values() for name in _history_names(item)]
    if isinstance(value, (list, tuple)):
        if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
            return [value[0]]  # Keras 2 style [layer name, node index, tensor index, kwargs]
        return [name for item in value for name in _history_names(item)]
    return []


def _inbound_graph(model) -> dict[str, list[str]]:
    """Layer name → names of the layers feeding it, read from the model's own config."""
    graph: dict[str, list[str]] = {}
    for layer in model.get_config().get("layers", []):
        name = layer.get("name") or layer.get("config", {}).get("name")
        nodes = layer.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise _NotAChain(f"Layer {name!r} is used {len(nodes)} times (shared weights); "
                             "subnet needs each layer used once.")
        parents: list[str] = []
        for node in nodes:
            args = node.get("args", []) if isinstance(node, dict) else node
            parents += _history_names(args)
        graph[name] = parents
    return graph


def _check_classifier_tail(order: list, classifier_index: int) -> None:
    classifier = order[classifier_index]
    for layer in order[classifier_index + 1:]:
        if not isinstance(layer, (keras.layers.Activation, keras.layers.Softmax) + _DROPOUT):
            raise _NotAChain(
                f"Layer {layer.name!r} ({type(layer).__name__}) after the classifier "
                f"{classifier.name!r} is not supported; subnet expects the classifier to end in "
                "an optional softmax.")
    if isinstance(classifier, keras.layers.Conv2D | keras.layers.Conv1D):
        raise _NotAChain(
            f"The last Conv/Dense layer {classifier.name!r} is a convolution; subnet expects a "
            "Dense classifier (add Flatten or global pooling and a Dense layer).")


def _ends_in_softmax(tail: list) -> bool:
    """Whether the classifier and the layers after it (activations, Softmax, dropout) end in a
    softmax, wherever in the tail it is: a Dropout after a softmax classifier still outputs
    probabilities at inference."""
    result = False
    for layer in tail:
        if isinstance(layer, keras.layers.Softmax):
            result = True
        elif not isinstance(layer, _DROPOUT):
            result = getattr(getattr(layer, "activation", None), "__name__", "") == "softmax"
    return result


def _check_per_channel_layer(layer) -> None:
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Activation) and \
            getattr(activation, "__name__", "") in ("softmax", "log_softmax"):
        raise _NotAChain(f"Activation layer {layer.name!r} ({activation.__name__}) mixes "
                         "channels; subnet supports it only at the classifier's output.")
    if isinstance(layer, keras.layers.BatchNormalization):
        axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
        if axis not in (-1, [-1]) and axis != len(layer.input.shape) - 1 and \
                axis != [len(layer.input.shape) - 1]:
            raise _NotAChain(f"BatchNormalization layer {layer.name!r} normalises axis "
                             f"{layer.axis}; subnet supports channels-last (axis=-1).")
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format != "channels_last":
        raise _NotAChain(f"Layer {layer.name!r} uses data_format={data_format!r}; subnet supports "
                         "channels_last models.")


def _kind(layer) -> str:
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise _NotAChain(f"Layer {layer.name!r} uses data_format={layer.data_format!r}; subnet "
                         "supports channels_last models.")
    if getattr(layer, "groups", 1) != 1:
        raise _NotAChain(f"Convolution {layer.name!r} has groups={layer.groups}; subnet supports "
                         "ungrouped convolutions.")
    return "conv2d" if isinstance(layer, keras.layers.Conv2D) else "conv1d"


def _units(layer) -> int:
    return int(layer.units if isinstance(layer, keras.layers.Dense) else layer.filters)


def _normalise_rate(rate, names: list[str]) -> dict[str, float]:
    def check(value, label):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or \
                not 0.0 <= float(value) < 1.0:
            raise InputError(f"Invalid value received for argument `rate`{label}. Expected a "
                             f"float in [0, 1). Received: {value!r}")
        return float(value)

    if rate is None:
        return {}
    if isinstance(rate, Mapping):
        unknown = sorted(set(rate) - set(names))
        if unknown:
            raise InputError(f"Invalid keys in argument `rate`: {unknown} are not sites. The "
                             f"sites are {names}.")
        return {name: check(value, f"[{name!r}]") for name, value in rate.items()}
    value = check(rate, "")
    return dict.fromkeys(names, value)

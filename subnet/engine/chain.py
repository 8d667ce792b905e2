"""How a Keras classifier decomposes into maskable sites: the site table.

A *site* is a hidden Conv or Dense layer (every one but the classifier); a *unit* is one of its
output channels. Dropping a unit zeroes that channel after the layer's own per-channel
operations (bias, BatchNormalization, activation, dropout, pooling, padding), at every position,
for every example. Where exactly that happens is the site's *mask point*: the output of the last
per-channel layer before the next layer that mixes channels (a Conv or Dense) or flattens them.
Zeroing there is the same function as deleting the unit, which is what makes masking and
physical extraction agree.

Every model is analysed by :mod:`subnet.structure` (channel groups: what a unit is in any
graph, residual, concatenating and depthwise models included), the one reader of a model's
graph. Where the layers from the first site on form a chain (one input, one output per layer),
:func:`analyse_chain` also splits the structure's layer calls into the segments the fast
backend runs; anything before the first site (the *prefix*) may be any Keras graph: it is the
same for every mask and is run as a sub-model. For other graphs the :class:`Chain` has no
segments, and the graph backend (or the reference one) evaluates it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from subnet.errors import InputError, InputTypeError
from subnet.models import dropout_layers
from subnet.runtime import keras
from subnet.structure.rules import DROPOUT, FAST_LAYOUT, FAST_MIXING, FAST_PER_CHANNEL
from subnet.validation import check_fraction

if TYPE_CHECKING:
    from subnet.structure import Structure

__all__ = ["MIXING_LAYERS", "Chain", "Site", "SiteScaled", "SiteTable", "analyse_chain",
           "check_site_scale", "layer_flops", "sites"]

#: What a site can be (see :attr:`Site.kind`).
SITE_KINDS = ("conv1d", "conv2d", "conv3d", "dense", "separable", "coupled")
#: Layer classes that mix channels in a chain the fast backend runs: the sites, the classifier.
MIXING_LAYERS = FAST_MIXING


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
    structure: Structure
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


def check_site_scale(scales, n_sites: int, per: str = "site") -> np.ndarray:
    """One finite positive float32 factor per site (what a backend multiplies a site's kept
    units by), or per unit (``per="unit"``, ``n_sites`` then counting units), or an InputError
    naming what was received."""
    array = np.asarray(scales, dtype=np.float64).reshape(-1)
    if array.shape != (n_sites,) or not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise InputError(f"Invalid value for argument `scales`: expected {n_sites} finite "
                         f"positive factors, one per {per}. Received: {np.asarray(scales)!r}")
    return array.astype(np.float32)


class SiteScaled:
    """What every backend shares: a factor per unit that a kept unit's channels are multiplied
    by where they are read, set at construction from ``rescale`` (1 / keep of the unit's site,
    or 1) and replaceable per site (:meth:`set_site_scale`) or per unit
    (:meth:`set_unit_scale`). A backend has ``chain`` and implements
    ``_apply_unit_scale(scales)``."""

    chain: Chain

    def _apply_unit_scale(self, scales: np.ndarray) -> None:
        raise NotImplementedError

    def set_site_scale(self, scales) -> None:
        """Sets the factor each site's kept units are multiplied by (``1 / keep`` under
        inverted-dropout rescaling, 1 without), replacing what ``rescale`` chose.

        Args:
            scales: One positive float per site, in the site table's order.

        Raises:
            InputError: If there is not one finite positive factor per site.
        """
        table = self.chain.table
        self._apply_unit_scale(np.repeat(check_site_scale(scales, len(table)), table.units))

    def set_unit_scale(self, scales) -> None:
        """Sets the factor each unit is multiplied by when it is kept (e.g. 1 / its own keep
        probability), replacing what ``rescale`` or :meth:`set_site_scale` chose.

        Args:
            scales: One positive float per unit, in global unit order.

        Raises:
            InputError: If there is not one finite positive factor per unit.
        """
        self._apply_unit_scale(check_site_scale(scales, self.chain.table.n_units, "unit"))


def sites(model, rate: float | Mapping[str, float] | None = None) -> SiteTable:
    """The maskable sites of a classifier, in model order.

    A site is the set of units produced together (:func:`subnet.channel_groups`): in a chain,
    each hidden Conv1D/Conv2D/Dense layer (the classifier is not one); in a residual network,
    a residual stream's channels across every block that writes them; separable and 3-D
    convolutions alike. A site's keep probability is 1 - the rate of the Dropout that follows
    it in the model (including dropout baked on at test time), unless ``rate`` says otherwise
    (keep probabilities chosen for a record: :func:`subnet.calibrate_keep`).

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
            return _chain_of(model, graph, rate)
        except _NotAChain as err:
            reason = str(err)
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


def _chain_of(model, graph, rate) -> Chain:
    """The fast backend's view of a chain, read from its structure (the one reader of the
    model's graph): the layers from the first site's mask point on, split after each mask
    point into segments of layout layers, one Conv/Dense layer and per-channel layers."""
    calls = graph.calls
    names = [call.name for call in calls]
    points = [names.index(site.mask_layer) for site in graph.sites]
    by_name = {call.name: call.layer for call in calls}
    mixing = [i for i, call in enumerate(calls[points[0]:], start=points[0])
              if isinstance(call.layer, MIXING_LAYERS)]
    for site in graph.sites:
        layer = by_name[site.name]
        if not isinstance(layer, MIXING_LAYERS):
            raise _NotAChain(f"site {site.name!r} is a {type(layer).__name__}, not a Conv1D, "
                             "Conv2D or Dense layer")
        _kind(layer)  # channels-last, ungrouped
    if not mixing:
        raise _NotAChain("no Conv/Dense layer follows the last site")
    for call in calls[names.index(graph.sites[0].name) + 1:]:
        if not isinstance(call.layer, keras.layers.Layer):
            raise _NotAChain(f"{call.name!r} ({type(call.layer).__name__}) is a Keras "
                             "operation, not a layer")
    order = [call.layer for call in calls]
    _check_classifier_tail(order, mixing[-1])
    sites_at = [names.index(site.name) for site in graph.sites]
    for k, (index, point) in enumerate(zip(sites_at, points, strict=True)):
        stop = sites_at[k + 1] if k + 1 < len(sites_at) else mixing[-1]
        for j in range(index + 1, stop):
            between = order[j]
            if j <= point and not isinstance(between, FAST_PER_CHANNEL):
                raise _NotAChain(f"layer {between.name!r} ({type(between).__name__}) sits "
                                 f"between site {order[index].name!r} and its mask point")
            if j > point and not isinstance(between, FAST_LAYOUT + DROPOUT):
                raise _NotAChain(
                    f"Layer {between.name!r} ({type(between).__name__}) between sites "
                    f"{order[index].name!r} and {order[stop].name!r} cannot be masked correctly: "
                    "subnet supports per-channel layers (BatchNormalization, activations, "
                    "dropout, pooling, padding) and Flatten between Conv/Dense layers.")
            _check_per_channel_layer(between)
    bounds = points + [len(order) - 1]
    segments = [order[a + 1:b + 1] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    table = _graph_chain(model, graph, rate, "").table
    return Chain(model=model, table=table, prefix_output=order[points[0]], segments=segments,
                 probabilities=graph.probabilities, structure=graph)


def _check_classifier_tail(order: list, classifier_index: int) -> None:
    classifier = order[classifier_index]
    for layer in order[classifier_index + 1:]:
        if not isinstance(layer, (keras.layers.Activation, keras.layers.Softmax) + DROPOUT):
            raise _NotAChain(
                f"Layer {layer.name!r} ({type(layer).__name__}) after the classifier "
                f"{classifier.name!r} is not supported; subnet expects the classifier to end in "
                "an optional softmax.")
    if isinstance(classifier, keras.layers.Conv2D | keras.layers.Conv1D):
        raise _NotAChain(
            f"The last Conv/Dense layer {classifier.name!r} is a convolution; subnet expects a "
            "Dense classifier (add Flatten or global pooling and a Dense layer).")


def _check_per_channel_layer(layer) -> None:
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", "")
    if isinstance(layer, keras.layers.Activation) and name in ("softmax", "log_softmax"):
        raise _NotAChain(f"Activation layer {layer.name!r} ({name}) mixes "
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


def _normalise_rate(rate, names: list[str]) -> dict[str, float]:
    def check(value, label):
        return check_fraction(f"rate{label}", value, high_open=True)

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

"""From importance to a physically smaller network: budgets, keep-sets, extraction, fine-tuning.

:func:`keep_sets` turns per-unit importance and a budget (units, parameters or FLOPs) into the
units each site keeps, with exact accounting of the parameters and FLOPs that result.
:func:`extract` builds that subnetwork as a new, smaller Keras model (fewer filters and units,
the next layers' kernels sliced on their input side) and checks, on every extraction, that it
computes exactly what the full model computes with the other units masked.
:func:`finetune` trains it further; :func:`measure` reports its size and speed.
"""

from __future__ import annotations

import dataclasses
import gzip
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from subnet._tf import keras
from subnet.engine.chain import Chain, SiteTable, analyse_chain, layer_flops
from subnet.engine.reference import ReferenceBackend
from subnet.errors import InputError, InputTypeError
from subnet.models import check_examples, deserialization_scope

__all__ = ["ALLOCATIONS", "RECALIBRATION_EXAMPLES", "Budget", "ExtractionMismatch", "KeepSet",
           "accuracy", "as_keep_set", "copy_model", "extract", "finetune", "keep_sets", "measure",
           "model_cost", "recalibrate_batchnorm"]

#: How :func:`keep_sets` spreads a budget over sites (see its ``allocation``).
ALLOCATIONS = ("global", "cost", "joint", "uniform")

# --------------------------------------------------------------------------------- accounting

class _Cost:
    """Exact parameter and FLOP counts of a model's subnetworks, from its channel groups
    (:class:`subnet.structure.CostModel`): of keep bits, or of widths taken in a given order."""

    def __init__(self, chain: Chain):
        self.table = chain.table
        self.model = chain.structure.cost_model()

    def bits(self, bits: Mapping[str, np.ndarray]) -> tuple[int, int]:
        """(parameters, FLOPs per example) of the keep-set ``bits`` {site: bool array}."""
        return self.model(np.concatenate([bits[name] for name in self.table.names]))

    def widths(self, counts, orders: Mapping[str, np.ndarray]) -> tuple[int, int]:
        """The same for ``counts[k]`` units kept at site k: its first units in ``orders``."""
        return self.model(self.first(counts, orders))

    def first(self, counts, orders: Mapping[str, np.ndarray]) -> np.ndarray:
        """Keep bits (all sites) of the first ``counts[k]`` units of site k in ``orders``."""
        bits = np.zeros(self.table.n_units, bool)
        for k, (name, start) in enumerate(zip(self.table.names, self.table.offsets[:-1],
                                              strict=True)):
            bits[start + orders[name][:int(counts[k])]] = True
        return bits

    def dense(self) -> tuple[int, int]:
        return self.model(np.ones(self.table.n_units, bool))


def model_cost(model) -> dict:
    """Parameters and FLOPs per example (2 per multiply-accumulate of Conv, Dense, depthwise
    and separable layers; see :meth:`subnet.structure.Structure.cost`).

    Args:
        model: A ``keras.Model``.

    Returns:
        {"params": int, "flops": int, "nonzero_params": int}.
    """
    from subnet.structure import channel_groups

    weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
    try:
        flops = channel_groups(model).cost()["flops"]
    except InputError:  # a model subnet cannot mask is still counted, Conv/Dense layers only
        flops = sum(layer_flops(layer) for layer in model.layers)
    return {"params": int(model.count_params()), "flops": int(flops),
            "nonzero_params": int(sum(np.count_nonzero(w) for w in weights))}


# ------------------------------------------------------------------------------------ budgets

@dataclasses.dataclass(frozen=True)
class Budget:
    """What a subnetwork may keep.

    Args:
        kind: ``"units"``, ``"params"`` or ``"flops"``.
        amount: A float in (0, 1]: a fraction of the dense model's units, parameters or FLOPs;
            or an int >= 1: an absolute number.
    """

    kind: str
    amount: float | int

    def __post_init__(self):
        if self.kind not in ("units", "params", "flops"):
            raise InputError(f"Invalid budget kind {self.kind!r}. Expected 'units', 'params' or "
                             "'flops'.")
        a = self.amount
        if isinstance(a, bool) or not isinstance(a, (int, float, np.integer, np.floating)):
            raise InputError(f"Invalid budget amount {a!r}: expected a fraction in (0, 1] or an "
                             "int >= 1.")
        if isinstance(a, (float, np.floating)) and not 0 < a <= 1:
            raise InputError(f"Invalid budget amount {a!r}: a float budget is a fraction of the "
                             "dense model and must be in (0, 1]; give an int for an absolute "
                             "count.")
        if isinstance(a, (int, np.integer)) and a < 1:
            raise InputError(f"Invalid budget amount {a!r}: must be >= 1 (or a fraction in "
                             "(0, 1]).")

    @classmethod
    def units(cls, amount) -> Budget:
        """A budget in units (a fraction of all units, or a count)."""
        return cls("units", amount)

    @classmethod
    def params(cls, amount) -> Budget:
        """A budget in parameters (a fraction of the dense model's, or a count)."""
        return cls("params", amount)

    @classmethod
    def flops(cls, amount) -> Budget:
        """A budget in FLOPs per example (a fraction of the dense model's, or a count)."""
        return cls("flops", amount)

    def target(self, dense: float) -> float:
        """The absolute limit for a dense model whose total is ``dense``."""
        limit = self.amount * dense if isinstance(self.amount, (float, np.floating)) \
            else float(self.amount)
        if limit > dense:
            raise InputError(f"Budget of {self.amount} {self.kind} is larger than the dense "
                             f"model's {int(dense)}.")
        return limit

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"kind": self.kind, "amount": self.amount}


@dataclasses.dataclass(frozen=True)
class KeepSet(Mapping):
    """Which units each site keeps, with the exact cost of the subnetwork.

    Behaves as a read-only mapping {site name: bool array over the site's units}.

    Attributes:
        keep: The mapping.
        sites: The :class:`~subnet.engine.chain.SiteTable`.
        params: Parameters of the extracted subnetwork.
        flops: Its FLOPs per example.
        dense_params: Parameters of the full model.
        dense_flops: FLOPs per example of the full model.
        budget: The budget it was made for (or None).
    """

    keep: dict
    sites: SiteTable
    params: int
    flops: int
    dense_params: int
    dense_flops: int
    budget: Budget | None = None

    def __getitem__(self, name):
        return self.keep[name]

    def __iter__(self):
        return iter(self.keep)

    def __len__(self):
        return len(self.keep)

    @property
    def widths(self) -> dict[str, int]:
        """Units kept per site."""
        return {name: int(bits.sum()) for name, bits in self.keep.items()}

    @property
    def compensation(self) -> dict[str, float]:
        """{site: units / kept}: the factor that keeps each site's summed output at the dense
        model's scale, as inverted dropout does (pass as ``extract(..., scale=...)``)."""
        return {site.name: site.units / int(self.keep[site.name].sum()) for site in self.sites}

    @property
    def mask(self) -> np.ndarray:
        """The keep bits over all units in site order, bool (n_units,)."""
        return np.concatenate([self.keep[name] for name in self.sites.names])

    def to_dict(self) -> dict:
        """JSON-ready summary (widths, costs, ratios, budget, kept unit indices)."""
        return {"widths": self.widths, "params": self.params, "flops": self.flops,
                "dense_params": self.dense_params, "dense_flops": self.dense_flops,
                "params_fraction": self.params / self.dense_params,
                "flops_fraction": self.flops / self.dense_flops,
                "budget": None if self.budget is None else self.budget.to_dict(),
                "kept": {k: np.flatnonzero(v).tolist() for k, v in self.keep.items()}}


def _keep_set(cost: _Cost, table: SiteTable, bits: dict, budget) -> KeepSet:
    params, flops = cost.bits(bits)
    dense_params, dense_flops = cost.dense()
    return KeepSet(keep=bits, sites=table, params=params, flops=flops, dense_params=dense_params,
                   dense_flops=dense_flops, budget=budget)


def keep_sets(importance, budget: Budget, model, *, allocation: str = "global",
              min_units: int = 1) -> KeepSet:
    """Chooses the units to keep under a budget, most important first.

    Args:
        importance: An :class:`~subnet.importance.Importance` over the model's units.
        budget: A :class:`Budget` in units, parameters or FLOPs.
        model: The ``keras.Model`` the importance is about (for exact accounting).
        allocation: ``"global"``: add units in order of score over all sites while they fit
            (scores must be comparable across sites, as mask statistics are); ``"cost"``: the
            same, in order of score per unit of the budget the unit costs (what adding it adds
            to this layer *and* the next, at the widths chosen so far; units with a negative
            score come last, least harmful per cost first), so cheap units of many sites are
            kept before one costly unit; ``"joint"``: as ``"cost"``, with a unit's cost its
            share of the dense model's FLOPs plus its share of the dense model's parameters
            (so a convolution unit, cheap in parameters and costly in FLOPs, and a dense unit,
            the reverse, are priced on both axes; the budget still bounds its own kind);
            ``"uniform"``: keep the same fraction of every site, each site's best units (for
            per-layer criteria such as weight magnitude).
        min_units: Units every site keeps at least, so that no layer collapses (>= 1).

    Returns:
        A :class:`KeepSet` whose cost is within the budget.

    Raises:
        ValueError: If the budget is smaller than the minimum widths allow, larger than the
            model, or the importance does not match the model.
    """
    chain = analyse_chain(model, rate=dict.fromkeys(importance.sites.names, 0.0))
    table = importance.sites
    if chain.table.names != table.names or list(chain.table.units) != list(table.units):
        raise InputError(f"The importance is about sites {table.names} with units "
                         f"{list(table.units)}, but the model has {chain.table.names} with "
                         f"{list(chain.table.units)}.")
    if not isinstance(budget, Budget):
        raise InputTypeError(f"`budget` must be a Budget. Received: {type(budget)!r}")
    if isinstance(min_units, bool) or not isinstance(min_units, int) or \
            not 1 <= min_units <= int(min(table.units)):
        raise InputError(f"Invalid value received for argument `min_units`. Expected an int in "
                         f"[1, {int(min(table.units))}]. Received: min_units={min_units!r}")
    if allocation not in ALLOCATIONS:
        raise InputError(f"Invalid value received for argument `allocation`. Expected one of "
                         f"{', '.join(map(repr, ALLOCATIONS))}. "
                         f"Received: allocation={allocation!r}")
    scores = np.asarray(importance.scores, np.float64)
    if scores.ndim != 1:
        raise InputError("keep_sets needs one score per unit; for class-conditional scores use "
                         "importance.for_class(c).")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    cost = _Cost(chain)
    units = list(table.units)
    dense_params, dense_flops = cost.dense()
    dense = {"units": sum(units), "params": dense_params, "flops": dense_flops}
    limit = budget.target(dense[budget.kind])
    per_site = table.split(scores)
    orders = {name: np.argsort(-s, kind="stable") for name, s in per_site.items()}

    def spend(counts):
        if budget.kind == "units":
            return sum(counts)
        params, flops = cost.widths(counts, orders)
        return params if budget.kind == "params" else flops

    counts = [min_units] * len(table)
    if spend(counts) > limit:
        raise InputError(f"The budget ({budget.amount} {budget.kind}: {limit:.0f}) is smaller "
                         f"than a subnetwork with {min_units} unit(s) per site costs "
                         f"({spend(counts):.0f}). Give a larger budget or a smaller min_units.")
    if allocation in ("cost", "joint", "global"):
        state = cost.model.grow(cost.first(counts, orders))
        if allocation == "global":
            _score_allocation(state, scores, budget.kind, limit)
        else:
            _cost_allocation(state, per_site, orders, counts, table, budget.kind, limit,
                             (dense_params, dense_flops) if allocation == "joint" else None)
        bits = dict(zip(table.names, table.split(state.bits).values(), strict=True))
    else:
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            trial = [max(min_units, int(round(mid * u))) for u in units]
            lo, hi = (mid, hi) if spend(trial) <= limit else (lo, mid)
        counts = [max(min_units, int(round(lo * u))) for u in units]
        bits = {}
        for name, count in zip(table.names, counts, strict=True):
            site_bits = np.zeros(table[name].units, bool)
            site_bits[orders[name][:count]] = True
            bits[name] = site_bits
    return _keep_set(cost, table, bits, budget)


def _spent(state, kind: str, added: int = 0, change=(0.0, 0.0)) -> float:
    """What ``state`` spends of a budget of ``kind`` after ``added`` units costing ``change``."""
    if kind == "units":
        return float(state.bits.sum() + added)
    return state.params + change[0] if kind == "params" else state.flops + change[1]


def _score_allocation(state, scores, kind: str, limit: float) -> None:
    """Greedy by score: every unit in order of score, kept while the budget allows it."""
    for unit in np.argsort(-scores, kind="stable"):
        if state.bits[unit]:
            continue
        params, flops = state.delta([unit])
        if _spent(state, kind, 1, (params[0], flops[0])) <= limit:
            state.add(int(unit))


def _cost_allocation(state, per_site, orders, counts, table, kind: str, limit: float,
                     joint=None) -> None:
    """Greedy by score per cost: each step adds the next-best unit of the site whose unit buys
    the most score per unit of price at the current widths (the price: the budget's own kind,
    or with ``joint`` = (dense parameters, dense FLOPs) the sum of both shares), while the
    budget allows it. A site whose next unit no longer fits is closed: its marginal cost only
    grows as the other sites grow."""
    counts = list(counts)
    offsets = table.offsets
    open_sites = [k for k, site in enumerate(table) if counts[k] < site.units]
    while open_sites:
        names = [table.names[k] for k in open_sites]
        nexts = np.array([offsets[k] + orders[name][counts[k]]
                          for k, name in zip(open_sites, names, strict=True)])
        params, flops = state.delta(nexts)
        if joint is not None:
            price = params / joint[0] + flops / joint[1]
        else:
            price = {"units": np.ones(len(nexts)), "params": params, "flops": flops}[kind]
        price = np.maximum(price, 1e-12)
        score = np.array([per_site[name][orders[name][counts[k]]]
                          for k, name in zip(open_sites, names, strict=True)], np.float64)
        # Units with a positive score first, most score per price; then the least harmful per
        # price. lexsort sorts by its last key first; ties go to the earliest site.
        value = np.where(score > 0, score / price, score * price)
        order = np.lexsort((np.arange(len(nexts)), -value, score <= 0))
        i = int(order[0])
        k = open_sites[i]
        if _spent(state, kind, 1, (params[i], flops[i])) > limit:
            open_sites.remove(k)
            continue
        state.add(int(nexts[i]))
        counts[k] += 1
        if counts[k] == table[k].units:
            open_sites.remove(k)


def as_keep_set(model, keep) -> KeepSet:
    """The :class:`KeepSet` (with its exact parameter and FLOP counts) of given units.

    Args:
        model: A ``keras.Model`` classifier (see :func:`subnet.sites`).
        keep: A :class:`KeepSet`, or {site name: bool array of shape (units,)}; sites not named
            keep every unit (so ``{}`` is the whole model).

    Returns:
        The :class:`KeepSet` (``keep`` itself if it is one).

    Raises:
        InputError: If ``keep`` names unknown sites, has arrays of the wrong dtype or shape, or
            empties a site.
    """
    return _as_keep(model, keep)[1]


def _as_keep(model, keep) -> tuple[Chain, KeepSet]:
    """Normalises a KeepSet or {site: bool array} against the model."""
    if not isinstance(keep, Mapping):
        raise InputTypeError(f"`keep` must be a KeepSet or a mapping {{site name: bool array}}. "
                             f"Received: {type(keep)!r}")
    chain = analyse_chain(model, rate=0.0)
    # Unknown sites, arrays of the wrong dtype or shape and emptied sites are refused there.
    mask = chain.structure.unit_bits(keep)
    if isinstance(keep, KeepSet):
        return chain, keep
    bits = {name: value.copy() for name, value in chain.table.split(mask).items()}
    return chain, _keep_set(_Cost(chain), chain.table, bits, None)


# --------------------------------------------------------------------------------- extraction

class ExtractionMismatch(RuntimeError):
    """The extracted subnetwork does not compute what the masked model computes.

    Beyond float32 rounding this is a bug in subnet; it is an error of its own so that a long
    run can record it for the one subnetwork and go on (:func:`subnet.compare` does). The
    subnetwork and its keep-set travel with it.

    Attributes:
        difference: Largest absolute difference of output probabilities on the check examples.
        tolerance: The tolerance it exceeded (see :func:`extraction_tolerance`).
        subnetwork: The extracted ``keras.Model``.
        keep_set: Its :class:`KeepSet`.
    """

    def __init__(self, difference: float, tolerance: float, subnetwork=None, keep_set=None):
        super().__init__(
            f"The extracted subnetwork does not compute what the masked model computes: output "
            f"probabilities differ by {difference:.3g} > {tolerance:.3g} (float32 rounding at "
            "this logit scale allows at most that). This is a bug in subnet; please report it "
            "with the model.")
        self.difference, self.tolerance = float(difference), float(tolerance)
        self.subnetwork, self.keep_set = subnetwork, keep_set

    def to_dict(self) -> dict:
        """``{"max_difference", "tolerance"}``, as results record a failed check."""
        return {"max_difference": self.difference, "tolerance": self.tolerance}


def extraction_tolerance(probabilities: np.ndarray, atol: float = 1e-5) -> float:
    """The largest probability difference float32 rounding explains, from the logits' scale.

    Two float32 computations of the same logits differ by a rounding error proportional to the
    logits' magnitude, and a softmax moves a probability by at most about as much as it moves a
    logit difference. The logits' spread is read from the probabilities themselves (the range
    of their logarithms, which is the range of the logits for a softmax; about 100 where the
    smallest underflows), so the tolerance is ``atol * max(1, spread)``: ``atol`` for a network
    whose logits are of order one, proportionally more for one with large logits (an untrained
    MobileNetV2's reach the hundreds).

    Args:
        probabilities: The reference's class probabilities, shape (..., classes).
        atol: The tolerance at a logit spread of one.

    Returns:
        The tolerance, a float.
    """
    p = np.clip(np.asarray(probabilities, np.float64), np.finfo(np.float32).tiny, 1.0)
    if p.size == 0:
        return float(atol)
    spread = np.max(np.log(p.max(axis=-1)) - np.log(p.min(axis=-1)))
    return float(atol * max(1.0, float(spread)))


def extract(model, keep, *, scale: Mapping[str, float] | None = None, check_x=None,
            atol: float = 1e-5):
    """Builds the subnetwork that keeps only the given units, as a new, smaller Keras model.

    Each site gets fewer filters or units; the layers after it have their kernels sliced on the
    input side (Flatten → Dense row blocks included) and per-channel layers (BatchNormalization,
    PReLU) their parameters sliced. Dropout layers are left out, so the model is deterministic.
    Layer names are kept. On every extraction the new model's outputs are compared with the full
    model's with the other units masked (on ``check_x``, or on random inputs); a difference
    beyond float32 rounding at the logits' scale (:func:`extraction_tolerance`) is an error.

    Args:
        model: A ``keras.Model`` classifier (see :func:`subnet.sites`).
        keep: A :class:`KeepSet` (from :func:`keep_sets`) or {site name: bool array}; sites
            not named keep every unit.
        scale: Optional {site name: factor} multiplying the kept units' outputs (folded into the
            next layer's kernel), e.g. to compensate for the units removed.
        check_x: Examples for the equality check (default: 16 random inputs in [0, 1]).
        atol: Largest allowed absolute difference of output probabilities for logits of order
            one; scaled up with the logits' spread.

    Returns:
        ``(subnetwork, keep_set)``: the new ``keras.Model`` and the :class:`KeepSet` with its
        exact cost.

    Raises:
        ValueError: If ``keep`` empties a site, names unknown sites or the model cannot be
            masked.
        ExtractionMismatch: If the extracted model does not match the masked model (it carries
            the subnetwork, for a caller that records the failure and goes on).
    """
    with deserialization_scope(model):  # a trusted model's Lambda layers are rebuilt too
        return _extract(model, keep, scale=scale, check_x=check_x, atol=atol)


def _extract(model, keep, *, scale, check_x, atol):
    chain, keep_set = _as_keep(model, keep)
    scale = dict(scale or {})
    unknown = sorted(set(scale) - set(keep_set.sites.names))
    if unknown:
        raise InputError(f"`scale` names {unknown}, which are not sites.")
    factors = np.repeat([float(scale.get(name, 1.0)) for name in keep_set.sites.names],
                        keep_set.sites.units)
    subnetwork = chain.structure.extract(keep_set.mask, scale=factors,
                                         name=f"{model.name}_subnetwork")
    difference, tolerance = _verify(chain, model, subnetwork, keep_set, scale, check_x, atol)
    if not difference <= tolerance:
        raise ExtractionMismatch(difference, tolerance, subnetwork, keep_set)
    return subnetwork, keep_set


def _verify(chain, model, subnetwork, keep_set, scale, check_x, atol) -> tuple[float, float]:
    """(largest probability difference, its tolerance) between the subnetwork and the masked
    model on ``check_x``."""
    if check_x is None:
        rng = np.random.default_rng(0)
        check_x = rng.random((16,) + tuple(model.inputs[0].shape[1:]), dtype=np.float32)
    check_x = np.asarray(check_x, np.float32)
    values = np.concatenate([
        keep_set[name].astype(np.float32) * float(scale.get(name, 1.0))
        for name in keep_set.sites.names])
    reference = ReferenceBackend(chain, rescale=False).probabilities_from_values(
        check_x, values[None])[0]
    got = np.asarray(subnetwork.predict(check_x, verbose=0), np.float32)
    if not chain.probabilities:
        got = keras.ops.convert_to_numpy(keras.ops.softmax(got))
    return float(np.max(np.abs(got - reference))), extraction_tolerance(reference, atol)


# ------------------------------------------------------------------------------- fine-tuning

#: Examples BatchNormalization statistics are re-estimated on after training. A channel's mean
#: and variance average over every example and position, so 1,000 examples pin them down (the
#: standard error of a mean is under 0.5 % of the channel's SD even for a Dense layer), and
#: every BatchNormalization layer costs one pass of the model up to it
#: (:func:`recalibrate_batchnorm`): on the ResNet-20 layout 5,000 examples took a minute.
RECALIBRATION_EXAMPLES = 1000


def finetune(model, dataset, *, epochs: int | None = None, examples: int | None = None,
             batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0,
             recalibrate: bool = True, accuracy_before: float | None = None,
             progress: bool = True) -> dict:
    """Trains a (sub)network further and reports its test accuracy before and after.

    Args:
        model: The ``keras.Model`` to train (in place).
        dataset: A :class:`~subnet.data.Dataset` with training and test data.
        epochs: Budget in passes over the training data; or
        examples: Budget in training examples (exactly one of the two).
        batch_size: Examples per step.
        learning_rate: Adam's initial learning rate, decayed along a cosine to 0.
        seed: Seeds the shuffling.
        recalibrate: Afterwards, re-estimate BatchNormalization statistics on (up to)
            :data:`RECALIBRATION_EXAMPLES` training examples (:func:`recalibrate_batchnorm`);
            short fine-tunings leave them lagging behind the weights.
        accuracy_before: The model's test accuracy, if already measured (saves a pass over the
            test set); None measures it.
        progress: Show a progress bar.

    Returns:
        {"accuracy_before", "accuracy_after", "examples_seen", "seconds", "loss"}. The model is
        left compiled, with its optimizer's state: save it as ``copy_model(model).save(path)``
        to leave that state (for Adam, two more copies of the weights) out of the file.

    Raises:
        ValueError: If the budget is invalid or the dataset has no training data.
    """
    from subnet.train import fit

    if dataset.x_train is None:
        raise InputError(f"Dataset {dataset.name!r} has no training examples to fine-tune on.")
    before = accuracy(model, dataset.x_test, dataset.y_test) if accuracy_before is None else \
        float(accuracy_before)
    history = fit(model, dataset.x_train, dataset.y_train, epochs=epochs, examples=examples,
                  batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                  progress=progress)
    if recalibrate:
        recalibrate_batchnorm(model, dataset.x_train[:RECALIBRATION_EXAMPLES])
    return {"accuracy_before": before,
            "accuracy_after": accuracy(model, dataset.x_test, dataset.y_test),
            "examples_seen": history["examples_seen"], "seconds": history["seconds"],
            "loss": history["loss"]}


#: Largest activation memory (bytes, estimated) for which the statistics are computed in one
#: pass over all examples at once.
_ONE_PASS_BYTES = 1 << 30


def recalibrate_batchnorm(model, x, *, batch_size: int = 500) -> int:
    """Re-estimates every BatchNormalization layer's moving mean and variance on ``x``, in place.

    After units are removed (or after a short fine-tuning, whose momentum updates lag behind),
    the statistics a BatchNormalization layer stored no longer describe its inputs. Each layer's
    statistics are set to the exact mean and (biased) variance of its inputs over ``x`` and every
    position, those inputs computed with the layers before it already recalibrated. Nothing is
    trained.

    Where the activations of all of ``x`` fit in memory (about 1 GiB), this is one forward pass
    over ``x`` as a single batch in which each BatchNormalization layer, as it is reached, first
    sets its statistics from its inputs (accumulated in float64: TensorFlow's own float32
    moments over a million values were off by 1 % here) and then normalises with them.
    Otherwise it runs the model up to each BatchNormalization layer in turn, in batches of
    ``batch_size`` (a pass of the model per layer).

    Args:
        model: A functional or Sequential ``keras.Model``.
        x: Examples, float32 (n, *input shape); a few thousand suffice.
        batch_size: Examples per forward call where the layers are done one at a time.

    Returns:
        The number of layers recalibrated (0 if the model has no BatchNormalization).
    """
    layers = [layer for layer in model.layers
              if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    if _one_pass_possible(model, len(x)):
        _recalibrate_in_one_pass(model, x, layers)
    else:
        _recalibrate_layer_by_layer(model, x, layers, batch_size)
    return len(layers)


def _one_pass_possible(model, n: int) -> bool:
    largest = 0
    for layer in model.layers:
        for tensor in keras.tree.flatten(layer.output):
            largest = max(largest, int(np.prod([d or 1 for d in tensor.shape[1:]])))
    return 4 * largest * n * 4 <= _ONE_PASS_BYTES  # a few float32 tensors of n examples alive


def _reduced_axes(layer, ndim: int) -> tuple[int, ...]:
    """The axes a BatchNormalization layer's statistics average over: all but its own."""
    return tuple(i for i in range(ndim) if i != layer.axis % ndim)


def _set_statistics(layer, h) -> None:
    """Sets a BatchNormalization layer's moving statistics to those of its inputs ``h``."""
    h = np.asarray(keras.ops.convert_to_numpy(h), np.float64)
    axes = _reduced_axes(layer, h.ndim)
    mean = h.mean(axis=axes)
    variance = h.var(axis=axes)
    layer.moving_mean.assign(mean.astype(np.float32))
    layer.moving_variance.assign(variance.astype(np.float32))


def _recalibrate_in_one_pass(model, x, layers) -> None:
    originals = {}

    def calibrating(layer, call):
        def wrapped(inputs, *args, **kwargs):
            _set_statistics(layer, inputs)
            return call(inputs, *args, **kwargs)
        return wrapped

    try:
        for layer in layers:
            originals[layer] = layer.call
            layer.call = calibrating(layer, layer.call)
        model(x, training=False)
    finally:
        for layer, call in originals.items():
            layer.call = call


def _recalibrate_layer_by_layer(model, x, layers, batch_size: int) -> None:
    for layer in layers:
        probe = keras.Model(model.inputs[0], layer.input)
        axes = _reduced_axes(layer, len(layer.input.shape))
        total, total_sq, count = 0.0, 0.0, 0
        for start in range(0, len(x), batch_size):
            h = keras.ops.convert_to_numpy(probe(x[start:start + batch_size], training=False))
            h = h.astype(np.float64)
            total = total + h.sum(axis=axes)
            total_sq = total_sq + (h * h).sum(axis=axes)
            count += h.size // h.shape[layer.axis]
        mean = total / count
        variance = np.maximum(total_sq / count - mean * mean, 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))


def accuracy(model, x, y, *, batch_size: int = 1000) -> float:
    """Top-1 accuracy of a classifier (dropout off, as ``predict`` runs it).

    Args:
        model: A ``keras.Model`` classifier.
        x: Examples, float array of shape (n, *model input shape).
        y: True classes, int array of shape (n,).
        batch_size: Examples per forward call.

    Returns:
        The fraction of examples whose highest output is the true class, in [0, 1].

    Raises:
        InputError: If ``x`` or ``y`` do not fit the model.
    """
    x, y, _ = check_examples(model, x, y)
    prediction = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(prediction.argmax(axis=-1) == y))


def copy_model(model):
    """A bare copy of ``model``: the same architecture and weights, not compiled.

    What a model file should hold and a latency measurement should run: no optimizer (whose
    state, for Adam, is two more copies of the weights in a saved file), no loss or metrics.
    (``keras.models.clone_model`` compiles its copy like the original, and a compiled model saves
    its optimizer's variables, even unused ones.)

    Args:
        model: A functional or Sequential ``keras.Model``.

    Returns:
        A new, uncompiled ``keras.Model``.
    """
    with deserialization_scope(model):
        copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy



def measure(model, *, batch_size: int = 256, repeats: int = 20, reference=None) -> dict:
    """Size and speed of a model, measured the same way for every model.

    Both are measured on the model's bare copy (:func:`copy_model`): the saved file holds the
    architecture and weights only (a trained model's optimizer state is left out, so that
    trained and untrained models are measured alike), and every model runs the same
    uncompiled inference path. Latency on a shared machine drifts with the load; give
    ``reference`` (e.g. the dense model) to time the two models in alternation and report
    their ratio, which the drift mostly cancels out of.

    Args:
        model: A ``keras.Model``.
        batch_size: Examples per timed call (the same for all models compared).
        repeats: Timed calls (per model); medians are reported.
        reference: Optional ``keras.Model`` with the same input shape, timed in alternation.

    Returns:
        {"params", "nonzero_params", "flops", "file_bytes", "gzip_bytes",
        "latency_ms_per_example", "batch_size"}: sizes of the saved ``.keras`` file raw and
        gzipped (level 9), and the median time per example of ``predict_on_batch``. With
        ``reference``, also "reference_latency_ms_per_example" and "latency_ratio" (the median
        over repeats of this model's time / the reference's time in the same repeat).

    Raises:
        InputError: If ``repeats`` or ``batch_size`` is not a positive int.
    """
    for name, value in (("batch_size", batch_size), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"Invalid value received for argument `{name}`. Expected an int "
                             f">= 1. Received: {name}={value!r}")
    result = model_cost(model)
    bare = copy_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        bare.save(path)
        raw = path.read_bytes()
    result["file_bytes"] = len(raw)
    result["gzip_bytes"] = len(gzip.compress(raw, compresslevel=9))
    x = np.random.default_rng(0).random((batch_size,) + tuple(model.inputs[0].shape[1:]),
                                        dtype=np.float32)
    timed = [bare] if reference is None else [bare, copy_model(reference)]
    for m in timed:
        m.predict_on_batch(x)  # traces the inference function
    times = np.zeros((repeats, len(timed)))
    for r in range(repeats):
        order = range(len(timed)) if r % 2 == 0 else reversed(range(len(timed)))
        for i in order:
            start = time.perf_counter()
            timed[i].predict_on_batch(x)
            times[r, i] = time.perf_counter() - start
    result["latency_ms_per_example"] = float(np.median(times[:, 0]) / batch_size * 1000)
    result["batch_size"] = int(batch_size)
    if reference is not None:
        result["reference_latency_ms_per_example"] = float(np.median(times[:, 1]) /
                                                           batch_size * 1000)
        result["latency_ratio"] = float(np.median(times[:, 0] / times[:, 1]))
    return result

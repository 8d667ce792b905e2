"""From importance to a physically smaller network: budgets, keep-sets, extraction.

:func:`keep_sets` turns per-unit importance and a budget (units, parameters or FLOPs) into the
units each site keeps, with exact accounting of the parameters and FLOPs that result.
:func:`extract` builds that subnetwork as a new, smaller Keras model (fewer filters and units,
the next layers' kernels sliced on their input side) and checks, on every extraction, that it
computes exactly what the full model computes with the other units masked.
:func:`finetune` trains it further (:mod:`subnet.finetuning`); :func:`measure` reports its size
and speed (:mod:`subnet.measuring`). Both are re-exported here with the other names of those
two modules, so ``subnet.extraction`` still offers every step from importance to a measured,
fine-tuned subnetwork.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from subnet.engine.chain import Chain, SiteTable, analyse_chain
from subnet.engine.reference import ReferenceBackend
from subnet.errors import InputError, InputTypeError
from subnet.finetuning import RECALIBRATION_EXAMPLES, finetune, recalibrate_batchnorm
from subnet.measuring import accuracy, copy_model, measure, model_cost
from subnet.models import deserialization_scope
from subnet.runtime import keras
from subnet.validation import check_choice, check_int

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
    check_int("min_units", min_units, low=1, high=int(min(table.units)))
    check_choice("allocation", allocation, ALLOCATIONS)
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

"""Sizing an analysis from measured costs: ``--time-budget`` and ``--quick``.

How many masks, examples and fine-tuning steps a run can afford depends on the model: the
blog's network evaluates a masked subnetwork in microseconds, a ResNet-20 in a millisecond.
:func:`measure` times, on the model itself, one masked evaluation (steady state, and the
one-time cost of building the engine), one plain forward pass and one training example;
:func:`plan` predicts each stage's seconds from them and the settings, and shrinks what a
stage does until it fits its share of the budget:

==============  ======  ===================================================================
stage           share   what is sized (never below its floor)
==============  ======  ===================================================================
keep            0.10    held-out examples the keep probabilities are calibrated on (100)
record          0.30    masks (100, then 50) and test examples (200) of the record
selection       0.20    held-out examples units are chosen on (200), masks per iterative
                        step (40)
fine-tuning     0.30    epochs of fine-tuning of every subnetwork (1 batch; none where even
                        one call per subnetwork does not fit), then the timed calls of
                        each subnetwork's latency (5)
the rest        0.10    passes of the blog's experiment and of the uncertainty ensembles
==============  ======  ===================================================================

A budget larger than the settings need grows the record's masks (more masks, narrower
intervals) up to 20x; ``--quick``'s budget is a cap only. The plan, its measured costs and its
predicted seconds per stage are stored in ``results.json`` (``plan``) and said in the report,
so the reader knows what the budget bought. Predictions are estimates: engines built per
subnetwork and per stage, data loading and the report are counted from the measured build
cost and not exactly.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from subnet.errors import InputError
from subnet.keep import CALIBRATION_MASKS, CALIBRATION_STEPS

__all__ = ["Costs", "Plan", "measure", "parse_duration", "plan"]

#: Share of the budget of each stage.
SHARES = {"keep": 0.10, "record": 0.30, "selection": 0.20, "finetune": 0.30, "rest": 0.10}
#: The fewest of each sized quantity a budget may leave.
FLOORS = {"calibration_examples": 100, "masks": 50, "examples": 200, "selection_examples": 200,
          "step_masks": 40, "passes": 2, "uncertainty_passes": 3, "latency_repeats": 5}
#: How far a generous budget grows the record's masks.
MOST_GROWTH = 20
#: calibrate_keep's work: 2 (scaled or not) x (steps + 1) keep probabilities x masks each.
CALIBRATION_EVALUATIONS = 2 * (CALIBRATION_STEPS + 1) * CALIBRATION_MASKS
#: Masks the blog stage draws on a model with no Dropout layer (4 pictured examples).
BLOG_MASKS = 200


def parse_duration(text: str) -> float:
    """Seconds of ``"90"``, ``"90s"``, ``"30m"``, ``"1.5h"``.

    Raises:
        InputError: If ``text`` is not a positive duration.
    """
    value = str(text).strip().lower()
    unit = {"s": 1, "m": 60, "h": 3600}.get(value[-1:], None)
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        seconds = float("nan")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"Invalid time budget {text!r}: expected a positive duration such as "
                         "90s, 30m or 2h.")
    return seconds


@dataclasses.dataclass(frozen=True)
class Costs:
    """Seconds measured on the model (see :func:`measure`).

    Attributes:
        mask_example: One example under one mask, in steady state.
        engine_build: Building (tracing) a masked-evaluation engine, once per engine.
        forward_example: One example through the whole model.
        train_example: One training example of fine-tuning (its share of a step): three
            forward passes (forward and backward), the usual rule.
        train_call: What one fine-tuning call costs besides its examples (building and
            tracing the training step of a new subnetwork), measured on the model.
    """

    mask_example: float
    engine_build: float
    forward_example: float
    train_example: float
    train_call: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(model, x: np.ndarray, x_train: np.ndarray | None, y_train: np.ndarray | None, *,
            seed: int = 0) -> Costs:
    """Times the model's unit costs on a few examples (a few seconds).

    Args:
        model: The classifier, dropout off.
        x: Examples (at least one; 128 are used at most).
        x_train, y_train: Training examples for the fine-tuning cost (None: no training).
        seed: Seed of the probe's masks.
    """
    from subnet.engine import make_backend
    from subnet.engine.chain import analyse_chain
    from subnet.masks import sample_masks

    probe = x[:128]
    chain = analyse_chain(model, 0.5)
    keep = chain.table.unit_keep()
    start = time.perf_counter()
    engine = make_backend(chain)
    engine.probabilities(probe, sample_masks(keep, seed, range(8)))
    first = time.perf_counter() - start
    start = time.perf_counter()
    engine.probabilities(probe, sample_masks(keep, seed, range(8, 16)))
    steady = time.perf_counter() - start
    # The whole model through the same compiled program (every unit kept): Keras's predict()
    # would add its own per-call overhead, which for a small network is most of the time.
    start = time.perf_counter()
    engine.probabilities(probe, np.ones((8, chain.table.n_units), bool))
    forward = (time.perf_counter() - start) / (8 * len(probe))
    call = 0.0
    if x_train is not None and len(x_train):
        from subnet.extraction import copy_model
        from subnet.train import fit

        n = min(128, len(x_train))
        start = time.perf_counter()
        fit(copy_model(model), x_train[:n], y_train[:n], examples=n, seed=seed,
            progress=False)
        call = max(0.0, time.perf_counter() - start - 3 * forward * n)
    return Costs(mask_example=steady / (8 * len(probe)),
                 engine_build=max(0.0, first - steady), forward_example=forward,
                 train_example=3 * forward, train_call=call)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a time budget bought.

    Attributes:
        seconds: The budget.
        costs: The measured :class:`Costs`.
        values: The sized settings, {name: value}.
        changes: {name: [as asked, as planned]} for each setting the budget changed.
        predicted: Predicted seconds per stage, for the planned settings.
        fits: Whether the prediction fits the budget (False: the floors cost more).
    """

    seconds: float
    costs: Costs
    values: dict
    changes: dict
    predicted: dict
    fits: bool

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "costs": self.costs.to_dict(), "values": self.values,
                "changes": self.changes, "predicted": self.predicted, "fits": self.fits}

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(seconds=data["seconds"], costs=Costs(**data["costs"]),
                   values=dict(data["values"]), changes=dict(data["changes"]),
                   predicted=dict(data["predicted"]), fits=bool(data["fits"]))


def predict(values: dict, costs: Costs, *, n_train: int, n_test: int, auto_keep: bool,
            dropout: bool, methods: tuple, budgets: tuple, repeats: int) -> dict:
    """Predicted seconds of each stage of an analysis with settings ``values``."""
    c = costs
    build = c.engine_build
    mask = c.mask_example
    keep = (CALIBRATION_EVALUATIONS * values["calibration_examples"] * mask + build
            if auto_keep else 0.0)
    record = values["masks"] * values["examples"] * mask + build
    selection = 0.0
    if n_train:
        if "banzhaf_iterative" in methods:  # iterative: a record on each step's subnetwork
            steps = max(1, math.ceil(math.log2(1 / min(budgets)))) * values["steps_per_halving"]
            selection += steps * (values["step_masks"] * values["selection_examples"] * mask
                                  + build)
        if "banzhaf_single" in methods:  # one record of the whole network
            selection += values["masks"] * values["selection_examples"] * mask + build
    finetune = 0.0
    if n_train:
        tuned = len(budgets) * repeats * len(methods)
        steps = tuned * (values["finetune_epochs"] * n_train * c.train_example
                         + (c.train_call if values["finetune_epochs"] > 0 else 0.0))
        # Each subnetwork is extracted, its BatchNormalization re-estimated, measured on the
        # test set before and after fine-tuning and (the first seed's) its latency timed in
        # ``latency_repeats`` calls of 256 examples: a new model each time, whose programs are
        # built anew (about four builds); the whole network's latency is measured once (its
        # accuracy comes from the blog's stage).
        measured = repeats * len(methods) * sum(budgets) * 2 * n_test * c.forward_example \
            + tuned * 4 * build
        calls = values["latency_repeats"] * 256 * c.forward_example
        latency = len(methods) * sum(calls * b for b in budgets)
        dense = calls + build
        finetune = steps + measured + latency + dense
    blog = (values["passes"] * n_test * c.forward_example if dropout
            else BLOG_MASKS * 4 * mask + build)
    uncertainty = values["uncertainty_passes"] * values["examples"] * (mask + c.forward_example)
    return {"keep": keep, "record": record, "selection": selection, "finetune": finetune,
            "rest": blog + uncertainty}


def plan(values: dict, costs: Costs, seconds: float, *, grow: bool = True, **about) -> Plan:
    """Sizes ``values`` (the settings :data:`FLOORS` names, ``finetune_epochs`` and
    ``steps_per_halving``) so that each stage fits its share of ``seconds``.

    Args:
        values: The settings as asked.
        costs: From :func:`measure`.
        seconds: The budget.
        grow: Whether a budget larger than ``values`` need grows the record's masks (a cap
            only, as ``--quick`` uses it, when False).
        **about: What else the prediction needs (see :func:`predict`).
    """
    asked = dict(values)
    v = dict(values)

    def share(stage):
        return SHARES[stage] * seconds

    def cost(stage):
        return predict(v, costs, **about)[stage]

    mask = max(costs.mask_example, 1e-12)
    # keep: the calibration's examples.
    if cost("keep") > share("keep"):
        fit = (share("keep") - costs.engine_build) / (CALIBRATION_EVALUATIONS * mask)
        v["calibration_examples"] = int(max(FLOORS["calibration_examples"],
                                            min(v["calibration_examples"], fit)))
    # record: masks down to 100, then examples down to their floor, then masks to theirs.
    room = max(share("record") - costs.engine_build, 0.0) / mask  # evaluations
    if cost("record") > share("record"):
        v["masks"] = int(max(min(v["masks"], 100), min(v["masks"], room // v["examples"])))
        if v["masks"] * v["examples"] > room:
            v["examples"] = int(max(FLOORS["examples"], min(v["examples"], room // v["masks"])))
        if v["masks"] * v["examples"] > room:
            v["masks"] = int(max(FLOORS["masks"], room // v["examples"]))
    elif grow:  # a generous budget: more masks, narrower intervals
        v["masks"] = int(min(MOST_GROWTH * v["masks"], max(v["masks"], room // v["examples"])))
    def shrink(stage, name):
        """Scales ``name`` down (to its floor at least) so that ``stage`` fits its share, with
        what does not depend on it held fixed."""
        if cost(stage) > share(stage):
            fixed = predict({**v, name: 0}, costs, **about)[stage]
            scale = max(share(stage) - fixed, 0.0) / max(cost(stage) - fixed, 1e-12)
            v[name] = int(max(FLOORS[name], min(v[name], v[name] * scale)))

    # selection: held-out examples, then masks per iterative step (both scale the evaluations;
    # the engines built per step do not shrink).
    for name in ("selection_examples", "step_masks"):
        shrink("selection", name)
    # fine-tuning epochs: at least one batch of 128 per subnetwork, or none at all where even
    # that does not fit (the comparison then measures the subnetworks as cut). Measuring the
    # subnetworks is done either way, so only fine-tuning itself is held to the share.
    asked_epochs = v["finetune_epochs"]
    fixed = predict({**v, "finetune_epochs": 0.0}, costs, **about)["finetune"]  # measuring
    if cost("finetune") - fixed > share("finetune") and about.get("n_train"):
        tuned = len(about["budgets"]) * about["repeats"] * len(about["methods"])
        room = share("finetune") - tuned * costs.train_call
        floor = min(asked_epochs, 128 / about["n_train"])
        per_epoch = tuned * about["n_train"] * costs.train_example
        epochs = room / per_epoch if per_epoch > 0 else asked_epochs
        v["finetune_epochs"] = float(min(asked_epochs, epochs)) if epochs >= floor else \
            (float(floor) if room > 0 else 0.0)
    shrink("finetune", "latency_repeats")  # then fewer timed calls of the latency
    for name in ("passes", "uncertainty_passes"):
        if cost("rest") > share("rest"):
            scale = share("rest") / cost("rest")
            v[name] = int(max(FLOORS[name], min(v[name], v[name] * scale)))
    predicted = predict(v, costs, **about)
    changes = {name: [asked[name], v[name]] for name in v if v[name] != asked[name]}
    return Plan(seconds=float(seconds), costs=costs, values=v, changes=changes,
                predicted={k: round(t, 1) for k, t in predicted.items()},
                fits=sum(predicted.values()) <= seconds)

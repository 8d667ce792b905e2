"""Gradual prune–retrain: one trajectory from the whole network down through every budget.

Pruning in one shot to 1/16 of the FLOPs and fine-tuning measures how well a criterion guesses
from the *whole* network; pruning gradually measures how far the network trims (Han et al. 2015;
Zhu & Gupta 2017). Each round removes a fraction ``step`` of the current FLOPs (never passing the
next budget), with units chosen by the criterion measured on the *current* subnetwork, then
retrains for ``retrain_epochs`` (optionally distilling from the parent). When the trajectory
reaches a budget, that subnetwork is kept as a checkpoint; so one run per criterion and seed
serves every budget. Each checkpoint is then fine-tuned to saturation by the caller
(:func:`subnet.train.fit` with a validation split and ``patience``).

Criteria: every registered estimator that reads a model (``magnitude``, ``taylor``, ``apoz``,
``activation``, ``random``) and mask statistics (``banzhaf_iterative``: a record of masks around the
current subnetwork, as :func:`subnet.iterative_keep_sets` does). Scores of different sites are
made comparable for the global allocations: mask statistics are already in accuracy units; the
others are divided by their site's L2 norm (the layer-wise normalisation of Molchanov et al.
2017), so a site's scores sum to the same scale whatever its fan-in.

The run is resumable: with ``out``, every round's subnetwork and the trajectory so far are saved
atomically, and a rerun with the same settings continues after the last finished round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from subnet._io import atomic_path, atomic_write_text
from subnet.cli import progress_bar
from subnet.data import as_dataset
from subnet.errors import InputError
from subnet.extraction import (
    ALLOCATIONS,
    RECALIBRATION_EXAMPLES,
    Budget,
    accuracy,
    as_keep_set,
    copy_model,
    extract,
    keep_sets,
    model_cost,
    recalibrate_batchnorm,
)
from subnet.importance import Importance, estimate
from subnet.methods import accepted, method, resolve
from subnet.validation import check_choice, check_fraction, check_number

__all__ = ["Trajectory", "prune_gradually"]

#: Criteria read from the model (:mod:`subnet.methods`), and those that record masks.
MODEL_CRITERIA = tuple(k for k in accepted("thorough") if method(k).kind != "estimator")
RECORD_CRITERIA = accepted("thorough", kind="estimator")


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """One gradual pruning run: its rounds and a checkpoint at every budget.

    Attributes:
        method: The criterion.
        allocation: ``"uniform"``, ``"global"``, ``"cost"`` or ``"joint"``.
        seed: The run's seed.
        dense_flops: FLOPs per example of the parent.
        rounds: One dict per round: ``flops``, ``params``, ``widths``, ``val_accuracy`` (after
            retraining, when a validation split was given).
        checkpoints: {budget: {"file", "flops", "params", "widths", "kept", "round",
            "val_accuracy"}}; ``kept`` lists each site's kept units by their index in the parent.
    """

    method: str
    allocation: str
    seed: int
    dense_flops: int
    rounds: tuple
    checkpoints: dict

    def to_dict(self) -> dict:
        """JSON-ready dict (budgets as strings, as JSON keys are)."""
        return {"method": self.method, "allocation": self.allocation, "seed": self.seed,
                "dense_flops": self.dense_flops, "rounds": list(self.rounds),
                "checkpoints": {repr(float(b)): c for b, c in self.checkpoints.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Trajectory:
        """The inverse of :meth:`to_dict` (an old method key reads as the key it has now)."""
        return cls(method=resolve(data["method"]), allocation=data["allocation"], seed=data["seed"],
                   dense_flops=data["dense_flops"], rounds=tuple(data["rounds"]),
                   checkpoints={float(b): c for b, c in data["checkpoints"].items()})


def prune_gradually(model, dataset, method: str, budgets: Sequence[float], *,
                    step: float = 0.2, retrain_epochs: float = 1.0, allocation: str = "uniform",
                    selection: tuple | None = None, validation: tuple | None = None,
                    teacher: np.ndarray | None = None, temperature: float = 4.0,
                    distill_weight: float = 0.9, learning_rate: float = 1e-3,
                    n_masks: int = 300, min_units: int = 1, seed: int = 0,
                    out: str | os.PathLike | None = None, trust: bool = False,
                    progress: bool = True) -> Trajectory:
    """Prunes ``model`` gradually through every budget, retraining between rounds.

    Args:
        model: The trained parent, a ``keras.Model`` classifier (deterministic: dropout off).
        dataset: A :class:`~subnet.data.Dataset`, or
            ``((x_train, y_train), (x_test, y_test))`` as ``keras.datasets``' ``load_data()``
            returns it, or ``(train, test)`` as ``tf.data.Dataset`` objects of (examples, labels)
            (:func:`~subnet.data.as_dataset`). Its training split retrains the subnetworks.
        method: The criterion: one of :data:`MODEL_CRITERIA` or ``"banzhaf_iterative"``
            (``"banzhaf"``, its old key, still reads as it).
        budgets: FLOP fractions of the parent in (0, 1); a checkpoint is kept at each.
        step: Fraction of the current FLOPs each round removes, in (0, 1].
        retrain_epochs: Epochs of training after each round (0: none; fractions allowed).
        allocation: ``"uniform"`` (each site keeps the same fraction), ``"global"`` (units
            ranked across sites by normalised score), ``"cost"`` (by score per FLOP saved) or
            ``"joint"`` (by score per share of FLOPs plus share of parameters saved).
        selection: ``(x, y)`` the criterion is measured on (validation examples, never the test
            set); default: ``validation``, else the last 1,000 training examples.
        validation: ``(x_val, y_val)`` measured after every round (reported, never trained on).
        teacher: Teacher probabilities on the training split (see
            :func:`subnet.train.teacher_probabilities`) to distil from while retraining.
        temperature: Distillation temperature.
        distill_weight: Weight of the distillation term.
        learning_rate: Adam's initial learning rate of each retraining.
        n_masks: Masks per round for ``banzhaf_iterative``.
        min_units: Units every site keeps at least.
        seed: Seed of the run (criteria, masks, shuffling); round k uses ``seed * 1000 + k``.
        out: Folder for the checkpoints and the resumable state (None: kept in memory only,
            and ``file`` is None).
        trust: Whether the model holds code the user trusted (a Lambda layer): the saved
            subnetworks are then reloaded with ``trust=True`` when the run resumes.
        progress: Show a progress bar over the rounds.

    Returns:
        A :class:`Trajectory`; with ``out``, the checkpoints are ``.keras`` files there.

    Raises:
        InputError: If a setting is invalid, a budget cannot be met with ``min_units`` units
            per site, or ``out`` holds a trajectory made with other settings.
    """
    from subnet.train import fit

    dataset = as_dataset(dataset)
    budgets = sorted({float(b) for b in budgets}, reverse=True)
    method = resolve(method)
    if not budgets or not all(0 < b < 1 for b in budgets):
        raise InputError(f"Invalid value for argument `budgets`: expected FLOP fractions in "
                         f"(0, 1). Received: {budgets}")
    if method not in MODEL_CRITERIA + RECORD_CRITERIA:
        raise InputError(f"Unknown criterion {method!r} for gradual pruning; known: "
                         f"{', '.join(MODEL_CRITERIA + RECORD_CRITERIA)}.")
    check_fraction("step", step, low_open=True)
    check_number("retrain_epochs", retrain_epochs, low=0.0, high=1000.0)
    check_choice("allocation", allocation, ALLOCATIONS)
    if dataset.x_train is None:
        raise InputError(f"Dataset {dataset.name!r} has no training split to retrain on.")
    if selection is None:
        selection = validation if validation is not None else (
            dataset.x_train[-1000:], dataset.y_train[-1000:])

    whole = as_keep_set(model, {})
    dense_flops = int(whole.dense_flops)
    smallest = as_keep_set(model, {s.name: np.arange(s.units) < min_units for s in whole.sites})
    if budgets[-1] * dense_flops < smallest.flops:
        raise InputError(f"Budget {budgets[-1]:g} is below {smallest.flops / dense_flops:.3g}, "
                         f"the FLOP fraction of {min_units} unit(s) per site.")
    settings = {"method": method, "budgets": budgets, "step": step,
                "retrain_epochs": retrain_epochs, "allocation": allocation,
                "temperature": temperature, "distill_weight": distill_weight,
                "learning_rate": learning_rate, "n_masks": n_masks, "min_units": min_units,
                "seed": seed, "teacher": teacher is not None,
                "model": _weights_digest(model), "data": dataset.fingerprint(),
                "selection": _array_digest(*selection)}
    state = _State(out, settings, trust)
    current = model if state.model is None else state.model
    index = state.index or {s.name: list(range(s.units)) for s in whole.sites}
    rounds, checkpoints = list(state.rounds), dict(state.checkpoints)
    n_train = len(dataset.x_train)
    bar = progress_bar(total=None, desc=f"gradual {method}", unit="round", enabled=progress,
                       initial=len(rounds))
    try:
        while len(checkpoints) < len(budgets):
            flops = model_cost(current)["flops"]
            pending = [b for b in budgets if b not in checkpoints]
            target = max(pending[0] * dense_flops, flops * (1 - step))
            round_seed = seed * 1000 + len(rounds) + 1
            keep = _choose(current, method, target, allocation, selection, n_masks, min_units,
                           round_seed)
            for name in index:
                index[name] = [index[name][i] for i in np.flatnonzero(keep[name])]
            current, _ = extract(current, keep, check_x=selection[0][:16])
            recalibrate_batchnorm(current, dataset.x_train[:RECALIBRATION_EXAMPLES])
            if retrain_epochs > 0:
                fit(current, dataset.x_train, dataset.y_train,
                    examples=max(1, int(round(retrain_epochs * n_train))),
                    learning_rate=learning_rate, seed=round_seed, progress=False,
                    teacher=teacher, temperature=temperature, distill_weight=distill_weight)
            cost = model_cost(current)
            record = {"flops": int(cost["flops"]), "params": int(cost["params"]),
                      "widths": {k: len(v) for k, v in index.items()},
                      "val_accuracy": None if validation is None else
                      accuracy(current, *validation)}
            rounds.append(record)
            for budget in pending:
                if cost["flops"] <= budget * dense_flops * (1 + 1e-9):
                    checkpoints[budget] = {**record, "round": len(rounds),
                                           "kept": {k: list(v) for k, v in index.items()},
                                           "file": state.save_checkpoint(current, budget)}
            state.save(current, index, rounds, checkpoints)
            bar.update(1)
            bar.set_postfix(flops=f"{cost['flops'] / dense_flops:.3f}")
    finally:
        bar.close()
    return Trajectory(method=method, allocation=allocation, seed=seed, dense_flops=dense_flops,
                      rounds=tuple(rounds), checkpoints=checkpoints)


def _choose(current, method, target_flops, allocation, selection, n_masks, min_units, seed):
    """The keep-set of one round: scores on the current subnetwork, then the allocation."""
    x, y = selection
    if method == "banzhaf_iterative":
        from subnet.record import temporary_record

        table = as_keep_set(current, {}).sites
        with temporary_record(current, x, y, n_masks, seed=seed, antithetic=True,
                              rate=dict.fromkeys(table.names, 0.5), progress=False) as record:
            importance = estimate(record, "banzhaf")
    else:
        # The rate only completes the site table here (no masks are drawn).
        options = {"rate": 0.5, **({"seed": seed} if method == "random" else {})}
        importance = estimate((current, x, y), method, **options)
        if allocation != "uniform":
            importance = _normalised(importance)
    budget = Budget.flops(max(1, int(target_flops)))
    return keep_sets(importance, budget, current, allocation=allocation, min_units=min_units)


def _normalised(importance: Importance) -> Importance:
    """Scores divided by their site's L2 norm, so sites are comparable (Molchanov et al.)."""
    scores = np.asarray(importance.scores, np.float64).copy()
    for start, stop in zip(importance.sites.offsets[:-1], importance.sites.offsets[1:],
                           strict=True):
        norm = float(np.linalg.norm(scores[start:stop]))
        if norm > 0:
            scores[start:stop] /= norm
    return Importance(method=importance.method, scores=scores, sites=importance.sites)


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def _array_digest(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


class _State:
    """The resumable state of a trajectory in ``out``: settings, last subnetwork, checkpoints."""

    def __init__(self, out, settings: dict, trust: bool = False):
        self.out = None if out is None else Path(out)
        self.model, self.index, self.rounds, self.checkpoints = None, None, [], {}
        self.settings = settings
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "trajectory.json"
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        if isinstance(saved.get("settings"), dict) and "method" in saved["settings"]:
            # a trajectory saved before the method's rename (subnet.methods.RENAMED)
            saved["settings"]["method"] = resolve(saved["settings"]["method"])
        if saved.get("settings") != json.loads(json.dumps(settings)):
            raise InputError(f"{self.out} holds a trajectory made with other settings, model or "
                             "data; choose another folder.")
        from subnet.models import load_model

        self.model = load_model(self.out / "current.keras", trust=trust)
        self.index = saved["index"]
        self.rounds = saved["rounds"]
        self.checkpoints = {float(b): c for b, c in saved["checkpoints"].items()}

    def save_checkpoint(self, model, budget: float) -> str | None:
        if self.out is None:
            return None
        name = f"budget_{budget:.6g}.keras"
        with atomic_path(self.out / name) as tmp:
            copy_model(model).save(tmp)  # without the optimizer's state
        return name

    def save(self, model, index, rounds, checkpoints) -> None:
        if self.out is None:
            return
        with atomic_path(self.out / "current.keras") as tmp:
            copy_model(model).save(tmp)
        atomic_write_text(self.out / "trajectory.json", json.dumps({
            "settings": self.settings, "index": index, "rounds": rounds,
            "checkpoints": {repr(float(b)): c for b, c in checkpoints.items()}}, indent=1))

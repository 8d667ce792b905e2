"""The thorough comparison: gradual prune-retrain trajectories, fine-tuned to saturation.

:func:`compare_gradual` is the frontier protocol (:mod:`subnet.protocol`) for one parent, in
the shape of :func:`subnet.compare`'s result, so ``python -m subnet.analyze --protocol thorough``
answers with it and reports it as it reports the quick comparison. For every method and seed:
one :func:`~subnet.gradual.prune_gradually` trajectory through every budget (the criterion
re-measured on the current subnetwork each round, retraining between rounds, distilled from the
parent's test-time-dropout ensemble when it has dropout), then each checkpoint fine-tuned with
early stopping on a validation split held out of the training images. Units, early stopping and
the choice of the smallest subnetwork are decided on that split; the test set is measured once
per network, at the end. Each row also carries a Scratch-E control: the same widths, freshly
initialised and trained for the parent-equivalent epochs of the protocol with the same early
stopping.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from subnet.cells import CellStore, read_json
from subnet.cli import progress_bar
from subnet.data import as_dataset
from subnet.distributed import LocalExecutor
from subnet.errors import InputError
from subnet.methods import accepted, cache_name, resolve
from subnet.models import model_bytes

__all__ = ["METHODS", "compare_gradual", "finetune_to_saturation", "gradual_cell",
           "smallest_on_validation"]

#: The methods the thorough protocol runs (:mod:`subnet.methods`).
METHODS = accepted("thorough")


def compare_gradual(model, dataset, methods: Sequence[str], protocol, *, out=None,
                    models_dir: str | os.PathLike | None = None, teacher_model=None,
                    progress: bool = True, executor=None):
    """Compares methods on the frontier protocol; returns a :class:`~subnet.Comparison`.

    Args:
        model: The parent, deterministic (dropout off), a ``keras.Model`` classifier.
        dataset: A :class:`~subnet.data.Dataset` with a training split, or
            ``((x_train, y_train), (x_test, y_test))`` as ``keras.datasets``' ``load_data()``
            returns it, or ``(train, test)`` as ``tf.data.Dataset`` objects of (examples, labels)
            (:func:`~subnet.data.as_dataset`).
        methods: Criteria among :data:`METHODS` (an old key, :data:`subnet.methods.RENAMED`,
            reads as the key it has now).
        protocol: A :class:`~subnet.protocol.Protocol` (``Protocol.preset("thorough")``); its
            budgets, seeds, validation size, fine-tuning, distillation, allocation, step and
            retraining are used.
        out: Folder for the trajectories and the resumable state (None: a temporary folder).
            A rerun resumes it if the protocol, parent, data and teacher are the same, and is
            refused otherwise (its rows would mix with the new ones); one written before a
            method's rename resumes.
        models_dir: Where the fine-tuned subnetworks are saved (as ``compare`` names them).
        teacher_model: The parent with its dropout, for the ensemble teacher (None: no
            distillation, or the deterministic parent when ``protocol.teacher_passes`` is 0).
        progress: Progress bars on stderr.
        executor: Where the cells (one criterion's trajectory for one seed, with its
            fine-tuned checkpoints and their Scratch-E controls) run (:mod:`subnet.distributed`):
            None runs them here in turn; a :class:`~subnet.distributed.ProcessExecutor` in
            worker processes; a :class:`~subnet.distributed.RayExecutor` as Ray tasks. The
            rows are the same, in one order.

    Returns:
        A :class:`~subnet.comparison.Comparison` whose rows have ``accuracy_oneshot`` (test
        accuracy at the end of the trajectory), ``accuracy_finetuned`` (after fine-tuning),
        ``val_accuracy``, ``widths``, ``flops``, ``params``, ``allocation``, ``model_file`` and
        ``scratch_accuracy`` (the Scratch-E control of the same widths).

    Raises:
        InputError: If a method is unknown, the dataset has no training split, the protocol
            holds out no validation split, or ``out`` holds rows made otherwise.
    """
    import tempfile

    from subnet.comparison import Comparison, model_file_name
    from subnet.extraction import accuracy, model_cost
    from subnet.protocol import validation_split
    from subnet.record import data_fingerprint, model_fingerprint
    from subnet.results import ComparisonRow, Dense
    from subnet.train import teacher_probabilities

    dataset = as_dataset(dataset)
    methods = list(dict.fromkeys(resolve(m) for m in methods))
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise InputError(f"Methods {unknown or list(methods)} cannot run on the thorough "
                         f"protocol; choose among {', '.join(METHODS)}.")
    if dataset.x_train is None:
        raise InputError(f"Dataset {dataset.name!r} has no training split; the thorough "
                         "protocol retrains and fine-tunes on it.")
    if not protocol.validation:
        raise InputError("The thorough protocol decides on a validation split: give the "
                         "protocol a validation size.")
    size = protocol.validation
    if isinstance(size, int) and size >= len(dataset.x_train) // 2:
        size = 0.1  # a small training split: hold out a tenth rather than most of it
    train, validation, info = validation_split(dataset, size, seed=protocol.validation_seed)
    work = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="subnet-frontier-"))
    work.mkdir(parents=True, exist_ok=True)
    teacher = None
    if protocol.teacher_passes is not None:
        source = teacher_model if protocol.teacher_passes > 0 and teacher_model is not None \
            else model
        passes = protocol.teacher_passes if source is teacher_model else 0
        teacher = teacher_probabilities(source, train.x_train, passes=passes, seed=0)
    saturation = dict(epochs=protocol.finetune_epochs, patience=protocol.patience,
                      learning_rate=protocol.learning_rate, temperature=protocol.temperature,
                      distill_weight=protocol.distill_weight)
    dense = {"accuracy": accuracy(model, dataset.x_test, dataset.y_test), **model_cost(model),
             "val_accuracy": accuracy(model, *validation)}
    # The rows (work/rows.json, resumed only if made by the same protocol, parent, data and
    # teacher: a row's key is its method, budget and seed), in one order whatever order the
    # cells finish in: methods as given, seeds, budgets from the largest.
    made = json.loads(json.dumps({
        "protocol": protocol.to_dict(), "model": model_fingerprint(model),
        "data": dataset.fingerprint(),  # the test set; the training set:
        "train": data_fingerprint(dataset.x_train, dataset.y_train),
        "teacher": model_fingerprint(teacher_model) if teacher is not None and
        teacher_model is not None and protocol.teacher_passes else None}))
    order = {m: i for i, m in enumerate(methods)}
    store = CellStore(work / "rows.json", files=models_dir, config=made,
                      read=lambda path: _read_rows(path, made), what="thorough comparison",
                      key=lambda r: (r["method"], r["budget_flops_fraction"], r["seed"]),
                      order=lambda r: (order.get(r["method"], len(order)), r["seed"],
                                       -r["budget_flops_fraction"]))
    store.save()  # what made the rows, from the start (an older file gets it now)
    budgets = sorted({float(b) for b in protocol.budgets if b < 1}, reverse=True)
    executor = LocalExecutor() if executor is None else executor
    remote = executor.name != "local"
    job = executor.put({
        "model": model_bytes(model) if remote else model, "train": train,
        "validation": validation, "test": (dataset.x_test, dataset.y_test), "teacher": teacher,
        "protocol": protocol, "saturation": saturation, "work": str(work),
        "models_dir": None if models_dir is None else str(models_dir)})
    cells = [(method, int(seed), [b for b in budgets if (method, b, seed) not in store])
             for method in methods for seed in protocol.seeds]
    cells = [cell for cell in cells if cell[2]]
    bar = progress_bar(len(methods) * len(protocol.seeds) * len(budgets),
                       "thorough comparison", "subnetwork", progress, initial=len(store))
    try:
        for _, new_rows in executor.map_unordered(gradual_cell,
                                                  [(job, *cell) for cell in cells]):
            for row in new_rows:
                data = row.pop("model_bytes", None)
                if data is not None:
                    row["model_file"] = str(store.write_file(model_file_name(
                        row["method"], row["budget_flops_fraction"], row["seed"]), data))
            store.add(new_rows)
            bar.update(len(new_rows))
    finally:
        bar.close()
    config = {"protocol": protocol.to_dict(), "methods": list(methods), "validation": info,
              "budgets": budgets, "seeds": list(protocol.seeds),
              "finetune_epochs": protocol.finetune_epochs}
    return Comparison(rows=tuple(map(ComparisonRow.from_dict, store.rows)),
                      dense=Dense.from_dict(dense), config=config)


def _read_rows(path, made: Mapping) -> dict:
    """What a ``rows.json`` holds: ``{"config": what made the rows, "rows": [...]}``. A file
    written before the rows carried what made them (a list of rows) is taken as made by
    ``made``, as it was then; a row written before the method's rename names it as it is now
    (:data:`subnet.methods.RENAMED`)."""
    data = read_json(path)
    if isinstance(data, list):
        data = {"config": made, "rows": data}
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data["rows"] = [{**row, "method": resolve(row["method"])}
                        if isinstance(row, Mapping) and isinstance(row.get("method"), str)
                        else row for row in data["rows"]]
    return data


def _trajectory_folder(work: Path, method: str, seed: int) -> Path:
    """``{method}_s{seed}`` under the work folder; one saved under the method's old key
    (:data:`subnet.methods.RENAMED`) is resumed where it is."""
    folder, old = work / f"{method}_s{seed}", work / f"{cache_name(method)}_s{seed}"
    return old if not folder.exists() and old.exists() else folder


def gradual_cell(job: Mapping, method: str, seed: int, budgets: Sequence[float]) -> list:
    """One cell of :func:`compare_gradual` (an executor's task): one criterion's gradual
    prune-retrain trajectory for one seed, each of ``budgets``' checkpoints fine-tuned to
    saturation beside its Scratch-E control. Returns the rows; a subnetwork to keep travels back
    as ``.keras`` bytes in ``row["model_bytes"]`` (the driver writes it).

    The trajectory is kept (and resumed) under the job's work folder, ``{method}_s{seed}``.
    """
    from subnet.controls import scratch
    from subnet.extraction import accuracy, copy_model
    from subnet.gradual import prune_gradually
    from subnet.models import load_model, model_from_bytes

    model = job["model"]
    if isinstance(model, bytes):
        model = model_from_bytes(model)
    train, validation, test = job["train"], job["validation"], job["test"]
    protocol, saturation, teacher = job["protocol"], job["saturation"], job["teacher"]
    folder = _trajectory_folder(Path(job["work"]), method, seed)
    trajectory = prune_gradually(
        model, train, method, budgets, step=protocol.step,
        retrain_epochs=protocol.retrain_epochs, allocation=protocol.allocation,
        validation=validation, teacher=teacher, temperature=protocol.temperature,
        distill_weight=protocol.distill_weight, learning_rate=protocol.learning_rate,
        seed=seed, out=folder, progress=False)
    rows = []
    for budget in budgets:
        point = trajectory.checkpoints[budget]
        small = load_model(folder / point["file"])
        oneshot = accuracy(small, *test)
        tuned = finetune_to_saturation(small, train, validation, teacher=teacher, seed=seed,
                                       **saturation)
        fresh = scratch(small, seed=seed + protocol.scratch_seed_offset)
        control = finetune_to_saturation(fresh, train, validation, seed=seed, **saturation)
        row = {"method": method, "budget_flops_fraction": budget, "seed": int(seed),
               "allocation": protocol.allocation, "widths": point["widths"],
               "flops": int(point["flops"]), "params": int(point["params"]),
               "accuracy_oneshot": oneshot, "accuracy_finetuned": accuracy(small, *test),
               "val_accuracy": accuracy(small, *validation),
               "finetune_epochs_run": tuned["epochs_run"],
               "scratch_accuracy": accuracy(fresh, *test),
               "scratch_val_accuracy": accuracy(fresh, *validation),
               "scratch_epochs_run": control["epochs_run"], "model_file": None}
        if job["models_dir"] is not None:
            row["model_bytes"] = model_bytes(copy_model(small))  # no optimizer state
        rows.append(row)
    return rows


def finetune_to_saturation(model, train, validation, *, epochs: float, patience: int | None,
                           learning_rate: float = 1e-3, teacher=None, temperature: float = 4.0,
                           distill_weight: float = 0.9, seed: int = 0) -> dict:
    """Fine-tunes ``model`` for at most ``epochs``, stopping early on the validation split.

    Args:
        model: The ``keras.Model`` to train, in place.
        train: A :class:`~subnet.data.Dataset` whose training split is trained on.
        validation: ``(x_val, y_val)``, held out of ``train``.
        epochs: Most epochs; below one, that fraction of an epoch without early stopping.
        patience: Epochs without a better validation accuracy before stopping (None: all).
        learning_rate: Adam's initial learning rate (cosine decay to 0).
        teacher: Teacher probabilities on the training split, or None (labels only).
        temperature: Distillation temperature.
        distill_weight: Weight of the distillation term.
        seed: Seed of the shuffling.

    Returns:
        :func:`subnet.train.fit`'s history.
    """
    from subnet.train import fit

    options = dict(learning_rate=learning_rate, seed=seed, progress=False,
                   validation=validation, teacher=teacher, temperature=temperature,
                   distill_weight=distill_weight)
    if epochs >= 1:
        return fit(model, train.x_train, train.y_train, epochs=int(epochs), patience=patience,
                   **options)
    return fit(model, train.x_train, train.y_train,
               examples=max(1, int(round(epochs * len(train.x_train)))), **options)


def smallest_on_validation(rows: Sequence[dict], reference: float, tolerance: float) -> dict:
    """{method: the smallest budget whose mean *validation* accuracy is within ``tolerance``
    of ``reference`` (the parent's validation accuracy)}, as chosen without the test set."""
    out = {}
    for method in sorted({r["method"] for r in rows}):
        by_budget: dict = {}
        for r in rows:
            if r["method"] == method:
                by_budget.setdefault(r["budget_flops_fraction"], []).append(r["val_accuracy"])
        ok = [b for b, v in by_budget.items() if np.mean(v) >= reference - tolerance]
        if ok:
            out[method] = min(ok)
    return out

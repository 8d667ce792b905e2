"""Fair comparison of subnetworks: budgets × methods × seeds, one-shot and fine-tuned.

Following Blalock et al. (2020), every method gets the same budgets (a curve, not a point), the
same fine-tuning budget and several seeds, and the comparison always includes a random-units
control and magnitude baselines: structured (L1 filter/neuron magnitude, extracted the same way)
and unstructured (TFMOT, pruned to the same number of nonzero weights, keeping its shape). Units
are chosen on held-out *training* examples, never on the test set the accuracies are reported on.

Results stream into a JSON file cell by cell, written atomically; a rerun skips finished cells.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from subnet._io import atomic_write_text
from subnet.cells import CellStore
from subnet.controls import reinitialized
from subnet.data import as_dataset
from subnet.distributed import LocalExecutor
from subnet.errors import InputError, InputTypeError
from subnet.extraction import (
    Budget,
    ExtractionMismatch,
    accuracy,
    as_keep_set,
    copy_model,
    extract,
    finetune,
    keep_sets,
    measure,
    model_cost,
    recalibrate_batchnorm,
)
from subnet.keep import KeepProbabilities
from subnet.methods import METHODS, accepted, resolve
from subnet.models import model_bytes, model_from_bytes
from subnet.results import (
    SCHEMA_VERSION,
    ComparisonRow,
    Dense,
    check_schema,
    import_pandas,
)
from subnet.results_schema import upgrade_comparison
from subnet.validation import check_fraction, check_int

__all__ = ["ALLOCATION", "Comparison", "compare", "run_cell"]

# How each structured method spreads a budget over sites. ``banzhaf_iterative`` prunes in
# re-measured steps (subnet.iterative), the same fraction of every site at each step;
# ``banzhaf_single``
# keeps the top units of one record at keep 0.5 over all sites at once (scores of mask statistics
# and of ablation are in the metric's units, comparable across layers); weight magnitudes,
# activations and Taylor scores are not comparable across layers, so those methods keep the same
# fraction of every layer.
ALLOCATION = {m.key: m.allocation for m in METHODS
              if "quick" in m.protocols and m.allocation is not None}
STRUCTURED = tuple(ALLOCATION)
# Methods built on ``reference_method``'s subnetwork: TFMOT prunes the dense model to its number
# of nonzero weights; ``reinit`` trains a network of its widths from a fresh initialisation
# (is the subnetwork special, or only its shape?).
REFERENCED = accepted("quick", referenced=True)


# The columns to_frame() puts first, in this order (rows have more, which follow).
ROW_COLUMNS = ("method", "budget_flops_fraction", "seed", "params", "flops", "accuracy_oneshot",
               "accuracy_finetuned")
SUMMARY_COLUMNS = ("method", "budget_flops_fraction", "seeds", "params", "flops",
                   "accuracy_oneshot_mean", "accuracy_oneshot_std", "accuracy_finetuned_mean",
                   "accuracy_finetuned_std")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The results of :func:`compare`: one row per (method, budget, seed).

    Frozen: the rows are a tuple of typed :class:`~subnet.results.ComparisonRow` and the dense
    model a :class:`~subnet.results.Dense`, the types :func:`subnet.load_results` reads a
    results.json into; each also reads as the dict it is in JSON (``row["method"]``,
    ``row.get("measure")``). Rows and ``dense`` may be given as dicts: they are checked and
    typed. The JSON form (:meth:`to_dict`, :meth:`save`) is described by ``$defs/comparison``
    in ``subnet/results.schema.json``.

    Attributes:
        rows: Rows with ``method``, ``budget_flops_fraction``, ``seed``, ``params``,
            ``flops``, ``accuracy_oneshot`` and ``accuracy_finetuned`` (fractions; the last is
            None without fine-tuning); most also have ``widths`` and, for the first seed,
            ``measure`` (size and latency).
        dense: The dense model's accuracy, parameters, FLOPs, size and latency.
        config: The settings that produced the rows.

    Raises:
        InputTypeError: If ``rows`` is not a list of dicts, or ``dense`` or ``config`` is not a
            dict.
        InputError: If a row or ``dense`` lacks a field or has one of the wrong type (the
            message names the key path).
    """

    rows: tuple[ComparisonRow, ...]
    dense: Dense
    config: Mapping

    def __post_init__(self):
        if not isinstance(self.rows, (list, tuple)) or \
                not all(isinstance(r, Mapping) for r in self.rows):
            raise InputTypeError(f"`rows` must be a list of dicts. Received: "
                                 f"{type(self.rows).__name__}")
        for name in ("dense", "config"):
            if not isinstance(getattr(self, name), Mapping):
                raise InputTypeError(f"`{name}` must be a dict. Received: "
                                     f"{type(getattr(self, name)).__name__}")
        object.__setattr__(self, "rows", tuple(
            r if isinstance(r, ComparisonRow) else ComparisonRow.from_dict(r) for r in self.rows))
        if not isinstance(self.dense, Dense):
            object.__setattr__(self, "dense", Dense.from_dict(self.dense))
        object.__setattr__(self, "config", dict(self.config))

    def to_dict(self) -> dict:
        """JSON-ready form, with ``schema_version``; :meth:`from_dict` reads it back."""
        return {"schema_version": SCHEMA_VERSION, "dense": self.dense.to_dict(),
                "config": copy.deepcopy(self.config), "rows": [r.to_dict() for r in self.rows]}

    @classmethod
    def from_dict(cls, data: Mapping) -> Comparison:
        """Rebuilds a comparison from :meth:`to_dict`'s dict (or results.json's
        ``comparison``, whose ``summary`` is ignored: it is computed from the rows).

        A dict without ``schema_version`` is version 1; an older version is upgraded
        (:func:`~subnet.results_schema.upgrade_comparison`: ``banzhaf`` rows are
        ``banzhaf_iterative``).

        Raises:
            InputTypeError: If ``data`` is not a dict.
            InputError: If a field is missing, or of the wrong type or range (the message names
                the key path, e.g. ``comparison['rows'][3]['accuracy_oneshot']``), or
                ``schema_version`` is newer than this subnet reads.
        """
        data = upgrade_comparison(data)
        check_schema(data, "comparison", "comparison")
        if "config" not in data:
            raise InputError("comparison['config'] is required but missing.")
        # checked as a whole above: typed without checking each part again
        return cls(rows=tuple(ComparisonRow._build(row) for row in data["rows"]),
                   dense=Dense._build(data["dense"]), config=copy.deepcopy(data["config"]))

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the comparison as JSON, atomically."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Comparison:
        """Reads what :meth:`save` wrote.

        Raises:
            InputError: If the file is missing, not JSON or not a comparison.
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"Could not read a comparison from '{path}': {err}") from err
        try:
            return cls.from_dict(data)
        except InputError as err:
            raise InputError(f"Could not read a comparison from '{path}': {err}") from err

    def to_frame(self, summary: bool = False):
        """The rows (or the :meth:`summary`) as a table.

        Args:
            summary: One row per (method, budget) with means and standard deviations over
                seeds, instead of one per (method, budget, seed).

        Returns:
            A ``pandas.DataFrame``. Rows: the columns :data:`ROW_COLUMNS` first, then the
            others the rows have, nested dicts flattened with dots (``measure.file_bytes``,
            ``widths.dense``); missing values are NaN. Summary: the columns
            :data:`SUMMARY_COLUMNS`.

        Raises:
            ImportError: If pandas is not installed.
        """
        pd = import_pandas()
        if summary:
            return pd.DataFrame(self.summary(), columns=list(SUMMARY_COLUMNS))
        frame = pd.json_normalize([r.to_dict() for r in self.rows], sep=".") if self.rows \
            else pd.DataFrame()
        rest = [c for c in frame.columns if c not in ROW_COLUMNS]
        return frame.reindex(columns=list(ROW_COLUMNS) + rest)

    def summary(self) -> list[dict]:
        """Mean and standard deviation over seeds of each (method, budget)."""
        groups: dict = {}
        for row in self.rows:
            groups.setdefault((row["method"], row["budget_flops_fraction"]), []).append(row)
        out = []
        for (method, budget), rows in sorted(groups.items(), key=lambda item: (item[0][0],
                                                                               -item[0][1])):
            entry = {"method": method, "budget_flops_fraction": budget, "seeds": len(rows),
                     "params": int(np.mean([r["params"] for r in rows])),
                     "flops": int(np.mean([r["flops"] for r in rows]))}
            for key in ("accuracy_oneshot", "accuracy_finetuned"):
                values = [r[key] for r in rows if r.get(key) is not None]
                entry[f"{key}_mean"] = float(np.mean(values)) if values else None
                entry[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out.append(entry)
        return out


def _cell_key(method: str, budget: float, seed: int) -> str:
    return f"{method}|{budget:.10g}|{seed}"


def _row_key(row: Mapping) -> str:
    return _cell_key(row["method"], row["budget_flops_fraction"], row["seed"])


def _stored(store: CellStore, key: str) -> dict:
    """A row ``store`` holds: the reference method's, whose cells ran before the cells built on
    it."""
    row = store.get(key)
    assert row is not None, f"no row {key} to build on"
    return row


def _read_comparison(path: str | os.PathLike) -> dict:
    """A comparison file's dict, checked (:meth:`Comparison.load`'s errors)."""
    return Comparison.load(path).to_dict()


def compare(model, dataset,
            methods: Sequence[str] = ("banzhaf_iterative", "magnitude", "random", "tfmot"),
            budgets: Sequence[float] = (1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32),
            seeds: Sequence[int] = (0, 1, 2), *, finetune_epochs: float = 1.0,
            selection_examples: int = 2000, n_masks: int = 2000, steps_per_halving: int = 4,
            step_masks: int = 1000, compensate: bool = True, rate=None,
            reference_method: str = "banzhaf_iterative", out: str | os.PathLike | None = None,
            measure_latency: bool = True, latency_repeats: int = 20,
            models_dir: str | os.PathLike | None = None, dense_finetuned: bool = True,
            dense_accuracy: float | None = None, callbacks: Sequence | None = None,
            progress: bool = True, executor=None) -> Comparison:
    """Compares subnetworks chosen by several methods at several FLOP budgets and seeds.

    For each budget (a fraction of the dense model's FLOPs) and seed, every structured method
    chooses units on the same held-out training examples (``banzhaf_iterative``: pruning in
    re-measured steps, :func:`~subnet.iterative.iterative_keep_sets`; the others: scores, then
    :func:`~subnet.extraction.keep_sets`), the subnetwork is extracted (kept units rescaled by
    units/kept when ``compensate``, the same rule for every method), BatchNormalization
    statistics are re-estimated on the held-out examples, its test accuracy measured (one-shot),
    fine-tuned for ``finetune_epochs`` and measured again. ``tfmot`` prunes the
    dense model by magnitude to the same number of nonzero weights as ``reference_method``'s
    subnetwork, with the same fine-tuning budget.

    Args:
        model: The trained ``keras.Model``.
        dataset: A :class:`~subnet.data.Dataset` with training and test data, or
            ``((x_train, y_train), (x_test, y_test))`` as ``keras.datasets``' ``load_data()``
            returns it, or ``(train, test)`` as ``tf.data.Dataset`` objects of (examples, labels)
            (:func:`~subnet.data.as_dataset`).
        methods: Any of ``banzhaf_iterative`` (iterative mask statistics), ``banzhaf_single``
            (the top units of one record at the sites' dropout rates, global allocation),
            ``ablation``, ``magnitude``, ``random``, ``taylor``, ``apoz``, ``activation``,
            ``tfmot`` and ``reinit`` (:mod:`subnet.methods`); ``banzhaf``, the old key of
            ``banzhaf_iterative``, still reads as it.
        budgets: FLOP fractions in (0, 1].
        seeds: Seeds (record, random scores, fine-tuning order).
        finetune_epochs: Fine-tuning budget in epochs of the training data (fractions allowed);
            0 skips fine-tuning.
        selection_examples: Training examples (the last ones) used to choose units.
        n_masks: Masks recorded for ``banzhaf_single``.
        steps_per_halving: Steps per halving of the FLOPs for ``banzhaf_iterative``.
        step_masks: Masks recorded at each of those steps.
        compensate: Rescale kept units by units/kept at extraction (all methods alike).
        rate: Dropout rate(s) for masks, where the model's sites have no Dropout after them,
            or a :class:`~subnet.KeepProbabilities` (its keep probabilities and whether kept
            units are rescaled by 1/q, as :func:`subnet.record_masks` takes it).
        reference_method: The structured method whose parameter count TFMOT matches.
        out: JSON file the results stream into; an existing one is resumed (one written by an
            older subnet too: its rows are upgraded, :meth:`Comparison.from_dict`).
        measure_latency: Measure size and latency of each subnetwork (first seed only).
        latency_repeats: Timed calls of each model when measuring latency (the median is
            reported; fewer is faster and noisier).
        models_dir: If given, the first seed's structured subnetworks (fine-tuned, if they were)
            are saved there as ``{method}_{budget}_{seed}.keras``, atomically.
        dense_finetuned: Also fine-tune a copy of the whole model with the same budget and
            seeds (``dense["finetuned"]``): the fair reference for the fine-tuned subnetworks,
            which have had that much more training than the model they came from.
        dense_accuracy: The whole model's accuracy on ``dataset``'s test set, if it was
            already measured (a fraction; None measures it).
        callbacks: Keras callbacks given to every fine-tuning run here (the subnetworks', the
            ``reinit`` networks' and the whole model's copies), as ``Model.fit`` takes them;
            TFMOT's fine-tuning runs in its own process without them. With an executor of
            other processes they travel there pickled.
        progress: Print one line per finished cell to stderr.
        executor: Where the cells run (:mod:`subnet.distributed`): None runs them here, one
            after another; a :class:`~subnet.distributed.ProcessExecutor` in worker
            processes; a :class:`~subnet.distributed.RayExecutor` runs them as Ray tasks
            (the whole model fine-tuned per seed, each structured method per seed, then the
            TFMOT and ``reinit`` cells, which need the reference method's rows). Each cell has
            its own seed; this process writes the rows as they arrive, in one order.

    Returns:
        A :class:`Comparison`.

    Raises:
        ValueError: If a method or budget is invalid, or the dataset has no training data.
    """
    dataset = as_dataset(dataset)
    methods = list(dict.fromkeys(resolve(m) for m in methods))
    reference_method = resolve(reference_method)
    unknown = sorted(set(methods) - set(STRUCTURED) - set(REFERENCED))
    if unknown:
        raise InputError(f"Unknown comparison methods {unknown}. Known: "
                         f"{sorted(STRUCTURED + REFERENCED)}.")
    budgets = [float(b) for b in budgets]
    if not budgets or any(not 0 < b <= 1 for b in budgets):
        raise InputError(f"Budgets must be FLOP fractions in (0, 1]. Received: {budgets}")
    if not seeds:
        raise InputError("Give at least one seed.")
    if dataset.x_train is None or len(dataset.x_train) <= selection_examples:
        raise InputError(f"The dataset needs more than {selection_examples} training examples "
                         "(units are chosen on held-out training examples).")
    for method in set(REFERENCED) & set(methods):
        if reference_method not in methods or reference_method not in STRUCTURED:
            raise InputError(f"`{method}` is built on the subnetwork of `reference_method`="
                             f"{reference_method!r}, which is not among the structured methods "
                             f"{[m for m in methods if m in STRUCTURED]}.")
    check_int("latency_repeats", latency_repeats, low=1)
    if dense_accuracy is not None:
        check_fraction("dense_accuracy", dense_accuracy)
    n_train = len(dataset.x_train)
    tune_examples = int(round(finetune_epochs * n_train))
    config = {"methods": list(methods), "budgets": budgets, "seeds": [int(s) for s in seeds],
              "finetune_epochs": finetune_epochs, "selection_examples": selection_examples,
              "n_masks": n_masks, "steps_per_halving": steps_per_halving,
              "step_masks": step_masks, "compensate": compensate,
              "reference_method": reference_method, "dense_finetuned": dense_finetuned,
              "latency_repeats": int(latency_repeats),
              "allocation": {m: ALLOCATION[m] for m in methods if m in ALLOCATION}}
    # The rows, resumed from `out` (refused if it was made with other settings), saved after
    # each cell, in one order whatever order the cells finished in: seeds, budgets, methods as
    # given.
    order: dict[str, dict] = {"seed": {int(s): i for i, s in enumerate(seeds)},
                              "budget": {b: i for i, b in enumerate(budgets)},
                              "method": {m: i for i, m in enumerate(methods)}}
    store = CellStore(out, key=_row_key, config=config, read=_read_comparison, indent=1,
                      files=models_dir,
                      order=lambda r: (order["seed"].get(r["seed"], len(seeds)),
                                       order["budget"].get(r["budget_flops_fraction"], 0),
                                       order["method"].get(r["method"], len(methods))))
    executor = LocalExecutor() if executor is None else executor
    dense = store.fields["dense"] if store.resumed else {
        "accuracy": float(accuracy(model, dataset.x_test, dataset.y_test)
                          if dense_accuracy is None else dense_accuracy), **model_cost(model),
        **({"measure": measure(model, repeats=latency_repeats).to_dict()}
           if measure_latency else {})}
    store.fields.update(schema_version=SCHEMA_VERSION, dense=dense)
    store.save()

    def log(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    def add(rows: list) -> None:
        for n, row in enumerate(rows, start=len(store) + 1):
            data = row.pop("model_bytes", None)
            if data is not None:
                row["model_file"] = str(store.write_file(model_file_name(
                    row["method"], row["budget_flops_fraction"], row["seed"]), data))
            tuned = row["accuracy_finetuned"]
            log(f"[{n}] {row['method']} flops "
                f"{row['budget_flops_fraction']:.4g} seed {row['seed']}: one-shot "
                f"{row['accuracy_oneshot']:.4f}, fine-tuned "
                f"{'-' if tuned is None else format(tuned, '.4f')}")
        store.add(rows)

    settings = {"selection_examples": selection_examples, "n_masks": n_masks,
                "steps_per_halving": steps_per_halving, "step_masks": step_masks,
                "compensate": compensate, "rate": rate, "tune_examples": tune_examples,
                "callbacks": list(callbacks or []),
                "measure_seed": int(seeds[0]) if measure_latency else None,
                "latency_repeats": int(latency_repeats),
                "models_seed": int(seeds[0]) if models_dir is not None else None,
                "progress": progress and executor.name == "local",
                "dense_accuracy": dense["accuracy"]}
    remote = executor.name != "local"
    job = executor.put({"model": model_bytes(model) if remote else model, "dataset": dataset,
                        "settings": settings})
    # First the whole model fine-tuned (each seed) and every structured method's rows (each
    # seed: its units chosen once for all budgets); then the methods built on the reference
    # method's subnetworks, which need its rows.
    cells: list[tuple] = [("dense", int(seed)) for seed in seeds
                          if tune_examples > 0 and dense_finetuned and "finetuned" not in dense]
    for seed in seeds:
        for method in [m for m in methods if m in STRUCTURED]:
            missing = [b for b in budgets if _cell_key(method, b, seed) not in store]
            if missing:
                cells.append(("structured", int(seed), method, missing))
    log(f"compare: {len(cells)} cells on {executor.name}")
    tuned_dense = {}
    for i, result in executor.map_unordered(run_cell, [(job, *cell) for cell in cells]):
        if cells[i][0] != "dense":
            add(result)
            continue
        tuned_dense[cells[i][1]] = result
        if len(tuned_dense) == len(seeds):
            values = [tuned_dense[int(seed)] for seed in seeds]
            dense["finetuned"] = {
                "seeds": [int(s) for s in seeds], "accuracy": values,
                "accuracy_mean": float(np.mean(values)),
                "accuracy_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
            add([])  # saves it
    cells = []
    for seed in seeds:
        todo = {m: [b for b in budgets if _cell_key(m, b, seed) not in store]
                for m in REFERENCED if m in methods}
        if not any(todo.values()):
            continue
        reference = {b: _stored(store, _cell_key(reference_method, b, seed)) for b in budgets}
        cells += [("reinit", int(seed), b, reference[b]["widths"]) for b in todo.get("reinit", [])]
        if todo.get("tfmot"):
            cells.append(("tfmot", int(seed), todo["tfmot"],
                          [int(reference[b]["params"]) for b in todo["tfmot"]]))
    for _, result in executor.map_unordered(run_cell, [(job, *cell) for cell in cells]):
        add(result)
    return Comparison(rows=tuple(map(ComparisonRow.from_dict, store.rows)),
                      dense=Dense.from_dict(dense), config=config)


def run_cell(job: Mapping, kind: str, seed: int, *args):
    """One cell of :func:`compare` (an executor's task): ``kind`` is ``"dense"`` (the whole
    model fine-tuned: its test accuracy), ``"structured"`` (``method``, ``budgets``: the rows of
    one structured method at those budgets), ``"reinit"`` (``budget``, ``widths``: its row) or
    ``"tfmot"`` (``budgets``, ``nonzero``: its rows). Subnetworks to keep travel back as
    ``.keras`` bytes in ``row["model_bytes"]``, written by the driver.

    ``job`` holds the model (or, for a worker of another process, its ``.keras`` bytes:
    :func:`subnet.models.model_from_bytes`), the dataset and :func:`compare`'s settings.
    """
    model = job["model"]
    if isinstance(model, bytes):
        model = model_from_bytes(model)
    dataset, settings = job["dataset"], job["settings"]
    tune = settings["tune_examples"]
    if kind == "dense":
        tuned = finetune(copy_model(model), dataset, examples=tune, seed=seed, progress=False,
                         accuracy_before=settings["dense_accuracy"],
                         callbacks=settings["callbacks"])
        return tuned["accuracy_after"]
    if kind == "structured":
        return _structured_rows(model, dataset, settings, seed, *args)
    if kind == "reinit":
        return [_reinit_row(model, dataset, args[0], seed, args[1], tune,
                            settings["callbacks"])]
    budgets, nonzero = args
    pending = _start_tfmot(model, dataset, nonzero, seed, tune)
    try:
        pruned = pending.result() if pending is not None else [None] * len(budgets)
    finally:
        if pending is not None:
            pending.cancel()
    repeats = settings["latency_repeats"] if settings["measure_seed"] == seed else None
    return [_tfmot_row(model, dataset, budget, seed, n, tuned, repeats)
            for budget, n, tuned in zip(budgets, nonzero, pruned, strict=True)]


def _structured_rows(model, dataset, settings: Mapping, seed: int, method: str,
                     budgets: list) -> list:
    """One structured method's subnetworks at ``budgets`` for one seed: units chosen once (on
    the last ``selection_examples`` training examples), then each extracted, its
    BatchNormalization re-estimated, measured one-shot and fine-tuned."""
    from subnet.importance import estimate
    from subnet.iterative import iterative_keep_sets
    from subnet.record import temporary_record

    x_sel = dataset.x_train[-settings["selection_examples"]:]
    y_sel = dataset.y_train[-settings["selection_examples"]:]
    progress = settings["progress"]
    start = time.perf_counter()
    if method == "banzhaf_iterative":
        keeps = iterative_keep_sets(model, x_sel, y_sel, budgets,
                                    steps_per_halving=settings["steps_per_halving"],
                                    n_masks=settings["step_masks"], seed=seed, progress=progress)
    else:
        rate = settings["rate"]
        if method == "banzhaf_single":  # at the keep probabilities, and their rescaling
            with temporary_record(model, x_sel, y_sel, settings["n_masks"], seed=seed,
                                  rate=rate, progress=progress) as record:
                importance = estimate(record, "banzhaf")
        else:
            rates = rate.rates if isinstance(rate, KeepProbabilities) else rate
            options = {"rate": rates, **({"seed": seed} if method == "random" else {})}
            importance = estimate((model, x_sel, y_sel), method, **options)
        keeps = {b: keep_sets(importance, Budget.flops(b), model, allocation=ALLOCATION[method])
                 for b in budgets}
    if progress:
        print(f"{method}: units chosen in {time.perf_counter() - start:.1f} s", file=sys.stderr,
              flush=True)
    rows = []
    for budget in budgets:
        keep = keeps[budget]
        mismatch = None
        try:
            subnetwork, keep = extract(model, keep, check_x=dataset.x_test[:32],
                                       scale=keep.compensation if settings["compensate"]
                                       else None)
        except ExtractionMismatch as err:  # recorded for this subnetwork; the run goes on
            subnetwork, keep, mismatch = err.subnetwork, err.keep_set, err.to_dict()
            print(f"{method} at {budget:g}: {err}", file=sys.stderr, flush=True)
        recalibrate_batchnorm(subnetwork, x_sel)
        row = {"method": method, "budget_flops_fraction": budget, "seed": int(seed),
               "params": keep.params, "flops": keep.flops, "widths": keep.widths,
               "allocation": ALLOCATION[method],
               "accuracy_oneshot": accuracy(subnetwork, dataset.x_test, dataset.y_test)}
        if mismatch is not None:
            row["extraction_mismatch"] = mismatch
        _finetune_into(row, subnetwork, dataset, settings["tune_examples"], seed,
                       settings["callbacks"])
        if settings["measure_seed"] == seed:
            row["measure"] = measure(subnetwork, repeats=settings["latency_repeats"]).to_dict()
        if settings["models_seed"] == seed:
            row["model_bytes"] = model_bytes(copy_model(subnetwork))  # no optimizer state
        rows.append(row)
    return rows


def model_file_name(method: str, budget: float, seed: int) -> str:
    """The file name :func:`compare` saves a cell's subnetwork under in ``models_dir``."""
    return f"{method}_{budget:.6g}_{seed}.keras"


def _reinit_row(model, dataset, budget, seed, widths, tune_examples, callbacks=()) -> dict:
    """A network of the reference subnetwork's widths, re-initialised and trained with the same
    budget: one-shot is its accuracy at initialisation."""
    whole = as_keep_set(model, {})
    bits = {site.name: np.arange(site.units) < widths[site.name] for site in whole.sites}
    shaped, keep = extract(model, bits)
    fresh = reinitialized(shaped, seed)
    row = {"method": "reinit", "budget_flops_fraction": budget, "seed": int(seed),
           "params": keep.params, "flops": keep.flops, "widths": keep.widths,
           "allocation": "reference", "accuracy_oneshot": accuracy(fresh, dataset.x_test,
                                                                      dataset.y_test)}
    _finetune_into(row, fresh, dataset, tune_examples, seed, callbacks)
    return row


def _finetune_into(row: dict, model, dataset, tune_examples: int, seed: int,
                   callbacks=()) -> None:
    """Fine-tunes ``model`` (one-shot accuracy in ``row``) and records the result in ``row``;
    ``accuracy_finetuned`` is None when there is no fine-tuning budget."""
    row["accuracy_finetuned"] = None
    if tune_examples > 0:
        tuned = finetune(model, dataset, examples=tune_examples, seed=seed, progress=False,
                         accuracy_before=row["accuracy_oneshot"], callbacks=list(callbacks))
        row["accuracy_finetuned"] = tuned["accuracy_after"]
        row["finetune_seconds"] = round(tuned["seconds"], 1)


def _start_tfmot(model, dataset, nonzero: list[int], seed: int, tune_examples: int):
    """TFMOT's pruning with fine-tuning for each parameter count, started in one child process;
    None when there is no fine-tuning budget (the one-shot rows need no child)."""
    from subnet.baselines.tfmot import start_magnitude_prune

    if tune_examples <= 0:
        return None
    return start_magnitude_prune(model, dataset, nonzero=[int(n) for n in nonzero],
                                 examples=tune_examples, seed=seed)


def _tfmot_row(model, dataset, budget, seed, nonzero, tuned, latency_repeats) -> dict:
    """The TFMOT row: one-shot magnitude pruning to ``nonzero`` weights, and ``tuned`` (the
    child's ``(pruned model, info)``, or None without fine-tuning), measured in
    ``latency_repeats`` timed calls (None: not measured)."""
    from subnet.baselines.tfmot import kernel_sparsity, magnitude_oneshot

    sparsity = kernel_sparsity(model, nonzero)
    oneshot = magnitude_oneshot(model, sparsity)
    row = {"method": "tfmot", "budget_flops_fraction": budget, "seed": int(seed),
           "params": int(nonzero), "flops": int(model_cost(model)["flops"]),
           "dense_shape_params": int(model.count_params()), "sparsity": float(sparsity),
           "accuracy_oneshot": accuracy(oneshot, dataset.x_test, dataset.y_test),
           "accuracy_finetuned": None}
    if tuned is not None:
        pruned, info = tuned
        row["accuracy_finetuned"] = accuracy(pruned, dataset.x_test, dataset.y_test)
        row["nonzero_params"] = info["nonzero_params"]
        row["finetune_seconds"] = round(info["seconds"], 1)
        if latency_repeats is not None:
            row["measure"] = measure(pruned, repeats=latency_repeats).to_dict()
    return row

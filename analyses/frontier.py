"""How far does the blog's network really trim? The frontier protocol on one data set.

    python analyses/frontier.py [--dataset mnist] [--parents 0,1,2] [--jobs 2] [--quick]
        [--methods magnitude,taylor,banzhaf_iterative,random] [--allocations cost,uniform]
        [--budgets 0.5,0.25,0.125,0.1,0.0625,0.03125] [--out reports/frontier]

Everything is decided on a validation split held out of the training images (never trained on by
a parent or a subnetwork); the test set is measured once per network, at the end.

1. **Parents**: the blog's network (conv 20 - conv 50 - dense 500, dropout 0.5) trained for
   ``--parent-epochs`` on the training split less the validation split, one per ``--parents``
   seed; its weights at initialisation and after one epoch are kept for rewinding, and its
   test-time-dropout ensemble (``--teacher-passes`` passes) on the training split is the teacher.
2. **Trajectories**: for each parent, criterion (``--methods``) and allocation
   (``--allocations``), one gradual prune-retrain run (:func:`subnet.gradual.prune_gradually`)
   through every budget; each checkpoint is then fine-tuned to saturation (up to
   ``--finetune-epochs``, early stopping on the validation split after ``--patience`` epochs
   without gain, distilled from the parent's ensemble).
3. **Controls** at each of ``--control-budgets``, on the widths of the best trajectory of the
   first allocation (by validation accuracy; random units excluded):
   Scratch-E and Scratch-B (fresh initialisation; the parent's epochs, or its training FLOPs
   capped at 4x), rewinding to the parent's weights after one epoch, and the published shapes
   of this network trained from scratch with the same recipe.
4. **Statistics**: mean and SD over parents of test accuracy per method, allocation and budget;
   paired bootstrap tests (outcomes averaged over parents) between the best method and every
   other at each budget; the smallest subnetwork per method whose *validation* error is at most
   1 %, with its test error; and per curve the largest reduction within 0.5 points and within
   1.25x the error of the whole network fine-tuned the same way. The subnetworks of both
   targets (the 1 % one and the 1.25x one) are copied to ``--out/models/`` with their JSON.

Every unit of work (a parent, a trajectory, a control) is a cell cached under ``--work`` by what
made it, so an interrupted run redoes only what is missing; ``--jobs`` cells run side by side,
each in its own process with ``--threads`` threads. The script prints one JSON object last and
writes ``--out/results.json``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

# TensorFlow's oneDNN kernels on for this script (subnet leaves them off; see subnet.runtime for the
# heap corruption they cause training a 1x1 stride-2 convolution on one thread). The blog's
# network has no such layer: they train it 1.3-1.7x faster here, deterministically, and the
# committed cells since the Fashion-MNIST run's first half were made with them (each fine-tune
# records which kernels it ran on: `onednn`). Set TF_ENABLE_ONEDNN_OPTS=0 to run without.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from subnet.methods import accepted, cache_name, resolve  # noqa: E402  (light: no TensorFlow)

PUBLISHED = {  # conv1-conv2-dense widths of this network in the structured-pruning literature
    "Neklyudov et al. 2017 (SBP)": {"conv1": 3, "conv2": 18, "dense": 283},
    "Louizos et al. 2017 (BC-GHS)": {"conv1": 5, "conv2": 10, "dense": 16},
    "Louizos et al. 2017 (BC-GNJ)": {"conv1": 8, "conv2": 13, "dense": 13},
    "Louizos et al. 2018 (L0-sep)": {"conv1": 9, "conv2": 18, "dense": 25},
}
PUBLISHED_ERROR = {"Neklyudov et al. 2017 (SBP)": 0.0086, "Louizos et al. 2017 (BC-GHS)": 0.010,
                   "Louizos et al. 2017 (BC-GNJ)": 0.010, "Louizos et al. 2018 (L0-sep)": 0.010}
TARGET_ERROR = 0.01
MAX_MODEL_BYTES = 500_000  # subnetworks larger than this are described, not committed


def _parse(argv):
    from subnet.cli import ArgumentParser

    parser = ArgumentParser(prog="analyses/frontier.py", description=__doc__.split("\n\n")[0])
    arg = parser.add_argument
    arg("--dataset", default="mnist")
    arg("--parents", default="0,1,2", help="seeds of the parent networks, comma-separated")
    arg("--parent-epochs", type=int, default=12)
    arg("--validation", type=int, default=5000)
    arg("--teacher-passes", type=int, default=16)
    arg("--methods", default="magnitude,taylor,banzhaf_iterative,random",
        help="criteria (banzhaf, the old key of banzhaf_iterative, reads as it)")
    arg("--allocations", default="cost,uniform")
    arg("--budgets", default="0.5,0.25,0.125,0.1,0.0625,0.03125")
    arg("--step", type=float, default=0.25, help="fraction of the FLOPs removed per round")
    arg("--retrain-epochs", type=float, default=0.5, help="epochs of retraining per round")
    arg("--finetune-epochs", type=int, default=12)
    arg("--patience", type=int, default=3)
    arg("--uniform-methods", default="magnitude",
        help="the methods also run with the uniform allocation when --allocations has it")
    arg("--selection", type=int, default=2000,
        help="validation images the criteria score units on (the first N)")
    arg("--masks", type=int, default=200, help="masks per round for the mask statistics")
    arg("--controls", default="whole,scratch_e,scratch_b,rewind,published",
        help="whole: the parent itself fine-tuned with the same recipe (the reference every "
             "subnetwork is held to)")
    arg("--control-budgets", default="0.1,0.0625",
        help="budgets at which Scratch-E, Scratch-B and rewinding are trained")
    arg("--teacher", default="ensemble", choices=("ensemble", "none"),
        help="ensemble: every network (trajectories, fine-tuning, the whole, and the controls "
             "under --control-recipe same) is distilled from the parent's dropout ensemble; "
             "none: labels only, everywhere")
    arg("--control-recipe", default="same", choices=("same", "labels"),
        help="same: the controls get the subnetworks' recipe (the run's teacher, learning rate "
             "and schedule), trained to their whole budget without a patience cut and the "
             "checkpoint chosen on validation; rewinding gets the parent's remaining epochs. "
             "labels: the earlier recipe (labels only, early stopping), kept to reproduce "
             "reports/frontier*/")
    arg("--best-dense", default=None,
        help="a JSON of the parents' expected-pooling accuracies (analyses/blog_mechanism.py "
             "--parents writes expected_pooling_parents.json): every readout against the "
             "whole is also made against that network and against the better of the two per "
             "parent (the best dense predictor)")
    arg("--parents-from", default=None,
        help="a folder of trained parents (as --out/parents/) to start from instead of "
             "training them (default: --out/parents)")
    arg("--train-subset", type=int, default=None, help="first N training images (quick checks)")
    arg("--test-subset", type=int, default=None)
    arg("--quick", action="store_true", help="a small run that checks the pipeline in minutes")
    arg("--jobs", type=int, default=1)
    arg("--threads", type=int, default=None)
    arg("--work", default=None, help="heavy files (default out/analyses/frontier[_DATASET])")
    arg("--out", default=None, help="results and report (default reports/frontier[_DATASET])")
    arg("--partial", action="store_true",
        help="summarise the finished cells only (no training): a partial results.json and report")
    arg("--cell", default=None, help=argparse.SUPPRESS)  # run one cell (used by --jobs)
    args = parser.parse_args(argv)
    suffix = "" if args.dataset == "mnist" else f"_{args.dataset}"
    args.work = args.work or f"out/analyses/frontier{suffix}"
    args.out = args.out or f"reports/frontier{suffix}"
    if args.quick:
        args.parents, args.parent_epochs, args.validation = "0", 2, 1000
        args.teacher_passes, args.methods, args.allocations = 4, "magnitude,random", "cost"
        args.budgets, args.finetune_epochs, args.patience = "0.25,0.0625", 2, 1
        args.train_subset, args.test_subset = args.train_subset or 6000, args.test_subset or 2000
        args.controls, args.step, args.retrain_epochs = "scratch_e,rewind,published", 0.5, 0.25
        args.control_budgets, args.selection, args.masks = "0.0625", 500, 40
        args.work, args.out = args.work + "-quick", "out/analyses/frontier-quick-report"
    _check(args)
    return args


METHODS = accepted("thorough")  # subnet.methods: the methods the frontier protocol runs
ALLOCATIONS = ("cost", "uniform", "global", "joint")
CONTROLS = ("whole", "scratch_e", "scratch_b", "rewind", "published")
#: How the report's figure draws each control: marker and legend text.
CONTROL_MARKERS = {"whole": ("s", "the whole, fine-tuned the same way"),
                   "scratch_e": ("v", "Scratch-E"), "scratch_b": ("^", "Scratch-B"),
                   "rewind": ("D", "rewound to epoch 1"),
                   "published": ("*", "published shapes, from scratch")}


def _check(args) -> None:
    """Bad settings are one-line errors (exit 2), before any work."""
    from subnet.errors import InputError

    def numbers(name, kind, low, high, low_open=False, high_open=False):
        text = getattr(args, name.replace("-", "_"))
        try:
            values = _list(text, kind)
        except ValueError:
            raise InputError(f"--{name} must be a comma-separated list of {kind.__name__}s. "
                             f"Received: {text!r}") from None
        for value in values:
            if (value < low or (low_open and value == low)) or \
                    (high is not None and (value > high or (high_open and value == high))):
                bounds = f"{'(' if low_open else '['}{low}, " \
                    f"{'inf' if high is None else high}{')' if high_open or high is None else ']'}"
                raise InputError(f"--{name} must lie in {bounds}. Received: {value!r}")
        if not values:
            raise InputError(f"--{name} is empty.")
        return values

    for name in ("methods", "uniform_methods"):  # an old key reads as the key it has now
        setattr(args, name, ",".join(dict.fromkeys(resolve(m) for m in _list(getattr(args, name)))))
    numbers("parents", int, 0, None)
    numbers("budgets", float, 0.0, 1.0, low_open=True)
    numbers("control-budgets", float, 0.0, 1.0, low_open=True)
    for name, low in (("parent-epochs", 1), ("validation", 1), ("teacher-passes", 0),
                      ("finetune-epochs", 1), ("patience", 0), ("jobs", 1), ("selection", 1),
                      ("masks", 2), ("retrain-epochs", 0.0)):
        value = getattr(args, name.replace("-", "_"))
        if value < low:
            raise InputError(f"--{name} must be at least {low}. Received: {value!r}")
    if not 0.0 < args.step < 1.0:
        raise InputError(f"--step (the fraction of FLOPs removed per round) must lie in (0, 1). "
                         f"Received: {args.step!r}")
    for name, allowed in (("methods", METHODS), ("uniform-methods", METHODS),
                          ("allocations", ALLOCATIONS), ("controls", CONTROLS)):
        unknown = sorted(set(_list(getattr(args, name.replace("-", "_")))) - set(allowed))
        if unknown:
            raise InputError(f"--{name} names {unknown}; choose among {list(allowed)}.")
    from analyses.tasks import TASKS
    from subnet.data import KNOWN_DATASETS

    if args.dataset not in (*KNOWN_DATASETS, *TASKS) and \
            not args.dataset.lower().endswith(".npz") and not Path(args.dataset).is_dir():
        raise InputError(f"--dataset {args.dataset!r} is not a data set subnet knows, a task "
                         f"of analyses/tasks.py or a data file; choose among "
                         f"{list(dict.fromkeys((*KNOWN_DATASETS, *TASKS)))}, or give the path "
                         "of an .npz file or a folder of IDX files.")
    for name in ("train_subset", "test_subset"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1. Received: {value}")
    limit = args.train_subset or 60_000
    if args.validation >= limit:
        raise InputError(f"--validation {args.validation} leaves no training images (the "
                         f"training split has {limit}); hold out fewer.")


def _list(text, kind=str):
    """Comma-separated values; numbers may be written as fractions (``1/12``)."""
    def one(item):
        if kind is float and "/" in item:
            top, bottom = item.split("/")
            return float(top) / float(bottom)
        return kind(item)

    return [one(item.strip()) for item in text.split(",") if item.strip()]


def _settings(args) -> dict:
    """What decides the numbers (the cache key of every cell). Settings added later enter only
    when they differ from what the committed cells were made with, so those keep their keys."""
    settings = {k: getattr(args, k) for k in (
        "dataset", "parent_epochs", "validation", "teacher_passes", "step", "retrain_epochs",
        "finetune_epochs", "patience", "train_subset", "test_subset", "selection", "masks")}
    if args.teacher != "ensemble":
        settings["teacher"] = args.teacher
    return settings


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------- cells

def _data(args):
    import subnet
    from analyses.tasks import TASKS
    from analyses.tasks import build as build_task
    from subnet.data import KNOWN_DATASETS
    from subnet.protocol import VALIDATION_SEED, validation_split

    if args.dataset in KNOWN_DATASETS or args.dataset not in TASKS:
        data = subnet.load_dataset(args.dataset)
    else:  # a task of graded difficulty, built from MNIST and Fashion-MNIST
        data = build_task(args.dataset, seed=0)
    if args.train_subset or args.test_subset:
        data = data.subset(n_train=args.train_subset, n_test=args.test_subset)
    train, validation, info = validation_split(data, args.validation, seed=VALIDATION_SEED)
    return train, validation, info


def _parent_dir(args, seed: int) -> Path:
    made = {k: getattr(args, k) for k in ("dataset", "parent_epochs", "validation",
                                          "teacher_passes", "train_subset", "test_subset")}
    return Path(args.work) / f"parent_s{seed}_{_key(made, seed)}"


def run_parent(args, seed: int) -> dict:
    """Trains parent ``seed`` (cached) with its rewind snapshot and its teacher.

    The trained parent and its weights after one epoch are also kept under ``--out/parents/``
    (committed: retraining them costs more than a session can spare), and a later run on a
    fresh machine starts from there.
    """
    from subnet.io import atomic_path, atomic_write_text

    folder = _parent_dir(args, seed)
    done = folder / "parent.json"
    if done.exists():
        return json.loads(done.read_text())
    import subnet
    from subnet.extraction import accuracy, copy_model, model_cost
    from subnet.train import fit, teacher_probabilities

    train, (x_val, y_val), info = _data(args)
    folder.mkdir(parents=True, exist_ok=True)
    kept = Path(args.parents_from or Path(args.out) / "parents") / folder.name
    files = ("parent.keras", "rewind_e1.npz", "training.json")
    if not (folder / "parent.keras").exists() and all((kept / f).exists() for f in files):
        for name in files:
            shutil.copyfile(kept / name, folder / name)
    if not (folder / "parent.keras").exists():
        start = time.perf_counter()
        model = subnet.seed_cnn(500, seed=seed, input_shape=train.x_train.shape[1:],
                                num_classes=train.num_classes)
        # Validation accuracy is only watched (the convergence check), never used to stop.
        history = fit(model, train.x_train, train.y_train, epochs=args.parent_epochs,
                      seed=seed, progress=False, snapshots=[1], validation=(x_val, y_val),
                      restore_best=False)
        np.savez(folder / "rewind_e1.npz", *history["snapshots"][1])
        atomic_write_text(folder / "training.json", json.dumps(
            {"seed": seed, "epochs": args.parent_epochs,
             "train_seconds": round(time.perf_counter() - start, 1),
             "loss": history["loss"], "accuracy": history["accuracy"],
             "val_accuracy": history["val_accuracy"]}))
        with atomic_path(folder / "parent.keras") as tmp:
            copy_model(model).save(tmp)  # without the optimizer's state
        kept.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copyfile(folder / name, kept / name)
    model = subnet.load_model(folder / "parent.keras")
    training = json.loads((folder / "training.json").read_text())
    deterministic = subnet.with_dropout(model, on=False)
    teacher = teacher_probabilities(model, train.x_train, passes=args.teacher_passes, seed=seed)
    np.save(folder / "teacher.npy", teacher)
    ensemble_val = teacher_probabilities(model, x_val, passes=args.teacher_passes, seed=seed)
    ensemble_test = teacher_probabilities(model, train.x_test, passes=args.teacher_passes,
                                          seed=seed)
    result = {"seed": seed, "train_seconds": training["train_seconds"],
              # per epoch, dropout off; absent for parents trained before it was recorded
              "val_accuracy_by_epoch": training.get("val_accuracy"),
              "flops": int(model_cost(deterministic)["flops"]),
              "params": int(deterministic.count_params()),
              "val_accuracy": accuracy(deterministic, x_val, y_val),
              "test_accuracy": accuracy(deterministic, train.x_test, train.y_test),
              "ensemble_val_accuracy": float(np.mean(ensemble_val.argmax(1) == y_val)),
              "ensemble_test_accuracy": float(np.mean(ensemble_test.argmax(1) ==
                                                      train.y_test)),
              "test_correct": _pack(ensemble_test.argmax(1) == train.y_test),
              "validation": info, "n_train": len(train.x_train), "n_test": len(train.x_test)}
    atomic_write_text(done, json.dumps(result))
    return result


def _pack(correct) -> str:
    bits = np.packbits(np.asarray(correct, bool))
    return base64.b64encode(bits.tobytes()).decode("ascii")


def _unpack(text: str, n: int) -> np.ndarray:
    bits = np.frombuffer(base64.b64decode(text), np.uint8)
    return np.unpackbits(bits)[:n].astype(bool)


def _teacher(args, parent_folder: Path):
    """The teacher's probabilities on the training split, or None under ``--teacher none``."""
    return None if args.teacher == "none" else np.load(parent_folder / "teacher.npy")


def _predicted(model, x) -> np.ndarray:
    return np.concatenate([np.asarray(model(x[i:i + 1000], training=False)).argmax(-1)
                           for i in range(0, len(x), 1000)])


def _finetuned(args, model, train, validation, teacher, seed, epochs=None,
               patience="protocol") -> dict:
    """Trains ``model`` to saturation (early stopping on validation after ``--patience``
    epochs without gain, or the whole budget with ``patience=None``; the best epoch on
    validation is kept either way), then measures it once."""
    from subnet.extraction import model_cost
    from subnet.frontier import finetune_to_saturation
    from subnet.runtime import ONEDNN

    start = time.perf_counter()
    history = finetune_to_saturation(model, train, validation,
                                     epochs=epochs or args.finetune_epochs,
                                     patience=args.patience if patience == "protocol"
                                     else patience, teacher=teacher, seed=seed)
    predicted = _predicted(model, train.x_test)
    val_predicted = _predicted(model, validation[0])
    cost = model_cost(model)
    return {"val_accuracy": float(np.mean(val_predicted == validation[1])),
            "val_correct_count": int(np.sum(val_predicted == validation[1])),
            "test_accuracy": float(np.mean(predicted == train.y_test)),
            "test_correct_count": int(np.sum(predicted == train.y_test)),
            "val_correct": _pack(val_predicted == validation[1]),
            "test_correct": _pack(predicted == train.y_test),
            "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
            "flops": int(cost["flops"]), "params": int(cost["params"]),
            "seconds": round(time.perf_counter() - start, 1),
            "onednn": ONEDNN}  # TensorFlow's oneDNN kernels (subnet.runtime): rounding differs


def _cell_path(args, kind: str, *parts) -> Path:
    """A cell's result: small JSON kept under ``--out/cells/`` (committed as cells finish, so a
    run on a fresh machine redoes only what is missing); its models stay under ``--work``."""
    # a renamed method keeps its old key in the cells' names and keys: the committed cells
    parts = tuple(cache_name(p) if isinstance(p, str) else p for p in parts)
    return Path(args.out) / "cells" / f"{kind}_{'_'.join(map(str, parts))}_" \
        f"{_key(_settings(args), kind, parts)}.json"


def _cell_work(args, path: Path) -> Path:
    return Path(args.work) / "trajectories" / path.stem


def run_trajectory(args, parent_seed: int, method: str, allocation: str) -> dict:
    """One gradual trajectory of one parent, each checkpoint fine-tuned to saturation."""
    from subnet.io import atomic_path, atomic_write_text

    path = _cell_path(args, "trajectory", parent_seed, method, allocation)
    cell = json.loads(path.read_text()) if path.exists() else {}
    budgets = _list(args.budgets, float)
    if cell.get("done"):
        return cell
    import subnet
    from subnet.extraction import copy_model
    from subnet.gradual import prune_gradually

    train, validation, _ = _data(args)
    folder = _parent_dir(args, parent_seed)
    parent = subnet.with_dropout(subnet.load_model(folder / "parent.keras"), on=False)
    teacher = _teacher(args, folder)
    start = time.perf_counter()
    work = _cell_work(args, path)
    selection = (validation[0][:args.selection], validation[1][:args.selection])
    trajectory = prune_gradually(
        parent, train, method, budgets, step=args.step, retrain_epochs=args.retrain_epochs,
        allocation=allocation, selection=selection, validation=validation, teacher=teacher,
        n_masks=args.masks, seed=parent_seed, out=work, progress=False)
    cell.setdefault("trajectory_seconds", round(time.perf_counter() - start, 1))
    cell["rounds"] = list(trajectory.rounds)
    results = cell.setdefault("checkpoints", {})
    for budget, point in sorted(trajectory.checkpoints.items(), reverse=True):
        name = repr(budget)
        if name in results:
            continue
        model = subnet.load_model(work / point["file"])
        tuned = _finetuned(args, model, train, validation, teacher, parent_seed)
        model_file = work / f"finetuned_{budget:g}.keras"
        with atomic_path(model_file) as tmp:
            copy_model(model).save(tmp)  # without the optimizer's state
        results[name] = {**tuned, "widths": point["widths"], "kept": point["kept"],
                         "pruned_val_accuracy": point["val_accuracy"],
                         "model_file": str(model_file)}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cell))
    cell["done"] = True
    atomic_write_text(path, json.dumps(cell))
    return cell


def run_control(args, parent_seed: int, control: str, budget: float | None,
                widths: dict | None, kept: dict | None, label: str | None = None) -> dict:
    """One control network of one parent: Scratch-E/B, rewinding, or a published shape."""
    from subnet.io import atomic_write_text

    tag = (label or f"{budget:g}").split(" ")[0].lower()  # readable; the hash tells apart
    made = (widths, kept, label, budget)
    if args.control_recipe == "same" and control != "whole":  # the whole's recipe is unchanged
        made += ("recipe:same",)  # so the committed cells (the earlier recipe) keep their keys
    path = _cell_path(args, "control", parent_seed, control, tag, _key(*made))
    if path.exists():
        return json.loads(path.read_text())
    import subnet
    from subnet.controls import rewound, scratch_epochs, shaped
    from subnet.extraction import copy_model, model_cost

    train, validation, _ = _data(args)
    folder = _parent_dir(args, parent_seed)
    parent = subnet.with_dropout(subnet.load_model(folder / "parent.keras"), on=False)
    dense_flops = model_cost(parent)["flops"]
    same = args.control_recipe == "same"
    # Under the same recipe every control gets the run's teacher (or none) and its learning
    # rate; the controls trained from other weights run their whole budget with the schedule
    # laid over it and keep the best epoch on validation (a patience cut would end Scratch-B
    # before its learning rate anneals). The whole network is the subnetworks' reference and
    # is fine-tuned exactly as they are.
    teacher = _teacher(args, folder)
    patience = None if same else "protocol"
    if control == "whole":  # the reference every subnetwork is held to: same recipe, no cut
        model = copy_model(parent)
        widths = {layer.name: int(layer.kernel.shape[-1]) for layer in model.layers
                  if getattr(layer, "kernel", None) is not None}
        epochs, patience = args.finetune_epochs, "protocol"
        teacher = teacher if same else np.load(folder / "teacher.npy")
    elif control == "rewind":
        early = np.load(folder / "rewind_e1.npz")
        model = rewound(parent, [early[f"arr_{i}"] for i in range(len(early.files))], kept)
        # the parent's remaining epochs after the epoch-1 snapshot
        epochs = max(1, args.parent_epochs - 1) if same else args.finetune_epochs
        teacher = teacher if same else np.load(folder / "teacher.npy")
    else:
        model = shaped(parent, widths, seed=parent_seed + 100)
        kind = "B" if control == "scratch_b" else "E"
        epochs = int(round(scratch_epochs(kind, args.parent_epochs, dense_flops,
                                          model_cost(model)["flops"])))
        teacher = teacher if same else None  # "labels": the labels alone, as the parent
    tuned = _finetuned(args, model, train, validation, teacher, parent_seed, epochs=epochs,
                       patience=patience)
    result = {**tuned, "control": control, "budget": budget, "label": label, "widths": widths,
              "epochs_budget": epochs, "parent": parent_seed, "recipe": args.control_recipe,
              "teacher": args.teacher if teacher is not None else "none"}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result))
    return result


# ------------------------------------------------------------------------------------ driver

def _run_cells(args, argv, cells: list[tuple]) -> None:
    """Runs the missing cells, ``--jobs`` at once, each in its own process (this script with
    ``--cell``); every cell runs, and the first to fail is then raised."""
    if args.jobs <= 1:
        for cell in cells:
            _dispatch(args, cell)
        return
    from subnet.distributed import run_commands

    threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
    commands = [[sys.executable, __file__, *argv, "--cell", json.dumps(cell)] for cell in cells]
    failed = None
    for i, done in run_commands(commands, args.jobs, threads=threads):
        if not done.ok and failed is None:
            failed = RuntimeError(f"cell {cells[i]} failed:\n{done.stderr[-3000:]}")
    if failed is not None:
        raise failed


def _dispatch(args, cell) -> None:
    kind, *rest = cell
    if kind == "parent":
        run_parent(args, *rest)
    elif kind == "trajectory":
        run_trajectory(args, *rest)
    else:
        run_control(args, *rest)


def _log(message: str) -> None:
    print(f"frontier: {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    from subnet.cli import run_main

    return run_main(lambda: _main(argv), "analyses/frontier.py")


def _main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    if args.cell is not None:
        _dispatch(args, tuple(json.loads(args.cell)))
        return 0
    started = time.perf_counter()
    parents = _list(args.parents, int)
    methods, allocations = _list(args.methods), _list(args.allocations)
    budgets = _list(args.budgets, float)
    controls = _list(args.controls)
    control_budgets = _list(args.control_budgets, float)
    uniform_methods = _list(args.uniform_methods)
    pairs = [(m, a) for a in allocations for m in methods
             if a != "uniform" or m in uniform_methods]
    if args.partial:
        return _partial(args, parents, pairs, budgets)
    _log(f"parents {parents}: training what is missing")
    _run_cells(args, argv, [("parent", s) for s in parents])
    parent_results = {s: run_parent(args, s) for s in parents}
    cells = [("trajectory", s, m, a) for m, a in pairs for s in parents]
    _log(f"{len(cells)} trajectories")
    _run_cells(args, argv, cells)
    trajectories = {c[1:]: run_trajectory(args, *c[1:]) for c in cells}  # cached: reads them
    # Controls on the widths of the best trajectory at each budget (by validation accuracy)
    # among the chosen (not random) units of the first allocation, so that adding an
    # allocation later adds its trajectories without changing which controls were run.
    control_cells = []
    for s in parents:
        for b in budgets:
            if b not in control_budgets:
                continue
            best = max(((m, a) for m, a in pairs if m != "random" and a == allocations[0]),
                       key=lambda ma: trajectories[(s, *ma)]["checkpoints"][repr(b)]
                       ["val_accuracy"], default=None)
            if best is None:
                continue
            point = trajectories[(s, *best)]["checkpoints"][repr(b)]
            for control in controls:
                if control in ("scratch_e", "scratch_b", "rewind"):
                    control_cells.append(("control", s, control, b, point["widths"],
                                          point["kept"], None))
        if "whole" in controls:
            control_cells.append(("control", s, "whole", 1.0, None, None, None))
        if "published" in controls:
            for label, widths in PUBLISHED.items():
                control_cells.append(("control", s, "published", None, widths, None, label))
    # The controls that answer most first (a run cut short has those): the reference, then
    # the controls of one epoch budget, then Scratch-B (up to 4x as long), then the shapes.
    priority = {c: i for i, c in enumerate(("whole", "scratch_e", "rewind", "scratch_b",
                                            "published"))}
    run_order = sorted(control_cells,
                       key=lambda c: (priority[c[2]], c[3] is None, -(c[3] or 0), c[1]))
    _log(f"{len(control_cells)} controls")
    _run_cells(args, argv, run_order)
    controls_done = [run_control(args, *c[1:]) for c in control_cells]
    results = _summarise(args, parents, parent_results, trajectories, controls_done, budgets,
                         pairs)
    results["wall_seconds_this_run"] = round(time.perf_counter() - started, 1)
    results["compute_seconds"] = _compute_seconds(parent_results, trajectories, controls_done)
    results["onednn_finetunes"] = _kernels(trajectories, controls_done)
    _write(args, results, trajectories)
    print(json.dumps(results["summary"]))
    return 0


def _partial(args, parents, pairs, budgets) -> int:
    """Summarises the finished cells only: the (method, allocation) pairs done on every parent,
    and the controls done so far. Computes nothing; the results say what is missing."""
    from subnet.errors import InputError

    parent_results = {}
    for s in parents:
        done = _parent_dir(args, s) / "parent.json"
        if not done.exists():
            raise InputError(f"--partial: parent {s} has not been measured in --work "
                             f"{args.work}; run without --partial first.")
        parent_results[s] = json.loads(done.read_text())
    trajectories, missing = {}, []
    for m, a in pairs:
        for s in parents:
            path = _cell_path(args, "trajectory", s, m, a)
            cell = json.loads(path.read_text()) if path.exists() else {}
            if cell.get("done"):
                trajectories[(s, m, a)] = cell
            else:
                missing.append(f"{m}/{a} parent {s}")
    complete = [(m, a) for m, a in pairs if all((s, m, a) in trajectories for s in parents)]
    if not complete:
        raise InputError("--partial: no method and allocation has finished on every parent "
                         "yet.")
    controls = [json.loads(p.read_text()) for p in
                sorted((Path(args.out) / "cells").glob("control_*.json"))]
    controls = [c for c in controls if c["parent"] in parents]
    results = _summarise(args, parents, parent_results, trajectories, controls, budgets,
                         complete)
    results["partial"] = {"missing_trajectories": missing, "controls_done": len(controls)}
    results["compute_seconds"] = _compute_seconds(parent_results, trajectories, controls)
    results["onednn_finetunes"] = _kernels(trajectories, controls)
    _write(args, results, trajectories)
    print(json.dumps(results["summary"]))
    return 0


def _kernels(trajectories, controls) -> dict:
    """How many fine-tunes ran with TensorFlow's oneDNN kernels on ("1"), and how many without
    or before subnet recorded it (they differ in float rounding, not in distribution)."""
    from collections import Counter

    values = [p.get("onednn", "not recorded (off)") for c in trajectories.values()
              for p in c["checkpoints"].values()]
    values += [c.get("onednn", "not recorded (off)") for c in controls]
    return dict(Counter(values))


def _compute_seconds(parent_results, trajectories, controls) -> dict:
    """Seconds each kind of cell computed, as the cells measured them (one process each; with
    ``--jobs 2`` the wall time is about half their sum). A run spread over several sessions
    adds up here; ``wall_seconds_this_run`` is only the last one's."""
    trajectory = sum(c.get("trajectory_seconds", 0.0) for c in trajectories.values())
    finetune = sum(p["seconds"] for c in trajectories.values()
                   for p in c["checkpoints"].values())
    out = {"parents_training": round(sum(p["train_seconds"] for p in parent_results.values()), 1),
           "trajectories": round(trajectory, 1), "finetuning": round(finetune, 1),
           "controls": round(sum(c["seconds"] for c in controls), 1)}
    out["total"] = round(sum(out.values()), 1)
    return out


def _dense_references(path, parents, controls) -> dict:
    """{"expected_pooling": per-parent test accuracy of the parent with exact expected pooling
    (nothing trained), "best_dense": per parent the better of it and the whole fine-tuned
    alike}, in ``parents``' order, from ``path`` (analyses/blog_mechanism.py --parents)."""
    from subnet.errors import InputError

    data = json.loads(Path(path).read_text())
    by_seed = {}
    for entry in data["parents"]:
        name = Path(entry["parent"]).name  # parent_s{seed}_{key}
        by_seed[int(name.split("_")[1][1:])] = entry["expected_pooling_test_accuracy"]
    missing = [s for s in parents if s not in by_seed]
    if missing:
        raise InputError(f"--best-dense {path} has no parents {missing}; run "
                         "analyses/blog_mechanism.py --parents on them.")
    expected = [by_seed[s] for s in parents]
    whole = {c["parent"]: c["test_accuracy"] for c in controls if c["control"] == "whole"}
    out = {"expected_pooling": expected}
    if all(s in whole for s in parents):
        out["best_dense"] = [max(e, whole[s]) for e, s in zip(expected, parents, strict=True)]
    return out


def _counts(point: dict, kind: str, n: int) -> int:
    """Correct images of a fine-tuned network on ``kind`` ("val" or "test"): recorded as a
    count since counts were recorded; earlier cells have the fraction, exact to a count."""
    count = point.get(f"{kind}_correct_count")
    return int(count) if count is not None else int(round(point[f"{kind}_accuracy"] * n))


def _within_the_whole(rows, controls, pairs, references=None) -> dict | None:
    """Against the whole network fine-tuned with the same recipe (the ``whole`` control), per
    method and allocation: the largest FLOPs reduction on the budget grid whose mean test
    accuracy is within 0.5 points of the whole's, and the largest within 1.25x its error;
    compared on integer counts of correct test images (a sum over parents), never on float
    ties. Test accuracy, means over parents (a measurement of the curve, not a selection).
    ``references`` ({name: per-parent test accuracies}) adds the same readouts against other
    dense references (the best dense predictor). None without the control."""
    wholes = [c for c in controls if c["control"] == "whole"]
    if not wholes or not rows:
        return None
    n_test = rows[0]["n_test"]
    whole_counts = [_counts(c, "test", n_test) for c in wholes]
    whole = float(np.mean([c["test_accuracy"] for c in wholes]))
    out = {"whole_test_accuracy_mean": whole,
           "whole_test_accuracy_sd": float(np.std([c["test_accuracy"] for c in wholes],
                                                  ddof=1)) if len(wholes) > 1 else None,
           "parents": len(wholes), "methods": {}, "compared_on": "counts of correct images"}
    against = {"whole": whole_counts}
    for name, accuracies in (references or {}).items():
        against[name] = [int(round(a * n_test)) for a in accuracies]
    out["references"] = {name: float(np.sum(c)) / (len(c) * n_test) for name, c in
                         against.items()}
    # The same readouts on the validation images (against the whole's validation counts).
    n_val = rows[0].get("n_val")
    whole_val = [_counts(c, "val", n_val) for c in wholes] if n_val else None
    for m, a in pairs:
        mine = [r for r in rows if r["method"] == m and r["allocation"] == a]
        if whole_val is not None:
            out.setdefault("methods_val", {})[f"{m}/{a}"] = _largest_within(
                mine, whole_val, n_val, "val")
        for name, counts in against.items():
            points = _largest_within(mine, counts, n_test, "test")
            if name == "whole":
                out["methods"][f"{m}/{a}"] = points
            else:
                out.setdefault("against", {}).setdefault(name, {})[f"{m}/{a}"] = points
    return out


def _largest_within(rows, counts, n: int, kind: str) -> dict:
    """The largest FLOPs reduction among ``rows`` (one curve) within 0.5 points of a reference
    and within 1.25x its error, on ``kind``'s images; ``counts`` are the reference's correct
    images per parent (the rows must cover as many parents)."""
    parents, right = len(counts), int(np.sum(counts))
    total = parents * n
    points = {}
    for key, ok in (
            # mean accuracy >= reference - 0.005, in counts over the same parents
            ("within_half_point", lambda r: 200 * (r[f"{kind}_correct_total"] - right)
             >= -total),
            # mean error <= 1.25 x the reference's error
            ("within_1.25x_error", lambda r: 4 * (total - r[f"{kind}_correct_total"])
             <= 5 * (total - right))):
        passing = [r for r in rows if r["parents"] == parents and ok(r)]
        best = max(passing, key=lambda r: r["flops_reduction"], default=None)
        points[key] = None if best is None else {
            "budget": best["budget"], "flops_reduction": best["flops_reduction"],
            "params_reduction": best.get("params_reduction"),
            "test_accuracy_mean": best["test_accuracy_mean"]}
    return points


def _crossing(reductions: np.ndarray, errors: np.ndarray, target: float) -> dict:
    """Where a curve's mean error crosses ``target``, reading from the largest budget down:
    the FLOPs reduction interpolated linearly in log(reduction) between the last grid point
    at or below the target and the first above it. ``bound`` says what the grid shows:
    ``"interpolated"``, ``"at_least"`` (every point within: the crossing is beyond the grid)
    or ``"below_grid"`` (the first point is already above)."""
    order = np.argsort(reductions)
    r, e = np.asarray(reductions, float)[order], np.asarray(errors, float)[order]
    if e[0] > target:
        return {"reduction": float(r[0]), "bound": "below_grid"}
    for i in range(len(r) - 1):
        if e[i + 1] > target:
            t = (target - e[i]) / (e[i + 1] - e[i])
            x = np.exp(np.log(r[i]) + t * (np.log(r[i + 1]) - np.log(r[i])))
            return {"reduction": float(x), "bound": "interpolated"}
    return {"reduction": float(r[-1]), "bound": "at_least"}


def located_crossing(points_by_budget, dense_flops: float, kind: str, n: int, *,
                     target: float = TARGET_ERROR, resamples: int = 2000,
                     seed: int = 0) -> dict:
    """The FLOPs reduction at which a curve's mean error (over parents) crosses ``target``,
    with a percentile interval from a two-level bootstrap: parents resampled with
    replacement, then each chosen parent's images (``kind``: "val" or "test").

    Args:
        points_by_budget: {budget: [fine-tuned checkpoint of each parent]}, each with
            ``flops`` and ``{kind}_correct`` (packed bits).
        dense_flops: The parent's FLOPs.
        kind: Which split's outcomes.
        n: Images in that split.
        target: The error to cross (a fraction).
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        ``{"reduction", "bound", "ci_low", "ci_high", "resamples", "censored_share"}``: the
        point estimate, what the grid shows there, the 95 % interval (a resample whose crossing
        lies beyond the grid counts at the grid's edge; ``censored_share`` is the share of
        those), from ``kind``'s images.
    """
    budgets = sorted(points_by_budget)
    if any(f"{kind}_correct" not in p for b in budgets for p in points_by_budget[b]):
        return {"reduction": None, "bound": "not recorded", "ci_low": None, "ci_high": None}
    bits = np.stack([np.stack([_unpack(p[f"{kind}_correct"], n) for p in points_by_budget[b]])
                     for b in budgets], axis=1).astype(np.float64)  # (parents, budgets, n)
    flops = np.array([[p["flops"] for p in points_by_budget[b]] for b in budgets]).T
    parents = bits.shape[0]

    def estimate(chosen, counts):
        right = np.einsum("pbn,pn->b", bits[chosen], counts)
        errors = 1.0 - right / (len(chosen) * n)
        return _crossing(dense_flops / flops[chosen].mean(axis=0), errors, target)

    point = estimate(np.arange(parents), np.ones((parents, n)))
    rng = np.random.default_rng(seed)
    draws, censored = np.empty(resamples), 0
    for i in range(resamples):
        chosen = rng.integers(0, parents, size=parents)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=parents).astype(np.float64)
        found = estimate(chosen, counts)
        draws[i] = found["reduction"]
        censored += found["bound"] != "interpolated"
    low, high = np.quantile(draws, [0.025, 0.975])
    return {**point, "ci_low": float(low), "ci_high": float(high), "resamples": resamples,
            "censored_share": censored / resamples}


def _summarise(args, parents, parent_results, trajectories, controls, budgets, pairs,
               references=None) -> dict:
    """Every readout of a run from its cells: rows (mean and SD over parents, FLOPs and
    parameters), paired tests over parents with Holm's correction, the smallest subnetwork
    within 1 % error on validation and on test, the readouts against the whole (and the
    ``references``), and each curve's located 1 %-error crossing with its interval. Every
    comparison with a threshold is made on integer counts of correct images."""
    import subnet
    from subnet.stats import holm, paired_over_parents

    n_test = parent_results[parents[0]]["n_test"]
    n_val = int(parent_results[parents[0]]["validation"].get("size") or args.validation)
    dense_flops = parent_results[parents[0]]["flops"]
    dense_params = parent_results[parents[0]]["params"]
    rows = []
    methods = list(dict.fromkeys(m for m, _ in pairs))
    allocations = list(dict.fromkeys(a for _, a in pairs))
    for m, a in pairs:
        for b in budgets:
            points = [trajectories[(s, m, a)]["checkpoints"][repr(b)] for s in parents]
            test = np.array([p["test_accuracy"] for p in points])
            val = np.array([p["val_accuracy"] for p in points])
            test_counts = [_counts(p, "test", n_test) for p in points]
            val_counts = [_counts(p, "val", n_val) for p in points]
            rows.append({
                "method": m, "allocation": a, "budget": b, "parents": len(points),
                "flops_mean": float(np.mean([p["flops"] for p in points])),
                "flops_reduction": float(dense_flops / np.mean([p["flops"] for p in points])),
                "params_mean": float(np.mean([p["params"] for p in points])),
                "params_reduction": float(dense_params / np.mean([p["params"] for p in points])),
                "widths": [p["widths"] for p in points],
                "test_accuracy_mean": float(test.mean()),
                "test_accuracy_sd": float(test.std(ddof=1)) if len(test) > 1 else None,
                "test_error_mean": float(1 - test.mean()),
                "val_accuracy_mean": float(val.mean()),
                "test_correct_counts": test_counts, "test_correct_total": int(sum(test_counts)),
                "val_correct_counts": val_counts, "val_correct_total": int(sum(val_counts)),
                "n_test": n_test, "n_val": n_val,
                "epochs_run": [p["epochs_run"] for p in points],
                "outcomes": np.stack([_unpack(p["test_correct"], n_test) for p in points])})
    # Paired tests at each budget: the best (by validation, on counts) against every other row,
    # the parent as the unit; one family, corrected by Holm's method.
    tests = []
    for b in budgets:
        at = [r for r in rows if r["budget"] == b]
        best = max(at, key=lambda r: (r["val_correct_total"], -r["flops_mean"]))
        for other in at:
            if other is best:
                continue
            test = paired_over_parents(best["outcomes"], other["outcomes"], resamples=2000)
            tests.append({"budget": b, "a": [best["method"], best["allocation"]],
                          "b": [other["method"], other["allocation"]], **test.to_dict()})
    for test, adjusted in zip(tests, holm([t["pvalue"] for t in tests]), strict=True):
        test["pvalue_holm"] = float(adjusted)
    smallest, smallest_test = {}, {}
    for m, a in pairs:
        mine = [r for r in rows if r["method"] == m and r["allocation"] == a]
        for found, kind, n in ((smallest, "val", n_val), (smallest_test, "test", n_test)):
            # mean error over parents <= 1 %: 100 x errors <= images x parents
            ok = [r for r in mine if 100 * (r["parents"] * n - r[f"{kind}_correct_total"])
                  <= r["parents"] * n]
            if ok:
                r = min(ok, key=lambda r: r["flops_mean"])
                found[f"{m}/{a}"] = {k: r[k] for k in (
                    "budget", "flops_reduction", "params_reduction", "test_error_mean",
                    "test_accuracy_sd", "widths")}
                found[f"{m}/{a}"]["val_error_mean"] = 1 - r["val_accuracy_mean"]
    if references is None and args.best_dense:
        references = _dense_references(args.best_dense, parents, controls)
    within = _within_the_whole(rows, controls, pairs, references)
    crossings = {}
    for m, a in pairs:
        points = {b: [trajectories[(s, m, a)]["checkpoints"][repr(b)] for s in parents]
                  for b in budgets}
        crossings[f"{m}/{a}"] = {
            kind: located_crossing(points, dense_flops, kind, n) for kind, n in
            (("test", n_test), ("val", n_val))}
    control_rows = [{k: c.get(k) for k in ("control", "budget", "label", "widths", "parent",
                                           "test_accuracy", "val_accuracy", "flops", "params",
                                           "epochs_budget", "epochs_run", "best_epoch",
                                           "recipe", "teacher", "test_correct_count",
                                           "val_correct_count")} for c in controls]
    for row in rows:
        row.pop("outcomes")
    parents_summary = [{k: v for k, v in p.items() if k != "test_correct"}
                       for p in parent_results.values()]
    return {"settings": {**_settings(args), "parents": parents, "methods": methods,
                         "allocations": allocations, "budgets": budgets,
                         "teacher": args.teacher, "control_recipe": args.control_recipe},
            "versions": subnet.versions(), "parents": parents_summary, "rows": rows,
            "paired_tests": tests,
            "paired_tests_about": "paired t-test over parents (the unit is the parent) of the "
                                  "best row by validation against each other row at each "
                                  "budget; pvalue_holm: Holm-corrected over all of them; "
                                  "intervals: bootstrap over parents and images, 2,000 "
                                  "resamples",
            "controls": control_rows, "smallest_within_1pct": smallest,
            "smallest_within_1pct_test": smallest_test, "within_the_whole": within,
            "crossing_1pct": crossings,
            "published": [{"source": k, "widths": v, "error": PUBLISHED_ERROR[k],
                           "error_on": "mnist"} for k, v in PUBLISHED.items()],
            "summary": {"dataset": args.dataset, "parents": len(parents),
                        "dense_flops": dense_flops, "dense_params": dense_params,
                        "smallest_within_1pct": smallest,
                        "smallest_within_1pct_test": smallest_test,
                        "parent_test_accuracy": [p["test_accuracy"]
                                                 for p in parent_results.values()]}}


def _chosen(results) -> list[tuple[str, dict]]:
    """The subnetworks a run keeps as files: per method and allocation, the smallest within
    the published 1 % error target (by validation error) and the smallest within 1.25x the
    whole network's test error (on a task harder than MNIST the first may not exist), once
    each."""
    chosen = dict(((name, entry["budget"]), entry)
                  for name, entry in results["smallest_within_1pct"].items())
    for name, points in ((results.get("within_the_whole") or {}).get("methods") or {}).items():
        entry = points.get("within_1.25x_error")
        if entry:
            chosen.setdefault((name, entry["budget"]), entry)
    # A located run (budgets finer than the first grid) also keeps each curve's subnetwork at
    # 1/16 (the headline budget) and the smallest within 1 % mean test error.
    if any(b not in (0.5, 0.25, 0.125, 0.1, 0.0625, 0.03125)
           for b in (results.get("settings") or {}).get("budgets", ())):
        for name, entry in (results.get("smallest_within_1pct_test") or {}).items():
            chosen.setdefault((name, entry["budget"]), entry)
        for row in results["rows"]:
            if row["budget"] == 0.0625:
                name = f"{row['method']}/{row['allocation']}"
                chosen.setdefault((name, 0.0625), {"budget": 0.0625})
    return [(name, entry) for (name, _), entry in chosen.items()]


def _write(args, results, trajectories) -> None:
    import subnet
    from subnet.io import atomic_path, atomic_write_text

    out = Path(args.out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    for name, entry in _chosen(results):
        method, allocation = name.split("/")
        point = trajectories[(results["settings"]["parents"][0], method, allocation)][
            "checkpoints"][repr(entry["budget"])]
        suffix = "_no_teacher" if args.teacher == "none" else ""
        # named as the committed models are (a renamed method by its old key)
        target = out / "models" / (f"{args.dataset}_{cache_name(method)}_{allocation}_"
                                   f"{entry['budget']:g}{suffix}.keras")
        about = {"method": method, "allocation": allocation, "budget": entry["budget"],
                 "widths": point["widths"], "flops": point["flops"], "params": point["params"],
                 "test_accuracy": point["test_accuracy"],
                 "parent": results["settings"]["parents"][0],
                 "dense_flops": results["summary"]["dense_flops"]}
        described = target.with_suffix(".json")
        if described.exists():  # the same subnetwork already saved: leave its bytes alone
            before = json.loads(described.read_text())
            kept = target.exists() if before.get("model_file") else \
                before.get("model_bytes") is not None  # too large to commit: described only
            before["method"] = resolve(before.get("method") or "")  # written before a rename
            if {k: before.get(k) for k in about} == about and kept:
                continue
        if not Path(point["model_file"]).exists():
            # Its trajectory ran on another machine: the cell came with the repository, the
            # model stayed under that machine's --work. Describe it; rerunning the trajectory
            # (its cell deleted) rebuilds the file.
            atomic_write_text(described, json.dumps({
                **about, "model_file": None, "model_bytes": None,
                "note": "not saved: its trajectory ran on another machine and the summary was "
                        "written where the fine-tuned model is absent; delete the trajectory's "
                        "cell and rerun to rebuild it"}, indent=1))
            continue
        # Saved again from the uncompiled model: no optimizer state, a third of the size.
        with atomic_path(target) as tmp:
            subnet.load_model(point["model_file"]).save(tmp)
        size = target.stat().st_size
        if size > MAX_MODEL_BYTES:
            target.unlink()
        atomic_write_text(described, json.dumps({
            **about, "model_file": target.name if size <= MAX_MODEL_BYTES else None,
            "model_bytes": size,
            "note": None if size <= MAX_MODEL_BYTES else
            f"not committed: {size} bytes > {MAX_MODEL_BYTES}; rebuilt by this script"},
            indent=1))
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    write_report(results, out)


def _draw_frontier(fig, results) -> None:
    """Test error against FLOPs reduction (log x): each method and allocation (mean ± SD over
    parents), the controls and the published shapes; the 1 % target as a dotted line."""
    from subnet.methods import method_name
    from subnet.report import figures

    ax = fig.subplots()
    dense = results["summary"]["dense_flops"]
    keys = sorted({(r["method"], r["allocation"]) for r in results["rows"]})
    colors = figures.method_colors([m for m, _ in keys])
    for method, allocation in keys:
        rows = sorted((r for r in results["rows"] if r["method"] == method and
                       r["allocation"] == allocation), key=lambda r: r["flops_reduction"])
        ax.errorbar([r["flops_reduction"] for r in rows], [r["test_error_mean"] for r in rows],
                    yerr=[r["test_accuracy_sd"] or 0.0 for r in rows], color=colors[method],
                    linestyle="-" if allocation == "cost" else "--", marker="o", markersize=3,
                    capsize=2, label=f"{method_name(method)} ({allocation})")
    for control, (marker, text) in CONTROL_MARKERS.items():
        points = [c for c in results["controls"] if c["control"] == control]
        if points:
            ax.scatter([dense / c["flops"] for c in points],
                       [1 - c["test_accuracy"] for c in points],
                       marker=marker, color="black", s=22, zorder=3, label=text)
    ax.axhline(TARGET_ERROR, color="black", linestyle=":", linewidth=0.8)
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis, text, subs in ((ax.xaxis, lambda v, _: f"{v:g}x", (1.0, 2.0, 5.0)),
                             (ax.yaxis, lambda v, _: f"{v:.1%}", (1.0, 1.5, 2.0, 3.0, 5.0, 7.0))):
        axis.set_major_locator(ticker.LogLocator(subs=subs))
        axis.set_major_formatter(ticker.FuncFormatter(text))
        axis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("FLOPs reduction (x fewer than the parent; log scale)")
    ax.set_ylabel("test error (log scale)")
    ax.legend(fontsize=8, ncols=2)


def _compute_text(results) -> tuple[str, ...]:
    seconds = results.get("compute_seconds")
    if not seconds:
        return ()
    return (f"Compute, as the cells measured it (one process each; two ran side by side): "
            f"parents {seconds['parents_training'] / 3600:.2f} h of training, trajectories "
            f"{seconds['trajectories'] / 3600:.2f} h, fine-tuning to saturation "
            f"{seconds['finetuning'] / 3600:.2f} h, controls {seconds['controls'] / 3600:.2f} h; "
            f"{seconds['total'] / 3600:.2f} h in all.",)


def write_report(results, out: Path) -> None:
    """The frontier as report.html and report.pdf: every number from ``results``."""
    from subnet.methods import method_name
    from subnet.report import write_document
    from subnet.report.content import Document, Figure, Section, Table, Text

    def pct(value):
        return "—" if value is None else f"{value:.2%}"

    def sd(value):
        return "—" if value is None else f"{value * 100:.2f}"

    settings = results["settings"]
    parents = Table("parents", "Parents (dropout off; the ensemble is the teacher)",
                    ("seed", "test accuracy", "ensemble test accuracy", "validation accuracy",
                     "training seconds"),
                    tuple((str(p["seed"]), pct(p["test_accuracy"]),
                           pct(p["ensemble_test_accuracy"]), pct(p["val_accuracy"]),
                           f"{p['train_seconds']:.0f}") for p in results["parents"]),
                    (False, True, True, True, True))
    rows = Table("rows", "Subnetworks: test accuracy mean and SD over parents (points)",
                 ("method", "allocation", "budget", "FLOPs reduction", "test accuracy",
                  "SD", "validation accuracy", "widths (first parent)"),
                 tuple((method_name(r["method"]), r["allocation"], f"{r['budget']:g}",
                        f"{r['flops_reduction']:.1f}x", pct(r["test_accuracy_mean"]),
                        sd(r["test_accuracy_sd"]), pct(r["val_accuracy_mean"]),
                        "-".join(str(v) for v in r["widths"][0].values()))
                       for r in results["rows"]),
                 (False, False, True, True, True, True, True, False))
    controls = Table("controls", "Controls", ("control", "budget or source", "parent",
                                              "widths", "test accuracy", "epochs (run)"),
                     tuple((c["control"], c["label"] or f"{c['budget']:g}", str(c["parent"]),
                            "-".join(str(v) for v in c["widths"].values()),
                            pct(c["test_accuracy"]),
                            f"{c['epochs_budget']} ({c['epochs_run']})")
                           for c in results["controls"]),
                     (False, False, True, False, True, True))
    tests = Table("tests", "Paired bootstrap tests on the test set (outcomes averaged over "
                  "parents): the best row by validation against each other",
                  ("budget", "best", "other", "difference (points)", "95 % interval", "p"),
                  tuple((f"{t['budget']:g}", " / ".join(t["a"]), " / ".join(t["b"]),
                         f"{t['difference'] * 100:+.2f}",
                         f"[{t['ci_low'] * 100:+.2f}, {t['ci_high'] * 100:+.2f}]",
                         f"{t['pvalue']:.3g}") for t in results["paired_tests"]),
                  (True, False, False, True, False, True))
    smallest = results["smallest_within_1pct"]
    partial = results.get("partial")
    found = tuple(
        f"{name}: {e['flops_reduction']:.1f}x fewer FLOPs at {e['test_error_mean']:.2%} test "
        f"error (chosen on validation)" for name, e in smallest.items()) or (
        "No method's subnetwork stayed within 1 % validation error at the budgets tried.",)
    within = results.get("within_the_whole")
    if within:
        whole = within["whole_test_accuracy_mean"]
        for name, points in within["methods"].items():
            parts = []
            for key, text in (("within_half_point", "within 0.5 points"),
                              ("within_1.25x_error", "within 1.25x its error")):
                point = points[key]
                parts.append(f"{text}: " + ("none on the grid" if point is None else
                                            f"{point['flops_reduction']:.1f}x"))
            found += (f"{name} against the whole fine-tuned the same way ({whole:.2%}): "
                      + "; ".join(parts) + ".",)
    answer = (() if not partial else (
        f"Partial results: {len(partial['missing_trajectories'])} trajectories and the controls "
        f"not yet run are missing ({partial['controls_done']} controls done); the paired tests "
        "compare only the finished methods.",)) + found
    doc = Document(
        title="How far the blog's network trims: the frontier protocol",
        subject="Gradual prune-retrain subnetworks against controls and published shapes",
        facts=(("data set", settings["dataset"]), ("parents", str(len(results["parents"]))),
               ("budgets", ", ".join(f"{b:g}" for b in settings["budgets"]))),
        answer=answer,
        sections=(
            Section("frontier", "The frontier", (
                Figure("frontier", "Test error against FLOPs reduction",
                       "Lines: one gradual trajectory per parent, each checkpoint fine-tuned to "
                       "saturation; markers: controls; dotted: 1 % error.",
                       lambda fig: _draw_frontier(fig, results), (8.0, 5.0)),
                rows)),
            Section("controls", "Controls and published shapes", (controls,)),
            Section("statistics", "Paired tests", (tests,)),
            Section("parents", "Parents", (parents, Text((
                f"Settings: {json.dumps(settings)}",) + _compute_text(results))))))
    write_document(doc, out)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())

"""Is MNIST too simple? The blog's network on tasks of graded difficulty, each trimmed the same way.

    python analyses/difficulty.py [--tasks all] [--parents 0,1,2] [--jobs 2] [--gather]

The architecture stays the blog's network; the tasks (``analyses/tasks.py``) are built from MNIST
and Fashion-MNIST, each with its own fingerprint. On each task, :mod:`frontier` runs its protocol
restricted to the criterion that held up best on MNIST down to 1/32 (L1 magnitude, the same
fraction of every layer): several parents, one gradual prune-retrain trajectory per parent with a
checkpoint at each budget, each checkpoint fine-tuned to saturation with distillation, and the
whole network fine-tuned with the same recipe as the reference (the ``whole`` control). From that
curve: the largest FLOPs reduction within 0.5 points of the whole's test accuracy, and within
1.25x its error (relative), at the budget grid's resolution.

Those two readouts move with the grid and with what the bar means on an easy task, so the curve is
also read at fixed budgets (:data:`FIXED`): per task and budget, the subnetwork's mean test error
over parents against the whole's, as a ratio and as a difference in points, each with a 95 %
percentile interval from a two-level bootstrap (parents, then test images within each parent,
the same images for a parent's subnetwork and its whole); across tasks, Spearman's rho between
the whole's error (the task's difficulty) and each growth measure, with an interval from the same
resamples and an exact permutation p-value. ``mnist_1k`` is a sample-size task (800 training
images of MNIST: it changes how much data there is, not how hard the task is), so every trend is
read over the difficulty tasks alone as well as over all of them. Parents whose validation
accuracy still rose over their last five epochs are marked (:data:`STILL_IMPROVING`).

MNIST and Fashion-MNIST come from their full frontier runs (``reports/frontier`` and
``reports/frontier_fashion_mnist``: the same protocol with more criteria); the other tasks run
into ``reports/difficulty/<task>/`` (cells committed as they finish; a later run resumes). Each
task's parents train until their validation accuracy has settled (``EPOCHS``; the per-epoch
curve is in the results as the convergence check).

``--jobs`` tasks run side by side, each in one process on one core. ``--gather`` only
summarises what has finished (no training). Writes ``reports/difficulty/results.json`` and
``README.md`` (generated from the JSON alone) and prints the JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "reports" / "difficulty"
#: Where the two plain data sets' curves come from (their full frontier runs).
FULL_RUNS = {"mnist": ROOT / "reports" / "frontier",
             "fashion_mnist": ROOT / "reports" / "frontier_fashion_mnist"}
#: Parent epochs per task: enough for validation accuracy to settle (checked in the results);
#: the 1,000-image task needs many more passes over its few images.
EPOCHS = {"mnist_1k": 100, "mnist_noise": 20, "mnist_rotated": 20, "mnist_clutter": 20,
          "union20": 20}
#: Validation images held out of each task's training images (mnist_1k has only 1,000).
VALIDATION = {"mnist_1k": 200}
BUDGETS = "0.5,0.25,0.125,0.0625,0.03125"
CURVE = "magnitude/uniform"
#: Tasks that vary the training-set size, not the task: read apart from the difficulty trend.
SAMPLE_SIZE = {"mnist_1k": "800 MNIST training images: it varies the training-set size, not "
                            "the task"}
#: The fixed budgets (fractions of the parent's FLOPs) read on every task: the common grid.
FIXED = (0.5, 0.25, 0.125, 0.0625, 0.03125)
#: The fixed budgets the README details (the rest are in ``results.json`` and a short table).
SHOWN = (0.125, 0.0625)
#: Bootstrap resamples of every interval, and the seed they start from (each task adds its own
#: stable offset, so a task's intervals do not depend on which other tasks have finished).
RESAMPLES = 2000
SEED = 0
#: Validation accuracy (a fraction) gained over a parent's last five epochs that marks it as still
#: improving when its training ended: 0.2 points, the bar ``analyses/answer.py`` uses.
STILL_IMPROVING = 0.002
#: A trend holds when its 95 % bootstrap interval excludes 0 and its exact permutation p-value
#: (Holm-corrected within its family) is below this.
ALPHA = 0.05
MEASURES = (("ratio", "error ratio (subnetwork / whole)"),
            ("difference_points", "error difference (points)"))


def _frontier_argv(task: str, parents: str) -> list[str]:
    """One task's frontier run: its cells one after another (tasks run side by side instead,
    see :func:`_run_all`)."""
    return ["--dataset", task, "--parents", parents, "--methods", "magnitude",
            "--allocations", "uniform", "--uniform-methods", "magnitude", "--controls", "whole",
            "--budgets", BUDGETS, "--parent-epochs", str(EPOCHS[task]),
            "--validation", str(VALIDATION.get(task, 5000)), "--jobs", "1",
            "--work", str(ROOT / "out" / "analyses" / "difficulty" / task),
            "--out", str(OUT / task)]


def _command(task: str, parents: str) -> list[str]:
    """One task's frontier run, as a command line."""
    return [sys.executable, str(ROOT / "analyses" / "frontier.py"), *_frontier_argv(task, parents)]


def _log_file(task: str) -> Path:
    """Where one task's frontier run writes its output (appended)."""
    return ROOT / "out" / "analyses" / "difficulty" / f"{task}.log"


def _say(line: str) -> None:
    """One line to stderr in one write, so lines from tasks running side by side stay whole."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _run_all(tasks: list[str], parents: str, jobs: int) -> list[str]:
    """The tasks ``jobs`` at a time, each a frontier run in its own process on one core (its
    cells one after another), its output in ``out/analyses/difficulty/<task>.log``: a task's
    three parents (and then its trajectories and controls) would leave one of two cores idle
    half the time if the task ran its cells two at a time, while the tasks cost about the same.
    A task that fails does not stop the others; returns the failed ones (their logs say why)."""
    from subnet.distributed import run_commands

    commands = [_command(task, parents) for task in tasks]
    logs = [_log_file(task) for task in tasks]

    def start(i: int) -> None:
        _say(f"difficulty: {tasks[i]}: {' '.join(commands[i][2:])} "
             f"(log: {logs[i].relative_to(ROOT)})")

    failed = {}
    for i, done in run_commands(commands, max(1, jobs), threads=1, cwd=ROOT, logs=logs,
                                on_start=start):
        if done.ok:
            _say(f"difficulty: {tasks[i]}: done in {done.seconds:.0f} s")
        else:
            failed[tasks[i]] = done.returncode
    failed_tasks = [task for task in tasks if task in failed]
    for task in failed_tasks:
        _say(f"difficulty: {task}: failed (its frontier run exited {failed[task]}); see "
             f"out/analyses/difficulty/{task}.log")
    return failed_tasks


def _task_row(task: str, results: dict, fingerprint: str | None) -> dict:
    """One task's line of the difficulty curve, from its frontier results."""
    rows = sorted((r for r in results["rows"]
                   if f"{r['method']}/{r['allocation']}" == CURVE),
                  key=lambda r: r["flops_reduction"])
    within = results.get("within_the_whole") or {}
    points = (within.get("methods") or {}).get(CURVE, {})
    parents = results["parents"]
    parents = list(parents.values()) if isinstance(parents, dict) else parents
    curves = [p.get("val_accuracy_by_epoch") for p in parents]
    return {
        "task": task, "fingerprint": fingerprint,
        "n_train": parents[0].get("n_train"), "n_test": parents[0].get("n_test"),
        "parents": len(parents), "parent_epochs": results["settings"]["parent_epochs"],
        "parent_test_accuracy": [p["test_accuracy"] for p in parents],
        "parent_ensemble_test_accuracy": [p.get("ensemble_test_accuracy") for p in parents],
        # the convergence check: validation accuracy gained over the last five epochs
        "last_five_epochs_val_gain": [round(c[-1] - c[-6], 4) if c and len(c) > 5 else None
                                      for c in curves],
        "kind": "sample size" if task in SAMPLE_SIZE else "difficulty",
        "kind_note": SAMPLE_SIZE.get(task),
        "whole_test_accuracy_mean": within.get("whole_test_accuracy_mean"),
        "whole_test_accuracy_sd": within.get("whole_test_accuracy_sd"),
        "within_half_point": points.get("within_half_point"),
        "within_1.25x_error": points.get("within_1.25x_error"),
        "compute_seconds": results.get("compute_seconds"),
        "curve": [{k: r[k] for k in ("budget", "flops_reduction", "test_accuracy_mean",
                                     "test_accuracy_sd", "widths")} for r in rows],
    }


# ------------------------------------------------------------------------ fixed-budget readout

def still_improving(gains, threshold: float = STILL_IMPROVING) -> list[bool | None]:
    """Which parents were still improving when their training ended.

    Args:
        gains: Validation accuracy (fraction) each parent gained over its last five epochs;
            None where the run recorded no validation curve.
        threshold: The gain (fraction) from which a parent counts as still improving.

    Returns:
        Per parent, True (gain >= ``threshold``), False, or None (not recorded).
    """
    return [None if g is None else bool(g >= threshold - 1e-12) for g in gains]


def _correct(array, name: str) -> np.ndarray:
    out = np.asarray(array)
    if out.dtype != bool:
        raise TypeError(f"Invalid value for argument `{name}`: expected a bool array of "
                        f"per-image outcomes. Received: dtype={out.dtype}")
    return out


def error_growth(sub_correct, whole_correct) -> dict:
    """How much a subnetwork's test error grows over its whole network's, pooled over parents.

    Args:
        sub_correct: Bool, shape (parents, images): each parent's subnetwork, image by image.
        whole_correct: Bool, the same shape: each parent's whole network on the same images.

    Returns:
        ``{"sub_error", "whole_error"}`` (fractions, means over parents),
        ``"ratio"`` (sub error / whole error; None where the whole makes no error) and
        ``"difference_points"`` (sub error - whole error, in percentage points).

    Raises:
        ValueError: If the shapes differ or there are no images.
        TypeError: If the outcomes are not bool.
    """
    sub, whole = _correct(sub_correct, "sub_correct"), _correct(whole_correct, "whole_correct")
    if sub.shape != whole.shape or sub.ndim != 2 or sub.size == 0:
        raise ValueError("Invalid value for arguments `sub_correct`, `whole_correct`: expected "
                         "the same non-empty (parents, images) shape. Received: "
                         f"{sub.shape} and {whole.shape}")
    sub_error, whole_error = 1.0 - float(sub.mean()), 1.0 - float(whole.mean())
    return {"sub_error": sub_error, "whole_error": whole_error,
            "ratio": sub_error / whole_error if whole_error > 0 else None,
            "difference_points": 100.0 * (sub_error - whole_error)}


def bootstrap_errors(whole_correct, sub_correct, *, resamples: int = RESAMPLES,
                     seed=SEED) -> tuple[np.ndarray, np.ndarray]:
    """Test errors under a two-level bootstrap: parents resampled with replacement, then the test
    images within each drawn parent, the same images for its whole and all its subnetworks.

    An image's outcomes (the whole and each budget, right or wrong) form one pattern; drawing
    ``n`` images with replacement gives the patterns multinomial counts with the parent's
    pattern frequencies, which is what is drawn (the same distribution as drawing indices).

    Args:
        whole_correct: Bool, shape (parents, images).
        sub_correct: Bool, shape (budgets, parents, images).
        resamples: Bootstrap resamples (>= 100).
        seed: Seed of the resampling (an int or a sequence of ints).

    Returns:
        ``(whole, sub)``: error fractions, shapes (resamples,) and (resamples, budgets), each the
        mean over the resample's parents.

    Raises:
        ValueError: If the shapes do not match or ``resamples`` is below 100.
    """
    whole = _correct(whole_correct, "whole_correct")
    sub = _correct(sub_correct, "sub_correct")
    if whole.ndim != 2 or sub.ndim != 3 or sub.shape[1:] != whole.shape or whole.size == 0:
        raise ValueError("Invalid value for arguments `whole_correct`, `sub_correct`: expected "
                         "shapes (parents, images) and (budgets, parents, images). Received: "
                         f"{whole.shape} and {sub.shape}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError("Invalid value for argument `resamples`: expected an int >= 100. "
                         f"Received: resamples={resamples!r}")
    if sub.shape[0] > 10:
        raise ValueError("Invalid value for argument `sub_correct`: expected at most 10 budgets "
                         f"(2^(budgets+1) patterns). Received: {sub.shape[0]}")
    columns = np.concatenate([whole[None], sub]).astype(np.int64)  # (1 + budgets, P, n)
    parents, n = whole.shape
    patterns = 2 ** len(columns)
    codes = (columns << np.arange(len(columns))[:, None, None]).sum(axis=0)  # (P, n)
    freq = np.stack([np.bincount(c, minlength=patterns) for c in codes]) / n
    wrong = ((np.arange(patterns)[:, None] >> np.arange(len(columns))) & 1) == 0
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, parents, size=(resamples, parents))
    counts = rng.multinomial(n, freq[chosen])  # (resamples, parents, patterns)
    errors = (counts @ wrong).mean(axis=1) / n  # (resamples, 1 + budgets)
    return errors[:, 0], errors[:, 1:]


def _interval(draws) -> list[float] | None:
    draws = np.asarray(draws, float)
    draws = draws[np.isfinite(draws)]
    return None if draws.size == 0 else [float(q) for q in np.quantile(draws, [0.025, 0.975])]


def fixed_budget_readout(whole_correct, sub_correct: dict, flops_reduction: dict | None = None,
                         *, resamples: int = RESAMPLES, seed=SEED) -> tuple[dict, dict]:
    """One task at each fixed budget: the subnetwork's and the whole's mean test error over
    parents and the error growth (ratio and difference), each with its 95 % percentile interval
    from :func:`bootstrap_errors`.

    Args:
        whole_correct: Bool, shape (parents, images).
        sub_correct: ``{budget: bool (parents, images)}``.
        flops_reduction: ``{budget: mean FLOPs reduction}``, copied into the readout.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        ``(readout, draws)``: the readout (JSON-ready: ``whole_error``, ``whole_error_ci`` and
        ``budgets``, keyed by ``repr(budget)``, each with ``sub_error``, ``ratio``,
        ``difference_points``, their ``*_ci``, and ``flops_reduction``), and the resampled
        values (``whole``: (resamples,); ``ratio``, ``difference_points``: ``{budget:
        (resamples,)}``) that the trend across tasks resamples from.
    """
    budgets = sorted(sub_correct, reverse=True)
    whole_draws, sub_draws = bootstrap_errors(
        whole_correct, np.stack([sub_correct[b] for b in budgets]), resamples=resamples,
        seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_draws = np.where(whole_draws[:, None] > 0, sub_draws / whole_draws[:, None],
                               np.nan)
    difference_draws = 100.0 * (sub_draws - whole_draws[:, None])
    readout = {"whole_error": None, "whole_error_ci": _interval(whole_draws), "budgets": {}}
    draws = {"whole": whole_draws, "ratio": {}, "difference_points": {}}
    for i, b in enumerate(budgets):
        point = error_growth(sub_correct[b], whole_correct)
        readout["whole_error"] = point["whole_error"]
        readout["budgets"][repr(b)] = {
            "budget": b, "flops_reduction": (flops_reduction or {}).get(b),
            "sub_error": point["sub_error"], "sub_error_ci": _interval(sub_draws[:, i]),
            "ratio": point["ratio"], "ratio_ci": _interval(ratio_draws[:, i]),
            "difference_points": point["difference_points"],
            "difference_points_ci": _interval(difference_draws[:, i])}
        draws["ratio"][b] = ratio_draws[:, i]
        draws["difference_points"][b] = difference_draws[:, i]
    return readout, draws


def spearman(x, y) -> np.ndarray:
    """Spearman's rank correlation along the last axis (average ranks for ties; NaN where a
    row is constant or holds a NaN)."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, float), np.asarray(y, float)
    x, y = np.broadcast_arrays(x, y)
    bad = np.isnan(x).any(-1) | np.isnan(y).any(-1)
    rx = rankdata(np.nan_to_num(x), axis=-1)
    ry = rankdata(np.nan_to_num(y), axis=-1)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    norm = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (rx * ry).sum(-1) / norm
    return np.where(bad | (norm == 0), np.nan, rho)


def permutation_p(x, y) -> float | None:
    """Exact two-sided permutation p-value of Spearman's rho: the share of all orderings of
    ``y`` whose |rho| with ``x`` is at least the observed one (None with fewer than three
    points, more than eight, or a constant series)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    observed = float(spearman(x, y))
    if not 3 <= len(x) <= 8 or math.isnan(observed):
        return None
    orderings = np.array(list(itertools.permutations(range(len(y)))))
    rhos = spearman(x[None, :], y[orderings])
    return float(np.mean(np.abs(rhos) >= abs(observed) - 1e-12))


def _rho(tasks: list[dict], draws: dict, measure: str, budget: float) -> dict:
    """Spearman's rho between the tasks' whole error and one growth measure at one budget."""
    difficulty = [t["fixed_budget"]["whole_error"] for t in tasks]
    growth = [t["fixed_budget"]["budgets"][repr(budget)][measure] for t in tasks]
    growth = [np.nan if g is None else g for g in growth]
    rho = float(spearman(difficulty, growth))
    resampled = spearman(np.stack([draws[t["task"]]["whole"] for t in tasks], axis=-1),
                         np.stack([draws[t["task"]][measure][budget] for t in tasks], axis=-1))
    return {"tasks": [t["task"] for t in tasks], "rho": None if math.isnan(rho) else rho,
            "rho_ci": _interval(resampled), "permutation_p": permutation_p(difficulty, growth)}


def trend(tasks: list[dict], draws: dict, budgets=FIXED) -> dict:
    """Across tasks, at each fixed budget, Spearman's rho between the task's difficulty (the
    whole's error) and each growth measure: over the difficulty tasks (every task but the
    sample-size ones) and over all tasks. Each rho has a 95 % percentile interval (each
    bootstrap resample's rho, every task's errors resampled at once) and an exact permutation
    p-value; the p-values are Holm-corrected within each set of tasks over budgets x measures.
    A trend ``holds`` when its interval excludes 0 and its corrected p-value is below
    :data:`ALPHA`.

    Args:
        tasks: Task rows with ``task``, ``kind`` and ``fixed_budget`` (see
            :func:`fixed_budget_readout`).
        draws: ``{task: draws}`` from :func:`fixed_budget_readout`, the same resamples count.
        budgets: The fixed budgets.

    Returns:
        ``{repr(budget): {measure: {"difficulty_tasks": ..., "all_tasks": ...}}}``, each with
        ``tasks``, ``rho``, ``rho_ci``, ``permutation_p``, ``holm_p`` and ``holds``.
    """
    from subnet.stats import holm

    sets = {"difficulty_tasks": [t for t in tasks if t["kind"] == "difficulty"],
            "all_tasks": list(tasks)}
    out = {repr(b): {m: {} for m, _ in MEASURES} for b in budgets}
    for name, chosen in sets.items():
        family = []
        for b in budgets:
            for m, _ in MEASURES:
                out[repr(b)][m][name] = entry = _rho(chosen, draws, m, b)
                family.append(entry)
        pvalues = [e["permutation_p"] for e in family]
        adjusted = holm([1.0 if p is None else p for p in pvalues]) if family else []
        for entry, p in zip(family, adjusted, strict=True):
            entry["holm_p"] = None if entry["permutation_p"] is None else float(p)
            ci = entry["rho_ci"]
            entry["holds"] = bool(entry["holm_p"] is not None and entry["holm_p"] < ALPHA
                                  and ci is not None and (ci[0] > 0 or ci[1] < 0))
    return out


def readout_trend(tasks: list[dict]) -> dict:
    """The earlier readouts (largest reduction within 0.5 points, within 1.25x the error; 1x
    where no budget passes) against the whole's error: Spearman's rho and its exact permutation
    p-value over the difficulty tasks and over all tasks (no interval: grid readouts), on the
    FLOPs reduction (as the earlier answer read it) and on the grid point reached (``budgets``:
    the same budget can give slightly different reductions, e.g. a 20-class output layer)."""
    out = {}
    for bar in ("within_half_point", "within_1.25x_error"):
        out[bar] = {}
        for name, chosen in (("difficulty_tasks", [t for t in tasks if t["kind"] == "difficulty"]),
                             ("all_tasks", list(tasks))):
            chosen = [t for t in chosen if t["whole_test_accuracy_mean"] is not None]
            error = [1 - t["whole_test_accuracy_mean"] for t in chosen]
            reduction = [t[bar]["flops_reduction"] if t[bar] else 1.0 for t in chosen]
            budgets = [t[bar]["budget"] if t[bar] else 1.0 for t in chosen]
            entry = {"tasks": [t["task"] for t in chosen], "budgets": budgets}
            for suffix, values in (("", reduction), ("_grid", [-b for b in budgets])):
                rho = float(spearman(error, values)) if len(chosen) >= 3 else math.nan
                entry["rho" + suffix] = None if math.isnan(rho) else rho
                entry["permutation_p" + suffix] = permutation_p(error, values)
            out[bar][name] = entry
    return out


def _cell(folder: Path, settings: dict, kind: str, *parts) -> dict | None:
    """A committed cell of a frontier run: the one whose key matches the run's settings, or the
    only file of that kind and name; None when there is none."""
    from analyses import frontier

    try:
        args = argparse.Namespace(**{**settings, "teacher": settings.get("teacher", "ensemble"),
                                     "out": str(folder)})
        path = frontier._cell_path(args, kind, *parts)
    except (AttributeError, TypeError):  # settings this run did not record
        path = None
    if path is None or not path.exists():
        prefix = f"{kind}_{'_'.join(map(str, parts[:-1] if kind == 'control' else parts))}_"
        found = sorted((folder / "cells").glob(prefix + "*.json"))
        if len(found) != 1:
            return None
        path = found[0]
    return json.loads(path.read_text())


def outcomes(folder: Path, results: dict, budgets=FIXED) -> dict | None:
    """Per-image test outcomes of one task's curve and whole network, from its committed cells.

    Returns:
        ``{"whole": bool (parents, images), "sub": {budget: bool (parents, images)},
        "flops_reduction": {budget: mean}}``, or None when a cell or budget is missing.

    Raises:
        ValueError: If a cell's outcomes disagree with the accuracy it states.
    """
    from analyses.frontier import _key, _unpack

    method, allocation = CURVE.split("/")
    parents = results["parents"]
    parents = list(parents.values()) if isinstance(parents, dict) else parents
    seeds = results["settings"].get("parents") or [p.get("seed", i) for i, p in
                                                    enumerate(parents)]
    n = parents[0].get("n_test")
    dense = parents[0].get("flops")
    whole, sub = [], {b: [] for b in budgets}
    flops = {b: [] for b in budgets}
    for seed in seeds:
        trajectory = _cell(folder, results["settings"], "trajectory", seed, method, allocation)
        reference = _cell(folder, results["settings"], "control", seed, "whole", "1",
                          _key(None, None, None, 1.0))
        if not n or trajectory is None or reference is None or "test_correct" not in reference:
            return None
        points = trajectory.get("checkpoints", {})
        if any(repr(b) not in points or "test_correct" not in points[repr(b)] for b in budgets):
            return None
        for cell, into in [(reference, whole)] + [(points[repr(b)], sub[b]) for b in budgets]:
            bits = _unpack(cell["test_correct"], n)
            if abs(bits.mean() - cell["test_accuracy"]) > 0.5 / n:
                raise ValueError(f"{folder}: parent {seed}: the packed test outcomes give "
                                 f"{bits.mean():.4f}, the cell states {cell['test_accuracy']}")
            into.append(bits)
        for b in budgets:
            flops[b].append(points[repr(b)]["flops"])
    return {"whole": np.stack(whole), "sub": {b: np.stack(sub[b]) for b in budgets},
            "flops_reduction": {b: dense / float(np.mean(flops[b])) if dense else None
                                for b in budgets}}


def task_seed(task: str) -> list[int]:
    """The bootstrap seed of one task: :data:`SEED` and a stable number from its name."""
    return [SEED, zlib.crc32(task.encode())]


def gather(tasks: list[str], fingerprint) -> dict:
    """The difficulty curve from the finished tasks' frontier results; ``fingerprint(task)``
    is called for those only (building a task takes a while). Each task's fixed-budget
    readout comes from its committed cells (None when they are not there); the trend across
    tasks and the conclusion from those readouts."""
    out = {"curve": CURVE, "budgets": [float(b) for b in BUDGETS.split(",")], "tasks": [],
           "missing": []}
    draws = {}
    for task in tasks:
        folder = FULL_RUNS.get(task, OUT / task)
        path = folder / "results.json"
        if not path.exists():
            out["missing"].append(task)
            continue
        results = json.loads(path.read_text())
        if results.get("partial") or not any(
                f"{r['method']}/{r['allocation']}" == CURVE for r in results["rows"]):
            out["missing"].append(task)
            continue
        row = _task_row(task, results, fingerprint(task))
        row["source"] = str(folder.relative_to(ROOT))
        row["still_improving"] = still_improving(row["last_five_epochs_val_gain"])
        found = outcomes(folder, results)
        if found is None:
            row["fixed_budget"] = None
        else:
            row["fixed_budget"], draws[task] = fixed_budget_readout(
                found["whole"], found["sub"], found["flops_reduction"], resamples=RESAMPLES,
                seed=task_seed(task))
            row["fixed_budget"]["seed"] = task_seed(task)
        out["tasks"].append(row)
    read = [t for t in out["tasks"] if t["fixed_budget"] is not None]
    out["fixed_budget"] = {
        "budgets": list(FIXED), "resamples": RESAMPLES, "seed": SEED,
        "interval": "95 % percentile interval, two-level bootstrap: parents resampled with "
                    "replacement, then test images within each drawn parent (the same images "
                    "for its subnetwork and its whole)",
        "rho_interval": "95 % percentile interval of Spearman's rho over the same resamples "
                        "(every task's errors resampled at once: the noise of the measurements, "
                        "not of the choice of tasks)",
        "rho_p": "exact two-sided permutation p-value of Spearman's rho over all orderings of "
                 "the tasks, Holm-corrected within each set of tasks over budgets x measures",
        "holds": f"interval excludes 0 and Holm-corrected p < {ALPHA}",
        "still_improving": f"validation accuracy gained over the last five epochs >= "
                           f"{STILL_IMPROVING} (fraction)",
        "sample_size_tasks": sorted(SAMPLE_SIZE),
        "not_read": [t["task"] for t in out["tasks"] if t["fixed_budget"] is None]}
    out["trend"] = trend(read, draws) if len(read) >= 3 else None
    out["readout_trend"] = readout_trend(out["tasks"]) if len(out["tasks"]) >= 3 else None
    out["conclusion"] = conclusion(out)
    return out


def _fingerprint(task: str) -> str:
    from analyses.tasks import build, fingerprint

    return fingerprint(build(task, seed=0))


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _fraction(budget: float) -> str:
    return str(Fraction(budget).limit_denominator(1000))


def _name(task: dict, labelled: bool) -> str:
    return (f"{task['task']} (sample size)" if labelled and task.get("kind") == "sample size"
            else task["task"])


def _parents(task: dict, labelled: bool) -> str:
    """The parents column: how many, and (labelled) how many were still improving."""
    if not labelled:
        return str(task["parents"])
    marks = task.get("still_improving") or []
    if not marks or all(m is None for m in marks):
        return f"{task['parents']} (no validation curve)"
    rising = sum(bool(m) for m in marks)
    return f"{task['parents']} ({rising} still improving)" if rising else str(task["parents"])


def table(results: dict, labelled: bool = False) -> list[str]:
    """The difficulty curve as a Markdown table, easiest task first: each task's whole network
    (fine-tuned), its error, and the largest reductions within 0.5 points and 1.25x the error.
    ``labelled`` marks the sample-size task and the parents still improving."""
    lines = ["| task | training images | whole (fine-tuned) | its error | largest reduction "
             "within 0.5 points | within 1.25x the error | parents |",
             "|---|---|---|---|---|---|---|"]
    for t in sorted(results["tasks"], key=lambda t: -(t["whole_test_accuracy_mean"] or 0)):
        whole = t["whole_test_accuracy_mean"]
        sd = t["whole_test_accuracy_sd"]

        def point(p, whole=whole):
            if whole is None:
                return "—"
            if p is None:
                return "none on the grid"
            return f"{p['flops_reduction']:.1f}x ({_pct(p['test_accuracy_mean'])})"

        lines.append(f"| {_name(t, labelled)} | {t['n_train']:,} | {_pct(whole)}"
                     f"{'' if sd is None else f' ± {100 * sd:.2f}'} | "
                     f"{_pct(None if whole is None else 1 - whole)} | "
                     f"{point(t['within_half_point'])} | {point(t['within_1.25x_error'])} | "
                     f"{_parents(t, labelled)} |")
    return lines


def _ci(ci, scale: float = 1.0, digits: int = 2) -> str:
    return "" if ci is None else f" [{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]"


def _ratio(value, ci) -> str:
    return "—" if value is None else f"{value:.2f}x{_ci(ci)}"


def _read(results: dict) -> list[dict]:
    """The tasks with a fixed-budget readout, easiest first."""
    return sorted((t for t in results["tasks"] if t.get("fixed_budget")),
                  key=lambda t: t["fixed_budget"]["whole_error"])


def fixed_budget_table(results: dict, budgets=SHOWN) -> list[str]:
    """Per task (easiest first) and budget: the whole's and the subnetwork's test error and the
    growth as a ratio and a difference, each with its 95 % interval."""
    lines = ["| task | whole's error | budget | FLOPs reduction | subnetwork's error | "
             "ratio (sub / whole) | difference (points) | parents |",
             "|---|---|---|---|---|---|---|---|"]
    for b in budgets:
        for t in _read(results):
            f = t["fixed_budget"]
            at = f["budgets"].get(repr(b))
            if at is None:
                continue
            reduction = at.get("flops_reduction")
            lines.append(
                f"| {_name(t, True)} | {_pct(f['whole_error'])}"
                f"{_ci(f['whole_error_ci'], 100)} | {_fraction(b)} | "
                f"{'—' if reduction is None else f'{reduction:.1f}x'} | "
                f"{_pct(at['sub_error'])}{_ci(at['sub_error_ci'], 100)} | "
                f"{_ratio(at['ratio'], at['ratio_ci'])} | {at['difference_points']:+.2f}"
                f"{_ci(at['difference_points_ci'])} | {_parents(t, True)} |")
    return lines


def ratio_table(results: dict) -> list[str]:
    """The error ratio (subnetwork / whole) of every task at every fixed budget."""
    budgets = results["fixed_budget"]["budgets"]
    lines = ["| task | " + " | ".join(_fraction(b) for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for t in _read(results):
        cells = [t["fixed_budget"]["budgets"].get(repr(b)) for b in budgets]
        lines.append(f"| {_name(t, True)} | " + " | ".join(
            "—" if c is None else _ratio(c["ratio"], c["ratio_ci"]) for c in cells) + " |")
    return lines


def _rho_text(entry: dict | None) -> str:
    if entry is None or entry["rho"] is None:
        return "—"
    p = entry["permutation_p"]
    return (f"{entry['rho']:+.2f}{_ci(entry['rho_ci'])}"
            + ("" if p is None else f", p {p:.3f} (Holm {entry['holm_p']:.3f})")
            + (" **holds**" if entry["holds"] else ""))


def trend_table(results: dict) -> list[str]:
    """Spearman's rho between the whole's error and each growth measure, per fixed budget, over
    the difficulty tasks and over all tasks."""
    trend_ = results.get("trend")
    if not trend_:
        return []
    first = next(iter(trend_.values()))["ratio"]
    n_d, n_a = len(first["difficulty_tasks"]["tasks"]), len(first["all_tasks"]["tasks"])
    lines = [f"| budget | growth measure | rho over the {n_d} difficulty tasks | rho over all "
             f"{n_a} tasks |", "|---|---|---|---|"]
    for b in results["fixed_budget"]["budgets"]:
        for m, label in MEASURES:
            entry = trend_[repr(b)][m]
            lines.append(f"| {_fraction(b)} | {label} | {_rho_text(entry['difficulty_tasks'])} "
                         f"| {_rho_text(entry['all_tasks'])} |")
    return lines


def _p(p: float) -> str:
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def conclusion(results: dict) -> str | None:
    """What the fixed-budget trend shows, stated only as far as it holds: a rho counts when its
    95 % interval excludes 0 and its Holm-corrected permutation p-value is below :data:`ALPHA`.
    None without a trend."""
    trend_ = results.get("trend")
    if not trend_:
        return None
    shown = [b for b in SHOWN if repr(b) in trend_]

    def quote(m, which):
        parts = []
        for b in shown:
            e = trend_[repr(b)][m][which]
            if e["rho"] is None:
                parts.append(f"undefined at {_fraction(b)}")
                continue
            p = e["permutation_p"]
            parts.append(f"{e['rho']:+.2f}{_ci(e['rho_ci'])}"
                         + ("" if p is None else f" (p {_p(p)})") + f" at {_fraction(b)}")
        return _listing(parts)

    first = trend_[repr(shown[0])]["ratio"]
    difficulty_tasks = first["difficulty_tasks"]["tasks"]
    left_out = [t["task"] for t in results["tasks"] if t.get("kind") == "sample size"
                and t.get("fixed_budget")]
    held = {m: [(b, trend_[repr(b)][m]["difficulty_tasks"]["rho"])
                for b in results["fixed_budget"]["budgets"]
                if trend_[repr(b)][m]["difficulty_tasks"]["holds"]] for m, _ in MEASURES}
    verdicts = []
    for sign, words in ((1, "by a larger factor"), (-1, "by a smaller factor")):
        at = [_fraction(b) for b, r in held["ratio"] if r * sign > 0]
        if at:
            verdicts.append(f"harder tasks' error grows {words} at {_listing(at)}")
    if not verdicts:
        at = [_fraction(b) for b, r in held["difference_points"] if r > 0]
        verdicts.append(
            ("harder tasks lose more points at " + _listing(at) + ", which a constant factor "
             "on their larger error would give too; no ratio trend holds, so the data do not "
             "show that harder tasks trim less at a fixed budget") if at else
            ("no rho at any budget, on either measure, is distinguishable from zero (95 % "
             "interval excluding 0 and Holm-corrected permutation p below "
             f"{ALPHA}), so the data do not show that harder tasks trim less at a fixed budget"))
    text = (f"At a fixed budget, over the {len(difficulty_tasks)} difficulty tasks"
            + (f" ({_listing(left_out)}, a sample-size task, left out)" if left_out else "")
            + ", Spearman's rho between the whole's error and the error ratio is "
            + quote("ratio", "difficulty_tasks") + ", and with the difference in points "
            + quote("difference_points", "difficulty_tasks") + ": " + "; ".join(verdicts) + ".")
    if left_out:
        text += (f" Over all {len(first['all_tasks']['tasks'])} tasks the ratio's rho is "
                 + quote("ratio", "all_tasks") + ".")
    old = (results.get("readout_trend") or {}).get("within_1.25x_error")
    if old and left_out and old["all_tasks"]["rho"] is not None \
            and old["difficulty_tasks"]["rho"] is not None:
        text += (f" The earlier readout, the largest reduction within 1.25x the whole's error, "
                 f"has rho {old['all_tasks']['rho']:+.2f} over all tasks "
                 f"(p {_p(old['all_tasks']['permutation_p'])}) and "
                 f"{old['difficulty_tasks']['rho']:+.2f} without {_listing(left_out)} "
                 f"(p {_p(old['difficulty_tasks']['permutation_p'])})")
        same = set(old["difficulty_tasks"].get("budgets") or [])
        text += (f"; without {_listing(left_out)} every task reaches the same grid point, "
                 f"{_fraction(same.pop())}, so its rho comes only from small FLOPs differences "
                 "at that one budget (output layers of different widths), not from a trend"
                 if len(same) == 1 else "") + "."
    return text


def convergence_lines(results: dict) -> list[str]:
    """Each task's parents: validation accuracy gained over the last five epochs, the ones still
    improving marked."""
    out = []
    for t in results["tasks"]:
        gains = t["last_five_epochs_val_gain"]
        marks = t.get("still_improving") or still_improving(gains)
        if all(g is None for g in gains):
            out.append(f"- {t['task']}: no validation curve recorded (its parents come from "
                       f"`{t.get('source', '')}`)")
            continue
        out.append(f"- {_name(t, True)}: " + ", ".join(
            "—" if g is None else f"{100 * g:+.2f}" + (" (still improving)" if m else "")
            for g, m in zip(gains, marks, strict=True)))
    return out


def readout_trend_text(results: dict) -> str | None:
    """The earlier readouts' rho with the whole's error, with and without the sample-size task."""
    old = results.get("readout_trend")
    if not old:
        return None
    parts = []
    for key, label in (("within_half_point", "within 0.5 points"),
                       ("within_1.25x_error", "within 1.25x the error")):
        d, a = old[key]["difficulty_tasks"], old[key]["all_tasks"]
        if d["rho"] is None or a["rho"] is None:
            continue
        part = (f"{label}: {d['rho']:+.2f} (p {d['permutation_p']:.2f}) over the "
                f"{len(d['tasks'])} difficulty tasks, {a['rho']:+.2f} (p "
                f"{a['permutation_p']:.2f}) over all {len(a['tasks'])}")
        if "budgets" in d:
            grid = [f"{e['rho_grid']:+.2f} (p {e['permutation_p_grid']:.2f})"
                    if e["rho_grid"] is not None else
                    "undefined (every task at " + _fraction(e["budgets"][0]) + ")"
                    for e in (d, a)]
            part += f"; on the grid point reached, {grid[0]} and {grid[1]}"
        parts.append(part)
    if not parts:
        return None
    return ("The earlier readouts, the largest reduction on the grid, against the whole's error "
            "(Spearman's rho, exact permutation p; 1x where no budget passes): "
            + "; ".join(parts) + ".")


def readme(results: dict) -> str:
    lines = ["# Is MNIST too simple? A difficulty curve", "",
             "Generated by `python analyses/difficulty.py` from `results.json`. The blog's "
             f"network on each task; curve: {CURVE} (gradual prune-retrain, each checkpoint "
             "fine-tuned to saturation with distillation); the reference is the whole network "
             "fine-tuned with the same recipe. Reductions are on the budget grid "
             f"{results['budgets']} (a lower bound between grid points); accuracies are test "
             "means over parents. "
             + "; ".join(f"{task} is a sample-size task ({note})"
                         for task, note in SAMPLE_SIZE.items())
             + ": it is labelled so, and every trend is also read without it.", "",
             *table(results, labelled=True)]
    if results["missing"]:
        lines += ["", "Not finished yet: " + ", ".join(results["missing"]) + "."]
    fixed = results.get("fixed_budget")
    if fixed and any(t.get("fixed_budget") for t in results["tasks"]):
        lines += ["", "## At fixed budgets", "",
                  "The readouts above depend on the grid and on what a bar means for an easy "
                  "task (0.5 points is most of MNIST's error). At a fixed budget the question is "
                  "how much the error grows: as a ratio (subnetwork / whole, both means over "
                  "parents) and as a difference in points. Brackets: " + fixed["interval"]
                  + f", {fixed['resamples']:,} resamples, seeded. A difference in points grows "
                  "with the whole's error even when the ratio stays the same, so the ratio is "
                  "the measure that says whether harder tasks trim less.", "",
                  *fixed_budget_table(results), "",
                  "The error ratio at every fixed budget:", "", *ratio_table(results)]
    if fixed and fixed.get("not_read"):
        lines += ["", "No per-image outcomes for: " + ", ".join(fixed["not_read"]) + "."]
    if results.get("trend"):
        lines += ["", "## Does the growth follow difficulty?", "",
                  "Spearman's rho between each task's difficulty (the whole's error) and its "
                  "error growth, over the difficulty tasks (the sample-size task left out) and "
                  "over all tasks. Brackets: " + fixed["rho_interval"] + "; p: "
                  + fixed["rho_p"] + ". A trend holds when " + fixed["holds"] + ".", "",
                  *trend_table(results)]
        old = readout_trend_text(results)
        if old:
            lines += ["", old]
    if results.get("conclusion"):
        lines += ["", "**Conclusion.** " + results["conclusion"]]
    lines += ["", "## Convergence", "",
              "Validation accuracy gained over each parent's last five epochs (points); a parent "
              f"is still improving from +{100 * STILL_IMPROVING:.1f} points. Their subnetworks "
              "and their whole network are fine-tuned with the same recipe, so each task's "
              "comparison stays like for like, but those parents are not converged networks.",
              "", *convergence_lines(results), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from analyses.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="all",
                        help="the tasks to run, comma-separated, or 'all' (the summary always "
                             "covers every finished task)")
    parser.add_argument("--parents", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2, help="tasks run side by side")
    parser.add_argument("--gather", action="store_true", help="summarise only; train nothing")
    args = parser.parse_args(argv)
    tasks = list(TASKS) if args.tasks == "all" else args.tasks.split(",")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown tasks {unknown}; the tasks are {list(TASKS)}")
    started = time.perf_counter()
    failed = [] if args.gather else _run_all([t for t in tasks if t not in FULL_RUNS],
                                             args.parents, args.jobs)
    # The curve is every finished task's, whichever ran this time.
    results = gather(list(TASKS), _fingerprint)
    results["wall_seconds_this_run"] = round(time.perf_counter() - started, 1)
    from subnet.io import atomic_write_text

    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "results.json", json.dumps(results, indent=1))
    atomic_write_text(OUT / "README.md", readme(results))
    print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

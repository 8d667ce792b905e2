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
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def _frontier_argv(task: str, parents: str) -> list[str]:
    """One task's frontier run: its cells one after another (tasks run side by side instead,
    see :func:`_run_all`)."""
    return ["--dataset", task, "--parents", parents, "--methods", "magnitude",
            "--allocations", "uniform", "--uniform-methods", "magnitude", "--controls", "whole",
            "--budgets", BUDGETS, "--parent-epochs", str(EPOCHS[task]),
            "--validation", str(VALIDATION.get(task, 5000)), "--jobs", "1",
            "--work", str(ROOT / "out" / "analyses" / "difficulty" / task),
            "--out", str(OUT / task)]


def _run(task: str, parents: str) -> None:
    """One task's frontier run, in its own process on one core (its cells one after another),
    its output in ``out/analyses/difficulty/<task>.log``."""
    argv = [sys.executable, str(ROOT / "analyses" / "frontier.py"), *_frontier_argv(task, parents)]
    log = ROOT / "out" / "analyses" / "difficulty" / f"{task}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
           "OMP_NUM_THREADS": "1"}
    _say(f"difficulty: {task}: {' '.join(argv[2:])} (log: {log.relative_to(ROOT)})")
    started = time.perf_counter()
    with open(log, "a") as out:
        subprocess.run(argv, check=True, cwd=ROOT, env=env, stdout=out, stderr=out)
    _say(f"difficulty: {task}: done in {time.perf_counter() - started:.0f} s")


def _say(line: str) -> None:
    """One line to stderr in one write, so lines from tasks running side by side stay whole."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _run_all(tasks: list[str], parents: str, jobs: int) -> list[str]:
    """The tasks ``jobs`` at a time, each on one core: a task's three parents (and then its
    trajectories and controls) would leave one of two cores idle half the time if the task
    ran its cells two at a time, while the tasks cost about the same. A task that fails does
    not stop the others; returns the failed ones (their logs say why)."""
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = {task: pool.submit(_run, task, parents) for task in tasks}
    failed = [task for task, future in futures.items() if future.exception() is not None]
    for task in failed:
        _say(f"difficulty: {task}: failed ({futures[task].exception()}); see "
             f"out/analyses/difficulty/{task}.log")
    return failed


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
        "whole_test_accuracy_mean": within.get("whole_test_accuracy_mean"),
        "whole_test_accuracy_sd": within.get("whole_test_accuracy_sd"),
        "within_half_point": points.get("within_half_point"),
        "within_1.25x_error": points.get("within_1.25x_error"),
        "compute_seconds": results.get("compute_seconds"),
        "curve": [{k: r[k] for k in ("budget", "flops_reduction", "test_accuracy_mean",
                                     "test_accuracy_sd", "widths")} for r in rows],
    }


def gather(tasks: list[str], fingerprint) -> dict:
    """The difficulty curve from the finished tasks' frontier results; ``fingerprint(task)``
    is called for those only (building a task takes a while)."""
    out = {"curve": CURVE, "budgets": [float(b) for b in BUDGETS.split(",")], "tasks": [],
           "missing": []}
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
        out["tasks"].append(row)
    return out


def _fingerprint(task: str) -> str:
    from analyses.tasks import build, fingerprint

    return fingerprint(build(task, seed=0))


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def table(results: dict) -> list[str]:
    """The difficulty curve as a Markdown table, easiest task first: each task's whole network
    (fine-tuned), its error, and the largest reductions within 0.5 points and 1.25x the error."""
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

        lines.append(f"| {t['task']} | {t['n_train']:,} | {_pct(whole)}"
                     f"{'' if sd is None else f' ± {100 * sd:.2f}'} | "
                     f"{_pct(None if whole is None else 1 - whole)} | "
                     f"{point(t['within_half_point'])} | {point(t['within_1.25x_error'])} | "
                     f"{t['parents']} |")
    return lines


def readme(results: dict) -> str:
    lines = ["# Is MNIST too simple? A difficulty curve", "",
             "Generated by `python analyses/difficulty.py` from `results.json`. The blog's "
             f"network on each task; curve: {CURVE} (gradual prune-retrain, each checkpoint "
             "fine-tuned to saturation with distillation); the reference is the whole network "
             "fine-tuned with the same recipe. Reductions are on the budget grid "
             f"{results['budgets']} (a lower bound between grid points); accuracies are test "
             "means over parents.", "",
             *table(results)]
    if results["missing"]:
        lines += ["", "Not finished yet: " + ", ".join(results["missing"]) + "."]
    lines += ["", "Convergence: validation accuracy gained over each parent's last five "
              "epochs: " + "; ".join(
                  f"{t['task']} {t['last_five_epochs_val_gain']}" for t in results["tasks"])
              + ".", ""]
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
    from subnet._io import atomic_write_text

    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "results.json", json.dumps(results, indent=1))
    atomic_write_text(OUT / "README.md", readme(results))
    print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

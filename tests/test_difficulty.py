"""The difficulty curve's fixed-budget readout (analyses/difficulty.py) on hand-made outcomes:
error growth, the two-level bootstrap, the trend without the sample-size task, convergence."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "analyses"))

import difficulty  # noqa: E402

T, F = True, False


def test_error_growth_is_the_pooled_error_ratio_and_difference():
    sub = np.array([[T, F, T, T], [T, T, F, F]])  # 3 wrong of 8
    whole = np.array([[T, T, T, F], [T, T, T, T]])  # 1 wrong of 8
    got = difficulty.error_growth(sub, whole)
    assert got["sub_error"] == pytest.approx(3 / 8)
    assert got["whole_error"] == pytest.approx(1 / 8)
    assert got["ratio"] == pytest.approx(3.0)
    assert got["difference_points"] == pytest.approx(25.0)
    assert difficulty.error_growth(sub, np.ones_like(whole))["ratio"] is None  # no error
    with pytest.raises(ValueError, match="the same non-empty"):
        difficulty.error_growth(sub, whole[:, :3])
    with pytest.raises(TypeError, match="bool array"):
        difficulty.error_growth(sub.astype(int), whole)


def test_bootstrap_has_one_row_per_resample_and_is_seeded():
    whole = np.array([[F, T, T, T, T, T], [T, F, F, T, T, T]])
    sub = np.stack([whole, whole & np.array([T, T, F, T, T, T])])  # budgets x parents x images
    w, s = difficulty.bootstrap_errors(whole, sub, resamples=300, seed=[0, 1])
    assert w.shape == (300,) and s.shape == (300, 2)
    w2, s2 = difficulty.bootstrap_errors(whole, sub, resamples=300, seed=[0, 1])
    assert np.array_equal(w, w2) and np.array_equal(s, s2)
    w3, _ = difficulty.bootstrap_errors(whole, sub, resamples=300, seed=[0, 2])
    assert not np.array_equal(w, w3)
    # the same images for a parent's subnetwork and its whole: identical outcomes never
    # differ, and a subnetwork wrong wherever its whole is (and once more) never beats it
    assert np.array_equal(s[:, 0], w)
    assert np.all(s[:, 1] >= w) and np.any(s[:, 1] > w)
    with pytest.raises(ValueError, match="resamples"):
        difficulty.bootstrap_errors(whole, sub, resamples=10)
    with pytest.raises(ValueError, match=r"\(budgets, parents, images\)"):
        difficulty.bootstrap_errors(whole, sub[0])


def test_bootstrap_resamples_parents_and_images_within_them():
    # parents: every image wrong, or every image right: only parents vary -> 0, 1/2 or 1
    whole = np.array([[F, F, F], [T, T, T]])
    w, _ = difficulty.bootstrap_errors(whole, whole[None], resamples=2000, seed=0)
    assert set(np.round(w, 6)) == {0.0, 0.5, 1.0}
    assert np.mean(w == 0.5) == pytest.approx(0.5, abs=0.05)
    # one parent: only images vary; one wrong of four -> multiples of 1/4 around 1/4
    one = np.array([[F, T, T, T]])
    w, _ = difficulty.bootstrap_errors(one, one[None], resamples=4000, seed=0)
    assert set(np.round(4 * w, 6)) <= {0.0, 1.0, 2.0, 3.0, 4.0} and len(set(w)) > 2
    assert w.mean() == pytest.approx(0.25, abs=0.02)
    assert w.var() == pytest.approx(0.25 * 0.75 / 4, rel=0.15)


def test_fixed_budget_readout_states_points_and_intervals_per_budget():
    rng = np.random.default_rng(3)
    whole = rng.random((3, 400)) > 0.05
    sub = {0.125: whole & (rng.random((3, 400)) > 0.05), 0.0625: whole & (rng.random((3, 400))
                                                                          > 0.10)}
    readout, draws = difficulty.fixed_budget_readout(whole, sub, {0.125: 8.1, 0.0625: 16.2},
                                                     resamples=500, seed=1)
    assert list(readout["budgets"]) == ["0.125", "0.0625"]
    at = readout["budgets"]["0.0625"]
    point = difficulty.error_growth(sub[0.0625], whole)
    assert at["ratio"] == pytest.approx(point["ratio"])
    assert at["difference_points"] == pytest.approx(point["difference_points"])
    assert at["flops_reduction"] == 16.2
    for key in ("sub_error", "ratio", "difference_points"):
        low, high = at[key + "_ci"]
        assert low < at[key] < high
    assert readout["whole_error"] == pytest.approx(1 - whole.mean())
    assert draws["whole"].shape == (500,) and draws["ratio"][0.125].shape == (500,)
    assert json.loads(json.dumps(readout)) == readout


def test_spearman_and_its_exact_permutation_p():
    assert difficulty.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert difficulty.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(difficulty.spearman([1, 2, 3], [5, 5, 5]))
    rows = difficulty.spearman(np.array([[1, 2, 3], [1, 2, 3]]), np.array([[1, 2, 3], [3, 2, 1]]))
    assert np.allclose(rows, [1.0, -1.0])
    # a perfect order among 4 points: 2 of the 24 orderings are as extreme
    assert difficulty.permutation_p([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(2 / 24)
    assert difficulty.permutation_p([1, 2], [1, 2]) is None


def test_still_improving_marks_gains_from_the_threshold():
    gains = [0.0048, 0.0019, 0.002, -0.0044, None]
    assert difficulty.still_improving(gains) == [True, False, True, False, None]


def test_the_earlier_readouts_trend_is_read_on_reductions_and_on_grid_points():
    def row(task, error, budget, reduction):
        point = {"budget": budget, "flops_reduction": reduction}
        return {"task": task, "kind": "sample size" if task == "mnist_1k" else "difficulty",
                "whole_test_accuracy_mean": 1 - error, "within_half_point": None,
                "within_1.25x_error": point}

    rows = [row("mnist", 0.006, 0.125, 8.05), row("mnist_noise", 0.013, 0.125, 8.05),
            row("union20", 0.058, 0.125, 8.03), row("mnist_1k", 0.049, 0.25, 4.27)]
    got = difficulty.readout_trend(rows)["within_1.25x_error"]
    difficulty_tasks = got["difficulty_tasks"]
    assert difficulty_tasks["tasks"] == ["mnist", "mnist_noise", "union20"]
    assert difficulty_tasks["rho"] < 0  # union20's 8.03x ranks below 8.05x
    assert difficulty_tasks["rho_grid"] is None  # one grid point: no trend to rank
    assert got["all_tasks"]["rho_grid"] is not None
    assert got["all_tasks"]["budgets"] == [0.125, 0.125, 0.125, 0.25]
    half = difficulty.readout_trend(rows)["within_half_point"]["all_tasks"]
    assert half["budgets"] == [1.0] * 4 and half["rho"] is None  # 1x where none passes


# ------------------------------------------------------------- a whole gather on made-up runs

SETTINGS = {"dataset": "x", "parent_epochs": 20, "validation": 100, "teacher_passes": 16,
            "step": 0.25, "retrain_epochs": 0.5, "finetune_epochs": 12, "patience": 3,
            "train_subset": None, "test_subset": None, "selection": 50, "masks": 10,
            "parents": [0, 1]}


def _pack(bits) -> str:
    from analyses.frontier import _pack

    return _pack(bits)


def _write_task(folder: Path, task: str, whole_wrong: int, extra_wrong: list[int],
                gains: list[float], n: int = 4000) -> None:
    """A finished task: two parents, the whole wrong on ``whole_wrong`` images, each budget's
    subnetwork wrong there and on ``extra_wrong[i]`` more (the same in both parents)."""
    from analyses import frontier

    settings = {**SETTINGS, "dataset": task}
    args = argparse.Namespace(**settings, teacher="ensemble", out=str(folder))
    whole = np.arange(n) >= whole_wrong
    rows = []
    for seed in settings["parents"]:
        checkpoints = {}
        for b, extra in zip(difficulty.FIXED, extra_wrong, strict=True):
            sub = np.arange(n) >= whole_wrong + extra
            checkpoints[repr(b)] = {"test_correct": _pack(sub), "test_accuracy": sub.mean(),
                                    "flops": int(16000 * b)}
        path = frontier._cell_path(args, "trajectory", seed, "magnitude", "uniform")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"checkpoints": checkpoints, "done": True}))
        path = frontier._cell_path(args, "control", seed, "whole", "1",
                                   frontier._key(None, None, None, 1.0))
        path.write_text(json.dumps({"test_correct": _pack(whole),
                                    "test_accuracy": whole.mean()}))
        # another recipe's whole (a different settings key): never read
        decoy = path.with_name(path.name.replace(path.stem.split("_")[-1], "0" * 12))
        decoy.write_text(json.dumps({"test_correct": _pack(np.zeros(n, bool)),
                                     "test_accuracy": 0.0}))
    for b in difficulty.FIXED:
        rows.append({"method": "magnitude", "allocation": "uniform", "budget": b,
                     "flops_reduction": 1 / b, "test_accuracy_mean": 0.9,
                     "test_accuracy_sd": 0.0, "widths": [1, 2, 3]})
    parents = [{"seed": s, "test_accuracy": 0.9, "n_train": 800 if task == "mnist_1k" else 5000,
                "n_test": n, "flops": 16000, "val_accuracy_by_epoch": [0.9] * 9 + [0.9 + g]}
               for s, g in zip(settings["parents"], gains, strict=True)]
    (folder / "results.json").write_text(json.dumps({
        "rows": rows, "settings": settings, "parents": parents,
        "within_the_whole": {"whole_test_accuracy_mean": 1 - whole_wrong / n,
                             "whole_test_accuracy_sd": 0.0, "methods": {}}}))


def _gather(tmp_path, monkeypatch, tasks: dict) -> dict:
    monkeypatch.setattr(difficulty, "ROOT", tmp_path)
    monkeypatch.setattr(difficulty, "OUT", tmp_path)
    monkeypatch.setattr(difficulty, "FULL_RUNS", {})
    for task, (whole_wrong, extra, gains) in tasks.items():
        _write_task(tmp_path / task, task, whole_wrong, extra, gains)
    return difficulty.gather(list(tasks), lambda task: f"print-{task}")


def test_gather_reads_cells_excludes_the_sample_size_task_and_marks_convergence(
        tmp_path, monkeypatch):
    # six difficulty tasks whose error ratio and difference rise with their error at every
    # budget, and the sample-size task: nearly the easiest, with a large growth
    names = ("mnist", "mnist_noise", "mnist_rotated", "mnist_clutter", "union20", "fashion_mnist")
    tasks = {name: (20 * (i + 1), [10 * (i + 1) ** 2 * (j + 1) for j in range(5)], [0.0, 0.0])
             for i, name in enumerate(names)}
    tasks["mnist_noise"] = (*tasks["mnist_noise"][:2], [0.005, 0.0])
    tasks["mnist_clutter"] = (*tasks["mnist_clutter"][:2], [0.0, 0.001])
    tasks["mnist_1k"] = (30, [80 * (j + 1) for j in range(5)], [0.0, 0.0])
    results = _gather(tmp_path, monkeypatch, tasks)
    rows = {t["task"]: t for t in results["tasks"]}
    assert rows["mnist_1k"]["kind"] == "sample size" and rows["mnist"]["kind"] == "difficulty"
    assert rows["mnist_noise"]["still_improving"] == [True, False]
    assert rows["mnist_clutter"]["still_improving"] == [False, False]
    at = rows["mnist_noise"]["fixed_budget"]["budgets"]["0.0625"]  # 40 wrong, then 160 more
    assert at["ratio"] == pytest.approx(200 / 40)  # the decoy whole (all wrong) was not read
    assert at["difference_points"] == pytest.approx(100 * 160 / 4000)
    assert at["flops_reduction"] == pytest.approx(16.0)
    ratio = results["trend"]["0.125"]["ratio"]
    assert ratio["difficulty_tasks"]["tasks"] == list(names)
    assert "mnist_1k" in ratio["all_tasks"]["tasks"]
    assert ratio["difficulty_tasks"]["rho"] == pytest.approx(1.0)
    assert ratio["difficulty_tasks"]["permutation_p"] == pytest.approx(2 / 720)
    # Holm over 5 budgets x 2 measures, every p-value 2/720
    assert ratio["difficulty_tasks"]["holm_p"] == pytest.approx(10 * 2 / 720)
    assert ratio["all_tasks"]["rho"] < 0.9  # the sample-size task breaks the order
    assert ratio["difficulty_tasks"]["holds"] and not ratio["all_tasks"]["holds"]
    assert "grows by a larger factor" in results["conclusion"]
    assert "mnist_1k, a sample-size task, left out" in results["conclusion"]
    text = difficulty.readme(json.loads(json.dumps(results)))
    assert "| mnist_1k (sample size) |" in text
    assert "3 (1 still improving)" not in text and "2 (1 still improving)" in text
    assert "+0.50 (still improving)" in text


def test_the_conclusion_says_no_trend_when_none_holds(tmp_path, monkeypatch):
    tasks = {"mnist": (4, [2, 2, 2, 2, 2], [0.0, 0.0]),
             "mnist_noise": (6, [1, 1, 1, 1, 1], [0.0, 0.0]),
             "mnist_rotated": (8, [3, 3, 3, 3, 3], [0.0, 0.0])}
    results = _gather(tmp_path, monkeypatch, tasks)
    assert results["trend"]["0.125"]["ratio"]["difficulty_tasks"]["permutation_p"] is not None
    assert not any(e[s]["holds"] for b in results["trend"].values() for e in b.values()
                   for s in e)
    assert "the data do not show that harder tasks trim less at a fixed budget" in \
        results["conclusion"]


def test_a_task_without_cells_is_listed_not_read(tmp_path, monkeypatch):
    results = _gather(tmp_path, monkeypatch, {"mnist": (2, [0, 1, 1, 2, 3], [0.0, 0.0])})
    for path in (tmp_path / "mnist" / "cells").glob("trajectory_*"):
        path.unlink()
    results = difficulty.gather(["mnist"], lambda task: None)
    assert results["tasks"][0]["fixed_budget"] is None
    assert results["fixed_budget"]["not_read"] == ["mnist"] and results["trend"] is None
    assert "No per-image outcomes for: mnist." in difficulty.readme(results)


def test_the_committed_difficulty_report_is_generated_from_its_results():
    folder = ROOT / "reports" / "difficulty"
    results = json.loads((folder / "results.json").read_text())
    assert (folder / "README.md").read_text() == difficulty.readme(results)
    read = [t for t in results["tasks"] if t.get("fixed_budget")]
    assert {t["task"] for t in read} >= {"mnist", "mnist_1k", "fashion_mnist"}
    assert all(set(t["fixed_budget"]["budgets"]) == {repr(b) for b in difficulty.FIXED}
               for t in read)
    assert "mnist_1k" not in results["trend"]["0.125"]["ratio"]["difficulty_tasks"]["tasks"]

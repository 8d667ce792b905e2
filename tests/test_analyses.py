"""The analyses/ scripts' own logic on made-up measurements: thresholds, references, caching."""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analyses"))

import _trained  # noqa: E402
import frontier  # noqa: E402
import subnetworks  # noqa: E402
import width_dropout_sweep as sweep  # noqa: E402

import subnet  # noqa: E402

RATES = [0, 0.5, 0.9]


def _row(width, seed, dense, conv=(0.9, 0.9, 0.9), off=0.9):
    return {"dataset": "mnist", "width": width, "seed": seed, "off": off,
            "sites": {"dense": dict(zip(("0", "0.5", "0.9"), dense, strict=True)),
                      "conv": dict(zip(("0", "0.5", "0.9"), conv, strict=True))}}


def test_sweep_threshold_is_the_width_from_which_every_wider_network_matches():
    args = argparse.Namespace(widths=[32, 64, 128], rates=RATES)
    # at 0.9: 32 fails, 64 matches, 128 matches -> from 64. At 0.5 a dip at 64 -> from 128.
    rows = [_row(32, s, (0.98, 0.978, 0.90)) for s in (0, 1)]
    rows += [_row(64, s, (0.98, 0.97, 0.978)) for s in (0, 1)]
    rows += [_row(128, s, (0.98, 0.979, 0.976)) for s in (0, 1)]
    summary = sweep.summarize(rows, args)
    assert summary["matching_from_width"]["mnist/dense"] == {"0": 32, "0.5": 128, "0.9": 64}
    cell = summary["cells"]["mnist/dense"][0]
    assert cell["width"] == 32 and cell["seeds"] == 2
    assert np.allclose(cell["mean"], [0.98, 0.978, 0.90]) and np.allclose(cell["std"], 0)


def test_sweep_whole_is_the_better_of_rate_0_and_the_training_rate():
    args = argparse.Namespace(widths=[32], rates=RATES)
    # conv dropout off is worse than on (0.95 vs 0.98): the whole is 0.98, so 0.9 (0.976) matches
    # and rate 0 itself falls 3 points short.
    rows = [_row(32, s, (0.98, 0.98, 0.98), conv=(0.95, 0.98, 0.976)) for s in (0, 1, 2)]
    summary = sweep.summarize(rows, args)
    assert summary["matching_from_width"]["mnist/conv"] == {"0": None, "0.5": 32, "0.9": 32}


def _results(summary, off=0.98, on=0.985, finetuned=0.99):
    return {"blog": {"accuracy_dropout_off": off, "accuracy_dropout_on_mean": on},
            "comparison": {"dense": {"params": 1000, "flops": 8000, "finetuned": {
                "accuracy_mean": finetuned, "accuracy_std": 0.001}},
                "summary": summary,
                "rows": [{"method": e["method"], "budget_flops_fraction":
                          e["budget_flops_fraction"], "widths": {"a": 1}} for e in summary]}}


def _entry(method, budget, accuracy, params=None):
    return {"method": method, "budget_flops_fraction": budget,
            "params": params or int(1000 * budget), "flops": int(8000 * budget),
            "accuracy_finetuned_mean": accuracy, "accuracy_finetuned_std": 0.002, "seeds": 3}


def test_smallest_within_tolerance_per_method_against_each_reference():
    summary = [_entry("banzhaf_iterative", 0.5, 0.986), _entry("banzhaf_iterative", 0.25, 0.981),
               _entry("magnitude", 0.5, 0.983), _entry("magnitude", 0.25, 0.95),
               _entry("random", 0.5, 0.90), _entry("tfmot", 0.5, 0.99, params=400),
               _entry("tfmot", 0.25, 0.985, params=260)]
    found = subnetworks.tables(_results(summary))
    refs = found["references"]
    assert refs == {"whole_best_of_dropout_off_and_on": 0.985, "whole_finetuned_same_budget": 0.99}
    best = found["smallest"]["whole_best_of_dropout_off_and_on"]
    assert best["0.1_points"]["banzhaf_iterative"]["budget_flops_fraction"] == 0.5
    assert best["0.5_points"]["banzhaf_iterative"]["budget_flops_fraction"] == 0.25
    assert best["0.5_points"]["banzhaf_iterative"]["flops_reduction"] == pytest.approx(4.0)
    assert best["0.1_points"]["magnitude"] is None
    assert best["0.5_points"]["magnitude"]["budget_flops_fraction"] == 0.5
    assert best["0.5_points"]["random"] is None and best["0.5_points"]["reinit"] is None
    assert best["0.1_points"]["tfmot"]["params"] == 260  # tfmot: the fewest nonzero weights
    alike = found["smallest"]["whole_finetuned_same_budget"]
    assert alike["0.1_points"]["tfmot"]["params"] == 400
    assert alike["0.5_points"]["banzhaf_iterative"]["budget_flops_fraction"] == 0.5
    assert "none of the budgets" == subnetworks._cell(None)
    assert "nonzero weights (dense shape" in subnetworks._cell(
        best["0.1_points"]["tfmot"], "tfmot")


def test_trained_models_are_named_by_everything_that_made_them(mnist):
    small = mnist.subset(n_train=100)
    a = _trained.path_of(small, 32, epochs=1, seed=0)
    assert a.name == "mnist_n100_seed_cnn_32_r0.5-0.5-0.5_e1_s0.keras"
    assert _trained.path_of(small, 32, (0.5, 0.5, 0.9), epochs=1, seed=1).name == \
        "mnist_n100_seed_cnn_32_r0.5-0.5-0.9_e1_s1.keras"


def test_a_network_file_name_says_what_made_it(mnist):
    for rates, n, units, epochs, seed in (((0.5, 0.5, 0.5), 200, 500, 12, 0),
                                          ((0.5, 0.5, 0.9), 100, 32, 1, 2)):
        path = _trained.path_of(mnist.subset(n_train=n), units, rates, epochs=epochs, seed=seed)
        assert _trained.parse(path) == {"dataset": "mnist", "train_subset": n, "units": units,
                                        "rates": rates, "epochs": epochs, "seed": seed}
    assert _trained.parse("fashion_mnist_seed_cnn_64_r0.5-0.5-0.5_e1_s1.keras") == {
        "dataset": "fashion_mnist", "train_subset": None, "units": 64, "rates": (0.5, 0.5, 0.5),
        "epochs": 1, "seed": 1}
    with pytest.raises(ValueError, match="not a trained-network name"):
        _trained.parse("model.keras")


def test_training_a_named_network_rejects_bad_names(capsys, mnist):
    with pytest.raises(SystemExit) as exit_:
        _trained.main(["out/model.h5"])
    assert exit_.value.code == 2 and "not a trained-network name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # the full set is named without its size
        _trained.main(["mnist_n60000_seed_cnn_8_r0.5-0.5-0.5_e1_s0.keras"])
    assert exit_.value.code == 2 and "does not match the name" in capsys.readouterr().err


@pytest.mark.slow
def test_trained_is_cached(mnist, tmp_path):
    small = mnist.subset(n_train=64)
    first = _trained.trained(small, 8, epochs=1, seed=0, cache=tmp_path)
    path = _trained.path_of(small, 8, epochs=1, seed=0, cache=tmp_path)
    assert path.exists()
    again = _trained.trained(small, 8, epochs=1, seed=0, cache=tmp_path)
    for w1, w2 in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(w1, w2)


def test_convergence_compares_the_longest_training_with_the_next():
    rows = [{"epochs": e, "best": b} for e, b in ((3, 0.980), (6, 0.9885), (12, 0.9891))]
    found = subnetworks.trend(rows)
    assert found["last_step"] == [6, 12] and found["last_gain"] == pytest.approx(0.0006)
    assert found["converged"] is True
    assert subnetworks.trend(rows[:2])["converged"] is False  # 3 -> 6 gained 0.85 points
    assert subnetworks.trend(rows[:1])["converged"] is None
    assert "+0.06 points: converged at 6 epochs" in subnetworks._convergence_reading(found)
    assert "not converged at 3 epochs" in subnetworks._convergence_reading(
        subnetworks.trend(rows[:2]))


def _frontier_point(accuracy, val, flops, correct, widths):
    return {"test_accuracy": accuracy, "val_accuracy": val, "flops": flops, "params": flops // 10,
            "widths": widths, "epochs_run": 3, "test_correct": frontier._pack(correct),
            "val_correct": frontier._pack(np.arange(200) < round(val * 200)),
            "kept": {}, "model_file": "x.keras"}


def test_frontier_outcomes_pack_and_the_summary_holds_parents_tests_and_the_smallest():
    rng = np.random.default_rng(0)
    correct = rng.random(50) < 0.9
    assert np.array_equal(frontier._unpack(frontier._pack(correct), 50), correct)
    args = frontier._parse(["--budgets", "0.5,0.1", "--methods", "magnitude,random",
                            "--allocations", "cost", "--parents", "0,1"])
    parents = {s: {"n_test": 50, "flops": 1000, "params": 100, "test_accuracy": 0.99, "seed": s,
                   "validation": {"size": 200},
                   "train_seconds": 1.0, "ensemble_test_accuracy": 0.99, "val_accuracy": 0.99,
                   "test_correct": frontier._pack(correct)} for s in (0, 1)}
    widths = {"conv1": 5, "conv2": 10, "dense": 20}
    good = np.ones(50, bool)
    trajectories = {(s, m, "cost"): {"checkpoints": {
        repr(0.5): _frontier_point(0.995 if m == "magnitude" else 0.99,
                                   0.995 if m == "magnitude" else 0.985, 480, good, widths),
        repr(0.1): _frontier_point(0.98, 0.98, 95, correct, widths)}}
        for s in (0, 1) for m in ("magnitude", "random")}
    results = frontier._summarise(args, [0, 1], parents, trajectories, [], [0.5, 0.1],
                                  [("magnitude", "cost"), ("random", "cost")])
    rows = {(r["method"], r["budget"]): r for r in results["rows"]}
    assert rows[("magnitude", 0.5)]["test_accuracy_mean"] == pytest.approx(0.995)
    assert rows[("magnitude", 0.5)]["flops_reduction"] == pytest.approx(1000 / 480)
    assert rows[("magnitude", 0.5)]["test_accuracy_sd"] == pytest.approx(0.0)
    # Within 1 % validation error only at 0.5 (0.98 at 0.1 is 2 % error): the smallest is 0.5.
    assert results["smallest_within_1pct"]["magnitude/cost"]["budget"] == 0.5
    assert "random/cost" not in results["smallest_within_1pct"]  # 1.5 % validation error
    tests = [t for t in results["paired_tests"] if t["budget"] == 0.5]
    assert tests[0]["a"] == ["magnitude", "cost"] and tests[0]["difference"] == 0


def test_frontier_holds_each_curve_to_the_whole_fine_tuned_the_same_way():
    rows = [{"method": "magnitude", "allocation": "uniform", "budget": b, "flops_reduction": r,
             "test_accuracy_mean": a, "test_error_mean": 1 - a, "parents": 2, "n_test": 10_000,
             "test_correct_total": round(2 * 10_000 * a)}
            for b, r, a in ((0.5, 2.0, 0.990), (0.25, 4.1, 0.986), (0.125, 8.3, 0.984),
                            (0.0625, 16.0, 0.9875))]
    controls = [{"control": "whole", "test_accuracy": a} for a in (0.989, 0.991)]
    within = frontier._within_the_whole(rows, controls, [("magnitude", "uniform")])
    assert within["whole_test_accuracy_mean"] == pytest.approx(0.990)
    points = within["methods"]["magnitude/uniform"]
    # within 0.5 points: 0.986 at 4.1x and 0.9875 at 16x (not 0.984 at 8.3x): the largest is 16x
    assert points["within_half_point"]["flops_reduction"] == 16.0
    # within 1.25x the whole's 1 % error (1.25 %): 0.9875 at 16x
    assert points["within_1.25x_error"]["budget"] == 0.0625
    tight = frontier._within_the_whole(rows, [{"control": "whole", "test_accuracy": 0.9999}] * 2,
                                       [("magnitude", "uniform")])
    assert tight["methods"]["magnitude/uniform"]["within_1.25x_error"] is None
    assert frontier._within_the_whole(rows, [], [("magnitude", "uniform")]) is None


def test_frontier_keeps_the_smallest_subnetworks_by_both_targets_once_each():
    smallest = {"magnitude/cost": {"budget": 0.1}, "random/cost": {"budget": 0.125}}
    within = {"methods": {"magnitude/cost": {"within_1.25x_error": {"budget": 0.1}},
                          "random/cost": {"within_1.25x_error": {"budget": 0.0625}},
                          "taylor/cost": {"within_1.25x_error": {"budget": 0.125}},
                          "banzhaf/cost": {"within_1.25x_error": None}}}
    chosen = frontier._chosen({"smallest_within_1pct": smallest, "within_the_whole": within})
    assert sorted((name, e["budget"]) for name, e in chosen) == [
        ("magnitude/cost", 0.1), ("random/cost", 0.0625), ("random/cost", 0.125),
        ("taylor/cost", 0.125)]
    # a harder task reaches no 1 % error point: the relative one is still kept
    fashion = frontier._chosen({"smallest_within_1pct": {}, "within_the_whole": within})
    assert sorted(name for name, _ in fashion) == ["magnitude/cost", "random/cost",
                                                   "taylor/cost"]
    assert frontier._chosen({"smallest_within_1pct": {}, "within_the_whole": None}) == []


def test_frontier_summary_on_a_machine_without_the_trajectories_models(tmp_path, monkeypatch):
    """Resuming from committed cells on a fresh machine: the chosen subnetwork's fine-tuned
    model is not there; it is described, and saved once a machine that has it rewrites."""
    from subnet.runtime import keras

    monkeypatch.setattr(frontier, "write_report", lambda results, out: None)
    model_file = tmp_path / "work" / "finetuned_0.1.keras"
    point = {"widths": [2, 3, 4], "flops": 1000, "params": 100, "test_accuracy": 0.99,
             "model_file": str(model_file)}
    results = {"smallest_within_1pct": {"magnitude/uniform": {"budget": 0.1}},
               "within_the_whole": None, "settings": {"parents": [0]},
               "summary": {"dense_flops": 10000}}
    trajectories = {(0, "magnitude", "uniform"): {"checkpoints": {"0.1": point}}}
    args = argparse.Namespace(out=str(tmp_path / "out"), dataset="mnist_1k", teacher="ensemble")
    described = tmp_path / "out" / "models" / "mnist_1k_magnitude_uniform_0.1.json"

    frontier._write(args, results, trajectories)
    about = json.loads(described.read_text())
    assert about["model_file"] is None and about["model_bytes"] is None
    assert "another machine" in about["note"] and about["widths"] == [2, 3, 4]
    assert (tmp_path / "out" / "results.json").exists()

    model_file.parent.mkdir()
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(model_file)
    frontier._write(args, results, trajectories)
    about = json.loads(described.read_text())
    assert about["model_file"] == "mnist_1k_magnitude_uniform_0.1.keras"
    assert subnet.load_model(described.with_suffix(".keras")).count_params() == 8


@pytest.mark.parametrize("argv, message", [
    (["--budgets", "0,0.5"], "--budgets must lie in (0.0, 1.0]"),
    (["--budgets", "1.5"], "--budgets must lie in"),
    (["--finetune-epochs", "-1"], "--finetune-epochs must be at least 1"),
    (["--retrain-epochs", "-0.5"], "--retrain-epochs must be at least 0.0"),
    (["--validation", "70000"], "leaves no training images"),
    (["--methods", "foo"], "--methods names ['foo']"),
    (["--step", "1"], "--step"),
    (["--parents", "a"], "comma-separated list of ints"),
    (["--dataset", "cifar10"], "choose among ['mnist', 'fashion_mnist', 'mnist_1k'"),
])
def test_frontier_bad_settings_are_one_line_errors(argv, message, capsys, tmp_path):
    code = frontier.main([*argv, "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


def test_difficulty_tasks_are_deterministic_images_in_range_with_their_own_fingerprints():
    import tasks

    small = {"n_train": 3000, "n_test": 600}  # the first images of each source: a quick check
    seen = {}
    for name in tasks.TASKS:
        data = tasks.build(name, seed=0, **small)
        assert data.x_train.shape[1:] == (28, 28, 1) and data.x_train.dtype == np.float32
        assert 0.0 <= data.x_test.min() and data.x_test.max() <= 1.0
        assert set(np.unique(data.y_test)) == set(range(data.num_classes))
        seen[name] = tasks.fingerprint(data)
    assert len(set(seen.values())) == len(tasks.TASKS)
    again = tasks.build("mnist_rotated", seed=0, **small)
    assert tasks.fingerprint(again) == seen["mnist_rotated"]
    assert tasks.fingerprint(tasks.build("mnist_rotated", seed=1, **small)) != \
        seen["mnist_rotated"]
    assert len(tasks.build("mnist_1k", **small).x_train) == 1000
    union = tasks.build("union20", **small)
    assert union.num_classes == 20 and len(union.x_train) == 6000
    with pytest.raises(subnet.InputError, match="Unknown task 'cifar'"):
        tasks.build("cifar")


def test_difficulty_runs_on_past_a_failed_task_and_summarises_every_finished_one(
        tmp_path, monkeypatch, capsys):
    import difficulty
    import tasks

    monkeypatch.setattr(difficulty, "ROOT", tmp_path)
    monkeypatch.setattr(difficulty, "OUT", tmp_path)
    monkeypatch.setattr(difficulty, "FULL_RUNS", {})
    monkeypatch.setattr(difficulty, "_fingerprint", lambda task: f"print-{task}")
    finished = {"rows": [{"method": "magnitude", "allocation": "uniform", "budget": 0.5,
                          "flops_reduction": 2.0, "test_accuracy_mean": 0.95,
                          "test_accuracy_sd": 0.01, "widths": [10, 25, 250]}],
                "within_the_whole": None, "settings": {"parent_epochs": 20},
                "parents": [{"test_accuracy": 0.96, "n_train": 800, "n_test": 100}]}
    (tmp_path / "mnist_rotated").mkdir()  # finished in an earlier run, not run this time
    (tmp_path / "mnist_rotated" / "results.json").write_text(json.dumps(finished))
    ran = []

    def command(task, parents):  # each task's run: a child process that fails or finishes
        ran.append(task)
        if task == "mnist_noise":
            return [sys.executable, "-c", "import sys; print('it broke'); sys.exit(3)"]
        return [sys.executable, "-c", "import pathlib, sys; folder = pathlib.Path(sys.argv[1]); "
                "folder.mkdir(); (folder / 'results.json').write_text(sys.argv[2])",
                str(tmp_path / task), json.dumps(finished)]

    monkeypatch.setattr(difficulty, "_command", command)
    code = difficulty.main(["--tasks", "mnist_noise,mnist_1k", "--jobs", "1"])
    assert code == 1 and ran == ["mnist_noise", "mnist_1k"]
    err = capsys.readouterr().err
    assert "mnist_noise: failed (its frontier run exited 3)" in err
    assert "mnist_1k: done in" in err
    assert (tmp_path / "out" / "analyses" / "difficulty" / "mnist_noise.log").read_text() == \
        "it broke\n"
    results = json.loads((tmp_path / "results.json").read_text())
    assert [t["task"] for t in results["tasks"]] == ["mnist_1k", "mnist_rotated"]
    assert results["tasks"][0]["fingerprint"] == "print-mnist_1k"
    assert set(results["missing"]) == set(tasks.TASKS) - {"mnist_1k", "mnist_rotated"}
    assert "Not finished yet" in (tmp_path / "README.md").read_text()


def test_the_uncertainty_report_is_generated_from_its_committed_results():
    import json

    import uncertainty

    folder = Path(__file__).resolve().parents[1] / "reports" / "uncertainty"
    results = json.loads((folder / "results.json").read_text())
    assert (folder / "README.md").read_text() == uncertainty.readme(results)
    assert set(results["predictors"]) >= {"deterministic", "dropout_1", "dropout_50"}
    import blog_mechanism

    folder = folder.parent / "blog_mechanism"
    results = json.loads((folder / "results.json").read_text())
    assert (folder / "README.md").read_text() == blog_mechanism.readme(
        results, blog_mechanism._load_parents(folder))
    parents = blog_mechanism._load_parents(folder)
    assert [round(p["expected_pooling_test_accuracy"], 4) for p in parents["parents"]] == [
        0.9952, 0.9956, 0.9948]  # the numbers, from the committed file


def test_blog_mechanism_compares_element_and_unit_dropout_and_writes_its_readme(tmp_path):
    import json

    import blog_mechanism

    assert blog_mechanism.main(["--passes", "2", "--masks", "3", "--examples", "200",
                                "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    mechanism = results["mechanism"]
    assert mechanism["after"] == "conv1" and mechanism["layer"] == "pool1"
    assert 0 < mechanism["element_wise_lost"] < mechanism["unit_wise_lost"] < 1
    assert len(results["element_wise"]["accuracies"]) == 2
    assert len(results["unit_masks"]["accuracies"]) == 3
    assert results["expected_pooling"]["layers"] == ["pool1", "pool2"]
    assert 0.5 < results["expected_pooling"]["accuracy"] <= 1
    assert "Why the network scores lower with dropout off" in \
        (tmp_path / "README.md").read_text()
    assert (tmp_path / "README.md").read_text() == blog_mechanism.readme(results)
    assert (tmp_path / blog_mechanism.FIGURE).stat().st_size > 1000
    assert blog_mechanism.FIGURE in (tmp_path / "README.md").read_text()


def test_expected_max_pool_is_the_mean_of_dropout_then_max_pooling():
    """What blog_mechanism.py's intervention uses (now subnet.pooling), checked with dropout
    drawn by hand in numpy."""
    from subnet.pooling import ExpectedMaxPooling
    from subnet.runtime import keras

    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 4, 6, 2)).astype(np.float32)  # signed, as the blog's conv outputs
    draws = 20_000
    kept = rng.random((draws, *h.shape)) >= 0.5
    sampled = np.asarray(keras.layers.MaxPooling2D(2)(
        (h * kept / 0.5).reshape(-1, *h.shape[1:]))).reshape(draws, 3, 2, 3, 2).mean(0)
    exact = np.asarray(ExpectedMaxPooling(0.5, 2, (2, 2))(h))
    assert exact.shape == (3, 2, 3, 2)
    np.testing.assert_allclose(exact, sampled, atol=0.03)
    # the weight-scaling rule is wrong through a max: the expectation is not the plain maximum
    plain = np.asarray(keras.layers.MaxPooling2D(2)(h))
    assert np.abs(exact - plain).mean() > 0.1


def test_mask_resolution_projects_the_masks_a_benjamini_hochberg_pass_needs():
    import mask_resolution
    from scipy.stats import norm

    half = norm.ppf(0.975) * 0.01  # standard error 0.01 at 100 masks
    values, low, high = [0.02, -0.01, 0.0], [0.02 - half, -0.01 - half, -half], \
        [0.02 + half, -0.01 + half, half]
    # the top unit alone among 3: z = Phi^-1(1 - 0.05 / 6); it needs (z * 0.01 / 0.02)^2 * 100
    z = norm.ppf(1 - 0.05 / 6)
    assert mask_resolution.masks_for_top(values, low, high, 100, 1, 3) == \
        pytest.approx(100 * (z / 2) ** 2)
    # the top two: the weaker one sets it, at the looser threshold for rank 2
    z2 = norm.ppf(1 - 2 * 0.05 / 6)
    assert mask_resolution.masks_for_top(values, low, high, 100, 2, 3) == \
        pytest.approx(100 * z2 ** 2)
    assert mask_resolution.masks_for_top(values, low, high, 100, 3, 3) == float("inf")


def test_frontier_partial_summarises_the_finished_cells_only(tmp_path, monkeypatch):
    import json

    argv = ["--budgets", "0.5,0.1", "--methods", "magnitude,random", "--allocations", "cost",
            "--parents", "0,1", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")]
    args = frontier._parse(argv)
    rng = np.random.default_rng(0)
    correct = rng.random(50) < 0.9
    for s in (0, 1):
        folder = frontier._parent_dir(args, s)
        folder.mkdir(parents=True)
        (folder / "parent.json").write_text(json.dumps(
            {"n_test": 50, "flops": 1000, "params": 100, "test_accuracy": 0.99, "seed": s,
             "train_seconds": 1.0, "validation": {"size": 200},
             "ensemble_test_accuracy": 0.99, "val_accuracy": 0.99,
             "test_correct": frontier._pack(correct)}))
        # magnitude finished on both parents, random on one only
        for method in ("magnitude", "random")[:2 if s == 0 else 1]:
            path = frontier._cell_path(args, "trajectory", s, method, "cost")
            path.parent.mkdir(parents=True, exist_ok=True)
            points = {repr(b): {**_frontier_point(0.995, 0.995, int(1000 * b), correct,
                                                  {"conv1": 5, "conv2": 10, "dense": 20}),
                                "seconds": 2.0} for b in (0.5, 0.1)}
            path.write_text(json.dumps({"done": True, "trajectory_seconds": 3.0,
                                        "checkpoints": points}))
    monkeypatch.setattr(frontier, "_write", lambda a, results, t: written.append(results))
    written = []
    assert frontier.main([*argv, "--partial"]) == 0
    results = written[0]
    assert {r["method"] for r in results["rows"]} == {"magnitude"}
    assert results["partial"]["missing_trajectories"] == ["random/cost parent 1"]
    assert results["compute_seconds"]["finetuning"] == 12.0


def test_the_answer_is_generated_from_the_committed_result_files():
    import answer

    committed = (answer.REPORTS / "README.md").read_text()
    assert committed == answer.readme(answer.load()), \
        "reports/README.md is out of date: run python analyses/answer.py"
    assert answer.main(["--check"]) == 0


def test_the_answer_names_what_is_not_measured_instead_of_guessing(tmp_path):
    import answer

    empty = answer.load(tmp_path)
    assert all(v is None for v in empty.values())
    text = answer.readme(empty, tmp_path)
    assert "Not measured yet: the frontier runs are not finished." in text
    assert "Not measured yet for the difficulty curve: every task" in text
    assert "**Chosen ones: not measured yet.**" in text
    # every number in the full answer comes from a file: with none, only the fixed ones remain
    import re

    numbers = set(re.findall(r"\d+(?:\.\d+)?", text))
    assert numbers <= {"1", "2", "3", "0.5", "1.25", "98.7", "10", "000", "2x2"}, numbers


def test_the_difficulty_trend_is_a_rank_correlation_over_the_tasks():
    import answer

    def task(name, accuracy, half, relative):
        point = lambda r: None if r is None else {"flops_reduction": r,  # noqa: E731
                                                  "test_accuracy_mean": accuracy}
        return {"task": name, "whole_test_accuracy_mean": accuracy,
                "within_half_point": point(half), "within_1.25x_error": point(relative)}

    d = {"tasks": [task("easy", 0.99, 16.0, 8.0), task("mid", 0.9, 4.0, 16.0),
                   task("hard", 0.7, None, 32.0)]}
    text = answer.difficulty_trend(d)
    assert "from easy (1.00 %) to hard (30.00 %)" in text
    assert "within 0.5 points, Spearman's rho -1.00 (easy 16.0x, mid 4.0x, hard 1.0x)" in text
    assert "within 1.25x the error, Spearman's rho +1.00" in text
    assert answer.difficulty_trend({"tasks": d["tasks"][:2]}) is None
    # the answer waits for every task, then reads the two bars
    assert answer.difficulty_answer({**d, "missing": ["union20"]}) is None
    text = answer.difficulty_answer({**d, "missing": []})
    assert text.startswith("**Is MNIST too simple? Only in absolute points: within 0.5 "
                           "points harder tasks trim less")
    assert "within 0.5 points runs from 16.0x (easy) down to 1.0x (hard)" in text
    assert "within 1.25x the whole's error from 32.0x (hard) down to 8.0x (easy), rho +1.00" \
        in text
    both = {"missing": [], "tasks": [task("easy", 0.99, 16.0, 16.0), task("mid", 0.9, 4.0, 8.0),
                                     task("hard", 0.7, 2.0, 2.0), task("hard2", 0.6, 2.0, 2.0)]}
    text = answer.difficulty_answer(both)
    assert text.startswith("**Is MNIST too simple? Partly, yes")
    assert "from 16.0x (easy) down to 2.0x (hard, hard2)" in text  # ties named together


def test_the_answer_reads_rewinding_by_the_share_of_the_gap_it_recovers():
    import answer

    assert answer.rewinding_reading(70, 83).startswith(
        "recover 70 to 83 % of that gap, so what the subnetwork inherits matters")
    assert answer.rewinding_reading(20, 60).endswith("explain only part of it")
    below = answer.rewinding_reading(-97, -17)
    assert below.startswith("score below Scratch-E (by 17 to 97 % of that gap)")
    assert "early weights do not help" in below

def test_the_answer_names_difficulty_parents_still_improving():
    import answer

    def task(name, gains):
        return {"task": name, "last_five_epochs_val_gain": gains}

    settled = {"tasks": [task("mnist", [None, None]), task("mnist_1k", [0.0, 0.0019])]}
    assert answer.still_rising(settled) is None and answer.still_rising(None) is None
    text = answer.still_rising({"tasks": [*settled["tasks"],
                                          task("mnist_noise", [0.0042, -0.001])]})
    assert "mnist_noise: +0.42, -0.10)" in text and "mnist_1k" not in text


def test_the_frontier_report_draws_every_control_from_the_committed_results(tmp_path):
    import json

    assert set(frontier.CONTROL_MARKERS) == set(frontier.CONTROLS)
    folder = Path(__file__).resolve().parents[1] / "reports" / "frontier"
    results = json.loads((folder / "results.json").read_text())
    assert {"whole", "scratch_e", "rewind", "published"} <= \
        {c["control"] for c in results["controls"]}
    frontier.write_report(results, tmp_path)
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_the_answer_states_the_parents_convergence_where_it_was_recorded():
    import answer

    curve = [0.80, 0.85, 0.86, 0.861, 0.862, 0.8615, 0.863]
    clause = answer.convergence_clause([{"val_accuracy_by_epoch": curve},
                                        {"val_accuracy_by_epoch": curve[:-1] + [0.858]}])
    assert clause == "; validation accuracy moved +0.80 to +1.30 points over each parent's " \
        "last five epochs"
    assert answer.convergence_clause([{"val_accuracy_by_epoch": curve}, {}]) == ""


def test_frontier_crossing_is_interpolated_in_log_reduction_by_hand():
    # errors 0.8 % at 10x, 1.2 % at 20x: 1 % is halfway in log -> sqrt(10 * 20)
    found = frontier._crossing(np.array([20.0, 10.0, 5.0]), np.array([0.012, 0.008, 0.005]),
                               0.01)
    assert found == {"reduction": pytest.approx(np.sqrt(200.0)), "bound": "interpolated"}
    assert frontier._crossing(np.array([5.0, 10.0]), np.array([0.005, 0.009]), 0.01) == \
        {"reduction": 10.0, "bound": "at_least"}
    assert frontier._crossing(np.array([5.0, 10.0]), np.array([0.02, 0.03]), 0.01)["bound"] == \
        "below_grid"


def test_frontier_located_crossing_has_an_interval_over_parents_and_images():
    n = 2000
    points = {}
    for budget, flops, errors in ((0.1, 100, (16, 18, 20)), (0.05, 50, (24, 22, 26))):
        points[budget] = [{"flops": flops, "test_correct": frontier._pack(np.arange(n) >= e)}
                          for e in errors]
    found = frontier.located_crossing(points, 1000, "test", n, resamples=300)
    # mean errors 0.9 % at 10x and 1.2 % at 20x: a third of the way in log(reduction)
    assert found["bound"] == "interpolated"
    assert found["reduction"] == pytest.approx(10 * 2 ** (1 / 3))
    assert found["ci_low"] < found["reduction"] < found["ci_high"]
    assert 10 <= found["ci_low"] and found["ci_high"] <= 20
    assert frontier.located_crossing(points, 1000, "val", n)["bound"] == "not recorded"


def test_frontier_thresholds_are_read_on_counts_not_float_ties():
    """0.98999999999999990 validation accuracy is 4,950 of 5,000 images: exactly 1 % error,
    within the target (a float comparison with 0.99 called it outside)."""
    assert 1 - 0.98999999999999990 > 0.01  # the float tie the old readout fell on
    point = {"val_accuracy": 0.98999999999999990}
    count = frontier._counts(point, "val", 5000)
    assert count == 4950 and 100 * (5000 - count) <= 5000
    assert frontier._counts({"val_correct_count": 4949, "val_accuracy": 0.99}, "val", 5000) == 4949


def _uncertainty_results(rng, n=400):
    """A results.json of analyses/uncertainty.py from made-up predictors: expected pooling sharp
    and right, dropout passes blunter, every predictor resampled alike."""
    from subnet.predictive import paired_difference, uncertainty

    y = rng.integers(0, 3, n)

    def predictor(sharpness, passes, right=0.97):
        label = np.where(rng.random(n) < right, y, (y + 1) % 3)
        logits = np.eye(3)[label] * sharpness + rng.normal(size=(passes, n, 3))
        p = np.exp(logits)
        return p / p.sum(-1, keepdims=True)

    ood = rng.dirichlet(np.ones(3), size=(1, 150))
    made = {"deterministic": (predictor(2.0, 1), 1), "expected_pooling": (predictor(6.0, 1), 1.02),
            "dropout_1": (predictor(2.0, 1), 1), "dropout_10": (predictor(2.5, 10), 10)}
    measured = {k: uncertainty(p, y, ood=np.repeat(ood, len(p), 0), resamples=100, seed=0,
                               keep_draws=True) for k, (p, _) in made.items()}
    return {"parent": "reports/frontier/parents/parent_s0_x", "parent_epochs": 12,
            "examples": n, "ood": "made-up", "resamples": 100, "parent_flops": 1000,
            "expected_pooling_extra_flops": 20, "dropout_seconds_all_passes": 1.0,
            "predictors": {k: {"flops": int(1000 * made[k][1]), "flops_x_parent": made[k][1],
                               **u.to_dict()} for k, u in measured.items()},
            "differences": {"expected_pooling - dropout_10": {
                m: paired_difference(measured["expected_pooling"], measured["dropout_10"],
                                     m).to_dict() for m in ("accuracy", "nll", "brier", "ece",
                                                            "error_auroc_predictive_entropy",
                                                            "ood_auroc_predictive_entropy")}}}


def test_uncertainty_headline_states_cost_and_paired_verdicts_from_the_results():
    import uncertainty as script

    results = _uncertainty_results(np.random.default_rng(0))
    text = script.readme(json.loads(json.dumps(results)))
    diff = results["differences"]["expected_pooling - dropout_10"]
    assert diff["nll"]["high"] < 0  # the made-up sharp predictor is better, and it shows
    assert "| expected pooling, one pass | 1,020 (1.02x) |" in text
    assert "| 10 dropout passes | 10,000 (10.00x) |" in text
    sentence = next(line for line in text.splitlines()
                    if line.startswith("- **expected pooling, one pass**"))
    assert "against **10 dropout passes** (10.00x): better on " in sentence
    better = sentence.split("better on ")[1].split(";")[0]
    assert "NLL" in better and "calibration error (ECE)" in better
    row = next(line for line in text.splitlines()
               if line.startswith("| expected pooling, one pass − 10 dropout passes |"))
    assert row.split(" | ")[2] == script._diff(diff["nll"])  # the paired difference, read
    # an older results.json (no comparators) still reads
    old = {k: v for k, v in results.items() if k != "differences"}
    old["predictors"] = {k: v for k, v in results["predictors"].items()
                         if k != "expected_pooling"}
    assert "## The headline" not in script.readme(old)


@pytest.mark.parametrize("low, high, better, verdict", [
    (-0.02, -0.01, "lower", "better"), (0.01, 0.02, "lower", "worse"),
    (0.01, 0.02, "higher", "better"), (-0.01, 0.01, "higher", "no different"),
    (None, None, "higher", "undefined")])
def test_uncertainty_verdicts_read_the_paired_interval(low, high, better, verdict):
    import uncertainty as script

    assert script._verdict({"value": 0.0, "low": low, "high": high}, better).startswith(verdict)


def test_frontier_holds_each_curve_to_the_best_dense_predictor_too(tmp_path):
    import json

    path = tmp_path / "ep.json"
    path.write_text(json.dumps({"parents": [
        {"parent": "parents/parent_s1_abc", "expected_pooling_test_accuracy": 0.995},
        {"parent": "parents/parent_s0_def", "expected_pooling_test_accuracy": 0.990}]}))
    controls = [{"control": "whole", "parent": 0, "test_accuracy": 0.992},
                {"control": "whole", "parent": 1, "test_accuracy": 0.993}]
    references = frontier._dense_references(path, [0, 1], controls)
    assert references == {"expected_pooling": [0.990, 0.995], "best_dense": [0.992, 0.995]}
    rows = [{"method": "magnitude", "allocation": "uniform", "budget": b, "flops_reduction": r,
             "test_accuracy_mean": a, "test_error_mean": 1 - a, "parents": 2, "n_test": 10_000,
             "test_correct_total": round(2 * 10_000 * a)}
            for b, r, a in ((0.25, 4.0, 0.9925), (0.0625, 16.0, 0.9900))]
    within = frontier._within_the_whole(rows, controls, [("magnitude", "uniform")], references)
    # the whole (99.25 %, 0.75 % error): 99.00 % is within 0.5 points; within 1.25x the error
    # (0.9375 %) 1.00 % is not: 4 x 200 = 800 > 5 x 150 = 750
    assert within["methods"]["magnitude/uniform"]["within_half_point"]["budget"] == 0.0625
    assert within["methods"]["magnitude/uniform"]["within_1.25x_error"]["budget"] == 0.25
    best = within["against"]["best_dense"]["magnitude/uniform"]  # 99.35 %, 0.65 % error
    assert best["within_half_point"]["budget"] == 0.0625  # 99.00 >= 98.85
    # 1.25 x 0.65 % = 0.8125 %: 0.75 % at 4x passes (4 x 150 = 600 <= 5 x 130), 1 % does not
    assert best["within_1.25x_error"]["budget"] == 0.25
    with pytest.raises(ValueError, match="has no parents \\[2\\]"):
        frontier._dense_references(path, [0, 2], controls)


def test_the_answer_reads_the_located_frontier_and_the_recipe_table():
    import answer

    crossing = {"reduction": 21.3, "bound": "interpolated", "ci_low": 18.0, "ci_high": 25.5,
                "censored_share": 0.0}
    assert answer.crossing_text(crossing, "test") == \
        "crosses 1 % on test at 21.3x fewer FLOPs (95 % interval 18.0–25.5x)"
    assert "above 1 % on test already at the largest budget" in answer.crossing_text(
        {"reduction": 4.0, "bound": "below_grid"}, "test")
    row = {"method": "magnitude", "allocation": "uniform", "budget": 0.0625,
           "test_accuracy_mean": 0.991, "test_accuracy_sd": 0.001}
    f = {"settings": {"methods": ["magnitude"], "allocations": ["uniform"],
                      "budgets": [1 / 16, 1 / 20]},
         "parents": [{}, {}, {}], "rows": [row],
         "crossing_1pct": {"magnitude/uniform": {"test": crossing, "val": crossing}},
         "smallest_within_1pct_test": {"magnitude/uniform": {
             "budget": 0.05, "flops_reduction": 20.4, "params_reduction": 25.0,
             "test_error_mean": 0.0098, "test_accuracy_sd": 0.0005}},
         "controls": [{"control": "scratch_e", "budget": 0.0625, "test_accuracy": a}
                      for a in (0.985, 0.987)] +
                     [{"control": "whole", "budget": 1.0, "test_accuracy": 0.994}]}
    text = answer.located_arm("located", f)
    assert "21.3x" in text and "1/20: 20.4x fewer FLOPs" in text and "target, 20x" in text
    assert text.endswith("is met.")
    assert "not met" in answer.located_arm("located_no_teacher", {
        **f, "smallest_within_1pct_test": {"magnitude/uniform": {
            **f["smallest_within_1pct_test"]["magnitude/uniform"], "flops_reduction": 12.0}}})
    table = answer.recipe_table({"located": f, "located_no_teacher": None})
    assert table[0] == "| at 1/16 of the FLOPs | teacher |"
    assert "| inherited (pruned gradually, then fine-tuned) | 99.10 ± 0.10 % |" in table
    assert any("Scratch-E" in line and "98.60 ± 0.14 %" in line for line in table)
    assert any("rewound" in line and "not run yet" in line for line in table)


def test_the_answer_says_a_published_shape_needs_no_pruning_where_it_meets_the_target():
    import answer

    f = {"summary": {"dense_flops": 4_586_000},
         "published": [{"source": "SBP", "widths": {"conv1": 3, "conv2": 18, "dense": 283},
                        "error": 0.0086}],
         "controls": [{"control": "published", "label": "SBP", "flops": 428_600,
                       "test_accuracy": a} for a in (0.9902, 0.9904, 0.9903)]}
    text = answer.published_note(f)
    assert "without a 99.5 % teacher" in text
    assert "SBP's shape (3-18-283) reaches 0.97 % error at 10.7x" in text
    f["controls"] = [{**c, "test_accuracy": 0.98} for c in f["controls"]]
    assert "needs no pruning" not in answer.published_note(f)


def test_frontier_cells_of_a_renamed_method_keep_their_old_names(tmp_path):
    """The committed cells of iterative mask statistics were made as ``banzhaf``: the method's
    key now (``banzhaf_iterative``) and its old key find the same cell, and the command line
    takes either."""
    old = frontier._parse(["--methods", "banzhaf,magnitude", "--out", str(tmp_path)])
    new = frontier._parse(["--methods", "banzhaf_iterative,magnitude", "--out", str(tmp_path)])
    assert old.methods == new.methods == "banzhaf_iterative,magnitude"
    path = frontier._cell_path(new, "trajectory", 0, "banzhaf_iterative", "cost")
    assert path == frontier._cell_path(old, "trajectory", 0, "banzhaf", "cost")
    assert path.name.startswith("trajectory_0_banzhaf_cost_")
    committed = sorted((Path(__file__).parents[1] / "reports" / "frontier" / "cells").glob(
        "trajectory_0_banzhaf_cost_*.json"))
    assert committed, "the committed frontier cells of mask statistics"

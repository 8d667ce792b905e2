"""compare(): budgets x methods x seeds, fair settings, saved, reloaded and resumed."""

import json

import numpy as np
import pytest

from subnet import comparison as compare_module
from subnet.baselines import tfmot_available
from subnet.baselines.tfmot import magnitude_oneshot
from subnet.comparison import Comparison, compare
from subnet.controls import reinitialized
from tests.helpers import RATES, tiny_dense_task

SETTINGS = dict(budgets=(0.5, 0.25), seeds=(0, 1), finetune_epochs=0.03,
                selection_examples=300, n_masks=100, measure_latency=False, progress=False)


@pytest.mark.slow
def test_compare_end_to_end_and_resume(trained, mnist, tmp_path, monkeypatch):
    methods = ("banzhaf_iterative", "magnitude", "random") + \
        (("tfmot",) if tfmot_available() else ())
    model = trained["conv"]
    out = tmp_path / "comparison.json"

    calls = {"n": 0}
    original = compare_module.finetune

    def interrupt_in_the_second_cell(*args, **kwargs):  # the first two tune the dense copies
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(compare_module, "finetune", interrupt_in_the_second_cell)
    scratch = tmp_path / "scratch"  # where TFMOT's child keeps its files
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    with pytest.raises(KeyboardInterrupt):
        compare(model, mnist, methods, out=out, **SETTINGS)
    # A cell is one method at every budget for one seed: the first (mask statistics of seed 0, two
    # budgets) survived; the second (magnitude) was interrupted in its second fine-tuning and
    # left nothing; TFMOT's cells come after the structured ones and had not started (no
    # child, no files). (TensorFlow's autograph caches the functions it converts in this
    # process as __autograph_generated_file*.py in the temporary folder: its files, not a
    # child's.)
    interrupted = Comparison.load(out)
    assert [(r["method"], r["seed"]) for r in interrupted.rows] == \
        [("banzhaf_iterative", 0)] * 2
    left = [p for p in scratch.iterdir() if not p.name.startswith("__autograph_generated_file")]
    assert left == []
    assert interrupted.dense["finetuned"]["seeds"] == [0, 1]
    monkeypatch.setattr(compare_module, "finetune", original)
    result = compare(model, mnist, methods, out=out, **SETTINGS)
    assert len(result.rows) == len(methods) * 2 * 2
    keys = {(r["method"], r["budget_flops_fraction"], r["seed"]) for r in result.rows}
    assert len(keys) == len(result.rows)  # nothing computed twice
    for row in result.rows:
        assert 0 <= row["accuracy_oneshot"] <= 1 and 0 <= row["accuracy_finetuned"] <= 1
        if row["method"] != "tfmot":
            assert row["flops"] <= row["budget_flops_fraction"] * result.dense["flops"]
    if "tfmot" in methods:
        for row in result.rows:
            if row["method"] == "tfmot":
                twin = next(r for r in result.rows if r["method"] == "banzhaf_iterative" and
                            r["seed"] == row["seed"] and
                            r["budget_flops_fraction"] == row["budget_flops_fraction"])
                assert row["params"] == twin["params"]
                # TFMOT rounds each layer's count of pruned weights on its own.
                assert abs(row["nonzero_params"] - row["params"]) <= 0.01 * row["params"]
    # Rerunning a finished comparison computes nothing and returns the same rows.
    monkeypatch.setattr(compare_module, "finetune", lambda *a, **k: pytest.fail("recomputed"))
    again = compare(model, mnist, methods, out=out, **SETTINGS)
    assert again.rows == result.rows
    summary = result.summary()
    assert {s["seeds"] for s in summary} == {2}
    # The whole model, fine-tuned with the same budget and seeds: the fair reference.
    tuned = result.dense["finetuned"]
    assert tuned == interrupted.dense["finetuned"] and len(tuned["accuracy"]) == 2
    assert all(0 <= a <= 1 for a in tuned["accuracy"])
    assert tuned["accuracy_mean"] == pytest.approx(sum(tuned["accuracy"]) / 2)
    json.dumps(result.to_dict())  # JSON-ready


@pytest.mark.slow
def test_reinit_trains_the_reference_shape_from_scratch(trained, mnist):
    result = compare(trained["conv_bn"], mnist, ("magnitude", "reinit"),
                     reference_method="magnitude", dense_finetuned=False, rate=RATES["conv_bn"],
                     **{**SETTINGS, "budgets": (0.5,), "seeds": (3,), "finetune_epochs": 1.0})
    magnitude, reinit = sorted(result.rows, key=lambda r: r["method"])
    assert (reinit["widths"], reinit["params"], reinit["flops"]) == (
        magnitude["widths"], magnitude["params"], magnitude["flops"])
    assert reinit["accuracy_oneshot"] < 0.3  # fresh weights: near chance before training
    # and it learns (3,000 examples from scratch: far from converged, well above chance)
    assert reinit["accuracy_finetuned"] > max(0.2, reinit["accuracy_oneshot"])


def test_reinitialized_draws_fresh_weights_from_the_seed(trained):
    model = trained["conv_bn"]
    a, b, c = (reinitialized(model, s) for s in (0, 0, 1))
    for layer_a, layer_b, layer_c, original in zip(a.layers, b.layers, c.layers, model.layers,
                                                   strict=True):
        for wa, wb, wc, wo, weight in zip(layer_a.get_weights(), layer_b.get_weights(),
                                          layer_c.get_weights(), original.get_weights(),
                                          layer_a.weights, strict=True):
            np.testing.assert_array_equal(wa, wb)
            assert wa.shape == wo.shape and wa.dtype == wo.dtype
            name = weight.name.split("/")[-1]
            if name == "kernel":
                assert not np.array_equal(wa, wc) and not np.array_equal(wa, wo)
                fan = np.prod(wa.shape[:-2], dtype=int) * (wa.shape[-2] + wa.shape[-1])
                assert np.abs(wa).max() <= np.sqrt(6 / fan)
            elif name in ("gamma", "moving_variance"):
                np.testing.assert_array_equal(wa, 1)
            else:
                np.testing.assert_array_equal(wa, 0)


def test_a_measured_dense_accuracy_is_taken_and_latency_timed_as_asked(trained, mnist,
                                                                       monkeypatch):
    """The whole model's accuracy, measured already (the analysis' blog stage), is not measured
    again; latency is timed in ``latency_repeats`` calls of every model."""
    repeats = []
    original = compare_module.measure

    def counted(model, **kwargs):
        repeats.append(kwargs.get("repeats"))
        return original(model, **kwargs)

    monkeypatch.setattr(compare_module, "measure", counted)
    result = compare(trained["conv"], mnist, ("random",), **{
        **SETTINGS, "finetune_epochs": 0.0, "budgets": (0.5,), "seeds": (0,),
        "dense_accuracy": 0.25, "latency_repeats": 3, "measure_latency": True})
    assert result.dense["accuracy"] == 0.25 and result.config["latency_repeats"] == 3
    assert repeats == [3, 3]  # the whole model and the subnetwork


def test_every_fine_tuning_calls_the_keras_callbacks_given(trained, mnist):
    import keras

    runs = []

    class Runs(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            runs.append(0)

        def on_train_batch_end(self, batch, logs=None):
            runs[-1] += 1

    compare(trained["conv"], mnist, ("random",), **{
        **SETTINGS, "budgets": (0.5,), "seeds": (0,), "callbacks": [Runs()]})
    assert len(runs) == 2 and all(steps > 0 for steps in runs)  # the whole model's copy, then
    # the subnetwork


def test_compare_bad_input(trained, mnist, tmp_path):
    model = trained["conv"]
    with pytest.raises(ValueError, match="Unknown comparison methods"):
        compare(model, mnist, ("banzhaf", "lottery"), **SETTINGS)
    with pytest.raises(ValueError, match="FLOP fractions"):
        compare(model, mnist, ("random",), **{**SETTINGS, "budgets": (0.5, 0.0)})
    with pytest.raises(ValueError, match="reference_method"):
        compare(model, mnist, ("random", "tfmot"), **SETTINGS)
    with pytest.raises(ValueError, match="`reinit` is built on"):
        compare(model, mnist, ("random", "reinit"), **SETTINGS)
    with pytest.raises(ValueError, match="more than 5000 training examples"):
        compare(model, mnist, ("random",), **{**SETTINGS, "selection_examples": 5000})
    for name, value in (("latency_repeats", 0), ("latency_repeats", 2.0),
                        ("dense_accuracy", 1.5), ("dense_accuracy", "0.9")):
        with pytest.raises(ValueError, match=f"argument `{name}`"):
            compare(model, mnist, ("random",), **{**SETTINGS, name: value})
    out = tmp_path / "c.json"
    compare(model, mnist, ("random",), out=out, **{**SETTINGS, "finetune_epochs": 0.0,
                                                   "budgets": (0.5,), "seeds": (0,)})
    with pytest.raises(ValueError, match="other settings"):
        compare(model, mnist, ("magnitude",), out=out, **{**SETTINGS, "budgets": (0.5,)})


def test_magnitude_oneshot_zeroes_the_smallest_kernel_weights_of_a_copy():
    import keras

    inputs = keras.Input((4,))
    x = keras.layers.Dense(2, name="h")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    kernel = np.array([[0.1, -0.8], [0.5, -0.2], [0.9, 0.05], [-0.3, 0.7]], np.float32)
    model.get_layer("h").set_weights([kernel, np.array([0.01, 0.02], np.float32)])
    pruned = magnitude_oneshot(model, 0.5)
    expected = np.array([[0.0, -0.8], [0.5, 0.0], [0.9, 0.0], [0.0, 0.7]], np.float32)
    np.testing.assert_array_equal(pruned.get_layer("h").get_weights()[0], expected)
    np.testing.assert_array_equal(pruned.get_layer("h").get_weights()[1],
                                  np.array([0.01, 0.02], np.float32))
    np.testing.assert_array_equal(model.get_layer("h").get_weights()[0], kernel)  # unchanged
    assert not pruned.compiled
    with pytest.raises(ValueError, match="`sparsity`"):
        magnitude_oneshot(model, 1.5)


def test_a_subnetwork_that_fails_its_check_is_recorded_and_the_run_goes_on(trained, mnist,
                                                                           monkeypatch):
    """A long run never dies at the end for one subnetwork: the failed check is in its row,
    and the other budgets and methods are measured."""
    from subnet import extraction
    from subnet.extraction import ExtractionMismatch

    original = extraction._verify
    calls = {"n": 0}

    def fail_first(*args):
        calls["n"] += 1
        difference, tolerance = original(*args)
        return (1.0, tolerance) if calls["n"] == 1 else (difference, tolerance)

    monkeypatch.setattr(extraction, "_verify", fail_first)
    settings = {**SETTINGS, "finetune_epochs": 0.0, "budgets": (0.5, 0.25), "seeds": (0,)}
    result = compare(trained["conv"], mnist, ("magnitude", "random"), **settings)
    assert len(result.rows) == 4
    failed = [r for r in result.rows if "extraction_mismatch" in r]
    assert len(failed) == 1 and failed[0]["extraction_mismatch"]["max_difference"] == 1.0
    assert 0 <= failed[0]["accuracy_oneshot"] <= 1
    assert ExtractionMismatch.__mro__[1] is RuntimeError


@pytest.mark.parametrize("rescale", [False, True])
def test_mask_statistics_record_at_the_keep_probabilities_and_their_rescaling(rescale,
                                                                            monkeypatch):
    # The record banzhaf_single chooses units on is made as the analysis' own record was:
    # at its keep probabilities, scaled by 1/q only where the calibration chose it.

    from subnet import record as record_module
    from subnet.keep import KeepProbabilities

    model, data = tiny_dense_task()
    keep = KeepProbabilities(keep={"hidden": 0.8}, source="auto", rescale=rescale)
    seen = []
    real = record_module.temporary_record

    def spy(*args, **options):
        seen.append(options["rate"])
        return real(*args, **options)

    monkeypatch.setattr(record_module, "temporary_record", spy)
    result = compare(model, data, ("banzhaf_single",), budgets=(0.5,), seeds=(0,),
                     finetune_epochs=0.0, selection_examples=40, n_masks=20, rate=keep,
                     measure_latency=False, progress=False, dense_finetuned=False,
                     reference_method="banzhaf_single")
    assert seen == [keep] and len(result.rows) == 1

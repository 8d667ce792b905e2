"""Budgets, keep-sets with exact accounting, extraction equal to masking, fine-tuning,
measuring."""

import dataclasses
import json

import keras
import numpy as np
import pytest

import subnet
from subnet.data import Dataset
from subnet.engine.chain import analyse_chain
from subnet.engine.reference import ReferenceBackend
from subnet.errors import InputError
from subnet.extraction import (
    Budget,
    KeepSet,
    copy_model,
    extract,
    finetune,
    keep_sets,
    measure,
    model_cost,
)
from subnet.importance import estimate
from subnet.measuring import Measurement
from subnet.models import seed_cnn
from subnet.structure import Cost
from tests.helpers import RATES, tiny_dense_task

#: The keys measure() returned, in order, when it returned a dict (and its JSON files hold).
MEASURE_KEYS = ["params", "flops", "nonzero_params", "file_bytes", "gzip_bytes",
                "latency_ms_per_example", "batch_size"]


def _random_keep(model, seed, rate=None):
    table = subnet.sites(model, rate=rate if rate is not None else 0.5)
    rng = np.random.default_rng(seed)
    keep = {}
    for site in table:
        bits = rng.random(site.units) < 0.5
        bits[rng.integers(site.units)] = True  # never empty a site
        keep[site.name] = bits
    return table, keep


@pytest.mark.parametrize("name", list(RATES))
def test_extracted_model_equals_the_masked_model(trained, mnist, name):
    model = trained[name]
    table, keep = _random_keep(model, seed=3, rate=RATES[name])
    subnetwork, keep_set = extract(model, keep, check_x=mnist.x_test[:32])
    # extract() checks this itself; check again independently, on other examples.
    chain = analyse_chain(model, RATES[name])
    mask = np.concatenate([keep[s] for s in table.names])
    masked = ReferenceBackend(chain, rescale=False).probabilities(mnist.x_test[32:96], mask[None])
    out = subnetwork.predict(mnist.x_test[32:96], verbose=0)
    if not chain.probabilities:
        out = keras.ops.convert_to_numpy(keras.ops.softmax(out))
    np.testing.assert_allclose(out, masked[0], atol=1e-5)
    # Physically smaller, with exactly the accounted parameters and FLOPs, and deterministic.
    assert subnetwork.count_params() == keep_set.params < model.count_params()
    assert model_cost(subnetwork)["flops"] == keep_set.flops
    widths = {s: int(b.sum()) for s, b in keep.items()}
    assert keep_set.widths == widths
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in subnetwork.layers)
    x = mnist.x_test[:8]
    np.testing.assert_array_equal(np.asarray(subnetwork(x)), np.asarray(subnetwork(x)))
    # The subnetwork is itself analysable, with the same site names.
    assert subnet.sites(subnetwork, rate=0.5).names == table.names


def test_scale_is_folded_into_the_next_layer(trained, mnist):
    model = trained["conv"]
    table, keep = _random_keep(model, seed=4)
    subnetwork, _ = extract(model, keep, scale={"conv2": 2.0, "dense": 0.5},
                            check_x=mnist.x_test[:16])
    assert subnetwork.count_params() > 0


def test_keep_set_accounting_by_hand():
    model = seed_cnn()
    keep = {"conv1": np.arange(20) < 10, "conv2": np.arange(50) < 25,
            "dense": np.arange(500) < 250}
    _, keep_set = extract(model, keep)
    conv1 = 25 * 1 * 10 + 10
    conv2 = 25 * 10 * 25 + 25
    dense = 16 * 25 * 250 + 250
    classifier = 250 * 10 + 10
    assert keep_set.params == conv1 + conv2 + dense + classifier == 109_295
    flops = 2 * (24 * 24 * 25 * 1 * 10 + 8 * 8 * 25 * 10 * 25 + 16 * 25 * 250 + 250 * 10)
    assert keep_set.flops == flops
    assert keep_set.dense_params == 431_080 and keep_set.dense_flops == 4_586_000


def test_keep_sets_respect_budgets_and_minimum_widths(trained, mnist):
    model = trained["conv"]
    source = (model, mnist.x_test, mnist.y_test)
    importance = estimate(source, "magnitude")
    previous = 0
    for fraction in (0.3, 0.5, 0.75, 1.0):
        for kind in ("units", "params", "flops"):
            for allocation in ("global", "uniform"):
                keep_set = keep_sets(importance, Budget(kind, fraction), model,
                                     allocation=allocation, min_units=1)
                dense = {"units": importance.n_units, "params": keep_set.dense_params,
                         "flops": keep_set.dense_flops}[kind]
                spent = {"units": int(keep_set.mask.sum()), "params": keep_set.params,
                         "flops": keep_set.flops}[kind]
                assert spent <= fraction * dense + 1e-9
                assert min(keep_set.widths.values()) >= 1
        flops_keep = keep_sets(importance, Budget.flops(fraction), model)
        assert flops_keep.flops >= previous
        previous = flops_keep.flops
    assert keep_sets(importance, Budget.flops(1.0), model).mask.all()


def test_global_allocation_takes_the_best_units(trained, mnist):
    model = trained["dense"]
    importance = estimate((model, mnist.x_test, mnist.y_test), "random", seed=1)
    keep_set = keep_sets(importance, Budget.units(20), model)
    assert keep_set.mask.sum() == 20
    best = np.sort(importance.top(20))
    np.testing.assert_array_equal(np.flatnonzero(keep_set.mask), best)


@pytest.mark.parametrize("budget, match", [
    (lambda: Budget.flops(0.0), r"\(0, 1\]"),
    (lambda: Budget.flops(-3), ">= 1"),
    (lambda: Budget.flops(1.5), r"\(0, 1\]"),
    (lambda: Budget("bytes", 0.5), "kind"),
])
def test_invalid_budgets(budget, match):
    with pytest.raises(ValueError, match=match):
        budget()


def test_budget_larger_than_the_model_or_below_the_minimum(trained, mnist):
    model = trained["dense"]
    importance = estimate((model, mnist.x_test, mnist.y_test), "magnitude")
    with pytest.raises(ValueError, match="larger than the dense model"):
        keep_sets(importance, Budget.params(10**9), model)
    with pytest.raises(ValueError, match="smaller than a subnetwork with 4 unit"):
        keep_sets(importance, Budget.units(5), model, min_units=4)
    with pytest.raises(ValueError, match="allocation"):
        keep_sets(importance, Budget.units(5), model, allocation="greedy")


def test_a_keep_set_that_empties_a_site_is_refused(trained):
    model = trained["dense"]
    with pytest.raises(ValueError, match="keeps no unit"):
        extract(model, {"d1": np.zeros(32, bool)})
    with pytest.raises(ValueError, match="not sites"):
        extract(model, {"nope": np.ones(3, bool)})
    with pytest.raises(ValueError, match=r"shape \(32,\)"):
        extract(model, {"d1": np.ones(31, bool)})
    with pytest.raises(TypeError, match="KeepSet"):
        extract(model, [True, False])


def test_a_mismatch_is_an_error(trained, monkeypatch):
    """The equality check runs on every extraction and fails loudly, as an internal error (a
    bug in subnet, not the user's input)."""
    model = trained["dense"]
    original = keras.Model.predict

    def wrong(self, x, **kwargs):
        return original(self, x, **kwargs) * 0.5

    monkeypatch.setattr(keras.Model, "predict", wrong)
    with pytest.raises(RuntimeError, match="does not compute what the masked model computes"):
        extract(model, {"d1": np.arange(32) < 16})


def test_finetune_improves_and_is_seeded(trained, mnist):
    model = trained["conv"]
    importance = estimate((model, mnist.x_test, mnist.y_test), "magnitude")
    keep_set = keep_sets(importance, Budget.flops(0.3), model, allocation="uniform")
    results, weights = [], []
    for known in (None, 0.123):  # a known accuracy before is reported, not measured again
        subnetwork, _ = extract(model, keep_set)
        results.append(finetune(subnetwork, mnist, examples=2000, seed=5, progress=False,
                                accuracy_before=known))
        weights.append(subnetwork.get_weights())
    assert results[1]["accuracy_before"] == 0.123
    assert results[0]["examples_seen"] == 2000
    assert results[0]["accuracy_after"] == results[1]["accuracy_after"]
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert results[0]["accuracy_after"] >= results[0]["accuracy_before"] - 0.05
    with pytest.raises(ValueError, match="exactly one training budget"):
        finetune(subnetwork, mnist, progress=False)


def test_measure_reports_sizes_and_latency(trained):
    model = trained["conv"]
    result = measure(model, batch_size=32, repeats=3)
    assert result["params"] == model.count_params() == result["nonzero_params"]
    assert 0 < result["gzip_bytes"] < result["file_bytes"]
    assert result["latency_ms_per_example"] > 0 and result["batch_size"] == 32
    # A trained model (compiled, with Adam's state) is measured as its bare copy would be.
    assert model.optimizer is not None and model.optimizer.variables
    bare = copy_model(model)
    assert not bare.compiled
    assert abs(measure(bare, repeats=1)["file_bytes"] - result["file_bytes"]) < 64


def test_measure_returns_a_frozen_measurement_that_reads_as_the_dict_it_was():
    model, _ = tiny_dense_task()  # Dense 6 -> 8 -> 3, biases initialised to zero
    result = measure(model, batch_size=4, repeats=1)
    assert isinstance(result, Measurement) and subnet.Measurement is Measurement
    # 6*8+8 + 8*3+3 parameters, of which the 6*8 + 8*3 kernel weights are nonzero;
    # 2 FLOPs per multiply-accumulate.
    assert (result.params, result.flops, result.nonzero_params) == (83, 144, 72)
    assert result.batch_size == 4 and result.latency_ms_per_example > 0
    assert result.reference_latency_ms_per_example is None and result.latency_ratio is None
    assert list(result) == MEASURE_KEYS and len(result) == 7 and "latency_ratio" not in result
    assert result["gzip_bytes"] == result.gzip_bytes and result.get("latency_ratio") is None
    with pytest.raises(KeyError):
        result["latency_ratio"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.params = 1
    as_dict = result.to_dict()
    assert type(as_dict) is dict and dict(result) == {**result} == as_dict == result
    row = {"method": "random"}
    row.update(result)
    assert row == {"method": "random", **as_dict}
    # What a JSON file holds: the same keys in the same order, and back again.
    text = json.dumps(as_dict)
    assert list(json.loads(text)) == MEASURE_KEYS
    assert Measurement.from_dict(json.loads(text)) == result
    with pytest.raises(InputError, match=r"measurement\['batch_size'\] is required"):
        Measurement.from_dict({k: v for k, v in as_dict.items() if k != "batch_size"})


def test_model_cost_is_a_cost_with_the_nonzero_parameters():
    model, _ = tiny_dense_task()
    cost = model_cost(model)
    assert isinstance(cost, Cost) and list(cost) == ["params", "flops", "nonzero_params"]
    assert cost == {"params": 83, "flops": 144, "nonzero_params": 72}
    assert cost.nonzero_params == 72 and {**cost}["flops"] == 144


def _half_width_cnn():
    model = seed_cnn(64, conv_filters=(8, 16), seed=3)
    table = subnet.sites(model)
    small, _ = extract(model, {s.name: np.arange(s.units) < s.units // 2 for s in table})
    return model, small


def test_a_finetuned_subnetwork_saves_no_larger_than_before(tmp_path):
    """Fine-tuning compiles the model with Adam; neither the measured file nor a copy_model file
    may carry the optimizer's state (before the fix, 2.5x the weights: zeros that gzip hid)."""
    _, small = _half_width_cnn()
    before = measure(small, repeats=1)
    rng = np.random.default_rng(0)
    data = Dataset(name="random", x_test=rng.random((64, 28, 28, 1), dtype=np.float32),
                   y_test=rng.integers(0, 10, 64), num_classes=10,
                   x_train=rng.random((256, 28, 28, 1), dtype=np.float32),
                   y_train=rng.integers(0, 10, 256))
    finetune(small, data, examples=256, progress=False, accuracy_before=0.1)
    assert small.compiled and small.optimizer.variables  # what made the files grow
    after = measure(small, repeats=1)
    assert after["file_bytes"] <= before["file_bytes"] + 4096, (before, after)
    assert after["params"] == before["params"]
    copy_model(small).save(tmp_path / "tuned.keras")
    assert (tmp_path / "tuned.keras").stat().st_size <= before["file_bytes"] + 4096


def test_finetune_calls_keras_callbacks_as_fit_does():
    _, small = _half_width_cnn()
    rng = np.random.default_rng(2)
    data = Dataset(name="random", x_test=rng.random((32, 28, 28, 1), dtype=np.float32),
                   y_test=rng.integers(0, 10, 32), num_classes=10,
                   x_train=rng.random((256, 28, 28, 1), dtype=np.float32),
                   y_train=rng.integers(0, 10, 256))
    seen = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(("batch", batch))

        def on_epoch_end(self, epoch, logs=None):
            seen.append(("epoch", epoch, sorted(logs or {})))

    finetune(small, data, epochs=2, batch_size=128, progress=False, accuracy_before=0.1,
             callbacks=[Count()])
    assert [e for e in seen if e[0] == "batch"] == [("batch", 0), ("batch", 1)] * 2
    assert [e[:2] for e in seen if e[0] == "epoch"] == [("epoch", 0), ("epoch", 1)]
    assert "loss" in seen[-1][2]


def test_copy_model_is_an_uncompiled_equal_copy():
    model, _ = _half_width_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    copy = copy_model(model)
    assert not copy.compiled and copy is not model
    x = np.random.default_rng(1).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(copy.predict(x, verbose=0), model.predict(x, verbose=0))


def test_measure_against_a_reference_reports_a_latency_ratio():
    model, small = _half_width_cnn()
    result = measure(small, batch_size=16, repeats=3, reference=model)
    assert result["latency_ratio"] > 0 and result["reference_latency_ms_per_example"] > 0
    assert list(result) == MEASURE_KEYS + ["reference_latency_ms_per_example", "latency_ratio"]
    assert result.latency_ratio == result.to_dict()["latency_ratio"]
    assert Measurement.from_dict(result.to_dict()) == result
    assert result["params"] == small.count_params()
    with pytest.raises(ValueError, match="`repeats`"):
        measure(small, repeats=0)


def test_keep_set_is_a_mapping(trained, mnist):
    model = trained["dense"]
    importance = estimate((model, mnist.x_test, mnist.y_test), "magnitude")
    keep_set = keep_sets(importance, Budget.units(0.5), model)
    assert isinstance(keep_set, KeepSet) and set(keep_set) == {"d1", "d2"}
    summary = keep_set.to_dict()
    assert summary["widths"] == keep_set.widths and summary["budget"]["kind"] == "units"


@pytest.mark.parametrize("one_pass", [True, False])
def test_recalibrate_batchnorm_sets_exact_statistics(trained, mnist, one_pass, monkeypatch):
    """In one pass (each layer sets its statistics as it is reached) or layer by layer: the same
    exact statistics, each layer's from inputs computed with the layers before it
    recalibrated."""
    from subnet import finetuning
    from subnet.extraction import recalibrate_batchnorm

    if not one_pass:
        monkeypatch.setattr(finetuning, "_ONE_PASS_BYTES", 0)
    model = keras.models.clone_model(trained["conv_bn"])
    model.set_weights(trained["conv_bn"].get_weights())
    x = mnist.x_train[:700]
    assert recalibrate_batchnorm(model, x, batch_size=300) == 2
    bn1 = model.get_layer("bn1")
    inputs = keras.ops.convert_to_numpy(keras.Model(model.inputs, bn1.input)(x)).astype(
        np.float64)
    np.testing.assert_allclose(bn1.moving_mean.numpy(), inputs.mean(axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), inputs.var(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-5)
    # The second layer's statistics are those of its inputs *after* the first was recalibrated.
    bn2 = model.get_layer("bn2")
    inputs2 = keras.ops.convert_to_numpy(keras.Model(model.inputs, bn2.input)(x))
    np.testing.assert_allclose(bn2.moving_mean.numpy(), inputs2.mean(axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-5)
    assert recalibrate_batchnorm(trained["dense"], x) == 0
    # the layers are left as they were: their own call, their settings
    assert all(layer.call.__name__ == "call" and layer.momentum == 0.8 for layer in (bn1, bn2))


def test_the_tolerance_follows_the_logits_scale():
    """Float32 rounding grows with the logits: a tolerance of ``atol`` at logits of order one,
    proportionally more where the logits spread over tens or hundreds (an untrained
    MobileNetV2's reach the hundreds, and its extraction differed by 6e-5 in probability)."""
    from subnet.extraction import extraction_tolerance

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    small = softmax(np.array([[0.1, -0.3, 0.5]]))
    assert extraction_tolerance(small, 1e-5) == pytest.approx(1e-5)  # spread 0.8 < 1
    wide = softmax(np.array([[40.0, 0.0, -20.0]]))
    assert extraction_tolerance(wide, 1e-5) == pytest.approx(6e-4, rel=1e-4)
    underflow = np.array([[1.0, 0.0, 0.0]])  # the smallest underflowed: about 87 in float32
    assert 8e-4 < extraction_tolerance(underflow, 1e-5) < 1e-3


def test_a_mismatch_carries_its_subnetwork_and_numbers(trained, monkeypatch):
    from subnet.extraction import ExtractionMismatch

    model = trained["dense"]
    original = keras.Model.predict
    monkeypatch.setattr(keras.Model, "predict",
                        lambda self, x, **kw: original(self, x, **kw) * 0.5)
    with pytest.raises(ExtractionMismatch) as caught:
        extract(model, {"d1": np.arange(32) < 16})
    err = caught.value
    assert isinstance(err, RuntimeError)  # an internal error where nobody records it
    assert err.difference > err.tolerance > 0
    assert err.to_dict() == {"max_difference": err.difference, "tolerance": err.tolerance}
    assert isinstance(err.subnetwork, keras.Model)
    assert err.keep_set.widths["d1"] == 16

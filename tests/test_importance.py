"""Importance from mask records: hand-computable records, exact enumeration on a real model,
ground-truth ablation, and a contract every registered estimator meets."""

import warnings

import keras
import networkx as nx
import numpy as np
import pytest
from scipy import stats

import subnet
from subnet import MaskRecord, record_masks, sample_masks
from subnet.engine.chain import Site, SiteTable
from subnet.importance import (
    ESTIMATORS,
    Importance,
    ablation,
    class_importance,
    estimate,
    exact_banzhaf,
    interactions,
)
from subnet.importance.core import benjamini_hochberg
from subnet.importance.from_record import save_graphml
from subnet.train import fit
from tests.helpers import skip_or_fail

SITES = SiteTable([Site("a", "dense", 4, 0.5, "a"), Site("b", "dense", 2, 0.5, "b")])


def synthetic_record(path, masks, correct, labels, sites=SITES, seed=0):
    """A record whose outcomes are given: correct[m, e] says if mask m gets example e right."""
    masks = np.asarray(masks, bool)
    correct = np.asarray(correct, bool)
    labels = np.asarray(labels, np.int64)
    meta = {"seed": seed, "antithetic": False, "n_masks": len(masks), "sites": sites.to_list(),
            "model_fingerprint": "synthetic", "data_fingerprint": "synthetic", "versions": {}}
    writer = MaskRecord.create(path, meta, labels, np.arange(len(labels)), num_classes=3)
    predicted = np.where(correct, labels, (labels + 1) % 3)
    writer.write_chunk(0, masks, predicted, np.where(correct, 0.9, 0.05))
    return writer.close()


@pytest.fixture
def additive_record(tmp_path):
    """Example e is right exactly when unit e % 6 is kept: a linear game whose main effects are
    the shares of examples each unit carries (1/6 each, 12 examples)."""
    masks = sample_masks(SITES.unit_keep(), 0, range(400))
    owner = np.arange(12) % 6
    correct = masks[:, owner]
    return synthetic_record(tmp_path / "additive", masks, correct, np.arange(12) % 3)


# ---------------------------------------------------------------------------- hand-computable

def test_least_squares_recovers_a_linear_game_exactly(additive_record):
    result = estimate(additive_record, "banzhaf", estimator="least_squares")
    np.testing.assert_allclose(result.scores, 1 / 6, atol=1e-10)
    np.testing.assert_allclose(result.stderr, 0.0, atol=1e-8)
    assert result.details["estimator"] == "least_squares"


def test_difference_of_means_is_unbiased_with_honest_errors(additive_record):
    result = estimate(additive_record, "banzhaf", estimator="difference")
    z = (result.scores - 1 / 6) / result.stderr
    assert np.all(np.abs(z) < 4)
    assert np.all(result.ci_low < 1 / 6) and np.all(result.ci_high > 1 / 6)
    assert 0.01 < np.mean(result.stderr) < 0.05


def test_auto_estimator_switches_on_the_number_of_masks(additive_record, tmp_path):
    assert estimate(additive_record, "banzhaf").details["estimator"] == "least_squares"
    few = synthetic_record(tmp_path / "few", additive_record.masks[:10],
                           additive_record.correct[:10], additive_record.labels)
    assert estimate(few, "banzhaf").details["estimator"] == "difference"


def test_class_conditional_sees_which_units_serve_which_class(tmp_path):
    masks = sample_masks(SITES.unit_keep(), 1, range(300))
    labels = np.array([0, 1, 2] * 4)
    owner = labels * 2  # class c is carried by unit 2c
    record = synthetic_record(tmp_path / "cc", masks, masks[:, owner], labels)
    result = class_importance(record)
    assert result.scores.shape == (3, 6)
    expected = np.zeros((3, 6))
    expected[[0, 1, 2], [0, 2, 4]] = 1.0
    np.testing.assert_allclose(result.scores, expected, atol=1e-10)
    assert result.for_class(1).rank()[0] == 2
    with pytest.raises(ValueError, match="not among"):
        result.for_class(7)


def test_interactions_find_synergy_and_redundancy(tmp_path):
    masks = sample_masks(SITES.unit_keep(), 2, range(600))
    # Examples 0-5 need units 0 AND 1; examples 6-11 need unit 2 OR unit 3.
    correct = np.concatenate([np.repeat((masks[:, 0] & masks[:, 1])[:, None], 6, axis=1),
                              np.repeat((masks[:, 2] | masks[:, 3])[:, None], 6, axis=1)], axis=1)
    record = synthetic_record(tmp_path / "ix", masks, correct, np.arange(12) % 3)
    graph = interactions(record, k=6)
    assert graph.has_edge(0, 1) and graph.edges[0, 1]["kind"] == "synergy"
    assert graph.has_edge(2, 3) and graph.edges[2, 3]["kind"] == "redundancy"
    assert graph.edges[0, 1]["weight"] == pytest.approx(0.5, abs=1e-9)
    assert graph.edges[2, 3]["weight"] == pytest.approx(-0.5, abs=1e-9)
    assert not graph.has_edge(0, 2)
    assert graph.nodes[4]["site"] == "b" and graph.nodes[4]["unit"] == 0
    path = save_graphml(graph, tmp_path / "graph.graphml")
    assert nx.read_graphml(path).number_of_edges() == graph.number_of_edges()


def test_logistic_effects_have_the_sign_and_order_of_the_truth(tmp_path):
    masks = sample_masks(SITES.unit_keep(), 3, range(500))
    owner = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 3, 3])  # unit 3 carries the most
    record = synthetic_record(tmp_path / "lg", masks, masks[:, owner], np.arange(12) % 3)
    result = estimate(record, "logistic")
    assert result.details["scale"] == "log-odds"
    assert result.rank()[0] == 3
    assert np.all(result.scores[[0, 1, 2, 3]] > 0)


# ---------------------------------------------------------------------------- importance type

def test_importance_ranks_saves_and_loads(additive_record, tmp_path):
    result = estimate(additive_record, "banzhaf", estimator="difference")
    path = result.save(tmp_path / "imp")
    again = Importance.load(path)
    assert again == result
    by_site = again.by_site()
    assert list(by_site) == ["a", "b"] and by_site["b"]["scores"].shape == (2,)
    assert set(again.top(2, per_site=True)) == {"a", "b"}
    with pytest.raises(ValueError, match=r"k"):
        again.top(7)
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        again.top(3, per_site=True)
    assert np.all((result.qvalue >= result.pvalue - 1e-12) & (result.qvalue <= 1))


def test_unknown_method_lists_the_known_ones(additive_record):
    with pytest.raises(ValueError, match=r"Unknown importance method 'shapley'.*banzhaf"):
        estimate(additive_record, "shapley")


def test_record_with_one_mask_is_refused(tmp_path):
    record = synthetic_record(tmp_path / "one", np.ones((1, 6), bool), np.ones((1, 12), bool),
                              np.arange(12) % 3)
    with pytest.raises(ValueError, match="at least 2 masks"):
        estimate(record, "banzhaf")


def test_identical_masks_are_refused(tmp_path):
    record = synthetic_record(tmp_path / "same", np.ones((5, 6), bool),
                              np.ones((5, 12), bool), np.arange(12) % 3)
    with pytest.raises(ValueError, match="kept in every mask"):
        estimate(record, "banzhaf")


def test_a_unit_never_dropped_gets_nan_with_a_warning(tmp_path):
    masks = sample_masks(SITES.unit_keep(), 4, range(200))
    masks[:, 5] = True
    record = synthetic_record(tmp_path / "never", masks, masks[:, np.arange(12) % 6],
                              np.arange(12) % 3)
    with pytest.warns(RuntimeWarning, match="kept .or dropped. in every mask"):
        result = estimate(record, "banzhaf")
    assert np.isnan(result.scores[5]) and np.all(np.isfinite(result.scores[:5]))
    assert result.rank()[-1] == 5  # NaN ranks last


def test_benjamini_hochberg_by_hand_and_as_scipy():
    # m = 4 valid p-values; sorted 0.01, 0.03, 0.04, 0.2 -> p * m / rank = 0.04, 0.06, 0.0533,
    # 0.2 -> running minimum from the largest: 0.04, 0.0533, 0.0533, 0.2. NaN stays NaN and
    # does not count.
    p = np.array([0.04, 0.01, np.nan, 0.2, 0.03])
    q = benjamini_hochberg(p)
    np.testing.assert_allclose(q, [0.16 / 3, 0.04, np.nan, 0.2, 0.16 / 3], rtol=1e-12)
    assert np.isnan(q[2])
    rng = np.random.default_rng(0)
    many = rng.random((3, 40)) ** 3
    np.testing.assert_allclose(benjamini_hochberg(many).ravel(),
                               stats.false_discovery_control(many.ravel()), rtol=1e-12)
    assert np.all(np.isnan(benjamini_hochberg(np.full(3, np.nan))))
    sites = SiteTable([Site("a", "dense", 5, 0.5, "a")])
    result = Importance("x", np.zeros(5), sites, pvalue=p)
    np.testing.assert_allclose(result.qvalue, q)


def test_skip_or_fail_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="MNIST.*CI is set"):
        skip_or_fail("MNIST is not available here")
    for value in ("", "false", "0"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.skip.Exception):
            skip_or_fail("MNIST is not available here")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        skip_or_fail("MNIST is not available here")


# ---------------------------------------------------------------------------- real models

@pytest.fixture(scope="module")
def small_model():
    """A real 12-unit network trained on an MNIST slice (small enough to enumerate 2^12)."""
    try:
        data = subnet.load_dataset("mnist").subset(n_train=3000, n_test=300)
    except ValueError as err:
        skip_or_fail(f"MNIST is not available here: {err}")
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(8, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(0))(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(4, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(1))(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(10, activation="softmax",
                                 kernel_initializer=keras.initializers.GlorotUniform(2))(x)
    model = keras.Model(inputs, outputs)
    fit(model, data.x_train, data.y_train, epochs=6, learning_rate=5e-3, progress=False)
    return model, data.x_test, data.y_test


@pytest.mark.slow  # 2,000 recorded masks and all 4,096 enumerated: about 35 s on 2 cores
def test_estimates_converge_to_exact_enumeration(small_model, tmp_path):
    model, x, y = small_model
    exact = exact_banzhaf(model, x, y)
    assert exact.details["n_masks"] == 4096
    record = record_masks(model, x, y, 2000, seed=0, out=tmp_path / "r", progress=False)
    sampled = estimate(record, "banzhaf")
    rho = stats.spearmanr(sampled.scores, exact.scores).statistic
    assert rho > 0.9
    covered = (sampled.ci_low <= exact.scores) & (exact.scores <= sampled.ci_high)
    assert covered.mean() >= 0.75


def test_exact_banzhaf_of_a_hand_built_linear_game():
    """Output logit of class 0 is the sum of two relu units fed by one pixel: with keep 0.5 and
    rescaling, a unit's effect on log p(class 0) is computable by hand."""
    inputs = keras.Input((1,))
    hidden = keras.layers.Dense(2, activation="relu", name="h")(inputs)
    drop = keras.layers.Dropout(0.5)(hidden)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(drop)
    model = keras.Model(inputs, outputs)
    model.get_layer("h").set_weights([np.array([[1.0, 2.0]]), np.zeros(2)])
    model.get_layer("out").set_weights([np.array([[1.0, 0.0], [1.0, 0.0]]), np.zeros(2)])
    x, y = np.ones((1, 1), np.float32), np.zeros(1, int)

    def log_p0(kept):  # logits: (2*(h1*k1 + h2*k2), 0) with rescale 1/0.5 = 2
        z = 2 * (1.0 * kept[0] + 2.0 * kept[1])
        return z - np.log(np.exp(z) + 1.0)

    masks = [(0, 0), (1, 0), (0, 1), (1, 1)]
    value = {m: log_p0(m) for m in masks}
    expected = [((value[1, 0] + value[1, 1]) - (value[0, 0] + value[0, 1])) / 2,
                ((value[0, 1] + value[1, 1]) - (value[0, 0] + value[1, 0])) / 2]
    exact = exact_banzhaf(model, x, y, metric="log_prob")
    np.testing.assert_allclose(exact.scores, expected, atol=2e-3)  # float16 storage of p


def test_ablation_matches_removing_weights(small_model):
    model, x, y = small_model
    result = ablation(model, x, y)
    full = np.mean(model.predict(x, verbose=0).argmax(-1) == y)
    assert result.details["full_metric"] == pytest.approx(full)
    for unit in (0, 5):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        layer = clone.layers[2]
        kernel, bias = layer.get_weights()
        kernel[:, unit] = 0.0
        bias[unit] = 0.0
        layer.set_weights([kernel, bias])
        without = np.mean(clone.predict(x, verbose=0).argmax(-1) == y)
        assert result.scores[unit] == pytest.approx(full - without)


def test_exact_banzhaf_refuses_large_models():
    with pytest.raises(ValueError, match="n <= 16"):
        exact_banzhaf(subnet.seed_cnn(16), np.zeros((2, 28, 28, 1), np.float32),
                      np.zeros(2, int))


def test_adaptive_recording_stops_once_the_boundary_is_resolved(small_model, tmp_path):
    model, x, y = small_model
    stop = subnet.AdaptiveStop(keep_units=6, tolerance=0.01, min_masks=64)
    record = record_masks(model, x, y, 5000, out=tmp_path / "r", chunk_size=64, stop=stop,
                          progress=False)
    outcome = record.meta["adaptive"]
    assert outcome["resolved"] and outcome["stopped_early"]
    assert outcome["masks"] == record.n_masks < 5000 and record.n_masks % 64 == 0
    importance = estimate(record, "banzhaf")
    top = importance.top(6)
    rest = np.setdiff1d(np.arange(12), top)
    assert importance.ci_low[top].min() >= outcome["threshold"] - 0.01
    assert importance.ci_high[rest].max() <= outcome["threshold"] + 0.01
    # Stopping is a function of the masks seen: the same run stops at the same mask.
    again = record_masks(model, x, y, 5000, out=tmp_path / "r2", chunk_size=64, stop=stop,
                         progress=False)
    assert again.n_masks == record.n_masks


@pytest.mark.parametrize("kwargs, match", [
    ({"keep_units": 0}, "keep_units"), ({"keep_units": 3, "metric": "f1"}, "metric"),
    ({"keep_units": 3, "tolerance": -1.0}, "tolerance"), ({"keep_units": 3, "min_masks": 1},
                                                          "min_masks"),
])
def test_adaptive_stop_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        subnet.AdaptiveStop(**kwargs)


def test_adaptive_stop_budget_must_leave_units_out(small_model, tmp_path):
    model, x, y = small_model
    with pytest.raises(ValueError, match="below the number of units"):
        record_masks(model, x, y, 100, out=tmp_path / "r", stop=subnet.AdaptiveStop(12),
                     progress=False)


# ---------------------------------------------------------------------------- the contract

def _source_for(name, record, small_model):
    return record if ESTIMATORS[name].source == "record" else small_model


@pytest.fixture(scope="module")
def small_record(small_model, tmp_path_factory):
    model, x, y = small_model
    return record_masks(model, x, y, 300, seed=1, out=tmp_path_factory.mktemp("rec") / "r",
                        progress=False)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_meets_the_contract(name, small_model, small_record, tmp_path):
    source = _source_for(name, small_record, small_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first = estimate(source, name)
        second = estimate(source, name)
    table = subnet.sites(small_model[0])
    assert isinstance(first, Importance) and first.method == name
    assert first.sites == table
    assert first.scores.shape[-1] == table.n_units
    assert first == second  # deterministic
    assert np.isfinite(first.scores).all()
    path = first.save(tmp_path / name)
    assert Importance.load(path) == first
    for field in ("stderr", "ci_low", "ci_high", "pvalue", "qvalue"):
        value = getattr(first, field)
        assert value is None or value.shape == first.scores.shape


@pytest.mark.parametrize("name", sorted(n for n in ESTIMATORS if ESTIMATORS[n].source == "record"))
def test_record_estimators_follow_a_permutation_of_units(name, small_record, tmp_path):
    """Reordering the units inside a site reorders the scores the same way."""
    permutation = np.concatenate([[3, 0, 7, 1, 6, 2, 5, 4], 8 + np.array([2, 0, 3, 1])])
    record = small_record
    permuted = synthetic_like(record, permutation, tmp_path / "perm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a = estimate(record, name)
        b = estimate(permuted, name)
    np.testing.assert_allclose(b.scores, a.scores[..., permutation], atol=1e-9)


def synthetic_like(record, permutation, path):
    """A copy of ``record`` whose unit columns are reordered by ``permutation``."""
    meta = dict(record.meta)
    for key in ("format", "num_classes"):
        meta.pop(key, None)
    writer = MaskRecord.create(path, meta, record.labels, record.example_indices,
                               num_classes=record.num_classes)
    for chunk in record.iter_chunks():
        writer.write_chunk(chunk.start, chunk.masks[:, permutation], chunk.predicted,
                           chunk.true_prob)
    return writer.close()

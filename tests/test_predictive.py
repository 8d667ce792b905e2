"""Uncertainty metrics: hand-computed cases and independent implementations (scikit-learn)."""

import math

import numpy as np
import pytest

from subnet.errors import InputError
from subnet.predictive import SCORES, auroc, paired_difference, uncertainty


def _random_passes(rng, passes=5, n=300, classes=4, sharpness=3.0):
    logits = rng.normal(size=(n, classes)) * sharpness
    noise = rng.normal(size=(passes, n, classes))
    z = logits[None] + noise
    p = np.exp(z - z.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True), logits.argmax(-1)


def test_scores_by_hand():
    # Two passes that disagree completely on example 0, agree on example 1.
    p = np.array([[[1.0, 0.0], [0.5, 0.5]],
                  [[0.0, 1.0], [0.5, 0.5]]])
    result = uncertainty(p, np.array([0, 1]), resamples=0)
    ln2 = math.log(2)
    np.testing.assert_allclose(result.scores["predictive_entropy"], [ln2, ln2])
    np.testing.assert_allclose(result.scores["expected_entropy"], [0.0, ln2], atol=1e-9)
    np.testing.assert_allclose(result.scores["mutual_information"], [ln2, 0.0], atol=1e-9)
    np.testing.assert_allclose(result.scores["softmax_response"], [0.5, 0.5])
    assert result.metrics["nll"].value == pytest.approx(ln2)
    # Brier of (0.5, 0.5) against a one-hot label: 0.25 + 0.25.
    assert result.metrics["brier"].value == pytest.approx(0.5)
    assert result.n_passes == 2 and result.metrics["nll"].low == result.metrics["nll"].value


def test_calibration_error_by_hand():
    # Confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right) in 10 bins:
    # bin 0.9: accuracy 0.5 vs 0.9, bin 0.6: 1.0 vs 0.6 -> (2 * 0.4 + 2 * 0.4) / 4 = 0.4.
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    result = uncertainty(p, y, bins=10, resamples=0)
    assert result.metrics["ece"].value == pytest.approx(0.4)
    # Bins are [low, high): 0.9 falls in the last, 0.6 in the seventh.
    assert result.reliability["count"][9] == 2 and result.reliability["count"][6] == 2
    assert result.reliability["accuracy"][9] == pytest.approx(0.5)
    assert result.reliability["accuracy"][0] is None
    assert result.reliability["confidence"][6] == pytest.approx(0.6)


def test_metrics_agree_with_scikit_learn():
    from sklearn import metrics  # the test extra's independent implementation
    rng = np.random.default_rng(0)
    p, y = _random_passes(rng)
    y = np.where(rng.random(len(y)) < 0.2, (y + 1) % 4, y)  # some errors
    ood, _ = _random_passes(rng, n=200, sharpness=0.5)
    result = uncertainty(p, y, ood=ood, resamples=0)
    mean = p.mean(0)
    correct = mean.argmax(-1) == y
    assert result.metrics["nll"].value == pytest.approx(
        metrics.log_loss(y, mean, labels=range(4)), rel=1e-9)
    onehot = np.eye(4)[y]
    assert result.metrics["brier"].value == pytest.approx(np.mean(np.sum((mean - onehot) ** 2,
                                                                         -1)))
    binary = p[..., :2] / p[..., :2].sum(-1, keepdims=True)
    y2 = (y % 2).astype(int)
    two = uncertainty(binary, y2, resamples=0)
    assert two.metrics["brier"].value == pytest.approx(
        2 * metrics.brier_score_loss(y2, binary.mean(0)[:, 1]), rel=1e-9)
    for name in SCORES:
        score = result.scores[name]
        assert result.metrics[f"error_auroc_{name}"].value == pytest.approx(
            metrics.roc_auc_score(~correct, score), rel=1e-12)
        both = np.concatenate([result.ood_scores[name], score])
        is_ood = np.r_[np.ones(200, bool), np.zeros(len(score), bool)]
        assert result.metrics[f"ood_auroc_{name}"].value == pytest.approx(
            metrics.roc_auc_score(is_ood, both), rel=1e-12)
    assert result.metrics["accuracy"].value == pytest.approx(correct.mean())


def test_auroc_counts_ties_half_and_coverage_rewards_a_good_ranking():
    assert auroc([1, 2], [0, 0]) == 1.0 and auroc([0], [0]) == 0.5
    assert math.isnan(auroc([], [1.0]))
    # Errors are exactly the least confident: accuracy stays 1 until they are admitted.
    p = np.array([[0.99, 0.01]] * 8 + [[0.55, 0.45]] * 2)
    y = np.array([0] * 8 + [1] * 2)
    result = uncertainty(p, y, resamples=0)
    curve = result.coverage["softmax_response"]
    assert curve[0] == 1.0 and curve[-1] == pytest.approx(0.8)
    assert result.metrics["coverage_area_softmax_response"].value > 0.8
    assert result.metrics["error_auroc_softmax_response"].value == 1.0


def test_bootstrap_intervals_hold_the_value_and_are_seeded():
    rng = np.random.default_rng(1)
    p, y = _random_passes(rng, n=200)
    a = uncertainty(p, y, resamples=200, seed=3)
    b = uncertainty(p, y, resamples=200, seed=3)
    for name, estimate in a.metrics.items():
        assert estimate.low <= estimate.value <= estimate.high or name.startswith("ood")
        assert estimate == b.metrics[name]
    assert a.metrics["nll"].high > a.metrics["nll"].low
    assert set(a.to_dict()) >= {"metrics", "reliability", "coverage"}
    assert len(a.to_dict(per_example=True)["correct"]) == 200


@pytest.mark.parametrize("ties", [False, True])
def test_resampled_metrics_equal_the_metrics_of_the_drawn_out_resample(ties):
    from subnet.predictive import _point_metrics, _Resampled, _scores

    rng = np.random.default_rng(7)
    p, y = _random_passes(rng, passes=3, n=400)
    q = _random_passes(rng, passes=3, n=150)[0]
    if ties:  # coarse probabilities: many tied scores, within and across the two sets
        p = np.round(p, 1) + 1e-3
        p, q = p / p.sum(-1, keepdims=True), np.round(q, 1) + 1e-3
        q = q / q.sum(-1, keepdims=True)
    edges = np.linspace(0, 1, 16)
    mean, scores, ood_scores = p.mean(0), _scores(p), _scores(q)
    resampled = _Resampled(mean, scores, y, edges, ood_scores)
    for _ in range(5):
        pick, take = rng.integers(0, 400, 400), rng.integers(0, 150, 150)
        want = _point_metrics(mean[pick], {k: v[pick] for k, v in scores.items()}, y[pick],
                              edges, {k: v[take] for k, v in ood_scores.items()})
        got = resampled(np.bincount(pick, minlength=400).astype(float),
                        np.bincount(take, minlength=150).astype(float))
        assert list(got) == list(want)
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-10,
                                   atol=1e-12)
    # no error to detect: undefined, as the drawn-out resample's
    right = np.bincount(np.flatnonzero(mean.argmax(-1) == y)[:50], minlength=400).astype(float)
    assert math.isnan(resampled(right, np.ones(150))["error_auroc_predictive_entropy"])


def test_paired_difference_resamples_two_predictors_alike():
    rng = np.random.default_rng(2)
    p, y = _random_passes(rng, passes=3, n=300)
    q, _ = _random_passes(rng, passes=1, n=300, sharpness=1.0)  # a worse predictor
    ood = _random_passes(rng, passes=3, n=120)[0]
    a = uncertainty(p, y, ood=ood, resamples=300, seed=5, keep_draws=True)
    b = uncertainty(q, y, ood=ood[:1], resamples=300, seed=5, keep_draws=True)
    # each predictor's draws are its interval's
    for u in (a, b):
        assert np.quantile(u.draws["nll"], 0.025) == pytest.approx(u.metrics["nll"].low)
    # against itself: exactly zero; against another: the quantiles of the draws' differences
    itself = paired_difference(a, a, "nll")
    assert (itself.value, itself.low, itself.high) == (0.0, 0.0, 0.0)
    d = paired_difference(b, a, "nll")
    assert d.value == pytest.approx(b.metrics["nll"].value - a.metrics["nll"].value)
    diff = b.draws["nll"] - a.draws["nll"]
    assert (d.low, d.high) == pytest.approx(tuple(np.quantile(diff, [0.025, 0.975])))
    # paired: narrower than the two intervals side by side would suggest
    assert d.high - d.low < (a.metrics["nll"].high - a.metrics["nll"].low) + \
        (b.metrics["nll"].high - b.metrics["nll"].low)
    assert d.low > 0  # the blunter predictor's NLL is higher, and the interval says so
    with pytest.raises(InputError, match="keep_draws"):
        paired_difference(a, uncertainty(q, y, ood=ood[:1], resamples=300, seed=5), "nll")
    with pytest.raises(InputError, match="resampled alike"):
        paired_difference(a, uncertainty(q, y, resamples=300, seed=5, keep_draws=True), "nll")
    with pytest.raises(InputError, match="Unknown metric"):
        paired_difference(a, b, "accuracy_top5")


@pytest.mark.parametrize("kwargs, message", [
    ({"probabilities": np.full((3, 2), 0.6)}, "summing to 1"),
    ({"probabilities": np.full((3,), 0.5)}, "must have shape"),
    ({"labels": np.array([0, 1])}, "`labels` must be ints of shape (3,)"),
    ({"labels": np.array([0, 1, 5])}, "`labels` must lie in [0, 2)"),
    ({"bins": 0}, "`bins`"),
    ({"ood": np.full((4, 3), 1 / 3)}, "`ood` has 3 classes"),
    ({"ood": np.full((2, 4, 2), 0.5)}, "`ood` has 2 passes"),
    ({"confidence": 1.5}, "`confidence`"),
    ({"probabilities": np.array([[np.nan, 1.0]] * 3)}, "finite"),
])
def test_bad_input_is_a_one_line_error_naming_the_argument(kwargs, message):
    args = {"probabilities": np.full((3, 2), 0.5), "labels": np.array([0, 1, 0]), **kwargs}
    with pytest.raises(InputError) as err:
        uncertainty(args.pop("probabilities"), args.pop("labels"), **args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_predictor_gives_distributions_the_metrics_take():
    import subnet
    from subnet.predictive import deterministic, dropout_passes, unit_subnetworks

    model = subnet.seed_cnn(16, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((12, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 12)
    one = deterministic(model, x)
    passes = dropout_passes(model, x, 4, seed=1)
    units = unit_subnetworks(model, x, 3, seed=2)
    assert one.shape == (1, 12, 10) and passes.shape == (4, 12, 10) and units.shape == (3, 12, 10)
    np.testing.assert_array_equal(dropout_passes(model, x, 2, seed=1), passes[:2])
    np.testing.assert_array_equal(unit_subnetworks(model, x, 3, seed=2), units)
    # a calibrated keep may leave kept units unscaled: the same masks, computed without 1 / keep
    from subnet.engine import make_backend
    from subnet.engine.chain import analyse_chain
    from subnet.masks import sample_masks

    chain = analyse_chain(model, 0.5)
    plain = make_backend(chain, rescale=False).probabilities(
        x, sample_masks(chain.table.unit_keep(), 2, range(3)))
    np.testing.assert_allclose(unit_subnetworks(model, x, 3, seed=2, rescale=False), plain,
                               atol=1e-6)
    assert not np.allclose(plain, units)
    assert not np.allclose(passes[0], passes[1])
    for p in (one, passes, units):
        result = uncertainty(p, y, resamples=10)
        assert result.n_passes == len(p)
    assert uncertainty(one, y, resamples=0).metrics["mean_mutual_information"].value == 0.0


def test_the_analysis_uncertainty_section_from_a_tiny_model(tmp_path):
    import json

    import subnet
    from subnet.analyze import Settings, _uncertainty
    from subnet.data import Dataset
    from subnet.report import figures
    from subnet.report.schema import validate_results
    from subnet.report.uncertainty import _uncertainty_section

    model = subnet.seed_cnn(16, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((40, 28, 28, 1), dtype=np.float32)
    y = np.arange(40) % 10
    data = Dataset(name="tiny", x_test=x, y_test=y, num_classes=10)
    ood = Dataset(name="noise", x_test=rng.random((30, 28, 28, 1), dtype=np.float32),
                  y_test=np.arange(30) % 10, num_classes=10)
    settings = Settings(examples=40, uncertainty_passes=3)
    section = _uncertainty(model, data, settings, {}, ood)
    assert list(section["predictors"]) == ["deterministic", "dropout_1", "dropout_2",
                                           "dropout_3", "unit_subnetworks_3"]
    assert section["ensemble"] == "dropout_3" and section["ood"]["examples"] == 30
    assert len(section["moving_examples"]) == 6
    json.dumps(section, allow_nan=False)  # strict JSON: undefined metrics are null
    built = _uncertainty_section({"uncertainty": section})
    keys = [item.key for item in built.items]
    assert keys == ["uncertainty-metrics", "reliability", "entropy", "moving-examples"]
    for item in built.items[1:]:
        assert figures.render_svg(item.draw, item.size)
    table = built.items[0]
    assert table.rows[0][0] == "dropout off (deterministic)" and len(table.header) == 7
    # The results.json schema takes the section, and refuses a metric without its interval.
    from tests.report_example import example_results

    results = {**example_results(), "uncertainty": json.loads(json.dumps(section))}
    validate_results(results)
    results["uncertainty"]["predictors"]["deterministic"]["metrics"]["nll"] = {"value": 0.1}
    with pytest.raises(subnet.InputError, match="uncertainty"):
        validate_results(results)
    assert _uncertainty_section({}).items[0].text  # older results: a note, not an error


def test_an_ood_set_of_another_shape_is_a_one_line_error_before_any_work(tmp_path, capsys):
    import subnet
    from subnet.analyze import main

    model = subnet.seed_cnn(16, seed=0)
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(0)
    x = rng.random((300, 28, 28, 1), dtype=np.float32)
    np.savez(tmp_path / "data.npz", x_train=x, y_train=np.arange(300) % 10, x_test=x[:20],
             y_test=np.arange(20) % 10)
    np.savez(tmp_path / "other.npz", x_test=rng.random((20, 32, 32, 3), dtype=np.float32),
             y_test=np.arange(20) % 10)
    code = main([str(tmp_path / "model.keras"), "--dataset", str(tmp_path / "data.npz"),
                 "--ood", str(tmp_path / "other.npz"), "--quick", "--examples", "20", "--quiet",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--ood" in err and "(32, 32, 3)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    assert main([str(tmp_path / "model.keras"), "--dataset", str(tmp_path / "data.npz"),
                 "--uncertainty-passes", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--uncertainty-passes" in capsys.readouterr().err

"""analyses/validate_calibrated.py's own logic on made-up measurements: rank statistics,
interval coverage, when a ranking counts as stable, and which metric is called the better one."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analyses"))

import validate_calibrated as vc  # noqa: E402


def test_spearman_is_rank_correlation_and_nan_where_undefined():
    assert vc.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert vc.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert vc.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert np.isnan(vc.spearman([1, 2, np.nan], [1, 2, 3]))  # a unit a prefix never dropped
    assert np.isnan(vc.spearman([1, 1, 1], [1, 2, 3]))  # constant scores
    with pytest.raises(ValueError, match="two 1-D arrays of one length"):
        vc.spearman([1, 2], [1, 2, 3])


def test_interval_coverage_counts_truth_inside_closed_intervals():
    low, high = np.array([0.0, 0.0, 0.0, np.nan]), np.array([1.0, 1.0, 1.0, 1.0])
    # 1.0 on the bound counts; 1.5 is outside; a NaN bound does not cover
    assert vc.interval_coverage(low, high, [0.5, 1.0, 1.5, 0.5]) == 0.5


def test_top_k_breaks_ties_by_index_and_puts_nan_last():
    assert vc.top_k([0.1, 0.9, 0.5, 0.9], 2) == {1, 3}
    assert vc.top_k([0.3, 0.3, 0.3], 2) == {0, 1}
    assert vc.top_k([np.nan, -1.0, -2.0], 2) == {1, 2}
    assert vc.jaccard({1, 2, 3}, {2, 3, 4}) == 0.5
    assert vc.jaccard(set(), set()) == 1.0


def test_pairwise_runs_over_every_unordered_pair_and_median_fails_nan():
    assert vc.pairwise([1, 2, 4], lambda a, b: b - a) == [1, 3, 2]
    assert vc.median([0.9, np.nan, 0.95]) == 0.9  # NaN counts as failing, not as missing
    assert vc.median([np.nan, np.nan]) is None
    assert vc.median([]) is None


def test_stable_from_is_the_first_prefix_that_stays_above():
    curve = [{"masks": 50, "r": 0.95}, {"masks": 100, "r": 0.85}, {"masks": 200, "r": 0.91},
             {"masks": 500, "r": 0.93}]
    assert vc.stable_from(curve, "r", 0.9) == 200  # 50 reached it but fell back at 100
    assert vc.stable_from(list(reversed(curve)), "r", 0.9) == 200  # order of rows is irrelevant
    assert vc.stable_from(curve, "r", 0.8) == 50
    assert vc.stable_from(curve, "r", 0.94) is None  # the last prefix fails
    assert vc.stable_from(curve + [{"masks": 1000, "r": None}], "r", 0.9) is None


def test_fewer_masks_treats_never_stable_as_more_than_any_count():
    assert vc.fewer_masks(200, 100) == "log_prob"
    assert vc.fewer_masks(100, 200) == "accuracy"
    assert vc.fewer_masks(100, 100) == "tie"
    assert vc.fewer_masks(None, 1500) == "log_prob"
    assert vc.fewer_masks(300, None) == "accuracy"
    assert vc.fewer_masks(None, None) == "neither"


def test_scale_position_runs_from_chance_to_whole():
    assert vc.scale_position(0.1, 0.1, 0.9) == 0.0
    assert vc.scale_position(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert vc.scale_position(0.05, 0.1, 0.9) < 0  # below chance
    with pytest.raises(ValueError, match="must beat chance"):
        vc.scale_position(0.5, 0.3, 0.3)


def test_enumerated_masks_and_table_rows_are_inverse():
    masks = vc.enumerated_masks(3)
    assert masks.shape == (8, 3)
    assert masks[5].tolist() == [True, False, True]  # bit i of the row keeps unit i
    assert vc.table_rows(masks).tolist() == list(range(8))
    assert vc.table_rows([[False, True, True]]).tolist() == [6]


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_exact_from_table_is_the_q_weighted_banzhaf_value(keep):
    # AND of two units: E[f | kept] - E[f | dropped] = q - 0 for each (1/2 at q = 0.5)
    assert vc.exact_from_table([0, 0, 0, 1], keep) == pytest.approx([keep, keep])
    # an additive game: every unit's value is its own weight, whatever q
    weights = np.array([0.3, -0.1, 0.7])
    values = vc.enumerated_masks(3) @ weights
    assert vc.exact_from_table(values, keep) == pytest.approx(weights)
    # OR of two units: 1 - q (the other unit is dropped with probability 1 - q)
    assert vc.exact_from_table([0, 1, 1, 1], keep) == pytest.approx([1 - keep, 1 - keep])
    with pytest.raises(ValueError, match="2\\^n of them"):
        vc.exact_from_table([0, 1, 1], keep)


def test_main_effects_recovers_an_additive_game_and_skips_units_that_never_vary():
    rng = np.random.default_rng(0)
    masks = rng.random((200, 3)) < 0.7
    masks[:, 2] = True  # never dropped: not identified
    values = masks @ np.array([0.5, -0.25, 1.0]) + 0.01 * rng.standard_normal(200)
    scores, low, high = vc.main_effects(masks, values)
    assert scores[:2] == pytest.approx([0.5, -0.25], abs=0.01)
    assert (low[:2] <= [0.5, -0.25]).all() and ([0.5, -0.25] <= high[:2]).all()
    assert np.isnan(scores[2]) and np.isnan(low[2])


@pytest.mark.parametrize("metric", ["accuracy", "log_prob"])
def test_main_effects_is_what_estimate_gives_on_a_record(tmp_path, metric):
    from subnet import sample_masks
    from subnet.importance import estimate
    from subnet.importance.from_record import mask_metric
    from tests.test_importance import SITES, synthetic_record

    masks = sample_masks(np.full(6, 0.7), 0, range(300))
    units = np.arange(12) % 6
    correct = masks[:, units] & masks[:, (units + 1) % 6]  # a nonlinear game (pairs of units)
    record = synthetic_record(tmp_path / "r", masks, correct, np.arange(12) % 3, sites=SITES)
    shipped = estimate(record, "banzhaf", metric=metric)
    scores, low, high = vc.main_effects(masks, mask_metric(record, metric))
    np.testing.assert_allclose(scores, shipped.scores, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(low, shipped.ci_low, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(high, shipped.ci_high, rtol=1e-12, atol=1e-12)


def _game(n=5):
    """A nonlinear game of n units with well separated values (a sum of weights, squashed)."""
    masks = vc.enumerated_masks(n)
    return np.tanh(masks @ np.linspace(0.1, 0.9, n) - 1.0)


def test_simulate_measures_coverage_and_stability_of_the_shipped_estimator():
    table = _game()
    out = vc.simulate({"accuracy": table, "log_prob": 2 * table}, 0.7, masks=400,
                      prefixes=[50, 400, 800], records=40, top_k_units=2, seed=1)
    assert out["records"] == 40 and [r["masks"] for r in out["curve"]["accuracy"]] == [50, 400]
    for m in ("accuracy", "log_prob"):
        assert 0.85 <= out["coverage_95"][m] <= 1.0  # nominal 0.95, 40 records x 5 units
        assert out["spearman_median"][m] == pytest.approx(1.0)
    # log_prob is accuracy x 2 here: same masks, so identical rankings at every prefix
    assert out["curve"]["accuracy"] == out["curve"]["log_prob"]
    stable = vc.stable_masks(out["curve"])
    assert stable["accuracy"]["pair_spearman"] in (50, 400)
    with pytest.raises(ValueError, match="even number"):
        vc.simulate({"accuracy": table}, 0.7, masks=50, prefixes=[50], records=3,
                    top_k_units=2)
    with pytest.raises(ValueError, match="'accuracy' table"):
        vc.simulate({"log_prob": table}, 0.7, masks=50, prefixes=[50], records=2,
                    top_k_units=2)


def test_simulate_is_seeded():
    table = _game(4)
    a = vc.simulate({"accuracy": table}, 0.8, masks=100, prefixes=[100], records=4,
                    top_k_units=2, seed=3)
    b = vc.simulate({"accuracy": table}, 0.8, masks=100, prefixes=[100], records=4,
                    top_k_units=2, seed=3)
    assert a == b


def _stability(model, setting, accuracy, log_prob):
    def need(n):
        return {"pair_spearman": n, "pair_top_k_jaccard": None, "exact_spearman": n,
                "exact_accuracy_spearman": n}
    return {"model": model, "setting": setting, "position": 0.5,
            "exact_accuracy_vs_log_prob_spearman": 0.6,
            "curve": {m: [{"masks": 200, "pair_spearman": 0.9, "exact_accuracy_spearman": 0.8}]
                      for m in vc.METRICS},
            "stable_from_masks": {"accuracy": need(accuracy), "log_prob": need(log_prob)}}


def test_verdict_tallies_the_metric_needing_fewer_masks_per_setting():
    rows = [_stability("a", "calibrated", 100, 200), _stability("b", "calibrated", 300, None),
            _stability("a", "near_whole", None, 500), _stability("b", "near_whole", 200, 200)]
    out = vc.verdict(rows)
    assert out["pair_spearman"]["fewer_masks"] == {"accuracy": 2, "log_prob": 1, "tie": 1,
                                                   "neither": 0}
    assert out["pair_spearman"]["by_setting"]["near_whole"] == {"accuracy": 0, "log_prob": 1,
                                                               "tie": 1, "neither": 0}
    assert out["pair_top_k_jaccard"]["fewer_masks"]["neither"] == 4


def test_readme_is_generated_from_the_result():
    exact_row = {"model": "a", "setting": "calibrated", "keep": 0.8125, "rescale": False,
                 "mean_masked_accuracy": 0.45, "chance": 0.11, "whole": 0.79, "position": 0.5,
                 "metric": "accuracy", "spearman_median": 0.9712, "spearman_min": 0.95,
                 "coverage_95_mean": 0.9375, "coverage_95_min": 0.9167,
                 "simulated_spearman_median": 0.98, "simulated_coverage_95": 0.946,
                 "targets_met": True}
    stability = [_stability("a", "calibrated", 100, None)]
    result = {"config": {"train_examples": 20000, "epochs": 4, "calibration_examples": 500,
                         "masks": 2000, "record_seeds": 4, "examples": 300, "top_k": 4,
                         "simulated_records": 200, "prefixes": [100, 200]},
              "seconds": 12.5, "threads": 1, "record_vs_table_max_abs_diff": 0.0,
              "exact_validation": [exact_row], "stability": stability,
              "verdict": vc.verdict(stability)}
    text = vc.readme(result)
    assert "| a | calibrated | 0.8125 | no | 0.450 (0.110, 0.790) | 0.50 | accuracy | " \
           "0.971 (0.950) | 0.938 (0.917) | 0.980 | 0.946 | met |" in text
    assert "| a | calibrated | 0.50 | log_prob | - | - | - | - | 0.900 / 0.800 |" in text
    assert "q-weighted Banzhaf value" in text
    assert "largest difference 0.00" in text


def test_summary_counts_targets_and_medians_per_setting():
    def exact(model, setting, metric, met, keep):
        return {"model": model, "setting": setting, "metric": metric, "targets_met": met,
                "keep": keep}
    result = {"exact_validation": [exact("a", "calibrated", "accuracy", True, 0.85),
                                   exact("a", "calibrated", "log_prob", False, 0.85),
                                   exact("b", "calibrated", "accuracy", True, 0.9),
                                   exact("b", "calibrated", "log_prob", True, 0.9)],
              "stability": [_stability("a", "calibrated", 100, 300),
                            _stability("b", "calibrated", 300, None)]}
    out = vc.summary(result)["calibrated"]
    assert (out["targets_met"], out["rows"], out["keep"]) == (3, 4, [0.85, 0.9])
    assert out["pair_stable_accuracy"] == 200.0  # median of 100 and 300
    assert out["pair_stable_log_prob"] is None  # one model never stable
    assert (out["reaches_exact_accuracy_accuracy"], out["reaches_exact_accuracy_log_prob"],
            out["models"]) == (2, 1, 2)

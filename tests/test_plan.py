"""Sizing a run to a time budget from measured costs (subnet.plan, analyze --time-budget)."""

import json

import pytest

from subnet.analyze import Settings, analyze, main
from subnet.errors import InputError
from subnet.plan import FLOORS, SHARES, Costs, parse_duration, plan, predict
from tests.test_analyze_safety import _tiny_data, _tiny_model

ASKED = dict(calibration_examples=500, masks=300, examples=500, selection_examples=500,
             step_masks=150, steps_per_halving=1, finetune_epochs=0.1, passes=3,
             uncertainty_passes=5, latency_repeats=20)
ABOUT = dict(n_train=12000, n_test=10000, auto_keep=True, dropout=False,
             methods=("banzhaf", "magnitude", "random"), budgets=(0.25, 0.0625), repeats=1)
#: A ResNet-20-like model on two loaded cores (as measured), and the blog's network.
SLOW = Costs(mask_example=1.3e-3, engine_build=4.0, forward_example=3.5e-3,
             train_example=1.05e-2, train_call=2.0)
FAST_COSTS = Costs(mask_example=2e-6, engine_build=0.2, forward_example=2e-5,
                   train_example=6e-5, train_call=0.5)


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800),
                                           ("1.5h", 5400), (" 2H ", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-1m", "0", "abc", "1d", "nan", "inf"])
def test_a_bad_duration_is_named(text):
    with pytest.raises(InputError, match="positive duration such as 90s, 30m or 2h"):
        parse_duration(text)


def test_a_slow_model_is_sized_down_stage_by_stage_and_never_below_the_floors():
    made = plan(ASKED, SLOW, 600, grow=False, **ABOUT)
    asked = predict(ASKED, SLOW, **ABOUT)
    for stage, seconds in made.predicted.items():
        # each stage that was over its share is brought within it (rounding aside), but for
        # what no setting sizes: measuring the subnetworks the comparison makes
        if asked[stage] > SHARES[stage] * 600 and stage != "finetune":
            assert seconds <= SHARES[stage] * 600 * 1.01 + 1e-9, (stage, seconds)
    assert made.predicted["finetune"] < asked["finetune"]
    for name, floor in FLOORS.items():
        assert made.values[name] >= min(floor, ASKED[name])
    assert made.values["masks"] < ASKED["masks"] and made.changes["masks"][0] == 300


def test_fine_tuning_is_shortened_to_its_share():
    # Measuring the subnetworks happens either way: only fine-tuning is held to the share.
    made = plan(ASKED, SLOW, 200, grow=False, **ABOUT)
    assert 0 < made.values["finetune_epochs"] < ASKED["finetune_epochs"]
    untuned = predict({**made.values, "finetune_epochs": 0.0}, SLOW, **ABOUT)["finetune"]
    assert made.predicted["finetune"] - untuned <= SHARES["finetune"] * 200 * 1.01


def test_a_budget_below_the_floors_says_it_does_not_fit_and_drops_fine_tuning():
    made = plan(ASKED, SLOW, 20, grow=False, **ABOUT)
    assert not made.fits
    assert made.values["finetune_epochs"] == 0.0  # one call per subnetwork is already too much
    assert made.values["masks"] == FLOORS["masks"]
    assert made.values["examples"] == FLOORS["examples"]


def test_a_fast_model_keeps_its_settings_and_a_generous_budget_grows_the_masks():
    capped = plan(ASKED, FAST_COSTS, 75, grow=False, **ABOUT)
    assert capped.changes == {} and capped.values == ASKED and capped.fits
    grown = plan(ASKED, FAST_COSTS, 1800, grow=True, **ABOUT)
    assert set(grown.changes) == {"masks"}
    assert ASKED["masks"] < grown.values["masks"] <= 20 * ASKED["masks"]
    assert grown.predicted["record"] <= SHARES["record"] * 1800


def test_latency_is_timed_in_fewer_calls_when_measuring_the_subnetworks_is_over_its_share():
    slow = plan(ASKED, SLOW, 75, grow=False, **ABOUT)
    assert FLOORS["latency_repeats"] <= slow.values["latency_repeats"] < 20
    more = predict({**slow.values, "latency_repeats": 20}, SLOW, **ABOUT)["finetune"]
    assert slow.predicted["finetune"] < more
    assert plan(ASKED, FAST_COSTS, 75, grow=False, **ABOUT).values["latency_repeats"] == 20


def test_the_plan_round_trips():
    made = plan(ASKED, SLOW, 300, **ABOUT)
    assert type(made).from_dict(json.loads(json.dumps(made.to_dict()))) == made


def test_analyze_says_what_its_budget_bought_and_resumes_with_the_same_plan(tmp_path):
    model = _tiny_model(tmp_path / "m.keras", dropout=False)
    data = _tiny_data(tmp_path / "d.npz")
    settings = Settings(dataset=str(data), masks=20, examples=10, passes=1, rate=0.5,
                        methods=("banzhaf", "random"), budgets=(0.5,), finetune_epochs=0.1,
                        time_budget=30.0, selection_examples=50, step_masks=20,
                        uncertainty_passes=2)
    results = analyze(model, tmp_path / "out", settings, formats=("html",), progress=False)
    made = results["plan"]
    assert made["seconds"] == 30.0 and set(made["predicted"]) == set(SHARES)
    assert made["costs"]["mask_example"] > 0 and made["costs"]["train_call"] >= 0
    assert results["config"]["time_budget"] == 30.0
    for name, value in made["values"].items():
        if name != "calibration_examples":
            assert results["config"][name] == value
    html = (tmp_path / "out" / "report.html").read_text()
    assert "What the time budget bought" in html and "one masked evaluation" in html
    again = analyze(model, tmp_path / "out", settings, formats=("json",), progress=False,
                    resume=True)
    assert again["plan"] == made and again["config"]["key"] == results["config"]["key"]


def test_the_command_line_sizes_only_what_was_not_given(tmp_path, capsys):
    model = _tiny_model(tmp_path / "m.keras", dropout=False)
    data = _tiny_data(tmp_path / "d.npz")
    code = main([str(model), "--dataset", str(data), "--masks", "20", "--examples", "10",
                 "--rate", "0.5",
                 "--methods", "banzhaf,random", "--budgets", "0.5", "--formats", "json",
                 "--time-budget", "2s", "--quiet", "--out", str(tmp_path / "out")])
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["masks"] == 20 and results["config"]["examples"] == 10
    assert "masks" not in results["plan"]["changes"]
    assert "masks" not in results["config"]["sized"]
    code = main([str(model), "--dataset", str(data), "--time-budget", "soon",
                 "--out", str(tmp_path / "out2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--time-budget" in err[0] and "30m" in err[0]

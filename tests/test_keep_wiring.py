"""Keep probabilities wired into the record and the analysis (issue 30, items 1 and 2): the
rate a record is drawn with is "auto" (calibrated on held-out training examples), "given" or
the model's own, is stored with the record, stated in results.json and in the report."""

import json

import keras
import numpy as np
import pytest

from subnet.errors import InputError
from subnet.keep import KeepProbabilities, calibrate_keep
from subnet.record import MaskRecord, choose_keep, keep_of_record, parse_rate, record_masks


def _model(dropout: bool):
    """Six features -> 8 hidden units -> 3 classes, fixed weights; Dropout after the hidden
    layer if ``dropout``."""
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu", name="h",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=1))(inputs)
    if dropout:
        x = keras.layers.Dropout(0.5, name="p")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=2))(x)
    return keras.Model(inputs, outputs, name="tiny_dropout" if dropout else "tiny")


@pytest.fixture(scope="module")
def tiny():
    """The model without Dropout, and examples labelled by its own predictions (whole model
    100 %, so random subnetworks have room between chance and the whole)."""
    model = _model(False)
    x = np.random.default_rng(0).normal(size=(240, 6)).astype(np.float32)
    y = np.asarray(model(x)).argmax(-1).astype(np.int64)
    return model, x, y


def test_parse_rate():
    assert parse_rate("auto") == "auto" and parse_rate("AUTO") == "auto"
    assert parse_rate("0.25") == 0.25
    for bad in ("0", "1", "1.5", "half", "nan"):
        with pytest.raises(InputError, match="--rate"):
            parse_rate(bad)


def test_a_site_without_dropout_and_no_rate_names_calibrate_keep(tiny, tmp_path):
    model, x, y = tiny
    with pytest.raises(InputError, match=r"no Dropout layer after it.*subnet\.calibrate_keep"):
        record_masks(model, x, y, 4, out=tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "meta.json").exists()


def test_record_masks_takes_keep_probabilities_and_stores_them(tiny, tmp_path):
    model, x, y = tiny
    keep = calibrate_keep(model, x[:120], y[:120], n_masks=4, steps=3, seed=1)
    record = record_masks(model, x[120:], y[120:], 8, rate=keep, out=tmp_path / "r",
                          progress=False, rescale=not keep.rescale)  # keep's rescale wins
    assert record.meta["keep"] == json.loads(json.dumps(keep.to_dict()))
    assert record.meta["rescale"] == keep.rescale
    q = keep.keep["h"]
    assert [s["keep"] for s in record.sites] == pytest.approx([q])
    assert keep_of_record(record.meta) == KeepProbabilities.from_dict(keep.to_dict())
    # It resumes with the same keep probabilities (and only with them).
    more = record_masks(model, x[120:], y[120:], 16, rate=keep, out=tmp_path / "r",
                        resume=True, progress=False)
    assert more.n_masks == 16 and more.is_complete
    np.testing.assert_array_equal(more.masks[:8], record.masks)
    other = 0.5 if abs(q - 0.5) > 0.01 else 0.3
    with pytest.raises(InputError, match="other sites"):
        record_masks(model, x[120:], y[120:], 24, rate=other, out=tmp_path / "r", resume=True,
                     progress=False)


def test_a_record_made_before_keep_was_stored_loads_and_resumes(tiny, tmp_path):
    model, x, y = tiny
    record = record_masks(model, x, y, 8, rate=0.5, out=tmp_path / "old", progress=False)
    assert "keep" not in record.meta  # as records were made before
    keep = keep_of_record(MaskRecord.load(tmp_path / "old").meta)
    assert keep.keep == {"h": 0.5} and keep.source == "given" and keep.rescale
    resumed = record_masks(model, x, y, 16, rate=keep, out=tmp_path / "old", resume=True,
                           progress=False)
    assert resumed.n_masks == 16
    np.testing.assert_array_equal(resumed.masks[:8], record.masks)


def test_choose_keep_calibrates_sites_without_dropout_and_keeps_given_rates(tiny):
    model, x, y = tiny
    keep, check = choose_keep(model, "auto", x, y, n_masks=4, steps=3, held_out="the last 240")
    assert keep.source == "auto" and check is None
    assert keep.calibration["held_out"] == "the last 240"
    assert "h" in keep.calibration["why"]
    assert keep.calibration["chance"] < keep.calibration["mean_accuracy"] <= 1.0
    given, _ = choose_keep(model, 0.3)
    assert given.source == "given" and given.keep == {"h": pytest.approx(0.7)} and given.rescale
    with pytest.raises(InputError, match="calibrate_keep"):
        choose_keep(model, "auto")  # no held-out examples to calibrate on
    with pytest.raises(InputError, match="calibrate_keep"):
        choose_keep(model, "AUTO")  # "auto" in any case (it used to fail as a rate)


def test_choose_keep_uses_the_models_rates_unless_masks_sit_near_chance(tiny):
    _, x, _ = tiny
    model = _model(True)
    y = np.asarray(model(x, training=False)).argmax(-1).astype(np.int64)
    keep, check = choose_keep(model, "auto", x, y, n_masks=8, steps=3, near_chance=0.0)
    assert keep.source == "model" and keep.keep == {"h": 0.5} and keep.rescale
    assert check["checked"] and not check["near_chance"]
    assert check["chance"] < check["mean_accuracy"] < check["whole"] == 1.0
    # A margin between the masks' mean and the whole: the model's rates count as near chance.
    margin = (check["mean_accuracy"] + check["whole"]) / 2 - check["chance"]
    keep, check = choose_keep(model, "auto", x, y, n_masks=8, steps=3, near_chance=margin)
    assert keep.source == "auto" and check["near_chance"]
    assert "chance" in keep.calibration["why"]
    # Without held-out examples the model's rates are used, unchecked.
    keep, check = choose_keep(model, "auto")
    assert keep.source == "model" and check == {"checked": False,
                                                "why": "no held-out training examples"}


def _recorded(mean: float, chance: float = 0.1, whole: float = 0.95) -> dict:
    accuracy = np.clip(mean + np.linspace(-0.02, 0.02, 30), 0, 1)
    return {"mask_accuracy": accuracy.tolist(), "chance": chance, "whole": whole,
            "record": {"n_masks": 30, "n_examples": 200, "seed": 0}}


def _chosen(source="auto", rescale=False):
    keep = KeepProbabilities(keep={"c1": 0.86, "d1": 0.86}, source=source, rescale=rescale,
                             calibration={"target": 0.5, "chance": 0.1, "whole": 0.95,
                                          "target_accuracy": 0.525, "mean_accuracy": 0.53,
                                          "masks": 16, "seed": 0, "why": "sites without a "
                                          "Dropout layer after them: c1, d1"})
    return {"keep": keep.to_dict(), "check": None, "held_out": "the last 500 training examples",
            "how": "calibrated"}


def test_the_answer_says_when_masks_sit_near_chance():
    from subnet.analyze import _chance_sentence, _keep_section

    near = _keep_section(_chosen(), _recorded(0.12))
    assert near["mask_accuracy"]["near_chance"] is True
    sentence = _chance_sentence(near)
    assert sentence.count(". ") == 0 and "near chance" in sentence and "12.0%" in sentence
    far = _keep_section(_chosen(), _recorded(0.5))
    assert far["mask_accuracy"]["near_chance"] is False and _chance_sentence(far) is None
    assert far["mask_accuracy"]["position"] == pytest.approx((0.5 - 0.1) / 0.85)
    assert far["keep"] == {"c1": 0.86, "d1": 0.86} and far["source"] == "auto"
    assert "q-weighted Banzhaf value" in far["statistic"]
    assert sum(far["mask_accuracy"]["histogram"]["counts"]) == 30


def test_results_and_report_state_the_keep_probabilities():
    from subnet.analyze import _keep_section
    from subnet.report import content
    from subnet.report.schema import validate_results
    from tests.report_example import example_results

    results = example_results()
    validate_results(results)  # results without "keep" (written before) stay valid
    results["keep"] = json.loads(json.dumps(_keep_section(_chosen(), _recorded(0.12))))
    results["blog"]["dropout"] = "unit masks at keep q = 0.86 (the model has no Dropout layer)"
    validate_results(results)
    text = repr(content.build(results))  # every title, reading, row and paragraph
    assert "q-weighted Banzhaf value" in text
    assert "unit masks at keep q = 0.86, one mask" in text
    assert "dropout on, one pass" not in text
    assert "Keep probabilities of the record's masks" in text and "near chance" in text
    bad = json.loads(json.dumps(results))
    bad["keep"]["source"] = "guessed"
    with pytest.raises(InputError, match="keep"):
        validate_results(bad)


def test_the_mask_accuracy_figure_marks_chance_and_the_whole_model():
    import functools

    from subnet.report import figures

    drawn = {}

    def draw(fig):
        figures.mask_accuracy_histogram(fig, [0.4, 0.5, 0.55], dropout_off=0.97,
                                        dropout_on_mean=0.48, masked="unit masks at keep q = 0.8",
                                        chance=0.11, whole=0.96)
        drawn["labels"] = fig.axes[0].get_legend_handles_labels()[1]

    assert b"<svg" in figures.render_svg(functools.partial(draw), (6, 3))
    assert {"whole network, dropout off", "chance",
            "mean with unit masks at keep q = 0.8"} <= set(drawn["labels"])

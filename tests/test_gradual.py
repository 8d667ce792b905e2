"""Gradual prune-retrain on a tiny network: monotone FLOPs, a checkpoint at every budget,
nested subnetworks, resumable."""

import keras
import numpy as np
import pytest

from subnet.data import Dataset
from subnet.errors import InputError
from subnet.extraction import as_keep_set, extract, model_cost
from subnet.gradual import Trajectory, prune_gradually


def _data():
    rng = np.random.default_rng(0)
    y = np.arange(400) % 3
    x = rng.random((400, 6, 6, 1), dtype=np.float32) * 0.3
    for c in range(3):  # each class lights up its own pair of rows
        x[y == c, 2 * c:2 * c + 2] += 0.6
    return Dataset(name="rows", x_test=x[300:], y_test=y[300:], num_classes=3,
                   x_train=x[:300], y_train=y[:300])


def _model():
    init = keras.initializers.GlorotUniform
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", kernel_initializer=init(1), name="c1")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(12, activation="relu", kernel_initializer=init(2), name="d1")(x)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=init(3))(x)
    model = keras.Model(inputs, outputs)
    data = _data()
    from subnet.train import fit

    fit(model, data.x_train, data.y_train, epochs=3, learning_rate=1e-2, progress=False)
    return model


@pytest.fixture(scope="module")
def parent():
    return _model()


@pytest.mark.parametrize("method, allocation", [("magnitude", "uniform"),
                                                ("taylor", "global"),
                                                ("banzhaf_iterative", "uniform")])
def test_flops_fall_every_round_and_each_budget_gets_a_checkpoint(parent, method, allocation):
    data = _data()
    budgets = [0.5, 0.25]
    trajectory = prune_gradually(parent, data, method, budgets, step=0.3, retrain_epochs=0.5,
                                 allocation=allocation, n_masks=40, progress=False,
                                 validation=(data.x_train[-50:], data.y_train[-50:]))
    dense = model_cost(parent)["flops"]
    flops = [r["flops"] for r in trajectory.rounds]
    assert all(a > b for a, b in zip([dense, *flops], flops, strict=False))
    assert sorted(trajectory.checkpoints) == sorted(budgets)
    for budget, point in trajectory.checkpoints.items():
        assert point["flops"] <= budget * dense
        before = trajectory.rounds[point["round"] - 2]["flops"] if point["round"] > 1 else dense
        assert before > budget * dense  # the first round at or below the budget
        # The kept units, taken from the parent, give the checkpoint's widths and FLOPs.
        bits = {name: np.isin(np.arange(site.units), point["kept"][name])
                for name, site in zip(as_keep_set(parent, {}).sites.names,
                                      as_keep_set(parent, {}).sites, strict=True)}
        small, keep = extract(parent, bits)
        assert keep.widths == point["widths"] and keep.flops == point["flops"]
        assert point["val_accuracy"] is not None
    assert Trajectory.from_dict(trajectory.to_dict()) == trajectory


def test_a_trajectory_resumes_without_redoing_finished_rounds(parent, tmp_path, monkeypatch):
    data = _data()
    first = prune_gradually(parent, data, "magnitude", [0.4], step=0.5, retrain_epochs=0.2,
                            out=tmp_path, progress=False)
    assert (tmp_path / first.checkpoints[0.4]["file"]).is_file()
    import subnet.gradual

    def never(*args, **kwargs):
        raise AssertionError("a finished round was redone")

    monkeypatch.setattr(subnet.gradual, "_choose", never)
    again = prune_gradually(parent, data, "magnitude", [0.4], step=0.5, retrain_epochs=0.2,
                            out=tmp_path, progress=False)
    assert again == first
    with pytest.raises(InputError, match="other settings"):
        prune_gradually(parent, data, "magnitude", [0.4], step=0.25, out=tmp_path,
                        progress=False)


@pytest.mark.parametrize("changes, match", [
    ({"budgets": [1.5]}, "budgets"),
    ({"method": "lottery"}, "Unknown criterion"),
    ({"step": 0}, "step"),
    ({"allocation": "fair"}, "allocation"),
    ({"budgets": [1e-6]}, "unit"),
])
def test_bad_settings_are_one_line_errors(parent, changes, match):
    args = {"method": "magnitude", "budgets": [0.5], **changes}
    with pytest.raises(InputError, match=match):
        prune_gradually(parent, _data(), args.pop("method"), args.pop("budgets"), **args,
                        progress=False)


def test_a_thorough_comparison_resumes_only_what_the_same_protocol_made(parent, tmp_path,
                                                                        monkeypatch):
    import json

    import subnet.frontier
    from subnet.frontier import compare_gradual
    from subnet.protocol import Protocol

    data = _data()
    protocol = Protocol.preset("thorough", budgets=(0.5,), seeds=(1,), validation=60,
                               finetune_epochs=1, patience=1, teacher_passes=None,
                               retrain_epochs=0.2, step=0.5)
    first = compare_gradual(parent, data, ("magnitude",), protocol, out=tmp_path / "w",
                            progress=False)
    saved = json.loads((tmp_path / "w" / "rows.json").read_text())
    assert saved["rows"] == [row.to_dict() for row in first.rows]
    assert saved["config"]["protocol"]["finetune_epochs"] == 1

    def no_cell(*args):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(subnet.frontier, "gradual_cell", no_cell)
    again = compare_gradual(parent, data, ["magnitude"], protocol, out=tmp_path / "w",
                            progress=False)
    assert again.rows == first.rows
    # other settings would mix their rows with these: refused, in one line
    longer = Protocol.preset("thorough", budgets=(0.5,), seeds=(1,), validation=60,
                             finetune_epochs=2, patience=1, teacher_passes=None,
                             retrain_epochs=0.2, step=0.5)
    with pytest.raises(InputError, match=r"rows\.json holds a thorough comparison with other "
                                         r"settings; choose another file or delete it"):
        compare_gradual(parent, data, ("magnitude",), longer, out=tmp_path / "w",
                        progress=False)
    # nor other training data with the same test set
    other = Dataset(name="rows", x_test=data.x_test, y_test=data.y_test, num_classes=3,
                    x_train=data.x_train[::-1], y_train=data.y_train[::-1])
    assert other.fingerprint() == data.fingerprint()  # the test set's
    with pytest.raises(InputError, match=r"holds a thorough comparison with other settings"):
        compare_gradual(parent, other, ("magnitude",), protocol, out=tmp_path / "w",
                        progress=False)
    # rows written before they carried what made them (a list), under the old key of
    # iterative mask statistics: resumed as they are, named as they are now
    old = [{**row.to_dict(), "method": "banzhaf"} for row in first.rows]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "rows.json").write_text(json.dumps(old))
    resumed = compare_gradual(parent, data, ("banzhaf",), protocol, out=tmp_path / "old",
                              progress=False)
    assert [row.method for row in resumed.rows] == ["banzhaf_iterative"]
    assert resumed.rows[0].accuracy_finetuned == first.rows[0].accuracy_finetuned
    rewritten = json.loads((tmp_path / "old" / "rows.json").read_text())
    assert rewritten["rows"][0]["method"] == "banzhaf_iterative" and "config" in rewritten

"""python -m subnet.record: shards from the command line, and their merge."""

import json

import numpy as np
import pytest

import subnet
from subnet.masks import MaskRecord
from subnet.record import main, shard_range


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("record-cli")
    subnet.seed_cnn(16, seed=0).save(folder / "model.keras")
    rng = np.random.default_rng(0)
    x = rng.random((24, 28, 28, 1), dtype=np.float32)
    np.savez(folder / "data.npz", x_test=x, y_test=np.arange(24) % 10)
    return folder


def _record(files, out, *extra):
    return main([str(files / "model.keras"), "--dataset", str(files / "data.npz"), "--masks",
                 "24", "--examples", "24", "--seed", "3", "--quiet", "--out", str(out), *extra])


def test_shards_split_the_masks_evenly_and_completely():
    ranges = [shard_range(10, f"{i}/3") for i in range(3)]
    assert [list(r) for r in ranges] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    for bad in ("3/3", "a/b", "1", "-1/2", "0/11"):
        with pytest.raises(subnet.InputError, match="--shard"):
            shard_range(10, bad)


def test_three_shards_merged_equal_one_whole_record(files, tmp_path, capsys):
    assert _record(files, tmp_path / "whole") == 0
    for i in range(3):
        assert _record(files, tmp_path / f"s{i}", "--shard", f"{i}/3") == 0
    assert main(["merge", str(tmp_path / "merged"),
                 *(str(tmp_path / f"s{i}") for i in range(3))]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[1]["masks"] == [0, 8] and lines[-1]["complete"] is True
    whole, merged = MaskRecord.load(tmp_path / "whole"), MaskRecord.load(tmp_path / "merged")
    for name in ("masks", "predicted", "true_prob"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(merged, name))


def test_merging_shards_of_another_seed_is_a_one_line_error(files, tmp_path, capsys):
    assert _record(files, tmp_path / "a", "--shard", "0/2") == 0
    assert main([str(files / "model.keras"), "--dataset", str(files / "data.npz"), "--masks",
                 "24", "--examples", "24", "--seed", "4", "--quiet", "--shard", "1/2",
                 "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    code = main(["merge", str(tmp_path / "m"), str(tmp_path / "a"), str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "seed" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_an_occupied_folder_or_a_bad_shard_is_refused(files, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert _record(files, tmp_path / "mine") == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert _record(files, tmp_path / "x", "--shard", "5/3") == 2
    assert "--shard" in capsys.readouterr().err


def test_the_analysis_uses_a_merged_record_instead_of_recording(files, tmp_path, monkeypatch):
    from subnet.analyze import main as analyze

    rng = np.random.default_rng(1)
    x = rng.random((300, 28, 28, 1), dtype=np.float32)
    np.savez(tmp_path / "data.npz", x_train=x, y_train=np.arange(300) % 10, x_test=x[:24],
             y_test=np.arange(24) % 10)
    common = [str(files / "model.keras"), "--dataset", str(tmp_path / "data.npz"), "--masks",
              "24", "--examples", "24", "--seed", "3", "--quiet"]
    for i in range(2):
        assert main([*common, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}")]) == 0
    assert main(["merge", str(tmp_path / "merged"), str(tmp_path / "s0"),
                 str(tmp_path / "s1")]) == 0
    def no_recording(*args, **kwargs):
        raise AssertionError("the analysis recorded masks instead of using the given record")

    monkeypatch.setattr("subnet.record.sample_masks", no_recording)
    code = analyze([*common[:-1], "--record", str(tmp_path / "merged"), "--methods",
                    "magnitude", "--budgets", "0.5", "--finetune-epochs", "0.01", "--passes",
                    "2", "--uncertainty-passes", "2", "--formats", "json", "--quiet",
                    "--out", str(tmp_path / "out")])
    assert code == 0
    merged, copied = MaskRecord.load(tmp_path / "merged"), MaskRecord.load(tmp_path / "out"
                                                                           / "record")
    np.testing.assert_array_equal(merged.predicted, copied.predicted)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["blog"]["record"]["n_masks"] == 24
    # Another seed, or another model's record, is refused before any work.
    assert analyze([*common[:-1], "--seed", "5", "--record", str(tmp_path / "merged"),
                    "--quiet", "--out", str(tmp_path / "o2")]) == 2
    assert not (tmp_path / "o2").exists()
    subnet.seed_cnn(16, seed=9).save(tmp_path / "other.keras")
    assert analyze([str(tmp_path / "other.keras"), *common[1:-1], "--record",
                    str(tmp_path / "merged"), "--quiet", "--out", str(tmp_path / "o3")]) == 2
    assert not (tmp_path / "o3").exists()

"""python -m subnet.record: shards from the command line, and their merge; the folders it may
write into."""

import fcntl
import json

import numpy as np
import pytest

import subnet
from subnet._outdir import LOCK, MANIFEST, MARKER
from subnet.record import MaskRecord, main, record_masks, shard_range


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

    monkeypatch.setattr("subnet.record.run.sample_masks", no_recording)
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


# ------------------------------------------------------------- the folders a record goes into

def _one_line(capsys, *words):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_users_folder_is_refused_with_or_without_resume_and_left_untouched(files, tmp_path,
                                                                             capsys):
    user = tmp_path / "userproj"
    user.mkdir()
    np.save(user / "labels.npy", np.array([7, 7, 7]))
    (user / "notes.txt").write_text("my notes")
    before = _snapshot(user)
    assert _record(files, user, "--resume") == 2
    _one_line(capsys, "No record to resume at", "userproj", "labels.npy, notes.txt")
    assert _record(files, user) == 2
    _one_line(capsys, "--out", "userproj", "is not empty and was not made by subnet")
    assert main(["merge", str(user), str(files)]) == 2
    _one_line(capsys, "OUT", "userproj", "is not empty and was not made by subnet")
    assert _snapshot(user) == before


def test_an_analysis_folder_is_not_a_record(files, tmp_path, capsys):
    from subnet._outdir import claim

    analysis = tmp_path / "analysis"
    with claim(analysis, "subnet.analyze", ("results.json",)):
        (analysis / "results.json").write_text("{}")
    before = _snapshot(analysis)
    for extra in ((), ("--resume",)):
        assert _record(files, analysis, *extra) == 2
        _one_line(capsys, "analysis", "holds the output of subnet.analyze")
    assert _snapshot(analysis) == before


def test_a_second_writer_is_refused_at_once_for_record_and_merge(files, tmp_path, capsys):
    assert _record(files, tmp_path / "r", "--shard", "0/2") == 0
    capsys.readouterr()
    before = _snapshot(tmp_path / "r")
    with open(tmp_path / "r" / LOCK, "w") as held:  # a record still writing there
        fcntl.flock(held, fcntl.LOCK_EX)
        assert _record(files, tmp_path / "r", "--resume") == 2
        _one_line(capsys, "r' is in use by another record")
        (tmp_path / "m").mkdir()
        with open(tmp_path / "m" / LOCK, "w") as merging:
            fcntl.flock(merging, fcntl.LOCK_EX)
            assert main(["merge", str(tmp_path / "m"), str(tmp_path / "r")]) == 2
            _one_line(capsys, "m' is in use by another record")
    assert _snapshot(tmp_path / "r") == before
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [LOCK]


def test_a_record_folder_is_marked_and_resumes_and_a_record_needs_resume(files, tmp_path, capsys):
    out = tmp_path / "r"
    assert _record(files, out, "--shard", "0/2") == 0
    assert json.loads((out / MARKER).read_text())["tool"] == "subnet.record"
    assert _record(files, out) == 2
    _one_line(capsys, "already holds a record; add --resume")
    assert _record(files, out, "--resume") == 0
    assert MaskRecord.load(out).is_complete


def test_a_record_made_before_folders_were_marked_still_resumes(files, tmp_path, capsys):
    out = tmp_path / "old"
    assert _record(files, out, "--shard", "0/2") == 0
    for name in (MARKER, LOCK, MANIFEST):
        (out / name).unlink()  # as records were written before
    assert _record(files, out, "--resume") == 0
    assert MaskRecord.load(out).is_complete
    assert json.loads((out / MARKER).read_text())["tool"] == "subnet.record"
    # One with a file that is not a record's is someone else's folder.
    assert _record(files, tmp_path / "old2", "--shard", "0/2") == 0
    for name in (MARKER, LOCK, MANIFEST):
        (tmp_path / "old2" / name).unlink()
    (tmp_path / "old2" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert _record(files, tmp_path / "old2", "--resume") == 2
    _one_line(capsys, "No record to resume at")


def test_a_record_refused_later_leaves_no_folder(files, tmp_path, capsys):
    np.savez(tmp_path / "small.npz", x_test=np.zeros((4, 20, 20, 1), np.float32),
             y_test=np.arange(4))
    code = main([str(files / "model.keras"), "--dataset", str(tmp_path / "small.npz"),
                 "--masks", "8", "--quiet", "--out", str(tmp_path / "r")])
    assert code == 2
    capsys.readouterr()
    assert not (tmp_path / "r").exists()


def test_the_library_keeps_to_the_same_folders(files, tmp_path):
    model = subnet.with_dropout(subnet.seed_cnn(16, seed=0), on=False)
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    user = tmp_path / "userproj"
    user.mkdir()
    (user / "labels.npy").write_text("mine")
    for resume, match in ((False, r"`out` '.*userproj' is not empty and was not made by subnet"),
                          (True, r"No record to resume at '.*userproj'")):
        with pytest.raises(subnet.InputError, match=match):
            record_masks(model, x, np.arange(8), 4, rate=0.5, out=user, resume=resume,
                         progress=False)
    assert sorted(p.name for p in user.iterdir()) == ["labels.npy"]
    assert (user / "labels.npy").read_text() == "mine"


def test_the_command_reads_only_the_test_examples_it_records(files, tmp_path, monkeypatch):
    """Memory follows --examples, not what the data file holds: load_dataset is asked for the
    first --examples test examples only."""
    import subnet.data

    asked = {}
    original = subnet.data.load_dataset

    def spy(*args, **kwargs):
        asked.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(subnet.data, "load_dataset", spy)
    assert _record(files, tmp_path / "r", "--examples", "7") == 0
    assert asked["n_test"] == 7
    assert MaskRecord.load(tmp_path / "r").n_examples == 7

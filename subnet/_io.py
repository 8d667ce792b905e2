"""Atomic file output: a file appears complete under its name, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "publish_mode"]


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: setting it later could race with other threads


def publish_mode(directory: bool = False) -> int:
    """The mode a new file (or directory) gets from the process's umask, as ``open`` would give:
    temporary files are created private (0600), and are given this mode before they take their
    final name, so that reports are as readable as any other file the user writes."""
    return (0o777 if directory else 0o666) & ~_UMASK


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``dest``; on success it is renamed onto ``dest``.

    The temporary file keeps ``dest``'s suffix (Keras chooses the format by suffix) and lives in
    the same directory, so the final ``os.replace`` is atomic. Before the rename it gets the mode
    a plain ``open`` would have given it (:func:`publish_mode`). On error it is removed and
    ``dest`` is untouched. Parent directories are created.

    Args:
        dest: The final path.

    Yields:
        The temporary path to write to.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{dest.suffix}",
                               dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, publish_mode())
        os.replace(tmp_path, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``dest`` atomically (see :func:`atomic_path`)."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``dest`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(dest, text.encode("utf-8"))

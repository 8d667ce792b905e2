"""Atomic file output: a file appears complete under its name, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``dest``; on success it is renamed onto ``dest``.

    The temporary file keeps ``dest``'s suffix (Keras chooses the format by suffix) and lives in
    the same directory, so the final ``os.replace`` is atomic. On error it is removed and
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

"""Output folders that subnet owns: claimed with a marker, locked while in use, and cleaned of
nothing but what subnet wrote.

subnet never deletes or overwrites a file it did not write. A folder becomes subnet's when subnet
creates it, or when it is empty and subnet adopts it; either way subnet writes a marker file
(:data:`MARKER`) into it first. A non-empty folder without the marker belongs to someone else and is
refused. Inside its own folder, subnet deletes only the names its tool declares as its outputs.

While a run uses the folder it holds an exclusive advisory lock (``fcntl.flock``) on
:data:`LOCK`; a second run on the same folder is refused at once instead of wiping the first one's
files. The lock dies with the process, so a killed run never leaves the folder locked.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from subnet._io import atomic_write_text
from subnet.errors import InputError, clean

__all__ = ["LOCK", "MARKER", "claim"]

MARKER = ".subnet-output"
LOCK = ".subnet-output.lock"


def _describe(path: Path) -> str:
    return repr(clean(str(path)))


@contextlib.contextmanager
def claim(out: str | os.PathLike, tool: str, outputs: Iterable[str], *,
          fresh: bool) -> Iterator[Path]:
    """Claims ``out`` for one run of ``tool``: created or adopted, marked, locked.

    Args:
        out: The output folder.
        tool: The program that owns it (``subnet.analyze``); a folder another tool made is
            refused.
        outputs: The names (files or folders, relative to ``out``) that ``tool`` writes there.
        fresh: Whether to delete the previous run's ``outputs`` first (a run that does not
            resume); when False they are kept for the run to reuse or replace.

    Yields:
        ``out`` as a Path, locked for the duration of the ``with`` block.

    Raises:
        InputError: ``out`` is a file, a non-empty folder subnet did not make, a folder another
            subnet tool made, or in use by another run.
        OSError: The folder cannot be created or written (the command line names it in one line).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {_describe(out)} exists and is not a folder; choose a folder.")
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER
    if not marker.is_file():
        others = [p.name for p in out.iterdir() if p.name != LOCK]
        if others:
            raise InputError(
                f"--out {_describe(out)} is not empty and was not made by subnet (it holds "
                f"{clean(', '.join(sorted(others)[:3]))}{', ...' if len(others) > 3 else ''}); "
                "subnet only writes into a new or empty folder or one it made itself: choose "
                "another --out.")
    else:
        owner = _owner(marker)
        if owner != tool:
            raise InputError(f"--out {_describe(out)} holds the output of {clean(owner)!s}, not "
                             f"of {tool}; choose another --out.")
    with _locked(out / LOCK, out):
        atomic_write_text(marker, json.dumps({"tool": tool, "pid": os.getpid()}) + "\n")
        if fresh:
            for name in outputs:
                _remove(out / name)
        yield out


def _owner(marker: Path) -> str:
    try:
        data = json.loads(marker.read_text(encoding="utf-8")[:4096])
        return str(data["tool"])
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown program"


@contextlib.contextmanager
def _locked(path: Path, out: Path) -> Iterator[None]:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(f"--out {_describe(out)} is in use by another analysis; wait "
                                 "for it to finish or choose another --out.") from None
            raise
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)

"""Output folders that subnet owns: claimed with a marker, locked while in use, and cleaned of
nothing but the files subnet wrote.

subnet never deletes or overwrites a file it did not write. A folder becomes a tool's when the
tool creates it, or when it is empty and the tool adopts it; either way the tool writes a marker
file (:data:`MARKER`, naming the tool) into it first. A non-empty folder without the marker
belongs to someone else and is refused (a tool may adopt an unmarked folder it recognises as its
own older output: see ``adopt``), and so is a folder another tool marked.

Inside its folder, a tool declares its outputs: names of files, which are its own, and of
sub-folders, whose files are its own only if it wrote them. A manifest (:data:`MANIFEST`) lists
every file under the outputs that subnet wrote: written when a run starts (listing the files a
user had put there, which are never its own) and again when the run ends. A run that starts
afresh deletes only the manifest's files, and then the sub-folders that leaves empty; a file a
user put into one of subnet's sub-folders survives, and so does the sub-folder holding it. After
a run that was killed (its manifest not finished), every file under the outputs but those the
user had put there before it started is taken as subnet's. A folder marked before manifests
existed has none: everything under its outputs is taken as subnet's, as it was then.

While a run uses the folder it holds an exclusive advisory lock (``fcntl.flock``) on
:data:`LOCK`; a second run on the same folder is refused at once instead of writing beside the
first. The lock dies with the process, so a killed run never leaves the folder locked. A thread
that already holds a folder may claim it again (a command that claims its folder, then calls the
library function that claims it too).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from subnet._io import atomic_write_text
from subnet.errors import InputError, clean

__all__ = ["LOCK", "MANIFEST", "MARKER", "Claim", "check", "claim"]

MARKER = ".subnet-output"
LOCK = ".subnet-output.lock"
MANIFEST = ".subnet-output.files"
_CLAIM_FILES = frozenset((MARKER, LOCK, MANIFEST))
_FORMAT = "subnet.outputs/1"
_MAX_MARKER_BYTES = 4096
_MAX_MANIFEST_BYTES = 64 << 20
# What a tool's run is called in messages ("in use by another record").
_NOUNS = {"subnet.analyze": "analysis", "subnet.record": "record"}

_HELD: dict[str, Claim] = {}  # realpath -> the claim this process holds on it
_HELD_LOCK = threading.Lock()


def _describe(path: Path) -> str:
    return repr(clean(str(path)))


def _noun(tool: str) -> str:
    return _NOUNS.get(tool, "run")


def check(out: str | os.PathLike, tool: str, *, name: str = "--out",
          adopt: Callable[[Path], bool] | None = None, resuming: bool = False) -> None:
    """Refuses ``out`` unless ``tool`` may claim it; reads only, writes nothing.

    Args:
        out: The output folder.
        tool: The program that would own it (``"subnet.analyze"``, ``"subnet.record"``).
        name: What messages call the folder: the option or argument that gave it.
        adopt: For a non-empty folder without a marker, whether it is ``tool``'s own output
            from before markers existed (then it is adopted); None: never.
        resuming: Word the refusals for a run that continues (``"no record to resume at
            DIR"``).

    Raises:
        InputError: ``out`` is a file, a non-empty folder subnet did not make, or a folder
            another tool made.
    """
    out = Path(out)
    noun = _noun(tool)
    if out.exists() and not out.is_dir():
        raise InputError(f"{name} {_describe(out)} exists and is not a folder; choose a folder.")
    if not out.exists():
        return
    marker = out / MARKER
    if marker.is_file():
        owner = _owner(marker)
        if owner == tool:
            return
        if resuming:
            raise InputError(f"No {noun} to resume at {_describe(out)}: it holds the output of "
                             f"{clean(owner)}; choose another {name}.")
        raise InputError(f"{name} {_describe(out)} holds the output of {clean(owner)}, not of "
                         f"{tool}; choose another {name}.")
    others = sorted(p.name for p in out.iterdir() if p.name != LOCK)
    if not others or (adopt is not None and adopt(out)):
        return
    held = f"{clean(', '.join(others[:3]))}{', ...' if len(others) > 3 else ''}"
    if resuming:
        raise InputError(f"No {noun} to resume at {_describe(out)}: it holds files subnet did "
                         f"not write ({held}); choose another {name}.")
    raise InputError(f"{name} {_describe(out)} is not empty and was not made by subnet (it "
                     f"holds {held}); subnet only writes into a new or empty folder or one it "
                     f"made itself: choose another {name}.")


class Claim:
    """A folder this process holds for one run of a tool (from :func:`claim`).

    Attributes:
        path: The folder.
        tool: The tool that owns it.
    """

    def __init__(self, path: Path, tool: str, outputs: tuple[str, ...] | None,
                 previous: dict | None):
        self.path, self.tool, self._outputs = path, tool, outputs
        self._thread = threading.get_ident()
        entries = self._entries()
        declared = {n for n in (outputs or ()) if n in entries}  # top-level files: the tool's
        if previous is None:  # new, adopted, or marked before manifests: all of it is subnet's
            self._foreign: set[str] = set()
        elif previous["complete"]:
            self._foreign = entries - set(previous["files"]) - declared
        else:  # the last run was killed: what the user had put there before it is still theirs
            self._foreign = (entries & set(previous["foreign"])) - declared

    def _entries(self) -> set[str]:
        """Paths (relative, with '/') of the files, links and other non-folders under the
        outputs (the whole folder but its own claim files when ``outputs`` is None)."""
        found = set()
        roots = [self.path] if self._outputs is None else [self.path / n for n in self._outputs]
        for root in roots:
            if root.is_symlink() or (root.exists() and not root.is_dir()):
                found.add(root.name)
                continue
            if not root.is_dir():
                continue
            for folder, subfolders, files in os.walk(root):
                # os.walk lists a link to a folder among the folders and does not enter it.
                names = files + [d for d in subfolders if os.path.islink(os.path.join(folder, d))]
                rel = Path(folder).relative_to(self.path)
                for file in names:
                    if rel == Path(".") and file in _CLAIM_FILES:
                        continue
                    found.add((rel / file).as_posix())
        return found

    def discard(self) -> None:
        """Deletes the files under the outputs that subnet wrote, then the folders that leaves
        empty; every other file stays. A sub-folder marked by a tool keeps its marker while it
        still holds someone else's files."""
        ours = sorted(self._entries() - self._foreign)
        later = []
        for rel in ours:
            path = self.path / rel
            if path.name in _CLAIM_FILES:
                later.append(path)
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        folders = {p.parent for p in later}
        for folder in folders:
            if all(n in _CLAIM_FILES for n in os.listdir(folder)):
                for path in later:
                    if path.parent == folder:
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
        for folder in sorted({(self.path / rel).parent for rel in ours},
                             key=lambda p: len(p.parts), reverse=True):
            while folder != self.path and self.path in folder.parents:
                try:
                    folder.rmdir()
                except OSError:  # not empty: someone else's file, or one of ours in use
                    break
                folder = folder.parent

    def _write_manifest(self, complete: bool) -> None:
        entries = self._entries()
        self._foreign &= entries
        atomic_write_text(self.path / MANIFEST, json.dumps({
            "format": _FORMAT, "tool": self.tool, "complete": complete,
            "files": sorted(entries - self._foreign), "foreign": sorted(self._foreign)}) + "\n")


@contextlib.contextmanager
def claim(out: str | os.PathLike, tool: str, outputs: Iterable[str] | None = None, *,
          fresh: bool = False, name: str = "--out", adopt: Callable[[Path], bool] | None = None,
          resuming: bool = False) -> Iterator[Claim]:
    """Claims ``out`` for one run of ``tool``: created or adopted, marked, locked.

    Args:
        out: The output folder.
        tool: The program that owns it (``"subnet.analyze"``); a folder another tool made is
            refused.
        outputs: The names (files or folders, relative to ``out``) that ``tool`` writes there;
            None: the whole folder is the tool's output.
        fresh: Delete the files the previous runs wrote there first (a run that does not
            resume); when False they are kept for the run to reuse or replace.
        name: What messages call the folder (the option or argument that gave it).
        adopt: As for :func:`check`.
        resuming: As for :func:`check`.

    Yields:
        The :class:`Claim`, its folder locked for the duration of the ``with`` block.

    Raises:
        InputError: ``out`` is a file, a non-empty folder subnet did not make, a folder another
            tool made, in use by another run, or its manifest is damaged.
        OSError: The folder cannot be created or written (the command line names it in one line).
    """
    out = Path(out)
    check(out, tool, name=name, adopt=adopt, resuming=resuming)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(out)
    with _HELD_LOCK:
        held = _HELD.get(key)
    if held is not None and held._thread == threading.get_ident() and held.tool == tool:
        if fresh:
            held.discard()
        yield held
        return
    with _locked(out / LOCK, out, name, _noun(tool)):
        previous = _read_manifest(out / MANIFEST, name)
        atomic_write_text(out / MARKER, json.dumps({"tool": tool, "pid": os.getpid()}) + "\n")
        held = Claim(out, tool, None if outputs is None else tuple(outputs), previous)
        removed = False
        with _HELD_LOCK:
            _HELD[key] = held
        try:
            if fresh:
                held.discard()
            held._write_manifest(complete=False)
            yield held
        except BaseException:
            # A run that failed before writing anything leaves no folder behind.
            removed = created and _remove_if_unused(out)
            raise
        finally:
            with _HELD_LOCK:
                _HELD.pop(key, None)
            # A manifest left unfinished (a full disk) only makes the next run take more of the
            # folder's files as subnet's: those it wrote, and none the user had put there before.
            if not removed:
                with contextlib.suppress(OSError):
                    held._write_manifest(complete=True)


def _remove_if_unused(out: Path) -> bool:
    """Removes ``out`` if it holds nothing but its claim files; whether it did."""
    try:
        if not all(n in _CLAIM_FILES for n in os.listdir(out)):
            return False
        for name in _CLAIM_FILES:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
        out.rmdir()
    except OSError:
        return False
    return True


def _owner(marker: Path) -> str:
    try:
        with open(marker, "rb") as f:
            data = json.loads(f.read(_MAX_MARKER_BYTES).decode("utf-8"))
        return str(data["tool"])
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown program"


def _read_manifest(path: Path, name: str) -> dict | None:
    """The manifest of a folder, or None if it has none (made before manifests existed)."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        if not path.is_file():
            raise ValueError("it is not a regular file")
        with open(path, "rb") as f:
            raw = f.read(_MAX_MANIFEST_BYTES + 1)
        if len(raw) > _MAX_MANIFEST_BYTES:
            raise ValueError(f"it holds more than {_MAX_MANIFEST_BYTES:,} bytes")
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != _FORMAT or \
                not isinstance(data.get("complete"), bool):
            raise ValueError("it is not subnet's list of the files it wrote")
        for key in ("files", "foreign"):
            if not isinstance(data.get(key), list) or \
                    not all(isinstance(n, str) for n in data[key]):
                raise ValueError(f"its {key!r} is not a list of names")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise InputError(f"{name} {_describe(path.parent)}: the list of the files subnet wrote "
                         f"there ({MANIFEST}) is damaged ({clean(err)}); delete that file to let "
                         "subnet take every file under its outputs as its own, or choose another "
                         f"{name}.") from None
    return data


@contextlib.contextmanager
def _locked(path: Path, out: Path, name: str, noun: str) -> Iterator[None]:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(f"{name} {_describe(out)} is in use by another {noun}; wait for "
                                 f"it to finish or choose another {name}.") from None
            raise
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

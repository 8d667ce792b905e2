"""The rows of a grid of cells, kept in one JSON file as the cells finish.

A comparison is a grid of independent cells (a method at some budgets for one seed, say), each
of which makes rows. :class:`CellStore` is what the driver of such a grid keeps them in, whatever
runs the cells (:mod:`subnet.distributed`): :func:`subnet.compare` and
:func:`subnet.compare_gradual` both do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

from subnet._io import atomic_write_bytes, atomic_write_text
from subnet.errors import InputError, InputTypeError

__all__ = ["CellStore", "read_json"]


def read_json(path: str | os.PathLike):
    """The JSON a store's file holds: what :class:`CellStore` reads unless given ``read`` (a
    ``read`` that upgrades older files calls it first).

    Raises:
        InputError: If the file cannot be read or is not JSON (the message names it and says
            to delete it to start again).
    """
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"Could not read the rows in '{path}': {err}; delete it to start "
                         "again.") from err


class CellStore:
    """Rows keyed by what made them, saved atomically after each batch, resumed from the file.

    The driver asks the store which rows exist (``key in store``) and computes only the
    others; it hands each batch of new rows to :meth:`add`, which puts them in one order (the
    same whatever order the cells finished in) and rewrites the file atomically, so that an
    interrupted run leaves a complete file and resumes from it. Heavy outputs (a subnetwork's
    ``.keras`` bytes) are written beside the rows by :meth:`write_file`, not into them.

    The file is JSON: with a ``config``, an object ``{**fields, "config": config, "rows":
    rows}`` (``fields``: other top-level values the driver keeps there, e.g. a comparison's
    ``schema_version`` and ``dense``); without one, the bare list of rows.

    Args:
        path: The JSON file (None: the rows are kept in memory only). An existing file is
            read (resumed): its rows, and its fields in :attr:`fields`.
        key: A row's key, from the row (e.g. its ``(method, budget, seed)``); hashable.
        order: A sort key over rows, giving the order the rows are kept and saved in (None:
            the order they were added in). The sort is stable.
        config: The settings that made the rows (JSON-ready). A file made with other
            settings is refused rather than mixed with new rows.
        read: How to read an existing file (None: ``json.loads`` of its text): a function of
            path (as given) returning the object or list described above, which raises
            :class:`~subnet.errors.InputError` for a file it cannot read.
        indent: ``json.dumps``'s indent of the saved file (None: one line).
        files: The folder :meth:`write_file` writes to (None: beside ``path``).
        what: What the file holds, as the mismatch error names it (``"comparison"``: "PATH
            holds a comparison with other settings; ...").

    Attributes:
        rows: The rows, in ``order``: a list the store sorts in place (share it, don't
            replace it).
        fields: The file's other top-level values (only with a ``config``), in the order
            they are saved; the driver may set them before :meth:`save`.
        resumed: Whether an existing file was read.

    Raises:
        InputError: If the file at ``path`` cannot be read, is not what the store writes, or
            was made with another ``config`` (the message names the file and the fix).
        InputTypeError: If ``key`` or ``order`` is not callable.

    Example::

        store = CellStore("rows.json", key=lambda r: (r["method"], r["seed"]),
                          order=lambda r: (r["seed"], r["method"]), config=settings)
        todo = [cell for cell in cells if cell.key not in store]
        for _, rows in executor.map_unordered(run, todo):
            store.add(rows)
    """

    def __init__(self, path: str | os.PathLike | None, *, key: Callable[[Mapping], Hashable],
                 order: Callable[[Mapping], Any] | None = None, config: Mapping | None = None,
                 read: Callable[[str | os.PathLike], Any] | None = None,
                 indent: int | None = None,
                 files: str | os.PathLike | None = None, what: str = "comparison"):
        for name, value in (("key", key), ("order", order)):
            if value is not None and not callable(value):
                raise InputTypeError(f"`{name}` must be a function of a row. Received: "
                                     f"{type(value).__name__}")
        if key is None:
            raise InputTypeError("`key` must be a function of a row. Received: None")
        self.path = None if path is None else Path(path)
        self.key, self.order, self.config = key, order, config
        self.indent = indent
        self.files = Path(files) if files is not None else \
            (self.path.parent if self.path is not None else None)
        self.rows: list = []
        self.fields: dict = {}
        self.resumed = False
        self._keys: dict = {}
        if path is not None and Path(path).exists():
            self._resume(path, read, what)

    def _resume(self, path: str | os.PathLike,
                read: Callable[[str | os.PathLike], Any] | None, what: str) -> None:
        """Reads the rows of the existing file ``path`` (as the caller named it: so the
        messages name it)."""
        data = (read_json if read is None else read)(path)
        if self.config is None:
            if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
                raise InputError(f"'{path}' does not hold a list of rows; delete it to start "
                                 "again.")
            rows = data
        else:
            if not isinstance(data, Mapping) or not isinstance(data.get("rows"), list):
                raise InputError(f"'{path}' does not hold rows with their settings; delete it "
                                 "to start again.")
            if data.get("config") != self.config:
                raise InputError(f"{path} holds a {what} with other settings; choose another "
                                 "file or delete it to start again.")
            self.fields = {k: v for k, v in data.items() if k not in ("config", "rows")}
            rows = data["rows"]
        self.resumed = True
        self.add([dict(row) for row in rows], save=False)

    def __contains__(self, key: Hashable) -> bool:
        """Whether a row with this key is stored."""
        return key in self._keys

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: Hashable) -> dict | None:
        """The row with this key, or None."""
        return self._keys.get(key)

    def add(self, rows: Iterable[Mapping], *, save: bool = True) -> None:
        """Adds a batch of rows, sorts all rows by ``order`` and saves the file.

        A row whose key is already stored replaces that row.

        Args:
            rows: The new rows (dicts; kept as given, not copied).
            save: Write the file (when the store has a ``path``).
        """
        for row in rows:
            key = self.key(row)
            old = self._keys.get(key)
            if old is not None:
                self.rows.remove(old)
            self._keys[key] = row
            self.rows.append(row)
        if self.order is not None:
            self.rows.sort(key=self.order)
        if save:
            self.save()

    def save(self) -> Path | None:
        """Writes the file atomically (a no-op without a ``path``); returns its path."""
        if self.path is None:
            return None
        data = self.rows if self.config is None else \
            {**self.fields, "config": self.config, "rows": self.rows}
        atomic_write_text(self.path, json.dumps(data, indent=self.indent))
        return self.path

    def write_file(self, name: str, data: bytes) -> Path:
        """Writes ``data`` atomically to the file ``name`` in the store's ``files`` folder
        (created if missing), e.g. a subnetwork's ``.keras`` bytes a cell sent back.

        Args:
            name: A file name (no folders).
            data: The file's bytes.

        Returns:
            The file's path (``files / name``).

        Raises:
            InputError: If the store has no ``files`` folder (no ``path`` and no ``files``),
                or ``name`` is not a plain file name.
        """
        if self.files is None:
            raise InputError("This CellStore has no folder for files: give it `files=` (or "
                             "a `path`).")
        if not isinstance(name, str) or not name or Path(name).name != name or \
                name in (".", ".."):
            raise InputError(f"Invalid value for argument `name`: expected a plain file name. "
                             f"Received: name={name!r}")
        path = self.files / name
        atomic_write_bytes(path, data)
        return path

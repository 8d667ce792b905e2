"""Atomic file output for code built on subnet (the analyses under ``analyses/`` use it): a
file appears complete under its name, or not at all, and with the mode the user's umask gives.

``atomic_path(dest)`` yields a temporary path beside ``dest`` (same suffix) that takes
``dest``'s name when the block ends without an error; ``atomic_write_text`` and
``atomic_write_bytes`` write a whole file that way.
"""

from __future__ import annotations

from subnet._io import atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]

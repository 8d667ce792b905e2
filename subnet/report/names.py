"""Names from a model or a file, as the reports show them: visible and short.

A model's and its layers' names, a data set's name and the ``site:unit`` labels built from them
come from files, so they may hold control characters (an escape sequence, a carriage return) and
be thousands of characters long. The reports show each such name through :func:`shown`:

- control characters are shown as ``\\x1b``-style escapes (as the terminal shows them, through
  :func:`subnet.errors.clean`), so nothing invisible reaches a page;
- a name longer than :data:`NAME_LIMIT` characters (after escaping) is shortened to its first
  20 and last 10 characters around an ellipsis, followed by a tag of 6 hexadecimal digits of
  its SHA-256, e.g. ``conv2d_aaaaaaaaaaaaa…aaaaaaaaaa [3f2a1c]``: names that share their
  beginning and end still differ by their tag.

:class:`Names` remembers the names it shortened, so that a report shows each full name once:
in the table of full names at its end (limited to :data:`FULL_NAME_LIMIT` characters a name
and :data:`FULL_NAMES_BUDGET` characters in all; results.json keeps every name whole), and in
the HTML as the tooltip of each shortened name (its first :data:`TOOLTIP_LIMIT` characters).
"""

from __future__ import annotations

import hashlib

from subnet.errors import clean

__all__ = ["FULL_NAMES_BUDGET", "FULL_NAME_LIMIT", "NAME_LIMIT", "TOOLTIP_LIMIT", "Names",
           "label", "shown", "tooltip", "visible"]

NAME_LIMIT = 40  # characters a name is shown with, at most (after escaping)
_TAIL, _TAG = 10, 6  # a shortened name: 20 + "…" + 10 + " [" + 6 + "]" = 40 characters
FULL_NAME_LIMIT = 10_000  # characters of one full name in the table of full names
FULL_NAMES_BUDGET = 100_000  # characters of full names in that table, all names together
TOOLTIP_LIMIT = 300  # characters of a full name in an HTML tooltip


def visible(text: object) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\r``, ``\\t``,
    ``\\n``), however long it is."""
    return clean(text, limit=None)


def _tag(name: str, digits: int = _TAG) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:digits]


def _form(full: str, tag: str, tagged: bool = False) -> str:
    """``full`` (visible) as shown: itself if short enough (and not ``tagged``), else cut
    around an ellipsis to :data:`NAME_LIMIT` characters with ``tag``."""
    if len(full) <= NAME_LIMIT and not tagged:
        return full
    if len(full) + len(tag) + 3 <= NAME_LIMIT:
        return f"{full} [{tag}]"
    head = NAME_LIMIT - 4 - len(tag) - _TAIL
    return f"{full[:head]}…{full[-_TAIL:]} [{tag}]"


def _split_label(text: str) -> tuple[str, str] | None:
    """(site, unit) of a ``site:unit`` label, or None if ``text`` is not one."""
    site, colon, unit = text.rpartition(":")
    return (site, unit) if colon and site and unit.isdigit() else None


def shown(name: object) -> str:
    """How a report shows a name from a file: visible, and shortened to :data:`NAME_LIMIT`
    characters with a tag if longer (see the module's documentation). Idempotent: what it
    returns, it returns unchanged."""
    name = str(name)
    return _form(visible(name), _tag(name))


def label(text: object) -> str:
    """A ``site:unit`` label as shown: the site's name through :func:`shown`, the unit kept."""
    text = str(text)
    parts = _split_label(text)
    return shown(text) if parts is None else f"{shown(parts[0])}:{parts[1]}"


def tooltip(full: str) -> str:
    """A full name as an HTML tooltip shows it: its first :data:`TOOLTIP_LIMIT` characters."""
    if len(full) <= TOOLTIP_LIMIT:
        return full
    return f"{full[:TOOLTIP_LIMIT]}… ({len(full):,} characters in all)"


class Names:
    """The names one report shows: each name's shown form (:func:`shown`; where two names would
    be shown alike, the later one gets a longer tag), and the full names of those shortened.

    Call the instance with a name to get its shown form.
    """

    def __init__(self) -> None:
        self._shown: dict[str, str] = {}  # name -> shown form
        self._owner: dict[str, str] = {}  # shown form -> name
        self._full: dict[str, str] = {}  # shown form -> visible full name, if not shown whole

    def __call__(self, name: object) -> str:
        name = str(name)
        if name in self._shown:
            return self._shown[name]
        full = visible(name)
        form = _form(full, _tag(name))
        digits = _TAG
        while self._owner.get(form, name) != name:  # shown like another name: tell them apart
            digits += 2
            form = _form(full, _tag(name, digits), tagged=True)
        self._shown[name] = form
        self._owner[form] = name
        if form != full:
            self._full[form] = full
        return form

    def label(self, text: object) -> str:
        """A ``site:unit`` label, its site's name shown as a call of this instance shows it."""
        text = str(text)
        parts = _split_label(text)
        return self(text) if parts is None else f"{self(parts[0])}:{parts[1]}"

    @property
    def shortened(self) -> dict[str, str]:
        """{shown form: full name (visible)} of every name not shown whole."""
        return dict(self._full)

    def rows(self) -> tuple[tuple[str, str], ...]:
        """The table of full names: (shown form, full name), in the order they were first
        shown; each full name cut to :data:`FULL_NAME_LIMIT` characters, and all of them to
        :data:`FULL_NAMES_BUDGET` characters together, the names left over counted in a last
        row."""
        rows: list[tuple[str, str]] = []
        left = FULL_NAMES_BUDGET
        for form, full in self._full.items():
            room = min(FULL_NAME_LIMIT, left)
            if room <= 0:
                rest = len(self._full) - len(rows)
                rows.append(("…", f"{rest:,} more {'name' if rest == 1 else 'names'}, not "
                                  "listed here (results.json has them in full)"))
                break
            if len(full) > room:
                full = f"{full[:room]}… ({len(full) - room:,} more characters)"
            rows.append((form, full))
            left -= min(len(full), room)
        return tuple(rows)

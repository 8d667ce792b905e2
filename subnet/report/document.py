"""The report as a document, independent of its format: sections of figures, tables and text.

:func:`subnet.report.content.build` makes a :class:`Document`; the HTML and the PDF writers
render it, through :func:`visible_document`, which shows the control characters of every string
the document shows as escapes (``\\x1b``).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Callable

from subnet.errors import InputError
from subnet.report import names as _names

__all__ = ["Document", "Figure", "Link", "Note", "Section", "Table", "Text", "visible_document"]


@dataclasses.dataclass(frozen=True)
class Figure:
    """A figure: ``draw(fig)`` draws it onto a matplotlib figure.

    Attributes:
        key: A stable identifier (used for anchors).
        title: A short title.
        reading: One sentence saying what the figure shows, with its numbers.
        draw: Draws the figure onto the ``matplotlib.figure.Figure`` it is given.
        size: The figure's (width, height) in inches when drawn on its own (HTML).
    """

    key: str
    title: str
    reading: str
    draw: Callable
    size: tuple[float, float] = (8.0, 4.0)


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of formatted strings.

    Attributes:
        key: A stable identifier.
        title: A short title.
        header: Column names, or None for a two-column key/value list.
        rows: The cells, already formatted.
        numeric: Per column, whether it holds numbers (aligned right).
        reading: An optional sentence shown under the table.
    """

    key: str
    title: str
    header: tuple[str, ...] | None
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...] = ()
    reading: str = ""

    def is_numeric(self, column: int) -> bool:
        """Whether ``column`` holds numbers (aligned right)."""
        return column < len(self.numeric) and self.numeric[column]


@dataclasses.dataclass(frozen=True)
class Link:
    """A link to a file next to the report, inside a :class:`Text` paragraph.

    Attributes:
        text: The text shown.
        href: A relative path (``"mnist/report.html"``), resolved against the report's folder.

    Raises:
        ValueError: If ``href`` is empty, absolute or has a scheme (``http:``, ``file:``): a
            report links only to files that travel with it.
    """

    text: str
    href: str

    def __post_init__(self):
        parts = urllib.parse.urlsplit(self.href)
        if not self.href or parts.scheme or parts.netloc or self.href.startswith(("/", "\\")):
            raise InputError("Invalid value for argument `href`: expected a relative path such "
                             f"as 'mnist/report.html'. Received: href={self.href!r}")

    @property
    def url(self) -> str:
        """The href, percent-encoded (spaces, ``#``, ``?`` and non-ASCII stay part of the path)."""
        return urllib.parse.quote(self.href.replace("\\", "/"))


@dataclasses.dataclass(frozen=True)
class Text:
    """Paragraphs; ``emphasis`` marks the answer sentences.

    Each paragraph is a string, or a tuple of strings and :class:`Link` s that run together
    (``("Full report: ", Link("mnist/report.html", "mnist/report.html"), ".")``).
    """

    paragraphs: tuple[str | tuple[str | Link, ...], ...]
    emphasis: bool = False

    @staticmethod
    def parts(paragraph) -> tuple[str | Link, ...]:
        """A paragraph as a tuple of strings and links."""
        return (paragraph,) if isinstance(paragraph, str) else tuple(paragraph)

    @staticmethod
    def plain(paragraph) -> str:
        """A paragraph's text, links as their text."""
        return "".join(p.text if isinstance(p, Link) else p for p in Text.parts(paragraph))


@dataclasses.dataclass(frozen=True)
class Note:
    """A part of the report that the results do not contain: shown as "<what>: <reason>."
    (by default "<what>: not computed.")."""

    what: str
    reason: str = "not computed"

    @property
    def text(self) -> str:
        """The sentence shown."""
        return f"{self.what}: {self.reason}."


@dataclasses.dataclass(frozen=True)
class Section:
    """A numbered section of the report."""

    key: str
    title: str
    items: tuple


@dataclasses.dataclass(frozen=True)
class Document:
    """The whole report.

    Attributes:
        title: The report's title.
        subject: One sentence on what the report is about (PDF metadata).
        facts: (label, value) pairs for the title block: model, dataset, date, version.
        answer: The answer sentences, shown first.
        sections: The numbered sections.
        names: (shown form, full name) of each name the document shows shortened (the HTML
            shows the full name as a tooltip; the section of full names lists them).
    """

    title: str
    subject: str
    facts: tuple[tuple[str, str], ...]
    answer: tuple[str, ...]
    sections: tuple[Section, ...]
    names: tuple[tuple[str, str], ...] = ()

    @property
    def figures(self) -> list[Figure]:
        """Every figure, in order."""
        return [item for s in self.sections for item in s.items if isinstance(item, Figure)]


def visible_document(doc: Document) -> Document:
    """``doc`` with the control characters of every string it shows (titles, cells, readings,
    paragraphs, notes) shown as escapes (``\\x1b``), as the terminal shows them. Figures draw
    what they are given: the names they are given are shown already."""
    see = _names.visible

    def item(x):
        if isinstance(x, Figure):
            return dataclasses.replace(x, key=see(x.key), title=see(x.title),
                                       reading=see(x.reading))
        if isinstance(x, Table):
            return dataclasses.replace(
                x, key=see(x.key), title=see(x.title), reading=see(x.reading),
                header=None if x.header is None else tuple(see(h) for h in x.header),
                rows=tuple(tuple(see(c) for c in row) for row in x.rows))
        if isinstance(x, Note):
            return Note(see(x.what), see(x.reason))
        if isinstance(x, Text):
            return dataclasses.replace(x, paragraphs=tuple(
                see(p) if isinstance(p, str) else tuple(
                    Link(see(part.text), part.href) if isinstance(part, Link) else see(part)
                    for part in p) for p in x.paragraphs))
        return x

    return Document(
        title=see(doc.title), subject=see(doc.subject),
        facts=tuple((see(k), see(v)) for k, v in doc.facts),
        answer=tuple(see(a) for a in doc.answer),
        sections=tuple(Section(see(s.key), see(s.title), tuple(item(x) for x in s.items))
                       for s in doc.sections),
        names=tuple((see(k), see(v)) for k, v in doc.names))

"""The PDF report on A4 landscape pages: a title page, then the sections in order, each figure on
a page of its own with its reading, tables and text packed onto the pages between figures.

Pages are matplotlib figures written with ``PdfPages`` (vector output, TrueType fonts so the text
can be searched and extracted). Every page has "page k of N" in its footer; long tables continue
over several pages with their header repeated.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from subnet._io import atomic_path
from subnet.report import content
from subnet.report.figures import ACCENT, style
from subnet.report.schema import validate_results

__all__ = ["render_pdf", "write_pdf", "write_pdf_document"]

PAGE = (11.69, 8.27)  # A4 landscape, inches
_LEFT, _RIGHT = 0.05, 0.95  # page margins as fractions of the width
_TEXT_WIDTH_PT = (_RIGHT - _LEFT) * PAGE[0] * 72
_MONO = "DejaVu Sans Mono"
_TABLE_SIZE = 8.0  # points
_TABLE_CHARS = int(_TEXT_WIDTH_PT / (0.602 * _TABLE_SIZE)) - 2  # DejaVu Sans Mono advance: 0.602
_GREY = "#5c6773"


def _wrap(text: str, size: float, width_fraction: float = _RIGHT - _LEFT) -> list[str]:
    """Wraps proportional text to lines that fit the given share of the page width."""
    chars = max(20, int(width_fraction * PAGE[0] * 72 / (0.56 * size)))
    return textwrap.wrap(text, chars) or [""]


@dataclasses.dataclass(frozen=True)
class _Page:
    """One page: ``draw`` fills it; ``constrained`` pages hold a figure laid out by matplotlib."""

    draw: Callable[[Figure], None]
    constrained: bool = False


def _header(fig: Figure, section: str, title: str) -> None:
    fig.text(_LEFT, 0.955, section, fontsize=9, color=_GREY, va="top")
    if title:
        fig.text(_LEFT, 0.925, title, fontsize=14, weight="bold", va="top")


def _footer(fig: Figure, doc_title: str, k: int, n: int) -> None:
    fig.text(_LEFT, 0.025, doc_title, fontsize=7, color=_GREY, va="bottom")
    fig.text(_RIGHT, 0.025, f"page {k} of {n}", fontsize=8, color=_GREY, va="bottom",
             ha="right")


def _lines(fig: Figure, lines: list[tuple[str, dict]], top: float) -> float:
    """Draws (text, style) lines downwards from ``top``; returns the next free y."""
    y = top
    for text, props in lines:
        size = props.get("fontsize", 10)
        if text:
            text_props = {k: v for k, v in props.items() if k != "indent"}
            fig.text(_LEFT + props.get("indent", 0.0), y, text, va="top", **text_props)
        y -= size * 1.45 / (PAGE[1] * 72)
    return y


def _figure_page(section: str, figure: content.Figure) -> _Page:
    def draw(fig: Figure) -> None:
        _header(fig, section, figure.title)
        figure.draw(fig)
        _lines(fig, [(line, {"fontsize": 10}) for line in _wrap(figure.reading, 10)], 0.115)

    return _Page(draw, constrained=True)


_FLOW_TOP, _FLOW_BOTTOM = 0.90, 0.07  # where text and tables may go on a page


def _height(lines: list) -> float:
    """The height of lines as a fraction of the page height."""
    return sum(props.get("fontsize", 10) * 1.45 for _, props in lines) / (PAGE[1] * 72)


@dataclasses.dataclass
class _Block:
    """Lines that belong together: a title, a head repeated when the block continues on the
    next page (a table's header), a body that may be split, and a tail (a table's reading)."""

    title: list
    head: list
    body: list
    tail: list


def _blocks(items: list) -> list[_Block]:
    blocks = []
    for item in items:
        if isinstance(item, content.Note):
            blocks.append(_Block([], [], [(line, {"fontsize": 11, "style": "italic",
                                                  "color": _GREY})
                                          for line in _wrap(item.text, 11)],
                                 [("", {"fontsize": 8})]))
        elif isinstance(item, content.Text):
            size = 13 if item.emphasis else 11
            lines = []
            for paragraph in item.paragraphs:
                props = {"fontsize": size, "color": ACCENT if item.emphasis else "black"}
                lines += [(line, dict(props))
                          for line in _wrap(content.Text.plain(paragraph), size)]
                lines.append(("", {"fontsize": size / 2}))
            blocks.append(_Block([], [], lines, [("", {"fontsize": 8})]))
        else:
            header, body = _table_lines(item)
            mono = {"fontsize": _TABLE_SIZE, "family": _MONO}
            head = []
            if header is not None:
                width = max(len(line) for line in [header] + body)
                head = [(header, {**mono, "weight": "bold"}), ("─" * width, dict(mono))]
            tail = [(line, {"fontsize": 9, "color": _GREY}) for line in _wrap(item.reading, 9)
                    ] if item.reading else []
            blocks.append(_Block([(item.title, {"fontsize": 12, "weight": "bold"}),
                                  ("", {"fontsize": 4})], head,
                                 [(line, dict(mono)) for line in body],
                                 tail + [("", {"fontsize": 12})]))
    return blocks


def _flow_pages(section: str, items: list) -> list[_Page]:
    """Text, notes and tables, packed onto as few pages as fit; long tables continue."""
    room = _FLOW_TOP - _FLOW_BOTTOM
    pages: list[list] = [[]]
    used = 0.0
    for block in _blocks(items):
        whole = block.title + block.head + block.body + block.tail
        if used > 0 and used + _height(whole) > room:
            pages.append([])
            used = 0.0
        title, body = block.title, block.body
        while True:
            rest = room - used - _height(title + block.head)
            take, height = 0, 0.0
            while take < len(body) and height + _height(body[take:take + 1]) <= rest:
                height += _height(body[take:take + 1])
                take += 1
            if take == len(body):
                lines = title + block.head + body
                pages[-1] += lines
                used += _height(lines)
                if used + _height(block.tail) > room:
                    pages.append([])
                    used = 0.0
                pages[-1] += block.tail
                used += _height(block.tail)
                break
            if take == 0 and used > 0:
                pages.append([])
                used = 0.0
                continue
            take = max(take, 1)
            pages[-1] += title + block.head + body[:take]
            pages.append([])
            used = 0.0
            body = body[take:]
            if block.title:
                title = [(block.title[0][0] + " (continued)", dict(block.title[0][1])),
                         *block.title[1:]]
    return [_Page(functools.partial(_draw_flow, section=section, lines=lines))
            for lines in pages if any(text for text, _ in lines)]


def _draw_flow(fig: Figure, *, section: str, lines: list) -> None:
    _header(fig, section, "")
    _lines(fig, lines, _FLOW_TOP)


def _column_widths(table: content.Table) -> list[int]:
    rows = list(table.rows) + ([table.header] if table.header else [])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    while sum(widths) + 2 * (len(widths) - 1) > _TABLE_CHARS:
        widest = max(range(len(widths)), key=widths.__getitem__)
        if widths[widest] <= 12:
            break
        widths[widest] -= 1
    return widths


def _table_lines(table: content.Table) -> tuple[str | None, list[str]]:
    """The table as monospace lines: (header line or None, body lines)."""
    widths = _column_widths(table)

    def format_row(row) -> list[str]:
        cells = [textwrap.wrap(cell, width, break_long_words=True, break_on_hyphens=False)
                 or [""] for cell, width in zip(row, widths, strict=True)]
        out = []
        for i in range(max(len(c) for c in cells)):
            parts = []
            for j, (cell, width) in enumerate(zip(cells, widths, strict=True)):
                text = cell[i] if i < len(cell) else ""
                parts.append(text.rjust(width) if table.is_numeric(j) else text.ljust(width))
            out.append("  ".join(parts).rstrip())
        return out

    header = format_row(table.header)[0] if table.header else None
    body = [line for row in table.rows for line in format_row(row)]
    return header, body


def _title_page(doc: content.Document, contents: list[tuple[str, int]]) -> _Page:
    def draw(fig: Figure) -> None:
        lines = [(line, {"fontsize": 22, "weight": "bold"}) for line in _wrap(doc.title, 22)]
        lines.append(("", {"fontsize": 10}))
        lines += [(f"{label}: {value}", {"fontsize": 11, "color": _GREY})
                  for label, value in doc.facts]
        lines.append(("", {"fontsize": 14}))
        if doc.answer:
            lines.append(("The answer", {"fontsize": 13, "weight": "bold"}))
            for sentence in doc.answer:
                lines += [(line, {"fontsize": 13, "color": ACCENT}) for line in _wrap(sentence, 13)]
                lines.append(("", {"fontsize": 5}))
        else:
            lines.append(("The answer: not computed.", {"fontsize": 13, "style": "italic"}))
        listing = [("", {"fontsize": 14}), ("Contents", {"fontsize": 11, "weight": "bold"})]
        listing += [(f"{title}  ·  page {page}", {"fontsize": 10, "indent": 0.01})
                    for title, page in contents]
        if _height(lines + listing) <= 0.93 - _FLOW_BOTTOM:  # else the answer takes the page
            lines += listing
        _lines(fig, lines, 0.93)

    return _Page(draw)


def _pages(doc: content.Document) -> list[_Page]:
    pages: list[_Page] = []
    contents = []
    for number, section in enumerate(doc.sections, start=1):
        label = f"{number}. {section.title}"
        contents.append((label, len(pages) + 2))  # the title page is page 1
        flow: list = []
        for item in section.items:
            if not isinstance(item, content.Figure):
                flow.append(item)
                continue
            pages.extend(_flow_pages(label, flow))
            flow = []
            pages.append(_figure_page(label, item))
        pages.extend(_flow_pages(label, flow))
    return [_title_page(doc, contents)] + pages


def render_pdf(doc: content.Document, path: str | os.PathLike, *, version: str) -> int:
    """Writes a report document as a PDF file (not atomically; see :func:`write_pdf`).

    Args:
        doc: The document from :func:`subnet.report.content.build`.
        path: The file to write.
        version: The version of subnet that wrote the results (PDF Creator field).

    Returns:
        The number of pages.
    """
    pages = _pages(doc)
    metadata = {"Title": doc.title, "Author": "subnet", "Subject": doc.subject,
                "Creator": f"subnet {version}", "CreationDate": None}
    with style(), PdfPages(path, metadata=metadata) as pdf:
        for k, page in enumerate(pages, start=1):
            fig = Figure(figsize=PAGE, layout="constrained" if page.constrained else None)
            if page.constrained:
                fig.get_layout_engine().set(rect=(_LEFT - 0.01, 0.14, _RIGHT - _LEFT + 0.02,
                                                  0.72))
            page.draw(fig)
            _footer(fig, doc.title, k, len(pages))
            pdf.savefig(fig)
    return len(pages)


def write_pdf(results: Mapping, path: str | os.PathLike) -> Path:
    """Writes the PDF report of a results dict, atomically.

    Args:
        results: The results dict (the contents of results.json).
        path: Where to write the ``.pdf`` file; parent directories are created. The file
            appears complete or not at all.

    Returns:
        The path written.

    Raises:
        TypeError: If ``results`` is not a dict.
        ValueError: If ``results`` lacks a required key or has a value of the wrong type; the
            message names the key path.
    """
    validate_results(results)
    return write_pdf_document(content.build(results), path, version=results["subnet_version"])


def write_pdf_document(doc: content.Document, path: str | os.PathLike, *, version: str) -> Path:
    """Writes a report document as PDF (see :func:`render_pdf`), atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        render_pdf(doc, tmp, version=version)
    return path

"""The PDF report on A4 landscape pages: a title page, then the sections in order, each figure on
a page of its own with its reading, tables and text packed onto the pages between figures.

Pages are matplotlib figures written with ``PdfPages`` (vector output, TrueType fonts so the text
can be searched and extracted). Tables are drawn as tables: proportional type, columns sized to
their contents, numbers aligned right, a shaded header and rules between rows; long cells wrap
within their column, and long tables continue over several pages with their header repeated.
Every page has "page k of N" in its footer. pypdf then adds the outline (bookmarks): one entry
per section, with its figures and tables under it, and the PDF opens with the outline shown.

Every string is drawn with its control characters shown as escapes (``\\x1b``;
:func:`subnet.report.content.visible_document`). Laying out a table takes time in proportion to
its text (a long token is broken at points found by search, not one character at a time), and
a tall cell continues over several rows, which may fall on several pages: no text can stall the
layout or run off a page.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pypdf
import pypdf.annotations
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.textpath import TextToPath

from subnet._io import atomic_path
from subnet.report import content
from subnet.report import names as _names
from subnet.report.figures import ACCENT, style
from subnet.report.schema import validate_results

__all__ = ["render_pdf", "write_pdf", "write_pdf_document"]

PAGE = (11.69, 8.27)  # A4 landscape, inches
_LEFT, _RIGHT = 0.05, 0.95  # page margins as fractions of the width
_TEXT_WIDTH_PT = (_RIGHT - _LEFT) * PAGE[0] * 72
_TABLE_SIZE = 9.0  # points
_CELL_PAD = 5.0  # points left and right of a cell's text
_ROW_PAD = 2.0  # points above and below a row's text
_LINE = 1.3  # line height of table text, in font sizes
_ROW_LINES = 6  # lines of a table row, at most: a taller cell continues in the next row
_GREY = "#5c6773"
_SHADE = "#eef1f4"
_RULE = "#d8dde3"
_MEASURE = TextToPath()


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


@dataclasses.dataclass(frozen=True)
class _Row:
    """One table row, laid out: each cell's lines, and the columns' widths in points."""

    cells: tuple[tuple[str, ...], ...]
    widths: tuple[float, ...]
    numeric: tuple[bool, ...]
    header: bool = False
    key: bool = False  # the first cell of a key/value table (drawn like a header)
    continues: bool = False  # its cells continue in the next row (no rule between them)

    @property
    def height(self) -> float:
        """The row's height in points."""
        return max(len(c) for c in self.cells) * _TABLE_SIZE * _LINE + 2 * _ROW_PAD

    def draw(self, fig: Figure, top: float) -> None:
        """Draws the row with its top edge at ``top`` (a fraction of the page height)."""
        page_w, page_h = PAGE[0] * 72, PAGE[1] * 72
        bottom = top - self.height / page_h
        width = sum(self.widths) / page_w
        if self.header:
            fig.add_artist(Rectangle((_LEFT, bottom), width, top - bottom, color=_SHADE,
                                     transform=fig.transFigure, zorder=0, linewidth=0))
        if not self.continues:
            fig.add_artist(Line2D([_LEFT, _LEFT + width], [bottom, bottom], color=_RULE if not
                                  self.header else _GREY, linewidth=0.6,
                                  transform=fig.transFigure))
        x = _LEFT
        for j, (lines, column) in enumerate(zip(self.cells, self.widths, strict=True)):
            right = self.numeric[j]
            bold = self.header or (self.key and j == 0)
            for i, line in enumerate(lines):
                y = top - (_ROW_PAD + i * _TABLE_SIZE * _LINE) / page_h
                fig.text(x + ((column - _CELL_PAD) if right else _CELL_PAD) / page_w, y, line,
                         va="top", ha="right" if right else "left", fontsize=_TABLE_SIZE,
                         weight="bold" if bold else "normal",
                         color=_GREY if self.key and j == 0 else "black")
            x += column / page_w


def _entry_height(text, props: dict) -> float:
    """An entry's height in points: a line of text, or a table row."""
    if isinstance(text, _Row):
        return text.height
    return props.get("fontsize", 10) * 1.45


def _lines(fig: Figure, lines: list[tuple[object, dict]], top: float) -> float:
    """Draws (text or table row, style) entries downwards from ``top``; returns the next free y.
    """
    y = top
    for text, props in lines:
        if isinstance(text, _Row):
            text.draw(fig, y)
        elif text:
            text_props = {k: v for k, v in props.items() if k != "indent"}
            fig.text(_LEFT + props.get("indent", 0.0), y, text, va="top", **text_props)
        y -= _entry_height(text, props) / (PAGE[1] * 72)
    return y


def _figure_page(section: str, figure: content.Figure) -> _Page:
    def draw(fig: Figure) -> None:
        _header(fig, section, figure.title)
        figure.draw(fig)
        _lines(fig, [(line, {"fontsize": 10}) for line in _wrap(figure.reading, 10)], 0.115)

    return _Page(draw, constrained=True)


_FLOW_TOP, _FLOW_BOTTOM = 0.90, 0.07  # where text and tables may go on a page


def _height(lines: list) -> float:
    """The height of entries as a fraction of the page height."""
    return sum(_entry_height(text, props) for text, props in lines) / (PAGE[1] * 72)


@dataclasses.dataclass
class _Block:
    """Lines that belong together: a title, a head repeated when the block continues on the
    next page (a table's header), a body that may be split, and a tail (a table's reading)."""

    title: list
    head: list
    body: list
    tail: list
    label: str = ""  # a table's title, for the outline


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
            header, body = _table_rows(item)
            row = {"fontsize": _TABLE_SIZE}
            tail = [("", {"fontsize": 4})]
            tail += [(line, {"fontsize": 9, "color": _GREY}) for line in _wrap(item.reading, 9)
                     ] if item.reading else []
            blocks.append(_Block([(item.title, {"fontsize": 12, "weight": "bold"}),
                                  ("", {"fontsize": 4})],
                                 [] if header is None else [(header, dict(row))],
                                 [(r, dict(row)) for r in body],
                                 tail + [("", {"fontsize": 12})], label=item.title))
    return blocks


def _flow_pages(section: str, items: list) -> tuple[list[_Page], list[tuple[str, int]]]:
    """Text, notes and tables, packed onto as few pages as fit; long tables continue.

    Returns:
        The pages, and (table title, index of the page where the table starts) per table.
    """
    room = _FLOW_TOP - _FLOW_BOTTOM
    pages: list[list] = [[]]
    starts: list[tuple[str, int]] = []
    used = 0.0
    for block in _blocks(items):
        whole = block.title + block.head + block.body + block.tail
        if used > 0 and used + _height(whole) > room:
            pages.append([])
            used = 0.0
        title, body = block.title, block.body
        started = False
        while True:
            rest = room - used - _height(title + block.head)
            take, height = 0, 0.0
            while take < len(body) and height + _height(body[take:take + 1]) <= rest:
                height += _height(body[take:take + 1])
                take += 1
            if block.label and not started and (take > 0 or take == len(body) or used == 0):
                starts.append((block.label, len(pages) - 1))
                started = True
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
    kept = [i for i, lines in enumerate(pages) if any(text for text, _ in lines)]
    index = {old: new for new, old in enumerate(kept)}
    return ([_Page(functools.partial(_draw_flow, section=section, lines=pages[i])) for i in kept],
            [(label, index[page]) for label, page in starts])


def _draw_flow(fig: Figure, *, section: str, lines: list) -> None:
    _header(fig, section, "")
    _lines(fig, lines, _FLOW_TOP)


@functools.lru_cache(maxsize=65536)
def _text_width(text: str, bold: bool = False) -> float:
    """The width of a line of table text, in points."""
    if not text:
        return 0.0
    prop = FontProperties(size=_TABLE_SIZE, weight="bold" if bold else "normal")
    return _MEASURE.get_text_width_height_descent(text, prop, ismath=False)[0]


def _fitting(word: str, width: float, bold: bool) -> int:
    """How many of ``word``'s first characters fit in ``width`` points (at least 1): found by
    doubling a guess and then bisecting, so that only about a line's worth of text is measured
    at a time, however long the word."""
    fits = 1
    end = min(len(word), max(2, int(width / (0.5 * _TABLE_SIZE))))
    while _text_width(word[:end], bold) <= width:
        if end == len(word):
            return end
        fits, end = end, min(len(word), 2 * end)
    while end - fits > 1:  # word[:fits] fits (or fits == 1), word[:end] does not
        middle = (fits + end) // 2
        if _text_width(word[:middle], bold) <= width:
            fits = middle
        else:
            end = middle
    return fits


def _wrap_cell(text: str, width: float, bold: bool) -> tuple[str, ...]:
    """Wraps a cell's text at spaces to ``width`` points; a word wider than that (a path, a
    hash) is broken between characters."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if _text_width(candidate, bold) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while len(word) > 1:
            cut = _fitting(word, width, bold)
            if cut == len(word):
                break
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    lines.append(line)
    return tuple(lines)


def _column_widths(table: content.Table) -> list[float]:
    """Column widths in points: each column as wide as its widest cell if the table fits the
    page; otherwise the widest columns give way, down to their longest word (or, if even
    that does not fit, to an equal share of the page)."""
    rows = ([(table.header, True)] if table.header else []) + [(r, False) for r in table.rows]
    n = len(rows[0][0])

    def bold(header: bool, j: int) -> bool:  # headers, and the keys of a key/value table
        return header or (table.header is None and j == 0)

    natural = [max(_text_width(r[j], bold(h, j)) for r, h in rows) + 2 * _CELL_PAD
               for j in range(n)]
    shortest = [max(_text_width(word, bold(h, j)) for r, h in rows for word in r[j].split() or
                    [""]) + 2 * _CELL_PAD for j in range(n)]
    room = _TEXT_WIDTH_PT
    widths = list(natural)
    for floor in (shortest, [min(m, room / n) for m in shortest]):
        while sum(widths) > room + 0.01:
            shrinkable = [j for j in range(n) if widths[j] > floor[j] + 0.01]
            if not shrinkable:
                break
            widest = max(shrinkable, key=widths.__getitem__)
            others = sorted((widths[j] for j in shrinkable if j != widest), reverse=True)
            target = max(floor[widest], others[0] if others else 0.0,
                         widths[widest] - (sum(widths) - room))
            widths[widest] = target if target < widths[widest] else floor[widest]
    return widths


def _table_rows(table: content.Table) -> tuple[_Row | None, list[_Row]]:
    """The table as laid-out rows: (header row or None, body rows). A row taller than
    ``_ROW_LINES`` lines continues in the rows after it, so that long tables break between
    pages anywhere."""
    widths = _column_widths(table)
    numeric = tuple(table.is_numeric(j) for j in range(len(widths)))

    def wrap(cells, header: bool) -> list[tuple[str, ...]]:
        return [_wrap_cell(cell, width - 2 * _CELL_PAD, header or
                           (table.header is None and j == 0))
                for j, (cell, width) in enumerate(zip(cells, widths, strict=True))]

    def rows(cells) -> list[_Row]:
        wrapped = wrap(cells, False)
        tallest = max(len(lines) for lines in wrapped)
        return [_Row(tuple(lines[start:start + _ROW_LINES] or ("",) for lines in wrapped),
                     tuple(widths), numeric, key=table.header is None,
                     continues=start + _ROW_LINES < tallest)
                for start in range(0, tallest, _ROW_LINES)]

    header = _Row(tuple(wrap(table.header, True)), tuple(widths), numeric,
                  header=True) if table.header else None
    return header, [part for r in table.rows for part in rows(r)]


def _title_page(doc: content.Document, contents: list[tuple[str, int]]
                ) -> tuple[_Page, list[tuple[tuple[float, float, float, float], int]]]:
    """The title page, and its links: (rectangle in points, target page index) for each line
    of the contents (none if the answer leaves no room for the contents)."""
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
    entries = [(f"{title}  ·  page {page}", {"fontsize": 10, "indent": 0.01, "color": ACCENT})
               for title, page in contents]
    links = []
    if _height(lines + listing + entries) <= 0.93 - _FLOW_BOTTOM:  # else the answer fills it
        top = (0.93 - _height(lines + listing)) * PAGE[1] * 72
        left = (_LEFT + 0.01) * PAGE[0] * 72
        for (text, props), (_, page) in zip(entries, contents, strict=True):
            height = _entry_height(text, props)
            width = _MEASURE.get_text_width_height_descent(
                text, FontProperties(size=props["fontsize"]), ismath=False)[0]
            links.append(((left, top - height, left + width, top), page - 1))
            top -= height
        lines += listing + entries

    def draw(fig: Figure) -> None:
        _lines(fig, lines, 0.93)

    return _Page(draw), links


def _extend(pages: list, children: list, flowed: list, starts: list) -> None:
    """Appends flowed pages, and their tables' outline entries (page indices after the title
    page)."""
    children.extend((title, len(pages) + 1 + k) for title, k in starts)
    pages.extend(flowed)


def _pages(doc: content.Document) -> tuple[list[_Page], list, list]:
    """The pages; the outline: (section title, page index, [(item title, page index)]); and
    the title page's links to the sections (see :func:`_title_page`)."""
    pages: list[_Page] = []
    contents = []
    outline = []
    for number, section in enumerate(doc.sections, start=1):
        label = f"{number}. {section.title}"
        contents.append((label, len(pages) + 2))  # the title page is page 1
        children: list[tuple[str, int]] = []
        flow: list = []
        first = len(pages) + 1
        for item in section.items:
            if not isinstance(item, content.Figure):
                flow.append(item)
                continue
            _extend(pages, children, *_flow_pages(label, flow))
            flow = []
            children.append((item.title, len(pages) + 1))
            pages.append(_figure_page(label, item))
        _extend(pages, children, *_flow_pages(label, flow))
        outline.append((label, first, children))
    title, links = _title_page(doc, contents)
    return [title] + pages, outline, links


def _add_outline(pdf: bytes, outline: list, links: list, path: str | os.PathLike) -> None:
    """Writes ``pdf`` to ``path`` with the outline (bookmarks) and the title page's links to
    the sections added, opening with the outline shown."""
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(pdf))
    for rect, page in links:
        writer.add_annotation(page_number=0, annotation=pypdf.annotations.Link(
            rect=rect, target_page_index=page))
    writer.add_outline_item(title="Title page", page_number=0)
    for title, page, children in outline:
        parent = writer.add_outline_item(title=title, page_number=page, is_open=False)
        for child, child_page in children:
            writer.add_outline_item(title=child, page_number=child_page, parent=parent)
    writer.page_mode = "/UseOutlines"
    with open(path, "wb") as f:
        writer.write(f)


def render_pdf(doc: content.Document, path: str | os.PathLike, *, version: str) -> int:
    """Writes a report document as a PDF file (not atomically; see :func:`write_pdf`).

    Args:
        doc: The document from :func:`subnet.report.content.build`.
        path: The file to write.
        version: The version of subnet that wrote the results (PDF Creator field).

    Returns:
        The number of pages.
    """
    doc = content.visible_document(doc)
    pages, outline, links = _pages(doc)
    metadata = {"Title": doc.title, "Author": "subnet", "Subject": doc.subject,
                "Creator": f"subnet {_names.visible(version)}", "CreationDate": None}
    buffer = io.BytesIO()
    with style(), PdfPages(buffer, metadata=metadata) as pdf:
        for k, page in enumerate(pages, start=1):
            fig = Figure(figsize=PAGE, layout="constrained" if page.constrained else None)
            if page.constrained:
                fig.get_layout_engine().set(rect=(_LEFT - 0.01, 0.14, _RIGHT - _LEFT + 0.02,
                                                  0.72))
            page.draw(fig)
            _footer(fig, doc.title, k, len(pages))
            pdf.savefig(fig)
    _add_outline(buffer.getvalue(), outline, links, path)
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
    results = validate_results(results)
    return write_pdf_document(content.build(results), path, version=results["subnet_version"])


def write_pdf_document(doc: content.Document, path: str | os.PathLike, *, version: str) -> Path:
    """Writes a report document as PDF (see :func:`render_pdf`), atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        render_pdf(doc, tmp, version=version)
    return path

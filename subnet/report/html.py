"""The HTML report: one self-contained file, no scripts, nothing loaded from the network.

Figures are embedded as SVG ``data:`` URIs in ``<img>`` elements (so they cannot run anything),
with their text drawn as paths; the style sheet is inline; a Content-Security-Policy forbids every
other source, so a stray external reference would be blocked (and reported in the browser's
console) rather than loaded. The only links are to the page's own sections and, where a document
has a :class:`~subnet.report.content.Link`, to a relative path next to the report. Every string
from the results is escaped by Jinja2, after its control characters are shown as escapes
(``\\x1b``; :func:`subnet.report.content.visible_document`, and for every other value the
environment's ``finalize``). A name shown shortened (:mod:`subnet.report.names`) carries its full
name as a tooltip (``<abbr title>``, its first :data:`~subnet.report.names.TOOLTIP_LIMIT`
characters); the section "Full names" lists it whole.

Layout for reading on any screen: every table sits in a container that scrolls sideways, so a
wide table never widens the page; a figure keeps a minimum width at which its tick labels are at
least 10 CSS pixels (on a phone it scrolls sideways too); words and numbers break only at spaces,
except long tokens such as paths and hashes, which may break anywhere; a number and its unit
("98.69 %", "2.1 MiB") never part.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from pathlib import Path

import jinja2
import markupsafe

from subnet._io import atomic_write_text
from subnet.report import content
from subnet.report import names as _names
from subnet.report.figures import render_svg
from subnet.report.schema import validate_results

__all__ = ["render_html", "write_html", "write_html_document"]

CSS_PX_PER_INCH = 96  # a figure is shown at its size in inches, as CSS defines an inch
LONG_TOKEN = 25  # a cell with a token this long (a path, a hash) may break inside it
# A number and what follows it stay on one line: "98.69 %", "4.00×", "2.1 MiB", "1.2 s", and
# the two sides of "±".
_UNIT = re.compile(r"(?<=\d) (?=%|×|MiB\b|KiB\b|B\b|s\b|min\b|h\b|µs\b)|(?<=[\d%]) (?=±)"
                   r"|(?<=±) (?=[\d-])")


def _keep_units(text) -> markupsafe.Markup:
    """Escapes ``text`` and joins each number to its unit with a no-break space."""
    return markupsafe.Markup(_UNIT.sub("\u00a0", str(markupsafe.escape(text))))


def _text_filter(shortened: tuple[tuple[str, str], ...]):
    """The filter that shows a text: escaped, numbers joined to their units, and each name shown
    shortened in an ``<abbr>`` whose tooltip is (the beginning of) its full name."""
    if not shortened:
        return _keep_units
    tips = {str(markupsafe.escape(form)): str(markupsafe.escape(_names.tooltip(full)))
            for form, full in shortened}
    pattern = re.compile("(" + "|".join(map(re.escape, sorted(tips, key=len, reverse=True)))
                         + ")")

    def text(value) -> markupsafe.Markup:
        parts = pattern.split(str(markupsafe.escape(value)))
        return markupsafe.Markup("".join(
            f'<abbr title="{tips[part]}">{part}</abbr>' if k % 2 else _UNIT.sub("\u00a0", part)
            for k, part in enumerate(parts)))

    return text


def _finalize(value):
    """Every value the template prints, its control characters shown as escapes."""
    if isinstance(value, markupsafe.Markup):  # escaped already; escapes add no markup
        return markupsafe.Markup(_names.visible(value))
    return _names.visible(value)


def _cell_class(cell: str) -> str:
    """The class of a table cell that holds a long token: ``wrap`` (it may break anywhere), and
    ``code`` as well when the cell is one hexadecimal hash."""
    if max((len(token) for token in cell.split()), default=0) < LONG_TOKEN:
        return ""
    return "wrap code" if re.fullmatch(r"[0-9a-fA-F]{32,}", cell) else "wrap"


def _environment(shortened: tuple[tuple[str, str], ...] = ()) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("subnet.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, finalize=_finalize)
    env.tests.update(figure=lambda x: isinstance(x, content.Figure),
                     table=lambda x: isinstance(x, content.Table),
                     note=lambda x: isinstance(x, content.Note),
                     link=lambda x: isinstance(x, content.Link))
    env.filters.update(units=_text_filter(shortened), cell_class=_cell_class,
                       parts=content.Text.parts)
    return env


def render_html(doc: content.Document, *, created: str, version: str) -> str:
    """Renders a report document as one self-contained HTML page.

    Args:
        doc: The document from :func:`subnet.report.content.build`.
        created: When the results were created (shown in the footer).
        version: The version of subnet that wrote the results.

    Returns:
        The HTML text.
    """
    doc = content.visible_document(doc)
    images = {}
    for figure in doc.figures:
        svg = render_svg(figure.draw, figure.size)
        width, height = (round(CSS_PX_PER_INCH * inches) for inches in figure.size)
        images[figure.key] = {"uri": "data:image/svg+xml;base64," + base64.b64encode(svg).decode(),
                              "width": width, "height": height}
    template = _environment(doc.names).get_template("report.html.j2")
    return template.render(doc=doc, images=images, created=created, version=version)


def write_html(results: Mapping, path: str | os.PathLike) -> Path:
    """Writes the HTML report of a results dict, atomically.

    Args:
        results: The results dict (the contents of results.json).
        path: Where to write the ``.html`` file; parent directories are created. The file
            appears complete or not at all.

    Returns:
        The path written.

    Raises:
        TypeError: If ``results`` is not a dict.
        ValueError: If ``results`` lacks a required key or has a value of the wrong type; the
            message names the key path.
    """
    results = validate_results(results)
    return write_html_document(content.build(results), path, created=results["created"],
                               version=results["subnet_version"])


def write_html_document(doc: content.Document, path: str | os.PathLike, *, created: str,
                        version: str) -> Path:
    """Writes a report document as HTML (see :func:`render_html`), atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, render_html(doc, created=created, version=version))
    return path

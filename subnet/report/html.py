"""The HTML report: one self-contained file, no scripts, nothing loaded from the network.

Figures are embedded as PNG ``data:`` URIs; the style sheet is inline; a Content-Security-Policy
forbids every other source, so a stray external reference would be blocked (and reported in the
browser's console) rather than loaded. Every string from the results is escaped by Jinja2.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import jinja2

from subnet._io import atomic_write_text
from subnet.report import content
from subnet.report.figures import render_png
from subnet.report.schema import validate_results

__all__ = ["render_html", "write_html", "write_html_document"]

DPI = 100


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("subnet.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.tests.update(figure=lambda x: isinstance(x, content.Figure),
                     table=lambda x: isinstance(x, content.Table),
                     note=lambda x: isinstance(x, content.Note))
    return env


def _png_size(png: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    return width, height


def render_html(doc: content.Document, *, created: str, version: str) -> str:
    """Renders a report document as one self-contained HTML page.

    Args:
        doc: The document from :func:`subnet.report.content.build`.
        created: When the results were created (shown in the footer).
        version: The version of subnet that wrote the results.

    Returns:
        The HTML text.
    """
    images = {}
    for figure in doc.figures:
        png = render_png(figure.draw, figure.size, DPI)
        width, height = _png_size(png)
        images[figure.key] = {"uri": "data:image/png;base64," + base64.b64encode(png).decode(),
                              "width": width, "height": height}
    template = _environment().get_template("report.html.j2")
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
    validate_results(results)
    return write_html_document(content.build(results), path, created=results["created"],
                               version=results["subnet_version"])


def write_html_document(doc: content.Document, path: str | os.PathLike, *, created: str,
                        version: str) -> Path:
    """Writes a report document as HTML (see :func:`render_html`), atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, render_html(doc, created=created, version=version))
    return path

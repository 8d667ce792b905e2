"""Reports of an analysis: a self-contained HTML page and a PDF, from a results dict.

    write_reports(results, "out/")        # out/report.html and out/report.pdf
    python -m subnet.report out/results.json --formats html,pdf

``results`` is what ``python -m subnet.analyze`` writes as results.json. The required keys (all
others are ignored) are ``subnet_version``, ``created`` (ISO 8601), ``command``, ``config``,
``versions``, ``inputs`` (``model``: path, sha256, bytes; ``dataset``: name, source, fingerprint,
n_train, n_test), ``timings``, ``model`` (name, params, flops, input_shape, classes, sites with
name, kind, units, keep, dropout_rate), ``blog`` (accuracy_dropout_off, accuracy_dropout_on_mean,
accuracy_dropout_on_std, passes, ensemble_accuracy, n_test, mask_accuracy, record: n_masks,
n_examples, seed), ``robustness`` (share_correct, hardest), ``importance`` (method, metric,
n_masks, alpha, sites: scores, low, high, significant) and ``answer`` (tolerance,
dense_accuracy, smallest, smallest_by_method, sentences). Accuracies and shares are fractions;
``flops_reduction`` and ``params_reduction`` are factors (dense / subnetwork, e.g. 4.0).

Optional parts may be missing or null; the report then says "not computed" there:
``comparison``, ``importance.class_conditional``, ``importance.interactions``,
``blog.examples`` and each example's ``image``. :func:`validate_results` names the key path of
anything missing or mistyped.

Names from the model and the data files are shown as :mod:`subnet.report.names` shows them:
control characters as visible escapes (``\\x1b``), and a name longer than 40 characters by its
beginning and end with a tag; the report's last section lists its full name once, and in the
HTML each shortened name has a tooltip with the full name's first 300 characters. So a report's
size and the time to write it grow with the model's sites, not with the length of its names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from subnet.errors import InputError
from subnet.report.html import write_html, write_html_document
from subnet.report.pdf import write_pdf, write_pdf_document
from subnet.report.schema import validate_results

__all__ = ["FORMATS", "validate_results", "write_document", "write_html", "write_pdf",
           "write_reports"]

FORMATS = {"html": write_html, "pdf": write_pdf}


def _formats(formats) -> list[str]:
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"Invalid value for argument `formats`: expected one or more of "
                         f"{sorted(FORMATS)}. Received: formats={formats!r}")
    return formats


def write_reports(results: Mapping, out_dir: str | os.PathLike,
                  formats: Sequence[str] = ("html", "pdf")) -> dict[str, Path]:
    """Writes the reports of a results dict as ``report.html`` and ``report.pdf``.

    Each file is written atomically; the results are validated before anything is written.

    Args:
        results: The results dict (the contents of results.json).
        out_dir: The directory to write to (created if needed).
        formats: Which reports to write: ``"html"`` and/or ``"pdf"``, as a sequence or as
            one comma-separated string.

    Returns:
        {format: path written}, in the order of ``formats``.

    Raises:
        TypeError: If ``results`` is not a dict.
        ValueError: If ``formats`` names an unknown or no format, or ``results`` lacks a
            required key or has a value of the wrong type (the message names the key path).
    """
    formats = _formats(formats)
    results = validate_results(results)
    out_dir = Path(out_dir)
    return {name: FORMATS[name](results, out_dir / f"report.{name}") for name in formats}


def write_document(doc, out_dir: str | os.PathLike, *, created: str | None = None,
                   formats: Sequence[str] = ("html", "pdf")) -> dict[str, Path]:
    """Writes any :class:`~subnet.report.content.Document` (as the analyses build them) as
    ``report.html`` and ``report.pdf``, atomically, in the same style as analysis reports.

    Args:
        doc: The document: sections of :class:`~subnet.report.content.Figure`,
            :class:`~subnet.report.content.Table` and :class:`~subnet.report.content.Text`.
        out_dir: The directory to write to (created if needed).
        created: When the results were made (ISO 8601), shown in the footer; None: now (UTC,
            to the second).
        formats: ``"html"`` and/or ``"pdf"``.

    Returns:
        {format: path written}.

    Raises:
        ValueError: If ``formats`` names an unknown or no format.
    """
    import datetime

    import subnet

    if created is None:
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    writers = {"html": lambda path: write_html_document(doc, path, created=created,
                                                        version=subnet.__version__),
               "pdf": lambda path: write_pdf_document(doc, path, version=subnet.__version__)}
    out_dir = Path(out_dir)
    return {name: writers[name](out_dir / f"report.{name}") for name in _formats(formats)}

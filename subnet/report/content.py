"""What the report says, independent of its format: sections of figures, tables and text.

:func:`build` turns a validated results dict into a :class:`Document`. The HTML and the PDF
writers render the same document, so both reports carry the same numbers, figures and readings.
Every figure comes with a one-sentence reading computed from the numbers it shows.

Names that come from the model or the data files (the model's, the data set's, sites, mask
layers, ``site:unit`` labels, the names in the model file) are shown through
:class:`subnet.report.names.Names`: control characters as visible escapes, names longer than
:data:`subnet.report.names.NAME_LIMIT` characters shortened with a tag, and a last section that
lists each shortened name in full. :func:`visible_document` shows the control characters of
every other string the same way; both writers render what it returns.

This module assembles the document; each part lives in a module of its own:
:mod:`~subnet.report.document` (:class:`Document` and what it holds, :func:`visible_document`),
:mod:`~subnet.report.formatting` (how numbers and method names are written),
:mod:`~subnet.report.summary` (the summary and the answer), :mod:`~subnet.report.experiment`
(the model and the data, the blog's experiment with the keep probabilities, per-example
robustness, unit importance), :mod:`~subnet.report.comparison` (the comparison with pruning),
:mod:`~subnet.report.uncertainty` (the uncertainty of the predictions) and
:mod:`~subnet.report.provenance` (command, config, versions, inputs, timings and the time
budget's plan). The names in ``__all__`` are importable from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from subnet.methods import method_name
from subnet.report import names as _names
from subnet.report.comparison import _comparison_section
from subnet.report.document import (
    Document,
    Figure,
    Link,
    Note,
    Section,
    Table,
    Text,
    visible_document,
)
from subnet.report.experiment import (
    _blog_section,
    _importance_section,
    _model_section,
    _robustness_section,
)
from subnet.report.formatting import METHOD_NAMES, _date, percent
from subnet.report.provenance import _provenance_section
from subnet.report.summary import _answer_section, _summary
from subnet.report.uncertainty import _uncertainty_section

__all__ = ["METHOD_NAMES", "Document", "Figure", "Link", "Note", "Section", "Table", "Text",
           "build", "method_name", "percent", "visible_document"]

MAX_RENAMED = 100  # rows of the table of names as in the model file (results.json has all)


def build(results: Mapping) -> Document:
    """Builds the report's content from a results dict that passed ``validate_results``.

    Names from files are shown as :class:`~subnet.report.names.Names` shows them (visible,
    shortened with a tag), and, if any was shortened, a last section lists them in full.

    Args:
        results: The validated results dict.

    Returns:
        The :class:`Document` both writers render.
    """
    names = _names.Names()
    results = _shown_names(results, names)
    model, dataset = results["model"], results["inputs"]["dataset"]
    title = f"subnet report: {model['name']} on {dataset['name']}"
    subject = ("Does the trained network contain smaller subnetworks as good as the whole? "
               "Random dropout masks, unit importance, extracted subnetworks and magnitude "
               "pruning compared.")
    facts = (("Model", model["name"]), ("Dataset", dataset["name"]),
             ("Date", _date(results["created"])), ("subnet", results["subnet_version"]))
    sections = (
        _summary(results),
        _model_section(results),
        _blog_section(results),
        _robustness_section(results),
        _importance_section(results),
        _comparison_section(results),
        _uncertainty_section(results),
        _answer_section(results),
        _provenance_section(results),
    )
    if names.shortened:
        sections += (_names_section(names),)
    return Document(title=title, subject=subject, facts=facts,
                    answer=tuple(results["answer"]["sentences"]), sections=sections,
                    names=tuple(names.shortened.items()))


# A token of the answer's sentences long enough to be shortened (a site's name in "(conv2d 12,
# dense 40)"): no spaces, brackets, commas or semicolons.
_LONG_TOKEN = re.compile(rf"[^\s(),;]{{{_names.NAME_LIMIT + 1},}}")


def _shown_names(results: Mapping, names: _names.Names) -> dict:
    """``results`` with every name that came from a file replaced by its shown form: the model's
    and the data set's names, the out-of-distribution set's, each site's and mask layer's, the
    keys of the importance and width tables, the ``site:unit`` labels of the class-conditional
    table and the interaction graph, the names in the model file, and long tokens (site names)
    in the answer's sentences. Only the dicts on the way are copied."""
    results = dict(results)
    model = results["model"] = dict(results["model"])
    model["name"] = names(model["name"])
    inputs = results["inputs"] = dict(results["inputs"])
    inputs["dataset"] = {**inputs["dataset"], "name": names(inputs["dataset"]["name"])}
    model["sites"] = [{**site, "name": names(site["name"]),
                       **({"mask_layer": names(site["mask_layer"])}
                          if site.get("mask_layer") else {})} for site in model["sites"]]
    if model.get("original_names"):  # the first MAX_RENAMED, in the order of the table
        renamed = sorted(model["original_names"].items())
        model["original_names"] = {names(new): names(old) for new, old in renamed[:MAX_RENAMED]}
        model["original_names_total"] = len(renamed)
    importance = results["importance"] = dict(results["importance"])
    importance["sites"] = {names(key): value for key, value in importance["sites"].items()}
    if importance.get("class_conditional") is not None:
        table = importance["class_conditional"]
        importance["class_conditional"] = {**table,
                                           "units": [names.label(u) for u in table["units"]]}
    if importance.get("interactions") is not None:
        graph = importance["interactions"]
        importance["interactions"] = {
            **graph,
            "nodes": [{**node, "id": names.label(node["id"]), "site": names(node["site"])}
                      for node in graph["nodes"]],
            "edges": [{**edge, "source": names.label(edge["source"]),
                       "target": names.label(edge["target"])} for edge in graph["edges"]]}
    answer = results["answer"] = dict(results["answer"])

    def widths(entry):
        if not entry or not entry.get("widths"):
            return entry
        return {**entry, "widths": {names(k): v for k, v in entry["widths"].items()}}

    answer["smallest"] = widths(answer["smallest"])
    answer["smallest_by_method"] = {m: widths(e) for m, e in answer["smallest_by_method"].items()}

    def token(match: re.Match) -> str:
        word = match.group()
        core = word.rstrip(".:")
        return names(core) + word[len(core):]

    answer["sentences"] = [_LONG_TOKEN.sub(token, s) for s in answer["sentences"]]
    uncertainty = results.get("uncertainty")
    if uncertainty and uncertainty.get("ood"):
        results["uncertainty"] = {**uncertainty, "ood": {
            **uncertainty["ood"], "name": names(uncertainty["ood"]["name"])}}
    return results


def _names_section(names: _names.Names) -> Section:
    return Section("names", "Full names", (Table(
        "full-names", "Names shortened in this report", ("shown as", "full name"), names.rows(),
        reading=f"Names longer than {_names.NAME_LIMIT} characters are shown by their beginning "
                "and end around an ellipsis, with a tag in brackets (the first hexadecimal "
                "digits of the name's SHA-256) that tells apart names alike at both ends; "
                "control characters in names are shown as escapes such as \\x1b. Each full "
                f"name is listed here once (up to {_names.FULL_NAME_LIMIT:,} characters); "
                "results.json holds every name whole."),))

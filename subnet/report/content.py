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
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import shlex
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import numpy as np

from subnet.errors import InputError
from subnet.methods import display_names, method_name
from subnet.report import figures
from subnet.report import names as _names

__all__ = ["METHOD_NAMES", "Document", "Figure", "Link", "Note", "Section", "Table", "Text",
           "build", "method_name", "percent", "visible_document"]

#: {method key: display name} (:mod:`subnet.methods`).
METHOD_NAMES = display_names()

MAX_EXAMPLES = 6
MAX_HARDEST = 12
MAX_RENAMED = 100  # rows of the table of names as in the model file (results.json has all)

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


# ---- formatting: one function per kind of number, used by both formats ----

def percent(value: float | None) -> str:
    """An accuracy or share as a percentage with 2 decimals: ``0.98634`` -> ``"98.63 %"``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.2f} %"


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return percent(mean)
    return f"{100 * mean:.2f} ± {100 * std:.2f} %"


def _count(value: int) -> str:
    return f"{int(value):,}"


def _score(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3g}"


def _budget(value: float) -> str:
    return f"{100 * value:g} %"


def _points(tolerance: float) -> str:
    return f"{100 * tolerance:.2f} percentage points"


def _factor(value: float) -> str:
    return f"{value:.2f}×"


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _bytes(value: int | None) -> str:
    if value is None:
        return "—"
    for factor, unit in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= factor:
            return f"{value / factor:.1f} {unit}"
    return f"{value} B"


def _value(value) -> str:
    """A config or version value as text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _date(created: str) -> str:
    text = created[:-1] + "+00:00" if created.endswith("Z") else created
    moment = datetime.fromisoformat(text)
    zone = moment.strftime(" %Z") if moment.tzinfo is not None else ""
    return moment.strftime("%Y-%m-%d %H:%M") + zone


# ---- sections ----

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


def _unit_masks(results) -> bool:
    """Whether the blog's "dropout on" rows are unit masks (a model without Dropout)."""
    return str(results["blog"].get("dropout", "")).startswith("unit masks")


def _keep_q(results) -> str:
    """``q = 0.86`` (one keep probability) or ``q per site``, from results' keep or sites."""
    keep = results.get("keep")
    values = sorted(set((keep["keep"] if keep else
                         {s["name"]: s["keep"] for s in results["model"]["sites"]}).values()))
    return f"q = {values[0]:.3g}" if len(values) == 1 else "q per site"


def _masked_words(results) -> tuple[str, str]:
    """How the blog's masked passes are named: ("dropout on", "passes") or, for a model
    without Dropout, ("unit masks at keep q = 0.86", "masks")."""
    if _unit_masks(results):
        return f"unit masks at keep {_keep_q(results)}", "masks"
    return "dropout on", "passes"


def _summary(results) -> Section:
    blog = results["blog"]
    items: list = []
    if not results["answer"]["sentences"]:
        items.append(Note("The answer sentences"))
    model, dataset = results["model"], results["inputs"]["dataset"]
    dropout_on = _pm(blog["accuracy_dropout_on_mean"], blog["accuracy_dropout_on_std"])
    masked, passes = _masked_words(results)
    items.append(Text((
        f"{model['name']} ({_count(model['params'])} parameters, {len(model['sites'])} maskable "
        f"sites) on {dataset['name']}: {percent(blog['accuracy_dropout_off'])} test accuracy "
        f"with dropout off, {dropout_on} with {masked} ({_count(blog['passes'])} {passes}), "
        f"{percent(blog['ensemble_accuracy'])} for the ensemble of those {passes}.",)))
    smallest, answer = results["answer"]["smallest"], results["answer"]
    if smallest is not None:
        items.append(Text((
            f"Smallest subnetwork within {_points(answer['tolerance'])} of the dense accuracy: "
            f"{method_name(smallest['method'])} at {_budget(smallest['budget_flops_fraction'])} of "
            f"the FLOPs, "
            f"{_count(smallest['params'])} parameters, "
            f"{_pm(smallest['accuracy_mean'], smallest['accuracy_std'])}.",)))
    return Section("summary", "Summary", tuple(items))


def _model_section(results) -> Section:
    model, data = results["model"], results["inputs"]["dataset"]
    sites = Table(
        "sites", "Maskable sites",
        ("site", "kind", "units", "mask keep probability", "model's dropout rate", "mask layer"),
        tuple((s["name"], s["kind"], _count(s["units"]), f"{s['keep']:g}",
               f"{s['dropout_rate']:g}", s.get("mask_layer") or "—") for s in model["sites"]),
        (False, False, True, True, True, False))
    units = sum(s["units"] for s in model["sites"])
    facts = Table("model", "Model", None, (
        ("name", model["name"]),
        ("input shape", " × ".join(str(d) for d in model["input_shape"])),
        ("classes", str(model["classes"])),
        ("parameters", _count(model["params"])),
        ("FLOPs per example", f"{_count(model['flops'])} ({figures.si(model['flops'])})"),
        ("maskable units", f"{_count(units)} in {len(model['sites'])} sites"),
    ))
    data_table = Table("data", "Data", None, (
        ("dataset", data["name"]),
        ("source", data["source"]),
        ("fingerprint", data["fingerprint"]),
        ("training examples", _count(data["n_train"])),
        ("test examples", _count(data["n_test"])),
        *((("examples", _EXAMPLES_ARE.get(data["layout"], str(data["layout"]))),)
          if "layout" in data else ()),
    ))
    items = [facts, sites, data_table]
    renamed = model.get("original_names") or {}
    if renamed:  # names TensorFlow refuses (spaces, quotes, non-ASCII) were renamed on loading
        total = model.get("original_names_total", len(renamed))
        more = (f" The first {len(renamed)} of {_count(total)} are listed; results.json has "
                "them all.") if total > len(renamed) else ""
        items.insert(2, Table(
            "renamed", "Names as in the model file", ("name here", "name in the file"),
            tuple(sorted(renamed.items())), reading="TensorFlow refuses these names in a "
            "graph, so subnet renamed them on loading; the analysis uses the names here."
            + more))
    return Section("model", "The model and the data", tuple(items))


# What the examples of each data layout are (subnet.data.LAYOUTS), in words.
_EXAMPLES_ARE = {"images": "images", "sequences": "sequences (length × channels)",
                 "tokens": "token sequences (integer ids)", "features": "feature vectors"}


def _not_images(results) -> str | None:
    """For data that are not images, the phrase "the examples are ..., not images"; else None."""
    layout = results["inputs"]["dataset"].get("layout", "images")
    if layout == "images":
        return None
    return f"the examples are {_EXAMPLES_ARE.get(layout, str(layout))}, not images"


def _blog_section(results) -> Section:
    blog, record = results["blog"], results["blog"]["record"]
    masked, passes = _masked_words(results)
    unit = _unit_masks(results)
    table = Table("blog-accuracy", "Test accuracy", ("measurement", "accuracy"), (
        ("dropout off (the full network)", percent(blog["accuracy_dropout_off"])),
        (f"{masked}, one {'mask' if unit else 'pass'} (mean ± std over "
         f"{_count(blog['passes'])} {passes})",
         _pm(blog["accuracy_dropout_on_mean"], blog["accuracy_dropout_on_std"])),
        (f"{masked}, {'majority vote' if unit else 'ensemble'} of the "
         f"{_count(blog['passes'])} {passes}"
         f"{'' if unit else ' (mean probability)'}",
         percent(blog["ensemble_accuracy"])),
    ), (False, True), reading=f"On the {_count(blog['n_test'])} test examples." + (
        " The model has no Dropout layer: the masked rows are the record's unit masks, on its "
        f"{_count(record['n_examples'])} examples." if unit else ""))
    accuracies = np.asarray(blog["mask_accuracy"], dtype=float)
    keeps = sorted({s["keep"] for s in results["model"]["sites"]})
    keep = (f"keeping each unit with probability {keeps[0]:g}" if len(keeps) == 1
            else "keeping units with each site's keep probability")
    reading = (f"Across {_count(len(accuracies))} random masks ({keep}), accuracy on the "
               f"record's {_count(record['n_examples'])} examples ranged from "
               f"{percent(np.min(accuracies))} to {percent(np.max(accuracies))} (median "
               f"{percent(np.median(accuracies))}); the full network with dropout off scores "
               f"{percent(blog['accuracy_dropout_off'])} on the {_count(blog['n_test'])} test "
               "examples.")
    keep = results.get("keep")
    marks = {}
    if keep is not None:
        d = keep["mask_accuracy"]
        if d.get("chance") is not None and d.get("whole") is not None:
            marks = {"chance": d["chance"], "whole": d["whole"]}
            reading += (f" On the record's examples chance is {percent(d['chance'])} and the whole "
                        f"model scores {percent(d['whole'])}; the masks' mean, "
                        f"{percent(d['mean'])}, sits "
                        + (f"{d['position']:.0%} of the way from chance to the whole"
                           if d.get("position") is not None else "where it is") + ".")
            if d.get("near_chance"):
                reading += (" The masks sit near chance: their outcomes carry little "
                            "information about the units.")
    items: list = [table, Figure(
        "mask-accuracy", "Accuracy of random subnetworks", reading,
        functools.partial(figures.mask_accuracy_histogram, accuracies=blog["mask_accuracy"],
                          dropout_off=blog["accuracy_dropout_off"],
                          dropout_on_mean=blog["accuracy_dropout_on_mean"],
                          masked=masked, **marks))]
    if keep is not None:
        items.insert(0, _keep_table(keep))
    examples = (blog.get("examples") or [])[:MAX_EXAMPLES]
    if examples:
        true = [ex["prob_mean"][ex["label"]] for ex in examples]
        spread = [ex["prob_std"][ex["label"]] for ex in examples]
        widest = examples[int(np.argmax(spread))]
        reading = (f"Across the {len(examples)} test examples shown, the mean probability of the "
                   f"true class over masks ranged from {percent(min(true))} to "
                   f"{percent(max(true))}; example #{widest['index']} (label {widest['label']}) "
                   f"varies most between masks (std {percent(max(spread))} for its true class).")
        if all(ex.get("image") is None for ex in examples):
            not_images = _not_images(results)
            reading += (f" ({not_images[0].upper()}{not_images[1:]}, so none is drawn.)"
                        if not_images else " (The images were not recorded.)")
        rows = -(-len(examples) // 2)
        items.append(Figure("class-probabilities", "Class probabilities under random masks",
                            reading, functools.partial(figures.class_probabilities,
                                                       examples=examples),
                            (8.0, 1.7 * rows + 0.5)))
    else:
        items.append(Note("Per-example class probabilities"))
    return Section("blog", "The blog's experiment: random dropout at test time", tuple(items))


_KEEP_SOURCES = {"model": "the model's own dropout rates", "given": "given (--rate)",
                 "auto": "calibrated (--rate auto)"}


def _keep_table(keep: Mapping) -> Table:
    """The keep probability of every site, where it came from and how it was chosen."""
    calibration = keep.get("calibration") or {}
    check = keep.get("model_rates_check") or {}
    rows = [(f"keep probability q of {name}", f"{q:.4g}") for name, q in keep["keep"].items()]
    rows += [("source", _KEEP_SOURCES.get(keep["source"], keep["source"])),
             ("kept units scaled by 1/q", "yes" if keep["rescale"] else "no")]
    if keep.get("how"):
        rows.append(("how chosen", keep["how"]))
    if keep.get("held_out"):
        rows.append(("chosen on", keep["held_out"]))
    if calibration:
        rows.append(("calibration", (
            f"target {percent(calibration['target_accuracy'])} (chance "
            f"{percent(calibration['chance'])} + {calibration['target']:g} × (whole "
            f"{percent(calibration['whole'])} − chance)); reached "
            f"{percent(calibration['mean_accuracy'])} with {calibration['masks']} masks per "
            f"keep, seed {calibration['seed']}")))
        if calibration.get("why"):
            rows.append(("why calibrated", calibration["why"]))
    if check.get("checked"):
        rows.append(("model's rates checked", (
            f"random subnetworks {percent(check['mean_accuracy'])} against chance "
            f"{percent(check['chance'])} and whole {percent(check['whole'])} on "
            f"{_count(check['examples'])} held-out examples")))
    d = keep["mask_accuracy"]
    rows.append(("the record's masks", (
        f"mean accuracy {percent(d['mean'])} over {_count(d['masks'])} masks; chance "
        f"{percent(d['chance'])}, whole model {percent(d['whole'])}"
        + ("; near chance" if d.get("near_chance") else ""))))
    return Table("keep", "Keep probabilities of the record's masks", None,
                 tuple(rows), reading=(
                     "Every unit is kept independently with its site's keep probability q; the "
                     "importance estimated from these masks, E[metric | unit kept] − "
                     "E[metric | unit dropped], is the q-weighted Banzhaf value (a binomial "
                     "semivalue; the classic Banzhaf value at q = 0.5). It carries information "
                     "only where random subnetworks are neither at chance nor all as good as "
                     "the whole model."))


def _robustness_section(results) -> Section:
    robustness, record = results["robustness"], results["blog"]["record"]
    shares = np.asarray(robustness["share_correct"], dtype=float)
    n = len(shares)
    always = int(np.sum(shares >= 1.0 - 1e-12))
    never = int(np.sum(shares <= 1e-12))
    half = int(np.sum(shares >= 0.5))
    reading = (f"Of the {_count(n)} examples in the record, {_count(always)} "
               f"({percent(always / n)}) are classified correctly by every one of the "
               f"{_count(record['n_masks'])} masks, {_count(half)} ({percent(half / n)}) by at "
               f"least half of them and {_count(never)} ({percent(never / n)}) by none.")
    items: list = [Figure("share-correct", "How many masks get each example right", reading,
                          functools.partial(figures.share_correct_histogram,
                                            shares=robustness["share_correct"],
                                            n_masks=record["n_masks"]), (8.0, 3.6))]
    hardest = robustness["hardest"][:MAX_HARDEST]
    if hardest:
        wrong = sum(ex["predicted_mode"] != ex["label"] for ex in hardest)
        low = min(ex["share_correct"] for ex in hardest)
        high = max(ex["share_correct"] for ex in hardest)
        reading = (f"The {len(hardest)} hardest examples are classified correctly by "
                   f"{percent(low)} to {percent(high)} of the masks; for {wrong} of them the most "
                   "frequent prediction is a wrong class.")
        if any(ex.get("image") is not None for ex in hardest):
            rows = -(-len(hardest) // 6)
            items.append(Figure("hardest", "The hardest examples", reading,
                                functools.partial(figures.hardest_examples, examples=hardest),
                                (8.0, 1.75 * rows + 0.3)))
            reading = ""
        else:
            not_images = _not_images(results)
            items.append(Note("Images of the hardest examples",
                              f"not drawn, since {not_images}" if not_images else
                              "not computed"))
        items.append(Table(
            "hardest-table", "The hardest examples in numbers",
            ("example", "label", "share of masks correct", "most frequent prediction"),
            tuple((f"#{ex['index']}", str(ex["label"]), percent(ex["share_correct"]),
                   str(ex["predicted_mode"])) for ex in hardest),
            (True, True, True, True), reading=reading))
    else:
        items.append(Note("The hardest examples"))
    return Section("robustness", "Per-example robustness", tuple(items))


def _site_order(results) -> list[str]:
    names = [s["name"] for s in results["model"]["sites"]]
    scored = results["importance"]["sites"]
    return [n for n in names if n in scored] + [n for n in scored if n not in names]


def _importance_section(results) -> Section:
    importance = results["importance"]
    metric, alpha = importance["metric"], importance["alpha"]
    items: list = [Text((
        f"Unit importance by {method_name(importance['method'])} ({importance['method']}) from "
        f"{_count(importance['n_masks'])} masks, measured in {metric}; a unit is significant at "
        f"alpha = {alpha:g}. Bars (or, for sites with many units, the band) are confidence "
        "intervals." + (f" The statistic is the q-weighted Banzhaf value at keep "
                        f"{_keep_q(results)} (a binomial semivalue; Banzhaf at q = 0.5)."
                        if results.get("keep") else ""),))]
    for number, name in enumerate(_site_order(results), start=1):
        site = importance["sites"][name]
        scores = np.asarray(site["scores"], dtype=float)  # null (undefined) -> NaN
        n, significant = len(scores), int(sum(site["significant"]))
        reading = f"In {name} ({n} units), {significant} of {n} units are significant"
        if np.isfinite(scores).any():
            top = int(np.nanargmax(scores))
            ci = ""
            if site["low"][top] is not None and site["high"][top] is not None:
                ci = f", CI {_score(site['low'][top])} to {_score(site['high'][top])}"
            reading += (f"; scores range from {_score(np.nanmin(scores))} to "
                        f"{_score(np.nanmax(scores))} and the top unit, {top}, scores "
                        f"{_score(scores[top])}{ci}.")
        else:
            reading += "; no unit has a defined score."
        items.append(Figure(
            f"importance-{number}", f"Importance of the units of {name}", reading,
            functools.partial(figures.unit_importance, scores=site["scores"], low=site["low"],
                              high=site["high"], significant=site["significant"],
                              metric=metric),
            (8.0, 3.4)))
    table = importance.get("class_conditional")
    if table is not None:
        matrix = np.asarray(table["matrix"], dtype=float)  # null (undefined) -> NaN
        reading = (f"Across {len(table['classes'])} classes and the {len(table['units'])} "
                   "units shown")
        if np.isfinite(matrix).any():
            c, u = np.unravel_index(int(np.nanargmax(np.abs(matrix))), matrix.shape)
            reading += (f", the class-specific score largest in magnitude is unit "
                        f"{table['units'][u]}'s for class {table['classes'][c]} "
                        f"({_score(matrix[c, u])}).")
        else:
            reading += ", no score is defined."
        # The unit labels stand rotated under the map: room for the longest.
        longest = max((len(u) for u in table["units"]), default=0)
        height = min(6.0, 1.6 + 0.28 * len(table["classes"])) + 0.085 * max(0, longest - 12)
        items.append(Figure("class-conditional", "Class-conditional importance", reading,
                            functools.partial(figures.class_heatmap, classes=table["classes"],
                                              units=table["units"], matrix=table["matrix"],
                                              metric=metric), (8.0, height)))
    else:
        items.append(Note("Class-conditional importance"))
    graph = importance.get("interactions")
    if graph is not None and graph["nodes"]:
        edges = graph["edges"]
        synergy = sum(e["weight"] > 0 for e in edges)
        if edges:
            strongest = max(edges, key=lambda e: abs(e["weight"]))
            tail = (f"; the strongest is between {strongest['source']} and "
                    f"{strongest['target']} (weight {_score(strongest['weight'])})")
        else:
            tail = ""
        reading = (f"{len(graph['nodes'])} top units and {len(edges)} interactions between them: "
                   f"{synergy} synergies (positive weight) and {len(edges) - synergy} "
                   f"redundancies (negative){tail}.")
        items.append(Figure("interactions", "Interactions between top units", reading,
                            functools.partial(figures.interaction_graph, nodes=graph["nodes"],
                                              edges=edges), (8.0, 5.0)))
    elif graph is not None:
        items.append(Text(("The interaction graph has no nodes.",)))
    else:
        items.append(Note("Interactions between units"))
    return Section("importance", "Unit importance", tuple(items))


def _best(row: Mapping) -> tuple[float, float, str]:
    """A summary row's best accuracy: (mean, std, "fine-tuned" or "one-shot")."""
    if row.get("accuracy_finetuned_mean") is not None:
        return row["accuracy_finetuned_mean"], row.get("accuracy_finetuned_std") or 0.0, \
            "fine-tuned"
    return row["accuracy_oneshot_mean"], row["accuracy_oneshot_std"], "one-shot"


def _cost_reading(summary: Sequence[Mapping], reference: float, basis: str, dense_cost: int,
                  cost: str, tolerance: float) -> str:
    """The figure's reading, against the same bar as the answer: the whole network at its best
    (``reference``, measured ``basis``)."""
    noun = "FLOPs" if cost == "flops" else "parameters"
    within = [r for r in summary if _best(r)[0] >= reference - tolerance - 1e-12]
    head = (f"The dense model scores {percent(reference)} {basis}, with {_count(dense_cost)} "
            f"{noun}; ")
    if not within:
        best = max(summary, key=lambda r: _best(r)[0])
        mean, _, kind = _best(best)
        return head + (f"no method comes within {_points(tolerance)} of it, the closest is "
                       f"{method_name(best['method'])} at "
                       f"{_budget(best['budget_flops_fraction'])} of the FLOPs "
                       f"({percent(mean)}, {kind}).")
    small = min(within, key=lambda r: (r[cost], -_best(r)[0]))
    mean, std, kind = _best(small)
    return head + (f"{len(within)} of {len(summary)} method/budget points come within "
                   f"{_points(tolerance)} of it, the one with the fewest {noun} being "
                   f"{method_name(small['method'])} at "
                   f"{_budget(small['budget_flops_fraction'])} of the FLOPs "
                   f"({_count(small[cost])} {noun}, {_pm(mean, std)} {kind}).")


def _measure(entry: Mapping | None) -> tuple[str, str, str]:
    entry = entry or {}
    raw = entry.get("file_bytes")
    latency = entry.get("latency_ms_per_example")
    return (_bytes(raw), _bytes(entry.get("gzip_bytes")),
            "—" if latency is None else f"{latency * 1000:.1f}")


def _comparison_section(results) -> Section:
    comparison = results.get("comparison")
    if comparison is None:
        return Section("comparison", "Comparison with pruning",
                       (Note("The comparison with pruning methods"),))
    dense, summary = comparison["dense"], comparison["summary"]
    answer = results["answer"]
    tolerance = answer["tolerance"]
    # The bar the answer uses: the whole network at its best, dropout off or on.
    reference = answer.get("dense_accuracy", dense["accuracy"])
    basis = answer.get("dense_accuracy_basis", "with dropout off")
    methods = sorted({r["method"] for r in summary} | {r["method"] for r in comparison["rows"]})
    items: list = [Text(("The methods as named here, with the names --methods and results.json "
                         "use: " + "; ".join(f"{method_name(m)} = {m}" for m in methods) + ".",))
                   ] if methods else []
    if summary:
        for cost, title in (("flops", "Accuracy against FLOPs"),
                            ("params", "Accuracy against parameters")):
            items.append(Figure(
                f"accuracy-vs-{cost}", title,
                _cost_reading(summary, reference, basis, dense[cost], cost, tolerance),
                functools.partial(figures.accuracy_vs_cost, summary=summary, cost=cost,
                                  dense_accuracy=reference, dense_cost=dense[cost],
                                  tolerance=tolerance, names=METHOD_NAMES), (8.0, 4.2)))
    else:
        items.append(Note("Comparison summary rows"))
    rows = sorted(summary, key=lambda r: (-r["budget_flops_fraction"], r["method"]))
    tuned = dense.get("finetuned")
    items.append(Table(
        "summary", "Accuracy by method and budget (mean ± std over seeds)",
        ("method", "FLOPs budget", "seeds", "parameters", "FLOPs", "one-shot", "fine-tuned"),
        (("dense", "100 %", str(len(tuned["accuracy"])) if tuned else "—",
          _count(dense["params"]), _count(dense["flops"]), percent(dense["accuracy"]),
          _pm(tuned["accuracy_mean"], tuned["accuracy_std"]) if tuned else "—"),) + tuple(
            (method_name(r["method"]), _budget(r["budget_flops_fraction"]), str(r["seeds"]),
             _count(r["params"]), _count(r["flops"]),
             _pm(r["accuracy_oneshot_mean"], r["accuracy_oneshot_std"]),
             _pm(r.get("accuracy_finetuned_mean"), r.get("accuracy_finetuned_std")))
            for r in rows),
        (False, True, True, True, True, True, True),
        reading=f"{method_name('tfmot')} keeps the dense model's shape: its FLOPs are the dense "
                "model's and its parameters are its nonzero weights. The dense row's fine-tuned "
                "accuracy is the whole model trained with the same extra budget and seeds as "
                "every subnetwork (dropout off, as in the subnetworks)."))
    measured = [r for r in comparison["rows"] if r.get("measure")]
    if measured or dense.get("measure"):
        measured.sort(key=lambda r: (-r["budget_flops_fraction"], r["method"] != "tfmot",
                                     r["method"], r["seed"]))
        items.append(Table(
            "size-latency", "Size and latency",
            ("model", "FLOPs budget", "parameters", "file", "file, gzip", "latency, µs/example"),
            (("dense", "100 %", _count(dense["params"])) + _measure(dense.get("measure")),)
            + tuple((method_name(r["method"]), _budget(r["budget_flops_fraction"]),
                     _count(r["params"]))
                    + _measure(r["measure"]) for r in measured),
            (False, True, True, True, True, True),
            reading="Sizes of the saved model files; latency is the median CPU time per "
                    f"example. Each budget's {method_name('tfmot')} row is listed first for "
                    "comparison."))
    else:
        items.append(Note("Model sizes and latency"))
    return Section("comparison", "Comparison with pruning", tuple(items))


def _smallest_row(method: str, entry: Mapping | None) -> tuple[str, ...]:
    if entry is None:
        return (method_name(method), "none within tolerance", "—", "—", "—", "—", "—")
    return (method_name(method), _budget(entry["budget_flops_fraction"]), _count(entry["params"]),
            _count(entry["flops"]), _pm(entry["accuracy_mean"], entry["accuracy_std"]),
            _factor(entry["flops_reduction"]), _factor(entry["params_reduction"]))


def _predictor_name(name: str) -> str:
    if name.startswith("subnetwork_"):
        method, _, budget = name[len("subnetwork_"):].partition("@")
        return f"{method_name(method)} subnetwork at {_budget(float(budget))} FLOPs"
    kind, _, count = name.rpartition("_")
    if name == "deterministic":
        return "dropout off (deterministic)"
    if kind == "dropout":
        return "one pass with dropout on" if count == "1" else \
            f"test-time dropout, {count} passes averaged"
    if kind == "unit_subnetworks":
        return f"{count} random unit subnetworks averaged"
    return name


def _interval(estimate: Mapping | None, digits: int = 3, pct: bool = False) -> str:
    if not estimate or estimate.get("value") is None:
        return "—"
    fmt = (lambda v: f"{v:.2%}") if pct else (lambda v: f"{v:.{digits}f}")
    if estimate.get("low") is None or estimate.get("high") is None:
        return fmt(estimate["value"])
    return f"{fmt(estimate['value'])} [{fmt(estimate['low'])}, {fmt(estimate['high'])}]"


def _uncertainty_section(results) -> Section:
    data = results.get("uncertainty")
    if not data:
        return Section("uncertainty", "How good is the uncertainty?",
                       (Note("The uncertainty of the network's predictions"),))
    predictors = data["predictors"]
    ood = data.get("ood")
    header = ["predictor", "accuracy", "NLL", "ECE", "errors found by entropy (AUROC)",
              "errors found by MI (AUROC)"]
    if ood:
        header += ["OOD found by entropy (AUROC)"]
    rows = []
    for name, entry in predictors.items():
        m = entry["metrics"]
        row = [_predictor_name(name), _interval(m.get("accuracy"), pct=True),
               _interval(m.get("nll")), _interval(m.get("ece")),
               _interval(m.get("error_auroc_predictive_entropy")),
               _interval(m.get("error_auroc_mutual_information"))]
        if ood:
            row.append(_interval(m.get("ood_auroc_predictive_entropy")))
        rows.append(tuple(row))
    ensemble = data["ensemble"]
    det, ens = predictors["deterministic"]["metrics"], predictors[ensemble]["metrics"]
    where = (f" against {_count(ood['examples'])} {ood['name']} test images as "
             "out-of-distribution inputs") if ood else ""
    reading = (f"On {_count(data['examples'])} test examples{where}; 95 % bootstrap intervals "
               "in brackets. NLL: negative log-likelihood of the averaged prediction (nats); "
               "ECE: expected calibration error; AUROC 0.5 is chance, 1 a perfect separation; "
               "MI: mutual information between the prediction and the dropout mask (0 for one "
               "pass).")
    items: list = [Table("uncertainty-metrics", "Uncertainty of each predictor", tuple(header),
                         tuple(rows), (False,) + (True,) * (len(header) - 1), reading=reading)]
    sentence = (f"The deterministic network's entropy finds its errors with AUROC "
                f"{_interval(det.get('error_auroc_predictive_entropy'))}, the "
                f"{_predictor_name(ensemble)} with "
                f"{_interval(ens.get('error_auroc_predictive_entropy'))}; calibration error "
                f"{_interval(det.get('ece'))} against {_interval(ens.get('ece'))}.")
    items.append(Figure(
        "reliability", "Reliability diagram", sentence,
        functools.partial(figures.reliability_diagram, reliabilities={
            _predictor_name("deterministic"): predictors["deterministic"]["reliability"],
            _predictor_name(ensemble): predictors[ensemble]["reliability"]}), (6.0, 4.5)))
    histograms = data.get("entropy_histograms") or {}
    if histograms:
        text = ("Predictive entropy of right and wrong predictions"
                + (" and of out-of-distribution inputs" if ood else "")
                + ", each as a share of its group: the further apart, the more the entropy "
                  "says which predictions to trust.")
        if ood:
            text += (f" Out-of-distribution AUROC by entropy: "
                     f"{_interval(det.get('ood_auroc_predictive_entropy'))} (dropout off), "
                     f"{_interval(ens.get('ood_auroc_predictive_entropy'))} "
                     f"({_predictor_name(ensemble)}).")
        items.append(Figure("entropy", "Entropy of right, wrong and unfamiliar inputs", text,
                            functools.partial(figures.entropy_histograms,
                                              edges=data["entropy_edges"], panels={
                                                  _predictor_name(k): v
                                                  for k, v in histograms.items()}),
                            (8.0, 3.2)))
    moving = data.get("moving_examples") or []
    if moving:
        right = sum(1 for ex in moving if ex["right"])
        text = (f"The {len(moving)} test images whose class probabilities move most across the "
                f"{_predictor_name(ensemble)} ({right} predicted right, {len(moving) - right} "
                "wrong): bars are the mean probability, whiskers the spread across passes.")
        rows_needed = -(-len(moving) // 2)
        items.append(Figure("moving-examples", "Images whose probabilities move most", text,
                            functools.partial(figures.class_probabilities, examples=moving),
                            (8.0, 1.7 * rows_needed + 0.5)))
    return Section("uncertainty", "How good is the uncertainty?", tuple(items))


def _answer_section(results) -> Section:
    answer = results["answer"]
    items: list = []
    if answer["sentences"]:
        items.append(Text(tuple(answer["sentences"]), emphasis=True))
    smallest = answer["smallest"]
    tolerance = _points(answer["tolerance"])
    if smallest is None:
        items.append(Text((f"No subnetwork came within {tolerance} of the dense accuracy "
                           f"({percent(answer['dense_accuracy'])}).",)))
    else:
        items.append(Text((
            f"The smallest subnetwork within {tolerance} of the dense accuracy "
            f"({percent(answer['dense_accuracy'])}) is {method_name(smallest['method'])} at "
            f"{_budget(smallest['budget_flops_fraction'])} of the FLOPs: "
            f"{_count(smallest['params'])} parameters ({_factor(smallest['params_reduction'])} "
            f"fewer) and {_count(smallest['flops'])} FLOPs "
            f"({_factor(smallest['flops_reduction'])} fewer), accuracy "
            f"{_pm(smallest['accuracy_mean'], smallest['accuracy_std'])}.",)))
    by_method = answer["smallest_by_method"]
    if by_method:
        items.append(Table(
            "smallest-by-method", "The smallest model within the tolerance, by method",
            ("method", "FLOPs budget", "parameters", "FLOPs", "accuracy",
             "FLOPs reduction", "parameter reduction"),
            tuple(_smallest_row(m, by_method[m]) for m in sorted(by_method)),
            (False, True, True, True, True, True, True)))
    if smallest is not None and smallest.get("widths"):
        units = {s["name"]: s["units"] for s in results["model"]["sites"]}
        items.append(Table(
            "smallest-widths", "Units kept by the smallest subnetwork "
            f"({method_name(smallest['method'])})",
            ("site", "units in the dense model", "units kept"),
            tuple((site, _count(units[site]) if site in units else "—", _count(kept))
                  for site, kept in smallest["widths"].items()),
            (False, True, True)))
    return Section("answer", "The answer", tuple(items))


def _provenance_section(results) -> Section:
    config, inputs = results["config"], results["inputs"]
    seeds = [(key, _value(config[key])) for key in ("seed", "seeds") if key in config]
    seeds.append(("record seed", str(results["blog"]["record"]["seed"])))
    model = inputs["model"]
    timings = results["timings"]
    items = (
        Table("command", "Command", None, (
            ("command", shlex.join(results["command"]) or "—"),
            ("created", results["created"]),
            ("subnet", results["subnet_version"]),
        )),
        Table("config", "Configuration", ("option", "value"),
              tuple((key, _value(value)) for key, value in sorted(config.items()))),
        Table("seeds", "Seeds", None, tuple(seeds)),
        Table("versions", "Versions", ("package", "version"),
              tuple((k, "—" if v is None else v) for k, v in sorted(results["versions"].items()))),
        Table("inputs", "Inputs", None, (
            ("model file", model["path"]),
            ("model SHA-256", model["sha256"]),
            ("model file size", f"{_count(model['bytes'])} bytes"),
            ("dataset", inputs["dataset"]["name"]),
            ("dataset source", inputs["dataset"]["source"]),
            ("dataset fingerprint", inputs["dataset"]["fingerprint"]),
        )),
        Table("timings", "Timings", ("stage", "time"),
              tuple((stage, _seconds(seconds)) for stage, seconds in timings.items())
              + ((("total (sum of the stages)", _seconds(sum(timings.values()))),)
                 if "total" not in timings and len(timings) > 1 else ()), (False, True)),
    )
    if results.get("plan"):
        items += (_plan_table(results["plan"], timings),)
    return Section("provenance", "Provenance", items)


#: The stages a plan predicts, and the timings that measured them.
_PLANNED = (("keep", ("keep",)), ("record", ("record",)),
            ("selection and fine-tuning", ("selection", "finetune")),
            ("blog and uncertainty", ("rest",)))


def _plan_table(plan: dict, timings: dict) -> Table:
    """What the time budget bought: the measured costs, what it changed, and the predicted
    seconds of each stage beside the measured ones."""
    costs = plan["costs"]
    rows = [("time budget", f"{_seconds(plan['seconds'])} of stages"
             + ("" if plan["fits"] else " (the smallest settings predicted to exceed it)")),
            ("one masked evaluation", f"{costs['mask_example'] * 1e6:,.1f} µs"),
            ("building an engine", _seconds(costs["engine_build"])),
            ("one training example", f"{costs['train_example'] * 1e6:,.1f} µs")]
    for name, (asked, planned) in sorted(plan["changes"].items()):
        def shown(v):
            return f"{v:.3g}" if isinstance(v, float) else _value(v)

        rows.append((name.replace("_", " "), f"{shown(asked)} → {shown(planned)}"))
    measured = {"keep": ("keep",), "record": ("record",),
                "selection and fine-tuning": ("comparison",),
                "blog and uncertainty": ("blog", "uncertainty")}
    for label, parts in _PLANNED:
        predicted = sum(plan["predicted"].get(p, 0.0) for p in parts)
        took = [timings[t] for t in measured[label] if t in timings]
        rows.append((f"{label}: predicted / measured",
                     f"{_seconds(predicted)} / " + (_seconds(sum(took)) if took else "—")))
    return Table("plan", "What the time budget bought", None, tuple(rows), (False, True))

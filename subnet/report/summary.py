"""The sections that say what was found: the summary that opens the report and the answer (the
smallest subnetwork within the tolerance, overall and by method, and the units it keeps).
"""

from __future__ import annotations

from collections.abc import Mapping

from subnet.methods import method_name
from subnet.report.document import Note, Section, Table, Text
from subnet.report.experiment import _masked_words
from subnet.report.formatting import _budget, _count, _factor, _pm, _points, percent


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


def _smallest_row(method: str, entry: Mapping | None) -> tuple[str, ...]:
    if entry is None:
        return (method_name(method), "none within tolerance", "—", "—", "—", "—", "—")
    return (method_name(method), _budget(entry["budget_flops_fraction"]), _count(entry["params"]),
            _count(entry["flops"]), _pm(entry["accuracy_mean"], entry["accuracy_std"]),
            _factor(entry["flops_reduction"]), _factor(entry["params_reduction"]))


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

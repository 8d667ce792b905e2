"""The section comparing subnetworks with pruning: accuracy against FLOPs and parameters, the
table by method and budget, and the models' sizes and latency.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from subnet.methods import method_name
from subnet.report import figures
from subnet.report.document import Figure, Note, Section, Table, Text
from subnet.report.formatting import METHOD_NAMES, _budget, _bytes, _count, _pm, _points, percent


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

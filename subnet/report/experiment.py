"""The sections on the experiment itself: the model and the data, the blog's random dropout at test
time (with the keep probabilities of the record's masks), per-example robustness across the
record's masks, and unit importance estimated from them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from subnet.methods import method_name
from subnet.report import figures
from subnet.report.document import Figure, Note, Section, Table, Text
from subnet.report.formatting import _count, _pm, _score, percent

MAX_EXAMPLES = 6
MAX_HARDEST = 12


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

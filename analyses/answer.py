"""The answer to the blog's three questions, generated from the committed result files.

    python analyses/answer.py [--check]

Reads the ``results.json`` files under ``reports/`` (the frontier runs, the difficulty curve,
the blog's experiment beside the subnetworks, the mask-resolution projection, the earlier
reports) and writes ``reports/README.md``: every number in it is formatted here from those
files, nothing is typed by hand, and a part whose result file is missing (or still partial) is
named as not measured yet rather than guessed. ``--check`` writes nothing and exits 1 when the
committed README is not what the result files make (the test suite runs the same check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import difficulty
import numpy as np

from subnet.methods import display_names

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"

#: The result files the answer reads, by the name the sections use.
SOURCES = {
    "frontier_mnist": "frontier/results.json",
    "frontier_fashion_mnist": "frontier_fashion_mnist/results.json",
    "located": "frontier_located/results.json",
    "located_no_teacher": "frontier_located_no_teacher/results.json",
    "joint": "frontier_joint/results.json",
    "expected_pooling_mnist": "blog_mechanism/expected_pooling_parents.json",
    "expected_pooling_fashion_mnist": "blog_mechanism/fashion_mnist/expected_pooling_parents.json",
    "difficulty": "difficulty/results.json",
    "blog_mnist": "blog_mechanism/results.json",
    "blog_fashion_mnist": "blog_mechanism/fashion_mnist/results.json",
    "mask_resolution": "mask_resolution/results.json",
    "reproduction": "blog_reproduction/results.json",
    "previous": "subnetworks/results.json",
}
DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
NAMES = display_names()  # subnet.methods: the one display name of each method
CONTROL_NAMES = {"rewind": "rewinding to epoch 1", "scratch_e": "Scratch-E",
                 "scratch_b": "Scratch-B"}


def load(root: Path = REPORTS) -> dict:
    """Every source's JSON, or None where the file is not there."""
    out = {}
    for name, relative in SOURCES.items():
        path = root / relative
        out[name] = json.loads(path.read_text()) if path.exists() else None
    return out


# --- formatting ---------------------------------------------------------------------------

def pct(value: float, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f} %"


def pm(mean: float, sd: float | None) -> str:
    return pct(mean) if sd is None else f"{100 * mean:.2f} ± {100 * sd:.2f} %"


def fraction(budget: float) -> str:
    """0.125 → '1/8'; budgets that are not 1/n print as a decimal."""
    inverse = 1 / budget
    return f"1/{round(inverse)}" if abs(inverse - round(inverse)) < 1e-9 else f"{budget:g}"


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


def label(key: str) -> str:
    """'magnitude/uniform' → 'L1 magnitude, uniform'; cost allocation is the default."""
    method, allocation = key.split("/")
    name = NAMES.get(method, method)
    return name if allocation == "cost" else f"{name}, {allocation}"


def source(name: str) -> str:
    return f"`reports/{SOURCES[name]}`"


def complete(results: dict | None) -> bool:
    return bool(results) and not results.get("partial")


# --- the located frontier and the controls on the subnetworks' recipe ------------------------

#: The targets the located frontier is held to (FLOPs reduction at <= 1 % mean test error).
TARGETS = {"located": 20.0, "located_no_teacher": 15.0}
ARMS = {"located": "with the teacher (the parents' 16-pass dropout ensemble)",
        "located_no_teacher": "without a teacher (labels only)"}
#: Rows of the init x teacher table: what a control's weights start from.
INITS = (("inherited", "inherited (pruned gradually, then fine-tuned)"),
         ("rewind", "rewound to the parent's epoch-1 weights"),
         ("scratch_e", "from scratch, Scratch-E (the parent's epochs)"),
         ("scratch_b", "from scratch, Scratch-B (the parent's training FLOPs, up to 4x)"))
LABELS_INIT = {"inherited": "inherited", "rewind": "rewound", "scratch_e": "Scratch-E",
               "scratch_b": "Scratch-B"}


def crossing_text(c: dict | None, images: str) -> str:
    """A clause: where a curve's mean error crosses 1 % on ``images``, with its interval, or
    what the grid shows instead."""
    if not c or c.get("reduction") is None:
        return f"is not recorded on {images}"
    if c["bound"] == "interpolated":
        censored = (f"; {100 * c['censored_share']:.1f} % of resamples cross outside the grid"
                    if c.get("censored_share") else "")
        return (f"crosses 1 % on {images} at {c['reduction']:.1f}x fewer FLOPs (95 % interval "
                f"{c['ci_low']:.1f}–{c['ci_high']:.1f}x{censored})")
    if c["bound"] == "at_least":
        return f"stays within 1 % on {images} over the whole grid (to {c['reduction']:.1f}x)"
    return (f"is above 1 % on {images} already at the largest budget tried "
            f"({c['reduction']:.1f}x)")


def within_1pct_on_test(f: dict, key: str) -> dict | None:
    """The curve's smallest grid budget whose mean test error is at most 1 % (on counts)."""
    return (f.get("smallest_within_1pct_test") or {}).get(key)


def located_arm(name: str, f: dict) -> str:
    """One arm of the located frontier in sentences: the crossing, the grid point, the target."""
    key = "/".join((f["settings"]["methods"][0], f["settings"]["allocations"][0]))
    crossing = f["crossing_1pct"][key]
    point = within_1pct_on_test(f, key)
    parents = len(f["parents"])
    text = (f"{ARMS[name].capitalize()} ({source(name)}; {label(key)}, budgets "
            f"{', '.join(fraction(b) for b in f['settings']['budgets'])}, {parents} parents): "
            f"mean error over parents (interpolated in log-reduction between grid points, "
            f"interval from a bootstrap over parents and images) "
            f"{crossing_text(crossing['test'], 'the test images')}, and "
            f"{crossing_text(crossing['val'], 'the validation images')}. ")
    if point:
        text += (f"The smallest budget on the grid within 1 % mean test error is "
                 f"{fraction(point['budget'])}: {point['flops_reduction']:.1f}x fewer FLOPs and "
                 f"{point['params_reduction']:.1f}x fewer parameters, at "
                 f"{pct(point['test_error_mean'])} error (SD {100 * point['test_accuracy_sd']:.2f}"
                 " points over parents)")
        target = TARGETS[name]
        reached = point["flops_reduction"] >= target
        if parents < 3:
            text += (f"; the target, {target:.0f}x at ≤ 1 % mean error over three parents, is "
                     + ("reached on these parents, not yet on three." if reached else
                        "not reached on these parents."))
        else:
            text += (f"; the target, {target:.0f}x at ≤ 1 % error, is "
                     + ("met." if reached else
                        "not met on the grid (the crossing's interval says where the frontier "
                        "is)."))
    else:
        text += "No budget on the grid is within 1 % mean test error."
    return text


def _control_values(f: dict, control: str, budget: float | None) -> list[float]:
    return [c["test_accuracy"] for c in f["controls"] if c["control"] == control and
            (budget is None or c["budget"] == budget)]


def _curve_row(f: dict, budget: float) -> dict | None:
    """The row of a located run's curve (its first method and allocation) at ``budget``."""
    curve = (f["settings"]["methods"][0], f["settings"]["allocations"][0])
    return next((r for r in f["rows"] if r["budget"] == budget and
                 (r["method"], r["allocation"]) == curve), None)


def _per_parent(f: dict, init: str, budget: float) -> dict[int, float]:
    """{parent seed: test accuracy} of one cell of the init x teacher table."""
    if init == "inherited":
        r = _curve_row(f, budget)
        return {} if r is None else {
            s: c / r["n_test"] for s, c in
            zip(f["settings"]["parents"], r["test_correct_counts"], strict=True)}
    return {c["parent"]: c["test_accuracy"] for c in f["controls"]
            if c["control"] == init and c["budget"] == budget}


def recipe_tests(s: dict) -> list[str]:
    """The two questions of the init x teacher table as paired differences over parents: does
    the inherited network beat each control of its own arm, and does the teacher help each
    start? One family, Holm-corrected; the unit is the parent (paired t-test)."""
    from scipy.stats import ttest_rel

    from subnet.stats import holm

    if not all(s.get(n) for n in ARMS):
        return []
    teacher, none = (s[n] for n in ARMS)
    budgets = sorted({c["budget"] for c in teacher["controls"] if c["control"] == "scratch_b"},
                     reverse=True)
    tests = []
    for b in budgets:
        for arm, f in (("with the teacher", teacher), ("without", none)):
            mine = _per_parent(f, "inherited", b)
            for init, _ in INITS[1:]:
                tests.append((f"inherited − {LABELS_INIT[init]}, {arm}", mine,
                              _per_parent(f, init, b), b))
        for init, _ in INITS:
            tests.append((f"teacher − no teacher, {LABELS_INIT[init]}",
                          _per_parent(teacher, init, b), _per_parent(none, init, b), b))
    rows = []
    for text, a, c, b in tests:
        common = sorted(set(a) & set(c))
        if len(common) < 2:
            continue
        d = np.array([a[k] - c[k] for k in common]) * 100
        pvalue = 1.0 if np.all(d == 0) else float(ttest_rel([a[k] for k in common],
                                                           [c[k] for k in common]).pvalue)
        rows.append((text, b, d, pvalue))
    if not rows:
        return []
    corrected = holm([r[3] for r in rows])
    lines = ["Paired over parents (each parent's pruned network against its own controls; "
             f"paired t-test over parents, Holm-corrected over these {len(rows)} comparisons; "
             "with three parents only a difference every parent shows can pass):", "",
             "| at the control budget | difference, points (per parent) | p | Holm |",
             "|---|---|---|---|"]
    for (text, b, d, pvalue), p_holm in zip(rows, corrected, strict=True):
        lines.append(f"| {fraction(b)}: {text} | {d.mean():+.2f} ("
                     + ", ".join(f"{v:+.2f}" for v in d) + f") | {pvalue:.3f} | "
                     f"{min(1.0, p_holm):.2f} |")
    held = sum(p < 0.05 for p in corrected)
    by = {text: d for text, _, d, _ in rows}
    e, b_ = by.get("inherited − Scratch-E, with the teacher"), \
        by.get("inherited − Scratch-B, with the teacher")
    sentence = (f"{held} of the {len(rows)} differences hold after Holm's correction"
                if held else f"None of the {len(rows)} differences holds after Holm's "
                "correction")
    if e is not None and b_ is not None:
        every = "in every parent" if (e > 0).all() else "not in every parent"
        sentence += (f". Read as effect sizes: with the teacher, the inherited network beats its "
                     f"shape trained from scratch for the parent's epochs (Scratch-E) by "
                     f"{e.mean():+.2f} points ({every}), "
                     f"but the same shape trained for the parent's training FLOPs (Scratch-B) "
                     f"comes within {abs(b_.mean()):.2f} points of it ("
                     + ", ".join(f"{v:+.2f}" for v in b_) + "): on this evidence what the "
                     "inherited weights buy is training time, not an accuracy that training "
                     "the small shape longer cannot reach"
                     if abs(b_.mean()) < 0.1 else
                     f". With the teacher, inherited − Scratch-E is {e.mean():+.2f} points and "
                     f"inherited − Scratch-B {b_.mean():+.2f} points")
    t = [by.get(f"teacher − no teacher, {LABELS_INIT[i]}") for i, _ in INITS]
    if all(d is not None for d in t):
        sentence += ("; the teacher adds " + ", ".join(
            f"{d.mean():+.2f} ({LABELS_INIT[i]})" for d, (i, _) in zip(t, INITS, strict=True))
            + " points")
    return lines + ["", sentence + "."]


def recipe_table(s: dict) -> list[str]:
    """Weights (inherited, rewound, from scratch) x teacher (yes, no) at the control budget,
    every network on the subnetworks' recipe; test accuracy, mean ± SD over parents."""
    arms = [n for n in ARMS if s.get(n)]
    if not arms:
        return []
    budgets = sorted({c["budget"] for n in arms for c in s[n]["controls"]
                      if c["control"] == "scratch_e"}, reverse=True)
    if not budgets:
        return []
    lines = []
    for b in budgets:
        lines += [f"| at {fraction(b)} of the FLOPs | " + " | ".join(
            "teacher" if n == "located" else "no teacher" for n in arms) + " |",
            "|---" * (len(arms) + 1) + "|"]
        for init, text in INITS:
            cells = []
            for n in arms:
                f = s[n]
                if init == "inherited":
                    row = _curve_row(f, b)
                    cell = "—" if row is None else \
                        pm(row["test_accuracy_mean"], row["test_accuracy_sd"])
                else:
                    values = _control_values(f, init, b)
                    cell = pm(*mean_sd(values)) + (f" ({len(values)} parents)"
                                                   if len(values) < len(f["parents"]) else "") \
                        if values else "not run yet"
                cells.append(cell)
            lines.append(f"| {text} | " + " | ".join(cells) + " |")
        wholes = [_control_values(s[n], "whole", None) for n in arms]
        whole = [pm(*mean_sd(values)) if values else "not run yet" for values in wholes]
        lines.append("| the whole network, fine-tuned the same way | " + " | ".join(whole)
                     + " |")
        lines.append("")
    return lines[:-1]


def references_sentence(f: dict) -> str | None:
    """The readouts against the whole fine-tuned alike, the expected-pooling parent and the
    better of the two per parent (the best dense predictor)."""
    w = f.get("within_the_whole")
    if not w or not w.get("references"):
        return None
    names = {"whole": "the whole fine-tuned alike", "expected_pooling": "the parent with exact "
             "expected pooling (nothing trained)", "best_dense": "the best dense predictor "
             "(per parent the better of the two)"}
    parts = []
    for ref, accuracy in w["references"].items():
        points = (w["methods"] if ref == "whole" else w["against"][ref])
        curve = next(iter(points.values()))
        bars = [f"{text} {curve[bar]['flops_reduction']:.1f}x" if curve[bar] else
                f"{text} none on the grid" for bar, text in BARS]
        parts.append(f"against {names.get(ref, ref)} ({pct(accuracy)}): " + ", ".join(bars))
    return "Largest reduction on the grid " + "; ".join(parts) + "."


def located_section(s: dict) -> list[str]:
    """The located frontier, both arms, the init x teacher table, and the references."""
    lines = []
    for name in ARMS:
        f = s.get(name)
        if not f:
            lines.append(f"- {ARMS[name].capitalize()}: not run yet (`make analyses-frontier`).")
            continue
        text = located_arm(name, f)
        if f.get("partial"):
            missing = f["partial"]["missing_trajectories"]
            parents_done = len(f["settings"]["parents"])
            text += (" (Partial: "
                     + (f"parents {', '.join(map(str, f['settings']['parents']))} of the three "
                        "so far; " if parents_done < 3 else "")
                     + (f"{', '.join(missing)} not finished; " if missing else "")
                     + f"the controls are still running, {f['partial']['controls_done']} "
                     "done.)")
        refs = references_sentence(f)
        lines.append(f"- {text}" + (f" {refs}" if refs else ""))
    return lines


# --- question 1 -----------------------------------------------------------------------------

def blog_experiment(r: dict) -> str:
    """The blog's element-wise dropout against random unit masks, and the mechanism."""
    e, u, m = r["element_wise"], r["unit_masks"], r["mechanism"]
    name = DATASETS.get(r["dataset"], r["dataset"])
    text = (f"On {name} ({source('blog_' + r['dataset'])}; one parent, its {r['examples']:,} "
            f"test images), one pass of the blog's element-wise dropout at rate "
            f"{m['rate']:g} scores {pm(e['mean'], e['sd'])} ({e['passes']} passes, range "
            f"{pct(e['min'])}–{pct(e['max'])}), while a random half of the *units* (whole "
            f"feature maps and neurons) scores {pm(u['mean'], u['sd'])} ({u['masks']} masks, "
            f"range {pct(u['min'])}–{pct(u['max'])}). With dropout off the network scores "
            f"{pct(r['dropout_off_accuracy'])}. The blog's dropout sits before 2x2 max-pooling "
            f"(`{m['after']}` → dropout → `{m['layer']}`), so a pooled feature is lost only when "
            f"every positive input of its window is dropped ({pct(m['all_four_dropped'])} of the "
            "time when all four are positive): element-wise dropout zeroes "
            f"{pct(m['element_wise_lost'])} of `{m['layer']}`'s nonzero outputs, unit masks "
            f"{pct(m['unit_wise_lost'])}, and a dropped unit is gone at every position.")
    x = r.get("expected_pooling")
    if x:
        text += (" The same place explains why dropout off scores lower than one dropout pass: "
                 "the weight-scaling rule holds through linear layers, not through a max. With "
                 "dropout off and each pooling after a dropout replaced by the exact expectation "
                 "of its dropout-on maximum (nothing fitted), the network scores "
                 f"{pct(x['accuracy'])}.")
    return text


def smallest_sentence(f: dict) -> str:
    """Per curve, the largest FLOPs reduction whose mean validation error is within 1 % (the
    published results' target), with its test error."""
    parts = []
    for key, point in f["smallest_within_1pct"].items():
        parts.append(f"{label(key)} {point['flops_reduction']:.1f}x "
                     f"({pct(point['test_error_mean'])} error)")
    return "; ".join(parts)


def whole_sentence(f: dict) -> str:
    w = f.get("within_the_whole")
    if not w:
        return ("The whole network fine-tuned with the same recipe (the `whole` control) is "
                "not in this result file yet, so the bars relative to it are not measured.")
    whole = w["whole_test_accuracy_mean"]
    parts_half, parts_rel = [], []
    for key, points in w["methods"].items():
        for name, bucket in (("within_half_point", parts_half),
                             ("within_1.25x_error", parts_rel)):
            p = points[name]
            bucket.append(f"{label(key)} " + ("none on the grid" if p is None else
                                              f"{p['flops_reduction']:.1f}x"))
    text = (f"The whole network fine-tuned with the same recipe scores "
            f"{pm(whole, w['whole_test_accuracy_sd'])} ({pct(1 - whole)} error, "
            f"{w['parents']} parents). Largest reduction within 0.5 points of it: "
            + "; ".join(parts_half) + ". Within 1.25x its error: " + "; ".join(parts_rel) + ".")
    on_val = w.get("methods_val")
    if on_val:
        parts = []
        for bar, name in BARS:
            parts.append(f"{name} " + "; ".join(
                f"{label(key)} " + ("none on the grid" if points[bar] is None else
                                    f"{points[bar]['flops_reduction']:.1f}x")
                for key, points in on_val.items()))
        text += (" Read on the validation images instead (the whole's validation accuracy as "
                 "the bar), the grid gives " + ". ".join(parts) + ": a grid point moves with "
                 "differences of a few images, which is why the crossings below are "
                 "interpolated with intervals.")
    best = (w.get("against") or {}).get("best_dense")
    if best:
        reference = w["references"]["best_dense"]
        half = max((p["within_half_point"]["flops_reduction"] for p in best.values()
                    if p["within_half_point"]), default=None)
        relative = [p["within_1.25x_error"]["flops_reduction"] for p in best.values()
                    if p["within_1.25x_error"]]
        text += (f" But the whole fine-tuned alike is not the best dense predictor: the parent "
                 f"with exact expected pooling after its dropouts (nothing trained; "
                 f"{source('expected_pooling_' + f['settings']['dataset'])}) "
                 f"scores {pct(w['references']['expected_pooling'])}, and per parent the better "
                 f"of the two averages {pct(reference)} ({pct(1 - reference)} error). Against "
                 "it, the largest reduction within 0.5 points is "
                 + ("none on the grid" if half is None else f"{half:.1f}x")
                 + ", and within 1.25x its error "
                 + (f"up to {max(relative):.1f}x" if relative else "no subnetwork at any budget")
                 + ".")
    return text


def control_mean(f: dict, control: str, budget: float) -> float | None:
    """The mean test accuracy over parents of one control at one budget (None if not run)."""
    values = _control_values(f, control, budget)
    return mean_sd(values)[0] if values else None


def pruned_at(f: dict, budget: float) -> list[float]:
    """The chosen criteria's mean test accuracies at one budget (random units left out)."""
    return [r["test_accuracy_mean"] for r in f["rows"]
            if r["budget"] == budget and r["method"] != "random"]


def controls_sentence(f: dict) -> str:
    """Scratch-E, Scratch-B and rewinding at each control budget, beside the pruned curves."""
    sentences = []
    budgets = sorted({c["budget"] for c in f["controls"] if c["control"] in CONTROL_NAMES},
                     reverse=True)
    for b in budgets:
        parts = []
        for control, name in CONTROL_NAMES.items():
            values = [c["test_accuracy"] for c in f["controls"]
                      if c["control"] == control and c["budget"] == b]
            if values:
                parts.append(f"{name} {pm(*mean_sd(values))}")
        pruned = pruned_at(f, b)
        if pruned and parts:
            sentences.append(
                f"at {fraction(b)}: " + ", ".join(parts) + f", against {pct(min(pruned))}–"
                f"{pct(max(pruned))} for the pruned subnetworks (chosen criteria)")
    return "; ".join(sentences)


def scratch_gap(f: dict) -> dict | None:
    """At the control budgets, in points: the gap between the pruned subnetworks (best chosen
    criterion, mean over parents) and Scratch-E, and the share of it rewinding recovers."""
    gaps, recovered = [], []
    for b in {c["budget"] for c in f["controls"] if c["control"] == "scratch_e"}:
        scratch, rewind = control_mean(f, "scratch_e", b), control_mean(f, "rewind", b)
        pruned = pruned_at(f, b)
        if scratch is not None and pruned:
            gap = max(pruned) - scratch
            gaps.append(100 * gap)
            if rewind is not None and gap > 0:
                recovered.append(100 * (rewind - scratch) / gap)
    if not gaps:
        return None
    return {"gap": (min(gaps), max(gaps)),
            "recovered": (min(recovered), max(recovered)) if recovered else None}


def rewinding_reading(low: float, high: float) -> str:
    """How much of the Scratch-E gap rewinding recovers (percent, over the control budgets),
    and what that says."""
    if high <= 0:
        return (f"score below Scratch-E (by {-high:.0f} to {-low:.0f} % of that gap), so the "
                "parent's early weights do not help: the pruned subnetworks' edge comes from "
                "inheriting its trained weights through the gradual trajectory")
    recovered = f"recover {low:.0f} to {high:.0f} % of that gap, so "
    if low >= 50:
        return recovered + "what the subnetwork inherits matters, not only its shape"
    return recovered + "the inherited early weights explain only part of it"


def convergence_clause(parents: list[dict]) -> str:
    """The parents' convergence check where their per-epoch validation curve was recorded: the
    validation accuracy gained over the last five epochs."""
    curves = [p.get("val_accuracy_by_epoch") for p in parents]
    if not all(c and len(c) > 5 for c in curves):
        return ""
    gains = [100 * (c[-1] - c[-6]) for c in curves]
    return (f"; validation accuracy moved {min(gains):+.2f} to {max(gains):+.2f} points over "
            "each parent's last five epochs")


def chosen_paragraph(name: str, f: dict) -> str:
    parents = f["parents"]
    off = mean_sd([p["test_accuracy"] for p in parents])
    ensemble = [p.get("ensemble_test_accuracy") for p in parents]
    text = (f"On {DATASETS.get(name, name)} ({source('frontier_' + name)}; {len(parents)} "
            f"parents trained {f['settings']['parent_epochs']} epochs, "
            f"{pm(*off)} with dropout off"
            + (f", {pm(*mean_sd(ensemble))} averaging {f['settings']['teacher_passes']} "
               "dropout passes" if all(e is not None for e in ensemble) else "")
            + convergence_clause(parents)
            + "), gradual prune–retrain with each checkpoint fine-tuned to saturation "
            + ("keeps the mean validation error within 1 % (the published results' target) "
               "down to (test error in brackets): " + smallest_sentence(f)
               if f["smallest_within_1pct"] else "keeps no budget's mean validation error "
               "within 1 % (the published results' target; the whole network's own error is "
               "above it)") + ". "
            + whole_sentence(f))
    controls = controls_sentence(f)
    if controls:
        text += " Controls with the same widths, " + controls + "."
        gap = scratch_gap(f)
        labels_only = all((c.get("recipe") or "labels") == "labels" for c in f["controls"]
                          if c["control"] in ("scratch_e", "scratch_b"))
        if gap is not None and labels_only:
            low, high = gap["gap"]
            text += (f" The best pruned subnetworks score {low:.2f}–{high:.2f} points above "
                     "their own shapes trained from scratch (Scratch-E), but those controls "
                     "were trained on the labels alone, without the teacher the pruned "
                     "subnetworks and rewinding were distilled from, with early stopping that "
                     "ended Scratch-B before its learning rate annealed: the gap is the size "
                     "of that confound, so it does not show that inherited weights matter. "
                     "The controls trained on the subnetworks' own recipe are in the located "
                     "frontier below.")
        elif gap is not None:
            low, high = gap["gap"]
            text += (f" So the best pruned subnetworks beat their own shapes trained from "
                     f"scratch (Scratch-E) by {low:.2f}–{high:.2f} points")
            if gap["recovered"] is not None:
                low, high = gap["recovered"]
                text += ("; the same shapes started from the parent's own weights after "
                         "its first epoch (rewinding) " + rewinding_reading(low, high))
            text += "."
    return text


def best_within_whole(f: dict, bar: str = "within_half_point") -> tuple[float, str] | None:
    """The largest reduction over the curves that stays within ``bar`` of the whole network
    fine-tuned with the same recipe, and its curve; (1.0, '') when none does; None without
    the control."""
    w = f.get("within_the_whole")
    if not w:
        return None
    points = [(p[bar]["flops_reduction"], key) for key, p in w["methods"].items() if p[bar]]
    return max(points) if points else (1.0, "")


def chosen_headline(s: dict) -> str:
    parts = []
    for name in DATASETS:
        f = s["frontier_" + name]
        if not complete(f):
            continue
        best = best_within_whole(f)
        if best is None:
            target = max(f["smallest_within_1pct"].values(), key=lambda v: v["flops_reduction"],
                         default=None)
            if target:
                parts.append(f"{DATASETS[name]}: within 1 % error at up to "
                             f"{target['flops_reduction']:.1f}x fewer FLOPs")
        elif best[1]:
            parts.append(f"{DATASETS[name]}: within 0.5 points of the whole (given the same "
                         f"fine-tuning) at up to {best[0]:.1f}x fewer FLOPs ({label(best[1])})")
        else:
            parts.append(f"{DATASETS[name]}: none within 0.5 points of the whole given the same "
                         "fine-tuning, at any budget")
    if not parts:
        return "**Chosen ones: not measured yet.**"
    return "**Chosen ones:** " + "; ".join(parts) + "."


def question_1(s: dict) -> list[str]:
    lines = ["## 1. Do subnetworks as good as the whole exist inside the network?", "",
             "**Random ones, the blog's kind, are not subnetworks.** The blog's test-time "
             "dropout drops single activations, not units, and a random half of the units is "
             "far worse than the whole:", ""]
    blogs = [s[k] for k in ("blog_mnist", "blog_fashion_mnist") if s[k]]
    for r in blogs:
        lines += [f"- {blog_experiment(r)}"]
    missing = [DATASETS[k[5:]] for k in ("blog_mnist", "blog_fashion_mnist") if not s[k]]
    if missing:
        lines += [f"- {', '.join(missing)}: not measured yet (`analyses/blog_mechanism.py`)."]
    lines += ["", chosen_headline(s), ""]
    for name in DATASETS:
        f = s["frontier_" + name]
        if complete(f):
            lines += [f"- {chosen_paragraph(name, f)}"]
        else:
            lines += [f"- {DATASETS[name]}: the frontier run is not finished "
                      f"(`analyses/frontier.py{'' if name == 'mnist' else ' --dataset ' + name}`"
                      "); no numbers yet."]
    located = located_section(s)
    if any(s.get(n) for n in ARMS):
        lines += ["", "**Located, with every control on the subnetworks' recipe** (the MNIST "
                  "parents above; one curve, L1 magnitude with the same fraction of every "
                  "layer, the best at small budgets above; budgets between 1/12 and 1/32; the "
                  "controls at the same widths get the same teacher, learning rate and "
                  "schedule as the pruned subnetworks' fine-tuning, run their whole budget "
                  "and keep the best epoch on validation; rewinding gets the parent's "
                  "remaining 11 epochs):", "", *located]
        table = recipe_table(s)
        if table:
            lines += ["", "Test accuracy by where the weights start and whether a teacher "
                      "is distilled from (mean ± SD over parents; each arm's controls use the "
                      "widths of its own trajectory):", "", *table]
            tests = recipe_tests(s)
            if tests:
                lines += ["", *tests]
    return lines + [""]


# --- question 2 -----------------------------------------------------------------------------

def params_reduction(f: dict, row: dict) -> float:
    dense = f["summary"].get("dense_params") or f["parents"][0]["params"]
    return row.get("params_reduction") or dense / row["params_mean"]


def frontier_table(f: dict) -> list[str]:
    """Test accuracy per curve and budget, with each cell's FLOPs and parameter reductions
    (the two axes: the cost-aware allocation counts FLOPs, not parameters)."""
    keys = list(dict.fromkeys(f"{r['method']}/{r['allocation']}" for r in f["rows"]))
    budgets = f["settings"]["budgets"]
    lines = ["| FLOPs budget | " + " | ".join(label(k) for k in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    for b in budgets:
        row = {f"{r['method']}/{r['allocation']}": r for r in f["rows"] if r["budget"] == b}
        cells = [f"{pm(row[k]['test_accuracy_mean'], row[k]['test_accuracy_sd'])} "
                 f"({row[k]['flops_reduction']:.1f}x, {params_reduction(f, row[k]):.1f}x "
                 "params)" for k in keys]
        lines.append(f"| {fraction(b)} | " + " | ".join(cells) + " |")
    return lines


def published_table(f: dict) -> list[str]:
    """The published shapes: their FLOPs in our cost model, their error as published (on the
    data set they were published on), and the same widths trained from scratch here."""
    dense = f["summary"]["dense_flops"]
    dataset = f["settings"]["dataset"]
    lines = [f"| published result | widths | FLOPs reduction | error as published | "
             f"trained from scratch here ({DATASETS.get(dataset, dataset)}) |",
             "|---|---|---|---|---|"]
    for p in f["published"]:
        mine = [c for c in f["controls"] if c["control"] == "published" and
                c["label"] == p["source"]]
        widths = "-".join(str(v) for v in p["widths"].values())
        if mine:
            reduction = f"{dense / mine[0]['flops']:.1f}x"
            here = pm(*mean_sd([c["test_accuracy"] for c in mine]))
        else:
            reduction, here = "—", "not trained yet"
        on = p.get("error_on", "mnist")
        error = pct(p["error"]) + ("" if on == dataset else f" (on {DATASETS.get(on, on)})")
        lines.append(f"| {p['source']} | {widths} | {reduction} | {error} | {here} |")
    return lines


def over_parents(f: dict) -> bool:
    """Whether the run's paired tests take the parent as the unit (and carry Holm's
    correction); earlier result files bootstrapped images over averaged outcomes."""
    return all(t.get("test") == "paired_t_over_parents" for t in f["paired_tests"])


def significant_tests(f: dict) -> str:
    tests = [t for t in f["paired_tests"] if t["pvalue"] < 0.05]
    total = len(f["paired_tests"])
    if not over_parents(f):
        if not tests:
            return "No pair of curves differs at p < 0.05 at any budget."
        parts = [f"{label('/'.join(t['a']))} > {label('/'.join(t['b']))} at "
                 f"{fraction(t['budget'])} ({100 * t['difference']:+.2f} points, p "
                 f"{t['pvalue']:.4f})" for t in tests]
        return (f"Paired bootstrap tests over test images, outcomes averaged over parents "
                f"(uncorrected; {len(tests)} of {total} at p < 0.05): " + "; ".join(parts) + ".")
    held = [t for t in f["paired_tests"] if t["pvalue_holm"] < 0.05]
    text = (f"Paired t-tests over parents (the unit is the parent: each parent's pair of "
            f"subnetworks gives one difference; the best curve by validation at each budget "
            f"against each other curve, {total} tests, Holm-corrected as one family): "
            f"{len(tests)} of {total} reach p < 0.05 before correction and {len(held)} after.")
    if tests:
        parts = [f"{label('/'.join(t['a']))} against {label('/'.join(t['b']))} at "
                 f"{fraction(t['budget'])}: {100 * t['difference']:+.2f} points (per parent "
                 + ", ".join(f"{100 * d:+.2f}" for d in t["differences"])
                 + f"; t-test p {t['pvalue']:.3f}, Holm {t['pvalue_holm']:.2f})" for t in tests]
        text += " Before correction: " + "; ".join(parts) + "."
    return text


def crossing_sentence(f: dict) -> str | None:
    """Each curve's 1 %-error crossing on test, interpolated between grid points."""
    crossings = f.get("crossing_1pct")
    if not crossings:
        return None
    parts = [f"{label(key)} {crossing_text(c['test'], 'the test images')}"
             for key, c in crossings.items()]
    return ("Where each curve's mean error over parents crosses 1 %, interpolated in "
            "log-reduction between grid points (interval: bootstrap over parents and images, "
            "2,000 resamples): " + "; ".join(parts) + ".")


def uniform_sentence(f: dict) -> str | None:
    """Uniform against cost-aware allocation for each method run both ways: the range of the
    mean difference over budgets, and the budgets where a paired test separates them."""
    parts = []
    for m in dict.fromkeys(r["method"] for r in f["rows"] if r["allocation"] == "uniform"):
        at = {(r["allocation"], r["budget"]): r for r in f["rows"] if r["method"] == m}
        diffs = [100 * (at[("uniform", b)]["test_accuracy_mean"] -
                        at[("cost", b)]["test_accuracy_mean"])
                 for b in f["settings"]["budgets"] if ("uniform", b) in at and ("cost", b) in at]
        if not diffs:
            continue
        significant = []
        for t in f["paired_tests"]:
            pair = {tuple(t["a"]), tuple(t["b"])}
            if pair == {(m, "uniform"), (m, "cost")} and t["pvalue"] < 0.05:
                better = "uniform" if tuple(t["a"]) == (m, "uniform") else "cost-aware"
                significant.append(
                    f"{better} at {fraction(t['budget'])} (p {t['pvalue']:.4f}"
                    + (f", Holm {t['pvalue_holm']:.2f}" if "pvalue_holm" in t else "") + ")")
        parts.append(f"{NAMES.get(m, m)} with the same fraction of every layer minus the "
                     f"cost-aware allocation: {min(diffs):+.2f} to {max(diffs):+.2f} points over "
                     "the budgets; significantly better: "
                     + (", ".join(significant) if significant else "neither"))
    return "; ".join(parts) if parts else None


def relative_error_sentence(name: str, f: dict, budget: float = 0.25) -> str | None:
    w = f.get("within_the_whole")
    if not w:
        return None
    whole_error = 1 - w["whole_test_accuracy_mean"]
    ratios = [r["test_error_mean"] / whole_error for r in f["rows"] if r["budget"] == budget]
    points = [100 * (r["test_accuracy_mean"] - w["whole_test_accuracy_mean"])
              for r in f["rows"] if r["budget"] == budget]
    if not ratios:
        return None
    return (f"{DATASETS.get(name, name)} at {fraction(budget)}: error {min(ratios):.2f}–"
            f"{max(ratios):.2f}x the whole's (accuracy {min(points):+.2f} to "
            f"{max(points):+.2f} points against it)")


def question_2(s: dict) -> list[str]:
    lines = ["## 2. Are networks too big; can they be trimmed?", ""]
    done = [n for n in DATASETS if complete(s["frontier_" + n])]
    if not done:
        return lines + ["Not measured yet: the frontier runs are not finished.", ""]
    answers = []
    for name in done:
        f = s["frontier_" + name]
        target = max((v["flops_reduction"] for v in f["smallest_within_1pct"].values()),
                     default=None)
        relative = best_within_whole(f, "within_1.25x_error")
        answers.append(
            f"{DATASETS[name]} " + ("keeps no budget within 1 % error" if target is None else
                                    f"{target:.1f}x at ≤ 1 % validation error")
            + ("" if relative is None else
               f", {relative[0]:.1f}x within 1.25x the whole's error"))
    lines += ["**How far, by the numbers:** " + "; ".join(answers) + " (details below; "
              "reductions are grid points, so lower bounds).", ""]
    for name in done:
        f = s["frontier_" + name]
        lines += [f"**{DATASETS[name]}** ({source('frontier_' + name)}): test accuracy, mean ± "
                  f"SD over {len(f['parents'])} parents, at each FLOPs budget (the gradual "
                  "trajectory's checkpoint, fine-tuned to saturation with distillation; "
                  "cost-aware allocation unless the column says uniform).", "",
                  *frontier_table(f), "", significant_tests(f), "",
                  *([crossing_sentence(f), ""] if crossing_sentence(f) else []),
                  "The published structured-pruning results on this architecture, on the "
                  "same axes (their widths' FLOPs in our cost model; their error as they "
                  "report it, after their own long training; and the same widths trained from "
                  "scratch with our recipe):", "", *published_table(f), "",
                  *([published_note(f), ""] if published_note(f) else [])]
    joint = joint_paragraph(s.get("joint"), s.get("frontier_mnist"))
    return lines + ([joint, ""] if joint else [])


def joint_paragraph(f: dict | None, frontier: dict | None = None) -> str | None:
    """The two axes: the cost-aware allocation (score per FLOP) against the joint one (score
    per share of FLOPs plus share of parameters), one trajectory each per parent, the same
    criterion and recipe; beside them the uniform allocation of the main frontier."""
    if not f or not f.get("rows"):
        return None
    rows = {(r["allocation"], r["budget"]): r for r in f["rows"]}
    if not any(a == "joint" for a, _ in rows):
        return None
    cells = []
    for b in sorted({b for _, b in rows}, reverse=True):
        cost, joint = rows.get(("cost", b)), rows.get(("joint", b))
        if cost and joint:
            cells.append(
                f"at {fraction(b)} of the FLOPs, counting FLOPs only "
                f"{pm(cost['test_accuracy_mean'], cost['test_accuracy_sd'])} with "
                f"{cost['params_reduction']:.1f}x fewer parameters, counting both "
                f"{pm(joint['test_accuracy_mean'], joint['test_accuracy_sd'])} with "
                f"{joint['params_reduction']:.1f}x fewer")
    if not cells:
        return None
    uniform = {r["budget"]: r for r in (frontier or {}).get("rows", [])
               if (r["method"], r["allocation"]) == ("magnitude", "uniform")}
    beside = [f"{fraction(b)} {pm(r['test_accuracy_mean'], r['test_accuracy_sd'])} with "
              f"{r['params_reduction']:.1f}x fewer parameters"
              for b, r in sorted(uniform.items(), reverse=True)
              if any(("joint", b) == k for k in rows)]
    tail = ("" if not beside else
            ". Neither beats keeping the same fraction of every layer (the uniform allocation "
            "of the main frontier, " + source("frontier_mnist") + "): " + "; ".join(beside)
            + ", on both axes at once")
    return ("**Two axes** (" + source("joint") + f"; L1 magnitude, {len(f['parents'])} parents, "
            "the same gradual protocol and teacher): the cost-aware allocation prices a unit "
            "by the FLOPs it costs, so it keeps cheap-in-FLOPs, costly-in-parameters dense "
            "units; an allocation that prices FLOPs and parameters together (each as a share "
            "of the whole network's) trades accuracy for parameters: " + "; ".join(cells)
            + tail + ".")


def published_note(f: dict) -> str | None:
    """What the published comparison can say: their recipes had no teacher, and a shape
    trained from scratch here may already meet their target without any pruning."""
    dense = f["summary"]["dense_flops"]
    within = []
    for p in f["published"]:
        mine = [c for c in f["controls"] if c["control"] == "published" and
                c["label"] == p["source"]]
        if mine:
            error = 1 - mean_sd([c["test_accuracy"] for c in mine])[0]
            if error <= 0.01:
                within.append(f"{p['source']}'s shape ({'-'.join(map(str, p['widths'].values()))}"
                              f") reaches {pct(error)} error at {dense / mine[0]['flops']:.1f}x "
                              "fewer FLOPs")
    text = ("The recipes differ: the published results were trained without a 99.5 % teacher, "
            "while the pruned subnetworks here are distilled from the parents' dropout "
            "ensemble, so the table compares shapes, not methods.")
    if within:
        text += (" Trained here from scratch on the labels alone, " + "; ".join(within)
                 + ": at that reduction ≤ 1 % error needs no pruning at all on this network.")
    return text


# --- question 3 -----------------------------------------------------------------------------

BARS = (("within_half_point", "within 0.5 points"),
        ("within_1.25x_error", "within 1.25x the error"))


def trend(d: dict) -> dict | None:
    """The measured tasks ordered by the whole network's error, and per bar the largest
    reduction of each (1x where no budget passes) with Spearman's rank correlation between
    error and reduction; None with fewer than three tasks."""
    from scipy.stats import spearmanr

    tasks = [t for t in d["tasks"] if t["whole_test_accuracy_mean"] is not None]
    if len(tasks) < 3:
        return None
    tasks.sort(key=lambda t: 1 - t["whole_test_accuracy_mean"])
    error = [1 - t["whole_test_accuracy_mean"] for t in tasks]
    bars = {}
    for bar, _ in BARS:
        reduction = [t[bar]["flops_reduction"] if t[bar] else 1.0 for t in tasks]
        bars[bar] = {"reduction": reduction, "rho": spearmanr(error, reduction).statistic}
    return {"tasks": tasks, "error": error, "bars": bars}


def difficulty_trend(d: dict) -> str | None:
    """How the largest reduction within each bar follows the whole's error across the tasks:
    Spearman's rank correlation (a reduction of 1x where no budget passes)."""
    t = trend(d)
    if t is None:
        return None
    tasks, error = t["tasks"], t["error"]
    parts = [f"{name}, Spearman's rho {t['bars'][bar]['rho']:+.2f} ("
             + ", ".join(f"{task['task']} {r:.1f}x"
                         for task, r in zip(tasks, t["bars"][bar]["reduction"], strict=True))
             + ")" for bar, name in BARS]
    return (f"Across {len(tasks)} tasks ordered by the whole network's error, from "
            f"{tasks[0]['task']} ({pct(error[0])}) to {tasks[-1]['task']} ({pct(error[-1])}), "
            "the largest reduction that keeps the subnetwork " + "; and ".join(parts) + ". A "
            "negative rho means harder tasks trim less; with this few tasks, one rank more or "
            "less moves it a lot.")


def difficulty_answer(d: dict) -> str | None:
    """The question answered from the difficulty curve once every task is measured: how far
    each bar's reduction falls with difficulty, and why the two bars can disagree."""
    t = trend(d)
    if t is None or d.get("missing"):
        return None
    tasks = t["tasks"]

    def span(bar):
        reductions = dict(zip((x["task"] for x in tasks), t["bars"][bar]["reduction"],
                              strict=True))

        def at(value):  # every task at that reduction (ties are common on a grid)
            return (f"{value:.1f}x ("
                    + ", ".join(k for k, v in reductions.items() if v == value) + ")")
        return f"from {at(max(reductions.values()))} down to {at(min(reductions.values()))}"

    half, relative = (t["bars"][bar]["rho"] for bar, _ in BARS)
    if half <= -0.5 and relative <= -0.5:
        verdict = ("partly, yes: on both bars, harder tasks trim less, so MNIST's large "
                   "reductions owe something to its being easy")
    elif half <= -0.5:
        verdict = ("only in absolute points: within 0.5 points harder tasks trim less (half a "
                   "point is most of MNIST's error and a small part of a hard task's), while "
                   "within 1.25x each task's own error the reduction does not fall clearly "
                   "with difficulty")
    elif relative <= -0.5:
        verdict = ("in relative error only: harder tasks trim less within 1.25x their own "
                   "error, though not within 0.5 points")
    else:
        verdict = ("no: how far the network trims does not fall with the task's difficulty "
                   "on either bar")
    return (f"**Is MNIST too simple? {verdict[0].upper() + verdict[1:]}.** Over "
            f"{len(tasks)} tasks (whole-network error {pct(t['error'][0])} to "
            f"{pct(t['error'][-1])}), the largest reduction within 0.5 points runs "
            f"{span('within_half_point')}, Spearman's rho with the error {half:+.2f}; within "
            f"1.25x the whole's error {span('within_1.25x_error')}, rho {relative:+.2f}. The "
            "two bars lean opposite ways by construction: 0.5 points is a strict bar on a task "
            "with a large error and a loose one on MNIST, and 1.25x the error the reverse, so "
            "the truth for a given task lies between them.")


def question_3(s: dict) -> list[str]:
    lines = ["## 3. Or is MNIST just too simple?", ""]
    ratios = [relative_error_sentence(n, s["frontier_" + n]) for n in DATASETS
              if complete(s["frontier_" + n])]
    ratios = [r for r in ratios if r]
    if ratios:
        lines += ["Absolute points and relative error can point different ways, so both are "
                  "stated. Against the whole network fine-tuned with the same recipe: "
                  + "; ".join(ratios) + ".", ""]
    d = s["difficulty"]
    answer = difficulty_answer(d) if d else None
    if answer:
        lines += [answer, ""]
    across = difficulty_trend(d) if d else None
    if across:
        lines += [across, ""]
    if d and d["tasks"]:
        lines += [f"The difficulty curve ({source('difficulty')}; the blog's architecture on "
                  "tasks built from MNIST and Fashion-MNIST by `analyses/tasks.py`, each with "
                  f"its fingerprint in the results; curve: {label(d['curve'])}, the budget "
                  f"grid {', '.join(fraction(b) for b in d['budgets'])}, so a reduction is a "
                  "lower bound between grid points):", "", *difficulty.table(d), ""]
    if not d or d["missing"]:
        missing = ", ".join(d["missing"]) if d else "every task"
        lines += [f"Not measured yet for the difficulty curve: {missing} "
                  "(`analyses/difficulty.py`). Until it is, this question has no answer "
                  "here beyond the relative errors above.", ""]
    return lines


# --- what changed, weak evidence, reproducing ------------------------------------------------

def what_changed(s: dict) -> list[str]:
    lines = ["## What changed from the previous answer, and why", ""]
    p, f = s["previous"], s["frontier_mnist"]
    if p and complete(f):
        m = p["datasets"]["mnist"]
        best = m["smallest"]["whole_best_of_dropout_off_and_on"]["0.1_points"]["magnitude"]
        lines += [
            f"- The previous answer ({source('previous')}) fine-tuned each subnetwork for "
            f"{p['config']['finetune_epochs']:g} epoch after a one-shot cut, on one network per "
            "data set trained "
            f"{p['config']['epochs']} epochs, and found L1 magnitude within 0.1 point of the "
            f"whole at {best['flops_reduction']:.1f}x fewer FLOPs "
            f"({pm(best['accuracy_mean'], best['accuracy_std'])}) and nothing within 0.5 "
            "points at 4x. That was the protocol's limit, not the network's: with importance "
            "re-measured over a gradual prune–retrain trajectory, each checkpoint fine-tuned "
            "until validation accuracy stops improving, and distillation from the parent's "
            "dropout-averaged predictions, the same architecture keeps ≤ 1 % error down to "
            f"{max(v['flops_reduction'] for v in f['smallest_within_1pct'].values()):.1f}x "
            "fewer FLOPs (section 1)."]
    lines += [
        "- It said a random half of the units does as well as all of them. That holds for the "
        "blog's element-wise dropout, not for units (section 1, with the mechanism)."]
    uniform = uniform_sentence(f) if complete(f) else None
    if uniform:
        lines += ["- Uniform per-layer cuts were suspected of holding the answer back. Measured "
                  f"on MNIST: {uniform}. So the allocation was not what held it back."]
    lines += [
        "- The controls are now Scratch-E, Scratch-B, rewinding and the published shapes "
        "trained from scratch, all with the widths the pruning found, on three parents; "
        "\"is MNIST too simple\" is asked against the whole network given the same fine-tuning, "
        "in relative error as well as points, over tasks of graded difficulty.", ""]
    return lines


#: Validation accuracy a parent still gained over its last five epochs that counts as rising.
RISING = 0.002


def still_rising(d: dict | None) -> str | None:
    """The difficulty curve's parents whose validation accuracy still rose over their last
    five epochs by at least :data:`RISING` (the convergence check), or None."""
    rising = [(t["task"], [g for g in t["last_five_epochs_val_gain"] if g is not None])
              for t in (d or {}).get("tasks", [])]
    rising = [(task, gains) for task, gains in rising if gains and max(gains) >= RISING]
    if not rising:
        return None
    listed = "; ".join(f"{task}: " + ", ".join(f"{100 * g:+.2f}" for g in gains)
                       for task, gains in rising)
    return ("- **Some difficulty-curve parents were still improving** when their training "
            f"ended (validation accuracy gained over the last five epochs, points, per parent: "
            f"{listed}). Their subnetworks and their whole network are fine-tuned with the same "
            "recipe (up to 12 more epochs, early stopping), so the comparison stays like for "
            "like, but those parents are not the converged networks the other tasks start "
            "from.")


def weak_evidence(s: dict) -> list[str]:
    lines = ["## Where the evidence is weak", ""]
    mr = s["mask_resolution"]
    if mr:
        dense = mr["sites"]["dense"]
        lines.append(
            f"- **Mask statistics cannot resolve the dense layer.** At {mr['n_masks']:,} masks "
            f"({source('mask_resolution')}), {dense['significant']} of its {dense['units']} "
            "units have a value that differs from zero after a Benjamini–Hochberg pass "
            f"(conv1: {mr['sites']['conv1']['significant']} of "
            f"{mr['sites']['conv1']['units']}; conv2: {mr['sites']['conv2']['significant']} of "
            f"{mr['sites']['conv2']['units']}), though it holds most of the parameters. "
            f"Resolving its top 10 units would take about {dense['masks_for_top_10']:,.0f} "
            f"masks, its top half about {dense['masks_for_top_half']:,.0f}. So at the "
            "default mask counts the dense layer's ranking by mask statistics is noise. "
            f"(Measured on the record of `{Path(mr['source']).parent}`.)")
    for name in DATASETS:
        f = s["frontier_" + name]
        if not complete(f):
            continue
        runs = [c for c in f["controls"] if c["control"] == "scratch_b"]
        if runs:
            ran = sorted(c["epochs_run"] for c in runs)
            lines.append(
                f"- **Scratch-B stopped early on {DATASETS[name]}**: early stopping ended it "
                f"after {ran[0]}–{ran[-1]} of up to {runs[0]['epochs_budget']} epochs, so it "
                "did not use its larger budget in practice.")
        parents = len(f["parents"])
        sds = sorted(100 * r["test_accuracy_sd"] for r in f["rows"]
                     if r["test_accuracy_sd"] is not None)
        median = sds[len(sds) // 2] if sds else float("nan")
        tests = f["paired_tests"]
        lines.append(
            f"- **{parents} parents on {DATASETS[name]}.** Each spread is over parents "
            "(training, pruning and fine-tuning noise together); the median SD of a curve's "
            f"point is {median:.2f} points, and {sum(t['pvalue'] < 0.05 for t in tests)} of "
            f"{len(tests)} paired tests between curves reach p < 0.05"
            + (f" ({sum(t['pvalue_holm'] < 0.05 for t in tests)} after Holm's correction; "
               "the tests take the parent as the unit)" if over_parents(f) else
               " (tests over images with outcomes averaged over parents, uncorrected)")
            + (", so most differences between criteria are within the noise."
               if 2 * sum(t["pvalue"] < 0.05 for t in tests) < len(tests) else "."))
    rising = still_rising(s["difficulty"])
    if rising:
        lines.append(rising)
    lines += [
        "- **The budget grid.** A largest reduction is the last grid point that passes, so "
        "the true frontier lies between it and the next point.",
        "- **The published numbers come from their papers**, after their own (much longer, "
        "sparsity-inducing) training; only their widths trained with our recipe are "
        "measured here.", ""]
    for name in DATASETS:
        if not complete(s["frontier_" + name]):
            lines.insert(-1, f"- **{DATASETS[name]}'s frontier is not finished**, so what this "
                             "file says of it is missing, not weak.")
    return lines


def reproducing(s: dict) -> list[str]:
    lines = ["## Reproducing", "",
             "`make analyses` makes every file here, resumably: each long run is a set of "
             "cells cached by what made them, committed as they finish, and a rerun redoes "
             "only what is missing; `python analyses/answer.py` then regenerates this file. "
             "Compute as the result files state it (CPU-core seconds, summed over cells; "
             "two cells run side by side on two cores):", ""]
    for name in DATASETS:
        f = s["frontier_" + name]
        if complete(f) and "compute_seconds" in f:
            c = f["compute_seconds"]
            lines.append(f"- {DATASETS[name]} frontier: {c['total'] / 3600:.1f} core-hours "
                         f"(parents {c['parents_training'] / 3600:.1f}, trajectories "
                         f"{c['trajectories'] / 3600:.1f}, fine-tuning "
                         f"{c['finetuning'] / 3600:.1f}, controls {c['controls'] / 3600:.1f}).")
    d = s["difficulty"]
    runs = [t for t in (d or {}).get("tasks", [])
            if t.get("compute_seconds") and t.get("source", "").startswith("reports/difficulty")]
    if runs:
        total = sum(t["compute_seconds"]["total"] for t in runs)
        lines.append("- The difficulty curve's own tasks (MNIST and Fashion-MNIST come from "
                     f"the frontiers above): {total / 3600:.1f} core-hours ("
                     + ", ".join(f"{t['task']} {t['compute_seconds']['total'] / 3600:.1f}"
                                 for t in runs) + ").")
    return lines + [""]


#: The report folders, what made them and what they measure (listed where they exist).
FOLDERS = (
    ("frontier/", "analyses/frontier.py", "MNIST: accuracy against FLOPs for every criterion, "
     "both allocations, the controls and the published shapes, 3 parents"),
    ("frontier_fashion_mnist/", "analyses/frontier.py --dataset fashion_mnist",
     "the same on Fashion-MNIST"),
    ("difficulty/", "analyses/difficulty.py", "the difficulty curve: tasks of graded "
     "difficulty, each trimmed the same way"),
    ("blog_mechanism/", "analyses/blog_mechanism.py", "the blog's element-wise dropout beside "
     "random unit masks and chosen subnetworks, with the mechanism"),
    ("mask_resolution/", "analyses/mask_resolution.py", "what mask statistics can resolve at "
     "a given number of masks"),
    ("uncertainty/", "analyses/uncertainty.py", "test-time dropout as an uncertainty "
     "estimate"),
    ("blog_reproduction/", "analyses/blog_reproduction.py", "each of the blog's statements"),
    ("width_dropout_sweep/", "analyses/width_dropout_sweep.py", "dense width × test-time "
     "dropout"),
    ("subnetworks/", "analyses/subnetworks.py", "the previous answer's protocol (one-shot cut, "
     "a quarter epoch of fine-tuning)"),
)


def folders(root: Path = REPORTS) -> list[str]:
    lines = ["| report | made by | what it measures |", "|---|---|---|"]
    for folder, script, what in FOLDERS:
        if (root / folder).is_dir():
            lines.append(f"| [{folder}]({folder}) | `{script}` | {what} |")
    return lines


def readme(s: dict, root: Path = REPORTS) -> str:
    lines = [
        "# What the measurements say", "",
        "The blog trained a LeNet-style CNN on MNIST, left dropout on at test time, and saw "
        "accuracy hold at about 98.7 % with half the units dropped at random. It asked: do "
        "equally good subnetworks exist inside a network? Can networks be trimmed? Or is "
        "MNIST just too simple?", "",
        "Generated by `python analyses/answer.py` from the committed result files each "
        "paragraph names; nothing here is typed by hand, and the test suite checks that this "
        "file is what the script makes of them. Test accuracy on the 10,000 test images, mean "
        "± SD over parents, unless a line says otherwise.", "", *folders(root), ""]
    r = s["reproduction"]
    if r:
        first = r["verdicts"][0]
        lines += [f"The blog's own numbers reproduce ({source('reproduction')}): "
                  f"\"{first['statement']}\" — measured {first['measured']}.", ""]
    lines += question_1(s) + question_2(s) + question_3(s) + what_changed(s) + \
        weak_evidence(s) + reproducing(s)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if reports/README.md is out of date")
    args = parser.parse_args(argv)
    text = readme(load(), REPORTS)
    path = REPORTS / "README.md"
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"{path.relative_to(ROOT)} is not what the result files make; run "
                  "python analyses/answer.py", file=sys.stderr)
            return 1
        return 0
    sys.path.insert(0, str(ROOT))
    from subnet.io import atomic_write_text

    atomic_write_text(path, text)
    print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())

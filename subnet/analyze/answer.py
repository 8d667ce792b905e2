"""The answer of an analysis in English: the smallest subnetwork within the tolerance, per
method and overall, the sentences that say it, and its model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from subnet._io import atomic_write_bytes
from subnet.analyze.settings import Settings
from subnet.methods import method_name


def _answer(comparison: dict | None, settings: Settings, blog: dict) -> dict:
    """The smallest subnetwork within the tolerance, per method and overall, in sentences.

    The bar is the whole network's better test accuracy, with dropout off or on (mean of single
    passes), so a subnetwork only counts as "as good" if it matches the whole at its best.
    """
    tol = settings.tolerance
    off, on = blog["accuracy_dropout_off"], blog.get("accuracy_dropout_on_mean")
    reference = max(off, on) if on is not None else off
    basis = "with test-time dropout on (mean of single passes)" if on is not None and on > off \
        else "with dropout off"
    if not comparison:
        return {"tolerance": tol, "dense_accuracy": reference, "smallest": None,
                "smallest_by_method": {}, "sentences": [
                    "No comparison was run (the dataset has no training data to fine-tune on)."]}
    dense = comparison["dense"]
    key = "accuracy_finetuned_mean" if settings.finetune_epochs > 0 or \
        settings.protocol == "thorough" else "accuracy_oneshot_mean"
    by_method: dict = {}
    validated = None
    if settings.protocol == "thorough":  # decided on the validation split, not the test set
        from subnet.frontier import smallest_on_validation

        validated = smallest_on_validation(comparison["rows"], dense["val_accuracy"], tol)
    for entry in comparison["summary"]:
        value = entry.get(key)
        if value is None:
            continue
        if validated is not None:
            if entry["budget_flops_fraction"] < validated.get(entry["method"], 2.0):
                continue
        elif value < reference - tol:
            continue
        best = by_method.get(entry["method"])
        size = "params" if entry["method"] == "tfmot" else "budget_flops_fraction"
        if best is None or (entry[size], -value) < (best[size], -best[key]):
            by_method[entry["method"]] = entry
    smallest_by_method = {m: (_describe(by_method[m], comparison, key) if m in by_method else
                              None) for m in settings.methods}
    # tfmot keeps the dense shape and reinit is not a part of the model: neither is a subnetwork.
    # The smallest budget any method meets; there, the best method by validation accuracy
    # (the thorough protocol's split) or, without one, by the measured accuracy. No method is
    # preferred by name.
    structured = [v for m, v in smallest_by_method.items() if v and m not in SHAPELESS]
    smallest = min(structured, key=lambda e: (e["budget_flops_fraction"],
                                              -_choice_accuracy(e)), default=None)
    best = None if smallest is not None else _most_accurate(comparison, key)
    chosen = smallest or best
    return {"tolerance": tol, "dense_accuracy": reference, "dense_accuracy_basis": basis,
            "dense_accuracy_dropout_off": off, "comparison_dense_accuracy": dense["accuracy"],
            "smallest": smallest, "smallest_by_method": smallest_by_method,
            "most_accurate": best, "chosen_by": _CHOSEN_BY[chosen is not None and
                                                        "val_accuracy_mean" in chosen],
            "measured_after": "fine-tuning" if key == "accuracy_finetuned_mean" else "one-shot",
            "model_file": chosen.get("model_file") if chosen else None,
            "dense_finetuned": dense.get("finetuned"),
            "sentences": _sentences(reference, basis, blog["n_test"], smallest,
                                    smallest_by_method, settings, key, dense.get("finetuned"))
            + _none_met(best, settings)}


#: Methods whose rows are not subnetworks: TFMOT keeps the dense shape; reinit is a control.
SHAPELESS = ("tfmot", "reinit")
_CHOSEN_BY = {True: "validation accuracy",
              False: "test accuracy (the quick protocol holds out no validation split)"}


def _choice_accuracy(entry: dict) -> float:
    """What the answer's subnetwork is chosen by: validation accuracy where the protocol
    measured it, else the measured (test) accuracy."""
    value = entry.get("val_accuracy_mean")
    return entry["accuracy_mean"] if value is None else value


def _most_accurate(comparison: dict, key: str) -> dict | None:
    """Where no method meets the tolerance: the most accurate subnetwork of any method and
    budget (by :func:`_choice_accuracy`; ties: the smaller budget) that has a model file."""
    entries = [e for e in comparison["summary"] if e["method"] not in SHAPELESS and
               e.get(key) is not None]
    described = [_describe(e, comparison, key) for e in entries]
    described = [d for d in described if d["model_file"]]
    return max(described, key=lambda d: (_choice_accuracy(d), -d["budget_flops_fraction"]),
               default=None)


def _none_met(best: dict | None, settings: Settings) -> list[str]:
    if best is None:
        return []
    return [f"No method met the tolerance, so subnetwork.keras is the most accurate subnetwork "
            f"found: {method_name(best['method'])} at {best['budget_flops_fraction']:.3g} of the "
            f"FLOPs ({best['flops_reduction']:.1f}x fewer), {_spread(best)}."]


def _save_subnetwork(answer: dict, out: Path) -> dict | None:
    """Copies the answer's subnetwork (the smallest within the tolerance or, where none met it,
    the most accurate one found: :func:`_answer` chose it) to ``out/subnetwork.keras``."""
    chosen = answer.pop("model_file", None)
    if chosen is None:
        return None
    within = answer.get("smallest") is not None
    _copy_atomic(out / chosen, out / "subnetwork.keras")
    method, budget, seed = Path(chosen).stem.rsplit("_", 2)
    return {"file": "subnetwork.keras", "method": method, "budget_flops_fraction": float(budget),
            "seed": int(seed), "within_tolerance": within}


def _copy_atomic(source: Path, dest: Path) -> None:
    atomic_write_bytes(dest, source.read_bytes())


def _describe(entry: dict, comparison: dict, key: str) -> dict:
    rows = [r for r in comparison["rows"] if r["method"] == entry["method"] and
            r["budget_flops_fraction"] == entry["budget_flops_fraction"]]
    first = min(rows, key=lambda r: r["seed"])
    return {"method": entry["method"], "budget_flops_fraction": entry["budget_flops_fraction"],
            "params": entry["params"], "flops": entry["flops"], "widths": first.get("widths"),
            "widths_per_seed": [r.get("widths") for r in rows],
            "accuracy_mean": entry[key], "accuracy_std": entry[key.replace("_mean", "_std")],
            "seeds": entry["seeds"],
            **({"val_accuracy_mean": float(np.mean([r["val_accuracy"] for r in rows]))}
               if all(r.get("val_accuracy") is not None for r in rows) else {}),
            "flops_reduction": comparison["dense"]["flops"] / entry["flops"],
            "params_reduction": comparison["dense"]["params"] / entry["params"],
            "model_file": f"models/{Path(first['model_file']).name}"
            if first.get("model_file") else None}


def _sentences(reference, basis, n_test, smallest, by_method, settings: Settings,
               key, dense_tuned: dict | None = None) -> list[str]:
    when = (f"after fine-tuning for {settings.finetune_epochs:g} epoch(s)"
            if key == "accuracy_finetuned_mean" else "without fine-tuning")
    if settings.protocol == "thorough":
        when = ("after gradual pruning with retraining and fine-tuning to saturation (the "
                "thorough protocol: early stopping on a validation split, distilled from the "
                "parent; the size chosen on the validation split)")
    tol = f"{settings.tolerance * 100:.2f} points"
    out = [f"The full network scores {reference:.2%} on {n_test:,} test examples {basis}."]
    if smallest is None:
        low = min(settings.budgets)
        out.append(f"No subnetwork at the budgets tried (down to {low:.3g} of the FLOPs) stayed "
                   f"within {tol} of it {when}; the network could not be trimmed that far here.")
    else:
        widths = ", ".join(f"{k} {v}" for k, v in (smallest["widths"] or {}).items())
        out.append(
            f"The smallest subnetwork within {tol} of it {when} was found by "
            f"{method_name(smallest['method'])}: {smallest['flops_reduction']:.1f}x fewer FLOPs "
            f"and {smallest['params_reduction']:.1f}x fewer parameters ({widths}), at "
            f"{_spread(smallest)}.")
    if dense_tuned and key == "accuracy_finetuned_mean":
        gap = smallest["accuracy_mean"] - dense_tuned["accuracy_mean"] if smallest else None
        out.append(
            f"The whole network given the same fine-tuning scores "
            f"{dense_tuned['accuracy_mean']:.2%}" + (
                f" ± {dense_tuned['accuracy_std'] * 100:.2f} points over "
                f"{len(dense_tuned['accuracy'])} seeds" if len(dense_tuned["accuracy"]) > 1
                else "") + (
                "" if gap is None else
                f"; the subnetwork is {abs(gap) * 100:.2f} points "
                f"{'above' if gap >= 0 else 'below'} it") + ".")
    for method in ("magnitude", "random", "tfmot", "reinit"):
        if method not in by_method:
            continue
        entry = by_method[method]
        if entry is None:
            out.append(f"{_NAMES[method]} reached no budget within {tol}.")
        elif method == "tfmot":
            out.append(f"{_NAMES[method]} kept that accuracy down to {entry['params']:,} nonzero "
                       "weights, but its model keeps the dense shape (no fewer FLOPs).")
        else:
            out.append(f"{_NAMES[method]} reached {entry['flops_reduction']:.1f}x fewer FLOPs at "
                       f"{_spread(entry)}.")
    if smallest is not None:
        verdict = (f"So, for this network: subnetworks with {smallest['flops_reduction']:.1f}x "
                   f"fewer FLOPs are as good as the whole, within {tol}")
        mask, magnitude = by_method.get("banzhaf_iterative"), by_method.get("magnitude")
        if "banzhaf_iterative" in by_method and "magnitude" in by_method:
            if mask is not None and (magnitude is None or mask["budget_flops_fraction"] <
                                     magnitude["budget_flops_fraction"]):
                verdict += "; mask statistics found smaller ones than magnitude pruning did"
            elif mask is not None and mask["budget_flops_fraction"] == \
                    magnitude["budget_flops_fraction"]:
                verdict += "; mask statistics and magnitude pruning reached the same budget"
            else:
                verdict += "; magnitude pruning found smaller ones than mask statistics did"
        low = min(settings.budgets)
        if smallest["budget_flops_fraction"] == low:
            verdict += f" (the smallest budget tried, {low:.3g} of the FLOPs: smaller may work)"
        out.append(verdict + ".")
    return out


def _spread(entry: dict) -> str:
    if entry["seeds"] > 1:
        return (f"{entry['accuracy_mean']:.2%} ± {entry['accuracy_std'] * 100:.2f} points over "
                f"{entry['seeds']} seeds")
    return f"{entry['accuracy_mean']:.2%} (one seed)"


_NAMES = {"magnitude": "Structured L1 magnitude pruning", "random": "Random units (the control)",
          "tfmot": "TFMOT magnitude pruning (unstructured)",
          "reinit": "A network of the mask-statistics widths trained from a fresh start"}


def _chance_sentence(keep_section: dict) -> str | None:
    """The answer's sentence for a record whose random subnetworks' mean accuracy sits within
    :data:`subnet.record.NEAR_CHANCE` of chance (None otherwise)."""
    d = keep_section["mask_accuracy"]
    if not d.get("near_chance"):
        return None
    return (f"Random subnetworks at these keep probabilities sit near chance (mean accuracy "
            f"{d['mean']:.1%} against chance {d['chance']:.1%} and the whole model's "
            f"{d['whole']:.1%}), so the unit importances and the mask-statistics subnetworks "
            "rest on little information: record at a higher keep (--rate auto calibrates it).")

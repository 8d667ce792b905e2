"""Subnetworks as good as the whole, on MNIST and on Fashion-MNIST, by every method.

    python analyses/subnetworks.py [--datasets mnist fashion_mnist] [--epochs 12]
        [--convergence-epochs 3 6 24] [--seeds 0 1 2] [--budgets 0.5 0.25 0.125]
        [--finetune-epochs 0.25] [--out reports/subnetworks]

For each dataset, the blog's network (conv 20 - conv 50 - dense 500, dropout 0.5) is trained for
``--epochs`` (Adam, cosine decay to 0; cached in ``out/analyses/models/``). Whether that is
training to convergence is measured, not assumed: the same network is also trained for
``--convergence-epochs`` (shorter and longer) and the whole network's test accuracy is compared
along the epochs (converged at A epochs: the longest training, B, gained less than 0.1 point
over the next longest, A). Then the full
``subnet.analyze`` pipeline runs on it (record, importance, comparison, report) with the
methods banzhaf_iterative (mask statistics, iterative), magnitude (L1, structured), random,
tfmot (unstructured magnitude at the same nonzero weights) and reinit (banzhaf_iterative's
widths, freshly initialised), each fine-tuned with the same budget, over ``--seeds``. Its
report lands in ``--out/DATASET/`` (the record and models stay in
``out/analyses/subnetworks/``, one folder per network and settings).

This script then reads the comparison and lists, per dataset and method, the smallest
subnetwork within 0.1 and within 0.5 points of the whole network (mean over seeds), against two
references: the whole network at its best (dropout off or on) and the whole network fine-tuned
with the same budget. It writes ``--out/results.json`` and a summary report, and prints one JSON
object last.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from _trained import accuracy_dropout_off, load, path_of, trained

import subnet
from subnet import comparison
from subnet.analyze import Settings, analyze
from subnet.io import atomic_write_text

METHODS = ("banzhaf_iterative", "magnitude", "random", "tfmot", "reinit")
# the methods that give a smaller network (tfmot keeps the dense shape, reinit is not cut out)
STRUCTURED = tuple(m for m in METHODS if m in comparison.STRUCTURED)
TOLERANCES = (0.001, 0.005)
CONVERGED = 0.001  # the longest training gained less than this over the next: converged
PUBLISHED = (  # DESIGN.md's reference numbers on this architecture (LeNet-5-Caffe, MNIST)
    ("Neklyudov et al. 2017 (SBP)", "3-18-284 (dense 283)", "0.86 %", "10.5x fewer FLOPs"),
    ("Louizos et al. 2018 (L0)", "9-18-65 (dense 25)", "1.0 %", ""),
    ("Louizos et al. 2018 (L0)", "20-25-45 (dense 462)", "0.9 %", ""),
    ("Louizos et al. 2017 (Bayesian Compression)", "5-10-76 (dense 16)", "1.0 %", ""),
    ("Han et al. 2015 (magnitude, unstructured)", "431K -> 36K weights", "0.77 %", "12x fewer"),
)


def convergence(data, epochs: list[int], log) -> dict:
    """The whole network's test accuracy (dropout off; on: mean of 5 passes) for each training
    length in ``epochs`` (seed 0), and whether the longest still gained over the next longest."""
    rows = []
    for length in sorted(set(epochs)):
        model = trained(data, 500, epochs=length, seed=0, log=log)
        off = accuracy_dropout_off(model, data.x_test, data.y_test)
        on = subnet.mc_dropout(model, data.x_test, data.y_test, samples=5, seed=0).summary()
        rows.append({"epochs": length, "accuracy_dropout_off": off,
                     "accuracy_dropout_on": on["accuracy"],
                     "accuracy_dropout_on_std": on["accuracy_std"],
                     "best": max(off, on["accuracy"])})
    return {"seed": 0, **trend(rows)}


def trend(rows: list[dict]) -> dict:
    """``rows`` (by increasing ``epochs``, each with its ``best`` accuracy) with the gain of the
    longest training over the next longest, and whether that gain is below :data:`CONVERGED`."""
    gain = rows[-1]["best"] - rows[-2]["best"] if len(rows) > 1 else None
    return {"rows": rows, "last_gain": gain,
            "last_step": [rows[-2]["epochs"], rows[-1]["epochs"]] if len(rows) > 1 else None,
            "converged": None if gain is None else bool(gain < CONVERGED)}


def smallest(results: dict, reference: float, tolerance: float) -> dict:
    """Per method, the smallest budget whose mean fine-tuned accuracy is within the tolerance."""
    comparison = results["comparison"]
    out = {}
    for method in METHODS:
        entries = [e for e in comparison["summary"] if e["method"] == method
                   and e["accuracy_finetuned_mean"] >= reference - tolerance]
        if not entries:
            out[method] = None
            continue
        size = "params" if method == "tfmot" else "budget_flops_fraction"
        best = min(entries, key=lambda e: (e[size], -e["accuracy_finetuned_mean"]))
        rows = [r for r in comparison["rows"] if r["method"] == method
                and r["budget_flops_fraction"] == best["budget_flops_fraction"]]
        out[method] = {"budget_flops_fraction": best["budget_flops_fraction"],
                       "params": best["params"], "flops": best["flops"],
                       "widths_per_seed": [r.get("widths") for r in rows],
                       "accuracy_mean": best["accuracy_finetuned_mean"],
                       "accuracy_std": best["accuracy_finetuned_std"], "seeds": best["seeds"],
                       "flops_reduction": comparison["dense"]["flops"] / best["flops"],
                       "params_reduction": comparison["dense"]["params"] / best["params"]}
    return out


def tables(results: dict) -> dict:
    blog = results["blog"]
    dense = results["comparison"]["dense"]
    references = {
        "whole_best_of_dropout_off_and_on": max(blog["accuracy_dropout_off"],
                                                blog.get("accuracy_dropout_on_mean") or 0.0),
        "whole_finetuned_same_budget": dense["finetuned"]["accuracy_mean"],
    }
    return {"references": references,
            "dense": {"accuracy_dropout_off": blog["accuracy_dropout_off"],
                      "accuracy_dropout_on_mean": blog.get("accuracy_dropout_on_mean"),
                      "finetuned": dense["finetuned"], "params": dense["params"],
                      "flops": dense["flops"]},
            "smallest": {ref: {f"{tol * 100:g}_points": smallest(results, value, tol)
                               for tol in TOLERANCES} for ref, value in references.items()},
            "curve": results["comparison"]["summary"]}


def _convergence_reading(trend: dict) -> str:
    if trend["last_gain"] is None:
        return "One training length only: convergence not measured."
    short, long = trend["last_step"]
    verdict = f"converged at {short} epochs (less than 0.1 point)" if trend["converged"] else \
        f"not converged at {short} epochs (0.1 point or more)"
    return (f"From {short} to {long} epochs the better of dropout off and on changed by "
            f"{trend['last_gain'] * 100:+.2f} points: {verdict}; seed 0.")


def _cell(entry, method: str = "") -> str:
    if entry is None:
        return "none of the budgets"
    if method == "tfmot":  # the dense shape, with as many nonzero weights as the budget's
        return (f"{entry['params']:,} nonzero weights (dense shape; the "
                f"1/{round(1 / entry['budget_flops_fraction'])} budget's count): "
                f"{entry['accuracy_mean']:.2%} ± {entry['accuracy_std'] * 100:.2f}")
    widths = entry["widths_per_seed"][0]
    shape = "-".join(str(w) for w in widths.values()) if isinstance(widths, dict) else ""
    return (f"1/{round(1 / entry['budget_flops_fraction'])} FLOPs, {entry['params']:,} params"
            f"{f' ({shape})' if shape else ''}: {entry['accuracy_mean']:.2%} ± "
            f"{entry['accuracy_std'] * 100:.2f}")


def write_report(result: dict, out: Path) -> None:
    from subnet.methods import method_name
    from subnet.report import write_document
    from subnet.report.content import Document, Link, Section, Table, Text

    sections, answer = [], []
    for name, found in result["datasets"].items():
        refs = found["references"]
        dense = found["dense"]
        items = [Text((f"Whole network: {dense['accuracy_dropout_off']:.2%} with dropout "
                       f"off, {dense['accuracy_dropout_on_mean']:.2%} with dropout on "
                       f"(mean of single passes), {dense['finetuned']['accuracy_mean']:.2%}"
                       f" ± {dense['finetuned']['accuracy_std'] * 100:.2f} fine-tuned "
                       "with the subnetworks' budget. Full report: ",
                       Link(f"{name}/report.html", f"{name}/report.html"), "."),)]
        trend = found["convergence"]
        if trend["rows"]:
            items.append(Table(
                f"{name}-convergence", "The whole network's test accuracy by training length",
                ("epochs", "dropout off", "dropout on (mean of 5 passes)"),
                tuple((str(r["epochs"]), f"{r['accuracy_dropout_off']:.2%}",
                       f"{r['accuracy_dropout_on']:.2%} ± {r['accuracy_dropout_on_std'] * 100:.2f}")
                      for r in trend["rows"]),
                reading=_convergence_reading(trend)))
        for ref, label in (("whole_best_of_dropout_off_and_on", "the whole at its best"),
                           ("whole_finetuned_same_budget", "the whole fine-tuned alike")):
            per = found["smallest"][ref]
            rows = tuple((method_name(m), _cell(per["0.1_points"][m], m),
                          _cell(per["0.5_points"][m], m)) for m in METHODS)
            items.append(Table(f"{name}-{ref}", f"Smallest within 0.1 / 0.5 points of {label} "
                               f"({refs[ref]:.2%})", ("method", "within 0.1 points",
                                                      "within 0.5 points"), rows,
                               reading="Mean ± std of fine-tuned test accuracy over seeds; "
                                       f"{method_name('tfmot')} keeps the dense shape (params "
                                       f"= nonzero weights); {method_name('reinit')} are the "
                                       f"{method_name('banzhaf_iterative')} widths, trained "
                                       "from scratch."))
            if ref == "whole_best_of_dropout_off_and_on":
                parts = []
                for tol in ("0.1_points", "0.5_points"):
                    found_ = {m: e for m, e in per[tol].items() if e and m in STRUCTURED}
                    best = min(found_, default=None, key=lambda m: (
                        found_[m]["budget_flops_fraction"], -found_[m]["accuracy_mean"]))
                    parts.append(f"within {tol.split('_')[0]} points, "
                                 + (f"{method_name(best)} reaches {_cell(found_[best])}" if best
                                    else
                                    "no structured method reaches a budget tested"))
                answer.append(f"{name}, against the whole at its best ({refs[ref]:.2%}): "
                              f"{'; '.join(parts)}.")
        sections.append(Section(name, name, tuple(items)))
    sections.append(Section("published", "Published results on this architecture (MNIST)", (
        Table("published", "Structured pruning of LeNet-5-Caffe in the literature",
              ("source", "units conv1-conv2-dense", "error", "reduction"), PUBLISHED,
              reading="Trained for hundreds of epochs with sparsity-inducing objectives; ours "
                      "fine-tune for a fraction of an epoch."),)))
    sections.append(Section("provenance", "Provenance", (Table(
        "provenance", "How this was made", None,
        (("command", " ".join(result["command"])), ("config", json.dumps(result["config"])),
         ("versions", ", ".join(f"{k} {v}" for k, v in result["versions"].items())),
         ("seconds", str(result["seconds"])))),)))
    doc = Document(title="Subnetworks as good as the whole",
                   subject="The smallest subnetwork within 0.1 and 0.5 points of the whole, by "
                           "mask statistics, magnitude, TFMOT and random choice.",
                   facts=(("Datasets", ", ".join(result["datasets"])),
                          ("Seeds", str(len(result["config"]["seeds"]))),
                          ("Training epochs", str(result["config"]["epochs"])),
                          ("Fine-tuning epochs", str(result["config"]["finetune_epochs"]))),
                   answer=tuple(answer), sections=tuple(sections))
    write_document(doc, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    parser.add_argument("--epochs", type=int, default=12,
                        help="training epochs of the network analysed (default 12)")
    parser.add_argument("--convergence-epochs", nargs="*", type=int, default=[3, 6, 24],
                        help="other training lengths the whole network's accuracy is compared "
                             "with, to show whether --epochs trains to convergence (default "
                             "3 6 24)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.25, 0.125])
    parser.add_argument("--finetune-epochs", type=float, default=0.25)
    parser.add_argument("--steps-per-halving", type=int, default=2,
                        help="steps of iterative mask-statistics pruning per halving of the "
                             "FLOPs (default 2, as subnet.analyze's)")
    parser.add_argument("--work", default="out/analyses/subnetworks")
    parser.add_argument("--out", default="reports/subnetworks")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on the first N training examples only (a quick check)")
    parser.add_argument("--quick", action="store_true",
                        help="subnet.analyze's --quick settings for the record and selection")
    parser.add_argument("--no-report", action="store_true",
                        help="run the analyses only (e.g. one dataset at a time)")
    args = parser.parse_args(argv)
    start = time.time()

    def log(message):
        print(message, file=sys.stderr, flush=True)

    out = Path(args.out)
    found = {}
    for name in args.datasets:
        data = load(name, args.train_subset)
        trained(data, 500, epochs=args.epochs, seed=0, log=log)
        chosen = dict(dataset=name, seed=args.seeds[0], repeats=len(args.seeds),
                      budgets=tuple(args.budgets), methods=METHODS,
                      finetune_epochs=args.finetune_epochs,
                      steps_per_halving=args.steps_per_halving)
        settings = Settings.quick_settings(**chosen) if args.quick else Settings(**chosen)
        model_path = path_of(data, 500, epochs=args.epochs, seed=0)
        # One work folder per network and settings: a rerun resumes it, other settings start
        # their own.
        digest = hashlib.sha256(json.dumps(settings.cache_key(), sort_keys=True).encode())
        work = Path(args.work) / f"{model_path.stem}_{digest.hexdigest()[:8]}"
        command = ["python", "analyses/subnetworks.py", *(sys.argv[1:] if argv is None else argv)]
        results = analyze(model_path, work, settings, resume=True, command=command)
        (out / data.name).mkdir(parents=True, exist_ok=True)
        for file in ("report.html", "report.pdf", "results.json"):
            shutil.copyfile(work / file, out / data.name / file)
        found[data.name] = {**tables(results), "convergence": convergence(
            data, [*args.convergence_epochs, args.epochs], log)}
        log(f"{data.name}: done")
    if args.no_report:
        return 0
    result = {"command": ["python", "analyses/subnetworks.py",
                          *(sys.argv[1:] if argv is None else argv)],
              "config": {"datasets": args.datasets, "epochs": args.epochs,
                         "convergence_epochs": args.convergence_epochs, "seeds": args.seeds,
                         "budgets": args.budgets, "finetune_epochs": args.finetune_epochs,
                         "steps_per_halving": args.steps_per_halving,
                         "methods": METHODS},
              "versions": subnet.versions(), "datasets": found,
              "seconds": round(time.time() - start, 1)}
    atomic_write_text(out / "results.json", json.dumps(result, indent=1))
    write_report(result, out)
    print(json.dumps({name: {"references": f["references"], "smallest": f["smallest"]}
                      for name, f in found.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does test-time dropout say which predictions to trust, and does trimming keep it?

    python analyses/uncertainty.py [--parent reports/frontier/parents/parent_s0_ebb6eae430fd]
        [--passes 50] [--subnetworks 50] [--examples 10000] [--resamples 200]
        [--models reports/frontier/models] [--out reports/uncertainty]

On the blog's network (a frontier parent: 12 epochs on MNIST less its validation split) this
measures :func:`subnet.uncertainty` for every predictor subnet makes, on the MNIST test set, with
the Fashion-MNIST test set as out-of-distribution inputs:

- the deterministic network (dropout off) and one stochastic pass;
- the test-time-dropout ensemble of the first k of ``--passes`` passes, k = 1, 2, 5, 10, 20, 50;
- an ensemble of ``--subnetworks`` random unit subnetworks (each unit kept with probability 0.5);
- each subnetwork ``.keras`` file under ``--models`` (the frontier's smallest subnetworks),
  deterministic.

Prints one JSON object (per predictor: every metric with its bootstrap interval, and the seconds
its passes took), writes it to ``--out/results.json`` and writes ``--out/README.md``, the
analysis in words, generated from those numbers alone (``--readme-only`` rewrites it from an
existing results.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PASS_COUNTS = (1, 2, 5, 10, 20, 50)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parent", default="reports/frontier/parents/parent_s0_ebb6eae430fd")
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--subnetworks", type=int, default=50)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--models", default="reports/frontier/models")
    parser.add_argument("--out", default="reports/uncertainty")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readme-only", action="store_true",
                        help="rewrite --out/README.md from --out/results.json, computing nothing")
    args = parser.parse_args(argv)
    if args.readme_only:
        results = json.loads((Path(args.out) / "results.json").read_text())
        (Path(args.out) / "README.md").write_text(readme(results))
        return 0

    import subnet
    from subnet._io import atomic_write_text
    from subnet.predictive import deterministic, dropout_passes, uncertainty, unit_subnetworks

    mnist = subnet.load_dataset("mnist").subset(n_test=args.examples)
    fashion = subnet.load_dataset("fashion_mnist").subset(n_test=args.examples)
    x, y, x_ood = mnist.x_test, mnist.y_test, fashion.x_test
    model = subnet.load_model(Path(args.parent) / "parent.keras")
    results, timings = {}, {}

    def measure(name, make):
        start = time.perf_counter()
        inside, outside = make(x), make(x_ood)
        timings[name] = round(time.perf_counter() - start, 1)
        return inside, outside

    def add(name, inside, outside):
        result = uncertainty(inside, y, ood=outside, resamples=args.resamples, seed=args.seed)
        results[name] = {"passes": result.n_passes, "seconds": timings.get(name),
                         **result.to_dict()}
        print(f"uncertainty: {name}: accuracy {result.metrics['accuracy'].value:.4f}, "
              f"error AUROC (entropy) "
              f"{result.metrics['error_auroc_predictive_entropy'].value:.3f}, OOD AUROC "
              f"{result.metrics['ood_auroc_predictive_entropy'].value:.3f}", file=sys.stderr)

    add("deterministic", *measure("deterministic", lambda v: deterministic(model, v)))
    passes, passes_ood = measure(
        "dropout", lambda v: dropout_passes(model, v, args.passes, seed=args.seed))
    for k in PASS_COUNTS:
        if k <= args.passes:
            timings[f"dropout_{k}"] = round(timings["dropout"] * k / args.passes, 1)
            add(f"dropout_{k}", passes[:k], passes_ood[:k])
    add(f"unit_subnetworks_{args.subnetworks}", *measure(
        f"unit_subnetworks_{args.subnetworks}",
        lambda v: unit_subnetworks(model, v, args.subnetworks, seed=args.seed)))
    for path in sorted(Path(args.models).glob("*.keras")):
        small = subnet.load_model(path)
        add(f"subnetwork:{path.name}", *measure(f"subnetwork:{path.name}",
                                                lambda v, m=small: deterministic(m, v)))
    training = json.loads((Path(args.parent) / "training.json").read_text())
    out = {"parent": str(args.parent), "parent_epochs": training.get("epochs"),
           "examples": len(y), "ood": "fashion_mnist test",
           "resamples": args.resamples, "seed": args.seed, "versions": subnet.versions(),
           "predictors": results, "dropout_seconds_all_passes": timings["dropout"]}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out) / "results.json", json.dumps(out, indent=1))
    atomic_write_text(Path(args.out) / "README.md", readme(out))
    print(json.dumps({name: {k: v["value"] for k, v in r["metrics"].items()
                             if k in ("accuracy", "nll", "ece", "error_auroc_predictive_entropy",
                                      "error_auroc_mutual_information",
                                      "ood_auroc_predictive_entropy",
                                      "ood_auroc_mutual_information")}
                      for name, r in results.items()}))
    return 0


def _est(metric: dict | None, pct: bool = False) -> str:
    if not metric or metric.get("value") is None:
        return "—"
    f = (lambda v: f"{100 * v:.2f} %") if pct else (lambda v: f"{v:.3f}")
    return f"{f(metric['value'])} [{f(metric['low'])}, {f(metric['high'])}]"


def _compare(a: dict, b: dict) -> str:
    """'higher' / 'lower' when the 95 % intervals do not overlap, else 'within the intervals of'."""
    if None in (a.get("low"), a.get("high"), b.get("low"), b.get("high")):
        return "not comparable with (undefined)"
    if a["low"] > b["high"]:
        return "higher than"
    if a["high"] < b["low"]:
        return "lower than"
    return "within the intervals of"


def _parent_epochs(results: dict):
    """The parent's training epochs: recorded in the results, else read from its folder."""
    if results.get("parent_epochs") is not None:
        return results["parent_epochs"]
    path = Path(results["parent"]) / "training.json"
    return json.loads(path.read_text()).get("epochs", "?") if path.exists() else "?"


def readme(results: dict) -> str:
    """The analysis in words, every number read from ``results`` (this script's JSON)."""
    p = results["predictors"]
    k_max = max(int(k.split("_")[1]) for k in p if k.startswith("dropout_"))
    det, ens = p["deterministic"]["metrics"], p[f"dropout_{k_max}"]["metrics"]
    one = p["dropout_1"]["metrics"]
    subnetworks = [k for k in p if k.startswith("subnetwork:")]
    units = [k for k in p if k.startswith("unit_subnetworks_")]
    rows = []
    for name, entry in p.items():
        m = entry["metrics"]
        rows.append(f"| {name} | {_est(m['accuracy'], True)} | {_est(m['nll'])} | "
                    f"{_est(m['ece'])} | {_est(m['error_auroc_predictive_entropy'])} | "
                    f"{_est(m['error_auroc_mutual_information'])} | "
                    f"{_est(m['ood_auroc_predictive_entropy'])} | "
                    f"{_est(m['ood_auroc_mutual_information'])} |")
    passes = [int(k.split("_")[1]) for k in p if k.startswith("dropout_")]
    floor = ens["error_auroc_predictive_entropy"]["low"]
    reached = [k for k in passes
               if (p[f"dropout_{k}"]["metrics"]["error_auroc_predictive_entropy"]["value"]
                   or 0.0) >= (floor if floor is not None else 1.0)]
    need = min(reached, default=k_max)
    lines = [
        "# How good is test-time dropout's uncertainty, and does trimming keep it?",
        "",
        f"Generated by `python analyses/uncertainty.py` from `results.json` (every number below "
        f"is read from it). The network: `{results['parent']}` (the blog's network, "
        f"{_parent_epochs(results)} epochs). "
        f"In distribution: the first {results['examples']:,} MNIST test images; out of "
        f"distribution: the {results['ood']} images. Intervals: 95 % percentile bootstrap over "
        f"examples ({results['resamples']} resamples). The {k_max} dropout passes over "
        f"{2 * results['examples']:,} images took {results['dropout_seconds_all_passes']:.0f} s "
        "on this 2-core machine while other work ran.",
        "",
        "## Does test-time dropout flag errors and unfamiliar inputs better than the softmax?",
        "",
        f"Errors: the predictive entropy of the {k_max}-pass ensemble separates wrong from right "
        f"predictions with AUROC {_est(ens['error_auroc_predictive_entropy'])}, "
        f"{_compare(ens['error_auroc_predictive_entropy'], det['error_auroc_predictive_entropy'])}"
        f" the deterministic network's softmax entropy "
        f"({_est(det['error_auroc_predictive_entropy'])}); its mutual information (the part of "
        f"the uncertainty that comes from the dropout masks) reaches "
        f"{_est(ens['error_auroc_mutual_information'])}. Out of distribution: entropy AUROC "
        f"{_est(ens['ood_auroc_predictive_entropy'])} for the ensemble against "
        f"{_est(det['ood_auroc_predictive_entropy'])} for the deterministic network "
        f"({_compare(ens['ood_auroc_predictive_entropy'], det['ood_auroc_predictive_entropy'])}"
        f" it); mutual information {_est(ens['ood_auroc_mutual_information'])}. The ensemble's "
        f"accuracy {_est(ens['accuracy'], True)} is {_compare(ens['accuracy'], det['accuracy'])}"
        f" the deterministic network's {_est(det['accuracy'], True)}; its expected calibration "
        f"error {_est(ens['ece'])} is {_compare(ens['ece'], det['ece'])} "
        f"{_est(det['ece'])}, its NLL {_est(ens['nll'])} {_compare(ens['nll'], det['nll'])} "
        f"{_est(det['nll'])}. A single stochastic pass: accuracy {_est(one['accuracy'], True)}, "
        f"error AUROC {_est(one['error_auroc_predictive_entropy'])}. (Mutual information is 0 "
        "for a single prediction, so its AUROC is 0.5 there.)",
        "",
        "## How many passes does it need?",
        "",
        f"Passes measured: {', '.join(map(str, sorted(passes)))}. The first number of passes "
        f"whose error-detection AUROC reaches the lower end of the {k_max}-pass interval: "
        f"{need}. See the table for accuracy, NLL and calibration by passes.",
    ]
    if units:
        u = p[units[0]]["metrics"]
        lines += ["", f"An ensemble of random *unit* subnetworks ({units[0].split('_')[-1]} of "
                  "them, each unit kept with probability 0.5: whole units dropped, not the "
                  f"blog's single elements): accuracy {_est(u['accuracy'], True)} "
                  f"({_compare(u['accuracy'], ens['accuracy'])} the {k_max}-pass dropout "
                  f"ensemble's), calibration error {_est(u['ece'])} "
                  f"({_compare(u['ece'], ens['ece'])} it), NLL {_est(u['nll'])} "
                  f"({_compare(u['nll'], ens['nll'])} it)."]
    if subnetworks:
        lines += ["", "## Do the trimmed subnetworks keep the whole's uncertainty?", ""]
        err, ood = "error_auroc_predictive_entropy", "ood_auroc_predictive_entropy"
        for name in subnetworks:
            m = p[name]["metrics"]
            lines.append(
                f"`{name.split(':', 1)[1]}` (deterministic): accuracy {_est(m['accuracy'], True)}"
                f", NLL {_est(m['nll'])}, calibration error {_est(m['ece'])} "
                f"({_compare(m['ece'], det['ece'])} the whole deterministic network's), error "
                f"AUROC {_est(m[err])} ({_compare(m[err], det[err])} the whole's), "
                f"out-of-distribution AUROC {_est(m[ood])} ({_compare(m[ood], det[ood])} the "
                "whole's).")
        lines += ["", "Where the evidence is weak: one parent network, one subnetwork per file, "
                  "and the intervals are over test examples only (not over training seeds)."]
    lines += ["", "## Every predictor", "",
              "| predictor | accuracy | NLL | ECE | error AUROC (entropy) | error AUROC (MI) | "
              "OOD AUROC (entropy) | OOD AUROC (MI) |",
              "|---|---|---|---|---|---|---|---|", *rows, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

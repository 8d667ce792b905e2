"""Subnetworks of the blog's model vs magnitude pruning, at equal FLOP budgets. Prints JSON.

    python analyses/compare_blog_model.py [--model out/demo/seed.keras] [--finetune-epochs 1]
        [--methods banzhaf_iterative magnitude random taylor tfmot reinit] [--seeds 0 1 2]
        [--steps-per-halving 2] [--step-masks 500] [--out out/compare/comparison.json]

Budgets are 1/2, 1/4, 1/8, 1/16 and 1/32 of the dense model's FLOPs. Each method chooses units on
held-out training examples, the subnetwork is extracted and fine-tuned, and accuracies are
measured on the MNIST test set. TFMOT prunes the dense model by magnitude to the same number of
nonzero weights as the mask-statistics subnetwork. The results stream into ``--out`` (resumed
when rerun). The last line printed is one JSON object with ``dense_accuracy``, ``results`` (one
row per method, budget and seed), a per-(method, budget) summary, the smallest network each
method reached at <= 1.0 % error, the issue's targets checked, and size/latency ratios of the
extracted subnetworks to TFMOT's models.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import subnet
from subnet.comparison import compare
from subnet.methods import resolve

BUDGETS = (1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32)
KEYS = ("method", "budget_flops_fraction", "seed", "params", "flops", "accuracy_oneshot",
        "accuracy_finetuned")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="out/demo/seed.keras")
    parser.add_argument("--finetune-epochs", type=float, default=1.0)
    parser.add_argument("--methods", nargs="+",
                        default=["banzhaf_iterative", "magnitude", "random", "taylor", "tfmot",
                                 "reinit"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--masks", type=int, default=2000,
                        help="masks of the one-record ranking (banzhaf_single)")
    parser.add_argument("--steps-per-halving", type=int, default=2,
                        help="steps per halving of the FLOPs of iterative pruning "
                        "(banzhaf_iterative)")
    parser.add_argument("--step-masks", type=int, default=500,
                        help="masks recorded at each of those steps")
    parser.add_argument("--selection-examples", type=int, default=2000,
                        help="held-out training examples the units are chosen on")
    parser.add_argument("--out", default="out/compare/comparison.json")
    args = parser.parse_args(argv)
    args.methods = [resolve(m) for m in args.methods]  # an old key reads as the key it has now
    start = time.time()
    model_path = Path(args.model)
    if not model_path.exists():
        print(f"{model_path} is missing: run `make demo` first", file=sys.stderr)
        return 2
    model = subnet.load_model(model_path)
    data = subnet.load_dataset("mnist")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = compare(model, data, args.methods, BUDGETS, args.seeds,
                     finetune_epochs=args.finetune_epochs, n_masks=args.masks,
                     steps_per_halving=args.steps_per_halving, step_masks=args.step_masks,
                     selection_examples=args.selection_examples, out=args.out)
    dense_accuracy = result.dense["accuracy"]
    rows = [{k: r[k] for k in KEYS} | {"widths": r.get("widths")} for r in result.rows]
    summary = result.summary()
    smallest = {}  # per method: the fewest FLOPs at <= 1.0 % error (mean of the seeds)
    for entry in sorted(summary, key=lambda e: e["flops"]):
        if entry["method"] in smallest or entry["method"] == "tfmot" or \
                entry["accuracy_finetuned_mean"] is None or \
                1 - entry["accuracy_finetuned_mean"] > 0.01:
            continue
        widths = [r["widths"] for r in result.rows if r["method"] == entry["method"] and
                  r["budget_flops_fraction"] == entry["budget_flops_fraction"]]
        smallest[entry["method"]] = {**entry, "widths_per_seed": widths,
                                     "flops_reduction": result.dense["flops"] / entry["flops"]}
    ratios = []
    for r in result.rows:
        if r["method"] == "tfmot" and "measure" in r:
            twin = next((t for t in result.rows if t["method"] == args.methods[0] and
                         t["seed"] == r["seed"] and "measure" in t and
                         t["budget_flops_fraction"] == r["budget_flops_fraction"]), None)
            if twin:
                ratios.append({
                    "budget_flops_fraction": r["budget_flops_fraction"],
                    "nonzero_params": r.get("nonzero_params"),
                    "latency_ratio_extracted_to_tfmot": twin["measure"]["latency_ms_per_example"]
                    / r["measure"]["latency_ms_per_example"],
                    "gzip_ratio_extracted_to_tfmot": twin["measure"]["gzip_bytes"] /
                    r["measure"]["gzip_bytes"],
                    "accuracy_extracted": twin["accuracy_finetuned"],
                    "accuracy_tfmot": r["accuracy_finetuned"]})
    mc = subnet.mc_dropout(model, data.x_test, data.y_test, samples=10, seed=0).summary()
    references = {"dense_dropout_off": dense_accuracy,
                  "dense_dropout_on_mean_of_10_passes": mc["accuracy"],
                  "dense_finetuned_same_budget": (result.dense.get("finetuned") or {}).get(
                      "accuracy_mean")}
    print(json.dumps({"dense_accuracy": dense_accuracy, "references": references,
                      "targets": targets(summary, references, result.dense["flops"],
                                         args.methods[0]),
                      "dense_flops": result.dense["flops"],
                      "dense_params": result.dense["params"], "config": result.config,
                      "summary": summary, "smallest_within_1pct_error_by_method": smallest,
                      "extracted_vs_tfmot": ratios, "seconds": round(time.time() - start, 1),
                      "results": rows}, default=_json_default))
    return 0


def targets(summary: list[dict], references: dict, dense_flops: int, method: str) -> dict:
    """The issue's targets, checked: ``method`` (mask statistics) one-shot against magnitude and
    random at every budget, and fine-tuned at >= 10x fewer FLOPs against each reference."""
    cells = {(e["method"], e["budget_flops_fraction"]): e for e in summary}
    oneshot = {}
    for (name, budget), entry in sorted(cells.items(), key=lambda item: -item[0][1]):
        if name != method:
            continue
        others = {o: cells[(o, budget)]["accuracy_oneshot_mean"] for o in ("magnitude", "random")
                  if (o, budget) in cells}
        oneshot[f"{budget:.6g}"] = {"mask_statistics": entry["accuracy_oneshot_mean"], **others,
                                    "beats_all": all(entry["accuracy_oneshot_mean"] > v
                                                     for v in others.values())}
    small = [e for (name, _), e in cells.items() if name == method and
             dense_flops / e["flops"] >= 10 and e["accuracy_finetuned_mean"] is not None]
    best = max(small, key=lambda e: e["accuracy_finetuned_mean"], default=None)
    within = None
    if best is not None:
        within = {"budget_flops_fraction": best["budget_flops_fraction"],
                  "flops_reduction": dense_flops / best["flops"],
                  "accuracy_finetuned_mean": best["accuracy_finetuned_mean"],
                  **{f"within_0.1_points_of_{k}": best["accuracy_finetuned_mean"] >= v - 0.001
                     for k, v in references.items() if v is not None}}
    return {"oneshot_beats_magnitude_and_random": oneshot, "ten_x_fewer_flops": within}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())

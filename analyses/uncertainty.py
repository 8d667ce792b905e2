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
its passes took) and writes it to ``--out/results.json``.
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
    args = parser.parse_args(argv)

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
    out = {"parent": str(args.parent), "examples": len(y), "ood": "fashion_mnist test",
           "resamples": args.resamples, "seed": args.seed, "versions": subnet.versions(),
           "predictors": results, "dropout_seconds_all_passes": timings["dropout"]}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out) / "results.json", json.dumps(out, indent=1))
    print(json.dumps({name: {k: v["value"] for k, v in r["metrics"].items()
                             if k in ("accuracy", "nll", "ece", "error_auroc_predictive_entropy",
                                      "error_auroc_mutual_information",
                                      "ood_auroc_predictive_entropy",
                                      "ood_auroc_mutual_information")}
                      for name, r in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Size and latency of extracted subnetworks against TFMOT-shaped models at equal nonzero weights.

    python analyses/size_latency_vs_tfmot.py [--model out/demo/seed.keras]
        [--comparison out/compare/comparison.json] [--method banzhaf] [--seed 0]

For each budget of a finished comparison (``analyses/compare_blog_model.py``), the subnetwork of
``--method``'s widths is extracted from the model, and the model's kernels are pruned by magnitude
to the same number of nonzero weights, keeping the dense shape (what TFMOT stores). Both are
measured the same way (:func:`subnet.measure`: gzipped ``.keras`` file without optimizer state,
median CPU latency per example). Prints one JSON list, one entry per budget, with the ratios
extracted / TFMOT-shaped. Weight values do not change the shapes or the latency, and change the
gzipped size only through the zeros, so untrained copies stand in for the fine-tuned models.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import subnet
from subnet.baselines.tfmot import kernel_sparsity, magnitude_oneshot
from subnet.comparison import Comparison
from subnet.extraction import as_keep_set


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="out/demo/seed.keras")
    parser.add_argument("--comparison", default="out/compare/comparison.json")
    parser.add_argument("--method", default="banzhaf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per model")
    args = parser.parse_args(argv)
    model = subnet.with_dropout(subnet.load_model(args.model), on=False)
    rows = [r for r in Comparison.load(args.comparison).rows
            if r["method"] == args.method and r["seed"] == args.seed]
    if not rows:
        print(f"{args.comparison} has no rows of method {args.method!r} and seed {args.seed}",
              file=sys.stderr)
        return 2
    whole = as_keep_set(model, {})
    out = []
    for row in sorted(rows, key=lambda r: -r["budget_flops_fraction"]):
        bits = {s.name: np.arange(s.units) < row["widths"][s.name] for s in whole.sites}
        small, keep = subnet.extract(model, bits)
        shaped = magnitude_oneshot(model, kernel_sparsity(model, keep.params))
        a = subnet.measure(small, repeats=args.repeats)
        b = subnet.measure(shaped, repeats=args.repeats)
        out.append({"budget_flops_fraction": row["budget_flops_fraction"],
                    "params": keep.params, "tfmot_shape_nonzero": b["nonzero_params"],
                    "gzip_bytes_extracted": a["gzip_bytes"], "gzip_bytes_tfmot": b["gzip_bytes"],
                    "gzip_ratio": round(a["gzip_bytes"] / b["gzip_bytes"], 3),
                    "latency_us_extracted": round(a["latency_ms_per_example"] * 1000, 2),
                    "latency_us_tfmot": round(b["latency_ms_per_example"] * 1000, 2),
                    "latency_ratio": round(a["latency_ms_per_example"] /
                                           b["latency_ms_per_example"], 3)})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

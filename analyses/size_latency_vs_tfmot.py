"""Size and latency of extracted subnetworks, before and after fine-tuning, against TFMOT-shaped
models at equal nonzero weights, with latency as a ratio to the dense model timed alongside.

    python analyses/size_latency_vs_tfmot.py [--model out/demo/seed.keras]
        [--comparison out/compare/comparison.json] [--method banzhaf_iterative] [--seed 0]
        [--budgets 0.5 0.25] [--repeats 50]

The widths of each subnetwork are ``--method``'s in a finished comparison
(``analyses/compare_blog_model.py``) if ``--comparison`` exists, else the same fraction of
every site's units (``allocation="uniform"``) for each FLOPs fraction of ``--budgets``. The
model is ``--model`` if it exists, else the blog's network (:func:`subnet.seed_cnn` with 500
units), untrained: weight values do not change the shapes or the latency, and change the
gzipped size only through the zeros.

For each budget the subnetwork is extracted and measured (:func:`subnet.measure`), then trained
for a few steps, which compiles it with Adam as :func:`subnet.finetune` does, and measured
again: the file must not grow (a compiled model's file used to carry Adam's two extra copies of
the weights). The model's kernels are also pruned by magnitude to the same number of nonzero
weights, keeping the dense shape (what TFMOT stores). Every measurement times the model in
alternation with the dense model (``reference=``), so the latency ratios are robust to the load
of a shared machine. Prints one JSON object: the dense model's size and the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import subnet
from subnet.baselines.tfmot import kernel_sparsity, magnitude_oneshot
from subnet.comparison import Comparison
from subnet.extraction import as_keep_set
from subnet.methods import resolve
from subnet.train import fit


def _widths(model, args) -> list[tuple[float, dict[str, int]]]:
    whole = as_keep_set(model, {})
    if Path(args.comparison).is_file():
        rows = [r for r in Comparison.load(args.comparison).rows
                if r["method"] == resolve(args.method) and r["seed"] == args.seed]
        return [(r["budget_flops_fraction"], r["widths"])
                for r in sorted(rows, key=lambda r: -r["budget_flops_fraction"])]
    flat = subnet.Importance("flat", np.zeros(whole.sites.n_units), whole.sites)
    return [(f, subnet.keep_sets(flat, subnet.Budget.flops(f), model, allocation="uniform").widths)
            for f in args.budgets]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="out/demo/seed.keras")
    parser.add_argument("--comparison", default="out/compare/comparison.json")
    parser.add_argument("--method", default="banzhaf_iterative")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25],
                        help="FLOPs fractions, without a comparison")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per model")
    args = parser.parse_args(argv)
    if Path(args.model).is_file():
        model = subnet.with_dropout(subnet.load_model(args.model), on=False)
        source = args.model
    else:
        model = subnet.with_dropout(subnet.seed_cnn(500, seed=args.seed), on=False)
        source = "seed_cnn(500), untrained"
    widths = _widths(model, args)
    if not widths:
        print(f"{args.comparison} has no rows of method {args.method!r} and seed {args.seed}",
              file=sys.stderr)
        return 2
    whole = as_keep_set(model, {})
    dense = subnet.measure(model, repeats=args.repeats)
    rng = np.random.default_rng(args.seed)
    x = rng.random((256,) + tuple(model.inputs[0].shape[1:]), dtype=np.float32)
    y = rng.integers(0, int(model.outputs[0].shape[-1]), len(x))
    out = []
    for fraction, width in widths:
        bits = {s.name: np.arange(s.units) < width[s.name] for s in whole.sites}
        small, keep = subnet.extract(model, bits)
        before = subnet.measure(small, repeats=args.repeats, reference=model)
        fit(small, x, y, examples=len(x), progress=False, seed=args.seed)
        after = subnet.measure(small, repeats=args.repeats, reference=model)
        shaped = magnitude_oneshot(model, kernel_sparsity(model, keep.params))
        tfmot = subnet.measure(shaped, repeats=args.repeats, reference=model)
        out.append({
            "budget_flops_fraction": fraction, "widths": keep.widths, "params": keep.params,
            "flops": keep.flops, "tfmot_shape_nonzero": tfmot["nonzero_params"],
            "file_bytes_extracted": before["file_bytes"],
            "file_bytes_extracted_finetuned": after["file_bytes"],
            "file_bytes_tfmot": tfmot["file_bytes"],
            "gzip_bytes_extracted": before["gzip_bytes"],
            "gzip_bytes_extracted_finetuned": after["gzip_bytes"],
            "gzip_bytes_tfmot": tfmot["gzip_bytes"],
            "gzip_ratio_extracted_to_tfmot": round(before["gzip_bytes"] / tfmot["gzip_bytes"], 3),
            "latency_ratio_to_dense_extracted": round(before["latency_ratio"], 3),
            "latency_ratio_to_dense_extracted_finetuned": round(after["latency_ratio"], 3),
            "latency_ratio_to_dense_tfmot": round(tfmot["latency_ratio"], 3),
            "latency_us_extracted": round(before["latency_ms_per_example"] * 1000, 2),
            "latency_us_dense_alongside": round(
                before["reference_latency_ms_per_example"] * 1000, 2)})
    print(json.dumps({"model": source, "repeats": args.repeats, "batch_size": dense["batch_size"],
                      "dense": {"params": dense["params"], "flops": dense["flops"],
                                "file_bytes": dense["file_bytes"],
                                "gzip_bytes": dense["gzip_bytes"],
                                "latency_us": round(dense["latency_ms_per_example"] * 1000, 2)},
                      "rows": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: recording masks on a graph model (the ResNet-20 layout) against the naive loop.

    python benchmarks/bench_graph.py [--masks 64] [--examples 500] [--width 4] [--repeats 3]

The ResNet-20 layout (3 stages x 3 basic blocks, projection shortcuts; ``tests/zoo.py``) on
32x32x3 inputs made from MNIST test images (padded, tiled to 3 channels) is recorded under
``--masks`` masks with :func:`subnet.record_masks` by each of ``--backends`` (``graph``: each mask
runs its sliced subnetwork; ``reference``: the structure's masked model, XLA-compiled over blocks
of (mask, example) rows), and the same (mask, example) pairs are evaluated the naive
way: the same masked model, ``predict`` once per mask. Both run in this process, alternating
``--repeats`` times, so the ratio holds on a busy machine where absolute times do not. Prints one
JSON object: rates in evaluations per second, their ratio (best of the repeats each), the model's
FLOPs per example, and the peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import subnet  # noqa: E402
from subnet.masks import sample_masks  # noqa: E402
from subnet.structure import channel_groups  # noqa: E402


def _data(examples: int):
    data = subnet.load_dataset("mnist").subset(n_test=examples)
    x = np.pad(data.x_test, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return np.repeat(x, 3, axis=-1).astype(np.float32), data.y_test


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masks", type=int, default=64)
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="graph,reference",
                        help="record backends to time, comma-separated")
    args = parser.parse_args(argv)
    from tests import zoo

    model = zoo.resnet20_layout(width=args.width)
    x, y = _data(args.examples)
    zoo.calibrate_batch_norm(model, x[:64])
    s = channel_groups(model)
    table = subnet.sites(model, rate=0.5)
    masks = sample_masks(table.unit_keep(), 0, range(args.masks))
    values = masks.astype(np.float32) / table.unit_keep().astype(np.float32)
    masked = s.masked_model()
    pairs = args.masks * len(x)
    backends = args.backends.split(",")
    recorded, naive = {b: [] for b in backends}, []
    for _ in range(args.repeats):
        for backend in backends:
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                subnet.record_masks(model, x, y, n_masks=args.masks, rate=0.5, seed=0,
                                    backend=backend, out=Path(folder) / "r", progress=False)
                recorded[backend].append(time.perf_counter() - start)
        start = time.perf_counter()
        for row in values:
            masked.predict([x, np.repeat(row[None], len(x), axis=0)], verbose=0,
                           batch_size=len(x))
        naive.append(time.perf_counter() - start)
    result = {
        "model": f"ResNet-20 layout, width {args.width}", "flops_per_example": s.cost()["flops"],
        "sites": len(s.sites), "units": s.n_units, "masks": args.masks,
        "examples": len(x), "repeats": args.repeats,
        "naive_evals_per_s": pairs / min(naive),
        "naive_seconds": [round(t, 2) for t in naive],
        "backends": {b: {"record_evals_per_s": pairs / min(t),
                         "ratio_to_naive": min(naive) / min(t),
                         "record_seconds": [round(v, 2) for v in t]}
                     for b, t in recorded.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

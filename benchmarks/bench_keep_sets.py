"""Benchmark: choosing a subnetwork under a budget (:func:`subnet.keep_sets`) on large graphs.

    python benchmarks/bench_keep_sets.py [--models resnet50,densenet121] [--budget 0.25]

Keras's ResNet50 and DenseNet121 (random weights, 32x32x3 inputs, 10 classes), L1 magnitude
scores, one FLOPs budget, every allocation. The greedy allocations price each candidate unit
from an incremental cost state (:meth:`subnet.structure.CostModel.grow`), one product over the
layers per step. Prints one JSON object: seconds per model and allocation (target: <= 10 s
each), with the number of units and the FLOPs kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from subnet.extraction import ALLOCATIONS, Budget, keep_sets  # noqa: E402
from subnet.importance import estimate  # noqa: E402

MODELS = ("resnet50", "densenet121", "efficientnetv2b0")


def _model(name: str):
    import keras

    build = {"resnet50": keras.applications.ResNet50,
             "densenet121": keras.applications.DenseNet121,
             "efficientnetv2b0": keras.applications.EfficientNetV2B0}[name]
    return build(weights=None, input_shape=(32, 32, 3), classes=10)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,densenet121")
    parser.add_argument("--budget", type=float, default=0.25, help="FLOPs fraction kept")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown or not 0 < args.budget < 1:
        parser.error(f"--models from {list(MODELS)} and --budget in (0, 1); received "
                     f"{args.models!r}, {args.budget!r}")
    out = {"budget": args.budget, "models": {}}
    rng = np.random.default_rng(0)
    for name in names:
        model = _model(name)
        x = rng.random((8, 32, 32, 3), dtype=np.float32)
        importance = estimate((model, x, np.zeros(8, int)), "magnitude", rate=0.5)
        rows = {}
        for allocation in ALLOCATIONS:
            start = time.perf_counter()
            keep = keep_sets(importance, Budget.flops(args.budget), model, allocation=allocation)
            rows[allocation] = {"seconds": round(time.perf_counter() - start, 2),
                                "flops_kept": round(keep.flops / keep.dense_flops, 4)}
        out["models"][name] = {"units": int(len(importance.scores)), "allocations": rows}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

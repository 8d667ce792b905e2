"""Benchmark: what Ray costs and gives on this machine, against one process, in one run.

    python benchmarks/bench_distributed.py [--model reports/frontier/parents/.../parent.keras]
        [--masks 512] [--examples 2000] [--grid-examples 1000] [--skip-grid]

(b) **Record**: the blog's network (dropout off) recorded under ``--masks`` masks on the first
``--examples`` MNIST test examples, by one process with TensorFlow's default threads (this
machine's cores), and by a local Ray instance with one single-threaded worker per core
(:class:`subnet.RayExecutor`, chunk tasks). Ray's time is given with and without starting the
instance and its workers (a warm-up task imports TensorFlow in each worker first). The records
are compared chunk file for chunk file; TensorFlow's matrix products on CPU sum in an order
that depends on its thread count, so records made with 1 and 2 threads per process can differ in
the last bits of a stored probability: the number of predictions that differ and the largest
difference in a stored probability are printed beside.

(c) **Comparison grid**: ``python -m subnet.analyze``'s comparison at ``make demo``'s settings
(methods banzhaf, magnitude, random and TFMOT; budgets 1/2, 1/8, 1/32; one seed; a quarter-epoch
fine-tune; masks and examples as given), sequential against 2 Ray workers; the rows are checked
to be equal.

Prints one JSON object: seconds of each side, the ratios, the machine's cores and load. On a
machine whose cores are busy with other work the ratios are what this machine gave at that
load, stated beside them.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_MODEL = ROOT / "reports/frontier/parents/parent_s0_ebb6eae430fd/parent.keras"


def _same_chunks(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("chunk_*.npz"))
    return names == sorted(p.name for p in b.glob("chunk_*.npz")) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def _record_bench(model, data, args, executor_factory) -> dict:
    from subnet.record import MaskRecord, record_masks, site_rates

    rate = site_rates(model, None)
    deterministic = __import__("subnet").with_dropout(model, on=False)
    x, y = data.x_test[:args.examples], data.y_test[:args.examples]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        record_masks(deterministic, x, y, args.masks, seed=0, rate=rate, out=Path(folder) / "a",
                     progress=False)
        one_process = time.perf_counter() - start
        start = time.perf_counter()
        with executor_factory() as executor:
            list(executor.map_unordered(_warm_up, [()] * (os.cpu_count() or 1)))
            warm = time.perf_counter()
            record_masks(deterministic, x, y, args.masks, seed=0, rate=rate,
                         out=Path(folder) / "b", progress=False, executor=executor)
            done = time.perf_counter()
        same = _same_chunks(Path(folder) / "a", Path(folder) / "b")
        a, b = (MaskRecord.load(Path(folder) / n) for n in "ab")
        differences = {"predicted_differ": int((a.predicted != b.predicted).sum()),
                       "true_prob_max_difference": float(abs(a.true_prob.astype("float64") -
                                                             b.true_prob).max())}
    return {"masks": args.masks, "examples": len(y), "one_process_seconds": round(one_process, 1),
            "ray_seconds": round(done - warm, 1),
            "ray_seconds_with_start": round(done - start, 1),
            "ray_over_one_process": round((done - warm) / one_process, 3),
            "same_record": same, **differences}


def _warm_up():
    import tensorflow  # noqa: F401  (each worker pays the import once)

    return os.getpid()


def _grid_bench(model, data, args, executor_factory) -> dict:
    from subnet.comparison import compare

    deterministic = __import__("subnet").with_dropout(model, on=False)
    settings = dict(methods=("banzhaf", "magnitude", "random", "tfmot"),
                    budgets=(1 / 2, 1 / 8, 1 / 32), seeds=(0,), finetune_epochs=0.25,
                    selection_examples=1000, n_masks=args.masks, steps_per_halving=2,
                    step_masks=250, measure_latency=False, progress=False,
                    rate=0.5)  # the blog's rate: the deterministic copy has no Dropout left
    test = data.subset(n_test=args.grid_examples)
    start = time.perf_counter()
    sequential = compare(deterministic, test, **settings)
    one_process = time.perf_counter() - start
    with executor_factory() as executor:
        list(executor.map_unordered(_warm_up, [()] * (os.cpu_count() or 1)))
        start = time.perf_counter()
        distributed = compare(deterministic, test, executor=executor, **settings)
        ray_seconds = time.perf_counter() - start

    def clean(rows):
        return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]

    return {"cells": len(sequential.rows), "sequential_seconds": round(one_process, 1),
            "ray_seconds": round(ray_seconds, 1),
            "speedup": round(one_process / ray_seconds, 3),
            "same_rows": clean(sequential.rows) == clean(distributed.rows)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--masks", type=int, default=512)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--grid-examples", type=int, default=1000)
    parser.add_argument("--skip-grid", action="store_true")
    args = parser.parse_args(argv)
    import subnet
    from subnet.distributed import RayExecutor

    model = subnet.load_model(args.model)
    data = subnet.load_dataset("mnist")
    cores = os.cpu_count() or 1

    def factory():
        return RayExecutor("local", num_cpus=cores, threads_per_task=1)

    result = {"model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT)
                           else args.model),
              "cpu_count": cores, "load_average_1min_before": round(os.getloadavg()[0], 2),
              "record": _record_bench(model, data, args, factory)}
    if not args.skip_grid:
        result["grid"] = _grid_bench(model, data, args, factory)
    result["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

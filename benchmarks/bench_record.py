"""Benchmark: recording masks with the fast backend vs the blog's way, in one process.

    python benchmarks/bench_record.py [--model out/demo/seed.keras] [--masks 1000]
        [--examples 10000]

On the blog's model (trained weights; it is trained first if the file is missing) this records
``--masks`` masks × ``--examples`` MNIST test examples with the fast backend, then evaluates the
same number of (mask, example) pairs the naive way the blog would: the Keras model with its
dropout switched on, ``predict`` repeated; and the honest floor, one plain forward pass per mask
(``predict`` with dropout off, what the reference masked model costs). It prints one JSON
object: the rates in evaluations per second and their ratios, the fast path's achieved FLOP/s
as a fraction of this machine's float32 matrix-multiply FLOP/s (measured here, in the same
process), and the peak resident memory.

``--backend reference`` (or ``graph``) records with another backend instead, e.g. on a GPU, where
the reference backend's XLA-compiled blocks may be the faster; the ``fast_*`` keys then
describe that backend, ``backend`` names it and ``devices`` lists the GPUs TensorFlow sees.

Note that the two sides draw different random subnetworks: the record drops whole units
(channels), the blog's dropout drops single elements. The rates compare the work, not the
accuracies.
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

import subnet
from subnet.engine.chain import analyse_chain, layer_flops
from subnet.engine.fast import FastBackend
from subnet.masks import sample_masks


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _matmul_flops(seconds: float = 3.0) -> float:
    """Best float32 FLOP/s of a 2048² matrix product here (TensorFlow, as the engine uses)."""
    import tensorflow as tf

    n = 2048
    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)
    tf.matmul(a, b).numpy()
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def _ensure_model(path: Path) -> Path:
    if path.exists():
        return path
    print(f"training the blog's model into {path} (5 epochs)", file=sys.stderr)
    code = subnet.train.main(["--epochs", "5", "--seed", "0", "--out", str(path), "--quiet"])
    if code:
        raise SystemExit(code)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="out/demo/seed.keras",
                        help="the blog's trained model; trained here if missing")
    parser.add_argument("--masks", type=int, default=1000, help="masks for the fast backend")
    parser.add_argument("--examples", type=int, default=10000, help="MNIST test examples")
    parser.add_argument("--naive-batch-size", type=int, default=1000,
                        help="batch size of the naive predict loop")
    parser.add_argument("--naive-evaluations", type=int, default=None,
                        help="(mask, example) evaluations for the naive side "
                             "(default: the same as the fast side)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="fast", choices=("fast", "graph", "reference"),
                        help="the backend that records (default: fast)")
    parser.add_argument("--skip-naive", action="store_true",
                        help="only record (for the memory check: --masks 10000)")
    args = parser.parse_args(argv)

    import subnet.train  # noqa: F401  (for _ensure_model)

    model = subnet.load_model(_ensure_model(Path(args.model)))
    data = subnet.load_dataset("mnist").subset(n_test=args.examples)
    x, y = data.x_test, data.y_test
    n_fast = args.masks * len(x)

    peak_flops = _matmul_flops()

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        record = subnet.record_masks(model, x, y, args.masks, seed=args.seed,
                                     backend=args.backend,
                                     out=Path(tmp) / "record")
        fast_seconds = time.perf_counter() - start
        mask_accuracy = record.mask_accuracy()
    fast_rate = n_fast / fast_seconds

    chain = analyse_chain(model)
    backend = FastBackend(chain)
    masks = sample_masks(chain.table.unit_keep(), args.seed, range(args.masks))
    chunk = 64
    if args.backend == "reference":  # the masked model runs every channel
        fast_flops = n_fast * sum(layer_flops(layer) for layer in model.layers)
    else:
        # The fast backend keeps the prefix's outputs between chunks; the graph one does not.
        fast_flops = sum(backend.flops(masks[a:a + chunk], len(x),
                                       prefix=a == 0 or args.backend == "graph")
                         for a in range(0, len(masks), chunk))
    from subnet.runtime import tf

    devices = [d.name for d in tf.config.list_physical_devices("GPU")]

    if args.skip_naive:
        print(json.dumps({"backend": args.backend, "devices": devices,
                          "masks": args.masks, "examples": len(x), "fast_seconds":
                          round(fast_seconds, 2), "fast_evaluations_per_second":
                          round(fast_rate, 1), "record_mean_mask_accuracy":
                          round(float(np.mean(mask_accuracy)), 4),
                          "peak_rss_mb": round(_peak_rss_mb(), 1)}))
        return 0
    n_naive = args.naive_evaluations or n_fast
    passes = max(1, n_naive // len(x))

    def loop(network):
        network.predict(x[: args.naive_batch_size], verbose=0, batch_size=args.naive_batch_size)
        start, correct = time.perf_counter(), 0
        for _ in range(passes):
            probabilities = network.predict(x, verbose=0, batch_size=args.naive_batch_size)
            correct += int(np.sum(probabilities.argmax(axis=1) == y))
        return time.perf_counter() - start, correct

    # The blog's way (a seeded dropout-on copy: its random numbers cost time too), and the
    # honest floor: one plain forward pass per mask, dropout off, which is what the reference
    # masked model costs (its channel multiply is cheap).
    naive_seconds, naive_correct = loop(subnet.with_dropout(model, True, seed=args.seed))
    plain_seconds, _ = loop(subnet.with_dropout(model, False))
    naive_rate = passes * len(x) / naive_seconds
    plain_rate = passes * len(x) / plain_seconds

    result = {
        "model": str(args.model),
        "backend": args.backend,
        "devices": devices,
        "params": int(model.count_params()),
        "sites": [f"{s.name}:{s.units}@keep{s.keep:g}" for s in chain.table],
        "masks": args.masks,
        "examples": len(x),
        "fast_evaluations": n_fast,
        "fast_seconds": round(fast_seconds, 2),
        "fast_evaluations_per_second": round(fast_rate, 1),
        "naive_evaluations": passes * len(x),
        "naive_batch_size": args.naive_batch_size,
        "naive_seconds": round(naive_seconds, 2),
        "naive_evaluations_per_second": round(naive_rate, 1),
        "ratio": round(fast_rate / naive_rate, 2),
        "plain_pass_seconds": round(plain_seconds, 2),
        "plain_pass_evaluations_per_second": round(plain_rate, 1),
        "ratio_to_plain_pass": round(fast_rate / plain_rate, 2),
        "fast_gflops_per_second": round(fast_flops / fast_seconds / 1e9, 2),
        "matmul_gflops_per_second": round(peak_flops / 1e9, 2),
        "fast_fraction_of_matmul_peak": round(fast_flops / fast_seconds / peak_flops, 3),
        "fast_flops_per_evaluation": round(fast_flops / n_fast),
        "naive_flops_per_evaluation": int(sum(layer_flops(layer) for layer in model.layers)),
        "record_mean_mask_accuracy": round(float(np.mean(mask_accuracy)), 4),
        "naive_mean_pass_accuracy": round(naive_correct / (passes * len(x)), 4),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

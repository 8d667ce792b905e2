"""Benchmark: ``python -m subnet.analyze --quick`` end to end on the ResNet-20 layout.

    python benchmarks/bench_analyze_graph.py [--width 4] [--examples 1000] [--train 12000]
        [--epochs 1] [--work out/benchmarks/bench_analyze_graph]

The ResNet-20 layout (``tests/zoo.py``: a stem, 3 stages of 3 basic blocks with widths w, 2w,
4w, projection shortcuts, BatchNormalization after every conv; ``--width 16`` is He et al.'s
CIFAR network) is trained for ``--epochs`` on the first ``--train`` images of MNIST made
32 x 32 x 3 (``analyses/make_rgb32.py``), saved, and analysed by ``python -m subnet.analyze
MODEL --dataset FILE.npz --quick --examples N --rate 0.5`` (the layout has no Dropout layer)
in a child process, as a user would run it. The
data file and the trained model are cached under ``--work`` by what made them; the analysis runs
afresh every time (into ``--work/analysis_w{width}``, which this script owns).

Prints one JSON object: the model's FLOPs and parameters, the analysis' wall time and its
per-stage timings (from its results.json), and the record backend it used. Wall time is machine
time: state the machine's load beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _data(work: Path, n_train: int, n_test: int) -> Path:
    from analyses.make_rgb32 import cached_file

    return cached_file(work / f"mnist_rgb32_{n_train}_{n_test}.npz", n_train, n_test)


def _model(work: Path, data_path: Path, width: int, epochs: int) -> Path:
    path = work / f"resnet20_w{width}_e{epochs}_{data_path.stem}.keras"
    if path.exists():
        return path
    import keras

    from subnet.io import atomic_path
    from tests import zoo

    keras.utils.set_random_seed(0)
    model = zoo.resnet20_layout(width=width)
    with np.load(data_path) as data:
        x, y = data["x_train"], data["y_train"]
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    with atomic_path(path) as tmp:  # keeps the .keras suffix
        model.save(tmp)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--train", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "out/benchmarks/bench_analyze_graph")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    data_path = _data(args.work, args.train, args.examples)
    model_path = _model(args.work, data_path, args.width, args.epochs)
    out = args.work / f"analysis_w{args.width}"
    if out.exists():
        shutil.rmtree(out)  # this script's own output folder, from its previous run
    command = [sys.executable, "-m", "subnet.analyze", str(model_path), "--dataset",
               str(data_path), "--quick", "--examples", str(args.examples), "--rate", "0.5",
               "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        return done.returncode
    results = json.loads((out / "results.json").read_text())
    from subnet.extraction import model_cost
    from subnet.models import load_model

    cost = model_cost(load_model(model_path))
    print(json.dumps({
        "model": "resnet20_layout", "width": args.width, "examples": args.examples,
        "flops_per_example": int(cost["flops"]), "params": int(cost["params"]),
        "wall_seconds": round(wall, 1), "timings": results.get("timings"),
        "backend": results["importance"].get("record_backend"),
        "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

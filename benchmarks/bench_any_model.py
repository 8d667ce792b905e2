"""Benchmark: the analysis on the models users bring, side by side in one run.

    python benchmarks/bench_any_model.py [--models resnet20,mobilenetv2,densenet,blog]
        [--train 12000] [--epochs 1] [--masks 32] [--examples 200] [--skip-analyze]
        [--work out/benchmarks/bench_any_model]

Four classifiers: the ResNet-20 layout at width 16 (He et al.'s CIFAR network), MobileNetV2 at
alpha 0.35 and a DenseNet-style concatenating network (``tests/zoo.py``), each trained *without
dropout* for ``--epochs`` on the first ``--train`` images of MNIST made 32 x 32 x 3
(``analyses/make_rgb32.py``; MobileNetV2's BatchNormalization statistics, momentum 0.999,
then set from 1,024 training images, as a longer training would have); and the blog's
network (a committed frontier parent, ``reports/frontier/parents/``, trained with dropout 0.5
on MNIST). For each:

- ``python -m subnet.analyze MODEL --quick`` in a child process, as a user runs it (default
  keep probabilities, ``auto``): its wall time, the keep probabilities it chose and how, and
  the random subnetworks' mean accuracy against chance and the whole model (position 0 at
  chance, 1 at the whole; the calibration aims at 0.5);
- record throughput (:func:`subnet.record_masks`, its default backend) against the naive
  masked loop (the full-width masked Keras model, masks multiplied in, ``predict`` once per
  mask) and against one plain forward pass of the model, on ``--masks`` masks x
  ``--examples`` test images, at keep 0.5 and at the keep the analysis chose. Each rate is the
  best of two runs in this process, so the ratios hold on a busy machine.

Data and trained models are cached under ``--work`` by what made them; the analyses run afresh
into ``--work/analysis_{model}`` (this script's own folders). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("resnet20", "mobilenetv2", "densenet", "blog")
BLOG_PARENT = ROOT / "reports/frontier/parents/parent_s0_ebb6eae430fd/parent.keras"


def _rgb32(work: Path, n_train: int) -> Path:
    from analyses.make_rgb32 import cached_file

    return cached_file(work / f"mnist_rgb32_{n_train}.npz", n_train)


def _build(name: str):
    from tests import zoo

    if name == "resnet20":
        return zoo.resnet20_layout(width=16)
    if name == "mobilenetv2":
        return zoo.mobilenetv2(calibrate=False)
    return zoo.densenet_style()


def _trained(work: Path, name: str, data_path: Path, epochs: int) -> Path:
    """``name`` trained without dropout on ``data_path`` (cached by what made it)."""
    if name == "blog":
        return BLOG_PARENT
    tag = "_bn" if name == "mobilenetv2" else ""
    path = work / f"{name}_e{epochs}{tag}_{data_path.stem}.keras"
    if path.exists():
        return path
    import keras

    from subnet.io import atomic_path

    keras.utils.set_random_seed(0)
    model = _build(name)
    with np.load(data_path) as data:
        x, y = data["x_train"], data["y_train"]
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    if name == "mobilenetv2":
        # One short epoch leaves its BatchNormalization moving statistics (momentum 0.999)
        # near their initial values, and the model at chance in inference mode: set them from
        # 1,024 training images, as a longer training would have.
        from tests import zoo

        zoo.calibrate_batch_norm(model, x[:1024])
    print(f"trained {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    with atomic_path(path) as tmp:  # keeps the .keras suffix
        model.save(tmp)
    return path


def _analyze(name: str, model_path: Path, dataset: str, work: Path) -> dict:
    out = work / f"analysis_{name}"
    if out.exists():
        shutil.rmtree(out)  # this script's own output folder, from its previous run
    command = [sys.executable, "-m", "subnet.analyze", str(model_path), "--dataset", dataset,
               "--quick", "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode:
        return {"error": done.stderr[-2000:], "wall_seconds": round(wall, 1)}
    results = json.loads((out / "results.json").read_text())
    keep = results["keep"]
    d = keep["mask_accuracy"]
    return {"wall_seconds": round(wall, 1), "timings": results["timings"],
            "settings": {k: results["config"][k] for k in
                         ("masks", "examples", "finetune_epochs", "budgets", "methods")},
            "keep": keep["keep"], "keep_source": keep["source"], "rescale": keep["rescale"],
            "how": keep["how"], "mask_accuracy_mean": d["mean"], "chance": d["chance"],
            "whole": d["whole"], "position": d["position"], "near_chance": d["near_chance"],
            "answer": results["answer"].get("sentences"),
            "backend": results["importance"].get("record_backend")}


def _throughput(model_path: Path, dataset: str, keeps: dict, masks: int, examples: int) -> dict:
    """Record rate (evaluations per second) by subnet's default backend, the naive masked loop
    and one plain forward pass, at each keep in ``keeps`` {label: KeepProbabilities}."""
    import subnet
    from subnet.masks import sample_masks
    from subnet.structure import channel_groups

    model = subnet.with_dropout(subnet.load_model(model_path), on=False)
    data = subnet.load_dataset(dataset).subset(n_test=examples)
    x, y = data.x_test, data.y_test
    masked = channel_groups(model).masked_model()
    plain = []
    for _ in range(2):
        start = time.perf_counter()
        model.predict(x, verbose=0, batch_size=len(x))
        plain.append(time.perf_counter() - start)
    pairs = masks * len(x)
    out = {"plain_examples_per_s": round(len(x) / min(plain), 1), "keeps": {}}
    for label, keep in keeps.items():
        table = subnet.sites(model, rate={s: 1 - q for s, q in keep.keep.items()})
        unit_keep = table.unit_keep()
        values = sample_masks(unit_keep, 0, range(masks)).astype(np.float32)
        if keep.rescale:
            values /= unit_keep.astype(np.float32)
        recorded, naive, backend = [], [], None
        for _ in range(2):
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                record = subnet.record_masks(model, x, y, n_masks=masks, rate=keep, seed=0,
                                             out=Path(folder) / "r", progress=False)
                recorded.append(time.perf_counter() - start)
                backend = record.meta["backend"]
            start = time.perf_counter()
            for row in values:
                masked.predict([x, np.repeat(row[None], len(x), axis=0)], verbose=0,
                               batch_size=len(x))
            naive.append(time.perf_counter() - start)
        rate = pairs / min(recorded)
        out["keeps"][label] = {
            "keep": sorted(set(round(q, 4) for q in keep.keep.values())), "backend": backend,
            "record_evals_per_s": round(rate, 1),
            "naive_evals_per_s": round(pairs / min(naive), 1),
            "ratio_to_naive": round(min(naive) / min(recorded), 2),
            "ratio_to_plain_pass": round(rate / out["plain_examples_per_s"], 2)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--train", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--masks", type=int, default=32)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--skip-analyze", action="store_true",
                        help="throughput at keep 0.5 only, no analysis")
    parser.add_argument("--work", type=Path, default=ROOT / "out/benchmarks/bench_any_model")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    if set(names) - set(MODELS) or min(args.train, args.epochs, args.masks, args.examples) < 1:
        parser.error(f"--models among {list(MODELS)}; --train, --epochs, --masks and "
                     "--examples at least 1")
    args.work.mkdir(parents=True, exist_ok=True)
    from subnet.keep import KeepProbabilities

    rgb32 = _rgb32(args.work, args.train)
    out = {"cpu_count": os.cpu_count(), "masks": args.masks, "examples": args.examples,
           "models": {}}
    for name in names:
        dataset = "mnist" if name == "blog" else str(rgb32)
        model_path = _trained(args.work, name, rgb32, args.epochs)
        row = {"model_file": str(model_path.relative_to(ROOT)) if name == "blog" else
               model_path.name}
        if not args.skip_analyze:
            row["analyze_quick"] = _analyze(name, model_path, dataset, args.work)
        import subnet

        sites = subnet.sites(subnet.load_model(model_path), rate=0.5).names
        keeps = {"0.5": KeepProbabilities(keep=dict.fromkeys(sites, 0.5), source="given",
                                          rescale=name == "blog")}
        chosen = row.get("analyze_quick", {}).get("keep")
        if chosen:
            keeps["chosen"] = KeepProbabilities(keep=chosen, source="given",
                                                rescale=row["analyze_quick"]["rescale"])
        row["throughput"] = _throughput(model_path, dataset, keeps, args.masks, args.examples)
        row["load_average_1min"] = round(os.getloadavg()[0], 2)
        out["models"][name] = row
        print(json.dumps({name: row}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

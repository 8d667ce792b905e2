"""Trained blog networks shared by the analyses: trained once, cached, reused.

A model file is named by everything that made it (dataset, dense units, training dropout rates,
epochs, seed), so two scripts asking for the same network share one file. Run as a script, it
trains the network a file name describes (``make analyses`` trains its networks this way, several
at once)::

    python analyses/_trained.py out/analyses/models/mnist_seed_cnn_500_r0.5-0.5-0.5_e12_s0.keras
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import subnet
from subnet.io import atomic_path
from subnet.train import fit

CACHE = Path("out/analyses/models")
NAME = re.compile(r"(?P<dataset>[a-z_]+?)(?:_n(?P<n>\d+))?_seed_cnn_(?P<units>\d+)"
                  r"_r(?P<rates>[\d.]+-[\d.]+-[\d.]+)_e(?P<epochs>\d+)_s(?P<seed>\d+)\.keras")
FULL = {"mnist": 60_000, "fashion_mnist": 60_000}


def path_of(data, units: int, rates=(0.5, 0.5, 0.5), *, epochs: int, seed: int,
            cache: Path = CACHE) -> Path:
    """Where :func:`trained` keeps that network (a subset of the training data is named)."""
    tag = "-".join(f"{r:g}" for r in rates)
    part = "" if len(data.x_train) == FULL.get(data.name) else f"_n{len(data.x_train)}"
    return Path(cache) / f"{data.name}{part}_seed_cnn_{units}_r{tag}_e{epochs}_s{seed}.keras"


def trained(data, units: int, rates=(0.5, 0.5, 0.5), *, epochs: int, seed: int,
            cache: Path = CACHE, log=None):
    """The blog's network with ``units`` dense units trained on ``data`` (cached)."""
    path = path_of(data, units, rates, epochs=epochs, seed=seed, cache=cache)
    if path.exists():
        return subnet.load_model(path)
    start = time.perf_counter()
    model = subnet.seed_cnn(units, rates=tuple(rates), seed=seed)
    fit(model, data.x_train, data.y_train, epochs=epochs, seed=seed, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        model.save(tmp)
    if log:
        log(f"trained {path.name} in {time.perf_counter() - start:.0f} s")
    return model


def load(name: str, train_subset: int | None = None):
    """The data set ``name``, or its first ``train_subset`` training examples (quick checks)."""
    data = subnet.load_dataset(name)
    return data if train_subset is None else data.subset(n_train=train_subset)


def accuracy_dropout_off(model, x, y) -> float:
    """Accuracy of ``model`` on (x, y) with every Dropout layer off: the deterministic network."""
    import numpy as np

    predicted = subnet.with_dropout(model, on=False).predict(x, batch_size=1000, verbose=0)
    return float(np.mean(predicted.argmax(-1) == y))


def parse(path) -> dict:
    """What made the network file ``path`` (the inverse of :func:`path_of`'s naming)."""
    match = NAME.fullmatch(Path(path).name)
    if not match:
        raise ValueError(f"{Path(path).name!r} is not a trained-network name; expected e.g. "
                         "mnist_seed_cnn_500_r0.5-0.5-0.5_e12_s0.keras")
    return {"dataset": match["dataset"], "train_subset": int(match["n"]) if match["n"] else None,
            "units": int(match["units"]),
            "rates": tuple(float(r) for r in match["rates"].split("-")),
            "epochs": int(match["epochs"]), "seed": int(match["seed"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train the blog network each file name "
                                     "describes, into that file (skipped if it exists).")
    parser.add_argument("paths", nargs="+", metavar="PATH")
    args = parser.parse_args(argv)
    try:
        wanted = [(Path(p), parse(p)) for p in args.paths]
    except ValueError as error:
        parser.error(str(error))
    for path, spec in wanted:
        if path.exists():  # nothing to train: no need to load the data or the model
            continue
        data = load(spec["dataset"], spec["train_subset"])
        if path_of(data, spec["units"], spec["rates"], epochs=spec["epochs"], seed=spec["seed"],
                   cache=path.parent) != path:
            parser.error(f"{path.name}: the data set's size does not match the name")
        trained(data, spec["units"], spec["rates"], epochs=spec["epochs"], seed=spec["seed"],
                cache=path.parent, log=lambda message: print(message, file=sys.stderr,
                                                              flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Width x test-time dropout: when do random subnetworks stop matching the whole network?

    python analyses/width_dropout_sweep.py [--datasets mnist fashion_mnist]
        [--widths 32 64 128 256 500 1000] [--rates 0 0.5 0.7 0.8 0.9 0.95] [--seeds 0 1 2]
        [--epochs 1] [--examples 2000] [--passes 2] [--out reports/width_dropout_sweep]

For each dataset, dense width and seed, the blog's network (conv 20 - conv 50 - dense WIDTH, all
dropout 0.5 in training) is trained once (cached in ``out/analyses/models/``), then tested with
element-wise dropout left on, as the blog did, while one place's rate varies:

- ``dense``: the dense layer's test-time dropout at each rate, the conv sites' at 0.5;
- ``conv``: both conv sites' at each rate, the dense layer's at 0.5.

Each cell is the mean single-pass accuracy over ``--passes`` passes on the first ``--examples``
test images. The whole network, at a place, is the better of its rate 0 (every unit there kept)
and its training rate 0.5: with element-wise dropout before max-pooling, a network trained with
dropout does not always do best with it off. A width "matches" at a rate when the mean over seeds
of (accuracy at the rate - the whole) is at least -0.5 points; the script reports, per dataset,
place and rate, the smallest width from which every wider network matches. Accuracy with dropout
off everywhere is kept too (``off``).
Per-model results are kept in ``out/analyses/sweep/`` so an interrupted run resumes. The last line
printed is one JSON object; ``results.json``, ``report.html`` and ``report.pdf`` go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _trained import accuracy_dropout_off, load, trained

import subnet
from subnet.io import atomic_write_text

SITES = {"dense": ("drop3",), "conv": ("drop1", "drop2")}
MATCH_POINTS = 0.5
TRAINED_RATE = 0.5  # every site's dropout rate in training


def evaluate(model, x, y, rates, passes: int, seed: int) -> dict:
    """{site: {rate: mean single-pass accuracy}}: one site's rate varies, the others keep theirs.

    As in the blog's experiment, the sites not being varied keep their dropout on at the rate the
    network was trained with (0.5 here): switching element-wise dropout off before max-pooling
    shifts what the next layer sees, so "off everywhere" is recorded separately (``off``).
    """
    trained_rates = {info.name: info.rate for info in subnet.dropout_layers(model)}
    off = accuracy_dropout_off(model, x, y)
    out = {}
    for site, layers in SITES.items():
        out[site] = {}
        for rate in rates:
            chosen = {**trained_rates, **dict.fromkeys(layers, rate)}
            result = subnet.mc_dropout(model, x, y, samples=passes, rates=chosen, seed=seed)
            out[site][f"{rate:g}"] = result.accuracy
    return {"off": off, "sites": out}


def measure(args, log) -> list[dict]:
    rows = []
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        data = load(name, args.train_subset)
        x, y = data.x_test[:args.examples], data.y_test[:args.examples]
        for width in args.widths:
            for seed in args.seeds:
                key = (f"v2_{data.name}_w{width}_e{args.epochs}_s{seed}_n{args.examples}"
                       f"_p{args.passes}_r{'-'.join(f'{r:g}' for r in args.rates)}.json")
                done = state / key
                if done.exists():
                    row = json.loads(done.read_text())
                else:
                    start = time.perf_counter()
                    model = trained(data, width, epochs=args.epochs, seed=seed, log=log)
                    row = {"dataset": data.name, "width": width, "seed": seed,
                           **evaluate(model, x, y, args.rates, args.passes, seed)}
                    row["seconds"] = round(time.perf_counter() - start, 1)
                    atomic_write_text(done, json.dumps(row))
                    log(f"{data.name} width {width} seed {seed}: off {row['off']:.4f}, "
                        f"dense 0.9 {row['sites']['dense'].get('0.9', float('nan')):.4f} "
                        f"({row['seconds']} s)")
                rows.append(row)
    return rows


def summarize(rows, args) -> dict:
    """Mean and std over seeds per cell, and the width from which subnetworks match."""
    cells, thresholds = {}, {}
    whole = [j for j, rate in enumerate(args.rates) if rate in (0, TRAINED_RATE)]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for site in SITES:
            grid, gaps = [], []
            for width in args.widths:
                mine = [r for r in rows if r["dataset"] == name and r["width"] == width]
                acc = np.array([[r["sites"][site][f"{rate:g}"] for rate in args.rates]
                                for r in mine])
                gap = acc - acc[:, whole].max(axis=1, keepdims=True)
                grid.append({"width": width, "mean": acc.mean(0).tolist(),
                             "off_mean": float(np.mean([r["off"] for r in mine])),
                             "std": acc.std(0, ddof=1).tolist() if len(mine) > 1 else [0.0] *
                             len(args.rates),
                             "gap_mean": gap.mean(0).tolist(), "seeds": len(mine)})
                gaps.append(gap.mean(0))
            gaps = np.array(gaps)  # widths x rates
            matches = gaps >= -MATCH_POINTS / 100
            from_width = {}
            for j, rate in enumerate(args.rates):
                ok = matches[:, j]
                # the smallest width such that it and every wider one match
                index = next((i for i in range(len(ok)) if ok[i:].all()), None)
                from_width[f"{rate:g}"] = None if index is None else args.widths[index]
            cells[f"{name}/{site}"] = grid
            thresholds[f"{name}/{site}"] = from_width
    return {"cells": cells, "matching_from_width": thresholds}


def _heatmap(fig, grid, rates, title):
    mean = np.array([g["mean"] for g in grid]) * 100
    std = np.array([g["std"] for g in grid]) * 100
    ax = fig.subplots()
    image = ax.imshow(mean, cmap="viridis", aspect="auto", vmin=max(0.0, mean.min()), vmax=100)
    for i in range(mean.shape[0]):
        for j in range(mean.shape[1]):
            ax.text(j, i, f"{mean[i, j]:.1f}\n±{std[i, j]:.1f}", ha="center", va="center",
                    fontsize=7, color="white" if mean[i, j] < (mean.min() + 100) / 2 else "black")
    ax.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
    ax.set_yticks(range(len(grid)), [str(g["width"]) for g in grid])
    ax.set_xlabel("test-time dropout rate")
    ax.set_ylabel("dense units")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="test accuracy, %", shrink=0.9)


def write_report(result: dict, out: Path) -> None:
    from subnet.report import write_document
    from subnet.report.content import Document, Figure, Section, Table, Text

    config = result["config"]
    rates = config["rates"]
    sections = []
    answers = []
    j9 = rates.index(0.9) if 0.9 in rates else len(rates) - 1  # the blog's rate
    j5 = rates.index(TRAINED_RATE) if TRAINED_RATE in rates else 0
    for key, grid in result["cells"].items():
        name, site = key.split("/")
        where = "the dense layer" if site == "dense" else "both conv sites"
        other = "the conv sites" if site == "dense" else "the dense layer"
        thresholds = result["matching_from_width"][key]
        r9 = thresholds.get("0.9")  # the blog's rate
        widest = grid[-1]
        def cell(g):
            return (f"the {g['width']}-unit network {g['mean'][j9]:.2%} (rate 0: "
                    f"{g['mean'][0]:.2%}, {rates[j5]:g}: {g['mean'][j5]:.2%})")

        reading = (f"{name}, test-time dropout varied at {where}, {other} at {TRAINED_RATE:g}: "
                   f"at rate {rates[j9]:g}, {cell(widest)}; {cell(grid[0])}. Mean ± std over "
                   f"{widest['seeds']} seeds.")
        rows = tuple((f"{r:g}", str(thresholds[f"{r:g}"] or "none")) for r in rates if r > 0)
        sections.append(Section(key.replace("/", "-"), f"{name}: dropout varied at {where}", (
            Figure(f"heat-{name}-{site}", f"Accuracy, {name}, dropout varied at {where}", reading,
                   lambda fig, g=grid, t=key: _heatmap(fig, g, rates, t), (7.5, 4.6)),
            Table(f"from-{name}-{site}", "Smallest width from which every wider network matches",
                  ("rate", "dense units"), rows, (True, True),
                  reading=f"Matches: mean accuracy at the rate at most {MATCH_POINTS:g} points "
                          f"below the whole (the better of rate 0 and {TRAINED_RATE:g} there)."),
        )))
        if site == "dense":
            full, blog = widest["mean"][0], widest["mean"][j9]
            found = (f"no width up to {widest['width']} units matches the whole (within "
                     f"{MATCH_POINTS:g} points); the widest keeps {blog:.2%} against {full:.2%} "
                     "with every dense unit kept"
                     if r9 is None else f"networks from {r9} dense units up match the whole "
                     f"(within {MATCH_POINTS:g} points)")
            answers.append(f"{name}, the dense layer's test-time dropout at {rates[j9]:g}: "
                           f"{found}.")
    sections.append(Section("provenance", "Provenance", (
        Text((f"Trained {config['epochs']} epoch(s) each (Adam, cosine, batch 128, dropout 0.5 "
              f"at every site); tested on the first {config['examples']} test images, "
              f"{config['passes']} passes per cell.",)),
        Table("provenance", "How this was made", None, (
            ("command", " ".join(result["command"])),
            ("versions", ", ".join(f"{k} {v}" for k, v in result["versions"].items())),
            ("seconds", str(result["seconds"])))),)))
    doc = Document(
        title="Width × test-time dropout",
        subject="When do random subnetworks (test-time dropout) stop matching the whole network?",
        facts=(("Datasets", ", ".join(config["datasets"])),
               ("Widths", ", ".join(map(str, config["widths"]))),
               ("Seeds", str(len(config["seeds"]))), ("Epochs", str(config["epochs"]))),
        answer=tuple(answers), sections=tuple(sections))
    write_document(doc, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    parser.add_argument("--widths", nargs="+", type=int, default=[32, 64, 128, 256, 500, 1000])
    parser.add_argument("--rates", nargs="+", type=float, default=[0, 0.5, 0.7, 0.8, 0.9, 0.95])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--state", default="out/analyses/sweep")
    parser.add_argument("--out", default="reports/width_dropout_sweep")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on the first N training examples only (a quick check)")
    parser.add_argument("--no-report", action="store_true", help="measure only (e.g. one "
                        "dataset at a time); the report needs every dataset")
    args = parser.parse_args(argv)
    if 0 not in args.rates:
        parser.error("--rates must include 0 (the whole network)")
    args.rates = sorted(args.rates)
    args.widths = sorted(args.widths)
    start = time.time()

    def log(message):
        print(message, file=sys.stderr, flush=True)

    rows = measure(args, log)
    result = {"command": ["python", "analyses/width_dropout_sweep.py",
                          *(sys.argv[1:] if argv is None else argv)],
              "config": {k: getattr(args, k) for k in ("datasets", "widths", "rates", "seeds",
                                                       "epochs", "examples", "passes")},
              "versions": subnet.versions(), **summarize(rows, args), "rows": rows,
              "seconds": round(time.time() - start, 1),
              "model_seconds": round(sum(r["seconds"] for r in rows), 1)}
    if not args.no_report:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps(result, indent=1))
        write_report(result, out)
    print(json.dumps({k: result[k] for k in ("config", "matching_from_width", "seconds",
                                             "model_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

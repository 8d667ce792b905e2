"""The blog's experiment beside the subnetworks: why dropping elements is not dropping units.

    python analyses/blog_mechanism.py [--parent reports/frontier/parents/parent_s0_ebb6eae430fd]
        [--passes 20] [--masks 200] [--examples 10000] [--models reports/frontier/models]
        [--dataset mnist] [--out reports/blog_mechanism]
    python analyses/blog_mechanism.py --parents reports/frontier/parents [--dataset mnist]
        [--validation 5000] [--out reports/blog_mechanism]

On a trained blog network and its test set, three ways of keeping about half the network, side by
side, with the network with dropout off as the reference:

1. **element-wise dropout at test time**, the blog's experiment: the model's own Dropout layers
   on, each pass drawing fresh per-element masks (``--passes`` passes);
2. **random unit masks**: each unit (a whole feature map or neuron) kept with probability 0.5,
   as a record draws them (``--masks`` masks);
3. **chosen subnetworks**: the ``.keras`` files under ``--models`` (the frontier's smallest).

And the mechanism that separates 1 from 2: the blog's Dropout sits *before* 2x2 max-pooling, so
a pooled feature is lost only when all four of its inputs are dropped (1/16 at rate 0.5), while
a dropped filter is lost everywhere. Measured directly: the share of the first pooling layer's
nonzero outputs that element-wise dropout turns to zero, against the share a unit mask does.
The same place explains why the network scores lower with dropout off than on: the
weight-scaling rule holds through linear layers, not through a max. Checked by intervention:
dropout off with each such pooling replaced by the exact expectation of its dropout-on maximum
(:func:`subnet.expected_pooling`; the probabilistic weighted pooling of Wu & Gu 2015, "Max-pooling
dropout for regularization of convolutional neural networks", arXiv:1512.01400, and "Towards
dropout training for convolutional neural networks", arXiv:1512.00242).

Prints one JSON object and writes ``--out/results.json`` and ``--out/README.md`` (generated from
the JSON). With ``--parents FOLDER``, instead: every parent under the folder (``parent_s*``), its
test and validation accuracy with dropout off and with expected pooling, and their FLOPs, printed
and written to ``--out/expected_pooling_parents.json`` (the README then shows them too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# TensorFlow's oneDNN kernels on, as when the committed results were made (subnet leaves them
# off, see subnet.runtime; the blog's network has none of the layers that makes unsafe).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _pooled_loss(model, x, rate: float, seed: int) -> dict:
    """Share of the first pooling layer's nonzero outputs that dropout before it zeroes:
    element-wise (the blog's) and unit-wise (a unit mask), on the examples ``x``."""
    from subnet.runtime import keras

    pool = next(layer for layer in model.layers
                if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.MaxPooling1D)))
    before = model.get_layer(model.layers[model.layers.index(pool) - 1].name)
    source = before
    while isinstance(source, keras.layers.Dropout):
        source = model.get_layer(model.layers[model.layers.index(source) - 1].name)
    features = np.asarray(keras.Model(model.inputs, source.output)(x, training=False))
    rng = np.random.default_rng(seed)
    pooled = np.asarray(pool(features))
    element = np.asarray(pool(features * (rng.random(features.shape) >= rate)))
    units = rng.random((len(x), 1, 1, features.shape[-1])) >= rate
    unit = np.asarray(pool(features * units))
    alive = pooled > 0
    return {"layer": pool.name, "after": source.name, "rate": rate, "examples": len(x),
            "element_wise_lost": float(np.mean(element[alive] == 0)),
            "unit_wise_lost": float(np.mean(unit[alive] == 0)),
            "all_four_dropped": rate ** 4}


def _expected_pooling(model, x, y) -> dict:
    """Why the network scores lower with dropout off than with it on, checked by intervention.

    Dropout off relies on the weight-scaling rule, which holds through linear layers but not
    through a max; the layers after each max pooling were trained on the dropout-on maximum.
    :func:`subnet.expected_pooling` turns dropout off and replaces every max pooling after a
    dropout by the exact expectation of its dropout-on value over each window (Wu & Gu 2015's
    probabilistic weighted pooling, for signed inputs): parameter-free, nothing fitted."""
    import subnet
    from subnet.extraction import accuracy
    from subnet.pooling import expected_pooling_cost

    expected = subnet.expected_pooling(model)
    return {"layers": [row["name"] for row in expected_pooling_cost(expected)["layers"]],
            "accuracy": accuracy(expected, x, y)}


def _parents(folders: list[str]) -> list[Path]:
    return sorted(p for folder in folders for p in Path(folder).glob("parent_s*")
                  if (p / "parent.keras").exists())


def expected_pooling_parents(folders: list[str], dataset: str, validation: int) -> dict:
    """Per parent network: test and validation accuracy of the network with dropout off and
    of its expected-pooling network, and what each costs in FLOPs per example.

    The validation split is the frontier's (``validation_split(data, validation,
    seed=VALIDATION_SEED)``, as analyses/frontier.py makes it); the test set is the whole test
    split."""
    import subnet
    from subnet.extraction import model_cost
    from subnet.pooling import expected_pooling_cost
    from subnet.protocol import VALIDATION_SEED, validation_split

    train, (x_val, y_val), info = validation_split(subnet.load_dataset(dataset), validation,
                                                   seed=VALIDATION_SEED)
    x_test, y_test = train.x_test, train.y_test
    rows = []
    for folder in _parents(folders):
        start = time.perf_counter()
        model = subnet.load_model(folder / "parent.keras")
        off = subnet.with_dropout(model, on=False)
        expected = subnet.expected_pooling(model)
        flops = model_cost(off)["flops"]
        cost = expected_pooling_cost(expected)
        row = {"parent": str(folder), "flops": int(flops),
               "expected_pooling_extra_flops": cost["flops"],
               "expected_pooling_flops": int(flops + cost["flops"]),
               "expected_pooling_layers": cost["layers"],
               "max_pooling_comparisons_replaced": cost["max_pooling_flops"]}
        for name, net in (("dropout_off", off), ("expected_pooling", expected)):
            for split, x, y in (("test", x_test, y_test), ("val", x_val, y_val)):
                correct = int(np.sum(_predicted(net, x) == y))
                row[f"{name}_{split}_correct"] = correct
                row[f"{name}_{split}_accuracy"] = correct / len(y)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(f"blog_mechanism: {folder.name}: expected pooling test "
              f"{row['expected_pooling_test_accuracy']:.4f}, validation "
              f"{row['expected_pooling_val_accuracy']:.4f}", file=sys.stderr)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]
            if k.endswith("_accuracy")} if rows else {}
    return {"dataset": dataset, "validation": info, "n_test": len(y_test), "parents": rows,
            "mean": mean,
            "flops_convention": "Conv/Dense: 2 per multiply-accumulate "
                                "(subnet.extraction.model_cost); expected pooling: every "
                                "comparison, multiplication, addition and max/min with zero "
                                "of its sort-and-weight formula as one FLOP "
                                "(subnet.pooling.expected_pooling_cost, an upper bound)",
            "versions": subnet.versions()}


def _predicted(model, x) -> np.ndarray:
    return np.concatenate([np.asarray(model(x[i:i + 1000], training=False)).argmax(-1)
                           for i in range(0, len(x), 1000)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parent", default="reports/frontier/parents/parent_s0_ebb6eae430fd")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--masks", type=int, default=200)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--models", default="reports/frontier/models")
    parser.add_argument("--out", default="reports/blog_mechanism")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readme-only", action="store_true")
    parser.add_argument("--parents", nargs="+", default=None,
                        help="folders of parents (parent_s*/parent.keras): measure each one's "
                             "expected-pooling network instead")
    parser.add_argument("--validation", type=int, default=5000,
                        help="with --parents: the frontier's validation split size")
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    if args.parents:
        from subnet.io import atomic_write_text

        start = time.perf_counter()
        parents = expected_pooling_parents(args.parents, args.dataset, args.validation)
        parents["wall_seconds"] = round(time.perf_counter() - start, 1)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / PARENTS, json.dumps(parents, indent=1))
        if (out_dir / "results.json").exists():
            result = json.loads((out_dir / "results.json").read_text())
            atomic_write_text(out_dir / "README.md", readme(result, parents))
        print(json.dumps({k: v for k, v in parents.items() if k != "versions"}))
        return 0
    if args.readme_only:
        result = json.loads((out_dir / "results.json").read_text())
        (out_dir / "README.md").write_text(readme(result, _load_parents(out_dir)))
        if "accuracies" in result["unit_masks"]:
            figure(result, out_dir / FIGURE)
        return 0

    import subnet
    from subnet.extraction import accuracy, model_cost
    from subnet.io import atomic_write_text
    from subnet.predictive import dropout_passes, unit_subnetworks

    data = subnet.load_dataset(args.dataset).subset(n_test=args.examples)
    x, y = data.x_test, data.y_test
    model = subnet.load_model(Path(args.parent) / "parent.keras")
    deterministic = subnet.with_dropout(model, on=False)
    dense_flops = model_cost(deterministic)["flops"]
    start = time.perf_counter()
    passes = dropout_passes(model, x, args.passes, seed=args.seed)
    element = np.mean(passes.argmax(-1) == y, axis=1)
    seconds_element = time.perf_counter() - start
    start = time.perf_counter()
    units = np.mean(unit_subnetworks(model, x, args.masks, seed=args.seed).argmax(-1) == y,
                    axis=1)
    seconds_units = time.perf_counter() - start
    chosen = []
    for path in sorted(Path(args.models).glob("*.keras")):
        small = subnet.load_model(path)
        chosen.append({"file": path.name, "test_accuracy": accuracy(small, x, y),
                       "flops_reduction": dense_flops / model_cost(small)["flops"]})
    result = {
        "parent": args.parent, "dataset": data.name, "examples": len(y), "seed": args.seed,
        "dropout_off_accuracy": accuracy(deterministic, x, y),
        "element_wise": {"passes": args.passes, "mean": float(element.mean()),
                         "sd": float(element.std(ddof=1)), "min": float(element.min()),
                         "max": float(element.max()),
                         "ensemble": float(np.mean(passes.mean(0).argmax(-1) == y)),
                         "accuracies": [round(float(a), 5) for a in element],
                         "seconds": round(seconds_element, 1)},
        "unit_masks": {"masks": args.masks, "keep": 0.5, "mean": float(units.mean()),
                       "sd": float(units.std(ddof=1)), "min": float(units.min()),
                       "max": float(units.max()),
                       "accuracies": [round(float(a), 5) for a in units],
                       "seconds": round(seconds_units, 1)},
        "chosen_subnetworks": chosen,
        "mechanism": _pooled_loss(model, x[:1000], 0.5, args.seed),
        "expected_pooling": _expected_pooling(model, x, y),
        "versions": subnet.versions(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(result, indent=1))
    atomic_write_text(out_dir / "README.md", readme(result, _load_parents(out_dir)))
    figure(result, out_dir / FIGURE)
    print(json.dumps({k: v for k, v in result.items() if k != "versions"}))
    return 0


FIGURE = "accuracies.png"
PARENTS = "expected_pooling_parents.json"


def _load_parents(out_dir: Path) -> dict | None:
    path = out_dir / PARENTS
    return json.loads(path.read_text()) if path.exists() else None


def figure(r: dict, path: Path) -> None:
    """One figure per data set: every pass, mask and chosen subnetwork's test accuracy on one
    axis, with the network with dropout off and the averaged passes as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from subnet.io import atomic_path

    fig, ax = plt.subplots(figsize=(7.5, 3.4), layout="constrained")
    rng = np.random.default_rng(0)  # vertical jitter only
    rows = [("element-wise dropout,\none pass each", r["element_wise"]["accuracies"], "C0"),
            ("random unit masks,\nkeep 0.5", r["unit_masks"]["accuracies"], "C3")]
    for i, (label, values, color) in enumerate(rows):
        values = 100 * np.asarray(values)
        ax.scatter(values, i + rng.uniform(-0.15, 0.15, len(values)), s=8, color=color,
                   alpha=0.6, label=label)
    chosen = r["chosen_subnetworks"]
    ax.scatter([100 * c["test_accuracy"] for c in chosen], [2] * len(chosen), marker="*",
               s=80, color="C2", label="chosen subnetworks")
    if chosen:  # one label: they sit within a few tenths of a point of one another
        low, high = (f"{f(c['flops_reduction'] for c in chosen):.0f}" for f in (min, max))
        ax.annotate(f"{low}x" if low == high else f"{low}-{high}x fewer FLOPs",
                    (100 * max(c["test_accuracy"] for c in chosen), 2),
                    textcoords="offset points", xytext=(-14, 0), ha="right", va="center",
                    fontsize=7)
    ax.axvline(100 * r["dropout_off_accuracy"], color="k", linestyle="--", linewidth=1,
               label="whole, dropout off")
    ax.axvline(100 * r["element_wise"]["ensemble"], color="C0", linestyle=":", linewidth=1,
               label="passes averaged")
    ax.set_yticks([0, 1, 2], ["element-wise", "unit masks", "chosen"])
    ax.set_ylim(-0.6, 2.6)
    ax.set_xlabel(f"test accuracy (%), {r['dataset']}")
    fig.legend(fontsize=7, loc="outside lower center", ncol=3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def readme(r: dict, parents: dict | None = None) -> str:
    """The comparison in words, every number read from ``r`` (and from ``parents``,
    :func:`expected_pooling_parents`' JSON, when given)."""
    e, u, m = r["element_wise"], r["unit_masks"], r["mechanism"]

    def pct(v):
        return f"{100 * v:.2f} %"

    rows = [f"| the whole network, dropout off | {pct(r['dropout_off_accuracy'])} | — |",
            f"| element-wise dropout 0.5, one pass ({e['passes']} passes) | {pct(e['mean'])} "
            f"± {100 * e['sd']:.2f} (range {pct(e['min'])}–{pct(e['max'])}) | — |",
            f"| element-wise dropout, the {e['passes']} passes averaged | {pct(e['ensemble'])} "
            "| — |",
            f"| random unit masks, keep 0.5 ({u['masks']} masks) | {pct(u['mean'])} ± "
            f"{100 * u['sd']:.2f} (range {pct(u['min'])}–{pct(u['max'])}) | — |"]
    rows += [f"| chosen subnetwork `{c['file']}` | {pct(c['test_accuracy'])} | "
             f"{c['flops_reduction']:.1f}x |" for c in r["chosen_subnetworks"]]
    return "\n".join([
        "# The blog's experiment beside the subnetworks",
        "",
        f"Generated by `python analyses/blog_mechanism.py` from `results.json`. Network: "
        f"`{r['parent']}`; the first {r['examples']:,} {r['dataset']} test images.",
        "",
        *([f"![every pass, mask and subnetwork]({FIGURE})", ""]
          if "accuracies" in u else []),
        "| what is kept | test accuracy | fewer FLOPs |",
        "|---|---|---|",
        *rows,
        "",
        "## Why dropping elements is not dropping units",
        "",
        f"The blog's Dropout sits before 2x2 max-pooling (`{m['after']}` → dropout → "
        f"`{m['layer']}`). A pooled feature is lost only when every positive input of its 2x2 "
        f"window is dropped: {pct(m['all_four_dropped'])} of the time at rate {m['rate']:g} "
        f"when all four are positive, more when fewer are. Measured on {m['examples']:,} test "
        f"images, element-wise dropout zeroes {pct(m['element_wise_lost'])} of "
        f"`{m['layer']}`'s nonzero outputs; dropping whole units at the same rate zeroes "
        f"{pct(m['unit_wise_lost'])}, {m['unit_wise_lost'] / m['element_wise_lost']:.1f} times "
        "as many, and a dropped unit is gone at every position of every image.",
        *_expected_pooling_text(r),
        *_parents_text(parents),
        ""])


def _expected_pooling_text(r: dict) -> list[str]:
    x = r.get("expected_pooling")
    if not x:
        return []

    def pct(v):
        return f"{100 * v:.2f} %"

    off, one_pass, expected = (r["dropout_off_accuracy"], r["element_wise"]["mean"],
                               x["accuracy"])
    if expected >= one_pass:
        verdict = "the whole deficit is the max-pooling after dropout."
    elif expected > off:
        verdict = (f"{100 * (expected - off) / (one_pass - off):.0f} % of the deficit is the "
                   "max-pooling after dropout.")
    else:
        verdict = "so the max-pooling after dropout does not explain the deficit here."
    return [
        "",
        "## Why the network scores lower with dropout off",
        "",
        f"With dropout off the network scores {pct(off)}, below a single dropout pass "
        f"({pct(one_pass)}). Dropout off relies on the weight-scaling rule (kept values are "
        "scaled up, so a layer's input is right *in expectation*), which holds for a linear "
        "layer but not for a max: with dropout on, a pooled feature is the largest of its "
        "window's kept, scaled-up inputs, or zero where one was dropped (the blog's "
        "convolutions have no activation, so a dropped input lifts a negative window to "
        "zero), and the layers after pooling were trained on that. Replacing each pooling "
        "after a dropout (" + ", ".join(f"`{name}`" for name in x["layers"]) + ") by the "
        "exact expectation of the dropout-on maximum over each 2x2 window "
        "(`subnet.expected_pooling`), with dropout off and nothing fitted, gives "
        f"{pct(expected)}: {verdict} The replacement is prior art: the probabilistic weighted "
        "pooling of Wu & Gu, \"Max-pooling dropout for regularization of convolutional neural "
        "networks\" (ICONIP 2015; arXiv:1512.01400) and \"Towards dropout training for "
        "convolutional neural networks\" (Neural Networks 71, 2015; arXiv:1512.00242), here with "
        "Keras's inverted scaling and for signed inputs (a dropped input is a zero in the "
        "window)."]


def _parents_text(parents: dict | None) -> list[str]:
    """The expected-pooling network of every parent, a table from ``parents``."""
    if not parents or not parents.get("parents"):
        return []

    def pct(v):
        return f"{100 * v:.2f} %"

    rows = parents["parents"]
    first = rows[0]
    lines = ["", "## Expected pooling on every parent", "",
             f"Generated by `python analyses/blog_mechanism.py --parents ...` into `{PARENTS}`: "
             f"{parents['dataset']}, the whole test set ({parents['n_test']:,} images) and the "
             f"frontier's validation split ({parents['validation']['size']:,} training images, "
             f"seed {parents['validation']['seed']}). FLOPs per example: the network's "
             f"{first['flops']:,} (Conv/Dense, 2 per multiply-accumulate); expected pooling adds "
             f"at most {first['expected_pooling_extra_flops']:,} "
             f"({100 * first['expected_pooling_extra_flops'] / first['flops']:.1f} %), counting "
             "every comparison, multiplication and addition of its sort-and-weight formula.",
             "",
             "| parent | dropout off, test | expected pooling, test | dropout off, validation "
             "| expected pooling, validation | FLOPs (expected pooling) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| `{Path(row['parent']).name}` | {pct(row['dropout_off_test_accuracy'])} "
                     f"| {pct(row['expected_pooling_test_accuracy'])} | "
                     f"{pct(row['dropout_off_val_accuracy'])} | "
                     f"{pct(row['expected_pooling_val_accuracy'])} | "
                     f"{row['expected_pooling_flops']:,} |")
    m = parents["mean"]
    lines.append(f"| mean | {pct(m['dropout_off_test_accuracy'])} | "
                 f"{pct(m['expected_pooling_test_accuracy'])} | "
                 f"{pct(m['dropout_off_val_accuracy'])} | "
                 f"{pct(m['expected_pooling_val_accuracy'])} | |")
    return lines


if __name__ == "__main__":
    sys.exit(main())

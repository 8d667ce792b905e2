"""Does test-time dropout say which predictions to trust, and is it worth its cost?

    python analyses/uncertainty.py [--parent reports/frontier/parents/parent_s0_ebb6eae430fd]
        [--parents reports/frontier/parents] [--passes 50] [--parent-passes 10]
        [--subnetworks 50] [--examples 10000] [--resamples 2000]
        [--models reports/frontier/models] [--out reports/uncertainty]
        [--work out/analyses/uncertainty]

On the blog's network (a frontier parent: 12 epochs on MNIST less its validation split) this
measures :func:`subnet.uncertainty` for every predictor subnet makes, on the MNIST test set, with
the Fashion-MNIST test set as out-of-distribution inputs, each with its inference cost in FLOPs
per example (Conv/Dense, 2 per multiply-accumulate; one deterministic pass of the parent = 1x):

- the deterministic network (dropout off) and one stochastic pass;
- the test-time-dropout ensemble of the first k of ``--passes`` passes, k = 1, 2, 5, 10, 20, 50
  (k times the parent's FLOPs);
- the strongest cheap comparators: the deterministic network with exact expected pooling after
  its dropouts (:func:`subnet.expected_pooling`, one pass); the whole network distilled as the
  frontier's ``whole`` control is (dropout off, fine-tuned to saturation on the 16-pass dropout
  ensemble's probabilities, rebuilt here with the frontier's recipe and cached under ``--work``);
  and a deep ensemble of the three parents under ``--parents`` (Ovadia et al. 2019), with dropout
  off and with expected pooling (3x);
- an ensemble of ``--subnetworks`` random unit subnetworks (each unit kept with probability 0.5,
  run as masked whole networks);
- each subnetwork ``.keras`` file under ``--models`` (the frontier's smallest), deterministic;
- on every parent: expected pooling against its first ``--parent-passes`` dropout passes.

Intervals: 95 % percentile bootstrap over examples; every predictor is resampled alike (the same
seed and examples), so the differences between two predictors come with paired intervals
(:func:`subnet.predictive.paired_difference`).

Resumable: each predictor's probabilities, each metric set and the distilled whole are cached
under ``--work`` (a rerun computes only what is missing). Prints one JSON object (per predictor:
every metric with its interval, its FLOPs and the seconds its passes took), writes it to
``--out/results.json`` and writes ``--out/README.md``, the analysis in words, generated from
those numbers alone (``--readme-only`` rewrites it from an existing results.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# TensorFlow's oneDNN kernels on, as the frontier's parents and its ``whole`` control were
# trained (see analyses/frontier.py); the blog's network has none of the layers that makes unsafe.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PASS_COUNTS = (1, 2, 5, 10, 20, 50)
#: The metrics the headline compares, with the direction that is better.
HEADLINE = (("accuracy", "higher"), ("nll", "lower"), ("brier", "lower"), ("ece", "lower"),
            ("error_auroc_predictive_entropy", "higher"), ("ood_auroc_predictive_entropy",
                                                           "higher"))
#: (predictor, the one it is compared with) for the paired differences.
PAIRS = (("expected_pooling", "dropout_10"), ("expected_pooling", "dropout_50"),
         ("expected_pooling", "deterministic"), ("expected_pooling", "whole_distilled"),
         ("expected_pooling", "ensemble_3_parents"), ("ensemble_3_parents", "dropout_50"),
         ("ensemble_3_parents_expected_pooling", "dropout_50"),
         ("ensemble_3_parents_expected_pooling", "expected_pooling"),
         ("whole_distilled", "dropout_10"))
NAMES = {"deterministic": "dropout off, one pass", "expected_pooling":
         "expected pooling, one pass", "whole_distilled": "the whole distilled alike, one pass",
         "ensemble_3_parents": "deep ensemble of 3 parents, dropout off",
         "ensemble_3_parents_expected_pooling": "deep ensemble of 3 parents, expected pooling"}


def _name(key: str) -> str:
    if key.startswith("dropout_"):
        k = key.split("_")[1]
        return f"{k} dropout pass{'es' if k != '1' else ''}"
    return NAMES.get(key, key)


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arg = parser.add_argument
    arg("--parent", default="reports/frontier/parents/parent_s0_ebb6eae430fd")
    arg("--parents", default="reports/frontier/parents",
        help="the folder of the parents (parent_s*) for the deep ensemble and the per-parent "
             "comparison; '' for none")
    arg("--passes", type=int, default=50)
    arg("--parent-passes", type=int, default=10,
        help="dropout passes on the other parents (for the per-parent comparison)")
    arg("--subnetworks", type=int, default=50)
    arg("--examples", type=int, default=10_000)
    arg("--resamples", type=int, default=2000)
    arg("--models", default="reports/frontier/models")
    arg("--out", default="reports/uncertainty")
    arg("--work", default="out/analyses/uncertainty", help="the cache (probabilities, the "
                                                            "distilled whole, metrics)")
    arg("--seed", type=int, default=0)
    arg("--validation", type=int, default=5000, help="the frontier's validation split")
    arg("--teacher-passes", type=int, default=16)
    arg("--finetune-epochs", type=int, default=12)
    arg("--patience", type=int, default=3)
    arg("--readme-only", action="store_true",
        help="rewrite --out/README.md from --out/results.json, computing nothing")
    args = parser.parse_args(argv)
    for name in ("passes", "parent_passes", "subnetworks", "examples", "teacher_passes",
                 "finetune_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.resamples < 0:
        parser.error("--resamples must be >= 0")
    return args


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


class _Cache:
    """Probabilities and metrics under ``--work``, named by what made them."""

    def __init__(self, args):
        self.root = Path(args.work) / _key(args.examples, args.seed)
        self.root.mkdir(parents=True, exist_ok=True)
        self.args = args

    def probabilities(self, name: str, make, *key) -> tuple[np.ndarray, np.ndarray, float]:
        from subnet.io import atomic_path

        path = self.root / f"p_{name.replace(':', '_')}_{_key(name, *key)}.npz"
        if path.exists():
            with np.load(path) as saved:
                return saved["inside"], saved["outside"], float(saved["seconds"])
        start = time.perf_counter()
        inside, outside = make()
        seconds = round(time.perf_counter() - start, 1)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, inside=inside, outside=outside, seconds=seconds)
        _log(f"{name}: {seconds:.0f} s")
        return inside, outside, seconds

    def uncertainty(self, name: str, inside, y, outside):
        """:func:`subnet.uncertainty` with its draws, cached by the probabilities' bytes (it
        takes minutes at 2,000 resamples)."""
        import pickle

        from subnet.io import atomic_path
        from subnet.predictive import uncertainty

        a = self.args
        made = [hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
                for v in (inside, y, outside)]
        path = self.root / f"u_{name.replace(':', '_')}_{_key(name, a.resamples, made)}.pkl"
        if path.exists():
            return pickle.loads(path.read_bytes())
        start = time.perf_counter()
        result = uncertainty(inside, y, ood=outside, resamples=a.resamples, seed=a.seed,
                             keep_draws=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(pickle.dumps(result))
        _log(f"{name}: bootstrap {time.perf_counter() - start:.0f} s, accuracy "
             f"{result.metrics['accuracy'].value:.4f}, NLL {result.metrics['nll'].value:.4f}")
        return result


def _log(message: str) -> None:
    print(f"uncertainty: {message}", file=sys.stderr, flush=True)


def _parent_seed(folder: Path) -> int:
    return int(json.loads((folder / "training.json").read_text())["seed"])


def _whole_distilled(args, cache: _Cache, folder: Path):
    """The frontier's ``whole`` control, rebuilt with its recipe (analyses/frontier.py
    run_control, the committed cells): the parent with dropout off, fine-tuned to saturation
    (at most ``--finetune-epochs``, ``--patience`` epochs without a better validation accuracy)
    on labels and the parent's ``--teacher-passes``-pass dropout ensemble's probabilities,
    seeded by the parent's seed. Cached as a ``.keras`` file without optimizer state."""
    import subnet
    from subnet.extraction import copy_model
    from subnet.frontier import finetune_to_saturation
    from subnet.io import atomic_path, atomic_write_text
    from subnet.protocol import VALIDATION_SEED, validation_split
    from subnet.train import teacher_probabilities

    seed = _parent_seed(folder)
    made = _key(str(folder), args.validation, args.teacher_passes, args.finetune_epochs,
                args.patience)
    path = cache.root.parent / f"whole_s{seed}_{made}.keras"
    info = cache.root.parent / f"whole_s{seed}_{made}.json"
    if path.exists() and info.exists():
        return subnet.load_model(path), json.loads(info.read_text())
    train, validation, _ = validation_split(subnet.load_dataset("mnist"), args.validation,
                                            seed=VALIDATION_SEED)
    parent = subnet.load_model(folder / "parent.keras")
    teacher_path = cache.root.parent / f"teacher_s{seed}_{made}.npy"
    start = time.perf_counter()
    if teacher_path.exists():
        teacher = np.load(teacher_path)
    else:
        teacher = teacher_probabilities(parent, train.x_train, passes=args.teacher_passes,
                                        seed=seed)
        np.save(teacher_path, teacher)
    teacher_seconds = round(time.perf_counter() - start, 1)
    _log(f"teacher of parent {seed}: {teacher_seconds:.0f} s")
    model = copy_model(subnet.with_dropout(parent, on=False))
    start = time.perf_counter()
    history = finetune_to_saturation(model, train, validation, epochs=args.finetune_epochs,
                                     patience=args.patience, teacher=teacher, seed=seed)
    seconds = round(time.perf_counter() - start, 1)
    x_val, y_val = validation
    record = {"parent": str(folder), "seed": seed, "epochs_run": history["epochs_run"],
              "best_epoch": history["best_epoch"], "teacher_seconds": teacher_seconds,
              "finetune_seconds": seconds,
              "val_correct": int(np.sum(_predicted(model, x_val) == y_val)),
              "test_correct": int(np.sum(_predicted(model, train.x_test) == train.y_test)),
              "n_val": len(y_val), "n_test": len(train.y_test)}
    with atomic_path(path) as tmp:
        copy_model(model).save(tmp)  # without the optimizer's state
    atomic_write_text(info, json.dumps(record))
    _log(f"whole distilled from parent {seed}: {seconds:.0f} s, test "
         f"{record['test_correct']}/{record['n_test']}")
    return subnet.load_model(path), record


def _predicted(model, x) -> np.ndarray:
    return np.concatenate([np.asarray(model(x[i:i + 1000], training=False)).argmax(-1)
                           for i in range(0, len(x), 1000)])


def _committed_whole(folder: Path, seed: int) -> dict | None:
    """The frontier's committed ``whole`` cell of this parent, if there is one."""
    cells = sorted((folder.parent.parent / "cells").glob(f"control_{seed}_whole_1_*.json"))
    if not cells:
        return None
    cell = json.loads(cells[0].read_text())
    return {"file": str(cells[0]), "test_accuracy": cell.get("test_accuracy"),
            "val_accuracy": cell.get("val_accuracy"), "epochs_run": cell.get("epochs_run"),
            "best_epoch": cell.get("best_epoch")}


def main(argv=None) -> int:
    args = _parse(argv)
    if args.readme_only:
        results = json.loads((Path(args.out) / "results.json").read_text())
        (Path(args.out) / "README.md").write_text(readme(results))
        return 0
    wall = time.perf_counter()

    import subnet
    from subnet.extraction import model_cost
    from subnet.io import atomic_write_text
    from subnet.pooling import expected_pooling_cost
    from subnet.predictive import deterministic, dropout_passes, paired_difference, unit_subnetworks

    mnist = subnet.load_dataset("mnist").subset(n_test=args.examples)
    fashion = subnet.load_dataset("fashion_mnist").subset(n_test=args.examples)
    x, y, x_ood = mnist.x_test, mnist.y_test, fashion.x_test
    cache = _Cache(args)
    main_parent = Path(args.parent)
    folders = sorted(p for p in Path(args.parents).glob("parent_s*")
                     if (p / "parent.keras").exists()) if args.parents else []
    if main_parent.resolve() not in [f.resolve() for f in folders]:
        folders = [main_parent, *folders]
    folders.sort(key=lambda f: (f.resolve() != main_parent.resolve(), f.name))
    models = {f: subnet.load_model(f / "parent.keras") for f in folders}
    model = models[folders[0]]
    flops = model_cost(subnet.with_dropout(model, on=False))["flops"]
    extra = expected_pooling_cost(subnet.expected_pooling(model))["flops"]
    probabilities, seconds, costs, measured, parents = {}, {}, {}, {}, {}

    def both(f):
        return lambda: (f(x), f(x_ood))

    def add(name, inside, outside, cost, took=None):
        probabilities[name] = (inside, outside)
        seconds[name] = took
        costs[name] = int(cost)

    # per parent: dropout off, expected pooling, dropout passes (the main parent's are the
    # ``--passes`` of the blog's experiment; the first k of them are k passes)
    per_parent = {}
    for f in folders:
        m, tag = models[f], f.name
        main_one = f == folders[0]
        det = cache.probabilities(f"deterministic@{tag}", both(lambda v, m=m: deterministic(
            m, v)))
        exp = cache.probabilities(f"expected_pooling@{tag}", both(
            lambda v, m=m: deterministic(subnet.expected_pooling(m), v)))
        k = args.passes if main_one else args.parent_passes
        drop = cache.probabilities(f"dropout@{tag}", both(
            lambda v, m=m, k=k: dropout_passes(m, v, k, seed=args.seed)), k)
        per_parent[tag] = (det, exp, drop)
    det, exp, drop = per_parent[folders[0].name]
    add("deterministic", det[0], det[1], flops, det[2])
    add("expected_pooling", exp[0], exp[1], flops + extra, exp[2])
    for k in PASS_COUNTS:
        if k <= args.passes:
            add(f"dropout_{k}", drop[0][:k], drop[1][:k], k * flops,
                round(drop[2] * k / args.passes, 1))
    whole, whole_record = _whole_distilled(args, cache, folders[0])
    w = cache.probabilities("whole_distilled", both(lambda v: deterministic(whole, v)),
                            whole_record)
    add("whole_distilled", w[0], w[1], model_cost(whole)["flops"], w[2])
    if len(folders) >= 2:
        n = len(folders)
        for name, index in (("ensemble_3_parents", 0), ("ensemble_3_parents_expected_pooling",
                                                        1)):
            parts = [per_parent[f.name][index] for f in folders]
            name = name.replace("3", str(n))
            add(name, np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
                n * (flops + (extra if index else 0)), round(sum(p[2] for p in parts), 1))
    u = cache.probabilities(f"unit_subnetworks_{args.subnetworks}", both(
        lambda v: unit_subnetworks(model, v, args.subnetworks, seed=args.seed)))
    add(f"unit_subnetworks_{args.subnetworks}", u[0], u[1], args.subnetworks * flops, u[2])
    for path in sorted(Path(args.models).glob("*.keras")):
        small = subnet.load_model(path)
        s = cache.probabilities(f"subnetwork:{path.name}", both(
            lambda v, m=small: deterministic(m, v)),
            hashlib.sha256(path.read_bytes()).hexdigest())
        add(f"subnetwork:{path.name}", s[0], s[1], model_cost(small)["flops"], s[2])

    for name, (inside, outside) in probabilities.items():
        measured[name] = cache.uncertainty(name, inside, y, outside)
    for f in folders:  # per parent: expected pooling against its first --parent-passes passes
        det, exp, drop = per_parent[f.name]
        k = min(args.parent_passes, len(drop[0]))
        main_one = f == folders[0]
        a = measured["expected_pooling"] if main_one else cache.uncertainty(
            f"expected_pooling@{f.name}", exp[0], y, exp[1])
        b = measured.get(f"dropout_{k}") if main_one else None
        b = b or cache.uncertainty(f"dropout_{k}@{f.name}", drop[0][:k], y, drop[1][:k])
        parents[f.name] = {
            "dropout_passes": k,
            "expected_pooling": {m: a.metrics[m].to_dict() for m, _ in HEADLINE},
            f"dropout_{k}": {m: b.metrics[m].to_dict() for m, _ in HEADLINE},
            "difference": {m: paired_difference(a, b, m).to_dict() for m, _ in HEADLINE}}

    results = {}
    for name, result in measured.items():
        results[name] = {"passes": result.n_passes, "seconds": seconds.get(name),
                         "flops": costs[name], "flops_x_parent": costs[name] / flops,
                         **result.to_dict()}
    differences = {}
    subnetworks = [k for k in measured if k.startswith("subnetwork:")]
    for a, b in (*PAIRS, *[(k, ref) for k in subnetworks
                           for ref in ("whole_distilled", "expected_pooling")]):
        if a in measured and b in measured:
            differences[f"{a} - {b}"] = {m: paired_difference(measured[a], measured[b],
                                                              m).to_dict() for m, _ in HEADLINE}
    training = json.loads((folders[0] / "training.json").read_text())
    seed = _parent_seed(folders[0])
    out = {"parent": str(folders[0]), "parent_epochs": training.get("epochs"),
           "parents": [str(f) for f in folders], "examples": len(y),
           "ood": "fashion_mnist test", "resamples": args.resamples, "seed": args.seed,
           "parent_flops": flops, "expected_pooling_extra_flops": extra,
           "flops_convention": "Conv/Dense, 2 per multiply-accumulate "
                               "(subnet.extraction.model_cost) times the passes or members; "
                               "expected pooling adds its sort-and-weight operations "
                               "(subnet.pooling.expected_pooling_cost); dropout's own masking "
                               "is not counted",
           "whole_distilled": {**whole_record, "committed_cell": _committed_whole(folders[0],
                                                                                  seed)},
           "versions": subnet.versions(), "predictors": results, "differences": differences,
           "per_parent": parents,
           "passes": args.passes,
           "dropout_seconds_all_passes": per_parent[folders[0].name][2][2],
           "wall_seconds_this_run": round(time.perf_counter() - wall, 1)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out) / "results.json", json.dumps(out, indent=1))
    atomic_write_text(Path(args.out) / "README.md", readme(out))
    print(json.dumps({name: {"flops_x_parent": round(r["flops_x_parent"], 3),
                             **{k: v["value"] for k, v in r["metrics"].items()
                                if k in dict(HEADLINE)}}
                      for name, r in results.items()}))
    return 0


# ------------------------------------------------------------------------------------ README

def _est(metric: dict | None, pct: bool = False) -> str:
    if not metric or metric.get("value") is None:
        return "—"
    f = (lambda v: f"{100 * v:.2f} %") if pct else (lambda v: f"{v:.3f}")
    return f"{f(metric['value'])} [{f(metric['low'])}, {f(metric['high'])}]"


def _diff(metric: dict | None, pct: bool = False) -> str:
    if not metric or metric.get("value") is None:
        return "—"
    f = (lambda v: f"{100 * v:+.2f} points") if pct else (lambda v: f"{v:+.4f}")
    return f"{f(metric['value'])} [{f(metric['low'])}, {f(metric['high'])}]"


def _compare(a: dict, b: dict) -> str:
    """'higher' / 'lower' when the 95 % intervals do not overlap, else 'within the intervals of'."""
    if None in (a.get("low"), a.get("high"), b.get("low"), b.get("high")):
        return "not comparable with (undefined)"
    if a["low"] > b["high"]:
        return "higher than"
    if a["high"] < b["low"]:
        return "lower than"
    return "within the intervals of"


def _verdict(difference: dict, better: str) -> str:
    """A paired difference (first minus second) in words: better, worse, or no difference the
    paired interval can tell."""
    low, high = difference.get("low"), difference.get("high")
    if low is None or high is None:
        return "undefined"
    if low > 0 or high < 0:
        up = low > 0
        return "better" if up == (better == "higher") else "worse"
    return "no different (the paired interval holds 0)"


def _verdicts(diff: dict) -> str:
    """'better on ...; no different on ...; worse on ...' over the headline metrics."""
    groups: dict[str, list[str]] = {"better": [], "no different": [], "worse": [],
                                    "undefined": []}
    for metric, better in HEADLINE:
        verdict = _verdict(diff[metric], better)
        groups["no different" if verdict.startswith("no different") else verdict].append(
            _LABELS[metric])
    parts = [f"{word} on {_and(names)}" for word, names in groups.items() if names]
    return "; ".join(parts)


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _parent_epochs(results: dict):
    """The parent's training epochs: recorded in the results, else read from its folder."""
    if results.get("parent_epochs") is not None:
        return results["parent_epochs"]
    path = Path(results["parent"]) / "training.json"
    return json.loads(path.read_text()).get("epochs", "?") if path.exists() else "?"


_LABELS = {"accuracy": "accuracy", "nll": "NLL", "brier": "Brier score",
           "ece": "calibration error (ECE)",
           "error_auroc_predictive_entropy": "error AUROC (entropy)",
           "ood_auroc_predictive_entropy": "OOD AUROC (entropy)"}


def _headline(results: dict) -> list[str]:
    p, d = results["predictors"], results.get("differences") or {}
    if "expected_pooling" not in p:
        return []
    rows = ["deterministic", "expected_pooling", "whole_distilled", "dropout_1", "dropout_10",
            "dropout_50", *[k for k in p if k.startswith("ensemble_")]]
    table = ["| predictor | FLOPs per example | accuracy | NLL | ECE | error AUROC (entropy) | "
             "OOD AUROC (entropy) |", "|---|---|---|---|---|---|---|"]
    for key in rows:
        if key not in p:
            continue
        m = p[key]["metrics"]
        table.append(f"| {_name(key)} | {p[key]['flops']:,} ({p[key]['flops_x_parent']:.2f}x) "
                     f"| {_est(m['accuracy'], True)} | {_est(m['nll'])} | {_est(m['ece'])} | "
                     f"{_est(m['error_auroc_predictive_entropy'])} | "
                     f"{_est(m['ood_auroc_predictive_entropy'])} |")
    lines = ["## The headline, at equal cost", "",
             "What test-time dropout buys is measured against the strongest cheap predictors, "
             "each at its inference cost (FLOPs per example: "
             f"{results['parent_flops']:,} for one deterministic pass of the parent, "
             f"{results['expected_pooling_extra_flops']:,} more for expected pooling).", "",
             *table, ""]
    sentences, table = [], []
    for a, b in (("expected_pooling", "dropout_10"), ("expected_pooling", "dropout_50"),
                 ("ensemble_3_parents_expected_pooling", "dropout_50"),
                 ("expected_pooling", "whole_distilled"),
                 ("expected_pooling", "ensemble_3_parents")):
        diff = d.get(f"{a} - {b}")
        if not diff:
            continue
        sentences.append(f"**{_name(a)}** ({p[a]['flops_x_parent']:.2f}x the parent's FLOPs) "
                         f"against **{_name(b)}** ({p[b]['flops_x_parent']:.2f}x): "
                         f"{_verdicts(diff)}.")
        table.append(f"| {_name(a)} − {_name(b)} | " + " | ".join(
            _diff(diff[m], m == "accuracy") for m, _ in HEADLINE) + " |")
    if sentences:
        lines += ["Paired differences (first minus second; 95 % paired bootstrap interval over "
                  "the same resampled images; better, worse or no different as the interval "
                  "says):", ""]
        lines += [f"- {s}" for s in sentences]
        lines += ["", "| first − second | " + " | ".join(_LABELS[m] for m, _ in HEADLINE)
                  + " |", "|---|" + "---|" * len(HEADLINE), *table]
    per = results.get("per_parent") or {}
    if per:
        lines += ["", "On every parent, expected pooling (one pass) against its first "
                  f"{next(iter(per.values()))['dropout_passes']} dropout passes "
                  "(difference, paired interval):", "",
                  "| parent | accuracy | NLL | ECE | error AUROC (entropy) | OOD AUROC (entropy) "
                  "|", "|---|---|---|---|---|---|"]
        for tag, r in per.items():
            k = r["dropout_passes"]
            cells = []
            for metric in ("accuracy", "nll", "ece", "error_auroc_predictive_entropy",
                           "ood_auroc_predictive_entropy"):
                pct = metric == "accuracy"
                def f(v, pct=pct):
                    return "—" if v is None else f"{100 * v:.2f} %" if pct else f"{v:.3f}"
                cells.append(f"{f(r['expected_pooling'][metric]['value'])} vs "
                             f"{f(r[f'dropout_{k}'][metric]['value'])} "
                             f"({_diff(r['difference'][metric], pct)})")
            lines.append(f"| `{tag}` | " + " | ".join(cells) + " |")
    w = results.get("whole_distilled") or {}
    if w:
        cell = w.get("committed_cell") or {}
        lines += ["", f"The whole distilled alike, rebuilt with the frontier's recipe from "
                  f"`{w['parent']}` (teacher {w['teacher_seconds']:.0f} s, fine-tuning "
                  f"{w['finetune_seconds']:.0f} s): {w['epochs_run']} epochs run, best epoch "
                  f"{w['best_epoch']}, "
                  f"test {w['test_correct']:,}/{w['n_test']:,}, validation "
                  f"{w['val_correct']:,}/{w['n_val']:,}"
                  + (f" (the frontier's committed cell: test {cell['test_accuracy']:.2%}, "
                     f"validation {cell['val_accuracy']:.2%})" if cell else "") + "."]
    return lines + [""]


def readme(results: dict) -> str:
    """The analysis in words, every number read from ``results`` (this script's JSON)."""
    p = results["predictors"]
    k_max = max(int(k.split("_")[1]) for k in p if k.startswith("dropout_"))
    det, ens = p["deterministic"]["metrics"], p[f"dropout_{k_max}"]["metrics"]
    one = p["dropout_1"]["metrics"]
    subnetworks = [k for k in p if k.startswith("subnetwork:")]
    units = [k for k in p if k.startswith("unit_subnetworks_")]
    rows = []
    for name, entry in p.items():
        m = entry["metrics"]
        cost = f"{entry['flops_x_parent']:.2f}x" if "flops_x_parent" in entry else "—"
        rows.append(f"| {name} | {cost} | {_est(m['accuracy'], True)} | {_est(m['nll'])} | "
                    f"{_est(m['ece'])} | {_est(m['error_auroc_predictive_entropy'])} | "
                    f"{_est(m['error_auroc_mutual_information'])} | "
                    f"{_est(m['ood_auroc_predictive_entropy'])} | "
                    f"{_est(m['ood_auroc_mutual_information'])} |")
    passes = [int(k.split("_")[1]) for k in p if k.startswith("dropout_")]
    floor = ens["error_auroc_predictive_entropy"]["low"]
    reached = [k for k in passes
               if (p[f"dropout_{k}"]["metrics"]["error_auroc_predictive_entropy"]["value"]
                   or 0.0) >= (floor if floor is not None else 1.0)]
    need = min(reached, default=k_max)
    lines = [
        "# How good is test-time dropout's uncertainty, and is it worth its cost?",
        "",
        f"Generated by `python analyses/uncertainty.py` from `results.json` (every number below "
        f"is read from it). The network: `{results['parent']}` (the blog's network, "
        f"{_parent_epochs(results)} epochs). "
        f"In distribution: the first {results['examples']:,} MNIST test images; out of "
        f"distribution: the {results['ood']} images. Intervals: 95 % percentile bootstrap over "
        f"examples ({results['resamples']:,} resamples). The {results.get('passes', k_max)} "
        f"dropout passes over "
        f"{2 * results['examples']:,} images took {results['dropout_seconds_all_passes']:.0f} s "
        "on this 2-core machine while other work ran.",
        "",
        *_headline(results),
        "## Does test-time dropout flag errors and unfamiliar inputs better than the softmax?",
        "",
        f"Errors: the predictive entropy of the {k_max}-pass ensemble separates wrong from right "
        f"predictions with AUROC {_est(ens['error_auroc_predictive_entropy'])}, "
        f"{_compare(ens['error_auroc_predictive_entropy'], det['error_auroc_predictive_entropy'])}"
        f" the softmax entropy of the network with dropout off "
        f"({_est(det['error_auroc_predictive_entropy'])}); its mutual information (the part of "
        f"the uncertainty that comes from the dropout masks) reaches "
        f"{_est(ens['error_auroc_mutual_information'])}. Out of distribution: entropy AUROC "
        f"{_est(ens['ood_auroc_predictive_entropy'])} for the ensemble against "
        f"{_est(det['ood_auroc_predictive_entropy'])} with dropout off "
        f"({_compare(ens['ood_auroc_predictive_entropy'], det['ood_auroc_predictive_entropy'])}"
        f" it); mutual information {_est(ens['ood_auroc_mutual_information'])}. The ensemble's "
        f"accuracy {_est(ens['accuracy'], True)} is {_compare(ens['accuracy'], det['accuracy'])}"
        f" the dropout-off network's {_est(det['accuracy'], True)}; its expected calibration "
        f"error {_est(ens['ece'])} is {_compare(ens['ece'], det['ece'])} "
        f"{_est(det['ece'])}, its NLL {_est(ens['nll'])} {_compare(ens['nll'], det['nll'])} "
        f"{_est(det['nll'])}. A single stochastic pass: accuracy {_est(one['accuracy'], True)}, "
        f"error AUROC {_est(one['error_auroc_predictive_entropy'])}. (Mutual information is 0 "
        "for a single prediction, so its AUROC is 0.5 there.)"
        + (" But dropout off is not the network's best single pass: see the headline above, "
           "where one pass with expected pooling is the comparator." if "expected_pooling" in p
           else ""),
        "",
        "## How many passes does it need?",
        "",
        f"Passes measured: {', '.join(map(str, sorted(passes)))}. The first number of passes "
        f"whose error-detection AUROC reaches the lower end of the {k_max}-pass interval: "
        f"{need}. See the table for accuracy, NLL and calibration by passes.",
    ]
    if units:
        u = p[units[0]]["metrics"]
        lines += ["", f"An ensemble of random *unit* subnetworks ({units[0].split('_')[-1]} of "
                  "them, each unit kept with probability 0.5: whole units dropped, not the "
                  f"blog's single elements): accuracy {_est(u['accuracy'], True)} "
                  f"({_compare(u['accuracy'], ens['accuracy'])} the {k_max}-pass dropout "
                  f"ensemble's), calibration error {_est(u['ece'])} "
                  f"({_compare(u['ece'], ens['ece'])} it), NLL {_est(u['nll'])} "
                  f"({_compare(u['nll'], ens['nll'])} it)."]
    if subnetworks:
        lines += ["", "## Do the trimmed subnetworks keep the whole's uncertainty?", ""]
        d = results.get("differences") or {}
        err, ood = "error_auroc_predictive_entropy", "ood_auroc_predictive_entropy"
        for name in subnetworks:
            m = p[name]["metrics"]
            cost = (f", {p[name]['flops_x_parent']:.2f}x the parent's FLOPs"
                    if "flops_x_parent" in p[name] else "")
            against = [f"against {_name(ref)}: {_verdicts(d[f'{name} - {ref}'])}"
                       for ref in ("whole_distilled", "expected_pooling")
                       if f"{name} - {ref}" in d]
            lines.append(
                f"`{name.split(':', 1)[1]}` (deterministic{cost}): accuracy "
                f"{_est(m['accuracy'], True)}, NLL {_est(m['nll'])}, calibration error "
                f"{_est(m['ece'])}, error AUROC {_est(m[err])}, out-of-distribution AUROC "
                f"{_est(m[ood])}" + (f"; {'; '.join(against)} (paired intervals)."
                                     if against else
                                     f" (calibration error {_compare(m['ece'], det['ece'])} "
                                     "the whole network's with dropout off)."))
            lines.append("")
        lines += ["Where the evidence is weak: one subnetwork per file (the frontier's, one "
                  "parent each), and the intervals are over test examples only (not over training "
                  "seeds); the per-parent table above is the only comparison over parents."]
    lines += ["", "## Every predictor", "",
              "FLOPs as multiples of one deterministic pass of the parent (random unit "
              "subnetworks as run: masked whole networks).", "",
              "| predictor | FLOPs | accuracy | NLL | ECE | error AUROC (entropy) | "
              "error AUROC (MI) | OOD AUROC (entropy) | OOD AUROC (MI) |",
              "|---|---|---|---|---|---|---|---|---|", *rows, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

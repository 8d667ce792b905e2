"""Validation of the importance estimators against ground truth. Prints one JSON object.

    python analyses/validate_importance.py [--model out/demo/seed.keras] [--quick]

1. Exact: on real MNIST networks small enough to enumerate (12 units), the Banzhaf estimate
   from 2,000 sampled masks (i.i.d. and antithetic, 4 record seeds) against the exact values
   from all 4,096 masks: Spearman rank correlation and how often the 95 % intervals cover the
   exact value.
2. The blog's network: per site, Spearman of every criterion against leave-one-out ablation;
   how many masks until the top-k set stops changing (Jaccard >= 0.9 between two seeds);
   and how few top-ranked units must be removed to bring accuracy to <= 20 % (the Neuron
   Shapley experiment), for mask statistics, L1 magnitude and random orderings.

Networks trained without dropout, at a keep probability chosen by subnet.keep.calibrate_keep:
analyses/validate_calibrated.py (reports/validate_importance).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import keras
import numpy as np
from scipy import stats

import subnet
from subnet.engine import make_backend
from subnet.engine.chain import analyse_chain
from subnet.importance import ablation, estimate, exact_banzhaf
from subnet.importance.exact import metric_from_probabilities
from subnet.train import fit


def _small_models(seed: int) -> dict:
    init = keras.initializers.GlorotUniform
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(8, activation="relu", kernel_initializer=init(seed))(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(4, activation="relu", kernel_initializer=init(seed + 1))(x)
    x = keras.layers.Dropout(0.5)(x)
    dense = keras.Model(inputs, keras.layers.Dense(10, activation="softmax",
                                                   kernel_initializer=init(seed + 2))(x),
                        name="dense_8_4")
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(3, 5, activation="relu", kernel_initializer=init(seed + 3))(inputs)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(3, 5, activation="relu", kernel_initializer=init(seed + 4))(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6, activation="relu", kernel_initializer=init(seed + 5))(x)
    x = keras.layers.Dropout(0.5)(x)
    conv = keras.Model(inputs, keras.layers.Dense(10, activation="softmax",
                                                  kernel_initializer=init(seed + 6))(x),
                       name="conv_3_3_6")
    return {"dense_8_4": dense, "conv_3_3_6": conv}


def validate_exact(data, masks: int, examples: int, seeds: int, workdir: Path) -> list[dict]:
    """Sampled Banzhaf estimates against exact enumeration on small trained networks, for i.i.d.
    and antithetic masks, over several record seeds."""
    out = []
    x, y = data.x_test[:examples], data.y_test[:examples]
    for name, model in _small_models(0).items():
        fit(model, data.x_train[:20000], data.y_train[:20000], epochs=3, progress=False, seed=0)
        exact = {metric: exact_banzhaf(model, x, y, metric=metric)
                 for metric in ("accuracy", "log_prob")}
        rows = {}
        for antithetic in (False, True):
            for seed in range(seeds):
                record = subnet.record_masks(model, x, y, masks, seed=seed, progress=False,
                                             antithetic=antithetic,
                                             out=workdir / f"{name}-{antithetic}-{seed}")
                for metric, truth in exact.items():
                    for estimator in ("least_squares", "difference"):
                        sampled = estimate(record, "banzhaf", metric=metric, estimator=estimator)
                        covered = (sampled.ci_low <= truth.scores) & \
                            (truth.scores <= sampled.ci_high)
                        key = (metric, "antithetic" if antithetic else "iid", estimator)
                        rows.setdefault(key, []).append((
                            float(stats.spearmanr(sampled.scores, truth.scores).statistic),
                            float(covered.mean())))
        for (metric, sampling, estimator), values in rows.items():
            spearman = [v[0] for v in values]
            coverage = [v[1] for v in values]
            out.append({"model": name, "units": int(exact[metric].n_units), "metric": metric,
                        "sampling": sampling, "estimator": estimator,
                        "exact_masks": exact[metric].details["n_masks"],
                        "sampled_masks": masks, "examples": int(len(y)), "seeds": seeds,
                        "full_metric": exact[metric].details["full_metric"],
                        "spearman_per_seed": [round(v, 4) for v in spearman],
                        "spearman_median": round(float(np.median(spearman)), 4),
                        "spearman_min": round(float(np.min(spearman)), 4),
                        "coverage_95_per_seed": [round(v, 4) for v in coverage],
                        "coverage_95_mean": round(float(np.mean(coverage)), 4)})
    return out


def _jaccard(a, b) -> float:
    a, b = set(map(int, a)), set(map(int, b))
    return len(a & b) / len(a | b)


def _removal_curve(engine, x, y, order: np.ndarray, n_units: int, floor: float) -> dict:
    """Remove units in ``order`` one by one (no rescaling); the count that first brings accuracy
    to <= floor, and the curve at a few counts."""
    masks = np.ones((n_units + 1, n_units), bool)
    for i in range(1, n_units + 1):
        masks[i:, order[i - 1]] = False
    accuracy = np.concatenate([
        metric_from_probabilities(engine.probabilities(x, masks[a:a + 64]), y, "accuracy")
        for a in range(0, len(masks), 64)])
    broken = np.flatnonzero(accuracy <= floor)
    return {"units_removed_to_reach_floor": int(broken[0]) if broken.size else None,
            "accuracy_after": {str(k): round(float(accuracy[k]), 4)
                               for k in (0, 1, 2, 5, 10, 20, 50, 100) if k <= n_units}}


def validate_blog(model, data, masks: int, examples: int, k: int, workdir: Path,
                  steps: list[int]) -> dict:
    x, y = data.x_test[:examples], data.y_test[:examples]
    table = subnet.sites(model)
    records = {s: subnet.record_masks(model, x, y, masks, seed=s, out=workdir / f"blog-{s}",
                                      progress=False) for s in (0, 1)}
    truth = ablation(model, x, y)
    scores = {"banzhaf": estimate(records[0], "banzhaf")}
    for name in ("magnitude", "activation", "apoz", "taylor", "random"):
        scores[name] = estimate((model, x, y), name)
    per_site = {}
    offsets = table.offsets
    for s, site in enumerate(table):
        a, b = offsets[s], offsets[s + 1]
        per_site[site.name] = {
            name: round(float(stats.spearmanr(imp.scores[a:b], truth.scores[a:b]).statistic), 4)
            for name, imp in scores.items()}
    overall = {name: round(float(stats.spearmanr(imp.scores, truth.scores).statistic), 4)
               for name, imp in scores.items()}

    stability = []
    for t in steps:
        if t > masks:
            break
        tops = []
        for s in (0, 1):
            sub = _prefix_record(records[s], t, workdir / f"prefix-{s}-{t}")
            tops.append(estimate(sub, "banzhaf").top(k))
        stability.append({"masks": t, "jaccard_top_k": round(_jaccard(*tops), 4)})
    stable_at = next((row["masks"] for row in stability if row["jaccard_top_k"] >= 0.9), None)

    chain = analyse_chain(model)
    engine = make_backend(chain, "auto", rescale=False)
    rng = np.random.default_rng(0)
    orders = {"banzhaf": scores["banzhaf"].rank(), "magnitude": scores["magnitude"].rank(),
              "ablation": truth.rank(), "random": rng.permutation(table.n_units)}
    breaking = {name: _removal_curve(engine, x, y, order, table.n_units, 0.2)
                for name, order in orders.items()}
    return {
        "examples": int(len(y)), "masks_per_seed": masks, "sites": table.names,
        "units": [int(u) for u in table.units],
        "full_accuracy": truth.details["full_metric"],
        "record_mean_mask_accuracy": round(float(records[0].mask_accuracy().mean()), 4),
        "spearman_vs_ablation_per_site": per_site,
        "spearman_vs_ablation_all_units": overall,
        "ablation_units_with_zero_effect": int(np.sum(truth.scores == 0)),
        "top_k": k, "top_k_stability": stability, "top_k_stable_at_masks": stable_at,
        "units_to_break_it": breaking,
    }


def _prefix_record(record, n: int, path: Path):
    """A copy of the record's first ``n`` masks (to study convergence without re-recording)."""
    meta = {key: value for key, value in record.meta.items()
            if key not in ("format", "num_classes")}
    meta["n_masks"] = n
    writer = subnet.MaskRecord.create(path, meta, record.labels, record.example_indices,
                                      num_classes=record.num_classes)
    for chunk in record.iter_chunks():
        if chunk.start >= n:
            break
        stop = min(chunk.stop, n) - chunk.start
        writer.write_chunk(chunk.start, chunk.masks[:stop], chunk.predicted[:stop],
                           chunk.true_prob[:stop])
    return writer.close()


def _json_ready(value):
    """NaN (e.g. a Spearman correlation of constant scores) becomes null: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="out/demo/seed.keras",
                        help="the blog's trained model (make demo writes it)")
    parser.add_argument("--quick", action="store_true", help="fewer masks and examples")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", RuntimeWarning)
    start = time.time()
    data = subnet.load_dataset("mnist")
    small = dict(masks=500, examples=300, seeds=2) if args.quick else \
        dict(masks=2000, examples=1000, seeds=4)
    blog = dict(masks=1500, examples=500, k=20, steps=[250, 500, 1000, 1500]) if args.quick \
        else dict(masks=6000, examples=2000, k=20, steps=[500, 1000, 2000, 4000, 6000])
    with tempfile.TemporaryDirectory() as tmp:
        exact = validate_exact(data, workdir=Path(tmp), **small)
        model_path = Path(args.model)
        if not model_path.exists():
            print(f"{model_path} is missing: run `make demo` first", file=sys.stderr)
            return 2
        blog_result = validate_blog(subnet.load_model(model_path), data, workdir=Path(tmp),
                                    **blog)
    result = {"exact_validation": exact, "blog_model": blog_result,
              "seconds": round(time.time() - start, 1)}
    print(json.dumps(_json_ready(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

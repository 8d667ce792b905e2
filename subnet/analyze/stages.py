"""The stages of an analysis, each a function of the model, the data and the settings whose
JSON result the runner stores: ``keep``, ``blog``, ``record``, ``importance``, ``comparison``
and ``uncertainty``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from subnet.analyze.settings import Settings
from subnet.masks import sample_masks
from subnet.record import NEAR_CHANCE, MaskRecord, choose_keep, keep_of_record, record_masks


def _keep(model, deterministic, data, settings: Settings, record_dir: Path) -> dict:
    """The keep probabilities of the record (:func:`subnet.record.choose_keep`): those of a
    record already in ``record_dir`` (--record's copy), else chosen on the last
    ``selection_examples`` training examples (those the comparison holds out to choose units
    on; never the test set), with the settings' seed."""
    if (record_dir / "meta.json").is_file():
        keep = keep_of_record(MaskRecord.load(record_dir).meta)
        return {"keep": keep.to_dict(), "check": None, "held_out": None,
                "how": "taken from the given record (--record)"}
    x = y = held_out = None
    if settings.rate == "auto" and data.x_train is not None and len(data.x_train) >= 10:
        n = min(settings.calibration_examples or settings.selection_examples,
                len(data.x_train))
        x, y = data.x_train[-n:], data.y_train[-n:]
        held_out = (f"the last {n} training examples (those the comparison holds out to choose "
                    "units on; never the test set)")
    keep, check = choose_keep(deterministic, settings.rate, x, y, seed=settings.seed,
                              held_out=held_out, rates_from=model)
    how = {"model": "the model's own dropout rates (kept units scaled by 1/q)",
           "given": f"--rate {settings.rate} for sites with no Dropout after them",
           "auto": "calibrated so that random subnetworks' mean accuracy sits halfway between "
                   "chance and the whole model"}[keep.source]
    return {"keep": keep.to_dict(), "check": check, "held_out": held_out, "how": how}


def _keep_words(keep) -> str:
    """``q = 0.86, kept units not rescaled``: a KeepProbabilities in words."""
    values = sorted(set(keep.keep.values()))
    q = f"q = {values[0]:.3g}" if len(values) == 1 else \
        "q = " + ", ".join(f"{n} {v:.3g}" for n, v in keep.keep.items())
    return q + (", kept units scaled by 1/q" if keep.rescale else ", kept units not rescaled")


def _keep_section(chosen: dict, recorded: dict) -> dict:
    """results.json's ``keep``: the keep probabilities per site, their source, how they were
    chosen, the statistic they define, and the record's masked-accuracy distribution with
    chance and the whole model."""
    accuracy = np.asarray(recorded["mask_accuracy"], float)
    chance, whole = recorded.get("chance"), recorded.get("whole")
    mean = float(accuracy.mean())
    edges = np.linspace(0.0, 1.0, 41)
    distribution = {
        "examples": recorded["record"]["n_examples"], "masks": int(len(accuracy)),
        "chance": chance, "whole": whole, "mean": mean,
        "std": float(accuracy.std(ddof=1)) if len(accuracy) > 1 else 0.0,
        "quantiles": {str(q): float(np.quantile(accuracy, q))
                      for q in (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)},
        "histogram": {"edges": edges.tolist(),
                      "counts": np.histogram(np.clip(accuracy, 0, 1), edges)[0].tolist()},
        "position": None, "near_chance": None}
    if chance is not None and whole is not None:
        distribution["near_chance"] = bool(mean - chance < NEAR_CHANCE)
        if whole - chance > 0:
            distribution["position"] = float((mean - chance) / (whole - chance))
    q = sorted(set(chosen["keep"]["keep"].values()))
    return {**chosen["keep"], "how": chosen["how"], "held_out": chosen["held_out"],
            "model_rates_check": chosen["check"],
            "statistic": ("q-weighted Banzhaf value (a binomial semivalue: E[metric | unit "
                          "kept] - E[metric | unit dropped] over masks keeping each unit with "
                          f"probability q; q = {q[0]:.3g}" + (" to " + f"{q[-1]:.3g}"
                                                               if len(q) > 1 else "")
                          + "; Banzhaf at q = 0.5)"),
            "mask_accuracy": distribution}


def _blog(model, deterministic, data, settings: Settings, keep) -> dict:
    """Test accuracy with dropout off and on; probability spread of a few test images."""
    from subnet.engine.mc import mc_dropout
    from subnet.extraction import accuracy
    from subnet.models import dropout_layers

    result = {"accuracy_dropout_off": accuracy(deterministic, data.x_test, data.y_test),
              "n_test": len(data.x_test), "accuracy_dropout_on_mean": None,
              "accuracy_dropout_on_std": None, "passes": settings.passes,
              "ensemble_accuracy": None, "dropout": "element-wise (Keras Dropout)"}
    picks = _example_picks(data.y_test)
    if dropout_layers(model):
        mc = mc_dropout(model, data.x_test, data.y_test, samples=settings.passes,
                        seed=settings.seed)
        summary = mc.summary()
        result.update(accuracy_dropout_on_mean=summary["accuracy"],
                      accuracy_dropout_on_std=summary["accuracy_std"],
                      ensemble_accuracy=summary["ensemble_accuracy"])
        probabilities = mc.probabilities[:, picks]
    else:
        from subnet.engine import make_backend
        from subnet.engine.chain import analyse_chain
        from subnet.plan import BLOG_MASKS

        result["dropout"] = (f"unit masks at keep {_keep_words(keep)} (the model has no "
                             "Dropout layer)")
        chain = analyse_chain(deterministic, keep.rates)
        masks = sample_masks(chain.table.unit_keep(), settings.seed, range(BLOG_MASKS))
        engine = make_backend(chain)
        engine.set_site_scale(keep.site_scale(chain.table.names))
        probabilities = engine.probabilities(data.x_test[picks], masks)
    result["examples"] = [
        {"index": int(i), "label": int(data.y_test[i]), "image": _image(data.x_test[i]),
         "prob_mean": probabilities[:, k].mean(axis=0).tolist(),
         "prob_std": probabilities[:, k].std(axis=0).tolist()}
        for k, i in enumerate(picks)]
    return result


def _example_picks(labels: np.ndarray, count: int = 4) -> list[int]:
    """The first test example of the first ``count`` classes, starting with a 7 (the blog's)."""
    order = [7] + [c for c in range(int(labels.max()) + 1) if c != 7]
    picks = []
    for c in order:
        hits = np.flatnonzero(labels == c)
        if len(hits):
            picks.append(int(hits[0]))
        if len(picks) == count:
            break
    return picks


def _image(x: np.ndarray):
    """An example as a nested list for the report (images only), rounded to 2 decimals."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] not in (1, 3) or x.shape[0] * x.shape[1] > 64 * 64:
        return None
    image = x[..., 0] if x.shape[-1] == 1 else x
    return np.round(np.clip(image, 0, 1), 2).tolist()


def _record(deterministic, data, settings: Settings, keep, record_dir: Path,
            progress: bool, executor=None) -> dict:
    from subnet.extraction import accuracy

    n = min(settings.examples, len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n]
    # A record already there (--record's copy, or an interrupted run's) goes on with the
    # backend that made it.
    backend = "auto"
    if (record_dir / "meta.json").is_file():
        backend = MaskRecord.load(record_dir).meta.get("backend") or "auto"
    record = record_masks(deterministic, x, y, settings.masks, seed=settings.seed, rate=keep,
                          out=record_dir, resume=True, progress=progress, executor=executor,
                          backend=backend)
    share = record.example_accuracy()
    predicted = record.predicted
    classes = int(deterministic.outputs[0].shape[-1])
    votes = np.stack([np.bincount(predicted[:, j], minlength=classes)
                      for j in range(predicted.shape[1])])
    mode = votes.argmax(axis=1)
    hardest = np.argsort(share, kind="stable")[:12]
    return {
        "mask_accuracy": record.mask_accuracy().tolist(),
        "vote_accuracy": float(np.mean(mode == y)),
        "chance": float(np.bincount(y).max() / len(y)),
        "whole": float(accuracy(deterministic, x, y)),
        "record": {"n_masks": record.n_masks, "n_examples": record.n_examples,
                   "seed": settings.seed, "path": "record"},
        "robustness": {
            "share_correct": share.tolist(),
            "always_right": float(np.mean(share == 1.0)),
            "never_right": float(np.mean(share == 0.0)),
            "hardest": [{"index": int(i), "label": int(y[i]), "share_correct": float(share[i]),
                         "predicted_mode": int(mode[i]), "image": _image(x[i])}
                        for i in hardest]},
    }


def _importance(record_dir: Path, alpha: float = 0.05, top: int = 30) -> dict:
    from subnet.importance import estimate
    from subnet.importance.from_record import class_importance, interactions

    record = MaskRecord.load(record_dir)
    importance = estimate(record, "banzhaf")
    significant = (importance.qvalue < alpha) if importance.qvalue is not None else \
        np.zeros(importance.n_units, bool)
    sites = {}
    scores = importance.sites.split(importance.scores)
    lows = importance.sites.split(importance.ci_low)
    highs = importance.sites.split(importance.ci_high)
    flags = importance.sites.split(significant)
    for name in importance.sites.names:
        sites[name] = {"scores": scores[name].tolist(), "low": lows[name].tolist(),
                       "high": highs[name].tolist(),
                       "significant": [bool(v) for v in flags[name]]}
    labels = _unit_labels(importance.sites)
    result = {"method": "banzhaf", "metric": importance.details.get("metric", "accuracy"),
              "estimator": importance.details.get("estimator"), "n_masks": record.n_masks,
              "alpha": alpha, "sites": sites, "n_significant": int(significant.sum()),
              "class_conditional": None, "interactions": None, "notes": [],
              # which engine evaluated the masks, and why if not the one asked for
              "record_backend": record.meta.get("backend"),
              "record_backend_fallback": record.meta.get("backend_fallback")}
    chosen = importance.top(min(top, importance.n_units))
    try:
        by_class = class_importance(record)
        result["class_conditional"] = {
            "classes": [int(c) for c in by_class.details.get(
                "classes", range(by_class.scores.shape[0]))],
            "units": [labels[u] for u in chosen],
            "matrix": by_class.scores[:, chosen].tolist()}
    except ValueError as err:
        result["notes"].append(f"class-conditional importance not computed: {err}")
    try:
        graph = interactions(record, k=min(20, importance.n_units), importance=importance)
        result["interactions"] = {
            "nodes": [{"id": labels[n], "site": d["site"], "unit": d["unit"],
                       "score": d["score"]} for n, d in graph.nodes(data=True)],
            "edges": [{"source": labels[a], "target": labels[b], "weight": d["weight"],
                       "qvalue": d["qvalue"], "kind": d["kind"]}
                      for a, b, d in graph.edges(data=True)]}
    except ValueError as err:
        result["notes"].append(f"interactions not computed: {err}")
    return result


def _unit_labels(table) -> list[str]:
    return [f"{site.name}:{i}" for site in table for i in range(site.units)]


def _comparison(deterministic, data, settings: Settings, keep, out: Path,
                progress: bool, parent=None, executor=None,
                dense_accuracy: float | None = None) -> dict | None:
    """The comparison of the methods; mask statistics at ``keep`` (a KeepProbabilities: its
    keep probabilities and its rescaling, as the record was made); ``dense_accuracy``: the
    whole model's test accuracy, if the blog's stage measured it on the same test set."""
    from subnet.comparison import compare

    if data.x_train is None:
        return None
    methods = list(settings.methods)
    if settings.protocol == "thorough":
        from subnet.frontier import compare_gradual
        from subnet.models import dropout_layers
        from subnet.protocol import Protocol

        protocol = Protocol.preset("thorough", budgets=tuple(settings.budgets),
                                   seeds=tuple(settings.seeds))
        result = compare_gradual(
            deterministic, data, methods, protocol, out=out / "frontier",
            models_dir=out / "models", progress=progress, executor=executor,
            teacher_model=parent if parent is not None and dropout_layers(parent) else None)
        return {**result.to_dict(), "summary": result.summary()}
    result = compare(deterministic, data, methods, settings.budgets, settings.seeds,
                     finetune_epochs=settings.finetune_epochs,
                     selection_examples=settings.selection_examples, n_masks=settings.masks,
                     steps_per_halving=settings.steps_per_halving,
                     step_masks=settings.step_masks, rate=keep,
                     reference_method="banzhaf_iterative" if "banzhaf_iterative" in methods
                     else methods[0],
                     out=out / "comparison.json", models_dir=out / "models",
                     latency_repeats=settings.latency_repeats, dense_accuracy=dense_accuracy,
                     progress=progress, executor=executor)
    return {**result.to_dict(), "summary": result.summary()}


def _subnetwork_files(comparison: dict | None, settings: Settings) -> dict[str, str]:
    """{predictor name: model file} of the comparison's subnetworks of the first seed."""
    rows = [r for r in (comparison or {}).get("rows", [])
            if r.get("model_file") and r.get("seed") == settings.seed]
    return {f"subnetwork_{r['method']}@{r['budget_flops_fraction']:g}": r["model_file"]
            for r in rows}


def _uncertainty(model, data, settings: Settings, rate: dict, ood,
                 subnetworks: dict[str, str] | None = None, *, trust: bool = False,
                 rescale: bool = True) -> dict:
    """How good the network's uncertainty is (:func:`subnet.uncertainty`): the deterministic
    network, test-time dropout with 1 to ``uncertainty_passes`` passes, as many random unit
    subnetworks, and each extracted subnetwork (deterministic), on ``examples`` test examples,
    against the out-of-distribution set if any."""
    from subnet.models import dropout_layers
    from subnet.predictive import (
        SCORES,
        deterministic,
        dropout_passes,
        uncertainty,
        unit_subnetworks,
    )

    n = min(settings.examples, len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n]
    x_ood = None if ood is None else ood.x_test
    passes = settings.uncertainty_passes
    predictors: dict = {}

    def both(make):
        return make(x), (None if x_ood is None else make(x_ood))

    runs = {"deterministic": both(lambda v: deterministic(model, v))}
    if dropout_layers(model):
        p, q = both(lambda v: dropout_passes(model, v, passes, seed=settings.seed))
        for k in sorted({1, *[k for k in (2, 5, 10, 20, 50) if k < passes], passes}):
            runs[f"dropout_{k}"] = (p[:k], None if q is None else q[:k])
        ensemble = f"dropout_{passes}"
    else:
        ensemble = None
    runs[f"unit_subnetworks_{passes}"] = both(
        lambda v: unit_subnetworks(model, v, passes, rate=rate, seed=settings.seed,
                                   rescale=rescale))
    ensemble = ensemble or f"unit_subnetworks_{passes}"
    from subnet.models import load_model

    for name, path in (subnetworks or {}).items():
        if Path(path).exists():  # the comparison's own output (dropout already left out)
            small = load_model(path, trust=trust)
            runs[name] = both(lambda v, m=small: deterministic(m, v))
    results = {name: uncertainty(p, y, ood=q, resamples=200, seed=settings.seed)
               for name, (p, q) in runs.items()}
    for name, result in results.items():
        predictors[name] = {"passes": result.n_passes, "metrics": {
            k: v.to_dict() for k, v in result.metrics.items()},
            "reliability": result.reliability, "coverage": result.coverage}
    edges = np.linspace(0.0, float(np.log(data.num_classes)), 31)

    def histogram(values):
        return np.histogram(np.clip(values, 0, edges[-1]), bins=edges)[0].tolist()

    histograms = {}
    for name in ("deterministic", ensemble):
        result = results[name]
        entropy = result.scores["predictive_entropy"]
        histograms[name] = {"right": histogram(entropy[result.correct]),
                            "wrong": histogram(entropy[~result.correct]),
                            "ood": None if result.ood_scores is None else
                            histogram(result.ood_scores["predictive_entropy"])}
    # The blog's image-level view: the examples whose probabilities move most across passes.
    p = runs[ensemble][0]
    spread = p.std(axis=0).max(axis=-1)
    correct = results[ensemble].correct
    moving = []
    for right in (True, False):
        candidates = np.flatnonzero(correct == right)
        for i in candidates[np.argsort(-spread[candidates], kind="stable")][:3]:
            moving.append({"index": int(i), "label": int(y[i]), "right": bool(right),
                           "image": _image(x[i]), "prob_mean": p[:, i].mean(axis=0).tolist(),
                           "prob_std": p[:, i].std(axis=0).tolist()})
    return {"examples": n, "passes": passes, "ensemble": ensemble, "scores": list(SCORES),
            "ood": None if ood is None else {"name": ood.name, "fingerprint": ood.fingerprint(),
                                             "examples": len(ood.x_test)},
            "predictors": predictors, "entropy_edges": edges.tolist(),
            "entropy_histograms": histograms, "moving_examples": moving}

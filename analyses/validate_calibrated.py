"""The importance at a calibrated keep probability, validated on networks trained without dropout.

    TF_NUM_INTRAOP_THREADS=1 python analyses/validate_calibrated.py
        [--out reports/validate_importance] [--quick]

At keep probability q (every unit kept independently with probability q), a unit's importance
E[metric | kept] - E[metric | dropped] is its q-weighted Banzhaf value in the game "set of kept
units -> metric" (a binomial semivalue; the classic Banzhaf value at q = 0.5). With 1/q
rescaling the game itself depends on q (kept units are scaled by 1/q).
``analyses/validate_importance.py`` checks the record estimators against exact enumeration on
networks trained *with* dropout, at their own rate. This script does the same where
:func:`subnet.keep.calibrate_keep` chooses q, on tiny MNIST networks trained *without* any
Dropout layer (12 units each over 2 or 3 sites, so all 4,096 masks can be enumerated), for the
metrics ``accuracy`` and ``log_prob`` (mean log probability of the true class):

1. **Exact against sampled records.** q from ``calibrate_keep`` on held-out training examples
   (never the test images; the rule: random subnetworks' mean accuracy halfway between chance
   and the whole model); the exact q-weighted Banzhaf values from all 2^12 masks
   (:func:`subnet.importance.exact_banzhaf`); ``estimate(record, "banzhaf")`` from
   :func:`subnet.record_masks` records over several seeds: Spearman's rank correlation with the
   exact values and the fraction of exact values inside the 95 % intervals. Targets: Spearman
   >= 0.95, coverage >= 0.9. The same at q = 0.5 with 1/q rescaling (the old suggestion
   ``--rate 0.5`` for a site without dropout) and at q = 0.95 and 0.99 without rescaling
   (random subnetworks close to the whole: accuracy near saturation).
2. **Many records, simulated exactly.** Every mask's metric is in the enumerated table, and a
   record's per-mask metric is that table looked up at its masks (checked on every record
   above: the largest difference is stored). So records of any length can be drawn from the
   table without evaluating the model: i.i.d. masks, the same estimator (least squares with
   HC1 standard errors on the units the masks vary, as ``estimate`` does), and the same
   masks for both metrics (a paired comparison). This gives the intervals' coverage over many
   records (four seeds' coverage is noisy: one record's errors are correlated across units)
   and rank stability over many independent pairs of records.
3. **Rank stability per metric.** For each number of masks: Spearman between two independent
   records' estimates (median over pairs), their top-k overlap (Jaccard), and Spearman with the
   exact values of the metric itself and with the exact *accuracy* values (how well each
   metric ranks units by what random subnetworks' accuracy loses without them). A ranking is
   stable from the first number of masks at which the median stays at or above the threshold
   for every larger number. Which metric gets there with fewer masks is the measured answer to
   which metric should be the default.

Writes ``--out/results.json`` and ``--out/README.md`` (generated from the JSON) and prints the
JSON. Everything is seeded: models, training order, calibration masks, record masks and the
simulated records.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("accuracy", "log_prob")
#: Spearman with exact values and interval coverage that the estimator must reach.
TARGET_SPEARMAN, TARGET_COVERAGE = 0.95, 0.9
#: Median Spearman between two records' estimates from which a ranking counts as stable.
STABLE_SPEARMAN = 0.9
#: Median top-k Jaccard between two records from which the top set counts as stable.
STABLE_JACCARD = 0.9
#: Stability criteria: (curve key, threshold).
CRITERIA = {"pair_spearman": STABLE_SPEARMAN, "pair_top_k_jaccard": STABLE_JACCARD,
            "exact_spearman": TARGET_SPEARMAN, "exact_accuracy_spearman": TARGET_SPEARMAN}


# ----------------------------------------------------------------------------- pure functions

def spearman(a, b) -> float:
    """Spearman's rank correlation of two score vectors; NaN where either has a NaN (a unit
    the masks never dropped) or is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"Invalid value for arguments `a`, `b`: expected two 1-D arrays of one "
                         f"length. Received shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def interval_coverage(low, high, truth) -> float:
    """Fraction of ``truth`` inside [low, high] (NaN bounds count as not covering)."""
    low, high, truth = (np.asarray(v, float) for v in (low, high, truth))
    return float(np.mean((low <= truth) & (truth <= high)))


def top_k(scores, k: int) -> set[int]:
    """The indices of the ``k`` largest scores (ties: the lower index first; NaN last)."""
    scores = np.asarray(scores, float)
    order = np.lexsort((np.arange(len(scores)), -np.nan_to_num(scores, nan=-np.inf)))
    return set(int(i) for i in order[:k])


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b| (1 for two empty sets)."""
    return len(a & b) / len(a | b) if a | b else 1.0


def pairwise(estimates: list, fn) -> list[float]:
    """``fn(a, b)`` over every unordered pair of ``estimates`` (one per record seed)."""
    return [fn(a, b) for a, b in itertools.combinations(estimates, 2)]


def median(values) -> float | None:
    """Median of the values, a NaN counted as failing (-inf); None if all are NaN."""
    values = np.asarray(values, float)
    if values.size == 0 or not np.isfinite(values).any():
        return None
    return float(np.median(np.where(np.isfinite(values), values, -np.inf)))


def stable_from(curve: list[dict], key: str, threshold: float) -> int | None:
    """The fewest masks from which ``curve``'s ``key`` stays >= ``threshold`` at every larger
    number of masks (a None value fails); None if the last row fails."""
    reached = None
    for row in sorted(curve, key=lambda r: r["masks"]):
        value = row.get(key)
        if value is not None and value >= threshold:
            reached = row["masks"] if reached is None else reached
        else:
            reached = None
    return reached


def fewer_masks(accuracy: int | None, log_prob: int | None) -> str:
    """Which metric is stable with fewer masks: "accuracy", "log_prob", "tie" or "neither"
    (None means not within the masks tried, i.e. more than all of them)."""
    if accuracy is None and log_prob is None:
        return "neither"
    if accuracy is None or (log_prob is not None and log_prob < accuracy):
        return "log_prob"
    if log_prob is None or accuracy < log_prob:
        return "accuracy"
    return "tie"


def scale_position(mean_accuracy: float, chance: float, whole: float) -> float:
    """Where random subnetworks sit between chance (0) and the whole model (1)."""
    if whole <= chance:
        raise ValueError(f"Invalid values: the whole model ({whole}) must beat chance "
                         f"({chance}).")
    return (mean_accuracy - chance) / (whole - chance)


def enumerated_masks(n_units: int) -> np.ndarray:
    """All 2^n masks, bool (2^n, n); row r keeps unit i iff bit i of r is set (the order
    :func:`subnet.importance.exact_banzhaf` enumerates them in)."""
    return ((np.arange(2 ** n_units)[:, None] >> np.arange(n_units)) & 1).astype(bool)


def table_rows(masks: np.ndarray) -> np.ndarray:
    """The row of :func:`enumerated_masks` equal to each mask, int64 (n_masks,)."""
    masks = np.asarray(masks, bool)
    return (masks.astype(np.int64) << np.arange(masks.shape[1])).sum(axis=1)


def exact_from_table(values: np.ndarray, keep: float) -> np.ndarray:
    """q-weighted Banzhaf values E[f | kept] - E[f | dropped] of every unit, from the metric
    of every mask (``values`` in :func:`enumerated_masks` order) at keep probability q."""
    values = np.asarray(values, float)
    n = int(round(np.log2(len(values))))
    if 2 ** n != len(values):
        raise ValueError(f"Invalid value for argument `values`: expected one value per mask, "
                         f"2^n of them. Received {len(values)}")
    masks = enumerated_masks(n)
    weight = np.prod(np.where(masks, keep, 1.0 - keep), axis=1) * values
    return weight @ masks / keep - weight @ ~masks / (1.0 - keep)


def main_effects(masks: np.ndarray, values: np.ndarray, dof_floor: int = 1):
    """What ``estimate(record, "banzhaf")`` computes from a record's masks and per-mask metric
    with at least 2 x (units + 1) masks: least squares on the units the masks vary, HC1
    standard errors, Student-t 95 % intervals; units that never vary get NaN.

    Returns:
        (scores, ci_low, ci_high), float64 (n_units,) each.
    """
    from subnet.importance.core import normal_intervals
    from subnet.importance.from_record import least_squares

    masks = np.asarray(masks, bool)
    varies = masks.any(axis=0) & ~masks.all(axis=0)
    scores = np.full(masks.shape[1], np.nan)
    stderr = np.full(masks.shape[1], np.nan)
    if varies.sum() and len(masks) > varies.sum() + dof_floor:
        beta, se, dof = least_squares(masks[:, varies], values)
        scores[varies], stderr[varies] = beta, se
        low, high, _ = normal_intervals(scores, stderr, dof)
        return scores, low, high
    return scores, scores.copy(), scores.copy()


def simulate(tables: dict, keep: float, *, masks: int, prefixes: list[int], records: int,
             top_k_units: int, seed: int = 0) -> dict:
    """Records drawn from enumerated outcome tables: coverage and rank stability per metric.

    Args:
        tables: {metric: per-mask metric of every mask, in :func:`enumerated_masks` order};
            one "accuracy" table is needed for the Spearman with exact accuracy values.
        keep: The keep probability of every unit.
        masks: Masks per simulated record (its intervals' coverage is measured here).
        prefixes: Numbers of masks at which the stability is measured (<= ``masks``).
        records: Simulated records (an even number: consecutive pairs are compared), the same
            masks for every metric.
        top_k_units: k of the top-k overlap.
        seed: Seeds the masks (numpy's PCG64).

    Returns:
        {"coverage_95": {metric: mean coverage}, "spearman_median": {metric: median Spearman
        with the exact values at ``masks``}, "curve": {metric: [{masks, pair_spearman,
        pair_top_k_jaccard, exact_spearman, exact_accuracy_spearman}]}}.
    """
    if records < 2 or records % 2:
        raise ValueError(f"Invalid value for argument `records`: expected an even number >= 2. "
                         f"Received: records={records!r}")
    if "accuracy" not in tables:
        raise ValueError("Invalid value for argument `tables`: an 'accuracy' table is needed.")
    n = int(round(np.log2(len(next(iter(tables.values()))))))
    exact = {m: exact_from_table(v, keep) for m, v in tables.items()}
    rng = np.random.default_rng(seed)
    prefixes = sorted(t for t in prefixes if t <= masks)
    scores = {m: np.empty((records, len(prefixes), n)) for m in tables}
    covered = {m: [] for m in tables}
    for r in range(records):
        drawn = rng.random((masks, n)) < keep
        rows = table_rows(drawn)
        for m, table in tables.items():
            values = np.asarray(table, float)[rows]
            for j, t in enumerate(prefixes):
                scores[m][r, j] = main_effects(drawn[:t], values[:t])[0]
            _, low, high = main_effects(drawn, values)
            covered[m].append(interval_coverage(low, high, exact[m]))
    curve = {m: [] for m in tables}
    for m in tables:
        for j, t in enumerate(prefixes):
            est = scores[m][:, j]
            pairs = list(zip(est[0::2], est[1::2], strict=True))
            curve[m].append({
                "masks": t,
                "pair_spearman": median([spearman(a, b) for a, b in pairs]),
                "pair_top_k_jaccard": median([jaccard(top_k(a, top_k_units),
                                                      top_k(b, top_k_units)) for a, b in pairs]),
                "exact_spearman": median([spearman(e, exact[m]) for e in est]),
                "exact_accuracy_spearman": median([spearman(e, exact["accuracy"])
                                                   for e in est])})
    return {"records": records, "masks": masks,
            "coverage_95": {m: float(np.mean(c)) for m, c in covered.items()},
            "spearman_median": {m: curve[m][-1]["exact_spearman"] if prefixes[-1] == masks
                                else None for m in tables},
            "curve": curve}


def stable_masks(curve: dict) -> dict:
    """{metric: {criterion: fewest masks from which it holds}} for a :func:`simulate` curve."""
    return {m: {key: stable_from(rows, key, threshold) for key, threshold in CRITERIA.items()}
            for m, rows in curve.items()}


def verdict(rows: list[dict]) -> dict:
    """The metric comparison over every (model, keep setting): per stability criterion, how
    often each metric was stable with fewer masks, overall and per setting."""
    out = {}
    for criterion in CRITERIA:
        tally = {"accuracy": 0, "log_prob": 0, "tie": 0, "neither": 0}
        by_setting: dict[str, dict] = {}
        for row in rows:
            need = {m: row["stable_from_masks"][m][criterion] for m in METRICS}
            winner = fewer_masks(need["accuracy"], need["log_prob"])
            tally[winner] += 1
            by_setting.setdefault(row["setting"], {"accuracy": 0, "log_prob": 0, "tie": 0,
                                                   "neither": 0})[winner] += 1
        out[criterion] = {"fewer_masks": tally, "by_setting": by_setting}
    return out


def summary(result: dict) -> dict:
    """What the tables say, counted from them: per keep setting, the rows (model x metric)
    meeting the targets, the median over models of the masks each metric needs for a stable
    ranking (pair Spearman), and how often each metric's estimates reach the exact accuracy
    ranking (Spearman >= 0.95) within the masks tried."""
    out: dict[str, dict] = {}
    for row in result["exact_validation"]:
        entry = out.setdefault(row["setting"], {"targets_met": 0, "rows": 0, "keep": []})
        entry["targets_met"] += bool(row["targets_met"])
        entry["rows"] += 1
        entry["keep"].append(row["keep"])
    for row in result["stability"]:
        entry = out[row["setting"]]
        for m in METRICS:
            need = row["stable_from_masks"][m]
            entry.setdefault(f"pair_stable_{m}", []).append(need["pair_spearman"])
            entry.setdefault(f"reaches_exact_accuracy_{m}", 0)
            entry[f"reaches_exact_accuracy_{m}"] += need["exact_accuracy_spearman"] is not None
        entry.setdefault("models", 0)
        entry["models"] += 1
    for entry in out.values():
        entry["keep"] = [min(entry["keep"]), max(entry["keep"])]
        for m in METRICS:
            need = entry[f"pair_stable_{m}"]
            entry[f"pair_stable_{m}"] = (None if None in need
                                         else float(np.median(need)))
    return out


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def readme(result: dict) -> str:
    """README.md generated from the result (tables; the numbers are the JSON's)."""
    cfg = result["config"]
    lines = [
        "# The importance at a calibrated keep probability, on networks trained without dropout",
        "",
        "Generated by `python analyses/validate_calibrated.py` from `results.json` "
        f"({result['seconds']:,} s wall time, {result['threads']} intra-op thread(s) on a shared "
        "2-core machine). At keep probability q, a unit's importance "
        "E[metric | kept] - E[metric | dropped] is its **q-weighted Banzhaf value** (a binomial "
        "semivalue; the classic Banzhaf value at q = 0.5). Tiny MNIST networks (12 units) "
        f"trained without any Dropout layer on {cfg['train_examples']:,} training images for "
        f"{cfg['epochs']} epochs; q calibrated on {cfg['calibration_examples']} held-out training "
        f"images (target: halfway between chance and the whole); exact values from all 4,096 "
        f"masks; estimates from {cfg['masks']:,}-mask records; all on {cfg['examples']} test "
        f"images. Targets: Spearman >= {TARGET_SPEARMAN}, 95 % interval coverage >= "
        f"{TARGET_COVERAGE}.",
        "",
        "## Summary (counted from the tables below)",
        "",
        "| setting | q | rows meeting the targets | median masks to a stable ranking, accuracy / "
        "log_prob | models whose estimates reach the exact accuracy ranking, accuracy / "
        "log_prob |",
        "|---|---|---|---|---|",
        *(f"| {name} | {_fmt(e['keep'][0], 4)}-{_fmt(e['keep'][1], 4)} | {e['targets_met']} of "
          f"{e['rows']} | {_fmt(e['pair_stable_accuracy'], 0)} / "
          f"{_fmt(e['pair_stable_log_prob'], 0)} | {e['reaches_exact_accuracy_accuracy']} / "
          f"{e['reaches_exact_accuracy_log_prob']} of {e['models']} |"
          for name, e in summary(result).items()),
        "",
        "## Exact against sampled",
        "",
        f"Real records: {cfg['record_seeds']} `record_masks` seeds. Simulated: "
        f"{cfg['simulated_records']} records drawn from the enumerated outcomes (a record's "
        "per-mask metric equals the table at its masks: largest difference "
        f"{_fmt(result['record_vs_table_max_abs_diff'], 2)}). Position: random subnetworks' "
        "mean test accuracy between chance (0) and the whole model (1).",
        "",
        "| model | setting | q | 1/q | mean masked acc. (chance, whole) | position | metric | "
        "Spearman median (min), real | coverage mean (min), real | Spearman median, simulated "
        "| coverage, simulated | targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["exact_validation"]:
        lines.append(
            f"| {row['model']} | {row['setting']} | {row['keep']:.4f} | {_fmt(row['rescale'])} | "
            f"{row['mean_masked_accuracy']:.3f} ({row['chance']:.3f}, {row['whole']:.3f}) | "
            f"{row['position']:.2f} | {row['metric']} | {_fmt(row['spearman_median'])} "
            f"({_fmt(row['spearman_min'])}) | {_fmt(row['coverage_95_mean'])} "
            f"({_fmt(row['coverage_95_min'])}) | {_fmt(row['simulated_spearman_median'])} | "
            f"{_fmt(row['simulated_coverage_95'])} | "
            f"{'met' if row['targets_met'] else 'not met'} |")
    lines += [
        "",
        "Targets met: real records' median Spearman >= 0.95 and simulated coverage >= 0.9.",
        "",
        "## Masks until the ranking is stable (simulated records)",
        "",
        f"Fewest masks from which the median over {cfg['simulated_records'] // 2} pairs of "
        f"independent records stays >= {STABLE_SPEARMAN} (Spearman between the two; top-"
        f"{cfg['top_k']} Jaccard >= {STABLE_JACCARD}), or the median over records of Spearman "
        f"with the exact values (of the metric itself; of accuracy) stays >= {TARGET_SPEARMAN}; "
        f"masks tried: {cfg['prefixes']}; '-' means not within {cfg['masks']:,}.",
        "",
        "| model | setting | position | metric | pair Spearman | top-k Jaccard | "
        "exact (own) | exact accuracy | at 200 masks: pair / exact acc. Spearman |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["stability"]:
        for metric in METRICS:
            need = row["stable_from_masks"][metric]
            at = next((r for r in row["curve"][metric] if r["masks"] == 200), {})
            lines.append(
                f"| {row['model']} | {row['setting']} | {row['position']:.2f} | {metric} | "
                f"{_fmt(need['pair_spearman'])} | {_fmt(need['pair_top_k_jaccard'])} | "
                f"{_fmt(need['exact_spearman'])} | {_fmt(need['exact_accuracy_spearman'])} | "
                f"{_fmt(at.get('pair_spearman'))} / {_fmt(at.get('exact_accuracy_spearman'))} |")
    lines += ["", "## Which metric needs fewer masks", "",
              "Over the model x setting rows above: how often each metric is stable with fewer "
              "masks.", "",
              "| criterion | accuracy fewer | log_prob fewer | tie | neither stable |",
              "|---|---|---|---|---|"]
    for criterion, entry in result["verdict"].items():
        t = entry["fewer_masks"]
        lines.append(f"| {criterion} | {t['accuracy']} | {t['log_prob']} | {t['tie']} | "
                     f"{t['neither']} |")
    lines += ["", "Pair Spearman per setting: " + "; ".join(
        f"{s}: accuracy {c['accuracy']}, log_prob {c['log_prob']}, tie {c['tie']}, "
        f"neither {c['neither']}"
        for s, c in result["verdict"]["pair_spearman"]["by_setting"].items()) + ".", ""]
    rho = [row["exact_accuracy_vs_log_prob_spearman"] for row in result["stability"]]
    lines += [f"Spearman between the exact accuracy and exact log_prob values of one model and "
              f"setting: {min(rho):.3f} to {max(rho):.3f} (the two metrics rank units "
              "differently).", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- measurements

def tiny_models(seed: int) -> dict:
    """Three MNIST classifiers of 12 units without any Dropout layer: dense 8-4, dense 6-6
    and conv 3-3 + dense 6 (2, 2 and 3 sites)."""
    import keras

    init = keras.initializers.GlorotUniform

    def dense(widths, name):
        inputs = keras.Input((28, 28, 1))
        x = keras.layers.Flatten()(inputs)
        for i, width in enumerate(widths):
            x = keras.layers.Dense(width, activation="relu", kernel_initializer=init(seed + i))(x)
        out = keras.layers.Dense(10, activation="softmax", kernel_initializer=init(seed + 9))(x)
        return keras.Model(inputs, out, name=name)

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(3, 5, activation="relu", kernel_initializer=init(seed + 3))(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(3, 5, activation="relu", kernel_initializer=init(seed + 4))(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6, activation="relu", kernel_initializer=init(seed + 5))(x)
    out = keras.layers.Dense(10, activation="softmax", kernel_initializer=init(seed + 6))(x)
    conv = keras.Model(inputs, out, name="conv_3_3_6")
    return {"dense_8_4": dense((8, 4), "dense_8_4"), "dense_6_6": dense((6, 6), "dense_6_6"),
            "conv_3_3_6": conv}


def outcome_tables(model, x, y, *, keep: float, rescale: bool, chunk: int = 256) -> dict:
    """{metric: the metric of every mask, in :func:`enumerated_masks` order}, evaluated with
    the masking :func:`subnet.record_masks` uses (one engine pass over all masks)."""
    from subnet.engine import make_backend
    from subnet.engine.chain import analyse_chain
    from subnet.importance.exact import metric_from_probabilities

    chain = analyse_chain(model, 1.0 - keep)
    engine = make_backend(chain, "auto", rescale=rescale)
    masks = enumerated_masks(chain.table.n_units)
    tables = {m: [] for m in METRICS}
    for a in range(0, len(masks), chunk):
        probabilities = engine.probabilities(x, masks[a:a + chunk])
        for m in METRICS:
            tables[m].append(metric_from_probabilities(probabilities, y, m))
    return {m: np.concatenate(v) for m, v in tables.items()}


def validate_setting(model, x, y, *, keep: float, rescale: bool, chance: float, whole: float,
                     config: dict, workdir: Path) -> tuple[list[dict], dict, float]:
    """Real records and simulated records against exact values, for one model and keep."""
    import subnet
    from subnet.importance import estimate, exact_banzhaf
    from subnet.importance.from_record import mask_metric

    rate = 1.0 - keep
    exact = {m: exact_banzhaf(model, x, y, metric=m, rate=rate, rescale=rescale)
             for m in METRICS}
    tables = outcome_tables(model, x, y, keep=keep, rescale=rescale)
    table_vs_exact = max(float(np.max(np.abs(exact_from_table(tables[m], keep)
                                             - exact[m].scores))) for m in METRICS)
    records = [subnet.record_masks(model, x, y, config["masks"], seed=s, rate=rate,
                                   rescale=rescale, progress=False, out=workdir / f"seed{s}")
               for s in range(config["record_seeds"])]
    record_vs_table = max(float(np.max(np.abs(mask_metric(r, m) - tables[m][table_rows(r.masks)])))
                          for r in records for m in METRICS)
    with warnings.catch_warnings():  # units a record never drops get NaN (stored as null)
        warnings.simplefilter("ignore", RuntimeWarning)
        full = [{m: estimate(r, "banzhaf", metric=m) for m in METRICS} for r in records]
    simulated = simulate(tables, keep, masks=config["masks"], prefixes=config["prefixes"],
                         records=config["simulated_records"], top_k_units=config["top_k"],
                         seed=config["simulation_seed"])
    mean_accuracy = float(np.mean([r.mask_accuracy().mean() for r in records]))
    common = {"keep": keep, "rescale": rescale, "chance": chance, "whole": whole,
              "mean_masked_accuracy": round(mean_accuracy, 4),
              "position": round(scale_position(mean_accuracy, chance, whole), 4)}
    rows = []
    for m in METRICS:
        rho = [spearman(f[m].scores, exact[m].scores) for f in full]
        cover = [interval_coverage(f[m].ci_low, f[m].ci_high, exact[m].scores) for f in full]
        row = {**common, "metric": m, "exact_masks": exact[m].details["n_masks"],
               "sampled_masks": config["masks"], "examples": int(len(y)),
               "seeds": config["record_seeds"], "estimator": full[0][m].details["estimator"],
               "full_metric": round(exact[m].details["full_metric"], 4),
               "mean_masked_metric": round(float(np.mean([f[m].details["mean_metric"]
                                                          for f in full])), 4),
               "exact_values": [round(float(v), 5) for v in exact[m].scores],
               "spearman_per_seed": [round(v, 4) for v in rho],
               "spearman_median": median(rho), "spearman_min": float(np.min(rho)),
               "coverage_95_per_seed": [round(v, 4) for v in cover],
               "coverage_95_mean": round(float(np.mean(cover)), 4),
               "coverage_95_min": round(float(np.min(cover)), 4),
               "seed_pair_spearman_median": median(pairwise([f[m].scores for f in full],
                                                            spearman)),
               "simulated_spearman_median": simulated["spearman_median"][m],
               "simulated_coverage_95": round(simulated["coverage_95"][m], 4)}
        row["targets_met"] = bool(row["spearman_median"] is not None
                                  and row["spearman_median"] >= TARGET_SPEARMAN
                                  and row["simulated_coverage_95"] >= TARGET_COVERAGE)
        rows.append(row)
    stability = {**common, "exact_accuracy_vs_log_prob_spearman": spearman(
        exact["accuracy"].scores, exact["log_prob"].scores),
        "table_vs_exact_banzhaf_max_abs_diff": table_vs_exact,
        "curve": simulated["curve"], "stable_from_masks": stable_masks(simulated["curve"])}
    return rows, stability, record_vs_table


def run(config: dict, workdir: Path) -> dict:
    """Trains the tiny models, calibrates, and validates every keep setting."""
    import subnet
    from subnet.keep import calibrate_keep
    from subnet.train import fit

    data = subnet.load_dataset("mnist")
    n_train = config["train_examples"]
    cal = slice(n_train, n_train + config["calibration_examples"])  # never trained on
    x_cal, y_cal = data.x_train[cal], data.y_train[cal]
    x, y = data.x_test[:config["examples"]], data.y_test[:config["examples"]]
    chance = float(np.bincount(y).max() / len(y))
    exact_rows, stability_rows, models, record_vs_table = [], [], {}, 0.0
    for name, model in tiny_models(config["model_seed"]).items():
        start = time.time()
        fit(model, data.x_train[:n_train], data.y_train[:n_train], epochs=config["epochs"],
            progress=False, seed=config["model_seed"])
        keep = calibrate_keep(model, x_cal, y_cal, target=0.5, seed=0)
        q = float(next(iter(keep.keep.values())))
        whole = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))
        models[name] = {"sites": list(keep.keep), "units": 12, "whole_test_accuracy": whole,
                        "keep": keep.to_dict()}
        settings = {"calibrated": (q, keep.rescale), "half_rescaled": (0.5, True),
                    **{f"near_whole_{k}": (k, False) for k in config["near_whole_keep"]}}
        for setting, (k, rescale) in settings.items():
            rows, stability, diff = validate_setting(
                model, x, y, keep=k, rescale=rescale, chance=chance, whole=whole,
                config=config, workdir=workdir / name / setting)
            record_vs_table = max(record_vs_table, diff)
            label = {"model": name, "setting": setting}
            exact_rows += [{**label, **row} for row in rows]
            stability_rows.append({**label, **stability})
        models[name]["seconds"] = round(time.time() - start, 1)
    return {"models": models, "record_vs_table_max_abs_diff": record_vs_table,
            "exact_validation": exact_rows, "stability": stability_rows,
            "verdict": verdict(stability_rows)}


def _json_ready(value):
    """NaN becomes null (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if np.isfinite(value) else None
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="where results.json and README.md go (default: "
                             "reports/validate_importance; with --quick, nowhere)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer masks, seeds and examples: a smoke run")
    parser.add_argument("--readme-only", action="store_true",
                        help="regenerate --out/README.md from --out/results.json; measure "
                             "nothing")
    args = parser.parse_args(argv)
    if args.readme_only:
        from subnet.io import atomic_write_text

        out = args.out or ROOT / "reports" / "validate_importance"
        atomic_write_text(out / "README.md",
                          readme(json.loads((out / "results.json").read_text())))
        return 0
    config = {"model_seed": 0, "train_examples": 20000, "epochs": 4,
              "calibration_examples": 500, "examples": 300, "masks": 2000, "record_seeds": 4,
              "simulated_records": 200, "simulation_seed": 0,
              "prefixes": [50, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000],
              "top_k": 4, "near_whole_keep": [0.95, 0.99]}
    if args.quick:
        config.update(train_examples=6000, epochs=2, calibration_examples=200, examples=100,
                      masks=200, record_seeds=2, simulated_records=20, prefixes=[50, 100, 200])
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        measured = run(config, Path(tmp))
    import subnet
    from subnet.runtime import intra_op_threads

    result = _json_ready({"config": config, **measured, "threads": intra_op_threads(),
                          "versions": {"subnet": subnet.__version__},
                          "seconds": round(time.time() - start, 1)})
    print(json.dumps(result))
    out = args.out or (None if args.quick else ROOT / "reports" / "validate_importance")
    if out is not None:
        from subnet.io import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps(result, indent=1))
        atomic_write_text(out / "README.md", readme(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

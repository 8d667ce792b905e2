"""The section on how good the uncertainty is: each predictor's metrics with bootstrap intervals,
the reliability diagram, entropy histograms and the images whose probabilities move most.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from subnet.methods import method_name
from subnet.report import figures
from subnet.report.document import Figure, Note, Section, Table
from subnet.report.formatting import _budget, _count


def _predictor_name(name: str) -> str:
    if name.startswith("subnetwork_"):
        method, _, budget = name[len("subnetwork_"):].partition("@")
        return f"{method_name(method)} subnetwork at {_budget(float(budget))} FLOPs"
    kind, _, count = name.rpartition("_")
    if name == "deterministic":
        return "dropout off (deterministic)"
    if kind == "dropout":
        return "one pass with dropout on" if count == "1" else \
            f"test-time dropout, {count} passes averaged"
    if kind == "unit_subnetworks":
        return f"{count} random unit subnetworks averaged"
    return name


def _interval(estimate: Mapping | None, digits: int = 3, pct: bool = False) -> str:
    if not estimate or estimate.get("value") is None:
        return "—"
    fmt = (lambda v: f"{v:.2%}") if pct else (lambda v: f"{v:.{digits}f}")
    if estimate.get("low") is None or estimate.get("high") is None:
        return fmt(estimate["value"])
    return f"{fmt(estimate['value'])} [{fmt(estimate['low'])}, {fmt(estimate['high'])}]"


def _uncertainty_section(results) -> Section:
    data = results.get("uncertainty")
    if not data:
        return Section("uncertainty", "How good is the uncertainty?",
                       (Note("The uncertainty of the network's predictions"),))
    predictors = data["predictors"]
    ood = data.get("ood")
    header = ["predictor", "accuracy", "NLL", "ECE", "errors found by entropy (AUROC)",
              "errors found by MI (AUROC)"]
    if ood:
        header += ["OOD found by entropy (AUROC)"]
    rows = []
    for name, entry in predictors.items():
        m = entry["metrics"]
        row = [_predictor_name(name), _interval(m.get("accuracy"), pct=True),
               _interval(m.get("nll")), _interval(m.get("ece")),
               _interval(m.get("error_auroc_predictive_entropy")),
               _interval(m.get("error_auroc_mutual_information"))]
        if ood:
            row.append(_interval(m.get("ood_auroc_predictive_entropy")))
        rows.append(tuple(row))
    ensemble = data["ensemble"]
    det, ens = predictors["deterministic"]["metrics"], predictors[ensemble]["metrics"]
    where = (f" against {_count(ood['examples'])} {ood['name']} test images as "
             "out-of-distribution inputs") if ood else ""
    reading = (f"On {_count(data['examples'])} test examples{where}; 95 % bootstrap intervals "
               "in brackets. NLL: negative log-likelihood of the averaged prediction (nats); "
               "ECE: expected calibration error; AUROC 0.5 is chance, 1 a perfect separation; "
               "MI: mutual information between the prediction and the dropout mask (0 for one "
               "pass).")
    items: list = [Table("uncertainty-metrics", "Uncertainty of each predictor", tuple(header),
                         tuple(rows), (False,) + (True,) * (len(header) - 1), reading=reading)]
    sentence = (f"The deterministic network's entropy finds its errors with AUROC "
                f"{_interval(det.get('error_auroc_predictive_entropy'))}, the "
                f"{_predictor_name(ensemble)} with "
                f"{_interval(ens.get('error_auroc_predictive_entropy'))}; calibration error "
                f"{_interval(det.get('ece'))} against {_interval(ens.get('ece'))}.")
    items.append(Figure(
        "reliability", "Reliability diagram", sentence,
        functools.partial(figures.reliability_diagram, reliabilities={
            _predictor_name("deterministic"): predictors["deterministic"]["reliability"],
            _predictor_name(ensemble): predictors[ensemble]["reliability"]}), (6.0, 4.5)))
    histograms = data.get("entropy_histograms") or {}
    if histograms:
        text = ("Predictive entropy of right and wrong predictions"
                + (" and of out-of-distribution inputs" if ood else "")
                + ", each as a share of its group: the further apart, the more the entropy "
                  "says which predictions to trust.")
        if ood:
            text += (f" Out-of-distribution AUROC by entropy: "
                     f"{_interval(det.get('ood_auroc_predictive_entropy'))} (dropout off), "
                     f"{_interval(ens.get('ood_auroc_predictive_entropy'))} "
                     f"({_predictor_name(ensemble)}).")
        items.append(Figure("entropy", "Entropy of right, wrong and unfamiliar inputs", text,
                            functools.partial(figures.entropy_histograms,
                                              edges=data["entropy_edges"], panels={
                                                  _predictor_name(k): v
                                                  for k, v in histograms.items()}),
                            (8.0, 3.2)))
    moving = data.get("moving_examples") or []
    if moving:
        right = sum(1 for ex in moving if ex["right"])
        text = (f"The {len(moving)} test images whose class probabilities move most across the "
                f"{_predictor_name(ensemble)} ({right} predicted right, {len(moving) - right} "
                "wrong): bars are the mean probability, whiskers the spread across passes.")
        rows_needed = -(-len(moving) // 2)
        items.append(Figure("moving-examples", "Images whose probabilities move most", text,
                            functools.partial(figures.class_probabilities, examples=moving),
                            (8.0, 1.7 * rows_needed + 0.5)))
    return Section("uncertainty", "How good is the uncertainty?", tuple(items))

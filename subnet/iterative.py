"""Iterative mask-statistics pruning: shrink the network in small steps, re-measuring each time.

One record of masks at keep 0.5 ranks units by their value in *random half-networks*; the units
that are best there are not the best set to keep together (on the blog's model the top-k set is
worse than k random units below a quarter of the FLOPs: the top units of adjacent layers were
chosen in other contexts and are redundant with one another). So the path to a small subnetwork
is walked in steps: at each step masks drop a little of the *current* subnetwork (each site's
units with the probability the step removes), mask statistics rank its units in that context,
the least valuable are removed, the survivors rescaled by units/kept, as inverted dropout
does, and BatchNormalization statistics re-estimated. Every budget on the path is a nested
subnetwork of the one before.

    keep = subnet.iterative_keep_sets(model, x_held_out, y_held_out, [0.5, 0.25, 0.125])
    small, _ = subnet.extract(model, keep[0.125], scale=keep[0.125].compensation)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from subnet.cli import progress_bar
from subnet.errors import InputError
from subnet.extraction import (
    Budget,
    as_keep_set,
    extract,
    keep_sets,
    model_cost,
    recalibrate_batchnorm,
)
from subnet.importance import Importance, estimate
from subnet.record import temporary_record
from subnet.validation import check_choice, check_int, check_number

__all__ = ["iterative_keep_sets"]


def _as_budgets(budgets) -> list[Budget]:
    if isinstance(budgets, (int, float, Budget)):
        budgets = [budgets]
    out = [b if isinstance(b, Budget) else Budget.flops(b) for b in budgets]
    if not out:
        raise InputError("Give at least one budget.")
    kinds = {b.kind for b in out}
    if len(kinds) > 1:
        raise InputError(f"All budgets must be of one kind; received kinds {sorted(kinds)}.")
    return out


def iterative_keep_sets(model, x, y, budgets: Sequence[float | Budget], *,
                        steps_per_halving: int = 4, n_masks: int = 1000, seed: int = 0,
                        estimator: str = "banzhaf", metric: str = "accuracy",
                        max_rate: float = 0.5, min_units: int = 1,
                        progress: bool = True) -> dict:
    """Keep-sets for several budgets, found by pruning in small re-measured steps.

    The budget is lowered geometrically, ``steps_per_halving`` steps per halving of the cost,
    stopping exactly at each requested budget. At each step ``n_masks`` antithetic masks drop each
    site's units with the probability the step removes (at most ``max_rate``) from the current
    subnetwork; ``estimator`` ranks its units on ``metric`` over ``(x, y)``; each site keeps its
    best units (the same fraction of every site) and the kept units are rescaled by
    units/kept. Use held-out training examples for ``x``, never the test set.

    Args:
        model: A trained ``keras.Model`` classifier (see :func:`subnet.sites`).
        x: Examples the masks are evaluated on.
        y: Their integer labels.
        budgets: FLOP fractions in (0, 1], or :class:`~subnet.extraction.Budget` objects of one
            kind.
        steps_per_halving: Steps per halving of the cost (>= 1); more is slower and better.
        n_masks: Masks recorded at each step (>= 20).
        seed: Seed of the masks (step k uses masks of seed ``seed * 1000 + k``).
        estimator: A mask-statistics estimator (``banzhaf`` or ``regression``).
        metric: ``"accuracy"`` or ``"log_prob"``.
        max_rate: Largest drop probability of a step's masks, in (0, 0.5].
        min_units: Units every site keeps at least.
        progress: Show a progress bar over the steps.

    Returns:
        {budget amount: :class:`~subnet.extraction.KeepSet` over the *original* model's units},
        in the order given. Extract with ``scale=keep.compensation``.

    Raises:
        ValueError: If an argument is out of range or a budget cannot be met.
    """
    budgets = _as_budgets(budgets)
    check_int("steps_per_halving", steps_per_halving, low=1)
    check_int("n_masks", n_masks, low=20)
    check_number("max_rate", max_rate, low=0.0, high=0.5, low_open=True)
    check_choice("estimator", estimator, ("banzhaf", "regression"))
    kind = budgets[0].kind
    start = as_keep_set(model, {})
    dense = {"units": sum(start.sites.units), "params": start.dense_params,
             "flops": start.dense_flops}[kind]
    wanted = {float(b.target(dense)): b for b in budgets}
    lowest = min(wanted)
    grid = [dense * 2.0 ** (-k / steps_per_halving) for k in range(1, 10_000)
            if dense * 2.0 ** (-k / steps_per_halving) > lowest * 1.01]
    targets = sorted(set(grid) | set(wanted), reverse=True)

    current = model
    index = {site.name: np.arange(site.units) for site in start.sites}
    found: dict = {}
    bar = progress_bar(total=len(targets), desc="iterative pruning", unit="step",
                       enabled=progress)
    try:
        for step, target in enumerate(targets, start=1):
            cost = _current_cost(current, kind)
            if cost > target:
                current = _step(current, x, y, Budget(kind, min(1.0, target / cost)),
                                n_masks=n_masks, seed=seed * 1000 + step, estimator=estimator,
                                metric=metric, max_rate=max_rate, min_units=min_units,
                                index=index)
            if target in wanted:
                bits = {name: np.isin(np.arange(site.units), index[name])
                        for name, site in zip(start.sites.names, start.sites, strict=True)}
                keep = as_keep_set(model, bits)
                found[target] = dataclasses.replace(keep, budget=wanted[target])
            bar.update(1)
    finally:
        bar.close()
    return {b.amount: found[float(b.target(dense))] for b in budgets}


def _current_cost(model, kind: str) -> float:
    if kind == "units":
        keep = as_keep_set(model, {})
        return float(sum(keep.sites.units))
    return float(model_cost(model)[kind])


def _step(current, x, y, budget: Budget, *, n_masks, seed, estimator, metric, max_rate,
          min_units, index):
    """One pruning step: record masks around ``current``, rank, keep, extract; updates index."""
    whole = as_keep_set(current, {})
    table = whole.sites
    flat = Importance(method="flat", scores=np.zeros(table.n_units), sites=table)
    widths = keep_sets(flat, budget, current, allocation="uniform", min_units=min_units).widths
    rate = {site.name: float(np.clip(1.0 - widths[site.name] / site.units, 0.05, max_rate))
            for site in table}
    with temporary_record(current, x, y, n_masks, seed=seed, rate=rate, antithetic=True,
                          progress=False) as record:
        importance = estimate(record, estimator, metric=metric)
    keep = keep_sets(importance, budget, current, allocation="uniform", min_units=min_units)
    for name in table.names:
        index[name] = index[name][keep[name]]
    smaller, _ = extract(current, keep, scale=keep.compensation, check_x=x[:16])
    recalibrate_batchnorm(smaller, x)
    return smaller

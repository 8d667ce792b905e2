"""Exact parameters and FLOPs of any subnetwork as a function of its keep bits, and the
incremental view a greedy allocation grows a subnetwork with; :class:`Cost` is what they come
to."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from subnet.sections import MappingResult


@dataclasses.dataclass(frozen=True, eq=False)
class Cost(MappingResult):
    """Parameters and FLOPs per example of a (sub)network: what
    :meth:`Structure.cost <subnet.structure.Structure.cost>` and
    :func:`subnet.extraction.model_cost` report. A frozen result that also reads as the dict
    they used to return (``cost["flops"]``, ``{**cost}``; equal to a dict of the same keys and
    values; :meth:`to_dict` for JSON, see :class:`~subnet.sections.MappingResult`).

    Attributes:
        params: Parameters (every weight that remains, BatchNormalization's moving statistics
            included, as ``model.count_params()`` counts them).
        flops: FLOPs per example (2 per multiply-accumulate of Conv, Dense, depthwise and
            separable layers).
        nonzero_params: Weights that are not zero (:func:`~subnet.extraction.model_cost`
            only; None, and not a key, for a keep-set's cost).
    """

    params: int
    flops: int
    nonzero_params: int | None = None

    _WHERE: ClassVar[str] = "cost"
    _DECODE: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "params": int, "flops": int, "nonzero_params": int}


class CostModel:
    """Parameters and FLOPs of a subnetwork as a function of its keep bits, in a few products.

    Every weighted layer's cost is ``a * n_in * n_out + b * n_in + c * n_out + d`` (the
    coefficients are its rule's, :meth:`subnet.structure.rules.Rule.cost`), where ``n_in`` and
    ``n_out`` (the kept channels it reads and writes) are linear in the keep bits:
    a constant for the fixed channels plus, for each unit, the number of channels it owns
    there (a Flatten's positions, a depthwise multiplier).

    Args:
        s: The :class:`Structure`.
    """

    def __init__(self, s):
        n = s.n_units
        rows = []  # (in const, in per unit, out const, out per unit, params abcd, flops abcd)
        for call in s.calls:
            layer = call.layer
            rank = len(layer.output.shape)
            positions = int(np.prod(layer.output.shape[1:-1])) if rank > 2 else 1
            coefficients = call.rule.cost(layer, positions)
            if coefficients is None:
                continue
            p, f = coefficients
            reads = s.units_of[call.inputs[0]] if call.inputs else np.zeros(0, np.int64)
            writes = s.units_of[call.name]
            rows.append((_linear(reads, n), _linear(writes, n), p, f))
        self.in_const = np.array([r[0][0] for r in rows], np.float64)
        self.in_units = np.array([r[0][1] for r in rows], np.float64).reshape(len(rows), n)
        self.out_const = np.array([r[1][0] for r in rows], np.float64)
        self.out_units = np.array([r[1][1] for r in rows], np.float64).reshape(len(rows), n)
        self.params = np.array([r[2] for r in rows], np.float64).reshape(len(rows), 4)
        self.flops = np.array([r[3] for r in rows], np.float64).reshape(len(rows), 4)

    def __call__(self, bits: np.ndarray) -> tuple[int, int]:
        """(parameters, FLOPs per example) of the subnetwork keeping ``bits`` (n_units,)."""
        b = np.asarray(bits, np.float64)
        n_in = self.in_const + self.in_units @ b
        n_out = self.out_const + self.out_units @ b
        terms = np.stack([n_in * n_out, n_in, n_out, np.ones_like(n_in)], axis=1)
        return int(round(float(np.sum(terms * self.params)))), \
            int(round(float(np.sum(terms * self.flops))))

    def grow(self, bits: np.ndarray) -> CostState:
        """An incremental view from the subnetwork keeping ``bits``: what adding each unit
        would cost, then adding it, each in one product over the layers (no pass over every
        unit per step, as a greedy allocation on a large model would otherwise make)."""
        return CostState(self, bits)


class CostState:
    """A growing subnetwork's cost (see :meth:`CostModel.grow`): its kept channels per layer,
    its parameters and FLOPs, and the exact change adding any unit would make.

    All counts are integers held in float64, exact below 2**53."""

    def __init__(self, model: CostModel, bits: np.ndarray):
        self._m = model
        self.bits = np.array(bits, bool)
        b = self.bits.astype(np.float64)
        self._in = model.in_const + model.in_units @ b
        self._out = model.out_const + model.out_units @ b
        self.params, self.flops = (float(v) for v in model(self.bits))

    def delta(self, units) -> tuple[np.ndarray, np.ndarray]:
        """(parameters, FLOPs) each of ``units`` (global indices, not yet kept) would add."""
        units = np.atleast_1d(np.asarray(units, np.int64))
        d_in = self._m.in_units[:, units]
        d_out = self._m.out_units[:, units]
        product = d_in * self._out[:, None] + d_out * self._in[:, None] + d_in * d_out
        change = []
        for weights in (self._m.params, self._m.flops):
            change.append(weights[:, 0] @ product + weights[:, 1] @ d_in + weights[:, 2] @ d_out)
        return np.rint(change[0]), np.rint(change[1])

    def add(self, unit: int) -> None:
        """Keeps ``unit`` (a global index)."""
        params, flops = self.delta([unit])
        self._in += self._m.in_units[:, unit]
        self._out += self._m.out_units[:, unit]
        self.bits[unit] = True
        self.params += float(params[0])
        self.flops += float(flops[0])


def _linear(units: np.ndarray, n: int) -> tuple[int, np.ndarray]:
    """A tensor's kept channel count as (fixed channels, channels per unit)."""
    return int(np.sum(units < 0)), np.bincount(units[units >= 0], minlength=n).astype(np.float64)

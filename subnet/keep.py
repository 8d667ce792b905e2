"""Keep probabilities: their own value, chosen where random subnetworks are informative.

A record draws masks that keep each unit of a site with the site's keep probability q, and the
statistic it estimates for a unit, E[metric | kept] - E[metric | dropped], is the q-weighted
Banzhaf value of that unit (a binomial semivalue; q = 0.5 is the classic Banzhaf value). It
carries information only where random subnetworks are neither at chance nor all as good as the
whole network. Where q comes from is therefore part of every result:

- ``"model"``: the model's own dropout rates (q = 1 - rate), with the kept units scaled by
  1 / q as inverted dropout does: the masked network is the one the model was trained to be;
- ``"given"``: a rate the user gave;
- ``"auto"``: :func:`calibrate_keep` (the default for sites that no Dropout layer follows, which
  is most modern classifiers): q is chosen on held-out training examples so that random
  subnetworks' mean accuracy sits at a stated point between chance and the whole model.

The rule of ``"auto"``, documented and tested: with ``target`` t (0.5 by default), chance c
(the accuracy of always answering the most frequent class of the examples) and the whole
model's accuracy w, the target accuracy is ``c + t (w - c)``. One keep probability serves every
site (so the statistic stays one semivalue); for each of the two ways of treating kept units
(scaled by 1 / q, or left as they are), q is the smallest keep on a bisection over
[``low``, 1] whose masks (the same uniforms at every q: common random numbers, as
:func:`subnet.sample_masks` draws them) reach the target on average. Of the two, the one that
reaches it with fewer units kept is taken, because it leaves the masks the most room to vary
(ties: no scaling). A network trained without dropout never saw 1 / q scaling, and at q = 0.5
it usually sits at chance with it; the calibration measures this rather than assuming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from subnet.errors import InputError
from subnet.validation import check_choice, check_int, check_number

__all__ = ["KEEP_SOURCES", "KeepProbabilities", "calibrate_keep"]

#: Where keep probabilities come from.
KEEP_SOURCES = ("model", "given", "auto")

#: Masks per keep probability, and bisection steps, of :func:`calibrate_keep` by default.
CALIBRATION_MASKS = 16
CALIBRATION_STEPS = 7


@dataclasses.dataclass(frozen=True)
class KeepProbabilities:
    """The keep probability of every site, and where it came from.

    Attributes:
        keep: {site name: keep probability q in (0, 1]}.
        source: ``"model"``, ``"given"`` or ``"auto"`` (see the module's docstring).
        rescale: Whether kept units are scaled by 1 / q (inverted dropout).
        calibration: For ``"auto"``: what the calibration measured (target, chance, whole,
            the mean accuracy reached, the search's steps); None otherwise.
    """

    keep: Mapping[str, float]
    source: str
    rescale: bool
    calibration: Mapping | None = None

    def __post_init__(self):
        check_choice("source", self.source, KEEP_SOURCES)
        keep = {str(k): float(v) for k, v in dict(self.keep).items()}
        if not keep or not all(0.0 < v <= 1.0 for v in keep.values()):
            raise InputError(f"Invalid value for argument `keep`: expected keep probabilities in "
                             f"(0, 1] for at least one site. Received: keep={keep!r}")
        object.__setattr__(self, "keep", keep)
        object.__setattr__(self, "rescale", bool(self.rescale))

    @property
    def rates(self) -> dict[str, float]:
        """{site name: 1 - q}, as :func:`subnet.sites` and :func:`subnet.record_masks` take."""
        return {name: 1.0 - q for name, q in self.keep.items()}

    def site_scale(self, names) -> np.ndarray:
        """The factor of each named site's kept units: 1 / q with rescaling, else 1."""
        return np.array([1.0 / self.keep[n] if self.rescale else 1.0 for n in names],
                        np.float32)

    def to_dict(self) -> dict:
        """A JSON-ready dict (the inverse of :meth:`from_dict`)."""
        return {"keep": dict(self.keep), "source": self.source, "rescale": self.rescale,
                "calibration": None if self.calibration is None else dict(self.calibration)}

    @classmethod
    def from_dict(cls, data: Mapping) -> KeepProbabilities:
        """The inverse of :meth:`to_dict`."""
        return cls(keep=data["keep"], source=data["source"], rescale=data["rescale"],
                   calibration=data.get("calibration"))


def calibrate_keep(model, x, y, *, target: float = 0.5, n_masks: int = CALIBRATION_MASKS,
                   seed: int = 0, low: float = 0.05, steps: int = CALIBRATION_STEPS,
                   backend: str = "auto",
                   rescale: bool | None = None) -> KeepProbabilities:
    """Chooses one keep probability for every site where random subnetworks are informative.

    See the module's docstring for the rule. Costs ``2 * (steps + 1) * n_masks`` masked
    evaluations of ``x`` (one rescaling when ``rescale`` is given).

    Args:
        model: A ``keras.Model`` classifier subnet can analyse.
        x: Held-out examples (training examples the units are not chosen on, never the test
            set), shape (n, *input shape).
        y: Their integer labels, shape (n,).
        target: Where random subnetworks' mean accuracy should sit, as a fraction of the way
            from chance (0) to the whole model (1), in (0, 1).
        n_masks: Masks per evaluated keep probability (>= 2).
        seed: Seed of the masks.
        low: The smallest keep probability considered, in (0, 1).
        steps: Bisection steps (the keep probability is found to ``(1 - low) / 2**steps``).
        backend: The masked-evaluation backend (:func:`subnet.engine.make_backend`).
        rescale: Force scaling by 1 / q (True) or none (False); None measures both and takes
            the rule's choice.

    Returns:
        :class:`KeepProbabilities` with ``source="auto"`` and the measurements in
        ``calibration``.

    Raises:
        InputError: If an argument is out of range, or the whole model is itself within one
            example of chance on ``x`` (there is no accuracy to place the masks between).
    """
    from subnet.engine import make_backend
    from subnet.engine.chain import analyse_chain
    from subnet.masks import sample_masks
    from subnet.models import check_examples

    check_number("target", target, low=0.0, high=1.0, low_open=True, high_open=True,
                 expected="a fraction in (0, 1) of the way from chance to the whole model")
    check_number("low", low, low=0.0, high=1.0, low_open=True, high_open=True,
                 expected="a keep probability in (0, 1)")
    check_int("n_masks", n_masks, low=2)
    check_int("steps", steps, low=1)
    x, y, _ = check_examples(model, x, y)
    chain = analyse_chain(model, 0.5)  # structure only; the keep probabilities are chosen here
    table = chain.table
    engine = make_backend(chain, backend, rescale=False)
    n = len(y)
    whole = float(np.mean(engine.probabilities(x, np.ones((1, table.n_units), bool))[0]
                          .argmax(-1) == y))
    chance = float(np.bincount(y).max() / n)
    if whole - chance <= 1.0 / n:
        raise InputError(f"The whole model scores {whole:.1%} on the {n} calibration examples, "
                         f"no better than chance ({chance:.1%}): there is no accuracy to place "
                         "random subnetworks between. Check the model and the data set "
                         "(--dataset) match.")
    wanted = chance + float(target) * (whole - chance)
    evaluated: dict[tuple[bool, float], float] = {}

    def mean_accuracy(q: float, scaled: bool) -> float:
        if (scaled, q) not in evaluated:
            masks = sample_masks(np.full(table.n_units, q), seed, range(n_masks))
            engine.set_site_scale(np.full(len(table), 1.0 / q if scaled else 1.0))
            probabilities = engine.probabilities(x, masks)
            evaluated[(scaled, q)] = float(np.mean(probabilities.argmax(-1) == y))
        return evaluated[(scaled, q)]

    found = {}
    for scaled in ((False, True) if rescale is None else (bool(rescale),)):
        lo, hi = float(low), 1.0
        if mean_accuracy(lo, scaled) >= wanted:
            hi = lo  # even the fewest units reach it
        else:
            for _ in range(int(steps)):
                mid = 0.5 * (lo + hi)
                if mean_accuracy(mid, scaled) >= wanted:
                    hi = mid
                else:
                    lo = mid
        found[scaled] = hi
    scaled = min(found, key=lambda s: (found[s], s))  # fewer units kept; ties: no scaling
    q = found[scaled]
    reached = mean_accuracy(q, scaled) if q < 1.0 else whole
    calibration = {
        "target": float(target), "rule": "smallest keep whose random subnetworks reach "
        "chance + target x (whole - chance) on average; of scaled and unscaled, fewer units",
        "chance": chance, "whole": whole, "target_accuracy": wanted,
        "mean_accuracy": reached, "examples": n, "masks": int(n_masks), "seed": int(seed),
        "keep_by_rescale": {str(k): v for k, v in found.items()},
        "evaluated": [{"rescale": s, "keep": k, "mean_accuracy": a}
                      for (s, k), a in sorted(evaluated.items())]}
    return KeepProbabilities(keep={site.name: q for site in table}, source="auto",
                             rescale=scaled, calibration=calibration)

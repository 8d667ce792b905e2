"""The keep probabilities a record is drawn with: the model's own dropout rates, a given rate, or
calibrated ones where the model's leave random subnetworks near chance (:func:`choose_keep`).

The keep probabilities themselves, and their calibration, are :mod:`subnet.keep`'s; this module
decides which a record uses. TensorFlow is imported where it is used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from subnet.errors import InputError, clean
from subnet.keep import CALIBRATION_MASKS, CALIBRATION_STEPS, KeepProbabilities
from subnet.masks import sample_masks

#: How close to chance (a fraction of accuracy: 5 points) random subnetworks' mean accuracy may
#: sit before the masks are called uninformative: the model's own rates are then replaced by
#: calibrated keep probabilities (``rate="auto"``), and the analysis' answer says so.
NEAR_CHANCE = 0.05


def site_rates(model, rate: float | None) -> dict:
    """{site: dropout rate to draw masks with}: the model's own, and ``rate`` for sites with none.

    Raises:
        ValueError: If the model cannot be masked, or a site has no rate and ``rate`` is None.
    """
    from subnet.engine.chain import analyse_chain

    rates = {}
    for site in analyse_chain(model, rate=0.5).table:  # the model's own rate is dropout_rate
        if site.dropout_rate > 0:
            rates[site.name] = float(site.dropout_rate)
        elif rate is None:
            raise InputError(f"Site {site.name!r} has no Dropout layer after it, so there is no "
                             "rate to draw masks with; give --rate R (e.g. --rate 0.5).")
        else:
            rates[site.name] = float(rate)
    return rates


def parse_rate(text) -> str | float:
    """``--rate``'s value: ``"auto"`` or a dropout rate in (0, 1) (a float).

    Raises:
        InputError: For anything else.
    """
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise InputError(f"Invalid value for --rate: expected auto (keep probabilities calibrated "
                         f"on held-out training examples) or a dropout rate in (0, 1). "
                         f"Received: {clean(str(text), limit=100)!r}")
    return value


def _mean_masked_accuracy(model, rates: Mapping[str, float], x, y, *, rescale: bool,
                          n_masks: int, seed: int, backend: str) -> dict:
    """Chance, the whole model's accuracy and random subnetworks' mean accuracy on (x, y)."""
    from subnet.engine import make_backend
    from subnet.engine.chain import analyse_chain
    from subnet.models import check_examples

    x, y, _ = check_examples(model, x, y)
    chain = analyse_chain(model, dict(rates))
    engine = make_backend(chain, backend, rescale=rescale)
    whole = float(np.mean(engine.probabilities(x, np.ones((1, chain.table.n_units), bool))[0]
                          .argmax(-1) == y))
    masks = sample_masks(chain.table.unit_keep(), int(seed), range(int(n_masks)))
    accuracy = float(np.mean(engine.probabilities(x, masks).argmax(-1) == y))
    return {"chance": float(np.bincount(y).max() / len(y)), "whole": whole,
            "mean_accuracy": accuracy, "examples": int(len(y)), "masks": int(n_masks),
            "seed": int(seed), "rescale": bool(rescale)}


def choose_keep(model, rate: str | float | None = "auto", x=None, y=None, *, seed: int = 0,
                n_masks: int = CALIBRATION_MASKS, steps: int = CALIBRATION_STEPS,
                near_chance: float = NEAR_CHANCE,
                backend: str = "auto", held_out: str | None = None, rates_from=None
                ) -> tuple[KeepProbabilities, dict | None]:
    """The keep probabilities a record of ``model`` is drawn with, and where they came from.

    - ``rate=R`` (a float in (0, 1)): sites with no Dropout after them drop units at rate R,
      the others at the model's own rate; kept units scaled by 1 / q (source ``"given"``, or
      ``"model"`` when every site has its own Dropout).
    - ``rate="auto"`` (or None): a model whose every site has a Dropout uses its own rates
      (source ``"model"``, 1 / q scaling), unless random subnetworks at those rates sit within
      ``near_chance`` of chance on (x, y); then, and for any model with a site without
      Dropout, :func:`subnet.calibrate_keep` chooses one keep probability for every site (and
      whether to rescale) on (x, y) (source ``"auto"``).

    Args:
        model: A ``keras.Model`` classifier, dropout off (:func:`subnet.models.with_dropout`).
        rate: ``"auto"``, None (the same) or a dropout rate in (0, 1).
        x: Held-out *training* examples (never the test set): needed unless ``rate`` is
            given.
        y: Their integer labels.
        seed: Seed of the masks of the check and of the calibration.
        n_masks: Masks per evaluated keep probability.
        steps: Bisection steps of the calibration.
        near_chance: The margin above chance (a fraction) below which masks count as at
            chance.
        backend: The masked-evaluation backend.
        held_out: Which examples (x, y) are, in words, stored in the calibration dict.
        rates_from: The model whose Dropout layers give the sites' own rates, when ``model``
            is its copy with dropout off (which has none); default ``model``.

    Returns:
        ``(keep, check)``: the :class:`~subnet.KeepProbabilities`, and for the model's own
        rates, what the check measured (chance, whole, mean accuracy; None when not checked).

    Raises:
        InputError: If ``rate`` is invalid, the model cannot be masked, or examples are needed
            and not given.
    """
    from subnet.engine.chain import analyse_chain
    from subnet.keep import calibrate_keep

    # structure (and the model's own rates) only
    table = analyse_chain(model if rates_from is None else rates_from, 0.5).table
    own = {site.name: float(site.dropout_rate) for site in table if site.dropout_rate > 0}
    given = None if rate is None else parse_rate(rate)  # "auto" in any case is "auto"
    if isinstance(given, float):
        rates = {site.name: own.get(site.name, given) for site in table}
        source = "model" if len(own) == len(table) else "given"
        return KeepProbabilities(keep={n: 1.0 - r for n, r in rates.items()}, source=source,
                                 rescale=True), None
    def model_keep():
        return KeepProbabilities(keep={n: 1.0 - r for n, r in own.items()}, source="model",
                                 rescale=True)

    if x is None or y is None:
        if len(own) == len(table):  # nothing to check the model's rates on
            return model_keep(), {"checked": False, "why": "no held-out training examples"}
        missing = [s.name for s in table if s.name not in own]
        raise InputError(f"Site {clean(missing[0])!r} has no Dropout layer after it, so its keep "
                         "probability is calibrated (rate='auto', subnet.calibrate_keep) on "
                         "held-out training examples, and none were given (the data set needs "
                         "a training split; never the test set): give them, or a rate "
                         "(rate=R, --rate R).")
    check = None
    if len(own) == len(table):
        check = _mean_masked_accuracy(model, own, x, y, rescale=True, n_masks=n_masks,
                                      seed=seed, backend=backend)
        check["checked"] = True
        check["near_chance"] = check["mean_accuracy"] - check["chance"] < near_chance
        if held_out:
            check["held_out"] = held_out
        if not check["near_chance"] or check["whole"] - check["chance"] < near_chance:
            # informative, or the whole model is itself near chance: no keep would help
            return model_keep(), check
    keep = calibrate_keep(model, x, y, n_masks=n_masks, seed=seed, steps=steps,
                          backend=backend)
    calibration = dict(keep.calibration or {})
    calibration["why"] = ("the model's own rates leave random subnetworks within "
                          f"{near_chance:.0%} of chance" if check is not None else
                          "sites without a Dropout layer after them: "
                          + ", ".join(s.name for s in table if s.name not in own))
    if held_out:
        calibration["held_out"] = held_out
    return dataclasses.replace(keep, calibration=calibration), check


def keep_of_record(meta: Mapping) -> KeepProbabilities:
    """The keep probabilities a record was drawn with: its ``meta["keep"]``, or for a record
    made before records stored them, its sites' keep and ``rescale`` (source ``"given"``
    unless every keep is 1 - the site's own dropout rate, then ``"model"``)."""
    if meta.get("keep") is not None:
        return KeepProbabilities.from_dict(meta["keep"])
    sites = meta["sites"]
    own = all(float(s.get("dropout_rate", 0.0)) > 0 and
              abs(float(s["keep"]) - (1.0 - float(s["dropout_rate"]))) < 1e-9 for s in sites)
    return KeepProbabilities(keep={s["name"]: float(s["keep"]) for s in sites},
                             source="model" if own else "given",
                             rescale=bool(meta.get("rescale", True)))

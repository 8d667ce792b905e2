"""Masked evaluation: a classifier split at its sites, and the backends that evaluate it under
masks (:mod:`~subnet.engine.reference`, obviously correct; :mod:`~subnet.engine.fast`, whose cost
follows the subnetwork). :func:`make_backend` picks one; everything above the engine (records,
importance, extraction) gets its backends here.
"""

from __future__ import annotations

import warnings

from subnet.engine.chain import Chain
from subnet.engine.fast import FastBackend
from subnet.engine.reference import ReferenceBackend
from subnet.errors import InputError

__all__ = ["BACKENDS", "make_backend"]

BACKENDS = ("auto", "fast", "reference")


def make_backend(chain: Chain, backend: str = "auto", *, rescale: bool = True):
    """Builds a masked-evaluation backend for a model.

    With ``"auto"``, a model the fast backend cannot run is evaluated by the reference backend
    (same results, slower), with a one-line :class:`RuntimeWarning` saying why. The backend
    returned says which one it is (``name``) and, after such a fallback, why
    (``fallback_reason``; None otherwise).

    Args:
        chain: The model split at its sites (:func:`subnet.engine.chain.analyse_chain`).
        backend: ``"fast"``, ``"reference"`` or ``"auto"`` (fast where it supports the model).
        rescale: Multiply kept units by 1 / keep, as inverted dropout does.

    Returns:
        An object with ``name`` (``"fast"`` or ``"reference"``), ``fallback_reason`` and
        ``probabilities(x, masks) -> (n_masks, n_examples, n_classes)``.

    Raises:
        InputError: If ``backend`` is unknown, or ``"fast"`` cannot run the model.
    """
    if backend not in BACKENDS:
        raise InputError(f"Invalid value received for argument `backend`. Expected one of "
                         f"{list(BACKENDS)}. Received: backend={backend!r}")
    if backend == "reference":
        return ReferenceBackend(chain, rescale=rescale)
    try:
        engine = FastBackend(chain, rescale=rescale)
    except InputError as err:
        if backend == "fast":
            raise
        reason = str(err).split("; use backend=")[0].rstrip(".")
        warnings.warn(f"Model {chain.model.name!r}: {reason}; the reference backend evaluates "
                      "it instead (same results, slower).", RuntimeWarning, stacklevel=2)
        engine = ReferenceBackend(chain, rescale=rescale)
        engine.fallback_reason = reason
    return engine

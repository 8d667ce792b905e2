"""Masked evaluation: a classifier split at its sites, and the backends that evaluate it under
masks (:mod:`~subnet.engine.reference`, obviously correct; :mod:`~subnet.engine.fast` for chains
and :mod:`~subnet.engine.graph` for any supported graph, whose cost follows the subnetwork).
:func:`make_backend` picks one; everything above the engine (records, importance, extraction)
gets its backends here.
"""

from __future__ import annotations

import warnings

from subnet.engine.chain import Chain
from subnet.engine.fast import FastBackend
from subnet.engine.graph import GraphBackend
from subnet.engine.reference import ReferenceBackend
from subnet.errors import InputError
from subnet.validation import check_choice

__all__ = ["BACKENDS", "make_backend"]

BACKENDS = ("auto", "fast", "graph", "reference")


def make_backend(chain: Chain, backend: str = "auto", *, rescale: bool = True):
    """Builds a masked-evaluation backend for a model.

    With ``"auto"``: the fast backend for a chain of layers; for another graph (or a chain the
    fast backend cannot run), the graph backend, which slices any supported graph per mask
    (the same results; the best backend for such a model, so not warned about); where neither
    can, the reference backend (same results, slower), which is warned about in one line
    (:class:`RuntimeWarning`) saying why. The backend returned says which one it is (``name``)
    and, when it is not the fast one under ``"auto"``, why (``fallback_reason``; None
    otherwise), which records and reports keep.

    Args:
        chain: The model split at its sites (:func:`subnet.engine.chain.analyse_chain`).
        backend: ``"fast"``, ``"graph"``, ``"reference"`` or ``"auto"``.
        rescale: Multiply kept units by 1 / keep, as inverted dropout does.

    Returns:
        An object with ``name`` (``"fast"``, ``"graph"`` or ``"reference"``),
        ``fallback_reason`` and ``probabilities(x, masks) -> (n_masks, n_examples, n_classes)``.

    Raises:
        InputError: If ``backend`` is unknown, or the backend asked for cannot run the model.
    """
    check_choice("backend", backend, BACKENDS)
    if backend == "reference":
        return ReferenceBackend(chain, rescale=rescale, jit=True)
    if backend == "graph":
        return GraphBackend(chain, rescale=rescale)
    try:
        return FastBackend(chain, rescale=rescale)
    except InputError as err:
        if backend == "fast":
            raise
        reasons = [str(err).split("; use backend=")[0].rstrip(".")]
    try:
        engine: GraphBackend | ReferenceBackend = GraphBackend(chain, rescale=rescale)
    except InputError as err:
        reasons.append(str(err).split("; use backend=")[0].rstrip("."))
        engine = ReferenceBackend(chain, rescale=rescale, jit=True)
    reason = "; ".join(reasons)
    if engine.name == "reference":  # the graph backend is the right one: nothing to warn about
        warnings.warn(f"Model {chain.model.name!r}: {reason}; the reference backend evaluates "
                      "it instead (same results, slower).", RuntimeWarning, stacklevel=2)
    engine.fallback_reason = reason
    return engine

"""The one registry of methods: every list of methods subnet accepts or reports reads it.

A method is what chooses a subnetwork (or stands beside one as a baseline or control) under a
key that ``--methods``, ``results.json`` and the reports use. Each has one display name, a
kind, the allocation the quick comparison (:func:`subnet.compare`) spreads its budget with, and
the protocols that run it (``"quick"``: one-shot cuts and a short fine-tune; ``"thorough"``:
gradual prune-retrain, :func:`subnet.compare_gradual`). A light module: no TensorFlow.

=====================  ==============================  ==========  ==========  ===============
key                    name                            kind        allocation  protocols
=====================  ==============================  ==========  ==========  ===============
``banzhaf_iterative``  mask statistics                 estimator   iterative   quick, thorough
``banzhaf_single``     mask statistics (one record)    estimator   global      quick
``ablation``           ablation                        criterion   global      quick
``magnitude``          L1 magnitude                    criterion   uniform     quick, thorough
``taylor``             Taylor                          criterion   uniform     quick, thorough
``apoz``               APoZ                            criterion   uniform     quick, thorough
``activation``         mean activation                 criterion   uniform     quick, thorough
``random``             random units                    control     uniform     quick, thorough
``tfmot``              TFMOT (unstructured)            baseline    —           quick
``reinit``             reinitialised widths            control     —           quick
=====================  ==============================  ==========  ==========  ===============

``banzhaf_iterative`` is mask statistics measured again as the network shrinks (iterative in
the quick comparison, a record per round in gradual pruning); ``banzhaf_single`` ranks the units
of one record. ``tfmot`` and ``reinit`` are built on another method's subnetwork (its nonzero
weights, its widths): they are *referenced*. Estimators that only score units (exact Banzhaf
values, regression on masks) have display names and no protocol; ``banzhaf``, the estimate of
:func:`subnet.importance.estimate` from one record, is shown as "mask statistics" too.

Results and command lines written before the iterative method had its own key said ``banzhaf``
for it: :func:`resolve` maps a method key to the key it has now (:data:`RENAMED`), and
everything that reads saved rows or ``--methods`` goes through it.
"""

from __future__ import annotations

import dataclasses

__all__ = ["METHODS", "RENAMED", "Method", "accepted", "cache_name", "display_names", "method",
           "method_name", "resolve"]

KINDS = ("estimator", "criterion", "control", "baseline")


@dataclasses.dataclass(frozen=True)
class Method:
    """One method.

    Attributes:
        key: What ``--methods`` and ``results.json`` say.
        name: The one display name in figures, tables and prose.
        kind: ``"estimator"`` (mask statistics), ``"criterion"`` (a classical pruning
            criterion), ``"control"`` or ``"baseline"``.
        allocation: How the quick comparison spreads a budget over sites (``"iterative"``,
            ``"global"``, ``"uniform"``), or None for a method built on another's subnetwork.
        protocols: The protocols that run it.
        referenced: Built on the reference method's subnetwork (its widths or nonzero weights).
        default: The protocols whose default method list includes it.
    """

    key: str
    name: str
    kind: str
    allocation: str | None = None
    protocols: tuple[str, ...] = ()
    referenced: bool = False
    default: tuple[str, ...] = ()


_BOTH = ("quick", "thorough")
#: Every method, in the order lists show them.
METHODS: tuple[Method, ...] = (
    Method("banzhaf_iterative", "mask statistics", "estimator", "iterative", _BOTH,
           default=_BOTH),
    Method("banzhaf_single", "mask statistics (one record)", "estimator", "global", ("quick",)),
    Method("magnitude", "L1 magnitude", "criterion", "uniform", _BOTH, default=_BOTH),
    Method("taylor", "Taylor", "criterion", "uniform", _BOTH, default=("thorough",)),
    Method("random", "random units", "control", "uniform", _BOTH, default=_BOTH),
    Method("apoz", "APoZ", "criterion", "uniform", _BOTH),
    Method("activation", "mean activation", "criterion", "uniform", _BOTH),
    Method("ablation", "ablation", "criterion", "global", ("quick",)),
    Method("tfmot", "TFMOT (unstructured)", "baseline", None, ("quick",), referenced=True,
           default=("quick",)),
    Method("reinit", "reinitialised widths", "control", None, ("quick",), referenced=True),
    Method("exact_banzhaf", "exact Banzhaf values", "estimator"),
    Method("regression", "regression on masks", "estimator"),
    Method("logistic", "logistic regression on masks", "estimator"),
    Method("class_conditional", "class-conditional mask statistics", "estimator"),
)
_BY_KEY = {m.key: m for m in METHODS}
#: {old key: key now} of comparison methods: ``banzhaf`` named iterative mask statistics in the
#: comparisons and frontiers written before ``banzhaf_iterative``.
RENAMED: dict[str, str] = {"banzhaf": "banzhaf_iterative"}


def resolve(key: str) -> str:
    """The key a comparison method has now (``"banzhaf"`` -> ``"banzhaf_iterative"``): old
    results and command lines still read. Any other key is returned as it is."""
    return RENAMED.get(key, key)


def cache_name(key: str) -> str:
    """The name a method has in cache keys and the file names made from them: its old key for a
    renamed method (``"banzhaf_iterative"`` -> ``"banzhaf"``), so that work cached before the
    rename (``--resume`` folders, the analysis scripts' cells and models) stays found; any other
    key as it is."""
    for old, new in RENAMED.items():
        if key == new:
            return old
    return key


def method(key: str) -> Method:
    """The :class:`Method` of ``key``.

    Raises:
        KeyError: If no method has that key (an old key finds its method as it is now).
    """
    return _BY_KEY[resolve(key)]


def accepted(protocol: str, *, default: bool = False, referenced: bool | None = None,
             kind: str | None = None) -> tuple[str, ...]:
    """Keys of the methods ``protocol`` runs (only its defaults with ``default``; only those
    built on another's subnetwork, or only those not, with ``referenced``; of one ``kind``)."""
    return tuple(m.key for m in METHODS if protocol in m.protocols
                 and (not default or protocol in m.default)
                 and (referenced is None or m.referenced == referenced)
                 and (kind is None or m.kind == kind))


def display_names() -> dict[str, str]:
    """{key: display name} of every method, and of every old key (:data:`RENAMED`) as its
    method is named now."""
    return {**{m.key: m.name for m in METHODS},
            **{old: _BY_KEY[new].name for old, new in RENAMED.items()}}


def method_name(key: str) -> str:
    """The display name of a method key (``"banzhaf_iterative"`` -> ``"mask statistics"``); an
    old key names its method as it is now (``"banzhaf"`` in a saved comparison is iterative mask
    statistics) and an unknown key is shown as it is."""
    key = resolve(key)
    found = _BY_KEY.get(key)
    return key if found is None else found.name

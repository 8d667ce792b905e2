"""The one display name of each method, shared by the reports and the answer's sentences
(a light module: no matplotlib, no TensorFlow)."""

from __future__ import annotations

__all__ = ["METHOD_NAMES", "method_name"]

# The one name each method goes by in figures, tables and prose; the key (what ``--methods``
# and results.json say) is listed next to it once, in the comparison section.
METHOD_NAMES = {
    "banzhaf": "mask statistics",
    "banzhaf_single": "mask statistics (one record)",
    "exact_banzhaf": "exact Banzhaf values",
    "regression": "regression on masks",
    "logistic": "logistic regression on masks",
    "class_conditional": "class-conditional mask statistics",
    "ablation": "ablation",
    "magnitude": "L1 magnitude",
    "random": "random units",
    "taylor": "Taylor",
    "apoz": "APoZ",
    "activation": "mean activation",
    "tfmot": "TFMOT (unstructured)",
    "reinit": "reinitialised widths",
}


def method_name(method: str) -> str:
    """The display name of a method key (``"banzhaf"`` -> ``"mask statistics"``); an unknown key
    is shown as it is."""
    return METHOD_NAMES.get(method, method)

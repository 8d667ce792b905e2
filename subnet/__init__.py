"""subnet: do equally good subnetworks exist inside a trained network?

The public API, one function or class per stage of the data flow::

    model file ──load_model──► Keras model ──sites──► SiteTable
                               Keras model ──channel_groups──► Structure (units of any graph)
    load_dataset ──► x, y ──record_masks(model, x, y, n_masks, seed)──► MaskRecord
    estimate(record | (model, x, y), method) ──► Importance
    keep_sets(importance, Budget, model) ──► KeepSet ──extract──► smaller model ──finetune──►
    iterative_keep_sets(model, x, y, budgets) ──► {budget: KeepSet} (pruned in re-measured steps)
    compare(model, dataset, methods, budgets, seeds) ──► Comparison
        (dataset: a Dataset or Keras's ((x_train, y_train), (x_test, y_test)): as_dataset)
    mc_dropout(model, x, y): the blog's experiment, element-wise dropout at test time
    uncertainty(probabilities, labels, ood=...): how good a predictor's uncertainty is

Names are imported on first use, and TensorFlow only with the first name that computes, so
``import subnet``, ``python -m subnet.analyze --help`` and argument errors answer at once.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AdaptiveStop": "subnet.record",
    "Budget": "subnet.extraction",
    "CellStore": "subnet.cells",
    "Comparison": "subnet.comparison",
    "ComparisonRow": "subnet.results",
    "Cost": "subnet.structure",
    "DataError": "subnet.errors",
    "Dataset": "subnet.data",
    "FinetuneResult": "subnet.finetuning",
    "Importance": "subnet.importance.core",
    "InputError": "subnet.errors",
    "InputTypeError": "subnet.errors",
    "KeepProbabilities": "subnet.keep",
    "KeepSet": "subnet.extraction",
    "LocalExecutor": "subnet.distributed",
    "MCDropoutResult": "subnet.engine.mc",
    "MaskRecord": "subnet.record",
    "Measurement": "subnet.measuring",
    "PairedTest": "subnet.stats",
    "ProcessExecutor": "subnet.distributed",
    "Protocol": "subnet.protocol",
    "ModelFileError": "subnet.errors",
    "RayExecutor": "subnet.distributed",
    "RecordError": "subnet.errors",
    "Results": "subnet.results",
    "Site": "subnet.engine.chain",
    "Structure": "subnet.structure",
    "SiteTable": "subnet.engine.chain",
    "Uncertainty": "subnet.predictive",
    "UntrustedModelError": "subnet.errors",
    "as_dataset": "subnet.data",
    "calibrate_keep": "subnet.keep",
    "channel_groups": "subnet.structure",
    "compare": "subnet.comparison",
    "compare_gradual": "subnet.frontier",
    "deserialization_scope": "subnet.models",
    "dropout_layers": "subnet.models",
    "estimate": "subnet.importance.core",
    "expected_pooling": "subnet.pooling",
    "extract": "subnet.extraction",
    "finetune": "subnet.extraction",
    "flatten_nested": "subnet.flatten",
    "iterative_keep_sets": "subnet.iterative",
    "keep_sets": "subnet.extraction",
    "load_dataset": "subnet.data",
    "load_model": "subnet.models",
    "load_results": "subnet.results",
    "mc_dropout": "subnet.engine.mc",
    "mcnemar": "subnet.stats",
    "measure": "subnet.extraction",
    "original_names": "subnet.models",
    "paired_bootstrap": "subnet.stats",
    "prune_gradually": "subnet.gradual",
    "record_masks": "subnet.record",
    "sample_masks": "subnet.masks",
    "seed_cnn": "subnet.models",
    "sites": "subnet.engine.chain",
    "uncertainty": "subnet.predictive",
    "validation_split": "subnet.protocol",
    "with_dropout": "subnet.models",
}

__all__ = sorted([*_EXPORTS, "versions"])


def versions() -> dict:
    """The versions of Python, TensorFlow, Keras, NumPy and subnet, and whether TensorFlow's
    oneDNN kernels were on: what every record, result file and report stores beside its numbers.

    Returns:
        ``{"python", "tensorflow", "keras", "numpy", "subnet", "onednn"}`` as strings
        (``onednn``: ``TF_ENABLE_ONEDNN_OPTS`` as TensorFlow saw it, see :mod:`subnet.runtime`).
    """
    import platform

    import numpy as np

    from subnet.runtime import ONEDNN, keras, tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "subnet": __version__,
            "onednn": ONEDNN}


_SUBPACKAGES = ("baselines", "comparison", "data", "engine", "extraction", "importance",
                "iterative", "masks", "models", "record", "report", "stats", "train", "gradual",
                "controls", "protocol", "frontier", "structure", "predictive", "distributed",
                "keep", "flatten", "io", "methods", "plan")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"subnet.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'subnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""subnet: do equally good subnetworks exist inside a trained network?

The public API, one function or class per stage of the data flow::

    model file ──load_model──► Keras model ──sites──► SiteTable
    load_dataset ──► x, y ──record_masks(model, x, y, n_masks, seed)──► MaskRecord
    mc_dropout(model, x, y): the blog's experiment, element-wise dropout at test time

Names are imported on first use, so ``python -m subnet.data`` and friends start quickly.
"""

from __future__ import annotations

import importlib

from subnet._quiet import import_tensorflow_quietly

__version__ = "0.1.0"

import_tensorflow_quietly()

_EXPORTS = {
    "AdaptiveStop": "subnet.record",
    "DataError": "subnet.errors",
    "Dataset": "subnet.data",
    "MCDropoutResult": "subnet.engine.mc",
    "MaskRecord": "subnet.masks",
    "ModelFileError": "subnet.errors",
    "RecordError": "subnet.errors",
    "Site": "subnet.engine.chain",
    "SiteTable": "subnet.engine.chain",
    "UntrustedModelError": "subnet.errors",
    "dropout_layers": "subnet.models",
    "load_dataset": "subnet.data",
    "load_model": "subnet.models",
    "mc_dropout": "subnet.engine.mc",
    "record_masks": "subnet.record",
    "sample_masks": "subnet.masks",
    "seed_cnn": "subnet.models",
    "sites": "subnet.engine.chain",
    "with_dropout": "subnet.models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'subnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""subnet: do equally good subnetworks exist inside a trained network?

The public API, one function or class per stage of the data flow::

    model file ──load_model──► Keras model ──sites──► SiteTable
    load_dataset ──► x, y ──record_masks(model, x, y, n_masks, seed)──► MaskRecord
    mc_dropout(model, x, y): the blog's experiment, element-wise dropout at test time
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet

__version__ = "0.1.0"

from subnet.data import Dataset, load_dataset  # noqa: E402
from subnet.engine.chain import Site, SiteTable, sites  # noqa: E402
from subnet.engine.mc import MCDropoutResult, mc_dropout  # noqa: E402
from subnet.errors import (  # noqa: E402
    DataError,
    ModelFileError,
    RecordError,
    UntrustedModelError,
)
from subnet.masks import MaskRecord, sample_masks  # noqa: E402
from subnet.models import dropout_layers, load_model, seed_cnn, with_dropout  # noqa: E402
from subnet.record import record_masks  # noqa: E402

__all__ = [
    "DataError",
    "Dataset",
    "MCDropoutResult",
    "MaskRecord",
    "ModelFileError",
    "RecordError",
    "Site",
    "SiteTable",
    "UntrustedModelError",
    "dropout_layers",
    "load_dataset",
    "load_model",
    "mc_dropout",
    "record_masks",
    "sample_masks",
    "seed_cnn",
    "sites",
    "with_dropout",
]

"""The blog's network, safe model loading, and what a model says about its own dropout.

This is the package through which model files become Keras 3 models. Its modules:

* :mod:`subnet.models.network`: the blog's CNN (:func:`seed_cnn`), :class:`AlwaysOnDropout`,
  the dropout a model applies (:func:`dropout_layers`, :func:`with_dropout`), copies of a model
  (:func:`clone_layers`), and checks of a classifier's output and examples.
* :mod:`subnet.models.loading`: :func:`load_model` and copies of models whose code was trusted
  (:func:`deserialization_scope`, :func:`model_bytes`, :func:`model_from_bytes`).
* :mod:`subnet.models.files`: the checks of an untrusted file before Keras reads it, and the
  limits they apply (``subnet.models.files.MAX_CONFIG_BYTES`` and the others, which the error
  messages name; assign them there to change what is enforced).
* :mod:`subnet.models.architecture`: the architecture JSON read as data (code in it, names,
  dropout ``Lambda`` layers).

Model files are untrusted input: :func:`load_model` reads the architecture before anything is
deserialized and refuses code stored anywhere in it (``Lambda`` layers, wrapped or nested ones
too, and Python functions serialized as activations or initializers) unless the caller passes
``trust=True``; it refuses, in one line and before Keras reads them, files that are not regular
files, that are both a zip and an HDF5 file, that nest too deeply, declare too much (bytes,
layers, parameters) or are decompression bombs. Names TensorFlow cannot run are replaced, and
:func:`original_names` keeps the file's own. :func:`deserialization_scope` lets other modules
copy a model whose code was trusted. With trust, a ``Lambda`` that only applies dropout (the
blog's ``PermaDropout = Lambda(lambda x: K.dropout(x, level=rate))``) is recognised and rebuilt
as a Keras ``Dropout`` layer that is always on, so the rest of subnet sees an ordinary dropout
rate.

Keras 2 models built the blog's other way, ``Dropout(0.5)(x, training=True)``, load in Keras 3
with that dropout *baked on*: ``model(x)`` is random on every call, while ``model.predict`` and
``model(x, training=False)`` are deterministic. :func:`dropout_layers` reports which dropout
layers are baked on, and :func:`with_dropout` returns a copy whose dropout is on or off in every
call, whatever the original said.
"""

from subnet.models.loading import (
    deserialization_scope,
    load_model,
    model_bytes,
    model_from_bytes,
    original_names,
)
from subnet.models.network import (
    AlwaysOnDropout,
    DropoutInfo,
    check_examples,
    clone_layers,
    dropout_layers,
    examples_of,
    outputs_probabilities,
    seed_cnn,
    with_dropout,
)

__all__ = [
    "AlwaysOnDropout",
    "check_examples",
    "clone_layers",
    "deserialization_scope",
    "DropoutInfo",
    "dropout_layers",
    "examples_of",
    "load_model",
    "model_bytes",
    "model_from_bytes",
    "original_names",
    "outputs_probabilities",
    "seed_cnn",
    "with_dropout",
]

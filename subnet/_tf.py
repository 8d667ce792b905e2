"""The one place subnet imports TensorFlow and Keras: quietly (see :mod:`subnet._quiet`), and
only when a module that computes is imported, so that ``import subnet``, ``--help`` and argument
errors never start TensorFlow."""

from subnet._quiet import import_tensorflow_quietly

import_tensorflow_quietly()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf"]

"""The one place subnet imports TensorFlow and Keras: quietly (see :mod:`subnet._quiet`), and
only when a module that computes is imported, so that ``import subnet``, ``--help`` and argument
errors never start TensorFlow.

TensorFlow's oneDNN kernels are turned on (``TF_ENABLE_ONEDNN_OPTS=1``) unless the environment
says otherwise: this TensorFlow build leaves them off on CPUs without AVX-512, where, measured
on the 2-core machine these reports come from, they train the blog's network 1.3-1.7x faster,
predict 2x faster, record masks 1.45x faster, and run the few-channel convolutions of narrow
residual networks about 4x faster. Results are as deterministic with them as without (the same
bytes run to run), but differ from the other setting in float rounding, so
:func:`subnet.versions` records which was used (``onednn``). Set ``TF_ENABLE_ONEDNN_OPTS=0``
to reproduce numbers made without them.
"""

from subnet import _quiet

_quiet.import_tensorflow_quietly()
#: TF_ENABLE_ONEDNN_OPTS as TensorFlow saw it ("unknown" if it was imported before subnet).
ONEDNN = _quiet.ONEDNN

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf", "ONEDNN"]

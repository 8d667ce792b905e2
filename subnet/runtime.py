"""TensorFlow and Keras as subnet runs them, for subnet and scripts built on it (import them from
here, as ``from subnet.runtime import keras``, to run them as subnet does).

The one place subnet imports TensorFlow and Keras: quietly (see :mod:`subnet._quiet`), and
only when a module that computes is imported, so that ``import subnet``, ``--help`` and argument
errors never start TensorFlow.

TensorFlow's oneDNN kernels are turned off (``TF_ENABLE_ONEDNN_OPTS=0``) unless the environment
says otherwise. TensorFlow 2.21 turns them on by default only on CPUs with AVX-512; with them on
and one intra-op thread (what a Ray worker or a ``make analyses`` job runs with), training a
model with a 1x1 stride-2 convolution (a ResNet's projection shortcut) corrupts the heap:
measured here, a crash (``double free or corruption``, ``malloc(): corrupted top size`` or a
segmentation fault) in 5 of 5 runs of a three-layer model with one such convolution and 3 of 3
runs of the ResNet-20 layout, none in the same 8 runs with them off. A faster kernel is not
worth an instrument that can fail, or compute on corrupted memory, depending on the machine.
Where they are safe and wanted, ``TF_ENABLE_ONEDNN_OPTS=1`` turns them on: on the 2-core
machine these reports come from they train the blog's network 1.3-1.7x faster and record its
masks 1.2x faster. Results are as deterministic with them as without (the same bytes run to
run) but differ in float rounding, so :func:`subnet.versions` records which was used
(``onednn``).
"""

import os

from subnet import _quiet

_quiet.import_tensorflow_quietly()
#: TF_ENABLE_ONEDNN_OPTS as TensorFlow saw it ("unknown" if it was imported before subnet).
ONEDNN = _quiet.ONEDNN
_INTRAOP_ENV = os.environ.get("TF_NUM_INTRAOP_THREADS")  # TensorFlow reads it once, at start

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf", "ONEDNN", "intra_op_threads"]


def intra_op_threads() -> int:
    """The number of threads TensorFlow's CPU kernels split one operation over in this process.

    It is ``tf.config.threading``'s setting when one was made, else ``TF_NUM_INTRAOP_THREADS``
    (a whole number above 0), else the CPUs this process may run on: TensorFlow's own default.
    A CPU matrix product or convolution sums in an order that depends on it, so that outcomes
    computed with another count can differ in the last bits (``subnet.record`` stores it, and
    computes every chunk of a record with the same count).
    """
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    if configured > 0:
        return int(configured)
    try:
        from_env = int(_INTRAOP_ENV or 0)
    except ValueError:
        from_env = 0
    if from_env > 0:
        return from_env
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1

"""The one place subnet imports TensorFlow and Keras: quietly (see :mod:`subnet._quiet`), and
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

from subnet import _quiet

_quiet.import_tensorflow_quietly()
#: TF_ENABLE_ONEDNN_OPTS as TensorFlow saw it ("unknown" if it was imported before subnet).
ONEDNN = _quiet.ONEDNN

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf", "ONEDNN"]

"""Importing TensorFlow without its start-up chatter on the terminal.

TensorFlow's native libraries log a few lines to file descriptor 2 when they load ("All log
messages before absl::InitializeLog() is called are written to STDERR", oneDNN and CUDA notices),
and ``TF_CPP_MIN_LOG_LEVEL`` no longer silences all of them. subnet imports TensorFlow once, with
descriptor 2 pointed at a temporary file; if the import fails, what it wrote is replayed.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

__all__ = ["import_tensorflow_quietly", "quiet_tensorflow_warnings"]


#: TF_ENABLE_ONEDNN_OPTS as TensorFlow saw it when subnet imported it: "unknown" until then,
#: and when TensorFlow was imported before subnet (whose setting is then whatever it had).
ONEDNN = "unknown"


def _onednn_off_unless_set() -> None:
    """TensorFlow's oneDNN kernels off, unless the environment says otherwise (see
    :mod:`subnet.runtime` for why), before TensorFlow is first imported."""
    global ONEDNN
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    ONEDNN = os.environ["TF_ENABLE_ONEDNN_OPTS"]


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow (if not imported yet) and discovers its devices, with the native
    start-up logging captured; TensorFlow's oneDNN kernels off unless the environment sets
    ``TF_ENABLE_ONEDNN_OPTS``.

    Set ``SUBNET_TF_LOGS=1`` to see that logging.
    """
    _onednn_off_unless_set()
    if "tensorflow" in sys.modules or os.environ.get("SUBNET_TF_LOGS") == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (embedded interpreters)
        import tensorflow  # noqa: F401
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            tensorflow.config.list_physical_devices()  # device discovery logs too
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_tensorflow_warnings() -> None:
    """For command-line tools: TensorFlow's Python warnings (such as the tf.function retracing
    notice that training or predicting with many small models triggers: each new model traces
    its own function once) are not for their users. TensorFlow's errors still show.

    Sets the level of the ``tensorflow`` logger, which TensorFlow leaves alone when it is
    imported, so that this imports nothing: a command checks its arguments and answers at once,
    and TensorFlow starts only when there is work (with its oneDNN kernels off unless the
    environment says otherwise, as :func:`import_tensorflow_quietly` sets them). Set
    ``SUBNET_TF_LOGS=1`` to keep the warnings.
    """
    _onednn_off_unless_set()
    if os.environ.get("SUBNET_TF_LOGS") == "1":
        return
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

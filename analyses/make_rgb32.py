"""Builds a 32 x 32 x 3 copy of MNIST: a data set of CIFAR's input shape for models that need it.

    python analyses/make_rgb32.py [--out out/data/mnist_rgb32.npz] [--train N] [--test N]

Each 28 x 28 grayscale image is padded with 2 rows and columns of zeros on every side and its
channel repeated three times: float32 in [0, 1], shape ``(N, 32, 32, 3)``. The labels are kept
(int64), and so is ``num_classes``. ``--train N`` and ``--test N`` keep the first N examples of
each split. The file (keys ``x_train``, ``y_train``, ``x_test``, ``y_test``, ``num_classes``,
compressed) appears complete under its name or not at all, and ``subnet.load_dataset(path)``
reads it. The script prints one JSON line: the file, the source, every array's shape and a
SHA-256 fingerprint of the arrays (:func:`fingerprint`).

The full data set is 70,000 images of 12 KiB each as float32: about 860 MB in memory, far less
on disk (mostly zeros).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from subnet.cli import ArgumentParser, run_main
from subnet.errors import DataError
from subnet.io import atomic_path

SIZE = 32
KEYS = ("x_train", "y_train", "x_test", "y_test", "num_classes")


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """Pads single-channel images with zeros to 32 x 32 (centred) and repeats the channel 3 times.

    Args:
        images: float32 ``(N, H, W, 1)`` with ``H, W <= 32``, values in [0, 1].

    Returns:
        float32 ``(N, 32, 32, 3)``; the three channels are equal.

    Raises:
        DataError: If the images are not single-channel or larger than 32 x 32.
    """
    if images.ndim != 4 or images.shape[-1] != 1 or max(images.shape[1:3]) > SIZE:
        raise DataError(f"Expected single-channel images of at most {SIZE} x {SIZE}, shape "
                        f"(N, H, W, 1). Received: shape {images.shape}")
    pad_h, pad_w = SIZE - images.shape[1], SIZE - images.shape[2]
    padded = np.pad(images.astype(np.float32, copy=False),
                    ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                     (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    return np.repeat(padded, 3, axis=-1)


def arrays_of(data) -> dict[str, np.ndarray]:
    """The arrays of the 32 x 32 x 3 file made from ``data`` (a :class:`subnet.Dataset`)."""
    arrays = {}
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if x is not None:
            arrays[f"x_{split}"] = to_rgb32(x)
            arrays[f"y_{split}"] = np.asarray(y, dtype=np.int64)
    arrays["num_classes"] = np.asarray(data.num_classes, dtype=np.int64)
    return arrays


def cached_file(path: Path, n_train: int | None = None, n_test: int | None = None) -> Path:
    """``path``, an ``.npz`` of the first ``n_train`` training and ``n_test`` test images of
    MNIST made 32 x 32 x 3 (:func:`arrays_of`; None: all), written atomically unless it exists
    (callers name it by what made it)."""
    from subnet.io import atomic_path

    if not path.exists():
        import subnet

        data = subnet.load_dataset("mnist").subset(n_train=n_train, n_test=n_test)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays_of(data))
    return path


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 hex digest of ``arrays``: for each key of :data:`KEYS` present, in that order, its
    name, dtype and shape, then its bytes (C order, the dtype's little-endian form).

    Args:
        arrays: Arrays by name, as :func:`arrays_of` makes them or ``numpy.load`` reads them.

    Returns:
        A 64-character lowercase hex string.
    """
    digest = hashlib.sha256()
    for key in KEYS:
        if key in arrays:
            a = np.asarray(arrays[key])
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
            digest.update(f"{key} {a.dtype.str} {a.shape}\n".encode())
            digest.update(a.tobytes())
    return digest.hexdigest()


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of examples, got {text!r}")
    return n


def main(argv=None) -> int:
    parser = ArgumentParser(prog="make_rgb32.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/data/mnist_rgb32.npz"),
                        help="the .npz file to write (default: %(default)s)")
    parser.add_argument("--train", type=_count, default=None, metavar="N",
                        help="keep the first N training examples (default: all)")
    parser.add_argument("--test", type=_count, default=None, metavar="N",
                        help="keep the first N test examples (default: all)")
    parser.add_argument("--source", default="mnist",
                        help="a data set name or a file or folder subnet.load_dataset reads, "
                             "of single-channel images of at most 32 x 32 (default: mnist)")
    args = parser.parse_args(argv)

    def body() -> int:
        import subnet

        data = subnet.load_dataset(args.source).subset(n_train=args.train, n_test=args.test)
        arrays = arrays_of(data)
        with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        print(json.dumps({"out": str(args.out), "source": data.source,
                          "shapes": {k: list(v.shape) for k, v in arrays.items()},
                          "sha256": fingerprint(arrays)}))
        return 0

    return run_main(body, parser.prog)


if __name__ == "__main__":
    sys.exit(main())

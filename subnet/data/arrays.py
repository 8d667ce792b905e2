"""Limits on what a data file may declare, and conversion of the arrays read from files.

A data file is untrusted: the sizes its headers declare are checked against :data:`MAX_EXAMPLES`
and :data:`MAX_BYTES` (or the ``max_bytes`` a caller gives) before anything is allocated. The
arrays read are then converted to a :class:`Dataset`'s dtypes and layouts, with
messages that name the file and key (or, for arrays given in memory, the argument and array):
one conversion, :func:`_convert`, for ``.npz`` files and :func:`~subnet.data.as_dataset` alike.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

import numpy as np

from subnet.data.dataset import _EXAMPLE, _NOUN, _RANK, _SHAPE, LAYOUTS, Dataset
from subnet.errors import DataError, InputError

__all__ = ["MAX_BYTES", "MAX_EXAMPLES"]

MAX_EXAMPLES = 10_000_000
"""The most examples one array of a data file may declare (MNIST's training set has 60,000)."""

MAX_BYTES = 1 << 30
"""The most bytes the arrays of one data set may declare, decompressed, unless a caller raises
it (``load_dataset(..., max_bytes=N)``; command lines: ``--max-data-bytes N``): 1 GiB. MNIST's
four IDX files hold 55 MB, a CIFAR-like 50,000 x 32 x 32 x 3 uint8 set 154 MB. Sizes are checked
against it before anything is read or allocated; uint8 images take 4 times as much once
float32. Of the test split, only the examples asked for are read (``n_test``)."""


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


def _positive_or_none(value, name: str) -> int | None:
    """``value`` as an int if it is a positive int, None if None; else a one-line error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"`{name}` must be a positive int or None. Received: {name}={value!r}")
    return int(value)


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


class _Header(Protocol):
    """What is known of an array before it is read: a ``.npz`` member's header, or the array."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...


class _Names(NamedTuple):
    """How messages name a data set's arrays: a file's keys, or the arrays a caller gave."""

    prefix: str  # the file, or the argument ("`dataset`")
    file: bool  # "data.npz: key 'x_test'", or "`dataset`: x_test"

    def key(self, key: str) -> str:
        return f"{self.prefix}: key {key!r}" if self.file else f"{self.prefix}: {key}"

    def keys(self, first: str, second: str) -> str:
        if self.file:
            return f"{self.prefix}: keys {first!r} and {second!r}"
        return f"{self.prefix}: {first} and {second}"

    def name_layout(self, value: str) -> str:
        """How to say which layout the arrays are, e.g. ``value="'sequences'"``."""
        if self.file:
            return f"save the file with layout={value}"
        return f"give subnet.data.as_dataset(..., layout={value})"


def _layout_of_header(names: _Names, shape: tuple[int, ...], dtype: np.dtype,
                      layout_3d: str) -> tuple[str, str]:
    """The layout that ``x_test``'s shape and dtype imply, with ``layout_3d`` for 3-D arrays,
    and why (for messages)."""
    if len(shape) == 2:
        integer = dtype.kind in "iu"
        return (("tokens", "x_test is a 2-D integer array") if integer else
                ("features", "x_test is a 2-D non-integer array"))
    if len(shape) == 3:
        unnamed = "the file has no key 'layout'" if names.file else "no layout is given"
        return layout_3d, f"x_test is a 3-D array, read as {layout_3d} when {unnamed}"
    if len(shape) == 4:
        return "images", "x_test is a 4-D array"
    raise DataError(
        f"{names.key('x_test')} has shape {shape}; expected token ids (N, L) (integers), feature "
        "vectors (N, D) or sequences (N, L, C) (floats), or images (N, H, W) or (N, H, W, C)."
    )


def _check_shapes(names: _Names, headers: Mapping[str, _Header], splits: list[str],
                  layout: str, why: str) -> None:
    """Checks, from the shapes alone, that the x arrays fit ``layout`` and each other, and that
    each y array has one label per example."""
    ranks = (3, 4) if layout == "images" else (_RANK[layout],)
    wanted = "(N, H, W) or (N, H, W, C)" if layout == "images" else _SHAPE[layout]
    examples = {}
    for split in splits:
        xk, yk = f"x_{split}", f"y_{split}"
        x_shape, y_shape = tuple(headers[xk].shape), tuple(headers[yk].shape)
        if len(x_shape) not in ranks:
            raise DataError(
                f"{names.key(xk)} has shape {x_shape}, but the layout is {layout!r} ({why}), "
                f"which needs {_NOUN[layout]} of shape {wanted}. Store x_train and x_test in one "
                f"layout, and {names.name_layout(repr('...'))} naming it "
                f"({', '.join(LAYOUTS)})."
            )
        examples[split] = x_shape[1:] + ((1,) if layout == "images" and len(x_shape) == 3 else ())
        if y_shape and y_shape[0] != x_shape[0]:
            raise DataError(
                f"{names.keys(xk, yk)} must have the same length, got {x_shape[0]} "
                f"{_NOUN[layout]} and {y_shape[0]} labels."
            )
    if len(examples) == 2 and examples["train"] != examples["test"]:
        raise DataError(
            f"{names.keys('x_train', 'x_test')} must hold {_NOUN[layout]} of the same "
            f"{_EXAMPLE[layout]}, got {examples['train']} and {examples['test']}."
        )


def _convert(names: _Names, headers: Mapping[str, _Header], get: Callable[[str], np.ndarray],
             layout: str, why: str, hint: str = "") -> tuple[dict[str, np.ndarray], int]:
    """Checks and converts a data set's arrays to a :class:`Dataset`'s: the one conversion of
    ``.npz`` files and of arrays given in memory.

    Args:
        names: How messages name the arrays.
        headers: ``x_test``, ``y_test`` and optionally ``x_train``, ``y_train``: their shapes and
            dtypes, checked (:func:`_check_shapes`) before ``get`` reads any.
        get: Reads the array of a key.
        layout: One of :data:`LAYOUTS`; ``why`` says where it came from.
        hint: Ends the message of a range error of images (another way to read them).

    Returns:
        ``(arrays, classes)``: the converted arrays by key (:func:`_to_images`,
        :func:`_to_tokens` or :func:`_to_floats`, and :func:`_to_labels`; token ids of both
        splits in the wider dtype), and the classes the labels need: the largest label + 1,
        the width of one-hot labels, and at least 2.
    """
    splits = [split for split in ("train", "test") if f"x_{split}" in headers]
    _check_shapes(names, headers, splits, layout, why)
    arrays: dict[str, np.ndarray] = {}
    widths = []
    for split in splits:
        xk, yk = f"x_{split}", f"y_{split}"
        if layout == "images":
            arrays[xk] = _to_images(get(xk), names.key(xk), hint)
        elif layout == "tokens":
            arrays[xk] = _to_tokens(get(xk), names.key(xk))
        else:
            arrays[xk] = _to_floats(get(xk), layout, names.key(xk))
        arrays[yk], width = _to_labels(get(yk), names.key(yk))
        if width is not None:
            widths.append(width)
    if layout == "tokens" and len({arrays[f"x_{split}"].dtype for split in splits}) > 1:
        for split in splits:  # one dtype for both splits: the wider
            arrays[f"x_{split}"] = arrays[f"x_{split}"].astype(np.int64)
    max_label = max(int(arrays[f"y_{split}"].max()) for split in splits)
    return arrays, max(2, max_label + 1, *widths)


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

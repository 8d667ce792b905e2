"""Data given in memory: :func:`as_dataset`, and the one reader of ``tf.data`` data sets.

Every entry point that takes a whole data set (``finetune``, ``compare``, ``compare_gradual``,
``prune_gradually``, ``validation_split``, the TFMOT baseline) passes its ``dataset`` through
:func:`as_dataset`, so each takes alike a :class:`Dataset`, Keras's ``load_data()`` form
``((x_train, y_train), (x_test, y_test))``, or a ``(train, test)`` pair of ``tf.data.Dataset``
objects. Arrays are converted exactly as a ``.npz`` file's are (one conversion,
:func:`subnet.data.arrays._convert`), under the same limit (:data:`~subnet.data.MAX_BYTES`).

:func:`read_pairs` reads a ``tf.data.Dataset`` of ``(examples, labels)``, batched or not, into
two arrays: for :func:`as_dataset`, and for the entry points that take ``(model, x, y)``
(:func:`subnet.models.examples_of`).
"""

from __future__ import annotations

import numbers

import numpy as np

from subnet.data.arrays import (
    MAX_EXAMPLES,
    _convert,
    _layout_of_header,
    _Limits,
    _make_dataset,
    _Names,
    _positive_or_none,
)
from subnet.data.dataset import LAYOUTS, Dataset
from subnet.errors import DataError, InputError, clean
from subnet.validation import check_choice, invalid

__all__ = ["as_dataset", "read_pairs"]

_FORMS = ("a subnet Dataset (subnet.load_dataset reads one from a name or a .npz file), "
          "((x_train, y_train), (x_test, y_test)) arrays as keras.datasets' load_data() returns "
          "them, or (train, test) tf.data.Datasets of (examples, labels)")
_ARGUMENT = "`dataset`"
_SPLIT_NAMES = {"train": "training", "test": "test"}


def as_dataset(data, *, name: str = "arrays", layout: str | None = None,
               max_bytes: int | None = None) -> Dataset:
    """The :class:`Dataset` of what an entry point was given for ``dataset``.

    Arrays are converted as :func:`~subnet.data.load_dataset` converts a ``.npz`` file's
    ``x_train``, ``y_train``, ``x_test``, ``y_test``: uint8 images (0-255) divided by 255 to
    float32 ``(N, H, W, C)`` (a channel axis added to ``(N, H, W)``), float images kept if in
    [0, 1], integer ``(N, L)`` arrays as token ids, float ``(N, D)`` as feature vectors; labels
    of shape ``(N,)``, ``(N, 1)`` or one-hot ``(N, K)`` as int64 class indices. The layout
    follows from ``x_test`` (3-D arrays are grayscale images) unless ``layout`` names it, and
    ``num_classes`` is the largest label + 1 (or the one-hot width; at least 2).

    A ``tf.data.Dataset`` is read into memory first (:func:`read_pairs`): it is batched when
    its examples and labels share their first axis in ``element_spec`` (as ``batch()`` makes
    them), else unbatched.

    Args:
        data: A :class:`Dataset` (returned as it is); or ``((x_train, y_train), (x_test,
            y_test))`` as ``keras.datasets.mnist.load_data()`` returns it (numpy arrays, or
            tensors); or ``(train, test)``, each a ``tf.data.Dataset`` of ``(examples,
            labels)`` (or either split one and arrays the other).
        name: The data set's name (``Dataset.name``).
        layout: One of :data:`~subnet.data.LAYOUTS` to read the examples as (e.g.
            ``"sequences"`` for 3-D float arrays); None decides from ``x_test`` as a ``.npz``
            file without a ``layout`` key.
        max_bytes: The most bytes the four arrays may hold together, as given (uint8 images
            take 4 times as much once float32); None for :data:`~subnet.data.MAX_BYTES`.

    Returns:
        The validated :class:`Dataset`, equal to what :func:`~subnet.data.load_dataset` gives
        for a ``.npz`` file of the same arrays.

    Raises:
        InputTypeError: If ``data`` is none of the forms above (the message says what it is).
        InputError: If ``name``, ``layout`` or ``max_bytes`` is invalid, or a
            ``tf.data.Dataset`` is empty, holds other elements than ``(examples, labels)`` or is
            larger than the limit.
        DataError: If the arrays are larger than the limit, or do not convert (wrong dtype,
            rank or range, labels that are not class indices, lengths that differ); the message
            names the array.
    """
    if isinstance(data, Dataset):
        return data
    if not isinstance(name, str) or not name:
        raise invalid("name", "a non-empty str", name, type_error=True)
    if layout is not None:
        check_choice("layout", layout, LAYOUTS)
    limits = _Limits(max_bytes=_positive_or_none(max_bytes, "max_bytes"))
    limit = limits.byte_limit()[0]
    limit_name = "subnet.data.MAX_BYTES" if max_bytes is None else "the max_bytes given"
    raise_it = "raise it with subnet.data.as_dataset(data, max_bytes=N) and pass its Dataset"
    arrays: dict[str, np.ndarray] = {}
    kinds = set()
    for split, given in zip(_SPLIT_NAMES, _splits(data), strict=True):
        if _is_tf_dataset(given):
            x, y = read_pairs(given, f"{_ARGUMENT}'s {_SPLIT_NAMES[split]} split", limit=limit,
                              limit_name=f"{limit_name}; {raise_it}",
                              used=sum(a.nbytes for a in arrays.values()))
            kinds.add("tf.data.Datasets")
        else:
            x, y = (_array(value, f"{key}_{split}") for key, value in zip("xy", given, strict=True))
            kinds.add("arrays")
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    _check_size(arrays, limit, f"{limit_name}; if you trust the data, {raise_it}")
    names = _Names(_ARGUMENT, file=False)
    x_test = arrays["x_test"]
    hint = ""
    if layout is None:
        layout, why = _layout_of_header(names, x_test.shape, x_test.dtype, "images")
        if x_test.ndim == 3:
            hint = f", or, if they are (N, L, C) sequences, {names.name_layout(repr('sequences'))}"
    else:
        why = "the layout given"
    converted, num_classes = _convert(names, arrays, arrays.__getitem__, layout, why, hint)
    source = f"{' and '.join(sorted(kinds))} given in memory"
    return _make_dataset(name, converted, source, num_classes, None, _ARGUMENT, layout)


def read_pairs(dataset, what: str, *, limit: int, limit_name: str, used: int = 0,
               example_rank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reads a ``tf.data.Dataset`` of ``(examples, labels)`` into two arrays, batched or not.

    An element is one example when its examples have ``example_rank`` axes (the rank of one
    example, where a model's input tells it), else a batch. Without ``example_rank`` it is
    decided once, from ``element_spec`` (else the first element): a batch's examples, of at
    least 2 axes, and labels share their first axis, of the same or unknown length, where one
    example's label is a scalar, or a one-hot row whose length is the number of classes. (So an
    unbatched data set of one-hot labels whose examples' first axis is as long as the number of
    classes reads as batched: ``batch()`` it first.)

    Args:
        dataset: A ``tf.data.Dataset``.
        what: How messages name it, e.g. ```x```.
        limit: The most bytes of examples and labels read, with ``used`` bytes already read.
        limit_name: What messages call the limit.
        used: Bytes read before (of another split), counted against ``limit``.
        example_rank: The rank of one example; None decides as above.

    Returns:
        ``(examples, labels)``: the elements' concatenated along a first axis added to unbatched
        ones.

    Raises:
        InputError: If an element is not an ``(examples, labels)`` pair, elements differ in
            shape, the data set is empty, or it holds more than the limit.
    """
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and all(hasattr(s, "shape") for s in spec)):
        raise InputError(f"{what} is a tf.data.Dataset whose elements are not (examples, "
                         "labels) pairs; map it to pairs (dataset.map(lambda e: (e['image'], "
                         "e['label']))).")
    batched = None
    if example_rank is None and spec[0].shape.rank is not None and spec[1].shape.rank is not None:
        batched = _is_batch(tuple(spec[0].shape), tuple(spec[1].shape))
    xs, ys, total = [], [], used
    for element in dataset.as_numpy_iterator():
        examples, labels = np.asarray(element[0]), np.asarray(element[1])
        if example_rank is not None:
            batch = examples.ndim != example_rank
        else:
            if batched is None:
                batched = _is_batch(examples.shape, labels.shape)
            batch = batched
        if not batch:
            examples, labels = examples[None], labels[None]
        total += examples.nbytes + labels.nbytes
        if total > limit:
            less = f" (the limit less {used:,} bytes of the other split)" if used else ""
            raise InputError(f"{what} is a tf.data.Dataset of more than {limit - used:,} bytes "
                             f"of examples and labels{less}, which subnet reads into memory: "
                             f"take() a part of it ({limit_name}).")
        xs.append(examples)
        ys.append(labels)
    if not xs:
        raise InputError(f"Received no examples: the tf.data.Dataset given for {what} is empty.")
    try:
        return np.concatenate(xs), np.concatenate(ys)
    except ValueError:
        shapes = sorted({(x.shape[1:], y.shape[1:]) for x, y in zip(xs, ys, strict=True)},
                        key=str)
        raise InputError(f"{what} is a tf.data.Dataset whose elements differ in shape (examples "
                         f"and labels of shapes {shapes[0]} and {shapes[-1]}); give them one "
                         "shape (e.g. padded_batch).") from None


def _is_batch(x_shape: tuple, y_shape: tuple) -> bool:
    """Whether examples and labels of these shapes (None: unknown length) are a batch."""
    return len(x_shape) >= 2 and len(y_shape) >= 1 and x_shape[0] == y_shape[0]


def _is_tf_dataset(value) -> bool:
    return hasattr(value, "as_numpy_iterator") and hasattr(value, "element_spec")


def _is_array(value) -> bool:
    """A numpy array, or a tensor numpy reads as one (it has ``__array__``, shape and dtype)."""
    return isinstance(value, np.ndarray) or all(
        hasattr(value, attr) for attr in ("__array__", "shape", "dtype"))


def _splits(data) -> tuple:
    """``data``'s two splits, each a pair of arrays or a tf.data.Dataset; else the error."""
    def is_split(value) -> bool:
        return _is_tf_dataset(value) or (isinstance(value, (tuple, list)) and len(value) == 2
                                         and all(_is_array(v) for v in value))

    if isinstance(data, (tuple, list)) and len(data) == 2 and all(is_split(s) for s in data):
        return tuple(data)
    raise invalid("dataset", _FORMS, data, type_error=True, received=_describe(data))


def _describe(value, depth: int = 0) -> str:
    """``value`` in a few words, for a message: types and shapes, never array contents."""
    if _is_tf_dataset(value):
        return "tf.data.Dataset"
    if _is_array(value):
        return f"array(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, (tuple, list)):
        if depth >= 2:
            return f"{type(value).__name__} of {len(value)}"
        items = ", ".join(_describe(v, depth + 1) for v in value[:3])
        more = ", ..." if len(value) > 3 else ("," if len(value) == 1 else "")
        return f"({items}{more})" if isinstance(value, tuple) else f"[{items}{more}]"
    if isinstance(value, (str, bytes)):  # only the start: a message never copies a large value
        return clean(repr(value[:80]), 100) + (f" (of {len(value):,})" if len(value) > 80 else "")
    if value is None or isinstance(value, (bool, numbers.Number)):
        return clean(repr(value), 80)
    return f"a {type(value).__name__}"


def _array(value, key: str) -> np.ndarray:
    """An array given for ``key`` (``x_train``, ...), as numpy; one of objects is refused."""
    arr = np.asarray(value)
    if arr.dtype.hasobject:
        raise DataError(f"{_ARGUMENT}: {key} holds Python objects (dtype {arr.dtype}); give "
                        "numeric arrays (uint8 images, int labels).")
    return arr


def _check_size(arrays: dict[str, np.ndarray], limit: int, limit_name: str) -> None:
    """Refuses arrays of more than MAX_EXAMPLES examples, or more than ``limit`` bytes in all,
    before any is converted."""
    for key, arr in arrays.items():
        if arr.ndim and arr.shape[0] > MAX_EXAMPLES:
            raise DataError(f"{_ARGUMENT}: {key} holds {arr.shape[0]:,} examples, above the "
                            f"limit of {MAX_EXAMPLES:,} (subnet.data.MAX_EXAMPLES).")
    total = sum(arr.nbytes for arr in arrays.values())
    if total > limit:
        raise DataError(f"{_ARGUMENT}: the arrays hold {total:,} bytes, above the limit of "
                        f"{limit:,} ({limit_name}).")

"""The :class:`Dataset` value type: validated examples in one of the :data:`LAYOUTS`, labels, and
where they came from."""

from __future__ import annotations

import dataclasses
import hashlib
import numbers

import numpy as np

from subnet.errors import DataError, InputError, InputTypeError

__all__ = ["LAYOUTS", "MAX_CLASSES", "Dataset"]

MAX_CLASSES = 1 << 16
"""The most classes a data set may have (65,536; what a mask record can store)."""

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
        assert layout is not None, "__post_init__ sets the layout before checking the splits"
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
            # x.data is memoryview(x); numpy's stubs give ndarray __buffer__ only for Python 3.12+
            digest.update(x.data.cast("B"))
            digest.update(y.data.cast("B"))
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
        changes: dict[str, np.ndarray] = {}
        notes: list[str] = []
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
        return dataclasses.replace(
            self, source=f"{self.source} [{', '.join(notes)}]",
            x_test=changes.get("x_test", self.x_test), y_test=changes.get("y_test", self.y_test),
            x_train=changes.get("x_train", self.x_train),
            y_train=changes.get("y_train", self.y_train),
        )


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

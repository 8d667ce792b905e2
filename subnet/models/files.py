"""Checks of an untrusted model file before Keras deserializes anything.

:func:`subnet.models.load_model` reads a model file's format, sizes and architecture here first:
the file must be a regular file of one format; the architecture JSON, zip members (read with
:mod:`subnet.data.archive`) and HDF5 objects must fit the limits below; the architecture must
not nest too deeply nor declare too many layers or parameters (counted by building it without
allocating its weights). The limits are module attributes read at each check, and messages name
them as ``subnet.models.files.<NAME>``: assigning one there changes what is enforced.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from subnet.data.archive import expands_beyond, zip_member_count
from subnet.errors import ModelFileError, clean
from subnet.models.architecture import _walk_layer_configs
from subnet.runtime import keras

__all__ = [
    "EXPANSION_FLOOR_BYTES",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_EXPANSION",
    "MAX_H5_OBJECTS",
    "MAX_LAYERS",
    "MAX_PARAMETERS",
    "MAX_ZIP_MEMBERS",
]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


def _keras_internal(module: str, name: str):
    """A Keras internal that ``keras`` does not export (Keras is imported by then, through
    :mod:`subnet.runtime`); looked up when this module is imported, so that a Keras version without
    it fails here and not inside a check."""
    return getattr(importlib.import_module(module), name)


# Keras's scope for deserializing code (``safe_mode``), as its loaders use it.
_SafeModeScope = _keras_internal("keras.src.saving.serialization_lib", "SafeModeScope")
_ObjectSharingScope = _keras_internal("keras.src.saving.serialization_lib", "ObjectSharingScope")
# How Keras's .h5 loader builds a model from its (Keras 2 or 3) architecture.
_legacy_config_scope = _keras_internal("keras.src.legacy.saving.saving_options",
                                       "keras_option_scope")
_legacy_model_from_config = _keras_internal("keras.src.legacy.saving.saving_utils",
                                            "model_from_config")
# Where Keras keeps the variables whose initialization a StatelessScope deferred.
_global_state = importlib.import_module("keras.src.backend.common.global_state")


# --------------------------------------------------------------------------------------------
# Limits (read at each check; messages name them subnet.models.files.<NAME>)

#: Largest architecture JSON read from a model file (``config.json`` in a ``.keras`` archive, the
#: ``model_config`` attribute of an ``.h5`` file), in bytes. Real architectures are kilobytes to a
#: few megabytes; parsing this many bytes of JSON stays well under 1 GB of memory.
MAX_CONFIG_BYTES = 64 * 2**20
#: Deepest nesting of JSON lists and objects accepted in an architecture (a Keras model nested in
#: models ten times deep is about 60 levels).
MAX_CONFIG_DEPTH = 100
#: A zip member or HDF5 dataset that declares more than this many bytes must not expand more than
#: :data:`MAX_EXPANSION` times its stored size (Keras stores both uncompressed).
EXPANSION_FLOOR_BYTES = 64 * 2**20
#: Largest ratio of declared (uncompressed) to stored bytes above :data:`EXPANSION_FLOOR_BYTES`.
MAX_EXPANSION = 100
#: Most layers a model may declare (nested models and wrapped layers included); the largest
#: image classifiers have about a thousand.
MAX_LAYERS = 10_000
#: Most parameters (weights) a model may declare, counted from its architecture before Keras
#: allocates them; the weights an ``.h5`` file stores are bounded by 8 bytes per parameter.
MAX_PARAMETERS = 2**31
#: Most members a ``.keras`` archive may list (Keras writes three, plus assets).
MAX_ZIP_MEMBERS = 10_000
#: Most objects (groups, datasets, attributes) examined in an HDF5 file.
MAX_H5_OBJECTS = 100_000


def _model_format(path: Path) -> str:
    """Checks that ``path`` is a regular, non-empty file of one model format; returns the format
    ("keras" or "h5"). Nothing is opened that could block (a FIFO, a device)."""
    shown = clean(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ModelFileError(f"Model file not found: '{shown}'. Check the path.") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL character in the path
        reason = getattr(err, "strerror", None) or err
        raise ModelFileError(f"Cannot read model file '{shown}': {clean(reason)}. Check the "
                             "path and its permissions.") from err
    if stat.S_ISDIR(info.st_mode):
        raise ModelFileError(
            f"'{shown}' is a directory; subnet loads a single .keras or .h5 file. A TensorFlow "
            "SavedModel can be converted by loading it in TensorFlow and saving with "
            "model.save('model.keras').")
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(
            f"'{shown}' is not a regular file (it is a {_file_kind(info.st_mode)}); subnet loads "
            "a .keras or .h5 file from disk. Save the model to a file and pass its path.")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the check, do not wait on it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ModelFileError(f"'{shown}' is not a regular file; pass a .keras or .h5 "
                                     "file.")
            head = f.read(8)
    except OSError as err:
        raise ModelFileError(f"Cannot read model file '{shown}': {clean(err.strerror)}. Check "
                             "the path and its permissions.") from err
    if not head:
        raise ModelFileError(f"Model file '{shown}' is empty.")
    import h5py

    if head.startswith(_HDF5_MAGIC):
        fmt, other = "h5", zipfile.is_zipfile(path)
    elif head.startswith(_ZIP_MAGIC):
        fmt, other = "keras", h5py.is_hdf5(path)
    else:
        raise ModelFileError(
            f"'{shown}' is not a Keras model file: expected a .keras archive (zip) or an .h5 "
            f"(HDF5) file, but its first bytes are {head!r}.")
    if other:
        raise ModelFileError(
            f"'{shown}' is both a zip archive and an HDF5 file, so which model it holds depends "
            "on the program reading it; subnet refuses such files. Re-save the model with "
            "model.save('model.keras') from the code that made it.")
    return fmt


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")]
    return next((name for test, name in kinds if test(mode)), "special file")


# Errors the zip, HDF5 and JSON readers raise for broken or hostile files.
_READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
                UnicodeDecodeError, ValueError, KeyError, RuntimeError)


def _read_config(path: Path, fmt: str) -> dict:
    """Reads the architecture JSON of a model file without deserializing anything, after
    checking the sizes the file declares."""
    shown = clean(path)
    try:
        if fmt == "h5":
            import h5py

            with h5py.File(path, "r") as f:
                _check_h5(f, path)
                raw = _read_h5_config(f, path)
        else:
            _check_zip_members(path)
            with zipfile.ZipFile(path) as z:
                raw = _read_zip_config(z, path)
        if len(raw) > MAX_CONFIG_BYTES:
            raise _too_large(path, "an architecture", len(raw))
        config = json.loads(raw)
    except ModelFileError:
        raise
    except RecursionError as err:
        raise _too_deep(path) from err
    except _READ_ERRORS as err:
        raise ModelFileError(
            f"Could not read model file '{shown}': {clean(err, 300)}. The file may be truncated "
            "or corrupt.") from err
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(f"'{shown}' has no readable model architecture.")
    return config


def _too_large(path: Path, what: str, size: int) -> ModelFileError:
    return ModelFileError(
        f"Model file '{clean(path)}' declares {clean(what)} of {size:,} bytes, more than subnet "
        f"reads ({MAX_CONFIG_BYTES:,} bytes; subnet.models.files.MAX_CONFIG_BYTES). The file is "
        "corrupt or hostile; re-save the model with model.save() from the code that made it.")


def _too_deep(path: Path) -> ModelFileError:
    return ModelFileError(
        f"Model file '{clean(path)}' has an architecture nested more than {MAX_CONFIG_DEPTH} "
        "levels deep (subnet.models.files.MAX_CONFIG_DEPTH); no real Keras model is. The file is "
        "corrupt or hostile.")


def _bomb(path: Path, what: str, declared: int, stored: int) -> ModelFileError:
    return ModelFileError(
        f"Model file '{clean(path)}' is a decompression bomb: {clean(what)} declares "
        f"{declared:,} bytes but stores {stored:,} (more than {MAX_EXPANSION}x; "
        "subnet.models.files.MAX_EXPANSION). Refusing to read it.")


def _check_zip_members(path: Path) -> None:
    """Refuses an archive listing more than :data:`MAX_ZIP_MEMBERS` members, from its end
    record, before ``zipfile`` builds an object per member."""
    with open(path, "rb") as f:
        members = zip_member_count(f)
    if members > MAX_ZIP_MEMBERS:
        raise ModelFileError(
            f"Model file '{clean(path)}' lists {members:,} archive members, more than subnet "
            f"reads ({MAX_ZIP_MEMBERS:,}; subnet.models.files.MAX_ZIP_MEMBERS); a Keras model "
            "has a few. The file is corrupt or hostile.")


def _read_zip_config(z: zipfile.ZipFile, path: Path) -> str:
    members = z.infolist()
    names = {info.filename: info for info in members}
    if "config.json" not in names:
        raise ModelFileError(
            f"'{clean(path)}' is a zip archive but not a Keras model (no config.json).")
    if names["config.json"].file_size > MAX_CONFIG_BYTES:
        raise _too_large(path, "a config.json", names["config.json"].file_size)
    for info in members:
        if expands_beyond(info.file_size, info.compress_size, MAX_EXPANSION,
                          floor=EXPANSION_FLOOR_BYTES):
            raise _bomb(path, f"zip member '{info.filename}'", info.file_size, info.compress_size)
    info = names["config.json"]
    with z.open(info) as f:  # read no more than the limit, whatever the header says
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise _too_large(path, "a config.json", len(data))
    weights = names.get("model.weights.h5")
    if weights is not None:
        import h5py

        with z.open(weights) as fobj, h5py.File(fobj, "r") as f:
            _check_h5(f, path, where="model.weights.h5: ")
    return data.decode("utf-8")


def _read_h5_config(f, path: Path) -> str:
    if "model_config" not in f.attrs:
        raise ModelFileError(
            f"'{clean(path)}' is an HDF5 file without a model architecture (a weights-only "
            "file?). Save the whole model with model.save('model.h5') or '.keras'.")
    raw = f.attrs["model_config"]  # bounded: _check_h5 checked its size
    if isinstance(raw, np.ndarray) and raw.size == 1:
        raw = raw.reshape(-1)[0]
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if not isinstance(raw, str):
        raise ModelFileError(f"'{clean(path)}' has a model_config attribute that is not text "
                             f"(got {type(raw).__name__}).")
    return raw


def _check_h5(f, path: Path, where: str = "") -> None:
    """Checks what an HDF5 file declares before Keras reads it: no links to other files or
    objects, no external or virtual datasets, attributes within :data:`MAX_CONFIG_BYTES`, no
    dataset expanding more than :data:`MAX_EXPANSION` times, at most 8 bytes per
    :data:`MAX_PARAMETERS` in all, and at most :data:`MAX_H5_OBJECTS` objects."""
    import h5py

    count = 0

    def count_up(n: int) -> None:
        nonlocal count
        count += n
        if count > MAX_H5_OBJECTS:
            raise ModelFileError(
                f"Model file '{clean(path)}' holds more than {MAX_H5_OBJECTS:,} HDF5 objects "
                "(subnet.models.files.MAX_H5_OBJECTS); no real Keras model does.")

    total = 0
    seen = {f["/"].id}  # an object reached by two hard links (or a cycle) is visited once
    stack = [("/", f["/"])]
    while stack:
        name, obj = stack.pop()
        count_up(1 + len(obj.attrs))
        for attr in obj.attrs:
            # Attributes are stored uncompressed, so no attribute expands beyond the file's
            # size; variable-length strings (Keras's model_config) are checked once read.
            attr_id = h5py.h5a.open(obj.id, attr.encode("utf-8"))
            numel = int(np.prod(attr_id.shape, dtype=object)) if attr_id.shape else 1
            size = numel * attr_id.get_type().get_size()
            if size > MAX_CONFIG_BYTES or numel > 10**6:
                raise _too_large(path, f"an HDF5 attribute '{where}{name}@{attr}'", size)
        if isinstance(obj, h5py.Dataset):
            if obj.external or obj.is_virtual:
                raise ModelFileError(
                    f"Model file '{clean(path)}' has an HDF5 dataset '{clean(where + name)}' "
                    "stored in other files; subnet reads only self-contained model files.")
            declared = int(np.prod(obj.shape, dtype=object)) * obj.dtype.itemsize
            stored = obj.id.get_storage_size()
            if expands_beyond(declared, stored, MAX_EXPANSION, floor=EXPANSION_FLOOR_BYTES):
                raise _bomb(path, f"HDF5 dataset '{where}{name}'", declared, stored)
            total += declared
            if total > 8 * MAX_PARAMETERS:
                raise ModelFileError(
                    f"Model file '{clean(path)}' declares more than {8 * MAX_PARAMETERS:,} bytes "
                    "of weights (8 bytes per "
                    f"subnet.models.files.MAX_PARAMETERS={MAX_PARAMETERS:,}).")
        elif isinstance(obj, h5py.Group):
            for key in obj:
                link = obj.get(key, getlink=True)
                if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
                    raise ModelFileError(
                        f"Model file '{clean(path)}' has an HDF5 link '{clean(where + name)}/"
                        f"{clean(key)}' to another object or file; subnet reads only "
                        "self-contained model files.")
                count_up(1)
                child = obj[key]
                if child.id not in seen:
                    seen.add(child.id)
                    stack.append((f"{name.rstrip('/')}/{key}", child))


def _check_depth(config: dict, path: Path) -> None:
    """Refuses JSON nested deeper than :data:`MAX_CONFIG_DEPTH` and models with more than
    :data:`MAX_LAYERS` layers (iteratively)."""
    stack = [(config, 1)]
    layers = 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise _too_deep(path)
        if isinstance(node, dict) and isinstance(node.get("class_name"), str):
            layers += 1  # an upper bound: every Keras object counts
        if isinstance(node, dict):
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
    if layers > MAX_LAYERS and sum(1 for _ in _walk_layer_configs(config)) > MAX_LAYERS:
        raise ModelFileError(
            f"Model file '{clean(path)}' declares more than {MAX_LAYERS:,} layers "
            "(subnet.models.files.MAX_LAYERS); no image classifier has that many. The file is "
            "corrupt or hostile.")


def _check_parameter_count(config: dict, fmt: str, path: Path, *, trust: bool) -> None:
    """Builds the architecture without allocating its weights (a Keras ``StatelessScope`` that
    defers initialization) and refuses it if it has more than :data:`MAX_PARAMETERS`
    parameters. The weights created before a build fails count too; why a config cannot be
    built is left for the real load to report."""
    pending = _uninitialized_variables()
    n_pending = len(pending)
    try:
        with _SafeModeScope(not trust), keras.StatelessScope(initialize_variables=False):
            if fmt == "h5":
                with _legacy_config_scope(use_legacy_config=True):
                    _legacy_model_from_config(copy.deepcopy(config))
            else:
                with _ObjectSharingScope():
                    keras.saving.deserialize_keras_object(copy.deepcopy(config))
    except Exception:  # noqa: BLE001, S110 - the real load reports why the file cannot be built
        pass
    finally:
        created = pending[n_pending:]
        del pending[n_pending:]  # never initialize the dry run's variables
    sizes = [(int(np.prod(v.shape, dtype=object)), str(v.path)) for v in created]
    total = sum(size for size, _ in sizes)
    if total > MAX_PARAMETERS:
        size, where = max(sizes)
        raise ModelFileError(
            f"Model file '{clean(path)}' declares {total:,} parameters, more than subnet loads "
            f"({MAX_PARAMETERS:,}; subnet.models.files.MAX_PARAMETERS); the largest weight is "
            f"'{clean(where, 200)}' with {size:,}. The file is corrupt or hostile.")


def _uninitialized_variables() -> list:
    """Keras's list of variables whose initialization a ``StatelessScope`` deferred."""
    return _global_state.get_global_attribute("uninitialized_variables", [],
                                              set_to_default=True)


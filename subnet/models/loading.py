"""Safe loading of model files as Keras 3 models, and copies of a model that trusted code.

This is the one module that decides how model files become Keras 3 models (its public functions
are re-exported by :mod:`subnet.models`): the file is checked first (:mod:`subnet.models.files`,
which holds the limits), its architecture read as data (:mod:`subnet.models.architecture`), and
only then handed to Keras.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import tempfile
import threading
import warnings
import weakref
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from subnet.errors import InputTypeError, ModelFileError, UntrustedModelError, clean
from subnet.models.architecture import (
    _WRAPPED_LAYER_KEYS,
    _code_in_config,
    _rename_invalid,
    _rewrite_dropout_lambdas,
)
from subnet.models.files import (
    _check_depth,
    _check_parameter_count,
    _model_format,
    _read_config,
    _SafeModeScope,
)
from subnet.runtime import keras

__all__ = [
    "deserialization_scope",
    "load_model",
    "model_bytes",
    "model_from_bytes",
    "original_names",
]

# Keras's loader of .keras archives, whose get_temp_dir() makes the folders it extracts into.
# A private module, reached and patched by name: Any, not ModuleType (which declares no members).
_saving_lib: Any = importlib.import_module("keras.src.saving.saving_lib")
_KERAS_TEMP_LOCK = threading.RLock()

# {model: {internal name: original name}} for models whose names load_model changed.
_ORIGINAL_NAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def load_model(path: str | os.PathLike, *, trust: bool = False):
    """Loads a Keras classifier from a ``.keras`` or ``.h5`` file without running its code.

    Reads Keras 3 ``.keras`` archives, Keras 3 ``.h5`` files and ``.h5`` files written by Keras 2
    (tf.keras, tf_keras), the blog's functional models included. Before anything is deserialized,
    the file is checked: it must be a regular file of one format (a file that is both a zip and an
    HDF5 file is refused), the sizes it declares must fit the limits of
    :mod:`subnet.models.files` (:data:`~subnet.models.files.MAX_CONFIG_BYTES`,
    :data:`~subnet.models.files.MAX_EXPANSION`, :data:`~subnet.models.files.MAX_LAYERS` and
    :data:`~subnet.models.files.MAX_PARAMETERS`, counted by building the architecture without
    allocating its weights), and its architecture must not nest deeper than
    :data:`~subnet.models.files.MAX_CONFIG_DEPTH` nor hold code unless ``trust`` is True. A model
    used as a layer (a nested model) is flattened: its layers are called inline in an equivalent
    copy (:func:`subnet.flatten.flatten_nested`).

    Model and layer names that TensorFlow cannot use as name scopes (spaces, non-ASCII letters,
    ``<``, quotes, ``$``...) are renamed (``my layer`` becomes ``my_layer``, with a ``_2``-style
    suffix where that name is taken); :func:`original_names` maps the new names back.

    Args:
        path: The model file.
        trust: Allow code stored in the file: ``Lambda`` layers and Python functions serialized
            as activations, initializers or other settings. Only pass True for files whose source
            you trust. With True, a ``Lambda`` that applies dropout at a readable rate is rebuilt
            as an always-on Keras ``Dropout`` at that rate; other code is deserialized by Keras
            with its safe mode off (and runs once more when the parameters are counted), and
            :func:`deserialization_scope` lets copies of the model be made.

    Returns:
        The uncompiled ``keras.Model``.

    Raises:
        ModelFileError: If the file is missing, not a regular file, empty, truncated, not a
            Keras model, of ambiguous format, too large or too deeply nested for the limits
            above, or holds layers Keras cannot build.
        UntrustedModelError: If the file holds code and ``trust`` is False.
        InputTypeError: If ``path`` is not a str or path.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError("Invalid type for argument `path`: expected the model file's path "
                             f"(a str or os.PathLike). Received: {type(path).__name__}")
    path = Path(path)
    fmt = _model_format(path)
    config = _read_config(path, fmt)
    _check_depth(config, path)
    code = _code_in_config(config)
    if code and not trust:
        raise UntrustedModelError(
            f"Model file '{clean(path)}' contains code that Keras would run when loading it, in "
            f"{', '.join(code)}. Loading it could execute arbitrary code. If you trust the file's "
            "source, pass trust=True (command line: --trust-model).")
    changed = bool(code) and _rewrite_dropout_lambdas(config)
    renamed = _rename_invalid(config)
    changed = changed or bool(renamed)
    _check_parameter_count(config, fmt, path, trust=bool(code))

    with contextlib.ExitStack() as stack:
        if changed:
            load_path = stack.enter_context(_with_config(path, fmt, config))
        else:
            load_path = stack.enter_context(_with_suffix(path, fmt))
        model = _keras_load(load_path, display=path, safe_mode=not code)
    _check_classifier(model, path)
    from subnet.flatten import flatten_nested, has_nested

    if has_nested(model):  # a model used as a layer: its layers called inline, in a copy
        with deserialization_scope(model) if code else contextlib.nullcontext():
            model = flatten_nested(model)
    if renamed:
        _ORIGINAL_NAMES[model] = renamed
    return model


def model_bytes(model) -> bytes:
    """``model`` as the bytes of a ``.keras`` file (architecture and weights, no optimizer):
    how a model travels to the workers of an executor (:mod:`subnet.distributed`)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="subnet-model-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


_FROM_BYTES: dict = {}  # {SHA-256 of the bytes: model}: the last model a worker loaded


def model_from_bytes(data: bytes):
    """The model :func:`model_bytes` wrote, loaded once per process (the last one is kept).

    The bytes are subnet's own, written from a model object a subnet process runs, so code in
    them (a ``Lambda`` layer) runs nowhere it did not already run: they are loaded with
    ``trust=True``. Never pass bytes read from a file of unknown origin; use :func:`load_model`.
    """
    import hashlib
    import tempfile

    key = hashlib.sha256(data).hexdigest()
    if key not in _FROM_BYTES:
        with tempfile.TemporaryDirectory(prefix="subnet-model-") as folder:
            path = Path(folder) / "model.keras"
            path.write_bytes(data)
            model = load_model(path, trust=True)
        _FROM_BYTES.clear()
        _FROM_BYTES[key] = model
    return _FROM_BYTES[key]


def original_names(model) -> dict[str, str]:
    """The names :func:`load_model` changed, so that reports can show the file's own names.

    Args:
        model: A ``keras.Model``, as returned by :func:`load_model` or :func:`with_dropout`.

    Returns:
        {name in ``model``: name in the file} for the model and each layer that was renamed;
        empty if nothing was renamed. The original names are as the file has them: pass them
        through :func:`subnet.errors.clean` (or HTML escaping) before showing them.

    Raises:
        TypeError: If ``model`` is not a Keras model.
    """
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"Expected a keras.Model for argument `model`. "
                             f"Received: {type(model)!r}")
    return dict(_ORIGINAL_NAMES.get(model, {}))


@contextlib.contextmanager
def deserialization_scope(model) -> Iterator[None]:
    """Lets Keras rebuild ``model``'s own code while copies of it are made.

    Copying a model (``keras.models.clone_model``, ``layer.__class__.from_config``,
    ``keras.models.model_from_json``) rebuilds each ``Lambda`` layer, and each Python function
    used as an activation or initializer, from its serialized bytecode, which Keras refuses
    outside an unsafe scope. Inside this scope Keras allows it if, and only if, ``model`` holds
    such code; that code is the model's own, already loaded in this process (by
    :func:`load_model` with ``trust=True``, or built in Python), so nothing from a file runs that
    was not already trusted. Anything else deserialized inside the scope is treated the same way:
    keep the scope around the copy only. The scope is per thread.

    Args:
        model: The ``keras.Model`` about to be copied.

    Yields:
        Nothing; copy the model inside the ``with`` block.

    Raises:
        TypeError: If ``model`` is not a Keras model.
    """
    if not isinstance(model, keras.Model):
        raise InputTypeError(f"Expected a keras.Model for argument `model`. "
                             f"Received: {type(model)!r}")
    with _SafeModeScope(not _holds_code(model)):
        yield


def _holds_code(model) -> bool:
    if any(isinstance(layer, keras.layers.Lambda) for layer in _all_layers(model)):
        return True
    try:
        with warnings.catch_warnings():  # Keras warns on every Python lambda it serializes
            warnings.simplefilter("ignore")
            config = model.get_config()
    except Exception:  # subclassed models may not serialize: nothing to rebuild from a config
        return False
    return bool(_code_in_config({"config": config}))


def _all_layers(model) -> Iterator:
    """Every layer of ``model``, those of nested models and wrappers included (iteratively)."""
    stack = list(reversed(model.layers))
    seen: set[int] = set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        if isinstance(layer, keras.Model):
            stack.extend(reversed(layer.layers))
        for key in _WRAPPED_LAYER_KEYS:
            inner = getattr(layer, key, None)
            if isinstance(inner, keras.layers.Layer):
                stack.append(inner)


def _keras_load(path: Path, *, display: Path, safe_mode: bool):
    try:
        with _keras_temp_dirs():
            return keras.models.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as err:  # Keras raises many types for broken files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(
            f"Could not load model file '{clean(display)}': {clean(reason, 300)}. The file may "
            "be truncated or hold layers this Keras version cannot build; re-save it with "
            "model.save() from the code that made it.") from err


@contextlib.contextmanager
def _keras_temp_dirs() -> Iterator[None]:
    """Keras extracts the files of a ``.keras`` archive into a new folder of the temporary
    directory (``saving_lib.get_temp_dir``) and, when the archive is refused or malformed,
    leaves it there. Within this block those folders are made inside one folder of subnet's,
    which is removed on the way out, whatever happened."""
    folder = tempfile.mkdtemp(prefix="subnet-keras-load-")
    with _KERAS_TEMP_LOCK:  # the patched function is Keras's module-level one
        original = _saving_lib.get_temp_dir
        _saving_lib.get_temp_dir = lambda: tempfile.mkdtemp(dir=folder)
        try:
            yield
        finally:
            _saving_lib.get_temp_dir = original
            shutil.rmtree(folder, ignore_errors=True)


def _check_classifier(model, path: Path) -> None:
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"'{clean(path)}' does not hold a Keras model "
                             f"(got {type(model).__name__}).")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelFileError(
            f"Model in '{clean(path)}' has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; subnet analyses classifiers with one image input and one class output.")


@contextlib.contextmanager
def _with_suffix(path: Path, fmt: str) -> Iterator[Path]:
    """Yields ``path``, or a link to it whose suffix makes Keras read the format subnet checked
    (Keras chooses the format from the file name)."""
    suffixes = (".keras",) if fmt == "keras" else (".h5", ".hdf5")
    if path.name.endswith(suffixes):
        yield path
        return
    tmpdir = tempfile.mkdtemp(prefix="subnet-model-")
    try:
        link = Path(tmpdir) / ("model.keras" if fmt == "keras" else "model.h5")
        os.symlink(path.resolve(), link)
        yield link
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


@contextlib.contextmanager
def _with_config(path: Path, fmt: str, config: dict) -> Iterator[Path]:
    """Yields a temporary copy of the model file whose architecture is ``config``."""
    tmpdir = tempfile.mkdtemp(prefix="subnet-model-")
    try:
        copy_path = Path(tmpdir) / ("model.h5" if fmt == "h5" else "model.keras")
        raw = json.dumps(config)
        if fmt == "h5":
            import h5py

            shutil.copyfile(path, copy_path)
            with h5py.File(copy_path, "r+") as f:
                f.attrs["model_config"] = raw
        else:
            with zipfile.ZipFile(path) as src, zipfile.ZipFile(copy_path, "w") as dst:
                for item in src.infolist():
                    if item.filename == "config.json":
                        dst.writestr(item, raw.encode())
                        continue
                    with src.open(item) as fin, dst.open(item, "w", force_zip64=True) as fout:
                        shutil.copyfileobj(fin, fout, 2**20)  # streamed: weights may be large
        yield copy_path
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

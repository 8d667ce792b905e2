"""Random dropout masks and the record of what each mask predicts.

A **mask** is one keep/drop bit per *unit* over all *sites* at once; units are ordered site by
site, in the order of the site table. Each site has a keep probability q.

:func:`sample_masks` draws masks with a counter-based generator, so mask ``i`` is a pure function
of ``(seed, i)``: a record can be sharded over processes or machines, resumed after a crash and
merged, and every shard draws exactly the masks an uninterrupted run would.

:class:`MaskRecord` is the record of masks × examples → (predicted class, probability of the true
class), stored in a folder::

    meta.json                   the caller's metadata (seed, sites, fingerprints, versions, ...)
                                plus ``format`` and ``num_classes``
    labels.npy                  int64 (n_examples,), the true class of each example
    example_indices.npy         int64 (n_examples,), each example's index in its data set
    chunk_0000000000_0000001000.npz
                                masks [0, 1000): ``masks`` (packbits along units, uint8),
                                ``predicted`` (uint8, or uint16 above 256 classes) and
                                ``true_prob`` (float16), rows = masks, columns = examples
    .subnet-output, .subnet-output.lock, .subnet-output.files
                                the folder's marker (``subnet.record`` made it), lock and list
                                of the files subnet wrote (:mod:`subnet._outdir`), in a folder
                                :func:`subnet.record_masks` or :meth:`MaskRecord.merge` wrote

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so an
interrupted run loses at most the chunk in flight. Chunk files are byte-deterministic: the same
arrays always give the same bytes, so shards and resumed records can be compared file by file.

Typical use (the engine computes the outcomes; this module only samples and stores)::

    writer = MaskRecord.resume(folder, meta, labels, example_indices, num_classes=10)
    for r in writer.missing(meta["n_masks"], chunk_size=1000):
        masks = sample_masks(writer.keep, writer.seed, r, antithetic=writer.antithetic)
        predicted, true_prob = evaluate(masks)          # (len(r), n_examples) each
        writer.write_chunk(r.start, masks, predicted, true_prob)
    record = writer.close()
    record.accuracy_summary()

Counts are bounded by module constants, checked before any work or allocation: :data:`MAX_MASKS`
masks, :data:`MAX_EXAMPLES` examples, :data:`MAX_UNITS` units and :data:`MAX_CHUNK_BYTES` per
chunk file. A record folder is untrusted: the sizes its ``meta.json``, ``labels.npy`` and chunk
files declare are checked against these limits and against the files' real sizes before anything
is read, and only regular files are opened.

This module is pure numpy: it never imports Keras or TensorFlow.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import filecmp
import functools
import io
import itertools
import json
import math
import numbers
import os
import re
import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from subnet import _outdir
from subnet._io import atomic_path, atomic_write_bytes, atomic_write_text
from subnet.errors import InputError, InputTypeError, RecordError

__all__ = [
    "MAX_CHUNK_BYTES",
    "MAX_EXAMPLES",
    "MAX_MASKS",
    "MAX_UNITS",
    "Chunk",
    "MaskRecord",
    "MissingRanges",
    "RecordError",
    "RecordWriter",
    "sample_masks",
]

# ------------------------------------------------------------------------------------ sampling

_PHILOX_WORDS = 4          # numpy's Philox4x64 gives 4 uint64 words per counter value
_BLOCK_WORDS = 1 << 22     # raw words drawn per call (32 MiB), bounds sample_masks' memory
_SHIFT = np.uint64(12)     # 64 - 52 bits
_FLIP = np.uint64((1 << 52) - 1)
_SEED_LIMIT = 1 << 64


def _check_seed(seed: Any, what: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InputTypeError(f"`{what}` must be a non-negative int. Received: {what}={seed!r} "
                        f"of type {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < _SEED_LIMIT:
        raise InputError(f"`{what}` must be a non-negative int below 2**64. "
                         f"Received: {what}={seed}")
    return seed


def _check_keep(keep: Any) -> np.ndarray:
    try:
        arr = np.asarray(keep, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputTypeError(f"`keep` must be a 1-D array of floats in (0, 1]. "
                        f"Received: keep of type {type(keep).__name__}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"`keep` must be a non-empty 1-D array (one keep probability per unit). "
                         f"Received: keep with shape {arr.shape}")
    bad = ~(np.isfinite(arr) & (arr > 0.0) & (arr <= 1.0))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise InputError(f"`keep` must hold keep probabilities in (0, 1]. Received: keep[{j}]="
                         f"{float(arr[j])!r} ({int(bad.sum())} of {arr.size} values out of range)")
    return arr


def _check_indices(indices: Any) -> np.ndarray:
    if isinstance(indices, range):  # len() of a huge range overflows; compute it instead
        count = max(0, -(-(indices.stop - indices.start) // indices.step))
    else:
        count = len(indices) if isinstance(indices, np.ndarray | Sequence) else 0
    if count > MAX_MASKS:
        raise InputError(f"`indices` must name at most {MAX_MASKS:,} masks per call "
                         f"(subnet.masks.MAX_MASKS). Received: {count:,} indices")
    if isinstance(indices, range):
        indices = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64)
    arr = np.asarray(indices)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise InputTypeError(f"`indices` must be a range or a 1-D array of ints. "
                        f"Received: indices with dtype {arr.dtype}")
    if arr.ndim != 1:
        raise InputError(f"`indices` must be a range or a 1-D array of ints. "
                         f"Received: indices with shape {arr.shape}")
    if arr.size and arr.min() < 0:
        raise InputError(f"`indices` must be non-negative mask indices. "
                         f"Received: indices with a negative index, {int(arr.min())}")
    if arr.size and np.issubdtype(arr.dtype, np.unsignedinteger) and arr.max() > 2 ** 62:
        raise InputError(f"`indices` must be below 2**62. Received: {int(arr.max())}")
    return arr.astype(np.int64, copy=False)


def _grid(seed: int, rows: np.ndarray, n_units: int) -> np.ndarray:
    """Uniform grid indices for the given sorted, unique stream rows: uint64 (len(rows), n_units).

    Row r is read from Philox4x64 with key ``seed``, starting at counter
    ``r * ceil(n_units / 4)``: a pure function of (seed, r, n_units). Each uint64 word w gives
    the grid index ``g = w >> 12`` in [0, 2**52), which stands for the uniform
    ``u = (g + 0.5) * 2**-52``: a grid in (0, 1), symmetric about 1/2, that holds neither 0, 1
    nor 1/2. So ``1 - u`` is on the same grid (index ``g ^ (2**52 - 1)``), ``u < 1`` always holds
    (q = 1 keeps a unit in every mask) and at q = 1/2 a mask and its antithetic partner are exact
    complements. ``u < q`` is decided exactly in integers, as ``g < _thresholds(q)``.
    """
    blocks = -(-n_units // _PHILOX_WORDS)
    width = blocks * _PHILOX_WORDS
    out = np.empty((rows.size, n_units), dtype=np.uint64)
    if rows.size == 0:
        return out
    # Runs of consecutive rows are consecutive in the Philox stream: one draw per run.
    starts = np.concatenate(([0], np.flatnonzero(np.diff(rows) != 1) + 1, [rows.size]))
    per_call = max(1, _BLOCK_WORDS // width)
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        for lo in range(int(a), int(b), per_call):
            hi = min(int(b), lo + per_call)
            gen = np.random.Philox(key=seed, counter=int(rows[lo]) * blocks)
            raw = gen.random_raw((hi - lo) * width).reshape(hi - lo, width)
            np.right_shift(raw[:, :n_units], _SHIFT, out=out[lo:hi])
    return out


def _thresholds(keep: np.ndarray) -> np.ndarray:
    """Integer thresholds t (uint64) with ``(g + 0.5) * 2**-52 < q  <=>  g < t`` for ints g."""
    # q * 2**52 - 0.5 is exact in float64 for q in (0, 1]; g < y <=> g < ceil(y) for ints g.
    return np.ceil(keep * 2.0 ** 52 - 0.5).astype(np.uint64)


def sample_masks(keep: Any, seed: int, indices: range | Sequence[int] | np.ndarray,
                 antithetic: bool = False) -> np.ndarray:
    """Draws masks ``indices`` of the mask sequence defined by ``keep`` and ``seed``.

    Mask ``i`` is a pure function of ``(seed, i)`` (given ``keep``): it never depends on which
    other indices are requested, so any subset, in any order, with repeats, gives the same rows as
    the full sequence. Unit ``j`` of mask ``i`` is kept when ``u[j] < keep[j]``, with ``u`` a
    vector of uniforms in (0, 1) from a counter-based generator (numpy's ``Philox`` bit
    generator with key ``seed``; only its raw, version-stable output is used).

    With ``antithetic=True`` masks come in pairs ``(2j, 2j + 1)`` that share the uniforms ``u`` of
    pair ``j``: mask ``2j`` keeps ``u < keep`` and mask ``2j + 1`` keeps ``1 - u < keep``. Each
    mask on its own still keeps unit ``j`` with probability ``keep[j]``; at ``keep = 0.5`` the two
    masks of a pair are exact complements. Antithetic and plain sequences with the same seed are
    different sequences (except for even indices, where mask ``2j`` equals plain mask ``j``).

    Args:
        keep: Keep probability of each unit, shape (n_units,), floats in (0, 1]. A probability of
            exactly 1 keeps the unit in every mask.
        seed: Non-negative int below 2**64.
        indices: Mask indices: a ``range`` or a 1-D int array of non-negative ints (any order,
            repeats allowed, may be empty).
        antithetic: Whether to draw antithetic pairs.

    Returns:
        Bool array, shape (len(indices), n_units): True where the unit is kept.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``keep`` is not 1-D or has values outside (0, 1], if ``seed`` is negative,
            or if an index is negative.
    """
    keep = _check_keep(keep)
    seed = _check_seed(seed)
    if not isinstance(antithetic, bool | np.bool_):
        raise InputTypeError(f"`antithetic` must be a bool. Received: antithetic={antithetic!r}")
    idx = _check_indices(indices)
    n_units = keep.size
    threshold = _thresholds(keep)
    out = np.empty((idx.size, n_units), dtype=bool)
    if idx.size == 0:
        return out
    rows = idx >> 1 if antithetic else idx
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    uniq, first = np.unique(sorted_rows, return_index=True)
    first = np.append(first, sorted_rows.size)
    per_block = max(1, _BLOCK_WORDS // n_units)
    for a in range(0, uniq.size, per_block):
        b = min(uniq.size, a + per_block)
        g = _grid(seed, uniq[a:b], n_units)
        s0, s1 = int(first[a]), int(first[b])
        target = order[s0:s1]
        if s1 - s0 != b - a:  # repeated rows (repeats, or both masks of an antithetic pair)
            g = g[np.searchsorted(uniq[a:b], sorted_rows[s0:s1])]
        if antithetic:
            odd = (idx[target] & 1).astype(bool)
            g[odd] ^= _FLIP
        out[target] = g < threshold
    return out


# ------------------------------------------------------------------------------------- storage

FORMAT = "subnet.MaskRecord/1"
_META = "meta.json"
_LABELS = "labels.npy"
_EXAMPLES = "example_indices.npy"
_CHUNK_RE = re.compile(r"^chunk_(\d{10,})_(\d{10,})\.npz$")
# Temporary files left by subnet._io.atomic_path: ".<name>.<random>.tmp<suffix>".
_TEMP_RE = re.compile(r"^\.(chunk_\d+_\d+\.npz|meta\.json|labels\.npy|example_indices\.npy)\..*"
                      r"\.tmp(\.npz|\.json|\.npy)?$")
MAX_MASKS = 10_000_000
"""The most masks a record may plan or hold (``n_masks``, chunk ends; the blog's analyses use
thousands). Checked before any work, so that a mistyped count is a one-line error."""

MAX_EXAMPLES = 10_000_000
"""The most examples a record may hold (the length of ``labels`` and ``example_indices``)."""

MAX_UNITS = 10_000_000
"""The most units (dropout bits per mask) over all sites of a record."""

MAX_CHUNK_BYTES = 512 << 20
"""The most bytes one chunk file's arrays may hold (512 MiB; 1,000 masks of 10,000 examples take
30 MB). ``write_chunk`` refuses a larger chunk; loading refuses a chunk file that declares more."""

_MAX_DEFLATE_RATIO = 1032  # deflate expands at most this many times
_MAX_META_BYTES = 64 << 20  # meta.json
# What reading a damaged zip can raise (RuntimeError: encrypted; NotImplementedError: an unknown
# compression method).
_READ_ERRORS = (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, RuntimeError,
                NotImplementedError, zlib.error)
_RESERVED = ("format", "num_classes")
_ARRAYS = ("masks", "predicted", "true_prob")
_MAX_CLASSES = 1 << 16
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _chunk_name(start: int, stop: int) -> str:
    return f"chunk_{start:010d}_{stop:010d}.npz"


def _predicted_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if num_classes <= 256 else np.dtype(np.uint16)


def _chunk_bytes(k: int, n_units: int, n_examples: int, pred_dtype: np.dtype) -> int:
    """Bytes of the arrays of a chunk of ``k`` masks (packed masks, predicted, true_prob)."""
    return k * (-(-n_units // 8) + n_examples * (pred_dtype.itemsize + 2))


def _check_chunk_bytes(k: int, n_units: int, n_examples: int, pred_dtype: np.dtype,
                       name: str) -> None:
    size = _chunk_bytes(k, n_units, n_examples, pred_dtype)
    if size > MAX_CHUNK_BYTES:
        most = max(1, MAX_CHUNK_BYTES // _chunk_bytes(1, n_units, n_examples, pred_dtype))
        raise InputError(f"A chunk of {k:,} masks of {n_units:,} units and {n_examples:,} "
                         f"examples takes {size:,} bytes, above the limit of "
                         f"{MAX_CHUNK_BYTES:,} (subnet.masks.MAX_CHUNK_BYTES). Received: "
                         f"{name}={k}; use at most {most:,} masks per chunk.")


def _short(value: Any, n: int = 12) -> str:
    s = str(value)
    return s if len(s) <= n else s[:n] + "…"


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_meta(meta: Any) -> dict:
    """Validates the caller's metadata; returns a JSON-normalised deep copy."""
    if not isinstance(meta, Mapping):
        raise InputTypeError(f"`meta` must be a dict. Received: meta of type {type(meta).__name__}")
    def numpy_scalar(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        raise InputTypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    try:
        text = json.dumps(dict(meta), allow_nan=False, default=numpy_scalar)
    except (TypeError, ValueError) as err:
        raise InputTypeError(f"`meta` must be JSON-serialisable (str keys; str, int, float, bool, "
                        f"None, list and dict values; no NaN). Received an error: {err}") from None
    meta = json.loads(text)
    required: dict[str, tuple[type, ...]] = {
        "seed": (int,), "antithetic": (bool,), "n_masks": (int,), "sites": (list,),
        "model_fingerprint": (str,), "data_fingerprint": (str,), "versions": (dict,),
    }
    missing = [k for k in required if k not in meta]
    if missing:
        raise InputError(f"`meta` must have the keys {sorted(required)}. "
                         f"Received: meta without {missing}")
    for key, types in required.items():
        value = meta[key]
        ok = isinstance(value, types) and (types == (bool,) or not isinstance(value, bool))
        if not ok:
            raise InputTypeError(f"`meta['{key}']` must be of type {types[0].__name__}. "
                            f"Received: meta['{key}']={value!r}")
    _check_seed(meta["seed"], "meta['seed']")
    _check_count(meta["n_masks"], "meta['n_masks']", MAX_MASKS, "MAX_MASKS",
                 "the planned number of masks", low=0)
    sites = meta["sites"]
    if not sites:
        raise InputError("`meta['sites']` must be a non-empty list of sites. Received: []")
    names = set()
    for j, site in enumerate(sites):
        where = f"meta['sites'][{j}]"
        if not isinstance(site, dict):
            raise InputTypeError(f"`{where}` must be a dict with `name`, `units` and `keep`. "
                            f"Received: {site!r}")
        for key in ("name", "units", "keep"):
            if key not in site:
                raise InputError(f"`{where}` must have the key '{key}'. Received: {site!r}")
        if not isinstance(site["name"], str) or not site["name"]:
            raise InputTypeError(f"`{where}['name']` must be a non-empty str. "
                            f"Received: {site['name']!r}")
        if site["name"] in names:
            raise InputError(f"`meta['sites']` must have unique names. "
                             f"Received: '{site['name']}' twice")
        names.add(site["name"])
        if not _is_int(site["units"]):
            raise InputError(f"`{where}['units']` must be a positive int. "
                             f"Received: {site['units']!r}")
        _check_count(site["units"], f"{where}['units']", MAX_UNITS, "MAX_UNITS",
                     "the number of units of the site")
        q = site["keep"]
        if not (isinstance(q, numbers.Real) and not isinstance(q, bool)
                and math.isfinite(q) and 0.0 < q <= 1.0):
            raise InputError(f"`{where}['keep']` must be a keep probability in (0, 1]. "
                             f"Received: {q!r}")
        site["keep"] = float(q)
    total = sum(site["units"] for site in sites)
    if total > MAX_UNITS:
        raise InputError(f"`meta['sites']` must have at most {MAX_UNITS:,} units in all "
                         f"(subnet.masks.MAX_UNITS). Received: {total:,} units over "
                         f"{len(sites)} sites")
    return meta


def _check_count(value: Any, name: str, limit: int, limit_name: str, what: str,
                 low: int = 1) -> int:
    """Checks an int count ``low <= value <= limit``; returns it as an int."""
    if not _is_int(value):
        raise InputTypeError(f"`{name}` must be an int ({what}). Received: {name}={value!r} of "
                             f"type {type(value).__name__}")
    if not low <= value <= limit:
        raise InputError(f"`{name}` must be between {low} and {limit:,} ({what}; "
                         f"subnet.masks.{limit_name}). Received: {name}={value}")
    return int(value)


def _expand_keep(sites: Sequence[Mapping]) -> np.ndarray:
    return np.concatenate([np.full(int(s["units"]), float(s["keep"])) for s in sites])


def _check_num_classes(num_classes: Any) -> int:
    if not _is_int(num_classes):
        raise InputTypeError(f"`num_classes` must be an int. Received: num_classes={num_classes!r}")
    if not 2 <= num_classes <= _MAX_CLASSES:
        raise InputError(f"`num_classes` must be between 2 and {_MAX_CLASSES}. "
                         f"Received: num_classes={num_classes}")
    return int(num_classes)


def _check_int_vector(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InputTypeError(f"`{name}` must be a 1-D int array. Received: {name} with dtype "
                        f"{arr.dtype}")
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"`{name}` must be a non-empty 1-D int array. Received: {name} with "
                         f"shape {arr.shape}")
    if arr.min() < 0:
        raise InputError(f"`{name}` must be non-negative. Received: {name} with min "
                         f"{int(arr.min())}")
    return arr.astype(np.int64)


def _check_examples(labels: Any, example_indices: Any,
                    num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    labels = _check_int_vector(labels, "labels")
    example_indices = _check_int_vector(example_indices, "example_indices")
    if labels.size > MAX_EXAMPLES:
        raise InputError(f"`labels` must have at most {MAX_EXAMPLES:,} examples "
                         f"(subnet.masks.MAX_EXAMPLES). Received: {labels.size:,}")
    if example_indices.shape != labels.shape:
        raise InputError(f"`example_indices` must have one entry per label, shape "
                         f"{labels.shape}. Received: shape {example_indices.shape}")
    if num_classes is not None and labels.max() >= num_classes:
        raise InputError(f"`labels` must be classes in [0, num_classes={num_classes}). "
                         f"Received: a label {int(labels.max())}")
    return labels, example_indices


def _identity_difference(a_meta: Mapping, a_labels: np.ndarray, a_examples: np.ndarray,
                         b_meta: Mapping, b_labels: np.ndarray,
                         b_examples: np.ndarray) -> tuple[str, str] | None:
    """Returns (field, what differs) for the first identity field in which a and b differ."""
    a_mf, b_mf = a_meta["model_fingerprint"], b_meta["model_fingerprint"]
    if a_mf != b_mf:
        return ("model_fingerprint", f"other model weights (model_fingerprint {_short(a_mf)} vs "
                                     f"{_short(b_mf)})")
    a_df, b_df = a_meta["data_fingerprint"], b_meta["data_fingerprint"]
    if a_df != b_df:
        return ("data_fingerprint", f"other data (data_fingerprint {_short(a_df)} vs "
                                    f"{_short(b_df)})")
    if a_meta["seed"] != b_meta["seed"]:
        return ("seed", f"another seed (seed {a_meta['seed']} vs {b_meta['seed']})")
    if a_meta["antithetic"] != b_meta["antithetic"]:
        return ("antithetic", f"another sampling scheme (antithetic {a_meta['antithetic']} vs "
                              f"{b_meta['antithetic']})")
    a_sites = [(s["name"], int(s["units"]), float(s["keep"])) for s in a_meta["sites"]]
    b_sites = [(s["name"], int(s["units"]), float(s["keep"])) for s in b_meta["sites"]]
    if a_sites != b_sites:
        if len(a_sites) != len(b_sites):
            detail = f"{len(a_sites)} vs {len(b_sites)} sites"
        else:
            j = next(j for j, (x, y) in enumerate(zip(a_sites, b_sites, strict=True)) if x != y)
            detail = f"site {j}: (name, units, keep) {a_sites[j]} vs {b_sites[j]}"
        return ("sites", f"other sites ({detail})")
    # How the probabilities were computed: another rescaling is another experiment; another
    # backend, or oneDNN's kernels switched, rounds differently, so the record would no longer
    # be the one an uninterrupted run makes, bit for bit. (Records without these keys are
    # older than the check.)
    a_rs, b_rs = a_meta.get("rescale"), b_meta.get("rescale")
    if a_rs is not None and b_rs is not None and a_rs != b_rs:
        return ("rescale", f"kept units scaled otherwise (rescale {a_rs} vs {b_rs})")
    a_be, b_be = a_meta.get("backend"), b_meta.get("backend")
    if a_be is not None and b_be is not None and a_be != b_be:
        return ("backend", f"another backend ({a_be!r} vs {b_be!r})")
    a_dnn = _onednn_on(a_meta.get("versions", {}).get("onednn"))
    b_dnn = _onednn_on(b_meta.get("versions", {}).get("onednn"))
    if a_dnn is not None and b_dnn is not None and a_dnn != b_dnn:
        return ("versions.onednn", f"TensorFlow's oneDNN kernels {'on' if a_dnn else 'off'} (here "
                            f"{'on' if b_dnn else 'off'})")
    # TensorFlow's CPU matrix products sum in an order that depends on its intra-op thread count.
    a_th, b_th = a_meta.get("intra_op_threads"), b_meta.get("intra_op_threads")
    if a_th is not None and b_th is not None and a_th != b_th:
        return ("intra_op_threads", f"{a_th} TensorFlow intra-op threads (here {b_th})")
    a_nc, b_nc = a_meta.get("num_classes"), b_meta.get("num_classes")
    if a_nc is not None and b_nc is not None and a_nc != b_nc:
        return ("num_classes", f"another number of classes (num_classes {a_nc} vs {b_nc})")
    for field, x, y in (("labels", a_labels, b_labels),
                        ("example_indices", a_examples, b_examples)):
        if x.shape != y.shape:
            return (field, f"other examples ({field} of {x.size} vs {y.size} examples)")
        diff = np.flatnonzero(x != y)
        if diff.size:
            return (field, f"other examples ({field} differ at {diff.size} of {x.size} "
                           f"positions, first at position {int(diff[0])})")
    return None


def _how_to_continue(field: str, made: Mapping) -> str:
    """For a record that differs only in how its probabilities were computed, how to compute
    them its way (the start of a sentence ending in "use another folder"); else ""."""
    if field == "rescale":
        return f"pass rescale={made['rescale']} to continue it, or "
    if field == "backend":
        return f"pass backend={made['backend']!r} (--backend {made['backend']}) to continue it, or "
    if field == "versions.onednn":
        on = _onednn_on(made["versions"].get("onednn"))
        return f"set TF_ENABLE_ONEDNN_OPTS={int(bool(on))} to continue it, or "
    if field == "intra_op_threads":
        n = made["intra_op_threads"]
        return (f"set TF_NUM_INTRAOP_THREADS={n} (with Ray: RayExecutor(threads_per_task={n})) "
                "to continue it, or ")
    return ""


def _onednn_on(value) -> bool | None:
    """Whether ``TF_ENABLE_ONEDNN_OPTS`` (as :func:`subnet.versions` stores it) turned
    oneDNN's kernels on; None if unknown."""
    text = str(value).strip().lower() if value is not None else ""
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    return None


def _write_npz(dest: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes an uncompressed .npz atomically, with fixed zip metadata (byte-deterministic)."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, arr in arrays.items():
                    info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                    info.compress_type = zipfile.ZIP_STORED
                    info.create_system = 3
                    info.external_attr = 0o644 << 16
                    with zf.open(info, "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.ascontiguousarray(arr),
                                                  allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _corrupt(path: Path, why: str) -> RecordError:
    return RecordError(f"Chunk file {path} is corrupt or incomplete ({why}). Delete it and resume "
                       "the record (resume=True; command line: --resume) to recompute those "
                       "masks.")


def _inspect_chunk(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Reads a chunk's zip directory and array headers (not its data): name → (shape, dtype)."""
    try:
        archive_size = _regular_size(path)
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            expected = {f"{n}.npy" for n in _ARRAYS}
            if set(infos) != expected:
                raise _corrupt(path, f"holds {sorted(infos)}, expected {sorted(expected)}")
            out = {}
            for name in _ARRAYS:
                info = infos[f"{name}.npy"]
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        header = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        header = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise _corrupt(path, f"{name} has .npy format version {version}")
                    shape, fortran, dtype = header
                    header_len = member.tell() if member.seekable() else None
                if info.compress_size > archive_size or \
                        info.file_size > max(info.compress_size, 1) * _MAX_DEFLATE_RATIO:
                    raise _corrupt(path, f"{name} declares {info.file_size:,} bytes from "
                                         f"{info.compress_size:,} in a file of {archive_size:,}")
                if fortran:
                    raise _corrupt(path, f"{name} is Fortran-ordered")
                if header_len is not None:
                    size = header_len + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                    if size != info.file_size:
                        raise _corrupt(path, f"{name} holds {info.file_size} bytes, its header "
                                             f"says {size}")
                out[name] = (tuple(shape), dtype)
            return out
    except RecordError:
        raise
    except _READ_ERRORS as err:
        raise _corrupt(path, f"{type(err).__name__}: {err}") from None


def _regular_size(path: Path) -> int:
    """The size of ``path``; OSError if it is not a regular file (a FIFO would block a read)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path} is not a regular file")
    return st.st_size


def _check_chunk_header(path: Path, k: int, n_units: int, n_examples: int,
                        pred_dtype: np.dtype) -> None:
    """Checks a chunk file's arrays have the shapes and dtypes a record with these sizes needs."""
    size = _chunk_bytes(k, n_units, n_examples, pred_dtype)
    if size > MAX_CHUNK_BYTES:
        raise _corrupt(path, f"its {k:,} masks of {n_units:,} units and {n_examples:,} examples "
                             f"would take {size:,} bytes, above the limit of {MAX_CHUNK_BYTES:,} "
                             f"(subnet.masks.MAX_CHUNK_BYTES)")
    expected = {"masks": ((k, -(-n_units // 8)), np.dtype(np.uint8)),
                "predicted": ((k, n_examples), pred_dtype),
                "true_prob": ((k, n_examples), np.dtype(np.float16))}
    found = _inspect_chunk(path)
    for name, (shape, dtype) in expected.items():
        if found[name] != (shape, dtype):
            raise _corrupt(path, f"{name} has shape {found[name][0]} and dtype "
                                 f"{found[name][1]}, expected {shape} and {dtype}")


class _ChunkFile(NamedTuple):
    start: int
    stop: int
    path: Path


def _scan_chunks(folder: Path) -> list[_ChunkFile]:
    """Chunk files of a folder, sorted by start; refuses bad names and overlaps."""
    chunks = []
    for entry in os.scandir(folder):
        m = _CHUNK_RE.match(entry.name)
        if not m:
            continue
        start, stop = int(m.group(1)), int(m.group(2))
        if stop > MAX_MASKS:
            raise RecordError(f"Chunk file {entry.path} names masks [{start}, {stop}), beyond "
                              f"the limit of {MAX_MASKS:,} masks (subnet.masks.MAX_MASKS). It is "
                              f"not subnet's; delete it and resume the record.")
        if stop <= start:
            raise RecordError(f"Chunk file {entry.path} names an empty mask range "
                              f"[{start}, {stop}). Delete it and resume the record.")
        chunks.append(_ChunkFile(start, stop, Path(entry.path)))
    chunks.sort()
    for prev, cur in zip(chunks, chunks[1:], strict=False):
        if cur.start < prev.stop:
            raise RecordError(f"Chunk files {prev.path.name} and {cur.path.name} in {folder} "
                              f"overlap (masks [{cur.start}, {min(prev.stop, cur.stop)})). "
                              f"Delete one of them.")
    return chunks


def _read_meta(folder: Path) -> dict:
    path = folder / _META
    try:
        size = _regular_size(path)
        if size > _MAX_META_BYTES:
            raise RecordError(f"{path} holds {size:,} bytes, more than a record's metadata may "
                              f"({_MAX_META_BYTES:,}). It is not subnet's; start the record again "
                              f"in another folder.")
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{folder} is not a mask record: it has no {_META}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise RecordError(f"Could not read {path}: {err}. The record's metadata is damaged; "
                          f"start the record again in another folder.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise RecordError(f"{path} is not a mask record's metadata: expected format "
                          f"'{FORMAT}', found {found!r}.")
    try:
        _check_meta(meta)
        _check_num_classes(meta.get("num_classes"))
    except (TypeError, ValueError) as err:
        raise RecordError(f"{path} holds invalid metadata: {err}") from None
    return meta


def _read_vector(path: Path, n: int | None) -> np.ndarray:
    """Reads an int64 vector of ``n`` entries (at most MAX_EXAMPLES), checking its header first."""
    want = f"an int64 vector of {n if n else 'n_examples'} entries"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RecordError(f"{path} is not a regular file; the record is damaged. Start it "
                              f"again in another folder.")
        with os.fdopen(fd, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            declared = f.tell() + math.prod(shape) * dtype.itemsize
            size = os.fstat(f.fileno()).st_size
            if dtype != np.int64 or len(shape) != 1 or (n is not None and shape[0] != n) \
                    or shape[0] > MAX_EXAMPLES:
                raise RecordError(f"{path} must hold {want} (at most {MAX_EXAMPLES:,}, "
                                  f"subnet.masks.MAX_EXAMPLES). Found dtype {dtype}, shape "
                                  f"{shape}.")
            if declared != size:
                raise ValueError(f"its header declares {declared:,} bytes, the file has "
                                 f"{size:,}")
            f.seek(0)
            arr = np.lib.format.read_array(f, allow_pickle=False)
    except FileNotFoundError:
        raise RecordError(f"The mask record in {path.parent} has no {path.name}; it is "
                          f"incomplete. Start it again in another folder.") from None
    except (OSError, ValueError, EOFError) as err:
        if isinstance(err, RecordError):
            raise
        raise RecordError(f"Could not read {path}: {err}.") from None
    return arr


def _remove_temp_files(folder: Path) -> None:
    for entry in os.scandir(folder):
        if _TEMP_RE.match(entry.name) and entry.is_file():
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass


def _is_empty_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    with os.scandir(path) as entries:
        return next(entries, None) is None


def _holds_chunk_files(path: Path) -> bool:
    with os.scandir(path) as entries:
        return any(_CHUNK_RE.match(e.name) for e in entries)


# ------------------------------------------------------------------------- the record folder

RECORD_TOOL = "subnet.record"
"""The owner a record folder's marker names (:mod:`subnet._outdir`)."""


def holds_record(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a record's files (``meta.json`` or chunk files)."""
    path = Path(path)
    return path.is_dir() and ((path / _META).exists() or _holds_chunk_files(path))


def _is_unmarked_record(path: Path) -> bool:
    """Whether an unmarked folder is a record subnet made before record folders were marked:
    it holds a readable record ``meta.json`` and nothing but a record's files (and the
    temporary files of their atomic writes). Such a folder is adopted as subnet's."""
    with os.scandir(path) as entries:
        names = [e.name for e in entries]
    if _META not in names or not all(n in (_META, _LABELS, _EXAMPLES) or _CHUNK_RE.match(n)
                                     or _TEMP_RE.match(n) for n in names):
        return False
    try:
        _read_meta(path)
    except RecordError:
        return False
    return True


def check_record_folder(path: str | os.PathLike, *, resume: bool = False,
                        name: str = "`out`") -> None:
    """Refuses a folder a record may not be written into, writing nothing.

    A record goes into a new or empty folder, or a record folder subnet made: one marked by
    ``subnet.record``, or one that holds only a record's files with a valid ``meta.json`` (made
    before record folders were marked; adopted). Anything else is someone else's.

    Args:
        path: The record folder.
        resume: Word the refusal for a record to continue ("no record to resume at ...").
        name: What the message calls the folder (``--out``, ``out``).

    Raises:
        InputError: If ``path`` is a file, another tool's folder, or a non-empty folder that is
            not a record subnet made.
    """
    _outdir.check(path, RECORD_TOOL, name=name, adopt=_is_unmarked_record, resuming=resume)


def claim_record_folder(path: str | os.PathLike, *, resume: bool = False, name: str = "`out`"):
    """Claims a record folder for writing (:func:`check_record_folder` says which): created or
    adopted, marked ``subnet.record``, and locked, so that a second writer is refused at once
    ("... is in use by another record").

    Returns:
        A context manager yielding the :class:`subnet._outdir.Claim`.
    """
    return _outdir.claim(path, RECORD_TOOL, None, name=name, adopt=_is_unmarked_record,
                         resuming=resume)


class Chunk(NamedTuple):
    """One chunk of a record: masks [start, stop), read from one chunk file.

    Attributes:
        start: First mask index.
        stop: One past the last mask index.
        masks: Bool (stop - start, n_units), True where a unit is kept.
        predicted: Predicted class, (stop - start, n_examples), uint8 (uint16 above 256 classes).
        true_prob: Probability of the true class, (stop - start, n_examples), float32 (stored as
            float16).
    """

    start: int
    stop: int
    masks: np.ndarray
    predicted: np.ndarray
    true_prob: np.ndarray


class MissingRanges(Sequence):
    """The mask ranges still to do, as :meth:`RecordWriter.missing` returns them: gaps cut at
    multiples of ``chunk_size``, computed on demand (memory proportional to the gaps, not to the
    number of ranges).

    Attributes:
        n_masks: Number of masks in all the ranges.
        chunk_size: The chunk size the ranges are cut at.
    """

    def __init__(self, gaps: Sequence[tuple[int, int]], chunk_size: int):
        self._gaps = [(int(a), int(b)) for a, b in gaps if a < b]
        self.chunk_size = int(chunk_size)
        counts = [(b - 1) // chunk_size - a // chunk_size + 1 for a, b in self._gaps]
        self._ends = list(itertools.accumulate(counts))
        self.n_masks = sum(b - a for a, b in self._gaps)

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not _is_int(i):
            raise InputTypeError(f"MissingRanges indices must be ints. Received: {i!r}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"MissingRanges index out of range: {i} (of {n})")
        g = bisect.bisect_right(self._ends, i)
        a, b = self._gaps[g]
        k = i - (self._ends[g - 1] if g else 0)  # the k-th piece of gap g
        cs = self.chunk_size
        lo = a if k == 0 else (a // cs + k) * cs
        return range(lo, min(b, (a // cs + k + 1) * cs))

    def __iter__(self) -> Iterator[range]:
        cs = self.chunk_size
        for a, b in self._gaps:
            while a < b:
                cut = min(b, (a // cs + 1) * cs)
                yield range(a, cut)
                a = cut

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == len(self) and all(x == y for x, y in zip(self, other, strict=True))

    def __repr__(self) -> str:
        head = ", ".join(repr(r) for r in itertools.islice(self, 4))
        more = f", ... ({len(self)} ranges)" if len(self) > 4 else ""
        return f"MissingRanges([{head}{more}], n_masks={self.n_masks})"


class RecordWriter:
    """Writes chunks into a mask record folder. Get one from :meth:`MaskRecord.create` or
    :meth:`MaskRecord.resume`; do not construct it directly.

    One writer per folder at a time; different shards of one record go into different folders and
    are joined with :meth:`MaskRecord.merge`.

    Attributes:
        path: The record folder.
        meta: The record's metadata (a copy).
        seed: Sampling seed.
        antithetic: Whether masks are drawn in antithetic pairs.
        keep: Keep probability per unit, float64 (n_units,).
        n_units: Number of units over all sites.
        n_examples: Number of examples.
        num_classes: Number of classes.
    """

    def __init__(self, path: Path, meta: dict, labels: np.ndarray, example_indices: np.ndarray):
        self.path = path
        self._meta = meta
        self.labels = labels
        self.example_indices = example_indices
        self.seed = int(meta["seed"])
        self.antithetic = bool(meta["antithetic"])
        self.keep = _expand_keep(meta["sites"])
        self.keep.flags.writeable = False
        self.n_units = int(self.keep.size)
        self.n_examples = int(labels.size)
        self.num_classes = int(meta["num_classes"])
        self._pred_dtype = _predicted_dtype(self.num_classes)
        chunks = _scan_chunks(path)
        for c in chunks:
            _check_chunk_header(c.path, c.stop - c.start, self.n_units, self.n_examples,
                                self._pred_dtype)
        self._covered = [(c.start, c.stop) for c in chunks]

    @property
    def meta(self) -> dict:
        return copy.deepcopy(self._meta)

    def __repr__(self) -> str:
        done = sum(b - a for a, b in self._covered)
        return (f"RecordWriter('{self.path}', masks present={done}, planned="
                f"{self._meta['n_masks']}, units={self.n_units}, examples={self.n_examples})")

    def missing(self, n_masks: int, chunk_size: int) -> MissingRanges:
        """The mask ranges in [0, n_masks) that no chunk covers yet.

        Ranges are cut at multiples of ``chunk_size``, so that a resumed run writes the same chunk
        boundaries (and the same chunk files) as an uninterrupted one. They are computed lazily:
        the answer holds one entry per gap between chunks already written, not one per range.

        Args:
            n_masks: Number of masks wanted, an int in [0, MAX_MASKS].
            chunk_size: Largest chunk, an int in [1, MAX_MASKS], whose chunk file holds at most
                :data:`MAX_CHUNK_BYTES` for this record's units and examples.

        Returns:
            A :class:`MissingRanges`: a sequence (``len``, indexing, iteration, ``==`` with a
            list) of sorted, disjoint ranges, each of at most ``chunk_size`` masks and within one
            aligned block ``[k * chunk_size, (k + 1) * chunk_size)``; its ``n_masks`` is the
            number of masks they hold.

        Raises:
            TypeError: If a count is not an int.
            ValueError: If ``n_masks`` or ``chunk_size`` is out of range, or a chunk of
                ``chunk_size`` masks would exceed :data:`MAX_CHUNK_BYTES`.
        """
        n_masks = _check_count(n_masks, "n_masks", MAX_MASKS, "MAX_MASKS",
                               "the number of masks wanted", low=0)
        chunk_size = _check_count(chunk_size, "chunk_size", MAX_MASKS, "MAX_MASKS",
                                  "the most masks per chunk")
        _check_chunk_bytes(min(chunk_size, max(n_masks, 1)), self.n_units, self.n_examples,
                           self._pred_dtype, "chunk_size")
        # Gaps of [0, n_masks) between covered intervals; cut at aligned boundaries lazily.
        gaps, pos = [], 0
        for a, b in self._covered:
            if a >= n_masks:
                break
            if a > pos:
                gaps.append((pos, a))
            pos = max(pos, b)
        if pos < n_masks:
            gaps.append((pos, n_masks))
        return MissingRanges(gaps, chunk_size)

    def write_chunk(self, start: int, masks: np.ndarray, predicted: np.ndarray,
                    true_prob: np.ndarray) -> Path:
        """Validates and atomically writes the outcomes of masks [start, start + k).

        Args:
            start: Index of the first mask, a non-negative int.
            masks: Bool (k, n_units), True where a unit is kept; k >= 1.
            predicted: Int (k, n_examples), predicted classes in [0, num_classes).
            true_prob: Float (k, n_examples), probability of the true class in [0, 1]; stored as
                float16.

        Returns:
            The path of the chunk file written.

        Raises:
            TypeError: If an array has the wrong dtype.
            ValueError: If a shape or value is out of range, or the masks overlap masks already in
                the record.
        """
        if not _is_int(start) or start < 0:
            raise InputError(f"`start` must be a non-negative int. Received: start={start!r}")
        start = int(start)
        if start >= MAX_MASKS:
            raise InputError(f"`start` must be below {MAX_MASKS:,} (subnet.masks.MAX_MASKS). "
                             f"Received: start={start}")
        masks = np.asarray(masks)
        predicted = np.asarray(predicted)
        true_prob = np.asarray(true_prob)
        if masks.dtype != np.bool_:
            raise InputTypeError(f"`masks` must be a bool array. Received: masks with dtype "
                            f"{masks.dtype}")
        if masks.ndim != 2 or masks.shape[0] < 1 or masks.shape[1] != self.n_units:
            raise InputError(f"`masks` must have shape (k, n_units={self.n_units}) with k >= 1. "
                             f"Received: masks with shape {masks.shape}")
        k = masks.shape[0]
        if start + k > MAX_MASKS:
            raise InputError(f"`masks` must end at most at mask {MAX_MASKS:,} "
                             f"(subnet.masks.MAX_MASKS). Received: {k} masks from start={start}")
        _check_chunk_bytes(k, self.n_units, self.n_examples, self._pred_dtype, "len(masks)")
        if predicted.dtype == np.bool_ or not np.issubdtype(predicted.dtype, np.integer):
            raise InputTypeError(f"`predicted` must be an int array. "
                                 f"Received: predicted with dtype "
                            f"{predicted.dtype}")
        if predicted.shape != (k, self.n_examples):
            raise InputError(f"`predicted` must have shape (k={k}, n_examples={self.n_examples})."
                             f" Received: predicted with shape {predicted.shape}")
        if predicted.size and (predicted.min() < 0 or predicted.max() >= self.num_classes):
            bad = predicted.min() if predicted.min() < 0 else predicted.max()
            raise InputError(f"`predicted` must hold classes in [0, num_classes="
                             f"{self.num_classes}). Received: a value {int(bad)}")
        if not np.issubdtype(true_prob.dtype, np.floating):
            raise InputTypeError(f"`true_prob` must be a float array. "
                                 f"Received: true_prob with dtype "
                            f"{true_prob.dtype}")
        if true_prob.shape != (k, self.n_examples):
            raise InputError(f"`true_prob` must have shape (k={k}, n_examples={self.n_examples})."
                             f" Received: true_prob with shape {true_prob.shape}")
        bad = ~((true_prob >= 0.0) & (true_prob <= 1.0))  # also catches NaN
        if bad.any():
            j = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
            raise InputError(f"`true_prob` must hold probabilities in [0, 1]. Received: "
                             f"true_prob[{j[0]}, {j[1]}]={float(true_prob[j])!r}")
        stop = start + k
        for a, b in self._covered:
            if a < stop and start < b:
                raise InputError(f"Masks [{start}, {stop}) overlap masks [{a}, {b}) already in "
                                 f"the record at {self.path} ({_chunk_name(a, b)}). Use "
                                 f"`missing()` to find the masks still to do.")
        dest = self.path / _chunk_name(start, stop)
        _write_npz(dest, {"masks": np.packbits(masks, axis=1),
                          "predicted": predicted.astype(self._pred_dtype),
                          "true_prob": true_prob.astype(np.float16)})
        self._covered.append((start, stop))
        self._covered.sort()
        return dest

    def annotate(self, key: str, value: Any) -> None:
        """Adds or replaces one descriptive entry of ``meta.json`` (atomically).

        Args:
            key: The entry's name; not one that defines the record's identity (seed,
                antithetic, sites, fingerprints) or one of the record's own.
            value: A JSON-serialisable value.

        Raises:
            ValueError: If ``key`` is protected or ``value`` is not JSON-serialisable.
        """
        protected = {"seed", "antithetic", "sites", "model_fingerprint", "data_fingerprint",
                     *_RESERVED}
        if not isinstance(key, str) or key in protected:
            raise InputError(f"Cannot annotate the record with key {key!r}: it is not a string "
                             f"or it defines the record ({sorted(protected)}).")
        meta = dict(self._meta)
        meta[key] = value
        meta = _check_meta(meta)
        atomic_write_text(self.path / _META, json.dumps(meta, indent=2, sort_keys=True))
        self._meta = meta

    def close(self) -> MaskRecord:
        """Finishes writing and returns the record, loaded and validated from disk."""
        return MaskRecord.load(self.path)


class MaskRecord:
    """The record of masks × examples → (predicted class, probability of the true class).

    Loading reads only the metadata, the labels and each chunk file's headers. The big arrays
    (:attr:`masks`, :attr:`predicted`, :attr:`true_prob`, :attr:`correct`) are read on first use
    and cached (read-only); :meth:`iter_chunks`, :meth:`mask_accuracy` and
    :meth:`example_accuracy` stream over chunks with memory bounded by one chunk.

    Masks present need not be contiguous (a shard holds any set of ranges); arrays are in
    mask-index order and :attr:`mask_ids` gives each row's mask index.

    Attributes:
        path: The record folder.
        seed: Sampling seed.
        antithetic: Whether masks were drawn in antithetic pairs.
        num_classes: Number of classes.
        n_units: Number of units over all sites.
        n_examples: Number of examples.
        n_masks: Number of masks present.
        labels: True classes, int64 (n_examples,).
        example_indices: Index of each example in its data set, int64 (n_examples,).
    """

    def __init__(self, path: str | os.PathLike):
        """Loads and validates a record folder (same as :meth:`load`).

        Raises:
            RecordError: If the folder is missing, is not a record, or a file is damaged.
        """
        path = Path(path)
        if not path.is_dir():
            raise RecordError(f"Mask record folder not found: {path}")
        self.path = path
        self._meta = _read_meta(path)
        self.labels = _read_vector(path / _LABELS, None)
        self.example_indices = _read_vector(path / _EXAMPLES, self.labels.size)
        self.labels.flags.writeable = False
        self.example_indices.flags.writeable = False
        self.num_classes = int(self._meta["num_classes"])
        if self.labels.min() < 0 or self.labels.max() >= self.num_classes:
            raise RecordError(f"{path / _LABELS} holds labels outside [0, {self.num_classes}).")
        self.seed = int(self._meta["seed"])
        self.antithetic = bool(self._meta["antithetic"])
        keep = _expand_keep(self._meta["sites"])
        keep.flags.writeable = False
        self._keep = keep
        self.n_units = int(keep.size)
        self.n_examples = int(self.labels.size)
        self._pred_dtype = _predicted_dtype(self.num_classes)
        self._chunks = _scan_chunks(path)
        for c in self._chunks:
            _check_chunk_header(c.path, c.stop - c.start, self.n_units, self.n_examples,
                                self._pred_dtype)
        self.n_masks = sum(c.stop - c.start for c in self._chunks)
        self._mask_accuracy: np.ndarray | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, path: str | os.PathLike) -> MaskRecord:
        """Loads and validates a record folder.

        Checks that ``meta.json`` parses and has the record format, that the labels and example
        indices are present, and that every chunk file's zip directory and array headers are
        intact, with shapes and dtypes that fit the record, and that chunks do not overlap.
        Chunk data is read (and its CRC checked) only when used.

        Args:
            path: The record folder.

        Returns:
            The record.

        Raises:
            RecordError: (a ValueError) If the folder is missing, is not a record, a file is
                damaged (the message names it and says to delete it and resume), or chunks
                overlap.
        """
        return cls(path)

    @staticmethod
    def create(path: str | os.PathLike, meta: Mapping[str, Any], labels: Any,
               example_indices: Any, num_classes: int, exist_ok: bool = False) -> RecordWriter:
        """Starts a new record in folder ``path`` and returns its writer.

        Args:
            path: The record folder; created with its parents.
            meta: JSON-serialisable dict with at least ``seed`` (int >= 0), ``antithetic``
                (bool), ``n_masks`` (planned number of masks, int >= 0), ``sites`` (non-empty list
                of dicts with ``name`` (str, unique), ``units`` (int >= 1) and ``keep`` (float in
                (0, 1])), ``model_fingerprint`` (str), ``data_fingerprint`` (str), ``versions``
                (dict), plus anything else. The keys ``format`` and ``num_classes`` are the
                record's own; ``meta`` may hold ``num_classes`` only if it equals the argument.
            labels: True class of each example, 1-D ints in [0, num_classes), shape (n_examples,).
            example_indices: Index of each example in its data set, 1-D non-negative ints, shape
                (n_examples,).
            num_classes: Number of classes, 2 to 65536.
            exist_ok: If True, ``path`` may be an existing folder holding unrelated files. A folder
                that already holds a record (``meta.json`` or chunk files) is always refused.

        Returns:
            A :class:`RecordWriter`.

        Raises:
            TypeError, ValueError: If an argument is invalid.
            RecordError: If ``path`` is a non-empty folder (and ``exist_ok`` is False), holds a
                record, or is a file.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RecordError(f"Record path {path} is a file, not a folder; choose another path.")
        if path.is_dir() and not _is_empty_dir(path):
            has_record = (path / _META).exists() or _holds_chunk_files(path)
            if has_record or not exist_ok:
                what = "a mask record" if has_record else "files"
                raise RecordError(f"Folder {path} already holds {what}: use resume=True (command "
                                  "line: --resume) to continue it, or choose another folder.")
        return MaskRecord._start(path, meta, labels, example_indices, num_classes)

    @staticmethod
    def resume(path: str | os.PathLike, meta: Mapping[str, Any], labels: Any,
               example_indices: Any, num_classes: int | None = None) -> RecordWriter:
        """Opens a record to continue it, or starts it when ``path`` holds no record yet.

        The stored identity must equal the given one: ``model_fingerprint``,
        ``data_fingerprint``, ``seed``, ``antithetic``, ``sites`` (name, units, keep of each),
        ``num_classes`` (when given), ``labels`` and ``example_indices``. Other metadata keys keep
        their stored values, except ``n_masks``, which is set to the given plan (a record can be
        extended). Temporary files left by an interrupted write are removed.

        Args:
            path: The record folder.
            meta: As for :meth:`create`.
            labels: As for :meth:`create`.
            example_indices: As for :meth:`create`.
            num_classes: As for :meth:`create`; may be None when the record exists.

        Returns:
            A :class:`RecordWriter`; its :meth:`~RecordWriter.missing` tells what is left to do.

        Raises:
            TypeError, ValueError: If an argument is invalid.
            RecordError: If the stored identity differs (the message names the field), or the
                stored record is damaged.
        """
        path = Path(path)
        if not (path / _META).is_file():
            if path.is_dir() and _holds_chunk_files(path):
                raise RecordError(f"Folder {path} holds chunk files but no {_META}: it is not a "
                                  f"complete mask record. Choose another folder.")
            if num_classes is None:
                raise InputError(f"`num_classes` is needed to start a new record at {path}. "
                                 f"Received: num_classes=None")
            return MaskRecord._start(path, meta, labels, example_indices, num_classes)
        new = _check_meta(meta)
        if num_classes is not None:
            num_classes = _check_num_classes(num_classes)
        labels, example_indices = _check_examples(labels, example_indices, num_classes)
        stored = MaskRecord.load(path)
        new_cmp = dict(new) if num_classes is None else dict(new, num_classes=num_classes)
        diff = _identity_difference(stored._meta, stored.labels, stored.example_indices,
                                    new_cmp, labels, example_indices)
        if diff is not None:
            field, detail = diff
            raise RecordError(f"Cannot resume the record at {path} with this `{field}`: the "
                              f"record was made from {detail}; "
                              f"{_how_to_continue(field, stored._meta)}use another folder.")
        meta_out = stored._meta
        if meta_out["n_masks"] != new["n_masks"]:
            meta_out["n_masks"] = new["n_masks"]
            atomic_write_text(path / _META, json.dumps(meta_out, indent=2, sort_keys=True))
        _remove_temp_files(path)
        return RecordWriter(path, meta_out, stored.labels, stored.example_indices)

    @staticmethod
    def _start(path: Path, meta: Any, labels: Any, example_indices: Any,
               num_classes: Any) -> RecordWriter:
        meta = _check_meta(meta)
        num_classes = _check_num_classes(num_classes)
        for key in _RESERVED:
            if key in meta and key != "num_classes":
                raise InputError(f"`meta` must not have the key '{key}' (the record's own). "
                                 f"Received: meta['{key}']={meta[key]!r}")
        if "num_classes" in meta and meta["num_classes"] != num_classes:
            raise InputError(f"`meta['num_classes']` must equal `num_classes`. Received: "
                             f"{meta['num_classes']!r} and {num_classes}")
        labels, example_indices = _check_examples(labels, example_indices, num_classes)
        meta["format"] = FORMAT
        meta["num_classes"] = num_classes
        path.mkdir(parents=True, exist_ok=True)
        _remove_temp_files(path)
        atomic_write_bytes(path / _LABELS, _npy_bytes(labels))
        atomic_write_bytes(path / _EXAMPLES, _npy_bytes(example_indices))
        # meta.json last: its presence means the record folder is fully initialised.
        atomic_write_text(path / _META, json.dumps(meta, indent=2, sort_keys=True))
        return RecordWriter(path, meta, labels, example_indices)

    @staticmethod
    def merge(records_or_paths: Iterable[MaskRecord | str | os.PathLike],
              out: str | os.PathLike) -> MaskRecord:
        """Joins shards of one record into a new record folder ``out``.

        Shards must have the same identity (model and data fingerprints, seed, antithetic, sites,
        num_classes, labels, example indices) and disjoint mask ranges; a chunk present in
        several shards is allowed only when its files hold identical arrays, and is kept once.
        The merged metadata is the first shard's, with ``n_masks`` the largest planned total.
        ``out`` is claimed as a record folder (:func:`claim_record_folder`: marked, and locked
        while the merge writes, so that a second writer is refused) and the chunk files are
        copied into it, ``meta.json`` last: a folder with ``meta.json`` is complete. A merge that
        fails removes what it wrote; one that was killed leaves a folder without ``meta.json``,
        which the next merge into it replaces.

        Args:
            records_or_paths: Records or record folders, at least one.
            out: The new record folder: new, empty, or a record folder subnet made that holds no
                record (``meta.json``).

        Returns:
            The merged record.

        Raises:
            RecordError: If shards differ in identity (the message names the field), overlap
                with different contents, or ``out`` holds a record.
            InputError: If ``out`` is not a folder a record may be written into, or in use by
                another record.
        """
        records = [r if isinstance(r, MaskRecord) else MaskRecord.load(r)
                   for r in records_or_paths]
        if not records:
            raise InputError("`records_or_paths` must name at least one record. Received: none")
        out = Path(out)
        check_record_folder(out)
        if (out / _META).exists():
            raise RecordError(f"Merge output {out} already holds a record; choose a new folder.")
        first = records[0]
        for other in records[1:]:
            diff = _identity_difference(first._meta, first.labels, first.example_indices,
                                        other._meta, other.labels, other.example_indices)
            if diff is not None:
                field, detail = diff
                raise RecordError(f"Cannot merge {first.path} and {other.path}: they differ in "
                                  f"`{field}`: {detail}.")
        chunks = sorted((c for r in records for c in r._chunks),
                        key=lambda c: (c.start, c.stop))
        kept: list[_ChunkFile] = []
        for c in chunks:
            if kept and c.start < kept[-1].stop:
                prev = kept[-1]
                if (c.start, c.stop) == (prev.start, prev.stop) and _same_chunk(prev.path, c.path):
                    continue
                raise RecordError(f"Cannot merge: chunk files {prev.path} and {c.path} overlap "
                                  f"(masks [{max(prev.start, c.start)}, "
                                  f"{min(prev.stop, c.stop)})) and differ.")
            kept.append(c)
        meta = copy.deepcopy(first._meta)
        meta["n_masks"] = max(r._meta["n_masks"] for r in records)
        with claim_record_folder(out) as held:
            if (out / _META).exists():  # written since the check above
                raise RecordError(f"Merge output {out} already holds a record; choose a new "
                                  f"folder.")
            held.discard()  # what a killed merge left: subnet's files, never anyone else's
            written: list[Path] = []
            try:
                for name, arr in ((_LABELS, first.labels), (_EXAMPLES, first.example_indices)):
                    written.append(out / name)
                    atomic_write_bytes(out / name, _npy_bytes(arr))
                for c in kept:
                    written.append(out / c.path.name)
                    with atomic_path(out / c.path.name) as tmp:
                        shutil.copyfile(c.path, tmp)
                written.append(out / _META)
                atomic_write_text(out / _META, json.dumps(meta, indent=2, sort_keys=True))
            except BaseException:
                for path in written:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                raise
        return MaskRecord.load(out)

    # ------------------------------------------------------------------ metadata

    @property
    def meta(self) -> dict:
        """The record's metadata (a copy): the caller's keys plus ``format`` and ``num_classes``."""
        return copy.deepcopy(self._meta)

    @property
    def sites(self) -> list[dict]:
        """The site table as stored: dicts with at least ``name``, ``units``, ``keep`` (a copy)."""
        return copy.deepcopy(self._meta["sites"])

    @property
    def keep(self) -> np.ndarray:
        """Keep probability of each unit, float64 (n_units,), expanded from the sites."""
        return self._keep

    @property
    def chunk_ranges(self) -> list[range]:
        """The mask range of each chunk, in order."""
        return [range(c.start, c.stop) for c in self._chunks]

    @functools.cached_property
    def mask_ids(self) -> np.ndarray:
        """Indices of the masks present, sorted, int64 (n_masks,)."""
        ids = [np.arange(c.start, c.stop, dtype=np.int64) for c in self._chunks]
        out = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        out.flags.writeable = False
        return out

    @property
    def is_complete(self) -> bool:
        """Whether every mask in range(meta['n_masks']) is present."""
        n, pos = int(self._meta["n_masks"]), 0
        for c in self._chunks:
            if c.start > pos or pos >= n:
                break
            pos = c.stop
        return pos >= n

    def __repr__(self) -> str:
        state = "complete" if self.is_complete else "incomplete"
        return (f"MaskRecord('{self.path}', masks={self.n_masks}/{self._meta['n_masks']} "
                f"{state}, units={self.n_units}, examples={self.n_examples}, "
                f"classes={self.num_classes}, seed={self.seed}, antithetic={self.antithetic})")

    # ------------------------------------------------------------------ data

    def _read_chunk(self, c: _ChunkFile) -> Chunk:
        try:
            with np.load(c.path, allow_pickle=False) as npz:
                packed, predicted, true_prob = (npz[name] for name in _ARRAYS)
        except _READ_ERRORS as err:
            raise _corrupt(c.path, f"{type(err).__name__}: {err}") from None
        k = c.stop - c.start
        if (packed.shape != (k, -(-self.n_units // 8)) or predicted.shape != (k, self.n_examples)
                or true_prob.shape != (k, self.n_examples) or predicted.dtype != self._pred_dtype
                or true_prob.dtype != np.float16):
            raise _corrupt(c.path, "arrays do not fit the record")
        masks = np.unpackbits(packed, axis=1, count=self.n_units).view(bool)
        return Chunk(c.start, c.stop, masks, predicted, true_prob.astype(np.float32))

    def _iter_predicted(self) -> Iterator[np.ndarray]:
        """Each chunk's ``predicted`` only (what accuracy needs), in mask-index order."""
        for c in self._chunks:
            try:
                with np.load(c.path, allow_pickle=False) as npz:
                    predicted = npz["predicted"]
            except _READ_ERRORS as err:
                raise _corrupt(c.path, f"{type(err).__name__}: {err}") from None
            if predicted.shape != (c.stop - c.start, self.n_examples):
                raise _corrupt(c.path, "arrays do not fit the record")
            yield predicted

    def iter_chunks(self) -> Iterator[Chunk]:
        """Yields the record chunk by chunk, in mask-index order.

        Yields:
            :class:`Chunk` tuples ``(start, stop, masks, predicted, true_prob)``: masks bool
            (k, n_units); predicted uint8/uint16 (k, n_examples); true_prob float32
            (k, n_examples).

        Raises:
            RecordError: If a chunk file is damaged (named in the message).
        """
        for c in self._chunks:
            yield self._read_chunk(c)

    def _concat(self, field: int, width: int, dtype: Any) -> np.ndarray:
        out = np.empty((self.n_masks, width), dtype=dtype)
        row = 0
        for chunk in self.iter_chunks():
            k = chunk.stop - chunk.start
            out[row:row + k] = chunk[field]
            row += k
        out.flags.writeable = False
        return out

    @functools.cached_property
    def masks(self) -> np.ndarray:
        """Masks present, bool (n_masks, n_units), True where a unit is kept; read-only."""
        return self._concat(2, self.n_units, bool)

    @functools.cached_property
    def predicted(self) -> np.ndarray:
        """Predicted classes, (n_masks, n_examples), in the stored dtype: uint8 (uint16 above
        256 classes); read-only. Cast before arithmetic that could overflow."""
        return self._concat(3, self.n_examples, self._pred_dtype)

    @functools.cached_property
    def true_prob(self) -> np.ndarray:
        """Probability of the true class, float32 (n_masks, n_examples) from the stored float16;
        read-only."""
        return self._concat(4, self.n_examples, np.float32)

    @functools.cached_property
    def correct(self) -> np.ndarray:
        """Whether each mask predicts each example's label, bool (n_masks, n_examples)."""
        out = self.predicted == self.labels
        out.flags.writeable = False
        return out

    # ------------------------------------------------------------------ derived views

    def mask_accuracy(self) -> np.ndarray:
        """Accuracy of each mask over the examples, streamed over chunks.

        Returns:
            Float64 (n_masks,), fractions in [0, 1], in the order of :attr:`mask_ids`.
        """
        if self._mask_accuracy is None:
            parts = [(p == self.labels).mean(axis=1) for p in self._iter_predicted()]
            acc = np.concatenate(parts) if parts else np.zeros(0)
            acc.flags.writeable = False
            self._mask_accuracy = acc
        return self._mask_accuracy

    def example_accuracy(self) -> np.ndarray:
        """Fraction of masks that predict each example correctly, streamed over chunks.

        Returns:
            Float64 (n_examples,), fractions in [0, 1].

        Raises:
            ValueError: If the record has no masks.
        """
        if self.n_masks == 0:
            raise InputError(f"The record at {self.path} has no masks yet; example accuracy is "
                             f"undefined.")
        hits = np.zeros(self.n_examples, dtype=np.int64)
        for predicted in self._iter_predicted():
            hits += (predicted == self.labels).sum(axis=0)
        return hits / self.n_masks

    def accuracy_summary(self) -> dict[str, float]:
        """Summary of the distribution of per-mask accuracy.

        Returns:
            Dict with ``n_masks`` and, as fractions in [0, 1]: ``mean``, ``std`` (population,
            ddof=0), ``min``, ``p1``, ``p5``, ``p25``, ``p50``, ``p75``, ``p95``, ``p99``
            (percentiles, linear interpolation) and ``max``.

        Raises:
            ValueError: If the record has no masks.
        """
        acc = self.mask_accuracy()
        if acc.size == 0:
            raise InputError(f"The record at {self.path} has no masks yet; there is no accuracy "
                             f"to summarise.")
        pcts = (1, 5, 25, 50, 75, 95, 99)
        q = np.percentile(acc, pcts)
        out: dict[str, float] = {"n_masks": int(acc.size), "mean": float(acc.mean()),
                                 "std": float(acc.std()), "min": float(acc.min())}
        out.update({f"p{p}": float(v) for p, v in zip(pcts, q, strict=True)})
        out["max"] = float(acc.max())
        return out


def _same_chunk(a: Path, b: Path) -> bool:
    """Whether two chunk files hold the same arrays (bytes first, then contents)."""
    if filecmp.cmp(a, b, shallow=False):
        return True
    try:
        with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
            return all(np.array_equal(x[n], y[n]) and x[n].dtype == y[n].dtype for n in _ARRAYS)
    except _READ_ERRORS:
        return False

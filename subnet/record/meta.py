"""A record's metadata: its validation, its size limits and what makes two records the same.

``meta.json`` holds the caller's metadata (seed, sites, fingerprints, versions, ...) plus the
record's own ``format`` and ``num_classes``. :func:`_check_meta` validates it (a caller's before
anything is written, a folder's when it is loaded: the folder is untrusted), and
:class:`RecordMeta` is the typed view of the fields the storage itself reads. Two records are the
same record (a resumed run, a shard to merge) when :func:`_identity_difference` finds nothing.

Pure Python and numpy: no Keras, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from subnet.errors import InputError, InputTypeError
from subnet.masks import MAX_MASKS, check_seed

FORMAT = "subnet.MaskRecord/1"
"""The ``format`` of a record's ``meta.json``."""

MAX_EXAMPLES = 10_000_000
"""The most examples a record may hold (the length of ``labels`` and ``example_indices``)."""

MAX_UNITS = 10_000_000
"""The most units (dropout bits per mask) over all sites of a record."""

_RESERVED = ("format", "num_classes")
_MAX_CLASSES = 1 << 16


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
    check_seed(meta["seed"], "meta['seed']")
    _check_count(meta["n_masks"], "meta['n_masks']", MAX_MASKS, "subnet.masks.MAX_MASKS",
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
        _check_count(site["units"], f"{where}['units']", MAX_UNITS, "subnet.record.meta.MAX_UNITS",
                     "the number of units of the site")
        q = site["keep"]
        if not (isinstance(q, numbers.Real) and not isinstance(q, bool)
                and math.isfinite(float(q)) and 0.0 < float(q) <= 1.0):
            raise InputError(f"`{where}['keep']` must be a keep probability in (0, 1]. "
                             f"Received: {q!r}")
        site["keep"] = float(q)
    total = sum(site["units"] for site in sites)
    if total > MAX_UNITS:
        raise InputError(f"`meta['sites']` must have at most {MAX_UNITS:,} units in all "
                         f"(subnet.record.meta.MAX_UNITS). Received: {total:,} units over "
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
                         f"{limit_name}). Received: {name}={value}")
    return int(value)


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
                         f"(subnet.record.meta.MAX_EXAMPLES). Received: {labels.size:,}")
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
    a, b = RecordMeta.from_dict(a_meta), RecordMeta.from_dict(b_meta)
    a_mf, b_mf = a.model_fingerprint, b.model_fingerprint
    if a_mf != b_mf:
        return ("model_fingerprint", f"other model weights (model_fingerprint {_short(a_mf)} vs "
                                     f"{_short(b_mf)})")
    a_df, b_df = a.data_fingerprint, b.data_fingerprint
    if a_df != b_df:
        return ("data_fingerprint", f"other data (data_fingerprint {_short(a_df)} vs "
                                    f"{_short(b_df)})")
    if a.seed != b.seed:
        return ("seed", f"another seed (seed {a.seed} vs {b.seed})")
    if a.antithetic != b.antithetic:
        return ("antithetic", f"another sampling scheme (antithetic {a.antithetic} vs "
                              f"{b.antithetic})")
    a_sites, b_sites = a.sites, b.sites
    if a_sites != b_sites:
        if len(a_sites) != len(b_sites):
            detail = f"{len(a_sites)} vs {len(b_sites)} sites"
        else:
            j = next(j for j, (x, y) in enumerate(zip(a_sites, b_sites, strict=True)) if x != y)
            detail = f"site {j}: (name, units, keep) {a_sites[j]} vs {b_sites[j]}"
        return ("sites", f"other sites ({detail})")
    # How the probabilities were computed, each compared where both records say it (records
    # without a key are older than its check): another rescaling is another experiment; another
    # backend, or oneDNN's kernels switched, rounds differently, so the record would no longer
    # be the one an uninterrupted run makes, bit for bit; TensorFlow's CPU matrix products sum
    # in an order that depends on its intra-op thread count.
    def on(flag) -> str:
        return "on" if flag else "off"

    for attribute, field, says in (
            ("rescale", "rescale",
             lambda x, y: f"kept units scaled otherwise (rescale {x} vs {y})"),
            ("backend", "backend", lambda x, y: f"another backend ({x!r} vs {y!r})"),
            ("onednn", "versions.onednn",
             lambda x, y: f"TensorFlow's oneDNN kernels {on(x)} (here {on(y)})"),
            ("intra_op_threads", "intra_op_threads",
             lambda x, y: f"{x} TensorFlow intra-op threads (here {y})"),
            ("num_classes", "num_classes",
             lambda x, y: f"another number of classes (num_classes {x} vs {y})")):
        x, y = getattr(a, attribute), getattr(b, attribute)
        if x is not None and y is not None and x != y:
            return (field, says(x, y))
    for field, x, y in (("labels", a_labels, b_labels),
                        ("example_indices", a_examples, b_examples)):
        if x.shape != y.shape:
            return (field, f"other examples ({field} of {x.size} vs {y.size} examples)")
        diff = np.flatnonzero(x != y)
        if diff.size:
            return (field, f"other examples ({field} differ at {diff.size} of {x.size} "
                           f"positions, first at position {int(diff[0])})")
    return None


def _how_to_continue(field: str, made: RecordMeta) -> str:
    """For a record that differs only in how its probabilities were computed, how to compute
    them its way (the start of a sentence ending in "use another folder"); else ""."""
    if field == "rescale":
        return f"pass rescale={made.rescale} to continue it, or "
    if field == "backend":
        return f"pass backend={made.backend!r} (--backend {made.backend}) to continue it, or "
    if field == "versions.onednn":
        return f"set TF_ENABLE_ONEDNN_OPTS={int(bool(made.onednn))} to continue it, or "
    if field == "intra_op_threads":
        n = made.intra_op_threads
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


@dataclasses.dataclass(frozen=True)
class RecordMeta:
    """The fields of a record's metadata that the storage reads: its identity and its size.

    A read-only view of a metadata dict that :func:`_check_meta` accepted (a caller's, or a
    ``meta.json`` loaded from a folder); the dict itself (``MaskRecord.meta``) keeps every key.
    Build it with :meth:`from_dict`. The optional fields hold what the dict stores, as stored,
    and None where it has no such key (a record older than the key, or a caller's metadata).

    Attributes:
        seed: Sampling seed, an int in [0, 2**64).
        antithetic: Whether masks are drawn in antithetic pairs.
        n_masks: The planned number of masks.
        sites: ``(name, units, keep)`` of each site, in the order of the site table.
        model_fingerprint: The weights' fingerprint (SHA-256, hex).
        data_fingerprint: The examples' and labels' fingerprint (SHA-256, hex).
        num_classes: Number of classes.
        rescale: Whether kept units were scaled by 1 / keep.
        backend: The backend that computed the outcomes (``"fast"``, ``"graph"``, ...).
        onednn: Whether TensorFlow's oneDNN kernels were on (from ``versions["onednn"]``).
        intra_op_threads: TensorFlow's intra-op thread count.
    """

    seed: int
    antithetic: bool
    n_masks: int
    sites: tuple[tuple[str, int, float], ...]
    model_fingerprint: str
    data_fingerprint: str
    num_classes: int | None = None
    rescale: bool | None = None
    backend: str | None = None
    onednn: bool | None = None
    intra_op_threads: int | None = None

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any]) -> RecordMeta:
        """The fields of a validated metadata dict (see :func:`_check_meta`)."""
        return cls(seed=meta["seed"], antithetic=meta["antithetic"], n_masks=meta["n_masks"],
                   sites=tuple((s["name"], int(s["units"]), float(s["keep"]))
                               for s in meta["sites"]),
                   model_fingerprint=meta["model_fingerprint"],
                   data_fingerprint=meta["data_fingerprint"],
                   num_classes=meta.get("num_classes"), rescale=meta.get("rescale"),
                   backend=meta.get("backend"),
                   onednn=_onednn_on(meta.get("versions", {}).get("onednn")),
                   intra_op_threads=meta.get("intra_op_threads"))

    @property
    def n_units(self) -> int:
        """Number of units over all sites."""
        return sum(units for _, units, _ in self.sites)

    def keep(self) -> np.ndarray:
        """Keep probability of each unit, float64 (n_units,), expanded from the sites (a new
        array)."""
        return np.concatenate([np.full(units, keep) for _, units, keep in self.sites])

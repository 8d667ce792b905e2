"""The one output type of every importance estimator, and the registry they share."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from subnet._io import atomic_path, atomic_write_text
from subnet.engine.chain import SiteTable
from subnet.errors import InputError, InputTypeError
from subnet.results import SCHEMA_VERSION, import_pandas, schema_version
from subnet.validation import check_int

__all__ = ["ESTIMATORS", "Estimator", "Importance", "benjamini_hochberg", "estimate",
           "normal_intervals", "register"]

_ARRAYS = ("scores", "stderr", "ci_low", "ci_high", "pvalue", "qvalue")


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values (false discovery rate adjusted p-values).

    Args:
        pvalues: p-values, any shape; NaN entries stay NaN and are not counted.

    Returns:
        q-values of the same shape, in [0, 1].
    """
    p = np.asarray(pvalues, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    valid = ~np.isnan(p)
    if valid.any():
        q[valid] = stats.false_discovery_control(p[valid], method="bh")
    return q


@dataclasses.dataclass(frozen=True, eq=False)
class Importance:
    """Per-unit importance scores with, where the estimator has them, their uncertainty.

    Arrays run over all units in site order (the last axis); class-conditional estimates add a
    leading axis over classes. Larger scores mean more important. Missing statistics are None;
    entries an estimator cannot compute are NaN, with a warning where they are made.

    Attributes:
        method: The estimator's registry name.
        scores: float64 (n_units,) or (n_classes, n_units).
        sites: The :class:`~subnet.engine.chain.SiteTable` the units belong to.
        stderr: Standard errors of the scores, or None.
        ci_low: Lower ends of 95 % confidence intervals, or None.
        ci_high: Upper ends of 95 % confidence intervals, or None.
        pvalue: Two-sided p-values for "score = 0", or None.
        qvalue: Benjamini–Hochberg q-values of ``pvalue``, or None.
        details: JSON-ready facts about the estimate (metric, number of masks, options, ...).
    """

    method: str
    scores: np.ndarray
    sites: SiteTable
    stderr: np.ndarray | None = None
    ci_low: np.ndarray | None = None
    ci_high: np.ndarray | None = None
    pvalue: np.ndarray | None = None
    qvalue: np.ndarray | None = None
    details: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.sites, SiteTable):
            raise InputTypeError(f"`sites` must be a SiteTable. Received: {type(self.sites)!r}")
        scores = np.asarray(self.scores, dtype=np.float64)
        if scores.ndim not in (1, 2) or scores.shape[-1] != self.sites.n_units:
            raise InputError(f"`scores` must have shape (n_units={self.sites.n_units},) or "
                             f"(n_classes, n_units). Received shape {scores.shape}.")
        object.__setattr__(self, "scores", scores)
        for name in _ARRAYS[1:]:
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float64)
            if value.shape != scores.shape:
                raise InputError(f"`{name}` must have the shape of `scores` {scores.shape}. "
                                 f"Received shape {value.shape}.")
            object.__setattr__(self, name, value)
        if self.pvalue is not None and self.qvalue is None:
            object.__setattr__(self, "qvalue", benjamini_hochberg(self.pvalue))
        for name in _ARRAYS:
            value = getattr(self, name)
            if value is not None:
                value.flags.writeable = False

    @property
    def n_units(self) -> int:
        """Number of units over all sites."""
        return self.sites.n_units

    def by_site(self) -> dict[str, dict[str, np.ndarray]]:
        """The arrays split per site: {site name: {"scores": ..., "stderr": ..., ...}}."""
        out: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.sites.names}
        for field in _ARRAYS:
            value = getattr(self, field)
            if value is None:
                continue
            for site, part in self.sites.split(value).items():
                out[site][field] = part
        return out

    def rank(self, per_site: bool = False):
        """Units from most to least important.

        Args:
            per_site: Rank within each site instead of over all units.

        Returns:
            An int64 array of global unit indices, most important first (NaN scores last); or,
            per site, {site name: indices within the site, most important first}.

        Raises:
            ValueError: For class-conditional scores (rank one class: ``for_class(c)``).
        """
        if self.scores.ndim != 1:
            raise InputError("Class-conditional scores have one ranking per class; call "
                             "for_class(c).rank() for class c.")
        if per_site:
            return {name: _descending(part) for name, part in self.sites.split(self.scores).items()}
        return _descending(self.scores)

    def top(self, k: int, per_site: bool = False):
        """The ``k`` most important units (see :meth:`rank`).

        Raises:
            ValueError: If ``k`` is not an int in [1, number of units] (of the smallest site,
                with ``per_site``).
        """
        limit = int(min(self.sites.units)) if per_site else self.n_units
        check_int("k", k, low=1, high=limit,
                  note=f"the number of units{' per site' if per_site else ''}")
        ranking = self.rank(per_site)
        if per_site:
            return {name: order[:k] for name, order in ranking.items()}
        return ranking[:k]

    def for_class(self, label: int) -> Importance:
        """The 1-D importance for one class of class-conditional scores."""
        if self.scores.ndim != 2:
            raise InputError("These scores are not class-conditional.")
        classes = self.details.get("classes", list(range(self.scores.shape[0])))
        if label not in classes:
            raise InputError(f"Class {label!r} is not among the estimated classes {classes}.")
        i = classes.index(label)
        kwargs = {f: None if getattr(self, f) is None else getattr(self, f)[i] for f in _ARRAYS}
        return Importance(method=self.method, sites=self.sites,
                          details={**self.details, "class": label}, **kwargs)

    def to_dict(self) -> dict:
        """A JSON-ready dict of everything: arrays as (nested) lists with NaN as None, and
        ``schema_version``. :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "method": self.method,
                               "sites": self.sites.to_list(), "details": self.details}
        for field in _ARRAYS:
            value = getattr(self, field)
            out[field] = None if value is None else np.where(
                np.isnan(value), None, value).tolist()
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> Importance:
        """Rebuilds an importance from :meth:`to_dict`'s dict (also one read back from JSON).

        A dict without ``schema_version`` is version 1, the same fields.

        Raises:
            InputTypeError: If ``data`` is not a dict.
            InputError: If a field is missing or of the wrong type or shape (the message names
                it), or ``schema_version`` is newer than this subnet reads.
        """
        where = "importance"
        schema_version(data, where)
        for key in ("method", "scores", "sites"):
            if key not in data:
                raise InputError(f"{where}[{key!r}] is required but missing.")
        if not isinstance(data["method"], str):
            raise InputTypeError(f"{where}['method'] must be a string. Received: "
                                 f"{type(data['method']).__name__}")
        details = data.get("details") or {}
        if not isinstance(details, Mapping):
            raise InputTypeError(f"{where}['details'] must be an object. Received: "
                                 f"{type(details).__name__}")
        sites = data["sites"]
        if not isinstance(sites, list) or not all(isinstance(s, Mapping) for s in sites):
            raise InputTypeError(f"{where}['sites'] must be a list of objects (SiteTable."
                                 f"to_list()). Received: {type(sites).__name__}")
        try:
            table = SiteTable.from_list(sites)
        except (TypeError, ValueError) as err:  # a site without one of its fields, or bad
            raise InputError(f"{where}['sites'] must be a list of sites with name, kind, units, "
                             f"keep and mask_layer: {err}") from err
        arrays = {field: _array_from_json(data.get(field), f"{where}[{field!r}]")
                  for field in _ARRAYS}
        return cls(method=data["method"], sites=table, details=dict(details), **arrays)

    def to_frame(self):
        """The importance as a table: one row per unit (per class and unit for
        class-conditional scores), in site order.

        Returns:
            A ``pandas.DataFrame`` with columns ``site``, ``unit`` (index within the site),
            ``score``, ``stderr``, ``ci_low``, ``ci_high``, ``pvalue`` and ``qvalue`` (NaN
            where the estimator has no such statistic), and first ``class`` for
            class-conditional scores. For 1-D scores the row index is the global unit index.

        Raises:
            ImportError: If pandas is not installed.
        """
        pd = import_pandas()
        names = np.repeat(np.asarray(self.sites.names, dtype=object), self.sites.units)
        units = np.concatenate([np.arange(n) for n in self.sites.units])
        stats = {("score" if f == "scores" else f): (
            np.full(self.scores.shape, np.nan) if getattr(self, f) is None else getattr(self, f))
            for f in _ARRAYS}
        if self.scores.ndim == 1:
            return pd.DataFrame({"site": names, "unit": units, **stats})
        n_classes = self.scores.shape[0]
        classes = list(self.details.get("classes", range(n_classes)))
        return pd.DataFrame({"class": np.repeat(classes, self.n_units),
                             "site": np.tile(names, n_classes), "unit": np.tile(units, n_classes),
                             **{k: v.ravel() for k, v in stats.items()}})

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the importance atomically: ``path`` (.npz arrays) and ``path`` + ``.json``.

        Returns:
            The .npz path.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz")
        arrays = {f: getattr(self, f) for f in _ARRAYS if getattr(self, f) is not None}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        meta = {"schema_version": SCHEMA_VERSION, "method": self.method,
                "sites": self.sites.to_list(), "details": self.details}
        atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Importance:
        """Reads what :meth:`save` wrote.

        Raises:
            ValueError: If the files are missing or unreadable.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz")
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"Could not read importance from '{path}': {err}. Save it with "
                             "Importance.save().") from err
        schema_version(meta, f"importance '{path.with_suffix('.json')}'")
        return cls(method=meta["method"], sites=SiteTable.from_list(meta["sites"]),
                   details=meta.get("details", {}), **arrays)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Importance):
            return NotImplemented
        same = self.method == other.method and self.sites == other.sites and \
            self.details == other.details
        for field in _ARRAYS:
            a, b = getattr(self, field), getattr(other, field)
            same = same and ((a is None and b is None) or (
                a is not None and b is not None and np.array_equal(a, b, equal_nan=True)))
        return bool(same)

    __hash__ = None

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.scores.shape))
        extra = ", with stderr" if self.stderr is not None else ""
        return f"Importance(method={self.method!r}, scores {shape}{extra}, sites={self.sites})"


def _array_from_json(value, where: str) -> np.ndarray | None:
    """A float64 array from a (nested) list of numbers and None (NaN), or None."""
    if value is None:
        return None

    def number(item) -> bool:
        return item is None or (isinstance(item, (int, float)) and not isinstance(item, bool))

    if not isinstance(value, list) or not all(
            number(item) or (isinstance(item, list) and all(map(number, item)))
            for item in value):
        raise InputError(f"{where} must be a list (or a list of lists) of numbers and nulls. "
                         f"Received: {type(value).__name__} {str(value)[:60]}")
    try:
        return np.array(value, dtype=np.float64)
    except ValueError as err:  # ragged
        raise InputError(f"{where} must be a rectangular list of lists: {err}") from err


def _descending(scores: np.ndarray) -> np.ndarray:
    keyed = np.where(np.isnan(scores), -np.inf, scores)
    return np.argsort(-keyed, kind="stable").astype(np.int64)


def normal_intervals(scores: np.ndarray, stderr: np.ndarray, dof: float | None = None):
    """95 % intervals and two-sided p-values from estimates and standard errors.

    Uses Student's t with ``dof`` degrees of freedom, or the normal distribution if None.
    Returns (ci_low, ci_high, pvalue); where stderr is 0 or NaN the p-value is NaN.
    """
    dist = stats.norm if dof is None or dof <= 0 else stats.t(dof)
    crit = dist.ppf(0.975)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = scores / stderr
    pvalue = np.where(stderr > 0, 2 * dist.sf(np.abs(z)), np.nan)
    return scores - crit * stderr, scores + crit * stderr, pvalue


class Estimator:
    """Base class of importance estimators: configured by the constructor, run by ``score``.

    Subclasses set ``name`` and ``source`` (``"record"`` for estimators that read a
    :class:`~subnet.record.MaskRecord`, ``"model"`` for those that read a model and data), and
    implement :meth:`score`.
    """

    name = ""
    source = "record"

    def score(self, source) -> Importance:
        """Estimates importance from ``source``; see the subclass."""
        raise NotImplementedError(f"{type(self).__name__} does not implement score().")


ESTIMATORS: dict[str, type[Estimator]] = {}


def register(cls: type[Estimator]) -> type[Estimator]:
    """Class decorator: adds an estimator to the registry under its ``name``."""
    if not cls.name or cls.name in ESTIMATORS:
        raise InputError(f"Estimator name {cls.name!r} is empty or already registered.")
    ESTIMATORS[cls.name] = cls
    return cls


def estimate(source, method: str = "banzhaf", **options) -> Importance:
    """Estimates each unit's importance with a registered estimator.

    Args:
        source: A :class:`~subnet.record.MaskRecord` for the mask-statistics estimators
            (``banzhaf``, ``regression``, ``logistic``, ``class_conditional``), or a tuple
            ``(model, x, y)`` for the estimators that read a model (``magnitude``,
            ``activation``, ``apoz``, ``taylor``, ``random``, ``ablation``).
        method: The estimator's registry name.
        **options: Passed to the estimator's constructor (see each estimator).

    Returns:
        An :class:`Importance`.

    Raises:
        ValueError: If ``method`` is unknown (the message lists the known ones), or the source
            does not suit the estimator.
    """
    cls = ESTIMATORS.get(method)
    if cls is None:
        raise InputError(f"Unknown importance method {method!r}. Known methods: "
                         f"{sorted(ESTIMATORS)}.")
    estimator = cls(**options)
    return estimator.score(source)


def check_record(source, estimator: str):
    """Validates that ``source`` is a record an estimator can use; returns it."""
    from subnet.record.storage import MaskRecord

    if not isinstance(source, MaskRecord):
        raise InputTypeError(f"Estimator {estimator!r} reads a MaskRecord (from record_masks). "
                        f"Received: {type(source).__name__}")
    if source.n_masks < 2:
        raise InputError(f"Estimator {estimator!r} needs at least 2 masks in the record "
                         f"{source.path}; it has {source.n_masks}. Record more masks into it: "
                         "record_masks(..., resume=True) with a larger n_masks (command line: "
                         "python -m subnet.record ... --resume --masks N).")
    return source


def check_model_source(source, estimator: str):
    """Validates a ``(model, x, y)`` source; returns (model, x float32, y int64)."""
    from subnet.models import check_examples
    from subnet.runtime import keras

    if isinstance(source, Mapping):
        source = (source.get("model"), source.get("x"), source.get("y"))
    if not isinstance(source, (tuple, list)) or len(source) != 3 or \
            not isinstance(source[0], keras.Model):
        raise InputTypeError(f"Estimator {estimator!r} reads a model and data: pass (model, x, y). "
                        f"Received: {type(source).__name__}")
    model, x, y = source
    x, y, _ = check_examples(model, x, y)
    return model, x, y


def warn_nan(scores: np.ndarray, why: str) -> None:
    """Warns once that some scores are NaN, saying why."""
    n = int(np.isnan(scores).sum())
    if n:
        warnings.warn(f"{n} importance score(s) are NaN: {why}", RuntimeWarning, stacklevel=3)


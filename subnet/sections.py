"""The bases of subnet's typed results: frozen dataclasses that also read as the dicts they are
in JSON.

- :class:`MappingResult`: a small result that replaced a dict (:class:`~subnet.FinetuneResult`,
  :class:`~subnet.Measurement`, :class:`~subnet.structure.Cost`) and still reads as one.
- :class:`Section`: a typed part of a results file (:mod:`subnet.results`) that keeps the keys it
  does not name and the order it read them in, so that ``to_dict()`` gives back what was read;
  :class:`ReadsAsDict` makes one read as that dict too (the comparison's rows and dense model).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Self

from subnet.errors import InputError, InputTypeError
from subnet.results_schema import check_schema, where_text

__all__ = ["MappingResult", "ReadsAsDict", "Section", "optional", "strings"]

#: Fields of a section that are bookkeeping, not keys of its JSON.
_BOOKKEEPING = frozenset({"extra", "key_order", "source_version"})


def _to_json(value):
    """A JSON-ready copy of a field's value: sections as dicts, tuples as lists."""
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_to_json(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _to_json(item) for key, item in value.items()}
    return value


_FIELDS: dict[type, tuple[tuple[str, ...], dict[str, Any]]] = {}


def _fields(cls: type) -> tuple[tuple[str, ...], dict[str, Any]]:
    """A section class's field names (its JSON keys) and their defaults, read once."""
    if cls not in _FIELDS:
        fields = [f for f in dataclasses.fields(cls) if f.name not in _BOOKKEEPING]
        _FIELDS[cls] = tuple(f.name for f in fields), {f.name: f.default for f in fields}
    return _FIELDS[cls]


def optional(decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A field's decoder that keeps None (a missing optional value) and decodes the rest."""
    return lambda value: None if value is None else decode(value)


def strings(value) -> tuple[str, ...]:
    """A JSON list of strings as a field's tuple."""
    return tuple(value)


class MappingResult(Mapping[str, Any]):
    """Base of a frozen dataclass result that also reads as the dict it replaced.

    A subclass is declared ``@dataclasses.dataclass(frozen=True, eq=False)`` (so that equality
    is :class:`~collections.abc.Mapping`'s: equal to a dict of the same keys and values). Its
    keys are its fields in declaration order, less an optional field (one whose default is
    None) that is None: ``result["params"]``, ``dict(result)``, ``{**result}``,
    ``row.update(result)`` and ``"key" in result`` read as they did on the dict. ``json.dumps``
    takes dicts only: give it :meth:`to_dict`.

    Class attributes a subclass may set:
        _WHERE: How error messages name the result (e.g. ``"measurement"``).
        _DECODE: {field: function} turning a JSON value into the field's value in
            :meth:`from_dict` (default: a deep copy).
    """

    _WHERE: ClassVar[str] = "result"
    _DECODE: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def _present(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self)  # type: ignore[arg-type]
                     if not (f.default is None and getattr(self, f.name) is None))

    def __getitem__(self, key: str) -> Any:
        if key not in self._present():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._present())

    def __len__(self) -> int:
        return len(self._present())

    def to_dict(self) -> dict:
        """The result as the dict it replaced, JSON ready: the keys in order, lists copied."""
        return {key: _to_json(getattr(self, key)) for key in self._present()}

    @classmethod
    def from_dict(cls, data: Mapping) -> Self:
        """Rebuilds a result from :meth:`to_dict`'s dict (keys it does not name are ignored).

        Raises:
            InputTypeError: If ``data`` is not a dict.
            InputError: If a required key is missing.
        """
        if not isinstance(data, Mapping):
            raise InputTypeError(f"`{cls._WHERE}` must be a dict. Received: "
                                 f"{type(data).__name__}")
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        missing = [f.name for f in fields if f.default is dataclasses.MISSING
                   and f.name not in data]
        if missing:
            raise InputError(f"{cls._WHERE}[{missing[0]!r}] is required but missing.")
        return cls(**{f.name: optional(cls._DECODE.get(f.name, copy.deepcopy))(data[f.name])
                      for f in fields if f.name in data})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Section:
    """A typed part of results.json: its declared fields, the keys it does not name (``extra``)
    and the order its keys were read in (``key_order``, which :meth:`to_dict` keeps)."""

    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    key_order: tuple[str, ...] = dataclasses.field(default=(), repr=False, compare=False)

    # How a field's JSON value becomes the field's value (default: a deep copy).
    _DECODE: ClassVar[dict[str, Callable[[Any], Any]]] = {}
    # The $defs entry of the schema that from_dict checks a section against, if any.
    _DEFINITION: ClassVar[str | None] = None
    _WHERE: ClassVar[str] = "section"

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return _fields(cls)[0]

    @classmethod
    def from_dict(cls, data: Mapping) -> Self:
        """Builds the section from its dict as results.json holds it.

        Args:
            data: The section's dict; keys this class does not name go to ``extra``.

        Returns:
            The section; ``to_dict()`` gives ``data`` back.

        Raises:
            InputTypeError: If ``data`` is not a dict.
            InputError: If a field is missing or of the wrong type or range (one line naming
                the key path).
        """
        if not isinstance(data, Mapping):
            raise InputTypeError(f"`{cls._WHERE}` must be a dict. Received: "
                                 f"{type(data).__name__}")
        if cls._DEFINITION is not None:
            check_schema(dict(data), cls._WHERE, cls._DEFINITION)
        else:
            missing = [f.name for f in dataclasses.fields(cls) if f.name not in _BOOKKEEPING
                       and f.default is dataclasses.MISSING and f.name not in data]
            if missing:
                raise InputError(f"{where_text(cls._WHERE, [missing[0]])} is required but "
                                 f"missing.")
        return cls._build(data)

    @classmethod
    def _build(cls, data: Mapping) -> Self:
        """The section from a dict already checked (no checks here)."""
        names = set(cls._names())
        values = {key: cls._DECODE.get(key, copy.deepcopy)(value)
                  for key, value in data.items() if key in names}
        extra = {key: copy.deepcopy(value) for key, value in data.items() if key not in names}
        return cls(**values, extra=extra, key_order=tuple(data))

    def _keys(self) -> list[str]:
        """:meth:`to_dict`'s keys, in its order."""
        names, defaults = _fields(type(self))
        return [key for key in dict.fromkeys([*self.key_order, *names, *self.extra])
                if (key in names and not (getattr(self, key) is None and defaults[key] is None
                                          and key not in self.key_order))
                or (key not in names and key in self.extra)]

    def to_dict(self) -> dict:
        """The section as results.json holds it: its keys in the order they were read, then any
        other field that is set; an optional field that is None and was not read is left out."""
        names = self._names()
        return {key: _to_json(getattr(self, key)) if key in names else
                copy.deepcopy(self.extra[key]) for key in self._keys()}


class ReadsAsDict(Mapping[str, Any]):
    """A section that also reads as the dict results.json holds: a read-only
    :class:`~collections.abc.Mapping` over :meth:`Section.to_dict`'s keys, in that order, so
    that ``row["method"]``, ``row.get("measure")`` and ``"val_accuracy" in row`` read as they
    do on the dict. Equality stays the dataclass's (field by field: a row is not equal to its
    dict), ``json.dumps`` takes :meth:`Section.to_dict`, and a nested dict (``row["widths"]``)
    is the stored one, not a copy. (Only for sections without a field named like a Mapping
    method: :class:`Plan` has ``values``.)"""

    def __getitem__(self, key: str) -> Any:
        section: Any = self
        names, defaults = _fields(type(self))
        if key in names:  # a field: a key unless it is an optional None that was not read
            value = getattr(self, key)
            if value is None and defaults[key] is None and key not in section.key_order:
                raise KeyError(key)
            return value
        if key in section.extra:
            return section.extra[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        section: Any = self
        return iter(section._keys())

    def __len__(self) -> int:
        section: Any = self
        return len(section._keys())

"""JSON records of parameter dataclasses, read strictly.

Every sampled or configured parameter set in synthex (phantom shapes, physics,
randomization ranges) is a frozen dataclass stored as a JSON record with each
sample. :func:`from_record` reads one back: unknown keys are an error naming
them (with the closest known key), nested dataclass fields are read
recursively, and JSON lists become tuples where the field is declared a tuple.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing


def _dataclass_of(hint):
    """The dataclass type in a field annotation (``X``, ``X | None``), or None."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                return arg
    return None


def _is_tuple(hint) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is_tuple(a) for a in typing.get_args(hint))
    return hint is tuple or typing.get_origin(hint) is tuple


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def from_record(cls, record, error: type[Exception] = ValueError, what: str | None = None, prepare=None):
    """``cls(**record)`` for a parameter dataclass; unknown keys raise ``error`` naming them.

    ``prepare(cls, record) -> record``: applied to this record and every nested one first (e.g. to update
    renamed fields of records stored by an earlier version).
    """
    what = what or cls.__name__
    if not isinstance(record, dict):
        raise error(f"{what} must be given as a mapping, got {type(record).__name__}")
    if prepare is not None:
        record = prepare(cls, record)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(record) - fields)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), sorted(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise error(f"unknown {what} field(s) {unknown}{hint}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kw = {}
    for k, v in record.items():
        nested = _dataclass_of(hints[k])
        if nested is not None and isinstance(v, dict):
            reader = getattr(nested, "from_dict", None)
            kw[k] = reader(v) if reader is not None else from_record(nested, v, error, nested.__name__, prepare)
        elif isinstance(v, list) and _is_tuple(hints[k]):
            kw[k] = _tuples(v)
        else:
            kw[k] = v
    return cls(**kw)

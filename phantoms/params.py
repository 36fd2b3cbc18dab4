"""Shared plumbing of the phantoms' JSON-serializable shape-parameter records."""

from __future__ import annotations

import dataclasses


def strict_from_dict(cls, d: dict, error: type[Exception], what: str):
    """``cls(**d)`` for a parameter dataclass, refusing unknown keys with ``error`` naming them."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise error(f"unknown {what} parameter(s) {sorted(unknown)}; known: {sorted(names)}")
    return cls(**d)

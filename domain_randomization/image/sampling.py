"""Combinators that decide which ops fire (imgaug-style), drawing only from the
``numpy.random.Generator`` they are given. A node's ``sample(rng)`` returns the
list of op records that fired, in the order they are applied."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .core import ImageRandomizationError, integer


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ImageRandomizationError(f"a probability must lie in [0, 1], got {p}")


@dataclass(frozen=True)
class Sometimes:
    """Its child fires with probability ``p``."""

    p: float
    then: object

    def __post_init__(self):
        _check_probability(self.p)

    def sample(self, rng: np.random.Generator) -> list[dict]:
        return self.then.sample(rng) if rng.random() < self.p else []


@dataclass(frozen=True)
class OneOf:
    """Exactly one option, chosen uniformly."""

    options: tuple

    def sample(self, rng):
        return self.options[int(rng.integers(len(self.options)))].sample(rng)


@dataclass(frozen=True)
class Sequence:
    """Every step, in order."""

    steps: tuple = ()

    def sample(self, rng):
        return [record for step in self.steps for record in step.sample(rng)]


@dataclass(frozen=True)
class SomeOf:
    """``n`` distinct options, ``n`` uniform in the closed range ``count``; in a
    random order when ``random_order``, otherwise in list order."""

    count: tuple[int, int]
    options: tuple
    random_order: bool = True

    def __post_init__(self):
        lo, hi = self.count
        if not 0 <= lo <= hi <= len(self.options):
            raise ImageRandomizationError(
                f"SomeOf count {self.count} must satisfy 0 <= min <= max <= {len(self.options)} options"
            )

    def sample(self, rng):
        n = integer(rng, self.count)
        chosen = rng.permutation(len(self.options))[:n]
        if not self.random_order:
            chosen = np.sort(chosen)
        return [record for i in chosen for record in self.options[int(i)].sample(rng)]

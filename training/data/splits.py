"""Subject-level splits: every image of a subject (CT, phantom instance, specimen,
patient) goes to the same part, so a model is never validated or tested on a
subject it saw in training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.tasks import TrainingError


class SplitError(TrainingError):
    pass


def split_by_subject(subjects: Sequence[str], fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Image indices per part, e.g. ``fractions={"train": 0.8, "val": 0.2}``.

    Subjects (not images) are shuffled with ``numpy.random.default_rng(seed)``
    and assigned greedily so each part's image count is as close as possible to
    its fraction; every part with a positive fraction gets at least one subject.
    """
    subjects = np.asarray([str(s) for s in subjects])
    names = list(fractions)
    f = np.array([fractions[n] for n in names], dtype=np.float64)
    if np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise SplitError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    unique, counts = np.unique(subjects, return_counts=True)
    need = int(np.count_nonzero(f > 0))
    if len(unique) < need:
        raise SplitError(f"{need} splits need at least {need} subjects; the data has {len(unique)} "
                         f"({list(unique)}). Give a separate validation set, or data from more subjects.")
    order = np.random.default_rng(seed).permutation(len(unique))
    target = f * len(subjects)
    got = np.zeros(len(names))
    assign = {}
    # first one subject per non-empty part, then the rest to the part furthest below its target
    for part, k in zip(np.flatnonzero(f > 0), order[:need]):
        assign[unique[k]] = part
        got[part] += counts[k]
    for k in order[need:]:
        part = int(np.argmax(np.where(f > 0, (target - got) / np.maximum(target, 1e-9), -np.inf)))
        assign[unique[k]] = part
        got[part] += counts[k]
    part_of = np.array([assign[s] for s in subjects])
    return {n: np.flatnonzero(part_of == p) for p, n in enumerate(names)}


def check_disjoint(subjects_by_part: dict[str, Sequence[str]]) -> None:
    """Raise :class:`SplitError` if any subject appears in two parts."""
    seen: dict[str, str] = {}
    for part, subs in subjects_by_part.items():
        for s in set(map(str, subs)):
            if s in seen and seen[s] != part:
                raise SplitError(f"subject {s!r} is in both the {seen[s]!r} and {part!r} splits")
            seen[s] = part

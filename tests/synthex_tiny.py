"""A tiny render config shared by the dataset, pipeline, export and Ray tests:
2 procedural pelvis phantoms on a 6 mm grid, 32 x 32 images, 2 samples per shard."""

from __future__ import annotations

import copy

TINY = {
    "task": "hip",
    "seed": 7,
    "n": 12,
    "subjects": [{"source": "pelvis", "count": 2, "spacing_mm": 6.0}],
    "image": {"size": 32},
    "geometry": {"detector_mm": 400.0},
    "projector": {"device": "cpu"},
    "dataset": {"shard_size": 2},
}


def tiny(**changes) -> dict:
    """TINY with top-level or dotted-key changes (``**{"image.size": 48}``)."""
    cfg = copy.deepcopy(TINY)
    for key, value in changes.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg

"""Draw a parameter record, apply a record, or both."""

from __future__ import annotations

import math

import numpy as np

from .core import (
    OPS,
    ImageRandomizationError,
    Randomized,
    check_boxes,
    check_image,
    check_masks,
    check_points,
    check_visible,
)
from .presets import PRESETS

RECORD_VERSION = 1


def resolve_preset(preset):
    """A preset name or a sampling tree -> (name, tree)."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ImageRandomizationError(
                f"unknown image randomization preset {preset!r}; choose one of {sorted(PRESETS)}"
            )
        return preset, PRESETS[preset]
    if not hasattr(preset, "sample"):
        raise ImageRandomizationError(f"preset must be a name {sorted(PRESETS)} or a sampling tree, got {preset!r}")
    return "custom", preset


def sample_params(preset="strong", rng: np.random.Generator | None = None) -> dict:
    """Draw one JSON-serializable parameter record from ``rng`` (required: a
    ``numpy.random.Generator``, e.g. seeded from run seed + sample index)."""
    if not isinstance(rng, np.random.Generator):
        raise ImageRandomizationError("sample_params needs rng=numpy.random.Generator (never the global RNG)")
    name, tree = resolve_preset(preset)
    return {"version": RECORD_VERSION, "preset": name, "ops": tree.sample(rng)}


def _op_arguments(record) -> tuple[type, dict]:
    if not isinstance(record, dict) or "op" not in record:
        raise ImageRandomizationError(f"each recorded op must be a dict with an 'op' name, got {record!r}")
    cls = OPS.get(record["op"])
    if cls is None:
        raise ImageRandomizationError(f"unknown image op {record['op']!r} in the record; known: {sorted(OPS)}")
    args = {k: v for k, v in record.items() if k != "op"}
    expected = set(cls().draw(np.random.default_rng(0)))
    if set(args) != expected:
        raise ImageRandomizationError(
            f"op {record['op']!r} needs parameters {sorted(expected)}, the record has {sorted(args)}"
        )
    for key, value in args.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ImageRandomizationError(
                f"op {record['op']!r}: parameter {key!r} must be a finite number, got {value!r}"
            )
    return cls, args


def apply(image, masks=None, keypoints=None, boxes=None, params=None, *, visible=None) -> Randomized:
    """Apply a parameter record (from :func:`sample_params`, or read back from
    JSON) to an image and its labels. Deterministic: the same inputs and record
    give bit-identical outputs.

    ``image`` float (H, W) in [0, 1]; ``masks`` integer (H, W) or (C, H, W);
    ``keypoints`` (N, 2) (u, v) pixels with optional ``visible`` (N,) flags;
    ``boxes`` (M, 4) (u0, v0, u1, v1).
    """
    if not isinstance(params, dict) or not isinstance(params.get("ops"), list):
        raise ImageRandomizationError("apply() needs params: a record with an 'ops' list, as sample_params returns")
    if params.get("version", RECORD_VERSION) != RECORD_VERSION:
        raise ImageRandomizationError(f"record version {params.get('version')!r} is not {RECORD_VERSION}")
    img = check_image(image)
    keypoints = check_points(keypoints, "keypoints", 2)
    sample = Randomized(
        image=img,
        masks=check_masks(masks, img.shape),
        keypoints=keypoints,
        visible=check_visible(visible, keypoints),
        boxes=check_boxes(boxes),
    )
    for cls, args in [_op_arguments(r) for r in params["ops"]]:
        sample = cls.apply_to(sample, **args)
    return sample.replace(params=params)


def randomize(image, masks=None, keypoints=None, boxes=None, *, rng, preset="strong", visible=None) -> Randomized:
    """Draw a record from ``rng`` and apply it; the record is in ``.params``."""
    params = sample_params(preset, rng)
    return apply(image, masks, keypoints, boxes, params, visible=visible)

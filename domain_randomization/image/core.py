"""Shared pieces: the error type, the op registry and input validation.

Conventions of the image-level randomization (also in docs/domain-randomization.md):

* ``image``: float32 ``(H, W)`` in ``[0, 1]``; for synthex renders this is the
  processed image after display processing, normalised to ``[0, 1]``. Every
  intensity op clips its result back to ``[0, 1]``.
* ``masks``: integer label maps, ``(H, W)`` or a stack ``(C, H, W)``; they move
  with nearest-neighbour sampling, never interpolated.
* ``keypoints``: ``(N, 2)`` pixel coordinates ``(u, v)`` = (column, row) with
  pixel ``(0, 0)`` the centre of the top-left pixel, so the image covers
  ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``. A landmark that leaves that area keeps
  its coordinates and gets ``visible = False``.
* ``boxes``: ``(M, 4)`` ``(u0, v0, u1, v1)`` in the same continuous coordinates,
  clipped to the image area after a geometric op.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np


class ImageRandomizationError(ValueError):
    """Bad input to image-level randomization (a clear, user-facing error)."""


# op name -> op class; filled by the @register decorator of each op module
OPS: dict[str, type["Op"]] = {}


def register(cls):
    """Class decorator: make an op replayable from its recorded name."""
    if cls.name in OPS:
        raise ImageRandomizationError(f"image op {cls.name!r} is registered twice")
    OPS[cls.name] = cls
    return cls


def uniform(rng: np.random.Generator, bounds) -> float:
    lo, hi = bounds
    return float(rng.uniform(lo, hi))


def integer(rng: np.random.Generator, bounds) -> int:
    """An integer drawn uniformly from the closed range ``bounds``."""
    lo, hi = bounds
    return int(rng.integers(lo, hi + 1))


def draw_seed(rng: np.random.Generator) -> int:
    """A seed for per-pixel noise, stored in the record instead of the noise itself."""
    return int(rng.integers(0, 2**32))


def noise_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(int(seed))


@dataclass(frozen=True)
class Randomized:
    """An image with its labels (any may be None but the image), and the
    parameter record that produced them (JSON-serializable)."""

    image: np.ndarray
    masks: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    visible: np.ndarray | None = None
    boxes: np.ndarray | None = None
    params: dict | None = None

    def replace(self, **changes) -> "Randomized":
        return replace(self, **changes)


class Op:
    """One random operation: a sampler (the instance, holding ranges) and a
    deterministic apply (class methods taking only the recorded parameters).

    ``kind`` is ``"intensity"`` (touches only the image) or ``"geometric"``
    (moves image, masks, keypoints and boxes with one parameter set).
    """

    name: ClassVar[str]
    kind: ClassVar[str]

    def draw(self, rng: np.random.Generator) -> dict:
        """Parameters of one application (JSON-serializable), drawn from ``rng``."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator) -> list[dict]:
        return [{"op": self.name, **self.draw(rng)}]

    @classmethod
    def apply_to(cls, sample: Randomized, **params) -> Randomized:
        """Apply recorded parameters to an image and its labels."""
        raise NotImplementedError


def check_image(image) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 2:
        raise ImageRandomizationError(f"image must be a 2-D (H, W) array, got shape {a.shape}")
    if a.shape[0] < 16 or a.shape[1] < 16:  # the widest filter (blur radius 9) reflects inside the image
        raise ImageRandomizationError(f"image must be at least 16 x 16 pixels, got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ImageRandomizationError(
            f"image must be floating point in [0, 1], got dtype {a.dtype} (divide integer images by their maximum)"
        )
    if not np.all(np.isfinite(a)):
        raise ImageRandomizationError("image contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise ImageRandomizationError(
            f"image values must lie in [0, 1] (normalise the displayed image first), got range [{lo:.4g}, {hi:.4g}]"
        )
    return a.astype(np.float32, copy=True)


def check_masks(masks, shape) -> np.ndarray | None:
    if masks is None:
        return None
    m = np.asarray(masks)
    if m.ndim not in (2, 3) or m.shape[-2:] != tuple(shape):
        raise ImageRandomizationError(
            f"masks must be (H, W) or (C, H, W) label maps matching the image {tuple(shape)}, got shape {m.shape}"
        )
    if not (np.issubdtype(m.dtype, np.integer) or m.dtype == bool):
        raise ImageRandomizationError(f"masks must be integer label maps, got dtype {m.dtype}")
    if m.size and (int(m.max()) >= 2**24 or int(m.min()) <= -(2**24)):
        raise ImageRandomizationError("mask labels must have magnitude below 2**24")
    return m.copy()


def check_points(points, name: str, width: int) -> np.ndarray | None:
    if points is None:
        return None
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != width:
        raise ImageRandomizationError(f"{name} must have shape (N, {width}), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ImageRandomizationError(f"{name} contain NaN or infinite values")
    return p.copy()


def check_visible(visible, keypoints) -> np.ndarray | None:
    if keypoints is None:
        if visible is not None:
            raise ImageRandomizationError("visible flags were given without keypoints")
        return None
    if visible is None:
        return np.ones(len(keypoints), dtype=bool)
    v = np.asarray(visible)
    if v.shape != (len(keypoints),):
        raise ImageRandomizationError(f"visible must have shape ({len(keypoints)},), got {v.shape}")
    return v.astype(bool)


def check_boxes(boxes) -> np.ndarray | None:
    b = check_points(boxes, "boxes", 4)
    if b is not None and np.any(b[:, 2:] < b[:, :2]):
        raise ImageRandomizationError("boxes must be (u0, v0, u1, v1) with u1 >= u0 and v1 >= v0")
    return b


def inside(points: np.ndarray, shape) -> np.ndarray:
    """Whether (u, v) points lie on the image area [-0.5, W - 0.5) x [-0.5, H - 0.5)."""
    h, w = shape
    u, v = points[:, 0], points[:, 1]
    return (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)

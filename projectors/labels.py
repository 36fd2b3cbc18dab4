"""2D labels of one view: landmarks, structure masks, label images, boxes, tool points.

Pure functions of the camera and of the projector's outputs; nothing here
reads files or renders.

Conventions (as everywhere in synthex): pixel ``(u, v)`` = (column, row),
``(0, 0)`` is the *centre* of the top-left pixel, so pixel ``(u, v)`` covers
``[u - 0.5, u + 0.5] x [v - 0.5, v + 0.5]`` and the detector spans
``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.

* **Landmarks** ``(u, v) = camera.project(X)`` with two flags that do *not*
  depend on occlusion by other anatomy (X-rays see through it): ``in_front``
  (the point lies between the source plane and beyond, i.e. it is imaged at
  all) and ``in_image`` (its projection falls on the detector). ``visible`` =
  both.
* **Masks** from projected path length: a pixel belongs to a structure when
  its ray travels more than ``threshold_mm`` through the structure (default
  :data:`MASK_THRESHOLD_MM` = 0.1 mm). A positive threshold drops only rays
  that graze a voxel corner or a mesh silhouette (a chord of 0.1 mm through a
  surface of curvature radius R lies within 0.1^2 / (8 R) mm of the
  silhouette), so a mask equals the region of positive path length up to a
  one-pixel band at its border.
* **Label images** (one class per pixel, 0 = background): where structures
  overlap, the one with the longest path length wins (``overlap="longest"``),
  or the last in the given class order (``overlap="order"``).
* **Boxes** ``(u0, v0, u1, v1)``: the outer pixel edges of a mask, in pixel
  coordinates (COCO's ``[x, y, w, h]`` is ``[u0 + 0.5, v0 + 0.5, u1 - u0, v1 - v0]``
  in its top-left-corner convention; see :func:`box_to_coco`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from projectors.geometry import Camera

MASK_THRESHOLD_MM = 0.1


class LabelError(ValueError):
    """Inputs that cannot be turned into 2D labels."""


@dataclass(frozen=True)
class ProjectedPoints:
    """Projected landmarks of one view."""

    names: tuple[str, ...]
    uv: np.ndarray  # (N, 2) pixel coordinates (u, v)
    in_front: np.ndarray  # (N,) bool: imaged at all (in front of the source / start plane)
    in_image: np.ndarray  # (N,) bool: projection inside the detector
    depth: np.ndarray  # (N,) mm along the principal axis from the source

    @property
    def visible(self) -> np.ndarray:
        return self.in_front & self.in_image

    def as_dict(self) -> dict[str, tuple[float, float, bool]]:
        return {n: (float(p[0]), float(p[1]), bool(v)) for n, p, v in zip(self.names, self.uv, self.visible)}


def project_landmarks(camera: Camera, landmarks, names=None) -> ProjectedPoints:
    """Project world landmarks (a ``{name: (3,)}`` dict, or an (N, 3) array with ``names``)."""
    if isinstance(landmarks, dict):
        names = tuple(landmarks) if names is None else tuple(names)
        missing = [n for n in names if n not in landmarks]
        if missing:
            raise LabelError(f"landmarks {missing} not given; have {sorted(landmarks)}")
        pts = np.array([np.asarray(landmarks[n], dtype=np.float64) for n in names]).reshape(-1, 3)
    else:
        pts = np.asarray(landmarks, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise LabelError(f"landmarks must be a dict or an (N, 3) array, got shape {pts.shape}")
        names = tuple(names) if names is not None else tuple(str(i) for i in range(len(pts)))
        if len(names) != len(pts):
            raise LabelError(f"{len(names)} names for {len(pts)} landmarks")
    if not np.all(np.isfinite(pts)):
        raise LabelError("landmark coordinates contain NaN or infinite values")
    depth = camera.depth(pts) if len(pts) else np.zeros(0)
    in_front = depth > 0 if camera.projection == "perspective" else np.ones(len(pts), bool)
    uv = camera.project(pts) if len(pts) else np.zeros((0, 2))
    uv = np.where(in_front[:, None], uv, np.nan)
    return ProjectedPoints(names, uv, in_front, in_front & in_image(uv, camera.width, camera.height), depth)


def structure_masks(path_length: dict, threshold_mm: float = MASK_THRESHOLD_MM, names=None) -> dict[str, np.ndarray]:
    """Boolean (H, W) mask per structure: path length through it > ``threshold_mm``."""
    if not (np.isfinite(threshold_mm) and threshold_mm >= 0):
        raise LabelError(f"mask threshold must be >= 0 mm, got {threshold_mm}")
    names = list(path_length) if names is None else list(names)
    missing = [n for n in names if n not in path_length]
    if missing:
        raise LabelError(f"no path length for structure(s) {missing}; have {sorted(path_length)}")
    return {n: np.asarray(path_length[n]) > threshold_mm for n in names}


def class_path_lengths(path_length: dict, structures: dict, shape) -> dict[str, np.ndarray]:
    """Path length (mm) through each class: the sum over the class's structures.

    ``structures`` maps a class name to the structure names that make it
    (SyntheX's ``upper_sacrum`` may be TotalSegmentator's ``sacrum`` and
    ``vertebrae_S1``); structures absent from ``path_length`` (not in this scene)
    add nothing, so a class with none of them has zero path everywhere.
    """
    out = {}
    for name, parts in structures.items():
        total = np.zeros(shape, dtype=np.float32)
        for s in parts:
            if s in path_length:
                total = total + np.asarray(path_length[s], dtype=np.float32)
        out[name] = total
    return out


def label_image(path_length: dict, classes: dict[int, str], threshold_mm: float = MASK_THRESHOLD_MM,
                overlap: str = "longest", priority=()) -> np.ndarray:
    """One class value per pixel (0 = background) from per-structure (or per-class) path lengths.

    ``classes`` maps class values to structure names (e.g. SyntheX's hip
    classes); structures missing from ``path_length`` (not in this scene) are
    empty. A pixel belongs to the classes whose path exceeds ``threshold_mm``;
    where several do, a class named in ``priority`` wins (earlier names first:
    a lesion inside a lung is a lesion), and otherwise the longest path
    (``"longest"``) or the class listed last (``"order"``).
    """
    if overlap not in ("longest", "order"):
        raise LabelError(f"overlap must be 'longest' or 'order', got {overlap!r}")
    if not path_length:
        raise LabelError("no path lengths given")
    unknown = [n for n in priority if n not in classes.values()]
    if unknown:
        raise LabelError(f"priority names {unknown} are not among the classes {sorted(classes.values())}")
    rank = {name: len(priority) - k for k, name in enumerate(priority)}  # higher wins; 0 = no priority
    shape = np.asarray(next(iter(path_length.values()))).shape
    out = np.zeros(shape, dtype=np.int32)
    best = np.full(shape, threshold_mm, dtype=np.float64)
    best_rank = np.zeros(shape, dtype=np.int32)
    for value, name in classes.items():
        if name not in path_length:
            continue
        p = np.asarray(path_length[name], dtype=np.float64)
        r = rank.get(name, 0)
        present = p > threshold_mm
        if overlap == "longest":
            take = present & ((r > best_rank) | ((r == best_rank) & (p > best)))
        else:
            take = present & (r >= best_rank)
        out[take] = int(value)
        best = np.where(take, p, best)
        best_rank = np.where(take, r, best_rank)
    return out


def in_field(uv, field) -> np.ndarray:
    """(N,) bool: pixel coordinates on the detector whose nearest pixel is inside ``field`` ((H, W) bool, e.g.
    the collimated field of a view); NaN: False."""
    field = np.asarray(field, dtype=bool)
    h, w = field.shape
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    ok = in_image(uv, w, h)
    u, v = np.round(np.nan_to_num(uv)).astype(int).T
    return ok & field[np.clip(v, 0, h - 1), np.clip(u, 0, w - 1)]


def in_image(uv, width: int, height: int) -> np.ndarray:
    """(N,) bool: pixel coordinates on the detector ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` (NaN: False)."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    with np.errstate(invalid="ignore"):
        return (uv[:, 0] >= -0.5) & (uv[:, 0] <= width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= height - 0.5)


def bounding_box(mask) -> tuple[float, float, float, float] | None:
    """Outer pixel edges ``(u0, v0, u1, v1)`` of a boolean mask, or None if empty."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise LabelError(f"a mask must be 2D, got shape {m.shape}")
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if len(rows) == 0:
        return None
    return (cols[0] - 0.5, rows[0] - 0.5, cols[-1] + 0.5, rows[-1] + 0.5)


def bounding_boxes(masks: dict) -> dict[str, tuple[float, float, float, float] | None]:
    return {n: bounding_box(m) for n, m in masks.items()}


def box_to_coco(box) -> list[float]:
    """``(u0, v0, u1, v1)`` in synthex pixel coordinates -> COCO ``[x, y, w, h]`` (origin at the image corner)."""
    u0, v0, u1, v1 = box
    return [u0 + 0.5, v0 + 0.5, u1 - u0, v1 - v0]


def boundary_band(mask, width: int = 1) -> np.ndarray:
    """Pixels within ``width`` pixels (8-neighbourhood) of a mask's border, on either side."""
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    st = np.ones((3, 3), bool)
    grown = ndimage.binary_dilation(m, st, iterations=width)
    shrunk = ndimage.binary_erosion(m, st, iterations=width, border_value=1)
    return grown & ~shrunk

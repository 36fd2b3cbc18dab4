"""Geometric ops: one parameter set moves the image (bilinear), masks
(nearest neighbour), keypoints and boxes together.

Warps run through kornia with ``align_corners=True``, i.e. in the pixel-centre
convention of synthex (pixel (0, 0) is the centre of the top-left pixel), and
reflect about the border pixel centres (``d c b | a b c d | c b a``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import ndimage

from ._torch import kornia, run_on_stack, torch
from .core import Op, Randomized, draw_seed, inside, noise_rng, register, uniform

BOX_EDGE_SAMPLES = 9  # points per box edge mapped through a warp to find the new box


class GeometricOp(Op):
    kind: ClassVar[str] = "geometric"

    @classmethod
    def apply_to(cls, sample: Randomized, **params) -> Randomized:
        shape = sample.image.shape
        plan = cls.plan(shape, **params)
        changes = {"image": np.clip(cls.warp_planned(sample.image[None], "bilinear", plan)[0], 0.0, 1.0)}
        if sample.masks is not None:
            stack = sample.masks.reshape(-1, *shape).astype(np.float32)
            warped = np.rint(cls.warp_planned(stack, "nearest", plan))
            changes["masks"] = warped.astype(sample.masks.dtype).reshape(sample.masks.shape)
        if sample.keypoints is not None:
            moved = cls.map_planned(sample.keypoints, shape, plan)
            changes["keypoints"] = moved
            changes["visible"] = sample.visible & inside(moved, shape)
        if sample.boxes is not None:
            changes["boxes"] = cls.map_boxes(sample.boxes, shape, plan)
        return sample.replace(**changes)

    @classmethod
    def plan(cls, shape, **params):
        """What the warp and the point mapping share (a matrix, a field), computed once."""
        raise NotImplementedError

    @classmethod
    def warp_planned(cls, stack: np.ndarray, mode: str, plan) -> np.ndarray:
        """Warp a float32 (B, H, W) stack; ``mode`` is ``"bilinear"`` or ``"nearest"``."""
        raise NotImplementedError

    @classmethod
    def map_planned(cls, points: np.ndarray, shape, plan) -> np.ndarray:
        """Where (N, 2) input (u, v) points land in the output image."""
        raise NotImplementedError

    @classmethod
    def warp(cls, stack: np.ndarray, mode: str, **params) -> np.ndarray:
        return cls.warp_planned(stack, mode, cls.plan(stack.shape[1:], **params))

    @classmethod
    def map_points(cls, points: np.ndarray, shape, **params) -> np.ndarray:
        return cls.map_planned(points, shape, cls.plan(shape, **params))

    @classmethod
    def map_boxes(cls, boxes: np.ndarray, shape, plan) -> np.ndarray:
        """Enclosing box of each warped outline, clipped to the image area."""
        if len(boxes) == 0:
            return boxes.copy()
        t = np.linspace(0.0, 1.0, BOX_EDGE_SAMPLES)
        u0, v0, u1, v1 = (boxes[:, i : i + 1] for i in range(4))
        us = np.concatenate([u0 + t * (u1 - u0), u1 + 0 * t, u1 - t * (u1 - u0), u0 + 0 * t], axis=1)
        vs = np.concatenate([v0 + 0 * t, v0 + t * (v1 - v0), v1 + 0 * t, v1 - t * (v1 - v0)], axis=1)
        outline = cls.map_planned(np.stack([us.ravel(), vs.ravel()], axis=1), shape, plan)
        outline = outline.reshape(len(boxes), -1, 2)
        h, w = shape
        lo = np.array([-0.5, -0.5])
        hi = np.array([w - 0.5, h - 0.5])
        return np.concatenate(
            [np.clip(outline.min(axis=1), lo, hi), np.clip(outline.max(axis=1), lo, hi)], axis=1
        )


def reflect_coordinate(x: np.ndarray, n: int) -> np.ndarray:
    """Reflect a continuous pixel coordinate into [0, n - 1] about the border pixel
    centres, as the warps do."""
    if n == 1:
        return np.zeros_like(x)
    period = 2.0 * (n - 1)
    r = np.mod(x, period)
    return np.where(r > n - 1, period - r, r)


@register
@dataclass(frozen=True)
class Affine(GeometricOp):
    """Rotation, shear, isotropic scale about the image centre, then a translation.

    ``output = T(c + t) R(rotation) Sx(shear_x) Sy(shear_y) S(scale) T(-c) input``
    with ``c = ((W - 1) / 2, (H - 1) / 2)``; a positive rotation turns the image
    clockwise on screen (v points down); ``Sx = [[1, tan shear_x], [0, 1]]``,
    ``Sy = [[1, 0], [tan shear_y, 1]]``; ``t`` has length ``translate_px`` and
    direction ``translate_dir_deg`` (0 = +u, 90 = +v).
    """

    name: ClassVar[str] = "affine"
    rotation_deg: tuple[float, float] = (-5.0, 5.0)
    translate_px: tuple[float, float] = (0.0, 20.0)
    shear_deg: tuple[float, float] = (-2.0, 2.0)
    scale: tuple[float, float] = (0.9, 1.1)

    def draw(self, rng):
        return {
            "rotation_deg": uniform(rng, self.rotation_deg),
            "translate_px": uniform(rng, self.translate_px),
            "translate_dir_deg": uniform(rng, (0.0, 360.0)),
            "shear_x_deg": uniform(rng, self.shear_deg),
            "shear_y_deg": uniform(rng, self.shear_deg),
            "scale": uniform(rng, self.scale),
        }

    @staticmethod
    def output_from_input(shape, rotation_deg, translate_px, translate_dir_deg, shear_x_deg, shear_y_deg, scale):
        """3x3 matrix mapping homogeneous input (u, v, 1) to output pixel coordinates."""
        h, w = shape
        c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        a, d = np.deg2rad(rotation_deg), np.deg2rad(translate_dir_deg)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        shear_x = np.array([[1.0, np.tan(np.deg2rad(shear_x_deg))], [0.0, 1.0]])
        shear_y = np.array([[1.0, 0.0], [np.tan(np.deg2rad(shear_y_deg)), 1.0]])
        linear = rot @ shear_x @ shear_y * scale
        t = translate_px * np.array([np.cos(d), np.sin(d)])
        m = np.eye(3)
        m[:2, :2] = linear
        m[:2, 2] = c + t - linear @ c
        return m

    @classmethod
    def plan(cls, shape, **params):
        return cls.output_from_input(shape, **params)

    @classmethod
    def warp_planned(cls, stack, mode, m):
        mt = torch.from_numpy(m[:2].astype(np.float32))[None].expand(stack.shape[0], 2, 3)
        dsize = tuple(stack.shape[1:])
        return run_on_stack(
            stack,
            lambda t: kornia.geometry.transform.warp_affine(
                t, mt, dsize, mode=mode, padding_mode="reflection", align_corners=True
            ),
        )

    @classmethod
    def map_planned(cls, points, shape, m):
        return points @ m[:2, :2].T + m[:2, 2]


@register
@dataclass(frozen=True)
class Elastic(GeometricOp):
    """Elastic deformation: a displacement field ``d = alpha * G_sigma * U(-1, 1)``
    (per pixel, per axis, from the recorded seed; G_sigma a Gaussian filter of
    ``sigma`` px) and ``output(q) = input(q + d(q))``.

    A keypoint ``k`` goes to the inverse image of the field: the output pixels ``q``
    that sample it (``q + d(q)`` within one pixel of ``k``), averaged with their
    bilinear weights, which is where the intensity of a point-like landmark lands.
    A keypoint no output pixel samples (pushed out of the image) stays where it is.
    """

    name: ClassVar[str] = "elastic"
    alpha: tuple[float, float] = (0.5, 3.5)
    sigma: float = 0.25

    def draw(self, rng):
        return {"alpha": uniform(rng, self.alpha), "sigma": float(self.sigma), "seed": draw_seed(rng)}

    @staticmethod
    def displacement(shape, alpha, sigma, seed) -> np.ndarray:
        """(2, H, W) displacement (du, dv) in pixels."""
        field = noise_rng(seed).uniform(-1.0, 1.0, (2, *shape))
        if sigma > 0:
            field = np.stack([ndimage.gaussian_filter(f, sigma, mode="mirror") for f in field])
        return alpha * field

    @classmethod
    def sample_coordinates(cls, shape, alpha, sigma, seed) -> np.ndarray:
        """(2, H, W) input (u, v) coordinates sampled by each output pixel."""
        h, w = shape
        vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
        return np.stack([uu, vv]) + cls.displacement(shape, alpha, sigma, seed)

    @classmethod
    def plan(cls, shape, **params):
        return cls.sample_coordinates(shape, **params)

    @classmethod
    def warp_planned(cls, stack, mode, coords):
        su, sv = (torch.from_numpy(c.astype(np.float32))[None] for c in coords)
        b = stack.shape[0]
        return run_on_stack(
            stack,
            lambda t: kornia.geometry.transform.remap(
                t, su.expand(b, -1, -1), sv.expand(b, -1, -1), mode=mode,
                padding_mode="reflection", align_corners=True, normalized_coordinates=False,
            ),
        )

    @classmethod
    def map_planned(cls, points, shape, coords):
        h, w = shape
        du, dv = coords[0] - np.arange(w)[None, :], coords[1] - np.arange(h)[:, None]
        reach = int(np.ceil(max(np.abs(du).max(), np.abs(dv).max()))) + 2
        out = points.copy()
        for i, (u, v) in enumerate(points):
            u0, v0 = int(np.floor(u)), int(np.floor(v))
            cols = np.arange(max(0, u0 - reach), min(w, u0 + reach + 2))
            rows = np.arange(max(0, v0 - reach), min(h, v0 + reach + 2))
            if cols.size == 0 or rows.size == 0:
                continue
            block = np.ix_(rows, cols)
            su, sv = reflect_coordinate(coords[0][block], w), reflect_coordinate(coords[1][block], h)
            weight = np.clip(1.0 - np.abs(su - u), 0.0, None) * np.clip(1.0 - np.abs(sv - v), 0.0, None)
            total = weight.sum()
            if total > 0:
                out[i] = ((weight * cols[None, :]).sum() / total, (weight * rows[:, None]).sum() / total)
        return out

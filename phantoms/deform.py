"""A population from few CTs: anatomically plausible random deformations of a CT, its labels and landmarks.

Two steps, as everywhere in synthex:

* :func:`measure_subject` measures what the population model needs (pelvis:
  from the landmarks; chest: from the lung labels), once per CT;
  :func:`sample_deformation` draws a :class:`DeformParameters` (plain
  numbers, JSON-serializable) from a ``numpy.random.Generator`` for it;
* :func:`deform` applies it deterministically: HU trilinear, labels nearest,
  landmarks through the same transform. :func:`identity_deformation` changes
  nothing (the identical volume comes back).

The transform is ``T = A o phi``:

* ``phi``: a smooth, invertible local deformation: the exponential of a
  stationary velocity field (white noise on a coarse grid, Gaussian-smoothed
  to a correlation length ``field_sigma_mm``, scaled to an RMS of
  ``field_rms_mm``), integrated by scaling and squaring (Arsigny et al.,
  MICCAI 2006; the diffeomorphic registration standard, e.g. ANTs, VoxelMorph).
  Its inverse is the exponential of the negated field.
* ``A``: a global anisotropic scaling in the anatomy's frame (x patient
  right, y anterior, z superior, centred on the hip joints or the lungs):
  anterior-posterior and superior-inferior factors, and a left-right factor
  that may vary smoothly with height, so that the pelvis's width at the
  femoral heads and at the iliac spines follow their (correlated) population
  distributions; ``det DA = s_lr(z) * s_ap * s_si > 0``.

Population statistics (mean +/- SD):

* pelvis, inter-ASIS distance 227 +/- 16 mm and inter-femoral-head-centre
  distance 160 +/- 8 mm, correlation 0.35 (CT study of 200 adults, Skeletal
  Radiology 39 (2010), doi:10.1007/s00256-009-0791-x; the same numbers as the
  pelvis phantom's population, ``phantoms.pelvis``): target distances are
  drawn from this bivariate normal and the subject's own distances scaled to
  them.
* pelvis, superior-inferior: height of the anterior pelvic plane 92.7 +/-
  10.5 mm (135 adult pelves, Augustine et al., Clin. Anat. 31 (2018),
  doi:10.1002/ca.23273): relative SD 11 %. Anterior-posterior: the
  conjugate vera, 105 +/- 10 mm (men) and 116 +/- 10 mm (women) in 100 CTs
  (Ahrend et al., J. Orthop. Translat. 2020, "Development of generic Asian
  pelvic bone models using CT-based 3D statistical modelling"): within-sex
  relative SD 9 %. Both are applied as factors around the subject's own size
  (its sex is unknown, its own dimensions are not measured).
* chest: lung width (costophrenic angle to angle) 278 +/- 25 mm on PA
  radiographs (45 adults, Alghamdi et al., Int. J. Biomed. 11 (2021) 206,
  doi:10.21103/Article11(2)_OA14): relative SD 9 %; lung height (apex to
  the diaphragm's dome) means 21.5-24.4 cm with normal limits 16-30 cm in 526
  adults (West Afr. J. Med. 2007, "Assessment of diaphragmatic levels on
  plain chest radiograph"): a relative SD of 13 % (the limits read as +-2 SD;
  the study gives no SD). Factors around the subject's own size (the
  published values are magnified radiographic measures).

Normal deviates are clipped at +-2.5 SD (no impossible pelves; the SD drops
by under 1 %). Correlations between the axes other than the ASIS-FH one are
not modelled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from projectors.records import from_record
from projectors.geometry import Transform
from projectors.volume import Volume


class DeformError(ValueError):
    """Impossible deformation parameters or a subject the size model cannot measure."""


#: Population size models (see the module notes for the sources).
PELVIS_POPULATION = {"iad_mean": 227.0, "iad_sd": 16.0, "ifd_mean": 160.0, "ifd_sd": 8.0, "rho": 0.35,
                     "cv_si": 10.5 / 92.7, "cv_ap": 0.09}
CHEST_POPULATION = {"cv_width": 24.8 / 278.3, "cv_height": 0.13, "cv_ap": 0.09}
FIELD_DEFAULTS = {"field_rms_mm": 2.5, "field_sigma_mm": 35.0, "field_spacing_mm": 10.0}
_SQUARINGS = 7  # scaling and squaring steps: the velocity field is divided by 2^7 before composing


@dataclass(frozen=True)
class DeformParameters:
    """Everything that defines one deformation (world mm). See :func:`sample_deformation`."""

    center: list = field(default_factory=lambda: [0.0, 0.0, 0.0])  # origin of the anatomy frame
    axes: list = field(default_factory=lambda: np.eye(3).tolist())  # columns: right, anterior, superior (world)
    lr_levels: list = field(default_factory=lambda: [0.0, 1.0])  # frame heights z0 < z1 of the two widths
    lr_scales: list = field(default_factory=lambda: [1.0, 1.0])  # left-right factor at z0 and z1 (smoothstep between)
    ap_scale: float = 1.0
    si_scale: float = 1.0
    field_seed: int = 0
    field_rms_mm: float = 0.0
    field_sigma_mm: float = FIELD_DEFAULTS["field_sigma_mm"]
    field_spacing_mm: float = FIELD_DEFAULTS["field_spacing_mm"]
    field_box: list = field(default_factory=lambda: [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # world box of the field
    targets: dict = field(default_factory=dict)  # the drawn sizes the scaling aims at (mm), for the record

    def __post_init__(self):
        axes = np.asarray(self.axes, dtype=np.float64)
        if axes.shape != (3, 3) or not np.allclose(axes.T @ axes, np.eye(3), atol=1e-6) or np.linalg.det(axes) < 0:
            raise DeformError(f"axes must be a right-handed rotation (3 x 3 orthonormal columns), got {self.axes}")
        scales = [*self.lr_scales, self.ap_scale, self.si_scale]
        if len(self.lr_scales) != 2 or not all(np.isfinite(s) and 0.5 <= s <= 2.0 for s in scales):
            raise DeformError(f"scale factors must lie in 0.5..2, got lr {self.lr_scales}, ap {self.ap_scale}, "
                              f"si {self.si_scale}")
        if len(self.lr_levels) != 2 or not self.lr_levels[0] < self.lr_levels[1]:
            raise DeformError(f"lr_levels must be two increasing heights, got {self.lr_levels}")
        if not (0.0 <= self.field_rms_mm <= 20.0):
            raise DeformError(f"field_rms_mm must lie in 0..20 mm, got {self.field_rms_mm}")
        if not (self.field_sigma_mm >= 2.0 * self.field_spacing_mm > 0):
            raise DeformError("field_sigma_mm must be at least twice field_spacing_mm (a smooth field), got "
                              f"{self.field_sigma_mm} and {self.field_spacing_mm}")
        lo, hi = np.asarray(self.field_box, dtype=np.float64)
        if not np.all(hi > lo):
            raise DeformError(f"field_box must be [[lo], [hi]] with hi > lo, got {self.field_box}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DeformParameters":
        return from_record(cls, d, DeformError, "deformation parameter")

    @property
    def is_identity(self) -> bool:
        return self.field_rms_mm == 0 and all(s == 1.0 for s in (*self.lr_scales, self.ap_scale, self.si_scale))


def identity_deformation(volume: Volume) -> DeformParameters:
    """The deformation that changes nothing."""
    c = volume.corners_world
    return DeformParameters(field_box=[c.min(0).tolist(), c.max(0).tolist()])


# --- sampling ---------------------------------------------------------------------------------------


def _factor(rng, sd: float) -> float:
    """A scale factor ``1 + sd * z``, z standard normal clipped at +-2.5 (lowers the SD by under 1 %)."""
    return float(1.0 + sd * np.clip(rng.standard_normal(), -2.5, 2.5))


def _frame(right, left) -> np.ndarray:
    """Axes (columns right, anterior, superior) from a right-left pair and the world's anterior."""
    x = np.asarray(right, dtype=np.float64) - np.asarray(left, dtype=np.float64)
    x /= np.linalg.norm(x)
    y = np.array([0.0, 1.0, 0.0]) - x[1] * x
    y /= np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def _field_box(volume: Volume, margin: float = 30.0) -> list:
    c = volume.corners_world
    return [(c.min(0) - margin).tolist(), (c.max(0) + margin).tolist()]


def measure_subject(volume: Volume, anatomy: str = "pelvis", landmarks=None) -> dict:
    """What the sampler needs to know of a subject (a small JSON-ready dict; measure once, sample many).

    ``pelvis``: the anatomy frame (centred between the femoral heads ``FH-l``/``FH-r``,
    x towards ``FH-r``), the inter-FH distance and, given ``ASIS-l``/``ASIS-r``, the
    inter-ASIS distance and the ASIS's height above the heads (``landmarks``:
    ``{name: [x, y, z]}``, e.g. :func:`phantoms.auto_landmarks.hip_landmarks`'s points).
    ``chest``: the lungs' box (TotalSegmentator lobes, ``lung``, ... in the label map):
    its centre, width (left-right) and height.
    """
    out = {"anatomy": anatomy, "name": volume.name, "field_box": _field_box(volume)}
    if anatomy == "pelvis":
        lm = {k.replace("_", "-"): np.asarray(v, dtype=np.float64) for k, v in (landmarks or {}).items()}
        if not {"FH-l", "FH-r"} <= set(lm):
            raise DeformError(f"{volume.name}: a pelvis deformation needs the femoral head centres FH-l and FH-r; "
                              f"landmarks given: {sorted(lm) or 'none'}")
        axes = _frame(lm["FH-r"], lm["FH-l"])
        center = 0.5 * (lm["FH-l"] + lm["FH-r"])
        sizes = {"FH-FH": float(np.linalg.norm(lm["FH-r"] - lm["FH-l"]))}
        if {"ASIS-l", "ASIS-r"} <= set(lm):
            level = float(np.mean([(lm[k] - center) @ axes[:, 2] for k in ("ASIS-l", "ASIS-r")]))
            if level <= 10.0:
                raise DeformError(f"{volume.name}: the ASIS lie {level:.0f} mm above the femoral heads; expected more")
            sizes.update({"ASIS-ASIS": float(np.linalg.norm(lm["ASIS-r"] - lm["ASIS-l"])), "asis_level": level})
    elif anatomy == "chest":
        lungs = _lung_points(volume)
        axes = np.eye(3)
        center = 0.5 * (lungs.min(0) + lungs.max(0))
        sizes = {"lung_width": float(np.ptp(lungs[:, 0])), "lung_height": float(np.ptp(lungs[:, 2]))}
    else:
        raise DeformError(f"unknown anatomy {anatomy!r}; choose 'pelvis' or 'chest'")
    out.update({"center": [float(x) for x in center], "axes": axes.tolist(), "sizes": sizes})
    return out


def sample_deformation(rng: np.random.Generator, subject, anatomy: str = "pelvis", landmarks=None,
                       field_rms_mm: float | None = None, field_sigma_mm: float | None = None) -> DeformParameters:
    """Draw one deformation of a subject from the population model of its anatomy ("pelvis" or "chest").

    ``subject``: :func:`measure_subject`'s dict, or a volume (measured here with
    ``anatomy`` and ``landmarks``; measure once when drawing many). Pelvis: the
    inter-FH and inter-ASIS distances are drawn from the population and the
    subject's scaled to them (without ASIS, one left-right factor from the FH
    distance scales the whole width); AP and SI factors around the subject's own
    size. Chest: width, height and AP factors around the subject's own size.
    """
    if isinstance(subject, Volume):
        subject = measure_subject(subject, anatomy, landmarks)
    rms = FIELD_DEFAULTS["field_rms_mm"] if field_rms_mm is None else float(field_rms_mm)
    sigma = FIELD_DEFAULTS["field_sigma_mm"] if field_sigma_mm is None else float(field_sigma_mm)
    common = {"field_seed": int(rng.integers(0, 2**31 - 1)), "field_rms_mm": rms, "field_sigma_mm": sigma,
              "field_spacing_mm": FIELD_DEFAULTS["field_spacing_mm"], "field_box": subject["field_box"],
              "center": subject["center"], "axes": subject["axes"]}
    sizes = subject["sizes"]
    if subject["anatomy"] == "pelvis":
        pop = PELVIS_POPULATION
        z1, z2 = np.clip(rng.standard_normal(2), -2.5, 2.5)
        ifd = pop["ifd_mean"] + pop["ifd_sd"] * z1
        iad = pop["iad_mean"] + pop["iad_sd"] * (pop["rho"] * z1 + np.sqrt(1 - pop["rho"] ** 2) * z2)
        targets = {"FH-FH": float(ifd)}
        if "ASIS-ASIS" in sizes:
            levels, scales = [0.0, sizes["asis_level"]], [ifd / sizes["FH-FH"], iad / sizes["ASIS-ASIS"]]
            targets["ASIS-ASIS"] = float(iad)
        else:
            levels, scales = [0.0, 1.0], [ifd / sizes["FH-FH"]] * 2
        ap, si = _factor(rng, pop["cv_ap"]), _factor(rng, pop["cv_si"])
    elif subject["anatomy"] == "chest":
        pop = CHEST_POPULATION
        w, h = _factor(rng, pop["cv_width"]), _factor(rng, pop["cv_height"])
        levels, scales = [0.0, 1.0], [w, w]
        ap, si = _factor(rng, pop["cv_ap"]), h
        targets = {"lung_width": w * sizes["lung_width"], "lung_height": h * sizes["lung_height"]}
    else:
        raise DeformError(f"unknown anatomy {subject['anatomy']!r}; choose 'pelvis' or 'chest'")
    return DeformParameters(lr_levels=[float(x) for x in levels], lr_scales=[float(x) for x in scales],
                            ap_scale=float(ap), si_scale=float(si), targets=targets, **common)


def _lung_points(volume: Volume) -> np.ndarray:
    from phantoms.totalseg import ClassMapError, task_structures

    if volume.labels is None:
        raise DeformError(f"{volume.name}: a chest deformation needs a label map with the lungs")
    try:
        names = set(task_structures(["lung"], volume.label_names)["lung"])
    except ClassMapError as e:
        raise DeformError(f"{volume.name}: {e}") from None
    values = [v for v, n in volume.label_names.items() if n in names]
    return volume.world_from_ijk.apply(np.argwhere(np.isin(volume.labels, values)).astype(np.float64))


# --- the transform ------------------------------------------------------------------------------------


class Deformation:
    """The transform of a :class:`DeformParameters`: ``forward`` (landmarks) and ``inverse`` (resampling)."""

    def __init__(self, params: DeformParameters):
        self.params = params
        self.R = np.asarray(params.axes, dtype=np.float64)
        self.c = np.asarray(params.center, dtype=np.float64)
        self._u = self._u_inv = None
        if params.field_rms_mm > 0:
            self._grid_lo = np.asarray(params.field_box[0], dtype=np.float64)
            v = self._velocity()
            self._u = _exponential(v, params.field_spacing_mm)
            self._u_inv = _exponential(-v, params.field_spacing_mm)

    # global part in the anatomy frame
    def _lr(self, z):
        (z0, z1), (s0, s1) = self.params.lr_levels, self.params.lr_scales
        t = np.clip((z - z0) / (z1 - z0), 0.0, 1.0)
        return s0 + (s1 - s0) * t * t * (3 - 2 * t)

    def _global(self, p):
        q = (p - self.c) @ self.R
        q = np.stack([q[..., 0] * self._lr(q[..., 2]), q[..., 1] * self.params.ap_scale,
                      q[..., 2] * self.params.si_scale], axis=-1)
        return self.c + q @ self.R.T

    def _global_inv(self, p):
        q = (p - self.c) @ self.R
        z = q[..., 2] / self.params.si_scale
        q = np.stack([q[..., 0] / self._lr(z), q[..., 1] / self.params.ap_scale, z], axis=-1)
        return self.c + q @ self.R.T

    # local part: the displacement fields of exp(v) and exp(-v) on the coarse grid
    def _velocity(self) -> np.ndarray:
        from scipy import ndimage

        p = self.params
        lo, hi = np.asarray(p.field_box, dtype=np.float64)
        shape = tuple(int(n) for n in np.ceil((hi - lo) / p.field_spacing_mm).astype(int) + 1)
        noise = np.random.default_rng(p.field_seed).standard_normal((3, *shape))
        sigma = p.field_sigma_mm / p.field_spacing_mm
        v = np.stack([ndimage.gaussian_filter(noise[i], sigma, mode="reflect") for i in range(3)])
        rms = np.sqrt(np.mean(np.sum(v * v, axis=0)))
        return v * (p.field_rms_mm / rms)

    def _sample(self, field, p):
        from scipy import ndimage

        g = (np.asarray(p, dtype=np.float64) - self._grid_lo) / self.params.field_spacing_mm
        flat = g.reshape(-1, 3).T
        return np.stack([ndimage.map_coordinates(field[i], flat, order=1, mode="nearest") for i in range(3)],
                        axis=-1).reshape(np.shape(p))

    def forward(self, points) -> np.ndarray:
        """World points of the source -> world points of the deformed subject (landmarks)."""
        p = np.asarray(points, dtype=np.float64)
        if self._u is not None:
            p = p + self._sample(self._u, p)
        return self._global(p)

    def inverse(self, points) -> np.ndarray:
        """World points of the deformed subject -> where they come from in the source (resampling)."""
        p = self._global_inv(np.asarray(points, dtype=np.float64))
        if self._u_inv is not None:
            p = p + self._sample(self._u_inv, p)
        return p

    def jacobian_determinant(self, points, h: float = 0.5) -> np.ndarray:
        """``det(dT/dx)`` at world points (central differences, step ``h`` mm)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        J = np.empty((len(p), 3, 3))
        for a in range(3):
            e = np.zeros(3)
            e[a] = h
            J[:, :, a] = (self.forward(p + e) - self.forward(p - e)) / (2 * h)
        return np.linalg.det(J)


def _exponential(v: np.ndarray, spacing: float) -> np.ndarray:
    """Displacement (mm) of ``exp(v)`` on the grid of ``v`` (3, X, Y, Z): scaling and squaring."""
    from scipy import ndimage

    u = v / 2.0**_SQUARINGS
    idx = np.indices(v.shape[1:], dtype=np.float64)
    for _ in range(_SQUARINGS):
        at = idx + u / spacing  # grid coordinates of x + u(x)
        u = u + np.stack([ndimage.map_coordinates(u[i], at, order=1, mode="nearest") for i in range(3)])
    return u


# --- applying it --------------------------------------------------------------------------------------


def deform(volume: Volume, params: DeformParameters, landmarks=None, slab: int | None = None):
    """``(deformed volume, deformed landmarks)``: HU trilinear, labels nearest, landmarks by the same transform.

    The output keeps the input's voxel size and orientation and covers the
    deformed subject (so a larger pelvis is not cut); voxels that come from
    outside the input are air (-1000 HU) and unlabelled. ``landmarks``:
    ``{name: [x, y, z]}`` world mm (or None). Works in slabs of ``slab``
    slices along the last axis (default: about 2 million voxels a slab) to keep
    memory small.
    """
    from scipy import ndimage

    T = Deformation(params)
    A = volume.world_from_ijk
    ijk_from_world = A.inv()
    n = np.asarray(volume.shape)
    # output grid: the input's lattice, extended to the deformed box (sampled on the box's faces)
    t = np.linspace(0.0, 1.0, 9)
    face = np.stack(np.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)
    face = face[np.any((face == 0) | (face == 1), axis=1)]
    box = -0.5 + face * n  # voxel boundaries, index space
    moved = ijk_from_world.apply(T.forward(A.apply(box)))
    lo = np.ceil(moved.min(0) + 0.5 - 1e-6).astype(int)
    hi = np.floor(moved.max(0) - 0.5 + 1e-6).astype(int)
    shape = tuple(int(x) for x in hi - lo + 1)
    slab = slab or max(1, 2_000_000 // (shape[0] * shape[1]))
    out_from_in = Transform.from_rt(np.eye(3), lo.astype(np.float64))
    world_from_out = A @ out_from_in
    hu = np.empty(shape, dtype=np.float32)
    labels = None if volume.labels is None else np.empty(shape, dtype=np.int32)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for k0 in range(0, shape[2], slab):
        kk = np.arange(k0, min(k0 + slab, shape[2]))
        grid = np.stack([np.broadcast_to(ii[..., None], (*ii.shape, len(kk))),
                         np.broadcast_to(jj[..., None], (*jj.shape, len(kk))),
                         np.broadcast_to(kk, (*ii.shape, len(kk)))], axis=-1).astype(np.float64)
        src = ijk_from_world.apply(T.inverse(world_from_out.apply(grid)))
        near = np.rint(src)
        src = np.where(np.abs(src - near) < 1e-6, near, src)  # round-off of exact lattice points (the identity)
        flat = src.reshape(-1, 3).T
        outside = np.any((flat < -0.5) | (flat > (n - 0.5)[:, None]), axis=0).reshape(src.shape[:-1])
        values = ndimage.map_coordinates(volume.hu, flat, order=1, mode="nearest").reshape(src.shape[:-1])
        hu[..., k0:k0 + len(kk)] = np.where(outside, -1000.0, values)
        if labels is not None:
            lab = ndimage.map_coordinates(volume.labels, flat, order=0, mode="nearest").reshape(src.shape[:-1])
            labels[..., k0:k0 + len(kk)] = np.where(outside, 0, lab)
    out = Volume(hu, world_from_out, labels=labels, label_names=volume.label_names, name=volume.name)
    moved_lm = None
    if landmarks is not None:
        moved_lm = {k: T.forward(np.asarray(v, dtype=np.float64)) for k, v in landmarks.items()}
    return out, moved_lm

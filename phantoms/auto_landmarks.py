"""Automatic hip landmarks: SyntheX's 14 landmarks from hemipelvis and femur label maps.

:func:`hip_landmarks` takes a volume whose label map holds the two hip bones
and the two femora (TotalSegmentator's ``hip_left``/``femur_right``/...,
synthex's ``hemipelvis_left``/..., any names :func:`phantoms.totalseg.task_structures`
maps) and returns, for each of the 14 DeepFluoro landmarks, either a world
point (RAS mm) or the reason it is missing. Nothing is guessed: a landmark
whose anatomy the CT does not cover (its bone is cut by the CT's field of
view where the definition looks) is reported missing. Landmarks given by the
user override computed ones.

Anatomical frame (:func:`pelvis_frame`): left/right come from the label
names (``*_left`` is the patient's left), anterior and superior from the
CT's RAS affine; both are checked against the anatomy (the right hip bone
lies at larger world x, the hip bones above the femora, the femoral heads
anterior of the sacrum). Once both ASIS and both SPS are found, the anterior
pelvic plane (ASIS-l, ASIS-r, mid-SPS; :func:`anterior_pelvic_plane_frame`)
replaces the scanner's axes for ASIS, GSN, IOF and MOF, so a pelvis tilted on
the table gives the same anatomical points.

Geometric definitions (short forms in :data:`DEFINITIONS`):

* ``FH``: centre of a sphere fitted to the femoral head's surface
  (:func:`phantoms.landmarks.fit_femoral_head`).
* ``ASIS``: apex of the anterior superior iliac spine: the most anterior
  point of the hip bone's surface near a seed (the surface point above the
  femoral head centre and lateral of it farthest along 20 degrees above
  anterior); the centroid of the surface within 2 mm of that extreme, moved
  onto the sub-voxel surface along anterior.
* ``GSN``: deepest point of the greater sciatic notch: the hip bone is
  projected along the left-right axis (a lateral view); the notch is the
  deepest concavity of that silhouette behind the femoral head (the region
  between the silhouette and its convex hull), and GSN its bottom point
  farthest from the hull edge that closes it (the line from the posterior
  inferior iliac spine to the ischial spine), at the middle of the bone's
  thickness.
* ``IOF`` / ``MOF``: inferior / medial extremes of the obturator foramen:
  the hip bone below the acetabulum is projected along the direction that
  shows the foramen as the largest enclosed hole (the foramen's axis); IOF and
  MOF are the rim points of that hole farthest inferior and farthest medial
  (anterior-pelvic-plane axes), at the middle of the rim's thickness.
* ``SPS`` / ``IPS``: superior / inferior ends of the pubic symphysis's
  surface: rays along the left-right axis find each hip bone's medial surface;
  the symphyseal faces are where the two are closest; their principal axis
  runs from IPS to SPS, and each end is where the medial profile along that
  axis stops being flat (a flat segment joined to a circular arc, fitted),
  averaged over the two congruent faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from phantoms.landmarks import HIP_LANDMARKS, LandmarkError
from phantoms.totalseg import task_structures
from projectors.geometry import Transform
from projectors.volume import Volume

DEFINITIONS: dict[str, str] = {
    "FH": "centre of a sphere fitted to the femoral head's surface",
    "ASIS": "apex of the anterior superior iliac spine: the most anterior point (anterior pelvic plane) of the "
    "iliac spine above and lateral of the femoral head",
    "GSN": "deepest point of the greater sciatic notch in a lateral projection of the hip bone, measured from the "
    "convex-hull edge that closes the notch, at mid-thickness of the bone",
    "IOF": "most inferior point of the obturator foramen's rim (seen along the foramen's axis), mid-thickness",
    "MOF": "most medial point of the obturator foramen's rim (seen along the foramen's axis), mid-thickness",
    "SPS": "superior end of the pubic symphysis's surface (the face of the pubis across the joint from the other), "
    "where the medial profile stops being flat",
    "IPS": "inferior end of the pubic symphysis's surface, where the medial profile stops being flat",
}

_SIDES = {"l": "left", "r": "right"}
_BONES = ("hemipelvis_left", "hemipelvis_right", "femur_left", "femur_right")


@dataclass(frozen=True)
class LandmarkResult:
    """Landmarks found (world RAS mm, DeepFluoro names ``FH-l`` ...), those missing with the reason, and how."""

    points: dict[str, np.ndarray]
    missing: dict[str, str]
    source: dict[str, str]  # landmark -> "computed" | "given"
    world_from_pelvis: Transform  # x: patient right, y: anterior, z: superior; origin mid-FH (or mid-hip bones)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """A JSON-ready record (points as lists, the frame as a 4x4 matrix)."""
        return {
            "points": {k: [float(x) for x in v] for k, v in self.points.items()},
            "missing": dict(self.missing),
            "source": dict(self.source),
            "world_from_pelvis": self.world_from_pelvis.matrix.tolist(),
            "notes": list(self.notes),
        }


# --- bones: a cropped mask with world coordinates ---------------------------------------------


@dataclass
class _Bone:
    name: str
    mask: np.ndarray  # bool, cropped to the bone's box (+ margin)
    lo: np.ndarray  # index of the crop's first voxel in the volume
    world_from_ijk: Transform  # of the crop
    cut: np.ndarray  # world points of the bone's voxels on the volume's boundary (cut by the field of view)
    _cache: dict = field(default_factory=dict)

    @classmethod
    def from_volume(cls, volume: Volume, name: str, structures: list[str], margin: int = 3) -> "_Bone":
        values = [v for v, n in volume.label_names.items() if n in set(structures)]
        full = np.isin(volume.labels, values)
        idx = np.argwhere(full)
        if len(idx) == 0:
            raise LandmarkError(f"{volume.name}: the label map has no voxels of {name} ({', '.join(structures)})")
        shape = np.asarray(full.shape)
        lo = np.maximum(idx.min(0) - margin, 0)
        hi = np.minimum(idx.max(0) + margin + 1, shape)
        mask = full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].copy()
        border = (idx == 0) | (idx == shape - 1)
        cut = volume.world_from_ijk.apply(idx[border.any(1)].astype(np.float64))
        shift = Transform.from_rt(translation=lo.astype(np.float64))
        return cls(name, mask, lo, volume.world_from_ijk @ shift, cut)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.world_from_ijk.R, axis=0)

    @property
    def voxel(self) -> float:
        return float(self.spacing.max())

    def points(self) -> np.ndarray:
        if "points" not in self._cache:
            self._cache["points"] = self.world_from_ijk.apply(np.argwhere(self.mask).astype(np.float64))
        return self._cache["points"]

    def surface(self) -> np.ndarray:
        if "surface" not in self._cache:
            from scipy import ndimage

            inner = ndimage.binary_erosion(self.mask, structure=ndimage.generate_binary_structure(3, 1))
            self._cache["surface"] = self.world_from_ijk.apply(np.argwhere(self.mask & ~inner).astype(np.float64))
        return self._cache["surface"]

    def tree(self):
        if "tree" not in self._cache:
            from scipy.spatial import cKDTree

            self._cache["tree"] = cKDTree(self.points())
        return self._cache["tree"]

    def occupancy(self, points) -> np.ndarray:
        """The mask, lightly smoothed (Gaussian, 0.5 voxel) and interpolated trilinearly at world points."""
        from scipy import ndimage

        if "smooth" not in self._cache:
            self._cache["smooth"] = ndimage.gaussian_filter(self.mask.astype(np.float32), 0.5, mode="constant")
        ijk = self.world_from_ijk.inv().apply(np.asarray(points, dtype=np.float64))
        return ndimage.map_coordinates(self._cache["smooth"], ijk.reshape(-1, 3).T, order=1, mode="constant").reshape(
            np.shape(points)[:-1]
        )

    def surface_along(self, point, direction, span: float) -> np.ndarray:
        """Where the bone's surface (smoothed mask = 0.5) crosses the line ``point + t * direction``
        last, going along ``direction`` from ``point - span`` to ``point + span`` (sub-voxel)."""
        u = np.asarray(direction, dtype=np.float64)
        u = u / np.linalg.norm(u)
        t = np.arange(-span, span, self.voxel / 8.0)
        occ = self.occupancy(point + t[:, None] * u)
        inside = occ >= 0.5
        exits = np.flatnonzero(inside[:-1] & ~inside[1:])
        if len(exits) == 0:
            return np.asarray(point, dtype=np.float64)
        k = exits[-1]
        f = (occ[k] - 0.5) / max(occ[k] - occ[k + 1], 1e-9)
        return point + (t[k] + f * (t[k + 1] - t[k])) * u

    def cut_near(self, point, radius: float) -> np.ndarray:
        """The bone's voxels cut by the CT's field of view within ``radius`` mm of ``point`` (world, (N, 3))."""
        if len(self.cut) == 0:
            return self.cut
        return self.cut[np.linalg.norm(self.cut - np.asarray(point), axis=1) < radius]


def _where(cut: np.ndarray) -> str:
    """Words for where the field of view cuts a bone: the world axis along which the cut is thinnest."""
    if len(cut) == 0:
        return "the edge of the CT"
    extent = cut.max(0) - cut.min(0)
    k = int(np.argmin(extent))
    return f"{'xyz'[k]} = {float(np.median(cut[:, k])):.0f} mm"


class _Missing(Exception):
    """A landmark the CT cannot give: the message is the reason."""


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# --- the anatomical frame -----------------------------------------------------------------------


def pelvis_frame(bones: dict, heads: dict[str, np.ndarray], sacrum: np.ndarray | None = None):
    """``(world_from_pelvis, notes)``: x patient right, y anterior, z superior, from the bones and the RAS affine.

    Left/right come from the hip bones' names and are checked against the
    affine (the right hip bone lies at larger world x); anterior/superior are
    the world's, made orthogonal to left-right, and checked against the
    anatomy: the hip bones' centre above the femora's, the femoral heads (or
    the hip bones' centre) anterior of the sacrum's centre when it is labelled. The origin is midway
    between the femoral head centres ``heads`` (else between the hip bones'
    centroids).
    """
    cl = bones["hemipelvis_left"].points().mean(0)
    cr = bones["hemipelvis_right"].points().mean(0)
    x = cr - cl
    if x[0] <= 0.5 * np.linalg.norm(x):
        raise LandmarkError(
            f"left and right contradict the CT's RAS affine: the left hip bone's centre {np.round(cl, 0)} is not at "
            f"smaller world x than the right one's {np.round(cr, 0)} (patient right is +x); are the label names or "
            "the CT's orientation wrong?"
        )
    x = _unit(x)
    y = _unit(np.array([0.0, 1.0, 0.0]) - x[1] * x)
    z = np.cross(x, y)
    origin = 0.5 * (heads["FH-l"] + heads["FH-r"]) if {"FH-l", "FH-r"} <= set(heads) else 0.5 * (cl + cr)
    femora = [bones[k].points().mean(0) for k in ("femur_left", "femur_right") if k in bones]
    notes = []
    if femora:
        if (0.5 * (cl + cr) - np.mean(femora, axis=0)) @ z <= 0:
            raise LandmarkError(
                "superior contradicts the anatomy: the hip bones' centre lies below the femora's in the CT's RAS "
                "frame (+z superior); is the CT's orientation wrong (slices stacked the wrong way)?"
            )
    else:
        notes.append("no femur labels: superior is the CT's +z without an anatomical check")
    if sacrum is not None:
        front = np.mean(list(heads.values()), axis=0) if heads else 0.5 * (cl + cr)
        if (front - sacrum) @ y <= 0:
            raise LandmarkError(
                "anterior contradicts the anatomy: the hip joints lie behind the sacrum in the CT's RAS frame "
                "(+y anterior); is the CT's orientation wrong (e.g. LPS read as RAS)?"
            )
    else:
        notes.append("no sacrum label: anterior is the CT's +y without an anatomical check")
    return Transform.from_rt(np.stack([x, y, z], axis=1), origin), notes


def anterior_pelvic_plane_frame(points: dict[str, np.ndarray], origin, anterior) -> Transform:
    """``world_from_pelvis`` of the anterior pelvic plane (both ASIS and the middle of the SPS):
    x from ASIS-l to ASIS-r, y the plane's normal towards ``anterior``, z = x cross y."""
    x = _unit(points["ASIS-r"] - points["ASIS-l"])
    mid = 0.5 * (points["SPS-l"] + points["SPS-r"])
    y = np.cross(x, mid - points["ASIS-l"])
    y = _unit(y - (y @ x) * x)
    if y @ anterior < 0:
        y = -y
    return Transform.from_rt(np.stack([x, y, np.cross(x, y)], axis=1), origin)


# --- femoral heads ------------------------------------------------------------------------------


def _femoral_head(bone, medial, up) -> np.ndarray:
    from phantoms.landmarks import fit_femoral_head

    if bone.mask.sum() < 50:
        raise _Missing(f"{bone.name} has {int(bone.mask.sum())} voxels; too few for a femoral head")
    try:
        c, r = fit_femoral_head(bone.mask, bone.world_from_ijk, medial=medial, up=up)
    except LandmarkError as e:
        raise _Missing(f"{bone.name}: {e}") from None
    cut = bone.cut_near(c, 0.25 * r)  # less than about 60 % of the head's height covered
    if len(cut):
        raise _Missing(f"the femoral head of {bone.name} is cut through by the CT's field of view ({_where(cut)})")
    return c


# --- ASIS ---------------------------------------------------------------------------------------


def _asis(bone, frame: Transform, head, side: float, seed=None, search: float = 15.0):
    """Most anterior surface point (frame's +y) of the iliac spine found near ``seed``.

    The seed (when not given): the hip bone's surface point above the femoral
    head centre (+10 mm) and lateral of 0.8 x its offset, farthest along the
    direction 20 degrees above anterior (the ASIS beats the AIIS and the crest
    along that direction for pelvic tilts of about -40 to +35 degrees).
    """
    S = bone.surface()
    q = frame.inv().apply(S)
    h = frame.inv().apply(head)
    if seed is None:
        region = (q[:, 2] > h[2] + 10.0) & (side * q[:, 0] > 0.8 * side * h[0])
        if not region.any():
            raise _Missing(f"{bone.name} has no bone above its femoral head: the CT ends below the iliac crest")
        u = np.array([0.0, np.cos(np.deg2rad(20.0)), np.sin(np.deg2rad(20.0))])
        seed = S[region][np.argmax(q[region] @ u)]
    near = np.linalg.norm(S - seed, axis=1) < search
    anterior = frame.R[:, 1]
    p = _apex(S[near], anterior, window=max(2.0, 0.75 * bone.voxel))
    p = bone.surface_along(p, anterior, 3.0 * bone.voxel)
    cut = bone.cut_near(p, 2.0 * bone.voxel + 3.0)
    if len(cut):
        raise _Missing(
            f"the anterior superior iliac spine of {bone.name} is cut by the CT's field of view ({_where(cut)})"
        )
    return p, seed


# --- silhouettes (projections of a bone along one direction) ---------------------------------------


@dataclass
class _Silhouette:
    image: np.ndarray  # bool, the projected bone (closed over one-voxel gaps)
    lo: np.ndarray  # plane coordinates (mm) of pixel (0, 0)
    pixel: float
    e1: np.ndarray
    e2: np.ndarray  # world directions of the image axes (both orthogonal to the projection direction)
    coords: np.ndarray  # (N, 2) plane coordinates of the projected points

    @classmethod
    def of(cls, points: np.ndarray, e1, e2, pixel: float) -> "_Silhouette":
        from scipy import ndimage

        c = np.stack([points @ e1, points @ e2], axis=1)
        lo = c.min(0) - 6 * pixel
        ij = np.round((c - lo) / pixel).astype(int)
        img = np.zeros(ij.max(0) + 7, dtype=bool)
        img[ij[:, 0], ij[:, 1]] = True
        disk = np.add.outer(np.arange(-2, 3) ** 2, np.arange(-2, 3) ** 2) <= 4
        img |= ndimage.binary_closing(img, structure=disk)
        return cls(img, lo, pixel, np.asarray(e1), np.asarray(e2), c)

    def xy(self, cells) -> np.ndarray:
        return self.lo + np.asarray(cells, dtype=np.float64) * self.pixel

    def cells(self, xy) -> np.ndarray:
        return np.round((np.asarray(xy) - self.lo) / self.pixel).astype(int)

    def mark(self, xy) -> np.ndarray:
        """A mask of the pixels that the plane points ``xy`` (N, 2) fall in (those inside the image)."""
        m = np.zeros_like(self.image)
        ij = self.cells(xy)
        ok = np.all((ij >= 0) & (ij < m.shape), axis=1)
        m[ij[ok, 0], ij[ok, 1]] = True
        return m


def _vertex(xy: np.ndarray, direction, window: float) -> np.ndarray:
    """The extreme of a boundary curve (points ``xy``, (N, 2)) along ``direction``, to sub-pixel accuracy:
    the vertex of a parabola fitted to the curve's points within ``window`` mm of the extreme."""
    d = _unit(direction)
    perp = np.array([-d[1], d[0]])
    s, t = xy @ d, xy @ perp
    k = int(np.argmax(s))
    local = (s > s[k] - window) & (np.abs(t - t[k]) < 4.0 * window)
    if local.sum() >= 5:
        a, b, c = np.linalg.lstsq(np.stack([t[local] ** 2, t[local], np.ones(local.sum())], 1), s[local], rcond=None)[0]
        if a < 0:
            t0 = -b / (2 * a)
            if abs(t0 - t[k]) < 2.0 * window:
                return (c - b * b / (4 * a)) * d + t0 * perp
    return xy[k]


def _apex(points: np.ndarray, direction, window: float) -> np.ndarray:
    """The apex of a round knob along ``direction``: the centroid of the surface points within ``window`` mm of
    the extreme (on a round apex they surround it symmetrically), to be moved onto the surface along
    ``direction`` by the caller. (The extreme voxel alone is ill-conditioned on a round apex: 0.5 mm of voxel
    noise in height moves a 6 mm-radius apex by 2.5 mm.)"""
    s = points @ _unit(direction)
    return points[s > s.max() - window].mean(0)


# --- greater sciatic notch --------------------------------------------------------------------------


def _gsn(bone, frame: Transform, head) -> np.ndarray:
    """Deepest point of the greater sciatic notch in the lateral projection (see :data:`DEFINITIONS`)."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull

    P = bone.points()
    q = frame.inv().apply(P)
    h = frame.inv().apply(head)
    sil = _Silhouette.of(q, np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]), 0.5 * bone.voxel)
    img = ndimage.binary_fill_holes(sil.image)
    cells = np.argwhere(img)
    hull = ConvexHull(cells)
    eq = hull.equations  # n . x + c <= 0 inside
    grid = np.indices(img.shape).reshape(2, -1).T
    inside = np.all(grid @ eq[:, :2].T + eq[:, 2] <= 1e-9, axis=1).reshape(img.shape)
    pockets, n = ndimage.label(inside & ~img)
    best = None
    for k in range(1, n + 1):
        pocket = np.argwhere(pockets == k)
        if len(pocket) * sil.pixel**2 < 50.0:
            continue
        dist = -(pocket @ eq[:, :2].T + eq[:, 2])  # depth below each hull edge
        lid = int(np.argmin(np.median(dist, axis=0)))  # the edge that closes the pocket
        j = int(np.argmax(dist[:, lid]))
        deepest = sil.xy(pocket[j])
        if deepest[0] >= h[1]:  # the greater sciatic notch lies behind the femoral head
            continue
        depth = dist[j, lid] * sil.pixel
        if best is None or depth > best[0]:
            best = (depth, k, lid)
    if best is None or best[0] < 10.0:
        raise _Missing(f"no greater sciatic notch: the lateral outline of {bone.name} has no concavity behind the "
                       "femoral head deeper than 10 mm")
    depth, k, lid = best
    pocket = pockets == k
    rim = np.argwhere(pocket & ndimage.binary_dilation(img, iterations=1))
    yz = _vertex(sil.xy(rim), -eq[lid, :2], window=4.0)
    if len(bone.cut):
        qc = frame.inv().apply(bone.cut)[:, 1:]
        gap = float(np.min(np.linalg.norm(qc - yz, axis=1)))
        if gap < max(15.0, 0.5 * depth):
            raise _Missing(
                f"greater sciatic notch of {bone.name} not covered: the CT's field of view cuts the bone {gap:.0f} mm "
                f"from the notch's deepest point ({_where(bone.cut)})"
            )
    near = np.linalg.norm(sil.coords - yz, axis=1) < 1.5 * bone.voxel
    x = float(np.median(q[near, 0])) if near.any() else float(np.median(q[:, 0]))
    return frame.apply(np.array([x, yz[0], yz[1]]))


# --- obturator foramen -----------------------------------------------------------------------------


def _largest_hole(q, n, pixel):
    from scipy import ndimage

    e1 = _unit(np.array([0.0, 0.0, 1.0]) - n[2] * n)
    e2 = np.cross(n, e1)
    sil = _Silhouette.of(q, e1, e2, pixel)
    hole = ndimage.binary_fill_holes(sil.image) & ~sil.image
    lab, k = ndimage.label(hole)
    if k == 0:
        return 0.0, None, sil
    sizes = ndimage.sum(hole, lab, range(1, k + 1))
    j = int(np.argmax(sizes))
    return float(sizes[j]) * pixel**2, lab == j + 1, sil


def _obturator(bone, frame: Transform, head, side: float) -> dict[str, np.ndarray]:
    """IOF and MOF (see :data:`DEFINITIONS`) in ``frame`` (x right, y anterior, z superior)."""
    from scipy import ndimage

    from projectors.geometry import rotation_y, rotation_z

    q_all = frame.inv().apply(bone.surface())  # a closed surface projects onto the solid's silhouette
    h = frame.inv().apply(head)
    keep = q_all[:, 2] < h[2] + 5.0  # below the acetabulum's roof
    q = q_all[keep]
    if len(q) < 100:
        raise _Missing(f"{bone.name} has no bone below its acetabulum")
    pixel = 0.5 * bone.voxel

    def direction(yaw, pitch):  # lateral axis turned towards anterior (yaw) and tilted (pitch)
        return rotation_z(side * yaw) @ rotation_y(pitch) @ np.array([side, 0.0, 0.0])

    best = (0.0, None, None, None, (0, 0))
    for yaw in range(-60, 61, 20):
        for pitch in range(-40, 41, 20):
            n = direction(yaw, pitch)
            area, hole, sil = _largest_hole(q, n, pixel)
            if area > best[0]:
                best = (area, n, hole, sil, (yaw, pitch))
    y0, p0 = best[4]
    for yaw in range(y0 - 10, y0 + 11, 5):
        for pitch in range(p0 - 10, p0 + 11, 5):
            n = direction(yaw, pitch)
            area, hole, sil = _largest_hole(q, n, pixel)
            if area > best[0]:
                best = (area, n, hole, sil, (yaw, pitch))
    area, n, hole, sil, _ = best
    cut = frame.inv().apply(bone.cut) if len(bone.cut) else np.zeros((0, 3))
    low_cut = cut[cut[:, 2] < h[2] + 5.0] if len(cut) else cut
    if area < 100.0:
        if len(low_cut):
            raise _Missing(
                f"obturator foramen of {bone.name} not closed: the CT ends at {_where(bone.cut)} above the inferior "
                "pubic ramus"
            )
        raise _Missing(f"no obturator foramen: {bone.name} has no enclosed hole below the acetabulum")
    if len(low_cut):
        c2 = np.stack([low_cut @ sil.e1, low_cut @ sil.e2], 1)
        if (ndimage.binary_dilation(hole, iterations=3) & sil.mark(c2)).any():
            raise _Missing(
                f"obturator foramen of {bone.name} not closed: the CT ends at {_where(bone.cut)} across the foramen"
            )
    rim = np.argwhere(hole & ~ndimage.binary_erosion(hole))
    rim_xy = sil.xy(rim)
    out = {}
    for name, d in (("IOF", np.array([0.0, 0.0, -1.0])), ("MOF", np.array([-side, 0.0, 0.0]))):
        d2 = np.array([d @ sil.e1, d @ sil.e2])
        uv = _vertex(rim_xy, d2, window=5.0)
        near = np.linalg.norm(sil.coords - uv, axis=1) < 2.5 * pixel
        depth = float(np.mean(q[near] @ n)) if near.any() else float(np.mean(q @ n))
        out[name] = frame.apply(uv[0] * sil.e1 + uv[1] * sil.e2 + depth * n)
    return out


# --- pubic symphysis --------------------------------------------------------------------------------


def _fit_end(s: np.ndarray, g: np.ndarray, g0: float, cap: float = 5.0) -> float:
    """Where a medial profile ``g(s)`` (s increasing from the face's middle outwards) stops being flat:
    least-squares fit of a flat segment at ``g0`` joined to a circular arc of radius R (2-20 mm)."""
    gg = np.minimum(g, g0 + cap)
    R = np.arange(2.0, 20.01, 0.5)[:, None, None]
    s1 = np.arange(s.min(), s.max(), 0.25)[None, :, None]
    u = s[None, None, :] - s1
    f = np.where(u <= 0, g0, np.where(u < R, g0 + R - np.sqrt(np.maximum(R * R - u * u, 0.0)), g0 + cap))
    err = np.sum((np.minimum(f, g0 + cap) - gg) ** 2, axis=2)
    return float(s1[0, np.unravel_index(np.argmin(err), err.shape)[1], 0])


def _first_hit(bone, starts: np.ndarray, direction, length: float, step: float = 0.25) -> np.ndarray:
    """Distance (mm, sub-voxel) from each start point (..., 3) along ``direction`` to where the ray first
    enters the bone (smoothed mask >= 0.5); 0 when it starts inside, inf when it never enters."""
    t = np.arange(0.0, length, step)
    occ = bone.occupancy(starts[..., None, :] + t[:, None] * np.asarray(direction, dtype=np.float64))
    inside = occ >= 0.5
    has = inside.any(-1)
    k = np.argmax(inside, axis=-1)
    o0 = np.take_along_axis(occ, np.maximum(k - 1, 0)[..., None], -1)[..., 0]
    o1 = np.take_along_axis(occ, k[..., None], -1)[..., 0]
    f = np.clip((0.5 - o0) / np.maximum(o1 - o0, 1e-6), 0.0, 1.0)
    g = np.where(has, t[np.maximum(k - 1, 0)] + f * step, np.inf)
    return np.where(has & (k == 0), 0.0, g)


def _symphysis(bones, frame: Transform, heads: dict) -> tuple[dict, dict]:
    """SPS and IPS of both sides (see :data:`DEFINITIONS`): ``(points, missing reasons)``.

    The joint: rays along the left-right axis, from 20 mm right of the
    midline leftwards into the left hip bone and vice versa, over the region
    in front of and below the hip joints, give each bone's medial surface; the
    symphyseal faces are where the two surfaces are closest (within a voxel,
    at least 1.5 mm, of the joint's width). Their principal axis orients the symphysis;
    each end is fitted on the medial profile along it (:func:`_fit_end`).
    """
    from scipy.spatial import cKDTree

    L, R = bones["hemipelvis_left"], bones["hemipelvis_right"]
    names = [f"{k}-{s}" for k in ("SPS", "IPS") for s in "lr"]
    x, y, z = frame.R.T
    hl = frame.inv().apply(heads["FH-l"])
    hr = frame.inv().apply(heads["FH-r"])
    top = max(hl[2], hr[2])
    cut = np.vstack([L.cut, R.cut])
    # medial surfaces on a 1.5 mm grid of (anterior, superior) positions in front of and below the hip joints
    ys, zs = np.arange(min(hl[1], hr[1]), min(hl[1], hr[1]) + 120.0, 1.5), np.arange(top - 130.0, top + 1.0, 1.5)
    Y, Z = np.meshgrid(ys, zs, indexing="ij")
    plane = frame.apply(np.stack([np.zeros_like(Y), Y, Z], -1))
    xl = 20.0 - _first_hit(L, plane + 20.0 * x, -x, 60.0, step=0.5)  # frame x of the left bone's medial surface
    xr = -20.0 + _first_hit(R, plane - 20.0 * x, x, 60.0, step=0.5)
    width = xr - xl
    if not np.isfinite(width).any():
        why = "the hip bones do not meet in front of and below the hip joints (no pubic symphysis)"
        if len(cut):
            why += f"; the CT ends at {_where(cut)}"
        return {}, {k: why for k in names}
    wmin = float(np.nanmin(np.where(np.isfinite(width), width, np.nan)))
    if wmin > 15.0:
        why = f"the hip bones do not meet at a pubic symphysis (closest {wmin:.0f} mm apart)"
        if len(cut):
            why += f"; the CT ends at {_where(cut)}"
        return {}, {k: why for k in names}
    # the joint's width: the median of the 30 narrowest rays (robust to one bump of the bones' staircase surface)
    finite = np.sort(width[np.isfinite(width)])
    wref = float(np.median(finite[:30]))
    face = np.isfinite(width) & (width < wref + max(1.5, max(L.voxel, R.voxel)))
    from scipy import ndimage

    lab, _ = ndimage.label(face)
    k0 = lab[np.unravel_index(np.argmin(np.where(face, width, np.inf)), width.shape)]
    face = lab == k0  # the connected face around the narrowest point
    zl = frame.apply(np.stack([xl[face], Y[face], Z[face]], -1))
    zr = frame.apply(np.stack([xr[face], Y[face], Z[face]], -1))
    both = np.vstack([zl, zr])
    if len(cut) and np.min(cKDTree(cut).query(both)[0]) < 2.0 * max(L.voxel, R.voxel):
        why = (f"the pubic symphysis is cut by the CT's field of view ({_where(cut)}): its face is not fully covered, "
               "so neither its orientation nor its ends can be measured")
        return {}, {k: why for k in names}
    c = both.mean(0)
    a = np.linalg.svd(both - c, full_matrices=False)[2][0]
    if a @ z < 0:
        a = -a
    if face.sum() < 20 or np.degrees(np.arccos(abs(a @ z))) > 50.0:
        why = "the hip bones' closest zone is not a symphysis-shaped face (too small, or not superior-inferior)"
        return {}, {k: why for k in names}
    n = _unit(x - (x @ a) * a)
    b = np.cross(n, a)
    half = 0.5 * float(np.ptp((both - c) @ a))
    ss = np.arange(-70.0, 70.0, 0.5)
    ww = np.arange(-15.0, 15.01, 1.0)
    S, W = np.meshgrid(ss, ww, indexing="ij")
    mid = c + S[..., None] * a + W[..., None] * b
    # each face's medial profile along the axis; the two faces are congruent (one joint), so each end is the
    # mean of the ends fitted on the two sides (half the voxel noise of one side's)
    profile, offset, across = {}, {}, {}
    for side, bone, sg in (("l", L, -1.0), ("r", R, 1.0)):
        g = _first_hit(bone, mid, sg * n, 25.0)
        profile[side] = g.min(1)
        across[side] = ww[np.argmin(g, axis=1)]
        offset[side] = float(np.median(profile[side][np.abs(ss) < 0.5 * half]))
    points, missing = {}, {}
    for name, sgn in (("SPS", 1.0), ("IPS", -1.0)):
        sel = sgn * ss >= 0
        s_end = float(np.mean([sgn * _fit_end(sgn * ss[sel], profile[side][sel], offset[side]) for side in "lr"]))
        for side, sg in (("l", -1.0), ("r", 1.0)):
            key = f"{name}-{side}"
            if abs(s_end) > 60.0:
                missing[key] = f"the {'superior' if name == 'SPS' else 'inferior'} end of the symphyseal face not found"
                continue
            points[key] = c + s_end * a + float(np.interp(s_end, ss, across[side])) * b + sg * offset[side] * n
    return points, missing


# --- the entry point ----------------------------------------------------------------------------------


def hip_landmarks(volume: Volume, structures: dict[str, list[str]] | None = None, given=None) -> LandmarkResult:
    """The 14 SyntheX hip landmarks of a labelled CT: computed, missing with the reason, or given.

    ``structures``: ``{class: [structure names]}`` for ``hemipelvis_left``,
    ``hemipelvis_right``, ``femur_left``, ``femur_right`` (and optionally
    ``upper_sacrum``, used to check anterior); default: the label map's names
    mapped by :func:`phantoms.totalseg.task_structures`. ``given``: landmarks
    from the user (``{name: [x, y, z]}``, world RAS mm, DeepFluoro or
    ``FH_l``-style names), which override computed ones. Raises
    :class:`~phantoms.landmarks.LandmarkError` when the CT has no label map,
    lacks a hip bone, or its orientation contradicts the anatomy.
    """
    if volume.labels is None:
        raise LandmarkError(f"{volume.name}: hip landmarks need a label map with the hip bones and femora")
    if structures is None:
        structures = task_structures([*_BONES, "upper_sacrum"], volume.label_names, required=False)
    for name in ("hemipelvis_left", "hemipelvis_right"):
        if not structures.get(name):
            raise LandmarkError(
                f"{volume.name}: hip landmarks need both hip bones; the label map has no {name} "
                f"(labels: {', '.join(sorted(volume.label_names.values())[:30]) or 'none'})"
            )
    bones = {b: _Bone.from_volume(volume, b, structures[b]) for b in _BONES if structures.get(b)}
    points: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    # femoral heads, first with world +z as superior
    for s, side in _SIDES.items():
        key = f"FH-{s}"
        if f"femur_{side}" not in bones:
            missing[key] = f"no femur_{side} in the label map"
            continue
        other = bones.get(f"hemipelvis_{'right' if s == 'l' else 'left'}")
        medial = other.points().mean(0) - bones[f"hemipelvis_{side}"].points().mean(0)
        try:
            points[key] = _femoral_head(bones[f"femur_{side}"], medial, None)
        except _Missing as e:
            missing[key] = str(e)
    sacrum = None
    if structures.get("upper_sacrum"):
        values = [v for v, n in volume.label_names.items() if n in set(structures["upper_sacrum"])]
        idx = np.argwhere(np.isin(volume.labels, values))
        if len(idx):
            sacrum = volume.world_from_ijk.apply(idx.mean(0))
    frame, notes = pelvis_frame(bones, {k: v for k, v in points.items() if k.startswith("FH")}, sacrum)
    heads = {}
    for s, side in _SIDES.items():
        heads[s] = points.get(f"FH-{s}")
        if heads[s] is None:  # stand-in for the regions below: the acetabulum's centre estimate
            hip = bones[f"hemipelvis_{side}"].points()
            heads[s] = hip.mean(0) - 40.0 * frame.R[:, 2]
            notes.append(f"FH-{s} missing: regions are split at an estimate of the hip joint "
                         "(hip bone centroid - 40 mm)")

    def attempt(key, fn):
        try:
            points[key] = fn()
        except _Missing as e:
            missing[key] = str(e)

    seeds = {}
    for s, side in _SIDES.items():
        sg = 1.0 if s == "r" else -1.0

        def asis(s=s, side=side, sg=sg):
            p, seeds[s] = _asis(bones[f"hemipelvis_{side}"], frame, heads[s], sg)
            return p

        attempt(f"ASIS-{s}", asis)
    sym, why = _symphysis(bones, frame, {f"FH-{s}": h for s, h in heads.items()})
    points.update(sym)
    missing.update(why)
    app = frame
    if all(k in points for k in ("ASIS-l", "ASIS-r", "SPS-l", "SPS-r")):
        for _ in range(2):  # the ASIS are the most anterior points in the plane they define: iterate
            app = anterior_pelvic_plane_frame(points, frame.t, frame.R[:, 1])
            for s, side in _SIDES.items():
                points[f"ASIS-{s}"] = _asis(bones[f"hemipelvis_{side}"], app, heads[s], 1.0 if s == "r" else -1.0,
                                            seed=seeds[s])[0]
        app = anterior_pelvic_plane_frame(points, frame.t, frame.R[:, 1])
    else:
        notes.append("anterior pelvic plane not available (needs both ASIS and SPS): ASIS, IOF and MOF use the CT's "
                     "axes, so they depend on the pelvis's tilt on the table")
    for s, side in _SIDES.items():
        attempt(f"GSN-{s}", lambda s=s, side=side: _gsn(bones[f"hemipelvis_{side}"], app, heads[s]))
        try:
            points.update({f"{k}-{s}": v for k, v in _obturator(bones[f"hemipelvis_{side}"], app, heads[s],
                                                              1.0 if s == "r" else -1.0).items()})
        except _Missing as e:
            missing[f"IOF-{s}"] = missing[f"MOF-{s}"] = str(e)
    source = {k: "computed" for k in points}
    for k, v in (given or {}).items():
        key = k.replace("_", "-")
        points[key] = np.asarray(v, dtype=np.float64).reshape(3)
        source[key] = "given"
        missing.pop(key, None)
    order = [k for k in HIP_LANDMARKS if k in points] + [k for k in points if k not in HIP_LANDMARKS]
    return LandmarkResult(
        points={k: points[k] for k in order},
        missing={k: missing[k] for k in HIP_LANDMARKS if k in missing and k not in points},
        source={k: source[k] for k in order},
        world_from_pelvis=app,
        notes=tuple(notes),
    )

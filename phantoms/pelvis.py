"""A procedural adult pelvis/hip phantom with SyntheX's labels and 14 landmarks.

Two steps, as everywhere in synthex:

* :func:`sample_pelvis_parameters` draws a :class:`PelvisParameters` (plain
  numbers, JSON-serializable) from a ``numpy.random.Generator``: sex, inter-
  femoral-head and inter-ASIS distances, shape, femur pose, soft tissue, bone
  density, bowel gas.
* :func:`build_pelvis` turns those parameters into a :class:`~phantoms.landmarks.Phantom`:
  a HU volume, a label map (SyntheX's hip classes) and the 14 landmarks in
  world mm. It is deterministic; :func:`pelvis_landmarks` gives the landmarks
  alone without building the volume.

Anatomy is built from implicit shapes (:mod:`phantoms.sdf`): the iliac wing is
a thick triangle fan with tubes along the crest and borders, the acetabulum an
ellipsoid cup minus the socket, the pubis and ischium tubes around a plate
whose elliptical hole is the obturator foramen, the sacrum a curved chain of
ellipsoids, L3-L5 bodies with posterior elements, and the femora a head
sphere, neck, trochanters and a hollow shaft. Bone has a cortical shell
(thickness in mm) over trabecular interior with a smooth texture; around it
muscle, a subcutaneous fat layer, and bowel gas pockets.

World frame: patient RAS, mm, origin midway between the femoral head centres.

Landmark definitions (all analytic on the shapes):

* ``FH``: centre of the femoral head sphere.
* ``ASIS``: the anterior tip of the iliac crest tube's end cap (on the surface).
* ``SPS`` / ``IPS``: superior / inferior end of the pubic body's flat
  symphyseal face (on the surface, medial side).
* ``MOF`` / ``IOF``: the most medial / most inferior point of the obturator
  foramen's rim (the hole's ellipse at mid-thickness of the plate).
* ``GSN``: apex of the greater sciatic notch, on the surface of the notch's rim.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from phantoms import sdf
from phantoms.landmarks import HIP_CLASSES, HIP_LANDMARKS, Phantom
from projectors.records import from_record
from projectors.geometry import rotation_x, rotation_y, rotation_z
from projectors.volume import Volume


class PhantomError(ValueError):
    """Impossible phantom parameters."""


SIDES = {"l": -1.0, "r": 1.0}  # RAS: patient right is +x

#: Label values of the pelvis phantom: SyntheX's 6 hip classes and the lower sacrum
#: (S3 and below, not one of SyntheX's classes; it is bone in the image but no class).
PELVIS_LABELS: dict[int, str] = {**HIP_CLASSES, 7: "sacrum_lower"}


@dataclass(frozen=True)
class PelvisParameters:
    """Everything that defines one pelvis phantom (mm, degrees, HU). See :func:`sample_pelvis_parameters`."""

    sex: str = "male"
    femininity: float = 0.0  # 0 = typical male shape, 1 = typical female shape
    ifd: float = 160.0  # inter femoral-head-centre distance
    iad: float = 227.0  # inter-ASIS distance
    scale: float = 1.0  # other pelvic dimensions relative to an average adult
    fh_radius: float = 23.5
    asis_height: float = 68.0  # ASIS above the femoral head centres
    asis_anterior: float = 50.0  # ASIS anterior of the femoral head centres
    symphysis_height: float = 38.0
    symphysis_tilt: float = 25.0  # symphysis long axis from vertical (inferior end posterior)
    symphysis_drop: float = 18.0  # superior symphysis below the femoral head centres
    neck_shaft_angle: float = 129.0
    anteversion: float = 13.0
    neck_length: float = 48.0
    femur_pose: dict = field(default_factory=lambda: {"l": [0.0, 0.0, 0.0], "r": [0.0, 0.0, 0.0]})  # flex, abd, int. rot.
    sacral_slope: float = 40.0
    pelvic_tilt: float = 12.0
    fat_thickness: float = 18.0
    hu_cortical: float = 1300.0
    hu_trabecular: float = 260.0
    hu_muscle: float = 45.0
    hu_fat: float = -100.0
    gas: list = field(default_factory=list)  # [[x, y, z, rx, ry, rz], ...] bowel gas ellipsoids
    texture_seed: int = 0

    def __post_init__(self):
        if self.sex not in ("male", "female"):
            raise PhantomError(f"sex must be 'male' or 'female', got {self.sex!r}")
        positive = ("ifd", "iad", "scale", "fh_radius", "asis_height", "symphysis_height", "neck_length")
        for name in positive:
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise PhantomError(f"pelvis parameter {name} must be positive, got {v}")
        if not 0.0 <= self.femininity <= 1.0:
            raise PhantomError(f"femininity must lie in [0, 1], got {self.femininity}")
        if self.iad <= self.ifd:
            raise PhantomError(f"the ASIS (iad={self.iad}) must lie lateral of the femoral heads (ifd={self.ifd})")
        if not 100.0 < self.neck_shaft_angle < 160.0:
            raise PhantomError(f"neck-shaft angle must lie in (100, 160) degrees, got {self.neck_shaft_angle}")
        if self.fat_thickness < 0:
            raise PhantomError(f"fat thickness must be >= 0 mm, got {self.fat_thickness}")
        if not self.hu_cortical > self.hu_trabecular:
            raise PhantomError("cortical bone must be denser (higher HU) than trabecular bone")
        if set(self.femur_pose) != {"l", "r"} or any(len(v) != 3 for v in self.femur_pose.values()):
            raise PhantomError("femur_pose must be {'l': [flex, abd, rot], 'r': [flex, abd, rot]} in degrees")
        for g in self.gas:
            if len(g) != 6 or min(g[3:]) <= 0:
                raise PhantomError(f"each gas pocket is [x, y, z, rx, ry, rz] with positive radii, got {g}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PelvisParameters":
        return from_record(cls, d, PhantomError, "pelvis parameter")


# --- sampling ------------------------------------------------------------------

# Population model. Inter-ASIS (IAD) and inter-femoral-head-centre (IFD)
# distances follow the CT study of 200 adults in Skeletal Radiology 2010
# (doi:10.1007/s00256-009-0791-x): IAD 227 +/- 16 mm, IFD 160 +/- 8 mm, weak
# correlation (r = 0.35), both differing by sex. The sex split below keeps the
# pooled means and SDs at those values. Femoral head radius by sex, neck-shaft
# angle, anteversion and the sacral slope are typical adult values.
_SEX = {
    #            IFD mean, IAD mean, head radius mean, fat mean
    "male": (164.0, 224.0, 24.5, 15.0),
    "female": (156.0, 230.0, 21.8, 24.0),
}
_IFD_SD, _IAD_SD, _RHO = 7.0, 15.5, 0.35  # within-sex SDs; pooled SDs ~8 and ~16 mm


def sample_pelvis_parameters(rng: np.random.Generator) -> PelvisParameters:
    """Draw one adult pelvis from the population model (see module notes)."""
    sex = "female" if rng.random() < 0.5 else "male"
    ifd_m, iad_m, r_m, fat_m = _SEX[sex]
    femininity = float(np.clip(rng.normal(0.85 if sex == "female" else 0.15, 0.1), 0.0, 1.0))
    z1, z2 = rng.standard_normal(2)
    ifd = ifd_m + _IFD_SD * z1
    iad = iad_m + _IAD_SD * (_RHO * z1 + np.sqrt(1 - _RHO**2) * z2)
    scale = float(np.clip(0.5 * (ifd / 160.0 + iad / 227.0) * rng.normal(1.0, 0.03), 0.85, 1.2))
    pose = {s: [rng.normal(5.0, 6.0), rng.normal(0.0, 4.0), rng.normal(5.0, 8.0)] for s in "lr"}
    n_gas = int(rng.integers(2, 9))
    gas = []
    for _ in range(n_gas):
        u = rng.normal(size=3)
        u = u / np.linalg.norm(u) * rng.random() ** (1 / 3)
        c = np.array([0.0, 25.0, 70.0]) * scale + u * np.array([0.35 * iad, 45.0, 70.0]) * scale
        radii = rng.uniform(6.0, 22.0, size=3) * np.array([1.0, 0.8, 1.0])
        gas.append([float(x) for x in (*c, *radii)])
    return PelvisParameters(
        sex=sex,
        femininity=femininity,
        ifd=float(ifd),
        iad=float(iad),
        scale=scale,
        fh_radius=float(rng.normal(r_m, 1.2)),
        asis_height=float(0.30 * iad * rng.normal(1.0, 0.07)),
        asis_anterior=float(0.22 * iad * rng.normal(1.0, 0.08)),
        symphysis_height=float(rng.normal(40.0 - 5.0 * femininity, 3.0) * scale),
        symphysis_tilt=float(rng.normal(25.0, 6.0)),
        symphysis_drop=float(rng.normal(18.0, 5.0)),
        neck_shaft_angle=float(rng.normal(129.0, 5.0)),
        anteversion=float(rng.normal(13.0, 7.0)),
        neck_length=float(rng.normal(48.0, 4.0) * scale),
        femur_pose={k: [float(x) for x in v] for k, v in pose.items()},
        sacral_slope=float(rng.normal(40.0, 7.0)),
        pelvic_tilt=float(rng.normal(12.0, 5.0)),
        fat_thickness=float(max(4.0, rng.normal(fat_m, 7.0))),
        hu_cortical=float(rng.normal(1300.0, 120.0)),
        hu_trabecular=float(np.clip(rng.normal(260.0, 60.0), 100.0, 450.0)),
        hu_muscle=float(rng.normal(45.0, 6.0)),
        hu_fat=float(rng.normal(-100.0, 10.0)),
        gas=gas,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


# --- skeleton (key points), shared by the shapes and the landmarks ----------------


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class _Side:
    """Key points and shapes of one hemipelvis and femur."""

    points: dict
    plate: sdf.Plate
    landmarks: dict


def _ilium_radii(s):
    return {"crest": 6.5 * s, "post": 7.0 * s, "ant": 5.0 * s, "wing": 4.5 * s, "pubis": 7.0 * s}


def _side_skeleton(p: PelvisParameters, side: str) -> _Side:
    sg = SIDES[side]
    s, f = p.scale, p.femininity
    r = _ilium_radii(s)
    X = np.array([sg, 0.0, 0.0])
    H = np.array([sg * p.ifd / 2, 0.0, 0.0])
    A = np.array([sg * p.iad / 2, p.asis_anterior, p.asis_height])  # ASIS landmark (surface)

    def rel(base, dx, dy, dz):  # dx is lateral (+) / medial (-)
        return base + np.array([sg * dx, dy, dz])

    C1 = rel(A, 22 * s, -45 * s, 32 * s)
    C2 = rel(A, 12 * s, -90 * s, 45 * s)
    C3 = rel(A, -30 * s, -135 * s, 30 * s)
    PSIS = np.array([sg * 42 * s, A[1] - 158 * s, A[2] + 2 * s])
    PIIS = PSIS + np.array([sg * 2 * s, 8 * s, -30 * s])
    G = rel(H, -(27 - 4 * f) * s, -(46 - 8 * f) * s, (18 + 6 * f) * s)  # notch apex, tube centre
    IS = np.array([sg * (47 + 7 * f) * s, -50 * s, -25 * s])  # ischial spine
    T = np.array([sg * (58 + 10 * f) * s, -32 * s, -66 * s])  # ischial tuberosity (tube centre)
    R = rel(H, 4 * s, 0.0, p.fh_radius + 7 * s)  # acetabular roof
    AIIS = rel(H, 8 * s, 34 * s, 28 * s)
    Pac = rel(H, -4 * s, -30 * s, 4 * s)  # behind the socket
    Pac_low = rel(H, -8 * s, -22 * s, -20 * s)

    # ASIS: the crest tube ends so that its end cap's anterior tip is exactly A.
    u = _unit(A - C1)
    A_skel = A - r["crest"] * u

    # Greater sciatic notch: rim tube PIIS -> G -> IS; the apex on the notch side
    # lies along the bisector of the bend at r / sin(theta / 2) from G.
    d1, d2 = _unit(PIIS - G), _unit(IS - G)
    theta = np.arccos(np.clip(d1 @ d2, -1, 1))
    GSN = G + r["post"] / np.sin(theta / 2) * _unit(d1 + d2)

    # Pubic symphysis: the pubic body is a capsule whose medial face lies at x = +-gap.
    gap = 2.0
    SPS = np.array([sg * gap, A[1] + 2.0 * s, -p.symphysis_drop])
    tilt = np.deg2rad(p.symphysis_tilt)
    IPS = SPS + p.symphysis_height * np.array([0.0, -np.sin(tilt), -np.cos(tilt)])
    SPS_skel, IPS_skel = SPS + r["pubis"] * X, IPS + r["pubis"] * X
    Rr = rel(H, -14 * s, 14 * s, -8 * s)  # superior ramus root at the acetabulum

    # Obturator plate: best-fit plane through the ring of the pubis and ischium.
    ring = np.stack([SPS_skel, Rr, Pac_low, T, IPS_skel])
    centroid = ring.mean(0)
    _, _, vt = np.linalg.svd(ring - centroid)
    e2 = _unit(SPS_skel - IPS_skel)
    n = vt[2]
    e2 = _unit(e2 - (e2 @ n) * n)
    e1 = np.cross(e2, n)
    if e1 @ X < 0:
        e1 = -e1
    plate0 = sdf.Plate(centroid, e1, e2, np.zeros((3, 2)), 1.0)
    poly = plate0.to_plane(ring)[0]
    if sdf.polygon_sdf_2d(poly.mean(0, keepdims=True), poly)[0] > 0 or _signed_area(poly) == 0:
        raise PhantomError("pelvis parameters give a self-intersecting obturator ring")
    hole = _inscribed_ellipse(poly, margin=6.0 * s, aspect=1.55 - 0.35 * f, angle=-25.0 * (1 - 0.4 * f))
    plate = sdf.Plate(centroid, e1, e2, poly, 4.5 * s, hole)

    # Obturator landmarks: extremes of the hole's ellipse (mid-plane) along -x*side and -z.
    MOF = _ellipse_extreme(plate, -X)
    IOF = _ellipse_extreme(plate, np.array([0.0, 0.0, -1.0]))

    pts = dict(H=H, A=A, A_skel=A_skel, C1=C1, C2=C2, C3=C3, PSIS=PSIS, PIIS=PIIS, G=G, IS=IS, T=T, R=R,
               AIIS=AIIS, Pac=Pac, Pac_low=Pac_low, Rr=Rr, SPS_skel=SPS_skel, IPS_skel=IPS_skel)
    lms = {"FH": H, "GSN": GSN, "IOF": IOF, "MOF": MOF, "SPS": SPS, "IPS": IPS, "ASIS": A}
    return _Side(pts, plate, lms)


def _signed_area(poly):
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _inscribed_ellipse(poly, margin, aspect, angle):
    """Largest ellipse (semi-axes b*aspect along e2-ish, b) at the ring's centroid, ``margin`` inside it."""
    c = poly.mean(0)
    t = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    lo, hi = 0.0, 200.0
    for _ in range(40):
        b = 0.5 * (lo + hi)
        ax = (b, b * aspect)
        ca, sa = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        loc = np.stack([ax[0] * np.cos(t), ax[1] * np.sin(t)], -1)
        q = c + np.stack([ca * loc[:, 0] - sa * loc[:, 1], sa * loc[:, 0] + ca * loc[:, 1]], -1)
        if np.max(sdf.polygon_sdf_2d(q, poly)) <= -margin:
            lo = b
        else:
            hi = b
    if lo < 3.0:
        raise PhantomError("obturator ring too small for a foramen")
    return (tuple(float(x) for x in c), (float(lo), float(lo * aspect)), float(angle))


def _ellipse_extreme(plate: sdf.Plate, direction) -> np.ndarray:
    """The point of the plate's hole ellipse (mid-plane) farthest along ``direction`` (closed form)."""
    (cu, cv), (a, b), ang = plate.hole
    ca, sa = np.cos(np.deg2rad(ang)), np.sin(np.deg2rad(ang))
    # p(t) = O + e1 * (cu + ca a cos t - sa b sin t) + e2 * (cv + sa a cos t + ca b sin t)
    g1, g2 = direction @ plate.e1, direction @ plate.e2
    A = a * (g1 * ca + g2 * sa)
    B = b * (-g1 * sa + g2 * ca)
    t = np.arctan2(B, A)
    u = cu + ca * a * np.cos(t) - sa * b * np.sin(t)
    v = cv + sa * a * np.cos(t) + ca * b * np.sin(t)
    return plate.from_plane(np.array([u, v]))


def pelvis_landmarks(params: PelvisParameters) -> dict[str, np.ndarray]:
    """The 14 SyntheX landmarks (world mm, RAS) of a pelvis, without building its volume."""
    out = {}
    for side in SIDES:
        sk = _side_skeleton(params, side)
        for k, v in sk.landmarks.items():
            out[f"{k}-{side}"] = np.asarray(v, dtype=np.float64)
    return {k: out[k] for k in HIP_LANDMARKS}


# --- shapes ------------------------------------------------------------------------


def _hemipelvis(p: PelvisParameters, side: str, sk: _Side):
    sg = SIDES[side]
    s = p.scale
    r = _ilium_radii(s)
    q = sk.points
    ring = [q["A_skel"], q["C1"], q["C2"], q["C3"], q["PSIS"], q["PIIS"], q["G"], q["Pac"], q["R"], q["AIIS"]]
    W = np.mean(ring, axis=0) + np.array([sg * 4 * s, 0.0, 0.0])
    parts = list(sdf.triangle_fan(W, ring, r["wing"]))
    parts += sdf.capsule_chain([q["A_skel"], q["C1"], q["C2"], q["C3"], q["PSIS"]], [r["crest"], 7.5 * s, 7.5 * s, 7 * s, 9 * s])
    parts += sdf.capsule_chain([q["PSIS"], q["PIIS"], q["G"], q["IS"]], [9 * s, 8 * s, r["post"], 4 * s])
    parts += sdf.capsule_chain([q["A_skel"], q["AIIS"], q["R"]], [r["ant"], 6 * s, 8 * s])
    # thick sacroiliac part of the ilium
    parts.append(sdf.Ellipsoid(np.array([sg * 52 * s, q["PIIS"][1] + 30 * s, q["PIIS"][2] + 12 * s]), np.array([11, 30, 30]) * s))
    # acetabulum: thick cup around the head, open along the acetabular axis
    H, rf = q["H"], p.fh_radius
    incl, av = np.deg2rad(45.0), np.deg2rad(18.0)
    axis = np.array([sg * np.sin(incl) * np.cos(av), np.sin(incl) * np.sin(av), -np.cos(incl)])
    body = sdf.Ellipsoid(H + np.array([-sg * 7 * s, -3 * s, 2 * s]), np.array([rf + 9 * s, rf + 12 * s, rf + 14 * s]))
    cup = sdf.Difference(sdf.Difference(body, sdf.HalfSpace(H + 2.0 * axis, -axis)), sdf.Sphere(H, rf + 2.5))
    parts.append(cup)
    # pubis and ischium around the obturator foramen
    parts.append(sk.plate)
    parts.append(sdf.Capsule(q["SPS_skel"], q["IPS_skel"], r["pubis"]))
    parts.append(sdf.Capsule(q["SPS_skel"] - np.array([0, 0, 3 * s]), q["Rr"], 7.5 * s, 10 * s))
    parts.append(sdf.Capsule(q["IPS_skel"], q["T"] + np.array([-sg * 4 * s, 6 * s, 4 * s]), 6 * s, 8 * s))
    parts.append(sdf.Capsule(q["Pac_low"], q["T"], 12 * s, 9 * s))
    parts.append(sdf.Ellipsoid(q["T"], np.array([10, 14, 14]) * s))
    parts.append(sdf.Capsule(q["IS"], q["Pac_low"] + np.array([0, -6 * s, -4 * s]), 4 * s, 9 * s))
    hole = sdf.EllipticCylinderHole(sk.plate, 25.0 * s)
    socket = sdf.Sphere(H, rf + 2.5)
    return sdf.Union(tuple(parts)), (hole, socket)


def _femur(p: PelvisParameters, side: str, H: np.ndarray):
    sg = SIDES[side]
    s = p.scale
    rf = p.fh_radius
    flex, abd, rot = p.femur_pose[side]
    Rp = rotation_x(flex) @ rotation_y(-sg * abd) @ rotation_z(sg * rot)
    shaft = np.array([-sg * np.sin(np.deg2rad(7.0)), 0.0, -np.cos(np.deg2rad(7.0))])
    phi = np.deg2rad(173.0 - p.neck_shaft_angle)
    av = np.deg2rad(p.anteversion)
    d_n = np.array([sg * np.sin(phi) * np.cos(av), -np.sin(phi) * np.sin(av), -np.cos(phi)])
    B = H + p.neck_length * d_n

    def P(x):  # pose a point about the head centre
        return H + Rp @ (np.asarray(x, dtype=np.float64) - H)

    def E(center, radii):
        return sdf.Ellipsoid(P(center), np.asarray(radii, dtype=np.float64) * s, Rp)

    parts = (
        sdf.Sphere(H, rf),
        sdf.Capsule(P(H + 0.3 * rf * d_n), P(B), 0.66 * rf, 0.85 * rf),
        E(B + 8 * s * shaft, (21, 19, 30)),
        E(B + np.array([sg * 14, -6, 16]) * s, (13, 17, 22)),
        E(B + 35 * s * shaft + np.array([-sg * 14, -10, 0]) * s, (9, 8, 11)),
        sdf.Capsule(P(B + 5 * s * shaft), P(B + 320 * s * shaft), 16 * s, 14 * s),
    )
    canal = sdf.Capsule(P(B + 60 * s * shaft), P(B + 320 * s * shaft), 8 * s, 7.5 * s)
    wall = sdf.Capsule(P(B + 60 * s * shaft), P(B + 320 * s * shaft), 30 * s)
    return sdf.Union(parts), canal, wall


def _sacrum_frame(p: PelvisParameters):
    ss, pt = np.deg2rad(p.sacral_slope), np.deg2rad(p.pelvic_tilt)
    top = 95.0 * p.scale * np.array([0.0, -np.sin(pt), np.cos(pt)])  # S1 endplate centre
    return top, ss


def _sacrum(p: PelvisParameters):
    s = p.scale
    top, ss = _sacrum_frame(p)
    upper, lower = [], []
    widths = [26, 22, 17, 13, 10, 7]
    depths = [16, 13, 11, 9, 7, 5]
    lateral = [50, 42, 31, 22, 14, 0]
    lat_depth = [22, 17, 12, 9, 7, 0]
    kappa = np.deg2rad(55.0) / (110.0 * s)  # sacral kyphosis, radians per mm
    pos, ang, step = top.copy(), ss, 21.0 * s
    for k in range(6):
        a = np.array([0.0, -np.sin(ang), -np.cos(ang)])  # down the sacrum
        b = np.array([0.0, -np.cos(ang), np.sin(ang)])  # dorsal
        c = pos + a * (0.5 * step + (1.0 * s if k == 0 else 0.0))
        axes = np.stack([[1.0, 0.0, 0.0], b, a], axis=1)
        parts = [sdf.Ellipsoid(c, np.array([widths[k], depths[k], 12.5]) * s, axes)]
        if lateral[k]:
            parts.append(sdf.Ellipsoid(c + b * 8 * s, np.array([lateral[k], lat_depth[k], 13.0]) * s, axes))
        (upper if k < 2 else lower).extend(parts)
        pos = pos + a * step
        ang = ang - kappa * step  # the axis turns anteriorly going down
    return sdf.Union(tuple(upper)), sdf.Union(tuple(lower))


def _vertebrae(p: PelvisParameters):
    s = p.scale
    top, ss = _sacrum_frame(p)
    parts = []
    tips = {5: 36, 4: 40, 3: 44}
    tilt = [np.deg2rad(p.sacral_slope - 14), np.deg2rad(p.sacral_slope - 26), np.deg2rad(p.sacral_slope - 35)]
    base = top
    for level, th in zip((5, 4, 3), tilt):
        up = np.array([0.0, np.sin(th), np.cos(th)])
        back = np.array([0.0, -np.cos(th), np.sin(th)])
        h = 13.5 * s
        c = base + up * (10.0 * s + h)
        axes = np.stack([[1.0, 0.0, 0.0], back, up], axis=1)

        def L(x, y, z):
            return c + axes @ (np.array([x, y, z], dtype=np.float64) * s)

        parts.append(sdf.EllipticCylinder(c, (24 * s, 17 * s), h, axes))
        for sg in (-1, 1):
            parts += [
                sdf.Capsule(L(sg * 12, 13, 3), L(sg * 14, 32, 3), 5.5 * s),
                sdf.Capsule(L(sg * 14, 32, 2), L(0, 42, 0), 4.5 * s),
                sdf.Capsule(L(sg * 14, 30, 4), L(sg * tips[level], 34, 6), (6.5 if level == 5 else 4.5) * s),
                sdf.Capsule(L(sg * 16, 34, -14), L(sg * 16, 34, 14), 5.0 * s),
            ]
        parts.append(sdf.Capsule(L(0, 42, 0), L(0, 66, -6), 4.5 * s))
        base = c + up * h
    return sdf.Union(tuple(parts)), base


def _body_sdf(p: PelvisParameters, pts: np.ndarray) -> np.ndarray:
    """Signed distance (approximate) to the skin: trunk above the crotch, two thighs below."""
    s = p.scale
    x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]
    ax = p.iad / 2 + 45 * s + p.fat_thickness
    ay = 112 * s + 0.8 * p.fat_thickness
    yc = -12 * s
    k0 = np.sqrt((x / ax) ** 2 + ((y - yc) / ay) ** 2)
    trunk = (k0 - 1.0) * min(ax, ay)
    zc = -78 * s
    trunk = np.maximum(trunk, zc - z)
    thighs = np.full_like(trunk, np.inf)
    for sg in (-1, 1):
        cx = sg * (p.ifd / 2 + 18 * s)
        rt = 78 * s + p.fat_thickness
        thighs = np.minimum(thighs, np.hypot(x - cx, y - (yc + 5 * s)) - rt)
    thighs = np.maximum(thighs, z - (zc + 30 * s))
    k = 25.0 * s  # polynomial smooth union
    hmix = np.clip(0.5 + 0.5 * (thighs - trunk) / k, 0.0, 1.0)
    return thighs * (1 - hmix) + trunk * hmix - k * hmix * (1 - hmix)


def pelvis_bounds(params: PelvisParameters) -> tuple[np.ndarray, np.ndarray]:
    """World box (mm) of the phantom's volume: the body around the pelvis, L3 to the proximal femoral shafts."""
    s = params.scale
    _, l3_top = _vertebrae(params)
    ax = params.iad / 2 + 45 * s + params.fat_thickness
    ay = 112 * s + 0.8 * params.fat_thickness
    lo = np.array([-ax - 6, -12 * s - ay - 6, -175 * s])
    hi = np.array([ax + 6, -12 * s + ay + 6, l3_top[2] + 8 * s])
    return lo, hi


def build_pelvis(params: PelvisParameters, spacing: float = 1.75, name: str = "pelvis") -> Phantom:
    """Voxelize a pelvis phantom: HU volume + label map (:data:`PELVIS_LABELS`) + 14 landmarks.

    ``spacing`` is the isotropic voxel size in mm (1.5-2 renders fast; smaller
    is sharper). Bone edges are partial-volume smoothed, so the HU image is
    not staircased at any spacing.
    """
    if not (np.isfinite(spacing) and 0.2 <= spacing <= 10.0):
        raise PhantomError(f"voxel spacing must lie in 0.2..10 mm, got {spacing}")
    p = params
    h = float(spacing)
    lo, hi = pelvis_bounds(p)
    grid = sdf.Grid.covering(lo, hi, h)

    fields = {}
    femur_extra = {}
    for side in SIDES:
        sk = _side_skeleton(p, side)
        shape, (hole, socket) = _hemipelvis(p, side, sk)
        f = sdf.rasterize(shape, grid)
        sdf.cut(f, hole, grid)
        fields[f"hemipelvis_{'left' if side == 'l' else 'right'}"] = f
        fem, canal, wall = _femur(p, side, sk.points["H"])
        name_f = f"femur_{'left' if side == 'l' else 'right'}"
        fields[name_f] = sdf.rasterize(fem, grid)
        femur_extra[name_f] = (sdf.rasterize(canal, grid), sdf.rasterize(wall, grid))
    upper, lower = _sacrum(p)
    fields["upper_sacrum"] = sdf.rasterize(upper, grid)
    fields["sacrum_lower"] = sdf.rasterize(lower, grid)
    fields["vertebrae"] = sdf.rasterize(_vertebrae(p)[0], grid)

    by_name = {v: k for k, v in PELVIS_LABELS.items()}
    labels, dmin = sdf.label_fields(fields, by_name)
    texture = sdf.smooth_texture(grid.shape, p.texture_seed)

    # bone: cortical shell of thickness t_c over trabecular interior, femoral shafts hollow
    w_cort = sdf.shell_weight(dmin, 1.6 * p.scale, h)
    bone = p.hu_trabecular + 0.25 * p.hu_trabecular * texture
    marrow = -40.0
    for name_f, (canal, wall) in femur_extra.items():
        in_f = labels == by_name[name_f]
        w_canal = sdf.occupancy(canal, h) * in_f
        w_wall = sdf.occupancy(wall, h) * in_f * (1 - w_canal)
        w_cort = np.maximum(w_cort, w_wall)
        bone = bone * (1 - w_canal) + marrow * w_canal
    bone = bone * (1 - w_cort) + p.hu_cortical * w_cort
    occ = sdf.occupancy(dmin, h)
    del dmin

    # soft tissue: air outside the skin, subcutaneous fat, muscle/viscera, bowel gas
    d_body = sdf.on_slabs(grid, lambda P: _body_sdf(p, P))
    inside = sdf.occupancy(d_body, h)
    fat = sdf.shell_weight(d_body, p.fat_thickness, h)
    del d_body
    soft = -1000.0 * (1 - inside) + (p.hu_muscle * (1 - fat) + p.hu_fat * fat + 8.0 * texture) * inside
    gas = np.zeros(grid.shape, dtype=np.float32)
    for g in p.gas:
        e = sdf.Ellipsoid(np.asarray(g[:3]), np.asarray(g[3:]))
        np.maximum(gas, sdf.occupancy(sdf.rasterize(e, grid), h), out=gas)
    soft = soft * (1 - gas) + (-950.0) * gas

    hu = (soft * (1 - occ) + bone * occ).astype(np.float32)
    volume = Volume.from_array(hu, spacing=h, origin=grid.origin, labels=labels, label_names=PELVIS_LABELS, name=name)
    return Phantom(volume=volume, landmarks=pelvis_landmarks(p), parameters=p.to_dict())


def sample_pelvis(rng: np.random.Generator, spacing: float = 1.75) -> Phantom:
    """Sample parameters and build the phantom (convenience)."""
    return build_pelvis(sample_pelvis_parameters(rng), spacing=spacing)

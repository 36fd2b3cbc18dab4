"""A procedural adult chest phantom: lungs with five lobes, airways, heart, mediastinum, spine,
ribs, sternum, clavicles, scapulae, diaphragm with liver and stomach gas, soft tissue and breasts.

Same two steps as the pelvis: :func:`sample_chest_parameters` (a
``numpy.random.Generator`` -> :class:`ChestParameters`, JSON-serializable) and
the deterministic :func:`build_chest` (-> :class:`~phantoms.landmarks.Phantom`).
Lung lobes carry TotalSegmentator's names, so :mod:`phantoms.lesions` inserts
COVID-19 lesions into the phantom exactly as into a real chest CT.

World frame: patient RAS, mm; origin on the midline at the carina's height,
midway between the front and back of the chest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from phantoms import sdf
from phantoms.landmarks import Phantom
from projectors.records import from_record
from phantoms.totalseg import LUNG_LOBES
from projectors.volume import Volume


class ChestError(ValueError):
    """Impossible chest phantom parameters."""


CHEST_LABELS: dict[int, str] = {
    **{i + 1: lobe for i, lobe in enumerate(LUNG_LOBES)},
    6: "airway",
    7: "heart",
    8: "vertebrae",
    9: "ribs",
    10: "sternum",
    11: "clavicula_left",
    12: "clavicula_right",
    13: "scapula_left",
    14: "scapula_right",
}
_BONES = ("vertebrae", "ribs", "sternum", "clavicula_left", "clavicula_right", "scapula_left", "scapula_right")


@dataclass(frozen=True)
class ChestParameters:
    sex: str = "male"
    width: float = 330.0  # chest width (skin to skin, at the nipples)
    depth: float = 230.0  # antero-posterior
    lung_height: float = 250.0  # apex to the dome of the diaphragm
    heart_size: float = 1.0
    diaphragm_right: float = 0.0  # extra height of the right dome over the left, mm
    fat_thickness: float = 15.0
    breast_size: float = 0.0  # radius of each breast, mm (0 = none)
    hu_lung: float = -850.0
    hu_muscle: float = 45.0
    hu_fat: float = -100.0
    hu_blood: float = 40.0
    hu_cortical: float = 1200.0
    hu_trabecular: float = 220.0
    texture_seed: int = 0

    def __post_init__(self):
        if self.sex not in ("male", "female"):
            raise ChestError(f"sex must be 'male' or 'female', got {self.sex!r}")
        for name in ("width", "depth", "lung_height", "heart_size"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ChestError(f"chest parameter {name} must be positive, got {v}")
        if self.depth >= self.width:
            raise ChestError(f"chest depth ({self.depth}) must be smaller than its width ({self.width})")
        if not -1000 <= self.hu_lung <= -500:
            raise ChestError(f"aerated lung lies in -1000..-500 HU, got {self.hu_lung}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ChestParameters":
        return from_record(cls, d, ChestError, "chest parameter")


def sample_chest_parameters(rng: np.random.Generator) -> ChestParameters:
    """An adult chest: sex-dependent size, breast size, fat, diaphragm, heart and lung density."""
    female = rng.random() < 0.5
    s = rng.normal(0.92 if female else 1.0, 0.05)
    return ChestParameters(
        sex="female" if female else "male",
        width=float(330.0 * s * rng.normal(1.0, 0.04)),
        depth=float(225.0 * s * rng.normal(1.0, 0.06)),
        lung_height=float(255.0 * s * rng.normal(1.0, 0.05)),
        heart_size=float(rng.normal(1.0, 0.08)),
        diaphragm_right=float(rng.normal(15.0, 6.0)),
        fat_thickness=float(max(3.0, rng.normal(20.0 if female else 14.0, 6.0))),
        breast_size=float(rng.uniform(45.0, 75.0) if female else 0.0),
        hu_lung=float(rng.normal(-850.0, 25.0)),
        hu_muscle=float(rng.normal(45.0, 6.0)),
        hu_fat=float(rng.normal(-100.0, 10.0)),
        hu_blood=float(rng.normal(40.0, 5.0)),
        hu_cortical=float(rng.normal(1200.0, 100.0)),
        hu_trabecular=float(np.clip(rng.normal(220.0, 50.0), 100.0, 400.0)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


# --- geometry -----------------------------------------------------------------------------


def _frame(p: ChestParameters):
    a, b = p.width / 2 - p.fat_thickness - 12.0, p.depth / 2 - p.fat_thickness - 12.0  # inner chest wall
    apex = 0.45 * p.lung_height  # lung apices above the carina
    dome = apex - p.lung_height  # left diaphragm dome height
    return a, b, apex, dome


def _lungs(p: ChestParameters):
    """SDF of each lung (before lobes): an ellipsoid per side, minus the mediastinum and the domes."""
    a, b, apex, dome = _frame(p)
    out = {}
    for side, sg in (("left", -1.0), ("right", 1.0)):
        cz = 0.5 * (apex + dome) - 10.0
        hz = 0.5 * (apex - dome) + 25.0
        lung = sdf.Ellipsoid(np.array([sg * 0.52 * a, -0.05 * b, cz]), np.array([0.46 * a, 0.9 * b, hz]))
        d_dome = dome + (p.diaphragm_right if side == "right" else 0.0)
        # the dome: a big sphere below the lung, its top at the dome height
        diaphragm = sdf.Sphere(np.array([sg * 0.5 * a, 0.0, d_dome - 160.0]), 160.0)
        out[side] = (lung, diaphragm)
    return out


def _heart(p: ChestParameters):
    a, b, apex, dome = _frame(p)
    k = p.heart_size
    axes = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]).T  # long axis to the patient's left-front
    return sdf.Ellipsoid(np.array([-0.2 * a, 0.25 * b, dome + 55.0]), np.array([70.0, 52.0, 58.0]) * k, axes)


def _airways(p: ChestParameters):
    a, b, apex, dome = _frame(p)
    carina = np.array([0.0, -0.05 * b, 0.0])
    trachea = sdf.Capsule(carina + [0, 0.1 * b, apex + 40.0], carina, 9.0)
    left = sdf.Capsule(carina, carina + [-0.45 * a, -0.05 * b, -45.0], 6.5, 4.0)
    right = sdf.Capsule(carina, carina + [0.42 * a, -0.05 * b, -30.0], 7.5, 4.5)
    return sdf.Union((trachea, left, right))


def _spine(p: ChestParameters):
    a, b, apex, dome = _frame(p)
    parts = []
    levels = 13
    top, bottom = apex + 40.0, dome - 60.0
    step = (top - bottom) / levels
    for i in range(levels):
        z = top - (i + 0.5) * step
        y = -b + 35.0 + 10.0 * np.sin(np.pi * i / levels)  # thoracic kyphosis
        parts.append(sdf.EllipticCylinder(np.array([0.0, y, z]), (17.0 + i, 14.0 + 0.6 * i), 0.38 * step))
        parts.append(sdf.Capsule(np.array([0.0, y - 15.0, z]), np.array([0.0, y - 45.0, z - 15.0]), 4.5))
        for sg in (-1, 1):
            parts.append(sdf.Capsule(np.array([sg * 10.0, y - 14.0, z]), np.array([sg * 28.0, y - 25.0, z + 3]), 5.0))
    return sdf.Union(tuple(parts)), top, step


def _ribs(p: ChestParameters, spine_top: float, step: float):
    a, b, apex, dome = _frame(p)
    parts = []
    for k in range(12):
        z0 = spine_top - (k + 0.7) * step
        length = np.deg2rad(60.0 + 95.0 * min(k, 6) / 6 if k < 10 else 120.0 - 30.0 * (k - 9))
        scale = 0.55 + 0.45 * min(k, 5) / 5  # upper ribs: small rings
        drop = 25.0 + 45.0 * min(k, 7) / 7
        for sg in (-1, 1):
            th = np.linspace(0.0, length, 14)
            x = sg * (22.0 + (a * scale - 8.0) * np.sin(th) * 1.0)
            y = -b + 40.0 + (b + 20.0) * scale * (1 - np.cos(th)) * 0.95
            z = z0 - drop * (th / max(length, 1e-6)) ** 1.3
            parts += sdf.capsule_chain(np.stack([x, y, z], -1), 4.5)
    return sdf.Union(tuple(parts))


def _sternum(p: ChestParameters, spine_top: float, step: float):
    a, b, apex, dome = _frame(p)
    top = np.array([0.0, b + 2.0, spine_top - 2.5 * step])
    return sdf.Capsule(top, top + [0.0, 12.0, -150.0], 12.0, 10.0)


def _shoulder_girdle(p: ChestParameters, spine_top: float, step: float):
    a, b, apex, dome = _frame(p)
    out = {}
    for side, sg in (("left", -1.0), ("right", 1.0)):
        sc = np.array([sg * 15.0, b + 8.0, spine_top - 2.2 * step])
        mid = np.array([sg * 0.55 * a, b + 12.0, spine_top - 1.6 * step])
        acromion = np.array([sg * (a + 15.0), 0.15 * b, spine_top - 1.2 * step])
        out[f"clavicula_{side}"] = sdf.Union(sdf.capsule_chain([sc, mid, acromion], [7.0, 6.0, 6.5]))
        # scapula: a thick triangle on the back, glenoid at the acromion's level
        sup = np.array([sg * 0.45 * a, -b - 5.0, spine_top - 2.0 * step])
        glen = np.array([sg * (a - 5.0), -0.35 * b, spine_top - 2.6 * step])
        inf = np.array([sg * 0.55 * a, -b + 5.0, spine_top - 7.5 * step])
        out[f"scapula_{side}"] = sdf.Union((sdf.ThickTriangle(sup, glen, inf, 3.5),
                                            *sdf.capsule_chain([sup, inf, glen], 5.0), sdf.Sphere(glen, 13.0)))
    return out


def _body_sdf(p: ChestParameters, P):
    x, y, z = P[..., 0], P[..., 1], P[..., 2]
    a, b = p.width / 2, p.depth / 2
    k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    d = (k0 - 1.0) * min(a, b)
    if p.breast_size > 0:
        _, _, apex, dome = _frame(p)
        for sg in (-1, 1):
            c = np.array([sg * 0.45 * a, b - 0.35 * p.breast_size, dome + 40.0])
            db = np.sqrt(((x - c[0]) / 1.0) ** 2 + ((y - c[1]) / 0.9) ** 2 + ((z - c[2]) / 1.0) ** 2) - p.breast_size
            d = np.minimum(d, db)
    return d


def chest_bounds(p: ChestParameters):
    a, b, apex, dome = _frame(p)
    extra = 0.4 * p.breast_size
    return (np.array([-p.width / 2 - 8, -p.depth / 2 - 8, dome - 90.0]),
            np.array([p.width / 2 + 8, p.depth / 2 + extra + 8, apex + 60.0]))


def build_chest(params: ChestParameters, spacing: float = 2.0, name: str = "chest") -> Phantom:
    """Voxelize a chest phantom: HU volume + label map (:data:`CHEST_LABELS`); landmarks: carina, lung apices."""
    if not (np.isfinite(spacing) and 0.3 <= spacing <= 10.0):
        raise ChestError(f"voxel spacing must lie in 0.3..10 mm, got {spacing}")
    p, h = params, float(spacing)
    grid = sdf.Grid.covering(*chest_bounds(p), h)
    a, b, apex, dome = _frame(p)
    texture = sdf.smooth_texture(grid.shape, p.texture_seed)

    # bones
    spine, spine_top, step = _spine(p)
    bones = {"vertebrae": spine, "ribs": _ribs(p, spine_top, step), "sternum": _sternum(p, spine_top, step),
             **_shoulder_girdle(p, spine_top, step)}
    fields = {n: sdf.rasterize(s, grid) for n, s in bones.items()}
    values = {v: k for k, v in CHEST_LABELS.items()}
    bone_labels, dmin = sdf.label_fields(fields, values)
    w_cort = sdf.shell_weight(dmin, 1.2, h)
    bone = (p.hu_trabecular + 0.25 * p.hu_trabecular * texture) * (1 - w_cort) + p.hu_cortical * w_cort
    bone_occ = sdf.occupancy(dmin, h)
    del fields, dmin

    # lungs, split into lobes by the fissures
    heart_d = sdf.rasterize(_heart(p), grid)
    air_d = sdf.rasterize(_airways(p), grid)
    lung_label = np.zeros(grid.shape, np.int32)
    lung_occ = np.zeros(grid.shape, np.float32)
    for side, (lung, diaphragm) in _lungs(p).items():
        d = sdf.rasterize(lung, grid)
        sdf.cut(d, diaphragm, grid)
        d = np.maximum(d, -(heart_d - 6.0))  # pericardial fat/mediastinum around the heart
        d = np.maximum(d, -(air_d - 3.0))
        inside = d < 0
        occ = sdf.occupancy(d, h)
        lung_occ = np.maximum(lung_occ, occ)
        idx = np.argwhere(inside)
        P = grid.origin + h * idx
        # oblique fissure: from the back at ~T4 height down to the front near the diaphragm
        oblique = P[:, 2] - (0.35 * apex + 0.55 * (P[:, 1] + b) / (2 * b) * (dome - 0.35 * apex) * 1.6)
        upper = oblique > 0
        if side == "left":
            lab = np.where(upper, values["lung_upper_lobe_left"], values["lung_lower_lobe_left"])
        else:
            horizontal = P[:, 2] > 0.1 * apex - 20.0
            lab = np.where(~upper, values["lung_lower_lobe_right"],
                           np.where(horizontal, values["lung_upper_lobe_right"], values["lung_middle_lobe_right"]))
        lung_label[tuple(idx.T)] = lab

    # soft tissue: skin, fat, muscle/mediastinum, heart (blood), liver below the right dome, stomach gas
    d_body = sdf.on_slabs(grid, lambda P: _body_sdf(p, P))
    inside = sdf.occupancy(d_body, h)
    fat = sdf.shell_weight(d_body, p.fat_thickness, h)
    if p.breast_size > 0:  # breasts are mostly fat and glandular tissue
        fat = np.maximum(fat, 0.6 * sdf.occupancy(d_body + p.fat_thickness, h) * (grid_y(grid) > b - 10))
    del d_body
    soft = p.hu_muscle * (1 - fat) + p.hu_fat * fat + 8.0 * texture
    heart_occ = sdf.occupancy(heart_d, h)
    soft = soft * (1 - heart_occ) + p.hu_blood * heart_occ
    stomach = sdf.occupancy(sdf.rasterize(sdf.Ellipsoid(np.array([-0.45 * a, 0.1 * b, dome - 35.0]),
                                                        np.array([40.0, 30.0, 22.0])), grid), h)
    soft = soft * (1 - stomach) - 950.0 * stomach
    lung_hu = p.hu_lung + 30.0 * texture
    air_occ = sdf.occupancy(air_d, h)
    hu = soft * (1 - lung_occ) + lung_hu * lung_occ
    hu = hu * (1 - air_occ) - 980.0 * air_occ
    hu = hu * (1 - bone_occ) + bone * bone_occ
    hu = -1000.0 * (1 - inside) + hu * inside

    labels = np.where(bone_labels > 0, bone_labels, lung_label)
    labels = np.where(air_d < 0, values["airway"], labels)
    labels = np.where((heart_d < 0) & (labels == 0), values["heart"], labels)
    vol = Volume.from_array(hu.astype(np.float32), spacing=h, origin=grid.origin, labels=labels,
                            label_names=CHEST_LABELS, name=name)
    lms = {
        "carina": np.array([0.0, -0.05 * b, 0.0]),
        "lung_apex_left": np.array([-0.52 * a, -0.05 * b, apex]),
        "lung_apex_right": np.array([0.52 * a, -0.05 * b, apex]),
    }
    return Phantom(volume=vol, landmarks=lms, parameters=p.to_dict())


def grid_y(grid: sdf.Grid) -> np.ndarray:
    """World y of every voxel (broadcastable to the grid)."""
    return (grid.origin[1] + grid.spacing * np.arange(grid.shape[1]))[None, :, None]

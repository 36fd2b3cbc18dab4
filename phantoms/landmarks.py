"""Landmarks: SyntheX hip landmark names, the phantom container, loading and sphere fitting.

Landmarks are world points in millimetres (patient RAS, like everything in
synthex). They come from a procedural phantom (defined analytically on its
shapes), from a file a user wrote (:func:`read_landmarks`: JSON, 3D Slicer
markups JSON, or CSV), or, for femoral head centres, from a femur label map
by sphere fitting (:func:`femoral_head_centers`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from projectors.geometry import Transform
from projectors.volume import Volume

#: The 14 landmarks of SyntheX's hip task, in DeepFluoro's order and spelling
#: (``-l`` = patient left, ``-r`` = patient right): femoral head centre, greater
#: sciatic notch, inferior and medial obturator foramen, superior and inferior
#: pubic symphysis, anterior superior iliac spine.
HIP_LANDMARKS: tuple[str, ...] = tuple(
    f"{name}-{side}" for name in ("FH", "GSN", "IOF", "MOF", "SPS", "IPS", "ASIS") for side in ("l", "r")
)

#: SyntheX's hip segmentation classes (label value -> structure name; 0 = background).
HIP_CLASSES: dict[int, str] = {
    1: "hemipelvis_left",
    2: "hemipelvis_right",
    3: "vertebrae",
    4: "upper_sacrum",
    5: "femur_left",
    6: "femur_right",
}


class LandmarkError(ValueError):
    """A landmark file or landmark set that cannot be used."""


@dataclass(frozen=True, eq=False)
class Phantom:
    """A subject: CT-like volume with labels, named world landmarks and the parameters that made it."""

    volume: Volume
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)

    def landmark_array(self, names=None) -> np.ndarray:
        """Landmarks as an (N, 3) array in the order of ``names`` (default: insertion order)."""
        names = list(self.landmarks) if names is None else list(names)
        missing = [n for n in names if n not in self.landmarks]
        if missing:
            raise LandmarkError(f"phantom has no landmark(s) {missing}; it has {sorted(self.landmarks)}")
        return np.stack([np.asarray(self.landmarks[n], dtype=np.float64) for n in names])

    def posed(self, world_from_phantom: Transform) -> "Phantom":
        """Move volume and landmarks together rigidly."""
        moved = {k: world_from_phantom.apply(v) for k, v in self.landmarks.items()}
        return replace(self, volume=self.volume.posed(world_from_phantom), landmarks=moved)


# --- reading ----------------------------------------------------------------


def _as_point(name, value) -> np.ndarray:
    p = np.asarray(value, dtype=np.float64).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise LandmarkError(f"landmark {name!r} must be three finite numbers (x, y, z in mm), got {value!r}")
    return p


_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def parse_landmarks(data, coordinate_system: str = "RAS") -> dict[str, np.ndarray]:
    """Landmarks from already-parsed JSON data.

    Accepted forms: ``{"FH-l": [x, y, z], ...}``; ``{"coordinate_system": "LPS",
    "landmarks": {...}}``; a list of ``{"name": ..., "position": [x, y, z]}``;
    or a 3D Slicer markups file (``{"markups": [{"coordinateSystem": "LPS",
    "controlPoints": [{"label": ..., "position": [...]}]}]}``). LPS points are
    converted to RAS.
    """
    points: dict[str, np.ndarray] = {}
    system = coordinate_system
    if isinstance(data, dict) and "markups" in data:
        for markup in data["markups"]:
            system = markup.get("coordinateSystem", "LPS")
            for cp in markup.get("controlPoints", []):
                points[str(cp["label"])] = _as_point(cp.get("label"), cp.get("position"))
    elif isinstance(data, dict) and "landmarks" in data:
        system = data.get("coordinate_system", coordinate_system)
        return parse_landmarks(data["landmarks"], system)
    elif isinstance(data, dict):
        points = {str(k): _as_point(k, v) for k, v in data.items()}
    elif isinstance(data, list):
        for item in data:
            if not isinstance(item, dict) or "name" not in item:
                raise LandmarkError(f"each landmark in a list needs a 'name', got {item!r}")
            pos = item.get("position", [item.get("x"), item.get("y"), item.get("z")])
            points[str(item["name"])] = _as_point(item["name"], pos)
    else:
        raise LandmarkError(f"landmark data must be a mapping or a list, got {type(data).__name__}")
    system = str(system).upper()
    if system not in ("RAS", "LPS"):
        raise LandmarkError(f"landmark coordinate system must be 'RAS' or 'LPS', got {system!r}")
    if system == "LPS":
        points = {k: v * _LPS_TO_RAS for k, v in points.items()}
    if not points:
        raise LandmarkError("no landmarks found")
    return points


def read_landmarks(path, coordinate_system: str = "RAS") -> dict[str, np.ndarray]:
    """Read world landmarks (mm) from a ``.json`` (see :func:`parse_landmarks`) or ``.csv`` file.

    A CSV needs a header with columns ``name, x, y, z`` (other columns are ignored).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise LandmarkError(f"no such landmark file: {p}")
    suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise LandmarkError(f"{p}: not valid JSON ({e})") from None
        return parse_landmarks(data, coordinate_system)
    if suffix == ".csv":
        with p.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"name", "x", "y", "z"} <= set(k.strip().lower() for k in rows[0]):
            raise LandmarkError(f"{p}: a landmark CSV needs a header with columns name,x,y,z")
        out = {}
        for row in rows:
            r = {k.strip().lower(): v for k, v in row.items()}
            try:
                out[r["name"].strip()] = _as_point(r["name"], [float(r[a]) for a in "xyz"])
            except ValueError:
                raise LandmarkError(f"{p}: landmark {r['name']!r} has non-numeric coordinates") from None
        return parse_landmarks(out, coordinate_system)
    raise LandmarkError(f"{p}: landmark files must be .json or .csv, got {suffix or 'no extension'}")


# --- sphere fitting ------------------------------------------------------------


def fit_sphere(points) -> tuple[np.ndarray, float]:
    """Least-squares sphere through points (N, 3): ``|p - c|^2 = r^2`` solved linearly (Kasa fit)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 4:
        raise LandmarkError(f"sphere fitting needs at least 4 points of shape (N, 3), got {p.shape}")
    A = np.concatenate([2.0 * p, np.ones((len(p), 1))], axis=1)
    b = np.sum(p * p, axis=1)
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    c = sol[:3]
    r2 = sol[3] + c @ c
    if not np.isfinite(r2) or r2 <= 0:
        raise LandmarkError("points do not determine a sphere (degenerate configuration)")
    return c, float(np.sqrt(r2))


def _surface_points(mask: np.ndarray) -> np.ndarray:
    """Voxel indices (N, 3) of a mask's voxels that touch a non-mask 6-neighbour."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))
    return np.argwhere(mask & ~inner)


def femoral_head_center(
    volume: Volume, label: int, medial=None, cap_mm: float = 18.0, iterations: int = 4
) -> tuple[np.ndarray, float]:
    """Centre (world mm) and radius of a femoral head fitted to the surface of one femur label.

    See :func:`fit_femoral_head`, which does the fitting on a mask.
    """
    if volume.labels is None:
        raise LandmarkError(f"{volume.name}: no label map to fit femoral heads to")
    mask = volume.labels == label
    if mask.sum() < 50:
        raise LandmarkError(f"{volume.name}: label {label} has {int(mask.sum())} voxels; too few for a femoral head")
    try:
        return fit_femoral_head(mask, volume.world_from_ijk, medial, cap_mm, iterations)
    except LandmarkError as e:
        raise LandmarkError(f"{volume.name}: label {label}: {e}") from None


def fit_femoral_head(
    mask: np.ndarray, world_from_ijk: Transform, medial=None, cap_mm: float = 18.0, iterations: int = 4, up=None
) -> tuple[np.ndarray, float]:
    """Centre (world mm) and radius of the femoral head of a femur mask, by sphere fitting.

    The head is the femur's most superior (or, given the ``medial`` world
    direction, most superior-medial) part: a sphere is first fitted to the
    surface voxels within ``cap_mm`` of that extreme (a spherical cap, no
    trochanter), then refined on the surface voxels lying within 3 mm of the
    current sphere, excluding the side of the neck (the direction from the
    centre to the femur's voxels within two radii, where the neck and
    trochanters are). ``up`` is the superior direction (default world +z).
    """
    spacing = np.linalg.norm(world_from_ijk.R, axis=0)
    pts = world_from_ijk.apply(_surface_points(mask).astype(np.float64))
    allpts = world_from_ijk.apply(np.argwhere(mask).astype(np.float64))
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    if medial is not None:
        up = up + np.asarray(medial, dtype=np.float64) / np.linalg.norm(medial)
        up /= np.linalg.norm(up)
    height = pts @ up
    sel = pts[height > height.max() - cap_mm]
    c, r = fit_sphere(sel)
    tol = max(3.0, 1.0 * float(spacing.max()))
    for _ in range(iterations):
        near = allpts[np.linalg.norm(allpts - c, axis=1) < 2.0 * r]
        neck = near.mean(0) - c
        neck /= max(np.linalg.norm(neck), 1e-9)
        d = np.linalg.norm(pts - c, axis=1)
        sel = pts[(np.abs(d - r) < tol) & ((pts - c) @ neck < 0.2 * r)]
        if len(sel) < 10:
            break
        c, r = fit_sphere(sel)
    if not 10.0 < r < 40.0:
        raise LandmarkError(f"the fitted femoral head radius is {r:.1f} mm; not a femoral head")
    return c, r


def femoral_head_centers(volume: Volume, left: str = "femur_left", right: str = "femur_right") -> dict[str, np.ndarray]:
    """``{"FH-l": ..., "FH-r": ...}`` from the named femur labels of ``volume`` (by sphere fitting)."""
    by_name = {v: k for k, v in volume.label_names.items()}
    for name in (left, right):
        if name not in by_name:
            raise LandmarkError(f"{volume.name}: no label named {name!r}; labels are {sorted(by_name)}")
    centroid = {
        n: volume.world_from_ijk.apply(np.argwhere(volume.labels == by_name[n]).mean(0)) for n in (left, right)
    }
    towards_right = centroid[right] - centroid[left]
    return {
        "FH-l": femoral_head_center(volume, by_name[left], medial=towards_right)[0],
        "FH-r": femoral_head_center(volume, by_name[right], medial=-towards_right)[0],
    }

"""Subject sources: where the anatomy of a dataset comes from.

A source is a registry entry (``SOURCES[name]``) with four pure steps:

* ``resolve(entry, base_dir)``: validate one ``subjects:`` entry of the config
  (raising :class:`~synthex.config.ConfigError` naming the key), make paths absolute;
* ``count(entry)``: how many subjects (CTs or phantom instances) it provides;
* ``sample(entry, rng)``: draw the subject's shape parameters (JSON) from its own generator;
* ``build(entry, params, classes)``: the :class:`Subject` (volumes, class -> structure
  names, landmarks in world mm, view target), deterministic.

Sources today: ``ct`` (a CT file + label map + landmarks) and
``placeholder_pelvis``, a crude analytic pelvis that stands in until the
procedural phantoms of ``phantoms/`` land; they plug in as new entries here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from projectors.geometry import rotation_x
from projectors.volume import Volume


class SubjectError(ValueError):
    """A subject cannot provide what the task needs (missing file, labels or landmarks)."""


@dataclass
class Subject:
    """One CT or phantom instance, ready to be placed in front of a C-arm.

    ``structures`` maps each class name of the task to the names of the volume
    structures (label names) whose path lengths make its mask; ``landmarks``
    maps landmark names to world points (RAS mm); ``target`` is the world point
    the views aim at.
    """

    volumes: list
    structures: dict[str, list[str]]
    landmarks: dict[str, np.ndarray]
    target: np.ndarray
    name: str = "subject"
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SubjectSource:
    resolve: Callable[[dict, Path | None], dict]
    count: Callable[[dict], int]
    sample: Callable[[dict, np.random.Generator], dict]
    build: Callable[[dict, dict, list], Subject]
    doc: str


def _config_error(msg: str):
    from synthex.config import ConfigError

    return ConfigError(msg)


def _check_keys(entry: dict, allowed: dict, where: str) -> None:
    import difflib

    for k in entry:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), list(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(allowed))}"
            raise _config_error(f"unknown config key '{where}.{k}'{hint}")


# ---------------------------------------------------------------------------
# CT files

CT_KEYS = {
    "source": "ct",
    "path": "CT file or DICOM folder (required)",
    "labels": "label-map file on the CT's lattice",
    "label_names": "{value: name} or a JSON/CSV class map",
    "classes": "{class: [structure names]} (default: each class is the structure of the same name)",
    "landmarks": "{name: [x, y, z]} world RAS mm, or a JSON file of that",
    "target": "[x, y, z] world point the views aim at (default: centre of the CT)",
    "name": "a name for the subject",
}


def _abs(base_dir, p) -> str:
    p = Path(str(p)).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return str(p)


def _ct_resolve(entry: dict, base_dir, where: str) -> dict:
    _check_keys(entry, CT_KEYS, where)
    if "path" not in entry:
        raise _config_error(f"config key '{where}.path': a CT subject needs the path of its CT")
    out = dict(entry)
    for key in ("path", "labels"):
        if out.get(key) is not None:
            out[key] = _abs(base_dir, out[key])
            if not Path(out[key]).exists():
                raise _config_error(f"config key '{where}.{key}': file not found: {out[key]}")
    if isinstance(out.get("label_names"), str):
        out["label_names"] = _abs(base_dir, out["label_names"])
    elif isinstance(out.get("label_names"), dict):
        out["label_names"] = {str(k): str(v) for k, v in out["label_names"].items()}
    lm = out.get("landmarks")
    if isinstance(lm, str):
        lm_path = Path(_abs(base_dir, lm))
        if not lm_path.is_file():
            raise _config_error(f"config key '{where}.landmarks': file not found: {lm_path}")
        try:
            lm = json.loads(lm_path.read_text())
        except json.JSONDecodeError as e:
            raise _config_error(f"config key '{where}.landmarks': {lm_path} is not JSON: {e}") from None
    if lm is not None:
        if not isinstance(lm, dict):
            raise _config_error(f"config key '{where}.landmarks': expected {{name: [x, y, z]}}, got {lm!r}")
        for k, v in lm.items():
            if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(c, (int, float)) for c in v)):
                raise _config_error(f"config key '{where}.landmarks.{k}': expected [x, y, z] in mm, got {v!r}")
        out["landmarks"] = {str(k): [float(c) for c in v] for k, v in lm.items()}
    classes = out.get("classes")
    if classes is not None:
        if not isinstance(classes, dict):
            raise _config_error(f"config key '{where}.classes': expected {{class: [structure names]}}")
        out["classes"] = {str(k): [str(s) for s in (v if isinstance(v, list) else [v])] for k, v in classes.items()}
    target = out.get("target")
    if target is not None and not (isinstance(target, list) and len(target) == 3):
        raise _config_error(f"config key '{where}.target': expected [x, y, z] in mm, got {target!r}")
    return out


def _ct_build(entry: dict, params: dict, task_classes: list) -> Subject:
    label_names = entry.get("label_names")
    if isinstance(label_names, dict):
        label_names = {int(k): v for k, v in label_names.items()}
    vol = Volume.from_file(entry["path"], labels=entry.get("labels"), label_names=label_names)
    names = set(vol.label_names.values())
    classes = entry.get("classes")
    structures = {c: list((classes or {}).get(c, [c])) for c in task_classes}
    missing = {c: s for c, s in structures.items() if not any(n in names for n in s)}
    if missing:
        detail = ", ".join(f"{c} (structures {s})" for c, s in missing.items())
        raise SubjectError(
            f"CT {entry['path']}: its label map has no structure for the task's classes {detail}; "
            f"labels present: {sorted(names) or 'none (no label map given)'}. "
            "Give `labels:` and map classes to label names with `classes:`."
        )
    lms = {k: np.asarray(v, dtype=np.float64) for k, v in (entry.get("landmarks") or {}).items()}
    target = np.asarray(entry["target"], dtype=np.float64) if entry.get("target") is not None else vol.center_world
    return Subject(volumes=[vol], structures=structures, landmarks=lms, target=target,
                   name=entry.get("name") or Path(entry["path"]).name)


CT = SubjectSource(
    resolve=_ct_resolve,
    count=lambda entry: 1,
    sample=lambda entry, rng: {},
    build=_ct_build,
    doc="a CT file with a label map (and optional landmarks): " + "; ".join(f"{k}: {v}" for k, v in CT_KEYS.items()),
)


# ---------------------------------------------------------------------------
# placeholder pelvis (until phantoms/ provides the procedural pelvis)

PELVIS_KEYS = {"source": "placeholder_pelvis", "count": "number of phantom instances", "spacing_mm": "voxel size, mm"}
PELVIS_LABELS = {1: "body", 2: "hemipelvis_left", 3: "hemipelvis_right", 4: "vertebrae", 5: "upper_sacrum",
                 6: "femur_left", 7: "femur_right", 8: "lower_sacrum"}


def _pelvis_resolve(entry: dict, base_dir, where: str) -> dict:
    _check_keys(entry, PELVIS_KEYS, where)
    out = {"source": "placeholder_pelvis", "count": entry.get("count", 4), "spacing_mm": entry.get("spacing_mm", 3.0)}
    c, s = out["count"], out["spacing_mm"]
    if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 100000:
        raise _config_error(f"config key '{where}.count': expected a whole number 1..100000, got {c!r}")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.5 <= s <= 10.0:
        raise _config_error(f"config key '{where}.spacing_mm': expected 0.5..10 mm, got {s!r}")
    out["spacing_mm"] = float(s)
    return out


def _pelvis_sample(entry: dict, rng: np.random.Generator) -> dict:
    """Anatomy shape randomization of the placeholder: size, width, tilt, femur pose."""
    return {
        "scale": float(rng.uniform(0.9, 1.1)),
        "width": float(rng.uniform(0.92, 1.08)),
        "tilt_deg": float(rng.uniform(-8.0, 8.0)),
        "femur_abduction_deg": [float(rng.uniform(-8.0, 8.0)), float(rng.uniform(-8.0, 8.0))],
        "head_radius_mm": float(rng.uniform(21.0, 26.0)),
    }


def _segment_distance(p, a, b):
    """Distance of points p (..., 3) from the segment a-b."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def pelvis_model(params: dict) -> tuple[dict, dict]:
    """Model-frame shapes (mm, RAS, origin between the hip joints): label -> function
    of points (..., 3) -> bool, and landmark name -> point. Crude on purpose."""
    w, r_head = params["width"], params["head_radius_mm"]
    shapes, lms = {}, {}

    def ellipsoid(c, r):
        c, r = np.asarray(c, float), np.asarray(r, float)
        return lambda p: np.sum(((p - c) / r) ** 2, axis=-1) <= 1.0

    for side, s, abd in (("left", -1.0, params["femur_abduction_deg"][0]), ("right", 1.0, params["femur_abduction_deg"][1])):
        fh = np.array([s * 95.0 * w, 15.0, -40.0])
        obt = np.array([s * 55.0 * w, 40.0, -75.0])
        ilium = ellipsoid([s * 88.0 * w, -5.0, 30.0], [58.0 * w, 16.0, 62.0])
        acetabulum = ellipsoid(fh, [r_head + 10.0] * 3)
        pubis = lambda p, obt=obt: (np.abs(p[..., 1] - obt[1]) <= 11.0) & (
            (((p[..., 0] - obt[0]) / 30.0) ** 2 + ((p[..., 2] - obt[2]) / 24.0) ** 2) <= 2.4
        )
        shapes[f"hemipelvis_{side}"] = lambda p, a=ilium, b=acetabulum, c=pubis, fh=fh: (
            (a(p) | b(p) | c(p)) & ~(np.linalg.norm(p - fh, axis=-1) <= r_head + 1.5)
        )
        a = math.radians(abd)
        neck_end = fh + np.array([s * 45.0 * w, 5.0, -30.0])
        knee = neck_end + np.array([s * 260.0 * math.sin(a) - s * 30.0, 0.0, -260.0 * math.cos(a)])
        shapes[f"femur_{side}"] = lambda p, fh=fh, ne=neck_end, kn=knee: (
            (np.linalg.norm(p - fh, axis=-1) <= r_head)
            | (_segment_distance(p, fh, ne) <= 13.0)
            | (_segment_distance(p, ne, kn) <= 15.0)
        )
        sfx = "l" if side == "left" else "r"
        lms[f"FH_{sfx}"] = fh
        lms[f"GSN_{sfx}"] = np.array([s * 62.0 * w, -40.0, 5.0])
        lms[f"IOF_{sfx}"] = obt - np.array([0.0, 0.0, 22.0])
        lms[f"MOF_{sfx}"] = obt - np.array([s * 28.0, 0.0, 0.0])
        lms[f"SPS_{sfx}"] = np.array([s * 9.0, 50.0, -50.0])
        lms[f"IPS_{sfx}"] = np.array([s * 9.0, 48.0, -95.0])
        lms[f"ASIS_{sfx}"] = np.array([s * 120.0 * w, 40.0, 45.0])
    sacrum = ellipsoid([0.0, -45.0, 15.0], [40.0 * w, 20.0, 58.0])
    shapes["upper_sacrum"] = lambda p: sacrum(p) & (p[..., 2] > 15.0)
    shapes["lower_sacrum"] = lambda p: sacrum(p) & (p[..., 2] <= 15.0)
    shapes["vertebrae"] = lambda p: np.any(
        [(np.hypot(p[..., 0], p[..., 1] + 35.0) <= 24.0) & (np.abs(p[..., 2] - zc) <= 13.0) for zc in (92.0, 124.0, 156.0)],
        axis=0,
    )
    return shapes, lms


def _pelvis_build(entry: dict, params: dict, classes: list) -> Subject:
    from scipy import ndimage

    sp = entry["spacing_mm"]
    size = np.array([340.0, 240.0, 380.0])  # mm: x (R), y (A), z (S)
    n = np.maximum(np.round(size / sp).astype(int), 8)
    ax = [(np.arange(k) - (k - 1) / 2) * sp for k in n]
    grid = np.stack(np.meshgrid(*ax, indexing="ij"), axis=-1)
    grid[..., 2] += -30.0  # the grid spans z in [-220, 160] mm
    # world = R @ (scale * model): evaluate shapes at model = R^T world / scale
    R = rotation_x(params["tilt_deg"])
    model = (grid @ R) / params["scale"]
    shapes, lms = pelvis_model(params)

    hu = np.full(n, -1000.0, dtype=np.float32)
    labels = np.zeros(n, dtype=np.int16)
    body = ((model[..., 0] / 175.0) ** 2 + ((model[..., 1] + 5.0) / 115.0) ** 2) <= 1.0
    hu[body] = -90.0
    inner = ((model[..., 0] / 160.0) ** 2 + ((model[..., 1] + 5.0) / 100.0) ** 2) <= 1.0
    hu[inner] = 40.0
    labels[body] = 1
    for value, name in PELVIS_LABELS.items():
        if name == "body":
            continue
        m = shapes[name](model)
        core = ndimage.binary_erosion(m, iterations=1)
        hu[m] = 1100.0  # cortical shell
        hu[core] = 280.0  # trabecular core
        labels[m] = value
    origin = np.array([ax[0][0], ax[1][0], ax[2][0] - 30.0])
    vol = Volume.from_array(hu, spacing=sp, origin=origin, labels=labels, label_names=PELVIS_LABELS,
                            name="placeholder_pelvis")
    world_lms = {k: R @ (params["scale"] * v) for k, v in lms.items()}
    target = R @ (params["scale"] * np.array([0.0, 10.0, -25.0]))
    return Subject(volumes=[vol], structures={c: [c] for c in classes}, landmarks=world_lms, target=target,
                   name="placeholder_pelvis")


PLACEHOLDER_PELVIS = SubjectSource(
    resolve=_pelvis_resolve,
    count=lambda entry: entry["count"],
    sample=_pelvis_sample,
    build=_pelvis_build,
    doc="PLACEHOLDER analytic pelvis (ellipsoids and cylinders, hip classes and 14 landmarks) until the "
        "procedural pelvis phantom lands in phantoms/; not anatomy to train a real model on",
)

# source name -> SubjectSource
SOURCES: dict[str, SubjectSource] = {"ct": CT, "placeholder_pelvis": PLACEHOLDER_PELVIS}


def resolve_subjects(entries, task: str, base_dir=None) -> list[dict]:
    """Validate the ``subjects`` list of a config (default: the task's built-in source)."""
    from synthex.tasks import TASKS

    if entries is None:
        default = TASKS[task].default_source
        if default is None:
            raise _config_error(
                f"config key 'subjects': task {task!r} has no built-in subject source yet; "
                "list CT subjects ({source: ct, path: ..., labels: ...})"
            )
        entries = [{"source": default}]
    if not isinstance(entries, list) or not entries:
        raise _config_error("config key 'subjects': expected a non-empty list of subject entries")
    out = []
    for k, entry in enumerate(entries):
        where = f"subjects[{k}]"
        if not isinstance(entry, dict) or "source" not in entry:
            raise _config_error(f"config key '{where}': expected a mapping with a 'source' ({sorted(SOURCES)})")
        src = SOURCES.get(entry["source"])
        if src is None:
            import difflib

            close = difflib.get_close_matches(str(entry["source"]), list(SOURCES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _config_error(f"config key '{where}.source': unknown source {entry['source']!r}; "
                                f"available: {sorted(SOURCES)}{hint}")
        out.append(src.resolve(entry, base_dir, where))
    return out


def count_subjects(entries: list[dict]) -> int:
    return sum(SOURCES[e["source"]].count(e) for e in entries)


def locate(entries: list[dict], subject_id: int) -> tuple[dict, int]:
    """(entry, instance within the entry) of a global subject id."""
    for e in entries:
        c = SOURCES[e["source"]].count(e)
        if subject_id < c:
            return e, subject_id
        subject_id -= c
    raise IndexError("subject id out of range")

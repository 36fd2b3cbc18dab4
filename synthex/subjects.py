"""Subject sources: where the anatomy of a dataset comes from.

A source is a registry entry (``SOURCES[name]``) with four pure steps:

* ``resolve(entry, base_dir)``: validate one ``subjects:`` entry of the config
  (raising :class:`~synthex.config.ConfigError` naming the key), make paths absolute;
* ``count(entry)``: how many subjects (CTs or phantom instances) it provides;
* ``sample(entry, rng)``: draw the subject's shape parameters (JSON) from its own generator;
* ``build(entry, params, classes)``: the :class:`Subject` (volumes, class -> structure
  names, landmarks in world mm, view target), deterministic.

Sources today: ``ct`` (a CT file + label map + landmarks) and ``pelvis`` (the
procedural pelvis of ``phantoms.pelvis``); more phantoms plug in as new entries here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    # per-view parts (tools): ``sample_pose(rng) -> pose`` (JSON) and ``place(pose) -> Placement``
    sample_pose: Callable[[np.random.Generator], dict] | None = None
    place: Callable[[dict], "Placement"] | None = None


@dataclass
class Placement:
    """What one view adds to a subject: meshes (``projectors.mesh.MeshObject``), their
    landmarks (world mm) and the point the view aims at (None: the subject's target)."""

    meshes: list
    landmarks: dict[str, np.ndarray]
    target: np.ndarray | None = None


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
    return Subject(
        volumes=[vol],
        structures=structures,
        landmarks=lms,
        target=target,
        name=entry.get("name") or Path(entry["path"]).name,
    )


CT = SubjectSource(
    resolve=_ct_resolve,
    count=lambda entry: 1,
    sample=lambda entry, rng: {},
    build=_ct_build,
    doc="a CT file with a label map (and optional landmarks): " + "; ".join(f"{k}: {v}" for k, v in CT_KEYS.items()),
)


# ---------------------------------------------------------------------------
# procedural pelvis phantom (phantoms.pelvis)

PELVIS_KEYS = {"source": "pelvis", "count": "number of phantom instances", "spacing_mm": "voxel size, mm"}


def _pelvis_resolve(entry: dict, base_dir, where: str) -> dict:
    _check_keys(entry, PELVIS_KEYS, where)
    out = {"source": "pelvis", "count": entry.get("count", 4), "spacing_mm": entry.get("spacing_mm", 2.5)}
    c, s = out["count"], out["spacing_mm"]
    if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 100000:
        raise _config_error(f"config key '{where}.count': expected a whole number 1..100000, got {c!r}")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.5 <= s <= 10.0:
        raise _config_error(f"config key '{where}.spacing_mm': expected 0.5..10 mm, got {s!r}")
    out["spacing_mm"] = float(s)
    return out


def _pelvis_sample(entry: dict, rng: np.random.Generator) -> dict:
    """Anatomy shape randomization: the phantom's own sampler (sex, pelvic and femoral dimensions, pose, HU, gas)."""
    from phantoms.pelvis import sample_pelvis_parameters

    return sample_pelvis_parameters(rng).to_dict()


def landmark_name(name: str) -> str:
    """DeepFluoro's ``FH-l`` -> the dataset format's ``FH_l``."""
    return name.replace("-", "_")


def _pelvis_build(entry: dict, params: dict, classes: list) -> Subject:
    from phantoms.pelvis import PelvisParameters, build_pelvis

    phantom = build_pelvis(PelvisParameters.from_dict(params), spacing=entry["spacing_mm"])
    lms = {landmark_name(k): np.asarray(v, dtype=np.float64) for k, v in phantom.landmarks.items()}
    target = np.mean(list(lms.values()), axis=0)  # the pelvis centre: mean of its 14 landmarks
    return Subject(
        volumes=[phantom.volume],
        structures={c: [c] for c in classes},
        landmarks=lms,
        target=target,
        name="pelvis_phantom",
    )


PELVIS = SubjectSource(
    resolve=_pelvis_resolve,
    count=lambda entry: entry["count"],
    sample=_pelvis_sample,
    build=_pelvis_build,
    doc="procedural pelvis phantom (phantoms.pelvis: signed-distance-function bones with cortical shell, "
    "soft tissue, fat and gas; SyntheX's 6 hip classes and 14 DeepFluoro landmarks; anatomy sampled "
    "from published population statistics)",
)

# ---------------------------------------------------------------------------
# pelvis phantom with a surgical tool (phantoms.tools), posed anew in every view

PELVIS_TOOL_KEYS = {**PELVIS_KEYS, "source": "pelvis_tool", "tool": "tool kind (phantoms.tools.TOOLS)"}


def _pelvis_tool_resolve(entry: dict, base_dir, where: str) -> dict:
    from phantoms.tools import TOOLS

    _check_keys(entry, PELVIS_TOOL_KEYS, where)
    out = _pelvis_resolve({k: v for k, v in entry.items() if k != "tool"}, base_dir, where)
    out["source"] = "pelvis_tool"
    out["tool"] = entry.get("tool", "continuum_manipulator")
    if out["tool"] not in TOOLS:
        import difflib

        close = difflib.get_close_matches(str(out["tool"]), list(TOOLS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _config_error(
            f"config key '{where}.tool': unknown tool {out['tool']!r}; available: {sorted(TOOLS)}{hint}"
        )
    return out


def _pelvis_tool_sample(entry: dict, rng: np.random.Generator) -> dict:
    from phantoms.tools import sample_tool_parameters

    return {"pelvis": _pelvis_sample(entry, rng), "tool": sample_tool_parameters(entry["tool"], rng)}


def _pelvis_tool_build(entry: dict, params: dict, classes: list) -> Subject:
    from phantoms.tools import build_tool, sample_tool_pose_in_pelvis, tool_pose

    subject = _pelvis_build(entry, params["pelvis"], [])
    tool = build_tool(entry["tool"], params["tool"])
    deepfluoro = {k.replace("_", "-"): v for k, v in subject.landmarks.items()}

    def place(pose: dict) -> Placement:
        placed = tool.placed(tool_pose(tool, pose))
        lms = placed.world_landmarks()
        return Placement(meshes=[placed.mesh()], landmarks=lms, target=np.asarray(lms["tip"], dtype=np.float64))

    # the tool's classes: every class of the task is made by the tool mesh
    subject.structures = {c: [tool.name] for c in classes}
    subject.landmarks = {}
    subject.sample_pose = lambda rng: sample_tool_pose_in_pelvis(rng, tool, entry["tool"], deepfluoro)
    subject.place = place
    subject.name = f"pelvis_phantom+{entry['tool']}"
    return subject


PELVIS_TOOL = SubjectSource(
    resolve=_pelvis_tool_resolve,
    count=lambda entry: entry["count"],
    sample=_pelvis_tool_sample,
    build=_pelvis_tool_build,
    doc="procedural pelvis phantom with a surgical tool mesh (phantoms.tools; default the continuum "
    "manipulator of SyntheX's tool task) placed by a surgical approach, re-posed in every view; the "
    "tool's material is added on top of the bone it overlaps (no voxels are carved out)",
)

# ---------------------------------------------------------------------------
# chest phantom with COVID-19 lesions (phantoms.chest, phantoms.lesions)

CHEST_KEYS = {"source": "chest_lesions", "count": "number of phantom instances", "spacing_mm": "voxel size, mm"}


def _chest_resolve(entry: dict, base_dir, where: str) -> dict:
    _check_keys(entry, CHEST_KEYS, where)
    out = _pelvis_resolve({"count": entry.get("count", 4), "spacing_mm": entry.get("spacing_mm", 3.0)}, base_dir, where)
    out["source"] = "chest_lesions"
    return out


def _chest_sample(entry: dict, rng: np.random.Generator) -> dict:
    from phantoms.chest import sample_chest_parameters

    # lesion placement depends on the built lungs, so it is drawn in build() from this recorded seed
    return {"chest": sample_chest_parameters(rng).to_dict(), "lesion_seed": int(rng.integers(0, 2**63 - 1))}


def _chest_build(entry: dict, params: dict, classes: list) -> Subject:
    from phantoms.chest import ChestParameters, build_chest
    from phantoms.lesions import insert_lesions, sample_lesions

    chest = build_chest(ChestParameters.from_dict(params["chest"]), spacing=entry["spacing_mm"])
    lesions = sample_lesions(np.random.default_rng(params["lesion_seed"]), chest.volume)
    volume = insert_lesions(chest.volume, lesions)
    return Subject(
        volumes=[volume],
        structures={c: [c] for c in classes},
        landmarks={k: np.asarray(v, dtype=np.float64) for k, v in chest.landmarks.items()},
        target=volume.center_world,
        name="chest_phantom",
        info={"lesions": lesions.to_dict()},
    )


CHEST_LESIONS = SubjectSource(
    resolve=_chest_resolve,
    count=lambda entry: entry["count"],
    sample=_chest_sample,
    build=_chest_build,
    doc="procedural chest phantom (phantoms.chest: lobes, airways, heart, ribs, ...) with COVID-19 lesions "
    "(phantoms.lesions: ground-glass and consolidation, bilateral, peripheral, basal) labelled 'lesion'",
)


# source name -> SubjectSource
SOURCES: dict[str, SubjectSource] = {
    "ct": CT,
    "pelvis": PELVIS,
    "pelvis_tool": PELVIS_TOOL,
    "chest_lesions": CHEST_LESIONS,
}


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
            raise _config_error(
                f"config key '{where}.source': unknown source {entry['source']!r}; available: {sorted(SOURCES)}{hint}"
            )
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

"""Subject sources: where the anatomy of a dataset comes from.

A source is a registry entry (``SOURCES[name]``): a typed config entry (a
pydantic model with ``source: <name>``, validated and path-resolved by the
render config) and three pure steps:

* ``count(entry)``: how many subjects (CTs or phantom instances) it provides;
* ``sample(entry, rng)``: draw the subject's shape parameters (JSON) from its own generator;
* ``build(entry, params, ctx)``: the :class:`Subject` for a :class:`BuildContext` (volumes, class -> structure
  names, landmarks in world mm, view target), deterministic.

Sources: ``ct`` (a CT file + label map + landmarks), ``pelvis`` (the procedural
pelvis of ``phantoms.pelvis``), ``pelvis_tool`` (with a surgical tool) and
``chest_lesions`` (the chest phantom with COVID-19 lesions).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from domain_randomization.simulation import Ranges
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
    # from projectors.ct_prep: what the CT covers (views are collimated to it) and the body's surface
    # (presets with the patient at the detector fit the source distance to it)
    coverage: object | None = None
    body_points: np.ndarray | None = None


@dataclass(frozen=True)
class BuildContext:
    """What a subject is built for: the task and how CTs are prepared (``projectors.ct_prep``)."""

    task: object  # synthex.tasks.Task
    ct_prep: object  # projectors.ct_prep.CTPrepParams


def prepared(volume, params, **changes):
    """``projectors.ct_prep.prepare_ct`` of ``volume`` with ``params`` (a CTPrepParams) changed by ``changes``."""
    from dataclasses import replace

    from projectors.ct_prep import prepare_ct

    return prepare_ct(volume, replace(params, **changes))


def phantom_subject(volume, ctx: "BuildContext", **fields) -> Subject:
    """A phantom's Subject: a phantom needs no CT repair (no table, contrast, metal or thick slices),
    only what real CTs get besides: the volume's coverage and the body's surface."""
    from projectors.ct_prep import Coverage, body_mask, coverage_volume, surface_points

    p = ctx.ct_prep
    body = body_mask(volume, p.body_hu)
    coverage = Coverage(coverage_volume(volume, body)[0]) if p.coverage else None
    return Subject(volumes=[volume], coverage=coverage, body_points=surface_points(volume, body), **fields)


@dataclass
class Placement:
    """What one view adds to a subject: meshes (``projectors.mesh.MeshObject``), their
    landmarks (world mm) and the point the view aims at (None: the subject's target)."""

    meshes: list
    landmarks: dict[str, np.ndarray]
    target: np.ndarray | None = None


@dataclass(frozen=True)
class SubjectSource:
    entry: type  # the typed config entry (a pydantic model with ``source: Literal[name]``)
    count: Callable[[Ranges], int]
    sample: Callable[[Ranges, np.random.Generator], dict]
    build: Callable[[Ranges, dict, BuildContext], Subject]
    doc: str


def _abs(path, info: ValidationInfo, must_exist: bool = True) -> str | None:
    """A config path made absolute against the config file's folder (validation context ``base_dir``)."""
    if path is None:
        return None
    p = Path(str(path)).expanduser()
    base = (info.context or {}).get("base_dir")
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    if must_exist and not p.exists():
        raise ValueError(f"file not found: {p}")
    return str(p)


# ---------------------------------------------------------------------------
# CT files

Point = tuple[float, float, float]


class CTEntry(Ranges):
    source: Literal["ct"] = "ct"
    path: str = Field(description="CT file (NIfTI, NRRD, MHA) or DICOM folder")
    labels: str | None = Field(None, description="label-map file on the CT's lattice")
    label_names: dict[str, str] | str | None = Field(None, description="{value: name} or a JSON/CSV class map file")
    classes: dict[str, list[str]] | None = Field(
        None, description="{class: [structure names]} (default: each class is the structure of the same name)"
    )
    landmarks: dict[str, Point] | str | None = Field(None, description="{name: [x, y, z]} world RAS mm, or a JSON file of that")
    target: Point | None = Field(None, description="[x, y, z] world point the views aim at (default: centre of the CT)")
    name: str | None = Field(None, description="a name for the subject")

    @field_validator("path", "labels")
    @classmethod
    def _file(cls, v, info: ValidationInfo):
        return _abs(v, info)

    @field_validator("label_names")
    @classmethod
    def _class_map(cls, v, info: ValidationInfo):
        return _abs(v, info) if isinstance(v, str) else v

    @field_validator("classes", mode="before")
    @classmethod
    def _structure_lists(cls, v):
        if isinstance(v, dict):
            return {str(k): [str(x) for x in (s if isinstance(s, list) else [s])] for k, s in v.items()}
        return v

    @field_validator("landmarks", mode="after")
    @classmethod
    def _landmark_file(cls, v, info: ValidationInfo):
        if not isinstance(v, str):
            return v
        path = Path(_abs(v, info))
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a JSON file of {{name: [x, y, z]}}: {e}") from None
        if not isinstance(data, dict) or not all(
            isinstance(x, list) and len(x) == 3 and all(isinstance(c, (int, float)) for c in x) for x in data.values()
        ):
            raise ValueError(f"{path}: expected {{name: [x, y, z]}} in mm")
        return {str(k): tuple(float(c) for c in x) for k, x in data.items()}


def _ct_build(entry: CTEntry, params: dict, ctx: BuildContext) -> Subject:
    task = ctx.task
    label_names = entry.label_names
    if isinstance(label_names, dict):
        label_names = {int(k): v for k, v in label_names.items()}
    vol = Volume.from_file(entry.path, labels=entry.labels, label_names=label_names)
    names = set(vol.label_names.values())
    structures = {c: list((entry.classes or {}).get(c, [c])) for c in task.foreground}
    missing = {c: s for c, s in structures.items() if not any(n in names for n in s)}
    if missing:
        detail = ", ".join(f"{c} (structures {s})" for c, s in missing.items())
        raise SubjectError(
            f"CT {entry.path}: its label map has no structure for the task's classes {detail}; "
            f"labels present: {sorted(names) or 'none (no label map given)'}. "
            "Give `labels:` and map classes to label names with `classes:`."
        )
    lms = {k: np.asarray(v, dtype=np.float64) for k, v in (entry.landmarks or {}).items()}
    prep = prepared(vol, ctx.ct_prep)
    target = np.asarray(entry.target, dtype=np.float64) if entry.target is not None else vol.center_world
    return Subject(volumes=[prep.scene()], structures=structures, landmarks=lms, target=target,
                   name=entry.name or Path(entry.path).name, info={"ct_prep": prep.record},
                   coverage=prep.coverage, body_points=prep.body_points)


CT = SubjectSource(
    entry=CTEntry,
    count=lambda entry: 1,
    sample=lambda entry, rng: {},
    build=_ct_build,
    doc="a CT file with a label map (and optional landmarks)",
)


# ---------------------------------------------------------------------------
# procedural pelvis phantom (phantoms.pelvis)


class PelvisEntry(Ranges):
    source: Literal["pelvis"] = "pelvis"
    count: int = Field(4, ge=1, le=100000, strict=True, description="number of phantom instances")
    spacing_mm: float = Field(2.5, ge=0.5, le=10.0, description="voxel size, mm")


def _pelvis_sample(entry, rng: np.random.Generator) -> dict:
    """Anatomy shape randomization: the phantom's own sampler (sex, pelvic and femoral dimensions, pose, HU, gas)."""
    from phantoms.pelvis import sample_pelvis_parameters

    return sample_pelvis_parameters(rng).to_dict()


def landmark_name(name: str) -> str:
    """DeepFluoro's ``FH-l`` -> the dataset format's ``FH_l``."""
    return name.replace("-", "_")


def _pelvis_build(entry, params: dict, ctx: BuildContext) -> Subject:
    from phantoms.pelvis import PelvisParameters, build_pelvis

    phantom = build_pelvis(PelvisParameters.from_dict(params), spacing=entry.spacing_mm)
    lms = {landmark_name(k): np.asarray(v, dtype=np.float64) for k, v in phantom.landmarks.items()}
    target = np.mean(list(lms.values()), axis=0)  # the pelvis centre: mean of its 14 landmarks
    return phantom_subject(phantom.volume, ctx, structures={c: [c] for c in ctx.task.foreground}, landmarks=lms,
                           target=target, name="pelvis_phantom")


PELVIS = SubjectSource(
    entry=PelvisEntry,
    count=lambda entry: entry.count,
    sample=_pelvis_sample,
    build=_pelvis_build,
    doc="procedural pelvis phantom (phantoms.pelvis: signed-distance-function bones with cortical shell, "
    "soft tissue, fat and gas; SyntheX's 6 hip classes and 14 DeepFluoro landmarks; anatomy sampled "
    "from published population statistics)",
)


# ---------------------------------------------------------------------------
# pelvis phantom with a surgical tool (phantoms.tools), posed anew in every view


def _tool_kinds():
    from phantoms.tools import TOOLS

    return TOOLS


class PelvisToolEntry(PelvisEntry):
    source: Literal["pelvis_tool"] = "pelvis_tool"
    tool: str = Field("continuum_manipulator", description="tool kind (phantoms.tools.TOOLS)")

    @field_validator("tool")
    @classmethod
    def _known_tool(cls, v):
        import difflib

        kinds = _tool_kinds()
        if v not in kinds:
            close = difflib.get_close_matches(str(v), list(kinds), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown tool {v!r}; available: {sorted(kinds)}{hint}")
        return v


def _pelvis_tool_sample(entry, rng: np.random.Generator) -> dict:
    from phantoms.tools import sample_tool_parameters

    return {"pelvis": _pelvis_sample(entry, rng), "tool": sample_tool_parameters(entry.tool, rng)}


def _pelvis_tool_build(entry, params: dict, ctx: BuildContext) -> Subject:
    from phantoms.tools import build_tool, sample_tool_pose_in_pelvis, tool_pose

    subject = _pelvis_build(entry, params["pelvis"], ctx)
    tool = build_tool(entry.tool, params["tool"])
    deepfluoro = {k.replace("_", "-"): v for k, v in subject.landmarks.items()}

    def place(pose: dict) -> Placement:
        placed = tool.placed(tool_pose(tool, pose))
        lms = placed.world_landmarks()
        return Placement(meshes=[placed.mesh()], landmarks=lms, target=np.asarray(lms["tip"], dtype=np.float64))

    # the tool's classes: every class of the task is made by the tool mesh
    subject.structures = {c: [tool.name] for c in ctx.task.foreground}
    subject.landmarks = {}
    subject.sample_pose = lambda rng: sample_tool_pose_in_pelvis(rng, tool, entry.tool, deepfluoro)
    subject.place = place
    subject.name = f"pelvis_phantom+{entry.tool}"
    return subject


PELVIS_TOOL = SubjectSource(
    entry=PelvisToolEntry,
    count=lambda entry: entry.count,
    sample=_pelvis_tool_sample,
    build=_pelvis_tool_build,
    doc="procedural pelvis phantom with a surgical tool mesh (phantoms.tools; default the continuum "
    "manipulator of SyntheX's tool task) placed by a surgical approach, re-posed in every view; the "
    "tool's material is added on top of the bone it overlaps (no voxels are carved out)",
)


# ---------------------------------------------------------------------------
# chest phantom with COVID-19 lesions (phantoms.chest, phantoms.lesions)


class ChestEntry(Ranges):
    source: Literal["chest_lesions"] = "chest_lesions"
    count: int = Field(4, ge=1, le=100000, strict=True, description="number of phantom instances")
    spacing_mm: float = Field(3.0, ge=0.5, le=10.0, description="voxel size, mm")


LUNG_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
              "lung_lower_lobe_right")


def _chest_sample(entry, rng: np.random.Generator) -> dict:
    from phantoms.chest import sample_chest_parameters

    # lesion placement depends on the built lungs, so it is drawn in build() from this recorded seed
    return {"chest": sample_chest_parameters(rng).to_dict(), "lesion_seed": int(rng.integers(0, 2**63 - 1))}


def _chest_build(entry, params: dict, ctx: BuildContext) -> Subject:
    from phantoms.chest import ChestParameters, build_chest
    from phantoms.lesions import insert_lesions, sample_lesions

    chest = build_chest(ChestParameters.from_dict(params["chest"]), spacing=entry.spacing_mm)
    lesions = sample_lesions(np.random.default_rng(params["lesion_seed"]), chest.volume)
    volume = insert_lesions(chest.volume, lesions)
    structures = {c: list(LUNG_LOBES) if c == "lung" else [c] for c in ctx.task.foreground}
    return phantom_subject(
        volume,
        ctx,
        structures=structures,
        landmarks={k: np.asarray(v, dtype=np.float64) for k, v in chest.landmarks.items()},
        target=volume.center_world,
        name="chest_phantom",
        info={"lesions": lesions.to_dict()},
    )


CHEST_LESIONS = SubjectSource(
    entry=ChestEntry,
    count=lambda entry: entry.count,
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


def count_subjects(entries) -> int:
    return sum(SOURCES[e.source].count(e) for e in entries)


def locate(entries, subject_id: int):
    """(entry, instance within the entry) of a global subject id."""
    for e in entries:
        c = SOURCES[e.source].count(e)
        if subject_id < c:
            return e, subject_id
        subject_id -= c
    raise IndexError("subject id out of range")

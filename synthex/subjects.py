"""Subject sources: where the anatomy of a dataset comes from.

A source is a registry entry (``SOURCES[name]``): a typed config entry (a
pydantic model with ``source: <name>``, validated and path-resolved by the
render config) and three pure steps:

* ``count(entry)``: how many subjects (CTs or phantom instances) it provides;
* ``sample(entry, rng)``: draw the subject's shape parameters (JSON) from its own generator;
* ``build(entry, params, ctx, instance)``: the :class:`Subject` for a :class:`BuildContext` (volumes, class -> structure
  names, landmarks in world mm, view target), deterministic.

Sources: ``ct`` (a CT file + label map + landmarks), ``pelvis`` (the procedural
pelvis of ``phantoms.pelvis``), ``pelvis_tool`` (with a surgical tool) and
``chest_lesions`` (the chest phantom with COVID-19 lesions).
"""

from __future__ import annotations

import functools
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
    scene: list | None = None  # the SceneVolumes as projected (set by the pipeline)


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
    build: Callable[..., Subject]  # (entry, params, ctx, instance) -> Subject
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


def _check_tool(kind: str) -> str:
    import difflib

    from phantoms.tools import TOOLS

    if kind not in TOOLS:
        close = difflib.get_close_matches(str(kind), list(TOOLS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown tool {kind!r}; available: {sorted(TOOLS)}{hint}")
    return kind


# ---------------------------------------------------------------------------
# CT files

Point = tuple[float, float, float]

#: file suffixes of a CT in a folder of CTs (a sub-folder is a DICOM series)
CT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".npz")
#: what a label map's file name may add to its CT's (TotalSegmentator, nnU-Net, 3D Slicer habits)
LABEL_SUFFIXES = ("", "_seg", "_segmentation", "_labels", "_label", "_mask", "-seg", "-label", ".seg")


class DeformEntry(Ranges):
    """A population from one CT: ``count`` smooth, invertible deformations (``phantoms.deform``)."""

    count: int = Field(7, ge=0, le=10000, strict=True, description="deformed instances per CT (besides the CT itself)")
    anatomy: Literal["pelvis", "chest"] | None = Field(None, description="size statistics (default: the task's)")
    field_rms_mm: float | None = Field(None, ge=0.0, le=20.0, description="smooth field amplitude, mm (default: the model's)")
    field_sigma_mm: float | None = Field(None, ge=5.0, le=200.0, description="smooth field scale, mm (default: the model's)")


class LesionEntry(Ranges):
    """COVID-19 lesions grown in the lungs (``phantoms.lesions``); some instances stay lesion-free."""

    free_fraction: float = Field(0.3, ge=0.0, le=1.0, description="fraction of subject instances without lesions")
    n_mean: float = Field(4.0, gt=0.0, le=50.0, description="mean number of lesions (Poisson, at least one)")
    consolidation_probability: float = Field(0.25, ge=0.0, le=1.0, description="share of consolidations (else ground glass)")


class CTEntry(Ranges):
    source: Literal["ct"] = "ct"
    path: str = Field(description="a CT (NIfTI, NRRD, MHA, a DICOM series folder), a folder of CTs or a glob pattern")
    labels: str | None = Field(None, description="the label map on the CT's lattice, or a folder of label maps "
                               "paired with the CTs by name (e.g. ct01.nii.gz <- ct01.nii.gz, ct01_seg.nii.gz)")
    label_names: dict[str, str] | str | None = Field(None, description="{value: name} or a JSON/CSV class map file")
    classes: dict[str, list[str]] | None = Field(
        None, description="{class: [structure names]} (default: TotalSegmentator / nnU-Net names by "
        "phantoms.totalseg.CLASS_STRUCTURES)"
    )
    landmarks: dict[str, Point] | str | None = Field(
        None, description="{name: [x, y, z]} world RAS mm or a JSON file of that; overrides computed hip landmarks")
    target: Point | None = Field(None, description="[x, y, z] world point the views aim at (default: the task's anatomy)")
    name: str | None = Field(None, description="a name for the subject")
    deform: DeformEntry | None = Field(None, description="a population of deformed instances of each CT")
    tool: str | None = Field(None, description="a surgical tool (phantoms.tools.TOOLS) placed per view by its "
                             "approach (tool task default: continuum_manipulator)")
    lesions: LesionEntry | None = Field(None, description="COVID-19 lesions in the lungs (covid task default)")

    @field_validator("path")
    @classmethod
    def _ct(cls, v, info: ValidationInfo):
        if any(c in str(v) for c in "*?["):  # a glob: resolved against the config's folder, matched later
            return _abs(v, info, must_exist=False)
        return _abs(v, info)

    @field_validator("labels")
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

    @field_validator("tool")
    @classmethod
    def _known_tool(cls, v):
        return None if v is None else _check_tool(v)

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


def _is_dicom_series(folder: Path) -> bool:
    from projectors.io import READERS  # noqa: F401  (the folder reader decides; here: any file with a DICOM preamble)

    for f in sorted(folder.iterdir())[:50]:
        if f.is_file():
            with open(f, "rb") as fh:
                head = fh.read(132)
            if head[128:132] == b"DICM" or f.suffix.lower() == ".dcm":
                return True
    return False


def _ct_files(path: str) -> list[Path]:
    """The CTs an entry's ``path`` names: one file or DICOM series, a folder of CTs, or a glob pattern."""
    import glob

    if any(c in path for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(path))
        if not found:
            raise SubjectError(f"no CT matches {path}")
        return found
    p = Path(path)
    if p.is_file() or (p.is_dir() and _is_dicom_series(p)):
        return [p]
    found = sorted(f for f in p.iterdir() if (f.is_file() and f.name.lower().endswith(CT_SUFFIXES))
                   or (f.is_dir() and _is_dicom_series(f)))
    if not found:
        raise SubjectError(f"{p}: no CT in this folder (files ending {', '.join(CT_SUFFIXES)} or DICOM series folders)")
    return found


def _stem(path: Path) -> str:
    name = path.name
    for suffix in CT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _paired_labels(ct: Path, labels: Path) -> Path:
    """The label map of ``ct`` in the folder ``labels``: the same name, or the name plus a usual suffix
    (nnU-Net's ``_0000`` channel suffix of the image dropped)."""
    stem = _stem(ct)
    stems = {stem, stem.removesuffix("_0000")}
    for f in sorted(labels.iterdir()):
        if f.is_file() and f.name.lower().endswith(CT_SUFFIXES):
            if any(_stem(f) == s + suffix for s in stems for suffix in LABEL_SUFFIXES):
                return f
    raise SubjectError(f"no label map for CT {ct} in {labels} (looked for {sorted(stems)[0]} with suffixes "
                       f"{', '.join(repr(x) for x in LABEL_SUFFIXES[1:])})")


def expand_ct_entry(entry: CTEntry) -> list[CTEntry]:
    """One entry per CT of a collection (a folder or glob), each with its own label map."""
    cts = _ct_files(entry.path)
    if len(cts) == 1 and str(cts[0]) == entry.path and (entry.labels is None or Path(entry.labels).is_file()):
        return [entry]
    labels = Path(entry.labels) if entry.labels else None
    out = []
    for ct in cts:
        lab = (_paired_labels(ct, labels) if labels.is_dir() else labels) if labels is not None else None
        out.append(entry.model_copy(update={"path": str(ct), "labels": None if lab is None else str(lab),
                                            "name": _stem(ct) if entry.name is None else f"{entry.name}/{_stem(ct)}"}))
    return out


def _ct_count(entry: CTEntry) -> int:
    return 1 + (entry.deform.count if entry.deform is not None else 0)


@functools.lru_cache(maxsize=2)
def _base_ct(path: str, labels: str | None, label_names: str | tuple | None, classes_json: str | None,
             landmarks_json: str | None, task_name: str, foreground: tuple[str, ...]):
    """A CT with its structures and (hip task) landmarks, computed once per process and CT
    (``label_names``: a class-map file, or the ``{value: name}`` items as a tuple)."""
    if isinstance(label_names, tuple):
        label_names = {int(k): v for k, v in label_names}
    vol = Volume.from_file(path, labels=labels, label_names=label_names)
    structures = ct_structures(vol, json.loads(classes_json) if classes_json else None, task_name, foreground, path)
    given = json.loads(landmarks_json) if landmarks_json else {}
    landmarks, record = {k: np.asarray(v, dtype=np.float64) for k, v in given.items()}, {}
    if task_name in ("hip", "tool"):  # the hip landmarks: computed from the bones (a landmark file overrides)
        from phantoms.auto_landmarks import hip_landmarks

        res = hip_landmarks(vol, given=given or None)
        landmarks = {landmark_name(k): v for k, v in res.points.items()}
        record = {"missing": res.missing, "source": res.source, "notes": list(res.notes)}
    return vol, structures, landmarks, record


def ct_structures(vol, classes, task_name: str, foreground, path) -> dict[str, list[str]]:
    """``{class: [structure names]}`` of a CT for a task; refuses a CT without the anatomy the task needs."""
    from phantoms.totalseg import TASK_CT_CLASSES, ClassMapError, task_structures

    # the structures with voxels (a class map also names classes a CT lacks)
    present = set(np.unique(vol.labels).tolist()) if vol.labels is not None else set()
    names = {n for v, n in vol.label_names.items() if v in present}
    if classes is not None:
        structures = {c: list(classes.get(c, [c])) for c in foreground}
    else:
        structures = task_structures(foreground, {v: n for v, n in vol.label_names.items() if v in present},
                                     required=False)
    needed = [c for c in TASK_CT_CLASSES.get(task_name, foreground) if c in foreground]
    if task_name == "tool":
        needed = [c for c in TASK_CT_CLASSES["hip"]]  # a tool goes into the pelvis: its landmarks need the bones
        try:
            structures.update(task_structures(needed, {v: n for v, n in vol.label_names.items() if v in present}))
        except ClassMapError as e:
            raise SubjectError(f"CT {path}: the tool task places tools in the pelvis: {e}") from None
        return structures
    missing = [c for c in needed if not any(n in names for n in structures.get(c, []))]
    if missing:
        detail = ", ".join(f"{c} (structures {structures.get(c) or '-'})" for c in missing)
        raise SubjectError(
            f"CT {path}: not usable for the {task_name!r} task: its label map has no structure for {detail}; "
            f"labels present: {sorted(names)[:40] or 'none (no label map given)'}. "
            "Give `labels:` (a TotalSegmentator label map works as it is) or map classes to label names with `classes:`."
        )
    return structures


def _ct_sample(entry: CTEntry, rng: np.random.Generator) -> dict:
    """A deformation record for instances > 0 (drawn in build, where the CT is measured) and a lesion seed."""
    return {"draw_seed": int(rng.integers(0, 2**63 - 1))}


def _task_anatomy(task_name: str) -> str:
    return "chest" if task_name == "covid" else "pelvis"


def _ct_build(entry: CTEntry, params: dict, ctx: BuildContext, instance: int = 0) -> Subject:
    task = ctx.task
    vol, structures, landmarks, lm_record = _base_ct(
        entry.path, entry.labels,
        tuple(sorted(entry.label_names.items())) if isinstance(entry.label_names, dict) else entry.label_names,
        json.dumps(entry.classes) if entry.classes else None,
        json.dumps({k: list(v) for k, v in entry.landmarks.items()}) if entry.landmarks else None,
        task.name, task.foreground,
    )
    rng = np.random.default_rng(params["draw_seed"])
    info: dict = {"landmarks": lm_record} if lm_record else {}
    if instance > 0:  # a deformed instance of the CT
        from phantoms.deform import deform, measure_subject, sample_deformation

        d = entry.deform
        anatomy = d.anatomy or _task_anatomy(task.name)
        measured = measure_subject(vol, anatomy, {k.replace("_", "-"): v for k, v in landmarks.items()})
        record = sample_deformation(rng, measured, anatomy, field_rms_mm=d.field_rms_mm, field_sigma_mm=d.field_sigma_mm)
        vol, moved = deform(vol, record, landmarks)
        landmarks = {k: np.asarray(v, dtype=np.float64) for k, v in (moved or {}).items()}
        info["deformation"] = record.to_dict()
    lesions = entry.lesions if entry.lesions is not None else (LesionEntry() if task.name == "covid" else None)
    if lesions is not None:
        vol, info["lesions"] = _with_lesions(vol, rng, lesions)
        structures = {**structures, **({"lesion": ["lesion"]} if "lesion" in task.foreground else {})}
    prep = prepared(vol, ctx.ct_prep)
    target = _aim(entry, task, prep.volume, landmarks)
    subject = Subject(volumes=[prep.scene()], structures=structures, landmarks=landmarks, target=target,
                      name=(entry.name or _stem(Path(entry.path))) + (f"~{instance}" if instance else ""),
                      info={**info, "ct_prep": prep.record}, coverage=prep.coverage, body_points=prep.body_points)
    tool = entry.tool or ("continuum_manipulator" if task.name == "tool" else None)  # SyntheX's tool
    if tool is not None:
        _place_tool(subject, tool, rng, task)
    return subject


def _with_lesions(vol, rng: np.random.Generator, lesions: LesionEntry):
    """``vol`` with COVID-19 lesions grown in its lungs (or none, with probability ``free_fraction``)."""
    from phantoms.lesions import insert_lesions, sample_lesions

    if rng.random() < lesions.free_fraction:
        names = dict(vol.label_names)
        names.setdefault(max(names, default=0) + 1, "lesion")  # the class exists, with no voxels
        return replace_label_names(vol, names), {"lesions": [], "lesion_free": True}
    params = sample_lesions(rng, vol, n_mean=lesions.n_mean, p_consolidation=lesions.consolidation_probability)
    return insert_lesions(vol, params), {**params.to_dict(), "lesion_free": False}


def replace_label_names(vol, names: dict):
    from dataclasses import replace as _replace

    return _replace(vol, label_names=names)


def _aim(entry: CTEntry, task, volume, landmarks: dict) -> np.ndarray:
    """Where a CT's views aim: ``target`` if given, else the task's anatomy: the hip joints (midpoint of the
    femoral head centres), the lungs (covid); else the CT's centre."""
    from projectors.ct_prep import aim_point

    if entry.target is not None:
        return np.asarray(entry.target, dtype=np.float64)
    if task.name in ("hip", "tool") and {"FH_l", "FH_r"} <= set(landmarks):
        return 0.5 * (np.asarray(landmarks["FH_l"]) + np.asarray(landmarks["FH_r"]))
    pattern = {"covid": r"^lung", "hip": r"^(hip|hemipelvis)_(left|right)$"}.get(task.name)
    return np.asarray(aim_point(volume, pattern), dtype=np.float64)


def _place_tool(subject: Subject, kind: str, rng: np.random.Generator, task) -> None:
    """Make ``subject`` a tool subject: a tool mesh posed anew in every view by its surgical approach
    (phantoms.tools), labelled with every class of the task, aimed at the tool's tip."""
    from phantoms.tools import build_tool, sample_tool_parameters, sample_tool_pose_in_pelvis, tool_pose

    tool = build_tool(kind, sample_tool_parameters(kind, rng))
    deepfluoro = {k.replace("_", "-"): v for k, v in subject.landmarks.items()}

    def place(pose: dict) -> Placement:
        placed = tool.placed(tool_pose(tool, pose))
        lms = placed.world_landmarks()
        return Placement(meshes=[placed.mesh()], landmarks=lms, target=np.asarray(lms["tip"], dtype=np.float64))

    subject.structures = {c: [tool.name] for c in task.foreground}
    subject.landmarks = {}
    subject.sample_pose = lambda r: sample_tool_pose_in_pelvis(r, tool, kind, deepfluoro)
    subject.place = place
    subject.name = f"{subject.name}+{kind}"
    subject.info["tool"] = {"kind": kind, "parameters": tool.parameters}


CT = SubjectSource(
    entry=CTEntry,
    count=_ct_count,
    sample=_ct_sample,
    build=_ct_build,
    doc="CTs with label maps (TotalSegmentator names work as they are): hip landmarks computed from the bones, "
    "CT preparation (projectors.ct_prep), optional deformed population, tools and lesions",
)


class BundledPelvisEntry(CTEntry):
    """The built-in real subject: TotalSegmentator's Apache-2.0 example abdomen-pelvis CT (phantoms.data)."""

    source: Literal["bundled_pelvis"] = "bundled_pelvis"
    path: str = Field("", description="(the bundled CT; not set in a config)")
    deform: DeformEntry | None = Field(default_factory=DeformEntry, description="a population of deformed instances")

    @field_validator("path")
    @classmethod
    def _ct(cls, v, info: ValidationInfo):
        return ""  # filled in where synthex is installed (phantoms.data), so a plan is portable


def _bundled(entry: BundledPelvisEntry) -> CTEntry:
    from phantoms.data import totalseg_pelvis

    data = totalseg_pelvis()
    return CTEntry.model_validate({**entry.model_dump(), "source": "ct", "path": str(data.ct),
                                   "labels": str(data.labels), "label_names": str(data.label_names),
                                   "name": entry.name or "totalseg_example_pelvis"})


BUNDLED_PELVIS = SubjectSource(
    entry=BundledPelvisEntry,
    count=_ct_count,
    sample=_ct_sample,
    build=lambda entry, params, ctx, instance=0: _ct_build(_bundled(entry), params, ctx, instance),
    doc="the bundled real abdomen-pelvis CT (TotalSegmentator's Apache-2.0 example, metal implant in the left "
    "femur) and its deformed population",
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


def _pelvis_build(entry, params: dict, ctx: BuildContext, instance: int = 0) -> Subject:
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


class PelvisToolEntry(PelvisEntry):
    source: Literal["pelvis_tool"] = "pelvis_tool"
    tool: str = Field("continuum_manipulator", description="tool kind (phantoms.tools.TOOLS)")

    @field_validator("tool")
    @classmethod
    def _known_tool(cls, v):
        return _check_tool(v)


def _pelvis_tool_sample(entry, rng: np.random.Generator) -> dict:
    from phantoms.tools import sample_tool_parameters

    return {"pelvis": _pelvis_sample(entry, rng), "tool": sample_tool_parameters(entry.tool, rng)}


def _pelvis_tool_build(entry, params: dict, ctx: BuildContext, instance: int = 0) -> Subject:
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
    "tool takes the place of the anatomy it occupies (projectors.mesh.displaced_areal_density)",
)


# ---------------------------------------------------------------------------
# chest phantom with COVID-19 lesions (phantoms.chest, phantoms.lesions)


class ChestEntry(Ranges):
    source: Literal["chest_lesions"] = "chest_lesions"
    count: int = Field(4, ge=1, le=100000, strict=True, description="number of phantom instances")
    spacing_mm: float = Field(3.0, ge=0.5, le=10.0, description="voxel size, mm")
    lesions: LesionEntry = Field(default_factory=LesionEntry, description="COVID-19 lesions in the lungs")


def _chest_sample(entry, rng: np.random.Generator) -> dict:
    from phantoms.chest import sample_chest_parameters

    # lesion placement depends on the built lungs, so it is drawn in build() from this recorded seed
    return {"chest": sample_chest_parameters(rng).to_dict(), "lesion_seed": int(rng.integers(0, 2**63 - 1))}


def _chest_build(entry, params: dict, ctx: BuildContext, instance: int = 0) -> Subject:
    from phantoms.chest import ChestParameters, build_chest
    from phantoms.totalseg import task_structures

    chest = build_chest(ChestParameters.from_dict(params["chest"]), spacing=entry.spacing_mm)
    volume, lesions = _with_lesions(chest.volume, np.random.default_rng(params["lesion_seed"]), entry.lesions)
    return phantom_subject(
        volume,
        ctx,
        structures=task_structures(ctx.task.foreground, volume.label_names, required=False),
        landmarks={k: np.asarray(v, dtype=np.float64) for k, v in chest.landmarks.items()},
        target=volume.center_world,
        name="chest_phantom",
        info={"lesions": lesions},
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
    "bundled_pelvis": BUNDLED_PELVIS,
    "pelvis": PELVIS,
    "pelvis_tool": PELVIS_TOOL,
    "chest_lesions": CHEST_LESIONS,
}


def check_entry(entry, task) -> None:
    """Refuse an entry whose CT cannot be read or lacks the anatomy ``task`` needs (phantoms: nothing to check)."""
    if entry.source == "bundled_pelvis":
        entry = _bundled(entry)
    if entry.source != "ct":
        return
    label_names = entry.label_names
    if isinstance(label_names, dict):
        label_names = {int(k): v for k, v in label_names.items()}
    vol = Volume.from_file(entry.path, labels=entry.labels, label_names=label_names)
    ct_structures(vol, entry.classes, task.name, task.foreground, entry.path)


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

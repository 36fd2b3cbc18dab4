"""The ``synthex render`` configuration: a YAML file read into typed models (pydantic).

Every key has a default, so an empty file (or no file) is a valid config: the
built-in default hip dataset. A key the models do not know, a value of the
wrong type or outside its range gets one :class:`ConfigError` naming the key
(``views.alpha_deg``), and a typo gets the closest known key as a suggestion.

    cfg = load_config("hip.yaml", overrides={"n": 100, "image.size": 128})
    cfg.views.alpha_deg              # (-25.0, 25.0)
    cfg.to_json()                    # the plain JSON form plan.json and manifest.json store

The ranges of the simulation-level randomization (``views``, ``physics``,
``materials``) are the models of :mod:`domain_randomization.simulation`; the
subject entries are those of :mod:`synthex.subjects`. Sample ``i`` of a dataset
is a pure function of (resolved config, seed, i). ``RenderConfig.model_json_schema()``
(``synthex render --print-schema``) exports the schema; :func:`schema_reference`
gives the docs' config table.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError, create_model, field_validator, model_validator

from domain_randomization.simulation import MaterialRanges, PhysicsRanges, Ranges, ViewRanges
from projectors.ct_prep import CTPrepParams
from projectors.geometry import GEOMETRY_PRESETS, CArm, GeometryError
from synthex import subjects as subject_sources
from synthex.tasks import TASKS, Task, get_task


class ConfigError(ValueError):
    """An invalid render configuration; the message names the offending key."""


DEFAULT_N = 48


Pixels = Annotated[int, Field(ge=16, le=4096, strict=True)]
Names = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=0)]
RUNTIME = {"runtime": True}  # json_schema_extra of keys that do not change what is rendered


class ImageConfig(Ranges):
    size: Pixels | tuple[Pixels, Pixels] = Field(
        128, description="detector pixels: N along the detector's long side (square pixels), or [width, height]")
    pixel_size_mm: float | None = Field(
        None, gt=0.0, le=50.0, description="detector pixel pitch in mm (default: detector size / pixels)"
    )


class GeometryConfig(Ranges):
    preset: str = Field("mobile_carm", description="imaging geometry (projectors.geometry.GEOMETRY_PRESETS: "
                        f"{', '.join(GEOMETRY_PRESETS)}); the keys below override it")
    sdd: float | None = Field(None, ge=100.0, le=5000.0, description="source-detector distance, mm (default: the preset's)")
    sid: float | None = Field(None, ge=50.0, le=5000.0, description="source-isocentre distance, mm (default: the preset's; "
                              "presets with the patient at the detector fit it to the patient per view)")
    detector_mm: float | tuple[float, float] | None = Field(
        None, description="detector size, mm: one number (square) or [width, height] (default: the preset's)")
    view: Literal["ap", "pa", "lateral"] | None = Field(None, description="view the angles start from (default: the preset's)")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v):
        if v not in GEOMETRY_PRESETS:
            close = difflib.get_close_matches(str(v), list(GEOMETRY_PRESETS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown geometry preset {v!r}; known: {sorted(GEOMETRY_PRESETS)}{hint}")
        return v

    @field_validator("detector_mm")
    @classmethod
    def _detector(cls, v):
        sizes = [v] if isinstance(v, (int, float)) else list(v or [])
        if any(not 10.0 <= d <= 1000.0 for d in sizes):
            raise ValueError(f"detector sides must lie in [10, 1000] mm, got {v}")
        return v


def section_from_dataclass(cls, name: str) -> type[Ranges]:
    """A config section (a typed model) with the fields, types, defaults and docs (``metadata["doc"]``)
    of a parameter dataclass; a valid section builds that dataclass, so its own checks apply."""
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: (hints[f.name], Field(f.default, description=f.metadata.get("doc", ""))) for f in dataclasses.fields(cls)
    }

    def _builds(self):
        try:
            cls(**self.model_dump())
        except ValueError as e:
            raise ValueError(str(e)) from None
        return self

    return create_model(name, __base__=Ranges, __validators__={"_builds": model_validator(mode="after")(_builds)},
                        **fields)


CTPrepConfig = section_from_dataclass(CTPrepParams, "CTPrepConfig")


class ProjectorConfig(Ranges):
    mode: Literal["exact", "trilinear"] = Field("exact", description="projector: exact path lengths (Siddon) or trilinear marching")
    device: str = Field("auto", min_length=1, description="cpu, cuda, cuda:N or auto", json_schema_extra=RUNTIME)


class LabelsConfig(Ranges):
    min_path_mm: float = Field(
        0.1, ge=0.0, le=100.0,
        description="a class covers a pixel where its path length exceeds this, mm (projectors.labels.MASK_THRESHOLD_MM)",
    )


class DatasetConfig(Ranges):
    shard_size: int = Field(16, ge=1, le=100000, description="samples per shard file")
    workers: int = Field(1, ge=1, le=1024, description="local worker processes", json_schema_extra=RUNTIME)


SubjectEntry = Annotated[
    Union[tuple(s.entry for s in subject_sources.SOURCES.values())],  # noqa: UP007
    Field(discriminator="source"),
]


class RenderConfig(Ranges):
    """A resolved render configuration (every default filled in)."""

    task: str = Field("hip", description="what the dataset is for: sets the class and landmark names "
                      f"({', '.join(TASKS)} or custom)")
    seed: int = Field(0, ge=0, le=2**63 - 1, strict=True, description="run seed; sample i is a pure function of (config, seed, i)")
    n: int | None = Field(None, ge=1, le=10**8, strict=True,
                          description=f"number of images (default: views.per_subject x number of subjects, or {DEFAULT_N})")
    output: str | None = Field(None, description="dataset folder (the --out flag overrides it)", json_schema_extra=RUNTIME)
    classes: Names | None = Field(None, description="class names without background (default: the task's)")
    landmarks: Names | None = Field(None, description="landmark names (default: the task's)")
    subjects: list[SubjectEntry] | None = Field(
        None, min_length=1,
        description="subject sources: {source: ct, path: ...} or {source: PHANTOM, count: N} "
        "(default: the task's built-in source)",
    )
    image: ImageConfig = Field(default_factory=ImageConfig)
    geometry: GeometryConfig = Field(default_factory=GeometryConfig)
    ct_prep: CTPrepConfig = Field(default_factory=CTPrepConfig, description="preparation of CT subjects "
                                  "(projectors.ct_prep): body, contrast, metal, slices, coverage")
    views: ViewRanges = Field(default_factory=ViewRanges)
    physics: PhysicsRanges = Field(default_factory=PhysicsRanges)
    materials: MaterialRanges = Field(default_factory=MaterialRanges)
    projector: ProjectorConfig = Field(default_factory=ProjectorConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)

    @property
    def task_spec(self) -> Task:
        """The task with this config's classes and landmarks (a ``custom`` task is built from them)."""
        base = TASKS.get(self.task)
        if base is not None and tuple(self.classes) == base.foreground and tuple(self.landmarks) == base.landmarks:
            return base
        return Task(
            name=self.task, description=base.description if base else "custom task",
            classes=("background", *self.classes), landmarks=tuple(self.landmarks),
            priority=tuple(p for p in (base.priority if base else ()) if p in self.classes),
        )

    def carm(self) -> CArm:
        """The imaging geometry: ``geometry.preset`` with this config's overrides and detector pixels."""
        g = self.geometry
        over = {k: v for k, v in (("sdd", g.sdd), ("sid", g.sid), ("view", g.view), ("detector_mm", g.detector_mm))
                if v is not None}
        if self.image.pixel_size_mm is not None:
            over["pitch"] = self.image.pixel_size_mm
        return CArm.preset(g.preset, size=self.image.size, **over)

    @property
    def pixel_size_mm(self) -> tuple[float, float]:
        """Detector pixel pitch (du, dv), mm."""
        return self.carm().pixel_size

    @property
    def image_size(self) -> tuple[int, int]:
        """Detector pixels (width, height)."""
        return self.carm().size

    def to_json(self) -> dict:
        """The plain JSON form (what plan.json and manifest.json store)."""
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------
# errors that name the key


def _where(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc):
    """The model class whose field ``loc[-1]`` is (for typo suggestions), and ``loc`` without union tags."""
    model, clean = RenderConfig, []
    while len(loc) > 1 and isinstance(loc[-1], str) and _is_type_tag(loc[-1]):
        loc = loc[:-1]  # the union member pydantic tried last ('image.size' -> 'constrained-int')
    for part in loc[:-1]:
        if isinstance(part, int):
            clean.append(part)
            continue
        if model is not None and part in getattr(model, "model_fields", {}):
            clean.append(part)
            ann = model.model_fields[part].annotation
            model = _first_model(ann)
        elif part in subject_sources.SOURCES:  # the tag pydantic puts in a discriminated union's location
            model = subject_sources.SOURCES[part].entry
        elif model is None and _is_type_tag(part):  # a union member pydantic tried ('constrained-int', 'tuple[...]')
            continue
        else:
            clean.append(part)
            model = None
    return model, tuple(clean) + tuple(loc[-1:])


def _is_type_tag(part: str) -> bool:
    return any(c in part for c in "[-") or part in ("int", "float", "str", "bool", "none", "list", "dict", "tuple")


def _first_model(ann):
    import typing

    if isinstance(ann, type) and issubclass(ann, Ranges):
        return ann
    for arg in typing.get_args(ann):
        m = _first_model(arg)
        if m is not None:
            return m
    return None


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"


def config_error(err: ValidationError) -> ConfigError:
    """One :class:`ConfigError` naming the key of the first problem pydantic found."""
    e = err.errors()[0]
    model, loc = _model_at(e["loc"])
    kind = e["type"]
    item = ""
    # a position inside a value (image.size[0], views.alpha_deg[1]) is reported on its key; list entries
    # (subjects[2]) are keys of their own
    for k, part in enumerate(loc):
        if isinstance(part, int) and k > 0 and loc[k - 1] != "subjects":
            item, loc = f"item {part}: ", loc[:k]
            break
    where = _where(loc)
    if kind == "extra_forbidden":
        known = model.model_fields if model is not None else {}
        return ConfigError(f"unknown config key {where!r}{_suggest(loc[-1], known)}")
    if kind == "union_tag_invalid":
        tag = e["ctx"]["tag"]
        close = difflib.get_close_matches(str(tag), list(subject_sources.SOURCES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(
            f"config key '{where}.source': unknown source {tag!r}; available: {sorted(subject_sources.SOURCES)}{hint}"
        )
    if kind == "union_tag_not_found":
        return ConfigError(f"config key {where!r}: expected a mapping with a 'source' ({sorted(subject_sources.SOURCES)})")
    if kind == "missing":
        return ConfigError(f"config key {where!r} is required but missing")
    msg = item + e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    shown = "" if isinstance(got, dict) or got is None or "got" in msg or repr(got) in msg else f", got {got!r}"
    return ConfigError(f"config key {where!r}: {msg}{shown}")


# ---------------------------------------------------------------------------
# resolving


def _set_dotted(data: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted!r}: {p!r} is not a mapping")
    node[parts[-1]] = value


def _merge(base, top):
    """``top`` on ``base``, nested mappings merged (``top`` wins)."""
    if not (isinstance(base, dict) and isinstance(top, dict)):
        return top
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(base.get(k), v) if k in base else v
    return out


def resolve_config(data: dict | None = None, overrides: dict | None = None, base_dir: Path | None = None) -> RenderConfig:
    """Validate a config mapping (+ dotted-key ``overrides``) into a resolved :class:`RenderConfig`.

    Relative paths of CT subjects are resolved against ``base_dir`` (the
    config file's folder). Raises :class:`ConfigError` naming the key.
    """
    data = copy.deepcopy(data) if data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a mapping of keys, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    task_name = data.get("task", "hip")
    if task_name != "custom":
        if not isinstance(task_name, str) or task_name not in TASKS:
            close = difflib.get_close_matches(str(task_name), [*TASKS, "custom"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"config key 'task': must be one of {[*TASKS, 'custom']}, got {task_name!r}{hint}")
        data = _merge(get_task(task_name).defaults, data)
    try:
        cfg = RenderConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        raise config_error(e) from None
    return _complete(cfg)


def _complete(cfg: RenderConfig) -> RenderConfig:
    """Fill what depends on other keys: the task's classes, landmarks and subjects, n and views per subject."""
    task = TASKS.get(cfg.task)
    classes = list(task.foreground) if cfg.classes is None and task else cfg.classes
    landmarks = list(task.landmarks) if cfg.landmarks is None and task else (cfg.landmarks or [])
    if not classes:
        raise ConfigError("config key 'classes': task 'custom' needs a list of class names")
    if "background" in classes:
        raise ConfigError("config key 'classes': list the foreground classes only ('background' is class 0)")
    if len(classes) > 254:
        raise ConfigError("config key 'classes': at most 254 classes fit the uint8 label map")
    if len(set(classes)) != len(classes) or len(set(landmarks)) != len(landmarks):
        raise ConfigError("config key 'classes'/'landmarks': names must be unique")
    try:
        cfg.carm()
    except GeometryError as e:
        key = "geometry.sid" if "sid" in str(e) else "geometry"
        raise ConfigError(f"config key {key!r}: {e}") from None
    subjects = cfg.subjects
    if subjects is None:
        if not (task and task.default_subjects):
            raise ConfigError(
                f"config key 'subjects': task {cfg.task!r} has no built-in subjects; "
                "list CT subjects ({source: ct, path: ..., labels: ...})"
            )
        subjects = TypeAdapter(list[SubjectEntry]).validate_python(list(task.default_subjects))
    try:  # a folder or glob of CTs is one entry per CT in the resolved config (the plan lists every CT)
        subjects = [e for entry in subjects for e in
                    (subject_sources.expand_ct_entry(entry) if entry.source == "ct" else [entry])]
    except subject_sources.SubjectError as e:
        raise ConfigError(f"config key 'subjects': {e}") from None
    n_subjects = subject_sources.count_subjects(subjects)
    per, n = cfg.views.per_subject, cfg.n
    if n is None:
        n = per * n_subjects if per is not None else DEFAULT_N
    if per is None:
        per = -(-n // n_subjects)
    if n > per * n_subjects:
        raise ConfigError(f"config key 'n': {n} images need more than {n_subjects} subjects x views.per_subject {per}")
    return cfg.model_copy(update={
        "classes": list(classes), "landmarks": list(landmarks), "subjects": subjects, "n": n,
        "views": cfg.views.model_copy(update={"per_subject": per}),
    })


def read_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_config(path=None, overrides: dict | None = None) -> RenderConfig:
    """Read, validate and resolve a YAML config (``None``: the built-in default)."""
    if path is None:
        return resolve_config({}, overrides)
    return resolve_config(read_yaml(path), overrides, base_dir=Path(path).resolve().parent)


def _runtime_keys(model: type = RenderConfig, prefix: str = "") -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        where = f"{prefix}.{name}" if prefix else name
        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("runtime"):
            out.append(where)
        sub = _first_model(f.annotation)
        if sub is not None and sub is not model and not str(name) == "subjects":
            out.extend(_runtime_keys(sub, where))
    return out


def rendering_config(cfg: RenderConfig | dict) -> dict:
    """The JSON config without runtime-only keys (output, workers, device): what
    determines the samples. Two runs may resume each other iff these match."""
    out = copy.deepcopy(cfg.to_json() if isinstance(cfg, RenderConfig) else cfg)
    for dotted in _runtime_keys():
        node, *parts = [out, *dotted.split(".")]
        for p in parts[:-1]:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return out


def to_yaml(cfg: RenderConfig) -> str:
    return yaml.safe_dump(cfg.to_json(), sort_keys=False, default_flow_style=None)


def schema_reference() -> list[tuple[str, Any, str]]:
    """(dotted key, default, doc) for every key: the docs' config reference table."""
    rows = []

    def walk(model, prefix: str):
        for name, f in model.model_fields.items():
            where = f"{prefix}.{name}" if prefix else name
            sub = _first_model(f.annotation)
            if sub is not None and name != "subjects":
                walk(sub, where)
            else:
                default = f.get_default(call_default_factory=True)
                rows.append((where, json.loads(json.dumps(default)), f.description or ""))

    walk(RenderConfig, "")
    return rows


def subject_reference() -> list[tuple[str, str, Any, str]]:
    """(source, key, default, doc) of every subject entry key."""
    rows = []
    for name, src in subject_sources.SOURCES.items():
        for key, f in src.entry.model_fields.items():
            if key == "source":
                continue
            default = None if f.is_required() else f.get_default(call_default_factory=True)
            rows.append((name, key, json.loads(json.dumps(default, default=str)), f.description or ""))
    return rows

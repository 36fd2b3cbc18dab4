"""The downstream tasks of SyntheX (Gao et al. 2023): one declaration per task, used by rendering and training.

A :class:`Task` says what a dataset for it is labelled with and how models on it
are judged:

* render side: ``classes`` and ``landmarks`` a dataset is labelled with, the
  subjects used when a config lists none (``default_subjects``), the task's
  config defaults (``defaults``, under the user's config), which class wins where
  classes overlap in a label image (``priority``);
* training side: metric groups (``metrics``), other names a dataset may use for a
  class or landmark (``aliases``), the detector pixel pitch SyntheX reports for
  its real data (``pixel_size_mm``).

``classes[0]`` is always ``"background"`` (a class index is a label value). This
module imports nothing of synthex, so the dataset reader and training can import
it without the renderer. Add a task with :func:`register_task`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class TaskError(ValueError):
    """A task or a dataset's labels that do not fit it (a clear, user-facing error)."""


class UnknownTaskError(TaskError):
    pass


class MissingLabelsError(TaskError):
    """A dataset lacks a class or landmark the task needs."""


def normalize_name(name: str) -> str:
    """Compare names loosely: ``"FH-l"``, ``"fh_l"`` and ``"FH l"`` are the same landmark."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


@dataclass(frozen=True)
class Task:
    """A downstream task (see the module docstring for what each field is for)."""

    name: str
    description: str
    classes: tuple[str, ...]  # index = label value; classes[0] == "background"
    landmarks: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("dice",)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pixel_size_mm: float | None = None
    default_subjects: tuple[dict, ...] = ()  # subject entries used when a config lists none
    defaults: dict = field(default_factory=dict)
    priority: tuple[str, ...] = ()  # classes that win overlaps in label images, strongest first
    optional: tuple[str, ...] = ()  # classes a dataset may lack (they are then background in it)
    instances: tuple[str, ...] = ()  # classes whose connected components are separate objects (COCO instances)

    def __post_init__(self):
        if not self.classes or self.classes[0] != "background":
            raise TaskError(f"task {self.name!r}: classes must start with 'background', got {self.classes}")
        if len(set(self.classes)) != len(self.classes) or len(set(self.landmarks)) != len(self.landmarks):
            raise TaskError(f"task {self.name!r}: class and landmark names must be unique")
        unknown = [c for c in (*self.priority, *self.optional, *self.instances) if c not in self.classes[1:]]
        if unknown:
            raise TaskError(f"task {self.name!r}: priority/optional/instances name unknown classes {unknown}")

    @property
    def foreground(self) -> tuple[str, ...]:
        """The classes without background (what a render config lists)."""
        return self.classes[1:]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_landmarks(self) -> int:
        return len(self.landmarks)

    def _names_for(self, name: str) -> set[str]:
        return {normalize_name(name)} | {normalize_name(a) for a in self.aliases.get(name, ())}

    def class_lookup(self, dataset_classes) -> list[int]:
        """For each dataset class index, the task class index it becomes
        (dataset classes the task does not use become background)."""
        wanted = {n: i for i, c in enumerate(self.classes) for n in self._names_for(c)}
        lookup = [wanted.get(normalize_name(c), 0) for c in dataset_classes]
        missing = [c for i, c in enumerate(self.classes) if i > 0 and i not in lookup and c not in self.optional]
        if missing:
            raise MissingLabelsError(
                f"task {self.name!r} needs the classes {list(self.foreground)}; the dataset has "
                f"{list(dataset_classes)} and lacks {missing}"
            )
        return lookup

    def landmark_order(self, dataset_landmarks) -> list[int]:
        """For each task landmark, its index in the dataset's landmark list."""
        have = {normalize_name(n): i for i, n in enumerate(dataset_landmarks)}
        order, missing = [], []
        for name in self.landmarks:
            hits = [have[n] for n in self._names_for(name) if n in have]
            (order.append(hits[0]) if hits else missing.append(name))
        if missing:
            raise MissingLabelsError(
                f"task {self.name!r} needs the landmarks {list(self.landmarks)}; the dataset has "
                f"{list(dataset_landmarks) or 'none'} and lacks {missing}"
            )
        return order


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in TASKS:
        raise TaskError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), list(TASKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}{hint}") from None


_SIDES = (("l", "left"), ("r", "right"))
HIP_LANDMARK_KINDS = ("FH", "GSN", "IOF", "MOF", "SPS", "IPS", "ASIS")
# SyntheX / DeepFluoro's 14 hip landmarks in the dataset's spelling (DeepFluoro writes FH-l)
HIP_LANDMARKS = tuple(f"{lm}_{s}" for lm in HIP_LANDMARK_KINDS for s, _ in _SIDES)

register_task(Task(
    name="hip",
    description="pelvis/hip fluoroscopy: 6 bone classes + 14 anatomical landmarks (SyntheX / DeepFluoro)",
    classes=("background", "hemipelvis_left", "hemipelvis_right", "vertebrae", "upper_sacrum",
             "femur_left", "femur_right"),
    landmarks=HIP_LANDMARKS,
    metrics=("dice", "landmarks"),
    aliases={
        "hemipelvis_left": ("left_hemipelvis", "hip_left", "pelvis_left"),
        "hemipelvis_right": ("right_hemipelvis", "hip_right", "pelvis_right"),
        "vertebrae": ("vertebra", "spine", "lumbar_vertebrae"),
        "upper_sacrum": ("sacrum",),
        "femur_left": ("left_femur",),
        "femur_right": ("right_femur",),
        **{f"{lm}_{s}": (f"{side}_{lm}", f"{lm}_{side}") for lm in HIP_LANDMARK_KINDS for s, side in _SIDES},
    },
    pixel_size_mm=0.194,
    # the bundled real abdomen-pelvis CT and 7 deformed instances of it (synthex.subjects, phantoms.data)
    default_subjects=({"source": "bundled_pelvis"},),
))

register_task(Task(
    name="tool",
    description="surgical tool (continuum manipulator) segmentation + base/tip landmarks + detection",
    classes=("background", "tool"),
    landmarks=("base", "tip"),
    metrics=("dice", "landmarks", "detection"),
    aliases={"tool": ("manipulator", "instrument", "continuum_manipulator", "robot"),
             "base": ("tool_base", "start"), "tip": ("tool_tip", "end")},
    pixel_size_mm=0.5804,
    # SyntheX's continuum manipulator in the bundled real pelvis CT (and its deformed instances)
    default_subjects=({"source": "bundled_pelvis"},),
))

register_task(Task(
    name="covid",
    description="chest X-ray COVID-19 lung lesion segmentation + image-level lesion presence "
                "(lungs are labelled too, so that a lesion's share of the lungs can be measured)",
    classes=("background", "lung", "lesion"),
    # real COVID-19 sets (e.g. QaTa-COV19) label lesions only: a dataset without lungs is accepted, its lungs
    # counting as background (rendered sets always have them)
    optional=("lung",),
    instances=("lesion",),  # each lesion is an object (one COCO annotation per lesion)
    metrics=("dice", "pixel_confusion", "presence"),
    aliases={"lesion": ("lesions", "covid_lesion", "infection", "covid"), "lung": ("lungs",)},
    # the chest phantom with lesions (30% of instances lesion-free); with a chest CT: synthex render --ct
    default_subjects=({"source": "chest_lesions"},),
    # chest radiographs: the erect PA chest at the wall stand (projectors.geometry preset chest_pa: 180 cm,
    # 43 cm detector, patient at the detector), high kV with a grid, near-PA views, 224 px
    defaults={
        "geometry": {"preset": "chest_pa"},
        "views": {"alpha_deg": [-5.0, 5.0], "beta_deg": [-5.0, 5.0], "target_jitter_mm": 10.0},
        # high kV with a grid; portable chest films (common in COVID-19 wards) are often CR plates
        "physics": {"kvp": [100.0, 125.0], "grid_probability": 1.0, "cr_probability": 0.5},
        "image": {"size": 224},
    },
    priority=("lesion",),
))

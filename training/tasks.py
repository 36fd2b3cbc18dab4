"""The downstream tasks of SyntheX (Gao et al. 2023) as data, not code paths.

A :class:`Task` names the classes its segmentation head predicts, the
landmarks its heatmap head predicts and the metric groups it reports. Every
task runs through the same model, loss, training loop and evaluation; only
these declarations differ. Add a task with :func:`register_task`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class TrainingError(ValueError):
    """Bad input to training or evaluation (a clear, user-facing error)."""


class UnknownTaskError(TrainingError):
    pass


class MissingLabelsError(TrainingError):
    """A dataset lacks a class or landmark the task needs."""


def normalize_name(name: str) -> str:
    """Compare names loosely: ``"FH-l"``, ``"fh_l"`` and ``"FH l"`` are the same landmark."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


@dataclass(frozen=True)
class Task:
    """A downstream task.

    ``classes``: segmentation classes, index 0 = background. ``aliases``: other
    names a dataset may use for a class or landmark (normalized with
    :func:`normalize_name`). ``metrics``: metric groups reported by
    :mod:`training.report` (``dice``, ``landmarks``, ``detection``,
    ``pixel_confusion``, ``presence``). ``pixel_size_mm``: detector pixel pitch
    assumed when a dataset does not say (the value SyntheX reports for its data).
    """

    name: str
    description: str
    classes: tuple[str, ...]
    landmarks: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("dice",)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pixel_size_mm: float | None = None

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
        missing = [c for i, c in enumerate(self.classes) if i > 0 and i not in lookup]
        if missing:
            raise MissingLabelsError(
                f"task {self.name!r} needs the classes {list(self.classes[1:])}; the dataset has "
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
        raise TrainingError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}") from None


_SIDES = (("l", "left"), ("r", "right"))

register_task(Task(
    name="hip",
    description="pelvis/hip fluoroscopy: 6 bone classes + 14 anatomical landmarks (SyntheX / DeepFluoro)",
    classes=("background", "hemipelvis_left", "hemipelvis_right", "vertebrae", "upper_sacrum",
             "femur_left", "femur_right"),
    landmarks=tuple(f"{lm}_{s}" for lm in ("FH", "GSN", "IOF", "MOF", "SPS", "IPS", "ASIS") for s, _ in _SIDES),
    metrics=("dice", "landmarks"),
    aliases={
        "hemipelvis_left": ("left_hemipelvis", "hip_left", "pelvis_left"),
        "hemipelvis_right": ("right_hemipelvis", "hip_right", "pelvis_right"),
        "vertebrae": ("vertebra", "spine", "lumbar_vertebrae"),
        "upper_sacrum": ("sacrum",),
        "femur_left": ("left_femur",),
        "femur_right": ("right_femur",),
        **{f"{lm}_{s}": (f"{side}_{lm}", f"{lm}_{side}")
           for lm in ("FH", "GSN", "IOF", "MOF", "SPS", "IPS", "ASIS") for s, side in _SIDES},
    },
    pixel_size_mm=0.194,
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
))

register_task(Task(
    name="covid",
    description="chest X-ray COVID-19 lung lesion segmentation + image-level lesion presence",
    classes=("background", "lesion"),
    metrics=("dice", "pixel_confusion", "presence"),
    aliases={"lesion": ("lesions", "covid_lesion", "infection", "covid")},
))

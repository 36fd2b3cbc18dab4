"""Tasks: the class and landmark names a dataset is labelled with.

Class and landmark names follow SyntheX (Gao et al. 2023; see the README).
``custom`` takes both lists from the config.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    classes: tuple[str, ...]  # without background
    landmarks: tuple[str, ...]
    default_source: str | None  # subject source used when the config lists no subjects
    defaults: dict | None = None  # config defaults of this task (the user's config wins)


HIP_LANDMARKS = tuple(f"{name}_{side}" for name in ("FH", "GSN", "IOF", "MOF", "SPS", "IPS", "ASIS") for side in "lr")

TASKS = {
    "hip": Task(
        classes=("hemipelvis_left", "hemipelvis_right", "vertebrae", "upper_sacrum", "femur_left", "femur_right"),
        landmarks=HIP_LANDMARKS,
        default_source="pelvis",
    ),
    "tool": Task(classes=("manipulator",), landmarks=("base", "tip"), default_source="pelvis_tool"),
    # chest radiographs: a radiography room (180 cm source-detector, 43 cm detector), near-PA views, 224 px
    "covid": Task(
        classes=("lesion",),
        landmarks=(),
        default_source="chest_lesions",
        defaults={
            "carm": {"sdd": 1800.0, "sid": 1500.0, "detector_mm": 430.0},
            "views": {"alpha_deg": [-5.0, 5.0], "beta_deg": [-5.0, 5.0], "target_jitter_mm": 10.0},
            "image": {"size": 224},
        },
    ),
    "custom": Task(classes=(), landmarks=(), default_source=None),
}


def resolve_task(task: str, classes, landmarks) -> tuple[list[str], list[str]]:
    """The class and landmark lists of a config: the task's unless given."""
    from synthex.config import ConfigError

    spec = TASKS[task]
    classes = list(spec.classes) if classes is None else list(classes)
    landmarks = list(spec.landmarks) if landmarks is None else list(landmarks)
    if not classes:
        raise ConfigError("config key 'classes': task 'custom' needs a list of class names")
    if "background" in classes:
        raise ConfigError("config key 'classes': list the foreground classes only ('background' is class 0)")
    if len(classes) > 254:
        raise ConfigError("config key 'classes': at most 254 classes fit the uint8 label map")
    return classes, landmarks


def with_task_defaults(task: str, data: dict) -> dict:
    """``data`` on top of the task's config defaults (nested mappings merged)."""

    def merge(base, top):
        if not (isinstance(base, dict) and isinstance(top, dict)):
            return top
        out = dict(base)
        for k, v in top.items():
            out[k] = merge(base.get(k), v) if k in base else v
        return out

    spec = TASKS.get(task)
    return merge(spec.defaults, data) if spec is not None and spec.defaults else data

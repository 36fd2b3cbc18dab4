"""Training's entry to the one task registry (:mod:`synthex.tasks`) and its error type.

The tasks themselves (classes, landmarks, metrics, aliases) are declared once, in
``synthex.tasks``, for rendering and training alike; this module re-exports them.
"""

from __future__ import annotations

from synthex.tasks import (  # noqa: F401  (re-exported)
    TASKS,
    MissingLabelsError,
    Task,
    TaskError,
    UnknownTaskError,
    get_task,
    normalize_name,
    register_task,
)


#: Bad input to training or evaluation (a clear, user-facing error): the task registry's error type, so an
#: unknown task or a dataset lacking the task's labels is a TrainingError too.
TrainingError = TaskError

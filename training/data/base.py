"""What every reader returns: a :class:`Source` of :class:`Record` s.

Conventions (the same as :mod:`domain_randomization.image`):

* ``image``: float32 ``(H, W)`` in ``[0, 1]``;
* ``labels``: integer ``(H, W)`` exclusive class map, values index ``Source.classes``;
* ``landmarks``: float64 ``(L, 2)`` pixel ``(u, v)`` = (column, row), pixel
  ``(0, 0)`` the centre of the top-left pixel, NaN where undefined; order of
  ``Source.landmarks``;
* ``subject``: the CT / specimen / patient the image came from, a string; splits
  never put one subject in two parts;
* pixel size: ``(du, dv)``, mm per pixel of the *stored* image along u (columns)
  and v (rows), at the detector. Per image (``Record.pixel_size_mm``, e.g. COCO's
  ``images[i].pixel_size_mm``) or per dataset (``Source.pixel_size_mm``); where
  neither says, it is unknown (``None``) and no mm metric is computed: a reader
  never assumes one silently. ``Source.pixel_size_note`` says where the value
  came from (or that it is an assumption, for DeepFluoro files without it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from training.tasks import TrainingError

PixelSize = tuple[float, float]


def as_pixel_size(value, where: str = "pixel size") -> PixelSize | None:
    """``(du, dv)`` in mm from a number (square pixels) or a pair; ``None`` stays ``None``."""
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.shape != (2,) or not np.all(np.isfinite(arr) & (arr > 0)):
        raise DataFormatError(f"{where}: expected a positive number or [du, dv] in mm, got {value!r}")
    return float(arr[0]), float(arr[1])


def _pixel_note(meta: dict) -> str:
    """The pixel-size note of a reader whose metadata file is ``dataset.json``."""
    return "dataset.json pixel_size_mm" if meta.get("pixel_size_mm") is not None else \
        "unknown: dataset.json has no pixel_size_mm (give --pixel-size for mm metrics)"


def format_pixel_size(px: PixelSize | None) -> str:
    if px is None:
        return "unknown"
    return f"{px[0]:g} mm" if px[0] == px[1] else f"{px[0]:g} x {px[1]:g} mm (u x v)"


class DataFormatError(TrainingError):
    """A dataset file is missing, corrupt or not in the documented layout."""


@dataclass
class Record:
    image: np.ndarray
    labels: np.ndarray | None
    landmarks: np.ndarray
    subject: str
    name: str
    pixel_size_mm: PixelSize | None = None  # this image's (du, dv); None: the Source's value


@dataclass
class Source:
    """A readable labelled image collection.

    ``load(i) -> Record`` reads one item (lazily, so big datasets stay on disk);
    ``subjects`` and ``names`` are known without reading images.
    ``pixel_size_mm``: ``(du, dv)`` of the stored images (None if unknown; a single
    number is read as square pixels); a record's own value wins.
    ``pixel_size_note``: where the pixel size came from, or why it is an assumption.
    """

    path: str
    format: str
    classes: list[str]
    landmarks: list[str]
    subjects: list[str]
    names: list[str]
    load: Callable[[int], Record]
    pixel_size_mm: PixelSize | None = None
    has_labels: bool = True
    info: dict = field(default_factory=dict)
    pixel_size_note: str = ""

    def __post_init__(self):
        self.pixel_size_mm = as_pixel_size(self.pixel_size_mm, f"{self.path}: pixel size")
        if self.pixel_size_mm is None and not self.pixel_size_note:
            self.pixel_size_note = "unknown: the data does not say (give --pixel-size for mm metrics)"

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> Record:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rec = self.load(index)
        return check_record(rec, self, index)

    def describe(self) -> str:
        return (f"{self.format} dataset {self.path}: {len(self)} images, {len(set(self.subjects))} subjects, "
                f"classes {self.classes}, {len(self.landmarks)} landmarks, pixel size "
                f"{format_pixel_size(self.pixel_size_mm)} ({self.pixel_size_note})")


def check_record(rec: Record, source: Source, index: int) -> Record:
    where = f"{source.path} item {index} ({rec.name})"
    img = np.asarray(rec.image)
    if img.ndim != 2:
        raise DataFormatError(f"{where}: image must be 2D (H, W), got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise DataFormatError(f"{where}: image contains NaN or infinite values")
    if rec.labels is not None:
        lab = np.asarray(rec.labels)
        if lab.shape != img.shape:
            raise DataFormatError(f"{where}: label map {lab.shape} does not match image {img.shape}")
        if lab.size and (lab.min() < 0 or lab.max() >= len(source.classes)):
            raise DataFormatError(f"{where}: label values {lab.min()}..{lab.max()} outside the "
                                  f"{len(source.classes)} classes {source.classes}")
    lm = np.asarray(rec.landmarks, dtype=np.float64).reshape(-1, 2)
    if len(lm) != len(source.landmarks):
        raise DataFormatError(f"{where}: {len(lm)} landmarks, the dataset names {len(source.landmarks)}")
    rec.image = img.astype(np.float32, copy=False)
    rec.landmarks = lm
    rec.pixel_size_mm = as_pixel_size(rec.pixel_size_mm, where) if rec.pixel_size_mm is not None \
        else source.pixel_size_mm
    return rec


def to_unit_range(image: np.ndarray) -> np.ndarray:
    """Integer images to [0, 1] by their dtype's range; float images min-max scaled
    only if they leave [0, 1] (e.g. raw line integrals)."""
    img = np.asarray(image)
    if np.issubdtype(img.dtype, np.integer):
        return (img.astype(np.float32) / np.iinfo(img.dtype).max).astype(np.float32)
    img = img.astype(np.float32)
    if img.size and (img.min() < 0 or img.max() > 1):
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


def concat_sources(sources: list[Source]) -> Source:
    """One source from several with the same classes and landmarks; subjects are
    prefixed by their dataset so equal ids of two datasets stay apart."""
    if len(sources) == 1:
        return sources[0]
    first = sources[0]
    for s in sources[1:]:
        if s.classes != first.classes or s.landmarks != first.landmarks:
            raise DataFormatError(f"cannot combine {first.path} and {s.path}: different classes or landmarks")
    offsets = np.cumsum([0] + [len(s) for s in sources])

    def load(i):
        k = int(np.searchsorted(offsets, i, side="right") - 1)
        rec = sources[k][i - offsets[k]]  # carries its own dataset's pixel size
        rec.subject = f"{k}:{rec.subject}"
        return rec

    pitches = {s.pixel_size_mm for s in sources}
    notes = {s.pixel_size_note for s in sources}
    same = len(pitches) == 1
    return Source(path="+".join(s.path for s in sources), format="+".join(s.format for s in sources),
                  classes=first.classes, landmarks=first.landmarks,
                  subjects=[f"{k}:{sub}" for k, s in enumerate(sources) for sub in s.subjects],
                  names=[n for s in sources for n in s.names], load=load,
                  pixel_size_mm=pitches.pop() if same else None,
                  pixel_size_note=" + ".join(sorted(notes)) if same else
                  "per dataset: " + "; ".join(f"{s.path}: {format_pixel_size(s.pixel_size_mm)} ({s.pixel_size_note})"
                                              for s in sources))

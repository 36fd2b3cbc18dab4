"""Real CTs with TotalSegmentator label maps -> synthex structures.

TotalSegmentator's "total" task names ~100 structures (``hip_left``,
``femur_right``, ``lung_upper_lobe_left``, ``vertebrae_L4``, ...).
:data:`TOTALSEG_TO_SYNTHEX` says which synthex structure each belongs to
(SyntheX's hip classes, the lungs and lobes for the COVID-19 task, other
bones and organs under their own names), and :func:`remap_labels` rewrites a
volume's label map accordingly (a lookup table, one pass). Materials stay
HU-based for real CTs: the CT already measured them. A metal implant, which
TotalSegmentator does not label, is found by HU (:func:`label_metal`).

Reading files is kept to the two small readers at the end.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from phantoms.landmarks import HIP_CLASSES
from projectors.volume import Volume, VolumeError


class ClassMapError(ValueError):
    """A class map that cannot be read or applied."""


LUNG_LOBES = (
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
)

_RULES: tuple[tuple[str, str], ...] = (
    # (regular expression on the TotalSegmentator name, synthex structure)
    (r"^hip_left$", "hemipelvis_left"),
    (r"^hip_right$", "hemipelvis_right"),
    (r"^femur_left$", "femur_left"),
    (r"^femur_right$", "femur_right"),
    (r"^(sacrum|vertebrae_S1)$", "upper_sacrum"),
    (r"^vertebrae_[CTL]\d+$", "vertebrae"),
    (r"^lung_(upper|middle|lower)_lobe_(left|right)$", "lung"),
    (r"^rib_(left|right)_\d+$", "ribs"),
    (r"^(clavicula|scapula|humerus)_(left|right)$", r"\1_\2"),
)

#: Synthex structure values used by :func:`remap_labels` (hip classes first, as in SyntheX).
SYNTHEX_STRUCTURES: dict[int, str] = {
    **HIP_CLASSES,
    7: "lung",
    8: "ribs",
    9: "clavicula_left",
    10: "clavicula_right",
    11: "scapula_left",
    12: "scapula_right",
    13: "humerus_left",
    14: "humerus_right",
    15: "implant",
    16: "lesion",
}


def synthex_structure(totalseg_name: str) -> str | None:
    """The synthex structure of a TotalSegmentator class name, or None (not used by synthex)."""
    for pattern, target in _RULES:
        m = re.match(pattern, totalseg_name)
        if m:
            return m.expand(target)
    return None


TOTALSEG_TO_SYNTHEX = synthex_structure  # the mapping, as a function of the class name


def remap_labels(volume: Volume, structures: dict[int, str] | None = None, keep_lobes: bool = False) -> Volume:
    """``volume`` with its TotalSegmentator label map rewritten to synthex structures.

    ``volume.label_names`` must hold TotalSegmentator names. Unmapped classes
    become background (0). With ``keep_lobes`` the five lung lobes keep their
    own labels (values above the synthex structures) instead of merging into
    ``lung``.
    """
    if volume.labels is None:
        raise ClassMapError(f"{volume.name}: no label map to remap")
    if not volume.label_names:
        raise ClassMapError(f"{volume.name}: the label map has no class names (pass a TotalSegmentator class map)")
    structures = dict(SYNTHEX_STRUCTURES if structures is None else structures)
    if keep_lobes:
        top = max(structures) + 1
        structures.update({top + i: lobe for i, lobe in enumerate(LUNG_LOBES)})
    value_of = {name: v for v, name in structures.items()}
    lut = np.zeros(int(max(volume.label_names.keys() | {int(volume.labels.max())})) + 1, dtype=np.int32)
    for value, name in volume.label_names.items():
        target = name if (keep_lobes and name in LUNG_LOBES) else synthex_structure(name)
        if target is not None and target in value_of:
            lut[value] = value_of[target]
    labels = lut[volume.labels]
    present = set(np.unique(labels).tolist()) - {0}
    names = {v: n for v, n in structures.items() if v in present}
    return Volume(volume.hu, volume.world_from_ijk, labels=labels, label_names=names, name=volume.name)


def label_metal(volume: Volume, threshold_hu: float = 2500.0, name: str = "implant", min_voxels: int = 10) -> Volume:
    """Add a label for metal (HU above ``threshold_hu``; bone stays below ~2000 HU) to ``volume``."""
    metal = volume.hu > threshold_hu
    if metal.sum() < min_voxels:
        return volume
    labels = np.zeros(volume.shape, np.int32) if volume.labels is None else volume.labels.copy()
    names = dict(volume.label_names)
    value = next((v for v, n in names.items() if n == name), max(names, default=0) + 1)
    labels[metal] = value
    names[value] = name
    return Volume(volume.hu, volume.world_from_ijk, labels=labels, label_names=names, name=volume.name)


def sphere_fit_ready(volume: Volume) -> bool:
    return volume.labels is not None and {"femur_left", "femur_right"} <= set(volume.label_names.values())


# --- readers --------------------------------------------------------------------------


def read_classmap(path) -> dict[int, str]:
    """Class values -> names from a JSON ``{"1": "spleen", ...}`` or a CSV with ``structure`` and ``id`` columns."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ClassMapError(f"no such class map file: {p}")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ClassMapError(f"{p}: not valid JSON ({e})") from None
        try:
            return {int(k): str(v) for k, v in data.items()}
        except (AttributeError, ValueError):
            raise ClassMapError(f"{p}: expected an object of class value -> name") from None
    if p.suffix.lower() == ".csv":
        with p.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"structure", "id"} <= set(rows[0]):
            raise ClassMapError(f"{p}: a class map CSV needs 'structure' and 'id' columns")
        return {int(r["id"]): r["structure"] for r in rows}
    raise ClassMapError(f"{p}: class maps must be .json or .csv")


def read_labelled_ct(ct_path, labels_path, classmap_path, name: str | None = None) -> Volume:
    """A NIfTI CT (HU) with its label map (same grid) and class names, in world RAS mm."""
    import nibabel as nib

    paths = [Path(ct_path).expanduser(), Path(labels_path).expanduser()]
    for p in paths:
        if not p.is_file():
            raise VolumeError(f"no such file: {p}")
    ct = nib.load(str(paths[0]))
    seg = nib.load(str(paths[1]))
    if ct.shape[:3] != seg.shape[:3] or not np.allclose(ct.affine, seg.affine, atol=1e-3):
        raise VolumeError(f"{paths[1]} is not on the grid of {paths[0]} (shape or affine differ)")
    hu = np.asarray(ct.dataobj, dtype=np.float32)
    labels = np.asarray(seg.dataobj).astype(np.int32)
    return Volume(hu, ct.affine, labels=labels, label_names=read_classmap(classmap_path), name=name or paths[0].name)

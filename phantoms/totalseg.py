"""Real CTs with TotalSegmentator label maps -> synthex structures.

TotalSegmentator's "total" task names ~100 structures (``hip_left``,
``femur_right``, ``lung_upper_lobe_left``, ``vertebrae_L4``, ...).
:data:`TOTALSEG_TO_SYNTHEX` says which synthex structure each belongs to
(SyntheX's hip classes, the lungs and lobes for the COVID-19 task, other
bones and organs under their own names), and :func:`remap_labels` rewrites a
volume's label map accordingly (a lookup table, one pass). Materials stay
HU-based for real CTs (the CT measured them), except metal: an implant,
which TotalSegmentator does not label, is found by HU (:func:`label_metal`)
and given a metal at its real density (:func:`implant_material_model`); both
use :mod:`projectors.ct_prep` (the one implementation of metal detection and
metal materials, also used by ``prepare_ct``).

Read a CT with its TotalSegmentator label map and class map with
``Volume.from_file(ct, labels=seg, label_names="classmap.json")``.
"""

from __future__ import annotations

import re

import numpy as np

from phantoms.landmarks import HIP_CLASSES
from projectors.ct_prep import metal_mask, metal_material_model
from projectors.materials import MaterialModel
from projectors.volume import Volume


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
    """Add a label ``name`` for metal (:func:`projectors.ct_prep.metal_mask`: HU above ``threshold_hu`` in
    groups of at least ``min_voxels``; bone stays below ~2000 HU) to ``volume``, for its masks."""
    metal, _ = metal_mask(volume, threshold_hu, min_voxels)
    if not metal.any():
        return volume
    labels = np.zeros(volume.shape, np.int32) if volume.labels is None else volume.labels.copy()
    names = dict(volume.label_names)
    value = next((v for v, n in names.items() if n == name), max(names, default=0) + 1)
    labels[metal] = value
    names[value] = name
    return Volume(volume.hu, volume.world_from_ijk, labels=labels, label_names=names, name=volume.name)


def implant_material_model(volume: Volume, material: str = "titanium_alloy", density: float | None = 4.43,
                           name: str = "implant") -> MaterialModel:
    """HU-based materials, except the ``name`` label: ``material`` at ``density`` (g/cm^3).

    A CT clips metal at its top HU (about 3000-4000), which the HU-density
    calibration reads as dense bone (about 3 g/cm^3); a Ti-6Al-4V stem is 4.43
    g/cm^3 and a CoCr head 8.3 (``material="cocr", density=8.3``). See
    :func:`projectors.ct_prep.metal_material_model`.
    """
    values = [v for v, n in volume.label_names.items() if n == name]
    return metal_material_model(volume, material, threshold_hu=None, density=density, labels=values)

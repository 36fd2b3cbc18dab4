"""Real CTs with TotalSegmentator (or other) label maps -> synthex classes.

A label map names its structures in its model's vocabulary: TotalSegmentator's
"total" task (``hip_left``, ``femur_right``, ``sacrum``, ``vertebrae_L4``,
``lung_upper_lobe_left``, ...), its ``total_mr`` task (``vertebrae``,
``lung_left``), CTPelvic1K-style nnU-Net datasets (``left_hip``,
``lumbar_spine``), or synthex's own class names. :data:`CLASS_STRUCTURES` is
the one table that says which structure names make each synthex class, and
:func:`task_structures` applies it to a label map's names (from a dict, a
TotalSegmentator JSON class map, an nnU-Net ``dataset.json`` or a CSV table:
``projectors.io.read_label_names`` reads all of them). :func:`remap_labels`
rewrites a volume's label map into synthex classes with the same table.

Materials stay HU-based for real CTs (the CT measured them), except metal: an
implant, which TotalSegmentator does not label, is found by HU
(:func:`label_metal`) and given a metal at its real density
(:func:`implant_material_model`); both use :mod:`projectors.ct_prep` (the one
implementation of metal detection and metal materials, also used by ``prepare_ct``).

Read a CT with its label map and class map with
``Volume.from_file(ct, labels=seg, label_names="classmap.json")``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

from phantoms.landmarks import HIP_CLASSES
from projectors.ct_prep import metal_mask, metal_material_model
from projectors.materials import MaterialModel
from projectors.volume import Volume


class ClassMapError(ValueError):
    """A class map that cannot be read or applied, or a label map that lacks a class's structures."""


LUNG_LOBES = (
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
)

#: Default structure names of each synthex class: full-match regular expressions on a label
#: map's structure names. A class is always also made by a structure of its own name.
#:
#: * SyntheX's hip classes (Gao et al. 2023, from DeepFluoro): each hemipelvis is the whole hip
#:   bone (TotalSegmentator ``hip_left``: ilium, ischium and pubis); ``vertebrae`` is every
#:   vertebra above the sacrum (only L3-L5 ever show in hip views; the others are mapped so a wide
#:   view never shows an unlabelled vertebra); ``upper_sacrum`` takes TotalSegmentator's
#:   ``vertebrae_S1`` and its whole ``sacrum`` (no model splits the sacrum; the coccyx stays
#:   unlabelled bone).
#: * ``lung`` (the organ COVID-19 lesions grow in): the five lobes, or a lung per side.
#: * other bones and organs keep TotalSegmentator's names (a class of the same name).
CLASS_STRUCTURES: dict[str, tuple[str, ...]] = {
    "hemipelvis_left": ("hip_left", "left_hip", "os_coxae_left", "innominate_left"),
    "hemipelvis_right": ("hip_right", "right_hip", "os_coxae_right", "innominate_right"),
    "vertebrae": (r"vertebrae_[CTL]\d+", "vertebrae", "vertebra", "lumbar_spine", r"[CTL]\d+"),
    "upper_sacrum": ("sacrum", "vertebrae_S1", "S1"),
    "femur_left": ("left_femur",),
    "femur_right": ("right_femur",),
    "lung": (r"lung_(upper|middle|lower)_lobe_(left|right)", "lung_left", "lung_right", "lungs"),
    "ribs": (r"rib_(left|right)_\d+", "rib", "costal_cartilages"),
    "lesion": ("lung_lesion", "covid_lesion", "infection", "lesions"),
}

#: The classes each built-in task needs from a CT's label map (the hip task's are SyntheX's 6
#: classes; COVID-19 lesions are inserted into the lungs, so the covid task needs ``lung``; a tool
#: is a mesh, so the tool task needs nothing from the label map).
TASK_CT_CLASSES: dict[str, tuple[str, ...]] = {
    "hip": tuple(HIP_CLASSES.values()),
    "covid": ("lung",),
    "tool": (),
}

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


def _names(label_names) -> list[str]:
    if isinstance(label_names, Mapping):
        return [str(n) for n in label_names.values()]
    if isinstance(label_names, str) or not isinstance(label_names, Iterable):
        raise ClassMapError(f"label names must be a {{value: name}} mapping or a list of names, got {label_names!r}")
    return [str(n) for n in label_names]


def _class_of(name: str, classes: Iterable[str]) -> str | None:
    """The class a structure name belongs to: a class of its own name first, else the first class whose
    default patterns (:data:`CLASS_STRUCTURES`) match it."""
    classes = list(classes)
    if name in classes:
        return name
    for c in classes:
        if any(re.fullmatch(p, name) for p in CLASS_STRUCTURES.get(c, ())):
            return c
    return None


def task_structures(task_classes, label_names, required=True) -> dict[str, list[str]]:
    """``{class: [structure names]}``: which of a label map's structures make each class.

    ``label_names``: the label map's ``{value: name}`` (``Volume.label_names``) or a list of
    names. Each structure goes to one class: the class of its own name, else the first class
    (in ``task_classes`` order) whose default names (:data:`CLASS_STRUCTURES`) match it.
    With ``required`` (default) a class that no structure makes is an error naming the missing
    classes and the names that would have made them; with ``required=False`` it maps to ``[]``.
    """
    classes = [str(c) for c in task_classes]
    names = _names(label_names)
    out: dict[str, list[str]] = {c: [] for c in classes}
    for name in names:
        c = _class_of(name, classes)
        if c is not None:
            out[c].append(name)
    missing = [c for c in classes if not out[c]]
    if required and missing:
        wanted = "; ".join(f"{c} <- {' | '.join((c, *CLASS_STRUCTURES.get(c, ())))}" for c in missing)
        shown = ", ".join(sorted(names)[:40]) + (" ..." if len(names) > 40 else "")
        raise ClassMapError(
            f"the label map has no structure for class(es) {', '.join(missing)} (expected names: {wanted}); "
            f"its structures are: {shown or 'none'}. Map classes to structure names with `classes:`."
        )
    return out


def synthex_structure(name: str, classes=None) -> str | None:
    """The synthex class a structure name belongs to (default classes: :data:`SYNTHEX_STRUCTURES`), or None."""
    return _class_of(name, SYNTHEX_STRUCTURES.values() if classes is None else classes)


def remap_labels(volume: Volume, structures: dict[int, str] | None = None, keep_lobes: bool = False) -> Volume:
    """``volume`` with its label map rewritten to synthex classes (one lookup table, one pass).

    ``structures``: ``{value: class}`` of the output (default :data:`SYNTHEX_STRUCTURES`); each
    input structure goes to its class by :func:`task_structures`. Unmapped structures become
    background (0). With ``keep_lobes`` the five lung lobes keep their own labels (values above
    the synthex structures) instead of merging into ``lung``.
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
    members = task_structures(list(value_of), volume.label_names, required=False)
    target = {s: value_of[c] for c, names in members.items() for s in names}
    lut = np.zeros(int(max(volume.label_names.keys() | {int(volume.labels.max())})) + 1, dtype=np.int32)
    for value, name in volume.label_names.items():
        lut[value] = target.get(name, 0)
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

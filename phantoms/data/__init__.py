"""Data bundled with synthex: one real CT, the built-in real subject.

:func:`totalseg_pelvis` gives the paths of TotalSegmentator's Apache-2.0
example abdomen-pelvis CT, its 61-structure label map and the class map that
names the labels (see ``SOURCE.md`` and the licence beside them). It is the
only third-party data file in the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path


@dataclass(frozen=True)
class BundledCT:
    """Paths of a bundled CT, its label map, class map, licence and source note."""

    ct: Path
    labels: Path
    label_names: Path
    licence: Path
    source: Path

    def read(self):
        """The CT as a :class:`~projectors.volume.Volume` with its named label map (TotalSegmentator names)."""
        from projectors.volume import Volume

        return Volume.from_file(self.ct, labels=self.labels, label_names=self.label_names)


def _path(name: str) -> Path:
    p = Path(str(files(__name__).joinpath(name)))
    if not p.is_file():
        raise FileNotFoundError(
            f"bundled data file {name} not found at {p}: synthex must be installed from its source or a wheel "
            "(not a zip archive) for its package data to be readable"
        )
    return p


def totalseg_pelvis() -> BundledCT:
    """TotalSegmentator's example abdomen-pelvis CT (Apache-2.0), the built-in real hip subject.

    A real CT from the diaphragm down to the acetabula and femoral heads,
    122 x 101 x 112 voxels of 3 mm (RAS, HU), with a metal hip implant in the
    patient's LEFT femur; its label map is TotalSegmentator's fast "total"
    model output (61 structures, e.g. ``hip_left``, ``femur_right``,
    ``sacrum``, ``vertebrae_L5``), its class map names them. See ``SOURCE.md``.
    """
    return BundledCT(
        ct=_path("example_ct.nii.gz"),
        labels=_path("example_seg_total_fast.nii.gz"),
        label_names=_path("totalseg_total_classmap.json"),
        licence=_path("LICENSE.TotalSegmentator-Apache-2.0.txt"),
        source=_path("SOURCE.md"),
    )

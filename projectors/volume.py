"""CT volumes: Hounsfield units on a voxel grid placed in world (RAS, mm)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from projectors.geometry import GeometryError, Transform
from projectors.io import VolumeError, as_path, read_ct  # noqa: F401  (VolumeError and as_path re-exported)


@dataclass(frozen=True, eq=False)
class Volume:
    """A scalar CT volume in Hounsfield units with its voxel-to-world affine.

    ``hu[i, j, k]`` is the value at voxel centre ``world_from_ijk @ (i, j, k, 1)``
    in world millimetres, patient RAS. Voxel ``(i, j, k)`` covers
    ``[i - 0.5, i + 0.5] x ...`` in index space; nothing outside the volume's
    box is ever sampled.

    ``labels`` (optional, same shape, integer) is a label map; ``label_names``
    maps label values to structure names (``{1: "femur_left", ...}``).
    """

    hu: np.ndarray
    world_from_ijk: Transform
    labels: np.ndarray | None = None
    label_names: dict[int, str] = field(default_factory=dict)
    name: str = "volume"

    def __post_init__(self):
        hu = np.asarray(self.hu)
        if hu.ndim != 3:
            raise VolumeError(f"{self.name}: a volume needs 3D data, got an array of shape {hu.shape}")
        if min(hu.shape) < 1:
            raise VolumeError(f"{self.name}: volume has an empty axis, shape {hu.shape}")
        if not np.issubdtype(hu.dtype, np.number) or np.issubdtype(hu.dtype, np.complexfloating):
            raise VolumeError(f"{self.name}: volume data must be real numbers, got dtype {hu.dtype}")
        hu = np.ascontiguousarray(hu, dtype=np.float32)
        bad = ~np.isfinite(hu)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise VolumeError(
                f"{self.name}: {int(bad.sum())} voxels are NaN or infinite (first at index {idx}); "
                "fill or mask them before rendering"
            )
        object.__setattr__(self, "hu", hu)
        try:
            affine = self.world_from_ijk if isinstance(self.world_from_ijk, Transform) else Transform(self.world_from_ijk)
        except GeometryError as e:
            raise VolumeError(f"{self.name}: invalid voxel-to-world affine: {e}") from None
        object.__setattr__(self, "world_from_ijk", affine)
        spacing = np.linalg.norm(affine.R, axis=0)
        if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
            raise VolumeError(f"{self.name}: voxel spacing must be positive, got {spacing}")
        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.shape != hu.shape:
                raise VolumeError(f"{self.name}: label map shape {lab.shape} differs from volume shape {hu.shape}")
            if not np.issubdtype(lab.dtype, np.integer):
                if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
                    raise VolumeError(f"{self.name}: label map must hold whole numbers")
            if lab.size and (lab.min() < 0 or lab.max() > 65535):
                raise VolumeError(f"{self.name}: label values must lie in 0..65535, got {lab.min()}..{lab.max()}")
            object.__setattr__(self, "labels", np.ascontiguousarray(lab, dtype=np.int32))
        object.__setattr__(self, "label_names", {int(k): str(v) for k, v in dict(self.label_names).items()})

    # -- construction ----------------------------------------------------------
    @classmethod
    def from_array(
        cls,
        hu,
        spacing=(1.0, 1.0, 1.0),
        origin=None,
        labels=None,
        label_names=None,
        name: str = "array",
    ) -> "Volume":
        """A volume from a numpy array of HU indexed (i, j, k) along RAS axes.

        ``spacing`` is in mm. ``origin`` is the world position of voxel (0, 0, 0);
        by default the volume is centred on the world origin.
        """
        hu = np.asarray(hu)
        sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
        if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise VolumeError(f"{name}: voxel spacing must be positive, got {tuple(sp)}")
        if hu.ndim != 3:
            raise VolumeError(f"{name}: a volume needs 3D data, got an array of shape {hu.shape}")
        if origin is None:
            origin = -(np.asarray(hu.shape) - 1) / 2.0 * sp
        m = np.eye(4)
        m[:3, :3] = np.diag(sp)
        m[:3, 3] = origin
        return cls(hu, Transform(m), labels=labels, label_names=label_names or {}, name=name)

    @classmethod
    def from_file(cls, path, labels=None, label_names=None, **options) -> "Volume":
        """Read a CT (NIfTI, NRRD, MHA/MHD, a DICOM series folder, .npz/.npy), optionally with a label map.

        ``options`` go to the format's reader (e.g. ``series_uid=`` for DICOM,
        ``spacing=`` for ``.npy``); see ``projectors.io``.
        """
        return cls(**read_ct(path, labels=labels, label_names=label_names, **options))

    # -- properties -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.world_from_ijk.R, axis=0)

    @property
    def ijk_from_world(self) -> Transform:
        return self.world_from_ijk.inv()

    @property
    def corners_world(self) -> np.ndarray:
        """The 8 corners of the volume's box (voxel boundaries), world mm."""
        n = np.asarray(self.shape) - 0.5
        c = np.array([[x, y, z] for x in (-0.5, n[0]) for y in (-0.5, n[1]) for z in (-0.5, n[2])])
        return self.world_from_ijk.apply(c)

    @property
    def center_world(self) -> np.ndarray:
        return self.world_from_ijk.apply((np.asarray(self.shape) - 1) / 2.0)

    def with_labels(self, labels, label_names=None) -> "Volume":
        return replace(self, labels=labels, label_names=label_names or self.label_names)

    def posed(self, world_from_volume: Transform) -> "Volume":
        """The same volume moved rigidly in world: ``world_from_ijk' = world_from_volume @ world_from_ijk``."""
        return replace(self, world_from_ijk=world_from_volume @ self.world_from_ijk)

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing)
        lab = f", {len(np.unique(self.labels))} labels" if self.labels is not None else ""
        return f"Volume({self.name!r}, shape={self.shape}, spacing=({sp}) mm{lab})"

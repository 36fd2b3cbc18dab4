"""The DeepFluoro / SyntheX hip HDF5 layout (how SyntheX's real hip data is distributed).

    land-names/num-lands          int, L
    land-names/land-00 ...        landmark names (strings), in order
    <specimen>/projs              (N, rows, cols) float images (one group per specimen: "01" ... "06")
    <specimen>/segs               (N, rows, cols) integer labels: 0 background, 1 left hemipelvis,
                                  2 right hemipelvis, 3 vertebrae, 4 upper sacrum, 5 left femur, 6 right femur
    <specimen>/lands              (N, 2, L) landmark (column, row) pixels; non-finite = not labelled

    attribute pixel_size_mm        optional, on the file's root: [du, dv] mm per pixel of the stored
                                   images (synthex's export writes it)

The specimen group name is the subject. Landmarks outside the image are kept
as NaN (not labelled in this image). Pixel size: the ``pixel_size_mm`` argument,
else the root attribute, else SyntheX's convention for its DeepFluoro files
(0.194 mm detector pixels at 1536 columns: ``0.194 * 1536 / cols``, since the
stored images are often downsampled), stated as an assumption in
``Source.pixel_size_note`` and in every report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataFormatError, Record, Source, as_pixel_size, to_unit_range

DEEPFLUORO_CLASSES = ["background", "hemipelvis_left", "hemipelvis_right", "vertebrae", "upper_sacrum",
                      "femur_left", "femur_right"]
DETECTOR_PITCH_MM, DETECTOR_COLUMNS = 0.194, 1536


def is_deepfluoro(path: Path) -> bool:
    if path.suffix.lower() not in (".h5", ".hdf5") or not path.is_file():
        return False
    import h5py

    try:
        with h5py.File(path, "r") as h:
            return "land-names" in h
    except OSError:
        return False


def _name(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def read_deepfluoro(path, pixel_size_mm: float | None = None) -> Source:
    import h5py

    path = Path(path)
    try:
        h = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as e:
        raise DataFormatError(f"{path} cannot be opened as HDF5: {e}") from None
    with h:
        if "land-names" not in h:
            raise DataFormatError(f"{path}: no 'land-names' group; not the DeepFluoro/SyntheX hip layout")
        n_lands = int(np.asarray(h["land-names/num-lands"]))
        landmarks = [_name(np.asarray(h[f"land-names/land-{k:02d}"])[()]) for k in range(n_lands)]
        groups = sorted(k for k in h.keys() if k != "land-names" and isinstance(h[k], h5py.Group))
        index, shape = [], None
        for g in groups:
            missing = [d for d in ("projs", "segs", "lands") if d not in h[g]]
            if missing:
                raise DataFormatError(f"{path}: specimen group {g!r} lacks {missing}")
            n, rows, cols = h[g]["projs"].shape
            if h[g]["segs"].shape != (n, rows, cols) or h[g]["lands"].shape != (n, 2, n_lands):
                raise DataFormatError(f"{path}: specimen {g!r}: projs {h[g]['projs'].shape}, segs "
                                      f"{h[g]['segs'].shape}, lands {h[g]['lands'].shape} do not agree "
                                      f"with {n_lands} landmarks")
            shape = (rows, cols)
            index += [(g, r) for r in range(n)]
        stored = h.attrs.get("pixel_size_mm")
    if not index:
        raise DataFormatError(f"{path}: no specimen groups with projs/segs/lands")
    if pixel_size_mm is not None:
        note = "given by the caller (--pixel-size)"
    elif stored is not None:
        pixel_size_mm, note = as_pixel_size(stored, f"{path}: attribute pixel_size_mm"), \
            "HDF5 root attribute pixel_size_mm"
    else:
        pixel_size_mm = DETECTOR_PITCH_MM * DETECTOR_COLUMNS / shape[1]
        note = (f"ASSUMED {pixel_size_mm:g} mm = {DETECTOR_PITCH_MM} mm x {DETECTOR_COLUMNS} / {shape[1]} "
                "columns (SyntheX's DeepFluoro detector); the file has no pixel_size_mm attribute")
    handle = {}

    def load(i: int) -> Record:
        if "h" not in handle:
            handle["h"] = h5py.File(path, "r")
        g, r = index[i]
        grp = handle["h"][g]
        image = to_unit_range(np.asarray(grp["projs"][r], dtype=np.float32))
        labels = np.asarray(grp["segs"][r]).astype(np.int64)
        lm = np.asarray(grp["lands"][r], dtype=np.float64).T.copy()  # (L, 2) (column, row)
        rows, cols = image.shape
        outside = ~np.all(np.isfinite(lm), axis=1) | (lm[:, 0] < -0.5) | (lm[:, 0] >= cols - 0.5) \
            | (lm[:, 1] < -0.5) | (lm[:, 1] >= rows - 0.5)
        lm[outside] = np.nan
        return Record(image=image, labels=labels, landmarks=lm, subject=g, name=f"{g}/{r:03d}")

    return Source(path=str(path), format="deepfluoro", classes=list(DEEPFLUORO_CLASSES), landmarks=landmarks,
                  subjects=[g for g, _ in index], names=[f"{g}/{r:03d}" for g, r in index], load=load,
                  pixel_size_mm=pixel_size_mm, pixel_size_note=note)

"""The DeepFluoro / SyntheX hip HDF5 layout, so SyntheX's training scripts read it:

    land-names/num-lands             int
    land-names/land-00 ... land-LL   landmark names (strings)
    "01", "02", ...                  one group per subject ("specimen"), in subject order, with
        projs  [N, rows, cols] float32   images
        segs   [N, rows, cols] uint8     exclusive label maps
        lands  [N, 2, L] float32         (column, row) per landmark; NaN where undefined

Landmark coordinates are synthex pixel coordinates (pixel centres at whole
numbers). Sample indices per group are in ``<group>/sample_index`` (extra). The
detector pixel size of the stored images is the root attribute ``pixel_size_mm``
= [du, dv] (mm), which the training readers use instead of DeepFluoro's default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def export_deepfluoro(ds, out: Path, **options) -> Path:
    import h5py

    subject = ds.read_all("subject_id")
    path = out / "synthex_deepfluoro.h5"
    with h5py.File(path, "w") as f:
        f.attrs["pixel_size_mm"] = np.asarray(ds.manifest["pixel_size_mm"], dtype=np.float64)
        g = f.create_group("land-names")
        g.create_dataset("num-lands", data=np.int64(len(ds.landmarks)))
        for k, name in enumerate(ds.landmarks):
            g.create_dataset(f"land-{k:02d}", data=name)
        for gi, sid in enumerate(np.unique(subject)):
            idx = np.flatnonzero(subject == sid)
            samples = [ds[int(i)] for i in idx]
            grp = f.create_group(f"{gi + 1:02d}")
            grp.create_dataset("projs", data=np.stack([s["image"] for s in samples]).astype(np.float32))
            grp.create_dataset("segs", data=np.stack([s["labels"] for s in samples]).astype(np.uint8))
            grp.create_dataset("lands", data=np.stack([s["landmarks"].T for s in samples]).astype(np.float32))
            grp.create_dataset("sample_index", data=idx.astype(np.int64))
            grp.attrs["subject_id"] = int(sid)
    return path

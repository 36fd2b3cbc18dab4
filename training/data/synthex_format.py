"""Training reader of the synthex dataset format (``synthex render`` output).

Manifest parsing, shard listing and checksums are the format's own code in
:mod:`synthex.dataset`; this module only adapts a dataset to a training
:class:`Source` (one record per sample, subject ids for the splits) and keeps
each shard open while training reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataFormatError, Record, Source, as_pixel_size


def is_synthex_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


def read_synthex(path, verify: bool = True) -> Source:
    """Open a synthex dataset folder. ``verify`` checks every shard's sha256
    against the manifest (a truncated or altered shard is an error, not silently
    fewer images)."""
    import h5py

    from synthex.dataset import DatasetError, open_dataset

    root = Path(path)
    try:
        ds = open_dataset(root, verify=verify)  # verify: sha256 and identity of every shard, before reading
    except DatasetError as e:
        raise DataFormatError(str(e)) from None
    manifest = ds.manifest
    for key in ("classes", "landmarks", "image_size"):
        if key not in manifest:
            raise DataFormatError(f"{root / 'manifest.json'}: missing the '{key}' entry")
    H, W = (int(x) for x in manifest["image_size"])
    index, subjects, names = [], [], []  # per sample: (shard file, row), subject id, name
    has_labels = True
    for shard in ds.shards:
        f = shard.path
        try:
            with shard.open() as h:
                if "images" not in h:
                    raise DataFormatError(f"shard {f} has no 'images' dataset")
                n = h["images"].shape[0]
                if h["images"].shape[1:] != (H, W):
                    raise DataFormatError(f"shard {f}: images are {h['images'].shape[1:]}, manifest says {(H, W)}")
                if n != shard.count:
                    raise DataFormatError(f"shard {f} holds {n} samples, manifest.json says {shard.count}")
                if "subject_id" not in h:
                    raise DataFormatError(f"shard {f} has no 'subject_id': subject-level splits are impossible")
                has_labels &= "labels" in h
                sid = h["subject_id"][:]
        except OSError as e:
            raise DataFormatError(f"shard {f} cannot be read as HDF5 ({e}); it is corrupt or truncated") from None
        index += [(f, r) for r in range(n)]
        subjects += [str(int(s)) for s in sid]
        names += [f"{shard.first_index + r:06d}" for r in range(n)]

    handles: dict[Path, object] = {}

    def load(i: int) -> Record:
        f, r = index[i]
        h = handles.get(f)
        if h is None:
            h = handles[f] = h5py.File(f, "r")
        try:
            image = h["images"][r]
            labels = h["labels"][r] if "labels" in h else None
            if "landmarks" in h and len(manifest["landmarks"]):
                lm = np.array(h["landmarks"][r], dtype=np.float64)
                if "landmark_visible" in h:
                    lm[~h["landmark_visible"][r].astype(bool)] = np.nan
            else:
                lm = np.zeros((0, 2))
        except (OSError, KeyError) as e:
            raise DataFormatError(f"shard {f} row {r} cannot be read ({e}); the shard is corrupt") from None
        return Record(image=image, labels=labels, landmarks=lm, subject=subjects[i], name=names[i])

    pitch = as_pixel_size(manifest.get("pixel_size_mm"), f"{root / 'manifest.json'}: pixel_size_mm")
    info = {"task": manifest.get("task"), "seed": manifest.get("seed"),
            "synthex_version": manifest.get("synthex_version")}
    return Source(path=str(root), format="synthex", classes=list(manifest["classes"]),
                  landmarks=list(manifest["landmarks"]), subjects=subjects, names=names, load=load,
                  pixel_size_mm=pitch, has_labels=has_labels, info=info,
                  pixel_size_note="manifest.json pixel_size_mm" if pitch else
                  "unknown: manifest.json has no pixel_size_mm (give --pixel-size for mm metrics)")

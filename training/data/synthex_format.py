"""Read-only reader of the synthex dataset format v1 (``manifest.json`` + HDF5 shards).

NOTE: written while ``synthex.dataset`` (the format's writer and reader, issue
5) was not yet in main; it reads exactly the layout of that shared contract
(``manifest.json`` written last; ``shards/NNNNN.h5`` with ``images``, ``labels``,
``landmarks``, ``landmark_visible``, ``subject_id``, ...). ``synthex.dataset``
has since landed; a test checks that both readers return the same arrays for
a ``synthex render`` output. Follow-up: build :func:`read_synthex` on
``synthex.dataset.open_dataset`` / ``validate`` and drop the duplicate parsing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .base import DataFormatError, Record, Source

FORMAT = "synthex-dataset"
SUPPORTED_VERSIONS = (1,)


def is_synthex_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(root: Path) -> dict:
    mpath = root / "manifest.json"
    if not mpath.is_file():
        hint = " (plan.json exists: the render did not finish; resume it)" if (root / "plan.json").exists() else ""
        raise DataFormatError(f"{root} is not a complete synthex dataset: manifest.json is missing{hint}")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{mpath} is not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT:
        raise DataFormatError(f"{mpath}: 'format' is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") not in SUPPORTED_VERSIONS:
        raise DataFormatError(f"{mpath}: format_version {manifest.get('format_version')!r} is not supported "
                              f"(this reader knows {SUPPORTED_VERSIONS})")
    for key in ("classes", "landmarks", "shards", "image_size"):
        if key not in manifest:
            raise DataFormatError(f"{mpath}: missing the '{key}' entry")
    return manifest


def read_synthex(path, verify: bool = True) -> Source:
    """Open a synthex dataset folder. ``verify`` checks every shard's sha256
    against the manifest (a truncated or altered shard is an error, not silently
    fewer images)."""
    import h5py

    root = Path(path)
    manifest = read_manifest(root)
    H, W = (int(x) for x in manifest["image_size"])
    classes = list(manifest["classes"])
    index = []  # (shard file, row)
    subjects, names = [], []
    has_labels = True
    for entry in manifest["shards"]:
        f = root / entry["file"]
        if not f.is_file():
            raise DataFormatError(f"{root}: shard {entry['file']} listed in manifest.json is missing")
        if verify and "sha256" in entry and _sha256(f) != entry["sha256"]:
            raise DataFormatError(f"shard {f} is corrupt: its sha256 differs from manifest.json "
                                  "(truncated or modified file; re-render that shard)")
        try:
            with h5py.File(f, "r") as h:
                if "images" not in h:
                    raise DataFormatError(f"shard {f} has no 'images' dataset")
                n = h["images"].shape[0]
                if h["images"].shape[1:] != (H, W):
                    raise DataFormatError(f"shard {f}: images are {h['images'].shape[1:]}, manifest says {(H, W)}")
                if n != entry.get("count", n):
                    raise DataFormatError(f"shard {f} holds {n} samples, manifest.json says {entry['count']}")
                has_labels &= "labels" in h
                sid = h["subject_id"][:] if "subject_id" in h else None
                sidx = h["sample_index"][:] if "sample_index" in h else np.arange(n) + entry.get("first_index", 0)
        except OSError as e:
            raise DataFormatError(f"shard {f} cannot be read as HDF5 ({e}); it is corrupt or truncated") from None
        if sid is None:
            raise DataFormatError(f"shard {f} has no 'subject_id': subject-level splits are impossible")
        index += [(f, r) for r in range(n)]
        subjects += [str(int(s)) for s in sid]
        names += [f"{int(i):06d}" for i in sidx]

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

    pitch = manifest.get("pixel_size_mm")
    if pitch is not None:
        pitch = float(np.mean(pitch))
    return Source(path=str(root), format="synthex", classes=classes, landmarks=list(manifest["landmarks"]),
                  subjects=subjects, names=names, load=load, pixel_size_mm=pitch, has_labels=has_labels,
                  info={"task": manifest.get("task"), "seed": manifest.get("seed"),
                        "synthex_version": manifest.get("synthex_version")})

"""A folder of images + masks + landmark JSON (the simplest layout a lab can write):

    FOLDER/dataset.json            {"classes": ["background", ...],        class index = mask value
                                    "landmarks": ["FH_l", ...],            optional
                                    "pixel_size_mm": 0.194,                optional, mm per pixel (or [du, dv])
                                    "subjects": {"<stem>": "<subject>"}}   optional; else each image is its own subject
    FOLDER/images/<stem>.png       image (PNG/TIFF/JPEG 8/16-bit, or .npy float in [0, 1])
    FOLDER/masks/<stem>.png        optional: class index per pixel (same stem)
    FOLDER/landmarks/<stem>.json   optional: {"FH_l": [u, v], "FH_r": null, ...}

Landmarks are pixel ``(u, v)`` = (column, row) with pixel (0, 0) the centre of
the top-left pixel; ``null`` or an absent name = not labelled in that image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import DataFormatError, Record, Source, _pixel_note, as_pixel_size
from .images import XRAY_SUFFIXES, find_with_stem, read_mask, read_xray


def is_folder_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "images").is_dir() and (path / "dataset.json").is_file()


def read_folder(path) -> Source:
    root = Path(path)
    meta_path = root / "dataset.json"
    if not meta_path.is_file() or not (root / "images").is_dir():
        raise DataFormatError(f"{root}: an image folder dataset needs dataset.json and images/")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{meta_path} is not valid JSON: {e}") from None
    if "classes" not in meta:
        raise DataFormatError(f"{meta_path}: needs a 'classes' list (class index = mask value)")
    stems = sorted(p.stem for p in (root / "images").iterdir() if p.suffix.lower() in XRAY_SUFFIXES)
    if not stems:
        raise DataFormatError(f"{root / 'images'} holds no images ({', '.join(XRAY_SUFFIXES)})")
    landmarks = list(meta.get("landmarks", []))
    subj = meta.get("subjects") or {}
    unknown = sorted(set(subj) - set(stems))
    if unknown:
        raise DataFormatError(f"{meta_path}: 'subjects' names images that do not exist: {unknown[:5]}")
    subjects = [str(subj.get(s, s)) for s in stems]
    has_masks = (root / "masks").is_dir()

    def load(i: int) -> Record:
        stem = stems[i]
        image = read_xray(find_with_stem(root / "images", stem)).image
        labels = read_mask(root / "masks", stem) if has_masks else None
        lm = np.full((len(landmarks), 2), np.nan)
        lpath = root / "landmarks" / f"{stem}.json"
        if lpath.is_file():
            try:
                pts = json.loads(lpath.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataFormatError(f"{lpath} is not valid JSON: {e}") from None
            extra = sorted(set(pts) - set(landmarks))
            if extra:
                raise DataFormatError(f"{lpath}: landmarks {extra} are not listed in {meta_path}")
            for k, name in enumerate(landmarks):
                if pts.get(name) is not None:
                    lm[k] = pts[name]
        return Record(image=image, labels=labels, landmarks=lm, subject=subjects[i], name=stem)

    info = {} if subj else {"warning": "no 'subjects' in dataset.json: each image is its own subject"}
    return Source(path=str(root), format="folder", classes=list(meta["classes"]), landmarks=landmarks,
                  subjects=subjects, names=stems, load=load,
                  pixel_size_mm=as_pixel_size(meta.get("pixel_size_mm"), f"{meta_path}: pixel_size_mm"),
                  pixel_size_note=_pixel_note(meta),
                  has_labels=has_masks, info=info)

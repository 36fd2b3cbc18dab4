"""SyntheX's per-index layout (its scaled-up hip, tool and COVID-19 sets):

    ROOT/proj/00000.tiff           image (TIFF; the COVID set uses PNG)
    ROOT/seg/00000.png|.tiff       optional: class index per pixel
    ROOT/lands/00000.h5            optional: datasets ``dim1`` (L,) and ``dim2`` (L,): landmark column
                                   and row in pixels (the DeepFluoro ``lands`` order); non-finite or
                                   outside the image = not labelled
    ROOT/dataset.json              names the layout does not carry (same keys as the folder format):
                                   {"classes": [...], "landmarks": [...], "pixel_size_mm": ...,
                                    "subjects": {"00000": "<subject>"}}

Several specimens: ``ROOT/<specimen>/proj/...`` (one folder per CT), the folder
name is the subject; ``dataset.json`` stays at ROOT. With one folder and no
``subjects`` map, each image is its own subject (stated in ``Source.info``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import DataFormatError, Record, Source, _pixel_note, as_pixel_size
from .images import XRAY_SUFFIXES, find_with_stem, read_mask, read_xray


def _groups(root: Path) -> list[tuple[str | None, Path]]:
    if (root / "proj").is_dir():
        return [(None, root)]
    return sorted((p.name, p) for p in root.iterdir() if p.is_dir() and (p / "proj").is_dir())


def is_synthex_index(path: Path) -> bool:
    return path.is_dir() and bool(_groups(path))


def read_synthex_index(path) -> Source:
    import h5py

    root = Path(path)
    groups = _groups(root) if root.is_dir() else []
    if not groups:
        raise DataFormatError(f"{root}: no proj/ folder (nor specimen folders holding one); not SyntheX's layout")
    meta_path = root / "dataset.json"
    meta = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFormatError(f"{meta_path} is not valid JSON: {e}") from None
    has_seg = all((g / "seg").is_dir() for _, g in groups)
    if has_seg and "classes" not in meta:
        raise DataFormatError(f"{root}: the seg/ masks need class names; write {meta_path} with "
                              '{"classes": ["background", ...]} (class index = mask value)')
    classes = list(meta.get("classes", ["background"]))
    landmarks = list(meta.get("landmarks", []))
    subj = meta.get("subjects") or {}

    items = []  # (group folder, stem, subject, name)
    for gname, g in groups:
        stems = sorted(p.stem for p in (g / "proj").iterdir() if p.suffix.lower() in XRAY_SUFFIXES)
        for s in stems:
            name = s if gname is None else f"{gname}/{s}"
            items.append((g, s, str(subj.get(name, gname if gname is not None else s)), name))
    if not items:
        raise DataFormatError(f"{root}: the proj/ folders hold no images ({', '.join(XRAY_SUFFIXES)})")

    def load(i: int) -> Record:
        g, stem, subject, name = items[i]
        image = read_xray(find_with_stem(g / "proj", stem)).image
        labels = read_mask(g / "seg", stem) if has_seg else None
        lm = np.full((len(landmarks), 2), np.nan)
        lpath = g / "lands" / f"{stem}.h5"
        if landmarks and lpath.is_file():
            try:
                with h5py.File(lpath, "r") as h:
                    uv = np.stack([np.asarray(h["dim1"], np.float64).ravel(), np.asarray(h["dim2"], np.float64).ravel()], 1)
            except (OSError, KeyError) as e:
                raise DataFormatError(f"{lpath}: cannot read landmark datasets dim1/dim2 ({e})") from None
            if len(uv) != len(landmarks):
                raise DataFormatError(f"{lpath} holds {len(uv)} landmarks; {meta_path} names {len(landmarks)}")
            rows, cols = image.shape
            outside = ~np.all(np.isfinite(uv), axis=1) | (uv[:, 0] < -0.5) | (uv[:, 0] >= cols - 0.5) \
                | (uv[:, 1] < -0.5) | (uv[:, 1] >= rows - 0.5)
            uv[outside] = np.nan
            lm = uv
        return Record(image=image, labels=labels, landmarks=lm, subject=subject, name=name)

    info = {}
    if groups[0][0] is None and not subj:
        info["warning"] = "one folder and no 'subjects' in dataset.json: each image is its own subject"
    return Source(path=str(root), format="synthex-index", classes=classes, landmarks=landmarks,
                  subjects=[it[2] for it in items], names=[it[3] for it in items], load=load,
                  pixel_size_mm=as_pixel_size(meta.get("pixel_size_mm"), f"{meta_path}: pixel_size_mm"),
                  pixel_size_note=_pixel_note(meta),
                  has_labels=has_seg, info=info)

"""COCO instance annotations (https://cocodataset.org/#format-data) as a labelled image source.

* ``images``: ``id``, ``file_name`` (relative to the JSON's folder or its
  ``images/`` subfolder), ``width``, ``height``; an optional ``subject_id`` (or
  ``patient_id``) per image enables subject-level splits (without it each image
  is its own subject); an optional ``pixel_size_mm`` ``[du, dv]`` (mm per pixel
  of the stored image along columns and rows; a number = square pixels), else
  ``info.pixel_size_mm`` for the whole file, else unknown (no mm metrics).
* ``categories``: ``id``, ``name``, optional ``keypoints`` (names). The class
  list is ``["background"] + category names`` in the file's order; where
  annotations overlap, the later category wins.
* ``annotations``: ``image_id``, ``category_id``, ``segmentation`` as polygons
  (``[[x0, y0, x1, y1, ...], ...]``) or RLE (``{"counts": [...] or "<compressed
  string>", "size": [h, w]}``, column-major), optional ``keypoints`` ``[x, y, v, ...]``
  (v = 0: not labelled).

COCO coordinates have their origin at the top-left *corner* of the image, so a
pixel centre is at ``x + 0.5``: keypoints become ``u = x - 0.5``, and a pixel
belongs to a polygon when its centre lies inside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import DataFormatError, Record, Source, as_pixel_size
from .images import read_xray


def is_coco(path: Path) -> bool:
    return path.suffix.lower() == ".json" and path.is_file()


def _rasterize_polygons(polys, h: int, w: int) -> np.ndarray:
    from matplotlib.path import Path as MplPath

    cv, cu = np.mgrid[0:h, 0:w]
    centres = np.stack([cu.ravel() + 0.5, cv.ravel() + 0.5], axis=1)
    inside = np.zeros(h * w, dtype=bool)
    for poly in polys:
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(xy) >= 3:
            inside ^= MplPath(xy).contains_points(centres)  # even-odd: holes given as extra rings cut out
    return inside.reshape(h, w)


def rle_counts_from_string(s: str) -> list[int]:
    """Decode COCO's compressed RLE string (the ``counts`` of ``iscrowd`` masks).

    Each count is written in 5-bit groups, least significant first, as
    characters ``48 + group``; bit 0x20 of a character means "another group
    follows", bit 0x10 of the last group is the sign. From the third count on,
    the stored value is the difference to the count two places before.
    """
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("truncated compressed RLE string")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _decode_rle(rle: dict, h: int, w: int, where: str) -> np.ndarray:
    counts = rle.get("counts")
    if isinstance(counts, (str, bytes)):
        try:
            counts = rle_counts_from_string(counts.decode() if isinstance(counts, bytes) else counts)
        except ValueError as e:
            raise DataFormatError(f"{where}: {e}") from None
    if list(rle.get("size", [h, w])) != [h, w]:
        raise DataFormatError(f"{where}: RLE size {rle.get('size')} does not match the image {[h, w]}")
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w or np.any(counts < 0):
        raise DataFormatError(f"{where}: RLE counts sum to {counts.sum()}, the image has {h * w} pixels")
    values = np.arange(len(counts)) % 2  # runs alternate 0, 1, 0, ... starting with zeros
    flat = np.repeat(values, counts).astype(bool)
    return flat.reshape(w, h).T  # column-major (Fortran) order


def read_coco(path) -> Source:
    path = Path(path)
    if path.is_dir():
        path = path / "annotations.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataFormatError(f"COCO annotation file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path} is not valid JSON: {e}") from None
    for key in ("images", "categories"):
        if key not in doc:
            raise DataFormatError(f"{path} is not a COCO annotation file: no '{key}' list")
    cats = doc["categories"]
    cat_index = {c["id"]: k + 1 for k, c in enumerate(cats)}
    classes = ["background"] + [c["name"] for c in cats]
    landmarks, kp_slot = [], {}
    for c in cats:
        kp_slot[c["id"]] = []
        for name in c.get("keypoints", []):
            if name not in landmarks:
                landmarks.append(name)
            kp_slot[c["id"]].append(landmarks.index(name))
    anns: dict[int, list] = {}
    for a in doc.get("annotations", []):
        if a.get("category_id") not in cat_index:
            raise DataFormatError(f"{path}: annotation {a.get('id')} has unknown category_id {a.get('category_id')}")
        anns.setdefault(a["image_id"], []).append(a)
    images = doc["images"]
    have_subjects = all(("subject_id" in im) or ("patient_id" in im) for im in images)
    subjects = [str(im.get("subject_id", im.get("patient_id"))) if have_subjects else f"image-{im['id']}"
                for im in images]
    root = path.parent

    def load(i: int) -> Record:
        im = images[i]
        f = root / im["file_name"]
        if not f.is_file() and (root / "images" / im["file_name"]).is_file():
            f = root / "images" / im["file_name"]
        image = read_xray(f).image
        h, w = image.shape
        if (im.get("height", h), im.get("width", w)) != (h, w):
            raise DataFormatError(f"{f}: image is {h}x{w}, {path} says {im.get('height')}x{im.get('width')}")
        labels = np.zeros((h, w), dtype=np.int64)
        lm = np.full((len(landmarks), 2), np.nan)
        for a in sorted(anns.get(im["id"], []), key=lambda a: cat_index[a["category_id"]]):
            where = f"{path} annotation {a.get('id')}"
            seg = a.get("segmentation")
            if isinstance(seg, list) and seg:
                labels[_rasterize_polygons(seg, h, w)] = cat_index[a["category_id"]]
            elif isinstance(seg, dict):
                labels[_decode_rle(seg, h, w, where)] = cat_index[a["category_id"]]
            kps = a.get("keypoints")
            if kps:
                kps = np.asarray(kps, dtype=np.float64).reshape(-1, 3)
                slots = kp_slot[a["category_id"]]
                if len(kps) != len(slots):
                    raise DataFormatError(f"{where}: {len(kps)} keypoints, its category names {len(slots)}")
                for slot, (x, y, v) in zip(slots, kps):
                    if v > 0:
                        lm[slot] = (x - 0.5, y - 0.5)
        return Record(image=image, labels=labels, landmarks=lm, subject=subjects[i],
                      name=Path(im["file_name"]).stem)

    info = {} if have_subjects else {"warning": "no subject_id per image: each image is its own subject"}
    file_px = as_pixel_size((doc.get("info") or {}).get("pixel_size_mm"), f"{path}: info.pixel_size_mm")
    per_image = [as_pixel_size(im.get("pixel_size_mm"), f"{path}: image {im.get('id')} pixel_size_mm")
                 for im in images]
    pixel_sizes = [p or file_px for p in per_image]
    distinct = set(pixel_sizes)
    if None in distinct and len(distinct) > 1:
        note = (f"per image (images[i].pixel_size_mm); unknown for {sum(p is None for p in pixel_sizes)} of "
                f"{len(images)} images")
    elif None in distinct:
        note = "unknown: the COCO file has no images[i].pixel_size_mm nor info.pixel_size_mm"
    elif any(per_image):
        note = "COCO images[i].pixel_size_mm"
    else:
        note = "COCO info.pixel_size_mm"

    def load_with_pixel_size(i: int) -> Record:
        rec = load(i)
        rec.pixel_size_mm = pixel_sizes[i]
        return rec

    return Source(path=str(path), format="coco", classes=classes, landmarks=landmarks, subjects=subjects,
                  names=[Path(im["file_name"]).stem for im in images], load=load_with_pixel_size,
                  pixel_size_mm=distinct.pop() if len(distinct) == 1 else None, info=info,
                  pixel_size_note=note)

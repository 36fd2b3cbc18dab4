"""COCO export: 16-bit PNG images, one annotation per (image, present class) with
an RLE mask and its box, and one ``landmarks`` annotation per image with keypoints.

Coordinates: COCO puts pixel (0, 0) on ``[0, 1) x [0, 1)``; synthex on
``[-0.5, 0.5)^2`` (pixel centres at whole numbers), so COCO = synthex + 0.5.
Keypoint visibility: 2 = inside the image, 1 = defined but outside (coordinates
kept), 0 = undefined (coordinates 0, 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _mask_utils():
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        from synthex.exports import ExportError

        raise ExportError("the COCO export needs pycocotools: pip install 'synthex-xray[export]'") from None
    return mask_utils


def export_coco(ds, out: Path, **options) -> Path:
    from PIL import Image

    from synthex.exports import to_uint16

    mask_utils = _mask_utils()
    (out / "images").mkdir(parents=True, exist_ok=True)
    classes = ds.classes[1:]
    lm_cat = len(classes) + 1
    categories = [{"id": c + 1, "name": name, "supercategory": ds.manifest["task"]} for c, name in enumerate(classes)]
    categories.append(
        {
            "id": lm_cat,
            "name": "landmarks",
            "supercategory": "keypoints",
            "keypoints": list(ds.landmarks),
            "skeleton": [],
        }
    )
    images, annotations = [], []
    H, W = ds.manifest["image_size"]
    for shard in ds.shards:
        with shard.open() as f:
            for j in range(shard.count):
                i = int(f["sample_index"][j])
                name = f"{i:06d}.png"
                Image.fromarray(to_uint16(f["images"][j])).save(out / "images" / name)
                images.append(
                    {
                        "id": i,
                        "file_name": f"images/{name}",
                        "height": H,
                        "width": W,
                        "subject_id": int(f["subject_id"][j]),
                    }
                )
                masks = f["masks"][j]
                for c in range(masks.shape[0]):
                    if not masks[c].any():
                        continue
                    rle = mask_utils.encode(np.asfortranarray(masks[c]))
                    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                    rle["counts"] = rle["counts"].decode("ascii")
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": i,
                            "category_id": c + 1,
                            "segmentation": rle,
                            "area": float(mask_utils.area(rle)),
                            "bbox": [x, y, w, h],
                            "iscrowd": 0,
                        }
                    )
                if ds.landmarks:
                    uv, vis = f["landmarks"][j], f["landmark_visible"][j]
                    kps = []
                    for (u, v), ok in zip(uv, vis):
                        if np.isfinite(u) and np.isfinite(v):
                            kps += [float(u) + 0.5, float(v) + 0.5, 2 if ok else 1]
                        else:
                            kps += [0.0, 0.0, 0]
                    inside = np.array([k for k in zip(kps[0::3], kps[1::3], kps[2::3]) if k[2] == 2])
                    if inside.size:
                        x0, y0 = inside[:, 0].min(), inside[:, 1].min()
                        bbox = [float(x0), float(y0), float(inside[:, 0].max() - x0), float(inside[:, 1].max() - y0)]
                    else:
                        bbox = [0.0, 0.0, 0.0, 0.0]
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": i,
                            "category_id": lm_cat,
                            "keypoints": kps,
                            "num_keypoints": int(sum(k == 2 for k in kps[2::3])),
                            "bbox": bbox,
                            "area": float(bbox[2] * bbox[3]),
                            "iscrowd": 0,
                        }
                    )
    coco = {
        "info": {
            "description": f"synthex {ds.manifest['task']} dataset (synthetic X-ray)",
            "version": ds.manifest["synthex_version"],
            "seed": ds.manifest["seed"],
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    path = out / "annotations.json"
    path.write_text(json.dumps(coco))
    return path

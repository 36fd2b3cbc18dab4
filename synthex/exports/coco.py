"""COCO export: 16-bit PNG images and COCO annotations that pycocotools and COCOeval read.

- one ``segmentation`` (RLE) + ``bbox`` annotation per (image, present class); for instance
  classes (``lesion``: countable findings) one per connected component (8-connected), so that
  every lesion is its own object for detection and instance segmentation;
- one ``landmarks`` annotation per image with ``keypoints``, whose ``segmentation``/``bbox``/
  ``area`` are those of the labelled anatomy (the union of all class masks), as COCO's person
  keypoints carry the person's mask; every annotation kind therefore works with ``annToMask``
  and COCOeval (``segm``, ``bbox`` and ``keypoints``).

The pixel size is recorded the way the training readers read it: ``images[i]["pixel_size_mm"] =
[du, dv]`` (detector pitch of that image, mm) and ``info["pixel_size_mm"]`` (the dataset's).

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


def instances(mask: np.ndarray, per_component: bool) -> list[np.ndarray]:
    """The objects of one class mask: the whole mask, or each 8-connected component."""
    if not mask.any():
        return []
    if not per_component:
        return [mask]
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return [(lab == k).astype(np.uint8) for k in range(1, n + 1)]


def export_coco(ds, out: Path, instance_classes=None, **options) -> Path:
    """COCO export; classes in ``instance_classes`` (default: the task's ``instances``, e.g. the covid
    task's lesions) get one annotation per connected component, the others one per class."""
    from PIL import Image

    from synthex.exports import to_uint16

    mask_utils = _mask_utils()
    (out / "images").mkdir(parents=True, exist_ok=True)
    classes = ds.classes[1:]
    lm_cat = len(classes) + 1
    categories = [{"id": c + 1, "name": name, "supercategory": ds.manifest["task"]} for c, name in enumerate(classes)]
    if ds.landmarks:
        categories.append(
            {
                "id": lm_cat,
                "name": "landmarks",
                "supercategory": "keypoints",
                "keypoints": list(ds.landmarks),
                "skeleton": [],
            }
        )
    if instance_classes is None:
        from synthex.tasks import TASKS

        task = TASKS.get(ds.manifest["task"])
        instance_classes = task.instances if task is not None else ()
    per_component = [name in set(instance_classes) for name in classes]
    images, annotations = [], []
    H, W = ds.manifest["image_size"]
    pitch = [float(v) for v in ds.manifest.get("pixel_size_mm") or []]

    def encode(mask: np.ndarray) -> tuple[dict, list[float], float]:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        area = float(mask_utils.area(rle))
        rle["counts"] = rle["counts"].decode("ascii")
        return rle, bbox, area

    for shard in ds.shards:
        with shard.open() as f:
            for j in range(shard.count):
                i = int(f["sample_index"][j])
                name = f"{i:06d}.png"
                Image.fromarray(to_uint16(f["images"][j])).save(out / "images" / name)
                record = json.loads(f["params"][j])
                du_dv = (record.get("camera") or {}).get("pixel_size_mm") or pitch
                images.append(
                    {
                        "id": i,
                        "file_name": f"images/{name}",
                        "height": H,
                        "width": W,
                        "subject_id": int(f["subject_id"][j]),
                        "pixel_size_mm": [float(v) for v in du_dv],
                    }
                )
                masks = f["masks"][j]
                for c in range(masks.shape[0]):
                    for obj in instances(masks[c], per_component[c]):
                        rle, bbox, area = encode(obj)
                        annotations.append(
                            {
                                "id": len(annotations) + 1,
                                "image_id": i,
                                "category_id": c + 1,
                                "segmentation": rle,
                                "area": area,
                                "bbox": bbox,
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
                    anatomy = masks.any(axis=0) if masks.shape[0] else np.zeros((H, W), dtype=bool)
                    rle, bbox, area = encode(anatomy)
                    inside = np.array([k for k in zip(kps[0::3], kps[1::3], kps[2::3]) if k[2] == 2])
                    if not anatomy.any() and inside.size:  # no mask: the keypoints' own box
                        x0, y0 = inside[:, 0].min(), inside[:, 1].min()
                        bbox = [float(x0), float(y0), float(inside[:, 0].max() - x0), float(inside[:, 1].max() - y0)]
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": i,
                            "category_id": lm_cat,
                            "keypoints": kps,
                            "num_keypoints": int(sum(k == 2 for k in kps[2::3])),
                            "segmentation": rle,
                            "bbox": bbox,
                            "area": area,
                            "iscrowd": 0,
                        }
                    )
    coco = {
        "info": {
            "description": f"synthex {ds.manifest['task']} dataset (synthetic X-ray)",
            "version": ds.manifest["synthex_version"],
            "seed": ds.manifest["seed"],
            "pixel_size_mm": pitch,
            "instance_classes": [c for c, per in zip(classes, per_component) if per],
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    path = out / "annotations.json"
    path.write_text(json.dumps(coco))
    return path

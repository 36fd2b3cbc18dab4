"""Object detection from a segmentation model: scored boxes and COCO average precision.

Detections (:func:`detect_instances`): the 8-connected components of the pixels
predicted as the class (the argmax label map); each component is one detection
with the box enclosing its pixels and the score **mean predicted probability of
the class over the component's pixels** (in ``[1/C, 1]``; components whose
pixels the model is sure of rank first). Components smaller than ``min_pixels``
are dropped.

Reference objects (:func:`reference_boxes`): one box per image around every
pixel of the class (one tool per image, as in SyntheX's tool task); none when
the class is absent.

AP (:func:`average_precision`): pycocotools' ``COCOeval`` with ``iouType="bbox"``
over all images pooled (area range "all", up to 100 detections per image):
``AP@0.5`` and ``AP@[.5:.95]`` (the mean over IoU thresholds 0.50, 0.55, ...,
0.95), each with COCO's 101-point interpolated precision. The 95% CI is the
subject-clustered percentile bootstrap of :mod:`training.metrics`: COCOeval's
per-image matching is computed once, and each resample re-runs COCOeval's own
``accumulate`` on the per-image results of the drawn subjects' images and reads
the two AP numbers as ``summarize`` does (tested equal to COCOeval's ``stats``).

Boxes are ``(u0, v0, u1, v1)`` in pixel-edge coordinates of the synthex
convention (pixel centres at whole numbers, so the top-left pixel spans
``[-0.5, 0.5)``); COCO's ``[x, y, w, h]`` has its origin at the image corner:
``x = u0 + 0.5``.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from training import metrics as M


def detect_instances(prob: np.ndarray, mask: np.ndarray, min_pixels: int = 1) -> list[dict]:
    """Scored boxes ``{"box": [u0, v0, u1, v1], "score", "area"}`` of the connected components
    of ``mask`` (H, W) bool, scored by the mean of ``prob`` (H, W) over each component; best first."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    prob = np.asarray(prob, dtype=np.float64)
    comp, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    areas = ndimage.sum_labels(np.ones_like(prob), comp, idx)
    scores = ndimage.mean(prob, comp, idx)
    out = []
    for k, sl in enumerate(ndimage.find_objects(comp)):
        if areas[k] < min_pixels:
            continue
        v, u = sl
        out.append({"box": [u.start - 0.5, v.start - 0.5, u.stop - 0.5, v.stop - 0.5],
                    "score": float(scores[k]), "area": int(areas[k])})
    return sorted(out, key=lambda d: -d["score"])


def reference_boxes(mask: np.ndarray) -> list[list[float]]:
    """The reference object of an image: one box around every pixel of ``mask`` (none if empty)."""
    from projectors.labels import bounding_box

    box = bounding_box(mask)
    return [] if box is None else [[float(x) for x in box]]


def _coco_objects(gt: list[list], dets: list[list[dict]]):
    from pycocotools.coco import COCO

    from projectors.labels import box_to_coco as xywh

    images = [{"id": i, "width": 0, "height": 0} for i in range(len(gt))]
    cats = [{"id": 1, "name": "object"}]
    gt_anns, dt_anns = [], []
    for i, boxes in enumerate(gt):
        for b in boxes:
            x = xywh(b)
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": i, "category_id": 1, "bbox": x,
                            "area": x[2] * x[3], "iscrowd": 0})
    for i, ds in enumerate(dets):
        for d in ds:
            x = xywh(d["box"])
            dt_anns.append({"id": len(dt_anns) + 1, "image_id": i, "category_id": 1, "bbox": x,
                            "area": x[2] * x[3], "iscrowd": 0, "score": float(d["score"])})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "categories": cats, "annotations": gt_anns}
        coco_dt.dataset = {"images": images, "categories": cats, "annotations": dt_anns}
        coco_gt.createIndex()
        coco_dt.createIndex()
    return coco_gt, coco_dt


class _PooledCOCOeval:
    """COCOeval's per-image matching done once; AP of any multiset of those images."""

    def __init__(self, gt: list[list], dets: list[list[dict]]):
        from pycocotools.cocoeval import COCOeval

        self.n = len(gt)
        coco_gt, coco_dt = _coco_objects(gt, dets)
        self.ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        p = self.ev.params
        p.imgIds = list(range(self.n))
        # only what AP@[.5:.95] and AP@0.5 read (area "all", 100 detections): 1 accumulation instead of 12
        p.areaRng, p.areaRngLbl, p.maxDets = [p.areaRng[p.areaRngLbl.index("all")]], ["all"], [100]
        with contextlib.redirect_stdout(io.StringIO()):
            self.ev.evaluate()
        self.per_image = list(self.ev.evalImgs)
        self.t50 = int(np.flatnonzero(np.isclose(p.iouThrs, 0.5))[0])

    def ap(self, images) -> tuple[float, float]:
        """(AP@[.5:.95], AP@0.5) of the images ``images`` (indices, repeats allowed); NaN without references.

        COCOeval's ``accumulate`` on the per-image results of those images, then the two AP lines of its
        ``summarize`` (``_summarize``: the mean of ``eval["precision"]`` over IoU thresholds, recall points
        and the category, entries of -1 left out)."""
        images = np.asarray(images, dtype=np.int64)
        ev = self.ev
        ev.evalImgs = [self.per_image[int(i)] for i in images]
        ids = list(range(len(images)))
        ev.params.imgIds = ids
        ev._paramsEval.imgIds = ids
        with contextlib.redirect_stdout(io.StringIO()):
            ev.accumulate()
        prec = ev.eval["precision"][:, :, :, 0, 0]  # (IoU thresholds, recall points, categories)

        def mean(x):
            x = x[x > -1]
            return float(x.mean()) if x.size else float("nan")

        return mean(prec), mean(prec[self.t50])


def average_precision(gt: list[list], dets: list[list[dict]], subjects=None, rng: np.random.Generator | None = None,
                      n_resamples: int = 2000, min_subjects: int = M.MIN_SUBJECTS_FOR_CI) -> dict:
    """COCO AP@[.5:.95] and AP@0.5 over images (``gt[i]``: reference boxes of image i, ``dets[i]``:
    its scored detections), each with a subject-clustered 95% bootstrap CI (``subjects[i]``;
    None: every image its own subject)."""
    n = len(gt)
    subjects = [str(s) for s in (subjects if subjects is not None else range(n))]
    n_subjects = len(set(subjects))
    n_ref = sum(len(b) for b in gt)
    base = {"n_images": n, "n_subjects": n_subjects, "n_references": n_ref,
            "n_detections": sum(len(d) for d in dets)}
    if n_ref == 0:
        note = "no reference objects in these images: AP is undefined"
        return {"ap": {"value": None, "ci95": None, **base, "note": note},
                "ap50": {"value": None, "ci95": None, **base, "note": note}}
    pooled = _PooledCOCOeval(gt, dets)
    ap, ap50 = pooled.ap(np.arange(n))
    out = {"ap": {"value": ap, **base}, "ap50": {"value": ap50, **base}}
    reason = M.no_ci_reason(n_subjects, min_subjects)
    if reason:
        for k in out:
            out[k].update(ci95=None, ci_note=reason)
        return out
    rng = rng if rng is not None else np.random.default_rng(0)
    boots = M.cluster_bootstrap(pooled.ap, subjects, rng, n_resamples)  # (n_resamples, 2)
    for k, col in (("ap", 0), ("ap50", 1)):
        out[k]["ci95"] = list(M.percentile_interval(boots[:, col]))
    return out

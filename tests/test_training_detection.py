"""Detection from segmentation: scored boxes and COCO AP by pycocotools' COCOeval, against a hand
computation and against COCOeval run from scratch."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from training.detection import _PooledCOCOeval, average_precision, detect_instances, reference_boxes


def _tiny_fixture():
    # two images, one reference box each ([0, 0, 10, 10]); detections, best score first:
    #   0.95 image 0, far from anything         -> false positive at every IoU threshold
    #   0.90 image 0, the reference box itself  -> IoU 1: true positive at every threshold
    #   0.80 image 1, [0, 0, 10, 6.25]          -> IoU 62.5 / 100 = 0.625: TP at 0.50, 0.55, 0.60 only
    gt = [[[0, 0, 10, 10]], [[0, 0, 10, 10]]]
    dets = [[{"box": [50, 50, 60, 60], "score": 0.95}, {"box": [0, 0, 10, 10], "score": 0.9}],
            [{"box": [0, 0, 10, 6.25], "score": 0.8}]]
    return gt, dets


def test_coco_ap_equals_a_hand_computation():
    """COCO AP: precision made monotone (max precision at recall >= r), sampled at recall
    0, 0.01, ..., 1 (101 points), averaged; AP@[.5:.95] averages 10 IoU thresholds.

    IoU <= 0.60: ranked FP, TP, TP -> (recall, precision) = (0, 0), (1/2, 1/2), (1, 2/3); the
    interpolated precision is 2/3 at all 101 recall points -> AP = 2/3.
    IoU 0.65 .. 0.95 (7 thresholds): FP, TP, FP -> recall reaches 1/2 at precision 1/2; the 51 recall
    points 0 .. 0.50 have precision 1/2, the other 50 have 0 -> AP = 51 / 101 / 2.
    """
    gt, dets = _tiny_fixture()
    r = average_precision(gt, dets)
    assert r["ap50"]["value"] == pytest.approx(2 / 3)
    assert r["ap"]["value"] == pytest.approx((3 * 2 / 3 + 7 * 51 / 101 / 2) / 10)
    assert r["ap"]["n_references"] == 2 and r["ap"]["n_detections"] == 3
    assert r["ap"]["ci95"] is None and "fewer than 5" in r["ap"]["ci_note"]  # 2 images = 2 subjects


def test_resampled_ap_equals_cocoeval_from_scratch_on_duplicated_images():
    """The bootstrap re-accumulates COCOeval's per-image results; a resample with repeated images must
    equal COCOeval run from scratch on a dataset where those images are physically repeated."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    gt, dets = [], []
    for i in range(6):
        u, v = rng.uniform(0, 40, 2)
        gt.append([[u, v, u + 12, v + 20]] if i != 4 else [])  # image 4: nothing to find
        dets.append([{"box": [u + rng.normal(0, 2), v + rng.normal(0, 2), u + 12 + rng.normal(0, 2),
                              v + 20 + rng.normal(0, 2)], "score": float(rng.random())} for _ in range(i % 3)])
    pooled = _PooledCOCOeval(gt, dets)
    pick = [0, 0, 3, 5, 4, 2, 2, 2]

    images = [{"id": k, "width": 64, "height": 64} for k in range(len(pick))]
    g, d = [], []
    for k, i in enumerate(pick):
        for b in gt[i]:
            g.append({"id": len(g) + 1, "image_id": k, "category_id": 1, "bbox": [b[0] + 0.5, b[1] + 0.5,
                      b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0})
        for det in dets[i]:
            b = det["box"]
            d.append({"image_id": k, "category_id": 1, "bbox": [b[0] + 0.5, b[1] + 0.5, b[2] - b[0], b[3] - b[1]],
                      "score": det["score"]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "categories": [{"id": 1, "name": "tool"}], "annotations": g}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(d), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert pooled.ap(pick) == pytest.approx((ev.stats[0], ev.stats[1]))
    full = average_precision(gt, dets, subjects=[0, 1, 2, 3, 4, 5], rng=np.random.default_rng(0), n_resamples=50)
    assert full["ap"]["value"] == pytest.approx(pooled.ap(np.arange(6))[0])
    lo, hi = full["ap50"]["ci95"]
    assert lo <= full["ap50"]["value"] <= hi


def test_detections_are_components_scored_by_mean_probability():
    prob = np.zeros((8, 10))
    prob[1:3, 1:4] = 0.9          # component A: 6 px at 0.9
    prob[5:7, 6:9] = 0.6          # component B: 6 px, one of them 1.0 -> mean (5 * 0.6 + 1) / 6
    prob[6, 8] = 1.0
    mask = prob > 0.5
    d = detect_instances(prob, mask)
    assert [x["area"] for x in d] == [6, 6]
    assert d[0]["score"] == pytest.approx(0.9) and d[0]["box"] == [0.5, 0.5, 3.5, 2.5]
    assert d[1]["score"] == pytest.approx((5 * 0.6 + 1.0) / 6) and d[1]["box"] == [5.5, 4.5, 8.5, 6.5]
    # diagonal neighbours are one component (8-connectivity)
    m = np.zeros((4, 4), bool)
    m[0, 0] = m[1, 1] = True
    assert len(detect_instances(np.ones((4, 4)), m)) == 1
    assert detect_instances(np.ones((4, 4)), np.zeros((4, 4), bool)) == []
    assert reference_boxes(np.zeros((3, 3), bool)) == [] and reference_boxes(m) == [[-0.5, -0.5, 1.5, 1.5]]


def test_ap_without_detections_is_zero_and_without_references_undefined():
    gt = [[[0, 0, 4, 4]] for _ in range(3)]
    assert average_precision(gt, [[], [], []])["ap50"]["value"] == 0.0
    r = average_precision([[], []], [[{"box": [0, 0, 2, 2], "score": 0.9}], []])
    assert r["ap"]["value"] is None and "no reference objects" in r["ap"]["note"]

"""Evaluation against hand-counted values: covid presence AUC (with and without lesion-free images),
lesion Dice on positives, lesion fraction with a lung class; a test split is never randomized;
stored randomization is reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training import metrics as M
from training.data import open_source
from training.data.prepare import TaskImages
from training.evaluation import evaluate, summarize_records
from training.tasks import Task, get_task
from training.toydata import write_synthex_layout, write_toy_hip_dataset
from training.train import TrainConfig

COVID_LUNG = Task(name="covid-lung", description="covid with lungs (the lead's planned covid task)",
                  classes=("background", "lung", "lesion"), metrics=("dice", "pixel_confusion", "presence"))


def _covid_lung_dataset(root, n=12):
    """Images of 6 subjects; lungs (2 x 8 x 6 = 96 px) in all, a 4 x 4 lesion inside the left lung in odd images."""
    samples, subjects = [], []
    for i in range(n):
        lab = np.zeros((24, 24), np.uint8)
        lab[4:12, 3:9] = 1
        lab[4:12, 14:20] = 1
        if i % 2:
            lab[6:10, 4:8] = 2  # lesion wins where it overlaps the lung
        img = (0.2 + 0.3 * (lab == 1) + 0.6 * (lab == 2)).astype(np.float32)
        samples.append({"image": img, "labels": lab, "landmarks": np.zeros((0, 2)), "landmark_visible": np.zeros(0)})
        subjects.append(i // 2)
    return write_synthex_layout(root, samples, subjects, classes=["background", "lung", "lesion"], landmarks=[],
                                task="covid")


class Oracle:
    """The reference labels as prediction, with a chosen lesion score map: P(lesion) = ``score[i]`` on a
    2 x 2 patch inside the right lung of image i (lesion there when > 1/2), the reference elsewhere."""

    def __init__(self, scores: dict[int, float]):
        self.scores = scores

    def __call__(self, batch):
        lab = batch["labels"].clone()
        prob = torch.nn.functional.one_hot(lab, 3).permute(0, 3, 1, 2).float()
        for b, i in enumerate(batch["index"].tolist()):
            if i in self.scores:
                p = self.scores[i]
                prob[b, :, 6:8, 15:17] = torch.tensor([0.0, 1 - p, p])[:, None, None]
                lab[b, 6:8, 15:17] = 2 if p > 0.5 else 1
        return {"labels": lab, "probabilities": prob, "landmarks": torch.zeros(lab.shape[0], 0, 2)}


def test_covid_auc_lesion_dice_and_fraction_by_hand(tmp_path):
    src = open_source(_covid_lung_dataset(tmp_path / "d"))
    data = TaskImages(src, COVID_LUNG, 24)
    # negatives (even i) get a false lesion patch with these probabilities; positives score 1 (their lesion)
    scores = {0: 0.3, 2: 0.9, 4: 0.2, 6: 0.6, 8: 0.1, 10: 0.4}
    records, _ = evaluate(Oracle(scores), data, COVID_LUNG, keep_examples=0)
    assert [r["presence_true"] for r in records] == [bool(i % 2) for i in range(12)]
    # lesion Dice only on images whose reference has a lesion, 1 for the oracle
    assert all(("lesion_dice" in r) == r["presence_true"] for r in records)
    assert all(r["lesion_dice"] == 1.0 for r in records if r["presence_true"])
    # lesion fraction: 16 lesion px / 96 lung px (lesion included) on positives, 0 on negatives
    assert [r["lesion_fraction_true"] for r in records] == [0.0, 16 / 96] * 6
    # image 2: the false patch (4 px, lung there) becomes lesion -> 4 / 96; image 0 (0.3) stays lung
    assert records[2]["lesion_fraction_pred"] == pytest.approx(4 / 96) and records[0]["lesion_fraction_pred"] == 0.0
    s = summarize_records(records, seed=0, n_resamples=500)
    auc = s["presence_auc"]
    # positives score 1.0 (the max lesion probability), negatives 0.1..0.9: every positive ranks above -> 1
    assert auc["value"] == 1.0 and (auc["n_positive"], auc["n_negative"], auc["n_subjects"]) == (6, 6, 6)
    assert auc["ci95"] == [1.0, 1.0]
    # pixel confusion is about the lesion class, not "any foreground" (lungs are foreground too)
    assert records[1]["sensitivity"] == 1.0 and records[2]["precision"] == 0.0
    assert s["lesion_dice"]["n_images"] == 6 and s["lesion_dice"]["n_subjects"] == 6


def test_auc_needs_lesion_free_images_and_says_so():
    recs = [{"subject": str(i), "presence_score": float(i) / 10, "presence_true": True} for i in range(8)]
    auc = summarize_records(recs, n_resamples=100)["presence_auc"]
    assert auc["value"] is None and "no lesion-free (negative) image" in auc["note"]
    recs[0]["presence_true"] = recs[3]["presence_true"] = False
    auc = summarize_records(recs, n_resamples=200)["presence_auc"]
    s = np.array([r["presence_score"] for r in recs])
    y = np.array([r["presence_true"] for r in recs])
    pairs = [float(p > q) + 0.5 * (p == q) for p in s[y] for q in s[~y]]
    assert auc["value"] == pytest.approx(np.mean(pairs))
    assert "resamples lacked one class" in auc.get("ci_note", "resamples lacked one class")


def test_test_and_validation_images_are_never_randomized(tmp_path, monkeypatch):
    """Training randomizes its own images on the fly, once; validation and held-out test images go
    to the model as stored (a spy on the randomizer records every image it was given)."""
    from domain_randomization.image import dataset as D

    from training.run import train_downstream

    seen = []
    real = D.ImageRandomizer.__call__

    def spy(self, item, rng):
        seen.append(np.asarray(item["image"]).tobytes())
        return real(self, item, rng)

    monkeypatch.setattr(D.ImageRandomizer, "__call__", spy)
    root = write_toy_hip_dataset(tmp_path / "hip", n_subjects=6, per_subject=2, size=32)
    cfg = TrainConfig(task="hip", image_size=32, model_size="tiny", epochs=1, batch_size=4, device="cpu",
                      randomization="strong")
    res = train_downstream(cfg, [root], tmp_path / "run", progress=False)
    src, hip = open_source(root), get_task("hip")
    splits = res["result"].splits
    image = lambda i: TaskImages(src, hip, 32, [i])[0]["image"].tobytes()
    train_imgs = {image(i) for i, s in enumerate(src.subjects) if s in set(splits["train"])}
    test_names = {r["name"] for r in res["records"]}
    held_out = {image(i) for i, (s, n) in enumerate(zip(src.subjects, src.names))
                if s in set(splits["val"]) or n in test_names}
    assert test_names and held_out and set(seen) == train_imgs  # every training image, and only those
    assert held_out.isdisjoint(seen)
    meta = json.loads((tmp_path / "run" / "metrics.json").read_text())["training"]
    assert meta["image_randomization"]["validation"] == "none"


def test_summary_counts_subjects_not_images():
    recs = [{"subject": "a" if i < 9 else "b", "name": str(i), "dice_mean": 0.5 + 0.01 * i} for i in range(10)]
    s = summarize_records(recs)["dice_mean"]
    assert (s["n_images"], s["n_subjects"], s["ci95"]) == (10, 2, None)
    assert s["mean"] == pytest.approx(np.mean([0.5 + 0.01 * i for i in range(10)]))
    assert s["ci_note"] == M.no_ci_reason(2)


def test_tool_detection_ap_and_tip_error_through_evaluation(tmp_path):
    """Perfect masks give one box per image equal to the reference: AP 1 at every IoU threshold;
    boxes shifted by half their size (IoU 1/3) are misses at 0.5: AP 0. Tip/base in mm from the pixel size."""
    tool = get_task("tool")
    samples, subjects = [], []
    for i in range(10):
        lab = np.zeros((32, 32), np.uint8)
        lab[4 + i:10 + i, 6:14] = 1  # a 6 x 8 px block
        samples.append({"image": lab.astype(np.float32), "labels": lab, "landmarks": np.array([[6.0, 4.0 + i],
                        [13.0, 9.0 + i]]), "landmark_visible": np.ones(2)})
        subjects.append(i // 2)
    src = open_source(write_synthex_layout(tmp_path / "d", samples, subjects, classes=["background", "tool"],
                                           landmarks=["base", "tip"], task="tool", pixel_size_mm=(0.5, 0.5)))

    def predictor(shift):
        def run(batch):
            lab = torch.roll(batch["labels"], shifts=shift, dims=2)
            return {"labels": lab, "landmarks": batch["keypoints"] + torch.tensor([0.0, 2.0])}
        return run

    data = TaskImages(src, tool, 32)
    records, _ = evaluate(predictor(0), data, tool, keep_examples=0)
    assert all(r["top_detection_iou"] == 1.0 and len(r["detections"]) == 1 for r in records)
    s = summarize_records(records, n_resamples=200)
    assert s["detection_ap50"]["value"] == pytest.approx(1.0) and s["detection_ap"]["value"] == pytest.approx(1.0)
    assert s["detection_ap50"]["n_subjects"] == 5 and s["detection_ap50"]["ci95"] == [1.0, 1.0]
    # 2 px along v at 0.5 mm pixels (stored 32 px = model 32 px): 1 mm for tip and base
    assert s["landmark_error_mm/tip"]["mean"] == pytest.approx(1.0)
    assert s["landmark_error_mm/base"]["mean"] == pytest.approx(1.0)
    # shifted by 4 of 8 columns: IoU = 4 x 6 / (2 x 48 - 24) = 1/3 < 0.5 -> every detection a false positive
    records, _ = evaluate(predictor(4), data, tool, keep_examples=0)
    assert records[0]["top_detection_iou"] == pytest.approx(1 / 3)
    assert summarize_records(records, n_resamples=50)["detection_ap50"]["value"] == 0.0

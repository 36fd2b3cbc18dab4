"""Run a predictor over task images and compute per-image metrics; summarize them.

A predictor is any callable ``predictor(batch) -> {"labels": (B, H, W) long,
"probabilities": (B, C, H, W) float (optional), "landmarks": (B, L, 2) float}``
on a batch from :func:`training.data.prepare.collate`, so the trained model
(:class:`training.inference.ModelPredictor`) and the trivial baselines (predict
background, predict the mean landmark) go through the same evaluation code.
Test images are never randomized: :class:`~training.data.prepare.TaskImages`
items go straight to :func:`~training.data.prepare.collate`.

Per task metric group (``Task.metrics``), per image:

* ``dice``: Dice per class and their mean (:func:`training.metrics.dice_per_class`);
* ``landmarks``: error per landmark in px at the model input and, where the
  image's pixel size is known, in mm at the detector (px x pixel size x
  downsample, per axis);
* ``detection``: scored boxes (:mod:`training.detection`) and the reference box;
  the dataset-level COCO AP@0.5 and AP@[.5:.95] are in the summary;
* ``pixel_confusion``: pixel TP/FP/TN/FN of the ``lesion`` class (of all
  foreground if the task has no such class) and the rates from them;
* ``presence``: whether the reference has a lesion and the image-level
  ``lesion_probability`` (:func:`training.inference.lesion_probability`);
  ``lesion_dice`` on images whose reference has a lesion; with a ``lung``
  class, the predicted and reference ``lesion_fraction`` and their difference.

:func:`summarize_records` gives every metric its mean, std and a subject-clustered
95% bootstrap CI (:mod:`training.metrics`), the image-level AUC (when the images
hold both lesion-free and lesion images), AP and pooled pixel rates.
"""

from __future__ import annotations

import numpy as np

from training import metrics as M
from training.data.prepare import TaskImages, collate
from training.detection import average_precision, detect_instances, reference_boxes
from training.inference import (ModelPredictor, class_index, decode_heatmaps,  # noqa: F401 (re-exported)
                                lesion_fraction, lesion_probability, probabilities_or_onehot)
from training.tasks import Task


def _pixel_scale(item: dict, override) -> np.ndarray | None:
    """mm per model-input pixel, per axis (u, v), or None when the pixel size is unknown."""
    px = np.asarray(override if override is not None else item.get("pixel_size_mm", (np.nan, np.nan)),
                    dtype=np.float64).reshape(-1)
    if px.size == 1:
        px = np.repeat(px, 2)
    if not np.all(np.isfinite(px)):
        return None
    return px * np.asarray(item["downsample"], dtype=np.float64)


def evaluate(predictor, data: TaskImages, task: Task, pixel_size_mm=None, *, batch_size: int = 8,
             heatmap_sigma: float = 2.0, keep_examples: int = 4, progress=None) -> tuple[list[dict], list[dict]]:
    """Per-image metric records (and up to ``keep_examples`` predictions for figures).

    ``pixel_size_mm``: mm per stored-image pixel (a number or ``(du, dv)``) that overrides the
    data's own; None (default): each image's pixel size as its reader gave it."""
    lesion, lung = class_index(task, "lesion"), class_index(task, "lung")
    target = lesion  # the class of pixel confusion and image-level presence
    records, examples = [], []
    for start in range(0, len(data), batch_size):
        items = [data[k] for k in range(start, min(start + batch_size, len(data)))]
        batch = collate(items, heatmap_sigma)
        pred = predictor(batch)
        for b, item in enumerate(items):
            k = int(item["index"])
            scale = _pixel_scale(item, pixel_size_mm)
            rec = {"name": data.source.names[data.indices[k]], "subject": data.subjects[k],
                   "pixel_size_mm": None if scale is None else
                   [float(x) for x in scale / np.asarray(item["downsample"], dtype=np.float64)]}
            true_lab = batch["labels"][b].numpy()
            pred_lab = np.asarray(pred["labels"][b])
            prob = probabilities_or_onehot(pred, b, task.num_classes)
            if "dice" in task.metrics:
                d = M.dice_per_class(pred_lab, true_lab, task.num_classes)
                rec["dice"] = {c: _num(x) for c, x in zip(task.classes[1:], d)}
                rec["dice_mean"] = _num(np.nanmean(d)) if np.any(np.isfinite(d)) else None
            if "landmarks" in task.metrics:
                true = np.where(item["visible"][:, None], item["keypoints"], np.nan)
                pl = np.asarray(pred["landmarks"][b], dtype=np.float64)
                err = M.landmark_errors(pl, true)
                rec["landmark_error_px"] = {n: _num(e) for n, e in zip(task.landmarks, err)}
                rec["landmark_error_px_mean"] = _num(np.nanmean(err)) if np.any(np.isfinite(err)) else None
                if scale is not None:
                    mm = M.landmark_errors_mm(pl, true, scale)
                    rec["landmark_error_mm"] = {n: _num(e) for n, e in zip(task.landmarks, mm)}
                    rec["landmark_error_mm_mean"] = _num(np.nanmean(mm)) if np.any(np.isfinite(mm)) else None
            if "detection" in task.metrics:
                c = detection_class(task)
                dets = detect_instances(prob[c], pred_lab == c)
                gt = reference_boxes(true_lab == c)
                rec["detections"] = dets
                rec["reference_boxes"] = gt
                if gt:
                    rec["top_detection_iou"] = _num(M.box_iou(np.asarray(dets[0]["box"]), np.asarray(gt[0]))) \
                        if dets else 0.0
            if "pixel_confusion" in task.metrics:
                p, t = (pred_lab == target, true_lab == target) if target is not None else (pred_lab > 0, true_lab > 0)
                conf = M.binary_confusion(p, t)
                rec.update({k2: _num(v) for k2, v in M.confusion_metrics(*conf).items()})
                rec["confusion"] = list(conf)
            if "presence" in task.metrics:
                cls = target if target is not None else None
                fg = prob[cls] if cls is not None else 1.0 - prob[0]
                has = (true_lab == cls) if cls is not None else (true_lab > 0)
                rec["presence_true"] = bool(has.any())
                rec["presence_score"] = lesion_probability(fg)
                if rec["presence_true"] and cls is not None:
                    rec["lesion_dice"] = _num(M.dice_per_class(pred_lab == cls, true_lab == cls, 2)[0])
                if lung is not None and lesion is not None:
                    fp, ft = lesion_fraction(pred_lab, lung, lesion), lesion_fraction(true_lab, lung, lesion)
                    rec["lesion_fraction_pred"], rec["lesion_fraction_true"] = _num(fp), _num(ft)
                    rec["lesion_fraction_abs_error"] = _num(abs(fp - ft))
            records.append(rec)
            if len(examples) < keep_examples:
                examples.append({"name": rec["name"], "image": item["image"], "true_labels": true_lab,
                                 "pred_labels": pred_lab, "true_landmarks": np.where(
                                     item["visible"][:, None], item["keypoints"], np.nan),
                                 "pred_landmarks": np.asarray(pred["landmarks"][b]),
                                 "pred_boxes": [d["box"] for d in rec.get("detections", [])]})
        if progress is not None:
            progress(len(items))
    return records, examples


def detection_class(task: Task) -> int:
    """The class a detection task boxes: its only foreground class, else the one named ``tool``."""
    if task.num_classes == 2:
        return 1
    c = class_index(task, "tool")
    if c is None:
        from training.tasks import TrainingError

        raise TrainingError(f"task {task.name!r} reports detection but has several classes and none named 'tool'")
    return c


def _num(x):
    x = float(x)
    return x if np.isfinite(x) else None


SKIP_COLUMNS = ("confusion",)


def scalar_columns(records: list[dict]) -> dict[str, np.ndarray]:
    """Flatten per-image records into named columns of floats (None -> NaN); lists and flags are left out."""
    cols: dict[str, list] = {}
    for i, rec in enumerate(records):
        for key, val in rec.items():
            if key in SKIP_COLUMNS or key == "pixel_size_mm":
                continue
            items = val.items() if isinstance(val, dict) else [(None, val)]
            for sub, v in items:
                if isinstance(v, bool) or not (v is None or isinstance(v, (int, float))):
                    continue
                name = key if sub is None else f"{key}/{sub}"
                cols.setdefault(name, [np.nan] * len(records))[i] = np.nan if v is None else float(v)
    return {k: np.asarray(v) for k, v in cols.items()}


def summarize_records(records: list[dict], seed: int = 0, n_resamples: int = 2000,
                      min_subjects: int = M.MIN_SUBJECTS_FOR_CI) -> dict:
    """Per metric: mean, std and subject-clustered 95% bootstrap CI (``records[i]["subject"]``
    is the unit); image-level AUC, COCO AP and pooled pixel rates where the task has them."""
    subjects = [str(r["subject"]) for r in records]
    out = {name: M.summarize(v, np.random.default_rng([seed, k]), n_resamples, subjects, min_subjects)
           for k, (name, v) in enumerate(sorted(scalar_columns(records).items()))}
    if records and "presence_score" in records[0]:
        out["presence_auc"] = presence_auc(records, np.random.default_rng([seed, 10_000]), n_resamples,
                                           min_subjects)
    if records and "detections" in records[0]:
        ap = average_precision([r["reference_boxes"] for r in records], [r["detections"] for r in records],
                               subjects, np.random.default_rng([seed, 20_000]), n_resamples, min_subjects)
        out["detection_ap"], out["detection_ap50"] = ap["ap"], ap["ap50"]
    if records and "confusion" in records[0]:
        tp, fp, tn, fn = np.sum([r["confusion"] for r in records], axis=0)
        out["pixel_confusion_pooled"] = {k: _num(v) for k, v in M.confusion_metrics(tp, fp, tn, fn).items()}
    return out


def presence_auc(records: list[dict], rng: np.random.Generator, n_resamples: int = 2000,
                 min_subjects: int = M.MIN_SUBJECTS_FOR_CI) -> dict:
    """Image-level ROC AUC of ``presence_score`` against ``presence_true``, with a subject-clustered
    CI (resamples lacking either class are left out and counted); a note when it is undefined."""
    s = np.array([r["presence_score"] for r in records], dtype=np.float64)
    y = np.array([r["presence_true"] for r in records], dtype=bool)
    subjects = [str(r["subject"]) for r in records]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    out = {"value": None, "ci95": None, "n_images": len(s), "n_positive": n_pos, "n_negative": n_neg,
           "n_subjects": len(set(subjects))}
    if n_pos == 0 or n_neg == 0:
        missing = "lesion-free (negative)" if n_neg == 0 else "lesion (positive)"
        out["note"] = (f"AUC undefined: the {len(s)} test images include no {missing} image; "
                       "add such images to the test set")
        return out
    out["value"] = float(M.roc_auc(s, y))
    reason = M.no_ci_reason(out["n_subjects"], min_subjects)
    if reason:
        out["ci_note"] = reason
        return out
    boots = M.cluster_bootstrap(lambda idx: M.roc_auc(s[idx], y[idx]), subjects, rng, n_resamples)
    ok = np.isfinite(boots)
    out["ci95"] = list(M.percentile_interval(boots))
    if not ok.all():
        out["ci_note"] = f"{int((~ok).sum())} of {n_resamples} resamples lacked one class and were left out"
    return out

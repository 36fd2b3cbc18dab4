"""Evaluation metrics: pure numpy functions of predictions and references.

Definitions (also in docs/training.md):

* Dice of class c: ``2 |P & T| / (|P| + |T|)``; NaN when the class is absent
  from both prediction and reference (undefined, left out of means), 0 when it
  is in only one of them.
* Landmark error: Euclidean distance in pixels of the model's input image;
  in mm at the detector ``px * pixel_pitch_mm * downsample`` (downsample =
  stored image size / model input size), as SyntheX reports it. NaN where the
  reference landmark is not labelled.
* Sensitivity TP/(TP+FN), specificity TN/(TN+FP), precision TP/(TP+FP),
  accuracy, F-beta ``(1+b^2) P R / (b^2 P + R)`` (F1, F2); NaN when a
  denominator is 0.
* AUC: the probability that a random positive scores above a random negative
  (ties count 1/2), i.e. the Mann-Whitney U statistic / (n_pos n_neg).
* 95% CI: percentile bootstrap over images with ``n_resamples`` resamples
  drawn by the given ``numpy.random.Generator``.
"""

from __future__ import annotations

import numpy as np


def dice_per_class(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of classes ``1 .. num_classes - 1`` between two label maps."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and reference {target.shape} differ in shape")
    out = np.full(num_classes - 1, np.nan)
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        denom = int(p.sum()) + int(t.sum())
        if denom:
            out[c - 1] = 2.0 * np.logical_and(p, t).sum() / denom
    return out


def landmark_errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-landmark Euclidean distance between ``(L, 2)`` point sets (NaN where ``true`` is NaN)."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return np.sqrt(np.sum((pred - true) ** 2, axis=-1))


def px_to_mm(error_px, pixel_size_mm: float, downsample: float = 1.0):
    """Landmark error at the detector in mm: ``px * pixel_size_mm * downsample``."""
    return np.asarray(error_px, dtype=np.float64) * float(pixel_size_mm) * float(downsample)


def binary_confusion(pred, true) -> tuple[int, int, int, int]:
    """(TP, FP, TN, FN) of two boolean arrays."""
    p, t = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    tp = int(np.sum(p & t))
    fp = int(np.sum(p & ~t))
    fn = int(np.sum(~p & t))
    return tp, fp, int(p.size - tp - fp - fn), fn


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def fbeta(precision: float, recall: float, beta: float) -> float:
    b2 = beta * beta
    return _ratio((1 + b2) * precision * recall, b2 * precision + recall)


def confusion_metrics(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    sens, prec = _ratio(tp, tp + fn), _ratio(tp, tp + fp)
    return {
        "sensitivity": sens,
        "specificity": _ratio(tn, tn + fp),
        "precision": prec,
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "f1": fbeta(prec, sens, 1.0),
        "f2": fbeta(prec, sens, 2.0),
    }


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (NaN unless both classes are present)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """``(u0, v0, u1, v1)`` enclosing the mask's pixels (pixel edges, centres at integers); NaN if empty."""
    vs, us = np.nonzero(mask)
    if len(us) == 0:
        return np.full(4, np.nan)
    return np.array([us.min() - 0.5, vs.min() - 0.5, us.max() + 0.5, vs.max() + 0.5])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    if np.any(np.isnan(a)) or np.any(np.isnan(b)):
        return 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return _ratio(inter, union)


def bootstrap_ci(values, rng: np.random.Generator, n_resamples: int = 2000,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean. NaN values are dropped first.

    Resample ``b`` is ``values[idx[b]]`` with ``idx = rng.integers(0, n, (n_resamples, n))``;
    the bounds are ``np.quantile`` of the resample means at ``(1 -/+ confidence) / 2``.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    idx = rng.integers(0, len(v), size=(n_resamples, len(v)))
    means = v[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarize(values, rng: np.random.Generator, n_resamples: int = 2000) -> dict:
    """mean, std (ddof=1), 95% bootstrap CI and count of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": None, "std": None, "ci95": [None, None], "n": 0}
    lo, hi = bootstrap_ci(v, rng, n_resamples)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "ci95": [lo, hi], "n": int(len(v))}

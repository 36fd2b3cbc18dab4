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
* 95% CI: percentile bootstrap with ``n_resamples`` resamples drawn by the
  given ``numpy.random.Generator``, clustered by subject: views of one CT,
  phantom, specimen or patient are not independent, so a resample draws
  *subjects* with replacement (as many as there are) and takes every image of
  each drawn subject; the statistic (e.g. the mean over images) is computed on
  that pooled set. With fewer than :data:`MIN_SUBJECTS_FOR_CI` subjects no
  interval is given (a bootstrap over 1-4 units says nothing about the spread of
  a population): the point value is reported with the reason.
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


def landmark_errors_mm(pred: np.ndarray, true: np.ndarray, mm_per_px) -> np.ndarray:
    """Per-landmark Euclidean distance in mm with a pixel size per axis: ``mm_per_px = (mm per
    pixel along u, mm per pixel along v)`` of the grid the points are given on (for points at
    the model input: the stored image's pixel size x the downsample factor, per axis)."""
    s = np.asarray(mm_per_px, dtype=np.float64).reshape(-1)
    if s.shape != (2,) or not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"mm_per_px must be two positive numbers (u, v), got {mm_per_px!r}")
    return landmark_errors(np.asarray(pred, dtype=np.float64) * s, np.asarray(true, dtype=np.float64) * s)


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


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    if np.any(np.isnan(a)) or np.any(np.isnan(b)):
        return 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return _ratio(inter, union)


MIN_SUBJECTS_FOR_CI = 5


def _clusters(values, clusters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite ``values``, their cluster index (clusters in sorted order of their labels) and the labels."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    c = np.asarray([str(x) for x in clusters]) if clusters is not None else np.arange(len(v))
    if len(c) != len(v):
        raise ValueError(f"{len(v)} values but {len(c)} cluster labels")
    ok = np.isfinite(v)
    labels, inverse = np.unique(c[ok], return_inverse=True)
    return v[ok], inverse, labels


def cluster_resample_draws(n_clusters: int, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    """``(n_resamples, n_clusters)`` cluster indices drawn with replacement: resample ``b`` takes
    clusters ``draws[b]`` (clusters numbered in sorted order of their labels)."""
    return rng.integers(0, n_clusters, size=(n_resamples, n_clusters))


def cluster_bootstrap_means(values, clusters, rng: np.random.Generator, n_resamples: int = 2000) -> np.ndarray:
    """Means of ``n_resamples`` subject-clustered bootstrap resamples of ``values`` (NaN dropped first).

    Resample ``b`` draws clusters ``draws[b]`` (:func:`cluster_resample_draws`) and pools every
    value of each drawn cluster (a cluster drawn twice counts twice); its mean is
    ``sum of the drawn clusters' sums / sum of their sizes``. ``clusters=None``: each value
    is its own cluster (the ordinary bootstrap over independent values).
    """
    v, inv, labels = _clusters(values, clusters)
    if len(v) == 0:
        return np.zeros(0)
    sums = np.bincount(inv, weights=v, minlength=len(labels))
    sizes = np.bincount(inv, minlength=len(labels)).astype(np.float64)
    draws = cluster_resample_draws(len(labels), rng, n_resamples)
    return sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)


def cluster_bootstrap(statistic, clusters, rng: np.random.Generator, n_resamples: int = 2000) -> np.ndarray:
    """``statistic(image_indices)`` on ``n_resamples`` subject-clustered resamples of the images
    ``0 .. len(clusters) - 1`` (the same draws as :func:`cluster_bootstrap_means`): an array of
    shape ``(n_resamples,)``, or ``(n_resamples, k)`` for a statistic returning ``k`` numbers.
    A statistic undefined on a resample (e.g. an AUC without negatives) should return NaN."""
    c = np.asarray([str(x) for x in clusters])
    labels, inverse = np.unique(c, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(labels))]
    draws = cluster_resample_draws(len(labels), rng, n_resamples)
    return np.asarray([statistic(np.concatenate([members[k] for k in row])) for row in draws], dtype=np.float64)


def percentile_interval(boots, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (non-finite replicates dropped)."""
    b = np.asarray(boots, dtype=np.float64)
    b = b[np.isfinite(b)]
    if len(b) == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(b, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(values, rng: np.random.Generator, n_resamples: int = 2000,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of independent values (each its own cluster). NaN
    values are dropped first. Resample ``b`` is ``values[idx[b]]`` with
    ``idx = rng.integers(0, n, (n_resamples, n))``."""
    return percentile_interval(cluster_bootstrap_means(values, None, rng, n_resamples), confidence)


def no_ci_reason(n_subjects: int, min_subjects: int = MIN_SUBJECTS_FOR_CI) -> str | None:
    """Why no interval is given (None when one is)."""
    if n_subjects >= min_subjects:
        return None
    return (f"no 95% CI: {n_subjects} subject{'s' if n_subjects != 1 else ''}, fewer than {min_subjects} "
            "(subjects, not images, are the resampled unit)")


def summarize(values, rng: np.random.Generator, n_resamples: int = 2000, subjects=None,
              min_subjects: int = MIN_SUBJECTS_FOR_CI) -> dict:
    """mean, std over images (ddof=1), subject-clustered 95% bootstrap CI, image and subject
    counts of the finite values. ``subjects=None``: every value is its own subject.
    ``ci95`` is ``None`` (with ``ci_note`` saying why) below ``min_subjects`` subjects."""
    v, inv, labels = _clusters(values, subjects)
    k = len(labels)
    out = {"mean": None, "std": None, "ci95": None, "n": int(len(v)), "n_images": int(len(v)),
           "n_subjects": int(k)}
    if len(v) == 0:
        out["ci_note"] = "no finite values"
        return out
    out["mean"], out["std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
    reason = no_ci_reason(k, min_subjects)
    if reason:
        out["ci_note"] = reason
        return out
    sub = None if subjects is None else np.asarray([str(x) for x in subjects])[
        np.isfinite(np.asarray(values, dtype=np.float64).reshape(-1))]
    out["ci95"] = list(percentile_interval(cluster_bootstrap_means(v, sub, rng, n_resamples)))
    return out

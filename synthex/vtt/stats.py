"""Statistics of a visual Turing test (pure functions, no I/O).

"Positive" means synthetic throughout: sensitivity is the fraction of synthetic images called
synthetic, specificity the fraction of real images called real.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from synthex.vtt import VTTError


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n`` with its exact (Clopper-Pearson) confidence interval; estimate None when n = 0."""

    k: int
    n: int
    estimate: float | None
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return asdict(self)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval for ``k`` successes in ``n`` trials.

    The bounds are the success probabilities p at which observing >= k (lower) or <= k (upper)
    has probability (1 - confidence) / 2, written with beta quantiles:
    ``lower = Beta(k, n - k + 1).ppf(a / 2)``, ``upper = Beta(k + 1, n - k).ppf(1 - a / 2)``.
    """
    from scipy.stats import beta

    if n < 0 or not 0 <= k <= n:
        raise VTTError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise VTTError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    alpha = 1 - confidence
    lower = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper


def proportion(k: int, n: int, confidence: float = 0.95) -> Proportion:
    lo, hi = clopper_pearson(k, n, confidence)
    return Proportion(int(k), int(n), k / n if n else None, lo, hi)


def binomial_test(k: int, n: int, p: float = 0.5) -> float | None:
    """Two-sided exact binomial test p-value of ``k`` of ``n`` against success probability ``p``."""
    from scipy.stats import binomtest

    if n == 0:
        return None
    return float(binomtest(int(k), int(n), p, alternative="two-sided").pvalue)


def fleiss_kappa(counts) -> float | None:
    """Fleiss' kappa from an (items x categories) matrix of how many raters chose each category.

    Every item must have the same number of ratings, at least 2. None when chance agreement is
    1 (every rating in one category), where kappa is undefined.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] < 1 or counts.shape[1] < 2:
        raise VTTError(f"Fleiss' kappa needs an (items x categories>=2) count matrix, got shape {counts.shape}")
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise VTTError("Fleiss' kappa counts must be non-negative integers")
    raters = counts.sum(axis=1)
    if np.any(raters != raters[0]) or raters[0] < 2:
        raise VTTError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    n = raters[0]
    agreement = ((counts**2).sum(axis=1) - n) / (n * (n - 1))
    p_bar = agreement.mean()
    shares = counts.sum(axis=0) / counts.sum()
    p_chance = float((shares**2).sum())
    if math.isclose(p_chance, 1.0):
        return None
    return float((p_bar - p_chance) / (1 - p_chance))


def rating_score(answer: str, confidence: int) -> int:
    """Ordinal "how synthetic" score from an answer and its confidence: -5 (sure real) .. +5 (sure synthetic)."""
    return confidence if answer == "synthetic" else -confidence


@dataclass(frozen=True)
class ROC:
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float | None]  # point i calls a rating positive when score >= thresholds[i] (None: nothing)
    auc: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def roc_curve(scores, positive) -> ROC:
    """Empirical ROC of ordinal ``scores`` for ``positive`` (bool) items, from (0, 0) to (1, 1).

    AUC is the trapezoidal area, which equals the Mann-Whitney probability that a positive
    scores above a negative (ties count one half). None when either class is empty.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape or scores.ndim != 1:
        raise VTTError("scores and labels must be 1D arrays of the same length")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return ROC([], [], [], None)
    thresholds = np.unique(scores)[::-1]
    tpr = [0.0] + [float((scores[positive] >= t).sum() / n_pos) for t in thresholds]
    fpr = [0.0] + [float((scores[~positive] >= t).sum() / n_neg) for t in thresholds]
    auc = float(np.sum(np.diff(fpr) * (np.array(tpr[1:]) + np.array(tpr[:-1])) / 2))
    return ROC(fpr, tpr, [None] + [float(t) for t in thresholds], auc)

"""How much a translation changed: structure kept (edges, label-region contrast) and
intensity distribution moved toward the target.

CycleGAN's translated renders keep their source labels by assumption; these
numbers say how safe that is. None needs a segmentation of the translated image:

* :func:`edge_correlation`: Pearson correlation of the Gaussian gradient
  magnitudes (scipy, sigma 1 px) of a source image and its translation; 1 = the
  same edges at the same places. :func:`chance_edge_correlation` correlates each
  translation with a *different* source image: what a translation that kept
  nothing specific to its own source would score (renders of one phantom share
  much of their edges, so this floor is well above 0).
* :func:`region_contrast`: mean intensity inside a label class minus the mean in
  a ring of ``ring_px`` px around it; a translation that keeps a lesion
  visible keeps the sign (and the order across images) of this contrast.
* :func:`intensity_w1`: the 1-Wasserstein distance (scipy) between the pooled
  pixel intensities of two image sets; a translation toward the target lowers it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats


def edge_map(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    return ndimage.gaussian_gradient_magnitude(np.asarray(image, dtype=np.float64), sigma, mode="nearest")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def edge_correlation(a, b, sigma: float = 1.0) -> np.ndarray:
    """``(N,)``: per image pair, the correlation of the edge maps of ``a[i]`` and ``b[i]``."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"edge_correlation needs two (N, H, W) stacks of one shape, got {a.shape} and {b.shape}")
    return np.array([_pearson(edge_map(x, sigma), edge_map(y, sigma)) for x, y in zip(a, b)])


def chance_edge_correlation(a, b, rng: np.random.Generator, sigma: float = 1.0) -> np.ndarray:
    """Edge correlation of ``a[j]`` with ``b[i]``, ``j = (i + k) mod N`` for a random shift ``k`` in
    ``1 .. N - 1``: a translation ``b[i]`` against a source image it was not made from, the floor a
    structure-keeping translation must beat."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) < 2:
        raise ValueError("chance_edge_correlation needs at least 2 images")
    k = int(rng.integers(1, len(a)))
    return edge_correlation(np.roll(a, -k, axis=0), b, sigma)


def region_contrast(images, labels, cls: int, ring_px: int = 3) -> np.ndarray:
    """``(N,)``: mean of ``images[i]`` inside class ``cls`` minus the mean in the ``ring_px`` ring
    around it (dilation minus the class); NaN where the class is absent or has no ring."""
    out = []
    for img, lab in zip(np.asarray(images), np.asarray(labels)):
        inside = lab == cls
        ring = ndimage.binary_dilation(inside, iterations=ring_px) & ~inside
        out.append(img[inside].mean() - img[ring].mean() if inside.any() and ring.any() else np.nan)
    return np.array(out, dtype=np.float64)


def intensity_w1(a, b, max_pixels: int = 2_000_000, rng: np.random.Generator | None = None) -> float:
    """1-Wasserstein distance between the pooled pixel values of two image sets (a random
    subsample of ``max_pixels`` each when larger, drawn from ``rng``)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if max(a.size, b.size) > max_pixels:
        rng = rng if rng is not None else np.random.default_rng(0)
        a = a if a.size <= max_pixels else rng.choice(a, max_pixels, replace=False)
        b = b if b.size <= max_pixels else rng.choice(b, max_pixels, replace=False)
    return float(stats.wasserstein_distance(a, b))


def _summary(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0}
    return {"n": int(x.size), "mean": float(x.mean()), "median": float(np.median(x)),
            "p5": float(np.percentile(x, 5)), "min": float(x.min())}


def translation_report(source, translated, *, target=None, labels=None, classes=None,
                       rng: np.random.Generator) -> dict:
    """All of the above for one translated set (``labels``: the source label maps, if any)."""
    source, translated = np.asarray(source), np.asarray(translated)
    matched = edge_correlation(source, translated)
    other = chance_edge_correlation(source, translated, rng)
    report = {
        "edge_correlation": _summary(matched),
        "edge_correlation_other_source": _summary(other),
        "edge_matched_above_other_fraction": float(np.mean(matched > other)),
        "mean_intensity": {"source": float(source.mean()), "translated": float(translated.mean())},
        "std_intensity": {"source": float(source.std()), "translated": float(translated.std())},
    }
    if target is not None:
        target = np.asarray(target)
        report["mean_intensity"]["target"] = float(target.mean())
        report["std_intensity"]["target"] = float(target.std())
        report["intensity_w1_to_target"] = {"source": intensity_w1(source, target, rng=rng),
                                            "translated": intensity_w1(translated, target, rng=rng)}
    if labels is not None and classes:
        per_class = {}
        for c, name in enumerate(classes):
            if c == 0:
                continue
            before, after = region_contrast(source, labels, c), region_contrast(translated, labels, c)
            ok = np.isfinite(before) & np.isfinite(after)
            if ok.sum() < 2:
                continue
            per_class[name] = {
                "n": int(ok.sum()), "source": _summary(before[ok]), "translated": _summary(after[ok]),
                "same_sign_fraction": float(np.mean(np.sign(before[ok]) == np.sign(after[ok]))),
                "spearman": float(stats.spearmanr(before[ok], after[ok]).statistic)}
        report["region_contrast"] = per_class
    return report

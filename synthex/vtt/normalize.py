"""One normalization for every study image, real or synthetic (pure functions, no I/O).

Raters must judge realism, not file formats. Before this step a real 8-bit radiograph and a
rendered float image differ in ways a histogram shows at once: the real one has at most 256 grey
levels, and after its display window stretches them, empty codes ("gaps") between them; the
rendered one has thousands of levels and no gaps. So every image goes through the same steps:

1. **dequantize**: add uniform noise as wide as the image's own grey-level step ``q`` (the
   smallest difference between its distinct values after the display window; for a float image
   it is tiny, for an 8-bit image stretched over [0, 1] it is about 1/255). An image with ``q``
   steps becomes continuous without moving any pixel by more than half a step;
2. **resample** to the study's common size (centre crop to the common aspect ratio, then area
   resampling), which also mixes neighbouring levels, and stretch the result to its own
   minimum..maximum again (averaging pulls isolated extreme pixels in: without this, downsampled
   images would be the ones that never reach black or white);
3. **requantize** to the study's common number of grey levels with rectangular dither (uniform
   noise of one level before rounding), the same for every image. The common depth is the least
   any image of the study has (:func:`effective_bits`: an 8-bit real image has 8 bits, one whose
   display window spans 180 of its codes 7), capped by the study's bit depth: a study cannot show
   more grey levels of a synthetic image than its real images have without giving it away.
   The levels are stored in the PNG's bit depth (``k * (2**bit_depth - 1) / (2**bits - 1)``),
   which spreads them evenly and identically for every image.

Each image's noise comes from its own ``numpy.random.Generator`` (seeded from the study seed and
the image's position in the draw), so a study is reproducible. The noise is at most one output
grey level plus half an input level: invisible at any display window a rater can choose.
"""

from __future__ import annotations

import numpy as np

#: the dequantization noise never exceeds this (an image with fewer than ~32 levels is not an X-ray)
MAX_STEP = 1.0 / 32


def grey_step(pixels: np.ndarray) -> float:
    """The image's grey-level step: the smallest gap between its distinct values (capped at MAX_STEP)."""
    levels = np.unique(np.asarray(pixels, dtype=np.float64))
    if levels.size < 2:
        return 0.0
    return float(min(np.diff(levels).min(), MAX_STEP))


def effective_bits(pixels: np.ndarray, cap: int) -> int:
    """Bits of grey-level resolution the displayed image really has: ``floor(log2(1/step + 1))``,
    at most ``cap`` (a float image has the cap), at least 5."""
    step = grey_step(pixels)
    if step <= 0:
        return cap
    return int(max(5, min(cap, np.floor(np.log2(1.0 / step + 1.0) + 1e-9))))


def common_shape(shapes) -> tuple[int, int]:
    """The study's image size: the smallest height and width among the images (nothing is upsampled
    in both directions); aspect ratios are matched by cropping (see :func:`crop_to_aspect`)."""
    shapes = [tuple(int(v) for v in s[:2]) for s in shapes]
    return min(h for h, _ in shapes), min(w for _, w in shapes)


def crop_to_aspect(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre crop of ``pixels`` with the aspect ratio of ``shape`` (height / width)."""
    h, w = pixels.shape
    th, tw = shape
    if h * tw > w * th:  # too tall
        nh = max(1, round(w * th / tw))
        top = (h - nh) // 2
        return pixels[top : top + nh]
    nw = max(1, round(h * tw / th))
    left = (w - nw) // 2
    return pixels[:, left : left + nw]


def resample(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-weighted (box) resampling to ``shape`` after a centre crop to its aspect ratio."""
    from PIL import Image

    cropped = crop_to_aspect(np.asarray(pixels, dtype=np.float32), shape)
    if cropped.shape == tuple(shape):
        return cropped.astype(np.float64)
    image = Image.fromarray(cropped, mode="F").resize((shape[1], shape[0]), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float64)


def normalize(
    pixels: np.ndarray, shape: tuple[int, int], bit_depth: int, rng: np.random.Generator, bits: int | None = None
) -> np.ndarray:
    """Dequantize, resample and requantize one displayed image ([0, 1] floats) for a study with
    ``bits`` grey levels (default ``bit_depth``; see :func:`effective_bits`).

    Returns floats on the output grid (multiples of ``1 / (2**bit_depth - 1)``), so that encoding
    them at ``bit_depth`` is exact.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    step = grey_step(pixels)
    continuous = pixels + rng.uniform(-step / 2, step / 2, size=pixels.shape)
    resized = resample(continuous, shape)
    lo, hi = float(resized.min()), float(resized.max())
    stretched = (resized - lo) / (hi - lo) if hi > lo else np.zeros_like(resized)
    levels = float(2 ** (bits or bit_depth) - 1)
    top = float(2**bit_depth - 1)
    k = np.clip(np.round(stretched * levels + rng.uniform(-0.5, 0.5, size=resized.shape)), 0, levels)
    return np.round(k * top / levels) / top


# ---------------------------------------------------------------------------- tell-tale features
# What a "classifier on simple pixel statistics" looks at; the tests check that these no longer
# separate real from synthetic study images.


def grey_level_count(codes: np.ndarray) -> int:
    """Number of distinct grey levels of an integer image."""
    return int(np.unique(codes).size)


def histogram_gap_fraction(codes: np.ndarray) -> float:
    """Fraction of the codes between the image's minimum and maximum that no pixel has."""
    codes = np.asarray(codes).astype(np.int64).ravel()
    lo, hi = int(codes.min()), int(codes.max())
    if hi == lo:
        return 0.0
    used = np.bincount(codes - lo, minlength=hi - lo + 1) > 0
    return float(1.0 - used.mean())

"""Display processing: log image -> the image a clinical system shows (float32 in [0, 1], or uint16).

Steps: unsharp masking (edge enhancement of detail above a Gaussian of
``unsharp_px``), windowing (explicit, or between two percentiles of the
image), a LUT (linear or a film-like sigmoid) and gamma. Bone and metal (high
attenuation) are bright, as on a radiograph.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .params import DisplayParams


def unsharp_mask(image: np.ndarray, amount: float, sigma_px: float) -> np.ndarray:
    if amount <= 0:
        return image
    return image + amount * (image - ndimage.gaussian_filter(image, sigma_px, mode="reflect"))


def window(image: np.ndarray, params: DisplayParams) -> np.ndarray:
    """Map the window to [0, 1] (clipped)."""
    if params.window is not None:
        lo, hi = params.window
    else:
        finite = image[np.isfinite(image)]
        lo, hi = np.percentile(finite, params.percentiles) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1e-6
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def apply_lut(x: np.ndarray, params: DisplayParams) -> np.ndarray:
    if params.lut == "sigmoid":
        k = 8.0
        s = 1 / (1 + np.exp(-k * (x - 0.5)))
        s0, s1 = 1 / (1 + np.exp(k * 0.5)), 1 / (1 + np.exp(-k * 0.5))
        x = (s - s0) / (s1 - s0)
    return x if params.gamma == 1.0 else x**params.gamma


def display(log_image: np.ndarray, params: DisplayParams = DisplayParams()) -> np.ndarray:
    """Processed image, float32 in [0, 1]."""
    img = np.asarray(log_image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"display processing needs a 2-D image, got shape {img.shape}")
    img = unsharp_mask(img, params.unsharp_amount, params.unsharp_px)
    return apply_lut(window(img, params), params).astype(np.float32)


def to_uint16(image01: np.ndarray) -> np.ndarray:
    """A [0, 1] float image as 16-bit (0..65535)."""
    return np.round(np.clip(image01, 0.0, 1.0) * 65535.0).astype(np.uint16)

"""Image metrics of rendered radiographs used by the CT-realism checks and ``benchmarks/drr_presets.py``.

* :func:`slice_peak_db`: height of a spectral peak at the projected slice
  frequency in the vertical (row) power spectrum, in dB above the power law
  fitted around it. A CT of thick slices stamps a staircase with that period
  into the image; a radiograph has no such peak (about 0 dB).
* :func:`anisotropy`: power of vertical over horizontal image variation
  (2-D power spectrum in +-22.5 degree sectors around the vertical and the
  horizontal frequency axes, radial band 0.05-0.45 cycles/pixel). Chest
  radiographs measure about 1.4-2.3 (horizontal ribs and the diaphragm make
  vertical variation stronger); the staircase of thick slices raises it.
* :func:`roi_contrast_ratio`: ``(heart - lung) / (liver - lung)`` of the
  medians of three regions.

Pure numpy functions of an (H, W) image and an optional boolean ROI.
"""

from __future__ import annotations

import numpy as np


def _roi_box(shape, roi) -> tuple[slice, slice]:
    if roi is None:
        return slice(None), slice(None)
    roi = np.asarray(roi, bool)
    rows = np.flatnonzero(roi.any(1))
    cols = np.flatnonzero(roi.any(0))
    if rows.size == 0:
        raise ValueError("the region of interest is empty")
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _largest_inner_box(roi) -> tuple[slice, slice]:
    """The bounding box of the ROI shrunk until it lies inside the ROI (a rectangle of ROI pixels)."""
    rs, cs = _roi_box(roi.shape, roi)
    sub = np.asarray(roi, bool)[rs, cs]
    r0, r1, c0, c1 = 0, sub.shape[0], 0, sub.shape[1]
    while r1 - r0 > 8 and c1 - c0 > 8 and not sub[r0:r1, c0:c1].all():
        r0, r1, c0, c1 = r0 + 1, r1 - 1, c0 + 1, c1 - 1
    return slice(rs.start + r0, rs.start + r1), slice(cs.start + c0, cs.start + c1)


def vertical_spectrum(image: np.ndarray, roi=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean power spectrum along columns (frequency in cycles per pixel along v) over the ROI's box."""
    rs, cs = _largest_inner_box(roi) if roi is not None else (slice(None), slice(None))
    x = np.asarray(image, np.float64)[rs, cs]
    n = x.shape[0]
    t = np.arange(n)
    # remove each column's linear trend, then a Hann window
    A = np.stack([t, np.ones(n)], axis=1)
    coef, *_ = np.linalg.lstsq(A, x, rcond=None)
    x = (x - A @ coef) * np.hanning(n)[:, None]
    p = (np.abs(np.fft.rfft(x, axis=0)) ** 2).mean(axis=1)
    return np.fft.rfftfreq(n), p


def slice_peak_db(image: np.ndarray, period_px: float, roi=None, half_width: float = 0.04) -> float:
    """Excess power around the slice frequency ``1 / period_px`` (cycles/px) in the vertical spectrum, dB.

    The band ``f_s +- half_width`` (a staircase puts its power in side lobes
    around ``f_s``, with a notch at ``f_s`` itself) against the power law
    fitted to the spectrum on both sides of it (``0.5 f_s`` .. ``f_s - 2
    half_width`` and ``f_s + 2 half_width`` .. ``min(1.5 f_s, 0.5)``). 0 dB:
    no peak; a radiograph measures about 0 +- 1 dB.
    """
    f, p = vertical_spectrum(image, roi)
    fs = 1.0 / period_px
    fs = fs - np.floor(fs)
    fs = min(fs, 1.0 - fs)  # aliased into [0, 0.5]
    band = np.abs(f - fs) <= half_width
    flank = (f > 0.5 * fs) & (f < min(1.5 * fs, 0.5)) & (np.abs(f - fs) >= 2 * half_width)
    if band.sum() < 2 or flank.sum() < 4:
        raise ValueError(f"the ROI is too small to resolve {fs:.3f} cycles/px")
    k = np.polyfit(np.log(f[flank]), np.log(p[flank]), 1)
    fit = np.exp(np.polyval(k, np.log(f[band])))
    return float(10.0 * np.log10(p[band].sum() / fit.sum()))


def anisotropy(image: np.ndarray, roi=None, band=(0.05, 0.45), half_angle_deg: float = 22.5) -> float:
    """Vertical / horizontal power in the radial ``band`` (cycles/px), sectors of +-``half_angle_deg``."""
    rs, cs = _largest_inner_box(roi) if roi is not None else (slice(None), slice(None))
    x = np.asarray(image, np.float64)[rs, cs]
    x = x - x.mean()
    x = x * np.outer(np.hanning(x.shape[0]), np.hanning(x.shape[1]))
    p = np.abs(np.fft.fft2(x)) ** 2
    fv = np.fft.fftfreq(x.shape[0])[:, None]
    fu = np.fft.fftfreq(x.shape[1])[None, :]
    r = np.hypot(fu, fv)
    ang = np.degrees(np.arctan2(np.abs(fv), np.abs(fu)))  # 90 = vertical frequency axis
    inband = (r >= band[0]) & (r <= band[1])
    vert = inband & (ang >= 90 - half_angle_deg)
    horiz = inband & (ang <= half_angle_deg)
    return float(p[vert].sum() / vert.sum() / (p[horiz].sum() / horiz.sum()))


def roi_contrast_ratio(image: np.ndarray, heart, lung, liver) -> float:
    """``(heart - lung) / (liver - lung)`` of the medians of the three boolean regions."""
    h, lu, li = (float(np.median(np.asarray(image)[np.asarray(m, bool)])) for m in (heart, lung, liver))
    return (h - lu) / (li - lu)

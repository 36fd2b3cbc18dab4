"""Display processing like a clinical CR/DR console: log image (+ masks) -> the image a radiologist sees.

A radiograph is never shown as its raw log signal. Every CR/DR console runs the
same three stages, and so does :func:`display`:

1. **Exposure recognition** (:func:`anatomy_mask`, :func:`exposure_window`): the
   values of interest come from the histogram of the *anatomy* only, leaving out
   direct exposure (rays that missed the patient), the region outside the
   collimation (here: outside the CT's coverage) and metal, as Fuji's Exposure
   Data Recognizer and every vendor's histogram analysis do (AAPM Report 93,
   2006, section 2; Seibert, "Computed radiography overview", 1996). Without
   this, air and metal set the window and the body is washed out.
2. **Multi-scale processing** (:func:`laplacian_pyramid`, :func:`multiscale`):
   the windowed image is split into octave bands by a Laplacian pyramid (Burt
   and Adelson, IEEE Trans. Commun. 1983); fine bands are amplified (edge
   enhancement), coarse bands and the low-pass residual are attenuated
   (dynamic-range compression: lungs, mediastinum and abdomen all stay inside
   the display range), and band coefficients pass a power law that lifts faint
   detail relative to strong edges (contrast equalization). This is the scheme
   of Agfa's MUSICA (Vuylsteke and Schoeters, Proc. SPIE 2167, 1994) and, with
   other band splits, of Philips UNIQUE and Carestream EVP (a two-band version:
   large-kernel low pass compressed, high pass boosted). The pyramid
   reconstructs its input exactly when all gains are one.
3. **Gradation** (:func:`tone_curve`): the processed anatomy is windowed again
   and mapped by a film-like S curve (toe and shoulder instead of hard
   clipping) and a gamma. Bone and metal are bright, air dark.

Everything is a pure function of the log image (``-ln`` transmission, the
attenuation line integral) and optional boolean masks; parameters live in
:class:`~projectors.physics.params.DisplayParams` (JSON-serializable) and
:func:`sample_display_params` draws them from a ``numpy.random.Generator``
(domain randomization of the display). :func:`display_masks` derives the
masks from the projector's per-material areal densities.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..materials import MATERIALS
from .params import DisplayParams, PhysicsParamsError

#: 5-tap binomial kernel of the Burt-Adelson pyramid (a = 3/8).
PYRAMID_KERNEL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
#: The coarsest pyramid level keeps at least this many pixels along its shorter side.
PYRAMID_MIN_SIZE = 8
#: Before the pyramid the windowed image is clipped to [-HALO_MARGIN, 1 + HALO_MARGIN]:
#: direct exposure and metal lie far outside the window, and their steps would otherwise
#: dominate the coarse bands and throw halos (undershoot/overshoot) across the anatomy.
HALO_MARGIN = 0.5
#: Contrast equalization is linear below this fraction of a band's scale M (no noise blow-up at 0).
EQUALIZATION_FLOOR = 0.05
#: Coefficients within about this many noise sigmas of zero are treated as noise by the enhancement
#: (coring, as in noise-adaptive console processing).
CORING = 3.0
#: A material denser than this (g/cm^3) is metal: no tissue is (cortical bone is 1.92).
METAL_DENSITY = 3.0


#: The display before the console processing: a 0.5-99.5 percentile window of the whole image,
#: linear (no masks, no multi-scale processing). For baselines (naive DRRs) and comparisons.
WINDOW_ONLY = DisplayParams(percentiles=(0.5, 99.5), direct_exposure=0.0, unsharp_amount=0.0, equalization=1.0,
                            compression=0.0, lut="linear")


class DisplayError(PhysicsParamsError):
    """Inputs that cannot be display-processed (wrong shape, non-finite values, mismatched masks)."""


# ---------------------------------------------------------------------------
# masks and exposure recognition


def display_masks(areal_density: dict) -> dict[str, np.ndarray]:
    """``covered`` and ``metal`` masks of one view from the projector's per-material areal densities.

    ``covered``: the ray crossed a volume (its total areal density, air included, is > 0);
    ``metal``: it crossed a material denser than :data:`METAL_DENSITY` (titanium, steel,
    CoCr, nitinol, ...). Unknown material names count as not metal.
    """
    if not areal_density:
        raise DisplayError("display_masks needs at least one material's areal density")
    arrays = {m: np.asarray(a, dtype=np.float64) for m, a in areal_density.items()}
    shape = next(iter(arrays.values())).shape
    if any(a.shape != shape for a in arrays.values()):
        raise DisplayError(f"areal densities differ in shape: { {m: a.shape for m, a in arrays.items()} }")
    total = np.zeros(shape)
    metal = np.zeros(shape, dtype=bool)
    for m, a in arrays.items():
        total += a
        if m in MATERIALS and MATERIALS[m].density > METAL_DENSITY:
            metal |= a > 0
    return {"covered": total > 0, "metal": metal}


def _as_mask(mask, shape, name: str) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != shape:
        raise DisplayError(f"{name} mask has shape {m.shape}, the image {shape}")
    return m.astype(bool)


def anatomy_mask(log_image: np.ndarray, direct_exposure: float = 0.05, covered=None, metal=None) -> np.ndarray:
    """Pixels whose values set the window: covered, not metal, not direct exposure, finite.

    Direct exposure: log value below ``direct_exposure`` (transmission above
    ``exp(-direct_exposure)``; 0.05 is about 3 mm of water at 80-120 kV).
    """
    img = np.asarray(log_image)
    m = np.isfinite(img) & (img >= direct_exposure)
    c = _as_mask(covered, img.shape, "covered")
    if c is not None:
        m &= c
    x = _as_mask(metal, img.shape, "metal")
    if x is not None:
        m &= ~x
    return m


def exposure_window(values: np.ndarray, mask: np.ndarray | None, percentiles=(1.0, 99.0)) -> tuple[float, float]:
    """``(lo, hi)``: the ``percentiles`` of ``values`` over ``mask`` (all finite pixels when the mask is empty).

    Masked-out pixels cannot move the window: they are not in the sample.
    """
    v = np.asarray(values, dtype=np.float64)
    sample = v[mask] if mask is not None and np.any(mask) else v[np.isfinite(v)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, percentiles)
    if not hi > lo:
        hi = lo + 1e-6
    return float(lo), float(hi)


# ---------------------------------------------------------------------------
# Laplacian pyramid


def _support(n: int, step: int) -> np.ndarray:
    """1-D normalizer: the binomial kernel summed over the samples present (every ``step``-th of ``n``)."""
    w = np.zeros(n)
    w[::step] = 1.0
    return ndimage.convolve1d(w, PYRAMID_KERNEL, mode="constant")


def _reduce(g: np.ndarray) -> np.ndarray:
    """Binomial blur by normalized convolution (zero padding divided by the kernel's support, so a
    constant stays exactly constant up to the borders), then every second row and column; the blur
    is separable, so each axis is subsampled right after its pass."""
    out = g
    for ax in (0, 1):
        n = out.shape[ax]
        out = ndimage.convolve1d(out, PYRAMID_KERNEL, axis=ax, mode="constant") / np.expand_dims(_support(n, 1), 1 - ax)
        out = out[::2] if ax == 0 else out[:, ::2]
    return out


def _expand(g: np.ndarray, shape) -> np.ndarray:
    """Upsample ``g`` to ``shape``: zero insertion, binomial interpolation normalized by the inserted
    samples' support (in the interior the classic 4x kernel)."""
    up = np.zeros(shape)
    up[::2, ::2] = g
    for ax in (0, 1):
        up = ndimage.convolve1d(up, PYRAMID_KERNEL, axis=ax, mode="constant") / np.expand_dims(_support(shape[ax], 2), 1 - ax)
    return up


def pyramid_levels(shape) -> int:
    """Number of band-pass levels for an image of ``shape``: the residual keeps >= PYRAMID_MIN_SIZE px."""
    n = min(shape)
    return max(0, int(np.floor(np.log2(max(n, 1) / PYRAMID_MIN_SIZE))))


def laplacian_pyramid(image: np.ndarray, levels: int | None = None) -> list[np.ndarray]:
    """``[b_0, ..., b_{K-1}, residual]``: band ``k`` = ``g_k - expand(g_{k+1})`` with ``g_0`` the image
    and ``g_{k+1} = reduce(g_k)`` (Burt and Adelson 1983). :func:`reconstruct` inverts it exactly."""
    g = np.asarray(image, dtype=np.float64)
    levels = pyramid_levels(g.shape) if levels is None else int(levels)
    out = []
    for _ in range(levels):
        if min(g.shape) < 2:
            break
        small = _reduce(g)
        out.append(g - _expand(small, g.shape))
        g = small
    out.append(g)
    return out


def reconstruct(pyramid: list[np.ndarray]) -> np.ndarray:
    """Inverse of :func:`laplacian_pyramid`: ``g_k = b_k + expand(g_{k+1})`` from the residual up."""
    g = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        g = band + _expand(g, band.shape)
    return g


def _level_mask(mask: np.ndarray | None, k: int) -> np.ndarray | None:
    return None if mask is None else mask[:: 2**k, :: 2**k]


def equalize(band: np.ndarray, power: float, scale: float) -> np.ndarray:
    """MUSICA-style contrast equalization of one band: ``b * (max(|b|, f M) / M) ** (power - 1)``.

    Coefficients of size ``M`` (= ``scale``) are unchanged, smaller ones gain up to
    ``EQUALIZATION_FLOOR ** (power - 1)``, larger ones are compressed; the sign and the
    order of magnitudes are kept (the map is odd and monotone).
    """
    if power == 1.0 or scale <= 0:
        return band
    mag = np.maximum(np.abs(band), EQUALIZATION_FLOOR * scale)
    return band * (mag / scale) ** (power - 1.0)


def band_noise_ratios(levels: int) -> np.ndarray:
    """Standard deviation of each band of :func:`laplacian_pyramid` for unit white noise, relative to band 0
    (a fixed property of the pyramid: measured for the first five bands; beyond, each band halves, as
    white noise does over an octave of 2-D frequency)."""
    r = list(_BAND_NOISE)
    while len(r) < levels:
        r.append(r[-1] * 0.5)
    return np.asarray(r[:levels])


def _band_noise(levels: int, size: int) -> np.ndarray:
    # a fixed white-noise field (seed 0): a calibration constant of the pyramid, not a random draw of a sample
    noise = np.random.default_rng(0).standard_normal((size, size))
    stds = np.array([b[8:-8, 8:-8].std() if min(b.shape) > 16 else b.std() for b in laplacian_pyramid(noise, levels)[:-1]])
    return stds / stds[0]


_BAND_NOISE = _band_noise(5, 256)


def noise_weight(band: np.ndarray, noise_sigma: float) -> np.ndarray:
    """How much of a coefficient is structure rather than noise: ``1 - exp(-(|b| / (CORING * sigma))^2)``
    (0 at the noise level, 1 for edges well above it); all 1 when there is no noise."""
    if noise_sigma <= 0:
        return np.ones_like(band)
    return 1.0 - np.exp(-((band / (CORING * noise_sigma)) ** 2))


def multiscale(x: np.ndarray, params: DisplayParams, mask: np.ndarray | None = None, pixel_mm: float = 1.0) -> np.ndarray:
    """Edge enhancement, contrast equalization and dynamic-range compression on a Laplacian pyramid.

    ``x``: the windowed image (anatomy roughly in [0, 1]); ``mask``: the anatomy (sets the
    equalization scales and the compression's fixed point, its median); ``pixel_mm``: the
    detector pixel pitch. Band ``k`` (detail of about ``2**k`` px, ``2**k * pixel_mm`` mm)
    gains ``1 + unsharp_amount`` when finer than ``unsharp_mm``; bands at or above
    ``compression_mm`` and the residual are scaled by ``1 - compression`` about the median
    ``m``, so the low-pass part's range shrinks by exactly that factor.

    Enhancement is noise-adaptive, as consoles make it: the noise of band 0 is estimated from its
    median absolute coefficient over the anatomy (the finest band of a radiograph is mostly
    quantum noise), scaled to each band by :func:`band_noise_ratios`, and the enhancing gains
    (equalization, edge enhancement) act on each coefficient in proportion to
    :func:`noise_weight`: noise passes at unit gain, structure above it is enhanced.
    """
    pyr = laplacian_pyramid(x)
    c = params.compression
    sample = x[mask] if mask is not None and np.any(mask) else x.ravel()
    m = float(np.median(sample)) if sample.size else 0.0

    def anatomy(k, b):
        lm = _level_mask(mask, k)
        return np.abs(b[lm]) if lm is not None and np.any(lm) else np.abs(b).ravel()

    ratios = band_noise_ratios(len(pyr) - 1)
    a0 = anatomy(0, pyr[0]) if len(pyr) > 1 else np.zeros(0)
    noise0 = 1.4826 * float(np.median(a0)) if a0.size else 0.0  # MAD -> sigma for Gaussian noise
    out = []
    for k, b in enumerate(pyr[:-1]):
        scale = 2.0**k * pixel_mm
        enhanced = b
        if params.equalization != 1.0:
            vals = anatomy(k, b)
            enhanced = equalize(enhanced, params.equalization, float(np.percentile(vals, 99.5)) if vals.size else 0.0)
        if scale < params.unsharp_mm:
            enhanced = (1.0 + params.unsharp_amount) * enhanced
        if enhanced is not b:
            b = b + noise_weight(b, noise0 * ratios[k]) * (enhanced - b)
        if scale >= params.compression_mm:
            b = (1.0 - c) * b
        out.append(b)
    out.append(m + (1.0 - c) * (pyr[-1] - m))
    return reconstruct(out)


# ---------------------------------------------------------------------------
# gradation


def tone_curve(x: np.ndarray, params: DisplayParams, center: float = 0.5) -> np.ndarray:
    """Windowed values -> display values in [0, 1]: film-like S curve or linear, then gamma.

    ``center``: the windowed value the S curve shows as mid-grey (its inflection point); the
    linear curve is the plain window shifted by ``level``.
    """
    if params.lut == "sigmoid":
        y = 0.5 * (1.0 + np.tanh(0.5 * params.contrast * (x - center)))  # = logistic, overflow-free
    else:
        y = np.clip(x - params.level, 0.0, 1.0)
    return y if params.gamma == 1.0 else y**params.gamma


def display(
    log_image: np.ndarray,
    params: DisplayParams = DisplayParams(),
    *,
    covered: np.ndarray | None = None,
    metal: np.ndarray | None = None,
    pixel_mm: float | None = None,
    field: np.ndarray | None = None,
) -> np.ndarray:
    """The processed image, float32 in [0, 1] (bone bright), from the log image and optional masks.

    ``covered``: pixels whose rays crossed the CT (outside is like collimation: left out of
    the window); ``metal``: pixels behind metal (left out of the window). Both from
    :func:`display_masks`. Direct exposure is recognised from the log values themselves.
    ``pixel_mm``: the detector pixel pitch, which the multi-scale stages need (their scales
    are in mm); not needed for a plain window. ``field``: the collimated field; outside it the
    image shows ``params.shutter`` (a console's electronic shutter: the blade shadow carries no
    anatomy, only noise) and it is left out of the window.
    """
    img = np.asarray(log_image, dtype=np.float64)
    if img.ndim != 2:
        raise DisplayError(f"display processing needs a 2-D image, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise DisplayError("display processing needs a finite log image (got NaN or inf)")
    inside = _as_mask(field, img.shape, "field")
    if inside is not None:
        covered = inside if covered is None else (_as_mask(covered, img.shape, "covered") & inside)
    mask = anatomy_mask(img, params.direct_exposure, covered, metal)
    if params.window is not None:
        lo, hi = params.window
    else:
        lo, hi = exposure_window(img, mask, params.percentiles)
    x = np.clip((img - lo) / (hi - lo), -HALO_MARGIN, 1.0 + HALO_MARGIN)
    if params.unsharp_amount > 0 or params.compression > 0 or params.equalization != 1.0:
        if pixel_mm is None or not (np.isfinite(pixel_mm) and pixel_mm > 0):
            raise DisplayError(f"multi-scale display processing needs the detector pixel pitch pixel_mm (its scales are "
                               f"in mm), got {pixel_mm!r}")
        cov = _as_mask(covered, img.shape, "covered")
        if cov is not None and not cov.all() and cov.any():
            # Like a console's collimation masking: the pyramid sees the uncovered region filled with
            # its nearest covered value (no halo along the coverage edge); the region keeps its own value.
            idx = ndimage.distance_transform_edt(~cov, return_distances=False, return_indices=True)
            y = multiscale(x[tuple(idx)], params, mask, pixel_mm)
            x = np.where(cov, y, x)
        else:
            x = multiscale(x, params, mask, pixel_mm)
        if params.window is None:
            lo2, hi2 = exposure_window(x, mask, params.percentiles)
            x = (x - lo2) / (hi2 - lo2)
    if params.window is None:
        # the anatomy's median is shown as mid-grey (+ level), as consoles key the gradation to the
        # histogram's median (Fuji's S value, Agfa's SAL/lgM, the exposure index of IEC 62494-1)
        sample = x[mask] if np.any(mask) else x[np.isfinite(x)]
        center = float(np.median(sample)) + params.level if sample.size else 0.5 + params.level
    else:
        center = 0.5 + params.level
    out = tone_curve(x, params, center)
    if inside is not None and params.shutter is not None:
        out = np.where(inside, out, params.shutter)
    return out.astype(np.float32)


def to_uint16(image01: np.ndarray) -> np.ndarray:
    """A [0, 1] float image as 16-bit (0..65535)."""
    return np.round(np.clip(image01, 0.0, 1.0) * 65535.0).astype(np.uint16)

"""Detector response: quantum noise, blur, plate structure, fixed pattern, electronic noise, saturation.

Order (a cascade of gain and blur stages, as in a flat panel or a CR reader):
X-ray quanta are absorbed (compound Poisson) -> a fixed gain pattern in the
phosphor layer (CR plate structure) -> the phosphor's light spread blurs
signal, quantum noise and structure alike (PSF) -> secondary quanta (a CR
reader's photo-electrons: Poisson, white) -> pixel gain and offset (residual
read-out fixed pattern after calibration) -> electronic noise -> ADC
(saturation and quantization).

Quantum noise of an energy-integrating detector is compound Poisson: the
signal ``sum_E E * Poisson(N_E)`` has mean ``M1 = sum E N_E`` and variance
``M2 = sum E^2 N_E``; fluctuations of the conversion gain (light yield, light
collection, K-escape) multiply the variance by ``1 / swank_optical``. We draw
it as ``e_eff * Poisson(M1 / e_eff)`` with ``e_eff = M2 / (I_opt M1)``, which
has exactly that mean and variance (and stays non-negative); the Swank factor
``I = I_opt M1^2 / (M0 M2)`` then gives ``SNR^2 = I * M0`` for M0 detected
quanta. A photon counter is plain Poisson.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from .params import DetectorParams


def mtf(freq_cycles_per_px, det: DetectorParams) -> np.ndarray:
    """MTF of :func:`psf_blur` at radial frequencies (cycles per pixel)."""
    f = np.asarray(freq_cycles_per_px, dtype=np.float64)
    g = np.exp(-2 * np.pi**2 * det.blur_px**2 * f**2)
    lor = 1.0 / (1.0 + (2 * np.pi * det.lorentz_px * f) ** 2)
    glare = np.exp(-2 * np.pi**2 * det.glare_px**2 * f**2)
    return g * lor * ((1 - det.glare) + det.glare * glare)


def psf_blur(image: np.ndarray, det: DetectorParams) -> np.ndarray:
    """The detector PSF (:func:`mtf`): Gaussian core, Lorentzian spread, wide glare; preserves the total signal.

    Edges are handled by reflection. Without a Lorentzian part the Gaussians are applied in image
    space (scipy); with one, the whole MTF is applied by FFT on a reflect-padded image.
    """
    if det.lorentz_px <= 0:
        out = image
        if det.blur_px > 0:
            out = ndimage.gaussian_filter(out, det.blur_px, mode="reflect", truncate=4.0)
        if det.glare > 0:
            out = (1.0 - det.glare) * out + det.glare * ndimage.gaussian_filter(out, det.glare_px, mode="reflect", truncate=3.0)
        return out
    H, W = image.shape
    reach = max(4.0 * det.blur_px, 12.0 * det.lorentz_px, 3.0 * det.glare_px if det.glare > 0 else 0.0)
    pad = int(min(np.ceil(reach), H - 1, W - 1))
    x = np.pad(np.asarray(image, dtype=np.float64), pad, mode="symmetric")
    fy = np.fft.fftfreq(x.shape[0])[:, None]
    fx = np.fft.rfftfreq(x.shape[1])[None, :]
    out = np.fft.irfft2(np.fft.rfft2(x) * mtf(np.hypot(fy, fx), det), s=x.shape)
    return out[pad : pad + H, pad : pad + W]


@lru_cache(maxsize=8)
def fixed_pattern(shape, det: DetectorParams) -> tuple[np.ndarray, np.ndarray]:
    """Residual gain (around 1) and offset (relative to flat signal) maps, from ``det.pattern_seed``
    (cached: a detector's pattern is fixed; the arrays are read-only)."""
    g = np.random.default_rng(det.pattern_seed)
    gain = np.ones(shape)
    offset = np.zeros(shape)
    if det.gain_variation > 0:
        gain += det.gain_variation * g.standard_normal(shape)
    if det.line_variation > 0:
        gain += det.line_variation * (g.standard_normal((shape[0], 1)) + g.standard_normal((1, shape[1])))
    if det.offset_variation > 0:
        offset = det.offset_variation * g.standard_normal(shape)
    gain = np.clip(gain, 0.0, None)
    gain.setflags(write=False)
    offset.setflags(write=False)
    return gain, offset


@lru_cache(maxsize=8)
def structure_pattern(shape, det: DetectorParams) -> np.ndarray:
    """Fixed relative gain of the phosphor layer (plate structure): ``1 + structure_noise * N(0, 1)``
    per pixel, from its own stream of ``det.pattern_seed`` (read-only, cached)."""
    g = np.random.default_rng([det.pattern_seed, 1])
    out = np.clip(1.0 + det.structure_noise * g.standard_normal(shape), 0.0, None)
    out.setflags(write=False)
    return out


def quantum_noise(mean: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Compound-Poisson draw with the given mean and variance (``second``) per pixel."""
    m = np.maximum(mean, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        e_eff = np.where(m > 0, second / m, 1.0)
        n_eff = np.where(e_eff > 0, m / e_eff, 0.0)
    return e_eff * rng.poisson(n_eff)


def apply_detector(
    mean: np.ndarray,
    second: np.ndarray,
    flat_center: float,
    quantum_signal: float,
    det: DetectorParams,
    rng: np.random.Generator | None,
    noise: bool = True,
) -> np.ndarray:
    """Detector output for a mean signal (H, W).

    ``second``: variance of the quantum signal (sum w^2 N); ``flat_center``:
    flat-field signal at the detector centre (scales offsets and full scale);
    ``quantum_signal``: mean signal of one detected quantum (scales the
    electronic noise). ``rng`` is needed when ``noise`` is on.
    """
    if noise and rng is None:
        raise ValueError("noise is on but no numpy.random.Generator was given")
    s = quantum_noise(mean, np.asarray(second) / det.swank_optical, rng) if noise else np.asarray(mean, dtype=np.float64)
    if det.structure_noise > 0:
        s = s * structure_pattern(tuple(s.shape), det)
    s = psf_blur(s, det)
    if noise and det.secondary_quanta_per_kev is not None:
        # photo-electrons of the read-out: Poisson in their number (signal in keV x quanta per keV)
        g = det.secondary_quanta_per_kev
        s = rng.poisson(np.maximum(s, 0.0) * g) / g
    if det.gain_variation > 0 or det.offset_variation > 0 or det.line_variation > 0:
        gain, offset = fixed_pattern(tuple(s.shape), det)
        s = s * gain + offset * flat_center
    if noise and det.electronic_noise > 0:
        s = s + rng.normal(0.0, det.electronic_noise * quantum_signal, s.shape)
    if det.saturation is not None:
        full = det.saturation * flat_center
        lsb = full / (2 ** int(det.bits) - 1)
        s = np.round(np.clip(s, 0.0, full) / lsb) * lsb
    return s

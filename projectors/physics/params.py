"""Physics parameters: JSON-serializable dataclasses.

Split as everywhere in synthex: a sampler
(:func:`domain_randomization.simulation.sample_physics_params`) draws a
:class:`PhysicsParams` from its own ``numpy.random.Generator``; the pure
:func:`projectors.physics.simulate` applies it. ``params.to_dict()`` is stored
with each sample and ``PhysicsParams.from_dict`` replays it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..records import from_record
from .spectrum import SpectrumParams


class PhysicsParamsError(ValueError):
    """Impossible or misspelled physics parameters."""


def _record(cls, d):
    return from_record(cls, d, PhysicsParamsError)


def _check(cond: bool, msg: str):
    if not cond:
        raise PhysicsParamsError(msg)


@dataclass(frozen=True)
class DetectorParams:
    """Flat-panel detector: CsI:Tl scintillator on an a-Si panel (or a photon counter).

    * ``mode``: ``"integrating"`` (signal = deposited energy, weight E) or
      ``"counting"`` (signal = detected photons, weight 1).
    * ``csi_mm``, ``csi_fill``: scintillator thickness and packing fraction
      (columnar CsI ~ 0.75-0.8); QE(E) = 1 - exp(-mu_CsI(E) rho fill t).
    * ``blur_px``: Gaussian PSF sigma (pixels); ``glare``: fraction of signal
      in a wide Gaussian of sigma ``glare_px`` (scintillator/optical glare).
    * ``electronic_noise``: additive Gaussian noise, sigma in units of the
      mean signal of one detected X-ray quantum.
    * ``gain_variation``, ``offset_variation``: residual fixed-pattern gain
      (relative sigma) and offset (sigma relative to the flat-field signal)
      after calibration, from ``pattern_seed``; ``line_variation`` adds
      per-row/column stripes (relative sigma).
    * ``saturation``: full scale relative to the flat-field signal at the
      detector centre (None: never saturates); ``bits``: ADC depth over full scale.
    """

    mode: str = "integrating"
    csi_mm: float = 0.6
    csi_fill: float = 0.8
    blur_px: float = 0.0
    glare: float = 0.0
    glare_px: float = 20.0
    electronic_noise: float = 0.0
    gain_variation: float = 0.0
    offset_variation: float = 0.0
    line_variation: float = 0.0
    saturation: float | None = None
    bits: int = 16
    pattern_seed: int = 0

    def __post_init__(self):
        _check(self.mode in ("integrating", "counting"), f"detector mode must be 'integrating' or 'counting', got {self.mode!r}")
        _check(0 < self.csi_mm <= 5, f"CsI thickness must lie in (0, 5] mm, got {self.csi_mm}")
        _check(0 < self.csi_fill <= 1, f"CsI packing fraction must lie in (0, 1], got {self.csi_fill}")
        for n in ("blur_px", "glare", "electronic_noise", "gain_variation", "offset_variation", "line_variation"):
            v = getattr(self, n)
            _check(np.isfinite(v) and v >= 0, f"detector {n} must be finite and >= 0, got {v}")
        _check(self.glare < 1, f"glare fraction must be < 1, got {self.glare}")
        _check(self.glare_px > 0, f"glare_px must be > 0, got {self.glare_px}")
        _check(self.saturation is None or self.saturation > 0, f"saturation must be > 0 or None, got {self.saturation}")
        _check(4 <= int(self.bits) <= 24, f"ADC bits must lie in 4..24, got {self.bits}")


@dataclass(frozen=True)
class GridParams:
    """Anti-scatter grid by its specification: ratio and transmissions (IEC 60627 figures).

    ``primary_transmission`` Tp and ``scatter_transmission`` Ts multiply the
    primary and scatter signals; the flat-field calibration includes Tp, so
    the grid lowers the scatter-to-primary ratio by Ts / Tp.
    """

    ratio: float = 10.0
    primary_transmission: float = 0.72
    scatter_transmission: float = 0.12

    def __post_init__(self):
        _check(self.ratio > 0, f"grid ratio must be > 0, got {self.ratio}")
        _check(0 < self.primary_transmission <= 1, f"grid primary transmission must lie in (0, 1], got {self.primary_transmission}")
        _check(0 <= self.scatter_transmission <= 1, f"grid scatter transmission must lie in [0, 1], got {self.scatter_transmission}")


@dataclass(frozen=True)
class ScatterParams:
    """``model``: ``"fast"`` (kernel superposition, default), ``"none"``; ``grid``: optional anti-scatter grid."""

    model: str = "fast"
    grid: GridParams | None = None
    scale: float = 1.0  # multiplies the model's scatter (domain randomization)

    def __post_init__(self):
        known = ("fast", "none")  # projectors.physics.simulate.SCATTER_MODELS
        _check(self.model in known, f"scatter model must be one of {known} (the Monte Carlo runs on voxel scenes, see scatter_mc), got {self.model!r}")
        _check(np.isfinite(self.scale) and self.scale >= 0, f"scatter scale must be >= 0, got {self.scale}")


@dataclass(frozen=True)
class DisplayParams:
    """Display processing like a clinical CR/DR console (:mod:`projectors.physics.display`), applied to the log image.

    Exposure recognition (the window from the anatomy's histogram):

    * ``window``: explicit ``(lo, hi)`` in log units (skips the histogram analysis), or
    * ``percentiles`` ``(lo, hi)`` of the anatomy's log values: pixels outside the CT's
      coverage, behind metal and of direct exposure (log value below
      ``direct_exposure``, i.e. transmission above ``exp(-direct_exposure)``) are left out.

    Multi-scale processing on a Laplacian pyramid of the windowed image (band ``k`` holds
    detail of about ``2**k``-``2**(k+1)`` pixels; scales are given in mm at the detector, as a
    console sets them for its native pixels, so a lower-resolution image is processed alike):

    * edge enhancement: bands finer than ``unsharp_mm`` gain ``1 + unsharp_amount``;
    * contrast equalization (MUSICA-style): every band's coefficients ``b`` become
      ``b * (max(|b|, 0.05 M) / M) ** (equalization - 1)``, ``M`` the band's 99.5th
      percentile of ``|b|`` over the anatomy (``equalization = 1``: off; < 1 lifts faint detail);
    * dynamic-range compression: bands of ``compression_mm`` and coarser, and the
      low-pass residual, scale by ``1 - compression`` about the anatomy's median.

    Tone: the processed anatomy is windowed again between the same ``percentiles`` (not with
    an explicit ``window``) and mapped by ``lut``: ``"sigmoid"`` (film-like S curve
    ``1 / (1 + exp(-contrast * (x - c)))``: toe and shoulder instead of hard clipping) or
    ``"linear"`` (``x - level`` clipped to [0, 1]: the plain window); then ``gamma``. The S curve's
    midpoint ``c`` is the anatomy's median plus ``level`` (windowed units; with an explicit
    ``window``: its centre plus ``level``), so the median of the anatomy is shown mid-grey. Output in [0, 1], bone bright.
    ``unsharp_amount = compression = 0``, ``equalization = 1`` and ``lut="linear"`` is a
    plain window.
    """

    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (1.0, 99.0)
    direct_exposure: float = 0.05
    unsharp_amount: float = 0.7
    unsharp_mm: float = 6.0
    equalization: float = 0.9
    compression: float = 0.5
    compression_mm: float = 48.0
    lut: str = "sigmoid"
    contrast: float = 4.0
    level: float = 0.0
    gamma: float = 1.0

    def __post_init__(self):
        if self.window is not None:
            object.__setattr__(self, "window", tuple(float(x) for x in self.window))
            _check(len(self.window) == 2 and np.all(np.isfinite(self.window)) and self.window[1] > self.window[0],
                   f"window must be (lo, hi) with hi > lo, got {self.window}")
        object.__setattr__(self, "percentiles", tuple(float(x) for x in self.percentiles))
        _check(len(self.percentiles) == 2, f"percentiles must be (lo, hi), got {self.percentiles}")
        lo, hi = self.percentiles
        _check(0 <= lo < hi <= 100, f"percentiles must satisfy 0 <= lo < hi <= 100, got {self.percentiles}")
        _check(np.isfinite(self.direct_exposure) and self.direct_exposure >= 0,
               f"direct_exposure must be a log value >= 0, got {self.direct_exposure}")
        _check(np.isfinite(self.unsharp_amount) and self.unsharp_amount >= 0 and self.unsharp_mm > 0,
               f"unsharp amount must be >= 0 and its scale > 0 mm, got {self.unsharp_amount}, {self.unsharp_mm}")
        _check(0 < self.equalization <= 1, f"equalization must lie in (0, 1] (1 = off), got {self.equalization}")
        _check(0 <= self.compression < 1, f"compression must lie in [0, 1), got {self.compression}")
        _check(self.compression_mm >= self.unsharp_mm,
               f"compression_mm ({self.compression_mm}) must be >= unsharp_mm ({self.unsharp_mm}): "
               "edges are enhanced below the compressed scales")
        _check(self.lut in ("linear", "sigmoid"), f"display LUT must be 'linear' or 'sigmoid', got {self.lut!r}")
        _check(np.isfinite(self.contrast) and self.contrast > 0, f"tone contrast must be > 0, got {self.contrast}")
        _check(np.isfinite(self.level), f"tone level must be finite, got {self.level}")
        _check(np.isfinite(self.gamma) and self.gamma > 0, f"gamma must be > 0, got {self.gamma}")


#: Image-formation models (``PhysicsParams.mode``) and what each simulates.
MODES = {
    "spectral": "SpekPy spectrum (kVp, anode angle, filtration), energy-integrating CsI detector (QE, blur, glare, "
    "fixed pattern, electronic noise), fast scatter model (optional grid), quantum noise, display processing",
    "monochromatic": "Beer-Lambert at one energy (no spectrum, scatter, noise or detector), display processing",
    "naive": "line integral of density (a DiffDRR-like baseline: no attenuation physics, scatter, noise or detector)",
}

#: Dose when neither ``mas`` nor ``quanta_per_pixel`` is given: mean unattenuated quanta per pixel.
DEFAULT_QUANTA_PER_PIXEL = 200000.0


@dataclass(frozen=True)
class PhysicsParams:
    """Everything :func:`projectors.physics.simulate` needs besides the areal densities and camera.

    * ``mode``: ``"spectral"`` (spectrum, detector, scatter, noise), ``"monochromatic"``
      (Beer-Lambert at ``energy_kev``: ``log_image = sum_m (mu/rho)_m(E) A_m``) or ``"naive"``
      (plain line integral of density, ``log_image = naive_mu * sum_m A_m``); the last two have
      no spectrum, scatter, noise or detector.
    * Dose: ``mas`` (tube current-time product) or ``quanta_per_pixel`` (mean
      unattenuated photons per pixel over the detector); exactly one is set
      (neither given: ``quanta_per_pixel`` = :data:`DEFAULT_QUANTA_PER_PIXEL`).
    * ``heel``: anode heel effect along image ``heel_axis`` (``"v"`` rows or
      ``"u"`` columns), cathode towards +axis if ``heel_sign`` > 0.
    * ``noise``: quantum + electronic noise on/off (blur and fixed pattern follow ``detector``).
    """

    mode: str = "spectral"
    spectrum: SpectrumParams = field(default_factory=SpectrumParams)
    mas: float | None = None
    quanta_per_pixel: float | None = None  # None with mas None: DEFAULT_QUANTA_PER_PIXEL
    detector: DetectorParams = field(default_factory=DetectorParams)
    scatter: ScatterParams = field(default_factory=ScatterParams)
    display: DisplayParams = field(default_factory=DisplayParams)
    noise: bool = True
    heel: bool = False
    heel_axis: str = "v"
    heel_sign: float = 1.0
    naive_mu: float = 0.2
    energy_kev: float = 60.0

    def __post_init__(self):
        _check(self.mode in MODES, f"physics mode must be one of {list(MODES)}, got {self.mode!r}")
        _check(np.isfinite(self.energy_kev) and 1.0 <= self.energy_kev <= 500.0,
               f"energy_kev must lie in [1, 500] keV, got {self.energy_kev}")
        if self.mas is None and self.quanta_per_pixel is None:
            object.__setattr__(self, "quanta_per_pixel", DEFAULT_QUANTA_PER_PIXEL)
        _check((self.mas is None) != (self.quanta_per_pixel is None), "set exactly one of mas and quanta_per_pixel")
        if self.mas is not None:
            _check(np.isfinite(self.mas) and self.mas > 0, f"mAs must be > 0, got {self.mas}")
        if self.quanta_per_pixel is not None:
            _check(np.isfinite(self.quanta_per_pixel) and self.quanta_per_pixel > 0, f"quanta per pixel must be > 0, got {self.quanta_per_pixel}")
        _check(self.heel_axis in ("u", "v"), f"heel axis must be 'u' or 'v', got {self.heel_axis!r}")
        _check(self.naive_mu > 0, "naive_mu must be > 0")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["spectrum"] = self.spectrum.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PhysicsParams":
        return _record(cls, d)

    def replace(self, **changes) -> "PhysicsParams":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_options(
        cls,
        kvp: float | None = None,
        filtration=None,
        mas: float | None = None,
        quanta_per_pixel: float | None = None,
        scatter: bool | str | ScatterParams = True,
        grid: GridParams | dict | bool | None = None,
        noise: bool = True,
        detector: DetectorParams | dict | None = None,
        display: DisplayParams | dict | None = None,
        heel: bool = False,
        mode: str = "spectral",
        base: "PhysicsParams | None" = None,
    ) -> "PhysicsParams":
        """Build parameters from render-style keywords (``sx.render(..., kvp=, filtration=, mas=, scatter=, noise=, detector=)``).

        ``filtration``: ``{"Al": 3.0, "Cu": 0.1}`` or pairs (mm); ``scatter``:
        True/"fast", False/"none" or a :class:`ScatterParams`; ``grid``: True
        (a 10:1 grid), a :class:`GridParams` or its dict; ``detector``,
        ``display``: dataclass or dict. Unset values keep ``base``'s (default: ``PhysicsParams()``).
        """
        p = base or cls()
        spec = p.spectrum
        if kvp is not None or filtration is not None:
            spec = dataclasses.replace(spec, **({"kvp": float(kvp)} if kvp is not None else {}),
                                       **({"filtration": filtration} if filtration is not None else {}))
        if mas is not None and quanta_per_pixel is not None:
            raise PhysicsParamsError("set mas or quanta_per_pixel, not both")
        dose = {"mas": mas, "quanta_per_pixel": None} if mas is not None else (
            {"mas": None, "quanta_per_pixel": quanta_per_pixel} if quanta_per_pixel is not None else {})
        if isinstance(scatter, ScatterParams):
            sc = scatter
        elif scatter in (True, "fast"):
            sc = dataclasses.replace(p.scatter, model="fast")
        elif scatter in (False, None, "none"):
            sc = dataclasses.replace(p.scatter, model="none")
        else:
            raise PhysicsParamsError(f"scatter must be True/'fast', False/'none' or ScatterParams, got {scatter!r}")
        if grid is not None:
            g = GridParams() if grid is True else None if grid is False else grid if isinstance(grid, GridParams) else _record(GridParams, grid)
            sc = dataclasses.replace(sc, grid=g)
        det = p.detector if detector is None else detector if isinstance(detector, DetectorParams) else _record(DetectorParams, detector)
        disp = p.display if display is None else display if isinstance(display, DisplayParams) else _record(DisplayParams, display)
        return dataclasses.replace(p, mode=mode, spectrum=spec, scatter=sc, noise=bool(noise), detector=det, display=disp,
                                   heel=bool(heel), **dose)

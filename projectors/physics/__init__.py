"""X-ray physics: spectra, attenuation, detector signal, scatter, noise and display.

Entry points::

    from projectors.physics import simulate, PhysicsParams
    res = simulate(proj.areal_density, camera, PhysicsParams(), rng)   # no rays are cast
    res.signal, res.transmission, res.log_image, res.image

Parameters are drawn by :func:`domain_randomization.simulation.sample_physics_params`
(randomization lives in ``domain_randomization``). The Monte Carlo scatter (Warp) is :mod:`projectors.physics.scatter_mc`: the reference the fast
model is calibrated against, and the scatter model ``"monte_carlo"`` (imported lazily: it compiles
a kernel on first use).
"""

from .detector import apply_detector, mtf, psf_blur
from .display import display, display_masks, to_uint16
from .params import (
    DETECTOR_PRESETS,
    SCATTER_MODELS,
    DetectorParams,
    DisplayParams,
    GridParams,
    PhysicsParams,
    PhysicsParamsError,
    ScatterParams,
)
from .scatter_fast import patient_geometry
from .signal import (
    SignalError,
    air_kerma_per_fluence,
    detector_air_kerma,
    detector_qe,
    pixel_solid_angle,
    spectral_signal,
    water_equivalent_thickness,
)
from .simulate import PhysicsResult, simulate
from .spectrum import PRESETS, Spectrum, SpectrumError, SpectrumParams, preset, spectrum, spekpy_reference

__all__ = [
    "DETECTOR_PRESETS", "SCATTER_MODELS", "air_kerma_per_fluence", "detector_air_kerma", "patient_geometry",
    "DetectorParams", "DisplayParams", "GridParams", "PhysicsParams", "PhysicsParamsError",
    "PhysicsResult", "ScatterParams", "SignalError", "Spectrum", "SpectrumError", "SpectrumParams", "PRESETS",
    "apply_detector", "detector_qe", "display", "display_masks", "mtf", "pixel_solid_angle", "preset", "psf_blur",
    "simulate", "spectral_signal", "spectrum", "spekpy_reference", "to_uint16",
    "water_equivalent_thickness",
]

"""Simulation-level domain randomization: samplers of the parameters that
change how a scene is imaged (view pose, X-ray technique, detector, materials).

As everywhere in synthex, each sampler draws a JSON-serializable record from
the ``numpy.random.Generator`` it is given (seeded from run seed + index, never
the global RNG), and a deterministic function applies a record:

    view = sample_view(rng, alpha_deg=(-25, 25), beta_deg=(-15, 15), target_jitter_mm=15)
    camera = view_camera(carm, target, view)
    tech = sample_technique(rng, kvp=(70, 120), ...)          # recorded with the sample
    mat = sample_material_jitter(rng, materials, thresholds, density_jitter=0.05, threshold_jitter_hu=20)
    hu_map = jittered_hu_map(DEFAULT_HU_MATERIALS, mat)       # thresholds moved
    areal = scale_areal_density(proj.areal_density, mat)       # densities scaled

Density jitter is applied to the projected areal densities: scaling the density
of material ``m`` by ``s_m`` scales its areal density ``A_m = int rho_m dl`` by
exactly ``s_m``, so it costs nothing and never re-casts rays. Threshold jitter
changes which voxels are which material, so it is drawn per subject (the
projector's lookup tables are built once per subject).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from projectors.geometry import Camera, CArm
from projectors.materials import HUMaterialMap


def _uniform(rng: np.random.Generator, bounds) -> float:
    lo, hi = (float(b) for b in bounds)
    return lo if lo == hi else float(rng.uniform(lo, hi))


def _log_uniform(rng: np.random.Generator, bounds) -> float:
    lo, hi = (float(b) for b in bounds)
    return lo if lo == hi else float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_view(
    rng: np.random.Generator, alpha_deg=(-25.0, 25.0), beta_deg=(-15.0, 15.0), target_jitter_mm: float = 15.0
) -> dict:
    """C-arm pose around a target: LAO/RAO ``alpha``, cranial/caudal ``beta`` (uniform,
    degrees) and an isocentre offset from the target, uniform in ``+/- target_jitter_mm`` per axis."""
    return {
        "alpha_deg": _uniform(rng, alpha_deg),
        "beta_deg": _uniform(rng, beta_deg),
        "isocenter_offset_mm": [_uniform(rng, (-target_jitter_mm, target_jitter_mm)) for _ in range(3)],
    }


def view_camera(carm: CArm, target, view: dict) -> Camera:
    """The camera of a recorded view: ``carm`` rotated about ``target + offset``."""
    iso = np.asarray(target, dtype=np.float64) + np.asarray(view["isocenter_offset_mm"], dtype=np.float64)
    return replace(carm, isocenter=tuple(float(c) for c in iso)).camera(view["alpha_deg"], view["beta_deg"])


def sample_technique(
    rng: np.random.Generator,
    kvp=(70.0, 120.0),
    filtration_mm_al=(2.5, 4.5),
    photons_per_pixel=(2e4, 3e5),
    scatter_fraction=(0.0, 0.3),
    blur_px=(0.0, 1.0),
    electronic_noise=(0.0, 0.005),
) -> dict:
    """X-ray technique and detector: kVp, added Al filtration, dose (photons per
    pixel, log-uniform), scatter strength, detector blur and electronic noise
    (uniform), and a seed for the physics model's own noise draws."""
    return {
        "kvp": float(round(_uniform(rng, kvp))),  # generators set whole kV (and SpekPy tube models are cached per kV)
        "filtration_mm_al": _uniform(rng, filtration_mm_al),
        "photons_per_pixel": _log_uniform(rng, photons_per_pixel),
        "scatter_fraction": _uniform(rng, scatter_fraction),
        "blur_px": _uniform(rng, blur_px),
        "electronic_noise": _uniform(rng, electronic_noise),
        "noise_seed": int(rng.integers(0, 2**32)),
    }


def sample_density_jitter(rng: np.random.Generator, materials, density_jitter: float = 0.05) -> dict:
    """Per-material density scale ``1 + U(-j, j)`` (HU-to-density calibration jitter)."""
    return {"density_scale": {m: 1.0 + _uniform(rng, (-density_jitter, density_jitter)) for m in sorted(materials)}}


def sample_threshold_jitter(rng: np.random.Generator, n_thresholds: int, threshold_jitter_hu: float = 20.0) -> dict:
    """Shift of each HU material threshold, ``U(-j, j)`` HU."""
    return {
        "threshold_shift_hu": [_uniform(rng, (-threshold_jitter_hu, threshold_jitter_hu)) for _ in range(n_thresholds)]
    }


def jittered_hu_map(hu_map: HUMaterialMap, jitter: dict) -> HUMaterialMap:
    """``hu_map`` with its thresholds shifted by ``jitter["threshold_shift_hu"]``."""
    shift = jitter.get("threshold_shift_hu") or [0.0] * len(hu_map.thresholds)
    if len(shift) != len(hu_map.thresholds):
        raise ValueError(f"threshold jitter has {len(shift)} shifts for {len(hu_map.thresholds)} thresholds")
    return replace(hu_map, thresholds=tuple(float(t) + float(s) for t, s in zip(hu_map.thresholds, shift)))


def scale_areal_density(areal_density: dict, jitter: dict) -> dict:
    """Areal densities with material ``m`` scaled by ``jitter["density_scale"][m]`` (1 if absent)."""
    scale = jitter.get("density_scale", {})
    return {m: (a * np.float32(scale[m]) if m in scale else a) for m, a in areal_density.items()}

"""Simulation-level domain randomization: what is drawn, from which ranges, and how a draw is applied.

The ranges are typed models (pydantic): the render config's ``views``,
``physics`` and ``materials`` sections *are* these models, so each default and
bound is written once, here. Each sampler draws a JSON-serializable record from
the ``numpy.random.Generator`` it is given (seeded from run seed + index, never
the global RNG), and a deterministic function applies a record:

    view = sample_view(rng, ViewRanges())                    # alpha, beta, isocentre offset
    camera = view_camera(carm, target, view)
    params = sample_physics_params(rng, PhysicsRanges(), pixel_mm=0.78)  # a projectors.physics.PhysicsParams
    jitter = sample_density_jitter(rng, materials, MaterialRanges())
    areal = scale_areal_density(proj.areal_density, jitter)  # densities scaled
    hu_map = jittered_hu_map(DEFAULT_HU_MATERIALS, sample_threshold_jitter(rng, 5, MaterialRanges()))

Every parameter drawn here changes the image (nothing is drawn only to be
recorded). Density jitter is applied to the projected areal densities: scaling
the density of material ``m`` by ``s_m`` scales ``A_m = int rho_m dl`` by exactly
``s_m``, so it never re-casts rays. Threshold jitter changes which voxels are
which material, so it is drawn per subject (the projector's tables are built
once per subject).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from projectors.geometry import Camera, CArm
from projectors.materials import HUMaterialMap
from projectors.physics import (
    DETECTOR_PRESETS,
    SCATTER_MODELS,
    DetectorParams,
    DisplayParams,
    GridParams,
    PhysicsParams,
    PhysicsParamsError,
    ScatterParams,
    SpectrumParams,
)


# ---------------------------------------------------------------------------
# typed ranges


def _range_check(lo: float | None, hi: float | None):
    def check(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v, v]
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError(f"expected [min, max] (or one number for a fixed value), got {v!r}")
        out = []
        for x in v:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise ValueError(f"expected finite numbers, got {v!r}")
            if (lo is not None and x < lo) or (hi is not None and x > hi):
                raise ValueError(f"must lie within [{lo}, {hi}], got {list(v)}")
            out.append(float(x))
        if out[1] < out[0]:
            raise ValueError(f"min must not exceed max, got {list(v)}")
        return tuple(out)

    return check


def Range(lo: float | None = None, hi: float | None = None):
    """A closed interval ``[min, max]`` within ``[lo, hi]``; one number means a fixed value."""
    return Annotated[tuple[float, float], BeforeValidator(_range_check(lo, hi))]


class Ranges(BaseModel):
    """Base of every typed parameter section: unknown keys and NaN are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)


def _uniform(rng: np.random.Generator, bounds) -> float:
    lo, hi = (float(b) for b in bounds)
    return lo if lo == hi else float(rng.uniform(lo, hi))


def _log_uniform(rng: np.random.Generator, bounds) -> float:
    lo, hi = (float(b) for b in bounds)
    return lo if lo == hi else float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# ---------------------------------------------------------------------------
# views


class ViewRanges(Ranges):
    """C-arm poses around a subject's target (uniform)."""

    per_subject: int | None = Field(None, ge=1, le=10**7, description="views per subject (default: n / number of subjects, rounded up)")
    alpha_deg: Range(-180.0, 180.0) = Field((-25.0, 25.0), description="LAO/RAO angle range, degrees")
    beta_deg: Range(-90.0, 90.0) = Field((-15.0, 15.0), description="cranial/caudal angle range, degrees")
    target_jitter_mm: float = Field(15.0, ge=0.0, le=500.0, description="isocentre offset from the subject's target, uniform per axis, mm")


def sample_view(rng: np.random.Generator, ranges: ViewRanges) -> dict:
    """A C-arm pose around a target: LAO/RAO ``alpha``, cranial/caudal ``beta`` and an isocentre offset."""
    j = ranges.target_jitter_mm
    return {
        "alpha_deg": _uniform(rng, ranges.alpha_deg),
        "beta_deg": _uniform(rng, ranges.beta_deg),
        "isocenter_offset_mm": [_uniform(rng, (-j, j)) for _ in range(3)],
    }


def view_camera(carm: CArm, target, view: dict, body=None) -> Camera:
    """The camera of a recorded view: ``carm`` rotated about ``target + offset`` (``body``: the patient's
    surface points, for geometries that put the patient at the detector; see ``CArm.camera``)."""
    iso = np.asarray(target, dtype=np.float64) + np.asarray(view["isocenter_offset_mm"], dtype=np.float64)
    return carm.camera(view["alpha_deg"], view["beta_deg"], isocenter=iso, body=body)


# ---------------------------------------------------------------------------
# X-ray technique, detector, scatter, display


class DisplayRanges(Ranges):
    """What :func:`sample_display_params` draws: the console's processing (uniform unless noted).

    The ranges span what clinical consoles ship as chest / skeletal / abdominal presets: mild to
    strong edge enhancement, weak to strong latitude reduction, film-like curves of moderate to
    high contrast (see :func:`projectors.physics.display.display`).
    """

    percentile_lo: Range(0.0, 50.0) = Field((0.5, 3.0), description="lower window percentile of the anatomy")
    percentile_hi: Range(50.0, 100.0) = Field((97.0, 99.8), description="upper window percentile of the anatomy")
    unsharp_amount: Range(0.0, 5.0) = Field((0.2, 1.5), description="edge enhancement of the fine pyramid bands")
    unsharp_mm: Range(0.2, 50.0) = Field((3.0, 12.0), description="scale below which detail is enhanced, mm at the detector (log-uniform)")
    equalization: Range(0.0, 1.0) = Field((0.7, 1.0), description="contrast equalization exponent (1: none)")
    compression: Range(0.0, 1.0) = Field((0.3, 0.8), description="dynamic-range compression of the coarse bands")
    compression_mm: Range(2.0, 500.0) = Field((24.0, 96.0), description="scale above which bands are compressed, mm at the detector (log-uniform)")
    contrast: Range(0.5, 20.0) = Field((3.5, 7.0), description="slope of the film-like S curve")
    level: Range(-0.5, 0.5) = Field((-0.1, 0.1), description="shift of the curve's centre from the anatomy's median")
    gamma: Range(0.2, 5.0) = Field((0.8, 1.25), description="gamma after the curve (log-uniform)")
    linear_probability: float = Field(0.1, ge=0.0, le=1.0, description="chance of a linear curve instead of the S curve")

    @model_validator(mode="after")
    def _scales_ordered(self):
        if self.unsharp_mm[1] > self.compression_mm[0]:
            raise ValueError(f"unsharp_mm {list(self.unsharp_mm)} must lie below compression_mm {list(self.compression_mm)}")
        return self


def sample_display_params(rng: np.random.Generator, ranges: DisplayRanges | dict | None = None) -> DisplayParams:
    """Draw one :class:`~projectors.physics.DisplayParams` (the console's processing) from ``rng``."""
    if not isinstance(rng, np.random.Generator):
        raise PhysicsParamsError(f"sample_display_params needs a numpy.random.Generator, got {type(rng).__name__}")
    r = ranges if isinstance(ranges, DisplayRanges) else DisplayRanges.model_validate(ranges or {})
    u = lambda bounds: _uniform(rng, bounds)  # noqa: E731
    return DisplayParams(
        percentiles=(round(u(r.percentile_lo), 3), round(u(r.percentile_hi), 3)),
        unsharp_amount=u(r.unsharp_amount),
        unsharp_mm=_log_uniform(rng, r.unsharp_mm),
        equalization=u(r.equalization),
        compression=u(r.compression),
        compression_mm=_log_uniform(rng, r.compression_mm),
        lut="linear" if rng.random() < r.linear_probability else "sigmoid",
        contrast=u(r.contrast),
        level=u(r.level),
        gamma=_log_uniform(rng, r.gamma),
    )


class PhysicsRanges(Ranges):
    """What :func:`sample_physics_params` draws (uniform unless noted) and the image-formation model."""

    model: Literal["spectral", "monochromatic", "naive"] = Field(
        "spectral",
        description="spectral: SpekPy spectrum, detector preset, scatter, noise (projectors.physics); monochromatic: "
        "Beer-Lambert at energy_kev; naive: line integral of density (DiffDRR-like baseline)",
    )
    energy_kev: float = Field(60.0, ge=1.0, le=500.0, description="energy of the monochromatic model, keV")
    kvp: Range(20.0, 150.0) = Field((60.0, 120.0), description="tube voltage range, kV (drawn in whole kV)")
    anode_angle_deg: Range(5.0, 25.0) = Field(
        (12.0, 16.0), description="anode angle range, degrees, drawn in whole degrees (radiography and C-arm tubes: 12-16; a small angle "
        "cannot cover a wide field on its anode side when the heel effect is on)"
    )
    al_mm: Range(0.0, 20.0) = Field((2.5, 4.0), description="added aluminium filtration range, mm")
    cu_mm: Range(0.0, 2.0) = Field((0.0, 0.3), description="added copper filtration range, mm")
    air_kerma_ugy: Range(0.001, 1000.0) = Field(
        (1.0, 5.0), description="dose: detector air kerma behind the patient as an automatic exposure control sets it, "
        "uGy (log-uniform; digital radiographs about 1-5, fluoroscopy frames about 0.03-0.3)"
    )
    detector: Literal[tuple(DETECTOR_PRESETS)] = Field(
        "flat_panel_csi", description="detector preset (projectors.physics.DETECTOR_PRESETS: flat_panel_csi, the CsI "
        "flat panel; cr_plate; flat_panel_gos, a Gd2O2S powder-screen flat panel)")
    cr_probability: float = Field(0.0, ge=0.0, le=1.0, description="chance of a CR plate instead of the detector preset "
                                  "(projectors.physics.DETECTOR_PRESETS)")
    blur_mm: Range(0.0, 5.0) = Field((0.0, 0.2), description="extra blur (focal spot, motion), Gaussian sigma at the "
                                     "detector, mm, added in quadrature to the detector's own")
    glare: Range(0.0, 0.5) = Field((0.0, 0.1), description="fraction of the signal in a wide glare halo")
    electronic_noise_scale: Range(0.0, 20.0) = Field(
        (0.5, 2.0), description="multiplies the detector preset's electronic noise"
    )
    gain_variation: Range(0.0, 0.2) = Field((0.0, 0.01), description="residual detector gain non-uniformity (relative sigma)")
    scatter_model: Literal[tuple(SCATTER_MODELS)] = Field(
        "fast", description="scatter model (projectors.physics.SCATTER_MODELS): fast (kernels calibrated against the "
        "Monte Carlo, ~0.1 s an image), monte_carlo (photon transport through the subject's voxels, seconds an image "
        "on a CPU; one-volume subjects) or none")
    scatter_photons: int = Field(2_000_000, ge=1000, le=10**11, description="Monte Carlo photons per image "
                                 "(scatter_model monte_carlo): 2e6 take ~4 s for a pelvis on 2 CPU cores and leave ~5.5% noise in its "
                                 "smoothed scatter")
    scatter_scale: Range(0.0, 5.0) = Field((0.8, 1.2), description="multiplies the scatter model's scatter")
    grid_probability: float = Field(0.5, ge=0.0, le=1.0, description="chance of a focused 10:1 anti-scatter grid")
    heel_probability: float = Field(0.5, ge=0.0, le=1.0, description="chance of the anode heel effect")
    display: DisplayRanges = Field(default_factory=DisplayRanges, description="display processing ranges")
    bin_kev: float = Field(1.0, gt=0.0, le=10.0, description="spectrum energy bin, keV")


def sample_physics_params(rng: np.random.Generator, ranges: PhysicsRanges | dict | None = None, *,
                          pixel_mm: float) -> PhysicsParams:
    """Draw one :class:`~projectors.physics.PhysicsParams` from ``rng`` (a ``numpy.random.Generator``) for a
    detector of pitch ``pixel_mm`` (the detector presets' blur and noise are physical: in mm and per native pixel).

    kVp is drawn in whole kV (as generators step it) and the anode angle in whole degrees (as anodes are
    made): SpekPy's tube model, the expensive part of a spectrum, is cached per (kV, angle) in memory and on
    disk (:func:`projectors.physics.spectrum.tube_table`), so a dataset builds at most a few hundred.
    """
    if not isinstance(rng, np.random.Generator):
        raise PhysicsParamsError(f"sample_physics_params needs a numpy.random.Generator, got {type(rng).__name__}")
    r = ranges if isinstance(ranges, PhysicsRanges) else PhysicsRanges.model_validate(ranges or {})
    u = lambda bounds: _uniform(rng, bounds)  # noqa: E731
    kvp = float(round(u(r.kvp)))
    cu = round(u(r.cu_mm), 2)
    filtration = (("Al", round(u(r.al_mm), 2)),) + ((("Cu", cu),) if cu > 0 else ())
    angle = u(r.anode_angle_deg)  # anodes are made in whole degrees: the nearest one inside the range
    whole = float(round(angle))
    angle = whole if r.anode_angle_deg[0] <= whole <= r.anode_angle_deg[1] else round(angle, 1)
    spec = SpectrumParams(kvp=kvp, anode_angle=angle, filtration=filtration, bin_kev=r.bin_kev)
    dose = _log_uniform(rng, r.air_kerma_ugy)
    base = DetectorParams.preset("cr_plate" if rng.random() < r.cr_probability else r.detector, pixel_mm)
    extra = u(r.blur_mm) / pixel_mm
    det = dataclasses.replace(
        base,
        blur_px=float(np.hypot(base.blur_px, extra)),
        glare=u(r.glare),
        electronic_noise=base.electronic_noise * u(r.electronic_noise_scale),
        gain_variation=u(r.gain_variation),
        pattern_seed=int(rng.integers(0, 2**31 - 1)),
    )
    grid = GridParams() if rng.random() < r.grid_probability else None
    return PhysicsParams(
        mode=r.model,
        energy_kev=r.energy_kev,
        spectrum=spec,
        air_kerma_ugy=dose,
        aec=True,
        detector=det,
        scatter=ScatterParams(model=r.scatter_model, grid=grid, scale=u(r.scatter_scale), photons=r.scatter_photons),
        display=sample_display_params(rng, r.display),
        heel=bool(rng.random() < r.heel_probability),
        heel_sign=float(rng.choice([-1.0, 1.0])),
    )


def spectrum_tubes(ranges: PhysicsRanges | dict | None = None) -> list[tuple[float, float]] | None:
    """Every (kVp, anode angle) :func:`sample_physics_params` can draw from ``ranges``: the tubes whose SpekPy
    tables a dataset may need (:func:`projectors.physics.spectrum.tube_table` builds and caches them); None
    when the anode-angle range holds no whole degree (the angle is then drawn to 0.1 degree)."""
    r = ranges if isinstance(ranges, PhysicsRanges) else PhysicsRanges.model_validate(ranges or {})
    if r.model != "spectral":
        return []
    (klo, khi), (alo, ahi) = r.kvp, r.anode_angle_deg
    angles = [float(a) for a in range(math.ceil(alo), math.floor(ahi) + 1)]
    if not angles:
        return None
    kvps = [float(k) for k in range(round(klo), round(khi) + 1) if klo <= k + 0.5 and k - 0.5 <= khi]
    return [(k, a) for k in kvps for a in angles]


# ---------------------------------------------------------------------------
# materials


class MaterialRanges(Ranges):
    """Jitter of the HU-to-material calibration."""

    density_jitter: float = Field(0.05, ge=0.0, le=0.5, description="per-material relative density jitter, +/- (per image)")
    threshold_jitter_hu: float = Field(20.0, ge=0.0, le=100.0, description="HU material threshold jitter, +/- (per subject)")


def sample_density_jitter(rng: np.random.Generator, materials, ranges: MaterialRanges) -> dict:
    """Per-material density scale ``1 + U(-j, j)`` (HU-to-density calibration jitter)."""
    j = ranges.density_jitter
    return {"density_scale": {m: 1.0 + _uniform(rng, (-j, j)) for m in sorted(materials)}}


def sample_threshold_jitter(rng: np.random.Generator, n_thresholds: int, ranges: MaterialRanges) -> dict:
    """Shift of each HU material threshold, ``U(-j, j)`` HU."""
    j = ranges.threshold_jitter_hu
    return {"threshold_shift_hu": [_uniform(rng, (-j, j)) for _ in range(n_thresholds)]}


def jittered_hu_map(hu_map: HUMaterialMap, jitter: dict) -> HUMaterialMap:
    """``hu_map`` with its lowest thresholds shifted by ``jitter["threshold_shift_hu"]``: the tissue
    thresholds; one a CT preparation added above them (metal) stays where it is."""
    shift = list(jitter.get("threshold_shift_hu") or [])
    if len(shift) > len(hu_map.thresholds):
        raise ValueError(f"threshold jitter has {len(shift)} shifts for {len(hu_map.thresholds)} thresholds")
    shift += [0.0] * (len(hu_map.thresholds) - len(shift))
    return replace(hu_map, thresholds=tuple(float(t) + float(s) for t, s in zip(hu_map.thresholds, shift)))


def scale_areal_density(areal_density: dict, jitter: dict) -> dict:
    """Areal densities with material ``m`` scaled by ``jitter["density_scale"][m]`` (1 if absent)."""
    scale = jitter.get("density_scale", {})
    return {m: (a * np.float32(scale[m]) if m in scale else a) for m, a in areal_density.items()}

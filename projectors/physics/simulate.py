"""The physics entry point: areal densities + camera + parameters -> detector signal and images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import Camera
from ..materials import mass_attenuation
from .detector import apply_detector
from .display import display, display_masks
from .params import SCATTER_MODELS, PhysicsParams, PhysicsParamsError
from .scatter_fast import fast_scatter
from .signal import spectral_signal, validate_areal_density
from .spectrum import Spectrum, spectrum as get_spectrum

#: Transmission is clipped to [MIN_TRANSMISSION, 1] (the contract is (0, 1]).
MIN_TRANSMISSION = 1e-6


def _fast(primary_transmission, camera, sdd, spec, det, scatter, *, scene, field, device):
    return fast_scatter(primary_transmission, camera, sdd, spec, det, scatter)


def _monte_carlo(primary_transmission, camera, sdd, spec, det, scatter, *, scene, field, device):
    if scene is None:
        raise PhysicsParamsError(
            "scatter model 'monte_carlo' transports photons through the patient's voxels: pass "
            "simulate(..., scene=projectors.physics.scatter_mc.VoxelScene.from_scene(volume)) (synthex render and "
            "sx.render do), or a precomputed scatter= image")
    from .scatter_mc import monte_carlo_scatter  # Warp kernels: imported when used

    return monte_carlo_scatter(scene, camera, sdd, spec, det, scatter, field=field, device=device)


def _no_scatter(primary_transmission, camera, sdd, spec, det, scatter, *, scene, field, device):
    return np.zeros_like(primary_transmission)


#: The function of each scatter model of :data:`.params.SCATTER_MODELS`: f(primary transmission, camera, sdd,
#: spectrum, detector, ScatterParams, *, scene, field, device) -> scatter relative to the flat field (behind
#: the grid, if any); ``scene``: the transport scene (:class:`.scatter_mc.VoxelScene`, the Monte Carlo's),
#: ``field``: the collimated field, ``device``: where the Monte Carlo runs.
SCATTER_FUNCTIONS = {"fast": _fast, "monte_carlo": _monte_carlo, "none": _no_scatter}
if set(SCATTER_FUNCTIONS) != set(SCATTER_MODELS):  # pragma: no cover - a model added to one list only
    raise ImportError(f"scatter models {sorted(SCATTER_MODELS)} and their functions {sorted(SCATTER_FUNCTIONS)} differ")


@dataclass(frozen=True, eq=False)
class PhysicsResult:
    """Outputs of :func:`simulate`, all (H, W).

    * ``signal``: detector signal (keV deposited or photons counted), with noise;
    * ``transmission``: signal / flat-field signal, clipped to (0, 1];
    * ``log_image``: ``-log(transmission)`` (line integral of attenuation);
    * ``image``: display-processed float32 in [0, 1] (:func:`.display.display`, with the
      covered and metal masks of :func:`.display.display_masks`);
    * ``primary``: noise-free primary transmission; ``scatter``: noise-free
      scatter signal relative to the flat field (0 without scatter).
    """

    signal: np.ndarray
    transmission: np.ndarray
    log_image: np.ndarray
    image: np.ndarray
    primary: np.ndarray
    scatter: np.ndarray
    params: PhysicsParams

    def __getitem__(self, key: str) -> np.ndarray:
        return getattr(self, key)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("signal", "transmission", "log_image", "image", "primary", "scatter")}


def simulate(
    areal_density: dict,
    camera: Camera,
    params: PhysicsParams | None = None,
    rng: np.random.Generator | None = None,
    *,
    sdd: float | None = None,
    scatter: np.ndarray | None = None,
    spec: Spectrum | None = None,
    field: np.ndarray | None = None,
    scene=None,
    device: str = "cpu",
) -> PhysicsResult:
    """Turn per-material areal densities (g/cm^2, from the projector) into detector images.

    ``params``: a :class:`PhysicsParams` (default: 80 kVp, fast scatter,
    noise); ``rng``: the sample's own Generator for the noise draws (required
    when ``params.noise``); ``sdd``: source-detector distance in mm (default
    ``camera.sdd``; it sets the detector pixel pitch ``sdd / fx`` for the
    scatter kernels and the air-kerma dose, as K only holds their ratio);
    ``scatter``: a precomputed scatter image relative to the flat field (e.g.
    :attr:`.scatter_mc.MCResult.scatter_rel`, or ``scatter_rel_grid`` with a
    grid), replacing ``params.scatter.model``; ``spec``: a precomputed spectrum;
    ``field``: the collimated field (H, W), shuttered by the display and, for the Monte Carlo, where
    photons are aimed; ``scene`` (a :class:`.scatter_mc.VoxelScene`) and ``device``: the transport scene
    and Warp device of the ``"monte_carlo"`` scatter model (:func:`.scatter_mc.monte_carlo_scatter`).

    An anti-scatter grid (``params.scatter.grid``) acts on the quanta: the
    detector sees the primary times the grid's T_p(E) and the scatter times its
    direction-dependent transmission, so at a given dose the image is noisier
    with a grid, while the flat-field calibration (taken behind the grid)
    keeps the transmission of the primary unchanged.
    No rays are cast here: re-randomizing the parameters is cheap.
    """
    params = params or PhysicsParams()
    if not isinstance(params, PhysicsParams):
        raise PhysicsParamsError(f"params must be a PhysicsParams, got {type(params).__name__}")
    if params.noise and params.mode == "spectral" and not isinstance(rng, np.random.Generator):
        raise PhysicsParamsError("noise is on: pass the sample's numpy.random.Generator as rng (or set noise=False)")
    if params.mode == "naive":
        return _naive(areal_density, camera, params, field)
    if params.mode == "monochromatic":
        return _monochromatic(areal_density, camera, params, field)
    sdd = sdd if sdd is not None else camera.sdd
    if sdd is None or not np.isfinite(sdd) or sdd <= 0:
        raise PhysicsParamsError(
            "the scatter model needs the source-detector distance: the camera has none (a parallel beam?); pass sdd="
        )
    spec = spec or get_spectrum(params.spectrum)
    sig = spectral_signal(areal_density, camera, spec, params, sdd=sdd)
    T_p = sig.transmission
    if scatter is not None:
        s_rel = np.asarray(scatter, dtype=np.float64)
        if s_rel.shape != T_p.shape or not np.all(np.isfinite(s_rel)) or np.any(s_rel < 0):
            raise PhysicsParamsError(f"scatter image must be finite, >= 0 and of shape {T_p.shape}")
    else:
        s_rel = SCATTER_FUNCTIONS[params.scatter.model](T_p, camera, sdd, spec, params.detector, params.scatter,
                                                        scene=scene, field=field, device=device)
    s_rel = s_rel * params.scatter.scale
    # The flat field (taken behind the grid, if any) is sig.flat; scatter is relative to it.
    mean = sig.primary + s_rel * sig.flat
    # Scattered quanta are softer than the primary; we give them the primary's variance per unit signal.
    with np.errstate(divide="ignore", invalid="ignore"):
        e2 = np.where(sig.primary > 0, sig.second / sig.primary, sig.flat_second / sig.flat)
    second = sig.second + s_rel * sig.flat * e2
    flat = sig.flat
    if params.aec:  # the dose given is the one behind the anatomy: scale the exposure as an AEC does
        k = 1.0 / aec_transmission(mean / flat, areal_density, field)
        mean, second, flat = mean * k, second * k, flat * k
    flat_c = float(flat[camera.height // 2, camera.width // 2])
    quantum = float(sig.flat.mean() / sig.flat_quanta.mean())
    out = apply_detector(mean, second, flat_c, quantum, params.detector, rng, noise=params.noise)
    transmission = np.clip(out / flat, MIN_TRANSMISSION, 1.0)
    log_image = -np.log(transmission)
    return PhysicsResult(
        signal=out.astype(np.float32),
        transmission=transmission.astype(np.float32),
        log_image=log_image.astype(np.float32),
        image=display(log_image, params.display, **_masks(areal_density), pixel_mm=detector_pitch(camera), field=field),
        primary=T_p.astype(np.float32),
        scatter=s_rel.astype(np.float32),
        params=params,
    )


def aec_transmission(total_transmission: np.ndarray, areal_density: dict, field=None) -> float:
    """What an automatic exposure control measures: the median detector signal (primary + scatter, relative to
    the flat field) over the anatomy: pixels whose rays crossed the patient, inside the collimated ``field``,
    not behind metal (:func:`.display.display_masks`)."""
    m = _masks(areal_density)
    region = m.get("covered", np.ones(total_transmission.shape, bool)) & ~m.get("metal", False)
    if field is not None:
        region &= np.asarray(field, bool)
    values = total_transmission[region] if np.any(region) else total_transmission.ravel()
    return float(max(np.median(values), MIN_TRANSMISSION))


def _masks(areal_density) -> dict:
    """The display's covered/metal masks; none for an empty scene (a flat field)."""
    return display_masks(areal_density) if areal_density else {}


def detector_pitch(camera: Camera) -> float:
    """The detector pixel pitch in mm (mean of du, dv): ``sdd / |f|`` for a cone beam, ``1 / |f|`` for a
    parallel beam (whose K maps mm to pixels)."""
    size = camera.pixel_size
    if size is None:
        size = (1.0 / abs(camera.K[0, 0]), 1.0 / abs(camera.K[1, 1]))
    return float(np.mean(size))


def _naive(areal_density, camera, params: PhysicsParams, field=None) -> PhysicsResult:
    """Plain line integral of density (DiffDRR-style baseline): no spectrum, scatter, noise or detector."""
    ad = validate_areal_density(areal_density, camera.shape)
    total = np.zeros(camera.shape)
    for a in ad.values():
        total += a
    return _noiseless(params.naive_mu * total, ad, camera, params, field)


def _monochromatic(areal_density, camera, params: PhysicsParams, field=None) -> PhysicsResult:
    """Beer-Lambert at one energy, ``-log T = sum_m (mu/rho)_m(E) A_m``: no spectrum, scatter, noise or detector."""
    ad = validate_areal_density(areal_density, camera.shape)
    log_image = np.zeros(camera.shape)
    for m, a in ad.items():
        log_image += mass_attenuation(m, params.energy_kev) * a
    return _noiseless(log_image, ad, camera, params, field)


def _noiseless(log_image, areal_density, camera, params: PhysicsParams, field=None) -> PhysicsResult:
    transmission = np.clip(np.exp(-log_image), MIN_TRANSMISSION, 1.0)
    return PhysicsResult(
        signal=transmission.astype(np.float32),
        transmission=transmission.astype(np.float32),
        log_image=log_image.astype(np.float32),
        image=display(log_image, params.display, **_masks(areal_density), pixel_mm=detector_pitch(camera), field=field),
        primary=transmission.astype(np.float32),
        scatter=np.zeros(camera.shape, np.float32),
        params=params,
    )

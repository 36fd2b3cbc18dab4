"""Polychromatic detector signal from per-material areal densities.

For pixel p with areal densities A_m(p) (g/cm^2), the mean detected signal is

    S(p) = mas * Omega(p) / Omega_1m * sum_E phi(E, p) QE(E) w(E) exp(-sum_m mu_m(E) A_m(p))

* ``phi(E, p)``: spectrum, photons / cm^2 / mAs at 1 m per bin (SpekPy); it
  depends on p only through the heel effect;
* ``Omega(p)``: solid angle of the pixel seen from the focus (inverse square
  and obliquity: ``cos^3(theta) / (fx fy)`` for a flat detector, where
  fx = sdd/du), ``Omega_1m`` = 1 cm^2 at 1 m = 1e-4 sr;
* ``QE(E) = 1 - exp(-mu_CsI(E) rho_CsI fill t)``: photons absorbed by the
  scintillator (all their energy assumed deposited locally);
* ``w(E) = E`` (energy-integrating, keV) or 1 (photon-counting).

We also return the second moment (weights ``w(E)^2``), which fixes the
quantum noise of an energy-integrating detector (compound Poisson: variance =
sum_E w^2 N_E), and the detected-quanta count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import Camera
from ..materials import MATERIALS, Material, MaterialError, attenuation_table, mass_attenuation, register_material  # noqa: F401
from .params import DetectorParams, PhysicsParams, PhysicsParamsError  # noqa: F401  (re-exported names kept)
from .spectrum import Spectrum, air_kerma_weights, tube_table

OMEGA_1M = 1e-4  # sr subtended by 1 cm^2 at 1 m
KEV_CM2_PER_G_TO_UGY = 1.602176634e-16 * 1e3 * 1e6  # (keV/g) -> J/kg -> uGy

# Storage phosphor of CR plates: BaFBr0.85I0.15:Eu (Eu ~0.1 mol%, neglected). Crystal density of BaFBr.
if "bafbri" not in MATERIALS:
    register_material(Material("bafbri", {"Ba": 0.564484, "F": 0.078091, "Br": 0.279179, "I": 0.078246}, 4.96,
                               "BaFBr0.85I0.15 storage phosphor (crystal density of BaFBr)"))

# Phosphor of indirect flat panels with a powder screen: Gd2O2S:Tb (Tb ~0.1-1%, neglected), crystal density
# 7.34 g/cm^3; mass fractions from the formula (xraydb atomic masses).
if "gos" not in MATERIALS:
    register_material(Material("gos", {"Gd": 0.830784, "O": 0.084526, "S": 0.08469}, 7.34,
                               "Gd2O2S:Tb phosphor (crystal density)"))

#: Material of each ``DetectorParams.phosphor``.
PHOSPHOR_MATERIAL = {"csi": "csi", "bafbri": "bafbri", "gos": "gos"}


class SignalError(ValueError):
    """Bad areal densities or camera for the signal model."""


def detector_qe(energies_kev, det: DetectorParams = DetectorParams()) -> np.ndarray:
    """Fraction of normally incident photons absorbed in the detector's phosphor layer."""
    name = PHOSPHOR_MATERIAL[det.phosphor]
    mu = mass_attenuation(name, np.asarray(energies_kev, dtype=np.float64)) * MATERIALS[name].density
    return 1.0 - np.exp(-mu * det.packing * det.thickness_mm / 10.0)


def air_kerma_per_fluence(spec: Spectrum) -> float:
    """Air kerma per photon fluence of the spectrum, uGy per (photon / mm^2)."""
    w = spec.fluence / spec.fluence.sum()
    return float((w * air_kerma_weights(spec.energies)).sum()) * KEV_CM2_PER_G_TO_UGY * 100.0  # 1/mm^2 = 100/cm^2


def detector_air_kerma(entrance_ugy: float, source_to_entrance_mm: float, sdd: float, backscatter: float = 1.0) -> float:
    """Air kerma at the detector (no patient, no grid) for an entrance dose at the patient's skin.

    Inverse square from the entrance surface (``source_to_entrance_mm`` from the focus) to the
    detector (``sdd``). ``backscatter``: the backscatter factor included in ``entrance_ugy``
    (an entrance *surface* dose: ~1.3-1.4 for a chest or abdomen at 70-120 kV; 1 for an incident
    air kerma). Example: a low-dose chest PA, 20 uGy entrance surface dose (B = 1.35), entrance
    surface 1560 mm from the focus (22 cm chest, 2 cm gap, SDD 1800): 11 uGy at the detector.
    """
    for name, v in (("entrance dose", entrance_ugy), ("source-entrance distance", source_to_entrance_mm), ("sdd", sdd), ("backscatter", backscatter)):
        if not (np.isfinite(v) and v > 0):
            raise SignalError(f"{name} must be > 0, got {v}")
    if source_to_entrance_mm >= sdd:
        raise SignalError(f"the entrance surface ({source_to_entrance_mm} mm) must lie before the detector (sdd {sdd} mm)")
    return float(entrance_ugy / backscatter * (source_to_entrance_mm / sdd) ** 2)


def signal_weights(energies_kev, det: DetectorParams = DetectorParams(), power: int = 1) -> np.ndarray:
    """QE(E) * w(E)^power: the per-incident-photon signal (power 1) or its square (power 2)."""
    e = np.asarray(energies_kev, dtype=np.float64)
    w = e if det.mode == "integrating" else np.ones_like(e)
    return detector_qe(e, det) * w**power


def pixel_solid_angle(camera: Camera) -> np.ndarray:
    """Solid angle (sr) of each pixel seen from the source, (H, W).

    Perspective: ``cos^3(theta) / (fx fy)`` (inverse square times obliquity
    for a flat detector). Parallel beams have no falloff; each pixel gets the
    solid angle of its area at 1 m, so doses compare with a cone beam at 1 m.
    """
    K = camera.K
    if camera.projection == "parallel":
        area_mm2 = 1.0 / abs(K[0, 0] * K[1, 1])
        return np.full(camera.shape, area_mm2 / 1e6)
    v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    cos = 1.0 / np.sqrt(1.0 + x * x + y * y)
    return cos**3 / abs(K[0, 0] * K[1, 1])


def heel_positions_mm(camera: Camera, axis: str, sign: float) -> np.ndarray:
    """Position at 1 m along the anode-cathode axis (towards the cathode), per row (axis v) or column (axis u)."""
    K = camera.K
    if axis == "v":
        t = (np.arange(camera.height) - K[1, 2]) / K[1, 1]
    else:
        t = (np.arange(camera.width) - K[0, 2]) / K[0, 0]
    if camera.projection == "parallel":
        t = t / 1000.0  # parallel: t is in mm; treat the detector as if at 1 m
    return np.sign(sign) * 1000.0 * t


def heel_spectra(spec: Spectrum, camera: Camera, axis: str, sign: float) -> np.ndarray:
    """Per row/column spectra (n_lines, n_E) on ``spec``'s energies: SpekPy's at each line's off-axis position
    (its tube table, 5 mm apart at 1 m, linear between)."""
    x = heel_positions_mm(camera, axis, sign)
    p = spec.params
    table = tube_table(p.kvp, p.anode_angle, p.target, p.bin_kev)
    f = table.filtered(p.filtration, np.clip(x, -400.0, 400.0))
    dark = ~np.any(f > 0, axis=1)
    if dark.any():
        xi = float(x[dark][np.argmax(np.abs(x[dark]))])
        raise SignalError(
            f"the anode heel cuts the beam off: a {p.anode_angle} degree anode emits nothing {abs(xi):.0f} mm "
            f"off-axis at 1 m on its anode side, inside this detector's field; use a larger anode angle, a smaller "
            "field or heel=False"
        )
    return np.stack([np.interp(spec.energies, table.energies, row) for row in f])


@dataclass(frozen=True, eq=False)
class SpectralSignal:
    """Noise-free detector signals, (H, W) float64.

    ``primary``: mean signal; ``second``: sum of w^2 N (compound-Poisson
    variance); ``quanta``: mean detected photons; ``flat``, ``flat_second``,
    ``flat_quanta``: the same with no object (the flat-field calibration).
    Signal units: keV (integrating) or photons (counting).
    """

    primary: np.ndarray
    second: np.ndarray
    quanta: np.ndarray
    flat: np.ndarray
    flat_second: np.ndarray
    flat_quanta: np.ndarray
    mas: float

    @property
    def transmission(self) -> np.ndarray:
        return self.primary / self.flat


def validate_areal_density(areal_density, shape) -> dict[str, np.ndarray]:
    if not isinstance(areal_density, dict):
        raise SignalError(f"areal_density must be a dict material name -> (H, W) array, got {type(areal_density).__name__}")
    out = {}
    for name, a in areal_density.items():
        if name not in MATERIALS:
            raise SignalError(f"unknown material {name!r} in areal_density; known: {', '.join(sorted(MATERIALS))}")
        arr = np.asarray(a)
        if arr.shape != tuple(shape):
            raise SignalError(f"areal density of {name!r} has shape {arr.shape}, but the camera's image is {tuple(shape)}")
        if not np.all(np.isfinite(arr)):
            raise SignalError(f"areal density of {name!r} contains NaN or infinite values")
        if np.any(arr < 0):
            raise SignalError(f"areal density of {name!r} is negative somewhere (min {arr.min():.3g} g/cm^2)")
        out[name] = arr
    return out


def transmitted_moments(areal_density: dict, energies: np.ndarray, weights: np.ndarray, n_pix: int,
                        chunk: int = 1 << 16, lines: tuple[str, int, int] | None = None) -> np.ndarray:
    """``sum_E weights[k, E] exp(-sum_m mu_m(E) A_m(p))`` for each weight row k: (K, P).

    ``weights``: (K, E) shared by all pixels, or (K, E, L) per detector line (the heel effect) with
    ``lines = (axis, H, W)``: axis ``"v"``, one weight per row (L = H), or ``"u"``, per column (L = W).
    """
    names = list(areal_density)
    if lines is not None:
        axis, H, W = lines
        if not names:
            per_line = weights.sum(axis=1)  # (K, L)
            return (np.repeat(per_line, W, axis=1) if axis == "v" else np.tile(per_line, (1, H))).astype(np.float64)
    elif not names:
        return np.repeat(weights.sum(axis=1)[:, None], n_pix, axis=1)
    tab = attenuation_table(names, energies)
    mu = tab.mu.T.astype(np.float32)  # (E, M)
    A = np.stack([np.asarray(areal_density[n], dtype=np.float32).ravel() for n in names])  # (M, P)
    w32 = weights.astype(np.float32)
    if lines is not None:  # whole image at once: (E, H, W), contracted per row or per column
        T = np.exp(-(mu @ A)).reshape(len(energies), H, W)
        out = np.einsum("keh,ehw->khw", w32, T) if axis == "v" else np.einsum("kew,ehw->khw", w32, T)
        return out.reshape(weights.shape[0], n_pix).astype(np.float64)
    out = np.empty((weights.shape[0], n_pix), dtype=np.float64)
    for s in range(0, n_pix, chunk):
        T = np.exp(-(mu @ A[:, s : s + chunk]))  # (E, p)
        out[:, s : s + chunk] = w32 @ T
    return out


def pixel_area_mm2(camera: Camera, sdd: float | None = None) -> float:
    """Area of a detector pixel (mm^2): ``sdd^2 / (fx fy)`` (perspective; ``sdd`` or ``camera.sdd``) or ``1 / (kx ky)``."""
    K = camera.K
    if camera.projection == "parallel":
        return float(1.0 / abs(K[0, 0] * K[1, 1]))
    sdd = sdd if sdd is not None else camera.sdd
    if sdd is None:
        raise SignalError("the pixel size needs the source-detector distance: pass sdd= or use a camera that knows it (CArm.camera)")
    return float(sdd * sdd / abs(K[0, 0] * K[1, 1]))


def spectral_signal(areal_density: dict, camera: Camera, spec: Spectrum, params: PhysicsParams, sdd: float | None = None) -> SpectralSignal:
    """Mean primary signal, its second moment and detected quanta (no scatter, no noise).

    With an anti-scatter grid (``params.scatter.grid``) the primary and the flat field are both
    multiplied by the grid's primary transmission T_p(E): the quanta that reach the detector (and
    so the noise) drop, the transmission (their ratio) does not. ``sdd`` (mm; default
    ``camera.sdd``) is needed only for a dose given as ``air_kerma_ugy``.
    """
    areal_density = validate_areal_density(areal_density, camera.shape)
    det = params.detector
    e = spec.energies
    omega = pixel_solid_angle(camera)
    qe = detector_qe(e, det)
    w1 = signal_weights(e, det, 1)
    w2 = signal_weights(e, det, 2)
    grid = params.scatter.grid  # in the beam whatever the scatter model
    if grid is not None:
        from .grid import primary_transmission

        tp = primary_transmission(grid, e)
        qe, w1, w2 = qe * tp, w1 * tp, w2 * tp
    H, Wd = camera.shape
    if params.heel:  # one spectrum per detector row (axis v) or column (axis u)
        phi = heel_spectra(spec, camera, params.heel_axis, params.heel_sign).T  # (E, L)
        line_of = np.arange(H * Wd) // Wd if params.heel_axis == "v" else np.arange(H * Wd) % Wd  # pixel -> line
        lines = (params.heel_axis, H, Wd)
    else:
        phi = spec.fluence[:, None]  # (E, 1)
        line_of = np.zeros(H * Wd, dtype=np.int64)
        lines = None
    # Dose: mAs; or chosen so the mean unattenuated incident quanta per pixel equal quanta_per_pixel;
    # or so the air kerma at the detector centre is air_kerma_ugy (incident quanta before any grid).
    incident_per_mas = (omega.ravel() / OMEGA_1M) * phi.sum(axis=0)[line_of]
    if params.mas is not None:
        mas = params.mas
    elif params.air_kerma_ugy is not None:
        quanta_centre = params.air_kerma_ugy / air_kerma_per_fluence(spec) * pixel_area_mm2(camera, sdd)
        K = camera.K
        c = (int(np.clip(round(K[1, 2]), 0, camera.height - 1)), int(np.clip(round(K[0, 2]), 0, camera.width - 1)))
        omega_c = 1.0 / abs(K[0, 0] * K[1, 1]) if camera.projection == "perspective" else omega[c]
        phi_c = phi[:, line_of[c[0] * camera.width + c[1]]].sum()
        mas = quanta_centre / (omega_c / OMEGA_1M * phi_c)
    else:
        mas = params.quanta_per_pixel / float(np.mean(incident_per_mas))
    scale = (mas * omega / OMEGA_1M).ravel()  # (P,)
    if lines is None:
        W = np.stack([phi[:, 0] * w1, phi[:, 0] * w2, phi[:, 0] * qe])  # (3, E)
        flat = W.sum(axis=1)[:, None] * scale[None]
    else:
        W = np.stack([phi * w1[:, None], phi * w2[:, None], phi * qe[:, None]])  # (3, E, L)
        flat = W.sum(axis=1)[:, line_of] * scale[None]
    m = transmitted_moments(areal_density, e, W, scale.size, lines=lines) * scale[None]
    shp = camera.shape
    return SpectralSignal(
        primary=m[0].reshape(shp), second=m[1].reshape(shp), quanta=m[2].reshape(shp),
        flat=flat[0].reshape(shp), flat_second=flat[1].reshape(shp), flat_quanta=flat[2].reshape(shp), mas=float(mas),
    )


def water_transmission_table(spec: Spectrum, det: DetectorParams, t_max_cm: float = 60.0, n: int = 241) -> tuple[np.ndarray, np.ndarray]:
    """Polychromatic, signal-weighted transmission of water slabs: (thickness cm, T)."""
    t = np.linspace(0.0, t_max_cm, n)
    w = spec.fluence * signal_weights(spec.energies, det)
    mu = mass_attenuation("water", spec.energies)
    T = np.exp(-np.outer(t, mu)) @ w / w.sum()
    return t, T


def water_equivalent_thickness(transmission: np.ndarray, spec: Spectrum, det: DetectorParams) -> np.ndarray:
    """Water thickness (cm) with the same polychromatic primary transmission (beam hardening included)."""
    t, T = water_transmission_table(spec, det)
    Tc = np.clip(transmission, T[-1], 1.0)
    return np.interp(-np.log(Tc), -np.log(T), t)

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
from ..materials import MATERIALS, MaterialError, attenuation_table, mass_attenuation
from .params import DetectorParams, PhysicsParams, PhysicsParamsError
from .spectrum import Spectrum, _spekpy_spectrum

OMEGA_1M = 1e-4  # sr subtended by 1 cm^2 at 1 m


class SignalError(ValueError):
    """Bad areal densities or camera for the signal model."""


def detector_qe(energies_kev, det: DetectorParams = DetectorParams()) -> np.ndarray:
    """Fraction of normally incident photons absorbed in the CsI layer."""
    mu = mass_attenuation("csi", np.asarray(energies_kev, dtype=np.float64)) * MATERIALS["csi"].density
    return 1.0 - np.exp(-mu * det.csi_fill * det.csi_mm / 10.0)


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


def heel_spectra(spec: Spectrum, camera: Camera, axis: str, sign: float, nodes: int = 9) -> np.ndarray:
    """Per row/column spectra (n_lines, n_E) from SpekPy at ``nodes`` off-axis positions, interpolated linearly."""
    x = heel_positions_mm(camera, axis, sign)
    xs = np.linspace(x.min(), x.max(), nodes) if x.max() > x.min() else np.array([x.min()])
    p = spec.params
    rows = []
    for xi in xs:
        k, f = _spekpy_spectrum(p.kvp, p.anode_angle, p.target, p.filtration, p.bin_kev, float(np.clip(xi, -400, 400)))
        if not np.any(np.asarray(f) > 0):
            raise SignalError(
                f"the anode heel cuts the beam off: a {p.anode_angle} degree anode emits nothing {abs(xi):.0f} mm "
                f"off-axis at 1 m on its anode side, inside this detector's field; use a larger anode angle, a smaller "
                "field or heel=False"
            )
        rows.append(np.interp(spec.energies, k, f))
    rows = np.array(rows)
    if len(xs) == 1:
        return np.repeat(rows, len(x), axis=0)
    return np.stack([np.interp(x, xs, rows[:, e]) for e in range(rows.shape[1])], axis=1)


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


def transmitted_moments(areal_density: dict, energies: np.ndarray, weights: np.ndarray, n_pix: int, chunk: int = 1 << 16) -> np.ndarray:
    """``sum_E weights[k, E, p] exp(-sum_m mu_m(E) A_m(p))`` for each weight row k: (K, P).

    ``weights``: (K, E) shared by all pixels, or (K, E, P) per pixel (heel).
    """
    names = list(areal_density)
    if not names:
        return weights.sum(axis=1) if weights.ndim == 3 else np.repeat(weights.sum(axis=1)[:, None], n_pix, axis=1)
    tab = attenuation_table(names, energies)
    mu = tab.mu.T.astype(np.float32)  # (E, M)
    A = np.stack([np.asarray(areal_density[n], dtype=np.float32).ravel() for n in names])  # (M, P)
    out = np.empty((weights.shape[0], n_pix), dtype=np.float64)
    w32 = weights.astype(np.float32)
    for s in range(0, n_pix, chunk):
        T = np.exp(-(mu @ A[:, s : s + chunk]))  # (E, p)
        if w32.ndim == 2:
            out[:, s : s + chunk] = w32 @ T
        else:
            out[:, s : s + chunk] = np.einsum("kep,ep->kp", w32[:, :, s : s + chunk], T)
    return out


def spectral_signal(areal_density: dict, camera: Camera, spec: Spectrum, params: PhysicsParams) -> SpectralSignal:
    """Mean primary signal, its second moment and detected quanta (no scatter, no noise)."""
    areal_density = validate_areal_density(areal_density, camera.shape)
    det = params.detector
    e = spec.energies
    omega = pixel_solid_angle(camera)
    qe = detector_qe(e, det)
    w1 = signal_weights(e, det, 1)
    w2 = signal_weights(e, det, 2)
    if params.heel:
        lines = heel_spectra(spec, camera, params.heel_axis, params.heel_sign)  # (n_lines, E)
        phi = lines[:, None, :] if params.heel_axis == "v" else lines[None, :, :]
        phi = np.broadcast_to(phi, camera.shape + (len(e),)).reshape(-1, len(e)).T  # (E, P)
    else:
        phi = spec.fluence[:, None]
    # Dose: mAs, or chosen so the mean unattenuated incident quanta per pixel equal quanta_per_pixel.
    incident_per_mas = (omega.ravel() / OMEGA_1M) * (phi.sum(axis=0) if phi.ndim == 2 and phi.shape[1] > 1 else phi.sum())
    mas = params.mas if params.mas is not None else params.quanta_per_pixel / float(np.mean(incident_per_mas))
    scale = (mas * omega / OMEGA_1M).ravel()  # (P,)
    if phi.shape[1] == 1:
        W = np.stack([phi[:, 0] * w1, phi[:, 0] * w2, phi[:, 0] * qe])  # (3, E)
        flat = W.sum(axis=1)[:, None] * scale[None]
    else:
        W = np.stack([phi * w1[:, None], phi * w2[:, None], phi * qe[:, None]])  # (3, E, P)
        flat = W.sum(axis=1) * scale[None]
    m = transmitted_moments(areal_density, e, W, scale.size) * scale[None]
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

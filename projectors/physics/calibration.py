"""Fit the fast scatter model's kernels to the Monte Carlo.

For each spectrum and water thickness t, a broad beam covering a 774 mm
detector irradiates a wide water slab centred at the C-arm isocentre. The
Monte Carlo's reverse tally gives, for every primary pencil (detector pixel
x'), its scatter contribution to the field centre per unit primary: the
kernel ``a(t) k_t(|x'|)`` that the fast model superposes. (A forward
pencil-beam kernel is *not* shift-invariant on a magnifying geometry: scatter
from off-axis pencils reaches the centre more than a shifted central kernel
predicts, by up to 40% for a wide field behind 30 cm of water; the reverse
kernel is exact at the field centre for any field size.) ``k_t`` is a mix of
the measured radial profile (from the cumulative radial mass, out to 384 mm);
a two-Gaussian fit of that cumulative mass is recorded for information.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import curve_fit

from ..geometry import CArm, Camera
from ..materials import mass_attenuation
from .params import DetectorParams
from .scatter_mc import simulate_scatter, water_box_scene
from .signal import signal_weights
from .spectrum import Spectrum, SpectrumParams, spectrum


def polychromatic_water_transmission(spec: Spectrum, t_cm: float, det: DetectorParams = DetectorParams()) -> float:
    w = spec.fluence * signal_weights(spec.energies, det)
    return float((w * np.exp(-mass_attenuation("water", spec.energies) * t_cm)).sum() / w.sum())


def pencil_camera(sdd: float, sid: float, n: int = 129, pitch_mm: float = 4.0) -> Camera:
    """AP C-arm camera with an n x n detector of ``pitch_mm`` pixels (odd n: the pencil hits a pixel centre)."""
    return CArm(sdd=sdd, sid=sid, size=(n, n), pitch=pitch_mm).camera(alpha=0.0, beta=0.0)


def _cumulative(r, a, f, s1, s2):
    return a * (f * (1 - np.exp(-(r**2) / (2 * s1**2))) + (1 - f) * (1 - np.exp(-(r**2) / (2 * s2**2))))


def centre_kernel(spec: Spectrum, t_cm: float, n_photons: int, rng: np.random.Generator, sdd=1020.0, sid=530.0,
                  det: DetectorParams = DetectorParams(), device="cpu") -> dict:
    """Monte Carlo reverse kernel for ``t_cm`` of water (broad beam, contributions to the field centre) and its fit."""
    n, pitch = 129, 6.0
    cam = pencil_camera(sdd, sid, n, pitch)
    iso = np.asarray(CArm(sdd=sdd, sid=sid).isocenter, dtype=float)
    scene = water_box_scene(t_cm * 10.0, 1400.0, voxel_mm=10.0, center_world=iso)
    c = (n - 1) / 2.0
    disk_px = 10.0
    res = simulate_scatter(scene, cam, sdd, spec, n_photons, rng, det, reverse_radius_px=disk_px, device=device)
    Tp = polychromatic_water_transmission(spec, t_cm, det)
    v, u = np.mgrid[0:n, 0:n]
    r = np.hypot(u - c, v - c) * pitch
    disk = r <= disk_px * pitch
    # contribution of a pencil at each offset to the mean scatter/flat over the central disk, per unit
    # primary (a 60 mm radius disk in a 774 mm field: the scatter is nearly uniform there)
    mass = res.reverse / (Tp * res.flat[disk].sum())
    # The disk average of the scatter is a little below its value at the centre (forward tally of
    # the same photons): scale the kernel to the centre, where a field's scatter is largest.
    centre = r <= 2.5 * pitch
    centre_over_disk = (res.scatter[centre].sum() / res.flat[centre].sum()) / (res.scatter[disk].sum() / res.flat[disk].sum())
    mass = mass * centre_over_disk
    # Fit the kernel's cumulative radial mass (scatter within radius r), which is what a field of a
    # given size collects: C(r) = a [f (1 - exp(-r^2 / 2 s1^2)) + (1 - f) (1 - exp(-r^2 / 2 s2^2))].
    r_max = (n // 2) * pitch
    radii = np.arange(pitch, r_max + 1e-9, pitch)
    cum = np.array([mass[r <= ri].sum() for ri in radii])
    a_direct = float(mass.sum())
    p0 = (max(a_direct, 1e-6), 0.3, 20.0, 150.0)
    popt, _ = curve_fit(_cumulative, radii, cum, p0=p0, bounds=([0.0, 0.0, 1.0, 10.0], [1e3, 1.0, 300.0, 3000.0]), maxfev=20000)
    a, f, s1, s2 = popt
    if s1 > s2:
        s1, s2, f = s2, s1, 1 - f
    return {"spr": float(a), "frac": float(f), "sigma1_mm": float(s1), "sigma2_mm": float(s2),
            "spr_on_detector": float(a_direct), "primary_transmission": Tp,
            "radii_mm": [0.0] + radii.tolist(), "cumulative": [0.0] + cum.tolist(), "centre_over_disk": float(centre_over_disk)}


def calibrate(spectra: list[SpectrumParams], thicknesses_cm, n_photons: int, rng: np.random.Generator, sdd=1020.0, sid=530.0,
              progress=None, device="cpu") -> dict:
    """Kernel table (a dict :class:`~.scatter_fast.KernelTable` reads) over spectra x thicknesses."""
    t = [float(x) for x in thicknesses_cm]
    rows = {k: [] for k in ("spr", "frac", "sigma1_mm", "sigma2_mm", "cumulative")}
    means = []
    for sp in spectra:
        spec = spectrum(sp)
        means.append(spec.mean_energy)
        fits = []
        for ti in t:
            # thicker slabs transmit fewer photons: scale the count so each kernel has similar statistics
            n = int(n_photons * (1.0 + ti / 10.0))
            fits.append(centre_kernel(spec, ti, n, rng, sdd, sid, device=device))
            if progress:
                progress()
        for k in rows:
            rows[k].append([fi[k] for fi in fits])
    order = np.argsort(means)
    return {
        "mean_energy": [means[i] for i in order],
        "thickness_cm": t,
        "radii_mm": fits[0]["radii_mm"],
        **{k: [v[i] for i in order] for k, v in rows.items()},
        "geometry": {"sdd_mm": sdd, "sid_mm": sid, "phantom": "water slab centred at the isocentre",
                     "spectra": [spectra[i].to_dict() for i in order], "n_photons": n_photons},
    }

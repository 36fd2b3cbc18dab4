"""Fit the fast scatter model's kernels to the Monte Carlo.

For each spectrum, water thickness ``t`` and air gap ``g`` (exit surface of
the slab to the detector), a broad beam covering a 774 mm detector at
:data:`CAL_SDD` irradiates a wide water slab. The Monte Carlo's reverse tally
(:class:`~.scatter_mc.ReverseTally`) gives, for scatter landing near the field
centre, the distance from its landing point to the detector point its photon
was aimed at (its primary pencil) and its direction: per unit primary, the
kernel ``k_{t,g}(r)`` that the fast model superposes, resolved in the polar
angle of incidence (what an anti-scatter grid selects on), plus the scatter's
energy spectrum. (A forward pencil-beam kernel is *not* shift-invariant when
the patient is far from the detector: scatter from off-axis pencils reaches
the centre more than a shifted central kernel predicts, by up to 40% for a
wide field behind 30 cm of water 40 cm from the detector; the reverse kernel
is exact at the field centre for any field size.)

Field size needs no table axis: the superposition sums the kernel over the
pencils that exist, and transport is linear, so a uniform slab under any field
is exact at the centre. The calibration's range: thickness 0.5-50 cm water,
gap 20-500 mm, spectra 60-120 kVp (mean energy 41-61 keV); outside it the
fast model clamps.
"""

from __future__ import annotations

import numpy as np

from ..geometry import CArm, Camera
from ..materials import mass_attenuation
from .params import DetectorParams
from .scatter_mc import E_MAX, REVERSE_E_BIN_KEV, REVERSE_THETA_EDGES_DEG, simulate_scatter, water_box_scene
from .signal import signal_weights
from .spectrum import Spectrum, SpectrumParams, spectrum

#: Source-detector distance of the calibration (mm); the kernels depend on it only through the
#: obliquity of off-axis pencils (< 15 degrees over a 774 mm field).
CAL_SDD = 1500.0
#: Radial groups (mm) over which the angular distribution of the kernel is stored.
ANGLE_GROUP_EDGES_MM = (0.0, 8.0, 20.0, 40.0, 70.0, 110.0, 160.0, 220.0, 290.0, 400.0)


def polychromatic_water_transmission(spec: Spectrum, t_cm, det: DetectorParams = DetectorParams()) -> np.ndarray:
    w = spec.fluence * signal_weights(spec.energies, det)
    t = np.atleast_1d(np.asarray(t_cm, dtype=np.float64))
    mu = mass_attenuation("water", spec.energies)
    return np.exp(-np.outer(t, mu)) @ w / w.sum()


def field_coverage(r_mm: np.ndarray, disk: np.ndarray, pitch_mm: float, half_field_mm: float, n_angles: int = 256) -> np.ndarray:
    """Fraction of a circle of radius r around the disk's pixel centres that lies inside the square field."""
    n = disk.shape[0]
    c = (n - 1) / 2.0
    v, u = np.nonzero(disk)
    px = (u - c) * pitch_mm
    py = (v - c) * pitch_mm
    a = (np.arange(n_angles) + 0.5) / n_angles * 2 * np.pi
    out = np.empty(len(r_mm))
    for i, r in enumerate(r_mm):
        x = px[:, None] + r * np.cos(a)[None, :]
        y = py[:, None] + r * np.sin(a)[None, :]
        out[i] = np.mean((np.abs(x) <= half_field_mm) & (np.abs(y) <= half_field_mm))
    return np.maximum(out, 1e-3)


def slab_camera(sdd: float, n: int = 129, pitch_mm: float = 6.0) -> Camera:
    """AP camera with an n x n detector of ``pitch_mm`` pixels, detector plane at world y = -sdd/2 (odd n: the
    principal point is a pixel centre)."""
    return CArm(sdd=sdd, sid=sdd / 2, size=(n, n), pitch=pitch_mm).camera(alpha=0.0, beta=0.0)


def slab_kernel(spec: Spectrum, t_cm: float, gap_mm: float, n_photons: int, rng: np.random.Generator, sdd: float = CAL_SDD,
                det: DetectorParams = DetectorParams(), device: str = "cpu", disk_px: float = 12.0, r_step_mm: float = 4.0,
                n_r: int = 100) -> dict:
    """Monte Carlo reverse kernel of ``t_cm`` of water whose exit surface is ``gap_mm`` from the detector."""
    n, pitch = 129, 6.0
    cam = slab_camera(sdd, n, pitch)
    y_det = -sdd / 2
    centre = np.array([0.0, y_det + gap_mm + t_cm * 5.0, 0.0])
    scene = water_box_scene(t_cm * 10.0, 1400.0, voxel_mm=10.0, center_world=centre)
    res = simulate_scatter(scene, cam, sdd, spec, n_photons, rng, det, reverse_radius_px=disk_px,
                           reverse_r_step_mm=r_step_mm, reverse_n_r=n_r, device=device)
    rev = res.reverse
    c = (n - 1) / 2.0
    v, u = np.mgrid[0:n, 0:n]
    r_px = np.hypot(u - c, v - c) * pitch
    # per unit primary: each radial bin's pencils sit ~r from the centre (obliquity sec(atan(r / sdd)))
    r_mid = (np.arange(n_r) + 0.5) * r_step_mm
    Tp = polychromatic_water_transmission(spec, t_cm * np.sqrt(1.0 + (r_mid / sdd) ** 2), det)
    mass = rev.hist / (res.flat[rev.disk].sum() * Tp[:, None])
    # pencils exist only inside the square field: an annulus around a landing point in the disk that
    # leaves the field is only partly covered; divide by its covered fraction (exact in expectation)
    mass = mass / field_coverage(r_mid, rev.disk, pitch, n * pitch / 2.0)[:, None]
    # The reverse tally gives the disk's mean scatter; scale it to the field centre (scatter peaks there)
    # with a smooth fit S(r) = a + b r^2 of the forward tally within 150 mm.
    sel = r_px <= 150.0
    A = np.stack([np.ones(sel.sum()), r_px[sel] ** 2], axis=1)
    a, b = np.linalg.lstsq(A, res.scatter_rel[sel], rcond=None)[0]
    centre_over_disk = float(a / np.mean(a + b * r_px[rev.disk] ** 2))
    mass = mass * centre_over_disk
    return {
        "mass": mass,  # (n_r, n_theta) per unit primary, contribution to the centre
        "energy": rev.energy / np.maximum(rev.energy.sum(axis=1, keepdims=True), 1e-30),  # per angle bin, 4 keV bins
        "spr": float(mass.sum()),
        "centre_over_disk": centre_over_disk,
        "primary_transmission": float(Tp[0]),
    }


def calibrate(spectra: list[SpectrumParams], thicknesses_cm, gaps_mm, n_photons: int, seed: int, sdd: float = CAL_SDD,
              progress=None, device: str = "cpu", r_step_mm: float = 4.0, n_r: int = 100, map_fn=map) -> dict:
    """Kernel table (the arrays of :class:`~.scatter_fast.KernelTable`) over spectra x thicknesses x gaps.

    Each kernel draws from its own ``numpy.random.default_rng([seed, s, t, g])``, so the table does not
    depend on how ``map_fn`` (e.g. a process pool's ``map``) spreads the work. ``n_photons`` is scaled
    by ``1 + t / 10`` so thicker slabs (less transmitted) get similar statistics.
    """
    t = [float(x) for x in thicknesses_cm]
    g = [float(x) for x in gaps_mm]
    jobs = [(si, ti, gi) for si in range(len(spectra)) for ti in range(len(t)) for gi in range(len(g))]
    args = [(spectra[si].to_dict(), t[ti], g[gi], int(n_photons * (1.0 + t[ti] / 10.0)), (seed, si, ti, gi), sdd, device, r_step_mm, n_r)
            for si, ti, gi in jobs]
    groups = np.asarray(ANGLE_GROUP_EDGES_MM)
    r_edges = np.arange(n_r + 1) * r_step_mm
    group_of = np.clip(np.searchsorted(groups, 0.5 * (r_edges[:-1] + r_edges[1:]), side="right") - 1, 0, len(groups) - 2)
    S, T, G = len(spectra), len(t), len(g)
    n_theta = len(REVERSE_THETA_EDGES_DEG) - 1
    radial = np.zeros((S, T, G, n_r))
    angular = np.zeros((S, T, G, len(groups) - 1, n_theta))
    energy = np.zeros((S, T, G, n_theta, E_MAX // REVERSE_E_BIN_KEV))
    for (si, ti, gi), k in zip(jobs, map_fn(_kernel_job, args)):
        radial[si, ti, gi] = k["mass"].sum(axis=1)
        for gr in range(len(groups) - 1):
            m = k["mass"][group_of == gr].sum(axis=0)
            angular[si, ti, gi, gr] = m / m.sum() if m.sum() > 0 else np.full(n_theta, 1.0 / n_theta)
        energy[si, ti, gi] = k["energy"]
        if progress:
            progress()
    means = [spectrum(sp).mean_energy for sp in spectra]
    order = np.argsort(means)
    return {
        "mean_energy": np.asarray(means)[order],
        "thickness_cm": np.asarray(t),
        "gap_mm": np.asarray(g),
        "r_edges_mm": r_edges,
        "angle_group_edges_mm": groups,
        "theta_edges_deg": np.asarray(REVERSE_THETA_EDGES_DEG, dtype=np.float64),
        "radial": radial[order],
        "angular": angular[order],
        "energy": energy[order],
        "meta": {"sdd_mm": sdd, "phantom": "water slab, exit surface gap_mm from the detector, 1400 mm wide",
                 "field_mm": 774.0, "spectra": [spectra[i].to_dict() for i in order], "n_photons": n_photons, "seed": seed},
    }


def _kernel_job(a):
    sp, t_cm, gap, n, seed, sdd, device, r_step_mm, n_r = a
    spec = spectrum(SpectrumParams.from_dict(sp))
    return slab_kernel(spec, t_cm, gap, n, np.random.default_rng(list(seed)), sdd, device=device, r_step_mm=r_step_mm, n_r=n_r)

"""Monte Carlo photon transport (Warp): the scatter reference.

Photons from the focal spot are tracked through a voxel scene (density in
g/cm^3 and a material index per voxel) with Woodcock (delta) tracking: free
paths are drawn with the majorant attenuation of the scene at the photon's
energy, and a tentative collision is real with probability mu(x)/mu_max.
Real collisions are photoelectric absorption, Compton scattering (angle from
the Klein-Nishina cross section, energy from the Compton formula) or
Rayleigh scattering (Thomson distribution times the squared atomic form
factor of the material, independent-atom approximation, form factors of
Waasmaier & Kirfel from xraydb). Cross sections are xraydb's (Elam et al.).

Variance reduction: implicit capture (photoelectric absorption multiplies
the photon weight by the scattering probability instead of ending the
history) with Russian roulette below weight 0.05. Electron transport, K-
fluorescence and Compton binding effects on the angle are neglected (all
below a few percent of the scatter signal at diagnostic energies in tissue).

Photons leaving the scene travel in straight lines (air neglected) to the
flat detector at distance ``sdd`` along the camera's +z; each hit adds
``weight * QE(E) * w(E)`` (the detector's signal weight) to the pixel, in
separate images for unscattered (primary) and scattered photons.

The same kernel runs on ``cpu`` and ``cuda`` (Warp). Source modes:
``field`` (photons aimed uniformly over the whole detector, each weighted by
cos^3 of its angle so the fluence equals that of an isotropic point source)
and ``pencil`` (all photons towards one detector point: the scatter kernel of
a pencil beam). In field mode a *reverse* tally can record, for scatter that
lands within ``reverse_radius_px`` of the principal point, the displacement
from its landing point to the pixel it was aimed at: the contribution of each
primary pencil to the scatter around the field centre, by offset, which is
what the fast model is calibrated with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import warp as wp

from ..geometry import Camera, Transform
from ..materials import MATERIALS, mass_attenuation_components
from .grid import direction_table, primary_transmission
from .params import DetectorParams, GridParams, ScatterParams
from .signal import signal_weights
from .spectrum import Spectrum

wp.config.quiet = True

E_MAX = 160  # keV; tables at 1 keV steps from 1 to E_MAX
N_CDF = 257  # quantiles of the angular inverse CDFs
ELECTRON_KEV = 510.99895
R_E2 = 7.9407877e-26  # classical electron radius squared, cm^2


class MonteCarloError(ValueError):
    """Bad scene or geometry for the Monte Carlo."""


@dataclass(frozen=True, eq=False)
class VoxelScene:
    """A voxel scene for transport: ``density[i, j, k]`` g/cm^3, ``material[i, j, k]`` an index into ``materials``;
    ``density_scale``: optional factor per material on its density (a dataset's density jitter, see
    :meth:`scaled`; applied to the attenuation tables, so scaled copies share the volumes)."""

    density: np.ndarray
    material: np.ndarray
    materials: tuple[str, ...]
    world_from_ijk: Transform
    density_scale: tuple[float, ...] | None = None

    def __post_init__(self):
        d = np.asarray(self.density, dtype=np.float32)
        m = np.asarray(self.material)
        if d.ndim != 3 or m.shape != d.shape:
            raise MonteCarloError(f"density and material volumes must be 3-D and equal in shape, got {d.shape} and {m.shape}")
        if not np.all(np.isfinite(d)) or np.any(d < 0):
            raise MonteCarloError("density must be finite and >= 0 g/cm^3")
        if m.size and (m.min() < 0 or m.max() >= len(self.materials)):
            raise MonteCarloError(f"material indices must lie in 0..{len(self.materials) - 1}")
        for n in self.materials:
            if n not in MATERIALS:
                raise MonteCarloError(f"unknown material {n!r}; known: {', '.join(sorted(MATERIALS))}")
        if not isinstance(self.world_from_ijk, Transform):
            object.__setattr__(self, "world_from_ijk", Transform(self.world_from_ijk))
        if self.density_scale is not None:
            sc = tuple(float(x) for x in self.density_scale)
            if len(sc) != len(self.materials) or not all(np.isfinite(x) and x > 0 for x in sc):
                raise MonteCarloError(f"density_scale needs one factor > 0 per material ({len(self.materials)}), got {sc}")
            object.__setattr__(self, "density_scale", sc)
        object.__setattr__(self, "density", d)
        object.__setattr__(self, "material", np.asarray(m, dtype=np.int32))  # no copy when already int32

    @property
    def scale(self) -> np.ndarray:
        """Density factor per material (ones without a ``density_scale``)."""
        return np.ones(len(self.materials)) if self.density_scale is None else np.asarray(self.density_scale)

    def scaled(self, density_scale: dict[str, float]) -> "VoxelScene":
        """The scene with material ``m``'s density times ``density_scale[m]`` (1 where absent; materials the
        scene does not have are ignored): the same volumes, so it costs nothing."""
        return VoxelScene(self.density, self.material, self.materials, self.world_from_ijk,
                          tuple(float(density_scale.get(n, 1.0)) for n in self.materials))

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.world_from_ijk.R, axis=0)

    @classmethod
    def from_volume(cls, volume, materials=None) -> "VoxelScene":
        """A CT volume as a transport scene: density from HU by the model's calibration, the
        dominant material of the HU map per voxel, label overrides (material, density) applied."""
        from ..materials import MaterialModel

        mm = materials or MaterialModel()
        hu_map = mm.hu_map
        names = list(hu_map.materials)
        for lm in mm.label_materials.values():
            if lm.material not in names:
                names.append(lm.material)
        hu = np.asarray(volume.hu, dtype=np.float64)
        density = hu_map.density(hu).astype(np.float32)
        q = hu_map.material_coordinate(hu)  # floor: lower material, fraction: upper's weight
        index = np.clip(np.round(q), 0, len(hu_map.materials) - 1).astype(np.int32)
        if volume.labels is not None:
            for label, lm in mm.label_materials.items():
                sel = volume.labels == label
                index[sel] = names.index(lm.material)
                if lm.density is not None:
                    density[sel] = lm.density
        return cls(density, index, tuple(names), volume.world_from_ijk)

    @classmethod
    def from_scene(cls, scene) -> "VoxelScene":
        """A projector scene (a ``Volume``, a ``SceneVolume`` with its material model, or a list of one) as a
        transport scene (:meth:`from_volume`). The transport takes one voxel grid: a scene of several volumes
        (a tool volume with priority over the CT) is refused (resampling volumes of different grids and
        priorities into one is not implemented); a tool given as a mesh is not transported either, see
        :func:`monte_carlo_scatter`."""
        from projectors.projector import as_scene

        items = as_scene(scene)
        if len(items) != 1:
            raise MonteCarloError(
                f"the Monte Carlo scatter transports photons through one voxel volume; this scene has {len(items)} "
                "(e.g. a tool volume with priority over the CT): use the fast scatter model (scatter model 'fast') "
                "for multi-volume scenes")
        return cls.from_volume(items[0].volume, items[0].materials)

    def world_from_vol(self) -> Transform:
        """Rigid frame with voxel (i, j, k) centred at (i, j, k) * spacing mm."""
        R = self.world_from_ijk.R / self.spacing
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-5):
            raise MonteCarloError("the Monte Carlo needs a volume grid without shear (orthogonal axes)")
        return Transform.from_rt(R, self.world_from_ijk.t)


# -- tables ---------------------------------------------------------------------------


def _energy_grid() -> np.ndarray:
    return np.arange(1, E_MAX + 1, dtype=np.float64)


def klein_nishina_icdf(energies: np.ndarray, n_cos: int = 4001) -> np.ndarray:
    """cos(theta) at N_CDF uniform quantiles of the Klein-Nishina distribution, per energy: (E, N_CDF)."""
    c = np.linspace(-1.0, 1.0, n_cos)
    out = np.empty((len(energies), N_CDF))
    q = np.linspace(0.0, 1.0, N_CDF)
    for i, e in enumerate(energies):
        P = 1.0 / (1.0 + e / ELECTRON_KEV * (1.0 - c))
        pdf = P * P * (P + 1.0 / P - (1.0 - c * c))
        out[i] = _icdf(c, pdf, q)
    return out


def _icdf(c, pdf, q):
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(c))])
    cdf /= cdf[-1]
    return np.interp(q, cdf, c)


def form_factor_squared(material: str, x_inv_angstrom: np.ndarray) -> np.ndarray:
    """Sum over elements of (mass fraction / A) * f0(x)^2 (independent atoms); x = sin(theta/2)/lambda."""
    import xraydb

    x = np.clip(x_inv_angstrom, 0.0, 6.0)  # Waasmaier-Kirfel fits hold to 6 1/A; f0 is tiny beyond
    out = np.zeros_like(x)
    for el, frac in MATERIALS[material].composition.items():
        out += frac / xraydb.atomic_mass(el) * xraydb.f0(el, x) ** 2
    return out


def rayleigh_icdf(material: str, energies: np.ndarray, n_cos: int = 4001) -> np.ndarray:
    """cos(theta) quantiles of (1 + cos^2)/2 * F^2(x), per energy: (E, N_CDF)."""
    c = np.linspace(-1.0, 1.0, n_cos)
    q = np.linspace(0.0, 1.0, N_CDF)
    out = np.empty((len(energies), N_CDF))
    s_half = np.sqrt((1.0 - c) / 2.0)  # sin(theta/2)
    for i, e in enumerate(energies):
        x = s_half * e / 12.3984198  # 1/lambda in 1/A
        pdf = (1.0 + c * c) * form_factor_squared(material, x)
        out[i] = _icdf(c, pdf, q)
    return out


@lru_cache(maxsize=16)
def transport_tables(materials: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per material and energy (1 keV steps): mu/rho by interaction (cm^2/g) and angular inverse CDFs."""
    e = _energy_grid()
    mu = np.zeros((len(materials), len(e), 3))
    ray = np.zeros((len(materials), len(e), N_CDF))
    for m, name in enumerate(materials):
        comp = mass_attenuation_components(name, e)
        mu[m] = np.stack([comp["photoelectric"], comp["compton"], comp["rayleigh"]], axis=1)
        ray[m] = rayleigh_icdf(name, e)
    return {"energies": e, "mu": mu, "kn": klein_nishina_icdf(e), "rayleigh": ray}


# -- kernel ------------------------------------------------------------------------------


@wp.func
def _lerp_table(tab: wp.array2d(dtype=wp.float32), row: int, u: float):
    x = u * float(tab.shape[1] - 1)
    i = wp.min(int(x), tab.shape[1] - 2)
    f = x - float(i)
    return tab[row, i] * (1.0 - f) + tab[row, i + 1] * f


@wp.func
def _energy_row(e: float):
    return wp.clamp(int(e + 0.5) - 1, 0, 159)


@wp.func
def _mu3(mu: wp.array3d(dtype=wp.float32), m: int, e: float, k: int):
    x = wp.clamp(e - 1.0, 0.0, 158.999)
    i = int(x)
    f = x - float(i)
    return mu[m, i, k] * (1.0 - f) + mu[m, i + 1, k] * f


@wp.func
def _orthonormal_rotate(d: wp.vec3, cos_t: float, phi: float):
    sin_t = wp.sqrt(wp.max(0.0, 1.0 - cos_t * cos_t))
    a = wp.vec3(1.0, 0.0, 0.0)
    if wp.abs(d[0]) > 0.9:
        a = wp.vec3(0.0, 1.0, 0.0)
    e1 = wp.normalize(wp.cross(d, a))
    e2 = wp.cross(d, e1)
    return wp.normalize(d * cos_t + (e1 * wp.cos(phi) + e2 * wp.sin(phi)) * sin_t)


@wp.kernel
def _transport(
    seed: int,
    density: wp.array3d(dtype=wp.float32),
    material: wp.array3d(dtype=wp.int32),
    spacing: wp.vec3,
    mu: wp.array3d(dtype=wp.float32),  # (M, E, 3) cm^2/g
    cell_rho: wp.array4d(dtype=wp.float32),  # (cells x, y, z, M) highest density of each material in a cell, g/cm^3
    cell_vox: int,  # voxels per cell edge
    kn: wp.array2d(dtype=wp.float32),
    ray: wp.array3d(dtype=wp.float32),
    spec_icdf: wp.array(dtype=wp.float32),
    sig_w: wp.array(dtype=wp.float32),  # (E,) detector signal weight
    source: wp.vec3,  # vol frame
    cam_R: wp.mat33,  # camera_from_vol rotation
    cam_t: wp.vec3,
    vol_R: wp.mat33,  # vol_from_camera rotation
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    sdd: float,
    width: int,
    height: int,
    pencil: int,
    pencil_u: float,
    pencil_v: float,
    aim_on: int,
    aim: wp.array2d(dtype=wp.int32),  # (Ha, Wa) 0 where the collimator stops photons aimed there (aim_on), any resolution
    grid_on: int,
    grid_t: wp.array2d(dtype=wp.float32),  # (160, A) transmission vs energy row and across-lamellae angle
    grid_hmu: wp.array(dtype=wp.float32),  # (160,) interspace h * mu
    grid_axis: int,  # 0: lamellae along v (cut-off across u, camera x); 1: along u (camera y)
    rev_radius: float,
    pitch_u: float,
    pitch_v: float,
    rev_r_step: float,
    rev_theta_edges: wp.array(dtype=wp.float32),  # (n_theta + 1,) radians
    primary_img: wp.array2d(dtype=wp.float32),
    scatter_img: wp.array2d(dtype=wp.float32),
    primary_grid: wp.array2d(dtype=wp.float32),
    scatter_grid: wp.array2d(dtype=wp.float32),
    rev_hist: wp.array2d(dtype=wp.float32),  # (n_r, n_theta)
    rev_energy: wp.array2d(dtype=wp.float32),  # (n_theta, n_e) energy bins of E_BIN_KEV per polar-angle bin
    src_label: wp.array2d(dtype=wp.int32),  # (H, W) region of each aimed-at pixel, or (1, 1) unused
    scatter_by_src: wp.array3d(dtype=wp.float32),  # (n_regions, H, W)
):
    tid = wp.tid()
    rng = wp.rand_init(seed, tid)
    # energy from the spectrum's inverse CDF
    e = spec_icdf[wp.min(int(wp.randf(rng) * float(spec_icdf.shape[0] - 1)), spec_icdf.shape[0] - 1)]
    e = e + (wp.randf(rng) - 0.5)  # spread within the 1 keV bin
    # direction towards a detector point
    du = pencil_u
    dv = pencil_v
    w = float(1.0)
    if pencil == 0:
        du = wp.randf(rng) * float(width) - 0.5
        dv = wp.randf(rng) * float(height) - 0.5
        if aim_on == 1:  # collimated: photons aimed behind the blades never leave the tube
            au = wp.clamp(int(wp.floor((du + 0.5) * float(aim.shape[1]) / float(width))), 0, aim.shape[1] - 1)
            av = wp.clamp(int(wp.floor((dv + 0.5) * float(aim.shape[0]) / float(height))), 0, aim.shape[0] - 1)
            if aim[av, au] == 0:
                return
    xc = (du - cx) / fx
    yc = (dv - cy) / fy
    dcam = wp.vec3(xc, yc, 1.0)
    if pencil == 0:
        c = 1.0 / wp.length(dcam)
        w = c * c * c
    d = wp.normalize(vol_R * dcam)
    p = source
    nx = float(density.shape[0])
    ny = float(density.shape[1])
    nz = float(density.shape[2])
    lo = wp.vec3(-0.5 * spacing[0], -0.5 * spacing[1], -0.5 * spacing[2])
    hi = wp.vec3((nx - 0.5) * spacing[0], (ny - 0.5) * spacing[1], (nz - 0.5) * spacing[2])
    # entry into the box
    t0 = float(-1.0e30)
    t1 = float(1.0e30)
    for a in range(3):
        if wp.abs(d[a]) < 1.0e-12:
            if p[a] < lo[a] or p[a] > hi[a]:
                t0 = 1.0e30
        else:
            ta = (lo[a] - p[a]) / d[a]
            tb = (hi[a] - p[a]) / d[a]
            t0 = wp.max(t0, wp.min(ta, tb))
            t1 = wp.min(t1, wp.max(ta, tb))
    scattered = int(0)
    inside = int(0)
    if t0 < t1 and t1 > 0.0:
        p = p + d * wp.max(t0, 0.0)
        inside = int(1)
        # Woodcock tracking with a local majorant per cell of cell_vox^3 voxels: a free path is drawn with
        # the cell's majorant (its materials' mu at their highest density in the cell); one reaching past
        # the cell's face moves the photon onto the face and into the neighbouring cell without a
        # collision (free paths are memoryless). The cell is tracked by index, not recomputed from the
        # position (a float32 position can sit a rounding error on the wrong side of a face).
        cv = float(cell_vox)
        ci = wp.clamp(int((p[0] / spacing[0] + 0.5) / cv), 0, cell_rho.shape[0] - 1)
        cj = wp.clamp(int((p[1] / spacing[1] + 0.5) / cv), 0, cell_rho.shape[1] - 1)
        ck = wp.clamp(int((p[2] / spacing[2] + 0.5) / cv), 0, cell_rho.shape[2] - 1)
        e_cell = float(-1.0)
        mloc = float(0.0)
        moved = int(1)
        for step in range(100000):
            if moved == 1 or e != e_cell:
                moved = int(0)
                e_cell = e
                mloc = float(0.0)
                for mm in range(mu.shape[0]):
                    mt = _mu3(mu, mm, e, 0) + _mu3(mu, mm, e, 1) + _mu3(mu, mm, e, 2)
                    mloc = wp.max(mloc, mt * cell_rho[ci, cj, ck, mm])
                mloc = mloc * 0.1  # g/cm^3 x cm^2/g -> 1/mm
            cell = wp.vec3(float(ci), float(cj), float(ck))
            t_exit = float(1.0e30)
            a_exit = int(0)
            for a in range(3):
                ta = float(1.0e30)
                if d[a] > 1.0e-12:  # the last cell may reach past the box: its face there is the box's
                    ta = (wp.min(((cell[a] + 1.0) * cv - 0.5) * spacing[a], hi[a]) - p[a]) / d[a]
                elif d[a] < -1.0e-12:
                    ta = ((cell[a] * cv - 0.5) * spacing[a] - p[a]) / d[a]
                if ta < t_exit:
                    t_exit = ta
                    a_exit = a
            s = float(1.0e30)
            xi = wp.randf(rng)
            if mloc > 0.0:
                s = -wp.log(1.0 - xi) / mloc
            if s >= t_exit:
                p = p + d * wp.max(t_exit, 0.0)
                step_dir = int(1)
                if d[a_exit] < 0.0:
                    step_dir = -1
                if a_exit == 0:
                    ci = ci + step_dir
                elif a_exit == 1:
                    cj = cj + step_dir
                else:
                    ck = ck + step_dir
                if ci < 0 or cj < 0 or ck < 0 or ci >= cell_rho.shape[0] or cj >= cell_rho.shape[1] or ck >= cell_rho.shape[2]:
                    inside = int(0)  # left the box
                    break
                moved = int(1)
                continue
            p = p + d * s
            i = int(wp.floor(p[0] / spacing[0] + 0.5))
            j = int(wp.floor(p[1] / spacing[1] + 0.5))
            k = int(wp.floor(p[2] / spacing[2] + 0.5))
            i = wp.clamp(i, 0, density.shape[0] - 1)
            j = wp.clamp(j, 0, density.shape[1] - 1)
            k = wp.clamp(k, 0, density.shape[2] - 1)
            rho = density[i, j, k] * 0.1  # g/cm^3 -> per mm
            m = material[i, j, k]
            mph = _mu3(mu, m, e, 0) * rho
            mco = _mu3(mu, m, e, 1) * rho
            mra = _mu3(mu, m, e, 2) * rho
            r = wp.randf(rng) * mloc
            if r >= mph + mco + mra:
                continue  # virtual collision
            w = w * (mco + mra) / (mph + mco + mra)  # implicit capture
            r2 = wp.randf(rng) * (mco + mra)
            phi = 6.283185307 * wp.randf(rng)
            row = _energy_row(e)
            if r2 < mco:
                ct = _lerp_table(kn, row, wp.randf(rng))
                e = e / (1.0 + e / 510.99895 * (1.0 - ct))
            else:
                x = wp.randf(rng) * float(N_CDF - 1)
                ii = wp.min(int(x), N_CDF - 2)
                f = x - float(ii)
                ct = ray[m, row, ii] * (1.0 - f) + ray[m, row, ii + 1] * f
            d = _orthonormal_rotate(d, ct, phi)
            scattered = 1
            if w < 0.05:
                if wp.randf(rng) < 0.5:
                    w = w * 2.0
                else:
                    w = 0.0
                    break
            if e < 2.0:
                w = 0.0
                break
    if w <= 0.0 or inside == 1:  # absorbed, or still inside after the step limit (dropped rather than misplaced)
        return
    # straight to the detector plane z_cam = sdd
    pc = cam_R * p + cam_t
    dc = cam_R * d
    if dc[2] <= 1.0e-9:
        return
    # the line meets the plane where it meets it; Woodcock steps may overshoot the box (and the plane)
    tt = (sdd - pc[2]) / dc[2]
    h = pc + dc * tt
    u = fx * h[0] / sdd + cx
    v = fy * h[1] / sdd + cy
    iu = int(wp.floor(u + 0.5))
    iv = int(wp.floor(v + 0.5))
    if iu < 0 or iv < 0 or iu >= width or iv >= height:
        return
    ee = wp.clamp(e - 1.0, 0.0, 158.999)
    ie = int(ee)
    fe = ee - float(ie)
    sw = sig_w[ie] * (1.0 - fe) + sig_w[ie + 1] * fe
    # direction relative to the focal ray through the landing point (a focused grid's lamellae follow it)
    dn = wp.normalize(dc)
    cos_pol = wp.dot(dn, wp.normalize(h))
    gt = float(1.0)
    if grid_on == 1:
        tp = wp.atan2(dn[0], dn[2]) - wp.atan2(h[0], sdd)
        if grid_axis == 1:
            tp = wp.atan2(dn[1], dn[2]) - wp.atan2(h[1], sdd)
        tp = wp.min(wp.abs(tp), 1.5707)
        xa = tp / 1.5707963 * float(grid_t.shape[1] - 1)
        ia = wp.min(int(xa), grid_t.shape[1] - 2)
        fa = xa - float(ia)
        row = wp.clamp(int(e + 0.5) - 1, 0, 159)
        gt = grid_t[row, ia] * (1.0 - fa) + grid_t[row, ia + 1] * fa
        extra = 1.0 / wp.max(cos_pol, 1.0e-6) - 1.0 / wp.max(wp.cos(tp), 1.0e-6)
        gt = gt * wp.exp(-grid_hmu[row] * wp.max(extra, 0.0))
    if scattered == 1:
        wp.atomic_add(scatter_img, iv, iu, w * sw)
        wp.atomic_add(scatter_grid, iv, iu, w * sw * gt)
        if src_label.shape[0] == height and pencil == 0:
            lab = src_label[wp.clamp(int(wp.floor(dv + 0.5)), 0, height - 1), wp.clamp(int(wp.floor(du + 0.5)), 0, width - 1)]
            if lab >= 0 and lab < scatter_by_src.shape[0]:
                wp.atomic_add(scatter_by_src, lab, iv, iu, w * sw)
        # reverse tally: scatter landing in a pixel within rev_radius of the principal point, binned by
        # the distance (mm) from its landing point to the detector point its photon was aimed at, and by
        # its polar angle to the focal ray; plus its energy spectrum
        if rev_radius > 0.0 and (float(iu) - cx) * (float(iu) - cx) + (float(iv) - cy) * (float(iv) - cy) <= rev_radius * rev_radius:
            ru = (du - u) * pitch_u
            rv = (dv - v) * pitch_v
            ir = int(wp.sqrt(ru * ru + rv * rv) / rev_r_step)
            pol = wp.acos(wp.clamp(cos_pol, -1.0, 1.0))
            it = int(0)
            for b in range(rev_theta_edges.shape[0] - 1):
                if pol >= rev_theta_edges[b + 1]:
                    it = b + 1
            it = wp.min(it, rev_hist.shape[1] - 1)
            if ir < rev_hist.shape[0]:
                wp.atomic_add(rev_hist, ir, it, w * sw)
            wp.atomic_add(rev_energy, it, wp.clamp(int(e / 4.0), 0, rev_energy.shape[1] - 1), w * sw)
    else:
        wp.atomic_add(primary_img, iv, iu, w * sw)
        wp.atomic_add(primary_grid, iv, iu, w * sw * gt)


#: Energy bin (keV) of the reverse tally's scatter spectra (``int(E / 4)`` in the kernel).
REVERSE_E_BIN_KEV = 4
#: Polar-angle bins (degrees, to the focal ray) of the reverse tally: fine where grids cut off (2-10 deg).
REVERSE_THETA_EDGES_DEG = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12.5, 15, 17.5, 20, 25, 30, 35, 40, 50, 60, 70, 80, 90)


@dataclass(frozen=True, eq=False)
class ReverseTally:
    """Scatter landing in the central disk, per source photon: ``hist[r, theta]`` by distance (mm, bins of
    ``r_step_mm``) from landing point to the detector point the photon was aimed at and by polar angle to
    the focal ray (``theta_edges_deg``); ``energy[b, k]``: the spectrum of the scatter in angle bin b, in
    bins of ``REVERSE_E_BIN_KEV`` (4k..4k+4 keV), since grids pass hard, forward scatter best;
    ``disk``: the (H, W) mask of the disk's pixels."""

    hist: np.ndarray
    energy: np.ndarray
    r_step_mm: float
    theta_edges_deg: np.ndarray
    disk: np.ndarray


@dataclass(frozen=True, eq=False)
class MCResult:
    """Monte Carlo tallies, signal per source photon per pixel (H, W).

    ``scatter_rel`` = scatter signal / expected flat-field signal (what the
    fast model predicts); ``primary_rel`` likewise (noisy check of Beer-Lambert).
    With a ``grid``, ``primary_grid``/``scatter_grid`` weight each photon by
    the grid's transmission for its energy and direction and ``flat_grid`` is
    the flat field behind the grid: ``scatter_rel_grid`` is what a
    flat-field-calibrated detector behind the grid sees.
    """

    primary: np.ndarray
    scatter: np.ndarray
    flat: np.ndarray
    n_photons: int
    reverse: ReverseTally | None = None
    primary_grid: np.ndarray | None = None
    scatter_grid: np.ndarray | None = None
    flat_grid: np.ndarray | None = None
    scatter_by_source: np.ndarray | None = None

    @property
    def scatter_rel(self) -> np.ndarray:
        return self.scatter / self.flat

    @property
    def primary_rel(self) -> np.ndarray:
        return self.primary / self.flat

    @property
    def scatter_rel_grid(self) -> np.ndarray:
        if self.scatter_grid is None:
            raise MonteCarloError("this run had no grid (simulate_scatter(..., grid=GridParams()))")
        return self.scatter_grid / self.flat_grid

    @property
    def primary_rel_grid(self) -> np.ndarray:
        if self.primary_grid is None:
            raise MonteCarloError("this run had no grid (simulate_scatter(..., grid=GridParams()))")
        return self.primary_grid / self.flat_grid


#: Photons per launch. Each chunk tallies into its own images, summed in chunk order: the result depends on
#: the seed only, not on how many CPU threads ran the chunks (a Warp CPU launch runs on one core, so its
#: atomic adds come in a fixed order and a CPU run is bit-identical for a given seed; on CUDA the order of
#: the float adds within a launch varies, so runs agree statistically, not bitwise).
CHUNK_PHOTONS = 1 << 18
#: Edge of the cells of the local majorants, mm (rounded to whole voxels): a free path is drawn with the
#: highest attenuation inside the photon's cell rather than the whole scene's (a metal screw or dense
#: cortical bone no longer slows the tracking through soft tissue and air).
CELL_MM = 12.0


def simulate_scatter(
    scene: VoxelScene,
    camera: Camera,
    sdd: float,
    spec: Spectrum,
    n_photons: int,
    rng: np.random.Generator,
    detector: DetectorParams = DetectorParams(),
    pencil_uv: tuple[float, float] | None = None,
    grid: GridParams | None = None,
    reverse_radius_px: float = 0.0,
    reverse_r_step_mm: float = 4.0,
    reverse_n_r: int = 100,
    reverse_theta_edges_deg=REVERSE_THETA_EDGES_DEG,
    source_regions: np.ndarray | None = None,
    aim: np.ndarray | None = None,
    device: str = "cpu",
    batch: int = CHUNK_PHOTONS,
) -> MCResult:
    """Transport ``n_photons`` from the camera's source through ``scene`` to its detector.

    ``grid``: also tally every photon weighted by the transmission of this
    (focused, linear) anti-scatter grid for its energy and direction.
    ``reverse_radius_px`` > 0: record the reverse tally (:class:`ReverseTally`)
    of scatter landing in pixels within that radius of the principal point.
    ``source_regions``: (H, W) integer image (0..n-1, -1 = none) of the pixels
    photons are aimed at; the scatter is then also tallied per region of origin
    (``MCResult.scatter_by_source``, (n, H, W)): which pencils a region's
    scatter comes from. ``aim``: the collimated field, a boolean image of the
    detector at any resolution (e.g. the full-resolution field of a binned
    camera): photons aimed where it is False never leave the tube (they still
    count in ``n_photons``, so the flat field stays that of the open beam).
    ``batch``: photons per launch (see :data:`CHUNK_PHOTONS`); on the CPU the
    launches run on every core (:func:`projectors.projector.cpu_threads`).
    """
    if camera.projection != "perspective":
        raise MonteCarloError("the Monte Carlo models a point source (perspective camera)")
    if not (sdd > 0 and np.isfinite(sdd)):
        raise MonteCarloError(f"source-detector distance must be > 0 mm, got {sdd}")
    if n_photons < 1:
        raise MonteCarloError(f"need at least one photon, got {n_photons}")
    if spec.energies.max() > E_MAX - 1:
        raise MonteCarloError(f"spectrum reaches {spec.energies.max()} keV; the tables stop at {E_MAX - 1} keV")
    if aim is not None:
        aim = np.asarray(aim)
        if aim.ndim != 2 or aim.size == 0:
            raise MonteCarloError(f"aim must be a 2-D image of the detector, got shape {aim.shape}")
    tabs = transport_tables(tuple(scene.materials))
    e = tabs["energies"]
    mu = tabs["mu"] * scene.scale[:, None, None]  # a material's density scaled = its attenuation scaled
    world_from_vol = scene.world_from_vol()
    vol_from_world = world_from_vol.inv()
    camera_from_vol = camera.camera_from_world @ world_from_vol
    src = vol_from_world.apply(camera.source_world)
    cell_vox = max(1, int(round(CELL_MM / float(scene.spacing.min()))))
    cell_rho = majorant_cells(scene, cell_vox)
    # spectrum inverse CDF on 1 keV energies
    cdf = np.cumsum(spec.fluence) / spec.fluence.sum()
    q = np.linspace(0, 1, 4097)
    icdf = spec.energies[np.minimum(np.searchsorted(cdf, q, side="left"), len(cdf) - 1)]
    sig_w = signal_weights(e, detector)
    K = camera.K
    H, W = camera.shape
    if grid is not None:
        gtab = direction_table(grid)
        grid_t, grid_hmu = gtab["T"], gtab["h_mu_i"]
    else:
        grid_t, grid_hmu = np.ones((E_MAX, 2)), np.zeros(E_MAX)
    theta_edges = np.deg2rad(np.asarray(reverse_theta_edges_deg, dtype=np.float64))
    n_theta = len(theta_edges) - 1
    if source_regions is not None:
        lab = np.asarray(source_regions)
        if lab.shape != (H, W):
            raise MonteCarloError(f"source_regions must be an (H, W) = {(H, W)} image, got {lab.shape}")
        n_src = max(int(lab.max()) + 1, 1)
    from projectors.projector import _run_parallel, cpu_threads, resolve_device

    device = resolve_device(device)  # initialises Warp the project's way (and checks the device)
    batch = max(1, int(batch))
    sizes = [min(batch, n_photons - k) for k in range(0, n_photons, batch)]
    seeds = [int(x) for x in rng.integers(0, 2**31 - 1, size=len(sizes))]
    shapes = {"prim": (H, W), "scat": (H, W), "prim_g": (H, W), "scat_g": (H, W),
              "rev_hist": (int(reverse_n_r), n_theta), "rev_energy": (n_theta, E_MAX // REVERSE_E_BIN_KEV),
              "by_src": (n_src, H, W) if source_regions is not None else (1, 1, 1)}
    total = {k: np.zeros(v) for k, v in shapes.items()}
    with wp.ScopedDevice(device):
        arrs = dict(
            density=wp.array(scene.density, dtype=wp.float32),
            material=wp.array(scene.material, dtype=wp.int32),
            mu=wp.array(mu.astype(np.float32), dtype=wp.float32),
            cell_rho=wp.array(cell_rho, dtype=wp.float32),
            kn=wp.array(tabs["kn"].astype(np.float32), dtype=wp.float32),
            ray=wp.array(tabs["rayleigh"].astype(np.float32), dtype=wp.float32),
            spec_icdf=wp.array(icdf.astype(np.float32), dtype=wp.float32),
            sig_w=wp.array(sig_w.astype(np.float32), dtype=wp.float32),
            aim=wp.array(aim.astype(np.int32) if aim is not None else np.ones((1, 1), np.int32), dtype=wp.int32),
            grid_t=wp.array(np.asarray(grid_t, np.float32), dtype=wp.float32),
            grid_hmu=wp.array(np.asarray(grid_hmu, np.float32), dtype=wp.float32),
            theta_edges=wp.array(theta_edges.astype(np.float32), dtype=wp.float32),
            src_label=wp.array(lab.astype(np.int32), dtype=wp.int32) if source_regions is not None
            else wp.zeros((1, 1), dtype=wp.int32),
        )
        pu, pv = pencil_uv if pencil_uv is not None else (0.0, 0.0)
        fixed = [
            arrs["density"], arrs["material"], wp.vec3(*scene.spacing.astype(np.float32)),
            arrs["mu"], arrs["cell_rho"], cell_vox, arrs["kn"], arrs["ray"], arrs["spec_icdf"], arrs["sig_w"],
            wp.vec3(*src.astype(np.float32)), wp.mat33(*camera_from_vol.R.astype(np.float32).ravel()),
            wp.vec3(*camera_from_vol.t.astype(np.float32)), wp.mat33(*camera_from_vol.R.T.astype(np.float32).ravel()),
            float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), float(sdd), W, H,
            int(pencil_uv is not None), float(pu), float(pv), int(aim is not None), arrs["aim"],
            int(grid is not None), arrs["grid_t"], arrs["grid_hmu"], int(grid is not None and grid.lamellae_along == "u"),
            float(reverse_radius_px), float(sdd / abs(K[0, 0])), float(sdd / abs(K[1, 1])), float(reverse_r_step_mm),
            arrs["theta_edges"],
        ]
        order = ("prim", "scat", "prim_g", "scat_g", "rev_hist", "rev_energy")
        wave = max(1, cpu_threads()) if device == "cpu" else 1
        for w0 in range(0, len(sizes), wave):
            chunks = range(w0, min(w0 + wave, len(sizes)))
            tallies = {c: {k: wp.zeros(shapes[k], dtype=wp.float32) for k in shapes} for c in chunks}

            def launch(c0, c1):
                for c in range(c0, c1):
                    t = tallies[c]
                    wp.launch(_transport, dim=sizes[c], device=device,
                              inputs=[seeds[c], *fixed, *(t[k] for k in order), arrs["src_label"], t["by_src"]])

            _run_parallel(launch, [(c, c + 1) for c in chunks], device)
            for c in chunks:  # in chunk order: the sum does not depend on which thread ran what
                for k in shapes:
                    total[k] += tallies[c][k].numpy()
    out = {k: v / n_photons for k, v in total.items()}
    reverse = None
    if reverse_radius_px > 0:
        v, u = np.mgrid[0:H, 0:W].astype(np.float64)
        disk = (u - K[0, 2]) ** 2 + (v - K[1, 2]) ** 2 <= reverse_radius_px**2
        reverse = ReverseTally(out["rev_hist"], out["rev_energy"], float(reverse_r_step_mm),
                               np.asarray(reverse_theta_edges_deg, dtype=np.float64), disk)
    # expected flat-field tally per source photon: field mode spreads photons uniformly over the
    # detector with weight cos^3, so a pixel expects cos^3 * <signal weight> / n_pixels.
    e_samples = np.interp(icdf, spec.energies, spec.energies)
    mean_sw = float(np.interp(e_samples, e, sig_w).mean())
    if pencil_uv is None:
        v, u = np.mgrid[0:H, 0:W].astype(np.float64)
        cos = 1.0 / np.sqrt(1 + ((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2)
        flat = cos**3 * mean_sw / (H * W)
    else:
        flat = np.full((H, W), mean_sw)  # the whole pencil lands in one pixel
    g = {}
    if grid is not None:
        # primary photons travel along the focal ray: the grid passes T_p(E) of them
        tp_sw = float((np.interp(e_samples, e, sig_w) * primary_transmission(grid, np.clip(np.round(e_samples), 1, E_MAX))).mean())
        g = dict(primary_grid=out["prim_g"], scatter_grid=out["scat_g"], flat_grid=flat * tp_sw / mean_sw)
    if source_regions is not None:
        g["scatter_by_source"] = out["by_src"]
    return MCResult(out["prim"], out["scat"], flat, int(n_photons), reverse, **g)


#: The scatter model ``"monte_carlo"`` (:func:`monte_carlo_scatter`) transports photons to a coarse
#: detector of about this many pixels along the image's short side (the camera binned by a whole factor),
#: smooths it with a Gaussian of :data:`MC_SMOOTH` coarse pixels and interpolates it to the image.
MC_COARSE_PX = 32
#: Sigma of that Gaussian, in coarse pixels of :data:`MC_COARSE_PX` (~14 mm on a 30 cm C-arm detector, ~20 mm
#: on a 43 cm one): scatter varies over centimetres (its kernels are 10-50 cm wide), the Monte Carlo's noise
#: from pixel to pixel. Measured on the bundled pelvis CT at the mobile C-arm (80 kV, 128 px image, 32 x 32
#: coarse pixels, scatter 0.4-0.8% of the flat field), 2 x 10^6 photons leave ~24% relative noise per coarse
#: pixel and ~5.5% after this smoothing (rms against a 1.6 x 10^7-photon run); the noise scales as
#: 1 / sqrt(photons), and thinner anatomy (a chest) sends more scatter to the detector and is less noisy.
MC_SMOOTH = 1.5


def coarse_factor(height: int, width: int) -> int:
    """The binning of :func:`monte_carlo_scatter`: the largest common divisor of ``height`` and ``width``
    not above ``min(height, width) / MC_COARSE_PX`` (1 for small images)."""
    target = max(1, min(height, width) // MC_COARSE_PX)
    g = math.gcd(int(height), int(width))
    return max(f for f in range(1, target + 1) if g % f == 0)


def monte_carlo_scatter(
    scene: VoxelScene,
    camera: Camera,
    sdd: float,
    spec: Spectrum,
    detector: DetectorParams,
    scatter: ScatterParams,
    field: np.ndarray | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """Scatter relative to the flat field (H, W), by Monte Carlo: the scatter model ``"monte_carlo"``.

    ``scatter.photons`` photons from ``numpy.random.default_rng(scatter.seed)`` through ``scene`` to the
    camera binned by :func:`coarse_factor` (about :data:`MC_COARSE_PX` pixels across); behind
    ``scatter.grid`` when there is one (``MCResult.scatter_rel_grid``: what a detector calibrated behind
    the grid sees); aimed only inside the collimated ``field`` (H, W) when given. The coarse image is
    smoothed (:data:`MC_SMOOTH`, which states the noise left) and interpolated bilinearly to (H, W).
    ``scatter.scale``, ``air_gap_mm`` and ``patient_thickness_mm`` are not used here (the geometry is
    the scene's; :func:`projectors.physics.simulate` applies the scale). Tools given as meshes are not in
    ``scene``: they block the primary (the projector) but are not transported; a tool of a few cm^3 of
    metal in a pelvis intercepts about 1% of the beam (the tool task's manipulator covers 0.4-1.6% of the
    detector), so its effect on the scatter is of that order.
    """
    from scipy import ndimage

    from .scatter_fast import upsample_blocks

    H, W = camera.shape
    f = coarse_factor(H, W)
    coarse = camera.binned(f)
    if field is not None:
        field = np.asarray(field, dtype=bool)
        if field.shape != (H, W):
            raise MonteCarloError(f"field must be the (H, W) = {(H, W)} collimated field, got {field.shape}")
        if not field.any():
            return np.zeros((H, W))
    res = simulate_scatter(scene, coarse, sdd, spec, int(scatter.photons), np.random.default_rng(scatter.seed),
                           detector=detector, grid=scatter.grid, aim=field, device=device)
    s = res.scatter_rel_grid if scatter.grid is not None else res.scatter_rel
    sigma = MC_SMOOTH * (min(H, W) / MC_COARSE_PX) / f  # the same detector area whatever the binning
    s = ndimage.gaussian_filter(s, sigma, mode="nearest")
    return upsample_blocks(s, H, W, f) if f > 1 else s


_CELL_CACHE: dict = {}


def majorant_cells(scene: VoxelScene, cell_vox: int) -> np.ndarray:
    """(cx, cy, cz, M) float32: the highest density (g/cm^3, before ``scene.scale``) of each material in each
    cell of ``cell_vox``^3 voxels (0 where the material is absent). Cached per scene arrays (a dataset
    transports many views of one subject)."""
    import weakref

    key = (id(scene.density), id(scene.material), int(cell_vox))
    hit = _CELL_CACHE.get(key)
    if hit is not None and hit[0]() is scene.density and hit[1]() is scene.material:
        return hit[2]
    c = int(cell_vox)
    shape = scene.density.shape
    padded = tuple(-(-n // c) * c for n in shape)
    pad = [(0, p - n) for n, p in zip(shape, padded)]
    dens = np.pad(scene.density, pad)
    mat = np.pad(scene.material, pad, constant_values=-1)
    cells = tuple(p // c for p in padded)
    out = np.zeros(cells + (len(scene.materials),), np.float32)
    for m in range(len(scene.materials)):
        blocks = np.where(mat == m, dens, 0.0).reshape(cells[0], c, cells[1], c, cells[2], c)
        out[..., m] = blocks.max(axis=(1, 3, 5))
    if len(_CELL_CACHE) > 8:
        _CELL_CACHE.clear()
    _CELL_CACHE[key] = (weakref.ref(scene.density), weakref.ref(scene.material), out)
    return out


def water_box_scene(thickness_mm: float, lateral_mm: float, voxel_mm: float = 5.0, center_world=(0.0, 0.0, 0.0), material: str = "water") -> VoxelScene:
    """A uniform slab (lateral x lateral x thickness, thickness along world y) for tests and calibration."""
    n_lat = max(1, int(round(lateral_mm / voxel_mm)))
    n_t = max(1, int(round(thickness_mm / voxel_mm)))
    shape = (n_lat, n_t, n_lat)
    sp = np.array([lateral_mm / n_lat, thickness_mm / n_t, lateral_mm / n_lat])
    origin = np.asarray(center_world, dtype=np.float64) - sp * (np.array(shape) - 1) / 2.0
    dens = np.full(shape, MATERIALS[material].density, dtype=np.float32)
    return VoxelScene(dens, np.zeros(shape, np.int32), (material,), Transform.from_rt(np.diag(sp), origin))

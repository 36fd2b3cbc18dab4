"""Anti-scatter grid: transmission of a focused linear lead grid by photon energy and direction.

A grid (:class:`~.params.GridParams`) is a stack of lead lamellae of
thickness ``d`` with interspaces of width ``D`` (period ``P = d + D`` = 1 /
line density) and height ``h = ratio * D``, focused on the X-ray source (every
lamella points at the focus, so primary rays cross it at the focal angle).
A photon crossing the grid at an angle ``theta_p`` to the focal direction, in
the plane across the lamellae, shifts sideways by ``s = h tan(theta_p)`` while
it crosses the height ``h``. Entering at a uniform random position ``x0`` in
one period, its path holds ``L(x0)`` (lateral length) of lead out of ``s``, and

    T(E, theta_p) = 1/P  int_0^P  exp(-h sec(theta_p) [mu_Pb(E) L(x0)/s + mu_i(E) (1 - L(x0)/s)]) dx0

(the geometric grid model of Day & Dance, Phys. Med. Biol. 28 (1983)
1429-1433, evaluated exactly: ``L`` is piecewise linear in ``x0``, so the
integral is a sum of closed-form exponential integrals). At ``theta_p = 0``
it reduces to ``T_p = (D/P) exp(-mu_i h) + (d/P) exp(-mu_Pb h)``. The
direction along the lamellae does not meet lead; it only lengthens the path
through the interspace, by ``exp(-mu_i h (sec(theta) - sec(theta_p)))`` for a
photon at polar angle ``theta`` to the focal direction. Covers, lamella
tilt errors and defocus are not modelled (the grid is focused at the source).

Everything here is pure numpy; the Monte Carlo looks the same table up per
photon (:mod:`.scatter_mc`) and the fast model averages it over the scatter's
directions (:mod:`.scatter_fast`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..materials import MATERIALS, Material, mass_attenuation, register_material
from .params import GridParams

# Lamella and interspace materials (registered once; an existing entry of the same name is kept).
for _m in (
    Material("lead", {"Pb": 1.0}, 11.35, "pure lead (grid lamellae)"),
    # paper / cotton-fibre interspace of general-radiography grids: cellulose (C6H10O5), bulk density ~0.9
    Material("grid_fiber", {"C": 0.444479, "H": 0.062162, "O": 0.493359}, 0.9, "cellulose fibre (grid interspace)"),
):
    if _m.name not in MATERIALS:
        register_material(_m)

INTERSPACE = {"fiber": "grid_fiber", "aluminium": "aluminium"}

#: The direction table: angles across the lamellae, uniform in theta_p from 0 to 90 degrees.
N_ANGLES = 721


def grid_geometry(grid: GridParams) -> dict[str, float]:
    """Period ``P``, lamella ``d``, interspace ``D`` and height ``h`` in mm."""
    P = 10.0 / grid.line_density
    d = grid.lamella_um / 1000.0
    D = P - d
    return {"P": P, "d": d, "D": D, "h": grid.ratio * D}


def _lead_cumulative(x, P, d):
    """Lateral length of lead in [0, x] for lamellae occupying [k P, k P + d)."""
    n = np.floor(x / P)
    return n * d + np.minimum(x - n * P, d)


def grid_transmission(grid: GridParams, energies_kev, tan_perp) -> np.ndarray:
    """T(E, theta_p): transmission of photons of energy E crossing the grid at ``tan(theta_p)`` across the
    lamellae (path along the lamellae not included; see :func:`interspace_mu`). Shape (len(E), len(tan))."""
    g = grid_geometry(grid)
    P, d, h = g["P"], g["d"], g["h"]
    e = np.atleast_1d(np.asarray(energies_kev, dtype=np.float64))
    t = np.abs(np.atleast_1d(np.asarray(tan_perp, dtype=np.float64)))
    mu_pb = mass_attenuation("lead", e) * MATERIALS["lead"].density / 10.0  # 1/mm
    mu_i = interspace_mu(grid, e)
    out = np.empty((len(e), len(t)))
    for j, tj in enumerate(t):
        sec = np.sqrt(1.0 + tj * tj)
        s = h * tj
        if s < 1e-9:
            out[:, j] = (P - d) / P * np.exp(-mu_i * h) + d / P * np.exp(-mu_pb * h)
            continue
        # L(x0) = C(x0 + s) - C(x0) is piecewise linear in x0 with kinks where x0 or x0 + s crosses a
        # lamella edge: integrate exp(-a - b L) exactly on each linear piece.
        br = np.unique(np.concatenate([[0.0, P], np.array([0.0, d]), np.mod(np.array([-s, d - s]), P)]))
        br = br[(br >= 0) & (br <= P)]
        a0, a1 = br[:-1], br[1:]
        L0 = _lead_cumulative(a0 + s, P, d) - _lead_cumulative(a0, P, d)
        L1 = _lead_cumulative(a1 + s, P, d) - _lead_cumulative(a1, P, d)
        # exponent: -h sec [mu_i + (mu_pb - mu_i) L / s]
        k = (h * sec / s) * (mu_pb - mu_i)[:, None]  # per unit lead length
        base = np.exp(-h * sec * mu_i)[:, None]
        dL = (L1 - L0)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            piece = np.where(
                np.abs(k * dL) > 1e-12,
                (a1 - a0)[None, :] * (np.exp(-k * L0[None, :]) - np.exp(-k * L1[None, :])) / (k * dL),
                (a1 - a0)[None, :] * np.exp(-k * L0[None, :]),
            )
        out[:, j] = base[:, 0] * piece.sum(axis=1) / P
    return out


def interspace_mu(grid: GridParams, energies_kev) -> np.ndarray:
    """Linear attenuation (1/mm) of the interspace material."""
    name = INTERSPACE[grid.interspace]
    return mass_attenuation(name, np.atleast_1d(np.asarray(energies_kev, dtype=np.float64))) * MATERIALS[name].density / 10.0


@lru_cache(maxsize=8)
def direction_table(grid: GridParams) -> dict[str, np.ndarray]:
    """T on 1 keV energies (1..160 keV) x ``N_ANGLES`` angles theta_p uniform in [0, 90] degrees
    (what the Monte Carlo interpolates per photon), and ``h * mu_interspace`` per energy."""
    e = np.arange(1, 161, dtype=np.float64)
    th = np.linspace(0.0, np.pi / 2 * (1 - 1e-9), N_ANGLES)
    T = grid_transmission(grid, e, np.tan(th))
    out = {"energies": e, "theta": th, "T": T, "h_mu_i": grid_geometry(grid)["h"] * interspace_mu(grid, e)}
    for v in out.values():
        v.setflags(write=False)
    return out


def transmission(grid: GridParams, energies_kev, cos_polar, tan_perp) -> np.ndarray:
    """Transmission of photons at polar angle ``acos(cos_polar)`` to the focal direction whose component
    across the lamellae is ``tan_perp`` (broadcast together with the energies along the first axis)."""
    tab = direction_table(grid)
    e = np.asarray(energies_kev, dtype=np.float64)
    th = np.arctan(np.abs(np.asarray(tan_perp, dtype=np.float64)))
    x = np.clip(th / tab["theta"][-1] * (N_ANGLES - 1), 0, N_ANGLES - 1)
    i0 = np.minimum(x.astype(int), N_ANGLES - 2)
    f = x - i0
    ie = np.clip(np.round(e).astype(int) - 1, 0, 159)
    T = tab["T"][ie, i0] * (1 - f) + tab["T"][ie, i0 + 1] * f
    sec = 1.0 / np.maximum(np.asarray(cos_polar, dtype=np.float64), 1e-6)
    sec_p = np.sqrt(1.0 + np.asarray(tan_perp, dtype=np.float64) ** 2)
    return T * np.exp(-tab["h_mu_i"][ie] * np.maximum(sec - sec_p, 0.0))


def primary_transmission(grid: GridParams, energies_kev) -> np.ndarray:
    """T_p(E): primary photons travel along the focal direction."""
    return grid_transmission(grid, energies_kev, [0.0])[:, 0]


def azimuthal_transmission(grid: GridParams, energies_kev, theta_edges_rad, n_sub: int = 8, n_phi: int = 64) -> np.ndarray:
    """Mean transmission over directions uniform in azimuth and in theta within each polar-angle bin:
    (len(E), n_bins). The scatter reaching a point comes from all azimuths around the focal direction,
    so its grid transmission depends on the polar angle only (lamellae orientation averages out)."""
    e = np.atleast_1d(np.asarray(energies_kev, dtype=np.float64))
    edges = np.asarray(theta_edges_rad, dtype=np.float64)
    out = np.empty((len(e), len(edges) - 1))
    phi = (np.arange(n_phi) + 0.5) / n_phi * 2 * np.pi
    for b in range(len(edges) - 1):
        # uniform in solid angle within the bin: cos(theta) uniform
        c = np.cos(edges[b]) + (np.arange(n_sub) + 0.5) / n_sub * (np.cos(edges[b + 1]) - np.cos(edges[b]))
        th = np.arccos(np.clip(c, 0.0, 1.0))
        tp = (np.tan(np.minimum(th, np.pi / 2 - 1e-6))[:, None] * np.cos(phi)[None, :]).ravel()
        cp = np.repeat(np.cos(th), n_phi)
        T = transmission(grid, e[:, None], cp[None, :], tp[None, :])
        out[:, b] = T.mean(axis=1)
    return out

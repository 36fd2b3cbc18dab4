"""Materials: compositions, mass attenuation, and the HU -> (material, density) model.

Two steps turn a CT voxel into X-ray attenuation:

1. **Density** from HU by a piecewise-linear calibration. The default,
   :data:`DEEPDRR_DENSITY`, is DeepDRR's two-line fit
   ``rho = max(min(0.001029 HU + 1.03, 0.0005886 HU + 1.03), 0)`` g/cm^3, so our
   renders agree with SyntheX's simulator for the same CT.
2. **Material** from HU by thresholds between materials ordered by HU
   (:data:`DEFAULT_HU_MATERIALS`). Each threshold is a linear ramp of width
   ``width`` HU: a voxel at the threshold is half one material and half the
   next, so interpolated samples near a boundary get fractional weights and
   edges are not staircased. A label map can instead assign materials (and
   optionally fixed densities) per label.

The projector accumulates *areal density per material* (g/cm^2); the physics
turns it into attenuation with each material's mass attenuation coefficient
mu/rho(E) (cm^2/g) from xraydb's Elam tables, mixed by mass fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class MaterialError(ValueError):
    """Unknown material or inconsistent material model."""


@dataclass(frozen=True)
class Material:
    name: str
    composition: dict[str, float]  # element symbol -> mass fraction (sums to 1)
    density: float  # nominal density, g/cm^3
    source: str = ""

    def __post_init__(self):
        total = sum(self.composition.values())
        if not np.isclose(total, 1.0, atol=2e-3):
            raise MaterialError(f"{self.name}: mass fractions sum to {total:.4f}, not 1")


#: mu/rho per (material, interaction) and energy (keV), filled on demand: spectra of different kVp and
#: filtration share their bin centres, so each randomized sample computes only new energies.
_MU_CACHE: dict[tuple[str, str], dict[float, float]] = {}
_MU_CACHE_MAX = 200_000  # energies per entry; beyond this (arbitrary float energies) start afresh


def _mass_attenuation_cached(name: str, energies: list[float], kind: str = "total") -> np.ndarray:
    """mu/rho (cm^2/g) of material ``name`` at ``energies`` (keV); ``kind``: xraydb's Elam interaction
    (``total``, ``photo``, ``incoh``, ``coh``)."""
    import xraydb

    cache = _MU_CACHE.setdefault((name, kind), {})
    missing = sorted({e for e in energies if e not in cache})
    if missing:
        if len(cache) + len(missing) > _MU_CACHE_MAX:
            cache.clear()
        e_ev = np.asarray(missing, dtype=np.float64) * 1000.0
        mu = np.zeros_like(e_ev)
        for el, frac in MATERIALS[name].composition.items():
            mu += frac * xraydb.mu_elam(el, e_ev, kind=kind)
        cache.update(zip(missing, mu.tolist()))
    return np.array([cache[e] for e in energies], dtype=np.float64)


# Mass fractions: ICRU Report 44 (1989) / NIST tissue compositions (as tabulated in
# NIST's "X-Ray Mass Attenuation Coefficients", Table 2); alloys: nominal grades.
MATERIALS: dict[str, Material] = {}


def register_material(material: Material) -> Material:
    """Add a material (or replace one of the same name) to the registry."""
    total = sum(material.composition.values())
    comp = {el: frac / total for el, frac in material.composition.items()}
    m = Material(material.name, comp, material.density, material.source)
    MATERIALS[m.name] = m
    for key in [k for k in _MU_CACHE if k[0] == m.name]:  # its coefficients may have changed
        del _MU_CACHE[key]
    return m


for _m in [
    Material("air", {"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827}, 0.001205, "NIST dry air (sea level)"),
    Material("water", {"H": 0.111894, "O": 0.888106}, 1.0, "NIST liquid water"),
    Material(
        "lung",
        {"H": 0.103, "C": 0.105, "N": 0.031, "O": 0.749, "Na": 0.002, "P": 0.002, "S": 0.003, "Cl": 0.003, "K": 0.002},
        1.05,
        "ICRU-44 lung tissue",
    ),
    Material(
        "adipose",
        {"H": 0.114, "C": 0.598, "N": 0.007, "O": 0.278, "Na": 0.001, "S": 0.001, "Cl": 0.001},
        0.95,
        "ICRU-44 adipose tissue",
    ),
    Material(
        "soft_tissue",
        {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.710, "Na": 0.001, "P": 0.002, "S": 0.003, "Cl": 0.001, "K": 0.004},
        1.05,
        "ICRU-44 skeletal muscle",
    ),
    Material(
        "bone_trabecular",
        {
            "H": 0.085, "C": 0.404, "N": 0.028, "O": 0.367, "Na": 0.001, "Mg": 0.001, "P": 0.034,
            "S": 0.002, "Cl": 0.002, "K": 0.001, "Ca": 0.074, "Fe": 0.001,
        },
        1.18,
        "ICRU-44 / White et al. 1987 cancellous bone (spongiosa)",
    ),
    Material(
        "bone_cortical",
        {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002, "P": 0.103, "S": 0.003, "Ca": 0.225},
        1.92,
        "ICRU-44 cortical bone",
    ),
    Material("titanium", {"Ti": 1.0}, 4.506, "pure titanium"),
]:
    register_material(_m)


def mass_attenuation(name: str, energy_kev) -> np.ndarray:
    """Total mass attenuation coefficient mu/rho (cm^2/g, coherent included) at ``energy_kev``."""
    if name not in MATERIALS:
        raise MaterialError(f"unknown material {name!r}; known: {', '.join(sorted(MATERIALS))}")
    e = np.atleast_1d(np.asarray(energy_kev, dtype=np.float64))
    if np.any(e < 1) or np.any(e > 500) or not np.all(np.isfinite(e)):
        raise MaterialError(f"energies must lie in 1..500 keV, got {e.min()}..{e.max()}")
    out = _mass_attenuation_cached(name, e.tolist())
    return out if np.ndim(energy_kev) else float(out[0])



@dataclass(frozen=True)
class DensityCalibration:
    """Piecewise-linear HU -> density (g/cm^3), extrapolated linearly past the last knot, >= 0."""

    hu: tuple[float, ...]
    density: tuple[float, ...]

    def __post_init__(self):
        if len(self.hu) != len(self.density) or len(self.hu) < 2:
            raise MaterialError("density calibration needs at least two (HU, density) knots of equal count")
        if np.any(np.diff(self.hu) <= 0):
            raise MaterialError(f"calibration HU knots must increase strictly, got {self.hu}")

    def __call__(self, hu) -> np.ndarray:
        x = np.asarray(hu, dtype=np.float64)
        k, d = np.asarray(self.hu), np.asarray(self.density)
        y = np.interp(x, k, d)
        hi = x > k[-1]
        slope = (d[-1] - d[-2]) / (k[-1] - k[-2])
        y = np.where(hi, d[-1] + slope * (x - k[-1]), y)
        lo = x < k[0]
        slope0 = (d[1] - d[0]) / (k[1] - k[0])
        y = np.where(lo, d[0] + slope0 * (x - k[0]), y)
        return np.maximum(y, 0.0)


#: DeepDRR's calibration: max(min(0.001029 HU + 1.03, 0.0005886 HU + 1.03), 0).
DEEPDRR_DENSITY = DensityCalibration(hu=(-1001.0, 0.0, 1000.0), density=(1.03 - 1001 * 0.001029, 1.03, 1.03 + 0.5886))


@dataclass(frozen=True)
class HUMaterialMap:
    """Materials ordered by HU with the thresholds between them.

    ``materials[i]`` holds for HU below ``thresholds[i]`` (and above the previous
    threshold); each threshold is a linear ramp ``width`` HU wide.
    """

    materials: tuple[str, ...]
    thresholds: tuple[float, ...]
    width: float = 60.0
    density: DensityCalibration = DEEPDRR_DENSITY

    def __post_init__(self):
        if len(self.thresholds) != len(self.materials) - 1:
            raise MaterialError("an HU material map needs exactly one threshold between each pair of materials")
        for m in self.materials:
            if m not in MATERIALS:
                raise MaterialError(f"unknown material {m!r} in HU material map; known: {', '.join(sorted(MATERIALS))}")
        th = np.asarray(self.thresholds, dtype=np.float64)
        if np.any(np.diff(th) <= self.width):
            raise MaterialError(
                f"HU thresholds {self.thresholds} must increase by more than the ramp width {self.width}"
            )
        if self.width < 0:
            raise MaterialError("ramp width must be >= 0")

    def material_coordinate(self, hu) -> np.ndarray:
        """Continuous material coordinate q: floor(q) is the lower material, q - floor(q) the upper's weight."""
        x = np.asarray(hu, dtype=np.float64)
        q = np.zeros_like(x)
        half = max(self.width / 2.0, 1e-6)
        for t in self.thresholds:
            q += np.clip((x - (t - half)) / (2 * half), 0.0, 1.0)
        return q

    def weights(self, hu) -> np.ndarray:
        """Material weights, shape (..., n_materials), summing to 1."""
        q = self.material_coordinate(hu)
        lo = np.minimum(np.floor(q).astype(int), len(self.materials) - 1)
        f = q - lo
        w = np.zeros(q.shape + (len(self.materials),))
        np.put_along_axis(w, lo[..., None], (1 - f)[..., None], axis=-1)
        hi = np.minimum(lo + 1, len(self.materials) - 1)
        w_hi = np.take_along_axis(w, hi[..., None], axis=-1) + f[..., None]
        np.put_along_axis(w, hi[..., None], w_hi, axis=-1)
        return w

    def lut(self, hu_min: float = -1024.0, hu_max: float = 4095.0) -> tuple[float, np.ndarray, np.ndarray]:
        """Table at 1 HU steps: (hu_min, density[n], material_coordinate[n]).

        Both functions are piecewise linear; with integer knots linear
        interpolation of this table is exact (thresholds +- width/2 are rounded
        to whole HU only if they are not whole already).
        """
        h = np.arange(hu_min, hu_max + 1.0, 1.0)
        return float(hu_min), self.density(h).astype(np.float32), self.material_coordinate(h).astype(np.float32)


#: Default HU thresholds (ours; documented in docs/physics.md): air | lung at -900 HU,
#: lung | adipose at -400, adipose | soft tissue at -30, soft tissue | trabecular
#: bone at 300 (DeepDRR uses 350 for soft tissue | bone), trabecular | cortical
#: bone at 1000, each a 60 HU ramp (weights above are fractional inside the ramp).
DEFAULT_HU_MATERIALS = HUMaterialMap(
    materials=("air", "lung", "adipose", "soft_tissue", "bone_trabecular", "bone_cortical"),
    thresholds=(-900.0, -400.0, -30.0, 300.0, 1000.0),
)


@dataclass(frozen=True)
class LabelMaterial:
    """Material (and optionally a fixed density, g/cm^3) for voxels of one label."""

    material: str
    density: float | None = None

    def __post_init__(self):
        if self.material not in MATERIALS:
            raise MaterialError(f"unknown material {self.material!r}; known: {', '.join(sorted(MATERIALS))}")
        if self.density is not None and not (self.density >= 0 and np.isfinite(self.density)):
            raise MaterialError(f"label density must be >= 0 g/cm^3, got {self.density}")


@dataclass(frozen=True)
class MaterialModel:
    """How one volume's voxels become material areal densities.

    ``hu_map`` assigns materials and densities from HU; ``label_materials``
    overrides the material (and, if given, the density) of voxels whose label
    is listed. Path lengths are reported for every named label of the volume
    (``Volume.label_names``), whatever its material.
    """

    hu_map: HUMaterialMap = DEFAULT_HU_MATERIALS
    label_materials: dict[int, LabelMaterial] = field(default_factory=dict)


# -- more materials --------------------------------------------------------------
# Tissues: ICRU Report 44 / NIST (mass fractions). Iodine contrast: blood with a
# given iodine concentration (mg I per mL) mixed by mass. Metals: nominal alloy
# grades (ASTM F138 316L stainless steel, ASTM F2063 NiTi, ASTM F75 Co-Cr-Mo, ASTM F136 Ti-6Al-4V);
# lead for collimator blades.
for _m in [
    Material(
        "muscle",
        {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.710, "Na": 0.001, "P": 0.002, "S": 0.003, "Cl": 0.001, "K": 0.004},
        1.05,
        "ICRU-44 skeletal muscle",
    ),
    Material(
        "blood",
        {"H": 0.102, "C": 0.110, "N": 0.033, "O": 0.745, "Na": 0.001, "P": 0.001, "S": 0.002, "Cl": 0.003, "K": 0.002, "Fe": 0.001},
        1.06,
        "ICRU-44 blood (whole)",
    ),
    Material("aluminium", {"Al": 1.0}, 2.699, "pure aluminium"),
    Material("iron", {"Fe": 1.0}, 7.874, "pure iron"),
    Material("copper", {"Cu": 1.0}, 8.96, "pure copper"),
    Material(
        "stainless_steel",
        {"Fe": 0.6445, "Cr": 0.18, "Ni": 0.14, "Mo": 0.025, "Mn": 0.01, "C": 0.0005},
        8.0,
        "316L stainless steel, ASTM F138 nominal",
    ),
    Material("nitinol", {"Ni": 0.55, "Ti": 0.45}, 6.45, "NiTi, ASTM F2063 nominal (55 wt% Ni)"),
    Material("cocr", {"Co": 0.64, "Cr": 0.28, "Mo": 0.06, "Ni": 0.005, "Fe": 0.0075, "Mn": 0.0075}, 8.3, "Co-Cr-Mo, ASTM F75 nominal"),
    Material("csi", {"Cs": 0.511549, "I": 0.488451}, 4.51, "caesium iodide (scintillator)"),
    Material("lead", {"Pb": 1.0}, 11.35, "pure lead (collimator blades)"),
    Material("titanium_alloy", {"Ti": 0.90, "Al": 0.06, "V": 0.04}, 4.43, "Ti-6Al-4V, ASTM F136 nominal"),
    Material("pmma", {"H": 0.080538, "C": 0.599848, "O": 0.319614}, 1.19, "NIST PMMA (Lucite)"),
]:
    register_material(_m)


def iodine_contrast(mg_per_ml: float = 10.0, name: str | None = None) -> Material:
    """Register and return blood with ``mg_per_ml`` of iodine (a contrast-filled vessel).

    Mass fraction of iodine = c / rho_mix with rho_mix = rho_blood + c (mL of
    blood displaced by the agent is neglected, < 1% for c <= 20 mg/mL).
    """
    if not (0 < mg_per_ml <= 400):
        raise MaterialError(f"iodine concentration must lie in (0, 400] mg/mL, got {mg_per_ml}")
    blood = MATERIALS["blood"]
    rho = blood.density + mg_per_ml / 1000.0
    w_i = (mg_per_ml / 1000.0) / rho
    comp = {el: f * (1 - w_i) for el, f in blood.composition.items()}
    comp["I"] = comp.get("I", 0.0) + w_i
    return register_material(Material(name or f"iodine_{mg_per_ml:g}mgml", comp, rho, f"blood + {mg_per_ml:g} mg/mL iodine"))


iodine_contrast(10.0, "iodine_contrast")

#: Interaction kinds of :func:`mass_attenuation_components` (xraydb Elam names).
INTERACTIONS = {"photoelectric": "photo", "compton": "incoh", "rayleigh": "coh"}


def mass_attenuation_components(name: str, energy_kev) -> dict[str, np.ndarray]:
    """mu/rho (cm^2/g) by interaction: ``photoelectric``, ``compton`` (incoherent), ``rayleigh`` (coherent)."""
    mass_attenuation(name, energy_kev)  # validates name and energies
    e = np.atleast_1d(np.asarray(energy_kev, dtype=np.float64))
    return {k: _mass_attenuation_cached(name, e.tolist(), kind) for k, kind in INTERACTIONS.items()}


@dataclass(frozen=True, eq=False)
class AttenuationTable:
    """mu/rho of several materials on one energy grid: ``mu[m, e]`` cm^2/g for ``materials[m]`` at ``energies[e]`` keV."""

    materials: tuple[str, ...]
    energies: np.ndarray
    mu: np.ndarray

    def index(self, name: str) -> int:
        if name not in self.materials:
            raise MaterialError(f"material {name!r} is not in this attenuation table ({', '.join(self.materials)})")
        return self.materials.index(name)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.mu[self.index(name)]


def attenuation_table(materials, energy_kev) -> AttenuationTable:
    """Precompute total mu/rho for ``materials`` (names) on the energy grid ``energy_kev``."""
    names = tuple(materials)
    e = np.asarray(energy_kev, dtype=np.float64)
    mu = np.stack([np.atleast_1d(mass_attenuation(n, e)) for n in names]) if names else np.zeros((0, len(e)))
    return AttenuationTable(names, e, mu)

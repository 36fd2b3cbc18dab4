"""X-ray tube spectra from SpekPy, binned and cached.

A :class:`SpectrumParams` (kVp, anode material and angle, filtration, bin
width, position along the anode-cathode axis) fully names a spectrum.
:func:`spectrum` computes it with SpekPy (Poludniowski et al., Phys. Med.
Biol. 66 (2021) 175006, "SpekPy v2.0"): photons per cm^2 per mAs at 1 m from
the focal spot, per energy bin.

SpekPy's tube model takes about 0.2-0.5 s per kVp and anode angle; everything
else (filtration, off-axis position) is cheap and exact given the unfiltered
spectra. So each tube becomes a :class:`TubeTable` (unfiltered spectra on an
off-axis grid and SpekPy's attenuation of each filter material), kept in memory
and, by default, on disk as ``.npz`` files keyed by a hash of the tube
(:func:`default_cache_dir`); a spectrum is its tube's table filtered
(:func:`compute_spectrum`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np


class SpectrumError(ValueError):
    """Impossible spectrum parameters (kVp, filtration, bin width)."""


#: Filter materials SpekPy knows by these names (mm thickness).
FILTER_MATERIALS = ("Al", "Cu", "Be", "Sn", "Ti", "Mo", "Ag", "Air")
TARGETS = ("W", "Mo", "Rh")


@dataclass(frozen=True)
class SpectrumParams:
    """Tube settings naming one spectrum.

    ``filtration``: total filtration as (material, mm) pairs, inherent plus
    added (e.g. ``(("Al", 3.0), ("Cu", 0.1))``). ``off_axis_mm``: position
    along the anode-cathode axis at 1 m from the focus (SpekPy's ``x``,
    positive towards the cathode), used for the heel effect.
    """

    kvp: float = 80.0
    anode_angle: float = 12.0
    target: str = "W"
    filtration: tuple[tuple[str, float], ...] = (("Al", 3.0),)
    bin_kev: float = 1.0
    off_axis_mm: float = 0.0

    def __post_init__(self):
        filt = tuple((str(m), float(t)) for m, t in (self.filtration.items() if isinstance(self.filtration, dict) else self.filtration))
        object.__setattr__(self, "filtration", filt)
        if not (20.0 <= self.kvp <= 150.0) or not np.isfinite(self.kvp):
            raise SpectrumError(f"kVp must lie in 20..150 (SpekPy's range for a W anode), got {self.kvp}")
        if not (5.0 <= self.anode_angle <= 30.0):
            raise SpectrumError(f"anode angle must lie in 5..30 degrees, got {self.anode_angle}")
        if self.target not in TARGETS:
            raise SpectrumError(f"anode target must be one of {TARGETS}, got {self.target!r}")
        for m, t in filt:
            if m not in FILTER_MATERIALS:
                raise SpectrumError(f"unknown filter material {m!r}; known: {', '.join(FILTER_MATERIALS)}")
            if not (t >= 0 and np.isfinite(t)):
                raise SpectrumError(f"filter thickness must be >= 0 mm, got {m}={t}")
        if not (0.1 <= self.bin_kev <= 5.0):
            raise SpectrumError(f"bin width must lie in 0.1..5 keV, got {self.bin_kev}")
        if abs(self.off_axis_mm) > 400:
            raise SpectrumError(f"off-axis position must lie within +-400 mm at 1 m, got {self.off_axis_mm}")

    def key(self) -> str:
        """Stable hash of the parameters (the on-disk cache key)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["filtration"] = [list(p) for p in self.filtration]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SpectrumParams":
        d = dict(d)
        d["filtration"] = tuple(tuple(p) for p in d.get("filtration", ()))
        return cls(**d)


@dataclass(frozen=True, eq=False)
class Spectrum:
    """A binned spectrum: ``fluence[i]`` photons / cm^2 / mAs at 1 m in the bin centred on ``energies[i]`` keV."""

    energies: np.ndarray
    fluence: np.ndarray
    params: SpectrumParams = field(default_factory=SpectrumParams)

    def __post_init__(self):
        e = np.asarray(self.energies, dtype=np.float64)
        f = np.asarray(self.fluence, dtype=np.float64)
        if e.ndim != 1 or e.shape != f.shape or len(e) < 2:
            raise SpectrumError("a spectrum needs 1-D energies and fluence of equal length >= 2")
        if np.any(f < 0) or not np.all(np.isfinite(f)) or f.sum() <= 0:
            raise SpectrumError("spectrum fluence must be finite, >= 0 and not all zero")
        object.__setattr__(self, "energies", e)
        object.__setattr__(self, "fluence", f)

    @property
    def total_fluence(self) -> float:
        """Photons / cm^2 / mAs at 1 m."""
        return float(self.fluence.sum())

    @property
    def mean_energy(self) -> float:
        """Fluence-weighted mean photon energy, keV."""
        return float((self.energies * self.fluence).sum() / self.fluence.sum())

    def normalized(self) -> np.ndarray:
        return self.fluence / self.fluence.sum()

    def filtered(self, material: str, thickness_mm: float) -> "Spectrum":
        """This spectrum behind ``thickness_mm`` of a registered material (our attenuation data)."""
        from ..materials import MATERIALS, mass_attenuation

        mu = mass_attenuation(material, self.energies) * MATERIALS[material].density
        return Spectrum(self.energies, self.fluence * np.exp(-mu * thickness_mm / 10.0), self.params)


def compute_spectrum(params: SpectrumParams, cache_dir: str | os.PathLike | None | bool = False) -> Spectrum:
    """The spectrum for ``params`` from its tube's table (pure; ``cache_dir`` as in :func:`spectrum`)."""
    table = tube_table(params.kvp, params.anode_angle, params.target, params.bin_kev, cache_dir)
    f = table.filtered(params.filtration, np.array([params.off_axis_mm]))[0]
    # Drop bins that the filtration has emptied (SpekPy returns ~1e-100 there) and any below 1 keV.
    keep = (f > 1e-9 * f.max()) & (table.energies >= 1.0)
    return Spectrum(table.energies[keep], f[keep], params)


# -- tube tables -------------------------------------------------------------------
#
# SpekPy's expensive step is the tube model (~0.2 s per kVp and anode angle); filtering and reading a
# spectrum at an off-axis position cost well under a millisecond. SpekPy's filtration is exactly
# exp(-mu(E) t / cos(theta)) on the unfiltered spectrum at that position (theta: the ray's angle to the
# central axis; verified to 1e-13 in tests/test_physics_spectrum.py), so one table per tube (the
# unfiltered spectrum on an off-axis grid and each filter material's mu) gives every filtration and every
# position, and is small enough to keep on disk.

#: Off-axis positions of a tube table: mm at 1 m along the anode-cathode axis (SpekPy's x * 10).
TABLE_X_MM = np.arange(-400.0, 400.0 + 1e-9, 5.0)
_THIN_MM = 0.001  # filter thickness that measures SpekPy's mu without underflow (all 8 at 1 keV: ~exp(-40))


@dataclass(frozen=True, eq=False)
class TubeTable:
    """One tube's SpekPy output: ``fluence[i, k]`` unfiltered photons / cm^2 / mAs at 1 m (z) and
    ``x_mm[i]`` off axis, in the bin centred on ``energies[k]``; ``mu[m][k]``: filter material m's
    linear attenuation (1/mm) as SpekPy applies it."""

    energies: np.ndarray
    x_mm: np.ndarray
    fluence: np.ndarray
    mu: dict

    def unfiltered(self, x_mm: np.ndarray) -> np.ndarray:
        """(len(x_mm), E): the unfiltered spectra at ``x_mm``, linear between the table's positions."""
        x = np.clip(np.asarray(x_mm, dtype=np.float64), self.x_mm[0], self.x_mm[-1])
        t = (x - self.x_mm[0]) / (self.x_mm[1] - self.x_mm[0])
        i = np.minimum(t.astype(np.int64), len(self.x_mm) - 2)
        w = (t - i)[:, None]
        return self.fluence[i] * (1.0 - w) + self.fluence[i + 1] * w

    def filtered(self, filtration, x_mm: np.ndarray) -> np.ndarray:
        """(len(x_mm), E): the spectra behind ``filtration`` ((material, mm) pairs), each filter crossed
        obliquely (path t / cos theta) as SpekPy does."""
        x = np.asarray(x_mm, dtype=np.float64)
        mut = sum((self.mu[m] * t for m, t in filtration if t > 0), np.zeros_like(self.energies))
        oblique = np.sqrt(1.0 + (x / 1000.0) ** 2)[:, None]
        return self.unfiltered(x) * np.exp(-mut[None, :] * oblique)


def build_tube_table(kvp: float, anode_angle: float, target: str, bin_kev: float) -> TubeTable:
    """Run SpekPy for one tube (pure; ~0.3 s)."""
    import spekpy

    tube = spekpy.Spek(kvp=kvp, th=anode_angle, dk=bin_kev, targ=target)
    # Beyond x = -z tan(anode angle) the anode hides the focal spot: SpekPy gives zeros there (and a warning)
    lit_x = TABLE_X_MM > -1000.0 * np.tan(np.radians(anode_angle))
    rows = {i: tube.get_spectrum(diff=False, x=float(TABLE_X_MM[i]) / 10.0, y=0.0, z=100.0) for i in np.flatnonzero(lit_x)}
    energies = np.asarray(next(iter(rows.values()))[0], dtype=np.float64)
    fluence = np.zeros((len(TABLE_X_MM), len(energies)))
    for i, (_, f) in rows.items():
        fluence[i] = f
    # each material's mu from a thin layer added to the one before: the ratio of successive spectra
    mu = {}
    before = fluence[len(TABLE_X_MM) // 2]
    for m in FILTER_MATERIALS:
        tube.filter(m, _THIN_MM)
        after = np.asarray(tube.get_spectrum(diff=False, x=0.0, y=0.0, z=100.0)[1], dtype=np.float64)
        ok = (before > 0) & (after > 0)
        ratio = np.where(ok, after, 1.0) / np.where(ok, before, 1.0)
        mu[m] = np.where(ok, -np.log(ratio) / _THIN_MM, np.where(before > 0, np.inf, 0.0))  # emptied bin: opaque
        before = after
    return TubeTable(energies, TABLE_X_MM.copy(), fluence, mu)


def _table_key(kvp, anode_angle, target, bin_kev) -> str:
    blob = json.dumps({"kvp": float(kvp), "anode_angle": float(anode_angle), "target": target, "bin_kev": float(bin_kev),
                       "x_mm": [TABLE_X_MM[0], TABLE_X_MM[-1], len(TABLE_X_MM)], "spekpy": _spekpy_version()})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@lru_cache(maxsize=1)
def _spekpy_version() -> str:
    from importlib.metadata import version

    return version("spekpy")


@lru_cache(maxsize=64)
def _tube_table_cached(kvp: float, anode_angle: float, target: str, bin_kev: float, cache_dir: str | None) -> TubeTable:
    path = Path(cache_dir) / f"tube-{_table_key(kvp, anode_angle, target, bin_kev)}.npz" if cache_dir else None
    if path is not None and path.exists():
        try:
            with np.load(path) as z:
                return TubeTable(z["energies"], z["x_mm"], z["fluence"], {m: z[f"mu_{m}"] for m in FILTER_MATERIALS})
        except (OSError, ValueError, KeyError):
            pass  # corrupt or from an older layout: rebuilt below
    table = build_tube_table(kvp, anode_angle, target, bin_kev)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, energies=table.energies, x_mm=table.x_mm, fluence=table.fluence,
                     **{f"mu_{m}": v for m, v in table.mu.items()})
            os.replace(tmp, path)
        except OSError:
            pass  # read-only home: the memory cache still works
    return table


def tube_table(kvp: float, anode_angle: float, target: str = "W", bin_kev: float = 1.0,
               cache_dir: str | os.PathLike | None | bool = True) -> TubeTable:
    """The :class:`TubeTable` of one tube, from memory, the on-disk cache (``cache_dir=True``:
    :func:`default_cache_dir`; ``False``/``None``: memory only) or SpekPy. A corrupt file is rebuilt."""
    return _tube_table_cached(float(kvp), float(anode_angle), str(target), float(bin_kev), _cache_dir(cache_dir))


@lru_cache(maxsize=256)
def _spek_model(kvp: float, th: float, targ: str, dk: float, filtration: tuple):
    """SpekPy's own model of a filtered tube: the independent reference the tests compare with."""
    import spekpy

    s = spekpy.Spek(kvp=kvp, th=th, dk=dk, targ=targ)
    for m, t in filtration:
        if t > 0:
            s.filter(m, t)
    return s


def spekpy_reference(params: SpectrumParams) -> dict:
    """SpekPy's own figures for ``params``: mean energy (keV), first HVL (mm Al, air kerma), fluence."""
    s = _spek_model(float(params.kvp), float(params.anode_angle), params.target, float(params.bin_kev), tuple(params.filtration))
    kw = dict(x=params.off_axis_mm / 10.0, y=0.0, z=100.0)
    return {"mean_energy": float(s.get_emean(**kw)), "hvl1_al_mm": float(s.get_hvl1("Al", **kw)), "fluence": float(s.get_flu(**kw))}


def default_cache_dir() -> Path:
    """``$SYNTHEX_CACHE/spectra`` or ``~/.cache/synthex/spectra``."""
    root = os.environ.get("SYNTHEX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "synthex")
    return Path(root) / "spectra"


def _cache_dir(cache_dir: str | os.PathLike | None | bool) -> str | None:
    """The tube-table folder a ``cache_dir`` argument names (True: :func:`default_cache_dir`), None for none."""
    return str(default_cache_dir() if cache_dir is True else cache_dir) if cache_dir else None


@lru_cache(maxsize=1024)
def _spectrum_cached(params: SpectrumParams, cache_dir: str | None) -> Spectrum:
    return compute_spectrum(params, cache_dir)


def spectrum(params: SpectrumParams | None = None, cache_dir: str | os.PathLike | None | bool = True) -> Spectrum:
    """The spectrum for ``params``: its tube's table (memory, the on-disk cache, or SpekPy) filtered.

    ``cache_dir=True`` keeps tube tables in :func:`default_cache_dir`; ``False``/``None`` disables the
    disk cache (memory only).
    """
    params = params or SpectrumParams()
    return _spectrum_cached(params, _cache_dir(cache_dir))


#: Named tube settings. Inherent filtration of a tube housing is ~1-2.5 mm Al
#: equivalent; the totals below follow IEC 60601-1-3 (>= 2.5 mm Al total above
#: 70 kV) and common vendor defaults.
PRESETS: dict[str, SpectrumParams] = {
    "carm_60kv": SpectrumParams(kvp=60, anode_angle=10, filtration=(("Al", 3.0), ("Cu", 0.1))),
    "carm_80kv": SpectrumParams(kvp=80, anode_angle=10, filtration=(("Al", 3.0), ("Cu", 0.1))),
    "carm_110kv": SpectrumParams(kvp=110, anode_angle=10, filtration=(("Al", 3.0), ("Cu", 0.2))),
    "pelvis_ap": SpectrumParams(kvp=80, anode_angle=12, filtration=(("Al", 2.5),)),
    "chest_pa": SpectrumParams(kvp=120, anode_angle=12, filtration=(("Al", 3.0), ("Cu", 0.1))),
    "chest_pa_low": SpectrumParams(kvp=90, anode_angle=12, filtration=(("Al", 2.5),)),
    "rqr5": SpectrumParams(kvp=70, anode_angle=12, filtration=(("Al", 2.5),)),
}


def preset(name: str) -> SpectrumParams:
    if name not in PRESETS:
        raise SpectrumError(f"unknown spectrum preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


# -- beam quality ------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _kn_transfer_at(e: float, n: int) -> float:
    c = np.linspace(-1.0, 1.0, n)
    P = 1.0 / (1.0 + e / 510.99895 * (1.0 - c))
    ds = P * P * (P + 1.0 / P - (1.0 - c * c))
    return float(np.trapezoid(ds * (1.0 - P), c) / np.trapezoid(ds, c))


def _kn_energy_transfer_fraction(e_kev: np.ndarray, n: int = 2001) -> np.ndarray:
    """Mean fraction of the photon energy given to the electron in a Klein-Nishina Compton event
    (per energy, remembered: spectra share their bin centres)."""
    return np.array([_kn_transfer_at(float(e), n) for e in np.atleast_1d(e_kev)])


def air_kerma_weights(energies_kev) -> np.ndarray:
    """E * mu_en/rho of air (keV cm^2/g) per photon: air kerma per unit fluence, up to a constant.

    mu_en is approximated by mu_photo + mu_incoh * <T/E>_KN (photoelectric
    energy fully absorbed; Compton electron energy from Klein-Nishina;
    fluorescence and bremsstrahlung losses in air are < 0.5% here).
    """
    from ..materials import mass_attenuation_components

    e = np.asarray(energies_kev, dtype=np.float64)
    comp = mass_attenuation_components("air", e)
    mu_en = comp["photoelectric"] + comp["compton"] * _kn_energy_transfer_fraction(e)
    return e * mu_en


def half_value_layer(spec: Spectrum, material: str = "aluminium") -> float:
    """First half-value layer (mm of ``material``) for air kerma, by bisection."""
    from ..materials import MATERIALS, mass_attenuation

    k = spec.fluence * air_kerma_weights(spec.energies)
    mu = mass_attenuation(material, spec.energies) * MATERIALS[material].density / 10.0  # 1/mm

    def frac(t):
        return (k * np.exp(-mu * t)).sum() / k.sum()

    lo, hi = 0.0, 1.0
    while frac(hi) > 0.5:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if frac(mid) > 0.5 else (lo, mid)
    return 0.5 * (lo + hi)

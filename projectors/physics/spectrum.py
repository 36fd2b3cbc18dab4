"""X-ray tube spectra from SpekPy, binned and cached.

A :class:`SpectrumParams` (kVp, anode material and angle, filtration, bin
width, position along the anode-cathode axis) fully names a spectrum.
:func:`spectrum` computes it with SpekPy (Poludniowski et al., Phys. Med.
Biol. 66 (2021) 175006, "SpekPy v2.0"): photons per cm^2 per mAs at 1 m from
the focal spot, per energy bin.

SpekPy's first call for a kVp and anode angle takes about half a second, so
spectra are cached in memory and, when :func:`spectrum` is given a
``cache_dir`` (the default for the public entry point), on disk as ``.npz``
files keyed by a hash of the parameters. The cache is a plain wrapper around
the pure computation (:func:`compute_spectrum`).
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


def compute_spectrum(params: SpectrumParams) -> Spectrum:
    """Run SpekPy for ``params`` (pure; no caching)."""
    k, f = _spekpy_spectrum(params.kvp, params.anode_angle, params.target, params.filtration, params.bin_kev, params.off_axis_mm)
    # Drop bins that the filtration has emptied (SpekPy returns ~1e-100 there) and any below 1 keV.
    keep = (f > 1e-9 * f.max()) & (k >= 1.0)
    k, f = k[keep], f[keep]
    return Spectrum(k, f, params)


@lru_cache(maxsize=256)
def _spek_tube(kvp: float, th: float, targ: str, dk: float):
    """The unfiltered SpekPy tube model: the expensive part (~0.2 s), shared by every filtration."""
    import spekpy

    return spekpy.Spek(kvp=kvp, th=th, dk=dk, targ=targ)


@lru_cache(maxsize=64)
def _spek_model(kvp: float, th: float, targ: str, dk: float, filtration: tuple):
    # SpekPy applies filters multiplicatively to a copy of the tube model: identical to building it anew
    s = copy.deepcopy(_spek_tube(kvp, th, targ, dk))
    for m, t in filtration:
        if t > 0:
            s.filter(m, t)
    return s


def _spekpy_spectrum(kvp, th, targ, filtration, dk, x):
    s = _spek_model(float(kvp), float(th), targ, float(dk), tuple(filtration))
    k, f = s.get_spectrum(diff=False, x=float(x) / 10.0, y=0.0, z=100.0)
    return np.asarray(k, dtype=np.float64), np.asarray(f, dtype=np.float64)


def spekpy_reference(params: SpectrumParams) -> dict:
    """SpekPy's own figures for ``params``: mean energy (keV), first HVL (mm Al, air kerma), fluence."""
    s = _spek_model(float(params.kvp), float(params.anode_angle), params.target, float(params.bin_kev), tuple(params.filtration))
    kw = dict(x=params.off_axis_mm / 10.0, y=0.0, z=100.0)
    return {"mean_energy": float(s.get_emean(**kw)), "hvl1_al_mm": float(s.get_hvl1("Al", **kw)), "fluence": float(s.get_flu(**kw))}


def default_cache_dir() -> Path:
    """``$SYNTHEX_CACHE/spectra`` or ``~/.cache/synthex/spectra``."""
    root = os.environ.get("SYNTHEX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "synthex")
    return Path(root) / "spectra"


_MEMORY: dict[str, Spectrum] = {}


def spectrum(params: SpectrumParams | None = None, cache_dir: str | os.PathLike | None | bool = True) -> Spectrum:
    """The spectrum for ``params``, from memory, the on-disk cache, or SpekPy.

    ``cache_dir=True`` uses :func:`default_cache_dir`; ``False``/``None``
    disables the disk cache (memory only). A corrupt cache file is recomputed.
    """
    params = params or SpectrumParams()
    key = params.key()
    if key in _MEMORY:
        return _MEMORY[key]
    path = None
    if cache_dir:
        path = (default_cache_dir() if cache_dir is True else Path(cache_dir)) / f"{key}.npz"
        if path.exists():
            try:
                with np.load(path) as z:
                    spec = Spectrum(z["energies"], z["fluence"], params)
                _MEMORY[key] = spec
                return spec
            except (OSError, ValueError, KeyError):
                pass
    spec = compute_spectrum(params)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, energies=spec.energies, fluence=spec.fluence, params=json.dumps(params.to_dict()))
            os.replace(tmp, path)
        except OSError:
            pass  # read-only home: the memory cache still works
    _MEMORY[key] = spec
    return spec


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


def _kn_energy_transfer_fraction(e_kev: np.ndarray, n: int = 2001) -> np.ndarray:
    """Mean fraction of the photon energy given to the electron in a Klein-Nishina Compton event."""
    c = np.linspace(-1.0, 1.0, n)
    out = np.empty(len(e_kev))
    for i, e in enumerate(np.atleast_1d(e_kev)):
        P = 1.0 / (1.0 + e / 510.99895 * (1.0 - c))
        ds = P * P * (P + 1.0 / P - (1.0 - c * c))
        out[i] = np.trapezoid(ds * (1.0 - P), c) / np.trapezoid(ds, c)
    return out


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

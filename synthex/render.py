"""``sx.render``: one call from a CT (or scene) and a camera to a labelled X-ray image."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from projectors.geometry import Camera
from projectors.materials import mass_attenuation
from projectors.projector import Projection, Projector


@dataclass
class RenderResult:
    """Everything one view produced. Images are (H, W) float32 arrays."""

    areal_density: dict[str, np.ndarray]  # material -> g/cm^2
    path_length: dict[str, np.ndarray]  # structure -> mm
    transmission: np.ndarray  # detector signal / flat-field signal, in (0, 1]
    image: np.ndarray  # processed image as shown to a model, in [0, 1]
    camera: Camera
    params: dict = field(default_factory=dict)

    @property
    def line_integral(self) -> np.ndarray:
        """-log(transmission): the attenuation line integral a scanner reconstructs from."""
        return -np.log(np.clip(self.transmission, 1e-30, None))


def monochromatic_transmission(areal_density: dict[str, np.ndarray], energy_kev: float) -> np.ndarray:
    """Beer-Lambert at one energy: ``exp(-sum_m (mu/rho)_m(E) A_m)``."""
    total = None
    for material, a in areal_density.items():
        term = mass_attenuation(material, energy_kev) * a.astype(np.float64)
        total = term if total is None else total + term
    return np.exp(-total).astype(np.float32)


def display_image(line_integral: np.ndarray) -> np.ndarray:
    """Line integral scaled to [0, 1] by its 0.5-99.5 percentile window (bone bright, air dark)."""
    lo, hi = np.percentile(line_integral, [0.5, 99.5])
    if hi <= lo:
        return np.zeros_like(line_integral, dtype=np.float32)
    return np.clip((line_integral - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def render(
    scene,
    camera: Camera,
    energy_kev: float = 60.0,
    mode: str = "exact",
    step: float | None = None,
    device: str = "auto",
    projector: Projector | None = None,
) -> RenderResult:
    """Render a volume (or a list of volumes) seen by ``camera``.

    Returns per-material areal densities, per-structure path lengths and a
    monochromatic transmission at ``energy_kev`` (the full spectral physics
    with noise and scatter builds on the same areal densities). Pass a prepared
    ``projector`` to render many views without re-uploading the volumes.
    """
    if not (np.isfinite(energy_kev) and 1.0 <= energy_kev <= 500.0):
        raise ValueError(f"energy_kev must lie in 1..500 keV, got {energy_kev}")
    proj: Projection = (projector or Projector(scene, device=device, mode=mode, step=step)).project(camera)
    transmission = monochromatic_transmission(proj.areal_density, energy_kev)
    line = -np.log(np.clip(transmission, 1e-30, None))
    return RenderResult(
        areal_density=proj.areal_density,
        path_length=proj.path_length,
        transmission=transmission,
        image=display_image(line),
        camera=camera,
        params={"energy_kev": energy_kev, "mode": proj.mode, "step": proj.step},
    )

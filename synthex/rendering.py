"""``sx.render``: one call from a CT (or scene) and a camera to a physically simulated X-ray image.

Rays are cast once (per-material areal densities); the spectrum, dose,
scatter, noise, detector and display processing are cheap functions of those
(``projectors.physics.simulate``), so re-randomizing them never re-casts rays:
call ``render_from_projection`` with the same ``Projection`` and new parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from projectors.geometry import Camera
from projectors.physics import PhysicsParams, simulate
from projectors.projector import Projection, Projector

@dataclass
class RenderResult:
    """Everything one view produced. Images are (H, W) float32 arrays."""

    areal_density: dict[str, np.ndarray]  # material -> g/cm^2
    path_length: dict[str, np.ndarray]  # structure -> mm
    signal: np.ndarray  # detector signal with noise (keV deposited or photons counted)
    transmission: np.ndarray  # detector signal / flat-field signal, in (0, 1]
    log_image: np.ndarray  # -log(transmission): the attenuation line integral
    image: np.ndarray  # display-processed image as shown to a model, in [0, 1]
    primary: np.ndarray  # noise-free primary transmission
    scatter: np.ndarray  # noise-free scatter signal relative to the flat field
    camera: Camera
    params: dict = field(default_factory=dict)  # physics parameters (JSON-ready) + projector mode


def physics_params(physics: PhysicsParams | None = None, **options) -> PhysicsParams:
    """``physics`` (default: ``PhysicsParams()``) with the render keywords that were given (not None)."""
    given = {k: v for k, v in options.items() if v is not None}
    if not given:
        return physics or PhysicsParams()
    base = physics or PhysicsParams()
    # from_options resets scatter and noise to on unless given: keep the base's when not given
    given.setdefault("scatter", base.scatter)
    given.setdefault("noise", base.noise)
    return PhysicsParams.from_options(base=base, **given)


def render_from_projection(
    proj: Projection, params: PhysicsParams, rng: np.random.Generator | None = None, sdd: float | None = None,
    *, scene=None, device: str = "cpu",
) -> RenderResult:
    """Physics on an existing projection (no rays cast). ``scene`` and ``device``: the transport scene
    (``projectors.physics.scatter_mc.VoxelScene``) and Warp device of the ``"monte_carlo"`` scatter model."""
    cam = proj.camera
    res = simulate(proj.areal_density, cam, params, rng, sdd=sdd, scene=scene, device=device)
    return RenderResult(
        areal_density=proj.areal_density,
        path_length=proj.path_length,
        signal=res.signal,
        transmission=res.transmission,
        log_image=res.log_image,
        image=res.image,
        primary=res.primary,
        scatter=res.scatter,
        camera=cam,
        params={"physics": params.to_dict(), "projector": {"mode": proj.mode, "step": proj.step}},
    )


def render(
    scene,
    camera: Camera,
    *,
    kvp: float | None = None,
    filtration=None,
    mas: float | None = None,
    quanta_per_pixel: float | None = None,
    scatter=None,
    grid=None,
    noise: bool | None = None,
    detector=None,
    display=None,
    physics: PhysicsParams | None = None,
    rng: np.random.Generator | None = None,
    seed: int = 0,
    mode: str = "exact",
    step: float | None = None,
    device: str = "auto",
    projector: Projector | None = None,
) -> RenderResult:
    """Render a volume (or a list of volumes / ``SceneVolume``) seen by ``camera``.

    Physics keywords (``kvp``, ``filtration={"Al": 3.0, "Cu": 0.1}``, ``mas`` or
    ``quanta_per_pixel``, ``scatter`` True/False/"fast"/"monte_carlo"/"none", ``grid``,
    ``noise``, ``detector``, ``display``) override ``physics`` (default
    ``PhysicsParams()``: 80 kVp, fast scatter, quantum noise on). Noise is drawn
    from ``rng``, or from ``numpy.random.default_rng(seed)``. Calls in a loop over
    views of the same volume object reuse its prepared device data (the
    projector's cache, keyed on the volume object, material model and device;
    see ``projectors.projector``), so such a loop costs what
    ``Projector.project`` and the physics cost; an explicit ``projector`` works too.
    ``scatter="monte_carlo"`` transports ``physics.scatter.photons`` photons (seed
    ``physics.scatter.seed``) through the scene's one volume on the projector's device.
    """
    params = physics_params(
        physics, kvp=kvp, filtration=filtration, mas=mas, quanta_per_pixel=quanta_per_pixel, scatter=scatter,
        grid=grid, noise=noise, detector=detector, display=display,
    )
    projector = projector or Projector(scene, device=device, mode=mode, step=step)
    proj = projector.project(camera)
    transport = None
    if params.mode == "spectral" and params.scatter.model == "monte_carlo":
        from projectors.physics.scatter_mc import VoxelScene

        transport = VoxelScene.from_scene(projector.items)
    return render_from_projection(proj, params, rng if rng is not None else np.random.default_rng(seed),
                                  scene=transport, device=projector.device)

"""synthex: a physics-based synthetic X-ray data engine.

Public API (see the docs, "Getting started")::

    import synthex as sx
    vol = sx.Volume.from_file("ct.nii.gz")
    cam = sx.CArm(sdd=1020, sid=530, size=(256, 256), pitch=0.776).camera(alpha=0, beta=0, isocenter=vol)
    out = sx.render(vol, cam, kvp=80, noise=False, scatter=False, device="cpu")

The names below are imported on first use (PEP 562), so ``import synthex.dataset``
or ``synthex --help`` do not load the projector, Warp or the physics.
"""

from synthex._version import __version__  # noqa: F401  (in __all__)

# public name -> module that defines it
_EXPORTS = {
    "CArm": "projectors.geometry",
    "Camera": "projectors.geometry",
    "GeometryError": "projectors.geometry",
    "Transform": "projectors.geometry",
    "parallel_camera": "projectors.geometry",
    "DEEPDRR_DENSITY": "projectors.materials",
    "DEFAULT_HU_MATERIALS": "projectors.materials",
    "DensityCalibration": "projectors.materials",
    "HUMaterialMap": "projectors.materials",
    "LabelMaterial": "projectors.materials",
    "MATERIALS": "projectors.materials",
    "MaterialModel": "projectors.materials",
    "mass_attenuation": "projectors.materials",
    "DeviceError": "projectors.projector",
    "Projection": "projectors.projector",
    "Projector": "projectors.projector",
    "SceneVolume": "projectors.projector",
    "project": "projectors.projector",
    "Volume": "projectors.volume",
    "VolumeError": "projectors.volume",
    "PhysicsParams": "projectors.physics",
    "PhysicsRanges": "domain_randomization.simulation",
    "sample_physics_params": "domain_randomization.simulation",
    "RenderResult": "synthex.rendering",
    "render": "synthex.rendering",
    "render_from_projection": "synthex.rendering",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'synthex' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__

"""synthex: a physics-based synthetic X-ray data engine.

Public API (see README)::

    import synthex as sx
    vol = sx.Volume.from_file("ct.nii.gz")
    cam = sx.CArm(sdd=1020, sid=530, size=(256, 256), pitch=0.776).camera(alpha=0, beta=0)
    out = sx.render(vol, cam, kvp=80, noise=False, scatter=False, device="cpu")
"""

from projectors.geometry import Camera, CArm, GeometryError, Transform, parallel_camera
from projectors.materials import (
    DEFAULT_HU_MATERIALS,
    DEEPDRR_DENSITY,
    MATERIALS,
    DensityCalibration,
    HUMaterialMap,
    LabelMaterial,
    MaterialModel,
    mass_attenuation,
)
from projectors.projector import DeviceError, Projection, Projector, SceneVolume, project
from projectors.volume import Volume, VolumeError
from projectors.physics import PhysicsParams, sample_physics_params
from synthex.render import RenderResult, render, render_from_projection
from synthex._version import __version__

__all__ = [
    "CArm",
    "Camera",
    "DeviceError",
    "DEEPDRR_DENSITY",
    "DEFAULT_HU_MATERIALS",
    "DensityCalibration",
    "GeometryError",
    "HUMaterialMap",
    "LabelMaterial",
    "MATERIALS",
    "MaterialModel",
    "PhysicsParams",
    "Projection",
    "Projector",
    "RenderResult",
    "SceneVolume",
    "Transform",
    "Volume",
    "VolumeError",
    "__version__",
    "mass_attenuation",
    "parallel_camera",
    "project",
    "render",
    "render_from_projection",
    "sample_physics_params",
]

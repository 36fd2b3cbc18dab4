"""Regenerate tests/data/diffdrr_reference.npz: DiffDRR 0.6.1 renders of a small test volume.

Runs in a separate environment holding DiffDRR (it must not replace the pinned torch):

    ../shared/tools/diffdrr-venv.sh .venv-diffdrr
    .venv-diffdrr/bin/python tests/diffdrr_reference/make_reference.py

The test volume comes from ``reference_volume()`` below (pure numpy, seeded), the
cameras from synthex's ``CArm`` converted with ``Camera.to_diffdrr``. DiffDRR
renders its Siddon line integral of the density we give it (DeepDRR's
HU -> g/cm^3 formula, so nothing is normalized); the default test suite then
compares synthex's exact mode against these stored images without DiffDRR.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

POSES = [(0.0, 0.0), (30.0, 10.0), (-45.0, -20.0), (90.0, 15.0)]  # (alpha, beta) degrees
SIZE = (64, 64)  # detector (width, height)
PITCH = 3.0  # mm at a 1020 mm source-detector distance
SPACING = (1.5, 1.2, 2.0)  # anisotropic voxels, mm
OUT = REPO / "tests" / "data" / "diffdrr_reference.npz"


def reference_volume() -> tuple[np.ndarray, np.ndarray]:
    """HU volume (48, 56, 40) and its RAS affine: a body ellipsoid with bones and air, off-centre origin."""
    rng = np.random.default_rng(20261123)
    shape = (48, 56, 40)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    p = (idx - (np.array(shape) - 1) / 2) * SPACING
    hu = np.full(shape, -1000.0)
    hu[((p / [32, 30, 36]) ** 2).sum(-1) <= 1] = 40.0
    for _ in range(6):  # random bony and air spheres
        c = rng.uniform(-18, 18, 3)
        r = rng.uniform(4, 9)
        hu[((p - c) ** 2).sum(-1) <= r * r] = rng.choice([-800.0, 700.0, 1400.0])
    hu += rng.normal(0, 15, shape)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (12.0, -7.0, 25.0)  # not centred: DiffDRR's re-centring must be accounted for
    return hu.astype(np.float32), affine


def density(hu: np.ndarray) -> np.ndarray:
    """DeepDRR's calibration (synthex's default), g/cm^3."""
    return np.maximum(np.minimum(0.001029 * hu + 1.03, 0.0005886 * hu + 1.03), 0.0)


def cameras():
    from projectors.geometry import CArm

    hu, affine = reference_volume()
    centre = affine[:3, :3] @ ((np.array(hu.shape) - 1) / 2) + affine[:3, 3]
    carm = CArm(sdd=1020.0, sid=530.0, size=SIZE, pitch=PITCH, isocenter=tuple(centre))
    return [carm.camera(a, b) for a, b in POSES], centre


def main():
    import diffdrr
    import torch
    from diffdrr.data import read
    from diffdrr.drr import DRR
    from diffdrr.pose import RigidTransform
    from torchio import ScalarImage

    hu, affine = reference_volume()
    cams, centre = cameras()
    subject = read(ScalarImage(tensor=torch.from_numpy(hu)[None], affine=affine), orientation="AP")
    images, ray_err = [], []
    for cam in cams:
        cfg = cam.to_diffdrr(centre, orientation="AP", sdd=1020.0)
        drr = DRR(subject, sdd=cfg["sdd"], height=cfg["height"], width=cfg["width"], delx=cfg["delx"],
                  dely=cfg["dely"], x0=cfg["x0"], y0=cfg["y0"], reverse_x_axis=cfg["reverse_x_axis"], renderer="siddon")
        drr.density = torch.from_numpy(density(hu)).to(torch.float32)  # physical density, not DiffDRR's [0,1] map
        pose = RigidTransform(torch.from_numpy(cfg["extrinsic"]).to(torch.float32)[None])
        with torch.no_grad():
            img = drr(pose)[0, 0].numpy().astype(np.float64)  # integral of density (g/cm^3) over mm
            # geometry check: DiffDRR's rays (its world = ours minus the volume centre) vs ours
            src, tgt = drr.detector(pose, None)
        o, d = cam.rays()
        dd = (tgt - src)[0].numpy().reshape(cam.height, cam.width, 3)
        dd /= np.linalg.norm(dd, axis=-1, keepdims=True)
        ray_err.append(float(np.abs(dd - d).max()))
        assert np.allclose(src[0, 0].numpy() + centre, cam.source_world, atol=1e-2), "source positions differ"
        images.append(img * 0.1)  # g/cm^2
    print(f"diffdrr {diffdrr.__version__}: max ray-direction difference {max(ray_err):.2e}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, images=np.stack(images).astype(np.float32), poses=np.array(POSES),
                        diffdrr_version=diffdrr.__version__, max_ray_direction_difference=max(ray_err))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

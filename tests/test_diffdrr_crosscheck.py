"""Cross-check against DiffDRR 0.6.1 (an independent renderer) on identical geometry.

The reference images were rendered by tests/diffdrr_reference/make_reference.py
in a separate DiffDRR environment (it also checked that DiffDRR's rays, built
from ``Camera.to_diffdrr``, equal ours to 1e-7). This test needs no DiffDRR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from projectors.geometry import Transform
from projectors.projector import Projector
from projectors.volume import Volume
from diffdrr_reference.make_reference import POSES, cameras, reference_volume

REFERENCE = Path(__file__).parent / "data" / "diffdrr_reference.npz"


def test_exact_mode_matches_diffdrr_siddon():
    ref = np.load(REFERENCE)
    assert ref["images"].shape == (len(POSES), 64, 64)
    hu, affine = reference_volume()
    vol = Volume(hu, Transform(affine))
    cams, _ = cameras()
    projector = Projector(vol, mode="exact", device="cpu")
    for cam, expected in zip(cams, ref["images"]):
        got = projector.project(cam).total_areal_density().astype(np.float64)
        rel_l2 = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        print(f"relative L2 difference to DiffDRR: {rel_l2:.2e}")
        assert rel_l2 < 1e-3, rel_l2
        assert expected.max() > 5.0  # a real signal, g/cm^2

"""Pelvis phantom: population statistics, landmarks on the anatomy, labels, HU, determinism, errors."""

import json

import numpy as np
import pytest

from phantoms.landmarks import HIP_CLASSES, HIP_LANDMARKS, femoral_head_centers
from phantoms.pelvis import (
    PELVIS_LABELS,
    PelvisParameters,
    PhantomError,
    build_pelvis,
    pelvis_landmarks,
    sample_pelvis_parameters,
)


@pytest.fixture(scope="module")
def phantom():
    return build_pelvis(sample_pelvis_parameters(np.random.default_rng(7)), spacing=1.75)


def test_population_matches_published_adult_pelves():
    """100 sampled pelves vs a CT study of 200 adults.

    Source: "Variability in the range of inter-anterior superior iliac spine
    distance and its correlation with femoral head centre. A prospective
    computed tomography study of 200 adults", Skeletal Radiology 39 (2010),
    doi:10.1007/s00256-009-0791-x: inter-ASIS distance 22.7 +/- 1.6 cm and
    inter-femoral-head-centre distance 16.0 +/- 0.8 cm (mean +/- SD).
    With n = 100 the standard error of a mean is SD/10, so the bands below
    (mean within 0.5 SD, SD within a factor ~1.5) fail for a population that
    is off by more than a few standard errors.
    """
    rng = np.random.default_rng(2024)
    lm = [pelvis_landmarks(sample_pelvis_parameters(rng)) for _ in range(100)]
    asis = np.array([np.linalg.norm(d["ASIS-l"] - d["ASIS-r"]) for d in lm])
    fh = np.array([np.linalg.norm(d["FH-l"] - d["FH-r"]) for d in lm])
    assert abs(asis.mean() - 227.0) < 8.0, asis.mean()
    assert 11.0 < asis.std(ddof=1) < 24.0, asis.std(ddof=1)
    assert abs(fh.mean() - 160.0) < 4.0, fh.mean()
    assert 5.5 < fh.std(ddof=1) < 12.0, fh.std(ddof=1)
    # the study found only a weak IAD-IFD correlation (0.35): shapes vary independently
    assert np.corrcoef(asis, fh)[0, 1] < 0.7
    # the femoral heads lie medial of the ASIS (Seidel et al., J Biomech 1995: ~14 % of pelvic width)
    ratio = (asis - fh) / 2 / asis
    assert 0.07 < ratio.mean() < 0.21, ratio.mean()


def test_landmarks_are_named_like_deepfluoro_and_mirror():
    lm = pelvis_landmarks(PelvisParameters())
    assert tuple(lm) == HIP_LANDMARKS and len(lm) == 14
    for name in ("FH", "GSN", "IOF", "MOF", "SPS", "IPS", "ASIS"):
        left, right = lm[f"{name}-l"], lm[f"{name}-r"]
        assert left[0] < 0 < right[0], name  # RAS: patient right is +x
        # the default parameters are symmetric: left = right mirrored in x
        np.testing.assert_allclose(left * [-1, 1, 1], right, atol=1e-9)


def _label_near(vol, point, radius_mm):
    ijk = vol.ijk_from_world.apply(point)
    r = radius_mm / vol.spacing
    lo = np.maximum(np.floor(ijk - r).astype(int), 0)
    hi = np.minimum(np.ceil(ijk + r).astype(int) + 1, vol.shape)
    idx = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    near = np.linalg.norm(vol.world_from_ijk.apply(idx) - point, axis=1) <= radius_mm
    return set(np.unique(vol.labels[tuple(idx[near].T)]).tolist())


def test_landmarks_sit_on_their_bones(phantom):
    vol = phantom.volume
    names = {v: k for k, v in vol.label_names.items()}
    for lm, p in phantom.landmarks.items():
        side = "left" if lm.endswith("-l") else "right"
        bone = names[f"femur_{side}"] if lm.startswith("FH") else names[f"hemipelvis_{side}"]
        # surface landmarks: within one voxel diagonal of a voxel of their bone
        assert bone in _label_near(vol, p, 1.8 * vol.spacing.max()), lm
    # and the femoral head centre is deep inside the femur
    for side, v in (("l", 5), ("r", 6)):
        ijk = np.round(vol.ijk_from_world.apply(phantom.landmarks[f"FH-{side}"])).astype(int)
        assert vol.labels[tuple(ijk)] == v


def test_obturator_foramen_is_a_hole(phantom):
    """Just inside the rim from MOF/IOF there is no bone; just outside there is hemipelvis."""
    vol = phantom.volume
    lm = phantom.landmarks
    for side, value in (("l", 1), ("r", 2)):
        mof, iof = lm[f"MOF-{side}"], lm[f"IOF-{side}"]
        lateral = np.array([1.0 if side == "r" else -1.0, 0, 0])
        # the rim is an ellipse: at its most medial point the hole lies laterally, at its lowest point above
        assert _label_near(vol, mof + 5.0 * lateral, 1.6) == {0}, side
        assert _label_near(vol, iof + np.array([0, 0, 5.0]), 1.6) == {0}, side
        medial = -1.0 if side == "r" else 1.0
        assert value in _label_near(vol, mof + np.array([medial * 5.0, 0, 0]), 2.0)
        assert value in _label_near(vol, iof + np.array([0, 0, -5.0]), 2.0)


def test_labels_and_hu(phantom):
    vol = phantom.volume
    assert vol.label_names == PELVIS_LABELS
    assert {k: v for k, v in vol.label_names.items() if k in HIP_CLASSES} == HIP_CLASSES
    xyz_mean = {}
    for value, name in vol.label_names.items():
        idx = np.argwhere(vol.labels == value)
        assert len(idx) > 2000, name
        xyz_mean[name] = vol.world_from_ijk.apply(idx.mean(0))
    for name in ("hemipelvis", "femur"):
        assert xyz_mean[f"{name}_left"][0] < -40 < 40 < xyz_mean[f"{name}_right"][0]
    assert abs(xyz_mean["vertebrae"][0]) < 5 and xyz_mean["vertebrae"][2] > xyz_mean["upper_sacrum"][2]
    p = PelvisParameters.from_dict(phantom.parameters)
    bone = vol.hu[vol.labels > 0]
    # partial-volume mixing keeps bone voxels between soft tissue and cortical bone
    assert bone.max() <= p.hu_cortical + 1 and np.median(bone) > p.hu_muscle + 100
    # a cortical shell: the femoral head's outer 2.5 mm is denser than its core
    fh = phantom.landmarks["FH-r"]
    idx = np.argwhere(vol.labels == 6)
    d = np.linalg.norm(vol.world_from_ijk.apply(idx) - fh, axis=1)
    hu = vol.hu[tuple(idx.T)]
    shell, core = hu[(d > p.fh_radius - 2.5) & (d < p.fh_radius)], hu[d < p.fh_radius - 6]
    assert shell.mean() > core.mean() + 200, (shell.mean(), core.mean())
    # soft tissue: fat layer, muscle, air outside, bowel gas inside the body
    soft = vol.hu[vol.labels == 0]
    for target in (p.hu_fat, p.hu_muscle):
        assert np.mean(np.abs(soft - target) < 20) > 0.03
    if p.gas:
        c = np.asarray(p.gas[0][:3])
        assert vol.hu[tuple(np.round(vol.ijk_from_world.apply(c)).astype(int))] < -500 or vol.labels[
            tuple(np.round(vol.ijk_from_world.apply(c)).astype(int))
        ] > 0


def test_femoral_head_centres_by_sphere_fitting_of_labels(phantom):
    fitted = femoral_head_centers(phantom.volume)
    for key in ("FH-l", "FH-r"):
        assert np.linalg.norm(fitted[key] - phantom.landmarks[key]) < 1.5, key


def test_parameters_round_trip_and_determinism():
    p = sample_pelvis_parameters(np.random.default_rng(3))
    q = PelvisParameters.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p
    a, b = build_pelvis(p, spacing=4.0), build_pelvis(q, spacing=4.0)
    np.testing.assert_array_equal(a.volume.hu, b.volume.hu)
    np.testing.assert_array_equal(a.volume.labels, b.volume.labels)
    # different draws give different subjects
    r = sample_pelvis_parameters(np.random.default_rng(4))
    assert r != p


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(PhantomError, match="unknown pelvis parameter"):
        PelvisParameters.from_dict({"ifd": 160.0, "asis_width": 3.0})
    with pytest.raises(PhantomError, match="must be positive"):
        PelvisParameters(ifd=-1.0)
    with pytest.raises(PhantomError, match="lateral of the femoral heads"):
        PelvisParameters(ifd=200.0, iad=190.0)
    with pytest.raises(PhantomError, match="spacing"):
        build_pelvis(PelvisParameters(), spacing=0.0)
    with pytest.raises(PhantomError, match="sex"):
        PelvisParameters(sex="x")
    assert issubclass(PhantomError, ValueError)


def test_posed_phantom_moves_volume_and_landmarks_together(phantom):
    from projectors.geometry import Transform, rotation_x, rotation_z

    T = Transform.from_rt(rotation_z(20.0) @ rotation_x(-10.0), [15.0, -30.0, 40.0])
    moved = phantom.posed(T)
    for key, value in (("FH-l", 5), ("FH-r", 6)):
        ijk = np.round(moved.volume.ijk_from_world.apply(moved.landmarks[key])).astype(int)
        assert moved.volume.labels[tuple(ijk)] == value
        np.testing.assert_allclose(moved.landmarks[key], T.apply(phantom.landmarks[key]))


@pytest.mark.slow
def test_population_of_built_volumes():
    """100 voxelized pelves: inter-head distances measured on the label maps (sphere fits), not formulas."""
    rng = np.random.default_rng(99)
    ifd = []
    for _ in range(100):
        ph = build_pelvis(sample_pelvis_parameters(rng), spacing=3.0)
        fh = femoral_head_centers(ph.volume)
        ifd.append(np.linalg.norm(fh["FH-l"] - fh["FH-r"]))
        for key in ("FH-l", "FH-r"):
            assert np.linalg.norm(fh[key] - ph.landmarks[key]) < 2.5
    ifd = np.array(ifd)
    assert abs(ifd.mean() - 160.0) < 4.0 and 5.5 < ifd.std(ddof=1) < 12.0

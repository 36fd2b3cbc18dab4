"""Camera and C-arm conventions (README "Geometry conventions")."""

from __future__ import annotations

import numpy as np
import pytest

from projectors.geometry import Camera, CArm, GeometryError, Transform, parallel_camera, rotation_z


def test_intrinsics_follow_the_documented_formula():
    carm = CArm(sdd=1020, sid=530, size=(300, 200), pitch=(0.5, 0.25))
    np.testing.assert_allclose(carm.K, [[2040, 0, 149.5], [0, 4080, 99.5], [0, 0, 1]])
    cam = carm.camera(12, -7)
    np.testing.assert_allclose(cam.P, cam.K @ cam.camera_from_world.matrix[:3])


def test_source_positions_for_carm_angles():
    carm = CArm(sid=500, sdd=1000, isocenter=(10.0, 20.0, 30.0))
    iso = np.array([10.0, 20.0, 30.0])
    # AP: source anterior (+y in RAS) of the isocentre
    np.testing.assert_allclose(carm.camera(0, 0).source_world, iso + [0, 500, 0], atol=1e-9)
    # alpha = +90: source at the patient's left (-x in RAS)
    np.testing.assert_allclose(carm.camera(90, 0).source_world, iso + [-500, 0, 0], atol=1e-9)
    # beta = +90: source above the head (+z)
    np.testing.assert_allclose(carm.camera(0, 90).source_world, iso + [0, 0, 500], atol=1e-9)
    for a, b in [(0, 0), (33, -12), (-70, 40)]:
        cam = carm.camera(a, b)
        # the principal ray goes from the source through the isocentre; distances as specified
        assert np.isclose(np.linalg.norm(cam.source_world - iso), 500)
        np.testing.assert_allclose(cam.project(iso[None])[0], [(256 - 1) / 2, (256 - 1) / 2], atol=1e-9)
        assert np.isclose(cam.depth(iso[None])[0], 500)
        R = cam.world_from_camera.R
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(R), 1.0)


def test_ap_image_orientation():
    cam = CArm(size=(101, 101), pitch=1.0).camera(0, 0)
    centre = cam.project([[0, 0, 0]])[0]
    right, head = cam.project([[10, 0, 0], [0, 0, 10]])
    assert right[0] < centre[0]  # patient's right appears on the image's left
    assert head[1] < centre[1]  # head towards the top of the image


def test_project_inverts_rays():
    cam = CArm(size=(40, 30), pitch=0.8).camera(25, 15)
    o, d = cam.rays()
    pts = o + 700.0 * d
    uv = cam.project(pts.reshape(-1, 3)).reshape(30, 40, 2)
    v, u = np.mgrid[0:30, 0:40]
    np.testing.assert_allclose(uv[..., 0], u, atol=1e-9)
    np.testing.assert_allclose(uv[..., 1], v, atol=1e-9)
    par = parallel_camera((1, 1, 0), size=(20, 10), pitch=0.5)
    o, d = par.rays()
    np.testing.assert_allclose(d, np.broadcast_to(d[0, 0], d.shape))
    uv = par.project((o + 123.0 * d).reshape(-1, 3)).reshape(10, 20, 2)
    v, u = np.mgrid[0:10, 0:20]
    np.testing.assert_allclose(uv[..., 0], u, atol=1e-9)


def test_point_projection_by_similar_triangles():
    carm = CArm(sdd=1000, sid=600, size=(101, 101), pitch=0.5)
    cam = carm.camera(0, 0)
    # a point 10 mm towards the patient's left at the isocentre: magnified by 1000/600 on the detector
    u, v = cam.project([[-10.0, 0.0, 0.0]])[0]
    assert np.isclose(u - 50, 10 * 1000 / 600 / 0.5)
    assert np.isclose(v, 50)


def test_transform_composition_and_inverse():
    a = Transform.from_rt(rotation_z(30), [1, 2, 3])
    b = Transform.from_rt(rotation_z(-75), [-4, 0, 9])
    p = np.array([[0.3, -2.0, 5.0]])
    np.testing.assert_allclose((a @ b).apply(p), a.apply(b.apply(p)))
    np.testing.assert_allclose((a @ a.inv()).matrix, np.eye(4), atol=1e-12)
    with pytest.raises(GeometryError, match="singular"):
        Transform(np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(GeometryError, match="rigid"):
        Camera(K=np.eye(3), world_from_camera=Transform(np.diag([2.0, 1.0, 1.0, 1.0])), width=4, height=4)


def test_deepdrr_converter_shifts_principal_point_by_half_a_pixel():
    cam = CArm(sdd=1020, size=(1536, 1536), pitch=0.194).camera(10, 5)
    dd = cam.to_deepdrr()
    # DeepDRR: K = [[SDD/px, 0, W/2], [0, SDD/px, H/2], [0, 0, 1]] with pixel corners at integers
    np.testing.assert_allclose(dd["intrinsic"], [[1020 / 0.194, 0, 768], [0, 1020 / 0.194, 768], [0, 0, 1]])
    np.testing.assert_allclose(dd["camera3d_from_world"], cam.camera_from_world.matrix)
    # the same world point lands half a pixel apart in the two index conventions
    p = np.array([[5.0, -3.0, 12.0]])
    ours = cam.project(p)[0]
    h = dd["intrinsic"] @ (dd["camera3d_from_world"] @ np.append(p[0], 1.0))[:3]
    np.testing.assert_allclose(h[:2] / h[2], ours + 0.5)


def test_camera_aims_at_a_volume_centre():
    """``isocenter=vol`` puts the volume's centre on the principal ray, at sid from the source."""
    import synthex as sx

    vol = sx.Volume.from_array(np.zeros((10, 12, 14), np.float32), spacing=(1.0, 2.0, 3.0))
    vol_shifted = sx.Volume(vol.hu, sx.Transform.from_rt(np.eye(3), [100.0, -50.0, 20.0]) @ vol.world_from_ijk)
    carm = sx.CArm(size=(65, 65))
    cam = carm.camera(30.0, 10.0, isocenter=vol_shifted)
    uv = cam.project(vol_shifted.center_world[None])[0]
    np.testing.assert_allclose(uv, [32.0, 32.0], atol=1e-9)  # centre pixel of a 65 px detector
    np.testing.assert_allclose(cam.depth(vol_shifted.center_world[None])[0], carm.sid, rtol=1e-12)
    with pytest.raises(sx.GeometryError, match="isocentre"):
        carm.camera(isocenter=[np.nan, 0, 0])


# -- views and clinical presets ------------------------------------------------------------------


def _marker_phantom():
    """A water block (RAS, 2 mm voxels) with bone beads on the patient's right (+x), front (+y) and head (+z)."""
    import synthex as sx

    hu = np.full((60, 60, 60), -1000.0, np.float32)
    hu[10:50, 10:50, 10:50] = 0.0
    hu[44:48, 28:32, 28:32] = 1500.0  # right: x = +32 mm (voxel centres -59 + 2 i)
    hu[28:32, 44:48, 20:24] = 1500.0  # anterior: y = +32 mm, a little inferior (z = -16 mm) to tell it apart
    hu[28:32, 28:32, 44:48] = 1500.0  # head: z = +32 mm
    return sx.Volume.from_array(hu, spacing=2.0)


def _bead_centroids(img):
    """Centroids (u, v) of the bright blobs of a bone-density image, largest first."""
    from scipy import ndimage

    lab, n = ndimage.label(img > 0.5 * img.max())
    return [np.array(ndimage.center_of_mass(img, lab, i + 1))[::-1] for i in range(n)]


@pytest.mark.parametrize("preset", ["chest_pa", "table_ap", "lateral", "mobile_carm"])
def test_display_orientation_with_markers(preset):
    """Head up in every preset; AP and PA show the patient's right on the image's left (radiological
    orientation); the lateral shows the patient's front on the image's left. Each bead's shadow lands
    where ``camera.project`` puts it (the mirrored read-out is the same in the rays and in P)."""
    import synthex as sx

    vol = _marker_phantom()
    cam = CArm.preset(preset, size=96, isocenter=(0.0, 0.0, 0.0)).camera(0, 0)
    bone = sx.project(vol, cam, device="cpu").areal_density["bone_cortical"]
    right, front, head, centre = cam.project([[32.0, 0, 0], [0, 32.0, -16.0], [0, 0, 32.0], [0, 0, 0]])
    found = _bead_centroids(bone)
    assert len(found) == 3  # three separate shadows in every view
    for p in (head,) + ((right,) if preset != "lateral" else (front,)):
        assert min(np.linalg.norm(f - p) for f in found) < 0.5, (preset, p, found)
    assert head[1] < centre[1] - 5  # head at the top
    if preset == "lateral":
        assert front[0] < centre[0] - 5  # front on the image's left
    else:
        assert right[0] < centre[0] - 5  # patient's right on the image's left


def test_pa_is_the_ap_image_mirrored_with_the_source_behind():
    """PA = AP turned 180 degrees about the long axis and read out mirrored: without scatter or
    magnification differences (parallel-like: source far away) the two images of a block are identical;
    with a real cone the PA camera's source is posterior (-y) of the isocentre."""
    carm = CArm.preset("chest_pa", size=64, isocenter=(0.0, 0.0, 0.0))
    cam = carm.camera(0, 0)
    assert cam.mirrored and cam.K[0, 0] < 0
    np.testing.assert_allclose(cam.source_world, [0, -carm.sid, 0], atol=1e-9)
    ap = CArm(**{**carm.__dict__, "view": "ap"}).camera(0, 0)
    assert not ap.mirrored
    np.testing.assert_allclose(ap.source_world, [0, carm.sid, 0], atol=1e-9)
    # the same world points land in the same pixels, except for the depth-dependent magnification
    pts = np.array([[30.0, 0.0, 20.0], [-50.0, 0.0, -40.0]])  # in the isocentre plane (y = 0)
    np.testing.assert_allclose(cam.project(pts), ap.project(pts), atol=1e-9)


def test_unmirrored_camera_gives_the_flipped_image():
    import synthex as sx

    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000, 1500, (20, 24, 28)).astype(np.float32)
    vol = sx.Volume.from_array(hu, spacing=(2.0, 1.5, 1.0))
    cam = CArm.preset("lateral", size=(40, 30), detector_mm=(80.0, 60.0), isocenter=(0.0, 0.0, 0.0)).camera(10, -5)
    flat = cam.unmirrored()
    assert cam.mirrored and not flat.mirrored
    a = sx.project(vol, cam, device="cpu").total_areal_density()
    b = sx.project(vol, flat, device="cpu").total_areal_density()
    assert (a > 0).mean() > 0.3 and not np.allclose(a, a[:, ::-1], rtol=0.01)  # fills the detector, asymmetric
    np.testing.assert_allclose(a, np.fliplr(b), rtol=1e-4, atol=1e-4)  # float32 rays: edge-grazing pixels differ by ~4e-5
    p = np.array([[5.0, -3.0, 12.0]])
    np.testing.assert_allclose(cam.project(p)[0, 0], cam.width - 1 - flat.project(p)[0, 0], atol=1e-9)
    for conv in (cam.to_deepdrr(), cam.to_diffdrr()):
        assert conv["flip_columns"] is True
    assert cam.to_deepdrr()["intrinsic"][0, 0] > 0 and CArm().camera().to_deepdrr()["flip_columns"] is False


def test_presets_hold_their_clinical_figures():
    chest = CArm.preset("chest_pa")  # 512 px on the long side
    assert chest.sdd == 1800 and chest.view == "pa" and chest.skin_gap_mm == 20
    np.testing.assert_allclose(chest.detector_mm, (430, 430))
    np.testing.assert_allclose(chest.pixel_size, (430 / 512, 430 / 512))
    table = CArm.preset("table_ap", size=430)
    assert table.size == (430, 350) and np.allclose(table.pixel_size, 1.0) and table.view == "ap"
    assert table.sdd == 1150 and table.skin_gap_mm == 70
    carm = CArm.preset("mobile_carm", size=256)
    default = CArm()
    assert (carm.sdd, carm.sid, carm.size, carm.view, carm.skin_gap_mm) == (default.sdd, default.sid, default.size, "ap", None)
    np.testing.assert_allclose(carm.pixel_size, default.pixel_size)
    assert CArm.preset("lateral").view == "lateral"
    assert CArm.preset("chest_pa", sdd=1500.0, detector_mm=350).detector_mm == pytest.approx((350, 350))
    with pytest.raises(GeometryError, match="unknown geometry preset 'chest'; known: mobile_carm, chest_pa"):
        CArm.preset("chest")
    with pytest.raises(GeometryError, match="unknown view 'oblique'"):
        CArm(view="oblique")
    with pytest.raises(GeometryError, match="unknown CArm field"):
        CArm.preset("chest_pa", sod=100)


def test_skin_gap_fits_the_sid_per_view():
    """A 200 mm deep, 300 mm wide slab: PA puts its front (y = +100) 20 mm from the detector,
    the lateral its left side (x = -150); a C-arm without a skin gap keeps its sid."""
    x, y, z = np.meshgrid([-150.0, 150.0], [-100.0, 100.0], [-120.0, 120.0], indexing="ij")
    body = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    pa = CArm.preset("chest_pa", size=64, isocenter=(0.0, 0.0, 0.0))
    cam = pa.camera(0, 0, body=body)
    np.testing.assert_allclose(cam.source_world, [0, 100 + 20 - 1800, 0], atol=1e-9)
    assert np.isclose(cam.depth([[0, 100.0, 0]])[0], 1800 - 20)
    lat = CArm.preset("lateral", size=64, isocenter=(0.0, 0.0, 0.0)).camera(0, 0, body=body)
    np.testing.assert_allclose(lat.source_world, [-150 - 20 + 1800, 0, 0], atol=1e-9)  # source at the right (+x)
    iso = CArm.preset("mobile_carm", isocenter=(0.0, 0.0, 0.0))
    np.testing.assert_allclose(iso.camera(0, 0, body=body).source_world, [0, 530, 0], atol=1e-9)
    with pytest.raises(GeometryError, match="does not fit between source and detector"):
        CArm.preset("table_ap", isocenter=(0.0, 0.0, 0.0)).camera(0, 0, body=body * 10)


def test_supersampled_camera_bins_back_to_the_detector():
    """Sub-pixel rays of a supersampled camera tile each detector pixel: every sub-pixel centre lies within
    its pixel (+-0.5 px) and the mean of a pixel's sub-pixel centres is the pixel's centre, for a plain
    and a mirrored (PA) detector."""
    from projectors.geometry import bin_pixels

    for preset in ("mobile_carm", "chest_pa"):  # not mirrored / mirrored
        cam = CArm.preset(preset, size=(30, 20), isocenter=(0.0, 0.0, 0.0)).camera(15, -5)
        fine = cam.supersampled(3)
        assert fine.shape == (60, 90)
        o, d = fine.rays()
        pts = (o + 900.0 * d).reshape(-1, 3)
        uv = cam.project(pts).reshape(60, 90, 2)
        v, u = np.mgrid[0:20, 0:30]
        np.testing.assert_allclose(bin_pixels(uv[..., 0], 3), u, atol=1e-6)
        np.testing.assert_allclose(bin_pixels(uv[..., 1], 3), v, atol=1e-6)
        assert np.all(np.abs(uv[..., 0] - np.repeat(np.repeat(u, 3, 0), 3, 1)) <= 0.5 + 1e-9)
    with pytest.raises(GeometryError, match="whole number"):
        CArm().camera().supersampled(1.5)
    # binning is its inverse: a bin's ray goes through the centre of its 2 x 2 pixels (mean of their projections)
    coarse = cam.binned(2)
    assert coarse.shape == (10, 15)
    np.testing.assert_allclose(cam.supersampled(2).binned(2).K, cam.K, atol=1e-9)
    o, d = coarse.rays()
    uv = cam.project((o + 900.0 * d).reshape(-1, 3)).reshape(10, 15, 2)
    v, u = np.mgrid[0:20, 0:30]
    np.testing.assert_allclose(uv[..., 0], bin_pixels(u.astype(float), 2), atol=1e-6)
    np.testing.assert_allclose(uv[..., 1], bin_pixels(v.astype(float), 2), atol=1e-6)
    with pytest.raises(GeometryError, match="cannot be binned"):
        cam.binned(3)

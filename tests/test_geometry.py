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

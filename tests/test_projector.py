"""Projector against analytic answers: chord lengths, convergence, geometry, materials, overlaps.

References are computed here in float64 numpy, independently of the kernel:
ray/box slab intersection, sphere and cylinder chords, fine numerical
integration over the voxel grid, and DeepDRR's density formula.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import deepdrr_density
from projectors.geometry import CArm, GeometryError, Transform, parallel_camera
from projectors.materials import HUMaterialMap, LabelMaterial, MaterialModel
from projectors.projector import DeviceError, Projector, SceneVolume, project
from projectors.volume import Volume, VolumeError

WATER_HU = 0.0  # DeepDRR density 1.03 g/cm^3, material soft tissue
EMPTY_HU = -1024.0  # density 0: below the calibration's zero crossing at -1001 HU
RHO0 = 1.03


def total_mm(proj, density=RHO0):
    """Total areal density converted back to a path length (mm) for a uniform object."""
    return proj.total_areal_density().astype(np.float64) / density * 10.0


def slab_chord(origins, dirs, lo, hi):
    """Length of each ray (unit dirs) inside the axis-aligned box [lo, hi] (world mm), float64."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (lo - origins) / dirs
        t1 = (hi - origins) / dirs
    tmin = np.where(np.isnan(t0), -np.inf, np.minimum(t0, t1))
    tmax = np.where(np.isnan(t0), np.inf, np.maximum(t0, t1))
    # rays parallel to an axis: inside the slab or not at all
    par = dirs == 0
    inside = (origins >= lo) & (origins <= hi)
    tmin = np.where(par, np.where(inside, -np.inf, np.inf), tmin)
    tmax = np.where(par, np.where(inside, np.inf, -np.inf), tmax)
    a = np.maximum(tmin.max(axis=-1), 0.0)
    b = tmax.min(axis=-1)
    return np.maximum(b - a, 0.0)


def box_volume(n=64, lo=16, hi=47, spacing=1.0):
    hu = np.full((n, n, n), EMPTY_HU, np.float32)
    hu[lo : hi + 1, lo : hi + 1, lo : hi + 1] = WATER_HU
    vol = Volume.from_array(hu, spacing=spacing)
    box_lo = vol.world_from_ijk.apply([lo - 0.5] * 3)
    box_hi = vol.world_from_ijk.apply([hi + 0.5] * 3)
    return vol, box_lo, box_hi


@pytest.mark.parametrize("alpha,beta", [(0, 0), (27, -13), (-61, 35), (90, 0)])
def test_exact_mode_equals_analytic_box_chords(alpha, beta, device):
    vol, lo, hi = box_volume()
    cam = CArm(sdd=1020, sid=530, size=(48, 40), pitch=1.6).camera(alpha, beta)
    proj = project(vol, cam, mode="exact", device=device)
    o, d = cam.rays()
    expected = slab_chord(o, d, lo, hi)
    assert expected.max() > 30  # the box is in view
    got = total_mm(proj)
    # float32 accumulation over ~100 segments: well below 1e-3 mm + 1e-5 relative
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-3)


def partial_volume(n, inside, spacing=1.0, supersample=6):
    """Voxel occupancy fractions of the set ``inside(x, y, z)`` (world mm, volume centred), by supersampling."""
    c = (np.arange(n) - (n - 1) / 2) * spacing
    X, Y, Z = np.meshgrid(c, c, c, indexing="ij")
    frac = inside(X, Y, Z).astype(np.float64)
    # supersample only voxels whose 27-neighbourhood is mixed (boundary voxels)
    from scipy.ndimage import maximum_filter, minimum_filter

    edge = maximum_filter(frac, 3) != minimum_filter(frac, 3)
    idx = np.argwhere(edge)
    off = ((np.arange(supersample) + 0.5) / supersample - 0.5) * spacing
    ox, oy, oz = np.meshgrid(off, off, off, indexing="ij")
    for chunk in np.array_split(idx, max(1, len(idx) // 20000)):
        p = c[chunk]
        inside_s = inside(p[:, 0, None] + ox.ravel(), p[:, 1, None] + oy.ravel(), p[:, 2, None] + oz.ravel())
        frac[tuple(chunk.T)] = inside_s.mean(axis=1)
    return frac


def voxelized_chords(vol: Volume, mask: np.ndarray, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Exact length of each ray inside the union of the masked voxels: one slab test per voxel cube.

    An independent reference for the exact mode (no traversal: every voxel is
    clipped separately), valid for axis-aligned grids.
    """
    sp = vol.spacing
    centres = vol.world_from_ijk.apply(np.argwhere(mask).astype(np.float64))
    lo, hi = centres - sp / 2, centres + sp / 2
    out = np.empty(len(origins))
    for r, (o, d) in enumerate(zip(origins, dirs)):
        out[r] = slab_chord(np.broadcast_to(o, lo.shape), np.broadcast_to(d, lo.shape), lo, hi).sum()
    return out


@pytest.mark.parametrize("shape", ["sphere", "cylinder"])
def test_exact_mode_chords_through_voxelized_sphere_and_cylinder(shape, rng, device):
    """Error < 0.5% of the analytic chord once the voxelization is accounted for.

    The exact mode must return the chord through the voxelized shape (the union
    of voxels whose centres lie inside), computed here voxel by voxel; that in
    turn differs from the smooth shape's analytic chord by at most the
    voxelization error, under one voxel diagonal at each end.
    """
    n, R = 72, 30.0
    c = np.arange(n) - (n - 1) / 2
    X, Y, Z = np.meshgrid(c, c, c, indexing="ij")
    if shape == "sphere":
        mask = X**2 + Y**2 + Z**2 <= R**2
    else:
        mask = (X**2 + Y**2 <= R**2) & (np.abs(Z) <= 33.0)
    vol = Volume.from_array(np.where(mask, WATER_HU, EMPTY_HU).astype(np.float32), spacing=1.0)
    cam = CArm(sdd=1020, sid=530, size=(64, 64), pitch=1.0).camera(17, 9)
    got = total_mm(project(vol, cam, mode="exact", device=device))
    o, d = cam.rays()
    if shape == "sphere":
        tc = -(o * d).sum(-1)
        r = np.linalg.norm(o + tc[..., None] * d, axis=-1)
        analytic = 2 * np.sqrt(np.maximum(R**2 - r**2, 0))
    else:  # rays meet the side wall only (|z| at entry and exit < 33 for these rays)
        o2, d2 = o[..., :2], d[..., :2]
        a, b, cc = (d2**2).sum(-1), 2 * (o2 * d2).sum(-1), (o2**2).sum(-1) - R**2
        disc = np.maximum(b**2 - 4 * a * cc, 0)
        analytic = np.sqrt(disc) / a
        r = np.abs(o2[..., 0] * d2[..., 1] - o2[..., 1] * d2[..., 0]) / np.sqrt(a)
    interior = np.argwhere(r < 0.8 * R)
    pick = interior[rng.choice(len(interior), size=40, replace=False)]
    ref = voxelized_chords(vol, mask, o[tuple(pick.T)], d[tuple(pick.T)])
    err = np.abs(got[tuple(pick.T)] - ref) / analytic[tuple(pick.T)]
    assert err.max() < 0.005, err.max()
    assert err.max() < 1e-4  # in fact only float32 rounding separates them
    # and the voxelized chord is the smooth one up to the voxelization error (< 2 voxel diagonals)
    assert np.abs(ref - analytic[tuple(pick.T)]).max() < 2 * np.sqrt(3)


def test_exact_mode_matches_fine_numerical_integration(rng, device):
    """Random HU voxels on an oblique, anisotropic grid vs 0.002 mm numerical integration."""
    hu = rng.uniform(-1000, 2000, size=(7, 9, 6)).astype(np.float32)
    R = Transform.from_rt(rotation=np.linalg.qr(rng.normal(size=(3, 3)))[0]).R
    if np.linalg.det(R) < 0:
        R = -R
    m = np.eye(4)
    m[:3, :3] = R @ np.diag([1.3, 0.8, 2.1])
    m[:3, 3] = -m[:3, :3] @ (np.array(hu.shape) - 1) / 2
    vol = Volume(hu, Transform(m))
    cam = CArm(sdd=800, sid=400, size=(6, 5), pitch=2.0).camera(33, -21)
    proj = project(vol, cam, mode="exact", device=device)
    o, d = cam.rays()
    dens = deepdrr_density(hu)
    h = 0.002
    ijk_from_world = np.linalg.inv(m)
    for (v, u) in [(0, 0), (2, 3), (4, 5), (1, 1)]:
        t = np.arange(300.0, 500.0, h) + h / 2
        pts = o[v, u] + t[:, None] * d[v, u]
        ijk = pts @ ijk_from_world[:3, :3].T + ijk_from_world[:3, 3]
        idx = np.floor(ijk + 0.5).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(hu.shape)), axis=1)
        ref = dens[tuple(idx[ok].T)].sum() * h * 0.1  # g/cm^2
        got = proj.total_areal_density()[v, u]
        # numerical integration error: at most one step per voxel crossing (< 30 crossings)
        assert abs(got - ref) <= 30 * h * 0.1 * dens.max() + 1e-5, (v, u, got, ref)
    assert proj.total_areal_density().max() > 0.5


def test_trilinear_converges_to_exact(device):
    """A water slab crossed obliquely: trilinear ramps across its faces integrate to the step.

    The slab fills the volume in x and z, so rays enter and leave through its
    two faces only (at a box edge the product of two ramps would not integrate
    to the step). Outside is -1001 HU, where DeepDRR's density line reaches 0,
    so density is linear in HU along the ramp. As the step shrinks the
    trilinear result must converge to the exact one.
    """
    hu = np.full((48, 48, 48), -1001.0, np.float32)
    hu[:, 14:34, :] = WATER_HU
    vol = Volume.from_array(hu, spacing=1.0)
    cam = CArm(sdd=1020, sid=530, size=(24, 24), pitch=1.0).camera(23, 11)
    exact = project(vol, cam, mode="exact", device=device).total_areal_density()
    errors = []
    for step in [2.0, 1.0, 0.5, 0.25, 0.1]:
        tri = project(vol, cam, mode="trilinear", step=step, device=device).total_areal_density()
        errors.append(float(np.abs(tri - exact).max() / exact.max()))
    assert errors[-1] < errors[0] / 10, errors
    assert errors[-1] < 1e-3, errors


def test_parallel_beam_and_far_source_cone_beam_agree(device):
    vol, lo, hi = box_volume(n=40, lo=10, hi=29)
    side = hi[0] - lo[0]
    par = parallel_camera((0, -1, 0), size=(32, 32), pitch=1.0)
    p = total_mm(project(vol, par, device=device))
    o, d = par.rays()
    np.testing.assert_allclose(p, slab_chord(o, d, lo, hi), atol=2e-3)
    assert np.isclose(p.max(), side, atol=2e-3)  # straight through the box: its thickness
    # a cone beam whose source is 100 m away is parallel to within (20 mm / 1e5 mm) in angle
    far = CArm(sdd=1e5 + 500, sid=1e5, size=(32, 32), pitch=1.0 * (1e5 + 500) / 1e5).camera(0, 0)
    c = total_mm(project(vol, far, device=device))
    np.testing.assert_allclose(c, p, atol=0.05)


def test_cone_beam_magnification(device):
    """The box's shadow is magnified by sdd / source-to-object distance."""
    vol, lo, hi = box_volume(n=40, lo=10, hi=29)
    carm = CArm(sdd=1000, sid=500, size=(200, 8), pitch=0.25)
    proj = total_mm(project(vol, carm.camera(0, 0), device=device))
    row = proj[4]
    width_px = (row > 1e-3).sum()
    # widest shadow edge: the box face nearest the source, at distance 500 - 10 mm
    expected = (hi[0] - lo[0]) * 1000 / (500 - (hi[1] - lo[1]) / 2) / 0.25
    assert abs(width_px - expected) <= 1.0, (width_px, expected)


@pytest.mark.parametrize("alpha,beta", [(0, 0), (35, 10), (-50, -20), (80, 25)])
def test_bead_centroid_lands_on_projected_point(alpha, beta, rng, device):
    spacing = 0.5
    n = 60
    centre = rng.uniform(-3, 3, size=3)
    c = (np.arange(n) - (n - 1) / 2) * spacing
    X, Y, Z = np.meshgrid(c, c, c, indexing="ij")
    frac = partial_volume(n, lambda x, y, z: (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= 1.2**2, spacing=spacing)
    hu = (-1001.0 + 1001.0 * frac).astype(np.float32)
    vol = Volume.from_array(hu, spacing=spacing)
    cam = CArm(sdd=1020, sid=530, size=(64, 64), pitch=0.388).camera(alpha, beta)
    img = project(vol, cam, device=device).total_areal_density().astype(np.float64)
    vv, uu = np.mgrid[0:64, 0:64]
    w = img.sum()
    centroid = np.array([(uu * img).sum() / w, (vv * img).sum() / w])
    target = cam.project(centre[None])[0]
    assert np.linalg.norm(centroid - target) < 0.25, (centroid, target)


def asymmetric_volume():
    hu = np.full((40, 30, 20), EMPTY_HU, np.float32)
    hu[5:15, 5:25, 4:16] = 0.0  # low i = low x: towards the patient's left (RAS +x is the right)
    hu[25:35, 10:14, 8:12] = 1500.0
    return hu


def test_ras_lps_flip_same_world_object_same_render(device):
    """Flipping the data along x and the affine's x axis describes the same object: identical render."""
    hu = asymmetric_volume()
    a = Volume.from_array(hu, spacing=(1.0, 1.2, 0.9))
    m = a.world_from_ijk.matrix.copy()
    m[:3, 3] = m[:3, :3] @ [hu.shape[0] - 1, 0, 0] + m[:3, 3]
    m[:3, 0] *= -1
    b = Volume(hu[::-1].copy(), Transform(m))
    cam = CArm(size=(48, 32), pitch=1.0).camera(20, 5)
    pa, pb = project(a, cam, device=device), project(b, cam, device=device)
    for mat in pa.areal_density:
        np.testing.assert_allclose(pa.areal_density[mat], pb.areal_density[mat], rtol=1e-5, atol=1e-6)


def test_mirrored_object_gives_mirrored_render(device):
    """Data flipped along x on the same (centred) grid is the mirror image: the AP render flips left-right."""
    hu = asymmetric_volume()
    a = Volume.from_array(hu, spacing=1.0)
    b = Volume.from_array(hu[::-1].copy(), spacing=1.0)
    cam = CArm(size=(48, 32), pitch=1.0).camera(0, 0)
    ia = project(a, cam, device=device).total_areal_density()
    ib = project(b, cam, device=device).total_areal_density()
    np.testing.assert_allclose(ib, ia[:, ::-1], rtol=1e-4, atol=1e-4)  # float32 rays on voxel faces
    assert not np.allclose(ia, ia[:, ::-1], atol=1e-3)  # the object really is asymmetric


def test_ap_view_shows_patient_right_on_image_left(device):
    hu = np.full((40, 40, 40), EMPTY_HU, np.float32)
    hu[30:36, 18:22, 18:22] = 0.0  # +x in RAS: the patient's right
    vol = Volume.from_array(hu, spacing=1.0)
    img = project(vol, CArm(size=(64, 64), pitch=1.2).camera(0, 0), device=device).total_areal_density()
    cols = np.nonzero(img.sum(0) > 0)[0]
    assert cols.max() < 32  # the patient's right is on the image's left (radiological convention)


def test_material_weights_and_density_split(device):
    """A slab of each HU: areal density per material = DeepDRR density x thickness x HU-ramp weight."""
    hmap = HUMaterialMap(materials=("air", "adipose", "soft_tissue", "bone_cortical"), thresholds=(-500.0, -30.0, 300.0), width=60.0)
    cases = {  # HU -> expected weights (adipose, soft tissue, bone) from the linear ramps
        -100.0: {"adipose": 1.0},
        -30.0: {"adipose": 0.5, "soft_tissue": 0.5},  # exactly at a threshold: half and half
        -15.0: {"adipose": 0.25, "soft_tissue": 0.75},
        1200.0: {"bone_cortical": 1.0},
    }
    for hu_value, weights in cases.items():
        hu = np.full((12, 10, 12), EMPTY_HU, np.float32)
        hu[:, 2:8, :] = hu_value  # 6 mm thick along y
        vol = Volume.from_array(hu, spacing=1.0)
        proj = project(SceneVolume(vol, MaterialModel(hu_map=hmap)), parallel_camera((0, -1, 0), size=(4, 4)), device=device)
        rho = float(deepdrr_density(hu_value))
        for mat, a in proj.areal_density.items():
            np.testing.assert_allclose(a, rho * 0.6 * weights.get(mat, 0.0), rtol=1e-5, atol=1e-7, err_msg=f"{hu_value} {mat}")


def test_structure_path_lengths_and_label_materials(device):
    hu = np.full((30, 30, 30), 0.0, np.float32)
    labels = np.zeros(hu.shape, np.int16)
    labels[5:15, 10:20, 10:20] = 1  # "implant": titanium at fixed density
    labels[18:25, 3:27, 10:20] = 2  # "femur": HU-derived material, structure only
    vol = Volume.from_array(hu, spacing=1.0, labels=labels, label_names={1: "implant", 2: "femur"})
    mm = MaterialModel(label_materials={1: LabelMaterial("titanium", density=4.5)})
    cam = parallel_camera((0, -1, 0), size=(30, 30), pitch=1.0)
    proj = project(SceneVolume(vol, mm), cam, device=device)
    o, d = cam.rays()
    def chord(lo, hi):
        return slab_chord(o, d, vol.world_from_ijk.apply(np.array(lo) - 0.5), vol.world_from_ijk.apply(np.array(hi) - 0.5))
    np.testing.assert_allclose(proj.path_length["implant"], chord([5, 10, 10], [15, 20, 20]), atol=1e-4)
    np.testing.assert_allclose(proj.path_length["femur"], chord([18, 3, 10], [25, 27, 20]), atol=1e-4)
    np.testing.assert_allclose(proj.areal_density["titanium"], 4.5 * 0.1 * proj.path_length["implant"], rtol=1e-5)
    # the rest of each ray is soft tissue at DeepDRR's density for 0 HU
    np.testing.assert_allclose(proj.areal_density["soft_tissue"], RHO0 * 0.1 * (30 - proj.path_length["implant"]), rtol=1e-5)


@pytest.mark.parametrize("mode", ["exact", "trilinear"])
@pytest.mark.parametrize("labelled,label_materials,integer_hu", [
    (False, False, False), (True, True, False), (False, False, True), (True, False, True), (True, True, True),
    (True, "many", True), (True, "many", False)])
def test_single_volume_kernel_equals_general_kernel(mode, labelled, label_materials, integer_hu, rng, device):
    """One-volume scenes run dedicated kernels (integer HU: through a 2-byte index; labels as 2-byte
    values); the general (multi-volume) kernel, itself checked against analytic chords with several
    volumes above, must give the same images: HU values across every material ramp, label materials
    with and without a fixed density, structures, oblique views of an anisotropic grid, both modes.
    The dedicated kernels interpolate per-channel weights between whole HU where the general one
    interpolates (density, material coordinate): for fractional HU inside a ramp these differ by at
    most (1/8) x (d density/dHU) x (d weight/dHU) = 0.125 x 0.00103 x 1/60 = 2.1e-6 g/cm^3 per HU^2,
    i.e. < 3e-6 of the mass, below the 1e-5 tolerance."""
    hu = rng.uniform(-1100.0, 1600.0, (23, 19, 17)).astype(np.float32)
    if integer_hu:
        hu = np.rint(hu)
    labels = rng.integers(0, 5 if label_materials != "many" else 9, hu.shape).astype(np.int32) if labelled else None
    if labelled:  # a label value past 32767: the packed (index | label << 16) word's top bit set
        labels[labels == 3] = 40000
    names = {1: "implant", 2: "cortex", 40000: "liver"} if labelled else {}  # label 4: no name, no material
    vol = Volume.from_array(hu, spacing=(1.0, 1.3, 0.8), labels=labels, label_names=names)
    lm = {1: LabelMaterial("titanium", density=4.5), 2: LabelMaterial("bone_cortical")} if label_materials else {}
    if label_materials == "many":  # 6 HU materials + 5 new label materials: 11 channels, the 16-wide kernels
        lm.update({5: LabelMaterial("cocr"), 6: LabelMaterial("stainless_steel"), 7: LabelMaterial("iodine_contrast"),
                   8: LabelMaterial("blood", density=1.06)})
    mm = MaterialModel(label_materials=lm)
    carm = CArm(sdd=1020.0, sid=530.0, size=(24, 20), pitch=1.5)
    fast = Projector(SceneVolume(vol, mm), device=device, mode=mode, cache=False)
    general = Projector(SceneVolume(vol, mm), device=device, mode=mode, cache=False)
    general.single_volume_kernel = False
    # the indexed variant runs exactly when it should
    assert fast.kernel_path == ("single-u16" if integer_hu else "single-f32") and general.kernel_path == "general"
    assert fast._prep.single["width"] == (16 if label_materials == "many" else 8)
    for alpha, beta in [(0, 0), (33, -17), (-75, 40), (90, 5)]:
        a, b = fast.project(carm.camera(alpha, beta)), general.project(carm.camera(alpha, beta))
        assert a.areal_density.keys() == b.areal_density.keys() and a.path_length.keys() == b.path_length.keys()
        assert (a.total_areal_density() > 0).mean() > 0.5  # the views see the volume
        for m in a.areal_density:
            np.testing.assert_allclose(a.areal_density[m], b.areal_density[m], rtol=1e-5, atol=1e-6, err_msg=m)
        for s in a.path_length:
            np.testing.assert_allclose(a.path_length[s], b.path_length[s], rtol=1e-5, atol=1e-5, err_msg=s)
        if label_materials:
            assert a.areal_density["titanium"].max() > 0.1  # the label materials are exercised


@pytest.mark.parametrize("mode", ["exact", "trilinear"])
def test_priority_tool_volume_displaces_anatomy(mode, device):
    """A titanium block in its own (finer, rotated) volume inside a water box: Ti replaces water."""
    ct, lo, hi = box_volume(n=40, lo=0, hi=39)  # water everywhere: 40 mm
    tool_hu = np.full((24, 24, 24), -1000.0, np.float32)  # air around the block: transparent
    tool_lab = np.zeros(tool_hu.shape, np.int16)
    tool_lab[6:18, 6:18, 6:18] = 1  # 12 voxels of 0.5 mm: a 6 mm cube
    tool = Volume.from_array(tool_hu, spacing=0.5, labels=tool_lab, label_names={1: "tool"})
    scene = [ct, SceneVolume(tool, MaterialModel(label_materials={1: LabelMaterial("titanium", 4.5)}), priority=1)]
    cam = parallel_camera((0, -1, 0), size=(40, 40), pitch=1.0)
    proj = project(scene, cam, mode=mode, step=0.05, device=device)
    ti = proj.path_length["tool"]
    inside = ti > 5.99
    assert inside.sum() >= 16
    np.testing.assert_allclose(proj.areal_density["titanium"][inside], 4.5 * 0.6, rtol=1e-3)
    np.testing.assert_allclose(proj.areal_density["soft_tissue"][inside], RHO0 * (4.0 - 0.6), rtol=2e-3)
    # rays through the tool volume's air only: the water behind shows through unchanged
    outside = proj.path_length["tool"] == 0
    np.testing.assert_allclose(proj.areal_density["soft_tissue"][outside], RHO0 * 4.0, rtol=2e-3)


@pytest.mark.parametrize("mode", ["exact", "trilinear"])
def test_device_images_equal_cpu_images(mode, rng, device):
    """``pytest --device cuda``: every kernel variant (2-byte index in both register widths, float32 HU,
    labels, the general kernel with a priority tool volume) gives the CPU's images on the device.

    The same kernel source runs on both; the compilers contract multiply-adds differently, so a
    float32 ray parameter t (~600 mm: ulp 6e-5 mm) differs by a few ulp at each plane crossing. A ray
    here crosses ~60 planes, each a material change in this random volume: the path per channel
    differs by ~sqrt(60) x 4 ulp ~ 2e-3 mm, the areal density by that x 0.1 cm/mm x the densest
    material (CoCr, 8.3 g/cm^3): 1.7e-4 g/cm^2. Trilinear mode takes ceil(L / step) equal steps; where
    L / step lies within rounding of a whole number the two devices take different step counts, so a
    few rays are the same quadrature with shifted samples: there the images differ by the method's own
    discretization error. Hence for trilinear: >= 98% of pixels within the float tolerance, and the
    device's error against the exact line integral no larger than the CPU's (RMS, +10%)."""
    if device == "cpu":
        pytest.skip("run with --device cuda to compare a GPU with the CPU")
    path_atol, areal_atol = 2e-3, 2e-3 * 0.1 * 9.0
    hu = np.rint(rng.uniform(-1100.0, 1600.0, (33, 29, 27))).astype(np.float32)
    labels = rng.integers(0, 9, hu.shape).astype(np.int16)
    vol = Volume.from_array(hu, spacing=(1.0, 1.3, 0.8), labels=labels, label_names={1: "implant", 2: "cortex"})
    few = MaterialModel(label_materials={1: LabelMaterial("titanium", density=4.5)})
    many = MaterialModel(label_materials={1: LabelMaterial("titanium", density=4.5), 5: LabelMaterial("cocr"),
                                          6: LabelMaterial("stainless_steel"), 7: LabelMaterial("iodine_contrast"),
                                          8: LabelMaterial("blood", density=1.06)})
    fractional = Volume.from_array(hu + 0.37, spacing=(1.0, 1.3, 0.8), labels=labels, label_names={1: "implant"})
    tool = Volume.from_array(np.full((12, 12, 12), -1000.0, np.float32), spacing=0.5,
                             labels=np.pad(np.ones((6, 6, 6), np.int16), 3), label_names={1: "tool"})
    scenes = {"single-u16 8-wide": SceneVolume(vol, few), "single-u16 16-wide": SceneVolume(vol, many),
              "single-f32": SceneVolume(fractional, few),
              "general": [SceneVolume(vol, few), SceneVolume(tool, MaterialModel(label_materials={1: LabelMaterial("titanium", 4.5)}), priority=1)]}
    carm = CArm(sdd=1020.0, sid=530.0, size=(40, 36), pitch=1.2)
    for name, scene in scenes.items():
        on_device = Projector(scene, device=device, mode=mode, cache=False)
        on_cpu = Projector(scene, device="cpu", mode=mode, cache=False)
        exact = Projector(scene, device="cpu", mode="exact", cache=False)
        assert on_device.kernel_path == on_cpu.kernel_path
        for alpha, beta in [(0, 0), (37, -21), (90, 5)]:
            cam = carm.camera(alpha, beta)
            a, b = on_device.project(cam), on_cpu.project(cam)
            assert b.total_areal_density().max() > 0.5, name  # the view sees the volume
            pairs = [(a.areal_density[m], b.areal_density[m], areal_atol, m) for m in b.areal_density]
            pairs += [(a.path_length[s], b.path_length[s], path_atol, s) for s in b.path_length]
            for x, y, atol, what in pairs:
                if mode == "exact":
                    np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=f"{name} {what}")
                else:
                    assert (np.abs(x - y) <= atol).mean() >= 0.98, f"{name} {what}"
            if mode == "trilinear":
                truth = exact.project(cam).total_areal_density()
                rms = [float(np.sqrt(np.mean((p.total_areal_density() - truth) ** 2))) for p in (a, b)]
                assert rms[0] <= 1.1 * rms[1] + areal_atol, f"{name}: device error {rms[0]:.2e}, CPU {rms[1]:.2e}"


def test_projector_reuses_uploaded_volumes(device):
    vol, lo, hi = box_volume(n=32, lo=8, hi=23)
    P = Projector(vol, device=device)
    carm = CArm(size=(16, 16), pitch=2.0)
    a = P.project(carm.camera(10, 0)).total_areal_density()
    b = project(vol, carm.camera(10, 0), device=device).total_areal_density()
    np.testing.assert_array_equal(a, b)


# ---- bad inputs: one clear error each -------------------------------------------------------


def test_camera_pointing_away_is_an_error(device):
    vol, _, _ = box_volume(n=16, lo=4, hi=11)
    carm = CArm(size=(16, 16), pitch=1.0, isocenter=(2000.0, 0.0, 0.0))  # looking at a point 2 m beside the volume
    with pytest.raises(GeometryError, match="no detector ray passes through the volume"):
        project(vol, carm.camera(0, 0), device=device)
    cam = CArm(size=(16, 16), pitch=1.0).camera(0, 0)
    behind = Transform.from_rt(translation=(0, 800.0, 0))  # volume moved behind the source
    with pytest.raises(GeometryError, match="no detector ray"):
        project(vol.posed(behind), cam, device=device)


@pytest.mark.parametrize("size", [(0, 16), (16, 0), (0, 0), (2.5, 4)])
def test_detector_of_zero_pixels_is_an_error(size):
    with pytest.raises(GeometryError, match="detector size"):
        CArm(size=size)


def test_impossible_carm_geometry_is_an_error():
    with pytest.raises(GeometryError, match="between source and detector"):
        CArm(sdd=500, sid=600)
    with pytest.raises(GeometryError, match="positive"):
        CArm(sdd=-1)
    with pytest.raises(GeometryError, match="pitch"):
        CArm(pitch=0)


def test_bad_volumes_are_errors(device):
    with pytest.raises(VolumeError, match="3D"):
        Volume.from_array(np.zeros((10, 10)))
    bad = np.zeros((4, 4, 4), np.float32)
    bad[1, 2, 3] = np.nan
    with pytest.raises(VolumeError, match=r"NaN or infinite \(first at index \(1, 2, 3\)\)"):
        Volume.from_array(bad)
    for sp in [(1, 0, 1), (1, -2, 1)]:
        with pytest.raises(VolumeError, match="spacing must be positive"):
            Volume.from_array(np.zeros((4, 4, 4)), spacing=sp)
    with pytest.raises(VolumeError, match="label map shape"):
        Volume.from_array(np.zeros((4, 4, 4)), labels=np.zeros((4, 4, 3), int))
    with pytest.raises(VolumeError, match="Volume or SceneVolume"):
        project([np.zeros((4, 4, 4))], CArm(size=(4, 4)).camera(), device=device)


def test_device_selection():
    vol, _, _ = box_volume(n=8, lo=2, hi=5)
    import warp as wp

    assert Projector(vol, device="auto").device == ("cuda:0" if wp.get_cuda_device_count() else "cpu")
    with pytest.raises(DeviceError, match="device must be"):
        Projector(vol, device="tpu")
    if wp.get_cuda_device_count() == 0:
        with pytest.raises(DeviceError, match="no CUDA device"):
            Projector(vol, device="cuda")

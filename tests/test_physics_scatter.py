"""Scatter: Monte Carlo physics checks, SPR against the literature, fast model against the Monte Carlo, grid.

The Monte Carlo compiles one Warp kernel (a few seconds, cached afterwards);
runs here use 1e6-8e6 photons on coarse detectors (a few seconds each on CPU).
"""

import numpy as np
import pytest
import xraydb
from scipy import integrate

from projectors.geometry import CArm, Camera, Transform
from projectors.materials import mass_attenuation
from projectors.physics import GridParams, PhysicsParams, ScatterParams, SpectrumParams, preset, simulate, spectrum
from projectors.physics.scatter_fast import fast_scatter
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


def test_mc_primary_follows_beer_lambert():
    mono = Spectrum(np.array([59.5, 60.5]), np.array([0.0, 1.0]))
    cam = _radiography_camera(1000.0, 8, 40.0, 100.0, 200.0)
    res = simulate_scatter(water_box_scene(100.0, 400.0), cam, 1000.0, mono, 400_000, np.random.default_rng(0))
    # +-0.5 keV energy spread around 60 keV changes mu by < 0.3%
    assert res.primary_rel.mean() == pytest.approx(np.exp(-mass_attenuation("water", 60.0) * 10.0), rel=0.02)


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
def test_mc_spr_within_literature(t_cm):
    sdd, n, field = 1000.0, 30, 300.0
    cam = _radiography_camera(sdd, n, field, t_cm * 10, gap_mm=20.0)
    spec = spectrum(SpectrumParams(kvp=80, anode_angle=12, filtration=(("Al", 2.5),)))
    res = simulate_scatter(water_box_scene(t_cm * 10, 500.0, voxel_mm=10.0), cam, sdd, spec, 1_000_000, np.random.default_rng(1))
    c = slice(n // 2 - 2, n // 2 + 2)
    T = spectral_signal({"water": np.full(cam.shape, t_cm, np.float32)}, cam, spec, PhysicsParams(spectrum=spec.params, noise=False)).transmission
    spr = res.scatter_rel[c, c].mean() / T[c, c].mean()
    lo, hi = LITERATURE_SPR[t_cm]
    assert lo <= spr <= hi, f"SPR {spr:.2f} behind {t_cm} cm water outside the literature band {lo}-{hi}"


def _fast_vs_mc(t_cm, n_photons, kvp_preset="carm_80kv", n=32, seed=0):
    cam = CArm(size=(n, n), pitch=1.164 * 256 / n).camera(0, 0)  # default C-arm, ~30 x 30 cm detector
    spec = spectrum(preset(kvp_preset))
    mc = simulate_scatter(water_box_scene(t_cm * 10, 600.0, voxel_mm=10.0), cam, 1020.0, spec, n_photons, np.random.default_rng(seed))
    K = cam.K
    v, u = np.mgrid[0:n, 0:n]
    cos = 1 / np.sqrt(1 + ((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2)
    sig = spectral_signal({"water": (t_cm / cos).astype(np.float32)}, cam, spec, PhysicsParams(spectrum=spec.params, noise=False))
    fast = fast_scatter(sig.transmission, cam, 1020.0, spec)

    def blocks(a, b=8):
        return a.reshape(n // b, b, n // b, b).mean(axis=(1, 3))

    return blocks(fast), blocks(mc.scatter_rel)


def test_fast_model_within_10_percent_of_mc():
    fast, mc = _fast_vs_mc(20.0, 8_000_000)
    # 4x4 blocks of 74 mm over the 30 x 30 cm field; MC noise per block ~1-2%
    err = np.abs(fast - mc) / mc
    assert err.mean() < 0.06 and err.max() < 0.10, f"mean {err.mean():.3f} max {err.max():.3f}"


@pytest.mark.slow
@pytest.mark.parametrize("t_cm,kv", [(10.0, "carm_80kv"), (30.0, "carm_80kv"), (20.0, "carm_110kv"), (20.0, "carm_60kv")])
def test_fast_model_within_10_percent_of_mc_slow(t_cm, kv):
    fast, mc = _fast_vs_mc(t_cm, 24_000_000, kv)
    err = np.abs(fast - mc) / mc
    assert err.mean() < 0.06 and err.max() < 0.10, f"mean {err.mean():.3f} max {err.max():.3f}"


def test_grid_lowers_spr_by_its_specification():
    cam = CArm(size=(64, 64), pitch=1.164 * 4).camera(0, 0)
    A = {"water": np.full(cam.shape, 20.0, np.float32)}
    grid = GridParams(ratio=12.0, primary_transmission=0.70, scatter_transmission=0.10)
    no = simulate(A, cam, PhysicsParams(noise=False))
    yes = simulate(A, cam, PhysicsParams(noise=False, scatter=ScatterParams(grid=grid)))
    np.testing.assert_allclose(yes.primary, no.primary, rtol=1e-6)  # flat-field calibrated
    spr_no, spr_yes = no.scatter / no.primary, yes.scatter / yes.primary
    np.testing.assert_allclose(spr_yes / spr_no, 0.10 / 0.70, rtol=1e-5)
    assert yes.transmission.mean() < no.transmission.mean()  # less scatter fog


def test_fast_scatter_trends():
    cam = CArm(size=(64, 64), pitch=1.164 * 4).camera(0, 0)
    spec = spectrum(preset("carm_80kv"))
    p = PhysicsParams(spectrum=spec.params, noise=False)
    prev = 0.0
    for t in (0.0, 5.0, 15.0, 30.0):
        T = spectral_signal({"water": np.full(cam.shape, t, np.float32)}, cam, spec, p).transmission
        s = fast_scatter(T, cam, 1020.0, spec)
        spr = (s / T)[32, 32]
        assert spr > prev  # SPR grows with thickness
        assert s[32, 32] > s[0, 0]  # scatter peaks mid-field
        prev = spr
    assert prev > 1.0


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
    cam = CArm(size=(16, 16), pitch=1.164 * 16).camera(0, 0)
    spec = spectrum(preset("carm_80kv"))
    mc = simulate_scatter(water_box_scene(200.0, 600.0, voxel_mm=10.0), cam, 1020.0, spec, 500_000, np.random.default_rng(4))
    A = {"water": np.full(cam.shape, 20.0, np.float32)}
    res = simulate(A, cam, PhysicsParams(spectrum=spec.params, noise=False), scatter=mc.scatter_rel)
    np.testing.assert_allclose(res.transmission, np.clip(res.primary + mc.scatter_rel, 0, 1), rtol=1e-5)
    with pytest.raises(ValueError, match="scatter image"):
        simulate(A, cam, PhysicsParams(noise=False), scatter=np.full((3, 3), 0.1))

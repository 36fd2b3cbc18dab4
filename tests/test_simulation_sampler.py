"""Simulation-level randomization (domain_randomization.simulation): the one physics sampler, its ranges, replay."""

import json

import numpy as np
import pytest
import xraydb

from domain_randomization.simulation import PhysicsRanges, sample_physics_params, spectrum_tubes
from projectors.geometry import CArm
from projectors.physics import PhysicsParams, PhysicsParamsError, simulate

CAM = CArm(size=(64, 64)).camera(0, 0)
PIX = CAM.pixel_size[0]  # the detector pitch the presets' physical blur and noise are converted to


def _step_density():
    a = np.full(CAM.shape, 10.0, np.float32)
    a[:, 32:] = 15.0
    return {"water": a}


def test_params_json_roundtrip_and_replay():
    p = sample_physics_params(np.random.default_rng(42), pixel_mm=PIX)
    q = PhysicsParams.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p
    a = simulate(_step_density(), CAM, p, np.random.default_rng(3))
    b = simulate(_step_density(), CAM, q, np.random.default_rng(3))
    np.testing.assert_array_equal(a.image, b.image)


def test_sampler_ranges_and_determinism():
    r = PhysicsRanges(kvp=(70.0, 90.0), air_kerma_ugy=(0.1, 1.0), grid_probability=0.0)
    ps = [sample_physics_params(np.random.default_rng(i), r, pixel_mm=PIX) for i in range(60)]
    kvps = [p.spectrum.kvp for p in ps]
    assert all(70 <= k <= 90 and k == round(k) for k in kvps)  # whole kV, as generators set it
    assert len(set(kvps)) > 12  # 21 possible values: the draws spread over them
    angles = {p.spectrum.anode_angle for p in ps}
    assert angles == {12.0, 13.0, 14.0, 15.0, 16.0}  # whole degrees over the default 12-16, as anodes are made
    tubes = set(spectrum_tubes(r))
    assert len(tubes) == 21 * 5 and {(p.spectrum.kvp, p.spectrum.anode_angle) for p in ps} <= tubes
    narrow = sample_physics_params(np.random.default_rng(0), {"anode_angle_deg": [12.2, 12.6]}, pixel_mm=PIX)
    assert 12.2 <= narrow.spectrum.anode_angle <= 12.6  # no whole degree inside: the draw itself (0.1 degree)
    assert spectrum_tubes({"anode_angle_deg": [12.2, 12.6]}) is None  # so no finite list of tubes
    assert all(0.1 <= p.air_kerma_ugy <= 1.0 and p.scatter.grid is None for p in ps)
    assert sample_physics_params(np.random.default_rng(5), r, pixel_mm=PIX) == sample_physics_params(
        np.random.default_rng(5), r, pixel_mm=PIX)
    assert sample_physics_params(np.random.default_rng(0), {"kvp": [60, 61]}, pixel_mm=PIX).spectrum.kvp <= 61
    # log-uniform dose: the median of the draws sits near the geometric mean of the range (0.316), not 0.55
    q = [sample_physics_params(np.random.default_rng(i), r, pixel_mm=PIX).air_kerma_ugy for i in range(400)]
    assert 0.25 < np.median(q) < 0.4


def test_every_drawn_parameter_changes_the_image():
    """Nothing is sampled only to be recorded: each drawn quantity reaches simulate()."""
    base = sample_physics_params(np.random.default_rng(1), PhysicsRanges(grid_probability=1.0), pixel_mm=PIX)
    img = simulate(_step_density(), CAM, base.replace(noise=False)).image
    for change in (
        dict(spectrum=base.spectrum.__class__(kvp=base.spectrum.kvp + 20, filtration=base.spectrum.filtration)),
        dict(detector=base.detector.__class__(**{**base.detector.__dict__, "blur_px": base.detector.blur_px + 2})),
        dict(scatter=base.scatter.__class__(model="fast", grid=None, scale=base.scatter.scale)),
    ):
        other = simulate(_step_density(), CAM, base.replace(noise=False, **change)).image
        assert not np.allclose(other, img)
    # the dose changes the noise: 4x the air kerma halves the relative noise of the transmission (Poisson);
    # the noise is the difference of two realizations (deterministic structure such as scatter cancels)
    def rel_noise(kerma):
        a, b = (simulate(_step_density(), CAM, base.replace(air_kerma_ugy=kerma), np.random.default_rng(s)).transmission
                for s in (0, 1))
        return (a - b)[:, :28].std() / np.sqrt(2) / a[:, :28].mean()

    assert 1.6 < rel_noise(base.air_kerma_ugy) / rel_noise(4 * base.air_kerma_ugy) < 2.4


def test_monochromatic_mode_is_beer_lambert_at_one_energy():
    """-log T = mu/rho(water, E) x A, with mu/rho from xraydb directly (independent of our material tables)."""
    ad = _step_density()
    res = simulate(ad, CAM, PhysicsParams(mode="monochromatic", energy_kev=60.0))
    mu = xraydb.material_mu("H2O", 60e3, density=1.0)  # 1/cm at 1 g/cm^3 = cm^2/g
    np.testing.assert_allclose(res.log_image, mu * ad["water"], rtol=2e-3)
    assert np.all(res.scatter == 0)


def test_bad_ranges():
    with pytest.raises(PhysicsParamsError, match="Generator"):
        sample_physics_params(np.random.RandomState(0), pixel_mm=PIX)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="min must not exceed max"):
        PhysicsRanges(kvp=(120.0, 60.0))
    with pytest.raises(ValidationError, match="kvpp"):
        PhysicsRanges(kvpp=(60, 70))


def test_the_detector_is_a_physical_preset_at_the_simulated_pitch():
    """The sampled detector is DetectorParams.preset at the camera's pitch: its blur in pixels halves when
    the pixels are twice as large (a physical PSF in mm), and the CR plate is drawn as often as asked."""
    from projectors.physics import DetectorParams

    r = PhysicsRanges(blur_mm=(0.0, 0.0), cr_probability=0.5)
    fine = [sample_physics_params(np.random.default_rng(i), r, pixel_mm=0.5) for i in range(200)]
    coarse = [sample_physics_params(np.random.default_rng(i), r, pixel_mm=1.0) for i in range(200)]
    for a, b in zip(fine, coarse):
        assert a.detector.blur_px == pytest.approx(2 * b.detector.blur_px)
        assert a.detector.phosphor == b.detector.phosphor  # same draws, same detector kind
    cr = DetectorParams.preset("cr_plate", 1.0).phosphor
    share = np.mean([p.detector.phosphor == cr for p in fine])
    assert abs(share - 0.5) < 4 * np.sqrt(0.25 / 200)  # binomial, 4 sigma


def test_aec_sets_the_dose_behind_the_anatomy():
    """With an automatic exposure control the given air kerma is the detector dose behind the patient: a
    patient 4x more attenuating gets 4x the exposure, so its image has the same noise (Poisson: the noise
    depends on the quanta detected, which the AEC holds constant)."""
    thin, thick = {"water": np.full(CAM.shape, 10.0, np.float32)}, {"water": np.full(CAM.shape, 10.0, np.float32)}
    p = PhysicsParams(air_kerma_ugy=2.0, aec=True, scatter=PhysicsParams().scatter.__class__(model="none"))
    base = simulate(thin, CAM, p.replace(noise=False))
    # a second, denser slab: the attenuation ln(4) more at the spectrum's mean energy is close enough that the
    # mean transmission falls ~4x; the noise is then compared at equal detected quanta
    extra = np.log(4.0) / float(np.mean(-np.log(base.transmission) / 10.0))
    thick["water"] = thick["water"] + np.float32(extra)
    def rel_noise(ad, params):  # the difference of two realizations: deterministic structure cancels
        a, b = (simulate(ad, CAM, params, np.random.default_rng(s)).transmission[8:-8, 8:-8] for s in (0, 1))
        return (a - b).std() / np.sqrt(2) / a.mean()

    assert rel_noise(thick, p) == pytest.approx(rel_noise(thin, p), rel=0.15)
    # without the AEC the thick patient's image is about twice as noisy (4x fewer quanta)
    q = p.replace(aec=False)
    assert 1.6 < rel_noise(thick, q) / rel_noise(thin, q) < 2.4


def test_detector_preset_and_scatter_model_are_drawn_as_configured():
    """physics.detector picks the preset a CR plate may replace (cr_probability); physics.scatter_model and
    scatter_photons reach ScatterParams. The draws are the same whatever they are (one stream)."""
    from projectors.physics import DetectorParams

    r = PhysicsRanges(detector="flat_panel_gos", scatter_model="monte_carlo", scatter_photons=5000)
    ps = [sample_physics_params(np.random.default_rng(i), r, pixel_mm=PIX) for i in range(20)]
    gos = DetectorParams.preset("flat_panel_gos", PIX)
    assert all(p.detector.phosphor == "gos" and p.detector.lorentz_px == gos.lorentz_px for p in ps)
    assert all(p.scatter.model == "monte_carlo" and p.scatter.photons == 5000 for p in ps)
    plain = [sample_physics_params(np.random.default_rng(i), pixel_mm=PIX) for i in range(20)]
    assert [p.spectrum for p in plain] == [p.spectrum for p in ps]
    assert [p.detector.pattern_seed for p in plain] == [p.detector.pattern_seed for p in ps]
    mixed = [sample_physics_params(np.random.default_rng(i), {"detector": "flat_panel_gos", "cr_probability": 0.5},
                                   pixel_mm=PIX).detector.phosphor for i in range(60)]
    assert set(mixed) == {"gos", "bafbri"}

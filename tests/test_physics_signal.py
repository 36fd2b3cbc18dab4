"""Polychromatic detector signal: Beer-Lambert over the spectrum, geometry falloff, heel, dose."""

import numpy as np
import pytest
import xraydb

from projectors.geometry import CArm
from projectors.materials import MATERIALS
from projectors.physics import PhysicsParams, SignalError, SpectrumParams, spectral_signal, spectrum
from projectors.physics.signal import detector_qe, pixel_solid_angle
from projectors.physics.spectrum import _spek_model


def _independent_transmission(kvp, layers_cm, csi_mm=0.6, fill=0.8):
    """Signal-weighted transmission by an independent integration: SpekPy's spectrum on a 0.1 keV grid
    (not our 1 keV bins), xraydb element cross sections mixed here, trapezoidal rule over energy."""
    p = SpectrumParams(kvp=kvp, filtration=(("Al", 3.0),))
    s = _spek_model(float(p.kvp), float(p.anode_angle), p.target, 0.1, tuple(p.filtration))
    e, phi = s.get_spectrum(diff=True)  # photons per keV
    e, phi = np.asarray(e), np.asarray(phi)
    ok = e >= 5.0
    e, phi = e[ok], phi[ok]

    def mu_lin(name):
        m = MATERIALS[name]
        return sum(f * xraydb.mu_elam(el, e * 1000.0) for el, f in m.composition.items()) * m.density

    qe = 1 - np.exp(-mu_lin("csi") * fill * csi_mm / 10.0)
    w = phi * qe * e
    att = np.exp(-sum(mu_lin(n) * t for n, t in layers_cm.items()))
    return np.trapezoid(w * att, e) / np.trapezoid(w, e)


def _ours(kvp, layers_cm):
    cam = CArm(size=(4, 4)).camera(0, 0)
    p = PhysicsParams(spectrum=SpectrumParams(kvp=kvp, filtration=(("Al", 3.0),)), noise=False)
    A = {n: np.full(cam.shape, t * MATERIALS[n].density, np.float32) for n, t in layers_cm.items()}
    return spectral_signal(A, cam, spectrum(p.spectrum, cache_dir=False), p).transmission.mean()


CASES = [({"water": 10.0},), ({"water": 20.0},), ({"water": 30.0},), ({"water": 20.0, "bone_cortical": 1.0},)]


@pytest.mark.parametrize("kvp", [80, 120])
@pytest.mark.parametrize("layers", [c[0] for c in CASES], ids=["w10", "w20", "w30", "w20+b1"])
def test_polychromatic_transmission_matches_independent_integration(kvp, layers):
    assert _ours(kvp, layers) == pytest.approx(_independent_transmission(kvp, layers), rel=0.005)


@pytest.mark.parametrize("kvp", [80, 120])
def test_beam_hardening(kvp):
    """Effective attenuation -ln(T)/t falls with thickness (the beam hardens), and stays above mu at kVp."""
    mu_eff = [-np.log(_ours(kvp, {"water": t})) / t for t in (5.0, 10.0, 20.0, 30.0)]
    assert all(a > b for a, b in zip(mu_eff, mu_eff[1:]))
    assert mu_eff[-1] < 0.95 * mu_eff[0]  # > 5% drop from 5 to 30 cm of water


def test_solid_angle_matches_numerical_integration():
    """Inverse square x obliquity: per-pixel solid angle vs subdividing the pixel into 20x20 patches."""
    sdd, pitch, n = 1020.0, 20.0, 16
    cam = CArm(sdd=sdd, size=(n, n), pitch=pitch).camera(0, 0)
    ours = pixel_solid_angle(cam)
    K = cam.K
    for (r, c) in [(0, 0), (7, 8), (15, 3)]:
        x0 = (c - K[0, 2]) * pitch
        y0 = (r - K[1, 2]) * pitch
        s = (np.arange(20) + 0.5) / 20 * pitch - pitch / 2
        X, Y = np.meshgrid(x0 + s, y0 + s)
        d = np.sqrt(X**2 + Y**2 + sdd**2)
        omega = ((sdd / d) / d**2).sum() * (pitch / 20) ** 2  # dA cos(theta) / r^2
        assert ours[r, c] == pytest.approx(omega, rel=1e-4)
    assert ours[0, 0] < ours[8, 8]  # corners darker (cos^3 falloff)


def test_dose_and_flat_field():
    cam = CArm(size=(32, 32)).camera(0, 0)
    spec = spectrum(SpectrumParams(), cache_dir=False)
    A = {"water": np.full(cam.shape, 15.0, np.float32)}
    p = PhysicsParams(quanta_per_pixel=2000.0, noise=False)
    sig = spectral_signal(A, cam, spec, p)
    incident = sig.flat_quanta / detector_qe(spec.energies).dot(spec.normalized())
    assert incident.mean() == pytest.approx(2000.0, rel=1e-6)
    sig2 = spectral_signal(A, cam, spec, p.replace(quanta_per_pixel=None, mas=2 * sig.mas))
    np.testing.assert_allclose(sig2.primary, 2 * sig.primary, rtol=1e-6)
    # mAs -> quanta: SpekPy fluence per mAs at 1 m times the pixel's solid angle in cm^2 at 1 m
    p3 = p.replace(quanta_per_pixel=None, mas=1.0)
    s3 = spectral_signal({}, cam, spec, p3)
    c = (16, 16)
    expect = spec.total_fluence * pixel_solid_angle(cam)[c] / 1e-4 * detector_qe(spec.energies).dot(spec.normalized())
    assert s3.flat_quanta[c] == pytest.approx(expect, rel=1e-6)


def test_heel_effect_follows_spekpy():
    cam = CArm(size=(64, 64), pitch=4.0).camera(0, 0)
    spec = spectrum(SpectrumParams(kvp=80, anode_angle=10), cache_dir=False)
    p = PhysicsParams(heel=True, heel_axis="v", heel_sign=1.0, noise=False)
    s = spectral_signal({}, cam, spec, p)
    col = s.flat[:, 32] / pixel_solid_angle(cam)[:, 32]
    assert col[-1] > col[0]  # cathode side (+v) brighter: the anode self-filters on its side
    # ratio of end rows equals SpekPy's own off-axis spectra ratio (signal-weighted)
    from projectors.physics.signal import heel_positions_mm, signal_weights

    x = heel_positions_mm(cam, "v", 1.0)
    sp = _spek_model(80.0, 10.0, "W", 1.0, tuple(spec.params.filtration))
    w = []
    for xi in (x[0], x[-1]):
        k, f = sp.get_spectrum(diff=False, x=xi / 10.0, y=0.0, z=100.0)
        w.append((np.asarray(f) * signal_weights(np.asarray(k))).sum())
    assert col[-1] / col[0] == pytest.approx(w[1] / w[0], rel=0.01)


def test_bad_inputs():
    cam = CArm(size=(8, 8)).camera(0, 0)
    spec = spectrum(SpectrumParams(), cache_dir=False)
    p = PhysicsParams(noise=False)
    with pytest.raises(SignalError, match="shape"):
        spectral_signal({"water": np.ones((4, 4))}, cam, spec, p)
    with pytest.raises(SignalError, match="NaN"):
        spectral_signal({"water": np.full((8, 8), np.nan)}, cam, spec, p)
    with pytest.raises(SignalError, match="unknown material"):
        spectral_signal({"kryptonite": np.ones((8, 8))}, cam, spec, p)
    with pytest.raises(SignalError, match="negative"):
        spectral_signal({"water": -np.ones((8, 8))}, cam, spec, p)


@pytest.mark.parametrize("axis", ["v", "u"])
def test_heel_transmission_per_pixel_is_beer_lambert_of_its_line_spectrum(axis):
    """With the heel effect each detector row (axis v) or column (axis u) has its own spectrum: a pixel's
    primary transmission is the Beer-Lambert sum over that line's signal-weighted spectrum (written out per
    pixel here). A non-square detector and a ramp of water catch a swapped axis or line."""
    from projectors.materials import mass_attenuation
    from projectors.physics.signal import heel_spectra, signal_weights

    cam = CArm(size=(40, 24), pitch=8.0).camera(0, 0)  # 40 columns (u), 24 rows (v)
    spec = spectrum(SpectrumParams(kvp=80, anode_angle=10), cache_dir=False)
    p = PhysicsParams(heel=True, heel_axis=axis, heel_sign=1.0, noise=False)
    water = np.add.outer(np.linspace(0.5, 12.0, 24), np.linspace(0.0, 8.0, 40))  # g/cm^2, (24, 40)
    s = spectral_signal({"water": water}, cam, spec, p)
    lines = heel_spectra(spec, cam, axis, 1.0)  # (n_lines, E)
    w = signal_weights(spec.energies)
    mu = mass_attenuation("water", spec.energies)
    for v, u in [(0, 0), (23, 0), (0, 39), (11, 20), (23, 39)]:
        phi = lines[v if axis == "v" else u]
        expect = (phi * w * np.exp(-mu * water[v, u])).sum() / (phi * w).sum()
        assert s.primary[v, u] / s.flat[v, u] == pytest.approx(expect, rel=1e-5)

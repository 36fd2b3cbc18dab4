"""sx.render: the public API contract, reproducibility, and physics re-randomized without re-casting rays."""

from __future__ import annotations

import numpy as np
import pytest

import synthex as sx


@pytest.fixture(scope="module")
def water_box():
    hu = np.full((40, 40, 40), -1000.0, np.float32)
    hu[8:32, 8:32, 8:32] = 0.0
    return sx.Volume.from_array(hu, spacing=2.0)


def test_contract_fields(water_box):
    cam = sx.CArm(sdd=1020, sid=530, size=(32, 32), pitch=0.776 * 8).camera(alpha=0, beta=0)
    out = sx.render(water_box, cam, kvp=80, noise=False, scatter=False, device="cpu")
    assert set(out.areal_density) >= {"air", "soft_tissue"}
    for a in (out.transmission, out.image, out.log_image, out.signal):
        assert a.shape == (32, 32) and a.dtype == np.float32
    assert np.all(out.transmission > 0) and np.all(out.transmission <= 1)
    assert 0 <= out.image.min() and out.image.max() <= 1
    # 48 mm of water (1.03 g/cm^3) at 80 kVp: the transmission must lie between the monochromatic
    # Beer-Lambert values at 30 keV (soft beam) and 80 keV (the spectrum's maximum energy)
    t = out.transmission[16, 16]
    a = out.areal_density["soft_tissue"][16, 16]
    assert np.isclose(a, 1.03 * 4.8, rtol=1e-4)
    assert np.exp(-sx.mass_attenuation("soft_tissue", 30) * a) < t < np.exp(-sx.mass_attenuation("soft_tissue", 80) * a)
    np.testing.assert_allclose(out.log_image, -np.log(out.transmission), rtol=1e-5, atol=1e-6)
    assert out.params["physics"]["spectrum"]["kvp"] == 80


def test_same_seed_same_image_different_seed_differs(water_box):
    cam = sx.CArm(size=(24, 24), pitch=8.0).camera(10, 5)
    p = sx.Projector(water_box, device="cpu")
    a = sx.render(water_box, cam, seed=3, projector=p)
    b = sx.render(water_box, cam, seed=3, projector=p)
    c = sx.render(water_box, cam, seed=4, projector=p)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.signal, c.signal)


def test_physics_rerandomized_without_recasting(water_box):
    cam = sx.CArm(size=(24, 24), pitch=8.0).camera(0, 0)
    proj = sx.project(water_box, cam, device="cpu")
    rng = np.random.default_rng(0)
    soft = sx.render_from_projection(proj, sx.PhysicsParams.from_options(kvp=60, noise=False, scatter=False), rng)
    hard = sx.render_from_projection(proj, sx.PhysicsParams.from_options(kvp=120, noise=False, scatter=False), rng)
    # the same areal densities (no new ray cast); a harder beam is transmitted more
    assert soft.areal_density is hard.areal_density
    assert hard.transmission[12, 12] > soft.transmission[12, 12]
    # scatter adds signal on top of the primary
    sc = sx.render_from_projection(proj, sx.PhysicsParams.from_options(kvp=80, noise=False, scatter=True), rng)
    assert sc.scatter.max() > 0 and np.all(sc.transmission >= sc.primary - 1e-6)


def test_keywords_override_physics_params(water_box):
    cam = sx.CArm(size=(16, 16), pitch=12.0).camera(0, 0)
    base = sx.PhysicsParams.from_options(kvp=70, noise=False, scatter=False)
    out = sx.render(water_box, cam, physics=base, kvp=100, device="cpu")
    assert out.params["physics"]["spectrum"]["kvp"] == 100
    assert out.params["physics"]["noise"] is False  # kept from `physics`, not reset
    assert out.params["physics"]["scatter"]["model"] == "none"

"""Display processing, naive mode, parameter serialization and the sampler."""

import json

import numpy as np
import pytest

from projectors.geometry import CArm
from projectors.physics import (
    DisplayParams,
    PhysicsParams,
    PhysicsParamsError,
    display,
    simulate,
    to_uint16,
)

CAM = CArm(size=(64, 64)).camera(0, 0)


def _step_density():
    a = np.full(CAM.shape, 10.0, np.float32)
    a[:, 32:] = 15.0
    return {"water": a}


def test_log_image_and_transmission_contract():
    p = PhysicsParams(noise=False)
    res = simulate(_step_density(), CAM, p)
    assert res.transmission.dtype == np.float32 and res.transmission.shape == CAM.shape
    assert np.all(res.transmission > 0) and np.all(res.transmission <= 1)
    np.testing.assert_allclose(res.log_image, -np.log(res.transmission), rtol=1e-5)
    assert res.log_image[:, 40:].mean() > res.log_image[:, :24].mean()  # thicker is brighter
    assert res.image.dtype == np.float32 and 0 <= res.image.min() and res.image.max() <= 1
    assert res["image"] is res.image and set(res.as_dict()) >= {"signal", "transmission", "log_image", "image"}


def test_window_lut_and_uint16():
    img = np.linspace(0.0, 10.0, 1000).reshape(20, 50)
    out = display(img, DisplayParams(window=(2.0, 8.0)))
    assert out[img <= 2.0].max() == 0.0 and out[img >= 8.0].min() == 1.0
    mid = (img > 4.9) & (img < 5.1)
    assert out[mid].mean() == pytest.approx(0.5, abs=0.02)
    pct = display(img, DisplayParams(percentiles=(10, 90)))
    assert (pct == 0).mean() == pytest.approx(0.1, abs=0.01) and (pct == 1).mean() == pytest.approx(0.1, abs=0.01)
    sig = display(img, DisplayParams(window=(2.0, 8.0), lut="sigmoid"))
    assert sig[mid].mean() == pytest.approx(0.5, abs=0.02) and np.all(np.diff(sig.ravel()) >= -1e-6)
    u16 = to_uint16(out)
    assert u16.dtype == np.uint16 and u16.min() == 0 and u16.max() == 65535


def test_unsharp_mask_enhances_edges():
    img = np.zeros((64, 64))
    img[:, 32:] = 1.0
    plain = display(img, DisplayParams(window=(-1, 2)))
    sharp = display(img, DisplayParams(window=(-1, 2), unsharp_amount=1.0, unsharp_px=4.0))
    assert sharp[:, 33] .mean() > plain[:, 33].mean() and sharp[:, 30].mean() < plain[:, 30].mean()  # overshoot
    np.testing.assert_allclose(sharp[:, 0], plain[:, 0], atol=1e-6)  # flat regions unchanged


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

"""Prepared-volume cache, projector memory, and an independent plain Siddon / trilinear reference.

The cache (``projectors.projector``) keeps what a scene needs on the device per
(volume objects, material models, device), so ``project`` / ``sx.render`` in a
loop over views of one volume prepare it once; it must return the same images
as an uncached projector, rebuild when the material model or device differs,
and never keep a volume alive.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest

import projectors.projector as pp
from projectors.geometry import CArm
from projectors.materials import DEFAULT_HU_MATERIALS, HUMaterialMap, LabelMaterial, MaterialModel
from projectors.projector import Projector, SceneVolume, clear_prepared_cache, prepared_cache_info, project
from projectors.volume import Volume

REPO = Path(__file__).resolve().parents[1]


def ct(rng, n=40, integer=True, labels=False):
    hu = rng.normal(40.0, 300.0, (n, n + 3, n - 5)).astype(np.float32)
    hu[:, :, : n // 4] = 1200.0  # some bone
    if integer:
        hu = np.rint(hu)
    lab = rng.integers(0, 3, hu.shape).astype(np.int16) if labels else None
    return Volume.from_array(hu, spacing=(1.0, 0.9, 1.2), labels=lab, label_names={1: "a", 2: "b"} if labels else {})


@pytest.fixture(autouse=True)
def empty_cache():
    clear_prepared_cache()
    yield
    clear_prepared_cache()


def count_builds(monkeypatch) -> list:
    built = []
    original = pp._Prepared.__init__

    def counting(self, *a, **k):
        built.append(1)
        original(self, *a, **k)

    monkeypatch.setattr(pp._Prepared, "__init__", counting)
    return built


def test_project_in_a_loop_prepares_once_and_gives_the_uncached_images(rng, monkeypatch):
    vol = ct(rng)
    cams = [CArm(size=(32, 24), pitch=1.5).camera(a, b) for a, b in [(0, 0), (30, 10), (-60, -20)]]
    built = count_builds(monkeypatch)
    for mode in ("exact", "trilinear"):
        for cam in cams:
            got = project(vol, cam, mode=mode, device="cpu")
            ref = Projector(vol, mode=mode, device="cpu", cache=False).project(cam)
            for m in ref.areal_density:
                np.testing.assert_array_equal(got.areal_density[m], ref.areal_density[m])
            assert got.total_areal_density().max() > 1.0
    # one build for the cached scene (shared by both modes), one per uncached projector
    assert len(built) == 1 + 2 * len(cams)
    assert prepared_cache_info()["entries"] == 1


def test_sx_render_reuses_the_prepared_volume(rng, monkeypatch):
    import synthex as sx

    vol = ct(rng)
    carm = CArm(size=(24, 24), pitch=1.5)
    built = count_builds(monkeypatch)
    images = [sx.render(vol, carm.camera(a, 0), noise=False, scatter=False, device="cpu").image for a in (0, 20, 40)]
    assert len(built) == 1
    again = sx.render(vol, carm.camera(20, 0), noise=False, scatter=False, device="cpu").image
    np.testing.assert_array_equal(again, images[1])
    assert len(built) == 1


def test_cache_rebuilds_for_another_material_model_or_device(rng, monkeypatch):
    vol = ct(rng)
    cam = CArm(size=(24, 24), pitch=1.5).camera(10, 5)
    built = count_builds(monkeypatch)
    a = project(vol, cam, device="cpu")
    # trabecular | cortical bone moved from 1000 to 1500 HU: the 1200 HU block changes channel
    th = list(DEFAULT_HU_MATERIALS.thresholds)
    th[-1] = 1500.0
    other = MaterialModel(hu_map=HUMaterialMap(DEFAULT_HU_MATERIALS.materials, tuple(th)))
    b = project(SceneVolume(vol, other), cam, device="cpu")
    assert len(built) == 2
    assert a.areal_density["bone_cortical"].max() > 1.0 and b.areal_density["bone_cortical"].max() < 0.5 * a.areal_density["bone_cortical"].max()
    np.testing.assert_allclose(a.total_areal_density(), b.total_areal_density(), rtol=1e-5)  # same density
    # label materials are part of the key too
    project(SceneVolume(vol, MaterialModel(label_materials={1: LabelMaterial("titanium", 4.5)})), cam, device="cpu")
    assert len(built) == 3
    # the device is part of the key: the entries differ, and a second device builds its own
    items = [SceneVolume(vol)]
    assert pp._cache_key(items, "cpu") != pp._cache_key(items, "cuda:0")
    import warp as wp

    if wp.get_cuda_device_count():
        c = project(vol, cam, device="cuda:0")
        assert len(built) == 4
        np.testing.assert_allclose(c.total_areal_density(), a.total_areal_density(), rtol=1e-5, atol=1e-6)


def test_cache_does_not_keep_volumes_alive(rng):
    vol = ct(rng)
    project(vol, CArm(size=(16, 16), pitch=2.0).camera(0, 0), device="cpu")
    assert prepared_cache_info()["entries"] == 1
    ref = weakref.ref(vol)
    del vol
    gc.collect()
    assert ref() is None  # nothing (cache, prepared arrays) referenced the volume
    assert prepared_cache_info()["entries"] == 0  # and its entry went with it


def test_cache_is_bounded(rng, monkeypatch):
    monkeypatch.setattr(pp, "CACHE_ENTRIES", 3)
    vols = [ct(rng, n=16) for _ in range(5)]
    for v in vols:
        project(v, CArm(size=(8, 8), pitch=3.0).camera(0, 0), device="cpu")
    assert prepared_cache_info()["entries"] == 3


def test_projector_holds_two_bytes_per_voxel_for_integer_hu(rng):
    """Integer-HU CT: the projector holds the 2-byte index ``HU - hu_min`` and small tables, nothing
    volume-sized else; fractional HU: it reads the volume's own float32 array (no copy on the CPU);
    labels add 2 bytes per voxel (with the index: one 4-byte word ``index | label << 16``, so that the
    exact walk reads one cache line a voxel)."""
    vol = ct(rng, n=64)
    p = Projector(vol, device="cpu")
    assert p.kernel_path == "single-u16"
    s = p._prep.single
    n = vol.hu.size
    assert s["vox"].dtype.__name__ == "uint16" and s["vox"].size == n and s["vox32"].size == 1
    np.testing.assert_array_equal(s["vox"].numpy().reshape(vol.shape).astype(np.float32) + p._params[0].lut_hu_min, vol.hu)
    table_bytes = s["table"].size * 64 + s["quad"].size * 64
    assert prepared_cache_info()["bytes"] <= 2 * n + table_bytes

    f = ct(rng, n=64, integer=False)
    pf = Projector(f, device="cpu")
    assert pf.kernel_path == "single-f32"
    assert pf._prep.single["vox32"].ptr == f.hu.ctypes.data  # the volume's own memory

    lab = ct(rng, n=64, labels=True)
    pl = Projector(lab, device="cpu")
    s = pl._prep.single
    assert s["vox"].dtype.__name__ == "uint32" and s["vox"].size == n and s["labels"].size == 1
    word = s["vox"].numpy().reshape(lab.shape)
    np.testing.assert_array_equal((word & 0xFFFF).astype(np.float32) + pl._params[0].lut_hu_min, lab.hu)
    np.testing.assert_array_equal(word >> 16, lab.labels)

    lf = Volume(f.hu, f.world_from_ijk, labels=lab.labels, label_names=lab.label_names)
    s = Projector(lf, device="cpu")._prep.single
    assert s["labels"].dtype.__name__ == "uint16" and s["labels"].size == n and s["vox"].size == 1


@pytest.mark.parametrize("labelled", [False, True])
def test_preparing_a_volume_makes_no_volume_sized_temporaries(labelled, rng):
    """Peak host memory while preparing a 256^3 integer-HU volume: the 2-byte index plus slabs of
    4 M voxels (64 MB of float32 HU would be one volume-sized temporary too many); with labels, also
    the 4-byte packed word, built in place (packing with temporaries would hold ~20 bytes a voxel)."""
    hu = np.rint(rng.normal(0.0, 200.0, (256, 256, 256))).astype(np.float32)
    labels = rng.integers(0, 3, hu.shape).astype(np.int32) if labelled else None
    vol = Volume.from_array(hu, spacing=1.0, labels=labels, label_names={1: "a", 2: "b"} if labelled else {})
    del hu, labels
    project(ct(rng, n=8, labels=labelled), CArm(size=(4, 4), pitch=3.0).camera(0, 0), device="cpu")  # Warp loaded first
    tracemalloc.start()
    try:
        Projector(vol, device="cpu", cache=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    n = 256**3
    words = 4 * n if labelled else 0
    assert peak < 2 * n + words + 2 * 4 * (1 << 22) + 8e6, peak / 1e6  # index (+ word) + two float32 slabs + tables


@pytest.mark.parametrize("mode", ["exact", "trilinear"])
def test_total_areal_density_equals_plain_numba_reference(mode, rng):
    """An independent, deliberately plain implementation (benchmarks/reference_numba.py: one
    channel, textbook Siddon / trilinear marcher, float64 arithmetic) of the same line integrals:
    synthex's total areal density equals it. Exact mode: synthex's ray parameters are float32, so
    each plane crossing (t ~ 500 mm from the source, ulp 6e-5 mm) may move by ~1e-4 mm; with
    neighbouring voxels differing by up to 0.25 g/cm^2 per mm here that is ~3e-5 g/cm^2 per
    crossing, ~3e-4 over the ~100 crossings of a ray (a traversal error would be ~0.1 or more).
    Trilinear: synthex interpolates HU where the reference interpolates density; they agree where
    density(HU) is linear, and the volume here stays in one linear piece (HU > 0)."""
    numba = pytest.importorskip("numba", reason="numba (the 'bench' extra) is needed for the reference")  # noqa: F841
    sys.path.insert(0, str(REPO / "benchmarks"))
    import reference_numba as ref

    hu = rng.uniform(100.0, 2500.0, (37, 41, 29)).astype(np.float32)  # one linear piece of the calibration
    if mode == "exact":
        hu = rng.uniform(-1100.0, 2500.0, hu.shape).astype(np.float32)
    vol = Volume.from_array(hu, spacing=(0.9, 1.1, 1.3))
    dens = (DEFAULT_HU_MATERIALS.density(hu) * 0.1).astype(np.float32)
    G = ref.grid_from_world(vol.world_from_ijk.matrix)
    carm = CArm(sdd=1020.0, sid=530.0, size=(40, 36), pitch=1.4)
    for alpha, beta in [(0, 0), (35, -12), (-80, 30)]:
        cam = carm.camera(alpha, beta)
        got = project(vol, cam, mode=mode, step=0.4, device="cpu").total_areal_density()
        want = ref.render("siddon" if mode == "exact" else "trilinear", dens, G, cam, 0.4)
        assert want.max() > 1.0
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=5e-4 if mode == "exact" else 2e-5)


def test_cuda_reference_equals_the_cpu_reference_in_the_simulator():
    """benchmarks/reference_numba_cuda.py (the GPU yardstick of speed.py --device cuda) run by numba's
    CUDA simulator, which executes the kernels as Python on the CPU: the same line integrals as the
    CPU reference. It computes in float32 where the CPU reference uses float64: a ray's ~30 terms
    differ by ~1e-6 relative each, so 1e-4 of the largest value bounds the difference."""
    pytest.importorskip("numba", reason="numba (the 'bench' extra) is needed for the references")
    code = """
import sys, json
sys.path.insert(0, 'benchmarks')
import numpy as np
import reference_numba as ref, reference_numba_cuda as refc
from projectors.geometry import CArm
rng = np.random.default_rng(0)
vol = rng.uniform(0, 0.2, (12, 10, 9)).astype(np.float32)
aff = np.diag([1.0, 1.2, 0.9, 1.0]); aff[:3, 3] = -np.array([6, 6, 4])
G = ref.grid_from_world(aff)
cam = CArm(sdd=300.0, sid=150.0, size=(8, 7), pitch=3.0).camera(20, -10)
out = {}
for kind in ("siddon", "trilinear"):
    a = ref.render(kind, vol, G, cam, 0.5)
    b = refc.Renderer(vol, G, kind, 0.5).render(cam)
    out[kind] = [float(np.abs(a - b).max()), float(a.max()), float((a > 0).mean())]
print(json.dumps(out))
"""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for kind, (diff, peak, seen) in json.loads(res.stdout.strip().splitlines()[-1]).items():
        assert peak > 1.0 and seen > 0.9, kind  # the rays cross the volume
        assert diff <= 1e-4 * peak, (kind, diff, peak)

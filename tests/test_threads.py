"""CPU threads of the projector: the override, the environment variable, the worker-process share,
and that the image does not depend on how many threads render it."""

from __future__ import annotations

import os

import numpy as np
import pytest

import projectors.projector as pp
from projectors.geometry import CArm
from projectors.volume import Volume


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    monkeypatch.delenv("SYNTHEX_THREADS", raising=False)
    yield
    pp.set_cpu_threads(None)


def test_override_environment_and_bad_values(monkeypatch):
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count()
    assert pp.cpu_threads() == cores
    monkeypatch.setenv("SYNTHEX_THREADS", "3")
    assert pp.cpu_threads() == 3
    pp.set_cpu_threads(1)  # the explicit setting wins over the environment
    assert pp.cpu_threads() == 1
    pp.set_cpu_threads(None)
    assert pp.cpu_threads() == 3
    monkeypatch.setenv("SYNTHEX_THREADS", "zero")
    with pytest.raises(ValueError, match="SYNTHEX_THREADS must be a whole number >= 1"):
        pp.cpu_threads()
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="whole number >= 1"):
            pp.set_cpu_threads(bad)


def test_runner_worker_initializer_gives_each_worker_its_share(monkeypatch):
    from synthex import runner

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    runner._worker_threads(1)
    assert pp.cpu_threads() == 1
    assert os.environ["SYNTHEX_THREADS"] == "1" and os.environ["OMP_NUM_THREADS"] == "1"
    torch = pytest.importorskip("torch")
    runner._worker_threads(2)
    assert torch.get_num_threads() == 2 and pp.cpu_threads() == 2


def test_image_does_not_depend_on_the_number_of_threads(rng):
    """Threads render disjoint tiles: 1, 2 and 5 threads (more than tiles per thread) give the same bits."""
    vol = Volume.from_array(np.rint(rng.normal(0, 400, (30, 34, 28))).astype(np.float32), spacing=1.1)
    cam = CArm(size=(150, 70), pitch=0.9).camera(25, -10)
    images = []
    for n in (1, 2, 5):
        pp.set_cpu_threads(n)
        for mode in ("exact", "trilinear"):
            images.append((n, mode, pp.project(vol, cam, mode=mode, device="cpu").total_areal_density()))
    for n, mode, img in images:
        ref = next(i for m, md, i in images if m == 1 and md == mode)
        np.testing.assert_array_equal(img, ref, err_msg=f"{n} threads, {mode}")
        assert img.max() > 1.0

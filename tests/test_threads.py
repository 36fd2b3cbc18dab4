"""CPU threads of the projector: the override, the environment variable, the worker-process share,
and that the image does not depend on how many threads render it."""

from __future__ import annotations

import os

import numpy as np
import pytest

import projectors.projector as pp
from projectors.geometry import CArm
from projectors.volume import Volume


THREAD_VARS = ("SYNTHEX_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@pytest.fixture(autouse=True)
def restore_threads():
    """No thread variables during a test; afterwards the environment as it was (the worker initializer
    writes os.environ directly)."""
    saved = {v: os.environ.pop(v) for v in THREAD_VARS if v in os.environ}
    yield
    for v in THREAD_VARS:
        os.environ.pop(v, None)
    os.environ.update(saved)
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


def _blas_threads(info: list[dict]) -> set[int]:
    return {pool["num_threads"] for pool in info if pool["user_api"] == "blas"}


def test_runner_worker_initializer_gives_each_worker_its_share():
    from threadpoolctl import threadpool_info, threadpool_limits

    from synthex import runner

    blas = threadpool_info()
    try:
        runner._worker_threads(1)
        assert pp.cpu_threads() == 1
        assert os.environ["SYNTHEX_THREADS"] == "1" and os.environ["OMP_NUM_THREADS"] == "1"
        assert _blas_threads(threadpool_info()) == {1}  # numpy's BLAS, loaded before the call
        torch = pytest.importorskip("torch")
        runner._worker_threads(2)
        assert torch.get_num_threads() == 2 and pp.cpu_threads() == 2
    finally:
        for pool in blas:
            threadpool_limits(pool["num_threads"], user_api=pool["user_api"])


def test_spawned_worker_blas_pool_gets_its_share():
    """A spawned worker imports numpy (and so OpenBLAS reads its thread count) before the initializer
    runs: the initializer must limit the loaded pool, not only set OPENBLAS_NUM_THREADS."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from threadpoolctl import threadpool_info

    from synthex import runner

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=runner._worker_init,
                             initargs=(os.getpid(), 1)) as ex:
        info = ex.submit(threadpool_info).result(timeout=120)
    assert _blas_threads(info) == {1}


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

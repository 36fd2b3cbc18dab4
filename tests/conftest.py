"""Shared test fixtures. Real third-party data lives in ../shared/data beside the repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthex.shared_data import shared_data

REPO = Path(__file__).resolve().parents[1]


SHARED_DATA = shared_data()


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="Warp device for the projector, mesh and Monte Carlo kernel tests (cpu, cuda, cuda:N); "
                          "the same tests and tolerances run on it (default: cpu)")


def pytest_configure(config):
    """An unavailable ``--device`` stops the run with one message, before any test."""
    if config.getoption("--device") != "cpu":
        from projectors.projector import DeviceError, resolve_device

        try:
            config.option.device = resolve_device(config.getoption("--device"))
        except DeviceError as e:
            raise pytest.UsageError(f"--device: {e}") from None


@pytest.fixture(scope="session")
def device(request) -> str:
    """The device the kernel tests run on (``pytest --device cuda``): one kernel source, selected by device."""
    return request.config.getoption("--device")


def shared_file(relpath: str) -> Path:
    """Path of a file in ../shared/data, or skip the test with a clear reason."""
    p = SHARED_DATA / relpath
    if not p.exists():
        pytest.skip(f"shared test data not found: {p} (see ../shared/data/README.md)")
    return p


def deepdrr_density(hu):
    """DeepDRR's HU -> g/cm^3 formula, written independently of projectors.materials."""
    hu = np.asarray(hu, dtype=np.float64)
    return np.maximum(np.minimum(0.001029 * hu + 1.03, 0.0005886 * hu + 1.03), 0.0)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

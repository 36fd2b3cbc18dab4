"""Shared test fixtures. Real third-party data lives in ../shared/data beside the repository."""

from __future__ import annotations

from pathlib import Path

import os

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    """``$SYNTHEX_SHARED_DATA``, else ``../shared/data`` beside the repository, else ``/work/shared/data``
    (where a git worktree nested deeper than the repository still finds it)."""
    candidates = [Path(os.environ["SYNTHEX_SHARED_DATA"])] if os.environ.get("SYNTHEX_SHARED_DATA") else []
    candidates += [REPO.parent / "shared" / "data", Path("/work/shared/data")]
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED_DATA = _shared_data()


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

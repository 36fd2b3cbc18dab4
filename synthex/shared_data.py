"""Where the shared third-party data lives (real CTs and radiographs, ``../shared/data``; see its README).

Used by the tests, the benchmarks and ``synthex bench``; never by rendering, which reads only the paths a
config names. ``$SYNTHEX_SHARED_DATA`` wins; else ``../shared/data`` beside the repository (a source
checkout); else ``/work/shared/data`` (where a git worktree nested elsewhere still finds it).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data(rel: str = "") -> Path:
    """The shared data folder (the first candidate that exists, else the first candidate), joined with ``rel``."""
    env = os.environ.get("SYNTHEX_SHARED_DATA")
    candidates = ([Path(env)] if env else []) + [REPO.parent / "shared" / "data", Path("/work/shared/data")]
    base = next((c for c in candidates if c.is_dir()), candidates[0])
    return base / rel if rel else base

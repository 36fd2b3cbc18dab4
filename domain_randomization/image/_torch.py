"""torch / kornia glue: numpy (H, W) <-> torch (B, 1, H, W), no autograd."""

from __future__ import annotations

import numpy as np

try:
    import kornia
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "image-level randomization needs torch and kornia: pip install 'synthex-xray[augment]'"
    ) from exc

__all__ = ["kornia", "torch", "run_on_image", "run_on_stack"]


def run_on_stack(stack: np.ndarray, fn) -> np.ndarray:
    """Apply ``fn`` to a float32 (B, H, W) stack as a (B, 1, H, W) tensor."""
    t = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    with torch.no_grad():
        out = fn(t)
    return out[:, 0].numpy()


def run_on_image(image: np.ndarray, fn) -> np.ndarray:
    return run_on_stack(image[None], fn)[0]

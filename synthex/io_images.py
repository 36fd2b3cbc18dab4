"""Small image I/O helpers (PNG via Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path, image: np.ndarray) -> None:
    """Write a float image in [0, 1] (grey) or (H, W, 3) as an 8-bit PNG, atomically."""
    from PIL import Image

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
    tmp.replace(path)


def save_png16(path, image) -> None:
    """Write a float image in [0, 1] (or a uint16 array) as a 16-bit greyscale PNG, atomically."""
    from PIL import Image

    from projectors.physics.display import to_uint16

    a = np.asarray(image)
    if a.dtype != np.uint16:
        a = to_uint16(np.nan_to_num(a.astype(np.float64)))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(a).save(tmp, format="PNG")
    tmp.replace(path)


def contact_sheet(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Images of equal height side by side with a white gap."""
    h = max(im.shape[0] for im in images)
    parts = []
    for im in images:
        pad = np.zeros((h, im.shape[1]), dtype=np.float32)
        pad[: im.shape[0]] = im
        parts += [pad, np.ones((h, gap), dtype=np.float32)]
    return np.concatenate(parts[:-1], axis=1)

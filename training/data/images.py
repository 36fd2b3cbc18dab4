"""Reading single 2D image files (PNG, TIFF, JPEG via Pillow; ``.npy``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataFormatError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".npy")


def read_image_file(path: Path, *, grayscale: bool = True) -> np.ndarray:
    """The pixel array of one 2D image file; RGB(A) images become grey (luma)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"image file {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise DataFormatError(f"{path} is not a readable .npy array: {e}") from None
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                if grayscale and im.mode in ("RGB", "RGBA", "P", "LA", "CMYK"):
                    im = im.convert("L")
                arr = np.asarray(im)
        except (UnidentifiedImageError, OSError) as e:
            raise DataFormatError(f"{path} is not a readable image: {e}") from None
    if arr.ndim != 2:
        raise DataFormatError(f"{path}: expected a 2D single-channel image, got shape {arr.shape}")
    return arr


def find_with_stem(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def read_mask(folder: Path, stem: str) -> np.ndarray:
    """The class-index mask with ``stem`` in ``folder`` (any image suffix), as int64."""
    path = find_with_stem(folder, stem)
    if path is None:
        raise DataFormatError(f"{folder} has no mask for image {stem!r}")
    return read_image_file(path, grayscale=False).astype(np.int64)

"""Image sources for a visual Turing test: folders of PNG/TIFF/DICOM images and synthex datasets.

Every source becomes a list of :class:`SourceImage` (where it came from + how to load it).
Loading gives a :class:`DisplayImage`: the pixels after their display window, as floats in
[0, 1]. The window is:

- DICOM: modality LUT (rescale slope/intercept), then the first VOI window of the file's
  ``WindowCenter``/``WindowWidth`` tags through the file's VOI LUT function (LINEAR, LINEAR_EXACT
  or SIGMOID, PS3.3 C.11.2.1.2-3);
  without window tags, a VOI LUT sequence if there is one; otherwise the image's own
  minimum..maximum. MONOCHROME1 images are inverted so that bright means dense everywhere.
- everything else (PNG, TIFF, dataset arrays): the image's own minimum..maximum, the same rule
  for real and synthetic images so that intensity scaling cannot tell them apart.

Readers are chosen from :data:`READERS` by file suffix (DICOM files without a suffix are found
by their ``DICM`` preamble); add one with :func:`register_reader`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from synthex.vtt import VTTError


@dataclass(frozen=True)
class DisplayImage:
    """A 2D image after its display window: ``pixels`` (H, W) float64 in [0, 1]."""

    pixels: np.ndarray
    source_dtype: str  # dtype the pixels were stored in (uint8, uint16, float32, ...)


@dataclass(frozen=True)
class SourceImage:
    """One image of a source: ``ref`` says where it came from (it goes only into the key)."""

    ref: str
    load: Callable[[], DisplayImage]


# ---------------------------------------------------------------------------- windows (pure)


def apply_window(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear window: ``lo`` -> 0, ``hi`` -> 1, clipped; ``hi <= lo`` is a threshold at ``lo``."""
    values = np.asarray(values, dtype=np.float64)
    if hi <= lo:
        return (values > lo).astype(np.float64)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def dicom_window_bounds(center: float, width: float) -> tuple[float, float]:
    """Input values that DICOM's linear VOI function maps to the bottom and top of the output.

    PS3.3 C.11.2.1.2.1: ``x <= c - 0.5 - (w - 1) / 2`` -> minimum output,
    ``x > c - 0.5 + (w - 1) / 2`` -> maximum output, linear in between. ``w >= 1``.
    """
    if not np.isfinite(center) or not np.isfinite(width) or width < 1:
        raise VTTError(f"DICOM window must have a finite center and a width >= 1, got center={center}, width={width}")
    lo = center - 0.5 - (width - 1) / 2
    return lo, lo + (width - 1)


def voi_linear_exact(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM LINEAR_EXACT (PS3.3 C.11.2.1.3.2): ``c - w/2`` -> 0, ``c + w/2`` -> 1. ``w > 0``."""
    if width <= 0:
        raise VTTError(f"DICOM LINEAR_EXACT window needs a width > 0, got {width}")
    return apply_window(values, center - width / 2, center + width / 2)


def voi_sigmoid(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM SIGMOID (PS3.3 C.11.2.1.3.1): ``1 / (1 + exp(-4 (x - c) / w))``. ``w > 0``."""
    if width <= 0:
        raise VTTError(f"DICOM SIGMOID window needs a width > 0, got {width}")
    return 1.0 / (1.0 + np.exp(-4.0 * (np.asarray(values, dtype=np.float64) - center) / width))


# DICOM VOI LUT Function (0028,1056) -> f(values, center, width) in [0, 1]; LINEAR when absent.
VOI_FUNCTIONS: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "LINEAR": lambda values, center, width: apply_window(values, *dicom_window_bounds(center, width)),
    "LINEAR_EXACT": voi_linear_exact,
    "SIGMOID": voi_sigmoid,
}


def validated_pixels(array: np.ndarray, name: str) -> np.ndarray:
    """A 2D image of finite real numbers as float64 (a singleton channel axis is dropped)."""
    array = np.asarray(array)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.squeeze(axis=0 if array.shape[0] == 1 else -1)
    if array.ndim != 2:
        raise VTTError(f"{name}: expected a 2D grayscale image, got an array of shape {array.shape}")
    if min(array.shape) < 1:
        raise VTTError(f"{name}: image is empty (shape {array.shape})")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == bool):
        raise VTTError(f"{name}: pixel values must be real numbers, got dtype {array.dtype}")
    values = array.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise VTTError(f"{name}: {int(bad.sum())} pixels are NaN or infinite")
    return values


def display_from_array(array: np.ndarray, name: str) -> DisplayImage:
    """Validate a 2D image and scale it from its own minimum (0) to maximum (1)."""
    values = validated_pixels(array, name)
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        raise VTTError(f"{name}: image is constant (every pixel is {lo}); nothing to show a rater")
    return DisplayImage(apply_window(values, lo, hi), str(np.asarray(array).dtype))


# ---------------------------------------------------------------------------- file readers

READERS: dict[str, Callable[[Path], DisplayImage]] = {}


def register_reader(suffixes: tuple[str, ...], reader: Callable[[Path], DisplayImage]) -> None:
    """Register ``reader(path) -> DisplayImage`` for files ending in any of ``suffixes``."""
    for suffix in suffixes:
        READERS[suffix.lower()] = reader


def read_raster(path: Path) -> DisplayImage:
    """PNG or TIFF via Pillow: 8/16-bit grayscale, 32-bit int or float; colour -> luminance."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise VTTError(f"{path}: has {image.n_frames} frames; a study image must be a single 2D image")
            if image.mode in ("1", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("L")
            array = np.array(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise VTTError(f"{path}: cannot be read as an image ({e})") from None
    return display_from_array(array, str(path))


def read_dicom(path: Path) -> DisplayImage:
    """A single-frame grayscale DICOM image, windowed as described in the module docstring."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError) as e:
        raise VTTError(f"{path}: cannot be read as DICOM ({e})") from None
    if "PixelData" not in ds:
        raise VTTError(f"{path}: DICOM file has no pixel data")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise VTTError(f"{path}: multi-frame DICOM ({ds.NumberOfFrames} frames); export a single frame")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise VTTError(f"{path}: colour DICOM (SamplesPerPixel={ds.SamplesPerPixel}); X-rays are grayscale")
    try:
        stored = ds.pixel_array
    except Exception as e:  # pixel data handlers raise many types; one clear message
        raise VTTError(f"{path}: cannot decode DICOM pixel data ({e})") from None
    name = str(path)
    values = validated_pixels(apply_modality_lut(stored, ds), name)
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
        if function not in VOI_FUNCTIONS:
            raise VTTError(f"{path}: unknown VOI LUT function {function!r} (known: {', '.join(VOI_FUNCTIONS)})")
        image = DisplayImage(VOI_FUNCTIONS[function](values, _first_value(center), _first_value(width)), str(stored.dtype))
    elif "VOILUTSequence" in ds:
        image = display_from_array(np.asarray(apply_voi_lut(stored, ds), dtype=np.float64), name)
    else:
        image = display_from_array(values, name)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        image = DisplayImage(1.0 - image.pixels, image.source_dtype)
    return DisplayImage(image.pixels, str(stored.dtype))


register_reader((".png", ".tif", ".tiff"), read_raster)
register_reader((".dcm", ".dicom"), read_dicom)


def _first_value(value) -> float:
    """WindowCenter/WindowWidth may hold several windows; the first is the default one."""
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)


def _is_dicom_without_suffix(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


# ---------------------------------------------------------------------------- sources


def folder_images(folder: Path) -> list[SourceImage]:
    """Every readable image under ``folder`` (recursively, hidden files skipped), in path order."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        reader = READERS.get(path.suffix.lower())
        if reader is None and path.suffix == "" and _is_dicom_without_suffix(path):
            reader = read_dicom
        if reader is not None:
            found.append(SourceImage(str(path), lambda path=path, reader=reader: reader(path)))
    if not found:
        raise VTTError(f"{folder}: no images found (looked for {', '.join(sorted(READERS))} and DICOM files)")
    return found


#: which array of a synthex dataset a study shows: ``images``, which a synthex dataset (format v2) stores
#: without image-level augmentation (inversion or salt-and-pepper would give synthetic images away)
DATASET_ARRAYS = ("images",)


def dataset_images(dataset: Path, arrays=DATASET_ARRAYS) -> list[SourceImage]:
    """The images of a synthex dataset, read with :func:`synthex.dataset.open_dataset` (manifest
    checked, every shard's sha256 verified first); per shard the first of ``arrays`` it has."""
    import h5py

    from synthex.dataset import DatasetError, open_dataset

    try:
        ds = open_dataset(dataset)
    except DatasetError as e:
        raise VTTError(f"{dataset}: {e}") from None
    found = []
    for shard in ds.shards:
        try:
            with h5py.File(shard.path, "r") as f:
                key = next((k for k in arrays if k in f), None)
                if key is None:
                    raise VTTError(f"{shard.path}: shard has none of the arrays {list(arrays)}")
                shape = f[key].shape
        except OSError as e:
            raise VTTError(f"{shard.path}: cannot be opened as HDF5 ({e})") from None
        if len(shape) not in (3, 4):
            raise VTTError(f"{shard.path}: '{key}' should be (N, H, W), got shape {shape}")
        rel = shard.path.relative_to(dataset).as_posix()
        for i in range(shape[0]):
            found.append(SourceImage(f"{rel}:{key}[{i}]", lambda p=shard.path, k=key, i=i: _shard_image(p, k, i)))
    return found


def _shard_image(shard: Path, key: str, index: int) -> DisplayImage:
    import h5py

    with h5py.File(shard, "r") as f:
        array = f[key][index]
    return display_from_array(array, f"{shard}:{key}[{index}]")


def open_source(path: str | Path) -> list[SourceImage]:
    """All images of a folder or of a synthex dataset (a folder with ``manifest.json``)."""
    path = Path(path)
    if not path.exists():
        raise VTTError(f"{path}: no such folder")
    if not path.is_dir():
        raise VTTError(f"{path}: expected a folder of images or a synthex dataset folder, got a file")
    if (path / "manifest.json").is_file():
        return dataset_images(path)
    return folder_images(path)

"""Reading single 2D X-ray image files: PNG, TIFF, JPEG (Pillow), ``.npy`` and DICOM (pydicom).

:func:`read_xray` is the one way an image file becomes the ``(H, W)`` float32
image in ``[0, 1]`` that every reader hands to training, evaluation and
``synthex predict``:

* PNG / TIFF / JPEG / ``.npy``: colour becomes grey (luma); integer images are
  divided by their dtype's maximum (8-bit by 255, 16-bit by 65535); float images
  are min-max scaled only if they leave ``[0, 1]``
  (:func:`~training.data.base.to_unit_range`).
* DICOM (single frame, grayscale): the modality LUT (rescale slope/intercept or a
  modality LUT sequence), then the VOI transform the file asks for (its first
  ``WindowCenter``/``WindowWidth`` through its ``VOILUTFunction`` LINEAR,
  LINEAR_EXACT or SIGMOID, or its VOI LUT sequence), both by pydicom, then scaled
  from its minimum to its maximum; ``MONOCHROME1`` (bright = low values) is
  inverted so that bright means dense everywhere. The pixel size is
  ``ImagerPixelSpacing`` (at the detector), else ``PixelSpacing``; both store
  (row spacing, column spacing), i.e. ``(dv, du)``.

Models z-score each image after resizing (:func:`training.data.prepare.zscore`),
so an affine change of grey levels (which 16-bit range, which min-max) never
changes what a model sees; the DICOM window's clipping and shape do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .base import DataFormatError, PixelSize, as_pixel_size, to_unit_range

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".npy")
DICOM_SUFFIXES = (".dcm", ".dicom")
XRAY_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES


def read_image_file(path: Path, *, grayscale: bool = True) -> np.ndarray:
    """The pixel array of one 2D image file (not DICOM); RGB(A) images become grey (luma)."""
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
                if getattr(im, "n_frames", 1) > 1:
                    raise DataFormatError(f"{path}: has {im.n_frames} frames; expected one 2D image")
                if grayscale and im.mode in ("RGB", "RGBA", "RGBX", "P", "PA", "LA", "CMYK", "YCbCr", "1"):
                    im = im.convert("L")
                arr = np.asarray(im)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise DataFormatError(f"{path} is not a readable image: {e}") from None
    if arr.ndim != 2:
        raise DataFormatError(f"{path}: expected a 2D single-channel image, got shape {arr.shape}")
    return arr


@dataclass
class XrayImage:
    """One image file as models see it: ``image`` float32 (H, W) in [0, 1]."""

    image: np.ndarray
    pixel_size_mm: PixelSize | None = None
    pixel_size_note: str = ""
    info: dict = field(default_factory=dict)


def is_dicom(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` file, or any file with DICOM's ``DICM`` marker after its 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_xray(path) -> XrayImage:
    """Read one X-ray image file (see the module docstring for each format's rule)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"image file {path} does not exist")
    if is_dicom(path):
        return read_dicom_xray(path)
    arr = read_image_file(path)
    if not np.all(np.isfinite(arr)):
        raise DataFormatError(f"{path}: image contains NaN or infinite values")
    return XrayImage(to_unit_range(arr), info={"format": path.suffix.lower().lstrip("."), "dtype": str(arr.dtype)})


def read_dicom_xray(path) -> XrayImage:
    """A single-frame grayscale DICOM image: modality LUT, VOI window/LUT, [0, 1], MONOCHROME1 inverted."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise DataFormatError(f"{path}: cannot be read as DICOM ({e})") from None
    if "PixelData" not in ds:
        raise DataFormatError(f"{path}: DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataFormatError(f"{path}: multi-frame DICOM ({frames} frames); give one frame per file")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DataFormatError(f"{path}: colour DICOM (SamplesPerPixel={ds.SamplesPerPixel}); X-rays are grayscale")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataFormatError(f"{path}: PhotometricInterpretation {photometric!r}; expected MONOCHROME1/2")
    try:
        stored = ds.pixel_array
        values = np.asarray(apply_voi_lut(apply_modality_lut(stored, ds), ds), dtype=np.float64)
    except Exception as e:  # pixel-data handlers and LUT code raise many types: one clear message
        raise DataFormatError(f"{path}: cannot decode the DICOM pixel data ({type(e).__name__}: {e})") from None
    if values.ndim != 2:
        raise DataFormatError(f"{path}: expected a 2D image, got pixel data of shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise DataFormatError(f"{path}: pixel data contains NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    image = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    pixel, note = None, "unknown: the DICOM file has neither ImagerPixelSpacing nor PixelSpacing"
    for tag in ("ImagerPixelSpacing", "PixelSpacing"):
        if ds.get(tag) is not None:
            row, col = (float(x) for x in ds.get(tag))
            pixel = as_pixel_size((col, row), f"{path}: {tag}")
            note = f"DICOM {tag}" + (" (at the detector)" if tag == "ImagerPixelSpacing" else
                                     " (may be calibrated to the patient plane)")
            break
    window = None
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None and "VOILUTSequence" not in ds:
        window = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    info = {"format": "dicom", "dtype": str(stored.dtype), "bits_stored": int(ds.get("BitsStored", 0) or 0),
            "photometric": photometric, "voi": "VOI LUT sequence" if "VOILUTSequence" in ds else
            (f"window ({window})" if window else "none (minimum..maximum)")}
    return XrayImage(image.astype(np.float32), pixel, note, info)


def find_xray_files(paths) -> list[Path]:
    """Image files among ``paths`` (files as given; folders searched recursively, hidden entries
    skipped, in sorted order): suffixes :data:`XRAY_SUFFIXES` and suffix-less DICOM files."""
    found: list[Path] = []
    for p in (Path(x) for x in paths):
        if not p.exists():
            raise DataFormatError(f"{p} does not exist")
        if p.is_file():
            found.append(p)
            continue
        hits = []
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            if any(part.startswith(".") for part in f.relative_to(p).parts):
                continue
            if f.suffix.lower() in XRAY_SUFFIXES or (f.suffix == "" and is_dicom(f)):
                hits.append(f)
        if not hits:
            raise DataFormatError(f"{p}: no images found (looked recursively for {', '.join(XRAY_SUFFIXES)} "
                                  "and suffix-less DICOM files)")
        found += hits
    if not found:
        raise DataFormatError("no images given")
    return found


def find_with_stem(folder: Path, stem: str) -> Path | None:
    for suffix in XRAY_SUFFIXES:
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

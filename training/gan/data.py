"""Data in and out of the GAN baselines.

In: :func:`load_labelled` reads any labelled collection
:func:`training.data.open_source` reads (synthex datasets, COCO, DeepFluoro HDF5,
image folders, SyntheX's per-index layout) into memory at the GAN's square size,
labels and landmarks moved with the images; :func:`load_images` reads unlabelled
X-rays (a folder of image files, or the images of any labelled collection).
Images are float32 ``(H, W)`` in ``[0, 1]``; landmarks ``(u, v)`` pixels with pixel
``(0, 0)`` the centre of the top-left pixel, NaN where unlabelled
(:mod:`training.data.base`).

Out: :func:`write_folder_dataset` writes the ``folder`` layout
(:mod:`training.data.folder`: ``dataset.json``, ``images/``, ``masks/``,
``landmarks/``) that ``open_source`` reads back, into a temporary folder renamed
when complete, so an interrupted run never leaves a set that looks finished.

Label-map augmentation for pix2pix sampling (:func:`sample_label_warp`,
:func:`apply_label_warp`) is :mod:`domain_randomization.image`'s affine op: one
drawn record moves the label map and the landmarks together, and is stored with
the synthesized sample.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import GANError
from .common import progress_bar as _bar


@dataclass
class LabelledSet:
    """A collection in memory at one square size (``images.shape == (N, size, size)``): about
    5 bytes per pixel, e.g. 330 MB for 1,000 images at 256 px."""

    images: np.ndarray                 # (N, S, S) float32 in [0, 1]
    labels: np.ndarray | None          # (N, S, S) class indices (uint8, int32 above 256 classes), or None
    landmarks: np.ndarray              # (N, L, 2) float64 (u, v), NaN = not labelled
    subjects: list[str]
    names: list[str]
    classes: list[str]
    landmark_names: list[str]
    pixel_size_mm: tuple[float, float] | None = None   # of the resized images, (du, dv)
    source: str = ""
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def _pixel_pair(value) -> tuple[float, float] | None:
    if value is None:
        return None
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    a = np.repeat(a, 2) if a.size == 1 else a
    return (float(a[0]), float(a[1])) if a.size == 2 else None


def _open(source):
    from training.data import open_source
    from training.data.base import Source

    return source if isinstance(source, Source) else open_source(source)


def load_labelled(source, size: int, indices=None, *, need_labels: bool = True,
                  progress: bool = False) -> LabelledSet:
    """Read ``indices`` of ``source`` (a :class:`~training.data.base.Source` or a path
    ``open_source`` reads) resized to ``size x size`` (images bilinear with antialiasing,
    label maps nearest, landmarks by the per-axis scale, as training's
    :class:`~training.data.prepare.TaskImages`)."""
    from training.data.prepare import resize_image, resize_labels, scale_points

    src = _open(source)
    if need_labels and not src.has_labels:
        raise GANError(f"{src.path} has no label maps; pix2pix learns label map -> image and needs them")
    idx = np.arange(len(src)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(idx) == 0:
        raise GANError(f"{src.path}: no images selected (the dataset or the split is empty)")
    images, labels, landmarks, pitches = [], [], [], set()
    with _bar(progress, len(idx), f"reading {Path(src.path).name}") as step:
        for i in idx:
            rec = src[int(i)]
            h, w = rec.image.shape
            images.append(resize_image(rec.image, size))
            if rec.labels is None:
                if need_labels:
                    raise GANError(f"{src.path} item {rec.name} has no label map")
                labels = None
            elif labels is not None:
                labels.append(resize_labels(rec.labels, size))
            landmarks.append(scale_points(rec.landmarks, (size / w, size / h)))
            px = _pixel_pair(getattr(rec, "pixel_size_mm", None) or src.pixel_size_mm)
            pitches.add(None if px is None else (round(px[0] * w / size, 9), round(px[1] * h / size, 9)))
            step()
    pitch = pitches.pop() if len(pitches) == 1 else None
    return LabelledSet(
        images=np.stack(images).astype(np.float32),
        labels=np.stack(labels).astype(np.uint8 if len(src.classes) <= 256 else np.int32) if labels else None,
        landmarks=np.stack(landmarks) if landmarks else np.zeros((0, 0, 2)),
        subjects=[src.subjects[int(i)] for i in idx], names=[src.names[int(i)] for i in idx],
        classes=list(src.classes), landmark_names=list(src.landmarks), pixel_size_mm=pitch,
        source=src.describe(), info={"path": str(src.path), "format": src.format})


def find_image_files(folder) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden entries skipped, sorted)."""
    from training.data.images import IMAGE_SUFFIXES

    root = Path(folder)
    if not root.exists():
        raise GANError(f"target {root} does not exist")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise GANError(f"target folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                       "give a folder of X-ray image files or a labelled dataset")
    return files


def center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an image (keeps the anatomy's aspect ratio)."""
    h, w = image.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[top:top + s, left:left + s]


FITS = ("crop", "resize")


def load_images(target, size: int, *, fit: str = "crop", progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """Unlabelled X-rays at ``size x size``: ``(images (N, S, S) float32 in [0, 1], names)``.

    ``target``: a folder of image files (searched recursively) or a dataset
    ``open_source`` reads (its images only). ``fit``: ``"crop"`` takes the centred
    square first (no distortion; the default for photographs of real radiographs,
    which are rarely square), ``"resize"`` squashes the whole image.
    """
    from training.data import open_source
    from training.data.base import DataFormatError, to_unit_range
    from training.data.images import read_image_file
    from training.data.prepare import resize_image

    if fit not in FITS:
        raise GANError(f"fit must be one of {FITS}, got {fit!r}")
    path = Path(target)
    try:
        src = open_source(path) if path.exists() and not _plain_image_folder(path) else None
    except DataFormatError:
        src = None
    if src is not None:
        n = len(src)
        if n == 0:
            raise GANError(f"target dataset {path} holds no images")
        reads = [(src.names[i], (lambda i=i: src[i].image)) for i in range(n)]
    else:
        files = find_image_files(path)
        reads = [(str(f.relative_to(path)) if path.is_dir() else f.name,
                  (lambda f=f: to_unit_range(read_image_file(f)))) for f in files]
    images, names = [], []
    with _bar(progress, len(reads), f"reading {path.name}") as step:
        for name, read in reads:
            img = read()
            if min(img.shape) < 16:
                raise GANError(f"{path}: image {name} is {img.shape[1]}x{img.shape[0]} px; too small to be an X-ray")
            images.append(resize_image(center_square(img) if fit == "crop" else img, size))
            names.append(name)
            step()
    return np.stack(images).astype(np.float32), names


def _plain_image_folder(path: Path) -> bool:
    """A folder with image files and none of the dataset markers open_source looks for."""
    from training.data import READERS

    return path.is_dir() and not any(r.detect(path) for r in READERS.values())


# ---- label-map augmentation (pix2pix sampling) -------------------------------------------------

LABEL_WARPS = ("none", "affine")


def label_warp_tree(size: int):
    """The geometric randomization of label maps: SyntheX's affine ranges (rotation +/- 5 deg,
    shear +/- 2 deg, scale 0.9-1.1), translation up to 5 % of the image (20 px at 384 px)."""
    from domain_randomization.image import Affine

    return Affine(rotation_deg=(-5.0, 5.0), translate_px=(0.0, 0.05 * size), shear_deg=(-2.0, 2.0),
                  scale=(0.9, 1.1))


def sample_label_warp(kind: str, size: int, rng: np.random.Generator) -> dict | None:
    """A JSON record of one label-map warp (None for ``"none"``), drawn from ``rng``."""
    from domain_randomization.image import sample_params

    if kind not in LABEL_WARPS:
        raise GANError(f"label augmentation must be one of {LABEL_WARPS}, got {kind!r}")
    return None if kind == "none" else sample_params(label_warp_tree(size), rng)


def apply_label_warp(labels: np.ndarray, landmarks: np.ndarray, record: dict | None):
    """``(labels, landmarks)`` moved by a recorded warp; a landmark that was unlabelled or
    leaves the image becomes NaN."""
    from domain_randomization.image import apply

    if record is None:
        return labels.copy(), landmarks.copy()
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    known = np.all(np.isfinite(lm), axis=1)
    dummy = np.zeros(labels.shape, np.float32)
    out = apply(dummy, masks=labels, keypoints=np.where(known[:, None], lm, 0.0), params=record, visible=known)
    moved = np.where(out.visible[:, None], out.keypoints, np.nan)
    return out.masks.astype(labels.dtype), moved


# ---- writing the folder layout ------------------------------------------------------------------

def write_folder_dataset(out, images, *, labels=None, landmarks=None, subjects, names, classes,
                         landmark_names=(), pixel_size_mm=None, meta=None, samples=None,
                         overwrite: bool = False) -> Path:
    """Write the ``folder`` layout :func:`training.data.open_source` reads.

    ``images`` (N, H, W) in [0, 1] -> 16-bit PNG; ``labels`` (N, H, W) class indices ->
    8-bit PNG (16-bit above 255 classes); ``landmarks`` (N, L, 2) -> one JSON per image
    (``null`` where NaN); ``subjects`` -> ``dataset.json`` (the splits keep them apart);
    ``meta`` -> extra ``dataset.json`` keys (what produced the set); ``samples`` -> one
    JSON record per image in ``samples.jsonl`` (drawn parameters). Written to a
    temporary folder renamed to ``out`` when complete.
    """
    from PIL import Image

    out = Path(out)
    images = np.asarray(images)
    n = len(images)
    if images.ndim != 3:
        raise GANError(f"images must be (N, H, W), got shape {images.shape}")
    if not (len(subjects) == len(names) == n):
        raise GANError(f"{n} images but {len(subjects)} subjects and {len(names)} names")
    if len(set(names)) != n:
        raise GANError("image names must be unique")
    if labels is not None and np.asarray(labels).shape != images.shape:
        raise GANError(f"label maps {np.asarray(labels).shape} do not match images {images.shape}")
    if landmarks is not None and len(landmark_names) and np.asarray(landmarks).shape != (n, len(landmark_names), 2):
        raise GANError(f"landmarks must be ({n}, {len(landmark_names)}, 2), got {np.asarray(landmarks).shape}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise GANError(f"{out} exists and is not empty; choose another folder or pass overwrite")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tmp = out.with_name(f".{out.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    if labels is not None:
        (tmp / "masks").mkdir()
    if landmarks is not None and len(landmark_names):
        (tmp / "landmarks").mkdir()
    mask_dtype = np.uint8 if len(classes) <= 256 else np.uint16
    for i, stem in enumerate(names):
        img = np.clip(np.asarray(images[i], dtype=np.float64), 0.0, 1.0)
        Image.fromarray(np.rint(img * 65535).astype(np.uint16)).save(tmp / "images" / f"{stem}.png")
        if labels is not None:
            Image.fromarray(np.asarray(labels[i]).astype(mask_dtype)).save(tmp / "masks" / f"{stem}.png")
        if landmarks is not None and len(landmark_names):
            pts = {name: (None if not np.all(np.isfinite(p)) else [float(p[0]), float(p[1])])
                   for name, p in zip(landmark_names, np.asarray(landmarks[i]))}
            (tmp / "landmarks" / f"{stem}.json").write_text(json.dumps(pts))
    px = _pixel_pair(pixel_size_mm)
    dataset = {"classes": list(classes), "landmarks": list(landmark_names),
               **({"pixel_size_mm": px[0] if px[0] == px[1] else list(px)} if px else {}),
               "subjects": dict(zip(names, (str(s) for s in subjects))), **(meta or {})}
    if samples is not None:
        with open(tmp / "samples.jsonl", "w") as f:
            f.writelines(json.dumps(rec) + "\n" for rec in samples)
    (tmp / "dataset.json").write_text(json.dumps(dataset, indent=1))  # last: the set is complete
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out

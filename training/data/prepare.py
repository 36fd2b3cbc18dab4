"""From a :class:`~training.data.base.Source` to model inputs for one task.

How an image becomes a model input, the same for training, validation, testing
and ``synthex predict``:

1. read: :func:`training.data.images.read_xray` (every reader uses it) gives a
   grayscale float32 image in ``[0, 1]`` (DICOM: rescale, VOI window,
   MONOCHROME1 inverted);
2. resize: :func:`resize_image` to the model's square input size (bilinear,
   antialiased when shrinking; the aspect ratio is not kept, as in training);
3. only for training images: on-the-fly image randomization
   (:class:`domain_randomization.image.RandomizedDataset`); validation, test and
   predicted images are never randomized;
4. :func:`zscore` per image (after randomization, as SyntheX).

:class:`TaskImages` maps the dataset's classes and landmarks onto the task's
(clear error if the dataset lacks any), does step 2 and keeps the result in
memory. Its items are the dicts :class:`domain_randomization.image.RandomizedDataset`
expects (``image``, ``masks``, ``keypoints``, ``visible``); :func:`collate` turns a
list of them into tensors (step 4) with Gaussian heatmap targets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from training.tasks import MissingLabelsError, Task

from .base import Source


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    antialias = size < max(image.shape)
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    return out[0, 0].clamp(0, 1).numpy()


def zscore(images: torch.Tensor) -> torch.Tensor:
    """Per-image z-score over the last two axes (the standard deviation floored at 1e-6)."""
    mean = images.mean(dim=(-2, -1), keepdim=True)
    std = images.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    return (images - mean) / std


def model_inputs(images: list[np.ndarray]) -> torch.Tensor:
    """``(B, 1, S, S)`` model input from resized ``[0, 1]`` images (step 4 of the module docstring)."""
    return zscore(torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images])))[:, None]


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))[None, None].float()
    return F.interpolate(t, size=(size, size), mode="nearest-exact")[0, 0].long().numpy()


def scale_points(points: np.ndarray, scale_uv) -> np.ndarray:
    """Pixel-centre coordinates under a resize by ``scale_uv`` (new size / old size per axis)."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * np.asarray(scale_uv) - 0.5


class TaskImages(torch.utils.data.Dataset):
    """``indices`` of ``source`` as task-ready, resized items (cached after first access)."""

    def __init__(self, source: Source, task: Task, size: int, indices=None, *, need_labels: bool = True):
        if need_labels and not source.has_labels:
            raise MissingLabelsError(f"{source.path} has no segmentation labels; task {task.name!r} needs "
                                     f"the classes {list(task.classes[1:])}")
        self.source, self.task, self.size = source, task, int(size)
        self.class_lookup = np.asarray(task.class_lookup(source.classes), dtype=np.int64)
        self.landmark_order = task.landmark_order(source.landmarks) if task.num_landmarks else []
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def subjects(self) -> list[str]:
        return [self.source.subjects[i] for i in self.indices]

    def __getitem__(self, k: int) -> dict:
        if k in self._cache:
            return self._cache[k]
        rec = self.source[int(self.indices[k])]
        h, w = rec.image.shape
        scale = (self.size / w, self.size / h)
        if rec.labels is None:
            raise MissingLabelsError(f"{self.source.path} item {rec.name} has no label map")
        masks = resize_labels(self.class_lookup[np.asarray(rec.labels, dtype=np.int64)], self.size) \
            .astype(np.uint8 if self.task.num_classes <= 256 else np.int64)  # the cache stays small
        lm = scale_points(rec.landmarks[self.landmark_order], scale) if self.task.num_landmarks \
            else np.zeros((0, 2))
        visible = np.all(np.isfinite(lm), axis=1)
        visible &= np.all((lm > -0.5) & (lm < self.size - 0.5), axis=1)
        item = {
            "image": resize_image(rec.image, self.size),
            "masks": masks,
            "keypoints": np.where(np.isfinite(lm), lm, 0.0),
            "visible": visible,
            "index": k,
            # stored-image pixels per model pixel, per axis (u, v): the "downsample" factor
            "downsample": np.array([1.0 / scale[0], 1.0 / scale[1]]),
            # mm per stored-image pixel (u, v); NaN where unknown
            "pixel_size_mm": np.asarray(rec.pixel_size_mm if rec.pixel_size_mm is not None else (np.nan, np.nan),
                                        dtype=np.float64),
        }
        self._cache[k] = item
        return item


def collate(items: list[dict], heatmap_sigma: float) -> dict:
    """Stack items into tensors; z-score each image; Gaussian heatmap targets."""
    from training.losses import gaussian_heatmaps

    images = model_inputs([it["image"] for it in items])
    labels = torch.from_numpy(np.stack([np.asarray(it["masks"], dtype=np.int64) for it in items]))
    kp = torch.from_numpy(np.stack([np.asarray(it["keypoints"], dtype=np.float32).reshape(-1, 2)
                                    for it in items]))
    vis = torch.from_numpy(np.stack([np.asarray(it["visible"], dtype=bool).reshape(-1) for it in items]))
    H, W = images.shape[-2:]
    return {"images": images, "labels": labels, "keypoints": kp, "visible": vis,
            "heatmaps": gaussian_heatmaps(kp, vis, H, W, heatmap_sigma),
            "index": torch.tensor([int(it["index"]) for it in items])}

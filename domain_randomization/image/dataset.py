"""On-the-fly randomization for training data loaders.

Seeding is a pure function of ``(seed, epoch, index)``, so results do not depend
on the number of workers, their order, or which worker handles which index.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from ._torch import torch
from .core import ImageRandomizationError
from .pipeline import apply, resolve_preset, sample_params

# first word of every image-randomization seed, so this stream never coincides
# with another stream keyed by the same (seed, index)
IMAGE_STREAM = 0x1A6E


def rng_for(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for sample ``index`` of ``epoch`` in a run with ``seed``
    (render-time randomization uses epoch 0)."""
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ImageRandomizationError(f"{name} must be a non-negative integer, got {value!r}")
    return np.random.default_rng([IMAGE_STREAM, int(seed), int(epoch), int(index)])


class ImageRandomizer:
    """Callable: ``randomizer(item, rng) -> item`` where ``item`` is a mapping with
    ``image`` and optionally ``masks``, ``keypoints``, ``visible``, ``boxes``; the
    returned dict also holds ``randomization`` (the record, as a JSON string)."""

    LABEL_KEYS = ("masks", "keypoints", "visible", "boxes")

    def __init__(self, preset="strong"):
        resolve_preset(preset)  # fail now on a typo, not in a worker
        self.preset = preset

    def __call__(self, item: Mapping, rng: np.random.Generator) -> dict:
        if not isinstance(item, Mapping) or "image" not in item:
            raise ImageRandomizationError("a dataset item must be a mapping with an 'image' entry")
        params = sample_params(self.preset, rng)
        labels = {k: _to_numpy(item.get(k)) for k in self.LABEL_KEYS}
        out = apply(_to_numpy(item["image"]), labels["masks"], labels["keypoints"], labels["boxes"], params,
                    visible=labels["visible"])
        result = dict(item)
        result["image"] = out.image
        for key in self.LABEL_KEYS:
            if item.get(key) is not None or (key == "visible" and out.visible is not None):
                result[key] = getattr(out, key)
        result["randomization"] = json.dumps(params)
        return result


def _to_numpy(x):
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class RandomizedDataset(torch.utils.data.Dataset):
    """Wrap a map-style dataset of items (see :class:`ImageRandomizer`) and
    randomize each item on access with the generator ``rng_for(seed, epoch, index)``.

    Call ``set_epoch(e)`` before each epoch for fresh draws. DataLoader workers get
    a copy of this object when an epoch starts, so with ``persistent_workers=True``
    the epoch would be frozen at its value when the workers started: keep the
    default ``persistent_workers=False`` when you change epochs.
    """

    def __init__(self, base, preset="strong", seed: int = 0, epoch: int = 0):
        rng_for(seed, epoch, 0)  # validates seed and epoch
        self.base = base
        self.randomizer = ImageRandomizer(preset)
        self.seed = int(seed)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        rng_for(self.seed, epoch, 0)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        return self.randomizer(self.base[index], rng_for(self.seed, self.epoch, int(index)))

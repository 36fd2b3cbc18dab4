"""Image-level domain randomization as in SyntheX ("strong domain randomization").

Every random operation is split in two: a sampler draws a JSON-serializable
parameter record from a ``numpy.random.Generator``; :func:`apply` is a
deterministic function of that record, moving the image, masks, keypoints and
boxes together. Replaying a stored record reproduces the output bit for bit.

    import numpy as np
    from domain_randomization.image import sample_params, apply
    params = sample_params("strong", np.random.default_rng([seed, index]))
    out = apply(image, masks, keypoints, boxes, params)   # out.image, out.masks, out.keypoints, out.visible, out.boxes

Conventions: see :mod:`domain_randomization.image.core`. Needs the ``augment``
extra (torch, kornia).
"""

from .core import OPS, ImageRandomizationError, Randomized
from .dataset import ImageRandomizer, RandomizedDataset, rng_for
from .geometric import Affine, Elastic
from .pipeline import apply, randomize, sample_params
from .presets import MILD, NONE, PRESETS, STRONG
from .sampling import OneOf, Sequence, SomeOf, Sometimes

__all__ = [
    "OPS",
    "PRESETS",
    "NONE",
    "MILD",
    "STRONG",
    "Affine",
    "Elastic",
    "ImageRandomizationError",
    "ImageRandomizer",
    "OneOf",
    "Randomized",
    "RandomizedDataset",
    "Sequence",
    "SomeOf",
    "Sometimes",
    "apply",
    "randomize",
    "rng_for",
    "sample_params",
]

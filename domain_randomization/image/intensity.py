"""Intensity ops: they change only the image (masks, keypoints and boxes stay).

Each class is the sampler (its fields are the ranges SyntheX draws from) and
its ``apply_image`` class method is the deterministic part, a function of the
recorded parameters only. Per-pixel noise is a function of a recorded seed.
Every result is clipped to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._torch import kornia, run_on_image, torch
from .core import Op, Randomized, draw_seed, integer, noise_rng, register, uniform


class IntensityOp(Op):
    kind: ClassVar[str] = "intensity"

    @classmethod
    def apply_image(cls, image: np.ndarray, **params) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def apply_to(cls, sample: Randomized, **params) -> Randomized:
        return sample.replace(image=cls.apply_image(sample.image, **params))


def _clip(x) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)


def coarse_cells(shape, size: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Row and column cell index of every pixel for a grid of ``size`` x image size cells
    (at least one per axis); a coarse mask is drawn on the grid and upsampled nearest."""
    h, w = shape
    gh, gw = max(1, int(round(size * h))), max(1, int(round(size * w)))
    return (np.arange(h) * gh) // h, (np.arange(w) * gw) // w, (gh, gw)


def coarse_mask(shape, p: float, size: float, rng: np.random.Generator) -> np.ndarray:
    rows, cols, grid = coarse_cells(shape, size)
    return (rng.random(grid) < p)[rows[:, None], cols[None, :]]


# ---------------------------------------------------------------- inversion


@register
@dataclass(frozen=True)
class Invert(IntensityOp):
    """``1 - x``."""

    name: ClassVar[str] = "invert"

    def draw(self, rng):
        return {}

    @classmethod
    def apply_image(cls, image):
        return _clip(1.0 - image)


# ------------------------------------------------------------------- noise


def _salt_or_pepper(rng: np.random.Generator, shape) -> np.ndarray:
    return (rng.random(shape) < 0.5).astype(np.float32)


@register
@dataclass(frozen=True)
class ImpulseNoise(IntensityOp):
    """Random-valued impulse noise: a fraction ``p`` of pixels gets a value uniform in [0, 1].

    (imgaug's ImpulseNoise is per-channel salt-and-pepper, which on a one-channel
    image is the same op as SaltAndPepper; the random-valued variant is the other
    classic impulse-noise model and keeps the two options distinct.)
    """

    name: ClassVar[str] = "impulse_noise"
    p: float = 0.1

    def draw(self, rng):
        return {"p": float(self.p), "seed": draw_seed(rng)}

    @classmethod
    def apply_image(cls, image, p, seed):
        g = noise_rng(seed)
        hit = g.random(image.shape) < p
        values = g.random(image.shape, dtype=np.float32)
        return _clip(np.where(hit, values, image))


@register
@dataclass(frozen=True)
class SaltAndPepper(IntensityOp):
    """A fraction ``p`` of pixels is set to 0 or 1 (equally likely)."""

    name: ClassVar[str] = "salt_and_pepper"
    p: float = 0.1

    def draw(self, rng):
        return {"p": float(self.p), "seed": draw_seed(rng)}

    @classmethod
    def apply_image(cls, image, p, seed):
        g = noise_rng(seed)
        hit = g.random(image.shape) < p
        return _clip(np.where(hit, _salt_or_pepper(g, image.shape), image))


@register
@dataclass(frozen=True)
class CoarseSaltAndPepper(IntensityOp):
    """Salt-and-pepper on whole cells of a coarse grid: each cell (``size`` x image
    size per axis) is hit with probability ``p``; hit pixels become 0 or 1."""

    name: ClassVar[str] = "coarse_salt_and_pepper"
    p: float = 0.05
    size: tuple[float, float] = (0.01, 0.10)

    def draw(self, rng):
        return {"p": float(self.p), "size": uniform(rng, self.size), "seed": draw_seed(rng)}

    @classmethod
    def apply_image(cls, image, p, size, seed):
        g = noise_rng(seed)
        hit = coarse_mask(image.shape, p, size, g)
        return _clip(np.where(hit, _salt_or_pepper(g, image.shape), image))


@register
@dataclass(frozen=True)
class GaussianNoise(IntensityOp):
    """Additive white Gaussian noise with standard deviation ``sigma`` (image units)."""

    name: ClassVar[str] = "gaussian_noise"
    sigma: tuple[float, float] = (0.005, 0.01)

    def draw(self, rng):
        return {"sigma": uniform(rng, self.sigma), "seed": draw_seed(rng)}

    @classmethod
    def apply_image(cls, image, sigma, seed):
        noise = noise_rng(seed).standard_normal(image.shape, dtype=np.float32)
        return _clip(image + np.float32(sigma) * noise)


# ---------------------------------------------------------------- contrast


@register
@dataclass(frozen=True)
class LinearContrast(IntensityOp):
    """``0.5 + alpha (x - 0.5)``."""

    name: ClassVar[str] = "linear_contrast"
    alpha: tuple[float, float] = (0.5, 2.0)

    def draw(self, rng):
        return {"alpha": uniform(rng, self.alpha)}

    @classmethod
    def apply_image(cls, image, alpha):
        return _clip(0.5 + np.float32(alpha) * (image - np.float32(0.5)))


@register
@dataclass(frozen=True)
class GammaContrast(IntensityOp):
    """``x ** gamma``."""

    name: ClassVar[str] = "gamma_contrast"
    gamma: tuple[float, float] = (0.5, 2.0)

    def draw(self, rng):
        return {"gamma": uniform(rng, self.gamma)}

    @classmethod
    def apply_image(cls, image, gamma):
        return _clip(image ** np.float32(gamma))


@register
@dataclass(frozen=True)
class LogContrast(IntensityOp):
    """``gain * log2(1 + x)``."""

    name: ClassVar[str] = "log_contrast"
    gain: tuple[float, float] = (0.6, 1.4)

    def draw(self, rng):
        return {"gain": uniform(rng, self.gain)}

    @classmethod
    def apply_image(cls, image, gain):
        return _clip(np.float32(gain) * np.log2(np.float32(1.0) + image))


@register
@dataclass(frozen=True)
class SigmoidContrast(IntensityOp):
    """``1 / (1 + exp(gain (cutoff - x)))``."""

    name: ClassVar[str] = "sigmoid_contrast"
    gain: tuple[float, float] = (3.0, 10.0)
    cutoff: tuple[float, float] = (0.4, 0.6)

    def draw(self, rng):
        return {"gain": uniform(rng, self.gain), "cutoff": uniform(rng, self.cutoff)}

    @classmethod
    def apply_image(cls, image, gain, cutoff):
        return _clip(1.0 / (1.0 + np.exp(np.float32(gain) * (np.float32(cutoff) - image))))


# ------------------------------------------------------------------ filters
# Borders: 'reflect' = mirror about the edge pixel (d c b | a b c d | c b a).


@register
@dataclass(frozen=True)
class GaussianBlur(IntensityOp):
    """Gaussian blur with standard deviation ``sigma`` px, kernel radius
    ``int(3 sigma + 0.5)``; ``sigma`` below 0.1 px (radius 0) leaves the image as is."""

    name: ClassVar[str] = "gaussian_blur"
    sigma: tuple[float, float] = (0.0, 3.0)

    def draw(self, rng):
        return {"sigma": uniform(rng, self.sigma)}

    @staticmethod
    def radius(sigma: float) -> int:
        return int(3.0 * sigma + 0.5)

    @classmethod
    def apply_image(cls, image, sigma):
        r = cls.radius(sigma)
        if r == 0:
            return image.copy()
        k, s = 2 * r + 1, float(sigma)
        return _clip(run_on_image(image, lambda t: kornia.filters.gaussian_blur2d(t, (k, k), (s, s), "reflect")))


@register
@dataclass(frozen=True)
class AverageBlur(IntensityOp):
    """Mean over a ``k`` x ``k`` window; for even ``k`` the window spans offsets
    ``-(k-1)//2 .. k//2`` around the pixel."""

    name: ClassVar[str] = "average_blur"
    k: tuple[int, int] = (4, 6)

    def draw(self, rng):
        return {"k": integer(rng, self.k)}

    @classmethod
    def apply_image(cls, image, k):
        k = int(k)
        return _clip(run_on_image(image, lambda t: kornia.filters.box_blur(t, (k, k), "reflect")))


def _identity3() -> np.ndarray:
    m = np.zeros((3, 3))
    m[1, 1] = 1.0
    return m


def _correlate3(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    kern = torch.from_numpy(kernel.astype(np.float32))[None]
    return _clip(run_on_image(image, lambda t: kornia.filters.filter2d(t, kern, "reflect")))


@register
@dataclass(frozen=True)
class Sharpen(IntensityOp):
    """3x3 sharpening, blended with the identity by ``alpha``; centre weight ``8 + lightness``."""

    name: ClassVar[str] = "sharpen"
    alpha: tuple[float, float] = (0.5, 1.0)
    lightness: tuple[float, float] = (1.0, 1.5)

    def draw(self, rng):
        return {"alpha": uniform(rng, self.alpha), "lightness": uniform(rng, self.lightness)}

    @staticmethod
    def kernel(alpha, lightness) -> np.ndarray:
        effect = -np.ones((3, 3))
        effect[1, 1] = 8.0 + lightness
        return (1.0 - alpha) * _identity3() + alpha * effect

    @classmethod
    def apply_image(cls, image, alpha, lightness):
        return _correlate3(image, cls.kernel(alpha, lightness))


@register
@dataclass(frozen=True)
class Emboss(IntensityOp):
    """3x3 emboss of ``strength``, blended with the identity by ``alpha``."""

    name: ClassVar[str] = "emboss"
    alpha: tuple[float, float] = (0.5, 1.0)
    strength: tuple[float, float] = (1.0, 2.0)

    def draw(self, rng):
        return {"alpha": uniform(rng, self.alpha), "strength": uniform(rng, self.strength)}

    @staticmethod
    def kernel(alpha, strength) -> np.ndarray:
        s = strength
        effect = np.array([[-1.0 - s, -s, 0.0], [-s, 1.0, s], [0.0, s, 1.0 + s]])
        return (1.0 - alpha) * _identity3() + alpha * effect

    @classmethod
    def apply_image(cls, image, alpha, strength):
        return _correlate3(image, cls.kernel(alpha, strength))


# ----------------------------------------------------------------- dropout


@register
@dataclass(frozen=True)
class Dropout(IntensityOp):
    """Each pixel is set to 0 with probability ``p``."""

    name: ClassVar[str] = "dropout"
    p: tuple[float, float] = (0.10, 0.15)

    def draw(self, rng):
        return {"p": uniform(rng, self.p), "seed": draw_seed(rng)}

    @classmethod
    def apply_image(cls, image, p, seed):
        return _clip(np.where(noise_rng(seed).random(image.shape) < p, 0.0, image))


@register
@dataclass(frozen=True)
class CoarseDropout(IntensityOp):
    """Whole cells of a coarse grid (``size`` x image size per axis) set to 0 with probability ``p``."""

    name: ClassVar[str] = "coarse_dropout"
    p: tuple[float, float] = (0.10, 0.15)
    size: tuple[float, float] = (0.10, 0.15)

    def draw(self, rng):
        return {"p": uniform(rng, self.p), "size": uniform(rng, self.size), "seed": draw_seed(rng)}

    @classmethod
    def apply_image(cls, image, p, size, seed):
        return _clip(np.where(coarse_mask(image.shape, p, size, noise_rng(seed)), 0.0, image))


# ----------------------------------------------------------------- pooling

# reducer over the last axis of (rows, cols, k*k) blocks; NaN marks pixels past the image edge
POOL_REDUCERS = {
    "average_pooling": np.nanmean,
    "max_pooling": np.nanmax,
    "min_pooling": np.nanmin,
    "median_pooling": np.nanmedian,
}


@dataclass(frozen=True)
class _Pooling(IntensityOp):
    """Pool ``k`` x ``k`` blocks (from the top-left; edge blocks use the pixels that
    exist) and repeat each result over its block, so the image keeps its size.
    The reducer is ``POOL_REDUCERS[name]``."""

    k: tuple[int, int] = (2, 4)

    def draw(self, rng):
        return {"k": integer(rng, self.k)}

    @classmethod
    def apply_image(cls, image, k):
        k = int(k)
        h, w = image.shape
        bh, bw = -(-h // k), -(-w // k)
        padded = np.full((bh * k, bw * k), np.nan, dtype=np.float32)
        padded[:h, :w] = image
        blocks = padded.reshape(bh, k, bw, k).transpose(0, 2, 1, 3).reshape(bh, bw, k * k)
        pooled = POOL_REDUCERS[cls.name](blocks, axis=-1).astype(np.float32)
        return _clip(np.repeat(np.repeat(pooled, k, axis=0), k, axis=1)[:h, :w])


@register
@dataclass(frozen=True)
class AveragePooling(_Pooling):
    name: ClassVar[str] = "average_pooling"


@register
@dataclass(frozen=True)
class MaxPooling(_Pooling):
    name: ClassVar[str] = "max_pooling"


@register
@dataclass(frozen=True)
class MinPooling(_Pooling):
    name: ClassVar[str] = "min_pooling"


@register
@dataclass(frozen=True)
class MedianPooling(_Pooling):
    name: ClassVar[str] = "median_pooling"


# ---------------------------------------------------------------- multiply


@register
@dataclass(frozen=True)
class Multiply(IntensityOp):
    """``factor * x``."""

    name: ClassVar[str] = "multiply"
    factor: tuple[float, float] = (0.5, 1.5)

    def draw(self, rng):
        return {"factor": uniform(rng, self.factor)}

    @classmethod
    def apply_image(cls, image, factor):
        return _clip(np.float32(factor) * image)


@register
@dataclass(frozen=True)
class ElementwiseMultiply(IntensityOp):
    """Each pixel times its own factor, uniform in [``low``, ``high``]."""

    name: ClassVar[str] = "elementwise_multiply"
    factor: tuple[float, float] = (0.5, 1.5)

    def draw(self, rng):
        return {"low": float(self.factor[0]), "high": float(self.factor[1]), "seed": draw_seed(rng)}

    @classmethod
    def apply_image(cls, image, low, high, seed):
        factors = noise_rng(seed).uniform(low, high, image.shape).astype(np.float32)
        return _clip(factors * image)

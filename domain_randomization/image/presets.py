"""The presets: ``none``, ``mild`` (SyntheX's regular randomization) and
``strong`` (SyntheX's strong domain randomization, its default).

Probabilities and ranges follow SyntheX (Gao et al. 2023); docs/domain-randomization.md lists them.
"""

from __future__ import annotations

from .geometric import Affine, Elastic
from .intensity import (
    AverageBlur,
    AveragePooling,
    CoarseDropout,
    CoarseSaltAndPepper,
    Dropout,
    ElementwiseMultiply,
    Emboss,
    GammaContrast,
    GaussianBlur,
    GaussianNoise,
    ImpulseNoise,
    Invert,
    LinearContrast,
    LogContrast,
    MaxPooling,
    MedianPooling,
    MinPooling,
    Multiply,
    SaltAndPepper,
    Sharpen,
    SigmoidContrast,
)
from .sampling import OneOf, Sequence, SomeOf, Sometimes

NONE = Sequence(())

MILD = Sometimes(0.5, Sequence((
    Sometimes(0.5, GaussianNoise(sigma=(0.005, 0.01))),
    Sometimes(0.5, GammaContrast(gamma=(0.7, 1.3))),
)))

STRONG = Sometimes(0.5, Sequence((
    Sometimes(0.5, Invert()),
    Sometimes(0.5, OneOf((
        ImpulseNoise(p=0.1),
        SaltAndPepper(p=0.1),
        CoarseSaltAndPepper(p=0.05, size=(0.01, 0.10)),
    ))),
    Sometimes(0.5, OneOf((
        LinearContrast(alpha=(0.5, 2.0)),
        GammaContrast(gamma=(0.5, 2.0)),
        LogContrast(gain=(0.6, 1.4)),
        SigmoidContrast(gain=(3.0, 10.0), cutoff=(0.4, 0.6)),
    ))),
    Sometimes(0.5, Affine(rotation_deg=(-5.0, 5.0), translate_px=(0.0, 20.0), shear_deg=(-2.0, 2.0), scale=(0.9, 1.1))),
    SomeOf((1, 2), (
        Sometimes(0.5, OneOf((GaussianBlur(sigma=(0.0, 3.0)), AverageBlur(k=(4, 6))))),
        Sometimes(0.5, OneOf((Dropout(p=(0.10, 0.15)), CoarseDropout(p=(0.10, 0.15), size=(0.10, 0.15))))),
        Sometimes(0.5, OneOf((
            Sharpen(alpha=(0.5, 1.0), lightness=(1.0, 1.5)),
            Emboss(alpha=(0.5, 1.0), strength=(1.0, 2.0)),
        ))),
        Sometimes(0.5, OneOf((
            AveragePooling(k=(2, 4)), MaxPooling(k=(2, 4)), MinPooling(k=(2, 4)), MedianPooling(k=(2, 4)),
        ))),
        Sometimes(0.5, OneOf((Multiply(factor=(0.5, 1.5)), ElementwiseMultiply(factor=(0.5, 1.5))))),
        Sometimes(0.5, Elastic(alpha=(0.5, 3.5), sigma=0.25)),
    ), random_order=True),
)))

# name -> sampling tree; a custom tree built from the same pieces works wherever a name does
PRESETS = {"none": NONE, "mild": MILD, "strong": STRONG}

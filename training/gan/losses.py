"""Loss terms of pix2pix (Isola et al. 2017) and CycleGAN (Zhu et al. 2017).

Adversarial terms are MONAI's :class:`monai.losses.PatchAdversarialLoss` on the
PatchGAN's logits, averaged over patches:

* ``"lsgan"`` (Mao et al. 2017; CycleGAN's choice): discriminator
  ``0.5 * (mean (D(real) - 1)^2 + mean D(fake)^2)``, generator ``mean (D(fake) - 1)^2``;
* ``"bce"`` (pix2pix's original): discriminator ``0.5 * (BCE(sigmoid D(real), 1) +
  BCE(sigmoid D(fake), 0))``, generator ``BCE(sigmoid D(fake), 1)``.

The factor 0.5 on the discriminator slows it relative to the generator, as in
both papers' code. Reconstruction terms are mean absolute errors (L1).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import GANError

ADVERSARIAL = {"lsgan": "least_squares", "bce": "bce"}


class AdversarialLoss(nn.Module):
    def __init__(self, kind: str = "lsgan"):
        super().__init__()
        from monai.losses import PatchAdversarialLoss

        if kind not in ADVERSARIAL:
            raise GANError(f"adversarial loss must be one of {sorted(ADVERSARIAL)}, got {kind!r}")
        self.kind = kind
        # no_activation_leastsq: plain least squares on the logits (MONAI would add a LeakyReLU)
        self.loss = PatchAdversarialLoss(criterion=ADVERSARIAL[kind], no_activation_leastsq=True)

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.loss(real_logits, target_is_real=True, for_discriminator=True)
                      + self.loss(fake_logits, target_is_real=False, for_discriminator=True))

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return self.loss(fake_logits, target_is_real=True, for_discriminator=False)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


def cycle_terms(g_ab: nn.Module, g_ba: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor) -> dict:
    """The forward passes of one CycleGAN step and its reconstruction terms:
    ``cycle_a = |G_BA(G_AB(a)) - a|_1``, ``cycle_b = |G_AB(G_BA(b)) - b|_1``,
    ``identity_a = |G_BA(a) - a|_1`` (G_BA maps into A, so an A image should pass
    unchanged), ``identity_b = |G_AB(b) - b|_1``. Returns the terms and the fakes."""
    fake_b = g_ab(real_a)
    fake_a = g_ba(real_b)
    return {"fake_a": fake_a, "fake_b": fake_b,
            "cycle_a": l1(g_ba(fake_b), real_a), "cycle_b": l1(g_ab(fake_a), real_b),
            "identity_a": l1(g_ba(real_a), real_a), "identity_b": l1(g_ab(real_b), real_b)}

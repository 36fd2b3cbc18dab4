"""GAN baselines of the sim-to-real benchmark: two ways to get a labelled training
set without physics, to compare against rendered data.

    pix2pix    conditional GAN, label map (+ landmark heatmaps) -> X-ray, trained on the
               target domain's labelled training split and sampled into a labelled set
    cyclegan   unpaired translation of labelled renders toward unlabelled target X-rays;
               the renders' labels are kept (an assumption, measured by ``metrics``)
    networks   ResNet and U-Net (MONAI) generators, PatchGAN discriminator (MONAI)
    losses     LSGAN / BCE adversarial (MONAI), L1, cycle and identity terms
    data       loading at the GAN's size, label-map warps, writing the ``folder`` layout
    metrics    edge correlation, label-region contrast, intensity Wasserstein distance
    common     settings checks, image pool, schedule, checkpoints, random streams

Both: grayscale images in [0, 1] in and out, sizes 32-1024 px (128-256 documented),
``fit(...)`` / ``sample(...)`` or ``translate_dataset(...)``, presets ``cpu`` (2 cores,
128 px) and ``full`` (GPU, 256 px, the papers' settings), checkpoints after every
epoch with exact resume, deterministic given the seed on one device, CLIs
``python -m training.gan.pix2pix`` and ``python -m training.gan.cyclegan``.
Needs the ``train`` extra (torch, MONAI, kornia).
"""

from .common import GANError

__all__ = ["GANError"]

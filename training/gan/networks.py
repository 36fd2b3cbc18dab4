"""Generators and discriminators of the GAN baselines.

* :class:`ResnetGenerator`: CycleGAN's generator (Johnson et al. 2016 as used by
  Zhu et al. 2017): a 7x7 convolution, ``n_down`` stride-2 convolutions, ``n_blocks``
  residual blocks, ``n_down`` transposed convolutions and a 7x7 convolution, with
  reflection padding and instance normalization. MONAI has no such network, so it
  is written here (about 40 lines). ``upsample="resize"`` replaces each transposed
  convolution by nearest-neighbour upsampling + a 3x3 convolution (Odena et al.
  2016, "Deconvolution and checkerboard artifacts"): the CPU preset's short runs
  otherwise leave a checkerboard pattern on every translated image.
* U-Net generator: MONAI's :class:`monai.networks.nets.UNet` (pix2pix's choice of
  a U-Net; dropout as pix2pix's noise source).
* Discriminator: MONAI's :class:`monai.networks.nets.PatchDiscriminator`, which with
  ``num_layers_d=3`` is pix2pix's 70 x 70 PatchGAN (C64-C128-C256-C512, 4x4
  kernels, stride 2, 2, 2, 1, then a 1-channel 4x4 convolution).

Images enter and leave the networks in ``[-1, 1]`` (a ``tanh`` output); the
public API converts from and to ``[0, 1]`` (:func:`to_net`, :func:`from_net`).
Every constructor initializes its weights from an explicit seed without touching
torch's global RNG state (:func:`seeded`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


def to_net(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> the networks' [-1, 1]."""
    return x * 2.0 - 1.0


def from_net(x: torch.Tensor) -> torch.Tensor:
    """The networks' [-1, 1] -> [0, 1] images (clamped)."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with torch's CPU RNG seeded to ``seed``; the global state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def init_normal(module: nn.Module, gain: float = 0.02) -> None:
    """pix2pix/CycleGAN initialization: conv weights N(0, 0.02), norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """``(B, in_channels, H, W) -> (B, out_channels, H, W)`` in [-1, 1]; H, W divisible by ``2 ** n_down``."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: int = 64, n_blocks: int = 9,
                 n_down: int = 2, upsample: str = "transpose"):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, features, 7), nn.InstanceNorm2d(features),
                  nn.ReLU(True)]
        ch = features
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResidualBlock(ch) for _ in range(n_blocks)]
        for _ in range(n_down):
            if upsample == "transpose":
                up = [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1)]
            else:  # resize-convolution: no checkerboard pattern (Odena et al. 2016)
                up = [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(ch, ch // 2, 3)]
            layers += [*up, nn.InstanceNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.divisor = 2 ** n_down

    def forward(self, x):
        return self.net(x)


class UNetGenerator(nn.Module):
    """MONAI's U-Net with a ``tanh`` output: ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` in [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int = 1, channels=(32, 64, 128, 256),
                 num_res_units: int = 0, dropout: float = 0.0):
        super().__init__()
        from monai.networks.nets import UNet

        self.unet = UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                         channels=tuple(channels), strides=(2,) * (len(channels) - 1),
                         num_res_units=num_res_units, norm="instance", act=("leakyrelu", {"negative_slope": 0.2}),
                         dropout=dropout)
        self.divisor = 2 ** (len(channels) - 1)

    def forward(self, x):
        return torch.tanh(self.unet(x))


class PatchGAN(nn.Module):
    """pix2pix's PatchGAN (MONAI's PatchDiscriminator): ``(B, in_channels, H, W) -> (B, 1, h, w)`` logits,
    one per overlapping patch (70 x 70 px receptive field with ``n_layers=3``)."""

    def __init__(self, in_channels: int, features: int = 64, n_layers: int = 3):
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        self.net = PatchDiscriminator(spatial_dims=2, channels=features, in_channels=in_channels, out_channels=1,
                                      num_layers_d=n_layers, kernel_size=4, norm="instance", bias=True)
        # MONAI's instance norm has no affine weights; init_normal leaves it alone
        self.divisor = 2 ** n_layers

    def forward(self, x):
        return self.net(x)[-1]


@dataclass(frozen=True)
class NetSpec:
    """Sizes of one GAN: the generator (``kind`` ``"resnet"`` or ``"unet"``) and the PatchGAN."""

    generator: str = "resnet"
    features: int = 64           # resnet: first-layer channels; unet: channels[0] (doubling per level)
    depth: int = 2               # resnet: downsamplings; unet: levels below the top (len(channels) - 1)
    n_blocks: int = 9            # resnet only
    upsample: str = "transpose"  # resnet only: "transpose" (the paper) or "resize" (no checkerboard)
    dropout: float = 0.0         # unet only
    max_features: int = 512      # unet only: channels stop doubling here (pix2pix's unet_256: 64 ... 512)
    disc_features: int = 64
    disc_layers: int = 3

    def check(self, size: int, error) -> None:
        if self.generator not in GENERATORS:
            raise error(f"unknown generator {self.generator!r}; known: {sorted(GENERATORS)}")
        for name in ("features", "depth", "disc_features", "disc_layers"):
            if getattr(self, name) < 1:
                raise error(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.upsample not in ("transpose", "resize"):
            raise error(f"upsample must be 'transpose' or 'resize', got {self.upsample!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise error(f"dropout must be in [0, 1), got {self.dropout}")
        div = max(2 ** self.depth, 2 ** self.disc_layers)
        if size % div or size < 2 * div:
            raise error(f"image size {size} must be a multiple of {div} and at least {2 * div} for these "
                        f"networks (generator depth {self.depth}, {self.disc_layers} discriminator layers)")


def _resnet(spec: NetSpec, in_channels: int, out_channels: int) -> nn.Module:
    return ResnetGenerator(in_channels, out_channels, spec.features, spec.n_blocks, spec.depth, spec.upsample)


def _unet(spec: NetSpec, in_channels: int, out_channels: int) -> nn.Module:
    channels = tuple(min(spec.features * 2 ** i, spec.max_features) for i in range(spec.depth + 1))
    return UNetGenerator(in_channels, out_channels, channels, dropout=spec.dropout)


GENERATORS = {"resnet": _resnet, "unet": _unet}


def build_generator(spec: NetSpec, in_channels: int, out_channels: int, seed: int) -> nn.Module:
    with seeded(seed):
        net = GENERATORS[spec.generator](spec, in_channels, out_channels)
        init_normal(net)
    return net


def build_discriminator(spec: NetSpec, in_channels: int, seed: int) -> PatchGAN:
    with seeded(seed):
        net = PatchGAN(in_channels, spec.disc_features, spec.disc_layers)
        init_normal(net)
    return net

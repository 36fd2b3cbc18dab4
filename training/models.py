"""A MONAI U-Net with a segmentation head and a landmark-heatmap head.

The backbone is MONAI's residual ``UNet`` (2D, no torchvision); both heads are
1x1 convolutions on its last feature map, so segmentation and landmarks share
every weight but the last layer. Sizes are a registry (:data:`MODEL_SIZES`);
the full-size study uses ``base`` (SyntheX used a TransUNet; a U-Net trains on
a laptop CPU and is the usual baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSize:
    channels: tuple[int, ...]
    num_res_units: int
    features: int  # channels of the shared feature map the heads read


MODEL_SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize((8, 16, 32), 1, 8),          # tests
    "small": ModelSize((16, 32, 64, 128), 2, 16),  # CPU default (128 px)
    "base": ModelSize((32, 64, 128, 256, 512), 2, 32),  # GPU, 256-384 px
}


class SegLandmarkNet(nn.Module):
    """``forward(x) -> (seg_logits (B, num_classes, H, W), heatmap_logits (B, L, H, W))``.

    Input: ``(B, 1, H, W)`` with H and W divisible by ``2 ** (len(channels) - 1)``.
    """

    def __init__(self, num_classes: int, num_landmarks: int, size: str = "small"):
        super().__init__()
        from monai.networks.nets import UNet

        if size not in MODEL_SIZES:
            from training.tasks import TrainingError

            raise TrainingError(f"unknown model size {size!r}; known: {sorted(MODEL_SIZES)}")
        spec = MODEL_SIZES[size]
        self.size, self.num_classes, self.num_landmarks = size, num_classes, num_landmarks
        self.backbone = UNet(spatial_dims=2, in_channels=1, out_channels=spec.features, channels=spec.channels,
                             strides=(2,) * (len(spec.channels) - 1), num_res_units=spec.num_res_units,
                             norm="instance", act="PRELU")
        self.act = nn.PReLU(spec.features)
        self.seg_head = nn.Conv2d(spec.features, num_classes, kernel_size=1)
        self.heatmap_head = nn.Conv2d(spec.features, num_landmarks, kernel_size=1) if num_landmarks else None
        self.divisor = 2 ** (len(spec.channels) - 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        f = self.act(self.backbone(x))
        return self.seg_head(f), (self.heatmap_head(f) if self.heatmap_head is not None else None)


def build_model(task, size: str = "small", seed: int = 0) -> SegLandmarkNet:
    """The model for a task, initialized from ``seed`` without touching torch's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SegLandmarkNet(task.num_classes, task.num_landmarks, size)

"""Training loss: Dice + cross-entropy on the segmentation, plus a heatmap loss.

``loss = DiceCE(seg) + heatmap_weight * KL(target heatmap || softmax over pixels)``

The heatmap term treats each landmark's output map as a distribution over
pixels (spatial softmax) and the target as a normalized Gaussian around the
reference landmark; the KL divergence is 0 exactly when they agree and does not
depend on the Gaussian's peak value or the image size. Landmarks that are not
labelled (or left the image) contribute nothing. ``heatmap_weight`` defaults to
SyntheX's 0.5.
"""

from __future__ import annotations

import torch
from torch import nn


def gaussian_heatmaps(keypoints: torch.Tensor, visible: torch.Tensor, height: int, width: int,
                      sigma: float) -> torch.Tensor:
    """``(B, L, H, W)`` Gaussians (peak 1) at ``keypoints (B, L, 2)`` (u, v) pixels; zero where not visible."""
    v = torch.arange(height, dtype=torch.float32, device=keypoints.device).view(1, 1, height, 1)
    u = torch.arange(width, dtype=torch.float32, device=keypoints.device).view(1, 1, 1, width)
    ku = keypoints[..., 0].float().view(*keypoints.shape[:2], 1, 1)
    kv = keypoints[..., 1].float().view(*keypoints.shape[:2], 1, 1)
    g = torch.exp(-((u - ku) ** 2 + (v - kv) ** 2) / (2.0 * sigma * sigma))
    return g * visible.float().view(*visible.shape, 1, 1)


def heatmap_kl(logits: torch.Tensor, target: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Mean KL(target || softmax(logits)) over the visible landmarks (0 if none is visible)."""
    B, L = logits.shape[:2]
    logp = torch.log_softmax(logits.float().reshape(B, L, -1), dim=-1)
    t = target.reshape(B, L, -1)
    t = t / t.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    kl = (t * (torch.log(t.clamp_min(1e-12)) - logp)).sum(dim=-1)
    w = visible.float()
    return (kl * w).sum() / w.sum().clamp_min(1.0)


class SegLandmarkLoss(nn.Module):
    def __init__(self, num_classes: int, heatmap_weight: float = 0.5):
        super().__init__()
        from monai.losses import DiceCELoss

        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False,
                                  squared_pred=False, smooth_nr=1e-5, smooth_dr=1e-5)
        self.heatmap_weight = heatmap_weight
        self.num_classes = num_classes

    def forward(self, seg_logits, labels, heatmap_logits=None, heatmaps=None, visible=None) -> dict:
        seg = self.dice_ce(seg_logits.float(), labels.unsqueeze(1).long())
        total = seg
        hm = torch.zeros((), device=seg.device)
        if heatmap_logits is not None and heatmap_logits.shape[1]:
            hm = heatmap_kl(heatmap_logits, heatmaps, visible)
            total = total + self.heatmap_weight * hm
        return {"loss": total, "seg": seg.detach(), "heatmap": hm.detach()}

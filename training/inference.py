"""Running a model and reading its outputs: the one place where probabilities become
labels, landmarks, detections and image-level scores, for evaluation and for
``synthex predict`` alike.

Definitions (also in the docs):

* labels: the argmax of the softmax over classes;
* landmarks: the heatmap argmax refined per axis by a parabola
  (:func:`decode_heatmaps`); ``landmark_peak`` = the largest value of the
  landmark's spatial softmax, a confidence in ``(0, 1]``;
* ``lesion_probability`` (image level): the largest per-pixel probability of the
  ``lesion`` class (:func:`lesion_probability`);
* ``lesion_fraction``: predicted lesion area / lung area, where the lung area is
  the pixels labelled ``lung`` or ``lesion`` (lesion wins where the two overlap,
  so lesion pixels are lung pixels too); undefined without a ``lung`` class or
  when no lung pixel is predicted.

Classes are looked up by name (:func:`class_index`), never by position.
"""

from __future__ import annotations

import numpy as np
import torch

from training.tasks import Task, normalize_name


def class_index(task: Task, name: str) -> int | None:
    """Index of the task class called ``name`` (or one of its aliases), None if the task has none."""
    want = normalize_name(name)
    for i, c in enumerate(task.classes):
        if want == normalize_name(c) or want in {normalize_name(a) for a in task.aliases.get(c, ())}:
            return i
    return None


def decode_heatmaps(logits: torch.Tensor) -> torch.Tensor:
    """``(B, L, H, W)`` heatmap logits -> ``(B, L, 2)`` (u, v): the argmax refined per axis by
    the vertex of the parabola through the logits at the argmax and its two neighbours.
    The heatmap loss makes the logits a log-Gaussian (up to a constant), a parabola in
    each axis, so the refinement is exact for a well-trained head."""
    B, L, H, W = logits.shape
    x = logits.float().reshape(B * L, H, W)
    arg = x.reshape(B * L, -1).argmax(dim=-1)
    v0, u0 = arg // W, arg % W
    n = torch.arange(B * L, device=x.device)

    def vertex(center, lo, hi):
        denom = lo - 2 * center + hi  # < 0 at a strict maximum
        off = torch.where(denom < 0, 0.5 * (lo - hi) / denom.clamp(max=-1e-12), torch.zeros_like(denom))
        return off.clamp(-0.5, 0.5)

    c = x[n, v0, u0]
    um, up = x[n, v0, (u0 - 1).clamp(min=0)], x[n, v0, (u0 + 1).clamp(max=W - 1)]
    vm, vp = x[n, (v0 - 1).clamp(min=0), u0], x[n, (v0 + 1).clamp(max=H - 1), u0]
    du = torch.where((u0 > 0) & (u0 < W - 1), vertex(c, um, up), torch.zeros_like(c))
    dv = torch.where((v0 > 0) & (v0 < H - 1), vertex(c, vm, vp), torch.zeros_like(c))
    return torch.stack([u0.float() + du, v0.float() + dv], dim=-1).reshape(B, L, 2)


class ModelPredictor:
    """``predictor(batch) -> {"labels" (B, H, W) long, "probabilities" (B, C, H, W) float32,
    "landmarks" (B, L, 2) (u, v) at the model input, "landmark_peak" (B, L)}`` (all on the CPU)."""

    def __init__(self, model, device="cpu", amp: bool = False):
        self.model, self.device, self.amp = model, torch.device(device), amp

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        self.model.eval()
        x = batch["images"].to(self.device)
        with torch.autocast(device_type=self.device.type, enabled=self.amp and self.device.type == "cuda"):
            seg, hm = self.model(x)
        prob = torch.softmax(seg.float(), dim=1)
        out = {"labels": prob.argmax(dim=1).cpu(), "probabilities": prob.cpu()}
        if hm is not None and hm.shape[1]:
            hm = hm.float()
            out["landmarks"] = decode_heatmaps(hm).cpu()
            out["landmark_peak"] = torch.softmax(hm.flatten(2), dim=-1).amax(dim=-1).cpu()
        else:
            out["landmarks"] = torch.zeros(x.shape[0], 0, 2)
            out["landmark_peak"] = torch.zeros(x.shape[0], 0)
        return out


def probabilities_or_onehot(pred: dict, b: int, num_classes: int) -> np.ndarray:
    """``(C, H, W)`` class probabilities of batch item ``b``; a predictor that gives only labels
    (a trivial baseline) has probability 1 for its label."""
    if pred.get("probabilities") is not None:
        return np.asarray(pred["probabilities"][b], dtype=np.float32)
    lab = np.asarray(pred["labels"][b])
    return (lab[None] == np.arange(num_classes)[:, None, None]).astype(np.float32)


def lesion_probability(prob_lesion: np.ndarray) -> float:
    """Image-level probability that a lesion is present: the largest per-pixel lesion probability."""
    p = np.asarray(prob_lesion, dtype=np.float64)
    return float(p.max()) if p.size else float("nan")


def lesion_fraction(labels: np.ndarray, lung: int | None, lesion: int | None) -> float:
    """Lesion area / lung area (lung area = lung + lesion pixels); NaN without both classes or lung."""
    if lung is None or lesion is None:
        return float("nan")
    lab = np.asarray(labels)
    n_lesion = int(np.count_nonzero(lab == lesion))
    n_lung = n_lesion + int(np.count_nonzero(lab == lung))
    return n_lesion / n_lung if n_lung else float("nan")

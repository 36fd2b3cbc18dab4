"""Run a predictor over task images and compute per-image metrics; summarize them.

A predictor is any callable ``predictor(batch) -> {"labels": (B, H, W) long,
"lesion_score": (B,) float or None, "landmarks": (B, L, 2) float}`` on a batch from
:func:`training.data.prepare.collate`, so the trained model and the trivial
baselines (predict background, predict the mean landmark) go through the same
evaluation code.
"""

from __future__ import annotations

import numpy as np
import torch

from training import metrics as M
from training.data.prepare import TaskImages, collate
from training.tasks import Task


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
    def __init__(self, model, device="cpu", amp: bool = False):
        self.model, self.device, self.amp = model, torch.device(device), amp

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        self.model.eval()
        x = batch["images"].to(self.device)
        with torch.autocast(device_type=self.device.type, enabled=self.amp and self.device.type == "cuda"):
            seg, hm = self.model(x)
        prob = torch.softmax(seg.float(), dim=1)
        out = {"labels": prob.argmax(dim=1).cpu(),
               "lesion_score": prob[:, 1:].amax(dim=(1, 2, 3)).cpu() if prob.shape[1] > 1 else None,
               "landmarks": decode_heatmaps(hm.float()).cpu() if hm is not None
               else torch.zeros(x.shape[0], 0, 2)}
        return out


def evaluate(predictor, data: TaskImages, task: Task, pixel_size_mm: float | None, *, batch_size: int = 8,
             heatmap_sigma: float = 2.0, keep_examples: int = 4, progress=None) -> tuple[list[dict], list[dict]]:
    """Per-image metric records (and up to ``keep_examples`` predictions for figures)."""
    records, examples = [], []
    for start in range(0, len(data), batch_size):
        items = [data[k] for k in range(start, min(start + batch_size, len(data)))]
        batch = collate(items, heatmap_sigma)
        pred = predictor(batch)
        for b, item in enumerate(items):
            k = int(item["index"])
            rec = {"name": data.source.names[data.indices[k]], "subject": data.subjects[k]}
            true_lab = batch["labels"][b].numpy()
            pred_lab = np.asarray(pred["labels"][b])
            if "dice" in task.metrics:
                d = M.dice_per_class(pred_lab, true_lab, task.num_classes)
                rec["dice"] = {c: _num(x) for c, x in zip(task.classes[1:], d)}
                rec["dice_mean"] = _num(np.nanmean(d)) if np.any(np.isfinite(d)) else None
            if "landmarks" in task.metrics:
                true = np.where(item["visible"][:, None], item["keypoints"], np.nan)
                pl = np.asarray(pred["landmarks"][b], dtype=np.float64)
                err = M.landmark_errors(pl, true)
                # per-axis downsample (equal for square images: then mm = px * pitch * downsample)
                ds = np.asarray(item["downsample"], dtype=np.float64)
                rec["landmark_error_px"] = {n: _num(e) for n, e in zip(task.landmarks, err)}
                rec["landmark_error_px_mean"] = _num(np.nanmean(err)) if np.any(np.isfinite(err)) else None
                if pixel_size_mm:
                    mm = M.px_to_mm(M.landmark_errors(pl * ds, true * ds), pixel_size_mm)
                    rec["landmark_error_mm"] = {n: _num(e) for n, e in zip(task.landmarks, mm)}
                    rec["landmark_error_mm_mean"] = _num(np.nanmean(mm)) if np.any(np.isfinite(mm)) else None
            if "detection" in task.metrics:
                tb, pb = M.box_from_mask(true_lab > 0), M.box_from_mask(pred_lab > 0)
                if np.all(np.isfinite(tb)):
                    rec["box_iou"] = _num(M.box_iou(pb, tb))
                    rec["detected"] = float(rec["box_iou"] >= 0.5)
            if "pixel_confusion" in task.metrics:
                rec.update({k2: _num(v) for k2, v in M.confusion_metrics(
                    *M.binary_confusion(pred_lab > 0, true_lab > 0)).items()})
                rec["confusion"] = list(M.binary_confusion(pred_lab > 0, true_lab > 0))
            if "presence" in task.metrics and pred.get("lesion_score") is not None:
                rec["presence_true"] = bool((true_lab > 0).any())
                rec["presence_score"] = float(pred["lesion_score"][b])
            records.append(rec)
            if len(examples) < keep_examples:
                examples.append({"name": rec["name"], "image": item["image"], "true_labels": true_lab,
                                 "pred_labels": pred_lab, "true_landmarks": np.where(
                                     item["visible"][:, None], item["keypoints"], np.nan),
                                 "pred_landmarks": np.asarray(pred["landmarks"][b])})
        if progress is not None:
            progress(len(items))
    return records, examples


def _num(x):
    x = float(x)
    return x if np.isfinite(x) else None


def scalar_columns(records: list[dict]) -> dict[str, np.ndarray]:
    """Flatten per-image records into named columns of floats (None -> NaN)."""
    cols: dict[str, list] = {}
    for i, rec in enumerate(records):
        for key, val in rec.items():
            items = val.items() if isinstance(val, dict) else [(None, val)]
            for sub, v in items:
                if isinstance(v, bool) or not (v is None or isinstance(v, (int, float))):
                    continue
                name = key if sub is None else f"{key}/{sub}"
                cols.setdefault(name, [np.nan] * len(records))[i] = np.nan if v is None else float(v)
    return {k: np.asarray(v) for k, v in cols.items()}


def summarize_records(records: list[dict], seed: int = 0, n_resamples: int = 2000) -> dict:
    """mean, std, 95% bootstrap CI per metric; dataset-level AUC (bootstrapped) and pooled confusion."""
    out = {name: M.summarize(v, np.random.default_rng([seed, k]), n_resamples)
           for k, (name, v) in enumerate(sorted(scalar_columns(records).items()))}
    if records and "presence_score" in records[0]:
        s = np.array([r["presence_score"] for r in records])
        y = np.array([r["presence_true"] for r in records])
        rng = np.random.default_rng([seed, 10_000])
        boots = [M.roc_auc(s[i], y[i]) for i in rng.integers(0, len(s), (n_resamples, len(s)))]
        boots = np.asarray(boots)[np.isfinite(boots)]
        auc = M.roc_auc(s, y)
        out["presence_auc"] = {"value": _num(auc), "ci95": [float(np.quantile(boots, 0.025)),
                                                           float(np.quantile(boots, 0.975))] if len(boots) else
                               [None, None], "n": len(s)}
    if records and "confusion" in records[0]:
        tp, fp, tn, fn = np.sum([r["confusion"] for r in records], axis=0)
        out["pixel_confusion_pooled"] = {k: _num(v) for k, v in M.confusion_metrics(tp, fp, tn, fn).items()}
    return out

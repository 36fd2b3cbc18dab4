"""Regenerate the fast scatter model's kernel table from the Monte Carlo.

    python benchmarks/calibrate_scatter.py [--photons 4000000] [--jobs 2] [--device cpu]

Writes ``projectors/physics/data/scatter_kernels.npz`` (package data the fast
model loads) and ``benchmarks/results/scatter_calibration.json`` (a summary:
the kernels' scatter-to-primary ratio for an infinite field per spectrum,
thickness and air gap). Each kernel draws from its own seeded stream, so the
table is the same whatever ``--jobs``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from projectors.physics.calibration import calibrate  # noqa: E402
from projectors.physics.scatter_fast import KernelTable  # noqa: E402
from projectors.physics.spectrum import SpectrumParams  # noqa: E402

# C-arm beams (Al + Cu) at 60, 80, 120 kV and a general-radiography 80 kV beam without copper; the
# fast model interpolates in mean energy (41, 43, 49, 60 keV)
SPECTRA = [SpectrumParams(kvp=k, anode_angle=10, filtration=(("Al", 3.0), ("Cu", 0.1))) for k in (60, 80, 120)] + [
    SpectrumParams(kvp=80, anode_angle=12, filtration=(("Al", 2.5),))]
THICKNESS_CM = [0.5, 2, 5, 10, 15, 20, 25, 30, 40]
GAP_MM = [20, 50, 100, 250, 500]
OUT = ROOT / "projectors" / "physics" / "data" / "scatter_kernels.npz"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photons", type=int, default=2_000_000, help="photons per kernel at t = 0 (x (1 + t/10 cm))")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (one Warp CPU launch uses one core)")
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    t0 = time.time()
    n = len(SPECTRA) * len(THICKNESS_CM) * len(GAP_MM)
    done = [0]

    def progress():
        done[0] += 1
        print(f"  {done[0]}/{n} kernels, {time.time() - t0:.0f} s", flush=True)

    kw = dict(progress=progress, device=a.device)
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs, mp_context=get_context("spawn")) as pool:
            table = calibrate(SPECTRA, THICKNESS_CM, GAP_MM, a.photons, a.seed, map_fn=pool.map, **kw)
    else:
        table = calibrate(SPECTRA, THICKNESS_CM, GAP_MM, a.photons, a.seed, **kw)
    table["meta"]["seconds"] = round(time.time() - t0, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    KernelTable(**table).to_npz(a.out)
    summary = {
        "mean_energy_kev": table["mean_energy"].tolist(), "thickness_cm": THICKNESS_CM, "gap_mm": GAP_MM,
        "spr_infinite_field": np.round(table["radial"].sum(axis=-1), 4).tolist(), "meta": table["meta"],
    }
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "scatter_calibration.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {a.out} ({a.out.stat().st_size / 1024:.0f} kB) in {time.time() - t0:.0f} s")
    for i, e in enumerate(table["mean_energy"]):
        for gi, g in enumerate(GAP_MM):
            spr = table["radial"][i, :, gi].sum(axis=-1)
            print(f"mean energy {e:5.1f} keV gap {g:4d} mm  SPR(t): " + " ".join(f"{t:g}:{s:.2f}" for t, s in zip(THICKNESS_CM, spr)))


if __name__ == "__main__":
    main()

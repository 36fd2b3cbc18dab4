"""Cost of the fast scatter model per image: today's code (git main) vs this tree, side by side in one run.

    python benchmarks/scatter_cost.py [--ref main] [--size 256] [--repeats 15]

Loads the reference revision's ``projectors/physics/scatter_fast.py`` (and its kernel table
module) from git into a private module, and times both on the same input: the shared
pelvis CT's primary transmission at ``size`` x ``size`` (C-arm AP, default geometry).
Timings alternate between the two implementations, so machine load affects both alike;
the ratio of medians is the result. Cases: the same spectrum every call (the new model caches
its per-spectrum kernels), and a new kVp every call (as a randomized dataset draws; grid and
patient geometry on). Writes ``benchmarks/results/scatter_cost.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_reference(ref: str):
    """The reference revision's fast_scatter, its relative imports resolved in this tree's package
    (params, signal, spectrum) except its own kernel table module."""
    tmp = Path(tempfile.mkdtemp())
    mods = {}
    for name in ("scatter_calibration", "scatter_fast"):
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:projectors/physics/{name}.py"], check=True,
                             capture_output=True, text=True).stdout
        if name == "scatter_fast":
            src = src.replace("from .scatter_calibration import TABLE", "from projectors.physics._ref_scatter_calibration import TABLE")
        path = tmp / f"{name}.py"
        path.write_text(src)
        full = f"projectors.physics._ref_{name}"
        spec = importlib.util.spec_from_file_location(full, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[full] = mod
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods["scatter_fast"].fast_scatter


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="main")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    from benchmarks.scatter_realct import load_ct
    from projectors.geometry import CArm
    from projectors.physics import GridParams, PhysicsParams, ScatterParams, preset, spectrum
    from projectors.physics.scatter_fast import fast_scatter
    from projectors.physics.signal import spectral_signal
    from projectors.projector import Projector

    old = load_reference(a.ref)
    vol = load_ct("pelvis")
    cam = CArm(size=(a.size, a.size), pitch=1.164 * 256 / a.size).camera(0, 0, isocenter=vol)
    from projectors.physics.scatter_fast import patient_geometry

    pg = patient_geometry(vol, cam)
    spec = spectrum(preset("carm_80kv"))
    p = PhysicsParams(spectrum=spec.params, noise=False)
    T = spectral_signal(Projector(vol, device="cpu").project(cam).areal_density, cam, spec, p).transmission
    det = p.detector
    # a dataset draws a new kVp per image: every timed call gets a spectrum it has not seen (no cache hits)
    from projectors.physics import SpectrumParams

    fresh = iter([spectrum(SpectrumParams(kvp=70.0 + 0.37 * i, anode_angle=10, filtration=(("Al", 3.0), ("Cu", 0.1))))
                  for i in range(2 * (a.repeats + 1))])
    fresh_ref = iter([spectrum(SpectrumParams(kvp=70.0 + 0.37 * i, anode_angle=10, filtration=(("Al", 3.0), ("Cu", 0.1))))
                      for i in range(2 * (a.repeats + 1))])
    cases = {
        "reference": lambda: old(T, cam, 1020.0, spec, det),
        "reference_new_kvp": lambda: old(T, cam, 1020.0, next(fresh_ref), det),
        "new_new_kvp": lambda: fast_scatter(T, cam, 1020.0, next(fresh), det, ScatterParams(grid=GridParams(), **pg)),
        "new_slab": lambda: fast_scatter(T, cam, 1020.0, spec, det, ScatterParams(air_gap_mm=pg["air_gap_mm"])),
        "new": lambda: fast_scatter(T, cam, 1020.0, spec, det, ScatterParams(**pg)),
        "new_grid": lambda: fast_scatter(T, cam, 1020.0, spec, det, ScatterParams(grid=GridParams(), **pg)),
    }
    times = {k: [] for k in cases}
    for f in cases.values():
        f()  # warm caches (tables, matrices)
    for _ in range(a.repeats):
        for k, f in cases.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    out = {"size": a.size, "repeats": a.repeats, "reference": a.ref, "median_s": med, "patient_geometry": pg,
           "ratio_new_over_reference": med["new"] / med["reference"], "ratio_new_grid_over_reference": med["new_grid"] / med["reference"],
           "ratio_new_slab_over_reference": med["new_slab"] / med["reference"],
           "ratio_new_kvp_each_call": med["new_new_kvp"] / med["reference_new_kvp"]}
    print(json.dumps(out, indent=1))
    (REPO / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "benchmarks" / "results" / "scatter_cost.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Regenerate the fast scatter model's kernel table from the Monte Carlo.

    python benchmarks/calibrate_scatter.py [--photons 2000000] [--device cpu]

Writes ``projectors/physics/scatter_calibration.py`` (the table the fast model
loads) and ``benchmarks/results/scatter_calibration.json``.
"""

from __future__ import annotations

import argparse
import json
import pprint
import time
from pathlib import Path

import numpy as np
from rich.progress import Progress

from projectors.physics.calibration import calibrate
from projectors.physics.spectrum import SpectrumParams

ROOT = Path(__file__).resolve().parents[1]
SPECTRA = [SpectrumParams(kvp=k, anode_angle=10, filtration=(("Al", 3.0), ("Cu", 0.1))) for k in (60, 80, 120)]
THICKNESS_CM = [0.5, 2, 5, 10, 15, 20, 25, 30, 40, 50]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photons", type=int, default=8_000_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=20261123)
    a = ap.parse_args()
    t0 = time.time()
    with Progress() as prog:
        task = prog.add_task("scatter kernels", total=len(SPECTRA) * len(THICKNESS_CM))
        table = calibrate(SPECTRA, THICKNESS_CM, a.photons, np.random.default_rng(a.seed), progress=lambda: prog.advance(task), device=a.device)
    table["geometry"]["seed"] = a.seed
    table["geometry"]["seconds"] = round(time.time() - t0, 1)
    out = ROOT / "projectors" / "physics" / "scatter_calibration.py"
    out.write_text(
        '"""Fast scatter kernel table, fitted to the Monte Carlo by benchmarks/calibrate_scatter.py (generated; do not edit)."""\n\n'
        "TABLE = " + pprint.pformat(table, width=110, sort_dicts=False) + "\n"
    )
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "scatter_calibration.json").write_text(json.dumps(table, indent=1))
    print(f"wrote {out} in {time.time() - t0:.0f} s")
    for i, e in enumerate(table["mean_energy"]):
        print(f"mean energy {e:5.1f} keV  SPR(t): " + " ".join(f"{t:g}cm:{s:.2f}" for t, s in zip(table["thickness_cm"], table["spr"][i])))


if __name__ == "__main__":
    main()

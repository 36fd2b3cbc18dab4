"""Benchmark of image-level domain randomization (SyntheX strong / mild presets).

Prints a table and writes ``benchmarks/results/augment.json``:

* time per image for each preset (sample a record + apply it to an image, a
  7-class label map and 14 landmarks), as images/s on one process;
* time per op when it fires, for the kornia-backed ops next to a scipy.ndimage
  implementation of the same op run in the same process (ratio = ours / scipy),
  with the largest difference between the two outputs as an equivalence check;
* a contact sheet ``benchmarks/results/augment_examples.png`` of strong draws on
  the real chest radiograph in ``../shared/data`` (when present), with white
  crosses burnt into the input at the landmarks and red rings drawn at the moved
  landmarks: each ring must sit on its cross.

Usage: python benchmarks/augment.py [--size 256] [--n 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import domain_randomization.image as dri
from domain_randomization.image import OPS, apply, sample_params

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
XRAY = ROOT.parent / "shared" / "data" / "xray" / "00000001_000.png"


def test_scene(size: int, rng: np.random.Generator):
    vv, uu = np.mgrid[0:size, 0:size] / size
    image = 0.3 + 0.4 * np.exp(-((uu - 0.5) ** 2 + (vv - 0.5) ** 2) / 0.05) + 0.05 * rng.random((size, size))
    masks = np.minimum((uu * 4).astype(np.int32) + 3 * (vv > 0.5), 6)
    keypoints = rng.uniform(0.1 * size, 0.9 * size, (14, 2))
    return np.clip(image, 0, 1).astype(np.float32), masks, keypoints


def timed(fn, repeat):
    """Median seconds per call (robust to other load on a shared machine)."""
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def scipy_reference(op: str, image: np.ndarray, params: dict) -> np.ndarray:
    """The same op with scipy.ndimage (border 'mirror' = reflect about edge pixel centres)."""
    if op == "affine":
        m = dri.Affine.output_from_input(image.shape, **params)
        inv = np.linalg.inv(m)  # output (u, v) -> input (u, v); scipy works in (row, col)
        swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
        rc = swap @ inv @ swap
        return ndimage.affine_transform(image, rc[:2, :2], rc[:2, 2], order=1, mode="mirror")
    if op == "elastic":
        su, sv = dri.Elastic.sample_coordinates(image.shape, **params)
        return ndimage.map_coordinates(image, [sv, su], order=1, mode="mirror")
    if op == "gaussian_blur":
        r = int(3 * params["sigma"] + 0.5)
        return ndimage.gaussian_filter(image, params["sigma"], mode="mirror", truncate=r / params["sigma"])
    if op == "average_blur":
        k = params["k"]
        return ndimage.uniform_filter(image, k, mode="mirror", origin=-((k + 1) % 2))
    if op == "sharpen":
        return np.clip(ndimage.correlate(image, dri.intensity.Sharpen.kernel(**params), mode="mirror"), 0, 1)
    raise KeyError(op)


def contact_sheet(n: int, seed: int) -> Path | None:
    if not XRAY.exists():
        return None
    from PIL import Image, ImageDraw

    base = np.asarray(Image.open(XRAY).convert("L").resize((256, 256)), dtype=np.float32) / 255.0
    points = np.array([[u, v] for u in (64.0, 128.0, 192.0) for v in (64.0, 128.0, 192.0)])
    marked = base.copy()
    for u, v in points.astype(int):
        marked[v - 4 : v + 5, u] = 1.0
        marked[v, u - 4 : u + 5] = 1.0
    tiles = []
    g = np.random.default_rng(seed)
    while len(tiles) < n:
        out = dri.randomize(marked, keypoints=points, rng=g, preset="strong")
        if not out.params["ops"]:
            continue
        tile = Image.fromarray((out.image * 255).astype(np.uint8)).convert("RGB")
        draw = ImageDraw.Draw(tile)
        for (u, v), vis in zip(out.keypoints, out.visible):
            if vis:
                draw.ellipse([u - 7, v - 7, u + 7, v + 7], outline=(255, 0, 0))
        draw.text((3, 3), ",".join(r["op"] for r in out.params["ops"])[:60], fill=(255, 255, 0))
        tiles.append(tile)
    cols = 4
    sheet = Image.new("RGB", (256 * cols, 256 * ((n + cols - 1) // cols)))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * 256, (i // cols) * 256))
    path = RESULTS / "augment_examples.png"
    sheet.save(path)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=300, help="draws per preset")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: one process per core, as render workers and DataLoader workers run)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    g = np.random.default_rng(0)
    image, masks, keypoints = test_scene(args.size, g)

    presets = {}
    for name in ("none", "mild", "strong"):
        records = [sample_params(name, np.random.default_rng([1, i])) for i in range(args.n)]
        t0 = time.perf_counter()
        for r in records:
            apply(image, masks, keypoints, None, r)
        dt = (time.perf_counter() - t0) / args.n
        presets[name] = {"ms_per_image": 1e3 * dt, "images_per_s": 1.0 / dt}

    ops = {}
    for op in sorted(OPS):
        params = OPS[op]().draw(np.random.default_rng(3))
        if op == "gaussian_blur":
            params["sigma"] = 2.0
        record = {"ops": [{"op": op, **params}]}
        ours = timed(lambda: apply(image, params=record), 30)
        with_labels = timed(lambda: apply(image, masks, keypoints, None, record), 30)
        row = {"ms": 1e3 * ours, "ms_with_labels": 1e3 * with_labels}
        try:
            ref = scipy_reference(op, image, params)
        except KeyError:
            ref = None
        if ref is not None:
            t_ref = timed(lambda: scipy_reference(op, image, params), 30)
            got = apply(image, params=record).image
            row.update(scipy_ms=1e3 * t_ref, ratio=ours / t_ref, max_abs_diff=float(np.abs(got - ref).max()))
        ops[op] = row

    console = Console(width=120)
    table = Table(title=f"image randomization, {args.size}x{args.size}, image + 7-class mask + 14 landmarks, "
                        f"{args.threads} torch thread(s)")
    for col in ("preset", "ms / image", "images / s"):
        table.add_column(col, justify="right")
    for name, row in presets.items():
        table.add_row(name, f"{row['ms_per_image']:.2f}", f"{row['images_per_s']:.0f}")
    console.print(table)
    table = Table(title="per op when it fires: image only (vs scipy.ndimage), and with mask + landmarks")
    for col in ("op", "ours ms", "scipy ms", "ours / scipy", "max |diff|", "+ labels ms"):
        table.add_column(col, justify="right")
    for op, row in ops.items():
        versus = ("", "", "")
        if "ratio" in row:
            versus = (f"{row['scipy_ms']:.2f}", f"{row['ratio']:.2f}", f"{row['max_abs_diff']:.1e}")
        table.add_row(op, f"{row['ms']:.2f}", *versus, f"{row['ms_with_labels']:.2f}")
    console.print(table)

    sheet = contact_sheet(16, seed=7)
    if sheet:
        console.print(f"contact sheet: {sheet.relative_to(ROOT)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "size": args.size, "draws": args.n, "presets": presets, "ops": ops,
        "machine": {"cpu_count": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "strong_seconds_per_10000_images_one_core": presets["strong"]["ms_per_image"] * 10,
    }
    (RESULTS / "augment.json").write_text(json.dumps(out, indent=2))
    console.print(f"wrote {(RESULTS / 'augment.json').relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""Run the GAN baselines once for real and show what they do.

cyclegan: translate rendered covid chest X-rays (labelled, domain A) toward the 101 real
chest X-rays of ../shared/data/xray/covid19_cxr_open (unlabelled, domain B) at the CPU
preset; measure what the translation keeps (edge correlation vs chance, lesion-region
contrast) and how far it moves the intensity distribution (1-Wasserstein to the real
images); montage rendered | translated | real.

pix2pix: train label map (+ landmarks) -> image on a labelled set at the CPU preset,
sample a labelled set from warped label maps; L1 to the real image on the training
label maps, and a montage label map | sample | real.

    PYTHONPATH=. python -m synthex render benchmarks/configs/gan_covid300.yaml --out /tmp/gan-covid
    PYTHONPATH=. python benchmarks/gan_baselines.py cyclegan --source /tmp/gan-covid --run /tmp/gan-cg-run --threads 1
    PYTHONPATH=. python -m synthex render benchmarks/configs/gan_hip300.yaml --out /tmp/gan-hip
    PYTHONPATH=. python benchmarks/gan_baselines.py pix2pix --train /tmp/gan-hip --run /tmp/gan-p2p-run --threads 1

A finished run in --run is reused (fit resumes from its checkpoint; nothing is retrained).
Timings are wall-clock on a machine shared with other jobs: noisy, see ``load_average``.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"


def shared_data(rel: str) -> Path:
    """../shared/data/REL (synthex.shared_data), or exit saying it is missing."""
    from synthex.shared_data import shared_data as base

    if not base(rel).exists():
        raise SystemExit(f"shared data {base(rel)} not found (see ../shared/data/README.md; set SYNTHEX_SHARED_DATA)")
    return base(rel)


def tile(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8))
    return np.asarray(im.resize((size, size), Image.BILINEAR)).astype(np.float64) / 255.0


def outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    m = mask.astype(bool)
    return m & ~ndimage.binary_erosion(m)


def rgb(gray: np.ndarray, overlays=()) -> np.ndarray:
    """Gray (H, W) -> RGB uint8 with (mask, colour) outlines painted on."""
    out = np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2)
    for mask, colour in overlays:
        out[outline(mask)] = colour
    return np.rint(out * 255).astype(np.uint8)


def grid(rows: list[list[np.ndarray]], titles: list[str], pad: int = 4):
    from PIL import Image, ImageDraw

    h, w = rows[0][0].shape[:2]
    n_cols = max(len(r) for r in rows)
    label_w = 120
    canvas = Image.new("RGB", (label_w + n_cols * (w + pad), len(rows) * (h + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (row, title) in enumerate(zip(rows, titles)):
        y = r * (h + pad)
        draw.multiline_text((4, y + h // 2 - 12), title, fill=(0, 0, 0))
        for c, img in enumerate(row):
            canvas.paste(Image.fromarray(img), (label_w + c * (w + pad), y))
    return canvas


def run_info(t0: float) -> dict:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
            "load_average_end": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()}


def cyclegan_study(args) -> None:
    from training.gan import cyclegan
    from training.gan.data import load_images, load_labelled
    from training.gan.metrics import translation_report

    target = Path(args.target) if args.target else shared_data("xray/covid19_cxr_open")
    load0 = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    config = cyclegan.preset(args.preset, seed=args.seed, device=args.device,
                             **({"epochs": args.epochs} if args.epochs else {}))
    model = cyclegan.fit(args.source, target, config, args.run, resume=True, threads=args.threads,
                         progress=not args.quiet)
    translated_dir = cyclegan.translate_dataset(args.run, args.source, Path(args.run) / "translated",
                                                overwrite=True, progress=not args.quiet)
    src = load_labelled(args.source, config.size, need_labels=False)
    tgt, tgt_names = load_images(target, config.size, fit=config.target_fit)
    moved = model.translate(src.images)
    report = translation_report(src.images, moved, target=tgt, labels=src.labels, classes=src.classes,
                                rng=np.random.default_rng(args.seed))
    # reference point: pooled histogram matching of the renders to the real images (a monotone grey-level
    # map, no geometry change), i.e. what "only the intensities moved" scores on the same metrics
    quantiles = np.linspace(0, 1, 1001)
    matched = np.interp(src.images, np.quantile(src.images, quantiles), np.quantile(tgt, quantiles))
    report["histogram_matching_reference"] = translation_report(
        src.images, matched.astype(np.float32), target=tgt, labels=src.labels, classes=src.classes,
        rng=np.random.default_rng(args.seed))
    history = json.loads((Path(args.run) / "history.json").read_text())

    # montage: 8 renders (lesion outline in red) over their translations (same outline) over 8 real images
    pick = np.linspace(0, len(src) - 1, 8).round().astype(int)
    lesion = src.classes.index("lesion") if "lesion" in src.classes else None
    rows = [[rgb(src.images[i], [] if lesion is None else [(src.labels[i] == lesion, (1, 0, 0))]) for i in pick],
            [rgb(moved[i], [] if lesion is None else [(src.labels[i] == lesion, (1, 0, 0))]) for i in pick]]
    real_pick = np.linspace(0, len(tgt) - 1, 8).round().astype(int)
    rows.append([rgb(tgt[i]) for i in real_pick])
    img = grid(rows, ["rendered\n(lesion outline)", "CycleGAN\ntranslation\n(same outline)",
                      "real targets\n(centre crop)"])
    png = RESULTS / "gan_cyclegan_covid.png"
    img.save(png)

    attribution = {}
    meta_csv = target / "images.csv"
    if meta_csv.is_file():
        rows_csv = {r["file"]: r for r in csv.DictReader(meta_csv.open())}
        attribution = {tgt_names[i]: {k: rows_csv.get(tgt_names[i], {}).get(k) for k in ("license", "doi", "url")}
                       for i in real_pick}
    out = {"study": "CycleGAN: rendered covid chest X-rays -> real chest X-rays (covid19_cxr_open)",
           "command": "PYTHONPATH=. python benchmarks/gan_baselines.py cyclegan --source " + str(args.source)
                      + f" --run {args.run} --threads {args.threads}",
           "source": src.source, "n_source": len(src), "target": str(target), "n_target": len(tgt),
           "config": model.meta["config"], "history": history, "report": report,
           "montage": str(png.relative_to(REPO)), "montage_real_images": attribution,
           "timing": {**run_info(t0), "load_average_start": load0,
                      "train_seconds": round(sum(h["seconds"] for h in history), 1),
                      "note": "wall-clock on a shared 2-core machine; includes any earlier run resumed"}}
    (RESULTS / "gan_cyclegan_covid.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(report, indent=1))
    print(f"wrote {png} and {RESULTS / 'gan_cyclegan_covid.json'}; translated set: {translated_dir}")


def pix2pix_study(args) -> None:
    from training.gan import pix2pix
    from training.gan.data import load_labelled

    load0 = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    config = pix2pix.preset(args.preset, seed=args.seed, device=args.device,
                            **({"epochs": args.epochs} if args.epochs else {}))
    model = pix2pix.fit(args.train, config, args.run, resume=True, threads=args.threads, progress=not args.quiet)
    samples_dir = pix2pix.sample(args.run, args.n_samples, Path(args.run) / "samples", seed=args.seed,
                                 overwrite=True, progress=not args.quiet)
    data = load_labelled(args.train, config.size)
    # L1 of generated vs real on the training label maps (noise off, then on): how well the
    # generator reproduces the images it was trained on; the images' own spread is the scale
    gen_clean = model.generate(data.labels, data.landmarks if model.uses_landmarks else None, noise=False)
    gen_noisy = model.generate(data.labels, data.landmarks if model.uses_landmarks else None, seed=1)
    l1_clean = np.abs(gen_clean - data.images).mean(axis=(1, 2))
    l1_noisy = np.abs(gen_noisy - data.images).mean(axis=(1, 2))
    l1_mean_image = np.abs(data.images.mean(axis=0)[None] - data.images).mean(axis=(1, 2))
    history = json.loads((Path(args.run) / "history.json").read_text())

    from training.data import open_source

    synth = open_source(samples_dir)
    colours = [(1, 0.2, 0.2), (0.2, 1, 0.2), (0.3, 0.5, 1), (1, 1, 0.2), (1, 0.3, 1), (0.2, 1, 1)]

    def overlay(gray, labels, lms):
        im = rgb(gray, [(labels == c, colours[(c - 1) % len(colours)]) for c in range(1, labels.max() + 1)])
        for u, v in lms[np.all(np.isfinite(lms), axis=1)]:
            uu, vv = round(u), round(v)
            im[max(vv - 1, 0):vv + 2, max(uu - 1, 0):uu + 2] = (255, 255, 0)
        return im

    pick = np.linspace(0, len(synth) - 1, 8).round().astype(int)
    recs = [synth[int(i)] for i in pick]
    def label_rgb(labels, lms):
        im = np.zeros((*labels.shape, 3))
        for c in range(1, labels.max() + 1):
            im[labels == c] = colours[(c - 1) % len(colours)]
        im = np.rint(im * 200).astype(np.uint8)
        for u, v in lms[np.all(np.isfinite(lms), axis=1)]:
            uu, vv = round(u), round(v)
            im[max(vv - 1, 0):vv + 2, max(uu - 1, 0):uu + 2] = (255, 255, 255)
        return im

    rows = [[label_rgb(r.labels, r.landmarks) for r in recs],
            [rgb(r.image) for r in recs],
            [overlay(r.image, r.labels, r.landmarks) for r in recs]]
    samples = [json.loads(x) for x in (samples_dir / "samples.jsonl").read_text().splitlines()]
    rows.append([rgb(data.images[samples[int(i)]["source_index"]]) for i in pick])
    img = grid(rows, ["warped label map\n+ landmarks", "pix2pix sample", "sample + labels",
                      "real image of the\nunwarped label map"])
    png = RESULTS / "gan_pix2pix_hip.png"
    img.save(png)
    out = {"study": "pix2pix: label map + landmarks -> image, trained on a labelled set, sampled from warped maps",
           "command": f"PYTHONPATH=. python benchmarks/gan_baselines.py pix2pix --train {args.train} "
                      f"--run {args.run} --threads {args.threads}",
           "train": data.source, "n_train": len(data), "config": model.meta["config"], "history": history,
           "l1_on_training_maps": {"generated_no_noise": float(l1_clean.mean()),
                                   "generated_with_noise": float(l1_noisy.mean()),
                                   "mean_training_image_baseline": float(l1_mean_image.mean())},
           "n_samples": len(synth), "montage": str(png.relative_to(REPO)),
           "timing": {**run_info(t0), "load_average_start": load0,
                      "train_seconds": round(sum(h["seconds"] for h in history), 1),
                      "note": "wall-clock on a shared 2-core machine; includes any earlier run resumed"}}
    (RESULTS / "gan_pix2pix_hip.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("l1_on_training_maps", "timing")}, indent=1))
    print(f"wrote {png}; samples: {samples_dir}")


def main():
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="study", required=True)
    for name in ("cyclegan", "pix2pix"):
        s = sub.add_parser(name)
        if name == "cyclegan":
            s.add_argument("--source", required=True, help="labelled renders (synthex dataset)")
            s.add_argument("--target", help="folder of real X-rays (default: shared covid19_cxr_open)")
        else:
            s.add_argument("--train", required=True, help="labelled training set")
            s.add_argument("--n-samples", type=int, default=300)
        s.add_argument("--run", required=True)
        s.add_argument("--preset", default="cpu")
        s.add_argument("--epochs", type=int)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--device", default="auto")
        s.add_argument("--threads", type=int, default=None)
        s.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (cyclegan_study if args.study == "cyclegan" else pix2pix_study)(args)


if __name__ == "__main__":
    main()

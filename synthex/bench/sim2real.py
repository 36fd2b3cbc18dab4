"""``synthex bench sim2real``: the same model trained on each source, tested on one held-out target.

    from synthex.bench.sim2real import run_sim2real
    result = run_sim2real("hip", "cpu", out="bench/hip")                 # the built-in reference domain
    result = run_sim2real("hip", "cpu", targets=["deepfluoro.h5"], out="bench/hip-df")   # your labelled X-rays

Sources (:data:`synthex.bench.study.SOURCES`): naive DRR, realistic, realistic + strong
randomization, pix2pix, CycleGAN, and the target's own training split. Every one is
trained with one :class:`training.train.TrainConfig` (the preset's; only the training
randomization differs, as the table says) by :func:`training.run.train_downstream`
and scored on the target's test split, so every number in the table comes from the
same evaluation code (subject-clustered 95% bootstrap CIs, no interval below 5
subjects). For covid, the models are also run on the 101 real chest X-rays of the
shared data with :func:`training.predict.predict_files` (lesion probability of
COVID-19 vs no-finding images, AUC clustered by patient).

Writes ``REPORT/sim2real_<task>.json``, ``.md`` and ``_samples.png`` (and for covid
``_real_cxr.png``); the run folder holds the datasets, models and step records.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from synthex.bench.steps import Steps, fingerprint
from synthex.bench.study import (
    SOURCES,
    Study,
    _threads,
    data_step_count,
    make_study,
    prepare_data,
    real_cxr_folder,
    real_cxr_table,
)

#: table columns per task: (summary key, heading, digits)
METRICS = {
    "hip": [("dice_mean", "Dice (mean of classes)", 3), ("landmark_error_mm_mean", "landmark error (mm)", 2),
            ("landmark_error_px_mean", "landmark error (px)", 2)],
    "tool": [("dice_mean", "Dice", 3), ("landmark_error_mm/tip", "tip error (mm)", 2),
             ("landmark_error_mm/base", "base error (mm)", 2), ("detection_ap50", "AP@0.5", 3)],
    "covid": [("lesion_dice", "lesion Dice (images with lesions)", 3), ("presence_auc", "lesion presence AUC", 3),
              ("dice/lung", "lung Dice", 3)],
}


def train_config(study: Study, randomization: str):
    from training.train import TrainConfig

    return TrainConfig(task=study.task, image_size=study.preset.image_size, randomization=randomization,
                       seed=study.seed, device=study.device, **study.preset.train)


def _train_step(study: Study, spec, fps: dict):
    from training.run import train_downstream

    out = study.out / "models" / spec.name
    config = train_config(study, spec.randomization)
    key = {"config": asdict(config), "train": fps[spec.data], "test": fps["target_test"]}

    def run():
        res = train_downstream(config, [study.path(spec.data)], out, test_paths=[study.path("target_test")],
                               resume=(out / "last.pt").is_file(), progress=study.progress)
        r = res["result"]
        return {"best_epoch": r.best_epoch, "epochs_run": len(r.history), "stopped_early": r.stopped_early,
                "seconds": sum(h.get("seconds", 0.0) for h in r.history)}

    return key, run, [out / "metrics.json"]


# ---------------------------------------------------------------------------
# covid: the models on the real chest X-rays


def real_cxr_auc(predictions: dict, table: dict[str, dict], seed: int) -> dict:
    """Lesion probability of COVID-19 vs No Finding images: AUC with a 95% CI clustered by patient
    (:func:`training.evaluation.presence_auc`), and per-finding medians."""
    from training.evaluation import presence_auc

    rows = []
    for rec in predictions["images"]:
        meta = table.get(Path(rec["file"]).name)
        if meta is not None:
            rows.append((meta, float(rec["lesion_probability"])))
    per = {}
    for finding in sorted({m["finding"] for m, _ in rows}):
        p = np.array([s for m, s in rows if m["finding"] == finding])
        per[finding] = {"n": len(p), "median": float(np.median(p)), "min": float(p.min()), "max": float(p.max())}
    recs = [{"subject": m["patientid"], "presence_score": s, "presence_true": m["finding"] == "COVID-19"}
            for m, s in rows if m["finding"] in ("COVID-19", "No Finding")]
    auc = presence_auc(recs, np.random.default_rng([seed, 30_000]), 2000)
    return {"auc_covid_vs_no_finding": auc, "per_finding": per,
            "note": f"{auc['n_negative']} no-finding images only: the AUC's interval is wide and says little"}


def _predict_step(study: Study, spec, fps: dict, folder: Path, figures: bool):
    from training.predict import predict_files

    out = study.out / "predictions-real-cxr" / spec.name
    key = {"model": fps[f"train-{spec.name}"], "images": str(folder), "figures": figures}

    def run():
        if out.exists():  # a previous attempt that did not record its end: start afresh (our own folder)
            shutil.rmtree(out)
        doc = predict_files(study.out / "models" / spec.name, [folder], out, task="covid", device=study.device,
                            figures=figures, progress=study.progress)
        return real_cxr_auc(doc, real_cxr_table(folder), study.seed)

    return key, run, [out / "predictions.json"]


# ---------------------------------------------------------------------------
# the run


def run_sim2real(task: str, preset="cpu", targets=(), out=None, *, report_dir=None, seed: int = 0,
                 device: str = "auto", threads: int | None = None, target_format: str = "auto",
                 target_test_fraction: float = 0.5, progress: bool = True, log=print, command: str = "") -> dict:
    """Run (or resume) the study; write the report files; return the results document."""
    study = make_study(task, preset, targets, out, seed=seed, device=device, threads=threads,
                       target_format=target_format, target_test_fraction=target_test_fraction, progress=progress,
                       command=command or _api_command(task, preset, targets, out, seed, device, threads))
    cxr = real_cxr_folder() if task == "covid" else None
    total = data_step_count(study) + len(SOURCES) + (len(SOURCES) if cxr is not None else 0)
    steps = Steps(study.out, total, log)
    t0 = time.perf_counter()
    fps = prepare_data(study, steps)
    trained = {}
    with _threads(threads):
        for spec in SOURCES:
            key, run, outputs = _train_step(study, spec, fps)
            trained[spec.name] = steps.run(f"train-{spec.name}", key, run, outputs,
                                           f"{spec.label}: train on {study.path(spec.data).name} (randomization "
                                           f"{spec.randomization}), test on target-test")
            fps[f"train-{spec.name}"] = fingerprint(key)
        real = {}
        if cxr is not None:
            for spec in SOURCES:
                key, run, outputs = _predict_step(study, spec, fps, cxr, figures=spec.name == "realistic_strong")
                real[spec.name] = steps.run(f"predict-real-cxr-{spec.name}", key, run, outputs,
                                            f"{spec.label} model on the {cxr.name} real chest X-rays")
    results = collect(study, fps, trained, real, steps, time.perf_counter() - t0)
    from synthex.bench import report

    report.write_sim2real(results, study, Path(report_dir) if report_dir else study.out)
    return results


def _api_command(task, preset, targets, out, seed, device, threads) -> str:
    parts = [f"synthex bench sim2real --task {task} --preset {getattr(preset, 'name', preset)}"]
    parts += [f"--target {t}" for t in targets or ()]
    if out is not None:
        parts.append(f"--out {out}")
    if seed:
        parts.append(f"--seed {seed}")
    if device != "auto":
        parts.append(f"--device {device}")
    if threads:
        parts.append(f"--threads {threads}")
    return " ".join(parts)


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def collect(study: Study, fps: dict, trained: dict, real: dict, steps: Steps, seconds: float) -> dict:
    """The results document: per source its training data, settings and the test metrics."""
    import torch

    rows = []
    for spec in SOURCES:
        metrics = _read_json(study.out / "models" / spec.name / "metrics.json")
        summary = metrics["summary"]
        meta = metrics.get("training", {})
        rows.append({**asdict(spec), "train_path": str(study.path(spec.data)), "train_data": meta.get("train_data", ""),
                     "n_train_images": meta.get("n_images", {}),
                     "n_train_subjects": {k: len(v) for k, v in (meta.get("splits") or {}).items() if k != "test"},
                     "metrics": {k: summary.get(k) for k, _, _ in METRICS[study.task]},
                     "summary": summary, "training": trained.get(spec.name, {}),
                     "real_cxr": real.get(spec.name)})
    records = {name: steps.record(name) or {} for name in
               [f"render-{n}" for n in study.render] + ["target-split", "gan-pix2pix", "gan-cyclegan"]
               + [f"train-{s.name}" for s in SOURCES] + [f"predict-real-cxr-{s.name}" for s in SOURCES if real]}
    split = (records.get("target-split") or {}).get("result", {})
    from synthex._version import __version__

    return {
        "benchmark": "sim2real",
        "task": study.task,
        "target_kind": "reference" if study.builtin_target else "user",
        "target": split.get("description", ""),
        "target_split": {k: split.get(k) for k in ("train_subjects", "test_subjects", "train_images", "test_images",
                                                    "dropped_subjects", "strata")},
        "preset": asdict(study.preset),
        "seed": study.seed,
        "command": study.command,
        "plan": study.plan(),
        "rows": rows,
        "metrics": METRICS[study.task],
        "steps": {k: {"seconds": v.get("seconds"), "finished": v.get("finished"), "result": v.get("result")}
                  for k, v in records.items()},
        "ran_now": steps.ran, "skipped_now": steps.skipped,
        "seconds_this_invocation": seconds,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": study.threads or torch.get_num_threads(),
                    "cuda": torch.cuda.is_available()},
        "synthex_version": __version__,
        "notes": study.notes,
    }

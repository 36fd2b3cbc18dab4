"""End-to-end entry points behind ``synthex train-downstream``, ``synthex evaluate`` and ``synthex predict``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data import DataFormatError, concat_sources, open_source, split_by_subject
from training.data.base import Source, as_pixel_size, format_pixel_size
from training.data.prepare import TaskImages
from training.evaluation import ModelPredictor, evaluate, summarize_records
from training.report import write_report
from training.tasks import TrainingError, get_task
from training.train import TrainConfig, model_from_checkpoint, resolve_device, train


def open_sources(paths, format: str = "auto", pixel_size_mm=None) -> Source:
    """One source from dataset paths. ``pixel_size_mm`` (a number or ``(du, dv)``), when given,
    replaces the pixel size of every image (the data's own value otherwise)."""
    if not paths:
        raise TrainingError("no dataset given")
    parts = [open_source(p, format) for p in paths]
    src = concat_sources(parts)
    warnings = [f"{s.path}: {s.info['warning']}" for s in parts if s.info.get("warning")]
    if warnings:
        src.info = {**src.info, "warnings": warnings}
    if pixel_size_mm is not None:
        px = as_pixel_size(pixel_size_mm, "--pixel-size")
        load = src.load

        def load_with_pixel_size(i):
            rec = load(i)
            rec.pixel_size_mm = px
            return rec

        src.load, src.pixel_size_mm = load_with_pixel_size, px
        src.pixel_size_note = "given with --pixel-size (replaces what the data says)"
    return src


def test_info(source: Source, records: list[dict]) -> dict:
    """The test data's pixel size (as used for mm metrics, with its origin) and warnings."""
    values = {tuple(r["pixel_size_mm"]) if r.get("pixel_size_mm") else None for r in records}
    unknown = sum(1 for r in records if not r.get("pixel_size_mm"))
    if values == {None}:
        value = "unknown: no mm metrics"
    elif len(values) == 1:
        value = format_pixel_size(values.pop())
    else:
        value = f"{len(values - {None})} different values across images" + \
            (f"; unknown for {unknown} images (no mm metrics for them)" if unknown else "")
    return {"pixel_size": {"value": value, "note": source.pixel_size_note},
            "warnings": list(source.info.get("warnings", []))}


def predict_and_score(model, source: Source, indices, task, config: TrainConfig, device, progress: bool = True):
    data = TaskImages(source, task, config.image_size, indices)
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        tid = bar.add_task("evaluate", total=len(data))
        records, examples = evaluate(ModelPredictor(model, device, amp=config.amp), data, task,
                                     batch_size=config.batch_size, heatmap_sigma=config.heatmap_sigma,
                                     progress=lambda n: bar.update(tid, advance=n))
    return data, records, examples


def train_downstream(config: TrainConfig, train_paths, out_dir, *, test_paths=(), val_paths=(),
                     format: str = "auto", pixel_size_mm=None, resume: bool = False,
                     progress: bool = True) -> dict:
    """Train on ``train_paths``, test on ``test_paths`` (or, if none, on a held-out
    subject-level 15% of the training data); write checkpoints and the report."""
    task = get_task(config.task)
    out_dir = Path(out_dir)
    resolved = lambda paths: {str(Path(p).resolve()) for p in paths}
    if resolved(val_paths) & resolved(train_paths):
        raise TrainingError("the validation data is also training data; omit --val for a subject-level split")
    val_source = open_sources(val_paths, format, pixel_size_mm) if val_paths else None
    same = resolved(test_paths) == resolved(train_paths)
    if not same and resolved(test_paths) & resolved(train_paths):
        raise TrainingError("some test data is also training data; give disjoint datasets, or the training "
                            "data alone (its subjects are then split into train, validation and test)")
    source = open_sources(train_paths, format, pixel_size_mm)
    if not test_paths or same:
        parts = split_by_subject(source.subjects, {"trainval": 0.85, "test": 0.15}, config.seed + 1)
        trainval = _subset(source, parts["trainval"])
        test_source, test_idx = source, parts["test"]
        test_desc = f"held-out subjects of the training data ({len(parts['test'])} images of " \
                    f"{len(set(np.asarray(source.subjects)[parts['test']]))} subjects): {source.path}"
        exclude = [source.subjects[i] for i in parts["test"]]
    else:
        trainval, exclude = source, []
        test_source = open_sources(test_paths, format, pixel_size_mm)
        test_idx = np.arange(len(test_source))
        test_desc = test_source.describe()
    result = train(config, trainval, out_dir, val_source=val_source, exclude_subjects=exclude, resume=resume,
                   progress=progress)
    device = resolve_device(config.device)
    _, records, examples = predict_and_score(result.model, test_source, test_idx, task, config, device, progress)
    summary = summarize_records(records, config.seed)
    meta = _checkpoint_meta(result.checkpoint)
    meta["device"] = str(device)
    files = write_report(out_dir, task, meta, result.history, summary, records, examples, test_desc,
                         test_info=test_info(test_source, records))
    return {"summary": summary, "files": files, "result": result, "records": records}


def resolve_checkpoint(run) -> Path:
    """A checkpoint file from ``run``: the file itself, or ``run/best.pt`` for a training output folder."""
    p = Path(run)
    if p.is_dir():
        if (p / "best.pt").is_file():
            return p / "best.pt"
        raise TrainingError(f"{p} is a folder without best.pt; give a training output folder "
                            "(train-downstream --out) or a checkpoint file")
    if not p.exists():
        raise TrainingError(f"checkpoint {p} does not exist")
    return p


def evaluate_checkpoint(checkpoint, dataset_paths, out_dir, *, format: str = "auto",
                        pixel_size_mm=None, device: str = "auto", progress: bool = True) -> dict:
    """Evaluate a trained checkpoint (file or training output folder) on a labelled test set and write
    the report. Unlabelled images are :func:`training.predict.predict_files`' job."""
    model, meta = model_from_checkpoint(resolve_checkpoint(checkpoint))
    config = TrainConfig.from_dict(meta["config"])
    task = get_task(meta["task"])
    dev = resolve_device(device)
    model = model.to(dev)
    hint = ("; to run the model on unlabelled X-rays use: synthex predict RUN IMAGES... --out DIR")
    try:
        source = open_sources(dataset_paths, format, pixel_size_mm)
    except DataFormatError as e:
        raise DataFormatError(f"{e}{hint}") from None
    if not source.has_labels:
        raise TrainingError(f"{source.path} has no labels to score predictions against{hint}")
    _, records, examples = predict_and_score(model, source, np.arange(len(source)), task, config, dev, progress)
    summary = summarize_records(records, config.seed)
    meta["device"] = str(dev)
    files = write_report(out_dir, task, meta, [], summary, records, examples, source.describe(),
                         test_info=test_info(source, records))
    return {"summary": summary, "files": files, "records": records}


def _checkpoint_meta(path) -> dict:
    from training.train import load_checkpoint

    return load_checkpoint(path)["meta"]


def _subset(source: Source, indices) -> Source:
    idx = np.asarray(indices)
    return Source(path=source.path, format=source.format, classes=source.classes, landmarks=source.landmarks,
                  subjects=[source.subjects[i] for i in idx], names=[source.names[i] for i in idx],
                  load=lambda k: source[int(idx[k])], pixel_size_mm=source.pixel_size_mm,
                  has_labels=source.has_labels, info=source.info, pixel_size_note=source.pixel_size_note)

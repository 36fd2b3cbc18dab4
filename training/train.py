"""The one training loop every task uses.

AdamW, cosine learning-rate schedule (per step), mixed precision on CUDA only,
deterministic algorithms by default, on-the-fly image randomization
(:class:`domain_randomization.image.RandomizedDataset`, draws keyed by
``(seed, epoch, index)``), a checkpoint after every epoch (``last.pt``) and at
the best validation loss (``best.pt``), exact resume from ``last.pt``, and early
stopping when the validation loss has not improved for ``patience`` epochs.

Randomness: model initialization, batch order and randomization are functions
of the run seed (and the epoch); torch's global RNG is never used, so two runs
with the same seed and device give identical weights (checked by a test on CPU).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch

from training.data.base import Source
from training.data.prepare import TaskImages, collate
from training.data.splits import check_disjoint, split_by_subject
from training.losses import SegLandmarkLoss
from training.models import MODEL_SIZES, build_model
from training.tasks import Task, TrainingError, get_task

CHECKPOINT_VERSION = 1


@dataclass
class TrainConfig:
    """Defaults: a laptop CPU run at 128 px. Full-size GPU study (docs/training.md):
    ``image_size=384, model_size="base", epochs=100, batch_size=16, lr=1e-3``."""

    task: str = "hip"
    image_size: int = 128
    model_size: str = "small"
    epochs: int = 20
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    heatmap_weight: float = 0.5
    heatmap_sigma: float = 2.0
    randomization: str = "strong"
    val_fraction: float = 0.2
    patience: int = 5
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    deterministic: bool = True
    num_workers: int = 0

    def __post_init__(self):
        get_task(self.task)
        if self.model_size not in MODEL_SIZES:
            raise TrainingError(f"unknown model size {self.model_size!r}; known: {sorted(MODEL_SIZES)}")
        divisor = 2 ** (len(MODEL_SIZES[self.model_size].channels) - 1)
        if self.image_size < divisor or self.image_size % divisor:
            raise TrainingError(f"image_size {self.image_size} must be a positive multiple of {divisor} "
                                f"for model size {self.model_size!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise TrainingError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr <= 0 or self.heatmap_sigma <= 0:
            raise TrainingError("lr and heatmap_sigma must be positive")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainingError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class TrainResult:
    model: torch.nn.Module
    config: TrainConfig
    history: list[dict]
    best_epoch: int
    stopped_early: bool
    out_dir: Path
    splits: dict = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / "best.pt"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device):
    prev = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # CPU: strict. CUDA: warn (not fail) on an op without a deterministic kernel
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.backends.cudnn.benchmark = prev_bench


def make_splits(source: Source, config: TrainConfig, val_source: Source | None) -> dict[str, np.ndarray]:
    if val_source is not None:
        return {"train": np.arange(len(source))}
    return split_by_subject(source.subjects, {"train": 1 - config.val_fraction, "val": config.val_fraction},
                            config.seed)


def _loader(dataset, config: TrainConfig, shuffle: bool, epoch: int):
    g = torch.Generator()
    g.manual_seed(int(np.random.default_rng([config.seed, epoch, 0x5EED]).integers(0, 2**62)))
    return torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=shuffle, generator=g,
                                       num_workers=config.num_workers,
                                       collate_fn=partial(collate, heatmap_sigma=config.heatmap_sigma))


def _run_validation(model, loss_fn, loader, device, amp) -> dict:
    model.eval()
    total, seg, hm, n = 0.0, 0.0, 0.0, 0
    dice_sum, dice_n = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            x = batch["images"].to(device)
            with torch.autocast(device_type=device.type, enabled=amp):
                s, h = model(x)
            out = loss_fn(s, batch["labels"].to(device), h, batch["heatmaps"].to(device),
                          batch["visible"].to(device))
            b = x.shape[0]
            total, seg, hm, n = total + float(out["loss"]) * b, seg + float(out["seg"]) * b, \
                hm + float(out["heatmap"]) * b, n + b
            pred = s.argmax(1).cpu()
            lab = batch["labels"]
            for c in range(1, s.shape[1]):
                p, t = pred == c, lab == c
                denom = p.sum(dim=(1, 2)) + t.sum(dim=(1, 2))
                ok = denom > 0
                dice_sum += float((2 * (p & t).sum(dim=(1, 2))[ok] / denom[ok]).sum())
                dice_n += int(ok.sum())
    return {"val_loss": total / n, "val_seg_loss": seg / n, "val_heatmap_loss": hm / n,
            "val_dice": dice_sum / dice_n if dice_n else None}


def train(config: TrainConfig, source: Source, out_dir, *, val_source: Source | None = None,
          exclude_subjects=(), resume: bool = False, progress: bool = True) -> TrainResult:
    """Train on ``source`` (validation: ``val_source`` or a subject-level split of
    ``source``); write checkpoints under ``out_dir``. ``exclude_subjects``: subjects
    held out for testing, checked to appear in neither training nor validation."""
    from domain_randomization.image import RandomizedDataset

    task: Task = get_task(config.task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    amp = bool(config.amp and device.type == "cuda")

    parts = make_splits(source, config, val_source)
    train_data = TaskImages(source, task, config.image_size, parts["train"])
    val_data = TaskImages(val_source, task, config.image_size) if val_source is not None else \
        TaskImages(source, task, config.image_size, parts["val"])
    subjects = {"train": train_data.subjects, "val": [f"val:{s}" for s in val_data.subjects]
                if val_source is not None else val_data.subjects, "test": list(exclude_subjects)}
    check_disjoint(subjects)
    if len(train_data) == 0 or len(val_data) == 0:
        raise TrainingError("the training or validation split is empty; add data")

    randomized = RandomizedDataset(train_data, preset=config.randomization, seed=config.seed)
    model = build_model(task, config.model_size, config.seed).to(device)
    loss_fn = SegLandmarkLoss(task.num_classes, config.heatmap_weight)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    history, best, best_epoch, start_epoch, bad_epochs = [], math.inf, -1, 0, 0
    meta = {"task": task.name, "classes": list(task.classes), "landmarks": list(task.landmarks),
            "config": asdict(config), "train_data": source.describe(),
            "val_data": val_source.describe() if val_source is not None else "subject-level split of train data",
            "pixel_size_mm": source.pixel_size_mm, "pixel_size_note": source.pixel_size_note,
            "image_randomization": {"train": f"on the fly, preset {config.randomization!r}",
                                    "validation": "none"},
            "data_warnings": list(source.info.get("warnings", [])),
            "splits": {k: sorted(set(v)) for k, v in subjects.items()},
            "n_images": {"train": len(train_data), "val": len(val_data)}}
    last = out_dir / "last.pt"
    if resume and last.is_file():
        ck = load_checkpoint(last)
        if ck["meta"]["config"] != asdict(config):
            raise TrainingError(f"cannot resume {last}: it was written with other settings "
                                f"({ck['meta']['config']})")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        history, best, best_epoch = ck["history"], ck["best"], ck["best_epoch"]
        start_epoch, bad_epochs = ck["epoch"] + 1, ck["bad_epochs"]

    stopped_early = bad_epochs >= config.patience
    progress_bar = _progress(progress)
    with deterministic_mode(config.deterministic, device), progress_bar as bar:
        task_id = bar.add_task("train", total=(config.epochs - start_epoch) * steps_per_epoch, loss=float("nan"))
        for epoch in range(start_epoch, config.epochs):
            if stopped_early:
                break
            t0 = time.perf_counter()
            randomized.set_epoch(epoch)
            model.train()
            loss_sum, n = 0.0, 0
            for batch in _loader(randomized, config, True, epoch):
                x = batch["images"].to(device)
                with torch.autocast(device_type=device.type, enabled=amp):
                    s, h = model(x)
                out = loss_fn(s, batch["labels"].to(device), h, batch["heatmaps"].to(device),
                              batch["visible"].to(device))
                opt.zero_grad(set_to_none=True)
                scaler.scale(out["loss"]).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                loss_sum, n = loss_sum + float(out["loss"].detach()) * x.shape[0], n + x.shape[0]
                bar.update(task_id, advance=1, loss=float(out["loss"].detach()), description=f"epoch {epoch + 1}")
            val = _run_validation(model, loss_fn, _loader(val_data, config, False, epoch), device, amp)
            row = {"epoch": epoch, "train_loss": loss_sum / n, **val, "lr": sched.get_last_lr()[0],
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            if val["val_loss"] < best:
                best, best_epoch, bad_epochs = val["val_loss"], epoch, 0
                _save(out_dir / "best.pt", model, opt, sched, scaler, epoch, history, best, best_epoch,
                      bad_epochs, meta)
            else:
                bad_epochs += 1
            stopped_early = bad_epochs >= config.patience and epoch + 1 < config.epochs
            _save(last, model, opt, sched, scaler, epoch, history, best, best_epoch, bad_epochs, meta)
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    best_state = load_checkpoint(out_dir / "best.pt")
    model.load_state_dict(best_state["model"])
    return TrainResult(model=model, config=config, history=history, best_epoch=best_epoch,
                       stopped_early=stopped_early, out_dir=out_dir, splits=meta["splits"])


def _save(path: Path, model, opt, sched, scaler, epoch, history, best, best_epoch, bad_epochs, meta):
    save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                           "scaler": scaler.state_dict(), "epoch": epoch, "history": history, "best": best,
                           "best_epoch": best_epoch, "bad_epochs": bad_epochs, "meta": meta})


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` with the checkpoint version atomically (a temporary name, then a rename): a killed
    run never leaves a half file. Used by :func:`train` and the GAN baselines."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save({"version": CHECKPOINT_VERSION, **state}, tmp)
    tmp.replace(path)


def read_checkpoint(path, kind: str | None = None, error: type[TrainingError] = TrainingError) -> dict:
    """A checkpoint written by :func:`save_checkpoint`: a training run's (``kind`` None: it carries ``meta``)
    or one whose ``kind`` entry is ``kind``; ``error`` (a :class:`TrainingError`) names what is wrong: a
    missing or unreadable file, another version, another kind."""
    path = Path(path)
    if not path.is_file():
        raise error(f"checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a bad file
        raise error(f"{path} is not a readable synthex checkpoint: {e}") from None
    if not isinstance(ck, dict) or ck.get("version") != CHECKPOINT_VERSION or (
            "meta" not in ck if kind is None else ck.get("kind") != kind):
        raise error(f"{path} is not a synthex {kind or 'training'} checkpoint (version {CHECKPOINT_VERSION})")
    return ck


def load_checkpoint(path) -> dict:
    """A checkpoint written by :func:`train`."""
    return read_checkpoint(path)


def model_from_checkpoint(path, device="cpu"):
    """``(model, meta)`` from a checkpoint written by :func:`train`."""
    ck = load_checkpoint(path)
    meta = ck["meta"]
    config = TrainConfig.from_dict(meta["config"])
    model = build_model(get_task(meta["task"]), config.model_size, config.seed)
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), meta


def _progress(enabled: bool):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False)

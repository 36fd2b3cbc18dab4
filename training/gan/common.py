"""What pix2pix and CycleGAN share: the error type, run settings, the image pool,
the learning-rate schedule, checkpoints and the run's random streams.

Randomness (the contract both models follow): weights are initialized from
``seed`` (and a per-network offset), data order, label-map augmentation and the
image pool draw from ``numpy.random.Generator`` s keyed by ``(seed, stream,
epoch)``, and dropout draws from torch's CPU generator seeded from ``seed``
inside :func:`torch.random.fork_rng`, so torch's global state is untouched.
Two runs with one seed on one device give identical weights (a test checks it on
the CPU); ``torch.use_deterministic_algorithms`` is on (strict on the CPU, warn-only
on CUDA, where a few kernels have no deterministic version).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from training.tasks import TrainingError
from training.train import read_checkpoint, save_checkpoint  # noqa: F401  (one checkpoint format; save re-exported)

# independent random streams of one run: np.random.default_rng([seed, STREAM, ...])
STREAM_ORDER, STREAM_POOL, STREAM_AUGMENT, STREAM_TARGET, STREAM_NOISE = 1, 2, 3, 4, 5


class GANError(TrainingError):
    """Bad input to a GAN baseline (a clear, user-facing error)."""


def stream(seed: int, which: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(which), *(int(k) for k in keys)])


def config_from_dict(cls, d: dict):
    """A config dataclass from a dict, refusing unknown keys with one clear message."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise GANError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(known)}")
    return cls(**d)


def with_preset(cls, presets: dict, preset: str, **overrides):
    """``cls`` built from a named preset, then ``overrides`` (None values ignored)."""
    if preset not in presets:
        raise GANError(f"unknown preset {preset!r}; known: {sorted(presets)}")
    d = dict(presets[preset])
    d.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(cls, d)


def check_common(config) -> None:
    """Checks of the settings pix2pix and CycleGAN share."""
    if config.epochs < 1 or config.batch_size < 1:
        raise GANError(f"epochs and batch_size must be at least 1, got {config.epochs} and {config.batch_size}")
    if config.lr <= 0:
        raise GANError(f"lr must be positive, got {config.lr}")
    if config.adversarial not in ("lsgan", "bce"):
        raise GANError(f"adversarial must be 'lsgan' or 'bce', got {config.adversarial!r}")
    if not 0.0 <= config.decay_fraction <= 1.0:
        raise GANError(f"decay_fraction must be in [0, 1], got {config.decay_fraction}")
    if not 32 <= config.size <= 1024:
        raise GANError(f"size must be between 32 and 1024 px (128-256 are the documented sizes), got {config.size}")
    config.nets.check(config.size, GANError)


def resolve_device(device: str) -> torch.device:
    from training.train import resolve_device as resolve

    try:
        return resolve(device)
    except TrainingError as e:
        raise GANError(str(e)) from None


@contextlib.contextmanager
def run_context(seed: int, device: torch.device, deterministic: bool = True, threads: int | None = None):
    """Deterministic algorithms, a seeded torch RNG (global state restored after) and
    optionally a torch thread count, for the duration of a fit or a sampling call."""
    from training.train import deterministic_mode

    devices = [device.index or 0] if device.type == "cuda" else []
    prev_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(int(threads))
        with deterministic_mode(deterministic, device), torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            yield
    finally:
        torch.set_num_threads(prev_threads)


def linear_decay(epochs: int, decay_fraction: float):
    """pix2pix/CycleGAN schedule: constant learning rate, then linear decay to 0 over the
    last ``decay_fraction`` of the epochs (the papers: 100 + 100 epochs, i.e. 0.5)."""
    n_decay = int(round(epochs * decay_fraction))
    n_const = epochs - n_decay

    def factor(epoch: int) -> float:
        if epoch < n_const or n_decay == 0:
            return 1.0
        return max(0.0, 1.0 - (epoch - n_const + 1) / (n_decay + 1))

    return factor


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al. 2017): the discriminator
    sees, per image, with probability 1/2 an earlier fake (which the new one replaces in
    the pool) and otherwise the new one; while the pool is filling, always the new one.
    Draws come from the ``numpy.random.Generator`` given."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng, self.images = int(size), rng, []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif self.rng.random() < 0.5:
                k = int(self.rng.integers(self.size))
                out.append(self.images[k].clone())
                self.images[k] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {"images": [t.cpu() for t in self.images], "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict, device) -> None:
        self.images = [t.to(device) for t in state["images"]]
        self.rng.bit_generator.state = state["rng"]


def load_checkpoint(path, kind: str) -> dict:
    """The ``kind`` (pix2pix / cyclegan) checkpoint at ``path`` or in the run folder ``path``."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise GANError(f"checkpoint {path} does not exist (train first, or give the run folder)")
    return read_checkpoint(path, kind, error=GANError)


def write_json(path: Path, obj) -> None:
    from synthex.dataset import write_json_atomic

    write_json_atomic(Path(path), obj, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


class progress_bar:
    """``with progress_bar(enabled, total, "what") as step: ... step(**fields)``: a rich
    progress bar (elapsed, remaining) whose text shows the keyword fields of the last step."""

    def __init__(self, enabled: bool, total: int, description: str):
        self.enabled, self.total, self.description = enabled, int(total), description

    def __enter__(self):
        if not self.enabled:
            return lambda **fields: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[text]}"), TimeElapsedColumn(), TimeRemainingColumn())
        self.progress.__enter__()
        task = self.progress.add_task(self.description, total=self.total, text="")

        def step(**fields):
            text = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            self.progress.update(task, advance=1, text=text)

        return step

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.__exit__(*exc)
        return False


def fail_clearly(fn):
    """CLI decorator: a user-facing error (:class:`TrainingError`, incl. data-format errors)
    becomes one line on stderr and exit status 1, not a traceback."""
    import functools

    import click

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrainingError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def epoch_line(kind: str, row: dict, epochs: int) -> str:
    losses = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "lr", "seconds"))
    return f"{kind} epoch {row['epoch'] + 1}/{epochs}: {losses}, lr {row['lr']:.2e}, {row['seconds']:.0f} s"

"""pix2pix (Isola et al. 2017): a conditional GAN from a label map to an X-ray image,
sampled into a labelled training set.

Trained on the target domain's labelled TRAINING split; sampled on label maps of
that split (``label_augmentation="affine"``: each sample's label map and
landmarks moved together by one drawn affine record, stored in ``samples.jsonl``),
so every synthesized image carries exact labels (masks, landmarks, subjects) by
construction -- to the extent the generator draws the anatomy where the label
map puts it, which is what the L1 term trains it to do.

Model: generator = MONAI U-Net (instance norm, LeakyReLU, dropout as pix2pix's
noise source, kept on at sampling), input = one-hot label map (+ one Gaussian
heatmap per landmark, sigma 2 px, when the data has landmarks), output = image
through ``tanh``; discriminator = 70 x 70 PatchGAN on the concatenated (condition,
image). Loss ``G: adv(D(c, G(c))) + lambda_l1 |G(c) - y|_1`` (images in [-1, 1] as in
the paper; ``history.json`` logs the L1 in [0, 1] units, half of it); ``D: 0.5
(adv_real + adv_fake)``; defaults LSGAN, ``lambda_l1 = 100`` (the paper's value), Adam
lr 2e-4, betas (0.5, 0.999), constant then linear decay to 0 over the last half of
the epochs.

    from training.gan import pix2pix
    run = pix2pix.fit("data/target-train", pix2pix.preset("cpu"), "runs/p2p")
    pix2pix.sample("runs/p2p", n=1000, out="data/p2p-synth")   # label maps: the training data

    python -m training.gan.pix2pix fit --train DATA --out RUN --preset cpu [--epochs N]
    python -m training.gan.pix2pix sample --run RUN --n 1000 --out SET [--labels DATA]
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .common import (
    STREAM_AUGMENT,
    STREAM_NOISE,
    STREAM_ORDER,
    GANError,
    check_common,
    config_from_dict,
    epoch_line,
    linear_decay,
    load_checkpoint,
    progress_bar,
    resolve_device,
    run_context,
    save_checkpoint,
    stream,
    with_preset,
    write_json,
)
from .data import LABEL_WARPS, LabelledSet, apply_label_warp, load_labelled, sample_label_warp, write_folder_dataset
from .losses import AdversarialLoss, l1
from .networks import NetSpec, build_discriminator, build_generator, from_net, to_net

KIND = "pix2pix"


@dataclass
class Pix2PixConfig:
    size: int = 128
    epochs: int = 5
    batch_size: int = 4
    lr: float = 2e-4
    beta1: float = 0.5
    decay_fraction: float = 0.5
    adversarial: str = "lsgan"
    lambda_l1: float = 100.0
    landmark_channels: bool = True
    landmark_sigma: float = 2.0
    label_augmentation: str = "affine"
    sample_noise: bool = True
    nets: NetSpec = field(default_factory=lambda: NetSpec("unet", 32, 4, dropout=0.1, disc_features=32))
    seed: int = 0
    device: str = "auto"
    deterministic: bool = True

    def __post_init__(self):
        if isinstance(self.nets, dict):
            self.nets = config_from_dict(NetSpec, self.nets)
        check_common(self)
        if self.lambda_l1 < 0 or self.landmark_sigma <= 0:
            raise GANError("lambda_l1 must be >= 0 and landmark_sigma > 0")
        if self.label_augmentation not in LABEL_WARPS:
            raise GANError(f"label_augmentation must be one of {LABEL_WARPS}, got {self.label_augmentation!r}")


# cpu: ~10-20 min on 2 cores for ~800 images at 128 px; full: the paper's settings on a GPU
PRESETS = {
    "cpu": {"size": 128, "epochs": 5, "batch_size": 4,
            "nets": {"generator": "unet", "features": 32, "depth": 4, "dropout": 0.1, "disc_features": 32}},
    "full": {"size": 256, "epochs": 200, "batch_size": 1,
             "nets": {"generator": "unet", "features": 64, "depth": 7, "dropout": 0.5, "disc_features": 64}},
    "test": {"size": 32, "epochs": 1, "batch_size": 4,
             "nets": {"generator": "unet", "features": 8, "depth": 2, "disc_features": 8, "disc_layers": 2}},
}


def preset(name: str = "cpu", **overrides) -> Pix2PixConfig:
    return with_preset(Pix2PixConfig, PRESETS, name, **overrides)


def condition(labels: torch.Tensor, num_classes: int, landmarks: torch.Tensor | None, sigma: float) -> torch.Tensor:
    """Generator input: one-hot label map ``(B, C, H, W)`` plus, with landmarks ``(B, L, 2)``
    (NaN = unlabelled), one Gaussian heatmap per landmark (peak 1, zero where unlabelled)."""
    from training.losses import gaussian_heatmaps

    onehot = torch.nn.functional.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()
    if landmarks is None or landmarks.shape[1] == 0:
        return onehot
    visible = torch.isfinite(landmarks).all(dim=-1)
    h, w = labels.shape[-2:]
    maps = gaussian_heatmaps(torch.nan_to_num(landmarks, nan=0.0), visible, h, w, sigma)
    return torch.cat([onehot, maps], dim=1)


@dataclass
class Pix2Pix:
    """A trained generator with what it needs to be used (classes, landmarks, size)."""

    generator: torch.nn.Module
    config: Pix2PixConfig
    classes: list[str]
    landmark_names: list[str]
    meta: dict
    device: torch.device = torch.device("cpu")

    @property
    def uses_landmarks(self) -> bool:
        return bool(self.config.landmark_channels and self.landmark_names)

    def condition(self, labels, landmarks) -> torch.Tensor:
        lab = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=self.device)
        lm = torch.as_tensor(np.asarray(landmarks, dtype=np.float32), device=self.device) \
            if self.uses_landmarks else None
        return condition(lab, len(self.classes), lm, self.config.landmark_sigma)

    def generate(self, labels, landmarks=None, *, seed: int = 0, noise: bool | None = None,
                 batch_size: int = 16, threads: int | None = None) -> np.ndarray:
        """Images ``(N, S, S)`` in [0, 1] for label maps ``(N, S, S)`` (and landmarks ``(N, L, 2)``).
        ``noise``: dropout on (pix2pix's sampling noise); deterministic given ``seed``."""
        labels = np.asarray(labels)
        s = self.config.size
        if labels.ndim != 3 or labels.shape[1:] != (s, s):
            raise GANError(f"label maps must be (N, {s}, {s}) (the size this generator was trained at), "
                           f"got {labels.shape}; resize them first")
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise GANError(f"label values {labels.min()}..{labels.max()} outside the {len(self.classes)} classes")
        if self.uses_landmarks and (landmarks is None or np.asarray(landmarks).shape != (
                len(labels), len(self.landmark_names), 2)):
            raise GANError(f"this generator also takes landmarks: give ({len(labels)}, "
                               f"{len(self.landmark_names)}, 2) (u, v) pixels, NaN where unlabelled")
        noise = self.config.sample_noise if noise is None else noise
        out = []
        with run_context(seed, self.device, self.config.deterministic, threads), torch.no_grad():
            self.generator.train(noise)
            for i in range(0, len(labels), batch_size):
                lm = None if not self.uses_landmarks else np.asarray(landmarks)[i:i + batch_size]
                out.append(from_net(self.generator(self.condition(labels[i:i + batch_size], lm))).cpu())
            self.generator.eval()
        return torch.cat(out)[:, 0].numpy() if out else np.zeros((0, s, s), np.float32)

    @classmethod
    def load(cls, path, device: str = "cpu") -> Pix2Pix:
        ck = load_checkpoint(path, KIND)
        meta = ck["meta"]
        config = config_from_dict(Pix2PixConfig, meta["config"])
        gen = build_generator(config.nets, meta["in_channels"], 1, config.seed)
        gen.load_state_dict(ck["generator"])
        dev = resolve_device(device)
        return cls(gen.to(dev).eval(), config, meta["classes"], meta["landmarks"], meta, dev)


def fit(train, config: Pix2PixConfig, out_dir, *, indices=None, resume: bool = False, progress: bool = True,
        threads: int | None = None) -> Pix2Pix:
    """Train on ``train`` (a Source or a path ``open_source`` reads; ``indices``: the
    training split). Writes ``out_dir/config.json`` before training, ``checkpoint.pt``
    after every epoch (``resume=True`` continues from it exactly) and ``history.json``."""
    if not isinstance(config, Pix2PixConfig):
        raise GANError("config must be a Pix2PixConfig (pix2pix.preset('cpu') gives one)")
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    data = load_labelled(train, config.size, indices, need_labels=True, progress=progress)
    n_cond = len(data.classes) + (len(data.landmark_names) if config.landmark_channels else 0)
    meta = {"kind": KIND, "config": asdict(config), "classes": data.classes, "landmarks": data.landmark_names,
            "in_channels": n_cond, "train_data": data.source, "train_path": data.info["path"],
            "train_indices": None if indices is None else [int(i) for i in indices],
            "n_train": len(data), "subjects": sorted(set(data.subjects)), "pixel_size_mm": data.pixel_size_mm}
    out_dir.mkdir(parents=True, exist_ok=True)
    ck_path = out_dir / "checkpoint.pt"
    if ck_path.exists() and not resume:
        raise GANError(f"{ck_path} exists: pass resume=True (--resume) to continue, or choose another folder")
    write_json(out_dir / "config.json", meta)

    with run_context(config.seed, device, config.deterministic, threads):
        gen = build_generator(config.nets, n_cond, 1, config.seed).to(device)
        disc = build_discriminator(config.nets, n_cond + 1, config.seed + 1).to(device)
        adv = AdversarialLoss(config.adversarial)
        opt_g = torch.optim.Adam(gen.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
        opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
        factor = linear_decay(config.epochs, config.decay_fraction)
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, factor)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, factor)
        history, start = [], 0
        if resume and ck_path.exists():
            ck = load_checkpoint(ck_path, KIND)
            if ck["meta"]["config"] != meta["config"] or ck["meta"]["train_data"] != meta["train_data"]:
                raise GANError(f"cannot resume {ck_path}: it was written with other settings or data")
            gen.load_state_dict(ck["generator"])
            disc.load_state_dict(ck["discriminator"])
            for obj, key in ((opt_g, "opt_g"), (opt_d, "opt_d"), (sched_g, "sched_g"), (sched_d, "sched_d")):
                obj.load_state_dict(ck[key])
            torch.set_rng_state(ck["torch_rng"])
            history, start = ck["history"], ck["epoch"] + 1

        images = torch.from_numpy(data.images)
        labels = torch.from_numpy(data.labels)
        landmarks = torch.from_numpy(data.landmarks.astype(np.float32)) if config.landmark_channels else None
        steps = math.ceil(len(data) / config.batch_size)
        with progress_bar(progress, (config.epochs - start) * steps, "pix2pix") as step:
            for epoch in range(start, config.epochs):
                t0 = time.perf_counter()
                gen.train()
                disc.train()
                order = stream(config.seed, STREAM_ORDER, epoch).permutation(len(data))
                sums = {"d": 0.0, "g_adv": 0.0, "l1": 0.0}
                for b in range(steps):
                    idx = torch.from_numpy(order[b * config.batch_size:(b + 1) * config.batch_size])
                    cond = condition(labels[idx].to(device), len(data.classes),
                                     None if landmarks is None else landmarks[idx].to(device),
                                     config.landmark_sigma)
                    real = to_net(images[idx][:, None].to(device))
                    fake = gen(cond)
                    # discriminator on (condition, image) pairs
                    d_loss = adv.discriminator(disc(torch.cat([cond, real], 1)),
                                               disc(torch.cat([cond, fake.detach()], 1)))
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                    # generator: fool D, stay close to the real image (L1 in the networks' [-1, 1], as
                    # the paper, so lambda_l1 = 100 means what it meant there; logged in [0, 1] units)
                    disc.requires_grad_(False)
                    g_adv = adv.generator(disc(torch.cat([cond, fake], 1)))
                    g_l1 = l1(fake, real)
                    opt_g.zero_grad(set_to_none=True)
                    (g_adv + config.lambda_l1 * g_l1).backward()
                    opt_g.step()
                    disc.requires_grad_(True)
                    k = len(idx)
                    d_loss, g_adv, g_l1 = float(d_loss.detach()), float(g_adv.detach()), float(g_l1.detach()) / 2
                    sums["d"] += d_loss * k
                    sums["g_adv"] += g_adv * k
                    sums["l1"] += g_l1 * k
                    step(epoch=epoch + 1, D=d_loss, G=g_adv, L1=g_l1)
                sched_g.step()
                sched_d.step()
                history.append({"epoch": epoch, **{k: v / len(data) for k, v in sums.items()},
                                "lr": sched_g.get_last_lr()[0], "seconds": time.perf_counter() - t0})
                if progress:
                    print(epoch_line(KIND, history[-1], config.epochs), flush=True)
                save_checkpoint(ck_path, {
                    "kind": KIND, "meta": meta, "epoch": epoch, "history": history,
                    "generator": gen.state_dict(), "discriminator": disc.state_dict(),
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                    "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(),
                    "torch_rng": torch.get_rng_state()})
    write_json(out_dir / "history.json", history)
    return Pix2Pix(gen.eval(), config, data.classes, data.landmark_names, meta, device)


def synthesize(model: Pix2Pix, labels: LabelledSet, n: int, *, seed: int = 0,
               label_augmentation: str | None = None, batch_size: int = 16, progress: bool = False,
               threads: int | None = None) -> tuple[LabelledSet, list[dict]]:
    """``n`` labelled samples: sample ``i`` takes label map ``i mod N`` of ``labels``
    (the N label maps in order), moves it and its landmarks by a warp drawn from
    ``rng([seed, STREAM_AUGMENT, i])`` and generates its image. Returns the set and one
    JSON record per sample (source index and name, subject, warp record)."""
    if n < 1:
        raise GANError(f"n must be at least 1, got {n}")
    if labels.labels is None:
        raise GANError(f"{labels.source}: no label maps to sample from")
    if labels.size != model.config.size:
        raise GANError(f"label maps are {labels.size} px, the generator was trained at {model.config.size} px")
    if labels.classes != model.classes:
        raise GANError(f"label maps have classes {labels.classes}, the generator was trained on {model.classes}")
    if model.uses_landmarks and labels.landmark_names != model.landmark_names:
        raise GANError(f"label maps have landmarks {labels.landmark_names}, the generator was trained on "
                       f"{model.landmark_names}")
    kind = model.config.label_augmentation if label_augmentation is None else label_augmentation
    maps, points, records = [], [], []
    for i in range(n):
        k = i % len(labels)
        warp = sample_label_warp(kind, labels.size, stream(seed, STREAM_AUGMENT, i))
        lab, lm = apply_label_warp(labels.labels[k], labels.landmarks[k], warp)
        maps.append(lab)
        points.append(lm)
        records.append({"index": i, "source_index": k, "source_name": labels.names[k],
                        "subject": labels.subjects[k], "label_warp": warp})
    maps = np.stack(maps)
    points = np.stack(points) if labels.landmark_names else np.zeros((n, 0, 2))
    images = []
    with progress_bar(progress, math.ceil(n / batch_size), "pix2pix sampling") as step:
        for b in range(0, n, batch_size):
            images.append(model.generate(maps[b:b + batch_size], points[b:b + batch_size] if model.uses_landmarks
                                         else None, seed=int(stream(seed, STREAM_NOISE, b).integers(2**62)),
                                         batch_size=batch_size, threads=threads))
            step()
    out = LabelledSet(images=np.concatenate(images), labels=maps, landmarks=points,
                      subjects=[r["subject"] for r in records], names=[f"{i:06d}" for i in range(n)],
                      classes=labels.classes, landmark_names=labels.landmark_names,
                      pixel_size_mm=labels.pixel_size_mm, source=f"pix2pix samples on {labels.source}")
    return out, records


def sample(run, n: int, out, *, labels=None, indices=None, seed: int = 0, label_augmentation: str | None = None,
           device: str = "cpu", overwrite: bool = False, progress: bool = True, threads: int | None = None) -> Path:
    """Write ``n`` synthesized labelled images to ``out`` (the ``folder`` layout). ``run``:
    a run folder or checkpoint; ``labels``: where the label maps come from (default: the
    data and split the generator was trained on)."""
    model = Pix2Pix.load(run, device)
    if labels is None:
        labels, indices = model.meta["train_path"], model.meta["train_indices"] if indices is None else indices
    data = load_labelled(labels, model.config.size, indices, need_labels=True, progress=progress)
    synth, records = synthesize(model, data, n, seed=seed, label_augmentation=label_augmentation,
                                progress=progress, threads=threads)
    meta = {"synthesized_by": {"method": "pix2pix", "run": str(run), "seed": seed,
                               "label_source": data.source, "label_augmentation":
                               model.config.label_augmentation if label_augmentation is None else label_augmentation,
                               "trained_on": model.meta["train_data"]}}
    return write_folder_dataset(out, synth.images, labels=synth.labels, landmarks=synth.landmarks,
                                subjects=synth.subjects, names=synth.names, classes=synth.classes,
                                landmark_names=synth.landmark_names, pixel_size_mm=synth.pixel_size_mm,
                                meta=meta, samples=records, overwrite=overwrite)


# ---- CLI -----------------------------------------------------------------------------------------

def _cli():
    import click

    from .common import fail_clearly

    @click.group(help="pix2pix baseline: label map -> X-ray, sampled into a labelled training set.")
    def main():
        pass

    @main.command("fit", help="Train on a labelled dataset (the target domain's training split).")
    @click.option("--train", "train_path", required=True, type=click.Path(exists=True), help="Labelled dataset.")
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
    @click.option("--preset", "preset_name", default="cpu", show_default=True, type=click.Choice(sorted(PRESETS)))
    @click.option("--epochs", type=int, help="Overrides the preset.")
    @click.option("--size", type=int, help="Image size in px (overrides the preset).")
    @click.option("--batch-size", type=int, help="Overrides the preset.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--device", default="auto", show_default=True)
    @click.option("--threads", type=int, help="torch CPU threads (on a busy machine 1 can beat 2).")
    @click.option("--resume", is_flag=True, help="Continue from RUN/checkpoint.pt.")
    @click.option("--samples", "n_samples", type=int, default=0, help="Then write this many samples to RUN/samples.")
    @click.option("--quiet", is_flag=True)
    @fail_clearly
    def fit_cmd(train_path, out, preset_name, epochs, size, batch_size, seed, device, threads, resume, n_samples, quiet):
        config = preset(preset_name, epochs=epochs, size=size, batch_size=batch_size, seed=seed, device=device)
        fit(train_path, config, out, resume=resume, progress=not quiet, threads=threads)
        click.echo(f"pix2pix run written to {out} ({config.epochs} epochs)")
        if n_samples:
            path = sample(out, n_samples, Path(out) / "samples", seed=seed, device=device, progress=not quiet,
                          threads=threads)
            click.echo(f"{n_samples} samples written to {path}")

    @main.command("sample", help="Write N synthesized labelled images (folder layout).")
    @click.option("--run", required=True, type=click.Path(exists=True), help="Run folder or checkpoint.")
    @click.option("--n", "n", required=True, type=int)
    @click.option("--out", required=True, type=click.Path(file_okay=False))
    @click.option("--labels", type=click.Path(exists=True), help="Label maps from here (default: the training data).")
    @click.option("--augment", type=click.Choice(LABEL_WARPS), help="Label-map warps (default: the run's setting).")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--device", default="cpu", show_default=True)
    @click.option("--threads", type=int, help="torch CPU threads.")
    @click.option("--overwrite", is_flag=True)
    @click.option("--quiet", is_flag=True)
    @fail_clearly
    def sample_cmd(run, n, out, labels, augment, seed, device, threads, overwrite, quiet):
        path = sample(run, n, out, labels=labels, seed=seed, label_augmentation=augment, device=device,
                      overwrite=overwrite, progress=not quiet, threads=threads)
        click.echo(f"{n} samples written to {path}")

    return main


if __name__ == "__main__":
    _cli()(prog_name="python -m training.gan.pix2pix")

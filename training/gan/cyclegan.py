"""CycleGAN (Zhu et al. 2017): translate labelled renders (domain A) toward a target
domain B of unlabelled X-rays, keeping the renders' labels.

ASSUMPTION (and its risk): a translated render keeps its source's masks and
landmarks unchanged. Nothing in CycleGAN guarantees it: the cycle loss only
asks that the translation be invertible, and a generator may move, add or erase
anatomy (e.g. draw the target's lung shape or its text markers) while staying
invertible. :mod:`training.gan.metrics` measures how much structure survives
(edge correlation against a chance level, label-region contrast), and the report
of a run states it.

Model: two ResNet generators (G_AB: A -> B, G_BA: B -> A; reflection padding,
instance norm, ``tanh``), two 70 x 70 PatchGAN discriminators (D_A, D_B), LSGAN,
cycle consistency ``lambda_cycle = 10`` and identity ``lambda_identity = 0.5``
(x lambda_cycle), image pools of 50 past fakes, Adam lr 2e-4 betas (0.5, 0.999),
constant then linear decay over the last half of the epochs, batch 1 -- the
paper's settings. An epoch is one pass over the source images, or
``steps_per_epoch`` steps through shuffled passes (the CPU preset: 300, so its run
time does not grow with the source); target images are drawn in a shuffled cycle.

    from training.gan import cyclegan
    model = cyclegan.fit("data/renders", "../shared/data/xray/covid19_cxr_open", cyclegan.preset("cpu"), "runs/cg")
    cyclegan.translate_dataset("runs/cg", "data/renders", "data/renders-translated")

    python -m training.gan.cyclegan fit --source DATA --target DIR --out RUN [--preset cpu] [--epochs N]
    python -m training.gan.cyclegan translate --run RUN --source DATA --out SET
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .common import (
    STREAM_ORDER,
    STREAM_POOL,
    STREAM_TARGET,
    GANError,
    ImagePool,
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
from .data import FITS, load_images, load_labelled, write_folder_dataset
from .losses import AdversarialLoss, cycle_terms
from .networks import NetSpec, build_discriminator, build_generator, from_net, to_net

KIND = "cyclegan"


@dataclass
class CycleGANConfig:
    size: int = 128
    epochs: int = 4
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    decay_fraction: float = 0.5
    adversarial: str = "lsgan"
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    steps_per_epoch: int | None = None
    target_fit: str = "crop"
    nets: NetSpec = field(default_factory=lambda: NetSpec("resnet", 16, 2, 6, upsample="resize", disc_features=32))
    seed: int = 0
    device: str = "auto"
    deterministic: bool = True

    def __post_init__(self):
        if isinstance(self.nets, dict):
            self.nets = config_from_dict(NetSpec, self.nets)
        check_common(self)
        if self.lambda_cycle < 0 or self.lambda_identity < 0 or self.pool_size < 0:
            raise GANError("lambda_cycle, lambda_identity and pool_size must be >= 0")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise GANError(f"steps_per_epoch must be at least 1 (or None: one pass over the source), "
                           f"got {self.steps_per_epoch}")
        if self.target_fit not in FITS:
            raise GANError(f"target_fit must be one of {FITS}, got {self.target_fit!r}")


# cpu: 4 x 300 steps whatever the number of source images (about 0.8 s of one core per step at
# 128 px: ~16 min); full: the paper's settings on a GPU (an epoch = one pass over the source)
PRESETS = {
    "cpu": {"size": 128, "epochs": 4, "batch_size": 1, "steps_per_epoch": 300,
            "nets": {"generator": "resnet", "features": 16, "depth": 2, "n_blocks": 6, "upsample": "resize",
                     "disc_features": 32}},
    "full": {"size": 256, "epochs": 200, "batch_size": 1,
             "nets": {"generator": "resnet", "features": 64, "depth": 2, "n_blocks": 9, "disc_features": 64}},
    "test": {"size": 32, "epochs": 1, "batch_size": 2, "pool_size": 4,
             "nets": {"generator": "resnet", "features": 8, "depth": 2, "n_blocks": 2, "disc_features": 8,
                      "disc_layers": 2}},
}


def preset(name: str = "cpu", **overrides) -> CycleGANConfig:
    return with_preset(CycleGANConfig, PRESETS, name, **overrides)


@dataclass
class CycleGAN:
    """Trained generators: ``g_ab`` (source -> target), ``g_ba`` (target -> source)."""

    g_ab: torch.nn.Module
    g_ba: torch.nn.Module
    config: CycleGANConfig
    meta: dict
    device: torch.device = torch.device("cpu")

    def translate(self, images, *, batch_size: int = 16, direction: str = "ab",
                  threads: int | None = None) -> np.ndarray:
        """``(N, S, S)`` images in [0, 1] -> translated ``(N, S, S)`` in [0, 1] (``"ab"``: toward the target)."""
        images = np.asarray(images, dtype=np.float32)
        s = self.config.size
        if images.ndim != 3 or images.shape[1:] != (s, s):
            raise GANError(f"images must be (N, {s}, {s}) (the size this model was trained at), got {images.shape}")
        if images.size and (images.min() < 0 or images.max() > 1 or not np.all(np.isfinite(images))):
            raise GANError("images must be finite values in [0, 1]")
        gen = {"ab": self.g_ab, "ba": self.g_ba}.get(direction)
        if gen is None:
            raise GANError(f"direction must be 'ab' or 'ba', got {direction!r}")
        out = []
        with run_context(self.config.seed, self.device, self.config.deterministic, threads), torch.no_grad():
            gen.eval()
            for i in range(0, len(images), batch_size):
                x = to_net(torch.from_numpy(images[i:i + batch_size])[:, None].to(self.device))
                out.append(from_net(gen(x)).cpu())
        return torch.cat(out)[:, 0].numpy() if out else np.zeros((0, s, s), np.float32)

    @classmethod
    def load(cls, path, device: str = "cpu") -> CycleGAN:
        ck = load_checkpoint(path, KIND)
        config = config_from_dict(CycleGANConfig, ck["meta"]["config"])
        g_ab, g_ba = (build_generator(config.nets, 1, 1, config.seed + k) for k in (0, 1))
        g_ab.load_state_dict(ck["g_ab"])
        g_ba.load_state_dict(ck["g_ba"])
        dev = resolve_device(device)
        return cls(g_ab.to(dev).eval(), g_ba.to(dev).eval(), config, ck["meta"], dev)


def fit(source, target, config: CycleGANConfig, out_dir, *, source_indices=None, resume: bool = False,
        progress: bool = True, threads: int | None = None) -> CycleGAN:
    """Train on ``source`` images (a Source or a path ``open_source`` reads; labels not
    needed) and ``target`` images (a folder of X-rays or a dataset; labels ignored).
    Writes ``out_dir/config.json`` first, ``checkpoint.pt`` after every epoch
    (``resume=True`` continues exactly) and ``history.json``."""
    if not isinstance(config, CycleGANConfig):
        raise GANError("config must be a CycleGANConfig (cyclegan.preset('cpu') gives one)")
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    src = load_labelled(source, config.size, source_indices, need_labels=False, progress=progress)
    tgt, tgt_names = load_images(target, config.size, fit=config.target_fit, progress=progress)
    meta = {"kind": KIND, "config": asdict(config), "source_data": src.source, "source_path": src.info["path"],
            "source_indices": None if source_indices is None else [int(i) for i in source_indices],
            "n_source": len(src), "target": str(target), "n_target": len(tgt), "target_names": tgt_names}
    out_dir.mkdir(parents=True, exist_ok=True)
    ck_path = out_dir / "checkpoint.pt"
    if ck_path.exists() and not resume:
        raise GANError(f"{ck_path} exists: pass resume=True (--resume) to continue, or choose another folder")
    write_json(out_dir / "config.json", meta)

    with run_context(config.seed, device, config.deterministic, threads):
        g_ab, g_ba = (build_generator(config.nets, 1, 1, config.seed + k).to(device) for k in (0, 1))
        d_a, d_b = (build_discriminator(config.nets, 1, config.seed + k).to(device) for k in (2, 3))
        adv = AdversarialLoss(config.adversarial)
        opt_g = torch.optim.Adam(list(g_ab.parameters()) + list(g_ba.parameters()), lr=config.lr,
                                 betas=(config.beta1, 0.999))
        opt_d = torch.optim.Adam(list(d_a.parameters()) + list(d_b.parameters()), lr=config.lr,
                                 betas=(config.beta1, 0.999))
        factor = linear_decay(config.epochs, config.decay_fraction)
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, factor)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, factor)
        pool_a = ImagePool(config.pool_size, stream(config.seed, STREAM_POOL, 0))
        pool_b = ImagePool(config.pool_size, stream(config.seed, STREAM_POOL, 1))
        history, start = [], 0
        if resume and ck_path.exists():
            ck = load_checkpoint(ck_path, KIND)
            same = all(ck["meta"][k] == meta[k] for k in ("config", "source_data", "target", "n_target"))
            if not same:
                raise GANError(f"cannot resume {ck_path}: it was written with other settings or data")
            for obj, key in ((g_ab, "g_ab"), (g_ba, "g_ba"), (d_a, "d_a"), (d_b, "d_b"), (opt_g, "opt_g"),
                             (opt_d, "opt_d"), (sched_g, "sched_g"), (sched_d, "sched_d")):
                obj.load_state_dict(ck[key])
            pool_a.load_state_dict(ck["pool_a"], device)
            pool_b.load_state_dict(ck["pool_b"], device)
            torch.set_rng_state(ck["torch_rng"])
            history, start = ck["history"], ck["epoch"] + 1

        images_a = torch.from_numpy(src.images)
        images_b = torch.from_numpy(tgt)
        bs = config.batch_size
        steps = config.steps_per_epoch or math.ceil(len(src) / bs)
        w_idt = config.lambda_cycle * config.lambda_identity
        with progress_bar(progress, (config.epochs - start) * steps, "cyclegan") as step:
            for epoch in range(start, config.epochs):
                t0 = time.perf_counter()
                for net in (g_ab, g_ba, d_a, d_b):
                    net.train()
                order_a = cycled_order(stream(config.seed, STREAM_ORDER, epoch), steps * bs, len(src)) \
                    if config.steps_per_epoch else stream(config.seed, STREAM_ORDER, epoch).permutation(len(src))
                order_b = cycled_order(stream(config.seed, STREAM_TARGET, epoch), steps * bs, len(tgt))
                sums, seen = dict.fromkeys(("d_a", "d_b", "g_adv", "cycle", "identity"), 0.0), 0
                for b in range(steps):
                    ia = torch.from_numpy(order_a[b * bs:(b + 1) * bs])
                    ib = torch.from_numpy(order_b[b * bs:b * bs + len(ia)])
                    real_a = to_net(images_a[ia][:, None].to(device))
                    real_b = to_net(images_b[ib][:, None].to(device))
                    # generators: fool both discriminators, cycle back, leave in-domain images alone
                    d_a.requires_grad_(False)
                    d_b.requires_grad_(False)
                    t = cycle_terms(g_ab, g_ba, real_a, real_b)
                    g_adv = adv.generator(d_b(t["fake_b"])) + adv.generator(d_a(t["fake_a"]))
                    cycle = t["cycle_a"] + t["cycle_b"]
                    identity = t["identity_a"] + t["identity_b"]
                    g_loss = g_adv + config.lambda_cycle * cycle + (w_idt * identity if w_idt else 0.0)
                    opt_g.zero_grad(set_to_none=True)
                    g_loss.backward()
                    opt_g.step()
                    d_a.requires_grad_(True)
                    d_b.requires_grad_(True)
                    # discriminators on real images and (pooled) earlier fakes
                    loss_da = adv.discriminator(d_a(real_a), d_a(pool_a.query(t["fake_a"])))
                    loss_db = adv.discriminator(d_b(real_b), d_b(pool_b.query(t["fake_b"])))
                    opt_d.zero_grad(set_to_none=True)
                    (loss_da + loss_db).backward()
                    opt_d.step()
                    k = len(ia)
                    seen += k
                    for key, v in (("d_a", loss_da), ("d_b", loss_db), ("g_adv", g_adv), ("cycle", cycle),
                                   ("identity", identity)):
                        sums[key] += float(v.detach()) * k
                    step(epoch=epoch + 1, D=float((loss_da + loss_db).detach()), G=float(g_adv.detach()),
                         cyc=float(cycle.detach()))
                sched_g.step()
                sched_d.step()
                history.append({"epoch": epoch, **{k: v / seen for k, v in sums.items()},
                                "lr": sched_g.get_last_lr()[0], "seconds": time.perf_counter() - t0})
                if progress:
                    print(epoch_line(KIND, history[-1], config.epochs), flush=True)
                save_checkpoint(ck_path, {
                    "kind": KIND, "meta": meta, "epoch": epoch, "history": history,
                    "g_ab": g_ab.state_dict(), "g_ba": g_ba.state_dict(), "d_a": d_a.state_dict(),
                    "d_b": d_b.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                    "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(),
                    "pool_a": pool_a.state_dict(), "pool_b": pool_b.state_dict(),
                    "torch_rng": torch.get_rng_state()})
    write_json(out_dir / "history.json", history)
    return CycleGAN(g_ab.eval(), g_ba.eval(), config, meta, device)


def cycled_order(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``n`` indices into ``size`` items: shuffled passes over all of them, one after another."""
    return np.concatenate([rng.permutation(size) for _ in range(math.ceil(n / size))])[:n]


def translate_dataset(run, source, out, *, indices=None, device: str = "cpu", overwrite: bool = False,
                      progress: bool = True, threads: int | None = None) -> Path:
    """Translate ``source`` (a labelled dataset) with a trained model and write the result
    in the ``folder`` layout: translated images, the source's label maps, landmarks and
    subjects unchanged (the stated assumption), names ``000000`` ... with the source
    names in ``samples.jsonl``."""
    model = CycleGAN.load(run, device)
    data = load_labelled(source, model.config.size, indices, need_labels=False, progress=progress)
    translated = model.translate(data.images, threads=threads)
    names = [f"{i:06d}" for i in range(len(data))]
    records = [{"index": i, "source_name": data.names[i], "subject": data.subjects[i]} for i in range(len(data))]
    meta = {"synthesized_by": {"method": "cyclegan", "run": str(run), "source": data.source,
                               "target": model.meta["target"],
                               "labels": "copied from the source renders (assumed unchanged by the translation)"}}
    return write_folder_dataset(out, translated, labels=data.labels, landmarks=data.landmarks if
                                data.landmark_names else None, subjects=data.subjects, names=names,
                                classes=data.classes, landmark_names=data.landmark_names,
                                pixel_size_mm=data.pixel_size_mm, meta=meta, samples=records, overwrite=overwrite)


# ---- CLI -----------------------------------------------------------------------------------------

def _cli():
    import click

    from .common import fail_clearly

    @click.group(help="CycleGAN baseline: translate labelled renders toward unlabelled target X-rays.")
    def main():
        pass

    @main.command("fit", help="Train source (renders) <-> target (X-rays); then translate the source into RUN/translated.")
    @click.option("--source", required=True, type=click.Path(exists=True), help="Labelled source dataset (renders).")
    @click.option("--target", required=True, type=click.Path(exists=True), help="Folder of target X-rays, or a dataset.")
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
    @click.option("--preset", "preset_name", default="cpu", show_default=True, type=click.Choice(sorted(PRESETS)))
    @click.option("--epochs", type=int, help="Overrides the preset.")
    @click.option("--size", type=int, help="Image size in px (overrides the preset).")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--device", default="auto", show_default=True)
    @click.option("--threads", type=int, help="torch CPU threads (on a busy machine 1 can beat 2).")
    @click.option("--resume", is_flag=True, help="Continue from RUN/checkpoint.pt.")
    @click.option("--no-translate", is_flag=True, help="Do not write RUN/translated.")
    @click.option("--quiet", is_flag=True)
    @fail_clearly
    def fit_cmd(source, target, out, preset_name, epochs, size, seed, device, threads, resume, no_translate, quiet):
        config = preset(preset_name, epochs=epochs, size=size, seed=seed, device=device)
        fit(source, target, config, out, resume=resume, progress=not quiet, threads=threads)
        click.echo(f"CycleGAN run written to {out} ({config.epochs} epochs)")
        if not no_translate:
            path = translate_dataset(out, source, Path(out) / "translated", device=device, overwrite=True,
                                     progress=not quiet, threads=threads)
            click.echo(f"translated source written to {path}")

    @main.command("translate", help="Translate a labelled dataset with a trained run (folder layout out).")
    @click.option("--run", required=True, type=click.Path(exists=True), help="Run folder or checkpoint.")
    @click.option("--source", required=True, type=click.Path(exists=True))
    @click.option("--out", required=True, type=click.Path(file_okay=False))
    @click.option("--device", default="cpu", show_default=True)
    @click.option("--threads", type=int, help="torch CPU threads.")
    @click.option("--overwrite", is_flag=True)
    @click.option("--quiet", is_flag=True)
    @fail_clearly
    def translate_cmd(run, source, out, device, threads, overwrite, quiet):
        path = translate_dataset(run, source, out, device=device, overwrite=overwrite, progress=not quiet,
                                 threads=threads)
        click.echo(f"translated set written to {path}")

    return main


if __name__ == "__main__":
    _cli()(prog_name="python -m training.gan.cyclegan")

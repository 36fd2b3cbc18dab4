"""``synthex train-downstream``: train and test a SyntheX downstream task model."""

from __future__ import annotations

from pathlib import Path

import click

DATA_FORMATS = ["auto", "synthex", "coco", "deepfluoro", "folder", "synthex-index"]


@click.command("train-downstream")
@click.option("--task", required=True, help="hip, tool or covid.")
@click.option("--train", "train_paths", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="Training dataset (repeat to combine several).")
@click.option("--test", "test_paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Test dataset(s); default: 15% of the training subjects, held out.")
@click.option("--val", "val_paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Validation dataset(s); default: a subject-level split of the training data.")
@click.option("--format", "fmt", type=click.Choice(DATA_FORMATS), default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("train-output"),
              show_default=True)
@click.option("--image-size", type=int, default=128, show_default=True, help="Model input, px per side.")
@click.option("--model-size", type=click.Choice(["tiny", "small", "base"]), default="small", show_default=True)
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--randomization", type=click.Choice(["none", "mild", "strong"]), default="strong",
              show_default=True, help="On-the-fly image randomization of training images (never of validation "
                                      "or test images).")
@click.option("--val-fraction", type=float, default=0.2, show_default=True)
@click.option("--patience", type=int, default=5, show_default=True, help="Early stopping patience (epochs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision (CUDA only).")
@click.option("--deterministic/--no-deterministic", default=True, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--pixel-size", type=float, default=None,
              help="mm per stored-image pixel; replaces what the data says (default: the data's own value; "
                   "where the data has none, no mm metrics).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
def train_downstream(task, train_paths, test_paths, val_paths, fmt, out, image_size, model_size, epochs, batch_size,
                     lr, randomization, val_fraction, patience, seed, device, amp, deterministic, workers,
                     pixel_size, resume):
    """Train a segmentation + landmark model for TASK on synthetic or real data and
    write OUT/{best,last}.pt, metrics.json, report.md, model_card.md."""
    from training.run import train_downstream as run
    from training.tasks import TrainingError
    from training.train import TrainConfig

    try:
        config = TrainConfig(task=task, image_size=image_size, model_size=model_size, epochs=epochs,
                             batch_size=batch_size, lr=lr, randomization=randomization, val_fraction=val_fraction,
                             patience=patience, seed=seed, device=device, amp=amp, deterministic=deterministic,
                             num_workers=workers)
        res = run(config, train_paths, out, test_paths=test_paths, val_paths=val_paths, format=fmt,
                  pixel_size_mm=pixel_size, resume=resume)
    except (TrainingError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    _echo_summary(res["summary"], out)


def _echo_summary(summary: dict, out: Path):
    from training.report import summary_table

    keys = [k for k in summary if k in ("dice_mean", "landmark_error_mm_mean", "landmark_error_px_mean",
                                         "detection_ap50", "detection_ap", "lesion_dice", "f1", "sensitivity",
                                         "specificity", "presence_auc", "lesion_fraction_abs_error")]
    click.echo(summary_table({k: summary[k] for k in keys}))
    click.echo(f"report: {out / 'report.md'}")

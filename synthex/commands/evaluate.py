"""``synthex evaluate``: test a trained checkpoint on an external dataset."""

from __future__ import annotations

from pathlib import Path

import click

from synthex.commands.train import DATA_FORMATS


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dataset", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(DATA_FORMATS),
              default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("eval-output"),
              show_default=True)
@click.option("--pixel-size", type=float, default=None, help="Detector pixel pitch (mm) if the data lacks it.")
@click.option("--device", default="auto", show_default=True)
def evaluate(checkpoint, dataset, fmt, out, pixel_size, device):
    """Evaluate CHECKPOINT (from train-downstream) on DATASET; write metrics.json and report.md to OUT."""
    from training.run import evaluate_checkpoint
    from training.tasks import TrainingError

    from synthex.commands.train import _echo_summary

    try:
        res = evaluate_checkpoint(checkpoint, dataset, out, format=fmt, pixel_size_mm=pixel_size, device=device)
    except (TrainingError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    _echo_summary(res["summary"], out)

"""``synthex evaluate``: test a trained checkpoint on an external labelled dataset."""

from __future__ import annotations

from pathlib import Path

import click

from synthex.commands.train import DATA_FORMATS


@click.command()
@click.argument("checkpoint", metavar="RUN", type=click.Path(exists=True, path_type=Path))
@click.argument("dataset", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(DATA_FORMATS),
              default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("eval-output"),
              show_default=True)
@click.option("--pixel-size", type=float, default=None,
              help="mm per stored-image pixel; replaces what the data says (default: the data's own value; "
                   "where the data has none, no mm metrics).")
@click.option("--device", default="auto", show_default=True)
def evaluate(checkpoint, dataset, fmt, out, pixel_size, device):
    """Evaluate RUN (a train-downstream output folder, or its best.pt) on the labelled DATASET; write
    metrics.json, report.md and model_card.md to OUT. For unlabelled X-rays use `synthex predict`."""
    from training.run import evaluate_checkpoint
    from training.tasks import TrainingError

    from synthex.commands.train import _echo_summary

    try:
        res = evaluate_checkpoint(checkpoint, dataset, out, format=fmt, pixel_size_mm=pixel_size, device=device)
    except (TrainingError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    _echo_summary(res["summary"], out)

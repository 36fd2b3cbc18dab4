"""``synthex predict``: run a trained model on unlabelled X-rays."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New or empty folder for predictions.csv/json, masks/, overlays/, contact_sheet.png.")
@click.option("--task", default=None, help="Refuse a checkpoint of any other task (hip, tool, covid).")
@click.option("--pixel-size", type=float, default=None,
              help="mm per pixel of the input images; replaces DICOM ImagerPixelSpacing/PixelSpacing "
                   "(default: the file's own; without one, no mm outputs).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--skip-unreadable", is_flag=True, help="List unreadable files in predictions.json instead of stopping.")
@click.option("--no-figures", is_flag=True, help="No overlays or contact sheet (masks and tables only).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict(run, images, out, task, pixel_size, device, batch_size, skip_unreadable, no_figures, quiet):
    """Run the model of RUN (a train-downstream output folder, or its best.pt) on IMAGES (PNG, JPEG, TIFF,
    DICOM files, or folders searched recursively). Images are preprocessed as in training: grey in [0, 1]
    (DICOM: rescale, VOI window, MONOCHROME1 inverted), resized to the model input, z-scored."""
    from training.predict import describe, predict_files
    from training.tasks import TrainingError

    try:
        doc = predict_files(run, images, out, task=task, pixel_size_mm=pixel_size, device=device,
                            batch_size=batch_size, skip_unreadable=skip_unreadable, figures=not no_figures,
                            progress=not quiet)
    except (TrainingError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(describe(doc))
    click.echo(f"wrote {out / 'predictions.csv'}, {out / 'predictions.json'}"
               + ("" if no_figures else f", overlays and {out / 'contact_sheet.png'}"))

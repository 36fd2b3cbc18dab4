"""``synthex export``: hand a dataset to other labs' tools."""

from __future__ import annotations

from pathlib import Path

import click

from synthex.exports import FORMATS


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="Export format.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Export folder (new).")
@click.option(
    "--modality",
    type=click.Choice(["XA", "DX"]),
    default="XA",
    show_default=True,
    help="DICOM object type (dicom format).",
)
@click.option(
    "--seg/--no-seg",
    "segmentations",
    default=True,
    show_default=True,
    help="DICOM format: also write the masks as DICOM SEG objects (needs highdicom, the 'export' extra).",
)
@click.option("--dataset-id", type=int, default=501, show_default=True, help="nnU-Net dataset id (nnunet format).")
def export(dataset, fmt, out, modality, segmentations, dataset_id):
    """Export DATASET as COCO (16-bit PNG + RLE masks + keypoints), an nnU-Net v2
    raw dataset, the DeepFluoro/SyntheX HDF5 layout, DICOM (XA or DX, one study per
    subject, masks as DICOM SEG), or only the dataset card. Every export includes
    DATASET_CARD.md. Shard checksums are verified before anything is written."""
    from synthex.dataset import DatasetError
    from synthex.exports import ExportError
    from synthex.exports import export as run_export

    options = {
        "dicom": {"modality": modality, "segmentations": segmentations},
        "nnunet": {"dataset_id": dataset_id},
    }.get(fmt, {})
    try:
        path = run_export(dataset, out, fmt, **options)
    except (DatasetError, ExportError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"exported {dataset} as {fmt}: {path}")

"""``synthex validate``: check a dataset's checksums and label consistency."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--fast", is_flag=True, help="Checksums, shapes and indices only (skip per-sample label checks).")
def validate(dataset, fast):
    """Validate DATASET: manifest, shard sha256, shapes, sample indices, labels vs
    masks, boxes vs masks, landmark visibility. Exits 1 on any error."""
    from synthex.dataset import validate as run_validate

    report = run_validate(dataset, check_labels=not fast)
    if report.ok:
        click.echo(f"OK: {dataset} ({report.samples_checked} samples checked)")
        return
    for e in report.errors[:50]:
        click.echo(f"error: {e}", err=True)
    if len(report.errors) > 50:
        click.echo(f"... and {len(report.errors) - 50} more errors", err=True)
    raise SystemExit(1)

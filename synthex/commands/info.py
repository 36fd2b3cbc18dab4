"""``synthex info``: summarize a dataset."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(dataset, as_json):
    """Summarize DATASET: counts, classes, landmarks, image size, settings."""
    import json

    from synthex.dataset import DatasetError
    from synthex.dataset import info as dataset_info

    try:
        summary = dataset_info(dataset)
    except DatasetError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"synthex dataset {summary['path']}", show_header=False)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.3f}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        table.add_row(key, str(value))
    Console().print(table)

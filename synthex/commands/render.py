"""``synthex render``: a labelled, domain-randomized dataset from a YAML config."""

from __future__ import annotations

from pathlib import Path

import click

from synthex.tasks import TASKS  # declarations only: cheap to import


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder [default: output: of the config, else synthex-dataset].",
)
@click.option("--task", type=click.Choice([*TASKS, "custom"]), help="Overrides task:.")
@click.option("--n", type=int, help="Number of images (overrides n:).")
@click.option("--size", type=int, help="Detector pixels per side (overrides image.size:).")
@click.option("--seed", type=int, help="Run seed (overrides seed:).")
@click.option("--workers", type=int, help="Local worker processes (overrides dataset.workers:).")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Render shards as Ray tasks: local Ray with 2 CPUs, or join ADDRESS.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (same config).")
@click.option("--print-config", is_flag=True, help="Print the resolved config as YAML and exit.")
@click.option("--print-schema", is_flag=True, help="Print the config's JSON schema and exit.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N or auto (overrides projector.device:).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def render(config, out, task, n, size, seed, workers, ray_address, resume, print_config, print_schema, device, quiet):
    """Render a dataset from CONFIG (YAML; without it: the built-in default,
    a small hip dataset).

    The resolved config is saved as plan.json before the first sample; the
    dataset is complete when manifest.json exists. See docs/config.md and docs/datasets.md.
    """
    import json

    from synthex.config import ConfigError, RenderConfig, load_config, to_yaml

    if print_schema:
        click.echo(json.dumps(RenderConfig.model_json_schema(), indent=2))
        return
    from synthex.dataset import DatasetError
    from synthex.pipeline import PipelineError
    from synthex.ray_runner import RayError
    from synthex.runner import RenderInterrupted, render_dataset
    from synthex.subjects import SubjectError

    overrides = {
        "task": task,
        "n": n,
        "image.size": size,
        "seed": seed,
        "output": str(out) if out else None,
        "dataset.workers": workers,
        "projector.device": device,
    }
    try:
        cfg = load_config(config, overrides)
        if print_config:
            click.echo(to_yaml(cfg), nl=False)
            return
        target = Path(cfg.output or "synthex-dataset")
        manifest = render_dataset(cfg, target, resume=resume, ray_address=ray_address, progress=not quiet)
    except (ConfigError, DatasetError, PipelineError, SubjectError, RayError) as e:
        raise click.ClickException(" ".join([str(e), *getattr(e, "__notes__", ())])) from None
    except RenderInterrupted as e:
        click.echo(str(e), err=True)
        raise SystemExit(e.exit_code) from None
    except ValueError as e:  # a reader or geometry error from a subject (VolumeError, GeometryError, ...)
        raise click.ClickException(" ".join([f"{type(e).__name__}: {e}", *getattr(e, "__notes__", ())])) from None
    click.echo(
        f"wrote {manifest['counts']['images']} images in {len(manifest['shards'])} shards to {target} "
        f"(task {manifest['task']}, seed {manifest['seed']}); preview: {target / 'preview.png'}"
    )

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
@click.option("--ct", "ct", type=click.Path(exists=True, path_type=Path),
              help="A CT, a folder of CTs or a DICOM series folder as the subjects (overrides subjects:).")
@click.option("--labels", type=click.Path(exists=True, path_type=Path),
              help="With --ct: the label map, or a folder of label maps paired with the CTs by name.")
@click.option("--label-names", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --ct: the class map naming the labels (TotalSegmentator JSON, nnU-Net dataset.json, CSV).")
@click.option("--deform", type=int, default=None, metavar="N",
              help="With --ct: N deformed instances of each CT besides the CT itself (a population from few CTs).")
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
def render(config, out, task, n, size, seed, ct, labels, label_names, deform, workers, ray_address, resume,
           print_config, print_schema, device, quiet):
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
    if ct is not None:
        entry = {"source": "ct", "path": str(ct.resolve())}
        entry.update({k: str(v.resolve()) for k, v in (("labels", labels), ("label_names", label_names)) if v})
        if deform:
            entry["deform"] = {"count": deform}
        overrides["subjects"] = [entry]
    elif labels or label_names or deform is not None:
        raise click.UsageError("--labels, --label-names and --deform go with --ct")
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

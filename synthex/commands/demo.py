"""``synthex demo``: render a few views of the built-in phantom to PNG."""

from __future__ import annotations

from pathlib import Path

import click

VIEWS = {"ap": (0.0, 0.0), "lao30": (30.0, 0.0), "rao30": (-30.0, 0.0), "cranial20": (0.0, 20.0), "lateral": (90.0, 0.0)}


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True,
              help="Folder for the PNGs.")
@click.option("--size", type=click.IntRange(16, 2048), default=384, show_default=True, help="Detector pixels per side.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
def demo(out: Path, size: int, device: str):
    """Render AP, oblique, cranial and lateral views of the built-in torso phantom.

    Writes one PNG per view and preview.png (all views side by side) to --out.
    """
    from rich.progress import track

    from phantoms.simple import torso_phantom
    from projectors.geometry import CArm
    from projectors.projector import Projector
    from synthex.io_images import save_png, contact_sheet
    from synthex.rendering import render

    out.mkdir(parents=True, exist_ok=True)
    vol = torso_phantom()
    # a radiography room geometry (180 cm source-detector, 43 cm detector) so the whole torso fits
    carm = CArm(sdd=1800.0, sid=1500.0, size=(size, size), pitch=430.0 / size)
    projector = Projector(vol, device=device)
    images = []
    for i, (name, (alpha, beta)) in enumerate(track(list(VIEWS.items()), description="rendering")):
        res = render(vol, carm.camera(alpha, beta), projector=projector, seed=i)  # 80 kVp, scatter, noise
        save_png(out / f"{name}.png", res.image)
        images.append((name, res.image))
    save_png(out / "preview.png", contact_sheet([im for _, im in images]))
    click.echo(f"wrote {len(images)} views and preview.png to {out} (device: {projector.device})")

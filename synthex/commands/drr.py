"""``synthex drr``: render DRRs of a CT file at given C-arm angles."""

from __future__ import annotations

from pathlib import Path

import click


def _angles(value: str) -> list[tuple[float, float]]:
    out = []
    for part in value.split(";"):
        try:
            a, b = (float(x) for x in part.split(","))
        except ValueError:
            raise click.BadParameter(f"expected 'alpha,beta;alpha,beta...' in degrees, got {part!r}") from None
        out.append((a, b))
    return out


@click.command()
@click.argument("ct", type=click.Path(exists=True, path_type=Path))
@click.option("--labels", type=click.Path(exists=True, path_type=Path), help="Label map on the CT's grid.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("drr-output"), show_default=True)
@click.option("--angles", default="0,0", show_default=True,
              help="C-arm views as 'alpha,beta;alpha,beta' (LAO+/RAO-, cranial+/caudal-), degrees.")
@click.option("--size", type=click.IntRange(16, 4096), default=512, show_default=True, help="Detector pixels per side.")
@click.option("--mode", type=click.Choice(["exact", "trilinear"]), default="exact", show_default=True)
@click.option("--kvp", type=click.FloatRange(50, 150), default=80.0, show_default=True, help="Tube voltage.")
@click.option("--scatter/--no-scatter", default=True, show_default=True, help="Fast scatter model.")
@click.option("--noise/--no-noise", default=True, show_default=True, help="Quantum and detector noise.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
def drr(ct: Path, labels: Path | None, out: Path, angles: str, size: int, mode: str, kvp: float, scatter: bool,
        noise: bool, seed: int, device: str):
    """Render CT (NIfTI, NRRD, MHA or a DICOM folder) to PNGs with full physics, isocentre at the CT's centre."""
    from rich.progress import track

    from projectors.geometry import CArm
    from projectors.projector import Projector
    from projectors.volume import Volume, VolumeError
    from synthex.io_images import save_png
    from synthex.render import render

    views = _angles(angles)
    try:
        vol = Volume.from_file(ct, labels=labels)
    except VolumeError as e:
        raise click.ClickException(str(e)) from None
    carm = CArm(size=(size, size), pitch=0.194 * 1536 / size, isocenter=tuple(vol.center_world))
    projector = Projector(vol, device=device, mode=mode)
    out.mkdir(parents=True, exist_ok=True)
    for i, (alpha, beta) in enumerate(track(views, description="rendering")):
        res = render(vol, carm.camera(alpha, beta), kvp=kvp, scatter=scatter, noise=noise, seed=seed + i,
                     projector=projector)
        save_png(out / f"drr_a{alpha:+.0f}_b{beta:+.0f}.png", res.image)
    click.echo(f"wrote {len(views)} DRR(s) to {out}")

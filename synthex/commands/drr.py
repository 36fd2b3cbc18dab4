"""``synthex drr``: radiographs of one CT, in a clinical imaging geometry, with full physics.

Per view (one uniquely named file set each; names carry the exact angles):

* ``<view>.png``: the display image, 16-bit greyscale;
* ``<view>.npz``: float32 arrays: ``areal_density/<material>`` (g/cm^2, the
  projector's line integrals per material; ``lead`` is the collimator),
  ``line_integral`` (-log of the transmission, with scatter and noise),
  ``transmission``, ``primary`` (noise-free primary transmission),
  ``covered`` (pixels whose rays the CT fully contains) and ``field`` (the
  collimator's exposed field), ``P`` (3x4), ``K``, ``world_from_camera``; with
  ``--labels``: ``mask/<structure>`` (bool) and ``labels`` (uint16, the label
  map's values, longest path wins), also written as ``<view>_labels.png``;
* ``<view>.json``: angles, geometry, physics parameters and file names.

``drr.json`` records the CT preparation (what was found and changed) and every view.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

# choices spelled out so that `synthex drr --help` does not import the physics (tests/test_drr.py checks
# them against projectors.ct_prep.METALS, projectors.physics.DETECTOR_PRESETS and SCATTER_MODELS)
CT_PREP_METALS = ("titanium_alloy", "cocr", "stainless_steel", "titanium", "none")
DETECTORS = ("flat_panel_csi", "flat_panel_gos", "cr_plate")
SCATTER_MODELS = ("fast", "monte_carlo")  # and "none": --no-scatter


def parse_angles(value: str) -> list[tuple[float, float]]:
    """``"alpha,beta;alpha,beta"`` (degrees) -> finite, distinct pairs; a clear error otherwise."""
    out: list[tuple[float, float]] = []
    parts = [p.strip() for p in str(value).split(";")]
    if not any(parts):
        raise click.BadParameter("no views given: expected 'alpha,beta;alpha,beta' in degrees")
    for part in parts:
        if not part:
            continue
        try:
            a, b = (float(x) for x in part.split(","))
        except ValueError:
            raise click.BadParameter(f"expected 'alpha,beta;alpha,beta...' in degrees, got {part!r}") from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise click.BadParameter(f"angles must be finite numbers of degrees, got {part!r}")
        pair = (a + 0.0, b + 0.0)  # -0.0 -> 0.0: one view, one name
        if pair in out:
            raise click.BadParameter(f"view alpha={_num(a)}, beta={_num(b)} is listed twice")
        out.append(pair)
    return out


def _num(x: float) -> str:
    """The shortest text that reads back as exactly ``x`` (Python's repr), without a trailing '.0'."""
    s = repr(float(x) + 0.0)
    return s[:-2] if s.endswith(".0") else s


def view_name(alpha: float, beta: float) -> str:
    """A file stem that differs for every pair of different angles (exact, sign always shown)."""
    def signed(x):
        s = _num(x)
        return s if s.startswith("-") else "+" + s

    return f"view_a{signed(alpha)}_b{signed(beta)}"


def _size(value: str | None):
    if value is None:
        return None
    v = value.lower().replace(" ", "")
    try:
        if "x" in v:
            w, h = (int(t) for t in v.split("x"))
            size = (w, h)
        else:
            size = int(v)
    except ValueError:
        raise click.BadParameter(f"expected N (pixels on the long side) or WxH, got {value!r}") from None
    if any(s < 16 or s > 4096 for s in (size if isinstance(size, tuple) else (size,))):
        raise click.BadParameter(f"detector pixel counts must lie in 16..4096, got {value!r}")
    return size


def _floats(value: str | None, n: tuple[int, ...], what: str):
    if value is None:
        return None
    try:
        xs = [float(t) for t in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{what}: expected {' or '.join(map(str, n))} comma-separated numbers, got {value!r}") from None
    if len(xs) not in n or not all(math.isfinite(x) for x in xs):
        raise click.BadParameter(f"{what}: expected {' or '.join(map(str, n))} finite numbers, got {value!r}")
    return xs


@click.command()
@click.argument("ct", type=click.Path(exists=True, path_type=Path))
@click.option("--labels", type=click.Path(exists=True, path_type=Path), help="Label map on the CT's grid (masks per view; heart and vessel labels let contrast be removed).")
@click.option("--label-names", type=click.Path(exists=True, path_type=Path), help="Class names of the label map (JSON, CSV or TSV; e.g. TotalSegmentator's classmap).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("drr-output"), show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace files of the same views in --out (otherwise an error).")
@click.option("--preset", type=click.Choice(["mobile_carm", "chest_pa", "table_ap", "lateral"]), default="mobile_carm",
              show_default=True, help="Imaging geometry (distances, detector, view, kVp and grid).")
@click.option("--view", type=click.Choice(["ap", "pa", "lateral"]), help="Override the preset's view.")
@click.option("--sdd", type=float, help="Source-detector distance, mm.")
@click.option("--sid", type=float, help="Source-isocentre distance, mm (isocentric; turns off the skin gap).")
@click.option("--skin-gap", type=float, help="Skin-detector distance, mm (the sid is fitted per view).")
@click.option("--detector-mm", help="Detector size, mm: W or W,H.")
@click.option("--size", help="Pixels on the detector's long side (square pixels), or WxH.  [default: 512]")
@click.option("--center", help="Isocentre (beam centre) x,y,z in world mm (RAS).  [default: the centre of the "
              "labelled structures the preset aims at (lungs for chest_pa and lateral, the pelvic bones for "
              "table_ap), else of the prepared CT]")
@click.option("--angles", default="0,0", show_default=True,
              help="Views as 'alpha,beta;alpha,beta' in degrees from the preset's view (alpha about the long "
                   "axis, beta cranial+/caudal-).")
@click.option("--kvp", type=click.FloatRange(40, 150), help="Tube voltage.  [default: the preset's]")
@click.option("--mas", type=click.FloatRange(min=0, min_open=True), help="Tube current-time product.")
@click.option("--dose", "air_kerma", type=click.FloatRange(min=0, min_open=True), default=2.5, show_default=True,
              help="Air kerma at the detector, uGy (ignored with --mas): behind the anatomy with --aec, of the "
                   "open beam (no patient, no grid) with --no-aec.")
@click.option("--aec/--no-aec", default=True, show_default=True,
              help="Automatic exposure control: --dose is the detector dose behind the anatomy, as an AEC chamber "
                   "ends the exposure (radiography's practice; a fixed open-beam dose leaves a thick pelvis "
                   "with a few quanta per pixel).")
@click.option("--detector", type=click.Choice(DETECTORS), default="flat_panel_csi", show_default=True,
              help="Detector (projectors.physics.DETECTOR_PRESETS), at this image's pixel pitch.")
@click.option("--grid/--no-grid", default=None, help="Anti-scatter grid.  [default: the preset's]")
@click.option("--scatter/--no-scatter", default=True, show_default=True, help="Scatter (the model: --scatter-model).")
@click.option("--scatter-model", type=click.Choice(SCATTER_MODELS), default="fast", show_default=True,
              help="fast: kernels calibrated against the Monte Carlo (~0.1 s a view); monte_carlo: photons "
                   "transported through the prepared CT (~2 s per 10^6 photons on 2 CPU cores).")
@click.option("--scatter-photons", type=click.IntRange(1000, 10**11), default=2_000_000, show_default=True,
              help="Monte Carlo photons per view (--scatter-model monte_carlo).")
@click.option("--noise/--no-noise", default=True, show_default=True, help="Quantum and detector noise.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seed of the noise and the Monte Carlo photons (view i: seed + i).")
@click.option("--mode", type=click.Choice(["auto", "exact", "trilinear"]), default="auto", show_default=True,
              help="Projector: exact (voxels as blocks) or trilinear (smooth); auto = exact unless the prepared "
                   "CT's voxels project larger than 2 pixels at the isocentre.")
@click.option("--supersample", type=click.IntRange(1, 4), default=1, show_default=True,
              help="Rays per pixel side, averaged over each pixel's aperture (anti-aliasing; cost grows as its square).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--slice-mm", type=click.FloatRange(0.2, 10), default=1.5, show_default=True,
              help="Interpolate (monotone cubic) along axes coarser than this.")
@click.option("--no-slice-interp", is_flag=True, help="Keep the CT's slices.")
@click.option("--bin-mm", default="auto", show_default=True,
              help="Average CT voxel blocks along axes finer than this, mm (auto: the detector pixel at the "
                   "isocentre, what one pixel integrates; none: keep the CT's voxels; CTs with metal are kept).")
@click.option("--keep-contrast", is_flag=True, help="Render contrast-enhanced blood as scanned.")
@click.option("--metal", type=click.Choice(CT_PREP_METALS), default="titanium_alloy", show_default=True,
              help="Material of metal (HU above --metal-hu, labels named like implants); none = as bone.")
@click.option("--metal-hu", type=click.FloatRange(1001, 60000), default=2500.0, show_default=True)
@click.option("--keep-outside", is_flag=True, help="Keep the table and everything outside the body.")
@click.option("--no-collimate", is_flag=True, help="Expose the whole detector, also where the CT ends.")
@click.option("--raw", is_flag=True, help="No CT preparation at all (as the CT is; for comparisons).")
def drr(ct: Path, labels: Path | None, label_names: Path | None, out: Path, overwrite: bool, preset: str,
        view: str | None, sdd: float | None, sid: float | None, skin_gap: float | None, detector_mm: str | None,
        size: str | None, center: str | None, angles: str, kvp: float | None, mas: float | None, air_kerma: float, aec: bool,
        detector: str, grid: bool | None,
        scatter: bool, scatter_model: str, scatter_photons: int, noise: bool, seed: int, mode: str, supersample: int, device: str, slice_mm: float, bin_mm: str, no_slice_interp: bool,
        keep_contrast: bool, metal: str, metal_hu: float, keep_outside: bool, no_collimate: bool, raw: bool):
    """Render CT (NIfTI, NRRD, MHA or a DICOM folder) as radiographs of a clinical geometry.

    The CT is prepared first (on by default, each step can be switched off):
    the table and objects outside the body removed, contrast-enhanced blood
    made unenhanced where labels identify heart and vessels, metal rendered as
    metal, thick slices interpolated, and the beam collimated to the part of
    the patient the CT contains.
    """
    views = parse_angles(angles)
    size_v = _size(size) or 512
    det = _floats(detector_mm, (1, 2), "--detector-mm")
    centre = _floats(center, (3,), "--center")
    if raw:
        keep_contrast, keep_outside, no_collimate, no_slice_interp, metal = True, True, True, True, "none"
    stems = [view_name(a, b) for a, b in views]
    suffixes = [".png", ".npz", ".json"] + (["_labels.png"] if labels else [])
    targets = [out / f"{s}{x}" for s in stems for x in suffixes] + [out / "drr.json"]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise click.ClickException(
            f"{existing[0]} exists ({len(existing)} file(s) of these views in {out}); pass --overwrite or another --out"
        )
    if label_names and not labels:
        raise click.BadParameter("--label-names needs --labels", param_hint="--label-names")

    import warnings

    import numpy as np
    from rich.progress import track

    from projectors.ct_prep import (
        CTPrepError,
        CTPrepParams,
        CTPrepWarning,
        aim_point,
        collimate,
        collimation_field,
        prepare_ct,
    )
    from projectors.geometry import CArm, GeometryError, bin_pixels, geometry_preset
    from projectors.labels import label_image, structure_masks
    from dataclasses import replace as dc_replace

    from projectors.physics import DetectorParams, PhysicsParams, ScatterParams, patient_geometry, simulate
    from projectors.physics.params import PhysicsParamsError
    from projectors.projector import DeviceError, Projector
    from projectors.volume import Volume, VolumeError
    from synthex.io_images import save_png16

    # -- geometry ----------------------------------------------------------------------------
    p = geometry_preset(preset)
    overrides = {}
    for key, val in (("sdd", sdd), ("view", view)):
        if val is not None:
            overrides[key] = val
    if det is not None:
        overrides["detector_mm"] = det[0] if len(det) == 1 else tuple(det)
    if sid is not None:
        overrides["sid"], overrides["skin_gap_mm"] = sid, None
    if skin_gap is not None:
        overrides["skin_gap_mm"] = skin_gap
    try:
        carm = CArm.preset(preset, size=size_v, **overrides)
    except GeometryError as e:
        raise click.ClickException(f"impossible geometry: {e}") from None
    if raw or bin_mm.strip().lower() == "none":
        bin_value = None
    elif bin_mm.strip().lower() == "auto":  # a pixel's footprint at the isocentre (as synthex render's datasets)
        bin_value = carm.isocentre_pixel_mm
    else:
        try:
            bin_value = float(bin_mm)
        except ValueError:
            raise click.BadParameter(f"expected auto, none or a size in mm, got {bin_mm!r}", param_hint="--bin-mm") from None

    # -- CT and its preparation -------------------------------------------------------------
    try:
        vol = Volume.from_file(ct, labels=labels, label_names=label_names)
        params = CTPrepParams(
            isolate_body=not keep_outside,
            blood=not keep_contrast,
            metal=None if metal == "none" else metal,
            metal_hu=metal_hu,
            slice_mm=None if no_slice_interp else slice_mm,
            bin_mm=bin_value,
            coverage=not no_collimate,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CTPrepWarning)
            prep = prepare_ct(vol, params)
        for w in caught:
            click.echo(f"warning: {w.message}", err=True)
    except (VolumeError, CTPrepError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    rec = prep.record
    phase = rec.get("contrast", {})
    click.echo(f"CT: {vol!r}; contrast: {phase.get('phase')} ({phase.get('detail')})"
               + (f"; blood replaced: {phase['replaced']['labelled_ml']} mL labelled + "
                  f"{phase['replaced']['unlabelled_followed_ml']} mL followed" if "replaced" in phase else "")
               + (f"; metal: {rec['metal']['volume_ml']} mL as {rec['metal']['material']}" if rec.get("metal", {}).get("voxels") else "")
               + (f"; voxels averaged in blocks of {'x'.join(map(str, rec['binning']['factors']))} (--bin-mm "
                  f"{rec['binning']['bin_mm']:g})" if max(rec.get("binning", {}).get("factors", [1])) > 1 else ""))

    iso = tuple(centre) if centre is not None else aim_point(prep.volume, p.aim)
    physics = PhysicsParams.from_options(
        kvp=kvp if kvp is not None else p.kvp, mas=mas, air_kerma_ugy=None if mas else air_kerma,
        scatter=ScatterParams(model=scatter_model, photons=scatter_photons) if scatter else False,
        noise=noise, grid=p.grid if grid is None else grid,
        detector=DetectorParams.preset(detector, float(np.mean(carm.pixel_size))),
    ).replace(aec=aec and not mas)
    transport = None
    if scatter and scatter_model == "monte_carlo":
        from projectors.physics.scatter_mc import MonteCarloError, VoxelScene

        try:
            transport = VoxelScene.from_scene(prep.scene())
        except MonteCarloError as e:
            raise click.ClickException(str(e)) from None
    if mode == "auto":
        # voxels larger than ~2 pixels show as blocks in exact mode; trilinear samples are smooth there
        # (and add no blur the CT's own resolution has not)
        mag = carm.sdd / carm.sid
        mode = "trilinear" if float(prep.volume.spacing.max()) * mag / min(carm.pixel_size) > 2.0 else "exact"
    try:
        projector = Projector(prep.scene(), device=device, mode=mode)
    except (DeviceError, ValueError) as e:
        raise click.ClickException(str(e)) from None

    # every view's geometry is checked before anything is written (no partial output on a bad view)
    cams = []
    for alpha, beta in views:
        try:
            cam = carm.camera(alpha, beta, isocenter=iso, body=prep.body_points)
            projector.check_view(cam)
        except GeometryError as e:
            raise click.ClickException(f"view alpha={_num(alpha)}, beta={_num(beta)}: impossible geometry: {e}") from None
        cams.append(cam)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "ct": str(ct), "labels": str(labels) if labels else None, "ct_preparation": rec,
        "preset": p.to_dict(), "carm": {k: (list(v) if isinstance(v, tuple) else v) for k, v in carm.__dict__.items()},
        "physics": physics.to_dict(), "views": [],
    }
    for i, ((alpha, beta), stem, cam) in enumerate(track(list(zip(views, stems, cams)), description="rendering")):
        proj = projector.project(cam.supersampled(supersample))
        if supersample > 1:  # the mean over each pixel's aperture
            proj.areal_density = {m: bin_pixels(a, supersample) for m, a in proj.areal_density.items()}
            proj.path_length = {n: bin_pixels(a, supersample) for n, a in proj.path_length.items()}
            proj.camera = cam
        covered = prep.coverage.mask(cam, sides=not p.arms_raised) if prep.coverage is not None else np.ones(cam.shape, bool)
        field = collimation_field(covered) if prep.coverage is not None else np.ones(cam.shape, bool)
        if not field.any():
            raise click.ClickException(
                f"view alpha={_num(alpha)}, beta={_num(beta)}: no part of the detector sees only what the CT "
                "contains (aim with --center, or pass --no-collimate)"
            )
        areal = collimate(proj.areal_density, field) if not field.all() else proj.areal_density
        try:
            view_physics = physics
            if scatter:  # the scatter model's patient thickness and air gap for this view; the photons' seed
                view_physics = physics.replace(scatter=dc_replace(physics.scatter, seed=seed + i,
                                                                  **patient_geometry(prep.volume, cam)))
            res = simulate(areal, cam, view_physics, np.random.default_rng(seed + i), sdd=cam.sdd, field=field,
                           scene=transport, device=projector.device)
        except PhysicsParamsError as e:
            raise click.ClickException(str(e)) from None
        image = res.image  # the console display: window from the anatomy (not the collimated border), multi-scale
        arrays = {f"areal_density/{m}": a.astype(np.float32) for m, a in areal.items()}
        arrays.update(line_integral=res.log_image, transmission=res.transmission, primary=res.primary,
                      covered=covered, field=field, P=cam.P, K=cam.K, world_from_camera=cam.world_from_camera.matrix)
        files = {"image": f"{stem}.png", "arrays": f"{stem}.npz", "meta": f"{stem}.json"}
        if labels is not None and proj.path_length:
            masks = {n: m & field for n, m in structure_masks(proj.path_length).items()}
            arrays.update({f"mask/{n}": m for n, m in masks.items()})
            lab = label_image(proj.path_length, prep.volume.label_names) * field
            arrays["labels"] = lab.astype(np.uint16)
            save_png16(out / f"{stem}_labels.png", lab.astype(np.uint16))
            files["labels"] = f"{stem}_labels.png"
        np.savez_compressed(out / f"{stem}.npz", **arrays)
        save_png16(out / f"{stem}.png", image)
        meta = {
            "alpha_deg": alpha, "beta_deg": beta, "files": files,
            "sid": float(cam.depth(np.asarray(iso)[None])[0]), "sdd": cam.sdd, "pixel_size_mm": list(cam.pixel_size),
            "mirrored": cam.mirrored, "P": cam.P.tolist(), "K": cam.K.tolist(),
            "world_from_camera": cam.world_from_camera.matrix.tolist(), "isocenter": list(iso),
            "covered_fraction": round(float(covered.mean()), 4), "field_fraction": round(float(field.mean()), 4),
            "seed": seed + i, "supersample": supersample, "mode": mode, "physics": view_physics.to_dict(),
        }
        (out / f"{stem}.json").write_text(json.dumps(meta, indent=1))
        summary["views"].append(meta)
    (out / "drr.json").write_text(json.dumps(summary, indent=1, default=float))
    click.echo(f"wrote {len(views)} view(s) to {out}: " + ", ".join(stems))

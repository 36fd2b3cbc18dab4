"""The dataset card: a markdown page documenting provenance, parameters and intended use."""

from __future__ import annotations

from pathlib import Path


def card_text(ds, export_format: str | None = None) -> str:
    from projectors.physics.params import MODES
    from synthex.subjects import SOURCES

    m, cfg = ds.manifest, ds.manifest["config"]
    sources = sorted({e["source"] for e in cfg["subjects"]})
    lines = [
        f"# Dataset card: synthex {m['task']} dataset",
        "",
        "Synthetic X-ray images rendered by synthex (physics-based synthetic X-ray data engine).",
        "",
        "## Provenance",
        f"- synthex version {m['synthex_version']}, dataset format v{m['format_version']}, seed {m['seed']}",
        f"- {m['counts']['images']} images of {m['image_size'][1]} x {m['image_size'][0]} pixels "
        f"({m['pixel_size_mm'][0]:.4g} mm detector pitch), {m['counts']['subjects']} subjects",
        f"- subject sources: {', '.join(sources)}",
    ]
    for s in sources:
        lines.append(f"  - `{s}`: {SOURCES[s].doc}")
    ct = [e["path"] for e in cfg["subjects"] if e["source"] == "ct"]
    if ct:
        lines.append(f"- CT files: {', '.join(Path(p).name for p in ct)} (check their licences before sharing)")
    lines += [
        f"- physics model `{cfg['physics']['model']}`: {MODES[cfg['physics']['model']]}; ranges: kVp "
        f"{cfg['physics']['kvp']}, Al {cfg['physics']['al_mm']} mm, Cu {cfg['physics']['cu_mm']} mm, detector air kerma "
        f"{cfg['physics']['air_kerma_ugy']} uGy, detector {_detector(cfg['physics'])}, scatter model "
        f"`{cfg['physics'].get('scatter_model', 'fast')}`, grid probability {cfg['physics']['grid_probability']}",
        f"- geometry: preset `{cfg['geometry']['preset']}` (overrides: sdd {cfg['geometry']['sdd']}, sid "
        f"{cfg['geometry']['sid']}, detector {cfg['geometry']['detector_mm']}); "
        f"views: alpha {cfg['views']['alpha_deg']} deg, beta {cfg['views']['beta_deg']} deg, "
        f"isocentre jitter +/-{cfg['views']['target_jitter_mm']} mm",
        f"- material randomization: density jitter +/-{cfg['materials']['density_jitter']}, "
        f"HU threshold jitter +/-{cfg['materials']['threshold_jitter_hu']} HU",
        "- images are stored without image-level augmentation; apply SyntheX's strong randomization when training "
        "(`synthex train-downstream --randomization strong`, the default)",
        "- every sampled parameter of every image is stored with it (`params`, JSON) and can be replayed",
        *_ct_notes(ds),
        "",
        "## Labels",
        f"- classes (index = label value): {', '.join(f'{k} {c}' for k, c in enumerate(m['classes']))}",
        f"- landmarks: {', '.join(m['landmarks']) or 'none'}",
        "- masks: pixels whose ray crosses the structure (path length > "
        f"{cfg['labels']['min_path_mm']} mm); where classes overlap, the label map gives a pixel to the task's "
        "priority class (a lesion over a lung), else to the class with the longest path through it",
        "- camera: " + m["camera_model"]["note"] + "; world RAS mm",
        "",
        "## Intended use and limits",
        "- training and benchmarking X-ray image analysis models (segmentation, landmark detection) "
        "before or alongside real data; evaluate on real images before any conclusion",
        "- not for clinical use; images are simulations and their realism depends on the physics model above",
    ]
    if cfg["physics"]["model"] != "spectral":
        lines.append(
            f"- **{cfg['physics']['model']} physics**: no spectrum, noise or scatter was simulated; expect a larger "
            "sim-to-real gap"
        )
    if export_format:
        lines += ["", "## This export", f"- format: {export_format} (see the synthex README, 'Rendering datasets')"]
    lines += ["", "## Full configuration", "```json"]
    import json

    lines += [json.dumps(cfg, indent=2), "```", ""]
    return "\n".join(lines)


def export_card(ds, out: Path, export_format: str | None = None, **options) -> Path:
    path = Path(out) / "DATASET_CARD.md"
    path.write_text(card_text(ds, export_format))
    return path


def _ct_notes(ds) -> list[str]:
    """How each CT was prepared (contrast, metal, slices) and which landmarks it lacks, from the samples' records."""
    seen, lines = {}, []
    for i in range(len(ds)):
        rec = ds[i]["params"]["subject"]
        name = rec.get("name", "?").split("~")[0].split("+")[0]
        if name in seen or not (rec.get("ct_prep") or rec.get("landmarks_missing")):
            continue
        seen[name] = True
        prep = rec.get("ct_prep") or {}
        parts = []
        if prep:
            parts.append(f"contrast phase {prep.get('contrast')}" + (
                ", contrast-enhanced blood rendered as unenhanced blood" if prep.get("blood_replaced") else ""))
            if prep.get("metal") and prep["metal"].get("volume_ml"):
                parts.append(f"{prep['metal']['volume_ml']} mL of metal rendered as {prep['metal']['material']}")
            if prep.get("binned_mm"):
                parts.append(f"voxels averaged in blocks to {prep['binned_mm']} mm (a pixel's footprint at the patient)")
            if prep.get("slices_mm"):
                parts.append(f"slices interpolated to {prep['slices_mm']} mm")
            parts += list(prep.get("warnings", []))
        if rec.get("landmarks_missing"):
            parts.append(f"landmarks not covered by the CT (missing, never guessed): {', '.join(rec['landmarks_missing'])}")
        lines.append(f"- CT `{name}`: " + "; ".join(parts))
    return lines


def _detector(physics: dict) -> str:
    """The detector a dataset's physics ranges draw (configs written before ``detector`` existed: the CsI panel)."""
    name = physics.get("detector", "flat_panel_csi")
    p = physics.get("cr_probability", 0.0)
    return f"`{name}`" + (f" or, with probability {p}, `cr_plate`" if p and name != "cr_plate" else "")

"""The dataset card: a markdown page documenting provenance, parameters and intended use."""

from __future__ import annotations

from pathlib import Path


def card_text(ds, export_format: str | None = None) -> str:
    from synthex.pipeline import PHYSICS
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
        f"- physics model `{cfg['physics']['model']}`: {PHYSICS[cfg['physics']['model']].doc}",
        f"- C-arm: source-detector {cfg['carm']['sdd']} mm, source-isocentre {cfg['carm']['sid']} mm; "
        f"views: alpha {cfg['views']['alpha_deg']} deg, beta {cfg['views']['beta_deg']} deg, "
        f"isocentre jitter +/-{cfg['views']['target_jitter_mm']} mm",
        f"- domain randomization: image preset `{cfg['randomization']['image']}`, density jitter "
        f"+/-{cfg['randomization']['density_jitter']}, "
        f"HU threshold jitter +/-{cfg['randomization']['threshold_jitter_hu']} HU",
        "- every sampled parameter of every image is stored with it (`params`, JSON) and can be replayed",
        "",
        "## Labels",
        f"- classes (index = label value): {', '.join(f'{k} {c}' for k, c in enumerate(m['classes']))}",
        f"- landmarks: {', '.join(m['landmarks']) or 'none'}",
        "- masks: pixels whose ray crosses the structure (path length > "
        f"{cfg['labels']['min_path_mm']} mm); the label map resolves overlaps by class order (later wins)",
        "- camera: " + m["camera_model"]["note"] + "; world RAS mm",
        "",
        "## Intended use and limits",
        "- training and benchmarking X-ray image analysis models (segmentation, landmark detection) "
        "before or alongside real data; evaluate on real images before any conclusion",
        "- not for clinical use; images are simulations and their realism depends on the physics model above",
    ]
    from synthex.pipeline import PHYSICS

    model = cfg["physics"]["model"]
    lines.append(f"- physics model `{model}`: {PHYSICS[model].doc}")
    if model == "monochromatic":
        lines.append(
            "- **monochromatic physics**: no spectrum, noise or scatter was simulated (the sampled kVp, dose "
            "and noise values are recorded but were not applied); expect a larger sim-to-real gap"
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

"""Reports of the benchmarks: Markdown tables and figures (PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synthex.bench.steps import write_json_atomic

TILE = 160


# ---------------------------------------------------------------------------
# cells


def cell(s: dict | None, digits: int = 3) -> str:
    """``mean [lo, hi]`` (or the dataset-level value), or why there is none."""
    if not s:
        return "n/a"
    value = s.get("value", s.get("mean"))
    if value is None:
        return "n/a" + (f" ({s.get('note') or s.get('ci_note')})" if s.get("note") or s.get("ci_note") else "")
    ci = s.get("ci95")
    text = f"{value:.{digits}f}"
    if ci:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    elif s.get("ci_note"):
        text += " (no CI)"
    return text


def counts(s: dict | None) -> str:
    if not s:
        return ""
    return f"{s.get('n_images', s.get('n'))} / {s.get('n_subjects')}"


# ---------------------------------------------------------------------------
# images


def _tile(image: np.ndarray, labels: np.ndarray | None = None, title: str = "", size: int = TILE):
    from PIL import Image, ImageDraw

    from training.report import PALETTE

    img = np.clip(np.asarray(image, dtype=np.float64), 0, 1)
    rgb = np.repeat((img * 255).astype(np.uint8)[..., None], 3, -1)
    if labels is not None:
        lab = np.asarray(labels)
        edge = np.zeros(lab.shape, bool)
        edge[:-1] |= lab[:-1] != lab[1:]
        edge[1:] |= lab[:-1] != lab[1:]
        edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
        edge[:, 1:] |= lab[:, :-1] != lab[:, 1:]
        edge &= lab > 0
        colours = (PALETTE[np.maximum(lab, 1) % len(PALETTE)] * 255).astype(np.uint8)
        rgb[edge] = colours[edge]
    im = Image.fromarray(rgb).resize((size, size), Image.BILINEAR if labels is None else Image.NEAREST)
    canvas = Image.new("RGB", (size, size + 14), "white")
    canvas.paste(im, (0, 14))
    ImageDraw.Draw(canvas).text((2, 1), title[: size // 6], fill=(0, 0, 0))
    return canvas


def grid(rows: list[list], path: Path, header: list[str] | None = None, size: int = TILE) -> Path:
    """A sheet of tiles: ``rows`` of (image, labels or None, title) tuples (None: an empty cell)."""
    from PIL import Image, ImageDraw

    ncol = max(len(r) for r in rows)
    top = 16 if header else 0
    sheet = Image.new("RGB", (ncol * (size + 4), top + len(rows) * (size + 18)), "white")
    if header:
        d = ImageDraw.Draw(sheet)
        for j, h in enumerate(header):
            d.text((j * (size + 4) + 2, 2), h[: size // 6], fill=(0, 0, 0))
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            if t is not None:
                sheet.paste(_tile(*t, size=size), (j * (size + 4), top + i * (size + 18)))
    sheet.save(path)
    return Path(path)


def _strong_draw(image, labels, seed: int, index: int):
    """One draw of SyntheX's strong randomization that changes the image (half of all draws leave it as
    it is: the whole block runs with p = 0.5), with the draw's seed."""
    from domain_randomization.image import randomize

    for k in range(20):
        r = randomize(image, labels, rng=np.random.default_rng([seed, index, k]), preset="strong")
        if not np.allclose(r.image, image):
            return r.image, np.asarray(r.masks), k
    return image, labels, None


def samples_figure(study, path: Path, n_rows: int = 3) -> Path:
    """naive | realistic | randomized | pix2pix | CycleGAN | target test (| real CXR for covid): ``n_rows``
    examples (naive, realistic, randomized and CycleGAN show one render, so the same view), then the first
    example again with label outlines."""
    from training.data import open_source
    from training.gan.data import load_images

    size = study.preset.image_size
    srcs = {k: open_source(study.path(k)) for k in ("naive", "realistic", "pix2pix", "cyclegan", "target_test")}
    n = len(srcs["realistic"])
    picks = [int(x) for x in np.linspace(0, n - 1, n_rows + 2)[1:-1]]
    header = ["naive DRR", "realistic", "realistic+strong DR", "pix2pix", "CycleGAN", "target (test)"]
    real = None
    if study.task == "covid" and study.cyclegan_target != str(study.path("target_train")):
        real, _ = load_images(study.cyclegan_target, size)
        header.append("real CXR (CycleGAN's target)")
    rows, first = [], None
    for r, i in enumerate(picks):
        rec = {k: s[int(i * len(s) / n)] if k in ("pix2pix", "target_test") else s[i] for k, s in srcs.items()}
        rand, rand_lab, _ = _strong_draw(rec["realistic"].image, rec["realistic"].labels, study.seed, i)
        row = [(rec["naive"].image, None, f"#{i}"), (rec["realistic"].image, None, ""), (rand, None, ""),
               (rec["pix2pix"].image, None, ""), (rec["cyclegan"].image, None, ""),
               (rec["target_test"].image, None, f"subject {rec['target_test'].subject}")]
        if real is not None:
            row.append((real[(r * len(real)) // n_rows], None, ""))
        rows.append(row)
        if first is None:
            first = [(t[0], lab, "labels") for t, lab in zip(row, [rec["naive"].labels, rec["realistic"].labels, rand_lab,
                                                                   rec["pix2pix"].labels, rec["cyclegan"].labels,
                                                                   rec["target_test"].labels])]
    rows.append(first)
    return grid(rows, path, header)


def real_cxr_figure(pred_dir: Path, table: dict, path: Path, k: int = 3) -> tuple[Path, list[dict]]:
    """Overlays of the covid model on real chest X-rays, good and bad cases: top row the COVID-19 images
    scored highest and the no-finding images scored lowest (right), bottom row the COVID-19 images scored
    lowest and the no-finding images scored highest (wrong). Returns the figure and the images shown
    (with their source and licence for attribution)."""
    from PIL import Image

    doc = json.loads((pred_dir / "predictions.json").read_text())
    items = []
    for rec in doc["images"]:
        meta = table.get(Path(rec["file"]).name)
        if meta is not None and meta["finding"] in ("COVID-19", "No Finding") and rec.get("overlay"):
            items.append((meta, float(rec["lesion_probability"]), pred_dir / rec["overlay"]))
    covid = sorted([x for x in items if x[0]["finding"] == "COVID-19"], key=lambda x: -x[1])
    normal = sorted([x for x in items if x[0]["finding"] == "No Finding"], key=lambda x: x[1])
    good = covid[:k] + normal[:2]
    bad = covid[-k:] + normal[-2:][::-1]
    shown = [{"file": meta["file"], "finding": meta["finding"], "view": meta.get("view"),
              "patientid": meta.get("patientid"), "lesion_probability": p, "row": verdict,
              "license": meta.get("license"), "source": meta.get("url") or meta.get("doi"), "overlay": str(ov)}
             for row_items, verdict in ((good, "right"), (bad, "wrong")) for meta, p, ov in row_items]
    from PIL import ImageDraw

    sheet = Image.new("RGB", (max(len(good), len(bad)) * (2 * TILE + 4), 2 * (2 * TILE + 18)), "white")

    d = ImageDraw.Draw(sheet)
    for i, row_items in enumerate((good, bad)):
        for j, (meta, p, ov) in enumerate(row_items):
            im = Image.open(ov).convert("RGB")
            im.thumbnail((2 * TILE, 2 * TILE))
            x, y = j * (2 * TILE + 4), i * (2 * TILE + 18)
            sheet.paste(im, (x + (2 * TILE - im.width) // 2, y + 16))
            d.text((x + 2, y + 2), f"{'OK' if i == 0 else 'WRONG'} {meta['finding']} p={p:.3f} {meta['file'][:10]}",
                   fill=(0, 0, 0))
    sheet.save(path)
    return Path(path), shown


# ---------------------------------------------------------------------------
# sim2real


def _first_line(results: dict) -> str:
    if results["target_kind"] == "reference":
        return ("**The target is a rendered reference domain, not real X-rays**: other subjects of the CT population "
                "(held out from every training source), Monte Carlo scatter (the training sources have the fast "
                "model), a detector preset no training source uses (a Gd2O2S powder-screen flat panel) and detector "
                "and display console settings outside every training range. These numbers measure transfer between "
                "two simulated domains, not to real radiographs.")
    return f"Target: the user's labelled X-rays, {results['target']}."


def sim2real_markdown(results: dict, figure: str | None, real_figure: str | None, shown: list[dict]) -> str:
    task = results["task"]
    metrics = results["metrics"]
    lines = [_first_line(results), "", f"# sim2real: {task} ({results['preset']['name']} preset)", "",
             f"Command: `{results['command']}`", "",
             f"Preset `{results['preset']['name']}`: {results['preset']['budget']}", ""]
    split = results["target_split"]
    lines += [f"Target test split: {split.get('test_images')} images of {len(split.get('test_subjects') or [])} "
              f"subjects; target training split: {split.get('train_images')} images of "
              f"{len(split.get('train_subjects') or [])} subjects (subject-disjoint).", ""]
    head = "| source | training set: images (train / val), subjects | training randomization | " + \
        " | ".join(h for _, h, _ in metrics) + " | test images / subjects |"
    lines += [head, "|" + "---|" * (4 + len(metrics))]
    for row in results["rows"]:
        n, subj = row.get("n_train_images") or {}, row.get("n_train_subjects") or {}
        cells = [cell(row["metrics"].get(k), d) for k, _, d in metrics]
        first = next((row["metrics"].get(k) for k, _, _ in metrics if row["metrics"].get(k)), None)
        lines.append(f"| {row['label']} | {n.get('train', '?')} / {n.get('val', '?')}, "
                     f"{subj.get('train', '?')} / {subj.get('val', '?')} | {row['randomization']} | "
                     + " | ".join(cells) + f" | {counts(first)} |")
    lines += ["", "Cells: mean over test images [95% percentile-bootstrap CI, 2,000 resamples of test *subjects*] "
              "(training.evaluation; no interval with fewer than 5 subjects). Landmark errors in mm at the detector. "
              "Every model: the same TrainConfig "
              f"({', '.join(f'{k}={v}' for k, v in results['preset']['train'].items())}, image size "
              f"{results['preset']['image_size']}), validation on a subject-level 20% of its own training set, "
              "best validation epoch tested.", ""]
    if figure:
        lines += [f"![samples per source]({figure})", "",
                  "Columns: naive DRR | realistic | realistic + one draw of the strong randomization | pix2pix sample | "
                  "CycleGAN translation | target test image" + (" | real chest X-ray (CycleGAN's target)" if task == "covid"
                                                                  else "")
                  + ". Naive, realistic, randomized and CycleGAN show the same render (same subject and view); the "
                  "last row repeats the first with the label outlines each set carries.", ""]
    lines += ["## Sources", ""]
    for row in results["rows"]:
        lines.append(f"* **{row['label']}** (`{row['name']}`, randomization `{row['randomization']}`): {row['what']}.")
    lines += ["", f"Target: {results['target']}", ""]
    real = [r for r in results["rows"] if r.get("real_cxr")]
    if real:
        lines += ["## The covid models on 101 real chest X-rays", "",
                  "Each model above run with `synthex predict` (training.predict.predict_files) on the real chest "
                  "X-rays of `covid19_cxr_open` (90 COVID-19, 8 no finding, 3 other findings; 54 patients; no lesion "
                  "masks). Image-level lesion probability (the largest per-pixel lesion probability), COVID-19 vs "
                  "no-finding images: ROC AUC with a 95% CI clustered by patient. **Only 8 negatives**: the "
                  "intervals are wide and these AUCs say little.", "",
                  "| model trained on | AUC COVID-19 vs no finding [95% CI] | COVID-19 median p | no finding median p |",
                  "|---|---|---|---|"]
        for r in real:
            rc = r["real_cxr"]
            auc = rc["auc_covid_vs_no_finding"]
            per = rc["per_finding"]
            lines.append(f"| {r['label']} | {cell(auc)} ({auc['n_positive']} vs {auc['n_negative']} images, "
                         f"{auc['n_subjects']} patients) | {per.get('COVID-19', {}).get('median', float('nan')):.3f} | "
                         f"{per.get('No Finding', {}).get('median', float('nan')):.3f} |")
        if real_figure:
            lines += ["", f"![covid model on real chest X-rays]({real_figure})", "",
                      "The realistic + strong randomization model on real chest X-rays (predicted lesion pixels tinted). "
                      "Top row: right (the COVID-19 images scored highest, the no-finding images scored lowest); "
                      "bottom row: wrong (the COVID-19 images scored lowest, the no-finding images scored highest). "
                      "Images, left to right, top then bottom row (attribution per `images.csv`):", ""]
            for s in shown:
                lines.append(f"* `{s['file']}` ({s['finding']}, {s['view']}, patient {s['patientid']}, "
                             f"p = {s['lesion_probability']:.3f}): {s['license']}, {s['source']}")
        lines.append("")
    lines += ["## Steps", "", "| step | seconds | finished |", "|---|---|---|"]
    for name, st in results["steps"].items():
        sec = st.get("seconds")
        lines.append(f"| {name} | {'' if sec is None else f'{sec:.0f}'} | {st.get('finished') or ''} |")
    lines += ["", f"Machine: {results['machine']['platform']}, torch {results['machine']['torch']}, "
              f"{results['machine']['threads']} thread(s), CUDA {results['machine']['cuda']}; synthex "
              f"{results['synthex_version']}. Wall-clock times on a shared machine are noisy.", ""]
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"* {n}" for n in results["notes"]] + [""]
    return "\n".join(lines)


def write_sim2real(results: dict, study, report_dir: Path) -> dict:
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    stem = f"sim2real_{results['task']}"
    fig = samples_figure(study, report_dir / f"{stem}_samples.png")
    results["figures"] = {"samples": fig.name}
    real_fig, shown = None, []
    pred = study.out / "predictions-real-cxr" / "realistic_strong"
    if (pred / "predictions.json").is_file():
        from synthex.bench.study import real_cxr_folder, real_cxr_table

        real_fig, shown = real_cxr_figure(pred, real_cxr_table(real_cxr_folder()), report_dir / f"{stem}_real_cxr.png")
        results["figures"]["real_cxr"] = real_fig.name
        results["real_cxr_figure_images"] = shown
    write_json_atomic(report_dir / f"{stem}.json", results)
    (report_dir / f"{stem}.md").write_text(sim2real_markdown(results, fig.name, real_fig.name if real_fig else None,
                                                             shown))
    files = {"json": str(report_dir / f"{stem}.json"), "md": str(report_dir / f"{stem}.md"), "png": str(fig)}
    results["report"] = files
    return files

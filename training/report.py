"""Write what a reviewer asks for: ``metrics.json`` (per-image values, mean, std,
subject-clustered 95% bootstrap CI, image and subject counts), ``report.md`` with
training curves and example predictions (PNG), and ``model_card.md`` (data,
parameters, intended use, limitations). All three state the same CI method
(:data:`CI_METHOD`), the pixel size used for mm metrics and where it came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.metrics import MIN_SUBJECTS_FOR_CI
from training.tasks import Task

# distinct colours per class (background transparent)
PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230]], dtype=np.float64) / 255.0


def ci_method(n_resamples: int = 2000, min_subjects: int = MIN_SUBJECTS_FOR_CI) -> str:
    return (f"95% percentile bootstrap clustered by subject: each of {n_resamples} resamples draws subjects "
            "(CT / phantom / specimen / patient) with replacement and pools all their images; no interval "
            f"from fewer than {min_subjects} subjects (the point value is given with the reason)")


CI_METHOD = ci_method()


def write_metrics(path, task: Task, summary: dict, per_image: list[dict], meta: dict) -> Path:
    path = Path(path)
    doc = {"task": task.name, "classes": list(task.classes), "landmarks": list(task.landmarks),
           "ci": CI_METHOD, **meta, "summary": summary, "per_image": per_image}
    path.write_text(json.dumps(doc, indent=1, allow_nan=False))
    return path


def plot_curves(history: list[dict], path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] + 1 for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(ep, [h["train_loss"] for h in history], "o-", label="train (randomized)")
    ax[0].plot(ep, [h["val_loss"] for h in history], "s-", label="validation")
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("loss"), ax[0].legend()
    ax[1].plot(ep, [np.nan if h.get("val_dice") is None else h["val_dice"] for h in history], "s-")
    ax[1].set_xlabel("epoch"), ax[1].set_ylabel("validation Dice (foreground mean)"), ax[1].set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_example(example: dict, path, task: Task) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.asarray(example["image"])
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4))
    for ax, key, title in ((axes[0], "true", "reference"), (axes[1], "pred", "prediction")):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        lab = np.asarray(example[f"{key}_labels"])
        rgba = np.zeros((*lab.shape, 4))
        rgba[..., :3] = PALETTE[lab % len(PALETTE)]
        rgba[..., 3] = 0.4 * (lab > 0)
        ax.imshow(rgba)
        for box in example.get(f"{key}_boxes", []):
            u0, v0, u1, v1 = box
            ax.add_patch(plt.Rectangle((u0, v0), u1 - u0, v1 - v0, fill=False, ec="yellow", lw=1))
        lm = np.asarray(example[f"{key}_landmarks"]).reshape(-1, 2)
        ok = np.all(np.isfinite(lm), axis=1)
        if ok.any():
            ax.scatter(lm[ok, 0], lm[ok, 1], s=12, c="cyan" if key == "true" else "red", marker="+")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{task.name}: {example['name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _counts(s: dict) -> str:
    n_img, n_sub = s.get("n_images", s.get("n")), s.get("n_subjects")
    return f"n = {_plural(n_img, 'image')}" + (f", {_plural(n_sub, 'subject')}" if n_sub is not None else "")


def _ci(s: dict, digits: int) -> str:
    if s.get("ci95"):
        return f"[{s['ci95'][0]:.{digits}f}, {s['ci95'][1]:.{digits}f}]"
    n_sub = s.get("n_subjects")
    if n_sub is not None and n_sub < MIN_SUBJECTS_FOR_CI:
        return f"no CI ({_plural(n_sub, 'subject')} < {MIN_SUBJECTS_FOR_CI})"
    return f"no CI ({s.get('ci_note', 'not computed')})"


def _fmt(s: dict | None, digits: int = 3) -> str:
    """``mean ± std [lo, hi] (n = images, subjects)``; without an interval, the reason."""
    if not s or s.get("mean") is None:
        return "n/a" + (f" ({s['ci_note']})" if s and s.get("ci_note") else "")
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} {_ci(s, digits)} ({_counts(s)})"


def _fmt_value(s: dict, digits: int = 3) -> str:
    """A dataset-level value (AUC, AP) with its CI, counts and notes."""
    if s.get("value") is None:
        return f"n/a: {s.get('note', 'undefined')} ({_counts(s)})"
    ci = _ci(s, digits)
    extra = ""
    if "n_positive" in s:
        extra = f"; {s['n_positive']} with lesion, {s['n_negative']} lesion-free"
    if "n_references" in s:
        extra = f"; {s['n_references']} reference objects, {s['n_detections']} detections"
    note = f"; {s['ci_note']}" if s.get("ci95") and s.get("ci_note") else ""
    return f"{s['value']:.{digits}f} {ci} ({_counts(s)}{extra}{note})"


DATASET_LEVEL = {"presence_auc": "image-level lesion AUC", "detection_ap50": "detection AP@0.5 (COCOeval)",
                 "detection_ap": "detection AP@[.5:.95] (COCOeval)"}


def summary_table(summary: dict) -> str:
    rows = ["| metric | mean ± std [95% CI] (n) |", "|---|---|"]
    for key, s in summary.items():
        if key in DATASET_LEVEL:
            rows.append(f"| {DATASET_LEVEL[key]} | {_fmt_value(s)} |")
        elif key == "pixel_confusion_pooled":
            rows += [f"| pooled pixel {k} | {v:.3f} |" for k, v in s.items() if v is not None]
        elif isinstance(s, dict) and "mean" in s:
            rows.append(f"| {key} | {_fmt(s)} |")
    return "\n".join(rows)


def data_notes(test_info: dict | None) -> list[str]:
    """Lines on the test images' pixel size and the data's warnings, for report.md and the model card."""
    info = test_info or {}
    lines = []
    ps = info.get("pixel_size")
    if ps:
        lines.append(f"Pixel size of the test images (for mm metrics): {ps['value']} ({ps['note']}).")
    for w in info.get("warnings", []):
        lines.append(f"Warning: {w}.")
    return lines


def write_model_card(path, task: Task, meta: dict, summary: dict, test_description: str,
                     test_info: dict | None = None) -> Path:
    cfg = meta["config"]
    text = f"""# Model card: synthex `{task.name}` model

**Model.** MONAI residual U-Net (size `{cfg['model_size']}`) with a {task.num_classes}-class segmentation
head{f" and a {task.num_landmarks}-landmark heatmap head" if task.num_landmarks else ""}; input
{cfg['image_size']} x {cfg['image_size']} px, one channel, per-image z-score.

**Task.** {task.description}. Classes: {", ".join(task.classes[1:])}.
{("Landmarks: " + ", ".join(task.landmarks) + ".") if task.landmarks else ""}

**Training data.** {meta['train_data']}. Validation: {meta['val_data']}.
Subjects: train {len(meta['splits']['train'])}, validation {len(meta['splits']['val'])}; no subject is
in two splits (checked). Images: {meta.get('n_images')}.
{" ".join(f"Warning: {w}." for w in meta.get("data_warnings", []))}

**Training.** AdamW (lr {cfg['lr']}, weight decay {cfg['weight_decay']}), cosine schedule, batch
{cfg['batch_size']}, up to {cfg['epochs']} epochs, early stopping after {cfg['patience']} epochs without
validation-loss improvement; loss Dice + CE + {cfg['heatmap_weight']} x heatmap KL (sigma
{cfg['heatmap_sigma']} px); on-the-fly `{cfg['randomization']}` image randomization of training images
only (validation and test images are never randomized); seed {cfg['seed']};
deterministic algorithms: {cfg['deterministic']}; device {meta.get('device', cfg['device'])}.

**Evaluation.** {test_description}. Mean ± std over images; {CI_METHOD}.
{" ".join(data_notes(test_info))}

{summary_table(summary)}

**Intended use.** Research on synthetic-to-real transfer for X-ray image analysis: benchmarking,
pre-training, and comparison of simulation and randomization settings.

**Not intended for** clinical use or any diagnostic or treatment decision. Not a medical device.

**Limitations.** Performance on real images depends on the gap between the training data and the
target scanner, protocol and anatomy; numbers above hold only for the test data named here. Small test
sets give wide confidence intervals, and views of one subject are not independent: the intervals
resample subjects. Landmark errors in mm are at the detector plane (not in the patient), computed
with the pixel size recorded with the test data ({((test_info or {}).get('pixel_size') or {}).get('value', 'unknown')});
where it is unknown no mm metric is reported.
"""
    Path(path).write_text(text)
    return Path(path)


def write_report(out_dir, task: Task, meta: dict, history: list[dict], summary: dict, per_image: list[dict],
                 examples: list[dict], test_description: str, baselines: dict | None = None,
                 test_info: dict | None = None) -> dict:
    """All report files under ``out_dir``; returns their paths. ``test_info``: ``{"pixel_size":
    {"value", "note"}, "warnings": [...]}`` of the test data (see :func:`training.run.test_info`)."""
    out = Path(out_dir)
    (out / "examples").mkdir(parents=True, exist_ok=True)
    files = {"metrics": write_metrics(out / "metrics.json", task, summary, per_image,
                                      {"test_data": test_description, **(test_info or {}), "training": meta,
                                       **({"baselines": baselines} if baselines else {})})}
    lines = [f"# synthex `{task.name}` report", "", f"Test data: {test_description}", "",
             *[line + "\n" for line in data_notes(test_info)],
             "## Metrics (mean ± std over test images [95% CI])", "", f"CI: {CI_METHOD}.", "",
             summary_table(summary), ""]
    if baselines:
        lines += ["## Trivial baselines on the same test images", ""]
        for name, s in baselines.items():
            lines += [f"### {name}", "", summary_table(s), ""]
    if history:
        files["curves"] = plot_curves(history, out / "curves.png")
        lines += ["## Training curves", "", "![curves](curves.png)", ""]
    if examples:
        lines += ["## Example predictions (left: reference, right: prediction; + landmarks)", ""]
        for k, ex in enumerate(examples):
            p = plot_example(ex, out / "examples" / f"example_{k}.png", task)
            lines.append(f"![{ex['name']}](examples/{p.name})")
        lines.append("")
    lines += ["## Model card", "", "See [model_card.md](model_card.md).", ""]
    files["model_card"] = write_model_card(out / "model_card.md", task, meta, summary, test_description, test_info)
    (out / "report.md").write_text("\n".join(lines))
    files["report"] = out / "report.md"
    return files

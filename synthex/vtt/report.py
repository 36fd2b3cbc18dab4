"""The study report: statistics from key + answers (pure), written as Markdown, JSON and PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synthex.vtt import VTTError
from synthex.vtt.stats import binomial_test, fleiss_kappa, proportion, rating_score, roc_curve
from synthex.vtt.store import ANSWERS, Answer

REPORT_FORMAT = "synthex-vtt-report/1"
POOLED = "pooled"


def _metrics(answers: list[Answer], labels: dict[str, str], n_images: int) -> dict:
    truth = np.array([labels[a.image_id] == "synthetic" for a in answers], dtype=bool)
    called = np.array([a.answer == "synthetic" for a in answers], dtype=bool)
    correct = int((truth == called).sum())
    return {
        "n_answers": len(answers),
        "n_images": n_images,
        "accuracy": proportion(correct, len(answers)).to_dict(),
        "sensitivity": proportion(int((truth & called).sum()), int(truth.sum())).to_dict(),
        "specificity": proportion(int((~truth & ~called).sum()), int((~truth).sum())).to_dict(),
        "chance_test_p": binomial_test(correct, len(answers), 0.5),
        "roc": roc_curve([rating_score(a.answer, a.confidence) for a in answers], truth).to_dict(),
    }


def compute_report(labels: dict[str, str], answers: list[Answer], title: str = "Visual Turing test") -> dict:
    """Per-rater and pooled metrics, Fleiss' kappa and ROC, as a JSON-ready dict.

    ``labels``: image id -> "real" | "synthetic" (the key). Answers to ids not in the key are an error.
    """
    unknown = sorted({a.image_id for a in answers} - set(labels))
    if unknown:
        raise VTTError(f"answers refer to {len(unknown)} image ids that are not in the key (e.g. {unknown[0]})")
    if not answers:
        raise VTTError("no answers yet: nothing to report")
    raters = sorted({a.rater for a in answers})
    by_rater = {r: [a for a in answers if a.rater == r] for r in raters}
    n_images = len(labels)

    # Fleiss' kappa needs the same raters on every item: use the images that every rater answered.
    answered = {r: {a.image_id: a.answer for a in by_rater[r]} for r in raters}
    common = sorted(set.intersection(*(set(v) for v in answered.values())))
    kappa = None
    if len(raters) >= 2 and common:
        counts = [[sum(answered[r][i] == c for r in raters) for c in ANSWERS] for i in common]
        kappa = fleiss_kappa(counts)
    return {
        "format": REPORT_FORMAT,
        "title": title,
        "positive_class": "synthetic",
        "confidence_level": 0.95,
        "study": {
            "n_images": n_images,
            "n_real": sum(v == "real" for v in labels.values()),
            "n_synthetic": sum(v == "synthetic" for v in labels.values()),
            "raters": raters,
        },
        "raters": {r: _metrics(by_rater[r], labels, n_images) for r in raters},
        POOLED: _metrics(answers, labels, n_images),
        "agreement": {"fleiss_kappa": kappa, "n_raters": len(raters), "n_images_rated_by_all": len(common)},
    }


# ---------------------------------------------------------------------------- rendering


def _fmt_prop(p: dict) -> str:
    if p["estimate"] is None:
        return "n/a"
    return f"{p['estimate']:.3f} ({p['ci_low']:.3f}-{p['ci_high']:.3f}) [{p['k']}/{p['n']}]"


def _fmt_num(x, digits=3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _fmt_p(p) -> str:
    return "n/a" if p is None else (f"{p:.2e}" if p < 1e-3 else f"{p:.3f}")


def render_markdown(report: dict) -> str:
    s = report["study"]
    lines = [
        f"# {report['title']}: report",
        "",
        f"{s['n_images']} images ({s['n_real']} real, {s['n_synthetic']} synthetic), {len(s['raters'])} rater(s).",
        "Positive class: **synthetic**. Sensitivity = synthetic images called synthetic; specificity = real images",
        "called real. Intervals are exact (Clopper-Pearson) 95% binomial CIs; p is a two-sided exact binomial test",
        "of accuracy against chance (0.5); AUC is from the ROC of the 10-level rating",
        "(answer x confidence: sure real -5 .. sure synthetic +5).",
        "",
        "| rater | answered | accuracy (95% CI) [k/n] | sensitivity | specificity | p vs chance | AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [(r, report["raters"][r]) for r in s["raters"]] + [(f"**{POOLED}**", report[POOLED])]
    for name, m in rows:
        answered = f"{m['n_answers']}" if name.startswith("**") else f"{m['n_answers']}/{m['n_images']}"
        lines.append(
            f"| {name} | {answered} | {_fmt_prop(m['accuracy'])} | {_fmt_prop(m['sensitivity'])} | "
            f"{_fmt_prop(m['specificity'])} | {_fmt_p(m['chance_test_p'])} | {_fmt_num(m['roc']['auc'])} |"
        )
    agreement = report["agreement"]
    lines += ["", "## Inter-rater agreement", ""]
    if agreement["fleiss_kappa"] is None:
        why = "needs at least two raters who answered the same images" if agreement["n_raters"] < 2 or not agreement[
            "n_images_rated_by_all"] else "undefined: every answer was the same"
        lines.append(f"Fleiss' kappa: n/a ({why}).")
    else:
        lines.append(
            f"Fleiss' kappa = {agreement['fleiss_kappa']:.3f} over the {agreement['n_images_rated_by_all']} images "
            f"answered by all {agreement['n_raters']} raters (0 = chance agreement, 1 = perfect)."
        )
    pooled = report[POOLED]["accuracy"]
    lines += ["", "## Reading it", ""]
    if pooled["ci_low"] <= 0.5 <= pooled["ci_high"]:
        lines.append(
            "Pooled accuracy is not significantly different from chance: raters could not reliably tell real from "
            f"synthetic. This is not proof that the images are indistinguishable; the CI says that accuracy up to "
            f"{pooled['ci_high']:.3f} is consistent with these answers."
        )
    elif pooled["ci_low"] > 0.5:
        lines.append("Pooled accuracy is above chance: raters told real from synthetic images apart.")
    else:
        lines.append("Pooled accuracy is below chance: raters systematically took synthetic images for real and vice versa.")
    lines += [
        "",
        "Pooled figures treat every rating as independent; ratings of one image by several raters are correlated,",
        "so the pooled intervals are narrower than a multi-reader analysis would give. See `report.json` for every",
        "number and `report.png` for the ROC curves.",
        "",
    ]
    return "\n".join(lines)


def plot_report(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = report["study"]["raters"] + [POOLED]
    metrics = [report["raters"][n] for n in report["study"]["raters"]] + [report[POOLED]]
    fig, (ax_roc, ax_bar) = plt.subplots(1, 2, figsize=(11, 4.8))
    for name, m in zip(names, metrics):
        roc = m["roc"]
        if roc["auc"] is not None:
            style = dict(lw=2.5, color="black") if name == POOLED else dict(lw=1.2, alpha=0.8)
            ax_roc.plot(roc["fpr"], roc["tpr"], marker="o", ms=3, label=f"{name} (AUC {roc['auc']:.2f})", **style)
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax_roc.set(xlabel="1 - specificity (real called synthetic)", ylabel="sensitivity (synthetic called synthetic)",
               xlim=(0, 1), ylim=(0, 1.02), title="ROC from confidence ratings", aspect="equal")
    ax_roc.legend(fontsize=8, loc="lower right")
    keys = ["accuracy", "sensitivity", "specificity"]
    width = 0.8 / len(keys)
    x = np.arange(len(names))
    for j, key in enumerate(keys):
        est = np.array([np.nan if m[key]["estimate"] is None else m[key]["estimate"] for m in metrics])
        lo = np.array([m[key]["ci_low"] for m in metrics])
        hi = np.array([m[key]["ci_high"] for m in metrics])
        err = np.vstack([np.where(np.isnan(est), 0, est - lo), np.where(np.isnan(est), 0, hi - est)])
        ax_bar.bar(x + (j - 1) * width, np.nan_to_num(est), width, yerr=err, capsize=3, label=key)
    ax_bar.axhline(0.5, ls="--", color="grey", lw=1)
    ax_bar.set(xticks=x, ylim=(0, 1.18), yticks=np.linspace(0, 1, 6), ylabel="proportion (exact 95% CI)",
               title="Per rater and pooled (dashed: chance)")
    ax_bar.set_xticklabels(names, rotation=30, ha="right")
    ax_bar.legend(fontsize=8, loc="upper center", ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "png": out_dir / "report.png"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(render_markdown(report))
    plot_report(report, paths["png"])
    return paths

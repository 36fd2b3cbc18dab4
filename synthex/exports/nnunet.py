"""nnU-Net v2 raw dataset: ``DatasetXXX_Name/imagesTr/{case}_0000.png``,
``labelsTr/{case}.png`` and ``dataset.json`` (nnU-Net v2's documented schema:
``channel_names``, ``labels`` with consecutive values from 0 = background,
``numTraining``, ``file_ending``). Images are 16-bit PNGs of the [0, 1] image,
labels the exclusive uint8 label map (overlaps resolved by class order).
Cases are named ``{task}_{index:06d}``; ``subject_id`` per case goes to
``splits_by_subject.json``, and ``splits_final.json`` holds nnU-Net's cross-validation folds
(``[{"train": [...], "val": [...]}, ...]``, 5 folds or one per subject when fewer) with every
view of a subject in one fold, so that no fold validates on a subject it trained on. nnU-Net
reads it from its preprocessed folder: copy it to ``$nnUNet_preprocessed/DatasetXXX_Name/``
after ``nnUNetv2_plan_and_preprocess`` (nnU-Net would otherwise split cases at random).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from synthex.exports import ExportError, to_uint16

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


def dataset_json(ds, n: int) -> dict:
    return {
        "channel_names": {"0": "xray"},  # not "CT": nnU-Net then uses per-image z-score normalization
        "labels": {name: k for k, name in enumerate(ds.classes)},
        "numTraining": n,
        "file_ending": ".png",
        "overwrite_image_reader_writer": "NaturalImage2DIO",
        "name": f"synthex_{ds.manifest['task']}",
        "description": "synthetic X-ray images rendered by synthex (see DATASET_CARD.md)",
        "reference": "synthex",
        "licence": "see DATASET_CARD.md",
    }


def check_dataset_json(data: dict) -> None:
    """nnU-Net v2's documented dataset.json requirements; raises ExportError."""
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ExportError(f"dataset.json lacks {missing}")
    ch = data["channel_names"]
    if not ch or sorted(ch) != [str(i) for i in range(len(ch))]:
        raise ExportError("channel_names keys must be '0'..'C-1'")
    labels = data["labels"]
    if labels.get("background") != 0:
        raise ExportError("labels must map 'background' to 0")
    values = sorted(v for v in labels.values() if isinstance(v, int))
    if values != list(range(len(values))):
        raise ExportError(f"label values must be consecutive integers from 0, got {values}")
    if not isinstance(data["numTraining"], int) or data["numTraining"] < 1:
        raise ExportError("numTraining must be a positive integer")
    if not data["file_ending"].startswith("."):
        raise ExportError("file_ending must start with '.'")


def export_nnunet(ds, out: Path, dataset_id: int = 501, name: str | None = None, **options) -> Path:
    from PIL import Image

    if not 1 <= int(dataset_id) <= 999:
        raise ExportError(f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    name = name or f"Synthex{ds.manifest['task'].capitalize()}"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ExportError(f"dataset name {name!r} may contain letters, digits, '_' and '-' only")
    root = out / f"Dataset{int(dataset_id):03d}_{name}"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    subjects = {}
    n = 0
    for shard in ds.shards:
        with shard.open() as f:
            for j in range(shard.count):
                case = f"{ds.manifest['task']}_{int(f['sample_index'][j]):06d}"
                Image.fromarray(to_uint16(f["images"][j])).save(root / "imagesTr" / f"{case}_0000.png")
                Image.fromarray(f["labels"][j]).save(root / "labelsTr" / f"{case}.png")
                subjects[case] = int(f["subject_id"][j])
                n += 1
    data = dataset_json(ds, n)
    check_dataset_json(data)
    (root / "dataset.json").write_text(json.dumps(data, indent=2))
    (root / "splits_by_subject.json").write_text(json.dumps(subjects, indent=1))
    folds = subject_folds(subjects)
    if folds:
        (root / "splits_final.json").write_text(json.dumps(folds, indent=1))
    return root


def subject_folds(case_subject: dict[str, int], n_folds: int = 5) -> list[dict]:
    """nnU-Net folds grouped by subject: ``min(n_folds, n_subjects)`` folds; subjects go, largest
    first, to the fold with the fewest cases (deterministic). [] with fewer than 2 subjects."""
    by_subject: dict[int, list[str]] = {}
    for case, sid in sorted(case_subject.items()):
        by_subject.setdefault(sid, []).append(case)
    k = min(n_folds, len(by_subject))
    if k < 2:
        return []
    folds: list[list[str]] = [[] for _ in range(k)]
    for sid in sorted(by_subject, key=lambda s: (-len(by_subject[s]), s)):
        min(folds, key=len).extend(by_subject[sid])
    cases = sorted(case_subject)
    out = []
    for val in folds:
        held = set(val)
        out.append({"train": [c for c in cases if c not in held], "val": sorted(val)})
    return out

"""Exports of a synthex dataset to the formats other labs' tools read.

    from synthex.exports import export
    export("data/hip", "out/coco", "coco")        # coco | nnunet | deepfluoro | dicom | card

Each exporter is a registry entry ``EXPORTERS[name](dataset, out, **options) -> Path``
(the main file or folder written). Every export also writes the dataset card
(``DATASET_CARD.md``) next to what it wrote. The dataset's shards are verified
(sha256, identity) before anything is written, and a failed export removes what it wrote.
"""

from __future__ import annotations

import shutil
from pathlib import Path


class ExportError(ValueError):
    """An export that cannot be written (a clear, user-facing error)."""


def _registry() -> dict:
    from synthex.exports import card, coco, deepfluoro, dicom, nnunet

    return {
        "coco": coco.export_coco,
        "nnunet": nnunet.export_nnunet,
        "deepfluoro": deepfluoro.export_deepfluoro,
        "dicom": dicom.export_dicom,
        "card": card.export_card,
    }


FORMATS = ("coco", "nnunet", "deepfluoro", "dicom", "card")


def export(dataset, out, fmt: str, **options) -> Path:
    """Export ``dataset`` (a path or an open :class:`~synthex.dataset.Dataset`) to ``out`` as ``fmt``."""
    from synthex.dataset import Dataset, open_dataset
    from synthex.exports.card import export_card

    exporters = _registry()
    if fmt not in exporters:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {list(FORMATS)}")
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)  # opening verifies the shards
    if isinstance(dataset, Dataset):
        ds.verify()  # checksums and shard identity first: nothing is exported from a damaged dataset
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"export folder {out} is not empty; choose another --out")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create export folder {out}: {e.strerror}") from None
    try:
        result = exporters[fmt](ds, out, **options)
        if fmt != "card":
            export_card(ds, out, export_format=fmt)
    except BaseException:
        _clear(out, remove=created)  # never leave a partial export that looks complete
        raise
    return result


def _clear(out: Path, remove: bool) -> None:
    if remove:
        shutil.rmtree(out, ignore_errors=True)
        return
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def to_uint16(image):
    """[0, 1] float image -> uint16 (0..65535), rounded."""
    import numpy as np

    return (np.clip(image, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)

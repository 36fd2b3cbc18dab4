"""Readers of labelled X-ray image collections, behind one interface.

``open_source(path, format="auto")`` returns a :class:`~training.data.base.Source`
whatever the layout: a synthex dataset, COCO JSON, the DeepFluoro/SyntheX hip
HDF5 file, a folder of images + masks + landmark JSON, or SyntheX's per-index
layout (proj/ seg/ lands/). Add a layout with
:func:`register_reader`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .base import DataFormatError, Record, Source, concat_sources
from .coco import is_coco, read_coco
from .deepfluoro import is_deepfluoro, read_deepfluoro
from .folder import is_folder_dataset, read_folder
from .splits import SplitError, check_disjoint, split_by_subject
from .synthex_format import is_synthex_dataset, read_synthex
from .synthex_index import is_synthex_index, read_synthex_index


@dataclass(frozen=True)
class Reader:
    name: str
    detect: Callable[[Path], bool]
    read: Callable[..., Source]


READERS: dict[str, Reader] = {}


def register_reader(reader: Reader) -> None:
    READERS[reader.name] = reader


for _r in (Reader("synthex", is_synthex_dataset, read_synthex), Reader("coco", is_coco, read_coco),
           Reader("deepfluoro", is_deepfluoro, read_deepfluoro), Reader("folder", is_folder_dataset, read_folder),
           Reader("synthex-index", is_synthex_index, read_synthex_index)):
    register_reader(_r)


def open_source(path, format: str = "auto", **options) -> Source:
    """Open a labelled image collection; ``format`` is a key of :data:`READERS` or ``"auto"``."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"dataset {path} does not exist")
    if format == "auto":
        found = [r for r in READERS.values() if r.detect(path)]
        if not found:
            raise DataFormatError(
                f"cannot tell the format of {path}: expected a synthex dataset folder (manifest.json), a COCO "
                "JSON file, a DeepFluoro/SyntheX .h5 file (land-names group), a folder with dataset.json + "
                "images/ or SyntheX's per-index layout (proj/, seg/, lands/); pass format= to choose")
        reader = found[0]
    elif format in READERS:
        reader = READERS[format]
    else:
        raise DataFormatError(f"unknown dataset format {format!r}; known: {sorted(READERS)} or 'auto'")
    return reader.read(path, **options)


__all__ = ["READERS", "DataFormatError", "Reader", "Record", "Source", "SplitError", "check_disjoint",
           "concat_sources", "open_source", "register_reader", "split_by_subject"]

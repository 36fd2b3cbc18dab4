"""The synthex dataset format (v1): HDF5 shards + ``plan.json`` + ``manifest.json``.

    DATASET/plan.json          resolved config + seed, written before the first sample
    DATASET/shards/00000.h5    written as shards/.00000.h5.tmp, then renamed
    DATASET/preview.png        contact sheet with labels drawn
    DATASET/manifest.json      written last, atomically: its presence means "complete"

Reading:

    ds = open_dataset("data/hip")        # raises DatasetError if incomplete
    len(ds); ds.classes; ds.landmarks; ds.manifest
    s = ds[17]                           # dict: image, labels, masks, landmarks, ..., params (dict)
    for shard in ds.shards:              # lazily opened HDF5 files
        with shard.open() as f: images = f["images"][:]

``validate(path)`` checks checksums, counts, indices and label consistency;
``info(path)`` summarizes. The full field list is in docs/datasets.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "synthex-dataset"
FORMAT_VERSION = 2  # 2: ``images`` un-augmented, labels from projectors.labels (priority, then longest path)
CAMERA_MODEL = {
    "convention": "synthex",
    "world": "RAS mm",
    "note": "source at origin, +z to detector, u right, v down, pixel (0,0) = centre of top-left pixel",
}
SHARD_KEYS = (
    "images",
    "labels",
    "masks",
    "landmarks",
    "landmark_visible",
    "boxes",
    "K",
    "world_from_camera",
    "P",
    "sample_index",
    "subject_id",
    "params",
)
REQUIRED_KEYS = SHARD_KEYS


class DatasetError(ValueError):
    """A dataset folder that cannot be written or read (a clear, user-facing error)."""


# ---------------------------------------------------------------------------
# small atomic-file helpers


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def shard_name(k: int) -> str:
    return f"{k:05d}.h5"


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """(first_index, count) of each shard."""
    return [(first, min(shard_size, n - first)) for first in range(0, n, shard_size)]


# ---------------------------------------------------------------------------
# writing


def prepare_output(out, plan: dict, resume: bool) -> list[int]:
    """Create ``out`` and write ``plan.json`` (or, with ``resume``, check it
    matches). Returns the indices of shards already complete on disk."""
    from synthex.config import rendering_config

    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise DatasetError(f"output {out} exists and is not a folder")
        existing = out.is_dir() and any(out.iterdir())
        if existing and not resume:
            if (out / "manifest.json").exists():
                raise DatasetError(f"output {out} already holds a complete dataset; choose another --out")
            if (out / "plan.json").exists():
                raise DatasetError(
                    f"output {out} holds an unfinished dataset; continue it with --resume or choose another --out"
                )
            raise DatasetError(f"output folder {out} is not empty; choose another --out")
        (out / "shards").mkdir(parents=True, exist_ok=True)
        plan_path = out / "plan.json"
        if resume and plan_path.exists():
            old = json.loads(plan_path.read_text())
            if rendering_config(old.get("config", {})) != rendering_config(plan["config"]):
                raise DatasetError(
                    f"--resume: the config differs from the one {out} was started with (plan.json); "
                    "resume with the same config and flags, or choose another --out"
                )
            if (out / "manifest.json").exists():
                return list(range(len(shard_ranges(plan["config"]["n"], plan["config"]["dataset"]["shard_size"]))))
        else:
            write_json_atomic(plan_path, plan)
    except PermissionError as e:
        raise DatasetError(f"cannot write the dataset to {out}: permission denied ({e.filename})") from None
    except OSError as e:
        raise DatasetError(f"cannot write the dataset to {out}: {e.strerror} ({e.filename})") from None
    n_shards = len(shard_ranges(plan["config"]["n"], plan["config"]["dataset"]["shard_size"]))
    return [k for k in range(n_shards) if (out / "shards" / shard_name(k)).exists()]


def write_shard(path: Path, arrays: dict, first_index: int) -> None:
    """Write one shard to ``.NAME.tmp`` beside ``path``, fsync, and rename it into place."""
    import h5py

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["first_index"] = int(first_index)
        for key in SHARD_KEYS:
            if key not in arrays:
                continue
            if key == "params":
                f.create_dataset(key, data=np.array(arrays[key], dtype=object), dtype=h5py.string_dtype("utf-8"))
            elif key == "masks":
                f.create_dataset(
                    key, data=arrays[key], compression="gzip", compression_opts=4, chunks=(1,) + arrays[key].shape[1:]
                )
            else:
                f.create_dataset(key, data=arrays[key])
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


def build_manifest(out: Path, cfg) -> dict:
    """The manifest of a rendered dataset of ``cfg`` (a ``synthex.config.RenderConfig``)."""
    from synthex._version import __version__

    shards = []
    for k, (first, count) in enumerate(shard_ranges(cfg.n, cfg.dataset.shard_size)):
        p = out / "shards" / shard_name(k)
        if not p.exists():
            raise DatasetError(f"shard {p} is missing; continue the run with --resume")
        shards.append(
            {"file": f"shards/{shard_name(k)}", "sha256": sha256_file(p), "count": count, "first_index": first}
        )
    w, h = cfg.image.size
    subject_ids = {i // cfg.views.per_subject for i in range(cfg.n)}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "synthex_version": __version__,
        "task": cfg.task,
        "seed": cfg.seed,
        "config": cfg.to_json(),
        "image_size": [h, w],
        "pixel_size_mm": [cfg.pixel_size_mm, cfg.pixel_size_mm],
        "classes": ["background"] + list(cfg.classes),
        "landmarks": list(cfg.landmarks),
        "camera_model": CAMERA_MODEL,
        "shards": shards,
        "counts": {"images": cfg.n, "subjects": len(subject_ids)},
    }


def finalize(out, cfg) -> dict:
    """Write preview.png, then manifest.json (last, atomically)."""
    out = Path(out)
    manifest = build_manifest(out, cfg)
    write_preview(out, manifest)
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


# ---------------------------------------------------------------------------
# reading


@dataclass
class Shard:
    path: Path
    first_index: int
    count: int
    sha256: str

    @contextmanager
    def open(self):
        import h5py

        with h5py.File(self.path, "r") as f:
            yield f

    def read(self, key: str, index=slice(None)):
        with self.open() as f:
            return f[key][index]


@dataclass
class Dataset:
    """A complete dataset; shards are opened on access."""

    path: Path
    manifest: dict
    shards: list[Shard] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def landmarks(self) -> list[str]:
        return self.manifest["landmarks"]

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    def __len__(self) -> int:
        return sum(s.count for s in self.shards)

    def locate(self, index: int) -> tuple[Shard, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} outside 0..{len(self) - 1}")
        for s in self.shards:
            if s.first_index <= index < s.first_index + s.count:
                return s, index - s.first_index
        raise IndexError(index)  # pragma: no cover - shards cover 0..n-1 (validate checks it)

    def __getitem__(self, index: int) -> dict:
        shard, j = self.locate(int(index))
        with shard.open() as f:
            out = {k: f[k][j] for k in f if k != "params"}
            out["params"] = json.loads(_text(f["params"][j]))
        out["image"] = out.pop("images")
        return out

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def read_all(self, key: str) -> np.ndarray:
        """One field of every sample, concatenated in index order."""
        parts = [s.read(key) for s in self.shards]
        return np.concatenate(parts) if parts else np.zeros(0)


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def read_manifest(path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"no dataset at {path}: not a folder")
    mpath = path / "manifest.json"
    if not mpath.exists():
        if (path / "plan.json").exists():
            raise DatasetError(
                f"dataset {path} is incomplete (no manifest.json): the run was interrupted; "
                "continue it with `synthex render --resume --out {path}` and the same config"
            )
        raise DatasetError(f"{path} is not a synthex dataset (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{mpath} is not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{mpath}: format is {manifest.get('format')!r}, not {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{mpath}: format_version {manifest.get('format_version')!r}; this synthex reads version {FORMAT_VERSION}"
        )
    return manifest


def open_dataset(path) -> Dataset:
    """Open a complete dataset (manifest present); shards are read lazily."""
    path = Path(path)
    manifest = read_manifest(path)
    shards = [Shard(path / s["file"], int(s["first_index"]), int(s["count"]), s["sha256"]) for s in manifest["shards"]]
    for s in shards:
        if not s.path.exists():
            raise DatasetError(f"dataset {path}: shard {s.path} listed in manifest.json is missing")
    return Dataset(path, manifest, shards)


# ---------------------------------------------------------------------------
# validate / info


@dataclass
class ValidationReport:
    path: Path
    errors: list[str] = field(default_factory=list)
    samples_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def _labels_agree(labels: np.ndarray, masks: np.ndarray) -> bool:
    """The label map picks, at each pixel, one of the classes whose mask covers it (0 where none does)."""
    covered = masks.any(axis=0)
    if not np.array_equal(labels > 0, covered):
        return False
    lab = labels.astype(np.int64)
    return bool(np.all(np.take_along_axis(masks, np.clip(lab - 1, 0, None)[None], axis=0)[0][covered] > 0))


def validate(path, check_labels: bool = True) -> ValidationReport:
    """Check a dataset: manifest, shard checksums, shapes, indices 0..n-1 exactly
    once, labels vs masks, boxes vs masks, landmark visibility, image range."""
    from projectors.labels import bounding_box, in_image

    report = ValidationReport(Path(path))
    try:
        ds = open_dataset(path)
    except DatasetError as e:
        report.errors.append(str(e))
        return report
    m = ds.manifest
    H, W = m["image_size"]
    C, L = len(m["classes"]) - 1, len(m["landmarks"])
    seen = []
    for s in ds.shards:
        name = s.path.name
        if sha256_file(s.path) != s.sha256:
            report.errors.append(f"{name}: sha256 differs from manifest.json (file changed or corrupt)")
            continue
        with s.open() as f:
            missing = [k for k in REQUIRED_KEYS if k not in f]
            if missing:
                report.errors.append(f"{name}: missing datasets {missing}")
                continue
            n = s.count
            shapes = {
                "images": (n, H, W),
                "labels": (n, H, W),
                "masks": (n, C, H, W),
                "landmarks": (n, L, 2),
                "landmark_visible": (n, L),
                "boxes": (n, C, 4),
                "K": (n, 3, 3),
                "world_from_camera": (n, 4, 4),
                "P": (n, 3, 4),
                "sample_index": (n,),
                "subject_id": (n,),
                "params": (n,),
            }
            bad = [f"{k} {f[k].shape} != {v}" for k, v in shapes.items() if f[k].shape != v]
            if bad:
                report.errors.append(f"{name}: wrong shapes: {'; '.join(bad)}")
                continue
            idx = f["sample_index"][:]
            seen.extend(idx.tolist())
            if not np.array_equal(idx, np.arange(s.first_index, s.first_index + n)):
                report.errors.append(f"{name}: sample_index is not {s.first_index}..{s.first_index + n - 1}")
            images = f["images"][:]
            if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1:
                report.errors.append(f"{name}: images outside [0, 1] or not finite")
            if not check_labels:
                continue
            labels, masks = f["labels"][:], f["masks"][:]
            lms, vis, boxes = f["landmarks"][:], f["landmark_visible"][:], f["boxes"][:]
            for j in range(n):
                i = int(idx[j])
                if not _labels_agree(labels[j], masks[j]):
                    report.errors.append(f"sample {i}: labels disagree with masks (a label's class must cover "
                                         "its pixel; a pixel covered by any class must be labelled)")
                expect_boxes = np.array([bounding_box(mk) or (np.nan,) * 4 for mk in masks[j]]).reshape(C, 4)
                if not np.allclose(boxes[j], expect_boxes, equal_nan=True):
                    report.errors.append(f"sample {i}: boxes do not enclose the masks")
                expect = in_image(lms[j], W, H)
                if not np.array_equal(vis[j].astype(bool), expect):
                    report.errors.append(f"sample {i}: landmark_visible disagrees with the landmark positions")
                try:
                    rec = json.loads(_text(f["params"][j]))
                    if rec.get("index") != i:
                        report.errors.append(f"sample {i}: params record is for index {rec.get('index')}")
                except json.JSONDecodeError:
                    report.errors.append(f"sample {i}: params is not JSON")
            report.samples_checked += n
    expected = m["counts"]["images"]
    if sorted(seen) != list(range(expected)) and not any("sha256" in e or "missing" in e for e in report.errors):
        report.errors.append(f"samples are not exactly 0..{expected - 1} once each ({len(seen)} found)")
    return report


def info(path) -> dict:
    """A summary of a dataset (counts, classes, size, label frequencies of the first shard)."""
    ds = open_dataset(path)
    m = ds.manifest
    size = sum(s.path.stat().st_size for s in ds.shards)
    first = ds.shards[0]
    with first.open() as f:
        masks = f["masks"][:]
        vis = f["landmark_visible"][:]
    cover = masks.mean(axis=(0, 2, 3)) if masks.size else np.zeros(0)
    return {
        "path": str(ds.path),
        "task": m["task"],
        "format_version": m["format_version"],
        "synthex_version": m["synthex_version"],
        "seed": m["seed"],
        "images": len(ds),
        "subjects": m["counts"]["subjects"],
        "image_size": m["image_size"],
        "pixel_size_mm": m["pixel_size_mm"],
        "classes": m["classes"],
        "landmarks": m["landmarks"],
        "shards": len(ds.shards),
        "bytes": size,
        "physics_model": m["config"]["physics"]["model"],
        "class_pixel_fraction_first_shard": {c: float(v) for c, v in zip(m["classes"][1:], cover)},
        "landmark_visible_fraction_first_shard": float(vis.mean()) if vis.size else None,
    }


# ---------------------------------------------------------------------------
# preview

PALETTE = (
    np.array(
        [
            [230, 25, 75],
            [60, 180, 75],
            [255, 225, 25],
            [0, 130, 200],
            [245, 130, 48],
            [145, 30, 180],
            [70, 240, 240],
            [240, 50, 230],
            [210, 245, 60],
            [250, 190, 212],
        ],
        dtype=np.float32,
    )
    / 255.0
)


def overlay(image: np.ndarray, labels: np.ndarray, landmarks: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3): the image with label colours blended in and visible landmarks as crosses."""
    rgb = np.repeat(image[..., None], 3, axis=-1).astype(np.float32)
    for c in range(1, int(labels.max()) + 1 if labels.size else 1):
        m = labels == c
        rgb[m] = 0.6 * rgb[m] + 0.4 * PALETTE[(c - 1) % len(PALETTE)]
    h, w = image.shape
    for (u, v), ok in zip(landmarks, visible):
        if ok:
            cu, cv = int(round(float(u))), int(round(float(v)))
            for d in range(-2, 3):
                for y, x in ((cv + d, cu), (cv, cu + d)):
                    if 0 <= y < h and 0 <= x < w:
                        rgb[y, x] = (1.0, 1.0, 1.0)
    return rgb


def write_preview(out: Path, manifest: dict, count: int = 8) -> None:
    from synthex.io_images import save_png

    first = Path(out) / manifest["shards"][0]["file"]
    import h5py

    with h5py.File(first, "r") as f:
        k = min(count, f["images"].shape[0])
        tiles = [overlay(f["images"][j], f["labels"][j], f["landmarks"][j], f["landmark_visible"][j]) for j in range(k)]
    h = tiles[0].shape[0]
    gap = np.ones((h, 4, 3), dtype=np.float32)
    row = [t for tile in tiles for t in (tile, gap)][:-1]
    save_png(Path(out) / "preview.png", np.concatenate(row, axis=1))

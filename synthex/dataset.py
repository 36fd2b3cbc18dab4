"""The synthex dataset format (version 2): HDF5 shards + ``plan.json`` + ``manifest.json``.

    DATASET/plan.json          resolved config + seed + plan_id, written before the first sample
    DATASET/shards/00000.h5    written as shards/.00000.h5.tmp, then renamed
    DATASET/checksums.json     sha256 of each shard, recorded when the shard is written
    DATASET/preview.png        contact sheet with labels drawn
    DATASET/manifest.json      written last, atomically: its presence means "complete"

Reading:

    ds = open_dataset("data/hip")        # raises DatasetError if incomplete
    len(ds); ds.classes; ds.landmarks; ds.manifest
    s = ds[17]                           # dict: image, labels, masks, landmarks, ..., params (dict)
    for shard in ds.shards:              # lazily opened HDF5 files
        with shard.open() as f: images = f["images"][:]

``validate(path)`` checks checksums, counts, indices and label consistency;
``info(path)`` summarizes. Every array and manifest field is described in the docs
(``docs/datasets.md``, "Dataset layout").

Nothing on disk is trusted: ``manifest.json`` is checked against a schema (one
:class:`DatasetError` for anything malformed), shard paths must stay inside the
dataset folder (no absolute paths, ``..`` or symlinks out), and every reader
verifies each shard's sha256 and identity (``plan_id``, ``first_index``,
``sample_index``) before the first sample is returned. A shard's checksum is
recorded in ``checksums.json`` when the shard is written, so ``--resume`` never
blesses a shard that was damaged or replaced afterwards: it renders it again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

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
    "field",
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
CHECKSUMS = "checksums.json"
CHECKSUMS_FORMAT = "synthex-shard-checksums/1"
LOCK_NAME = ".synthex.lock"
# files and folders a render writes into its output folder (anything else there is the user's)
OWN_NAMES = {"plan.json", CHECKSUMS, "shards", "manifest.json", "preview.png", LOCK_NAME}
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# the largest sane values of manifest counts (a manifest claiming more is refused before anything is allocated)
MAX_IMAGES = 10**9
MAX_PIXELS = 1 << 26  # 8192 x 8192


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


def write_json_atomic(path: Path, data, default=None) -> None:
    """Write JSON durably: a hidden temporary file, fsynced, renamed over ``path``, the folder fsynced.
    ``default``: json's encoder for objects it does not know (e.g. ``str``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=default)
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


def plan_id(cfg) -> str:
    """Identity of a run: sha256 of what its resolved config renders (canonical JSON, runtime keys
    such as workers and device left out). Written into plan.json, every shard (attribute
    ``plan_id``) and manifest.json, so that a shard of another dataset is recognized."""
    from synthex.config import rendering_config

    text = json.dumps(rendering_config(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def member_path(root, rel, what: str = "shard") -> Path:
    """``root / rel`` for a path listed in a dataset file, refused unless it stays inside ``root``:
    relative, POSIX, no ``..``, and no symlink (of the file or a folder on the way) leading out."""
    root = Path(root)
    if not isinstance(rel, str) or not rel.strip():
        raise DatasetError(f"{root}: a {what} path must be a non-empty string, got {rel!r}")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or "\\" in rel or re.match(r"^[A-Za-z]:", rel) or any(p in ("..", "") for p in pure.parts):
        raise DatasetError(
            f"{root}: {what} path {rel!r} points outside the dataset folder (absolute or with '..'); "
            "a dataset lists its files relative to its folder"
        )
    path = root.joinpath(*pure.parts)
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise DatasetError(f"{root}: {what} path {rel!r} cannot be resolved ({e})") from None
    if not inside:
        raise DatasetError(f"{root}: {what} {rel!r} is a symlink (or lies under one) that leads out of the dataset folder")
    return path


def read_checksums(out) -> dict:
    """``{"shards/00000.h5": sha256}`` recorded as shards were written ({} when there is no record)."""
    path = Path(out) / CHECKSUMS
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable ({e}); delete it and run `synthex render --resume` to re-render") from None
    shards = data.get("shards") if isinstance(data, dict) else None
    if data.get("format") != CHECKSUMS_FORMAT or not isinstance(shards, dict):
        raise DatasetError(f"{path}: not a synthex checksum record ({CHECKSUMS_FORMAT})")
    return {k: v for k, v in shards.items() if isinstance(k, str) and isinstance(v, str) and SHA256.match(v)}


def record_checksum(out, rel: str, sha: str) -> None:
    """Add one shard's sha256 to ``checksums.json`` (rewritten atomically; one writer, under the lock)."""
    shards = read_checksums(out)
    shards[rel] = sha
    write_json_atomic(Path(out) / CHECKSUMS, {"format": CHECKSUMS_FORMAT, "shards": dict(sorted(shards.items()))})


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """(first_index, count) of each shard."""
    return [(first, min(shard_size, n - first)) for first in range(0, n, shard_size)]


# ---------------------------------------------------------------------------
# writing


def prepare_output(out, plan: dict, resume: bool) -> list[int]:
    """Write ``plan.json`` into the (existing, locked) folder ``out`` or, with ``resume``, check it
    matches. Returns the indices of shards already complete: on disk, and with the sha256 recorded
    when they were written. Anything else in ``shards/`` (a damaged, foreign or unrecorded shard,
    a partial ``.tmp``) is removed, to be rendered again."""
    from synthex.config import rendering_config

    out = Path(out)
    n_shards = len(plan["shards"])
    try:
        plan_path = out / "plan.json"
        theirs = sorted(p.name for p in out.iterdir() if not _own(p.name))
        if theirs and not plan_path.exists():
            raise DatasetError(f"output folder {out} is not empty ({', '.join(theirs[:3])}); choose another --out")
        if plan_path.exists():
            try:
                old = json.loads(plan_path.read_text())
                old_cfg = old["config"]
                same = rendering_config(old_cfg) == rendering_config(plan["config"])
            except (ValueError, KeyError, TypeError, AttributeError):
                old, same = None, False
            if old is None:
                if resume:
                    raise DatasetError(f"{plan_path} is damaged (not a synthex plan); choose another --out")
            elif resume and not same:
                raise DatasetError(
                    f"--resume: the config differs from the one {out} was started with (plan.json); "
                    "resume with the same config and flags, or choose another --out"
                )
            if not resume:
                if (out / "manifest.json").exists():
                    raise DatasetError(f"output {out} already holds a complete dataset; choose another --out")
                kept = len(_complete_shards(out, len(old.get("shards") or []) if isinstance(old, dict) else 0))
                if kept:
                    raise DatasetError(
                        f"output {out} holds an unfinished dataset ({kept} shards complete); continue it with "
                        "--resume (same config) or choose another --out"
                    )
                # an unfinished run that completed no shard (e.g. it failed on its first sample): start afresh
                _remove_own_files(out)
        elif resume and (out / "shards").exists():
            raise DatasetError(f"--resume: {out} has no plan.json; it was not started by synthex render")
        (out / "shards").mkdir(exist_ok=True)
        if not plan_path.exists():
            write_json_atomic(plan_path, plan)
        elif resume:
            old_plan = json.loads(plan_path.read_text())
            if old_plan.get("plan_id") != plan["plan_id"]:  # a plan written by an older synthex: record the id
                write_json_atomic(plan_path, {**old_plan, "plan_id": plan["plan_id"]})
        done = _complete_shards(out, n_shards, clean=True)
        if len(done) < n_shards and (out / "manifest.json").exists():
            (out / "manifest.json").unlink()  # a shard will be rendered again: the dataset is not complete
    except PermissionError as e:
        raise DatasetError(f"cannot write the dataset to {out}: permission denied ({e.filename})") from None
    except OSError as e:
        raise DatasetError(f"cannot write the dataset to {out}: {e.strerror} ({e.filename})") from None
    return done


def _complete_shards(out: Path, n_shards: int, clean: bool = False) -> list[int]:
    """Shards on disk whose sha256 is the one recorded when they were written (and, for datasets
    from before the record existed, the one in manifest.json). With ``clean``, delete the rest."""
    recorded = read_checksums(out)
    if not recorded and (out / "manifest.json").exists():
        try:
            m = json.loads((out / "manifest.json").read_text())
            recorded = {e["file"]: e["sha256"] for e in m["shards"]}
        except (ValueError, KeyError, TypeError):
            recorded = {}
    done, shards = [], out / "shards"
    if not shards.is_dir():
        return done
    for path in sorted(shards.iterdir()):
        rel = f"shards/{path.name}"
        m = re.fullmatch(r"(\d{5})\.h5", path.name)
        k = int(m.group(1)) if m else -1
        ok = (
            0 <= k < n_shards
            and path.is_file()
            and not path.is_symlink()
            and rel in recorded
            and sha256_file(path) == recorded[rel]
        )
        if ok:
            done.append(k)
        elif clean:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    return done


def _own(name: str) -> bool:
    """A file or folder a render writes into its output folder (or its atomic-write temporary)."""
    return name in OWN_NAMES or (name.startswith(".") and name.endswith(".tmp") and name[1:-4] in OWN_NAMES)


def _remove_own_files(out: Path) -> None:
    """Delete what a render wrote into ``out`` (not the lock, not the user's files)."""
    for name in OWN_NAMES - {LOCK_NAME}:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    for p in out.glob(".*.tmp"):
        if _own(p.name):
            p.unlink()


def write_shard(path: Path, arrays: dict, first_index: int, pid: str | None = None, out=None) -> str:
    """Write one shard to ``.NAME.tmp`` beside ``path``, fsync, record its sha256 in ``out``'s
    ``checksums.json`` (when ``out`` is given) and only then rename it into place, so that no
    complete shard is ever without its record. Returns the sha256."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _write_h5(tmp, arrays, first_index, pid)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        sha = sha256_file(tmp)
        if out is not None:
            record_checksum(out, path.relative_to(out).as_posix(), sha)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a partial file (disk full, interrupted)
        raise
    _fsync_dir(path.parent)
    return sha


def _write_h5(tmp: Path, arrays: dict, first_index: int, pid: str | None) -> None:
    import h5py

    with h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["first_index"] = int(first_index)
        if pid:
            f.attrs["plan_id"] = pid
        for key in SHARD_KEYS:
            if key not in arrays:
                continue
            if key == "params":
                f.create_dataset(key, data=np.array(arrays[key], dtype=object), dtype=h5py.string_dtype("utf-8"))
            elif key in ("masks", "field"):  # sparse binary images: compressed
                f.create_dataset(
                    key, data=arrays[key], compression="gzip", compression_opts=4, chunks=(1,) + arrays[key].shape[1:]
                )
            else:
                f.create_dataset(key, data=arrays[key])


def build_manifest(out: Path, cfg) -> dict:
    """The manifest of a rendered dataset of ``cfg`` (a ``synthex.config.RenderConfig``)."""
    from synthex._version import __version__

    shards = []
    recorded = read_checksums(out)
    for k, (first, count) in enumerate(shard_ranges(cfg.n, cfg.dataset.shard_size)):
        rel = f"shards/{shard_name(k)}"
        p = out / rel
        if not p.exists():
            raise DatasetError(f"shard {p} is missing; continue the run with --resume")
        if rel not in recorded or sha256_file(p) != recorded[rel]:
            raise DatasetError(
                f"shard {p} changed after it was written (its sha256 is not the one recorded in {CHECKSUMS}); "
                "run the same command with --resume to render it again"
            )
        shards.append({"file": rel, "sha256": recorded[rel], "count": count, "first_index": first})
    w, h = cfg.image_size
    subject_ids = {i // cfg.views.per_subject for i in range(cfg.n)}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "synthex_version": __version__,
        "task": cfg.task,
        "seed": cfg.seed,
        "plan_id": plan_id(cfg),
        "config": cfg.to_json(),
        "image_size": [h, w],
        "pixel_size_mm": list(cfg.pixel_size_mm),
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


# sha256 of shards verified in this process, by (path, inode, size, mtime): a reader that opens a
# dataset twice hashes it once; a file changed in between has a new mtime and is hashed again
_VERIFIED: dict[tuple, str] = {}


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

    def verify(self, plan_id: str | None = None) -> None:
        """Raise :class:`DatasetError` unless the file is the one the manifest lists: its sha256,
        and inside it ``first_index``, ``sample_index`` and (when recorded) ``plan_id``."""
        st = self.path.stat()
        key = (str(self.path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
        sha = _VERIFIED.get(key) or sha256_file(self.path)
        if sha != self.sha256:
            raise DatasetError(
                f"shard {self.path}: sha256 differs from manifest.json ({self.path.name} is corrupt: damaged or replaced) "
                f"(re-render it: `synthex render --resume --out {self.path.parent.parent}` with the dataset's config)"
            )
        try:
            with self.open() as f:
                ok = "sample_index" in f and f["sample_index"].shape == (self.count,)
                if ok:
                    idx = f["sample_index"][:]
                    ok = np.array_equal(idx, np.arange(self.first_index, self.first_index + self.count))
                    ok = ok and int(f.attrs.get("first_index", self.first_index)) == self.first_index
                own = f.attrs.get("plan_id")
        except OSError as e:
            raise DatasetError(f"shard {self.path} cannot be read as HDF5 ({e}); it is damaged") from None
        if not ok:
            raise DatasetError(
                f"shard {self.path} does not hold samples {self.first_index}..{self.first_index + self.count - 1} "
                "as manifest.json says (a shard of another position or dataset)"
            )
        if plan_id and own is not None and _text(own) != plan_id:
            raise DatasetError(f"shard {self.path} belongs to another dataset (its plan_id differs from manifest.json)")
        _VERIFIED[key] = sha


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

    def verify(self) -> None:
        """Check every shard against the manifest (see :meth:`Shard.verify`); one DatasetError."""
        for s in self.shards:
            s.verify(self.manifest.get("plan_id"))

    def __len__(self) -> int:
        return sum(s.count for s in self.shards)

    def locate(self, index: int) -> tuple[Shard, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} outside 0..{len(self) - 1}")
        for s in self.shards:
            if s.first_index <= index < s.first_index + s.count:
                return s, index - s.first_index
        raise IndexError(index)  # pragma: no cover - shards cover 0..n-1 (read_manifest checks it)

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
                f"continue it with `synthex render --resume --out {path}` and the same config"
            )
        raise DatasetError(f"{path} is not a synthex dataset (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{mpath} is not valid JSON: {e}") from None
    except OSError as e:
        raise DatasetError(f"{mpath} cannot be read: {e.strerror}") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{mpath}: must hold a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{mpath}: format is {manifest.get('format')!r}, not {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{mpath}: format_version {manifest.get('format_version')!r}; this synthex reads version {FORMAT_VERSION}"
        )
    check_manifest(manifest, mpath)
    return manifest


def _is_int(v, lo: int = 0, hi: int = MAX_IMAGES) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_manifest(m: dict, where) -> None:
    """The manifest's schema, before anything is allocated from it: one DatasetError naming the entry."""

    def bad(entry: str, why: str):
        raise DatasetError(f"{where}: '{entry}' {why}")

    for key, kind in (("shards", list), ("counts", dict), ("classes", list), ("landmarks", list),
                      ("image_size", list), ("config", dict)):
        if key not in m:
            bad(key, "is missing")
        if not isinstance(m[key], kind):
            bad(key, f"must be a JSON {'array' if kind is list else 'object'}, got {type(m[key]).__name__}")
    size = m["image_size"]
    if len(size) != 2 or not all(_is_int(v, 1, MAX_PIXELS) for v in size) or size[0] * size[1] > MAX_PIXELS:
        bad("image_size", f"must be [height, width] of positive integers (at most {MAX_PIXELS} pixels), got {size}")
    if not m["classes"] or not all(isinstance(c, str) for c in m["classes"]) or m["classes"][0] != "background":
        bad("classes", "must be a list of names starting with 'background'")
    if len(m["classes"]) > 255:
        bad("classes", f"has {len(m['classes'])} entries; a uint8 label map holds at most 255")
    if not all(isinstance(c, str) for c in m["landmarks"]) or len(m["landmarks"]) > 10_000:
        bad("landmarks", "must be a list of names")
    pitch = m.get("pixel_size_mm")
    if pitch is not None and not (
        isinstance(pitch, list) and len(pitch) == 2
        and all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p > 0 for p in pitch)
    ):
        bad("pixel_size_mm", f"must be [du, dv] in mm, two positive numbers, got {pitch!r}")
    if not m["shards"]:
        bad("shards", "is empty")
    nxt = 0
    for k, e in enumerate(m["shards"]):
        entry = f"shards[{k}]"
        if not isinstance(e, dict):
            bad(entry, "must be an object with file, sha256, count and first_index")
        for key in ("file", "sha256", "count", "first_index"):
            if key not in e:
                bad(entry, f"lacks '{key}'")
        if not isinstance(e["sha256"], str) or not SHA256.match(e["sha256"]):
            bad(f"{entry}.sha256", "must be 64 lowercase hex digits")
        if not _is_int(e["count"], 1):
            bad(f"{entry}.count", f"must be a positive integer (at most {MAX_IMAGES}), got {e['count']!r}")
        if not _is_int(e["first_index"]) or e["first_index"] != nxt:
            bad(f"{entry}.first_index", f"must be {nxt} (shards list samples 0..n-1 in order), got {e['first_index']!r}")
        nxt += e["count"]
    counts = m["counts"]
    images = counts.get("images")
    if not _is_int(images, 1):
        bad("counts.images", f"must be a positive integer (at most {MAX_IMAGES}), got {images!r}")
    if images != nxt:
        bad("counts.images", f"is {images} but the shards hold {nxt} samples")
    if "subjects" in counts and not _is_int(counts["subjects"], 0, images):
        bad("counts.subjects", f"must be an integer 0..{images}, got {counts['subjects']!r}")
    files = [e["file"] for e in m["shards"]]
    if len(set(files)) != len(files):
        bad("shards", "lists one file twice")


def open_dataset(path, verify: bool = True) -> Dataset:
    """Open a complete dataset (manifest present). With ``verify`` (default), every shard's sha256
    and identity are checked first (see :meth:`Dataset.verify`); shards are then read lazily."""
    path = Path(path)
    manifest = read_manifest(path)
    shards = [
        Shard(member_path(path, s["file"]), int(s["first_index"]), int(s["count"]), s["sha256"])
        for s in manifest["shards"]
    ]
    for s in shards:
        if not s.path.is_file():
            raise DatasetError(f"dataset {path}: shard {s.path} listed in manifest.json is missing")
    ds = Dataset(path, manifest, shards)
    if verify:
        ds.verify()
    return ds


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


def validate(path, check_labels: bool = True) -> ValidationReport:
    """Check a dataset: manifest, shard checksums (against manifest.json and the record made when
    each shard was written), shapes, indices 0..n-1 exactly once, labels vs masks, boxes vs masks,
    landmark visibility, image range. Problems are collected, never raised."""
    report = ValidationReport(Path(path))
    try:
        ds = open_dataset(path, verify=False)
        recorded = read_checksums(path)
    except DatasetError as e:
        report.errors.append(str(e))
        return report
    for s in ds.shards:
        rel = s.path.relative_to(ds.path).as_posix()
        if rel in recorded and recorded[rel] != s.sha256:
            report.errors.append(
                f"{s.path.name}: manifest.json lists a sha256 that differs from the one recorded when the shard "
                f"was written ({CHECKSUMS}); the manifest blesses a changed shard"
            )
            continue
        try:
            s.verify(ds.manifest.get("plan_id"))
            _validate_shard(ds, s, report, check_labels)
        except DatasetError as e:
            report.errors.append(str(e).replace(str(s.path), s.path.name))
        except (OSError, KeyError, ValueError, TypeError) as e:
            report.errors.append(f"{s.path.name}: unreadable ({type(e).__name__}: {e})")
    return report


def _labels_agree(labels: np.ndarray, masks: np.ndarray) -> bool:
    """The label map picks, at each pixel, one of the classes whose mask covers it (0 where none does)."""
    covered = masks.any(axis=0)
    if not np.array_equal(labels > 0, covered):
        return False
    lab = labels.astype(np.int64)
    return bool(np.all(np.take_along_axis(masks, np.clip(lab - 1, 0, None)[None], axis=0)[0][covered] > 0))


def _validate_shard(ds: Dataset, s: Shard, report: ValidationReport, check_labels: bool) -> None:
    from projectors.labels import bounding_box, in_field

    m = ds.manifest
    H, W = m["image_size"]
    C, L = len(m["classes"]) - 1, len(m["landmarks"])
    name = s.path.name
    with s.open() as f:
        missing = [k for k in REQUIRED_KEYS if k not in f]
        if missing:
            report.errors.append(f"{name}: missing datasets {missing}")
            return
        n = s.count
        shapes = {
            "images": (n, H, W),
            "field": (n, H, W),
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
            return
        idx = f["sample_index"][:]
        images = f["images"][:]
        if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1:
            report.errors.append(f"{name}: images outside [0, 1] or not finite")
        if not check_labels:
            report.samples_checked += n
            return
        labels, masks = f["labels"][:], f["masks"][:]
        lms, vis, boxes = f["landmarks"][:], f["landmark_visible"][:], f["boxes"][:]
        field = f["field"][:]
        for j in range(n):
            i = int(idx[j])
            if not _labels_agree(labels[j], masks[j]):
                report.errors.append(f"sample {i}: labels disagree with masks (a label's class must cover "
                                     "its pixel; a pixel covered by any class must be labelled)")
            expect_boxes = np.array([bounding_box(mk) or (np.nan,) * 4 for mk in masks[j]]).reshape(C, 4)
            if not np.allclose(boxes[j], expect_boxes, equal_nan=True):
                report.errors.append(f"sample {i}: boxes do not enclose the masks")
            expect = in_field(lms[j], field[j])
            if np.any(masks[j][:, field[j] == 0]):
                report.errors.append(f"sample {i}: masks cover pixels behind the collimator (outside field)")
            if not np.array_equal(vis[j].astype(bool), expect):
                report.errors.append(f"sample {i}: landmark_visible disagrees with the landmark positions")
            try:
                rec = json.loads(_text(f["params"][j]))
                if rec.get("index") != i:
                    report.errors.append(f"sample {i}: params record is for index {rec.get('index')}")
            except (json.JSONDecodeError, AttributeError):
                report.errors.append(f"sample {i}: params is not a JSON object")
        report.samples_checked += n


def info(path) -> dict:
    """A summary of a dataset (counts, classes, size, label frequencies of the first shard)."""
    ds = open_dataset(path)  # verified: a summary of a damaged dataset would mislead
    try:
        return _info(ds)
    except (KeyError, TypeError, AttributeError) as e:
        raise DatasetError(f"{ds.path / 'manifest.json'}: malformed config entry ({type(e).__name__}: {e})") from None


def _info(ds: Dataset) -> dict:
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
    """``preview.png``: up to ``count`` images spread over the dataset (so several subjects show), each
    above its labels (colours) and visible landmarks (crosses)."""
    import h5py

    from synthex.io_images import save_png

    n = int(manifest["counts"]["images"])
    wanted = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(count, n))})
    columns = []
    for s in manifest["shards"]:
        first, size = int(s["first_index"]), int(s["count"])
        rows = [i - first for i in wanted if first <= i < first + size]
        if not rows:
            continue
        with h5py.File(member_path(out, s["file"]), "r") as f:
            for j in rows:
                image = f["images"][j]
                columns.append(np.concatenate([
                    np.repeat(image[..., None], 3, axis=-1).astype(np.float32),
                    np.ones((4, image.shape[1], 3), np.float32),
                    overlay(image, f["labels"][j], f["landmarks"][j], f["landmark_visible"][j]),
                ], axis=0))
    gap = np.ones((columns[0].shape[0], 4, 3), dtype=np.float32)
    row = [c for col in columns for c in (col, gap)][:-1]
    save_png(Path(out) / "preview.png", np.concatenate(row, axis=1))

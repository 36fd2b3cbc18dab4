"""Creating and opening a blinded study.

A study folder holds only what the web app may serve, plus the answers::

    STUDY/study.json        title, answer locking, the opaque image ids (sorted), a salt for
                            per-rater presentation orders; no labels, no sources
    STUDY/images/<id>.png   re-encoded images: pixels only (IHDR, IDAT, IEND chunks), no metadata
    STUDY/answers.sqlite    written by ``synthex vtt serve``
    STUDY/key.json          id -> label (real | synthetic) and original source; never served.
                            ``--key`` puts it elsewhere (e.g. off the machine that serves).

Ids are 16 random hex digits from :mod:`secrets` (unpredictable, unrelated to the seed or the
source); the seed only decides *which* images are drawn, so the sample is reproducible. Images
are written in shuffled order, so file times do not group them either. Every image, real or
synthetic, is stored after its display window (see :mod:`synthex.vtt.sources`) and then one
normalization to a common size, bit depth and grey-level structure (see
:mod:`synthex.vtt.normalize`), so that grey-level counts and histogram gaps cannot tell the
groups apart.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from synthex.dataset import write_json_atomic
from synthex.vtt import VTTError
from synthex.vtt.normalize import common_shape, effective_bits, grey_step, normalize
from synthex.vtt.sources import DisplayImage, SourceImage, open_source

STUDY_FORMAT = "synthex-vtt-study/1"
KEY_FORMAT = "synthex-vtt-key/1"
LABELS = ("real", "synthetic")
IMAGE_ID = re.compile(r"^[0-9a-f]{16}$")
NORMALIZE_STREAM = 0x57D1  # first word of each image's normalization noise seed: [stream, seed, position]
NORMALIZATION = "dequantize (own grey step) + centre crop + box resample + requantize with rectangular dither"
RATER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class Study:
    """An opened study folder (what the server needs; nothing here reveals a label)."""

    root: Path
    ids: tuple[str, ...]
    title: str
    lock_answers: bool
    order_salt: str

    @property
    def answers_path(self) -> Path:
        return self.root / "answers.sqlite"

    def image_path(self, image_id: str) -> Path:
        """Path of a study image; only ids of this study are accepted (anything else: KeyError)."""
        if image_id not in self._id_set:
            raise KeyError(image_id)
        return self.root / "images" / f"{image_id}.png"

    @cached_property
    def _id_set(self) -> frozenset[str]:
        return frozenset(self.ids)

    def rater_order(self, rater: str) -> list[str]:
        """This rater's presentation order: a shuffle seeded by (study salt, rater id), stable across restarts."""
        digest = hashlib.sha256(f"{self.order_salt}:{rater}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return [self.ids[i] for i in rng.permutation(len(self.ids))]


@dataclass(frozen=True)
class CreatedStudy:
    study: Study
    key_path: Path
    warnings: list[str]


def check_rater_id(rater: str) -> str:
    rater = rater.strip()
    if not RATER_ID.match(rater):
        raise VTTError(
            "a rater id is 1-64 characters: letters, digits and . _ @ - (starting with a letter or digit)"
        )
    return rater


# ---------------------------------------------------------------------------- PNG codec (pure)


def encode_png(image: DisplayImage, bit_depth: int) -> bytes:
    """Grayscale PNG of ``image.pixels`` ([0, 1]) at 8 or 16 bits, with no ancillary chunks."""
    from PIL import Image

    if bit_depth == 16:
        array = np.round(image.pixels * 65535).astype(np.uint16)
    elif bit_depth == 8:
        array = np.round(image.pixels * 255).astype(np.uint8)
    else:
        raise VTTError(f"bit depth must be 8 or 16, got {bit_depth}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_uint16(png: bytes) -> np.ndarray:
    """A study PNG as (H, W) uint16 (8-bit images scaled by 257 so that 255 -> 65535)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        array = np.array(image)
    if array.dtype == np.uint8:
        return array.astype(np.uint16) * 257
    return array.astype(np.uint16)


def png_chunk_types(png: bytes) -> list[str]:
    """Chunk types of a PNG file in order (to check that nothing but pixels is stored)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise VTTError("not a PNG file")
    types, pos = [], 8
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        types.append(png[pos + 4 : pos + 8].decode("latin-1"))
        pos += 12 + length
    return types


# ---------------------------------------------------------------------------- create / open


def _sample(source: list[SourceImage], n: int, rng: np.random.Generator, what: str, path) -> list[SourceImage]:
    if len(source) < n:
        raise VTTError(f"{what} source {path} has {len(source)} images, fewer than the {n} per class asked for (--n)")
    return [source[i] for i in sorted(rng.choice(len(source), size=n, replace=False))]


def _tell_tale_warnings(seen: dict[str, list[tuple[tuple[int, ...], str]]], shape: tuple[int, int]) -> list[str]:
    """What the normalization had to change that raters may still notice: cropped aspect ratios and
    strong downsampling of one group (sizes, bit depth and grey levels themselves are equalized)."""
    warnings = []
    aspect = shape[0] / shape[1]
    for label, images in seen.items():
        cropped = sum(abs(s[0] / s[1] - aspect) > 0.02 for s, _ in images)
        if cropped:
            warnings.append(
                f"{cropped} {label} images have another aspect ratio than the study's {shape[1]}x{shape[0]} and "
                "were centre-cropped to it"
            )
    scale = {label: np.median([min(s[0] / shape[0], s[1] / shape[1]) for s, _ in images]) for label, images in seen.items()}
    if max(scale.values()) > 2 * min(scale.values()):
        warnings.append(
            "one group was downsampled much more than the other (median factors: "
            + ", ".join(f"{label} {v:.2g}x" for label, v in scale.items())
            + "); its noise grain differs: render synthetic images nearer the real images' size"
        )
    return warnings


def create_study(
    real: str | Path,
    synthetic: str | Path,
    out: str | Path,
    n: int = 50,
    seed: int = 0,
    key_path: str | Path | None = None,
    bit_depth: int = 16,
    lock_answers: bool = True,
    title: str = "Visual Turing test",
    on_image: Callable[[], None] | None = None,
) -> CreatedStudy:
    """Draw ``n`` real and ``n`` synthetic images (seeded), blind them and write the study to ``out``.

    The study appears at ``out`` only when complete (written beside it, then renamed), so an
    interrupted run leaves nothing that looks like a study.
    """
    out = Path(out)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise VTTError(f"--n (images per class) must be a positive integer, got {n}")
    if bit_depth not in (8, 16):
        raise VTTError(f"--bit-depth must be 8 or 16, got {bit_depth}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VTTError(f"{out}: already exists and is not empty; choose a new study folder")
    key_path = Path(key_path) if key_path is not None else out / "key.json"
    if key_path.exists():
        raise VTTError(f"{key_path}: a key file already exists; refusing to overwrite it")
    sources = {"real": Path(real), "synthetic": Path(synthetic)}
    if sources["real"].resolve() == sources["synthetic"].resolve():
        raise VTTError("--real and --synthetic are the same folder")

    rng = np.random.default_rng(seed)
    items = []
    for label in LABELS:
        images = _sample(open_source(sources[label]), n, rng, label, sources[label])
        items += [(label, image) for image in images]
    items = [items[i] for i in rng.permutation(len(items))]
    loaded = [source.load() for _, source in items]  # all first: the common size depends on every image
    shape = common_shape([image.pixels.shape for image in loaded])
    bits = min(effective_bits(image.pixels, bit_depth) for image in loaded)
    ids: list[str] = []
    while len(ids) < len(items):
        candidate = secrets.token_hex(8)
        if candidate not in ids:
            ids.append(candidate)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    try:
        (staging / "images").mkdir(parents=True)
        seen: dict[str, list[tuple[tuple[int, ...], str]]] = {label: [] for label in LABELS}
        key_images = {}
        for position, (image_id, (label, source), image) in enumerate(zip(ids, items, loaded)):
            seen[label].append((image.pixels.shape, image.source_dtype))
            noise = np.random.default_rng([NORMALIZE_STREAM, int(seed), position])
            pixels = normalize(image.pixels, shape, bit_depth, noise, bits)
            (staging / "images" / f"{image_id}.png").write_bytes(encode_png(DisplayImage(pixels, image.source_dtype), bit_depth))
            key_images[image_id] = {
                "label": label,
                "source": source.ref,
                "source_shape": list(image.pixels.shape),
                "source_dtype": image.source_dtype,
                "grey_step": grey_step(image.pixels),
            }
            if on_image is not None:
                on_image()
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        key = {
            "format": KEY_FORMAT,
            "created": created,
            "seed": int(seed),
            "n_per_class": int(n),
            "sources": {label: str(path.resolve()) for label, path in sources.items()},
            "images": dict(sorted(key_images.items())),
        }
        key["normalization"] = {"shape": list(shape), "bit_depth": bit_depth, "grey_level_bits": bits,
                                "method": NORMALIZATION}
        study_json = {
            "format": STUDY_FORMAT,
            "created": created,
            "title": title,
            "lock_answers": bool(lock_answers),
            "bit_depth": bit_depth,
            "image_shape": list(shape),
            "grey_level_bits": bits,
            "order_salt": secrets.token_hex(16),
            "images": sorted(ids),
        }
        staged_key = staging / "key.json" if key_path == out / "key.json" else key_path
        write_json_atomic(staged_key, key)
        write_json_atomic(staging / "study.json", study_json)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if key_path != out / "key.json":
            key_path.unlink(missing_ok=True)
        raise
    warnings = _tell_tale_warnings(seen, shape)
    if bits < bit_depth:
        warnings.append(
            f"every image is stored with {bits}-bit grey levels (in a {bit_depth}-bit file): the coarsest image of "
            "the study has no more, and more for the others would give them away"
        )
    return CreatedStudy(load_study(out), key_path, warnings)


def load_study(root: str | Path) -> Study:
    root = Path(root)
    try:
        data = json.loads((root / "study.json").read_text())
    except FileNotFoundError:
        raise VTTError(f"{root}: not a visual Turing test study (no study.json); make one with `synthex vtt create`") from None
    except (OSError, ValueError) as e:
        raise VTTError(f"{root}/study.json: unreadable ({e})") from None
    if data.get("format") != STUDY_FORMAT:
        raise VTTError(f"{root}/study.json: format {data.get('format')!r}, expected {STUDY_FORMAT!r}")
    ids = tuple(data["images"])
    bad = [i for i in ids if not IMAGE_ID.match(i)]
    if bad:
        raise VTTError(f"{root}/study.json: malformed image ids, e.g. {bad[0]!r}")
    missing = [i for i in ids if not (root / "images" / f"{i}.png").is_file()]
    if missing:
        raise VTTError(f"{root}: {len(missing)} study images are missing from images/ (e.g. {missing[0]}.png)")
    return Study(root, ids, str(data.get("title", "Visual Turing test")), bool(data["lock_answers"]), str(data["order_salt"]))


def load_key(path: str | Path, study: Study) -> dict[str, str]:
    """The key as ``{image_id: "real" | "synthetic"}``, checked against the study's ids."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise VTTError(f"{path}: key file not found (pass --key if it was stored elsewhere)") from None
    except (OSError, ValueError) as e:
        raise VTTError(f"{path}: unreadable key ({e})") from None
    if data.get("format") != KEY_FORMAT:
        raise VTTError(f"{path}: format {data.get('format')!r}, expected {KEY_FORMAT!r}")
    labels = {image_id: entry["label"] for image_id, entry in data["images"].items()}
    if set(labels) != set(study.ids):
        raise VTTError(f"{path}: this key belongs to a different study (its image ids do not match {study.root})")
    if not set(labels.values()) <= set(LABELS):
        raise VTTError(f"{path}: labels must be 'real' or 'synthetic'")
    return labels

"""A 2D toy "hip" image generator and a writer of the synthex dataset layout, for
tests and the smoke benchmark.

NOT a simulator: flat analytic shapes (ellipses, rectangles) in the layout of an
AP pelvis view, with the 6 bone classes and 14 landmarks of the hip task, so
training can be exercised before real renders exist. Each subject has its own
shape offsets; each image a random similarity pose, a smooth soft-tissue
background and noise. Everything is a function of ``(seed, subject, index)``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from training.tasks import get_task

_HIP = get_task("hip")

# canonical frame: x to image right (= patient left in an AP view), y down, pelvis spans about [-1, 1]
_LEFT_LANDMARKS = {"FH": (0.47, 0.36), "GSN": (0.24, -0.08), "IOF": (0.30, 0.47), "MOF": (0.17, 0.30),
                   "SPS": (0.06, 0.25), "IPS": (0.06, 0.48), "ASIS": (0.80, -0.32)}


def subject_params(seed: int, subject: int) -> dict:
    rng = np.random.default_rng([seed, subject, 1])
    return {"width": float(rng.uniform(0.9, 1.1)), "height": float(rng.uniform(0.9, 1.1)),
            "jitter": rng.uniform(-0.04, 0.04, size=(7, 2)).tolist(),
            "femur_angle": float(rng.uniform(-0.15, 0.15))}


def _ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def toy_hip_sample(size: int, seed: int, subject: int, index: int) -> dict:
    """One image (size x size) with ``labels`` (hip classes) and ``landmarks`` (14, 2) (u, v)."""
    sp = subject_params(seed, subject)
    rng = np.random.default_rng([seed, subject, index, 2])
    scale = size / 2.6 * rng.uniform(0.85, 1.1)
    theta = rng.uniform(-0.17, 0.17)
    t = np.array([size / 2, size / 2]) + rng.uniform(-0.08, 0.08, 2) * size
    c, s = np.cos(theta), np.sin(theta)
    R = np.array([[c, -s], [s, c]]) * scale * np.array([sp["width"], sp["height"]])[None, :]
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    xy = np.linalg.solve(R, np.stack([u.ravel() - t[0], v.ravel() - t[1]]))
    x, y = xy[0].reshape(size, size), xy[1].reshape(size, size)

    labels = np.zeros((size, size), np.uint8)
    thickness = np.zeros((size, size))
    for side, sign in (("left", 1.0), ("right", -1.0)):
        xs = sign * x
        pelvis = _ellipse(xs, y, 0.47, 0.05, 0.38, 0.5) & ~_ellipse(xs, y, 0.24, 0.36, 0.11, 0.1)
        labels[pelvis] = _HIP.classes.index(f"hemipelvis_{side}")
        thickness += 0.6 * pelvis
    vert = (np.abs(x) < 0.16) & (y > -1.1) & (y < -0.5)
    labels[vert] = _HIP.classes.index("vertebrae")
    thickness += 0.9 * vert
    sac = _ellipse(x, y, 0.0, -0.3, 0.2, 0.22)
    labels[sac] = _HIP.classes.index("upper_sacrum")
    thickness += 0.7 * sac
    for side, sign in (("left", 1.0), ("right", -1.0)):
        xs = sign * x
        a = sp["femur_angle"]
        head = _ellipse(xs, y, 0.47, 0.36, 0.13, 0.13)
        xr = (xs - 0.55) * np.cos(a) - (y - 0.4) * np.sin(a)
        shaft = (np.abs(xr) < 0.09) & (y > 0.4) & (y < 1.3)
        femur = head | shaft
        labels[femur] = _HIP.classes.index(f"femur_{side}")
        thickness += 1.0 * femur

    pts = []
    for k, name in enumerate(_HIP.landmarks):
        lm, side = name.rsplit("_", 1)
        px, py = np.array(_LEFT_LANDMARKS[lm]) + np.array(sp["jitter"][list(_LEFT_LANDMARKS).index(lm)])
        px = px if side == "l" else -px
        pts.append(R @ np.array([px, py]) + t)
    landmarks = np.array(pts)

    tissue = 1.2 * np.exp(-(x ** 2 / 2.0 + y ** 2 / 3.0))
    signal = np.exp(-(tissue + thickness * rng.uniform(0.8, 1.2)))
    image = 1.0 - signal + rng.normal(0, 0.03, size=(size, size))
    image = (image - image.min()) / (image.max() - image.min())
    inside = np.all((landmarks > -0.5) & (landmarks < size - 0.5), axis=1)
    return {"image": image.astype(np.float32), "labels": labels, "landmarks": landmarks.astype(np.float32),
            "landmark_visible": inside.astype(np.uint8)}


def write_synthex_layout(root, samples: list[dict], subjects, *, classes, landmarks, task="custom",
                         pixel_size_mm=(0.776, 0.776), shard_size: int = 100, seed: int = 0) -> Path:
    """Write samples in the synthex dataset format v1 (the shared layout; the
    production writer is ``synthex.dataset``). Each sample: ``image``, ``labels``,
    ``landmarks`` (L, 2), ``landmark_visible`` (L,)."""
    import h5py

    root = Path(root)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    H, W = samples[0]["image"].shape
    C = len(classes) - 1
    (root / "plan.json").write_text(json.dumps({"seed": seed, "config": {"generator": "training.toydata"}}))
    shards = []
    for first in range(0, len(samples), shard_size):
        chunk = samples[first:first + shard_size]
        n = len(chunk)
        name = f"shards/{first // shard_size:05d}.h5"
        tmp = root / f"shards/.{first // shard_size:05d}.h5.tmp"
        with h5py.File(tmp, "w") as h:
            h.attrs["format_version"] = 2
            h.attrs["first_index"] = first
            h["images"] = np.stack([s["image"] for s in chunk]).astype(np.float32)
            labels = np.stack([s["labels"] for s in chunk]).astype(np.uint8)
            h["labels"] = labels
            h.create_dataset("masks", data=np.stack([labels == c for c in range(1, C + 1)], axis=1)
                             .astype(np.uint8), compression="gzip")
            lms = np.stack([np.asarray(s["landmarks"], np.float32).reshape(-1, 2) for s in chunk])
            vis = np.stack([np.asarray(s["landmark_visible"], np.uint8).reshape(-1) for s in chunk])
            h["landmarks"] = np.where(vis[..., None] > 0, lms, np.nan).astype(np.float32)
            h["landmark_visible"] = vis
            boxes = np.full((n, C, 4), np.nan, np.float32)
            for i in range(n):
                for c in range(1, C + 1):
                    vv, uu = np.nonzero(labels[i] == c)
                    if len(uu):
                        boxes[i, c - 1] = (uu.min() - 0.5, vv.min() - 0.5, uu.max() + 0.5, vv.max() + 0.5)
            h["boxes"] = boxes
            h["K"] = np.repeat(np.eye(3)[None], n, axis=0)
            h["world_from_camera"] = np.repeat(np.eye(4)[None], n, axis=0)
            h["P"] = np.repeat(np.eye(3, 4)[None], n, axis=0)
            h["sample_index"] = np.arange(first, first + n, dtype=np.int64)
            h["subject_id"] = np.asarray(subjects[first:first + n], dtype=np.int64)
            h.create_dataset("params", data=[json.dumps({"index": first + i}) for i in range(n)],
                             dtype=h5py.string_dtype("utf-8"))
        tmp.rename(root / name)
        digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
        shards.append({"file": name, "sha256": digest, "count": n, "first_index": first})
    manifest = {"format": "synthex-dataset", "format_version": 2, "synthex_version": "0.1.0", "task": task,
                "seed": seed, "config": {"generator": "training.toydata"}, "image_size": [H, W],
                "classes": list(classes), "landmarks": list(landmarks),
                "camera_model": {"convention": "synthex", "world": "RAS mm"}, "shards": shards,
                "counts": {"images": len(samples), "subjects": len(set(subjects))}}
    if pixel_size_mm is not None:  # None: a dataset that does not state its pixel size (for tests)
        manifest["pixel_size_mm"] = list(pixel_size_mm)
    tmp = root / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.rename(root / "manifest.json")
    return root


def toy_covid_samples(n: int, size: int, classes, seed: int = 0) -> list[dict]:
    """Toy chest-like images for the covid task with the given class names: two bright-ish "lungs"
    (labelled when ``classes`` has ``lung``) and, in every odd image, a brighter square "lesion" inside
    the left one (lesion wins the overlap). NOT a simulator; for tests."""
    classes = list(classes)
    lung, lesion = (classes.index(c) if c in classes else 0 for c in ("lung", "lesion"))
    rng = np.random.default_rng([seed, 7])
    out = []
    for i in range(n):
        lab = np.zeros((size, size), np.uint8)
        img = 0.2 + 0.1 * rng.random((size, size))
        a, b = size // 6, size // 2
        for c0 in (a // 2 + 1, size - a // 2 - 1 - 2 * a):
            lab[a:a + b, c0:c0 + 2 * a] = lung
            img[a:a + b, c0:c0 + 2 * a] -= 0.1
        if i % 2:
            r0, c0 = a + b // 4, a // 2 + 1 + a // 2
            lab[r0:r0 + a, c0:c0 + a] = lesion
            img[r0:r0 + a, c0:c0 + a] += 0.5
        out.append({"image": np.clip(img, 0, 1).astype(np.float32), "labels": lab, "landmarks": np.zeros((0, 2)),
                    "landmark_visible": np.zeros(0)})
    return out


def write_toy_hip_dataset(root, n_subjects: int, per_subject: int, size: int = 128, seed: int = 0,
                          pixel_size_mm: float = 0.776) -> Path:
    samples, subjects = [], []
    for sub in range(n_subjects):
        for i in range(per_subject):
            samples.append(toy_hip_sample(size, seed, sub, i))
            subjects.append(sub)
    return write_synthex_layout(root, samples, subjects, classes=_HIP.classes, landmarks=_HIP.landmarks,
                                task="hip", pixel_size_mm=(pixel_size_mm, pixel_size_mm), seed=seed)

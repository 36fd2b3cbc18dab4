"""Every data-in format read from a fixture written by hand in its documented layout;
subject-level splits; clear errors for bad inputs."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from training.data import DataFormatError, SplitError, check_disjoint, open_source, split_by_subject
from training.data.prepare import TaskImages
from training.tasks import MissingLabelsError, UnknownTaskError, get_task
from training.toydata import write_synthex_layout

HIP = get_task("hip")


# ---------------------------------------------------------------- synthex format v1 (DATASET_SPEC.md)

def write_synthex(root, n=6, H=8, W=10, subjects=(3, 3, 5, 5, 9, 9), classes=None, landmarks=None,
                  with_labels=True):
    """A dataset written directly with h5py in the synthex v1 layout (two shards)."""
    classes = classes or list(HIP.classes)
    landmarks = landmarks if landmarks is not None else list(HIP.landmarks)
    L, C = len(landmarks), len(classes) - 1
    rng = np.random.default_rng(0)
    (root / "shards").mkdir(parents=True)
    images = rng.random((n, H, W), dtype=np.float32)
    labels = rng.integers(0, len(classes), (n, H, W)).astype(np.uint8)
    lms = rng.uniform(0, min(H, W) - 1, (n, L, 2)).astype(np.float32)
    vis = np.ones((n, L), np.uint8)
    vis[1, 0] = 0
    lms[1, 0] = np.nan
    shards = []
    for s, rows in enumerate((slice(0, 4), slice(4, n))):
        k = len(range(n)[rows])
        f = root / f"shards/{s:05d}.h5"
        with h5py.File(f, "w") as h:
            h.attrs["format_version"] = 2
            h.attrs["first_index"] = rows.start
            h["images"] = images[rows]
            if with_labels:
                h["labels"] = labels[rows]
                h.create_dataset("masks", data=np.stack([labels[rows] == c for c in range(1, C + 1)], 1)
                                 .astype(np.uint8), compression="gzip")
            h["landmarks"] = lms[rows]
            h["landmark_visible"] = vis[rows]
            h["boxes"] = np.full((k, C, 4), np.nan, np.float32)
            h["K"] = np.zeros((k, 3, 3))
            h["world_from_camera"] = np.zeros((k, 4, 4))
            h["P"] = np.zeros((k, 3, 4))
            h["sample_index"] = np.arange(rows.start, rows.start + k, dtype=np.int64)
            h["subject_id"] = np.asarray(subjects[rows], dtype=np.int64)
            h.create_dataset("params", data=["{}"] * k, dtype=h5py.string_dtype("utf-8"))
        shards.append({"file": f"shards/{s:05d}.h5", "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                       "count": k, "first_index": rows.start})
    (root / "manifest.json").write_text(json.dumps({
        "format": "synthex-dataset", "format_version": 2, "synthex_version": "0.1.0", "task": "hip", "seed": 0,
        "config": {}, "image_size": [H, W], "pixel_size_mm": [0.5, 0.5], "classes": classes,
        "landmarks": landmarks, "camera_model": {"convention": "synthex"}, "shards": shards,
        "counts": {"images": n, "subjects": len(set(subjects))}}))
    return images, labels, lms


def test_synthex_reader_returns_the_written_arrays(tmp_path):
    images, labels, lms = write_synthex(tmp_path)
    src = open_source(tmp_path)
    assert src.format == "synthex" and len(src) == 6 and src.pixel_size_mm == (0.5, 0.5)
    assert src.subjects == ["3", "3", "5", "5", "9", "9"]
    for i in (0, 1, 5):  # both shards
        rec = src[i]
        np.testing.assert_array_equal(rec.image, images[i])
        np.testing.assert_array_equal(rec.labels, labels[i])
        np.testing.assert_array_equal(rec.landmarks[1:], lms[i, 1:])
    assert np.all(np.isnan(src[1].landmarks[0]))  # landmark_visible = 0 -> not labelled


def test_corrupt_shard_is_a_clear_error(tmp_path):
    write_synthex(tmp_path)
    shard = tmp_path / "shards/00001.h5"
    data = bytearray(shard.read_bytes())
    shard.write_bytes(bytes(data[: len(data) // 2]))  # truncated, as by a killed copy
    with pytest.raises(DataFormatError, match=r"00001\.h5 is corrupt"):
        open_source(tmp_path)
    # without checksums the truncated HDF5 itself is still reported, naming the shard
    with pytest.raises(DataFormatError, match=r"00001\.h5 cannot be read"):
        open_source(tmp_path, verify=False)


def test_incomplete_dataset_without_manifest(tmp_path):
    write_synthex(tmp_path)
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "plan.json").write_text("{}")
    with pytest.raises(DataFormatError, match=r"incomplete \(no manifest.json\)"):
        open_source(tmp_path, format="synthex")


def test_dataset_lacking_task_labels(tmp_path):
    write_synthex(tmp_path / "a", classes=["background", "hemipelvis_left", "hemipelvis_right"])
    with pytest.raises(MissingLabelsError, match=r"lacks \['vertebrae', 'upper_sacrum'"):
        TaskImages(open_source(tmp_path / "a"), HIP, 8)
    write_synthex(tmp_path / "b", landmarks=["FH_l", "FH_r"])
    with pytest.raises(MissingLabelsError, match="lacks.*GSN_l"):
        TaskImages(open_source(tmp_path / "b"), HIP, 8)
    write_synthex(tmp_path / "c", with_labels=False)
    with pytest.raises(MissingLabelsError, match="no segmentation labels"):
        TaskImages(open_source(tmp_path / "c"), HIP, 8)


def test_unknown_task_and_format():
    with pytest.raises(UnknownTaskError, match=r"unknown task 'hips'.*\['covid', 'hip', 'tool'\]"):
        get_task("hips")
    with pytest.raises(DataFormatError, match="unknown dataset format"):
        open_source(".", format="nifti")


def test_unrecognized_path(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataFormatError, match="cannot tell the format"):
        open_source(tmp_path / "x.txt")


def test_task_images_map_classes_and_landmarks_by_name(tmp_path):
    # the dataset lists classes in another order and with other names; labels must follow the names
    classes = ["background", "femur_right", "left_femur", "sacrum", "vertebrae", "hip_right", "hip_left", "tool"]
    write_synthex(tmp_path, classes=classes, landmarks=list(reversed(HIP.landmarks)))
    src = open_source(tmp_path)
    data = TaskImages(src, HIP, 10)  # square input of the 8 x 10 images
    rec = src[0]
    item = data[0]
    assert item["masks"].shape == (10, 10)
    # nearest-exact rows of an 8 -> 10 resize: v_src = floor((v + 0.5) * 8 / 10)
    rows = np.floor((np.arange(10) + 0.5) * 0.8).astype(int)
    expect = np.vectorize(lambda c: HIP.classes.index({"femur_right": "femur_right", "left_femur": "femur_left",
                                                       "sacrum": "upper_sacrum", "vertebrae": "vertebrae",
                                                       "hip_right": "hemipelvis_right",
                                                       "hip_left": "hemipelvis_left"}.get(classes[c], "background"))
                          )(rec.labels[rows])
    np.testing.assert_array_equal(item["masks"], expect)
    # landmark FH_l (task index 0) is the dataset's last; v scaled by 10/8 about pixel centres
    u, v = rec.landmarks[-1]
    np.testing.assert_allclose(item["keypoints"][0], [u, (v + 0.5) * 1.25 - 0.5], atol=1e-5)


# ---------------------------------------------------------------- COCO

def test_coco_polygons_rle_and_keypoints(tmp_path):
    (tmp_path / "images").mkdir()
    img = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000)
    Image.fromarray(img).save(tmp_path / "images" / "a.png")
    # RLE (column-major, starts with zeros) for a mask with pixels (row 1..2, col 0)
    rle_mask = np.zeros((6, 8), bool)
    rle_mask[1:3, 0] = True
    flat = rle_mask.T.ravel()
    runs, cur, count = [], False, 0
    for x in flat:
        if x != cur:
            runs.append(count)
            cur, count = x, 0
        count += 1
    runs.append(count)
    doc = {
        "images": [{"id": 7, "file_name": "a.png", "width": 8, "height": 6, "subject_id": "P1"}],
        "categories": [{"id": 1, "name": "manipulator", "keypoints": ["base", "tip"]},
                       {"id": 2, "name": "other"}],
        "annotations": [
            # square with corners (2, 1) and (5, 4): pixel centres 2.5, 3.5, 4.5 in x and 1.5..3.5 in y
            {"id": 1, "image_id": 7, "category_id": 1, "segmentation": [[2, 1, 5, 1, 5, 4, 2, 4]],
             "keypoints": [3.5, 2.5, 2, 0, 0, 0]},
            {"id": 2, "image_id": 7, "category_id": 2, "segmentation": {"counts": runs, "size": [6, 8]}},
        ]}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    src = open_source(tmp_path / "annotations.json")
    assert src.format == "coco" and src.classes == ["background", "manipulator", "other"]
    assert src.landmarks == ["base", "tip"] and src.subjects == ["P1"]
    rec = src[0]
    expect = np.zeros((6, 8), int)
    expect[1:4, 2:5] = 1
    expect[1:3, 0] = 2
    np.testing.assert_array_equal(rec.labels, expect)
    np.testing.assert_allclose(rec.image, img / 65535.0, rtol=1e-6)
    np.testing.assert_allclose(rec.landmarks[0], [3.0, 2.0])  # corner origin -> centre origin
    assert np.all(np.isnan(rec.landmarks[1]))  # v = 0: not labelled
    # the tool task accepts "manipulator" for its tool class
    data = TaskImages(src, get_task("tool"), 8)
    assert set(np.unique(data[0]["masks"])) == {0, 1}


# ---------------------------------------------------------------- DeepFluoro / SyntheX hip HDF5

def test_deepfluoro_layout(tmp_path):
    f = tmp_path / "synthex_real.h5"
    rng = np.random.default_rng(1)
    names = [n.replace("_", "-") for n in HIP.landmarks]  # DeepFluoro spells them "FH-l"
    with h5py.File(f, "w") as h:
        h["land-names/num-lands"] = len(names)
        for k, n in enumerate(names):
            h[f"land-names/land-{k:02d}"] = n
        for spec, n in (("01", 2), ("02", 3)):
            h[f"{spec}/projs"] = rng.normal(3, 1, (n, 6, 12)).astype(np.float32)  # line integrals, not [0, 1]
            h[f"{spec}/segs"] = rng.integers(0, 7, (n, 6, 12)).astype(np.uint8)
            lands = rng.uniform(0, 5, (n, 2, len(names)))
            lands[0, :, 3] = [20.0, 1.0]  # column 20 is outside a 12-column image
            h[f"{spec}/lands"] = lands
    src = open_source(f)
    assert src.format == "deepfluoro" and src.subjects == ["01", "01", "02", "02", "02"]
    # no pixel_size_mm attribute: SyntheX's detector convention, stated as an assumption
    assert src.pixel_size_mm == pytest.approx((0.194 * 1536 / 12,) * 2)
    assert src.pixel_size_note.startswith("ASSUMED") and "no pixel_size_mm attribute" in src.pixel_size_note
    assert "ASSUMED" in src.describe()
    with h5py.File(f, "a") as h:  # the convention synthex's export follows: a root attribute [du, dv]
        h.attrs["pixel_size_mm"] = [0.3, 0.4]
    src2 = open_source(f)
    assert src2.pixel_size_mm == (0.3, 0.4) and src2[0].pixel_size_mm == (0.3, 0.4)
    assert src2.pixel_size_note == "HDF5 root attribute pixel_size_mm"
    assert open_source(f, pixel_size_mm=0.5).pixel_size_mm == (0.5, 0.5)  # the caller wins
    rec = src[2]
    with h5py.File(f, "r") as h:
        np.testing.assert_array_equal(rec.labels, h["02/segs"][0])
        np.testing.assert_allclose(rec.landmarks[5], h["02/lands"][0][:, 5])  # (column, row) = (u, v)
        p = h["02/projs"][0]
        np.testing.assert_allclose(rec.image, (p - p.min()) / (p.max() - p.min()), rtol=1e-5, atol=1e-6)
    assert np.all(np.isnan(rec.landmarks[3]))
    data = TaskImages(src, HIP, 12)
    assert data[0]["keypoints"].shape == (14, 2)


# ---------------------------------------------------------------- folder of images + masks + landmark JSON

def test_folder_layout(tmp_path):
    for d in ("images", "masks", "landmarks"):
        (tmp_path / d).mkdir()
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    mask = rng.integers(0, 2, (5, 7), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "images" / "case1.png")
    Image.fromarray(mask).save(tmp_path / "masks" / "case1.png")
    np.save(tmp_path / "images" / "case2.npy", rng.random((5, 7)).astype(np.float32))
    np.save(tmp_path / "masks" / "case2.npy", np.zeros((5, 7), np.uint8))
    (tmp_path / "landmarks" / "case1.json").write_text(json.dumps({"tip": [1.5, 2.0], "base": None}))
    (tmp_path / "dataset.json").write_text(json.dumps({
        "classes": ["background", "tool"], "landmarks": ["base", "tip"], "pixel_size_mm": 0.58,
        "subjects": {"case1": "S1", "case2": "S2"}}))
    src = open_source(tmp_path)
    assert src.format == "folder" and src.names == ["case1", "case2"] and src.subjects == ["S1", "S2"]
    rec = src[0]
    np.testing.assert_allclose(rec.image, img / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(rec.labels, mask)
    np.testing.assert_allclose(rec.landmarks[1], [1.5, 2.0])
    assert np.all(np.isnan(rec.landmarks[0]))
    assert np.all(np.isnan(src[1].landmarks))  # no landmark file: none labelled
    (tmp_path / "masks" / "case2.npy").unlink()
    with pytest.raises(DataFormatError, match="no mask for image 'case2'"):
        src[1]


def test_synthex_per_index_layout(tmp_path):
    """SyntheX's proj/ seg/ lands/ layout, two specimen folders: subject = folder, dim1/dim2 = column/row."""
    rng = np.random.default_rng(3)
    images, masks = {}, {}
    for spec in ("17-1882", "18-0725"):
        for d in ("proj", "seg", "lands"):
            (tmp_path / spec / d).mkdir(parents=True)
        for k in range(2):
            img = rng.integers(0, 65535, (6, 9), dtype=np.uint16)
            mask = rng.integers(0, 3, (6, 9), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / spec / "proj" / f"{k:05d}.tiff")
            Image.fromarray(mask).save(tmp_path / spec / "seg" / f"{k:05d}.png")
            images[f"{spec}/{k:05d}"], masks[f"{spec}/{k:05d}"] = img, mask
            with h5py.File(tmp_path / spec / "lands" / f"{k:05d}.h5", "w") as h:
                h["dim1"] = np.array([2.0, 30.0, 7.5])  # columns; 30 is outside the 9-column image
                h["dim2"] = np.array([1.0, 3.0, 4.25])  # rows
    (tmp_path / "dataset.json").write_text(json.dumps({
        "classes": ["background", "a", "b"], "landmarks": ["L0", "L1", "L2"], "pixel_size_mm": 0.388}))
    src = open_source(tmp_path)
    assert src.format == "synthex-index" and len(src) == 4 and src.pixel_size_mm == (0.388, 0.388)
    assert src.subjects == ["17-1882", "17-1882", "18-0725", "18-0725"]
    rec = src[2]
    assert rec.name == "18-0725/00000"
    np.testing.assert_allclose(rec.image, images[rec.name] / 65535.0, rtol=1e-6)  # 16-bit range -> [0, 1]
    np.testing.assert_array_equal(rec.labels, masks[rec.name])
    np.testing.assert_allclose(rec.landmarks[[0, 2]], [[2.0, 1.0], [7.5, 4.25]])
    assert np.all(np.isnan(rec.landmarks[1]))  # outside the image: not labelled
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(DataFormatError, match="seg/ masks need class names"):
        open_source(tmp_path, format="synthex-index")


# ---------------------------------------------------------------- subject-level splits

@pytest.mark.parametrize("seed", range(5))
def test_subject_level_split_never_shares_a_subject(seed):
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"ct{k}" for k in range(9)], rng.integers(1, 30, 9))
    parts = split_by_subject(subjects, {"train": 0.7, "val": 0.15, "test": 0.15}, seed)
    all_idx = np.concatenate(list(parts.values()))
    assert sorted(all_idx) == list(range(len(subjects)))  # a partition of the images
    sets = {k: set(subjects[v]) for k, v in parts.items()}
    assert all(sets[a].isdisjoint(sets[b]) for a in sets for b in sets if a < b)
    assert all(len(s) > 0 for s in sets.values())
    check_disjoint({k: subjects[v] for k, v in parts.items()})
    # same seed, same split
    again = split_by_subject(subjects, {"train": 0.7, "val": 0.15, "test": 0.15}, seed)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_split_errors():
    with pytest.raises(SplitError, match="subject 'b' is in both"):
        check_disjoint({"train": ["a", "b"], "test": ["b"]})
    with pytest.raises(SplitError, match="at least 2 subjects"):
        split_by_subject(["a"] * 5, {"train": 0.8, "val": 0.2}, 0)


def test_coco_compressed_rle_string():
    from training.data.coco import _decode_rle, rle_counts_from_string

    # hand-encoded per the COCO format: counts [5, 3, 20, 3]; 20 = 0b10100 has bit 0x10 set, so it takes two
    # 5-bit groups ('d' = 48 + (20 | 0x20), then '0'); the 4th count is stored as 3 - counts[1] = 0 -> '0'
    assert rle_counts_from_string("53d00") == [5, 3, 20, 3]
    # a negative difference: counts [1, 2, 9, 1] stores the 4th as 1 - 2 = -1 -> group 0x1F -> chr(48 + 31) = 'O'
    assert rle_counts_from_string("129O") == [1, 2, 9, 1]
    mask = _decode_rle({"counts": "53d00", "size": [31, 1]}, 31, 1, "test")
    expect = np.zeros(31, bool)
    expect[5:8] = True  # runs alternate background, foreground: 5 off, 3 on, 20 off, 3 on
    expect[28:31] = True
    np.testing.assert_array_equal(mask[:, 0], expect)
    with pytest.raises(DataFormatError, match="RLE counts sum"):
        _decode_rle({"counts": "53d00", "size": [4, 4]}, 4, 4, "test")


def test_reader_agrees_with_synthex_dataset_on_a_real_render(tmp_path):
    """The training reader and the format's own reader (synthex.dataset) return the same
    arrays for a dataset written by `synthex render` (procedural pelvis phantoms)."""
    from click.testing import CliRunner

    from synthex.cli import cli
    from synthex.dataset import open_dataset

    out = tmp_path / "hip"
    r = CliRunner().invoke(cli, ["render", "--task", "hip", "--n", "4", "--size", "32", "--out", str(out),
                                 "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    ours, theirs = open_source(out), open_dataset(out)
    assert ours.classes == theirs.classes and ours.landmarks == theirs.landmarks and len(ours) == len(theirs)
    for i in range(len(theirs)):
        a, b = ours[i], theirs[i]
        np.testing.assert_array_equal(a.image, b["image"])
        np.testing.assert_array_equal(a.labels, b["labels"])
        vis = b["landmark_visible"].astype(bool)
        np.testing.assert_array_equal(a.landmarks[vis], b["landmarks"][vis])
        assert np.all(np.isnan(a.landmarks[~vis]))
        assert a.subject == str(int(b["subject_id"]))
    TaskImages(ours, HIP, 32)[0]  # the hip task finds all its classes and landmarks


# ---------------------------------------------------------------- pixel size through every reader

def _one_hip_image_in_every_format(root, pixel_size):
    """One 64 x 64 hip image with labels and the 14 landmarks, written in each readable layout with
    ``pixel_size`` ([du, dv] mm, or None = not stated)."""
    import h5py
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(4)
    img16 = rng.integers(0, 65535, (64, 64)).astype(np.uint16)
    lab = np.zeros((64, 64), np.uint8)
    for c in range(1, 7):
        lab[8 * c:8 * c + 6, 5:60] = c
    lm = rng.uniform(4, 59, (14, 2))
    names = list(HIP.landmarks)
    px = {} if pixel_size is None else {"pixel_size_mm": list(pixel_size)}
    paths = {}
    # synthex
    paths["synthex"] = write_synthex_layout(root / "synthex", [{"image": img16 / 65535.0, "labels": lab,
                                                                "landmarks": lm, "landmark_visible": np.ones(14)}],
                                            [0], classes=list(HIP.classes), landmarks=names, task="hip",
                                            pixel_size_mm=pixel_size)
    # COCO (pixel size per image)
    d = root / "coco"
    (d / "images").mkdir(parents=True)
    Image.fromarray(img16).save(d / "images" / "a.png")
    anns = []
    for c in range(1, 7):
        rle = mask_utils.encode(np.asfortranarray((lab == c).astype(np.uint8)))
        anns.append({"id": c, "image_id": 1, "category_id": c, "iscrowd": 0,
                     "segmentation": {"counts": rle["counts"].decode(), "size": [64, 64]}})
    kps = [x for (u, v) in lm for x in (u + 0.5, v + 0.5, 2)]
    anns.append({"id": 9, "image_id": 1, "category_id": 7, "keypoints": kps, "iscrowd": 0})
    cats = [{"id": c, "name": n} for c, n in enumerate(HIP.classes[1:], start=1)] + \
        [{"id": 7, "name": "landmarks", "keypoints": names}]
    (d / "annotations.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "images/a.png", "width": 64,
                                                                "height": 64, "subject_id": 0, **px}],
                                                    "categories": cats, "annotations": anns}))
    paths["coco"] = d / "annotations.json"
    # DeepFluoro HDF5 (root attribute)
    f = root / "df.h5"
    with h5py.File(f, "w") as h:
        h["land-names/num-lands"] = 14
        for k, n in enumerate(names):
            h[f"land-names/land-{k:02d}"] = n.replace("_", "-")
        h["01/projs"] = (img16 / 65535.0)[None].astype(np.float32)
        h["01/segs"] = lab[None]
        h["01/lands"] = lm.T[None]
        if pixel_size is not None:
            h.attrs["pixel_size_mm"] = list(pixel_size)
    paths["deepfluoro"] = f
    # folder and SyntheX's per-index layout (dataset.json)
    meta = {"classes": list(HIP.classes), "landmarks": names, **px}
    for fmt, (im_dir, m_dir) in {"folder": ("images", "masks"), "synthex-index": ("proj", "seg")}.items():
        d = root / fmt
        (d / im_dir).mkdir(parents=True)
        (d / m_dir).mkdir()
        Image.fromarray(img16).save(d / im_dir / "00000.png")
        Image.fromarray(lab).save(d / m_dir / "00000.png")
        (d / "dataset.json").write_text(json.dumps(meta))
        if fmt == "folder":
            (d / "landmarks").mkdir()
            (d / "landmarks" / "00000.json").write_text(json.dumps({n: list(p) for n, p in zip(names, lm)}))
        else:
            (d / "lands").mkdir()
            with h5py.File(d / "lands" / "00000.h5", "w") as h:
                h["dim1"], h["dim2"] = lm[:, 0], lm[:, 1]
        paths[fmt] = d
    return paths


class _OffsetPredictor:
    """The reference labels and every landmark 3 px right and 4 px down of the reference (5 px away)."""

    def __call__(self, batch):
        return {"labels": batch["labels"], "landmarks": batch["keypoints"] + torch.tensor([3.0, 4.0])}


def test_one_pixel_error_is_the_same_mm_from_every_reader(tmp_path):
    """The issue: one 52 px error came out as 20 mm from COCO and 122 mm from the DeepFluoro export,
    because COCO had no pixel size and each path assumed its own. With the pixel size stored in each
    format's convention, a 5 px error at a 32 px model input of a 64 px image with 0.3 x 0.3 mm pixels
    is 5 x 2 x 0.3 = 3.0 mm, whichever reader."""
    from training.evaluation import evaluate
    from training.run import open_sources, test_info

    paths = _one_hip_image_in_every_format(tmp_path / "with", (0.3, 0.3))
    for fmt, path in paths.items():
        src = open_source(path)
        assert src.format == fmt and src.pixel_size_mm == (0.3, 0.3), fmt
        records, _ = evaluate(_OffsetPredictor(), TaskImages(src, HIP, 32), HIP, keep_examples=0)
        assert records[0]["pixel_size_mm"] == [0.3, 0.3]
        np.testing.assert_allclose(list(records[0]["landmark_error_px"].values()), 5.0, rtol=1e-5, err_msg=fmt)
        np.testing.assert_allclose(list(records[0]["landmark_error_mm"].values()), 3.0, rtol=1e-5, err_msg=fmt)
    # anisotropic pixels (u 0.3, v 0.6 mm): 3 x 2 x 0.3 and 4 x 2 x 0.6 mm -> hypot(1.8, 4.8)
    src = open_sources([paths["folder"]], pixel_size_mm=(0.3, 0.6))
    records, _ = evaluate(_OffsetPredictor(), TaskImages(src, HIP, 32), HIP, keep_examples=0)
    assert records[0]["landmark_error_mm_mean"] == pytest.approx(np.hypot(1.8, 4.8), rel=1e-5)
    # not stated: no mm metric at all (never an assumed pitch), and the report says so ...
    paths = _one_hip_image_in_every_format(tmp_path / "without", None)
    for fmt in ("coco", "folder", "synthex-index"):
        src = open_source(paths[fmt])
        assert src.pixel_size_mm is None and src.pixel_size_note.startswith("unknown"), fmt
        records, _ = evaluate(_OffsetPredictor(), TaskImages(src, HIP, 32), HIP, keep_examples=0)
        assert "landmark_error_mm" not in records[0] and records[0]["landmark_error_px_mean"] == pytest.approx(5.0)
        assert test_info(src, records)["pixel_size"]["value"] == "unknown: no mm metrics"
    # ... except DeepFluoro files, whose documented convention is stated as an assumption
    src = open_source(paths["deepfluoro"])
    assert src.pixel_size_mm == pytest.approx((0.194 * 1536 / 64,) * 2) and "ASSUMED" in src.pixel_size_note


def test_coco_pixel_size_per_image_and_file_wide(tmp_path):
    (tmp_path / "images").mkdir()
    for n in ("a", "b", "c"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / f"{n}.png")
    doc = {"info": {"pixel_size_mm": [0.5, 0.5]}, "categories": [{"id": 1, "name": "tool"}], "annotations": [],
           "images": [{"id": 1, "file_name": "images/a.png", "width": 4, "height": 4, "pixel_size_mm": [0.1, 0.2]},
                      {"id": 2, "file_name": "images/b.png", "width": 4, "height": 4},
                      {"id": 3, "file_name": "images/c.png", "width": 4, "height": 4, "pixel_size_mm": 0.25}]}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    src = open_source(tmp_path / "annotations.json")
    assert [src[i].pixel_size_mm for i in range(3)] == [(0.1, 0.2), (0.5, 0.5), (0.25, 0.25)]
    assert src.pixel_size_mm is None and src.pixel_size_note == "COCO images[i].pixel_size_mm"
    doc["images"][0]["pixel_size_mm"] = [0.1, -1]
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(DataFormatError, match=r"image 1 pixel_size_mm: expected a positive number or \[du, dv\]"):
        open_source(tmp_path / "annotations.json")


def _render_tiny_hip(out):
    from click.testing import CliRunner

    from synthex.cli import cli

    r = CliRunner().invoke(cli, ["render", "--task", "hip", "--n", "2", "--size", "32", "--out", str(out),
                                 "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return json.loads((out / "manifest.json").read_text())["pixel_size_mm"]


@pytest.mark.parametrize("fmt", ["coco", "deepfluoro"])
def test_pixel_size_survives_export_and_reading_back(tmp_path, fmt):
    from synthex.exports import export

    pitch = _render_tiny_hip(tmp_path / "hip")
    main = export(tmp_path / "hip", tmp_path / fmt, fmt)
    src = open_source(main)
    assert src.pixel_size_mm == pytest.approx(tuple(pitch))
    assert not src.pixel_size_note.startswith(("ASSUMED", "unknown"))

"""Exports: COCO (pycocotools reads it back), nnU-Net v2 (schema; its own integrity check when
installed), DICOM (pydicom), DeepFluoro HDF5, dataset card."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
from synthex_tiny import tiny

from synthex.config import resolve_config
from synthex.dataset import open_dataset
from synthex.exports import ExportError, export, to_uint16
from synthex.runner import render_dataset



@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "ds"
    render_dataset(resolve_config(tiny(n=6, **{"image.size": 40})), out, progress=False)
    return open_dataset(out)


def test_coco_loads_with_pycocotools_and_matches_masks_boxes_keypoints(dataset, tmp_path):
    pytest.importorskip("pycocotools")
    from PIL import Image
    from pycocotools.coco import COCO

    export(dataset, tmp_path / "coco", "coco")
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    assert sorted(coco.getImgIds()) == list(range(len(dataset)))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert [names[k] for k in range(1, 7)] == dataset.classes[1:]
    n_masks = 0
    for i in range(len(dataset)):
        s = dataset[i]
        img = np.asarray(Image.open(tmp_path / "coco" / coco.loadImgs(i)[0]["file_name"]))
        assert img.dtype == np.uint16 and np.array_equal(img, to_uint16(s["image"]))
        assert np.abs(img / 65535.0 - s["image"]).max() <= 0.5 / 65535 + 1e-7
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[i]))
        by_cat = {a["category_id"]: a for a in anns}
        for c in range(6):
            if s["masks"][c].any():
                a = by_cat[c + 1]
                assert np.array_equal(coco.annToMask(a), s["masks"][c])
                # COCO pixel (0, 0) spans [0, 1): box = synthex box + 0.5, as [x, y, w, h]
                u0, v0, u1, v1 = s["boxes"][c]
                assert a["bbox"] == pytest.approx([u0 + 0.5, v0 + 0.5, u1 - u0, v1 - v0])
                n_masks += 1
            else:
                assert c + 1 not in by_cat
        kp = np.array(by_cat[7]["keypoints"], dtype=float).reshape(-1, 3)
        for k in range(14):
            if np.isnan(s["landmarks"][k]).any():
                assert kp[k, 2] == 0
            else:
                assert kp[k, :2] == pytest.approx(s["landmarks"][k] + 0.5, abs=1e-4)
                assert kp[k, 2] == (2 if s["landmark_visible"][k] else 1)
    assert n_masks > 6
    assert (tmp_path / "coco" / "DATASET_CARD.md").exists()


def test_nnunet_export_passes_nnunets_integrity_check(dataset, tmp_path):
    from PIL import Image

    from synthex.exports.nnunet import check_dataset_json

    root = export(dataset, tmp_path / "nnunet", "nnunet", dataset_id=7)
    assert root.name == "Dataset007_SynthexHip"
    data = json.loads((root / "dataset.json").read_text())
    check_dataset_json(data)
    assert data["labels"] == {name: k for k, name in enumerate(dataset.classes)}
    assert data["numTraining"] == len(dataset) and data["file_ending"] == ".png"
    for i in range(len(dataset)):
        lab = np.asarray(Image.open(root / "labelsTr" / f"hip_{i:06d}.png"))
        assert np.array_equal(lab, dataset[i]["labels"])
        assert (root / "imagesTr" / f"hip_{i:06d}_0000.png").exists()
    with pytest.raises(ExportError, match="consecutive"):
        check_dataset_json({**data, "labels": {"background": 0, "a": 2}})
    try:  # nnU-Net v2's own check, when nnunetv2 is installed (dev extra)
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    except ImportError:
        pytest.skip("nnunetv2 not installed: only the documented dataset.json schema was checked")
    verify_dataset_integrity(str(root), 1)


def _detector_angles(world_from_camera):
    """DICOM positioner angles from the camera pose, independently of synthex's formula:
    the detector sits along +z of the camera frame (source -> detector). Primary: in the
    transverse plane, 0 = anterior (+y RAS), +90 = patient left (-x RAS). Secondary:
    towards the head (+z RAS) positive."""
    d = np.asarray(world_from_camera)[:3, 2]
    return math.degrees(math.atan2(-d[0], d[1])), math.degrees(math.asin(d[2]))


def test_dicom_tags_read_back_with_pydicom(dataset, tmp_path):
    import pydicom

    folder = export(dataset, tmp_path / "dicom", "dicom")
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == len(dataset)
    for i, f in enumerate(files):
        d = pydicom.dcmread(f)
        s = dataset[i]
        p = s["params"]
        assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.12.1" and d.Modality == "XA"
        assert float(d.KVP) == pytest.approx(p["physics"]["spectrum"]["kvp"], abs=1e-3)
        assert float(d.DistanceSourceToDetector) == pytest.approx(1020.0)
        assert float(d.DistanceSourceToPatient) == pytest.approx(530.0)
        assert [float(x) for x in d.ImagerPixelSpacing] == pytest.approx([10.0, 10.0])  # 400 mm / 40 px
        assert float(d.EstimatedRadiographicMagnificationFactor) == pytest.approx(1020.0 / 530.0, rel=1e-5)
        primary, secondary = _detector_angles(s["world_from_camera"])
        assert float(d.PositionerPrimaryAngle) == pytest.approx(primary, abs=1e-3)
        assert float(d.PositionerSecondaryAngle) == pytest.approx(secondary, abs=1e-3)
        assert np.array_equal(d.pixel_array, to_uint16(s["image"]))
        comments = json.loads(d.ImageComments)
        assert np.allclose(comments["world_from_camera_RAS_mm"], s["world_from_camera"])
    dx = export(dataset, tmp_path / "dx", "dicom", modality="DX")
    d = pydicom.dcmread(sorted(dx.glob("*.dcm"))[0])
    assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1" and d.PresentationIntentType == "FOR PRESENTATION"


def test_deepfluoro_layout(dataset, tmp_path):
    import h5py

    path = export(dataset, tmp_path / "df", "deepfluoro")
    with h5py.File(path) as f:
        assert int(f["land-names/num-lands"][()]) == 14
        assert [f[f"land-names/land-{k:02d}"][()].decode() for k in range(14)] == dataset.landmarks
        groups = sorted(k for k in f if k != "land-names")
        assert groups == ["01", "02"]  # one per subject
        i = 0
        for g in groups:
            projs, segs, lands = f[g]["projs"][:], f[g]["segs"][:], f[g]["lands"][:]
            assert projs.shape == (3, 40, 40) and segs.shape == (3, 40, 40) and lands.shape == (3, 2, 14)
            for j in range(3):
                s = dataset[i]
                assert np.array_equal(projs[j], s["image"]) and np.array_equal(segs[j], s["labels"])
                assert np.array_equal(lands[j][0], s["landmarks"][:, 0], equal_nan=True)  # column (u)
                assert np.array_equal(lands[j][1], s["landmarks"][:, 1], equal_nan=True)  # row (v)
                i += 1


def test_card_and_bad_export_targets(dataset, tmp_path):
    path = export(dataset, tmp_path / "card", "card")
    text = path.read_text()
    assert (
        "physics model `spectral`: SpekPy spectrum" in text
        and "procedural pelvis" in text
        and "seed 7" in text
        and "hemipelvis_left" in text
    )
    with pytest.raises(ExportError, match="not empty"):
        export(dataset, tmp_path / "card", "coco")
    with pytest.raises(ExportError, match="unknown export format"):
        export(dataset, tmp_path / "x", "tiff")


# ------------------------------------------------------------------------------------------------
# Standards (issue 15, finding 10): COCOeval over every annotation kind, per-lesion instances, pixel
# size; DICOM validated by dicom3tools' dciodvfy, one study per subject, SEG via highdicom;
# nnU-Net splits_final.json grouped by subject.


@pytest.fixture(scope="module")
def covid(tmp_path_factory):
    out = tmp_path_factory.mktemp("covid") / "ds"
    cfg = tiny(n=4, task="covid", subjects=[{"source": "chest_lesions", "count": 2, "spacing_mm": 6.0}],
               **{"image.size": 48})
    render_dataset(resolve_config(cfg), out, progress=False)
    return open_dataset(out)


def components_8(mask: np.ndarray) -> list[set]:
    """8-connected components by breadth-first search (written here, independently of scipy)."""
    todo = {tuple(p) for p in np.argwhere(mask)}
    found = []
    while todo:
        seed = todo.pop()
        comp, queue = {seed}, [seed]
        while queue:
            r, c = queue.pop()
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    q = (r + dr, c + dc)
                    if q in todo:
                        todo.remove(q)
                        comp.add(q)
                        queue.append(q)
        found.append(comp)
    return found


def _coco_eval_ap(coco, iou_type: str, cat_ids, sigmas=None) -> float:
    from pycocotools.cocoeval import COCOeval

    anns = [a for a in coco.loadAnns(coco.getAnnIds(catIds=cat_ids))]
    results = []
    for a in anns:  # the ground truth as detections, score 1: a valid file evaluates to AP = 1
        r = {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0}
        if iou_type == "segm":
            r["segmentation"] = a["segmentation"]
        elif iou_type == "bbox":
            r["bbox"] = a["bbox"]
        else:
            r["keypoints"] = a["keypoints"]
        results.append(r)
    dt = coco.loadRes(results)
    ev = COCOeval(coco, dt, iou_type)
    ev.params.catIds = cat_ids
    if sigmas is not None:
        ev.params.kpt_oks_sigmas = sigmas
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0])


def test_coco_every_annotation_kind_works_with_anntomask_and_cocoeval(dataset, tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    path = export(dataset, tmp_path / "coco", "coco")
    coco = COCO(str(path))
    for a in coco.loadAnns(coco.getAnnIds()):  # raised KeyError on keypoint annotations before
        m = coco.annToMask(a)
        assert m.shape == tuple(dataset.manifest["image_size"])
        assert a["area"] == pytest.approx(float(m.sum()))
    lm = [c["id"] for c in coco.loadCats(coco.getCatIds()) if c["name"] == "landmarks"]
    classes = [c for c in coco.getCatIds() if c not in lm]
    assert _coco_eval_ap(coco, "segm", classes) == pytest.approx(1.0)
    assert _coco_eval_ap(coco, "bbox", classes) == pytest.approx(1.0)
    assert _coco_eval_ap(coco, "keypoints", lm, sigmas=np.full(14, 0.05)) == pytest.approx(1.0)
    # the keypoint annotation's mask is the labelled anatomy: the union of the class masks
    s = dataset[0]
    (kp,) = coco.loadAnns(coco.getAnnIds(imgIds=[0], catIds=lm))
    assert np.array_equal(coco.annToMask(kp), s["masks"].any(axis=0).astype(np.uint8))


def test_coco_pixel_size_is_recorded_for_the_training_readers(dataset, tmp_path):
    path = export(dataset, tmp_path / "coco", "coco")
    doc = json.loads(path.read_text())
    assert doc["info"]["pixel_size_mm"] == pytest.approx([10.0, 10.0])  # 400 mm detector / 40 px
    for im in doc["images"]:  # the convention of the training readers: [du, dv] per image and for the file
        assert im["pixel_size_mm"] == pytest.approx([10.0, 10.0])


def test_coco_lesions_are_one_annotation_per_lesion(covid, tmp_path):
    from pycocotools.coco import COCO

    coco = COCO(str(export(covid, tmp_path / "coco", "coco")))
    lesion = covid.manifest["classes"].index("lesion")  # label value = COCO category id
    total = 0
    for i in range(len(covid)):
        mask = covid[i]["masks"][lesion - 1].astype(bool)
        expected = components_8(mask)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[i], catIds=[lesion]))
        got = [{tuple(p) for p in np.argwhere(coco.annToMask(a))} for a in anns]
        assert sorted(map(sorted, got)) == sorted(map(sorted, expected))  # exactly the connected lesions
        for a, pix in zip(anns, got):  # each box encloses its own lesion (COCO: + 0.5 pixel convention)
            rows, cols = zip(*pix)
            assert a["bbox"] == pytest.approx([min(cols), min(rows), max(cols) - min(cols) + 1, max(rows) - min(rows) + 1])
        total += len(expected)
    assert total > len(covid)  # the fixture has images with several lesions
    assert _coco_eval_ap(coco, "segm", [lesion]) == pytest.approx(1.0)


def test_deepfluoro_records_the_pixel_size(dataset, tmp_path):
    import h5py

    path = export(dataset, tmp_path / "df", "deepfluoro")
    with h5py.File(path) as f:
        assert list(f.attrs["pixel_size_mm"]) == pytest.approx([10.0, 10.0])


def test_nnunet_splits_final_keeps_each_subject_in_one_fold(dataset, tmp_path):
    root = export(dataset, tmp_path / "nnunet", "nnunet", dataset_id=9)
    folds = json.loads((root / "splits_final.json").read_text())
    subject = json.loads((root / "splits_by_subject.json").read_text())
    assert len(folds) == 2  # 2 subjects: one fold each (nnU-Net's 5 when there are 5 or more)
    assert sorted(c for f in folds for c in f["val"]) == sorted(subject)  # every case validated once
    for f in folds:
        assert set(f["train"]).isdisjoint(f["val"]) and set(f["train"]) | set(f["val"]) == set(subject)
        assert {subject[c] for c in f["train"]}.isdisjoint({subject[c] for c in f["val"]})
    from synthex.exports.nnunet import subject_folds

    many = {f"c{i}": i // 3 for i in range(21)}  # 7 subjects of 3 views
    folds = subject_folds(many)
    assert len(folds) == 5 and sorted(len(f["val"]) for f in folds) == [3, 3, 3, 6, 6]
    assert subject_folds({"a": 0, "b": 0}) == []  # one subject cannot be split by subject


DCIODVFY = shutil.which("dciodvfy")


def _dciodvfy(path) -> list[str]:
    if DCIODVFY is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (`make test` installs it as root: apt-get install dicom3tools)")
    r = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("modality", ["XA", "DX"])
def test_dicom_passes_dciodvfy_one_study_per_subject_with_seg(dataset, tmp_path, modality):
    import highdicom as hd
    import pydicom

    folder = export(dataset, tmp_path / modality, "dicom", modality=modality)
    images = sorted(folder.glob("*.dcm"))
    segs = sorted((folder / "seg").glob("*.dcm"))
    assert len(images) == len(segs) == len(dataset)
    for f in images + segs:
        assert _dciodvfy(f) == [], f
    studies = {}
    for i, (fi, fs) in enumerate(zip(images, segs)):
        d, s = pydicom.dcmread(fi), dataset[i]
        studies.setdefault(d.PatientID, set()).add(d.StudyInstanceUID)
        assert d.PatientID == f"synthex-{int(s['subject_id']):05d}" and d.StudyDate and d.PixelIntensityRelationship
        seg = hd.seg.segread(fs)
        assert seg.StudyInstanceUID == d.StudyInstanceUID and seg.PatientID == d.PatientID
        ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
        assert ref.ReferencedSOPInstanceUID == d.SOPInstanceUID
        labels = [seg.get_segment_description(k).SegmentLabel for k in seg.segment_numbers]
        assert labels == dataset.classes[1:]
        raw = pydicom.dcmread(fs)  # frames as stored, mapped to segments by their functional groups
        frames = raw.pixel_array.reshape(-1, *s["masks"].shape[1:])
        numbers = [g.SegmentIdentificationSequence[0].ReferencedSegmentNumber for g in raw.PerFrameFunctionalGroupsSequence]
        masks = np.zeros_like(s["masks"])
        for frame, k in zip(frames, numbers):
            masks[k - 1] = frame
        assert np.array_equal(masks, s["masks"])
    assert all(len(uids) == 1 for uids in studies.values())  # one study per subject ...
    assert len({u for uids in studies.values() for u in uids}) == len(studies) == 2  # ... and not shared


def test_dicom_patient_orientation_follows_the_camera(dataset):
    from synthex.exports.dicom import patient_orientation

    # an AP view of a supine patient: image right = patient left, image down = feet
    ap = np.eye(4)
    ap[:3, :3] = np.column_stack([(-1, 0, 0), (0, 0, -1), (0, 1, 0)])  # u -> -x (left), v -> -z (feet), z -> +y
    assert patient_orientation(ap) == ["L", "F"]

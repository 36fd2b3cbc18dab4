"""Exports: COCO (pycocotools reads it back), nnU-Net v2 (schema; its own integrity check when
installed), DICOM (pydicom), DeepFluoro HDF5, dataset card."""

from __future__ import annotations

import json
import math

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

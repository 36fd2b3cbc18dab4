"""`synthex predict` on unlabelled images: every input format, the training preprocessing, the
outputs and their definitions, and clear errors. Tiny models trained for one epoch on toy data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from synthex.cli import cli
from training.data import open_source
from training.data.images import read_xray
from training.data.prepare import TaskImages, model_inputs, resize_image
from training.evaluation import evaluate
from training.inference import ModelPredictor
from training.tasks import Task, get_task
from training.toydata import toy_covid_samples, write_synthex_layout
from training.train import TrainConfig, model_from_checkpoint, train

SIZE = 40  # stored toy image size; the models run at 32 px


def _tool_sample(rng, size=SIZE):
    """A bright 2-px-wide rod from base to tip on a smooth background."""
    img = 0.2 + 0.1 * rng.random((size, size)).astype(np.float32)
    base, tip = rng.uniform(6, size - 7, 2), rng.uniform(6, size - 7, 2)
    v, u = np.mgrid[0:size, 0:size]
    d = tip - base
    t = np.clip(((u - base[0]) * d[0] + (v - base[1]) * d[1]) / max(d @ d, 1e-9), 0, 1)
    dist = np.hypot(u - (base[0] + t * d[0]), v - (base[1] + t * d[1]))
    lab = (dist <= 1.5).astype(np.uint8)
    img[lab > 0] += 0.6
    return {"image": np.clip(img, 0, 1), "labels": lab, "landmarks": np.stack([base, tip]),
            "landmark_visible": np.ones(2)}


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tool")
    rng = np.random.default_rng(0)
    samples = [_tool_sample(rng) for _ in range(12)]
    data = write_synthex_layout(root / "data", samples, [i // 2 for i in range(12)], classes=["background", "tool"],
                                landmarks=["base", "tip"], task="tool")
    cfg = TrainConfig(task="tool", image_size=32, model_size="tiny", epochs=1, batch_size=4, device="cpu")
    train(cfg, open_source(data), root / "run", progress=False)
    return root / "run", data


@pytest.fixture(scope="module")
def covid_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("covid")
    classes = list(get_task("covid").classes)  # (background, lesion) today; lung joins once the lead's task lands
    data = write_synthex_layout(root / "data", toy_covid_samples(10, SIZE, classes), [i // 2 for i in range(10)],
                                classes=classes, landmarks=[], task="covid")
    cfg = TrainConfig(task="covid", image_size=32, model_size="tiny", epochs=1, batch_size=4, device="cpu")
    train(cfg, open_source(data), root / "run", progress=False)
    return root / "run"


def _write_dicom(path, stored, *, photometric="MONOCHROME2", slope=1.0, intercept=0.0, spacing=None,
                 spacing_tag="ImagerPixelSpacing", window=None, bits=16):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if spacing is not None:
        setattr(ds, spacing_tag, [str(spacing[0]), str(spacing[1])])
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def _same_image_in_every_format(folder: Path, img8: np.ndarray) -> dict[str, Path]:
    """One 8-bit image written losslessly in each format (plus a JPEG), for the invariance test."""
    (folder / "sub" / "deeper").mkdir(parents=True)
    files = {"png8": folder / "a_png8.png", "png16": folder / "b_png16.png", "tiff": folder / "c_tiff.tif",
             "jpeg": folder / "d_jpeg.jpg", "dicom_m2": folder / "e_dicom_m2.dcm",
             "dicom_m1": folder / "sub" / "f_dicom_m1.dcm", "dicom_nosuffix": folder / "sub" / "deeper" / "g_dicom"}
    Image.fromarray(img8).save(files["png8"])
    Image.fromarray(img8.astype(np.uint16) * 257).save(files["png16"])  # 8 -> 16 bit: x 257 (255 -> 65535)
    Image.fromarray(img8).save(files["tiff"])
    Image.fromarray(img8).convert("RGB").save(files["jpeg"], quality=95)
    # 12-bit stored values 16 x (pixel) + 7, rescaled by 0.5 / -3: an affine map of the 8-bit image
    _write_dicom(files["dicom_m2"], img8.astype(np.uint16) * 16 + 7, slope=0.5, intercept=-3.0, bits=12,
                 spacing=(0.2, 0.1))  # (row, column) spacing -> du = 0.1 mm, dv = 0.2 mm
    # MONOCHROME1: bright = low values; stored inverted, read back upright
    _write_dicom(files["dicom_m1"], 4095 - img8.astype(np.uint16) * 16, photometric="MONOCHROME1", bits=12,
                 spacing=(0.3, 0.3), spacing_tag="PixelSpacing")
    _write_dicom(files["dicom_nosuffix"], img8.astype(np.uint16) * 3, bits=12)
    return files


def test_read_xray_dicom_window_and_monochrome1(tmp_path):
    """DICOM: modality LUT then the LINEAR window of PS3.3 C.11.2.1.2.1, written out here by hand."""
    stored = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    c, w = 1000.0, 2001.0
    _write_dicom(tmp_path / "w.dcm", stored, slope=2.0, intercept=-100.0, window=(c, w), bits=12)
    x = 2.0 * stored - 100.0
    lo = c - 0.5 - (w - 1) / 2  # x <= lo -> black, x > lo + (w - 1) -> white, linear in between
    expect = np.clip((x - lo) / (w - 1), 0, 1)
    expect = (expect - expect.min()) / (expect.max() - expect.min())
    got = read_xray(tmp_path / "w.dcm")
    np.testing.assert_allclose(got.image, expect, atol=2e-6)
    assert got.pixel_size_mm is None and "neither" in got.pixel_size_note
    _write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", bits=12, spacing=(0.2, 0.1))
    m1 = read_xray(tmp_path / "m1.dcm")
    np.testing.assert_allclose(m1.image, 1 - stored / 4080.0, atol=1e-6)  # inverted min..max
    assert m1.pixel_size_mm == (0.1, 0.2) and m1.pixel_size_note.startswith("DICOM ImagerPixelSpacing")


def test_predict_every_format_sees_the_same_image(tool_run, tmp_path):
    run, _ = tool_run
    rng = np.random.default_rng(5)
    img8 = (np.clip(_tool_sample(rng, 56)["image"], 0, 1) * 255).astype(np.uint8)
    files = _same_image_in_every_format(tmp_path / "in", img8)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["predict", str(run), str(tmp_path / "in"), "--out", str(out), "--device", "cpu",
                                 "--task", "tool", "--quiet"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "predictions.json").read_text())
    by = {Path(rec["file"]).name: rec for rec in doc["images"]}
    assert sorted(by) == sorted(p.name for p in files.values())  # folders searched recursively, suffix-less DICOM
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == len(files) and {Path(r["file"]).name for r in rows} == set(by)
    # the model input is z-scored, so every lossless encoding of one image (8/16 bit, TIFF, DICOM with
    # rescale, MONOCHROME1 stored inverted) gives the same prediction; JPEG (lossy) nearly
    ref = by[files["png8"].name]
    for key in ("png16", "tiff", "dicom_m2", "dicom_m1", "dicom_nosuffix"):
        rec = by[files[key].name]
        for name in ("base", "tip"):
            assert rec["landmarks"][name]["u_px"] == pytest.approx(ref["landmarks"][name]["u_px"], abs=1e-3), key
            assert rec["landmarks"][name]["v_px"] == pytest.approx(ref["landmarks"][name]["v_px"], abs=1e-3), key
        m_ref = np.asarray(Image.open(out / ref["mask"]))
        m = np.asarray(Image.open(out / rec["mask"]))
        assert m.shape == (56, 56) and np.mean(m == m_ref) > 0.999, key
    # mm only where the file says its pixel size: DICOM (row, column) spacing (0.2, 0.1) -> du 0.1, dv 0.2
    dm = by[files["dicom_m2"].name]
    assert dm["pixel_size_mm"] == [0.1, 0.2] and "ImagerPixelSpacing" in dm["pixel_size_source"]
    assert dm["landmarks"]["tip"]["u_mm"] == pytest.approx(0.1 * dm["landmarks"]["tip"]["u_px"])
    assert dm["landmarks"]["tip"]["v_mm"] == pytest.approx(0.2 * dm["landmarks"]["tip"]["v_px"])
    png = by[files["png8"].name]
    assert png["pixel_size_mm"] is None and png["landmarks"]["tip"]["u_mm"] is None
    row = next(r for r in rows if r["file"].endswith("a_png8.png"))
    assert row["tip_u_mm"] == "" and float(row["tip_u_px"]) == pytest.approx(ref["landmarks"]["tip"]["u_px"])
    # per-class area = mask pixels; boxes are components of the mask, scored in [1/2, 1] (two classes)
    m_ref = np.asarray(Image.open(out / ref["mask"]))
    assert ref["classes"]["tool"]["area_px"] == int((m_ref == 1).sum())
    for rec in doc["images"]:
        assert all(0.5 <= b["score"] <= 1.0 for b in rec["boxes"])
        assert sum(b["area_px"] for b in rec["boxes"]) == rec["classes"]["tool"]["area_px"]
    assert (out / "contact_sheet.png").is_file() and len(list((out / "overlays").glob("*.png"))) == len(files)
    assert doc["preprocessing"].startswith("read_xray") and doc["model_input_size"] == 32


def test_predict_sees_what_evaluation_sees(tool_run, tmp_path):
    """The same stored image through a labelled dataset reader + evaluation, and through predict:
    the same model input, so the same landmarks (predict maps them to the input image's pixels)."""
    run, data = tool_run
    src = open_source(data)
    rec = src[3]
    png = tmp_path / "in" / "x.png"
    png.parent.mkdir()
    Image.fromarray((rec.image * 65535 + 0.5).astype(np.uint16)).save(png)  # 16-bit: lossless enough
    model, meta = model_from_checkpoint(run / "best.pt")
    task = Task(name="tool", description="", classes=tuple(meta["classes"]), landmarks=tuple(meta["landmarks"]),
                metrics=("dice", "landmarks", "detection"))
    records, examples = evaluate(ModelPredictor(model), TaskImages(src, task, 32, [3]), task, keep_examples=1)
    from training.predict import predict_files

    doc = predict_files(run, [png], tmp_path / "out", device="cpu", progress=False, figures=False)
    got = doc["images"][0]["landmarks"]
    for k, name in enumerate(("base", "tip")):
        u, v = examples[0]["pred_landmarks"][k]
        assert got[name]["u_px"] == pytest.approx((u + 0.5) * SIZE / 32 - 0.5, abs=0.02)
        assert got[name]["v_px"] == pytest.approx((v + 0.5) * SIZE / 32 - 0.5, abs=0.02)
    # and the model input tensors agree
    a = model_inputs([resize_image(read_xray(png).image, 32)])
    b = model_inputs([TaskImages(src, task, 32, [3])[0]["image"]])
    assert torch.allclose(a, b, atol=1e-3)


def test_predict_covid_outputs(covid_run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for k in range(3):
        Image.fromarray((rng.random((48, 64)) * 255).astype(np.uint8)).save(folder / f"cxr{k}.png")
    from training.predict import predict_files

    doc = predict_files(covid_run, [folder], tmp_path / "out", device="cpu", progress=False)
    model, meta = model_from_checkpoint(covid_run / "best.pt")
    lesion, has_lung = meta["classes"].index("lesion"), "lung" in meta["classes"]
    for rec in doc["images"]:
        x = model_inputs([resize_image(read_xray(rec["file"]).image, 32)])
        with torch.no_grad():
            p = torch.softmax(model(x)[0], 1)[0, lesion]
        assert rec["lesion_probability"] == pytest.approx(float(p.max()), abs=1e-5)  # image level = max pixel
        mask = np.asarray(Image.open(tmp_path / "out" / rec["mask"]))
        assert (rec["width"], rec["height"]) == (64, 48) and mask.shape == (48, 64)
        if has_lung:  # lesion / (lung + lesion) pixels of the mask
            n_les, n_lung = (mask == lesion).sum(), (mask == meta["classes"].index("lung")).sum()
            assert rec["lesion_fraction"] == (pytest.approx(n_les / (n_les + n_lung)) if n_les + n_lung else None)
        else:
            assert rec["lesion_fraction"] is None
    assert has_lung or any("needs a 'lung' class" in n for n in doc["notes"])
    header = (tmp_path / "out" / "predictions.csv").read_text().splitlines()[0].split(",")
    assert {"file", "lesion_probability", "lesion_fraction", "lesion_area_px"} <= set(header)


def test_lesion_fraction_is_lesion_over_lung_plus_lesion():
    """With classes (background, lung, lesion) -- lesion wins overlaps, so lesion pixels are lung too."""
    from training.predict import predict_image

    task = Task(name="covid-lung", description="", classes=("background", "lung", "lesion"),
                metrics=("dice", "pixel_confusion", "presence"))
    prob = np.zeros((1, 3, 10, 10), np.float32)
    prob[0, 0] = 1.0
    prob[0, :, 2:8, 1:5] = [[[0.1]], [[0.8]], [[0.1]]]   # 24 lung pixels
    prob[0, :, 3:5, 2:4] = [[[0.1]], [[0.2]], [[0.7]]]   # 4 of them lesion
    out = {"probabilities": torch.from_numpy(prob)}
    res = predict_image(task, np.zeros((10, 10)), out, 0, 10, (0.5, 0.5))
    assert res["classes"]["lung"]["area_px"] == 20 and res["classes"]["lesion"]["area_px"] == 4
    assert res["lesion_fraction"] == pytest.approx(4 / 24)
    assert res["lesion_probability"] == pytest.approx(0.7)
    assert res["classes"]["lesion"]["area_mm2"] == pytest.approx(4 * 0.25)


def test_predict_errors_are_clear(tool_run, covid_run, tmp_path):
    run, _ = tool_run
    runner = CliRunner()
    ok = tmp_path / "ok.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(ok)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a PNG")
    (tmp_path / "empty").mkdir()

    def call(*args):
        r = runner.invoke(cli, ["predict", *map(str, args), "--device", "cpu", "--quiet"])
        assert "Traceback" not in r.output
        return r

    r = call(run, ok, bad, "--out", tmp_path / "o1")
    assert r.exit_code != 0 and "bad.png is not a readable image" in r.output and "--skip-unreadable" in r.output
    assert not (tmp_path / "o1").exists()  # nothing left that looks like a result
    r = call(run, ok, bad, "--out", tmp_path / "o2", "--skip-unreadable")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o2" / "predictions.json").read_text())
    assert len(doc["images"]) == 1 and doc["skipped"][0]["file"].endswith("bad.png")
    r = call(run, tmp_path / "empty", "--out", tmp_path / "o3")
    assert r.exit_code != 0 and "no images found" in r.output
    r = call(covid_run, ok, "--out", tmp_path / "o4", "--task", "hip")
    assert r.exit_code != 0 and "is a 'covid' model, not 'hip'" in r.output
    r = call(run, ok, "--out", tmp_path / "o2")
    assert r.exit_code != 0 and "is not empty" in r.output
    r = call(tmp_path / "empty", ok, "--out", tmp_path / "o5")
    assert r.exit_code != 0 and "without best.pt" in r.output
    # a checkpoint whose classes differ from this version's task (e.g. a covid model from before the
    # lung class was added) is refused, not silently mislabelled
    ck = torch.load(covid_run / "best.pt", map_location="cpu", weights_only=False)
    ck["meta"]["classes"] = ["background", "lesion"] if "lung" in ck["meta"]["classes"] else \
        ["background", "lung", "lesion"]
    torch.save(ck, tmp_path / "old.pt")
    r = call(tmp_path / "old.pt", ok, "--out", tmp_path / "o6")
    assert r.exit_code != 0 and "retrain the model" in r.output


def test_evaluate_points_unlabelled_images_to_predict(tool_run, tmp_path):
    run, _ = tool_run
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "imgs" / "a.png")
    r = CliRunner().invoke(cli, ["evaluate", str(run), str(tmp_path / "imgs"), "--out", str(tmp_path / "e")])
    assert r.exit_code != 0 and "synthex predict" in r.output and "Traceback" not in r.output

"""Image sources (PNG/TIFF/DICOM folders, synthex datasets) and blinded study creation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_vtt_support import SHAPE, leaks, write_dicom, write_sources, write_synthex_dataset  # noqa: E402

from synthex.vtt import VTTError  # noqa: E402
from synthex.vtt.sources import open_source, read_dicom, read_raster  # noqa: E402
from synthex.vtt.study import (  # noqa: E402
    create_study,
    decode_uint16,
    load_key,
    load_study,
    png_chunk_types,
)


def test_png_and_tiff_are_scaled_from_their_own_min_to_max(tmp_path):
    eight = np.array([[10, 20], [30, 110]], dtype=np.uint8)
    Image.fromarray(eight).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_raster(tmp_path / "a.png").pixels, (eight - 10) / 100.0)
    sixteen = np.array([[0, 1000], [4095, 2000]], dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "b.png")
    image = read_raster(tmp_path / "b.png")
    assert image.source_dtype == "uint16"
    np.testing.assert_allclose(image.pixels, sixteen / 4095.0)
    floats = np.array([[-1.5, 0.0], [0.5, 2.5]], dtype=np.float32)
    Image.fromarray(floats).save(tmp_path / "c.tif")
    np.testing.assert_allclose(read_raster(tmp_path / "c.tif").pixels, (floats + 1.5) / 4.0)


def test_dicom_uses_rescale_and_the_window_from_its_tags(tmp_path):
    # Modality value = 2 * stored - 100. Window c=1000, w=2001 maps (DICOM PS3.3 C.11.2.1.2)
    # values <= c - 0.5 - (w-1)/2 = -0.5 to 0 and > c - 0.5 + (w-1)/2 = 1999.5 to 1, linearly between.
    stored = np.array([[0, 50], [600, 1100]])
    write_dicom(tmp_path / "x.dcm", stored)
    expected = np.array([[0.0, (0 + 0.5) / 2000], [(1100 + 0.5) / 2000, 1.0]])
    np.testing.assert_allclose(read_dicom(tmp_path / "x.dcm").pixels, expected, atol=1e-12)
    write_dicom(tmp_path / "inv.dcm", stored, photometric="MONOCHROME1")  # bright = low values: inverted
    np.testing.assert_allclose(read_dicom(tmp_path / "inv.dcm").pixels, 1 - expected, atol=1e-12)
    # LINEAR_EXACT: c - w/2 -> 0, c + w/2 -> 1; SIGMOID: 1 / (1 + exp(-4 (x - c) / w))  (PS3.3 C.11.2.1.3)
    write_dicom(tmp_path / "exact.dcm", stored, width=2000.0, voi_function="LINEAR_EXACT")
    np.testing.assert_allclose(read_dicom(tmp_path / "exact.dcm").pixels, [[0, 0], [0.55, 1]], atol=1e-12)
    write_dicom(tmp_path / "sig.dcm", stored, width=2000.0, voi_function="SIGMOID")
    modality = 2.0 * stored - 100
    np.testing.assert_allclose(read_dicom(tmp_path / "sig.dcm").pixels, 1 / (1 + np.exp(-4 * (modality - 1000) / 2000)))
    write_dicom(tmp_path / "odd.dcm", stored, voi_function="CUBIC")
    with pytest.raises(VTTError, match="unknown VOI LUT function 'CUBIC'"):
        read_dicom(tmp_path / "odd.dcm")


def test_folder_finds_images_recursively_and_dicom_without_suffix(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3)).save(tmp_path / "sub" / "a.png")
    write_dicom(tmp_path / "IM0001", np.arange(6).reshape(2, 3))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    refs = [Path(s.ref).name for s in open_source(tmp_path)]
    assert refs == ["IM0001", "a.png"]


def test_dataset_adapter_reads_images_of_every_shard(tmp_path):
    # a synthex dataset: manifest.json (checked) + shards/*.h5 (sha256 verified) with an `images` array
    images = write_synthex_dataset(tmp_path / "ds", shard_sizes=(3, 2))
    source = open_source(tmp_path / "ds")
    assert [s.ref for s in source] == [f"shards/00000.h5:images[{i}]" for i in range(3)] + [
        f"shards/00001.h5:images[{i}]" for i in range(2)]
    fourth = images[3].astype(np.float64)
    np.testing.assert_allclose(source[3].load().pixels, (fourth - fourth.min()) / (fourth.max() - fourth.min()))


def test_dataset_adapter_verifies_checksums(tmp_path):
    write_synthex_dataset(tmp_path / "ds", shard_sizes=(2,))
    shard = tmp_path / "ds" / "shards" / "00000.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(VTTError, match="sha256 differs"):
        open_source(tmp_path / "ds")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "no images found"),
        (lambda d: (d / "x.png").write_bytes(b"not a png"), "cannot be read as an image"),
        (lambda d: Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32)).save(d / "nan.tif"), "NaN"),
        (lambda d: Image.fromarray(np.full((4, 4), 7, dtype=np.uint8)).save(d / "flat.png"), "constant"),
        (lambda d: (d / "manifest.json").write_text("{}"), "format is None, not 'synthex-dataset'"),
    ],
)
def test_bad_sources_give_one_clear_error(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(VTTError, match=message):
        [s.load() for s in open_source(tmp_path)]


def test_create_draws_a_balanced_seeded_sample_and_blinds_it(tmp_path):
    real, synthetic = write_sources(tmp_path, n_png=4, n_dicom=2, shard_sizes=(3, 3))
    first = create_study(real, synthetic, tmp_path / "s1", n=4, seed=11)
    second = create_study(real, synthetic, tmp_path / "s2", n=4, seed=11)
    other = create_study(real, synthetic, tmp_path / "s3", n=4, seed=12)
    keys = [json.loads((tmp_path / s / "key.json").read_text())["images"] for s in ("s1", "s2", "s3")]
    sample = [sorted((e["label"], e["source"]) for e in k.values()) for k in keys]
    assert sample[0] == sample[1] != sample[2]  # the seed fixes the sample
    assert [lab for lab, _ in sample[0]].count("real") == 4 and [lab for lab, _ in sample[0]].count("synthetic") == 4
    assert set(keys[0]) != set(keys[1])  # ids are random, not derived from seed or source

    study = first.study
    assert study.ids == tuple(sorted(study.ids)) and all(len(i) == 16 for i in study.ids)
    served_side = [p for p in study.root.rglob("*") if p.is_file() and p.name != "key.json"]
    assert sorted(p.name for p in served_side) == sorted([f"{i}.png" for i in study.ids] + ["study.json"])
    assert not leaks((study.root / "study.json").read_text())
    assert "real" not in (study.root / "study.json").read_text() and "synthetic" not in (study.root / "study.json").read_text()
    for image_id in study.ids:
        png = study.image_path(image_id).read_bytes()
        assert png_chunk_types(png) == ["IHDR", "IDAT", "IEND"]  # pixels only: no text, time or profile chunks
        assert not leaks(png)
        pixels = decode_uint16(png)
        assert pixels.shape == SHAPE and pixels.dtype == np.uint16
        assert pixels.min() == 0 and pixels.max() == 65535  # both groups scaled by the same rule
    labels = load_key(tmp_path / "s1" / "key.json", study)
    assert sorted(labels.values()) == ["real"] * 4 + ["synthetic"] * 4
    with pytest.raises(VTTError, match="different study"):
        load_key(tmp_path / "s2" / "key.json", study)


def test_stored_pixels_are_the_windowed_source(tmp_path):
    real, synthetic = write_sources(tmp_path, n_png=1, n_dicom=0, shard_sizes=(1,))
    created = create_study(real, synthetic, tmp_path / "s", n=1)
    key = json.loads((tmp_path / "s" / "key.json").read_text())["images"]
    (real_id,) = [i for i, e in key.items() if e["label"] == "real"]
    source = np.asarray(Image.open(real / "real_case_0000.png"), dtype=np.float64)
    expected = (source - source.min()) / (source.max() - source.min()) * 65535
    stored = decode_uint16(created.study.image_path(real_id).read_bytes()).astype(np.float64)
    # normalization moves a pixel by at most half its own grey step (1/255 of the range here) plus half
    # a level of dither at the study's 8-bit grey levels (the real PNG has no more): one step; on
    # average by nothing
    step = 65535 / (source.max() - source.min())
    assert np.abs(stored - expected).max() <= step + 1
    assert abs((stored - expected).mean()) < step / 4


def test_key_can_live_outside_the_study_and_8_bit_option(tmp_path):
    real, synthetic = write_sources(tmp_path, n_png=2, n_dicom=0, shard_sizes=(2,))
    created = create_study(real, synthetic, tmp_path / "s", n=2, key_path=tmp_path / "elsewhere.json", bit_depth=8)
    assert not (tmp_path / "s" / "key.json").exists() and (tmp_path / "elsewhere.json").exists()
    png = created.study.image_path(created.study.ids[0]).read_bytes()
    assert png[24] == 8  # IHDR bit depth byte
    assert decode_uint16(png).max() == 255 * 257


def test_every_image_gets_the_common_size_and_cropping_is_reported(tmp_path):
    real, synthetic = write_sources(tmp_path, n_png=2, n_dicom=0, shard_sizes=(3,))
    warnings = create_study(real, synthetic, tmp_path / "a", n=2).warnings
    assert not any("cropped" in w or "downsampled" in w for w in warnings)  # same sizes: nothing to say about them
    assert any("8-bit grey levels" in w for w in warnings)  # the real PNGs have 8 bits: so does every image
    big = np.random.default_rng(3).integers(0, 256, size=(SHAPE[0] * 3, SHAPE[1] * 2), dtype=np.uint8)
    Image.fromarray(big).save(real / "real_case_big.png")  # another size and aspect ratio
    created = create_study(real, synthetic, tmp_path / "c", n=3, seed=1)
    assert any("centre-cropped" in w for w in created.warnings)
    for image_id in created.study.ids:  # one size for all: no group is told by its size
        assert decode_uint16(created.study.image_path(image_id).read_bytes()).shape == SHAPE


def test_create_errors_leave_no_study(tmp_path):
    real, synthetic = write_sources(tmp_path, n_png=2, n_dicom=0, shard_sizes=(3,))
    with pytest.raises(VTTError, match="fewer than the 3 per class"):
        create_study(real, synthetic, tmp_path / "s", n=3)
    with pytest.raises(VTTError, match="no such folder"):
        create_study(tmp_path / "missing", synthetic, tmp_path / "s", n=1)
    with pytest.raises(VTTError, match="same folder"):
        create_study(real, real, tmp_path / "s", n=1)
    Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32)).save(real / "real_case_zz_bad.tif")
    with pytest.raises(VTTError, match="NaN"):  # fails mid-way: nothing that looks like a study remains
        create_study(real, synthetic, tmp_path / "s", n=3, seed=0)
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.partial-*"))
    with pytest.raises(VTTError, match="not a visual Turing test study"):
        load_study(tmp_path)
    (real / "real_case_zz_bad.tif").unlink()
    create_study(real, synthetic, tmp_path / "ok", n=1)
    with pytest.raises(VTTError, match="not empty"):
        create_study(real, synthetic, tmp_path / "ok", n=1)

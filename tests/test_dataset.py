"""Dataset writer/reader: layout of the spec, validate/info, crash safety (SIGKILL, Ctrl-C + --resume), bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import shared_file
from synthex_tiny import tiny

from synthex.cli import cli
from synthex.config import resolve_config
from synthex.dataset import DatasetError, open_dataset, sha256_file, validate
from synthex.runner import render_dataset
from synthex.subjects import SubjectError

ARRAYS = (
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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ds"
    render_dataset(resolve_config(tiny()), out, progress=False)
    return out


def assert_same_samples(a: Path, b: Path):
    da, db = open_dataset(a), open_dataset(b)
    assert len(da) == len(db)
    for key in ARRAYS:
        x, y = da.read_all(key), db.read_all(key)
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), key


def test_layout_matches_the_format_spec(reference):
    m = json.loads((reference / "manifest.json").read_text())
    assert m["format"] == "synthex-dataset" and m["format_version"] == 2
    assert m["classes"][0] == "background" and len(m["classes"]) == 7 and len(m["landmarks"]) == 14
    assert m["image_size"] == [32, 32] and m["pixel_size_mm"] == [400.0 / 32] * 2
    assert m["counts"] == {"images": 12, "subjects": 2}
    assert [s["first_index"] for s in m["shards"]] == [0, 2, 4, 6, 8, 10]
    assert m["camera_model"]["world"] == "RAS mm"
    for s in m["shards"]:
        assert sha256_file(reference / s["file"]) == s["sha256"]
    plan = json.loads((reference / "plan.json").read_text())
    assert plan["config"] == m["config"] and plan["seed"] == 7
    assert (reference / "preview.png").exists()
    assert not list((reference / "shards").glob(".*.tmp"))

    import h5py

    with h5py.File(reference / "shards" / "00001.h5") as f:
        assert f.attrs["format_version"] == 2 and f.attrs["first_index"] == 2
        shapes = {k: f[k].shape for k in f}
        dtypes = {k: f[k].dtype for k in f if k != "params"}
    assert shapes == {
        "images": (2, 32, 32),
        "field": (2, 32, 32),
        "labels": (2, 32, 32),
        "masks": (2, 6, 32, 32),
        "landmarks": (2, 14, 2),
        "landmark_visible": (2, 14),
        "boxes": (2, 6, 4),
        "K": (2, 3, 3),
        "world_from_camera": (2, 4, 4),
        "P": (2, 3, 4),
        "sample_index": (2,),
        "subject_id": (2,),
        "params": (2,),
    }
    assert dtypes["images"] == np.float32 and dtypes["labels"] == np.uint8 and dtypes["masks"] == np.uint8
    assert dtypes["K"] == np.float64 and dtypes["sample_index"] == np.int64


def test_reader_and_validate(reference):
    ds = open_dataset(reference)
    assert len(ds) == 12
    s = ds[5]
    assert s["image"].shape == (32, 32) and s["params"]["index"] == 5 and int(s["sample_index"]) == 5
    # P = K [R | t] of camera_from_world (geometry stored consistently)
    cam_from_world = np.linalg.inv(s["world_from_camera"])
    assert np.allclose(s["P"], s["K"] @ cam_from_world[:3], atol=1e-9)
    assert validate(reference).ok
    assert np.array_equal(ds.read_all("subject_id"), np.repeat([0, 1], 6))
    result = CliRunner().invoke(cli, ["info", str(reference), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["images"] == 12


def test_validate_catches_a_corrupt_shard_and_an_incomplete_dataset(reference, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(reference, bad)
    data = bytearray((bad / "shards" / "00002.h5").read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte
    (bad / "shards" / "00002.h5").write_bytes(bytes(data))
    report = validate(bad)
    assert not report.ok and any("00002.h5: sha256" in e for e in report.errors)
    result = CliRunner().invoke(cli, ["validate", str(bad)])
    assert result.exit_code == 1
    (bad / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="incomplete.*--resume"):
        open_dataset(bad)


def _cli(*args, **kw):
    code = "from synthex.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _wait_for_shards(out: Path, proc, k: int, timeout: float = 120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if len(list((out / "shards").glob("*.h5"))) >= k or proc.poll() is not None:
            return
        time.sleep(0.02)
    raise AssertionError("no shard appeared in time")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_run_resumes_to_the_same_dataset(reference, tmp_path, sig):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny()))
    out = tmp_path / "ds"
    proc = _cli("render", str(cfg_path), "--out", str(out), "--quiet")
    _wait_for_shards(out, proc, 2)
    assert proc.poll() is None, "the run finished before it could be interrupted: make the test dataset larger"
    os.kill(proc.pid, sig)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == (-9 if sig == signal.SIGKILL else 130), output
    if sig == signal.SIGINT:
        assert "--resume" in output and "Traceback" not in output
    assert not (out / "manifest.json").exists()  # never looks complete
    kept = sorted(p.name for p in (out / "shards").glob("*.h5"))
    assert 2 <= len(kept) < 6
    mtimes = {p: (out / "shards" / p).stat().st_mtime_ns for p in kept}
    with pytest.raises(DatasetError, match="incomplete"):
        open_dataset(out)

    resumed = _cli("render", str(cfg_path), "--out", str(out), "--resume", "--quiet")
    output = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, output
    assert {p: (out / "shards" / p).stat().st_mtime_ns for p in kept} == mtimes  # finished shards not redone
    assert validate(out).ok
    assert_same_samples(out, reference)


def test_resume_refuses_another_config_and_fresh_runs_refuse_a_used_folder(reference, tmp_path):
    with pytest.raises(DatasetError, match="already holds a complete dataset"):
        render_dataset(resolve_config(tiny()), reference, progress=False)
    with pytest.raises(DatasetError, match="config differs"):
        render_dataset(resolve_config(tiny(seed=8)), reference, resume=True, progress=False)
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        render_dataset(resolve_config(tiny()), tmp_path, progress=False)


def test_unwritable_output_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = CliRunner().invoke(cli, ["render", "--n", "2", "--size", "32", "--out", str(blocker / "ds")])
    assert result.exit_code != 0 and "cannot write the dataset" in result.output
    assert "Traceback" not in result.output


def test_missing_ct_and_ct_without_the_task_labels(tmp_path):
    cfg = tmp_path / "ct.yaml"
    cfg.write_text(yaml.safe_dump({"subjects": [{"source": "ct", "path": "nowhere/ct.nii.gz"}]}))
    result = CliRunner().invoke(cli, ["render", str(cfg), "--out", str(tmp_path / "ds")])
    assert result.exit_code != 0 and "'subjects[0].path'" in result.output and "file not found" in result.output
    assert not (tmp_path / "ds").exists()

    ct = shared_file("ct/totalseg_abdomen_pelvis/example_ct.nii.gz")
    seg = shared_file("ct/totalseg_abdomen_pelvis/example_seg_total_fast.nii.gz")
    # a real CT without any label map cannot make hip masks
    with pytest.raises(SubjectError, match="not usable for the 'hip' task: its label map has no structure"):
        render_dataset(
            resolve_config(tiny(subjects=[{"source": "ct", "path": str(ct)}])), tmp_path / "a", progress=False
        )
    assert not (tmp_path / "a").exists()
    # with TotalSegmentator's labels but no class mapping, 'upper_sacrum' etc. are named differently
    with pytest.raises(SubjectError, match="upper_sacrum"):
        render_dataset(
            resolve_config(tiny(subjects=[{"source": "ct", "path": str(ct), "labels": str(seg)}])),
            tmp_path / "b",
            progress=False,
        )
    assert not (tmp_path / "b").exists()

"""Faults and hostile input for rendering and reading datasets (issue 15, findings 1-4 and 7).

Every test here failed on the code before the fix: killed multi-worker renders left their workers
running; ``--resume`` blessed damaged shards; readers and exports trusted manifest paths and
checksums; two renders could write one folder; several errors were tracebacks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from synthex_tiny import tiny

from synthex.cli import cli
from synthex.config import resolve_config
from synthex.dataset import DatasetError, open_dataset, read_checksums, sha256_file, validate
from synthex.exports import export
from synthex.runner import render_dataset

pytest.importorskip("kornia")
ARRAYS = ("images", "field", "labels", "masks", "landmarks", "landmark_visible", "boxes", "P", "sample_index",
          "subject_id", "params")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ds"
    render_dataset(resolve_config(tiny()), out, progress=False)
    return out


def same_samples(a: Path, b: Path) -> bool:
    da, db = open_dataset(a), open_dataset(b)
    if len(da) != len(db):
        return False
    for key in ARRAYS:
        x, y = da.read_all(key), db.read_all(key)
        if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            return False
    return True


def copy(reference: Path, dest: Path) -> Path:
    shutil.copytree(reference, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# 1. killed multi-worker renders: no process left, and --resume gives the uninterrupted dataset


def _render_proc(cfg_path: Path, out: Path, marker: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, SYNTHEX_FAULT_MARKER=marker, PYTHONPATH=str(REPO))
    code = "from synthex.cli import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "render", str(cfg_path), "--out", str(out), "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )


def _marked_processes(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (the render, its workers, their helpers),
    found through /proc so that re-parented orphans count too."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"SYNTHEX_FAULT_MARKER={marker}".encode() in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def _wait_gone(marker: str, timeout: float = 30.0) -> list[int]:
    t0 = time.time()
    while time.time() - t0 < timeout:
        left = _marked_processes(marker)
        if not left:
            return []
        time.sleep(0.2)
    return _marked_processes(marker)


def _first_shard_landed(out: Path) -> bool:
    return (out / "shards").is_dir() and any((out / "shards").glob("*.h5"))


def _kill_at(proc: subprocess.Popen, out: Path, delay: float, sig: int, after_first_shard: bool = False) -> str:
    """Wait until a worker has started rendering (plan.json written) -- or, with ``after_first_shard``, until
    the first shard has landed, so the kill falls mid-render however fast the machine is -- then ``delay`` s,
    then send ``sig``."""
    started = _first_shard_landed if after_first_shard else (lambda o: (o / "plan.json").exists())
    t0 = time.time()
    while not started(out) and proc.poll() is None and time.time() - t0 < 120:
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    return proc.communicate(timeout=120)[0].decode()


def _kill_and_resume(reference: Path, tmp_path: Path, sig: int, delay: float, must_land: bool = False,
                     config: dict | None = None) -> None:
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(config or tiny()))
    out = tmp_path / f"ds-{sig}-{delay:.2f}"
    marker = uuid.uuid4().hex
    proc = _render_proc(cfg_path, out, marker, "--workers", "2")
    output = _kill_at(proc, out, delay, sig, after_first_shard=must_land)
    if must_land:
        assert proc.returncode != 0, "the render finished before the kill: make the test dataset larger"
    if sig == signal.SIGTERM and proc.returncode != 0:
        # handled like Ctrl-C: a message with the resume command, exit 128 + 15, no traceback
        assert proc.returncode == 143, output
        assert "interrupted (SIGTERM)" in output and "--resume" in output and "Traceback" not in output
    left = _wait_gone(marker)
    assert not left, f"processes left after {signal.Signals(sig).name}: {left}"
    if proc.returncode != 0:
        assert not (out / "manifest.json").exists()  # never looks complete
    resumed = _render_proc(cfg_path, out, marker, "--resume")
    output = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, output
    assert validate(out).ok
    assert same_samples(out, reference)


LONG = tiny(n=40)  # 20 shards: after the first has landed, 19 are left for the kill to interrupt


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("long") / "ds"
    render_dataset(resolve_config(LONG), out, progress=False)
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_two_worker_render_leaves_no_process_and_resumes_identically(long_reference, tmp_path, sig):
    # the moment: a random time just after the first shard lands (seeded, so a failure can be replayed)
    delay = float(np.random.default_rng(int(sig)).uniform(0.0, 0.3))
    _kill_and_resume(long_reference, tmp_path, sig, delay, must_land=True, config=LONG)


@pytest.mark.slow
def test_many_kills_at_random_moments(reference, tmp_path):
    rng = np.random.default_rng(15)
    for k in range(6):
        sig = (signal.SIGTERM, signal.SIGKILL)[k % 2]
        _kill_and_resume(reference, tmp_path, sig, float(rng.uniform(0.0, 12.0)))


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_stops_a_serial_render_like_ctrl_c(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny()))
    out = tmp_path / "ds"
    marker = uuid.uuid4().hex
    proc = _render_proc(cfg_path, out, marker)
    t0 = time.time()
    while not list((out / "shards").glob("*.h5")) if (out / "shards").exists() else proc.poll() is None:
        if time.time() - t0 > 120:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGHUP)
    output = proc.communicate(timeout=60)[0].decode()
    if proc.returncode != 0:
        assert proc.returncode == 129 and "interrupted (SIGHUP)" in output and "Traceback" not in output, output
    assert not _wait_gone(marker)


# ---------------------------------------------------------------------------------------------
# 4. one render per output folder


def test_a_second_render_into_a_busy_folder_is_refused(reference, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny()))
    out = tmp_path / "ds"
    marker = uuid.uuid4().hex
    proc = _render_proc(cfg_path, out, marker)
    try:
        t0 = time.time()
        while not (out / "plan.json").exists() and proc.poll() is None and time.time() - t0 < 120:
            time.sleep(0.02)
        assert proc.poll() is None, "the first render ended before the second could start"
        with pytest.raises(DatasetError, match="another synthex render is writing"):
            render_dataset(resolve_config(tiny()), out, resume=True, progress=False)
        result = CliRunner().invoke(cli, ["render", str(cfg_path), "--out", str(out), "--resume", "--quiet"])
        assert result.exit_code == 1 and "another synthex render" in result.output and "Traceback" not in result.output
    finally:
        output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output  # the first render was not disturbed
    assert same_samples(out, reference)


# ---------------------------------------------------------------------------------------------
# 2. --resume trusts nothing on disk


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped", "truncated", "foreign", "unrecorded"])
def test_resume_renders_damaged_or_foreign_shards_again(reference, tmp_path, tmp_path_factory, damage):
    ds = copy(reference, tmp_path / "ds")
    shard = ds / "shards" / "00002.h5"
    good = sha256_file(shard)
    if damage == "flipped":
        _flip_byte(shard)
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif damage == "foreign":  # the same position of a dataset rendered with another seed
        other = tmp_path / "other"
        render_dataset(resolve_config(tiny(n=6, seed=8)), other, progress=False)
        shutil.copy(other / "shards" / "00002.h5", shard)
    else:  # a shard file with no checksum record (e.g. copied in by hand)
        (ds / "manifest.json").unlink()
        record = json.loads((ds / "checksums.json").read_text())
        del record["shards"]["shards/00002.h5"]
        (ds / "checksums.json").write_text(json.dumps(record))
        _flip_byte(shard)
    before = {p.name: p.stat().st_mtime_ns for p in (ds / "shards").glob("*.h5") if p.name != "00002.h5"}
    render_dataset(resolve_config(tiny()), ds, resume=True, progress=False)
    assert sha256_file(shard) == good  # rendered again: identical to the original
    assert {p.name: p.stat().st_mtime_ns for p in (ds / "shards").glob("*.h5") if p.name != "00002.h5"} == before
    assert validate(ds).ok and same_samples(ds, reference)


def test_validate_rejects_a_manifest_that_blesses_a_changed_shard(reference, tmp_path):
    # what old `--resume` did: re-hash a damaged shard and write that hash into manifest.json
    ds = copy(reference, tmp_path / "ds")
    _flip_byte(ds / "shards" / "00003.h5")
    m = json.loads((ds / "manifest.json").read_text())
    m["shards"][3]["sha256"] = sha256_file(ds / "shards" / "00003.h5")
    (ds / "manifest.json").write_text(json.dumps(m))
    report = validate(ds)
    assert not report.ok and any("00003.h5" in e and "recorded when the shard was written" in e for e in report.errors)


def test_validate_reports_a_truncated_shard_instead_of_crashing(reference, tmp_path):
    ds = copy(reference, tmp_path / "ds")
    shard = ds / "shards" / "00001.h5"
    shard.write_bytes(shard.read_bytes()[:1000])
    (ds / "checksums.json").unlink()  # no record: only the manifest's sha256 is left to catch it
    m = json.loads((ds / "manifest.json").read_text())
    m["shards"][1]["sha256"] = sha256_file(shard)
    (ds / "manifest.json").write_text(json.dumps(m))
    report = validate(ds)
    assert not report.ok and any("00001.h5" in e for e in report.errors)
    result = CliRunner().invoke(cli, ["validate", str(ds)])
    assert result.exit_code == 1 and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# 3. readers and exports trust no manifest


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_manifest_paths_are_confined_to_the_dataset(reference, tmp_path, where):
    ds = copy(reference, tmp_path / "ds")
    other = copy(reference, tmp_path / "other")
    m = json.loads((ds / "manifest.json").read_text())
    target = other / "shards" / "00000.h5"
    if where == "absolute":
        m["shards"][0]["file"] = str(target)
    elif where == "dotdot":
        m["shards"][0]["file"] = "../other/shards/00000.h5"
    else:
        (ds / "shards" / "00000.h5").unlink()
        (ds / "shards" / "00000.h5").symlink_to(target)
    (ds / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="outside the dataset folder|leads out of the dataset folder"):
        open_dataset(ds)
    report = validate(ds)
    assert not report.ok and "dataset folder" in report.errors[0]
    with pytest.raises(DatasetError, match="dataset folder"):
        export(ds, tmp_path / "coco", "coco")
    assert not (tmp_path / "coco").exists()
    m["shards"][0]["file"] = "/etc/passwd"
    (ds / "manifest.json").write_text(json.dumps(m))
    assert "outside the dataset folder" in validate(ds).errors[0]


@pytest.mark.parametrize("fmt", ["coco", "nnunet", "deepfluoro", "dicom", "card"])
def test_every_export_verifies_checksums_first(reference, tmp_path, fmt):
    ds = copy(reference, tmp_path / "ds")
    _flip_byte(ds / "shards" / "00004.h5")
    with pytest.raises(DatasetError, match="00004.h5: sha256 differs"):
        export(ds, tmp_path / "out", fmt)
    assert not (tmp_path / "out").exists()  # nothing half-written
    result = CliRunner().invoke(cli, ["export", str(ds), "--format", fmt, "--out", str(tmp_path / "out2")])
    assert result.exit_code == 1 and "sha256 differs" in result.output and "Traceback" not in result.output


def test_a_swapped_shard_is_refused_not_exported_with_duplicate_ids(reference, tmp_path):
    ds = copy(reference, tmp_path / "ds")
    shutil.copy(ds / "shards" / "00000.h5", ds / "shards" / "00001.h5")  # and the manifest "fixed" to match
    m = json.loads((ds / "manifest.json").read_text())
    m["shards"][1]["sha256"] = sha256_file(ds / "shards" / "00001.h5")
    (ds / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="does not hold samples 2..3"):
        export(ds, tmp_path / "coco", "coco")
    assert any("00001.h5" in e for e in validate(ds).errors)


def test_a_shard_of_another_dataset_is_recognized(reference, tmp_path):
    # same positions and a manifest "fixed" to match: the shard's plan_id still tells
    other = tmp_path / "other"
    render_dataset(resolve_config(tiny(n=4, seed=9)), other, progress=False)
    ds = copy(reference, tmp_path / "ds")
    shutil.copy(other / "shards" / "00001.h5", ds / "shards" / "00001.h5")
    m = json.loads((ds / "manifest.json").read_text())
    m["shards"][1]["sha256"] = sha256_file(ds / "shards" / "00001.h5")
    (ds / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="belongs to another dataset"):
        open_dataset(ds)


MALFORMED = [
    (lambda m: m.pop("shards"), "'shards' is missing"),
    (lambda m: m.update(shards={"a": 1}), "'shards' must be a JSON array"),
    (lambda m: m["shards"][0].pop("sha256"), "'shards\\[0\\]' lacks 'sha256'"),
    (lambda m: m["shards"][0].update(count="2"), "'shards\\[0\\].count' must be a positive integer"),
    (lambda m: m["shards"][2].update(first_index=3), "'shards\\[2\\].first_index' must be 4"),
    (lambda m: m["shards"].__setitem__(1, "shards/00001.h5"), "'shards\\[1\\]' must be an object"),
    (lambda m: m["counts"].update(images=1e12), "'counts.images' must be a positive integer"),
    (lambda m: m["counts"].update(images=10**12), "'counts.images' must be a positive integer"),
    (lambda m: m["counts"].update(images=13), "'counts.images' is 13 but the shards hold 12"),
    (lambda m: m.update(image_size=[100000, 100000]), "'image_size' must be"),
    (lambda m: m.update(classes=None), "'classes' must be a JSON array"),
    (lambda m: m.update(pixel_size_mm=[0, 1]), "'pixel_size_mm' must be"),
    (lambda m: m.pop("counts"), "'counts' is missing"),
]


@pytest.mark.parametrize("mutate, message", MALFORMED)
def test_malformed_manifests_get_one_clear_error(reference, tmp_path, mutate, message):
    ds = copy(reference, tmp_path / "ds")
    m = json.loads((ds / "manifest.json").read_text())
    mutate(m)
    (ds / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match=message):
        open_dataset(ds)
    for args in (["info", str(ds)], ["validate", str(ds)], ["export", str(ds), "--format", "coco", "--out", str(tmp_path / "x")]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_not_json_and_not_an_object(reference, tmp_path):
    ds = copy(reference, tmp_path / "ds")
    (ds / "manifest.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="must hold a JSON object"):
        open_dataset(ds)
    (ds / "manifest.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        open_dataset(ds)


# ---------------------------------------------------------------------------------------------
# 7. tracebacks that became errors; failed renders that blocked the folder


def test_resume_hint_names_the_folder(reference, tmp_path):
    ds = copy(reference, tmp_path / "ds")
    (ds / "manifest.json").unlink()
    with pytest.raises(DatasetError) as e:
        open_dataset(ds)
    assert "{path}" not in str(e.value) and f"--out {ds}" in str(e.value)


def _no_cuda() -> bool:
    from projectors.projector import _wp

    return _wp().get_cuda_device_count() == 0


def test_device_cuda_without_a_gpu_is_one_error_and_leaves_nothing(tmp_path):
    if not _no_cuda():
        pytest.skip("a CUDA device is present: --device cuda is valid here")
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny(n=2)))
    out = tmp_path / "ds"
    result = CliRunner().invoke(cli, ["render", str(cfg_path), "--out", str(out), "--device", "cuda", "--quiet"])
    assert result.exit_code == 1 and "no CUDA device" in result.output and "Traceback" not in result.output
    assert not out.exists()  # no stale plan.json to block the next run
    result = CliRunner().invoke(cli, ["render", str(cfg_path), "--out", str(out), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output


def test_a_failed_render_leaves_nothing_that_blocks_a_fresh_run(tmp_path):
    # a detector of 20 mm with the isocentre jittered by up to 500 mm misses the phantom: GeometryError
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny(n=4, **{"views.target_jitter_mm": 500.0, "geometry.detector_mm": 20.0})))
    out = tmp_path / "ds"
    result = CliRunner().invoke(cli, ["render", str(bad), "--out", str(out), "--quiet"])
    assert result.exit_code == 1 and "no detector ray passes through the volume" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    # the same for a folder the user made beforehand: it is left as it was (empty)
    out.mkdir()
    result = CliRunner().invoke(cli, ["render", str(bad), "--out", str(out), "--quiet"])
    assert result.exit_code == 1 and sorted(p.name for p in out.iterdir()) == []
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny(n=2)))
    result = CliRunner().invoke(cli, ["render", str(good), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output


def test_a_stale_plan_without_complete_shards_does_not_block_a_fresh_run(tmp_path):
    # what older versions left after a failed first shard: plan.json and an empty shards/
    out = tmp_path / "ds"
    (out / "shards").mkdir(parents=True)
    (out / "plan.json").write_text(json.dumps({"config": {"n": 1}, "shards": []}))
    (out / "shards" / ".00000.h5.tmp").write_bytes(b"partial")
    render_dataset(resolve_config(tiny(n=2)), out, progress=False)
    assert validate(out).ok


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    except OSError:
        return False
    return r.returncode == 0


def test_disk_full_during_a_shard_is_one_error_and_resume_finishes(reference, tmp_path):
    disk = tmp_path / "small-disk"
    shard = (reference / "shards" / "00000.h5").stat().st_size
    # room for plan.json, the checksum record and about 2.5 shards (tmpfs counts whole 4 KiB pages)
    if not _mount_tmpfs(disk, str(int(2.5 * shard + 64 * 1024))):
        pytest.skip("cannot mount a small tmpfs here (needs root): no way to fill a disk safely")
    try:
        cfg_path = tmp_path / "tiny.yaml"
        cfg_path.write_text(yaml.safe_dump(tiny()))
        out = disk / "ds"
        result = CliRunner().invoke(cli, ["render", str(cfg_path), "--out", str(out), "--quiet"])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "No space left on device" in result.output and "(the disk is full)" in result.output
        assert "--resume" in result.output
        kept = sorted(p.name for p in (out / "shards").iterdir())
        assert kept and all(not n.endswith(".tmp") for n in kept)  # no partial shard left
        assert set(read_checksums(out)) >= {f"shards/{n}" for n in kept}
        # move the unfinished dataset to a roomy disk and resume there
        roomy = tmp_path / "roomy"
        shutil.copytree(out, roomy)
        render_dataset(resolve_config(tiny()), roomy, resume=True, progress=False)
        assert same_samples(roomy, reference)
    finally:
        subprocess.run(["umount", str(disk)], check=False)

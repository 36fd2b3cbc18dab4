"""Shared helpers for the visual Turing test tests (this module has no tests of its own).

The sources are built to be easy to spot if they leak: every folder name, file name, DICOM
patient tag and dataset shard name below is listed in LEAK_STRINGS, and the blinding tests
look for each of them in everything the server sends.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHAPE = (40, 56)  # (H, W): both groups the same size, as a real study should be
PATIENT_NAME = "Doe^Janette"
PATIENT_ID = "PID-SECRET-4242"

LEAK_STRINGS = [
    "REALSRC", "real_case_", "SYNTHSRC", "synth_dataset", "00000.h5", "00001.h5", "shards", "manifest",
    "Doe", "Janette", PATIENT_ID, "key.json", "dicom_case",
]


def write_dicom(path: Path, stored: np.ndarray, *, center=1000.0, width=2001.0, slope=2.0, intercept=-100.0,
                photometric="MONOCHROME2", voi_function=None) -> None:
    """A single-frame 12-bit DX DICOM file with patient tags, rescale and a VOI window."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT_NAME, PATIENT_ID, "DX"
    ds.StudyDescription = "REALSRC chest"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.WindowCenter, ds.WindowWidth = center, width
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_synthex_dataset(root: Path, shard_sizes=(3, 2), seed=0) -> list[np.ndarray]:
    """A tiny dataset in synthex's format (manifest.json with sha256 + shards/NNNNN.h5 with
    ``images``, ``masks`` and ``sample_index``), written with synthex.dataset's shard writer."""
    from synthex.dataset import FORMAT, FORMAT_VERSION, sha256_file, write_shard

    rng = np.random.default_rng(seed)
    (root / "shards").mkdir(parents=True)
    images, entries, first = [], [], 0
    for s, count in enumerate(shard_sizes):
        batch = rng.normal(0.5, 0.2, size=(count, *SHAPE)).astype(np.float32)
        arrays = {"images": batch, "masks": np.zeros((count, 1, *SHAPE), dtype=np.uint8),
                  "sample_index": np.arange(first, first + count, dtype=np.int64)}
        path = root / "shards" / f"{s:05d}.h5"
        write_shard(path, arrays, first)
        entries.append({"file": f"shards/{s:05d}.h5", "sha256": sha256_file(path), "count": count, "first_index": first})
        images += list(arrays["images"])
        first += count
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": "custom", "seed": seed, "config": {},
                "image_size": list(SHAPE), "classes": ["background", "thing"], "landmarks": [],
                "shards": entries, "counts": {"images": len(images), "subjects": 1}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return images


def write_sources(tmp: Path, n_png=3, n_dicom=1, shard_sizes=(3, 2)) -> tuple[Path, Path]:
    """Real: 8-bit PNGs + DICOM (folder 'REALSRC'); synthetic: a synthex dataset ('SYNTHSRC_synth_dataset')."""
    from PIL import Image

    rng = np.random.default_rng(7)
    real = tmp / "REALSRC"
    real.mkdir()
    for i in range(n_png):
        Image.fromarray(rng.integers(0, 256, size=SHAPE, dtype=np.uint8)).save(real / f"real_case_{i:04d}.png")
    for i in range(n_dicom):
        write_dicom(real / f"dicom_case_{i}.dcm", rng.integers(0, 1200, size=SHAPE))
    synthetic = tmp / "SYNTHSRC_synth_dataset"
    write_synthex_dataset(synthetic, shard_sizes)
    return real, synthetic


def leaks(blob: bytes | str) -> list[str]:
    """Which of LEAK_STRINGS occur in ``blob`` (case-insensitive)."""
    text = blob.decode("latin-1") if isinstance(blob, bytes) else blob
    return [s for s in LEAK_STRINGS if s.lower() in text.lower()]


# ---------------------------------------------------------------------------- a real server process


def start_server(study: Path, *args: str, timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Start ``python -m synthex.vtt serve STUDY --port 0 ...``; return the process and its base URL."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthex.vtt", "serve", str(study), "--port", "0", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.5):
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(r"at (http://\S+?)/ ", line)
        if match:
            return proc, match.group(1)
    stop_server(proc)
    raise RuntimeError("server did not start:\n" + "".join(seen))


def stop_server(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()
